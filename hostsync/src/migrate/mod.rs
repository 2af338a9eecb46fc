//! Migration of a domU between hosts without two writers.
//!
//! [`check`]: is it safe to move this domU's disks to host TO? Decided from what TO published
//! (its maps under `hosts/TO/state`, its LVM under `hosts/TO/lvm`) and what every host says is
//! active: the same path names the same LUN there, its map has an active path there (a warning
//! below two), the VG is visible and its lockspace started there, and no host other than the
//! source holds the LV.
//!
//! [`run`]: the handoff, as lvmlockd allows it: register the intent (so the destination's block
//! script or hook activates shared), convert the source to shared, migrate, release the
//! source, convert the destination to exclusive (which fails if anyone still shares), finish.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::block::LvRef;
use crate::domu::{DiskReport, Identity};
use crate::hosts::{HostState, MapState};
use crate::lvm::{Activation, Lvm};
use crate::lvstate::{HostLvm, LvMode, Migration, finish_migration, record_lv, register_migration};
use crate::registry::Registry;
use crate::runner::{Command, Runner};

/// An LVM record older than this is called stale.
pub const STALE_LVM_S: u64 = 300;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Fine.
    Ok,
    /// Works, but the admin should know.
    Warn,
    /// Unsafe: the migration must not run.
    Fail,
}

impl Level {
    fn word(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        }
    }
}

/// One thing found about a disk (or the hosts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How bad.
    pub level: Level,
    /// What, as a sentence naming the host, map or LV.
    pub message: String,
}

/// The verdict on one disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskCheck {
    /// Guest device.
    pub vdev: String,
    /// Host path.
    pub path: String,
    /// Identity on the source, one line.
    pub identity: String,
    /// The worst finding.
    pub level: Level,
    /// Everything found.
    pub findings: Vec<Finding>,
}

/// The verdict on a migration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// The domU.
    pub domu: String,
    /// Source host (this one).
    pub from: String,
    /// Target host.
    pub to: String,
    /// About the hosts themselves.
    pub host_findings: Vec<Finding>,
    /// Per disk.
    pub disks: Vec<DiskCheck>,
    /// Findings at Warn.
    pub warnings: usize,
    /// Findings at Fail.
    pub failures: usize,
    /// No failure.
    pub safe: bool,
}

/// What `check` reads from the registry.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// Every live host's maps.
    pub states: Vec<HostState>,
    /// Every host's LVM.
    pub lvm: Vec<HostLvm>,
    /// Registered migrations.
    pub migrations: Vec<Migration>,
}

impl ClusterView {
    /// Reads it from the registry.
    pub fn read(reg: &dyn crate::Registry) -> crate::Result<Self> {
        Ok(ClusterView {
            states: crate::hosts::cluster_state(reg)?,
            lvm: crate::lvstate::cluster_lvm_state(reg)?,
            migrations: crate::lvstate::migrations(reg)?,
        })
    }

    fn state(&self, host: &str) -> Option<&HostState> {
        self.states.iter().find(|s| s.host == host)
    }

    fn lvm(&self, host: &str) -> Option<&HostLvm> {
        self.lvm.iter().find(|s| s.host == host)
    }
}

fn f(level: Level, message: String) -> Finding {
    Finding { level, message }
}

fn paths_finding(to: &str, m: &MapState) -> Finding {
    match m.active_paths {
        0 => f(
            Level::Fail,
            format!(
                "map {} has no active path on {to} (0 of {})",
                m.name, m.total_paths
            ),
        ),
        1 => f(
            Level::Warn,
            format!(
                "map {} has a single active path on {to} (1 of {}): one more fault stops the domU's I/O",
                m.name, m.total_paths
            ),
        ),
        n => f(
            Level::Ok,
            format!(
                "map {} has {n} of {} paths active on {to}",
                m.name, m.total_paths
            ),
        ),
    }
}

/// Whether `domu` on host `from` can move to `to`, disk by disk. `now_unix` tells stale records.
pub fn check(
    domu: &str,
    from: &str,
    to: &str,
    disks: &[DiskReport],
    view: &ClusterView,
    now_unix: u64,
) -> CheckReport {
    let mut host_findings = Vec::new();
    if from == to {
        host_findings.push(f(
            Level::Fail,
            format!("{domu} would migrate from {from} to itself"),
        ));
    }
    let state = view.state(to);
    if state.is_none() {
        host_findings.push(f(
            Level::Fail,
            format!(
                "{to} has published no state (hosts/{to}/state): it is down, unknown, or its multipathd-rs has no [cluster] registry"
            ),
        ));
    }
    let lvm = view.lvm(to);
    if let Some(l) = lvm
        && now_unix.saturating_sub(l.taken_unix) > STALE_LVM_S
    {
        host_findings.push(f(
            Level::Warn,
            format!(
                "{to}'s LVM record is {} s old",
                now_unix.saturating_sub(l.taken_unix)
            ),
        ));
    }
    if let Some(m) = view.migrations.iter().find(|m| m.domu == domu)
        && !(m.from == from && m.to == to)
    {
        host_findings.push(f(
            Level::Fail,
            format!(
                "a migration of {domu} from {} to {} is already registered",
                m.from, m.to
            ),
        ));
    }
    let maps: &[MapState] = state.map_or(&[], |s| s.maps.as_slice());
    let mut out = Vec::new();
    for d in disks {
        let mut fs = Vec::new();
        let path = d.path.clone().unwrap_or_else(|| "-".into());
        match &d.identity {
            Identity::Multipath { map, wwid } => {
                if state.is_some() {
                    fs.push(map_finding(to, &path, map, wwid, maps));
                }
            }
            Identity::Lv {
                vg,
                lv,
                vg_uuid,
                lv_uuid,
                lock_type,
                pvs,
            } => {
                let full = format!("{vg}/{lv}");
                match lvm {
                    None => fs.push(f(
                        Level::Fail,
                        format!("{to} has published no LVM state (hosts/{to}/lvm): VG {vg} cannot be checked there"),
                    )),
                    Some(l) => match l.vgs.iter().find(|v| &v.name == vg) {
                        None => fs.push(f(Level::Fail, format!("VG {vg} is not visible on {to}"))),
                        Some(v) if &v.uuid != vg_uuid => fs.push(f(
                            Level::Fail,
                            format!("VG {vg} on {to} is another VG (UUID {}, here {vg_uuid})", v.uuid),
                        )),
                        Some(v) => {
                            if v.lock_type.is_empty() || lock_type.is_empty() {
                                fs.push(f(
                                    Level::Fail,
                                    format!("VG {vg} is not shared (no lvmlockd lock type): no lock hands {full} over, nothing stops two writers"),
                                ));
                            } else if !v.lockspace_started {
                                fs.push(f(
                                    Level::Fail,
                                    format!("{to} has not started VG {vg}'s lockspace: it cannot take {full}'s lock"),
                                ));
                            } else {
                                fs.push(f(
                                    Level::Ok,
                                    format!("VG {vg} is visible on {to}, lockspace started ({})", v.lock_type),
                                ));
                            }
                        }
                    },
                }
                if state.is_some() {
                    for p in pvs {
                        match &p.wwid {
                            Some(w) => match maps.iter().find(|m| &m.wwid == w) {
                                Some(m) => fs.push(paths_finding(to, m)),
                                None => fs.push(f(
                                    Level::Fail,
                                    format!("{to} has no multipath map of PV {} (WWID {w})", p.device),
                                )),
                            },
                            None => fs.push(f(
                                Level::Warn,
                                format!("the LUN of PV {} is not known, so its paths on {to} are not checked", p.device),
                            )),
                        }
                    }
                }
                fs.extend(lock_findings(domu, from, to, vg, lv, lv_uuid, view));
            }
            Identity::Raw { device, wwid } => {
                let hint = wwid
                    .as_ref()
                    .and_then(|w| maps.iter().find(|m| &m.wwid == w))
                    .map(|m| format!(" (the LUN is /dev/mapper/{} on {to})", m.name))
                    .unwrap_or_default();
                fs.push(f(
                    Level::Fail,
                    format!(
                        "{path} names the SCSI disk {device}, one path named by discovery order: on {to} {path} may be another LUN; name it by its multipath map{hint}"
                    ),
                ));
            }
            Identity::Other { what } => {
                fs.push(f(Level::Warn, format!("{path}: {what}; not checked")))
            }
            Identity::Unknown { reason } => fs.push(f(
                Level::Fail,
                format!("its identity on this host is unknown: {reason}"),
            )),
        }
        let level = fs.iter().map(|x| x.level).max().unwrap_or(Level::Ok);
        out.push(DiskCheck {
            vdev: d.disk.vdev.clone().unwrap_or_default(),
            path,
            identity: d.identity.summary(),
            level,
            findings: fs,
        });
    }
    let all = || {
        host_findings
            .iter()
            .chain(out.iter().flat_map(|d| d.findings.iter()))
    };
    let warnings = all().filter(|x| x.level == Level::Warn).count();
    let failures = all().filter(|x| x.level == Level::Fail).count();
    CheckReport {
        domu: domu.into(),
        from: from.into(),
        to: to.into(),
        host_findings,
        disks: out,
        warnings,
        failures,
        safe: failures == 0,
    }
}

fn map_finding(to: &str, path: &str, map: &str, wwid: &str, maps: &[MapState]) -> Finding {
    match maps.iter().find(|m| m.name == map) {
        Some(m) if m.wwid == wwid => paths_finding(to, m),
        Some(m) => f(
            Level::Fail,
            format!(
                "on {to} {path} is another LUN (WWID {}, here {wwid})",
                m.wwid
            ),
        ),
        None => match maps.iter().find(|m| m.wwid == wwid) {
            Some(m) => f(
                Level::Fail,
                format!(
                    "{to} calls the LUN /dev/mapper/{}: {path} does not exist there",
                    m.name
                ),
            ),
            None => f(
                Level::Fail,
                format!("{to} has no multipath map of WWID {wwid}"),
            ),
        },
    }
}

/// Who else holds the LV, from every host's published LVM.
fn lock_findings(
    domu: &str,
    from: &str,
    to: &str,
    vg: &str,
    lv: &str,
    lv_uuid: &str,
    view: &ClusterView,
) -> Vec<Finding> {
    let full = format!("{vg}/{lv}");
    let registered = view
        .migrations
        .iter()
        .any(|m| m.domu == domu && m.from == from && m.to == to);
    let mut fs = Vec::new();
    for h in &view.lvm {
        let Some(st) = h
            .lvs
            .iter()
            .find(|l| l.uuid == lv_uuid || (l.vg == vg && l.lv == lv))
        else {
            continue;
        };
        let mode = format!("{:?}", st.mode).to_lowercase();
        if st.mode == LvMode::Unlocked {
            fs.push(f(
                Level::Fail,
                format!("{full} is active without a lock on {}", h.host),
            ));
        } else if h.host == from {
            continue;
        } else if h.host == to && st.mode == LvMode::Shared && registered {
            fs.push(f(
                Level::Ok,
                format!("{full} is active shared on {to} for the registered migration"),
            ));
        } else {
            fs.push(f(
                Level::Fail,
                format!(
                    "{full} is active {mode} on {}: moving {domu} to {to} would make a second writer",
                    h.host
                ),
            ));
        }
    }
    if !fs.iter().any(|x| x.level == Level::Fail) {
        fs.push(f(Level::Ok, format!("no host but {from} holds {full}")));
    }
    fs
}

/// The `migrate check` table.
pub fn render_check(r: &CheckReport) -> String {
    let mut out = format!("{}: {} -> {}\n", r.domu, r.from, r.to);
    for x in &r.host_findings {
        out.push_str(&format!("{}: {}\n", x.level.word(), x.message));
    }
    let rows: Vec<Vec<String>> = r
        .disks
        .iter()
        .map(|d| {
            vec![
                d.vdev.clone(),
                d.path.clone(),
                d.level.word().to_string(),
                d.identity.clone(),
            ]
        })
        .collect();
    out.push_str(&lun_scan::output::table(
        &["VDEV", "PATH", "STATUS", "IDENTITY"],
        &rows,
    ));
    for d in &r.disks {
        for x in &d.findings {
            out.push_str(&format!("  {} {}: {}\n", d.vdev, x.level.word(), x.message));
        }
    }
    out.push_str(&format!(
        "{}: {} failure(s), {} warning(s)\n",
        if r.safe { "safe" } else { "UNSAFE" },
        r.failures,
        r.warnings
    ));
    out
}

// --- migrate run ------------------------------------------------------------------------

/// How `migrate run` moves the domU and reaches the destination.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The domU.
    pub domu: String,
    /// This host (the source).
    pub from: String,
    /// The destination.
    pub to: String,
    /// The migrate command, words with `{domu}` and `{to}` replaced (`xl migrate {domu} {to}`).
    pub migrate: Vec<String>,
    /// The prefix that runs a command on the destination, `{to}` replaced
    /// (`ssh -o BatchMode=yes root@{to}`).
    pub remote: Vec<String>,
    /// The migrate command's time limit.
    pub migrate_timeout: Duration,
    /// How long to keep trying to get the source's lock back after a failed migration (the
    /// destination's cleanup may still hold it shared).
    pub recover_for: Duration,
}

/// The default migrate command for xl.
pub const XL_MIGRATE: &str = "xl migrate {domu} {to}";
/// The default migrate command for libvirt.
pub const VIRSH_MIGRATE: &str = "virsh migrate --live {domu} qemu+ssh://{to}/system";
/// The default way to run a command on the destination.
pub const SSH_REMOTE: &str = "ssh -o BatchMode=yes root@{to}";

fn fill(words: &[String], o: &RunOptions) -> Vec<String> {
    words
        .iter()
        .map(|w| w.replace("{domu}", &o.domu).replace("{to}", &o.to))
        .collect()
}

fn command_of(words: &[String]) -> Option<Command> {
    let (p, rest) = words.split_first()?;
    Some(Command::new(p.clone()).args(rest.iter().cloned()))
}

/// The disks of a running domU: `xl list -l DOMU` (its JSON `config.disks[].pdev_path`) or,
/// for libvirt, `virsh dumpxml DOMU`.
pub fn running_config(
    runner: &dyn Runner,
    domu: &str,
    virsh: bool,
) -> std::result::Result<crate::domu::DomuConfig, String> {
    let cmd = if virsh {
        Command::new("virsh").args(["dumpxml", domu])
    } else {
        Command::new("xl").args(["list", "-l", domu])
    };
    let out = runner.run(&cmd).map_err(|e| e.to_string())?;
    if !out.success() {
        return Err(format!(
            "`{}` failed ({}): is {domu} running here?",
            cmd.line(),
            out.stderr_text()
        ));
    }
    let file = std::path::PathBuf::from(cmd.line());
    if virsh {
        return crate::domu::parse(&out.stdout_text(), &file).map_err(|e| e.to_string());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("`{}` printed no JSON: {e}", cmd.line()))?;
    let dom = v.get(0).unwrap_or(&v);
    let mut disks = Vec::new();
    for d in dom
        .pointer("/config/disks")
        .and_then(|d| d.as_array())
        .into_iter()
        .flatten()
    {
        let s = |k: &str| d.get(k).and_then(|x| x.as_str()).map(str::to_string);
        disks.push(crate::domu::DiskSpec {
            spec: d.to_string(),
            target: s("pdev_path"),
            vdev: s("vdev"),
            script: s("script"),
            format: s("format"),
            access: if d.get("readwrite").and_then(serde_json::Value::as_i64) == Some(0) {
                crate::domu::Access::ReadOnly
            } else {
                crate::domu::Access::ReadWrite
            },
            ..Default::default()
        });
    }
    Ok(crate::domu::DomuConfig {
        file,
        kind: crate::domu::ConfigKind::Xl,
        name: Some(domu.to_string()),
        disks,
    })
}

/// The LVs of a domU's disks (other disks are not handed over).
pub fn lvs_of(disks: &[DiskReport]) -> Vec<LvRef> {
    disks
        .iter()
        .filter_map(|d| match &d.identity {
            Identity::Lv {
                vg, lv, lv_uuid, ..
            } => Some(LvRef {
                vg: vg.clone(),
                lv: lv.clone(),
                uuid: lv_uuid.clone(),
            }),
            _ => None,
        })
        .collect()
}

/// `migrate run`: check, register the intent, convert the source's LVs to shared, migrate,
/// release the source, convert the destination to exclusive (which proves nobody else still
/// shares), finish. On a failed migration the source is converted back to exclusive; if that
/// cannot be done the error says so loudly. `say` receives each step.
#[allow(clippy::too_many_arguments)]
pub fn run(
    reg: &dyn Registry,
    runner: &dyn Runner,
    lvm: &Lvm<'_>,
    disks: &[DiskReport],
    o: &RunOptions,
    now_unix: u64,
    say: &mut dyn FnMut(&str),
) -> std::result::Result<(), String> {
    let view = ClusterView::read(reg).map_err(|e| e.to_string())?;
    let rep = check(&o.domu, &o.from, &o.to, disks, &view, now_unix);
    if !rep.safe {
        return Err(format!(
            "migrate check says moving {} to {} is unsafe; nothing was changed:\n{}",
            o.domu,
            o.to,
            render_check(&rep)
        ));
    }
    let lvs = lvs_of(disks);
    let names: Vec<String> = lvs.iter().map(LvRef::full).collect();
    register_migration(
        reg,
        &Migration {
            domu: o.domu.clone(),
            from: o.from.clone(),
            to: o.to.clone(),
            lv_uuids: lvs.iter().map(|l| l.uuid.clone()).collect(),
            started_unix: now_unix,
        },
    )
    .map_err(|e| e.to_string())?;
    say(&format!(
        "registered the migration of {} from {} to {} ({})",
        o.domu,
        o.from,
        o.to,
        if names.is_empty() {
            "no LVs".into()
        } else {
            names.join(", ")
        }
    ));
    let record = |host: &str, l: &LvRef, mode: Option<LvMode>| {
        if let Err(e) = record_lv(reg, host, &l.vg, &l.lv, &l.uuid, mode, now_unix) {
            tracing::warn!(error = %e, "could not record an LV change");
        }
    };
    // 1. The source shares (ex -> sh): the destination may now take it shared.
    let mut shared: Vec<&LvRef> = Vec::new();
    for l in &lvs {
        if let Err(e) = lvm.activate(&l.vg, &l.lv, Activation::Shared) {
            let back = restore_source(lvm, &shared, o, say, &record);
            let _ = finish_migration(reg, &o.domu);
            return Err(format!(
                "could not share {} on {} for the handoff: {e}; the migration was not started{back}",
                l.full(),
                o.from
            ));
        }
        record(&o.from, l, Some(LvMode::Shared));
        shared.push(l);
        say(&format!(
            "{} is shared on {} (lvchange -asy)",
            l.full(),
            o.from
        ));
    }
    // 2. Migrate.
    let words = fill(&o.migrate, o);
    let cmd = command_of(&words)
        .ok_or("the migrate command is empty")?
        .timeout(o.migrate_timeout);
    say(&format!("running {}", cmd.line()));
    let result = match runner.run(&cmd) {
        Ok(out) if out.success() => Ok(()),
        Ok(out) => Err(format!(
            "`{}` failed with exit status {}: {}",
            cmd.line(),
            out.status,
            out.stderr_text()
        )),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = result {
        let back = restore_source(lvm, &shared, o, say, &record);
        let _ = finish_migration(reg, &o.domu);
        return Err(format!(
            "the migration of {} to {} failed: {e}{back}",
            o.domu, o.to
        ));
    }
    say(&format!("{} runs on {}", o.domu, o.to));
    // 3. The source lets go (xl's remove hook has normally done it already; -an is idempotent).
    for l in &lvs {
        match lvm.activate(&l.vg, &l.lv, Activation::Off) {
            Ok(()) => record(&o.from, l, None),
            Err(e) => say(&format!(
                "WARNING: {} could not be deactivated on {}: {e}",
                l.full(),
                o.from
            )),
        }
    }
    // 4. The destination takes it exclusively: this fails if anyone still shares it.
    let mut problems = Vec::new();
    for l in &lvs {
        let mut words = fill(&o.remote, o);
        words.extend(["lvchange".to_string(), "-aey".into(), l.full()]);
        let Some(cmd) = command_of(&words) else {
            problems.push("the remote command is empty".to_string());
            continue;
        };
        let cmd = cmd.timeout(Duration::from_secs(120));
        match runner.run(&cmd) {
            Ok(out) if out.success() => {
                record(&o.to, l, Some(LvMode::Exclusive));
                say(&format!("{} is exclusive on {}", l.full(), o.to));
            }
            Ok(out) => problems.push(format!(
                "{} could not be made exclusive on {} (`{}`: {}): another host may still share it",
                l.full(),
                o.to,
                cmd.line(),
                out.stderr_text()
            )),
            Err(e) => problems.push(format!("{} on {}: {e}", l.full(), o.to)),
        }
    }
    if !problems.is_empty() {
        return Err(format!(
            "DANGER: {} runs on {} but its disks are still shared; the migration record stays registered until this is resolved:\n  {}",
            o.domu,
            o.to,
            problems.join("\n  ")
        ));
    }
    finish_migration(reg, &o.domu).map_err(|e| e.to_string())?;
    say(&format!("migration of {} to {} finished", o.domu, o.to));
    Ok(())
}

/// After a failed migration: the source (where the domU resumed) takes its LVs back
/// exclusively, retrying while the destination's cleanup still holds them. Returns the text
/// to append to the error.
fn restore_source(
    lvm: &Lvm<'_>,
    shared: &[&LvRef],
    o: &RunOptions,
    say: &mut dyn FnMut(&str),
    record: &dyn Fn(&str, &LvRef, Option<LvMode>),
) -> String {
    let mut failed = Vec::new();
    for l in shared {
        let start = Instant::now();
        loop {
            match lvm.activate(&l.vg, &l.lv, Activation::Exclusive) {
                Ok(()) => {
                    record(&o.from, l, Some(LvMode::Exclusive));
                    say(&format!("{} is exclusive on {} again", l.full(), o.from));
                    break;
                }
                Err(e) if start.elapsed() >= o.recover_for => {
                    failed.push(format!("{}: {e}", l.full()));
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }
    if failed.is_empty() {
        format!("; {} keeps its disks exclusively on {}", o.domu, o.from)
    } else {
        let msg = format!(
            "\n!!! DANGER: {} resumed on {} but could NOT take its LVs back exclusively; they are still SHARED and {} may hold them:\n!!!   {}\n!!! Deactivate them on {} (lvchange -an), then run lvchange -aey here.",
            o.domu,
            o.from,
            o.to,
            failed.join("\n!!!   "),
            o.to
        );
        say(&msg);
        msg
    }
}

#[cfg(test)]
mod tests;
