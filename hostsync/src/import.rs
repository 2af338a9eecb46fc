//! `hostsync import HOST=FILE...`: merge the bindings files and `multipaths {}` sections of
//! existing hosts into the registry. Bindings on which every host and the registry agree are
//! written (with `apply`); conflicts (one WWID with two names, one name with two WWIDs) are
//! reported with a proposed resolution and never written.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use aliases::bindings::BindingsFile;
use aliases::names::{validate_alias, validate_wwid};
use serde::Serialize;

use crate::names::{self, Bindings};
use crate::registry::Registry;
use crate::{Error, Result};

/// One binding as found on a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Found {
    /// The host.
    pub host: String,
    /// The WWID.
    pub wwid: String,
    /// Its name there.
    pub alias: String,
    /// `file:line`.
    pub origin: String,
}

/// Reads the bindings of one host's file: a multipath-tools bindings file, or a
/// multipath.conf (its `multipaths { multipath { wwid alias } }` entries).
pub fn read_host_file(host: &str, path: &Path) -> Result<Vec<Found>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::File {
        path: path.into(),
        message: e.to_string(),
    })?;
    let mut out = Vec::new();
    let looks_conf = text.lines().any(|l| {
        l.trim_start().starts_with("multipaths") || l.trim_start().starts_with("defaults")
    });
    if looks_conf {
        let conf = aliases::mpconf::parse_str(&text, path)?;
        for s in conf.sections_named("multipaths") {
            for m in s.subsections("multipath") {
                let (Some((w, line)), Some(a)) = (m.get_with_line("wwid"), m.get("alias")) else {
                    continue;
                };
                out.push(Found {
                    host: host.into(),
                    wwid: w.into(),
                    alias: a.into(),
                    origin: format!("{}:{line}", path.display()),
                });
            }
        }
    } else {
        let f = BindingsFile::parse(&text, path);
        if let Some(p) = f.problems.first() {
            return Err(Error::File {
                path: path.into(),
                message: format!(
                    "line {}: {} (fix the file; nothing was imported)",
                    p.line, p.message
                ),
            });
        }
        for (a, w, line) in f.bindings() {
            out.push(Found {
                host: host.into(),
                wwid: w.into(),
                alias: a.into(),
                origin: format!("{}:{line}", path.display()),
            });
        }
    }
    for f in &out {
        validate_wwid(&f.wwid)?;
        validate_alias(&f.alias)?;
    }
    Ok(out)
}

/// A conflict and what hostsync proposes.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Conflict {
    /// "wwid" (one WWID, several names) or "alias" (one name, several WWIDs).
    pub kind: &'static str,
    /// The WWID or name in conflict.
    pub subject: String,
    /// What each side says: "NAME on host1, host2 (file:line)".
    pub claims: Vec<String>,
    /// The proposed resolution, as a sentence with the command to run.
    pub proposal: String,
}

/// The import plan.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ImportPlan {
    /// Bindings every host agrees on and the registry does not have yet: (wwid, alias).
    pub new: Vec<(String, String)>,
    /// Bindings already in the registry as the hosts have them.
    pub present: usize,
    /// Hosts whose name differs from the registry's, which wins: (host, wwid, host's name,
    /// registry name). The host must rename the map when nothing holds it open.
    pub renames: Vec<(String, String, String, String)>,
    /// Conflicts the registry has not settled.
    pub conflicts: Vec<Conflict>,
    /// Bindings written (with apply).
    pub written: Vec<(String, String)>,
}

fn describe(alias_or_wwid: &str, finds: &[&Found]) -> String {
    let hosts: BTreeSet<&str> = finds.iter().map(|f| f.host.as_str()).collect();
    let origins: Vec<&str> = finds.iter().map(|f| f.origin.as_str()).collect();
    format!(
        "{alias_or_wwid} on {} ({})",
        hosts.into_iter().collect::<Vec<_>>().join(", "),
        origins.join(", ")
    )
}

/// Plans the import of `found` against the registry's `bindings`.
pub fn plan(found: &[Found], bindings: &Bindings) -> ImportPlan {
    let mut p = ImportPlan::default();
    let mut by_wwid: BTreeMap<&str, BTreeMap<&str, Vec<&Found>>> = BTreeMap::new();
    let mut by_alias: BTreeMap<&str, BTreeMap<&str, Vec<&Found>>> = BTreeMap::new();
    for f in found {
        by_wwid
            .entry(&f.wwid)
            .or_default()
            .entry(&f.alias)
            .or_default()
            .push(f);
        by_alias
            .entry(&f.alias)
            .or_default()
            .entry(&f.wwid)
            .or_default()
            .push(f);
    }
    // Names some WWID in the files wants that are bound elsewhere (in the files or registry).
    let mut contested_alias: BTreeSet<&str> = BTreeSet::new();
    for (alias, wwids) in &by_alias {
        let reg_owner = bindings.by_alias.get(*alias).map(|r| r.wwid.as_str());
        let mut owners: BTreeSet<&str> = wwids.keys().copied().collect();
        if let Some(o) = reg_owner {
            owners.insert(o);
        }
        if owners.len() > 1 {
            contested_alias.insert(alias);
            if let Some(o) = reg_owner {
                // The registry settled it: the others must take their registry names.
                let _ = o;
                continue;
            }
            // Propose: the WWID with the most hosts keeps the name.
            let mut ranked: Vec<(&&str, &Vec<&Found>)> = wwids.iter().collect();
            ranked.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
            let keep = ranked[0].0;
            let claims = ranked.iter().map(|(w, fs)| describe(w, fs)).collect();
            let others: Vec<&str> = ranked[1..].iter().map(|(w, _)| **w).collect();
            p.conflicts.push(Conflict {
                kind: "alias",
                subject: alias.to_string(),
                claims,
                proposal: format!(
                    "keep {alias} for {keep} (hostsync alias set {keep} {alias}) and give {} a new name (hostsync alias allocate {})",
                    others.join(", "),
                    others.join(" ")
                ),
            });
        }
    }
    for (wwid, aliases) in &by_wwid {
        if let Some(rec) = bindings.by_wwid.get(*wwid) {
            for (alias, fs) in aliases {
                if *alias == rec.alias {
                    p.present += 1;
                } else {
                    for f in fs {
                        p.renames.push((
                            f.host.clone(),
                            wwid.to_string(),
                            alias.to_string(),
                            rec.alias.clone(),
                        ));
                    }
                }
            }
            continue;
        }
        if aliases.len() > 1 {
            let mut ranked: Vec<(&&str, &Vec<&Found>)> = aliases.iter().collect();
            ranked.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
            let keep = ranked
                .iter()
                .find(|(a, _)| !contested_alias.contains(**a))
                .map(|(a, _)| **a);
            let claims = ranked.iter().map(|(a, fs)| describe(a, fs)).collect();
            let proposal = match keep {
                Some(a) => format!(
                    "bind {wwid} to {a}, the name most hosts use (hostsync alias set {wwid} {a}); the other hosts rename their map"
                ),
                None => format!(
                    "every name it has is contested: give it a new name (hostsync alias allocate {wwid})"
                ),
            };
            p.conflicts.push(Conflict {
                kind: "wwid",
                subject: wwid.to_string(),
                claims,
                proposal,
            });
            continue;
        }
        if let Some((alias, _)) = aliases.iter().next()
            && !contested_alias.contains(alias)
        {
            p.new.push((wwid.to_string(), alias.to_string()));
        }
    }
    p
}

/// Writes the plan's agreed bindings (each with its own both-absent transaction, so a
/// concurrent allocation is never overwritten). Returns what was written.
pub fn apply(reg: &dyn Registry, host: &str, plan: &mut ImportPlan) -> Result<()> {
    for (wwid, alias) in &plan.new {
        let (now, ok) = names::claim(reg, host, wwid, alias, "import")?;
        if ok {
            plan.written.push((wwid.clone(), alias.clone()));
        } else {
            plan.conflicts.push(Conflict {
                kind: "wwid",
                subject: wwid.clone(),
                claims: vec![format!("{alias} in the files")],
                proposal: match now {
                    Some(a) => {
                        format!("the registry gave it {a} meanwhile; hosts rename their map to {a}")
                    }
                    None => format!(
                        "{alias} was taken meanwhile; rerun the import to see the new state"
                    ),
                },
            });
        }
    }
    Ok(())
}

/// Parses `HOST=FILE`.
pub fn parse_host_file(arg: &str) -> Result<(String, PathBuf)> {
    match arg.split_once('=') {
        Some((h, f)) if !h.is_empty() && !f.is_empty() => Ok((h.into(), PathBuf::from(f))),
        _ => Err(Error::File {
            path: PathBuf::from(arg),
            message: "expected HOST=FILE".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(host: &str, wwid: &str, alias: &str) -> Found {
        Found {
            host: host.into(),
            wwid: wwid.into(),
            alias: alias.into(),
            origin: format!("{host}:1"),
        }
    }

    #[test]
    fn agreed_bindings_import_and_conflicts_get_proposals() {
        let found = [
            f("a", "W1", "mpatha"),
            f("b", "W1", "mpatha"),
            // One WWID, two names: the name most hosts use is proposed.
            f("a", "W2", "mpathb"),
            f("b", "W2", "mpathb"),
            f("c", "W2", "mpathc"),
            // One name, two WWIDs.
            f("a", "W3", "mpathd"),
            f("b", "W4", "mpathd"),
            f("c", "W4", "mpathd"),
        ];
        let p = plan(&found, &Bindings::default());
        assert_eq!(p.new, [("W1".to_string(), "mpatha".to_string())]);
        let w2 = p.conflicts.iter().find(|c| c.subject == "W2").unwrap();
        assert!(
            w2.proposal.contains("hostsync alias set W2 mpathb"),
            "{}",
            w2.proposal
        );
        let d = p.conflicts.iter().find(|c| c.subject == "mpathd").unwrap();
        assert!(
            d.proposal.starts_with("keep mpathd for W4"),
            "{}",
            d.proposal
        );
        assert!(!p.new.iter().any(|(w, _)| w == "W3" || w == "W4"));
    }

    #[test]
    fn reads_bindings_and_multipath_conf() {
        let d = tempfile::tempdir().unwrap();
        let b = d.path().join("bindings");
        std::fs::write(&b, "# c\nmpatha W1\n").unwrap();
        let c = d.path().join("multipath.conf");
        std::fs::write(
            &c,
            "defaults {\n\tuser_friendly_names yes\n}\nmultipaths {\n\tmultipath {\n\t\twwid W2\n\t\talias db\n\t}\n}\n",
        )
        .unwrap();
        let mut all = read_host_file("h1", &b).unwrap();
        all.extend(read_host_file("h2", &c).unwrap());
        let pairs: Vec<(&str, &str, &str)> = all
            .iter()
            .map(|f| (f.host.as_str(), f.wwid.as_str(), f.alias.as_str()))
            .collect();
        assert_eq!(pairs, [("h1", "W1", "mpatha"), ("h2", "W2", "db")]);
        std::fs::write(&b, "mpatha W1 extra\n").unwrap();
        let e = read_host_file("h1", &b).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }
}
