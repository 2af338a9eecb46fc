//! The engine: owns the configuration, the sysfs root, a device-mapper backend, the alias
//! store, the current paths and maps. [`Engine::sync`] runs the discovery pipeline
//! ([`crate::discovery`]) and applies the result; the operations behind the control socket's
//! commands and the failover hooks (check results, uevents, dm events) live here too.
//!
//! One state ([`Engine`], this module: its types and lookups), four jobs, one module each:
//! - `plan`: the planner. Paths and configuration -> desired maps and per-map plans; talks
//!   to no backend.
//! - `apply`: talks to the [`DmBackend`]: reads the live maps, carries a plan and messages
//!   out, runs the map commands (reconfigure, resize, add/del map, cluster names).
//! - `applier`: a sync as prepare (under the lock) / apply (no engine) / finish (under the
//!   lock), and the daemon's per-map ordering of applies.
//! - `paths`: the path state machine. Due checks, the SCSI state sweep, check results ->
//!   fail_path / reinstate_path, queueing and failback.
//! - `events`: event intake. Scans and single-path rescans (incremental indexes), `rescan`,
//!   uevents, dm events.
//! - `views`: what the read commands show (the snapshot the daemon publishes).
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

mod applier;
mod apply;
mod events;
mod paths;
mod plan;
mod retry;
mod sweep;
mod views;

pub use applier::{AppliedJob, ApplyJob};
pub use views::{features_text, hwhandler_text};

type Result<T> = std::result::Result<T, Error>;

/// How long single-path scans reuse the hosts, ports and sessions they read (a new remote
/// port or host is also found by the full scan of every rescan and reconcile).
pub const PATH_CONTEXT_TTL: Duration = Duration::from_secs(1);

/// A check ready for the runner: the path's checker and its target.
pub type DueCheck = (Arc<dyn PathChecker>, CheckTarget);

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
    /// Shared with the plan that made it (see [`discovery::SharedDesired`]).
    desired: Option<Arc<DesiredMap>>,
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
    /// Where the sync's time went (the daemon logs it for its first sync).
    #[serde(skip)]
    pub timings: SyncTimings,
}

/// Wall time of a sync's phases.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncTimings {
    /// The sysfs scan (lun-scan: every disk's attributes and VPD pages); None when the scan
    /// was made elsewhere.
    pub scan: Option<Duration>,
    /// Filter, settings, groups, tables, names and actions.
    pub plan: Duration,
    /// Every map's ioctls, on the kernel each resume with its wait for udevd's cookie.
    pub apply: Duration,
    /// The slowest single map of the apply.
    pub slowest_map: Duration,
    /// How many maps the backend was asked to work on at once.
    pub width: usize,
    /// Re-reading the maps from the backend afterwards.
    pub refresh: Duration,
}

impl std::fmt::Display for SyncTimings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(scan) = self.scan {
            write!(f, "scan {:.3} s, ", scan.as_secs_f64())?;
        }
        write!(
            f,
            "plan {:.3} s, apply {:.3} s ({} at a time, slowest map {:.3} s), refresh {:.3} s",
            self.plan.as_secs_f64(),
            self.apply.as_secs_f64(),
            self.width,
            self.slowest_map.as_secs_f64(),
            self.refresh.as_secs_f64()
        )
    }
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

/// The slow half of a rescan (see [`Engine::begin_rescan`]).
pub struct RescanJob {
    root: PathBuf,
    settle: Settle,
    writer: Box<dyn SysfsWriter + Send>,
}

impl std::fmt::Debug for RescanJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RescanJob")
            .field("root", &self.root)
            .finish()
    }
}

/// What a [`RescanJob`] found.
pub struct RescanDone {
    writer: Box<dyn SysfsWriter + Send>,
    scan: lun_scan::Scan,
    errors: Vec<String>,
}

impl std::fmt::Debug for RescanDone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RescanDone")
            .field("paths", &self.scan.paths.len())
            .field("errors", &self.errors)
            .finish()
    }
}

/// What the daemon's sysfs scans read: everything it decides on, without lun-scan's
/// details (queue depth, ALUA preferred bit, device handler state), which nothing here uses:
/// 3 fewer of the 11 files opened per path. A scan installed with [`Engine::install_scan`]
/// should read the same, or every install replaces every path record.
pub const SCAN_OPTIONS: lun_scan::ScanOptions = lun_scan::ScanOptions::without_details();

impl RescanJob {
    /// Asks every SCSI host to scan, waits for the SCSI layer to settle, reads sysfs once.
    /// (Not `scan_hosts`: its path scans before and after, for a difference nobody read,
    /// made a rescan read every path three times and hold two extra copies of them, and
    /// reported the scan's errors twice.)
    pub fn run(mut self) -> RescanDone {
        let (errors, _settled) = Rescanner::new(&self.root, self.writer.as_mut(), self.settle)
            .trigger_host_scans(&[], None);
        let scan = lun_scan::scan_with(&self.root, SCAN_OPTIONS);
        RescanDone {
            writer: self.writer,
            scan,
            errors: errors.iter().map(ToString::to_string).collect(),
        }
    }
}

/// What a batch of check results did: the messages sent, and the paths whose map could not
/// be handled (each with the error).
#[derive(Debug, Default)]
pub struct CheckOutcome {
    pub sent: Vec<Sent>,
    pub errors: Vec<(String, Error)>,
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
    backend: Arc<dyn DmBackend>,
    store: Store,
    clock: Arc<dyn Clock>,
    writer: Box<dyn SysfsWriter + Send>,
    paths: Vec<ScsiPath>,
    /// Index of `paths` by kernel name and by device number.
    by_dev: HashMap<String, usize>,
    by_devno: HashMap<dm_tables::DevNo, usize>,
    /// Path (kernel name) -> WWID of the map whose table holds it.
    member: HashMap<String, String>,
    /// Boxed: a B-tree node holds eleven values and is often half full, so inline map states
    /// (table, status and all) left a third of the map memory empty at 16k maps.
    maps: BTreeMap<String, Box<MapState>>,
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
    /// Hosts, ports and sessions for single-path scans, with when they were read.
    path_ctx: Option<(Instant, Arc<lun_scan::PathContext>)>,
    /// The daemon's checker pool as last reported by its loop (`show status`).
    runner_stats: crate::checker::runner::RunnerStats,
    /// `[cluster]`: names decided by the hostsync registry (behind a lock so planning, which
    /// borrows the engine, can ask it).
    cluster: Option<std::sync::Mutex<crate::cluster::Cluster>>,
    /// The sweep thread's handle, when one runs (see [`crate::sweep`] and `engine/sweep.rs`).
    sweep: Option<crate::sweep::SweepLink>,
    /// Devices an event could not use yet, to read again (`retry.rs`).
    retries: retry::Retries,
    /// Daemon mode: applies run on the daemon's applier (see `engine/applier.rs`).
    applies: Option<applier::Applies>,
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
            backend: Arc::from(backend),
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
            retries: retry::Retries::default(),
            started: Instant::now(),
            busy: false,
            path_ctx: None,
            runner_stats: Default::default(),
            cluster,
            sweep: None,
            applies: None,
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

    fn path(&self, dev: &str) -> Option<&ScsiPath> {
        self.by_dev.get(dev).map(|&i| &self.paths[i])
    }

    fn path_at(&self, d: dm_tables::DevNo) -> Option<&ScsiPath> {
        self.by_devno.get(&d).map(|&i| &self.paths[i])
    }

    /// Running, not failed by its last check, and not read down by the sweep thread since.
    fn usable(&self, p: &ScsiPath) -> bool {
        p.is_running()
            && self.checks.get(&p.dev).is_none_or(|c| !c.state.is_failed())
            && !self.swept_down(&p.dev)
    }

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
    fn checker_name_of(&self, dev: &str) -> &str {
        if let Some(c) = &self.opts.checker_override {
            return c;
        }
        self.member
            .get(dev)
            .and_then(|w| self.maps.get(w))
            .and_then(|m| m.desired.as_ref())
            .map_or("tur", |d| d.settings.checker)
    }
}
