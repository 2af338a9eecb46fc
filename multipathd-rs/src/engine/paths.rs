//! The path state machine: due checks for the checker pool, the 1 s SCSI state sweep, and
//! check results -> fail_path / reinstate_path, queueing (no_path_retry) and failback.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Engine {
    pub(super) fn checker_for(&mut self, dev: &str) -> Result<Arc<dyn PathChecker>> {
        let name = self.checker_name_of(dev).to_string();
        if let Some(c) = self.checkers.get(&name) {
            return Ok(c.clone());
        }
        let c =
            checker::checker_by_name(&name, &self.opts.sysfs_root, checker::DEFAULT_CHECK_TIMEOUT)?;
        self.checkers.insert(name, c.clone());
        Ok(c)
    }

    /// The checks due now, ready for the runner: (checker, target). See
    /// [`Engine::due_checks_up_to`].
    pub fn due_checks(&mut self) -> Vec<DueCheck> {
        self.due_checks_up_to(usize::MAX).0
    }

    /// At most `capacity` of the checks due now (earliest first), and how many more are due
    /// but left for later (the runner is full; they stay due). No sysfs is read here: the
    /// targets are [deferred](CheckTarget::deferred), completed by the runner's worker. A
    /// path handed out is not due again until its result (or its timeout) is in.
    pub fn due_checks_up_to(&mut self, capacity: usize) -> (Vec<DueCheck>, usize) {
        let now = self.clock.now();
        let due = self.scheduler.due(now);
        let left = due.len().saturating_sub(capacity);
        let mut out = Vec::new();
        for dev in due.into_iter().take(capacity) {
            if let Ok(c) = self.checker_for(&dev) {
                self.scheduler
                    .postpone(&dev, now + checker::DEFAULT_CHECK_TIMEOUT);
                out.push((c, CheckTarget::deferred(&dev, &self.opts.sysfs_root)));
            }
        }
        (out, left)
    }

    /// Without a sweep thread ([`crate::sweep`]; tests, the demo): one read of `device/state`
    /// per member path, under the lock. A path whose SCSI state moved since the engine last
    /// looked (running -> offline, transport-offline, blocked, or back to running) is made due
    /// for its real check at once, instead of at its next polling interval (up to
    /// max_polling_interval for a healthy path). Returns the paths re-checked. Meant to run
    /// about once a second: it costs one small read per path.
    pub fn state_sweep(&mut self) -> Vec<String> {
        let now = self.clock.now();
        let mut moved = Vec::new();
        for i in 0..self.paths.len() {
            let dev = self.paths[i].dev.clone();
            if self.scheduler.get(&dev).is_none() {
                continue; // not a member of any map
            }
            let f = self.state_file_of(&self.paths[i]);
            let now_state = match std::fs::read_to_string(&f) {
                Ok(s) => s.trim().to_string(),
                // The device is going away: its remove uevent (or the next rescan) handles it;
                // until then its real check reports it down.
                Err(_) => "deleted".to_string(),
            };
            if now_state != self.paths[i].state {
                tracing::info!(dev, from = %self.paths[i].state, to = %now_state, "SCSI device state changed; checking the path now");
                self.paths[i].state = now_state.into();
                self.scheduler.recheck_path(&dev, now);
                moved.push(dev);
            }
        }
        moved
    }

    /// The checker pool's counters, for `show status` (the daemon loop reports them).
    pub fn set_runner_stats(&mut self, stats: crate::checker::runner::RunnerStats) {
        self.runner_stats = stats;
    }

    /// Makes `dev` due for a check at once (its state moved while a check of it was running).
    pub fn recheck_path(&mut self, dev: &str) -> bool {
        self.scheduler.recheck_path(dev, self.clock.now())
    }

    /// When the next check falls due.
    pub fn next_check_due(&self) -> Option<Instant> {
        self.scheduler.next_due()
    }

    /// Checks the given paths now, synchronously, and applies the results. Returns the
    /// messages sent.
    pub fn check_paths_now(&mut self, devs: &[String]) -> Result<Vec<Sent>> {
        let mut sent = Vec::new();
        for dev in devs {
            let c = self.checker_for(dev)?;
            let r = c.check(&CheckTarget::with_sysfs(dev, &self.opts.sysfs_root));
            sent.extend(self.apply_check_result(dev, r)?);
        }
        Ok(sent)
    }

    /// Checks every path of every map now (synchronously).
    pub fn check_all_now(&mut self) -> Result<Vec<Sent>> {
        let mut devs: Vec<String> = Vec::new();
        for m in self.maps.values() {
            for d in m.table.devnos() {
                if let Some(p) = self.path_at(d) {
                    devs.push(p.dev.clone());
                }
            }
        }
        self.check_paths_now(&devs)
    }

    /// Applies a path check result: records it, reschedules the path, and turns the
    /// scheduler's decisions into dm messages (fail_path / reinstate_path, then the map's
    /// queueing and failback). Returns the messages sent. See
    /// [`Engine::apply_check_results`].
    pub fn apply_check_result(&mut self, dev: &str, result: CheckResult) -> Result<Vec<Sent>> {
        let mut out = self.apply_check_results(vec![(dev.to_string(), result)]);
        match out.errors.pop() {
            Some((_, e)) => Err(e),
            None => Ok(out.sent),
        }
    }

    /// Applies a batch of check results (the daemon's loop hands over what arrived since its
    /// last pass): each is recorded and rescheduled, then per map the kernel status is read
    /// once, the fail_path / reinstate_path messages are sent, the status is read once more
    /// and the map's queueing and failback decided. A lost HBA's thousands of results cost
    /// two status reads per map, not two per path.
    pub fn apply_check_results(&mut self, results: Vec<(String, CheckResult)>) -> CheckOutcome {
        let now = self.clock.now();
        let mut out = CheckOutcome::default();
        // Per map: (devno, state) of its paths in this batch, in arrival order.
        let mut by_map: BTreeMap<String, Vec<(String, dm_tables::DevNo, CheckState)>> =
            BTreeMap::new();
        let mut alua_moved: BTreeSet<String> = BTreeSet::new();
        for (dev, result) in results {
            let changed = self.scheduler.record(&dev, result.state, now);
            let state = result.state;
            if state != CheckState::Pending {
                self.checks.insert(dev.clone(), result);
            }
            let Ok((wwid, devno)) = self.map_of_path(&dev) else {
                continue;
            };
            // The ALUA state can move without the checker's verdict changing (optimized ->
            // non-optimized is "ready" both times): compare it on every check, one sysfs
            // read; a changed verdict also re-reads the SCSI state (one more read).
            let known_access = self
                .path(&dev)
                .and_then(|p| p.access_state.as_deref().map(str::to_string));
            let now_access = self.access_state_now(&dev);
            if now_access != known_access {
                let _ = self.rescan_path(&dev);
                let reread = self
                    .path(&dev)
                    .and_then(|p| p.access_state.as_deref().map(str::to_string));
                if reread != known_access {
                    // Priorities follow the ALUA state: re-plan the map so its groups are
                    // re-ordered (a reload only when the grouping really changed).
                    tracing::info!(
                        dev,
                        map = %wwid,
                        from = ?known_access,
                        to = ?reread,
                        "ALUA access state changed; re-planning the map's path groups"
                    );
                    alua_moved.insert(wwid.clone());
                }
            } else if changed {
                self.reread_scsi_state(&dev);
            }
            by_map.entry(wwid).or_default().push((dev, devno, state));
        }
        for (wwid, paths) in by_map {
            if let Err(e) = self.decide_map_paths(&wwid, &paths, &alua_moved, &mut out.sent) {
                // Reported once, under the batch's first path of the map.
                if let Some((dev, _, _)) = paths.first() {
                    out.errors.push((dev.clone(), e));
                }
            }
        }
        out
    }

    /// One map's share of [`Engine::apply_check_results`].
    pub(super) fn decide_map_paths(
        &mut self,
        wwid: &str,
        paths: &[(String, dm_tables::DevNo, CheckState)],
        alua_moved: &BTreeSet<String>,
        sent: &mut Vec<Sent>,
    ) -> Result<()> {
        self.refresh_map(wwid)?;
        let mut reinstated = None;
        let mut any = false;
        for (dev, devno, state) in paths {
            let dm = self.maps[wwid]
                .status
                .as_ref()
                .and_then(|s| s.path(*devno))
                .map_or(DmPathState::Active, |p| match p.state {
                    PathState::Active => DmPathState::Active,
                    PathState::Failed => DmPathState::Failed,
                });
            match failover::path_action(dm, *state) {
                PathAction::FailPath => {
                    sent.push(self.send_only(wwid, &Message::FailPath(*devno))?);
                    any = true;
                }
                // A check that started before the device left `running` can still say "up"
                // after the sweep thread failed the path: a path whose SCSI device is known
                // down is never reinstated (its next check, due at once, decides).
                PathAction::ReinstatePath if self.scsi_known_down(dev) => {
                    tracing::info!(
                        dev,
                        "not reinstated: its SCSI device is down (a check older than that said up)"
                    );
                }
                PathAction::ReinstatePath => {
                    sent.push(self.send_only(wwid, &Message::ReinstatePath(*devno))?);
                    reinstated.get_or_insert(*devno);
                    any = true;
                }
                PathAction::Keep => {}
            }
        }
        if any {
            self.refresh_map(wwid)?;
        }
        if alua_moved.contains(wwid) {
            let report = self.sync_wwids(&BTreeSet::from([wwid.to_string()]))?;
            for e in &report.errors {
                tracing::warn!(map = %wwid, "re-planning after an ALUA change: {e}");
            }
        }
        sent.extend(self.map_decisions(wwid, reinstated)?);
        Ok(())
    }

    /// Whether `dev`'s SCSI device is known down: its last read state (scan, sweep news) or
    /// what the sweep thread read and the engine has not taken yet.
    fn scsi_known_down(&self, dev: &str) -> bool {
        self.path(dev)
            .is_some_and(|p| crate::sweep::is_down(p.state.as_bytes()))
            || self.swept_down(dev)
    }

    /// Re-reads a path's SCSI `device/state` (a check verdict changed).
    pub(super) fn reread_scsi_state(&mut self, dev: &str) {
        let f = self
            .opts
            .sysfs_root
            .join("block")
            .join(dev)
            .join("device/state");
        let state = std::fs::read_to_string(f)
            .map_or_else(|_| "deleted".to_string(), |s| s.trim().to_string());
        if let Some(&i) = self.by_dev.get(dev) {
            self.paths[i].state = state.into();
        }
    }

    /// The path's ALUA access state as sysfs shows it now (None when the device has none).
    pub(super) fn access_state_now(&self, dev: &str) -> Option<String> {
        let f = self
            .opts
            .sysfs_root
            .join("block")
            .join(dev)
            .join("device/access_state");
        std::fs::read_to_string(f)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    /// Per-map decisions after a path changed: no_path_retry and failback.
    pub(super) fn map_decisions(
        &mut self,
        wwid: &str,
        reinstated: Option<dm_tables::DevNo>,
    ) -> Result<Vec<Sent>> {
        let now = self.clock.now();
        let mut sent = Vec::new();
        let Some(m) = self.maps.get(wwid) else {
            return Ok(sent);
        };
        let Some(status) = m.status.clone() else {
            return Ok(sent);
        };
        let prio_of: HashMap<dm_tables::DevNo, i32> = m
            .desired
            .as_ref()
            .map(|d| d.paths().map(|p| (p.devno, p.priority)).collect())
            .unwrap_or_default();
        let fb = m.desired.as_ref().map_or(failover::Failback::Manual, |d| {
            fb_policy(d.settings.failback)
        });
        let usable_dev = |d: dm_tables::DevNo| -> bool {
            let active = status.path(d).is_some_and(|p| p.state == PathState::Active);
            let dev = self.path_at(d);
            active
                && dev.is_none_or(|p| self.checks.get(&p.dev).is_none_or(|c| !c.state.is_failed()))
        };
        let mut groups = Vec::new();
        let mut usable_total = 0;
        for g in &status.groups {
            let prios: Vec<u32> = g
                .paths
                .iter()
                .filter(|p| usable_dev(p.devno))
                .map(|p| u32::try_from(*prio_of.get(&p.devno).unwrap_or(&0)).unwrap_or(0))
                .collect();
            usable_total += prios.len();
            groups.push(failover::GroupStatus {
                priority: failover::group_priority(&prios),
                usable_paths: prios.len(),
            });
        }
        let first_returned = reinstated.and_then(|d| {
            status
                .groups
                .iter()
                .position(|g| g.paths.iter().any(|p| p.devno == d))
                .filter(|&gi| groups[gi].usable_paths == 1)
        });
        let active = status
            .groups
            .iter()
            .position(|g| g.state == GroupState::Active)
            .unwrap_or_else(|| (status.current_group.max(1) - 1) as usize);
        let Some(m) = self.maps.get_mut(wwid) else {
            return Ok(sent);
        };
        let qa = m.queue.update(usable_total, now);
        let ga = m.failback.decide(
            fb,
            FailbackInput {
                groups: &groups,
                active,
                first_path_returned_in: first_returned,
            },
            now,
        );
        match qa {
            Some(QueueAction::EnableQueueing) => {
                sent.push(self.send(wwid, &Message::QueueIfNoPath)?)
            }
            Some(QueueAction::DisableQueueing) => {
                sent.push(self.send(wwid, &Message::FailIfNoPath)?)
            }
            None => {}
        }
        if let GroupAction::SwitchGroup(g) = ga {
            let n = u32::try_from(g + 1).unwrap_or(1);
            sent.push(self.send(wwid, &Message::SwitchGroup(n))?);
        }
        Ok(sent)
    }

    /// Ticks the no_path_retry countdowns of maps without a usable path (call once per
    /// polling interval). Returns the messages sent.
    pub fn tick_queueing(&mut self) -> Result<Vec<Sent>> {
        let wwids: Vec<String> = self.maps.keys().cloned().collect();
        let mut sent = Vec::new();
        for w in wwids {
            if self.maps[&w].queue.needs_update() {
                sent.extend(self.map_decisions(&w, None)?);
            }
        }
        Ok(sent)
    }
}
