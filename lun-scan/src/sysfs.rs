//! The sysfs walk. Every function takes the sysfs root as a parameter (`/sys` on a live
//! system, a fixture or snapshot directory in tests).
//!
//! Layout relied upon (as the kernel writes it):
//! - `class/block/<dev>` -> `../../devices/.../hostH/[rport-H:C-R/|sessionN/|port-H:P/end_device-H:P/]targetH:C:T/H:C:T:L/block/<dev>`
//! - `class/scsi_host/hostN`, `class/fc_host/hostN`, `class/iscsi_host/hostN`, `class/sas_host/hostN`
//! - `class/fc_remote_ports/rport-H:C-R`, `class/iscsi_session/sessionN`,
//!   `class/iscsi_connection/connectionN:C`, `class/sas_end_device/end_device-...`,
//!   `class/sas_device/end_device-...`, `class/sas_phy/phy-H:N`
//!
//! Symlinks are resolved lexically (one `readlink` per device, no `canonicalize`), which is
//! exact for sysfs because every component of a device path under `devices/` is a directory.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::fcntl::{AT_FDCWD, OFlag, openat, readlinkat};
use nix::sys::stat::Mode;

use crate::error::Error;
use crate::model::{
    DevNo, FcHost, FcRemotePort, Hctl, Host, Interner, IscsiHost, IscsiSession, SasEndDevice,
    SasHost, Scan, ScsiPath, Shared, Transport, WwidSource,
};
use crate::vpd;

/// Reads a text attribute. `Ok(None)` when the file does not exist.
pub(crate) fn read_opt(path: &Path) -> Result<Option<String>, Error> {
    match fs::read(path) {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).trim().to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::read(path, &e)),
    }
}

/// Reads an optional attribute, recording a read error in `errors`.
fn attr(dir: &Path, name: &str, errors: &mut Vec<Error>) -> Option<String> {
    match read_opt(&dir.join(name)) {
        Ok(v) => v,
        Err(e) => {
            errors.push(e);
            None
        }
    }
}

/// Lexically normalises `base/link_target` (".." pops a component).
pub(crate) fn join_lexical(base: &Path, rel: &Path) -> PathBuf {
    let mut out = if rel.is_absolute() {
        PathBuf::new()
    } else {
        base.to_path_buf()
    };
    for c in rel.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Resolves a class symlink (`root/class/block/sda`) to the device directory it points at.
/// A plain directory (some snapshots) resolves to itself.
pub(crate) fn resolve(link: &Path) -> io::Result<PathBuf> {
    match fs::read_link(link) {
        Ok(t) => Ok(join_lexical(link.parent().unwrap_or(Path::new("")), &t)),
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => Ok(link.to_path_buf()),
        Err(e) => Err(e),
    }
}

/// Lists the entry names of a directory, sorted. `Ok(empty)` when it does not exist.
pub(crate) fn list_dir(dir: &Path) -> Result<Vec<String>, Error> {
    match fs::read_dir(dir) {
        Ok(rd) => {
            let mut v: Vec<String> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            if v.len() > 1 {
                v.sort_by_cached_key(|s| natural_key(s));
            }
            Ok(v)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::read(dir, &e)),
    }
}

type NaturalKey = (usize, String, Vec<u64>, String);

/// True for the read error the kernel gives on `access_state` / `preferred_path` of a SCSI
/// device without a device handler: EINVAL (io::ErrorKind::InvalidInput).
fn no_device_handler(e: &Error) -> bool {
    matches!(e, Error::Read { kind, .. } if *kind == io::ErrorKind::InvalidInput)
}

fn natural_key(s: &str) -> NaturalKey {
    let digits_at = s.find(|c: char| c.is_ascii_digit()).unwrap_or(s.len());
    let (p, n) = s.split_at(digits_at);
    (
        p.len(),
        p.to_string(),
        n.split(|c: char| !c.is_ascii_digit())
            .map(|x| x.parse::<u64>().unwrap_or(0))
            .collect(),
        n.to_string(),
    )
}

/// Orders "host2" before "host10" and "sdz" before "sdaa".
pub(crate) fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    natural_key(a).cmp(&natural_key(b))
}

fn parse_num<T: std::str::FromStr>(
    path: &Path,
    v: Option<String>,
    expected: &'static str,
    errors: &mut Vec<Error>,
) -> Option<T> {
    let v = v?;
    match v.parse() {
        Ok(n) => Some(n),
        Err(_) => {
            errors.push(Error::Parse {
                path: path.to_path_buf(),
                value: v,
                expected,
            });
            None
        }
    }
}

fn host_number(name: &str) -> Option<u32> {
    name.strip_prefix("host")?.parse().ok()
}

/// The PCI address (`0000:00:02.0`) nearest to a host's device directory, as multipath-tools
/// shows for the host adapter; None for hosts not on PCI (scsi_debug, tcm_loop, iSCSI).
fn pci_address(syspath: &Path) -> Option<String> {
    let is_pci = |c: &str| {
        let b = c.as_bytes();
        b.len() == 12
            && b.iter().enumerate().all(|(i, &x)| match i {
                4 | 7 => x == b':',
                10 => x == b'.',
                _ => x.is_ascii_hexdigit(),
            })
    };
    syspath
        .components()
        .rev()
        .filter_map(|c| c.as_os_str().to_str())
        .find(|c| is_pci(c))
        .map(str::to_string)
}

/// A required attribute as a shared string (empty when it cannot be read).
fn shared_req(dd: &AttrDir, ctx: &Context, name: &str, errors: &mut Vec<Error>) -> Shared {
    dd.req_with(name, errors, |v| ctx.names.get(v))
        .unwrap_or_default()
}

/// What a scan reads for each path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanOptions {
    /// `queue_depth`, `preferred_path` and `dh_state`: shown by `lun-scan`, but nothing
    /// multipathd-rs decides (WWID, grouping, priority, checker, hardware table, views) reads
    /// them, and they are 3 of the 11 files opened per path. Without them those fields are
    /// `None` and a broken one is not an error. On by default.
    pub details: bool,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions { details: true }
    }
}

impl ScanOptions {
    /// Everything but the details (see [`ScanOptions::details`]).
    pub const fn without_details() -> Self {
        ScanOptions { details: false }
    }
}

/// What a path needs to know about hosts, remote ports and sessions.
#[derive(Default)]
struct Context {
    opts: ScanOptions,
    host_transport: HashMap<String, Transport>,
    host_wwpn: HashMap<String, Shared>,
    host_wwnn: HashMap<String, Shared>,
    host_adapter: HashMap<String, Shared>,
    rport: HashMap<String, (Option<Shared>, Option<Shared>)>,
    session_target: HashMap<String, Shared>,
    /// One copy of each host, port and session name and each repeated attribute value
    /// (vendor, state, ...) for every path that carries it.
    names: Interner,
}

impl Context {
    fn build(
        hosts: &[Host],
        rports: &[FcRemotePort],
        sessions: &[IscsiSession],
        opts: ScanOptions,
    ) -> Self {
        let mut c = Context {
            opts,
            ..Context::default()
        };
        for h in hosts {
            c.host_transport.insert(h.name.clone(), h.transport);
            if let Some(w) = h.fc.as_ref().and_then(|f| f.port_name.clone()) {
                c.host_wwpn.insert(h.name.clone(), w.into());
            }
            if let Some(w) = h.fc.as_ref().and_then(|f| f.node_name.clone()) {
                c.host_wwnn.insert(h.name.clone(), w.into());
            }
            let adapter = h
                .iscsi
                .as_ref()
                .and_then(|i| i.ipaddress.clone())
                .or_else(|| pci_address(&h.syspath));
            if let Some(a) = adapter {
                c.host_adapter.insert(h.name.clone(), a.into());
            }
        }
        for r in rports {
            c.rport.insert(
                r.name.clone(),
                (
                    r.port_name.as_deref().map(Shared::from),
                    r.node_name.as_deref().map(Shared::from),
                ),
            );
        }
        for s in sessions {
            if let Some(t) = &s.targetname {
                c.session_target.insert(s.name.clone(), t.as_str().into());
            }
        }
        c
    }
}

/// Scans everything: hosts, FC remote ports, iSCSI sessions, SAS end devices and SCSI paths.
/// Never panics and never fails as a whole; see [`Scan`].
pub fn scan(root: &Path) -> Scan {
    scan_with(root, ScanOptions::default())
}

/// [`scan`] reading what `opts` says for each path.
pub fn scan_with(root: &Path, opts: ScanOptions) -> Scan {
    let mut s = Scan::default();
    if let Err(e) = fs::metadata(root) {
        s.errors.push(Error::read(root, &e));
        return s;
    }
    let (hosts, e) = scan_hosts(root);
    s.errors.extend(e);
    let (rports, e) = scan_rports(root);
    s.errors.extend(e);
    let (sessions, e) = scan_sessions(root);
    s.errors.extend(e);
    let (sas, e) = scan_sas_devices(root);
    s.errors.extend(e);
    let ctx = Context::build(&hosts, &rports, &sessions, opts);
    let (paths, e) = scan_paths_with(root, &ctx);
    s.errors.extend(e);
    s.hosts = hosts;
    s.rports = rports;
    s.sessions = sessions;
    s.sas_devices = sas;
    s.paths = paths;
    tracing::debug!(
        root = %root.display(),
        hosts = s.hosts.len(),
        paths = s.paths.len(),
        errors = s.all_errors().len(),
        "scan finished"
    );
    s
}

/// Scans one SCSI block device by name (`"sdb"`), e.g. on a uevent. The path carries its own
/// errors; `Err` only when `dev` is not a SCSI block device in this tree at all.
pub fn scan_path(root: &Path, dev: &str) -> Result<ScsiPath, Error> {
    if dev.is_empty() || dev.contains('/') || dev == "." || dev == ".." {
        return Err(Error::InvalidArgument {
            what: "block device name",
            value: dev.to_string(),
            reason: "it must be a plain name such as sdb".into(),
        });
    }
    scan_path_in(root, dev, &PathContext::read(root))
}

/// The hosts, FC remote ports and iSCSI sessions a path's scan consults (WWPNs, adapters,
/// target names), read once so that scanning many single paths (a burst of uevents) does
/// not re-read every host, port and session for each of them.
#[derive(Default)]
pub struct PathContext(Context);

impl std::fmt::Debug for PathContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PathContext")
            .field("hosts", &self.0.host_transport.len())
            .field("rports", &self.0.rport.len())
            .field("sessions", &self.0.session_target.len())
            .field("opts", &self.0.opts)
            .finish()
    }
}

impl PathContext {
    /// Reads every host, remote port and session under `root`.
    pub fn read(root: &Path) -> Self {
        Self::read_with(root, ScanOptions::default())
    }

    /// [`PathContext::read`], for single-path scans that read what `opts` says.
    pub fn read_with(root: &Path, opts: ScanOptions) -> Self {
        let (hosts, _) = scan_hosts(root);
        let (rports, _) = scan_rports(root);
        let (sessions, _) = scan_sessions(root);
        PathContext(Context::build(&hosts, &rports, &sessions, opts))
    }
}

/// [`scan_path`] with the hosts, ports and sessions already read.
pub fn scan_path_in(root: &Path, dev: &str, ctx: &PathContext) -> Result<ScsiPath, Error> {
    if dev.is_empty() || dev.contains('/') || dev == "." || dev == ".." {
        return Err(Error::InvalidArgument {
            what: "block device name",
            value: dev.to_string(),
            reason: "it must be a plain name such as sdb".into(),
        });
    }
    for class in ["class/block", "block"] {
        let link = root.join(class).join(dev);
        if let Ok(target) = resolve(&link)
            && let Some(p) = scan_block(&target, dev, &ctx.0, None, None)
        {
            return Ok(p);
        }
    }
    Err(Error::NoSuchDevice {
        dev: dev.to_string(),
        root: root.to_path_buf(),
    })
}

/// Lists all SCSI paths.
pub fn scan_paths(root: &Path) -> (Vec<ScsiPath>, Vec<Error>) {
    let (hosts, _) = scan_hosts(root);
    let (rports, _) = scan_rports(root);
    let (sessions, _) = scan_sessions(root);
    scan_paths_with(
        root,
        &Context::build(&hosts, &rports, &sessions, ScanOptions::default()),
    )
}

fn scan_paths_with(root: &Path, ctx: &Context) -> (Vec<ScsiPath>, Vec<Error>) {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    scan_paths_threads(root, ctx, threads)
}

/// [`scan_paths_with`] on `threads` walker threads (the result does not depend on it).
fn scan_paths_threads(root: &Path, ctx: &Context, threads: usize) -> (Vec<ScsiPath>, Vec<Error>) {
    let mut errors = Vec::new();
    let mut class = root.join("class/block");
    let names = match fs::read_dir(&class) {
        Ok(_) => list_dir(&class),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            class = root.join("block");
            if class.is_dir() {
                list_dir(&class)
            } else {
                Err(Error::read(&root.join("class/block"), &e))
            }
        }
        Err(e) => Err(Error::read(&class, &e)),
    }
    .unwrap_or_else(|e| {
        errors.push(e);
        Vec::new()
    });
    // Cheap pre-filter: dm, loop and ram devices never have a SCSI parent, so they are not
    // readlinked (see `is_scsi_candidate`); their `slaves/` are listed for the holders.

    let class_fd = openat(
        AT_FDCWD,
        &class,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok();
    let by_devno = dev_block_links(root, threads);
    // The names are handed out in small chunks from a shared counter instead of one fixed
    // share per thread: on a busy machine a thread that is scheduled out no longer holds back
    // the whole scan while the others sit idle. Results are merged in chunk order, so the
    // output does not depend on which thread read what.
    let chunks: Vec<&[String]> = names.chunks(WALK_CHUNK).collect();
    let next = AtomicUsize::new(0);
    let workers = threads.clamp(1, chunks.len().max(1));
    let mut results: Vec<(usize, WalkPart)> = Vec::with_capacity(chunks.len());
    // Each chunk's paths go straight into the one output (sorted below, so the order they
    // arrive in does not matter): holding every chunk's paths until a merge kept two copies of
    // every path at the scan's peak (+15 MiB at 32,768 paths, found by the scale curve).
    let merged: std::sync::Mutex<Vec<ScsiPath>> =
        std::sync::Mutex::new(Vec::with_capacity(names.len()));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let (class, class_fd, by_devno) = (&class, class_fd.as_ref(), &by_devno);
                let (chunks, next, merged) = (&chunks, &next, &merged);
                s.spawn(move || {
                    let mut done = Vec::new();
                    let mut parent = ParentCache::default();
                    let mut buf = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(part) = chunks.get(i) else {
                            break;
                        };
                        let mut out = WalkPart {
                            paths: std::mem::take(&mut buf),
                            ..WalkPart::default()
                        };
                        for name in *part {
                            walk_one(name, class, class_fd, by_devno, ctx, &mut parent, &mut out);
                        }
                        merged
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .append(&mut out.paths);
                        buf = std::mem::take(&mut out.paths);
                        done.push((i, out));
                    }
                    done
                })
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(r) => results.extend(r),
                Err(_) => errors.push(Error::Read {
                    path: class.clone(),
                    kind: io::ErrorKind::Other,
                    reason: "a scanner thread panicked".into(),
                }),
            }
        }
    });
    results.sort_unstable_by_key(|(i, _)| *i);
    let mut paths = merged
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // holders/ of a disk and slaves/ of its holder are the two ends of one kernel link
    // (bd_link_disk_holder), so each path's holders come from the slaves of the few non-SCSI
    // disks instead of one directory listing per path.
    let mut holders: HashMap<String, Vec<String>> = HashMap::new();
    for (_, part) in results {
        errors.extend(part.errors);
        for (holder, slaves) in part.slaves {
            for slave in slaves {
                holders.entry(slave).or_default().push(holder.clone());
            }
        }
    }
    for p in &mut paths {
        if let Some(mut h) = holders.remove(&p.dev) {
            h.sort_by_cached_key(|s| natural_key(s));
            p.holders = h;
        }
    }
    paths.sort_by(|a, b| {
        a.hctl
            .cmp(&b.hctl)
            .then_with(|| natural_cmp(&a.dev, &b.dev))
    });
    (paths, errors)
}

/// Names handed to a walker thread at a time (see [`scan_paths_with`]).
const WALK_CHUNK: usize = 128;

/// Reads one `class/block` entry into `out`: a SCSI path, a holder's `slaves/`, or an error.
fn walk_one(
    name: &str,
    class: &Path,
    class_fd: Option<&OwnedFd>,
    by_devno: &HashMap<String, (DevNo, PathBuf)>,
    ctx: &Context,
    parent: &mut ParentCache,
    out: &mut WalkPart,
) {
    if !is_scsi_candidate(name) {
        // dm, loop, ram: never a SCSI disk, but possibly a holder.
        out.list_slaves(class, name);
        return;
    }
    let link = class.join(name);
    let (target, devno) = match by_devno.get(name) {
        Some((devno, target)) => (Ok(target.clone()), Some(*devno)),
        None => (read_class_link(class, class_fd, name, &link), None),
    };
    match target {
        Ok(target) => match scan_block(&target, name, ctx, Some(parent), devno) {
            Some(p) => out.paths.push(p),
            // A whole disk that is not a SCSI device (md, nvme, ...) may hold SCSI paths;
            // partitions never hold anything.
            None if target.parent().and_then(Path::file_name)
                == Some(std::ffi::OsStr::new("block")) =>
            {
                out.dangling(&link, &target);
                out.list_slaves(class, name)
            }
            None => out.dangling(&link, &target),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Removed between readdir and readlink: not a path any more.
        }
        Err(e) => out.errors.push(Error::read(&link, &e)),
    }
}

/// Resolves `class/NAME` through the class directory's descriptor when there is one.
fn read_class_link(
    class: &Path,
    class_fd: Option<&OwnedFd>,
    name: &str,
    link: &Path,
) -> io::Result<PathBuf> {
    match class_fd {
        Some(fd) => match readlinkat(fd, name) {
            Ok(t) => Ok(join_lexical(class, Path::new(&t))),
            Err(nix::errno::Errno::EINVAL) => Ok(link.to_path_buf()),
            Err(e) => Err(io::Error::from(e)),
        },
        None => resolve(link),
    }
}

/// `dev/block/MAJ:MIN` -> `../../devices/.../block/NAME`: one readlink gives both the device
/// directory and the device number, which saves reading `block/NAME/dev` (open, read, close)
/// for every path. Keyed by NAME. Best effort: a name missing here (no `dev/block` in the
/// tree, an unreadable link) is resolved through its class link and `dev` attribute instead.
/// loop (7) and ram (1) devices are not SCSI disks and are skipped.
fn dev_block_links(root: &Path, threads: usize) -> HashMap<String, (DevNo, PathBuf)> {
    let dir = root.join("dev/block");
    let Ok(fd) = open_path_dir(&dir) else {
        return HashMap::new();
    };
    let Ok(rd) = fs::read_dir(&dir) else {
        return HashMap::new();
    };
    let entries: Vec<(String, DevNo)> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let devno: DevNo = name.parse().ok()?;
            (devno.major != 1 && devno.major != 7).then_some((name, devno))
        })
        .collect();
    let chunk = entries.len().div_ceil(threads).max(256);
    let mut map = HashMap::with_capacity(entries.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = entries
            .chunks(chunk)
            .map(|part| {
                let (dir, fd) = (&dir, &fd);
                s.spawn(move || {
                    let mut out = Vec::with_capacity(part.len());
                    for (name, devno) in part {
                        let Ok(t) = readlinkat(fd, name.as_str()) else {
                            continue;
                        };
                        let target = join_lexical(dir, Path::new(&t));
                        if let Some(dev) = target.file_name().and_then(|n| n.to_str())
                            && is_scsi_candidate(dev)
                        {
                            out.push((dev.to_string(), (*devno, target.clone())));
                        }
                    }
                    out
                })
            })
            .collect();
        for h in handles {
            if let Ok(part) = h.join() {
                map.extend(part);
            }
        }
    });
    map
}

/// Names that can never be SCSI disks (skipped without a readlink).
fn is_scsi_candidate(name: &str) -> bool {
    !name.starts_with("dm-") && !name.starts_with("loop") && !name.starts_with("ram")
}

/// What one walker thread found.
#[derive(Default)]
struct WalkPart {
    paths: Vec<ScsiPath>,
    errors: Vec<Error>,
    /// (holder, its slaves) for every non-SCSI whole disk.
    slaves: Vec<(String, Vec<String>)>,
}

impl WalkPart {
    /// A class link whose target is not a SCSI device: if the target does not exist while the
    /// link still does, the link dangles, and the device is reported instead of dropped.
    fn dangling(&mut self, link: &Path, target: &Path) {
        let missing =
            matches!(fs::symlink_metadata(target), Err(e) if e.kind() == io::ErrorKind::NotFound);
        if missing && fs::symlink_metadata(link).is_ok() {
            self.errors.push(Error::Read {
                path: link.to_path_buf(),
                kind: io::ErrorKind::NotFound,
                reason: format!(
                    "it is a dangling link to {}, so the device is not scanned",
                    target.display()
                ),
            });
        }
    }

    fn list_slaves(&mut self, class: &Path, name: &str) {
        match list_dir(&class.join(name).join("slaves")) {
            Ok(v) if v.is_empty() => {}
            Ok(v) => self.slaves.push((name.to_string(), v)),
            Err(e) => self.errors.push(e),
        }
    }
}

/// The `O_PATH` descriptor of the last target directory (`.../targetH:C:T`) a walker thread
/// opened a device in: consecutive devices share it, so each device directory is opened with a
/// one-component lookup instead of a walk from the root.
#[derive(Default)]
struct ParentCache {
    dir: PathBuf,
    fd: Option<OwnedFd>,
}

impl ParentCache {
    fn get(&mut self, dir: &Path) -> Option<&OwnedFd> {
        if self.fd.is_none() || self.dir != dir {
            self.fd = open_path_dir(dir).ok();
            self.dir.clear();
            self.dir.push(dir);
        }
        self.fd.as_ref()
    }
}

fn open_path_dir(path: &Path) -> io::Result<OwnedFd> {
    openat(
        AT_FDCWD,
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// Where a SCSI device sits in the device tree, from its directory path.
#[derive(Default, Debug)]
struct Chain {
    host: Option<String>,
    rport: Option<String>,
    session: Option<String>,
    sas: bool,
}

fn chain_of(dev_dir: &Path) -> Chain {
    let mut c = Chain::default();
    for comp in dev_dir.components() {
        let s = comp.as_os_str().to_string_lossy();
        if host_number(&s).is_some() {
            c.host = Some(s.to_string());
        } else if s.starts_with("rport-") {
            c.rport = Some(s.to_string());
        } else if s.starts_with("session") && s[7..].parse::<u32>().is_ok() {
            c.session = Some(s.to_string());
        } else if s.starts_with("end_device-") {
            c.sas = true;
        }
    }
    c
}

/// A directory whose attributes are read relative to an `O_PATH` descriptor, so each read is
/// `openat` + `read` + `close` with a one-component path instead of a full path walk.
struct AttrDir<'a> {
    path: &'a Path,
    fd: OwnedFd,
}

impl<'a> AttrDir<'a> {
    fn open(path: &'a Path) -> io::Result<Self> {
        Ok(AttrDir {
            path,
            fd: open_path_dir(path)?,
        })
    }

    /// Opens `path` relative to its parent's cached descriptor; any failure there falls back
    /// to the full path, so errors are the same as [`AttrDir::open`]'s.
    fn open_cached(path: &'a Path, cache: &mut ParentCache) -> io::Result<Self> {
        if let (Some(parent), Some(name)) = (path.parent(), path.file_name())
            && let Some(pfd) = cache.get(parent)
            && let Ok(fd) = openat(
                pfd,
                name,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
        {
            return Ok(AttrDir { path, fd });
        }
        Self::open(path)
    }

    /// Reads attribute `name` and hands its bytes to `f`; `Ok(None)` when it does not exist.
    /// An attribute that fits in [`ATTR_BUF`] bytes (every text attribute and VPD page the
    /// scan reads, in practice) is read into a stack buffer with no allocation; a longer one
    /// is read on to its end into a vector.
    fn read_with<R>(&self, name: &str, f: impl FnOnce(&[u8]) -> R) -> Result<Option<R>, Error> {
        let err = |e: io::Error| Error::read(&self.path.join(name), &e);
        let fd = match openat(
            &self.fd,
            name,
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(nix::errno::Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(err(io::Error::from(e))),
        };
        let mut file = fs::File::from(fd);
        let mut buf = [0u8; ATTR_BUF];
        let n = file.read(&mut buf).map_err(err)?;
        // A short read is the end (sysfs returns an attribute in one read when it fits).
        if n < buf.len() {
            return Ok(Some(f(&buf[..n])));
        }
        let mut out = buf.to_vec();
        file.read_to_end(&mut out).map_err(err)?;
        Ok(Some(f(&out)))
    }

    /// Reads text attribute `name` and hands it, trimmed, to `f`.
    fn text_with<R>(&self, name: &str, f: impl FnOnce(&str) -> R) -> Result<Option<R>, Error> {
        self.read_with(name, |b| f(String::from_utf8_lossy(b).trim()))
    }

    fn read_text(&self, name: &str) -> Result<Option<String>, Error> {
        self.text_with(name, str::to_string)
    }

    /// An optional attribute: absent is None, a read error is recorded.
    fn opt(&self, name: &str, errors: &mut Vec<Error>) -> Option<String> {
        self.opt_with(name, errors, str::to_string)
    }

    /// [`AttrDir::opt`] handing the trimmed text to `f` instead of copying it.
    fn opt_with<R>(
        &self,
        name: &str,
        errors: &mut Vec<Error>,
        f: impl FnOnce(&str) -> R,
    ) -> Option<R> {
        self.text_with(name, f).unwrap_or_else(|e| {
            errors.push(e);
            None
        })
    }

    /// `access_state` / `preferred_path`: present on every SCSI device, but the kernel answers
    /// EINVAL while no device handler (scsi_dh_alua, ...) is attached, i.e. on a path without
    /// ALUA (scsi_sysfs.c, sdev_show_access_state): that is "none", not a read error.
    fn opt_dh_with<R>(
        &self,
        name: &str,
        errors: &mut Vec<Error>,
        f: impl FnOnce(&str) -> R,
    ) -> Option<R> {
        match self.text_with(name, f) {
            Ok(v) => v,
            Err(e) if no_device_handler(&e) => None,
            Err(e) => {
                errors.push(e);
                None
            }
        }
    }

    /// A number in attribute `name`: absent is None (or an error
    /// when `required`), a value that does not parse is an error naming the file.
    fn num<T: std::str::FromStr>(
        &self,
        name: &str,
        required: bool,
        expected: &'static str,
        errors: &mut Vec<Error>,
    ) -> Option<T> {
        let parsed = if required {
            self.req_with(name, errors, |v| v.parse::<T>().map_err(|_| v.to_string()))
        } else {
            self.opt_with(name, errors, |v| v.parse::<T>().map_err(|_| v.to_string()))
        };
        match parsed? {
            Ok(n) => Some(n),
            Err(value) => {
                errors.push(Error::Parse {
                    path: self.path.join(name),
                    value,
                    expected,
                });
                None
            }
        }
    }

    /// A required attribute: absent is an error too (or `vanished` when the directory itself
    /// is gone).
    fn req(&self, name: &str, errors: &mut Vec<Error>) -> Option<String> {
        self.req_with(name, errors, str::to_string)
    }

    /// [`AttrDir::req`] handing the trimmed text to `f` instead of copying it.
    fn req_with<R>(
        &self,
        name: &str,
        errors: &mut Vec<Error>,
        f: impl FnOnce(&str) -> R,
    ) -> Option<R> {
        match self.text_with(name, f) {
            Ok(Some(v)) => Some(v),
            Ok(None) => {
                if self.path.exists() {
                    errors.push(Error::Read {
                        path: self.path.join(name),
                        kind: io::ErrorKind::NotFound,
                        reason: "No such file or directory (os error 2)".into(),
                    });
                } else {
                    errors.push(Error::Vanished {
                        path: self.path.to_path_buf(),
                    });
                }
                None
            }
            Err(e) => {
                errors.push(e);
                None
            }
        }
    }
}

/// The stack buffer [`AttrDir::read_with`] reads an attribute into (a longer one is read on).
const ATTR_BUF: usize = 512;

/// Reads one SCSI block device whose block directory is `block_dir`
/// (`.../H:C:T:L/block/<dev>`). None if it is not a SCSI block device (a partition, a virtual
/// device).
///
/// With a `cache` of parent descriptors (the full walk), `holders` is left empty for the caller to fill from
/// the holders' `slaves/`; without one (a single device), `holders/` is listed.
fn scan_block(
    block_dir: &Path,
    dev: &str,
    ctx: &Context,
    cache: Option<&mut ParentCache>,
    devno: Option<DevNo>,
) -> Option<ScsiPath> {
    let parent = block_dir.parent()?;
    if parent.file_name()? != "block" {
        return None;
    }
    let dev_dir = parent.parent()?;
    let hctl: Hctl = dev_dir.file_name()?.to_str()?.parse().ok()?;
    let mut p = ScsiPath::new(hctl, dev);
    p.syspath = dev_dir.to_path_buf();
    let chain = chain_of(dev_dir);
    if let Some(h) = &chain.host {
        p.host = ctx.names.get(h);
    }
    p.transport = if chain.rport.is_some() {
        Transport::Fc
    } else if chain.session.is_some() {
        Transport::Iscsi
    } else if chain.sas {
        Transport::Sas
    } else {
        ctx.host_transport
            .get(p.host.as_str())
            .copied()
            .unwrap_or(Transport::Other)
    };
    p.host_wwpn = ctx.host_wwpn.get(p.host.as_str()).cloned();
    p.host_wwnn = ctx.host_wwnn.get(p.host.as_str()).cloned();
    p.host_adapter = ctx.host_adapter.get(p.host.as_str()).cloned();
    if let Some(r) = &chain.rport {
        p.rport = Some(ctx.names.get(r));
        if let Some((wwpn, node)) = ctx.rport.get(r) {
            p.target_wwpn = wwpn.clone();
            p.target_node_name = node.clone();
        }
    }
    if let Some(s) = &chain.session {
        p.iscsi_session = Some(ctx.names.get(s));
        p.target_node_name = ctx.session_target.get(s).cloned();
    }
    let vanished = |p: &mut ScsiPath| {
        p.errors = vec![Error::Vanished {
            path: dev_dir.to_path_buf(),
        }];
    };
    // Block attributes are read relative to the device directory too ("block/sdX/size").
    let bdev = format!("block/{dev}/dev");
    let bsize = format!("block/{dev}/size");
    let walk = cache.is_some();
    let opened = match cache {
        Some(cache) => AttrDir::open_cached(dev_dir, cache),
        None => AttrDir::open(dev_dir),
    };
    let dd = match opened {
        Ok(d) => d,
        Err(e) => {
            if e.kind() == io::ErrorKind::NotFound {
                vanished(&mut p);
            } else {
                p.errors.push(Error::read(dev_dir, &e));
            }
            return Some(p);
        }
    };
    let mut errors = Vec::new();
    // The standard INQUIRY data holds vendor, model, rev, type and version: one read instead
    // of five (the kernel's attributes are views of the same buffer).
    let inq = dd
        .read_with("inquiry", |inq| {
            (inq.len() >= 36).then(|| {
                let text = |r: std::ops::Range<usize>| {
                    let b = &inq[r];
                    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                    ctx.names.get(String::from_utf8_lossy(&b[..end]).trim())
                };
                let mut level = inq[2] & 0x0f;
                if level >= 2 || (level == 1 && inq[3] & 0x0f == 1) {
                    level += 1;
                }
                (
                    text(8..16),
                    text(16..32),
                    text(32..36),
                    inq[0] & 0x1f,
                    level,
                )
            })
        })
        .ok()
        .flatten()
        .flatten();
    if let Some((vendor, model, rev, scsi_type, level)) = inq {
        p.vendor = vendor;
        p.model = model;
        p.rev = rev;
        p.scsi_type = Some(scsi_type);
        p.scsi_level = Some(level);
        p.state = shared_req(&dd, ctx, "state", &mut errors);
    } else {
        p.vendor = shared_req(&dd, ctx, "vendor", &mut errors);
        p.model = shared_req(&dd, ctx, "model", &mut errors);
        p.rev = shared_req(&dd, ctx, "rev", &mut errors);
        p.state = shared_req(&dd, ctx, "state", &mut errors);
        p.scsi_type = dd.num("type", true, "a SCSI peripheral type", &mut errors);
        p.scsi_level = dd.num("scsi_level", false, "a SCSI level", &mut errors);
    }
    if ctx.opts.details {
        p.queue_depth = dd.num("queue_depth", true, "a queue depth", &mut errors);
    }
    if devno.is_some() {
        p.devno = devno;
    } else if let Some(d) = dd.req(&bdev, &mut errors) {
        match d.parse::<DevNo>() {
            Ok(n) => p.devno = Some(n),
            Err(_) => errors.push(Error::Parse {
                path: block_dir.join("dev"),
                value: d,
                expected: "a device number MAJOR:MINOR",
            }),
        }
    }
    p.size_bytes = dd
        .num::<u64>(&bsize, true, "a size in 512-byte sectors", &mut errors)
        .map(|s| s.saturating_mul(512));
    p.read_only = dd
        .num::<u8>(&format!("block/{dev}/ro"), false, "0 or 1", &mut errors)
        .map(|v| v != 0);
    p.access_state = dd.opt_dh_with("access_state", &mut errors, |v| ctx.names.get(v));
    if ctx.opts.details && p.access_state.is_some() {
        let pp = dd.opt_dh_with("preferred_path", &mut errors, |v| {
            v.parse::<u8>().map_err(|_| v.to_string())
        });
        p.preferred_path = match pp {
            Some(Ok(v)) => Some(v != 0),
            Some(Err(value)) => {
                errors.push(Error::Parse {
                    path: dev_dir.join("preferred_path"),
                    value,
                    expected: "0 or 1",
                });
                None
            }
            None => None,
        };
    }
    if ctx.opts.details {
        p.dh_state = dd.opt_with("dh_state", &mut errors, |v| ctx.names.get(v));
    }
    if !walk {
        match list_dir(&block_dir.join("holders")) {
            Ok(h) => p.holders = h,
            Err(e) => errors.push(e),
        }
    }
    // `generic` is a symlink to scsi_generic/sgN (a file holding that text in some copies).
    p.sg = match readlinkat(&dd.fd, "generic") {
        Ok(t) => Path::new(&t)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned()),
        Err(nix::errno::Errno::ENOENT) => None,
        Err(_) => match dd.read_text("generic") {
            Ok(Some(t)) => Path::new(&t)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned()),
            Ok(None) => None,
            Err(e) => {
                errors.push(e);
                None
            }
        },
    };

    // Identity: VPD 0x83 (udev ID_SERIAL), else VPD 0x80, else the kernel's wwid.
    match dd.read_with("vpd_pg83", vpd::decode_pg83) {
        Ok(Some(decoded)) => match decoded {
            Ok(s) => {
                if let Some(id) = s.id_serial {
                    p.wwid = Some(id);
                    p.wwid_source = WwidSource::VpdPg83;
                }
                p.target_port_group = s.target_port_group;
                p.relative_port = s.relative_port;
                if let Some(problem) = s.problem {
                    errors.push(Error::Vpd {
                        path: dev_dir.join("vpd_pg83"),
                        reason: problem,
                    });
                }
            }
            Err(reason) => errors.push(Error::Vpd {
                path: dev_dir.join("vpd_pg83"),
                reason,
            }),
        },
        Ok(None) => {}
        Err(e) => errors.push(e),
    }
    match dd.read_with("vpd_pg80", vpd::decode_pg80) {
        Ok(Some(decoded)) => match decoded {
            Ok((serial, problem)) => {
                p.serial = serial;
                if let Some(reason) = problem {
                    errors.push(Error::Vpd {
                        path: dev_dir.join("vpd_pg80"),
                        reason,
                    });
                }
            }
            Err(reason) => errors.push(Error::Vpd {
                path: dev_dir.join("vpd_pg80"),
                reason,
            }),
        },
        Ok(None) => {}
        Err(e) => errors.push(e),
    }
    if p.wwid.is_none() {
        if let Some(serial) = &p.serial {
            let v = vpd::encode_whitespaces(p.vendor.as_bytes());
            let m = vpd::encode_whitespaces(p.model.as_bytes());
            p.wwid = Some(format!(
                "S{}_{}_{}",
                String::from_utf8_lossy(&v),
                String::from_utf8_lossy(&m),
                serial
            ));
            p.wwid_source = WwidSource::VpdPg80;
        } else if let Some(w) = dd.opt("wwid", &mut errors).filter(|w| !w.is_empty()) {
            p.wwid = Some(w);
            p.wwid_source = WwidSource::SysfsWwid;
        }
    }
    // A vanished device reports once, not once per attribute.
    if errors.iter().any(|e| matches!(e, Error::Vanished { .. })) {
        vanished(&mut p);
        return Some(p);
    }
    p.errors = errors;
    Some(p)
}

/// Lists SCSI hosts with their FC / iSCSI / SAS attributes.
pub fn scan_hosts(root: &Path) -> (Vec<Host>, Vec<Error>) {
    let mut errors = Vec::new();
    let class = root.join("class/scsi_host");
    let names = list_dir(&class).unwrap_or_else(|e| {
        errors.push(e);
        Vec::new()
    });
    let mut hosts = Vec::new();
    for name in names {
        let Some(number) = host_number(&name) else {
            continue;
        };
        let cdir = class.join(&name);
        let mut h = Host {
            name: name.clone(),
            number,
            proc_name: None,
            state: None,
            transport: Transport::Other,
            fc: None,
            iscsi: None,
            sas: None,
            syspath: PathBuf::new(),
            errors: Vec::new(),
        };
        match resolve(&cdir) {
            Ok(t) => {
                // devices/.../hostN/scsi_host/hostN -> devices/.../hostN
                h.syspath = t
                    .parent()
                    .and_then(Path::parent)
                    .map(Path::to_path_buf)
                    .unwrap_or(t);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => h.errors.push(Error::read(&cdir, &e)),
        }
        h.proc_name = attr(&cdir, "proc_name", &mut h.errors);
        h.state = attr(&cdir, "state", &mut h.errors);
        if h.proc_name.is_none() && h.state.is_none() && !cdir.exists() {
            h.errors.push(Error::Vanished { path: cdir.clone() });
        }
        let fc_dir = root.join("class/fc_host").join(&name);
        if fc_dir.exists() {
            h.transport = Transport::Fc;
            let e = &mut h.errors;
            h.fc = Some(FcHost {
                port_name: attr(&fc_dir, "port_name", e),
                node_name: attr(&fc_dir, "node_name", e),
                port_id: attr(&fc_dir, "port_id", e),
                port_state: attr(&fc_dir, "port_state", e),
                port_type: attr(&fc_dir, "port_type", e),
                speed: attr(&fc_dir, "speed", e),
                fabric_name: attr(&fc_dir, "fabric_name", e),
            });
        }
        let is_dir = root.join("class/iscsi_host").join(&name);
        if is_dir.exists() {
            h.transport = Transport::Iscsi;
            let e = &mut h.errors;
            h.iscsi = Some(IscsiHost {
                initiatorname: attr(&is_dir, "initiatorname", e),
                ipaddress: attr(&is_dir, "ipaddress", e),
                netdev: attr(&is_dir, "netdev", e),
                hwaddress: attr(&is_dir, "hwaddress", e),
            });
        }
        if root.join("class/sas_host").join(&name).exists() {
            h.transport = Transport::Sas;
            let phy_class = root.join("class/sas_phy");
            let prefix = format!("phy-{number}:");
            let mut sas = SasHost::default();
            for phy in list_dir(&phy_class).unwrap_or_default() {
                if phy.starts_with(&prefix)
                    && let Some(a) = attr(&phy_class.join(&phy), "sas_address", &mut h.errors)
                {
                    sas.phy_addresses.push(a);
                }
            }
            h.sas = Some(sas);
        }
        hosts.push(h);
    }
    (hosts, errors)
}

/// Parses "rport-H:C-R".
pub fn parse_rport_name(name: &str) -> Option<(u32, u32, u32)> {
    let rest = name.strip_prefix("rport-")?;
    let (hc, r) = rest.split_once('-')?;
    let (h, c) = hc.split_once(':')?;
    Some((h.parse().ok()?, c.parse().ok()?, r.parse().ok()?))
}

/// One entry of a transport class directory (`class/fc_remote_ports/rport-0:0-1`, ...).
struct ClassEntry {
    name: String,
    /// The class directory of the entry, where its attributes are.
    cdir: PathBuf,
    /// The device directory two levels above the class link's target (`.../rport-0:0-1`), or
    /// empty when the link could not be read (then `errs` says why).
    syspath: PathBuf,
    errs: Vec<Error>,
}

/// Lists `root/class_dir`, resolving every entry's device directory. An entry that vanished
/// between the listing and the readlink (ENOENT mid-scan) is skipped; any other failure is an
/// error on that entry, and a class directory that cannot be listed is an error of the scan.
fn class_entries(root: &Path, class_dir: &str, errors: &mut Vec<Error>) -> Vec<ClassEntry> {
    let class = root.join(class_dir);
    let names = list_dir(&class).unwrap_or_else(|e| {
        errors.push(e);
        Vec::new()
    });
    let mut out = Vec::new();
    for name in names {
        let cdir = class.join(&name);
        let mut errs = Vec::new();
        let syspath = match resolve(&cdir) {
            Ok(t) => t
                .parent()
                .and_then(Path::parent)
                .map(Path::to_path_buf)
                .unwrap_or(t),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                errs.push(Error::read(&cdir, &e));
                PathBuf::new()
            }
        };
        out.push(ClassEntry {
            name,
            cdir,
            syspath,
            errs,
        });
    }
    out
}

/// Lists FC remote ports.
pub fn scan_rports(root: &Path) -> (Vec<FcRemotePort>, Vec<Error>) {
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for ClassEntry {
        name,
        cdir,
        syspath,
        mut errs,
    } in class_entries(root, "class/fc_remote_ports", &mut errors)
    {
        let Some((host, channel, number)) = parse_rport_name(&name) else {
            continue;
        };
        let tid = attr(&cdir, "scsi_target_id", &mut errs);
        let tid = parse_num::<i64>(
            &cdir.join("scsi_target_id"),
            tid,
            "a SCSI target id",
            &mut errs,
        );
        out.push(FcRemotePort {
            port_name: attr(&cdir, "port_name", &mut errs),
            node_name: attr(&cdir, "node_name", &mut errs),
            port_id: attr(&cdir, "port_id", &mut errs),
            port_state: attr(&cdir, "port_state", &mut errs),
            roles: attr(&cdir, "roles", &mut errs),
            scsi_target_id: tid.and_then(|t| u32::try_from(t).ok()),
            dev_loss_tmo: attr(&cdir, "dev_loss_tmo", &mut errs),
            fast_io_fail_tmo: attr(&cdir, "fast_io_fail_tmo", &mut errs),
            name,
            host,
            channel,
            number,
            syspath,
            errors: errs,
        });
    }
    (out, errors)
}

/// Lists iSCSI sessions with their first connection's persistent address and port.
pub fn scan_sessions(root: &Path) -> (Vec<IscsiSession>, Vec<Error>) {
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for ClassEntry {
        name,
        cdir,
        syspath,
        mut errs,
    } in class_entries(root, "class/iscsi_session", &mut errors)
    {
        let Some(sid) = name.strip_prefix("session") else {
            continue;
        };
        let host = chain_of(&syspath).host.and_then(|h| host_number(&h));
        let conn = root
            .join("class/iscsi_connection")
            .join(format!("connection{sid}:0"));
        out.push(IscsiSession {
            targetname: attr(&cdir, "targetname", &mut errs),
            state: attr(&cdir, "state", &mut errs),
            tpgt: attr(&cdir, "tpgt", &mut errs),
            persistent_address: attr(&conn, "persistent_address", &mut errs),
            persistent_port: attr(&conn, "persistent_port", &mut errs),
            name,
            host,
            syspath,
            errors: errs,
        });
    }
    (out, errors)
}

/// Lists SAS end devices.
pub fn scan_sas_devices(root: &Path) -> (Vec<SasEndDevice>, Vec<Error>) {
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for ClassEntry {
        name,
        cdir: _,
        syspath,
        mut errs,
    } in class_entries(root, "class/sas_end_device", &mut errors)
    {
        let host = chain_of(&syspath).host.and_then(|h| host_number(&h));
        let ddir = root.join("class/sas_device").join(&name);
        out.push(SasEndDevice {
            sas_address: attr(&ddir, "sas_address", &mut errs),
            target_port_protocols: attr(&ddir, "target_port_protocols", &mut errs),
            name,
            host,
            syspath,
            errors: errs,
        });
    }
    (out, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_join() {
        assert_eq!(
            join_lexical(Path::new("/s/class/block"), Path::new("../../devices/a/b")),
            PathBuf::from("/s/devices/a/b")
        );
    }

    /// A qemu scsi-hd (no ALUA, no handler) answers EINVAL on access_state: "no handler", not
    /// an error; any other read error still is one.
    #[test]
    fn einval_on_access_state_means_no_handler() {
        let einval = io::Error::from_raw_os_error(22);
        let p = Path::new("/sys/devices/x/0:0:0:0/access_state");
        assert!(no_device_handler(&Error::read(p, &einval)));
        let eio = io::Error::from_raw_os_error(5);
        assert!(!no_device_handler(&Error::read(p, &eio)));
        assert!(!no_device_handler(&Error::Vanished { path: p.into() }));
    }

    #[test]
    fn natural_order() {
        let mut v = vec!["sdaa", "sdb", "sda", "sdz"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["sda", "sdb", "sdz", "sdaa"]);
        let mut v = vec!["host10", "host2", "host1"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["host1", "host2", "host10"]);
    }

    /// The walk takes holders from the holders' `slaves/`; a single-device scan lists
    /// `holders/`. Both must agree, for dm maps and for other holders (an md array).
    #[test]
    fn holders_from_slaves_match_holders_dirs() {
        use crate::topology::{Sim, Topology};
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let mut sim = Sim::render(&Topology::big_fc(2, 1, 3), root).unwrap();
        let first = scan(root).paths;
        assert_eq!(first.len(), 6);
        let by_lun = |lun: u64| -> Vec<&str> {
            first
                .iter()
                .filter(|p| p.hctl.lun == lun)
                .map(|p| p.dev.as_str())
                .collect()
        };
        let m0 = by_lun(0);
        let m1 = by_lun(1);
        assert_eq!(sim.add_dm_map("mpatha", "mpath-a", &m0).unwrap(), "dm-0");
        assert_eq!(sim.add_dm_map("mpathb", "mpath-b", &m1).unwrap(), "dm-1");
        // An md array on one member of mpathb: a holder that is neither dm nor SCSI.
        let md = root.join("devices/virtual/block/md0");
        fs::create_dir_all(md.join("slaves")).unwrap();
        let blk = scan_path(root, m1[0])
            .unwrap()
            .syspath
            .join("block")
            .join(m1[0]);
        std::os::unix::fs::symlink(&blk, md.join("slaves").join(m1[0])).unwrap();
        std::os::unix::fs::symlink(&md, blk.join("holders/md0")).unwrap();
        std::os::unix::fs::symlink(&md, root.join("class/block/md0")).unwrap();

        let s = scan(root);
        assert!(s.all_errors().is_empty(), "{:?}", s.all_errors());
        assert_eq!(s.paths.len(), 6);
        for p in &s.paths {
            let single = scan_path(root, &p.dev).unwrap();
            assert_eq!(p.holders, single.holders, "{}", p.dev);
            let expected: Vec<&str> = if p.dev == m1[0] {
                vec!["md0", "dm-1"] // list_dir's natural order: shorter prefix first
            } else if m1.contains(&p.dev.as_str()) {
                vec!["dm-1"]
            } else if m0.contains(&p.dev.as_str()) {
                vec!["dm-0"]
            } else {
                vec![]
            };
            assert_eq!(p.holders, expected, "{}", p.dev);
        }
    }

    /// Device numbers come from `dev/block` links when they exist, from `block/X/dev` when
    /// they do not; the scan is the same either way.
    #[test]
    fn devno_from_dev_block_or_dev_attribute() {
        use crate::topology::{Sim, Topology};
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        Sim::render(&Topology::big_fc(2, 2, 5), root).unwrap();
        let json = |s: &Scan| serde_json::to_string(&s.paths).unwrap();
        let full = scan(root);
        assert_eq!(full.paths.len(), 20);
        assert!(full.all_errors().is_empty());
        assert!(full.paths.iter().all(|p| p.devno.is_some()));
        // One link gone: that device falls back to its `dev` attribute.
        fs::remove_file(root.join("dev/block/8:16")).unwrap();
        assert_eq!(json(&scan(root)), json(&full));
        // No dev/block at all.
        fs::remove_dir_all(root.join("dev/block")).unwrap();
        assert_eq!(json(&scan(root)), json(&full));
    }

    /// The walk's output does not depend on how many threads read which names: paths,
    /// holders and errors (a dangling link, a vanished device) come out byte-identical with
    /// one walker and with several, on a tree of many chunks.
    #[test]
    fn walk_is_the_same_on_one_thread_and_many() {
        use crate::topology::{Sim, Topology};
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        // 2 HBAs x 1 port x 160 LUNs = 320 paths: three chunks of names.
        let mut sim = Sim::render(&Topology::big_fc(2, 1, 160), root).unwrap();
        let ctx = PathContext::read(root);
        let (paths, errors) = scan_paths_threads(root, &ctx.0, 1);
        assert_eq!(paths.len(), 320);
        assert!(errors.is_empty(), "{errors:?}");
        let holders: Vec<&str> = paths
            .iter()
            .filter(|p| p.hctl.lun == 7)
            .map(|p| p.dev.as_str())
            .collect();
        sim.add_dm_map("mpathh", "mpath-h", &holders).unwrap();
        // A vanished device directory (its class link stays) and two dangling class links,
        // one sorted into the first chunk of names and one into the last.
        let gone = paths[200].syspath.clone();
        fs::remove_dir_all(&gone).unwrap();
        for name in ["aaa", "sdzz"] {
            std::os::unix::fs::symlink(
                format!("../../devices/nowhere/block/{name}"),
                root.join("class/block").join(name),
            )
            .unwrap();
        }
        let json = |(p, e): &(Vec<ScsiPath>, Vec<Error>)| {
            let errs: Vec<String> = e.iter().map(ToString::to_string).collect();
            format!("{}\n{errs:?}", serde_json::to_string(p).unwrap())
        };
        let one = scan_paths_threads(root, &ctx.0, 1);
        assert_eq!(one.0.len(), 320);
        assert_eq!(one.1.len(), 2, "the dangling links: {:?}", one.1);
        assert!(
            one.1[0].to_string().contains("class/block/aaa"),
            "{:?}",
            one.1
        );
        assert!(
            one.0
                .iter()
                .any(|p| p.syspath == gone
                    && matches!(p.errors.as_slice(), [Error::Vanished { .. }]))
        );
        assert!(one.0.iter().filter(|p| p.holders == ["dm-0"]).count() == holders.len());
        for threads in [2, 3, 8] {
            assert_eq!(
                json(&scan_paths_threads(root, &ctx.0, threads)),
                json(&one),
                "{threads} threads"
            );
        }
    }

    /// Attributes up to, at and beyond the stack buffer's size are read whole; a missing one
    /// is None and a directory in its place is an error naming it.
    #[test]
    fn attributes_of_any_length_are_read_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        for len in [
            0,
            1,
            ATTR_BUF - 1,
            ATTR_BUF,
            ATTR_BUF + 1,
            3 * ATTR_BUF + 7,
            9000,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            fs::write(dir.join(format!("a{len}")), &data).unwrap();
            let dd = AttrDir::open(dir).unwrap();
            let got = dd.read_with(&format!("a{len}"), <[u8]>::to_vec).unwrap();
            assert_eq!(got, Some(data), "{len} bytes");
        }
        let dd = AttrDir::open(dir).unwrap();
        assert_eq!(dd.read_with("absent", <[u8]>::to_vec).unwrap(), None);
        fs::create_dir(dir.join("sub")).unwrap();
        let e = dd.read_with("sub", <[u8]>::to_vec).unwrap_err();
        assert!(e.to_string().contains("sub"), "{e}");
        fs::write(dir.join("n"), " 42\n").unwrap();
        fs::write(dir.join("bad"), "4x2\n").unwrap();
        let mut errors = Vec::new();
        assert_eq!(dd.num::<u32>("n", true, "a number", &mut errors), Some(42));
        assert_eq!(dd.num::<u32>("bad", true, "a number", &mut errors), None);
        assert_eq!(
            dd.num::<u32>("absent", false, "a number", &mut errors),
            None
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            matches!(&errors[0], Error::Parse { path, value, .. } if path.ends_with("bad") && value == "4x2"),
            "{errors:?}"
        );
    }

    #[test]
    fn rport_names() {
        assert_eq!(parse_rport_name("rport-3:0-12"), Some((3, 0, 12)));
        assert_eq!(parse_rport_name("rport-3:0"), None);
    }
}
