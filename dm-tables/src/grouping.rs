//! Path grouping policies (as multipath.conf's `path_grouping_policy`) as pure functions, and a
//! builder that turns groups into a [`MultipathTable`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::devno::DevNo;
use crate::error::Error;
use crate::table::{Feature, HwHandler, MultipathTable, PathGroup, Selector, TablePath};
use crate::words::{Words, word, words};

/// What a grouping policy knows about one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathInfo {
    pub devno: DevNo,
    /// Path priority from the prioritizer (ALUA: 50 optimized, 10 non-optimized, ...).
    /// Negative means unknown.
    pub priority: i32,
    /// ALUA target port group.
    pub tpg: Option<u16>,
    /// Target node name (FC WWNN, iSCSI target name...).
    pub node_name: Option<String>,
    /// Device serial number (VPD 0x80).
    pub serial: Option<String>,
    /// The path checker says the path works. Unusable paths are still placed in groups (the
    /// kernel fails them by message), but they do not count toward a group's priority.
    pub usable: bool,
}

/// A path group as a policy produced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSpec {
    /// Mean priority of the group's usable paths (rounded down); -1 when none is usable.
    pub priority: i32,
    pub paths: Vec<DevNo>,
}

/// The grouping policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupingPolicy {
    /// One path per group.
    Failover,
    /// All paths in one group.
    Multibus,
    /// One group per distinct priority.
    GroupByPrio,
    /// One group per serial number.
    GroupBySerial,
    /// One group per target node name.
    GroupByNodeName,
    /// One group per ALUA target port group.
    GroupByTpg,
}

impl GroupingPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupingPolicy::Failover => "failover",
            GroupingPolicy::Multibus => "multibus",
            GroupingPolicy::GroupByPrio => "group_by_prio",
            GroupingPolicy::GroupBySerial => "group_by_serial",
            GroupingPolicy::GroupByNodeName => "group_by_node_name",
            GroupingPolicy::GroupByTpg => "group_by_tpg",
        }
    }
}

impl fmt::Display for GroupingPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GroupingPolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "failover" => GroupingPolicy::Failover,
            "multibus" => GroupingPolicy::Multibus,
            "group_by_prio" => GroupingPolicy::GroupByPrio,
            "group_by_serial" => GroupingPolicy::GroupBySerial,
            "group_by_node_name" => GroupingPolicy::GroupByNodeName,
            "group_by_tpg" => GroupingPolicy::GroupByTpg,
            _ => {
                return Err(Error::InvalidValue {
                    value: s.to_string(),
                    expected: "a path grouping policy (failover, multibus, group_by_prio, group_by_serial, \
                               group_by_node_name, group_by_tpg)"
                        .to_string(),
                });
            }
        })
    }
}

/// Groups `paths` by `policy`. Paths keep their input order inside a group; groups are ordered
/// by priority, highest first, ties by their first device number (ascending). Paths whose key
/// (serial, node name, tpg) is unknown get a group of their own each, as nothing says they share
/// a controller.
pub fn group_paths(policy: GroupingPolicy, paths: &[PathInfo]) -> Vec<GroupSpec> {
    let groups: Vec<Vec<&PathInfo>> = match policy {
        GroupingPolicy::Failover => paths.iter().map(|p| vec![p]).collect(),
        GroupingPolicy::Multibus => {
            if paths.is_empty() {
                Vec::new()
            } else {
                vec![paths.iter().collect()]
            }
        }
        GroupingPolicy::GroupByPrio => by_key(paths, |p| Some(p.priority)),
        GroupingPolicy::GroupBySerial => by_key(paths, |p| p.serial.clone()),
        GroupingPolicy::GroupByNodeName => by_key(paths, |p| p.node_name.clone()),
        GroupingPolicy::GroupByTpg => by_key(paths, |p| p.tpg),
    };
    let mut specs: Vec<GroupSpec> = groups
        .into_iter()
        .map(|g| GroupSpec {
            priority: group_priority(&g),
            paths: g.iter().map(|p| p.devno).collect(),
        })
        .collect();
    specs.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then_with(|| a.paths.first().cmp(&b.paths.first()))
    });
    specs
}

fn group_priority(g: &[&PathInfo]) -> i32 {
    let usable: Vec<i64> = g
        .iter()
        .filter(|p| p.usable && p.priority >= 0)
        .map(|p| i64::from(p.priority))
        .collect();
    if usable.is_empty() {
        return -1;
    }
    let mean = usable.iter().sum::<i64>() / usable.len() as i64;
    i32::try_from(mean).unwrap_or(i32::MAX)
}

fn by_key<K: PartialEq>(
    paths: &[PathInfo],
    key: impl Fn(&PathInfo) -> Option<K>,
) -> Vec<Vec<&PathInfo>> {
    let mut groups: Vec<(Option<K>, Vec<&PathInfo>)> = Vec::new();
    for p in paths {
        match key(p) {
            Some(k) => match groups.iter_mut().find(|(gk, _)| gk.as_ref() == Some(&k)) {
                Some((_, g)) => g.push(p),
                None => groups.push((Some(k), vec![p])),
            },
            None => groups.push((None, vec![p])),
        }
    }
    groups.into_iter().map(|(_, g)| g).collect()
}

/// Builds a table from groups. Defaults: no features, no hardware handler, `service-time 0`,
/// per-path args as the kernel prints them for the selector (so the loaded table reads back
/// identical), initial group 1 (0 when there are no groups).
#[derive(Debug, Clone)]
pub struct TableBuilder {
    length: u64,
    features: Vec<Feature>,
    hw_handler: Option<HwHandler>,
    selector: Selector,
    selector_args: Words,
    path_args: Option<Words>,
    groups: Vec<Vec<DevNo>>,
}

impl TableBuilder {
    /// A table of `length` sectors (the LUN size in 512-byte sectors).
    pub fn new(length: u64) -> Self {
        TableBuilder {
            length,
            features: Vec::new(),
            hw_handler: None,
            selector: Selector::ServiceTime,
            selector_args: Words::default(),
            path_args: None,
            groups: Vec::new(),
        }
    }

    pub fn feature(mut self, f: Feature) -> Self {
        if !self.features.contains(&f) {
            self.features.push(f);
        }
        self
    }

    pub fn features(mut self, fs: impl IntoIterator<Item = Feature>) -> Self {
        for f in fs {
            self = self.feature(f);
        }
        self
    }

    pub fn hw_handler(mut self, name: &str, args: &[&str]) -> Self {
        self.hw_handler = Some(HwHandler {
            name: word(name),
            args: words(args),
        });
        self
    }

    pub fn selector(mut self, selector: Selector, selector_args: &[&str]) -> Self {
        self.selector = selector;
        self.selector_args = words(selector_args);
        self
    }

    /// Per-path selector args (defaults to [`Selector::default_path_args`]).
    pub fn path_args(mut self, args: &[&str]) -> Self {
        self.path_args = Some(words(args));
        self
    }

    /// Adds groups in order (typically the output of [`group_paths`]).
    pub fn groups(mut self, groups: &[GroupSpec]) -> Self {
        self.groups.extend(
            groups
                .iter()
                .filter(|g| !g.paths.is_empty())
                .map(|g| g.paths.clone()),
        );
        self
    }

    pub fn group(mut self, paths: &[DevNo]) -> Self {
        if !paths.is_empty() {
            self.groups.push(paths.to_vec());
        }
        self
    }

    pub fn build(self) -> MultipathTable {
        let path_args = self
            .path_args
            .unwrap_or_else(|| self.selector.default_path_args());
        let groups: Vec<PathGroup> = self
            .groups
            .into_iter()
            .map(|g| PathGroup {
                selector: self.selector.clone(),
                selector_args: self.selector_args.clone(),
                paths: g
                    .into_iter()
                    .map(|devno| TablePath {
                        devno,
                        args: path_args.clone(),
                    })
                    .collect(),
            })
            .collect();
        MultipathTable {
            start: 0,
            length: self.length,
            features: self.features,
            hw_handler: self.hw_handler,
            initial_group: u32::from(!groups.is_empty()),
            groups,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(
        minor: u32,
        priority: i32,
        tpg: Option<u16>,
        node: Option<&str>,
        serial: Option<&str>,
        usable: bool,
    ) -> PathInfo {
        PathInfo {
            devno: DevNo::new(8, minor),
            priority,
            tpg,
            node_name: node.map(str::to_string),
            serial: serial.map(str::to_string),
            usable,
        }
    }

    fn d(minor: u32) -> DevNo {
        DevNo::new(8, minor)
    }

    fn paths() -> Vec<PathInfo> {
        vec![
            p(32, 10, Some(2), Some("nodeB"), Some("S2"), true),
            p(0, 50, Some(1), Some("nodeA"), Some("S1"), true),
            p(48, 10, Some(2), Some("nodeB"), Some("S2"), true),
            p(16, 50, Some(1), Some("nodeA"), Some("S1"), true),
        ]
    }

    #[test]
    fn failover_one_path_per_group_by_priority_then_devno() {
        let g = group_paths(GroupingPolicy::Failover, &paths());
        let order: Vec<_> = g.iter().map(|g| (g.priority, g.paths.clone())).collect();
        assert_eq!(
            order,
            vec![
                (50, vec![d(0)]),
                (50, vec![d(16)]),
                (10, vec![d(32)]),
                (10, vec![d(48)])
            ]
        );
    }

    #[test]
    fn multibus_single_group_with_mean_priority() {
        let g = group_paths(GroupingPolicy::Multibus, &paths());
        assert_eq!(
            g,
            vec![GroupSpec {
                priority: 30,
                paths: vec![d(32), d(0), d(48), d(16)]
            }]
        );
        assert!(group_paths(GroupingPolicy::Multibus, &[]).is_empty());
    }

    #[test]
    fn group_by_prio_tpg_node_serial_agree_on_alua_layout() {
        for pol in [
            GroupingPolicy::GroupByPrio,
            GroupingPolicy::GroupByTpg,
            GroupingPolicy::GroupByNodeName,
            GroupingPolicy::GroupBySerial,
        ] {
            let g = group_paths(pol, &paths());
            assert_eq!(
                g,
                vec![
                    GroupSpec {
                        priority: 50,
                        paths: vec![d(0), d(16)]
                    },
                    GroupSpec {
                        priority: 10,
                        paths: vec![d(32), d(48)]
                    }
                ],
                "{pol}"
            );
        }
    }

    #[test]
    fn unusable_paths_do_not_count_and_all_failed_group_sinks() {
        let mut ps = paths();
        ps[1].usable = false; // 8:0, prio 50
        ps[3].usable = false; // 8:16, prio 50
        let g = group_paths(GroupingPolicy::GroupByPrio, &ps);
        assert_eq!(
            g[0],
            GroupSpec {
                priority: 10,
                paths: vec![d(32), d(48)]
            }
        );
        assert_eq!(
            g[1],
            GroupSpec {
                priority: -1,
                paths: vec![d(0), d(16)]
            }
        );
        ps[3].usable = true;
        let g = group_paths(GroupingPolicy::Multibus, &ps);
        assert_eq!(g[0].priority, (10 + 10 + 50) / 3);
    }

    #[test]
    fn unknown_keys_get_their_own_groups() {
        let ps = vec![
            p(0, 1, None, None, None, true),
            p(16, 1, None, None, None, true),
            p(32, 1, Some(3), Some("n"), Some("s"), true),
        ];
        for pol in [
            GroupingPolicy::GroupByTpg,
            GroupingPolicy::GroupByNodeName,
            GroupingPolicy::GroupBySerial,
        ] {
            let g = group_paths(pol, &ps);
            assert_eq!(g.len(), 3, "{pol}");
            assert_eq!(g[0].paths, vec![d(0)]);
        }
    }

    #[test]
    fn policy_names() {
        for pol in [
            GroupingPolicy::Failover,
            GroupingPolicy::Multibus,
            GroupingPolicy::GroupByPrio,
            GroupingPolicy::GroupBySerial,
            GroupingPolicy::GroupByNodeName,
            GroupingPolicy::GroupByTpg,
        ] {
            assert_eq!(pol.to_string().parse::<GroupingPolicy>().unwrap(), pol);
        }
        assert!("group_by_magic".parse::<GroupingPolicy>().is_err());
    }

    #[test]
    fn builder_reproduces_the_kernel_fixture_table() {
        // mpatha in fixtures/ref-sd2x2-tcmloop2/table.txt
        let g = group_paths(
            GroupingPolicy::GroupByPrio,
            &[
                p(0, 50, Some(1), None, None, true),
                p(32, 10, Some(2), None, None, true),
            ],
        );
        let t = TableBuilder::new(16384)
            .hw_handler("alua", &[])
            .groups(&g)
            .build();
        assert_eq!(
            t.to_string(),
            "0 16384 multipath 0 1 alua 2 1 service-time 0 1 2 8:0 1 1 service-time 0 1 2 8:32 1 1"
        );
        let t = TableBuilder::new(32768)
            .feature(Feature::QueueIfNoPath)
            .feature(Feature::QueueIfNoPath)
            .selector(Selector::RoundRobin, &[])
            .group(&[d(16), d(32)])
            .build();
        assert_eq!(
            t.to_string(),
            "0 32768 multipath 1 queue_if_no_path 0 1 1 round-robin 0 2 1 8:16 1 8:32 1"
        );
        let empty = TableBuilder::new(8).group(&[]).build();
        assert_eq!(empty.to_string(), "0 8 multipath 0 0 0 0");
    }
}
