//! Asynchronous execution of path checks.
//!
//! Each check runs on its own worker thread (at most `max_in_flight` at once), and its result
//! comes back over a channel, so a path whose check blocks (a dead FC port, a hung `O_DIRECT`
//! read) never delays the checks of the other paths. Rules:
//!
//! - one check per path at a time: [`CheckRunner::submit`] refuses a path whose previous check
//!   is still running ([`Submit::AlreadyInFlight`]);
//! - a check still running at its deadline is reported once as [`CheckState::Timeout`]
//!   (`timed_out: true`) by [`CheckRunner::poll`]; its slot stays taken until the worker really
//!   returns, and that late answer is then delivered too (`late: true`), so the daemon sees the
//!   path come back without starting a second check while the first one hangs.
//!
//! Deadlines are measured on the injected [`Clock`], so tests drive them with a manual clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use super::{CheckResult, CheckState, CheckTarget, PathChecker};
use crate::Error;
use crate::clock::Clock;

/// One result of a path check, as delivered by the runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// The path (`CheckTarget::dev`).
    pub dev: String,
    /// The checker that ran (`tur`, `sysfs`, ...).
    pub checker: &'static str,
    pub result: CheckResult,
    /// When the check was started (runner clock).
    pub started: Instant,
    /// When the runner saw the result or declared the timeout (runner clock).
    pub finished: Instant,
    /// This report is the runner's own timeout verdict: the check is still running.
    pub timed_out: bool,
    /// This report is the real answer of a check already reported as timed out.
    pub late: bool,
}

/// What [`CheckRunner::submit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submit {
    /// A worker is checking the path.
    Started,
    /// The path's previous check is still running; nothing was started.
    AlreadyInFlight,
    /// `max_in_flight` checks are running; try again after some complete.
    Busy,
}

struct InFlight {
    checker: &'static str,
    started: Instant,
    deadline: Instant,
    timed_out: bool,
}

struct Done {
    dev: String,
    result: CheckResult,
}

/// Runs path checks on worker threads and collects their results.
pub struct CheckRunner {
    clock: Arc<dyn Clock>,
    max_in_flight: usize,
    in_flight: HashMap<String, InFlight>,
    tx: Sender<Done>,
    rx: Receiver<Done>,
}

impl std::fmt::Debug for CheckRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckRunner")
            .field("max_in_flight", &self.max_in_flight)
            .field("in_flight", &self.in_flight.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl CheckRunner {
    /// A runner with at most `max_in_flight` concurrent checks (at least 1).
    pub fn new(clock: Arc<dyn Clock>, max_in_flight: usize) -> Self {
        let (tx, rx) = mpsc::channel();
        CheckRunner {
            clock,
            max_in_flight: max_in_flight.max(1),
            in_flight: HashMap::new(),
            tx,
            rx,
        }
    }

    /// Paths whose check is running now.
    pub fn in_flight(&self) -> impl Iterator<Item = &str> {
        self.in_flight.keys().map(String::as_str)
    }

    /// Whether `dev` has a check running.
    pub fn is_in_flight(&self, dev: &str) -> bool {
        self.in_flight.contains_key(dev)
    }

    /// The earliest deadline of a running check not yet reported as timed out, for the
    /// daemon's sleep computation.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.in_flight
            .values()
            .filter(|f| !f.timed_out)
            .map(|f| f.deadline)
            .min()
    }

    /// Starts checking `target` with `checker`; the result is due within `timeout`.
    pub fn submit(
        &mut self,
        checker: Arc<dyn PathChecker>,
        target: CheckTarget,
        timeout: Duration,
    ) -> Result<Submit, Error> {
        if self.in_flight.contains_key(&target.dev) {
            return Ok(Submit::AlreadyInFlight);
        }
        if self.in_flight.len() >= self.max_in_flight {
            return Ok(Submit::Busy);
        }
        let started = self.clock.now();
        let dev = target.dev.clone();
        let name = checker.name();
        let tx = self.tx.clone();
        std::thread::Builder::new()
            .name(format!("check-{dev}"))
            .spawn(move || {
                let result = checker.check(&target);
                // The runner may be gone (daemon shutting down); nothing to deliver to then.
                let _ = tx.send(Done {
                    dev: target.dev,
                    result,
                });
            })
            .map_err(|source| Error::CheckerSpawn {
                dev: dev.clone(),
                source,
            })?;
        self.in_flight.insert(
            dev,
            InFlight {
                checker: name,
                started,
                deadline: started + timeout,
                timed_out: false,
            },
        );
        Ok(Submit::Started)
    }

    /// Collects every finished check and declares the overdue ones timed out; never blocks.
    pub fn poll(&mut self) -> Vec<CheckReport> {
        let mut reports = Vec::new();
        while let Ok(done) = self.rx.try_recv() {
            reports.extend(self.finish(done));
        }
        self.expire(&mut reports);
        reports
    }

    /// Waits up to `max_wait` of real time for at least one result (or a deadline passing on
    /// the runner's clock), then returns like [`CheckRunner::poll`]. Returns at once if nothing
    /// is in flight.
    pub fn wait(&mut self, max_wait: Duration) -> Vec<CheckReport> {
        let mut reports = self.poll();
        if !reports.is_empty() || self.in_flight.is_empty() {
            return reports;
        }
        let wait = match self.next_deadline() {
            Some(deadline) => deadline
                .saturating_duration_since(self.clock.now())
                .min(max_wait),
            None => max_wait,
        };
        match self.rx.recv_timeout(wait) {
            Ok(done) => reports.extend(self.finish(done)),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
        }
        reports.extend(self.poll());
        reports
    }

    fn finish(&mut self, done: Done) -> Option<CheckReport> {
        let flight = self.in_flight.remove(&done.dev)?;
        Some(CheckReport {
            dev: done.dev,
            checker: flight.checker,
            result: done.result,
            started: flight.started,
            finished: self.clock.now(),
            timed_out: false,
            late: flight.timed_out,
        })
    }

    fn expire(&mut self, reports: &mut Vec<CheckReport>) {
        let now = self.clock.now();
        let mut expired: Vec<(&String, &mut InFlight)> = self
            .in_flight
            .iter_mut()
            .filter(|(_, f)| !f.timed_out && f.deadline <= now)
            .collect();
        expired.sort_by(|a, b| a.0.cmp(b.0));
        for (dev, flight) in expired {
            flight.timed_out = true;
            reports.push(CheckReport {
                dev: dev.clone(),
                checker: flight.checker,
                result: CheckResult::new(
                    CheckState::Timeout,
                    format!(
                        "{} check of {dev} still running after {:?}",
                        flight.checker,
                        now - flight.started
                    ),
                ),
                started: flight.started,
                finished: now,
                timed_out: true,
                late: false,
            });
        }
    }
}
