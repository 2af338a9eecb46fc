//! `hostsync publish`: this host's LVM as [`HostLvm`] under `hosts/<host>/lvm`, taken from
//! `vgs`, `pvs`, `lvs` (JSON reports) and sanlock (host_id, io_timeout, lockspaces started).
//! `lv activate`, `lv deactivate` and `vg share` publish again after every change they make.
//!
//! # Liveness and staleness
//! A record carries the time it was taken (`taken_unix`). A reader judges a host:
//! - **alive** when its `hosts/<host>/state` key exists (the multipathd-rs daemon keeps it on a
//!   liveness lease, so it vanishes with the host) **or** its LVM record is younger than the
//!   staleness bound ([`DEFAULT_STALE_AFTER`], `--stale-after`): a host that published recently
//!   was alive then;
//! - **dead** otherwise: nothing renews anything of it. Its LVs' leases are what `check lvs`
//!   reports as held by a dead host;
//! - a record older than the bound of a host that is alive is **stale**: shown, not trusted
//!   for "active on two hosts" (it may list LVs deactivated since), so run `hostsync publish`
//!   from a timer more often than the bound (e.g. every 60 s against 300 s).
//!
//! These are registry facts only: sanlock's own delta leases decide who may take a lease; the
//! registry view is for people and checks, never a lock.

use std::collections::BTreeMap;

use crate::lvm::Lvm;
use crate::lvstate::{HostLvm, LvMode, LvState, VgState, publish_lvm_state};
use crate::probe::{Probe, SanlockStatus};
use crate::registry::Registry;
use crate::{Error, Result};

/// How old a host's record may be (seconds) and still prove it alive.
pub const DEFAULT_STALE_AFTER: u64 = 300;

/// Seconds since the epoch.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// This host's LVM as it is now. `lvs` of every VG, hidden LVs (`[lvmlock]`) left out; an LV's
/// mode is `exclusive`/`shared` on a shared VG (lvmlockd holds its lease so), `unlocked` on a
/// VG that is not shared.
pub fn gather(probe: &Probe<'_>, host: &str, now: u64) -> Result<HostLvm> {
    let lvm = Lvm::new(probe.runner);
    let status = probe.sanlock_status();
    let vgs = lvm.vgs(&[])?;
    let pvs = lvm.pvs(&[])?;
    let lvs = lvm.lvs(&[])?;
    let mut pvs_of: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for p in &pvs {
        if !p.vg.is_empty() {
            pvs_of
                .entry(p.vg.as_str())
                .or_default()
                .push(p.name.clone());
        }
    }
    let shared: BTreeMap<&str, bool> = vgs
        .iter()
        .map(|v| (v.name.as_str(), v.is_shared()))
        .collect();
    Ok(HostLvm {
        host: host.to_string(),
        host_id: probe.host_id(status.as_ref()).map(|(id, _)| id),
        io_timeout: probe.io_timeout(status.as_ref()).map(|(t, _)| t),
        taken_unix: now,
        vgs: vgs
            .iter()
            .map(|v| VgState {
                name: v.name.clone(),
                uuid: v.uuid.clone(),
                lock_type: v.lock_type.clone(),
                lockspace_started: lockspace_started(status.as_ref(), &v.name),
                pvs: pvs_of.get(v.name.as_str()).cloned().unwrap_or_default(),
            })
            .collect(),
        lvs: lvs
            .iter()
            .filter(|l| l.active && !l.is_hidden())
            .map(|l| LvState {
                vg: l.vg.clone(),
                lv: l.name.clone(),
                uuid: l.uuid.clone(),
                mode: match (
                    shared.get(l.vg.as_str()).copied().unwrap_or(false),
                    l.exclusive,
                ) {
                    (false, _) => LvMode::Unlocked,
                    (true, true) => LvMode::Exclusive,
                    (true, false) => LvMode::Shared,
                },
                open: l.open,
            })
            .collect(),
    })
}

fn lockspace_started(status: Option<&SanlockStatus>, vg: &str) -> bool {
    status.is_some_and(|s| s.vg_lockspace(vg).is_some())
}

/// Gathers and publishes this host's record (kept until replaced: liveness is judged as the
/// module says). Returns what was published.
pub fn publish(reg: &dyn Registry, probe: &Probe<'_>, host: &str) -> Result<HostLvm> {
    let st = gather(probe, host, now_unix())?;
    publish_lvm_state(reg, &st, 0)?;
    Ok(st)
}

/// After a change this host made: publish, or say why the registry could not be told (the
/// change itself stands; the caller prints the returned warning).
pub fn republish(
    reg: std::result::Result<&dyn Registry, &str>,
    probe: &Probe<'_>,
    host: &str,
) -> Option<String> {
    let why = match reg {
        Ok(r) => match publish(r, probe, host) {
            Ok(_) => return None,
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    };
    Some(format!(
        "the change is made, but this host's LVM state was not published ({why}); run `hostsync publish` when the registry is back"
    ))
}

/// How a reader judges one host (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Liveness {
    /// Its liveness lease is held, or it published within the bound.
    Alive,
    /// Alive (its liveness lease is held) but its record is older than the bound.
    Stale,
    /// Neither.
    Dead,
}

/// Judges `rec`'s host: `has_state_key` says whether `hosts/<host>/state` exists.
pub fn liveness(rec: &HostLvm, has_state_key: bool, now: u64, stale_after: u64) -> Liveness {
    let fresh = now.saturating_sub(rec.taken_unix) <= stale_after;
    match (fresh, has_state_key) {
        (true, _) => Liveness::Alive,
        (false, true) => Liveness::Stale,
        (false, false) => Liveness::Dead,
    }
}

/// The hosts whose `hosts/<host>/state` key exists (their liveness lease is held).
pub fn hosts_with_state(reg: &dyn Registry) -> Result<std::collections::BTreeSet<String>> {
    Ok(crate::cluster_state(reg)?
        .into_iter()
        .map(|h| h.host)
        .collect())
}

/// `VG/LV` split, or an error naming what was given.
pub fn split_vg_lv(s: &str) -> Result<(&str, &str)> {
    match s.split_once('/') {
        Some((vg, lv)) if !vg.is_empty() && !lv.is_empty() && !lv.contains('/') => Ok((vg, lv)),
        _ => Err(Error::Lvm {
            target: s.to_string(),
            action: "name".into(),
            message: "an LV is named VG/LV".into(),
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use crate::runner::{Output, ScriptedRunner};

    /// Two VGs (vgsan shared, started, host_id 2, io_timeout 2; vglocal not shared) and their LVs.
    pub(crate) fn lvm_fixture(r: &ScriptedRunner) {
        r.always(
            &["sanlock", "client", "status"],
            Output::ok("daemon x\ns lvm_vgsan:2:/dev/mapper/vgsan-lvmlock:0\n    list=spaces io_timeout=2\n"),
        );
        r.always(
            &["vgs"],
            Output::ok(r#"{"report":[{"vg":[{"vg_name":"vgsan","vg_uuid":"V1","vg_attr":"wz--ns","vg_size":"1","vg_free":"0","vg_extent_size":"1","vg_lock_type":"sanlock","vg_lock_args":"","pv_count":"1","lv_count":"2"},{"vg_name":"vglocal","vg_uuid":"V2","vg_attr":"wz--n-","vg_size":"1","vg_free":"0","vg_extent_size":"1","vg_lock_type":"","vg_lock_args":"","pv_count":"1","lv_count":"1"}]}]}"#),
        );
        r.always(
            &["pvs"],
            Output::ok(r#"{"report":[{"pv":[{"pv_name":"/dev/mapper/mpatha","vg_name":"vgsan","pv_uuid":"P1","pv_size":"1","pv_free":"0","dev_size":"1"},{"pv_name":"/dev/mapper/mpathb","vg_name":"vglocal","pv_uuid":"P2","pv_size":"1","pv_free":"0","dev_size":"1"}]}]}"#),
        );
        let lv = |name: &str, vg: &str, uuid: &str, active: u8, ex: u8| {
            format!(
                r#"{{"lv_name":"{name}","vg_name":"{vg}","lv_uuid":"{uuid}","lv_attr":"-wi-a-----","lv_size":"1","lv_active_locally":"{active}","lv_active_exclusively":"{ex}","lv_device_open":"0","lv_lock_args":"1.0.0:70254592"}}"#
            )
        };
        r.always(
            &["lvs"],
            Output::ok(format!(
                r#"{{"report":[{{"lv":[{},{},{},{},{}]}}]}}"#,
                lv("[lvmlock]", "vgsan", "L0", 1, 1),
                lv("domu1", "vgsan", "U1", 1, 1),
                lv("domu2", "vgsan", "U2", 1, 0),
                lv("idle", "vgsan", "U3", 0, 0),
                lv("old", "vglocal", "U4", 1, 1)
            )),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::lvm_fixture;
    use super::*;
    use crate::runner::ScriptedRunner;

    #[test]
    fn gather_reads_modes_host_id_and_lockspaces() {
        let r = ScriptedRunner::new();
        lvm_fixture(&r);
        let e = tempfile::tempdir().unwrap();
        let st = gather(&Probe::new(&r, e.path()), "b", 42).unwrap();
        assert_eq!(st.host_id, Some(2));
        assert_eq!(st.io_timeout, Some(2));
        assert_eq!(st.taken_unix, 42);
        let modes: Vec<_> = st.lvs.iter().map(|l| (l.lv.as_str(), l.mode)).collect();
        assert_eq!(
            modes,
            vec![
                ("domu1", LvMode::Exclusive),
                ("domu2", LvMode::Shared),
                ("old", LvMode::Unlocked)
            ]
        );
        assert!(st.vgs[0].lockspace_started && !st.vgs[1].lockspace_started);
        assert_eq!(st.vgs[1].pvs, vec!["/dev/mapper/mpathb"]);
    }

    #[test]
    fn publish_lands_under_the_hosts_key() {
        let r = ScriptedRunner::new();
        lvm_fixture(&r);
        let d = tempfile::tempdir().unwrap();
        let reg = crate::open(&format!("local:{}", d.path().display())).unwrap();
        let e = tempfile::tempdir().unwrap();
        publish(&*reg, &Probe::new(&r, e.path()), "b").unwrap();
        let all = crate::lvstate::cluster_lvm_state(&*reg).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].lvs.len(), 3);
        assert!(
            republish(
                Err("no registry configured"),
                &Probe::new(&r, e.path()),
                "b"
            )
            .unwrap()
            .contains("no registry configured")
        );
    }

    #[test]
    fn liveness_from_record_age_and_the_state_key() {
        let rec = HostLvm {
            host: "a".into(),
            host_id: Some(1),
            io_timeout: None,
            taken_unix: 1000,
            vgs: vec![],
            lvs: vec![],
        };
        assert_eq!(liveness(&rec, false, 1300, 300), Liveness::Alive);
        assert_eq!(liveness(&rec, false, 1301, 300), Liveness::Dead);
        assert_eq!(liveness(&rec, true, 1301, 300), Liveness::Stale);
        assert_eq!(liveness(&rec, true, 1000, 300), Liveness::Alive);
    }

    #[test]
    fn lv_names_are_vg_slash_lv() {
        assert_eq!(split_vg_lv("vg/lv").unwrap(), ("vg", "lv"));
        for bad in ["vg", "/lv", "vg/", "a/b/c"] {
            assert!(
                split_vg_lv(bad).unwrap_err().to_string().contains("VG/LV"),
                "{bad}"
            );
        }
    }
}
