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
    /// Root directory files, /proc and /sys are read under (for tests; default /).
    #[arg(long, global = true, default_value = "/", hide = true)]
    root: PathBuf,
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
    /// Put every active LV of a shared VG on the dm error target: lvm.conf's
    /// lvmlockctl_kill_command (full path: "/usr/sbin/hostsync fence"), run when sanlock lost
    /// the VG's lease storage. Exit 0: every LV fenced; 1: an LV could still write; 2: no
    /// device list; 3: fenced but the drop failed.
    Fence {
        /// The VG (lvmlockctl appends it).
        vg: String,
        /// Run `lvmlockctl --drop VG` after every LV is fenced: auto = unless started by
        /// lvmlockctl (which drops itself after our exit 0).
        #[arg(long, default_value = "auto", value_parser = ["auto", "yes", "no"])]
        drop: String,
        /// Time limit of each command, seconds.
        #[arg(long, default_value_t = 10.0)]
        command_timeout: f64,
        /// Deadline of the whole fence, seconds (sanlock's kill grace period is 40 s).
        #[arg(long, default_value_t = 30.0)]
        deadline: f64,
    },
    /// LUNs for LVM (issue 17).
    Lun {
        #[command(subcommand)]
        cmd: LunCmd,
    },
    /// domU configurations (xl/xm files, libvirt domain XML) and their disks on LVM.
    Domu {
        #[command(subcommand)]
        cmd: DomuCmd,
    },
    /// Live migration of a domU without two writers.
    Migrate {
        #[command(subcommand)]
        cmd: MigrateCmd,
    },
    /// The Xen block script's work (run by /etc/xen/scripts/block-hostsync with XENBUS_PATH).
    Block {
        /// add or remove.
        action: String,
        /// The sysfs root (for tests).
        #[arg(long, default_value = "/sys", hide = true)]
        sysfs: PathBuf,
    },
    /// libvirt's hook (run by /etc/libvirt/hooks/qemu with the domain XML on stdin).
    Hook {
        /// The hook's name (qemu, libxl).
        driver: String,
        /// The guest's name.
        guest: String,
        /// prepare, start, started, stopped, release, migrate, ...
        op: String,
        /// begin, end, -.
        subop: String,
        /// Extra argument.
        extra: Option<String>,
        /// The sysfs root (for tests).
        #[arg(long, default_value = "/sys", hide = true)]
        sysfs: PathBuf,
    },
    /// Publish this host's LVM state (VGs, active LVs and their lock mode, sanlock host_id and
    /// io_timeout) under hosts/<host>/lvm.
    Publish,
    /// Activate or deactivate an LV through lvmlockd (exclusive unless --shared).
    Lv {
        #[command(subcommand)]
        cmd: LvCmd,
    },
    /// Shared VGs.
    Vg {
        #[command(subcommand)]
        cmd: VgCmd,
    },
    /// This host's readiness for exclusive activation; exit 0 clean, 1 warnings, 2 errors.
    Doctor,
    /// Watch storage (issue 17).
    Watch {
        #[command(subcommand)]
        cmd: WatchCmd,
    },
}

#[derive(Subcommand, Debug)]
enum MigrateCmd {
    /// Whether the domU's disks are safe on HOST, from HOST's published state (exit 1 if not).
    Check {
        /// The xl/xm configuration file or libvirt domain XML.
        config_file: PathBuf,
        /// The target host.
        #[arg(long)]
        to: String,
        /// The sysfs root (for tests).
        #[arg(long, default_value = "/sys", hide = true)]
        sysfs: PathBuf,
    },
    /// Hand a running domU's disks over to HOST and migrate it there.
    Run {
        /// The domU.
        domu: String,
        /// The destination host.
        #[arg(long)]
        to: String,
        /// Its configuration (default: `xl list -l DOMU`, or `virsh dumpxml DOMU` with --virsh).
        #[arg(long = "domu-config")]
        domu_config: Option<PathBuf>,
        /// libvirt: `virsh migrate --live` instead of `xl migrate`.
        #[arg(long)]
        virsh: bool,
        /// The migrate command ({domu} and {to} are replaced).
        #[arg(long = "migrate-command")]
        migrate_command: Option<String>,
        /// The prefix that runs a command on the destination ({to} is replaced).
        #[arg(long, default_value = hostsync::migrate::SSH_REMOTE)]
        remote: String,
        /// The migrate command's time limit in seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
        /// The sysfs root (for tests).
        #[arg(long, default_value = "/sys", hide = true)]
        sysfs: PathBuf,
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
    /// Every disk of a domU with its identity on this host.
    Disks {
        /// The xl/xm configuration file or libvirt domain XML.
        config_file: PathBuf,
        /// The sysfs root (for tests).
        #[arg(long, default_value = "/sys", hide = true)]
        sysfs: PathBuf,
    },
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
enum LvCmd {
    /// Activate VG/LV on this host (-aey; -asy with --shared).
    Activate {
        /// VG/LV.
        lv: String,
        /// Shared activation (a migration handoff), not exclusive.
        #[arg(long)]
        shared: bool,
        /// Allow activating an LV of a VG that is not shared (no lease protects it).
        #[arg(long)]
        unlocked: bool,
    },
    /// Deactivate VG/LV on this host (releases its lease).
    Deactivate {
        /// VG/LV.
        lv: String,
    },
}

#[derive(Subcommand, Debug)]
enum VgCmd {
    /// Convert a VG on multipath maps into a sanlock shared VG.
    Share {
        /// The VG.
        vg: String,
        /// Check and print the steps without changing anything.
        #[arg(long)]
        dry_run: bool,
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
    /// Every host's active LVs: on two hosts outside a migration, without a lock, or held by a
    /// dead host.
    Lvs {
        /// A host's record older than this (seconds) no longer proves it alive.
        #[arg(long, default_value_t = hostsync::publish::DEFAULT_STALE_AFTER)]
        stale_after: u64,
    },
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

fn hook_context<'a>(
    cli: &Cli,
    runner: &'a dyn hostsync::runner::Runner,
    host: &str,
    sysfs: &std::path::Path,
) -> hostsync::block::Context<'a> {
    hostsync::block::Context {
        runner,
        host: host.to_string(),
        sysfs: sysfs.to_path_buf(),
        registry_url: registry_url(cli).map_err(|e| format!("{e:#}")),
        registry_limit: hostsync::block::REGISTRY_LIMIT,
        start: std::time::Instant::now(),
        budget: hostsync::block::HOTPLUG_BUDGET,
    }
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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
        Cmd::Fence {
            vg,
            drop,
            command_timeout,
            deadline,
        } => {
            let code = hostsync::fence::main(vg, drop, *command_timeout, *deadline, cli.json);
            return Ok(ExitCode::from(code));
        }
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
        Cmd::Domu {
            cmd: DomuCmd::Disks { config_file, sysfs },
        } => {
            let cfg = hostsync::domu::load(config_file)?;
            let runner = hostsync::runner::SystemRunner;
            let res = hostsync::domu::Resolver::new(sysfs, hostsync::lvm::Lvm::new(&runner));
            let reps = res.resolve(&cfg);
            if cli.json {
                print_json(
                    &serde_json::json!({"config": cfg.file, "kind": cfg.kind, "name": cfg.name, "disks": reps}),
                )?;
            } else {
                print!("{}", hostsync::domu::render_table(&cfg, &reps));
            }
        }
        Cmd::Migrate {
            cmd:
                MigrateCmd::Check {
                    config_file,
                    to,
                    sysfs,
                },
        } => {
            let cfg = hostsync::domu::load(config_file)?;
            let runner = hostsync::runner::SystemRunner;
            let res = hostsync::domu::Resolver::new(sysfs, hostsync::lvm::Lvm::new(&runner));
            let disks = res.resolve(&cfg);
            let reg = open_registry()?;
            let view = hostsync::migrate::ClusterView::read(&*reg)?;
            let domu = cfg.domu_name();
            let rep = hostsync::migrate::check(&domu, &host, to, &disks, &view, now_unix());
            if cli.json {
                print_json(&rep)?;
            } else {
                print!("{}", hostsync::migrate::render_check(&rep));
            }
            if !rep.safe {
                return Ok(ExitCode::from(1));
            }
        }
        Cmd::Migrate {
            cmd:
                MigrateCmd::Run {
                    domu,
                    to,
                    domu_config,
                    virsh,
                    migrate_command,
                    remote,
                    timeout,
                    sysfs,
                },
        } => {
            let runner = hostsync::runner::SystemRunner;
            let cfg = match domu_config {
                Some(f) => hostsync::domu::load(f)?,
                None => hostsync::migrate::running_config(&runner, domu, *virsh)
                    .map_err(anyhow::Error::msg)?,
            };
            let lvm = hostsync::lvm::Lvm::new(&runner);
            let disks = hostsync::domu::Resolver::new(sysfs, hostsync::lvm::Lvm::new(&runner))
                .resolve(&cfg);
            let reg = open_registry()?;
            let default = if *virsh {
                hostsync::migrate::VIRSH_MIGRATE
            } else {
                hostsync::migrate::XL_MIGRATE
            };
            let words = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
            let opts = hostsync::migrate::RunOptions {
                domu: domu.clone(),
                from: host.clone(),
                to: to.clone(),
                migrate: words(migrate_command.as_deref().unwrap_or(default)),
                remote: words(remote),
                migrate_timeout: std::time::Duration::from_secs(*timeout),
                recover_for: std::time::Duration::from_secs(30),
            };
            let res =
                hostsync::migrate::run(&*reg, &runner, &lvm, &disks, &opts, now_unix(), &mut |s| {
                    eprintln!("hostsync migrate: {s}")
                });
            if let Err(e) = res {
                eprintln!("hostsync migrate: {e}");
                return Ok(ExitCode::from(1));
            }
        }
        Cmd::Block { action, sysfs } => {
            let runner = hostsync::runner::SystemRunner;
            let ctx = hook_context(&cli, &runner, &host, sysfs);
            let bp = std::env::var("XENBUS_PATH").ok();
            let code = hostsync::block::xen_block(&ctx, action, bp.as_deref());
            return Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)));
        }
        Cmd::Hook {
            guest, op, sysfs, ..
        } => {
            let runner = hostsync::runner::SystemRunner;
            let ctx = hook_context(&cli, &runner, &host, sysfs);
            let mut xml = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut xml)
                .context("cannot read the domain XML on stdin")?;
            // Nothing on stdout: for `migrate` libvirt would take it as the new XML.
            match hostsync::block::libvirt_hook(&ctx, guest, op, &xml) {
                Ok(done) => {
                    for d in done {
                        eprintln!("hostsync hook {op} {guest}: {d}");
                    }
                }
                Err(e) => {
                    eprintln!("hostsync hook {op} {guest} on {host}: {e}");
                    return Ok(ExitCode::from(1));
                }
            }
        }
        Cmd::Publish
        | Cmd::Lv { .. }
        | Cmd::Vg { .. }
        | Cmd::Doctor
        | Cmd::Check {
            cmd: CheckCmd::Lvs { .. },
        } => return run_lvm_command(&cli, &host, &open_registry),
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

/// The exclusive-activation commands (issue 15): logic and output in the library's modules.
fn run_lvm_command(
    cli: &Cli,
    host: &str,
    open_registry: &(dyn Fn() -> Result<Arc<dyn Registry>> + Sync),
) -> Result<ExitCode> {
    use hostsync::lvm::Activation;
    let runner = hostsync::runner::SystemRunner;
    let probe = hostsync::probe::Probe::new(&runner, &cli.root);
    let open = || open_registry().map_err(|e| format!("{e:#}"));
    match &cli.cmd {
        Cmd::Publish => {
            let reg = open_registry()?;
            let st = hostsync::publish::publish(&*reg, &probe, host)?;
            if cli.json {
                print_json(&st)?;
            } else {
                println!(
                    "published {}: host_id {}, io_timeout {}, {} VG(s), {} active LV(s)",
                    hostsync::lvstate::lvm_key(host),
                    st.host_id
                        .map(|i| i.to_string())
                        .unwrap_or_else(|| "unknown".into()),
                    st.io_timeout
                        .map(|i| format!("{i} s"))
                        .unwrap_or_else(|| "unknown".into()),
                    st.vgs.len(),
                    st.lvs.len()
                );
            }
        }
        Cmd::Lv { cmd } => {
            let (name, mode, unlocked) = match cmd {
                LvCmd::Activate {
                    lv,
                    shared,
                    unlocked,
                } => (
                    lv,
                    if *shared {
                        Activation::Shared
                    } else {
                        Activation::Exclusive
                    },
                    *unlocked,
                ),
                LvCmd::Deactivate { lv } => (lv, Activation::Off, false),
            };
            let (vg, lv) = hostsync::publish::split_vg_lv(name)?;
            let out = hostsync::activate::activate(&probe, &open, host, vg, lv, mode, unlocked)?;
            if let Some(w) = &out.warning {
                eprintln!("hostsync: {w}");
            }
            if cli.json {
                print_json(&out)?;
            } else {
                let what = match mode {
                    Activation::Exclusive => "active exclusively on",
                    Activation::Shared => "active shared on",
                    Activation::Off => "inactive on",
                };
                println!("{} is {what} {host}", out.lv);
            }
        }
        Cmd::Vg {
            cmd: VgCmd::Share { vg, dry_run },
        } => {
            let plan = hostsync::vgshare::share(&probe, &open, host, vg, *dry_run)?;
            if let Some(w) = &plan.warning {
                eprintln!("hostsync: {w}");
            }
            if cli.json {
                print_json(&plan)?;
            } else {
                print!("{}", hostsync::vgshare::render(&plan));
            }
        }
        Cmd::Doctor => {
            let reg = open_registry();
            let rep = hostsync::doctor::run(
                &probe,
                reg.as_ref().map(|r| &**r).map_err(|e| format!("{e:#}")),
                host,
            );
            if cli.json {
                print_json(&rep)?;
            } else {
                print!("{}", hostsync::doctor::render(&rep));
            }
            return Ok(ExitCode::from(rep.exit_code()));
        }
        Cmd::Check {
            cmd: CheckCmd::Lvs { stale_after },
        } => {
            let reg = open_registry()?;
            let records = hostsync::lvstate::cluster_lvm_state(&*reg)?;
            let migrations = hostsync::lvstate::migrations(&*reg)?;
            let alive = hostsync::publish::hosts_with_state(&*reg)?;
            let rep = hostsync::lvcheck::check(
                &records,
                &migrations,
                &alive,
                hostsync::publish::now_unix(),
                *stale_after,
            );
            if cli.json {
                print_json(&rep)?;
            } else {
                print!("{}", hostsync::lvcheck::render(&rep));
            }
            if !rep.problems.is_empty() {
                return Ok(ExitCode::from(1));
            }
        }
        _ => bail!("not an LVM command"),
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
            DomuCmd::Disks { .. } => bail!("`domu disks` is answered before the storage commands"),
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
