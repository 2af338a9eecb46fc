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
    /// Registry URL: local:DIR or etcd://HOST:PORT,... (default: [cluster] registry in the
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
    /// LUNs for LVM (issue 17).
    Lun {
        #[command(subcommand)]
        cmd: LunCmd,
    },
    /// A domU's disks on LVM (issue 17).
    Domu {
        #[command(subcommand)]
        cmd: DomuCmd,
    },
    /// Watch storage (issue 17).
    Watch {
        #[command(subcommand)]
        cmd: WatchCmd,
    },
}

#[derive(Subcommand, Debug)]
enum LunCmd {
    /// A PV on /dev/mapper/ALIAS (never a member path), then the VG created (shared when the
    /// cluster uses lvmlockd) or extended.
    Provision {
        /// The multipath map's alias.
        alias: String,
        /// The VG to create or extend.
        #[arg(long)]
        vg: String,
        /// Create the VG shared (lvmlockd) even when lvmlockd was not detected.
        #[arg(long)]
        shared: bool,
        /// Extent size of a new VG (vgcreate -s).
        #[arg(long)]
        extent_size: Option<String>,
        /// sysfs root (tests).
        #[arg(long, default_value = "/sys", hide = true)]
        sysfs_root: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum DomuCmd {
    /// A domU's disk LVs.
    Disk {
        #[command(subcommand)]
        cmd: DomuDiskCmd,
    },
    /// A snapshot clone of a golden image (thin when the golden image is thin, COW otherwise).
    Clone {
        /// The golden image (LV or VG/LV).
        golden: String,
        /// The clone's name.
        name: String,
        /// COW area of a classic snapshot (default: a quarter of the golden image).
        #[arg(long)]
        cow_size: Option<String>,
        /// The VG (default: the golden image's).
        #[arg(long)]
        vg: Option<String>,
        /// The guest's device in the printed lines.
        #[arg(long, default_value = "xvda")]
        vdev: String,
    },
    /// A snapshot (NAME-snap) to undo or commit later.
    Snapshot {
        /// The disk (LV or VG/LV).
        name: String,
        /// COW area (default: a quarter of the disk).
        #[arg(long)]
        cow_size: Option<String>,
        /// The VG.
        #[arg(long)]
        vg: Option<String>,
    },
    /// Merge the snapshot back: the disk returns to its state at the snapshot (domU stopped).
    Undo {
        /// The disk (LV or VG/LV).
        name: String,
        /// The VG.
        #[arg(long)]
        vg: Option<String>,
    },
    /// Drop the snapshot, keep the changes.
    Commit {
        /// The disk (LV or VG/LV).
        name: String,
        /// The VG.
        #[arg(long)]
        vg: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum DomuDiskCmd {
    /// The LV, and the lines to paste into xl and libvirt configurations.
    Create {
        /// The LV's name.
        name: String,
        /// Its size (e.g. 10g, 512m).
        #[arg(long)]
        size: String,
        /// The VG (default: the only one).
        #[arg(long)]
        vg: Option<String>,
        /// The guest's device in the printed lines.
        #[arg(long, default_value = "xvda")]
        vdev: String,
    },
}

#[derive(Subcommand, Debug)]
enum WatchCmd {
    /// Fill of every COW snapshot and thin pool; extends them from the VG's free space.
    Snapshots {
        /// One pass (for a timer); exit 1 when something needs the admin.
        #[arg(long)]
        once: bool,
        /// Seconds between passes.
        #[arg(long, default_value_t = 10.0)]
        interval: f64,
        /// Fill level (percent) at which to extend.
        #[arg(long, default_value_t = 70.0)]
        threshold: f64,
        /// Grow by this percentage of the current size.
        #[arg(long, default_value_t = 20.0)]
        extend_by: f64,
        /// Report only; never extend.
        #[arg(long)]
        no_extend: bool,
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
        Cmd::Lun { cmd } => return storage_cmd::lun(cmd, cli.json),
        Cmd::Domu { cmd } => return storage_cmd::domu(cmd, cli.json),
        Cmd::Watch { cmd } => return storage_cmd::watch(cmd, cli.json),
    }
    Ok(ExitCode::SUCCESS)
}

/// Issue 17's commands: wiring only, the logic is in hostsync::{provision, domu_disk, watch}.
mod storage_cmd {
    use super::*;
    use hostsync::lvm::Lvm;
    use hostsync::runner::SystemRunner;
    use hostsync::{domu_disk, provision, watch};

    fn size(s: &Option<String>) -> Result<Option<u64>> {
        s.as_deref()
            .map(domu_disk::parse_size)
            .transpose()
            .map_err(|e| anyhow::anyhow!(e))
    }

    fn print_disk(r: &domu_disk::DiskReport, json: bool) -> Result<ExitCode> {
        if json {
            print_json(r)?;
        } else {
            print!("{}", domu_disk::render(r));
        }
        Ok(ExitCode::SUCCESS)
    }

    pub(super) fn lun(cmd: &LunCmd, json: bool) -> Result<ExitCode> {
        let LunCmd::Provision {
            alias,
            vg,
            shared,
            extent_size,
            sysfs_root,
        } = cmd;
        let runner = SystemRunner;
        let roots = provision::Roots {
            sys: sysfs_root.clone(),
            ..Default::default()
        };
        let req = provision::ProvisionRequest {
            alias: alias.clone(),
            vg: vg.clone(),
            shared: *shared,
            extent_size: extent_size.clone(),
        };
        let rep = provision::provision(&Lvm::new(&runner), &roots, &req)?;
        if json {
            print_json(&rep)?;
        } else {
            println!(
                "{} (WWID {}, paths {}): PV {}; VG {} {}{}",
                rep.map.device,
                rep.map.wwid,
                rep.map.paths.join(","),
                if rep.pv_created {
                    "created"
                } else {
                    "already there"
                },
                rep.vg,
                rep.vg_action,
                if rep.shared {
                    " (shared, lvmlockd)"
                } else {
                    " (local)"
                }
            );
        }
        Ok(ExitCode::SUCCESS)
    }

    pub(super) fn domu(cmd: &DomuCmd, json: bool) -> Result<ExitCode> {
        let runner = SystemRunner;
        let lvm = Lvm::new(&runner);
        let rep = match cmd {
            DomuCmd::Disk {
                cmd:
                    DomuDiskCmd::Create {
                        name,
                        size: sz,
                        vg,
                        vdev,
                    },
            } => {
                let bytes = domu_disk::parse_size(sz).map_err(|e| anyhow::anyhow!(e))?;
                domu_disk::create(&lvm, name, bytes, vg.as_deref(), vdev)?
            }
            DomuCmd::Clone {
                golden,
                name,
                cow_size,
                vg,
                vdev,
            } => domu_disk::clone(&lvm, golden, name, size(cow_size)?, vg.as_deref(), vdev)?,
            DomuCmd::Snapshot { name, cow_size, vg } => {
                domu_disk::snapshot(&lvm, name, size(cow_size)?, vg.as_deref())?
            }
            DomuCmd::Undo { name, vg } => domu_disk::undo(&lvm, name, vg.as_deref())?,
            DomuCmd::Commit { name, vg } => domu_disk::commit(&lvm, name, vg.as_deref())?,
        };
        print_disk(&rep, json)
    }

    pub(super) fn watch(cmd: &WatchCmd, json: bool) -> Result<ExitCode> {
        let WatchCmd::Snapshots {
            once,
            interval,
            threshold,
            extend_by,
            no_extend,
        } = cmd;
        if !(*interval > 0.0 && (0.0..=100.0).contains(threshold) && *extend_by > 0.0) {
            bail!("--interval and --extend-by must be positive and --threshold within 0..100");
        }
        let opts = watch::WatchOptions {
            threshold: *threshold,
            extend_by: *extend_by,
            extend: !no_extend,
        };
        let runner = SystemRunner;
        let lvm = Lvm::new(&runner);
        loop {
            match watch::pass(&lvm, &opts) {
                Ok(rep) => {
                    if json {
                        // One JSON document per pass, one per line in a loop.
                        println!("{}", serde_json::to_string(&rep)?);
                    } else {
                        print!("{}", watch::render(&rep));
                    }
                    for i in rep
                        .items
                        .iter()
                        .filter(|i| i.state == watch::State::Invalid)
                    {
                        eprintln!("hostsync: {}", i.message);
                    }
                    if *once {
                        return Ok(ExitCode::from(u8::from(rep.problems > 0)));
                    }
                }
                Err(e) if !*once => eprintln!("hostsync: watch pass failed: {e}"),
                Err(e) => return Err(e.into()),
            }
            use std::io::Write as _;
            let _ = std::io::stdout().flush();
            std::thread::sleep(std::time::Duration::from_secs_f64(*interval));
        }
    }
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
