//! Benchmarks of the path checking and event layer; writes
//! target/bench/multipathd-rs-checker-events.json (workspace target dir) and prints it.
//!
//! - uevent parse: one kernel uevent message;
//! - coalesce: parse + coalesce bursts of 10,000 and 100,000 events into per-map plans;
//! - scheduler: one `due` + `record` sweep over 32,768 paths (4096 LUNs x 8 paths);
//! - driver: one full round of `sysfs` checks over 4,096 paths through the thread runner.

use std::sync::Arc;
use std::time::{Duration, Instant};

use multipathd_rs::checker::sysfs::SysfsChecker;
use multipathd_rs::checker::{CheckState, CheckTarget};
use multipathd_rs::clock::{Clock, ManualClock, SystemClock};
use multipathd_rs::scheduler::driver::PathCheckDriver;
use multipathd_rs::scheduler::{CheckScheduler, IntervalPolicy};
use multipathd_rs::uevent::{coalesce, parse_kernel_uevent};

fn message(action: &str, host: u32, lun: u32, seq: u64) -> Vec<u8> {
    let dev = format!("sd{host}x{lun}");
    let devpath =
        format!("/devices/platform/host{host}/target{host}:0:0/{host}:0:0:{lun}/block/{dev}");
    format!(
        "{action}@{devpath}\0ACTION={action}\0DEVPATH={devpath}\0SUBSYSTEM=block\0\
         DEVNAME={dev}\0DEVTYPE=disk\0MAJOR=8\0MINOR={lun}\0SEQNUM={seq}\0"
    )
    .into_bytes()
}

fn burst(events: usize) -> Vec<Vec<u8>> {
    // An HBA bounce: remove then add of events/2 paths.
    let half = (events / 2) as u32;
    let mut out = Vec::with_capacity(events);
    for lun in 0..half {
        out.push(message("remove", 1, lun, u64::from(lun)));
    }
    for lun in 0..half {
        out.push(message("add", 1, lun, u64::from(half + lun)));
    }
    out
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time<F: FnMut()>(runs: usize, mut f: F) -> Duration {
    median(
        (0..runs)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed()
            })
            .collect(),
    )
}

fn coalesce_ms(events: usize) -> f64 {
    let messages = burst(events);
    time(5, || {
        let parsed: Vec<_> = messages
            .iter()
            .filter_map(|m| parse_kernel_uevent(m).ok())
            .collect();
        let plan = coalesce(parsed, |d| Some(d.last.kernel_name().to_string()));
        assert_eq!(plan.maps.len(), events / 2);
    })
    .as_secs_f64()
        * 1e3
}

fn main() {
    let one = message("change", 3, 7, 99);
    let parse_ns = time(5, || {
        for _ in 0..10_000 {
            std::hint::black_box(parse_kernel_uevent(std::hint::black_box(&one)).is_ok());
        }
    })
    .as_nanos() as f64
        / 10_000.0;
    let coalesce_10k_ms = coalesce_ms(10_000);
    let coalesce_100k_ms = coalesce_ms(100_000);

    let clock = ManualClock::new();
    let mut sched = CheckScheduler::new(IntervalPolicy::default());
    for i in 0..32_768 {
        sched.add_path(&format!("sd{i}"), &format!("m{}", i / 8), clock.now());
    }
    let scheduler_sweep_ms = time(5, || {
        let now = clock.now();
        for dev in sched.due(now) {
            sched.record(&dev, CheckState::Up, now);
        }
        clock.advance(Duration::from_secs(60));
    })
    .as_secs_f64()
        * 1e3;

    let root = tempfile::tempdir().expect("tempdir");
    let paths = 4096;
    for i in 0..paths {
        let device = root.path().join(format!("block/sd{i}/device"));
        std::fs::create_dir_all(&device).expect("mkdir");
        std::fs::write(device.join("state"), "running\n").expect("state");
    }
    let checker = Arc::new(SysfsChecker::new(root.path()));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let driver_round_ms = time(3, || {
        let mut driver = PathCheckDriver::new(
            clock.clone(),
            IntervalPolicy::default(),
            64,
            Duration::from_secs(5),
        );
        for i in 0..paths {
            driver.add_path(CheckTarget::new(format!("sd{i}")), "m", checker.clone());
        }
        let mut done = 0;
        while done < paths {
            driver.start_due().expect("start");
            done += driver.collect(Duration::from_millis(100)).len();
        }
    })
    .as_secs_f64()
        * 1e3;

    let json = serde_json::json!({
        "bench": "multipathd-rs checker/events",
        "uevent_parse_ns": parse_ns,
        "coalesce_10k_events_ms": coalesce_10k_ms,
        "coalesce_100k_events_ms": coalesce_100k_ms,
        "scheduler_sweep_32768_paths_ms": scheduler_sweep_ms,
        "sysfs_check_round_4096_paths_ms": driver_round_ms,
        "runner_max_in_flight": 64,
    });
    let text = serde_json::to_string_pretty(&json).unwrap_or_default();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    if let Err(e) = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("multipathd-rs-checker-events.json"), &text))
    {
        eprintln!("cannot write the bench result under {}: {e}", dir.display());
    }
    println!("{text}");
}
