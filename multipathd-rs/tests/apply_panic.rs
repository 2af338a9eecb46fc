#![allow(clippy::unwrap_used)]
//! A bug in the backend (a panic while one map is created) costs that map, not the daemon:
//! the map's apply is booked as failed with an error naming its WWID, the other maps are
//! made, and a command that syncs still answers. Before, the panic ended the apply's thread
//! without an answer, the map's WWID stayed "in flight" for good, and every command that
//! syncs waited for it forever.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aliases::StorePaths;
use dm_tables::{DmBackend, MapInfo, Message, MultipathTable, RemoveMode, Removed, SimBackend};
use lun_scan::topology::Sim;
use multipathd_rs::clock::SystemClock;
use multipathd_rs::config::Config;
use multipathd_rs::daemon::{self, DaemonOptions};
use multipathd_rs::engine::{Engine, EngineOptions};
use multipathd_rs::socket::{self, Command, Status};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// The sim, except that its first create panics (before it touches the map).
struct PanicsOnce {
    inner: SimBackend,
    armed: AtomicBool,
    victim: std::sync::Mutex<Option<String>>,
}

struct Shared(Arc<PanicsOnce>);

impl DmBackend for Shared {
    fn list(&self) -> dm_tables::Result<Vec<MapInfo>> {
        self.0.inner.list()
    }
    fn info(&self, name: &str) -> dm_tables::Result<MapInfo> {
        self.0.inner.info(name)
    }
    fn create(&self, name: &str, uuid: &str, t: &MultipathTable) -> dm_tables::Result<MapInfo> {
        if self.0.armed.swap(false, Ordering::SeqCst) {
            *self.0.victim.lock().unwrap() = Some(uuid.to_string());
            panic!("a bug in the backend while creating {name}");
        }
        self.0.inner.create(name, uuid, t)
    }
    fn reload(&self, name: &str, t: &MultipathTable) -> dm_tables::Result<()> {
        self.0.inner.reload(name, t)
    }
    fn table_line(&self, name: &str) -> dm_tables::Result<String> {
        self.0.inner.table_line(name)
    }
    fn status_line(&self, name: &str) -> dm_tables::Result<String> {
        self.0.inner.status_line(name)
    }
    fn message(&self, name: &str, msg: &Message) -> dm_tables::Result<()> {
        self.0.inner.message(name, msg)
    }
    fn rename(&self, old: &str, new: &str) -> dm_tables::Result<()> {
        self.0.inner.rename(old, new)
    }
    fn remove(&self, name: &str, mode: RemoveMode) -> dm_tables::Result<Removed> {
        self.0.inner.remove(name, mode)
    }
    fn wait_event(&self, name: &str, last: u32, t: Duration) -> dm_tables::Result<Option<u32>> {
        self.0.inner.wait_event(name, last, t)
    }
    fn concurrency(&self) -> usize {
        4
    }
}

#[test]
fn a_panic_while_one_map_is_created_fails_that_map_and_the_daemon_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::render_file(
        &fixture("fixtures/topologies/fc-dual-hba.toml"),
        &dir.path().join("sys"),
    )
    .unwrap();
    let backend = Arc::new(PanicsOnce {
        inner: SimBackend::new(),
        armed: AtomicBool::new(true),
        victim: std::sync::Mutex::new(None),
    });
    let opts = EngineOptions {
        config_path: None,
        sysfs_root: sim.root.clone(),
        store_paths: StorePaths {
            table: Some(dir.path().join("aliases.toml")),
            ..StorePaths::default()
        },
        checker_override: Some("sysfs".into()),
    };
    let e = Engine::new(
        Config::builtin(),
        opts,
        Box::new(Shared(backend.clone())),
        Arc::new(SystemClock),
    )
    .unwrap();
    let sock = dir.path().join("d.sock");
    let h = daemon::start(
        e,
        Arc::new(SystemClock),
        DaemonOptions {
            socket: sock.clone(),
            uevents: false,
            tick: Duration::from_millis(200),
        },
    )
    .unwrap();
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
