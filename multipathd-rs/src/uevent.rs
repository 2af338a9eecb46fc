//! Device events: kernel uevents and udev events in one plain struct, and their coalescing.
//!
//! Sources, both copied into [`Uevent`] so no logic touches libudev:
//! - [`netlink::KernelUeventSocket`]: the kernel's own uevents on a `NETLINK_KOBJECT_UEVENT`
//!   socket (multicast group 1); works without udevd, parsed by [`parse_kernel_uevent`];
//! - [`udev_monitor::UdevMonitor`]: udevd's processed events (netlink group "udev") through
//!   the udev crate's monitor, filtered on the `block` and `scsi` subsystems; these carry udev
//!   properties such as `ID_SERIAL` and are preferred when udevd runs.
//!
//! A rescan or an HBA coming back produces thousands of events in a moment. The
//! [`BurstCollector`] gathers them until the stream goes quiet (on the injected clock), and
//! [`coalesce`] reduces them to one final outcome per device ([`DeviceChange`]), grouped per
//! map key (a WWID, supplied by the daemon's callback), so the daemon makes one plan per map.

pub mod netlink;
pub mod udev_monitor;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

use crate::Error;

/// Where the daemon gets its device events: the kernel's netlink socket in production, a
/// scripted feed in tests (so a lost event or a buffer overrun can be staged).
pub trait UeventFeed: Send {
    /// Every event available now, and the errors met while reading them. An
    /// [`Error::UeventSocket`] with `ENOBUFS` means the kernel dropped events: see
    /// [`is_overrun`].
    fn drain(&mut self) -> (Vec<Uevent>, Vec<Error>);
}

impl UeventFeed for netlink::KernelUeventSocket {
    fn drain(&mut self) -> (Vec<Uevent>, Vec<Error>) {
        netlink::KernelUeventSocket::drain(self)
    }
}

/// Whether an error from a [`UeventFeed`] says events were lost (the socket's receive
/// buffer overran, `ENOBUFS`): whatever they said must be found again by a full rescan.
pub fn is_overrun(e: &Error) -> bool {
    matches!(
        e,
        Error::UeventSocket {
            source: nix::errno::Errno::ENOBUFS,
            ..
        }
    )
}

/// Largest message accepted as a uevent. The kernel's uevent environment is limited to
/// 2 KiB (`UEVENT_BUFFER_SIZE`) plus the header; anything beyond 64 KiB is not a uevent.
pub const MAX_UEVENT_LEN: usize = 64 * 1024;

/// The `ACTION` of an event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UeventAction {
    Add,
    Remove,
    Change,
    Move,
    Online,
    Offline,
    Bind,
    Unbind,
    Other(String),
}

impl UeventAction {
    pub fn parse(action: &str) -> Self {
        match action {
            "add" => UeventAction::Add,
            "remove" => UeventAction::Remove,
            "change" => UeventAction::Change,
            "move" => UeventAction::Move,
            "online" => UeventAction::Online,
            "offline" => UeventAction::Offline,
            "bind" => UeventAction::Bind,
            "unbind" => UeventAction::Unbind,
            other => UeventAction::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            UeventAction::Add => "add",
            UeventAction::Remove => "remove",
            UeventAction::Change => "change",
            UeventAction::Move => "move",
            UeventAction::Online => "online",
            UeventAction::Offline => "offline",
            UeventAction::Bind => "bind",
            UeventAction::Unbind => "unbind",
            UeventAction::Other(s) => s,
        }
    }
}

impl fmt::Display for UeventAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UeventSource {
    /// The kernel's netlink uevent (group 1).
    Kernel,
    /// udevd's event, after its rules ran (group 2).
    Udev,
}

/// One device event, as plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uevent {
    pub source: UeventSource,
    pub action: UeventAction,
    /// Sysfs path below `/sys` (`/devices/.../block/sdb`).
    pub devpath: String,
    pub subsystem: Option<String>,
    /// Kernel device name without `/dev/` (`sdb`), if the device has a node.
    pub devname: Option<String>,
    pub devtype: Option<String>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub seqnum: Option<u64>,
    /// Every `KEY=VALUE` of the event (including the ones above, as sent).
    pub env: BTreeMap<String, String>,
}

impl Uevent {
    /// A property of the event (`ID_SERIAL`, `DM_NAME`, ...).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.env.get(key).map(String::as_str)
    }

    /// Whether this is a whole block device (`SUBSYSTEM=block`, `DEVTYPE=disk`), the kind of
    /// device a path or a map is.
    pub fn is_disk(&self) -> bool {
        self.subsystem.as_deref() == Some("block") && self.devtype.as_deref() == Some("disk")
    }

    /// `MAJOR:MINOR`, when both are present.
    pub fn dev_t(&self) -> Option<(u32, u32)> {
        Some((self.major?, self.minor?))
    }

    /// The kernel name: `DEVNAME`, else the last component of the devpath.
    pub fn kernel_name(&self) -> &str {
        match &self.devname {
            Some(name) => name,
            None => self.devpath.rsplit('/').next().unwrap_or(&self.devpath),
        }
    }

    /// Builds an event from its `KEY=VALUE` properties. `ACTION` and `DEVPATH` are required;
    /// `MAJOR`, `MINOR` and `SEQNUM` must be numbers when present; a `/dev/` prefix on
    /// `DEVNAME` (udev's form) is removed.
    pub fn from_properties(
        source: UeventSource,
        env: BTreeMap<String, String>,
    ) -> Result<Uevent, String> {
        let action = env.get("ACTION").ok_or_else(|| "no ACTION".to_string())?;
        let devpath = env.get("DEVPATH").ok_or_else(|| "no DEVPATH".to_string())?;
        fn number<T: std::str::FromStr>(
            env: &BTreeMap<String, String>,
            key: &str,
        ) -> Result<Option<T>, String> {
            match env.get(key) {
                None => Ok(None),
                Some(v) => v
                    .parse()
                    .map(Some)
                    .map_err(|_| format!("{key}={v} is not a number")),
            }
        }
        let devname = env
            .get("DEVNAME")
            .map(|name| name.strip_prefix("/dev/").unwrap_or(name).to_string());
        Ok(Uevent {
            source,
            action: UeventAction::parse(action),
            devpath: devpath.clone(),
            subsystem: env.get("SUBSYSTEM").cloned(),
            devname,
            devtype: env.get("DEVTYPE").cloned(),
            major: number(&env, "MAJOR")?,
            minor: number(&env, "MINOR")?,
            seqnum: number(&env, "SEQNUM")?,
            env,
        })
    }
}

fn malformed(reason: impl Into<String>, buf: &[u8]) -> Error {
    let head = String::from_utf8_lossy(&buf[..buf.len().min(80)]).replace('\0', "\\0");
    Error::MalformedUevent {
        reason: reason.into(),
        head,
    }
}

/// Parses one kernel uevent datagram:
/// `action@devpath\0ACTION=action\0DEVPATH=devpath\0SUBSYSTEM=...\0...\0`.
///
/// Rejected: an empty or oversized message, a message not ending in NUL (truncated), a
/// libudev message (those go through [`udev_monitor`]), a missing `action@devpath` header, a
/// field without `=`, a missing `ACTION` or `DEVPATH` or one that contradicts the header, and
/// non-numeric `MAJOR`/`MINOR`/`SEQNUM`. Values that are not UTF-8 are kept lossily.
pub fn parse_kernel_uevent(buf: &[u8]) -> Result<Uevent, Error> {
    if buf.is_empty() {
        return Err(malformed("empty message", buf));
    }
    if buf.len() > MAX_UEVENT_LEN {
        return Err(malformed(
            format!(
                "{} bytes, more than the {MAX_UEVENT_LEN} a uevent can have",
                buf.len()
            ),
            buf,
        ));
    }
    if buf.starts_with(b"libudev\0") {
        return Err(malformed(
            "a udev monitor message, not a kernel uevent",
            buf,
        ));
    }
    let Some(body) = buf.strip_suffix(b"\0") else {
        return Err(malformed(
            "truncated: the last field has no terminating NUL",
            buf,
        ));
    };
    let mut fields = body.split(|&b| b == 0);
    let header = String::from_utf8_lossy(fields.next().unwrap_or_default());
    let Some((header_action, header_devpath)) = header.split_once('@') else {
        return Err(malformed("no action@devpath header", buf));
    };
    if header_action.is_empty() || !header_devpath.starts_with('/') {
        return Err(malformed("bad action@devpath header", buf));
    }
    let mut env = BTreeMap::new();
    for (index, field) in fields.enumerate() {
        if field.is_empty() {
            continue;
        }
        let field = String::from_utf8_lossy(field);
        match field.split_once('=') {
            Some((key, value)) if !key.is_empty() => {
                env.insert(key.to_string(), value.to_string());
            }
            _ => {
                return Err(malformed(
                    format!("field {} ({field:?}) is not KEY=VALUE", index + 1),
                    buf,
                ));
            }
        }
    }
    let event =
        Uevent::from_properties(UeventSource::Kernel, env).map_err(|why| malformed(why, buf))?;
    if event.action.as_str() != header_action || event.devpath != header_devpath {
        return Err(malformed(
            format!(
                "header {header_action}@{header_devpath} contradicts ACTION={} DEVPATH={}",
                event.action, event.devpath
            ),
            buf,
        ));
    }
    Ok(event)
}

/// The net effect of a burst of events on one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceChange {
    /// The device is new (first event `add`, still present at the end).
    Added,
    /// The device is gone (it existed before the burst, removed at the end).
    Removed,
    /// The device existed and still does; its properties changed (`change`, `online`, ...).
    Changed,
    /// The device was removed and added again: same devpath, possibly another LUN behind it,
    /// so the daemon must re-read its identity.
    Replaced,
}

/// One device's outcome after coalescing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceOutcome {
    pub change: DeviceChange,
    /// The device's last event (freshest properties; the `remove` for a removed device).
    pub last: Uevent,
    /// How many events of the burst were about this device.
    pub events: usize,
}

/// The events of one map key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEvents {
    pub key: String,
    /// One outcome per device, sorted by devpath.
    pub devices: Vec<DeviceOutcome>,
}

/// A coalesced burst: one entry per map key, plus devices without one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CoalescedBurst {
    /// Sorted by key.
    pub maps: Vec<MapEvents>,
    /// Devices the key callback had no key for (not a path of interest, or unknown WWID).
    pub unkeyed: Vec<DeviceOutcome>,
    /// Devices added and removed again within the burst: nothing to do.
    pub transient: usize,
    /// Events that went in.
    pub events_in: usize,
}

struct DeviceTrack {
    existed_before: bool,
    exists: bool,
    removed_in_between: bool,
    events: usize,
    last: Uevent,
}

/// Reduces a burst of events (in arrival order) to the final outcome per device (keyed by
/// devpath) and groups them by the map key `key_of` returns (a WWID; the daemon looks up the
/// WWID of removed devices in its own path table). `move` and other actions count as
/// [`DeviceChange::Changed`].
pub fn coalesce<F>(events: Vec<Uevent>, mut key_of: F) -> CoalescedBurst
where
    F: FnMut(&DeviceOutcome) -> Option<String>,
{
    let events_in = events.len();
    let mut order: Vec<String> = Vec::new();
    let mut tracks: HashMap<String, DeviceTrack> = HashMap::new();
    for event in events {
        match tracks.get_mut(&event.devpath) {
            Some(track) => {
                track.events += 1;
                match event.action {
                    UeventAction::Add => {
                        if !track.exists && track.existed_before {
                            track.removed_in_between = true;
                        }
                        track.exists = true;
                    }
                    UeventAction::Remove => track.exists = false,
                    _ => {}
                }
                track.last = event;
            }
            None => {
                let existed_before = event.action != UeventAction::Add;
                let exists = event.action != UeventAction::Remove;
                order.push(event.devpath.clone());
                tracks.insert(
                    event.devpath.clone(),
                    DeviceTrack {
                        existed_before,
                        exists,
                        removed_in_between: false,
                        events: 1,
                        last: event,
                    },
                );
            }
        }
    }

    let mut burst = CoalescedBurst {
        events_in,
        ..CoalescedBurst::default()
    };
    let mut maps: BTreeMap<String, Vec<DeviceOutcome>> = BTreeMap::new();
    for devpath in order {
        let Some(track) = tracks.remove(&devpath) else {
            continue;
        };
        let change = match (track.existed_before, track.exists) {
            (false, true) => DeviceChange::Added,
            (true, false) => DeviceChange::Removed,
            (true, true) if track.removed_in_between => DeviceChange::Replaced,
            (true, true) => DeviceChange::Changed,
            (false, false) => {
                burst.transient += 1;
                continue;
            }
        };
        let outcome = DeviceOutcome {
            change,
            last: track.last,
            events: track.events,
        };
        match key_of(&outcome) {
            Some(key) => maps.entry(key).or_default().push(outcome),
            None => burst.unkeyed.push(outcome),
        }
    }
    burst.maps = maps
        .into_iter()
        .map(|(key, mut devices)| {
            devices.sort_by(|a, b| a.last.devpath.cmp(&b.last.devpath));
            MapEvents { key, devices }
        })
        .collect();
    burst
}

/// Gathers events until the stream has been quiet for `quiet`, or `max_window` after the
/// first one, whichever comes first (times on the daemon's clock).
#[derive(Debug, Clone)]
pub struct BurstCollector {
    quiet: Duration,
    max_window: Duration,
    events: Vec<Uevent>,
    first_at: Option<Instant>,
    last_at: Option<Instant>,
}

/// Default quiet period: short enough that a single path addition is handled at once.
pub const DEFAULT_QUIET: Duration = Duration::from_millis(50);
/// Default longest burst window, so a never-ending event stream still gets handled.
pub const DEFAULT_MAX_WINDOW: Duration = Duration::from_millis(500);

impl Default for BurstCollector {
    fn default() -> Self {
        BurstCollector::new(DEFAULT_QUIET, DEFAULT_MAX_WINDOW)
    }
}

impl BurstCollector {
    pub fn new(quiet: Duration, max_window: Duration) -> Self {
        BurstCollector {
            quiet,
            max_window,
            events: Vec::new(),
            first_at: None,
            last_at: None,
        }
    }

    /// Adds an event received at `now`.
    pub fn push(&mut self, event: Uevent, now: Instant) {
        self.first_at.get_or_insert(now);
        self.last_at = Some(now);
        self.events.push(event);
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// When the gathered burst is due for processing (`None` when empty).
    pub fn ready_at(&self) -> Option<Instant> {
        let first = self.first_at?;
        let last = self.last_at?;
        Some((last + self.quiet).min(first + self.max_window))
    }

    /// The burst, if it is due at `now`; the collector starts over empty.
    pub fn take_if_ready(&mut self, now: Instant) -> Option<Vec<Uevent>> {
        if self.ready_at()? > now {
            return None;
        }
        self.first_at = None;
        self.last_at = None;
        Some(std::mem::take(&mut self.events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    const SDB_ADD: &[u8] = b"add@/devices/pseudo_0/adapter0/host0/target0:0:0/0:0:0:1/block/sdb\0\
ACTION=add\0DEVPATH=/devices/pseudo_0/adapter0/host0/target0:0:0/0:0:0:1/block/sdb\0\
SUBSYSTEM=block\0MAJOR=8\0MINOR=16\0DEVNAME=sdb\0DEVTYPE=disk\0DISKSEQ=3\0SEQNUM=1532\0";

    fn reason(result: Result<Uevent, Error>) -> String {
        match result {
            Err(Error::MalformedUevent { reason, .. }) => reason,
            other => panic!("expected a malformed uevent, got {other:?}"),
        }
    }

    #[test]
    fn parses_a_kernel_block_add() {
        let event = parse_kernel_uevent(SDB_ADD).expect("valid uevent");
        assert_eq!(event.action, UeventAction::Add);
        assert_eq!(event.source, UeventSource::Kernel);
        assert!(event.devpath.ends_with("/block/sdb"));
        assert_eq!(event.subsystem.as_deref(), Some("block"));
        assert_eq!(event.devname.as_deref(), Some("sdb"));
        assert_eq!(event.kernel_name(), "sdb");
        assert!(event.is_disk());
        assert_eq!(event.dev_t(), Some((8, 16)));
        assert_eq!(event.seqnum, Some(1532));
        assert_eq!(event.get("DISKSEQ"), Some("3"));
    }

    #[test]
    fn parses_scsi_device_offline_without_devname() {
        let msg = b"offline@/devices/pseudo_0/adapter1/host1/target1:0:0/1:0:0:0\0\
ACTION=offline\0DEVPATH=/devices/pseudo_0/adapter1/host1/target1:0:0/1:0:0:0\0\
SUBSYSTEM=scsi\0DEVTYPE=scsi_device\0SEQNUM=7\0";
        let event = parse_kernel_uevent(msg).expect("valid");
        assert_eq!(event.action, UeventAction::Offline);
        assert!(!event.is_disk());
        assert_eq!(event.devname, None);
        assert_eq!(event.kernel_name(), "1:0:0:0");
        assert_eq!(event.dev_t(), None);
    }

    #[test]
    fn rejects_malformed_messages() {
        assert!(reason(parse_kernel_uevent(b"")).contains("empty"));
        let no_nul = &SDB_ADD[..SDB_ADD.len() - 1];
        assert!(reason(parse_kernel_uevent(no_nul)).contains("truncated"));
        let no_action = b"add@/devices/x/block/sdb\0DEVPATH=/devices/x/block/sdb\0SEQNUM=1\0";
        assert!(reason(parse_kernel_uevent(no_action)).contains("no ACTION"));
        let no_devpath = b"add@/devices/x/block/sdb\0ACTION=add\0";
        assert!(reason(parse_kernel_uevent(no_devpath)).contains("no DEVPATH"));
        let no_header = b"ACTION=add\0DEVPATH=/devices/x\0";
        assert!(reason(parse_kernel_uevent(no_header)).contains("header"));
        let contradiction =
            b"remove@/devices/x/block/sdb\0ACTION=add\0DEVPATH=/devices/x/block/sdb\0";
        assert!(reason(parse_kernel_uevent(contradiction)).contains("contradicts"));
        let bad_major = b"add@/devices/x\0ACTION=add\0DEVPATH=/devices/x\0MAJOR=eight\0";
        assert!(reason(parse_kernel_uevent(bad_major)).contains("MAJOR=eight"));
        let bad_field = b"add@/devices/x\0ACTION=add\0DEVPATH=/devices/x\0garbage\0";
        assert!(reason(parse_kernel_uevent(bad_field)).contains("KEY=VALUE"));
        let udev = b"libudev\0\xfe\xed\xca\xfe";
        assert!(reason(parse_kernel_uevent(udev)).contains("udev"));
        let mut huge = b"change@/devices/x\0ACTION=change\0DEVPATH=/devices/x\0BIG=".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_UEVENT_LEN));
        huge.push(0);
        assert!(reason(parse_kernel_uevent(&huge)).contains("more than"));
    }

    #[test]
    fn error_message_names_the_event() {
        let err =
            parse_kernel_uevent(b"add@/devices/x/block/sdq\0ACTION=add\0").expect_err("malformed");
        let text = err.to_string();
        assert!(
            text.contains("no DEVPATH") && text.contains("sdq"),
            "{text}"
        );
    }

    #[test]
    fn udev_style_devname_is_normalised() {
        let env: BTreeMap<String, String> = [
            ("ACTION", "change"),
            ("DEVPATH", "/devices/x/block/sdc"),
            ("DEVNAME", "/dev/sdc"),
            ("ID_SERIAL", "36001405abc"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let event = Uevent::from_properties(UeventSource::Udev, env).expect("valid");
        assert_eq!(event.devname.as_deref(), Some("sdc"));
        assert_eq!(event.get("ID_SERIAL"), Some("36001405abc"));
    }

    fn ev(action: &str, dev: &str) -> Uevent {
        let env: BTreeMap<String, String> = [
            ("ACTION", action.to_string()),
            ("DEVPATH", format!("/devices/h/block/{dev}")),
            ("DEVNAME", dev.to_string()),
            ("SUBSYSTEM", "block".to_string()),
            ("DEVTYPE", "disk".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Uevent::from_properties(UeventSource::Kernel, env).expect("valid")
    }

    #[test]
    fn per_device_reduction() {
        let events = vec![
            ev("add", "sda"),
            ev("change", "sda"),
            ev("remove", "sdb"),
            ev("add", "sdc"),
            ev("remove", "sdc"),
            ev("change", "sdd"),
            ev("remove", "sde"),
            ev("add", "sde"),
            ev("change", "sdf"),
            ev("remove", "sdf"),
        ];
        let burst = coalesce(events, |_| Some("m".to_string()));
        assert_eq!(burst.events_in, 10);
        assert_eq!(burst.transient, 1, "sdc came and went");
        let got: Vec<(&str, DeviceChange)> = burst.maps[0]
            .devices
            .iter()
            .map(|d| (d.last.kernel_name(), d.change))
            .collect();
        assert_eq!(
            got,
            [
                ("sda", DeviceChange::Added),
                ("sdb", DeviceChange::Removed),
                ("sdd", DeviceChange::Changed),
                ("sde", DeviceChange::Replaced),
                ("sdf", DeviceChange::Removed),
            ]
        );
        assert_eq!(burst.maps[0].devices[0].events, 2);
        assert_eq!(burst.maps[0].devices[0].last.action, UeventAction::Change);
    }

    #[test]
    fn burst_window_on_the_manual_clock() {
        let clock = ManualClock::new();
        let mut collector =
            BurstCollector::new(Duration::from_millis(50), Duration::from_millis(200));
        assert_eq!(collector.take_if_ready(clock.now()), None);
        collector.push(ev("add", "sda"), clock.now());
        clock.advance(Duration::from_millis(40));
        collector.push(ev("add", "sdb"), clock.now());
        clock.advance(Duration::from_millis(40));
        assert_eq!(collector.take_if_ready(clock.now()), None, "not quiet yet");
        clock.advance(Duration::from_millis(10));
        assert_eq!(
            collector.take_if_ready(clock.now()).map(|v| v.len()),
            Some(2)
        );
        assert!(collector.is_empty());
        // A stream that never goes quiet is cut at max_window.
        let start = clock.now();
        for _ in 0..10 {
            collector.push(ev("change", "sdc"), clock.now());
            clock.advance(Duration::from_millis(30));
            if clock.now() - start < Duration::from_millis(200) {
                assert_eq!(collector.take_if_ready(clock.now()), None);
            }
        }
        assert_eq!(
            collector.ready_at(),
            Some(start + Duration::from_millis(200))
        );
        assert!(collector.take_if_ready(clock.now()).is_some());
    }
}
