//! udevd's events through the udev crate's monitor (netlink group "udev"), filtered on the
//! `block` and `scsi` subsystems and copied into plain [`Uevent`]s at once.
//!
//! Only useful when udevd runs: these events come after udev rules ran, so they carry
//! properties such as `ID_SERIAL` (the WWID multipath-tools uses) and `DM_NAME`. Without udevd
//! the socket opens but stays silent; use [`super::netlink::KernelUeventSocket`] then.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use super::{Uevent, UeventSource};
use crate::Error;

/// Subsystems whose events matter to the daemon.
pub const SUBSYSTEMS: [&str; 2] = ["block", "scsi"];

/// A listening udev monitor.
pub struct UdevMonitor {
    socket: udev::MonitorSocket,
}

impl std::fmt::Debug for UdevMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdevMonitor")
            .field("fd", &self.socket.as_raw_fd())
            .finish()
    }
}

fn monitor_error(operation: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::UdevMonitor { operation, source }
}

impl UdevMonitor {
    /// Opens a monitor on the udev netlink group for [`SUBSYSTEMS`]. The socket is
    /// non-blocking: poll its fd, then call [`UdevMonitor::drain`].
    pub fn open() -> Result<Self, Error> {
        let mut builder = udev::MonitorBuilder::new().map_err(monitor_error("create"))?;
        for subsystem in SUBSYSTEMS {
            builder = builder
                .match_subsystem(subsystem)
                .map_err(monitor_error("add a subsystem filter"))?;
        }
        let socket = builder.listen().map_err(monitor_error("listen"))?;
        Ok(UdevMonitor { socket })
    }

    /// Every event available now, as plain structs. Events without `ACTION` or `DEVPATH`
    /// (which udevd never sends) are returned as errors naming them.
    pub fn drain(&mut self) -> (Vec<Uevent>, Vec<Error>) {
        let mut events = Vec::new();
        let mut errors = Vec::new();
        for event in self.socket.iter() {
            let properties = event.properties().map(|entry| {
                (
                    entry.name().to_string_lossy().into_owned(),
                    entry.value().to_string_lossy().into_owned(),
                )
            });
            match from_udev_properties(properties) {
                Ok(uevent) => events.push(uevent),
                Err(e) => errors.push(e),
            }
        }
        (events, errors)
    }
}

/// Builds a [`Uevent`] from a udev device's properties (what [`UdevMonitor::drain`] does for
/// each event; separate so it is testable without udevd).
pub fn from_udev_properties(
    properties: impl IntoIterator<Item = (String, String)>,
) -> Result<Uevent, Error> {
    let env: BTreeMap<String, String> = properties.into_iter().collect();
    let head = env.get("DEVPATH").cloned().unwrap_or_default();
    Uevent::from_properties(UeventSource::Udev, env)
        .map_err(|reason| Error::MalformedUevent { reason, head })
}

impl AsFd for UdevMonitor {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udev_properties_become_a_plain_event() {
        let props = [
            ("ACTION", "add"),
            (
                "DEVPATH",
                "/devices/pseudo_0/adapter1/host1/target1:0:0/1:0:0:0/block/sdc",
            ),
            ("SUBSYSTEM", "block"),
            ("DEVTYPE", "disk"),
            ("DEVNAME", "/dev/sdc"),
            ("MAJOR", "8"),
            ("MINOR", "32"),
            ("SEQNUM", "4242"),
            ("ID_SERIAL", "333333330000007d0"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let event = from_udev_properties(props).expect("valid");
        assert_eq!(event.source, UeventSource::Udev);
        assert_eq!(event.devname.as_deref(), Some("sdc"));
        assert_eq!(event.dev_t(), Some((8, 32)));
        assert_eq!(event.get("ID_SERIAL"), Some("333333330000007d0"));
        let err = from_udev_properties([("ACTION".to_string(), "add".to_string())])
            .expect_err("no devpath");
        assert!(err.to_string().contains("DEVPATH"), "{err}");
    }
}
