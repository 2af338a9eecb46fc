use std::path::{Path, PathBuf};

use super::*;
use crate::runner::{Output, ScriptedRunner};

fn xl(spec: &str) -> DiskSpec {
    xl::parse_disk(spec).unwrap_or_else(|e| panic!("{spec}: {e}"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/domu")
        .join(name)
}

/// (target, vdev, access, devtype) of a spec.
fn key(d: &DiskSpec) -> (Option<&str>, Option<&str>, Access, Option<&str>) {
    (
        d.target.as_deref(),
        d.vdev.as_deref(),
        d.access,
        d.devtype.as_deref(),
    )
}

#[test]
fn the_manuals_equivalent_disk_specs_read_alike() {
    // xl-disk-configuration(5): "these strings are equivalent".
    let want = (
        Some("/dev/vg/guest-volume"),
        Some("hda"),
        Access::ReadWrite,
        None,
    );
    for s in [
        "/dev/vg/guest-volume,,hda",
        "/dev/vg/guest-volume,raw,hda,rw",
        "format=raw, vdev=hda, access=rw, target=/dev/vg/guest-volume",
        "raw:/dev/vg/guest-volume,hda,w",
    ] {
        assert_eq!(key(&xl(s)), want, "{s}");
    }
    assert_eq!(
        xl("raw:/dev/vg/guest-volume,hda,w").format.as_deref(),
        Some("raw")
    );
    // "As are these:" (cdroms default to read-only).
    let want = (
        Some("/root/image.iso"),
        Some("hdc"),
        Access::ReadOnly,
        Some("cdrom"),
    );
    for s in [
        "/root/image.iso,,hdc,cdrom",
        "/root/image.iso,,hdc,,cdrom",
        "/root/image.iso,raw,hdc,devtype=cdrom",
        "format=raw, vdev=hdc, access=ro, devtype=cdrom, target=/root/image.iso",
        "raw:/root/image.iso,hdc:cdrom,ro",
    ] {
        assert_eq!(key(&xl(s)), want, "{s}");
    }
}

#[test]
fn xm_era_phy_specs_from_the_field_read_as_xl_reads_them() {
    let d = xl("phy:/dev/mapper/mpath5,/dev/sda,w");
    assert_eq!(
        key(&d),
        (
            Some("/dev/mapper/mpath5"),
            Some("/dev/sda"),
            Access::ReadWrite,
            None
        )
    );
    assert_eq!(d.backendtype.as_deref(), Some("phy"));
    assert!(
        d.notes[0].contains("`phy:` prefix is deprecated"),
        "{:?}",
        d.notes
    );
    let d = xl("phy:/dev/vgvirtualdebian/lvsysteme,sda,r");
    assert_eq!(
        key(&d),
        (
            Some("/dev/vgvirtualdebian/lvsysteme"),
            Some("sda"),
            Access::ReadOnly,
            None
        )
    );
    let d = xl("phy:/dev/sde,/dev/sda:w");
    assert_eq!(
        key(&d),
        (Some("/dev/sde"), Some("/dev/sda"), Access::ReadWrite, None)
    );
    // Stacked prefixes and the script prefixes.
    let d = xl("tap:aio:/srv/x.img,xvda,w");
    assert_eq!(d.target.as_deref(), Some("/srv/x.img"));
    let d = xl("iscsi:iqn.2001-05.com.example:disk1,xvdb,w");
    assert_eq!(d.script.as_deref(), Some("block-iscsi"));
    assert_eq!(d.path(), None, "a script's target is not a path");
}

#[test]
fn key_value_specs_with_script_flags_and_a_target_with_commas() {
    let d = xl("vdev=xvda, access=w, script=block-hostsync, discard, target=/dev/vgsan/web1");
    assert_eq!(d.script.as_deref(), Some("block-hostsync"));
    assert_eq!(d.flags, vec!["discard"]);
    assert_eq!(d.path().as_deref(), Some("/dev/vgsan/web1"));
    // target= takes the rest of the string, commas included.
    assert_eq!(
        xl("vdev=xvdb,target=/srv/a,b").target.as_deref(),
        Some("/srv/a,b")
    );
    // A relative target is under /dev.
    assert_eq!(
        xl("vgsan/web1,,xvda").path().as_deref(),
        Some("/dev/vgsan/web1")
    );
    // Unknown keys are kept.
    assert_eq!(xl("/dev/x,,xvda,colo-host=h,colo-port=9").other.len(), 2);
}

#[test]
fn bad_disk_specs_are_refused_saying_why() {
    for (s, want) in [
        ("/dev/x,,xvda,rx", "access \"rx\""),
        ("vdev=a,vdev=b,target=/dev/x", "vdev is given twice"),
        ("/dev/x", "no guest device"),
        ("/dev/x,raw,xvda,w,extra", "too many positional"),
    ] {
        let e = xl::parse_disk(s).unwrap_err();
        assert!(e.contains(want), "{s}: {e}");
    }
}

#[test]
fn xl_config_files_with_comments_quotes_and_appends() {
    let cfg = load(&fixture("web1.cfg")).unwrap();
    assert_eq!(cfg.kind, ConfigKind::Xl);
    assert_eq!(cfg.name.as_deref(), Some("web1"));
    let t: Vec<_> = cfg
        .disks
        .iter()
        .map(|d| d.vdev.as_deref().unwrap())
        .collect();
    assert_eq!(t, ["/dev/sda", "sda", "/dev/sda", "xvdb", "hdc", "xvdc"]);
    assert_eq!(cfg.disks[5].access, Access::ReadOnly, "from `disk +=`");
    // Escapes in either quote; `;` ends a setting; a `#` inside a string is not a comment.
    let c = xl::parse_cfg("a = 'x\\'y#z' ; b = \"\\x41\\101\\n\"\nc=[1,2,]\n").unwrap();
    assert_eq!(c["a"], xl::Value::Str("x'y#z".into()));
    assert_eq!(c["b"], xl::Value::Str("AA\n".into()));
    assert_eq!(
        c["c"],
        xl::Value::List(vec![
            xl::Value::Atom("1".into()),
            xl::Value::Atom("2".into())
        ])
    );
    for (bad, want) in [
        ("disk = [ 'a,,xvda'", "line 1: the list is not closed"),
        ("name = 'x", "line 1: the string is not closed"),
        ("\nname 'x'", "line 2: expected `=`"),
        ("disk = 'x'", "not a list"),
        (
            "disk = [ '/dev/x,,xvda', '/dev/y' ]",
            "disk entry 2 (\"/dev/y\")",
        ),
    ] {
        let e = parse(bad, Path::new("t.cfg")).unwrap_err().to_string();
        assert!(e.contains(want) && e.contains("t.cfg"), "{bad}: {e}");
    }
}

#[test]
fn libvirt_block_disks_are_read_from_the_domain_xml() {
    let cfg = load(&fixture("web1.xml")).unwrap();
    assert_eq!(cfg.kind, ConfigKind::Libvirt);
    assert_eq!(cfg.name.as_deref(), Some("web1"));
    let k: Vec<_> = cfg.disks.iter().map(key).collect();
    assert_eq!(
        k,
        [
            (
                Some("/dev/mapper/mpath5"),
                Some("vda"),
                Access::ReadWrite,
                Some("disk")
            ),
            (
                Some("/dev/vgsan/web1-data"),
                Some("vdb"),
                Access::ReadWrite,
                Some("disk")
            ),
            (Some("/dev/sde"), Some("sda"), Access::ReadOnly, Some("lun")),
            (
                Some("/var/lib/libvirt/images/install&boot.iso"),
                Some("hdc"),
                Access::ReadOnly,
                Some("cdrom")
            ),
        ],
        "the commented-out disk is not read"
    );
    assert_eq!(cfg.disks[1].flags, ["shareable"]);
    assert_eq!(cfg.disks[3].backendtype.as_deref(), Some("file"));
    let e = parse(
        "<domain><devices><disk type='block'><source dev='/dev/x'/></disk>",
        Path::new("d.xml"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("d.xml") && e.contains("no <target dev"), "{e}");
}

// --- identity ---------------------------------------------------------------------------

/// LVM as a host sees it, for a ScriptedRunner: lvs, vgs, pvs answer these rows forever.
pub(crate) fn script_lvm(
    r: &ScriptedRunner,
    lvs: &[(&str, &str, &str)],
    vgs: &[(&str, &str, &str)],
    pvs: &[(&str, &str)],
) {
    let lv: Vec<_> = lvs
        .iter()
        .map(|(vg, lv, uuid)| {
            serde_json::json!({"lv_name": lv, "vg_name": vg, "lv_uuid": uuid, "lv_attr": "-wi-------",
                "lv_size": "4194304", "origin": "", "pool_lv": "", "snap_percent": "", "data_percent": "",
                "metadata_percent": "", "lv_active_locally": "0", "lv_active_exclusively": "0",
                "lv_device_open": "0", "lv_lock_args": "1.0.0:70254592",
                "lv_path": format!("/dev/{vg}/{lv}"), "lv_dm_path": format!("/dev/mapper/{vg}-{lv}")})
        })
        .collect();
    let vg: Vec<_> = vgs
        .iter()
        .map(|(vg, uuid, lt)| {
            serde_json::json!({"vg_name": vg, "vg_uuid": uuid, "vg_attr": "wz--ns", "vg_size": "1",
                "vg_free": "0", "vg_extent_size": "4194304", "vg_lock_type": lt, "vg_lock_args": "",
                "pv_count": "1", "lv_count": "1"})
        })
        .collect();
    let pv: Vec<_> = pvs
        .iter()
        .map(|(dev, vg)| {
            serde_json::json!({"pv_name": dev, "vg_name": vg, "pv_uuid": "P", "pv_size": "1",
                "pv_free": "0", "dev_size": "1"})
        })
        .collect();
    let rep = |k: &str, rows: Vec<serde_json::Value>| {
        Output::ok(serde_json::json!({"report": [{k: rows}]}).to_string())
    };
    r.always(&["lvs"], rep("lv", lv))
        .always(&["vgs"], rep("vg", vg))
        .always(&["pvs"], rep("pv", pv));
}

/// A simulated host: FC dual HBA (4 paths per LUN), map `mpath5` on LUN 0 and `mpathb` on
/// LUN 1. Returns the sim and the two WWIDs.
pub(crate) fn sim_host(dir: &Path) -> (lun_scan::topology::Sim, String, String) {
    let topo = lun_scan::topology::Topology::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/topologies/fc-dual-hba.toml"),
    )
    .unwrap();
    let mut sim = lun_scan::topology::Sim::render(&topo, dir).unwrap();
    let mut by_wwid: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for p in sim.present_paths() {
        by_wwid
            .entry(p.expected_wwid.clone())
            .or_default()
            .push(p.dev.clone());
    }
    let mut luns = by_wwid.into_iter();
    let (w0, d0) = luns.next().unwrap();
    let (w1, d1) = luns.next().unwrap();
    let refs = |d: &Vec<String>| d.iter().map(String::clone).collect::<Vec<_>>();
    let d0 = refs(&d0);
    let d1 = refs(&d1);
    sim.add_dm_map(
        "mpath5",
        &format!("mpath-{w0}"),
        &d0.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .unwrap();
    sim.add_dm_map(
        "mpathb",
        &format!("mpath-{w1}"),
        &d1.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .unwrap();
    (sim, w0, w1)
}

#[test]
fn every_disk_resolves_to_its_identity_on_this_host() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, w0, w1) = sim_host(dir.path());
    // An sdX path of LUN 0 (the one the config's raw disk names).
    let sd0 = sim
        .present_paths()
        .find(|p| p.expected_wwid == w0)
        .unwrap()
        .dev
        .clone();
    let r = ScriptedRunner::new();
    script_lvm(
        &r,
        &[
            ("vgsan", "web1-data", "LVUUID-1"),
            ("vgvirtualdebian", "lvsysteme", "LVUUID-2"),
        ],
        &[
            ("vgsan", "VGUUID-1", "sanlock"),
            ("vgvirtualdebian", "VGUUID-2", ""),
        ],
        &[
            ("/dev/mapper/mpathb", "vgsan"),
            (&format!("/dev/{sd0}"), "vgvirtualdebian"),
        ],
    );
    let text = std::fs::read_to_string(fixture("web1.cfg"))
        .unwrap()
        .replace("/dev/sde", &format!("/dev/{sd0}"));
    let cfg = parse(&text, Path::new("web1.cfg")).unwrap();
    let res = Resolver::new(dir.path(), Lvm::new(&r));
    let reps = res.resolve(&cfg);
    assert_eq!(
        reps[0].identity,
        Identity::Multipath {
            map: "mpath5".into(),
            wwid: w0.clone()
        }
    );
    match &reps[1].identity {
        Identity::Lv {
            vg,
            lv,
            vg_uuid,
            lv_uuid,
            lock_type,
            pvs,
        } => {
            assert_eq!((vg.as_str(), lv.as_str()), ("vgvirtualdebian", "lvsysteme"));
            assert_eq!(
                (vg_uuid.as_str(), lv_uuid.as_str(), lock_type.as_str()),
                ("VGUUID-2", "LVUUID-2", "")
            );
            assert_eq!(pvs[0].wwid.as_deref(), Some(w0.as_str()));
        }
        other => panic!("{other:?}"),
    }
    let w = reps[1].warnings.join("\n");
    assert!(
        w.contains("VG vgvirtualdebian is not shared") && w.contains("single SCSI path"),
        "{w}"
    );
    assert_eq!(
        reps[2].identity,
        Identity::Raw {
            device: sd0.clone(),
            wwid: Some(w0.clone())
        }
    );
    assert!(
        reps[2].warnings[0].contains("sdX names differ between hosts"),
        "{:?}",
        reps[2].warnings
    );
    match &reps[3].identity {
        Identity::Lv { lv_uuid, pvs, .. } => {
            assert_eq!(lv_uuid, "LVUUID-1");
            assert_eq!(
                pvs,
                &[PvIdentity {
                    device: "/dev/mapper/mpathb".into(),
                    map: Some("mpathb".into()),
                    wwid: Some(w1.clone())
                }]
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(reps[4].identity, Identity::Other { .. }),
        "the iso is a file"
    );
    // A path that is nothing here, and one that names no LUN at all.
    let (id, _) = res.identify("/dev/mapper/mpath9");
    assert!(
        matches!(&id, Identity::Unknown { reason } if reason.contains("no multipath map and no LV is called /dev/mapper/mpath9")),
        "{id:?}"
    );
    let (id, _) = res.identify("/dev/sdzz");
    assert!(matches!(&id, Identity::Raw { wwid: None, .. }), "{id:?}");
    // The table names each disk's identity and the warnings.
    let t = render_table(&cfg, &reps);
    assert!(t.contains(&format!("map mpath5 wwid {w0}")), "{t}");
    assert!(t.contains("warning: /dev/sda: /dev/"), "{t}");
}

#[test]
fn an_lvm_failure_leaves_the_lv_unknown_with_lvms_words() {
    let dir = tempfile::tempdir().unwrap();
    let r = ScriptedRunner::new();
    r.always(&["lvs"], Output::fail(5, "  Cannot access lvmlockd"));
    let res = Resolver::new(dir.path(), Lvm::new(&r));
    let (id, _) = res.identify("/dev/vgsan/web1");
    assert!(
        matches!(&id, Identity::Unknown { reason } if reason.contains("Cannot access lvmlockd")),
        "{id:?}"
    );
}
