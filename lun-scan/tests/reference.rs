#![allow(clippy::unwrap_used)]
//! The reference tree written by a real kernel (scsi_debug x2 hosts + LIO tcm_loop x2 hosts)
//! must give exactly udev's ID_SERIAL (wwids.txt) and the ALUA state per path.

use std::path::PathBuf;

use lun_scan::{Transport, WwidSource};

fn reference() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/ref-sd2x2-tcmloop2")
}

#[test]
fn every_path_has_udev_id_serial_and_access_state() {
    let root = reference().join("sys");
    let scan = lun_scan::scan(&root);
    assert!(scan.all_errors().is_empty(), "{:?}", scan.all_errors());
    let wwids = std::fs::read_to_string(reference().join("wwids.txt")).unwrap();
    let mut n = 0;
    for line in wwids.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (dev, id, access) = (f[0], f[2].trim_start_matches("ID_SERIAL="), f[3]);
        let p = scan.path(dev).unwrap_or_else(|| panic!("{dev} missing"));
        assert_eq!(p.wwid.as_deref(), Some(id), "{dev}");
        assert_eq!(p.wwid_source, WwidSource::VpdPg83);
        assert_eq!(p.access_state.as_deref(), Some(access), "{dev}");
        n += 1;
    }
    assert_eq!(n, 6);
    assert_eq!(scan.paths.len(), 6);
}

#[test]
fn reference_path_details() {
    let root = reference().join("sys");
    let scan = lun_scan::scan(&root);
    let sdb = scan.path("sdb").unwrap();
    assert_eq!(sdb.hctl.to_string(), "0:0:0:1");
    assert_eq!(sdb.devno.unwrap().to_string(), "8:16");
    assert_eq!(sdb.sg.as_deref(), Some("sg1"));
    assert_eq!(sdb.vendor, "Linux");
    assert_eq!(sdb.model, "scsi_debug");
    assert_eq!(sdb.rev, "0191");
    assert_eq!(sdb.state, "running");
    assert_eq!(sdb.size_bytes, Some(8 * 1024 * 1024));
    assert_eq!(sdb.queue_depth, Some(192));
    assert_eq!(sdb.dh_state.as_deref(), Some("alua"));
    assert_eq!(sdb.preferred_path, Some(false));
    assert_eq!(sdb.transport, Transport::Other);
    assert_eq!(sdb.host, "host0");
    assert_eq!(sdb.target_wwpn, None);
    assert_eq!(sdb.serial.as_deref(), Some("2001"));
    assert_eq!(sdb.relative_port, Some(1));
    let sde = scan.path("sde").unwrap();
    assert_eq!(sde.hctl.to_string(), "2:0:1:0");
    assert_eq!(sde.size_bytes, Some(64 * 1024 * 1024));
    assert_eq!(sde.vendor, "LIO-ORG");
    assert_eq!(sde.target_port_group, Some(0));
    assert_eq!(
        sde.serial.as_deref(),
        Some("5d1b3c7a-0e2f-4b8a-9c61-2f3e4d5a6b7c")
    );
    // order by H:C:T:L
    let order: Vec<&str> = scan.paths.iter().map(|p| p.dev.as_str()).collect();
    assert_eq!(order, ["sda", "sdb", "sdc", "sdd", "sde", "sdf"]);
    // hosts
    let names: Vec<&str> = scan.hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["host0", "host1", "host2", "host3"]);
    assert_eq!(scan.hosts[0].proc_name.as_deref(), Some("scsi_debug"));
    assert_eq!(scan.hosts[2].proc_name.as_deref(), Some("tcm_loopback"));
    assert!(
        scan.hosts[0]
            .syspath
            .ends_with("devices/pseudo_0/adapter0/host0")
    );
}

#[test]
fn scan_path_reads_one_device() {
    let root = reference().join("sys");
    let p = lun_scan::scan_path(&root, "sdd").unwrap();
    assert_eq!(p.wwid.as_deref(), Some("1Linux_scsi_debug_2001"));
    assert_eq!(p.access_state.as_deref(), Some("active/non-optimized"));
    assert!(matches!(
        lun_scan::scan_path(&root, "sdq"),
        Err(lun_scan::Error::NoSuchDevice { .. })
    ));
    assert!(lun_scan::scan_path(&root, "../x").is_err());
}

#[test]
fn missing_root_is_an_error_not_a_panic() {
    let scan = lun_scan::scan(&reference().join("does-not-exist"));
    assert!(scan.paths.is_empty());
    assert_eq!(scan.errors.len(), 1);
    assert!(scan.errors[0].to_string().contains("does-not-exist"));
}
