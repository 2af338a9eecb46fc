//! What this host runs and is configured with, for `publish`, `lv activate`, `vg share` and the
//! doctor: sanlock's view (`sanlock client status -D`, `sanlock direct read_leader`), processes
//! and multipath maps from `/proc` and `/sys`, LVM's effective configuration (`lvmconfig`).
//!
//! Every file and `/proc` / `/sys` read goes through an injectable root directory (`/` in
//! production, a fixture tree in tests) and every command through the [`Runner`], so all of it
//! runs on fixtures.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::runner::{Command, Runner};
use crate::{Error, Result};

/// sanlock's default io_timeout in seconds (sanlock(8); lvmlockd uses it unless `-o` is given).
pub const SANLOCK_DEFAULT_IO_TIMEOUT: u32 = 10;

/// Time limit of one sanlock query (they answer at once unless the daemon hangs).
const SANLOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// This host's runner and root.
pub struct Probe<'r> {
    /// Runs sanlock, lvm, lvmconfig.
    pub runner: &'r dyn Runner,
    /// The root directory files, `/proc` and `/sys` are read under.
    pub root: PathBuf,
}

impl std::fmt::Debug for Probe<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe").field("root", &self.root).finish()
    }
}

/// One lockspace sanlock has joined (an `s` line of `sanlock client status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lockspace {
    /// Its name (`lvm_<vg>` for lvmlockd's).
    pub name: String,
    /// This host's host_id in it.
    pub host_id: u32,
    /// The lease device.
    pub path: String,
    /// io_timeout (from `-D`), when printed.
    pub io_timeout: Option<u32>,
}

/// One resource lease held (an `r` line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resource {
    /// Lockspace name.
    pub lockspace: String,
    /// Resource name (the LV UUID for lvmlockd's LV locks).
    pub name: String,
}

/// `sanlock client status -D`, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SanlockStatus {
    /// Lockspaces joined.
    pub lockspaces: Vec<Lockspace>,
    /// Resources held.
    pub resources: Vec<Resource>,
}

impl SanlockStatus {
    /// The lockspace of lvmlockd's VG `vg`.
    pub fn vg_lockspace(&self, vg: &str) -> Option<&Lockspace> {
        let name = format!("lvm_{vg}");
        self.lockspaces.iter().find(|l| l.name == name)
    }
}

/// Parses `sanlock client status [-D]`: `s NAME:HOST_ID:PATH:OFFSET` lines (with `-D`, a
/// following indented line carries `io_timeout=N`), `r LS:NAME:PATH:OFFSET:LVER p PID` lines.
pub fn parse_sanlock_status(text: &str) -> SanlockStatus {
    let mut st = SanlockStatus::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("s ") {
            let word = rest.split_whitespace().next().unwrap_or("");
            let mut parts = word.splitn(4, ':');
            let name = parts.next().unwrap_or("").to_string();
            let host_id = parts.next().and_then(|h| h.parse().ok());
            let path = parts.next().unwrap_or("").to_string();
            if let (false, Some(host_id)) = (name.is_empty(), host_id) {
                st.lockspaces.push(Lockspace {
                    name,
                    host_id,
                    path,
                    io_timeout: None,
                });
            }
        } else if let Some(rest) = line.strip_prefix("r ") {
            let word = rest.split_whitespace().next().unwrap_or("");
            let mut parts = word.splitn(3, ':');
            let lockspace = parts.next().unwrap_or("").to_string();
            let name = parts.next().unwrap_or("").to_string();
            if !lockspace.is_empty() && !name.is_empty() {
                st.resources.push(Resource { lockspace, name });
            }
        } else if line.starts_with(char::is_whitespace)
            && let Some(ls) = st.lockspaces.last_mut()
            && ls.io_timeout.is_none()
        {
            ls.io_timeout = kv_number(line, "io_timeout");
        }
    }
    st
}

/// `key=N` in a line of `key=value` words.
fn kv_number(line: &str, key: &str) -> Option<u32> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

/// The leader record of a lease (`sanlock direct read_leader`): who owns it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Leader {
    /// The owner's host_id (0: never owned).
    pub owner_id: u32,
    /// The owner's generation.
    pub owner_generation: u64,
    /// Non-zero while held (sanlock zeroes it on release).
    pub timestamp: u64,
}

impl Leader {
    /// The host_id holding the lease now, if any (an exclusive holder; a lease held shared has
    /// no owner in its leader record).
    pub fn holder(&self) -> Option<u32> {
        (self.owner_id != 0 && self.timestamp != 0).then_some(self.owner_id)
    }
}

/// Parses `sanlock direct read_leader` output (`field value` lines).
pub fn parse_leader(text: &str) -> Leader {
    let mut l = Leader::default();
    for line in text.lines() {
        let mut w = line.split_whitespace();
        let (Some(k), Some(v)) = (w.next(), w.next()) else {
            continue;
        };
        match k {
            "owner_id" => l.owner_id = v.parse().unwrap_or(0),
            "owner_generation" => l.owner_generation = v.parse().unwrap_or(0),
            "timestamp" => l.timestamp = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    l
}

/// The device-mapper name LVM gives `vg`'s LV `lv` (hyphens doubled, joined by one).
pub fn dm_name(vg: &str, lv: &str) -> String {
    format!("{}-{}", vg.replace('-', "--"), lv.replace('-', "--"))
}

/// The offset of an LV's lease on the VG's `lvmlock` LV, from its `lv_lock_args`
/// (`VERSION:OFFSET`, e.g. `1.0.0:70254592`).
pub fn lease_offset(lock_args: &str) -> Option<u64> {
    lock_args.rsplit_once(':').and_then(|(_, o)| o.parse().ok())
}

/// A multipath map and its member paths, from sysfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MultipathMap {
    /// The map's name (`/dev/mapper/<name>`).
    pub name: String,
    /// Its kernel name (`dm-N`).
    pub kernel: String,
    /// Member paths (`sdX`).
    pub members: Vec<String>,
}

impl<'r> Probe<'r> {
    /// A probe of the host rooted at `root`.
    pub fn new(runner: &'r dyn Runner, root: impl Into<PathBuf>) -> Self {
        Probe {
            runner,
            root: root.into(),
        }
    }

    /// `rel` (an absolute path like `/etc/default/sanlock`) under the root.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    /// The text of a file under the root; `None` when it does not exist.
    pub fn read(&self, rel: &str) -> Result<Option<String>> {
        let p = self.path(rel);
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::File {
                path: p,
                message: e.to_string(),
            }),
        }
    }

    /// Whether `rel` exists under the root.
    pub fn exists(&self, rel: &str) -> bool {
        self.path(rel).exists()
    }

    /// The command line (argv) of the first process whose `comm` is `name`, from `/proc`.
    pub fn process(&self, name: &str) -> Option<Vec<String>> {
        let proc_dir = self.path("/proc");
        let mut pids: Vec<u64> = std::fs::read_dir(&proc_dir)
            .ok()?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        pids.sort_unstable();
        for pid in pids {
            let dir = proc_dir.join(pid.to_string());
            let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
                continue;
            };
            if comm.trim() != name {
                continue;
            }
            let argv = std::fs::read(dir.join("cmdline")).unwrap_or_default();
            return Some(
                argv.split(|b| *b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect(),
            );
        }
        None
    }

    /// Runs a command; its stdout when it exits 0, `None` otherwise (with the reason logged).
    pub fn output(&self, cmd: &Command) -> Option<String> {
        match self.runner.run(cmd) {
            Ok(o) if o.success() => Some(o.stdout_text()),
            Ok(o) => {
                tracing::debug!(command = %cmd.line(), status = o.status, stderr = %o.stderr_text(), "failed");
                None
            }
            Err(e) => {
                tracing::debug!(command = %cmd.line(), error = %e, "could not run");
                None
            }
        }
    }

    /// `sanlock client status -D`; `None` when sanlock does not answer.
    pub fn sanlock_status(&self) -> Option<SanlockStatus> {
        self.output(
            &Command::new("sanlock")
                .args(["client", "status", "-D"])
                .timeout(SANLOCK_TIMEOUT),
        )
        .map(|t| parse_sanlock_status(&t))
    }

    /// The leader record of `vg`'s LV lease `lv_uuid` at `offset` on the VG's `lvmlock` LV,
    /// read from disk (works on any host that sees the VG's storage).
    pub fn read_leader(&self, vg: &str, lv_uuid: &str, offset: u64) -> Result<Leader> {
        let res = format!(
            "lvm_{vg}:{lv_uuid}:/dev/mapper/{}:{offset}",
            dm_name(vg, "lvmlock")
        );
        let cmd = Command::new("sanlock")
            .args(["direct", "read_leader", "-r", &res])
            .timeout(SANLOCK_TIMEOUT);
        let out = self.runner.run(&cmd)?;
        if !out.success() {
            return Err(Error::CommandStart {
                command: cmd.line(),
                message: format!("exited with status {}: {}", out.status, out.stderr_text()),
            });
        }
        Ok(parse_leader(&out.stdout_text()))
    }

    /// LVM's effective configuration of `nodes` (`lvmconfig --typeconfig full`, so unset
    /// settings show their defaults): node name (last path element) -> value, quotes removed.
    pub fn lvm_config(&self, nodes: &[&str]) -> Result<BTreeMap<String, String>> {
        let cmd = Command::new("lvmconfig")
            .env("LVM_SUPPRESS_FD_WARNINGS", "1")
            .args(["--typeconfig", "full"])
            .args(nodes.iter().copied())
            .timeout(Duration::from_secs(30));
        let out = self.runner.run(&cmd)?;
        if !out.success() {
            return Err(Error::Lvm {
                target: nodes.join(" "),
                action: "read the configuration of".into(),
                message: out.stderr_text(),
            });
        }
        Ok(out
            .stdout_text()
            .lines()
            .filter_map(|l| l.trim().split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
            .collect())
    }

    /// Multipath maps (dm devices whose uuid starts with `mpath-`) and their member paths.
    pub fn multipath_maps(&self) -> Vec<MultipathMap> {
        let block = self.path("/sys/block");
        let Ok(rd) = std::fs::read_dir(&block) else {
            return Vec::new();
        };
        let mut maps = Vec::new();
        for e in rd.flatten() {
            let kernel = e.file_name().to_string_lossy().into_owned();
            if !kernel.starts_with("dm-") {
                continue;
            }
            let dir = block.join(&kernel);
            let uuid = read_trim(&dir.join("dm/uuid"));
            if !uuid.starts_with("mpath-") {
                continue;
            }
            let mut members: Vec<String> = std::fs::read_dir(dir.join("slaves"))
                .map(|rd| {
                    rd.flatten()
                        .map(|s| s.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            members.sort();
            maps.push(MultipathMap {
                name: read_trim(&dir.join("dm/name")),
                kernel,
                members,
            });
        }
        maps.sort_by(|a, b| a.name.cmp(&b.name));
        maps
    }

    /// Whether a device-mapper device called `name` exists (from `/sys/block/dm-*/dm/name`).
    pub fn dm_exists(&self, name: &str) -> bool {
        let block = self.path("/sys/block");
        std::fs::read_dir(&block).is_ok_and(|rd| {
            rd.flatten().any(|e| {
                e.file_name().to_string_lossy().starts_with("dm-")
                    && read_trim(&e.path().join("dm/name")) == name
            })
        })
    }

    /// This host's sanlock host_id: from a joined lockspace, else lvmlockd's `--host-id`, else
    /// LVM's `local/host_id`. `None` when none is set.
    pub fn host_id(&self, status: Option<&SanlockStatus>) -> Option<(u32, &'static str)> {
        if let Some(ls) =
            status.and_then(|s| s.lockspaces.iter().find(|l| l.name.starts_with("lvm_")))
        {
            return Some((ls.host_id, "sanlock lockspace"));
        }
        if let Some(id) = self
            .process("lvmlockd")
            .and_then(|a| option_value(&a, &["-i", "--host-id"]))
            .and_then(|v| v.parse().ok())
            .filter(|id| *id != 0)
        {
            return Some((id, "lvmlockd --host-id"));
        }
        self.lvm_config(&["local/host_id"])
            .ok()
            .and_then(|c| c.get("host_id").and_then(|v| v.parse().ok()))
            .filter(|id| *id != 0)
            .map(|id| (id, "lvm.conf local/host_id"))
    }

    /// This host's sanlock io_timeout: from a joined lockspace, else lvmlockd's `-o`, else
    /// sanlock's default when lvmlockd runs; `None` when lvmlockd does not run.
    pub fn io_timeout(&self, status: Option<&SanlockStatus>) -> Option<(u32, &'static str)> {
        if let Some(t) = status.and_then(|s| s.lockspaces.iter().find_map(|l| l.io_timeout)) {
            return Some((t, "sanlock lockspace"));
        }
        let args = self.process("lvmlockd")?;
        match option_value(&args, &["-o", "--sanlock-timeout"]).and_then(|v| v.parse().ok()) {
            Some(t) => Some((t, "lvmlockd --sanlock-timeout")),
            None => Some((SANLOCK_DEFAULT_IO_TIMEOUT, "sanlock's default")),
        }
    }
}

fn read_trim(p: &Path) -> String {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The value of an option in argv: `-o 2`, `-o2`, `--sanlock-timeout 2` or
/// `--sanlock-timeout=2` (the last one given wins).
pub fn option_value(args: &[String], names: &[&str]) -> Option<String> {
    let mut found = None;
    let mut it = args.iter().skip(1).peekable();
    while let Some(a) = it.next() {
        for n in names {
            if a == n {
                found = it.peek().map(|v| v.to_string());
            } else if let Some(v) = a.strip_prefix(&format!("{n}=")) {
                found = Some(v.to_string());
            } else if n.len() == 2
                && !n.starts_with("--")
                && a.len() > 2
                && a.starts_with(n)
                && !a.starts_with("--")
            {
                found = Some(a[2..].to_string());
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::{Output, ScriptedRunner};

    // `sanlock client status -D` as sanlock 3.8 prints it (fields abridged to those we read).
    const STATUS: &str = "daemon 6f7c1c52-hostA\n    our_host_name=6f7c1c52-hostA use_watchdog=1\np -1 helper\np 812 lvmlockd\ns lvm_vgsan:1:/dev/mapper/vgsan-lvmlock:0\n    list=spaces space_id=1 io_timeout=2 sector_size=512 align_size=1048576 host_generation=3\nr lvm_vgsan:exxNPX-aaaa-arfcYT:/dev/mapper/vgsan-lvmlock:70254592:2 p 812\n    list=held flags=0\n";

    #[test]
    fn sanlock_status_gives_lockspaces_host_id_io_timeout_and_leases() {
        let st = parse_sanlock_status(STATUS);
        assert_eq!(
            st.lockspaces,
            vec![Lockspace {
                name: "lvm_vgsan".into(),
                host_id: 1,
                path: "/dev/mapper/vgsan-lvmlock".into(),
                io_timeout: Some(2),
            }]
        );
        assert_eq!(st.resources[0].name, "exxNPX-aaaa-arfcYT");
        assert!(st.vg_lockspace("vgsan").is_some() && st.vg_lockspace("vg").is_none());
        // Without -D there is no io_timeout.
        let st = parse_sanlock_status("daemon x\ns LS:7:/dev/sdb:0\n");
        assert_eq!(st.lockspaces[0].host_id, 7);
        assert_eq!(st.lockspaces[0].io_timeout, None);
    }

    #[test]
    fn leader_records_tell_the_holder_only_while_held() {
        // Field layout read off `sanlock direct read_leader` (3.8.5) on this machine.
        let held = "magic 0x6152010\nversion 0x60004\nowner_id 2\nowner_generation 4\nlver 3\nspace_name lvm_vgsan\ntimestamp 4711\n";
        assert_eq!(parse_leader(held).holder(), Some(2));
        let released = held.replace("timestamp 4711", "timestamp 0");
        assert_eq!(parse_leader(&released).holder(), None);
        let fresh = "owner_id 0\nowner_generation 0\ntimestamp 0\n";
        assert_eq!(parse_leader(fresh).holder(), None);
    }

    #[test]
    fn read_leader_reads_the_lvs_lease_on_the_vgs_lvmlock_lv() {
        let r = ScriptedRunner::new();
        r.expect(
            &["sanlock", "direct", "read_leader"],
            Output::ok("owner_id 1\ntimestamp 9\n"),
        );
        let p = Probe::new(&r, "/nonexistent");
        let l = p.read_leader("vg-san", "U1", 70254592).unwrap();
        assert_eq!(l.holder(), Some(1));
        assert_eq!(
            r.lines()[0],
            "sanlock direct read_leader -r lvm_vg-san:U1:/dev/mapper/vg--san-lvmlock:70254592"
        );
        assert_eq!(lease_offset("1.0.0:70254592"), Some(70254592));
        assert_eq!(lease_offset(""), None);
    }

    #[test]
    fn option_values_in_every_spelling() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let names = ["-o", "--sanlock-timeout"];
        assert_eq!(
            option_value(&a(&["lvmlockd", "-o", "2"]), &names),
            Some("2".into())
        );
        assert_eq!(
            option_value(&a(&["lvmlockd", "-o2"]), &names),
            Some("2".into())
        );
        assert_eq!(
            option_value(&a(&["lvmlockd", "--sanlock-timeout=3"]), &names),
            Some("3".into())
        );
        assert_eq!(option_value(&a(&["lvmlockd", "-f"]), &names), None);
    }

    #[test]
    fn processes_and_multipath_members_come_from_the_root() {
        let d = tempfile::tempdir().unwrap();
        let w = |rel: &str, data: &[u8]| {
            let p = d.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        };
        w("proc/77/comm", b"sanlock\n");
        w("proc/77/cmdline", b"sanlock\0daemon\0-w\x000\0");
        w("proc/self/comm", b"x\n");
        w("sys/block/dm-0/dm/uuid", b"mpath-3600\n");
        w("sys/block/dm-0/dm/name", b"mpatha\n");
        w("sys/block/dm-0/slaves/sdb", b"");
        w("sys/block/dm-0/slaves/sda", b"");
        w("sys/block/dm-1/dm/uuid", b"LVM-abc\n");
        w("sys/block/dm-1/dm/name", b"vg-lv\n");
        let r = ScriptedRunner::new();
        let p = Probe::new(&r, d.path());
        assert_eq!(
            p.process("sanlock").unwrap(),
            vec!["sanlock", "daemon", "-w", "0"]
        );
        assert!(p.process("wdmd").is_none());
        let maps = p.multipath_maps();
        assert_eq!(maps.len(), 1);
        assert_eq!(maps[0].name, "mpatha");
        assert_eq!(maps[0].members, vec!["sda", "sdb"]);
    }

    #[test]
    fn host_id_and_io_timeout_fall_back_from_sanlock_to_lvmlockd() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("proc/12");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("comm"), "lvmlockd\n").unwrap();
        std::fs::write(
            p.join("cmdline"),
            b"lvmlockd\0-f\0-g\0sanlock\0--host-id\x003\0-o\x002\0",
        )
        .unwrap();
        let r = ScriptedRunner::new();
        let probe = Probe::new(&r, d.path());
        let st = parse_sanlock_status(STATUS);
        assert_eq!(probe.host_id(Some(&st)), Some((1, "sanlock lockspace")));
        assert_eq!(probe.io_timeout(Some(&st)), Some((2, "sanlock lockspace")));
        assert_eq!(probe.host_id(None), Some((3, "lvmlockd --host-id")));
        assert_eq!(
            probe.io_timeout(None),
            Some((2, "lvmlockd --sanlock-timeout"))
        );
        // Nothing running, nothing configured.
        let r = ScriptedRunner::new();
        r.always(&["lvmconfig"], Output::ok("host_id=0\n"));
        let e = tempfile::tempdir().unwrap();
        let probe = Probe::new(&r, e.path());
        assert_eq!(probe.host_id(None), None);
        assert_eq!(probe.io_timeout(None), None);
    }
}
