#![allow(clippy::unwrap_used)]
//! Waiting for device-mapper events on the simulated kernel: a waiter wakes on an event,
//! nothing is lost under a burst, a wait with no event times out, and the operations raise
//! events where the kernel does (see dm-tables/src/sim.rs for the kernel references).

use std::sync::Arc;
use std::time::{Duration, Instant};

use dm_tables::{
    DevNo, DmBackend, EventWatcher, Message, MultipathTable, RemoveMode, SimBackend, SuspendFlags,
};

const ADDMAP: &str =
    "0 16384 multipath 0 1 alua 2 1 service-time 0 1 1 8:0 1 service-time 0 1 1 8:32 1";

fn d(minor: u32) -> DevNo {
    DevNo::new(8, minor)
}

fn t(s: &str) -> MultipathTable {
    s.parse().unwrap()
}

fn sim_with(maps: &[&str]) -> Arc<SimBackend> {
    let b = Arc::new(SimBackend::new());
    for m in maps {
        b.create(m, "", &t(ADDMAP)).unwrap();
    }
    b
}

fn watcher(b: &SimBackend) -> EventWatcher {
    EventWatcher::new(b.event_source().unwrap()).unwrap()
}

#[test]
fn a_failed_path_wakes_the_waiter_with_its_map() {
    let b = sim_with(&["a", "b"]);
    let mut w = watcher(&b);
    let b2 = Arc::clone(&b);
    let h = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        // the target fails the path on an I/O error (dm-mpath's fail_path)
        b2.inject_io_error(d(32)).unwrap();
    });
    let started = Instant::now();
    let got = w.next(Duration::from_secs(10)).unwrap().expect("woken");
    h.join().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    let nr = |n: &str| b.info(n).unwrap().event_nr;
    assert_eq!(
        got.changed,
        vec![("a".to_string(), nr("a")), ("b".to_string(), nr("b"))]
    );
    assert!(got.added.is_empty() && got.removed.is_empty());
}

#[test]
fn a_wait_without_events_times_out() {
    let b = sim_with(&["a"]);
    let mut w = watcher(&b);
    let started = Instant::now();
    assert_eq!(w.next(Duration::from_millis(100)).unwrap(), None);
    assert!(started.elapsed() >= Duration::from_millis(100));
    // events that change no map's number wake the wait but are not reported: a table swap
    b.reload("a", &t(ADDMAP)).unwrap();
    // and a suspend/resume raises nothing at all
    b.suspend("a", SuspendFlags::RELOAD).unwrap();
    b.resume("a").unwrap();
    assert_eq!(w.next(Duration::from_millis(100)).unwrap(), None);
    // positive control: the same watcher sees a real event
    b.message("a", &Message::FailPath(d(0))).unwrap();
    assert!(w.next(Duration::from_millis(100)).unwrap().is_some());
}

#[test]
fn rearming_before_listing_loses_nothing_under_a_burst() {
    let names: Vec<String> = (0..8).map(|i| format!("m{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let b = sim_with(&refs);
    let mut w = watcher(&b);
    let b2 = Arc::clone(&b);
    let burst = std::thread::spawn(move || {
        for round in 0..200 {
            let name = format!("m{}", round % 8);
            let msg = if (round / 8) % 2 == 0 {
                Message::FailPath(d(0))
            } else {
                Message::ReinstatePath(d(0))
            };
            b2.message(&name, &msg).unwrap();
            if round % 16 == 0 {
                std::thread::yield_now();
            }
        }
    });
    let mut wakes = 0;
    loop {
        let done = burst.is_finished();
        let got = w.next(Duration::from_secs(2)).unwrap();
        if got.is_some() {
            wakes += 1;
        }
        if done && got.is_none() {
            break;
        }
    }
    burst.join().unwrap();
    assert!(wakes > 0);
    // every event was seen: what the watcher knows is what the kernel has
    assert_eq!(w.known(), &b.event_numbers().unwrap());
    for n in &names {
        assert_eq!(w.known()[n], 25, "{n}: 25 state changes of its path");
    }
}

#[test]
fn another_process_on_the_state_file_wakes_the_waiter() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dm.json");
    let a = SimBackend::open_file(&path, None).unwrap();
    a.create("m", "", &t(ADDMAP)).unwrap();
    let mut w = watcher(&a);
    assert_eq!(w.next(Duration::from_millis(50)).unwrap(), None);
    let h = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        // its own handle: no in-process wake-up, only the file
        let other = SimBackend::open_file(&path, None).unwrap();
        other.message("m", &Message::FailPath(d(32))).unwrap();
    });
    let got = w.next(Duration::from_secs(10)).unwrap().expect("woken");
    h.join().unwrap();
    assert_eq!(got.changed, vec![("m".to_string(), 1)]);
}

#[test]
fn events_are_raised_where_the_kernel_raises_them() {
    let b = sim_with(&["m", "n"]);
    let nr = |name: &str| b.info(name).unwrap().event_nr;
    assert_eq!(nr("m"), 0, "a new map starts at 0");
    // queue_if_no_path / fail_if_no_path: no event
    b.message("m", &Message::FailIfNoPath).unwrap();
    b.message("m", &Message::QueueIfNoPath).unwrap();
    assert_eq!(nr("m"), 0);
    // failing a path: one; failing it again: none
    b.message("m", &Message::FailPath(d(0))).unwrap();
    b.message("m", &Message::FailPath(d(0))).unwrap();
    assert_eq!(nr("m"), 1);
    // reinstating it: one
    b.message("m", &Message::ReinstatePath(d(0))).unwrap();
    assert_eq!(nr("m"), 2);
    // switch_group: always one, even to the current group; disable/enable: one each
    b.message("m", &Message::SwitchGroup(1)).unwrap();
    b.message("m", &Message::SwitchGroup(1)).unwrap();
    b.message("m", &Message::DisableGroup(2)).unwrap();
    b.message("m", &Message::EnableGroup(2)).unwrap();
    assert_eq!(nr("m"), 6);
    // a reload and a suspend/resume: none
    b.reload("m", &t(ADDMAP)).unwrap();
    b.suspend("m", SuspendFlags::FLUSH).unwrap();
    b.resume("m").unwrap();
    assert_eq!(nr("m"), 6);
    // a rename: one (dm_hash_rename)
    b.rename("m", "o").unwrap();
    assert_eq!(nr("o"), 7);
    // the other map saw none of it
    assert_eq!(nr("n"), 0);
}

#[test]
fn create_rename_and_remove_wake_the_waiter_and_are_reported() {
    let b = sim_with(&["m"]);
    let mut w = watcher(&b);
    b.create("n", "", &t(ADDMAP)).unwrap();
    let got = w.next(Duration::from_secs(5)).unwrap().expect("woken");
    assert_eq!(got.added, vec![("n".to_string(), 0)]);
    b.remove("m", RemoveMode::Now).unwrap();
    let got = w.next(Duration::from_secs(5)).unwrap().expect("woken");
    assert_eq!(got.removed, vec!["m".to_string()]);
    b.rename("n", "o").unwrap();
    let got = w.next(Duration::from_secs(5)).unwrap().expect("woken");
    assert_eq!(got.removed, vec!["n".to_string()]);
    assert_eq!(got.added, vec![("o".to_string(), 1)]);
}
