#![allow(clippy::unwrap_used)]
//! Coalescing a burst of 10,000 synthetic uevents (an HBA with 2,000 LUN paths going away and
//! coming back while properties change) into one plan per map.

use std::collections::{BTreeMap, HashMap};

use multipathd_rs::uevent::{DeviceChange, Uevent, UeventSource, coalesce, parse_kernel_uevent};

fn kernel_event(action: &str, host: u32, lun: u32, seq: u64) -> Uevent {
    let dev = format!("sd{host}x{lun}");
    let devpath = format!(
        "/devices/platform/host{host}/rport-{host}:0-0/target{host}:0:0/{host}:0:0:{lun}/block/{dev}"
    );
    let message = format!(
        "{action}@{devpath}\0ACTION={action}\0DEVPATH={devpath}\0SUBSYSTEM=block\0\
         DEVNAME={dev}\0DEVTYPE=disk\0MAJOR=8\0MINOR={lun}\0SEQNUM={seq}\0"
    );
    // Every event goes through the real parser, as off the netlink socket.
    parse_kernel_uevent(message.as_bytes()).unwrap()
}

#[test]
fn ten_thousand_events_reduce_to_one_plan_per_map() {
    const LUNS: u32 = 1000;
    let mut events = Vec::new();
    let mut seq = 0u64;
    let mut next = || {
        seq += 1;
        seq
    };
    // Host 1 (existing paths): remove all, then add all back (HBA bounce) -> Replaced.
    for lun in 0..LUNS {
        events.push(kernel_event("remove", 1, lun, next()));
    }
    for lun in 0..LUNS {
        events.push(kernel_event("add", 1, lun, next()));
    }
    // Host 2 (new HBA): add + five changes each -> Added.
    for lun in 0..LUNS {
        events.push(kernel_event("add", 2, lun, next()));
    }
    for _ in 0..5 {
        for lun in 0..LUNS {
            events.push(kernel_event("change", 2, lun, next()));
        }
    }
    // Host 3: 500 paths that come and go within the burst (transient), 500 that only vanish.
    for lun in 0..500 {
        events.push(kernel_event("add", 3, lun, next()));
        events.push(kernel_event("remove", 3, lun, next()));
    }
    for lun in 500..1000 {
        events.push(kernel_event("remove", 3, lun, next()));
    }
    // Host 0: 500 changes on existing paths.
    for lun in 0..500 {
        events.push(kernel_event("change", 0, lun, next()));
    }
    assert_eq!(events.len(), 10_000);

    // The daemon's key callback: LUN n of every host is the same WWID; host 9 is unknown.
    let mut calls = 0usize;
    let burst = coalesce(events, |outcome| {
        calls += 1;
        let lun = outcome.last.devpath.rsplit(':').next()?.split('/').next()?;
        Some(format!("wwid-{lun:0>4}"))
    });
    assert_eq!(burst.events_in, 10_000);
    assert_eq!(burst.transient, 500);
    assert!(burst.unkeyed.is_empty());
    assert_eq!(calls, 3500 - 500, "one key lookup per surviving device");
    assert_eq!(burst.maps.len(), LUNS as usize);

    let mut totals: HashMap<DeviceChange, usize> = HashMap::new();
    for map in &burst.maps {
        let per_host: BTreeMap<String, DeviceChange> = map
            .devices
            .iter()
            .map(|d| (d.last.kernel_name()[..3].to_string(), d.change))
            .collect();
        let lun: u32 = map.key["wwid-".len()..].parse().unwrap();
        assert_eq!(
            per_host.get("sd1"),
            Some(&DeviceChange::Replaced),
            "{}",
            map.key
        );
        assert_eq!(
            per_host.get("sd2"),
            Some(&DeviceChange::Added),
            "{}",
            map.key
        );
        if lun >= 500 {
            assert_eq!(per_host.get("sd3"), Some(&DeviceChange::Removed));
            assert_eq!(per_host.get("sd0"), None);
        } else {
            assert_eq!(per_host.get("sd3"), None, "transient path must vanish");
            assert_eq!(per_host.get("sd0"), Some(&DeviceChange::Changed));
        }
        for device in &map.devices {
            *totals.entry(device.change).or_default() += 1;
        }
        // Devices of a map come sorted by devpath.
        assert!(
            map.devices
                .windows(2)
                .all(|w| w[0].last.devpath < w[1].last.devpath)
        );
    }
    assert_eq!(totals[&DeviceChange::Replaced], 1000);
    assert_eq!(totals[&DeviceChange::Added], 1000);
    assert_eq!(totals[&DeviceChange::Removed], 500);
    assert_eq!(totals[&DeviceChange::Changed], 500);
    // The Added devices carry their freshest properties (the last change).
    let added = burst.maps[0]
        .devices
        .iter()
        .find(|d| d.change == DeviceChange::Added)
        .unwrap();
    assert_eq!(added.events, 6);
    assert_eq!(added.last.action.as_str(), "change");
    assert_eq!(added.last.source, UeventSource::Kernel);
}

#[test]
fn devices_without_a_key_are_kept_apart() {
    let events = vec![kernel_event("add", 1, 1, 1), kernel_event("add", 9, 1, 2)];
    let burst = coalesce(events, |outcome| {
        (!outcome.last.devpath.contains("host9")).then(|| "wwid-a".to_string())
    });
    assert_eq!(burst.maps.len(), 1);
    assert_eq!(burst.unkeyed.len(), 1);
    assert_eq!(burst.unkeyed[0].last.kernel_name(), "sd9x1");
}
