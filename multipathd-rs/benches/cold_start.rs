//! Benchmark: daemon cold start on 4096 LUNs x 8 paths (32,768 paths: 2 FC HBAs x 4 target
//! ports each) from a generated sysfs tree: scan, plan (settings, priorities, grouping,
//! tables, names) and create every map on the simulated device-mapper (in-memory state).
//! Target: under 2 s. Writes target/bench/multipathd-cold-start.json and prints it.
//!
//! The tree goes to /dev/shm when it exists (sysfs lives in memory too), else the temp dir.
//! MULTIPATHD_BENCH_LUNS changes the LUN count.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use aliases::StorePaths;
use dm_tables::SimBackend;
use lun_scan::topology::{Sim, Topology};
use multipathd_rs::clock::SystemClock;
use multipathd_rs::config::Config;
use multipathd_rs::engine::{Engine, EngineOptions};

fn status_kb(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// utime + stime of this process in clock ticks (USER_HZ = 100).
fn cpu_ticks() -> u64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = s.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn load_avg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn main() {
    let luns: u32 = std::env::var("MULTIPATHD_BENCH_LUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096);
    let base = {
        let shm = PathBuf::from("/dev/shm");
        if shm.is_dir() {
            shm
        } else {
            std::env::temp_dir()
        }
    };
    let tmp = tempfile::Builder::new()
        .prefix("multipathd-cold-start-")
        .tempdir_in(&base)
        .unwrap();
    let topo = Topology::big_fc(2, 4, luns);
    let paths = topo.path_count();
    let t = Instant::now();
    Sim::render(&topo, &tmp.path().join("sys")).unwrap();
    let render_s = t.elapsed().as_secs_f64();
    eprintln!("rendered {paths} paths in {render_s:.1} s");

    let rss_before_kb = status_kb("VmRSS:").unwrap_or(0);
    let cpu0 = cpu_ticks();
    let t = Instant::now();
    let opts = EngineOptions {
        config_path: None,
        sysfs_root: tmp.path().join("sys"),
        store_paths: StorePaths {
            table: Some(tmp.path().join("aliases.toml")),
            ..StorePaths::default()
        },
        checker_override: Some("sysfs".into()),
    };
    let backend = SimBackend::new();
    let mut engine = Engine::new(
        Config::builtin(),
        opts,
        Box::new(backend),
        Arc::new(SystemClock),
    )
    .unwrap();
    let report = engine.sync().unwrap();
    let cold_start_s = t.elapsed().as_secs_f64();
    let cpu_s = (cpu_ticks() - cpu0) as f64 / 100.0;
    let peak_rss_cold_kb = status_kb("VmHWM:").unwrap_or(0);
    let created = report.maps.iter().filter(|m| m.applied).count();
    assert_eq!(created, luns as usize, "{:?}", report.errors.first());
    assert!(report.errors.is_empty(), "{:?}", report.errors.first());
    assert_eq!(engine.backend().list().unwrap().len(), luns as usize);

    // The same engine again: a re-sync adopts everything (what a restarted daemon does).
    let t = Instant::now();
    let again = engine.sync().unwrap();
    let resync_s = t.elapsed().as_secs_f64();
    assert_eq!(again.changed(), 0);

    // Where the time goes: the scan alone, and scan + plan without applying.
    let t = Instant::now();
    let scan = lun_scan::scan(&tmp.path().join("sys"));
    let scan_only_s = t.elapsed().as_secs_f64();
    assert_eq!(scan.paths.len(), paths);
    let t = Instant::now();
    let mut fresh = Engine::new(
        Config::builtin(),
        EngineOptions {
            config_path: None,
            sysfs_root: tmp.path().join("sys"),
            store_paths: StorePaths {
                table: Some(tmp.path().join("aliases-dry.toml")),
                ..StorePaths::default()
            },
            checker_override: None,
        },
        Box::new(SimBackend::new()),
        Arc::new(SystemClock),
    )
    .unwrap();
    let dry = fresh.plan_only().unwrap();
    let plan_only_s = t.elapsed().as_secs_f64();
    assert_eq!(dry.maps.len(), luns as usize);

    let peak_rss_kb = status_kb("VmHWM:").unwrap_or(0);
    let json = serde_json::json!({
        "benchmark": "multipathd-cold-start",
        "luns": luns,
        "paths": paths,
        "maps_created": created,
        "cold_start_s": cold_start_s,
        "cpu_s": cpu_s,
        "resync_adopt_s": resync_s,
        "scan_only_s": scan_only_s,
        "scan_and_plan_dry_run_s": plan_only_s,
        "target_s": 2.0,
        "meets_target": cold_start_s < 2.0,
        "peak_rss_cold_start_kb": peak_rss_cold_kb,
        "peak_rss_kb": peak_rss_kb,
        "rss_before_kb": rss_before_kb,
        "render_tree_s": render_s,
        "load_avg_1m": load_avg(),
        "backend": "sim (in memory)",
    });
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let text = serde_json::to_string_pretty(&json).unwrap();
    std::fs::write(out.join("multipathd-cold-start.json"), &text).unwrap();
    println!("{text}");
}
