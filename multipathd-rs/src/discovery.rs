//! Discovery to maps, as pure functions: scanned paths -> filter (blacklist, missing WWID,
//! `find_multipaths`) -> group by WWID -> effective settings ([`Config::resolve`]) ->
//! priorities -> grouping policy -> desired table. Deciding what to do with each desired map
//! against the maps that exist (create / reload / rename / nothing) is [`plan_map`]; naming
//! and applying live in [`crate::engine`].
//!
//! Nothing here touches the kernel or the alias files, so every step is tested on generated
//! trees and the reference fixture.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use dm_tables::{DevNo, Feature, MultipathTable, PathInfo, Selector, TableBuilder};
use lun_scan::{ScsiPath, Shared, Transport};
use serde::Serialize;

use crate::config::{
    Checker, Config, EffectiveSettings, Failback, Layer, NoPathRetry, PathIdentity, Prio,
};

/// ALUA priorities, as multipath-tools' `alua` prioritizer assigns them.
pub const PRIO_OPTIMIZED: i32 = 50;
pub const PRIO_NON_OPTIMIZED: i32 = 10;
pub const PRIO_STANDBY: i32 = 1;
pub const PRIO_UNAVAILABLE: i32 = 0;
/// Priority when the prioritizer has no answer (no ALUA state on an `alua` path).
pub const PRIO_UNDEF: i32 = -1;

/// The device number of a scanned path, as dm-tables spells it.
pub fn dm_devno(d: lun_scan::DevNo) -> DevNo {
    DevNo::new(d.major, d.minor)
}

/// multipath-tools' protocol string for a path (`scsi:fcp`, `scsi:iscsi`, ...), as the
/// blacklist's `protocol` rules match it.
pub fn protocol_of(t: Transport) -> &'static str {
    match t {
        Transport::Fc => "scsi:fcp",
        Transport::Iscsi => "scsi:iscsi",
        Transport::Sas => "scsi:sas",
        Transport::Other => "scsi:unspec",
    }
}

/// The identity the configuration matches a path with.
pub fn identity_of(p: &ScsiPath) -> PathIdentity {
    PathIdentity {
        devnode: p.dev.clone(),
        wwid: p.wwid.clone(),
        vendor: p.vendor.to_string(),
        product: p.model.to_string(),
        protocol: Some(protocol_of(p.transport).to_string()),
    }
}

/// The `alua` prioritizer: priority from the sysfs `access_state`.
pub fn alua_priority(access_state: Option<&str>) -> i32 {
    let Some(s) = access_state else {
        return PRIO_UNDEF;
    };
    match s.trim() {
        "active/optimized" => PRIO_OPTIMIZED,
        "active/non-optimized" => PRIO_NON_OPTIMIZED,
        "standby" => PRIO_STANDBY,
        "unavailable" | "offline" | "transitioning" => PRIO_UNAVAILABLE,
        // lba-dependent and anything newer: usable, but nothing says it is preferred.
        _ => PRIO_STANDBY,
    }
}

/// The prioritizer that applies to a path: the configured one, except that with
/// `detect_prio` a path reporting an ALUA state gets `alua` when no device, override or
/// multipaths entry chose the prioritizer explicitly (multipath-tools' detect_prio).
pub fn effective_prio(settings: &EffectiveSettings, detect_prio: bool, p: &ScsiPath) -> Prio {
    let explicit = matches!(
        settings.prio.from.layer,
        Layer::Multipath | Layer::Overrides | Layer::Device | Layer::BuiltinDevice
    );
    if detect_prio && !explicit && p.access_state.is_some() {
        Prio::Alua
    } else {
        settings.prio.value
    }
}

/// A path's priority under a prioritizer.
pub fn path_priority(prio: Prio, p: &ScsiPath) -> i32 {
    match prio {
        Prio::Alua => alua_priority(p.access_state.as_deref()),
        Prio::Const => 1,
    }
}

/// Why a path is not part of any map.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ignored {
    pub dev: String,
    pub wwid: Option<String>,
    pub reason: String,
}

/// The outcome of filtering: accepted paths by WWID (scan order kept), the rest with reasons.
#[derive(Debug, Clone, Default)]
pub struct Filtered<'a> {
    pub by_wwid: BTreeMap<String, Vec<&'a ScsiPath>>,
    pub ignored: Vec<Ignored>,
}

/// Filters scanned paths: paths without a device number or WWID, blacklisted paths (with
/// the rule that matched), and WWIDs `find_multipaths` says are not multipath devices.
/// `known` holds WWIDs that count as known for `find_multipaths` (existing maps, bindings);
/// `multipaths` entries of the configuration count too.
pub fn filter_paths<'a>(
    cfg: &Config,
    paths: &'a [ScsiPath],
    known: &dyn Fn(&str) -> bool,
) -> Filtered<'a> {
    let blacklist = cfg.blacklist();
    let find = cfg.global().find_multipaths.value;
    let mut out = Filtered::default();
    for p in paths {
        if p.devno.is_none() {
            out.ignored.push(Ignored {
                dev: p.dev.clone(),
                wwid: p.wwid.clone(),
                reason: "its device number could not be read".into(),
            });
            continue;
        }
        let verdict = blacklist.verdict(&identity_of(p));
        if verdict.is_blacklisted() {
            out.ignored.push(Ignored {
                dev: p.dev.clone(),
                wwid: p.wwid.clone(),
                reason: verdict.to_string(),
            });
            continue;
        }
        match &p.wwid {
            Some(w) if !w.is_empty() => out.by_wwid.entry(w.clone()).or_default().push(p),
            _ => out.ignored.push(Ignored {
                dev: p.dev.clone(),
                wwid: None,
                reason: "it has no WWID (no usable VPD page 0x83 or 0x80)".into(),
            }),
        }
    }
    out.by_wwid.retain(|wwid, ps| {
        let is_known = cfg.multipath_entry(wwid).is_some() || known(wwid);
        let keep = find.should_multipath(ps.len(), is_known);
        if !keep {
            for p in ps.iter() {
                out.ignored.push(Ignored {
                    dev: p.dev.clone(),
                    wwid: Some(wwid.clone()),
                    reason: format!(
                        "find_multipaths {}: WWID {wwid} has {} path(s) and is not known",
                        find.as_str(),
                        ps.len()
                    ),
                });
            }
        }
        keep
    });
    out
}

/// The per-map settings the table and the failover logic use, flattened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MapSettings {
    pub policy: &'static str,
    pub selector: String,
    pub features: Vec<String>,
    pub hardware_handler: String,
    #[serde(serialize_with = "ser_display")]
    pub no_path_retry: NoPathRetry,
    #[serde(serialize_with = "ser_display")]
    pub failback: Failback,
    pub checker: &'static str,
    pub prio: &'static str,
    /// The alias a `[[multipaths]]` entry demands.
    pub alias: Option<String>,
}

fn ser_display<T: std::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// One path of a desired map.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberPath {
    pub dev: String,
    pub devno: DevNo,
    pub hctl: String,
    pub host: Shared,
    pub priority: i32,
    pub access_state: Option<Shared>,
    pub state: Shared,
    pub usable: bool,
}

/// One path group of a desired map.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberGroup {
    pub priority: i32,
    pub paths: Vec<MemberPath>,
}

/// What a WWID's map should look like.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DesiredMap {
    pub wwid: String,
    pub uuid: String,
    pub vendor: String,
    pub product: String,
    pub revision: String,
    pub size_sectors: u64,
    pub settings: MapSettings,
    pub groups: Vec<MemberGroup>,
    #[serde(skip)]
    pub table: MultipathTable,
}

impl DesiredMap {
    pub fn paths(&self) -> impl Iterator<Item = &MemberPath> {
        self.groups.iter().flat_map(|g| g.paths.iter())
    }
}

fn checker_name(c: Checker) -> &'static str {
    c.as_str()
}

/// Parses dm feature words (`queue_if_no_path`, `pg_init_retries 50`, ...) into features.
pub fn parse_features(words: &[String]) -> Result<Vec<Feature>, String> {
    let mut out = Vec::new();
    let mut it = words.iter();
    while let Some(w) = it.next() {
        let mut num = |name: &str| -> Result<u32, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("feature {name} needs a number"))
        };
        let f = match w.as_str() {
            "queue_if_no_path" => Feature::QueueIfNoPath,
            "retain_attached_hw_handler" => Feature::RetainAttachedHwHandler,
            "pg_init_retries" => Feature::PgInitRetries(num("pg_init_retries")?),
            "pg_init_delay_msecs" => Feature::PgInitDelayMsecs(num("pg_init_delay_msecs")?),
            "queue_mode" => {
                let m = it.next().ok_or("feature queue_mode needs a mode")?;
                Feature::QueueMode(match m.as_str() {
                    "bio" => dm_tables::QueueMode::Bio,
                    "rq" => dm_tables::QueueMode::Rq,
                    "mq" => dm_tables::QueueMode::Mq,
                    "nvme" => dm_tables::QueueMode::Nvme,
                    other => return Err(format!("queue_mode {other} is not bio, rq, mq or nvme")),
                })
            }
            other => return Err(format!("unknown multipath feature {other:?}")),
        };
        out.push(f);
    }
    Ok(out)
}

/// Parses `hardware_handler` (`"0"`, `"1 alua"`, `"2 emc 1"`) into name and args.
pub fn parse_hwhandler(s: &str) -> Result<Option<(String, Vec<String>)>, String> {
    let mut w = s.split_whitespace();
    let n: usize = w
        .next()
        .unwrap_or("0")
        .parse()
        .map_err(|_| format!("hardware_handler {s:?} does not start with a count"))?;
    if n == 0 {
        return Ok(None);
    }
    let name = w
        .next()
        .ok_or_else(|| format!("hardware_handler {s:?} has no handler name"))?;
    Ok(Some((name.to_string(), w.map(str::to_string).collect())))
}

/// Parses `path_selector` (`"service-time 0"`: name, argument count, arguments).
pub fn parse_selector(s: &str) -> Result<(Selector, Vec<String>), String> {
    let mut w = s.split_whitespace();
    let name = w
        .next()
        .ok_or_else(|| "path_selector is empty".to_string())?;
    let rest: Vec<String> = w.map(str::to_string).collect();
    let args = match rest.split_first() {
        None => Vec::new(),
        Some((count, args)) => {
            let n: usize = count
                .parse()
                .map_err(|_| format!("path_selector {s:?}: {count:?} is not an argument count"))?;
            if n != args.len() {
                return Err(format!(
                    "path_selector {s:?} announces {n} argument(s) but has {}",
                    args.len()
                ));
            }
            args.to_vec()
        }
    };
    Ok((Selector::from_name(name), args))
}

/// Builds the desired map of one WWID from its paths (scan order). `usable` says whether a
/// path counts as working (device running and, once checked, not failed by the checker).
pub fn desired_map(
    cfg: &Config,
    detect_prio: bool,
    wwid: &str,
    paths: &[&ScsiPath],
    usable: &dyn Fn(&ScsiPath) -> bool,
) -> Result<DesiredMap, String> {
    let first = paths
        .first()
        .ok_or_else(|| format!("WWID {wwid} has no paths"))?;
    let res = cfg.resolve(&identity_of(first));
    let s = &res.settings;
    let (selector, sel_args) = parse_selector(&s.path_selector.value)?;
    let features = s.table_features();
    let feats = parse_features(&features)?;
    let hw = parse_hwhandler(&s.hardware_handler.value)?;
    let size_sectors = paths
        .iter()
        .filter_map(|p| p.size_bytes)
        .map(|b| b / 512)
        .min()
        .unwrap_or(0);
    if size_sectors == 0 {
        return Err(format!(
            "WWID {wwid}: no path reports a size, so the map cannot be built"
        ));
    }
    let mut members = Vec::with_capacity(paths.len());
    let mut infos = Vec::with_capacity(paths.len());
    for p in paths {
        let Some(devno) = p.devno.map(dm_devno) else {
            continue;
        };
        let prio = effective_prio(s, detect_prio, p);
        let priority = path_priority(prio, p);
        let ok = usable(p);
        infos.push(PathInfo {
            devno,
            priority,
            tpg: p.target_port_group,
            node_name: p.target_node_name.as_deref().map(str::to_string),
            serial: p.serial.clone(),
            usable: ok,
        });
        members.push(MemberPath {
            dev: p.dev.clone(),
            devno,
            hctl: p.hctl.to_string(),
            host: p.host.clone(),
            priority,
            access_state: p.access_state.clone(),
            state: p.state.clone(),
            usable: ok,
        });
    }
    let specs = dm_tables::group_paths(s.path_grouping_policy.value, &infos);
    let sel_refs: Vec<&str> = sel_args.iter().map(String::as_str).collect();
    let mut b = TableBuilder::new(size_sectors)
        .features(feats)
        .selector(selector, &sel_refs)
        .groups(&specs);
    if let Some((name, args)) = &hw {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        b = b.hw_handler(name, &a);
    }
    let table = b.build();
    let by_devno: BTreeMap<DevNo, &MemberPath> = members.iter().map(|m| (m.devno, m)).collect();
    let groups = specs
        .iter()
        .map(|g| MemberGroup {
            priority: g.priority,
            // Exact capacity: a filtered collect starts at four slots, which at two paths
            // per LUN (one path per group) was three wasted members per group.
            paths: {
                let mut v = Vec::with_capacity(g.paths.len());
                v.extend(
                    g.paths
                        .iter()
                        .filter_map(|d| by_devno.get(d).map(|m| (*m).clone())),
                );
                v
            },
        })
        .collect();
    Ok(DesiredMap {
        wwid: wwid.to_string(),
        uuid: dm_tables::uuid_for_wwid(wwid),
        vendor: first.vendor.to_string(),
        product: first.model.to_string(),
        revision: first.rev.to_string(),
        size_sectors,
        settings: MapSettings {
            policy: s.path_grouping_policy.value.as_str(),
            selector: s.path_selector.value.clone(),
            features,
            hardware_handler: s.hardware_handler.value.clone(),
            no_path_retry: s.no_path_retry.value,
            failback: s.failback.value,
            checker: checker_name(s.checker.value),
            prio: effective_prio(s, detect_prio, first).as_str(),
            alias: s.alias.as_ref().map(|a| a.value.clone()),
        },
        groups,
        table,
    })
}

/// What to do with one map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The map does not exist: create it.
    Create,
    /// The map exists and its table differs: load the new one.
    Reload,
    /// The map exists with the right table under another name.
    Rename,
    /// Both.
    RenameReload,
    /// The map exists and matches: adopt it as it is.
    Keep,
    /// The change was refused (see the error); the map stays as it is.
    Refused,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Reload => "reload",
            Action::Rename => "rename",
            Action::RenameReload => "rename+reload",
            Action::Keep => "keep",
            Action::Refused => "refused",
        }
    }

    pub fn reloads(self) -> bool {
        matches!(self, Action::Reload | Action::RenameReload)
    }
}

/// An existing map, as the backend reports it.
#[derive(Debug, Clone)]
pub struct ExistingMap {
    pub name: String,
    pub table: MultipathTable,
    pub status: Option<dm_tables::MultipathStatus>,
}

/// The decision for one map.
#[derive(Debug, Clone, Serialize)]
pub struct MapPlan {
    pub name: String,
    /// The map's name now, when it exists.
    pub current_name: Option<String>,
    pub action: Action,
    /// What differs (dm-tables' plan), as sentences.
    pub changes: Vec<String>,
    /// Messages that apply changes without a reload (queue_if_no_path on/off).
    #[serde(skip)]
    pub messages: Vec<dm_tables::Message>,
    pub error: Option<String>,
    #[serde(flatten)]
    pub desired: SharedDesired,
}

/// A desired map shared by its plan (and the sync report that carries the plan) and the
/// engine's map state, so a sync holds one copy of every desired map instead of two (at
/// 32k paths the second copy was a sixth of a cold start's peak memory). Reads as the map
/// itself (`Deref`) and serializes as the map itself.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedDesired(pub Arc<DesiredMap>);

impl std::ops::Deref for SharedDesired {
    type Target = DesiredMap;
    fn deref(&self) -> &DesiredMap {
        &self.0
    }
}

impl From<DesiredMap> for SharedDesired {
    fn from(d: DesiredMap) -> Self {
        SharedDesired(Arc::new(d))
    }
}

impl Serialize for SharedDesired {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.as_ref().serialize(s)
    }
}

/// Decides what to do with one desired map given the map with its uuid (if any) and the name
/// it should have. An existing map keeps its name unless `demanded_name` (the config's
/// alias) says otherwise.
pub fn plan_map(
    desired: DesiredMap,
    existing: Option<&ExistingMap>,
    new_name: &str,
    demanded_name: Option<&str>,
) -> MapPlan {
    let Some(ex) = existing else {
        return MapPlan {
            name: new_name.to_string(),
            current_name: None,
            action: Action::Create,
            changes: Vec::new(),
            messages: Vec::new(),
            error: None,
            desired: desired.into(),
        };
    };
    let name = match demanded_name {
        Some(d) if d != ex.name => d.to_string(),
        _ => ex.name.clone(),
    };
    let rename = name != ex.name;
    match dm_tables::plan(&ex.name, &ex.table, ex.status.as_ref(), &desired.table) {
        Ok(p) => {
            let action = match (rename, p.needs_reload) {
                (true, true) => Action::RenameReload,
                (true, false) => Action::Rename,
                (false, true) => Action::Reload,
                (false, false) => Action::Keep,
            };
            MapPlan {
                name,
                current_name: Some(ex.name.clone()),
                action,
                changes: p.changes.iter().map(ToString::to_string).collect(),
                messages: p.messages,
                error: None,
                desired: desired.into(),
            }
        }
        Err(e) => MapPlan {
            name: ex.name.clone(),
            current_name: Some(ex.name.clone()),
            action: Action::Refused,
            changes: Vec::new(),
            messages: Vec::new(),
            error: Some(e.to_string()),
            desired: desired.into(),
        },
    }
}

/// Known-WWID helper for [`filter_paths`] from a set.
pub fn known_in(set: &HashSet<String>) -> impl Fn(&str) -> bool + '_ {
    move |w| set.contains(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn path(dev: &str, devno: (u32, u32), wwid: &str, access: Option<&str>) -> ScsiPath {
        let mut p = ScsiPath::new(lun_scan::Hctl::new(0, 0, 0, 0), dev);
        p.devno = Some(lun_scan::DevNo::new(devno.0, devno.1));
        p.wwid = Some(wwid.into());
        p.vendor = "NETAPP".into();
        p.model = "LUN C-Mode".into();
        p.state = "running".into();
        p.size_bytes = Some(1 << 30);
        p.access_state = access.map(Into::into);
        p.transport = Transport::Fc;
        p
    }

    #[test]
    fn alua_priorities_follow_the_access_state() {
        assert_eq!(alua_priority(Some("active/optimized")), 50);
        assert_eq!(alua_priority(Some("active/non-optimized")), 10);
        assert_eq!(alua_priority(Some("standby")), 1);
        assert_eq!(alua_priority(Some("unavailable")), 0);
        assert_eq!(alua_priority(Some("offline")), 0);
        assert_eq!(alua_priority(None), PRIO_UNDEF);
    }

    #[test]
    fn selector_hwhandler_and_features_parse() {
        assert_eq!(
            parse_selector("service-time 0").unwrap(),
            (Selector::ServiceTime, vec![])
        );
        assert!(parse_selector("round-robin 2 x").is_err());
        assert_eq!(
            parse_hwhandler("1 alua").unwrap(),
            Some(("alua".into(), vec![]))
        );
        assert_eq!(parse_hwhandler("0").unwrap(), None);
        let f = parse_features(&[
            "queue_if_no_path".into(),
            "pg_init_retries".into(),
            "50".into(),
        ])
        .unwrap();
        assert_eq!(f, vec![Feature::QueueIfNoPath, Feature::PgInitRetries(50)]);
        assert!(parse_features(&["bogus".into()]).is_err());
    }

    #[test]
    fn netapp_paths_are_grouped_by_priority_with_the_hwtable_settings() {
        let cfg = Config::builtin();
        let ps = [
            path("sda", (8, 0), "3600a0980", Some("active/optimized")),
            path("sdb", (8, 16), "3600a0980", Some("active/non-optimized")),
            path("sdc", (8, 32), "3600a0980", Some("active/optimized")),
            path("sdd", (8, 48), "3600a0980", Some("active/non-optimized")),
        ];
        let refs: Vec<&ScsiPath> = ps.iter().collect();
        let d = desired_map(&cfg, true, "3600a0980", &refs, &|_| true).unwrap();
        assert_eq!(d.settings.policy, "group_by_prio");
        assert_eq!(d.groups.len(), 2);
        assert_eq!(d.groups[0].priority, 50);
        let devs: Vec<&str> = d.groups[0].paths.iter().map(|p| p.dev.as_str()).collect();
        assert_eq!(devs, ["sda", "sdc"]);
        assert_eq!(d.table.length, (1 << 30) / 512);
        assert!(
            d.table.has_feature(&Feature::QueueIfNoPath),
            "NetApp queues"
        );
        assert_eq!(
            d.table.hw_handler.as_ref().map(|h| h.name.as_ref()),
            Some("alua")
        );
    }

    #[test]
    fn filtering_drops_blacklisted_wwidless_and_single_path_wwids() {
        let cfg = Config::parse_str(
            "[blacklist]\nwwid = [\"^3bad\"]\n",
            Path::new("/t/config.toml"),
        )
        .unwrap();
        let mut nowwid = path("sde", (8, 64), "x", None);
        nowwid.wwid = None;
        let ps = vec![
            path("sda", (8, 0), "3good", None),
            path("sdb", (8, 16), "3good", None),
            path("sdc", (8, 32), "3bad1", None),
            path("sdd", (8, 48), "3bad1", None),
            path("sdf", (8, 80), "3single", None),
            path("sdg", (8, 96), "3known", None),
            nowwid,
        ];
        let known: HashSet<String> = ["3known".to_string()].into();
        let f = filter_paths(&cfg, &ps, &known_in(&known));
        assert_eq!(
            f.by_wwid.keys().collect::<Vec<_>>(),
            ["3good", "3known"],
            "{:?}",
            f.ignored
        );
        let why = |d: &str| {
            f.ignored
                .iter()
                .find(|i| i.dev == d)
                .unwrap()
                .reason
                .clone()
        };
        assert!(why("sdc").contains("blacklisted"), "{}", why("sdc"));
        assert!(why("sde").contains("no WWID"));
        assert!(why("sdf").contains("find_multipaths"));
    }

    #[test]
    fn an_identical_existing_map_is_kept_and_a_changed_one_reloaded() {
        let cfg = Config::builtin();
        let ps = [
            path("sda", (8, 0), "3w", Some("active/optimized")),
            path("sdb", (8, 16), "3w", Some("active/non-optimized")),
        ];
        let refs: Vec<&ScsiPath> = ps.iter().collect();
        let d = desired_map(&cfg, true, "3w", &refs, &|_| true).unwrap();
        let ex = ExistingMap {
            name: "mpatha".into(),
            table: d.table.clone(),
            status: None,
        };
        let p = plan_map(d.clone(), Some(&ex), "mpathz", None);
        assert_eq!(p.action, Action::Keep);
        assert_eq!(p.name, "mpatha", "an adopted map keeps its name");
        let p = plan_map(d.clone(), Some(&ex), "mpathz", Some("db01"));
        assert_eq!(p.action, Action::Rename);
        assert_eq!(p.name, "db01");
        // drop sdb from the desired map: reload
        let d1 = desired_map(&cfg, true, "3w", &refs[..1], &|_| true).unwrap();
        let p = plan_map(d1, Some(&ex), "mpatha", None);
        assert_eq!(p.action, Action::Reload);
        // a desired map keeping none of the active paths is refused
        let other = [path("sdc", (8, 32), "3w", Some("active/optimized"))];
        let orefs: Vec<&ScsiPath> = other.iter().collect();
        let d2 = desired_map(&cfg, true, "3w", &orefs, &|_| true).unwrap();
        let p = plan_map(d2, Some(&ex), "mpatha", None);
        assert_eq!(p.action, Action::Refused);
        assert!(p.error.unwrap().contains("refusing"));
    }
}
