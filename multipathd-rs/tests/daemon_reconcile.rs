#![allow(clippy::unwrap_used)]
//! Issue 12 item 5: lost uevents are caught up. The daemon's event loop runs on a generated
//! sysfs tree with the simulated device-mapper and a manual clock; paths are removed and
//! LUNs added in the tree without any event, and the periodic reconcile repairs the maps. A
//! scripted uevent feed reports a receive-buffer overrun (ENOBUFS), after which the loop
//! resyncs at once. Controls: with the reconcile off and no overrun, nothing is repaired.

mod common;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dm_tables::SimBackend;
use lun_scan::topology::Sim;
use multipathd_rs::Error;
use multipathd_rs::clock::{Clock, ManualClock};
use multipathd_rs::config::Config;
use multipathd_rs::daemon::{EventLoop, Reconcile};
use multipathd_rs::engine::Engine;
use multipathd_rs::uevent::{Uevent, UeventFeed};

struct Lab {
    dir: tempfile::TempDir,
    sim: Sim,
    clock: Arc<ManualClock>,
}

impl Lab {
    fn new() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let sim = common::dual_hba(dir.path());
        Lab {
            dir,
            sim,
            clock: Arc::new(ManualClock::new()),
        }
    }

    /// A synced engine whose configuration sets `reconcile_interval`.
    fn engine(&self, reconcile_interval: u32) -> Engine {
        let config = Config::parse_str(
            &format!("[defaults]\nreconcile_interval = {reconcile_interval}\n"),
            Path::new("test.toml"),
        )
        .unwrap();
        assert_eq!(config.global().reconcile_interval.value, reconcile_interval);
        let backend = SimBackend::open_file(self.dir.path().join("dm.json"), None).unwrap();
        let mut e = common::engine(
            self.dir.path(),
            &self.sim.root,
            config,
            Box::new(backend),
            self.clock.clone(),
        );
        let r = e.sync().unwrap();
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(e.map_names().len(), 4);
        e
    }

    fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }
}

/// Which map holds `dev`, and how many paths that map has now.
fn holder(e: &Engine, dev: &str) -> Option<(String, usize)> {
    e.maps_view()
        .into_iter()
        .find(|m| {
            m.groups
                .iter()
                .any(|g| g.paths.iter().any(|p| p.dev == dev))
        })
        .map(|m| (m.name.clone(), m.path_count()))
}

/// A uevent feed that plays back what it was given, one drain at a time.
struct Scripted(VecDeque<(Vec<Uevent>, Vec<Error>)>);

impl UeventFeed for Scripted {
    fn drain(&mut self) -> (Vec<Uevent>, Vec<Error>) {
        self.0.pop_front().unwrap_or_default()
    }
}

fn overrun() -> Error {
    Error::UeventSocket {
        operation: "recvfrom",
        source: nix::errno::Errno::ENOBUFS,
    }
}

#[test]
fn the_periodic_reconcile_repairs_a_lost_remove_and_a_lost_add() {
    let mut lab = Lab::new();
    let mut e = lab.engine(60);
    let mut lp = EventLoop::new(lab.clock(), None);
    let dev = lab.sim.paths[0].dev.clone();
    let (map, before) = holder(&e, &dev).unwrap();
    assert_eq!(before, 4);
    let devno = e
        .paths_view()
        .into_iter()
        .find(|p| p.dev == dev)
        .unwrap()
        .devno
        .to_string();

    // The path goes; its `remove` uevent never arrives.
    lab.sim.remove_device(&dev).unwrap();
    lab.clock.advance(Duration::from_secs(30));
    assert_eq!(lp.step(&mut e, lab.clock.now()), None, "not due yet");
    assert_eq!(
        holder(&e, &dev),
        Some((map.clone(), 4)),
        "still believed there"
    );
    lab.clock.advance(Duration::from_secs(31));
    assert_eq!(lp.step(&mut e, lab.clock.now()), Some(Reconcile::Periodic));
    assert_eq!(holder(&e, &dev), None, "the lost remove is repaired");
    assert_eq!(e.map_view_of(&map).unwrap().path_count(), 3);
    let table = e.backend().table_line(&map).unwrap();
    assert!(
        !table.contains(&format!(" {devno} ")),
        "{table} still has {devno}"
    );

    // A new LUN shows up; its `add` uevents never arrive.
    lab.sim.add_luns(0, 1).unwrap();
    let added = lab.sim.scan_all().unwrap();
    assert!(!added.is_empty());
    assert_eq!(
        lp.step(&mut e, lab.clock.now()),
        None,
        "the interval starts over"
    );
    assert_eq!(e.map_names().len(), 4);
    lab.clock.advance(Duration::from_secs(60));
    assert_eq!(lp.step(&mut e, lab.clock.now()), Some(Reconcile::Periodic));
    assert_eq!(e.map_names().len(), 5, "the lost add is repaired");
    assert!(holder(&e, &added[0]).is_some());
}

#[test]
fn with_the_reconcile_off_a_lost_remove_stays_unseen() {
    // Control for the test above: the oracle does see a stale path.
    let mut lab = Lab::new();
    let mut e = lab.engine(0);
    let mut lp = EventLoop::new(lab.clock(), None);
    let dev = lab.sim.paths[0].dev.clone();
    lab.sim.remove_device(&dev).unwrap();
    for _ in 0..3 {
        lab.clock.advance(Duration::from_secs(3600));
        assert_eq!(lp.step(&mut e, lab.clock.now()), None);
    }
    assert_eq!(holder(&e, &dev).map(|h| h.1), Some(4));
}

#[test]
fn an_overrun_resyncs_at_once() {
    let mut lab = Lab::new();
    // Periodic reconcile off: only the overrun can repair anything.
    let mut e = lab.engine(0);
    let feed = Scripted(VecDeque::from([
        (Vec::new(), Vec::new()),
        (Vec::new(), vec![overrun()]),
    ]));
    let mut lp = EventLoop::new(lab.clock(), Some(Box::new(feed)));
    let dev = lab.sim.paths[0].dev.clone();
    lab.sim.remove_device(&dev).unwrap();
    assert_eq!(lp.step(&mut e, lab.clock.now()), None);
    assert!(holder(&e, &dev).is_some());
    // The socket reports ENOBUFS: resync in this very step, without the clock moving.
    assert_eq!(lp.step(&mut e, lab.clock.now()), Some(Reconcile::Overrun));
    assert_eq!(holder(&e, &dev), None);
    assert_eq!(lp.step(&mut e, lab.clock.now()), None, "once, not forever");
}

#[test]
fn other_uevent_errors_do_not_resync() {
    let mut lab = Lab::new();
    let mut e = lab.engine(0);
    let malformed = Error::MalformedUevent {
        reason: "no DEVPATH".into(),
        head: "add@/devices/x".into(),
    };
    let socket = Error::UeventSocket {
        operation: "recvfrom",
        source: nix::errno::Errno::EINTR,
    };
    let feed = Scripted(VecDeque::from([(Vec::new(), vec![malformed, socket])]));
    let mut lp = EventLoop::new(lab.clock(), Some(Box::new(feed)));
    let dev = lab.sim.paths[0].dev.clone();
    lab.sim.remove_device(&dev).unwrap();
    assert_eq!(lp.step(&mut e, lab.clock.now()), None);
    assert!(holder(&e, &dev).is_some());
}

#[test]
fn show_config_names_the_reconcile_interval_and_where_it_comes_from() {
    let builtin = Config::builtin().view().to_string();
    let line = builtin
        .lines()
        .find(|l| l.trim_start().starts_with("reconcile_interval"))
        .unwrap_or_else(|| panic!("{builtin}"));
    assert!(
        line.contains(" 300 ") && line.contains("built-in"),
        "{line}"
    );
    let set = Config::parse_str(
        "[defaults]\nreconcile_interval = 45\n",
        Path::new("/etc/x.toml"),
    )
    .unwrap();
    let json = set.view().to_json();
    assert_eq!(json["global"]["reconcile_interval"]["value"], 45, "{json}");
    let text = set.view().to_string();
    assert!(text.contains("/etc/x.toml"), "{text}");
    // Written back as TOML, it reads back the same.
    let again = Config::parse_str(
        &multipathd_rs::config::render_toml(&set),
        Path::new("/etc/y.toml"),
    )
    .unwrap();
    assert_eq!(again.global().reconcile_interval.value, 45);
}
