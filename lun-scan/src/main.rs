//! lun-scan: list SCSI hosts, FC remote ports, iSCSI sessions and SCSI paths with their WWIDs;
//! rescan HBAs; snapshot sysfs; render fixture topologies. See lun-scan/README.md.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};

use lun_scan::error::Error;
use lun_scan::rescan::{Diff, KernelWriter, Rescanner, Settle};
use lun_scan::{Hctl, output};

#[derive(Parser)]
#[command(
    name = "lun-scan",
    version,
    about = "SCSI/FC/iSCSI hosts, paths, WWIDs and rescans from sysfs"
)]
struct Cli {
    /// Root of the sysfs tree to read (a snapshot or fixture in tests).
    #[arg(long, global = true, default_value = "/sys", value_name = "DIR")]
    sysfs_root: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Format {
    Table,
    Json,
    /// /proc/scsi/scsi-style listing
    Proc,
}

#[derive(Subcommand)]
enum Cmd {
    /// SCSI hosts with FC / iSCSI / SAS details, FC remote ports, iSCSI sessions.
    Hosts {
        #[arg(long)]
        json: bool,
    },
    /// SCSI paths (block devices) with WWID, state, size, ALUA state and transport.
    List {
        #[arg(long, conflicts_with = "format")]
        json: bool,
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// One path by block device name.
    Show {
        dev: String,
        #[arg(long)]
        json: bool,
    },
    /// Rescan hosts (all by default) and report the paths added, removed and changed.
    Rescan {
        /// Only these hosts (repeatable), e.g. --host host0.
        #[arg(long = "host", value_name = "hostN")]
        hosts: Vec<String>,
        /// Targeted FC scan: only the remote port with this WWPN ("C T L" from its rport).
        #[arg(long, value_name = "WWPN")]
        target_wwpn: Option<String>,
        /// Only this LUN.
        #[arg(long, value_name = "N")]
        lun: Option<u64>,
        /// Issue a LIP on the FC hosts and wait for the device set to settle.
        #[arg(long, conflicts_with_all = ["target_wwpn", "lun"])]
        lip: bool,
        /// Add one device H:C:T:L.
        #[arg(long, value_name = "H:C:T:L", conflicts_with_all = ["target_wwpn", "lun", "lip", "hosts"])]
        add: Option<Hctl>,
        /// Remove a path (device/delete); refused for the last running path of a multipath map.
        #[arg(long, value_name = "DEV", conflicts_with_all = ["target_wwpn", "lun", "lip", "hosts", "add"])]
        remove: Option<String>,
        /// With --remove: remove even the last running path of a multipath map.
        #[arg(long, requires = "remove")]
        force: bool,
        /// Re-read a device's size (device/rescan) and report old and new size.
        #[arg(long, value_name = "DEV", conflicts_with_all = ["target_wwpn", "lun", "lip", "hosts", "add", "remove"])]
        resize: Option<String>,
        /// Seconds the device set must stay unchanged after the rescan.
        #[arg(long, default_value_t = 2.0, value_name = "SECS")]
        settle: f64,
        /// Seconds to wait at most for the device set to settle.
        #[arg(long, default_value_t = 60.0, value_name = "SECS")]
        timeout: f64,
        #[arg(long)]
        json: bool,
    },
    /// Copy the SCSI/FC/iSCSI/SAS/block part of sysfs into DIR (readable with --sysfs-root DIR).
    Snapshot { dir: PathBuf },
    /// Render a topology (TOML) as a sysfs tree in DIR.
    Fixture { topology: PathBuf, dir: PathBuf },
}

fn print_errors<'a>(errors: impl IntoIterator<Item = &'a Error>) -> bool {
    let mut any = false;
    let stderr = std::io::stderr();
    let mut e = stderr.lock();
    for err in errors {
        any = true;
        let _ = writeln!(e, "lun-scan: error: {err}");
    }
    any
}

fn json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    // Buffered: a locked stdout is line-buffered, which made pretty JSON one write(2) per line
    // (32 per path).
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

fn secs(s: f64, what: &str) -> anyhow::Result<Duration> {
    if !(s.is_finite() && s >= 0.0) {
        bail!("--{what} must be a non-negative number of seconds, not {s}");
    }
    Ok(Duration::from_secs_f64(s))
}

fn run(cli: Cli) -> anyhow::Result<bool> {
    let root = cli.sysfs_root.as_path();
    match cli.cmd {
        Cmd::Hosts { json: as_json } => {
            let scan = lun_scan::scan(root);
            if as_json {
                #[derive(serde::Serialize)]
                struct H<'a> {
                    hosts: &'a [lun_scan::Host],
                    rports: &'a [lun_scan::FcRemotePort],
                    sessions: &'a [lun_scan::IscsiSession],
                    sas_devices: &'a [lun_scan::SasEndDevice],
                    errors: Vec<&'a Error>,
                }
                let errors: Vec<&Error> = scan
                    .all_errors()
                    .into_iter()
                    .filter(|e| !scan.paths.iter().any(|p| p.errors.contains(e)))
                    .collect();
                json(&H {
                    hosts: &scan.hosts,
                    rports: &scan.rports,
                    sessions: &scan.sessions,
                    sas_devices: &scan.sas_devices,
                    errors: errors.clone(),
                })?;
                Ok(!print_errors(errors))
            } else {
                print!("{}", output::hosts_text(&scan));
                let errors: Vec<&Error> = scan
                    .all_errors()
                    .into_iter()
                    .filter(|e| !scan.paths.iter().any(|p| p.errors.contains(e)))
                    .collect();
                Ok(!print_errors(errors))
            }
        }
        Cmd::List {
            json: as_json,
            format,
        } => {
            let (paths, errors) = list(root);
            let format = if as_json {
                Format::Json
            } else {
                format.unwrap_or(Format::Table)
            };
            match format {
                Format::Json => json(&paths)?,
                Format::Proc => print!("{}", output::proc_scsi(&paths)),
                Format::Table => print!("{}", output::paths_table(&paths)),
            }
            Ok(!print_errors(
                errors
                    .iter()
                    .chain(paths.iter().flat_map(|p| p.errors.iter())),
            ))
        }
        Cmd::Show { dev, json: as_json } => {
            let p = lun_scan::scan_path(root, &dev)?;
            if as_json {
                json(&p)?;
            } else {
                print!("{}", output::paths_table(std::slice::from_ref(&p)));
            }
            Ok(!print_errors(&p.errors))
        }
        Cmd::Rescan {
            hosts,
            target_wwpn,
            lun,
            lip,
            add,
            remove,
            force,
            resize,
            settle,
            timeout,
            json: as_json,
        } => {
            let s = Settle {
                settle: secs(settle, "settle")?,
                timeout: secs(timeout, "timeout")?,
                poll: Duration::from_millis(100),
                progress: !as_json || std::io::stderr().is_terminal(),
            };
            let mut w = KernelWriter;
            let mut r = Rescanner::new(root, &mut w, s);
            let d: Diff = if let Some(dev) = remove {
                r.remove_path(&dev, force)?
            } else if let Some(dev) = resize {
                r.resize(&dev)?
            } else if let Some(h) = add {
                r.add_device(h)
            } else if lip {
                r.lip(&hosts)
            } else if let Some(w) = target_wwpn {
                r.scan_fc_target(&hosts, &w, lun)
            } else {
                r.scan_hosts(&hosts, lun)
            };
            if as_json {
                json(&d)?;
            } else {
                print!("{}", output::diff_text(&d));
            }
            let mut ok = !print_errors(&d.errors);
            if !d.settled {
                eprintln!(
                    "lun-scan: error: the device set under {} was still changing when the {timeout}s timeout expired",
                    root.display()
                );
                ok = false;
            }
            Ok(ok)
        }
        Cmd::Snapshot { dir } => {
            let rep = lun_scan::snapshot::snapshot(root, &dir)?;
            println!(
                "snapshot of {} written to {}: {} files ({} unreadable, written empty), {} links, {} directories",
                root.display(),
                dir.display(),
                rep.files,
                rep.unreadable,
                rep.links,
                rep.dirs
            );
            Ok(!print_errors(&rep.errors))
        }
        Cmd::Fixture { topology, dir } => {
            let sim = lun_scan::topology::Sim::render_file(&topology, &dir)
                .with_context(|| format!("rendering {}", topology.display()))?;
            println!(
                "rendered {} ({} paths) into {}",
                topology.display(),
                sim.present_paths().count(),
                dir.display()
            );
            Ok(true)
        }
    }
}

fn list(root: &Path) -> (Vec<lun_scan::ScsiPath>, Vec<Error>) {
    let scan = lun_scan::scan(root);
    (scan.paths, scan.errors)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("lun-scan: error: {}", sentence(&e));
            ExitCode::from(2)
        }
    }
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
