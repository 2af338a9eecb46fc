//! The `tur` checker: SCSI TEST UNIT READY through the `SG_IO` ioctl.
//!
//! The command goes to the path's sg node when it has one (`/dev/sgN`), else to its block node
//! (the sd driver accepts `SG_IO` too). The timeout travels in the `sg_io_hdr`, so the kernel
//! aborts the command itself; the [`super::runner::CheckRunner`] deadline is the second line of
//! defence. A UNIT ATTENTION (or another transient condition) is retried once.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use super::sense::{TurVerdict, interpret_tur};
use super::{CheckResult, CheckState, CheckTarget, PathChecker};

/// `SG_IO` (scsi/sg.h): synchronous SCSI command, version 3 interface.
pub const SG_IO: u32 = 0x2285;
/// `SG_DXFER_NONE`: the command moves no data.
pub const SG_DXFER_NONE: i32 = -1;
/// Size of the sense buffer we hand to the kernel (SPC allows up to 252 bytes).
pub const SENSE_LEN: usize = 64;

/// `struct sg_io_hdr` from `<scsi/sg.h>` (the version 3 `SG_IO` interface), laid out as C does.
#[repr(C)]
#[derive(Debug)]
pub struct SgIoHdr {
    /// `'S'` for SCSI generic.
    pub interface_id: i32,
    pub dxfer_direction: i32,
    pub cmd_len: u8,
    pub mx_sb_len: u8,
    pub iovec_count: u16,
    pub dxfer_len: u32,
    pub dxferp: *mut std::ffi::c_void,
    pub cmdp: *const u8,
    pub sbp: *mut u8,
    /// Milliseconds; `u32::MAX` means no timeout.
    pub timeout: u32,
    pub flags: u32,
    pub pack_id: i32,
    pub usr_ptr: *mut std::ffi::c_void,
    pub status: u8,
    pub masked_status: u8,
    pub msg_status: u8,
    pub sb_len_wr: u8,
    pub host_status: u16,
    pub driver_status: u16,
    pub resid: i32,
    pub duration: u32,
    pub info: u32,
}

nix::ioctl_readwrite_bad!(
    /// The `SG_IO` ioctl.
    sg_io,
    SG_IO,
    SgIoHdr
);

/// The outcome fields of one `SG_IO` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SgOutcome {
    pub status: u8,
    pub host_status: u16,
    pub driver_status: u16,
    pub sense: Vec<u8>,
    pub duration_ms: u32,
}

/// Sends TEST UNIT READY (CDB `00 00 00 00 00 00`) to an open device.
pub fn test_unit_ready(fd: &impl AsRawFd, timeout: Duration) -> Result<SgOutcome, nix::Error> {
    let cdb = [0u8; 6];
    let mut sense = [0u8; SENSE_LEN];
    let timeout_ms = u32::try_from(timeout.as_millis())
        .unwrap_or(u32::MAX - 1)
        .max(1);
    let mut hdr = SgIoHdr {
        interface_id: i32::from(b'S'),
        dxfer_direction: SG_DXFER_NONE,
        cmd_len: cdb.len() as u8,
        mx_sb_len: SENSE_LEN as u8,
        iovec_count: 0,
        dxfer_len: 0,
        dxferp: std::ptr::null_mut(),
        cmdp: cdb.as_ptr(),
        sbp: sense.as_mut_ptr(),
        timeout: timeout_ms,
        flags: 0,
        pack_id: 0,
        usr_ptr: std::ptr::null_mut(),
        status: 0,
        masked_status: 0,
        msg_status: 0,
        sb_len_wr: 0,
        host_status: 0,
        driver_status: 0,
        resid: 0,
        duration: 0,
        info: 0,
    };
    // SAFETY: `hdr` is a correctly laid out sg_io_hdr (repr(C), matching <scsi/sg.h>); its
    // pointers reference `cdb` (6 bytes, cmd_len 6) and `sense` (SENSE_LEN bytes, mx_sb_len),
    // both alive until the ioctl returns; no data transfer is requested (dxferp null,
    // dxfer_len 0). The fd is open for the duration of the call.
    unsafe { sg_io(fd.as_raw_fd(), &mut hdr) }?;
    let written = usize::from(hdr.sb_len_wr).min(SENSE_LEN);
    Ok(SgOutcome {
        status: hdr.status,
        host_status: hdr.host_status,
        driver_status: hdr.driver_status,
        sense: sense[..written].to_vec(),
        duration_ms: hdr.duration,
    })
}

/// The `tur` checker.
#[derive(Debug, Clone)]
pub struct TurChecker {
    timeout: Duration,
}

impl TurChecker {
    /// A TUR checker whose commands time out after `timeout` (rounded to milliseconds).
    pub fn new(timeout: Duration) -> Self {
        TurChecker { timeout }
    }

    fn check_node(&self, node: &Path) -> Result<CheckResult, std::io::Error> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(node)?;
        let mut last = None;
        for _attempt in 0..2 {
            let outcome = match test_unit_ready(&file, self.timeout) {
                Ok(outcome) => outcome,
                Err(errno) => {
                    return Ok(CheckResult::new(
                        CheckState::Down,
                        format!("SG_IO on {} failed: {errno}", node.display()),
                    ));
                }
            };
            match interpret_tur(
                outcome.status,
                outcome.host_status,
                outcome.driver_status,
                &outcome.sense,
            ) {
                TurVerdict::Final(result) => return Ok(result),
                TurVerdict::Retry(result) => last = Some(result),
            }
        }
        Ok(last.unwrap_or_else(|| CheckResult::new(CheckState::Pending, "no TUR answer")))
    }
}

impl PathChecker for TurChecker {
    fn name(&self) -> &'static str {
        "tur"
    }

    /// Uses the sg node when there is one; if that node does not exist (no udev to create
    /// `/dev/sgN`, sg module not loaded) the block node is used instead.
    fn check(&self, target: &CheckTarget) -> CheckResult {
        let opened = match &target.sg_node {
            Some(sg) => match self.check_node(sg) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => self
                    .check_node(&target.devnode)
                    .map_err(|e| (&target.devnode, e)),
                other => other.map_err(|e| (sg, e)),
            },
            None => self
                .check_node(&target.devnode)
                .map_err(|e| (&target.devnode, e)),
        };
        opened.unwrap_or_else(|(node, e)| {
            CheckResult::new(
                CheckState::Down,
                format!("cannot open {} for TEST UNIT READY: {e}", node.display()),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sg_io_hdr_matches_the_c_layout() {
        // x86_64 / aarch64 LP64: sizeof(struct sg_io_hdr) == 88.
        #[cfg(target_pointer_width = "64")]
        {
            assert_eq!(std::mem::size_of::<SgIoHdr>(), 88);
            assert_eq!(std::mem::offset_of!(SgIoHdr, dxferp), 16);
            assert_eq!(std::mem::offset_of!(SgIoHdr, timeout), 40);
            assert_eq!(std::mem::offset_of!(SgIoHdr, usr_ptr), 56);
            assert_eq!(std::mem::offset_of!(SgIoHdr, status), 64);
            assert_eq!(std::mem::offset_of!(SgIoHdr, host_status), 68);
            assert_eq!(std::mem::offset_of!(SgIoHdr, info), 80);
        }
    }

    #[test]
    fn missing_node_is_down_with_its_name() {
        let checker = TurChecker::new(Duration::from_secs(1));
        let mut target = CheckTarget::new("sdzz");
        target.devnode = "/nonexistent/sdzz".into();
        let result = checker.check(&target);
        assert_eq!(result.state, CheckState::Down);
        assert!(
            result.message.contains("/nonexistent/sdzz"),
            "{}",
            result.message
        );
    }

    #[test]
    fn missing_sg_node_falls_back_to_the_block_node() {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        let checker = TurChecker::new(Duration::from_secs(1));
        let mut target = CheckTarget::new("fake");
        target.sg_node = Some("/nonexistent/sg9".into());
        target.devnode = file.path().to_path_buf();
        let result = checker.check(&target);
        assert_eq!(result.state, CheckState::Down);
        assert!(
            result.message.contains(&*file.path().to_string_lossy()),
            "{}",
            result.message
        );
    }

    #[test]
    fn sg_io_on_a_non_scsi_file_is_down() {
        // A regular file rejects SG_IO (ENOTTY): the path must read as down, not up.
        let file = tempfile::NamedTempFile::new().expect("temp file");
        let checker = TurChecker::new(Duration::from_secs(1));
        let mut target = CheckTarget::new("fake");
        target.devnode = file.path().to_path_buf();
        let result = checker.check(&target);
        assert_eq!(result.state, CheckState::Down, "{}", result.message);
        assert!(result.message.contains("SG_IO"), "{}", result.message);
    }
}
