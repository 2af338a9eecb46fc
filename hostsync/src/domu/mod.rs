//! The disks of a domU: its configuration (an xl/xm file or libvirt domain XML) read into
//! [`DiskSpec`]s, and each disk resolved to its identity on this host ([`Identity`]): a
//! multipath map to its WWID, an LV to its VG and LV UUIDs and the WWIDs of its PVs, a raw
//! `/dev/sdX` to its WWID (with the warning that sdX names differ between hosts).
//!
//! Identity is read through seams: the sysfs root is a path (dm names and UUIDs, SCSI WWIDs as
//! lun-scan reads them) and LVM runs through a [`Runner`](crate::runner::Runner).

pub mod libvirt;
pub mod xl;

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::lvm::{Lv, Lvm, Pv, Vg};
use crate::{Error, Result};

/// Read-only or read-write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// `r`/`ro`, `<readonly/>`.
    #[serde(rename = "ro")]
    ReadOnly,
    /// `w`/`rw` (the default).
    #[default]
    #[serde(rename = "rw")]
    ReadWrite,
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Access::ReadOnly => "ro",
            Access::ReadWrite => "rw",
        })
    }
}

/// One disk of a domU as its configuration gives it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DiskSpec {
    /// The spec as written (xl) or the `<disk>` element's opening tag (libvirt).
    pub spec: String,
    /// The target (xl) or the source device or file (libvirt), as written.
    pub target: Option<String>,
    /// Image format (`raw`, `qcow2`, ...).
    pub format: Option<String>,
    /// The guest device (`xvda`, `sda`, `hdc`, ...).
    pub vdev: Option<String>,
    /// Read-only or read-write.
    pub access: Access,
    /// `disk`, `cdrom`.
    pub devtype: Option<String>,
    /// The hotplug script (`block-hostsync`, ...).
    pub script: Option<String>,
    /// `phy`, `qdisk`, `tap` (xl); the disk type `block`, `file`, ... (libvirt).
    pub backendtype: Option<String>,
    /// Bare flags (`discard`, `shareable`, ...).
    pub flags: Vec<String>,
    /// Other key=value parameters.
    pub other: BTreeMap<String, String>,
    /// Deprecated forms met while reading it.
    pub notes: Vec<String>,
}

impl DiskSpec {
    /// The host path of the disk: the target, with `/dev/` prepended when it is not absolute
    /// (xl's rule), unless a script other than block-hostsync interprets the target.
    pub fn path(&self) -> Option<String> {
        let t = self.target.as_deref()?;
        if let Some(s) = &self.script
            && !s.ends_with("block-hostsync")
        {
            return None;
        }
        Some(if t.starts_with('/') {
            t.to_string()
        } else {
            format!("/dev/{t}")
        })
    }
}

/// Which kind of configuration a file was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigKind {
    /// xl/xm configuration file.
    Xl,
    /// libvirt domain XML.
    Libvirt,
}

/// A domU's configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DomuConfig {
    /// The file.
    pub file: PathBuf,
    /// xl or libvirt.
    pub kind: ConfigKind,
    /// The domain's name, when the file gives one.
    pub name: Option<String>,
    /// Its disks in order.
    pub disks: Vec<DiskSpec>,
}

impl DomuConfig {
    /// The domain's name, or the file's stem when the file gives none.
    pub fn domu_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            self.file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "domU".into())
        })
    }
}

/// Parses configuration text (libvirt XML when it starts with `<`, xl otherwise).
pub fn parse(text: &str, file: &Path) -> Result<DomuConfig> {
    let (kind, parsed) = if text.trim_start().starts_with('<') {
        (ConfigKind::Libvirt, libvirt::disks(text))
    } else {
        (ConfigKind::Xl, xl::disks(text))
    };
    let (name, disks) = parsed.map_err(|message| Error::File {
        path: file.to_path_buf(),
        message,
    })?;
    Ok(DomuConfig {
        file: file.to_path_buf(),
        kind,
        name,
        disks,
    })
}

/// Reads and parses a configuration file.
pub fn load(file: &Path) -> Result<DomuConfig> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::File {
        path: file.to_path_buf(),
        message: e.to_string(),
    })?;
    parse(&text, file)
}

/// One PV of an LV's VG.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PvIdentity {
    /// The device LVM uses.
    pub device: String,
    /// The multipath map it is, when it is one.
    pub map: Option<String>,
    /// The LUN's WWID, when known.
    pub wwid: Option<String>,
}

/// What a disk is on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Identity {
    /// A multipath map.
    Multipath {
        /// The map's name.
        map: String,
        /// The LUN's WWID.
        wwid: String,
    },
    /// A logical volume.
    Lv {
        /// VG name.
        vg: String,
        /// LV name.
        lv: String,
        /// VG UUID.
        vg_uuid: String,
        /// LV UUID.
        lv_uuid: String,
        /// `sanlock`, `dlm` or empty.
        lock_type: String,
        /// The VG's PVs.
        pvs: Vec<PvIdentity>,
    },
    /// A single SCSI path (`/dev/sdX`).
    Raw {
        /// `sdX`.
        device: String,
        /// The LUN's WWID, when it could be read.
        wwid: Option<String>,
    },
    /// A file or something else that is not a SAN block device.
    Other {
        /// What it is.
        what: String,
    },
    /// Could not be resolved.
    Unknown {
        /// Why.
        reason: String,
    },
}

impl Identity {
    /// One line for tables.
    pub fn summary(&self) -> String {
        match self {
            Identity::Multipath { map, wwid } => format!("map {map} wwid {wwid}"),
            Identity::Lv {
                vg,
                lv,
                lv_uuid,
                pvs,
                ..
            } => {
                let w: Vec<&str> = pvs.iter().filter_map(|p| p.wwid.as_deref()).collect();
                format!("lv {vg}/{lv} uuid {lv_uuid} pv wwid {}", w.join(","))
            }
            Identity::Raw { device, wwid } => {
                format!("raw {device} wwid {}", wwid.as_deref().unwrap_or("?"))
            }
            Identity::Other { what } => what.clone(),
            Identity::Unknown { reason } => format!("UNKNOWN: {reason}"),
        }
    }
}

/// A disk with its identity on this host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiskReport {
    /// The disk as configured.
    pub disk: DiskSpec,
    /// Its host path.
    pub path: Option<String>,
    /// What it is here.
    pub identity: Identity,
    /// What the admin should know.
    pub warnings: Vec<String>,
}

/// Resolves disk paths to identities through a sysfs root and LVM.
pub struct Resolver<'a> {
    sysfs: PathBuf,
    lvm: Lvm<'a>,
    lvs: OnceCell<std::result::Result<Vec<Lv>, String>>,
    vgs: OnceCell<std::result::Result<Vec<Vg>, String>>,
    pvs: OnceCell<std::result::Result<Vec<Pv>, String>>,
}

impl std::fmt::Debug for Resolver<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("sysfs", &self.sysfs)
            .finish()
    }
}

/// A device-mapper device found by name in sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmDevice {
    /// `dm-N`.
    pub kernel: String,
    /// Its name (`mpatha`, `vg-lv`).
    pub name: String,
    /// Its dm UUID (`mpath-<wwid>`, `LVM-<vg uuid><lv uuid>`).
    pub uuid: String,
    /// `major:minor` (decimal, from sysfs `dev`).
    pub dev: String,
}

/// Every device-mapper device under the sysfs root `sysfs`, sorted by name.
pub fn dm_devices(sysfs: &Path) -> Vec<DmDevice> {
    let mut out = Vec::new();
    let dir = sysfs.join("block");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return out;
    };
    for e in rd.flatten() {
        let kernel = e.file_name().to_string_lossy().into_owned();
        if !kernel.starts_with("dm-") {
            continue;
        }
        let base = dir.join(&kernel);
        if let (Some(name), Some(uuid)) = (
            read_trim(&base.join("dm/name")),
            read_trim(&base.join("dm/uuid")),
        ) {
            let dev = read_trim(&base.join("dev")).unwrap_or_default();
            out.push(DmDevice {
                kernel,
                name,
                uuid,
                dev,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

impl<'a> Resolver<'a> {
    /// A resolver reading `sysfs` (normally `/sys`) and running LVM through `lvm`.
    pub fn new(sysfs: impl Into<PathBuf>, lvm: Lvm<'a>) -> Self {
        Resolver {
            sysfs: sysfs.into(),
            lvm,
            lvs: OnceCell::new(),
            vgs: OnceCell::new(),
            pvs: OnceCell::new(),
        }
    }

    /// Every dm device of this host.
    pub fn dm_devices(&self) -> Vec<DmDevice> {
        dm_devices(&self.sysfs)
    }

    fn dm_named(&self, name: &str) -> Option<DmDevice> {
        self.dm_devices().into_iter().find(|d| d.name == name)
    }

    /// The WWID of SCSI disk `sdX` (as multipath names it: from VPD page 0x83).
    pub fn scsi_wwid(&self, dev: &str) -> std::result::Result<String, String> {
        let p = lun_scan::sysfs::scan_path(&self.sysfs, dev).map_err(|e| e.to_string())?;
        p.wwid
            .ok_or_else(|| format!("{dev} has no WWID in {}", self.sysfs.display()))
    }

    fn lvs(&self) -> std::result::Result<&Vec<Lv>, String> {
        self.lvs
            .get_or_init(|| self.lvm.lvs(&[]).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(Clone::clone)
    }

    fn vgs(&self) -> std::result::Result<&Vec<Vg>, String> {
        self.vgs
            .get_or_init(|| self.lvm.vgs(&[]).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(Clone::clone)
    }

    fn pvs(&self) -> std::result::Result<&Vec<Pv>, String> {
        self.pvs
            .get_or_init(|| self.lvm.pvs(&[]).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The LV whose `/dev/VG/LV` or `/dev/mapper/VG-LV` is `path`.
    pub fn lv_at(&self, path: &str) -> std::result::Result<Option<Lv>, String> {
        Ok(self
            .lvs()?
            .iter()
            .find(|l| l.path == path || l.dm_path == path)
            .cloned())
    }

    /// The identity of one device path, with warnings.
    pub fn identify(&self, path: &str) -> (Identity, Vec<String>) {
        let mut warnings = Vec::new();
        let Some(rest) = path.strip_prefix("/dev/") else {
            return (
                Identity::Other {
                    what: "a file, not a SAN block device".into(),
                },
                warnings,
            );
        };
        // A multipath map by name (or dm-N).
        let dm = if let Some(name) = rest.strip_prefix("mapper/") {
            self.dm_named(name)
        } else if rest.starts_with("dm-") {
            self.dm_devices().into_iter().find(|d| d.kernel == rest)
        } else {
            None
        };
        if let Some(d) = &dm
            && let Some(wwid) = d.uuid.strip_prefix("mpath-")
        {
            return (
                Identity::Multipath {
                    map: d.name.clone(),
                    wwid: wwid.to_string(),
                },
                warnings,
            );
        }
        // A raw SCSI disk (or a partition of one).
        if let Some(dev) = sd_name(rest) {
            warnings.push(format!(
                "{path} is one path to a LUN named by this host's discovery order; sdX names differ between hosts, so on another host {path} may be another LUN: name the disk by its multipath map (/dev/mapper/<alias>)"
            ));
            let wwid = match self.scsi_wwid(dev) {
                Ok(w) => Some(w),
                Err(e) => {
                    warnings.push(format!("its WWID cannot be read: {e}"));
                    None
                }
            };
            return (
                Identity::Raw {
                    device: dev.to_string(),
                    wwid,
                },
                warnings,
            );
        }
        // An LV: /dev/VG/LV or /dev/mapper/VG-LV (active or not).
        let looks_lv = rest.starts_with("mapper/")
            || (rest.split('/').count() == 2
                && !["disk", "md", "cciss", "block", "char"]
                    .contains(&rest.split('/').next().unwrap_or("")));
        if looks_lv {
            return match self.lv_identity(path, &mut warnings) {
                Ok(Some(id)) => (id, warnings),
                Ok(None) => (
                    Identity::Unknown {
                        reason: match dm {
                            Some(d) => format!(
                                "{path} is device-mapper device {} (uuid {}), neither a multipath map nor an LV LVM reports",
                                d.kernel, d.uuid
                            ),
                            None => {
                                format!("no multipath map and no LV is called {path} on this host")
                            }
                        },
                    },
                    warnings,
                ),
                Err(reason) => (Identity::Unknown { reason }, warnings),
            };
        }
        (
            Identity::Unknown {
                reason: format!(
                    "{path} is neither a multipath map, an LV nor a SCSI disk hostsync knows how to identify"
                ),
            },
            warnings,
        )
    }

    fn lv_identity(
        &self,
        path: &str,
        warnings: &mut Vec<String>,
    ) -> std::result::Result<Option<Identity>, String> {
        let Some(lv) = self.lv_at(path)? else {
            return Ok(None);
        };
        let vg = self.vgs()?.iter().find(|v| v.name == lv.vg).cloned();
        let (vg_uuid, lock_type) = vg
            .map(|v| (v.uuid, v.lock_type))
            .unwrap_or_else(|| (String::new(), String::new()));
        let mut pvs = Vec::new();
        for pv in self.pvs()?.iter().filter(|p| p.vg == lv.vg) {
            pvs.push(self.pv_identity(&pv.name, warnings));
        }
        if lock_type.is_empty() {
            warnings.push(format!(
                "VG {} is not shared (no lvmlockd lock type): nothing on the SAN stops a second host from activating {}",
                lv.vg,
                lv.full_name()
            ));
        }
        Ok(Some(Identity::Lv {
            vg: lv.vg.clone(),
            lv: lv.name.clone(),
            vg_uuid,
            lv_uuid: lv.uuid.clone(),
            lock_type,
            pvs,
        }))
    }

    fn pv_identity(&self, device: &str, warnings: &mut Vec<String>) -> PvIdentity {
        let rest = device.strip_prefix("/dev/").unwrap_or(device);
        let dm = if let Some(n) = rest.strip_prefix("mapper/") {
            self.dm_named(n)
        } else {
            self.dm_devices().into_iter().find(|d| d.kernel == rest)
        };
        if let Some(d) = dm
            && let Some(w) = d.uuid.strip_prefix("mpath-")
        {
            return PvIdentity {
                device: device.to_string(),
                map: Some(d.name.clone()),
                wwid: Some(w.to_string()),
            };
        }
        if let Some(sd) = sd_name(rest) {
            warnings.push(format!(
                "PV {device} is a single SCSI path, not a multipath map: LVM should be filtered to /dev/mapper"
            ));
            return PvIdentity {
                device: device.to_string(),
                map: None,
                wwid: self.scsi_wwid(sd).ok(),
            };
        }
        warnings.push(format!("the LUN of PV {device} is not known"));
        PvIdentity {
            device: device.to_string(),
            map: None,
            wwid: None,
        }
    }

    /// Every disk of `cfg` with its identity.
    pub fn resolve(&self, cfg: &DomuConfig) -> Vec<DiskReport> {
        cfg.disks
            .iter()
            .map(|d| {
                let path = d.path();
                let (identity, mut warnings) = match &path {
                    Some(p) if d.backendtype.as_deref() != Some("file") => self.identify(p),
                    Some(_) => (
                        Identity::Other {
                            what: "a file, not a SAN block device".into(),
                        },
                        Vec::new(),
                    ),
                    None => (
                        Identity::Other {
                            what: match &d.script {
                                Some(s) => format!("interpreted by script {s}"),
                                None => "no target (an empty drive)".into(),
                            },
                        },
                        Vec::new(),
                    ),
                };
                warnings.extend(d.notes.iter().cloned());
                DiskReport {
                    disk: d.clone(),
                    path,
                    identity,
                    warnings,
                }
            })
            .collect()
    }
}

/// `sdX` of `sdX` or `sdXN` (a partition), else None.
fn sd_name(rest: &str) -> Option<&str> {
    let letters = rest.strip_prefix("sd")?;
    let n = letters.chars().take_while(char::is_ascii_lowercase).count();
    if n == 0 || !letters[n..].chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(&rest[..2 + n])
}

/// The `domu disks` table.
pub fn render_table(cfg: &DomuConfig, reports: &[DiskReport]) -> String {
    let mut rows = Vec::new();
    for r in reports {
        rows.push(vec![
            r.disk.vdev.clone().unwrap_or_default(),
            r.path
                .clone()
                .or(r.disk.target.clone())
                .unwrap_or_else(|| "-".into()),
            r.disk.access.to_string(),
            r.disk.script.clone().unwrap_or_else(|| "-".into()),
            r.identity.summary(),
        ]);
    }
    let mut out = format!(
        "{} ({}, {} disk(s))\n",
        cfg.name.as_deref().unwrap_or("unnamed domU"),
        cfg.file.display(),
        reports.len()
    );
    out.push_str(&lun_scan::output::table(
        &["VDEV", "PATH", "MODE", "SCRIPT", "IDENTITY"],
        &rows,
    ));
    for r in reports {
        for w in &r.warnings {
            out.push_str(&format!(
                "warning: {}: {w}\n",
                r.disk.vdev.as_deref().unwrap_or("?")
            ));
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests;
