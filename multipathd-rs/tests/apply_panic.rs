#![allow(clippy::unwrap_used)]
//! A bug in the backend (a panic while one map is created) costs that map, not the daemon:
//! the map's apply is booked as failed with an error naming its WWID, the other maps are
//! made, and a command that syncs still answers. Before, the panic ended the apply's thread
//! without an answer, the map's WWID stayed "in flight" for good, and every command that
//! syncs waited for it forever.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Hooks, PassThrough};
use dm_tables::{DmBackend, MapInfo, MultipathTable, SimBackend};
use multipathd_rs::clock::SystemClock;
use multipathd_rs::config::Config;
use multipathd_rs::socket::{self, Command, Status};

/// The sim, except that its first create panics (before it touches the map).
struct PanicsOnce {
    inner: SimBackend,
    armed: AtomicBool,
    victim: std::sync::Mutex<Option<String>>,
}

impl Hooks for PanicsOnce {
    fn inner(&self) -> &dyn DmBackend {
        &self.inner
    }
    fn create(&self, name: &str, uuid: &str, t: &MultipathTable) -> dm_tables::Result<MapInfo> {
        if self.armed.swap(false, Ordering::SeqCst) {
            *self.victim.lock().unwrap() = Some(uuid.to_string());
            panic!("a bug in the backend while creating {name}");
        }
        self.inner.create(name, uuid, t)
    }
    fn concurrency(&self) -> usize {
        4
    }
}

#[test]
fn a_panic_while_one_map_is_created_fails_that_map_and_the_daemon_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let sim = common::dual_hba(dir.path());
    let backend = Arc::new(PanicsOnce {
        inner: SimBackend::new(),
        armed: AtomicBool::new(true),
        victim: std::sync::Mutex::new(None),
    });
    let e = common::engine(
        dir.path(),
        &sim.root,
        Config::builtin(),
        Box::new(PassThrough(backend.clone())),
        Arc::new(SystemClock),
    );
    let sock = dir.path().join("d.sock");
    let h = common::start_daemon(e, sock.clone(), Duration::from_millis(200)).unwrap();
    // the first create panicked: that map is missing, every other one is there
    let victim = backend
        .victim
        .lock()
        .unwrap()
        .clone()
        .expect("no create panicked");
    let uuids = || -> Vec<String> {
        let maps = backend.inner.list().unwrap();
        maps.into_iter().filter_map(|m| m.uuid).collect()
    };
    let made = uuids();
    assert!(!made.contains(&victim), "{made:?}");
    assert!(!made.is_empty(), "the other maps were not made");
    // a command that syncs answers (it used to wait for the panicked apply forever), and the
    // map is made this time
    let r = socket::request_with_timeout(&sock, &Command::Reconfigure, Duration::from_secs(30))
        .unwrap();
    assert_eq!(r.status, Status::Ok, "{}", r.body);
    let now = uuids();
    assert!(now.contains(&victim), "{now:?}");
    assert_eq!(now.len(), made.len() + 1, "{now:?}");
    h.stop().unwrap();
}
