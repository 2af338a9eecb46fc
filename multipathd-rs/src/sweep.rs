//! The failover sweep: a thread of its own ("sweep") that notices a member path whose SCSI
//! device left `running` and fails it in device-mapper at once, whatever the engine is doing
//! (a rescan of every host, a reload, 64 `show` clients, a 32k-path sync): it never takes the
//! engine lock.
//!
//! - **Membership**: the engine hands over an [`Arc`] snapshot of its member paths (kernel
//!   name, device number, map name, `device/state` file, the state the engine knows), replaced
//!   only when maps or paths changed (a generation counter); the thread never copies it.
//! - **Reads**: each member's `state` file is held open and re-read with
//!   [`FileExt::read_at`] at offset 0 (sysfs regenerates the text on every read at offset 0),
//!   into a stack buffer: no path join, no allocation per path per pass. The soft
//!   `RLIMIT_NOFILE` is raised towards the hard one at start; members beyond what the fd
//!   budget allows are read by open/read/close, counted (`show status`: `sweep:`): opened
//!   with `openat` relative to their SCSI target's directory, held (`O_PATH`, one per target,
//!   at most `DIR_MAX`), so only `H:C:T:L/state` is resolved; a target directory removed
//!   and made again is noticed (the member is not found through it but is by its absolute
//!   path) and the new one held. `show status` also gives the last pass's CPU time.
//! - **Direct fail**: a move from any other state into one every checker calls failed
//!   (`offline`, `transport-offline`, `deleted`; see [`is_down`]) sends `fail_path` for that
//!   device number to the map straight through the backend. `blocked` (an FC remote port lost,
//!   for at most `fast_io_fail_tmo`) and `quiesce` are transient: they are only reported, the
//!   real check decides. Failing a path that is really offline is always safe; a map renamed or
//!   removed meanwhile answers ENXIO, which is counted and otherwise ignored. The sweep never
//!   reinstates: that stays with the checker and the engine.
//! - **Transport ports**: the FC remote ports' `port_state` and iSCSI sessions' `state` the
//!   members run through (a handful of files) are read at every tick. When one is not in its
//!   healthy state (`Online`, `LOGGED_IN`: a lost HBA or target port shows there first), its
//!   members are read at once and at every tick while it stays so (paced like the full pass),
//!   so a lost HBA is noticed in one tick however many paths the full pass has to read.
//! - **News**: every move (down, back to running, anything) is recorded for the engine *before*
//!   the `fail_path` goes out, and the daemon loop is woken. The engine takes the news at the
//!   start of its next pass (the path's state, a check at once, as the old in-lock sweep did);
//!   until then its planner already counts a path the sweep saw down as unusable, so a reload
//!   racing with the sweep loads it failed (see `Engine::take_sweep_news`).

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use dm_tables::{DevNo, DmBackend, Message};
use serde::{Deserialize, Serialize};

/// How often the thread reads every member path's state.
pub const SWEEP_PERIOD: Duration = Duration::from_millis(200);

/// File descriptors left for everything else (checks, socket clients, dm control) when the
/// sweep sizes its budget of open state files.
const FD_RESERVE: u64 = 1024;

/// The most directories held open for members beyond the fd budget (taken from
/// [`FD_RESERVE`]): each member's state file is then opened relative to its SCSI target's
/// directory (`targetH:C:T`, shared by every LUN behind the port) instead of resolving the
/// whole absolute path from `/`.
const DIR_MAX: usize = 64;

/// Longest state text kept (`transport-offline` is 17 bytes).
const STATE_MAX: usize = 32;

/// Whether every checker calls a path in this SCSI device state failed at once: the midlayer
/// refuses commands to the device (offline, transport-offline) or it is being removed.
/// `blocked`, `created-blocked` and `quiesce` are transient (an FC remote port lost for at most
/// `fast_io_fail_tmo`, a suspend): the path's real check decides those.
pub fn is_down(state: &[u8]) -> bool {
    matches!(
        state,
        b"offline" | b"transport-offline" | b"deleted" | b"del" | b"cancel"
    )
}

/// One member path, as the engine knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Kernel name (`sdc`).
    pub dev: String,
    pub devno: DevNo,
    /// The dm name of the map whose table holds the path.
    pub map: String,
    /// Its SCSI device's `state` attribute.
    pub state_file: PathBuf,
    /// The state the engine knew when it made the snapshot.
    pub known: String,
    /// The transport port it runs through (an index into [`Membership::ports`]).
    pub port: Option<usize>,
}

/// A transport port member paths run through: an FC remote port or an iSCSI session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// `rport-0:0-1`, `session3`.
    pub name: String,
    /// Its state attribute (`port_state`, `state`).
    pub state_file: PathBuf,
    /// The state text when it carries I/O (`Online`, `LOGGED_IN`).
    pub healthy: &'static str,
}

/// The engine's member paths (see the module docs).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Membership {
    pub members: Vec<Member>,
    pub ports: Vec<Port>,
}

/// What `show status` reports about the sweep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepStats {
    /// Whether a sweep thread runs (false: the engine sweeps under its lock, tests and demo).
    pub running: bool,
    pub period_ms: u64,
    pub members: u64,
    pub passes: u64,
    /// Duration of the last pass, in microseconds.
    pub last_pass_us: u64,
    /// The thread's CPU time in the last pass, in microseconds (what paces the passes).
    #[serde(default)]
    pub last_pass_cpu_us: u64,
    /// State files held open (read with one `pread` each).
    pub open_files: u64,
    /// Members read by open/read/close because the fd budget is spent.
    pub fallback: u64,
    /// Transport ports watched at every tick.
    #[serde(default)]
    pub ports: u64,
    /// Ticks that read the members of a port out of its healthy state before the full pass.
    #[serde(default)]
    pub early_reads: u64,
    /// `fail_path` messages the sweep sent itself.
    pub direct_fails: u64,
    /// `fail_path` to a map renamed or removed meanwhile (ENXIO): ignored.
    pub gone: u64,
    /// Other `fail_path` errors (the engine's check fails the path anyway).
    pub fail_errors: u64,
    /// State reads that failed for another reason than the device going away.
    pub read_errors: u64,
}

impl SweepStats {
    /// How far apart the full passes are now: the period, or more after a costly pass (see
    /// [`pause_after`]).
    pub fn pass_spacing_ms(&self) -> u64 {
        let spacing = pause_after(
            Duration::from_millis(self.period_ms),
            Duration::from_micros(self.last_pass_cpu_us),
        );
        u64::try_from(spacing.as_millis()).unwrap_or(u64::MAX)
    }
}

/// How the thread runs.
#[derive(Debug, Clone, Copy)]
pub struct SweepOptions {
    pub period: Duration,
    /// The most state files held open; None: from `RLIMIT_NOFILE` (raised first).
    pub max_open: Option<usize>,
}

impl Default for SweepOptions {
    fn default() -> Self {
        SweepOptions {
            period: SWEEP_PERIOD,
            max_open: None,
        }
    }
}

#[derive(Default)]
struct Counters {
    passes: AtomicU64,
    last_pass_us: AtomicU64,
    last_pass_cpu_us: AtomicU64,
    members: AtomicU64,
    open_files: AtomicU64,
    fallback: AtomicU64,
    ports: AtomicU64,
    early_reads: AtomicU64,
    direct_fails: AtomicU64,
    gone: AtomicU64,
    fail_errors: AtomicU64,
    read_errors: AtomicU64,
}

/// Wakes the daemon loop (a send on its signal channel).
pub type Wake = Box<dyn Fn() + Send + Sync>;

struct Shared {
    membership: Mutex<Arc<Membership>>,
    generation: AtomicU64,
    /// Kernel name -> latest state read, not yet taken by the engine.
    news: Mutex<HashMap<String, String>>,
    /// Set with the news (under its lock), cleared when the engine takes it.
    pending: AtomicBool,
    stop: AtomicBool,
    running: AtomicBool,
    period: Duration,
    counters: Counters,
    wake: Wake,
}

/// The engine's handle on the sweep: hands over the membership, takes the news.
#[derive(Clone)]
pub struct SweepLink {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SweepLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SweepLink")
            .field(
                "generation",
                &self.shared.generation.load(Ordering::Relaxed),
            )
            .finish()
    }
}

impl SweepLink {
    /// The membership the thread sweeps now.
    pub fn membership(&self) -> Arc<Membership> {
        Arc::clone(
            &self
                .shared
                .membership
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Replaces the membership; the thread takes it at its next pass.
    pub fn set_membership(&self, m: Membership) {
        *self
            .shared
            .membership
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(m);
        self.shared.generation.fetch_add(1, Ordering::Release);
    }

    /// Takes the state moves read since the last call (kernel name, new state).
    pub fn take_news(&self) -> Vec<(String, String)> {
        if !self.shared.pending.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut news = self
            .shared
            .news
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.shared.pending.store(false, Ordering::Release);
        let mut v: Vec<(String, String)> = news.drain().collect();
        v.sort();
        v
    }

    /// Whether the sweep read `dev` in a down state that the engine has not taken yet.
    pub fn reported_down(&self, dev: &str) -> bool {
        if !self.shared.pending.load(Ordering::Acquire) {
            return false;
        }
        self.shared
            .news
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(dev)
            .is_some_and(|s| is_down(s.as_bytes()))
    }

    pub fn stats(&self) -> SweepStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SweepStats {
            running: self.shared.running.load(Ordering::Relaxed),
            period_ms: u64::try_from(self.shared.period.as_millis()).unwrap_or(u64::MAX),
            members: get(&c.members),
            passes: get(&c.passes),
            last_pass_us: get(&c.last_pass_us),
            last_pass_cpu_us: get(&c.last_pass_cpu_us),
            open_files: get(&c.open_files),
            fallback: get(&c.fallback),
            ports: get(&c.ports),
            early_reads: get(&c.early_reads),
            direct_fails: get(&c.direct_fails),
            gone: get(&c.gone),
            fail_errors: get(&c.fail_errors),
            read_errors: get(&c.read_errors),
        }
    }
}

/// The running thread; dropping it stops and joins the thread.
pub struct Sweep {
    link: SweepLink,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Sweep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sweep").field("link", &self.link).finish()
    }
}

impl Sweep {
    /// Starts the thread on `backend` (the engine's, shared). `wake` is called after a pass
    /// that read a move.
    pub fn start(
        backend: Arc<dyn DmBackend>,
        opts: SweepOptions,
        wake: Wake,
    ) -> std::io::Result<Sweep> {
        let (link, mut worker) = worker(backend, opts, wake);
        link.shared.running.store(true, Ordering::Relaxed);
        let thread = std::thread::Builder::new()
            .name("sweep".into())
            .spawn(move || {
                let period = worker.shared.period;
                let mut next_full = Instant::now();
                while !worker.shared.stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    worker.tick();
                    if t >= next_full {
                        worker.pass();
                        next_full = t + pause_after(period, worker.last_pass_cpu);
                    }
                    let next = t + period;
                    while let Some(left) = next.checked_duration_since(Instant::now()) {
                        if worker.shared.stop.load(Ordering::Relaxed) {
                            return;
                        }
                        std::thread::park_timeout(left);
                    }
                }
            })?;
        tracing::info!(
            "sweeping member paths' SCSI state every {} ms on a thread of its own",
            opts.period.as_millis()
        );
        Ok(Sweep {
            link,
            thread: Some(thread),
        })
    }

    pub fn link(&self) -> SweepLink {
        self.link.clone()
    }
}

impl Drop for Sweep {
    fn drop(&mut self) {
        self.link.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        self.link.shared.running.store(false, Ordering::Relaxed);
    }
}

/// The latest a full pass may follow the one before while the sweep stays under a quarter of a
/// core (see [`pause_after`]): an idle path that goes offline is failed within about this much.
pub const SWEEP_SPACING_CAP: Duration = Duration::from_millis(500);

/// The time from one pass's start to the next. The period when a pass is cheap; when a pass
/// costs more than a fiftieth of a second of CPU (tens of thousands of paths), ten times that
/// CPU, so the thread takes a tenth of a core, but never more than [`SWEEP_SPACING_CAP`] while
/// a quarter of a core is enough to keep that cap: failing an idle path that went offline
/// matters more than a tenth of a core on a host with that many paths. Beyond (a pass over a
/// quarter of the cap's CPU), four times the pass's CPU: the thread never takes more than a
/// quarter of a core. CPU time, not wall time: on a starved machine a pass takes longer without
/// costing more, and stretching the period then would only delay failover.
pub fn pause_after(period: Duration, pass_cpu: Duration) -> Duration {
    let tenth = pass_cpu.saturating_mul(10);
    let quarter = pass_cpu.saturating_mul(4);
    period.max(tenth.min(SWEEP_SPACING_CAP.max(quarter)))
}

/// This thread's CPU time so far (zero if the clock cannot be read).
fn thread_cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(
        Duration::ZERO,
        |t| {
            Duration::new(
                u64::try_from(t.tv_sec()).unwrap_or(0),
                u32::try_from(t.tv_nsec()).unwrap_or(0),
            )
        },
    )
}

/// A sweep without its thread: the caller runs [`SweepWorker::pass`] (tests).
pub fn worker(
    backend: Arc<dyn DmBackend>,
    opts: SweepOptions,
    wake: Wake,
) -> (SweepLink, SweepWorker) {
    let shared = Arc::new(Shared {
        membership: Mutex::new(Arc::new(Membership::default())),
        generation: AtomicU64::new(0),
        news: Mutex::new(HashMap::new()),
        pending: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        running: AtomicBool::new(false),
        period: opts.period,
        counters: Counters::default(),
        wake,
    });
    let max_open = opts.max_open.unwrap_or_else(fd_budget);
    let worker = SweepWorker {
        shared: shared.clone(),
        backend,
        generation: 0,
        members: Arc::new(Membership::default()),
        slots: Vec::new(),
        max_open,
        ports: Vec::new(),
        early_next: Instant::now(),
        early: Vec::new(),
        last_pass_cpu: Duration::ZERO,
        dirs: HashMap::new(),
    };
    (SweepLink { shared }, worker)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns how many state files the
/// sweep may hold open: the limit less [`FD_RESERVE`] (half of it when the limit is small).
pub fn fd_budget() -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    let soft = if hard > soft {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!("cannot raise the open-file limit from {soft} to {hard}: {e}");
                soft
            }
        }
    } else {
        soft
    };
    let budget = if soft > 2 * FD_RESERVE {
        soft - FD_RESERVE
    } else {
        soft / 2
    };
    usize::try_from(budget).unwrap_or(usize::MAX)
}

/// How a member's state file is read.
enum Reader {
    /// Held open, read with one `pread` at offset 0.
    Held(File),
    /// Beyond the fd budget: `openat` of `name` (`0:0:1:5/state`) relative to a held directory
    /// (the SCSI target's), read, close.
    At { dir: Arc<OwnedFd>, name: CString },
    /// Beyond the fd budget with no directory held: open/read/close by the absolute path.
    Path,
}

/// One member's reader and the last state read.
struct Slot {
    reader: Reader,
    last: [u8; STATE_MAX],
    len: u8,
}

impl Slot {
    fn new(reader: Reader) -> Slot {
        Slot {
            reader,
            last: [0; STATE_MAX],
            len: 0,
        }
    }

    fn held(&self) -> bool {
        matches!(self.reader, Reader::Held(_))
    }

    fn last(&self) -> &[u8] {
        &self.last[..usize::from(self.len)]
    }

    fn set(&mut self, s: &[u8]) {
        let n = s.len().min(STATE_MAX);
        self.last[..n].copy_from_slice(&s[..n]);
        self.len = u8::try_from(n).unwrap_or(0);
    }
}

/// The thread's side (see [`worker`]).
pub struct SweepWorker {
    shared: Arc<Shared>,
    backend: Arc<dyn DmBackend>,
    generation: u64,
    members: Arc<Membership>,
    slots: Vec<Slot>,
    max_open: usize,
    /// The membership's ports, with their member indices.
    ports: Vec<PortSlot>,
    /// When the members of an unhealthy port may be read again (paced like the full pass).
    early_next: Instant,
    /// Reused list of the members an early read covers.
    early: Vec<usize>,
    /// The thread CPU time the last full pass took.
    last_pass_cpu: Duration,
    /// Directories held open for the members beyond the budget (see [`DIR_MAX`]), by path.
    dirs: HashMap<PathBuf, Arc<OwnedFd>>,
}

/// One transport port's reader.
struct PortSlot {
    slot: Slot,
    healthy: &'static str,
    members: Vec<usize>,
}

impl std::fmt::Debug for SweepWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SweepWorker")
            .field("members", &self.members.members.len())
            .finish()
    }
}

/// Trims the text a read returned (the trailing newline, padding).
fn trimmed(b: &[u8]) -> &[u8] {
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    let start = b[..end]
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(end);
    &b[start..end]
}

/// Whether a read error means the device is going away.
fn device_gone(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound
        || e.raw_os_error() == Some(nix::errno::Errno::ENODEV as i32)
}

/// The reader of a member beyond the fd budget: `openat` relative to its SCSI target's
/// directory, held open (`O_PATH`) in `dirs` and shared by the members under it, while fewer
/// than [`DIR_MAX`] are held; else open/read/close by the absolute path.
/// `stale`: a directory the member was not found through, opened again if `dirs` still holds it.
fn reader_beyond_budget(
    dirs: &mut HashMap<PathBuf, Arc<OwnedFd>>,
    state_file: &Path,
    stale: Option<&Arc<OwnedFd>>,
) -> Reader {
    use std::os::unix::ffi::OsStrExt;
    let Some(dir) = state_file.parent().and_then(Path::parent) else {
        return Reader::Path;
    };
    let Ok(name) = state_file
        .strip_prefix(dir)
        .map_err(drop)
        .and_then(|rel| CString::new(rel.as_os_str().as_bytes()).map_err(drop))
    else {
        return Reader::Path;
    };
    let fresh = |dir: &Path| {
        use nix::fcntl::{OFlag, open};
        open(
            dir,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ok()
        .map(Arc::new)
    };
    let held = match dirs.get(dir) {
        Some(d) if !stale.is_some_and(|s| Arc::ptr_eq(s, d)) => Some(Arc::clone(d)),
        Some(_) => fresh(dir),
        None if dirs.len() < DIR_MAX => fresh(dir),
        None => None,
    };
    match held {
        Some(d) => {
            dirs.insert(dir.to_path_buf(), Arc::clone(&d));
            Reader::At { dir: d, name }
        }
        None => Reader::Path,
    }
}

/// Opens `name` relative to `dir`, reads it at offset 0 and closes it.
fn read_in(dir: &OwnedFd, name: &std::ffi::CStr, buf: &mut [u8]) -> std::io::Result<usize> {
    use nix::fcntl::{OFlag, openat};
    let fd = openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(std::io::Error::from)?;
    File::from(fd).read_at(buf, 0)
}

impl SweepWorker {
    /// Takes a new membership when the engine replaced it: open files and last states are
    /// kept for the members that stay. Whether it did.
    fn refresh(&mut self) -> bool {
        let generation = self.shared.generation.load(Ordering::Acquire);
        if generation == self.generation {
            return false;
        }
        self.generation = generation;
        let new = Arc::clone(
            &self
                .shared
                .membership
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let old_members = std::mem::replace(&mut self.members, new);
        let mut old: HashMap<&Path, Slot> = old_members
            .members
            .iter()
            .map(|m| m.state_file.as_path())
            .zip(std::mem::take(&mut self.slots))
            .collect();
        let mut open = old.values().filter(|s| s.held()).count();
        let members = Arc::clone(&self.members);
        let mut slots = Vec::with_capacity(members.members.len());
        for m in &members.members {
            let slot = match old.remove(m.state_file.as_path()) {
                Some(s) => s,
                None => {
                    let held = if open < self.max_open {
                        File::open(&m.state_file).ok()
                    } else {
                        None
                    };
                    open += usize::from(held.is_some());
                    let mut s = Slot::new(match held {
                        Some(f) => Reader::Held(f),
                        None => reader_beyond_budget(&mut self.dirs, &m.state_file, None),
                    });
                    s.set(m.known.as_bytes());
                    s
                }
            };
            slots.push(slot);
        }
        // Files of members that left are closed here, and directories no member reads in.
        drop(old);
        self.slots = slots;
        self.dirs.retain(|_, d| Arc::strong_count(d) > 1);
        self.refresh_ports(&old_members.ports);
        let c = &self.shared.counters;
        let held = self.slots.iter().filter(|s| s.held()).count();
        c.open_files.store(held as u64, Ordering::Relaxed);
        c.members.store(self.slots.len() as u64, Ordering::Relaxed);
        true
    }

    /// Rebuilds the port readers from the membership (the last state read is kept for the
    /// ports that stay).
    fn refresh_ports(&mut self, old_ports: &[Port]) {
        let mut old: HashMap<&Path, Slot> = std::mem::take(&mut self.ports)
            .into_iter()
            .zip(old_ports)
            .map(|(ps, p)| (p.state_file.as_path(), ps.slot))
            .collect();
        let mut ports: Vec<PortSlot> = self
            .members
            .ports
            .iter()
            .map(|p| PortSlot {
                slot: old.remove(p.state_file.as_path()).unwrap_or_else(|| {
                    Slot::new(File::open(&p.state_file).map_or(Reader::Path, Reader::Held))
                }),
                healthy: p.healthy,
                members: Vec::new(),
            })
            .collect();
        for (i, m) in self.members.members.iter().enumerate() {
            if let Some(ps) = m.port.and_then(|k| ports.get_mut(k)) {
                ps.members.push(i);
            }
        }
        self.ports = ports;
        self.shared
            .counters
            .ports
            .store(self.ports.len() as u64, Ordering::Relaxed);
    }

    /// The quick part of a tick: reads every transport port; when one is out of its healthy
    /// state, reads its members not yet seen down at once if the port just moved, else when
    /// the pacing allows. Fails the paths that went down; returns how many members moved.
    pub fn tick(&mut self) -> usize {
        if self.refresh() {
            // New members: the full pass reads them all.
            return 0;
        }
        let mut buf = [0u8; STATE_MAX];
        let mut moved_port = false;
        self.early.clear();
        for ps in &mut self.ports {
            let read = match &ps.slot.reader {
                Reader::Held(f) => f.read_at(&mut buf, 0),
                Reader::At { .. } | Reader::Path => continue,
            };
            let Ok(n) = read else {
                continue;
            };
            let now = trimmed(&buf[..n]);
            if now != ps.slot.last() {
                moved_port = true;
                ps.slot.set(now);
            }
            if now != ps.healthy.as_bytes() {
                self.early.extend(
                    ps.members
                        .iter()
                        .copied()
                        .filter(|&i| !is_down(self.slots[i].last())),
                );
            }
        }
        let t = Instant::now();
        if self.early.is_empty() || (!moved_port && t < self.early_next) {
            return 0;
        }
        let cpu = thread_cpu();
        let early = std::mem::take(&mut self.early);
        let mut moved = 0;
        for &i in &early {
            moved += usize::from(self.read_member(i, &mut buf));
        }
        self.early = early;
        self.early_next = t + pause_after(self.shared.period, thread_cpu().saturating_sub(cpu));
        self.shared
            .counters
            .early_reads
            .fetch_add(1, Ordering::Relaxed);
        if moved > 0 {
            (self.shared.wake)();
        }
        moved
    }

    /// One read of every member's state; fails the paths that went down. Returns how many
    /// members moved.
    pub fn pass(&mut self) -> usize {
        self.refresh();
        let t = Instant::now();
        let cpu = thread_cpu();
        let mut moved = 0;
        let mut fallback = 0u64;
        let mut buf = [0u8; STATE_MAX];
        for i in 0..self.slots.len() {
            fallback += u64::from(!self.slots[i].held());
            moved += usize::from(self.read_member(i, &mut buf));
        }
        self.last_pass_cpu = thread_cpu().saturating_sub(cpu);
        let c = &self.shared.counters;
        c.fallback.store(fallback, Ordering::Relaxed);
        c.last_pass_cpu_us.store(
            u64::try_from(self.last_pass_cpu.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        c.passes.fetch_add(1, Ordering::Relaxed);
        c.last_pass_us.store(
            u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        if moved > 0 {
            (self.shared.wake)();
        }
        moved
    }

    /// Reads member `i`'s state (its open file, or open/read/close), records a move for the
    /// engine and fails a path that went down. Whether it moved.
    fn read_member(&mut self, i: usize, buf: &mut [u8; STATE_MAX]) -> bool {
        let c = &self.shared.counters;
        let m = &self.members.members[i];
        let slot = &mut self.slots[i];
        let read = match &slot.reader {
            Reader::Held(f) => f.read_at(buf, 0),
            Reader::At { dir, name } => read_in(dir, name, buf),
            Reader::Path => File::open(&m.state_file).and_then(|f| f.read_at(buf, 0)),
        };
        let read = match (read, &slot.reader) {
            // The directory held may be one the kernel removed and made again (a target
            // rescanned): the absolute path tells, and then the new directory is held.
            (Err(e), Reader::At { dir, .. }) if device_gone(&e) => {
                let stale = Arc::clone(dir);
                match File::open(&m.state_file) {
                    Ok(f) => {
                        slot.reader =
                            reader_beyond_budget(&mut self.dirs, &m.state_file, Some(&stale));
                        f.read_at(buf, 0)
                    }
                    Err(_) => Err(e),
                }
            }
            (read, _) => read,
        };
        let now: &[u8] = match read {
            Ok(n) => trimmed(&buf[..n]),
            Err(e) if device_gone(&e) => {
                if slot.held() {
                    slot.reader = Reader::Path;
                }
                b"deleted"
            }
            Err(e) => {
                c.read_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(dev = %m.dev, "reading {}: {e}", m.state_file.display());
                return false;
            }
        };
        if now == slot.last() {
            return false;
        }
        let was_down = is_down(slot.last());
        slot.set(now);
        let text = String::from_utf8_lossy(now).into_owned();
        {
            // The news before the fail_path: a plan from now on counts the path unusable.
            let mut news = self
                .shared
                .news
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            news.insert(m.dev.clone(), text.clone());
            self.shared.pending.store(true, Ordering::Release);
        }
        if !is_down(now) || was_down {
            tracing::info!(dev = %m.dev, to = %text, "SCSI device state changed; checking the path now");
            return true;
        }
        match self.backend.message(&m.map, &Message::FailPath(m.devno)) {
            Ok(()) => {
                c.direct_fails.fetch_add(1, Ordering::Relaxed);
                tracing::info!(dev = %m.dev, map = %m.map, state = %text, "SCSI device {text}: fail_path {} sent at once", m.devno);
            }
            Err(dm_tables::Error::NoSuchMap { .. }) => {
                c.gone.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                c.fail_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(dev = %m.dev, map = %m.map, "the sweep could not fail the path ({e}); its check will");
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree of `targets` SCSI target directories with `luns` devices each (`state`
    /// "running"), and a worker (no fd held for state files: `max_open`) sweeping all of them.
    fn tree(
        targets: u32,
        luns: u32,
        max_open: usize,
    ) -> (tempfile::TempDir, SweepLink, SweepWorker) {
        let dir = tempfile::tempdir().unwrap();
        let mut members = Vec::new();
        for t in 0..targets {
            for l in 0..luns {
                let dev_dir = dir.path().join(format!("target0:0:{t}/0:0:{t}:{l}"));
                std::fs::create_dir_all(&dev_dir).unwrap();
                std::fs::write(dev_dir.join("state"), "running\n").unwrap();
                members.push(Member {
                    dev: format!("sd{t}x{l}"),
                    devno: DevNo::new(8, t * 16 + l),
                    map: format!("mpath{l}"),
                    state_file: dev_dir.join("state"),
                    known: "running".into(),
                    port: None,
                });
            }
        }
        let (link, w) = worker(
            Arc::new(dm_tables::SimBackend::new()),
            SweepOptions {
                max_open: Some(max_open),
                ..SweepOptions::default()
            },
            Box::new(|| {}),
        );
        link.set_membership(Membership {
            members,
            ports: Vec::new(),
        });
        (dir, link, w)
    }

    fn set(dir: &Path, t: u32, l: u32, state: &str) {
        std::fs::write(
            dir.join(format!("target0:0:{t}/0:0:{t}:{l}/state")),
            format!("{state}\n"),
        )
        .unwrap();
    }

    #[test]
    fn beyond_the_fd_budget_members_are_opened_relative_to_their_target_directory() {
        let (dir, link, mut w) = tree(2, 3, 2);
        assert_eq!(w.pass(), 0);
        let s = link.stats();
        assert_eq!((s.members, s.open_files, s.fallback), (6, 2, 4), "{s:?}");
        // Two held, four read through the two target directories (one fd each, shared).
        assert_eq!(w.dirs.len(), 2);
        let at = w
            .slots
            .iter()
            .filter(|s| matches!(s.reader, Reader::At { .. }))
            .count();
        assert_eq!(at, 4);
        // A held member and two read by openat, on both targets.
        set(dir.path(), 0, 0, "offline");
        set(dir.path(), 0, 2, "transport-offline");
        set(dir.path(), 1, 1, "blocked");
        assert_eq!(w.pass(), 3);
        assert_eq!(
            link.take_news(),
            vec![
                ("sd0x0".to_string(), "offline".to_string()),
                ("sd0x2".to_string(), "transport-offline".to_string()),
                ("sd1x1".to_string(), "blocked".to_string()),
            ]
        );
        assert_eq!(w.pass(), 0, "the same states read again are no move");
        assert_eq!(link.stats().read_errors, 0);
    }

    #[test]
    fn a_device_that_vanished_reads_deleted_whatever_its_reader() {
        let (dir, link, mut w) = tree(1, 3, 1);
        assert_eq!(w.pass(), 0);
        for l in [0, 2] {
            std::fs::remove_dir_all(dir.path().join(format!("target0:0:0/0:0:0:{l}"))).unwrap();
        }
        // tmpfs keeps a removed file readable through a held fd (sysfs answers ENODEV): the
        // held member 0 is not asserted here, member 2 (openat) is.
        w.pass();
        let news = link.take_news();
        assert!(
            news.contains(&("sd0x2".to_string(), "deleted".to_string())),
            "{news:?}"
        );
        assert_eq!(link.stats().read_errors, 0);
    }

    #[test]
    fn a_target_directory_made_again_is_read_through_the_new_one() {
        let (dir, link, mut w) = tree(1, 2, 0);
        assert_eq!(w.pass(), 0);
        // The target goes away and comes back (a rescan) with the same names: the directory
        // held is the removed one; the members are still read, from the new one.
        let target = dir.path().join("target0:0:0");
        std::fs::remove_dir_all(&target).unwrap();
        for l in 0..2 {
            std::fs::create_dir_all(target.join(format!("0:0:0:{l}"))).unwrap();
            set(dir.path(), 0, l, "running");
        }
        assert_eq!(w.pass(), 0, "nothing moved: {:?}", link.take_news());
        set(dir.path(), 0, 1, "offline");
        assert_eq!(w.pass(), 1);
        assert_eq!(
            link.take_news(),
            vec![("sd0x1".to_string(), "offline".to_string())]
        );
        assert_eq!(w.dirs.len(), 1, "the new directory replaced the old one");
        // Control: the same pass through a stale directory would have read "deleted".
        std::fs::remove_dir_all(&target).unwrap();
        w.pass();
        let news = link.take_news();
        assert_eq!(news.len(), 2, "{news:?}");
        assert!(news.iter().all(|(_, s)| s == "deleted"), "{news:?}");
    }

    #[test]
    fn past_the_directory_cap_members_are_read_by_their_absolute_path() {
        let (dir, link, mut w) = tree(u32::try_from(DIR_MAX).unwrap() + 1, 1, 0);
        assert_eq!(w.pass(), 0);
        assert_eq!(w.dirs.len(), DIR_MAX);
        assert!(matches!(w.slots[DIR_MAX].reader, Reader::Path));
        let last = u32::try_from(DIR_MAX).unwrap();
        set(dir.path(), last, 0, "offline");
        assert_eq!(w.pass(), 1);
        assert_eq!(
            link.take_news(),
            vec![(format!("sd{last}x0"), "offline".to_string())]
        );
    }

    #[test]
    fn a_slow_pass_spaces_the_passes_out_within_the_latency_cap_and_a_quarter_of_a_core() {
        let period = Duration::from_millis(200);
        let ms = Duration::from_millis;
        // cheap passes: the period
        assert_eq!(pause_after(period, ms(5)), period);
        assert_eq!(pause_after(period, ms(20)), period);
        // a tenth of a core while that stays under the cap
        assert_eq!(pause_after(period, ms(35)), ms(350));
        // the cap, at up to a quarter of a core (32,768 paths, 13,792 read by open/read/close:
        // 118 ms a pass used to space the passes 1.18 s apart)
        assert_eq!(pause_after(period, ms(50)), SWEEP_SPACING_CAP);
        assert_eq!(pause_after(period, ms(118)), SWEEP_SPACING_CAP);
        assert_eq!(pause_after(period, ms(125)), SWEEP_SPACING_CAP);
        // beyond: never more than a quarter of a core
        assert_eq!(pause_after(period, ms(200)), ms(800));
        for cpu in (0..2000).step_by(7).map(ms) {
            let p = pause_after(period, cpu);
            assert!(p >= period, "{cpu:?} -> {p:?}");
            assert!(
                p >= cpu.saturating_mul(4),
                "{cpu:?} -> {p:?}: over a quarter of a core"
            );
            assert!(
                p <= SWEEP_SPACING_CAP.max(cpu.saturating_mul(4)),
                "{cpu:?} -> {p:?}: beyond the cap with a quarter of a core to spare"
            );
        }
    }
}
