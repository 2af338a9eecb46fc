//! `hostsync fence VG`: stop every write of this host to a shared VG's LVs at once, when
//! sanlock lost the VG's lease storage.
//!
//! lvmlockd(8) ("sanlock lease storage failure"): when sanlock cannot renew the VG's lockspace
//! lease for 8 x io_timeout it runs `lvmlockctl --kill VG`, which runs lvm.conf's
//! `global/lvmlockctl_kill_command` with the VG name appended. That command "should forcibly
//! deactivate LVs in the VG, ensuring that existing writes to LVs in the VG are complete and
//! that further writes to the LVs in the VG will be rejected", exit 0 when it did and non-zero
//! otherwise. On success lvmlockctl itself tells lvmlockd to drop the VG's locks (the
//! equivalent of `lvmlockctl --drop VG`), and sanlock, seeing no process use the lockspace any
//! more, stops the watchdog's countdown; otherwise the watchdog resets the host before another
//! host may take the leases (the last resort).
//!
//! How the kill command is called (lvmlockctl of lvm2 2.03.16, Debian 12): the value must be a
//! full path (lvmlockctl refuses another: "lvmlockctl_kill_command must be full path"), is split
//! at white space (no quoting), at most 256 characters; stdin is /dev/null and stdout is a pipe
//! lvmlockctl never reads. So this command writes its report to stderr (and syslog), never
//! much to stdout (a full pipe would block it forever), unless `--json` asks for it.
//!
//! What fencing does, with only device-mapper ioctls (`dmsetup`; no LVM command: LVM scans
//! disks, and a scan can block on a map that lost its paths):
//! 1. list this host's dm devices and their tables (two commands);
//! 2. every multipath map under the VG's LVs gets `fail_if_no_path`: writes the map queues for
//!    lack of a path fail now, instead of landing on the LUN when a path comes back, after
//!    another host took the LV over; and the LV's suspend below cannot wait for them forever;
//! 3. every active top-level LV of the VG (all but sanlock's own `lvmlock`) gets the `error`
//!    target: `dmsetup load` (no I/O) then `dmsetup resume --noflush --nolockfs`: the resume
//!    suspends the LV (new bios wait in dm), waits for the bios already mapped to the lower
//!    device, swaps in the error table and resumes, so every later write fails with EIO. A
//!    flushing suspend would first freeze a filesystem on the LV (lockfs: more writes, to
//!    storage that may not answer) and, like any suspend, wait for the bios in flight; noflush
//!    skips the freeze, and step 2 makes the in-flight bios finish. LVs are fenced in parallel;
//!    one LV that fails does not stop the others;
//! 4. the live tables are read again: an LV counts as fenced only if the kernel now has the
//!    error target for it (an interrupted suspend rolls back and leaves the old table live);
//! 5. only when every LV is fenced, and only when asked (`--drop`): `lvmlockctl --drop VG`.
//!    Under `lvmlockctl --kill` the drop is lvmlockctl's (it runs it after our exit 0; a drop
//!    of ours first would make its own fail), so the default is to drop only when our parent
//!    is not lvmlockctl.
//!
//! Every command has a time limit, and the whole fence a deadline (sanlock's kill grace period
//! is 40 s; the watchdog fires about 60 s after the renewal failed).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::runner::{Command, Output, Runner};

/// The hidden LV in which sanlock keeps a shared VG's leases; never fenced (it is not data,
/// and `vgchange --lock-start` needs it once the storage is back).
pub const LOCK_LV: &str = "lvmlock";

/// Default time limit of one command.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Default deadline of the whole fence (inside sanlock's 40 s kill grace period).
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// Exit status: every active LV of the VG is on the error target (and the locks were dropped
/// when asked).
pub const EXIT_FENCED: u8 = 0;
/// Exit status: at least one LV could still write; nothing was dropped (the watchdog decides).
pub const EXIT_NOT_FENCED: u8 = 1;
/// Exit status: this host's device-mapper devices could not be listed; nothing was done.
pub const EXIT_NO_DEVICES: u8 = 2;
/// Exit status: every LV fenced, but `lvmlockctl --drop` failed.
pub const EXIT_DROP_FAILED: u8 = 3;

/// Whether to run `lvmlockctl --drop VG` after every LV is fenced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DropLocks {
    /// Drop (an admin fencing by hand: lvmlockd(8)'s manual procedure ends with the drop).
    Yes,
    /// Leave it to lvmlockctl --kill, which drops after the kill command's exit 0.
    No,
}

/// How to fence.
#[derive(Debug, Clone)]
pub struct FenceOptions {
    /// Time limit of each command.
    pub command_timeout: Duration,
    /// Deadline of the whole fence; a command is cut at it, and none starts after it.
    pub deadline: Duration,
    /// Whether to drop the VG's locks when every LV is fenced.
    pub drop: DropLocks,
    /// LVs fenced at the same time.
    pub parallel: usize,
    /// `dmsetup`.
    pub dmsetup: String,
    /// `lvmlockctl`.
    pub lvmlockctl: String,
}

impl Default for FenceOptions {
    fn default() -> Self {
        FenceOptions {
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            deadline: DEFAULT_DEADLINE,
            drop: DropLocks::Yes,
            parallel: 8,
            dmsetup: "dmsetup".into(),
            lvmlockctl: "lvmlockctl".into(),
        }
    }
}

/// How loud a fence message is (syslog severities).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// An LV could not be fenced: the host will be reset.
    Emerg,
    /// An LV was fenced (writes now fail).
    Crit,
    /// Something did not go as planned but did not stop the fence.
    Warning,
    /// Progress.
    Info,
}

impl Severity {
    /// The syslog severity number.
    pub fn syslog(self) -> u8 {
        match self {
            Severity::Emerg => 0,
            Severity::Crit => 2,
            Severity::Warning => 4,
            Severity::Info => 6,
        }
    }
}

/// What happened to one LV.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "reason")]
pub enum LvOutcome {
    /// Its table is now the error target: every later I/O fails.
    Fenced,
    /// It already had the error target (an earlier fence).
    AlreadyFenced,
    /// It could still write; why.
    Failed(String),
}

/// One LV of the VG.
#[derive(Debug, Clone, Serialize)]
pub struct LvFence {
    /// `VG/LV`.
    pub lv: String,
    /// Its device-mapper name.
    pub dm_name: String,
    /// Its size in 512-byte sectors.
    pub sectors: u64,
    /// What happened.
    #[serde(flatten)]
    pub outcome: LvOutcome,
    /// Milliseconds from the start of the fence until this LV was done.
    pub done_ms: u64,
}

impl LvFence {
    /// Writes to it fail now.
    pub fn fenced(&self) -> bool {
        matches!(self.outcome, LvOutcome::Fenced | LvOutcome::AlreadyFenced)
    }
}

/// A multipath map under the VG's LVs that was told to stop queueing.
#[derive(Debug, Clone, Serialize)]
pub struct MapNoQueue {
    /// The map.
    pub map: String,
    /// `None` when done, else why not.
    pub error: Option<String>,
}

/// What `lvmlockctl --drop` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "drop", content = "detail")]
pub enum DropOutcome {
    /// Not asked for (lvmlockctl --kill drops itself after our exit 0).
    LeftToLvmlockctl,
    /// Not run: an LV could not be fenced (or the devices could not be listed).
    NotRun,
    /// Done.
    Dropped,
    /// Failed; why.
    Failed(String),
}

/// The whole fence.
#[derive(Debug, Clone, Serialize)]
pub struct FenceReport {
    /// The VG.
    pub vg: String,
    /// Every active top-level LV of the VG (sorted by name).
    pub lvs: Vec<LvFence>,
    /// Multipath maps told `fail_if_no_path`.
    pub maps: Vec<MapNoQueue>,
    /// Why nothing could be done (the device list could not be read).
    pub error: Option<String>,
    /// The drop.
    #[serde(flatten)]
    pub drop: DropOutcome,
    /// Milliseconds the fence took.
    pub elapsed_ms: u64,
    /// The exit status (see the `EXIT_*` constants).
    pub exit_status: u8,
}

/// A device-mapper device as `dmsetup info -c` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmDevice {
    /// Its name.
    pub name: String,
    /// Its UUID (`LVM-<vg uuid><lv uuid>[-layer]` for LVM's).
    pub uuid: String,
    /// `major:minor`.
    pub devno: String,
}

/// One segment of a live table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// First sector.
    pub start: u64,
    /// Length in sectors.
    pub len: u64,
    /// Target type (`linear`, `multipath`, `error`, ...).
    pub target: String,
    /// The target's arguments.
    pub args: String,
}

/// Splits a device-mapper name the way LVM builds it: `VG-LV[-LAYER]`, where a `-` inside
/// the VG or LV name is doubled. `None` for a name that is not of that form.
pub fn split_lvm_name(dm_name: &str) -> Option<(String, String, String)> {
    let mut parts = vec![String::new()];
    let mut chars = dm_name.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '-' {
            if chars.peek() == Some(&'-') {
                chars.next();
                parts.last_mut()?.push('-');
            } else {
                parts.push(String::new());
            }
        } else {
            parts.last_mut()?.push(c);
        }
    }
    match parts.len() {
        2 => Some((parts[0].clone(), parts[1].clone(), String::new())),
        3 => Some((parts[0].clone(), parts[1].clone(), parts[2].clone())),
        _ => None,
    }
    .filter(|(vg, lv, _)| !vg.is_empty() && !lv.is_empty())
}

/// A top-level LVM device: UUID `LVM-` + 64 characters (VG and LV UUID) and no layer suffix.
fn is_top_level_lvm(d: &DmDevice) -> bool {
    d.uuid.len() == 4 + 64 && d.uuid.starts_with("LVM-")
}

/// Parses `dmsetup info -c --noheadings --separator '|' -o name,uuid,devno`.
pub fn parse_dm_info(text: &str) -> Vec<DmDevice> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.trim().split('|');
            let (name, uuid, devno) = (f.next()?, f.next()?, f.next()?);
            if name.is_empty() || !devno.contains(':') {
                return None;
            }
            Some(DmDevice {
                name: name.into(),
                uuid: uuid.into(),
                devno: devno.into(),
            })
        })
        .collect()
}

/// Parses `dmsetup table` (every device: `name: start len target args`).
pub fn parse_tables(text: &str) -> BTreeMap<String, Vec<Segment>> {
    let mut out: BTreeMap<String, Vec<Segment>> = BTreeMap::new();
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(": ") else {
            continue;
        };
        let mut w = rest.split_whitespace();
        let (Some(start), Some(len), Some(target)) = (w.next(), w.next(), w.next()) else {
            out.entry(name.to_string()).or_default();
            continue;
        };
        let (Ok(start), Ok(len)) = (start.parse(), len.parse()) else {
            continue;
        };
        out.entry(name.to_string()).or_default().push(Segment {
            start,
            len,
            target: target.into(),
            args: w.collect::<Vec<_>>().join(" "),
        });
    }
    out
}

fn table_sectors(t: &[Segment]) -> u64 {
    t.iter().map(|s| s.start + s.len).max().unwrap_or(0)
}

fn is_error_table(t: &[Segment]) -> bool {
    !t.is_empty() && t.iter().all(|s| s.target == "error")
}

/// The `major:minor` devices a table's segments use.
fn lower_devnos(t: &[Segment]) -> Vec<String> {
    t.iter()
        .flat_map(|s| s.args.split_whitespace())
        .filter(|w| {
            w.split_once(':').is_some_and(|(a, b)| {
                !a.is_empty()
                    && !b.is_empty()
                    && a.bytes().all(|c| c.is_ascii_digit())
                    && b.bytes().all(|c| c.is_ascii_digit())
            })
        })
        .map(str::to_string)
        .collect()
}

/// The remaining time before `deadline`, capped at `per_command`; `None` once it passed.
fn time_left(start: Instant, deadline: Duration, per_command: Duration) -> Option<Duration> {
    let left = deadline.checked_sub(start.elapsed())?;
    (!left.is_zero()).then(|| left.min(per_command))
}

/// Fences `vg`: see the module documentation. `log` receives every message (the CLI sends
/// them to stderr and syslog).
pub fn fence(
    runner: &dyn Runner,
    vg: &str,
    opts: &FenceOptions,
    log: &(dyn Fn(Severity, &str) + Sync),
) -> FenceReport {
    let start = Instant::now();
    let ms = || start.elapsed().as_millis() as u64;
    let mut report = FenceReport {
        vg: vg.to_string(),
        lvs: Vec::new(),
        maps: Vec::new(),
        error: None,
        drop: DropOutcome::NotRun,
        elapsed_ms: 0,
        exit_status: EXIT_NOT_FENCED,
    };
    let path = path_with_sbin(std::env::var("PATH").ok().as_deref());
    let run = |args: &[&str]| -> Result<Output, String> {
        let t = time_left(start, opts.deadline, opts.command_timeout).ok_or_else(|| {
            format!(
                "the fence's {} s deadline passed before `{} {}`",
                opts.deadline.as_secs_f64(),
                opts.dmsetup,
                args.join(" ")
            )
        })?;
        let cmd = Command::new(&opts.dmsetup)
            .args(args.iter().copied())
            .env("PATH", &path)
            .timeout(t);
        let out = runner.run(&cmd).map_err(|e| e.to_string())?;
        if out.success() {
            Ok(out)
        } else {
            Err(format!(
                "`{}` failed (exit status {}): {}",
                cmd.line(),
                out.status,
                out.stderr_text()
            ))
        }
    };
    log(
        Severity::Crit,
        &format!(
            "fencing VG {vg}: sanlock lost its lease storage; every write of this host to its LVs must stop now"
        ),
    );

    // 1. This host's dm devices and live tables.
    let listed = run(&[
        "info",
        "-c",
        "--noheadings",
        "--separator",
        "|",
        "-o",
        "name,uuid,devno",
    ])
    .and_then(|info| run(&["table"]).map(|t| (info, t)));
    let (devices, tables) = match listed {
        Ok((info, t)) => (
            parse_dm_info(&info.stdout_text()),
            parse_tables(&t.stdout_text()),
        ),
        Err(e) => {
            let msg = format!(
                "cannot list this host's device-mapper devices, so no LV of VG {vg} was fenced: {e}"
            );
            log(Severity::Emerg, &msg);
            report.error = Some(msg);
            report.exit_status = EXIT_NO_DEVICES;
            report.elapsed_ms = ms();
            return report;
        }
    };
    let by_devno: BTreeMap<&str, &DmDevice> =
        devices.iter().map(|d| (d.devno.as_str(), d)).collect();
    let mut targets: Vec<(String, String, u64, bool)> = Vec::new(); // (VG/LV, dm name, sectors, already)
    for d in devices.iter().filter(|d| is_top_level_lvm(d)) {
        let Some((dvg, lv, layer)) = split_lvm_name(&d.name) else {
            continue;
        };
        if dvg != vg || !layer.is_empty() {
            continue;
        }
        if lv == LOCK_LV {
            log(
                Severity::Info,
                &format!("{vg}/{lv} is sanlock's lease LV: left to sanlock"),
            );
            continue;
        }
        let t = tables.get(&d.name).map(Vec::as_slice).unwrap_or_default();
        targets.push((
            format!("{vg}/{lv}"),
            d.name.clone(),
            table_sectors(t),
            is_error_table(t),
        ));
    }
    targets.sort();
    if targets.is_empty() {
        log(
            Severity::Crit,
            &format!("VG {vg} has no active LV on this host: nothing to fence"),
        );
    }

    // 2. Multipath maps under those LVs stop queueing (walk dm devices down from each LV).
    let mut seen = BTreeSet::new();
    let mut stack: Vec<&str> = targets.iter().map(|t| t.1.as_str()).collect();
    let mut maps = BTreeSet::new();
    while let Some(name) = stack.pop() {
        if !seen.insert(name.to_string()) {
            continue;
        }
        let t = tables.get(name).map(Vec::as_slice).unwrap_or_default();
        if t.iter().any(|s| s.target == "multipath") {
            maps.insert(name.to_string());
            continue;
        }
        for dn in lower_devnos(t) {
            if let Some(d) = by_devno.get(dn.as_str()) {
                stack.push(d.name.as_str());
            }
        }
    }
    for m in maps {
        let r = run(&["message", &m, "0", "fail_if_no_path"]);
        let error = r.err();
        match &error {
            None => log(
                Severity::Warning,
                &format!(
                    "multipath map {m} (under VG {vg}) no longer queues: writes waiting for a path fail now"
                ),
            ),
            Some(e) => log(
                Severity::Warning,
                &format!("could not stop multipath map {m} from queueing: {e}"),
            ),
        }
        report.maps.push(MapNoQueue { map: m, error });
    }

    // 3. Every LV on the error target, in parallel; one failure does not stop the others.
    let results: Mutex<Vec<LvFence>> = Mutex::new(Vec::new());
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..opts.parallel.clamp(1, targets.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some((lv, dm, sectors, already)) = targets.get(i) else {
                        break;
                    };
                    let outcome = if *already {
                        LvOutcome::AlreadyFenced
                    } else if *sectors == 0 {
                        LvOutcome::Failed("its live table could not be read".into())
                    } else {
                        let table = format!("0 {sectors} error");
                        match run(&["load", dm, "--table", &table]).and_then(|_| {
                            run(&["resume", "--noflush", "--nolockfs", "--noudevsync", dm])
                        }) {
                            Ok(_) => LvOutcome::Fenced,
                            Err(e) => LvOutcome::Failed(e),
                        }
                    };
                    if let Ok(mut r) = results.lock() {
                        r.push(LvFence {
                            lv: lv.clone(),
                            dm_name: dm.clone(),
                            sectors: *sectors,
                            outcome,
                            done_ms: ms(),
                        });
                    }
                }
            });
        }
    });
    let mut lvs = results.into_inner().unwrap_or_default();
    lvs.sort_by(|a, b| a.lv.cmp(&b.lv));

    // 4. The kernel's word: an LV is fenced only if its live table is the error target now.
    if lvs.iter().any(|l| l.outcome == LvOutcome::Fenced) {
        match run(&["table"]) {
            Ok(t) => {
                let now = parse_tables(&t.stdout_text());
                for l in lvs.iter_mut().filter(|l| l.outcome == LvOutcome::Fenced) {
                    let live = now.get(&l.dm_name).map(Vec::as_slice).unwrap_or_default();
                    if !is_error_table(live) {
                        l.outcome = LvOutcome::Failed(format!(
                            "dmsetup said yes but its live table is still `{}`",
                            live.first().map(|s| s.target.as_str()).unwrap_or("none")
                        ));
                    }
                }
            }
            Err(e) => {
                for l in lvs.iter_mut().filter(|l| l.outcome == LvOutcome::Fenced) {
                    l.outcome = LvOutcome::Failed(format!("cannot verify its live table: {e}"));
                }
            }
        }
    }
    for l in &lvs {
        match &l.outcome {
            LvOutcome::Fenced => log(
                Severity::Crit,
                &format!(
                    "FENCED {} ({}): its table is the error target now, every write fails",
                    l.lv, l.dm_name
                ),
            ),
            LvOutcome::AlreadyFenced => log(
                Severity::Crit,
                &format!(
                    "FENCED {} ({}): it already had the error target",
                    l.lv, l.dm_name
                ),
            ),
            LvOutcome::Failed(e) => log(
                Severity::Emerg,
                &format!(
                    "NOT FENCED {} ({}): it may still write: {e}; the watchdog must reset this host",
                    l.lv, l.dm_name
                ),
            ),
        }
    }
    report.lvs = lvs;
    let all = report.lvs.iter().all(LvFence::fenced);

    // 5. The drop, only after every LV is fenced.
    report.exit_status = if !all {
        log(
            Severity::Emerg,
            &format!(
                "VG {vg}: {} of {} LV(s) could not be fenced; locks not dropped",
                report.lvs.iter().filter(|l| !l.fenced()).count(),
                report.lvs.len()
            ),
        );
        report.drop = DropOutcome::NotRun;
        EXIT_NOT_FENCED
    } else if opts.drop == DropLocks::No {
        report.drop = DropOutcome::LeftToLvmlockctl;
        log(
            Severity::Crit,
            &format!(
                "VG {vg}: {} LV(s) fenced; lvmlockctl drops the VG's locks after this exit 0",
                report.lvs.len()
            ),
        );
        EXIT_FENCED
    } else {
        let drop = match time_left(start, opts.deadline, opts.command_timeout) {
            None => Err("the fence's deadline passed".to_string()),
            Some(t) => {
                let cmd = Command::new(&opts.lvmlockctl)
                    .args(["--drop", vg])
                    .env("PATH", &path)
                    .timeout(t);
                match runner.run(&cmd) {
                    Ok(o) if o.success() => Ok(()),
                    Ok(o) => Err(format!(
                        "`{}` failed (exit status {}): {}",
                        cmd.line(),
                        o.status,
                        o.stderr_text()
                    )),
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        match drop {
            Ok(()) => {
                log(
                    Severity::Crit,
                    &format!(
                        "VG {vg}: {} LV(s) fenced and the VG's locks dropped (lvmlockctl --drop)",
                        report.lvs.len()
                    ),
                );
                report.drop = DropOutcome::Dropped;
                EXIT_FENCED
            }
            Err(e) => {
                log(
                    Severity::Emerg,
                    &format!("VG {vg}: every LV fenced, but dropping its locks failed: {e}"),
                );
                report.drop = DropOutcome::Failed(e);
                EXIT_DROP_FAILED
            }
        }
    };
    report.elapsed_ms = ms();
    report
}

/// The human report (one line per LV), for stderr.
pub fn render(r: &FenceReport) -> String {
    let mut s = String::new();
    let w = r.lvs.iter().map(|l| l.lv.len()).max().unwrap_or(2).max(2);
    s.push_str(&format!(
        "{:w$}  {:>12}  {:8}  RESULT\n",
        "LV", "SECTORS", "DONE_MS"
    ));
    for l in &r.lvs {
        let res = match &l.outcome {
            LvOutcome::Fenced => "fenced (error target)".to_string(),
            LvOutcome::AlreadyFenced => "fenced (already)".to_string(),
            LvOutcome::Failed(e) => format!("NOT FENCED: {e}"),
        };
        s.push_str(&format!(
            "{:w$}  {:>12}  {:8}  {res}\n",
            l.lv, l.sectors, l.done_ms
        ));
    }
    for m in &r.maps {
        match &m.error {
            None => s.push_str(&format!("map {}: fail_if_no_path\n", m.map)),
            Some(e) => s.push_str(&format!("map {}: fail_if_no_path FAILED: {e}\n", m.map)),
        }
    }
    if let Some(e) = &r.error {
        s.push_str(&format!("{e}\n"));
    }
    let drop = match &r.drop {
        DropOutcome::LeftToLvmlockctl => "left to lvmlockctl".to_string(),
        DropOutcome::NotRun => "not run".to_string(),
        DropOutcome::Dropped => "done".to_string(),
        DropOutcome::Failed(e) => format!("FAILED: {e}"),
    };
    s.push_str(&format!(
        "VG {}: {} of {} LV(s) fenced in {} ms; drop: {drop}; exit status {}\n",
        r.vg,
        r.lvs.iter().filter(|l| l.fenced()).count(),
        r.lvs.len(),
        r.elapsed_ms,
        r.exit_status
    ));
    s
}

/// `hostsync fence VG` (main.rs wiring): `drop` is `yes`, `no` or `auto` (drop unless our
/// parent is lvmlockctl); messages go to stderr and syslog, the report to stderr (stdout is a
/// pipe lvmlockctl never reads), the JSON report to stdout only with `json`. Returns the exit
/// status.
pub fn main(vg: &str, drop: &str, command_timeout_s: f64, deadline_s: f64, json: bool) -> u8 {
    let drop = match drop {
        "yes" => DropLocks::Yes,
        "no" => DropLocks::No,
        _ if parent_is_lvmlockctl() => DropLocks::No,
        _ => DropLocks::Yes,
    };
    let opts = FenceOptions {
        command_timeout: Duration::try_from_secs_f64(command_timeout_s)
            .unwrap_or(DEFAULT_COMMAND_TIMEOUT),
        deadline: Duration::try_from_secs_f64(deadline_s).unwrap_or(DEFAULT_DEADLINE),
        drop,
        ..FenceOptions::default()
    };
    let log = |s: Severity, m: &str| {
        eprintln!("hostsync fence: {m}");
        syslog(s, m);
    };
    let rep = fence(&crate::runner::SystemRunner, vg, &opts, &log);
    eprint!("{}", render(&rep));
    if json {
        match serde_json::to_string_pretty(&rep) {
            Ok(j) => println!("{j}"),
            Err(e) => eprintln!("hostsync fence: cannot write the JSON report: {e}"),
        }
    }
    rep.exit_status
}

/// True when this process was started by `lvmlockctl` (as its kill command).
pub fn parent_is_lvmlockctl() -> bool {
    let ppid = std::os::unix::process::parent_id();
    std::fs::read_to_string(format!("/proc/{ppid}/comm"))
        .map(|c| c.trim() == "lvmlockctl")
        .unwrap_or(false)
}

/// Sends one message to syslog (`/dev/log`, facility daemon); silently nothing when there is
/// no syslog socket.
pub fn syslog(sev: Severity, msg: &str) {
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(_) => return,
    };
    let line = format!(
        "<{}>hostsync[{}]: {msg}",
        3 * 8 + sev.syslog(),
        std::process::id()
    );
    let _ = sock.send_to(line.as_bytes(), "/dev/log");
}

/// PATH with the system directories where dmsetup and lvmlockctl live appended: sanlock's
/// helper may start lvmlockctl (and so us) with a minimal environment.
pub fn path_with_sbin(path: Option<&str>) -> String {
    let mut p: Vec<&str> = path
        .unwrap_or("")
        .split(':')
        .filter(|s| !s.is_empty())
        .collect();
    for d in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        if !p.contains(&d) {
            p.push(d);
        }
    }
    p.join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::ScriptedRunner;

    const VGU: &str = "Xf3kQ9aV0bR7cT2dY5eW8fZ1gH4iJ6kL";

    fn uuid(lv: &str) -> String {
        // 32 characters of LV UUID made from the LV's name.
        let mut s: String = lv.chars().filter(char::is_ascii_alphanumeric).collect();
        while s.len() < 32 {
            s.push('0');
        }
        format!("LVM-{VGU}{}", &s[..32])
    }

    /// A host with VG `vg` (domu1, domu2, domu3 on mpatha; lvmlock on mpathb), another VG
    /// `other` (its LV on mpathc), and a snapshot layer of domu3.
    fn host() -> (String, String) {
        let info = [
            format!("vg-domu1|{}|253:3", uuid("domu1")),
            format!("vg-domu2|{}|253:4", uuid("domu2")),
            format!("vg-domu3|{}|253:5", uuid("domu3")),
            format!("vg-domu3-real|{}-real|253:6", uuid("domu3")),
            format!("vg-lvmlock|{}|253:7", uuid("lvmlock")),
            format!("other-domu1|{}|253:8", uuid("otherdomu1")),
            "mpatha|mpath-3600a|253:0".to_string(),
            "mpathb|mpath-3600b|253:1".to_string(),
            "mpathc|mpath-3600c|253:2".to_string(),
        ]
        .join("\n");
        let tables = "\
mpatha: 0 2097152 multipath 1 queue_if_no_path 0 1 1 service-time 0 2 1 8:16 1 8:32 1
mpathb: 0 131072 multipath 1 queue_if_no_path 0 1 1 service-time 0 2 1 8:48 1 8:64 1
mpathc: 0 2097152 multipath 0 0 1 1 service-time 0 2 1 8:80 1 8:96 1
vg-domu1: 0 409600 linear 253:0 2048
vg-domu1: 409600 204800 linear 253:0 1000000
vg-domu2: 0 204800 linear 253:0 411648
vg-domu3: 0 204800 snapshot-origin 253:6
vg-domu3-real: 0 204800 linear 253:0 616448
vg-lvmlock: 0 524288 linear 253:1 2048
other-domu1: 0 204800 linear 253:2 2048
"
        .to_string();
        (info, tables)
    }

    fn fenced_tables(tables: &str, fenced: &[&str]) -> String {
        let mut out = String::new();
        let mut done = BTreeSet::new();
        for line in tables.lines() {
            let name = line.split(": ").next().unwrap_or("");
            if fenced.contains(&name) {
                if done.insert(name) {
                    let t = parse_tables(tables);
                    out.push_str(&format!("{name}: 0 {} error\n", table_sectors(&t[name])));
                }
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    fn script(r: &ScriptedRunner, info: &str, tables: &str) {
        r.expect(&["dmsetup", "info"], Output::ok(info))
            .expect(&["dmsetup", "table"], Output::ok(tables));
    }

    /// The host of [`host`] where every command succeeds and every LV of `vg` ends on the
    /// error target (the drop is the caller's to script).
    fn every_lv_fences() -> ScriptedRunner {
        let (info, tables) = host();
        let r = ScriptedRunner::new();
        script(&r, &info, &tables);
        r.always(&["dmsetup", "message"], Output::ok(""))
            .always(&["dmsetup", "load"], Output::ok(""))
            .always(&["dmsetup", "resume"], Output::ok(""))
            .expect(
                &["dmsetup", "table"],
                Output::ok(fenced_tables(
                    &tables,
                    &["vg-domu1", "vg-domu2", "vg-domu3"],
                )),
            );
        r
    }

    fn quiet(_: Severity, _: &str) {}

    fn opts(drop: DropLocks) -> FenceOptions {
        FenceOptions {
            drop,
            ..FenceOptions::default()
        }
    }

    #[test]
    fn splits_lvm_names_with_doubled_dashes() {
        assert_eq!(
            split_lvm_name("vg-domu1"),
            Some(("vg".into(), "domu1".into(), String::new()))
        );
        assert_eq!(
            split_lvm_name("my--vg-dom--u1-real"),
            Some(("my-vg".into(), "dom-u1".into(), "real".into()))
        );
        assert_eq!(split_lvm_name("mpatha"), None);
        assert_eq!(split_lvm_name("-x"), None);
        assert_eq!(split_lvm_name("a-b-c-d"), None);
    }

    #[test]
    fn parses_info_and_multi_segment_tables() {
        let (info, tables) = host();
        let d = parse_dm_info(&format!("{info}\nNo devices found\n"));
        assert_eq!(d.len(), 9);
        assert_eq!(d[0].name, "vg-domu1");
        assert_eq!(d[0].devno, "253:3");
        let t = parse_tables(&tables);
        assert_eq!(table_sectors(&t["vg-domu1"]), 614400);
        assert_eq!(lower_devnos(&t["vg-domu1"]), vec!["253:0", "253:0"]);
        assert_eq!(lower_devnos(&t["mpatha"]), vec!["8:16", "8:32"]);
        assert!(parse_tables("No devices found\n").is_empty());
    }

    #[test]
    fn every_lv_of_the_vg_gets_the_error_target_then_the_drop() {
        let r = every_lv_fences();
        r.expect(&["lvmlockctl", "--drop", "vg"], Output::ok(""));
        let msgs = Mutex::new(Vec::new());
        let log = |s: Severity, m: &str| msgs.lock().unwrap().push((s, m.to_string()));
        let rep = fence(&r, "vg", &opts(DropLocks::Yes), &log);
        assert_eq!(rep.exit_status, EXIT_FENCED, "{}", render(&rep));
        let names: Vec<_> = rep.lvs.iter().map(|l| l.lv.as_str()).collect();
        assert_eq!(
            names,
            ["vg/domu1", "vg/domu2", "vg/domu3"],
            "no lvmlock, no layer, no other VG"
        );
        assert!(rep.lvs.iter().all(|l| l.outcome == LvOutcome::Fenced));
        assert_eq!(rep.drop, DropOutcome::Dropped);
        let lines = r.lines();
        // The error table has each LV's full size, and the resume neither flushes nor waits
        // for udev.
        assert!(
            lines.contains(&"dmsetup load vg-domu1 --table '0 614400 error'".to_string()),
            "{lines:#?}"
        );
        assert!(lines.contains(&"dmsetup load vg-domu2 --table '0 204800 error'".to_string()));
        assert!(
            lines
                .contains(&"dmsetup resume --noflush --nolockfs --noudevsync vg-domu3".to_string())
        );
        // Only the map under the VG's data LVs stops queueing (not mpathb under lvmlock, not
        // mpathc of the other VG), and before any LV is touched.
        let msg: Vec<_> = lines.iter().filter(|l| l.contains("message")).collect();
        assert_eq!(msg, ["dmsetup message mpatha 0 fail_if_no_path"]);
        let first_load = lines.iter().position(|l| l.contains(" load ")).unwrap();
        assert!(lines.iter().position(|l| l.contains("message")).unwrap() < first_load);
        // Nothing else of the other VG or lvmlock.
        assert!(!lines.iter().any(|l| l.contains("other-domu1")
            || l.contains("lvmlock ")
            || l.ends_with("vg-lvmlock")));
        // The drop is the very last command, after the verification.
        assert_eq!(lines.last().unwrap(), "lvmlockctl --drop vg");
        assert_eq!(lines[lines.len() - 2], "dmsetup table");
        // Loud: each fenced LV is named at crit.
        let m = msgs.lock().unwrap();
        for lv in ["vg/domu1", "vg/domu2", "vg/domu3"] {
            assert!(
                m.iter()
                    .any(|(s, t)| *s == Severity::Crit && t.contains(&format!("FENCED {lv}"))),
                "{m:#?}"
            );
        }
    }

    #[test]
    fn one_failing_lv_does_not_stop_the_others_and_nothing_is_dropped() {
        let (info, tables) = host();
        let r = ScriptedRunner::new();
        script(&r, &info, &tables);
        r.always(&["dmsetup", "message"], Output::ok(""))
            .always(&["dmsetup", "load"], Output::ok(""))
            .expect(
                &[
                    "dmsetup",
                    "resume",
                    "--noflush",
                    "--nolockfs",
                    "--noudevsync",
                    "vg-domu2",
                ],
                Output::fail(
                    1,
                    "device-mapper: resume ioctl on vg-domu2 failed: Interrupted system call",
                ),
            )
            .always(&["dmsetup", "resume"], Output::ok(""))
            .expect(
                &["dmsetup", "table"],
                Output::ok(fenced_tables(&tables, &["vg-domu1", "vg-domu3"])),
            );
        let rep = fence(&r, "vg", &opts(DropLocks::Yes), &quiet);
        assert_eq!(rep.exit_status, EXIT_NOT_FENCED, "{}", render(&rep));
        let by: BTreeMap<_, _> = rep
            .lvs
            .iter()
            .map(|l| (l.lv.as_str(), &l.outcome))
            .collect();
        assert_eq!(by["vg/domu1"], &LvOutcome::Fenced);
        assert_eq!(by["vg/domu3"], &LvOutcome::Fenced);
        assert!(matches!(by["vg/domu2"], LvOutcome::Failed(e) if e.contains("Interrupted")));
        assert_eq!(rep.drop, DropOutcome::NotRun);
        assert!(
            !r.lines().iter().any(|l| l.starts_with("lvmlockctl")),
            "no drop: {:#?}",
            r.lines()
        );
        assert!(render(&rep).contains("NOT FENCED"));
        // The JSON report names each LV with its outcome (and the reason when it failed).
        let j = serde_json::to_value(&rep).unwrap();
        assert_eq!(j["exit_status"], 1);
        assert_eq!(j["drop"], "not_run");
        assert_eq!(j["lvs"][0]["lv"], "vg/domu1");
        assert_eq!(j["lvs"][0]["outcome"], "fenced");
        assert_eq!(j["lvs"][1]["outcome"], "failed");
        assert!(
            j["lvs"][1]["reason"]
                .as_str()
                .unwrap()
                .contains("Interrupted")
        );
        assert_eq!(j["maps"][0]["map"], "mpatha");
    }

    #[test]
    fn an_lv_whose_live_table_did_not_change_is_not_fenced() {
        // dmsetup exits 0 but the kernel still has the linear table (e.g. an interrupted
        // suspend rolled back): the verification catches it.
        let (info, tables) = host();
        let r = ScriptedRunner::new();
        script(&r, &info, &tables);
        r.always(&["dmsetup", "message"], Output::ok(""))
            .always(&["dmsetup", "load"], Output::ok(""))
            .always(&["dmsetup", "resume"], Output::ok(""))
            .expect(
                &["dmsetup", "table"],
                Output::ok(fenced_tables(&tables, &["vg-domu1", "vg-domu2"])),
            );
        let rep = fence(&r, "vg", &opts(DropLocks::Yes), &quiet);
        assert_eq!(rep.exit_status, EXIT_NOT_FENCED);
        let d3 = rep.lvs.iter().find(|l| l.lv == "vg/domu3").unwrap();
        assert!(
            matches!(&d3.outcome, LvOutcome::Failed(e) if e.contains("snapshot-origin")),
            "{d3:?}"
        );
    }

    #[test]
    fn every_command_has_a_time_limit_and_a_timed_out_lv_is_reported() {
        let (info, tables) = host();
        let r = ScriptedRunner::new();
        script(&r, &info, &tables);
        r.always(&["dmsetup", "message"], Output::ok(""))
            .always(&["dmsetup", "load"], Output::ok(""))
            .expect_timeout(&[
                "dmsetup",
                "resume",
                "--noflush",
                "--nolockfs",
                "--noudevsync",
                "vg-domu1",
            ])
            .always(&["dmsetup", "resume"], Output::ok(""))
            .expect(
                &["dmsetup", "table"],
                Output::ok(fenced_tables(&tables, &["vg-domu2", "vg-domu3"])),
            );
        let o = FenceOptions {
            command_timeout: Duration::from_secs(4),
            deadline: Duration::from_secs(20),
            ..opts(DropLocks::Yes)
        };
        let rep = fence(&r, "vg", &o, &quiet);
        assert_eq!(rep.exit_status, EXIT_NOT_FENCED);
        let d1 = rep.lvs.iter().find(|l| l.lv == "vg/domu1").unwrap();
        assert!(
            matches!(&d1.outcome, LvOutcome::Failed(e) if e.contains("did not finish within")),
            "{d1:?}"
        );
        assert_eq!(rep.lvs.iter().filter(|l| l.fenced()).count(), 2);
        for c in r.calls() {
            assert!(
                c.timeout <= Duration::from_secs(4) && !c.timeout.is_zero(),
                "{c:?}"
            );
        }
    }

    #[test]
    fn nothing_starts_after_the_deadline() {
        let (info, tables) = host();
        let r = ScriptedRunner::new();
        script(&r, &info, &tables);
        let o = FenceOptions {
            deadline: Duration::ZERO,
            ..opts(DropLocks::Yes)
        };
        let rep = fence(&r, "vg", &o, &quiet);
        assert_eq!(rep.exit_status, EXIT_NO_DEVICES);
        assert!(r.calls().is_empty(), "{:#?}", r.lines());
        assert!(rep.error.unwrap().contains("deadline"));
    }

    #[test]
    fn under_lvmlockctl_the_drop_is_left_to_it() {
        let r = every_lv_fences();
        let rep = fence(&r, "vg", &opts(DropLocks::No), &quiet);
        assert_eq!(rep.exit_status, EXIT_FENCED);
        assert_eq!(rep.drop, DropOutcome::LeftToLvmlockctl);
        assert!(!r.lines().iter().any(|l| l.starts_with("lvmlockctl")));
    }

    #[test]
    fn an_already_fenced_lv_is_not_touched_again() {
        let (info, tables) = host();
        let before = fenced_tables(&tables, &["vg-domu1", "vg-domu2", "vg-domu3"]);
        let r = ScriptedRunner::new();
        script(&r, &info, &before);
        r.always(&["dmsetup", "message"], Output::ok(""))
            .expect(&["lvmlockctl", "--drop", "vg"], Output::ok(""));
        let rep = fence(&r, "vg", &opts(DropLocks::Yes), &quiet);
        assert_eq!(rep.exit_status, EXIT_FENCED, "{}", render(&rep));
        assert!(
            rep.lvs
                .iter()
                .all(|l| l.outcome == LvOutcome::AlreadyFenced)
        );
        assert!(
            !r.lines()
                .iter()
                .any(|l| l.contains(" load ") || l.contains(" resume "))
        );
    }

    #[test]
    fn a_vg_without_active_lvs_is_fenced_trivially_and_dropped() {
        let (info, tables) = host();
        let r = ScriptedRunner::new();
        script(&r, &info, &tables);
        r.expect(&["lvmlockctl", "--drop", "nosuch"], Output::ok(""));
        let rep = fence(&r, "nosuch", &opts(DropLocks::Yes), &quiet);
        assert_eq!(rep.exit_status, EXIT_FENCED);
        assert!(rep.lvs.is_empty());
        assert_eq!(
            r.lines(),
            [
                "dmsetup info -c --noheadings --separator | -o name,uuid,devno",
                "dmsetup table",
                "lvmlockctl --drop nosuch"
            ]
        );
    }

    #[test]
    fn listing_failure_fences_nothing_and_says_so() {
        let r = ScriptedRunner::new();
        r.expect(
            &["dmsetup", "info"],
            Output::fail(1, "/dev/mapper/control: open failed: Permission denied"),
        );
        let msgs = Mutex::new(Vec::new());
        let log = |s: Severity, m: &str| msgs.lock().unwrap().push((s, m.to_string()));
        let rep = fence(&r, "vg", &opts(DropLocks::Yes), &log);
        assert_eq!(rep.exit_status, EXIT_NO_DEVICES);
        assert!(rep.error.as_deref().unwrap().contains("Permission denied"));
        assert!(
            msgs.lock()
                .unwrap()
                .iter()
                .any(|(s, _)| *s == Severity::Emerg)
        );
    }

    #[test]
    fn a_failed_drop_has_its_own_exit_status() {
        let r = every_lv_fences();
        r.expect(
            &["lvmlockctl", "--drop", "vg"],
            Output::fail(1, "Cannot connect to lvmlockd."),
        );
        let rep = fence(&r, "vg", &opts(DropLocks::Yes), &quiet);
        assert_eq!(rep.exit_status, EXIT_DROP_FAILED);
        assert!(matches!(rep.drop, DropOutcome::Failed(ref e) if e.contains("lvmlockd")));
    }

    #[test]
    fn path_gets_the_system_directories() {
        assert_eq!(path_with_sbin(None), "/usr/sbin:/sbin:/usr/bin:/bin");
        assert_eq!(
            path_with_sbin(Some("/opt/x:/usr/bin")),
            "/opt/x:/usr/bin:/usr/sbin:/sbin:/bin"
        );
    }
}
