//! Devices an event could not settle yet, read again on a backoff.
//!
//! A uevent is the daemon's one chance to hear about a new disk until the periodic reconcile
//! (300 s by default). When the disk cannot be used at that moment (its attributes could not
//! be read, it has no WWID yet, or its map's create or reload failed), dropping the event
//! leaves the LUN without a map for minutes. Such a device is queued here and re-read 1, 2,
//! 4, 8, 16 and then every 30 s, up to [`MAX_ATTEMPTS`] times; after that the periodic
//! reconcile is what finds it (and the log says so).

#[allow(clippy::wildcard_imports)]
use super::*;

/// Re-reads of one device before it is left to the periodic reconcile.
pub const MAX_ATTEMPTS: u32 = 8;

/// The wait before re-read number `attempt` (1-based).
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.saturating_sub(1).min(5)).min(Duration::from_secs(30))
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    /// Re-reads already scheduled for this device (the next is number `attempt`).
    attempt: u32,
    due: Instant,
    why: String,
}

/// The queue of devices to read again, by kernel name.
#[derive(Debug, Default)]
pub struct Retries {
    pending: BTreeMap<String, Pending>,
}

impl Retries {
    /// Queues `dev` (again): its next re-read is due after the backoff of its attempt count.
    /// Returns false when the device has had its [`MAX_ATTEMPTS`] and is dropped.
    pub fn schedule(&mut self, dev: &str, why: String, now: Instant) -> bool {
        let attempt = self.pending.get(dev).map_or(1, |p| p.attempt + 1);
        if attempt > MAX_ATTEMPTS {
            self.pending.remove(dev);
            return false;
        }
        self.pending.insert(
            dev.to_string(),
            Pending {
                attempt,
                due: now + backoff(attempt),
                why,
            },
        );
        true
    }

    /// Moves a queued device's next re-read one backoff (of its current attempt) past `now`,
    /// without counting an attempt: while its re-read's plan is being applied, it is not read
    /// again; the outcome then settles it or queues it with the next attempt.
    pub fn postpone(&mut self, dev: &str, now: Instant) {
        if let Some(p) = self.pending.get_mut(dev) {
            p.due = now + backoff(p.attempt);
        }
    }

    /// The device no longer needs a re-read (it was used, or it is gone).
    pub fn settled(&mut self, dev: &str) {
        self.pending.remove(dev);
    }

    /// Whether any re-read is due at `now`.
    pub fn any_due(&self, now: Instant) -> bool {
        self.pending.values().any(|p| p.due <= now)
    }

    /// The devices due at `now`; they stay queued (with their attempt count) until
    /// [`Retries::settled`] or the next [`Retries::schedule`].
    pub fn due(&self, now: Instant) -> Vec<String> {
        self.pending
            .iter()
            .filter(|(_, p)| p.due <= now)
            .map(|(d, _)| d.clone())
            .collect()
    }

    /// Queued devices and why, for `show status`-like views and tests.
    pub fn list(&self) -> Vec<(String, u32, String)> {
        self.pending
            .iter()
            .map(|(d, p)| (d.clone(), p.attempt, p.why.clone()))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

impl Engine {
    /// Queues `dev` for another read (see the module docs), logging why.
    pub(super) fn retry_later(&mut self, dev: &str, why: String) {
        let now = self.clock.now();
        if self.retries.schedule(dev, why.clone(), now) {
            tracing::info!(
                dev,
                "{dev} cannot be used yet ({why}); reading it again later"
            );
        } else {
            tracing::warn!(
                dev,
                "{dev} still cannot be used after {MAX_ATTEMPTS} re-reads ({why}); the periodic reconcile will look at it again"
            );
        }
    }

    /// After a sync's maps were carried out: the devices of a map that failed (or got no
    /// name) are read again later, the queued devices of a map that was made, reloaded or
    /// kept are settled.
    pub(super) fn retry_by_outcome(&mut self, report: &SyncReport) {
        let failed: HashMap<&str, &str> = report
            .maps
            .iter()
            .filter_map(|m| Some((m.plan.desired.wwid.as_str(), m.plan.error.as_deref()?)))
            .chain(
                report
                    .unnamed
                    .iter()
                    .map(|w| (w.as_str(), "it got no map name")),
            )
            .collect();
        if !self.retries.is_empty() {
            let done: HashSet<&str> = report
                .maps
                .iter()
                .filter(|m| m.plan.error.is_none())
                .map(|m| m.plan.desired.wwid.as_str())
                .collect();
            for (dev, ..) in self.retries.list() {
                if self
                    .path(&dev)
                    .and_then(|p| p.wwid.as_deref())
                    .is_some_and(|w| done.contains(w))
                {
                    self.retries.settled(&dev);
                }
            }
        }
        if failed.is_empty() {
            return;
        }
        let again: Vec<(String, String)> = self
            .paths
            .iter()
            .filter_map(|p| {
                let w = p.wwid.as_deref()?;
                let why = failed.get(w)?;
                Some((p.dev.clone(), format!("the map of {w}: {why}")))
            })
            .collect();
        for (dev, why) in again {
            self.retry_later(&dev, why);
        }
    }

    /// Whether a re-read is due (cheap: the daemon asks every pass).
    pub fn retries_due(&self) -> bool {
        !self.retries.is_empty() && self.retries.any_due(self.clock.now())
    }

    /// The devices waiting for a re-read: (kernel name, attempt, why).
    pub fn retries(&self) -> Vec<(String, u32, String)> {
        self.retries.list()
    }

    /// Reads the due devices again, as if each had sent a change uevent, and plans their maps.
    pub fn run_due_retries(&mut self) -> Result<SyncReport> {
        let due = self.retries.due(self.clock.now());
        if due.is_empty() {
            return Ok(SyncReport::default());
        }
        tracing::debug!(devices = ?due, "re-reading devices an earlier event could not use");
        let now = self.clock.now();
        for dev in &due {
            self.retries.postpone(dev, now);
        }
        self.reread_devices(
            due.into_iter()
                .map(|d| (d, DeviceChange::Changed))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_up_to_thirty() {
        let secs: Vec<u64> = (1..=8).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn a_device_is_due_after_its_backoff_and_dropped_after_the_last_attempt() {
        let t0 = Instant::now();
        let mut r = Retries::default();
        assert!(r.schedule("sdb", "no WWID".into(), t0));
        assert!(!r.any_due(t0));
        assert!(r.any_due(t0 + Duration::from_secs(1)));
        assert_eq!(r.due(t0 + Duration::from_secs(1)), ["sdb"]);
        // Still queued until settled or rescheduled.
        assert!(r.schedule("sdb", "no WWID".into(), t0 + Duration::from_secs(1)));
        assert!(!r.any_due(t0 + Duration::from_secs(2)));
        assert!(r.any_due(t0 + Duration::from_secs(3)));
        for _ in 3..=MAX_ATTEMPTS {
            assert!(r.schedule("sdb", "no WWID".into(), t0));
        }
        assert!(!r.schedule("sdb", "no WWID".into(), t0), "one too many");
        // Postponing moves the due time, not the attempt count.
        r.schedule("sdd", "x".into(), t0);
        r.postpone("sdd", t0 + Duration::from_secs(5));
        assert!(!r.any_due(t0 + Duration::from_secs(5)));
        assert!(r.any_due(t0 + Duration::from_secs(6)));
        assert_eq!(r.list()[0].1, 1);
        r.settled("sdd");
        assert!(r.is_empty());
        r.schedule("sdc", "x".into(), t0);
        r.settled("sdc");
        assert!(r.is_empty());
    }
}
