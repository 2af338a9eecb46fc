#![allow(clippy::unwrap_used)]
//! The `dm-tables` binary end to end, with the simulated backend in a temp dir.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_dm-tables");
const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../fixtures/ref-sd2x2-tcmloop2"
);
const TABLE: &str =
    "0 16384 multipath 0 1 alua 2 1 service-time 0 1 2 8:0 1 1 service-time 0 1 2 8:32 1 1";

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(s) = stdin {
        c.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    } else {
        drop(c.stdin.take());
    }
    c.wait_with_output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = run(args, None);
    assert!(
        o.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let o = run(args, None);
    assert!(
        !o.status.success(),
        "{args:?} succeeded: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8(o.stderr).unwrap()
}

struct Sim {
    _dir: tempfile::TempDir,
    backend: String,
}

impl Sim {
    fn new() -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let backend = format!("sim:{}", dir.path().join("dm.json").display());
        Sim { _dir: dir, backend }
    }
    fn args<'a>(&'a self, rest: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec![
            "--backend",
            self.backend.as_str(),
            "--sysfs-root",
            SYS.as_str(),
        ];
        v.extend_from_slice(rest);
        v
    }
}

static SYS: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| Path::new(FIXTURES).join("sys").display().to_string());

#[test]
fn explain_and_render_round_trip_real_dmsetup_output() {
    let table = std::fs::read_to_string(format!("{FIXTURES}/table.txt")).unwrap();
    let status = std::fs::read_to_string(format!("{FIXTURES}/status.txt")).unwrap();
    let both = format!("{table}{status}");
    let o = run(&["explain", "--json"], Some(&both));
    assert!(o.status.success());
    let json = String::from_utf8(o.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 6);
    assert_eq!(v[0]["kind"], "table");
    assert_eq!(v[0]["name"], "mpatha");
    assert_eq!(v[3]["kind"], "status");
    assert_eq!(v[3]["status"]["groups"][0]["paths"][0]["devno"], "8:0");
    let o = run(&["render"], Some(&json));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let expect: String = both
        .lines()
        .map(|l| format!("{}\n", l.trim_end()))
        .collect();
    assert_eq!(String::from_utf8(o.stdout).unwrap(), expect);

    let o = run(&["explain"], Some(&both));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains("mpatha: table: sectors 0+16384 (8.0 MiB)"),
        "{text}"
    );
    assert!(text.contains("hardware handler: alua"), "{text}");
    assert!(
        text.contains("8:32  active  failures: 0  selector info: 0 1"),
        "{text}"
    );
}

#[test]
fn explain_reports_bad_lines_with_token_and_fails() {
    let o = run(
        &["explain"],
        Some("0 8 multipath 0 0 1 1 round-robin 0 x 1 8:0 1\n"),
    );
    assert!(!o.status.success());
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(
        err.contains("line 1: token 10 ('x'): expected the path count"),
        "{err}"
    );
    let o = run(&["explain", "--status"], Some(TABLE));
    assert!(!o.status.success());
}

#[test]
fn render_accepts_a_bare_model_and_refuses_invalid_ones() {
    let t: dm_tables::MultipathTable = TABLE.parse().unwrap();
    let o = run(&["render"], Some(&serde_json::to_string(&t).unwrap()));
    assert_eq!(String::from_utf8(o.stdout).unwrap().trim_end(), TABLE);
    let mut bad = t.clone();
    bad.groups[0].paths.clear();
    let o = run(&["render"], Some(&serde_json::to_string(&bad).unwrap()));
    assert!(!o.status.success());
    assert!(
        String::from_utf8(o.stderr)
            .unwrap()
            .contains("path group 1 has no paths")
    );
    assert!(!run(&["render"], Some("{nope")).status.success());
}

#[test]
fn diff_prints_the_plan_and_refuses_dropping_active_paths() {
    let out = ok(&[
        "diff",
        TABLE,
        "0 16384 multipath 0 1 alua 1 1 service-time 0 2 2 8:0 1 1 8:32 1 1",
    ]);
    assert_eq!(
        out,
        "groups: [8:0] [8:32] -> [8:0 8:32]\nreload needed: yes\n"
    );
    assert_eq!(
        ok(&["diff", TABLE, TABLE]),
        "no changes\nreload needed: no\n"
    );
    let err = fails(&[
        "diff",
        TABLE,
        "0 16384 multipath 0 1 alua 1 1 service-time 0 1 2 8:32 1 1",
        "--status",
        "0 16384 multipath 2 0 1 0 2 1 A 0 1 2 8:0 A 0 0 1 E 0 1 2 8:32 F 1 0 1",
    ]);
    assert!(
        err.contains("drops every path that is active now (8:0)"),
        "{err}"
    );
    let j: serde_json::Value =
        serde_json::from_str(&ok(&["diff", "--json", TABLE, TABLE])).unwrap();
    assert_eq!(j["needs_reload"], false);
}

#[test]
fn backend_lifecycle_with_the_sim() {
    let s = Sim::new();
    let out = ok(&s.args(&[
        "create",
        "mpatha",
        "--uuid",
        "mpath-1Linux_scsi_debug_2000",
        "--table",
        TABLE,
    ]));
    assert_eq!(out, "created mpatha (253:0)\n");
    assert_eq!(ok(&s.args(&["table", "mpatha"])).trim_end(), TABLE);
    assert_eq!(
        ok(&s.args(&["status", "mpatha"])).trim_end(),
        "0 16384 multipath 2 0 1 0 2 1 A 0 1 2 8:0 A 0 0 1 E 0 1 2 8:32 A 0 0 1"
    );
    let ls = ok(&s.args(&["ls"]));
    assert!(
        ls.contains("mpatha")
            && ls.contains("253:0")
            && ls.contains("mpath-1Linux_scsi_debug_2000"),
        "{ls}"
    );
    let j: serde_json::Value = serde_json::from_str(&ok(&s.args(&["ls", "--json"]))).unwrap();
    assert_eq!(j[0]["name"], "mpatha");
    assert_eq!(j[0]["open_count"], 0);
    let ev0 = j[0]["event_nr"].as_u64().unwrap();

    // fail a path: status shows F and a fail count, the event number moves
    ok(&s.args(&["message", "mpatha", "fail_path", "8:32"]));
    let st = ok(&s.args(&["status", "mpatha"]));
    assert!(st.contains("8:32 F 1"), "{st}");
    let js: serde_json::Value =
        serde_json::from_str(&ok(&s.args(&["status", "mpatha", "--json"]))).unwrap();
    assert_eq!(js["groups"][1]["paths"][0]["state"], "failed");
    let ev1 = ok(&s.args(&[
        "wait",
        "mpatha",
        "--event",
        &ev0.to_string(),
        "--timeout",
        "1",
    ]));
    assert_eq!(ev1.trim().parse::<u64>().unwrap(), ev0 + 1);
    ok(&s.args(&["message", "mpatha", "reinstate_path", "8:32"]));
    assert!(ok(&s.args(&["status", "mpatha"])).contains("8:32 A 1"));
    let err = fails(&s.args(&["message", "mpatha", "fail_path", "8:99"]));
    assert!(err.contains("refused message 'fail_path 8:99'"), "{err}");
    let err = fails(&s.args(&["message", "mpatha", "frob"]));
    assert!(err.contains("not a multipath message"), "{err}");

    // the simulated kernel knows only the fixture's devices
    let err = fails(&s.args(&[
        "create",
        "x",
        "--table",
        "0 8 multipath 0 0 1 1 round-robin 0 1 1 8:96 1",
    ]));
    assert!(err.contains("device 8:96 does not exist"), "{err}");

    // reload refuses to drop the only active paths unless forced
    ok(&s.args(&["message", "mpatha", "fail_path", "8:0"]));
    let err = fails(&s.args(&[
        "reload",
        "mpatha",
        "--table",
        "0 16384 multipath 0 1 alua 1 1 service-time 0 1 2 8:0 1 1",
    ]));
    assert!(err.contains("refusing to reload map 'mpatha'"), "{err}");
    ok(&s.args(&["message", "mpatha", "reinstate_path", "8:0"]));
    ok(&s.args(&[
        "reload",
        "mpatha",
        "--table",
        "0 16384 multipath 0 1 alua 1 1 service-time 0 2 2 8:0 1 1 8:32 1 1",
    ]));
    assert!(ok(&s.args(&["table", "mpatha"])).contains(" 1 1 service-time 0 2 2 "));

    // open maps are not removed; deferred remove happens at last close
    assert_eq!(ok(&s.args(&["sim", "open", "mpatha"])).trim(), "1");
    let err = fails(&s.args(&["remove", "mpatha"]));
    assert!(err.contains("map 'mpatha' is open (1 holder(s))"), "{err}");
    let out = ok(&s.args(&["remove", "mpatha", "--deferred"]));
    assert!(out.contains("will be removed"), "{out}");
    ok(&s.args(&["rename", "mpatha", "mpathz"]));
    ok(&s.args(&["sim", "close", "mpathz"]));
    let err = fails(&s.args(&["status", "mpathz"]));
    assert!(err.contains("no device-mapper map named 'mpathz'"), "{err}");

    ok(&s.args(&["create", "m2", "--table", TABLE]));
    assert_eq!(ok(&s.args(&["remove", "m2"])), "removed m2\n");
    assert!(ok(&s.args(&["ls", "--json"])).trim() == "[]");
}

#[test]
fn wait_times_out_with_a_clear_error_and_io_errors_wake_it() {
    let s = Sim::new();
    ok(&s.args(&["create", "m", "--table", TABLE]));
    let err = fails(&s.args(&["wait", "m", "--timeout", "0.1"]));
    assert!(
        err.contains("timed out after 0.1 s waiting for an event on map 'm'"),
        "{err}"
    );
    let args: Vec<String> = s
        .args(&["wait", "m", "--timeout", "10"])
        .iter()
        .map(|a| a.to_string())
        .collect();
    let child = Command::new(BIN)
        .args(&args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(ok(&s.args(&["sim", "io-error", "8:0"])), "m\n");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), "1");
}

#[test]
fn bad_backend_and_kernel_errors_are_clear() {
    let err = fails(&["--backend", "nfs", "ls"]);
    assert!(err.contains("unknown backend 'nfs'"), "{err}");
    // this host has no device-mapper: the kernel backend says so (in the lab VM it works)
    if !Path::new("/dev/mapper/control").exists() {
        let err = fails(&["ls"]);
        assert!(err.contains("/dev/mapper/control"), "{err}");
    }
    let err = fails(&["sim", "open", "m"]);
    assert!(!err.is_empty());
}
