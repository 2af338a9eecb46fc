//! The daemon's applier: a few threads that carry out prepared syncs ([`ApplyJob`]) on the
//! shared backend, without the engine lock and off the loop's thread, so check results
//! (failover) and new maps never wait behind a reload waiting for udevd. The loop hands
//! jobs in ([`Applier::submit`]) and books what came back under the lock
//! ([`Applier::take_done`] then [`crate::engine::Engine::finish_job`]).

use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use dm_tables::DmBackend;

use crate::engine::{AppliedJob, ApplyJob};

/// Called when a job is done (wakes the loop).
pub type Wake = Box<dyn Fn() + Send + Sync>;

/// The applier threads and their queues.
pub struct Applier {
    jobs: Option<mpsc::Sender<ApplyJob>>,
    done: mpsc::Receiver<AppliedJob>,
    done_tx: mpsc::Sender<AppliedJob>,
    workers: Vec<JoinHandle<()>>,
    backend: Arc<dyn DmBackend>,
    /// Submitted and not yet taken back.
    pending: usize,
}

impl std::fmt::Debug for Applier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applier")
            .field("workers", &self.workers.len())
            .field("pending", &self.pending)
            .finish()
    }
}

/// How many jobs run at once: the backend's width, at least 4 (one slow reload must not
/// hold up new maps) and at most 32 threads.
pub fn width(backend: &dyn DmBackend) -> usize {
    backend.concurrency().clamp(4, 32)
}

impl Applier {
    /// Starts `width` threads on `backend`. A thread that cannot be started leaves its
    /// share to the others; with none, jobs are applied on the submitting thread.
    pub fn start(backend: Arc<dyn DmBackend>, width: usize, wake: Wake) -> Applier {
        let (jobs, rx) = mpsc::channel::<ApplyJob>();
        let rx = Arc::new(Mutex::new(rx));
        let (done_tx, done) = mpsc::channel();
        let wake = Arc::new(wake);
        let mut workers = Vec::new();
        for i in 0..width.max(1) {
            let rx = Arc::clone(&rx);
            let tx = done_tx.clone();
            let wake = Arc::clone(&wake);
            let backend = Arc::clone(&backend);
            let spawned = std::thread::Builder::new()
                .name(format!("applier-{i}"))
                .spawn(move || {
                    loop {
                        // The receiver's lock is held only to take a job.
                        let job = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
                        let Ok(job) = job else { return };
                        let done = job.apply(backend.as_ref());
                        if tx.send(done).is_err() {
                            return;
                        }
                        wake();
                    }
                });
            match spawned {
                Ok(h) => workers.push(h),
                Err(e) => {
                    tracing::warn!("cannot start an applier thread: {e}");
                    break;
                }
            }
        }
        Applier {
            jobs: Some(jobs),
            done,
            done_tx,
            workers,
            backend,
            pending: 0,
        }
    }

    /// Queues a job for the threads.
    pub fn submit(&mut self, job: ApplyJob) {
        self.pending += 1;
        let job = match self.jobs.as_ref().filter(|_| !self.workers.is_empty()) {
            Some(tx) => match tx.send(job) {
                Ok(()) => return,
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        // No thread to take it: apply here rather than lose it.
        let _ = self.done_tx.send(job.apply(self.backend.as_ref()));
    }

    /// The jobs carried out since the last call.
    pub fn take_done(&mut self) -> Vec<AppliedJob> {
        let got: Vec<AppliedJob> = self.done.try_iter().collect();
        self.pending = self.pending.saturating_sub(got.len());
        got
    }

    /// Jobs submitted and not taken back yet.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Lets the threads finish the queued jobs and stop; returns what they carried out.
    pub fn stop(mut self) -> Vec<AppliedJob> {
        self.jobs = None;
        for w in std::mem::take(&mut self.workers) {
            let _ = w.join();
        }
        self.take_done()
    }
}

/// Books the jobs `applier` carried out (call with the engine locked); logs what changed.
/// Returns whether any job was booked.
pub fn finish_done(e: &mut crate::engine::Engine, applier: &mut Applier) -> bool {
    let done = applier.take_done();
    let any = !done.is_empty();
    for d in done {
        log_finished(e.finish_job(d));
    }
    any
}

/// Logs one finished job's report.
pub fn log_finished(r: Result<crate::engine::SyncReport, crate::Error>) {
    match r {
        Ok(r) if r.changed() > 0 || !r.errors.is_empty() => {
            tracing::info!("applied: {}", super::report_text(&r).trim_end());
        }
        Ok(_) => {}
        Err(err) => tracing::error!("finishing an apply failed: {err}"),
    }
}

/// Plans what waited for its map's apply to finish, and hands every prepared job to the
/// applier, one per map where it can (call with the engine locked).
pub fn dispatch(e: &mut crate::engine::Engine, applier: &mut Applier) {
    for r in e.plan_wanted() {
        match r {
            Ok(r) => {
                for err in &r.errors {
                    tracing::warn!("{err}");
                }
            }
            Err(err) => tracing::error!("planning failed: {err}"),
        }
    }
    for job in e.take_jobs() {
        for j in job.split() {
            applier.submit(j);
        }
    }
}

/// The daemon's first sync, carried out on a thread of its own: the loop runs meanwhile
/// (uevents, dm events, the checks of whatever is booked), so a disk added while a cold
/// start's resumes wait for udevd is handled then, not after. The daemon is ready once it
/// is booked ([`InitialApply::try_finish`]).
pub struct InitialApply {
    done: mpsc::Receiver<Vec<AppliedJob>>,
    thread: Option<JoinHandle<()>>,
    /// The prepared sync's report: its scan and plan times, its planning errors.
    prepared: crate::engine::SyncReport,
}

impl std::fmt::Debug for InitialApply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitialApply")
            .field("running", &self.thread.is_some())
            .finish()
    }
}

impl InitialApply {
    /// Carries out `jobs` (the initial sync's) on a new thread; with no thread, here.
    pub fn start(
        jobs: Vec<ApplyJob>,
        backend: Arc<dyn DmBackend>,
        prepared: crate::engine::SyncReport,
        wake: Wake,
    ) -> InitialApply {
        let (tx, done) = mpsc::channel();
        // The jobs travel in a slot the caller keeps, so a thread that cannot be started
        // does not take them with it.
        let slot = Arc::new(Mutex::new(Some(jobs)));
        let take = |slot: &Mutex<Option<Vec<ApplyJob>>>| {
            slot.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
                .unwrap_or_default()
        };
        let spawned = {
            let (slot, tx, backend) = (Arc::clone(&slot), tx.clone(), Arc::clone(&backend));
            std::thread::Builder::new()
                .name("initial-apply".into())
                .spawn(move || {
                    let _ = tx.send(apply_all(take(&slot), backend.as_ref()));
                    wake();
                })
        };
        let thread = match spawned {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!("cannot start the initial apply's thread ({e}); applying here");
                let _ = tx.send(apply_all(take(&slot), backend.as_ref()));
                None
            }
        };
        InitialApply {
            done,
            thread,
            prepared,
        }
    }

    /// Once the jobs are carried out: books them (engine locked) and returns the whole
    /// initial sync's report (the prepared one's scan, plan and errors, the apply's maps and
    /// times). `None` while they run.
    pub fn try_finish(
        &mut self,
        e: &mut crate::engine::Engine,
    ) -> Option<Result<crate::engine::SyncReport, crate::Error>> {
        let done = match self.done.try_recv() {
            Ok(d) => d,
            Err(mpsc::TryRecvError::Empty) => return None,
            // the thread died without an answer (a panic in the backend): nothing to book
            Err(mpsc::TryRecvError::Disconnected) => Vec::new(),
        };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        Some(self.book(e, done))
    }

    /// Waits for the jobs (the daemon is stopping) and books them.
    pub fn wait_finish(
        mut self,
        e: &mut crate::engine::Engine,
    ) -> Result<crate::engine::SyncReport, crate::Error> {
        let done = self.done.recv().unwrap_or_default();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.book(e, done)
    }

    fn book(
        &mut self,
        e: &mut crate::engine::Engine,
        done: Vec<AppliedJob>,
    ) -> Result<crate::engine::SyncReport, crate::Error> {
        let mut report = std::mem::take(&mut self.prepared);
        book_into(e, &mut report, done)?;
        Ok(report)
    }
}

fn apply_all(jobs: Vec<ApplyJob>, backend: &dyn DmBackend) -> Vec<AppliedJob> {
    jobs.into_iter().map(|j| j.apply(backend)).collect()
}

/// Books jobs carried out for one request into its `report` (engine locked): the maps and
/// errors of all of them (the report's planned maps are replaced), the apply's times added
/// up. Every job is booked; the last error is returned.
pub fn book_into(
    e: &mut crate::engine::Engine,
    report: &mut crate::engine::SyncReport,
    done: Vec<AppliedJob>,
) -> Result<(), crate::Error> {
    report.maps.clear();
    let mut res = Ok(());
    for d in done {
        let mut part = crate::engine::SyncReport::default();
        if let Err(err) = e.finish_job_into(d, &mut part) {
            res = Err(err);
        }
        report.maps.extend(part.maps);
        report.errors.extend(part.errors);
        let (t, p) = (&mut report.timings, part.timings);
        t.apply += p.apply;
        t.slowest_map = t.slowest_map.max(p.slowest_map);
        t.width = t.width.max(p.width);
        t.refresh += p.refresh;
    }
    res
}
