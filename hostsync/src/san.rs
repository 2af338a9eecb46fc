//! `san:VG/LV`: the registry on a small LV of a shared (lvmlockd + sanlock) VG, the embedded
//! default for a cluster without etcd. `san:/PATH` keeps the same format in a file of this host,
//! for tests and demos.
//!
//! # The mutex
//! The registry is changed only while holding the LV with `lvchange -aey` (lvmlockd's sanlock
//! lease on the shared storage is the cluster-wide mutex) and read while holding it with
//! `-asy`; each operation gives the LV back with `-an`, so another host can take it. A conflict
//! ("LV locked by other host") is retried with backoff for up to [`LOCK_WAIT`]. lvmlockd's
//! locks belong to the host, not the process, so the processes of one host also take an OFD
//! lock on `/run/lock/hostsync/san-VG-LV.lock` around the whole operation. For `san:/PATH` the
//! mutex is an OFD lock on `PATH.lock` (exclusive to write, shared to read). See [`SanMutex`].
//!
//! # On-disk format (version 1; integers little-endian, every I/O 4 KiB-aligned)
//! - Bytes 0 and 4096: two header slots. A header holds the magic `HSYNCREG`, the format
//!   version, its slot number, a generation, the active log area and its epoch, the end of the
//!   committed log, the area size (fixed when the registry is formatted) and a CRC-64 of all
//!   that. The valid header with the highest generation is the committed state.
//! - From byte 8192: two log areas of `area_size` bytes. The active area holds frames: magic
//!   `HREC`, payload length, CRC-64 of the payload, the payload (journal records of
//!   [`crate::kvstate::Rec`], one JSON line each: the local backend's records), zero padding
//!   to 4 KiB.
//!
//! A commit appends one frame at the committed end, syncs it, then writes the next generation
//! into the *other* header slot and syncs that. A writer that dies before the header leaves
//! bytes past the committed end that nobody reads (the next writer overwrites them); a header
//! torn mid-write fails its CRC, so the previous generation in the other slot stays the
//! committed state. When the area is full the writer writes a snapshot of the whole state as
//! the first frame of the other area and a header pointing there (epoch + 1); watches behind
//! it resynchronise. Block devices are opened with `O_DIRECT` (no stale page cache of another
//! host's writes) and synced with `fdatasync`; files use `fdatasync`. Readers keep the state
//! and the committed end they have read, so a read costs two header blocks plus the new frames.
//! Anything else on the LV (a header without the magic, a frame failing its CRC inside the
//! committed log, an unknown version, two bad headers) is an error naming the LV and offset.
//!
//! # Liveness leases without a shared clock
//! The hosts' clocks are not compared. A lease is a record with a TTL and a renewal counter
//! (`beat`) that every keep-alive increases. A reader judges expiry on its own clock: a lease
//! expires TTL seconds after this process last saw its counter advance (or first saw it). A
//! process that has just started therefore treats every lease as alive for one TTL (it fails
//! towards "alive", never towards deleting a live host's keys). Writers delete the keys of
//! leases that they judge expired, as the local backend does; a holder renewing after that
//! learns its lease is gone (`keep_alive` answers false) and takes a new one.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt as _, FileTypeExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use aliases::fsutil::{self, LockedFile};

use crate::kvstate::{Emitter, Rec, State, Store, now_ms, registry_via_store, run_writer};
use crate::lvm::{Activation, Lvm};
use crate::runner::{Runner, SystemRunner};
use crate::{Error, Result};

/// Block size of every read and write.
const BLOCK: usize = 4096;
/// Header magic.
const MAGIC: &[u8; 8] = b"HSYNCREG";
/// Frame magic.
const FRAME_MAGIC: &[u8; 4] = b"HREC";
/// Format version written and understood.
pub const FORMAT_VERSION: u32 = 1;
/// Where the log areas start (after the two header slots).
const AREAS_START: u64 = 2 * BLOCK as u64;
/// Smallest usable area.
const MIN_AREA: u64 = 64 * 1024;
/// Size of a registry file created for `san:/PATH`.
pub const FILE_SIZE: u64 = 64 * 1024 * 1024;
/// How long a conflict on the LV's lock is retried.
pub const LOCK_WAIT: Duration = Duration::from_secs(60);
/// Environment variable for the crash tests only: `after-frame` makes a writer stop (forever)
/// after its frame is synced and before its header is written, so the test can kill it there.
pub const STALL_ENV: &str = "HOSTSYNC_SAN_TEST_STALL";

/// CRC-64/XZ (ECMA-182 polynomial, reflected).
pub fn crc64(data: &[u8]) -> u64 {
    static TABLE: OnceLock<[u64; 256]> = OnceLock::new();
    let t = TABLE.get_or_init(|| {
        let mut t = [0u64; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u64;
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    (c >> 1) ^ 0xC96C_5795_D787_0F42
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    let mut c = !0u64;
    for b in data {
        c = t[((c ^ *b as u64) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

fn align_up(n: u64) -> u64 {
    n.div_ceil(BLOCK as u64) * BLOCK as u64
}

/// A zeroed buffer of `len` bytes starting at a 4 KiB-aligned address (O_DIRECT needs it).
struct Aligned {
    buf: Vec<u8>,
    off: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Self {
        let buf = vec![0u8; len + BLOCK];
        let off = buf.as_ptr().align_offset(BLOCK);
        Self { buf, off, len }
    }
    fn bytes(&self) -> &[u8] {
        &self.buf[self.off..self.off + self.len]
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.off..self.off + self.len]
    }
}

/// A committed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Slot it lives in (0 or 1).
    pub slot: u32,
    /// Generation: one more with every commit.
    pub generation: u64,
    /// Active log area (0 or 1).
    pub area: u32,
    /// Number of area switches so far.
    pub epoch: u64,
    /// End of the committed log (absolute byte offset).
    pub end: u64,
    /// Size of each log area.
    pub area_size: u64,
}

impl Header {
    fn area_start(&self) -> u64 {
        AREAS_START + self.area as u64 * self.area_size
    }

    fn encode(&self) -> Aligned {
        let mut a = Aligned::new(BLOCK);
        let b = a.bytes_mut();
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.slot.to_le_bytes());
        b[16..24].copy_from_slice(&self.generation.to_le_bytes());
        b[24..28].copy_from_slice(&self.area.to_le_bytes());
        b[32..40].copy_from_slice(&self.epoch.to_le_bytes());
        b[40..48].copy_from_slice(&self.end.to_le_bytes());
        b[48..56].copy_from_slice(&self.area_size.to_le_bytes());
        let crc = crc64(&b[0..56]);
        b[56..64].copy_from_slice(&crc.to_le_bytes());
        a
    }
}

/// What one header slot holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// All zeros: never written.
    Blank,
    /// A header that checks out.
    Valid(Header),
    /// Our magic, but the header does not check out (a torn write, or damage).
    Invalid(String),
    /// Not a hostsync header at all.
    Foreign,
    /// A header that checks out, of a format version this hostsync does not know.
    OtherVersion(u32),
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[o..o + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

/// Decodes the header block of slot `slot` of a device of `dev_len` bytes.
pub fn decode_slot(b: &[u8], slot: u32, dev_len: u64) -> Slot {
    if b.iter().all(|x| *x == 0) {
        return Slot::Blank;
    }
    if &b[0..8] != MAGIC {
        return Slot::Foreign;
    }
    if crc64(&b[0..56]) != u64_at(b, 56) {
        return Slot::Invalid("its checksum does not match (torn write or damage)".into());
    }
    let version = u32_at(b, 8);
    if version != FORMAT_VERSION {
        return Slot::OtherVersion(version);
    }
    let h = Header {
        slot: u32_at(b, 12),
        generation: u64_at(b, 16),
        area: u32_at(b, 24),
        epoch: u64_at(b, 32),
        end: u64_at(b, 40),
        area_size: u64_at(b, 48),
    };
    let fits = AREAS_START + 2 * h.area_size <= dev_len;
    if h.slot != slot
        || h.area > 1
        || !fits
        || h.end < h.area_start()
        || h.end > h.area_start() + h.area_size
        || !h.end.is_multiple_of(BLOCK as u64)
    {
        return Slot::Invalid(format!("its fields are inconsistent: {h:?}"));
    }
    Slot::Valid(h)
}

/// The committed header given both slots: the valid one with the highest generation; None for
/// a registry never written (or whose very first header write was torn); an error message when
/// the slots hold no registry or only damaged headers.
pub fn committed(slots: &[Slot; 2]) -> std::result::Result<Option<Header>, String> {
    let best = slots
        .iter()
        .filter_map(|s| match s {
            Slot::Valid(h) => Some(*h),
            _ => None,
        })
        .max_by_key(|h| h.generation);
    if slots.contains(&Slot::Foreign) {
        return Err(
            "it does not hold a hostsync registry (a header block without the HSYNCREG magic)"
                .into(),
        );
    }
    for s in slots {
        if let Slot::OtherVersion(v) = s {
            return Err(format!(
                "it was written in format version {v}; this hostsync reads version \
                 {FORMAT_VERSION} (use the hostsync that wrote it)"
            ));
        }
    }
    if let Some(h) = best {
        return Ok(Some(h));
    }
    match slots {
        // Only the very first commit can leave one slot blank and the other torn: from the
        // second commit on both slots always hold a header.
        [Slot::Blank, _] | [_, Slot::Blank] => Ok(None),
        [Slot::Invalid(a), Slot::Invalid(b)] => Err(format!(
            "both header slots are damaged: slot 0: {a}; slot 1: {b}"
        )),
        _ => Err("no valid header".into()),
    }
}

/// One frame: magic, length, CRC, payload, padded to a block.
fn encode_frame(payload: &[u8]) -> Aligned {
    let len = align_up(16 + payload.len() as u64) as usize;
    let mut a = Aligned::new(len);
    let b = a.bytes_mut();
    b[0..4].copy_from_slice(FRAME_MAGIC);
    b[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    b[8..16].copy_from_slice(&crc64(payload).to_le_bytes());
    b[16..16 + payload.len()].copy_from_slice(payload);
    a
}

/// The payloads of the frames in `b` (which starts at byte `at` of the device), or where and
/// why they do not check out.
fn decode_frames(b: &[u8], at: u64) -> std::result::Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    let mut o = 0usize;
    while o < b.len() {
        let bad = |why: &str| format!("the log frame at byte {} {why}", at + o as u64);
        if o + 16 > b.len() || &b[o..o + 4] != FRAME_MAGIC {
            return Err(bad("has no frame magic"));
        }
        let len = u32_at(b, o + 4) as usize;
        if o + 16 + len > b.len() {
            return Err(bad("runs past the committed end"));
        }
        let payload = &b[o + 16..o + 16 + len];
        if crc64(payload) != u64_at(b, o + 8) {
            return Err(bad("fails its checksum"));
        }
        out.push(payload);
        o += align_up(16 + len as u64) as usize;
    }
    Ok(out)
}

/// How the registry is held while it is read or changed: the seam between the format and the
/// cluster's lock manager.
pub trait SanMutex: Send + Sync {
    /// Takes the mutex (`exclusive`, to write) or a shared hold (to read); the device is
    /// present and readable until the returned hold is released.
    fn acquire(&self, exclusive: bool) -> Result<Hold>;
    /// How often a watch polls the header.
    fn poll(&self) -> Duration;
}

type Release = Box<dyn FnOnce() -> Result<()> + Send>;

/// A hold on the registry, given back by [`Hold::release`] (or, logging any failure, on drop).
pub struct Hold {
    release: Option<Release>,
    _local: Option<LockedFile>,
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hold").finish_non_exhaustive()
    }
}

impl Hold {
    /// Gives the hold back.
    pub fn release(mut self) -> Result<()> {
        match self.release.take() {
            Some(f) => f(),
            None => Ok(()),
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if let Some(f) = self.release.take()
            && let Err(e) = f()
        {
            tracing::warn!(error = %e, "could not give back the san registry's hold");
        }
    }
}

/// Creates (if needed) and OFD-locks `lock`, exclusive or shared.
fn ofd_lock(lock: &Path, exclusive: bool) -> Result<LockedFile> {
    if !exclusive && !lock.exists() {
        // A shared lock opens read-only: make sure there is a file to open.
        drop(LockedFile::open(lock, true)?);
    }
    LockedFile::open(lock, exclusive)?.ok_or_else(|| Error::File {
        path: lock.to_path_buf(),
        message: "the lock file vanished".into(),
    })
}

/// The stand-in mutex for `san:/PATH`: an OFD lock on `PATH.lock`, exclusive to write and
/// shared to read, so processes on one machine contend as hosts do for the LV.
#[derive(Debug, Clone)]
pub struct FileMutex {
    lock: PathBuf,
}

impl FileMutex {
    /// The mutex of the registry file `path`.
    pub fn new(path: &Path) -> Self {
        Self {
            lock: fsutil::lock_path_for(path),
        }
    }
}

impl SanMutex for FileMutex {
    fn acquire(&self, exclusive: bool) -> Result<Hold> {
        Ok(Hold {
            release: None,
            _local: Some(ofd_lock(&self.lock, exclusive)?),
        })
    }

    fn poll(&self) -> Duration {
        Duration::from_millis(10)
    }
}

/// The production mutex: `lvchange -aey VG/LV` to write, `-asy` to read, `-an` to give it
/// back, through the command runner; the processes of this host serialise on an OFD lock
/// first because lvmlockd's locks belong to the host.
pub struct LvmMutex {
    runner: Arc<dyn Runner>,
    vg: String,
    lv: String,
    local_lock: PathBuf,
    wait: Duration,
}

impl std::fmt::Debug for LvmMutex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LvmMutex")
            .field("lv", &format!("{}/{}", self.vg, self.lv))
            .finish()
    }
}

/// Whether LVM's words say another host holds the lock (worth waiting for).
fn lock_conflict(e: &Error) -> bool {
    match e {
        Error::Lvm { message, .. } => {
            let m = message.to_ascii_lowercase();
            m.contains("locked by other host") || m.contains("lock conflict")
        }
        _ => false,
    }
}

impl LvmMutex {
    /// The mutex of `vg/lv`, with the local lock in `lock_dir`, waiting up to `wait` for
    /// another host.
    pub fn new(
        runner: Arc<dyn Runner>,
        vg: &str,
        lv: &str,
        lock_dir: &Path,
        wait: Duration,
    ) -> Self {
        Self {
            runner,
            vg: vg.into(),
            lv: lv.into(),
            local_lock: lock_dir.join(format!("san-{vg}-{lv}.lock")),
            wait,
        }
    }

    /// `lvchange` in `mode`, retrying a conflict with another host with backoff until the
    /// time limit.
    fn activate(&self, mode: Activation) -> Result<()> {
        let lvm = Lvm::new(&*self.runner).with_timeout(Duration::from_secs(60));
        let start = Instant::now();
        let mut delay = Duration::from_millis(50);
        loop {
            match lvm.activate(&self.vg, &self.lv, mode) {
                Err(e) if lock_conflict(&e) => {
                    if start.elapsed() + delay >= self.wait {
                        return Err(match e {
                            Error::Lvm {
                                target,
                                action,
                                message,
                            } => Error::Lvm {
                                target,
                                action,
                                message: format!(
                                    "{message} (still held by another host after {} s of retries)",
                                    self.wait.as_secs()
                                ),
                            },
                            e => e,
                        });
                    }
                    tracing::debug!(vg = %self.vg, lv = %self.lv, "held by another host; retrying");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }

    /// `lvchange -an`, retried for a few seconds while something (udev's probe) still has the
    /// device open.
    fn deactivate(runner: &dyn Runner, vg: &str, lv: &str) -> Result<()> {
        let lvm = Lvm::new(runner).with_timeout(Duration::from_secs(60));
        let mut tries = 0;
        loop {
            match lvm.activate(vg, lv, Activation::Off) {
                Err(Error::Lvm { message, .. }) if message.contains("in use") && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                other => return other,
            }
        }
    }
}

impl SanMutex for LvmMutex {
    fn acquire(&self, exclusive: bool) -> Result<Hold> {
        if let Some(d) = self.local_lock.parent() {
            std::fs::create_dir_all(d).map_err(|e| Error::File {
                path: d.to_path_buf(),
                message: e.to_string(),
            })?;
        }
        let local = ofd_lock(&self.local_lock, true)?;
        let mode = if exclusive {
            Activation::Exclusive
        } else {
            Activation::Shared
        };
        self.activate(mode)?;
        let (runner, vg, lv) = (self.runner.clone(), self.vg.clone(), self.lv.clone());
        Ok(Hold {
            release: Some(Box::new(move || LvmMutex::deactivate(&*runner, &vg, &lv))),
            _local: Some(local),
        })
    }

    fn poll(&self) -> Duration {
        Duration::from_secs(1)
    }
}

/// What this process has read of one registry.
#[derive(Debug, Clone)]
struct Cached {
    epoch: u64,
    area: u32,
    end: u64,
    state: Arc<State>,
}

fn cache() -> &'static Mutex<HashMap<PathBuf, Cached>> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Cached>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Applies records read from the device. Lease expiry is judged on this process's clock: a
/// lease whose counter advanced (or that is new to this process) runs out TTL seconds from now;
/// the others keep the expiry this process gave them.
fn apply_read(state: &mut State, recs: &[Rec]) {
    let before: HashMap<i64, (u64, u64)> = state
        .leases
        .iter()
        .map(|(id, l)| (*id, (l.beat, l.expires_ms)))
        .collect();
    for r in recs {
        state.apply(r);
    }
    let now = now_ms();
    for (id, l) in state.leases.iter_mut() {
        l.expires_ms = match before.get(id) {
            Some((beat, exp)) if *beat == l.beat => *exp,
            _ => now + (l.ttl_s.max(1) as u64) * 1000,
        };
    }
}

/// The registry on a shared LV (or a file).
#[derive(Clone)]
pub struct SanRegistry {
    url: String,
    device: PathBuf,
    /// `san:/PATH`: a file, created on the first write.
    is_file: bool,
    mutex: Arc<dyn SanMutex>,
}

impl std::fmt::Debug for SanRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SanRegistry")
            .field("url", &self.url)
            .finish()
    }
}

/// The device-mapper node of `vg/lv` (`-` doubled, as device-mapper names it).
pub fn dm_path(vg: &str, lv: &str) -> PathBuf {
    PathBuf::from(format!(
        "/dev/mapper/{}-{}",
        vg.replace('-', "--"),
        lv.replace('-', "--")
    ))
}

impl SanRegistry {
    /// Opens `san:VG/LV` or `san:/PATH` (the part after `san:` is `spec`).
    pub fn open(spec: &str) -> Result<Self> {
        let url = format!("san:{spec}");
        if spec.ends_with('/') {
            return Err(Error::BadUrl {
                url: url.clone(),
                reason: "san:/PATH needs a file, not a directory".into(),
            });
        }
        if spec.starts_with('/') {
            let path = PathBuf::from(spec);
            let mut r = Self::with_mutex(&url, &path, Arc::new(FileMutex::new(&path)));
            r.is_file = true;
            return Ok(r);
        }
        let bad = |reason: &str| Error::BadUrl {
            url: url.clone(),
            reason: reason.into(),
        };
        let (vg, lv) = spec
            .split_once('/')
            .ok_or_else(|| bad("san: needs VG/LV (a shared VG's LV) or an absolute file path"))?;
        let ok = |s: &str| {
            !s.is_empty()
                && !s.starts_with('-')
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+_.-".contains(c))
        };
        if !ok(vg) || !ok(lv) {
            return Err(bad("VG and LV names are letters, digits and + _ . -"));
        }
        let mutex = LvmMutex::new(
            Arc::new(SystemRunner),
            vg,
            lv,
            Path::new("/run/lock/hostsync"),
            LOCK_WAIT,
        );
        Ok(Self::with_mutex(&url, &dm_path(vg, lv), Arc::new(mutex)))
    }

    /// The registry at `device` held through `mutex`; `url` names it in messages.
    pub fn with_mutex(url: &str, device: &Path, mutex: Arc<dyn SanMutex>) -> Self {
        Self {
            url: url.into(),
            device: device.to_path_buf(),
            is_file: false,
            mutex,
        }
    }

    fn open_dev(&self, write: bool) -> Result<(File, u64)> {
        let is_file = match std::fs::metadata(&self.device) {
            Ok(m) => !m.file_type().is_block_device(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && write && self.is_file => {
                // san:/PATH: a new registry file.
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o600)
                    .open(&self.device)
                    .map_err(|e| self.io_err("create", e))?;
                f.set_len(FILE_SIZE).map_err(|e| self.io_err("size", e))?;
                true
            }
            Err(e) => return Err(self.io_err("open", e)),
        };
        let mut o = OpenOptions::new();
        o.read(true).write(write);
        if !is_file {
            o.custom_flags(nix::libc::O_DIRECT);
        }
        let f = o.open(&self.device).map_err(|e| self.io_err("open", e))?;
        let len = std::fs::metadata(&self.device)
            .map(|m| m.len())
            .map_err(|e| self.io_err("stat", e))?;
        let len = if is_file {
            len
        } else {
            use std::io::Seek as _;
            (&f).seek(std::io::SeekFrom::End(0))
                .map_err(|e| self.io_err("size", e))?
        };
        Ok((f, len))
    }

    fn io_err(&self, what: &str, e: std::io::Error) -> Error {
        self.err(
            "use its device",
            format!("cannot {what} {}: {e}", self.device.display()),
        )
    }

    fn corrupt(&self, why: String) -> Error {
        self.err(
            "read its header and log",
            format!("{} is not a usable registry: {why}", self.device.display()),
        )
    }

    fn read_at(&self, f: &File, at: u64, len: usize) -> Result<Aligned> {
        let mut a = Aligned::new(len);
        f.read_exact_at(a.bytes_mut(), at)
            .map_err(|e| self.io_err(&format!("read {len} bytes at byte {at} of"), e))?;
        Ok(a)
    }

    /// Both header slots.
    fn slots(&self, f: &File, dev_len: u64) -> Result<[Slot; 2]> {
        if dev_len < AREAS_START + 2 * MIN_AREA {
            return Err(self.corrupt(format!(
                "it has {dev_len} bytes, fewer than the {} a registry needs",
                AREAS_START + 2 * MIN_AREA
            )));
        }
        let b = self.read_at(f, 0, 2 * BLOCK)?;
        let b = b.bytes();
        Ok([
            decode_slot(&b[..BLOCK], 0, dev_len),
            decode_slot(&b[BLOCK..], 1, dev_len),
        ])
    }

    /// The committed header (None: never written) and this process's state brought up to it.
    fn read_state(&self, f: &File, dev_len: u64) -> Result<(Option<Header>, Cached)> {
        let slots = self.slots(f, dev_len)?;
        let head = committed(&slots).map_err(|w| self.corrupt(w))?;
        let mut c = cache()
            .lock()
            .map_err(|_| self.err("read", "the registry cache was poisoned"))?;
        let Some(h) = head else {
            let fresh = Cached {
                epoch: 0,
                area: 0,
                end: AREAS_START,
                state: Arc::new(State::default()),
            };
            c.remove(&self.device);
            return Ok((None, fresh));
        };
        let mut cur = match c.remove(&self.device) {
            Some(x) if x.epoch == h.epoch && x.area == h.area && x.end <= h.end => x,
            _ => Cached {
                epoch: h.epoch,
                area: h.area,
                end: h.area_start(),
                state: Arc::new(State::default()),
            },
        };
        let result = self.read_log(f, &mut cur, h.end);
        if result.is_ok() {
            c.insert(self.device.clone(), cur.clone());
        }
        result.map(|()| (Some(h), cur))
    }

    /// Applies the frames from `cur.end` to `end`.
    fn read_log(&self, f: &File, cur: &mut Cached, end: u64) -> Result<()> {
        if cur.end == end {
            return Ok(());
        }
        let b = self.read_at(f, cur.end, (end - cur.end) as usize)?;
        let payloads = decode_frames(b.bytes(), cur.end).map_err(|w| self.corrupt(w))?;
        let mut recs = Vec::new();
        for p in payloads {
            for line in p.split(|c| *c == b'\n').filter(|l| !l.is_empty()) {
                recs.push(serde_json::from_slice::<Rec>(line).map_err(|e| {
                    self.corrupt(format!(
                        "a record between bytes {} and {end} is malformed: {e}",
                        cur.end
                    ))
                })?);
            }
        }
        apply_read(Arc::make_mut(&mut cur.state), &recs);
        cur.end = end;
        Ok(())
    }

    fn write_all_at(&self, f: &File, data: &[u8], at: u64) -> Result<()> {
        f.write_all_at(data, at)
            .and_then(|()| f.sync_data())
            .map_err(|e| self.io_err(&format!("write {} bytes at byte {at} of", data.len()), e))
    }

    /// Under the exclusive hold: commits `lines` (records already applied to `state`).
    fn commit(
        &self,
        f: &File,
        dev_len: u64,
        head: Option<Header>,
        state: State,
        lines: &[Vec<u8>],
    ) -> Result<Cached> {
        let head = head.unwrap_or(Header {
            slot: 1, // so the first commit goes to slot 0
            generation: 0,
            area: 0,
            epoch: 0,
            end: AREAS_START,
            area_size: ((dev_len - AREAS_START) / 2) / BLOCK as u64 * BLOCK as u64,
        });
        let payload = lines.join(&b'\n');
        let frame = encode_frame(&payload);
        let mut next = Header {
            slot: 1 - head.slot,
            generation: head.generation + 1,
            ..head
        };
        let state = if head.end + frame.len as u64 <= head.area_start() + head.area_size {
            self.write_all_at(f, frame.bytes(), head.end)?;
            next.end = head.end + frame.len as u64;
            state
        } else {
            // The area is full: the whole state as the first frame of the other area.
            let snap = serde_json::to_vec(&Rec::Snapshot(state.clone()))
                .map_err(|e| self.err("encode a snapshot", e))?;
            let frame = encode_frame(&snap);
            if frame.len as u64 > head.area_size {
                return Err(self.err(
                    "write",
                    format!(
                        "{} is full: the registry's {} bytes do not fit in a log area of {} \
                         bytes; make a larger LV and move the registry there",
                        self.device.display(),
                        snap.len(),
                        head.area_size
                    ),
                ));
            }
            next.area = 1 - head.area;
            next.epoch = head.epoch + 1;
            let start = next.area_start();
            self.write_all_at(f, frame.bytes(), start)?;
            next.end = start + frame.len as u64;
            // What readers of the new area will see: history before it is gone.
            let mut st = state.clone();
            st.apply(&Rec::Snapshot(state));
            st
        };
        if std::env::var(STALL_ENV).as_deref() == Ok("after-frame") {
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        self.write_all_at(f, next.encode().bytes(), next.slot as u64 * BLOCK as u64)?;
        Ok(Cached {
            epoch: next.epoch,
            area: next.area,
            end: next.end,
            state: Arc::new(state),
        })
    }

    /// The committed header, for tests and `doctor`-style checks.
    pub fn header(&self) -> Result<Option<Header>> {
        let hold = self.mutex.acquire(false)?;
        let (f, len) = self.open_dev(false)?;
        let slots = self.slots(&f, len)?;
        drop(f);
        hold.release()?;
        committed(&slots).map_err(|w| self.corrupt(w))
    }
}

impl Store for SanRegistry {
    fn url(&self) -> String {
        self.url.clone()
    }

    fn load(&self) -> Result<Arc<State>> {
        let hold = self.mutex.acquire(false)?;
        let state = match self.open_dev(false) {
            Ok((f, len)) => self.read_state(&f, len).map(|(_, c)| c.state),
            // san:/PATH not created yet: an empty registry.
            Err(_) if self.is_file && !self.device.exists() => Ok(Arc::new(State::default())),
            Err(e) => Err(e),
        };
        hold.release()?;
        state
    }

    fn poll(&self) -> Duration {
        self.mutex.poll()
    }

    fn precheck(&self) -> bool {
        // On an LV every read is an lvchange -asy / -an pair: let the writer check.
        self.is_file
    }

    fn write<T>(&self, f: impl FnOnce(&mut Emitter<'_>) -> Result<T>) -> Result<T> {
        let hold = self.mutex.acquire(true)?;
        let (dev, len) = self.open_dev(true)?;
        let (head, cur) = self.read_state(&dev, len)?;
        // Own the state while writing (the cache is refilled after the commit, or from the
        // device if the write fails), so the common case does not copy it.
        if let Ok(mut c) = cache().lock() {
            c.remove(&self.device);
        }
        let (state, lines, out) = run_writer(cur.state, f)?;
        let next = if lines.is_empty() {
            Cached {
                state: Arc::new(state),
                ..cur
            }
        } else {
            self.commit(&dev, len, head, state, &lines)?
        };
        if let Ok(mut c) = cache().lock() {
            c.insert(self.device.clone(), next);
        }
        drop(dev);
        hold.release()?;
        Ok(out)
    }
}

registry_via_store!(SanRegistry);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Compare, Op, Registry, WatchEvent};
    use crate::runner::{Output, ScriptedRunner};

    fn put(k: &str, v: &str) -> Op {
        Op::put(k, v.as_bytes().to_vec())
    }

    /// A registry file of `size` bytes in a fresh temporary directory.
    fn reg(size: u64) -> (tempfile::TempDir, SanRegistry, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("reg.san");
        let f = File::create(&p).unwrap();
        f.set_len(size).unwrap();
        let r = SanRegistry::open(p.to_str().unwrap()).unwrap();
        (d, r, p)
    }

    /// Forgets what this process read of `p` (as a new process would start).
    fn fresh(p: &Path) {
        cache().lock().unwrap().remove(p);
    }

    fn raw(p: &Path, at: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        File::open(p).unwrap().read_exact_at(&mut b, at).unwrap();
        b
    }

    fn poke(p: &Path, at: u64, data: &[u8]) {
        let f = OpenOptions::new().write(true).open(p).unwrap();
        f.write_all_at(data, at).unwrap();
    }

    #[test]
    fn crc64_is_crc64_xz() {
        assert_eq!(crc64(b"123456789"), 0x995D_C9BB_DF19_39FA);
        assert_eq!(crc64(b""), 0);
    }

    #[test]
    fn generations_alternate_slots_and_the_highest_valid_wins() {
        let (_d, r, p) = reg(1 << 20);
        assert_eq!(r.header().unwrap(), None, "a blank LV is an empty registry");
        assert!(r.get("k").unwrap().is_none());
        for i in 1..=5u64 {
            r.txn(&[], &[put("k", &i.to_string())]).unwrap();
            let h = r.header().unwrap().unwrap();
            assert_eq!(h.generation, i);
            assert_eq!(
                h.slot as u64,
                (i - 1) % 2,
                "generation {i} went to the wrong slot"
            );
        }
        // Both slots hold a header; the older one has generation 4.
        let len = std::fs::metadata(&p).unwrap().len();
        let s0 = decode_slot(&raw(&p, 0, BLOCK), 0, len);
        let s1 = decode_slot(&raw(&p, BLOCK as u64, BLOCK), 1, len);
        assert!(matches!(s0, Slot::Valid(h) if h.generation == 5));
        assert!(matches!(s1, Slot::Valid(h) if h.generation == 4));
        // The order of the slots does not matter, the generation does.
        assert_eq!(
            committed(&[s1.clone(), s0.clone()])
                .unwrap()
                .unwrap()
                .generation,
            5
        );
        // A header copied into the other slot's place does not count there.
        let b0 = raw(&p, 0, BLOCK);
        assert!(matches!(decode_slot(&b0, 1, len), Slot::Invalid(_)));
        fresh(&p);
        assert_eq!(r.get("k").unwrap().unwrap().value, b"5");
    }

    #[test]
    fn a_torn_header_leaves_the_previous_generation() {
        let (_d, r, p) = reg(1 << 20);
        r.txn(&[], &[put("a", "1")]).unwrap(); // generation 1, slot 0
        r.txn(&[], &[put("b", "2")]).unwrap(); // generation 2, slot 1
        // Generation 2's header torn: half of its fields are from another write.
        poke(&p, BLOCK as u64 + 16, &[0xAA; 16]);
        fresh(&p);
        assert_eq!(r.header().unwrap().unwrap().generation, 1);
        assert_eq!(r.get("a").unwrap().unwrap().value, b"1");
        assert!(
            r.get("b").unwrap().is_none(),
            "a write whose header is torn never happened"
        );
        // The next writer goes on from generation 1, into the torn slot.
        let t = r
            .txn(&[Compare::Absent("b".into())], &[put("b", "3")])
            .unwrap();
        assert!(t.succeeded);
        let h = r.header().unwrap().unwrap();
        assert_eq!((h.generation, h.slot), (2, 1));
        fresh(&p);
        assert_eq!(r.get("b").unwrap().unwrap().value, b"3");
        assert_eq!(r.range("").unwrap().kvs.len(), 2);
    }

    #[test]
    fn bytes_past_the_committed_end_are_never_read() {
        let (_d, r, p) = reg(1 << 20);
        r.txn(&[], &[put("a", "1")]).unwrap();
        let end = r.header().unwrap().unwrap().end;
        // A writer died after its frame and before its header: a complete, valid frame
        // past the end, and garbage after it.
        let rec = br#"{"txn":{"rev":2,"puts":[{"k":"ghost","v":"x"}]}}"#;
        poke(&p, end, encode_frame(rec).bytes());
        poke(&p, end + BLOCK as u64, &[0x5A; 100]);
        fresh(&p);
        assert!(r.get("ghost").unwrap().is_none());
        r.txn(&[], &[put("b", "2")]).unwrap();
        fresh(&p);
        let keys: Vec<String> = r
            .range("")
            .unwrap()
            .kvs
            .into_iter()
            .map(|k| k.key)
            .collect();
        assert_eq!(keys, ["a", "b"]);
    }

    #[test]
    fn damage_is_an_error_naming_the_device() {
        let (_d, r, p) = reg(1 << 20);
        r.txn(&[], &[put("a", "1")]).unwrap();
        r.txn(&[], &[put("b", "2")]).unwrap();
        let h = r.header().unwrap().unwrap();
        // A flipped byte inside the committed log.
        let first = h.area_start() + 20;
        let orig = raw(&p, first, 1);
        poke(&p, first, &[orig[0] ^ 0xFF]);
        fresh(&p);
        let e = r.get("a").unwrap_err().to_string();
        assert!(e.contains(&p.display().to_string()), "{e}");
        assert!(e.contains("fails its checksum"), "{e}");
        assert!(e.contains(&format!("byte {}", h.area_start())), "{e}");
        // Writes refuse too (nothing is written over a log we cannot read).
        assert!(r.txn(&[], &[put("c", "3")]).is_err());
        poke(&p, first, &orig);
        fresh(&p);
        assert_eq!(r.get("b").unwrap().unwrap().value, b"2");
        // Both headers damaged.
        poke(&p, 20, &[1]);
        poke(&p, BLOCK as u64 + 20, &[1]);
        fresh(&p);
        let e = r.get("a").unwrap_err().to_string();
        assert!(e.contains("both header slots are damaged"), "{e}");
        assert!(e.contains(&p.display().to_string()), "{e}");
    }

    #[test]
    fn foreign_data_and_unknown_versions_are_refused() {
        let (_d, r, p) = reg(1 << 20);
        poke(&p, 0, b"\x7fELF something else entirely");
        let e = r.get("a").unwrap_err().to_string();
        assert!(e.contains("does not hold a hostsync registry"), "{e}");
        assert!(e.contains(&p.display().to_string()), "{e}");
        assert!(
            r.txn(&[], &[put("a", "1")]).is_err(),
            "a foreign LV was written"
        );
        assert_eq!(&raw(&p, 0, 4), b"\x7fELF");

        let (_d2, r2, p2) = reg(1 << 20);
        r2.txn(&[], &[put("a", "1")]).unwrap();
        let mut h = raw(&p2, 0, BLOCK);
        h[8..12].copy_from_slice(&7u32.to_le_bytes());
        let crc = crc64(&h[0..56]);
        h[56..64].copy_from_slice(&crc.to_le_bytes());
        poke(&p2, 0, &h);
        fresh(&p2);
        let e = r2.get("a").unwrap_err().to_string();
        assert!(e.contains("format version 7"), "{e}");
        assert!(r2.txn(&[], &[put("b", "2")]).is_err());
    }

    #[test]
    fn a_full_area_moves_to_the_other_and_behind_watches_resync() {
        // Two areas of 64 KiB: each commit takes a 4 KiB frame.
        let (_d, r, p) = reg(AREAS_START + 2 * MIN_AREA);
        let mut w = r.watch("k/", 1).unwrap();
        for i in 0..40 {
            r.txn(&[], &[put(&format!("k/{i:02}"), "v")]).unwrap();
        }
        let h = r.header().unwrap().unwrap();
        assert!(h.epoch >= 2, "the log never moved to the other area: {h:?}");
        fresh(&p);
        assert_eq!(r.range("k/").unwrap().kvs.len(), 40);
        assert!(matches!(
            w.next(Duration::from_millis(200)).unwrap(),
            WatchEvent::Resync
        ));
        // A registry bigger than an area is refused with a sentence, and nothing is lost.
        let big = "x".repeat(70 * 1024);
        let e = r.txn(&[], &[put("big", &big)]).unwrap_err().to_string();
        assert!(e.contains("is full"), "{e}");
        fresh(&p);
        assert_eq!(r.range("k/").unwrap().kvs.len(), 40);
        assert!(r.get("big").unwrap().is_none());
    }

    #[test]
    fn leases_expire_on_the_readers_clock_from_the_last_advance() {
        let (_d, r, p) = reg(1 << 20);
        let lease = r.grant_lease(1).unwrap();
        r.txn(
            &[],
            &[Op::Put {
                key: "h/a".into(),
                value: b"up".to_vec(),
                lease,
            }],
        )
        .unwrap();
        // Renewed every 300 ms for 2 s (twice the TTL): alive throughout.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            assert!(r.keep_alive(lease).unwrap());
            assert!(r.get("h/a").unwrap().is_some(), "a renewed lease expired");
            std::thread::sleep(Duration::from_millis(300));
        }
        // A new process sees a lease it never saw advance as alive for one TTL from now,
        // whatever clock the writer had.
        fresh(&p);
        assert!(r.get("h/a").unwrap().is_some());
        std::thread::sleep(Duration::from_millis(1300));
        assert!(
            r.get("h/a").unwrap().is_none(),
            "an unrenewed lease did not expire"
        );
        // The next writer deletes it; its holder learns so.
        assert!(!r.keep_alive(lease).unwrap());
        fresh(&p);
        assert!(r.get("h/a").unwrap().is_none());
    }

    #[test]
    fn urls() {
        assert!(SanRegistry::open("vg0/reg").is_ok());
        assert_eq!(
            dm_path("my-vg", "reg-1"),
            PathBuf::from("/dev/mapper/my--vg-reg--1")
        );
        for bad in ["", "vg0", "vg0/", "/", "vg 0/reg", "-vg/reg"] {
            let e = crate::open(&format!("san:{bad}"));
            assert!(e.is_err(), "san:{bad} was accepted");
        }
    }

    fn lvm_mutex(r: &Arc<ScriptedRunner>, wait: Duration) -> (tempfile::TempDir, LvmMutex) {
        let d = tempfile::tempdir().unwrap();
        let m = LvmMutex::new(r.clone(), "vg0", "reg", d.path(), wait);
        (d, m)
    }

    const CONFLICT: &str =
        "  LV locked by other host: vg0/reg\n  Failed to lock logical volume vg0/reg.\n";

    #[test]
    fn lvm_mutex_retries_another_hosts_hold_and_gives_the_lv_back() {
        let r = Arc::new(ScriptedRunner::new());
        r.expect(&["lvchange", "-aey"], Output::fail(5, CONFLICT))
            .expect(&["lvchange", "-aey"], Output::fail(5, CONFLICT))
            .expect(&["lvchange", "-aey", "vg0/reg"], Output::ok(""))
            .expect(&["lvchange", "-an", "vg0/reg"], Output::ok(""))
            .expect(&["lvchange", "-asy", "vg0/reg"], Output::ok(""))
            .expect(&["lvchange", "-an", "vg0/reg"], Output::ok(""));
        let (_d, m) = lvm_mutex(&r, Duration::from_secs(30));
        m.acquire(true).unwrap().release().unwrap();
        drop(m.acquire(false).unwrap()); // dropping gives it back too
        assert_eq!(
            r.lines(),
            [
                "lvchange -aey vg0/reg",
                "lvchange -aey vg0/reg",
                "lvchange -aey vg0/reg",
                "lvchange -an vg0/reg",
                "lvchange -asy vg0/reg",
                "lvchange -an vg0/reg"
            ]
        );
    }

    #[test]
    fn lvm_mutex_gives_up_after_its_time_limit_and_does_not_retry_other_errors() {
        let r = Arc::new(ScriptedRunner::new());
        r.always(&["lvchange", "-aey"], Output::fail(5, CONFLICT));
        let (_d, m) = lvm_mutex(&r, Duration::from_millis(400));
        let e = m.acquire(true).unwrap_err().to_string();
        assert!(e.contains("vg0/reg"), "{e}");
        assert!(e.contains("LV locked by other host"), "{e}");
        assert!(e.contains("still held by another host"), "{e}");
        assert!(r.lines().len() >= 2, "no retry: {:?}", r.lines());

        let r = Arc::new(ScriptedRunner::new());
        r.expect(
            &["lvchange", "-asy"],
            Output::fail(5, "  Failed to find logical volume \"vg0/reg\"\n"),
        );
        let (_d, m) = lvm_mutex(&r, Duration::from_secs(30));
        let e = m.acquire(false).unwrap_err().to_string();
        assert!(e.contains("Failed to find logical volume"), "{e}");
        assert_eq!(r.lines().len(), 1);
    }
}
