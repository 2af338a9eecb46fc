//! The registry's state machine, shared by the backends that keep the whole registry
//! themselves (`local:DIR` in a journal, `san:` in checksummed slots on a shared LV): keys with
//! etcd-style revisions, leases, the change log that feeds watches, the records that change
//! them ([`Rec`]), and the [`Registry`] operations written once against a [`Store`] (a way to
//! read the newest committed state and to apply records under the backend's write mutex).
//!
//! Watches do not read the backend each: each process keeps one [`Feed`] per registry, which
//! wakes every watch of it when the state moved. Where a read is cheap (a journal, a file) one
//! reader thread per feed (started with the first watch, ended after the last) looks for
//! changes every [`Store::poll`], so a hundred watches in one process cost one read per
//! change, not a hundred polls; a write made by this process wakes them at once. Where a read
//! takes a cluster lock (the san backend on an LV) no thread reads behind the caller's back:
//! each waiting watch reads for itself, and writes of this process still wake them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
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
    /// `f` of the state this process has cached for this registry, if any, run under the
    /// cache's lock: a watch that held the state while a writer takes it would make the
    /// writer copy it whole.
    fn with_cached<T>(&self, f: impl FnOnce(&State) -> T) -> Option<T>;
    /// Whether one reader thread per process may read for every watch (true when a read is
    /// cheap); false when each read takes a cluster lock: then only a waiting watch reads.
    fn background_reads(&self) -> bool {
        true
    }
    /// [`crate::registry::Registry::hold`]: nothing, unless the backend's mutex is costly.
    fn batch(&self, write: bool) -> Result<crate::registry::Held> {
        let _ = write;
        Ok(crate::registry::Held::none())
    }
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
            fn hold(&self, write: bool) -> $crate::Result<$crate::registry::Held> {
                $crate::kvstate::Store::batch(self, write)
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
    write(s, |em| {
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
    if s.background_reads() {
        // Read once now, so the watch starts from this process's latest view.
        s.load()?;
    }
    Ok(Box::new(StoreWatcher {
        feed: join_feed(s)?,
        store: s.clone(),
        cursor: Cursor {
            prefix: prefix.to_string(),
            next: from_revision.max(1),
        },
    }))
}

/// [`Store::write`], then wakes this process's watches of the registry.
fn write<S: Store, T>(s: &S, f: impl FnOnce(&mut Emitter<'_>) -> Result<T>) -> Result<T> {
    let out = s.write(f)?;
    if let Some(key) = s.with_cached(|st| (st.revision, st.compacted)) {
        let feed = feeds().lock().ok().and_then(|f| f.get(&s.url()).cloned());
        if let Some(feed) = feed {
            feed.announce(key);
        }
    }
    Ok(out)
}

pub(crate) fn grant_lease<S: Store>(s: &S, ttl_s: i64) -> Result<i64> {
    write(s, |em| {
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
    write(s, |em| match em.state.leases.get(&lease) {
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
    write(s, |em| {
        if em.state.leases.contains_key(&lease) {
            let r = em.state.revoke_rec(vec![lease]);
            em.emit(r);
        }
        Ok(())
    })
}

pub(crate) fn compact<S: Store>(s: &S, revision: i64) -> Result<()> {
    write(s, |em| {
        em.emit(Rec::Compact { rev: revision });
        Ok(())
    })
}

/// What the watches of one registry in this process share.
#[derive(Debug, Default)]
struct FeedInner {
    /// Live watches; the reader thread ends when this drops to zero.
    watchers: usize,
    /// A reader thread is running.
    reader: bool,
    /// Bumped whenever the cached state may have moved (or a read failed).
    seq: u64,
    /// (revision, compacted) last announced, so an unchanged poll wakes nobody.
    seen: (i64, i64),
    /// The reader's last read failed: watches read themselves to report the error.
    failed: bool,
}

/// One per process and registry: wakes every watch of it when the state moved.
#[derive(Debug, Default)]
pub(crate) struct Feed {
    inner: Mutex<FeedInner>,
    changed: Condvar,
}

type Feeds = Mutex<HashMap<String, Arc<Feed>>>;

/// The feeds of this process, by registry URL.
fn feeds() -> &'static Feeds {
    static FEEDS: OnceLock<Feeds> = OnceLock::new();
    FEEDS.get_or_init(Default::default)
}

impl Feed {
    fn lock(&self) -> MutexGuard<'_, FeedInner> {
        // The guarded fields are plain counters, consistent after any panic.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Announces the state at `key` (revision, compacted) if it differs from the last one.
    fn announce(&self, key: (i64, i64)) {
        let mut g = self.lock();
        if g.seen != key || g.failed {
            g.seen = key;
            g.failed = false;
            g.seq += 1;
            self.changed.notify_all();
        }
    }

    fn announce_failure(&self) {
        let mut g = self.lock();
        g.failed = true;
        g.seq += 1;
        self.changed.notify_all();
    }

    /// The reader thread: reads the registry every poll while any watch is alive.
    fn read_loop<S: Store>(self: Arc<Self>, store: S) {
        loop {
            std::thread::sleep(store.poll());
            {
                let mut g = self.lock();
                if g.watchers == 0 {
                    g.reader = false;
                    return;
                }
            }
            match store.load() {
                Ok(st) => {
                    let key = (st.revision, st.compacted);
                    drop(st);
                    self.announce(key);
                }
                Err(e) => {
                    tracing::debug!(registry = %store.url(), error = %e, "the watch feed could not read the registry");
                    self.announce_failure();
                }
            }
        }
    }
}

/// This process's feed of `s`, with one more watch counted on it (and, where reads are cheap,
/// its reader thread started if none runs).
fn join_feed<S: Store>(s: &S) -> Result<Arc<Feed>> {
    let feed = feeds()
        .lock()
        .map_err(|_| s.err("watch", "the watch feeds were poisoned"))?
        .entry(s.url())
        .or_default()
        .clone();
    let mut g = feed.lock();
    g.watchers += 1;
    if !g.reader && s.background_reads() {
        let (f, store) = (feed.clone(), s.clone());
        std::thread::Builder::new()
            .name("hostsync-watch-feed".into())
            .spawn(move || f.read_loop(store))
            .map_err(|e| {
                g.watchers -= 1;
                s.err("start its watch reader", e)
            })?;
        g.reader = true;
    }
    drop(g);
    Ok(feed)
}

/// Where a watch is: its prefix and the first revision it has not reported.
struct Cursor {
    prefix: String,
    next: i64,
}

impl Cursor {
    /// What `st` holds for this watch from `self.next` on: a resync, the changes under the
    /// prefix (the log is in revision order), or None; moves `self.next` past `st`.
    fn step(&mut self, st: &State) -> Option<WatchEvent> {
        if self.next <= st.compacted {
            return Some(WatchEvent::Resync);
        }
        if st.revision < self.next {
            return None;
        }
        let from = st.log.partition_point(|e| e.rev < self.next);
        let events: Vec<Event> = st.log[from..]
            .iter()
            .filter(|e| e.key.starts_with(&self.prefix))
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
        (!events.is_empty()).then_some(WatchEvent::Changes {
            revision: st.revision,
            events,
        })
    }
}

pub(crate) struct StoreWatcher<S: Store> {
    feed: Arc<Feed>,
    store: S,
    cursor: Cursor,
}

impl<S: Store> Watcher for StoreWatcher<S> {
    fn next(&mut self, timeout: Duration) -> Result<WatchEvent> {
        let start = Instant::now();
        let background = self.store.background_reads();
        let mut seq = self.feed.lock().seq;
        loop {
            // Where the feed's reader keeps the process's cached state current, use it; read
            // ourselves when there is none (a failed write dropped it), when the reader failed
            // (so the error reaches the caller) or when no reader runs.
            let failed = self.feed.lock().failed;
            let (store, cursor) = (&self.store, &mut self.cursor);
            let got = if background && !failed {
                store.with_cached(|st| cursor.step(st))
            } else {
                None
            };
            let got = match got {
                Some(g) => g,
                None => {
                    let st = store.load()?;
                    cursor.step(&st)
                }
            };
            if let Some(ev) = got {
                return Ok(ev);
            }
            // Sleep until the feed announces a change, the timeout ends or (without a reader)
            // it is time to read again.
            let read_at = start.elapsed() + self.store.poll();
            let mut g = self.feed.lock();
            loop {
                if g.seq != seq {
                    seq = g.seq;
                    break;
                }
                let left = timeout.saturating_sub(start.elapsed());
                if left.is_zero() {
                    return Ok(WatchEvent::Idle);
                }
                let until_read = read_at.saturating_sub(start.elapsed());
                if !background && until_read.is_zero() {
                    break;
                }
                let nap = if background {
                    left
                } else {
                    left.min(until_read)
                };
                g = self
                    .feed
                    .changed
                    .wait_timeout(g, nap)
                    .map_or_else(|p| p.into_inner().0, |(g, _)| g);
            }
        }
    }
}

impl<S: Store> Drop for StoreWatcher<S> {
    fn drop(&mut self) {
        self.feed.lock().watchers -= 1;
    }
}
