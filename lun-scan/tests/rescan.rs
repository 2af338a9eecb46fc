#![allow(clippy::unwrap_used)]
//! Rescans against generated trees, with the kernel's reaction to each sysfs write emulated by
//! topology::Sim.

use std::cell::RefCell;
use std::io;
use std::path::{Path, PathBuf};

use lun_scan::Error;
use lun_scan::rescan::{Diff, Rescanner, Settle};
use lun_scan::topology::Sim;

fn topo(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/topologies")
        .join(name)
}

/// Runs `f` with a Rescanner whose writes go to the simulated kernel; records the writes.
fn with_sim<T>(
    sim: &RefCell<Sim>,
    writes: &RefCell<Vec<(String, String)>>,
    f: impl FnOnce(&mut Rescanner) -> T,
) -> T {
    let root = sim.borrow().root.clone();
    let mut w = |p: &Path, v: &str| -> io::Result<()> {
        writes.borrow_mut().push((
            p.strip_prefix(&root).unwrap().display().to_string(),
            v.to_string(),
        ));
        sim.borrow_mut().kernel_write(p, v)
    };
    let mut r = Rescanner::new(&root, &mut w, Settle::none());
    f(&mut r)
}

fn fc() -> (tempfile::TempDir, RefCell<Sim>) {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::render_file(&topo("fc-dual-hba.toml"), dir.path()).unwrap();
    (dir, RefCell::new(sim))
}

#[test]
fn wildcard_scan_reports_exactly_the_new_paths() {
    let (_d, sim) = fc();
    let writes = RefCell::new(Vec::new());
    // nothing new: empty diff
    let d = with_sim(&sim, &writes, |r| r.scan_hosts(&[], None));
    assert!(d.is_empty() && d.errors.is_empty(), "{d:?}");
    sim.borrow_mut().add_luns(0, 2).unwrap();
    let d = with_sim(&sim, &writes, |r| r.scan_hosts(&[], None));
    assert_eq!(d.added.len(), 8, "2 new LUNs x 4 paths");
    assert!(d.removed.is_empty() && d.changed.is_empty());
    let mut luns: Vec<u64> = d.added.iter().map(|p| p.hctl.lun).collect();
    luns.sort();
    luns.dedup();
    assert_eq!(luns, [4, 5]);
    assert!(
        writes
            .borrow()
            .iter()
            .any(|(p, v)| p == "class/scsi_host/host1/scan" && v == "- - -")
    );
}

#[test]
fn host_and_lun_restricted_scan() {
    let (_d, sim) = fc();
    let writes = RefCell::new(Vec::new());
    sim.borrow_mut().add_luns(0, 2).unwrap();
    let d = with_sim(&sim, &writes, |r| r.scan_hosts(&["host0".into()], Some(5)));
    assert_eq!(d.added.len(), 2);
    assert!(d.added.iter().all(|p| p.host == "host0" && p.hctl.lun == 5));
    assert_eq!(
        writes.borrow().as_slice(),
        [(
            "class/scsi_host/host0/scan".to_string(),
            "- - 5".to_string()
        )]
    );
    let d = with_sim(&sim, &writes, |r| r.scan_hosts(&["host9".into()], None));
    assert!(matches!(d.errors[0], Error::NoSuchHost { .. }));
}

#[test]
fn targeted_fc_scan_uses_the_rport_channel_and_target_id() {
    let (_d, sim) = fc();
    let writes = RefCell::new(Vec::new());
    sim.borrow_mut().add_luns(0, 1).unwrap();
    // target 3 is rport-1:0-1 (host1, scsi_target_id 1)
    let d = with_sim(&sim, &writes, |r| {
        r.scan_fc_target(&[], "50:0a:09:81:87:a9:c4:04", None)
    });
    assert_eq!(d.errors, []);
    assert_eq!(
        writes.borrow().as_slice(),
        [(
            "class/scsi_host/host1/scan".to_string(),
            "0 1 -".to_string()
        )]
    );
    assert_eq!(d.added.len(), 1);
    assert_eq!(d.added[0].hctl.to_string(), "1:0:1:4");
    assert_eq!(
        d.added[0].target_wwpn.as_deref(),
        Some("0x500a098187a9c404")
    );
    // With a LUN
    sim.borrow_mut().add_luns(0, 1).unwrap();
    writes.borrow_mut().clear();
    let d = with_sim(&sim, &writes, |r| {
        r.scan_fc_target(&[], "0x500a098187a9c401", Some(5))
    });
    assert_eq!(writes.borrow()[0].1, "0 0 5");
    assert_eq!(d.added.len(), 1);
    // Unknown WWPN
    let d = with_sim(&sim, &writes, |r| r.scan_fc_target(&[], "0x1234", None));
    assert!(matches!(d.errors[0], Error::NoSuchRport { .. }));
    assert!(d.errors[0].to_string().contains("0x1234"));
}

#[test]
fn lip_then_settle() {
    let (_d, sim) = fc();
    let writes = RefCell::new(Vec::new());
    sim.borrow_mut().add_luns(0, 1).unwrap();
    let d = with_sim(&sim, &writes, |r| r.lip(&["host1".into()]));
    assert!(d.settled);
    assert_eq!(d.added.len(), 2);
    assert_eq!(
        writes.borrow().as_slice(),
        [("class/fc_host/host1/issue_lip".to_string(), "1".to_string())]
    );
    // all FC hosts by default
    let d = with_sim(&sim, &writes, |r| r.lip(&[]));
    assert_eq!(d.added.len(), 2);
}

#[test]
fn add_one_device() {
    let (_d, sim) = fc();
    let writes = RefCell::new(Vec::new());
    sim.borrow_mut().add_luns(0, 1).unwrap();
    let d = with_sim(&sim, &writes, |r| r.add_device("0:0:1:4".parse().unwrap()));
    assert_eq!(d.added.len(), 1);
    assert_eq!(d.added[0].hctl.to_string(), "0:0:1:4");
    assert_eq!(writes.borrow()[0].1, "0 1 4");
}

#[test]
fn kernel_rejecting_a_write_is_reported_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let _sim = Sim::render_file(&topo("fc-dual-hba.toml"), dir.path()).unwrap();
    let mut w = |_: &Path, _: &str| -> io::Result<()> { Err(io::Error::from_raw_os_error(22)) };
    let mut r = Rescanner::new(dir.path(), &mut w, Settle::none());
    let d = r.scan_hosts(&[], None);
    assert_eq!(d.errors.len(), 2);
    let msg = d.errors[0].to_string();
    assert!(msg.contains("host0/scan") && msg.contains("- - -"), "{msg}");
}

#[test]
fn remove_refuses_the_last_running_path_of_a_map() {
    let (_d, sim) = fc();
    let writes = RefCell::new(Vec::new());
    // LUN 0 is sda (0:0:0:0), sde (0:0:1:0), sdi (1:0:0:0), sdm (1:0:1:0)
    let wwid = lun_scan::scan_path(&sim.borrow().root, "sda")
        .unwrap()
        .wwid
        .unwrap();
    let members: Vec<String> = lun_scan::scan(&sim.borrow().root)
        .paths
        .into_iter()
        .filter(|p| p.wwid.as_deref() == Some(&wwid))
        .map(|p| p.dev)
        .collect();
    assert_eq!(members.len(), 4);
    let refs: Vec<&str> = members.iter().map(String::as_str).collect();
    sim.borrow_mut()
        .add_dm_map("mpatha", &format!("mpath-{wwid}"), &refs)
        .unwrap();
    assert_eq!(
        lun_scan::scan_path(&sim.borrow().root, "sda")
            .unwrap()
            .holders,
        ["dm-0"]
    );
    for m in &members[1..] {
        sim.borrow_mut().set_state(m, "offline").unwrap();
    }
    let root = sim.borrow().root.clone();
    let mut w = |p: &Path, v: &str| sim.borrow_mut().kernel_write(p, v);
    let mut r = Rescanner::new(&root, &mut w, Settle::none());
    let e = r.remove_path(&members[0], false).unwrap_err();
    assert!(matches!(e, Error::LastActivePath { .. }));
    assert!(e.to_string().contains("mpatha"), "{e}");
    assert!(root.join("class/block").join(&members[0]).exists());
    // forced: removed, and the diff says so
    let d = r.remove_path(&members[0], true).unwrap();
    assert_eq!(d.removed.len(), 1);
    assert_eq!(d.removed[0].dev, members[0]);
    drop(r);
    // a path of a map with another running member can go
    sim.borrow_mut().set_state(&members[1], "running").unwrap();
    let d = with_sim(&sim, &writes, |r| {
        r.remove_path(&members[2], false).unwrap()
    });
    assert_eq!(d.removed.len(), 1);
    // unknown device
    let d = with_sim(&sim, &writes, |r| {
        let e = r.remove_path("sdzz", false).unwrap_err();
        assert!(matches!(e, Error::NoSuchDevice { .. }));
        Diff::default()
    });
    assert!(d.is_empty());
}

#[test]
fn resize_reports_old_and_new_size() {
    let (_d, sim) = fc();
    let writes = RefCell::new(Vec::new());
    let (g, o) = sim.borrow().lun_of("sdb").unwrap();
    sim.borrow_mut().resize_lun(g, o, 30 << 30);
    let d = with_sim(&sim, &writes, |r| r.resize("sdb").unwrap());
    assert_eq!(d.changed.len(), 1);
    let c = &d.changed[0];
    assert_eq!(c.dev, "sdb");
    assert_eq!(c.size_before, Some(20 << 30));
    assert_eq!(c.size_after, Some(30 << 30));
    assert!(writes.borrow()[0].0.ends_with("0:0:0:1/rescan"));
}

#[test]
fn triggered_host_scans_write_every_host_and_report_rejections() {
    let (_d, sim) = fc();
    let writes = RefCell::new(Vec::new());
    sim.borrow_mut().add_luns(0, 2).unwrap();
    let root = sim.borrow().root.clone();
    let (errors, settled) = with_sim(&sim, &writes, |r| r.trigger_host_scans(&[], None));
    assert!(errors.is_empty() && settled, "{errors:?}");
    assert_eq!(
        *writes.borrow(),
        [
            (
                "class/scsi_host/host0/scan".to_string(),
                "- - -".to_string()
            ),
            (
                "class/scsi_host/host1/scan".to_string(),
                "- - -".to_string()
            ),
        ]
    );
    // The kernel (sim) found the new LUNs: the caller's one scan sees them.
    let (paths, _) = lun_scan::sysfs::scan_paths(&root);
    assert_eq!(paths.iter().filter(|p| p.hctl.lun >= 4).count(), 8);
    // A rejected write is named with its file and value.
    let mut refuse =
        |_: &Path, _: &str| -> io::Result<()> { Err(io::Error::from_raw_os_error(22)) };
    let (errors, _) =
        Rescanner::new(&root, &mut refuse, Settle::none()).trigger_host_scans(&[], Some(3));
    assert_eq!(errors.len(), 2);
    let msg = errors[1].to_string();
    assert!(msg.contains("host1/scan") && msg.contains("- - 3"), "{msg}");
}
