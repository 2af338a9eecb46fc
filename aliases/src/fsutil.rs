//! Durable file replacement and inter-process locking.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{Flock, FlockArg};

use crate::Error;

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The file `path` names once symlinks are followed (also when the last link dangles, so the
/// file is created where the link points).
pub fn resolve_links(path: &Path) -> Result<PathBuf, Error> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&p).map_err(|e| Error::io("read link", &p, e))?;
                p = parent_dir(&p).join(target);
            }
            Ok(_) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(p),
            Err(e) => return Err(Error::io("stat", &p, e)),
        }
    }
    Err(Error::io(
        "resolve",
        path,
        std::io::Error::other("too many levels of symbolic links"),
    ))
}

/// Replaces `path` with `data` atomically and durably: the data goes to a temporary file in the
/// same directory, which is fsynced, renamed over `path`, and then the directory is fsynced.
/// A reader (or a crash) sees either the old or the new complete file. A symlink is followed
/// (the file it points to is replaced, the link stays). The mode and owner of an existing file
/// are kept; new files get `new_mode`. Missing parent directories are created.
pub fn atomic_write(path: &Path, data: &[u8], new_mode: u32) -> Result<(), Error> {
    let path = &resolve_links(path)?;
    let dir = parent_dir(path);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
    let (mode, owner) = match std::fs::metadata(path) {
        Ok(m) => (m.permissions().mode() & 0o7777, Some((m.uid(), m.gid()))),
        Err(_) => (new_mode, None),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "aliases".to_string());
    let tmp = dir.join(format!(
        ".{name}.tmp.{}.{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| Error::io("create", &tmp, e))?;
        // The umask may have narrowed the mode; set it exactly.
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io("set permissions of", &tmp, e))?;
        if let Some((uid, gid)) = owner {
            let m = f.metadata().map_err(|e| Error::io("stat", &tmp, e))?;
            if (m.uid(), m.gid()) != (uid, gid) {
                std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
                    .map_err(|e| Error::io("give the owner of the file to", &tmp, e))?;
                // chown clears set-id bits; put the mode back.
                f.set_permissions(std::fs::Permissions::from_mode(mode))
                    .map_err(|e| Error::io("set permissions of", &tmp, e))?;
            }
        }
        f.write_all(data).map_err(|e| Error::io("write", &tmp, e))?;
        f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io("rename into place", path, e))?;
        let d = File::open(&dir).map_err(|e| Error::io("open directory", &dir, e))?;
        d.sync_all()
            .map_err(|e| Error::io("fsync directory", &dir, e))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Removes temporary files `atomic_write` left next to `path` when a writer was killed
/// between creating and renaming them. Call only while holding the lock for `path`, so no
/// live writer's temporary file can be removed.
pub fn remove_stale_temps(path: &Path) -> Result<usize, Error> {
    let path = &resolve_links(path)?;
    let dir = parent_dir(path);
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Ok(0);
    };
    let prefix = format!(".{name}.tmp.");
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io("list", &dir, e)),
    };
    let mut n = 0;
    for ent in rd.flatten() {
        if ent.file_name().to_string_lossy().starts_with(&prefix) {
            let p = ent.path();
            match std::fs::remove_file(&p) {
                Ok(()) => n += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove stale temporary file", p, e)),
            }
        }
    }
    Ok(n)
}

/// An exclusive `flock` held on a lock file until dropped.
#[derive(Debug)]
pub struct LockGuard {
    _lock: Flock<File>,
    /// The lock file.
    pub path: PathBuf,
}

/// The lock file used for `path`: `<path>.lock` in the same directory.
pub fn lock_path_for(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".lock");
    parent_dir(path).join(name)
}

/// Takes an exclusive lock for `path` (blocking), creating the lock file and its directory.
pub fn lock_exclusive(path: &Path) -> Result<LockGuard, Error> {
    let lp = lock_path_for(path);
    let dir = parent_dir(path);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lp)
        .map_err(|e| Error::io("open lock file", &lp, e))?;
    let lock = Flock::lock(f, FlockArg::LockExclusive)
        .map_err(|(_, errno)| Error::io("lock", &lp, std::io::Error::from(errno)))?;
    Ok(LockGuard {
        _lock: lock,
        path: lp,
    })
}

/// A file opened and locked with a whole-file `fcntl` record lock, the lock multipath-tools
/// takes on its bindings file (Debian 12's 0.9.4, observed with strace: `open(O_RDWR|O_CREAT,
/// 0600)` then `fcntl(F_SETLKW, F_WRLCK, whole file)`). We take the open-file-description
/// flavour (`F_OFD_SETLKW`): it conflicts with multipath-tools' classic record lock, and unlike
/// that one it also excludes other threads of our own process and is not dropped when some other
/// descriptor of the file is closed. The lock lives as long as this value.
///
/// Writers that hold this lock must change the file *in place* (see [`LockedFile::replace`]):
/// renaming a new file over it would leave a writer that is waiting for the lock on the old
/// inode, and whatever it appends there would be lost.
#[derive(Debug)]
pub struct LockedFile {
    file: File,
    /// The path the file was opened by (a symlink is followed, never replaced).
    pub path: PathBuf,
}

fn ofd_lock(file: &File, exclusive: bool, path: &Path) -> Result<(), Error> {
    use nix::libc;
    let fl = libc::flock {
        l_type: if exclusive {
            libc::F_WRLCK
        } else {
            libc::F_RDLCK
        } as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    loop {
        match nix::fcntl::fcntl(file, nix::fcntl::FcntlArg::F_OFD_SETLKW(&fl)) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::io("lock", path, std::io::Error::from(e))),
        }
    }
}

impl LockedFile {
    /// Opens `path` and locks it, waiting for other holders (multipath-tools included).
    /// `exclusive` opens it read-write and creates it (mode 0600, as multipath-tools does) if
    /// missing; otherwise it is opened read-only with a shared lock, and a missing file gives
    /// None. If the file was replaced by a rename while we waited, the new one is locked instead.
    pub fn open(path: &Path, exclusive: bool) -> Result<Option<LockedFile>, Error> {
        if exclusive {
            let dir = parent_dir(path);
            std::fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        }
        for _ in 0..1000 {
            let mut o = OpenOptions::new();
            o.read(true);
            if exclusive {
                o.write(true).create(true).truncate(false).mode(0o600);
            }
            let file = match o.open(path) {
                Ok(f) => f,
                Err(e) if !exclusive && e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(None);
                }
                Err(e) => return Err(Error::io("open", path, e)),
            };
            ofd_lock(&file, exclusive, path)?;
            let held = file.metadata().map_err(|e| Error::io("stat", path, e))?;
            match std::fs::metadata(path) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                    return Ok(Some(LockedFile {
                        file,
                        path: path.to_path_buf(),
                    }));
                }
                // Replaced or removed while we waited: lock what is there now.
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("stat", path, e)),
            }
        }
        Err(Error::io(
            "lock",
            path,
            std::io::Error::other("the file kept being replaced while we waited for its lock"),
        ))
    }

    /// The whole current content.
    pub fn read_all(&self) -> Result<Vec<u8>, Error> {
        use std::io::{Read as _, Seek as _};
        let mut f = &self.file;
        f.seek(std::io::SeekFrom::Start(0))
            .map_err(|e| Error::io("read", &self.path, e))?;
        let mut out = Vec::new();
        f.read_to_end(&mut out)
            .map_err(|e| Error::io("read", &self.path, e))?;
        Ok(out)
    }

    /// Changes the content from `old` (what [`LockedFile::read_all`] gave under this lock) to
    /// `new`, in place and durably. When `new` extends `old` only the new bytes are appended,
    /// as multipath-tools appends. Crash safety comes from a journal next to the file (see
    /// [`journal_path`]) holding both versions, written atomically before the file is touched
    /// and removed after it is synced; [`recover`] finishes an interrupted change.
    pub fn replace(&self, old: &[u8], new: &[u8]) -> Result<(), Error> {
        use std::os::unix::fs::FileExt as _;
        let journal = journal_path(&self.path)?;
        let mut j = format!("{JOURNAL_MAGIC}{} {}\n", old.len(), new.len()).into_bytes();
        j.extend_from_slice(old);
        j.extend_from_slice(new);
        // We hold the lock: temporary journals left behind are from killed writers.
        remove_stale_temps(&journal)?;
        atomic_write(&journal, &j, 0o600)?;
        let io = |a, e| Error::io(a, &self.path, e);
        if let Some(tail) = new.strip_prefix(old) {
            self.file
                .write_all_at(tail, old.len() as u64)
                .map_err(|e| io("append to", e))?;
        } else {
            self.file.write_all_at(new, 0).map_err(|e| io("write", e))?;
            self.file
                .set_len(new.len() as u64)
                .map_err(|e| io("truncate", e))?;
        }
        self.file.sync_all().map_err(|e| io("fsync", e))?;
        std::fs::remove_file(&journal).map_err(|e| Error::io("remove", &journal, e))?;
        let dir = parent_dir(&journal);
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io("fsync directory", &dir, e))
    }
}

const JOURNAL_MAGIC: &str = "aliases in-place journal v1\n";

/// Where the journal of an in-place change of `path` lives: `.<name>.journal` next to the
/// file the path resolves to (a symlinked file's journal sits next to its target).
pub fn journal_path(path: &Path) -> Result<PathBuf, Error> {
    let real = match std::fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => path.to_path_buf(),
        Err(e) => return Err(Error::io("resolve", path, e)),
    };
    let mut name = std::ffi::OsString::from(".");
    name.push(real.file_name().unwrap_or_default());
    name.push(".journal");
    Ok(parent_dir(&real).join(name))
}

/// The two versions an in-place change goes between: `(old, new)`.
pub type Versions = (Vec<u8>, Vec<u8>);

/// The versions recorded by an interrupted [`LockedFile::replace`] of `path`.
pub fn pending_journal(path: &Path) -> Result<Option<Versions>, Error> {
    let jp = journal_path(path)?;
    let data = match std::fs::read(&jp) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", &jp, e)),
    };
    let bad = || {
        Error::io(
            "read",
            &jp,
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the journal of an interrupted change is damaged; compare it with the file and remove it",
            ),
        )
    };
    let rest = data
        .strip_prefix(JOURNAL_MAGIC.as_bytes())
        .ok_or_else(bad)?;
    let nl = rest.iter().position(|b| *b == b'\n').ok_or_else(bad)?;
    let head = std::str::from_utf8(&rest[..nl]).map_err(|_| bad())?;
    let mut it = head.split(' ').map(str::parse::<usize>);
    let (Some(Ok(lo)), Some(Ok(ln)), None) = (it.next(), it.next(), it.next()) else {
        return Err(bad());
    };
    let body = &rest[nl + 1..];
    if body.len() != lo + ln {
        return Err(bad());
    }
    Ok(Some((body[..lo].to_vec(), body[lo..].to_vec())))
}

/// The content a file should have after an interrupted change from `old` to `new`, given what
/// it holds now (`current`): `new`, plus whatever other writers appended after the point where
/// our write stopped (a crash releases our lock, so multipath-tools may have appended since).
pub fn recover(current: &[u8], old: &[u8], new: &[u8]) -> Vec<u8> {
    let common = current.iter().zip(new).take_while(|(a, b)| a == b).count();
    // An append stops somewhere inside the new tail; a rewrite leaves the longer of the two
    // versions' lengths behind, and appends land after that.
    let start = if new.starts_with(old) {
        common
    } else {
        common.max(old.len().max(new.len()))
    };
    let extra = current.get(start..).unwrap_or_default();
    let mut out = new.to_vec();
    if extra.iter().any(|b| !b.is_ascii_whitespace()) {
        if !out.is_empty() && !out.ends_with(b"\n") {
            out.push(b'\n');
        }
        out.extend_from_slice(extra);
    }
    out
}

/// Identity of a file's current version: (dev, inode, size, mtime, ctime). Because every write
/// renames a new inode into place, a matching key means the content we cached is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileKey([i64; 7]);

/// The key of `path`, or None if it does not exist.
pub fn file_key(path: &Path) -> Result<Option<FileKey>, Error> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(FileKey([
            m.dev() as i64,
            m.ino() as i64,
            m.size() as i64,
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
        ]))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("stat", path, e)),
    }
}

/// Copies `path` to `<path>.bak-<UTC timestamp>` (adding `-N` if that exists) and fsyncs it.
pub fn backup(path: &Path) -> Result<PathBuf, Error> {
    let stamp = crate::names::compact_utc(std::time::SystemTime::now());
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = parent_dir(path);
    let mut target = dir.join(format!("{name}.bak-{stamp}"));
    let mut n = 1;
    while target.exists() {
        target = dir.join(format!("{name}.bak-{stamp}-{n}"));
        n += 1;
    }
    let data = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
    atomic_write(&target, &data, 0o600)?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_keeps_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/f");
        atomic_write(&p, b"one", 0o640).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o640
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let k1 = file_key(&p).unwrap();
        atomic_write(&p, b"two", 0o644).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_ne!(k1, file_key(&p).unwrap());
        // No temp files are left behind.
        let names: Vec<_> = std::fs::read_dir(d.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["f"]);
        let b = backup(&p).unwrap();
        assert_eq!(std::fs::read(&b).unwrap(), b"two");
        let b2 = backup(&p).unwrap();
        assert_ne!(b, b2);
    }

    #[test]
    fn lock_excludes_other_holders() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.toml");
        let g = lock_exclusive(&p).unwrap();
        assert_eq!(g.path, d.path().join("t.toml.lock"));
        let f = File::open(&g.path).unwrap();
        // A second open file description cannot take the lock while the guard lives.
        let f = match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(_) => panic!("lock was not exclusive"),
            Err((f, _)) => f,
        };
        drop(g);
        assert!(Flock::lock(f, FlockArg::LockExclusiveNonblock).is_ok());
    }

    #[test]
    fn recover_finishes_an_interrupted_change_and_keeps_later_appends() {
        let old = b"h\na 1\n";
        let new = b"h\na 1\nb 2\nc 3\n";
        // Torn append, nothing after: the new version.
        assert_eq!(recover(b"h\na 1\nb 2\nc", old, new), new);
        assert_eq!(recover(old, old, new), new);
        // Complete, then another writer appended: both kept.
        assert_eq!(
            recover(b"h\na 1\nb 2\nc 3\nx 9\n", old, new),
            b"h\na 1\nb 2\nc 3\nx 9\n"
        );
        // Torn, then another writer appended right after the torn bytes: its line is kept.
        assert_eq!(
            recover(b"h\na 1\nb 2\nx 9\n", old, new),
            b"h\na 1\nb 2\nc 3\nx 9\n"
        );
        // A rewrite (a line removed) torn before the truncate, then an append.
        let old = b"h\na 1\nb 2\nc 3\n";
        let new = b"h\nc 3\n";
        assert_eq!(recover(b"h\nc 3\nb 2\nc 3\n", old, new), new);
        assert_eq!(
            recover(b"h\nc 3\nb 2\nc 3\nx 9\n", old, new),
            b"h\nc 3\nx 9\n"
        );
    }

    #[test]
    fn in_place_change_goes_through_a_journal() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("bindings");
        std::fs::write(&p, "h\n").unwrap();
        let lf = LockedFile::open(&p, true).unwrap().unwrap();
        let ino = std::fs::metadata(&p).unwrap().ino();
        lf.replace(b"h\n", b"h\na 1\n").unwrap();
        lf.replace(b"h\na 1\n", b"a 1\n").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"a 1\n");
        // Same inode (in place), no journal left.
        assert_eq!(std::fs::metadata(&p).unwrap().ino(), ino);
        assert_eq!(pending_journal(&p).unwrap(), None);
        // A journal left by a killed writer is read back.
        let j = journal_path(&p).unwrap();
        std::fs::write(&j, format!("{JOURNAL_MAGIC}4 8\na 1\na 1\nb 2\n")).unwrap();
        assert_eq!(
            pending_journal(&p).unwrap(),
            Some((b"a 1\n".to_vec(), b"a 1\nb 2\n".to_vec()))
        );
        std::fs::write(&j, "garbage").unwrap();
        assert!(pending_journal(&p).is_err());
    }

    #[test]
    fn the_bindings_lock_conflicts_with_a_multipath_tools_style_record_lock() {
        use nix::libc;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("bindings");
        // multipath-tools: open(O_RDWR|O_CREAT), fcntl(F_SETLKW, F_WRLCK, whole file).
        let theirs = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&p)
            .unwrap();
        let mut fl = libc::flock {
            l_type: libc::F_WRLCK as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: 0,
            l_len: 0,
            l_pid: 0,
        };
        nix::fcntl::fcntl(&theirs, nix::fcntl::FcntlArg::F_SETLKW(&fl)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let p2 = p.clone();
        let t = std::thread::spawn(move || {
            let g = LockedFile::open(&p2, true).unwrap().unwrap();
            tx.send(()).unwrap();
            drop(g);
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "our lock was granted while a multipath-tools-style lock was held"
        );
        fl.l_type = libc::F_UNLCK as libc::c_short;
        nix::fcntl::fcntl(&theirs, nix::fcntl::FcntlArg::F_SETLK(&fl)).unwrap();
        rx.recv_timeout(std::time::Duration::from_secs(60)).unwrap();
        t.join().unwrap();
        // And the other way round: while we hold it, their non-blocking attempt fails.
        let g = LockedFile::open(&p, true).unwrap().unwrap();
        fl.l_type = libc::F_WRLCK as libc::c_short;
        assert!(nix::fcntl::fcntl(&theirs, nix::fcntl::FcntlArg::F_SETLK(&fl)).is_err());
        drop(g);
        assert!(nix::fcntl::fcntl(&theirs, nix::fcntl::FcntlArg::F_SETLK(&fl)).is_ok());
    }
}
