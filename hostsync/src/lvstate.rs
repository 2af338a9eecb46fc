//! What each host publishes about its LVM (under `hosts/<host>/lvm`) and the migrations in
//! flight (under `migrations/<domu>`): the shared vocabulary of exclusive activation
//! (`check lvs`, `lv activate`), migration (`migrate check`, `migrate run`, the block script) and
//! the doctor.
//!
//! The LVM record carries the time it was taken, so a reader can tell a stale record; whether
//! the host is alive is told by its liveness-bound `hosts/<host>/state` (see [`crate::hosts`]).

use serde::{Deserialize, Serialize};

use crate::names::decode;
use crate::registry::{Compare, Op, Registry};
use crate::{Error, Result};

/// Prefix of migration records.
pub const MIGRATIONS_PREFIX: &str = "migrations/";

/// How an LV is active on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LvMode {
    /// Active with an exclusive lock (`-aey` on a shared VG).
    Exclusive,
    /// Active with a shared lock (`-asy`).
    Shared,
    /// Active without any lock (the VG is not shared: nothing stops a second host).
    Unlocked,
}

/// One LV active on a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LvState {
    /// VG name.
    pub vg: String,
    /// LV name.
    pub lv: String,
    /// LV UUID (sanlock's lease is named after it; the cluster-wide identity).
    pub uuid: String,
    /// How it is active.
    pub mode: LvMode,
    /// Open by a process or a domU.
    pub open: bool,
}

/// One VG a host sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VgState {
    /// VG name.
    pub name: String,
    /// VG UUID.
    pub uuid: String,
    /// `sanlock`, `dlm` or empty.
    pub lock_type: String,
    /// Whether this host's lockspace for it is started (lvmlockd).
    pub lockspace_started: bool,
    /// The devices of its PVs on this host (`/dev/mapper/<alias>`, ideally).
    pub pvs: Vec<String>,
}

/// A host's LVM as it published it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostLvm {
    /// The host.
    pub host: String,
    /// Its sanlock/lvmlockd host_id, when known.
    pub host_id: Option<u32>,
    /// Its sanlock io_timeout in seconds, when known.
    pub io_timeout: Option<u32>,
    /// When the record was taken (seconds since the epoch).
    pub taken_unix: u64,
    /// VGs it sees.
    pub vgs: Vec<VgState>,
    /// LVs active on it.
    pub lvs: Vec<LvState>,
}

/// The key of `host`'s LVM record.
pub fn lvm_key(host: &str) -> String {
    format!("{}{host}/lvm", crate::hosts::HOSTS_PREFIX)
}

/// Publishes `st` as its host's LVM record. `lease` 0 keeps it until replaced; a liveness lease
/// makes it disappear with the host.
pub fn publish_lvm_state(reg: &dyn Registry, st: &HostLvm, lease: i64) -> Result<()> {
    let mut st = st.clone();
    st.vgs.sort_by(|a, b| a.name.cmp(&b.name));
    st.lvs
        .sort_by(|a, b| (a.vg.as_str(), a.lv.as_str()).cmp(&(b.vg.as_str(), b.lv.as_str())));
    let value = serde_json::to_vec(&st).map_err(|e| Error::BadValue {
        registry: reg.url(),
        key: lvm_key(&st.host),
        message: e.to_string(),
    })?;
    reg.txn(
        &[],
        &[Op::Put {
            key: lvm_key(&st.host),
            value,
            lease,
        }],
    )?;
    Ok(())
}

/// Every host's LVM record, sorted by host.
pub fn cluster_lvm_state(reg: &dyn Registry) -> Result<Vec<HostLvm>> {
    let snap = reg.range(crate::hosts::HOSTS_PREFIX)?;
    let mut out = Vec::new();
    for kv in &snap.kvs {
        if kv.key.ends_with("/lvm") {
            out.push(decode::<HostLvm>(reg, kv)?);
        }
    }
    out.sort_by(|a, b| a.host.cmp(&b.host));
    Ok(out)
}

/// Records in `host`'s LVM record that `vg/lv` (UUID `uuid`) is now active in `mode`, or no
/// longer active (`None`), keeping the rest of the record and its lease; creates the record
/// when there is none. For the block script and `migrate run`, between the publisher's rounds.
pub fn record_lv(
    reg: &dyn Registry,
    host: &str,
    vg: &str,
    lv: &str,
    uuid: &str,
    mode: Option<LvMode>,
    now_unix: u64,
) -> Result<()> {
    let kv = reg.get(&lvm_key(host))?;
    let lease = kv.as_ref().map_or(0, |kv| kv.lease);
    let mut st = match &kv {
        Some(kv) => decode::<HostLvm>(reg, kv)?,
        None => HostLvm {
            host: host.into(),
            host_id: None,
            io_timeout: None,
            taken_unix: now_unix,
            vgs: Vec::new(),
            lvs: Vec::new(),
        },
    };
    st.lvs
        .retain(|l| !(l.uuid == uuid || (l.vg == vg && l.lv == lv)));
    if let Some(mode) = mode {
        st.lvs.push(LvState {
            vg: vg.into(),
            lv: lv.into(),
            uuid: uuid.into(),
            mode,
            open: false,
        });
    }
    st.taken_unix = now_unix;
    publish_lvm_state(reg, &st, lease)
}

/// `domu`'s migration record, if one is registered.
pub fn migration(reg: &dyn Registry, domu: &str) -> Result<Option<Migration>> {
    reg.get(&migration_key(domu))?
        .map(|kv| decode::<Migration>(reg, &kv))
        .transpose()
}

/// A migration in flight: the source and destination may both hold the domU's LVs (shared)
/// until it is finished or aborted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migration {
    /// The domU.
    pub domu: String,
    /// Source host.
    pub from: String,
    /// Destination host.
    pub to: String,
    /// The LVs handed over, by UUID.
    pub lv_uuids: Vec<String>,
    /// When it was registered (seconds since the epoch).
    pub started_unix: u64,
}

/// The key of `domu`'s migration record.
pub fn migration_key(domu: &str) -> String {
    format!("{MIGRATIONS_PREFIX}{domu}")
}

/// Registers `m`; fails when a migration of the same domU is already registered (naming it).
pub fn register_migration(reg: &dyn Registry, m: &Migration) -> Result<()> {
    let key = migration_key(&m.domu);
    let value = serde_json::to_vec(m).map_err(|e| Error::BadValue {
        registry: reg.url(),
        key: key.clone(),
        message: e.to_string(),
    })?;
    let r = reg.txn(
        &[Compare::Absent(key.clone())],
        &[Op::Put {
            key: key.clone(),
            value,
            lease: 0,
        }],
    )?;
    if r.succeeded {
        return Ok(());
    }
    let other = reg
        .get(&key)?
        .map(|kv| decode::<Migration>(reg, &kv))
        .transpose()?;
    Err(Error::Registry {
        registry: reg.url(),
        action: format!("register the migration of {} to {}", m.domu, m.to),
        message: match other {
            Some(o) => format!(
                "a migration of {} from {} to {} is already registered",
                o.domu, o.from, o.to
            ),
            None => "a migration of it is already registered".into(),
        },
    })
}

/// Removes `domu`'s migration record (finished or aborted).
pub fn finish_migration(reg: &dyn Registry, domu: &str) -> Result<()> {
    reg.txn(
        &[],
        &[Op::Delete {
            key: migration_key(domu),
        }],
    )?;
    Ok(())
}

/// Every registered migration, sorted by domU.
pub fn migrations(reg: &dyn Registry) -> Result<Vec<Migration>> {
    let snap = reg.range(MIGRATIONS_PREFIX)?;
    let mut out = snap
        .kvs
        .iter()
        .map(|kv| decode::<Migration>(reg, kv))
        .collect::<Result<Vec<_>>>()?;
    out.sort_by(|a, b| a.domu.cmp(&b.domu));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg() -> (tempfile::TempDir, std::sync::Arc<dyn Registry>) {
        let d = tempfile::tempdir().unwrap();
        let r = crate::open(&format!("local:{}", d.path().display())).unwrap();
        (d, r)
    }

    #[test]
    fn lvm_records_round_trip_sorted() {
        let (_d, r) = reg();
        let lv = |lv: &str| LvState {
            vg: "vg".into(),
            lv: lv.into(),
            uuid: format!("u-{lv}"),
            mode: LvMode::Exclusive,
            open: false,
        };
        let st = HostLvm {
            host: "b".into(),
            host_id: Some(2),
            io_timeout: Some(10),
            taken_unix: 1,
            vgs: vec![],
            lvs: vec![lv("z"), lv("a")],
        };
        publish_lvm_state(&*r, &st, 0).unwrap();
        publish_lvm_state(
            &*r,
            &HostLvm {
                host: "a".into(),
                ..st.clone()
            },
            0,
        )
        .unwrap();
        let all = cluster_lvm_state(&*r).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].host, "a");
        assert_eq!(all[1].lvs[0].lv, "a");
    }

    #[test]
    fn a_second_migration_of_one_domu_is_refused_naming_the_first() {
        let (_d, r) = reg();
        let m = Migration {
            domu: "web1".into(),
            from: "a".into(),
            to: "b".into(),
            lv_uuids: vec!["u1".into()],
            started_unix: 5,
        };
        register_migration(&*r, &m).unwrap();
        let err = register_migration(
            &*r,
            &Migration {
                to: "c".into(),
                ..m.clone()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("web1 from a to b is already registered"),
            "{err}"
        );
        assert_eq!(migrations(&*r).unwrap(), vec![m]);
        finish_migration(&*r, "web1").unwrap();
        assert!(migrations(&*r).unwrap().is_empty());
    }
}
