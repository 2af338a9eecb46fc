#![allow(clippy::unwrap_used)]
//! Shipped topologies render into trees that scan back to exactly what they describe.

use std::path::{Path, PathBuf};

use lun_scan::topology::{Sim, Topology};
use lun_scan::{Transport, WwidSource};

fn topo(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/topologies")
        .join(name)
}

fn check_matches(sim: &Sim) -> lun_scan::Scan {
    let scan = lun_scan::scan(&sim.root);
    assert!(scan.all_errors().is_empty(), "{:?}", scan.all_errors());
    let present: Vec<_> = sim.present_paths().collect();
    assert_eq!(scan.paths.len(), present.len());
    for sp in present {
        let p = scan
            .path(&sp.dev)
            .unwrap_or_else(|| panic!("{} missing", sp.dev));
        assert_eq!(p.hctl, sp.hctl);
        assert_eq!(
            p.wwid.as_deref(),
            Some(sp.expected_wwid.as_str()),
            "{}",
            sp.dev
        );
        assert_eq!(p.state, sp.state);
        assert_eq!(p.size_bytes, Some(sp.size_bytes));
        assert_eq!(p.access_state.as_deref(), sp.access_state.as_deref());
    }
    scan
}

#[test]
fn fc_dual_hba() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::render_file(&topo("fc-dual-hba.toml"), dir.path()).unwrap();
    let scan = check_matches(&sim);
    assert_eq!(scan.paths.len(), 16);
    assert_eq!(scan.hosts.len(), 2);
    assert_eq!(scan.rports.len(), 4);
    let h0 = &scan.hosts[0];
    assert_eq!(h0.transport, Transport::Fc);
    let fc = h0.fc.as_ref().unwrap();
    assert_eq!(fc.port_name.as_deref(), Some("0x21000024ff3a1b10"));
    assert_eq!(fc.port_state.as_deref(), Some("Online"));
    assert_eq!(fc.speed.as_deref(), Some("16 Gbit"));
    let r = &scan.rports[1];
    assert_eq!(r.name, "rport-0:0-1");
    assert_eq!(r.port_name.as_deref(), Some("0x500a098187a9c402"));
    assert_eq!(r.roles.as_deref(), Some("FCP Target"));
    assert_eq!(r.scsi_target_id, Some(1));
    // First LUN through all four paths: same WWID, WWPNs from the realpath chain, ALUA.
    let first: Vec<_> = scan.paths.iter().filter(|p| p.hctl.lun == 0).collect();
    assert_eq!(first.len(), 4);
    for p in &first {
        assert_eq!(p.wwid.as_deref(), Some("3600a098038303053453f463045727a00"));
        assert_eq!(p.wwid_source, WwidSource::VpdPg83);
        assert_eq!(p.transport, Transport::Fc);
    }
    let p = scan
        .paths
        .iter()
        .find(|p| p.hctl.to_string() == "1:0:1:0")
        .unwrap();
    assert_eq!(p.host_wwpn.as_deref(), Some("0x21000024ff3a1b11"));
    assert_eq!(p.target_wwpn.as_deref(), Some("0x500a098187a9c404"));
    assert_eq!(p.target_node_name.as_deref(), Some("0x500a098087a9c400"));
    assert_eq!(p.rport.as_deref(), Some("rport-1:0-1"));
    assert_eq!(p.access_state.as_deref(), Some("active/non-optimized"));
    assert_eq!(p.target_port_group, Some(2));
    assert_eq!(p.relative_port, Some(4));
    assert_eq!(p.dh_state.as_deref(), Some("alua"));
    // sd numbering like the kernel
    assert_eq!(scan.paths[0].dev, "sda");
    assert_eq!(scan.paths[0].devno.unwrap().to_string(), "8:0");
    assert_eq!(scan.path("sdb").unwrap().devno.unwrap().to_string(), "8:16");
    assert_eq!(
        scan.path("sdp").unwrap().devno.unwrap().to_string(),
        "8:240"
    );
    assert_eq!(scan.path("sda").unwrap().sg.as_deref(), Some("sg0"));
    // kernel-like layout
    assert!(dir.path().join("dev/block/8:16").exists());
    assert!(dir
        .path()
        .join("devices/pci0000:00/0000:00:02.0/host0/rport-0:0-0/target0:0:0/0:0:0:0/block/sda/dev")
        .exists());
    assert!(dir.path().join("bus/scsi/devices/0:0:0:0/vendor").exists());
    assert!(dir.path().join("class/scsi_disk/0:0:0:0").exists());
}

#[test]
fn iscsi() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::render_file(&topo("iscsi.toml"), dir.path()).unwrap();
    let scan = check_matches(&sim);
    assert_eq!(scan.paths.len(), 6);
    assert_eq!(scan.sessions.len(), 2);
    let s = &scan.sessions[1];
    assert_eq!(s.name, "session2");
    assert_eq!(s.host, Some(1));
    assert_eq!(
        s.targetname.as_deref(),
        Some("iqn.2010-10.org.openstack:volumes")
    );
    assert_eq!(s.persistent_address.as_deref(), Some("198.51.100.100"));
    assert_eq!(s.persistent_port.as_deref(), Some("3260"));
    assert_eq!(s.state.as_deref(), Some("LOGGED_IN"));
    let p = &scan.paths[0];
    assert_eq!(p.hctl.to_string(), "0:0:0:1");
    assert_eq!(p.transport, Transport::Iscsi);
    assert_eq!(p.iscsi_session.as_deref(), Some("session1"));
    assert_eq!(
        p.target_node_name.as_deref(),
        Some("iqn.2010-10.org.openstack:volumes")
    );
    assert_eq!(p.target_wwpn, None);
    assert_eq!(scan.hosts[0].transport, Transport::Iscsi);
    assert_eq!(
        scan.hosts[0]
            .iscsi
            .as_ref()
            .unwrap()
            .initiatorname
            .as_deref(),
        Some("iqn.1993-08.org.debian:01:dom0a")
    );
}

#[test]
fn mixed() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::render_file(&topo("mixed.toml"), dir.path()).unwrap();
    let scan = check_matches(&sim);
    let by_vendor = |v: &str, m: &str| {
        scan.paths
            .iter()
            .filter(|p| p.vendor == v && p.model == m)
            .collect::<Vec<_>>()
    };
    let hitachi = by_vendor("HITACHI", "OPEN-V");
    assert_eq!(hitachi.len(), 4);
    assert!(hitachi.iter().all(|p| p.transport == Transport::Fc));
    assert_eq!(hitachi[0].wwid.as_deref(), Some("350060e8007e0a000"));
    assert_eq!(
        hitachi.iter().filter(|p| p.state == "offline").count(),
        1,
        "one path overridden offline"
    );
    let sas = by_vendor("SEAGATE", "ST4000NM0025");
    assert_eq!(sas[0].transport, Transport::Sas);
    assert_eq!(sas[0].wwid.as_deref(), Some("25000c500a1b2c3d4"));
    assert_eq!(sas[0].size_bytes, Some(4 << 40));
    let name = by_vendor("EXAMPLE", "VIRTUAL-DISK");
    assert_eq!(
        name[0].wwid.as_deref(),
        Some("8iqn.2001-05.com.example:storage.lun-group1:lun0")
    );
    let t10 = by_vendor("HITACHI", "DF600F");
    assert_eq!(
        t10[0].wwid.as_deref(),
        Some("1HITACHI_DF600F_D600959200000000")
    );
    let local = by_vendor("IET", "VIRTUAL-DISK");
    assert_eq!(local[0].wwid_source, WwidSource::VpdPg80);
    assert_eq!(
        local[0].wwid.as_deref(),
        Some("SIET_VIRTUAL-DISK_beaf00000000")
    );
    let none = by_vendor("QEMU", "QEMU HARDDISK");
    assert_eq!(none[0].wwid_source, WwidSource::SysfsWwid);
    assert_eq!(none[0].serial, None);
    assert_eq!(scan.sas_devices.len(), 1);
    assert_eq!(
        scan.sas_devices[0].sas_address.as_deref(),
        Some("0x5000c500a1b2c3d4")
    );
    let sas_host = scan
        .hosts
        .iter()
        .find(|h| h.transport == Transport::Sas)
        .unwrap();
    assert_eq!(
        sas_host.sas.as_ref().unwrap().phy_addresses,
        vec!["0x500605b00a0b0c00".to_string()]
    );
    assert_eq!(
        scan.hosts
            .iter()
            .find(|h| h.name == "host4")
            .unwrap()
            .transport,
        Transport::Other
    );
}

fn states(root: &Path) -> Vec<(String, String)> {
    lun_scan::scan(root)
        .paths
        .into_iter()
        .map(|p| (p.dev, p.state.to_string()))
        .collect()
}

#[test]
fn sim_faults() {
    let dir = tempfile::tempdir().unwrap();
    let mut sim = Sim::render_file(&topo("fc-dual-hba.toml"), dir.path()).unwrap();
    sim.set_state("sdc", "offline").unwrap();
    assert!(states(dir.path()).contains(&("sdc".into(), "offline".into())));
    sim.set_access_state("sda", "standby").unwrap();
    assert_eq!(
        lun_scan::scan_path(dir.path(), "sda")
            .unwrap()
            .access_state
            .as_deref(),
        Some("standby")
    );
    // host1 goes down: its 8 paths transport-offline, rports Blocked, fc_host Linkdown.
    sim.host_down("host1").unwrap();
    let scan = lun_scan::scan(dir.path());
    let down: Vec<_> = scan.paths.iter().filter(|p| p.host == "host1").collect();
    assert_eq!(down.len(), 8);
    assert!(down.iter().all(|p| p.state == "transport-offline"));
    assert!(
        scan.rports
            .iter()
            .filter(|r| r.host == 1)
            .all(|r| r.port_state.as_deref() == Some("Blocked"))
    );
    assert_eq!(
        scan.host("host1")
            .unwrap()
            .fc
            .as_ref()
            .unwrap()
            .port_state
            .as_deref(),
        Some("Linkdown")
    );
    // dev_loss_tmo: devices removed
    let removed = sim.host_remove_devices("host1").unwrap();
    assert_eq!(removed.len(), 8);
    assert_eq!(lun_scan::scan(dir.path()).paths.len(), 8);
    assert!(!dir.path().join("class/block").join(&removed[0]).exists());
    // back: 8 new devices with new names, everything running again
    let added = sim.host_up("host1").unwrap();
    assert_eq!(added.len(), 8);
    assert!(added.iter().all(|d| !removed.contains(d)));
    let scan = check_matches(&sim);
    assert_eq!(scan.paths.len(), 16);
    assert!(
        scan.paths
            .iter()
            .filter(|p| p.host == "host1")
            .all(|p| p.is_running())
    );
    // remove one device, add LUNs (visible only after a scan)
    sim.remove_device("sda").unwrap();
    assert_eq!(lun_scan::scan(dir.path()).paths.len(), 15);
    sim.add_luns(0, 2).unwrap();
    assert_eq!(lun_scan::scan(dir.path()).paths.len(), 15);
    let new = sim.scan_all().unwrap();
    assert_eq!(new.len(), 9, "8 new paths + sda's path again");
    check_matches(&sim);
}

#[test]
fn big_topology_counts() {
    let dir = tempfile::tempdir().unwrap();
    let t = Topology::big_fc(2, 2, 20);
    let sim = Sim::render(&t, dir.path()).unwrap();
    let scan = check_matches(&sim);
    assert_eq!(scan.paths.len(), 80);
    // 4 paths per LUN share one WWID
    let w = scan.paths[0].wwid.clone();
    assert_eq!(scan.paths.iter().filter(|p| p.wwid == w).count(), 4);
}

#[test]
fn a_host_of_hundreds_of_paths_goes_down_and_comes_back_whole() {
    // 2 hosts x 4 target ports x 64 LUNs: 256 paths a host, written from several threads
    // (the kernel flips a host's devices at once): every one of them must change, none twice.
    let dir = tempfile::tempdir().unwrap();
    let mut sim = Sim::render(&Topology::big_fc(2, 4, 64), dir.path()).unwrap();
    sim.host_down("host1").unwrap();
    let scan = lun_scan::scan(dir.path());
    let (down, up): (Vec<_>, Vec<_>) = scan.paths.iter().partition(|p| p.host == "host1");
    assert_eq!(down.len(), 256);
    assert!(
        down.iter().all(|p| p.state == "transport-offline"),
        "{:?}",
        down.iter().find(|p| p.state != "transport-offline")
    );
    assert!(up.iter().all(|p| p.state == "running"));
    // The sim's own record agrees with the tree.
    assert!(
        sim.present_paths()
            .filter(|p| p.hctl.host == 1)
            .all(|p| p.state == "transport-offline")
    );
    sim.host_up("host1").unwrap();
    let scan = check_matches(&sim);
    assert_eq!(scan.paths.len(), 512);
    assert!(scan.paths.iter().all(|p| p.state == "running"));
}
