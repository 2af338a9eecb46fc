//! The daemon: the [`Engine`] behind the control socket ([`crate::socket`]), signals
//! (SIGHUP reconfigure, SIGTERM/SIGINT stop and leave every map in place), sd_notify, and the
//! loop that feeds path checks, uevents and dm events to the engine.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::checker::runner::CheckRunner;
use crate::clock::Clock;
use crate::engine::{Engine, SyncReport};
use crate::error::Error;
use crate::output;
use crate::socket::{
    Command, CommandHandler, Format, Peer, Response, Server, ServerOptions, Stopper,
};
use crate::state::{self, MapView};
use crate::uevent::netlink::KernelUeventSocket;
use crate::uevent::{BurstCollector, UeventFeed};

mod pidfile;
pub use pidfile::{DEFAULT_PIDFILE, PidFile};

/// The engine shared between the socket threads and the daemon loop.
pub struct Daemon {
    engine: Mutex<Engine>,
    stop: AtomicBool,
    stopper: Mutex<Option<Stopper>>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("stop", &self.stop.load(Ordering::Relaxed))
            .finish()
    }
}

impl Daemon {
    pub fn new(engine: Engine) -> Daemon {
        Daemon {
            engine: Mutex::new(engine),
            stop: AtomicBool::new(false),
            stopper: Mutex::new(None),
        }
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
    fn handle(&self, command: &Command, _peer: &Peer) -> Response {
        if *command == Command::Shutdown {
            self.stop.store(true, Ordering::SeqCst);
            return Response::ok("shutting down; every map stays in place\n");
        }
        handle_command(&mut self.engine(), command)
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
        Command::ResizeMap { map } => report_response(e.resize_map(map)),
        Command::RenameMapForce { map } => report_response(e.force_rename(map)),
        Command::AddPath { dev } => report_response(e.add_path(dev)),
        Command::DelPath { dev } => report_response(e.del_path(dev)),
        Command::AddMap { map } => report_response(e.add_map(map)),
        Command::DelMap { map } => match e.del_map(map) {
            Ok(name) => Response::ok(format!("{name}: removed\n")),
            Err(err) => error_response(&err),
        },
        Command::Reconfigure => match e.reconfigure() {
            Err(err @ (Error::ConfigRead { .. } | Error::ConfigInvalid { .. })) => {
                Response::failed(format!("{}\n", kept_config(&err)))
            }
            r => report_response(r),
        },
        Command::Rescan => report_response(e.rescan()),
        Command::Shutdown => Response::ok("shutting down\n"),
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
                        checker: d.settings.checker.to_string(),
                        priority: m.priority,
                        wwid: d.wwid.clone(),
                        vendor: d.vendor.clone(),
                        product: d.product.clone(),
                        revision: d.revision.clone(),
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

/// Daemon settings besides the engine.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub socket: PathBuf,
    /// Listen for kernel uevents (only meaningful when the sysfs root is the real /sys).
    pub uevents: bool,
    /// How often the loop wakes up at most.
    pub tick: Duration,
}

enum Signal {
    Reconfigure,
    Stop,
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
    overrun: bool,
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
            runner: CheckRunner::new(clock, 256),
            last_queue_tick: now,
            last_state_sweep: now,
            last_reconcile: now,
            overrun: false,
        }
    }

    /// One pass at `now`. Returns the reconcile it ran, if any.
    pub fn step(&mut self, e: &mut Engine, now: std::time::Instant) -> Option<Reconcile> {
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
            match e.on_uevents(batch) {
                Ok(r) if r.changed() > 0 => {
                    tracing::info!("uevents: {}", report_text(&r).trim_end())
                }
                Ok(_) => {}
                Err(err) => tracing::error!("uevent handling failed: {err}"),
            }
        }
        let reconcile = self.reconcile_due(e, now);
        if let Some(why) = reconcile {
            self.reconcile(e, now, why);
        }
        if let Err(err) = e.poll_dm_events() {
            tracing::warn!("dm events: {err}");
        }
        if now.duration_since(self.last_state_sweep) >= STATE_SWEEP_INTERVAL {
            self.last_state_sweep = now;
            e.state_sweep();
        }
        for (checker, target) in e.due_checks() {
            if let Err(err) =
                self.runner
                    .submit(checker, target, crate::checker::DEFAULT_CHECK_TIMEOUT)
            {
                tracing::warn!("{err}");
            }
        }
        for report in self.runner.poll() {
            if report.late {
                continue;
            }
            match e.apply_check_result(&report.dev, report.result) {
                Ok(sent) => {
                    for s in sent {
                        tracing::info!("{}: {}", s.map, s.message);
                    }
                }
                Err(err) => tracing::warn!("{}", about(&report.dev, &err.to_string())),
            }
        }
        if now.duration_since(self.last_queue_tick) >= Duration::from_secs(1) {
            self.last_queue_tick = now;
            if let Err(err) = e.tick_queueing() {
                tracing::warn!("no_path_retry: {err}");
            }
        }
        // [cluster]: follow the registry, publish this host's maps (each call bounded).
        if let Some(r) = e.cluster_tick(now)
            && r.changed() > 0
        {
            tracing::info!("cluster: {}", report_text(&r).trim_end());
        }
        reconcile
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
        match e.sync() {
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
}

/// Runs the daemon in the foreground until SIGTERM/SIGINT or `shutdown`. Maps are left in
/// place on the way out.
pub fn run(engine: Engine, clock: Arc<dyn Clock>, opts: DaemonOptions) -> Result<(), Error> {
    let (tx, rx) = mpsc::channel();
    spawn_signal_thread(tx)?;
    // Bound before the first sync: a socket another daemon answers on stops us before we
    // touch a map (the caller's pid file lock is the first guard; this is the second).
    let server = Server::bind(&opts.socket, ServerOptions::default())?;
    let daemon = Arc::new(Daemon::new(engine));
    {
        let mut e = daemon.engine();
        match e.sync() {
            Ok(r) => {
                for line in report_text(&r).lines() {
                    tracing::info!("{line}");
                }
            }
            Err(err) => tracing::error!("initial sync failed: {err}"),
        }
        // Every member path is due at once: the loop's first pass checks them all through
        // the asynchronous runner, so one hung path cannot hold up the start.
    }
    daemon.set_stopper(server.stopper());
    let handle = server.spawn(daemon.clone())?;
    let status = {
        let e = daemon.engine();
        format!("{} maps, {} paths", e.map_names().len(), e.paths().len())
    };
    sd_notify(&format!("READY=1\nSTATUS={status}"));
    tracing::info!("ready: {status}; control socket {}", opts.socket.display());

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
    let mut events = EventLoop::new(clock.clone(), feed);
    loop {
        match rx.recv_timeout(opts.tick) {
            Ok(Signal::Stop) => break,
            Ok(Signal::Reconfigure) => {
                let r = daemon.engine().reconfigure();
                match r {
                    Ok(r) => tracing::info!("reconfigured: {}", report_text(&r).trim_end()),
                    Err(e @ (Error::ConfigRead { .. } | Error::ConfigInvalid { .. })) => {
                        tracing::error!("{}", kept_config(&e))
                    }
                    Err(e) => tracing::error!("reconfigure failed: {e}"),
                }
                sd_notify("STATUS=reconfigured");
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if daemon.stopping() {
            break;
        }
        let now = clock.now();
        events.step(&mut daemon.engine(), now);
    }
    sd_notify("STOPPING=1");
    daemon.request_stop();
    handle.join();
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
