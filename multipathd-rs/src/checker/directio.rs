//! The `directio` checker: an `O_DIRECT` read of the first 4 KiB of the path's block node.
//!
//! `O_DIRECT` bypasses the page cache, so the read really travels down the path. 4096 bytes at
//! offset 0 is a whole number of logical blocks for both 512-byte and 4 KiB devices, and the
//! buffer is a 4096-aligned window into an over-allocated `Vec` (no unsafe allocation).
//!
//! A read to a dead path can block far longer than any timeout, and cannot be cancelled. The
//! read therefore runs on its own thread; the check waits at most `timeout` for it and answers
//! [`CheckState::Timeout`] after that. While that read still hangs, later checks of the same
//! node answer `Timeout` at once instead of piling up more blocked threads.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Duration;

use super::{CheckResult, CheckState, CheckTarget, PathChecker};

/// Bytes read per check, also the buffer alignment.
pub const READ_SIZE: usize = 4096;

/// The `directio` checker.
#[derive(Debug, Clone)]
pub struct DirectioChecker {
    timeout: Duration,
    hung: Arc<Mutex<HashSet<PathBuf>>>,
}

impl DirectioChecker {
    pub fn new(timeout: Duration) -> Self {
        DirectioChecker {
            timeout,
            hung: Arc::new(Mutex::new(HashSet::new())),
        }
    }
}

/// Returns the `len`-byte sub-slice of `buf` that starts at an `align`-aligned address, or
/// `None` if `buf` is too small to contain one.
pub fn aligned_window(buf: &mut [u8], align: usize, len: usize) -> Option<&mut [u8]> {
    let skip = buf.as_ptr().align_offset(align);
    buf.get_mut(skip..skip.checked_add(len)?)
}

/// Reads the first [`READ_SIZE`] bytes of `node` with `O_DIRECT`; the blocking part.
pub fn read_first_block(node: &Path) -> CheckResult {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_DIRECT.bits())
        .open(node)
    {
        Ok(file) => file,
        Err(e) => {
            return CheckResult::new(
                CheckState::Down,
                format!("cannot open {} with O_DIRECT: {e}", node.display()),
            );
        }
    };
    let mut storage = vec![0u8; 2 * READ_SIZE];
    let Some(window) = aligned_window(&mut storage, READ_SIZE, READ_SIZE) else {
        return CheckResult::new(CheckState::Down, "cannot align the read buffer");
    };
    match file.read_at(window, 0) {
        Ok(0) => CheckResult::new(
            CheckState::Down,
            format!("O_DIRECT read of {} returned no data", node.display()),
        ),
        Ok(n) => CheckResult::new(
            CheckState::Up,
            format!("O_DIRECT read of {n} bytes from {}", node.display()),
        ),
        Err(e) => CheckResult::new(
            CheckState::Down,
            format!("O_DIRECT read of {} failed: {e}", node.display()),
        ),
    }
}

impl PathChecker for DirectioChecker {
    fn name(&self) -> &'static str {
        "directio"
    }

    fn check(&self, target: &CheckTarget) -> CheckResult {
        let node = target.devnode.clone();
        {
            let mut hung = self.hung.lock().unwrap_or_else(PoisonError::into_inner);
            if hung.contains(&node) {
                return CheckResult::new(
                    CheckState::Timeout,
                    format!(
                        "an earlier O_DIRECT read of {} has not returned yet",
                        node.display()
                    ),
                );
            }
            hung.insert(node.clone());
        }
        let (tx, rx) = mpsc::channel();
        let hung = Arc::clone(&self.hung);
        let spawned = std::thread::Builder::new()
            .name(format!("directio-{}", target.dev))
            .spawn(move || {
                let result = read_first_block(&node);
                hung.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&node);
                // The checker may have given up waiting; then nobody listens.
                let _ = tx.send(result);
            });
        if let Err(e) = spawned {
            self.hung
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&target.devnode);
            return CheckResult::new(
                CheckState::Pending,
                format!("cannot start the O_DIRECT read thread: {e}"),
            );
        }
        match rx.recv_timeout(self.timeout) {
            Ok(result) => result,
            Err(_) => CheckResult::new(
                CheckState::Timeout,
                format!(
                    "O_DIRECT read of {} did not complete within {:?}",
                    target.devnode.display(),
                    self.timeout
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_aligned_and_sized() {
        let mut storage = vec![0u8; 2 * READ_SIZE];
        let window = aligned_window(&mut storage, READ_SIZE, READ_SIZE).expect("fits");
        assert_eq!(window.len(), READ_SIZE);
        assert_eq!(window.as_ptr() as usize % READ_SIZE, 0);
        let mut small = vec![0u8; 16];
        assert!(aligned_window(&mut small, READ_SIZE, READ_SIZE).is_none());
    }

    fn target_for(path: &Path) -> CheckTarget {
        let mut target = CheckTarget::new("test");
        target.devnode = path.to_path_buf();
        target
    }

    #[test]
    fn reads_a_file_with_o_direct() {
        // The temp dir lives on the build host's disk filesystem; tmpfs rejects O_DIRECT, so
        // the file goes next to the target dir.
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).expect("tempdir");
        let path = dir.path().join("lun");
        std::fs::write(&path, vec![0xa5u8; 3 * READ_SIZE]).expect("write");
        let checker = DirectioChecker::new(Duration::from_secs(10));
        let result = checker.check(&target_for(&path));
        assert_eq!(result.state, CheckState::Up, "{}", result.message);

        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").expect("write");
        let result = checker.check(&target_for(&empty));
        assert_eq!(result.state, CheckState::Down, "{}", result.message);
    }

    #[test]
    fn missing_node_is_down() {
        let checker = DirectioChecker::new(Duration::from_secs(1));
        let result = checker.check(&target_for(Path::new("/nonexistent/sdq")));
        assert_eq!(result.state, CheckState::Down);
        assert!(
            result.message.contains("/nonexistent/sdq"),
            "{}",
            result.message
        );
    }

    #[test]
    fn a_hung_read_times_out_and_is_not_started_twice() {
        // Opening a FIFO for reading blocks until a writer comes: a stand-in for a read to a
        // dead path that never returns.
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("hung");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let checker = DirectioChecker::new(Duration::from_millis(50));
        let first = checker.check(&target_for(&fifo));
        assert_eq!(first.state, CheckState::Timeout, "{}", first.message);
        let second = checker.check(&target_for(&fifo));
        assert_eq!(second.state, CheckState::Timeout);
        assert!(
            second.message.contains("has not returned"),
            "{}",
            second.message
        );
        // Release the blocked open; the read thread finishes and clears the node.
        let writer = std::fs::OpenOptions::new()
            .write(true)
            .open(&fifo)
            .expect("open fifo for writing");
        drop(writer);
        let cleared = (0..500).any(|_| {
            std::thread::yield_now();
            std::thread::sleep(Duration::from_millis(2));
            !checker.hung.lock().expect("lock").contains(&fifo)
        });
        assert!(cleared, "the finished read must clear the in-flight mark");
    }
}
