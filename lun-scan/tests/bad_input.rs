#![allow(clippy::unwrap_used)]
//! Bad input: every problem is reported on the path it concerns, naming the file; the scan
//! goes on and nothing panics.

use std::fs;
use std::path::PathBuf;

use lun_scan::topology::Sim;
use lun_scan::{Error, WwidSource};

fn fc() -> (tempfile::TempDir, Sim) {
    let dir = tempfile::tempdir().unwrap();
    let topo =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/topologies/fc-dual-hba.toml");
    let sim = Sim::render_file(&topo, dir.path()).unwrap();
    (dir, sim)
}

fn devdir(root: &std::path::Path, dev: &str) -> PathBuf {
    lun_scan::scan_path(root, dev).unwrap().syspath
}

#[test]
fn device_vanishing_mid_walk_is_an_error_on_that_path_only() {
    let (d, _sim) = fc();
    let dd = devdir(d.path(), "sdc");
    // The kernel removed the device, but the class link was listed already (dangling now).
    fs::remove_dir_all(&dd).unwrap();
    let scan = lun_scan::scan(d.path());
    assert_eq!(scan.paths.len(), 16);
    let p = scan.path("sdc").unwrap();
    assert_eq!(p.errors.len(), 1);
    assert!(matches!(p.errors[0], Error::Vanished { .. }));
    assert!(
        p.errors[0].to_string().contains("0:0:0:2"),
        "{}",
        p.errors[0]
    );
    assert_eq!(
        scan.paths.iter().filter(|p| !p.errors.is_empty()).count(),
        1
    );
}

#[test]
fn garbage_vpd_falls_back_and_is_reported() {
    let (d, _sim) = fc();
    let dd = devdir(d.path(), "sdb");
    fs::write(dd.join("vpd_pg83"), b"\x00\x83\x00\x20\x01\x03\x00\x10\x60").unwrap();
    let p = lun_scan::scan_path(d.path(), "sdb").unwrap();
    assert_eq!(p.wwid_source, WwidSource::VpdPg80);
    assert!(
        p.wwid
            .as_deref()
            .unwrap()
            .starts_with("SNETAPP_LUN_C-Mode_")
    );
    assert_eq!(p.errors.len(), 1);
    let msg = p.errors[0].to_string();
    assert!(
        msg.contains("vpd_pg83") && msg.contains("truncated"),
        "{msg}"
    );
    // Not a 0x83 page at all, and no pg80 either: kernel wwid
    fs::write(dd.join("vpd_pg83"), b"garbage").unwrap();
    fs::remove_file(dd.join("vpd_pg80")).unwrap();
    let p = lun_scan::scan_path(d.path(), "sdb").unwrap();
    assert_eq!(p.wwid_source, WwidSource::SysfsWwid);
    assert!(p.wwid.as_deref().unwrap().starts_with("naa.600a0980"));
    assert!(p.errors[0].to_string().contains("page code"));
}

#[test]
fn unreadable_and_malformed_attributes_name_the_file() {
    let (d, _sim) = fc();
    let dd = devdir(d.path(), "sdd");
    // a read error (EISDIR) and garbage in a numeric attribute
    fs::remove_file(dd.join("queue_depth")).unwrap();
    fs::create_dir(dd.join("queue_depth")).unwrap();
    fs::write(dd.join("block/sdd/size"), "lots\n").unwrap();
    fs::remove_file(dd.join("state")).unwrap();
    let p = lun_scan::scan_path(d.path(), "sdd").unwrap();
    let msgs: Vec<String> = p.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    assert!(msgs.iter().any(|m| m.contains("queue_depth")));
    assert!(
        msgs.iter()
            .any(|m| m.contains("size") && m.contains("\"lots\""))
    );
    assert!(msgs.iter().any(|m| m.contains("/state")));
    // everything else still read (vendor/model come from the inquiry attribute)
    assert_eq!(p.vendor, "NETAPP");
    assert!(p.wwid.is_some());
    assert_eq!(p.size_bytes, None);
}

#[test]
fn garbage_in_host_and_rport_attributes() {
    let (d, _sim) = fc();
    fs::write(
        d.path()
            .join("class/fc_remote_ports/rport-0:0-1/scsi_target_id"),
        "x\n",
    )
    .unwrap();
    let scan = lun_scan::scan(d.path());
    let r = scan
        .rports
        .iter()
        .find(|r| r.name == "rport-0:0-1")
        .unwrap();
    assert_eq!(r.scsi_target_id, None);
    assert!(r.errors[0].to_string().contains("scsi_target_id"));
    assert!(scan.has_errors());
}

#[test]
fn without_inquiry_the_separate_attributes_are_read() {
    let (d, _sim) = fc();
    let dd = devdir(d.path(), "sdd");
    fs::remove_file(dd.join("inquiry")).unwrap();
    let p = lun_scan::scan_path(d.path(), "sdd").unwrap();
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert_eq!(
        (p.vendor.as_str(), p.model.as_str(), p.rev.as_str()),
        ("NETAPP", "LUN C-Mode", "9800")
    );
    assert_eq!((p.scsi_type, p.scsi_level), (Some(0), Some(7)));
    fs::remove_file(dd.join("model")).unwrap();
    let p = lun_scan::scan_path(d.path(), "sdd").unwrap();
    assert!(p.errors[0].to_string().contains("model"));
}

#[test]
fn a_dangling_class_block_link_is_reported_by_name_and_the_rest_is_scanned() {
    let (d, _sim) = fc();
    let link = d.path().join("class/block/sdzz");
    // A link whose target is gone and is not shaped like a SCSI device directory.
    std::os::unix::fs::symlink("../../devices/platform/gone/block/sdzz", &link).unwrap();
    let scan = lun_scan::scan(d.path());
    assert_eq!(scan.paths.len(), 16, "the other paths are scanned");
    let errs: Vec<String> = scan.all_errors().iter().map(|e| e.to_string()).collect();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("class/block/sdzz") && errs[0].contains("dangling link"),
        "{errs:?}"
    );
    // The command line says so too, and fails.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_lun-scan"))
        .args(["--sysfs-root", d.path().to_str().unwrap(), "list"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("class/block/sdzz"), "{stderr}");
    assert!(!o.status.success());
    assert!(!o.stdout.is_empty(), "the paths are still listed");
}

/// Without the details (the daemon's scans), queue_depth, preferred_path and dh_state are not
/// read: they are None, a broken one is no error, and every other field is what the full scan
/// gives, for the whole walk and for a single path.
#[test]
fn a_scan_without_details_skips_only_the_details() {
    let (d, _sim) = fc();
    let lean = lun_scan::ScanOptions::without_details();
    let full = lun_scan::scan(d.path());
    assert!(full.all_errors().is_empty(), "{:?}", full.all_errors());
    assert!(full.paths.iter().all(|p| p.queue_depth.is_some()));
    assert!(full.paths.iter().any(|p| p.dh_state.is_some()));
    assert!(full.paths.iter().any(|p| p.preferred_path.is_some()));
    let strip = |p: &lun_scan::ScsiPath| {
        let mut p = p.clone();
        p.queue_depth = None;
        p.preferred_path = None;
        p.dh_state = None;
        p
    };
    let expected: Vec<lun_scan::ScsiPath> = full.paths.iter().map(strip).collect();
    let dd = devdir(d.path(), "sdd");
    fs::remove_file(dd.join("queue_depth")).unwrap();
    fs::create_dir(dd.join("queue_depth")).unwrap();
    fs::write(dd.join("dh_state"), [0xff, 0xfe]).unwrap();
    let s = lun_scan::scan_with(d.path(), lean);
    assert!(s.all_errors().is_empty(), "{:?}", s.all_errors());
    assert_eq!(s.paths, expected);
    let ctx = lun_scan::PathContext::read_with(d.path(), lean);
    let one = lun_scan::scan_path_in(d.path(), "sdd", &ctx).unwrap();
    let want = expected.iter().find(|p| p.dev == "sdd").unwrap();
    assert_eq!(&one, want);
    // The full scan still reads them, and still reports the broken one.
    let p = lun_scan::scan_path(d.path(), "sdd").unwrap();
    assert!(
        p.errors
            .iter()
            .any(|e| e.to_string().contains("queue_depth")),
        "{:?}",
        p.errors
    );
}
