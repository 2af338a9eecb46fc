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
//! The state machine (records, leases, the change log) and the [`Registry`](crate::Registry)
//! operations are [`crate::kvstate`]'s, shared with the san backend; this module is the
//! journal. Watches are served by kvstate's per-process feed, whose reader thread looks for new
//! lines every few milliseconds: a hundred watches in one process cost one read per change.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aliases::fsutil;

use crate::kvstate::{Emitter, Rec, State, Store, registry_via_store, run_writer};
use crate::{Error, Result};

/// Journal lines after which the writer replaces the journal by a snapshot.
const SNAPSHOT_AFTER: u64 = 8192;
/// How often the watch feed's reader looks for lines another process appended.
const POLL: Duration = Duration::from_millis(5);

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
}

impl Store for LocalRegistry {
    fn url(&self) -> String {
        format!("local:{}", self.dir.display())
    }

    fn load(&self) -> Result<Arc<State>> {
        Ok(self.refresh()?.state)
    }

    /// Under the lock: lets `f` emit records against the current state (each applied before
    /// the next is made), appends them in one write and fsyncs.
    fn write<T>(&self, f: impl FnOnce(&mut Emitter<'_>) -> Result<T>) -> Result<T> {
        let _lock = fsutil::lock_exclusive(&self.file)?;
        let cur = self.refresh()?;
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
        let Cached {
            offset,
            lines: journal_lines,
            ..
        } = cur;
        let (state, lines, out) = run_writer(cur.state, f)?;
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
        let mut cur = Cached {
            file: (m.dev(), m.ino()),
            offset: offset + data.len() as u64,
            lines: journal_lines + lines.len() as u64,
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
            c.insert(self.file.clone(), cur);
        }
        Ok(out)
    }

    fn poll(&self) -> Duration {
        POLL
    }

    fn with_cached<T>(&self, f: impl FnOnce(&State) -> T) -> Option<T> {
        cache().lock().ok()?.get(&self.file).map(|c| f(&c.state))
    }
}

registry_via_store!(LocalRegistry);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Compare, Op, Registry, WatchEvent};

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
