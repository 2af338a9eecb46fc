//! Waiting for device-mapper events instead of polling every map.
//!
//! The kernel keeps one event number per map (`dm_get_event_nr`, raised by `dm_table_event`:
//! a multipath path failed or reinstated, a group switched or bypassed, a rename, a remove)
//! and one global event counter (`dm_issue_global_event` in drivers/md/dm.c: every per-map
//! event, plus create, remove, rename and every table swap at resume). An open file on
//! `/dev/mapper/control` that ran `DM_DEV_ARM_POLL` polls readable (`POLLIN`) as soon as the
//! global counter moved past the value it had at arming (`dm_poll` in drivers/md/dm-ioctl.c);
//! one `DM_LIST_DEVICES` returns every map's event number with its name (dm ioctl 4.37 and
//! later: `list_devices` appends `event_nr` after each aligned name). Both arrived in dm ioctl
//! 4.37 (Linux 4.13).
//!
//! [`EventWatcher`] turns that into "tell me when a map's event number changes": arm, list,
//! compare, poll, and arm again *before* listing again, so an event between a listing and
//! the poll leaves the file readable and is never lost.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::error::Result;

/// Every map's event number, by map name.
pub type EventNumbers = BTreeMap<String, u32>;

/// A waitable source of device-mapper events (one per waiting thread: the arming is per open
/// control file). From [`crate::DmBackend::event_source`].
pub trait EventSource: Send {
    /// Arms the source: a later [`EventSource::wait`] returns at once if any event happens
    /// after this call (`DM_DEV_ARM_POLL`).
    fn arm(&mut self) -> Result<()>;
    /// Every map's event number, from one listing (`DM_LIST_DEVICES`).
    fn event_numbers(&mut self) -> Result<EventNumbers>;
    /// Waits until an event happened since the last [`EventSource::arm`] or `timeout`
    /// passes (`poll` for `POLLIN`). Returns whether it was woken; a spurious wake is
    /// harmless (the caller lists and compares).
    fn wait(&mut self, timeout: Duration) -> Result<bool>;
}

/// What changed between two listings of the event numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventChanges {
    /// Maps whose event number moved, with the new number.
    pub changed: Vec<(String, u32)>,
    /// Maps that appeared, with their event number.
    pub added: Vec<(String, u32)>,
    /// Maps that are gone.
    pub removed: Vec<String>,
    /// The new listing in full.
    pub numbers: EventNumbers,
}

impl EventChanges {
    /// Compares two listings.
    pub fn between(old: &EventNumbers, new: EventNumbers) -> EventChanges {
        let mut c = EventChanges::default();
        for (name, &nr) in &new {
            match old.get(name) {
                Some(&was) if was != nr => c.changed.push((name.clone(), nr)),
                Some(_) => {}
                None => c.added.push((name.clone(), nr)),
            }
        }
        c.removed = old
            .keys()
            .filter(|n| !new.contains_key(*n))
            .cloned()
            .collect();
        c.numbers = new;
        c
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.added.is_empty() && self.removed.is_empty()
    }
}

/// Waits for maps' event numbers to change (see the module docs).
pub struct EventWatcher {
    source: Box<dyn EventSource>,
    known: EventNumbers,
}

impl std::fmt::Debug for EventWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventWatcher")
            .field("maps", &self.known.len())
            .finish()
    }
}

impl EventWatcher {
    /// Takes the current event numbers as the baseline: only later changes are reported.
    /// The source is armed before the listing, so nothing after the baseline is lost.
    pub fn new(mut source: Box<dyn EventSource>) -> Result<EventWatcher> {
        source.arm()?;
        let known = source.event_numbers()?;
        Ok(EventWatcher { source, known })
    }

    /// The event numbers as last listed.
    pub fn known(&self) -> &EventNumbers {
        &self.known
    }

    /// Waits up to `timeout` for a map's event number to change (or a map to come or go).
    /// Returns what changed since the last call, or None when `timeout` passed first. Events
    /// that change no map's number (a table swap, a suspend) wake the wait but are not
    /// reported.
    pub fn next(&mut self, timeout: Duration) -> Result<Option<EventChanges>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if !self.source.wait(left)? {
                return Ok(None);
            }
            // Re-arm first: an event from here on leaves the source readable for the next
            // wait, even one that lands while we list.
            self.source.arm()?;
            let now = self.source.event_numbers()?;
            let changes = EventChanges::between(&self.known, now);
            self.known = changes.numbers.clone();
            if !changes.is_empty() {
                return Ok(Some(changes));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nrs(v: &[(&str, u32)]) -> EventNumbers {
        v.iter().map(|(n, e)| (n.to_string(), *e)).collect()
    }

    #[test]
    fn changes_between_listings() {
        let old = nrs(&[("a", 1), ("b", 4), ("c", 0)]);
        let c = EventChanges::between(&old, nrs(&[("a", 2), ("b", 4), ("d", 7)]));
        assert_eq!(c.changed, vec![("a".to_string(), 2)]);
        assert_eq!(c.added, vec![("d".to_string(), 7)]);
        assert_eq!(c.removed, vec!["c".to_string()]);
        assert!(!c.is_empty());
        assert!(EventChanges::between(&old, old.clone()).is_empty());
    }
}
