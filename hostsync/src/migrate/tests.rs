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

// --- migrate run ----------------------------------------------------------------------------

use crate::runner::{Output, ScriptedRunner};

fn reg_with(v: &ClusterView) -> (tempfile::TempDir, std::sync::Arc<dyn Registry>) {
    let d = tempfile::tempdir().unwrap();
    let r = crate::open(&format!("local:{}", d.path().display())).unwrap();
    for s in &v.states {
        crate::hosts::publish_host_state(&*r, &s.host, 0, &s.maps).unwrap();
    }
    for l in &v.lvm {
        crate::lvstate::publish_lvm_state(&*r, l, 0).unwrap();
    }
    (d, r)
}

fn opts() -> RunOptions {
    RunOptions {
        domu: "web1".into(),
        from: "a".into(),
        to: "b".into(),
        migrate: XL_MIGRATE.split(' ').map(String::from).collect(),
        remote: vec!["on".into(), "{to}".into()],
        migrate_timeout: Duration::from_secs(5),
        recover_for: Duration::from_millis(600),
    }
}

fn go(r: &ScriptedRunner, reg: &dyn Registry) -> (std::result::Result<(), String>, Vec<String>) {
    let mut said = Vec::new();
    let res = super::run(
        reg,
        r,
        &Lvm::new(r),
        &[map_disk(), lv_disk()],
        &opts(),
        1010,
        &mut |s| said.push(s.to_string()),
    );
    (res, said)
}

fn mode_on(reg: &dyn Registry, host: &str) -> Option<LvMode> {
    crate::lvstate::cluster_lvm_state(reg)
        .unwrap()
        .into_iter()
        .find(|h| h.host == host)
        .and_then(|h| h.lvs.first().map(|l| l.mode))
}

#[test]
fn a_migration_shares_the_source_migrates_releases_and_ends_exclusive_on_the_destination() {
    let (_d, reg) = reg_with(&view());
    let r = ScriptedRunner::new();
    r.expect(&["lvchange", "-asy", "vgsan/web1"], Output::ok(""))
        .expect(&["xl", "migrate", "web1", "b"], Output::ok(""))
        .expect(&["lvchange", "-an", "vgsan/web1"], Output::ok(""))
        .expect(
            &["on", "b", "lvchange", "-aey", "vgsan/web1"],
            Output::ok(""),
        );
    let (res, said) = go(&r, &*reg);
    res.unwrap();
    assert_eq!(
        r.lines(),
        [
            "lvchange -asy vgsan/web1",
            "xl migrate web1 b",
            "lvchange -an vgsan/web1",
            "on b lvchange -aey vgsan/web1"
        ]
    );
    assert_eq!(mode_on(&*reg, "b"), Some(LvMode::Exclusive));
    assert_eq!(mode_on(&*reg, "a"), None);
    assert!(
        crate::lvstate::migrations(&*reg).unwrap().is_empty(),
        "finished"
    );
    assert!(said.last().unwrap().contains("finished"), "{said:?}");
}

#[test]
fn the_migration_is_registered_while_the_migrate_command_runs() {
    // The stand-in migrate command is where the destination's block script runs: it must see
    // the registered migration and the source's shared lock.
    let (_d, reg) = reg_with(&view());
    struct Peek<'a>(
        ScriptedRunner,
        &'a dyn Registry,
        std::sync::Mutex<Option<(usize, Option<LvMode>)>>,
    );
    impl Runner for Peek<'_> {
        fn run(&self, c: &Command) -> crate::Result<crate::runner::Output> {
            if c.program == "xl" {
                *self.2.lock().unwrap() = Some((
                    crate::lvstate::migrations(self.1).unwrap().len(),
                    mode_on(self.1, "a"),
                ));
            }
            self.0.run(c)
        }
    }
    let p = Peek(ScriptedRunner::new(), &*reg, Default::default());
    p.0.always(&["lvchange"], Output::ok(""))
        .always(&["xl"], Output::ok(""))
        .always(&["on"], Output::ok(""));
    super::run(
        &*reg,
        &p,
        &Lvm::new(&p.0),
        &[lv_disk()],
        &opts(),
        1010,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(*p.2.lock().unwrap(), Some((1, Some(LvMode::Shared))));
}

#[test]
fn a_failed_migration_takes_the_source_back_exclusive() {
    let (_d, reg) = reg_with(&view());
    let r = ScriptedRunner::new();
    r.expect(&["lvchange", "-asy"], Output::ok(""))
        .expect(
            &["xl", "migrate"],
            Output::fail(
                1,
                "migration target: Ready to receive domain.\nlibxl: error: receiving domain failed",
            ),
        )
        // The destination's cleanup still holds it for a moment.
        .expect(
            &["lvchange", "-aey"],
            Output::fail(5, "LV locked by other host: vgsan/web1"),
        )
        .expect(&["lvchange", "-aey"], Output::ok(""));
    let (res, said) = go(&r, &*reg);
    let e = res.unwrap_err();
    assert!(
        e.contains("the migration of web1 to b failed") && e.contains("receiving domain failed"),
        "{e}"
    );
    assert!(e.contains("web1 keeps its disks exclusively on a"), "{e}");
    assert_eq!(mode_on(&*reg, "a"), Some(LvMode::Exclusive));
    assert!(
        crate::lvstate::migrations(&*reg).unwrap().is_empty(),
        "aborted"
    );
    assert!(
        said.iter().any(|s| s.contains("exclusive on a again")),
        "{said:?}"
    );
    assert!(
        !r.lines().iter().any(|l| l.starts_with("on b")),
        "the destination was not touched"
    );
}

#[test]
fn a_source_that_cannot_take_its_lvs_back_says_so_loudly() {
    let (_d, reg) = reg_with(&view());
    let r = ScriptedRunner::new();
    r.expect(&["lvchange", "-asy"], Output::ok(""))
        .expect(&["xl", "migrate"], Output::fail(1, "broken pipe"))
        .always(
            &["lvchange", "-aey"],
            Output::fail(5, "LV locked by other host: vgsan/web1"),
        );
    let e = go(&r, &*reg).0.unwrap_err();
    assert!(
        e.contains("!!! DANGER: web1 resumed on a but could NOT take its LVs back exclusively"),
        "{e}"
    );
    assert!(e.contains("LV locked by other host"), "{e}");
    assert!(
        crate::lvstate::migrations(&*reg).unwrap().is_empty(),
        "no destination may take it shared now"
    );
}

#[test]
fn an_unsafe_target_stops_the_migration_before_anything_changes() {
    let mut v = view();
    v.lvm[1].vgs[0].lockspace_started = false;
    let (_d, reg) = reg_with(&v);
    let r = ScriptedRunner::new();
    let e = go(&r, &*reg).0.unwrap_err();
    assert!(
        e.contains("unsafe; nothing was changed") && e.contains("lockspace"),
        "{e}"
    );
    assert!(r.lines().is_empty(), "{:?}", r.lines());
    assert!(crate::lvstate::migrations(&*reg).unwrap().is_empty());
}

#[test]
fn a_destination_that_cannot_become_exclusive_keeps_the_record_and_says_danger() {
    let (_d, reg) = reg_with(&view());
    let r = ScriptedRunner::new();
    r.always(&["lvchange"], Output::ok(""))
        .always(&["xl"], Output::ok(""))
        .always(
            &["on"],
            Output::fail(5, "LV locked by other host: vgsan/web1"),
        );
    let e = go(&r, &*reg).0.unwrap_err();
    assert!(
        e.starts_with("DANGER: web1 runs on b but its disks are still shared"),
        "{e}"
    );
    assert_eq!(crate::lvstate::migrations(&*reg).unwrap().len(), 1);
}

#[test]
fn a_running_domus_disks_come_from_xl_list_or_virsh_dumpxml() {
    let r = ScriptedRunner::new();
    r.expect(
        &["xl", "list", "-l", "web1"],
        Output::ok(r#"[{"domid": 3, "config": {"c_info": {"name": "web1"}, "disks": [
            {"pdev_path": "/dev/vgsan/web1", "vdev": "xvda", "script": "block-hostsync", "readwrite": 1},
            {"pdev_path": "/srv/seed.iso", "vdev": "xvdc", "readwrite": 0}]}}]"#),
    );
    let c = running_config(&r, "web1", false).unwrap();
    assert_eq!(c.disks[0].path().as_deref(), Some("/dev/vgsan/web1"));
    assert_eq!(c.disks[1].access, crate::domu::Access::ReadOnly);
    r.expect(
        &["virsh", "dumpxml"],
        Output::ok("<domain><name>web1</name><devices><disk type='block'><source dev='/dev/vgsan/web1'/><target dev='vda'/></disk></devices></domain>"),
    );
    assert_eq!(
        running_config(&r, "web1", true).unwrap().disks[0]
            .vdev
            .as_deref(),
        Some("vda")
    );
    r.expect(
        &["xl", "list"],
        Output::fail(1, "Invalid domain identifier"),
    );
    let e = running_config(&r, "web9", false).unwrap_err();
    assert!(
        e.contains("is web9 running here?") && e.contains("Invalid domain identifier"),
        "{e}"
    );
}
