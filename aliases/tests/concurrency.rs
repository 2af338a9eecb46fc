#![allow(clippy::unwrap_used)]
//! Concurrency test: 16 processes allocate 25 distinct WWIDs each, all at once, into one table
//! and bindings file. No alias may be handed out twice, no binding may be lost, and the
//! generation must count every change.

use std::collections::HashSet;
use std::process::{Command, Stdio};

use aliases::bindings::BindingsFile;
use aliases::table::Table;

#[test]
fn sixteen_processes_allocating_at_once_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let exe = env!("CARGO_BIN_EXE_aliases");
    let procs = 16;
    let per = 25;
    let mut children = Vec::new();
    for p in 0..procs {
        let wwids: Vec<String> = (0..per)
            .map(|i| format!("36001405p{p:02}w{i:02}"))
            .collect();
        children.push(
            Command::new(exe)
                .arg("--table")
                .arg(dir.path().join("aliases.toml"))
                .arg("--bindings-file")
                .arg(dir.path().join("bindings"))
                .arg("--sysfs-root")
                .arg(dir.path().join("no-sysfs"))
                .arg("allocate")
                .args(&wwids)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
    }
    let mut printed = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        assert_eq!(text.lines().count(), per);
        printed.extend(text.lines().map(str::to_string));
    }
    let total = procs * per;
    let t = Table::load(&dir.path().join("aliases.toml")).unwrap();
    assert_eq!(t.entries.len(), total, "lost bindings");
    assert_eq!(t.generation as usize, total);
    let aliases: HashSet<_> = t.entries.iter().map(|e| e.alias.clone()).collect();
    assert_eq!(aliases.len(), total, "duplicate alias");
    let wwids: HashSet<_> = t.entries.iter().map(|e| e.wwid.clone()).collect();
    assert_eq!(wwids.len(), total);
    // Exactly the ids 1..=400 were used (lowest free id each time).
    let expected: HashSet<_> = (1..=total as u64)
        .map(|i| aliases::names::ufn_alias("mpath", i).unwrap())
        .collect();
    assert_eq!(aliases, expected);
    // What the processes printed is what was stored.
    let printed: HashSet<_> = printed.into_iter().collect();
    assert_eq!(printed, expected);
    // The bindings file holds the same bindings in the same order.
    let b = BindingsFile::load(&dir.path().join("bindings")).unwrap();
    assert!(b.problems.is_empty());
    let bl: Vec<_> = b
        .bindings()
        .map(|(a, w, _)| (a.to_string(), w.to_string()))
        .collect();
    let tl: Vec<_> = t
        .entries
        .iter()
        .map(|e| (e.alias.clone(), e.wwid.clone()))
        .collect();
    assert_eq!(bl, tl);
}
