//! The real device-mapper, through ioctls on `/dev/mapper/control` (the `devicemapper` crate).
//!
//! Thin on purpose: every method is one or two ioctls plus error mapping. `/dev/mapper/<name>`
//! is guaranteed after create, at once: the backend links it to devtmpfs' `/dev/dm-<minor>` as
//! udev's rules would (udevd replaces the link later), and removes it with the map. Without
//! devtmpfs it waits up to [`NODE_WAIT`] for udevd, then makes the block node itself.
//! This module cannot be exercised on a host without device-mapper; it is tested by the lab VM
//! scenario (tests/lab).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use devicemapper::{DM, DevId, DeviceInfo, DmError, DmFlags, DmName, DmOptions, DmUuid};
use nix::errno::Errno;

use crate::backend::{DmBackend, MapInfo, RemoveMode, Removed, SuspendFlags};
use crate::devno::DevNo;
use crate::error::{Error, Result};
use crate::events::{EventNumbers, EventSource};
use crate::message::Message;
use crate::table::MultipathTable;

/// Without devtmpfs: how long to wait for udevd to create `/dev/mapper/<name>` before making
/// the block node ourselves.
pub const NODE_WAIT: Duration = Duration::from_secs(3);

/// Operations on different maps the kernel backend runs at once ([`DmBackend::concurrency`]).
/// Each one is mostly a thread blocked on its udev cookie (no CPU, a few KiB): at 16, lab 91's
/// cold start of 64 maps under emulation came in waves of 16 that each waited for udevd
/// (28 s from the first map to the last), although the ioctls of all 64 take under a second.
/// With every map of a cold start in flight at once they all exist at once, and udevd works
/// through their events while the daemon waits for all of them together.
pub const KERNEL_CONCURRENCY: usize = 256;

/// How long a reload watches for its new table to go live (to send its messages early), and
/// how often it looks; past the watch the messages wait for the resume to return.
const SWAP_WATCH: Duration = Duration::from_secs(10);
const SWAP_POLL: Duration = Duration::from_millis(2);
/// A resume slower than this is logged with when its messages went out.
const SLOW_RESUME: Duration = Duration::from_secs(1);

/// The first dm ioctl interface with `DM_DEV_ARM_POLL` and with event numbers in
/// `DM_LIST_DEVICES` (Linux 4.13).
pub const EVENTS_MIN_VERSION: (u32, u32) = (4, 37);

/// Every map's event number from one `DM_LIST_DEVICES`: since dm ioctl 4.37 the kernel's
/// `list_devices` (drivers/md/dm-ioctl.c) writes each map's `dm_get_event_nr` after its name,
/// aligned to 8 bytes (`struct dm_name_list` in include/uapi/linux/dm-ioctl.h); the
/// `devicemapper` crate parses it. An older kernel gives none: then one info per map.
fn list_event_numbers(dm: &DM) -> Result<EventNumbers> {
    let devs = dm.list_devices().map_err(|e| Error::Ioctl {
        op: "list devices",
        map: "*".into(),
        cause: e,
    })?;
    let mut out = EventNumbers::new();
    for (name, _, nr) in devs {
        let name = name.to_string();
        let nr = match nr {
            Some(nr) => nr,
            None => match dm.device_info(&DevId::Name(dm_name(&name)?)) {
                Ok(i) => i.event_nr(),
                // removed between the list and the info
                Err(e) if errno_of(&e) == Some(Errno::ENXIO) => continue,
                Err(e) => {
                    return Err(Error::Ioctl {
                        op: "info",
                        map: name,
                        cause: e,
                    });
                }
            },
        };
        out.insert(name, nr);
    }
    Ok(out)
}

/// The kernel's event source: a control file of its own (the arming is per open file:
/// `struct dm_file` in drivers/md/dm-ioctl.c keeps the global event number it was armed at).
pub struct KernelEvents {
    dm: DM,
}

impl KernelEvents {
    /// Opens `/dev/mapper/control` and checks that the dm ioctl interface can wait for
    /// events ([`EVENTS_MIN_VERSION`]).
    pub fn open() -> Result<KernelEvents> {
        let dm = DM::new().map_err(|source| Error::Control { cause: source })?;
        let (major, minor, patch) = dm.version().map_err(|e| Error::Ioctl {
            op: "version",
            map: "*".into(),
            cause: e,
        })?;
        if (major, minor) < EVENTS_MIN_VERSION {
            return Err(Error::EventsUnsupported {
                reason: format!(
                    "the dm ioctl interface is {major}.{minor}.{patch}; arm-poll and event numbers in the device list need {}.{}",
                    EVENTS_MIN_VERSION.0, EVENTS_MIN_VERSION.1
                ),
            });
        }
        Ok(KernelEvents { dm })
    }
}

impl EventSource for KernelEvents {
    fn arm(&mut self) -> Result<()> {
        self.dm.arm_poll().map_err(|e| Error::Ioctl {
            op: "arm poll",
            map: "*".into(),
            cause: e,
        })?;
        Ok(())
    }

    fn event_numbers(&mut self) -> Result<EventNumbers> {
        list_event_numbers(&self.dm)
    }

    fn wait(&mut self, timeout: Duration) -> Result<bool> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // poll's timeout is an i32 of milliseconds: wait in slices of at most a minute
            let ms = PollTimeout::try_from(left.min(Duration::from_secs(60)))
                .unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(self.dm.file().as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, ms) {
                Ok(n) if n > 0 => return Ok(true),
                Ok(_) => {}
                // a signal: let the caller look (a spurious wake costs one listing)
                Err(Errno::EINTR) => return Ok(true),
                Err(e) => {
                    return Err(Error::Io {
                        action: "polling",
                        path: PathBuf::from("/dev/mapper/control"),
                        cause: e.into(),
                    });
                }
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
        }
    }
}

/// The kernel backend.
pub struct KernelBackend {
    dm: DM,
    mapper_dir: PathBuf,
}

impl std::fmt::Debug for KernelBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KernelBackend({})", self.mapper_dir.display())
    }
}

fn errno_of(e: &DmError) -> Option<Errno> {
    match e {
        DmError::Core(devicemapper::errors::Error::Ioctl(_, _, _, errno)) => Some(**errno),
        _ => None,
    }
}

fn dm_name(name: &str) -> Result<&DmName> {
    DmName::new(name).map_err(|_| Error::InvalidValue {
        value: name.to_string(),
        expected: "a device-mapper map name".into(),
    })
}

/// N when `path` is a symlink to `.../dm-N` (the link udev's rules make, and ours).
fn dm_link_minor(path: &Path) -> Option<u32> {
    let target = std::fs::read_link(path).ok()?;
    target
        .file_name()?
        .to_str()?
        .strip_prefix("dm-")?
        .parse()
        .ok()
}

/// device-mapper's block major from /proc/devices.
fn dm_block_major() -> Option<u32> {
    let text = std::fs::read_to_string("/proc/devices").ok()?;
    let block = text.split("Block devices:").nth(1)?;
    block.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        let major = w.next()?.parse().ok()?;
        (w.next()? == "device-mapper").then_some(major)
    })
}

/// Whether udevd runs (it owns its control socket).
pub fn udev_running() -> bool {
    Path::new("/run/udev/control").exists()
}

/// The ioctl flags of a suspend kind ([`SuspendFlags`]).
fn suspend_dm_flags(f: SuspendFlags) -> DmFlags {
    let mut flags = DmFlags::empty();
    if f.noflush {
        flags |= DmFlags::DM_NOFLUSH;
    }
    if f.skip_lockfs {
        flags |= DmFlags::DM_SKIP_LOCKFS;
    }
    flags
}

fn map_info(name: &str, i: &DeviceInfo) -> MapInfo {
    let dev = i.device();
    MapInfo {
        name: i.name().map_or_else(|| name.to_string(), |n| n.to_string()),
        uuid: i.uuid().map(|u| u.to_string()).filter(|u| !u.is_empty()),
        devno: DevNo::new(dev.major, dev.minor),
        open_count: u32::try_from(i.open_count()).unwrap_or(0),
        event_nr: i.event_nr(),
        suspended: i.flags().contains(DmFlags::DM_SUSPEND),
    }
}

impl KernelBackend {
    /// Opens `/dev/mapper/control`.
    pub fn new() -> Result<Self> {
        Ok(KernelBackend {
            dm: DM::new().map_err(|source| Error::Control { cause: source })?,
            mapper_dir: PathBuf::from("/dev/mapper"),
        })
    }

    fn ioctl_err(&self, op: &'static str, map: &str, source: DmError) -> Error {
        match errno_of(&source) {
            Some(Errno::ENXIO) => Error::NoSuchMap {
                name: map.to_string(),
            },
            _ => Error::Ioctl {
                op,
                map: map.to_string(),
                cause: source,
            },
        }
    }

    fn node_path(&self, name: &str) -> PathBuf {
        self.mapper_dir.join(name)
    }

    /// `/dev/dm-<minor>`, the node devtmpfs makes for every map the moment it exists.
    fn kernel_node(&self, devno: DevNo) -> Option<PathBuf> {
        Some(
            self.mapper_dir
                .parent()?
                .join(format!("dm-{}", devno.minor)),
        )
    }

    /// Whether `path` is the block node of `devno`.
    fn is_block_node_of(path: &Path, devno: DevNo) -> bool {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        std::fs::metadata(path)
            .is_ok_and(|m| m.file_type().is_block_device() && m.rdev() == devno.to_dev_t())
    }

    /// Makes sure `/dev/mapper/<name>` exists, at once. With devtmpfs (every current host)
    /// it becomes the symlink `../dm-<minor>`, exactly what udev's device-mapper rules make,
    /// so udevd just replaces it when it gets to the map's event (it refuses to replace a block
    /// node: "conflicting inode"), and nothing waits for a udevd that may be busy with a
    /// queue of new SCSI disks. Without devtmpfs: waits for udevd if it runs, then creates
    /// the block node (mode 0600).
    fn ensure_node(&self, name: &str, devno: DevNo) -> Result<()> {
        let path = self.node_path(name);
        if path.symlink_metadata().is_ok() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.mapper_dir).map_err(|source| Error::Io {
            action: "creating",
            path: self.mapper_dir.clone(),
            cause: source,
        })?;
        if let Some(node) = self.kernel_node(devno)
            && Self::is_block_node_of(&node, devno)
        {
            let target = Path::new("..").join(node.file_name().unwrap_or_default());
            return match std::os::unix::fs::symlink(&target, &path) {
                Ok(()) => {
                    tracing::debug!(
                        map = name,
                        "linked {} -> {}",
                        path.display(),
                        target.display()
                    );
                    Ok(())
                }
                // udevd was quicker
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                Err(source) => Err(Error::Io {
                    action: "creating the symlink",
                    path,
                    cause: source,
                }),
            };
        }
        if udev_running() {
            let deadline = Instant::now() + NODE_WAIT;
            while Instant::now() < deadline {
                if path.symlink_metadata().is_ok() {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            tracing::warn!(
                map = name,
                "udevd did not create {} in time; creating it",
                path.display()
            );
        }
        if path.symlink_metadata().is_ok() {
            return Ok(());
        }
        nix::sys::stat::mknod(
            &path,
            nix::sys::stat::SFlag::S_IFBLK,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            devno.to_dev_t(),
        )
        .map_err(|e| Error::Io {
            action: "creating the device node",
            path: path.clone(),
            cause: e.into(),
        })?;
        tracing::info!(map = name, "created {} ({devno})", path.display());
        Ok(())
    }

    /// Removes `/dev/mapper/<name>` at once when it is still the map's: its block node, a
    /// symlink to its `dm-<minor>` (ours or udev's: udevd's own removal then finds it gone,
    /// which it accepts), or a dangling symlink. Anything else there is left alone.
    fn remove_node(&self, name: &str, devno: DevNo) {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let path = self.node_path(name);
        let Ok(meta) = path.symlink_metadata() else {
            return;
        };
        let ours = if meta.file_type().is_symlink() {
            dm_link_minor(&path) == Some(devno.minor) || std::fs::metadata(&path).is_err()
        } else {
            meta.file_type().is_block_device() && meta.rdev() == devno.to_dev_t()
        };
        if !ours {
            return;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(map = name, "cannot remove {}: {e}", path.display()),
        }
    }

    /// Without udevd nobody removes `/dev/mapper/<name>` when the kernel completes a deferred
    /// remove (or another tool removes a map). Removes block nodes in /dev/mapper whose device
    /// number belongs to device-mapper but to no live map, and `-> ../dm-N` links that dangle. Does nothing while udevd runs (udev
    /// owns the nodes then). Returns the paths removed.
    pub fn sweep_stale_nodes(&self) -> Result<Vec<PathBuf>> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        if udev_running() {
            return Ok(Vec::new());
        }
        let Some(major) = dm_block_major() else {
            return Ok(Vec::new());
        };
        let live: std::collections::HashSet<u64> =
            self.list()?.iter().map(|m| m.devno.to_dev_t()).collect();
        let mut removed = Vec::new();
        let Ok(rd) = std::fs::read_dir(&self.mapper_dir) else {
            return Ok(removed);
        };
        for e in rd.flatten() {
            let Ok(meta) = e.path().symlink_metadata() else {
                continue;
            };
            if meta.file_type().is_symlink() {
                // our `-> ../dm-N` link of a map that is gone now
                if dm_link_minor(&e.path()).is_some()
                    && std::fs::metadata(e.path()).is_err()
                    && std::fs::remove_file(e.path()).is_ok()
                {
                    tracing::info!("removed stale symlink {}", e.path().display());
                    removed.push(e.path());
                }
                continue;
            }
            if !meta.file_type().is_block_device() {
                continue;
            }
            let dev = DevNo::from_dev_t(meta.rdev());
            if dev.major != major || live.contains(&meta.rdev()) {
                continue;
            }
            // a map created since the list above: keep its node
            if let Some(n) = e.file_name().to_str()
                && self.info(n).is_ok_and(|i| i.devno == dev)
            {
                continue;
            }
            if std::fs::remove_file(e.path()).is_ok() {
                tracing::info!("removed stale device node {} ({dev})", e.path().display());
                removed.push(e.path());
            }
        }
        Ok(removed)
    }

    fn load(&self, name: &str, table: &MultipathTable, then: &[Message]) -> Result<()> {
        let id = DevId::Name(dm_name(name)?);
        let targets = [(
            table.start,
            table.length,
            "multipath".to_string(),
            table.params(),
        )];
        self.dm
            .table_load(&id, &targets, DmOptions::default())
            .map_err(|e| self.ioctl_err("table load", name, e))?;
        // The resume swaps the tables and suspends the map first. Without DM_NOFLUSH that
        // suspend flushes, dm-mpath's presuspend switches queue_if_no_path off for it, and a
        // map with no usable path fails all its queued I/O (a guest sees EIO on a path
        // re-add, a dev_loss_tmo removal, a SIGHUP). multipath-tools resumes the same way.
        let resume = || {
            self.dm
                .device_suspend(
                    &id,
                    DmOptions::default().set_flags(suspend_dm_flags(SuspendFlags::RELOAD)),
                )
                .map(|_| ())
                .map_err(|e| self.ioctl_err("resume", name, e))
        };
        if then.is_empty() {
            return resume();
        }
        // The resume ioctl swaps the tables at once but then waits (udev cookie) until udevd
        // has run its rules for the map, seconds on a busy host, and the new table starts with
        // every path active. So the messages go out from here as soon as the new table is
        // live, while the resume still waits, and once more after it (a second fail_path of a
        // failed path changes nothing): the first send is early, the second is the one that
        // counts.
        let start = Instant::now();
        let early = std::thread::scope(|scope| {
            let waiting = scope.spawn(resume);
            let deadline = start + SWAP_WATCH;
            let mut early = None;
            while !waiting.is_finished() && Instant::now() < deadline {
                if self.live_table_is(name, table)
                    && then.iter().all(|m| self.message(name, m).is_ok())
                {
                    early = Some(start.elapsed());
                    break;
                }
                std::thread::sleep(SWAP_POLL);
            }
            // a panic in the resume's thread is a bug: it goes on here
            waiting
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
                .map(|()| early)
        })?;
        let waited = start.elapsed();
        match early {
            Some(t) if waited > SLOW_RESUME => tracing::info!(
                map = name,
                "the resume waited {:.1} s for udevd; its {} message(s) went out after {} ms",
                waited.as_secs_f64(),
                then.len(),
                t.as_millis()
            ),
            _ => tracing::debug!(map = name, ?early, ?waited, "resume with messages"),
        }
        then.iter().try_for_each(|m| self.message(name, m))
    }

    /// Whether the map's live table is `table` (the resume has swapped it in).
    fn live_table_is(&self, name: &str, table: &MultipathTable) -> bool {
        self.table(name)
            .ok()
            .and_then(|live| crate::plan::plan(name, &live, None, table).ok())
            .is_some_and(|p| !p.needs_reload)
    }

    fn lines(&self, name: &str, flags: DmFlags, op: &'static str) -> Result<String> {
        let id = DevId::Name(dm_name(name)?);
        let (_, targets) = self
            .dm
            .table_status(&id, DmOptions::default().set_flags(flags))
            .map_err(|e| self.ioctl_err(op, name, e))?;
        Ok(targets
            .iter()
            .map(|(start, len, kind, params)| format!("{start} {len} {kind} {}", params.trim_end()))
            .collect::<Vec<_>>()
            .join("\n"))
    }
}

impl DmBackend for KernelBackend {
    fn list(&self) -> Result<Vec<MapInfo>> {
        let devs = self
            .dm
            .list_devices()
            .map_err(|e| self.ioctl_err("list devices", "*", e))?;
        let mut out = Vec::with_capacity(devs.len());
        for (name, _, _) in devs {
            match self.info(&name.to_string()) {
                Ok(i) => out.push(i),
                // removed between the list and the info
                Err(Error::NoSuchMap { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn info(&self, name: &str) -> Result<MapInfo> {
        let id = DevId::Name(dm_name(name)?);
        let i = self
            .dm
            .device_info(&id)
            .map_err(|e| self.ioctl_err("info", name, e))?;
        Ok(map_info(name, &i))
    }

    fn create(&self, name: &str, uuid: &str, table: &MultipathTable) -> Result<MapInfo> {
        self.create_then(name, uuid, table, &[])
    }

    fn create_then(
        &self,
        name: &str,
        uuid: &str,
        table: &MultipathTable,
        then: &[Message],
    ) -> Result<MapInfo> {
        table.validate(name)?;
        let dmname = dm_name(name)?;
        self.sweep_stale_nodes()?;
        let dmuuid = if uuid.is_empty() {
            None
        } else {
            Some(DmUuid::new(uuid).map_err(|_| Error::InvalidValue {
                value: uuid.to_string(),
                expected: "a device-mapper uuid".into(),
            })?)
        };
        if let Err(e) = self.dm.device_create(dmname, dmuuid, DmOptions::default()) {
            if errno_of(&e) == Some(Errno::EBUSY) {
                if self.info(name).is_ok() {
                    return Err(Error::MapExists {
                        name: name.to_string(),
                    });
                }
                if let Some(other) = self
                    .list()?
                    .into_iter()
                    .find(|m| m.uuid.as_deref() == Some(uuid))
                {
                    return Err(Error::UuidInUse {
                        uuid: uuid.to_string(),
                        name: other.name,
                    });
                }
            }
            return Err(self.ioctl_err("create", name, e));
        }
        if let Err(e) = self.load(name, table, then) {
            // leave nothing half made behind
            if let Err(re) = self
                .dm
                .device_remove(&DevId::Name(dmname), DmOptions::default())
            {
                tracing::warn!(map = name, "cannot remove the half-created map: {re}");
            }
            return Err(e);
        }
        let info = self.info(name)?;
        self.ensure_node(name, info.devno)?;
        Ok(info)
    }

    fn reload(&self, name: &str, table: &MultipathTable) -> Result<()> {
        table.validate(name)?;
        self.load(name, table, &[])
    }

    fn reload_then(&self, name: &str, table: &MultipathTable, then: &[Message]) -> Result<()> {
        table.validate(name)?;
        self.load(name, table, then)
    }

    fn table_line(&self, name: &str) -> Result<String> {
        self.lines(name, DmFlags::DM_STATUS_TABLE, "table")
    }

    fn status_line(&self, name: &str) -> Result<String> {
        self.lines(name, DmFlags::empty(), "status")
    }

    fn message(&self, name: &str, msg: &Message) -> Result<()> {
        let id = DevId::Name(dm_name(name)?);
        let text = msg.to_string();
        match self.dm.target_msg(&id, None, &text) {
            Ok(_) => Ok(()),
            Err(e) => match errno_of(&e) {
                Some(Errno::ENXIO) => Err(Error::NoSuchMap {
                    name: name.to_string(),
                }),
                Some(errno @ (Errno::EINVAL | Errno::EBUSY)) => Err(Error::MessageRefused {
                    map: name.to_string(),
                    message: text,
                    reason: errno.to_string(),
                }),
                _ => Err(Error::Ioctl {
                    op: "target message",
                    map: name.to_string(),
                    cause: e,
                }),
            },
        }
    }

    fn rename(&self, old: &str, new: &str) -> Result<()> {
        let info = self.info(old)?;
        let newname = dm_name(new)?;
        if let Err(e) = self.dm.device_rename(dm_name(old)?, &DevId::Name(newname)) {
            if errno_of(&e) == Some(Errno::EBUSY) {
                return Err(Error::MapExists {
                    name: new.to_string(),
                });
            }
            return Err(self.ioctl_err("rename", old, e));
        }
        self.remove_node(old, info.devno);
        self.ensure_node(new, info.devno)
    }

    fn remove(&self, name: &str, mode: RemoveMode) -> Result<Removed> {
        self.sweep_stale_nodes()?;
        let info = self.info(name)?;
        if info.open_count > 0 && mode == RemoveMode::Now {
            return Err(Error::MapOpen {
                name: name.to_string(),
                open_count: info.open_count,
            });
        }
        let id = DevId::Name(dm_name(name)?);
        let opts = match mode {
            RemoveMode::Now => DmOptions::default(),
            RemoveMode::Deferred => DmOptions::default().set_flags(DmFlags::DM_DEFERRED_REMOVE),
        };
        if let Err(e) = self.dm.device_remove(&id, opts) {
            if errno_of(&e) == Some(Errno::EBUSY) {
                let open_count = self.info(name).map_or(info.open_count, |i| i.open_count);
                return Err(Error::MapOpen {
                    name: name.to_string(),
                    open_count,
                });
            }
            return Err(self.ioctl_err("remove", name, e));
        }
        match self.info(name) {
            Ok(_) => Ok(Removed::Deferred),
            Err(Error::NoSuchMap { .. }) => {
                self.remove_node(name, info.devno);
                Ok(Removed::Removed)
            }
            Err(e) => Err(e),
        }
    }

    /// Each resume, rename and remove waits (udev cookie) until udevd has processed the map's
    /// event, and udevd may be busy with a queue of new SCSI disks for seconds: done one map
    /// at a time those waits add up. The ioctls themselves are independent per map.
    fn concurrency(&self) -> usize {
        KERNEL_CONCURRENCY
    }

    fn event_numbers(&self) -> Result<EventNumbers> {
        list_event_numbers(&self.dm)
    }

    fn event_source(&self) -> Result<Box<dyn EventSource>> {
        Ok(Box::new(KernelEvents::open()?))
    }

    fn wait_event(&self, name: &str, last_event_nr: u32, timeout: Duration) -> Result<Option<u32>> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        // A private control fd: arm_poll state is per open file.
        let dm = DM::new().map_err(|source| Error::Control { cause: source })?;
        let deadline = Instant::now() + timeout;
        loop {
            dm.arm_poll()
                .map_err(|e| self.ioctl_err("arm poll", name, e))?;
            // check after arming so an event between the check and the poll is not lost
            let nr = self.info(name)?.event_nr;
            if nr != last_event_nr {
                return Ok(Some(nr));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let ms = PollTimeout::try_from(left.min(Duration::from_secs(60)))
                .unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(dm.file().as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, ms) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    return Err(Error::Io {
                        action: "polling",
                        path: PathBuf::from("/dev/mapper/control"),
                        cause: e.into(),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_resumes_without_flush_and_without_fs_lock() {
        let f = suspend_dm_flags(SuspendFlags::RELOAD);
        assert!(f.contains(DmFlags::DM_NOFLUSH), "{f:?}");
        assert!(f.contains(DmFlags::DM_SKIP_LOCKFS), "{f:?}");
        assert!(
            !f.contains(DmFlags::DM_SUSPEND),
            "a resume, not a suspend: {f:?}"
        );
        assert_eq!(suspend_dm_flags(SuspendFlags::FLUSH), DmFlags::empty());
    }

    #[test]
    fn dm_link_minor_reads_only_links_to_dm_nodes() {
        let d = tempfile::tempdir().unwrap();
        let link = |name: &str, target: &str| {
            let p = d.path().join(name);
            std::os::unix::fs::symlink(target, &p).unwrap();
            p
        };
        assert_eq!(dm_link_minor(&link("a", "../dm-7")), Some(7));
        assert_eq!(dm_link_minor(&link("b", "/dev/dm-12")), Some(12));
        assert_eq!(dm_link_minor(&link("c", "../sda")), None);
        assert_eq!(dm_link_minor(&link("d", "../dm-x")), None);
        let file = d.path().join("e");
        std::fs::write(&file, "").unwrap();
        assert_eq!(dm_link_minor(&file), None);
        assert_eq!(dm_link_minor(&d.path().join("missing")), None);
    }
}
