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

/// Replaces `path` with `data` atomically and durably: the data goes to a temporary file in the
/// same directory, which is fsynced, renamed over `path`, and then the directory is fsynced.
/// A reader (or a crash) sees either the old or the new complete file. The mode of an existing
/// file is kept; new files get `new_mode`. Missing parent directories are created.
pub fn atomic_write(path: &Path, data: &[u8], new_mode: u32) -> Result<(), Error> {
    let dir = parent_dir(path);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
    let mode = match std::fs::metadata(path) {
        Ok(m) => m.permissions().mode() & 0o7777,
        Err(_) => new_mode,
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
}
