//! Benchmark: enumerate 32,768 SCSI paths (4096 LUNs x 8 paths: 2 FC HBAs x 4 target ports)
//! with WWIDs from a generated sysfs tree. Target: under 1 s on the 2-core build machine.
//! Writes target/bench/lun-scan-enumerate.json and prints it.
//!
//! The tree goes to /dev/shm when it exists (sysfs is in memory too), else the temp dir;
//! LUN_SCAN_BENCH_DIR overrides. LUN_SCAN_BENCH_LUNS changes the LUN count.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Instant;

use lun_scan::topology::{Sim, Topology};

fn status_kb(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// utime + stime of this process in clock ticks (USER_HZ = 100 on Linux).
fn cpu_ticks() -> u64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = s.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = after.split_whitespace().collect();
    // fields after the comm: state is index 0, utime is field 14 overall -> index 11
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
    let luns: u32 = std::env::var("LUN_SCAN_BENCH_LUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096);
    let base = std::env::var_os("LUN_SCAN_BENCH_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let shm = PathBuf::from("/dev/shm");
            shm.is_dir().then_some(shm)
        })
        .unwrap_or_else(std::env::temp_dir);
    let topo = Topology::big_fc(2, 4, luns);
    let expected = topo.path_count();
    // LUN_SCAN_BENCH_TREE=DIR: reuse (or create and keep) a generated tree, for profiling.
    let keep = std::env::var_os("LUN_SCAN_BENCH_TREE").map(PathBuf::from);
    let tmp;
    let root: PathBuf = match &keep {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::Builder::new()
                .prefix("lun-scan-bench-")
                .tempdir_in(&base)
                .unwrap();
            tmp.path().to_path_buf()
        }
    };
    let mut generate_s = 0.0;
    if !root.join("class").exists() {
        let t0 = Instant::now();
        Sim::render(&topo, &root).unwrap();
        generate_s = t0.elapsed().as_secs_f64();
        eprintln!(
            "generated {expected} paths in {generate_s:.1}s under {}",
            root.display()
        );
    }
    let dir = root.as_path();

    // Reset the peak RSS so it measures the scan, not the generator.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss_before_kb = status_kb("VmRSS:");
    let cpu_before = cpu_ticks();
    let mut times = Vec::new();
    let mut paths = 0;
    let mut with_wwid = 0;
    let mut errors = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let scan = lun_scan::scan(dir);
        times.push(t.elapsed().as_secs_f64());
        paths = scan.paths.len();
        with_wwid = scan.paths.iter().filter(|p| p.wwid.is_some()).count();
        errors = scan.all_errors().len();
        drop(scan);
    }
    let peak_kb = status_kb("VmHWM:");
    let cpu_s = (cpu_ticks() - cpu_before) as f64 / 100.0 / times.len() as f64;
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let median = sorted[sorted.len() / 2];
    assert_eq!(paths, expected, "every generated path is found");
    assert_eq!(with_wwid, expected, "every path has a WWID");
    assert_eq!(errors, 0);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let result = serde_json::json!({
        "benchmark": "lun-scan-enumerate",
        "paths": paths,
        "luns": luns,
        "paths_per_lun": 8,
        "with_wwid": with_wwid,
        "runs_s": times,
        "median_s": median,
        "min_s": sorted[0],
        "target_s": 1.0,
        "meets_target": median < 1.0,
        "cpu_s_per_scan": cpu_s,
        "load_avg_1m": load_avg(),
        "peak_rss_kb": peak_kb,
        "rss_before_scan_kb": rss_before_kb,
        "generate_s": generate_s,
        "tree_dir_fs": base.display().to_string(),
        "threads": threads,
    });
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let file = out.join("lun-scan-enumerate.json");
    std::fs::write(&file, serde_json::to_string_pretty(&result).unwrap() + "\n").unwrap();
    println!("{}", serde_json::to_string_pretty(&result).unwrap());
    eprintln!("written to {}", file.display());
}
