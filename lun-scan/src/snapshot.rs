//! `lun-scan snapshot DIR`: copies the SCSI / FC / iSCSI / SAS / block part of a sysfs tree
//! into `DIR` so that `--sysfs-root DIR` reads it back (bug reports, test replays).
//!
//! What is copied:
//! - the class directories listed in [`CLASSES`], as symlinks with their original link text;
//!   `block/` and `bus/scsi/devices/` links; `dev/block/M:m` links of copied block devices;
//! - for every class entry, the device directory it points to: for SCSI objects the whole
//!   `hostN` subtree (remote ports, sessions, targets, devices, block devices), for
//!   device-mapper devices (`dm-N`) their `devices/virtual/block/dm-N` directory.
//!
//! Inside a copied directory, symlinks are copied as symlinks (never followed), readable files
//! are copied byte for byte (binary VPD pages included, at most 1 MiB each), and files that
//! cannot be read (write-only attributes such as `scan`, `delete`, `rescan`, `issue_lip`, or
//! attributes whose read fails) become empty files.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::Error;
use crate::sysfs::{join_lexical, list_dir};

/// Class directories copied into a snapshot.
pub const CLASSES: &[&str] = &[
    "scsi_host",
    "scsi_device",
    "scsi_disk",
    "scsi_generic",
    "block",
    "fc_host",
    "fc_remote_ports",
    "fc_transport",
    "iscsi_host",
    "iscsi_session",
    "iscsi_connection",
    "iscsi_transport",
    "sas_host",
    "sas_phy",
    "sas_port",
    "sas_device",
    "sas_end_device",
    "sas_expander",
];

const MAX_FILE: u64 = 1 << 20;

/// What a snapshot copied.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SnapshotReport {
    pub files: usize,
    pub links: usize,
    pub dirs: usize,
    /// Files written empty because they could not be read (write-only or failing attributes).
    pub unreadable: usize,
    /// Problems that did not stop the snapshot.
    pub errors: Vec<Error>,
}

fn create_err(p: &Path, e: &io::Error) -> Error {
    Error::Create {
        path: p.to_path_buf(),
        reason: e.to_string(),
    }
}

/// The directory to copy for a class entry that resolves to `target` (relative to the root):
/// the `hostN` ancestor when there is one, `devices/virtual/block/dm-N` for dm devices,
/// otherwise nothing (loop, nvme, ... are outside the snapshot's scope).
fn copy_root(class: &str, name: &str, target: &Path) -> Option<PathBuf> {
    let mut acc = PathBuf::new();
    for c in target.components() {
        acc.push(c);
        let s = c.as_os_str().to_string_lossy();
        if s.strip_prefix("host")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            return Some(acc);
        }
    }
    if class == "block" {
        return name.starts_with("dm-").then(|| target.to_path_buf());
    }
    // transport class objects outside a host (fc_transport, iscsi_transport, ...)
    Some(target.to_path_buf())
}

/// Copies the SCSI part of the sysfs tree at `src` into `dst` (created if missing).
pub fn snapshot(src: &Path, dst: &Path) -> Result<SnapshotReport, Error> {
    fs::create_dir_all(dst).map_err(|e| create_err(dst, &e))?;
    if !src.join("class").is_dir() {
        return Err(Error::Read {
            path: src.join("class"),
            kind: io::ErrorKind::NotFound,
            reason: "not a sysfs tree (no class/ directory)".into(),
        });
    }
    let mut rep = SnapshotReport::default();
    let mut roots: BTreeSet<PathBuf> = BTreeSet::new();
    // (link path relative to root, link text)
    let mut links: Vec<(PathBuf, PathBuf, PathBuf)> = Vec::new();
    for class in CLASSES {
        let cdir = Path::new("class").join(class);
        let names = match list_dir(&src.join(&cdir)) {
            Ok(n) => n,
            Err(e) => {
                rep.errors.push(e);
                continue;
            }
        };
        for name in names {
            let rel = cdir.join(&name);
            let Ok(text) = fs::read_link(src.join(&rel)) else {
                continue;
            };
            let target = join_lexical(&cdir, &text);
            if let Some(r) = copy_root(class, &name, &target) {
                roots.insert(r);
                links.push((rel, text, target));
            }
        }
    }
    // Drop roots inside other roots.
    let roots: Vec<PathBuf> = roots
        .iter()
        .filter(|r| !roots.iter().any(|o| o != *r && r.starts_with(o)))
        .cloned()
        .collect();
    for r in &roots {
        copy_tree(&src.join(r), &dst.join(r), &mut rep)?;
    }
    let covered = |t: &Path| roots.iter().any(|r| t.starts_with(r));
    // block/ and bus/scsi/devices/ and dev/block links.
    for dir in ["block", "bus/scsi/devices", "dev/block", "dev/char"] {
        let d = Path::new(dir);
        for name in list_dir(&src.join(d)).unwrap_or_default() {
            let rel = d.join(&name);
            if let Ok(text) = fs::read_link(src.join(&rel)) {
                let target = join_lexical(d, &text);
                if covered(&target) {
                    links.push((rel, text, target));
                }
            }
        }
    }
    for (rel, text, target) in links {
        if !covered(&target) {
            continue;
        }
        let l = dst.join(&rel);
        if let Some(p) = l.parent() {
            fs::create_dir_all(p).map_err(|e| create_err(p, &e))?;
        }
        let _ = fs::remove_file(&l);
        symlink(&text, &l).map_err(|e| create_err(&l, &e))?;
        rep.links += 1;
    }
    Ok(rep)
}

fn copy_tree(src: &Path, dst: &Path, rep: &mut SnapshotReport) -> Result<(), Error> {
    fs::create_dir_all(dst).map_err(|e| create_err(dst, &e))?;
    rep.dirs += 1;
    let rd = match fs::read_dir(src) {
        Ok(rd) => rd,
        Err(e) => {
            rep.errors.push(Error::read(src, &e));
            return Ok(());
        }
    };
    for entry in rd {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let s = src.join(&name);
        let d = dst.join(&name);
        let Ok(meta) = fs::symlink_metadata(&s) else {
            continue; // vanished meanwhile
        };
        let ft = meta.file_type();
        if ft.is_symlink() {
            if let Ok(t) = fs::read_link(&s) {
                let _ = fs::remove_file(&d);
                symlink(&t, &d).map_err(|e| create_err(&d, &e))?;
                rep.links += 1;
            }
        } else if ft.is_dir() {
            copy_tree(&s, &d, rep)?;
        } else if ft.is_file() {
            let readable = meta.permissions().mode() & 0o444 != 0;
            let content = if readable { read_limited(&s) } else { None };
            if content.is_none() {
                rep.unreadable += 1;
            }
            fs::write(&d, content.unwrap_or_default()).map_err(|e| create_err(&d, &e))?;
            rep.files += 1;
        }
    }
    Ok(())
}

fn read_limited(p: &Path) -> Option<Vec<u8>> {
    let f = fs::File::open(p).ok()?;
    let mut buf = Vec::new();
    f.take(MAX_FILE).read_to_end(&mut buf).ok()?;
    Some(buf)
}
