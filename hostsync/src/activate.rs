//! `hostsync lv activate VG/LV [--shared] [--unlocked]` and `hostsync lv deactivate VG/LV`:
//! LVM activation through lvmlockd, with the holder named on a conflict and this host's state
//! published after every change.
//!
//! - On a shared VG, `-aey` / `-asy` take the LV's sanlock lease; another host holding it makes
//!   LVM fail at once ("LV locked by other host"). hostsync then reads the lease's leader record
//!   from the VG's `lvmlock` LV (`sanlock direct read_leader`, at the offset in `lv_lock_args`)
//!   and maps the owner's host_id to a host name through the hosts' published records. When the
//!   owner cannot be told (a shared lease has no owner in its leader), the hosts that published
//!   the LV active are named; failing that, LVM's own words stand alone.
//! - On a VG that is not shared, nothing stops a second host: activation is refused unless
//!   `--unlocked` says the admin knows (then it is plain `-aey`, a local exclusivity only).

use std::sync::Arc;

use crate::lvm::{Activation, Lv, Lvm};
use crate::lvstate::{HostLvm, LvMode, cluster_lvm_state};
use crate::probe::{Probe, dm_name, lease_offset};
use crate::publish::republish;
use crate::registry::Registry;
use crate::{Error, Result};

/// Opens the registry on demand (the caller's configuration); `Err` says why there is none.
pub type OpenRegistry<'a> = &'a (dyn Fn() -> std::result::Result<Arc<dyn Registry>, String> + Sync);

/// What a successful (de)activation did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    /// `VG/LV`.
    pub lv: String,
    /// The mode asked for.
    pub mode: Activation,
    /// Whether the VG is shared (the activation holds a lease).
    pub locked: bool,
    /// Set when this host's state could not be published (the change stands).
    pub warning: Option<String>,
}

/// Activates (or, with [`Activation::Off`], deactivates) `vg/lv` on this host `host`.
///
/// When this host has joined the VG's lockspace (its `lvmlock` LV is active here), the VG is
/// shared: `lvchange` runs at once while the LV's row and the registry are read beside it, so a
/// refusal names the holder without waiting for them in turn.
pub fn activate(
    probe: &Probe<'_>,
    open: OpenRegistry<'_>,
    host: &str,
    vg: &str,
    lv: &str,
    mode: Activation,
    unlocked: bool,
) -> Result<Outcome> {
    let lvm = Lvm::new(probe.runner);
    let full = format!("{vg}/{lv}");
    // lvmlockd activates the VG's `lvmlock` LV when it starts the VG's lockspace here: its dm
    // device is a free (sysfs) sign of a shared VG ready for locking.
    let started = mode != Activation::Off && probe.dm_exists(&dm_name(vg, "lvmlock"));
    let (result, row, reg, locked) = if started {
        std::thread::scope(|sc| {
            let row = sc.spawn(|| lvm.lv(vg, lv));
            let reg = sc.spawn(open);
            let result = lvm.activate(vg, lv, mode);
            let row = row.join().unwrap_or_else(|_| {
                Err(Error::Lvm {
                    target: full.clone(),
                    action: "read the report of".into(),
                    message: "the reading thread panicked".into(),
                })
            });
            let reg = reg
                .join()
                .unwrap_or_else(|_| Err("the registry thread panicked".into()));
            (result, row, reg, true)
        })
    } else {
        let row = lvm.lv(vg, lv)?;
        // A sanlock VG gives every LV lock arguments; only an LV without them needs the VG asked.
        let locked = !row.lock_args.is_empty()
            || lvm
                .vgs(&[vg])?
                .iter()
                .any(|v| v.name == vg && v.is_shared());
        if !locked && mode != Activation::Off && !unlocked {
            return Err(Error::Refused {
                target: full,
                action: "activate".into(),
                reason: format!(
                    "VG {vg} is not shared (it has no lvmlockd lock type), so no lease would stop another host from activating {vg}/{lv} at the same time and both would write it; share the VG with `hostsync vg share {vg}`, or pass --unlocked if no other host can see it"
                ),
            });
        }
        (lvm.activate(vg, lv, mode), Ok(row), open(), locked)
    };
    if let Err(e) = result {
        if !locked || mode == Activation::Off {
            return Err(e);
        }
        let Error::Lvm {
            target,
            action,
            message,
        } = e
        else {
            return Err(e);
        };
        let records = reg.ok().and_then(|r| cluster_lvm_state(&*r).ok());
        let message = match row
            .ok()
            .and_then(|row| holder(probe, &row, records.as_deref(), host))
        {
            Some(h) => format!("it is held by {h}; LVM said: {message}"),
            None => message,
        };
        return Err(Error::Lvm {
            target,
            action,
            message,
        });
    }
    let warning = republish(
        reg.as_ref()
            .map(|r| &**r as &dyn Registry)
            .map_err(String::as_str),
        probe,
        host,
    );
    Ok(Outcome {
        lv: full,
        mode,
        locked,
        warning,
    })
}

/// Who holds `lv`'s lease, in words: "host A (sanlock host_id 1)", "sanlock host_id 3 (no host
/// published that host_id)", or the other hosts that published it active; `None` when unknown.
pub fn holder(probe: &Probe<'_>, lv: &Lv, records: Option<&[HostLvm]>, me: &str) -> Option<String> {
    if lease_offset(&lv.lock_args).is_none() {
        tracing::warn!(lv = %lv.full_name(), lock_args = %lv.lock_args, "no lease offset in the LV's lock arguments");
    }
    let owner = lease_offset(&lv.lock_args)
        .and_then(|off| match probe.read_leader(&lv.vg, &lv.uuid, off) {
            Ok(l) => {
                tracing::debug!(lv = %lv.full_name(), leader = ?l, "lease leader record");
                l.holder()
            }
            Err(e) => {
                tracing::warn!(lv = %lv.full_name(), error = %e, "cannot read the lease's leader record");
                None
            }
        });
    if let Some(id) = owner {
        let names: Vec<&str> = records
            .unwrap_or_default()
            .iter()
            .filter(|r| r.host_id == Some(id))
            .map(|r| r.host.as_str())
            .collect();
        return Some(if names.is_empty() {
            format!("sanlock host_id {id} (no host published that host_id)")
        } else {
            format!("host {} (sanlock host_id {id})", names.join(", host "))
        });
    }
    let active: Vec<String> = records
        .unwrap_or_default()
        .iter()
        .filter(|r| r.host != me)
        .filter_map(|r| {
            r.lvs.iter().find(|s| s.uuid == lv.uuid).map(|s| {
                let mode = match s.mode {
                    LvMode::Exclusive => "exclusively",
                    LvMode::Shared => "shared",
                    LvMode::Unlocked => "without a lock",
                };
                format!("host {} (published it active {mode})", r.host)
            })
        })
        .collect();
    (!active.is_empty()).then(|| active.join(" and "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lvstate::{LvState, publish_lvm_state};
    use crate::runner::{Output, ScriptedRunner};

    fn lvs_row(lock_args: &str) -> Output {
        Output::ok(format!(
            r#"{{"report":[{{"lv":[{{"lv_name":"domu1","vg_name":"vgsan","lv_uuid":"U1","lv_attr":"-wi-------","lv_size":"1","lv_active_locally":"0","lv_active_exclusively":"0","lv_device_open":"0","lv_lock_args":"{lock_args}"}}]}}]}}"#
        ))
    }

    fn reg_with_a() -> (tempfile::TempDir, Arc<dyn Registry>) {
        let d = tempfile::tempdir().unwrap();
        let reg = crate::open(&format!("local:{}", d.path().display())).unwrap();
        publish_lvm_state(
            &*reg,
            &HostLvm {
                host: "A".into(),
                host_id: Some(1),
                io_timeout: Some(2),
                taken_unix: 1,
                vgs: vec![],
                lvs: vec![LvState {
                    vg: "vgsan".into(),
                    lv: "domu1".into(),
                    uuid: "U1".into(),
                    mode: LvMode::Exclusive,
                    open: false,
                }],
            },
            0,
        )
        .unwrap();
        (d, reg)
    }

    /// B's activation of vgsan/domu1 through `r`, which must fail: its message. vgsan's lockspace
    /// is started on B (its lvmlock LV's dm device exists).
    fn refusal(r: &ScriptedRunner, open: OpenRegistry<'_>, mode: Activation) -> String {
        let e = tempfile::tempdir().unwrap();
        let dm = e.path().join("sys/block/dm-4/dm");
        std::fs::create_dir_all(&dm).unwrap();
        std::fs::write(dm.join("name"), "vgsan-lvmlock\n").unwrap();
        activate(
            &Probe::new(r, e.path()),
            open,
            "B",
            "vgsan",
            "domu1",
            mode,
            false,
        )
        .unwrap_err()
        .to_string()
    }

    const LOCKED: &str =
        "  LV locked by other host: vgsan/domu1\n  Failed to lock logical volume vgsan/domu1.\n";

    #[test]
    fn a_conflict_names_the_host_owning_the_lease() {
        let (_d, reg) = reg_with_a();
        let r = ScriptedRunner::new();
        r.expect(&["lvs"], lvs_row("1.0.0:70254592"));
        r.expect(
            &["lvchange", "-aey", "vgsan/domu1"],
            Output::fail(5, LOCKED),
        );
        r.expect(
            &[
                "sanlock",
                "direct",
                "read_leader",
                "-r",
                "lvm_vgsan:U1:/dev/mapper/vgsan-lvmlock:70254592",
            ],
            Output::ok("owner_id 1\nowner_generation 2\ntimestamp 77\n"),
        );
        let err = refusal(&r, &|| Ok(reg.clone()), Activation::Exclusive);
        assert_eq!(
            err,
            "LVM could not activate exclusively vgsan/domu1: it is held by host A (sanlock host_id 1); LVM said: LV locked by other host: vgsan/domu1; Failed to lock logical volume vgsan/domu1."
        );
    }

    #[test]
    fn an_unknown_owner_is_named_by_host_id_and_no_registry_leaves_lvms_words() {
        let (_d, reg) = reg_with_a();
        let r = ScriptedRunner::new();
        r.always(&["lvs"], lvs_row("1.0.0:70254592"));
        r.always(&["lvchange"], Output::fail(5, LOCKED));
        r.always(
            &["sanlock", "direct"],
            Output::ok("owner_id 7\ntimestamp 77\n"),
        );
        let open = || Ok(reg.clone());
        let err = refusal(&r, &open, Activation::Shared);
        assert!(
            err.contains("held by sanlock host_id 7 (no host published that host_id)"),
            "{err}"
        );
        // A lease held shared has no owner: the hosts that published it active are named.
        let r2 = ScriptedRunner::new();
        r2.always(&["lvs"], lvs_row("1.0.0:70254592"));
        r2.always(&["lvchange"], Output::fail(5, LOCKED));
        r2.always(
            &["sanlock", "direct"],
            Output::ok("owner_id 1\ntimestamp 0\n"),
        );
        let err = refusal(&r2, &open, Activation::Exclusive);
        assert!(
            err.contains("held by host A (published it active exclusively); LVM said"),
            "{err}"
        );
        // No registry: LVM's words only.
        let none = || Err("no registry configured".to_string());
        let err = refusal(&r, &none, Activation::Exclusive);
        assert_eq!(
            err,
            "LVM could not activate exclusively vgsan/domu1: it is held by sanlock host_id 7 (no host published that host_id); LVM said: LV locked by other host: vgsan/domu1; Failed to lock logical volume vgsan/domu1."
        );
    }

    #[test]
    fn an_lv_of_a_vg_that_is_not_shared_is_refused_unless_unlocked() {
        let r = ScriptedRunner::new();
        r.always(&["lvs"], lvs_row(""));
        r.always(
            &["vgs"],
            Output::ok(r#"{"report":[{"vg":[{"vg_name":"vgsan","vg_uuid":"V","vg_attr":"wz--n-","vg_size":"1","vg_free":"0","vg_extent_size":"1","vg_lock_type":"","vg_lock_args":"","pv_count":"1","lv_count":"1"}]}]}"#),
        );
        let e = tempfile::tempdir().unwrap();
        let p = Probe::new(&r, e.path());
        let none = || Err("no registry configured".to_string());
        let err = activate(
            &p,
            &none,
            "A",
            "vgsan",
            "domu1",
            Activation::Exclusive,
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("refusing to activate vgsan/domu1: VG vgsan is not shared"),
            "{err}"
        );
        assert!(
            err.contains("hostsync vg share vgsan") && err.contains("--unlocked"),
            "{err}"
        );
        assert!(
            !r.lines().iter().any(|l| l.starts_with("lvchange")),
            "nothing was activated"
        );
        // --unlocked activates; the failed publish is a warning, not an error.
        r.expect(&["lvchange", "-aey", "vgsan/domu1"], Output::ok(""));
        let out = activate(
            &p,
            &none,
            "A",
            "vgsan",
            "domu1",
            Activation::Exclusive,
            true,
        )
        .unwrap();
        assert!(!out.locked);
        assert!(
            out.warning
                .unwrap()
                .contains("not published (no registry configured)")
        );
        // Deactivation needs no --unlocked.
        r.expect(&["lvchange", "-an", "vgsan/domu1"], Output::ok(""));
        activate(&p, &none, "A", "vgsan", "domu1", Activation::Off, false).unwrap();
    }

    #[test]
    fn with_the_lockspace_joined_lvchange_runs_at_once_and_the_holder_is_still_named() {
        let (_d, reg) = reg_with_a();
        let r = ScriptedRunner::new();
        r.expect(&["lvs"], lvs_row("1.0.0:70254592"));
        r.expect(
            &["lvchange", "-aey", "vgsan/domu1"],
            Output::fail(5, LOCKED),
        );
        r.expect(
            &["sanlock", "direct", "read_leader"],
            Output::ok("owner_id 1\ntimestamp 77\n"),
        );
        let err = refusal(&r, &|| Ok(reg.clone()), Activation::Exclusive);
        assert!(
            err.contains("it is held by host A (sanlock host_id 1)"),
            "{err}"
        );
        assert!(
            !r.lines().iter().any(|l| l.starts_with("vgs")),
            "no vgs on the fast path"
        );
    }

    #[test]
    fn success_publishes_this_hosts_state() {
        let (_d, reg) = reg_with_a();
        let r = ScriptedRunner::new();
        r.expect(&["lvs"], lvs_row("1.0.0:70254592"));
        r.expect(&["lvchange", "-an", "vgsan/domu1"], Output::ok(""));
        crate::publish::tests_support::lvm_fixture(&r);
        let e = tempfile::tempdir().unwrap();
        let open = || Ok(reg.clone());
        let out = activate(
            &Probe::new(&r, e.path()),
            &open,
            "B",
            "vgsan",
            "domu1",
            Activation::Off,
            false,
        )
        .unwrap();
        assert!(out.warning.is_none() && out.locked);
        let hosts: Vec<_> = cluster_lvm_state(&*reg)
            .unwrap()
            .into_iter()
            .map(|h| h.host)
            .collect();
        assert_eq!(hosts, vec!["A", "B"]);
    }
}
