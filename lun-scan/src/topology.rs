//! Topology generator: renders a TOML description of a SAN (hosts x targets x LUNs) as a sysfs
//! tree laid out the way the kernel lays it out, and [`Sim`], which changes such a tree the way
//! the kernel would (path state changes, a host going away and coming back, LUNs appearing on
//! a rescan, devices being deleted, resizes).
//!
//! Layout written (H = host number, R = index of the target among the host's targets,
//! L = LUN, S = iSCSI session number):
//! - FC: `devices/pci0000:00/0000:00:SS.0/hostH/{scsi_host/hostH, fc_host/hostH,
//!   rport-H:0-R/{fc_remote_ports/rport-H:0-R, targetH:0:R/H:0:R:L}}`
//! - iSCSI: `devices/platform/hostH/{scsi_host/hostH, iscsi_host/hostH, sessionS/{iscsi_session/sessionS,
//!   connectionS:0/iscsi_connection/connectionS:0, targetH:0:R/H:0:R:L}}`
//! - SAS: `devices/pci0000:00/0000:00:SS.0/hostH/{scsi_host/hostH, sas_host/hostH, phy-H:0/sas_phy/phy-H:0,
//!   port-H:R/end_device-H:R/{sas_device/end_device-H:R, sas_end_device/end_device-H:R, targetH:0:R/H:0:R:L}}`
//! - other: `devices/pseudo_0/adapterN/hostH/targetH:0:R/H:0:R:L` (like scsi_debug)
//! - per SCSI device: attributes, binary `vpd_pg80`/`vpd_pg83`, `scsi_device/`, `scsi_disk/`,
//!   `scsi_generic/sgN`, `block/sdX` (with `device` link, `holders/`, `slaves/`, `queue/`)
//! - class links (`class/{scsi_host,fc_host,fc_remote_ports,iscsi_host,iscsi_session,
//!   iscsi_connection,sas_host,sas_phy,sas_device,sas_end_device,scsi_device,scsi_disk,block,
//!   scsi_generic}`), `block/`, `bus/scsi/devices/`, `dev/block/M:m`, `dev/char/21:N`.
//! - sd numbering like the sd driver: sda..sdz, sdaa..; 8:0, 8:16, ... 8:240, 65:0, ...

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::Error;
use crate::model::{Hctl, Transport};
use crate::vpd::{self, Designator};

/// A SAN topology.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    #[serde(default)]
    pub name: String,
    /// Number of the first SCSI host (`host<first_host>`).
    #[serde(default)]
    pub first_host: u32,
    pub hosts: Vec<HostSpec>,
    pub targets: Vec<TargetSpec>,
    pub luns: Vec<LunGroup>,
    /// Per-path changes applied after everything else.
    #[serde(default)]
    pub path_overrides: Vec<PathOverride>,
}

/// One SCSI host (HBA, iSCSI host, SAS controller).
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    pub transport: Transport,
    pub proc_name: Option<String>,
    /// FC: initiator WWPN ("0x2100..."); SAS: the phy's SAS address.
    pub wwpn: Option<String>,
    pub node_name: Option<String>,
    pub speed: Option<String>,
    /// iSCSI initiator name.
    pub initiatorname: Option<String>,
    pub ipaddress: Option<String>,
}

/// One target port of the storage array.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// Transport of the hosts that see this target (default: every host, or the hosts of this
    /// transport when given).
    pub transport: Option<Transport>,
    /// Indexes into `hosts` of the hosts that see this target.
    pub hosts: Option<Vec<usize>>,
    /// FC target port WWPN / node name / port id.
    pub wwpn: Option<String>,
    pub node_name: Option<String>,
    pub port_id: Option<String>,
    /// iSCSI target name and portal.
    pub iqn: Option<String>,
    pub address: Option<String>,
    pub port: Option<u16>,
    pub tpgt: Option<u16>,
    /// SAS address of the end device.
    pub sas_address: Option<String>,
    /// ALUA target port group (VPD 0x83 designator type 5).
    pub port_group: Option<u16>,
    /// Relative target port (VPD 0x83 designator type 4); default: index + 1.
    pub relative_port: Option<u16>,
}

/// How a LUN identifies itself in VPD 0x83.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum IdKind {
    /// NAA IEEE registered extended (16 bytes) -> `3` + hex.
    #[default]
    Naa6,
    /// NAA IEEE registered (8 bytes) -> `3` + hex.
    Naa5,
    /// EUI-64 -> `2` + hex.
    Eui64,
    /// SCSI name string -> `8` + name.
    Name,
    /// T10 vendor id only -> `1` + vendor_model_serial.
    T10,
    /// Only a locally assigned NAA (skipped by udev) -> the VPD 0x80 fallback.
    NaaLocal,
    /// No VPD 0x83 page at all.
    None,
}

/// A group of LUNs with the same properties.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LunGroup {
    #[serde(default = "one")]
    pub count: u32,
    #[serde(default)]
    pub first_lun: u64,
    /// Indexes into `targets` that export these LUNs (default: all).
    pub targets: Option<Vec<usize>>,
    #[serde(default = "default_vendor")]
    pub vendor: String,
    #[serde(default = "default_model")]
    pub model: String,
    #[serde(default = "default_rev")]
    pub rev: String,
    /// Size: bytes as an integer, or a string with a K/M/G/T suffix (binary units).
    #[serde(default = "default_size")]
    pub size: Size,
    #[serde(default)]
    pub id: IdKind,
    /// Hex (NAA, EUI-64) or text (name) the identifiers are derived from; the LUN's ordinal in
    /// the group is added to the low bytes (or appended to names).
    pub id_base: Option<String>,
    /// Unit serial numbers are `<serial_prefix><ordinal as 8 hex digits>`; empty for none.
    pub serial_prefix: Option<String>,
    #[serde(default = "default_state")]
    pub state: String,
    /// ALUA access state per target port group ("1" = "active/optimized").
    #[serde(default)]
    pub alua: BTreeMap<String, String>,
    #[serde(default = "default_qd")]
    pub queue_depth: u32,
}

/// Changes to some paths (matched by host index, and optionally target index and LUN).
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct PathOverride {
    pub host: usize,
    pub target: Option<usize>,
    pub lun: Option<u64>,
    pub state: Option<String>,
    pub access_state: Option<String>,
}

/// A size in bytes, written as an integer or "10G".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Size(n)),
            Raw::S(s) => parse_size(&s).map(Size).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "{s:?} is not a size like 512, \"64M\" or \"10G\""
                ))
            }),
        }
    }
}

/// Parses "512", "64K", "10M", "2G", "1T" (binary units).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last()? {
        (i, 'K' | 'k') => (&s[..i], 1u64 << 10),
        (i, 'M' | 'm') => (&s[..i], 1 << 20),
        (i, 'G' | 'g') => (&s[..i], 1 << 30),
        (i, 'T' | 't') => (&s[..i], 1 << 40),
        _ => (s, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

fn one() -> u32 {
    1
}
fn default_vendor() -> String {
    "LUNSCAN".into()
}
fn default_model() -> String {
    "SIMDISK".into()
}
fn default_rev() -> String {
    "0001".into()
}
fn default_size() -> Size {
    Size(1 << 30)
}
fn default_state() -> String {
    "running".into()
}
fn default_qd() -> u32 {
    64
}

impl Topology {
    /// Parses a topology from TOML text; `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self, Error> {
        let t: Topology = toml::from_str(text).map_err(|e| Error::Topology {
            path: origin.to_path_buf(),
            reason: e.to_string(),
        })?;
        t.validate(origin)?;
        Ok(t)
    }

    /// Reads and parses a topology file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = fs::read_to_string(path).map_err(|e| Error::read(path, &e))?;
        Self::from_toml(&text, path)
    }

    fn validate(&self, origin: &Path) -> Result<(), Error> {
        let bad = |reason: String| Error::Topology {
            path: origin.to_path_buf(),
            reason,
        };
        for (ti, t) in self.targets.iter().enumerate() {
            for &h in t.hosts.as_deref().unwrap_or(&[]) {
                if h >= self.hosts.len() {
                    return Err(bad(format!(
                        "target {ti} lists host {h}, but there are only {} hosts",
                        self.hosts.len()
                    )));
                }
            }
            let hs = self.target_hosts(ti);
            if let Some(first) = hs.first() {
                let tr = self.hosts[*first].transport;
                if hs.iter().any(|&h| self.hosts[h].transport != tr) {
                    return Err(bad(format!(
                        "target {ti} is seen by hosts of different transports"
                    )));
                }
            }
        }
        for (gi, g) in self.luns.iter().enumerate() {
            for &t in g.targets.as_deref().unwrap_or(&[]) {
                if t >= self.targets.len() {
                    return Err(bad(format!(
                        "LUN group {gi} lists target {t}, but there are only {} targets",
                        self.targets.len()
                    )));
                }
            }
            if let Some(b) = &g.id_base
                && matches!(
                    g.id,
                    IdKind::Naa6 | IdKind::Naa5 | IdKind::Eui64 | IdKind::NaaLocal
                )
                && vpd::parse_hex(b).is_none()
            {
                return Err(bad(format!("LUN group {gi}: id_base {b:?} is not hex")));
            }
        }
        for o in &self.path_overrides {
            if o.host >= self.hosts.len() {
                return Err(bad(format!("path override names host {}", o.host)));
            }
        }
        Ok(())
    }

    /// Host indexes that see target `ti`.
    pub fn target_hosts(&self, ti: usize) -> Vec<usize> {
        let t = &self.targets[ti];
        match &t.hosts {
            Some(h) => h.clone(),
            None => (0..self.hosts.len())
                .filter(|&h| t.transport.is_none_or(|tr| self.hosts[h].transport == tr))
                .collect(),
        }
    }

    /// Number of SCSI paths the topology renders.
    pub fn path_count(&self) -> usize {
        self.luns
            .iter()
            .map(|g| {
                let targets: Vec<usize> = g
                    .targets
                    .clone()
                    .unwrap_or_else(|| (0..self.targets.len()).collect());
                g.count as usize
                    * targets
                        .iter()
                        .map(|&t| self.target_hosts(t).len())
                        .sum::<usize>()
            })
            .sum()
    }

    /// A large FC topology for benchmarks: `hosts` HBAs x `targets_per_host` target ports
    /// each seeing `luns` LUNs (paths = luns x hosts x targets_per_host).
    pub fn big_fc(hosts: usize, targets_per_host: usize, luns: u32) -> Self {
        let hosts_v: Vec<HostSpec> = (0..hosts)
            .map(|i| HostSpec {
                transport: Transport::Fc,
                proc_name: Some("qla2xxx".into()),
                wwpn: Some(format!("0x21000024ff{:06x}", i)),
                ..HostSpec::default()
            })
            .collect();
        let targets = (0..hosts * targets_per_host)
            .map(|i| TargetSpec {
                hosts: Some(vec![i / targets_per_host]),
                wwpn: Some(format!("0x500a0981{:08x}", i)),
                port_group: Some(if i % 2 == 0 { 1 } else { 2 }),
                ..TargetSpec::default()
            })
            .collect();
        let mut alua = BTreeMap::new();
        alua.insert("1".into(), "active/optimized".into());
        alua.insert("2".into(), "active/non-optimized".into());
        Topology {
            name: "big-fc".into(),
            first_host: 0,
            hosts: hosts_v,
            targets,
            luns: vec![LunGroup {
                count: luns,
                first_lun: 0,
                targets: None,
                vendor: "NETAPP".into(),
                model: "LUN C-Mode".into(),
                rev: "9800".into(),
                size: Size(10 << 30),
                id: IdKind::Naa6,
                id_base: None,
                serial_prefix: None,
                state: "running".into(),
                alua,
                queue_depth: 64,
            }],
            path_overrides: Vec::new(),
        }
    }
}

/// sd's disk name for index `i`: sda..sdz, sdaa..sdzz, sdaaa...
pub fn sd_name(mut i: u32) -> String {
    let mut s = Vec::new();
    loop {
        s.push(b'a' + (i % 26) as u8);
        if i < 26 {
            break;
        }
        i = i / 26 - 1;
    }
    s.reverse();
    format!("sd{}", String::from_utf8_lossy(&s))
}

/// sd's device number for index `i` (8:0, 8:16, ... 8:240, 65:0, ... 71:240, 128:0, ...).
pub fn sd_devno(i: u32) -> (u32, u32) {
    let major_idx = (i & 0xf0) >> 4;
    let major = match major_idx {
        0 => 8,
        1..=7 => 64 + major_idx,
        _ => 128 + major_idx - 8,
    };
    (major, ((i & 0xf) << 4) | (i & 0xfff00))
}

fn add_ordinal(base: &[u8], ordinal: u64) -> Vec<u8> {
    let mut b = base.to_vec();
    let mut carry = ordinal;
    for x in b.iter_mut().rev() {
        if carry == 0 {
            break;
        }
        let v = u64::from(*x) + (carry & 0xff);
        *x = (v & 0xff) as u8;
        carry = (carry >> 8) + (v >> 8);
    }
    b
}

/// The identity of one LUN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LunIdentity {
    /// LUN designators (association 0) for VPD 0x83; empty with [`IdKind::None`].
    pub designators: Vec<Designator>,
    /// Whether a vpd_pg83 page exists at all.
    pub has_pg83: bool,
    pub serial: Option<String>,
    /// The kernel's `wwid` attribute.
    pub kernel_wwid: String,
    /// The WWID lun-scan (and udev) should derive.
    pub expected_wwid: String,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Computes the identity of the `ordinal`-th LUN of group `gi`.
pub fn lun_identity(g: &LunGroup, gi: usize, ordinal: u64) -> LunIdentity {
    let serial = match &g.serial_prefix {
        Some(p) if p.is_empty() => None,
        Some(p) => Some(format!("{p}{ordinal:08X}")),
        None => Some(format!("SN{gi:02}{ordinal:08X}")),
    };
    let base = |default: String| {
        g.id_base
            .as_deref()
            .and_then(vpd::parse_hex)
            .unwrap_or_else(|| vpd::parse_hex(&default).unwrap_or_default())
    };
    let vendor8 = vpd::encode_whitespaces(g.vendor.as_bytes());
    let model16 = vpd::encode_whitespaces(g.model.as_bytes());
    let pg80_wwid = serial.as_ref().map(|s| {
        format!(
            "S{}_{}_{}",
            String::from_utf8_lossy(&vendor8),
            String::from_utf8_lossy(&model16),
            String::from_utf8_lossy(&vpd::encode_whitespaces(s.as_bytes()))
        )
    });
    let (designators, kernel_wwid, expected) = match g.id {
        IdKind::Naa6 => {
            let b = add_ordinal(&base(format!("60014050{gi:08x}0000000000000000")), ordinal);
            (
                vec![Designator::naa(&b)],
                format!("naa.{}", hex(&b)),
                format!("3{}", hex(&b)),
            )
        }
        IdKind::Naa5 => {
            let b = add_ordinal(&base(format!("5000c5{gi:02x}00000000")), ordinal);
            (
                vec![Designator::naa(&b)],
                format!("naa.{}", hex(&b)),
                format!("3{}", hex(&b)),
            )
        }
        IdKind::Eui64 => {
            let b = add_ordinal(&base(format!("002538{gi:02x}00000000")), ordinal);
            (
                vec![Designator::eui64(&b)],
                format!("eui.{}", hex(&b)),
                format!("2{}", hex(&b)),
            )
        }
        IdKind::Name => {
            let n = format!(
                "{}:lun{ordinal}",
                g.id_base
                    .as_deref()
                    .unwrap_or("iqn.2026-01.test.lunscan:array")
            );
            (vec![Designator::name(&n, 0)], n.clone(), format!("8{n}"))
        }
        IdKind::T10 => {
            let rest = format!(
                "{:<16}{}",
                g.model,
                serial.clone().unwrap_or_else(|| format!("{ordinal}"))
            );
            let d = Designator::t10(&g.vendor, &rest);
            let enc = vpd::udev_encode(&vpd::encode_whitespaces(&d.value));
            (
                vec![d.clone()],
                format!("t10.{}", String::from_utf8_lossy(&d.value)),
                format!("1{enc}"),
            )
        }
        IdKind::NaaLocal => {
            let b = add_ordinal(&base(format!("3{gi:03x}000000000000")), ordinal);
            let exp = pg80_wwid
                .clone()
                .unwrap_or_else(|| format!("naa.{}", hex(&b)));
            (vec![Designator::naa(&b)], format!("naa.{}", hex(&b)), exp)
        }
        IdKind::None => {
            let kw = serial
                .clone()
                .unwrap_or_else(|| format!("lun{gi}-{ordinal}"));
            let exp = pg80_wwid.clone().unwrap_or_else(|| kw.clone());
            (Vec::new(), kw, exp)
        }
    };
    LunIdentity {
        has_pg83: g.id != IdKind::None,
        designators,
        serial,
        kernel_wwid,
        expected_wwid: expected,
    }
}

/// One rendered (or pending) SCSI path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimPath {
    pub hctl: Hctl,
    /// Block device name; empty while the path is not present.
    pub dev: String,
    pub sg: String,
    pub host_index: usize,
    pub target_index: usize,
    pub group: usize,
    pub ordinal: u64,
    pub size_bytes: u64,
    pub state: String,
    pub access_state: Option<String>,
    /// Target directory, relative to the root (`devices/.../targetH:0:R`).
    pub target_dir: PathBuf,
    /// Whether the path exists in the tree (false: the array exports it but the host has not
    /// scanned it yet, or it was deleted).
    pub present: bool,
    pub expected_wwid: String,
}

impl SimPath {
    /// The SCSI device directory, relative to the root.
    pub fn dev_dir(&self) -> PathBuf {
        self.target_dir.join(self.hctl.to_string())
    }
}

/// Per-host rendering facts.
#[derive(Debug, Clone)]
struct SimHost {
    number: u32,
    dir: PathBuf,
    transport: Transport,
    /// target index -> (R, nexus dir relative to root, e.g. the rport dir)
    nexus: BTreeMap<usize, (u32, PathBuf)>,
}

/// A rendered topology that can be changed like a kernel would change it.
#[derive(Debug)]
pub struct Sim {
    pub root: PathBuf,
    pub topology: Topology,
    pub paths: Vec<SimPath>,
    hosts: Vec<SimHost>,
    next_sd: u32,
    next_sg: u32,
    /// LUN size overrides (group, ordinal) -> bytes not yet seen by the host (until `rescan`).
    pending_size: BTreeMap<(usize, u64), u64>,
}

fn io_err(path: &Path, e: &io::Error) -> Error {
    Error::Create {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn mkdir(p: &Path) -> Result<(), Error> {
    fs::create_dir_all(p).map_err(|e| io_err(p, &e))
}

fn put(p: impl AsRef<Path>, content: impl AsRef<[u8]>) -> Result<(), Error> {
    let p = p.as_ref();
    fs::write(p, content).map_err(|e| io_err(p, &e))
}

fn put_line(p: &Path, content: &str) -> Result<(), Error> {
    put(p, format!("{content}\n"))
}

/// Writes `lines[i]` into `files[i]`, spread over the machine's cores (a host's devices change
/// state at once in the kernel; thousands of files written one after the other took the
/// failover benchmark 0.4-0.7 s). The first error, naming its file.
fn put_lines_at_once(files: &[PathBuf], lines: &[String]) -> Result<(), Error> {
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .clamp(1, 8);
    if files.len() < 256 || threads == 1 {
        return files
            .iter()
            .zip(lines)
            .try_for_each(|(f, l)| put_line(f, l));
    }
    let chunk = files.len().div_ceil(threads);
    std::thread::scope(|s| {
        let workers: Vec<_> = files
            .chunks(chunk)
            .zip(lines.chunks(chunk))
            .map(|(fs, ls)| {
                s.spawn(move || fs.iter().zip(ls).try_for_each(|(f, l)| put_line(f, l)))
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join().unwrap_or_else(|_| {
                Err(Error::Create {
                    path: files[0].clone(),
                    reason: "a state writer thread panicked".into(),
                })
            })
        })
    })
}

/// Creates `root/link` as a relative symlink to `root/target`.
fn link(root: &Path, link_rel: &Path, target_rel: &Path) -> Result<(), Error> {
    let depth = link_rel.parent().map_or(0, |p| p.components().count());
    let mut rel = PathBuf::new();
    for _ in 0..depth {
        rel.push("..");
    }
    rel.push(target_rel);
    let l = root.join(link_rel);
    if let Some(parent) = l.parent() {
        mkdir(parent)?;
    }
    let _ = fs::remove_file(&l);
    symlink(&rel, &l).map_err(|e| io_err(&l, &e))
}

fn unlink(root: &Path, rel: &Path) {
    let _ = fs::remove_file(root.join(rel));
}

impl Sim {
    /// Renders `topology` into `root` (created if needed; should be empty).
    pub fn render(topology: &Topology, root: &Path) -> Result<Sim, Error> {
        mkdir(root)?;
        let mut sim = Sim {
            root: root.to_path_buf(),
            topology: topology.clone(),
            paths: Vec::new(),
            hosts: Vec::new(),
            next_sd: 0,
            next_sg: 0,
            pending_size: BTreeMap::new(),
        };
        for d in [
            "class/scsi_host",
            "class/scsi_device",
            "class/scsi_disk",
            "class/block",
            "class/scsi_generic",
            "block",
            "bus/scsi/devices",
            "dev/block",
            "dev/char",
        ] {
            mkdir(&root.join(d))?;
        }
        sim.render_hosts()?;
        // Paths: host by host, target by target, LUN by LUN, like a sequential scan.
        let mut all = Vec::new();
        for (hi, h) in sim.hosts.iter().enumerate() {
            for (&ti, (r, nexus)) in &h.nexus {
                for (gi, g) in topology.luns.iter().enumerate() {
                    let exported = g.targets.as_ref().is_none_or(|t| t.contains(&ti));
                    if !exported {
                        continue;
                    }
                    for k in 0..u64::from(g.count) {
                        all.push(sim.new_path(hi, ti, *r, nexus, gi, k, h.number));
                    }
                }
            }
        }
        for mut p in all {
            sim.materialize(&mut p)?;
            sim.paths.push(p);
        }
        Ok(sim)
    }

    /// Renders a topology file into `root`.
    pub fn render_file(topology: &Path, root: &Path) -> Result<Sim, Error> {
        Sim::render(&Topology::load(topology)?, root)
    }

    #[allow(clippy::too_many_arguments)]
    fn new_path(
        &self,
        hi: usize,
        ti: usize,
        r: u32,
        nexus: &Path,
        gi: usize,
        ordinal: u64,
        host_number: u32,
    ) -> SimPath {
        let g = &self.topology.luns[gi];
        let t = &self.topology.targets[ti];
        let lun = g.first_lun + ordinal;
        let hctl = Hctl::new(host_number, 0, r, lun);
        let mut state = g.state.clone();
        let mut access_state = t.port_group.map(|pg| {
            g.alua
                .get(&pg.to_string())
                .cloned()
                .unwrap_or_else(|| "active/optimized".to_string())
        });
        for o in &self.topology.path_overrides {
            if o.host == hi && o.target.is_none_or(|x| x == ti) && o.lun.is_none_or(|x| x == lun) {
                if let Some(s) = &o.state {
                    state = s.clone();
                }
                if let Some(a) = &o.access_state {
                    access_state = Some(a.clone());
                }
            }
        }
        SimPath {
            hctl,
            dev: String::new(),
            sg: String::new(),
            host_index: hi,
            target_index: ti,
            group: gi,
            ordinal,
            size_bytes: g.size.0,
            state,
            access_state,
            target_dir: nexus.join(format!("target{host_number}:0:{r}")),
            present: false,
            expected_wwid: lun_identity(g, gi, ordinal).expected_wwid,
        }
    }

    fn render_hosts(&mut self) -> Result<(), Error> {
        let root = self.root.clone();
        let t = self.topology.clone();
        let mut session = 1u32;
        for (hi, hs) in t.hosts.iter().enumerate() {
            let number = t.first_host + hi as u32;
            let hname = format!("host{number}");
            let dir = match hs.transport {
                Transport::Fc | Transport::Sas => {
                    PathBuf::from(format!("devices/pci0000:00/0000:00:{:02x}.0", 2 + hi))
                        .join(&hname)
                }
                Transport::Iscsi => PathBuf::from("devices/platform").join(&hname),
                Transport::Other => {
                    PathBuf::from(format!("devices/pseudo_0/adapter{hi}")).join(&hname)
                }
            };
            let sh = dir.join("scsi_host").join(&hname);
            mkdir(&root.join(&sh))?;
            put_line(&root.join(&dir).join("uevent"), "DEVTYPE=scsi_host")?;
            let proc_name = hs.proc_name.clone().unwrap_or_else(|| {
                match hs.transport {
                    Transport::Fc => "qla2xxx",
                    Transport::Iscsi => "iscsi_tcp",
                    Transport::Sas => "mpt3sas",
                    Transport::Other => "scsi_debug",
                }
                .to_string()
            });
            put_line(&root.join(&sh).join("proc_name"), &proc_name)?;
            put_line(&root.join(&sh).join("state"), "running")?;
            put_line(&root.join(&sh).join("unique_id"), &hi.to_string())?;
            put_line(&root.join(&sh).join("can_queue"), "2048")?;
            put(root.join(&sh).join("scan"), "")?;
            put(root.join(&sh).join("uevent"), "")?;
            link(&root, &Path::new("class/scsi_host").join(&hname), &sh)?;
            link(&root, &Path::new("bus/scsi/devices").join(&hname), &dir)?;
            let mut host = SimHost {
                number,
                dir: dir.clone(),
                transport: hs.transport,
                nexus: BTreeMap::new(),
            };
            match hs.transport {
                Transport::Fc => {
                    let fc = dir.join("fc_host").join(&hname);
                    let f = root.join(&fc);
                    mkdir(&f)?;
                    let wwpn = hs
                        .wwpn
                        .clone()
                        .unwrap_or_else(|| format!("0x21000024ff{:06x}", hi));
                    let node = hs.node_name.clone().unwrap_or_else(|| {
                        format!(
                            "0x20{}",
                            wwpn.trim_start_matches("0x").get(2..).unwrap_or("")
                        )
                    });
                    put_line(&f.join("port_name"), &wwpn)?;
                    put_line(&f.join("node_name"), &node)?;
                    put_line(&f.join("port_id"), &format!("0x{:02x}0{:03x}", 1 + hi, 0))?;
                    put_line(&f.join("port_state"), "Online")?;
                    put_line(&f.join("port_type"), "NPort (fabric via point-to-point)")?;
                    put_line(&f.join("speed"), hs.speed.as_deref().unwrap_or("16 Gbit"))?;
                    put_line(&f.join("supported_speeds"), "4 Gbit, 8 Gbit, 16 Gbit")?;
                    put_line(&f.join("fabric_name"), "0x100000051e000001")?;
                    put_line(
                        &f.join("symbolic_name"),
                        &format!("{proc_name} FW:v8.08 DVR:v10.02"),
                    )?;
                    put_line(&f.join("tgtid_bind_type"), "wwpn (World Wide Port Name)")?;
                    put_line(&f.join("dev_loss_tmo"), "30")?;
                    put(f.join("issue_lip"), "")?;
                    link(&root, &Path::new("class/fc_host").join(&hname), &fc)?;
                }
                Transport::Iscsi => {
                    let ih = dir.join("iscsi_host").join(&hname);
                    let f = root.join(&ih);
                    mkdir(&f)?;
                    let iname = hs
                        .initiatorname
                        .clone()
                        .unwrap_or_else(|| format!("iqn.2026-01.test.lunscan:initiator{hi}"));
                    put_line(&f.join("initiatorname"), &iname)?;
                    put_line(
                        &f.join("ipaddress"),
                        hs.ipaddress
                            .as_deref()
                            .unwrap_or(&format!("192.0.2.{}", 10 + hi)),
                    )?;
                    put_line(&f.join("netdev"), &format!("eth{hi}"))?;
                    put_line(&f.join("hwaddress"), &format!("52:54:00:00:00:{:02x}", hi))?;
                    link(&root, &Path::new("class/iscsi_host").join(&hname), &ih)?;
                }
                Transport::Sas => {
                    let shd = dir.join("sas_host").join(&hname);
                    mkdir(&root.join(&shd))?;
                    put(root.join(&shd).join("uevent"), "")?;
                    link(&root, &Path::new("class/sas_host").join(&hname), &shd)?;
                    let phy = format!("phy-{number}:0");
                    let pd = dir.join(&phy).join("sas_phy").join(&phy);
                    mkdir(&root.join(&pd))?;
                    let addr = hs
                        .wwpn
                        .clone()
                        .unwrap_or_else(|| format!("0x500605b0{:08x}", hi));
                    put_line(&root.join(&pd).join("sas_address"), &addr)?;
                    put_line(&root.join(&pd).join("phy_identifier"), "0")?;
                    put_line(&root.join(&pd).join("negotiated_linkrate"), "12.0 Gbit")?;
                    link(&root, &Path::new("class/sas_phy").join(&phy), &pd)?;
                }
                Transport::Other => {}
            }
            // Target nexus per target seen by this host.
            let mut r = 0u32;
            for ti in 0..t.targets.len() {
                if !t.target_hosts(ti).contains(&hi) {
                    continue;
                }
                let ts = &t.targets[ti];
                let nexus = match hs.transport {
                    Transport::Fc => {
                        let rname = format!("rport-{number}:0-{r}");
                        let nd = dir.join(&rname);
                        let fr = nd.join("fc_remote_ports").join(&rname);
                        let f = root.join(&fr);
                        mkdir(&f)?;
                        put_line(&root.join(&nd).join("uevent"), "")?;
                        let wwpn = ts
                            .wwpn
                            .clone()
                            .unwrap_or_else(|| format!("0x500a0981{:08x}", ti));
                        let node = ts
                            .node_name
                            .clone()
                            .unwrap_or_else(|| format!("0x500a0980{:08x}", ti / 2));
                        put_line(&f.join("port_name"), &wwpn)?;
                        put_line(&f.join("node_name"), &node)?;
                        put_line(
                            &f.join("port_id"),
                            ts.port_id.as_deref().unwrap_or(&format!(
                                "0x{:02x}{:04x}",
                                1 + hi,
                                0x100 + ti
                            )),
                        )?;
                        put_line(&f.join("port_state"), "Online")?;
                        put_line(&f.join("roles"), "FCP Target")?;
                        put_line(&f.join("scsi_target_id"), &r.to_string())?;
                        put_line(&f.join("dev_loss_tmo"), "30")?;
                        put_line(&f.join("fast_io_fail_tmo"), "5")?;
                        put_line(&f.join("supported_classes"), "Class 3")?;
                        put_line(&f.join("maxframe_size"), "2048 bytes")?;
                        link(&root, &Path::new("class/fc_remote_ports").join(&rname), &fr)?;
                        nd
                    }
                    Transport::Iscsi => {
                        let sname = format!("session{session}");
                        let nd = dir.join(&sname);
                        let sd = nd.join("iscsi_session").join(&sname);
                        let f = root.join(&sd);
                        mkdir(&f)?;
                        let iqn = ts
                            .iqn
                            .clone()
                            .unwrap_or_else(|| format!("iqn.2026-01.test.lunscan:target{ti}"));
                        put_line(&f.join("targetname"), &iqn)?;
                        put_line(&f.join("state"), "LOGGED_IN")?;
                        put_line(&f.join("tpgt"), &ts.tpgt.unwrap_or(1).to_string())?;
                        put_line(&f.join("recovery_tmo"), "120")?;
                        link(&root, &Path::new("class/iscsi_session").join(&sname), &sd)?;
                        let cname = format!("connection{session}:0");
                        let cd = nd.join(&cname).join("iscsi_connection").join(&cname);
                        let c = root.join(&cd);
                        mkdir(&c)?;
                        let addr = ts
                            .address
                            .clone()
                            .unwrap_or_else(|| format!("192.0.2.{}", 100 + ti));
                        let port = ts.port.unwrap_or(3260).to_string();
                        put_line(&c.join("persistent_address"), &addr)?;
                        put_line(&c.join("persistent_port"), &port)?;
                        put_line(&c.join("address"), &addr)?;
                        put_line(&c.join("port"), &port)?;
                        link(
                            &root,
                            &Path::new("class/iscsi_connection").join(&cname),
                            &cd,
                        )?;
                        session += 1;
                        nd
                    }
                    Transport::Sas => {
                        let port = dir.join(format!("port-{number}:{r}"));
                        let ename = format!("end_device-{number}:{r}");
                        let nd = port.join(&ename);
                        let sd = nd.join("sas_device").join(&ename);
                        let ed = nd.join("sas_end_device").join(&ename);
                        mkdir(&root.join(&sd))?;
                        mkdir(&root.join(&ed))?;
                        let addr = ts
                            .sas_address
                            .clone()
                            .unwrap_or_else(|| format!("0x5000c500{:08x}", ti));
                        put_line(&root.join(&sd).join("sas_address"), &addr)?;
                        put_line(&root.join(&sd).join("target_port_protocols"), "ssp")?;
                        put_line(&root.join(&sd).join("initiator_port_protocols"), "none")?;
                        put_line(&root.join(&sd).join("device_type"), "end device")?;
                        put_line(&root.join(&ed).join("I_T_nexus_loss_timeout"), "2000")?;
                        put_line(&root.join(&ed).join("tlr_enabled"), "0")?;
                        link(&root, &Path::new("class/sas_device").join(&ename), &sd)?;
                        link(&root, &Path::new("class/sas_end_device").join(&ename), &ed)?;
                        nd
                    }
                    Transport::Other => dir.clone(),
                };
                let td = nexus.join(format!("target{number}:0:{r}"));
                mkdir(&root.join(&td))?;
                put_line(&root.join(&td).join("uevent"), "DEVTYPE=scsi_target")?;
                link(
                    &root,
                    &Path::new("bus/scsi/devices").join(format!("target{number}:0:{r}")),
                    &td,
                )?;
                host.nexus.insert(ti, (r, nexus));
                r += 1;
            }
            self.hosts.push(host);
        }
        Ok(())
    }

    /// Writes a path's device directory and links, allocating sd/sg names.
    fn materialize(&mut self, p: &mut SimPath) -> Result<(), Error> {
        let root = self.root.clone();
        let g = self.topology.luns[p.group].clone();
        let t = self.topology.targets[p.target_index].clone();
        let host = &self.hosts[p.host_index];
        let id = lun_identity(&g, p.group, p.ordinal);
        let sd_index = self.next_sd;
        self.next_sd += 1;
        let sg_index = self.next_sg;
        self.next_sg += 1;
        p.dev = sd_name(sd_index);
        p.sg = format!("sg{sg_index}");
        let (major, minor) = sd_devno(sd_index);
        let hctl = p.hctl.to_string();
        let dd_rel = p.dev_dir();
        let dd = root.join(&dd_rel);
        mkdir(&dd)?;
        put(dd.join("inquiry"), inquiry(&g.vendor, &g.model, &g.rev))?;
        put_line(&dd.join("vendor"), &format!("{:<8}", g.vendor))?;
        put_line(&dd.join("model"), &format!("{:<16}", g.model))?;
        put_line(&dd.join("rev"), &format!("{:<4}", g.rev))?;
        put_line(&dd.join("type"), "0")?;
        put_line(&dd.join("scsi_level"), "7")?;
        put_line(&dd.join("state"), &p.state)?;
        put_line(&dd.join("queue_depth"), &g.queue_depth.to_string())?;
        put_line(&dd.join("timeout"), "30")?;
        put_line(&dd.join("device_blocked"), "0")?;
        put_line(&dd.join("wwid"), &id.kernel_wwid)?;
        put(
            dd.join("uevent"),
            "DEVTYPE=scsi_device\nDRIVER=sd\nMODALIAS=scsi:t-0x00\n",
        )?;
        put(dd.join("delete"), "")?;
        put(dd.join("rescan"), "")?;
        if let Some(a) = &p.access_state {
            put_line(&dd.join("access_state"), a)?;
            put_line(&dd.join("preferred_path"), "0")?;
            put_line(&dd.join("dh_state"), "alua")?;
        } else {
            put_line(&dd.join("dh_state"), "detached")?;
        }
        if id.has_pg83 {
            let mut ds = id.designators.clone();
            // Target-port designators: the port's own identifier, relative port, port group.
            match host.transport {
                Transport::Fc => {
                    if let Some(w) = t.wwpn.as_deref().and_then(vpd::parse_hex) {
                        let mut d = Designator::naa(&w).with_association(1);
                        d.piv = true;
                        ds.push(d);
                    }
                }
                Transport::Iscsi => {
                    if let Some(iqn) = &t.iqn {
                        ds.push(Designator::name(&format!("{iqn},t,0x0001"), 1));
                    }
                }
                _ => {}
            }
            ds.push(Designator::relative_port(
                t.relative_port.unwrap_or(p.target_index as u16 + 1),
            ));
            if let Some(pg) = t.port_group {
                ds.push(Designator::target_port_group(pg));
            }
            put(dd.join("vpd_pg83"), vpd::build_pg83(&ds))?;
        }
        if let Some(s) = &id.serial {
            put(dd.join("vpd_pg80"), vpd::build_pg80(s))?;
        }
        // scsi_device, scsi_disk, scsi_generic class devices
        let sdev = dd_rel.join("scsi_device").join(&hctl);
        mkdir(&root.join(&sdev))?;
        let sdisk = dd_rel.join("scsi_disk").join(&hctl);
        mkdir(&root.join(&sdisk))?;
        put_line(&root.join(&sdisk).join("cache_type"), "write through")?;
        let sg = dd_rel.join("scsi_generic").join(&p.sg);
        mkdir(&root.join(&sg))?;
        put_line(&root.join(&sg).join("dev"), &format!("21:{sg_index}"))?;
        let _ = symlink(Path::new("scsi_generic").join(&p.sg), dd.join("generic"));
        // block device
        let blk = dd_rel.join("block").join(&p.dev);
        let b = root.join(&blk);
        mkdir(&b.join("holders"))?;
        mkdir(&b.join("slaves"))?;
        mkdir(&b.join("queue"))?;
        put_line(&b.join("dev"), &format!("{major}:{minor}"))?;
        put_line(&b.join("size"), &(p.size_bytes / 512).to_string())?;
        put_line(&b.join("ro"), "0")?;
        put_line(&b.join("removable"), "0")?;
        put_line(&b.join("queue/logical_block_size"), "512")?;
        put(
            b.join("uevent"),
            format!(
                "MAJOR={major}\nMINOR={minor}\nDEVNAME={}\nDEVTYPE=disk\n",
                p.dev
            ),
        )?;
        let _ = symlink(format!("../../../{hctl}"), b.join("device"));
        link(&root, &Path::new("class/block").join(&p.dev), &blk)?;
        link(&root, &Path::new("block").join(&p.dev), &blk)?;
        link(
            &root,
            &Path::new("dev/block").join(format!("{major}:{minor}")),
            &blk,
        )?;
        link(&root, &Path::new("class/scsi_device").join(&hctl), &sdev)?;
        link(&root, &Path::new("class/scsi_disk").join(&hctl), &sdisk)?;
        link(&root, &Path::new("class/scsi_generic").join(&p.sg), &sg)?;
        link(
            &root,
            &Path::new("dev/char").join(format!("21:{sg_index}")),
            &sg,
        )?;
        link(&root, &Path::new("bus/scsi/devices").join(&hctl), &dd_rel)?;
        p.present = true;
        Ok(())
    }

    /// Removes a path's device directory and links (like the kernel on delete).
    fn dematerialize(&mut self, idx: usize) {
        let root = self.root.clone();
        let p = &mut self.paths[idx];
        if !p.present {
            return;
        }
        let hctl = p.hctl.to_string();
        if let Ok(d) = fs::read_to_string(
            root.join(p.dev_dir())
                .join("block")
                .join(&p.dev)
                .join("dev"),
        ) {
            unlink(&root, &Path::new("dev/block").join(d.trim()));
        }
        unlink(&root, &Path::new("class/block").join(&p.dev));
        unlink(&root, &Path::new("block").join(&p.dev));
        unlink(&root, &Path::new("class/scsi_device").join(&hctl));
        unlink(&root, &Path::new("class/scsi_disk").join(&hctl));
        unlink(&root, &Path::new("class/scsi_generic").join(&p.sg));
        unlink(&root, &Path::new("bus/scsi/devices").join(&hctl));
        if let Some(n) = p.sg.strip_prefix("sg") {
            unlink(&root, &Path::new("dev/char").join(format!("21:{n}")));
        }
        let _ = fs::remove_dir_all(root.join(p.dev_dir()));
        p.present = false;
        p.dev.clear();
        p.sg.clear();
    }

    fn index_of(&self, dev: &str) -> Result<usize, Error> {
        self.paths
            .iter()
            .position(|p| p.present && p.dev == dev)
            .ok_or_else(|| Error::NoSuchDevice {
                dev: dev.to_string(),
                root: self.root.clone(),
            })
    }

    fn host_index(&self, host: &str) -> Result<usize, Error> {
        self.hosts
            .iter()
            .position(|h| format!("host{}", h.number) == host)
            .ok_or_else(|| Error::NoSuchHost {
                host: host.to_string(),
                root: self.root.clone(),
            })
    }

    /// Present paths.
    pub fn present_paths(&self) -> impl Iterator<Item = &SimPath> {
        self.paths.iter().filter(|p| p.present)
    }

    /// Sets a path's SCSI device state ("running", "offline", "transport-offline", ...).
    pub fn set_state(&mut self, dev: &str, state: &str) -> Result<(), Error> {
        let i = self.index_of(dev)?;
        self.set_state_at(i, state)
    }

    /// [`Sim::set_state`] by index.
    fn set_state_at(&mut self, i: usize, state: &str) -> Result<(), Error> {
        let f = self.root.join(self.paths[i].dev_dir()).join("state");
        put_line(&f, state)?;
        self.paths[i].state = state.to_string();
        Ok(())
    }

    /// Sets a path's ALUA access state.
    pub fn set_access_state(&mut self, dev: &str, access: &str) -> Result<(), Error> {
        let i = self.index_of(dev)?;
        let f = self.root.join(self.paths[i].dev_dir()).join("access_state");
        put_line(&f, access)?;
        self.paths[i].access_state = Some(access.to_string());
        Ok(())
    }

    /// Takes a host away as a cable pull does: every device on it goes "transport-offline",
    /// FC remote ports go "Blocked" and the fc_host "Linkdown"; iSCSI sessions "FAILED".
    pub fn host_down(&mut self, host: &str) -> Result<(), Error> {
        self.host_link(host, false)
    }

    /// Brings a host back: devices "running", ports "Online"; paths removed meanwhile (see
    /// [`Sim::host_remove_devices`]) are re-created with new sd names, as the kernel does.
    pub fn host_up(&mut self, host: &str) -> Result<Vec<String>, Error> {
        let hi = self.host_index(host)?;
        self.host_link(host, true)?;
        let mut added = Vec::new();
        for i in 0..self.paths.len() {
            if self.paths[i].host_index == hi && !self.paths[i].present {
                let mut p = self.paths[i].clone();
                p.state = self.topology.luns[p.group].state.clone();
                self.materialize(&mut p)?;
                added.push(p.dev.clone());
                self.paths[i] = p;
            }
        }
        Ok(added)
    }

    fn host_link(&mut self, host: &str, up: bool) -> Result<(), Error> {
        let hi = self.host_index(host)?;
        let h = self.hosts[hi].clone();
        let root = self.root.clone();
        let hname = format!("host{}", h.number);
        // The devices' state files and new states, made before the first write: the kernel
        // flips a host's devices at once, so the flip should take no longer than the writes.
        let (idx, files): (Vec<usize>, Vec<PathBuf>) = (0..self.paths.len())
            .filter(|&i| self.paths[i].host_index == hi && self.paths[i].present)
            .map(|i| (i, root.join(self.paths[i].dev_dir()).join("state")))
            .unzip();
        let states: Vec<String> = idx
            .iter()
            .map(|&i| {
                if up {
                    self.topology.luns[self.paths[i].group].state.clone()
                } else {
                    "transport-offline".to_string()
                }
            })
            .collect();
        match h.transport {
            Transport::Fc => {
                put_line(
                    &root
                        .join(&h.dir)
                        .join("fc_host")
                        .join(&hname)
                        .join("port_state"),
                    if up { "Online" } else { "Linkdown" },
                )?;
                for nexus in h.nexus.values().map(|(_, n)| n) {
                    if let Some(rname) = nexus.file_name() {
                        let f = root.join(nexus).join("fc_remote_ports").join(rname);
                        if f.exists() {
                            put_line(&f.join("port_state"), if up { "Online" } else { "Blocked" })?;
                        }
                    }
                }
            }
            Transport::Iscsi => {
                for nexus in h.nexus.values().map(|(_, n)| n) {
                    if let Some(sname) = nexus.file_name() {
                        let f = root.join(nexus).join("iscsi_session").join(sname);
                        put_line(&f.join("state"), if up { "LOGGED_IN" } else { "FAILED" })?;
                    }
                }
            }
            _ => {}
        }
        put_lines_at_once(&files, &states)?;
        for (i, state) in idx.into_iter().zip(states) {
            self.paths[i].state = state;
        }
        Ok(())
    }

    /// What the FC transport does when dev_loss_tmo expires on a down host: the devices are
    /// deleted (and the rports stay, "Blocked"/"NotPresent"). Returns the removed devices.
    pub fn host_remove_devices(&mut self, host: &str) -> Result<Vec<String>, Error> {
        let hi = self.host_index(host)?;
        let mut removed = Vec::new();
        for i in 0..self.paths.len() {
            if self.paths[i].host_index == hi && self.paths[i].present {
                removed.push(self.paths[i].dev.clone());
                self.dematerialize(i);
            }
        }
        let h = self.hosts[hi].clone();
        if h.transport == Transport::Fc {
            for nexus in h.nexus.values().map(|(_, n)| n) {
                if let Some(rname) = nexus.file_name() {
                    let f = self.root.join(nexus).join("fc_remote_ports").join(rname);
                    put_line(&f.join("port_state"), "NotPresent")?;
                    put_line(&f.join("scsi_target_id"), "-1")?;
                }
            }
        }
        Ok(removed)
    }

    /// Removes one device (as `echo 1 > device/delete` does).
    pub fn remove_device(&mut self, dev: &str) -> Result<(), Error> {
        let i = self.index_of(dev)?;
        self.dematerialize(i);
        Ok(())
    }

    /// The array exports `count` more LUNs in group `group` (on all its targets). They are not
    /// visible until a scan (see [`Sim::kernel_write`]) or [`Sim::scan_all`].
    pub fn add_luns(&mut self, group: usize, count: u32) -> Result<(), Error> {
        let g = self
            .topology
            .luns
            .get(group)
            .cloned()
            .ok_or_else(|| Error::InvalidArgument {
                what: "LUN group",
                value: group.to_string(),
                reason: "the topology has no such group".into(),
            })?;
        let start = u64::from(g.count);
        self.topology.luns[group].count += count;
        let mut new = Vec::new();
        for (hi, h) in self.hosts.iter().enumerate() {
            for (&ti, (r, nexus)) in &h.nexus {
                if g.targets.as_ref().is_none_or(|t| t.contains(&ti)) {
                    for k in start..start + u64::from(count) {
                        new.push(self.new_path(hi, ti, *r, nexus, group, k, h.number));
                    }
                }
            }
        }
        self.paths.extend(new);
        Ok(())
    }

    /// Makes every exported but unscanned path appear (a full `- - -` scan everywhere).
    pub fn scan_all(&mut self) -> Result<Vec<String>, Error> {
        let mut added = Vec::new();
        for i in 0..self.paths.len() {
            if !self.paths[i].present {
                added.extend(self.scan_one(i)?);
            }
        }
        Ok(added)
    }

    fn scan_one(&mut self, i: usize) -> Result<Option<String>, Error> {
        let mut p = self.paths[i].clone();
        // A path on a dead host does not come back on a scan.
        let h = &self.hosts[p.host_index];
        if h.transport == Transport::Fc {
            let hname = format!("host{}", h.number);
            let st = fs::read_to_string(
                self.root
                    .join(&h.dir)
                    .join("fc_host")
                    .join(&hname)
                    .join("port_state"),
            )
            .unwrap_or_default();
            if st.trim() != "Online" {
                return Ok(None);
            }
        }
        self.materialize(&mut p)?;
        let dev = p.dev.clone();
        self.paths[i] = p;
        Ok(Some(dev))
    }

    /// Changes the size of a LUN on the array (all its paths); hosts see it after a
    /// `device/rescan` write.
    pub fn resize_lun(&mut self, group: usize, ordinal: u64, bytes: u64) {
        self.pending_size.insert((group, ordinal), bytes);
    }

    /// The group and ordinal of the LUN behind `dev`.
    pub fn lun_of(&self, dev: &str) -> Result<(usize, u64), Error> {
        let i = self.index_of(dev)?;
        Ok((self.paths[i].group, self.paths[i].ordinal))
    }

    /// Creates a device-mapper multipath map `dm-N` holding `devs` (as multipathd would):
    /// `devices/virtual/block/dm-N/{dev,size,dm/{name,uuid},slaves/*}`, `class/block/dm-N`,
    /// and `holders/dm-N` in each member. Returns "dm-N".
    pub fn add_dm_map(&mut self, name: &str, uuid: &str, devs: &[&str]) -> Result<String, Error> {
        let root = self.root.clone();
        let n = list_dm(&root);
        let dm = format!("dm-{n}");
        let rel = Path::new("devices/virtual/block").join(&dm);
        let d = root.join(&rel);
        mkdir(&d.join("dm"))?;
        mkdir(&d.join("holders"))?;
        mkdir(&d.join("slaves"))?;
        put_line(&d.join("dev"), &format!("254:{n}"))?;
        put_line(&d.join("dm/name"), name)?;
        put_line(&d.join("dm/uuid"), uuid)?;
        put_line(&d.join("dm/suspended"), "0")?;
        let mut size = 0;
        for dev in devs {
            let i = self.index_of(dev)?;
            let p = &self.paths[i];
            size = p.size_bytes / 512;
            let blk = p.dev_dir().join("block").join(&p.dev);
            link(&root, &rel.join("slaves").join(dev), &blk)?;
            link(&root, &blk.join("holders").join(&dm), &rel)?;
        }
        put_line(&d.join("size"), &size.to_string())?;
        link(&root, &Path::new("class/block").join(&dm), &rel)?;
        link(&root, &Path::new("block").join(&dm), &rel)?;
        Ok(dm)
    }

    /// Emulates the kernel's reaction to a sysfs write (for rescan tests):
    /// - `scsi_host/hostN/scan` with "C T L" ("-" = wildcard) adds the matching unscanned paths;
    /// - `fc_host/hostN/issue_lip` adds every unscanned path of the host;
    /// - `H:C:T:L/delete` removes the device;
    /// - `H:C:T:L/rescan` applies a pending size change.
    ///
    /// Anything else is rejected with EINVAL, like a kernel would reject a bad write.
    pub fn kernel_write(&mut self, path: &Path, value: &str) -> io::Result<()> {
        let rel = path
            .strip_prefix(&self.root)
            .map_err(|_| einval())?
            .to_path_buf();
        let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let parent = rel
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        let to_io = |e: Error| io::Error::other(e.to_string());
        match name {
            "scan" => {
                let hi = self
                    .hosts
                    .iter()
                    .position(|h| format!("host{}", h.number) == parent)
                    .ok_or_else(einval)?;
                let f: Vec<&str> = value.split_whitespace().collect();
                if f.len() != 3 {
                    return Err(einval());
                }
                let want = |s: &str, v: u64| -> io::Result<bool> {
                    if s == "-" {
                        Ok(true)
                    } else {
                        s.parse::<u64>().map(|n| n == v).map_err(|_| einval())
                    }
                };
                for i in 0..self.paths.len() {
                    let p = &self.paths[i];
                    if p.host_index == hi
                        && !p.present
                        && want(f[0], u64::from(p.hctl.channel))?
                        && want(f[1], u64::from(p.hctl.target))?
                        && want(f[2], p.hctl.lun)?
                    {
                        self.scan_one(i).map_err(to_io)?;
                    }
                }
                Ok(())
            }
            "issue_lip" => {
                let hi = self
                    .hosts
                    .iter()
                    .position(|h| format!("host{}", h.number) == parent)
                    .ok_or_else(einval)?;
                for i in 0..self.paths.len() {
                    if self.paths[i].host_index == hi && !self.paths[i].present {
                        self.scan_one(i).map_err(to_io)?;
                    }
                }
                Ok(())
            }
            "delete" => {
                let i = self
                    .paths
                    .iter()
                    .position(|p| p.present && p.hctl.to_string() == parent)
                    .ok_or_else(einval)?;
                self.dematerialize(i);
                Ok(())
            }
            "rescan" => {
                let i = self
                    .paths
                    .iter()
                    .position(|p| p.present && p.hctl.to_string() == parent)
                    .ok_or_else(einval)?;
                let key = (self.paths[i].group, self.paths[i].ordinal);
                if let Some(&bytes) = self.pending_size.get(&key) {
                    let p = &mut self.paths[i];
                    p.size_bytes = bytes;
                    let f = self
                        .root
                        .join(p.dev_dir())
                        .join("block")
                        .join(&p.dev)
                        .join("size");
                    fs::write(f, format!("{}\n", bytes / 512))?;
                }
                Ok(())
            }
            _ => Err(einval()),
        }
    }
}

fn list_dm(root: &Path) -> usize {
    fs::read_dir(root.join("devices/virtual/block"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("dm-"))
                .count()
        })
        .unwrap_or(0)
}

/// A 96-byte standard INQUIRY response: disk, SPC-4 (version 6), ALUA implicit+explicit.
fn inquiry(vendor: &str, model: &str, rev: &str) -> Vec<u8> {
    let mut b = vec![0u8; 96];
    b[2] = 6;
    b[3] = 2;
    b[4] = 91;
    b[5] = 0x30;
    let field = |s: &str, n: usize| {
        let mut v = format!("{s:<n$}").into_bytes();
        v.truncate(n);
        v
    };
    b[8..16].copy_from_slice(&field(vendor, 8));
    b[16..32].copy_from_slice(&field(model, 16));
    b[32..36].copy_from_slice(&field(rev, 4));
    b
}

fn einval() -> io::Error {
    io::Error::from_raw_os_error(22)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd_names_and_numbers_follow_the_sd_driver() {
        assert_eq!(sd_name(0), "sda");
        assert_eq!(sd_name(25), "sdz");
        assert_eq!(sd_name(26), "sdaa");
        assert_eq!(sd_name(701), "sdzz");
        assert_eq!(sd_name(702), "sdaaa");
        assert_eq!(sd_devno(0), (8, 0));
        assert_eq!(sd_devno(1), (8, 16));
        assert_eq!(sd_devno(15), (8, 240));
        assert_eq!(sd_devno(16), (65, 0));
        assert_eq!(sd_devno(127), (71, 240));
        assert_eq!(sd_devno(128), (128, 0));
        assert_eq!(sd_devno(256), (8, 256));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("64M"), Some(64 << 20));
        assert_eq!(parse_size("10G"), Some(10 << 30));
        assert_eq!(parse_size("x"), None);
    }

    #[test]
    fn ordinal_addition_carries() {
        assert_eq!(add_ordinal(&[0x00, 0xff], 1), vec![0x01, 0x00]);
        assert_eq!(add_ordinal(&[0x12, 0x34], 0), vec![0x12, 0x34]);
    }

    #[test]
    fn bad_topologies_are_rejected_with_the_file_name() {
        let e = Topology::from_toml(
            "hosts=[{transport=\"fc\"}]\ntargets=[{hosts=[3]}]\nluns=[{count=1}]",
            Path::new("t.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("t.toml"), "{e}");
        assert!(Topology::from_toml("hosts=1", Path::new("x.toml")).is_err());
        let e = Topology::from_toml(
            "hosts=[{transport=\"fc\"}]\ntargets=[{}]\nluns=[{size=\"big\"}]",
            Path::new("y.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("size"), "{e}");
    }

    #[test]
    fn path_count() {
        let t = Topology::big_fc(2, 4, 10);
        assert_eq!(t.path_count(), 80);
    }
}
