//! `local:DIR`: the registry in one directory of this host. The whole state (keys, leases and
//! a bounded change log) is one JSON file, `DIR/registry.json`, replaced atomically under an
//! exclusive `flock` with the aliases crate's crash-safe writer (temporary file, fsync,
//! rename, fsync of the directory). Reads take no lock: a rename is atomic, so a reader sees
//! the last complete transaction, which makes the backend linearizable on one host.
//! Watches poll the file's identity (a new inode per write) and read the change log.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aliases::fsutil;
use serde::{Deserialize, Serialize};

use crate::registry::{Compare, Event, Kv, Op, Registry, Snapshot, TxnResult, WatchEvent, Watcher};
use crate::{Error, Result};

/// How many changes the log keeps; a watch further behind resynchronises in full.
const LOG_KEEP: usize = 1024;
/// How often a watch looks for a new version of the file.
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
    log: Vec<LogEntry>,
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

    fn log(&mut self, key: &str, value: Option<String>, create: i64, lease: i64) {
        self.log.push(LogEntry {
            rev: self.revision,
            key: key.to_string(),
            value,
            create,
            lease,
        });
    }

    /// Deletes the keys of expired leases (one revision for all of them).
    fn expire(&mut self, now: u64) {
        let dead: Vec<i64> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expires_ms <= now)
            .map(|(id, _)| *id)
            .collect();
        if dead.is_empty() {
            return;
        }
        self.revoke(&dead);
    }

    fn revoke(&mut self, ids: &[i64]) {
        for id in ids {
            self.leases.remove(id);
        }
        let keys: Vec<String> = self
            .kvs
            .iter()
            .filter(|(_, e)| e.lease != 0 && ids.contains(&e.lease))
            .map(|(k, _)| k.clone())
            .collect();
        if keys.is_empty() {
            return;
        }
        self.revision += 1;
        for k in keys {
            self.kvs.remove(&k);
            self.log(&k, None, 0, 0);
        }
    }

    fn trim_log(&mut self) {
        if self.log.len() > LOG_KEEP {
            let cut = self.log.len() - LOG_KEEP;
            // Never split one revision's changes.
            let mut cut_rev = self.log[cut - 1].rev;
            let mut n = cut;
            while n < self.log.len() && self.log[n].rev == cut_rev {
                n += 1;
            }
            if n == self.log.len() {
                return;
            }
            cut_rev = self.log[n - 1].rev;
            self.log.drain(..n);
            self.compacted = self.compacted.max(cut_rev);
        }
    }
}

/// Identity of one version of the state file (every write renames a new inode into place).
type Version = (u64, u64, u64, i64, i64, i64);

/// The parsed state of each registry file this process uses, by version.
type StateCache = Mutex<HashMap<PathBuf, (Version, Arc<State>)>>;

fn cache() -> &'static StateCache {
    static CACHE: OnceLock<StateCache> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

fn version_of(m: &std::fs::Metadata) -> Version {
    (
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    )
}

/// The registry kept in a local directory.
#[derive(Debug)]
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
            file: dir.join("registry.json"),
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

    /// The current state, parsed once per version of the file in this process.
    fn load(&self) -> Result<Arc<State>> {
        let mut f = match File::open(&self.file) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Arc::new(State::default()));
            }
            Err(e) => return Err(self.err("read its state file", e)),
        };
        let m = f
            .metadata()
            .map_err(|e| self.err("read its state file", e))?;
        let ver = version_of(&m);
        if let Ok(c) = cache().lock()
            && let Some((v, st)) = c.get(&self.file)
            && *v == ver
        {
            return Ok(st.clone());
        }
        let mut text = String::new();
        f.read_to_string(&mut text)
            .map_err(|e| self.err("read its state file", e))?;
        let st: State = serde_json::from_str(&text).map_err(|e| {
            self.err(
                "parse its state file",
                format!("{} is corrupt: {e}", self.file.display()),
            )
        })?;
        let st = Arc::new(st);
        if let Ok(mut c) = cache().lock() {
            c.insert(self.file.clone(), (ver, st.clone()));
        }
        Ok(st)
    }

    /// Runs `f` on the state under the lock and writes the result if `f` says so.
    fn modify<T>(&self, f: impl FnOnce(&mut State) -> Result<(T, bool)>) -> Result<T> {
        let _lock = fsutil::lock_exclusive(&self.file)?;
        let mut st = (*self.load()?).clone();
        let before = st.revision;
        let leases_before = st.leases.len();
        st.expire(now_ms());
        let (out, changed) = f(&mut st)?;
        if changed || st.revision != before || st.leases.len() != leases_before {
            st.trim_log();
            let data = serde_json::to_vec(&st).map_err(|e| self.err("encode its state", e))?;
            fsutil::atomic_write(&self.file, &data, 0o600)?;
            if let Ok(m) = std::fs::metadata(&self.file)
                && let Ok(mut c) = cache().lock()
            {
                c.insert(self.file.clone(), (version_of(&m), Arc::new(st)));
            }
        }
        Ok(out)
    }
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
        let mut values = Vec::with_capacity(then.len());
        for op in then {
            if let Op::Put { key, value, .. } = op {
                let v = String::from_utf8(value.clone()).map_err(|_| {
                    self.err("store a value", format!("the value of {key} is not UTF-8"))
                })?;
                values.push(Some(v));
            } else {
                values.push(None);
            }
        }
        self.modify(|st| {
            let now = now_ms();
            let ok = when.iter().all(|c| match c {
                Compare::Absent(k) => st.live(k, now).is_none(),
                Compare::ModRevision(k, r) => st.live(k, now).is_some_and(|e| e.modr == *r),
            });
            if !ok {
                let current = when
                    .iter()
                    .filter_map(|c| st.live(c.key(), now).map(|e| st.kv(c.key(), e)))
                    .collect();
                return Ok((
                    TxnResult {
                        succeeded: false,
                        revision: st.revision,
                        current,
                    },
                    false,
                ));
            }
            for op in then {
                if let Op::Put { lease, key, .. } = op
                    && *lease != 0
                    && !st.leases.contains_key(lease)
                {
                    return Err(self.err(
                        "write",
                        format!("lease {lease} for {key} has expired or does not exist"),
                    ));
                }
            }
            if !then.is_empty() {
                st.revision += 1;
            }
            let rev = st.revision;
            for (op, v) in then.iter().zip(values) {
                match op {
                    Op::Put { key, lease, .. } => {
                        let v = v.unwrap_or_default();
                        let create = st.kvs.get(key).map(|e| e.create).unwrap_or(rev);
                        st.kvs.insert(
                            key.clone(),
                            Entry {
                                value: v.clone(),
                                create,
                                modr: rev,
                                lease: *lease,
                            },
                        );
                        st.log(key, Some(v), create, *lease);
                    }
                    Op::Delete { key } => {
                        if st.kvs.remove(key).is_some() {
                            st.log(key, None, 0, 0);
                        }
                    }
                }
            }
            Ok((
                TxnResult {
                    succeeded: true,
                    revision: rev,
                    current: Vec::new(),
                },
                !then.is_empty(),
            ))
        })
    }

    fn watch(&self, prefix: &str, from_revision: i64) -> Result<Box<dyn Watcher>> {
        Ok(Box::new(LocalWatcher {
            reg: LocalRegistry {
                dir: self.dir.clone(),
                file: self.file.clone(),
            },
            prefix: prefix.to_string(),
            next: from_revision.max(1),
        }))
    }

    fn grant_lease(&self, ttl_s: i64) -> Result<i64> {
        self.modify(|st| {
            st.next_lease += 1;
            let id = st.next_lease;
            st.leases.insert(
                id,
                LeaseEntry {
                    ttl_s,
                    expires_ms: now_ms() + (ttl_s.max(1) as u64) * 1000,
                },
            );
            Ok((id, true))
        })
    }

    fn keep_alive(&self, lease: i64) -> Result<bool> {
        self.modify(|st| match st.leases.get_mut(&lease) {
            Some(l) => {
                l.expires_ms = now_ms() + (l.ttl_s.max(1) as u64) * 1000;
                Ok((true, true))
            }
            None => Ok((false, false)),
        })
    }

    fn revoke_lease(&self, lease: i64) -> Result<()> {
        self.modify(|st| {
            let had = st.leases.contains_key(&lease);
            st.revoke(&[lease]);
            Ok(((), had))
        })
    }

    fn compact(&self, revision: i64) -> Result<()> {
        self.modify(|st| {
            let before = st.log.len();
            st.log.retain(|e| e.rev > revision);
            st.compacted = st.compacted.max(revision.min(st.revision));
            Ok(((), st.log.len() != before))
        })
    }
}

struct LocalWatcher {
    reg: LocalRegistry,
    prefix: String,
    next: i64,
}

impl Watcher for LocalWatcher {
    fn next(&mut self, timeout: Duration) -> Result<WatchEvent> {
        let start = Instant::now();
        loop {
            let st = self.reg.load()?;
            if st.revision >= self.next {
                if self.next <= st.compacted {
                    return Ok(WatchEvent::Resync);
                }
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
            std::thread::sleep(POLL.min(timeout.saturating_sub(start.elapsed())));
        }
    }
}
