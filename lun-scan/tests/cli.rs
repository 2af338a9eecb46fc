#![allow(clippy::unwrap_used)]
//! The binary's CLI contract, on the reference tree and generated trees.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lun-scan"))
        .args(args)
        .output()
        .unwrap()
}

fn reference() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/ref-sd2x2-tcmloop2/sys")
        .display()
        .to_string()
}

fn topo(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/topologies")
        .join(name)
        .display()
        .to_string()
}

fn render(name: &str, dir: &Path) {
    let o = bin(&["fixture", &topo(name), dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn list_json_contract_on_the_reference_tree() {
    let o = bin(&["--sysfs-root", &reference(), "list", "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let a = v.as_array().unwrap();
    assert_eq!(a.len(), 6);
    for p in a {
        for k in [
            "hctl",
            "dev",
            "devno",
            "wwid",
            "wwid_source",
            "vendor",
            "model",
            "rev",
            "state",
            "size_bytes",
            "access_state",
            "transport",
            "host",
            "target_wwpn",
        ] {
            assert!(p.get(k).is_some(), "{k}");
        }
    }
    assert_eq!(a[1]["hctl"], "0:0:0:1");
    assert_eq!(a[1]["dev"], "sdb");
    assert_eq!(a[1]["devno"], "8:16");
    assert_eq!(a[1]["wwid"], "1Linux_scsi_debug_2001");
    assert_eq!(a[1]["wwid_source"], "vpd_pg83");
    assert_eq!(a[1]["transport"], "other");
    assert_eq!(a[1]["host"], "host0");
    assert!(a[1]["target_wwpn"].is_null());
    assert_eq!(a[4]["wwid"], "360014055d1b3c7a0e2f4b8a9c612f3e4");
}

#[test]
fn list_table_and_proc() {
    let o = bin(&["--sysfs-root", &reference(), "list"]);
    let s = String::from_utf8(o.stdout).unwrap();
    assert!(s.starts_with("HCTL"));
    assert!(s.contains("1:0:0:1  sdd"));
    let o = bin(&["--sysfs-root", &reference(), "list", "--format", "proc"]);
    let s = String::from_utf8(o.stdout).unwrap();
    assert!(s.starts_with(
        "Attached devices:\nHost: scsi0 Channel: 00 Id: 00 Lun: 00\n  Vendor: Linux    Model: scsi_debug       Rev: 0191\n"
    ));
    assert_eq!(s.matches("Host: scsi").count(), 6);
}

#[test]
fn hosts_json_on_fc_tree() {
    let d = tempfile::tempdir().unwrap();
    render("fc-dual-hba.toml", d.path());
    let o = bin(&[
        "--sysfs-root",
        d.path().to_str().unwrap(),
        "hosts",
        "--json",
    ]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["hosts"][0]["fc"]["port_name"], "0x21000024ff3a1b10");
    assert_eq!(v["rports"].as_array().unwrap().len(), 4);
    assert_eq!(v["rports"][0]["roles"], "FCP Target");
    let o = bin(&["--sysfs-root", d.path().to_str().unwrap(), "hosts"]);
    let s = String::from_utf8(o.stdout).unwrap();
    assert!(
        s.contains("rport-1:0-1") && s.contains("0x500a098187a9c404"),
        "{s}"
    );
}

#[test]
fn errors_give_a_nonzero_exit_and_name_the_file() {
    let d = tempfile::tempdir().unwrap();
    render("iscsi.toml", d.path());
    let root = d.path().to_str().unwrap();
    let vpd = d.path().join("class/block/sdb/device/vpd_pg83");
    std::fs::write(&vpd, b"\x00\x83\x00").unwrap();
    let o = bin(&["--sysfs-root", root, "list", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(err.contains("vpd_pg83"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 6, "other paths still listed");
    assert_eq!(v[1]["errors"][0]["kind"], "vpd");
}

#[test]
fn rescan_json_on_an_unchanged_tree_is_empty() {
    let d = tempfile::tempdir().unwrap();
    render("fc-dual-hba.toml", d.path());
    let root = d.path().to_str().unwrap();
    let o = bin(&[
        "--sysfs-root",
        root,
        "rescan",
        "--json",
        "--settle",
        "0",
        "--timeout",
        "1",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["added"].as_array().unwrap().len(), 0);
    assert_eq!(v["removed"].as_array().unwrap().len(), 0);
    assert_eq!(v["settled"], true);
    // targeted scan of an unknown WWPN fails, naming it
    let o = bin(&[
        "--sysfs-root",
        root,
        "rescan",
        "--target-wwpn",
        "0x5000000000000bad",
        "--settle",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("0x5000000000000bad"));
    // unknown device to remove
    let o = bin(&[
        "--sysfs-root",
        root,
        "rescan",
        "--remove",
        "sdzz",
        "--settle",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("sdzz"));
}

#[test]
fn snapshot_then_list_gives_the_same_paths() {
    let d = tempfile::tempdir().unwrap();
    let s = tempfile::tempdir().unwrap();
    render("mixed.toml", d.path());
    let root = d.path().to_str().unwrap();
    let snap = s.path().join("snap");
    let o = bin(&["--sysfs-root", root, "snapshot", snap.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let a = bin(&["--sysfs-root", root, "list"]);
    let b = bin(&["--sysfs-root", snap.to_str().unwrap(), "list"]);
    assert_eq!(a.stdout, b.stdout);
    assert!(!a.stdout.is_empty());
}

#[test]
fn bad_topology_file_is_reported() {
    let d = tempfile::tempdir().unwrap();
    let t = d.path().join("bad.toml");
    std::fs::write(&t, "hosts = [").unwrap();
    let o = bin(&[
        "fixture",
        t.to_str().unwrap(),
        d.path().join("x").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("bad.toml"));
}
