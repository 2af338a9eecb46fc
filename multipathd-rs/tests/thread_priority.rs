#![allow(clippy::unwrap_used)]
//! Issue 18: `show` traffic never takes the CPU from failover. The daemon's failover threads
//! (the loop, the sweep) run at `priority::CRITICAL_NICE` when the daemon may raise them
//! (root), and a control connection answers reads at the server's `read_nice`, a change at its
//! starting priority.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dm_tables::SimBackend;
use multipathd_rs::clock::SystemClock;
use multipathd_rs::config::Config;
use multipathd_rs::priority::{self, CRITICAL_NICE};
use multipathd_rs::socket::{Command, Peer, Response, Server, ServerOptions};

/// The nice value of each of this process's threads named `name`.
fn nice_of_threads(name: &str) -> Vec<i32> {
    let mut v = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap() {
        let t = t.unwrap().path();
        let Ok(comm) = std::fs::read_to_string(t.join("comm")) else {
            continue;
        };
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(t.join("stat")).unwrap();
        let after = stat.rsplit_once(')').unwrap().1;
        // Field 19 of stat(5) is the nice value; field 3 (the state) is the first after ")".
        let nice: i32 = after.split_whitespace().nth(16).unwrap().parse().unwrap();
        v.push(nice);
    }
    v
}

/// Whether this process may raise a thread's priority (CAP_SYS_NICE or RLIMIT_NICE).
fn may_raise() -> bool {
    std::thread::spawn(|| {
        let n = priority::thread_nice().unwrap();
        priority::set_thread_nice(n + 1).unwrap();
        priority::set_thread_nice(n).is_ok()
    })
    .join()
    .unwrap()
}

#[test]
fn the_failover_threads_run_above_the_rest_when_the_daemon_may() {
    let dir = tempfile::tempdir().unwrap();
    let sim = common::dual_hba(dir.path());
    let e = common::engine(
        dir.path(),
        &sim.root,
        Config::builtin(),
        Box::new(SimBackend::new()),
        Arc::new(SystemClock),
    );
    let ours = priority::thread_nice().unwrap();
    let handle =
        common::start_daemon(e, dir.path().join("sock"), Duration::from_millis(200)).unwrap();
    let want = if may_raise() {
        CRITICAL_NICE.min(ours)
    } else {
        ours
    };
    // Every thread of those names: a scan's unnamed worker threads take the name of the
    // thread that started them (and its priority), so "daemon" may be several at a moment.
    for name in ["daemon", "sweep"] {
        let nice = nice_of_threads(name);
        assert!(
            !nice.is_empty() && nice.iter().all(|&n| n == want),
            "{name}: {nice:?}, want {want}"
        );
    }
    // The thread that started the daemon keeps its own priority.
    assert_eq!(priority::thread_nice().unwrap(), ours);
    handle.stop().unwrap();
}

/// Sends `lines` on one connection and returns the bodies of the answers.
fn ask(path: &Path, lines: &[&str]) -> Vec<String> {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut out = Vec::new();
    for l in lines {
        s.write_all(format!("{l}\n").as_bytes()).unwrap();
        let mut head = String::new();
        r.read_line(&mut head).unwrap();
        let len: usize = head.trim().split(' ').nth(1).unwrap().parse().unwrap();
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        out.push(String::from_utf8(body).unwrap());
    }
    out
}

#[test]
fn a_connection_answers_reads_at_the_read_priority_and_changes_at_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ctl.sock");
    // The answer is the nice value the command ran at.
    let handler = Arc::new(|_: &Command, _: &Peer| {
        Response::ok(priority::thread_nice().unwrap().to_string())
    });
    let ours = priority::thread_nice().unwrap();
    let server = Server::bind(
        &path,
        ServerOptions {
            credentials: |_| {
                Ok(Peer {
                    uid: 0,
                    gid: 0,
                    pid: 1,
                })
            },
            read_nice: Some(17),
            ..Default::default()
        },
    )
    .unwrap();
    let handle = server.spawn(handler).unwrap();
    let answers = ask(
        &path,
        &[
            "show paths",
            "show maps --json",
            "fail path sda",
            "show status",
        ],
    );
    // Going back up for the change needs CAP_SYS_NICE; without it the change runs lowered.
    let change = if may_raise() { ours } else { 17 };
    assert_eq!(
        answers,
        vec![
            "17".to_string(),
            "17".to_string(),
            change.to_string(),
            "17".to_string()
        ]
    );
    // No read priority: every command at the accept thread's (which is the test's here).
    handle.stop();
    let server = Server::bind(
        &path,
        ServerOptions {
            read_nice: None,
            ..Default::default()
        },
    )
    .unwrap();
    let handler = Arc::new(|_: &Command, _: &Peer| {
        Response::ok(priority::thread_nice().unwrap().to_string())
    });
    let handle = server.spawn(handler).unwrap();
    assert_eq!(ask(&path, &["show paths"]), vec![ours.to_string()]);
    handle.stop();
}
