//! The registry: a small linearizable key-value store with compare-and-set transactions,
//! prefix reads, change notification and host liveness (leases). Three backends implement it:
//! [`crate::local::LocalRegistry`] (`local:DIR`), [`crate::san::SanRegistry`] (`san:VG/LV`)
//! and [`crate::etcd::EtcdRegistry`] (`etcd://HOST:PORT,...`). Everything else in hostsync is written against the trait.
//!
//! A lease only says "this host is alive"; it is never used as a lock on storage (etcd's own
//! documentation says lease-based locks cannot protect external resources).

use std::sync::Arc;
use std::time::Duration;

use crate::{Error, Result};

/// One key with its value and etcd-style revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// Revision of the key's creation.
    pub create_revision: i64,
    /// Revision of the key's last change.
    pub mod_revision: i64,
    /// The lease the key is attached to (0: none).
    pub lease: i64,
}

/// A condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key does not exist (create_revision == 0).
    Absent(String),
    /// The key exists and was last changed at this revision.
    ModRevision(String, i64),
}

impl Compare {
    /// The key the condition is about.
    pub fn key(&self) -> &str {
        match self {
            Compare::Absent(k) | Compare::ModRevision(k, _) => k,
        }
    }
}

/// A write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set a key, attached to `lease` unless it is 0.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
        /// Lease id, 0 for none.
        lease: i64,
    },
    /// Remove a key.
    Delete {
        /// The key.
        key: String,
    },
}

impl Op {
    /// A put without a lease.
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Op::Put {
            key: key.into(),
            value: value.into(),
            lease: 0,
        }
    }
}

/// What a transaction did.
#[derive(Debug, Clone)]
pub struct TxnResult {
    /// Whether every condition held (and the writes were made).
    pub succeeded: bool,
    /// The registry's revision after the transaction.
    pub revision: i64,
    /// When the conditions failed: the current value of each compared key that exists.
    pub current: Vec<Kv>,
}

/// A consistent read of a prefix.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The revision the read was made at.
    pub revision: i64,
    /// The keys under the prefix, sorted.
    pub kvs: Vec<Kv>,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A key was created or changed.
    Put(Kv),
    /// A key was deleted (or its lease expired).
    Delete {
        /// The key.
        key: String,
        /// The revision of the deletion.
        revision: i64,
    },
}

/// What waiting on a watch gave.
#[derive(Debug, Clone)]
pub enum WatchEvent {
    /// Changes, in revision order, up to and including `revision`.
    Changes {
        /// The newest revision covered.
        revision: i64,
        /// The changes.
        events: Vec<Event>,
    },
    /// The history the watch needed was compacted away: the caller must read in full and
    /// watch again from the read's revision + 1.
    Resync,
    /// Nothing happened within the timeout.
    Idle,
}

/// A stream of changes under a prefix.
pub trait Watcher: Send {
    /// Waits up to `timeout` for changes.
    fn next(&mut self, timeout: Duration) -> Result<WatchEvent>;
}

/// The registry contract. Every implementation is linearizable: a transaction that returned
/// is seen by every later read from any host.
pub trait Registry: Send + Sync {
    /// The registry's URL, for messages.
    fn url(&self) -> String;
    /// Reads one key.
    fn get(&self, key: &str) -> Result<Option<Kv>>;
    /// Reads every key under `prefix`, at one revision.
    fn range(&self, prefix: &str) -> Result<Snapshot>;
    /// Applies `then` if every condition in `when` holds, atomically.
    fn txn(&self, when: &[Compare], then: &[Op]) -> Result<TxnResult>;
    /// Watches `prefix` from `from_revision` (inclusive).
    fn watch(&self, prefix: &str, from_revision: i64) -> Result<Box<dyn Watcher>>;
    /// Grants a liveness lease of `ttl_s` seconds.
    fn grant_lease(&self, ttl_s: i64) -> Result<i64>;
    /// Renews a lease; false if it has already expired (its keys are gone).
    fn keep_alive(&self, lease: i64) -> Result<bool>;
    /// Revokes a lease, deleting its keys.
    fn revoke_lease(&self, lease: i64) -> Result<()>;
    /// Drops history older than `revision` (watches behind it get [`WatchEvent::Resync`]).
    fn compact(&self, revision: i64) -> Result<()>;
}

/// Opens a registry from its URL: `local:DIR`, `san:VG/LV` (or `san:/FILE`, the same format
/// in a file) or `etcd://HOST:PORT[,HOST:PORT...]`.
pub fn open(url: &str) -> Result<Arc<dyn Registry>> {
    if let Some(dir) = url.strip_prefix("local:") {
        if dir.is_empty() {
            return Err(Error::BadUrl {
                url: url.into(),
                reason: "local: needs a directory, as in local:/var/lib/hostsync".into(),
            });
        }
        return Ok(Arc::new(crate::local::LocalRegistry::open(dir)?));
    }
    if let Some(spec) = url.strip_prefix("san:") {
        return Ok(Arc::new(crate::san::SanRegistry::open(spec)?));
    }
    if let Some(rest) = url.strip_prefix("etcd://") {
        let endpoints: Vec<String> = rest
            .split(',')
            .map(|s| s.trim().trim_end_matches('/'))
            .filter(|s| !s.is_empty())
            .map(|s| format!("http://{s}"))
            .collect();
        if endpoints.is_empty() {
            return Err(Error::BadUrl {
                url: url.into(),
                reason: "etcd:// needs at least one HOST:PORT".into(),
            });
        }
        return Ok(Arc::new(crate::etcd::EtcdRegistry::connect(
            url, &endpoints,
        )?));
    }
    Err(Error::BadUrl {
        url: url.into(),
        reason: "expected local:DIR, san:VG/LV, san:/FILE or etcd://HOST:PORT,...".into(),
    })
}
