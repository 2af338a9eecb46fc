//! Times `lun_scan::scan` on an existing tree: `scan_time ROOT [RUNS] [lean]` (`lean`: with
//! `ScanOptions::without_details()`, as the daemon scans). Prints, per run, the
//! wall time, the process CPU time (user + system) it took and the load average, so that two
//! builds can be compared run by run (interleaved) on a shared machine.

use std::path::PathBuf;
use std::time::Instant;

fn cpu_s() -> f64 {
    // utime and stime are fields 14 and 15 of /proc/self/stat, in USER_HZ (100) ticks.
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = s.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<u64>() as f64 / 100.0
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(root) = args.next().map(PathBuf::from) else {
        eprintln!("usage: scan_time ROOT [RUNS] [lean]");
        std::process::exit(2);
    };
    let runs: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(1);
    let opts = match args.next().as_deref() {
        Some("lean") => lun_scan::ScanOptions::without_details(),
        _ => lun_scan::ScanOptions::default(),
    };
    for _ in 0..runs {
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let (c0, t0) = (cpu_s(), Instant::now());
        let s = lun_scan::scan_with(&root, opts);
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_s() - c0;
        println!(
            "paths {} errors {} wall {wall:.3} s cpu {cpu:.2} s load {}",
            s.paths.len(),
            s.all_errors().len(),
            load.split_whitespace().next().unwrap_or("?")
        );
    }
}
