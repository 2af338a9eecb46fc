//! The `multipathd-rs` command line: global options, the daemon, one-shot runs, the client
//! commands (sent over the control socket), configuration tools, the udev helper and the demo.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aliases::StorePaths;
use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use dm_tables::{DmBackend, KernelBackend, SimBackend};

use crate::clock::SystemClock;
use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::daemon::{self, DaemonOptions};
use crate::discovery;
use crate::engine::{Engine, EngineOptions};
use crate::output;
use crate::socket::{self, Command, Format};

/// Where the control socket lives unless `--socket` says otherwise.
pub use crate::socket::DEFAULT_SOCKET_PATH as DEFAULT_SOCKET;

/// multipathd-rs: device-mapper multipath daemon and tools.
#[derive(Debug, Parser)]
#[command(name = "multipathd-rs", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Cmd,
}

/// Options every subcommand understands.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Configuration file (TOML); a missing file means built-in defaults.
    #[arg(long, global = true, value_name = "FILE", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Root of the sysfs tree to read (a generated tree for tests and demos).
    #[arg(long, global = true, value_name = "DIR", default_value = "/sys")]
    pub sysfs_root: PathBuf,
    /// Device-mapper backend: `kernel`, or `sim[:STATE_FILE]` (simulated, shared through the
    /// state file; in memory without one).
    #[arg(long, global = true, value_name = "BACKEND", default_value = "kernel")]
    pub dm_backend: String,
    /// Control socket path.
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Native alias table (TOML).
    #[arg(long, global = true, value_name = "FILE")]
    pub aliases_table: Option<PathBuf>,
    /// multipath-tools' bindings file (read and kept in step). Default: /etc/multipath/bindings
    /// when it exists.
    #[arg(long, global = true, value_name = "FILE")]
    pub bindings_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run the daemon in the foreground (sd_notify, SIGHUP reconfigure, SIGTERM leaves maps).
    Daemon {
        /// Single-instance lock and pid file, locked before anything else is touched.
        #[arg(long, value_name = "FILE", default_value = daemon::DEFAULT_PIDFILE)]
        pidfile: PathBuf,
    },
    /// Build or update the maps once and exit (like `multipath -v2`).
    Once {
        /// Print what would be done; touch neither device-mapper nor the alias files.
        #[arg(long)]
        dry_run: bool,
        /// One JSON object with an entry per map, its paths grouped.
        #[arg(long)]
        json: bool,
    },
    /// Ask the daemon: show paths|maps|map MAP|topology|config|status.
    Show {
        #[command(subcommand)]
        what: ShowWhat,
    },
    /// Fail a path (client).
    Fail {
        #[command(subcommand)]
        what: PathArg,
    },
    /// Reinstate a path (client).
    Reinstate {
        #[command(subcommand)]
        what: PathArg,
    },
    /// Switch a map to path group N (1-based) (client).
    Switchgroup { map: String, group: u32 },
    /// Reload a map with the new size of its LUN (client).
    Resize {
        #[command(subcommand)]
        what: MapArg,
    },
    /// Add a path or a map (client).
    Add {
        #[command(subcommand)]
        what: PathOrMap,
    },
    /// Remove a path or a map (client). An open map is never removed.
    Del {
        #[command(subcommand)]
        what: PathOrMap,
    },
    /// Re-read the configuration and re-plan every map (client).
    Reconfigure,
    /// Scan the SCSI hosts for new LUNs, then update the maps (client).
    Rescan,
    /// Stop the daemon; maps stay in place (client).
    Shutdown,
    /// Configuration tools (work without a daemon).
    Config {
        #[command(subcommand)]
        what: ConfigCmd,
    },
    /// For udev: print DM_MULTIPATH_DEVICE_PATH=1 when DEV is a path of a (future) map.
    UdevMember { dev: String },
    /// A simulated dual-HBA SAN: build maps, lose an HBA, get it back. No root needed.
    Demo {
        /// Print the step results as JSON instead of the story.
        #[arg(long)]
        json: bool,
        /// LUNs the simulated array exports.
        #[arg(long, default_value_t = 4)]
        luns: u32,
        /// Keep the scratch directory.
        #[arg(long)]
        keep: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ShowWhat {
    Paths {
        #[arg(long)]
        json: bool,
    },
    /// Maps; `--json` gives multipathd's `show maps json` shape, `--rich-json` ours.
    Maps {
        #[arg(long)]
        json: bool,
        #[arg(long, conflicts_with = "json")]
        rich_json: bool,
    },
    Map {
        map: String,
        #[arg(long)]
        json: bool,
    },
    Topology {
        map: Option<String>,
    },
    Config,
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PathArg {
    Path { dev: String },
}

#[derive(Debug, Subcommand)]
pub enum MapArg {
    Map { map: String },
}

#[derive(Debug, Subcommand)]
pub enum PathOrMap {
    Path { dev: String },
    Map { map: String },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Translate a multipath-tools multipath.conf into our TOML.
    Import {
        file: PathBuf,
        /// conf.d directory read after FILE (multipath-tools' config_dir).
        #[arg(long)]
        config_dir: Option<PathBuf>,
        /// Write the TOML here instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// The effective configuration; with --device, what applies to one path and why.
    Show {
        #[arg(long)]
        device: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

/// Builds the backend `--dm-backend` names.
pub fn backend(spec: &str, sysfs_root: &Path) -> Result<Box<dyn DmBackend>> {
    if spec == "kernel" {
        return Ok(Box::new(KernelBackend::new().context(
            "the kernel device-mapper backend needs /dev/mapper/control (root, dm_mod loaded)",
        )?));
    }
    let Some(rest) = spec.strip_prefix("sim") else {
        bail!("--dm-backend {spec:?} is not `kernel` or `sim[:STATE_FILE]`");
    };
    let devices = dm_tables::devices_from_sysfs(sysfs_root).ok();
    match rest.strip_prefix(':') {
        Some(file) if !file.is_empty() => Ok(Box::new(
            SimBackend::open_file(file, devices)
                .with_context(|| format!("opening the simulated device-mapper state {file}"))?,
        )),
        None if rest.is_empty() => Ok(Box::new(match devices {
            Some(d) => SimBackend::with_devices(d),
            None => SimBackend::new(),
        })),
        _ => bail!("--dm-backend {spec:?} is not `kernel` or `sim[:STATE_FILE]`"),
    }
}

fn store_paths(g: &Global) -> StorePaths {
    let bindings = g.bindings_file.clone().or_else(|| {
        let d = PathBuf::from(aliases::store::DEFAULT_BINDINGS);
        d.exists().then_some(d)
    });
    StorePaths {
        table: Some(
            g.aliases_table
                .clone()
                .unwrap_or_else(|| PathBuf::from(aliases::store::DEFAULT_TABLE)),
        ),
        bindings,
        config: None,
        config_dir: None,
    }
}

/// Builds an engine from the global options.
pub fn engine(g: &Global) -> Result<Engine> {
    let config = Config::load_or_builtin(&g.config)?;
    let sim = g.dm_backend.starts_with("sim");
    let opts = EngineOptions {
        config_path: Some(g.config.clone()),
        sysfs_root: g.sysfs_root.clone(),
        store_paths: store_paths(g),
        checker_override: sim.then(|| "sysfs".to_string()),
    };
    let b = backend(&g.dm_backend, &g.sysfs_root)?;
    Ok(Engine::new(config, opts, b, Arc::new(SystemClock))?)
}

fn client(g: &Global, cmd: Command) -> Result<i32> {
    let r = socket::request(&g.socket, &cmd)?;
    let mut out = std::io::stdout().lock();
    if r.is_ok() {
        out.write_all(r.body.as_bytes())?;
        if !r.body.ends_with('\n') {
            writeln!(out)?;
        }
        Ok(0)
    } else {
        eprint!("{}", r.body);
        if !r.body.ends_with('\n') {
            eprintln!();
        }
        Ok(1)
    }
}

/// Runs the command line; returns the exit code.
pub fn run(cli: Cli) -> Result<i32> {
    let g = &cli.global;
    match cli.command {
        Cmd::Daemon { pidfile } => {
            // First of all: a second daemon must not reload a single map.
            let _lock = daemon::PidFile::acquire(&pidfile)?;
            let engine = engine(g)?;
            let opts = DaemonOptions {
                socket: g.socket.clone(),
                uevents: g.sysfs_root == Path::new("/sys"),
                tick: std::time::Duration::from_millis(200),
            };
            daemon::run(engine, Arc::new(SystemClock), opts)?;
            Ok(0)
        }
        Cmd::Once { dry_run, json } => once(g, dry_run, json),
        Cmd::Show { what } => {
            let cmd = match what {
                ShowWhat::Paths { json } => Command::ShowPaths {
                    format: if json { Format::Json } else { Format::Human },
                },
                ShowWhat::Maps { json, rich_json } => Command::ShowMaps {
                    format: if json {
                        Format::MultipathdJson
                    } else if rich_json {
                        Format::Json
                    } else {
                        Format::Human
                    },
                },
                ShowWhat::Map { map, json } => Command::ShowMap {
                    map,
                    format: if json {
                        Format::MultipathdJson
                    } else {
                        Format::Human
                    },
                },
                ShowWhat::Topology { map } => Command::ShowTopology { map },
                ShowWhat::Config => Command::ShowConfig,
                ShowWhat::Status { json } => Command::ShowStatus {
                    format: if json { Format::Json } else { Format::Human },
                },
            };
            client(g, cmd)
        }
        Cmd::Fail {
            what: PathArg::Path { dev },
        } => client(g, Command::FailPath { dev }),
        Cmd::Reinstate {
            what: PathArg::Path { dev },
        } => client(g, Command::ReinstatePath { dev }),
        Cmd::Switchgroup { map, group } => client(g, Command::SwitchGroup { map, group }),
        Cmd::Resize {
            what: MapArg::Map { map },
        } => client(g, Command::ResizeMap { map }),
        Cmd::Add { what } => client(
            g,
            match what {
                PathOrMap::Path { dev } => Command::AddPath { dev },
                PathOrMap::Map { map } => Command::AddMap { map },
            },
        ),
        Cmd::Del { what } => client(
            g,
            match what {
                PathOrMap::Path { dev } => Command::DelPath { dev },
                PathOrMap::Map { map } => Command::DelMap { map },
            },
        ),
        Cmd::Reconfigure => client(g, Command::Reconfigure),
        Cmd::Rescan => client(g, Command::Rescan),
        Cmd::Shutdown => client(g, Command::Shutdown),
        Cmd::Config { what } => config_cmd(g, what),
        Cmd::UdevMember { dev } => udev_member(g, &dev),
        Cmd::Demo { json, luns, keep } => {
            let opts = crate::demo::DemoOptions { luns, keep };
            let mut out = std::io::stdout().lock();
            let report = crate::demo::run(&opts, &mut out, json)?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
            }
            Ok(
                if report.every_map_kept_a_path && report.all_paths_active_at_end {
                    0
                } else {
                    1
                },
            )
        }
    }
}

fn once(g: &Global, dry_run: bool, json: bool) -> Result<i32> {
    let mut e = engine(g)?;
    let report = if dry_run { e.plan_only()? } else { e.sync()? };
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        let changed: Vec<_> = report
            .maps
            .iter()
            .filter(|m| m.plan.action != discovery::Action::Keep)
            .map(|m| daemon::planned_view(&m.plan))
            .collect();
        out.write_all(output::topology(&changed).as_bytes())?;
        for m in &report.maps {
            if let Some(e) = &m.plan.error {
                writeln!(out, "{}: {e}", m.plan.name)?;
            }
        }
        for n in &report.kept_without_paths {
            writeln!(out, "{n}: kept as it is (no path present)")?;
        }
        for e in &report.errors {
            eprintln!("error: {e}");
        }
    }
    // Non-zero when a map could not be built: a plan that failed, or a WWID left without a
    // name (a bad line in the alias files must not pass for success).
    let failed = report.maps.iter().any(|m| m.plan.error.is_some()) || !report.unnamed.is_empty();
    Ok(if failed { 1 } else { 0 })
}

fn config_cmd(g: &Global, what: ConfigCmd) -> Result<i32> {
    match what {
        ConfigCmd::Import {
            file,
            config_dir,
            output,
        } => {
            let r = crate::import::import_files(&file, config_dir.as_deref())?;
            match output {
                Some(o) => {
                    std::fs::write(&o, &r.toml)
                        .with_context(|| format!("writing {}", o.display()))?;
                    eprintln!("wrote {}", o.display());
                }
                None => print!("{}", r.toml),
            }
            for s in &r.skipped {
                eprintln!("not carried over: {s}");
            }
            for n in &r.notes {
                eprintln!("note: {n}");
            }
            Ok(0)
        }
        ConfigCmd::Show { device, json } => {
            let cfg = Config::load_or_builtin(&g.config)?;
            let text = match device {
                None => {
                    let v = cfg.view();
                    if json {
                        serde_json::to_string_pretty(&v.to_json())?
                    } else {
                        v.to_string()
                    }
                }
                Some(dev) => {
                    let dev = dev.strip_prefix("/dev/").unwrap_or(&dev).to_string();
                    let p = lun_scan::scan_path(&g.sysfs_root, &dev)?;
                    let ex = cfg.explain(&discovery::identity_of(&p));
                    if json {
                        serde_json::to_string_pretty(&ex.to_json())?
                    } else {
                        ex.to_string()
                    }
                }
            };
            println!("{}", text.trim_end());
            Ok(0)
        }
    }
}

/// `udev-member DEV`: whether DEV is a path that is not blacklisted and would be part of a
/// map (find_multipaths decides with what is present and known).
fn udev_member(g: &Global, dev: &str) -> Result<i32> {
    let dev = dev.strip_prefix("/dev/").unwrap_or(dev);
    let cfg = Config::load_or_builtin(&g.config)?;
    let member = match lun_scan::scan_path(&g.sysfs_root, dev) {
        Err(_) => false,
        Ok(p) => {
            let verdict = cfg.blacklist_verdict(&discovery::identity_of(&p));
            match (&p.wwid, verdict.is_blacklisted()) {
                (None, _) | (_, true) => false,
                (Some(w), false) => {
                    let store = aliases::Store::open(
                        store_paths(g),
                        Some(crate::engine::alias_policy(&cfg)),
                    )
                    .ok();
                    let bound = store
                        .as_ref()
                        .and_then(|s| s.lookup(w).ok().flatten())
                        .is_some();
                    // A map that exists already (any backend that can be opened) counts.
                    let mapped = backend(&g.dm_backend, &g.sysfs_root)
                        .ok()
                        .and_then(|b| b.list_multipath().ok())
                        .is_some_and(|maps| maps.iter().any(|m| m.wwid() == Some(w.as_str())));
                    let known = bound || mapped || cfg.multipath_entry(w).is_some();
                    let find = cfg.global().find_multipaths.value;
                    if find.should_multipath(1, known) {
                        true
                    } else {
                        let scan = lun_scan::scan_with(&g.sysfs_root, crate::engine::SCAN_OPTIONS);
                        let f = discovery::filter_paths(&cfg, &scan.paths, &|x| x == w && known);
                        f.by_wwid
                            .get(w)
                            .is_some_and(|ps| ps.iter().any(|q| q.dev == dev))
                    }
                }
            }
        }
    };
    println!("DM_MULTIPATH_DEVICE_PATH={}", u8::from(member));
    Ok(0)
}
