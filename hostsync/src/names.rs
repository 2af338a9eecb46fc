//! Aliases through the registry. Keys:
//! - `wwid/<wwid>`: `{"alias": NAME, "source": "friendly"|"admin"|"import", "host": HOST}`;
//! - `alias/<name>`: `{"wwid": WWID, "bound": true}`, or `"bound": false` once the WWID was
//!   given another name: a tombstone, so a name once bound never goes to another WWID unless
//!   the admin says `--reuse`.
//!
//! A new binding is one transaction requiring both keys absent, so two hosts racing for the
//! same WWID or the same name cannot both win. Friendly names are multipath-tools'
//! `mpath` + bijective base-26 suffix, the lowest free over the whole registry.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use aliases::names::{ufn_alias, ufn_id, validate_alias, validate_wwid};
use serde::{Deserialize, Serialize};

use crate::registry::{Compare, Kv, Op, Registry};
use crate::{Error, Result};

/// Prefix of WWID keys.
pub const WWID_PREFIX: &str = "wwid/";
/// Prefix of alias keys.
pub const ALIAS_PREFIX: &str = "alias/";

/// The value under `wwid/<wwid>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WwidRecord {
    /// The WWID's name on every host.
    pub alias: String,
    /// "friendly" (allocated), "admin" (`alias set`) or "import".
    pub source: String,
    /// The host that made the binding.
    pub host: String,
}

/// The value under `alias/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasRecord {
    /// The WWID the name is (or was) bound to.
    pub wwid: String,
    /// False for a tombstone: the WWID was renamed, the name stays reserved.
    pub bound: bool,
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(reg: &dyn Registry, kv: &Kv) -> Result<T> {
    serde_json::from_slice(&kv.value).map_err(|e| Error::BadValue {
        registry: reg.url(),
        key: kv.key.clone(),
        message: e.to_string(),
    })
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

/// Every binding in the registry.
#[derive(Debug, Clone, Default)]
pub struct Bindings {
    /// WWID -> its record.
    pub by_wwid: BTreeMap<String, WwidRecord>,
    /// Name -> its record (bound names and tombstones).
    pub by_alias: BTreeMap<String, AliasRecord>,
    /// The revision of the WWID read (watch from revision + 1).
    pub revision: i64,
}

impl Bindings {
    /// Reads every binding: WWIDs first, then names (so every name of a WWID read is seen).
    pub fn read(reg: &dyn Registry) -> Result<Self> {
        // Both prefixes under one hold (san: one lvchange pair, and one revision).
        let held = reg.hold(false)?;
        let w = reg.range(WWID_PREFIX)?;
        let a = reg.range(ALIAS_PREFIX)?;
        held.release()?;
        let mut b = Bindings {
            revision: w.revision,
            ..Default::default()
        };
        for kv in &w.kvs {
            if let Some(wwid) = kv.key.strip_prefix(WWID_PREFIX) {
                b.by_wwid.insert(wwid.to_string(), decode(reg, kv)?);
            }
        }
        for kv in &a.kvs {
            if let Some(name) = kv.key.strip_prefix(ALIAS_PREFIX) {
                b.by_alias.insert(name.to_string(), decode(reg, kv)?);
            }
        }
        Ok(b)
    }
}

/// The outcome of asking for a WWID's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    /// The WWID.
    pub wwid: String,
    /// Its name in the registry.
    pub alias: String,
    /// True if this call made the binding.
    pub created: bool,
}

/// Tries to bind `wwid` to `alias` in one transaction (both keys absent). On failure returns
/// the current record of the WWID if it has one, else None (the name was taken).
fn try_bind(
    reg: &dyn Registry,
    host: &str,
    wwid: &str,
    alias: &str,
    source: &str,
) -> Result<std::result::Result<(), Option<WwidRecord>>> {
    let wkey = format!("{WWID_PREFIX}{wwid}");
    let akey = format!("{ALIAS_PREFIX}{alias}");
    let rec = WwidRecord {
        alias: alias.to_string(),
        source: source.to_string(),
        host: host.to_string(),
    };
    let arec = AliasRecord {
        wwid: wwid.to_string(),
        bound: true,
    };
    let r = reg.txn(
        &[Compare::Absent(wkey.clone()), Compare::Absent(akey.clone())],
        &[Op::put(&wkey, encode(&rec)), Op::put(&akey, encode(&arec))],
    )?;
    if r.succeeded {
        return Ok(Ok(()));
    }
    match r.current.iter().find(|kv| kv.key == wkey) {
        Some(kv) => Ok(Err(Some(decode(reg, kv)?))),
        None => Ok(Err(None)),
    }
}

/// Names `wwid` cluster-wide: its existing name, or the lowest friendly name free in the
/// registry. `used` holds the friendly ids known to be taken and learns from conflicts.
pub fn name_wwid(
    reg: &dyn Registry,
    host: &str,
    prefix: &str,
    wwid: &str,
    used: &mut BTreeSet<u64>,
) -> Result<Named> {
    validate_wwid(wwid)?;
    const ATTEMPTS: usize = 100_000;
    for _ in 0..ATTEMPTS {
        let id = aliases::names::lowest_free_id(used);
        let Some(alias) = ufn_alias(prefix, id) else {
            break;
        };
        match try_bind(reg, host, wwid, &alias, "friendly")? {
            Ok(()) => {
                used.insert(id);
                return Ok(Named {
                    wwid: wwid.into(),
                    alias,
                    created: true,
                });
            }
            Err(Some(rec)) => {
                if let Some(i) = ufn_id(&rec.alias, prefix) {
                    used.insert(i);
                }
                return Ok(Named {
                    wwid: wwid.into(),
                    alias: rec.alias,
                    created: false,
                });
            }
            Err(None) => {
                used.insert(id);
            }
        }
    }
    Err(Error::Exhausted {
        wwid: wwid.into(),
        attempts: ATTEMPTS,
    })
}

/// What `alias set` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetOutcome {
    /// The WWID.
    pub wwid: String,
    /// Its new name.
    pub alias: String,
    /// Its previous name (now a tombstone), if it had one.
    pub previous: Option<String>,
    /// False if the WWID already had exactly this name.
    pub changed: bool,
}

/// Binds `wwid` to the admin's `alias`. The name must be free, or a tombstone with `reuse`;
/// a name bound to another WWID is always refused. The WWID's old name becomes a tombstone.
pub fn set_alias(
    reg: &dyn Registry,
    host: &str,
    wwid: &str,
    alias: &str,
    reuse: bool,
    source: &str,
) -> Result<SetOutcome> {
    validate_wwid(wwid)?;
    validate_alias(alias)?;
    let wkey = format!("{WWID_PREFIX}{wwid}");
    let akey = format!("{ALIAS_PREFIX}{alias}");
    for _ in 0..1000 {
        let wcur = reg.get(&wkey)?;
        let acur = reg.get(&akey)?;
        let wrec: Option<WwidRecord> = wcur.as_ref().map(|kv| decode(reg, kv)).transpose()?;
        let arec: Option<AliasRecord> = acur.as_ref().map(|kv| decode(reg, kv)).transpose()?;
        if let Some(w) = &wrec
            && w.alias == alias
        {
            return Ok(SetOutcome {
                wwid: wwid.into(),
                alias: alias.into(),
                previous: None,
                changed: false,
            });
        }
        if let Some(a) = &arec
            && a.wwid != wwid
        {
            if a.bound {
                return Err(Error::AliasTaken {
                    alias: alias.into(),
                    wwid: wwid.into(),
                    other: a.wwid.clone(),
                    state: "is bound to",
                    hint: " (rename that WWID first)",
                });
            }
            if !reuse {
                return Err(Error::AliasTaken {
                    alias: alias.into(),
                    wwid: wwid.into(),
                    other: a.wwid.clone(),
                    state: "was bound to",
                    hint: " (pass --reuse if no host still uses the old LUN under this name)",
                });
            }
        }
        let mut when = vec![match &wcur {
            Some(kv) => Compare::ModRevision(wkey.clone(), kv.mod_revision),
            None => Compare::Absent(wkey.clone()),
        }];
        when.push(match &acur {
            Some(kv) => Compare::ModRevision(akey.clone(), kv.mod_revision),
            None => Compare::Absent(akey.clone()),
        });
        let mut then = vec![
            Op::put(
                &wkey,
                encode(&WwidRecord {
                    alias: alias.into(),
                    source: source.into(),
                    host: host.into(),
                }),
            ),
            Op::put(
                &akey,
                encode(&AliasRecord {
                    wwid: wwid.into(),
                    bound: true,
                }),
            ),
        ];
        let previous = wrec.map(|w| w.alias);
        if let Some(old) = &previous {
            let okey = format!("{ALIAS_PREFIX}{old}");
            match reg.get(&okey)? {
                Some(kv) => when.push(Compare::ModRevision(okey.clone(), kv.mod_revision)),
                None => when.push(Compare::Absent(okey.clone())),
            }
            then.push(Op::put(
                &okey,
                encode(&AliasRecord {
                    wwid: wwid.into(),
                    bound: false,
                }),
            ));
        }
        if reg.txn(&when, &then)?.succeeded {
            return Ok(SetOutcome {
                wwid: wwid.into(),
                alias: alias.into(),
                previous,
                changed: true,
            });
        }
    }
    Err(Error::Exhausted {
        wwid: wwid.into(),
        attempts: 1000,
    })
}

/// Binds `wwid` to `alias` only if both are unbound (used by import and by a host replaying
/// its cache). Returns the WWID's name in the registry afterwards, and whether it is `alias`.
pub fn claim(
    reg: &dyn Registry,
    host: &str,
    wwid: &str,
    alias: &str,
    source: &str,
) -> Result<(Option<String>, bool)> {
    validate_wwid(wwid)?;
    validate_alias(alias)?;
    match try_bind(reg, host, wwid, alias, source)? {
        Ok(()) => Ok((Some(alias.into()), true)),
        Err(Some(rec)) => {
            let same = rec.alias == alias;
            Ok((Some(rec.alias), same))
        }
        Err(None) => Ok((None, false)),
    }
}

/// The friendly ids under `prefix` among `names`.
pub fn used_ids<'a>(names: impl IntoIterator<Item = &'a String>, prefix: &str) -> BTreeSet<u64> {
    names
        .into_iter()
        .filter_map(|n| ufn_id(n, prefix))
        .collect()
}

/// A shared handle on a registry.
pub type SharedRegistry = Arc<dyn Registry>;
