//! The `hostsync` command: cluster-wide aliases through a registry.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use hostsync::names::Bindings;
use hostsync::{ClusterNamer, NamerOptions, Registry, import, report};

/// Where multipathd-rs keeps its configuration; its [cluster] section names the registry.
const DEFAULT_CONFIG: &str = "/etc/multipathd-rs/config.toml";

#[derive(Parser, Debug)]
#[command(
    name = "hostsync",
    version,
    about = "One name per LUN on every host, decided cluster-wide"
)]
struct Cli {
    /// Registry URL: local:DIR, san:VG/LV or etcd://HOST:PORT,... (default: [cluster] registry in the
    /// configuration file).
    #[arg(long, global = true)]
    registry: Option<String>,
    /// Configuration file with a [cluster] section.
    #[arg(long, global = true, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// This host's name (default: the hostname).
    #[arg(long, global = true)]
    host: Option<String>,
    /// JSON output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Aliases in the registry.
    Alias {
        #[command(subcommand)]
        cmd: AliasCmd,
    },
    /// Merge bindings files and multipaths{} sections of existing hosts (HOST=FILE...).
    Import {
        /// HOST=FILE, one or more per host.
        #[arg(required = true)]
        files: Vec<String>,
        /// Write the bindings every host agrees on (nothing is written without it).
        #[arg(long)]
        apply: bool,
    },
    /// Cluster-wide checks.
    Check {
        #[command(subcommand)]
        cmd: CheckCmd,
    },
    /// Render configuration for other tools.
    Render {
        #[command(subcommand)]
        cmd: RenderCmd,
    },
}

#[derive(Subcommand, Debug)]
enum AliasCmd {
    /// Print `WWID NAME` for each WWID, allocating a friendly name where it has none.
    Allocate {
        /// WWIDs.
        #[arg(required = true)]
        wwids: Vec<String>,
        /// Keep this host's local table (a bindings file) here.
        #[arg(long)]
        cache: Option<PathBuf>,
        /// user_friendly_names prefix.
        #[arg(long, default_value = aliases::names::DEFAULT_ALIAS_PREFIX)]
        prefix: String,
    },
    /// Bind WWID to the admin's NAME.
    Set {
        /// The WWID.
        wwid: String,
        /// The name.
        name: String,
        /// Allow a name that was bound to another WWID before (a tombstone).
        #[arg(long)]
        reuse: bool,
    },
    /// List every binding.
    List,
}

#[derive(Subcommand, Debug)]
enum CheckCmd {
    /// Every WWID with its name on every host; mismatches and duplicates are flagged.
    Aliases,
}

#[derive(Subcommand, Debug)]
enum RenderCmd {
    /// A byte-stable multipaths{} snippet for hosts that still run multipath-tools.
    MultipathConf,
}

fn registry_url(cli: &Cli) -> Result<String> {
    if let Some(r) = &cli.registry {
        return Ok(r.clone());
    }
    let text = std::fs::read_to_string(&cli.config).with_context(|| {
        format!(
            "no --registry given and the configuration {} cannot be read",
            cli.config.display()
        )
    })?;
    let v: toml::Table = toml::from_str(&text)
        .with_context(|| format!("{} is not valid TOML", cli.config.display()))?;
    match v
        .get("cluster")
        .and_then(|c| c.get("registry"))
        .and_then(|r| r.as_str())
    {
        Some(r) => Ok(r.to_string()),
        None => bail!(
            "no --registry given and {} has no [cluster] registry",
            cli.config.display()
        ),
    }
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn run(cli: Cli) -> Result<ExitCode> {
    let host = cli.host.clone().unwrap_or_else(aliases::names::host_name);
    // The registry is opened by the commands that need it, so the ones that do not (or that
    // must fail closed with their own message) work without one.
    let open_registry = || -> Result<Arc<dyn Registry>> {
        let url = registry_url(&cli)?;
        Ok(hostsync::open(&url)?)
    };
    match &cli.cmd {
        Cmd::Alias {
            cmd:
                AliasCmd::Allocate {
                    wwids,
                    cache,
                    prefix,
                },
        } => {
            let reg = open_registry()?;
            let (mut namer, rep) = ClusterNamer::open(
                reg,
                &host,
                NamerOptions {
                    prefix: prefix.clone(),
                    cache: cache.clone(),
                },
            )?;
            for (w, cached, now) in &rep.stale {
                eprintln!(
                    "hostsync: the cache had {w} as {cached}; the registry says {}",
                    now.as_deref().unwrap_or("another WWID owns that name")
                );
            }
            let mut out = Vec::new();
            for w in wwids {
                // Learn what other hosts did meanwhile (already-received watch events, or new
                // journal lines: cheap), so we rarely race for a name that is taken.
                namer.catch_up()?;
                out.push(namer.name(w)?);
            }
            namer.catch_up()?;
            namer.save_cache()?;
            if cli.json {
                let v: Vec<_> = out
                    .iter()
                    .map(|n| serde_json::json!({"wwid": n.wwid, "alias": n.alias, "created": n.created}))
                    .collect();
                print_json(&v)?;
            } else {
                for n in &out {
                    println!("{} {}", n.wwid, n.alias);
                }
            }
        }
        Cmd::Alias {
            cmd: AliasCmd::Set { wwid, name, reuse },
        } => {
            let reg = open_registry()?;
            let out = hostsync::names::set_alias(&*reg, &host, wwid, name, *reuse, "admin")?;
            if cli.json {
                print_json(&out)?;
            } else if !out.changed {
                println!("{wwid} is already {name}");
            } else if let Some(p) = &out.previous {
                println!("{wwid} {name} (was {p}; {p} stays reserved)");
            } else {
                println!("{wwid} {name}");
            }
        }
        Cmd::Alias {
            cmd: AliasCmd::List,
        } => {
            let reg = open_registry()?;
            let b = Bindings::read(&*reg)?;
            if cli.json {
                let v: Vec<_> = b
                    .by_wwid
                    .iter()
                    .map(|(w, r)| serde_json::json!({"wwid": w, "alias": r.alias, "source": r.source, "host": r.host}))
                    .collect();
                print_json(&v)?;
            } else {
                let ww = b.by_wwid.keys().map(String::len).max().unwrap_or(4).max(4);
                let aw = b
                    .by_wwid
                    .values()
                    .map(|r| r.alias.len())
                    .max()
                    .unwrap_or(5)
                    .max(5);
                println!("{:ww$}  {:aw$}  {:8}  HOST", "WWID", "ALIAS", "SOURCE");
                for (w, r) in &b.by_wwid {
                    println!("{w:ww$}  {:aw$}  {:8}  {}", r.alias, r.source, r.host);
                }
            }
        }
        Cmd::Import { files, apply } => {
            let reg = open_registry()?;
            let mut found = Vec::new();
            for arg in files {
                let (h, path) = import::parse_host_file(arg)?;
                found.extend(import::read_host_file(&h, &path)?);
            }
            let b = Bindings::read(&*reg)?;
            let mut plan = import::plan(&found, &b);
            if *apply {
                import::apply(&*reg, &host, &mut plan)?;
            }
            if cli.json {
                print_json(&plan)?;
            } else {
                let verb = if *apply {
                    "imported"
                } else {
                    "would import (pass --apply)"
                };
                for (w, a) in if *apply { &plan.written } else { &plan.new } {
                    println!("{verb}: {w} {a}");
                }
                println!("already in the registry: {}", plan.present);
                for (h, w, a, r) in &plan.renames {
                    println!("rename on {h}: {w} is {a} there, the registry says {r}");
                }
                for c in &plan.conflicts {
                    println!(
                        "CONFLICT ({} {}): {}\n  proposal: {}",
                        if c.kind == "wwid" { "WWID" } else { "name" },
                        c.subject,
                        c.claims.join(" / "),
                        c.proposal
                    );
                }
            }
            if !plan.conflicts.is_empty() {
                eprintln!(
                    "hostsync: {} conflict(s) remain; nothing conflicting was written",
                    plan.conflicts.len()
                );
                return Ok(ExitCode::from(1));
            }
        }
        Cmd::Check {
            cmd: CheckCmd::Aliases,
        } => {
            let reg = open_registry()?;
            let b = Bindings::read(&*reg)?;
            let hosts = hostsync::cluster_state(&*reg)?;
            let rep = report::check_aliases(&b, &hosts);
            if cli.json {
                print_json(&rep)?;
            } else {
                let ww = rep
                    .rows
                    .iter()
                    .map(|r| r.wwid.len())
                    .max()
                    .unwrap_or(4)
                    .max(4);
                let mut head = format!("{:ww$}  {:10}", "WWID", "REGISTRY");
                for h in &rep.hosts {
                    head.push_str(&format!("  {h:10}"));
                }
                println!("{head}  STATUS");
                for r in &rep.rows {
                    let mut line = format!(
                        "{:ww$}  {:10}",
                        r.wwid,
                        r.registry.as_deref().unwrap_or("-")
                    );
                    for h in &rep.hosts {
                        line.push_str(&format!(
                            "  {:10}",
                            r.hosts.get(h).map(String::as_str).unwrap_or("-")
                        ));
                    }
                    let st = if r.problems.is_empty() {
                        "ok"
                    } else {
                        "PROBLEM"
                    };
                    println!("{line}  {st}");
                    for p in &r.problems {
                        println!("    {p}");
                    }
                }
                println!(
                    "{} host(s), {} WWID(s), {} problem(s)",
                    rep.hosts.len(),
                    rep.rows.len(),
                    rep.problems
                );
            }
            if rep.problems > 0 {
                return Ok(ExitCode::from(1));
            }
        }
        Cmd::Render {
            cmd: RenderCmd::MultipathConf,
        } => {
            let reg = open_registry()?;
            let b = Bindings::read(&*reg)?;
            print!("{}", report::render_multipath_conf(&b));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HOSTSYNC_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hostsync: {e:#}");
            ExitCode::from(2)
        }
    }
}
