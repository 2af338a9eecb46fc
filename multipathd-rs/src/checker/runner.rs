//! Asynchronous execution of path checks on a bounded pool.
//!
//! A fixed set of worker threads (started once, at most [`DEFAULT_WORKERS`]) takes checks from
//! a bounded queue; results come back over a channel, so a path whose check blocks (a dead FC
//! port, a hung `O_DIRECT` read) occupies one worker and never delays the caller. Rules:
//!
//! - at most `max_in_flight` checks are queued or running; a submission beyond that is
//!   refused ([`Submit::Busy`]) and counted ([`RunnerStats::refused`]);
//! - one check per path at a time: [`CheckRunner::submit`] refuses a path whose previous check
//!   is still queued or running ([`Submit::AlreadyInFlight`]);
//! - the deadline of a check runs from the moment a worker starts it: a check still running
//!   at its deadline is reported once as [`CheckState::Timeout`] (`timed_out: true`) by
//!   [`CheckRunner::poll`]; its slot stays taken until the worker really returns, and that late
//!   answer is then delivered too (`late: true`), so the daemon sees the path come back without
//!   starting a second check while the first one hangs;
//! - a check still waiting in the queue when its deadline would have passed (every worker
//!   busy with hung checks) gets no verdict (a path is never failed for a check that never
//!   ran); it is counted as [`RunnerStats::queued_late`] and keeps waiting.
//!
//! The [`CheckTarget`] is completed on the worker ([`CheckTarget::resolve`]): the sysfs read
//! that finds a path's sg node happens only for checks that were accepted, and outside the
//! caller. Deadlines are measured on the injected [`Clock`], so tests drive them with a manual
//! clock.

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{CheckResult, CheckState, CheckTarget, PathChecker};
use crate::Error;
use crate::clock::Clock;

/// The most worker threads a runner starts. Cheap checks (sysfs, TUR on a live path) take
/// microseconds to milliseconds, so a few workers keep up with tens of thousands of paths;
/// more workers only help while many checks hang at once (each hung TUR holds its worker for
/// at most its SG_IO timeout).
pub const DEFAULT_WORKERS: usize = 16;

/// What the runner did since it started, for `show status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerStats {
    /// Worker threads of the pool.
    pub workers: u32,
    /// The bound on queued + running checks.
    pub max_in_flight: u32,
    /// Checks queued or running now.
    pub in_flight: u32,
    /// Checks accepted since start.
    pub submitted: u64,
    /// Checks refused because `max_in_flight` were queued or running (the path stays due).
    pub refused: u64,
    /// Checks still running at their deadline (reported as `timeout`).
    pub timed_out: u64,
    /// Answers that arrived after their check had been reported as timed out.
    pub late: u64,
    /// Checks that waited in the queue longer than their timeout before a worker was free.
    pub queued_late: u64,
}

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
    /// When it was queued (runner clock).
    queued: Instant,
    /// When a worker started it (set by the worker).
    started: Arc<Mutex<Option<Instant>>>,
    timeout: Duration,
    timed_out: bool,
    queued_late: bool,
}

impl InFlight {
    fn started(&self) -> Option<Instant> {
        *self.started.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// When the runner must look at it next: its deadline once started, else the moment it
    /// has waited a whole timeout in the queue.
    fn deadline(&self) -> Instant {
        self.started().unwrap_or(self.queued) + self.timeout
    }
}

struct Done {
    dev: String,
    result: CheckResult,
}

struct Job {
    checker: Arc<dyn PathChecker>,
    target: CheckTarget,
    started: Arc<Mutex<Option<Instant>>>,
}

/// Runs path checks on a fixed pool of worker threads and collects their results.
pub struct CheckRunner {
    clock: Arc<dyn Clock>,
    max_in_flight: usize,
    workers: usize,
    in_flight: HashMap<String, InFlight>,
    /// The pool's queue; None until the first submission starts the workers.
    jobs: Option<SyncSender<Job>>,
    tx: Sender<Done>,
    rx: Receiver<Done>,
    stats: RunnerStats,
}

impl std::fmt::Debug for CheckRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckRunner")
            .field("max_in_flight", &self.max_in_flight)
            .field("workers", &self.workers)
            .field("in_flight", &self.in_flight.len())
            .finish()
    }
}

impl CheckRunner {
    /// A runner with at most `max_in_flight` checks queued or running (at least 1), on
    /// `min(max_in_flight, DEFAULT_WORKERS)` workers.
    pub fn new(clock: Arc<dyn Clock>, max_in_flight: usize) -> Self {
        Self::with_workers(clock, max_in_flight, DEFAULT_WORKERS)
    }

    /// A runner with `workers` threads (at least 1, at most `max_in_flight`).
    pub fn with_workers(clock: Arc<dyn Clock>, max_in_flight: usize, workers: usize) -> Self {
        let (tx, rx) = mpsc::channel();
        let max_in_flight = max_in_flight.max(1);
        let workers = workers.clamp(1, max_in_flight);
        CheckRunner {
            clock,
            max_in_flight,
            workers,
            in_flight: HashMap::new(),
            jobs: None,
            tx,
            rx,
            stats: RunnerStats {
                workers: u32::try_from(workers).unwrap_or(u32::MAX),
                max_in_flight: u32::try_from(max_in_flight).unwrap_or(u32::MAX),
                ..RunnerStats::default()
            },
        }
    }

    /// What the runner did so far, and how full it is now.
    pub fn stats(&self) -> RunnerStats {
        RunnerStats {
            in_flight: u32::try_from(self.in_flight.len()).unwrap_or(u32::MAX),
            ..self.stats
        }
    }

    /// How many more checks it accepts now.
    pub fn free_slots(&self) -> usize {
        self.max_in_flight.saturating_sub(self.in_flight.len())
    }

    /// Counts `n` checks the caller did not even submit because [`CheckRunner::free_slots`]
    /// said the pool was full (they stay due).
    pub fn count_refused(&mut self, n: usize) {
        self.stats.refused += n as u64;
    }

    fn start_workers(&mut self) -> Result<SyncSender<Job>, Error> {
        let (job_tx, job_rx) = mpsc::sync_channel::<Job>(self.max_in_flight);
        let job_rx = Arc::new(Mutex::new(job_rx));
        for i in 0..self.workers {
            let job_rx = Arc::clone(&job_rx);
            let tx = self.tx.clone();
            let clock = Arc::clone(&self.clock);
            std::thread::Builder::new()
                .name(format!("checker-{i}"))
                .spawn(move || worker(&job_rx, &tx, clock.as_ref()))
                .map_err(|source| Error::CheckerSpawn {
                    dev: format!("(checker worker {i})"),
                    source,
                })?;
        }
        self.jobs = Some(job_tx.clone());
        Ok(job_tx)
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
            .filter(|f| !(f.timed_out || f.queued_late && f.started().is_none()))
            .map(InFlight::deadline)
            .min()
    }

    /// Queues a check of `target` with `checker`; once a worker starts it, the result is due
    /// within `timeout`.
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
            self.stats.refused += 1;
            return Ok(Submit::Busy);
        }
        let jobs = match &self.jobs {
            Some(j) => j.clone(),
            None => self.start_workers()?,
        };
        let queued = self.clock.now();
        let dev = target.dev.clone();
        let name = checker.name();
        let started = Arc::new(Mutex::new(None));
        let job = Job {
            checker,
            target,
            started: Arc::clone(&started),
        };
        match jobs.try_send(job) {
            Ok(()) => {}
            // The queue holds max_in_flight jobs and at most that many are in flight, so it
            // is never full here; count it as a refusal all the same.
            Err(TrySendError::Full(_)) => {
                self.stats.refused += 1;
                return Ok(Submit::Busy);
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(Error::CheckerSpawn {
                    dev,
                    source: std::io::Error::other("every checker worker has stopped"),
                });
            }
        }
        self.stats.submitted += 1;
        self.in_flight.insert(
            dev,
            InFlight {
                checker: name,
                queued,
                started,
                timeout,
                timed_out: false,
                queued_late: false,
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
        if flight.timed_out {
            self.stats.late += 1;
        }
        Some(CheckReport {
            dev: done.dev,
            checker: flight.checker,
            result: done.result,
            started: flight.started().unwrap_or(flight.queued),
            finished: self.clock.now(),
            timed_out: false,
            late: flight.timed_out,
        })
    }

    fn expire(&mut self, reports: &mut Vec<CheckReport>) {
        let now = self.clock.now();
        let mut expired: Vec<(&String, &mut InFlight, Instant)> = Vec::new();
        for (dev, flight) in &mut self.in_flight {
            if flight.timed_out || flight.deadline() > now {
                continue;
            }
            match flight.started() {
                Some(started) => expired.push((dev, flight, started)),
                None if !flight.queued_late => {
                    flight.queued_late = true;
                    self.stats.queued_late += 1;
                    tracing::warn!(
                        dev = %dev,
                        "the check of {dev} waited {:?} in the queue: every checker worker is busy",
                        now - flight.queued
                    );
                }
                None => {}
            }
        }
        expired.sort_by(|a, b| a.0.cmp(b.0));
        for (dev, flight, started) in expired {
            flight.timed_out = true;
            self.stats.timed_out += 1;
            reports.push(CheckReport {
                dev: dev.clone(),
                checker: flight.checker,
                result: CheckResult::new(
                    CheckState::Timeout,
                    format!(
                        "{} check of {dev} still running after {:?}",
                        flight.checker,
                        now - started
                    ),
                ),
                started,
                finished: now,
                timed_out: true,
                late: false,
            });
        }
    }
}

/// One worker of the pool: takes jobs until the runner is dropped.
fn worker(jobs: &Mutex<Receiver<Job>>, done: &Sender<Done>, clock: &dyn Clock) {
    loop {
        let job = {
            let rx = jobs.lock().unwrap_or_else(PoisonError::into_inner);
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return, // the runner is gone
            }
        };
        *job.started.lock().unwrap_or_else(PoisonError::into_inner) = Some(clock.now());
        let mut target = job.target;
        target.resolve();
        let result = job.checker.check(&target);
        // The runner may be gone (daemon shutting down); nothing to deliver to then.
        if done
            .send(Done {
                dev: target.dev,
                result,
            })
            .is_err()
        {
            return;
        }
    }
}
