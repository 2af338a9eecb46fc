//! The registry's state machine, shared by the backends that keep the whole registry
//! themselves (`local:DIR` in a journal, `san:` in checksummed slots on a shared LV): keys with
//! etcd-style revisions, leases, the change log that feeds watches, the records that change
//! them ([`Rec`]), and the [`Registry`] operations written once against a [`Store`] (a way to
//! read the newest committed state and to apply records under the backend's write mutex).
//! Moved out of local.rs when the san backend arrived.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::registry::{Compare, Event, Kv, Op, Snapshot, TxnResult, WatchEvent, Watcher};
use crate::{Error, Result};

/// How many changes are kept for watches; a watch further behind resynchronises.
pub(crate) const LOG_KEEP: usize = 4096;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Entry {
    value: String,
    create: i64,
    #[serde(rename = "mod")]
    modr: i64,
    #[serde(default)]
    lease: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LeaseEntry {
    pub(crate) ttl_s: i64,
    /// When the lease runs out, on this process's wall clock. The san backend does not store
    /// it: each reader computes it from when it last saw `beat` advance.
    pub(crate) expires_ms: u64,
    /// Renewal counter: every keep-alive adds one (what san readers watch advance).
    #[serde(default)]
    pub(crate) beat: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LogEntry {
    rev: i64,
    key: String,
    /// None: deleted.
    value: Option<String>,
    create: i64,
    lease: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct State {
    pub(crate) revision: i64,
    /// Changes at or below this revision are no longer in the log.
    pub(crate) compacted: i64,
    pub(crate) next_lease: i64,
    pub(crate) kvs: BTreeMap<String, Entry>,
    pub(crate) leases: BTreeMap<i64, LeaseEntry>,
    /// Recent changes, for watches (the journal rebuilds it; the san backend stores it).
    #[serde(skip)]
    pub(crate) log: Vec<LogEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PutRec {
    k: String,
    v: String,
    #[serde(default)]
    lease: i64,
}

/// One journal line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Rec {
    /// The whole state (first line after the journal was replaced).
    Snapshot(State),
    /// Writes at revision `rev`, and leases revoked (their keys are in `dels`).
    Txn {
        rev: i64,
        #[serde(default)]
        puts: Vec<PutRec>,
        #[serde(default)]
        dels: Vec<String>,
        #[serde(default)]
        revoke: Vec<i64>,
    },
    /// A lease granted or renewed.
    Lease {
        id: i64,
        ttl_s: i64,
        expires_ms: u64,
        #[serde(default)]
        beat: u64,
    },
    /// History up to `rev` dropped.
    Compact { rev: i64 },
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl State {
    fn lease_alive(&self, lease: i64, now: u64) -> bool {
        lease == 0 || self.leases.get(&lease).is_some_and(|l| l.expires_ms > now)
    }

    fn kv(&self, key: &str, e: &Entry) -> Kv {
        Kv {
            key: key.to_string(),
            value: e.value.clone().into_bytes(),
            create_revision: e.create,
            mod_revision: e.modr,
            lease: e.lease,
        }
    }

    /// The live entry of `key` (keys of expired leases are treated as gone).
    fn live(&self, key: &str, now: u64) -> Option<&Entry> {
        self.kvs.get(key).filter(|e| self.lease_alive(e.lease, now))
    }

    pub(crate) fn apply(&mut self, rec: &Rec) {
        match rec {
            Rec::Snapshot(s) => {
                *self = s.clone();
                self.compacted = self.compacted.max(self.revision);
            }
            Rec::Txn {
                rev,
                puts,
                dels,
                revoke,
            } => {
                for id in revoke {
                    self.leases.remove(id);
                }
                if !puts.is_empty() || !dels.is_empty() {
                    self.revision = *rev;
                }
                for k in dels {
                    if self.kvs.remove(k).is_some() {
                        self.log.push(LogEntry {
                            rev: *rev,
                            key: k.clone(),
                            value: None,
                            create: 0,
                            lease: 0,
                        });
                    }
                }
                for p in puts {
                    let create = self.kvs.get(&p.k).map_or(*rev, |e| e.create);
                    self.kvs.insert(
                        p.k.clone(),
                        Entry {
                            value: p.v.clone(),
                            create,
                            modr: *rev,
                            lease: p.lease,
                        },
                    );
                    self.log.push(LogEntry {
                        rev: *rev,
                        key: p.k.clone(),
                        value: Some(p.v.clone()),
                        create,
                        lease: p.lease,
                    });
                }
                self.trim_log();
            }
            Rec::Lease {
                id,
                ttl_s,
                expires_ms,
                beat,
            } => {
                self.next_lease = self.next_lease.max(*id);
                self.leases.insert(
                    *id,
                    LeaseEntry {
                        ttl_s: *ttl_s,
                        expires_ms: *expires_ms,
                        beat: *beat,
                    },
                );
            }
            Rec::Compact { rev } => {
                self.log.retain(|e| e.rev > *rev);
                self.compacted = self.compacted.max((*rev).min(self.revision));
            }
        }
    }

    fn trim_log(&mut self) {
        if self.log.len() <= LOG_KEEP {
            return;
        }
        // Cut at a revision boundary so no transaction is half in the log.
        let mut n = self.log.len() - LOG_KEEP;
        let cut_rev = self.log[n - 1].rev;
        while n < self.log.len() && self.log[n].rev == cut_rev {
            n += 1;
        }
        self.log.drain(..n);
        self.compacted = self.compacted.max(cut_rev);
    }

    /// The record revoking every expired lease and deleting its keys, if any expired.
    pub(crate) fn expiry(&self, now: u64) -> Option<Rec> {
        let dead: Vec<i64> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expires_ms <= now)
            .map(|(id, _)| *id)
            .collect();
        if dead.is_empty() {
            return None;
        }
        Some(self.revoke_rec(dead))
    }

    fn revoke_rec(&self, ids: Vec<i64>) -> Rec {
        let dels = self
            .kvs
            .iter()
            .filter(|(_, e)| e.lease != 0 && ids.contains(&e.lease))
            .map(|(k, _)| k.clone())
            .collect();
        Rec::Txn {
            rev: self.revision + 1,
            puts: Vec::new(),
            dels,
            revoke: ids,
        }
    }
}

/// Makes journal records during a write.
pub(crate) struct Emitter<'a> {
    pub(crate) state: &'a mut State,
    pub(crate) lines: Vec<Vec<u8>>,
}

impl Emitter<'_> {
    pub(crate) fn emit(&mut self, rec: Rec) {
        self.state.apply(&rec);
        // Serializing these plain records cannot fail.
        self.lines
            .push(serde_json::to_vec(&rec).unwrap_or_default());
    }
}

/// The failed result of `when` on `st`, or None if every condition holds.
pub(crate) fn check(st: &State, when: &[Compare]) -> Option<TxnResult> {
    let now = now_ms();
    let ok = when.iter().all(|c| match c {
        Compare::Absent(k) => st.live(k, now).is_none(),
        Compare::ModRevision(k, r) => st.live(k, now).is_some_and(|e| e.modr == *r),
    });
    if ok {
        return None;
    }
    let current = when
        .iter()
        .filter_map(|c| st.live(c.key(), now).map(|e| st.kv(c.key(), e)))
        .collect();
    Some(TxnResult {
        succeeded: false,
        revision: st.revision,
        current,
    })
}

/// The writer's part of [`Store::write`]: takes the state out of `state` (without a copy when
/// no reader shares it), revokes the leases it judges expired, lets `f` emit records, and
/// returns the new state, the records' lines and `f`'s result.
pub(crate) fn run_writer<T>(
    state: Arc<State>,
    f: impl FnOnce(&mut Emitter<'_>) -> Result<T>,
) -> Result<(State, Vec<Vec<u8>>, T)> {
    let mut state = Arc::try_unwrap(state).unwrap_or_else(|a| (*a).clone());
    let mut em = Emitter {
        state: &mut state,
        lines: Vec::new(),
    };
    if let Some(r) = em.state.expiry(now_ms()) {
        em.emit(r);
    }
    let out = f(&mut em)?;
    let lines = em.lines;
    Ok((state, lines, out))
}

/// A backend that keeps the whole registry itself.
pub(crate) trait Store: Clone + Send + Sync + 'static {
    /// The registry's URL, for messages.
    fn url(&self) -> String;
    /// The newest committed state.
    fn load(&self) -> Result<Arc<State>>;
    /// Under the backend's write mutex: lets `f` emit records against the newest state (each
    /// applied before the next is made; expired leases already revoked) and commits them
    /// durably before returning.
    fn write<T>(&self, f: impl FnOnce(&mut Emitter<'_>) -> Result<T>) -> Result<T>;
    /// How often a watch looks for changes.
    fn poll(&self) -> Duration;
    /// Whether a read is cheap enough to answer a doomed transaction before taking the write
    /// mutex (true unless every read costs a cluster lock, as on a shared LV).
    fn precheck(&self) -> bool {
        true
    }
    /// An error about this registry.
    fn err(&self, action: &str, message: impl ToString) -> Error {
        Error::Registry {
            registry: self.url(),
            action: action.into(),
            message: message.to_string(),
        }
    }
}

/// Implements [`crate::registry::Registry`] for a [`Store`] with the functions of this module.
macro_rules! registry_via_store {
    ($t:ty) => {
        impl $crate::registry::Registry for $t {
            fn url(&self) -> String {
                $crate::kvstate::Store::url(self)
            }
            fn get(&self, key: &str) -> $crate::Result<Option<$crate::registry::Kv>> {
                $crate::kvstate::get(self, key)
            }
            fn range(&self, prefix: &str) -> $crate::Result<$crate::registry::Snapshot> {
                $crate::kvstate::range(self, prefix)
            }
            fn txn(
                &self,
                when: &[$crate::registry::Compare],
                then: &[$crate::registry::Op],
            ) -> $crate::Result<$crate::registry::TxnResult> {
                $crate::kvstate::txn(self, when, then)
            }
            fn watch(
                &self,
                prefix: &str,
                from_revision: i64,
            ) -> $crate::Result<Box<dyn $crate::registry::Watcher>> {
                $crate::kvstate::watch(self, prefix, from_revision)
            }
            fn grant_lease(&self, ttl_s: i64) -> $crate::Result<i64> {
                $crate::kvstate::grant_lease(self, ttl_s)
            }
            fn keep_alive(&self, lease: i64) -> $crate::Result<bool> {
                $crate::kvstate::keep_alive(self, lease)
            }
            fn revoke_lease(&self, lease: i64) -> $crate::Result<()> {
                $crate::kvstate::revoke_lease(self, lease)
            }
            fn compact(&self, revision: i64) -> $crate::Result<()> {
                $crate::kvstate::compact(self, revision)
            }
        }
    };
}
pub(crate) use registry_via_store;

pub(crate) fn get<S: Store>(s: &S, key: &str) -> Result<Option<Kv>> {
    let st = s.load()?;
    Ok(st.live(key, now_ms()).map(|e| st.kv(key, e)))
}

pub(crate) fn range<S: Store>(s: &S, prefix: &str) -> Result<Snapshot> {
    let st = s.load()?;
    let now = now_ms();
    let kvs = st
        .kvs
        .range(prefix.to_string()..)
        .take_while(|(k, _)| k.starts_with(prefix))
        .filter(|(_, e)| st.lease_alive(e.lease, now))
        .map(|(k, e)| st.kv(k, e))
        .collect();
    Ok(Snapshot {
        revision: st.revision,
        kvs,
    })
}

pub(crate) fn txn<S: Store>(s: &S, when: &[Compare], then: &[Op]) -> Result<TxnResult> {
    let mut puts = Vec::new();
    let mut dels = Vec::new();
    for op in then {
        match op {
            Op::Put { key, value, lease } => puts.push(PutRec {
                k: key.clone(),
                v: String::from_utf8(value.clone()).map_err(|_| {
                    s.err("store a value", format!("the value of {key} is not UTF-8"))
                })?,
                lease: *lease,
            }),
            Op::Delete { key } => dels.push(key.clone()),
        }
    }
    // A condition that already fails on the last committed state fails now: answer
    // without the lock, so losers of a race do not queue behind the writers.
    if s.precheck()
        && let Some(r) = check(&*s.load()?, when)
    {
        return Ok(r);
    }
    s.write(|em| {
        if let Some(r) = check(em.state, when) {
            return Ok(r);
        }
        for p in &puts {
            if p.lease != 0 && !em.state.leases.contains_key(&p.lease) {
                return Err(s.err(
                    "write",
                    format!(
                        "lease {} for {} has expired or does not exist",
                        p.lease, p.k
                    ),
                ));
            }
        }
        if then.is_empty() {
            return Ok(TxnResult {
                succeeded: true,
                revision: em.state.revision,
                current: Vec::new(),
            });
        }
        let rev = em.state.revision + 1;
        em.emit(Rec::Txn {
            rev,
            puts,
            dels,
            revoke: Vec::new(),
        });
        Ok(TxnResult {
            succeeded: true,
            revision: rev,
            current: Vec::new(),
        })
    })
}

pub(crate) fn watch<S: Store>(s: &S, prefix: &str, from_revision: i64) -> Result<Box<dyn Watcher>> {
    Ok(Box::new(StoreWatcher {
        store: s.clone(),
        prefix: prefix.to_string(),
        next: from_revision.max(1),
    }))
}

pub(crate) fn grant_lease<S: Store>(s: &S, ttl_s: i64) -> Result<i64> {
    s.write(|em| {
        let id = em.state.next_lease + 1;
        em.emit(Rec::Lease {
            id,
            ttl_s,
            expires_ms: now_ms() + (ttl_s.max(1) as u64) * 1000,
            beat: 0,
        });
        Ok(id)
    })
}

pub(crate) fn keep_alive<S: Store>(s: &S, lease: i64) -> Result<bool> {
    s.write(|em| match em.state.leases.get(&lease) {
        Some(l) => {
            let (ttl_s, beat) = (l.ttl_s, l.beat + 1);
            em.emit(Rec::Lease {
                id: lease,
                ttl_s,
                expires_ms: now_ms() + (ttl_s.max(1) as u64) * 1000,
                beat,
            });
            Ok(true)
        }
        None => Ok(false),
    })
}

pub(crate) fn revoke_lease<S: Store>(s: &S, lease: i64) -> Result<()> {
    s.write(|em| {
        if em.state.leases.contains_key(&lease) {
            let r = em.state.revoke_rec(vec![lease]);
            em.emit(r);
        }
        Ok(())
    })
}

pub(crate) fn compact<S: Store>(s: &S, revision: i64) -> Result<()> {
    s.write(|em| {
        em.emit(Rec::Compact { rev: revision });
        Ok(())
    })
}

pub(crate) struct StoreWatcher<S> {
    store: S,
    prefix: String,
    next: i64,
}

impl<S: Store> Watcher for StoreWatcher<S> {
    fn next(&mut self, timeout: Duration) -> Result<WatchEvent> {
        let start = Instant::now();
        loop {
            let st = self.store.load()?;
            if self.next <= st.compacted {
                return Ok(WatchEvent::Resync);
            }
            if st.revision >= self.next {
                let events: Vec<Event> = st
                    .log
                    .iter()
                    .filter(|e| e.rev >= self.next && e.key.starts_with(&self.prefix))
                    .map(|e| match &e.value {
                        Some(v) => Event::Put(Kv {
                            key: e.key.clone(),
                            value: v.clone().into_bytes(),
                            create_revision: e.create,
                            mod_revision: e.rev,
                            lease: e.lease,
                        }),
                        None => Event::Delete {
                            key: e.key.clone(),
                            revision: e.rev,
                        },
                    })
                    .collect();
                self.next = st.revision + 1;
                if !events.is_empty() {
                    return Ok(WatchEvent::Changes {
                        revision: st.revision,
                        events,
                    });
                }
            }
            if start.elapsed() >= timeout {
                return Ok(WatchEvent::Idle);
            }
            std::thread::sleep(
                self.store
                    .poll()
                    .min(timeout.saturating_sub(start.elapsed())),
            );
        }
    }
}
