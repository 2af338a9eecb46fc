//! `hostsync vg share VG [--dry-run]`: a VG on multipath maps becomes a sanlock shared VG, the
//! steps lvmlockd(8) gives ("Changing a local VG to a shared VG"): every LV inactive, lvmlockd
//! running, then `vgchange --lock-type sanlock VG` and `vgchange --lock-start VG` (other hosts
//! run the lock-start themselves before they use it).
//!
//! Refused (nothing changed) while: an LV of the VG is active on another host (published
//! state; without a registry that cannot be told, so it is refused too), an LV of it is active
//! here, a PV of it is a member path of a multipath map or not a multipath map at all, lvmlockd
//! does not run or `use_lvmlockd` is off, or the VG lacks the 256 MiB sanlock needs for its
//! `lvmlock` LV.

use serde::Serialize;

use crate::activate::OpenRegistry;
use crate::lvm::Lvm;
use crate::lvstate::cluster_lvm_state;
use crate::probe::Probe;
use crate::publish::republish;
use crate::registry::Registry;
use crate::{Error, Result};

/// Space lvmlockd allocates for the hidden `lvmlock` LV of a sanlock VG.
pub const LVMLOCK_BYTES: u64 = 256 << 20;

/// What `vg share` checked and did (or would do).
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The VG.
    pub vg: String,
    /// Checks that passed, in words.
    pub checks: Vec<String>,
    /// The commands, in order.
    pub steps: Vec<String>,
    /// Whether they were run (false with --dry-run or when the VG is already shared).
    pub done: bool,
    /// Set when this host's state could not be published afterwards.
    pub warning: Option<String>,
}

fn refuse(vg: &str, reason: String) -> Error {
    Error::Refused {
        target: format!("VG {vg}"),
        action: "share".into(),
        reason,
    }
}

/// Checks, then (unless `dry_run`) converts `vg`.
pub fn share(
    probe: &Probe<'_>,
    open: OpenRegistry<'_>,
    host: &str,
    vg: &str,
    dry_run: bool,
) -> Result<Plan> {
    let lvm = Lvm::new(probe.runner);
    let v = lvm
        .vgs(&[vg])?
        .into_iter()
        .find(|v| v.name == vg)
        .ok_or_else(|| Error::Lvm {
            target: vg.into(),
            action: "find".into(),
            message: "no such VG".into(),
        })?;
    let mut plan = Plan {
        vg: vg.into(),
        checks: Vec::new(),
        steps: Vec::new(),
        done: false,
        warning: None,
    };
    if v.is_shared() {
        plan.checks.push(format!(
            "VG {vg} is already shared (lock type {})",
            v.lock_type
        ));
        return Ok(plan);
    }
    // PVs: multipath maps, never their member paths.
    let maps = probe.multipath_maps();
    for pv in lvm
        .pvs(&[])
        .map(|p| p.into_iter().filter(|p| p.vg == vg).collect::<Vec<_>>())?
    {
        let dev = pv.name.rsplit('/').next().unwrap_or("");
        if let Some(m) = maps.iter().find(|m| m.members.iter().any(|s| s == dev)) {
            return Err(refuse(
                vg,
                format!(
                    "its PV {} is {dev}, one path of multipath map {}: LVM must use /dev/mapper/{} (a lost path would stop the lock LV's I/O and a second writer could bypass the map); hide the member paths from LVM (devices/global_filter or the devices file, see `hostsync doctor`), run `pvscan --cache` and check `pvs` names the map",
                    pv.name, m.name, m.name
                ),
            ));
        }
        let on_map = maps.iter().any(|m| {
            pv.name == format!("/dev/mapper/{}", m.name) || pv.name == format!("/dev/{}", m.kernel)
        });
        if !on_map {
            return Err(refuse(
                vg,
                format!(
                    "its PV {} is not a multipath map: a shared VG's PVs must be SAN LUNs every host reaches through its multipath map",
                    pv.name
                ),
            ));
        }
        plan.checks
            .push(format!("PV {} is a multipath map", pv.name));
    }
    // Other hosts (published state): fail closed without a registry.
    let reg = open();
    let records = match &reg {
        Ok(r) => cluster_lvm_state(&**r)?,
        Err(why) => {
            return Err(refuse(
                vg,
                format!(
                    "without the registry it cannot be told whether another host has its LVs active ({why})"
                ),
            ));
        }
    };
    for rec in records.iter().filter(|r| r.host != host) {
        let active: Vec<String> = rec
            .lvs
            .iter()
            .filter(|l| l.vg == vg)
            .map(|l| format!("{}/{}", l.vg, l.lv))
            .collect();
        if !active.is_empty() {
            return Err(refuse(
                vg,
                format!(
                    "host {} published {} active there; deactivate them on {} first (`hostsync lv deactivate ...`)",
                    rec.host,
                    active.join(", "),
                    rec.host
                ),
            ));
        }
    }
    plan.checks.push(format!(
        "no other host published an active LV of {vg} ({} host record(s))",
        records.len()
    ));
    // This host: every LV inactive (LVM's own condition).
    let here: Vec<String> = lvm
        .lvs(&[vg])?
        .iter()
        .filter(|l| l.active)
        .map(|l| l.full_name())
        .collect();
    if !here.is_empty() {
        return Err(refuse(
            vg,
            format!(
                "{} active on this host; all LVs must be inactive to change the lock type (`vgchange -an {vg}`)",
                here.join(", ")
            ),
        ));
    }
    plan.checks.push(format!("no LV of {vg} is active here"));
    if probe.process("lvmlockd").is_none() {
        return Err(refuse(
            vg,
            "lvmlockd is not running on this host; start it (`systemctl enable --now lvmlockd`, with sanlock) first".into(),
        ));
    }
    let use_lvmlockd = probe
        .lvm_config(&["global/use_lvmlockd"])?
        .get("use_lvmlockd")
        .cloned()
        .unwrap_or_default();
    if use_lvmlockd != "1" {
        return Err(refuse(
            vg,
            "LVM's global/use_lvmlockd is not 1, so LVM would not use lvmlockd; set it in lvm.conf"
                .into(),
        ));
    }
    plan.checks.push("lvmlockd runs and LVM uses it".into());
    if v.free < LVMLOCK_BYTES {
        return Err(refuse(
            vg,
            format!(
                "it has {} MiB free and sanlock needs {} MiB for the lvmlock LV; extend it (`vgextend`) first",
                v.free >> 20,
                LVMLOCK_BYTES >> 20
            ),
        ));
    }
    plan.checks
        .push(format!("{} MiB free for the lvmlock LV", v.free >> 20));
    let cmds = [
        lvm.command("vgchange").args(["--lock-type", "sanlock", vg]),
        lvm.command("vgchange").args(["--lock-start", vg]),
    ];
    plan.steps = cmds.iter().map(|c| c.line()).collect();
    if dry_run {
        return Ok(plan);
    }
    lvm.run(&cmds[0], vg, "change the lock type to sanlock of")?;
    lvm.run(&cmds[1], vg, "start the lockspace of")?;
    plan.done = true;
    plan.warning = republish(
        reg.as_ref()
            .map(|r| &**r as &dyn Registry)
            .map_err(String::as_str),
        probe,
        host,
    );
    Ok(plan)
}

/// The human form.
pub fn render(p: &Plan) -> String {
    let mut out = String::new();
    for c in &p.checks {
        out.push_str(&format!("ok: {c}\n"));
    }
    let verb = if p.done { "ran" } else { "would run" };
    for s in &p.steps {
        out.push_str(&format!("{verb}: {s}\n"));
    }
    if p.done {
        out.push_str(&format!(
            "VG {} is shared; on every other host run `vgchange --lock-start {}` before using it\n",
            p.vg, p.vg
        ));
    } else if p.steps.is_empty() {
        out.push_str("nothing to do\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::lvstate::{HostLvm, LvMode, LvState, publish_lvm_state};
    use crate::runner::{Output, ScriptedRunner};

    fn vgs(lock: &str, free: u64) -> Output {
        Output::ok(format!(
            r#"{{"report":[{{"vg":[{{"vg_name":"vg1","vg_uuid":"V","vg_attr":"wz--n-","vg_size":"1073741824","vg_free":"{free}","vg_extent_size":"4194304","vg_lock_type":"{lock}","vg_lock_args":"","pv_count":"1","lv_count":"1"}}]}}]}}"#
        ))
    }
    fn pvs(name: &str) -> Output {
        Output::ok(format!(
            r#"{{"report":[{{"pv":[{{"pv_name":"{name}","vg_name":"vg1","pv_uuid":"P","pv_size":"1","pv_free":"0","dev_size":"1"}},{{"pv_name":"/dev/vda","vg_name":"other","pv_uuid":"Q","pv_size":"1","pv_free":"0","dev_size":"1"}}]}}]}}"#
        ))
    }
    fn lvs(active: u8) -> Output {
        Output::ok(format!(
            r#"{{"report":[{{"lv":[{{"lv_name":"domu1","vg_name":"vg1","lv_uuid":"U1","lv_attr":"-wi-------","lv_size":"1","lv_active_locally":"{active}","lv_active_exclusively":"0","lv_device_open":"0","lv_lock_args":""}}]}}]}}"#
        ))
    }

    /// A root with multipath map mpatha (dm-3) over sdb and sdc, and lvmlockd running.
    fn root(lvmlockd: bool) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let w = |rel: &str, data: &str| {
            let p = d.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        };
        w("sys/block/dm-3/dm/uuid", "mpath-3600\n");
        w("sys/block/dm-3/dm/name", "mpatha\n");
        w("sys/block/dm-3/slaves/sdb", "");
        w("sys/block/dm-3/slaves/sdc", "");
        if lvmlockd {
            w("proc/5/comm", "lvmlockd\n");
            w("proc/5/cmdline", "lvmlockd\0-g\0sanlock\0");
        }
        d
    }

    fn registry(other_active: bool) -> (tempfile::TempDir, Arc<dyn Registry>) {
        let d = tempfile::tempdir().unwrap();
        let reg = crate::open(&format!("local:{}", d.path().display())).unwrap();
        let lvs = if other_active {
            vec![LvState {
                vg: "vg1".into(),
                lv: "domu1".into(),
                uuid: "U1".into(),
                mode: LvMode::Unlocked,
                open: true,
            }]
        } else {
            vec![]
        };
        publish_lvm_state(
            &*reg,
            &HostLvm {
                host: "B".into(),
                host_id: Some(2),
                io_timeout: Some(10),
                taken_unix: 1,
                vgs: vec![],
                lvs,
            },
            0,
        )
        .unwrap();
        (d, reg)
    }

    fn runner(pv: &str, active_here: u8, free: u64) -> ScriptedRunner {
        let r = ScriptedRunner::new();
        r.always(&["vgs"], vgs("", free));
        r.always(&["pvs"], pvs(pv));
        r.always(&["lvs"], lvs(active_here));
        r.always(&["lvmconfig"], Output::ok("use_lvmlockd=1\n"));
        r
    }

    #[test]
    fn dry_run_checks_and_plans_the_two_vgchanges_without_running_them() {
        let d = root(true);
        let (_g, reg) = registry(false);
        let r = runner("/dev/mapper/mpatha", 0, 1 << 30);
        let open = || Ok(reg.clone());
        let plan = share(&Probe::new(&r, d.path()), &open, "A", "vg1", true).unwrap();
        assert_eq!(
            plan.steps,
            vec![
                "vgchange --lock-type sanlock vg1",
                "vgchange --lock-start vg1"
            ]
        );
        assert!(!plan.done);
        assert!(!r.lines().iter().any(|l| l.starts_with("vgchange")));
        // For real: both run, in order.
        r.expect(&["vgchange", "--lock-type"], Output::ok(""));
        r.expect(&["vgchange", "--lock-start"], Output::ok(""));
        r.always(&["sanlock"], Output::fail(1, "not running"));
        let plan = share(&Probe::new(&r, d.path()), &open, "A", "vg1", false).unwrap();
        assert!(plan.done);
        let vgchanges: Vec<_> = r
            .lines()
            .into_iter()
            .filter(|l| l.starts_with("vgchange"))
            .collect();
        assert_eq!(vgchanges, plan.steps);
    }

    #[test]
    fn every_refusal_names_its_reason_and_changes_nothing() {
        let (_g, reg) = registry(false);
        let (_h, busy) = registry(true);
        let open = || Ok(reg.clone());
        let open_busy = || Ok(busy.clone());
        let none = || Err("no registry configured".to_string());
        let d = root(true);
        let no_lockd = root(false);
        let cases: Vec<(ScriptedRunner, &tempfile::TempDir, OpenRegistry<'_>, &str)> = vec![
            (
                runner("/dev/sdb", 0, 1 << 30),
                &d,
                &open,
                "is sdb, one path of multipath map mpatha",
            ),
            (
                runner("/dev/vdb", 0, 1 << 30),
                &d,
                &open,
                "PV /dev/vdb is not a multipath map",
            ),
            (
                runner("/dev/mapper/mpatha", 0, 1 << 30),
                &d,
                &open_busy,
                "host B published vg1/domu1 active there",
            ),
            (
                runner("/dev/mapper/mpatha", 0, 1 << 30),
                &d,
                &none,
                "without the registry",
            ),
            (
                runner("/dev/mapper/mpatha", 1, 1 << 30),
                &d,
                &open,
                "vg1/domu1 active on this host",
            ),
            (
                runner("/dev/mapper/mpatha", 0, 1 << 30),
                &no_lockd,
                &open,
                "lvmlockd is not running",
            ),
            (
                runner("/dev/mapper/mpatha", 0, 100 << 20),
                &d,
                &open,
                "has 100 MiB free",
            ),
        ];
        for (r, root, open, want) in cases {
            let err = share(&Probe::new(&r, root.path()), open, "A", "vg1", false)
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("refusing to share VG vg1: "), "{err}");
            assert!(err.contains(want), "{want}: {err}");
            assert!(
                !r.lines().iter().any(|l| l.starts_with("vgchange")),
                "{want}"
            );
        }
        // use_lvmlockd off.
        let r2 = ScriptedRunner::new();
        r2.always(&["lvmconfig"], Output::ok("use_lvmlockd=0\n"));
        r2.always(&["vgs"], vgs("", 1 << 30));
        r2.always(&["pvs"], pvs("/dev/mapper/mpatha"));
        r2.always(&["lvs"], lvs(0));
        let err = share(&Probe::new(&r2, d.path()), &open, "A", "vg1", false).unwrap_err();
        assert!(err.to_string().contains("use_lvmlockd is not 1"), "{err}");
    }

    #[test]
    fn an_already_shared_vg_is_left_alone() {
        let r = ScriptedRunner::new();
        r.always(&["vgs"], vgs("sanlock", 1 << 30));
        let d = root(true);
        let none = || Err("no registry".to_string());
        let plan = share(&Probe::new(&r, d.path()), &none, "A", "vg1", false).unwrap();
        assert!(plan.steps.is_empty() && !plan.done);
        assert!(render(&plan).contains("already shared"));
    }
}
