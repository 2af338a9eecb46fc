//! The crate's one error type. Each area adds its variants in its own block below.

use std::path::PathBuf;

/// An error and its causes as one sentence (for the terminal and the logs). Our errors quote
/// their cause in their own text (`cannot read the configuration file X: Is a directory`) and
/// also name it as their `source`, so printing the whole chain (anyhow's `{:#}`) would say it
/// twice (`X: Is a directory: Is a directory`); a cause whose text is already there is left
/// out, the others are joined with `: `.
pub fn sentence(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    for cause in std::iter::successors(Some(e), |c| c.source()) {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn dm_text(map: &str, source: &dm_tables::Error) -> String {
    let text = source.to_string();
    if text.contains(&format!("'{map}'")) {
        text
    } else {
        format!("map {map}: {text}")
    }
}

/// Everything that can go wrong in multipathd-rs, naming the file, device or map it is about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    // --- configuration (config, hwtable, blacklist, import) ---
    /// The configuration file could not be read.
    #[error("cannot read the configuration file {path}: {source}")]
    ConfigRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A configuration file (ours, or a multipath.conf being imported) has a bad key or value.
    #[error("{path} line {line}: key `{key}`: {message}")]
    ConfigInvalid {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
    /// A multipath.conf being imported could not be read or parsed (the cause names file
    /// and line).
    #[error("cannot import the multipath-tools configuration: {source}")]
    MultipathConf {
        #[source]
        source: Box<aliases::Error>,
    },

    // --- path checking and events (checker, clock, scheduler, uevent) ---
    /// A configuration named a path checker this crate does not have.
    #[error("unknown path checker \"{name}\" (known: tur, directio, sysfs, none)")]
    UnknownChecker { name: String },
    /// A path check could not be started (no thread available for it).
    #[error("cannot start the path check of {dev}: {source}")]
    CheckerSpawn {
        dev: String,
        #[source]
        source: std::io::Error,
    },
    /// A uevent message could not be understood.
    #[error("malformed uevent ({reason}): {head:?}")]
    MalformedUevent { reason: String, head: String },
    /// The kernel uevent netlink socket failed.
    #[error("kernel uevent socket: {operation} failed: {source}")]
    UeventSocket {
        operation: &'static str,
        #[source]
        source: nix::Error,
    },
    /// The udev monitor failed.
    #[error("udev monitor: {operation} failed: {source}")]
    UdevMonitor {
        operation: &'static str,
        #[source]
        source: std::io::Error,
    },

    // --- daemon state, output formats and control socket (state, output, socket) ---
    /// The control socket could not be created.
    #[error("cannot listen on control socket {path}: {source}")]
    SocketBind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The daemon's pid/lock file could not be created, locked or written.
    #[error("cannot take the daemon's lock file {path}: {source}")]
    PidFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Another daemon holds the single-instance lock.
    #[error(
        "another multipathd-rs daemon{} holds the lock file {path}; not starting, nothing was touched",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    AlreadyRunning { path: PathBuf, pid: Option<u32> },
    /// Another daemon already answers on the control socket.
    #[error("control socket {path} is already in use by a running daemon")]
    SocketInUse { path: PathBuf },
    /// The client could not reach the daemon.
    #[error("cannot connect to control socket {path} (is the daemon running?): {source}")]
    SocketConnect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing the control socket failed mid-conversation.
    #[error("control socket {path}: {source}")]
    SocketIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The daemon's answer did not follow the protocol.
    #[error("control socket {path} sent a malformed response: {reason}")]
    BadResponse { path: PathBuf, reason: String },
    /// A control request could not be understood.
    #[error("bad request {request:?}: {reason}")]
    BadRequest { request: String, reason: String },

    // --- discovery, engine, daemon and CLI (discovery, engine, daemon, demo, cli) ---
    /// No path of that name is known.
    #[error(
        "there is no path named {dev} (it is not a SCSI disk under the sysfs root, or it was removed)"
    )]
    NoSuchPath { dev: String },
    /// No multipath map of that name or WWID is known.
    #[error("there is no multipath map named {map}")]
    NoSuchMap { map: String },
    /// A path exists but belongs to no map.
    #[error("path {dev} is not part of any multipath map")]
    PathNotInMap { dev: String },
    /// A device-mapper operation on a map failed (dm-tables' errors mostly name the map
    /// themselves; then it is not named twice).
    #[error("{}", dm_text(.map, .source))]
    Dm {
        map: String,
        #[source]
        source: dm_tables::Error,
    },
    /// The alias store could not name a map.
    #[error("cannot name the map of WWID {wwid}: {source}")]
    Alias {
        wwid: String,
        #[source]
        source: Box<aliases::Error>,
    },
    /// The alias store could not be opened.
    #[error("cannot open the alias store: {source}")]
    AliasStore {
        #[source]
        source: Box<aliases::Error>,
    },
    /// A desired map could not be built from its paths or settings.
    #[error("cannot build the map of WWID {wwid}: {reason}")]
    MapBuild { wwid: String, reason: String },
    /// lun-scan could not read a path or rescan.
    #[error("{source}")]
    Scan {
        #[source]
        source: lun_scan::Error,
    },
    /// The demo's simulated SAN could not be set up or changed.
    #[error("simulated SAN: {reason}")]
    Demo { reason: String },
}
