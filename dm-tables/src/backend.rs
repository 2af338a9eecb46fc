//! The device-mapper backend seam: one trait, a kernel and a simulated implementation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::devno::DevNo;
use crate::error::{Error, Result};
use crate::events::{EventNumbers, EventSource};
use crate::message::Message;
use crate::status::MultipathStatus;
use crate::table::MultipathTable;

/// Prefix of multipath map uuids (multipath-tools and udev's `dm-uuid-mpath-<wwid>` links).
pub const MPATH_UUID_PREFIX: &str = "mpath-";

/// The map uuid for a WWID: `mpath-<wwid>`.
pub fn uuid_for_wwid(wwid: &str) -> String {
    format!("{MPATH_UUID_PREFIX}{wwid}")
}

/// The WWID of a multipath map uuid, or None when the uuid is not `mpath-<non-empty wwid>`.
pub fn wwid_from_uuid(uuid: &str) -> Option<&str> {
    uuid.strip_prefix(MPATH_UUID_PREFIX)
        .filter(|w| !w.is_empty())
}

/// What the kernel says about one map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapInfo {
    pub name: String,
    /// Empty uuids are reported as None.
    pub uuid: Option<String>,
    /// The dm device's own number (major 253 on most systems, dm-<minor>).
    pub devno: DevNo,
    pub open_count: u32,
    pub event_nr: u32,
    pub suspended: bool,
}

impl MapInfo {
    /// The WWID if this is a multipath map (`mpath-<wwid>` uuid).
    pub fn wwid(&self) -> Option<&str> {
        self.uuid.as_deref().and_then(wwid_from_uuid)
    }
}

/// How the suspend behind a resume treats I/O: device-mapper suspends a map before it swaps
/// in a newly loaded table, and these flags of the resume ioctl decide that suspend's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuspendFlags {
    /// `DM_NOFLUSH_FLAG`: I/O queued in the target stays queued across the suspend and goes
    /// to the new table. Without it the suspend flushes, and dm-mpath's presuspend turns
    /// `queue_if_no_path` off first so the flush can finish: a map with no usable path fails
    /// every queued I/O with EIO.
    pub noflush: bool,
    /// `DM_SKIP_LOCKFS_FLAG`: no filesystem freeze on the map (the map is a guest's disk;
    /// freezing what sits on it buys nothing for a path change).
    pub skip_lockfs: bool,
}

impl SuspendFlags {
    /// What every table reload uses, as multipath-tools reloads: no flush, no fs lock.
    pub const RELOAD: SuspendFlags = SuspendFlags {
        noflush: true,
        skip_lockfs: true,
    };
    /// A plain suspend (`dmsetup suspend` without `--noflush`).
    pub const FLUSH: SuspendFlags = SuspendFlags {
        noflush: false,
        skip_lockfs: false,
    };
}

/// How to remove a map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoveMode {
    /// Remove now; refused with [`Error::MapOpen`] while the map is open.
    Now,
    /// Remove now if unused, else when the last holder closes it.
    Deferred,
}

/// What a remove did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Removed {
    Removed,
    /// The map was open; it will go when the last holder closes it.
    Deferred,
}

/// Access to device-mapper multipath maps. Implementations: [`crate::KernelBackend`] (ioctls)
/// and [`crate::SimBackend`] (in memory / state file). All methods take `&self` so one backend
/// can be shared between threads (`Arc<dyn DmBackend>`).
pub trait DmBackend: Send + Sync {
    /// Every device-mapper map (multipath or not).
    fn list(&self) -> Result<Vec<MapInfo>>;
    /// One map's info; [`Error::NoSuchMap`] if absent.
    fn info(&self, name: &str) -> Result<MapInfo>;
    /// Creates the map, loads `table` and resumes it; `/dev/mapper/<name>` exists afterwards.
    fn create(&self, name: &str, uuid: &str, table: &MultipathTable) -> Result<MapInfo>;
    /// Loads `table` into the map and resumes it (swapping tables). The suspend this implies
    /// is a [`SuspendFlags::RELOAD`] one: I/O queued in the map survives the reload.
    fn reload(&self, name: &str, table: &MultipathTable) -> Result<()>;
    /// [`DmBackend::reload`], then `then` for the new table. A new table starts with every
    /// path active, so `then` is where the paths known to be down are failed again: a backend
    /// whose resume also waits for something slow (the kernel's waits for udevd) sends them as
    /// soon as the new table is live, not after that wait. The default reloads, then sends.
    fn reload_then(&self, name: &str, table: &MultipathTable, then: &[Message]) -> Result<()> {
        self.reload(name, table)?;
        then.iter().try_for_each(|m| self.message(name, m))
    }
    /// [`DmBackend::create`], then `then` for the new table, as [`DmBackend::reload_then`].
    fn create_then(
        &self,
        name: &str,
        uuid: &str,
        table: &MultipathTable,
        then: &[Message],
    ) -> Result<MapInfo> {
        let info = self.create(name, uuid, table)?;
        then.iter().try_for_each(|m| self.message(name, m))?;
        Ok(info)
    }
    /// The active table line as the kernel prints it (`start length multipath ...`).
    fn table_line(&self, name: &str) -> Result<String>;
    /// The status line as the kernel prints it.
    fn status_line(&self, name: &str) -> Result<String>;
    /// Sends a target message (sector 0).
    fn message(&self, name: &str, msg: &Message) -> Result<()>;
    /// Renames a map.
    fn rename(&self, old: &str, new: &str) -> Result<()>;
    /// Removes a map; [`Error::MapOpen`] when open and `mode` is [`RemoveMode::Now`].
    fn remove(&self, name: &str, mode: RemoveMode) -> Result<Removed>;
    /// Waits until the map's event number exceeds `last_event_nr` or `timeout` passes.
    /// Returns the new event number, or None on timeout.
    fn wait_event(&self, name: &str, last_event_nr: u32, timeout: Duration) -> Result<Option<u32>>;

    /// Every map's event number, by name. The default lists every map ([`DmBackend::list`]);
    /// the kernel backend reads them all from one `DM_LIST_DEVICES`.
    fn event_numbers(&self) -> Result<EventNumbers> {
        Ok(self
            .list()?
            .into_iter()
            .map(|m| (m.name, m.event_nr))
            .collect())
    }

    /// A source of events for one waiting thread ([`crate::EventWatcher`]), or
    /// [`Error::EventsUnsupported`] when this device-mapper cannot wait for events (the caller
    /// then compares [`DmBackend::event_numbers`] now and then).
    fn event_source(&self) -> Result<Box<dyn EventSource>> {
        Err(Error::EventsUnsupported {
            reason: "this backend cannot wait for events".into(),
        })
    }

    /// How many operations on different maps are worth running at once. 1 (the default) for
    /// a backend that serialises everything anyway (the sim's one lock); the kernel backend
    /// says more, since each resume, rename and remove waits for udevd to process its event.
    fn concurrency(&self) -> usize {
        1
    }

    /// The active table, parsed.
    fn table(&self, name: &str) -> Result<MultipathTable> {
        parse_single(name, &self.table_line(name)?, MultipathTable::parse_line)
    }
    /// The status, parsed.
    fn status(&self, name: &str) -> Result<MultipathStatus> {
        parse_single(name, &self.status_line(name)?, MultipathStatus::parse_line)
    }
    /// Maps whose uuid is `mpath-<wwid>`.
    fn list_multipath(&self) -> Result<Vec<MapInfo>> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|m| m.wwid().is_some())
            .collect())
    }
}

fn parse_single<T>(name: &str, text: &str, parse: fn(&str) -> Result<T>) -> Result<T> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    match lines.as_slice() {
        [one] => parse(one),
        _ => Err(Error::InvalidTable {
            map: name.to_string(),
            reason: format!(
                "expected exactly one multipath target, found {} target line(s)",
                lines.len()
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_convention() {
        assert_eq!(
            uuid_for_wwid("360014055d1b3c7a0e2f4b8a9c612f3e4"),
            "mpath-360014055d1b3c7a0e2f4b8a9c612f3e4"
        );
        assert_eq!(
            wwid_from_uuid("mpath-1Linux_scsi_debug_2000"),
            Some("1Linux_scsi_debug_2000")
        );
        assert_eq!(wwid_from_uuid("mpath-"), None);
        assert_eq!(wwid_from_uuid("LVM-abc"), None);
        assert_eq!(wwid_from_uuid(&uuid_for_wwid("x")), Some("x"));
    }
}
