//! The planner: paths and the configuration to desired maps and per-map plans (create,
//! reload, rename, keep, refused), names included; reads the engine's state, talks to no
//! backend. A dry run's scratch alias store lives here too.

#[allow(clippy::wildcard_imports)]
use super::*;

/// The size (sectors) most paths of a LUN report, the larger one on a tie; zero sizes do not
/// count (a path that cannot read its capacity). None when no path reports one.
pub(super) fn agreed_size(sizes: impl Iterator<Item = u64>) -> Option<u64> {
    let mut count: BTreeMap<u64, usize> = BTreeMap::new();
    for n in sizes.filter(|&n| n > 0) {
        *count.entry(n).or_default() += 1;
    }
    count
        .into_iter()
        .max_by_key(|&(n, c)| (c, n))
        .map(|(n, _)| n)
}

pub(super) fn rand_seed() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

/// An alias store over scratch copies of the real files, for dry runs: names are allocated
/// exactly as a real run would, and nothing real is written.
struct ScratchStore {
    store: Store,
    dir: PathBuf,
}

impl ScratchStore {
    fn new(paths: &StorePaths, policy: aliases::Policy) -> Result<ScratchStore> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "multipathd-rs-dry-run-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            rand_seed()
        ));
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        let copy = |p: &Option<PathBuf>, name: &str| -> Result<Option<PathBuf>> {
            let dst = dir.join(name);
            if let Some(src) = p
                && src.exists()
            {
                std::fs::copy(src, &dst).map_err(|source| Error::Io {
                    path: src.clone(),
                    source,
                })?;
            }
            Ok(Some(dst))
        };
        let scratch = StorePaths {
            table: copy(&paths.table, "aliases.toml")?,
            bindings: if paths.bindings.is_some() {
                copy(&paths.bindings, "bindings")?
            } else {
                None
            },
            config: paths.config.clone(),
            config_dir: paths.config_dir.clone(),
        };
        let store = Store::open(scratch, Some(policy)).map_err(|source| Error::AliasStore {
            source: Box::new(source),
        })?;
        Ok(ScratchStore { store, dir })
    }
}

impl Drop for ScratchStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Engine {
    /// Builds the plan for the given WWIDs (None = every WWID found). `store` names new maps.
    pub(super) fn build_plan(
        &self,
        only: Option<&BTreeSet<String>>,
        force: &BTreeSet<String>,
        store: &Store,
        report: &mut SyncReport,
    ) -> Result<Vec<MapPlan>> {
        let (existing, all) = self.existing_maps(only)?;
        let live: Vec<(String, String)> = all
            .iter()
            .map(|m| (m.name.clone(), m.uuid.clone().unwrap_or_default()))
            .collect();
        let known = |w: &str| {
            existing.contains_key(w)
                || force.contains(w)
                || store.lookup(w).ok().flatten().is_some()
        };
        let filtered = discovery::filter_paths(&self.config, &self.paths, &known);
        let detect = self.config.global().detect_prio.value;
        let holders = self.path_holders(&existing);
        let mut desired = Vec::new();
        let mut admitted = BTreeSet::new();
        for (wwid, ps) in &filtered.by_wwid {
            if only.is_some_and(|o| !o.contains(wwid)) {
                continue;
            }
            if self.removed_by_admin.contains(wwid) && !force.contains(wwid) {
                continue;
            }
            if !existing.contains_key(wwid)
                && let Some(m) = all.iter().find(|m| m.wwid() == Some(wwid.as_str()))
            {
                // Its table could not be read as multipath: never planned over.
                report.errors.push(format!(
                    "map {} ({wwid}) has a table that is not a multipath table; it is left as it is",
                    m.name
                ));
                continue;
            }
            let live = existing
                .get(wwid)
                .map(|(i, e)| (i.name.as_str(), e.table.length));
            let (ps, left) = self.admit_paths(wwid, ps, live, &holders);
            for l in left {
                tracing::warn!(dev = %l.dev, wwid = %l.wwid, "{l}");
                report.errors.push(l.to_string());
                report.left_out.push(l);
            }
            if ps.is_empty() {
                continue;
            }
            admitted.insert(wwid.clone());
            match discovery::desired_map(&self.config, detect, wwid, &ps, &|p| self.usable(p)) {
                Ok(mut d) => {
                    self.keep_queueing_off_if_given_up(&mut d);
                    desired.push(d);
                }
                Err(reason) => report.errors.push(
                    Error::MapBuild {
                        wwid: wwid.clone(),
                        reason,
                    }
                    .to_string(),
                ),
            }
        }
        report.ignored = filtered.ignored;
        for (wwid, (info, _)) in &existing {
            let wanted = only.is_none_or(|o| o.contains(wwid));
            if wanted && !admitted.contains(wwid) {
                report.kept_without_paths.push(info.name.clone());
            }
        }
        // Names for the maps to create: explicit aliases one by one, the rest in one batch.
        let ctx = AllocateContext {
            live_maps: &live,
            ..AllocateContext::default()
        };
        let mut names: HashMap<String, String> = HashMap::new();
        let mut batch: Vec<&str> = Vec::new();
        for d in &desired {
            if existing.contains_key(&d.wwid) {
                continue;
            }
            match &d.settings.alias {
                Some(a) => {
                    let c = AllocateContext {
                        explicit_alias: Some(a),
                        ..ctx
                    };
                    match store.allocate(&d.wwid, &c) {
                        Ok(al) => {
                            names.insert(d.wwid.clone(), al.name);
                        }
                        Err(source) => report.errors.push(
                            Error::Alias {
                                wwid: d.wwid.clone(),
                                source: Box::new(source),
                            }
                            .to_string(),
                        ),
                    }
                }
                None => batch.push(&d.wwid),
            }
        }
        // With [cluster], the registry names them (by WWID while it cannot be reached).
        let real = std::ptr::eq(store, &self.store);
        if let Some(c) = self.cluster_names(&batch, real) {
            names.extend(c);
            batch.clear();
        }
        if !batch.is_empty() {
            match store.allocate_batch(&batch, &ctx) {
                Ok(v) => {
                    for a in v {
                        names.insert(a.wwid.clone(), a.name);
                    }
                }
                Err(_) => {
                    // One bad WWID must not stop the others: name them one by one.
                    for w in batch {
                        match store.allocate(w, &ctx) {
                            Ok(a) => {
                                names.insert(w.to_string(), a.name);
                            }
                            Err(source) => report.errors.push(
                                Error::Alias {
                                    wwid: w.to_string(),
                                    source: Box::new(source),
                                }
                                .to_string(),
                            ),
                        }
                    }
                }
            }
        }
        // A bad or conflicting line in the alias files stops only the WWIDs it names (as in
        // multipath-tools, which skips it); it is reported loudly.
        for p in store.problems() {
            tracing::warn!("{p}");
            report.errors.push(p);
        }
        for d in &desired {
            if !existing.contains_key(&d.wwid) && !names.contains_key(&d.wwid) {
                tracing::error!(wwid = %d.wwid, "no map is built for WWID {}: it got no name", d.wwid);
                report.unnamed.push(d.wwid.clone());
            }
        }
        let mut plans = Vec::new();
        for d in desired {
            let ex = existing.get(&d.wwid).map(|(_, e)| e);
            let new_name = match (ex, names.get(&d.wwid)) {
                (Some(e), _) => e.name.clone(),
                (None, Some(n)) => n.clone(),
                (None, None) => continue,
            };
            let demanded =
                d.settings.alias.clone().or_else(|| {
                    ex.and_then(|e| self.cluster_rename_target(&d.wwid, &e.name, real))
                });
            let mut plan = discovery::plan_map(d, ex, &new_name, demanded.as_deref());
            if let Some((info, _)) = existing.get(&plan.desired.wwid) {
                self.hold_back_open_rename(&mut plan, info, report);
            }
            plans.push(plan);
        }
        plans.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(plans)
    }

    /// Which map's table holds each device number: fresh from `existing`, and for maps a
    /// partial plan did not read, the engine's last view of them.
    pub(super) fn path_holders(
        &self,
        existing: &ExistingByWwid,
    ) -> HashMap<dm_tables::DevNo, (String, String)> {
        let mut out = HashMap::new();
        for m in self.maps.values() {
            if existing.contains_key(&m.wwid) {
                continue;
            }
            for d in m.table.devnos() {
                out.insert(d, (m.name.clone(), m.wwid.clone()));
            }
        }
        for (wwid, (info, ex)) in existing {
            for d in ex.table.devnos() {
                out.insert(d, (info.name.clone(), wwid.clone()));
            }
        }
        out
    }

    /// The paths of `wwid` that may go into its map, and the ones left out: a path another
    /// map holds (its LUN's WWID changed, or page 0x83 was unreadable and 0x80 answered) is
    /// never put in a second map; a path whose size differs from the size the map has (the
    /// live map's, unless `resize map` runs) is left out, so a stale or smaller path never
    /// shrinks a guest's disk and a size-0 path never makes the WWID unbuildable.
    pub(super) fn admit_paths<'a>(
        &self,
        wwid: &str,
        ps: &[&'a ScsiPath],
        live: Option<(&str, u64)>,
        holders: &HashMap<dm_tables::DevNo, (String, String)>,
    ) -> (Vec<&'a ScsiPath>, Vec<LeftOut>) {
        let mut left = Vec::new();
        let mut free = Vec::new();
        for &p in ps {
            let holder = p
                .devno
                .and_then(|d| holders.get(&discovery::dm_devno(d)))
                .filter(|(_, w)| w != wwid);
            match holder {
                Some((name, old)) => left.push(LeftOut {
                    dev: p.dev.clone(),
                    wwid: wwid.to_string(),
                    map: Some(name.clone()),
                    reason: format!(
                        "map {name} (WWID {old}) holds it, so it is not put in a second map; its LUN now reports another WWID (remapped on the array, or VPD page 0x83 unreadable): check the LUN, then remove the path or the stale map"
                    ),
                }),
                None => free.push(p),
            }
        }
        let resizing = self.resizing.contains(wwid);
        let sectors = |p: &ScsiPath| p.size_bytes.map(|b| b / 512);
        let want = match live {
            Some((_, len)) if !resizing => Some(len),
            _ => agreed_size(free.iter().filter_map(|p| sectors(p))),
        };
        let Some(want) = want else {
            return (free, left);
        };
        let mut admitted = Vec::new();
        for p in free {
            match sectors(p) {
                Some(n) if n != want => left.push(LeftOut {
                    dev: p.dev.clone(),
                    wwid: wwid.to_string(),
                    map: live.map(|(name, _)| name.to_string()),
                    reason: match live {
                        Some((name, _)) if !resizing => format!(
                            "it reports {n} sectors but the live map {name} has {want}; a live map changes size only through `resize map {name}`"
                        ),
                        _ => format!(
                            "it reports {n} sectors but the other paths of the LUN agree on {want}"
                        ),
                    },
                }),
                _ => admitted.push(p),
            }
        }
        (admitted, left)
    }

    /// While the `no_path_retry` countdown of this outage has run out and no path of the map
    /// works, a reload must not bring `queue_if_no_path` back: take it out of the table.
    pub(super) fn keep_queueing_off_if_given_up(&self, d: &mut DesiredMap) {
        let gave_up = self.maps.get(&d.wwid).is_some_and(|m| m.queue.gave_up());
        if gave_up && !d.paths().any(|p| p.usable) {
            d.table
                .features
                .retain(|f| *f != dm_tables::Feature::QueueIfNoPath);
        }
    }

    /// An open map is not renamed unless the admin forces it: the rename is dropped from the
    /// plan (a reload still happens) and reported as pending.
    pub(super) fn hold_back_open_rename(
        &self,
        plan: &mut MapPlan,
        info: &MapInfo,
        report: &mut SyncReport,
    ) {
        if !matches!(plan.action, Action::Rename | Action::RenameReload)
            || info.open_count == 0
            || self.forced_renames.contains(&plan.desired.wwid)
        {
            return;
        }
        let pending = PendingRename {
            map: info.name.clone(),
            wwid: plan.desired.wwid.clone(),
            new_name: plan.name.clone(),
            open_count: info.open_count,
        };
        tracing::warn!(map = %info.name, "{pending}");
        plan.action = if plan.action == Action::RenameReload {
            Action::Reload
        } else {
            Action::Keep
        };
        plan.name = info.name.clone();
        report.pending_renames.push(pending);
    }

    /// Renames that wait for their open map (see [`PendingRename`]).
    pub fn pending_renames(&self) -> Vec<PendingRename> {
        self.pending_renames.values().cloned().collect()
    }

    /// The plan for every map, without touching the backend or the alias files (new names
    /// are allocated in a scratch copy of the alias files).
    pub fn plan_only(&mut self) -> Result<SyncReport> {
        let mut report = SyncReport {
            dry_run: true,
            ..SyncReport::default()
        };
        report.errors.extend(self.scan());
        let scratch = ScratchStore::new(&self.opts.store_paths, alias_policy(&self.config))?;
        let plans = self.build_plan(None, &BTreeSet::new(), &scratch.store, &mut report)?;
        self.ignored = report.ignored.clone();
        report.maps = plans
            .into_iter()
            .map(|plan| MapOutcome {
                plan,
                applied: false,
                messages: Vec::new(),
            })
            .collect();
        Ok(report)
    }

    /// Names for maps to create from the cluster registry: its alias, or the WWID while it
    /// cannot be reached (or on a dry run, for a WWID it has no name for yet). None without
    /// `[cluster]`.
    pub(super) fn cluster_names(
        &self,
        wwids: &[&str],
        allocate: bool,
    ) -> Option<Vec<(String, String)>> {
        let mut c = self.cluster.as_ref()?.lock().ok()?;
        Some(
            wwids
                .iter()
                .map(|w| {
                    let name = c.name(w, allocate).unwrap_or_else(|| w.to_string());
                    (w.to_string(), name)
                })
                .collect(),
        )
    }

    /// A map named by its WWID (made while the registry was unreachable) is renamed to its
    /// registry alias; the held-back rename rule keeps an open map's name until it closes.
    /// Any other existing name is never changed.
    pub(super) fn cluster_rename_target(
        &self,
        wwid: &str,
        current: &str,
        allocate: bool,
    ) -> Option<String> {
        if current != wwid {
            return None;
        }
        let mut c = self.cluster.as_ref()?.lock().ok()?;
        c.name(wwid, allocate).filter(|n| n != current)
    }
}
