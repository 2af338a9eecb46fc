//! When to check which path, and what to do with the answers.
//!
//! - [`CheckScheduler`]: per-path check intervals with multipath-tools' back-off
//!   (`polling_interval`; a path that stays healthy has its interval doubled up to
//!   `max_polling_interval`; a failed, pending or changed path goes back to `polling_interval`),
//!   immediate re-checks of every path of a map when the kernel reported a failure on it, and
//!   due-path selection on an injected clock.
//! - [`failover`]: the per-path decision (fail / reinstate) and the per-map failback decision
//!   (`immediate`, `manual`, `followover`, N seconds).
//! - [`queueing`]: the per-map `no_path_retry N|queue|fail` countdown.
//! - [`driver::PathCheckDriver`]: scheduler + [`crate::checker::runner::CheckRunner`] + each
//!   path's checker, the piece the daemon loop drives.
//!
//! The decisions use this module's own small enums; the daemon maps them to dm messages
//! (`fail_path`, `reinstate_path`, `switch_group`, `queue_if_no_path` / `fail_if_no_path`).

pub mod driver;
pub mod failover;
pub mod queueing;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::checker::CheckState;

/// multipath-tools' default `polling_interval` (seconds).
pub const DEFAULT_POLLING_INTERVAL: Duration = Duration::from_secs(5);

/// Check intervals: the base and the back-off ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntervalPolicy {
    /// The interval of a path that failed, changed state or was just added.
    pub polling_interval: Duration,
    /// The ceiling of the back-off of a healthy path.
    pub max_polling_interval: Duration,
}

impl IntervalPolicy {
    /// `polling_interval` with multipath-tools' default ceiling of 4 × `polling_interval`.
    pub fn new(polling_interval: Duration) -> Self {
        IntervalPolicy {
            polling_interval,
            max_polling_interval: polling_interval * 4,
        }
    }

    /// Both values given; a ceiling below `polling_interval` is raised to it.
    pub fn with_max(polling_interval: Duration, max_polling_interval: Duration) -> Self {
        IntervalPolicy {
            polling_interval,
            max_polling_interval: max_polling_interval.max(polling_interval),
        }
    }
}

impl Default for IntervalPolicy {
    fn default() -> Self {
        IntervalPolicy::new(DEFAULT_POLLING_INTERVAL)
    }
}

/// The scheduling state of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathSchedule {
    /// The map (WWID or alias, the daemon's choice) the path belongs to.
    pub map: String,
    /// The current interval.
    pub interval: Duration,
    /// When the path is due for its next check.
    pub next_due: Instant,
    /// The last state a check reported (`None` before the first check).
    pub last_state: Option<CheckState>,
}

/// Per-path check timing.
#[derive(Debug, Clone)]
pub struct CheckScheduler {
    policy: IntervalPolicy,
    /// Boxed: the table has a power of two of slots and is as little as half full after a
    /// cold start's `reserve`, so inline schedules left up to half their memory empty.
    paths: HashMap<String, Box<PathSchedule>>,
}

impl CheckScheduler {
    pub fn new(policy: IntervalPolicy) -> Self {
        CheckScheduler {
            policy,
            paths: HashMap::new(),
        }
    }

    pub fn policy(&self) -> IntervalPolicy {
        self.policy
    }

    /// Changes the intervals (reconfigure). Current intervals are clamped to the new ceiling.
    pub fn set_policy(&mut self, policy: IntervalPolicy) {
        self.policy = policy;
        for path in self.paths.values_mut() {
            path.interval = path
                .interval
                .clamp(policy.polling_interval, policy.max_polling_interval);
        }
    }

    /// Starts scheduling `dev` (member of `map`); it is due at once. Re-adding a known path
    /// moves it to `map` and makes it due at once.
    pub fn add_path(&mut self, dev: &str, map: &str, now: Instant) {
        self.paths.insert(
            dev.to_string(),
            Box::new(PathSchedule {
                map: map.to_string(),
                interval: self.policy.polling_interval,
                next_due: now,
                last_state: None,
            }),
        );
    }

    /// Makes room for `additional` more paths at once, so adding every path of a cold start
    /// does not regrow (and for a moment hold twice) the table at the memory peak.
    pub fn reserve(&mut self, additional: usize) {
        self.paths.reserve(additional);
    }

    /// Stops scheduling `dev`; returns its last schedule.
    pub fn remove_path(&mut self, dev: &str) -> Option<PathSchedule> {
        self.paths.remove(dev).map(|b| *b)
    }

    pub fn get(&self, dev: &str) -> Option<&PathSchedule> {
        self.paths.get(dev).map(|b| &**b)
    }

    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The paths due at `now`, earliest first (ties by name).
    pub fn due(&self, now: Instant) -> Vec<String> {
        let mut due: Vec<(&Instant, &String)> = self
            .paths
            .iter()
            .filter(|(_, p)| p.next_due <= now)
            .map(|(dev, p)| (&p.next_due, dev))
            .collect();
        due.sort();
        due.into_iter().map(|(_, dev)| dev.clone()).collect()
    }

    /// When the next path falls due (the daemon sleeps until then or until an event).
    pub fn next_due(&self) -> Option<Instant> {
        self.paths.values().map(|p| p.next_due).min()
    }

    /// Records a check result at `now` and schedules the next check: a path that is usable
    /// and unchanged doubles its interval up to the ceiling; a failed, pending or changed path
    /// is checked again after `polling_interval`. Returns whether the state changed.
    /// Unknown paths are ignored (they were removed while their check ran).
    pub fn record(&mut self, dev: &str, state: CheckState, now: Instant) -> bool {
        let policy = self.policy;
        let Some(path) = self.paths.get_mut(dev) else {
            return false;
        };
        let changed =
            state != CheckState::Pending && path.last_state.is_some_and(|last| last != state);
        let steady = path.last_state == Some(state) && state.is_usable();
        path.interval = if steady {
            (path.interval * 2).min(policy.max_polling_interval)
        } else {
            policy.polling_interval
        };
        // Pending keeps the previous verdict on record: it is "no answer", not a new state.
        if state != CheckState::Pending {
            path.last_state = Some(state);
        }
        path.next_due = now + path.interval;
        changed
    }

    /// Sets when `dev` is next due without touching its interval (a check of it is running
    /// until `until`, or must be retried then).
    pub fn postpone(&mut self, dev: &str, until: Instant) -> bool {
        match self.paths.get_mut(dev) {
            Some(path) => {
                path.next_due = until;
                true
            }
            None => false,
        }
    }

    /// Makes `dev` due at once with its interval back at `polling_interval`.
    pub fn recheck_path(&mut self, dev: &str, now: Instant) -> bool {
        let base = self.policy.polling_interval;
        match self.paths.get_mut(dev) {
            Some(path) => {
                path.interval = base;
                path.next_due = now;
                true
            }
            None => false,
        }
    }

    /// Makes every path of `map` due at once (the kernel reported a path failure on it);
    /// returns the paths affected, sorted.
    pub fn recheck_map(&mut self, map: &str, now: Instant) -> Vec<String> {
        let base = self.policy.polling_interval;
        let mut affected: BTreeSet<String> = BTreeSet::new();
        for (dev, path) in self.paths.iter_mut().filter(|(_, p)| p.map == map) {
            path.interval = base;
            path.next_due = now;
            affected.insert(dev.clone());
        }
        affected.into_iter().collect()
    }

    /// The paths of `map`, sorted.
    pub fn paths_of(&self, map: &str) -> Vec<String> {
        let mut devs: Vec<String> = self
            .paths
            .iter()
            .filter(|(_, p)| p.map == map)
            .map(|(dev, _)| dev.clone())
            .collect();
        devs.sort();
        devs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn healthy_path_backs_off_to_the_ceiling() {
        let clock = ManualClock::new();
        let mut sched = CheckScheduler::new(IntervalPolicy::new(5 * S));
        sched.add_path("sda", "mpatha", clock.now());
        assert_eq!(sched.due(clock.now()), ["sda"]);
        let mut intervals = Vec::new();
        for _ in 0..5 {
            sched.record("sda", CheckState::Up, clock.now());
            let path = sched.get("sda").expect("scheduled");
            intervals.push(path.interval.as_secs());
            assert!(sched.due(clock.now()).is_empty());
            clock.advance_to(path.next_due);
            assert_eq!(sched.due(clock.now()), ["sda"]);
        }
        // First result: no previous state, base interval; then 10, 20, capped at 20.
        assert_eq!(intervals, [5, 10, 20, 20, 20]);
    }

    #[test]
    fn failure_and_change_reset_the_interval() {
        let clock = ManualClock::new();
        let mut sched = CheckScheduler::new(IntervalPolicy::with_max(2 * S, 16 * S));
        sched.add_path("sda", "m", clock.now());
        for _ in 0..4 {
            sched.record("sda", CheckState::Up, clock.now());
        }
        assert_eq!(sched.get("sda").map(|p| p.interval), Some(16 * S));
        assert!(
            sched.record("sda", CheckState::Down, clock.now()),
            "changed"
        );
        assert_eq!(sched.get("sda").map(|p| p.interval), Some(2 * S));
        // A path that stays down keeps the base interval.
        assert!(!sched.record("sda", CheckState::Down, clock.now()));
        assert_eq!(sched.get("sda").map(|p| p.interval), Some(2 * S));
        // Coming back is a change: base interval, then back-off resumes.
        assert!(sched.record("sda", CheckState::Up, clock.now()));
        assert_eq!(sched.get("sda").map(|p| p.interval), Some(2 * S));
        sched.record("sda", CheckState::Up, clock.now());
        assert_eq!(sched.get("sda").map(|p| p.interval), Some(4 * S));
        // Pending: checked again soon, previous verdict kept.
        assert!(!sched.record("sda", CheckState::Pending, clock.now()));
        assert_eq!(sched.get("sda").map(|p| p.interval), Some(2 * S));
        assert_eq!(
            sched.get("sda").and_then(|p| p.last_state),
            Some(CheckState::Up)
        );
    }

    #[test]
    fn recheck_map_makes_its_paths_due_now() {
        let clock = ManualClock::new();
        let mut sched = CheckScheduler::new(IntervalPolicy::new(5 * S));
        for (dev, map) in [("sda", "m1"), ("sdc", "m1"), ("sdb", "m2")] {
            sched.add_path(dev, map, clock.now());
            sched.record(dev, CheckState::Up, clock.now());
            sched.record(dev, CheckState::Up, clock.now());
        }
        clock.advance(S);
        assert!(sched.due(clock.now()).is_empty());
        assert_eq!(sched.recheck_map("m1", clock.now()), ["sda", "sdc"]);
        assert_eq!(sched.due(clock.now()), ["sda", "sdc"]);
        assert_eq!(sched.get("sda").map(|p| p.interval), Some(5 * S));
        assert_eq!(sched.paths_of("m2"), ["sdb"]);
        assert!(sched.recheck_path("sdb", clock.now()));
        assert!(!sched.recheck_path("sdx", clock.now()));
        assert_eq!(sched.due(clock.now()).len(), 3);
        assert_eq!(sched.next_due(), Some(clock.now()));
    }

    #[test]
    fn due_order_and_removal() {
        let clock = ManualClock::new();
        let mut sched = CheckScheduler::new(IntervalPolicy::new(S));
        sched.add_path("sdb", "m", clock.now());
        clock.advance(S);
        sched.add_path("sda", "m", clock.now());
        assert_eq!(sched.due(clock.now()), ["sdb", "sda"], "earliest first");
        assert!(sched.remove_path("sdb").is_some());
        assert!(
            !sched.record("sdb", CheckState::Up, clock.now()),
            "removed path ignored"
        );
        assert_eq!(sched.len(), 1);
        sched.set_policy(IntervalPolicy::with_max(3 * S, 6 * S));
        assert_eq!(sched.get("sda").map(|p| p.interval), Some(3 * S));
    }
}
