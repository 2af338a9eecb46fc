#![allow(clippy::unwrap_used)]
//! The binary end to end on a generated dual-HBA FC tree with the simulated device-mapper:
//! `once --dry-run --json`, `once` twice (the second adopts and changes nothing), config
//! blacklists, `config show --device`, `udev-member`, and the daemon behind its socket.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use common::{Lab, fixture};
use dm_tables::{DmBackend, SimBackend};
use serde_json::Value;

impl Lab {
    fn cmd(&self, args: &[&str]) -> Command {
        self.cmd_with("config.toml", "ctl.sock", args)
    }

    /// A command with its own configuration file and control socket (names in the lab dir).
    fn cmd_with(&self, config: &str, socket: &str, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_multipathd-rs"));
        c.arg("--sysfs-root")
            .arg(&self.sim.root)
            .arg("--dm-backend")
            .arg(format!("sim:{}", self.p("dm.json").display()))
            .arg("--aliases-table")
            .arg(self.p("aliases.toml"))
            .arg("--config")
            .arg(self.p(config))
            .arg("--socket")
            .arg(self.p(socket))
            .args(args);
        c
    }

    /// `daemon` with `config`, `socket` and pid file `pidfile`, its stderr in `log`.
    fn daemon_with(&self, config: &str, socket: &str, pidfile: &str, log: &str) -> Daemon {
        let pidfile = self.p(pidfile);
        let mut c = self.cmd_with(
            config,
            socket,
            &["daemon", "--pidfile", pidfile.to_str().unwrap()],
        );
        c.env("NO_COLOR", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(self.p(log)).unwrap());
        Daemon(c.spawn().unwrap())
    }

    /// Every map's (event number + change uevents, table line): what a daemon did to the
    /// maps shows here (a message as a dm event, a reload as its resume's change uevent).
    fn dm_state(&self) -> BTreeMap<String, (u32, String)> {
        let b = SimBackend::open_file(self.p("dm.json"), None).unwrap();
        b.list()
            .unwrap()
            .into_iter()
            .map(|m| {
                let t = b.table_line(&m.name).unwrap();
                let changes = b.change_uevents(&m.name).unwrap() as u32;
                (m.name, (m.event_nr + changes, t))
            })
            .collect()
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self.cmd(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_slice(&self.run(args).stdout).unwrap()
    }

    /// Every map's event number + change uevents: unchanged = no message, no reload.
    fn event_nrs(&self) -> BTreeMap<String, u32> {
        common::event_nrs(&SimBackend::open_file(self.p("dm.json"), None).unwrap())
    }
}

#[test]
fn dry_run_json_gives_one_map_per_wwid_grouped_by_priority() {
    let lab = Lab::new();
    let v = lab.json(&["once", "--dry-run", "--json"]);
    assert_eq!(v["dry_run"], true);
    let maps = v["maps"].as_array().unwrap();
    assert_eq!(maps.len(), 4);
    let mut wwids: Vec<&str> = maps.iter().map(|m| m["wwid"].as_str().unwrap()).collect();
    wwids.dedup();
    assert_eq!(wwids.len(), 4, "one map per WWID");
    for m in maps {
        assert_eq!(m["action"], "create");
        let groups = m["groups"].as_array().unwrap();
        let prios: Vec<i64> = groups
            .iter()
            .map(|g| g["priority"].as_i64().unwrap())
            .collect();
        assert_eq!(prios, [50, 10]);
        for g in groups {
            let paths = g["paths"].as_array().unwrap();
            assert_eq!(paths.len(), 2);
            for p in paths {
                assert_eq!(p["priority"], g["priority"]);
            }
        }
    }
    assert!(lab.event_nrs().is_empty(), "a dry run creates nothing");
    assert!(!lab.p("aliases.toml").exists(), "a dry run binds no alias");
    // the human form is multipath -d's layout
    let out = lab.run(&["once", "--dry-run"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("create: mpatha ("), "{text}");
    assert!(
        text.contains("policy='service-time 0' prio=50 status=undef"),
        "{text}"
    );
}

#[test]
fn a_second_once_adopts_and_reloads_nothing() {
    let lab = Lab::new();
    let v = lab.json(&["once", "--json"]);
    assert_eq!(v["maps"].as_array().unwrap().len(), 4);
    let before = lab.event_nrs();
    assert_eq!(before.len(), 4);
    let v = lab.json(&["once", "--json"]);
    for m in v["maps"].as_array().unwrap() {
        assert_eq!(m["action"], "keep", "{m}");
    }
    assert_eq!(lab.event_nrs(), before, "no reload and no message");
}

#[test]
fn blacklist_and_overrides_from_the_config_file_apply() {
    let lab = Lab::new();
    let first_wwid = lab.sim.paths[0].expected_wwid.clone();
    std::fs::write(
        lab.p("config.toml"),
        format!(
            "[blacklist]\nwwid = [\"^{first_wwid}$\"]\n\n[overrides]\npath_grouping_policy = \"multibus\"\n\n\
             [[multipaths]]\nwwid = \"{}\"\nalias = \"db01\"\n",
            lab.sim.paths[1].expected_wwid
        ),
    )
    .unwrap();
    let v = lab.json(&["once", "--dry-run", "--json"]);
    let maps = v["maps"].as_array().unwrap();
    assert_eq!(maps.len(), 3);
    assert!(maps.iter().all(|m| m["wwid"] != first_wwid.as_str()));
    assert!(
        maps.iter()
            .all(|m| m["groups"].as_array().unwrap().len() == 1)
    );
    assert!(maps.iter().any(|m| m["name"] == "db01"), "{maps:?}");
    let ignored = v["ignored"].as_array().unwrap();
    assert_eq!(ignored.len(), 4, "the blacklisted LUN's 4 paths");
    // config show --device says which entry decided
    let out = lab.run(&["config", "show", "--device", &lab.sim.paths[0].dev]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("blacklisted"), "{text}");
    // udev-member: a blacklisted path is not a member; another one is
    let out = lab.run(&["udev-member", &lab.sim.paths[0].dev]);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "DM_MULTIPATH_DEVICE_PATH=0\n"
    );
    let out = lab.run(&["udev-member", &lab.sim.paths[1].dev]);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "DM_MULTIPATH_DEVICE_PATH=1\n"
    );
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_daemon_answers_on_its_socket_and_leaves_maps_on_shutdown() {
    let mut lab = Lab::new();
    let mut d = lab.daemon_with("config.toml", "ctl.sock", "d.pid", "d.log");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = lab.cmd(&["show", "status", "--json"]).output().unwrap();
        if out.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "daemon did not come up");
        assert!(d.0.try_wait().unwrap().is_none(), "daemon exited");
        std::thread::sleep(Duration::from_millis(100));
    }
    // multipathd's JSON shape
    let v = lab.json(&["show", "maps", "--json"]);
    assert_eq!(v["major_version"], 0);
    let maps = v["maps"].as_array().unwrap();
    assert_eq!(maps.len(), 4);
    assert_eq!(maps[0]["path_groups"].as_array().unwrap().len(), 2);
    let topo = String::from_utf8(lab.run(&["show", "topology"]).stdout).unwrap();
    assert!(
        topo.contains("policy='service-time 0' prio=50 status=active"),
        "{topo}"
    );
    // wait for the first round of checks (asynchronous, right after start): a path failed by
    // hand before it would be reinstated by that round, as multipathd would
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = lab.json(&["show", "paths", "--json"]);
        if v["paths"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["chk_state"] == "ready")
        {
            break;
        }
        assert!(Instant::now() < deadline, "paths were not checked: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // fail / reinstate a path by hand (we run as root here; the socket checks the uid)
    let dev = lab.sim.paths[0].dev.clone();
    let out = lab.cmd(&["fail", "path", &dev]).output().unwrap();
    let is_root = nix::unistd::Uid::effective().is_root();
    assert_eq!(out.status.success(), is_root, "{out:?}");
    if is_root {
        let v = lab.json(&["show", "paths", "--json"]);
        let p = v["paths"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["dev"] == dev.as_str())
            .unwrap()
            .clone();
        assert_eq!(p["dm_state"], "failed");
        lab.run(&["reinstate", "path", &dev]);
        // the HBA goes away: the daemon's checker fails its paths within a few ticks
        lab.sim.host_down("host1").unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = lab.json(&["show", "paths", "--json"]);
            let failed = v["paths"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["dm_state"] == "failed")
                .count();
            if failed == 8 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "host1's paths were not failed: {v}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let out = lab.cmd(&["del", "map", "nosuchmap"]).output().unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("no multipath map"));
        lab.run(&["shutdown"]);
    } else {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(d.0.id()).unwrap()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "daemon did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(lab.event_nrs().len(), 4, "maps stay after the daemon stops");
}

impl Daemon {
    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.0.id()).unwrap()),
            sig,
        )
        .unwrap();
    }

    /// Waits for the exit (up to `within`, a hang detector): Some(status) or None.
    fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Lab {
    /// Waits until the daemon on `socket` answers `show status`.
    fn wait_ready(&self, d: &mut Daemon, socket: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self
                .cmd_with("config.toml", socket, &["show", "status"])
                .output()
                .unwrap();
            if out.status.success() {
                return;
            }
            assert!(Instant::now() < deadline, "daemon did not come up");
            assert!(d.0.try_wait().unwrap().is_none(), "daemon exited");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Issue 12 item 14: two daemons started together, 40 times: exactly one runs, the other
/// exits non-zero naming the holder's pid, and never touched a map. The two run different
/// configurations (multibus / failover grouping) from the same starting maps, so a loser
/// that reloaded anything before giving up would show in the event numbers and tables.
#[test]
fn two_daemons_started_together_exactly_one_runs_and_the_other_touches_nothing() {
    let lab = Lab::new();
    std::fs::write(
        lab.p("a.toml"),
        "[overrides]\npath_grouping_policy = \"multibus\"\n",
    )
    .unwrap();
    std::fs::write(
        lab.p("b.toml"),
        "[overrides]\npath_grouping_policy = \"failover\"\n",
    )
    .unwrap();
    let reset = || {
        lab.run(&["once"]);
    };
    // What one daemon alone makes of the starting maps, per configuration.
    // (Event numbers only grow, so what a run did is the difference from where it started.)
    let since = |start: &BTreeMap<String, (u32, String)>| -> BTreeMap<String, (u32, String)> {
        lab.dm_state()
            .into_iter()
            .map(|(name, (nr, table))| {
                let was = start.get(&name).map_or(0, |s| s.0);
                (name, (nr - was, table))
            })
            .collect()
    };
    let mut expected = BTreeMap::new();
    for cfg in ["a.toml", "b.toml"] {
        reset();
        let start = lab.dm_state();
        let mut d = lab.daemon_with(cfg, "ctl.sock", "d.pid", "alone.log");
        lab.wait_ready(&mut d, "ctl.sock");
        d.signal(nix::sys::signal::Signal::SIGTERM);
        assert!(d.wait_exit(Duration::from_secs(30)).unwrap().success());
        expected.insert(cfg, since(&start));
    }
    assert_ne!(expected["a.toml"], expected["b.toml"]);
    // Positive control: with separate lock files both run, and the state shows both.
    reset();
    let start = lab.dm_state();
    let mut a = lab.daemon_with("a.toml", "a.sock", "a.pid", "a.log");
    lab.wait_ready(&mut a, "a.sock");
    let mut b = lab.daemon_with("b.toml", "b.sock", "b.pid", "b.log");
    lab.wait_ready(&mut b, "b.sock");
    let both = since(&start);
    for (name, (nr, _)) in &both {
        let one = expected["b.toml"][name].0;
        assert!(*nr > one, "{name}: the oracle missed a daemon: {both:?}");
    }
    assert_ne!(both, expected["a.toml"]);
    assert_ne!(both, expected["b.toml"]);
    for mut d in [a, b] {
        d.signal(nix::sys::signal::Signal::SIGTERM);
        assert!(d.wait_exit(Duration::from_secs(30)).is_some());
    }

    for trial in 0..40 {
        reset();
        let start = lab.dm_state();
        let mut a = lab.daemon_with("a.toml", "ctl.sock", "d.pid", "a.log");
        let mut b = lab.daemon_with("b.toml", "ctl.sock", "d.pid", "b.log");
        let deadline = Instant::now() + Duration::from_secs(60);
        let (mut winner, loser_status, loser_log, cfg) = loop {
            if let Some(s) = a.0.try_wait().unwrap() {
                break (b, s, "a.log", "b.toml");
            }
            if let Some(s) = b.0.try_wait().unwrap() {
                break (a, s, "b.log", "a.toml");
            }
            assert!(Instant::now() < deadline, "trial {trial}: both still run");
            std::thread::sleep(Duration::from_millis(10));
        };
        let msg = std::fs::read_to_string(lab.p(loser_log)).unwrap();
        assert!(!loser_status.success(), "trial {trial}: {msg}");
        assert!(
            msg.contains(&format!("(pid {})", winner.pid())) && msg.contains("d.pid"),
            "trial {trial}: {msg}"
        );
        lab.wait_ready(&mut winner, "ctl.sock");
        assert!(winner.0.try_wait().unwrap().is_none(), "trial {trial}");
        assert_eq!(since(&start), expected[cfg], "trial {trial}: {msg}");
        winner.signal(nix::sys::signal::Signal::SIGTERM);
        assert!(winner.wait_exit(Duration::from_secs(30)).is_some());
        assert!(
            !lab.p("d.pid").exists(),
            "the pid file goes with the daemon"
        );
    }
}

/// Issue 12 item 13: SIGTERM ends the daemon even when its socket file was removed, or
/// replaced by someone else's socket (which is then left alone).
#[test]
fn sigterm_stops_the_daemon_with_its_socket_file_removed_or_replaced() {
    let lab = Lab::new();
    for replace in [false, true] {
        let mut d = lab.daemon_with("config.toml", "ctl.sock", "d.pid", "d.log");
        lab.wait_ready(&mut d, "ctl.sock");
        std::fs::remove_file(lab.p("ctl.sock")).unwrap();
        let other =
            replace.then(|| std::os::unix::net::UnixListener::bind(lab.p("ctl.sock")).unwrap());
        d.signal(nix::sys::signal::Signal::SIGTERM);
        let status = d.wait_exit(Duration::from_secs(30));
        assert!(
            status.is_some_and(|s| s.success()),
            "replaced={replace}: the daemon did not stop: {}",
            std::fs::read_to_string(lab.p("d.log")).unwrap()
        );
        assert_eq!(
            lab.p("ctl.sock").exists(),
            replace,
            "only our own socket goes"
        );
        drop(other);
        let _ = std::fs::remove_file(lab.p("ctl.sock"));
        assert_eq!(lab.event_nrs().len(), 4, "maps stay");
    }
}

impl Lab {
    /// Waits until `log` has `n` lines containing `what`; returns those lines.
    fn wait_log(&self, log: &str, what: &str, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(self.p(log)).unwrap();
            let lines: Vec<String> = text
                .lines()
                .filter(|l| l.contains(what))
                .map(String::from)
                .collect();
            if lines.len() >= n {
                return lines;
            }
            assert!(Instant::now() < deadline, "no {what:?} in {log}:\n{text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stdout(&self, args: &[&str]) -> String {
        String::from_utf8(self.run(args).stdout).unwrap()
    }
}

/// Issue 12 item 8: SIGHUP with the configuration file removed, then with an invalid one,
/// keeps the running configuration (its blacklist above all) and every map as it is, with an
/// ERROR naming the file and the reason. Control: a changed valid file does change a setting.
#[test]
fn sighup_with_the_config_removed_or_invalid_keeps_the_running_configuration() {
    let lab = Lab::new();
    let first_wwid = lab.sim.paths[0].expected_wwid.clone();
    let config = |polling: u32| {
        format!(
            "[defaults]\npolling_interval = {polling}\n\n[blacklist]\nwwid = [\"^{first_wwid}$\"]\n"
        )
    };
    std::fs::write(lab.p("config.toml"), config(7)).unwrap();
    let mut d = lab.daemon_with("config.toml", "ctl.sock", "d.pid", "d.log");
    lab.wait_ready(&mut d, "ctl.sock");
    let shown = lab.stdout(&["show", "config"]);
    assert!(
        shown.contains(&first_wwid) && shown.contains("polling_interval       7"),
        "{shown}"
    );
    let maps = lab.dm_state();
    assert_eq!(maps.len(), 3, "the blacklisted LUN has no map");

    std::fs::remove_file(lab.p("config.toml")).unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    let errors = lab.wait_log("d.log", "ERROR", 1);
    let path = lab.p("config.toml").display().to_string();
    assert!(
        errors[0].contains(&path)
            && errors[0].contains("No such file")
            && errors[0].contains("running configuration stays"),
        "{errors:?}"
    );
    assert_eq!(lab.stdout(&["show", "config"]), shown);
    assert_eq!(lab.dm_state(), maps);

    std::fs::write(
        lab.p("config.toml"),
        "[defaults]\npolling_interval = \"often\"\n",
    )
    .unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    let errors = lab.wait_log("d.log", "ERROR", 2);
    assert!(
        errors[1].contains(&path) && errors[1].contains("line 2"),
        "{errors:?}"
    );
    assert_eq!(lab.stdout(&["show", "config"]), shown);
    assert_eq!(lab.dm_state(), maps);

    // Control: the oracle sees a change when there is one.
    std::fs::write(lab.p("config.toml"), config(9)).unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    lab.wait_log("d.log", "reconfigured", 1);
    let now = lab.stdout(&["show", "config"]);
    assert!(
        now.contains("polling_interval       9") && now.contains(&first_wwid),
        "{now}"
    );
    assert_eq!(lab.dm_state().len(), 3);
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(30)).is_some());
}

/// On the real-kernel reference tree, `once --dry-run` prints what `multipath -d` printed
/// there (create.txt), line for line; the one difference is intended: multipath-tools shows
/// mpathc's configured features ('0') although it loads `1 queue_if_no_path` (its addmap line),
/// we show what is loaded.
#[test]
fn dry_run_on_the_reference_tree_matches_multipath_tools() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_multipathd-rs"))
        .arg("--sysfs-root")
        .arg(fixture("fixtures/ref-sd2x2-tcmloop2/sys"))
        .arg("--dm-backend")
        .arg(format!("sim:{}", dir.path().join("dm.json").display()))
        .arg("--aliases-table")
        .arg(dir.path().join("aliases.toml"))
        .arg("--config")
        .arg(dir.path().join("none.toml"))
        .args(["once", "--dry-run"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let ours = String::from_utf8(out.stdout).unwrap();
    let theirs = std::fs::read_to_string(fixture("fixtures/ref-sd2x2-tcmloop2/create.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.contains(" | "))
        .map(|l| {
            if l.starts_with("size=64M") {
                l.replace("features='0'", "features='1 queue_if_no_path'")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(ours.trim_end(), theirs.trim_end());
}
