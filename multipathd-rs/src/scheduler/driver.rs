//! [`PathCheckDriver`]: the scheduler, the runner and each path's checker tied together, so
//! the daemon's loop is: `start_due(now)`, sleep until `next_wakeup()` or an event,
//! `collect(..)`, then apply [`super::failover`] / [`super::queueing`] to the updates.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{CheckScheduler, IntervalPolicy};
use crate::Error;
use crate::checker::runner::{CheckReport, CheckRunner, Submit};
use crate::checker::{CheckTarget, PathChecker};
use crate::clock::Clock;

/// A check result, with what the scheduler made of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathUpdate {
    /// The map the path belongs to.
    pub map: String,
    pub report: CheckReport,
    /// The path's state differs from its previous check (`Pending` never counts).
    pub changed: bool,
}

struct Member {
    target: CheckTarget,
    checker: Arc<dyn PathChecker>,
}

/// Runs each path's checks on time, never two at once for a path, and hands back updates.
pub struct PathCheckDriver {
    clock: Arc<dyn Clock>,
    scheduler: CheckScheduler,
    runner: CheckRunner,
    members: HashMap<String, Member>,
    check_timeout: Duration,
}

impl std::fmt::Debug for PathCheckDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PathCheckDriver")
            .field("scheduler", &self.scheduler)
            .field("runner", &self.runner)
            .field("check_timeout", &self.check_timeout)
            .finish()
    }
}

impl PathCheckDriver {
    /// `max_in_flight` bounds the concurrent checks; `check_timeout` is the runner's deadline
    /// per check (a check still running then is reported as `Timeout`).
    pub fn new(
        clock: Arc<dyn Clock>,
        policy: IntervalPolicy,
        max_in_flight: usize,
        check_timeout: Duration,
    ) -> Self {
        PathCheckDriver {
            runner: CheckRunner::new(Arc::clone(&clock), max_in_flight),
            clock,
            scheduler: CheckScheduler::new(policy),
            members: HashMap::new(),
            check_timeout,
        }
    }

    pub fn scheduler(&self) -> &CheckScheduler {
        &self.scheduler
    }

    /// Changes the intervals (reconfigure).
    pub fn set_policy(&mut self, policy: IntervalPolicy) {
        self.scheduler.set_policy(policy);
    }

    /// Starts checking `target` (a path of `map`) with `checker`; it is due at once.
    pub fn add_path(&mut self, target: CheckTarget, map: &str, checker: Arc<dyn PathChecker>) {
        let now = self.clock.now();
        self.scheduler.add_path(&target.dev, map, now);
        self.members
            .insert(target.dev.clone(), Member { target, checker });
    }

    /// Stops checking `dev`. A check already running finishes on its own; its result is
    /// dropped.
    pub fn remove_path(&mut self, dev: &str) -> bool {
        self.scheduler.remove_path(dev);
        self.members.remove(dev).is_some()
    }

    /// Checks every path of `map` as soon as possible (the kernel failed a path of it).
    pub fn recheck_map(&mut self, map: &str) -> Vec<String> {
        let now = self.clock.now();
        self.scheduler.recheck_map(map, now)
    }

    /// Checks `dev` as soon as possible (a uevent about it arrived).
    pub fn recheck_path(&mut self, dev: &str) -> bool {
        let now = self.clock.now();
        self.scheduler.recheck_path(dev, now)
    }

    /// Starts the checks of every due path; returns how many were started. A path whose
    /// previous check still runs is skipped until the next interval; when the runner is
    /// full the rest stay due.
    pub fn start_due(&mut self) -> Result<usize, Error> {
        let now = self.clock.now();
        let mut started = 0;
        for dev in self.scheduler.due(now) {
            let Some(member) = self.members.get(&dev) else {
                self.scheduler.remove_path(&dev);
                continue;
            };
            match self.runner.submit(
                Arc::clone(&member.checker),
                member.target.clone(),
                self.check_timeout,
            )? {
                Submit::Started => {
                    started += 1;
                    // Not due again before its result (or timeout) is in.
                    self.scheduler.postpone(&dev, now + self.check_timeout);
                }
                Submit::AlreadyInFlight => {
                    let retry = now + self.scheduler.policy().polling_interval;
                    self.scheduler.postpone(&dev, retry);
                }
                Submit::Busy => break,
            }
        }
        Ok(started)
    }

    /// Waits up to `max_wait` (real time) for check results and timeouts, records them in the
    /// scheduler and returns them. Never blocks when no check is running.
    pub fn collect(&mut self, max_wait: Duration) -> Vec<PathUpdate> {
        let reports = self.runner.wait(max_wait);
        let now = self.clock.now();
        let mut updates = Vec::with_capacity(reports.len());
        for report in reports {
            let Some(schedule) = self.scheduler.get(&report.dev) else {
                continue; // removed while its check ran
            };
            let map = schedule.map.clone();
            let changed = self.scheduler.record(&report.dev, report.result.state, now);
            updates.push(PathUpdate {
                map,
                report,
                changed,
            });
        }
        updates
    }

    /// When the loop must wake up next: the next due path or the next check deadline.
    pub fn next_wakeup(&self) -> Option<Instant> {
        match (self.scheduler.next_due(), self.runner.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether `dev` has a check running.
    pub fn is_in_flight(&self, dev: &str) -> bool {
        self.runner.is_in_flight(dev)
    }
}
