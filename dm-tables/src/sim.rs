//! A simulated device-mapper that behaves like the kernel where it matters: validation, path
//! fail/reinstate with growing fail counts, event numbers, open counts that block removal,
//! deferred remove, and queued I/O across suspends and reloads (see [`SimIo`]). Optionally backed by a JSON state file under an flock so several processes
//! (the daemon, its CLI, tests) share one simulated kernel.
//!
//! Events follow the kernel (see [`crate::events`]). A map's event number moves where the
//! kernel calls `dm_table_event`: dm-mpath's `trigger_event` work after `fail_path` and
//! `reinstate_path` (only when the path's state really changes), `switch_pg_num` and
//! `bypass_pg` (drivers/md/dm-mpath.c), and `dm_hash_rename` / `__hash_remove` on rename and
//! remove (drivers/md/dm-ioctl.c). `queue_if_no_path` / `fail_if_no_path` raise none
//! (dm-mpath's `queue_if_no_path()` only flips the flag), and neither does a table swap or a
//! plain suspend/resume. The global counter that wakes arm-poll waiters moves with every map
//! event (`event_callback` in drivers/md/dm.c), on each table swap (`dm_swap_table`), and after
//! a create, remove or rename ioctl (`IOCTL_FLAGS_ISSUE_GLOBAL_EVENT`).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::backend::{DmBackend, MapInfo, RemoveMode, Removed, SuspendFlags};
use crate::devno::DevNo;
use crate::error::{Error, Result};
use crate::events::{EventNumbers, EventSource};
use crate::message::Message;
use crate::status::{GroupState, GroupStatus, MultipathStatus, PathState, PathStatus};
use crate::table::{Feature, HwHandler, MultipathTable, QueueMode, Selector, TablePath};
use crate::words::{Words, word, words, words_of};

/// The major number the simulated maps get (device-mapper's usual dynamic major).
pub const SIM_DM_MAJOR: u32 = 253;

/// Hardware handlers the simulated kernel knows (scsi_dh modules).
const KNOWN_HANDLERS: &[&str] = &["alua", "emc", "rdac", "hp_sw"];

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SimState {
    /// Boxed: a B-tree node holds eleven values and is often half full, so inline maps
    /// (table and all) left a large part of the simulator's memory empty at 16k maps.
    #[serde(default)]
    maps: BTreeMap<String, Box<SimMap>>,
    #[serde(default)]
    next_minor: u32,
    /// Block devices that exist; None accepts any device number.
    #[serde(default)]
    devices: Option<BTreeSet<DevNo>>,
    /// Block devices that fail every I/O sent to them (an offline disk); see
    /// [`SimBackend::set_failing`].
    #[serde(default)]
    failing: BTreeSet<DevNo>,
    /// Hashes of the maps' uuids, built on first use so N creates do not scan every map for
    /// a taken uuid (O(N^2)); only a hit (a taken uuid, or a rare hash collision) looks at
    /// the maps. Hashes, not the uuids and names: at 16k maps those copies were 3 MB.
    /// Dropped whenever a map goes away or is renamed. Never stored: a file-backed state is
    /// read anew for every operation.
    #[serde(skip)]
    uuid_index: Option<HashSet<u64>>,
    /// The kernel's `dm_global_event_nr`: what arm-poll waiters compare with (module docs).
    #[serde(default)]
    global_event_nr: u64,
}

impl SimState {
    /// Runs `f` on one map with the set of failing devices. Every event the map raised
    /// meanwhile (its event number moved) also moved the global counter, as the kernel's
    /// `event_callback` (drivers/md/dm.c) does for each `dm_table_event`.
    fn on_map<T>(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut SimMap, &BTreeSet<DevNo>) -> Result<T>,
    ) -> Result<T> {
        let failing = std::mem::take(&mut self.failing);
        let r = match self.maps.get_mut(name).map(|m| &mut **m) {
            Some(m) => {
                let before = m.event_nr;
                let r = f(m, &failing);
                self.global_event_nr += u64::from(m.event_nr.wrapping_sub(before));
                r
            }
            None => Err(Error::NoSuchMap {
                name: name.to_string(),
            }),
        };
        self.failing = failing;
        r
    }

    /// The map that carries `uuid`, if any.
    fn map_with_uuid(&mut self, uuid: &str) -> Option<&str> {
        let maps = &self.maps;
        let index = self.uuid_index.get_or_insert_with(|| {
            maps.values()
                .filter_map(|m| m.uuid.as_deref().map(uuid_hash))
                .collect()
        });
        if !index.contains(&uuid_hash(uuid)) {
            return None;
        }
        maps.iter()
            .find(|(_, m)| m.uuid.as_deref() == Some(uuid))
            .map(|(name, _)| name.as_str())
    }
}

/// The key of a uuid in [`SimState::uuid_index`].
fn uuid_hash(uuid: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(uuid)
}

/// I/O a test sent to a simulated map ([`SimBackend::submit_io`]), counted in requests.
///
/// The model follows dm-mpath: a request goes to the first active path of the chosen group
/// whose device does not fail it; a failing device fails that path (as the kernel's endio
/// does) and the request tries the next. With no usable path it is queued when
/// `queue_if_no_path` is on or a noflush suspend is under way, and fails (EIO) otherwise.
/// Queued requests are retried whenever a path, the queueing mode or the suspend state
/// changes. A flushing suspend turns queueing off first (dm-mpath's presuspend), so queued
/// requests of a map with no usable path fail; a noflush one keeps them queued.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimIo {
    /// Waiting in the map for a path.
    pub queued: u64,
    /// Done on a path.
    pub completed: u64,
    /// Failed back to the submitter (EIO).
    pub failed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SimPath {
    active: bool,
    fail_count: u32,
}

/// A map's paths by device number: a sorted list (a map has a handful of paths; a B-tree
/// allocated room for eleven), stored in the state file as the map it stands for.
#[derive(Debug, Clone, Default)]
struct PathMap(Vec<(DevNo, SimPath)>);

impl PathMap {
    fn get(&self, d: &DevNo) -> Option<&SimPath> {
        self.0
            .binary_search_by_key(d, |(k, _)| *k)
            .ok()
            .map(|i| &self.0[i].1)
    }

    fn get_mut(&mut self, d: &DevNo) -> Option<&mut SimPath> {
        self.0
            .binary_search_by_key(d, |(k, _)| *k)
            .ok()
            .map(|i| &mut self.0[i].1)
    }

    fn contains_key(&self, d: &DevNo) -> bool {
        self.get(d).is_some()
    }

    fn values(&self) -> impl Iterator<Item = &SimPath> {
        self.0.iter().map(|(_, p)| p)
    }
}

impl FromIterator<(DevNo, SimPath)> for PathMap {
    fn from_iter<I: IntoIterator<Item = (DevNo, SimPath)>>(it: I) -> Self {
        let m: BTreeMap<DevNo, SimPath> = it.into_iter().collect();
        let mut v: Vec<(DevNo, SimPath)> = m.into_iter().collect();
        v.shrink_to_fit();
        PathMap(v)
    }
}

impl Serialize for PathMap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de> Deserialize<'de> for PathMap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        BTreeMap::<DevNo, SimPath>::deserialize(d).map(|m| m.into_iter().collect())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SimMap {
    uuid: Option<String>,
    minor: u32,
    table: MultipathTable,
    paths: PathMap,
    queue_if_no_path: bool,
    /// The group I/O goes to (1-based), None when no path works.
    active_group: Option<u32>,
    /// Group switched to by message (kernel: next_pg).
    requested_group: Option<u32>,
    bypassed: BTreeSet<u32>,
    open_count: u32,
    event_nr: u32,
    deferred_remove: bool,
    #[serde(default)]
    io: SimIo,
    #[serde(default)]
    suspended: bool,
    /// A suspend without noflush put queue_if_no_path aside (dm-mpath's presuspend); the
    /// resume of the same table puts it back.
    #[serde(default)]
    saved_queue_if_no_path: Option<bool>,
    /// `change` uevents the kernel sent for the map: one per resume of a suspended map
    /// (do_resume in drivers/md/dm-ioctl.c, so every reload) and per rename (dm_hash_rename).
    /// A reload leaves the event number alone, so this is what shows it.
    #[serde(default)]
    change_uevents: u64,
}

impl SimMap {
    fn info(&self, name: &str) -> MapInfo {
        MapInfo {
            name: name.to_string(),
            uuid: self.uuid.clone(),
            devno: DevNo::new(SIM_DM_MAJOR, self.minor),
            open_count: self.open_count,
            event_nr: self.event_nr,
            suspended: self.suspended,
        }
    }

    /// Sends queued requests on, as the kernel does when paths, queueing or the suspend
    /// state change (see [`SimIo`]).
    fn dispatch(&mut self, failing: &BTreeSet<DevNo>) {
        let n = std::mem::take(&mut self.io.queued);
        self.submit(n, failing);
    }

    fn submit(&mut self, n: u64, failing: &BTreeSet<DevNo>) {
        if n == 0 {
            return;
        }
        if self.suspended {
            self.io.queued += n;
            return;
        }
        loop {
            self.choose_group();
            let target = self.active_group.and_then(|g| {
                self.table.groups[g as usize - 1]
                    .paths
                    .iter()
                    .map(|p| p.devno)
                    .find(|d| self.paths.get(d).is_some_and(|s| s.active))
            });
            match target {
                Some(d) if failing.contains(&d) => {
                    // the request fails on this path: the kernel fails the path, retries
                    self.set_path(d, false);
                }
                Some(_) => {
                    self.io.completed += n;
                    return;
                }
                None if self.queue_if_no_path => {
                    self.io.queued += n;
                    return;
                }
                None => {
                    self.io.failed += n;
                    return;
                }
            }
        }
    }

    /// The suspend before a table swap or a `dmsetup suspend`.
    fn presuspend(&mut self, flags: SuspendFlags, failing: &BTreeSet<DevNo>) {
        if self.suspended {
            return;
        }
        if !flags.noflush {
            // dm-mpath's presuspend: a flushing suspend must not wait for a path forever
            self.saved_queue_if_no_path = Some(self.queue_if_no_path);
            self.queue_if_no_path = false;
            self.dispatch(failing);
        }
        self.suspended = true;
    }

    /// Resumes the map: with `new_table` the loaded table replaces the active one (a new
    /// target: what the old one put aside is gone), else the old table gets back what its
    /// presuspend put aside.
    fn resume(&mut self, new_table: Option<MultipathTable>, failing: &BTreeSet<DevNo>) {
        match new_table {
            Some(t) => {
                self.saved_queue_if_no_path = None;
                self.load(t);
            }
            None => {
                if let Some(q) = self.saved_queue_if_no_path.take() {
                    self.queue_if_no_path = q;
                }
            }
        }
        if self.suspended {
            self.change_uevents += 1;
        }
        self.suspended = false;
        self.dispatch(failing);
    }

    fn group_has_active(&self, g: usize) -> bool {
        self.table.groups[g]
            .paths
            .iter()
            .any(|p| self.paths.get(&p.devno).is_some_and(|s| s.active))
    }

    /// Picks the group I/O would use, like the kernel's choose_pgpath() after some I/O:
    /// the requested group, else the current one, else the first non-bypassed group with a
    /// working path, else a bypassed one.
    fn choose_group(&mut self) {
        let n = self.table.groups.len();
        let usable =
            |m: &SimMap, g: u32| g >= 1 && (g as usize) <= n && m.group_has_active(g as usize - 1);
        if let Some(r) = self.requested_group
            && usable(self, r)
        {
            self.active_group = Some(r);
            self.requested_group = None;
            return;
        }
        if let Some(c) = self.active_group
            && usable(self, c)
            && !self.bypassed.contains(&c)
        {
            return;
        }
        let pick = (1..=n as u32)
            .find(|g| !self.bypassed.contains(g) && usable(self, *g))
            .or_else(|| (1..=n as u32).find(|g| usable(self, *g)));
        self.active_group = pick;
    }

    fn load(&mut self, table: MultipathTable) {
        self.paths = table
            .devnos()
            .into_iter()
            .map(|d| {
                (
                    d,
                    SimPath {
                        active: true,
                        fail_count: 0,
                    },
                )
            })
            .collect();
        self.queue_if_no_path = table.features.contains(&Feature::QueueIfNoPath);
        self.requested_group = (table.initial_group > 0).then_some(table.initial_group);
        self.active_group = None;
        self.bypassed.clear();
        self.table = table;
        self.choose_group();
    }

    /// The table as the kernel prints it back.
    fn kernel_table(&self) -> MultipathTable {
        let mut t = self.table.clone();
        let mut features = Vec::new();
        if self.queue_if_no_path {
            features.push(Feature::QueueIfNoPath);
        }
        let mut retries = None;
        let mut delay = None;
        let mut retain = false;
        let mut mode = None;
        for f in &self.table.features {
            match f {
                Feature::PgInitRetries(n) if *n > 0 => retries = Some(*n),
                Feature::PgInitDelayMsecs(n) => delay = Some(*n),
                Feature::RetainAttachedHwHandler => retain = true,
                Feature::QueueMode(m @ (QueueMode::Bio | QueueMode::Nvme)) => mode = Some(*m),
                _ => {}
            }
        }
        // bio-based multipath always retains the attached handler
        retain |= mode == Some(QueueMode::Bio);
        features.extend(retries.map(Feature::PgInitRetries));
        features.extend(delay.map(Feature::PgInitDelayMsecs));
        if retain {
            features.push(Feature::RetainAttachedHwHandler);
        }
        features.extend(mode.map(Feature::QueueMode));
        t.features = features;
        t.hw_handler = t.hw_handler.map(|h| HwHandler {
            name: h.name,
            args: Words::default(),
        });
        t.initial_group = self
            .requested_group
            .or(self.active_group)
            .unwrap_or(u32::from(!t.groups.is_empty()));
        for g in &mut t.groups {
            let want = match g.selector {
                Selector::ServiceTime => 2,
                Selector::RoundRobin | Selector::QueueLength => 1,
                _ => 0,
            };
            for p in &mut g.paths {
                if p.args.len() < want {
                    let mut v = p.args.to_vec();
                    v.resize(want, word("1"));
                    p.args = words_of(v);
                }
            }
        }
        t
    }

    fn kernel_status(&self) -> MultipathStatus {
        let no_path = !self.paths.values().any(|p| p.active);
        let groups = self
            .table
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let n = i as u32 + 1;
                let state = if self.bypassed.contains(&n) {
                    GroupState::Disabled
                } else if self.active_group == Some(n) {
                    GroupState::Active
                } else {
                    GroupState::Enabled
                };
                let info = |p: &TablePath| -> Words {
                    match g.selector {
                        Selector::ServiceTime => words_of(vec![
                            word("0"),
                            p.args.get(1).cloned().unwrap_or_else(|| word("1")),
                        ]),
                        Selector::QueueLength => words(&["0"]),
                        _ => Words::default(),
                    }
                };
                GroupStatus {
                    state,
                    selector_status: Words::default(),
                    paths: g
                        .paths
                        .iter()
                        .map(|p| {
                            let s = self.paths.get(&p.devno);
                            PathStatus {
                                devno: p.devno,
                                state: if s.is_some_and(|s| s.active) {
                                    PathState::Active
                                } else {
                                    PathState::Failed
                                },
                                fail_count: s.map_or(0, |s| s.fail_count),
                                selector_info: info(p),
                            }
                        })
                        .collect(),
                }
            })
            .collect();
        MultipathStatus {
            start: self.table.start,
            length: self.table.length,
            queue_io: no_path && self.queue_if_no_path,
            pg_init_count: u32::from(
                self.table.hw_handler.is_some() && self.active_group.is_some(),
            ),
            extra_features: Words::default(),
            hw_handler_status: Words::default(),
            current_group: self
                .requested_group
                .or(self.active_group)
                .unwrap_or(u32::from(!self.table.groups.is_empty())),
            groups,
        }
    }

    fn set_path(&mut self, devno: DevNo, active: bool) -> bool {
        let Some(p) = self.paths.get_mut(&devno) else {
            return false;
        };
        if p.active == active {
            return false;
        }
        p.active = active;
        if !active {
            p.fail_count += 1;
        }
        self.event_nr += 1;
        self.choose_group();
        true
    }
}

enum Store {
    Memory(Mutex<SimState>),
    File {
        path: PathBuf,
        lock_path: PathBuf,
        local: Mutex<()>,
    },
}

/// Wakes the waiters of this process when the global event counter moves.
#[derive(Debug, Default)]
struct Bell {
    rung: Mutex<u64>,
    cond: Condvar,
}

impl Bell {
    fn count(&self) -> u64 {
        *self
            .rung
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn ring(&self) {
        *self
            .rung
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
        self.cond.notify_all();
    }

    /// Waits up to `timeout` for a ring after the count `seen`.
    fn wait_past(&self, seen: u64, timeout: Duration) {
        let g = self
            .rung
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = self
            .cond
            .wait_timeout_while(g, timeout, |n| *n == seen)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
    }
}

/// The simulated backend. See the module docs.
pub struct SimBackend {
    store: Arc<Store>,
    devices: Option<BTreeSet<DevNo>>,
    bell: Arc<Bell>,
}

/// How often a waiter on a file-backed sim looks at the file for other processes' events
/// (it only re-reads the state when the file was replaced).
pub const SIM_FILE_EVENT_POLL: Duration = Duration::from_millis(10);

/// The sim's event source ([`DmBackend::event_source`]).
struct SimEvents {
    sim: SimBackend,
    armed: u64,
}

impl SimEvents {
    /// The state file's identity (replaced on every write: write_atomic renames a new file).
    fn file_stamp(&self) -> Option<(u64, i64, i64, u64)> {
        use std::os::unix::fs::MetadataExt;
        match &*self.sim.store {
            Store::Memory(_) => None,
            Store::File { path, .. } => fs::metadata(path)
                .ok()
                .map(|m| (m.ino(), m.mtime(), m.mtime_nsec(), m.len())),
        }
    }

    fn global(&self) -> Result<u64> {
        self.sim.with_state(false, |s| Ok(s.global_event_nr))
    }
}

impl EventSource for SimEvents {
    fn arm(&mut self) -> Result<()> {
        self.armed = self.global()?;
        Ok(())
    }

    fn event_numbers(&mut self) -> Result<EventNumbers> {
        self.sim.event_numbers()
    }

    fn wait(&mut self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        let file = matches!(&*self.sim.store, Store::File { .. });
        let mut stamp = None;
        loop {
            // The bell's count before the state is read: a ring after the read ends the wait.
            let seen = self.sim.bell.count();
            let now_stamp = self.file_stamp();
            if (!file || stamp.is_none() || now_stamp != stamp) && self.global()? != self.armed {
                return Ok(true);
            }
            stamp = now_stamp;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            let slice = if file {
                left.min(SIM_FILE_EVENT_POLL)
            } else {
                left
            };
            self.sim.bell.wait_past(seen, slice);
        }
    }
}

impl std::fmt::Debug for SimBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.store {
            Store::Memory(_) => f.write_str("SimBackend(memory)"),
            Store::File { path, .. } => write!(f, "SimBackend({})", path.display()),
        }
    }
}

impl Default for SimBackend {
    fn default() -> Self {
        Self::new()
    }
}

/// Block device numbers that exist under a sysfs root: `<root>/class/block/*/dev` and the
/// names of `<root>/dev/block/M:m`.
pub fn devices_from_sysfs(root: &Path) -> Result<BTreeSet<DevNo>> {
    let mut set = BTreeSet::new();
    let class = root.join("class/block");
    let devblock = root.join("dev/block");
    if !class.is_dir() && !devblock.is_dir() {
        return Err(Error::Io {
            action: "reading block devices under",
            path: root.to_path_buf(),
            cause: std::io::Error::new(
                ErrorKind::NotFound,
                "neither class/block nor dev/block exists",
            ),
        });
    }
    if let Ok(rd) = fs::read_dir(&class) {
        for e in rd.flatten() {
            let f = e.path().join("dev");
            match fs::read_to_string(&f) {
                Ok(s) => {
                    let d = s.trim().parse().map_err(|_| Error::InvalidValue {
                        value: format!("{} in {}", s.trim(), f.display()),
                        expected: "a device number major:minor".into(),
                    })?;
                    set.insert(d);
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(Error::Io {
                        action: "reading",
                        path: f,
                        cause: source,
                    });
                }
            }
        }
    }
    if let Ok(rd) = fs::read_dir(&devblock) {
        for e in rd.flatten() {
            if let Some(d) = e.file_name().to_str().and_then(|n| n.parse().ok()) {
                set.insert(d);
            }
        }
    }
    Ok(set)
}

impl SimBackend {
    /// In memory; accepts any device number.
    pub fn new() -> Self {
        SimBackend {
            store: Arc::new(Store::Memory(Mutex::new(SimState::default()))),
            devices: None,
            bell: Arc::default(),
        }
    }

    /// In memory; only these block devices exist.
    pub fn with_devices(devices: impl IntoIterator<Item = DevNo>) -> Self {
        let devices: BTreeSet<DevNo> = devices.into_iter().collect();
        let state = SimState {
            devices: Some(devices.clone()),
            ..SimState::default()
        };
        SimBackend {
            store: Arc::new(Store::Memory(Mutex::new(state))),
            devices: Some(devices),
            bell: Arc::default(),
        }
    }

    /// Shared through a JSON state file (created if missing), locked with flock on
    /// `<path>.lock` for every operation. `devices`, when given, replaces the set of existing
    /// block devices recorded in the file; when None, the file's set is used (none recorded =
    /// any device accepted).
    pub fn open_file(path: impl Into<PathBuf>, devices: Option<BTreeSet<DevNo>>) -> Result<Self> {
        let path = path.into();
        let mut lock_path = path.clone().into_os_string();
        lock_path.push(".lock");
        let b = SimBackend {
            store: Arc::new(Store::File {
                path,
                lock_path: PathBuf::from(lock_path),
                local: Mutex::new(()),
            }),
            devices,
            bell: Arc::default(),
        };
        // create / validate the file now so errors show up at open
        b.with_state(true, |_| Ok(()))?;
        Ok(b)
    }

    /// Another handle on the same simulated kernel (the event source's).
    fn share(&self) -> SimBackend {
        SimBackend {
            store: Arc::clone(&self.store),
            devices: self.devices.clone(),
            bell: Arc::clone(&self.bell),
        }
    }

    fn with_state<T>(&self, write: bool, f: impl FnOnce(&mut SimState) -> Result<T>) -> Result<T> {
        let mut global = None;
        let r = self.with_state_inner(write, |s| {
            let before = s.global_event_nr;
            let r = f(s);
            global = Some(before != s.global_event_nr);
            r
        });
        if global == Some(true) {
            self.bell.ring();
        }
        r
    }

    fn with_state_inner<T>(
        &self,
        write: bool,
        f: impl FnOnce(&mut SimState) -> Result<T>,
    ) -> Result<T> {
        match &*self.store {
            Store::Memory(m) => {
                let mut g = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                // The device set went into the state when it was made (`with_devices`) and
                // only `set_devices` changes it: comparing it with `self.devices` here, once
                // per operation, cost O(devices) each and made N creates O(N^2).
                // In place, no copy of the whole state per operation (that made N creates cost
                // O(N^2)): every operation checks before it changes anything, so an error leaves
                // the state as it was; reads do not change it at all.
                let _ = write;
                f(&mut g)
            }
            Store::File {
                path,
                lock_path,
                local,
            } => {
                let _g = local
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let lf = OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(lock_path)
                    .map_err(|source| Error::Io {
                        action: "opening the lock file",
                        path: lock_path.clone(),
                        cause: source,
                    })?;
                let _lock = nix::fcntl::Flock::lock(lf, nix::fcntl::FlockArg::LockExclusive)
                    .map_err(|(_, e)| Error::Io {
                        action: "locking",
                        path: lock_path.clone(),
                        cause: std::io::Error::from(e),
                    })?;
                let mut state = match fs::read_to_string(path) {
                    Ok(s) if s.trim().is_empty() => SimState::default(),
                    Ok(s) => serde_json::from_str(&s).map_err(|source| Error::StateCorrupt {
                        path: path.clone(),
                        cause: source,
                    })?,
                    Err(e) if e.kind() == ErrorKind::NotFound => SimState::default(),
                    Err(source) => {
                        return Err(Error::Io {
                            action: "reading",
                            path: path.clone(),
                            cause: source,
                        });
                    }
                };
                let mut dirty = write;
                if let Some(d) = &self.devices
                    && state.devices.as_ref() != Some(d)
                {
                    state.devices = Some(d.clone());
                    dirty = true;
                }
                let r = f(&mut state)?;
                if dirty || !path.exists() {
                    write_atomic(path, &state)?;
                }
                Ok(r)
            }
        }
    }

    /// Test helper: someone opens `/dev/mapper/<name>` (open count + 1).
    pub fn open(&self, name: &str) -> Result<u32> {
        self.with_state(true, |s| {
            let m = map_mut(s, name)?;
            m.open_count += 1;
            Ok(m.open_count)
        })
    }

    /// Test helper: a holder closes the map; a deferred remove happens at the last close.
    /// Returns the new open count.
    pub fn close(&self, name: &str) -> Result<u32> {
        self.with_state(true, |s| {
            let m = map_mut(s, name)?;
            m.open_count = m.open_count.saturating_sub(1);
            let (n, gone) = (m.open_count, m.open_count == 0 && m.deferred_remove);
            if gone {
                s.maps.remove(name);
                s.uuid_index = None;
                // the deferred remove's __hash_remove raises the map's last event
                s.global_event_nr += 1;
            }
            Ok(n)
        })
    }

    /// Test helper: an I/O error on `devno`: the kernel fails that path in every map using it
    /// (fail count + 1, event number + 1). Returns the names of the maps affected.
    pub fn inject_io_error(&self, devno: DevNo) -> Result<Vec<String>> {
        self.with_state(true, |s| {
            let mut hit = Vec::new();
            for (name, m) in &mut s.maps {
                let before = m.event_nr;
                if m.set_path(devno, false) {
                    hit.push(name.clone());
                    m.dispatch(&s.failing);
                }
                s.global_event_nr += u64::from(m.event_nr.wrapping_sub(before));
            }
            Ok(hit)
        })
    }

    /// Test helper: `n` requests are sent to the map (see [`SimIo`]). Returns its I/O counts
    /// afterwards.
    pub fn submit_io(&self, name: &str, n: u64) -> Result<SimIo> {
        self.with_state(true, |s| {
            s.on_map(name, |m, failing| {
                m.submit(n, failing);
                Ok(m.io)
            })
        })
    }

    /// How many `change` uevents the kernel sent for the map: one per resume of a suspended
    /// map (so one per reload) and per rename. The way to see a reload, which leaves the
    /// event number alone (lab scenario 06 watches the same uevents on the real kernel).
    pub fn change_uevents(&self, name: &str) -> Result<u64> {
        self.with_state(false, |s| Ok(map_ref(s, name)?.change_uevents))
    }

    /// The map's I/O counts (see [`SimIo`]).
    pub fn io(&self, name: &str) -> Result<SimIo> {
        self.with_state(false, |s| Ok(map_ref(s, name)?.io))
    }

    /// Test helper: the device `devno` fails every I/O from now on (`true`, an offline disk)
    /// or serves it again. Paths the kernel failed stay failed until reinstated.
    pub fn set_failing(&self, devno: DevNo, failing: bool) -> Result<()> {
        self.with_state(true, |s| {
            if failing {
                s.failing.insert(devno);
            } else {
                s.failing.remove(&devno);
            }
            Ok(())
        })
    }

    /// Suspends the map as `dmsetup suspend [--noflush]` does: I/O is held until
    /// [`SimBackend::resume`]; a flushing suspend first fails what a map with no usable path
    /// has queued.
    pub fn suspend(&self, name: &str, flags: SuspendFlags) -> Result<()> {
        self.with_state(true, |s| {
            s.on_map(name, |m, failing| {
                m.presuspend(flags, failing);
                Ok(())
            })
        })
    }

    /// Resumes a suspended map (its table unchanged; `dmsetup resume`).
    pub fn resume(&self, name: &str) -> Result<()> {
        self.with_state(true, |s| {
            s.on_map(name, |m, failing| {
                m.resume(None, failing);
                Ok(())
            })
        })
    }

    /// Test helper: replaces the set of block devices that exist (hot-plug / hot-remove).
    pub fn set_devices(&self, devices: impl IntoIterator<Item = DevNo>) -> Result<()> {
        let d: BTreeSet<DevNo> = devices.into_iter().collect();
        self.with_state(true, |s| {
            s.devices = Some(d);
            Ok(())
        })
    }

    fn check_table(state: &SimState, name: &str, table: &MultipathTable) -> Result<()> {
        table.validate(name)?;
        let bad = |reason: String| {
            Err(Error::InvalidTable {
                map: name.to_string(),
                reason,
            })
        };
        for f in &table.features {
            if let Feature::Other(w) = f {
                return bad(format!("unrecognised multipath feature '{w}'"));
            }
        }
        if let Some(h) = &table.hw_handler
            && !KNOWN_HANDLERS.contains(&h.name.as_ref())
        {
            return bad(format!("unknown hardware handler type '{}'", h.name));
        }
        for g in &table.groups {
            let max = match &g.selector {
                Selector::ServiceTime => 2,
                Selector::RoundRobin | Selector::QueueLength => 1,
                Selector::HistoricalServiceTime => usize::MAX,
                Selector::Other(s) => return bad(format!("unknown path selector type '{s}'")),
            };
            if g.path_arg_count() > max {
                return bad(format!(
                    "too many per-path args for path selector {}",
                    g.selector
                ));
            }
            if matches!(
                g.selector,
                Selector::ServiceTime | Selector::RoundRobin | Selector::QueueLength
            ) {
                for p in &g.paths {
                    if p.args.iter().any(|a| a.parse::<u32>().is_err()) {
                        return bad(format!("invalid per-path arg for path {}", p.devno));
                    }
                }
            }
        }
        if let Some(devs) = &state.devices {
            for d in table.devnos() {
                if !devs.contains(&d) {
                    return Err(Error::UnknownDevice {
                        map: name.to_string(),
                        devno: d,
                    });
                }
            }
        }
        Ok(())
    }
}

fn write_atomic(path: &Path, state: &SimState) -> Result<()> {
    let text = serde_json::to_string_pretty(state).map_err(|source| Error::StateCorrupt {
        path: path.to_path_buf(),
        cause: source,
    })?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    fn io<'a>(action: &'static str, p: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
        move |source| Error::Io {
            action,
            path: p.to_path_buf(),
            cause: source,
        }
    }
    let mut f = File::create(&tmp).map_err(io("creating", &tmp))?;
    f.write_all(text.as_bytes()).map_err(io("writing", &tmp))?;
    f.sync_all().map_err(io("syncing", &tmp))?;
    fs::rename(&tmp, path).map_err(io("renaming into place", path))
}

fn map_mut<'a>(s: &'a mut SimState, name: &str) -> Result<&'a mut SimMap> {
    s.maps
        .get_mut(name)
        .map(|m| &mut **m)
        .ok_or_else(|| Error::NoSuchMap {
            name: name.to_string(),
        })
}

fn map_ref<'a>(s: &'a SimState, name: &str) -> Result<&'a SimMap> {
    s.maps
        .get(name)
        .map(|m| &**m)
        .ok_or_else(|| Error::NoSuchMap {
            name: name.to_string(),
        })
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 127
        || name.contains('/')
        || name == "."
        || name == ".."
        || name == "control"
    {
        return Err(Error::InvalidValue {
            value: name.to_string(),
            expected: "a device-mapper map name".into(),
        });
    }
    Ok(())
}

impl DmBackend for SimBackend {
    fn list(&self) -> Result<Vec<MapInfo>> {
        self.with_state(false, |s| {
            Ok(s.maps.iter().map(|(n, m)| m.info(n)).collect())
        })
    }

    fn info(&self, name: &str) -> Result<MapInfo> {
        self.with_state(false, |s| Ok(map_ref(s, name)?.info(name)))
    }

    fn create(&self, name: &str, uuid: &str, table: &MultipathTable) -> Result<MapInfo> {
        check_name(name)?;
        self.with_state(true, |s| {
            if s.maps.contains_key(name) {
                return Err(Error::MapExists {
                    name: name.to_string(),
                });
            }
            if !uuid.is_empty()
                && let Some(other) = s.map_with_uuid(uuid)
            {
                return Err(Error::UuidInUse {
                    uuid: uuid.to_string(),
                    name: other.to_string(),
                });
            }
            Self::check_table(s, name, table)?;
            let minor = s.next_minor;
            s.next_minor += 1;
            let mut m = SimMap {
                uuid: (!uuid.is_empty()).then(|| uuid.to_string()),
                minor,
                // `load` below puts the table in (one copy, not two)
                table: MultipathTable {
                    start: 0,
                    length: 0,
                    features: Vec::new(),
                    hw_handler: None,
                    initial_group: 0,
                    groups: Vec::new(),
                },
                paths: PathMap::default(),
                queue_if_no_path: false,
                active_group: None,
                requested_group: None,
                bypassed: BTreeSet::new(),
                open_count: 0,
                event_nr: 0,
                deferred_remove: false,
                io: SimIo::default(),
                suspended: false,
                saved_queue_if_no_path: None,
                // the first resume's
                change_uevents: 1,
            };
            m.load(table.clone());
            let info = m.info(name);
            if let (Some(index), Some(u)) = (&mut s.uuid_index, &m.uuid) {
                index.insert(uuid_hash(u));
            }
            s.maps.insert(name.to_string(), Box::new(m));
            // DM_DEV_CREATE raises a global event (IOCTL_FLAGS_ISSUE_GLOBAL_EVENT) and so
            // does the first resume's table swap (dm_swap_table); the map's own number
            // starts at 0.
            s.global_event_nr += 2;
            Ok(info)
        })
    }

    fn reload(&self, name: &str, table: &MultipathTable) -> Result<()> {
        self.with_state(true, |s| {
            map_ref(s, name)?;
            Self::check_table(s, name, table)?;
            // the kernel's resume: suspend (of the kind a reload uses), swap, resume. The
            // swap raises a global event only (dm_swap_table): the map's own event number
            // stays, unless dispatching queued I/O failed a path.
            s.on_map(name, |m, failing| {
                m.presuspend(SuspendFlags::RELOAD, failing);
                m.resume(Some(table.clone()), failing);
                Ok(())
            })?;
            s.global_event_nr += 1;
            Ok(())
        })
    }

    fn table_line(&self, name: &str) -> Result<String> {
        self.with_state(false, |s| Ok(map_ref(s, name)?.kernel_table().to_string()))
    }

    fn status_line(&self, name: &str) -> Result<String> {
        self.with_state(false, |s| Ok(map_ref(s, name)?.kernel_status().to_string()))
    }

    fn message(&self, name: &str, msg: &Message) -> Result<()> {
        self.with_state(true, |s| {
            s.on_map(name, |m, failing| {
                let refuse = |reason: &str| {
                    Err(Error::MessageRefused {
                        map: name.to_string(),
                        message: msg.to_string(),
                        reason: reason.to_string(),
                    })
                };
                let ngroups = m.table.groups.len() as u32;
                match msg {
                    Message::FailPath(d) | Message::ReinstatePath(d) => {
                        if !m.paths.contains_key(d) {
                            return refuse("no such path in the map (EINVAL)");
                        }
                        // fail_path / reinstate_path raise an event only when the path's state
                        // changes (set_path)
                        m.set_path(*d, matches!(msg, Message::ReinstatePath(_)));
                    }
                    Message::SwitchGroup(n)
                    | Message::DisableGroup(n)
                    | Message::EnableGroup(n) => {
                        if *n == 0 || *n > ngroups {
                            return refuse("invalid path group number (EINVAL)");
                        }
                        match msg {
                            Message::SwitchGroup(_) => {
                                m.bypassed.clear();
                                m.requested_group = Some(*n);
                                m.active_group = None;
                            }
                            Message::DisableGroup(_) => {
                                m.bypassed.insert(*n);
                            }
                            _ => {
                                m.bypassed.remove(n);
                            }
                        }
                        // switch_pg_num and bypass_pg schedule trigger_event unconditionally
                        m.event_nr += 1;
                        m.choose_group();
                    }
                    Message::QueueIfNoPath | Message::FailIfNoPath => {
                        // dm-mpath's queue_if_no_path() flips the flag and raises no event
                        m.queue_if_no_path = matches!(msg, Message::QueueIfNoPath);
                    }
                }
                m.dispatch(failing);
                Ok(())
            })
        })
    }

    fn rename(&self, old: &str, new: &str) -> Result<()> {
        check_name(new)?;
        self.with_state(true, |s| {
            if s.maps.contains_key(new) {
                return Err(Error::MapExists {
                    name: new.to_string(),
                });
            }
            let mut m = s.maps.remove(old).ok_or_else(|| Error::NoSuchMap {
                name: old.to_string(),
            })?;
            // dm_hash_rename raises the map's event ("wake up any dm event waiters"), and the
            // rename ioctl a global one
            m.event_nr += 1;
            m.change_uevents += 1;
            s.maps.insert(new.to_string(), m);
            s.uuid_index = None;
            s.global_event_nr += 2;
            Ok(())
        })
    }

    fn remove(&self, name: &str, mode: RemoveMode) -> Result<Removed> {
        self.with_state(true, |s| {
            let m = map_mut(s, name)?;
            if m.open_count > 0 {
                return match mode {
                    RemoveMode::Now => Err(Error::MapOpen {
                        name: name.to_string(),
                        open_count: m.open_count,
                    }),
                    RemoveMode::Deferred => {
                        m.deferred_remove = true;
                        // dev_remove returns 0 for a deferred remove of an open map, and
                        // the ioctl's IOCTL_FLAGS_ISSUE_GLOBAL_EVENT fires on success
                        s.global_event_nr += 1;
                        Ok(Removed::Deferred)
                    }
                };
            }
            s.maps.remove(name);
            s.uuid_index = None;
            // __hash_remove raises the map's last event, the remove ioctl a global one
            s.global_event_nr += 2;
            Ok(Removed::Removed)
        })
    }

    fn event_numbers(&self) -> Result<EventNumbers> {
        self.with_state(false, |s| {
            Ok(s.maps
                .iter()
                .map(|(n, m)| (n.clone(), m.event_nr))
                .collect())
        })
    }

    fn event_source(&self) -> Result<Box<dyn EventSource>> {
        let mut source = SimEvents {
            sim: self.share(),
            armed: 0,
        };
        source.arm()?;
        Ok(Box::new(source))
    }

    fn wait_event(&self, name: &str, last_event_nr: u32, timeout: Duration) -> Result<Option<u32>> {
        let deadline = Instant::now() + timeout;
        loop {
            let nr = self.info(name)?.event_nr;
            if nr != last_event_nr {
                return Ok(Some(nr));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            std::thread::sleep((deadline - now).min(Duration::from_millis(20)));
        }
    }
}
