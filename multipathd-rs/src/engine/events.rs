//! Event intake: sysfs scans and single-path rescans (incremental path indexes), `add/del
//! path`, `rescan` (its slow half runs without the engine lock), coalesced uevents and dm
//! events.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Engine {
    /// Re-reads every path from sysfs. Returns the scan's errors as sentences.
    pub fn scan(&mut self) -> Vec<String> {
        let scan = lun_scan::scan_with(&self.opts.sysfs_root, SCAN_OPTIONS);
        self.install_scan(scan)
    }

    /// Takes a scan made elsewhere (without the engine, e.g. outside the daemon's lock) as
    /// the current paths. Returns the scan's errors as sentences.
    pub fn install_scan(&mut self, scan: lun_scan::Scan) -> Vec<String> {
        let errors = scan.all_errors().iter().map(ToString::to_string).collect();
        self.path_ctx = None;
        // A member whose SCSI state moved since the engine last looked is checked at once:
        // the new scan would otherwise hide the move from the state sweep.
        let now = self.clock.now();
        let moved: Vec<(&str, String)> = scan
            .paths
            .iter()
            .filter_map(|p| {
                let old = self.path(&p.dev)?;
                (old.state != p.state).then(|| (p.dev.as_str(), old.state.to_string()))
            })
            .collect();
        for (dev, from) in moved {
            if self.scheduler.recheck_path(dev, now) {
                tracing::info!(dev, from = %from, "SCSI device state changed; checking the path now");
            }
        }
        self.keep_unchanged_paths(scan.paths);
        errors
    }

    /// Takes `scanned` as the paths, keeping the records (and their allocations) of the
    /// paths it reports unchanged, and the indexes when nothing changed. A rescan of every
    /// host re-reads every path; swapping in the new copies of unchanged records moved the
    /// long-lived path data into the malloc arena of whichever thread scanned, and the old
    /// copies' memory stayed behind in theirs (see the failover benchmark's RSS by phase).
    fn keep_unchanged_paths(&mut self, scanned: Vec<ScsiPath>) {
        if scanned == self.paths {
            // Nothing changed: the records, their order and the indexes all stay.
            return;
        }
        let mut old: Vec<Option<ScsiPath>> = std::mem::take(&mut self.paths)
            .into_iter()
            .map(Some)
            .collect();
        self.paths = scanned
            .into_iter()
            .map(|p| {
                self.by_dev
                    .get(&p.dev)
                    .and_then(|&i| old.get_mut(i)?.take_if(|o| *o == p))
                    .unwrap_or(p)
            })
            .collect();
        self.reindex();
    }

    pub(super) fn reindex(&mut self) {
        self.by_dev = self
            .paths
            .iter()
            .enumerate()
            .map(|(i, p)| (p.dev.clone(), i))
            .collect();
        self.by_devno = self
            .paths
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some((discovery::dm_devno(p.devno?), i)))
            .collect();
    }

    /// Re-reads one path from sysfs (after a rescan or an event).
    /// The hosts, ports and sessions single-path scans consult, read at most once per
    /// [`PATH_CONTEXT_TTL`] (a burst of uevents or state changes re-reads them once, not once
    /// per path).
    pub(super) fn path_context(&mut self) -> Arc<lun_scan::PathContext> {
        let now = self.clock.now();
        if let Some((at, ctx)) = &self.path_ctx
            && now.saturating_duration_since(*at) < PATH_CONTEXT_TTL
        {
            return Arc::clone(ctx);
        }
        let ctx = Arc::new(lun_scan::PathContext::read_with(
            &self.opts.sysfs_root,
            SCAN_OPTIONS,
        ));
        self.path_ctx = Some((now, Arc::clone(&ctx)));
        ctx
    }

    /// Re-reads one path from sysfs (after a rescan or an event). The indexes are updated
    /// for this path only.
    pub(super) fn rescan_path(&mut self, dev: &str) -> Result<Option<String>> {
        let ctx = self.path_context();
        match lun_scan::scan_path_in(&self.opts.sysfs_root, dev, &ctx) {
            Ok(p) => {
                let wwid = p.wwid.clone();
                let new_devno = p.devno.map(discovery::dm_devno);
                match self.by_dev.get(dev).copied() {
                    Some(i) => {
                        let old = self.paths[i].devno.map(discovery::dm_devno);
                        if old != new_devno {
                            if let Some(d) = old
                                && self.by_devno.get(&d) == Some(&i)
                            {
                                self.by_devno.remove(&d);
                            }
                            if let Some(d) = new_devno {
                                self.by_devno.insert(d, i);
                            }
                        }
                        self.paths[i] = p;
                    }
                    None => {
                        let i = self.paths.len();
                        self.paths.push(p);
                        self.by_dev.insert(dev.to_string(), i);
                        if let Some(d) = new_devno {
                            self.by_devno.insert(d, i);
                        }
                    }
                }
                Ok(wwid)
            }
            Err(lun_scan::Error::NoSuchDevice { .. }) => Err(Error::NoSuchPath {
                dev: dev.to_string(),
            }),
            Err(source) => Err(Error::Scan { source }),
        }
    }

    pub(super) fn forget_path(&mut self, dev: &str) -> Option<String> {
        self.retries.settled(dev);
        let i = self.by_dev.remove(dev)?;
        let p = self.paths.remove(i);
        if let Some(d) = p.devno.map(discovery::dm_devno)
            && self.by_devno.get(&d) == Some(&i)
        {
            self.by_devno.remove(&d);
        }
        // The paths after it moved down by one (the display order is the scan's).
        for idx in self.by_dev.values_mut().chain(self.by_devno.values_mut()) {
            if *idx > i {
                *idx -= 1;
            }
        }
        self.checks.remove(dev);
        self.scheduler.remove_path(dev);
        p.wwid
    }

    /// `add path DEV`: reads the device and re-plans its map (creating it if needed).
    pub fn add_path(&mut self, dev: &str) -> Result<SyncReport> {
        let wwid = self.rescan_path(dev)?.ok_or_else(|| Error::MapBuild {
            wwid: "(none)".into(),
            reason: format!("{dev} has no WWID"),
        })?;
        self.sync_wwids(&BTreeSet::from([wwid]))
    }

    /// `del path DEV`: forgets the path and reloads its map without it (refused when it is
    /// the map's last working path).
    pub fn del_path(&mut self, dev: &str) -> Result<SyncReport> {
        if self.path(dev).is_none() {
            return Err(Error::NoSuchPath {
                dev: dev.to_string(),
            });
        }
        let saved = self.paths.clone();
        let wwid = self.forget_path(dev);
        let Some(wwid) = wwid else {
            return Ok(SyncReport::default());
        };
        let report = self.sync_wwids(&BTreeSet::from([wwid]))?;
        if report.maps.iter().any(|m| m.plan.action == Action::Refused) {
            // The path stays: keep knowing about it.
            self.paths = saved;
            self.reindex();
            self.refresh_maps(None, HashMap::new())?;
        }
        Ok(report)
    }

    /// `rescan`: asks every SCSI host to scan (lun-scan), then syncs.
    pub fn rescan(&mut self) -> Result<SyncReport> {
        let done = self.begin_rescan().run();
        self.finish_rescan(done)
    }

    /// The part of a rescan that needs no engine state, to run without the daemon's lock:
    /// the writes to every host's `scan`, the settle wait (up to 10 s on the kernel) and the
    /// full sysfs scan. The engine's sysfs writer goes with it and comes back in
    /// [`Engine::finish_rescan`] (meanwhile the engine writes with the kernel writer).
    pub fn begin_rescan(&mut self) -> RescanJob {
        self.busy = true;
        let settle = if self.opts.sysfs_root == Path::new("/sys") {
            Settle {
                settle: Duration::from_secs(1),
                timeout: Duration::from_secs(10),
                poll: Duration::from_millis(100),
                progress: false,
            }
        } else {
            Settle::none()
        };
        RescanJob {
            root: self.opts.sysfs_root.clone(),
            settle,
            writer: std::mem::replace(&mut self.writer, Box::new(lun_scan::rescan::KernelWriter)),
        }
    }

    /// Applies a finished [`RescanJob`]: its scan becomes the paths, every map is planned and
    /// applied.
    pub fn finish_rescan(&mut self, done: RescanDone) -> Result<SyncReport> {
        self.writer = done.writer;
        let mut r = self.sync_scanned(done.scan);
        self.busy = false;
        if let Ok(r) = &mut r {
            r.errors.extend(done.errors);
        }
        r
    }

    /// A coalesced batch of uevents: paths added, changed or removed are re-read or
    /// forgotten, then only the affected maps are re-planned. A removed path's map is
    /// reloaded without it; a map whose paths are all gone stays.
    pub fn on_uevents(&mut self, batch: Vec<Uevent>) -> Result<SyncReport> {
        let by_dev: HashMap<String, String> = self
            .paths
            .iter()
            .filter_map(|p| Some((p.dev.clone(), p.wwid.clone()?)))
            .collect();
        let burst = uevent::coalesce(batch, |o| by_dev.get(o.last.kernel_name()).cloned());
        let outcomes = burst
            .maps
            .iter()
            .flat_map(|m| m.devices.iter())
            .chain(burst.unkeyed.iter());
        let todo: Vec<(String, DeviceChange)> = outcomes
            .filter(|o| o.last.is_disk())
            .map(|o| (o.last.kernel_name().to_string(), o.change))
            .collect();
        self.reread_devices(todo)
    }

    /// Re-reads or forgets each device, then re-plans the maps they belong to (before and
    /// after). A device that cannot be used yet (unreadable, no WWID, or its map's create or
    /// reload failed) is queued for another read (`retry.rs`) instead of being dropped, and
    /// the other devices go on.
    pub(super) fn reread_devices(
        &mut self,
        todo: Vec<(String, DeviceChange)>,
    ) -> Result<SyncReport> {
        let mut affected = BTreeSet::new();
        // Devices read with a WWID: settled once their map is planned without error.
        let mut read: Vec<(String, String)> = Vec::new();
        for (dev, change) in todo {
            if let Some(w) = self.path(&dev).and_then(|p| p.wwid.clone()) {
                affected.insert(w);
            }
            match change {
                DeviceChange::Removed => {
                    self.forget_path(&dev);
                }
                DeviceChange::Added | DeviceChange::Changed | DeviceChange::Replaced => {
                    let got = self.rescan_path(&dev);
                    tracing::debug!(dev, ?change, read = ?got.as_ref().map(|w| w.as_deref()), "uevent: path re-read");
                    match got {
                        Ok(Some(w)) => {
                            affected.insert(w.clone());
                            if change != DeviceChange::Changed {
                                self.checks.remove(&dev);
                            }
                            read.push((dev, w));
                        }
                        Ok(None) => self.retry_later(&dev, "it has no WWID yet".into()),
                        Err(Error::NoSuchPath { .. }) => {
                            // Not a SCSI disk (a dm map, a partition...), or gone already.
                            self.forget_path(&dev);
                        }
                        Err(e) => self.retry_later(&dev, e.to_string()),
                    }
                }
            }
        }
        if affected.is_empty() {
            return Ok(SyncReport::default());
        }
        tracing::debug!(wwids = ?affected, "uevent: planning");
        let report = match self.sync_wwids(&affected) {
            Ok(r) => r,
            Err(e) => {
                for (dev, _) in &read {
                    self.retry_later(dev, e.to_string());
                }
                return Err(e);
            }
        };
        // A device whose map was planned (kept, made, reloaded or failed) is settled or queued
        // by the sync's outcome (`retry_by_outcome`); one whose WWID got no plan (a lone path
        // waiting for its sibling) has nothing left to wait for.
        if !self.retries.is_empty() {
            let planned: HashSet<&str> = report
                .maps
                .iter()
                .map(|m| m.plan.desired.wwid.as_str())
                .chain(report.unnamed.iter().map(String::as_str))
                .collect();
            for (dev, w) in &read {
                // A WWID with an apply in flight is planned again after it (daemon mode):
                // that plan's outcome decides.
                if !planned.contains(w.as_str()) && !self.apply_in_flight(w) {
                    self.retries.settled(dev);
                }
            }
        }
        // New members are checked at once.
        let now = self.clock.now();
        for w in &affected {
            self.scheduler.recheck_map(w, now);
        }
        Ok(report)
    }

    /// The kernel reported an event on a map: re-read its status so paths the kernel failed
    /// are reflected at once, and make every path of the map due for a check now. Returns
    /// the paths to check.
    pub fn on_dm_event(&mut self, map: &str) -> Result<Vec<String>> {
        let wwid = self.wwid_of_map(map)?;
        self.refresh_map(&wwid)?;
        // The map's own paths from its table (not a search of every path's schedule: a
        // lost HBA moves every map's event number at once).
        let now = self.clock.now();
        let mut due: Vec<String> = self.maps[&wwid]
            .table
            .paths()
            .filter_map(|tp| self.path_at(tp.devno))
            .map(|p| p.dev.clone())
            .filter(|dev| self.member.get(dev) == Some(&wwid))
            .collect();
        due.sort();
        due.retain(|dev| self.scheduler.recheck_path(dev, now));
        Ok(due)
    }

    /// Compares every map's event number with the last one seen; calls
    /// [`Engine::on_dm_event`] for the maps that changed behind our back. Returns the paths
    /// now due.
    pub fn poll_dm_events(&mut self) -> Result<Vec<String>> {
        // Every map's event number from one listing (one ioctl on the kernel).
        let now = self.backend.event_numbers().map_err(dm_err("(list)"))?;
        let maps: Vec<(String, String, u32)> = self
            .maps
            .values()
            .map(|m| (m.wwid.clone(), m.name.clone(), m.info.event_nr))
            .collect();
        let mut due = Vec::new();
        for (wwid, name, seen) in maps {
            match now.get(&name) {
                Some(&nr) if nr != seen => due.extend(self.on_dm_event(&wwid)?),
                Some(_) => {}
                // Renamed by an apply still in flight: its finish re-reads it.
                None if self.apply_in_flight(&wwid) => {}
                None => {
                    // Removed behind our back (dmsetup remove): forget it.
                    self.maps.remove(&wwid);
                }
            }
        }
        Ok(due)
    }
}
