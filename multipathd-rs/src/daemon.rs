//! The daemon: the [`Engine`] behind the control socket ([`crate::socket`]), signals
//! (SIGHUP reconfigure, SIGTERM/SIGINT stop and leave every map in place), sd_notify, and the
//! loop that feeds path checks, uevents and dm events to the engine.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::checker::runner::CheckRunner;
use crate::clock::Clock;
use crate::engine::{Engine, SyncReport};
use crate::error::Error;
use crate::output;
use crate::socket::{
    Command, CommandHandler, Format, Peer, Response, Server, ServerHandle, ServerOptions, Stopper,
};
use crate::state::{self, MapView};
use crate::uevent::netlink::KernelUeventSocket;
use crate::uevent::{BurstCollector, UeventFeed};

pub mod applier;
mod pidfile;
pub use pidfile::{DEFAULT_PIDFILE, PidFile};

/// The engine shared between the socket threads and the daemon loop, and the snapshot the
/// read commands are answered from.
///
/// The lock on the engine is held by the loop for one pass of its work and by a command
/// that changes something; `show ...` never takes it: it reads the last published
/// [`Published`] snapshot (the loop publishes after a pass that changed a path or map, at
/// most every [`PUBLISH_INTERVAL`]; a command that changes something publishes before it
/// answers). A `rescan` holds the lock only to plan and apply, not while the SCSI layer
/// scans and settles.
pub struct Daemon {
    engine: Mutex<Engine>,
    stop: AtomicBool,
    stopper: Mutex<Option<Stopper>>,
    published: Mutex<Arc<Published>>,
    /// A reader found the snapshot older than [`SNAPSHOT_MAX_AGE`]: the loop publishes a
    /// fresh one at its next pass even if nothing changed.
    wanted: AtomicBool,
    /// One rescan at a time (its slow part runs without the engine lock).
    rescanning: Mutex<()>,
    /// Signalled (with the engine lock) when an apply finished: a command that syncs waits
    /// on it, without the lock, until no apply is in flight.
    applied: Condvar,
}

/// What the read commands see: a snapshot of the engine and the configuration text, with
/// each answer rendered once (64 clients looping on `show paths --json` cost one rendering
/// per snapshot, not one each).
pub struct Published {
    pub snapshot: state::Snapshot,
    pub config: String,
    /// When it was taken (real time).
    pub taken: std::time::Instant,
    answers: Mutex<std::collections::HashMap<String, Arc<Response>>>,
}

impl std::fmt::Debug for Published {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Published")
            .field("maps", &self.snapshot.maps.len())
            .field("paths", &self.snapshot.paths.len())
            .finish()
    }
}

impl Published {
    fn of(e: &Engine) -> Published {
        Published {
            snapshot: e.snapshot(),
            config: e.config().view().to_string(),
            taken: std::time::Instant::now(),
            answers: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// The answer to a read command, rendered at most once per snapshot; None for a
    /// command that changes something.
    /// The answer is shared: every client of this snapshot is sent the same text.
    pub fn answer(&self, command: &Command) -> Option<Arc<Response>> {
        if !is_read(command) {
            return None;
        }
        let key = format!("{command:?}");
        // Rendered while the lock is held: 64 clients arriving at a fresh snapshot wait for
        // one rendering instead of each rendering the same 20 MB text at once.
        let mut answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(r) = answers.get(&key) {
            return Some(Arc::clone(r));
        }
        let r = Arc::new(read_response(&self.snapshot, &self.config, command)?);
        answers.insert(key, Arc::clone(&r));
        Some(r)
    }
}

/// Whether a command only reads (answered from the snapshot, for any user).
pub fn is_read(command: &Command) -> bool {
    !command.is_change()
}

/// A published snapshot older than this is refreshed at the loop's next pass once a reader
/// asks (uptime, next-check bars), even when nothing changed.
pub const SNAPSHOT_MAX_AGE: Duration = Duration::from_secs(1);

/// While paths and maps keep changing, the loop publishes a snapshot at most this often
/// (building one costs O(paths) under the lock).
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(250);

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("stop", &self.stop.load(Ordering::Relaxed))
            .finish()
    }
}

impl Daemon {
    pub fn new(engine: Engine) -> Daemon {
        let published = Arc::new(Published::of(&engine));
        Daemon {
            engine: Mutex::new(engine),
            stop: AtomicBool::new(false),
            stopper: Mutex::new(None),
            published: Mutex::new(published),
            wanted: AtomicBool::new(false),
            rescanning: Mutex::new(()),
            applied: Condvar::new(),
        }
    }

    /// The snapshot the read commands see now.
    pub fn published(&self) -> Arc<Published> {
        Arc::clone(
            &self
                .published
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Publishes the engine's state for the read commands (call with the engine locked).
    pub fn publish(&self, e: &Engine) {
        // The sweep thread follows the members as the snapshot does (only when they changed).
        e.publish_sweep_members();
        let p = Arc::new(Published::of(e));
        self.wanted.store(false, Ordering::SeqCst);
        *self
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = p;
    }

    /// Whether a reader asked for a fresher snapshot.
    pub fn snapshot_wanted(&self) -> bool {
        self.wanted.load(Ordering::SeqCst)
    }

    /// `rescan`: the host scans, the settle wait and the sysfs scan run without the engine
    /// lock; planning and applying take it.
    fn rescan(&self) -> Response {
        let _one = self
            .rescanning
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let job = self.engine().begin_rescan();
        let done = job.run();
        report_response(self.sync_applying_here(|e| e.finish_rescan(done)))
    }

    /// A command that syncs: waits (without the lock) until no apply is in flight, runs `f`
    /// under the lock (it plans), applies the jobs it made on this thread without the lock,
    /// and books them under the lock again. The report is the one after the apply.
    fn sync_applying_here(
        &self,
        f: impl FnOnce(&mut Engine) -> Result<SyncReport, Error>,
    ) -> Result<SyncReport, Error> {
        let mut e = self.engine();
        // (Woken when an apply is booked; the timeout only re-checks, e.g. after a stop.)
        while !e.applies_idle() && !self.stopping() {
            e = self
                .applied
                .wait_timeout(e, Duration::from_secs(1))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let r = f(&mut e);
        let jobs = e.take_jobs();
        if jobs.is_empty() {
            self.publish(&e);
            return r;
        }
        let backend = e.shared_backend();
        drop(e);
        let done: Vec<_> = jobs
            .into_iter()
            .map(|j| j.apply(backend.as_ref()))
            .collect();
        let mut e = self.engine();
        let r = match r {
            Ok(mut report) => applier::book_into(&mut e, &mut report, done).map(|()| report),
            Err(err) => {
                for d in done {
                    applier::log_finished(e.finish_job(d));
                }
                Err(err)
            }
        };
        self.applied.notify_all();
        self.publish(&e);
        r
    }

    /// Wakes the commands waiting for the applies to finish (call with the engine locked).
    fn applies_finished(&self) {
        self.applied.notify_all();
    }

    pub fn engine(&self) -> MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `shutdown` was asked for.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn set_stopper(&self, s: Stopper) {
        *self.stopper.lock().unwrap_or_else(PoisonError::into_inner) = Some(s);
    }

    /// Stops the socket server and the loop (maps stay).
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(s) = self
            .stopper
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            s.stop();
        }
    }
}

impl CommandHandler for Daemon {
    fn handle(&self, command: &Command, peer: &Peer) -> Response {
        Arc::unwrap_or_clone(self.handle_shared(command, peer))
    }

    /// A read command gets the snapshot's rendered answer itself (64 clients of one
    /// snapshot share one text), a change runs on the engine.
    fn handle_shared(&self, command: &Command, _peer: &Peer) -> Arc<Response> {
        if *command == Command::Shutdown {
            self.stop.store(true, Ordering::SeqCst);
            return Arc::new(Response::ok("shutting down; every map stays in place\n"));
        }
        let p = self.published();
        if let Some(r) = p.answer(command) {
            if p.taken.elapsed() > SNAPSHOT_MAX_AGE {
                self.wanted.store(true, Ordering::SeqCst);
            }
            return r;
        }
        if *command == Command::Rescan {
            return Arc::new(self.rescan());
        }
        if command_syncs(command) {
            // (command_syncs: sync_command has an answer for it)
            let r = self.sync_applying_here(|e| {
                sync_command(e, command).unwrap_or_else(|| Ok(SyncReport::default()))
            });
            return Arc::new(sync_response(command, r));
        }
        let mut e = self.engine();
        let r = handle_command(&mut e, command);
        self.publish(&e);
        Arc::new(r)
    }
}

fn error_response(e: &Error) -> Response {
    match e {
        Error::NoSuchMap { .. } | Error::NoSuchPath { .. } | Error::PathNotInMap { .. } => {
            Response::not_found(format!("{e}\n"))
        }
        _ => Response::failed(format!("{e}\n")),
    }
}

/// `subject: text`, unless the text names the subject already (most of our errors do): an
/// error reads as one sentence naming its device or map once.
pub fn about(subject: &str, text: &str) -> String {
    if text.contains(subject) {
        text.to_string()
    } else {
        format!("{subject}: {text}")
    }
}

/// A sync report as the lines an admin reads: one per map that changed or failed.
pub fn report_text(r: &SyncReport) -> String {
    let mut s = String::new();
    for m in &r.maps {
        let p = &m.plan;
        let line = match (&p.error, p.action) {
            (Some(e), _) => about(&p.name, &format!("failed: {e}")),
            (None, crate::discovery::Action::Keep) => continue,
            (None, a) => {
                let mut l = format!(
                    "{}: {} ({}), {} path(s) in {} group(s)",
                    p.name,
                    a.as_str(),
                    p.desired.wwid,
                    p.desired.paths().count(),
                    p.desired.groups.len()
                );
                if let Some(old) = p.current_name.as_deref().filter(|o| *o != p.name) {
                    let _ = write!(l, ", was {old}");
                }
                if !p.changes.is_empty() {
                    let _ = write!(l, ": {}", p.changes.join("; "));
                }
                l
            }
        };
        let _ = writeln!(s, "{line}");
    }
    for n in &r.kept_without_paths {
        let _ = writeln!(s, "{n}: kept as it is (no path present)");
    }
    for p in &r.pending_renames {
        let _ = writeln!(s, "pending: {p}");
    }
    for e in &r.errors {
        if !r.maps.iter().any(|m| m.plan.error.as_deref() == Some(e)) {
            let _ = writeln!(s, "error: {e}");
        }
    }
    if s.is_empty() {
        s.push_str("ok: nothing to change\n");
    }
    s
}

fn report_response(r: Result<SyncReport, Error>) -> Response {
    match r {
        Ok(r) => {
            let failed = r.maps.iter().any(|m| m.plan.error.is_some());
            let text = report_text(&r);
            if failed {
                Response::failed(text)
            } else {
                Response::ok(text)
            }
        }
        Err(e) => error_response(&e),
    }
}

/// Answers a read command from a snapshot and the configuration text, exactly as
/// [`handle_command`] answers it from the engine; None for a command that changes something.
pub fn read_response(snap: &state::Snapshot, config: &str, command: &Command) -> Option<Response> {
    let find = |map: &str| -> Result<&MapView, Response> {
        snap.find_map(map).ok_or_else(|| {
            error_response(&Error::NoSuchMap {
                map: map.to_string(),
            })
        })
    };
    Some(match command {
        Command::ShowPaths { format } => Response::ok(match format {
            Format::Human => output::paths_table(&snap.paths),
            Format::Json | Format::MultipathdJson => output::paths_json(&snap.paths),
        }),
        Command::ShowMaps { format } => Response::ok(match format {
            Format::Human => output::maps_table(&snap.maps),
            Format::Json => output::maps_json(&snap.maps),
            Format::MultipathdJson => output::multipathd_maps_json(&snap.maps),
        }),
        Command::ShowMap { map, format } => match find(map) {
            Ok(v) => Response::ok(match format {
                Format::Human => output::topology(std::slice::from_ref(v)),
                Format::Json => output::maps_json(std::slice::from_ref(v)),
                Format::MultipathdJson => output::multipathd_map_json(v),
            }),
            Err(r) => r,
        },
        Command::ShowTopology { map } => match map {
            None => Response::ok(output::topology(&snap.maps)),
            Some(m) => match find(m) {
                Ok(v) => Response::ok(output::topology(std::slice::from_ref(v))),
                Err(r) => r,
            },
        },
        Command::ShowConfig => Response::ok(config.to_string()),
        Command::ShowStatus { format } => {
            let s = snap.status.clone()?;
            Response::ok(match format {
                Format::Human => output::status_text(&s),
                Format::Json | Format::MultipathdJson => output::status_json(&s),
            })
        }
        _ => return None,
    })
}

/// Answers one control command with the engine (the socket has checked permissions).
pub fn handle_command(e: &mut Engine, command: &Command) -> Response {
    match command {
        Command::ShowPaths { format } => {
            let paths = e.paths_view();
            Response::ok(match format {
                Format::Human => output::paths_table(&paths),
                Format::Json | Format::MultipathdJson => output::paths_json(&paths),
            })
        }
        Command::ShowMaps { format } => {
            let maps = e.maps_view();
            Response::ok(match format {
                Format::Human => output::maps_table(&maps),
                Format::Json => output::maps_json(&maps),
                Format::MultipathdJson => output::multipathd_maps_json(&maps),
            })
        }
        Command::ShowMap { map, format } => match e.map_view_of(map) {
            Ok(v) => Response::ok(match format {
                Format::Human => output::topology(std::slice::from_ref(&v)),
                Format::Json => output::maps_json(std::slice::from_ref(&v)),
                Format::MultipathdJson => output::multipathd_map_json(&v),
            }),
            Err(err) => error_response(&err),
        },
        Command::ShowTopology { map } => match map {
            None => Response::ok(output::topology(&e.maps_view())),
            Some(m) => match e.map_view_of(m) {
                Ok(v) => Response::ok(output::topology(std::slice::from_ref(&v))),
                Err(err) => error_response(&err),
            },
        },
        Command::ShowConfig => Response::ok(e.config().view().to_string()),
        Command::ShowStatus { format } => {
            let s = e.status();
            Response::ok(match format {
                Format::Human => output::status_text(&s),
                Format::Json | Format::MultipathdJson => output::status_json(&s),
            })
        }
        Command::FailPath { dev } => sent_response(e.fail_path(dev)),
        Command::ReinstatePath { dev } => sent_response(e.reinstate_path(dev)),
        Command::SwitchGroup { map, group } => sent_response(e.switch_group(map, *group)),
        Command::DelMap { map } => match e.del_map(map) {
            Ok(name) => Response::ok(format!("{name}: removed\n")),
            Err(err) => error_response(&err),
        },
        Command::Rescan => report_response(e.rescan()),
        Command::Shutdown => Response::ok("shutting down\n"),
        c => sync_command(e, c).map_or_else(
            || Response::failed("unhandled command\n"),
            |r| sync_response(c, r),
        ),
    }
}

/// Whether a command re-plans maps and answers with a sync report (besides `rescan`).
fn command_syncs(command: &Command) -> bool {
    matches!(
        command,
        Command::ResizeMap { .. }
            | Command::RenameMapForce { .. }
            | Command::AddPath { .. }
            | Command::DelPath { .. }
            | Command::AddMap { .. }
            | Command::Reconfigure
    )
}

/// Runs a command that syncs (see [`command_syncs`]); None for any other.
fn sync_command(e: &mut Engine, command: &Command) -> Option<Result<SyncReport, Error>> {
    Some(match command {
        Command::ResizeMap { map } => e.resize_map(map),
        Command::RenameMapForce { map } => e.force_rename(map),
        Command::AddPath { dev } => e.add_path(dev),
        Command::DelPath { dev } => e.del_path(dev),
        Command::AddMap { map } => e.add_map(map),
        Command::Reconfigure => e.reconfigure(),
        _ => return None,
    })
}

fn sync_response(command: &Command, r: Result<SyncReport, Error>) -> Response {
    match (command, r) {
        (
            Command::Reconfigure,
            Err(err @ (Error::ConfigRead { .. } | Error::ConfigInvalid { .. })),
        ) => Response::failed(format!("{}\n", kept_config(&err))),
        (_, r) => report_response(r),
    }
}

/// The sentence for a reload whose configuration file could not be used.
fn kept_config(e: &Error) -> String {
    format!("reconfigure refused, the running configuration stays in effect: {e}")
}

fn sent_response(r: Result<crate::engine::Sent, Error>) -> Response {
    match r {
        Ok(s) => Response::ok(format!("{}: {}\n", s.map, s.message)),
        Err(e) => error_response(&e),
    }
}

/// The `multipath -d` view of a planned map (what it would look like; kernel state undef).
pub fn planned_view(p: &crate::discovery::MapPlan) -> MapView {
    let d = &p.desired;
    // one string per map, shared by its paths' views
    let wwid: Arc<str> = Arc::from(d.wwid.as_str());
    let (vendor, product, revision): (Arc<str>, Arc<str>, Arc<str>) = (
        Arc::from(d.vendor.as_str()),
        Arc::from(d.product.as_str()),
        Arc::from(d.revision.as_str()),
    );
    let checker: Arc<str> = Arc::from(d.settings.checker);
    let groups = d
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| state::GroupView {
            number: u32::try_from(i + 1).unwrap_or(u32::MAX),
            selector: d.settings.selector.clone(),
            priority: g.priority,
            dm_state: state::GroupDmState::Undef,
            marginal: false,
            paths: g
                .paths
                .iter()
                .map(|m| {
                    let hctl: lun_scan::Hctl =
                        m.hctl.parse().unwrap_or(lun_scan::Hctl::new(0, 0, 0, 0));
                    state::PathView {
                        hctl: state::Hctl::new(hctl.host, hctl.channel, hctl.target, hctl.lun),
                        dev: m.dev.clone(),
                        devno: state::DevNo::new(m.devno.major, m.devno.minor),
                        dm_state: state::PathDmState::Undef,
                        dev_state: match m.state.as_str() {
                            "running" => state::DevState::Running,
                            "offline" => state::DevState::Offline,
                            "transport-offline" => state::DevState::TransportOffline,
                            "blocked" => state::DevState::Blocked,
                            _ => state::DevState::Undef,
                        },
                        chk_state: if m.usable {
                            state::CheckerState::Ready
                        } else {
                            state::CheckerState::Faulty
                        },
                        checker: Arc::clone(&checker),
                        priority: m.priority,
                        wwid: Arc::clone(&wwid),
                        vendor: Arc::clone(&vendor),
                        product: Arc::clone(&product),
                        revision: Arc::clone(&revision),
                        size_sectors: d.size_sectors,
                        host_wwnn: None,
                        host_wwpn: None,
                        target_wwnn: None,
                        target_wwpn: None,
                        host_adapter: None,
                        marginal: false,
                        fail_count: 0,
                        next_check: state::NextCheck::Orphan,
                    }
                })
                .collect(),
        })
        .collect();
    MapView {
        name: p.name.clone(),
        wwid: d.wwid.clone(),
        uuid: d.uuid.clone(),
        dm_dev: None,
        devno: None,
        size_sectors: d.size_sectors,
        vendor: d.vendor.clone(),
        product: d.product.clone(),
        revision: d.revision.clone(),
        features: crate::engine::features_text(&d.table),
        hwhandler: crate::engine::hwhandler_text(&d.table),
        write_protect: state::WriteProtect::Undef,
        dm_state: state::MapDmState::Undef,
        queueing: state::Queueing::Undef,
        failback: state::Failback::Undef,
        action: match p.action {
            crate::discovery::Action::Create => Some(state::MapAction::Create),
            crate::discovery::Action::Reload | crate::discovery::Action::RenameReload => {
                Some(state::MapAction::Reload)
            }
            crate::discovery::Action::Rename => Some(state::MapAction::Rename),
            _ => None,
        },
        stats: state::MapStats::default(),
        groups,
    }
}

/// Sends a message to systemd's notify socket, if `$NOTIFY_SOCKET` is set.
pub fn sd_notify(message: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    sd_notify_to(&target.to_string_lossy(), message);
}

/// Sends `message` to the notify socket `target` (a path, or `@name` for the abstract
/// namespace), as systemd's sd_notify does. Failures are logged, never fatal.
pub fn sd_notify_to(target: &str, message: &str) {
    use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr, sendto, socket};
    use std::os::fd::AsRawFd;
    let addr = if let Some(abs) = target.strip_prefix('@') {
        UnixAddr::new_abstract(abs.as_bytes())
    } else {
        UnixAddr::new(Path::new(&target))
    };
    let Ok(addr) = addr else {
        tracing::warn!("NOTIFY_SOCKET {target:?} is not a usable socket address");
        return;
    };
    match socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    ) {
        Ok(fd) => {
            if let Err(e) = sendto(fd.as_raw_fd(), message.as_bytes(), &addr, MsgFlags::empty()) {
                tracing::warn!("sd_notify to {target}: {e}");
            }
        }
        Err(e) => tracing::warn!("sd_notify: cannot create a socket: {e}"),
    }
}

/// How often the daemon compares every member path's SCSI `device/state` with what it last
/// saw, so an offline path is failed (and a returning one re-checked) within about a second,
/// even when its regular check is 20 s away.
pub const STATE_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The checker pool's bound on queued + running checks: enough for every path of a lost HBA
/// at 32k paths to be queued within two passes of the loop.
pub const CHECK_QUEUE: usize = 16_384;

/// While check results stream in, how long the loop gathers them before applying a batch.
pub const CHECK_BATCH_WINDOW: Duration = Duration::from_millis(10);

pub use crate::dmevents::DM_EVENT_POLL;

/// Daemon settings besides the engine.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub socket: PathBuf,
    /// Listen for kernel uevents (only meaningful when the sysfs root is the real /sys).
    pub uevents: bool,
    /// How often the loop wakes up at most.
    pub tick: Duration,
}

/// What the process's signals ask of the loop.
pub enum Signal {
    Reconfigure,
    Stop,
    /// dm events arrived ([`crate::dmevents`]): run a pass now.
    DmEvents,
    /// The sweep thread read a path's SCSI state move ([`crate::sweep`]): run a pass now.
    Swept,
    /// The applier carried out a job ([`applier`]): book it now.
    Applied,
}

fn spawn_signal_thread(tx: mpsc::Sender<Signal>) -> Result<(), Error> {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal as S, pthread_sigmask};
    let mut set = SigSet::empty();
    set.add(S::SIGHUP);
    set.add(S::SIGTERM);
    set.add(S::SIGINT);
    // Blocked here, before any other thread starts, so every thread inherits the mask and
    // the signals are only ever taken by sigwait below.
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None).map_err(|e| Error::Io {
        path: PathBuf::from("(signal mask)"),
        source: std::io::Error::from(e),
    })?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            loop {
                match set.wait() {
                    Ok(S::SIGHUP) => {
                        if tx.send(Signal::Reconfigure).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {
                        let _ = tx.send(Signal::Stop);
                        return;
                    }
                    Err(e) => {
                        tracing::error!("sigwait failed: {e}");
                        return;
                    }
                }
            }
        })
        .map_err(|source| Error::Io {
            path: PathBuf::from("(signal thread)"),
            source,
        })?;
    Ok(())
}

/// Why the event loop ran a full reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconcile {
    /// The uevent socket overran: events were lost.
    Overrun,
    /// `reconcile_interval` passed since the last one.
    Periodic,
}

/// One pass of the daemon's work, apart from signals and the socket: uevents (with a full
/// resync at once after an overrun), dm events, the state sweep, path checks, the
/// no_path_retry countdowns and the periodic reconcile that repairs what a lost uevent
/// would have told. Driven by [`run`]; tests drive it with a scripted [`UeventFeed`] and a
/// manual clock.
pub struct EventLoop {
    feed: Option<Box<dyn UeventFeed>>,
    collector: BurstCollector,
    runner: CheckRunner,
    last_queue_tick: std::time::Instant,
    last_state_sweep: std::time::Instant,
    last_reconcile: std::time::Instant,
    dm_events: crate::dmevents::DmEvents,
    overrun: bool,
    /// Results collected by [`EventLoop::wait_checks`] outside the engine lock.
    waited: Vec<crate::checker::runner::CheckReport>,
    /// A path or map changed since [`EventLoop::take_dirty`].
    dirty: bool,
    scan_outside: bool,
    reconcile_wanted: Option<Reconcile>,
    /// Paths to check again as soon as their running check returns.
    recheck_after: std::collections::HashSet<String>,
}

impl std::fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop")
            .field("uevents", &self.feed.is_some())
            .field("overrun", &self.overrun)
            .finish()
    }
}

impl EventLoop {
    /// The loop starts just after the daemon's initial sync, so the first periodic
    /// reconcile is one interval from now.
    pub fn new(clock: Arc<dyn Clock>, feed: Option<Box<dyn UeventFeed>>) -> EventLoop {
        let now = clock.now();
        EventLoop {
            feed,
            collector: BurstCollector::default(),
            runner: CheckRunner::new(clock, CHECK_QUEUE),
            last_queue_tick: now,
            last_state_sweep: now,
            last_reconcile: now,
            dm_events: crate::dmevents::DmEvents::polling(),
            overrun: false,
            waited: Vec::new(),
            dirty: false,
            scan_outside: false,
            reconcile_wanted: None,
            recheck_after: std::collections::HashSet::new(),
        }
    }

    /// One pass at `now`. Returns the reconcile it ran, if any.
    pub fn step(&mut self, e: &mut Engine, now: std::time::Instant) -> Option<Reconcile> {
        // The sweep thread's news first: every plan of this pass sees the states it read.
        if !e.take_sweep_news().is_empty() {
            self.dirty = true;
        }
        if let Some(u) = self.feed.as_mut() {
            let (events, errors) = u.drain();
            for err in errors {
                if crate::uevent::is_overrun(&err) {
                    tracing::warn!(
                        "kernel uevents were lost ({err}); resynchronising every path and map now"
                    );
                    self.overrun = true;
                } else {
                    tracing::warn!("{err}");
                }
            }
            for ev in events {
                self.collector.push(ev, now);
            }
        }
        if let Some(batch) = self.collector.take_if_ready(now) {
            self.dirty = true;
            match e.on_uevents(batch) {
                Ok(r) if r.changed() > 0 => {
                    tracing::info!("uevents: {}", report_text(&r).trim_end())
                }
                Ok(r) => {
                    tracing::debug!(ignored = ?r.ignored, errors = ?r.errors, maps = r.maps.len(), "uevents: nothing changed");
                }
                Err(err) => tracing::error!(
                    "uevent handling failed: {err} (its devices are read again in a moment)"
                ),
            }
        }
        if e.retries_due() {
            self.dirty = true;
            match e.run_due_retries() {
                Ok(r) if r.changed() > 0 => {
                    tracing::info!("re-read devices: {}", report_text(&r).trim_end())
                }
                Ok(_) => {}
                Err(err) => tracing::error!("re-reading devices failed: {err}"),
            }
        }
        let reconcile = self.reconcile_due(e, now);
        if let Some(why) = reconcile {
            if self.scan_outside {
                // The caller scans without the engine lock, then calls finish_reconcile.
                self.overrun = false;
                self.last_reconcile = now;
                self.reconcile_wanted = Some(why);
            } else {
                self.reconcile(e, now, why);
            }
        }
        if self.dm_events.step(e, now) {
            self.dirty = true;
        }
        if !e.sweep_attached() && now.duration_since(self.last_state_sweep) >= STATE_SWEEP_INTERVAL
        {
            self.last_state_sweep = now;
            if !e.state_sweep().is_empty() {
                self.dirty = true;
            }
        }
        // Results first (failover), then new checks: a swept path's check starts this pass.
        let mut reports = std::mem::take(&mut self.waited);
        reports.extend(self.runner.poll());
        let mut batch = Vec::with_capacity(reports.len());
        for report in reports {
            if self.recheck_after.remove(&report.dev) {
                // Its state moved while this check ran: check it again at once.
                e.recheck_path(&report.dev);
            }
            if report.late {
                continue;
            }
            let before = e.last_check(&report.dev).map(|c| c.state);
            if before != Some(report.result.state) {
                self.dirty = true;
            }
            batch.push((report.dev, report.result));
        }
        if !batch.is_empty() {
            let out = e.apply_check_results(batch);
            if !out.sent.is_empty() {
                self.dirty = true;
                tracing::info!("{} message(s) sent after checks", out.sent.len());
            }
            for (dev, err) in out.errors {
                tracing::warn!("{}", about(&dev, &err.to_string()));
            }
        }
        self.submit_due(e);
        e.set_runner_stats(self.runner.stats());
        if now.duration_since(self.last_queue_tick) >= Duration::from_secs(1) {
            self.last_queue_tick = now;
            match e.tick_queueing() {
                Ok(sent) if !sent.is_empty() => self.dirty = true,
                Ok(_) => {}
                Err(err) => tracing::warn!("no_path_retry: {err}"),
            }
        }
        // [cluster]: follow the registry, publish this host's maps (each call bounded).
        if let Some(r) = e.cluster_tick(now)
            && r.changed() > 0
        {
            self.dirty = true;
            tracing::info!("cluster: {}", report_text(&r).trim_end());
        }
        reconcile
    }

    /// Whether a path or map changed since the last call (the snapshot is then stale).
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Let the caller run the reconcile's sysfs scan without the engine lock: [`step`]
    /// then only notes that one is due ([`EventLoop::take_reconcile`]).
    ///
    /// [`step`]: EventLoop::step
    pub fn scan_outside_the_lock(&mut self) {
        self.scan_outside = true;
    }

    /// Takes dm events from `d` (a waiting thread, see [`crate::dmevents`]) instead of
    /// comparing every map's event number every [`DM_EVENT_POLL`].
    pub fn take_dm_events_from(&mut self, d: crate::dmevents::DmEvents) {
        self.dm_events = d;
    }

    /// A reconcile noted by [`EventLoop::step`], for the caller to scan and then apply with
    /// [`EventLoop::finish_reconcile`].
    pub fn take_reconcile(&mut self) -> Option<Reconcile> {
        self.reconcile_wanted.take()
    }

    /// Applies a reconcile whose scan the caller made.
    pub fn finish_reconcile(&mut self, e: &mut Engine, scan: lun_scan::Scan, why: Reconcile) {
        self.dirty = true;
        log_reconcile(e.sync_scanned(scan), why);
    }

    /// Hands the due checks to the pool, as many as it has room for; the rest stay due and
    /// are counted as refused. No sysfs is read for a check that is not submitted.
    fn submit_due(&mut self, e: &mut Engine) {
        let (due, left) = e.due_checks_up_to(self.runner.free_slots());
        self.runner.count_refused(left);
        for (checker, target) in due {
            let dev = target.dev.clone();
            match self
                .runner
                .submit(checker, target, crate::checker::DEFAULT_CHECK_TIMEOUT)
            {
                Ok(crate::checker::runner::Submit::AlreadyInFlight) => {
                    self.recheck_after.insert(dev);
                }
                Ok(_) => {}
                Err(err) => tracing::warn!("{err}"),
            }
        }
    }

    /// Whether check results are awaited or checks wait for room in the pool: the loop
    /// should then wait on the pool (see [`EventLoop::wait_checks`]), not sleep a whole tick.
    pub fn checks_pending(&self) -> bool {
        self.runner.stats().in_flight > 0
    }

    /// Waits up to `max` (real time) for check results, without the engine: they are kept
    /// for the next [`EventLoop::step`]. Returns whether any arrived.
    pub fn wait_checks(&mut self, max: Duration) -> bool {
        let got = self.runner.wait(max);
        if got.is_empty() {
            return false;
        }
        self.waited.extend(got);
        // Gather what else arrives within a short window, so a burst is applied in a few
        // passes rather than one pass (and one scan of the schedule) per result.
        let until = std::time::Instant::now() + CHECK_BATCH_WINDOW.min(max);
        while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
            let more = self.runner.wait(left);
            if more.is_empty() {
                break;
            }
            self.waited.extend(more);
        }
        true
    }

    fn reconcile_due(&self, e: &Engine, now: std::time::Instant) -> Option<Reconcile> {
        if self.overrun {
            return Some(Reconcile::Overrun);
        }
        let every = e.config().global().reconcile_interval.value;
        (every > 0
            && now.duration_since(self.last_reconcile) >= Duration::from_secs(u64::from(every)))
        .then_some(Reconcile::Periodic)
    }

    /// A full sync: every path re-read from sysfs, every map re-planned (a map already
    /// right is kept untouched).
    fn reconcile(&mut self, e: &mut Engine, now: std::time::Instant, why: Reconcile) {
        self.overrun = false;
        self.last_reconcile = now;
        self.dirty = true;
        log_reconcile(e.sync(), why);
    }
}

/// What the daemon does once its initial sync is booked.
struct Starting {
    server: Option<Server>,
    ready: Option<mpsc::Sender<Arc<Daemon>>>,
}

impl Starting {
    /// Serves the control socket, tells systemd (READY=1) and [`start`]'s caller.
    fn ready(&mut self, daemon: &Arc<Daemon>, socket: &Path) -> Result<ServerHandle, Error> {
        let server = self.server.take().ok_or_else(|| Error::Io {
            path: socket.to_path_buf(),
            source: std::io::Error::other("the control socket is already served"),
        })?;
        let handle = server.spawn(daemon.clone())?;
        let status = {
            let e = daemon.engine();
            format!("{} maps, {} paths", e.map_names().len(), e.paths().len())
        };
        sd_notify(&format!("READY=1\nSTATUS={status}"));
        tracing::info!("ready: {status}; control socket {}", socket.display());
        if let Some(r) = self.ready.take() {
            let _ = r.send(daemon.clone());
        }
        Ok(handle)
    }
}

/// Logs the initial sync's outcome (lab 91's cold-start profile reads its timings line).
fn log_initial(r: Result<SyncReport, Error>) {
    match r {
        Ok(r) => {
            tracing::info!("initial sync: {} maps; {}", r.maps.len(), r.timings);
            for line in report_text(&r).lines() {
                tracing::info!("{line}");
            }
        }
        Err(err) => tracing::error!("initial sync failed: {err}"),
    }
}

fn log_reconcile(r: Result<SyncReport, Error>, why: Reconcile) {
    match r {
        Ok(r) if r.changed() > 0 || !r.errors.is_empty() => tracing::info!(
            "reconcile ({}): {}",
            match why {
                Reconcile::Overrun => "after lost uevents",
                Reconcile::Periodic => "periodic",
            },
            report_text(&r).trim_end()
        ),
        Ok(_) => tracing::debug!("reconcile: nothing to change"),
        Err(err) => tracing::error!("reconcile failed: {err}"),
    }
}

/// Runs the daemon in the foreground until SIGTERM/SIGINT or `shutdown`. Maps are left in
/// place on the way out.
pub fn run(engine: Engine, clock: Arc<dyn Clock>, opts: DaemonOptions) -> Result<(), Error> {
    let (tx, rx) = mpsc::channel();
    spawn_signal_thread(tx.clone())?;
    serve(engine, clock, opts, (&rx, tx), None)
}

/// A daemon running on a thread of this process (benchmarks, tests): the socket, the loop
/// and the snapshot exactly as [`run`] has them, without taking the process's signals.
pub struct DaemonHandle {
    daemon: Arc<Daemon>,
    /// Keeps the loop's signal channel open; `stop` goes through the daemon.
    _signals: mpsc::Sender<Signal>,
    thread: Option<std::thread::JoinHandle<Result<(), Error>>>,
}

impl std::fmt::Debug for DaemonHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonHandle").finish()
    }
}

impl DaemonHandle {
    pub fn daemon(&self) -> &Arc<Daemon> {
        &self.daemon
    }

    /// Stops the loop and the socket (maps stay) and waits for them.
    pub fn stop(mut self) -> Result<(), Error> {
        self.daemon.request_stop();
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(Error::Io {
                path: PathBuf::from("(daemon thread)"),
                source: std::io::Error::other("the daemon thread panicked"),
            }),
            None => Ok(()),
        }
    }
}

impl Drop for DaemonHandle {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.daemon.request_stop();
            let _ = t.join();
        }
    }
}

/// Starts the daemon on a thread; returns once it is ready (initial sync done, socket
/// answering).
pub fn start(
    engine: Engine,
    clock: Arc<dyn Clock>,
    opts: DaemonOptions,
) -> Result<DaemonHandle, Error> {
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("daemon".into())
        .spawn({
            let tx = tx.clone();
            move || serve(engine, clock, opts, (&rx, tx), Some(ready_tx))
        })
        .map_err(|source| Error::Io {
            path: PathBuf::from("(daemon thread)"),
            source,
        })?;
    match ready_rx.recv() {
        Ok(daemon) => Ok(DaemonHandle {
            daemon,
            _signals: tx,
            thread: Some(thread),
        }),
        Err(_) => Err(match thread.join() {
            Ok(Err(e)) => e,
            _ => Error::Io {
                path: PathBuf::from("(daemon thread)"),
                source: std::io::Error::other("the daemon stopped before it was ready"),
            },
        }),
    }
}

fn serve(
    engine: Engine,
    clock: Arc<dyn Clock>,
    opts: DaemonOptions,
    (rx, wake): (&mpsc::Receiver<Signal>, mpsc::Sender<Signal>),
    ready: Option<mpsc::Sender<Arc<Daemon>>>,
) -> Result<(), Error> {
    // Every thread started from here (sweep, checks, applier, dm events, the socket's) inherits
    // the failover priority; control connections answer reads below it (crate::priority).
    crate::priority::raise_for_failover();
    // Bound before the first sync: a socket another daemon answers on stops us before we
    // touch a map (the caller's pid file lock is the first guard; this is the second).
    let server = Server::bind(&opts.socket, ServerOptions::default())?;
    // Listening before the initial scan: a disk added while the first sync runs (or before
    // the loop starts) is in the socket's queue, not lost until the periodic reconcile. An
    // event about a disk the scan already found costs one re-read.
    let feed: Option<Box<dyn UeventFeed>> = if opts.uevents {
        match KernelUeventSocket::open(true) {
            Ok(s) => Some(Box::new(s)),
            Err(e) => {
                tracing::warn!("no kernel uevents ({e}); paths are found by rescan only");
                None
            }
        }
    } else {
        None
    };
    let daemon = Arc::new(Daemon::new(engine));
    // From here on a sync only plans under the lock; the applier threads carry it out.
    let mut applier = {
        let mut e = daemon.engine();
        e.defer_applies();
        let backend = e.shared_backend();
        let wake = Mutex::new(wake.clone());
        applier::Applier::start(
            Arc::clone(&backend),
            applier::width(backend.as_ref()),
            Box::new(move || {
                let _ = wake
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .send(Signal::Applied);
            }),
        )
    };
    // The initial sync plans here and is carried out on a thread of its own while the loop
    // runs: on the kernel a cold start's resumes wait for udevd (tens of seconds for 256 maps
    // on a busy host), and a disk added or a path lost meanwhile is handled then. The daemon
    // is ready (READY=1, `start` returns) once it is booked.
    let mut initial = {
        let mut e = daemon.engine();
        tracing::info!("initial sync: start");
        let r = e.sync();
        let jobs = e.take_jobs();
        // Every member path is due at once when its map is booked: the loop's first pass
        // checks them all through the asynchronous runner, so one hung path cannot hold up
        // the start.
        daemon.publish(&e);
        match r {
            Ok(prepared) => {
                let wake = Mutex::new(wake.clone());
                Some(applier::InitialApply::start(
                    jobs,
                    e.shared_backend(),
                    prepared,
                    Box::new(move || {
                        let _ = wake
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .send(Signal::Applied);
                    }),
                ))
            }
            Err(err) => {
                tracing::error!("initial sync failed: {err}");
                for job in jobs {
                    applier.submit(job);
                }
                None
            }
        }
    };
    // Failover that never waits for the engine lock: the sweep thread reads every member
    // path's SCSI state and fails a path that went down itself (see crate::sweep).
    let _sweep = {
        let wake = wake.clone();
        let backend = daemon.engine().shared_backend();
        match crate::sweep::Sweep::start(
            backend,
            crate::sweep::SweepOptions::default(),
            Box::new(move || {
                let _ = wake.send(Signal::Swept);
            }),
        ) {
            Ok(s) => {
                daemon.engine().attach_sweep(s.link());
                Some(s)
            }
            Err(err) => {
                tracing::warn!(
                    "cannot start the sweep thread ({err}); the loop sweeps the SCSI states every {} ms under the engine lock instead",
                    STATE_SWEEP_INTERVAL.as_millis()
                );
                None
            }
        }
    };
    daemon.set_stopper(server.stopper());
    // The socket answers once the initial sync is booked: a client connecting before waits
    // in the listen queue for a view with the maps, as it did when the sync ran here.
    let mut starting = Starting {
        server: Some(server),
        ready,
    };
    let mut handle = None;
    if initial.is_none() {
        handle = Some(starting.ready(&daemon, &opts.socket)?);
    }

    let mut events = EventLoop::new(clock.clone(), feed);
    events.scan_outside_the_lock();
    events.take_dm_events_from(crate::dmevents::DmEvents::start(
        daemon.engine().backend(),
        Box::new(move || {
            let _ = wake.send(Signal::DmEvents);
        }),
    ));
    let mut last_publish = std::time::Instant::now();
    let mut stale = false;
    loop {
        // While checks are out, wait on their results (without the engine lock) rather than
        // sleeping a whole tick: a lost HBA's thousands of checks flow through at once.
        let signal = if events.checks_pending() {
            match rx.try_recv() {
                Ok(s) => Ok(s),
                Err(mpsc::TryRecvError::Empty) => {
                    events.wait_checks(opts.tick);
                    Err(mpsc::RecvTimeoutError::Timeout)
                }
                Err(mpsc::TryRecvError::Disconnected) => Err(mpsc::RecvTimeoutError::Disconnected),
            }
        } else {
            rx.recv_timeout(opts.tick)
        };
        match signal {
            Ok(Signal::Stop) => break,
            Ok(Signal::Reconfigure) => {
                let mut e = daemon.engine();
                match e.reconfigure() {
                    Ok(r) => tracing::info!("reconfigured: {}", report_text(&r).trim_end()),
                    Err(err @ (Error::ConfigRead { .. } | Error::ConfigInvalid { .. })) => {
                        tracing::error!("{}", kept_config(&err))
                    }
                    Err(err) => tracing::error!("reconfigure failed: {err}"),
                }
                applier::dispatch(&mut e, &mut applier);
                daemon.publish(&e);
                last_publish = std::time::Instant::now();
                sd_notify("STATUS=reconfigured");
            }
            Ok(Signal::DmEvents | Signal::Swept | Signal::Applied)
            | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if daemon.stopping() {
            break;
        }
        let now = clock.now();
        let mut booked_initial = false;
        {
            let mut e = daemon.engine();
            if let Some(r) = initial.as_mut().and_then(|i| i.try_finish(&mut e)) {
                initial = None;
                log_initial(r);
                booked_initial = true;
                stale = true;
                daemon.applies_finished();
            }
            if applier::finish_done(&mut e, &mut applier) {
                stale = true;
                daemon.applies_finished();
            }
            events.step(&mut e, now);
            applier::dispatch(&mut e, &mut applier);
            if e.applies_idle() {
                daemon.applies_finished();
            }
            stale |= events.take_dirty();
            if (stale && last_publish.elapsed() >= PUBLISH_INTERVAL)
                || daemon.snapshot_wanted()
                || booked_initial
            {
                daemon.publish(&e);
                last_publish = std::time::Instant::now();
                stale = false;
            }
        }
        if booked_initial {
            match starting.ready(&daemon, &opts.socket) {
                Ok(h) => handle = Some(h),
                Err(err) => {
                    tracing::error!("{err}");
                    break;
                }
            }
        }
        if let Some(why) = events.take_reconcile() {
            // The full sysfs scan (about a second at 32k paths) runs without the lock.
            let root = daemon.engine().sysfs_root().to_path_buf();
            let scan = lun_scan::scan_with(&root, crate::engine::SCAN_OPTIONS);
            let mut e = daemon.engine();
            events.finish_reconcile(&mut e, scan, why);
            applier::dispatch(&mut e, &mut applier);
            daemon.publish(&e);
            last_publish = std::time::Instant::now();
        }
    }
    sd_notify("STOPPING=1");
    daemon.request_stop();
    // Applies in flight end as they would have: their jobs are carried out and booked (a
    // command waiting for them sees the stop and goes on).
    let rest = applier.stop();
    {
        let mut e = daemon.engine();
        if let Some(i) = initial.take() {
            log_initial(i.wait_finish(&mut e));
        }
        for d in rest {
            applier::log_finished(e.finish_job(d));
        }
        daemon.applies_finished();
    }
    if let Some(h) = handle {
        h.join();
    }
    tracing::info!("stopped; every map stays in place");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn about_names_the_subject_once() {
        let e = Error::Dm {
            map: "mpatha".into(),
            source: dm_tables::Error::NoSuchMap {
                name: "mpatha".into(),
            },
        };
        let t = about("mpatha", &format!("failed: {e}"));
        assert_eq!(t.matches("mpatha").count(), 1, "{t}");
        assert_eq!(about("sdb", "path is down"), "sdb: path is down");
    }

    #[test]
    fn sd_notify_sends_one_datagram_to_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        sd_notify_to(&path.to_string_lossy(), "READY=1\nSTATUS=4 maps, 16 paths");
        let mut buf = [0u8; 256];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=4 maps, 16 paths");
    }
}
