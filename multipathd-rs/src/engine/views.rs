//! Views: the engine's state as the read commands show it (map, path and status views, the
//! published snapshot).

#[allow(clippy::wildcard_imports)]
use super::*;
use lun_scan::Shared;

/// `"0"`, `"1 queue_if_no_path"`, ... as tables and `multipath -ll` print features.
pub fn features_text(t: &MultipathTable) -> String {
    let words: usize = t.features.iter().map(dm_tables::Feature::word_count).sum();
    let mut s = words.to_string();
    for f in &t.features {
        s.push(' ');
        s.push_str(&f.to_string());
    }
    s
}

/// `"0"` or `"1 alua"`.
pub fn hwhandler_text(t: &MultipathTable) -> String {
    match &t.hw_handler {
        None => "0".into(),
        Some(h) => {
            let mut s = format!("{} {}", h.args.len() + 1, h.name);
            for a in h.args.iter() {
                s.push(' ');
                s.push_str(a);
            }
            s
        }
    }
}

pub(super) fn dev_state(s: &str) -> state::DevState {
    use state::DevState::*;
    match s {
        "running" => Running,
        "offline" => Offline,
        "blocked" => Blocked,
        "quiesce" => Quiesce,
        "transport-offline" => TransportOffline,
        "created" => Created,
        "cancel" => Cancel,
        "deleted" | "del" => Deleted,
        _ => Undef,
    }
}

pub(super) fn chk_state(c: Option<&CheckResult>) -> state::CheckerState {
    use state::CheckerState as C;
    match c.map(|c| c.state) {
        Some(CheckState::Up) => C::Ready,
        Some(CheckState::Down) => C::Faulty,
        Some(CheckState::Ghost) => C::Ghost,
        Some(CheckState::Pending) => C::Pending,
        Some(CheckState::Timeout) => C::Timeout,
        None => C::Undef,
    }
}

/// The strings a view's paths have in common (WWID, checker name), one allocation each: a
/// map's paths share them.
#[derive(Default)]
pub(super) struct Names(std::collections::HashSet<Arc<str>>);

impl Names {
    pub(super) fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.0.get(s) {
            return Arc::clone(a);
        }
        let a: Arc<str> = Arc::from(s);
        self.0.insert(Arc::clone(&a));
        a
    }
}

impl Engine {
    pub(super) fn path_view(
        &self,
        p: &ScsiPath,
        names: &mut Names,
        dm_state: state::PathDmState,
        priority: i32,
        fail_count: u32,
    ) -> PathView {
        let devno = p.devno.map_or(state::DevNo::new(0, 0), |d| {
            state::DevNo::new(d.major, d.minor)
        });
        let now = self.clock.now();
        let next_check = match self.scheduler.get(&p.dev) {
            Some(s) => state::NextCheck::Due {
                remaining_secs: u32::try_from(s.next_due.saturating_duration_since(now).as_secs())
                    .unwrap_or(u32::MAX),
                interval_secs: u32::try_from(s.interval.as_secs()).unwrap_or(u32::MAX),
            },
            None => state::NextCheck::Orphan,
        };
        let checker = names.get(self.checker_name_of(&p.dev));
        PathView {
            hctl: state::Hctl::new(p.hctl.host, p.hctl.channel, p.hctl.target, p.hctl.lun),
            dev: p.dev.clone(),
            devno,
            dm_state,
            dev_state: dev_state(&p.state),
            chk_state: chk_state(self.checks.get(&p.dev)),
            checker,
            priority,
            wwid: names.get(p.wwid.as_deref().unwrap_or_default()),
            vendor: p.vendor.to_arc(),
            product: p.model.to_arc(),
            revision: p.rev.to_arc(),
            size_sectors: p.size_bytes.unwrap_or(0) / 512,
            host_wwnn: p.host_wwnn.as_ref().map(Shared::to_arc),
            host_wwpn: p.host_wwpn.as_ref().map(Shared::to_arc),
            target_wwnn: p.target_node_name.as_ref().map(Shared::to_arc),
            target_wwpn: p.target_wwpn.as_ref().map(Shared::to_arc),
            host_adapter: p.host_adapter.as_ref().map(Shared::to_arc),
            marginal: false,
            fail_count,
            next_check,
        }
    }

    pub(super) fn map_view(&self, m: &MapState) -> MapView {
        let prio_of: HashMap<dm_tables::DevNo, i32> = m
            .desired
            .as_ref()
            .map(|d| d.paths().map(|p| (p.devno, p.priority)).collect())
            .unwrap_or_default();
        let now = self.clock.now();
        let mut names = Names::default();
        let mut groups = Vec::new();
        for (gi, g) in m.table.groups.iter().enumerate() {
            let gs = m.status.as_ref().and_then(|s| s.groups.get(gi));
            let mut paths = Vec::new();
            let mut usable_prios = Vec::new();
            for tp in &g.paths {
                let ps = gs.and_then(|s| s.paths.iter().find(|p| p.devno == tp.devno));
                let dm_state = match ps.map(|p| p.state) {
                    Some(PathState::Active) => state::PathDmState::Active,
                    Some(PathState::Failed) => state::PathDmState::Failed,
                    None => state::PathDmState::Undef,
                };
                let prio = prio_of.get(&tp.devno).copied().unwrap_or(-1);
                let fail_count = ps.map_or(0, |p| p.fail_count);
                let pv = match self.path_at(tp.devno) {
                    Some(p) => self.path_view(p, &mut names, dm_state, prio, fail_count),
                    None => {
                        // The device is gone but still in the table.
                        let mut gone = ScsiPath::new(lun_scan::Hctl::new(0, 0, 0, 0), "#");
                        gone.devno = Some(lun_scan::DevNo::new(tp.devno.major, tp.devno.minor));
                        gone.state = "deleted".into();
                        let mut v = self.path_view(&gone, &mut names, dm_state, prio, fail_count);
                        v.chk_state = state::CheckerState::Faulty;
                        v
                    }
                };
                if pv.dm_state == state::PathDmState::Active
                    && !matches!(
                        pv.chk_state,
                        state::CheckerState::Faulty | state::CheckerState::Timeout
                    )
                    && prio >= 0
                {
                    usable_prios.push(prio);
                }
                paths.push(pv);
            }
            let priority = if usable_prios.is_empty() {
                // multipath -ll prints the configured priority of a group with no working path
                g.paths
                    .iter()
                    .filter_map(|p| prio_of.get(&p.devno))
                    .copied()
                    .max()
                    .unwrap_or(0)
            } else {
                let n = usable_prios.len() as i64;
                i32::try_from(usable_prios.iter().map(|&p| i64::from(p)).sum::<i64>() / n)
                    .unwrap_or(0)
            };
            let mut selector = format!("{} {}", g.selector, g.selector_args.len());
            for a in g.selector_args.iter() {
                selector.push(' ');
                selector.push_str(a);
            }
            groups.push(state::GroupView {
                number: u32::try_from(gi + 1).unwrap_or(u32::MAX),
                selector,
                priority,
                dm_state: match gs.map(|s| s.state) {
                    Some(GroupState::Active) => state::GroupDmState::Active,
                    Some(GroupState::Enabled) => state::GroupDmState::Enabled,
                    Some(GroupState::Disabled) => state::GroupDmState::Disabled,
                    None => state::GroupDmState::Undef,
                },
                marginal: false,
                paths,
            });
        }
        let first = m.desired.as_ref();
        // Only a map without a plan (adopted, never re-planned) looks for one of its paths;
        // from the table, not by a search of every path (that was O(maps x paths) per view).
        let fallback_path = || {
            m.table
                .paths()
                .find_map(|tp| self.path_at(tp.devno))
                .or_else(|| {
                    self.paths
                        .iter()
                        .find(|p| p.wwid.as_deref() == Some(&m.wwid))
                })
        };
        let queueing = match first.map(|d| d.settings.no_path_retry) {
            Some(CfgNoPathRetry::Fail) => state::Queueing::Off,
            Some(CfgNoPathRetry::Queue) => state::Queueing::On,
            Some(CfgNoPathRetry::Retries(n)) => match m.queue.remaining(now) {
                Some(r) => state::Queueing::SecondsLeft(u32::try_from(r.as_secs()).unwrap_or(0)),
                None => state::Queueing::Checks(n),
            },
            None => state::Queueing::Undef,
        };
        let failback = match first.map(|d| d.settings.failback) {
            Some(CfgFailback::Immediate) => state::Failback::Immediate,
            Some(CfgFailback::Manual) => state::Failback::Manual,
            Some(CfgFailback::Followover) => state::Failback::Followover,
            Some(CfgFailback::Seconds(n)) => state::Failback::Deferred(n),
            None => state::Failback::Undef,
        };
        MapView {
            name: m.name.clone(),
            wwid: m.wwid.clone(),
            uuid: m.info.uuid.clone().unwrap_or_default(),
            dm_dev: Some(format!("dm-{}", m.info.devno.minor)),
            devno: Some(state::DevNo::new(m.info.devno.major, m.info.devno.minor)),
            size_sectors: m.table.length,
            vendor: first
                .map(|d| d.vendor.clone())
                .or_else(|| fallback_path().map(|p| p.vendor.to_string()))
                .unwrap_or_default(),
            product: first
                .map(|d| d.product.clone())
                .or_else(|| fallback_path().map(|p| p.model.to_string()))
                .unwrap_or_default(),
            revision: first
                .map(|d| d.revision.clone())
                .or_else(|| fallback_path().map(|p| p.rev.to_string()))
                .unwrap_or_default(),
            features: features_text(&m.table),
            hwhandler: hwhandler_text(&m.table),
            write_protect: self.write_protect_of(m),
            dm_state: if m.info.suspended {
                state::MapDmState::Suspended
            } else {
                state::MapDmState::Active
            },
            queueing,
            failback,
            // an open map whose configured rename waits (see `pending_renames`)
            action: self
                .pending_renames
                .contains_key(&m.wwid)
                .then_some(state::MapAction::Rename),
            stats: m.stats,
            groups,
        }
    }

    /// `ro` when any path of the map's table is a read-only device (the kernel then refuses
    /// writes through the map), `rw` when every path is known writable, `undef` otherwise.
    pub(super) fn write_protect_of(&self, m: &MapState) -> state::WriteProtect {
        let mut all_known = true;
        for tp in m.table.groups.iter().flat_map(|g| g.paths.iter()) {
            match self.path_at(tp.devno).and_then(|p| p.read_only) {
                Some(true) => return state::WriteProtect::ReadOnly,
                Some(false) => {}
                None => all_known = false,
            }
        }
        if all_known && m.table.groups.iter().any(|g| !g.paths.is_empty()) {
            state::WriteProtect::ReadWrite
        } else {
            state::WriteProtect::Undef
        }
    }

    /// Every map, sorted by name.
    pub fn maps_view(&self) -> Vec<MapView> {
        let mut v: Vec<MapView> = self.maps.values().map(|m| self.map_view(m)).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// One map by name or WWID.
    pub fn map_view_of(&self, map: &str) -> Result<MapView> {
        let wwid = self.wwid_of_map(map)?;
        Ok(self.map_view(&self.maps[&wwid]))
    }

    /// Every scanned path, with its state in the map holding it.
    pub fn paths_view(&self) -> Vec<PathView> {
        self.paths_view_with(&self.maps_view())
    }

    /// Everything the read commands show, at this moment (the daemon publishes it so reads
    /// never wait for the engine).
    pub fn snapshot(&self) -> state::Snapshot {
        let maps = self.maps_view();
        let paths = self.paths_view_with(&maps);
        let status = self.status_with(&paths);
        state::Snapshot {
            maps,
            paths,
            status: Some(status),
        }
    }

    pub(super) fn paths_view_with(&self, views: &[MapView]) -> Vec<PathView> {
        let in_maps: HashMap<&str, &PathView> = views
            .iter()
            .flat_map(|m| m.paths())
            .map(|p| (p.dev.as_str(), p))
            .collect();
        let mut names = Names::default();
        self.paths
            .iter()
            .map(|p| match in_maps.get(p.dev.as_str()) {
                Some(v) => (*v).clone(),
                None => {
                    let prio = -1;
                    self.path_view(p, &mut names, state::PathDmState::Undef, prio, 0)
                }
            })
            .collect()
    }

    /// What `show status` reports.
    pub fn status(&self) -> state::DaemonStatus {
        self.status_with(&self.paths_view())
    }

    pub(super) fn status_with(&self, paths: &[PathView]) -> state::DaemonStatus {
        state::DaemonStatus {
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_secs: self.started.elapsed().as_secs(),
            path_count: u32::try_from(paths.len()).unwrap_or(u32::MAX),
            map_count: u32::try_from(self.maps.len()).unwrap_or(u32::MAX),
            checker: state::CheckerStats::from_paths(paths),
            busy: self.busy,
            checks: self.runner_stats,
            sweep: self.sweep_stats(),
            rereads: self
                .retries()
                .into_iter()
                .map(|(dev, attempt, why)| state::Reread { dev, attempt, why })
                .collect(),
        }
    }
}
