#![allow(clippy::unwrap_used)]
//! Our store and multipath-tools writing one bindings file at the same time.
//!
//! Debian 12's multipath-tools 0.9.4 (observed with `strace -f multipath`) opens
//! `/etc/multipath/bindings` with `O_RDWR|O_CREAT` (mode 0600), takes
//! `fcntl(F_SETLKW, F_WRLCK, whole file)`, reads the file, and appends the new `alias wwid`
//! line at its end (lseek to the end, one write), then closes it (which drops the lock). The
//! emulated writer below does exactly that, in its own process (classic record locks belong to
//! a process). 16 of them and 16 `aliases allocate` processes run at once; no line of either
//! kind may be lost and no alias handed out twice.

use std::collections::{BTreeSet, HashMap};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::process::{Command, Stdio};

use aliases::bindings::BindingsFile;
use aliases::table::Table;

const ENV: &str = "ALIASES_TEST_MPT_WRITER";

/// One multipath-tools-style allocation: lock, read, pick the lowest free `mpath` id, append.
fn mpt_style_allocate(path: &Path, wwid: &str) {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .unwrap();
    let fl = nix::libc::flock {
        l_type: nix::libc::F_WRLCK as nix::libc::c_short,
        l_whence: nix::libc::SEEK_SET as nix::libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_SETLKW(&fl)).unwrap();
    let mut text = String::new();
    f.read_to_string(&mut text).unwrap();
    let mut used = BTreeSet::new();
    for line in text.lines() {
        let mut it = line.split('#').next().unwrap().split_whitespace();
        if let (Some(a), Some(w)) = (it.next(), it.next()) {
            assert_ne!(w, wwid, "the emulated writer's WWID is already bound");
            if let Some(id) = aliases::names::ufn_id(a, "mpath") {
                used.insert(id);
            }
        }
    }
    let id = (1..).find(|i| !used.contains(i)).unwrap();
    let alias = aliases::names::ufn_alias("mpath", id).unwrap();
    if text.is_empty() {
        f.write_all(aliases::bindings::BINDINGS_HEADER.as_bytes())
            .unwrap();
    }
    // Widen the window in which another writer could interfere.
    std::thread::sleep(std::time::Duration::from_millis(2));
    f.seek(SeekFrom::End(0)).unwrap();
    f.write_all(format!("{alias} {wwid}\n").as_bytes()).unwrap();
    println!("{alias} {wwid}");
    // Closing the file drops the lock.
}

/// Not a test on its own: the body of an emulated multipath-tools writer process, started by
/// `sixteen_multipath_tools_writers_and_sixteen_of_ours_lose_no_line` with `ENV` set.
#[test]
fn mpt_writer_child() {
    let Ok(spec) = std::env::var(ENV) else {
        return;
    };
    let (path, wwids) = spec.split_once('|').unwrap();
    for w in wwids.split(',') {
        mpt_style_allocate(Path::new(path), w);
    }
}

#[test]
fn sixteen_multipath_tools_writers_and_sixteen_of_ours_lose_no_line() {
    let dir = tempfile::tempdir().unwrap();
    let bindings = dir.path().join("bindings");
    let table = dir.path().join("aliases.toml");
    let exe = env!("CARGO_BIN_EXE_aliases");
    let procs = 16;
    let per = 10;
    let ours =
        |p: usize| -> Vec<String> { (0..per).map(|i| format!("3ours{p:02}w{i:02}")).collect() };
    let theirs =
        |p: usize| -> Vec<String> { (0..per).map(|i| format!("3mpt{p:02}w{i:02}")).collect() };
    let aliases_cmd = |args: &[String]| {
        let mut c = Command::new(exe);
        c.arg("--table")
            .arg(&table)
            .arg("--bindings-file")
            .arg(&bindings)
            .arg("--sysfs-root")
            .arg(dir.path().join("no-sysfs"))
            .arg("allocate")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    };
    let mut children = Vec::new();
    for p in 0..procs {
        // Interleave the start of both kinds.
        let spec = format!("{}|{}", bindings.display(), theirs(p).join(","));
        children.push((
            false,
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "mpt_writer_child", "--nocapture", "--quiet"])
                .env(ENV, spec)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        ));
        children.push((true, aliases_cmd(&ours(p)).spawn().unwrap()));
    }
    let mut printed: HashMap<String, String> = HashMap::new();
    for (is_ours, c) in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "a writer failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        if !is_ours {
            for l in text.lines().filter(|l| l.starts_with("mpath")) {
                let (a, w) = l.split_once(' ').unwrap();
                printed.insert(w.to_string(), a.to_string());
            }
        } else {
            assert_eq!(text.lines().count(), per, "{text}");
        }
    }
    assert_eq!(printed.len(), procs * per, "emulated writers' reports");

    let b = BindingsFile::load(&bindings).unwrap();
    assert!(b.problems.is_empty(), "{:?}", b.problems);
    let in_file: HashMap<String, String> = b
        .bindings()
        .map(|(a, w, _)| (w.to_string(), a.to_string()))
        .collect();
    let total = 2 * procs * per;
    assert_eq!(b.bindings().count(), in_file.len(), "a WWID is bound twice");
    let lost: Vec<_> = (0..procs)
        .flat_map(|p| ours(p).into_iter().chain(theirs(p)))
        .filter(|w| !in_file.contains_key(w))
        .collect();
    assert!(lost.is_empty(), "lost lines: {lost:?}");
    assert_eq!(in_file.len(), total);
    let distinct: BTreeSet<_> = in_file.values().collect();
    assert_eq!(distinct.len(), total, "an alias was handed out twice");
    // Every emulated writer's line holds the alias it chose.
    for (w, a) in &printed {
        assert_eq!(in_file.get(w), Some(a), "{w}");
    }
    // One more change of ours brings the table in step with everything in the file.
    let st = aliases_cmd(&["3final".to_string()]).status().unwrap();
    assert!(st.success());
    let t = Table::load(&table).unwrap();
    assert_eq!(t.entries.len(), total + 1);
    for e in &t.entries {
        if e.wwid != "3final" {
            assert_eq!(in_file.get(&e.wwid), Some(&e.alias), "{}", e.wwid);
        }
    }
    // No journal or temporary file is left behind.
    let names: BTreeSet<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| [
            "bindings",
            "bindings.lock",
            "aliases.toml",
            "aliases.toml.lock"
        ]
        .contains(&n.as_str())),
        "{names:?}"
    );
}
