//! `local:DIR`: the registry in one directory of this host, as an append-only journal,
//! `DIR/journal`: one JSON line per transaction, appended and fsynced under an exclusive
//! `flock` (`DIR/journal.lock`). Every process keeps the replayed state and the file offset it
//! has read up to, so a write costs the size of the transaction, not of the registry. Reads
//! take no lock: they apply the complete lines appended since the last read, so they see
//! every transaction that returned, which makes the backend linearizable on one host. A line
//! torn by a writer killed mid-append has no newline: readers ignore it and the next writer
//! truncates it away. Every few thousand lines the writer replaces the journal by one snapshot
//! line with the aliases crate's crash-safe writer (temporary file, fsync, rename, fsync of
//! the directory); watches behind the snapshot resynchronise in full.
//!
//! Watches do not read the journal themselves: each process keeps one feed per journal, whose
//! reader thread (started with the first watch, ended after the last) looks for new lines
//! every few milliseconds and wakes the watches when the state moved; a write made by this
//! process wakes them at once. A hundred watches in one process thus cost one read per change,
//! not a hundred polls of the journal.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aliases::fsutil;
use serde::{Deserialize, Serialize};

use crate::registry::{Compare, Event, Kv, Op, Registry, Snapshot, TxnResult, WatchEvent, Watcher};
use crate::{Error, Result};

/// How many changes each process keeps for watches; a watch further behind resynchronises.
const LOG_KEEP: usize = 4096;
/// Journal lines after which the writer replaces the journal by a snapshot.
const SNAPSHOT_AFTER: u64 = 8192;
/// How often a feed's reader looks for lines another process appended.
const POLL: Duration = Duration::from_millis(5);

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Entry {
    value: String,
    create: i64,
    #[serde(rename = "mod")]
    modr: i64,
    #[serde(default)]
    lease: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseEntry {
    ttl_s: i64,
    expires_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LogEntry {
    rev: i64,
    key: String,
    /// None: deleted.
    value: Option<String>,
    create: i64,
    lease: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    revision: i64,
    /// Changes at or below this revision are no longer in the log.
    compacted: i64,
    next_lease: i64,
    kvs: BTreeMap<String, Entry>,
    leases: BTreeMap<i64, LeaseEntry>,
    #[serde(skip)]
    log: Vec<LogEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PutRec {
    k: String,
    v: String,
    #[serde(default)]
    lease: i64,
}

/// One journal line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Rec {
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
    },
    /// History up to `rev` dropped.
    Compact { rev: i64 },
}

fn now_ms() -> u64 {
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

    fn apply(&mut self, rec: &Rec) {
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
            } => {
                self.next_lease = self.next_lease.max(*id);
                self.leases.insert(
                    *id,
                    LeaseEntry {
                        ttl_s: *ttl_s,
                        expires_ms: *expires_ms,
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
    fn expiry(&self, now: u64) -> Option<Rec> {
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

/// What this process has read of one journal.
#[derive(Debug, Clone)]
struct Cached {
    /// (dev, inode) of the journal read.
    file: (u64, u64),
    /// Bytes consumed (complete lines).
    offset: u64,
    /// Lines since the last snapshot.
    lines: u64,
    state: Arc<State>,
}

type JournalCache = Mutex<HashMap<PathBuf, Cached>>;

fn cache() -> &'static JournalCache {
    static CACHE: OnceLock<JournalCache> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// `f` of the state this process has cached for `file`, if any, run under the cache's lock:
/// a watch that held the state while a writer takes it would make the writer copy it whole.
fn with_cached<T>(file: &Path, f: impl FnOnce(&State) -> T) -> Option<T> {
    cache().lock().ok()?.get(file).map(|c| f(&c.state))
}

/// What the watches of one journal in this process share.
#[derive(Debug, Default)]
struct FeedInner {
    /// Live watches; the reader thread ends when this drops to zero.
    watchers: usize,
    /// A reader thread is running.
    reader: bool,
    /// Bumped whenever the cached state may have moved (or a read failed).
    seq: u64,
    /// (journal file, revision, compacted) last announced, so an unchanged poll wakes nobody.
    seen: ((u64, u64), i64, i64),
    /// The reader's last read failed: watches read themselves to report the error.
    failed: bool,
}

/// One per process and journal: the reader that fans changes out to every watch.
#[derive(Debug, Default)]
struct Feed {
    inner: Mutex<FeedInner>,
    changed: Condvar,
}

type Feeds = Mutex<HashMap<PathBuf, Arc<Feed>>>;

fn feeds() -> &'static Feeds {
    static FEEDS: OnceLock<Feeds> = OnceLock::new();
    FEEDS.get_or_init(Default::default)
}

impl Feed {
    fn lock(&self) -> MutexGuard<'_, FeedInner> {
        // The guarded fields are plain counters, consistent after any panic.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Announces `cur` to the watches if it differs from what was last announced.
    fn announce(&self, cur: &Cached) {
        let key = (cur.file, cur.state.revision, cur.state.compacted);
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

    /// The reader thread: polls the journal while any watch is alive.
    fn read_loop(self: Arc<Self>, reg: LocalRegistry) {
        loop {
            std::thread::sleep(POLL);
            {
                let mut g = self.lock();
                if g.watchers == 0 {
                    g.reader = false;
                    return;
                }
            }
            match reg.refresh() {
                Ok(cur) => self.announce(&cur),
                Err(e) => {
                    tracing::debug!(registry = %reg.url(), error = %e, "the watch feed could not read the journal");
                    self.announce_failure();
                }
            }
        }
    }
}

/// Wakes this process's watches of `file` (after a write that moved the state).
fn announce(file: &Path, cur: &Cached) {
    let feed = feeds().lock().ok().and_then(|f| f.get(file).cloned());
    if let Some(feed) = feed {
        feed.announce(cur);
    }
}

/// The registry kept in a local directory.
#[derive(Debug, Clone)]
pub struct LocalRegistry {
    dir: PathBuf,
    file: PathBuf,
}

impl LocalRegistry {
    /// Opens (creating if needed) the registry in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| Error::Registry {
            registry: format!("local:{}", dir.display()),
            action: "create its directory".into(),
            message: e.to_string(),
        })?;
        Ok(Self {
            file: dir.join("journal"),
            dir,
        })
    }

    fn err(&self, action: &str, message: impl ToString) -> Error {
        Error::Registry {
            registry: self.url(),
            action: action.into(),
            message: message.to_string(),
        }
    }

    /// Brings this process's view up to date with the journal and returns it.
    fn refresh(&self) -> Result<Cached> {
        let mut f = match File::open(&self.file) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Cached {
                    file: (0, 0),
                    offset: 0,
                    lines: 0,
                    state: Arc::new(State::default()),
                });
            }
            Err(e) => return Err(self.err("read its journal", e)),
        };
        let m = f.metadata().map_err(|e| self.err("read its journal", e))?;
        let id = (m.dev(), m.ino());
        // One thread at a time brings this process's view forward, in place.
        let mut c = cache()
            .lock()
            .map_err(|_| self.err("read its journal", "the journal cache was poisoned"))?;
        let cur = match c.remove(&self.file) {
            Some(x) if x.file == id && x.offset <= m.len() => x,
            _ => Cached {
                file: id,
                offset: 0,
                lines: 0,
                state: Arc::new(State::default()),
            },
        };
        let cur = self.read_new(&mut f, m.len(), cur);
        match cur {
            Ok(cur) => {
                c.insert(self.file.clone(), cur.clone());
                Ok(cur)
            }
            Err(e) => Err(e),
        }
    }

    /// Applies the complete lines after `cur.offset`.
    fn read_new(&self, f: &mut File, len: u64, mut cur: Cached) -> Result<Cached> {
        if cur.offset == len {
            return Ok(cur);
        }
        f.seek(SeekFrom::Start(cur.offset))
            .map_err(|e| self.err("read its journal", e))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)
            .map_err(|e| self.err("read its journal", e))?;
        let Some(end) = buf.iter().rposition(|b| *b == b'\n') else {
            return Ok(cur); // only a torn line so far
        };
        let st = Arc::make_mut(&mut cur.state);
        for (n, line) in buf[..end].split(|b| *b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let rec: Rec = serde_json::from_slice(line).map_err(|e| {
                self.err(
                    "read its journal",
                    format!(
                        "{} is corrupt after byte {} (record {}): {e}",
                        self.file.display(),
                        cur.offset,
                        n + 1
                    ),
                )
            })?;
            st.apply(&rec);
            cur.lines += 1;
        }
        cur.offset += end as u64 + 1;
        Ok(cur)
    }

    fn load(&self) -> Result<Arc<State>> {
        Ok(self.refresh()?.state)
    }

    /// Under the lock: lets `f` emit records against the current state (each applied before
    /// the next is made), appends them in one write and fsyncs.
    fn write<T>(&self, f: impl FnOnce(&mut Emitter<'_>) -> Result<T>) -> Result<T> {
        let _lock = fsutil::lock_exclusive(&self.file)?;
        let mut cur = self.refresh()?;
        // A writer killed mid-append left a torn line: drop it (we hold the lock).
        if let Ok(m) = std::fs::metadata(&self.file)
            && m.len() > cur.offset
            && (m.dev(), m.ino()) == cur.file
        {
            OpenOptions::new()
                .write(true)
                .open(&self.file)
                .and_then(|f| f.set_len(cur.offset))
                .map_err(|e| self.err("truncate a torn journal line", e))?;
        }
        // Own the state while writing (the cached copy is refreshed from the journal if the
        // write fails), so the common case does not copy it.
        if let Ok(mut c) = cache().lock() {
            c.remove(&self.file);
        }
        let mut state = Arc::try_unwrap(cur.state).unwrap_or_else(|a| (*a).clone());
        let mut em = Emitter {
            state: &mut state,
            lines: Vec::new(),
        };
        if let Some(r) = em.state.expiry(now_ms()) {
            em.emit(r);
        }
        let out = f(&mut em)?;
        let lines = em.lines;
        if lines.is_empty() {
            if let Ok(mut c) = cache().lock() {
                c.insert(
                    self.file.clone(),
                    Cached {
                        state: Arc::new(state),
                        ..cur
                    },
                );
            }
            return Ok(out);
        }
        let mut data = Vec::new();
        for l in &lines {
            data.extend_from_slice(l);
            data.push(b'\n');
        }
        let created = !self.file.exists();
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.file)
            .map_err(|e| self.err("open its journal", e))?;
        file.write_all(&data)
            .and_then(|()| file.sync_data())
            .map_err(|e| self.err("append to its journal", e))?;
        if created {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| self.err("fsync its directory", e))?;
        }
        let m = file
            .metadata()
            .map_err(|e| self.err("stat its journal", e))?;
        cur = Cached {
            file: (m.dev(), m.ino()),
            offset: cur.offset + data.len() as u64,
            lines: cur.lines + lines.len() as u64,
            state: Arc::new(state),
        };
        if cur.lines > SNAPSHOT_AFTER {
            let snap = serde_json::to_vec(&Rec::Snapshot((*cur.state).clone()))
                .map_err(|e| self.err("encode a snapshot", e))?;
            let mut snap_line = snap;
            snap_line.push(b'\n');
            fsutil::atomic_write(&self.file, &snap_line, 0o600)?;
            let m = std::fs::metadata(&self.file).map_err(|e| self.err("stat its journal", e))?;
            let mut st = (*cur.state).clone();
            st.apply(&Rec::Snapshot((*cur.state).clone()));
            cur = Cached {
                file: (m.dev(), m.ino()),
                offset: snap_line.len() as u64,
                lines: 1,
                state: Arc::new(st),
            };
        }
        if let Ok(mut c) = cache().lock() {
            c.insert(self.file.clone(), cur.clone());
        }
        announce(&self.file, &cur);
        Ok(out)
    }

    /// This process's feed of the journal, with one more watch counted on it (its reader
    /// thread started if none runs).
    fn join_feed(&self) -> Result<Arc<Feed>> {
        let feed = feeds()
            .lock()
            .map_err(|_| self.err("watch", "the watch feeds were poisoned"))?
            .entry(self.file.clone())
            .or_default()
            .clone();
        let mut g = feed.lock();
        g.watchers += 1;
        if !g.reader {
            let (f, reg) = (feed.clone(), self.clone());
            std::thread::Builder::new()
                .name("hostsync-local-feed".into())
                .spawn(move || f.read_loop(reg))
                .map_err(|e| {
                    g.watchers -= 1;
                    self.err("start its watch reader", e)
                })?;
            g.reader = true;
        }
        drop(g);
        Ok(feed)
    }
}

/// Makes journal records during a write.
struct Emitter<'a> {
    state: &'a mut State,
    lines: Vec<Vec<u8>>,
}

impl Emitter<'_> {
    fn emit(&mut self, rec: Rec) {
        self.state.apply(&rec);
        // Serializing these plain records cannot fail.
        self.lines
            .push(serde_json::to_vec(&rec).unwrap_or_default());
    }
}

/// The failed result of `when` on `st`, or None if every condition holds.
fn check(st: &State, when: &[Compare]) -> Option<TxnResult> {
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

impl Registry for LocalRegistry {
    fn url(&self) -> String {
        format!("local:{}", self.dir.display())
    }

    fn get(&self, key: &str) -> Result<Option<Kv>> {
        let st = self.load()?;
        Ok(st.live(key, now_ms()).map(|e| st.kv(key, e)))
    }

    fn range(&self, prefix: &str) -> Result<Snapshot> {
        let st = self.load()?;
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

    fn txn(&self, when: &[Compare], then: &[Op]) -> Result<TxnResult> {
        let mut puts = Vec::new();
        let mut dels = Vec::new();
        for op in then {
            match op {
                Op::Put { key, value, lease } => puts.push(PutRec {
                    k: key.clone(),
                    v: String::from_utf8(value.clone()).map_err(|_| {
                        self.err("store a value", format!("the value of {key} is not UTF-8"))
                    })?,
                    lease: *lease,
                }),
                Op::Delete { key } => dels.push(key.clone()),
            }
        }
        // A condition that already fails on the last committed state fails now: answer
        // without the lock, so losers of a race do not queue behind the writers.
        if let Some(r) = check(&*self.load()?, when) {
            return Ok(r);
        }
        self.write(|em| {
            if let Some(r) = check(em.state, when) {
                return Ok(r);
            }
            for p in &puts {
                if p.lease != 0 && !em.state.leases.contains_key(&p.lease) {
                    return Err(self.err(
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

    fn watch(&self, prefix: &str, from_revision: i64) -> Result<Box<dyn Watcher>> {
        // Read once now, so the watch starts from this process's latest view.
        self.refresh()?;
        Ok(Box::new(LocalWatcher {
            feed: self.join_feed()?,
            reg: self.clone(),
            prefix: prefix.to_string(),
            next: from_revision.max(1),
        }))
    }

    fn grant_lease(&self, ttl_s: i64) -> Result<i64> {
        self.write(|em| {
            let id = em.state.next_lease + 1;
            em.emit(Rec::Lease {
                id,
                ttl_s,
                expires_ms: now_ms() + (ttl_s.max(1) as u64) * 1000,
            });
            Ok(id)
        })
    }

    fn keep_alive(&self, lease: i64) -> Result<bool> {
        self.write(|em| match em.state.leases.get(&lease) {
            Some(l) => {
                let ttl_s = l.ttl_s;
                em.emit(Rec::Lease {
                    id: lease,
                    ttl_s,
                    expires_ms: now_ms() + (ttl_s.max(1) as u64) * 1000,
                });
                Ok(true)
            }
            None => Ok(false),
        })
    }

    fn revoke_lease(&self, lease: i64) -> Result<()> {
        self.write(|em| {
            if em.state.leases.contains_key(&lease) {
                let r = em.state.revoke_rec(vec![lease]);
                em.emit(r);
            }
            Ok(())
        })
    }

    fn compact(&self, revision: i64) -> Result<()> {
        self.write(|em| {
            em.emit(Rec::Compact { rev: revision });
            Ok(())
        })
    }
}

struct LocalWatcher {
    feed: Arc<Feed>,
    reg: LocalRegistry,
    prefix: String,
    next: i64,
}

impl LocalWatcher {
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

impl Watcher for LocalWatcher {
    fn next(&mut self, timeout: Duration) -> Result<WatchEvent> {
        let start = Instant::now();
        let mut seq = self.feed.lock().seq;
        loop {
            // The feed's reader keeps the process's cached state current; read it ourselves
            // only when there is none (a failed write dropped it) or the reader failed, so
            // the error reaches the caller.
            let failed = self.feed.lock().failed;
            let file = self.reg.file.clone();
            let got = if failed {
                None
            } else {
                with_cached(&file, |st| self.step(st))
            };
            let got = match got {
                Some(g) => g,
                None => {
                    let st = self.reg.load()?;
                    self.step(&st)
                }
            };
            if let Some(ev) = got {
                return Ok(ev);
            }
            // Sleep until the feed announces a change or the timeout ends.
            let mut g = self.feed.lock();
            loop {
                let left = timeout.saturating_sub(start.elapsed());
                if g.seq != seq {
                    seq = g.seq;
                    break;
                }
                if left.is_zero() {
                    return Ok(WatchEvent::Idle);
                }
                g = self
                    .feed
                    .changed
                    .wait_timeout(g, left)
                    .map_or_else(|p| p.into_inner().0, |(g, _)| g);
            }
        }
    }
}

impl Drop for LocalWatcher {
    fn drop(&mut self) {
        self.feed.lock().watchers -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_last_line_is_ignored_then_truncated() {
        let d = tempfile::tempdir().unwrap();
        let reg = LocalRegistry::open(d.path()).unwrap();
        reg.txn(
            &[Compare::Absent("a".into())],
            &[Op::put("a", b"1".to_vec())],
        )
        .unwrap();
        // A writer killed mid-append leaves half a line.
        let mut f = OpenOptions::new().append(true).open(&reg.file).unwrap();
        f.write_all(br#"{"txn":{"rev":2,"puts":[{"k":"b","v":"#)
            .unwrap();
        drop(f);
        // Another process (a fresh cache) reads what was committed and nothing else.
        cache().lock().unwrap().clear();
        assert_eq!(reg.get("a").unwrap().unwrap().value, b"1");
        assert!(reg.get("b").unwrap().is_none());
        // The next writer drops the torn line; the journal stays readable from scratch.
        reg.txn(
            &[Compare::Absent("b".into())],
            &[Op::put("b", b"2".to_vec())],
        )
        .unwrap();
        cache().lock().unwrap().clear();
        let snap = reg.range("").unwrap();
        assert_eq!(snap.kvs.len(), 2);
        assert_eq!(snap.revision, 2);
    }

    #[test]
    fn snapshot_replaces_journal_and_behind_watches_resync() {
        // Thousands of fsynced appends: on tmpfs when there is one, to keep the test quick.
        let shm = Path::new("/dev/shm");
        let d = if shm.is_dir() {
            tempfile::tempdir_in(shm).unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        let reg = LocalRegistry::open(d.path()).unwrap();
        let mut w = reg.watch("k/", 1).unwrap();
        for i in 0..(SNAPSHOT_AFTER + 2) {
            reg.txn(&[], &[Op::put(format!("k/{i}"), b"v".to_vec())])
                .unwrap();
        }
        let lines = std::fs::read_to_string(&reg.file).unwrap().lines().count();
        assert!(
            lines < 10,
            "journal was not replaced by a snapshot ({lines} lines)"
        );
        cache().lock().unwrap().clear();
        assert_eq!(
            reg.range("k/").unwrap().kvs.len() as u64,
            SNAPSHOT_AFTER + 2
        );
        assert!(matches!(
            w.next(Duration::from_millis(100)).unwrap(),
            WatchEvent::Resync
        ));
    }
}
