//! `hostsync doctor`: is this host ready for exclusive activation? Each finding says what was
//! seen, why it matters and the command that fixes it; the exit status is the worst severity
//! (0 clean, 1 warnings, 2 errors).
//!
//! Every file and `/proc` / `/sys` read goes through the [`Probe`]'s root and every command
//! through its runner, so each finding is tested both ways on fixtures. Checks that need the
//! registry (host_id unique, io_timeout equal) say they were skipped without one: a warning,
//! never a silent pass.

use serde::Serialize;

use crate::lvm::Lvm;
use crate::lvstate::{HostLvm, cluster_lvm_state};
use crate::probe::{Probe, SanlockStatus, option_value};
use crate::registry::Registry;

/// Where the project's udev rule is installed (it marks multipath member paths so nothing but
/// the map uses them; shipped as contrib/udev/ with this name).
pub const UDEV_RULE: &str = "/etc/udev/rules.d/56-hostsync-multipath-members.rules";

/// The kill command lvmlockd should run when sanlock loses the lease storage.
pub const KILL_COMMAND: &str = "/usr/sbin/hostsync fence";

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Fine.
    Ok,
    /// Works, but not as it should (or could not be checked).
    Warning,
    /// Exclusive activation or fencing is not safe.
    Error,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The check's name.
    pub check: &'static str,
    /// Its severity.
    pub severity: Severity,
    /// What was seen.
    pub message: String,
    /// Why it matters (empty when ok).
    pub why: String,
    /// The command or change that fixes it (empty when ok).
    pub fix: String,
}

/// The doctor's report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// This host.
    pub host: String,
    /// Every check, in order.
    pub findings: Vec<Finding>,
    /// The worst severity.
    pub worst: Severity,
}

impl Report {
    /// 0 clean, 1 warnings, 2 errors.
    pub fn exit_code(&self) -> u8 {
        match self.worst {
            Severity::Ok => 0,
            Severity::Warning => 1,
            Severity::Error => 2,
        }
    }
}

fn ok(check: &'static str, message: impl Into<String>) -> Finding {
    Finding {
        check,
        severity: Severity::Ok,
        message: message.into(),
        why: String::new(),
        fix: String::new(),
    }
}

fn bad(
    check: &'static str,
    severity: Severity,
    message: impl Into<String>,
    why: impl Into<String>,
    fix: impl Into<String>,
) -> Finding {
    Finding {
        check,
        severity,
        message: message.into(),
        why: why.into(),
        fix: fix.into(),
    }
}

const WHY_WATCHDOG: &str = "without the watchdog a host that lost its lease storage keeps writing after another host took its leases (8 x io_timeout + 60 s later): nothing fences it";

/// Runs every check. `reg` is the registry, or why there is none.
pub fn run(
    probe: &Probe<'_>,
    reg: std::result::Result<&dyn Registry, String>,
    host: &str,
) -> Report {
    let status = probe.sanlock_status();
    let records = reg
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|r| cluster_lvm_state(*r).map_err(|e| e.to_string()));
    let mut f = vec![
        lvmlockd(probe),
        sanlock_watchdog(probe),
        wdmd(probe),
        watchdog_device(probe),
    ];
    f.extend(host_id(probe, status.as_ref(), &records, host));
    f.push(io_timeout(probe, status.as_ref(), &records, host));
    f.push(lockspaces(probe, status.as_ref()));
    f.push(member_paths(probe));
    f.push(udev_rule(probe));
    f.push(kill_command(probe));
    let worst = f.iter().map(|x| x.severity).max().unwrap_or(Severity::Ok);
    Report {
        host: host.into(),
        findings: f,
        worst,
    }
}

fn lvmlockd(p: &Probe<'_>) -> Finding {
    match p.process("lvmlockd") {
        Some(_) => ok("lvmlockd", "lvmlockd is running"),
        None => bad(
            "lvmlockd",
            Severity::Error,
            "lvmlockd is not running",
            "without lvmlockd, LVM takes no lease on a shared VG and cannot activate its LVs; `lvchange -ay` on a VG that is not shared is not stopped on another host",
            "systemctl enable --now lvmlockd (and set global/use_lvmlockd = 1 in lvm.conf)",
        ),
    }
}

/// `-w 0` in a shell-style options string (`sanlock_opts="-w 0"`).
fn opts_turn_watchdog_off(opts: &str) -> bool {
    let mut argv = vec!["sanlock".to_string()];
    argv.extend(opts.split_whitespace().map(str::to_string));
    option_value(&argv, &["-w"]).as_deref() == Some("0")
}

/// The last uncommented `NAME=value` of a shell defaults file, quotes removed.
fn shell_var(text: &str, name: &str) -> Option<String> {
    text.lines()
        .rev()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim().trim_matches(['"', '\'']).to_string())
}

fn sanlock_watchdog(p: &Probe<'_>) -> Finding {
    const CHECK: &str = "sanlock-watchdog";
    let fix = "set sanlock_opts=\"-w 1\" in /etc/default/sanlock (and use_watchdog = 1 in /etc/sanlock/sanlock.conf if set), enable wdmd (enabled=1 in /etc/default/wdmd; systemctl enable --now wdmd), then systemctl restart sanlock";
    let running = p.process("sanlock");
    if let Some(args) = &running
        && option_value(args, &["-w"]).as_deref() == Some("0")
    {
        return bad(
            CHECK,
            Severity::Error,
            format!(
                "sanlock runs with -w 0 (watchdog off): `{}`",
                args.join(" ")
            ),
            WHY_WATCHDOG,
            fix,
        );
    }
    if let Ok(Some(text)) = p.read("/etc/default/sanlock")
        && let Some(opts) = shell_var(&text, "sanlock_opts")
        && opts_turn_watchdog_off(&opts)
    {
        return bad(
            CHECK,
            Severity::Error,
            format!(
                "/etc/default/sanlock sets sanlock_opts=\"{opts}\" (Debian's default): sanlock starts without its watchdog"
            ),
            WHY_WATCHDOG,
            fix,
        );
    }
    if let Ok(Some(text)) = p.read("/etc/sanlock/sanlock.conf")
        && shell_var(&text, "use_watchdog").as_deref() == Some("0")
    {
        return bad(
            CHECK,
            Severity::Error,
            "/etc/sanlock/sanlock.conf sets use_watchdog = 0",
            WHY_WATCHDOG,
            fix,
        );
    }
    match running {
        Some(_) => ok(CHECK, "sanlock is running with its watchdog on"),
        None => bad(
            CHECK,
            Severity::Error,
            "sanlock is not running",
            "lvmlockd keeps the leases of shared VGs in sanlock; without it no LV of a shared VG can be activated",
            "systemctl enable --now wdmd sanlock",
        ),
    }
}

fn wdmd(p: &Probe<'_>) -> Finding {
    match p.process("wdmd") {
        Some(_) => ok("wdmd", "wdmd is running"),
        None => bad(
            "wdmd",
            Severity::Error,
            "wdmd is not running (Debian ships it disabled: enabled=0 in /etc/default/wdmd)",
            "sanlock's watchdog goes through wdmd: without it sanlock cannot reset a host that fails to stop writing",
            "set enabled=1 in /etc/default/wdmd; systemctl enable --now wdmd",
        ),
    }
}

fn watchdog_device(p: &Probe<'_>) -> Finding {
    if p.exists("/dev/watchdog") {
        ok("watchdog-device", "/dev/watchdog is present")
    } else {
        bad(
            "watchdog-device",
            Severity::Error,
            "/dev/watchdog is missing",
            "wdmd needs a watchdog device to reset the host when sanlock cannot stop its lease holders",
            "modprobe softdog && echo softdog > /etc/modules-load.d/softdog.conf (or enable the hardware watchdog)",
        )
    }
}

fn others<'a>(
    records: &'a std::result::Result<Vec<HostLvm>, String>,
    host: &'a str,
) -> std::result::Result<impl Iterator<Item = &'a HostLvm>, &'a String> {
    records
        .as_ref()
        .map(|v| v.iter().filter(move |r| r.host != host))
}

fn host_id(
    p: &Probe<'_>,
    status: Option<&SanlockStatus>,
    records: &std::result::Result<Vec<HostLvm>, String>,
    host: &str,
) -> Vec<Finding> {
    let Some((id, from)) = p.host_id(status) else {
        return vec![bad(
            "host-id",
            Severity::Error,
            "no sanlock host_id is set (no lockspace joined, lvmlockd has no --host-id, lvm.conf has no local/host_id)",
            "every host needs its own host_id in each VG's lockspace; lvmlockd cannot start a shared VG without one",
            "set host_id = N (unique in the cluster, 1-2000) in the local section of /etc/lvm/lvmlocal.conf, then restart lvmlockd",
        )];
    };
    let mine = ok("host-id", format!("host_id {id} (from {from})"));
    let unique = match others(records, host) {
        Err(why) => bad(
            "host-id-unique",
            Severity::Warning,
            format!(
                "skipped: whether host_id {id} is unique in the cluster cannot be checked without the registry ({why})"
            ),
            "two hosts with one host_id share a delta lease: each renews the other's, and leases stop being exclusive",
            "configure the registry (--registry or [cluster] registry) and run `hostsync publish` on every host",
        ),
        Ok(it) => {
            let dup: Vec<&str> = it
                .filter(|r| r.host_id == Some(id))
                .map(|r| r.host.as_str())
                .collect();
            if dup.is_empty() {
                ok(
                    "host-id-unique",
                    format!("no other published host uses host_id {id}"),
                )
            } else {
                bad(
                    "host-id-unique",
                    Severity::Error,
                    format!("host_id {id} is also used by {}", dup.join(", ")),
                    "two hosts with one host_id share a delta lease: each renews the other's, and leases stop being exclusive",
                    "give this host a host_id no other host uses (local/host_id in /etc/lvm/lvmlocal.conf), restart lvmlockd, `hostsync publish`",
                )
            }
        }
    };
    vec![mine, unique]
}

fn io_timeout(
    p: &Probe<'_>,
    status: Option<&SanlockStatus>,
    records: &std::result::Result<Vec<HostLvm>, String>,
    host: &str,
) -> Finding {
    const CHECK: &str = "io-timeout";
    const WHY: &str = "sanlock does not detect hosts with different io_timeouts: one host may take a lease before the other has given up renewing it, so both write (oVirt: \"this misconfiguration could lead to data corruption\")";
    let Some((mine, from)) = p.io_timeout(status) else {
        return bad(
            CHECK,
            Severity::Warning,
            "skipped: this host's io_timeout is unknown (lvmlockd is not running)",
            WHY,
            "start lvmlockd, then run `hostsync doctor` again",
        );
    };
    match others(records, host) {
        Err(why) => bad(
            CHECK,
            Severity::Warning,
            format!(
                "skipped: io_timeout {mine} s (from {from}) cannot be compared with the other hosts' without the registry ({why})"
            ),
            WHY,
            "configure the registry (--registry or [cluster] registry) and run `hostsync publish` on every host",
        ),
        Ok(it) => {
            let diff: Vec<String> = it
                .filter_map(|r| {
                    r.io_timeout
                        .filter(|t| *t != mine)
                        .map(|t| format!("{} has {t} s", r.host))
                })
                .collect();
            if diff.is_empty() {
                ok(
                    CHECK,
                    format!("io_timeout {mine} s (from {from}), the same as every published host"),
                )
            } else {
                bad(
                    CHECK,
                    Severity::Error,
                    format!(
                        "io_timeout is {mine} s here (from {from}) but {}",
                        diff.join(", ")
                    ),
                    WHY,
                    "use one io_timeout everywhere (lvmlockd -o / --sanlock-timeout, or sanlock's default 10 s), restart lvmlockd, `hostsync publish`",
                )
            }
        }
    }
}

fn lockspaces(p: &Probe<'_>, status: Option<&SanlockStatus>) -> Finding {
    const CHECK: &str = "lockspaces";
    let vgs = match Lvm::new(p.runner).vgs(&[]) {
        Ok(v) => v,
        Err(e) => {
            return bad(
                CHECK,
                Severity::Warning,
                format!("skipped: the VGs cannot be listed ({e})"),
                "a shared VG whose lockspace is not started cannot activate LVs",
                "vgs (see LVM's message)",
            );
        }
    };
    let shared: Vec<&str> = vgs
        .iter()
        .filter(|v| v.is_shared())
        .map(|v| v.name.as_str())
        .collect();
    if shared.is_empty() {
        return ok(CHECK, "no shared VG");
    }
    let stopped: Vec<&str> = shared
        .iter()
        .copied()
        .filter(|vg| status.and_then(|s| s.vg_lockspace(vg)).is_none())
        .collect();
    if stopped.is_empty() {
        ok(CHECK, format!("lockspaces started: {}", shared.join(", ")))
    } else {
        bad(
            CHECK,
            Severity::Warning,
            format!(
                "lockspace not started for shared VG(s) {}",
                stopped.join(", ")
            ),
            "no LV of a VG whose lockspace is not started can be activated here (joining takes 20-50 s at io_timeout 10, longer after an unclean stop)",
            format!("vgchange --lock-start {}", stopped.join(" ")),
        )
    }
}

/// An LVM filter setting that accepts everything (the default).
fn accepts_all(v: &str) -> bool {
    let t: String = v.chars().filter(|c| !c.is_whitespace()).collect();
    t.is_empty() || t == "[\"a|.*|\"]" || t == "[\"a|.*/|\"]" || t == "[]"
}

fn member_paths(p: &Probe<'_>) -> Finding {
    const CHECK: &str = "member-paths";
    const WHY: &str = "LVM must use the multipath map, never one of its paths: a PV opened through one path loses the lock LV's I/O (and the lease) when that path fails, and writes bypass the map";
    const FIX: &str = "hide the SCSI paths from LVM: in lvm.conf devices { global_filter = [ \"a|^/dev/mapper/|\", \"r|^/dev/sd|\" ] } (or use_devicesfile = 1 with `lvmdevices --adddev /dev/mapper/<map>`), then `pvscan --cache`";
    let maps = p.multipath_maps();
    if maps.is_empty() {
        return ok(CHECK, "no multipath maps here");
    }
    let seen = match Lvm::new(p.runner).pvs(&["-a"]) {
        Ok(v) => v,
        Err(e) => {
            return bad(
                CHECK,
                Severity::Warning,
                format!("skipped: LVM's devices cannot be listed ({e})"),
                WHY,
                FIX,
            );
        }
    };
    let mut leaks = Vec::new();
    for d in &seen {
        let base = d.name.rsplit('/').next().unwrap_or("");
        if let Some(m) = maps.iter().find(|m| m.members.iter().any(|s| s == base)) {
            leaks.push(format!("{} (a path of {})", d.name, m.name));
        }
    }
    if !leaks.is_empty() {
        return bad(
            CHECK,
            Severity::Error,
            format!(
                "LVM sees member paths of multipath maps: {}",
                leaks.join(", ")
            ),
            WHY,
            FIX,
        );
    }
    let cfg = p
        .lvm_config(&[
            "devices/filter",
            "devices/global_filter",
            "devices/use_devicesfile",
        ])
        .unwrap_or_default();
    let get = |k: &str| cfg.get(k).map(String::as_str).unwrap_or("");
    if get("use_devicesfile") == "1" {
        return ok(CHECK, "LVM sees no member path (devices file)");
    }
    if !accepts_all(get("global_filter")) || !accepts_all(get("filter")) {
        return ok(CHECK, "LVM sees no member path (filter/global_filter)");
    }
    bad(
        CHECK,
        Severity::Warning,
        "LVM sees no member path now, but neither a filter nor the devices file hides them: only LVM's multipath component detection does",
        "component detection relies on multipath-tools' wwids file and udev properties; a path seen before its map is built can still be taken as the PV",
        FIX,
    )
}

fn udev_rule(p: &Probe<'_>) -> Finding {
    if p.exists(UDEV_RULE) {
        ok("udev-rule", format!("{UDEV_RULE} is installed"))
    } else {
        bad(
            "udev-rule",
            Severity::Warning,
            format!("{UDEV_RULE} is not installed"),
            "the rule marks multipath member paths so udev, LVM and blkid leave them to the map",
            format!(
                "install -m 644 contrib/udev/56-hostsync-multipath-members.rules {UDEV_RULE} && udevadm control --reload"
            ),
        )
    }
}

fn kill_command(p: &Probe<'_>) -> Finding {
    const CHECK: &str = "kill-command";
    const WHY: &str = "when sanlock loses the lease storage, lvmlockd runs this command to stop the VG's I/O (LVs onto the error target) before another host can take the leases; without it only the watchdog's reset remains";
    let fix = format!("set global/lvmlockctl_kill_command = \"{KILL_COMMAND}\" in lvm.conf");
    let v = match p.lvm_config(&["global/lvmlockctl_kill_command"]) {
        Ok(c) => c
            .get("lvmlockctl_kill_command")
            .cloned()
            .unwrap_or_default(),
        Err(e) => {
            return bad(CHECK, Severity::Warning, format!("skipped: {e}"), WHY, fix);
        }
    };
    // lvmlockctl splits the value at spaces and refuses one whose program is not a full path
    // ("lvmlockctl_kill_command must be full path", Debian's 2.03.16), so a bare
    // `hostsync fence` would never run: an error, not a pass.
    let words: Vec<&str> = v.split_whitespace().collect();
    let is_fence = words.len() >= 2
        && words[1] == "fence"
        && std::path::Path::new(words[0]).file_name() == Some(std::ffi::OsStr::new("hostsync"));
    if is_fence && words[0].starts_with('/') {
        ok(CHECK, format!("lvmlockctl_kill_command = \"{v}\""))
    } else if is_fence {
        bad(
            CHECK,
            Severity::Error,
            format!(
                "global/lvmlockctl_kill_command is \"{v}\": lvmlockctl refuses a command that is not a full path, so nothing would be fenced"
            ),
            WHY,
            fix,
        )
    } else if v.is_empty() {
        bad(
            CHECK,
            Severity::Warning,
            "global/lvmlockctl_kill_command is not set",
            WHY,
            fix,
        )
    } else {
        bad(
            CHECK,
            Severity::Warning,
            format!("global/lvmlockctl_kill_command is \"{v}\", not {KILL_COMMAND}"),
            WHY,
            fix,
        )
    }
}

/// The human form: one line per check, then why and fix under each problem.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    for f in &r.findings {
        let tag = match f.severity {
            Severity::Ok => "ok",
            Severity::Warning => "WARNING",
            Severity::Error => "ERROR",
        };
        out.push_str(&format!("{tag:7}  {:17}  {}\n", f.check, f.message));
        if f.severity != Severity::Ok {
            out.push_str(&format!(
                "         why: {}\n         fix: {}\n",
                f.why, f.fix
            ));
        }
    }
    let count = |s| r.findings.iter().filter(|f| f.severity == s).count();
    out.push_str(&format!(
        "{}: {} error(s), {} warning(s)\n",
        r.host,
        count(Severity::Error),
        count(Severity::Warning)
    ));
    out
}
