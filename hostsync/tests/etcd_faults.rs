//! Faults with a real 3-member etcd cluster on loopback: the leader killed during allocation,
//! one member stopped, a host restarted with a stale cache, a compacted watch. In each: no
//! duplicate name, allocation resumes, every host converges. Skipped with a message only if
//! /usr/bin/etcd is absent.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use hostsync::{ClusterNamer, NamerOptions};

/// Every registry read through `endpoint` alone gives `table`.
fn member_agrees(endpoint: &str, table: &std::collections::BTreeMap<String, String>) {
    let url = format!("etcd://{}", endpoint.trim_start_matches("http://"));
    let reg = hostsync::open(&url).unwrap();
    let start = Instant::now();
    loop {
        let t = common::registry_table(&*reg);
        if &t == table {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "member {endpoint} never caught up"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn leader_killed_during_allocation() {
    let Some(mut c) = common::etcd() else { return };
    let d = common::tempdir();
    let all = common::wwids(400, "lk");
    let url = c.url();
    let leader = c.leader().unwrap();
    let table = common::many_hosts_allocate(&url, 4, &all, d.path(), || {
        // Let allocation get going, then crash the leader under it.
        let reg = hostsync::open(&url).unwrap();
        let start = Instant::now();
        while hostsync::names::Bindings::read(&*reg)
            .unwrap()
            .by_wwid
            .len()
            < 40
        {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "allocation never started"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        c.kill(leader);
        // Positive control: the crash really happened in the middle of allocation.
        let done = hostsync::names::Bindings::read(&*reg)
            .unwrap()
            .by_wwid
            .len();
        assert!(
            done < 400,
            "allocation had finished before the leader was killed"
        );
    });
    assert_eq!(table.len(), 400);
    // A new leader was elected among the survivors and allocation finished there.
    let new = c.wait_leader(Duration::from_secs(10)).unwrap();
    assert_ne!(new, leader);
    // The crashed member comes back and converges to the same bindings.
    c.restart(leader).unwrap();
    member_agrees(&c.endpoints()[leader], &table);
}

#[test]
fn one_member_stopped() {
    let Some(mut c) = common::etcd() else { return };
    let d = common::tempdir();
    let stopped = 0;
    c.stop(stopped);
    c.wait_leader(Duration::from_secs(10)).unwrap();
    let all = common::wwids(200, "ms");
    let table = common::many_hosts_allocate(&c.url(), 4, &all, d.path(), || {});
    assert_eq!(table.len(), 200);
    // Back again, the member converges to what was decided while it was away.
    c.restart(stopped).unwrap();
    member_agrees(&c.endpoints()[stopped], &table);
}

#[test]
fn host_restarted_with_stale_cache() {
    let Some(c) = common::etcd() else { return };
    let d = common::tempdir();
    let url = c.url();
    let first = common::wwids(50, "sc");
    // host00 names 50 LUNs and caches them, then goes down.
    let t0 = common::finish_host(
        "host00",
        common::spawn_host(&url, "host00", &first, d.path()),
    );
    assert_eq!(t0.len(), 50);
    // While it is down: other hosts name 100 more, the admin renames one of its LUNs, and
    // its cache picks up a binding the registry never had (a hand edit, an old registry).
    let more = common::wwids(100, "sd");
    common::finish_host(
        "host01",
        common::spawn_host(&url, "host01", &more, d.path()),
    );
    let reg = hostsync::open(&url).unwrap();
    let renamed = &first[7];
    hostsync::names::set_alias(&*reg, "admin", renamed, "db7", false, "admin").unwrap();
    let cache = d.path().join("host00.bindings");
    let mut text = std::fs::read_to_string(&cache).unwrap();
    text.push_str("mpathzz 36001405cachedonly\n");
    std::fs::write(&cache, text).unwrap();
    // Restart: the registry wins, the extra binding is claimed (nothing dropped), the
    // table converges, and new allocation resumes after every name in use.
    let (mut n, rep) = ClusterNamer::open(
        reg.clone(),
        "host00",
        NamerOptions {
            cache: Some(cache.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        rep.stale,
        [(
            renamed.clone(),
            t0[renamed].clone(),
            Some("db7".to_string())
        )]
    );
    assert_eq!(
        rep.claimed,
        [("36001405cachedonly".to_string(), "mpathzz".to_string())]
    );
    let fresh = n.name("36001405afterrestart").unwrap();
    assert!(fresh.created);
    let table = common::registry_table(&*reg);
    assert_eq!(n.table(), &table);
    n.save_cache().unwrap();
    assert_eq!(common::cached_table(d.path(), "host00"), table);
    // Ids 1..=150 are in use (the renamed LUN's old name stays reserved as a tombstone) and
    // mpathzz is id 702: the lowest free is 151.
    assert_eq!(
        fresh.alias,
        aliases::names::ufn_alias("mpath", 151).unwrap()
    );
}

#[test]
fn compacted_watch_resyncs() {
    let Some(c) = common::etcd() else { return };
    let url = c.url();
    let reg = hostsync::open(&url).unwrap();
    let (mut a, _) = ClusterNamer::open(reg.clone(), "hostA", NamerOptions::default()).unwrap();
    let (mut b, _) = ClusterNamer::open(reg.clone(), "hostB", NamerOptions::default()).unwrap();
    let first = common::wwids(10, "cw");
    for w in &first {
        b.name(w).unwrap();
    }
    assert_eq!(a.poll(Duration::from_secs(5)).unwrap().len(), 10);
    // hostA stops listening; meanwhile 40 more names, then the history is compacted away.
    let more = common::wwids(40, "cx");
    let mut rev = 0;
    for w in &more {
        b.name(w).unwrap();
        rev = reg.get(&format!("wwid/{w}")).unwrap().unwrap().mod_revision;
    }
    reg.compact(rev).unwrap();
    // hostA's watch is cancelled by the compaction: it reads in full and converges.
    let start = Instant::now();
    let mut learned = Vec::new();
    while learned.len() < 40 {
        learned.extend(a.poll(Duration::from_millis(500)).unwrap());
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "hostA never converged"
        );
    }
    assert_eq!(a.table(), b.table());
    assert_eq!(a.table(), &common::registry_table(&*reg));
    // And it keeps following changes after the resync.
    let last = b.name("36001405afterresync").unwrap();
    let start = Instant::now();
    while a.alias_of("36001405afterresync").is_none() {
        a.poll(Duration::from_millis(500)).unwrap();
        assert!(start.elapsed() < Duration::from_secs(30));
    }
    assert_eq!(a.alias_of("36001405afterresync"), Some(last.alias.as_str()));
}
