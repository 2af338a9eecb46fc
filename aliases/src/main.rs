//! `aliases`: stable WWID-based device-mapper names. See aliases/README.md.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use aliases::store::{DEFAULT_TABLE, live_maps_from_sysfs};
use aliases::{AllocateContext, ExportFormat, Policy, Store, StorePaths};
use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "aliases",
    version,
    about = "Stable WWID-based device-mapper names, compatible with multipath-tools",
    after_help = "Without --table and --bindings-file the table /etc/multipathd-rs/aliases.toml is used, with /etc/multipath/bindings when that file exists (as the daemon uses them). \
With only --bindings-file, that file is the store (as multipath-tools uses it). With both, both are kept in step."
)]
struct Cli {
    /// Native alias table (TOML).
    #[arg(long, global = true, value_name = "FILE")]
    table: Option<PathBuf>,
    /// multipath-tools bindings file to read and keep up to date.
    #[arg(long, global = true, value_name = "FILE")]
    bindings_file: Option<PathBuf>,
    /// multipath.conf to read multipaths {} aliases and defaults from.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Drop-in directory read after --config (*.conf, sorted by name).
    #[arg(long, global = true, value_name = "DIR")]
    config_dir: Option<PathBuf>,
    /// Naming policy for new WWIDs: user_friendly_names, wwid, or template:TEXT
    /// (variables {wwid} {wwid_tail} {host} {n} and any --var). Default: multipath.conf's
    /// defaults, else user_friendly_names.
    #[arg(long, global = true, value_parser = parse_policy)]
    policy: Option<Policy>,
    /// user_friendly_names prefix (multipath.conf `alias_prefix`).
    #[arg(long, global = true, value_name = "PREFIX")]
    alias_prefix: Option<String>,
    /// Template variable NAME=VALUE (repeatable), e.g. --var label=web01.
    #[arg(long = "var", global = true, value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// sysfs root for reading live device-mapper maps (block/dm-*/dm/{name,uuid}).
    #[arg(long, global = true, default_value = "/sys", value_name = "DIR")]
    sysfs_root: PathBuf,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// List every binding (table, bindings file, multipath.conf).
    List,
    /// Print the alias of a WWID (exit 1 if it has none).
    Get { wwid: String },
    /// Bind a WWID to an alias explicitly.
    Set {
        wwid: String,
        alias: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Remove the binding of a WWID (refused while a live map uses it unless --force).
    Remove {
        wwid: String,
        #[arg(long)]
        force: bool,
    },
    /// Print the alias the policy gives each WWID, creating bindings for new ones
    /// (one durable write per WWID, in order).
    Allocate {
        #[arg(required = true)]
        wwids: Vec<String>,
        /// Explicit alias (highest precedence; not stored).
        #[arg(long)]
        alias: Option<String>,
        /// Comment stored with a new entry.
        #[arg(long)]
        comment: Option<String>,
    },
    /// Import bindings from a bindings file or from multipath.conf multipaths {}.
    Import { kind: ImportKind, file: PathBuf },
    /// Print the stored bindings in another format.
    Export {
        #[arg(long, value_enum)]
        format: Format,
    },
    /// Report corrupt files and conflicts between table, bindings file, multipath.conf and
    /// live maps (exit 1 if any).
    Check,
    /// Rewrite corrupt files with their valid entries, keeping a timestamped backup.
    Repair,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum ImportKind {
    Bindings,
    MultipathConf,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Format {
    Bindings,
    MultipathConf,
    Toml,
}

fn parse_policy(s: &str) -> Result<Policy, String> {
    match s {
        "user_friendly_names" | "user-friendly-names" | "ufn" => Ok(Policy::UserFriendlyNames {
            prefix: aliases::names::DEFAULT_ALIAS_PREFIX.to_string(),
        }),
        "wwid" => Ok(Policy::Wwid),
        _ => match s.strip_prefix("template:") {
            Some(t) if !t.is_empty() => Ok(Policy::Template {
                template: t.to_string(),
            }),
            _ => Err(format!(
                "unknown policy {s:?}; use user_friendly_names, wwid or template:TEXT"
            )),
        },
    }
}

fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ALIASES_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("aliases: error: {}", sentence(&e));
            ExitCode::FAILURE
        }
    }
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

fn run(cli: Cli) -> Result<ExitCode> {
    // Without paths, the same files as the daemon: the table and, when it exists,
    // multipath-tools' bindings file (a binding removed from the table alone would be copied
    // back from there by the daemon's next change).
    let (table, bindings) = match (&cli.table, &cli.bindings_file) {
        (None, None) => (Some(PathBuf::from(DEFAULT_TABLE)), {
            let d = PathBuf::from(aliases::store::DEFAULT_BINDINGS);
            d.exists().then_some(d)
        }),
        (t, b) => (t.clone(), b.clone()),
    };
    let paths = StorePaths {
        table,
        bindings,
        config: cli.config.clone(),
        config_dir: cli.config_dir.clone(),
    };
    let mut policy = cli.policy.clone();
    if let Some(prefix) = &cli.alias_prefix {
        match &mut policy {
            Some(Policy::UserFriendlyNames { prefix: p }) => *p = prefix.clone(),
            None => {
                policy = Some(Policy::UserFriendlyNames {
                    prefix: prefix.clone(),
                })
            }
            Some(_) => bail!("--alias-prefix only applies to the user_friendly_names policy"),
        }
    }
    let store = Store::open(paths, policy)?;
    let vars: Vec<(&str, &str)> = cli
        .vars
        .iter()
        .map(|v| {
            v.split_once('=')
                .with_context(|| format!("--var {v:?} is not NAME=VALUE"))
        })
        .collect::<Result<_>>()?;
    let live = || -> Result<Vec<(String, String)>> {
        live_maps_from_sysfs(&cli.sysfs_root).with_context(|| {
            format!(
                "cannot read live device-mapper maps under {}",
                cli.sysfs_root.display()
            )
        })
    };

    // check and repair print the problems themselves.
    let quiet = matches!(cli.cmd, Cmd::Check | Cmd::Repair);
    match cli.cmd {
        Cmd::List => {
            let rows = store.list()?;
            if cli.json {
                print_json(&rows)?;
            } else {
                let w = rows.iter().map(|r| r.alias.len()).max().unwrap_or(5).max(5);
                let ww = rows.iter().map(|r| r.wwid.len()).max().unwrap_or(4).max(4);
                println!(
                    "{:<w$}  {:<ww$}  {:<20}  {:<16}  SOURCE",
                    "ALIAS", "WWID", "CREATED", "BY"
                );
                for r in rows {
                    let src: Vec<String> = r.origins.iter().map(ToString::to_string).collect();
                    println!(
                        "{:<w$}  {:<ww$}  {:<20}  {:<16}  {}{}",
                        r.alias,
                        r.wwid,
                        r.created_at.as_deref().unwrap_or("-"),
                        r.created_by.as_deref().unwrap_or("-"),
                        src.join(", "),
                        r.comment.map(|c| format!("  # {c}")).unwrap_or_default()
                    );
                }
            }
        }
        Cmd::Get { wwid } => match store.lookup(&wwid)? {
            Some(a) => {
                if cli.json {
                    print_json(&a)?;
                } else {
                    println!("{}", a.name);
                }
            }
            None => {
                eprintln!("aliases: WWID {wwid} has no alias");
                return Ok(ExitCode::FAILURE);
            }
        },
        Cmd::Set {
            wwid,
            alias,
            comment,
        } => {
            let changed = store.set(&wwid, &alias, comment.as_deref(), &live()?)?;
            if cli.json {
                print_json(&serde_json::json!({"wwid": wwid, "alias": alias, "changed": changed}))?;
            } else if changed {
                println!("{wwid} -> {alias}");
            } else {
                println!("{wwid} -> {alias} (unchanged)");
            }
        }
        Cmd::Remove { wwid, force } => {
            let alias = store.remove(&wwid, &live()?, force)?;
            if cli.json {
                print_json(&serde_json::json!({"wwid": wwid, "removed_alias": alias}))?;
            } else {
                println!("removed alias {alias} of WWID {wwid}");
            }
        }
        Cmd::Allocate {
            wwids,
            alias,
            comment,
        } => {
            if alias.is_some() && wwids.len() > 1 {
                bail!("--alias can only be used with a single WWID");
            }
            let live = live()?;
            let mut results = Vec::new();
            for w in &wwids {
                let ctx = AllocateContext {
                    explicit_alias: alias.as_deref(),
                    live_maps: &live,
                    vars: &vars,
                    comment: comment.as_deref(),
                };
                let a = store.allocate(w, &ctx)?;
                if !cli.json {
                    println!("{}", a.name);
                }
                results.push(a);
            }
            if cli.json {
                if results.len() == 1 {
                    print_json(&results[0])?;
                } else {
                    print_json(&results)?;
                }
            }
        }
        Cmd::Import { kind, file } => {
            let live = live()?;
            let r = match kind {
                ImportKind::Bindings => store.import_bindings(&file, &live)?,
                ImportKind::MultipathConf => store.import_multipath_conf(&file, &live)?,
            };
            if cli.json {
                print_json(&r)?;
            } else {
                for (a, w) in &r.added {
                    println!("added {w} -> {a}");
                }
                println!(
                    "imported {} binding(s) from {} ({} already present)",
                    r.added.len(),
                    file.display(),
                    r.unchanged
                );
            }
        }
        Cmd::Export { format } => {
            let f = match format {
                Format::Bindings => ExportFormat::Bindings,
                Format::MultipathConf => ExportFormat::MultipathConf,
                Format::Toml => ExportFormat::Toml,
            };
            print!("{}", store.export(f)?);
        }
        Cmd::Check => {
            let problems = store.check(&live()?);
            if cli.json {
                let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
                print_json(&serde_json::json!({"ok": problems.is_empty(), "problems": list}))?;
            } else if problems.is_empty() {
                println!("ok: no corrupt files and no conflicts");
            } else {
                for p in &problems {
                    println!("error: {p}");
                }
                println!("{} problem(s) found", problems.len());
            }
            if !problems.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Cmd::Repair => {
            let done = store.repair()?;
            if cli.json {
                print_json(&done)?;
            } else if done.is_empty() {
                println!("nothing to repair");
            } else {
                for f in &done {
                    println!(
                        "repaired {}: kept {} binding(s), backup at {}",
                        f.path.display(),
                        f.kept,
                        f.backup.display()
                    );
                    for (line, text, reason) in &f.dropped {
                        println!("  dropped line {line}: {text:?} ({reason})");
                    }
                }
            }
        }
    }
    if !quiet {
        for p in store.problems() {
            eprintln!("aliases: warning: {p}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An error and its causes as one sentence for the terminal. Our library errors quote their
/// cause in their own text (`cannot read X: Is a directory`) and also name it as their
/// `source`, so printing the whole chain (`{:#}`) would say it twice; a cause whose text is
/// already there is left out.
fn sentence(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
