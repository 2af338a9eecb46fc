#![allow(clippy::unwrap_used)]
//! The discovery pipeline and the engine on generated sysfs trees with the simulated
//! device-mapper: maps per WWID grouped by ALUA priority, adoption without reload, blacklists
//! and overrides, failover through the sysfs checker, uevents and dm events.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aliases::StorePaths;
use common::{Hooks, Lab, PassThrough, event_nrs, fixture};
use dm_tables::{DmBackend, SimBackend};
use lun_scan::topology::Sim;
use multipathd_rs::clock::ManualClock;
use multipathd_rs::config::Config;
use multipathd_rs::discovery::Action;
use multipathd_rs::engine::{Engine, EngineOptions};
use multipathd_rs::state::PathDmState;
use multipathd_rs::uevent::{Uevent, UeventSource};

impl Lab {
    fn state(&self) -> PathBuf {
        self.dir.path().join("dm-state.json")
    }

    /// An engine on the lab's tree and sim state file, reading `config_path` on reconfigure.
    fn engine_full(
        &self,
        config: Config,
        config_path: Option<PathBuf>,
        clock: Arc<ManualClock>,
    ) -> Engine {
        let opts = EngineOptions {
            config_path,
            ..common::engine_options(self.dir.path(), &self.sim.root)
        };
        let backend = SimBackend::open_file(self.state(), None).unwrap();
        Engine::new(config, opts, Box::new(backend), clock).unwrap()
    }

    fn engine_with(&self, config: Config) -> Engine {
        self.engine_full(config, None, Arc::new(ManualClock::new()))
    }

    fn engine(&self) -> Engine {
        self.engine_with(Config::builtin())
    }

    /// An engine reading `config.toml` in the lab dir (written with `text`), on `clock`.
    fn engine_with_file(&self, text: &str, clock: Arc<ManualClock>) -> Engine {
        let path = self.dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        self.engine_full(Config::load(&path).unwrap(), Some(path), clock)
    }

    /// Rewrites the engine's config file (then `reconfigure` is the SIGHUP).
    fn write_config(&self, text: &str) {
        std::fs::write(self.dir.path().join("config.toml"), text).unwrap();
    }

    /// Takes both hosts away: sysfs says transport-offline and the sim kernel fails every
    /// I/O sent to their devices. Returns the devices' numbers.
    fn all_paths_down(&mut self, e: &Engine) -> Vec<dm_tables::DevNo> {
        self.sim.host_down("host0").unwrap();
        self.sim.host_down("host1").unwrap();
        let b = self.backend();
        let devnos: Vec<dm_tables::DevNo> = e
            .paths()
            .iter()
            .map(|p| multipathd_rs::discovery::dm_devno(p.devno.unwrap()))
            .collect();
        for d in &devnos {
            b.set_failing(*d, true).unwrap();
        }
        devnos
    }

    fn backend(&self) -> SimBackend {
        SimBackend::open_file(self.state(), None).unwrap()
    }
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
        assert!(m.paths().all(|p| *p.wwid == *m.wwid));
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
    let mut e = common::engine(
        dir.path(),
        &root,
        Config::builtin(),
        Box::new(SimBackend::open_file(&state, None).unwrap()),
        Arc::new(ManualClock::new()),
    );
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
        // no reload (its resume's change uevent would show) and no path message; a
        // queue_if_no_path message where our no_path_retry differs raises no event
        assert_eq!(after[name], *nr, "{name}");
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
    let mut e = lab.engine_full(cfg, None, clock.clone());
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

impl Hooks for Overlapping {
    fn inner(&self) -> &dyn DmBackend {
        &self.inner
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
        Box::new(PassThrough(Arc::new(Overlapping {
            inner: SimBackend::new(),
            now: Default::default(),
            most: most.clone(),
        }))),
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
    // the profile the daemon logs for its cold start: each create took 20 ms, 24 of them
    // 8 at a time took at least 3 rounds, and far less than 24 one after another
    let t = rc.timings;
    assert!(t.scan.is_some());
    assert_eq!(t.width, 8);
    let ms = std::time::Duration::from_millis;
    assert!(t.slowest_map >= ms(20), "{t}");
    assert!(t.apply >= ms(60) && t.apply < ms(24 * 20), "{t}");
    assert_eq!(rs.timings.width, 1, "the sim serialises everything");
}

const SIGHUP_CHANGE: &str = "[overrides]\npath_selector = \"round-robin 0\"\n";

/// Issue 12 item 1: I/O queued in a map with no usable path survives every reload (a SIGHUP
/// that changes the table, a path removed, a path re-added) and completes when a path
/// returns; with a flushing reload it failed with EIO at the first one.
#[test]
fn queued_io_survives_reloads_and_completes_when_a_path_returns() {
    let mut lab = Lab::new();
    let clock = Arc::new(ManualClock::new());
    let mut e = lab.engine_with_file("", clock);
    e.sync().unwrap();
    e.check_all_now().unwrap();
    let name = e.map_names()[0].clone();
    assert!(
        e.map_view_of(&name)
            .unwrap()
            .features
            .contains("queue_if_no_path")
    );
    let failing = lab.all_paths_down(&e);
    e.check_all_now().unwrap();
    let b = lab.backend();
    assert_eq!(b.submit_io(&name, 5).unwrap().queued, 5);

    // SIGHUP with a configuration that changes the table: a reload with every path down
    lab.write_config(SIGHUP_CHANGE);
    let r = e.reconfigure().unwrap();
    let mine = r.maps.iter().find(|m| m.plan.name == name).unwrap();
    assert_eq!(mine.plan.action, Action::Reload, "{:?}", mine.plan.changes);
    let io = b.io(&name).unwrap();
    assert_eq!((io.queued, io.failed), (5, 0), "SIGHUP reload: {io:?}");

    // dev_loss_tmo removes one path: a reload without it, still no path
    let gone = e.map_view_of(&name).unwrap().groups[0].paths[0].dev.clone();
    lab.sim.remove_device(&gone).unwrap();
    let r = e.on_uevents(vec![uevent("remove", &gone)]).unwrap();
    assert_eq!(r.maps[0].plan.action, Action::Reload);
    let io = b.io(&name).unwrap();
    assert_eq!((io.queued, io.failed), (5, 0), "removal reload: {io:?}");

    // host0 comes back, the removed path is re-added: the reload brings it in and the
    // queued I/O goes out on it
    let added = lab.sim.host_up("host0").unwrap();
    for d in &failing {
        b.set_failing(*d, false).unwrap();
    }
    let r = e
        .on_uevents(added.iter().map(|d| uevent("add", d)).collect())
        .unwrap();
    assert!(
        r.maps
            .iter()
            .any(|m| m.plan.name == name && m.plan.action == Action::Reload)
    );
    assert_eq!(
        b.io(&name).unwrap(),
        dm_tables::SimIo {
            queued: 0,
            completed: 5,
            failed: 0
        }
    );
}

/// Issue 12 item 2: after the `no_path_retry N` countdown switched queueing off, a reload
/// with every path still down (a path removed, a SIGHUP) does not bring queueing back, so
/// I/O keeps failing instead of hanging; the next outage counts down afresh.
#[test]
fn no_path_retry_stays_off_after_reloads_and_counts_down_again_next_outage() {
    let mut lab = Lab::new();
    let clock = Arc::new(ManualClock::new());
    let cfg = "[overrides]\nno_path_retry = 2\n";
    let mut e = lab.engine_with_file(cfg, clock.clone());
    e.sync().unwrap();
    e.check_all_now().unwrap();
    let name = e.map_names()[0].clone();
    let failing = lab.all_paths_down(&e);
    e.check_all_now().unwrap();
    let b = lab.backend();
    assert_eq!(b.submit_io(&name, 3).unwrap().queued, 3);
    clock.advance(std::time::Duration::from_secs(11));
    e.tick_queueing().unwrap();
    assert_eq!(b.io(&name).unwrap().failed, 3, "the countdown ran out");

    // a path is removed: reload with every path down
    let gone = e.map_view_of(&name).unwrap().groups[0].paths[0].dev.clone();
    lab.sim.remove_device(&gone).unwrap();
    e.on_uevents(vec![uevent("remove", &gone)]).unwrap();
    clock.advance(std::time::Duration::from_secs(30));
    e.tick_queueing().unwrap();
    assert!(
        !b.table(&name)
            .unwrap()
            .has_feature(&dm_tables::Feature::QueueIfNoPath),
        "{}",
        b.table_line(&name).unwrap()
    );
    assert_eq!(
        b.submit_io(&name, 1).unwrap().failed,
        4,
        "fails, does not hang"
    );

    // SIGHUP with a table change, every path still down
    let cfg2 = format!("{cfg}path_selector = \"round-robin 0\"\n");
    lab.write_config(&cfg2);
    e.reconfigure().unwrap();
    clock.advance(std::time::Duration::from_secs(30));
    e.tick_queueing().unwrap();
    assert_eq!(
        b.submit_io(&name, 1).unwrap().failed,
        5,
        "fails after a SIGHUP too"
    );

    // a path returns: queueing back on; the next outage queues, then fails after 2 intervals
    let added = lab.sim.host_up("host0").unwrap();
    for d in &failing {
        b.set_failing(*d, false).unwrap();
    }
    e.on_uevents(added.iter().map(|d| uevent("add", d)).collect())
        .unwrap();
    e.check_all_now().unwrap();
    assert!(b.status(&name).unwrap().groups.iter().any(|g| {
        g.paths
            .iter()
            .any(|p| p.state == dm_tables::PathState::Active)
    }));
    assert!(
        b.table(&name)
            .unwrap()
            .has_feature(&dm_tables::Feature::QueueIfNoPath)
    );
    lab.sim.host_down("host0").unwrap();
    for p in e.paths() {
        b.set_failing(multipathd_rs::discovery::dm_devno(p.devno.unwrap()), true)
            .unwrap();
    }
    e.check_all_now().unwrap();
    assert_eq!(b.submit_io(&name, 1).unwrap().queued, 1, "queues again");
    clock.advance(std::time::Duration::from_secs(9));
    e.tick_queueing().unwrap();
    assert_eq!(b.io(&name).unwrap().queued, 1, "still counting down");
    clock.advance(std::time::Duration::from_secs(2));
    e.tick_queueing().unwrap();
    assert_eq!(
        b.io(&name).unwrap().failed,
        6,
        "fails again after 2 intervals"
    );
}

/// Overwrites a path's capacity in the simulated sysfs (512-byte sectors).
fn set_size(lab: &Lab, dev: &str, sectors: u64) {
    std::fs::write(
        lab.sim.root.join("block").join(dev).join("size"),
        format!("{sectors}\n"),
    )
    .unwrap();
}

/// Issue 12 item 3: a live map's size changes only by `resize map`; a path reporting another
/// size (stale, smaller, 0) is left out and reported; a new LUN with one size-0 path is
/// still built on the others.
#[test]
fn a_live_map_never_shrinks_and_odd_sized_paths_are_left_out() {
    let lab = Lab::new();
    let mut e = lab.engine();
    let first = e.plan_only().unwrap().maps[0].plan.desired.clone();
    let zero = first.groups[0].paths[0].dev.clone();
    set_size(&lab, &zero, 0);
    let r = e.sync().unwrap();
    let m = r
        .maps
        .iter()
        .find(|m| m.plan.desired.wwid == first.wwid)
        .unwrap();
    assert!(m.applied && m.plan.action == Action::Create, "{r:?}");
    assert_eq!(m.plan.desired.paths().count(), 3);
    assert_eq!(r.left_out.len(), 1, "{:?}", r.left_out);
    assert_eq!(r.left_out[0].dev, zero);
    assert!(r.errors.iter().any(|e| e.contains(&zero)), "{:?}", r.errors);

    // the live map: one path turns smaller, another reports 0; the map keeps its size
    let name = m.plan.name.clone();
    let size = e.map_view_of(&name).unwrap().size_sectors;
    let devs: Vec<String> = e
        .map_view_of(&name)
        .unwrap()
        .paths()
        .map(|p| p.dev.clone())
        .collect();
    set_size(&lab, &devs[0], size / 2);
    set_size(&lab, &devs[1], 0);
    set_size(&lab, &zero, size);
    let r = e
        .on_uevents(vec![
            uevent("change", &devs[0]),
            uevent("change", &devs[1]),
            uevent("change", &zero),
        ])
        .unwrap();
    let v = e.map_view_of(&name).unwrap();
    assert_eq!(v.size_sectors, size, "the guest's disk never shrinks");
    let mut left: Vec<&str> = r.left_out.iter().map(|l| l.dev.as_str()).collect();
    left.sort();
    let mut want = vec![devs[0].as_str(), devs[1].as_str()];
    want.sort();
    assert_eq!(left, want, "{:?}", r.left_out);
    assert!(
        r.left_out.iter().all(|l| l.reason.contains("resize map")),
        "{:?}",
        r.left_out
    );
    assert!(
        v.paths().any(|p| p.dev == zero),
        "the path that agrees again is taken back"
    );
    assert_eq!(v.path_count(), 2);
}

/// Issue 12 item 4: a changed alias never renames an open map (it would remove
/// /dev/mapper/<old> under the guest); the rename is reported pending until the admin forces
/// it, or the map is closed.
#[test]
fn an_open_map_is_renamed_only_when_forced() {
    let lab = Lab::new();
    let clock = Arc::new(ManualClock::new());
    let mut e = lab.engine_with_file("", clock);
    e.sync().unwrap();
    let v = e.map_view_of("mpatha").unwrap();
    let b = lab.backend();
    b.open("mpatha").unwrap();
    lab.write_config(&format!(
        "[[multipaths]]\nwwid = \"{}\"\nalias = \"db01\"\n",
        v.wwid
    ));
    let r = e.reconfigure().unwrap();
    assert!(e.map_names().contains(&"mpatha".to_string()), "{r:?}");
    assert!(b.info("db01").is_err());
    assert_eq!(r.pending_renames.len(), 1, "{r:?}");
    assert_eq!(r.pending_renames[0].new_name, "db01");
    assert_eq!(e.pending_renames().len(), 1);
    assert_eq!(
        e.map_view_of("mpatha").unwrap().action,
        Some(multipathd_rs::state::MapAction::Rename),
        "show maps tells"
    );
    // still pending at the next sync
    e.sync().unwrap();
    assert!(b.info("mpatha").is_ok());
    // the admin forces it
    let r = e.force_rename("mpatha").unwrap();
    assert!(
        r.maps.iter().any(|m| m.applied && m.plan.name == "db01"),
        "{r:?}"
    );
    assert!(b.info("db01").is_ok());
    assert!(e.pending_renames().is_empty());
    assert_eq!(e.map_view_of("db01").unwrap().action, None);
}

/// Issue 12 item 12: when paths of a live map start reporting another WWID (here page 0x83
/// became unreadable and page 0x80 answers), they are not put in a second map on the same
/// devices; the change is reported.
#[test]
fn a_path_held_by_a_map_is_never_put_in_a_second_one() {
    let lab = Lab::new();
    let clock = Arc::new(ManualClock::new());
    let mut e = lab.engine_with_file("[defaults]\nfind_multipaths = \"no\"\n", clock);
    e.sync().unwrap();
    let before = e.map_names();
    let v = e.map_view_of("mpatha").unwrap();
    let devs: Vec<String> = v.paths().map(|p| p.dev.clone()).collect();
    for d in &devs[..2] {
        std::fs::remove_file(lab.sim.root.join("block").join(d).join("device/vpd_pg83")).unwrap();
    }
    let r = e
        .on_uevents(devs[..2].iter().map(|d| uevent("change", d)).collect())
        .unwrap();
    let new_wwids: Vec<String> = e
        .paths()
        .iter()
        .filter(|p| devs[..2].contains(&p.dev))
        .map(|p| p.wwid.clone().unwrap())
        .collect();
    assert!(new_wwids.iter().all(|w| *w != v.wwid), "{new_wwids:?}");
    assert_eq!(e.map_names(), before, "no second map: {r:?}");
    assert!(
        r.maps.iter().all(|m| m.plan.action != Action::Create),
        "{:?}",
        r.maps
    );
    let held: Vec<&str> = r
        .left_out
        .iter()
        .filter(|l| l.map.as_deref() == Some("mpatha"))
        .map(|l| l.dev.as_str())
        .collect();
    assert_eq!(held.len(), 2, "{:?}", r.left_out);
    assert!(
        r.errors.iter().any(|e| e.contains("second map")),
        "{:?}",
        r.errors
    );
    // every device is in at most one map
    let mut seen = std::collections::HashSet::new();
    for m in lab.backend().list().unwrap() {
        for d in lab.backend().table(&m.name).unwrap().devnos() {
            assert!(seen.insert(d), "{d} in two maps");
        }
    }
}

#[test]
fn due_checks_hand_out_only_what_the_pool_takes_and_never_twice() {
    let lab = Lab::new();
    let mut e = lab.engine();
    e.sync().unwrap();
    let members = e.scheduler().len();
    assert!(members >= 4, "{members}");
    // Every member is due after the sync; the pool has room for 3.
    let (first, left) = e.due_checks_up_to(3);
    assert_eq!((first.len(), left), (3, members - 3));
    assert!(
        first
            .iter()
            .all(|(_, t)| t.sg_node.is_none() && t.sysfs_root.is_some()),
        "targets are completed by the worker, not here"
    );
    // Handed-out paths are not due again while their check runs; the rest still are.
    let (rest, left) = e.due_checks_up_to(usize::MAX);
    assert_eq!((rest.len(), left), (members - 3, 0));
    let handed: Vec<&str> = first.iter().map(|(_, t)| t.dev.as_str()).collect();
    assert!(rest.iter().all(|(_, t)| !handed.contains(&t.dev.as_str())));
    assert!(e.due_checks_up_to(usize::MAX).0.is_empty());
    // A result reschedules the path normally.
    let devs: Vec<String> = first.iter().map(|(_, t)| t.dev.clone()).collect();
    e.check_paths_now(&devs).unwrap();
    assert!(e.due_checks().is_empty());
}

#[test]
fn a_full_scan_does_not_hide_a_state_move_from_the_checker() {
    let mut lab = Lab::new();
    let mut e = lab.engine();
    e.sync().unwrap();
    e.check_all_now().unwrap();
    assert!(e.due_checks().is_empty());
    let dev = e.paths()[1].dev.clone();
    lab.sim.set_state(&dev, "offline").unwrap();
    // A reconcile (or rescan) reads the new state before the sweep does.
    e.sync().unwrap();
    assert!(e.state_sweep().is_empty(), "the sweep sees nothing new");
    let due: Vec<String> = e.due_checks().into_iter().map(|(_, t)| t.dev).collect();
    assert_eq!(due, std::slice::from_ref(&dev), "the scan made it due");
}

#[test]
fn a_lost_hba_is_failed_in_one_batch_with_one_message_per_path() {
    let mut lab = Lab::new();
    let mut e = lab.engine();
    e.sync().unwrap();
    e.check_all_now().unwrap();
    lab.sim.host_down("host1").unwrap();
    let moved = e.state_sweep();
    assert!(!moved.is_empty());
    let results: Vec<_> = e
        .due_checks()
        .into_iter()
        .map(|(c, t)| {
            let r = c.check(&t);
            (t.dev, r)
        })
        .collect();
    assert_eq!(results.len(), moved.len());
    let out = e.apply_check_results(results);
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    let fails: Vec<&str> = out
        .sent
        .iter()
        .filter(|s| s.message.starts_with("fail_path"))
        .map(|s| s.message.as_str())
        .collect();
    assert_eq!(fails.len(), moved.len(), "{:?}", out.sent);
    // The kernel (sim) agrees: exactly the moved paths are failed, every map keeps a path.
    let b = lab.backend();
    let mut failed = 0;
    for m in b.list().unwrap() {
        let s = b.status(&m.name).unwrap();
        let paths: Vec<_> = s.groups.iter().flat_map(|g| g.paths.iter()).collect();
        failed += paths
            .iter()
            .filter(|p| p.state == dm_tables::PathState::Failed)
            .count();
        assert!(
            paths
                .iter()
                .any(|p| p.state == dm_tables::PathState::Active),
            "{} lost every path",
            m.name
        );
    }
    assert_eq!(failed, moved.len());
    // A second batch of the same verdicts sends nothing.
    let again: Vec<_> = moved
        .iter()
        .map(|d| {
            (
                d.clone(),
                multipathd_rs::checker::CheckResult::new(
                    multipathd_rs::checker::CheckState::Down,
                    "still down",
                ),
            )
        })
        .collect();
    assert!(e.apply_check_results(again).sent.is_empty());
}

#[test]
fn forgetting_a_path_keeps_the_other_paths_reachable() {
    let mut lab = Lab::new();
    let mut e = lab.engine();
    e.sync().unwrap();
    let devs: Vec<String> = e.paths().iter().map(|p| p.dev.clone()).collect();
    let gone = devs[0].clone();
    lab.sim.remove_device(&gone).unwrap();
    let ev = uevent("remove", &gone);
    let _ = e.on_uevents(vec![ev]);
    assert!(e.paths().iter().all(|p| p.dev != gone));
    // Every other path is still found by name (its index moved down by one).
    for d in &devs[1..] {
        let sent = e.fail_path(d);
        assert!(sent.is_ok(), "{d}: {sent:?}");
        e.reinstate_path(d).unwrap();
    }
}

/// A backend on the lab's sim state whose map `odd` shows a table that is not a multipath
/// one (as a map whose table was wiped to `error` does on the kernel).
struct OddTable {
    inner: SimBackend,
    odd: String,
}

impl Hooks for OddTable {
    fn inner(&self) -> &dyn DmBackend {
        &self.inner
    }
    fn table_line(&self, name: &str) -> dm_tables::Result<String> {
        if name == self.odd {
            return Ok("0 16384 error".into());
        }
        self.inner.table_line(name)
    }
}

/// A map whose table is not multipath (lab scenario 22 met one left by a timed-out
/// scenario) is named and left alone; the daemon's start no longer fails as a whole. Positive
/// control: the same engine with a plain backend keeps every map.
#[test]
fn a_map_with_a_foreign_table_is_left_alone_and_the_others_go_on() {
    let lab = Lab::new();
    let first = lab.engine().sync().unwrap();
    let maps: Vec<String> = first.maps.iter().map(|m| m.plan.name.clone()).collect();
    assert!(maps.len() >= 2, "{maps:?}");
    let odd = maps[1].clone();
    let backend = OddTable {
        inner: lab.backend(),
        odd: odd.clone(),
    };
    let mut e = common::engine(
        lab.dir.path(),
        &lab.sim.root,
        Config::builtin(),
        Box::new(PassThrough(Arc::new(backend))),
        Arc::new(ManualClock::new()),
    );
    let r = e.sync().expect("one odd map must not fail the whole sync");
    assert!(
        r.errors
            .iter()
            .any(|x| x.contains(&odd) && x.contains("not a multipath table")),
        "{:?}",
        r.errors
    );
    assert!(
        !r.maps
            .iter()
            .any(|m| m.plan.desired.wwid.is_empty() || m.plan.name == odd)
    );
    let kept: Vec<_> = r.maps.iter().map(|m| m.plan.name.clone()).collect();
    assert_eq!(kept.len(), maps.len() - 1, "{kept:?}");
    assert!(r.maps.iter().all(|m| m.plan.error.is_none()));
    // Positive control: with the plain backend every map is planned again (kept).
    let again = lab.engine().sync().unwrap();
    assert_eq!(again.maps.len(), maps.len());
}

/// A new dm-mpath table starts with every path active (the sim copies the kernel here): a reload
/// of a map whose path the daemon holds failed fails it again at once. Failover grouping (one
/// path per group) makes the failed path's group move last, so the next sync reloads the map.
/// Control: the same table reloaded by hand, without the engine, shows the path active.
#[test]
fn a_reload_keeps_failed_the_paths_the_daemon_holds_failed() {
    let mut lab = Lab::new();
    let cfg = Config::parse_str(
        "[overrides]\npath_grouping_policy = \"failover\"\n",
        Path::new("test.toml"),
    )
    .unwrap();
    let mut e = lab.engine_with(cfg);
    e.sync().unwrap();
    e.check_all_now().unwrap();
    let dev = e.paths()[0].dev.clone();
    let dm_state = |e: &Engine| -> Vec<(String, PathDmState)> {
        e.maps_view()
            .iter()
            .flat_map(|m| {
                m.paths()
                    .filter(|p| p.dm_state != PathDmState::Active)
                    .map(|p| (p.dev.clone(), p.dm_state))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    lab.sim.set_state(&dev, "offline").unwrap();
    let sent = e.check_paths_now(std::slice::from_ref(&dev)).unwrap();
    assert!(
        sent.iter().any(|s| s.message.starts_with("fail_path")),
        "{sent:?}"
    );
    let r = e.sync().unwrap();
    let reloaded: Vec<_> = r
        .maps
        .iter()
        .filter(|m| m.plan.action == Action::Reload)
        .collect();
    assert_eq!(
        reloaded.len(),
        1,
        "the failed path's map is reloaded: {:?}",
        r.maps
    );
    assert!(
        reloaded[0]
            .messages
            .iter()
            .any(|m| m.starts_with("fail_path")),
        "{:?}",
        reloaded[0].messages
    );
    assert_eq!(dm_state(&e), [(dev.clone(), PathDmState::Failed)]);

    // control: the same table reloaded by hand comes up with the path active (what the
    // engine's re-fail above is for), and the engine's view would show it
    let map = reloaded[0].plan.name.clone();
    let b = lab.backend();
    b.reload(&map, &b.table(&map).unwrap()).unwrap();
    e.sync_wwids(&BTreeSet::from([reloaded[0].plan.desired.wwid.clone()]))
        .unwrap();
    assert_eq!(dm_state(&e), [], "the hand reload left {dev} active");
}

/// Where each path's record keeps its name (the record's own allocation).
fn record_addresses(e: &Engine) -> Vec<(String, usize)> {
    e.paths()
        .iter()
        .map(|p| (p.dev.clone(), p.dev.as_ptr() as usize))
        .collect()
}

#[test]
fn a_rescan_keeps_the_records_of_the_paths_it_finds_unchanged() {
    let mut lab = Lab::new();
    let mut e = lab.engine();
    e.sync().unwrap();
    let before = record_addresses(&e);
    // The rescan's scan is made while the old records live, so a swapped-in copy would sit
    // at other addresses.
    e.rescan().unwrap();
    assert_eq!(
        record_addresses(&e),
        before,
        "an unchanged rescan keeps every record"
    );
    // One path changes: only its record is replaced, the others stay where they were.
    let dev = e.paths()[1].dev.clone();
    lab.sim.set_state(&dev, "offline").unwrap();
    e.rescan().unwrap();
    let after = record_addresses(&e);
    assert_eq!(after.len(), before.len());
    for ((d, a), (_, b)) in after.iter().zip(&before) {
        if *d == dev {
            assert_ne!(a, b, "{d} changed: its record is the new one");
        } else {
            assert_eq!(a, b, "{d} did not change: its record stays");
        }
    }
    assert_eq!(
        e.paths().iter().find(|p| p.dev == dev).unwrap().state,
        "offline"
    );
}

/// The identity files of a simulated disk, moved aside (`hide`) or back: while hidden the
/// disk reads with no WWID, as a disk whose VPD pages the kernel has not read yet.
fn identity_files(lab: &Lab, dev: &str, hide: bool) {
    let p = lab.sim.paths.iter().find(|p| p.dev == dev).unwrap();
    let dir = lab.sim.root.join(p.dev_dir());
    for f in ["vpd_pg83", "vpd_pg80", "wwid"] {
        let (from, to) = (dir.join(f), dir.join(format!("{f}.hidden")));
        let (from, to) = if hide { (from, to) } else { (to, from) };
        if from.exists() {
            std::fs::rename(from, to).unwrap();
        }
    }
}

/// A new LUN's paths, added to the array and scanned (no event sent yet).
fn new_lun(lab: &mut Lab) -> Vec<String> {
    lab.sim.add_luns(0, 1).unwrap();
    let added = lab.sim.scan_all().unwrap();
    assert!(added.len() >= 3, "{added:?}");
    added
}

#[test]
fn a_disk_with_no_wwid_at_its_event_is_read_again_and_joins_its_map() {
    let mut lab = Lab::new();
    let clock = Arc::new(ManualClock::new());
    let mut e = lab.engine_full(Config::builtin(), None, clock.clone());
    e.sync().unwrap();
    let before = e.map_names().len();
    let added = new_lun(&mut lab);
    identity_files(&lab, &added[0], true);
    let r = e
        .on_uevents(added.iter().map(|d| uevent("add", d)).collect())
        .unwrap();
    // The other paths are not held up by the one that cannot be used yet.
    assert_eq!(r.changed(), 1, "{r:?}");
    assert_eq!(e.map_names().len(), before + 1);
    let name = r.maps[0].plan.name.clone();
    assert_eq!(e.map_view_of(&name).unwrap().path_count(), added.len() - 1);
    let queued: Vec<String> = e.retries().into_iter().map(|(d, ..)| d).collect();
    assert_eq!(queued, [added[0].clone()]);
    // `show status` says so.
    let st = e.status();
    assert_eq!(st.rereads.len(), 1, "{st:?}");
    assert_eq!(st.rereads[0].dev, added[0]);
    assert_eq!(st.rereads[0].attempt, 1);
    assert!(st.rereads[0].why.contains("no WWID"), "{st:?}");
    let text = multipathd_rs::output::status_text(&st);
    assert!(
        text.contains(&format!(
            "waiting to be read again: {} (re-read 1",
            added[0]
        )),
        "{text}"
    );
    // Not before its backoff.
    assert!(!e.retries_due());
    identity_files(&lab, &added[0], false);
    clock.advance(std::time::Duration::from_secs(1));
    assert!(e.retries_due());
    let r = e.run_due_retries().unwrap();
    assert_eq!(r.changed(), 1, "{r:?}");
    assert_eq!(r.maps[0].plan.action, Action::Reload);
    assert_eq!(e.map_view_of(&name).unwrap().path_count(), added.len());
    assert!(e.retries().is_empty(), "{:?}", e.retries());
    assert!(e.status().rereads.is_empty());
}

#[test]
fn a_new_map_the_kernel_refuses_is_tried_again_until_it_is_made() {
    let mut lab = Lab::new();
    let clock = Arc::new(ManualClock::new());
    let mut e = lab.engine_full(Config::builtin(), None, clock.clone());
    e.sync().unwrap();
    let before = e.map_names().len();
    // The kernel does not have the new disks yet: a table naming them is refused.
    let old = dm_tables::sim::devices_from_sysfs(&lab.sim.root).unwrap();
    let added = new_lun(&mut lab);
    lab.backend().set_devices(old).unwrap();
    let r = e
        .on_uevents(added.iter().map(|d| uevent("add", d)).collect())
        .unwrap();
    assert_eq!(r.changed(), 0, "{r:?}");
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert_eq!(e.map_names().len(), before);
    let mut queued: Vec<String> = e.retries().into_iter().map(|(d, ..)| d).collect();
    queued.sort();
    let mut want = added.clone();
    want.sort();
    assert_eq!(queued, want);
    // Still refused at the first re-read: queued again, further out.
    clock.advance(std::time::Duration::from_secs(1));
    let r = e.run_due_retries().unwrap();
    assert_eq!(r.changed(), 0);
    assert!(e.retries().iter().all(|(_, attempt, _)| *attempt == 2));
    clock.advance(std::time::Duration::from_secs(1));
    assert!(!e.retries_due(), "the second re-read waits 2 s");
    // The disks exist now.
    let all = dm_tables::sim::devices_from_sysfs(&lab.sim.root).unwrap();
    lab.backend().set_devices(all).unwrap();
    clock.advance(std::time::Duration::from_secs(1));
    let r = e.run_due_retries().unwrap();
    assert_eq!(r.changed(), 1, "{r:?}");
    assert_eq!(r.maps[0].plan.action, Action::Create);
    assert_eq!(e.map_names().len(), before + 1);
    assert!(e.retries().is_empty());
}
