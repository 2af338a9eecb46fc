#![allow(clippy::unwrap_used)]
//! A snapshot of a tree scans back identically.

use std::path::{Path, PathBuf};

use lun_scan::topology::Sim;

fn comparable(root: &Path) -> serde_json::Value {
    let mut scan = lun_scan::scan(root);
    for p in &mut scan.paths {
        p.syspath = p.syspath.strip_prefix(root).unwrap().to_path_buf();
    }
    for h in &mut scan.hosts {
        h.syspath = h.syspath.strip_prefix(root).unwrap().to_path_buf();
    }
    for r in &mut scan.rports {
        r.syspath = r.syspath.strip_prefix(root).unwrap().to_path_buf();
    }
    for s in &mut scan.sessions {
        s.syspath = s.syspath.strip_prefix(root).unwrap().to_path_buf();
    }
    for s in &mut scan.sas_devices {
        s.syspath = s.syspath.strip_prefix(root).unwrap().to_path_buf();
    }
    serde_json::to_value(&scan).unwrap()
}

#[test]
fn snapshot_of_generated_trees_rescans_identically() {
    for t in ["fc-dual-hba.toml", "iscsi.toml", "mixed.toml"] {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let topo = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/topologies")
            .join(t);
        let mut sim = Sim::render_file(&topo, src.path()).unwrap();
        if t == "fc-dual-hba.toml" {
            let w = lun_scan::scan_path(src.path(), "sda")
                .unwrap()
                .wwid
                .unwrap();
            sim.add_dm_map("mpatha", &format!("mpath-{w}"), &["sda", "sde"])
                .unwrap();
        }
        let rep = lun_scan::snapshot::snapshot(src.path(), dst.path()).unwrap();
        assert!(rep.errors.is_empty(), "{:?}", rep.errors);
        assert!(rep.files > 0 && rep.links > 0);
        assert_eq!(comparable(src.path()), comparable(dst.path()), "{t}");
        // binary VPD pages are byte-identical
        let a = src.path().join("class/block/sda/device/vpd_pg83");
        let b = dst.path().join("class/block/sda/device/vpd_pg83");
        assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
        if t == "fc-dual-hba.toml" {
            assert!(dst.path().join("class/block/dm-0/dm/uuid").exists());
            assert_eq!(
                lun_scan::scan_path(dst.path(), "sda").unwrap().holders,
                ["dm-0"]
            );
        }
    }
}

#[test]
fn snapshot_of_the_reference_tree_rescans_identically() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/ref-sd2x2-tcmloop2/sys");
    let dst = tempfile::tempdir().unwrap();
    lun_scan::snapshot::snapshot(&src, dst.path()).unwrap();
    assert_eq!(comparable(&src), comparable(dst.path()));
}

#[test]
fn snapshot_of_a_non_sysfs_dir_fails_with_the_path() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let e = lun_scan::snapshot::snapshot(src.path(), dst.path()).unwrap_err();
    assert!(e.to_string().contains("class"), "{e}");
}
