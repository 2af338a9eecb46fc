//! Plain data types describing what a scan finds: SCSI hosts (HBAs), FC remote ports, iSCSI
//! sessions, SAS end devices and SCSI paths (block devices). They are copied out of sysfs into
//! plain structs (no handles kept open), serialise to the JSON of the CLI contract and carry
//! their own per-item errors.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Serialize, Serializer};

use crate::error::Error;

/// An immutable string shared by every path that carries the same value: an HBA's WWPN, a
/// target port's name, the vendor, the device state. A scan keeps one heap copy of each
/// distinct value instead of one per path (at 32,768 paths, a dozen such fields per path
/// were a sixth of a daemon's cold-start memory). Reads as a `str` (`Deref`), compares with
/// strings and serializes as one, so the JSON is the same as a `String`'s.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Shared(Arc<str>);

impl Shared {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared string itself (a reference count, no copy).
    pub fn to_arc(&self) -> Arc<str> {
        Arc::clone(&self.0)
    }
}

impl std::ops::Deref for Shared {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Shared {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Shared {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl From<&str> for Shared {
    fn from(s: &str) -> Self {
        Shared(Arc::from(s))
    }
}

impl From<String> for Shared {
    fn from(s: String) -> Self {
        Shared(Arc::from(s))
    }
}

impl From<Shared> for String {
    fn from(s: Shared) -> Self {
        s.0.to_string()
    }
}

impl PartialEq<str> for Shared {
    fn eq(&self, o: &str) -> bool {
        &*self.0 == o
    }
}

impl PartialEq<&str> for Shared {
    fn eq(&self, o: &&str) -> bool {
        &*self.0 == *o
    }
}

impl PartialEq<String> for Shared {
    fn eq(&self, o: &String) -> bool {
        *self.0 == **o
    }
}

impl PartialEq<Shared> for str {
    fn eq(&self, o: &Shared) -> bool {
        self == &*o.0
    }
}

impl PartialEq<Shared> for &str {
    fn eq(&self, o: &Shared) -> bool {
        *self == &*o.0
    }
}

impl PartialEq<Shared> for String {
    fn eq(&self, o: &Shared) -> bool {
        **self == *o.0
    }
}

impl Serialize for Shared {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Shared {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Shared::from)
    }
}

/// Hands out one [`Shared`] per distinct value (a scan's threads share one).
#[derive(Debug, Default)]
pub struct Interner(std::sync::Mutex<std::collections::HashSet<Shared>>);

impl Interner {
    /// The shared copy of `s`.
    pub fn get(&self, s: &str) -> Shared {
        let mut set = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(v) = set.get(s) {
            return v.clone();
        }
        let v = Shared::from(s);
        set.insert(v.clone());
        v
    }
}

/// A SCSI address `host:channel:target:lun`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hctl {
    pub host: u32,
    pub channel: u32,
    pub target: u32,
    pub lun: u64,
}

impl Hctl {
    pub const fn new(host: u32, channel: u32, target: u32, lun: u64) -> Self {
        Hctl {
            host,
            channel,
            target,
            lun,
        }
    }
}

impl fmt::Display for Hctl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}:{}",
            self.host, self.channel, self.target, self.lun
        )
    }
}

/// Why a string is not an [`Hctl`] or a [`DevNo`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not {expected}")]
pub struct ParseIdError {
    pub input: String,
    pub expected: &'static str,
}

impl FromStr for Hctl {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseIdError {
            input: s.to_string(),
            expected: "a SCSI address H:C:T:L",
        };
        let mut it = s.trim().split(':');
        let host = it.next().and_then(|v| v.parse().ok()).ok_or_else(err)?;
        let channel = it.next().and_then(|v| v.parse().ok()).ok_or_else(err)?;
        let target = it.next().and_then(|v| v.parse().ok()).ok_or_else(err)?;
        let lun = it.next().and_then(|v| v.parse().ok()).ok_or_else(err)?;
        if it.next().is_some() {
            return Err(err());
        }
        Ok(Hctl::new(host, channel, target, lun))
    }
}

impl Serialize for Hctl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A block device number `major:minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DevNo {
    pub major: u32,
    pub minor: u32,
}

impl DevNo {
    pub const fn new(major: u32, minor: u32) -> Self {
        DevNo { major, minor }
    }
}

impl fmt::Display for DevNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

impl FromStr for DevNo {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseIdError {
            input: s.to_string(),
            expected: "a device number MAJOR:MINOR",
        };
        let (ma, mi) = s.trim().split_once(':').ok_or_else(err)?;
        Ok(DevNo::new(
            ma.parse().map_err(|_| err())?,
            mi.parse().map_err(|_| err())?,
        ))
    }
}

impl Serialize for DevNo {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Where a path's WWID came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WwidSource {
    /// Decoded from the Device Identification VPD page (0x83), exactly as udev's ID_SERIAL.
    VpdPg83,
    /// Built from the Unit Serial Number VPD page (0x80): `S<vendor>_<model>_<serial>`.
    VpdPg80,
    /// The kernel's `device/wwid` attribute, trimmed.
    SysfsWwid,
    /// No identifier could be found.
    #[default]
    None,
}

impl fmt::Display for WwidSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WwidSource::VpdPg83 => "vpd_pg83",
            WwidSource::VpdPg80 => "vpd_pg80",
            WwidSource::SysfsWwid => "sysfs_wwid",
            WwidSource::None => "none",
        })
    }
}

/// The SCSI transport a host or path uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Fc,
    Iscsi,
    Sas,
    #[default]
    Other,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Fc => "fc",
            Transport::Iscsi => "iscsi",
            Transport::Sas => "sas",
            Transport::Other => "other",
        })
    }
}

impl FromStr for Transport {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fc" => Ok(Transport::Fc),
            "iscsi" => Ok(Transport::Iscsi),
            "sas" => Ok(Transport::Sas),
            "other" => Ok(Transport::Other),
            _ => Err(ParseIdError {
                input: s.to_string(),
                expected: "a transport (fc, iscsi, sas, other)",
            }),
        }
    }
}

/// One SCSI path: a SCSI block device (`sdX`) and everything known about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScsiPath {
    /// SCSI address, `"0:0:0:1"`.
    pub hctl: Hctl,
    /// Block device name, `"sdb"`.
    pub dev: String,
    /// Block device number, `"8:16"` (null if `dev` could not be read).
    pub devno: Option<DevNo>,
    /// SCSI generic node, `"sg1"`.
    pub sg: Option<String>,
    /// The WWID multipath-tools would use (udev ID_SERIAL).
    pub wwid: Option<String>,
    pub wwid_source: WwidSource,
    /// INQUIRY vendor, model and revision, trimmed.
    pub vendor: Shared,
    pub model: Shared,
    pub rev: Shared,
    /// Peripheral device type (0 = disk).
    pub scsi_type: Option<u8>,
    /// The kernel's `scsi_level` (SCSI revision + 1).
    pub scsi_level: Option<u8>,
    /// SCSI device state: "running", "offline", "blocked", "transport-offline", ...
    pub state: Shared,
    /// Capacity in bytes (`size` is in 512-byte sectors).
    pub size_bytes: Option<u64>,
    pub queue_depth: Option<u32>,
    /// ALUA access state ("active/optimized", ...), null when the device has none.
    pub access_state: Option<Shared>,
    /// ALUA preferred-path bit.
    pub preferred_path: Option<bool>,
    /// Attached device handler ("alua", "emc", ... or "detached").
    pub dh_state: Option<Shared>,
    pub transport: Transport,
    /// SCSI host name, `"host0"`.
    pub host: Shared,
    /// Initiator port WWPN (FC: the fc_host's port_name), `"0x..."`.
    pub host_wwpn: Option<Shared>,
    /// Initiator node name (FC: the fc_host's node_name), `"0x..."`.
    pub host_wwnn: Option<Shared>,
    /// The HBA's address: its PCI address (FC, SAS, any PCI HBA), or the initiator's IP
    /// address for iSCSI; None for virtual hosts such as scsi_debug.
    pub host_adapter: Option<Shared>,
    /// The block device's `ro` attribute: true for a read-only (write-protected) LUN.
    pub read_only: Option<bool>,
    /// FC remote port name the path runs through, `"rport-0:0-1"`.
    pub rport: Option<Shared>,
    /// Target port WWPN (FC: the rport's port_name).
    pub target_wwpn: Option<Shared>,
    /// Target node name (FC: the rport's node_name; iSCSI: the session's targetname).
    pub target_node_name: Option<Shared>,
    /// iSCSI session name, `"session1"`.
    pub iscsi_session: Option<Shared>,
    /// ALUA target port group from VPD 0x83 (designator type 5).
    pub target_port_group: Option<u16>,
    /// Relative target port from VPD 0x83 (designator type 4).
    pub relative_port: Option<u16>,
    /// Unit serial number from VPD 0x80.
    pub serial: Option<String>,
    /// Block devices holding this one (`holders/`), e.g. `["dm-0"]`.
    pub holders: Vec<String>,
    /// The SCSI device directory, under the sysfs root given to the scan.
    pub syspath: PathBuf,
    /// What could not be read about this path. The rest of the fields are still valid.
    pub errors: Vec<Error>,
}

impl ScsiPath {
    /// An empty path record for `dev` at `hctl`; the scanner fills it in.
    pub fn new(hctl: Hctl, dev: &str) -> Self {
        ScsiPath {
            hctl,
            dev: dev.to_string(),
            devno: None,
            sg: None,
            wwid: None,
            wwid_source: WwidSource::None,
            vendor: Shared::default(),
            model: Shared::default(),
            rev: Shared::default(),
            scsi_type: None,
            scsi_level: None,
            state: Shared::default(),
            size_bytes: None,
            queue_depth: None,
            access_state: None,
            preferred_path: None,
            dh_state: None,
            transport: Transport::Other,
            host: Shared::from(format!("host{}", hctl.host)),
            host_wwpn: None,
            host_wwnn: None,
            host_adapter: None,
            read_only: None,
            rport: None,
            target_wwpn: None,
            target_node_name: None,
            iscsi_session: None,
            target_port_group: None,
            relative_port: None,
            serial: None,
            holders: Vec::new(),
            syspath: PathBuf::new(),
            errors: Vec::new(),
        }
    }

    /// True when the SCSI device state is "running".
    pub fn is_running(&self) -> bool {
        self.state == "running"
    }
}

/// FC HBA attributes (`fc_host/hostN`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct FcHost {
    pub port_name: Option<String>,
    pub node_name: Option<String>,
    pub port_id: Option<String>,
    pub port_state: Option<String>,
    pub port_type: Option<String>,
    pub speed: Option<String>,
    pub fabric_name: Option<String>,
}

/// iSCSI host attributes (`iscsi_host/hostN`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct IscsiHost {
    pub initiatorname: Option<String>,
    pub ipaddress: Option<String>,
    pub netdev: Option<String>,
    pub hwaddress: Option<String>,
}

/// SAS host attributes (`sas_host/hostN`); the phys and ports are listed separately.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct SasHost {
    /// SAS addresses of the host's phys (`sas_phy/phy-H:N/sas_address`).
    pub phy_addresses: Vec<String>,
}

/// A SCSI host (HBA, iSCSI software host, SAS controller, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Host {
    /// `"host0"`.
    pub name: String,
    pub number: u32,
    pub proc_name: Option<String>,
    pub state: Option<String>,
    pub transport: Transport,
    pub fc: Option<FcHost>,
    pub iscsi: Option<IscsiHost>,
    pub sas: Option<SasHost>,
    /// The host's device directory (`devices/.../hostN`).
    pub syspath: PathBuf,
    pub errors: Vec<Error>,
}

/// An FC remote port (`fc_remote_ports/rport-H:C-R`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FcRemotePort {
    /// `"rport-0:0-1"`.
    pub name: String,
    pub host: u32,
    pub channel: u32,
    pub number: u32,
    pub port_name: Option<String>,
    pub node_name: Option<String>,
    pub port_id: Option<String>,
    pub port_state: Option<String>,
    pub roles: Option<String>,
    /// The SCSI target id the port is bound to; None when the kernel reports -1.
    pub scsi_target_id: Option<u32>,
    pub dev_loss_tmo: Option<String>,
    pub fast_io_fail_tmo: Option<String>,
    pub syspath: PathBuf,
    pub errors: Vec<Error>,
}

/// An iSCSI session (`iscsi_session/sessionN`) with its connection's address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IscsiSession {
    /// `"session1"`.
    pub name: String,
    /// The SCSI host the session runs on.
    pub host: Option<u32>,
    pub targetname: Option<String>,
    pub state: Option<String>,
    pub tpgt: Option<String>,
    pub persistent_address: Option<String>,
    pub persistent_port: Option<String>,
    pub syspath: PathBuf,
    pub errors: Vec<Error>,
}

/// A SAS end device (`sas_end_device/end_device-H:P...`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SasEndDevice {
    /// `"end_device-0:0"`.
    pub name: String,
    pub host: Option<u32>,
    /// From `sas_device/<name>/sas_address`.
    pub sas_address: Option<String>,
    pub target_port_protocols: Option<String>,
    pub syspath: PathBuf,
    pub errors: Vec<Error>,
}

/// The result of a scan. It never fails as a whole: what could not be read is in `errors`
/// (tree-wide problems) or in the `errors` of the host, port or path concerned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Scan {
    pub hosts: Vec<Host>,
    pub rports: Vec<FcRemotePort>,
    pub sessions: Vec<IscsiSession>,
    pub sas_devices: Vec<SasEndDevice>,
    pub paths: Vec<ScsiPath>,
    pub errors: Vec<Error>,
}

impl Scan {
    /// Every error of the scan: tree-wide ones, then those of hosts, ports, sessions and paths.
    pub fn all_errors(&self) -> Vec<&Error> {
        let mut v: Vec<&Error> = self.errors.iter().collect();
        v.extend(self.hosts.iter().flat_map(|h| h.errors.iter()));
        v.extend(self.rports.iter().flat_map(|r| r.errors.iter()));
        v.extend(self.sessions.iter().flat_map(|s| s.errors.iter()));
        v.extend(self.sas_devices.iter().flat_map(|s| s.errors.iter()));
        v.extend(self.paths.iter().flat_map(|p| p.errors.iter()));
        v
    }

    /// True when anything at all went wrong.
    pub fn has_errors(&self) -> bool {
        !self.all_errors().is_empty()
    }

    /// The path whose block device is `dev`.
    pub fn path(&self, dev: &str) -> Option<&ScsiPath> {
        self.paths.iter().find(|p| p.dev == dev)
    }

    /// The host named `name` ("host0").
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hctl_round_trips_and_rejects_garbage() {
        let h: Hctl = "0:0:1:16384".parse().unwrap();
        assert_eq!(h, Hctl::new(0, 0, 1, 16384));
        assert_eq!(h.to_string(), "0:0:1:16384");
        assert!("0:0:1".parse::<Hctl>().is_err());
        assert!("0:0:1:2:3".parse::<Hctl>().is_err());
        assert!("a:0:1:2".parse::<Hctl>().is_err());
        assert_eq!(serde_json::to_string(&h).unwrap(), "\"0:0:1:16384\"");
    }

    #[test]
    fn devno_round_trips() {
        let d: DevNo = "8:16\n".parse().unwrap();
        assert_eq!(d, DevNo::new(8, 16));
        assert_eq!(d.to_string(), "8:16");
        assert!("816".parse::<DevNo>().is_err());
        assert!("8:x".parse::<DevNo>().is_err());
    }

    #[test]
    fn enums_serialise_as_the_cli_contract_says() {
        assert_eq!(
            serde_json::to_string(&WwidSource::SysfsWwid).unwrap(),
            "\"sysfs_wwid\""
        );
        assert_eq!(
            serde_json::to_string(&Transport::Iscsi).unwrap(),
            "\"iscsi\""
        );
        assert_eq!("FC".parse::<Transport>().unwrap(), Transport::Fc);
    }

    #[test]
    fn path_json_has_the_contract_fields() {
        let p = ScsiPath::new(Hctl::new(0, 0, 0, 1), "sdb");
        let v = serde_json::to_value(&p).unwrap();
        for k in [
            "hctl",
            "dev",
            "devno",
            "wwid",
            "wwid_source",
            "vendor",
            "model",
            "rev",
            "state",
            "size_bytes",
            "access_state",
            "transport",
            "host",
            "target_wwpn",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        assert_eq!(v["host"], "host0");
        assert!(v["access_state"].is_null());
    }
}
