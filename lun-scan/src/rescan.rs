//! Rescans: wildcard and targeted host scans, FC LIPs, adding one device, removing a path,
//! resizing. Writes go through [`SysfsWriter`] so tests can emulate the kernel; every operation
//! reports a [`Diff`] of the paths before and after.
//!
//! The kernel's `scan` write is synchronous but `sd` probes disks asynchronously, and a LIP is
//! asynchronous altogether, so after writing we wait until the set of SCSI devices and block
//! devices has not changed for `settle` (polling every `poll`), giving up after `timeout`.
//!
//! Removing a path refuses when it is the last running path of a multipath map. lun-scan does
//! not depend on dm-tables, so it decides from sysfs alone: the path's `holders/dm-N` whose
//! `dm/uuid` starts with `mpath-` are multipath maps, and the map's other members are its
//! `slaves/`; a member counts as running when its `device/state` is "running". sysfs has no
//! open count for a dm device, so every multipath map is treated as possibly open.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::Error;
use crate::model::{Hctl, ScsiPath};
use crate::sysfs::{self, list_dir, read_opt};

/// Writes sysfs attributes. The kernel implementation opens the file for writing (never
/// creating it) and writes the value in one `write`.
pub trait SysfsWriter {
    fn write(&mut self, path: &Path, value: &str) -> io::Result<()>;
}

/// Writes to the real sysfs.
#[derive(Debug, Default, Clone, Copy)]
pub struct KernelWriter;

impl SysfsWriter for KernelWriter {
    fn write(&mut self, path: &Path, value: &str) -> io::Result<()> {
        let mut f = fs::OpenOptions::new().write(true).open(path)?;
        f.write_all(value.as_bytes())
    }
}

impl<F: FnMut(&Path, &str) -> io::Result<()>> SysfsWriter for F {
    fn write(&mut self, path: &Path, value: &str) -> io::Result<()> {
        self(path, value)
    }
}

/// Timing of the wait after a rescan.
#[derive(Debug, Clone, Copy)]
pub struct Settle {
    /// How long the device set must stay unchanged.
    pub settle: Duration,
    /// Give up waiting after this long (the diff is still reported).
    pub timeout: Duration,
    pub poll: Duration,
    /// Print progress on stderr (only honoured when stderr is a terminal).
    pub progress: bool,
}

impl Default for Settle {
    fn default() -> Self {
        Settle {
            settle: Duration::from_secs(2),
            timeout: Duration::from_secs(60),
            poll: Duration::from_millis(100),
            progress: true,
        }
    }
}

impl Settle {
    /// No waiting at all (fixtures, where writes take effect at once).
    pub fn none() -> Self {
        Settle {
            settle: Duration::ZERO,
            timeout: Duration::ZERO,
            poll: Duration::from_millis(1),
            progress: false,
        }
    }
}

/// A path whose size or state changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub dev: String,
    pub hctl: Hctl,
    pub wwid: Option<String>,
    pub size_before: Option<u64>,
    pub size_after: Option<u64>,
    pub state_before: String,
    pub state_after: String,
}

/// What a rescan changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Diff {
    pub added: Vec<ScsiPath>,
    pub removed: Vec<ScsiPath>,
    pub changed: Vec<Change>,
    /// Writes the kernel rejected, paths that could not be read, a settle timeout...
    pub errors: Vec<Error>,
    /// False when the device set was still changing at the timeout.
    pub settled: bool,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Compares two path lists (matched by H:C:T:L and device name).
pub fn diff(before: &[ScsiPath], after: &[ScsiPath]) -> Diff {
    let key = |p: &ScsiPath| (p.hctl, p.dev.clone());
    let b: BTreeMap<_, &ScsiPath> = before.iter().map(|p| (key(p), p)).collect();
    let a: BTreeMap<_, &ScsiPath> = after.iter().map(|p| (key(p), p)).collect();
    let mut d = Diff {
        settled: true,
        ..Diff::default()
    };
    for (k, p) in &a {
        match b.get(k) {
            None => d.added.push((*p).clone()),
            Some(old) => {
                if old.size_bytes != p.size_bytes || old.state != p.state {
                    d.changed.push(Change {
                        dev: p.dev.clone(),
                        hctl: p.hctl,
                        wwid: p.wwid.clone(),
                        size_before: old.size_bytes,
                        size_after: p.size_bytes,
                        state_before: old.state.to_string(),
                        state_after: p.state.to_string(),
                    });
                }
            }
        }
    }
    for (k, p) in &b {
        if !a.contains_key(k) {
            d.removed.push((*p).clone());
        }
    }
    d
}

/// A cheap fingerprint of the device set: SCSI device and block device names.
fn fingerprint(root: &Path) -> (Vec<String>, Vec<String>) {
    (
        list_dir(&root.join("class/scsi_device")).unwrap_or_default(),
        list_dir(&root.join("class/block")).unwrap_or_default(),
    )
}

/// Waits until the device set stops changing. Returns false on timeout.
pub fn wait_settled(root: &Path, s: &Settle) -> bool {
    let start = Instant::now();
    let mut last = fingerprint(root);
    let mut stable_since = Instant::now();
    let show = s.progress && io::stderr().is_terminal();
    loop {
        if stable_since.elapsed() >= s.settle {
            if show {
                eprintln!("\rwaiting for devices to settle: done          ");
            }
            return true;
        }
        if start.elapsed() >= s.timeout {
            if show {
                eprintln!();
            }
            return false;
        }
        std::thread::sleep(s.poll);
        let now = fingerprint(root);
        if now != last {
            last = now;
            stable_since = Instant::now();
        }
        if show {
            eprint!(
                "\rwaiting for devices to settle: {} SCSI devices, {:.1}s",
                last.0.len(),
                start.elapsed().as_secs_f32()
            );
        }
    }
}

/// Runs rescans against one sysfs root.
pub struct Rescanner<'a> {
    pub root: PathBuf,
    pub writer: &'a mut dyn SysfsWriter,
    pub settle: Settle,
}

impl<'a> Rescanner<'a> {
    pub fn new(root: &Path, writer: &'a mut dyn SysfsWriter, settle: Settle) -> Self {
        Rescanner {
            root: root.to_path_buf(),
            writer,
            settle,
        }
    }

    fn write(&mut self, path: &Path, value: &str, errors: &mut Vec<Error>) -> bool {
        tracing::info!(path = %path.display(), value, "sysfs write");
        match self.writer.write(path, value) {
            Ok(()) => true,
            Err(e) => {
                errors.push(Error::Write {
                    path: path.to_path_buf(),
                    value: value.to_string(),
                    reason: e.to_string(),
                });
                false
            }
        }
    }

    /// Runs `op` between two scans and reports the difference.
    fn around(&mut self, op: impl FnOnce(&mut Self, &mut Vec<Error>)) -> Diff {
        let (before, _) = sysfs::scan_paths(&self.root);
        let mut errors = Vec::new();
        op(self, &mut errors);
        let settled = wait_settled(&self.root, &self.settle);
        let (after, scan_errors) = sysfs::scan_paths(&self.root);
        let mut d = diff(&before, &after);
        d.settled = settled;
        d.errors = errors;
        d.errors.extend(scan_errors);
        for p in d.added.iter().chain(
            d.changed
                .iter()
                .filter_map(|c| after.iter().find(|p| p.dev == c.dev)),
        ) {
            d.errors.extend(p.errors.iter().cloned());
        }
        d
    }

    /// The named hosts, or every SCSI host when `hosts` is empty.
    fn hosts(&self, hosts: &[String], errors: &mut Vec<Error>) -> Vec<String> {
        let all = list_dir(&self.root.join("class/scsi_host")).unwrap_or_default();
        if hosts.is_empty() {
            return all;
        }
        let mut out = Vec::new();
        for h in hosts {
            if all.contains(h) {
                out.push(h.clone());
            } else {
                errors.push(Error::NoSuchHost {
                    host: h.clone(),
                    root: self.root.clone(),
                });
            }
        }
        out
    }

    /// Writes "- - -" (or "- - L") to `scsi_host/hostN/scan` of each host (all when empty).
    pub fn scan_hosts(&mut self, hosts: &[String], lun: Option<u64>) -> Diff {
        let hosts = hosts.to_vec();
        self.around(|me, errors| me.write_host_scans(&hosts, lun, errors))
    }

    /// [`Rescanner::scan_hosts`] without the path scans before and after it (for a caller
    /// that scans once itself and needs no difference): the writes, then the settle wait.
    /// Returns the writes' errors and whether the SCSI layer settled.
    pub fn trigger_host_scans(&mut self, hosts: &[String], lun: Option<u64>) -> (Vec<Error>, bool) {
        let mut errors = Vec::new();
        self.write_host_scans(hosts, lun, &mut errors);
        (errors, wait_settled(&self.root, &self.settle))
    }

    fn write_host_scans(&mut self, hosts: &[String], lun: Option<u64>, errors: &mut Vec<Error>) {
        let value = match lun {
            Some(l) => format!("- - {l}"),
            None => "- - -".to_string(),
        };
        for h in self.hosts(hosts, errors) {
            let f = self.root.join("class/scsi_host").join(&h).join("scan");
            self.write(&f, &value, errors);
        }
    }

    /// Targeted FC scan as os-brick does: for every remote port whose port_name is `wwpn`
    /// (on the given hosts, all when empty), write "C T L" (L = `lun` or "-") to the host's
    /// `scan`, with C and T from the rport. No wildcard over other targets.
    pub fn scan_fc_target(&mut self, hosts: &[String], wwpn: &str, lun: Option<u64>) -> Diff {
        let hosts = hosts.to_vec();
        let want = normalize_wwpn(wwpn);
        self.around(|me, errors| {
            let hosts = me.hosts(&hosts, errors);
            let (rports, _) = sysfs::scan_rports(&me.root);
            let mut found = false;
            for r in rports {
                let hname = format!("host{}", r.host);
                if !hosts.contains(&hname)
                    || r.port_name.as_deref().map(normalize_wwpn) != Some(want.clone())
                {
                    continue;
                }
                found = true;
                let Some(t) = r.scsi_target_id else {
                    errors.push(Error::RportNotTarget {
                        rport: r.name.clone(),
                        wwpn: want.clone(),
                    });
                    continue;
                };
                let l = lun.map_or("-".to_string(), |l| l.to_string());
                let f = me.root.join("class/scsi_host").join(&hname).join("scan");
                me.write(&f, &format!("{} {t} {l}", r.channel), errors);
            }
            if !found {
                errors.push(Error::NoSuchRport {
                    wwpn: want.clone(),
                    root: me.root.clone(),
                });
            }
        })
    }

    /// Issues a LIP on each FC host (all FC hosts when empty), then waits for the device set to
    /// settle.
    pub fn lip(&mut self, hosts: &[String]) -> Diff {
        let hosts = hosts.to_vec();
        self.around(|me, errors| {
            let fc = list_dir(&me.root.join("class/fc_host")).unwrap_or_default();
            let chosen = if hosts.is_empty() {
                fc.clone()
            } else {
                me.hosts(&hosts, errors)
            };
            for h in chosen {
                if !fc.contains(&h) {
                    errors.push(Error::InvalidArgument {
                        what: "host",
                        value: h.clone(),
                        reason: "it is not an FC host, so it has no issue_lip".into(),
                    });
                    continue;
                }
                let f = me.root.join("class/fc_host").join(&h).join("issue_lip");
                me.write(&f, "1", errors);
            }
        })
    }

    /// Adds one device: writes "C T L" to `scsi_host/hostH/scan`.
    pub fn add_device(&mut self, hctl: Hctl) -> Diff {
        self.around(|me, errors| {
            let f = me
                .root
                .join("class/scsi_host")
                .join(format!("host{}", hctl.host))
                .join("scan");
            if !f.parent().is_some_and(Path::exists) {
                errors.push(Error::NoSuchHost {
                    host: format!("host{}", hctl.host),
                    root: me.root.clone(),
                });
                return;
            }
            me.write(
                &f,
                &format!("{} {} {}", hctl.channel, hctl.target, hctl.lun),
                errors,
            );
        })
    }

    /// Removes a path through `device/delete`. Refuses (Err) when it is the last running path
    /// of a multipath map, unless `force`.
    pub fn remove_path(&mut self, dev: &str, force: bool) -> Result<Diff, Error> {
        let p = sysfs::scan_path(&self.root, dev)?;
        if !force {
            check_not_last_path(&self.root, &p)?;
        }
        let f = p.syspath.join("delete");
        Ok(self.around(|me, errors| {
            me.write(&f, "1", errors);
        }))
    }

    /// Re-reads a device's capacity through `device/rescan`; the diff's `changed` holds the
    /// old and new size when it changed.
    pub fn resize(&mut self, dev: &str) -> Result<Diff, Error> {
        let p = sysfs::scan_path(&self.root, dev)?;
        let f = p.syspath.join("rescan");
        Ok(self.around(|me, errors| {
            me.write(&f, "1", errors);
        }))
    }
}

/// "0x5001...", "50:01:...", "5001..." -> "0x5001..." lowercase.
pub fn normalize_wwpn(w: &str) -> String {
    let hex: String = w
        .trim()
        .trim_start_matches("0x")
        .trim_start_matches("0X")
        .chars()
        .filter(|c| *c != ':' && *c != '-')
        .collect::<String>()
        .to_ascii_lowercase();
    format!("0x{hex}")
}

/// Errors if `p` is the last running path of a multipath map (see the module docs).
pub fn check_not_last_path(root: &Path, p: &ScsiPath) -> Result<(), Error> {
    for holder in &p.holders {
        let dm = root.join("class/block").join(holder);
        let uuid = read_opt(&dm.join("dm/uuid"))
            .ok()
            .flatten()
            .unwrap_or_default();
        if !uuid.starts_with("mpath-") {
            continue;
        }
        let map = read_opt(&dm.join("dm/name"))
            .ok()
            .flatten()
            .unwrap_or_else(|| holder.clone());
        let others_running = list_dir(&dm.join("slaves"))
            .unwrap_or_default()
            .into_iter()
            .filter(|s| s != &p.dev)
            .filter(|s| {
                read_opt(&root.join("class/block").join(s).join("device/state"))
                    .ok()
                    .flatten()
                    .as_deref()
                    == Some("running")
            })
            .count();
        if others_running == 0 {
            return Err(Error::LastActivePath {
                dev: p.dev.clone(),
                map,
                uuid,
            });
        }
    }
    Ok(())
}

/// Convenience: a scan-everything rescan on the live system or a tree, with the kernel writer.
pub fn rescan_all(root: &Path, settle: Settle) -> Diff {
    let mut w = KernelWriter;
    Rescanner::new(root, &mut w, settle).scan_hosts(&[], None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wwpn_normalisation() {
        assert_eq!(normalize_wwpn("0x500A0981"), "0x500a0981");
        assert_eq!(normalize_wwpn("50:0a:09:81"), "0x500a0981");
        assert_eq!(normalize_wwpn("500a0981"), "0x500a0981");
    }
}
