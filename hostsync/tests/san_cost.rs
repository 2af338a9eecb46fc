//! What a `san:VG/LV` registry costs per command: every hostsync command that reads or writes
//! the registry several times holds the LV once (one `lvchange -aey|-asy` and one `-an`), not
//! once per operation (before: `alias allocate` of 3 WWIDs ran lvchange 18 times, `alias set`
//! 8, `alias list` 4, `check aliases` 6, `render` 4, `check lvs` 6, `import` 4, `migrate check`
//! 6). The commands run as the admin runs them, with a stand-in `lvchange` on PATH that records
//! its arguments, and the registry in a file where `/dev/mapper/VG-LV` would be
//! (`HOSTSYNC_SAN_TEST_ROOT`).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

struct San {
    dir: tempfile::TempDir,
}

impl San {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let bin = d.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let lvchange = bin.join("lvchange");
        std::fs::write(
            &lvchange,
            "#!/bin/sh\necho \"lvchange $*\" >>\"$FAKE/calls\"\n",
        )
        .unwrap();
        let mut perm = std::fs::metadata(&lvchange).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(&lvchange, perm).unwrap();
        let dev = d.join("root/dev/mapper/vgsan-hsreg");
        std::fs::create_dir_all(dev.parent().unwrap()).unwrap();
        std::fs::File::create(&dev)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        San { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `hostsync --registry san:vgsan/hsreg --host HOST ARGS`; returns its stdout and the
    /// lvchange calls it made.
    fn run(&self, host: &str, args: &[&str]) -> (String, Vec<String>) {
        let _ = std::fs::remove_file(self.path().join("calls"));
        let path = format!(
            "{}:{}",
            self.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new(env!("CARGO_BIN_EXE_hostsync"))
            .args(["--registry", "san:vgsan/hsreg", "--host", host])
            .args(args)
            .env("PATH", path)
            .env("FAKE", self.path())
            .env(hostsync::san::TEST_ROOT_ENV, self.path().join("root"))
            .output()
            .unwrap();
        let calls = std::fs::read_to_string(self.path().join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        (String::from_utf8_lossy(&out.stdout).into_owned(), calls)
    }

    fn cache(&self, host: &str) -> PathBuf {
        self.path().join(format!("{host}.bindings"))
    }
}

const TAKE_EX: &str = "lvchange -aey vgsan/hsreg";
const TAKE_SH: &str = "lvchange -asy vgsan/hsreg";
const GIVE: &str = "lvchange -an vgsan/hsreg";

#[test]
fn each_command_holds_the_registry_lv_once() {
    let san = San::new();
    let cache = san.cache("a");
    let cache = cache.to_str().unwrap();
    let (out, calls) = san.run(
        "a",
        &["alias", "allocate", "--cache", cache, "W1", "W2", "W3"],
    );
    assert_eq!(out, "W1 mpatha\nW2 mpathb\nW3 mpathc\n");
    assert_eq!(calls, [TAKE_EX, GIVE], "alias allocate of 3 WWIDs");

    let (out, calls) = san.run("b", &["alias", "set", "W2", "db2"]);
    assert!(out.contains("W2 db2"), "{out}");
    assert_eq!(calls, [TAKE_EX, GIVE], "alias set");

    let bindings = format!("a={cache}");
    for args in [
        &["alias", "list"][..],
        &["check", "aliases"],
        &["render", "multipath-conf"],
        &["check", "lvs"],
        &["import", &bindings],
        &["migrate", "check", "/dev/null", "--to", "a"],
    ] {
        let (_, calls) = san.run("b", args);
        assert_eq!(calls, [TAKE_SH, GIVE], "{args:?}");
    }
    let (out, _) = san.run("b", &["alias", "list"]);
    assert!(out.contains("W2") && out.contains("db2"), "{out}");
}
