#![allow(clippy::unwrap_used)]
//! The daemon keeps its engine lock short: `show ...` is answered from the published
//! snapshot while the lock is held elsewhere, and a `rescan` does not hold the lock while the
//! SCSI hosts scan (a writer that blocks stands in for a slow settle). Positive control: a
//! command that changes something does wait for the lock.

mod common;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dm_tables::SimBackend;
use lun_scan::rescan::SysfsWriter;
use multipathd_rs::clock::SystemClock;
use multipathd_rs::config::Config;
use multipathd_rs::daemon::DaemonHandle;
use multipathd_rs::socket::{self, Command, Format, Status};

fn start(dir: &Path, writer: Option<Box<dyn SysfsWriter + Send>>) -> (DaemonHandle, PathBuf) {
    let sim = common::dual_hba(dir);
    let mut e = common::engine(
        dir,
        &sim.root,
        Config::builtin(),
        Box::new(SimBackend::new()),
        Arc::new(SystemClock),
    );
    if let Some(w) = writer {
        e.set_sysfs_writer(w);
    }
    let sock = dir.join("d.sock");
    let h = common::start_daemon(e, sock.clone(), Duration::from_millis(50)).unwrap();
    (h, sock)
}

/// Sends `command` on a thread; the answer comes through the receiver.
fn ask(sock: &Path, command: Command) -> mpsc::Receiver<socket::Response> {
    let (tx, rx) = mpsc::channel();
    let sock = sock.to_path_buf();
    std::thread::spawn(move || {
        if let Ok(r) = socket::request_with_timeout(&sock, &command, Duration::from_secs(60)) {
            let _ = tx.send(r);
        }
    });
    rx
}

#[test]
fn show_commands_are_answered_while_the_engine_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let (h, sock) = start(dir.path(), None);
    let d = h.daemon().clone();
    let dev = d.engine().paths()[0].dev.clone();
    let held = d.engine();
    for c in [
        Command::ShowPaths {
            format: Format::Json,
        },
        Command::ShowMaps {
            format: Format::Human,
        },
        Command::ShowStatus {
            format: Format::Json,
        },
        Command::ShowConfig,
    ] {
        let r = ask(&sock, c.clone())
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("{c:?} waited for the engine lock"));
        assert_eq!(r.status, Status::Ok, "{c:?}: {}", r.body);
    }
    let paths = ask(
        &sock,
        Command::ShowPaths {
            format: Format::Json,
        },
    )
    .recv_timeout(Duration::from_secs(10))
    .unwrap();
    assert!(paths.body.contains(&format!("\"{dev}\"")), "{}", paths.body);
    // Positive control: a change waits for the lock, and is answered once it is free.
    let fail = ask(&sock, Command::FailPath { dev: dev.clone() });
    assert!(fail.recv_timeout(Duration::from_millis(500)).is_err());
    drop(held);
    let r = fail.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(r.status, Status::Ok, "{}", r.body);
    // The change is published before the answer: the next read counts the fault (the
    // path itself may already be reinstated by the loop's next check: the sysfs says up).
    let after = ask(
        &sock,
        Command::ShowMaps {
            format: Format::MultipathdJson,
        },
    )
    .recv_timeout(Duration::from_secs(10))
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&after.body).unwrap();
    let faults: u64 = v["maps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["path_faults"].as_u64().unwrap())
        .sum();
    assert_eq!(faults, 1, "{}", after.body);
    h.stop().unwrap();
}

/// A sysfs writer whose host scans block until the test opens the gate.
struct GateWriter {
    entered: mpsc::Sender<()>,
    gate: Arc<Mutex<mpsc::Receiver<()>>>,
}

impl SysfsWriter for GateWriter {
    fn write(&mut self, path: &Path, value: &str) -> std::io::Result<()> {
        if path.ends_with("scan") {
            let _ = self.entered.send(());
            let _ = self
                .gate
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(30));
        }
        std::fs::write(path, value)
    }
}

#[test]
fn rescan_does_not_hold_the_engine_while_the_hosts_scan() {
    let dir = tempfile::tempdir().unwrap();
    let (entered_tx, entered) = mpsc::channel();
    let (open, gate) = mpsc::channel();
    let writer = GateWriter {
        entered: entered_tx,
        gate: Arc::new(Mutex::new(gate)),
    };
    let (h, sock) = start(dir.path(), Some(Box::new(writer)));
    let d = h.daemon().clone();
    let rescan = ask(&sock, Command::Rescan);
    entered.recv_timeout(Duration::from_secs(10)).unwrap();
    // The first host's scan is blocked: the engine is free meanwhile.
    let (tx, rx) = mpsc::channel();
    let d2 = d.clone();
    std::thread::spawn(move || {
        let n = d2.engine().paths().len();
        let _ = tx.send(n);
    });
    assert!(rx.recv_timeout(Duration::from_secs(5)).unwrap() > 0);
    assert!(
        rescan.recv_timeout(Duration::from_millis(200)).is_err(),
        "still scanning"
    );
    for _ in 0..8 {
        let _ = open.send(());
    }
    let r = rescan.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(r.status, Status::Ok, "{}", r.body);
    h.stop().unwrap();
}

/// Clients of one snapshot are sent one shared text, not a copy each (64 clients looping on a
/// 32k-path `show paths --json` held a copy per connection: gigabytes). Positive control: a
/// new snapshot gives a new text.
#[test]
fn clients_of_one_snapshot_share_one_answer() {
    use multipathd_rs::socket::{CommandHandler, Peer};
    let dir = tempfile::tempdir().unwrap();
    let (h, _sock) = start(dir.path(), None);
    let d = h.daemon().clone();
    let peer = Peer {
        uid: 1000,
        gid: 1000,
        pid: 1,
    };
    let c = Command::ShowPaths {
        format: Format::Json,
    };
    // The loop may publish between the two asks: retry until both came from one snapshot.
    let (a, b) = (0..50)
        .find_map(|_| {
            let before = d.published();
            let a = d.handle_shared(&c, &peer);
            let b = d.handle_shared(&c, &peer);
            Arc::ptr_eq(&before, &d.published()).then_some((a, b))
        })
        .expect("a snapshot that stayed for two asks");
    assert_eq!(a.status, Status::Ok);
    assert!(Arc::ptr_eq(&a, &b), "each client got its own copy");
    d.publish(&d.engine());
    let fresh = d.handle_shared(&c, &peer);
    assert!(
        !Arc::ptr_eq(&a, &fresh),
        "a new snapshot reused the old text"
    );
    h.stop().unwrap();
}
