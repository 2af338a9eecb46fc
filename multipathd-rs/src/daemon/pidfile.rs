//! The single-instance lock: an exclusive `flock` on a pid file, taken before the daemon
//! reads a map, opens the alias store or binds its socket, and held until it exits.
//!
//! The file holds the holder's pid so the refused daemon can name it. The lock is what
//! counts, never the pid in the file: a stale file from a crashed daemon is simply locked
//! again. The file is removed on exit while still locked; a starter that opened the old
//! file just before that sees (by inode) that its lock is on an unlinked file and starts over.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use crate::error::Error;

/// Where the daemon's lock lives unless `daemon --pidfile` says otherwise.
pub const DEFAULT_PIDFILE: &str = "/run/multipathd-rs.pid";

/// How long a refused starter waits for the holder to write its pid (it locks, then writes).
const PID_WAIT: Duration = Duration::from_secs(2);

/// A held single-instance lock; dropping it removes the file and releases the lock.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    lock: Option<Flock<File>>,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::PidFile {
        path: path.to_path_buf(),
        source,
    }
}

/// The pid written in the file, if there is one yet.
fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

impl PidFile {
    /// Takes the lock at `path` and writes our pid into it. When another process holds it,
    /// fails with [`Error::AlreadyRunning`] naming that process's pid (as far as it wrote it
    /// within a moment). Nothing else is touched either way.
    pub fn acquire(path: &Path) -> Result<PidFile, Error> {
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .custom_flags(nix::libc::O_CLOEXEC | nix::libc::O_NOFOLLOW)
                .open(path)
                .map_err(io_err(path))?;
            let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => lock,
                Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                    let deadline = Instant::now() + PID_WAIT;
                    let pid = loop {
                        match read_pid(&mut file) {
                            Some(pid) => break Some(pid),
                            None if Instant::now() >= deadline => break None,
                            None => std::thread::sleep(Duration::from_millis(10)),
                        }
                    };
                    return Err(Error::AlreadyRunning {
                        path: path.to_path_buf(),
                        pid,
                    });
                }
                Err((_, errno)) => return Err(io_err(path)(std::io::Error::from(errno))),
            };
            // Locked; but if the previous holder removed the file between our open and our
            // lock, we hold a lock on a name nobody else sees: start over on the new file.
            let ours = lock.metadata().map_err(io_err(path))?;
            match std::fs::symlink_metadata(path) {
                Ok(now) if (now.dev(), now.ino()) == (ours.dev(), ours.ino()) => {}
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(path)(e)),
            }
            lock.set_len(0).map_err(io_err(path))?;
            lock.rewind().map_err(io_err(path))?;
            writeln!(lock, "{}", std::process::id()).map_err(io_err(path))?;
            lock.flush().map_err(io_err(path))?;
            return Ok(PidFile {
                path: path.to_path_buf(),
                lock: Some(lock),
            });
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Removed while still locked (see the module comment), then unlocked by the drop.
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!("cannot remove the pid file {}: {e}", self.path.display());
        }
        drop(self.lock.take());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_and_the_file_goes_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.pid");
        let held = PidFile::acquire(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        // flock locks belong to the open file description, so a second open in this very
        // process conflicts just as another process would.
        match PidFile::acquire(&path) {
            Err(Error::AlreadyRunning { pid, path: p }) => {
                assert_eq!(pid, Some(std::process::id()));
                assert_eq!(p, path);
            }
            other => panic!("expected AlreadyRunning, got {other:?}"),
        }
        drop(held);
        assert!(!path.exists());
        let again = PidFile::acquire(&path).unwrap();
        assert_eq!(again.path(), path);
    }

    #[test]
    fn a_stale_file_without_a_lock_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.pid");
        std::fs::write(&path, "999999\n").unwrap();
        let _held = PidFile::acquire(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().trim(),
            std::process::id().to_string()
        );
    }
}
