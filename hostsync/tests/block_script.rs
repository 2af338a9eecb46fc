//! contrib/xen/block-hostsync run exactly as libxl runs it: `block-hostsync add|remove`, stdin
//! /dev/null, XENBUS_PATH=backend/vbd/<domid>/<devid>, XENBUS_TYPE, XENBUS_BASE_PATH and
//! `script` in the environment, against a fake xenstore (xenstore-read/xenstore-write stand-ins
//! on PATH that keep the store in files and record every call) and fake LVM tools (lvs answers
//! a report, lvchange records its arguments), with a local: registry (or an unreachable etcd).

#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hostsync::lvstate::{HostLvm, LvMode};
use hostsync::testkit::{holding, web1_migration};

const BP: &str = "backend/vbd/5/51712";

struct Fake {
    dir: tempfile::TempDir,
}

fn write_exec(p: &Path, body: &str) {
    std::fs::write(p, body).unwrap();
    let mut perm = std::fs::metadata(p).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(p, perm).unwrap();
}

impl Fake {
    fn new(domain_name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let bin = d.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        // Relative xenstore paths are relative to dom0's home, /local/domain/0.
        let key = r#"case "$1" in /*) k="${1#/}" ;; *) k="local/domain/0/$1" ;; esac"#;
        write_exec(
            &bin.join("xenstore-read"),
            &format!(
                "#!/bin/sh\necho \"xenstore-read $*\" >>\"$FAKE/calls\"\n{key}\n[ -f \"$FAKE/xs/$k\" ] || {{ echo \"could not read path $1\" >&2; exit 1; }}\ncat \"$FAKE/xs/$k\"; echo\n"
            ),
        );
        write_exec(
            &bin.join("xenstore-write"),
            &format!(
                "#!/bin/sh\nwhile [ $# -ge 2 ]; do\n  echo \"xenstore-write $1 $2\" >>\"$FAKE/calls\"\n  case \"$1\" in */physical-device) [ -f \"$FAKE/xs-write.fail\" ] && {{ echo \"xenstore-write: timed out\" >&2; exit 1; }} ;; esac\n  {key}\n  mkdir -p \"$(dirname \"$FAKE/xs/$k\")\"\n  printf %s \"$2\" >\"$FAKE/xs/$k\"\n  shift 2\ndone\n"
            ),
        );
        write_exec(
            &bin.join("lvs"),
            "#!/bin/sh\necho \"lvs $*\" >>\"$FAKE/calls\"\ncat \"$FAKE/lvs.json\"\n",
        );
        write_exec(
            &bin.join("lvchange"),
            "#!/bin/sh\necho \"lvchange $*\" >>\"$FAKE/calls\"\nif [ -f \"$FAKE/lvchange.fail\" ]; then cat \"$FAKE/lvchange.fail\" >&2; exit 5; fi\n",
        );
        let lv = serde_json::json!({"lv_name": "web1", "vg_name": "vgsan", "lv_uuid": "LV1",
            "lv_attr": "-wi-------", "lv_size": "4194304", "origin": "", "pool_lv": "",
            "snap_percent": "", "data_percent": "", "metadata_percent": "",
            "lv_active_locally": "0", "lv_active_exclusively": "0", "lv_device_open": "0",
            "lv_lock_args": "1.0.0:70254592", "lv_path": "/dev/vgsan/web1",
            "lv_dm_path": "/dev/mapper/vgsan-web1"});
        std::fs::write(
            d.join("lvs.json"),
            serde_json::json!({"report": [{"lv": [lv]}]}).to_string(),
        )
        .unwrap();
        // The kernel's view after activation: dm-3 is vgsan-web1, 254:3.
        let dm = d.join("sys/block/dm-3");
        std::fs::create_dir_all(dm.join("dm")).unwrap();
        std::fs::write(dm.join("dev"), "254:3\n").unwrap();
        std::fs::write(dm.join("dm/name"), "vgsan-web1\n").unwrap();
        std::fs::write(dm.join("dm/uuid"), "LVM-VG1LV1\n").unwrap();
        let f = Fake { dir };
        f.xs_put(&format!("local/domain/0/{BP}/params"), "/dev/vgsan/web1");
        f.xs_put(&format!("local/domain/0/{BP}/mode"), "w");
        f.xs_put("local/domain/5/name", domain_name);
        f
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn xs_put(&self, key: &str, v: &str) {
        let p = self.path().join("xs").join(key);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, v).unwrap();
    }

    fn xs(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.path().join("xs/local/domain/0").join(BP).join(rel)).ok()
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.path().join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn registry(&self) -> String {
        format!("local:{}", self.path().join("reg").display())
    }

    /// Runs the script as libxl does; returns (exit status, stderr, elapsed).
    fn run(&self, action: &str, registry: &str, host: &str) -> (i32, String, Duration) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/xen/block-hostsync");
        let path = format!(
            "{}:{}",
            self.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let t = Instant::now();
        let out = Command::new(&script)
            .arg(action)
            .env("PATH", path)
            .env("FAKE", self.path())
            .env("script", &script)
            .env("XENBUS_TYPE", "vbd")
            .env("XENBUS_PATH", BP)
            .env("XENBUS_BASE_PATH", "backend")
            .env("HOSTSYNC", env!("CARGO_BIN_EXE_hostsync"))
            .env(
                "HOSTSYNC_OPTS",
                format!("--registry {registry} --host {host}"),
            )
            .env(
                "HOSTSYNC_BLOCK_OPTS",
                format!("--sysfs {}", self.path().join("sys").display()),
            )
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            t.elapsed(),
        )
    }
}

/// web1 is being migrated from a (holding its LV shared) to b.
fn migrating_a_to_b(reg: &dyn hostsync::Registry) {
    hostsync::lvstate::publish_lvm_state(reg, &holding("a", LvMode::Shared), 0).unwrap();
    hostsync::lvstate::register_migration(reg, &web1_migration("a", "b")).unwrap();
}

fn lvchanges(f: &Fake) -> Vec<String> {
    f.calls()
        .into_iter()
        .filter(|c| c.starts_with("lvchange"))
        .collect()
}

fn lvm_record(url: &str, host: &str) -> Option<HostLvm> {
    let reg = hostsync::open(url).unwrap();
    hostsync::lvstate::cluster_lvm_state(&*reg)
        .unwrap()
        .into_iter()
        .find(|h| h.host == host)
}

#[test]
fn a_start_is_refused_while_another_host_holds_the_lv() {
    let f = Fake::new("web1");
    let reg = hostsync::open(&f.registry()).unwrap();
    hostsync::lvstate::publish_lvm_state(&*reg, &holding("a", LvMode::Exclusive), 0).unwrap();
    let (code, err, _) = f.run("add", &f.registry(), "b");
    assert_eq!(code, 1, "{err}");
    let msg = f.xs("hotplug-error").expect("hotplug-error written");
    assert!(
        msg.contains("vgsan/web1 is active on a (exclusive)"),
        "{msg}"
    );
    assert_eq!(f.xs("hotplug-status").as_deref(), Some("error"));
    assert!(
        lvchanges(&f).is_empty(),
        "nothing activated: {:?}",
        f.calls()
    );
    assert!(
        f.calls().contains(&format!("xenstore-read {BP}/params")),
        "{:?}",
        f.calls()
    );
}

#[test]
fn a_normal_start_activates_exclusively_and_reports_the_device_and_remove_deactivates() {
    let f = Fake::new("web1");
    let (code, err, _) = f.run("add", &f.registry(), "b");
    assert_eq!(code, 0, "{err}");
    assert_eq!(lvchanges(&f), ["lvchange -aey vgsan/web1"]);
    assert_eq!(f.xs("physical-device").as_deref(), Some("fe:3"));
    assert_eq!(
        f.xs("physical-device-path").as_deref(),
        Some("/dev/mapper/vgsan-web1")
    );
    assert_eq!(f.xs("hotplug-status").as_deref(), Some("connected"));
    assert_eq!(f.xs("hotplug-error"), None);
    let rec = lvm_record(&f.registry(), "b").unwrap();
    assert_eq!(rec.lvs[0].mode, LvMode::Exclusive);
    // Now another host may not start it.
    let (code, _, _) = f.run("add", &f.registry(), "c");
    assert_eq!(code, 1);
    let (code, err, _) = f.run("remove", &f.registry(), "b");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        lvchanges(&f).last().map(String::as_str),
        Some("lvchange -an vgsan/web1")
    );
    assert!(lvm_record(&f.registry(), "b").unwrap().lvs.is_empty());
}

#[test]
fn the_destination_of_a_registered_migration_activates_shared() {
    // xl migrate's receiving side names the domain <name>--incoming until it is done.
    let f = Fake::new("web1--incoming");
    let reg = hostsync::open(&f.registry()).unwrap();
    migrating_a_to_b(&*reg);
    let (code, err, _) = f.run("add", &f.registry(), "b");
    assert_eq!(code, 0, "{err}");
    assert_eq!(lvchanges(&f), ["lvchange -asy vgsan/web1"]);
    assert_eq!(f.xs("hotplug-status").as_deref(), Some("connected"));
    // The same start on a third host is refused.
    let (code, _, _) = f.run("add", &f.registry(), "c");
    assert_eq!(code, 1);
    assert!(
        f.xs("hotplug-error")
            .unwrap()
            .contains("a migration of web1 from a to b is registered")
    );
}

#[test]
fn an_activation_xenstore_cannot_be_told_of_is_undone() {
    // The destination of a migration: if its `add` fails after activating, the LV must not stay
    // active shared there, or the source cannot take it back when the migration fails.
    let f = Fake::new("web1--incoming");
    let reg = hostsync::open(&f.registry()).unwrap();
    migrating_a_to_b(&*reg);
    std::fs::write(f.path().join("xs-write.fail"), "").unwrap();
    let (code, err, _) = f.run("add", &f.registry(), "b");
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        lvchanges(&f),
        ["lvchange -asy vgsan/web1", "lvchange -an vgsan/web1"]
    );
    let msg = f.xs("hotplug-error").unwrap();
    assert!(
        msg.contains("could not be reported in xenstore") && msg.contains("deactivated again"),
        "{msg}"
    );
    assert_eq!(f.xs("hotplug-status").as_deref(), Some("error"));
    assert!(lvm_record(&f.registry(), "b").unwrap().lvs.is_empty());
}

#[test]
fn lvmlockds_refusal_is_passed_on_in_its_own_words() {
    let f = Fake::new("web1");
    std::fs::write(
        f.path().join("lvchange.fail"),
        "  LV locked by other host: vgsan/web1\n",
    )
    .unwrap();
    let (code, _, _) = f.run("add", &f.registry(), "b");
    assert_eq!(code, 1);
    let msg = f.xs("hotplug-error").unwrap();
    assert!(msg.contains("LV locked by other host: vgsan/web1"), "{msg}");
    assert!(
        lvm_record(&f.registry(), "b").is_none(),
        "nothing recorded as active"
    );
}

#[test]
fn an_unreachable_registry_fails_closed_within_libxls_time_limit() {
    let f = Fake::new("web1");
    // A port that accepts connections and never answers: the worst kind of outage.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("etcd://{}", l.local_addr().unwrap());
    let (code, err, took) = f.run("add", &url, "b");
    assert_eq!(code, 1, "{err}");
    assert!(took < Duration::from_secs(40), "took {took:?}");
    let msg = f.xs("hotplug-error").unwrap();
    assert!(
        msg.contains("did not answer within") && msg.contains(&url),
        "{msg}"
    );
    assert_eq!(f.xs("hotplug-status").as_deref(), Some("error"));
    assert!(lvchanges(&f).is_empty());
    eprintln!("unreachable registry: refused in {took:?}");
    drop(l);
}

#[test]
fn a_missing_hostsync_binary_still_refuses_the_disk() {
    let f = Fake::new("web1");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/xen/block-hostsync");
    let out = Command::new(&script)
        .arg("add")
        .env(
            "PATH",
            format!("{}:/usr/bin:/bin", f.path().join("bin").display()),
        )
        .env("FAKE", f.path())
        .env("XENBUS_PATH", BP)
        .env("HOSTSYNC", PathBuf::from("/nonexistent/hostsync"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        f.xs("hotplug-error")
            .unwrap()
            .contains("could not decide (exit status 127)")
    );
    assert_eq!(f.xs("hotplug-status").as_deref(), Some("error"));
}

// --- the libvirt hook -------------------------------------------------------------------------

const XML: &str = "<domain type='kvm'><name>web1</name><devices>\
<disk type='block' device='disk'><source dev='/dev/vgsan/web1'/><target dev='vda' bus='virtio'/></disk>\
<disk type='file' device='cdrom'><source file='/srv/x.iso'/><target dev='hdc'/><readonly/></disk>\
</devices></domain>";

/// Runs contrib/libvirt/qemu as libvirtd does: `qemu GUEST OP SUBOP EXTRA`, the XML on stdin.
fn hook(f: &Fake, host: &str, op: &str, subop: &str) -> (i32, String, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/libvirt/qemu");
    let mut c = Command::new(&script);
    c.args(["web1", op, subop, "-"])
        .env(
            "PATH",
            format!(
                "{}:{}",
                f.path().join("bin").display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("FAKE", f.path())
        .env("HOSTSYNC", env!("CARGO_BIN_EXE_hostsync"))
        .env(
            "HOSTSYNC_OPTS",
            format!("--registry {} --host {host}", f.registry()),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    // The hook exits at once, without reading stdin, for operations it has no business in;
    // when it is gone before the XML is written the write fails with EPIPE. libvirtd ignores
    // that ("child closed stdin early", vircommand.c) and so does this helper: the exit
    // status decides. (Unwrapping it failed the test whenever a loaded machine let the hook
    // finish first.)
    match std::io::Write::write_all(&mut child.stdin.take().unwrap(), XML.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        r => r.unwrap(),
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_libvirt_hook_applies_the_same_rules() {
    let f = Fake::new("web1");
    let reg = hostsync::open(&f.registry()).unwrap();
    // Another host holds it: prepare is refused, nothing activated.
    hostsync::lvstate::publish_lvm_state(&*reg, &holding("a", LvMode::Exclusive), 0).unwrap();
    let (code, out, err) = hook(&f, "b", "prepare", "begin");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("vgsan/web1 is active on a (exclusive)"),
        "{err}"
    );
    assert!(out.is_empty() && lvchanges(&f).is_empty());
    // An incoming migration nobody registered is refused at `migrate begin`.
    let (code, _, err) = hook(&f, "b", "migrate", "begin");
    assert_eq!(code, 1, "{err}");
    // Registered: migrate passes (nothing on stdout: libvirt would take it as XML), prepare
    // takes it shared.
    migrating_a_to_b(&*reg);
    let (code, out, err) = hook(&f, "b", "migrate", "begin");
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    assert!(lvchanges(&f).is_empty());
    let (code, _, err) = hook(&f, "b", "prepare", "begin");
    assert_eq!(code, 0, "{err}");
    assert_eq!(lvchanges(&f), ["lvchange -asy vgsan/web1"]);
    // Operations the hook has no business in pass without running hostsync.
    let (code, _, _) = hook(&f, "b", "started", "begin");
    assert_eq!(code, 0);
    // release deactivates.
    let (code, _, err) = hook(&f, "b", "release", "end");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        lvchanges(&f).last().map(String::as_str),
        Some("lvchange -an vgsan/web1")
    );
    // A normal start with nobody else holding it is exclusive.
    hostsync::lvstate::finish_migration(&*reg, "web1").unwrap();
    hostsync::lvstate::publish_lvm_state(
        &*reg,
        &HostLvm {
            lvs: vec![],
            ..holding("a", LvMode::Shared)
        },
        0,
    )
    .unwrap();
    let (code, _, err) = hook(&f, "b", "prepare", "begin");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        lvchanges(&f).last().map(String::as_str),
        Some("lvchange -aey vgsan/web1")
    );
}
