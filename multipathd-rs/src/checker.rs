//! Path checkers: is this path to the LUN usable right now?
//!
//! A [`PathChecker`] looks at one path ([`CheckTarget`]) and answers a [`CheckResult`]. The
//! implementations are:
//!
//! - [`tur::TurChecker`] (`tur`): SCSI TEST UNIT READY through the `SG_IO` ioctl, with the
//!   status, host byte, driver byte and sense data interpreted ([`sense`]);
//! - [`directio::DirectioChecker`] (`directio`): an `O_DIRECT` read of the first 4 KiB;
//! - [`sysfs::SysfsChecker`] (`sysfs`): the SCSI device `state` and ALUA `access_state`
//!   attributes under a sysfs root (what the simulated SAN uses);
//! - [`NoneChecker`] (`none`): always up.
//!
//! Checks run through a [`runner::CheckRunner`] so that one hung path never delays the others.

pub mod directio;
pub mod runner;
pub mod sense;
pub mod sysfs;
pub mod tur;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::Error;

/// What a check found out about a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckState {
    /// The path works.
    Up,
    /// The path does not work (device offline, transport gone, I/O error, LUN unavailable).
    Down,
    /// The path works but leads to a standby port (ALUA standby): usable, lowest priority.
    Ghost,
    /// No verdict this time (check still running, ALUA transition, persistent unit attention,
    /// target busy): keep the path's previous state and check again soon.
    Pending,
    /// The check did not complete within its timeout: treated like [`CheckState::Down`].
    Timeout,
}

impl CheckState {
    /// Whether I/O may be sent down a path in this state (`Up` or `Ghost`).
    pub fn is_usable(self) -> bool {
        matches!(self, CheckState::Up | CheckState::Ghost)
    }

    /// Whether this state says the path is broken (`Down` or `Timeout`).
    pub fn is_failed(self) -> bool {
        matches!(self, CheckState::Down | CheckState::Timeout)
    }

    /// The name multipath-tools prints in its `chk_st` column.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckState::Up => "ready",
            CheckState::Down => "faulty",
            CheckState::Ghost => "ghost",
            CheckState::Pending => "pending",
            CheckState::Timeout => "timeout",
        }
    }
}

impl fmt::Display for CheckState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer of one check: a state and a sentence saying why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CheckResult {
    pub state: CheckState,
    pub message: String,
}

impl CheckResult {
    pub fn new(state: CheckState, message: impl Into<String>) -> Self {
        CheckResult {
            state,
            message: message.into(),
        }
    }
}

/// The path a checker looks at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CheckTarget {
    /// Kernel name of the path device (`sdb`): the key under which results are reported.
    pub dev: String,
    /// The block device node (`/dev/sdb`).
    pub devnode: PathBuf,
    /// The SCSI generic node (`/dev/sg1`) if the device has one; `tur` prefers it.
    pub sg_node: Option<PathBuf>,
    /// Where to look the sg node up when the target is [resolved](CheckTarget::resolve)
    /// (on the checker's worker, see [`CheckTarget::deferred`]).
    pub sysfs_root: Option<PathBuf>,
}

impl CheckTarget {
    /// A target for `dev` with the usual `/dev/<dev>` node and no sg node.
    pub fn new(dev: impl Into<String>) -> Self {
        let dev = dev.into();
        let devnode = Path::new("/dev").join(&dev);
        CheckTarget {
            dev,
            devnode,
            sg_node: None,
            sysfs_root: None,
        }
    }

    /// A target for `dev` whose sg node is looked up under `sysfs_root` only when
    /// [`CheckTarget::resolve`] runs: the runner resolves on its worker, so a check that is
    /// never submitted costs no sysfs read, and the read happens off the caller's thread.
    pub fn deferred(dev: impl Into<String>, sysfs_root: &Path) -> Self {
        let mut target = CheckTarget::new(dev);
        target.sysfs_root = Some(sysfs_root.to_path_buf());
        target
    }

    /// Looks the sg node up if the target was made [deferred](CheckTarget::deferred) and has
    /// none yet (a no-op otherwise).
    pub fn resolve(&mut self) {
        if self.sg_node.is_none()
            && let Some(root) = self.sysfs_root.take()
        {
            self.sg_node = sg_node_of(&root, &self.dev);
        }
    }

    /// A target for `dev` whose sg node is looked up under `sysfs_root`
    /// (`block/<dev>/device/scsi_generic/<sgN>` gives `/dev/<sgN>`).
    pub fn with_sysfs(dev: impl Into<String>, sysfs_root: &Path) -> Self {
        let mut target = CheckTarget::new(dev);
        target.sg_node = sg_node_of(sysfs_root, &target.dev);
        target
    }
}

/// The `/dev/sgN` node of a SCSI disk, found through `block/<dev>/device/scsi_generic/`.
pub fn sg_node_of(sysfs_root: &Path, dev: &str) -> Option<PathBuf> {
    let dir = sysfs_root
        .join("block")
        .join(dev)
        .join("device")
        .join("scsi_generic");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("sg"))
        .collect();
    names.sort();
    names.first().map(|name| Path::new("/dev").join(name))
}

/// A way of checking a path. Implementations must be cheap to share between threads: the
/// [`runner::CheckRunner`] calls `check` from a worker thread.
pub trait PathChecker: Send + Sync {
    /// The configuration name of this checker (`tur`, `directio`, `sysfs`, `none`).
    fn name(&self) -> &'static str;

    /// Checks one path. May block (up to the checker's own timeout for `tur`; an I/O to a dead
    /// path may block longer), which is why the daemon calls it through the runner.
    fn check(&self, target: &CheckTarget) -> CheckResult;
}

/// The `none` checker: every path is up.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoneChecker;

impl PathChecker for NoneChecker {
    fn name(&self) -> &'static str {
        "none"
    }

    fn check(&self, _target: &CheckTarget) -> CheckResult {
        CheckResult::new(CheckState::Up, "checker none: always up")
    }
}

/// Default per-check timeout, as multipath-tools' `checker_timeout` falls back to the SCSI
/// device timeout (30 s); ours is shorter so a hung path is noticed within the 1 s target.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Builds the checker a configuration names. `sysfs_root` is used by `sysfs`; `timeout` is the
/// per-command timeout of `tur` and `directio`.
///
/// `readsector0` (multipath-tools' older name for a direct read) maps to `directio`.
pub fn checker_by_name(
    name: &str,
    sysfs_root: &Path,
    timeout: Duration,
) -> Result<Arc<dyn PathChecker>, Error> {
    match name {
        "tur" => Ok(Arc::new(tur::TurChecker::new(timeout))),
        "directio" | "readsector0" => Ok(Arc::new(directio::DirectioChecker::new(timeout))),
        "sysfs" => Ok(Arc::new(sysfs::SysfsChecker::new(sysfs_root))),
        "none" => Ok(Arc::new(NoneChecker)),
        other => Err(Error::UnknownChecker {
            name: other.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_and_failed_states() {
        assert!(CheckState::Up.is_usable());
        assert!(CheckState::Ghost.is_usable());
        assert!(!CheckState::Pending.is_usable());
        assert!(CheckState::Down.is_failed());
        assert!(CheckState::Timeout.is_failed());
        assert!(!CheckState::Pending.is_failed());
        assert_eq!(CheckState::Down.to_string(), "faulty");
    }

    #[test]
    fn checker_names() {
        let root = Path::new("/nonexistent");
        for name in ["tur", "directio", "sysfs", "none"] {
            let checker = checker_by_name(name, root, DEFAULT_CHECK_TIMEOUT).expect(name);
            assert_eq!(checker.name(), name);
        }
        let Err(err) = checker_by_name("emc_clariion", root, DEFAULT_CHECK_TIMEOUT) else {
            panic!("unknown checker must fail");
        };
        assert!(err.to_string().contains("emc_clariion"), "{err}");
    }

    #[test]
    fn sg_node_from_fixture() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/ref-sd2x2-tcmloop2/sys");
        let sg = sg_node_of(&root, "sda").expect("sda has an sg node in the fixture");
        assert!(sg.to_string_lossy().starts_with("/dev/sg"), "{sg:?}");
        assert_eq!(sg_node_of(&root, "sdz"), None);
        let target = CheckTarget::with_sysfs("sda", &root);
        assert_eq!(target.devnode, Path::new("/dev/sda"));
        assert_eq!(target.sg_node, Some(sg));
    }
}
