//! The `sysfs` checker: reads the SCSI device state the kernel publishes under a sysfs root.
//!
//! `<root>/block/<dev>/device/state` (`running`, `offline`, `blocked`, `transport-offline`,
//! `deleted`, ...) says whether the midlayer will send commands to the device; the ALUA
//! `<root>/block/<dev>/device/access_state` (from scsi_dh_alua, when attached) says whether the
//! target port is active, standby or unavailable. No I/O is sent, so this checker never hangs;
//! it is what the simulated SAN and the fixture trees use.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::{CheckResult, CheckState, CheckTarget, PathChecker};

/// The `sysfs` checker, reading attributes under `sysfs_root`.
#[derive(Debug, Clone)]
pub struct SysfsChecker {
    sysfs_root: PathBuf,
}

impl SysfsChecker {
    pub fn new(sysfs_root: &Path) -> Self {
        SysfsChecker {
            sysfs_root: sysfs_root.to_path_buf(),
        }
    }
}

/// Maps a SCSI device `state` attribute to a check state.
pub fn state_from_device_state(state: &str) -> (CheckState, &'static str) {
    match state {
        "running" => (CheckState::Up, "device running"),
        "offline" => (CheckState::Down, "device offline"),
        "transport-offline" => (CheckState::Down, "transport offline"),
        "blocked" | "created-blocked" => (CheckState::Down, "device blocked by its transport"),
        "deleted" | "cancel" | "del" => (CheckState::Down, "device being deleted"),
        "quiesce" | "created" => (CheckState::Pending, "device not yet running"),
        _ => (CheckState::Down, "unknown device state"),
    }
}

/// Maps an ALUA `access_state` attribute (`active/optimized`, `standby`, ...) to a check
/// state; `None` when the port is active (the device `state` decides).
pub fn state_from_access_state(access_state: &str) -> Option<(CheckState, &'static str)> {
    let primary = access_state.split('/').next().unwrap_or("");
    match primary {
        "active" => None,
        "standby" => Some((CheckState::Ghost, "ALUA standby")),
        "transitioning" => Some((CheckState::Pending, "ALUA transitioning")),
        "unavailable" | "offline" => Some((CheckState::Down, "ALUA port unavailable")),
        // lba-dependent and unknown states: the device state decides.
        _ => None,
    }
}

impl PathChecker for SysfsChecker {
    fn name(&self) -> &'static str {
        "sysfs"
    }

    fn check(&self, target: &CheckTarget) -> CheckResult {
        let device = self
            .sysfs_root
            .join("block")
            .join(&target.dev)
            .join("device");
        let state_file = device.join("state");
        let state = match std::fs::read_to_string(&state_file) {
            Ok(s) => s.trim().to_string(),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return CheckResult::new(
                    CheckState::Down,
                    format!("{} is missing: device gone", state_file.display()),
                );
            }
            Err(e) => {
                return CheckResult::new(
                    CheckState::Down,
                    format!("cannot read {}: {e}", state_file.display()),
                );
            }
        };
        let (state_verdict, why) = state_from_device_state(&state);
        if state_verdict != CheckState::Up {
            return CheckResult::new(state_verdict, format!("{why} (state \"{state}\")"));
        }
        // The ALUA state only matters for a running device; a missing or unreadable
        // access_state (no ALUA handler attached) leaves it up.
        if let Ok(access) = std::fs::read_to_string(device.join("access_state")) {
            let access = access.trim();
            if let Some((alua_verdict, why)) = state_from_access_state(access) {
                return CheckResult::new(
                    alua_verdict,
                    format!("{why} (access_state \"{access}\")"),
                );
            }
            return CheckResult::new(
                CheckState::Up,
                format!("device running, access_state \"{access}\""),
            );
        }
        CheckResult::new(CheckState::Up, "device running")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(state: &str, access: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let device = dir.path().join("block/sdb/device");
        std::fs::create_dir_all(&device).expect("mkdir");
        std::fs::write(device.join("state"), format!("{state}\n")).expect("state");
        if let Some(access) = access {
            std::fs::write(device.join("access_state"), format!("{access}\n")).expect("alua");
        }
        dir
    }

    fn check(dir: &tempfile::TempDir, dev: &str) -> CheckResult {
        SysfsChecker::new(dir.path()).check(&CheckTarget::new(dev))
    }

    #[test]
    fn device_states() {
        for (state, expect) in [
            ("running", CheckState::Up),
            ("offline", CheckState::Down),
            ("blocked", CheckState::Down),
            ("transport-offline", CheckState::Down),
            ("deleted", CheckState::Down),
            ("quiesce", CheckState::Pending),
            ("weird-new-state", CheckState::Down),
        ] {
            let dir = tree(state, None);
            let result = check(&dir, "sdb");
            assert_eq!(result.state, expect, "{state}: {}", result.message);
            assert!(result.message.contains(state), "{}", result.message);
        }
    }

    #[test]
    fn alua_access_states() {
        for (access, expect) in [
            ("active/optimized", CheckState::Up),
            ("active/non-optimized", CheckState::Up),
            ("standby", CheckState::Ghost),
            ("transitioning", CheckState::Pending),
            ("unavailable", CheckState::Down),
            ("lba-dependent", CheckState::Up),
        ] {
            let dir = tree("running", Some(access));
            assert_eq!(check(&dir, "sdb").state, expect, "{access}");
        }
        // An offline device stays down whatever ALUA says.
        let dir = tree("offline", Some("active/optimized"));
        assert_eq!(check(&dir, "sdb").state, CheckState::Down);
    }

    #[test]
    fn missing_device_is_down() {
        let dir = tree("running", None);
        let result = check(&dir, "sdq");
        assert_eq!(result.state, CheckState::Down);
        assert!(result.message.contains("sdq"), "{}", result.message);
    }

    #[test]
    fn reference_fixture_paths() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/ref-sd2x2-tcmloop2/sys");
        let checker = SysfsChecker::new(&root);
        for dev in ["sda", "sdb", "sdc", "sdd", "sde", "sdf"] {
            let result = checker.check(&CheckTarget::new(dev));
            assert_eq!(result.state, CheckState::Up, "{dev}: {}", result.message);
        }
    }
}
