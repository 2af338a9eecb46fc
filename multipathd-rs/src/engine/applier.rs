//! A sync in three steps, so the kernel work can run without the engine: **prepare** (under
//! the daemon's lock: plan, book pending renames), **apply** ([`ApplyJob::apply`]: the
//! backend calls only, on whatever thread, no engine), **finish** (under the lock again:
//! record, re-read the maps, fail again what failed meanwhile, requeue, FC timeouts).
//!
//! Inline (CLI, demo, tests) a sync does all three in one call. In the daemon
//! ([`Engine::defer_applies`]) a sync only prepares: its job waits in the outbox for the
//! daemon to take ([`Engine::take_jobs`]) and carry out on its applier, and comes back
//! through [`Engine::finish_job`]. Ordering rules kept here:
//! - a map is planned only when no apply of it is in flight: a request for a busy WWID is
//!   remembered (coalesced) and planned from fresh state once its apply finished
//!   ([`Engine::plan_wanted`]);
//! - a job holding a rename runs whole (renames first, in order) and nothing else is planned
//!   while it is in flight (a rename may free the name another plan takes);
//! - a fresh table starts with every path active: at finish, a path the engine knows down
//!   (check, sweep, uevent) that the new table shows active is failed again.

#[allow(clippy::wildcard_imports)]
use super::*;

/// One prepared sync's backend work, ready to run without the engine.
#[derive(Debug)]
pub struct ApplyJob {
    /// The WWIDs the sync covered (None: every map).
    only: Option<BTreeSet<String>>,
    plans: Vec<MapPlan>,
}

/// A carried-out [`ApplyJob`], for [`Engine::finish_job`].
#[derive(Debug)]
pub struct AppliedJob {
    only: Option<BTreeSet<String>>,
    plans: Vec<MapPlan>,
    results: Vec<Option<Applied>>,
    took: Duration,
    slowest: Duration,
    width: usize,
}

impl ApplyJob {
    fn has_rename(&self) -> bool {
        self.plans.iter().any(is_rename)
    }

    /// The WWIDs of its maps.
    pub fn wwids(&self) -> impl Iterator<Item = &str> {
        self.plans.iter().map(|p| p.desired.wwid.as_str())
    }

    /// One job per map, so no map's finish waits for another's slow reload; a job with a
    /// rename, or one covering every map (its finish re-reads every map), stays whole.
    pub fn split(self) -> Vec<ApplyJob> {
        if self.only.is_none() || self.has_rename() || self.plans.len() <= 1 {
            return vec![self];
        }
        self.plans
            .into_iter()
            .map(|p| ApplyJob {
                only: Some(BTreeSet::from([p.desired.wwid.clone()])),
                plans: vec![p],
            })
            .collect()
    }

    /// The backend calls (see [`run_plans`]); needs no engine.
    pub fn apply(self, backend: &dyn DmBackend) -> AppliedJob {
        let t0 = Instant::now();
        let (results, slowest) = run_plans(backend, &self.plans);
        AppliedJob {
            only: self.only,
            plans: self.plans,
            results,
            took: t0.elapsed(),
            slowest,
            width: backend.concurrency(),
        }
    }
}

fn is_rename(p: &MapPlan) -> bool {
    matches!(p.action, Action::Rename | Action::RenameReload)
}

/// Carries out the plans; results in the plans' order. Renames go first, one at a time
/// and in order (one may free the name another plan takes); every other plan touches only
/// its own map, so those run [`DmBackend::concurrency`] at a time: on the kernel each
/// resume waits for udevd, and a cold start or a burst of new LUNs should not wait for
/// those one after another. Also returns the slowest map's wall time.
fn run_plans(backend: &dyn DmBackend, plans: &[MapPlan]) -> (Vec<Option<Applied>>, Duration) {
    let slowest = std::sync::Mutex::new(Duration::ZERO);
    let timed = |p: &MapPlan| {
        let t0 = Instant::now();
        // A panic in the backend costs this map's apply, not the thread carrying out the
        // job: a job that never comes back leaves its WWIDs in flight, and every command that
        // syncs would wait for them.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            apply::apply_to_backend(backend, p)
        }))
        .unwrap_or_else(|_| {
            tracing::error!(map = %p.name, "the device-mapper backend panicked while applying");
            (
                Vec::new(),
                Err(Error::MapBuild {
                    wwid: p.desired.wwid.clone(),
                    reason: format!(
                        "internal error: the device-mapper backend panicked while applying {} ({}); its state is re-read at the next sync",
                        p.name,
                        p.action.as_str()
                    ),
                }),
            )
        });
        let took = t0.elapsed();
        tracing::debug!(map = %p.name, action = p.action.as_str(), "applied in {:.3} s", took.as_secs_f64());
        let mut s = slowest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *s = (*s).max(took);
        r
    };
    let mut done: Vec<Option<Applied>> = plans
        .iter()
        .map(|p| is_rename(p).then(|| timed(p)))
        .collect();
    let rest: Vec<&MapPlan> = plans.iter().filter(|p| !is_rename(p)).collect();
    let mut results =
        apply::run_concurrently(backend.concurrency(), &rest, |p| timed(p)).into_iter();
    for slot in done.iter_mut().filter(|d| d.is_none()) {
        *slot = results.next().flatten();
    }
    (
        done,
        slowest
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
}

/// The daemon's bookkeeping of applies (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Applies {
    /// Prepared jobs the daemon has not taken yet.
    jobs: Vec<ApplyJob>,
    /// WWIDs whose apply is in flight (taken or waiting in `jobs`), with how many jobs.
    in_flight: HashMap<String, usize>,
    /// In-flight jobs holding a rename.
    renaming: usize,
    /// WWIDs asked for while busy, to plan once free.
    wanted: BTreeSet<String>,
    /// A full sync asked for while a rename was in flight.
    wanted_all: bool,
}

impl Engine {
    /// Daemon mode: syncs prepare jobs for the daemon's applier instead of applying inline.
    pub fn defer_applies(&mut self) {
        self.applies.get_or_insert_with(Applies::default);
    }

    /// The prepared jobs (daemon mode); the caller applies each and hands it to
    /// [`Engine::finish_job`].
    pub fn take_jobs(&mut self) -> Vec<ApplyJob> {
        self.applies
            .as_mut()
            .map(|a| std::mem::take(&mut a.jobs))
            .unwrap_or_default()
    }

    /// Whether an apply of this WWID's map is in flight (daemon mode).
    pub(super) fn apply_in_flight(&self, wwid: &str) -> bool {
        self.applies
            .as_ref()
            .is_some_and(|a| a.in_flight.contains_key(wwid))
    }

    /// No apply in flight, none waiting to be taken, none wanted.
    pub fn applies_idle(&self) -> bool {
        self.applies.as_ref().is_none_or(|a| {
            a.jobs.is_empty() && a.in_flight.is_empty() && a.wanted.is_empty() && !a.wanted_all
        })
    }

    /// Plans what was asked for while busy and is free now (daemon mode); the jobs go to the
    /// outbox. Returns the reports of the plans made (errors to log).
    pub fn plan_wanted(&mut self) -> Vec<Result<SyncReport>> {
        let mut out = Vec::new();
        let Some(a) = self.applies.as_mut() else {
            return out;
        };
        if a.renaming > 0 {
            return out;
        }
        if std::mem::take(&mut a.wanted_all) {
            out.push(self.sync_planned(None, &BTreeSet::new(), SyncReport::default()));
        }
        let Some(a) = self.applies.as_mut() else {
            return out;
        };
        let free: BTreeSet<String> = a
            .wanted
            .iter()
            .filter(|w| !a.in_flight.contains_key(*w))
            .cloned()
            .collect();
        if !free.is_empty() {
            a.wanted.retain(|w| !free.contains(w));
            out.push(self.sync_wwids(&free));
        }
        out
    }

    /// Plans and applies inline, or (daemon mode) plans what is free and queues the job.
    pub(super) fn sync_planned(
        &mut self,
        only: Option<&BTreeSet<String>>,
        force: &BTreeSet<String>,
        report: SyncReport,
    ) -> Result<SyncReport> {
        if self.applies.is_none() {
            let (job, mut report) = self.prepare(only, force, report)?;
            let done = job.apply(&*self.backend);
            self.finish_into(done, &mut report)?;
            return Ok(report);
        }
        self.defer_sync(only, force, report)
    }

    fn defer_sync(
        &mut self,
        only: Option<&BTreeSet<String>>,
        force: &BTreeSet<String>,
        report: SyncReport,
    ) -> Result<SyncReport> {
        let Some(a) = self.applies.as_mut() else {
            return Ok(report);
        };
        if a.renaming > 0 {
            match only {
                Some(o) => a.wanted.extend(o.iter().cloned()),
                None => a.wanted_all = true,
            }
            return Ok(report);
        }
        // Busy WWIDs wait for their apply to finish, then are planned from fresh state.
        let free: Option<BTreeSet<String>> = only.map(|o| {
            o.iter()
                .filter(|w| {
                    let busy = a.in_flight.contains_key(*w);
                    if busy {
                        a.wanted.insert((*w).clone());
                    }
                    !busy
                })
                .cloned()
                .collect()
        });
        if free.as_ref().is_some_and(BTreeSet::is_empty) {
            return Ok(report);
        }
        let (mut job, mut report) = self.prepare(free.as_ref(), force, report)?;
        let Some(a) = self.applies.as_mut() else {
            return Ok(report);
        };
        job.plans.retain(|p| {
            let busy = a.in_flight.contains_key(&p.desired.wwid);
            if busy {
                a.wanted.insert(p.desired.wwid.clone());
            }
            !busy
        });
        if job.plans.is_empty() && job.only.is_some() {
            return Ok(report);
        }
        // What the caller sees now: the plans, not carried out yet.
        report.maps = job
            .plans
            .iter()
            .map(|p| MapOutcome {
                plan: p.clone(),
                applied: false,
                messages: Vec::new(),
            })
            .collect();
        for w in job.wwids() {
            *a.in_flight.entry(w.to_string()).or_default() += 1;
        }
        if job.has_rename() {
            a.renaming += 1;
        }
        a.jobs.push(job);
        Ok(report)
    }

    /// Plans the maps (of `only` when given) and books the pending renames.
    fn prepare(
        &mut self,
        only: Option<&BTreeSet<String>>,
        force: &BTreeSet<String>,
        mut report: SyncReport,
    ) -> Result<(ApplyJob, SyncReport)> {
        let t0 = Instant::now();
        let plans = self.build_plan(only, force, &self.store, &mut report)?;
        report.timings.plan = t0.elapsed();
        if only.is_none() {
            self.ignored = report.ignored.clone();
        }
        for p in &plans {
            self.pending_renames.remove(&p.desired.wwid);
        }
        for r in &report.pending_renames {
            self.pending_renames.insert(r.wwid.clone(), r.clone());
        }
        let job = ApplyJob {
            only: only.cloned(),
            plans,
        };
        Ok((job, report))
    }

    /// Books a job the daemon's applier carried out (see the module docs); its report has
    /// the maps' outcomes and the errors of the apply and after.
    pub fn finish_job(&mut self, done: AppliedJob) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        self.finish_into(done, &mut report)?;
        Ok(report)
    }

    /// [`Engine::finish_job`] into `report` (whose maps it replaces).
    pub fn finish_job_into(&mut self, done: AppliedJob, report: &mut SyncReport) -> Result<()> {
        report.maps.clear();
        self.finish_into(done, report)
    }

    fn finish_into(&mut self, done: AppliedJob, report: &mut SyncReport) -> Result<()> {
        if let Some(a) = self.applies.as_mut() {
            for p in &done.plans {
                let w = &p.desired.wwid;
                if let Some(n) = a.in_flight.get_mut(w) {
                    *n -= 1;
                    if *n == 0 {
                        a.in_flight.remove(w);
                    }
                }
            }
            if done.plans.iter().any(is_rename) {
                a.renaming = a.renaming.saturating_sub(1);
            }
        }
        report.timings.apply = done.took;
        report.timings.slowest_map = done.slowest;
        report.timings.width = done.width;
        let only = done.only;
        for (plan, d) in done.plans.into_iter().zip(done.results) {
            let (messages, res) = d.unwrap_or_else(|| {
                let e = Error::MapBuild {
                    wwid: plan.desired.wwid.clone(),
                    reason: "the plan was not carried out (its worker thread stopped)".into(),
                };
                (Vec::new(), Err(e))
            });
            let outcome = self.record(plan, messages, res);
            if let Some(e) = &outcome.plan.error {
                report.errors.push(e.clone());
            }
            report.maps.push(outcome);
        }
        // Keyed by the report's own WWIDs: no second copy of every WWID at the peak of a cold
        // start (refresh_maps is where every map's state is built).
        let planned: HashMap<&str, Arc<DesiredMap>> = report
            .maps
            .iter()
            .map(|o| (o.plan.desired.wwid.as_str(), Arc::clone(&o.plan.desired.0)))
            .collect();
        let t0 = Instant::now();
        self.refresh_maps(only.as_ref(), planned)?;
        report.timings.refresh = t0.elapsed();
        // By index, not by searching the report for each WWID: a cold start loads every map,
        // and a search per map was quadratic (6% of a 4096-map cold start's CPU).
        let loaded: Vec<(usize, String)> = report
            .maps
            .iter()
            .enumerate()
            .filter(|(_, o)| {
                o.applied && (o.plan.action == Action::Create || o.plan.action.reloads())
            })
            .map(|(i, o)| (i, o.plan.desired.wwid.clone()))
            .collect();
        for (i, w) in loaded {
            match self.fail_again(&w) {
                Ok(sent) if sent.is_empty() => {}
                Ok(sent) => {
                    // (a WWID has one outcome per report; the index is that one)
                    if let Some(o) = report.maps.get_mut(i) {
                        o.messages.extend(sent.iter().map(|s| s.message.clone()));
                    }
                }
                Err(e) => report.errors.push(e.to_string()),
            }
        }
        // A reload may have loaded queueing the no_path_retry countdown had switched off.
        let requeue: Vec<String> = report
            .maps
            .iter()
            .map(|o| &o.plan.desired.wwid)
            .filter(|w| self.maps.get(*w).is_some_and(|m| m.queue.needs_update()))
            .cloned()
            .collect();
        for w in requeue {
            match self.map_decisions(&w, None) {
                Ok(sent) => {
                    for s in sent {
                        tracing::info!(map = %s.map, "{} after the reload", s.message);
                    }
                }
                Err(e) => report.errors.push(e.to_string()),
            }
        }
        report.errors.extend(self.set_fc_timeouts(only.as_ref()));
        self.retry_by_outcome(report);
        Ok(())
    }

    /// After a create or reload: every path the new table shows active that the engine knows
    /// down (failed while the map was being loaded: the plan's own list is older) is failed
    /// again. Fail closed: a path the engine does not know is left as the kernel has it.
    fn fail_again(&mut self, wwid: &str) -> Result<Vec<Sent>> {
        let Some(status) = self.maps.get(wwid).and_then(|m| m.status.clone()) else {
            return Ok(Vec::new());
        };
        let down: Vec<dm_tables::DevNo> = status
            .groups
            .iter()
            .flat_map(|g| g.paths.iter())
            .filter(|p| p.state == PathState::Active)
            .filter(|p| self.path_at(p.devno).is_some_and(|sp| !self.usable(sp)))
            .map(|p| p.devno)
            .collect();
        let mut sent = Vec::new();
        for d in down {
            let s = self.send_only(wwid, &Message::FailPath(d))?;
            tracing::info!(map = %s.map, "{}: the path went down while the map was loaded", s.message);
            sent.push(s);
        }
        if !sent.is_empty() {
            self.refresh_map(wwid)?;
        }
        Ok(sent)
    }
}
