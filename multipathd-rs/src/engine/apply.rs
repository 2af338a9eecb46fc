//! The applier: what talks to the device-mapper backend. Reads the live maps, applies plans
//! (renames in order, the rest concurrently), sends messages, and runs the control socket's
//! map operations (sync, resize, add/del map, reconfigure, cluster names).

#[allow(clippy::wildcard_imports)]
use super::*;

/// The backend's part of one map's plan: create / rename / reload, then the path messages.
/// Failures are recorded in the result, never returned early past the messages already sent.
pub(super) fn apply_to_backend(backend: &dyn DmBackend, plan: &MapPlan) -> Applied {
    let mut messages = Vec::new();
    let res: Result<()> = (|| {
        let old = plan.current_name.clone().unwrap_or_default();
        // A fresh table starts with every path active: the ones known to be down are failed
        // again, as soon as the backend has the new table live.
        let down: Vec<Message> = if matches!(plan.action, Action::Create) || plan.action.reloads() {
            plan.desired
                .paths()
                .filter(|p| !p.usable)
                .map(|p| Message::FailPath(p.devno))
                .collect()
        } else {
            Vec::new()
        };
        match plan.action {
            Action::Create => {
                backend
                    .create_then(&plan.name, &plan.desired.uuid, &plan.desired.table, &down)
                    .map_err(dm_err(&plan.name))?;
            }
            Action::Rename | Action::RenameReload => {
                backend.rename(&old, &plan.name).map_err(dm_err(&old))?;
            }
            _ => {}
        }
        if plan.action.reloads() {
            backend
                .reload_then(&plan.name, &plan.desired.table, &down)
                .map_err(dm_err(&plan.name))?;
        }
        messages.extend(down.iter().map(ToString::to_string));
        let any_usable = plan.desired.paths().any(|p| p.usable);
        if any_usable && !matches!(plan.action, Action::Refused) {
            for m in &plan.messages {
                backend.message(&plan.name, m).map_err(dm_err(&plan.name))?;
                messages.push(m.to_string());
            }
        }
        Ok(())
    })();
    (messages, res)
}

/// `f` over `items` on up to `width` threads (this one included); results in the items'
/// order. An item no worker got to (a worker panicked) is None, never silently dropped.
pub(super) fn run_concurrently<T: Sync, R: Send>(
    width: usize,
    items: &[T],
    f: impl Fn(&T) -> R + Sync,
) -> Vec<Option<R>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Mutex, PoisonError};
    if width <= 1 || items.len() <= 1 {
        return items.iter().map(|i| Some(f(i))).collect();
    }
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    let worker = || {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else { break };
            let r = f(item);
            *slots[i].lock().unwrap_or_else(PoisonError::into_inner) = Some(r);
        }
    };
    std::thread::scope(|s| {
        for _ in 1..width.min(items.len()) {
            // A thread that cannot be started leaves its share to the others.
            if let Err(e) = std::thread::Builder::new().spawn_scoped(s, worker) {
                tracing::warn!("cannot start a worker thread: {e}");
                break;
            }
        }
        worker();
    });
    slots
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(PoisonError::into_inner))
        .collect()
}

impl Engine {
    /// Existing multipath maps by WWID, with tables and statuses (only those of `only` when
    /// given), and every device-mapper map.
    pub(super) fn existing_maps(
        &self,
        only: Option<&BTreeSet<String>>,
    ) -> Result<(ExistingByWwid, Vec<MapInfo>)> {
        let all = self.backend.list().map_err(dm_err("(list)"))?;
        let mut out = BTreeMap::new();
        for info in &all {
            let Some(wwid) = info.wwid() else { continue };
            if only.is_some_and(|o| !o.contains(wwid)) {
                continue;
            }
            // A map with our uuid whose table is not a multipath one (a wiped table, `error`)
            // is left alone and named; the other maps go on (the planner skips its WWID).
            let table = match self.backend.table(&info.name) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(map = %info.name, "{}", dm_err(&info.name)(e));
                    continue;
                }
            };
            let status = self.backend.status(&info.name).ok();
            out.insert(
                wwid.to_string(),
                (
                    info.clone(),
                    ExistingMap {
                        name: info.name.clone(),
                        table,
                        status,
                    },
                ),
            );
        }
        Ok((out, all))
    }

    /// `rename map MAP force`: carries out the rename the configuration asks for although
    /// the map is open (whoever holds `/dev/mapper/<old>` keeps its open device; new opens
    /// must use the new name).
    pub fn force_rename(&mut self, map: &str) -> Result<SyncReport> {
        let wwid = self.wwid_of_map(map)?;
        self.forced_renames.insert(wwid.clone());
        let r = self.sync_wwids(&BTreeSet::from([wwid]));
        self.forced_renames.clear();
        r
    }

    /// Scans, plans every map and applies the plan.
    pub fn sync(&mut self) -> Result<SyncReport> {
        let t0 = Instant::now();
        let scan = lun_scan::scan_with(&self.opts.sysfs_root, super::SCAN_OPTIONS);
        let took = t0.elapsed();
        let mut r = self.sync_scanned(scan)?;
        r.timings.scan = Some(took);
        Ok(r)
    }

    /// [`Engine::sync`] with a scan made elsewhere (the daemon scans without its lock).
    pub fn sync_scanned(&mut self, scan: lun_scan::Scan) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        report.errors.extend(self.install_scan(scan));
        self.sync_planned(None, &BTreeSet::new(), report)
    }

    /// Re-plans only the maps of these WWIDs (paths already updated), and applies.
    pub fn sync_wwids(&mut self, wwids: &BTreeSet<String>) -> Result<SyncReport> {
        self.sync_planned(Some(wwids), &BTreeSet::new(), SyncReport::default())
    }

    /// Writes `fast_io_fail_tmo` / `dev_loss_tmo` on the FC remote ports of the maps' paths
    /// (of `only`'s maps when given), as multipath-tools does on every map setup; see
    /// [`crate::fc_tmo`]. Returns the ports that could not be set, as sentences.
    pub(super) fn set_fc_timeouts(&mut self, only: Option<&BTreeSet<String>>) -> Vec<String> {
        let polling = self.config.global().polling_interval.value;
        let mut ports = crate::fc_tmo::Ports::default();
        for m in self.maps.values() {
            let Some(d) = m
                .desired
                .as_ref()
                .filter(|_| only.is_none_or(|o| o.contains(&m.wwid)))
            else {
                continue;
            };
            let paths: Vec<&ScsiPath> = d.paths().filter_map(|p| self.path_at(p.devno)).collect();
            let Some(first) = paths.first() else { continue };
            let settings = self.config.resolve(&discovery::identity_of(first)).settings;
            let want = crate::fc_tmo::Want::of(&settings, polling);
            ports.add(
                &m.name,
                want,
                paths.iter().filter_map(|p| p.rport.as_deref()),
            );
        }
        let mut errors = Vec::new();
        for o in ports.apply(&self.opts.sysfs_root, self.writer.as_mut()) {
            for n in &o.notes {
                tracing::warn!(rport = %o.rport, maps = ?o.maps, "{n}");
            }
            if let Some(e) = o.error {
                errors.push(e);
            }
        }
        errors
    }

    /// Books one carried-out plan: its error, the map's desired state, the load count.
    pub(super) fn record(
        &mut self,
        mut plan: MapPlan,
        messages: Vec<String>,
        res: Result<()>,
    ) -> MapOutcome {
        let applied = match res {
            Ok(()) => !matches!(plan.action, Action::Refused),
            Err(e) => {
                plan.error = Some(e.to_string());
                false
            }
        };
        if applied {
            tracing::info!(map = %plan.name, action = plan.action.as_str(), "map {}", plan.action.as_str());
            if let Some(old) = self.maps.get_mut(&plan.desired.wwid) {
                old.desired = Some(Arc::clone(&plan.desired.0));
                if plan.action.reloads() {
                    old.stats.map_loads += 1;
                }
            }
        }
        MapOutcome {
            plan,
            applied,
            messages,
        }
    }

    /// Re-reads the maps from the backend (only those of `only` when given) and keeps the
    /// scheduler's path list in step. `planned` holds the desired maps just planned.
    pub(super) fn refresh_maps(
        &mut self,
        only: Option<&BTreeSet<String>>,
        mut planned: HashMap<&str, Arc<DesiredMap>>,
    ) -> Result<()> {
        let (existing, all) = self.existing_maps(only)?;
        let polling = interval_policy(&self.config).polling_interval;
        for (wwid, (info, ex)) in existing {
            let desired = planned.remove(wwid.as_str());
            let queueing_now = ex.table.has_feature(&dm_tables::Feature::QueueIfNoPath);
            let npr = desired
                .as_ref()
                .map_or(QNoPathRetry::Fail, |d| q_policy(d.settings.no_path_retry));
            match self.maps.get_mut(&wwid) {
                Some(m) => {
                    // What did not change keeps its record (a rescan re-reads every map;
                    // see `Engine::keep_unchanged_paths`).
                    if m.name != info.name {
                        m.name = info.name.clone();
                    }
                    if m.info != info {
                        m.info = info;
                    }
                    if m.table != ex.table {
                        m.table = ex.table;
                    }
                    if m.status != ex.status {
                        m.status = ex.status;
                    }
                    if desired.is_some() && m.desired != desired {
                        m.desired = desired;
                    }
                    if let Some(d) = &m.desired {
                        let npr = q_policy(d.settings.no_path_retry);
                        if m.queue.policy() != npr {
                            m.queue = QueueState::new(npr, polling, queueing_now);
                        }
                    }
                    // the kernel's queueing is the truth, after a reload above all
                    m.queue.observe_kernel(queueing_now);
                }
                None => {
                    self.maps.insert(
                        wwid.clone(),
                        Box::new(MapState {
                            name: info.name.clone(),
                            wwid: wwid.clone(),
                            info,
                            queue: QueueState::new(npr, polling, queueing_now),
                            table: ex.table,
                            status: ex.status,
                            desired,
                            failback: FailbackState::new(),
                            stats: state::MapStats::default(),
                        }),
                    );
                }
            }
        }
        let alive: HashSet<&str> = all.iter().filter_map(MapInfo::wwid).collect();
        self.maps.retain(|w, _| alive.contains(w.as_str()));
        self.pending_renames
            .retain(|w, _| alive.contains(w.as_str()));
        // Scheduler: every path that is in a map's table and known to us is checked.
        let now = self.clock.now();
        let mut member: HashMap<String, String> = HashMap::new();
        for m in self.maps.values() {
            for d in m.table.devnos() {
                if let Some(p) = self.path_at(d) {
                    member.insert(p.dev.clone(), m.wwid.clone());
                }
            }
        }
        let stale: Vec<String> = self
            .member
            .keys()
            .filter(|d| !member.contains_key(*d))
            .cloned()
            .collect();
        for dev in stale {
            self.scheduler.remove_path(&dev);
        }
        let new = member
            .iter()
            .filter(|(dev, wwid)| self.scheduler.get(dev).is_none_or(|s| &s.map != *wwid))
            .count();
        self.scheduler.reserve(new);
        for (dev, wwid) in &member {
            match self.scheduler.get(dev) {
                Some(s) if &s.map == wwid => {}
                _ => self.scheduler.add_path(dev, wwid, now),
            }
        }
        self.member = member;
        Ok(())
    }

    pub(super) fn refresh_map(&mut self, wwid: &str) -> Result<()> {
        let Some(m) = self.maps.get_mut(wwid) else {
            return Ok(());
        };
        let name = m.name.clone();
        m.info = self.backend.info(&name).map_err(dm_err(&name))?;
        m.table = self.backend.table(&name).map_err(dm_err(&name))?;
        m.status = self.backend.status(&name).ok();
        m.queue
            .observe_kernel(m.table.has_feature(&dm_tables::Feature::QueueIfNoPath));
        Ok(())
    }

    pub(super) fn send(&mut self, wwid: &str, msg: &Message) -> Result<Sent> {
        let sent = self.send_only(wwid, msg)?;
        self.refresh_map(wwid)?;
        Ok(sent)
    }

    /// Sends a message without re-reading the map (the caller reads it once afterwards).
    pub(super) fn send_only(&mut self, wwid: &str, msg: &Message) -> Result<Sent> {
        let name = self
            .maps
            .get(wwid)
            .map(|m| m.name.clone())
            .ok_or_else(|| Error::NoSuchMap {
                map: wwid.to_string(),
            })?;
        self.backend.message(&name, msg).map_err(dm_err(&name))?;
        if let Some(m) = self.maps.get_mut(wwid) {
            match msg {
                Message::FailPath(_) => m.stats.path_faults += 1,
                Message::SwitchGroup(_) => m.stats.switch_group += 1,
                _ => {}
            }
        }
        tracing::info!(map = %name, "{msg}");
        Ok(Sent {
            map: name,
            message: msg.to_string(),
        })
    }

    /// `fail path DEV`.
    pub fn fail_path(&mut self, dev: &str) -> Result<Sent> {
        let (wwid, devno) = self.map_of_path(dev)?;
        self.send(&wwid, &Message::FailPath(devno))
    }

    /// `reinstate path DEV`.
    pub fn reinstate_path(&mut self, dev: &str) -> Result<Sent> {
        let (wwid, devno) = self.map_of_path(dev)?;
        self.send(&wwid, &Message::ReinstatePath(devno))
    }

    /// `switchgroup MAP N` (1-based group).
    pub fn switch_group(&mut self, map: &str, group: u32) -> Result<Sent> {
        let wwid = self.wwid_of_map(map)?;
        self.send(&wwid, &Message::SwitchGroup(group))
    }

    /// `resize map MAP`: each path re-reads its capacity (`device/rescan`), then the map is
    /// reloaded with the new size.
    pub fn resize_map(&mut self, map: &str) -> Result<SyncReport> {
        let wwid = self.wwid_of_map(map)?;
        let devs: Vec<String> = self
            .paths
            .iter()
            .filter(|p| p.wwid.as_deref() == Some(wwid.as_str()))
            .map(|p| p.dev.clone())
            .collect();
        let root = self.opts.sysfs_root.clone();
        for dev in &devs {
            let mut r = Rescanner::new(&root, self.writer.as_mut(), Settle::none());
            r.resize(dev).map_err(|source| Error::Scan { source })?;
        }
        for dev in &devs {
            self.rescan_path(dev)?;
        }
        self.resizing.insert(wwid.clone());
        let r = self.sync_wwids(&BTreeSet::from([wwid]));
        self.resizing.clear();
        r
    }

    /// `add map MAP` (a WWID, or a name the alias store knows): creates it even where
    /// find_multipaths would not.
    pub fn add_map(&mut self, map: &str) -> Result<SyncReport> {
        let wwid = if self.paths.iter().any(|p| p.wwid.as_deref() == Some(map)) {
            map.to_string()
        } else {
            self.store
                .list()
                .map_err(|source| Error::AliasStore {
                    source: Box::new(source),
                })?
                .into_iter()
                .find(|l| l.alias == map)
                .map(|l| l.wwid)
                .ok_or_else(|| Error::NoSuchMap {
                    map: map.to_string(),
                })?
        };
        self.removed_by_admin.remove(&wwid);
        let set = BTreeSet::from([wwid]);
        self.sync_planned(Some(&set), &set, SyncReport::default())
    }

    /// `del map MAP`: removes the map unless it is open.
    pub fn del_map(&mut self, map: &str) -> Result<String> {
        let wwid = self.wwid_of_map(map)?;
        let name = self.maps[&wwid].name.clone();
        self.backend
            .remove(&name, RemoveMode::Now)
            .map_err(dm_err(&name))?;
        self.maps.remove(&wwid);
        self.removed_by_admin.insert(wwid);
        self.refresh_maps(None, HashMap::new())?;
        Ok(name)
    }

    /// `reconfigure`: re-reads the configuration and re-plans every map.
    pub fn reconfigure(&mut self) -> Result<SyncReport> {
        if let Some(p) = &self.opts.config_path {
            // A file that vanished or does not parse keeps the running configuration (and its
            // blacklist): the error names the file and the reason. Only a daemon that started
            // without a file goes on with the built-ins when there is still none.
            self.config = match Config::load(p) {
                Ok(c) => c,
                Err(Error::ConfigRead { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound
                        && self.config.source.is_none() =>
                {
                    Config::builtin()
                }
                Err(e) => return Err(e),
            };
        }
        self.store = Store::open(
            self.opts.store_paths.clone(),
            Some(alias_policy(&self.config)),
        )
        .map_err(|source| Error::AliasStore {
            source: Box::new(source),
        })?;
        self.scheduler.set_policy(interval_policy(&self.config));
        self.removed_by_admin.clear();
        let same_cluster = match (&self.cluster, &self.config.cluster) {
            (Some(c), Some(s)) => c.lock().is_ok_and(|c| c.section() == s),
            (None, None) => true,
            _ => false,
        };
        if !same_cluster {
            self.cluster = open_cluster(&self.config, &self.opts);
        }
        self.sync()
    }

    /// The cluster's periodic work (see [`crate::cluster::Cluster::tick`]), from the daemon's
    /// loop: follows the registry, publishes this host's maps under its lease, and re-plans
    /// maps still named by their WWID so they take their registry alias once closed.
    pub fn cluster_tick(&mut self, now: Instant) -> Option<SyncReport> {
        let maps = || {
            self.maps_view()
                .iter()
                .map(|m| hostsync::MapState {
                    name: m.name.clone(),
                    wwid: m.wwid.clone(),
                    active_paths: u32::try_from(m.usable_path_count()).unwrap_or(u32::MAX),
                    total_paths: u32::try_from(m.path_count()).unwrap_or(u32::MAX),
                })
                .collect::<Vec<_>>()
        };
        let due = {
            let mut c = self.cluster.as_ref()?.lock().ok()?;
            c.tick(now, maps)
        };
        if !due {
            return None;
        }
        let wwid_named: BTreeSet<String> = self
            .maps
            .values()
            .filter(|m| m.name == m.wwid)
            .map(|m| m.wwid.clone())
            .collect();
        if wwid_named.is_empty() {
            return None;
        }
        match self.sync_wwids(&wwid_named) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!("renaming WWID-named maps to their cluster alias failed: {e}");
                None
            }
        }
    }
}
