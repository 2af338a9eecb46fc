//! lun-scan: SCSI hosts, FC remote ports, iSCSI sessions, SCSI paths and their WWIDs, read from
//! a sysfs tree whose root is a parameter; rescans; sysfs snapshots; a topology generator that
//! renders kernel-like sysfs trees for tests. See `lun-scan/README.md`.

pub mod error;
pub mod model;
pub mod output;
pub mod rescan;
pub mod snapshot;
pub mod sysfs;
pub mod topology;
pub mod vpd;

pub use error::{Error, Result};
pub use model::{
    DevNo, FcHost, FcRemotePort, Hctl, Host, Interner, IscsiHost, IscsiSession, SasEndDevice,
    SasHost, Scan, ScsiPath, Shared, Transport, WwidSource,
};
pub use sysfs::{PathContext, ScanOptions, scan, scan_path, scan_path_in, scan_with};
