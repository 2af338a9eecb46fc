//! Benchmark: 100 simulated hosts and 1000 LUNs. One host allocates a name for each LUN in
//! turn; the 100 others each keep a local table fed by their watch. Measures, per backend
//! (local:DIR on tmpfs, and a real 3-member etcd cluster on loopback when /usr/bin/etcd is
//! installed): allocations per second, and the time from an allocation's commit to every
//! host's local table holding it (target: under 1 s). Writes target/bench/hostsync-converge.json
//! and prints it. HOSTSYNC_BENCH_HOSTS and HOSTSYNC_BENCH_LUNS change the scale.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use hostsync::testkit::{EtcdCluster, etcd_available};
use hostsync::{ClusterNamer, NamerOptions};

fn env_or(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn load_avg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn run(url: &str, hosts: usize, luns: usize) -> serde_json::Value {
    let wwids: Vec<String> = (0..luns).map(|i| format!("36001405bench{i:06}")).collect();
    let seen: Arc<Mutex<HashMap<String, (usize, Instant)>>> = Arc::default();
    let ready = Arc::new(Barrier::new(hosts + 1));
    let mut threads = Vec::new();
    let t_open = Instant::now();
    for h in 0..hosts {
        let (url, seen, ready) = (url.to_string(), seen.clone(), ready.clone());
        threads.push(std::thread::spawn(move || {
            let reg = hostsync::open(&url).unwrap();
            let (mut n, _) =
                ClusterNamer::open(reg, &format!("sim{h:03}"), NamerOptions::default()).unwrap();
            ready.wait();
            let deadline = Instant::now() + Duration::from_secs(600);
            while n.table().len() < luns && Instant::now() < deadline {
                let got = n.poll(Duration::from_millis(200)).unwrap();
                if got.is_empty() {
                    continue;
                }
                let now = Instant::now();
                let mut s = seen.lock().unwrap();
                for (w, _) in got {
                    let e = s.entry(w).or_insert((0, now));
                    e.0 += 1;
                    e.1 = e.1.max(now);
                }
            }
            n.table().len()
        }));
    }
    ready.wait();
    let open_s = t_open.elapsed().as_secs_f64();
    let reg = hostsync::open(url).unwrap();
    let (mut alloc, _) = ClusterNamer::open(reg, "allocator", NamerOptions::default()).unwrap();
    let mut committed = HashMap::new();
    let t = Instant::now();
    for w in &wwids {
        let n = alloc.name(w).unwrap();
        assert!(n.created);
        committed.insert(w.clone(), Instant::now());
    }
    let alloc_s = t.elapsed().as_secs_f64();
    let tables: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let converged = tables.iter().all(|&n| n == luns);
    let seen = seen.lock().unwrap();
    let mut lat: Vec<f64> = wwids
        .iter()
        .filter_map(|w| {
            let (count, last) = seen.get(w)?;
            (*count == hosts).then(|| last.saturating_duration_since(committed[w]).as_secs_f64())
        })
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    serde_json::json!({
        "registry": url.split(':').next().unwrap_or(url),
        "hosts": hosts,
        "luns": luns,
        "allocations_per_s": luns as f64 / alloc_s,
        "allocate_all_s": alloc_s,
        "hosts_open_s": open_s,
        "every_host_converged": converged,
        "to_every_host_p50_s": pct(&lat, 0.5),
        "to_every_host_p99_s": pct(&lat, 0.99),
        "to_every_host_max_s": lat.last().copied().unwrap_or(f64::NAN),
        "measured_luns": lat.len(),
        "target_s": 1.0,
        "meets_target": converged && lat.len() == luns && pct(&lat, 0.99) < 1.0,
    })
}

fn main() {
    let hosts = env_or("HOSTSYNC_BENCH_HOSTS", 100);
    let luns = env_or("HOSTSYNC_BENCH_LUNS", 1000);
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = tempfile::Builder::new()
        .prefix("hostsync-bench-")
        .tempdir_in(&base)
        .unwrap();
    let mut results = Vec::new();
    let local = format!("local:{}", dir.path().join("reg").display());
    eprintln!("hostsync bench: {hosts} hosts, {luns} LUNs, {local}");
    results.push(run(&local, hosts, luns));
    if etcd_available() {
        let c = EtcdCluster::start(3).unwrap();
        eprintln!(
            "hostsync bench: {hosts} hosts, {luns} LUNs, 3-member etcd {}",
            c.url()
        );
        results.push(run(&c.url(), hosts, luns));
    } else {
        eprintln!("hostsync bench: /usr/bin/etcd is absent; etcd not measured");
    }
    let json = serde_json::json!({
        "benchmark": "hostsync-converge",
        "hosts": hosts,
        "luns": luns,
        "results": results,
        "meets_target": results.iter().all(|r| r["meets_target"] == true),
        "load_avg_1m": load_avg(),
        "note": "local:DIR on tmpfs; etcd: 3 members on loopback, data on tmpfs; one allocator, sequential transactions",
    });
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let text = serde_json::to_string_pretty(&json).unwrap();
    std::fs::write(out.join("hostsync-converge.json"), &text).unwrap();
    println!("{text}");
}
