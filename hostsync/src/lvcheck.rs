//! `hostsync check lvs`: cluster-wide, from every host's published [`HostLvm`] and the
//! registered migrations. Three problems:
//! - `two-hosts`: an LV (by UUID) active on two or more hosts, unless a registered migration of
//!   it covers exactly those hosts (its source and destination);
//! - `unlocked`: an LV active without a lock (its VG is not shared: nothing stops a second
//!   host); the advice is to share the VG;
//! - `dead-holder`: a host judged dead (see [`crate::publish`]) that published LVs active with a
//!   lease: its host_id holds leases nobody renews for it.
//!
//! Stale records (alive host, old record) are listed as notes, not problems.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::lvstate::{HostLvm, LvMode, Migration};
use crate::publish::{Liveness, liveness};

/// One problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// `two-hosts`, `unlocked` or `dead-holder`.
    pub kind: &'static str,
    /// `VG/LV`.
    pub lv: String,
    /// Its UUID.
    pub uuid: String,
    /// The hosts involved.
    pub hosts: Vec<String>,
    /// What is wrong, in a sentence.
    pub message: String,
    /// What to do.
    pub advice: String,
}

/// One LV active somewhere: where and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// `VG/LV`.
    pub lv: String,
    /// Its UUID.
    pub uuid: String,
    /// Host -> mode.
    pub hosts: BTreeMap<String, LvMode>,
    /// Whether a registered migration covers it.
    pub migrating: bool,
}

/// One host as judged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostRow {
    /// The host.
    pub host: String,
    /// Its host_id.
    pub host_id: Option<u32>,
    /// Alive, stale or dead.
    pub liveness: Liveness,
    /// Age of its record in seconds.
    pub age_s: u64,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Hosts that published.
    pub hosts: Vec<HostRow>,
    /// Active LVs.
    pub rows: Vec<Row>,
    /// Problems (non-zero exit when any).
    pub problems: Vec<Problem>,
    /// Notes (stale records).
    pub notes: Vec<String>,
}

/// Checks `records` against `migrations`; `alive_keys` are the hosts whose liveness key exists.
pub fn check(
    records: &[HostLvm],
    migrations: &[Migration],
    alive_keys: &BTreeSet<String>,
    now: u64,
    stale_after: u64,
) -> Report {
    let mut hosts = Vec::new();
    let mut notes = Vec::new();
    let mut by_uuid: BTreeMap<&str, Row> = BTreeMap::new();
    let mut problems = Vec::new();
    for rec in records {
        let l = liveness(rec, alive_keys.contains(&rec.host), now, stale_after);
        let age = now.saturating_sub(rec.taken_unix);
        hosts.push(HostRow {
            host: rec.host.clone(),
            host_id: rec.host_id,
            liveness: l,
            age_s: age,
        });
        if l == Liveness::Stale {
            notes.push(format!(
                "host {}'s LVM record is {age} s old (bound {stale_after} s): its active LVs may have changed since; run `hostsync publish` there",
                rec.host
            ));
        }
        for s in &rec.lvs {
            let full = format!("{}/{}", s.vg, s.lv);
            by_uuid
                .entry(s.uuid.as_str())
                .or_insert_with(|| Row {
                    lv: full.clone(),
                    uuid: s.uuid.clone(),
                    hosts: BTreeMap::new(),
                    migrating: false,
                })
                .hosts
                .insert(rec.host.clone(), s.mode);
            if s.mode == LvMode::Unlocked {
                problems.push(Problem {
                    kind: "unlocked",
                    lv: full.clone(),
                    uuid: s.uuid.clone(),
                    hosts: vec![rec.host.clone()],
                    message: format!(
                        "{full} is active on {} without a lock: VG {} is not shared, so nothing stops another host from activating it too",
                        rec.host, s.vg
                    ),
                    advice: format!(
                        "share the VG: deactivate its LVs, then `hostsync vg share {}`",
                        s.vg
                    ),
                });
            }
            if l == Liveness::Dead && s.mode != LvMode::Unlocked {
                let id = rec
                    .host_id
                    .map(|i| format!("sanlock host_id {i}"))
                    .unwrap_or_else(|| "its unknown host_id".into());
                problems.push(Problem {
                    kind: "dead-holder",
                    lv: full.clone(),
                    uuid: s.uuid.clone(),
                    hosts: vec![rec.host.clone()],
                    message: format!(
                        "host {} is not alive (no liveness key, record {age} s old) and {id} holds the lease of {full} ({})",
                        rec.host,
                        mode_word(s.mode)
                    ),
                    advice: format!(
                        "if {} is really down, its lease expires on the disks (8 x io_timeout + 60 s after its last renewal) and another host can then activate {full}; if it is up, run `hostsync publish` there",
                        rec.host
                    ),
                });
            }
        }
    }
    for row in by_uuid.values_mut() {
        if row.hosts.len() < 2 {
            continue;
        }
        let on: BTreeSet<&str> = row.hosts.keys().map(String::as_str).collect();
        row.migrating = migrations.iter().any(|m| {
            m.lv_uuids.contains(&row.uuid) && on.iter().all(|h| *h == m.from || *h == m.to)
        });
        if row.migrating {
            continue;
        }
        let list: Vec<String> = row
            .hosts
            .iter()
            .map(|(h, m)| format!("{h} ({})", mode_word(*m)))
            .collect();
        problems.push(Problem {
            kind: "two-hosts",
            lv: row.lv.clone(),
            uuid: row.uuid.clone(),
            hosts: row.hosts.keys().cloned().collect(),
            message: format!(
                "{} is active on {} hosts outside a registered migration: {}",
                row.lv,
                row.hosts.len(),
                list.join(", ")
            ),
            advice: format!(
                "stop the domU on all but one host and deactivate {} there (`hostsync lv deactivate {}`); check its data",
                row.lv, row.lv
            ),
        });
    }
    problems.sort_by(|a, b| (a.lv.as_str(), a.kind).cmp(&(b.lv.as_str(), b.kind)));
    Report {
        hosts,
        rows: by_uuid.into_values().collect(),
        problems,
        notes,
    }
}

fn mode_word(m: LvMode) -> &'static str {
    match m {
        LvMode::Exclusive => "exclusive",
        LvMode::Shared => "shared",
        LvMode::Unlocked => "unlocked",
    }
}

/// The human table: one line per active LV with its mode on each host, then the problems.
pub fn render(rep: &Report) -> String {
    let mut out = String::new();
    for h in &rep.hosts {
        out.push_str(&format!(
            "host {:10} host_id {:5} {:6} record {} s old\n",
            h.host,
            h.host_id
                .map(|i| i.to_string())
                .unwrap_or_else(|| "-".into()),
            match h.liveness {
                Liveness::Alive => "alive",
                Liveness::Stale => "stale",
                Liveness::Dead => "DEAD",
            },
            h.age_s
        ));
    }
    let lw = rep
        .rows
        .iter()
        .map(|r| r.lv.len())
        .max()
        .unwrap_or(2)
        .max(2);
    let names: Vec<&str> = rep.hosts.iter().map(|h| h.host.as_str()).collect();
    let mut head = format!("{:lw$}", "LV");
    for h in &names {
        head.push_str(&format!("  {h:10}"));
    }
    out.push_str(&format!("{head}  STATUS\n"));
    for r in &rep.rows {
        let mut line = format!("{:lw$}", r.lv);
        for h in &names {
            line.push_str(&format!(
                "  {:10}",
                r.hosts.get(*h).map(|m| mode_word(*m)).unwrap_or("-")
            ));
        }
        let bad = rep.problems.iter().any(|p| p.uuid == r.uuid);
        let st = match (bad, r.migrating) {
            (true, _) => "PROBLEM",
            (false, true) => "migrating",
            (false, false) => "ok",
        };
        out.push_str(&format!("{line}  {st}\n"));
    }
    for p in &rep.problems {
        out.push_str(&format!(
            "PROBLEM ({}): {}\n    fix: {}\n",
            p.kind, p.message, p.advice
        ));
    }
    for n in &rep.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    out.push_str(&format!(
        "{} host(s), {} active LV(s), {} problem(s)\n",
        rep.hosts.len(),
        rep.rows.len(),
        rep.problems.len()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lvstate::LvState;

    fn rec(host: &str, id: u32, taken: u64, lvs: &[(&str, &str, LvMode)]) -> HostLvm {
        HostLvm {
            host: host.into(),
            host_id: Some(id),
            io_timeout: Some(2),
            taken_unix: taken,
            vgs: vec![],
            lvs: lvs
                .iter()
                .map(|(lv, uuid, mode)| LvState {
                    vg: "vg".into(),
                    lv: (*lv).into(),
                    uuid: (*uuid).into(),
                    mode: *mode,
                    open: false,
                })
                .collect(),
        }
    }

    const NOW: u64 = 10_000;

    #[test]
    fn one_host_per_lv_is_clean() {
        let recs = [
            rec("A", 1, NOW, &[("domu1", "U1", LvMode::Exclusive)]),
            rec("B", 2, NOW, &[("domu2", "U2", LvMode::Exclusive)]),
        ];
        let rep = check(&recs, &[], &BTreeSet::new(), NOW, 300);
        assert!(rep.problems.is_empty(), "{:?}", rep.problems);
        assert_eq!(rep.rows.len(), 2);
        assert!(render(&rep).ends_with("2 host(s), 2 active LV(s), 0 problem(s)\n"));
    }

    #[test]
    fn an_lv_on_two_hosts_without_a_lock_is_flagged_naming_both() {
        let recs = [
            rec("A", 1, NOW, &[("domu1", "U1", LvMode::Unlocked)]),
            rec("B", 2, NOW, &[("domu1", "U1", LvMode::Unlocked)]),
        ];
        let rep = check(&recs, &[], &BTreeSet::new(), NOW, 300);
        let kinds: Vec<_> = rep
            .problems
            .iter()
            .map(|p| (p.kind, p.hosts.join(",")))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("two-hosts", "A,B".into()),
                ("unlocked", "A".into()),
                ("unlocked", "B".into())
            ]
        );
        assert!(rep.problems[0].message.contains("vg/domu1 is active on 2 hosts outside a registered migration: A (unlocked), B (unlocked)"));
        assert!(rep.problems[1].advice.contains("hostsync vg share vg"));
        let t = render(&rep);
        assert!(
            t.contains("vg/domu1  unlocked    unlocked    PROBLEM"),
            "{t}"
        );
    }

    #[test]
    fn a_registered_migration_covers_exactly_its_two_hosts() {
        let m = Migration {
            domu: "web".into(),
            from: "A".into(),
            to: "B".into(),
            lv_uuids: vec!["U1".into()],
            started_unix: NOW,
        };
        let two = [
            rec("A", 1, NOW, &[("domu1", "U1", LvMode::Shared)]),
            rec("B", 2, NOW, &[("domu1", "U1", LvMode::Shared)]),
        ];
        let rep = check(&two, std::slice::from_ref(&m), &BTreeSet::new(), NOW, 300);
        assert!(rep.problems.is_empty(), "{:?}", rep.problems);
        assert!(rep.rows[0].migrating);
        // A third host is outside it; another LV's migration does not cover this one.
        let three = [
            two[0].clone(),
            two[1].clone(),
            rec("C", 3, NOW, &[("domu1", "U1", LvMode::Shared)]),
        ];
        assert_eq!(
            check(&three, std::slice::from_ref(&m), &BTreeSet::new(), NOW, 300)
                .problems
                .len(),
            1
        );
        let other = Migration {
            lv_uuids: vec!["U9".into()],
            ..m
        };
        assert_eq!(
            check(&two, &[other], &BTreeSet::new(), NOW, 300).problems[0].kind,
            "two-hosts"
        );
    }

    #[test]
    fn a_lease_of_a_dead_host_is_flagged_a_stale_live_host_is_a_note() {
        let recs = [
            rec("A", 1, NOW - 1000, &[("domu1", "U1", LvMode::Exclusive)]),
            rec("B", 2, NOW - 1000, &[("domu2", "U2", LvMode::Exclusive)]),
        ];
        let alive: BTreeSet<String> = ["B".to_string()].into();
        let rep = check(&recs, &[], &alive, NOW, 300);
        assert_eq!(rep.problems.len(), 1);
        let p = &rep.problems[0];
        assert_eq!((p.kind, p.hosts[0].as_str()), ("dead-holder", "A"));
        assert!(
            p.message
                .contains("sanlock host_id 1 holds the lease of vg/domu1"),
            "{}",
            p.message
        );
        assert_eq!(rep.notes.len(), 1);
        assert!(rep.notes[0].starts_with("host B's LVM record is 1000 s old"));
        // The control: the same records fresh are clean.
        let fresh = [rec("A", 1, NOW, &[("domu1", "U1", LvMode::Exclusive)])];
        assert!(
            check(&fresh, &[], &BTreeSet::new(), NOW, 300)
                .problems
                .is_empty()
        );
    }
}
