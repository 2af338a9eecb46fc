//! The crates' own micro-benchmarks (`benches/`, harness = false): run through `cargo bench`
//! and read back from the JSON each one writes under `target/bench/`.

use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// One micro-benchmark: how to run it and where its results go.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub package: &'static str,
    pub bench: &'static str,
    /// File under target/bench/.
    pub json: &'static str,
}

pub const SPECS: [Spec; 8] = [
    Spec {
        package: "lun-scan",
        bench: "enumerate",
        json: "lun-scan-enumerate.json",
    },
    Spec {
        package: "dm-tables",
        bench: "parse_render",
        json: "dm-tables-parse-render.json",
    },
    Spec {
        package: "aliases",
        bench: "allocate",
        json: "aliases-allocate.json",
    },
    Spec {
        package: "multipathd-rs",
        bench: "checker_events",
        json: "multipathd-rs-checker-events.json",
    },
    Spec {
        package: "multipathd-rs",
        bench: "cold_start",
        json: "multipathd-rs-cold-start.json",
    },
    Spec {
        package: "multipathd-rs",
        bench: "failover_latency",
        json: "multipathd-rs-failover-latency.json",
    },
    Spec {
        package: "hostsync",
        bench: "converge",
        json: "hostsync-converge.json",
    },
    Spec {
        package: "multipathd-rs",
        bench: crate::dmevents::BENCH,
        json: "multipathd-rs-dm-events-idle.json",
    },
];

impl Spec {
    /// Whether `name` (`bench` or `package/bench`) names this benchmark.
    pub fn is(&self, name: &str) -> bool {
        name == self.bench || name == format!("{}/{}", self.package, self.bench)
    }
}

/// What one micro-benchmark gave.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MicroResult {
    pub package: String,
    pub bench: String,
    /// Ran in this invocation (false: results of an earlier run were read, or it does not
    /// exist).
    pub ran: bool,
    /// When its JSON file was written (UTC), if it exists.
    pub written: Option<String>,
    pub json: Option<serde_json::Value>,
    /// Why there is no result.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MicroResults {
    pub date: String,
    pub results: Vec<MicroResult>,
}

fn mtime_utc(p: &Path) -> Option<(SystemTime, String)> {
    let t = std::fs::metadata(p).ok()?.modified().ok()?;
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs();
    Some((t, crate::report::format_utc(secs)))
}

/// Runs every micro-benchmark (or, with `run` false, only reads what earlier runs left; with
/// `only` not empty, runs only the benchmarks it names and reads the others' last results).
pub fn run_all(ws: &Path, run: bool, only: &[String]) -> MicroResults {
    let date = crate::report::now_utc();
    let mut results = Vec::new();
    for spec in SPECS {
        let run = run && (only.is_empty() || only.iter().any(|n| spec.is(n)));
        let bench_src = ws
            .join(spec.package)
            .join("benches")
            .join(format!("{}.rs", spec.bench));
        let dir = ws.join("target/bench");
        let mut r = MicroResult {
            package: spec.package.into(),
            bench: spec.bench.into(),
            ran: false,
            written: None,
            json: None,
            error: None,
        };
        if !bench_src.exists() {
            r.error = Some(format!(
                "no such benchmark ({} does not exist)",
                bench_src.display()
            ));
            results.push(r);
            continue;
        }
        let started = SystemTime::now();
        if run {
            eprintln!(
                "bench: cargo bench -p {} --bench {}",
                spec.package, spec.bench
            );
            let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .current_dir(ws)
                .args(["bench", "-p", spec.package, "--bench", spec.bench])
                .output();
            match out {
                Ok(o) if o.status.success() => r.ran = true,
                Ok(o) => {
                    let err = String::from_utf8_lossy(&o.stderr);
                    let tail: Vec<&str> = err.lines().rev().take(6).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    r.error = Some(format!(
                        "cargo bench failed ({}): {}",
                        o.status,
                        tail.join(" | ")
                    ));
                }
                Err(e) => r.error = Some(format!("cannot run cargo: {e}")),
            }
        }
        let file = find_json(&dir, spec);
        if let Some((t, when)) = mtime_utc(&file) {
            let fresh = t >= started;
            if run && r.ran && !fresh {
                r.error = Some(format!("it ran but did not rewrite {}", file.display()));
            } else if r.error.is_none() || !run {
                r.written = Some(when);
                r.json = std::fs::read_to_string(&file)
                    .ok()
                    .and_then(|s| serde_json::from_str(&s).ok());
                if r.json.is_none() {
                    r.error = Some(format!("{} is not readable JSON", file.display()));
                }
            }
        } else if r.error.is_none() {
            r.error = Some(format!("{} was not written", file.display()));
        }
        results.push(r);
    }
    MicroResults { date, results }
}

/// The results file of a benchmark: its known name, else (for benchmarks another component is
/// still adding) any JSON under target/bench whose name contains the benchmark's name.
fn find_json(dir: &Path, spec: Spec) -> std::path::PathBuf {
    let exact = dir.join(spec.json);
    if exact.exists() {
        return exact;
    }
    let dashed = spec.bench.replace('_', "-");
    let found = std::fs::read_dir(dir).ok().and_then(|rd| {
        rd.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.ends_with(".json")
                    && !n.starts_with("bench-")
                    && (n.contains(&dashed) || n.contains(spec.bench))
            })
        })
    });
    found.unwrap_or(exact)
}

/// Looks up a number by a dotted path (`durable_each.per_alloc_us`).
pub fn num(v: &serde_json::Value, path: &str) -> Option<f64> {
    let mut cur = v;
    for k in path.split('.') {
        cur = cur.get(k)?;
    }
    cur.as_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_named_by_bench_or_package_and_bench() {
        let converge = SPECS.iter().find(|s| s.is("converge")).unwrap();
        assert_eq!(converge.package, "hostsync");
        assert!(converge.is("hostsync/converge"));
        assert!(!converge.is("lun-scan/converge"));
        assert_eq!(SPECS.iter().filter(|s| s.is("cold_start")).count(), 1);
    }

    #[test]
    fn dotted_lookup() {
        let v = serde_json::json!({"a": {"b": 2.5}, "c": 1});
        assert_eq!(num(&v, "a.b"), Some(2.5));
        assert_eq!(num(&v, "c"), Some(1.0));
        assert_eq!(num(&v, "a.x"), None);
    }
}
