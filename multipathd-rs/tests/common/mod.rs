//! What the integration tests share: the dual-HBA tree, an engine on it, a daemon around that
//! engine, and a device-mapper backend that passes through to another one but for what a test
//! changes. Each test file takes it with `mod common;` and uses only some of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aliases::StorePaths;
use dm_tables::{DmBackend, MapInfo, Message, MultipathTable, RemoveMode, Removed, SimBackend};
use lun_scan::topology::Sim;
use multipathd_rs::clock::{Clock, SystemClock};
use multipathd_rs::config::Config;
use multipathd_rs::daemon::{self, DaemonHandle, DaemonOptions};
use multipathd_rs::engine::{Engine, EngineOptions};

/// A path in the workspace (`rel` from its root: `fixtures/...`).
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// The generated dual-HBA FC tree (two HBAs x two target ports, 4 LUNs: 4 maps of 4 paths),
/// rendered into `dir/sys`.
pub fn dual_hba(dir: &Path) -> Sim {
    Sim::render_file(
        &fixture("fixtures/topologies/fc-dual-hba.toml"),
        &dir.join("sys"),
    )
    .unwrap()
}

/// A temporary directory with [`dual_hba`] rendered in it. A test file adds the methods it
/// needs with an `impl Lab` of its own.
pub struct Lab {
    pub dir: tempfile::TempDir,
    pub sim: Sim,
}

impl Lab {
    pub fn new() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let sim = dual_hba(dir.path());
        Lab { dir, sim }
    }

    /// `name` in the lab's directory.
    pub fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Every map's event number + change uevents: unchanged = no message and no reload (a
/// reload leaves the event number alone, as on the kernel, and sends a change uevent).
pub fn event_nrs(b: &SimBackend) -> BTreeMap<String, u32> {
    b.list()
        .unwrap()
        .into_iter()
        .map(|m| {
            let changes = b.change_uevents(&m.name).unwrap() as u32;
            (m.name, m.event_nr + changes)
        })
        .collect()
}

/// Engine options for a tree at `sysfs_root`: no config file, the alias table
/// `dir/aliases.toml`, the sysfs checker.
pub fn engine_options(dir: &Path, sysfs_root: &Path) -> EngineOptions {
    EngineOptions {
        config_path: None,
        sysfs_root: sysfs_root.to_path_buf(),
        store_paths: StorePaths {
            table: Some(dir.join("aliases.toml")),
            ..StorePaths::default()
        },
        checker_override: Some("sysfs".into()),
    }
}

/// An engine (not synced) on `backend` with [`engine_options`].
pub fn engine(
    dir: &Path,
    sysfs_root: &Path,
    config: Config,
    backend: Box<dyn DmBackend>,
    clock: Arc<dyn Clock>,
) -> Engine {
    Engine::new(config, engine_options(dir, sysfs_root), backend, clock).unwrap()
}

/// Starts the daemon on `engine` with the system clock, without uevents, its control socket
/// at `socket`, its loop waking every `tick` at most.
pub fn start_daemon(
    engine: Engine,
    socket: PathBuf,
    tick: Duration,
) -> Result<DaemonHandle, multipathd_rs::Error> {
    daemon::start(
        engine,
        Arc::new(SystemClock),
        DaemonOptions {
            socket,
            uevents: false,
            tick,
        },
    )
}

/// What a test changes of a backend ([`PassThrough`]): each method defaults to the inner
/// backend's, so a test writes only the one that differs.
pub trait Hooks: Send + Sync {
    /// The backend everything else goes to.
    fn inner(&self) -> &dyn DmBackend;
    fn create(&self, name: &str, uuid: &str, table: &MultipathTable) -> dm_tables::Result<MapInfo> {
        self.inner().create(name, uuid, table)
    }
    fn reload(&self, name: &str, table: &MultipathTable) -> dm_tables::Result<()> {
        self.inner().reload(name, table)
    }
    fn table_line(&self, name: &str) -> dm_tables::Result<String> {
        self.inner().table_line(name)
    }
    fn concurrency(&self) -> usize {
        1
    }
}

/// A backend that passes each method the trait requires through [`Hooks`] (so to the inner
/// backend, but for what the hooks change), shared with the test through the `Arc`. Every
/// method the trait provides is the trait's own default, built on those, not the inner
/// backend's: a `create_then` goes through the hooked `create`, and there is no event source
/// (the daemon compares event numbers instead).
pub struct PassThrough<H>(pub Arc<H>);

impl<H: Hooks> DmBackend for PassThrough<H> {
    fn list(&self) -> dm_tables::Result<Vec<MapInfo>> {
        self.0.inner().list()
    }
    fn info(&self, name: &str) -> dm_tables::Result<MapInfo> {
        self.0.inner().info(name)
    }
    fn create(&self, name: &str, uuid: &str, table: &MultipathTable) -> dm_tables::Result<MapInfo> {
        self.0.create(name, uuid, table)
    }
    fn reload(&self, name: &str, table: &MultipathTable) -> dm_tables::Result<()> {
        self.0.reload(name, table)
    }
    fn table_line(&self, name: &str) -> dm_tables::Result<String> {
        self.0.table_line(name)
    }
    fn status_line(&self, name: &str) -> dm_tables::Result<String> {
        self.0.inner().status_line(name)
    }
    fn message(&self, name: &str, msg: &Message) -> dm_tables::Result<()> {
        self.0.inner().message(name, msg)
    }
    fn rename(&self, old: &str, new: &str) -> dm_tables::Result<()> {
        self.0.inner().rename(old, new)
    }
    fn remove(&self, name: &str, mode: RemoveMode) -> dm_tables::Result<Removed> {
        self.0.inner().remove(name, mode)
    }
    fn wait_event(
        &self,
        name: &str,
        last: u32,
        timeout: Duration,
    ) -> dm_tables::Result<Option<u32>> {
        self.0.inner().wait_event(name, last, timeout)
    }
    fn concurrency(&self) -> usize {
        self.0.concurrency()
    }
}
