//! An injectable monotonic clock.
//!
//! Everything time-based in the checker and event layer (check deadlines, polling intervals,
//! `no_path_retry` countdowns, deferred failback, uevent burst windows) takes a [`Clock`], so the
//! daemon runs on [`SystemClock`] while tests drive a [`ManualClock`] forward explicitly and never
//! sleep.
//!
//! Time values are [`std::time::Instant`]s: the manual clock hands out `base + offset`, where
//! `base` is fixed when the clock is made and `offset` only moves when a test calls
//! [`ManualClock::advance`].

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// A monotonic time source that can also be waited on.
pub trait Clock: Send + Sync {
    /// The current monotonic time.
    fn now(&self) -> Instant;

    /// Blocks the calling thread until [`Clock::now`] is at or past `deadline`.
    fn sleep_until(&self, deadline: Instant);

    /// Blocks for `duration` of this clock's time.
    fn sleep(&self, duration: Duration) {
        let deadline = self.now() + duration;
        self.sleep_until(deadline);
    }
}

/// The real monotonic clock (`CLOCK_MONOTONIC` through [`Instant`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&self, deadline: Instant) {
        let now = Instant::now();
        if deadline > now {
            std::thread::sleep(deadline - now);
        }
    }
}

/// A clock that only moves when told to; for deterministic tests.
///
/// [`Clock::sleep_until`] on a manual clock blocks until another thread advances the clock past
/// the deadline, so a background thread "sleeping" on it is released exactly by the test.
#[derive(Debug)]
pub struct ManualClock {
    base: Instant,
    offset: Mutex<Duration>,
    moved: Condvar,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    /// A manual clock standing at its start time.
    pub fn new() -> Self {
        ManualClock {
            base: Instant::now(),
            offset: Mutex::new(Duration::ZERO),
            moved: Condvar::new(),
        }
    }

    /// The time this clock started at (its `now()` before any advance).
    pub fn start(&self) -> Instant {
        self.base
    }

    /// How far the clock has been advanced since it started.
    pub fn elapsed(&self) -> Duration {
        *self.lock()
    }

    /// Moves the clock forward by `by` and wakes every thread sleeping on it.
    pub fn advance(&self, by: Duration) {
        let mut offset = self.lock();
        *offset += by;
        drop(offset);
        self.moved.notify_all();
    }

    /// Moves the clock forward to `to` (no-op if it is already past it).
    pub fn advance_to(&self, to: Instant) {
        let target = to.saturating_duration_since(self.base);
        let mut offset = self.lock();
        if target > *offset {
            *offset = target;
        }
        drop(offset);
        self.moved.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, Duration> {
        // A panic while holding this lock cannot leave the Duration half-written.
        self.offset.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + *self.lock()
    }

    fn sleep_until(&self, deadline: Instant) {
        let target = deadline.saturating_duration_since(self.base);
        let mut offset = self.lock();
        while *offset < target {
            offset = self
                .moved
                .wait(offset)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let clock = ManualClock::new();
        let t0 = clock.now();
        assert_eq!(clock.now(), t0);
        clock.advance(Duration::from_secs(5));
        assert_eq!(clock.now() - t0, Duration::from_secs(5));
        clock.advance_to(t0 + Duration::from_secs(3));
        assert_eq!(
            clock.now() - t0,
            Duration::from_secs(5),
            "never goes backwards"
        );
        clock.advance_to(t0 + Duration::from_secs(9));
        assert_eq!(clock.elapsed(), Duration::from_secs(9));
    }

    #[test]
    fn manual_sleep_is_released_by_advance() {
        let clock = Arc::new(ManualClock::new());
        let deadline = clock.now() + Duration::from_secs(10);
        let sleeper = {
            let clock = Arc::clone(&clock);
            std::thread::spawn(move || {
                clock.sleep_until(deadline);
                clock.now()
            })
        };
        clock.advance(Duration::from_secs(4));
        assert!(!sleeper.is_finished() || clock.now() >= deadline);
        clock.advance(Duration::from_secs(6));
        let woke_at = sleeper.join().expect("sleeper thread");
        assert!(woke_at >= deadline);
    }

    #[test]
    fn sleep_until_past_deadline_returns_at_once() {
        let clock = ManualClock::new();
        clock.advance(Duration::from_secs(1));
        clock.sleep_until(clock.start());
        SystemClock.sleep_until(Instant::now());
    }
}
