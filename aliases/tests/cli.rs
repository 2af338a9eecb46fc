#![allow(clippy::unwrap_used)]
//! The CLI contract of issue 4, exercised through the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const REF_BINDINGS: &str = include_str!("../../fixtures/ref-sd2x2-tcmloop2/bindings");

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sys/block")).unwrap();
        Env { dir }
    }
    fn p(&self, n: &str) -> PathBuf {
        self.dir.path().join(n)
    }
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_aliases"))
            .arg("--sysfs-root")
            .arg(self.p("sys"))
            .args(args)
            .output()
            .unwrap()
    }
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }
    fn fail(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(!o.status.success(), "{args:?} should fail");
        String::from_utf8(o.stderr).unwrap() + &String::from_utf8(o.stdout).unwrap()
    }
    fn live_map(&self, dm: &str, name: &str, uuid: &str) {
        let d = self.p("sys/block").join(dm).join("dm");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("name"), format!("{name}\n")).unwrap();
        std::fs::write(d.join("uuid"), format!("{uuid}\n")).unwrap();
    }
    fn s(&self, n: &str) -> String {
        self.p(n).to_string_lossy().into_owned()
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

#[test]
fn allocate_with_a_bindings_file_behaves_like_multipath_tools() {
    let env = Env::new();
    std::fs::write(env.p("bindings"), REF_BINDINGS).unwrap();
    let b = env.s("bindings");
    let args = ["--bindings-file", &b, "--policy", "user_friendly_names"];
    // Known WWID: its binding, no write.
    let out = env.ok(&[&args[..], &["allocate", "1Linux_scsi_debug_2001"]].concat());
    assert_eq!(out, "mpathb\n");
    assert_eq!(read(&env.p("bindings")), REF_BINDINGS);
    // New WWID: next free id, appended.
    let out = env.ok(&[&args[..], &["allocate", "1Linux_scsi_debug_2002"]].concat());
    assert_eq!(out, "mpathd\n");
    assert_eq!(
        read(&env.p("bindings")),
        format!("{REF_BINDINGS}mpathd 1Linux_scsi_debug_2002\n")
    );
    // A live map named mpathe (another WWID) is skipped.
    env.live_map("dm-3", "mpathe", "mpath-1elsewhere");
    let out = env.ok(&[&args[..], &["allocate", "1next"]].concat());
    assert_eq!(out, "mpathf\n");
    // JSON output.
    let out = env.ok(&[&args[..], &["allocate", "1next", "--json"]].concat());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["name"], "mpathf");
    assert_eq!(v["source"], "existing");
}

#[test]
fn set_get_list_remove() {
    let env = Env::new();
    let t = env.s("aliases.toml");
    let base = ["--table", t.as_str()];
    let out = env.ok(&[&base[..], &["set", "3600a", "data01", "--comment", "db"]].concat());
    assert!(out.contains("3600a -> data01"), "{out}");
    assert_eq!(env.ok(&[&base[..], &["get", "3600a"]].concat()), "data01\n");
    let e = env.fail(&[&base[..], &["get", "3600b"]].concat());
    assert!(e.contains("3600b has no alias"), "{e}");
    let e = env.fail(&[&base[..], &["set", "3600b", "data01"]].concat());
    assert!(e.contains("3600a") && e.contains("3600b"), "{e}");
    let e = env.fail(&[&base[..], &["set", "3600b", "bad/name"]].concat());
    assert!(e.contains("invalid alias") && e.contains('/'), "{e}");
    env.ok(&[&base[..], &["allocate", "3600b"]].concat());
    let out = env.ok(&[&base[..], &["list", "--json"]].concat());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["alias"], "data01");
    assert_eq!(rows[0]["comment"], "db");
    assert_eq!(rows[1]["alias"], "mpatha");
    assert!(rows[1]["created_at"].as_str().unwrap().ends_with('Z'));
    let human = env.ok(&[&base[..], &["list"]].concat());
    assert!(
        human.starts_with("ALIAS") && human.contains("data01"),
        "{human}"
    );
    // A live map uses data01: removal is refused unless forced.
    env.live_map("dm-0", "data01", "mpath-3600a");
    let e = env.fail(&[&base[..], &["remove", "3600a"]].concat());
    assert!(
        e.contains("live device-mapper map") && e.contains("--force"),
        "{e}"
    );
    let out = env.ok(&[&base[..], &["remove", "3600a", "--force"]].concat());
    assert!(out.contains("removed alias data01"), "{out}");
    env.fail(&[&base[..], &["get", "3600a"]].concat());
}

#[test]
fn import_export_check_repair() {
    let env = Env::new();
    std::fs::write(env.p("ref"), REF_BINDINGS).unwrap();
    let t = env.s("aliases.toml");
    let base = ["--table", t.as_str()];
    let out = env.ok(&[&base[..], &["import", "bindings", &env.s("ref")]].concat());
    assert!(out.contains("imported 3 binding(s)"), "{out}");
    assert_eq!(
        env.ok(&[&base[..], &["export", "--format", "bindings"]].concat()),
        REF_BINDINGS
    );
    let conf = env.ok(&[&base[..], &["export", "--format", "multipath-conf"]].concat());
    assert!(
        conf.contains("multipaths {") && conf.contains("alias mpathc"),
        "{conf}"
    );
    let toml = env.ok(&[&base[..], &["export", "--format", "toml"]].concat());
    assert!(toml.contains("generation = 1"), "{toml}");
    // Import a multipath.conf drop-in into a second table.
    std::fs::write(env.p("drop.conf"), &conf).unwrap();
    let t2 = env.s("t2.toml");
    let out = env.ok(&[
        "--table",
        &t2,
        "import",
        "multipath-conf",
        &env.s("drop.conf"),
    ]);
    assert!(out.contains("imported 3"), "{out}");

    assert!(env.ok(&[&base[..], &["check"]].concat()).starts_with("ok"));
    // A config alias that steals mpatha for another WWID is reported with file and line.
    std::fs::write(
        env.p("multipath.conf"),
        "multipaths {\n\tmultipath {\n\t\twwid 1thief\n\t\talias mpatha\n\t}\n}\n",
    )
    .unwrap();
    let e = env.fail(&[&base[..], &["--config", &env.s("multipath.conf"), "check"]].concat());
    assert!(
        e.contains("multipath.conf line 4") && e.contains("1thief"),
        "{e}"
    );
    let out = env.run(
        &[
            &base[..],
            &["--config", &env.s("multipath.conf"), "check", "--json"],
        ]
        .concat(),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);

    // A bad line (multipath-tools skips it) does not stop the store: it is reported with its
    // line, kept as it is, its alias is not handed out again; repair drops it with a backup.
    let broken = format!("{REF_BINDINGS}mpathd\n");
    std::fs::write(env.p("bindings"), &broken).unwrap();
    let b = env.s("bindings");
    let o = env.run(&["--bindings-file", &b, "allocate", "1new"]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "mpathe\n");
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("warning") && e.contains("line 11") && e.contains("kept"),
        "{e}"
    );
    assert_eq!(read(&env.p("bindings")), format!("{broken}mpathe 1new\n"));
    let out = env.ok(&["--bindings-file", &b, "repair"]);
    assert!(
        out.contains("dropped line 11") && out.contains("backup at"),
        "{out}"
    );
    assert_eq!(
        read(&env.p("bindings")),
        format!("{REF_BINDINGS}mpathe 1new\n")
    );
    assert_eq!(
        env.ok(&["--bindings-file", &b, "allocate", "1new2"]),
        "mpathd\n"
    );
}

#[test]
fn templates_and_policies_from_the_command_line() {
    let env = Env::new();
    let t = env.s("aliases.toml");
    let out = env.ok(&[
        "--table",
        &t,
        "--policy",
        "template:domU-{label}_{wwid_tail}",
        "--var",
        "label=web01",
        "allocate",
        "360014055d1b3c7a0e2f4b8a9c612f3e4",
    ]);
    assert_eq!(out, "domU-web01_c612f3e4\n");
    let e = env.fail(&[
        "--table",
        &t,
        "--policy",
        "template:x-{label}",
        "allocate",
        "1b",
    ]);
    assert!(e.contains("unknown variable {label}"), "{e}");
    let out = env.ok(&["--table", &t, "--policy", "wwid", "allocate", "1c"]);
    assert_eq!(out, "1c\n");
    let out = env.ok(&["--table", &t, "--alias-prefix", "disk", "allocate", "1d"]);
    assert_eq!(out, "diska\n");
    let e = env.fail(&["--table", &t, "--policy", "nonsense", "list"]);
    assert!(e.contains("unknown policy"), "{e}");
}
