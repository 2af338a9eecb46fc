#![allow(clippy::unwrap_used)]
//! The discovery pipeline and the engine on generated sysfs trees with the simulated
//! device-mapper: maps per WWID grouped by ALUA priority, adoption without reload, blacklists
//! and overrides, failover through the sysfs checker, uevents and dm events.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aliases::StorePaths;
use dm_tables::{DmBackend, SimBackend};
use lun_scan::topology::Sim;
use multipathd_rs::clock::ManualClock;
use multipathd_rs::config::Config;
use multipathd_rs::discovery::Action;
use multipathd_rs::engine::{Engine, EngineOptions};
use multipathd_rs::state::PathDmState;
use multipathd_rs::uevent::{Uevent, UeventSource};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

struct Lab {
    dir: tempfile::TempDir,
    sim: Sim,
}

impl Lab {
    fn new() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let sim = Sim::render_file(
            &fixture("fixtures/topologies/fc-dual-hba.toml"),
            &dir.path().join("sys"),
        )
        .unwrap();
        Lab { dir, sim }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("dm-state.json")
    }

    fn engine_with(&self, config: Config) -> Engine {
        let opts = EngineOptions {
            config_path: None,
            sysfs_root: self.sim.root.clone(),
            store_paths: StorePaths {
                table: Some(self.dir.path().join("aliases.toml")),
                ..StorePaths::default()
            },
            checker_override: Some("sysfs".into()),
        };
        let backend = SimBackend::open_file(self.state(), None).unwrap();
        Engine::new(
            config,
            opts,
            Box::new(backend),
            Arc::new(ManualClock::new()),
        )
        .unwrap()
    }

    fn engine(&self) -> Engine {
        self.engine_with(Config::builtin())
    }

    fn backend(&self) -> SimBackend {
        SimBackend::open_file(self.state(), None).unwrap()
    }
}

fn event_nrs(b: &SimBackend) -> BTreeMap<String, u32> {
    b.list()
        .unwrap()
        .into_iter()
        .map(|m| (m.name, m.event_nr))
        .collect()
}

#[test]
fn one_map_per_wwid_grouped_by_alua_priority() {
    let lab = Lab::new();
    let mut e = lab.engine();
    let r = e.sync().unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.maps.len(), 4);
    assert!(
        r.maps
            .iter()
            .all(|m| m.plan.action == Action::Create && m.applied)
    );
    let names: Vec<String> = e.map_names();
    assert_eq!(names, ["mpatha", "mpathb", "mpathc", "mpathd"]);
    for m in e.maps_view() {
        assert_eq!(m.groups.len(), 2, "{}", m.name);
        assert_eq!(m.groups[0].priority, 50);
        assert_eq!(m.groups[1].priority, 10);
        assert_eq!(m.groups[0].paths.len(), 2);
        assert_eq!(m.hwhandler, "1 alua");
        assert_eq!(
            m.features, "3 queue_if_no_path pg_init_retries 50",
            "NetApp (built-in hwtable): no_path_retry queue, pg_init_retries 50"
        );
        // every path of the map has the map's WWID
        assert!(m.paths().all(|p| p.wwid == m.wwid));
        // the optimized group holds one path through each HBA
        let hosts: Vec<u32> = m.groups[0].paths.iter().map(|p| p.hctl.host).collect();
        assert_eq!(hosts, [0, 1]);
    }
    // the names are bound durably
    let table = std::fs::read_to_string(lab.dir.path().join("aliases.toml")).unwrap();
    assert!(table.contains("mpatha"), "{table}");
}

#[test]
fn a_second_run_adopts_the_maps_without_reload() {
    let lab = Lab::new();
    lab.engine().sync().unwrap();
    let before = event_nrs(&lab.backend());
    let mut again = lab.engine();
    let r = again.sync().unwrap();
    assert!(
        r.maps.iter().all(|m| m.plan.action == Action::Keep),
        "{:?}",
        r.maps
    );
    assert_eq!(r.changed(), 0);
    assert_eq!(event_nrs(&lab.backend()), before, "no reload, no message");
}

#[test]
fn a_map_made_by_multipath_tools_is_adopted_under_its_name() {
    let lab = Lab::new();
    // Find the first LUN's WWID and paths as multipath-tools would have built them:
    // per-path args "1" (service-time repeat count only), the kernel prints "1 1" back.
    let mut probe = lab.engine();
    let plan = probe.plan_only().unwrap();
    let first = &plan.maps[0].plan.desired;
    let groups: Vec<String> = first
        .groups
        .iter()
        .map(|g| {
            let devs: Vec<String> = g.paths.iter().map(|p| format!("{} 1", p.devno)).collect();
            format!("service-time 0 {} 1 {}", g.paths.len(), devs.join(" "))
        })
        .collect();
    let line = format!(
        "0 {} multipath 3 queue_if_no_path pg_init_retries 50 1 alua {} 1 {}",
        first.size_sectors,
        groups.len(),
        groups.join(" ")
    );
    let table: dm_tables::MultipathTable = line.parse().unwrap();
    let b = lab.backend();
    b.create("legacy_db", &first.uuid, &table).unwrap();
    let before = event_nrs(&b);
    let mut e = lab.engine();
    let r = e.sync().unwrap();
    let adopted = r
        .maps
        .iter()
        .find(|m| m.plan.desired.wwid == first.wwid)
        .unwrap();
    assert_eq!(
        adopted.plan.action,
        Action::Keep,
        "{:?}",
        adopted.plan.changes
    );
    assert_eq!(adopted.plan.name, "legacy_db");
    assert_eq!(event_nrs(&b)["legacy_db"], before["legacy_db"]);
    // the other three were created, and none took a name in use
    assert_eq!(e.map_names().len(), 4);
}

#[test]
fn blacklist_and_overrides_apply() {
    let lab = Lab::new();
    let wwids: Vec<String> = {
        let mut w: Vec<String> = lab
            .sim
            .paths
            .iter()
            .map(|p| p.expected_wwid.clone())
            .collect();
        w.sort();
        w.dedup();
        w
    };
    let text = format!(
        "[blacklist]\nwwid = [\"^{}$\"]\n\n[overrides]\npath_grouping_policy = \"multibus\"\nno_path_retry = \"fail\"\n",
        wwids[0]
    );
    let cfg = Config::parse_str(&text, Path::new("/test/config.toml")).unwrap();
    let mut e = lab.engine_with(cfg);
    let r = e.plan_only().unwrap();
    assert_eq!(r.maps.len(), 3);
    assert!(r.maps.iter().all(|m| m.plan.desired.wwid != wwids[0]));
    assert!(
        r.ignored
            .iter()
            .filter(|i| i.wwid.as_deref() == Some(&wwids[0]))
            .all(|i| i.reason.contains("blacklisted")),
        "{:?}",
        r.ignored
    );
    for m in &r.maps {
        assert_eq!(m.plan.desired.groups.len(), 1, "multibus: one group");
        assert_eq!(m.plan.desired.settings.policy, "multibus");
        assert!(
            !m.plan
                .desired
                .settings
                .features
                .contains(&"queue_if_no_path".to_string()),
            "no_path_retry fail: {:?}",
            m.plan.desired.settings.features
        );
    }
    // dry run: nothing created, no alias written
    assert!(lab.backend().list().unwrap().is_empty());
    assert!(!lab.dir.path().join("aliases.toml").exists());
}

#[test]
fn host_down_fails_its_paths_and_host_up_reinstates_them() {
    let mut lab = Lab::new();
    let mut e = lab.engine();
    e.sync().unwrap();
    assert!(
        e.check_all_now().unwrap().is_empty(),
        "all paths start healthy"
    );
    lab.sim.host_down("host1").unwrap();
    let sent = e.check_all_now().unwrap();
    assert_eq!(sent.len(), 8, "{sent:?}");
    assert!(sent.iter().all(|s| s.message.starts_with("fail_path")));
    for m in e.maps_view() {
        for p in m.paths() {
            let want = if p.hctl.host == 1 {
                PathDmState::Failed
            } else {
                PathDmState::Active
            };
            assert_eq!(p.dm_state, want, "{} {}", m.name, p.dev);
        }
        assert!(m.usable_path_count() >= 1);
    }
    lab.sim.host_up("host1").unwrap();
    let sent = e.check_all_now().unwrap();
    assert_eq!(sent.len(), 8, "{sent:?}");
    assert!(sent.iter().all(|s| s.message.starts_with("reinstate_path")));
    assert!(
        e.maps_view()
            .iter()
            .flat_map(|m| m.paths().map(|p| p.dm_state).collect::<Vec<_>>())
            .all(|s| s == PathDmState::Active)
    );
}

fn uevent(action: &str, dev: &str) -> Uevent {
    let env: BTreeMap<String, String> = [
        ("ACTION", action.to_string()),
        ("DEVPATH", format!("/devices/fake/block/{dev}")),
        ("SUBSYSTEM", "block".to_string()),
        ("DEVTYPE", "disk".to_string()),
        ("DEVNAME", dev.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Uevent::from_properties(UeventSource::Kernel, env).unwrap()
}

#[test]
fn a_removed_path_leaves_its_map_by_reload_and_a_map_without_paths_stays() {
    let mut lab = Lab::new();
    let mut e = lab.engine();
    e.sync().unwrap();
    let m = e.maps_view()[0].clone();
    let devs: Vec<String> = m.paths().map(|p| p.dev.clone()).collect();
    // remove one path
    lab.sim.remove_device(&devs[0]).unwrap();
    let r = e.on_uevents(vec![uevent("remove", &devs[0])]).unwrap();
    assert_eq!(r.maps.len(), 1, "only the affected map is re-planned");
    assert_eq!(r.maps[0].plan.action, Action::Reload);
    let after = e.map_view_of(&m.name).unwrap();
    assert_eq!(after.path_count(), 3);
    assert!(after.paths().all(|p| p.dev != devs[0]));
    // remove the rest: the kernel fails them first (I/O errors), then they go
    let b = lab.backend();
    for p in after.paths() {
        b.inject_io_error(dm_tables::DevNo::new(p.devno.major, p.devno.minor))
            .unwrap();
    }
    let events: Vec<Uevent> = devs[1..]
        .iter()
        .map(|d| {
            lab.sim.remove_device(d).unwrap();
            uevent("remove", d)
        })
        .collect();
    let r = e.on_uevents(events).unwrap();
    assert!(r.kept_without_paths.contains(&m.name), "{r:?}");
    assert!(e.map_names().contains(&m.name), "the map stays");
    // they come back: the map gets them again in one event burst
    let added = lab.sim.scan_all().unwrap();
    assert_eq!(added.len(), 4);
    let r = e
        .on_uevents(added.iter().map(|d| uevent("add", d)).collect())
        .unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let back = e.map_view_of(&m.name).unwrap();
    assert_eq!(back.path_count(), 4);
}

#[test]
fn a_kernel_path_failure_is_seen_at_once_and_the_map_rechecked() {
    let lab = Lab::new();
    let mut e = lab.engine();
    e.sync().unwrap();
    assert!(e.check_all_now().unwrap().is_empty());
    let m = e.maps_view()[1].clone();
    let victim = m.groups[0].paths[0].clone();
    lab.backend()
        .inject_io_error(dm_tables::DevNo::new(
            victim.devno.major,
            victim.devno.minor,
        ))
        .unwrap();
    let due = e.poll_dm_events().unwrap();
    let mut want: Vec<String> = m.paths().map(|p| p.dev.clone()).collect();
    want.sort();
    assert_eq!(due, want, "every path of the map is re-checked");
    let v = e.map_view_of(&m.name).unwrap();
    let p = v.paths().find(|p| p.dev == victim.dev).unwrap();
    assert_eq!(p.dm_state, PathDmState::Failed);
    // the device itself is fine, so the re-check reinstates it
    let sent = e.check_paths_now(&due).unwrap();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].message.starts_with("reinstate_path"));
}

#[test]
fn del_map_refuses_an_open_map_and_resize_reloads() {
    let mut lab = Lab::new();
    let mut e = lab.engine();
    e.sync().unwrap();
    let b = lab.backend();
    b.open("mpatha").unwrap();
    let err = e.del_map("mpatha").unwrap_err();
    assert!(err.to_string().contains("open"), "{err}");
    b.close("mpatha").unwrap();
    e.del_map("mpatha").unwrap();
    assert!(!e.map_names().contains(&"mpatha".to_string()));
    // a sync does not bring back what the admin removed
    e.sync().unwrap();
    assert_eq!(e.map_names().len(), 3);

    // resize: the array grows a LUN, `resize map` rescans its paths and reloads
    let m = e.map_view_of("mpathb").unwrap();
    let dev = m.paths().next().unwrap().dev.clone();
    let (group, ordinal) = lab.sim.lun_of(&dev).unwrap();
    lab.sim.resize_lun(group, ordinal, 40 << 30);
    let sim = Arc::new(std::sync::Mutex::new(lab.sim));
    let s2 = sim.clone();
    e.set_sysfs_writer(Box::new(move |p: &Path, v: &str| {
        s2.lock().unwrap().kernel_write(p, v)
    }));
    let r = e.resize_map("mpathb").unwrap();
    assert_eq!(r.maps[0].plan.action, Action::Reload, "{:?}", r.maps);
    assert_eq!(
        e.map_view_of("mpathb").unwrap().size_sectors,
        (40u64 << 30) / 512
    );
}

/// The real-kernel reference tree (scsi_debug 2 hosts + tcm_loop) with the maps multipath-tools
/// 0.9.4 built on it (table.txt): same membership and grouping, and every map adopted as is.
#[test]
fn multipath_tools_maps_on_the_reference_tree_are_adopted_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let root = fixture("fixtures/ref-sd2x2-tcmloop2/sys");
    let state = dir.path().join("dm.json");
    let b = SimBackend::open_file(&state, None).unwrap();
    let tables = std::fs::read_to_string(fixture("fixtures/ref-sd2x2-tcmloop2/table.txt")).unwrap();
    let mut made = BTreeMap::new();
    for line in tables.lines().filter(|l| !l.trim().is_empty()) {
        let (name, rest) = line.split_once(':').unwrap();
        let table: dm_tables::MultipathTable = rest.trim().parse().unwrap();
        made.insert(name.to_string(), table);
    }
    // the WWIDs of the maps, from the reference's wwids.txt (dev -> ID_SERIAL)
    let wwids = std::fs::read_to_string(fixture("fixtures/ref-sd2x2-tcmloop2/wwids.txt")).unwrap();
    let wwid_of = |dev: &str| -> String {
        wwids
            .lines()
            .find(|l| l.starts_with(&format!("{dev} ")))
            .and_then(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix("ID_SERIAL="))
            })
            .unwrap()
            .to_string()
    };
    for (name, first_dev) in [("mpatha", "sda"), ("mpathb", "sdb"), ("mpathc", "sde")] {
        b.create(
            name,
            &dm_tables::uuid_for_wwid(&wwid_of(first_dev)),
            &made[name],
        )
        .unwrap();
    }
    let before = event_nrs(&b);
    let opts = EngineOptions {
        config_path: None,
        sysfs_root: root,
        store_paths: StorePaths {
            table: Some(dir.path().join("aliases.toml")),
            ..StorePaths::default()
        },
        checker_override: Some("sysfs".into()),
    };
    let mut e = Engine::new(
        Config::builtin(),
        opts,
        Box::new(SimBackend::open_file(&state, None).unwrap()),
        Arc::new(ManualClock::new()),
    )
    .unwrap();
    let r = e.sync().unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.maps.len(), 3);
    for m in &r.maps {
        assert!(
            matches!(m.plan.action, Action::Keep),
            "{}: {:?} {:?}",
            m.plan.name,
            m.plan.action,
            m.plan.changes
        );
        // same membership and grouping as multipath-tools
        let ours: Vec<Vec<dm_tables::DevNo>> = m
            .plan
            .desired
            .groups
            .iter()
            .map(|g| g.paths.iter().map(|p| p.devno).collect())
            .collect();
        let theirs: Vec<Vec<dm_tables::DevNo>> = made[&m.plan.name]
            .groups
            .iter()
            .map(|g| g.paths.iter().map(|p| p.devno).collect())
            .collect();
        assert_eq!(ours, theirs, "{}", m.plan.name);
    }
    let after = event_nrs(&b);
    for (name, nr) in &before {
        // no reload; at most a queue_if_no_path message where our no_path_retry differs
        assert!(after[name] <= nr + 1, "{name}: {nr} -> {}", after[name]);
    }
    assert_eq!(e.map_names(), ["mpatha", "mpathb", "mpathc"]);
}

#[test]
fn no_path_retry_counts_down_on_the_clock_and_failback_switches_back() {
    let mut lab = Lab::new();
    let cfg = Config::parse_str(
        "[overrides]\nno_path_retry = 2\nfailback = \"immediate\"\n",
        Path::new("/test/config.toml"),
    )
    .unwrap();
    let clock = Arc::new(ManualClock::new());
    let opts = EngineOptions {
        config_path: None,
        sysfs_root: lab.sim.root.clone(),
        store_paths: StorePaths {
            table: Some(lab.dir.path().join("aliases.toml")),
            ..StorePaths::default()
        },
        checker_override: Some("sysfs".into()),
    };
    let mut e = Engine::new(
        cfg,
        opts,
        Box::new(SimBackend::open_file(lab.state(), None).unwrap()),
        clock.clone(),
    )
    .unwrap();
    e.sync().unwrap();
    e.check_all_now().unwrap();
    let status = |e: &Engine| lab.backend().status(&e.map_names()[0]).unwrap();
    assert!(e.maps_view()[0].features.contains("queue_if_no_path"));

    // failback immediate: the admin switches to the non-optimized group; the next check of
    // any path of the map switches back to the best group
    let name = e.map_names()[0].clone();
    e.switch_group(&name, 2).unwrap();
    assert_eq!(status(&e).current_group, 2);
    let dev = e.map_view_of(&name).unwrap().groups[0].paths[0].dev.clone();
    let sent = e.check_paths_now(&[dev]).unwrap();
    assert!(
        sent.iter().any(|s| s.message == "switch_group 1"),
        "{sent:?}"
    );
    assert_eq!(status(&e).current_group, 1);

    // every path gone: I/O queues for 2 polling intervals (5 s each), then queueing stops
    lab.sim.host_down("host0").unwrap();
    lab.sim.host_down("host1").unwrap();
    let sent = e.check_all_now().unwrap();
    assert!(
        !sent.iter().any(|s| s.message == "fail_if_no_path"),
        "{sent:?}"
    );
    assert!(
        lab.backend().status(&name).unwrap().queue_io,
        "queueing while counting down"
    );
    clock.advance(std::time::Duration::from_secs(9));
    assert!(e.tick_queueing().unwrap().is_empty(), "not yet");
    clock.advance(std::time::Duration::from_secs(2));
    let sent = e.tick_queueing().unwrap();
    assert_eq!(
        sent.iter()
            .filter(|s| s.message == "fail_if_no_path")
            .count(),
        4,
        "{sent:?}"
    );
    assert!(!lab.backend().status(&name).unwrap().queue_io);

    // a path returns: reinstated, and queueing is back on for the next outage
    lab.sim.host_up("host0").unwrap();
    let sent = e.check_all_now().unwrap();
    assert!(sent.iter().any(|s| s.message.starts_with("reinstate_path")));
    assert_eq!(
        sent.iter()
            .filter(|s| s.message == "queue_if_no_path")
            .count(),
        4,
        "{sent:?}"
    );
}

#[test]
fn an_alua_change_reorders_the_groups_at_the_next_check() {
    let mut lab = Lab::new();
    let mut e = lab.engine();
    e.sync().unwrap();
    let before = event_nrs(&lab.backend());
    // The array moves the optimized port group from host0's side to host1's: the checker
    // still says "ready" for every path, only access_state tells.
    let devs: Vec<(String, u32)> = e
        .paths()
        .iter()
        .map(|p| (p.dev.clone(), p.hctl.host))
        .collect();
    for (dev, host) in &devs {
        let state = if *host == 0 {
            "active/non-optimized"
        } else {
            "active/optimized"
        };
        lab.sim.set_access_state(dev, state).unwrap();
    }
    let sent = e.check_all_now().unwrap();
    assert!(
        sent.iter().all(|s| !s.message.starts_with("fail_path")),
        "no path failed: {sent:?}"
    );
    for m in e.maps_view() {
        assert_eq!(m.groups[0].priority, 50, "{}", m.name);
        let first: Vec<u32> = m.groups[0].paths.iter().map(|p| p.hctl.host).collect();
        assert_eq!(first, [1, 1], "{}: host1's paths lead now", m.name);
        assert!(m.paths().all(|p| p.dm_state == PathDmState::Active));
    }
    // every map was reloaded once for its new grouping, and a second round changes nothing
    let after = event_nrs(&lab.backend());
    assert!(
        before.iter().all(|(k, v)| after[k] > *v),
        "{before:?} {after:?}"
    );
    e.check_all_now().unwrap();
    assert_eq!(event_nrs(&lab.backend()), after);
}

#[test]
fn the_state_sweep_makes_a_path_that_went_offline_due_at_once() {
    let mut lab = Lab::new();
    let mut e = lab.engine();
    e.sync().unwrap();
    e.check_all_now().unwrap();
    assert!(e.due_checks().is_empty(), "every path was just checked");
    assert!(e.state_sweep().is_empty(), "nothing moved");

    let dev = e.paths()[0].dev.clone();
    lab.sim.set_state(&dev, "offline").unwrap();
    assert_eq!(e.state_sweep(), std::slice::from_ref(&dev));
    let due: Vec<String> = e.due_checks().into_iter().map(|(_, t)| t.dev).collect();
    assert_eq!(
        due,
        std::slice::from_ref(&dev),
        "only the moved path is due, long before its interval"
    );
    let sent = e.check_paths_now(&due).unwrap();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].message.starts_with("fail_path"), "{sent:?}");
    assert!(e.state_sweep().is_empty(), "seen once");

    lab.sim.set_state(&dev, "running").unwrap();
    assert_eq!(e.state_sweep(), std::slice::from_ref(&dev));
    let sent = e.check_paths_now(std::slice::from_ref(&dev)).unwrap();
    assert!(sent[0].message.starts_with("reinstate_path"), "{sent:?}");
}

/// A sim backend that says it is worth running 8 operations at once (as the kernel backend
/// does) and makes each create and reload take a little while, counting how many overlap.
struct Overlapping {
    inner: SimBackend,
    now: std::sync::atomic::AtomicUsize,
    most: Arc<std::sync::atomic::AtomicUsize>,
}

impl Overlapping {
    fn slow<T>(&self, f: impl FnOnce() -> T) -> T {
        use std::sync::atomic::Ordering::SeqCst;
        let n = self.now.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(n, SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let r = f();
        self.now.fetch_sub(1, SeqCst);
        r
    }
}

impl DmBackend for Overlapping {
    fn list(&self) -> dm_tables::Result<Vec<dm_tables::MapInfo>> {
        self.inner.list()
    }
    fn info(&self, name: &str) -> dm_tables::Result<dm_tables::MapInfo> {
        self.inner.info(name)
    }
    fn create(
        &self,
        name: &str,
        uuid: &str,
        table: &dm_tables::MultipathTable,
    ) -> dm_tables::Result<dm_tables::MapInfo> {
        self.slow(|| self.inner.create(name, uuid, table))
    }
    fn reload(&self, name: &str, table: &dm_tables::MultipathTable) -> dm_tables::Result<()> {
        self.slow(|| self.inner.reload(name, table))
    }
    fn table_line(&self, name: &str) -> dm_tables::Result<String> {
        self.inner.table_line(name)
    }
    fn status_line(&self, name: &str) -> dm_tables::Result<String> {
        self.inner.status_line(name)
    }
    fn message(&self, name: &str, msg: &dm_tables::Message) -> dm_tables::Result<()> {
        self.inner.message(name, msg)
    }
    fn rename(&self, old: &str, new: &str) -> dm_tables::Result<()> {
        self.inner.rename(old, new)
    }
    fn remove(
        &self,
        name: &str,
        mode: dm_tables::RemoveMode,
    ) -> dm_tables::Result<dm_tables::Removed> {
        self.inner.remove(name, mode)
    }
    fn wait_event(
        &self,
        name: &str,
        last: u32,
        timeout: std::time::Duration,
    ) -> dm_tables::Result<Option<u32>> {
        self.inner.wait_event(name, last, timeout)
    }
    fn concurrency(&self) -> usize {
        8
    }
}

#[test]
fn maps_are_created_concurrently_with_the_same_result_as_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sys");
    Sim::render(&lun_scan::topology::Topology::big_fc(2, 1, 24), &root).unwrap();
    let engine = |name: &str, backend: Box<dyn DmBackend>| {
        let opts = EngineOptions {
            config_path: None,
            sysfs_root: root.clone(),
            store_paths: StorePaths {
                table: Some(dir.path().join(format!("{name}.toml"))),
                ..StorePaths::default()
            },
            checker_override: Some("sysfs".into()),
        };
        Engine::new(
            Config::builtin(),
            opts,
            backend,
            Arc::new(ManualClock::new()),
        )
        .unwrap()
    };
    let view = |e: &Engine| {
        e.maps_view()
            .into_iter()
            .map(|m| (m.name.clone(), m.wwid.clone(), m.groups.len()))
            .collect::<Vec<_>>()
    };

    let mut serial = engine("serial", Box::new(SimBackend::new()));
    let rs = serial.sync().unwrap();
    assert!(rs.errors.is_empty(), "{:?}", rs.errors);

    let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut concurrent = engine(
        "concurrent",
        Box::new(Overlapping {
            inner: SimBackend::new(),
            now: Default::default(),
            most: most.clone(),
        }),
    );
    let rc = concurrent.sync().unwrap();
    assert!(rc.errors.is_empty(), "{:?}", rc.errors);
    assert_eq!(rc.maps.len(), 24);
    assert!(
        rc.maps
            .iter()
            .all(|m| m.applied && m.plan.action == Action::Create)
    );
    // outcomes come back in plan order, and the maps are the same as made one by one
    let order = |r: &multipathd_rs::engine::SyncReport| {
        r.maps
            .iter()
            .map(|m| m.plan.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(order(&rc), order(&rs));
    assert_eq!(view(&concurrent), view(&serial));
    assert_eq!(concurrent.backend().list().unwrap().len(), 24);
    let most = most.load(std::sync::atomic::Ordering::SeqCst);
    assert!((2..=8).contains(&most), "{most} creates overlapped");
}
