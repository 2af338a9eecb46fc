#![allow(clippy::unwrap_used)]
//! Crash test: the `aliases` binary allocates WWIDs one durable write at a time and is killed
//! with SIGKILL at random moments, 200 times. After every kill both files parse and hold a
//! complete version: the table's entries are exactly the WWIDs allocated so far, in order,
//! named mpatha, mpathb, ..., its generation equals its entry count, and the bindings file is
//! the same list or an older complete version of it (the table is written first), never a
//! torn file.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aliases::bindings::BindingsFile;
use aliases::table::Table;

fn xorshift(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

fn verify(dir: &Path, all_wwids: &[String]) -> usize {
    let t = Table::load(&dir.join("aliases.toml")).unwrap();
    let b = BindingsFile::load(&dir.join("bindings")).unwrap();
    assert!(
        b.problems.is_empty(),
        "bindings file is torn: {:?}",
        b.problems
    );
    let n = t.entries.len();
    assert_eq!(
        t.generation as usize, n,
        "generation must count the changes"
    );
    for (i, e) in t.entries.iter().enumerate() {
        assert_eq!(e.wwid, all_wwids[i], "entry {i} out of order");
        assert_eq!(
            Some(e.alias.clone()),
            aliases::names::ufn_alias("mpath", i as u64 + 1)
        );
    }
    let bl: Vec<_> = b
        .bindings()
        .map(|(a, w, _)| (a.to_string(), w.to_string()))
        .collect();
    // The table is written first; a kill between the two writes leaves the bindings file at an
    // older complete version (a prefix), which the next change brings up to date.
    assert!(bl.len() <= n, "bindings {} vs table {n}", bl.len());
    for (i, (a, w)) in bl.iter().enumerate() {
        assert_eq!((a, w), (&t.entries[i].alias, &t.entries[i].wwid));
    }
    n
}

#[test]
fn sigkill_at_random_moments_never_leaves_a_torn_file() {
    let dir = tempfile::tempdir().unwrap();
    let exe = env!("CARGO_BIN_EXE_aliases");
    let all: Vec<String> = (0..20_000)
        .map(|i| format!("3600140500000000000000000{i:08}"))
        .collect();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
    let started = Instant::now();
    let mut done = 0;
    let mut kills_mid_run = 0;
    for _ in 0..200 {
        // Each run asks for the already-allocated WWIDs again (no change) plus 60 new ones.
        let upto = (done + 60).min(all.len());
        let mut cmd = Command::new(exe);
        cmd.arg("--table")
            .arg(dir.path().join("aliases.toml"))
            .arg("--bindings-file")
            .arg(dir.path().join("bindings"))
            .arg("--sysfs-root")
            .arg(dir.path().join("no-sysfs"))
            .arg("--policy")
            .arg("user_friendly_names")
            .arg("allocate")
            .args(&all[done..upto])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        let delay = Duration::from_micros(xorshift(&mut seed) % 60_000);
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            kills_mid_run += 1;
        }
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
        done = verify(dir.path(), &all);
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "crash test took too long"
        );
    }
    assert!(
        kills_mid_run > 100,
        "only {kills_mid_run} kills hit a running writer"
    );
    assert!(done > 0, "nothing was ever allocated");
    // A clean run afterwards syncs the bindings file and sweeps temporary files of killed
    // writers.
    let st = Command::new(exe)
        .arg("--table")
        .arg(dir.path().join("aliases.toml"))
        .arg("--bindings-file")
        .arg(dir.path().join("bindings"))
        .arg("--sysfs-root")
        .arg(dir.path().join("no-sysfs"))
        .arg("allocate")
        .arg(&all[done])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let n = verify(dir.path(), &all);
    assert_eq!(n, done + 1);
    let b = BindingsFile::load(&dir.path().join("bindings")).unwrap();
    assert_eq!(b.bindings().count(), n);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
