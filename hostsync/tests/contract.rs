//! The registry contract, run against every backend: `local:DIR`, `san:/FILE` (the san
//! backend's on-disk format in a file, its mutex an OFD lock next to it) and a real 3-member
//! etcd cluster on loopback (skipped with a message only if /usr/bin/etcd is absent).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use hostsync::registry::{Compare, Event, Op, Registry, WatchEvent};
use hostsync::{ClusterNamer, MapState, NamerOptions};

/// Transactions, reads, watches, compaction and leases behave as the trait says.
fn registry_contract(reg: &dyn Registry) {
    // Both-absent allocation: exactly one of two competing transactions wins.
    let put = |k: &str, v: &str| Op::put(k, v.as_bytes().to_vec());
    let r1 = reg
        .txn(
            &[Compare::Absent("c/a".into()), Compare::Absent("c/b".into())],
            &[put("c/a", "1"), put("c/b", "1")],
        )
        .unwrap();
    assert!(r1.succeeded);
    let r2 = reg
        .txn(
            &[Compare::Absent("c/a".into()), Compare::Absent("c/z".into())],
            &[put("c/a", "2"), put("c/z", "2")],
        )
        .unwrap();
    assert!(!r2.succeeded);
    assert_eq!(
        r2.current.len(),
        1,
        "the failing side sees the key that exists"
    );
    assert_eq!(r2.current[0].value, b"1");
    assert!(
        reg.get("c/z").unwrap().is_none(),
        "a failed transaction wrote nothing"
    );
    let a = reg.get("c/a").unwrap().unwrap();
    assert_eq!(a.create_revision, r1.revision);
    // Compare-and-set on mod revision.
    let stale = reg
        .txn(
            &[Compare::ModRevision("c/a".into(), a.mod_revision - 1)],
            &[put("c/a", "x")],
        )
        .unwrap();
    assert!(!stale.succeeded);
    let ok = reg
        .txn(
            &[Compare::ModRevision("c/a".into(), a.mod_revision)],
            &[put("c/a", "3")],
        )
        .unwrap();
    assert!(ok.succeeded);
    assert_eq!(reg.get("c/a").unwrap().unwrap().value, b"3");
    // Prefix reads see exactly the prefix.
    reg.txn(&[], &[put("d/x", "0")]).unwrap();
    let snap = reg.range("c/").unwrap();
    let keys: Vec<&str> = snap.kvs.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(keys, ["c/a", "c/b"]);
    // A watch from a past revision replays, in order, only its prefix.
    let mut w = reg.watch("c/", r1.revision).unwrap();
    let mut seen = Vec::new();
    let start = Instant::now();
    while seen.len() < 3 && start.elapsed() < Duration::from_secs(10) {
        if let WatchEvent::Changes { events, .. } = w.next(Duration::from_millis(500)).unwrap() {
            seen.extend(events);
        }
    }
    let keys: Vec<String> = seen
        .iter()
        .map(|e| match e {
            Event::Put(kv) => format!("{}={}", kv.key, String::from_utf8_lossy(&kv.value)),
            Event::Delete { key, .. } => format!("-{key}"),
        })
        .collect();
    assert_eq!(keys, ["c/a=1", "c/b=1", "c/a=3"]);
    // A live watch sees a new change.
    reg.txn(&[], &[Op::Delete { key: "c/b".into() }]).unwrap();
    let mut got = None;
    let start = Instant::now();
    while got.is_none() && start.elapsed() < Duration::from_secs(10) {
        if let WatchEvent::Changes { events, .. } = w.next(Duration::from_millis(500)).unwrap() {
            got = events.into_iter().next();
        }
    }
    assert!(
        matches!(got, Some(Event::Delete { ref key, .. }) if key == "c/b"),
        "{got:?}"
    );
    // Compaction: a watch behind it must be told to resync, never silently skip changes.
    let head = reg.txn(&[], &[put("c/c", "4")]).unwrap().revision;
    reg.compact(head).unwrap();
    let mut old = reg.watch("c/", r1.revision).unwrap();
    let mut resync = false;
    let start = Instant::now();
    while !resync && start.elapsed() < Duration::from_secs(10) {
        match old.next(Duration::from_millis(500)).unwrap() {
            WatchEvent::Resync => resync = true,
            WatchEvent::Changes { events, .. } => panic!("compacted history replayed: {events:?}"),
            WatchEvent::Idle => {}
        }
    }
    assert!(resync, "a watch behind the compaction was not cancelled");
    // Leases: keys die with their lease; renewing an unknown lease says so.
    let lease = reg.grant_lease(2).unwrap();
    reg.txn(
        &[],
        &[Op::Put {
            key: "l/k".into(),
            value: b"v".to_vec(),
            lease,
        }],
    )
    .unwrap();
    assert!(reg.keep_alive(lease).unwrap());
    assert!(reg.get("l/k").unwrap().is_some());
    reg.revoke_lease(lease).unwrap();
    assert!(
        reg.get("l/k").unwrap().is_none(),
        "revoking a lease removes its keys"
    );
    assert!(!reg.keep_alive(lease).unwrap());
    // Expiry without renewal.
    let mut p = hostsync::HostPresence::join(reg_arc(reg), "h1", 1).unwrap();
    p.publish(&[MapState {
        name: "mpatha".into(),
        wwid: "W1".into(),
        active_paths: 2,
        total_paths: 4,
    }])
    .unwrap();
    let st = hostsync::cluster_state(reg).unwrap();
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].maps[0].total_paths, 4);
    let start = Instant::now();
    while !hostsync::cluster_state(reg).unwrap().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "an unrenewed host state never expired"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Renewing after expiry publishes again under a new lease.
    assert!(!p.keep_alive().unwrap());
    assert_eq!(hostsync::cluster_state(reg).unwrap().len(), 1);
    p.leave().unwrap();
    assert!(hostsync::cluster_state(reg).unwrap().is_empty());
}

fn reg_arc(reg: &dyn Registry) -> std::sync::Arc<dyn Registry> {
    hostsync::open(&reg.url()).unwrap()
}

#[test]
fn contract_local() {
    let d = common::tempdir();
    let reg = hostsync::open(&format!("local:{}", d.path().join("reg").display())).unwrap();
    registry_contract(&*reg);
}

fn san_url(d: &tempfile::TempDir) -> String {
    format!("san:{}", d.path().join("registry.san").display())
}

#[test]
fn contract_san() {
    let d = common::tempdir();
    let reg = hostsync::open(&san_url(&d)).unwrap();
    registry_contract(&*reg);
}

#[test]
fn contract_etcd() {
    let Some(c) = common::etcd() else { return };
    let reg = hostsync::open(&c.url()).unwrap();
    registry_contract(&*reg);
}

/// 16 processes acting as hosts allocate names for the same 1000 WWIDs at once.
fn sixteen_hosts(url: &str) {
    let d = common::tempdir();
    let all = common::wwids(1000, "aa");
    let table = common::many_hosts_allocate(url, 16, &all, d.path(), || {});
    assert_eq!(table.len(), 1000);
    // Lowest free over the registry, with no tombstones: exactly mpatha..(1000th name).
    let ids: BTreeSet<u64> = table
        .values()
        .map(|a| aliases::names::ufn_id(a, "mpath").unwrap())
        .collect();
    assert_eq!(ids, (1..=1000).collect::<BTreeSet<u64>>());
}

#[test]
fn sixteen_hosts_local() {
    let d = common::tempdir();
    sixteen_hosts(&format!("local:{}", d.path().join("reg").display()));
}

#[test]
fn sixteen_hosts_san() {
    let d = common::tempdir();
    sixteen_hosts(&san_url(&d));
}

#[test]
fn sixteen_hosts_etcd() {
    let Some(c) = common::etcd() else { return };
    sixteen_hosts(&c.url());
}

/// A name once bound never goes to another WWID without --reuse; a WWID's tombstoned name is
/// skipped by friendly allocation.
fn tombstones(url: &str) {
    let reg = hostsync::open(url).unwrap();
    let (mut n, _) = ClusterNamer::open(reg.clone(), "h1", NamerOptions::default()).unwrap();
    assert_eq!(n.name("W1").unwrap().alias, "mpatha");
    let out = n.set("W1", "db1", false).unwrap();
    assert_eq!(out.previous.as_deref(), Some("mpatha"));
    assert_eq!(
        n.name("W2").unwrap().alias,
        "mpathb",
        "tombstoned mpatha was reused"
    );
    let e = n.set("W3", "mpatha", false).unwrap_err().to_string();
    assert!(
        e.contains("was bound to WWID W1") && e.contains("--reuse"),
        "{e}"
    );
    let e = n.set("W3", "mpathb", true).unwrap_err().to_string();
    assert!(e.contains("is bound to WWID W2"), "{e}");
    assert_eq!(n.set("W3", "mpatha", true).unwrap().alias, "mpatha");
    assert!(hostsync::names::set_alias(&*reg, "h", "W4", "bad/name", false, "admin").is_err());
    let t = common::registry_table(&*reg);
    assert_eq!(t.get("W3").map(String::as_str), Some("mpatha"));
}

#[test]
fn tombstones_local() {
    let d = common::tempdir();
    tombstones(&format!("local:{}", d.path().join("reg").display()));
}

#[test]
fn tombstones_san() {
    let d = common::tempdir();
    tombstones(&san_url(&d));
}

#[test]
fn tombstones_etcd() {
    let Some(c) = common::etcd() else { return };
    tombstones(&c.url());
}

/// san: a writer killed while it holds the mutex, after its log frame and before its header,
/// changes nothing: its allocation never happened, the others go on, nothing is corrupt.
#[test]
fn san_crashed_writer_does_not_corrupt() {
    use std::os::unix::fs::FileExt as _;
    let d = common::tempdir();
    let url = san_url(&d);
    let file = d.path().join("registry.san");
    let reg = hostsync::open(&url).unwrap();
    let san = hostsync::san::SanRegistry::open(file.to_str().unwrap()).unwrap();
    let (mut n, _) = ClusterNamer::open(reg.clone(), "h0", NamerOptions::default()).unwrap();
    assert_eq!(n.name("W1").unwrap().alias, "mpatha");
    let before = san.header().unwrap().unwrap();

    // A host that stops for good after its frame is on disk, holding the mutex.
    let mut victim = std::process::Command::new(env!("CARGO_BIN_EXE_hostsync"))
        .args([
            "--registry",
            &url,
            "--host",
            "victim",
            "alias",
            "allocate",
            "W2",
        ])
        .env(hostsync::san::STALL_ENV, "after-frame")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let f = std::fs::File::open(&file).unwrap();
    let start = Instant::now();
    loop {
        let mut magic = [0u8; 4];
        f.read_exact_at(&mut magic, before.end).unwrap();
        if &magic == b"HREC" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the victim never wrote its frame"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Another host's allocation waits for the mutex meanwhile.
    let mut waiting = common::spawn_host(&url, "h1", &["W3".to_string()], d.path());
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        waiting.try_wait().unwrap().is_none(),
        "h1 wrote while the victim held the mutex"
    );
    victim.kill().unwrap();
    victim.wait().unwrap();
    let printed = common::finish_host("h1", waiting);
    assert_eq!(printed.get("W3").map(String::as_str), Some("mpathb"));

    let after = san.header().unwrap().unwrap();
    assert_eq!(
        after.generation,
        before.generation + 1,
        "only h1's commit counts"
    );
    let fresh = hostsync::open(&url).unwrap();
    let t = common::registry_table(&*fresh);
    assert_eq!(t.get("W1").map(String::as_str), Some("mpatha"));
    assert_eq!(t.get("W3").map(String::as_str), Some("mpathb"));
    assert!(
        !t.contains_key("W2"),
        "the killed writer's allocation is visible"
    );
    // W2 gets the next name from a healthy host.
    assert_eq!(n.name("W2").unwrap().alias, "mpathc");
    assert_eq!(common::registry_table(&*fresh).len(), 3);
}
