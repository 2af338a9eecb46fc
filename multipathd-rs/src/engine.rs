//! The engine: owns the configuration, the sysfs root, a device-mapper backend, the alias
//! store, the current paths and maps. [`Engine::sync`] runs the discovery pipeline
//! ([`crate::discovery`]) and applies the result; the operations behind the control socket's
//! commands and the failover hooks (check results, uevents, dm events) live here too.
//!
//! Rules kept here: an existing map whose table already matches is adopted with no reload;
//! it keeps its name unless the configuration demands another; a reload that would drop every
//! working path is refused for that map only; an open map is never removed; a map whose paths
//! are all gone stays until they return or the admin removes it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aliases::{AllocateContext, Store, StorePaths};
use dm_tables::{
    DmBackend, GroupState, MapInfo, Message, MultipathStatus, MultipathTable, PathState, RemoveMode,
};
use lun_scan::ScsiPath;
use lun_scan::rescan::{Rescanner, Settle, SysfsWriter};
use serde::Serialize;

use crate::checker::{self, CheckResult, CheckState, CheckTarget, PathChecker};
use crate::clock::Clock;
use crate::config::{Config, Failback as CfgFailback, NoPathRetry as CfgNoPathRetry};
use crate::discovery::{self, Action, DesiredMap, ExistingMap, Ignored, MapPlan};
use crate::error::Error;
use crate::scheduler::failover::{
    self, DmPathState, FailbackInput, FailbackState, GroupAction, PathAction,
};
use crate::scheduler::queueing::{NoPathRetry as QNoPathRetry, QueueAction, QueueState};
use crate::scheduler::{CheckScheduler, IntervalPolicy};
use crate::state::{self, MapView, PathView};
use crate::uevent::{self, DeviceChange, Uevent};

type Result<T> = std::result::Result<T, Error>;

/// Existing multipath maps by WWID.
type ExistingByWwid = BTreeMap<String, (MapInfo, ExistingMap)>;

/// Where the engine's inputs are.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The configuration file (re-read on reconfigure); None = built-in configuration only.
    pub config_path: Option<PathBuf>,
    pub sysfs_root: PathBuf,
    pub store_paths: StorePaths,
    /// Use this checker for every path instead of the configured one (the sim backend uses
    /// `sysfs`, since there are no device nodes to send commands to).
    pub checker_override: Option<String>,
}

/// What the engine knows about one multipath map.
#[derive(Debug, Clone)]
struct MapState {
    name: String,
    wwid: String,
    info: MapInfo,
    table: MultipathTable,
    status: Option<MultipathStatus>,
    desired: Option<DesiredMap>,
    queue: QueueState,
    failback: FailbackState,
    stats: state::MapStats,
}

/// The outcome of one map in a sync.
#[derive(Debug, Clone, Serialize)]
pub struct MapOutcome {
    #[serde(flatten)]
    pub plan: MapPlan,
    /// Whether the action was carried out (false for dry runs and failures).
    pub applied: bool,
    /// Messages sent after the action (fail_path of paths known to be down, queueing).
    pub messages: Vec<String>,
}

/// What a sync (or dry run) found and did.
#[derive(Debug, Clone, Serialize, Default)]
pub struct SyncReport {
    pub dry_run: bool,
    pub maps: Vec<MapOutcome>,
    /// Existing multipath maps with no path left; they stay as they are.
    pub kept_without_paths: Vec<String>,
    pub ignored: Vec<Ignored>,
    /// Scan errors and per-map failures, as sentences.
    pub errors: Vec<String>,
    /// Paths that report a map's WWID but were left out of it (size differs from the live
    /// map, or another map holds them); each is also in `errors` as a sentence.
    pub left_out: Vec<LeftOut>,
    /// Renames the configuration asks for that wait because the map is open.
    pub pending_renames: Vec<PendingRename>,
    /// WWIDs whose map could not be built because they got no name (see `errors`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unnamed: Vec<String>,
}

/// A path kept out of the map of the WWID it reports, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeftOut {
    pub dev: String,
    pub wwid: String,
    /// The live map concerned: the one whose size differs, or the one holding the path.
    pub map: Option<String>,
    pub reason: String,
}

impl std::fmt::Display for LeftOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "path {} (WWID {}) is left out: {}",
            self.dev, self.wwid, self.reason
        )
    }
}

/// A rename the configuration asks for, held back while the map is open (renaming would
/// remove `/dev/mapper/<name>` under whoever uses it). `rename map MAP force` carries it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingRename {
    pub map: String,
    pub wwid: String,
    pub new_name: String,
    pub open_count: u32,
}

impl std::fmt::Display for PendingRename {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "map {} should be renamed {} but is open ({} holder(s)); it keeps its name until it is closed or the admin runs `rename map {} force`",
            self.map, self.new_name, self.open_count, self.map
        )
    }
}

impl SyncReport {
    /// Maps created, reloaded or renamed.
    pub fn changed(&self) -> usize {
        self.maps
            .iter()
            .filter(|m| m.applied && !matches!(m.plan.action, Action::Keep | Action::Refused))
            .count()
    }
}

/// One message the engine sent to a map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sent {
    pub map: String,
    pub message: String,
}

/// The daemon's engine. See the module docs.
pub struct Engine {
    config: Config,
    opts: EngineOptions,
    backend: Box<dyn DmBackend>,
    store: Store,
    clock: Arc<dyn Clock>,
    writer: Box<dyn SysfsWriter + Send>,
    paths: Vec<ScsiPath>,
    /// Index of `paths` by kernel name and by device number.
    by_dev: HashMap<String, usize>,
    by_devno: HashMap<dm_tables::DevNo, usize>,
    /// Path (kernel name) -> WWID of the map whose table holds it.
    member: HashMap<String, String>,
    maps: BTreeMap<String, MapState>,
    checks: HashMap<String, CheckResult>,
    checkers: HashMap<String, Arc<dyn PathChecker>>,
    scheduler: CheckScheduler,
    /// WWIDs whose map the admin removed (`del map`): not re-created until `add map` or
    /// reconfigure.
    removed_by_admin: HashSet<String>,
    ignored: Vec<Ignored>,
    /// Renames waiting for their open map to close, by WWID.
    pending_renames: BTreeMap<String, PendingRename>,
    /// WWIDs whose next plan may change the live map's size (`resize map`).
    resizing: BTreeSet<String>,
    /// WWIDs whose next plan may rename the map although it is open (`rename map M force`).
    forced_renames: BTreeSet<String>,
    started: Instant,
    busy: bool,
    /// `[cluster]`: names decided by the hostsync registry (behind a lock so planning, which
    /// borrows the engine, can ask it).
    cluster: Option<std::sync::Mutex<crate::cluster::Cluster>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("sysfs_root", &self.opts.sysfs_root)
            .field("paths", &self.paths.len())
            .field("maps", &self.maps.len())
            .finish()
    }
}

/// The cluster view for the configuration's `[cluster]` section, if any.
fn open_cluster(
    config: &Config,
    opts: &EngineOptions,
) -> Option<std::sync::Mutex<crate::cluster::Cluster>> {
    let section = config.cluster.as_ref()?;
    let prefix = config.global().alias_prefix.value;
    let cache = crate::cluster::cache_path(opts.store_paths.bindings.as_deref());
    Some(std::sync::Mutex::new(crate::cluster::Cluster::open(
        section, &prefix, cache,
    )))
}

/// The alias policy the configuration asks for.
pub fn alias_policy(cfg: &Config) -> aliases::Policy {
    cfg.global().alias_store_policy()
}

fn interval_policy(cfg: &Config) -> IntervalPolicy {
    let g = cfg.global();
    IntervalPolicy::with_max(
        Duration::from_secs(u64::from(g.polling_interval.value.max(1))),
        Duration::from_secs(u64::from(g.max_polling_interval.value.max(1))),
    )
}

fn q_policy(n: CfgNoPathRetry) -> QNoPathRetry {
    match n {
        CfgNoPathRetry::Fail => QNoPathRetry::Fail,
        CfgNoPathRetry::Queue => QNoPathRetry::Queue,
        CfgNoPathRetry::Retries(n) => QNoPathRetry::Retries(n),
    }
}

fn fb_policy(f: CfgFailback) -> failover::Failback {
    match f {
        CfgFailback::Immediate | CfgFailback::Seconds(0) => failover::Failback::Immediate,
        CfgFailback::Manual => failover::Failback::Manual,
        CfgFailback::Followover => failover::Failback::Followover,
        CfgFailback::Seconds(n) => failover::Failback::Deferred(Duration::from_secs(u64::from(n))),
    }
}

fn dm_err(map: &str) -> impl FnOnce(dm_tables::Error) -> Error + '_ {
    move |source| Error::Dm {
        map: map.to_string(),
        source,
    }
}

/// What the backend did for one plan: the messages it sent, and how it ended.
type Applied = (Vec<String>, Result<()>);

/// The backend's part of one map's plan: create / rename / reload, then the path messages.
/// Failures are recorded in the result, never returned early past the messages already sent.
fn apply_to_backend(backend: &dyn DmBackend, plan: &MapPlan) -> Applied {
    let mut messages = Vec::new();
    let res: Result<()> = (|| {
        let old = plan.current_name.clone().unwrap_or_default();
        match plan.action {
            Action::Create => {
                backend
                    .create(&plan.name, &plan.desired.uuid, &plan.desired.table)
                    .map_err(dm_err(&plan.name))?;
            }
            Action::Rename | Action::RenameReload => {
                backend.rename(&old, &plan.name).map_err(dm_err(&old))?;
            }
            _ => {}
        }
        if plan.action.reloads() {
            backend
                .reload(&plan.name, &plan.desired.table)
                .map_err(dm_err(&plan.name))?;
        }
        // A fresh table starts with every path active: fail the ones known to be down.
        if matches!(plan.action, Action::Create) || plan.action.reloads() {
            for p in plan.desired.paths().filter(|p| !p.usable) {
                let m = Message::FailPath(p.devno);
                backend
                    .message(&plan.name, &m)
                    .map_err(dm_err(&plan.name))?;
                messages.push(m.to_string());
            }
        }
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

/// The size (sectors) most paths of a LUN report, the larger one on a tie; zero sizes do not
/// count (a path that cannot read its capacity). None when no path reports one.
fn agreed_size(sizes: impl Iterator<Item = u64>) -> Option<u64> {
    let mut count: BTreeMap<u64, usize> = BTreeMap::new();
    for n in sizes.filter(|&n| n > 0) {
        *count.entry(n).or_default() += 1;
    }
    count
        .into_iter()
        .max_by_key(|&(n, c)| (c, n))
        .map(|(n, _)| n)
}

/// `f` over `items` on up to `width` threads (this one included); results in the items'
/// order. An item no worker got to (a worker panicked) is None, never silently dropped.
fn run_concurrently<T: Sync, R: Send>(
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
            for a in &h.args {
                s.push(' ');
                s.push_str(a);
            }
            s
        }
    }
}

fn dev_state(s: &str) -> state::DevState {
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

fn chk_state(c: Option<&CheckResult>) -> state::CheckerState {
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

impl Engine {
    /// An engine on `backend`. Nothing is scanned or changed until [`Engine::sync`].
    pub fn new(
        config: Config,
        opts: EngineOptions,
        backend: Box<dyn DmBackend>,
        clock: Arc<dyn Clock>,
    ) -> Result<Engine> {
        let store = Store::open(opts.store_paths.clone(), Some(alias_policy(&config))).map_err(
            |source| Error::AliasStore {
                source: Box::new(source),
            },
        )?;
        let scheduler = CheckScheduler::new(interval_policy(&config));
        let cluster = open_cluster(&config, &opts);
        Ok(Engine {
            config,
            opts,
            backend,
            store,
            clock,
            writer: Box::new(lun_scan::rescan::KernelWriter),
            paths: Vec::new(),
            by_dev: HashMap::new(),
            by_devno: HashMap::new(),
            member: HashMap::new(),
            maps: BTreeMap::new(),
            checks: HashMap::new(),
            checkers: HashMap::new(),
            scheduler,
            removed_by_admin: HashSet::new(),
            ignored: Vec::new(),
            pending_renames: BTreeMap::new(),
            resizing: BTreeSet::new(),
            forced_renames: BTreeSet::new(),
            started: Instant::now(),
            busy: false,
            cluster,
        })
    }

    /// Replaces how rescans write sysfs attributes (tests drive a simulated tree with it).
    pub fn set_sysfs_writer(&mut self, writer: Box<dyn SysfsWriter + Send>) {
        self.writer = writer;
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn sysfs_root(&self) -> &Path {
        &self.opts.sysfs_root
    }

    pub fn backend(&self) -> &dyn DmBackend {
        self.backend.as_ref()
    }

    pub fn paths(&self) -> &[ScsiPath] {
        &self.paths
    }

    pub fn ignored(&self) -> &[Ignored] {
        &self.ignored
    }

    /// Names of the maps the engine manages, sorted.
    pub fn map_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.maps.values().map(|m| m.name.clone()).collect();
        v.sort();
        v
    }

    pub fn scheduler(&self) -> &CheckScheduler {
        &self.scheduler
    }

    /// The last check result of a path.
    pub fn last_check(&self, dev: &str) -> Option<&CheckResult> {
        self.checks.get(dev)
    }

    // ------------------------------------------------------------------------------------
    // Scanning and planning
    // ------------------------------------------------------------------------------------

    /// Re-reads every path from sysfs. Returns the scan's errors as sentences.
    pub fn scan(&mut self) -> Vec<String> {
        let scan = lun_scan::scan(&self.opts.sysfs_root);
        let errors = scan.all_errors().iter().map(ToString::to_string).collect();
        self.paths = scan.paths;
        self.reindex();
        errors
    }

    fn reindex(&mut self) {
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

    fn path(&self, dev: &str) -> Option<&ScsiPath> {
        self.by_dev.get(dev).map(|&i| &self.paths[i])
    }

    fn path_at(&self, d: dm_tables::DevNo) -> Option<&ScsiPath> {
        self.by_devno.get(&d).map(|&i| &self.paths[i])
    }

    fn usable(&self, p: &ScsiPath) -> bool {
        p.is_running() && self.checks.get(&p.dev).is_none_or(|c| !c.state.is_failed())
    }

    /// Existing multipath maps by WWID, with tables and statuses (only those of `only` when
    /// given), and every device-mapper map.
    fn existing_maps(
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
            let table = self.backend.table(&info.name).map_err(dm_err(&info.name))?;
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

    /// Builds the plan for the given WWIDs (None = every WWID found). `store` names new maps.
    fn build_plan(
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
    fn path_holders(
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
    fn admit_paths<'a>(
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
    fn keep_queueing_off_if_given_up(&self, d: &mut DesiredMap) {
        let gave_up = self.maps.get(&d.wwid).is_some_and(|m| m.queue.gave_up());
        if gave_up && !d.paths().any(|p| p.usable) {
            d.table
                .features
                .retain(|f| *f != dm_tables::Feature::QueueIfNoPath);
        }
    }

    /// An open map is not renamed unless the admin forces it: the rename is dropped from the
    /// plan (a reload still happens) and reported as pending.
    fn hold_back_open_rename(&self, plan: &mut MapPlan, info: &MapInfo, report: &mut SyncReport) {
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

    /// Scans, plans every map and applies the plan.
    pub fn sync(&mut self) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        report.errors.extend(self.scan());
        self.sync_planned(None, &BTreeSet::new(), report)
    }

    /// Re-plans only the maps of these WWIDs (paths already updated), and applies.
    pub fn sync_wwids(&mut self, wwids: &BTreeSet<String>) -> Result<SyncReport> {
        self.sync_planned(Some(wwids), &BTreeSet::new(), SyncReport::default())
    }

    fn sync_planned(
        &mut self,
        only: Option<&BTreeSet<String>>,
        force: &BTreeSet<String>,
        mut report: SyncReport,
    ) -> Result<SyncReport> {
        let plans = self.build_plan(only, force, &self.store, &mut report)?;
        if only.is_none() {
            self.ignored = report.ignored.clone();
        }
        for p in &plans {
            self.pending_renames.remove(&p.desired.wwid);
        }
        for r in &report.pending_renames {
            self.pending_renames.insert(r.wwid.clone(), r.clone());
        }
        let mut planned = HashMap::new();
        for outcome in self.apply_all(plans) {
            if let Some(e) = &outcome.plan.error {
                report.errors.push(e.clone());
            }
            planned.insert(
                outcome.plan.desired.wwid.clone(),
                outcome.plan.desired.clone(),
            );
            report.maps.push(outcome);
        }
        let reloaded: Vec<String> = planned.keys().cloned().collect();
        self.refresh_maps(only, planned)?;
        // A reload may have loaded queueing the no_path_retry countdown had switched off.
        for w in reloaded {
            if self.maps.get(&w).is_some_and(|m| m.queue.needs_update()) {
                match self.map_decisions(&w, None) {
                    Ok(sent) => {
                        for s in sent {
                            tracing::info!(map = %s.map, "{} after the reload", s.message);
                        }
                    }
                    Err(e) => report.errors.push(e.to_string()),
                }
            }
        }
        report.errors.extend(self.set_fc_timeouts(only));
        Ok(report)
    }

    /// Writes `fast_io_fail_tmo` / `dev_loss_tmo` on the FC remote ports of the maps' paths
    /// (of `only`'s maps when given), as multipath-tools does on every map setup; see
    /// [`crate::fc_tmo`]. Returns the ports that could not be set, as sentences.
    fn set_fc_timeouts(&mut self, only: Option<&BTreeSet<String>>) -> Vec<String> {
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

    /// Carries out the plans; outcomes in the plans' order. Renames go first, one at a time
    /// and in order (one may free the name another plan takes); every other plan touches only
    /// its own map, so those run [`DmBackend::concurrency`] at a time: on the kernel each
    /// resume waits for udevd, and a cold start or a burst of new LUNs should not wait for
    /// those one after another.
    fn apply_all(&mut self, plans: Vec<MapPlan>) -> Vec<MapOutcome> {
        let is_rename = |p: &MapPlan| matches!(p.action, Action::Rename | Action::RenameReload);
        let backend = &*self.backend;
        let mut done: Vec<Option<Applied>> = plans
            .iter()
            .map(|p| is_rename(p).then(|| apply_to_backend(backend, p)))
            .collect();
        let rest: Vec<&MapPlan> = plans.iter().filter(|p| !is_rename(p)).collect();
        let mut results = run_concurrently(backend.concurrency(), &rest, |p| {
            apply_to_backend(backend, p)
        })
        .into_iter();
        for slot in done.iter_mut().filter(|d| d.is_none()) {
            *slot = results.next().flatten();
        }
        plans
            .into_iter()
            .zip(done)
            .map(|(plan, d)| {
                let (messages, res) = d.unwrap_or_else(|| {
                    let e = Error::MapBuild {
                        wwid: plan.desired.wwid.clone(),
                        reason: "the plan was not carried out (its worker thread stopped)".into(),
                    };
                    (Vec::new(), Err(e))
                });
                self.record(plan, messages, res)
            })
            .collect()
    }

    /// Books one carried-out plan: its error, the map's desired state, the load count.
    fn record(&mut self, mut plan: MapPlan, messages: Vec<String>, res: Result<()>) -> MapOutcome {
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
                old.desired = Some(plan.desired.clone());
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
    fn refresh_maps(
        &mut self,
        only: Option<&BTreeSet<String>>,
        mut planned: HashMap<String, DesiredMap>,
    ) -> Result<()> {
        let (existing, all) = self.existing_maps(only)?;
        let polling = interval_policy(&self.config).polling_interval;
        for (wwid, (info, ex)) in existing {
            let desired = planned.remove(&wwid);
            let queueing_now = ex.table.has_feature(&dm_tables::Feature::QueueIfNoPath);
            let npr = desired
                .as_ref()
                .map_or(QNoPathRetry::Fail, |d| q_policy(d.settings.no_path_retry));
            match self.maps.get_mut(&wwid) {
                Some(m) => {
                    m.name = info.name.clone();
                    m.info = info;
                    m.table = ex.table;
                    m.status = ex.status;
                    if desired.is_some() {
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
                        MapState {
                            name: info.name.clone(),
                            wwid: wwid.clone(),
                            info,
                            queue: QueueState::new(npr, polling, queueing_now),
                            table: ex.table,
                            status: ex.status,
                            desired,
                            failback: FailbackState::new(),
                            stats: state::MapStats::default(),
                        },
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
        for (dev, wwid) in &member {
            match self.scheduler.get(dev) {
                Some(s) if &s.map == wwid => {}
                _ => self.scheduler.add_path(dev, wwid, now),
            }
        }
        self.member = member;
        Ok(())
    }

    fn refresh_map(&mut self, wwid: &str) -> Result<()> {
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

    // ------------------------------------------------------------------------------------
    // Lookups
    // ------------------------------------------------------------------------------------

    /// The WWID of a map given by name or WWID.
    fn wwid_of_map(&self, map: &str) -> Result<String> {
        if self.maps.contains_key(map) {
            return Ok(map.to_string());
        }
        self.maps
            .values()
            .find(|m| m.name == map)
            .map(|m| m.wwid.clone())
            .ok_or_else(|| Error::NoSuchMap {
                map: map.to_string(),
            })
    }

    /// The WWID of the map whose table holds `dev`.
    fn map_of_path(&self, dev: &str) -> Result<(String, dm_tables::DevNo)> {
        let p = self.path(dev).ok_or_else(|| Error::NoSuchPath {
            dev: dev.to_string(),
        })?;
        let devno = p
            .devno
            .map(discovery::dm_devno)
            .ok_or_else(|| Error::NoSuchPath {
                dev: dev.to_string(),
            })?;
        self.member
            .get(dev)
            .filter(|w| {
                self.maps
                    .get(*w)
                    .is_some_and(|m| m.table.paths().any(|p| p.devno == devno))
            })
            .map(|w| (w.clone(), devno))
            .ok_or_else(|| Error::PathNotInMap {
                dev: dev.to_string(),
            })
    }

    /// The checker name configured for the map holding `dev` (`tur` when none).
    fn checker_name_of(&self, dev: &str) -> String {
        if let Some(c) = &self.opts.checker_override {
            return c.clone();
        }
        self.member
            .get(dev)
            .and_then(|w| self.maps.get(w))
            .and_then(|m| m.desired.as_ref())
            .map_or("tur".to_string(), |d| d.settings.checker.to_string())
    }

    fn send(&mut self, wwid: &str, msg: &Message) -> Result<Sent> {
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
        self.refresh_map(wwid)?;
        tracing::info!(map = %name, "{msg}");
        Ok(Sent {
            map: name,
            message: msg.to_string(),
        })
    }

    // ------------------------------------------------------------------------------------
    // Control socket operations
    // ------------------------------------------------------------------------------------

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

    /// Re-reads one path from sysfs (after a rescan or an event).
    fn rescan_path(&mut self, dev: &str) -> Result<Option<String>> {
        match lun_scan::scan_path(&self.opts.sysfs_root, dev) {
            Ok(p) => {
                let wwid = p.wwid.clone();
                match self.by_dev.get(dev) {
                    Some(&i) => self.paths[i] = p,
                    None => self.paths.push(p),
                }
                self.reindex();
                Ok(wwid)
            }
            Err(lun_scan::Error::NoSuchDevice { .. }) => Err(Error::NoSuchPath {
                dev: dev.to_string(),
            }),
            Err(source) => Err(Error::Scan { source }),
        }
    }

    fn forget_path(&mut self, dev: &str) -> Option<String> {
        let i = *self.by_dev.get(dev)?;
        let p = self.paths.remove(i);
        self.reindex();
        self.checks.remove(dev);
        self.scheduler.remove_path(dev);
        p.wwid
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

    /// Names for maps to create from the cluster registry: its alias, or the WWID while it
    /// cannot be reached (or on a dry run, for a WWID it has no name for yet). None without
    /// `[cluster]`.
    fn cluster_names(&self, wwids: &[&str], allocate: bool) -> Option<Vec<(String, String)>> {
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
    fn cluster_rename_target(&self, wwid: &str, current: &str, allocate: bool) -> Option<String> {
        if current != wwid {
            return None;
        }
        let mut c = self.cluster.as_ref()?.lock().ok()?;
        c.name(wwid, allocate).filter(|n| n != current)
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

    /// `rescan`: asks every SCSI host to scan (lun-scan), then syncs.
    pub fn rescan(&mut self) -> Result<SyncReport> {
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
        let root = self.opts.sysfs_root.clone();
        let diff = Rescanner::new(&root, self.writer.as_mut(), settle).scan_hosts(&[], None);
        let mut r = self.sync();
        self.busy = false;
        if let Ok(r) = &mut r {
            r.errors.extend(diff.errors.iter().map(ToString::to_string));
        }
        r
    }

    // ------------------------------------------------------------------------------------
    // Failover hooks
    // ------------------------------------------------------------------------------------

    fn checker_for(&mut self, dev: &str) -> Result<Arc<dyn PathChecker>> {
        let name = self.checker_name_of(dev);
        if let Some(c) = self.checkers.get(&name) {
            return Ok(c.clone());
        }
        let c =
            checker::checker_by_name(&name, &self.opts.sysfs_root, checker::DEFAULT_CHECK_TIMEOUT)?;
        self.checkers.insert(name, c.clone());
        Ok(c)
    }

    /// The checks due now, ready for the runner: (checker, target).
    pub fn due_checks(&mut self) -> Vec<(Arc<dyn PathChecker>, CheckTarget)> {
        let now = self.clock.now();
        let mut out = Vec::new();
        for dev in self.scheduler.due(now) {
            if let Ok(c) = self.checker_for(&dev) {
                out.push((c, CheckTarget::with_sysfs(&dev, &self.opts.sysfs_root)));
            }
        }
        out
    }

    /// The fast path to failover: one read of `device/state` per member path. A path whose
    /// SCSI state moved since the engine last looked (running -> offline, transport-offline,
    /// blocked, or back to running) is made due for its real check at once, instead of at its
    /// next polling interval (up to max_polling_interval for a healthy path). Returns the paths
    /// re-checked. Meant to run about once a second: it costs one small read per path.
    pub fn state_sweep(&mut self) -> Vec<String> {
        let now = self.clock.now();
        let mut moved = Vec::new();
        for i in 0..self.paths.len() {
            let dev = self.paths[i].dev.clone();
            if self.scheduler.get(&dev).is_none() {
                continue; // not a member of any map
            }
            let f = self
                .opts
                .sysfs_root
                .join("block")
                .join(&dev)
                .join("device/state");
            let now_state = match std::fs::read_to_string(&f) {
                Ok(s) => s.trim().to_string(),
                // The device is going away: its remove uevent (or the next rescan) handles it;
                // until then its real check reports it down.
                Err(_) => "deleted".to_string(),
            };
            if now_state != self.paths[i].state {
                tracing::info!(dev, from = %self.paths[i].state, to = %now_state, "SCSI device state changed; checking the path now");
                self.paths[i].state = now_state;
                self.scheduler.recheck_path(&dev, now);
                moved.push(dev);
            }
        }
        moved
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
    /// queueing and failback). Returns the messages sent.
    pub fn apply_check_result(&mut self, dev: &str, result: CheckResult) -> Result<Vec<Sent>> {
        let now = self.clock.now();
        let changed = self.scheduler.record(dev, result.state, now);
        let state = result.state;
        if state != CheckState::Pending {
            self.checks.insert(dev.to_string(), result);
        }
        let Ok((wwid, devno)) = self.map_of_path(dev) else {
            return Ok(Vec::new());
        };
        self.refresh_map(&wwid)?;
        let mut sent = Vec::new();
        let dm = self.maps[&wwid]
            .status
            .as_ref()
            .and_then(|s| s.path(devno))
            .map_or(DmPathState::Active, |p| match p.state {
                PathState::Active => DmPathState::Active,
                PathState::Failed => DmPathState::Failed,
            });
        let mut reinstated = false;
        match failover::path_action(dm, state) {
            PathAction::FailPath => sent.push(self.send(&wwid, &Message::FailPath(devno))?),
            PathAction::ReinstatePath => {
                sent.push(self.send(&wwid, &Message::ReinstatePath(devno))?);
                reinstated = true;
            }
            PathAction::Keep => {}
        }
        // The ALUA state can move without the checker's verdict changing (optimized ->
        // non-optimized is "ready" both times): compare it on every check, one sysfs read.
        let known_access = self.path(dev).and_then(|p| p.access_state.clone());
        if changed || self.access_state_now(dev) != known_access {
            let _ = self.rescan_path(dev);
            let now_access = self.path(dev).and_then(|p| p.access_state.clone());
            if now_access != known_access {
                // Priorities follow the ALUA state: re-plan the map so its groups are
                // re-ordered (a reload only when the grouping really changed).
                tracing::info!(
                    dev,
                    map = %wwid,
                    from = ?known_access,
                    to = ?now_access,
                    "ALUA access state changed; re-planning the map's path groups"
                );
                let report = self.sync_wwids(&BTreeSet::from([wwid.clone()]))?;
                for e in &report.errors {
                    tracing::warn!(map = %wwid, "re-planning after an ALUA change: {e}");
                }
            }
        }
        sent.extend(self.map_decisions(&wwid, reinstated.then_some(devno))?);
        Ok(sent)
    }

    /// The path's ALUA access state as sysfs shows it now (None when the device has none).
    fn access_state_now(&self, dev: &str) -> Option<String> {
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
    fn map_decisions(
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
        let mut affected = BTreeSet::new();
        let outcomes = burst
            .maps
            .iter()
            .flat_map(|m| m.devices.iter())
            .chain(burst.unkeyed.iter());
        let mut todo: Vec<(String, DeviceChange)> = Vec::new();
        for o in outcomes {
            if !o.last.is_disk() {
                continue;
            }
            todo.push((o.last.kernel_name().to_string(), o.change));
        }
        for (dev, change) in todo {
            if let Some(w) = by_dev.get(&dev) {
                affected.insert(w.clone());
            }
            match change {
                DeviceChange::Removed => {
                    self.forget_path(&dev);
                }
                DeviceChange::Added | DeviceChange::Changed | DeviceChange::Replaced => {
                    match self.rescan_path(&dev) {
                        Ok(Some(w)) => {
                            affected.insert(w);
                            if change != DeviceChange::Changed {
                                self.checks.remove(&dev);
                            }
                        }
                        Ok(None) => {}
                        Err(Error::NoSuchPath { .. }) => {
                            // Not a SCSI disk (a dm map, a partition...), or gone already.
                            self.forget_path(&dev);
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        if affected.is_empty() {
            return Ok(SyncReport::default());
        }
        let report = self.sync_wwids(&affected)?;
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
        Ok(self.scheduler.recheck_map(&wwid, self.clock.now()))
    }

    /// Compares every map's event number with the last one seen; calls
    /// [`Engine::on_dm_event`] for the maps that changed behind our back. Returns the paths
    /// now due.
    pub fn poll_dm_events(&mut self) -> Result<Vec<String>> {
        // One list (one call for every map) rather than one info per map.
        let now: HashMap<String, u32> = self
            .backend
            .list()
            .map_err(dm_err("(list)"))?
            .into_iter()
            .map(|i| (i.name, i.event_nr))
            .collect();
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
                None => {
                    // Removed behind our back (dmsetup remove): forget it.
                    self.maps.remove(&wwid);
                }
            }
        }
        Ok(due)
    }

    // ------------------------------------------------------------------------------------
    // Views
    // ------------------------------------------------------------------------------------

    fn path_view(
        &self,
        p: &ScsiPath,
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
        let checker = self.checker_name_of(&p.dev);
        PathView {
            hctl: state::Hctl::new(p.hctl.host, p.hctl.channel, p.hctl.target, p.hctl.lun),
            dev: p.dev.clone(),
            devno,
            dm_state,
            dev_state: dev_state(&p.state),
            chk_state: chk_state(self.checks.get(&p.dev)),
            checker,
            priority,
            wwid: p.wwid.clone().unwrap_or_default(),
            vendor: p.vendor.clone(),
            product: p.model.clone(),
            revision: p.rev.clone(),
            size_sectors: p.size_bytes.unwrap_or(0) / 512,
            host_wwnn: p.host_wwnn.clone(),
            host_wwpn: p.host_wwpn.clone(),
            target_wwnn: p.target_node_name.clone(),
            target_wwpn: p.target_wwpn.clone(),
            host_adapter: p.host_adapter.clone(),
            marginal: false,
            fail_count,
            next_check,
        }
    }

    fn map_view(&self, m: &MapState) -> MapView {
        let prio_of: HashMap<dm_tables::DevNo, i32> = m
            .desired
            .as_ref()
            .map(|d| d.paths().map(|p| (p.devno, p.priority)).collect())
            .unwrap_or_default();
        let now = self.clock.now();
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
                    Some(p) => self.path_view(p, dm_state, prio, fail_count),
                    None => {
                        // The device is gone but still in the table.
                        let mut gone = ScsiPath::new(lun_scan::Hctl::new(0, 0, 0, 0), "#");
                        gone.devno = Some(lun_scan::DevNo::new(tp.devno.major, tp.devno.minor));
                        gone.state = "deleted".into();
                        let mut v = self.path_view(&gone, dm_state, prio, fail_count);
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
            for a in &g.selector_args {
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
        let fallback_path = self
            .paths
            .iter()
            .find(|p| p.wwid.as_deref() == Some(&m.wwid));
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
                .or_else(|| fallback_path.map(|p| p.vendor.clone()))
                .unwrap_or_default(),
            product: first
                .map(|d| d.product.clone())
                .or_else(|| fallback_path.map(|p| p.model.clone()))
                .unwrap_or_default(),
            revision: first
                .map(|d| d.revision.clone())
                .or_else(|| fallback_path.map(|p| p.rev.clone()))
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
    fn write_protect_of(&self, m: &MapState) -> state::WriteProtect {
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
        let views = self.maps_view();
        let in_maps: HashMap<String, PathView> = views
            .iter()
            .flat_map(|m| m.paths())
            .map(|p| (p.dev.clone(), p.clone()))
            .collect();
        self.paths
            .iter()
            .map(|p| match in_maps.get(&p.dev) {
                Some(v) => v.clone(),
                None => {
                    let prio = -1;
                    self.path_view(p, state::PathDmState::Undef, prio, 0)
                }
            })
            .collect()
    }

    /// What `show status` reports.
    pub fn status(&self) -> state::DaemonStatus {
        let paths = self.paths_view();
        state::DaemonStatus {
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_secs: self.started.elapsed().as_secs(),
            path_count: u32::try_from(paths.len()).unwrap_or(u32::MAX),
            map_count: u32::try_from(self.maps.len()).unwrap_or(u32::MAX),
            checker: state::CheckerStats::from_paths(&paths),
            busy: self.busy,
        }
    }
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

fn rand_seed() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

impl Drop for ScratchStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
