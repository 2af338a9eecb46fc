#![allow(clippy::unwrap_used)]
//! Issue 18: maps are applied outside the engine lock and off the daemon loop's thread. A
//! backend wrapper holds one map's reload until the test lets it go (as a resume waiting for
//! a busy udevd does on the kernel); meanwhile a path of another map that its check finds
//! down is failed, a new LUN gets its map, and a path of the held map that goes down is
//! failed again in the new table once the reload is done.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Hooks, Lab, PassThrough};
use dm_tables::{DevNo, DmBackend, MapInfo, MultipathTable, PathState, SimBackend};
use multipathd_rs::clock::{Clock, ManualClock, SystemClock};
use multipathd_rs::config::Config;
use multipathd_rs::engine::Engine;
use multipathd_rs::socket;

/// The sim backend, except that a create or reload of the held map waits (before it
/// touches the map) until [`Gate::release`].
struct Gate {
    inner: SimBackend,
    held: Mutex<Option<String>>,
    entered: Mutex<Option<mpsc::Sender<String>>>,
    release: Mutex<Option<mpsc::Receiver<()>>>,
}

impl Gate {
    fn new() -> Arc<Gate> {
        Arc::new(Gate {
            inner: SimBackend::new(),
            held: Mutex::new(None),
            entered: Mutex::new(None),
            release: Mutex::new(None),
        })
    }

    /// Holds the next create or reload of `map`; returns (entered, release).
    fn hold(&self, map: &str) -> (mpsc::Receiver<String>, mpsc::Sender<()>) {
        let (etx, erx) = mpsc::channel();
        let (rtx, rrx) = mpsc::channel();
        *self.entered.lock().unwrap() = Some(etx);
        *self.release.lock().unwrap() = Some(rrx);
        *self.held.lock().unwrap() = Some(map.to_string());
        (erx, rtx)
    }

    fn wait_if_held(&self, name: &str) {
        let mine = self.held.lock().unwrap().as_deref() == Some(name);
        if !mine {
            return;
        }
        *self.held.lock().unwrap() = None;
        if let Some(tx) = self.entered.lock().unwrap().take() {
            let _ = tx.send(name.to_string());
        }
        let rx = self.release.lock().unwrap().take();
        if let Some(rx) = rx {
            let _ = rx.recv();
        }
    }
}

impl Hooks for Gate {
    fn inner(&self) -> &dyn DmBackend {
        &self.inner
    }
    fn create(&self, name: &str, uuid: &str, table: &MultipathTable) -> dm_tables::Result<MapInfo> {
        self.wait_if_held(name);
        self.inner.create(name, uuid, table)
    }
    fn reload(&self, name: &str, table: &MultipathTable) -> dm_tables::Result<()> {
        self.wait_if_held(name);
        self.inner.reload(name, table)
    }
}

impl Lab {
    /// A synced engine on `gate`: checks every second, a reconcile every second.
    fn engine(&self, gate: &Arc<Gate>, clock: Arc<dyn Clock>) -> Engine {
        let mut e = self.engine_unsynced(gate, clock);
        let r = e.sync().unwrap();
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(e.map_names().len(), 4);
        e
    }

    /// [`Lab::engine`] before its first sync (a daemon's cold start).
    fn engine_unsynced(&self, gate: &Arc<Gate>, clock: Arc<dyn Clock>) -> Engine {
        let config = Config::parse_str(
            "[defaults]\npolling_interval = 1\nmax_polling_interval = 1\nreconcile_interval = 1\n",
            Path::new("test.toml"),
        )
        .unwrap();
        let backend = Box::new(PassThrough(Arc::clone(gate)));
        common::engine(self.dir.path(), &self.sim.root, config, backend, clock)
    }
}

/// Map name and WWID holding `dev`, and the path's device number.
fn where_is(e: &Engine, dev: &str) -> (String, String, DevNo) {
    let p = e.paths_view().into_iter().find(|p| p.dev == dev).unwrap();
    let devno = DevNo::new(p.devno.major, p.devno.minor);
    let m = e
        .maps_view()
        .into_iter()
        .find(|m| {
            m.groups
                .iter()
                .any(|g| g.paths.iter().any(|p| p.dev == dev))
        })
        .unwrap();
    (m.name, m.wwid, devno)
}

/// Every path of each map, by map name.
fn paths_by_map(e: &Engine) -> HashMap<String, Vec<String>> {
    e.maps_view()
        .into_iter()
        .map(|m| {
            let devs = m
                .groups
                .iter()
                .flat_map(|g| g.paths.iter().map(|p| p.dev.clone()))
                .collect();
            (m.name, devs)
        })
        .collect()
}

fn dm_state(b: &dyn DmBackend, map: &str, devno: DevNo) -> Option<PathState> {
    b.status(map).ok()?.path(devno).map(|p| p.state)
}

/// Polls `ok` until it holds; fails naming `what` after a generous bound (a hang, not a
/// speed limit: on the old code these never happen at all).
fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < Duration::from_secs(30), "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn while_a_reload_is_held_failover_and_new_maps_go_on() {
    let mut lab = Lab::new();
    let gate = Gate::new();
    let e = lab.engine(&gate, Arc::new(SystemClock));
    let by_map = paths_by_map(&e);
    let mut names: Vec<&String> = by_map.keys().collect();
    names.sort();
    let (a, b) = (names[0].clone(), names[1].clone());
    let a_gone = by_map[&a][0].clone();
    let a_late = by_map[&a][1].clone();
    let b_down = by_map[&b][0].clone();
    let (_, _, a_gone_devno) = where_is(&e, &a_gone);
    let (_, _, a_late_devno) = where_is(&e, &a_late);
    let (_, _, b_devno) = where_is(&e, &b_down);
    let handle =
        common::start_daemon(e, lab.dir.path().join("sock"), Duration::from_millis(50)).unwrap();
    let backend: &dyn DmBackend = &gate.inner;

    // A path of map A is gone: the next reconcile reloads A without it, and that reload
    // is held.
    let (entered, release) = gate.hold(&a);
    lab.sim.remove_device(&a_gone).unwrap();
    entered
        .recv_timeout(Duration::from_secs(30))
        .expect("the reconcile reloads map A");

    // (a) Map B's path is found down by its check (ALUA unavailable: the sweep, which
    // reads only the SCSI state, does not see it): failed while A's reload waits.
    lab.sim.set_access_state(&b_down, "unavailable").unwrap();
    eventually("B's path failed while A's reload is held", || {
        dm_state(backend, &b, b_devno) == Some(PathState::Failed)
    });
    // ... and a new LUN gets its map.
    lab.sim.add_luns(0, 1).unwrap();
    let added = lab.sim.scan_all().unwrap();
    assert!(!added.is_empty());
    eventually(
        "the new LUN's map is created while A's reload is held",
        || backend.list_multipath().unwrap().len() == 5,
    );

    // (b) A path of the held map goes down meanwhile: failed in the live (old) table.
    lab.sim.set_access_state(&a_late, "unavailable").unwrap();
    eventually("A's path failed in the old table", || {
        dm_state(backend, &a, a_late_devno) == Some(PathState::Failed)
    });
    assert!(
        dm_state(backend, &a, a_gone_devno).is_some(),
        "the held reload has not happened yet"
    );
    release.send(()).unwrap();
    eventually("A reloaded without the gone path", || {
        backend.status(&a).is_ok() && dm_state(backend, &a, a_gone_devno).is_none()
    });
    eventually("A's late path failed in the new table", || {
        dm_state(backend, &a, a_late_devno) == Some(PathState::Failed)
    });
    handle.stop().unwrap();
}

#[test]
fn a_path_that_fails_while_its_map_is_loaded_is_failed_again_when_the_apply_is_booked() {
    // The same window, step by step on the engine (no threads): plan under the "lock",
    // a check fails a path in the live table, the apply loads a fresh table (every path
    // active but the plan's own down list), and booking the apply fails the path again.
    let mut lab = Lab::new();
    let gate = Gate::new();
    let clock = Arc::new(ManualClock::new());
    let mut e = lab.engine(&gate, clock);
    let backend = e.shared_backend();
    let by_map = paths_by_map(&e);
    let mut names: Vec<&String> = by_map.keys().collect();
    names.sort();
    let a = names[0].clone();
    let gone = by_map[&a][0].clone();
    let late = by_map[&a][1].clone();
    let (_, wwid, late_devno) = where_is(&e, &late);
    e.defer_applies();
    // `del path`: the map is re-planned without the path (daemon mode: planned only).
    let r = e.del_path(&gone).unwrap();
    assert_eq!(r.maps.len(), 1, "{r:?}");
    assert_eq!(r.changed(), 0, "planned, not applied yet: {r:?}");
    let jobs = e.take_jobs();
    assert_eq!(jobs.len(), 1);
    // While the job waits: a second request for the same map is coalesced, not planned.
    assert!(
        e.sync_wwids(&BTreeSet::from([wwid.clone()]))
            .unwrap()
            .maps
            .is_empty()
    );
    assert!(
        e.take_jobs().is_empty(),
        "no second plan while one is in flight"
    );
    lab.sim.set_access_state(&late, "unavailable").unwrap();
    e.check_paths_now(std::slice::from_ref(&late)).unwrap();
    assert_eq!(
        dm_state(backend.as_ref(), &a, late_devno),
        Some(PathState::Failed)
    );
    let done = jobs.into_iter().next().unwrap().apply(backend.as_ref());
    assert_eq!(
        dm_state(backend.as_ref(), &a, late_devno),
        Some(PathState::Active),
        "the fresh table has the path active (the window this test is about)"
    );
    let r = e.finish_job(done).unwrap();
    assert_eq!(r.changed(), 1, "{r:?}");
    assert_eq!(
        dm_state(backend.as_ref(), &a, late_devno),
        Some(PathState::Failed),
        "failed again when the apply was booked"
    );
    // The coalesced request is planned now, from fresh state.
    let again = e.plan_wanted();
    assert_eq!(again.len(), 1);
    assert!(e.applies_idle() || !e.take_jobs().is_empty());
}

#[test]
fn while_the_initial_sync_waits_a_new_lun_gets_its_map_and_ready_waits_for_it() {
    // A cold start whose first create waits (on the kernel: its resume waiting for a busy
    // udevd): the daemon's loop already runs, so a LUN added meanwhile gets its map; the
    // daemon is ready (start returns, the socket answers) only once the initial sync is done.
    let mut lab = Lab::new();
    let gate = Gate::new();
    let e = lab.engine_unsynced(&gate, Arc::new(SystemClock));
    assert!(e.map_names().is_empty());
    let (entered, release) = gate.hold("mpatha");
    let (started_tx, started) = mpsc::channel();
    let socket = lab.dir.path().join("sock");
    let starter = std::thread::spawn({
        let socket = socket.clone();
        move || {
            let h = common::start_daemon(e, socket, Duration::from_millis(50));
            let _ = started_tx.send(());
            h
        }
    });
    entered
        .recv_timeout(Duration::from_secs(30))
        .expect("the initial sync creates mpatha");
    let backend: &dyn DmBackend = &gate.inner;
    let before = backend.list_multipath().unwrap().len();
    lab.sim.add_luns(0, 1).unwrap();
    assert!(!lab.sim.scan_all().unwrap().is_empty());
    // (the reconcile, every second here, finds the new LUN: uevents are off)
    eventually(
        "the new LUN's map is created while the initial sync waits",
        || backend.list_multipath().unwrap().len() > before,
    );
    assert!(
        backend.info("mpatha").is_err(),
        "the held create has not happened yet"
    );
    assert!(
        started.try_recv().is_err(),
        "ready before the initial sync was done"
    );
    let ask = || socket::request_line(&socket, "show maps", Duration::from_millis(300));
    assert!(
        ask().is_err(),
        "the socket answered before the initial sync was done"
    );
    release.send(()).unwrap();
    started
        .recv_timeout(Duration::from_secs(30))
        .expect("ready once the initial sync is done");
    let handle = starter.join().unwrap().unwrap();
    assert!(ask().unwrap().is_ok(), "the socket answers once ready");
    assert!(backend.info("mpatha").is_ok());
    assert_eq!(backend.list_multipath().unwrap().len(), 5);
    assert_eq!(handle.daemon().published().snapshot.maps.len(), 5);
    handle.stop().unwrap();
}
