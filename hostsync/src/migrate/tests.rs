use super::*;
use crate::domu::{DiskSpec, PvIdentity};
use crate::lvstate::{LvState, VgState};

const W5: &str = "3600a098038303053453f463045726b35";
const WB: &str = "3600a098038303053453f463045726b36";

fn disk(vdev: &str, path: &str, identity: Identity) -> DiskReport {
    DiskReport {
        disk: DiskSpec {
            vdev: Some(vdev.into()),
            target: Some(path.into()),
            ..DiskSpec::default()
        },
        path: Some(path.into()),
        identity,
        warnings: vec![],
    }
}

fn lv_disk() -> DiskReport {
    disk(
        "xvdb",
        "/dev/vgsan/web1",
        Identity::Lv {
            vg: "vgsan".into(),
            lv: "web1".into(),
            vg_uuid: "VG1".into(),
            lv_uuid: "LV1".into(),
            lock_type: "sanlock".into(),
            pvs: vec![PvIdentity {
                device: "/dev/mapper/mpathb".into(),
                map: Some("mpathb".into()),
                wwid: Some(WB.into()),
            }],
        },
    )
}

fn map_disk() -> DiskReport {
    disk(
        "xvda",
        "/dev/mapper/mpath5",
        Identity::Multipath {
            map: "mpath5".into(),
            wwid: W5.into(),
        },
    )
}

fn map(name: &str, wwid: &str, active: u32) -> MapState {
    MapState {
        name: name.into(),
        wwid: wwid.into(),
        active_paths: active,
        total_paths: 2,
    }
}

fn host_lvm(host: &str, lvs: Vec<LvState>) -> HostLvm {
    HostLvm {
        host: host.into(),
        host_id: Some(1),
        io_timeout: Some(10),
        taken_unix: 1000,
        vgs: vec![VgState {
            name: "vgsan".into(),
            uuid: "VG1".into(),
            lock_type: "sanlock".into(),
            lockspace_started: true,
            pvs: vec!["/dev/mapper/mpathb".into()],
        }],
        lvs,
    }
}

fn active(mode: LvMode) -> LvState {
    LvState {
        vg: "vgsan".into(),
        lv: "web1".into(),
        uuid: "LV1".into(),
        mode,
        open: true,
    }
}

/// A: the source, holding web1 exclusively; B: the target, both maps with 2 paths.
fn view() -> ClusterView {
    ClusterView {
        states: vec![
            HostState {
                host: "a".into(),
                maps: vec![map("mpath5", W5, 2), map("mpathb", WB, 2)],
            },
            HostState {
                host: "b".into(),
                maps: vec![map("mpath5", W5, 2), map("mpathb", WB, 2)],
            },
        ],
        lvm: vec![
            host_lvm("a", vec![active(LvMode::Exclusive)]),
            host_lvm("b", vec![]),
        ],
        migrations: vec![],
    }
}

fn run(disks: &[DiskReport], v: &ClusterView) -> CheckReport {
    check("web1", "a", "b", disks, v, 1010)
}

fn messages(r: &CheckReport, level: Level) -> String {
    r.host_findings
        .iter()
        .chain(r.disks.iter().flat_map(|d| d.findings.iter()))
        .filter(|x| x.level == level)
        .map(|x| x.message.clone())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_cluster_alias_and_a_shared_lv_held_only_by_the_source_are_safe() {
    let r = run(&[map_disk(), lv_disk()], &view());
    assert!(r.safe, "{}", render_check(&r));
    assert_eq!((r.failures, r.warnings), (0, 0), "{}", render_check(&r));
    let t = render_check(&r);
    assert!(t.contains("map mpath5 has 2 of 2 paths active on b"), "{t}");
    assert!(t.contains("no host but a holds vgsan/web1"), "{t}");
    assert!(
        t.starts_with("web1: a -> b\n") && t.ends_with("safe: 0 failure(s), 0 warning(s)\n"),
        "{t}"
    );
}

#[test]
fn an_sdx_name_is_flagged_naming_the_alias_on_the_target() {
    let d = disk(
        "xvdc",
        "/dev/sde",
        Identity::Raw {
            device: "sde".into(),
            wwid: Some(W5.into()),
        },
    );
    let r = run(&[d], &view());
    assert!(!r.safe);
    let m = messages(&r, Level::Fail);
    assert!(
        m.contains("/dev/sde names the SCSI disk sde")
            && m.contains("(the LUN is /dev/mapper/mpath5 on b)"),
        "{m}"
    );
}

#[test]
fn one_path_left_warns_and_none_fails() {
    let mut v = view();
    v.states[1].maps = vec![map("mpath5", W5, 1), map("mpathb", WB, 0)];
    let r = run(&[map_disk()], &v);
    assert!(r.safe && r.warnings == 1, "{}", render_check(&r));
    assert!(
        messages(&r, Level::Warn).contains("map mpath5 has a single active path on b (1 of 2)")
    );
    let r = run(&[lv_disk()], &v);
    assert!(!r.safe);
    assert!(
        messages(&r, Level::Fail).contains("map mpathb has no active path on b (0 of 2)"),
        "{}",
        render_check(&r)
    );
}

#[test]
fn a_name_that_is_another_lun_or_missing_on_the_target_fails() {
    let mut v = view();
    v.states[1].maps = vec![map("mpath5", WB, 2), map("mpathq", W5, 2)];
    let m = messages(&run(&[map_disk()], &v), Level::Fail);
    assert!(
        m.contains(&format!(
            "on b /dev/mapper/mpath5 is another LUN (WWID {WB}, here {W5})"
        )),
        "{m}"
    );
    v.states[1].maps = vec![map("mpathq", W5, 2)];
    let m = messages(&run(&[map_disk()], &v), Level::Fail);
    assert!(
        m.contains("b calls the LUN /dev/mapper/mpathq: /dev/mapper/mpath5 does not exist there"),
        "{m}"
    );
    v.states[1].maps = vec![];
    let m = messages(&run(&[map_disk()], &v), Level::Fail);
    assert!(
        m.contains(&format!("b has no multipath map of WWID {W5}")),
        "{m}"
    );
}

#[test]
fn a_second_holder_of_the_lv_fails_unless_it_is_the_registered_destination() {
    let mut v = view();
    v.lvm.push(host_lvm("c", vec![active(LvMode::Shared)]));
    let m = messages(&run(&[lv_disk()], &v), Level::Fail);
    assert!(
        m.contains("vgsan/web1 is active shared on c: moving web1 to b would make a second writer"),
        "{m}"
    );
    let mut v = view();
    v.lvm[1].lvs = vec![active(LvMode::Exclusive)];
    let m = messages(&run(&[lv_disk()], &v), Level::Fail);
    assert!(m.contains("active exclusive on b"), "{m}");
    let mut v = view();
    v.lvm[1].lvs = vec![active(LvMode::Shared)];
    assert!(
        !run(&[lv_disk()], &v).safe,
        "shared on b without a registered migration"
    );
    v.migrations.push(Migration {
        domu: "web1".into(),
        from: "a".into(),
        to: "b".into(),
        lv_uuids: vec!["LV1".into()],
        started_unix: 1000,
    });
    let r = run(&[lv_disk()], &v);
    assert!(r.safe, "{}", render_check(&r));
    let r = check("web1", "a", "c", &[lv_disk()], &v, 1010);
    assert!(
        messages(&r, Level::Fail).contains("a migration of web1 from a to b is already registered")
    );
    let mut v = view();
    v.lvm[0].lvs = vec![active(LvMode::Unlocked)];
    assert!(messages(&run(&[lv_disk()], &v), Level::Fail).contains("active without a lock on a"));
}

#[test]
fn the_target_must_have_published_the_vg_shared_with_its_lockspace_started() {
    let mut v = view();
    v.states.remove(1);
    v.lvm.remove(1);
    let m = messages(&run(&[lv_disk()], &v), Level::Fail);
    assert!(
        m.contains("b has published no state") && m.contains("b has published no LVM state"),
        "{m}"
    );
    let mut v = view();
    v.lvm[1].vgs[0].lockspace_started = false;
    assert!(
        messages(&run(&[lv_disk()], &v), Level::Fail)
            .contains("b has not started VG vgsan's lockspace")
    );
    v.lvm[1].vgs[0].lock_type = String::new();
    assert!(messages(&run(&[lv_disk()], &v), Level::Fail).contains("VG vgsan is not shared"));
    v.lvm[1].vgs[0].uuid = "OTHER".into();
    assert!(messages(&run(&[lv_disk()], &v), Level::Fail).contains("VG vgsan on b is another VG"));
    v.lvm[1].vgs.clear();
    assert!(messages(&run(&[lv_disk()], &v), Level::Fail).contains("VG vgsan is not visible on b"));
    let mut v = view();
    v.lvm[1].taken_unix = 1;
    assert!(
        messages(&check("web1", "a", "b", &[], &v, 1000), Level::Warn)
            .contains("b's LVM record is 999 s old")
    );
    assert!(!check("web1", "a", "a", &[], &view(), 1000).safe);
}
