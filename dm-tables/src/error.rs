//! The crate's one error type.

use std::path::PathBuf;

use crate::devno::DevNo;

/// Every error `dm-tables` can return. Messages read as sentences and name the map, device,
/// file or token they are about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A table or status line (or one of its parts) could not be parsed.
    /// `index` is the 1-based position of the token in the line (the start sector is token 1;
    /// a leading `name:` is not counted); `token` is `None` when the line ended too early.
    #[error("token {index} ({}): {expected}", match token { Some(t) => format!("'{t}'"), None => "end of line".to_string() })]
    Parse {
        index: usize,
        token: Option<String>,
        expected: String,
    },
    /// A value (device number, message, uuid...) given on its own could not be parsed.
    #[error("'{value}' is not {expected}")]
    InvalidValue { value: String, expected: String },
    /// The table is well formed but the kernel would refuse it.
    #[error("the table for map '{map}' is invalid: {reason}")]
    InvalidTable { map: String, reason: String },
    /// A table names a block device that does not exist.
    #[error("map '{map}': device {devno} does not exist")]
    UnknownDevice { map: String, devno: DevNo },
    /// No map of that name.
    #[error("no device-mapper map named '{name}' exists")]
    NoSuchMap { name: String },
    /// A map of that name already exists.
    #[error("a device-mapper map named '{name}' already exists")]
    MapExists { name: String },
    /// Another map already uses that uuid.
    #[error("uuid '{uuid}' is already used by map '{name}'")]
    UuidInUse { uuid: String, name: String },
    /// Removing (or otherwise disturbing) a map that is held open.
    #[error(
        "map '{name}' is open ({open_count} holder(s)); refusing to remove it (use a deferred remove to remove it on last close)"
    )]
    MapOpen { name: String, open_count: u32 },
    /// A target message the map refused.
    #[error("map '{map}' refused message '{message}': {reason}")]
    MessageRefused {
        map: String,
        message: String,
        reason: String,
    },
    /// A reload plan that would leave the map without any path that works now.
    #[error(
        "refusing to reload map '{map}': the new table drops every path that is active now ({})",
        fmt_devnos(dropped)
    )]
    WouldDropAllActivePaths { map: String, dropped: Vec<DevNo> },
    /// An ioctl on /dev/mapper/control failed.
    #[error("device-mapper {op} on '{map}' failed: {cause}")]
    Ioctl {
        op: &'static str,
        map: String,
        cause: devicemapper::DmError,
    },
    /// Opening /dev/mapper/control failed.
    #[error(
        "cannot open /dev/mapper/control (is the dm_mod module loaded and are we root?): {cause}"
    )]
    Control { cause: devicemapper::DmError },
    /// A file (state file, sysfs attribute, device node) could not be read or written.
    #[error("{action} '{}' failed: {cause}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    /// The simulated kernel's state file is not valid JSON of the expected shape.
    #[error("the simulated device-mapper state file '{}' is corrupt: {cause}", path.display())]
    StateCorrupt {
        path: PathBuf,
        cause: serde_json::Error,
    },
    /// Waiting for device-mapper events is not possible here (dm ioctl before 4.37 has
    /// neither `DM_DEV_ARM_POLL` nor event numbers in its device list).
    #[error("device-mapper cannot wait for events: {reason}")]
    EventsUnsupported { reason: String },
    /// A JSON model given to `render` (or similar) is not valid.
    #[error("invalid JSON model: {cause}")]
    Json { cause: serde_json::Error },
}

fn fmt_devnos(d: &[DevNo]) -> String {
    d.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
