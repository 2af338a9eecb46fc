//! Reload planning: what changes between the loaded table and a desired one, whether a reload
//! is needed, and refusal of a reload that would drop every path that works now.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::devno::DevNo;
use crate::error::{Error, Result};
use crate::message::Message;
use crate::status::{MultipathStatus, PathState};
use crate::table::{Feature, MultipathTable, QueueMode, Selector};
use crate::words::Word;

/// One difference between the loaded and the desired table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "change")]
pub enum Change {
    SizeChanged {
        old: u64,
        new: u64,
    },
    PathAdded {
        devno: DevNo,
    },
    PathRemoved {
        devno: DevNo,
    },
    /// The partition of paths into groups, or the order of groups, differs (policy change,
    /// priority change, added or removed paths).
    GroupsChanged {
        old: Vec<Vec<DevNo>>,
        new: Vec<Vec<DevNo>>,
    },
    /// Selector (with its args) of a group at the same position differs.
    SelectorChanged {
        group: usize,
        old: String,
        new: String,
    },
    /// Per-path selector args differ (after normalisation).
    PathArgsChanged {
        devno: DevNo,
        old: Vec<String>,
        new: Vec<String>,
    },
    /// Features other than queue_if_no_path differ.
    FeaturesChanged {
        old: Vec<Feature>,
        new: Vec<Feature>,
    },
    /// Only the queue_if_no_path state differs: a message does it, no reload needed.
    QueueIfNoPathChanged {
        queue_if_no_path: bool,
    },
    HwHandlerChanged {
        old: Option<String>,
        new: Option<String>,
    },
}

impl Change {
    /// Whether this change can only be applied by loading a new table.
    pub fn needs_reload(&self) -> bool {
        !matches!(self, Change::QueueIfNoPathChanged { .. })
    }
}

fn groups_str(g: &[Vec<DevNo>]) -> String {
    g.iter()
        .map(|g| {
            format!(
                "[{}]",
                g.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn feats_str(f: &[Feature]) -> String {
    if f.is_empty() {
        return "none".into();
    }
    f.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::SizeChanged { old, new } => write!(f, "size: {old} -> {new} sectors"),
            Change::PathAdded { devno } => write!(f, "path added: {devno}"),
            Change::PathRemoved { devno } => write!(f, "path removed: {devno}"),
            Change::GroupsChanged { old, new } => {
                write!(f, "groups: {} -> {}", groups_str(old), groups_str(new))
            }
            Change::SelectorChanged { group, old, new } => {
                write!(f, "group {group} selector: {old} -> {new}")
            }
            Change::PathArgsChanged { devno, old, new } => {
                write!(
                    f,
                    "path {devno} selector args: '{}' -> '{}'",
                    old.join(" "),
                    new.join(" ")
                )
            }
            Change::FeaturesChanged { old, new } => {
                write!(f, "features: {} -> {}", feats_str(old), feats_str(new))
            }
            Change::QueueIfNoPathChanged { queue_if_no_path } => {
                write!(
                    f,
                    "queue_if_no_path: {} (by message, no reload)",
                    if *queue_if_no_path { "on" } else { "off" }
                )
            }
            Change::HwHandlerChanged { old, new } => write!(
                f,
                "hardware handler: {} -> {}",
                old.as_deref().unwrap_or("none"),
                new.as_deref().unwrap_or("none")
            ),
        }
    }
}

/// The result of [`plan`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub needs_reload: bool,
    pub paths_added: Vec<DevNo>,
    pub paths_removed: Vec<DevNo>,
    /// Messages that apply the changes that need no reload (queue_if_no_path).
    pub messages: Vec<Message>,
    /// Paths active now (per status; every loaded path if no status was given) that the
    /// desired table keeps.
    pub active_paths_kept: Vec<DevNo>,
}

impl Plan {
    pub fn is_noop(&self) -> bool {
        self.changes.is_empty()
    }
}

/// Features as the kernel prints them back: canonical order, defaults dropped, unknown ones
/// kept (sorted) at the end, queue_if_no_path split off.
fn normalise_features(f: &[Feature]) -> (bool, Vec<Feature>) {
    let qinp = f.contains(&Feature::QueueIfNoPath);
    let rank = |x: &Feature| match x {
        Feature::QueueIfNoPath => 0,
        Feature::PgInitRetries(_) => 1,
        Feature::PgInitDelayMsecs(_) => 2,
        Feature::RetainAttachedHwHandler => 3,
        Feature::QueueMode(_) => 4,
        Feature::Other(_) => 5,
    };
    let mut rest: Vec<Feature> = f
        .iter()
        .filter(|x| {
            !matches!(
                x,
                Feature::QueueIfNoPath
                    | Feature::PgInitRetries(0)
                    | Feature::QueueMode(QueueMode::Rq | QueueMode::Mq)
            )
        })
        .cloned()
        .collect();
    rest.sort_by(|a, b| {
        rank(a)
            .cmp(&rank(b))
            .then_with(|| a.to_string().cmp(&b.to_string()))
    });
    rest.dedup();
    (qinp, rest)
}

/// Per-path args as the kernel prints them: service-time given only a repeat count prints the
/// default relative throughput 1 after it.
fn normalise_path_args(sel: &Selector, args: &[Word]) -> Vec<Word> {
    let mut v = args.to_vec();
    if *sel == Selector::ServiceTime && v.len() == 1 {
        v.push("1".into());
    }
    v
}

fn selector_str(sel: &Selector, args: &[Word]) -> String {
    let mut s = format!("{sel} {}", args.len());
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s
}

/// Compares the loaded table (and, if known, its status) with the desired one.
///
/// Ignored on purpose: the initial group (the kernel prints the current group there) and the
/// hardware handler's args (the kernel never prints them); a desired table without a hardware
/// handler does not count as a change either, since the kernel keeps the handler attached to
/// the devices. Refuses with [`Error::WouldDropAllActivePaths`] when at least one path is active
/// now and the desired table keeps none of the active ones (without a status, every loaded path
/// counts as active).
pub fn plan(
    map: &str,
    current: &MultipathTable,
    status: Option<&MultipathStatus>,
    desired: &MultipathTable,
) -> Result<Plan> {
    let mut changes = Vec::new();
    let mut messages = Vec::new();
    if current.length != desired.length {
        changes.push(Change::SizeChanged {
            old: current.length,
            new: desired.length,
        });
    }
    let cur_paths: BTreeSet<DevNo> = current.devnos().into_iter().collect();
    let new_paths: BTreeSet<DevNo> = desired.devnos().into_iter().collect();
    let paths_added: Vec<DevNo> = desired
        .devnos()
        .into_iter()
        .filter(|d| !cur_paths.contains(d))
        .collect();
    let paths_removed: Vec<DevNo> = current
        .devnos()
        .into_iter()
        .filter(|d| !new_paths.contains(d))
        .collect();
    changes.extend(paths_added.iter().map(|&devno| Change::PathAdded { devno }));
    changes.extend(
        paths_removed
            .iter()
            .map(|&devno| Change::PathRemoved { devno }),
    );

    let shape = |t: &MultipathTable| -> Vec<Vec<DevNo>> {
        t.groups
            .iter()
            .map(|g| g.paths.iter().map(|p| p.devno).collect())
            .collect()
    };
    let (old_shape, new_shape) = (shape(current), shape(desired));
    if old_shape != new_shape {
        changes.push(Change::GroupsChanged {
            old: old_shape,
            new: new_shape,
        });
    }
    for (i, (og, ng)) in current.groups.iter().zip(&desired.groups).enumerate() {
        let (os, ns) = (
            selector_str(&og.selector, &og.selector_args),
            selector_str(&ng.selector, &ng.selector_args),
        );
        if os != ns {
            changes.push(Change::SelectorChanged {
                group: i + 1,
                old: os,
                new: ns,
            });
        }
    }
    for g in &desired.groups {
        for p in &g.paths {
            let Some((cg, cp)) = current.groups.iter().find_map(|cg| {
                cg.paths
                    .iter()
                    .find(|cp| cp.devno == p.devno)
                    .map(|cp| (cg, cp))
            }) else {
                continue;
            };
            let (old, new) = (
                normalise_path_args(&cg.selector, &cp.args),
                normalise_path_args(&g.selector, &p.args),
            );
            if old != new {
                changes.push(Change::PathArgsChanged {
                    devno: p.devno,
                    old: old.iter().map(ToString::to_string).collect(),
                    new: new.iter().map(ToString::to_string).collect(),
                });
            }
        }
    }
    let (old_q, old_f) = normalise_features(&current.features);
    let (new_q, new_f) = normalise_features(&desired.features);
    if old_f != new_f {
        changes.push(Change::FeaturesChanged {
            old: old_f,
            new: new_f,
        });
    }
    if old_q != new_q {
        changes.push(Change::QueueIfNoPathChanged {
            queue_if_no_path: new_q,
        });
        messages.push(if new_q {
            Message::QueueIfNoPath
        } else {
            Message::FailIfNoPath
        });
    }
    let (old_h, new_h) = (
        current.hw_handler.as_ref().map(|h| h.name.to_string()),
        desired.hw_handler.as_ref().map(|h| h.name.to_string()),
    );
    if new_h.is_some() && old_h != new_h {
        changes.push(Change::HwHandlerChanged {
            old: old_h,
            new: new_h,
        });
    }

    let active_now: Vec<DevNo> = match status {
        Some(s) => s
            .paths()
            .filter(|p| p.state == PathState::Active && cur_paths.contains(&p.devno))
            .map(|p| p.devno)
            .collect(),
        None => current.devnos(),
    };
    let active_paths_kept: Vec<DevNo> = active_now
        .iter()
        .copied()
        .filter(|d| new_paths.contains(d))
        .collect();
    if !active_now.is_empty() && active_paths_kept.is_empty() {
        return Err(Error::WouldDropAllActivePaths {
            map: map.to_string(),
            dropped: active_now,
        });
    }
    let needs_reload = changes.iter().any(Change::needs_reload);
    Ok(Plan {
        changes,
        needs_reload,
        paths_added,
        paths_removed,
        messages,
        active_paths_kept,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> MultipathTable {
        s.parse().unwrap()
    }

    const LOADED: &str =
        "0 16384 multipath 0 1 alua 2 1 service-time 0 1 2 8:0 1 1 service-time 0 1 2 8:32 1 1";

    #[test]
    fn identical_and_kernel_normalised_tables_need_nothing() {
        let p = plan("m", &t(LOADED), None, &t(LOADED)).unwrap();
        assert!(p.is_noop());
        assert!(!p.needs_reload);
        // what multipath-tools loaded (create.txt) vs what the kernel printed back (table.txt)
        let addmap =
            t("0 16384 multipath 0 1 alua 2 1 service-time 0 1 1 8:0 1 service-time 0 1 1 8:32 1");
        let p = plan("m", &t(LOADED), None, &addmap).unwrap();
        assert!(p.is_noop(), "{:?}", p.changes);
        // initial group and handler args are not compared; no handler wanted is no change
        let other =
            t("0 16384 multipath 0 0 2 2 service-time 0 1 2 8:0 1 1 service-time 0 1 2 8:32 1 1");
        assert!(plan("m", &t(LOADED), None, &other).unwrap().is_noop());
        // default features are dropped, order does not matter
        let a = t("0 8 multipath 4 queue_mode mq pg_init_retries 0 0 1 1 round-robin 0 1 1 8:0 1");
        let b = t("0 8 multipath 0 0 1 1 round-robin 0 1 1 8:0 1");
        assert!(plan("m", &a, None, &b).unwrap().is_noop());
    }

    #[test]
    fn added_removed_paths_and_regrouping() {
        let desired = t("0 16384 multipath 0 1 alua 1 1 service-time 0 2 2 8:0 1 1 8:64 1 1");
        let p = plan("m", &t(LOADED), None, &desired).unwrap();
        assert!(p.needs_reload);
        assert_eq!(p.paths_added, vec![DevNo::new(8, 64)]);
        assert_eq!(p.paths_removed, vec![DevNo::new(8, 32)]);
        assert!(
            p.changes
                .iter()
                .any(|c| matches!(c, Change::GroupsChanged { .. }))
        );
        assert_eq!(p.active_paths_kept, vec![DevNo::new(8, 0)]);
        // policy change failover -> multibus: same paths, different grouping
        let multibus = t("0 16384 multipath 0 1 alua 1 1 service-time 0 2 2 8:0 1 1 8:32 1 1");
        let p = plan("m", &t(LOADED), None, &multibus).unwrap();
        assert!(p.needs_reload);
        assert!(p.paths_added.is_empty() && p.paths_removed.is_empty());
        assert_eq!(
            p.changes,
            vec![Change::GroupsChanged {
                old: vec![vec![DevNo::new(8, 0)], vec![DevNo::new(8, 32)]],
                new: vec![vec![DevNo::new(8, 0), DevNo::new(8, 32)]]
            }]
        );
    }

    #[test]
    fn features_handler_selector_size() {
        let desired = t(
            "0 32768 multipath 2 pg_init_retries 5 1 rdac 2 1 round-robin 0 1 1 8:0 1 round-robin 0 1 1 8:32 1",
        );
        let p = plan("m", &t(LOADED), None, &desired).unwrap();
        assert!(p.needs_reload);
        let texts: Vec<String> = p.changes.iter().map(ToString::to_string).collect();
        assert!(
            texts.contains(&"size: 16384 -> 32768 sectors".to_string()),
            "{texts:?}"
        );
        assert!(
            texts.contains(&"features: none -> pg_init_retries 5".to_string()),
            "{texts:?}"
        );
        assert!(
            texts.contains(&"hardware handler: alua -> rdac".to_string()),
            "{texts:?}"
        );
        assert!(
            texts.contains(&"group 1 selector: service-time 0 -> round-robin 0".to_string()),
            "{texts:?}"
        );
        assert!(
            p.changes
                .iter()
                .any(|c| matches!(c, Change::PathArgsChanged { .. }))
        );
    }

    #[test]
    fn queue_if_no_path_alone_is_a_message_not_a_reload() {
        let desired = t(
            "0 16384 multipath 1 queue_if_no_path 1 alua 2 1 service-time 0 1 2 8:0 1 1 service-time 0 1 2 8:32 1 1",
        );
        let p = plan("m", &t(LOADED), None, &desired).unwrap();
        assert!(!p.needs_reload);
        assert_eq!(p.messages, vec![Message::QueueIfNoPath]);
        let back = plan("m", &desired, None, &t(LOADED)).unwrap();
        assert_eq!(back.messages, vec![Message::FailIfNoPath]);
    }

    #[test]
    fn refuses_to_drop_every_active_path() {
        let status: MultipathStatus =
            "0 16384 multipath 2 0 1 0 2 1 A 0 1 2 8:0 A 0 0 1 E 0 1 2 8:32 F 3 0 1"
                .parse()
                .unwrap();
        // keeps only the failed path 8:32 and adds a new one: 8:0, the only active path, goes
        let desired = t("0 16384 multipath 0 1 alua 1 1 service-time 0 2 2 8:32 1 1 8:64 1 1");
        let e = plan("mpatha", &t(LOADED), Some(&status), &desired).unwrap_err();
        match &e {
            Error::WouldDropAllActivePaths { map, dropped } => {
                assert_eq!(map, "mpatha");
                assert_eq!(dropped, &vec![DevNo::new(8, 0)]);
            }
            other => panic!("{other}"),
        }
        assert!(e.to_string().contains("mpatha"));
        // keeping the active one is fine, dropping the failed one too
        let desired = t("0 16384 multipath 0 1 alua 1 1 service-time 0 1 2 8:0 1 1");
        let p = plan("mpatha", &t(LOADED), Some(&status), &desired).unwrap();
        assert_eq!(p.paths_removed, vec![DevNo::new(8, 32)]);
        // without status every loaded path counts as active
        let all_new = t("0 16384 multipath 0 1 alua 1 1 service-time 0 1 2 8:64 1 1");
        assert!(plan("m", &t(LOADED), None, &all_new).is_err());
        // when nothing is active now, replacing everything is allowed
        let dead: MultipathStatus =
            "0 16384 multipath 2 0 1 0 2 1 E 0 1 2 8:0 F 1 0 1 E 0 1 2 8:32 F 1 0 1"
                .parse()
                .unwrap();
        assert!(
            plan("m", &t(LOADED), Some(&dead), &all_new)
                .unwrap()
                .needs_reload
        );
        // a table with no groups at all drops everything
        let empty = t("0 16384 multipath 1 queue_if_no_path 0 0 0");
        assert!(plan("m", &t(LOADED), Some(&status), &empty).is_err());
    }
}
