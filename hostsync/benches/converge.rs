//! Benchmark: 100 simulated hosts and 1000 LUNs. Every host keeps a local table with its own
//! [`ClusterNamer`] (fed by its watch); a few allocating hosts name the LUNs concurrently, each
//! its share. Measures, per backend (local:DIR on tmpfs; real etcd on loopback, one member and
//! three, when /usr/bin/etcd is installed): allocations per second, and for every allocation
//! the time from its commit to the last of the 100 hosts' tables holding it (p50, p99, max;
//! target: under 1 s). Checks that every table ends identical to the registry, one name per
//! WWID and no name twice. Writes target/bench/hostsync-converge.json and prints it.
//!
//! HOSTSYNC_BENCH_HOSTS (100), HOSTSYNC_BENCH_LUNS (1000), HOSTSYNC_BENCH_ALLOCATORS (4) and
//! HOSTSYNC_BENCH_ETCD_MEMBERS (`1,3`; `none` skips etcd) change the scale.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
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
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// What one watching host saw: when each WWID reached its table, and its final table.
struct HostView {
    arrived: HashMap<String, Instant>,
    table: BTreeMap<String, String>,
}

fn run(url: &str, label: &str, hosts: usize, luns: usize, allocators: usize) -> serde_json::Value {
    let wwids: Vec<String> = (0..luns).map(|i| format!("36001405bench{i:06}")).collect();
    let ready = Arc::new(Barrier::new(hosts + allocators + 1));
    let t_open = Instant::now();
    let mut watchers = Vec::new();
    for h in 0..hosts {
        let (url, ready) = (url.to_string(), ready.clone());
        watchers.push(std::thread::spawn(move || {
            let reg = hostsync::open(&url).unwrap();
            let (mut n, _) =
                ClusterNamer::open(reg, &format!("sim{h:03}"), NamerOptions::default()).unwrap();
            ready.wait();
            let mut arrived = HashMap::new();
            let deadline = Instant::now() + Duration::from_secs(600);
            while n.table().len() < luns && Instant::now() < deadline {
                let got = n.poll(Duration::from_millis(200)).unwrap();
                let now = Instant::now();
                for (w, _) in got {
                    arrived.entry(w).or_insert(now);
                }
            }
            HostView {
                arrived,
                table: n.table().clone(),
            }
        }));
    }
    // The allocating hosts: each names every `allocators`-th LUN, all at once.
    let mut allocs = Vec::new();
    for a in 0..allocators {
        let (url, ready) = (url.to_string(), ready.clone());
        let mine: Vec<String> = wwids.iter().skip(a).step_by(allocators).cloned().collect();
        allocs.push(std::thread::spawn(move || {
            let reg = hostsync::open(&url).unwrap();
            let (mut n, _) =
                ClusterNamer::open(reg, &format!("alloc{a}"), NamerOptions::default()).unwrap();
            ready.wait();
            let mut committed = Vec::new();
            for w in mine {
                let named = n.name(&w).unwrap();
                assert!(named.created, "{w} was named before its allocator asked");
                committed.push((w, named.alias, Instant::now()));
            }
            committed
        }));
    }
    ready.wait();
    let open_s = t_open.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut committed = HashMap::new();
    let mut names = BTreeMap::new();
    for a in allocs {
        for (w, alias, at) in a.join().unwrap() {
            committed.insert(w.clone(), at);
            names.insert(w, alias);
        }
    }
    let alloc_s = t.elapsed().as_secs_f64();
    let views: Vec<HostView> = watchers.into_iter().map(|t| t.join().unwrap()).collect();
    let distinct: BTreeSet<&String> = names.values().collect();
    let one_name_each = names.len() == luns && distinct.len() == luns;
    let tables_agree = views.iter().all(|v| v.table == names);
    let mut lat: Vec<f64> = wwids
        .iter()
        .filter_map(|w| {
            let last = views
                .iter()
                .map(|v| v.arrived.get(w).copied())
                .collect::<Option<Vec<Instant>>>()?
                .into_iter()
                .max()?;
            Some(last.saturating_duration_since(committed[w]).as_secs_f64())
        })
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    let p99 = pct(&lat, 0.99);
    serde_json::json!({
        "registry": label,
        "hosts": hosts,
        "luns": luns,
        "allocating_hosts": allocators,
        "allocations_per_s": luns as f64 / alloc_s,
        "allocate_all_s": alloc_s,
        "hosts_open_s": open_s,
        "one_name_per_wwid": one_name_each,
        "every_table_agrees": tables_agree,
        "to_every_host_p50_s": pct(&lat, 0.5),
        "to_every_host_p99_s": p99,
        "to_every_host_max_s": lat.last().copied().unwrap_or(f64::NAN),
        "measured_luns": lat.len(),
        "target_s": 1.0,
        "meets_target": one_name_each && tables_agree && lat.len() == luns && p99 < 1.0,
    })
}

fn main() {
    let hosts = env_or("HOSTSYNC_BENCH_HOSTS", 100);
    let luns = env_or("HOSTSYNC_BENCH_LUNS", 1000);
    let allocators = env_or("HOSTSYNC_BENCH_ALLOCATORS", 4).max(1);
    let members: Vec<usize> = std::env::var("HOSTSYNC_BENCH_ETCD_MEMBERS")
        .unwrap_or_else(|_| "1,3".into())
        .split(',')
        .filter_map(|m| m.trim().parse().ok())
        .collect();
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
    eprintln!("hostsync bench: {hosts} hosts, {luns} LUNs, {allocators} allocating, {local}");
    results.push(run(&local, "local", hosts, luns, allocators));
    let mut skipped = None;
    if !etcd_available() {
        skipped = Some("/usr/bin/etcd is not installed");
    } else if members.is_empty() {
        skipped = Some("HOSTSYNC_BENCH_ETCD_MEMBERS asked for none");
    }
    for &m in members.iter().filter(|_| skipped.is_none()) {
        let c = EtcdCluster::start(m).unwrap();
        eprintln!(
            "hostsync bench: {hosts} hosts, {luns} LUNs, {allocators} allocating, {m}-member etcd {}",
            c.url()
        );
        let label = format!("etcd, {m} member{}", if m == 1 { "" } else { "s" });
        results.push(run(&c.url(), &label, hosts, luns, allocators));
    }
    if let Some(why) = skipped {
        eprintln!("hostsync bench: etcd not measured: {why}");
    }
    let json = serde_json::json!({
        "benchmark": "hostsync-converge",
        "hosts": hosts,
        "luns": luns,
        "allocating_hosts": allocators,
        "results": results,
        "etcd_skipped": skipped,
        "meets_target": results.iter().all(|r| r["meets_target"] == true),
        "load_avg_1m": load_avg(),
        "note": "all hosts are threads of one process, each with its own registry handle and ClusterNamer; local:DIR on tmpfs; etcd members on loopback, data on tmpfs",
    });
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let text = serde_json::to_string_pretty(&json).unwrap();
    std::fs::write(out.join("hostsync-converge.json"), &text).unwrap();
    println!("{text}");
}
