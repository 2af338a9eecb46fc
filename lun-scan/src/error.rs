//! The crate's one error type. Every variant names the file, device or host it is about, and
//! its message reads as a sentence. Errors are `Clone` and serialisable because they are also
//! carried as data: a path or host that could only be read partly keeps its errors next to it.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

/// Everything that can go wrong in lun-scan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A sysfs file or directory could not be read.
    #[error("cannot read {}: {reason}", path.display())]
    Read {
        path: PathBuf,
        kind: io::ErrorKind,
        reason: String,
    },
    /// The object disappeared while it was being read (ENOENT mid-scan): the device was
    /// most likely deleted while we walked the tree.
    #[error("{} vanished during the scan (the device was removed while it was being read)", path.display())]
    Vanished { path: PathBuf },
    /// An attribute holds something we cannot interpret.
    #[error("{} holds {value:?}, which is not {expected}", path.display())]
    Parse {
        path: PathBuf,
        value: String,
        expected: &'static str,
    },
    /// A VPD page is malformed.
    #[error("{} is not a usable VPD page: {reason}", path.display())]
    Vpd { path: PathBuf, reason: String },
    /// A write to a sysfs attribute (scan, delete, rescan, issue_lip) failed.
    #[error("writing {value:?} to {} failed: {reason}", path.display())]
    Write {
        path: PathBuf,
        value: String,
        reason: String,
    },
    /// Creating a file or directory (fixture generator, snapshot) failed.
    #[error("cannot create {}: {reason}", path.display())]
    Create { path: PathBuf, reason: String },
    /// The named block device is not a SCSI disk in this sysfs tree.
    #[error("there is no SCSI block device named {dev} under {}", root.display())]
    NoSuchDevice { dev: String, root: PathBuf },
    /// The named SCSI host does not exist.
    #[error("there is no SCSI host named {host} under {}", root.display())]
    NoSuchHost { host: String, root: PathBuf },
    /// No FC remote port has the given WWPN.
    #[error("no FC remote port with port_name {wwpn} is visible under {}", root.display())]
    NoSuchRport { wwpn: String, root: PathBuf },
    /// The FC remote port has no SCSI target id (it is not a target, or it is blocked).
    #[error("FC remote port {rport} ({wwpn}) has no SCSI target id, so it cannot be scanned")]
    RportNotTarget { rport: String, wwpn: String },
    /// Removing this path would take away the last active path of an open multipath map.
    #[error(
        "refusing to remove {dev}: it is the last running path of multipath map {map} ({uuid}), which may be open (sysfs has no open count); use --force to remove it anyway"
    )]
    LastActivePath {
        dev: String,
        map: String,
        uuid: String,
    },
    /// An argument given by the caller is not valid.
    #[error("{what} {value:?} is not valid: {reason}")]
    InvalidArgument {
        what: &'static str,
        value: String,
        reason: String,
    },
    /// A topology file is malformed or inconsistent.
    #[error("topology {}: {reason}", path.display())]
    Topology { path: PathBuf, reason: String },
}

impl Error {
    /// Builds a read error for `path` from an `io::Error`.
    pub fn read(path: &Path, err: &io::Error) -> Self {
        Error::Read {
            path: path.to_path_buf(),
            kind: err.kind(),
            reason: err.to_string(),
        }
    }

    /// The file, directory or object this error is about, if it has one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Error::Read { path, .. }
            | Error::Vanished { path }
            | Error::Parse { path, .. }
            | Error::Vpd { path, .. }
            | Error::Write { path, .. }
            | Error::Create { path, .. }
            | Error::Topology { path, .. } => Some(path),
            Error::NoSuchDevice { root, .. }
            | Error::NoSuchHost { root, .. }
            | Error::NoSuchRport { root, .. } => Some(root),
            _ => None,
        }
    }

    /// A short machine-readable name of the variant, used in JSON output.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Error::Read { .. } => "read",
            Error::Vanished { .. } => "vanished",
            Error::Parse { .. } => "parse",
            Error::Vpd { .. } => "vpd",
            Error::Write { .. } => "write",
            Error::Create { .. } => "create",
            Error::NoSuchDevice { .. } => "no_such_device",
            Error::NoSuchHost { .. } => "no_such_host",
            Error::NoSuchRport { .. } => "no_such_rport",
            Error::RportNotTarget { .. } => "rport_not_target",
            Error::LastActivePath { .. } => "last_active_path",
            Error::InvalidArgument { .. } => "invalid_argument",
            Error::Topology { .. } => "topology",
        }
    }
}

/// Errors serialise as `{"kind": "...", "file": "..." | null, "message": "..."}`.
impl Serialize for Error {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Error", 3)?;
        s.serialize_field("kind", self.kind_name())?;
        s.serialize_field("file", &self.path().map(|p| p.display().to_string()))?;
        s.serialize_field("message", &self.to_string())?;
        s.end()
    }
}

/// Displays a list of errors one per line (used by the CLI).
pub struct ErrorList<'a>(pub &'a [Error]);

impl fmt::Display for ErrorList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in self.0 {
            writeln!(f, "error: {e}")?;
        }
        Ok(())
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
