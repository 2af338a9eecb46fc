//! The crate's single error type. Every variant names the registry, host, WWID, alias or file
//! it is about.

use std::path::PathBuf;

/// Everything that can go wrong in hostsync.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The registry URL is not one hostsync understands.
    #[error("unsupported registry URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The registry could not be reached or answered with an error.
    #[error("registry {registry} failed to {action}: {message}")]
    Registry {
        /// Which registry (its URL).
        registry: String,
        /// What we tried to do.
        action: String,
        /// What went wrong.
        message: String,
    },
    /// The local registry directory or a cache file could not be used.
    #[error("{0}")]
    Local(Box<aliases::Error>),
    /// A value stored in the registry is not what hostsync writes.
    #[error("registry {registry} holds a malformed value under {key}: {message}")]
    BadValue {
        /// Which registry.
        registry: String,
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The name is bound to another WWID (or was, and `--reuse` was not given).
    #[error("alias {alias} {state} WWID {other}, so it cannot be given to {wwid}{hint}")]
    AliasTaken {
        /// The requested alias.
        alias: String,
        /// The WWID asking for it.
        wwid: String,
        /// The WWID that holds (or held) it.
        other: String,
        /// "is bound to" or "was bound to".
        state: &'static str,
        /// What the admin can do.
        hint: &'static str,
    },
    /// Allocation gave up (the registry kept changing under us).
    #[error("could not allocate a name for WWID {wwid} after {attempts} attempts")]
    Exhausted {
        /// The WWID.
        wwid: String,
        /// How many transactions were tried.
        attempts: usize,
    },
    /// An outside program could not be started (or was not in a test's script).
    #[error("cannot run `{command}`: {message}")]
    CommandStart {
        /// The command line.
        command: String,
        /// What went wrong.
        message: String,
    },
    /// An outside program did not finish in time and was killed.
    #[error("`{command}` did not finish within {seconds} s and was killed")]
    CommandTimeout {
        /// The command line.
        command: String,
        /// Its time limit.
        seconds: f64,
    },
    /// An LVM command failed or printed what hostsync cannot read. `target` is the VG or VG/LV
    /// (or PV) it was about.
    #[error("LVM could not {action} {target}: {message}")]
    Lvm {
        /// The VG, VG/LV or PV.
        target: String,
        /// What we tried to do ("activate", "read the report of", ...).
        action: String,
        /// LVM's own words (its stderr) or what was wrong with its output.
        message: String,
    },
    /// A file given on the command line could not be read or parsed.
    #[error("cannot read {}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// hostsync refused to act (fail closed): what it would have done, to what, and why.
    #[error("refusing to {action} {target}: {reason}")]
    Refused {
        /// The VG, VG/LV or host.
        target: String,
        /// What was asked ("activate", "share", ...).
        action: String,
        /// Why, and what to do instead.
        reason: String,
    },
}

/// Result with the crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<aliases::Error> for Error {
    fn from(e: aliases::Error) -> Self {
        Error::Local(Box::new(e))
    }
}
