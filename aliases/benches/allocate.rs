//! Benchmark: allocate 10,000 aliases into one table.
//!
//! - `durable_each`: 10,000 `Store::allocate` calls, each one a full production transaction
//!   (lock, re-read check, atomic write with fsync of file and directory).
//! - `batched`: one `Store::allocate_batch` call for 10,000 WWIDs (one lock, one write).
//! - `batched_100`: 100 batches of 100.
//!
//! Results go to `target/bench/aliases-allocate.json` (workspace target dir) and stdout.
//! `ALIASES_BENCH_N` overrides the count.

use std::time::Instant;

use aliases::{AllocateContext, Policy, Store, StorePaths};

fn store(dir: &std::path::Path) -> Store {
    Store::open(
        StorePaths {
            table: Some(dir.join("aliases.toml")),
            ..Default::default()
        },
        Some(Policy::default()),
    )
    .expect("open store")
    .with_host("bench")
}

fn main() {
    let n: usize = std::env::var("ALIASES_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let wwids: Vec<String> = (0..n).map(|i| format!("36001405{i:024x}")).collect();
    let ctx = AllocateContext::default();

    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(dir.path());
    let t0 = Instant::now();
    let mut last = String::new();
    for w in &wwids {
        last = s.allocate(w, &ctx).expect("allocate").name;
    }
    let each = t0.elapsed().as_secs_f64();
    let table_bytes = std::fs::metadata(dir.path().join("aliases.toml"))
        .map(|m| m.len())
        .unwrap_or(0);

    let dir2 = tempfile::tempdir().expect("tempdir");
    let s2 = store(dir2.path());
    let refs: Vec<&str> = wwids.iter().map(String::as_str).collect();
    let t1 = Instant::now();
    let got = s2.allocate_batch(&refs, &ctx).expect("batch");
    let batched = t1.elapsed().as_secs_f64();
    assert_eq!(got.last().map(|a| a.name.clone()), Some(last.clone()));

    let dir3 = tempfile::tempdir().expect("tempdir");
    let s3 = store(dir3.path());
    let t2 = Instant::now();
    for chunk in refs.chunks(100) {
        s3.allocate_batch(chunk, &ctx).expect("batch");
    }
    let batched_100 = t2.elapsed().as_secs_f64();

    let json = serde_json::json!({
        "benchmark": "aliases-allocate",
        "count": n,
        "last_alias": last,
        "table_bytes": table_bytes,
        "durable_each": {
            "total_s": each,
            "per_alloc_us": each * 1e6 / n as f64,
            "allocs_per_s": n as f64 / each,
        },
        "batched": { "total_s": batched, "per_alloc_us": batched * 1e6 / n as f64 },
        "batched_100": { "total_s": batched_100, "per_alloc_us": batched_100 * 1e6 / n as f64 },
    });
    let out_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out_dir).expect("create target/bench");
    let text = serde_json::to_string_pretty(&json).expect("json");
    std::fs::write(out_dir.join("aliases-allocate.json"), &text).expect("write results");
    println!("{text}");
}
