//! The daemon's view of its maps and paths: plain, serialisable structs that the output
//! formatters and the control socket work on.
//!
//! These types deliberately do not borrow the leaf crates' types (lun-scan devices, dm-tables
//! tables and statuses, aliases bindings). The composition layer fills them from those crates,
//! so the formats here can be tested with hand-built data and stay stable when a leaf crate
//! changes. Field meanings follow multipath-tools (`multipath -ll`, `multipathd show ...`).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// A block device number (`major:minor`, as in `dev_t` columns and dm tables).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DevNo {
    pub major: u32,
    pub minor: u32,
}

impl DevNo {
    pub fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }
}

impl fmt::Display for DevNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// SCSI address `host:channel:target:lun`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hctl {
    pub host: u32,
    pub channel: u32,
    pub target: u32,
    pub lun: u64,
}

impl Hctl {
    pub fn new(host: u32, channel: u32, target: u32, lun: u64) -> Self {
        Self {
            host,
            channel,
            target,
            lun,
        }
    }

    /// The LUN as the 8-byte SAM LUN structure the kernel's `int_to_scsilun()` builds,
    /// printed as multipathd's `lun_hex` (`0x000e000000000000` for LUN 14): each 16-bit level
    /// of the Linux LUN number goes, high byte first, into the next two bytes.
    pub fn lun_hex(&self) -> String {
        let mut bytes = [0u8; 8];
        let mut lun = self.lun;
        for level in 0..4 {
            // Truncation to a byte is the point: each level is two bytes.
            bytes[level * 2] = ((lun >> 8) & 0xff) as u8;
            bytes[level * 2 + 1] = (lun & 0xff) as u8;
            lun >>= 16;
        }
        let mut out = String::from("0x");
        for b in bytes {
            out.push_str(&format!("{b:02x}"));
        }
        out
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

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// The word multipath-tools prints for this state.
            pub fn as_str(&self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum! {
    /// A path's state in the kernel's multipath target (`A`/`F` in the dm status line).
    PathDmState {
        Active => "active",
        Failed => "failed",
        /// Not known yet (the map does not exist, e.g. while it is being created).
        Undef => "undef",
    }
}

string_enum! {
    /// A path group's state in the kernel (`A` active, `E` enabled, `D` disabled).
    GroupDmState {
        Active => "active",
        Enabled => "enabled",
        Disabled => "disabled",
        Undef => "undef",
    }
}

string_enum! {
    /// A map's device-mapper state (`dm_st` in `show maps json`).
    MapDmState {
        Active => "active",
        Suspended => "suspend",
        Undef => "undef",
    }
}

string_enum! {
    /// The path checker's verdict, with multipath-tools' words.
    CheckerState {
        Ready => "ready",
        Faulty => "faulty",
        Shaky => "shaky",
        Ghost => "ghost",
        Pending => "i/o pending",
        Timeout => "i/o timeout",
        Delayed => "delayed",
        Disconnected => "disconnected",
        Undef => "undef",
    }
}

string_enum! {
    /// The SCSI device state from sysfs (`device/state`), as `dev_st`.
    DevState {
        Running => "running",
        Offline => "offline",
        Blocked => "blocked",
        Quiesce => "quiesce",
        TransportOffline => "transport-offline",
        Created => "created",
        Cancel => "cancel",
        Deleted => "deleted",
        Undef => "undef",
    }
}

string_enum! {
    /// Write protection of a map (`wp=` in the topology, `write_prot` in JSON).
    WriteProtect {
        ReadWrite => "rw",
        ReadOnly => "ro",
        Undef => "undef",
    }
}

string_enum! {
    /// What a dry run or a change is about to do with a map; printed as the `create: `
    /// prefix in the topology and as `action` in JSON.
    MapAction {
        Create => "create",
        Reload => "reload",
        SwitchGroup => "switchpg",
        Rename => "rename",
    }
}

/// Whether a map queues I/O when no path is left (`queueing` in JSON), as multipathd shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Queueing {
    /// `no_path_retry fail`: I/O fails at once (`off`).
    Off,
    /// `no_path_retry queue`: queue forever (`on`).
    On,
    /// `no_path_retry N`, all paths up: N checker intervals of queueing remain (`N chk`).
    Checks(u32),
    /// `no_path_retry N`, all paths down: seconds of queueing left (`N sec`).
    SecondsLeft(u32),
    /// Not configured / unknown (`-`).
    Undef,
}

impl fmt::Display for Queueing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::On => f.write_str("on"),
            Self::Checks(n) => write!(f, "{n} chk"),
            Self::SecondsLeft(n) => write!(f, "{n} sec"),
            Self::Undef => f.write_str("-"),
        }
    }
}

/// The failback policy of a map (`failback` in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Failback {
    Manual,
    Immediate,
    Followover,
    /// Fail back after this many seconds.
    Deferred(u32),
    Undef,
}

impl fmt::Display for Failback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Manual => f.write_str("manual"),
            Self::Immediate => f.write_str("immediate"),
            Self::Followover => f.write_str("followover"),
            Self::Deferred(n) => write!(f, "{n}"),
            Self::Undef => f.write_str("-"),
        }
    }
}

/// When the checker looks at a path next (`next_check` column of `show paths`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NextCheck {
    /// The path belongs to no map; it is not checked (`orphan`).
    Orphan,
    /// Checked every `interval_secs`; the next check is `remaining_secs` away.
    Due {
        remaining_secs: u32,
        interval_secs: u32,
    },
}

impl fmt::Display for NextCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Orphan => f.write_str("orphan"),
            Self::Due {
                remaining_secs,
                interval_secs,
            } => {
                // A ten-character bar filled with the elapsed part of the interval,
                // then `elapsed/interval`, like multipathd.
                let interval = interval_secs.max(1);
                let remaining = remaining_secs.min(interval);
                let elapsed = interval - remaining;
                let filled = (elapsed as u64 * 10 / interval as u64) as usize;
                let bar: String = "X".repeat(filled) + &".".repeat(10 - filled);
                write!(f, "{bar} {elapsed}/{interval}")
            }
        }
    }
}

/// One path (one SCSI device) as the daemon sees it. The strings many paths have in common
/// (vendor, WWID, checker, port names) are shared, not copied per path: a snapshot holds every
/// path twice (in its map and in the path list) and is rebuilt under the engine lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathView {
    /// SCSI address.
    pub hctl: Hctl,
    /// Kernel name, e.g. `sda`.
    pub dev: String,
    /// Block device number, e.g. `8:0`.
    pub devno: DevNo,
    /// State of the path in the kernel's table.
    pub dm_state: PathDmState,
    /// SCSI device state from sysfs.
    pub dev_state: DevState,
    /// The checker's last verdict.
    pub chk_state: CheckerState,
    /// Checker name (`tur`, `directio`, ...).
    pub checker: Arc<str>,
    /// Priority from the prioritizer (ALUA: 50 optimized, 10 non-optimized, ...).
    pub priority: i32,
    /// WWID (the same string multipath-tools uses, e.g. `ID_SERIAL`).
    pub wwid: Arc<str>,
    /// SCSI vendor and product, trailing blanks trimmed.
    pub vendor: Arc<str>,
    pub product: Arc<str>,
    /// SCSI revision.
    pub revision: Arc<str>,
    /// Size in 512-byte sectors.
    pub size_sectors: u64,
    /// FC initiator / target names (`0x...`); None when not Fibre Channel.
    pub host_wwnn: Option<Arc<str>>,
    pub host_wwpn: Option<Arc<str>>,
    pub target_wwnn: Option<Arc<str>>,
    pub target_wwpn: Option<Arc<str>>,
    /// HBA address (PCI address for FC, IP address for iSCSI); None when unknown.
    pub host_adapter: Option<Arc<str>>,
    /// Whether the path is marked marginal.
    pub marginal: bool,
    /// How often the path has failed since the daemon started.
    pub fail_count: u32,
    /// Checker schedule.
    pub next_check: NextCheck,
}

/// One priority group of a map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupView {
    /// 1-based group number, as `switchgroup` takes it.
    pub number: u32,
    /// Path selector with its arguments as in the table, e.g. `service-time 0`.
    pub selector: String,
    /// Group priority.
    pub priority: i32,
    /// Kernel state of the group.
    pub dm_state: GroupDmState,
    /// Whether this group holds marginal paths.
    pub marginal: bool,
    pub paths: Vec<PathView>,
}

/// Counters multipathd keeps per map (`show maps stats` and JSON).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapStats {
    pub path_faults: u32,
    pub switch_group: u32,
    pub map_loads: u32,
    pub total_queueing_time: u32,
    pub queueing_timeouts: u32,
}

/// One multipath map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapView {
    /// Map name (the alias, or the WWID when there is none).
    pub name: String,
    /// WWID of the LUN.
    pub wwid: String,
    /// Device-mapper UUID (`mpath-<wwid>`).
    pub uuid: String,
    /// Kernel name of the map (`dm-0`); None while it does not exist yet.
    pub dm_dev: Option<String>,
    /// Device number of the map; None while it does not exist yet.
    pub devno: Option<DevNo>,
    /// Size in 512-byte sectors.
    pub size_sectors: u64,
    /// SCSI vendor, product and revision of the LUN, trailing blanks trimmed.
    pub vendor: String,
    pub product: String,
    pub revision: String,
    /// Features as in the table, e.g. `0` or `1 queue_if_no_path`.
    pub features: String,
    /// Hardware handler as in the table, e.g. `0` or `1 alua`.
    pub hwhandler: String,
    pub write_protect: WriteProtect,
    pub dm_state: MapDmState,
    pub queueing: Queueing,
    pub failback: Failback,
    /// What is about to happen to the map, if anything.
    pub action: Option<MapAction>,
    pub stats: MapStats,
    pub groups: Vec<GroupView>,
}

impl MapView {
    /// All paths of all groups, in group order.
    pub fn paths(&self) -> impl Iterator<Item = &PathView> {
        self.groups.iter().flat_map(|g| g.paths.iter())
    }

    /// Number of paths in the map.
    pub fn path_count(&self) -> usize {
        self.groups.iter().map(|g| g.paths.len()).sum()
    }

    /// Number of paths the kernel can use (dm state active, checker not faulty).
    pub fn usable_path_count(&self) -> usize {
        self.paths()
            .filter(|p| {
                p.dm_state != PathDmState::Failed
                    && !matches!(p.chk_state, CheckerState::Faulty | CheckerState::Shaky)
            })
            .count()
    }
}

/// How many paths the checker last saw in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckerStats {
    pub ready: u32,
    pub faulty: u32,
    pub shaky: u32,
    pub ghost: u32,
    pub pending: u32,
    pub other: u32,
}

impl CheckerStats {
    /// Count the checker states of these paths.
    pub fn from_paths<'a>(paths: impl IntoIterator<Item = &'a PathView>) -> Self {
        let mut s = Self::default();
        for p in paths {
            match p.chk_state {
                CheckerState::Ready => s.ready += 1,
                CheckerState::Faulty => s.faulty += 1,
                CheckerState::Shaky => s.shaky += 1,
                CheckerState::Ghost => s.ghost += 1,
                CheckerState::Pending => s.pending += 1,
                _ => s.other += 1,
            }
        }
        s
    }
}

/// What `show status` reports about the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStatus {
    /// multipathd-rs version.
    pub version: String,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    pub path_count: u32,
    pub map_count: u32,
    pub checker: CheckerStats,
    /// Whether the daemon is in the middle of a reconfigure or rescan.
    pub busy: bool,
    /// The checker pool: submitted, refused, timed out and late checks since start.
    #[serde(default)]
    pub checks: crate::checker::runner::RunnerStats,
    /// The sweep thread (SCSI state reads, direct fails).
    #[serde(default)]
    pub sweep: crate::sweep::SweepStats,
    /// Devices an event could not use yet, waiting to be read again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rereads: Vec<Reread>,
}

/// A device waiting to be read again (see `show status`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Reread {
    pub dev: String,
    /// The re-read it waits for (1 = the first).
    pub attempt: u32,
    /// Why the last read could not use it.
    pub why: String,
}

/// Everything the read-only commands show, captured at one moment. The composition layer
/// builds one under its lock and hands it to [`crate::socket::answer_read`], so a `show`
/// never sees a half-applied change.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// Maps in display order.
    pub maps: Vec<MapView>,
    /// Every path the daemon knows, map members and orphans alike, in display order.
    pub paths: Vec<PathView>,
    pub status: Option<DaemonStatus>,
}

impl Snapshot {
    /// Find a map the way multipathd's `$map` argument does: by name, WWID, or `dm-N`.
    pub fn find_map(&self, key: &str) -> Option<&MapView> {
        self.maps.iter().find(|m| m.name == key).or_else(|| {
            self.maps
                .iter()
                .find(|m| m.wwid == key || m.dm_dev.as_deref() == Some(key))
        })
    }
}
