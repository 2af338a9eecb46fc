#![allow(clippy::unwrap_used)]
//! The simulated backend behaves like the kernel where it matters.

use std::sync::Arc;
use std::time::Duration;

use dm_tables::{
    DevNo, DmBackend, Error, GroupState, Message, MultipathTable, PathState, RemoveMode, Removed,
    SimBackend, devices_from_sysfs, uuid_for_wwid,
};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../fixtures/ref-sd2x2-tcmloop2"
);
const ADDMAP: &str =
    "0 16384 multipath 0 1 alua 2 1 service-time 0 1 1 8:0 1 service-time 0 1 1 8:32 1";
const KERNEL: &str =
    "0 16384 multipath 0 1 alua 2 1 service-time 0 1 2 8:0 1 1 service-time 0 1 2 8:32 1 1";

fn d(minor: u32) -> DevNo {
    DevNo::new(8, minor)
}

fn sim() -> SimBackend {
    SimBackend::with_devices([d(0), d(16), d(32), d(48), d(64), d(80)])
}

fn t(s: &str) -> MultipathTable {
    s.parse().unwrap()
}

#[test]
fn create_reads_back_like_the_kernel() {
    let b = sim();
    let info = b
        .create(
            "mpatha",
            &uuid_for_wwid("1Linux_scsi_debug_2000"),
            &t(ADDMAP),
        )
        .unwrap();
    assert_eq!(info.name, "mpatha");
    assert_eq!(info.wwid(), Some("1Linux_scsi_debug_2000"));
    assert_eq!(info.open_count, 0);
    // the kernel adds service-time's default relative throughput
    assert_eq!(b.table_line("mpatha").unwrap(), KERNEL);
    assert_eq!(b.table("mpatha").unwrap(), t(KERNEL));
    let s = b.status("mpatha").unwrap();
    assert_eq!(
        s.to_string(),
        "0 16384 multipath 2 0 1 0 2 1 A 0 1 2 8:0 A 0 0 1 E 0 1 2 8:32 A 0 0 1"
    );
    assert_eq!(b.list().unwrap().len(), 1);
    assert_eq!(b.list_multipath().unwrap()[0].name, "mpatha");
}

#[test]
fn validation_like_the_kernel() {
    let b = sim();
    let unknown = t("0 8 multipath 0 0 1 1 round-robin 0 1 1 8:99 1");
    match b.create("m", "", &unknown).unwrap_err() {
        Error::UnknownDevice { map, devno } => {
            assert_eq!(map, "m");
            assert_eq!(devno, DevNo::new(8, 99));
        }
        e => panic!("{e}"),
    }
    let mut empty = t("0 8 multipath 0 0 1 1 round-robin 0 1 1 8:0 1");
    empty.groups[0].paths.clear();
    let e = b.create("m", "", &empty).unwrap_err().to_string();
    assert!(e.contains("no paths"), "{e}");
    assert!(matches!(
        b.create(
            "m",
            "",
            &t("0 8 multipath 1 frob 0 1 1 round-robin 0 1 1 8:0 1")
        ),
        Err(Error::InvalidTable { .. })
    ));
    assert!(matches!(
        b.create(
            "m",
            "",
            &t("0 8 multipath 0 1 nope 1 1 round-robin 0 1 1 8:0 1")
        ),
        Err(Error::InvalidTable { .. })
    ));
    assert!(matches!(
        b.create("m", "", &t("0 8 multipath 0 0 1 1 magic 0 1 1 8:0 1")),
        Err(Error::InvalidTable { .. })
    ));
    assert!(matches!(
        b.create(
            "m",
            "",
            &t("0 8 multipath 0 0 1 1 round-robin 0 1 2 8:0 1 1")
        ),
        Err(Error::InvalidTable { .. })
    ));
    assert!(
        b.list().unwrap().is_empty(),
        "failed creates leave nothing behind"
    );

    b.create("m", "mpath-x", &t(ADDMAP)).unwrap();
    assert!(matches!(
        b.create("m", "mpath-y", &t(ADDMAP)),
        Err(Error::MapExists { .. })
    ));
    match b.create("n", "mpath-x", &t(ADDMAP)).unwrap_err() {
        Error::UuidInUse { uuid, name } => {
            assert_eq!((uuid.as_str(), name.as_str()), ("mpath-x", "m"))
        }
        e => panic!("{e}"),
    }
    assert!(matches!(b.table("nope"), Err(Error::NoSuchMap { .. })));
    assert!(b.create("a/b", "", &t(ADDMAP)).is_err());
}

#[test]
fn fail_reinstate_fail_counts_and_events() {
    let b = sim();
    b.create("m", "mpath-x", &t(ADDMAP)).unwrap();
    let e0 = b.info("m").unwrap().event_nr;
    b.message("m", &Message::FailPath(d(0))).unwrap();
    let s = b.status("m").unwrap();
    assert_eq!(s.path(d(0)).unwrap().state, PathState::Failed);
    assert_eq!(s.path(d(0)).unwrap().fail_count, 1);
    // I/O moved to the other group
    assert_eq!(s.groups[1].state, GroupState::Active);
    assert_eq!(s.groups[0].state, GroupState::Enabled);
    let e1 = b.info("m").unwrap().event_nr;
    assert!(e1 > e0);
    // failing a failed path changes nothing, like the kernel
    b.message("m", &Message::FailPath(d(0))).unwrap();
    assert_eq!(b.info("m").unwrap().event_nr, e1);
    b.message("m", &Message::ReinstatePath(d(0))).unwrap();
    b.message("m", &Message::FailPath(d(0))).unwrap();
    let s = b.status("m").unwrap();
    assert_eq!(s.path(d(0)).unwrap().fail_count, 2, "fail counts grow");
    assert!(b.info("m").unwrap().event_nr >= e1 + 2);
    b.message("m", &Message::ReinstatePath(d(0))).unwrap();
    assert_eq!(
        b.status("m").unwrap().path(d(0)).unwrap().state,
        PathState::Active
    );
    // path not in the map / bad group
    assert!(matches!(
        b.message("m", &Message::FailPath(d(16))),
        Err(Error::MessageRefused { .. })
    ));
    assert!(matches!(
        b.message("m", &Message::SwitchGroup(3)),
        Err(Error::MessageRefused { .. })
    ));
    b.message("m", &Message::SwitchGroup(2)).unwrap();
    let s = b.status("m").unwrap();
    assert_eq!(s.current_group, 2);
    assert_eq!(s.groups[1].state, GroupState::Active);
    b.message("m", &Message::DisableGroup(1)).unwrap();
    assert_eq!(b.status("m").unwrap().groups[0].state, GroupState::Disabled);
}

#[test]
fn queue_if_no_path_by_message_shows_in_table_and_status() {
    let b = sim();
    b.create(
        "m",
        "",
        &t("0 8 multipath 1 queue_if_no_path 0 1 1 round-robin 0 2 1 8:16 1 8:32 1"),
    )
    .unwrap();
    b.message("m", &Message::FailPath(d(16))).unwrap();
    b.message("m", &Message::FailPath(d(32))).unwrap();
    let s = b.status("m").unwrap();
    assert!(s.queue_io, "no path + queue_if_no_path queues I/O");
    b.message("m", &Message::FailIfNoPath).unwrap();
    assert_eq!(
        b.table_line("m").unwrap(),
        "0 8 multipath 0 0 1 1 round-robin 0 2 1 8:16 1 8:32 1"
    );
    assert!(!b.status("m").unwrap().queue_io);
}

#[test]
fn open_maps_refuse_removal_deferred_remove_on_last_close() {
    let b = sim();
    b.create("m", "", &t(ADDMAP)).unwrap();
    b.open("m").unwrap();
    b.open("m").unwrap();
    match b.remove("m", RemoveMode::Now).unwrap_err() {
        e @ Error::MapOpen { .. } => {
            let msg = e.to_string();
            assert!(msg.contains("'m' is open (2 holder(s))"), "{msg}");
        }
        e => panic!("{e}"),
    }
    assert_eq!(
        b.remove("m", RemoveMode::Deferred).unwrap(),
        Removed::Deferred
    );
    assert!(b.info("m").is_ok());
    b.close("m").unwrap();
    assert!(b.info("m").is_ok());
    b.close("m").unwrap();
    assert!(matches!(b.info("m"), Err(Error::NoSuchMap { .. })));
    b.create("m2", "", &t(ADDMAP)).unwrap();
    assert_eq!(
        b.remove("m2", RemoveMode::Deferred).unwrap(),
        Removed::Removed
    );
    assert!(b.list().unwrap().is_empty());
}

#[test]
fn io_error_fails_the_path_in_every_map() {
    let b = sim();
    b.create(
        "a",
        "",
        &t("0 8 multipath 0 0 1 1 round-robin 0 2 1 8:0 1 8:16 1"),
    )
    .unwrap();
    b.create(
        "b",
        "",
        &t("0 8 multipath 0 0 1 1 round-robin 0 2 1 8:0 1 8:32 1"),
    )
    .unwrap();
    b.create(
        "c",
        "",
        &t("0 8 multipath 0 0 1 1 round-robin 0 1 1 8:48 1"),
    )
    .unwrap();
    let ev: Vec<u32> = ["a", "b", "c"]
        .iter()
        .map(|n| b.info(n).unwrap().event_nr)
        .collect();
    assert_eq!(
        b.inject_io_error(d(0)).unwrap(),
        vec!["a".to_string(), "b".to_string()]
    );
    for (i, n) in ["a", "b"].iter().enumerate() {
        assert_eq!(
            b.status(n).unwrap().path(d(0)).unwrap().state,
            PathState::Failed
        );
        assert_eq!(b.info(n).unwrap().event_nr, ev[i] + 1);
    }
    assert_eq!(b.info("c").unwrap().event_nr, ev[2]);
}

#[test]
fn reload_swaps_the_table_and_keeps_the_event_number() {
    let b = sim();
    b.create("m", "", &t(ADDMAP)).unwrap();
    b.message("m", &Message::FailPath(d(0))).unwrap();
    let e = b.info("m").unwrap().event_nr;
    let new = t("0 16384 multipath 0 1 alua 1 1 service-time 0 2 2 8:0 1 1 8:32 1 1");
    b.reload("m", &new).unwrap();
    assert_eq!(b.table("m").unwrap(), new);
    // the kernel's table swap raises a global event only (dm_swap_table), not the map's;
    // the resume's change uevent shows the reload
    assert_eq!(b.info("m").unwrap().event_nr, e);
    assert_eq!(
        b.change_uevents("m").unwrap(),
        2,
        "create's resume and the reload's"
    );
    // new table, new path objects: every path starts active, as in the kernel
    assert!(
        b.status("m")
            .unwrap()
            .paths()
            .all(|p| p.state == PathState::Active)
    );
    assert!(
        b.reload("m", &t("0 8 multipath 0 0 1 1 round-robin 0 1 1 9:9 1"))
            .is_err()
    );
    assert_eq!(
        b.table("m").unwrap(),
        new,
        "a refused reload keeps the old table"
    );
}

#[test]
fn rename() {
    let b = sim();
    b.create("m", "", &t(ADDMAP)).unwrap();
    b.create(
        "n",
        "",
        &t("0 8 multipath 0 0 1 1 round-robin 0 1 1 8:48 1"),
    )
    .unwrap();
    assert!(matches!(b.rename("m", "n"), Err(Error::MapExists { .. })));
    b.rename("m", "o").unwrap();
    assert!(b.info("o").is_ok() && b.info("m").is_err());
}

#[test]
fn wait_event_wakes_on_change_and_times_out() {
    let b = Arc::new(sim());
    b.create("m", "", &t(ADDMAP)).unwrap();
    let e = b.info("m").unwrap().event_nr;
    assert_eq!(
        b.wait_event("m", e, Duration::from_millis(50)).unwrap(),
        None
    );
    let b2 = Arc::clone(&b);
    let h = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        b2.inject_io_error(d(32)).unwrap();
    });
    let got = b.wait_event("m", e, Duration::from_secs(5)).unwrap();
    h.join().unwrap();
    assert_eq!(got, Some(e + 1));
}

#[test]
fn state_file_is_shared_between_instances() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dm.json");
    let devs = devices_from_sysfs(&std::path::Path::new(FIXTURES).join("sys")).unwrap();
    assert_eq!(devs.len(), 6);
    assert!(devs.contains(&d(80)));
    let a = SimBackend::open_file(&path, Some(devs)).unwrap();
    let b = SimBackend::open_file(&path, None).unwrap();
    a.create("mpatha", "mpath-w", &t(ADDMAP)).unwrap();
    assert_eq!(b.table_line("mpatha").unwrap(), KERNEL);
    // the device set recorded by `a` is enforced for `b`
    assert!(matches!(
        b.create(
            "x",
            "",
            &t("0 8 multipath 0 0 1 1 round-robin 0 1 1 8:96 1")
        ),
        Err(Error::UnknownDevice { .. })
    ));
    b.open("mpatha").unwrap();
    assert!(matches!(
        a.remove("mpatha", RemoveMode::Now),
        Err(Error::MapOpen { .. })
    ));
    // concurrent writers do not lose updates
    let path2 = path.clone();
    let hs: Vec<_> = (0..4)
        .map(|_| {
            let p = path2.clone();
            std::thread::spawn(move || {
                let s = SimBackend::open_file(&p, None).unwrap();
                for _ in 0..10 {
                    s.open("mpatha").unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(a.info("mpatha").unwrap().open_count, 41, "no update lost");
    std::fs::write(&path, "{ not json").unwrap();
    let e = a.list().unwrap_err().to_string();
    assert!(e.contains("dm.json") && e.contains("corrupt"), "{e}");
}

#[test]
fn set_devices_sticks_on_a_memory_backend() {
    // A hot-removed device stays gone for later operations: the set given to `with_devices`
    // does not come back on the next call.
    let b = sim();
    b.set_devices([d(16), d(32)]).unwrap();
    assert!(matches!(
        b.create("m", "", &t("0 8 multipath 0 0 1 1 round-robin 0 1 1 8:0 1")),
        Err(Error::UnknownDevice { devno, .. }) if devno == d(0)
    ));
    b.create(
        "m",
        "",
        &t("0 8 multipath 0 0 1 1 round-robin 0 1 1 8:16 1"),
    )
    .unwrap();
    assert!(matches!(
        b.create("n", "", &t("0 8 multipath 0 0 1 1 round-robin 0 1 1 8:0 1")),
        Err(Error::UnknownDevice { .. })
    ));
}

#[test]
fn a_uuid_is_free_again_after_remove_and_follows_a_rename() {
    let b = sim();
    let one = t("0 8 multipath 0 0 1 1 round-robin 0 1 1 8:0 1");
    let two = t("0 8 multipath 0 0 1 1 round-robin 0 1 1 8:16 1");
    b.create("a", "mpath-1", &one).unwrap();
    b.create("b", "mpath-2", &two).unwrap();
    b.rename("a", "c").unwrap();
    match b.create("d", "mpath-1", &two).unwrap_err() {
        Error::UuidInUse { name, .. } => assert_eq!(name, "c"),
        e => panic!("{e}"),
    }
    b.remove("c", RemoveMode::Now).unwrap();
    b.create("d", "mpath-1", &one).unwrap();
    match b.create("e", "mpath-1", &two).unwrap_err() {
        Error::UuidInUse { name, .. } => assert_eq!(name, "d"),
        e => panic!("{e}"),
    }
}

const QUEUEING: &str =
    "0 16384 multipath 1 queue_if_no_path 0 2 1 service-time 0 1 1 8:0 1 service-time 0 1 1 8:32 1";

/// A map with queue_if_no_path whose every path is down, holding `n` queued requests.
fn queueing_map_with_queued_io(b: &SimBackend, n: u64) {
    b.create("mpatha", &uuid_for_wwid("3600a0980q"), &t(QUEUEING))
        .unwrap();
    for dev in [d(0), d(32)] {
        b.set_failing(dev, true).unwrap();
    }
    let io = b.submit_io("mpatha", n).unwrap();
    assert_eq!(io.queued, n, "{io:?}");
    assert_eq!(io.failed, 0, "{io:?}");
    let s = b.status("mpatha").unwrap();
    assert!(s.queue_io, "both paths failed by the I/O, queueing: {s}");
}

#[test]
fn a_reload_keeps_queued_io_queued_and_a_returning_path_completes_it() {
    let b = sim();
    queueing_map_with_queued_io(&b, 5);
    // a reload while every path is still down (a path removed, a SIGHUP): noflush, the I/O
    // stays queued; the fresh table's paths fail it again and it goes back to the queue
    let one = t("0 16384 multipath 1 queue_if_no_path 0 1 1 service-time 0 1 1 8:0 1");
    b.reload("mpatha", &one).unwrap();
    let io = b.io("mpatha").unwrap();
    assert_eq!((io.queued, io.failed), (5, 0), "{io:?}");
    assert_eq!(
        b.status("mpatha").unwrap().groups[0].paths[0].state,
        PathState::Failed
    );
    // the path comes back and a reload brings it in: the queued I/O completes
    b.set_failing(d(32), false).unwrap();
    b.reload("mpatha", &t(QUEUEING)).unwrap();
    assert_eq!(
        b.io("mpatha").unwrap(),
        dm_tables::SimIo {
            queued: 0,
            completed: 5,
            failed: 0
        }
    );
}

#[test]
fn a_flushing_suspend_fails_queued_io_and_a_noflush_one_keeps_it() {
    let b = sim();
    queueing_map_with_queued_io(&b, 3);
    b.suspend("mpatha", dm_tables::SuspendFlags::RELOAD)
        .unwrap();
    assert!(b.info("mpatha").unwrap().suspended);
    assert_eq!(b.io("mpatha").unwrap().queued, 3);
    b.resume("mpatha").unwrap();
    assert_eq!(b.io("mpatha").unwrap().failed, 0);

    // dmsetup suspend (flush) + resume: presuspend turns queueing off, the flush fails it all
    b.suspend("mpatha", dm_tables::SuspendFlags::FLUSH).unwrap();
    let io = b.io("mpatha").unwrap();
    assert_eq!((io.queued, io.failed), (0, 3), "{io:?}");
    // while suspended, new I/O is held; the resume puts queueing back and it queues
    b.submit_io("mpatha", 2).unwrap();
    b.resume("mpatha").unwrap();
    let io = b.io("mpatha").unwrap();
    assert_eq!((io.queued, io.failed), (2, 3), "{io:?}");
    assert!(
        b.table("mpatha")
            .unwrap()
            .has_feature(&dm_tables::Feature::QueueIfNoPath)
    );
    // fail_if_no_path fails what is queued; a working path completes new I/O
    b.message("mpatha", &Message::FailIfNoPath).unwrap();
    assert_eq!(b.io("mpatha").unwrap().failed, 5);
    b.set_failing(d(0), false).unwrap();
    b.message("mpatha", &Message::ReinstatePath(d(0))).unwrap();
    assert_eq!(b.submit_io("mpatha", 4).unwrap().completed, 4);
}
