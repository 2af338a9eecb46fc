//! The `no_path_retry` policy: what a map does while it has no usable path.
//!
//! - `queue`: I/O queues in the kernel until a path returns (`queue_if_no_path`);
//! - `fail`: queueing is switched off at once (`fail_if_no_path`), I/O errors out;
//! - `N`: I/O queues for N checker intervals (N × `polling_interval` on the clock), then
//!   queueing is switched off so processes do not hang forever; when a path returns queueing
//!   is switched back on, ready for the next outage.
//!
//! What the kernel does is the truth: after every reload (a table may bring
//! `queue_if_no_path` back) the state is re-read from the loaded table
//! ([`QueueState::observe_kernel`]), and a countdown that ran out in this outage is enforced
//! again ([`QueueState::gave_up`]), so `no_path_retry N` never turns into "queue forever".

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// The `no_path_retry` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoPathRetry {
    Fail,
    Queue,
    /// Queue for this many checker intervals (at least 1).
    Retries(u32),
}

impl NoPathRetry {
    /// Whether a map with this policy should queue while it has paths (so that the next
    /// outage starts out queueing).
    pub fn wants_queueing(self) -> bool {
        !matches!(self, NoPathRetry::Fail)
    }
}

impl fmt::Display for NoPathRetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoPathRetry::Fail => f.write_str("fail"),
            NoPathRetry::Queue => f.write_str("queue"),
            NoPathRetry::Retries(n) => write!(f, "{n}"),
        }
    }
}

impl FromStr for NoPathRetry {
    type Err = String;

    /// `fail`, `queue` or a count (`0` means fail).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "fail" => Ok(NoPathRetry::Fail),
            "queue" => Ok(NoPathRetry::Queue),
            other => match other.parse::<u32>() {
                Ok(0) => Ok(NoPathRetry::Fail),
                Ok(n) => Ok(NoPathRetry::Retries(n)),
                Err(_) => Err(format!(
                    "no_path_retry \"{other}\" is not fail, queue or a number of retries"
                )),
            },
        }
    }
}

/// A change of the map's queueing the daemon must send to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueAction {
    /// `queue_if_no_path`.
    EnableQueueing,
    /// `fail_if_no_path`.
    DisableQueueing,
}

/// Per-map `no_path_retry` state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueState {
    policy: NoPathRetry,
    polling_interval: Duration,
    queueing: bool,
    /// While counting down: when queueing will be switched off.
    fail_at: Option<Instant>,
    /// The countdown of the current outage ran out (or the map had queueing off with no
    /// path when we met it): queueing stays off until a path returns.
    gave_up: bool,
}

impl QueueState {
    /// State for a map whose table currently has queueing on (`queue_if_no_path` in its
    /// features) or off.
    pub fn new(policy: NoPathRetry, polling_interval: Duration, queueing_now: bool) -> Self {
        QueueState {
            policy,
            polling_interval,
            queueing: queueing_now,
            fail_at: None,
            gave_up: false,
        }
    }

    /// The kernel's queueing as the loaded table shows it (`queue_if_no_path` among its
    /// features), read after every reload and refresh. A reload can switch queueing back on
    /// behind the countdown's back; the next [`QueueState::update`] then switches it off
    /// again when this outage already gave up.
    pub fn observe_kernel(&mut self, kernel_queueing: bool) {
        self.queueing = kernel_queueing;
    }

    /// Whether this outage's countdown ran out: queueing must stay off until a path returns
    /// (a reload with no usable path must not load `queue_if_no_path`).
    pub fn gave_up(&self) -> bool {
        self.gave_up
    }

    /// Whether the state must be fed now even with no path check due: a countdown runs, or
    /// the kernel queues although this outage gave up.
    pub fn needs_update(&self) -> bool {
        self.fail_at.is_some() || (self.gave_up && self.queueing)
    }

    pub fn policy(&self) -> NoPathRetry {
        self.policy
    }

    /// Whether the kernel is (as far as this state knows) queueing I/O for the map.
    pub fn is_queueing(&self) -> bool {
        self.queueing
    }

    /// When queueing will be switched off, if a countdown runs.
    pub fn fail_at(&self) -> Option<Instant> {
        self.fail_at
    }

    /// Remaining countdown at `now` (for `show maps`), if one runs.
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        self.fail_at.map(|at| at.saturating_duration_since(now))
    }

    /// Feeds the map's number of usable paths at `now` (call after every check of one of its
    /// paths and at least once per polling interval while it has none); returns the message to
    /// send, if any.
    pub fn update(&mut self, usable_paths: usize, now: Instant) -> Option<QueueAction> {
        if usable_paths > 0 {
            self.fail_at = None;
            self.gave_up = false;
            if !self.queueing && self.policy.wants_queueing() {
                self.queueing = true;
                return Some(QueueAction::EnableQueueing);
            }
            return None;
        }
        match self.policy {
            NoPathRetry::Fail => self.disable(),
            NoPathRetry::Queue => {
                if self.queueing {
                    None
                } else {
                    self.queueing = true;
                    Some(QueueAction::EnableQueueing)
                }
            }
            NoPathRetry::Retries(n) => {
                if self.gave_up {
                    // Stays off until a path returns, whatever a reload loaded meanwhile.
                    return self.disable();
                }
                if !self.queueing {
                    // Met with queueing off and no path: nothing to count down.
                    self.gave_up = true;
                    return None;
                }
                let fail_at = *self.fail_at.get_or_insert(now + self.polling_interval * n);
                if now >= fail_at {
                    self.gave_up = true;
                    self.disable()
                } else {
                    None
                }
            }
        }
    }

    fn disable(&mut self) -> Option<QueueAction> {
        self.fail_at = None;
        if self.queueing {
            self.queueing = false;
            Some(QueueAction::DisableQueueing)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    const INTERVAL: Duration = Duration::from_secs(5);

    #[test]
    fn parsing() {
        assert_eq!("fail".parse(), Ok(NoPathRetry::Fail));
        assert_eq!("queue".parse(), Ok(NoPathRetry::Queue));
        assert_eq!("12".parse(), Ok(NoPathRetry::Retries(12)));
        assert_eq!("0".parse(), Ok(NoPathRetry::Fail));
        assert!("-1".parse::<NoPathRetry>().is_err());
        assert_eq!(NoPathRetry::Retries(3).to_string(), "3");
    }

    #[test]
    fn countdown_of_n_intervals() {
        let clock = ManualClock::new();
        let mut state = QueueState::new(NoPathRetry::Retries(3), INTERVAL, true);
        assert_eq!(state.update(2, clock.now()), None);
        // Last path gone: the countdown starts, I/O keeps queueing.
        assert_eq!(state.update(0, clock.now()), None);
        assert_eq!(state.remaining(clock.now()), Some(3 * INTERVAL));
        for _ in 0..2 {
            clock.advance(INTERVAL);
            assert_eq!(state.update(0, clock.now()), None);
            assert!(state.is_queueing());
        }
        clock.advance(INTERVAL - Duration::from_millis(1));
        assert_eq!(state.update(0, clock.now()), None);
        clock.advance(Duration::from_millis(1));
        assert_eq!(
            state.update(0, clock.now()),
            Some(QueueAction::DisableQueueing)
        );
        assert!(!state.is_queueing());
        // Said once only.
        clock.advance(INTERVAL);
        assert_eq!(state.update(0, clock.now()), None);
        // A path returns: queueing goes back on for the next outage.
        assert_eq!(
            state.update(1, clock.now()),
            Some(QueueAction::EnableQueueing)
        );
        assert_eq!(state.update(1, clock.now()), None);
    }

    #[test]
    fn a_reload_that_brings_queueing_back_after_the_countdown_is_undone() {
        let clock = ManualClock::new();
        let mut state = QueueState::new(NoPathRetry::Retries(3), INTERVAL, true);
        assert_eq!(state.update(0, clock.now()), None);
        clock.advance(3 * INTERVAL);
        assert_eq!(
            state.update(0, clock.now()),
            Some(QueueAction::DisableQueueing)
        );
        assert!(state.gave_up());
        assert!(!state.needs_update());
        // a reload with every path still down loads queue_if_no_path again
        state.observe_kernel(true);
        assert!(
            state.needs_update(),
            "the kernel queues although we gave up"
        );
        assert_eq!(
            state.update(0, clock.now()),
            Some(QueueAction::DisableQueueing),
            "switched off again at once, not after another countdown, and never left on"
        );
        assert!(!state.needs_update());
        // a path returns: queueing on for the next outage, which counts down afresh
        assert_eq!(
            state.update(1, clock.now()),
            Some(QueueAction::EnableQueueing)
        );
        assert!(!state.gave_up());
        assert_eq!(state.update(0, clock.now()), None);
        assert_eq!(state.remaining(clock.now()), Some(3 * INTERVAL));
    }

    #[test]
    fn path_returning_during_countdown_cancels_it() {
        let clock = ManualClock::new();
        let mut state = QueueState::new(NoPathRetry::Retries(2), INTERVAL, true);
        assert_eq!(state.update(0, clock.now()), None);
        clock.advance(INTERVAL);
        assert_eq!(state.update(1, clock.now()), None);
        assert_eq!(state.fail_at(), None);
        // The next outage starts a fresh countdown.
        clock.advance(INTERVAL * 10);
        assert_eq!(state.update(0, clock.now()), None);
        clock.advance(INTERVAL);
        assert_eq!(state.update(0, clock.now()), None);
        clock.advance(INTERVAL);
        assert_eq!(
            state.update(0, clock.now()),
            Some(QueueAction::DisableQueueing)
        );
    }

    #[test]
    fn queue_keeps_queueing_and_fail_stops_at_once() {
        let clock = ManualClock::new();
        let mut queue = QueueState::new(NoPathRetry::Queue, INTERVAL, true);
        for _ in 0..100 {
            assert_eq!(queue.update(0, clock.now()), None);
            clock.advance(INTERVAL);
        }
        assert!(queue.is_queueing());
        let mut queue_off = QueueState::new(NoPathRetry::Queue, INTERVAL, false);
        assert_eq!(
            queue_off.update(0, clock.now()),
            Some(QueueAction::EnableQueueing)
        );

        let mut fail = QueueState::new(NoPathRetry::Fail, INTERVAL, true);
        assert_eq!(
            fail.update(0, clock.now()),
            Some(QueueAction::DisableQueueing)
        );
        assert_eq!(fail.update(0, clock.now()), None);
        assert_eq!(fail.update(1, clock.now()), None, "fail never re-enables");
    }
}
