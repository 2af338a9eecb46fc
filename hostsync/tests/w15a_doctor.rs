//! `hostsync doctor` on fixture hosts: a ready host is clean (exit 0), and every finding is
//! produced by exactly its own fault, each with why and a fix, at its severity.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use hostsync::Registry;
use hostsync::doctor::{self, Severity};
use hostsync::lvstate::{HostLvm, publish_lvm_state};
use hostsync::probe::Probe;
use hostsync::runner::{Output, ScriptedRunner};

const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/lvm/w15a");

fn fixture(name: &str) -> String {
    std::fs::read_to_string(Path::new(FIX).join(name)).unwrap()
}

/// A host, ready unless a field says otherwise.
struct World {
    lvmlockd: bool,
    sanlock_args: Option<&'static str>,
    wdmd: bool,
    watchdog: bool,
    defaults: String,
    udev_rule: bool,
    status: String,
    pvs_all: &'static str,
    lvmconfig: String,
    /// (host_id, io_timeout) of the other host B; None: no registry.
    other: Option<(u32, u32)>,
}

impl World {
    fn ready() -> Self {
        World {
            lvmlockd: true,
            sanlock_args: Some("sanlock\0daemon\0-U\0sanlock\0-w\x001\0"),
            wdmd: true,
            watchdog: true,
            defaults: fixture("default-sanlock.debian").replace("-w 0", "-w 1"),
            udev_rule: true,
            status: fixture("sanlock-status-D.txt"),
            pvs_all: "/dev/mapper/mpatha",
            lvmconfig: fixture("lvmconfig-ready.txt"),
            other: Some((2, 2)),
        }
    }

    fn run(&self) -> doctor::Report {
        let d = tempfile::tempdir().unwrap();
        let w = |rel: &str, data: &[u8]| {
            let p = d.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        };
        w("proc/1/comm", b"init\n");
        w("proc/1/cmdline", b"/sbin/init\0");
        if self.lvmlockd {
            w("proc/10/comm", b"lvmlockd\n");
            w(
                "proc/10/cmdline",
                b"lvmlockd\0-f\0-g\0sanlock\0--host-id\x001\0-o\x002\0",
            );
        }
        if let Some(a) = self.sanlock_args {
            w("proc/11/comm", b"sanlock\n");
            w("proc/11/cmdline", a.as_bytes());
        }
        if self.wdmd {
            w("proc/12/comm", b"wdmd\n");
            w("proc/12/cmdline", b"wdmd\0");
        }
        if self.watchdog {
            w("dev/watchdog", b"");
        }
        w("etc/default/sanlock", self.defaults.as_bytes());
        if self.udev_rule {
            w(&doctor::UDEV_RULE[1..], b"# rule\n");
        }
        w("sys/block/dm-0/dm/uuid", b"mpath-355254000ab5ec000\n");
        w("sys/block/dm-0/dm/name", b"mpatha\n");
        w("sys/block/dm-0/slaves/sda", b"");
        w("sys/block/dm-0/slaves/sdb", b"");
        let r = ScriptedRunner::new();
        r.always(
            &["sanlock", "client", "status"],
            Output::ok(self.status.clone()),
        );
        r.always(&["lvmconfig"], Output::ok(self.lvmconfig.clone()));
        r.always(
            &["vgs"],
            Output::ok(r#"{"report":[{"vg":[{"vg_name":"vgsan","vg_uuid":"V1","vg_attr":"wz--ns","vg_size":"1","vg_free":"0","vg_extent_size":"1","vg_lock_type":"sanlock","vg_lock_args":"1.0.0:lvmlock","pv_count":"1","lv_count":"1"}]}]}"#),
        );
        let pvs: Vec<String> = self
            .pvs_all
            .split(' ')
            .map(|n| format!(r#"{{"pv_name":"{n}","vg_name":"","pv_uuid":"","pv_size":"","pv_free":"","dev_size":"1"}}"#))
            .collect();
        r.always(
            &["pvs"],
            Output::ok(format!(r#"{{"report":[{{"pv":[{}]}}]}}"#, pvs.join(","))),
        );
        let regdir = tempfile::tempdir().unwrap();
        let reg: Option<Arc<dyn Registry>> = self.other.map(|(id, io)| {
            let reg = hostsync::open(&format!("local:{}", regdir.path().display())).unwrap();
            for (host, host_id, io_timeout) in [("A", 1, 2), ("B", id, io)] {
                publish_lvm_state(
                    &*reg,
                    &HostLvm {
                        host: host.into(),
                        host_id: Some(host_id),
                        io_timeout: Some(io_timeout),
                        taken_unix: 1,
                        vgs: vec![],
                        lvs: vec![],
                    },
                    0,
                )
                .unwrap();
            }
            reg
        });
        let probe = Probe::new(&r, d.path());
        doctor::run(
            &probe,
            reg.as_deref()
                .ok_or_else(|| "no registry configured".to_string()),
            "A",
        )
    }
}

/// Every non-ok finding as (check, severity).
fn problems(r: &doctor::Report) -> Vec<(&'static str, Severity)> {
    r.findings
        .iter()
        .filter(|f| f.severity != Severity::Ok)
        .map(|f| (f.check, f.severity))
        .collect()
}

fn finding<'a>(r: &'a doctor::Report, check: &str) -> &'a doctor::Finding {
    r.findings.iter().find(|f| f.check == check).unwrap()
}

#[test]
fn a_ready_host_is_clean() {
    let r = World::ready().run();
    assert_eq!(problems(&r), vec![], "{}", doctor::render(&r));
    assert_eq!(r.exit_code(), 0);
    let checks: Vec<_> = r.findings.iter().map(|f| f.check).collect();
    assert_eq!(
        checks,
        [
            "lvmlockd",
            "sanlock-watchdog",
            "wdmd",
            "watchdog-device",
            "host-id",
            "host-id-unique",
            "io-timeout",
            "lockspaces",
            "member-paths",
            "udev-rule",
            "kill-command"
        ]
    );
    assert_eq!(
        finding(&r, "host-id").message,
        "host_id 1 (from sanlock lockspace)"
    );
    assert!(
        finding(&r, "io-timeout")
            .message
            .starts_with("io_timeout 2 s")
    );
    assert!(doctor::render(&r).ends_with("A: 0 error(s), 0 warning(s)\n"));
}

/// One fault: exactly its finding, at its severity, with why and fix; the exit status follows.
fn one_fault(w: World, check: &str, sev: Severity, says: &str) {
    let r = w.run();
    assert_eq!(
        problems(&r),
        vec![(finding(&r, check).check, sev)],
        "{}",
        doctor::render(&r)
    );
    let f = finding(&r, check);
    assert!(f.message.contains(says), "{check}: {}", f.message);
    assert!(!f.why.is_empty() && !f.fix.is_empty(), "{check}");
    assert_eq!(r.exit_code(), if sev == Severity::Error { 2 } else { 1 });
}

#[test]
fn debians_watchdog_off_is_an_error_in_the_daemon_and_in_its_defaults() {
    let w = World {
        sanlock_args: Some("sanlock\0daemon\0-U\0sanlock\0-w\x000\0"),
        ..World::ready()
    };
    one_fault(
        w,
        "sanlock-watchdog",
        Severity::Error,
        "sanlock runs with -w 0",
    );
    // Running with the watchdog, but Debian's defaults file would start it without.
    let w = World {
        defaults: fixture("default-sanlock.debian"),
        ..World::ready()
    };
    one_fault(
        w,
        "sanlock-watchdog",
        Severity::Error,
        "sanlock_opts=\"-w 0\"",
    );
    let w = World {
        sanlock_args: None,
        ..World::ready()
    };
    one_fault(
        w,
        "sanlock-watchdog",
        Severity::Error,
        "sanlock is not running",
    );
}

#[test]
fn daemons_and_the_watchdog_device() {
    one_fault(
        World {
            lvmlockd: false,
            ..World::ready()
        },
        "lvmlockd",
        Severity::Error,
        "lvmlockd is not running",
    );
    one_fault(
        World {
            wdmd: false,
            ..World::ready()
        },
        "wdmd",
        Severity::Error,
        "wdmd is not running",
    );
    one_fault(
        World {
            watchdog: false,
            ..World::ready()
        },
        "watchdog-device",
        Severity::Error,
        "/dev/watchdog is missing",
    );
}

#[test]
fn host_id_and_io_timeout_against_the_cluster() {
    one_fault(
        World {
            other: Some((1, 2)),
            ..World::ready()
        },
        "host-id-unique",
        Severity::Error,
        "host_id 1 is also used by B",
    );
    one_fault(
        World {
            other: Some((2, 10)),
            ..World::ready()
        },
        "io-timeout",
        Severity::Error,
        "io_timeout is 2 s here (from sanlock lockspace) but B has 10 s",
    );
    // No registry: both say they were skipped (warnings), never a silent pass.
    let r = World {
        other: None,
        ..World::ready()
    }
    .run();
    assert_eq!(
        problems(&r),
        vec![
            ("host-id-unique", Severity::Warning),
            ("io-timeout", Severity::Warning)
        ]
    );
    for c in ["host-id-unique", "io-timeout"] {
        assert!(finding(&r, c).message.starts_with("skipped: "), "{c}");
        assert!(
            finding(&r, c).message.contains("no registry configured"),
            "{c}"
        );
    }
    assert_eq!(r.exit_code(), 1);
}

#[test]
fn a_missing_host_id_is_an_error() {
    let r = World {
        lvmlockd: false,
        status: "daemon x\n".into(),
        lvmconfig: fixture("lvmconfig-ready.txt"),
        ..World::ready()
    }
    .run();
    assert_eq!(finding(&r, "host-id").severity, Severity::Error);
    assert!(
        finding(&r, "host-id")
            .message
            .starts_with("no sanlock host_id is set")
    );
}

#[test]
fn a_shared_vg_without_its_lockspace_is_a_warning() {
    one_fault(
        World {
            status: "daemon x\n".into(),
            ..World::ready()
        },
        "lockspaces",
        Severity::Warning,
        "lockspace not started for shared VG(s) vgsan",
    );
}

#[test]
fn lvm_seeing_member_paths_is_an_error_and_no_filter_a_warning() {
    one_fault(
        World {
            pvs_all: "/dev/mapper/mpatha /dev/sda",
            ..World::ready()
        },
        "member-paths",
        Severity::Error,
        "/dev/sda (a path of mpatha)",
    );
    one_fault(
        World {
            lvmconfig: fixture("lvmconfig-debian-default.txt")
                .replace("use_lvmlockd=0", "use_lvmlockd=1")
                .replace(
                    "lvmlockctl_kill_command=\"\"",
                    "lvmlockctl_kill_command=\"/usr/sbin/hostsync fence\"",
                ),
            ..World::ready()
        },
        "member-paths",
        Severity::Warning,
        "neither a filter nor the devices file hides them",
    );
}

#[test]
fn udev_rule_and_kill_command() {
    one_fault(
        World {
            udev_rule: false,
            ..World::ready()
        },
        "udev-rule",
        Severity::Warning,
        "56-hostsync-multipath-members.rules is not installed",
    );
    one_fault(
        World {
            lvmconfig: fixture("lvmconfig-ready.txt").replace("/usr/sbin/hostsync fence", ""),
            ..World::ready()
        },
        "kill-command",
        Severity::Warning,
        "is not set",
    );
    one_fault(
        World {
            lvmconfig: fixture("lvmconfig-ready.txt")
                .replace("/usr/sbin/hostsync fence", "/usr/local/bin/kill-vg"),
            ..World::ready()
        },
        "kill-command",
        Severity::Warning,
        "\"/usr/local/bin/kill-vg\", not /usr/sbin/hostsync fence",
    );
    one_fault(
        World {
            lvmconfig: fixture("lvmconfig-ready.txt")
                .replace("/usr/sbin/hostsync fence", "hostsync fence"),
            ..World::ready()
        },
        "kill-command",
        Severity::Error,
        "not a full path",
    );
}
