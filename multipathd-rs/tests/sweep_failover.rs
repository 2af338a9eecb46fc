#![allow(clippy::unwrap_used)]
//! Issue 18: failover that never waits for the engine lock. The sweep thread
//! (`multipathd_rs::sweep`) reads every member path's SCSI state and fails a path that went
//! down straight through the backend, on the simulated SAN (a generated sysfs tree whose
//! `state` files are rewritten in place, as sysfs regenerates them) and the simulated
//! device-mapper (a fresh table starts with every path active, as the kernel's does).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Lab;
use dm_tables::{DevNo, DmBackend, PathState, SimBackend};
use multipathd_rs::clock::{Clock, ManualClock, SystemClock};
use multipathd_rs::config::Config;
use multipathd_rs::engine::Engine;
use multipathd_rs::sweep::{self, Member, Membership, SweepOptions};

impl Lab {
    /// A synced engine on the in-memory sim backend.
    fn engine(&self, clock: Arc<dyn Clock>) -> Engine {
        let backend = Box::new(SimBackend::new());
        let mut e = common::engine(
            self.dir.path(),
            &self.sim.root,
            Config::builtin(),
            backend,
            clock,
        );
        let r = e.sync().unwrap();
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(e.map_names().len(), 4);
        e
    }
}

/// The map holding `dev` and the path's device number.
fn where_is(e: &Engine, dev: &str) -> (String, DevNo) {
    let devno = e
        .paths_view()
        .into_iter()
        .find(|p| p.dev == dev)
        .unwrap()
        .devno;
    let devno = DevNo::new(devno.major, devno.minor);
    let map = e
        .maps_view()
        .into_iter()
        .find(|m| {
            m.groups
                .iter()
                .any(|g| g.paths.iter().any(|p| p.dev == dev))
        })
        .unwrap()
        .name;
    (map, devno)
}

/// Another path of the same map.
fn sibling(e: &Engine, dev: &str) -> String {
    let (map, _) = where_is(e, dev);
    e.maps_view()
        .into_iter()
        .find(|m| m.name == map)
        .unwrap()
        .groups
        .iter()
        .flat_map(|g| g.paths.iter())
        .map(|p| p.dev.clone())
        .find(|d| d != dev)
        .unwrap()
}

fn dm_state(b: &dyn DmBackend, map: &str, devno: DevNo) -> PathState {
    b.status(map).unwrap().path(devno).unwrap().state
}

fn no_wake() -> sweep::Wake {
    Box::new(|| {})
}

#[test]
fn a_path_that_goes_offline_is_failed_while_the_engine_lock_is_held() {
    let mut lab = Lab::new();
    let e = lab.engine(Arc::new(SystemClock));
    let backend = e.shared_backend();
    let dev = lab.sim.paths[0].dev.clone();
    let (map, devno) = where_is(&e, &dev);
    let handle =
        common::start_daemon(e, lab.dir.path().join("sock"), Duration::from_millis(200)).unwrap();
    assert_eq!(dm_state(backend.as_ref(), &map, devno), PathState::Active);
    {
        // The engine lock, held for the whole failover (as a long rescan or reload would).
        let held = handle.daemon().engine();
        assert!(held.sweep_attached(), "the daemon runs the sweep thread");
        lab.sim.set_state(&dev, "offline").unwrap();
        let t = Instant::now();
        while dm_state(backend.as_ref(), &map, devno) != PathState::Failed {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{dev} went offline but is still active in {map} after 10 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(held.status().sweep.direct_fails, 1);
        // Proof that the engine played no part: it still believes the path is running.
        let p = held.paths().iter().find(|p| p.dev == dev).unwrap();
        assert_eq!(p.state, "running");
    }
    // Released, the loop takes the sweep's news and the path's own check fails it too.
    let t = Instant::now();
    loop {
        {
            let e = handle.daemon().engine();
            let state = e
                .paths()
                .iter()
                .find(|p| p.dev == dev)
                .unwrap()
                .state
                .clone();
            if state == "offline" && e.last_check(&dev).is_some_and(|c| c.state.is_failed()) {
                break;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the engine never heard"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(dm_state(backend.as_ref(), &map, devno), PathState::Failed);
    handle.stop().unwrap();
}

#[test]
fn the_sweep_fails_offline_at_once_leaves_blocked_to_the_check_and_never_reinstates() {
    let mut lab = Lab::new();
    let mut e = lab.engine(Arc::new(ManualClock::new()));
    let backend = e.shared_backend();
    let (link, mut w) = sweep::worker(e.shared_backend(), SweepOptions::default(), no_wake());
    e.attach_sweep(link.clone());
    let dev = lab.sim.paths[0].dev.clone();
    let (map, devno) = where_is(&e, &dev);
    assert_eq!(w.pass(), 0, "nothing moved yet");
    // blocked: an FC remote port lost for at most fast_io_fail_tmo; the check decides.
    lab.sim.set_state(&dev, "blocked").unwrap();
    assert_eq!(w.pass(), 1);
    assert_eq!(dm_state(backend.as_ref(), &map, devno), PathState::Active);
    lab.sim.set_state(&dev, "transport-offline").unwrap();
    assert_eq!(w.pass(), 1);
    assert_eq!(dm_state(backend.as_ref(), &map, devno), PathState::Failed);
    assert_eq!(w.pass(), 0, "the same state read again is no move");
    lab.sim.set_state(&dev, "running").unwrap();
    assert_eq!(w.pass(), 1);
    assert_eq!(
        dm_state(backend.as_ref(), &map, devno),
        PathState::Failed,
        "the sweep never reinstates"
    );
    assert_eq!(link.stats().direct_fails, 1);
    // The engine takes the news (the latest state) and its check reinstates the path.
    assert_eq!(e.take_sweep_news(), vec![dev.clone()]);
    assert_eq!(
        e.paths().iter().find(|p| p.dev == dev).unwrap().state,
        "running"
    );
    e.check_paths_now(std::slice::from_ref(&dev)).unwrap();
    assert_eq!(dm_state(backend.as_ref(), &map, devno), PathState::Active);
}

#[test]
fn a_reload_racing_with_the_sweep_loads_the_swept_path_failed() {
    let mut lab = Lab::new();
    let mut e = lab.engine(Arc::new(ManualClock::new()));
    let backend = e.shared_backend();
    let (link, mut w) = sweep::worker(e.shared_backend(), SweepOptions::default(), no_wake());
    e.attach_sweep(link);
    let dev = lab.sim.paths[0].dev.clone();
    let other = sibling(&e, &dev);
    let (map, devno) = where_is(&e, &dev);
    let (_, other_devno) = where_is(&e, &other);
    lab.sim.set_state(&dev, "offline").unwrap();
    assert_eq!(w.pass(), 1);
    assert_eq!(dm_state(backend.as_ref(), &map, devno), PathState::Failed);
    // Control: a sibling goes offline too, but no pass reads it (nobody knows yet).
    lab.sim.set_state(&other, "offline").unwrap();
    // A reload behind the engine's back: the fresh table has every path active again.
    let mut t = backend.table(&map).unwrap();
    t.groups.reverse();
    backend.reload(&map, &t).unwrap();
    assert_eq!(dm_state(backend.as_ref(), &map, devno), PathState::Active);
    // The engine re-plans the map before it took the sweep's news.
    let wwid = e
        .maps_view()
        .into_iter()
        .find(|m| m.name == map)
        .unwrap()
        .wwid;
    let r = e.sync_wwids(&BTreeSet::from([wwid])).unwrap();
    assert_eq!(
        r.changed(),
        1,
        "the engine reloads the map to its plan: {r:?}"
    );
    assert_eq!(
        dm_state(backend.as_ref(), &map, devno),
        PathState::Failed,
        "the planner counts a path the sweep read down as unusable"
    );
    assert_eq!(
        dm_state(backend.as_ref(), &map, other_devno),
        PathState::Active,
        "control: a path nobody read down is loaded active"
    );
}

#[test]
fn paths_beyond_the_fd_budget_are_read_by_open_read_close_and_still_failed() {
    let mut lab = Lab::new();
    let mut e = lab.engine(Arc::new(ManualClock::new()));
    let backend = e.shared_backend();
    let opts = SweepOptions {
        max_open: Some(3),
        ..SweepOptions::default()
    };
    let (link, mut w) = sweep::worker(e.shared_backend(), opts, no_wake());
    e.attach_sweep(link.clone());
    assert_eq!(w.pass(), 0);
    let s = link.stats();
    assert_eq!((s.members, s.open_files, s.fallback), (16, 3, 13), "{s:?}");
    let members = link.membership();
    // One member read through its open file, one by open/read/close.
    for m in [&members.members[0], &members.members[15]] {
        lab.sim.set_state(&m.dev, "offline").unwrap();
    }
    assert_eq!(w.pass(), 2);
    for m in [&members.members[0], &members.members[15]] {
        assert_eq!(
            dm_state(backend.as_ref(), &m.map, m.devno),
            PathState::Failed
        );
    }
    assert_eq!(link.stats().direct_fails, 2);
    let text = multipathd_rs::output::status_text(&e.status());
    assert!(
        text.contains("3 files open, 13 read by open/read/close"),
        "{text}"
    );
}

#[test]
fn a_fail_for_a_map_that_is_gone_is_counted_and_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::write(&state, "running\n").unwrap();
    let (link, mut w) = sweep::worker(
        Arc::new(SimBackend::new()),
        SweepOptions::default(),
        no_wake(),
    );
    link.set_membership(Membership {
        members: vec![Member {
            dev: "sdx".into(),
            devno: DevNo::new(65, 112),
            map: "renamed-meanwhile".into(),
            state_file: state.clone(),
            known: "running".into(),
            port: None,
        }],
        ports: Vec::new(),
    });
    assert_eq!(w.pass(), 0);
    std::fs::write(&state, "offline\n").unwrap();
    assert_eq!(w.pass(), 1);
    let s = link.stats();
    assert_eq!((s.gone, s.direct_fails, s.fail_errors), (1, 0, 0), "{s:?}");
    assert_eq!(
        link.take_news(),
        vec![("sdx".to_string(), "offline".to_string())]
    );
    assert!(link.take_news().is_empty());
}

/// The failover benchmark's HBA loss left about 100 of 16,384 paths reinstated while offline:
/// a check that started before the device went offline answered "up" after the sweep thread
/// had failed the path. A path whose SCSI device is known down is never reinstated; control:
/// the same late "up" for a path whose device is running again reinstates it.
#[test]
fn a_late_up_from_a_check_older_than_the_offline_never_reinstates() {
    use multipathd_rs::checker::{CheckResult, CheckState};
    let mut lab = Lab::new();
    let mut e = lab.engine(Arc::new(ManualClock::new()));
    let backend = e.shared_backend();
    let (link, mut w) = sweep::worker(e.shared_backend(), SweepOptions::default(), no_wake());
    e.attach_sweep(link);
    let dev = lab.sim.paths[0].dev.clone();
    let (map, devno) = where_is(&e, &dev);
    lab.sim.set_state(&dev, "offline").unwrap();
    assert_eq!(w.pass(), 1);
    assert_eq!(dm_state(backend.as_ref(), &map, devno), PathState::Failed);
    let late_up = || {
        vec![(
            dev.clone(),
            CheckResult::new(CheckState::Up, "started before"),
        )]
    };
    // before the engine took the news, and after
    e.apply_check_results(late_up());
    assert_eq!(dm_state(backend.as_ref(), &map, devno), PathState::Failed);
    e.take_sweep_news();
    e.apply_check_results(late_up());
    assert_eq!(dm_state(backend.as_ref(), &map, devno), PathState::Failed);
    // control: running again, an "up" reinstates it
    lab.sim.set_state(&dev, "running").unwrap();
    assert_eq!(w.pass(), 1);
    e.take_sweep_news();
    e.apply_check_results(late_up());
    assert_eq!(dm_state(backend.as_ref(), &map, devno), PathState::Active);
}

#[test]
fn a_lost_hba_is_read_through_its_remote_ports_before_the_full_pass() {
    let mut lab = Lab::new();
    let e = lab.engine(Arc::new(ManualClock::new()));
    let backend = e.shared_backend();
    let (link, mut w) = sweep::worker(e.shared_backend(), SweepOptions::default(), no_wake());
    let mut e = e;
    e.attach_sweep(link.clone());
    assert_eq!(w.pass(), 0);
    assert_eq!(w.tick(), 0, "every port Online: nothing read early");
    assert_eq!(link.stats().ports, 4, "2 HBAs x 2 target ports");
    // Control: one path offline behind an Online port is the full pass's to see, not the tick's.
    let lone = lab.sim.paths[0].dev.clone();
    lab.sim.set_state(&lone, "offline").unwrap();
    assert_eq!(w.tick(), 0);
    assert_eq!(w.pass(), 1);
    // The HBA of another path is lost: its remote ports go Blocked, its devices
    // transport-offline. One tick reads and fails them all, with no full pass.
    let host = lab
        .sim
        .paths
        .iter()
        .find(|p| p.hctl.host != lab.sim.paths[0].hctl.host)
        .unwrap()
        .hctl
        .host;
    let lost: Vec<String> = lab
        .sim
        .present_paths()
        .filter(|p| p.hctl.host == host)
        .map(|p| p.dev.clone())
        .collect();
    assert_eq!(lost.len(), 8);
    let passes = link.stats().passes;
    lab.sim.host_down(&format!("host{host}")).unwrap();
    assert_eq!(w.tick(), 8);
    assert_eq!(link.stats().passes, passes, "no full pass ran");
    assert_eq!(link.stats().early_reads, 1);
    for dev in &lost {
        let (map, devno) = where_is(&e, dev);
        assert_eq!(
            dm_state(backend.as_ref(), &map, devno),
            PathState::Failed,
            "{dev}"
        );
    }
    // Every member of the blocked ports is now known down: later ticks read nothing.
    assert_eq!(w.tick(), 0);
    assert_eq!(link.stats().early_reads, 1);
    let text = multipathd_rs::output::status_text(&e.status());
    assert!(
        text.contains("4 transport ports watched, 1 early reads"),
        "{text}"
    );
}
