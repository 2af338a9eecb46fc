//! Host state under `hosts/<host>/`, tied to the host's liveness: the maps it has (name, WWID,
//! active and total paths), attached to a lease the host keeps alive. When the host stops
//! renewing, its state disappears with the lease. A lease says "alive", nothing more: it is
//! never a lock on storage.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::Result;
use crate::names::decode;
use crate::registry::{Op, Registry};

/// Prefix of host keys.
pub const HOSTS_PREFIX: &str = "hosts/";

/// One multipath map as a host sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapState {
    /// The map's device-mapper name.
    pub name: String,
    /// The LUN's WWID.
    pub wwid: String,
    /// Paths that are up.
    pub active_paths: u32,
    /// All paths.
    pub total_paths: u32,
}

/// What a host published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostState {
    /// The host.
    pub host: String,
    /// Its maps.
    pub maps: Vec<MapState>,
}

fn state_key(host: &str) -> String {
    format!("{HOSTS_PREFIX}{host}/state")
}

/// Publishes `maps` as `host`'s state, attached to `lease`.
pub fn publish_host_state(
    reg: &dyn Registry,
    host: &str,
    lease: i64,
    maps: &[MapState],
) -> Result<()> {
    let mut maps = maps.to_vec();
    maps.sort_by(|a, b| a.name.cmp(&b.name).then(a.wwid.cmp(&b.wwid)));
    let st = HostState {
        host: host.into(),
        maps,
    };
    let value = serde_json::to_vec(&st).unwrap_or_default();
    reg.txn(
        &[],
        &[Op::Put {
            key: state_key(host),
            value,
            lease,
        }],
    )?;
    Ok(())
}

/// The state of every live host, sorted by host.
pub fn cluster_state(reg: &dyn Registry) -> Result<Vec<HostState>> {
    let snap = reg.range(HOSTS_PREFIX)?;
    let mut out = Vec::new();
    for kv in &snap.kvs {
        if kv.key.ends_with("/state") {
            out.push(decode::<HostState>(reg, kv)?);
        }
    }
    out.sort_by(|a, b| a.host.cmp(&b.host));
    Ok(out)
}

/// A host's presence in the registry: its lease and its last published state. The caller
/// calls [`HostPresence::keep_alive`] more often than the TTL (the registry does not renew
/// leases by itself); if the lease was lost anyway, a new one is taken and the state
/// published again.
pub struct HostPresence {
    reg: Arc<dyn Registry>,
    host: String,
    ttl_s: i64,
    lease: i64,
    maps: Vec<MapState>,
}

impl std::fmt::Debug for HostPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostPresence")
            .field("host", &self.host)
            .field("lease", &self.lease)
            .finish()
    }
}

impl HostPresence {
    /// Takes a lease of `ttl_s` seconds for `host`.
    pub fn join(reg: Arc<dyn Registry>, host: &str, ttl_s: i64) -> Result<Self> {
        let lease = reg.grant_lease(ttl_s)?;
        Ok(Self {
            reg,
            host: host.into(),
            ttl_s,
            lease,
            maps: Vec::new(),
        })
    }

    /// Publishes the host's maps.
    pub fn publish(&mut self, maps: &[MapState]) -> Result<()> {
        self.maps = maps.to_vec();
        match publish_host_state(&*self.reg, &self.host, self.lease, maps) {
            Ok(()) => Ok(()),
            Err(e) => {
                // The lease may have expired while we were away: take a new one, once.
                if self.reg.keep_alive(self.lease)? {
                    return Err(e);
                }
                self.lease = self.reg.grant_lease(self.ttl_s)?;
                publish_host_state(&*self.reg, &self.host, self.lease, maps)
            }
        }
    }

    /// Renews the lease; re-publishes under a new lease if it had expired. Returns false in
    /// that case.
    pub fn keep_alive(&mut self) -> Result<bool> {
        if self.reg.keep_alive(self.lease)? {
            return Ok(true);
        }
        tracing::warn!(host = %self.host, "liveness lease expired; publishing again");
        self.lease = self.reg.grant_lease(self.ttl_s)?;
        let maps = self.maps.clone();
        publish_host_state(&*self.reg, &self.host, self.lease, &maps)?;
        Ok(false)
    }

    /// Leaves: revokes the lease, which removes the host's state.
    pub fn leave(self) -> Result<()> {
        self.reg.revoke_lease(self.lease)
    }
}
