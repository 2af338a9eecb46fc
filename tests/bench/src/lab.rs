//! The real-kernel comparison: boots the lab (tests/lab/run) once per benchmark scenario
//! (tests/lab/scenarios/9x-bench-*.sh) and collects the `results.json` each one writes.
//! multipath-tools and multipathd-rs run in the same guest on the same scsi_debug topology.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::stats::Summary;

pub const SCENARIOS: [&str; 3] = [
    "91-bench-coldstart",
    "92-bench-failover",
    "93-bench-addluns",
];

pub const OURS: &str = "multipathd-rs";
pub const THEIRS: &str = "multipath-tools";

/// One measurement as a scenario writes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurement {
    pub metric: String,
    pub tool: String,
    pub rep: u32,
    /// None: the measurement could not be made (see `error`).
    pub seconds: Option<f64>,
    #[serde(default)]
    pub error: Option<String>,
}

/// A scenario's results.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioFile {
    pub scenario: String,
    #[serde(default)]
    pub topology: String,
    #[serde(default)]
    pub reps: u32,
    #[serde(default)]
    pub kernel: String,
    #[serde(default)]
    pub multipath_tools: String,
    #[serde(default)]
    pub measurements: Vec<Measurement>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioRun {
    pub scenario: String,
    /// The lab's verdict line for it (PASS/FAIL) and exit status of `tests/lab/run`.
    pub lab_status: String,
    pub wall_s: f64,
    pub file: Option<ScenarioFile>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabResults {
    pub date: String,
    pub reps: u32,
    pub guest_kernel: Option<String>,
    pub qemu: Option<String>,
    pub runs: Vec<ScenarioRun>,
}

/// The metrics in report order: (key, what it is).
pub const METRICS: [(&str, &str); 6] = [
    (
        "cold_start",
        "cold start: daemon start to every map in `dmsetup ls --target multipath` with all its paths",
    ),
    (
        "add_16_luns",
        "16 new LUNs: `max_luns` raised and hosts scanned to all 16 new maps present with both paths",
    ),
    (
        "fail_idle",
        "failover, idle map: `device/state` offline to `F` for that path in `dmsetup status`",
    ),
    (
        "fail_busy",
        "failover, busy map (dd O_DIRECT loop): offline to `F`",
    ),
    (
        "reinstate_idle",
        "reinstatement, idle map: `device/state` running to `A`",
    ),
    ("reinstate_busy", "reinstatement, busy map: running to `A`"),
];

/// Where the lab runs: the workspace itself, or (`BENCH_LAB_MIRROR=DIR`) a private mirror of
/// tests/lab and tests/bench under DIR/ws, so a benchmark run never clashes with somebody else's
/// lab run on the shared tests/lab/out in a shared work tree. The mirror reuses the kernel
/// cache through hard links and the binaries already built in `$CARGO_TARGET_DIR`.
fn lab_workspace(ws: &Path) -> (std::path::PathBuf, Vec<(&'static str, String)>) {
    let Some(mirror) = std::env::var_os("BENCH_LAB_MIRROR").map(std::path::PathBuf::from) else {
        return (ws.to_path_buf(), Vec::new());
    };
    let mws = mirror.join("ws");
    let cache = mirror.join("lab-cache");
    let script = format!(
        "set -e; rm -rf '{m}/tests'; mkdir -p '{m}/tests/lab' '{m}/target/bench' '{c}'; \
         cp -a '{w}/tests/lab/run' '{w}/tests/lab/guest' '{w}/tests/lab/lib.sh' \
         '{w}/tests/lab/scenarios' '{w}/tests/lab/README.md' '{m}/tests/lab/'; \
         cp -a '{w}/tests/bench' '{m}/tests/'; \
         for d in '{w}'/.lab-cache/kernel-* '{w}'/.lab-cache/debs; do \
           [ -e \"$d\" ] && [ ! -e '{c}'/\"$(basename \"$d\")\" ] && cp -al \"$d\" '{c}/'; done; true",
        m = mws.display(),
        c = cache.display(),
        w = ws.display()
    );
    if let Err(e) = Command::new("sh").arg("-c").arg(&script).status() {
        eprintln!(
            "bench: cannot prepare the lab mirror {}: {e}",
            mirror.display()
        );
    }
    // The mirror has no Cargo workspace: build the binaries here, and tell the lab not to.
    eprintln!("bench: cargo build --release --workspace --bins (for the lab mirror)");
    let built = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(ws)
        .args(["build", "--release", "--workspace", "--bins", "--quiet"])
        .status();
    if !built.is_ok_and(|s| s.success()) {
        eprintln!("bench: the release build failed; the lab uses the binaries already there");
    }
    let mut env = vec![
        ("LAB_CACHE", cache.display().to_string()),
        ("LAB_NO_BUILD", "1".to_string()),
    ];
    if std::env::var_os("CARGO_TARGET_DIR").is_none() {
        env.push(("CARGO_TARGET_DIR", ws.join("target").display().to_string()));
    }
    (mws, env)
}

/// Runs each benchmark scenario in its own guest boot and collects the results.
/// `only`: scenario names or number prefixes (`92`); empty = all.
pub fn run_all(ws: &Path, reps: u32, addluns_reps: u32, only: &[String]) -> LabResults {
    let (lws, env) = lab_workspace(ws);
    let params = lws.join("target/bench/lab-params.env");
    if let Some(d) = params.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    // The guest reads the workspace (read-only) as it was at boot: the scenarios source this.
    let _ = std::fs::write(
        &params,
        format!("BENCH_REPS={reps}\nBENCH_REPS_ADDLUNS={addluns_reps}\n"),
    );
    let mut runs = Vec::new();
    let mut guest_kernel = None;
    let mut qemu = None;
    let out_dir = lws.join("tests/lab/out");
    for scenario in SCENARIOS {
        if !only.is_empty() && !only.iter().any(|o| scenario.starts_with(o.as_str())) {
            continue;
        }
        eprintln!("bench: lab scenario {scenario} ({reps} repetitions)");
        let t = Instant::now();
        let status = Command::new(lws.join("tests/lab/run"))
            .current_dir(&lws)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .arg("--keep")
            .arg(scenario)
            .status();
        let wall_s = t.elapsed().as_secs_f64();
        let lab_status = match &status {
            Ok(s) if s.success() => "PASS".to_string(),
            Ok(s) => format!("FAIL ({s})"),
            Err(e) => format!("not run: {e}"),
        };
        if let Ok(text) = std::fs::read_to_string(out_dir.join("summary.json"))
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        {
            let pick = |keys: &[&str]| {
                keys.iter()
                    .find_map(|k| v.get(*k).and_then(|x| x.as_str()).map(str::to_string))
            };
            guest_kernel = pick(&["kernel", "kernel_version", "guest_kernel"]).or(guest_kernel);
            qemu = pick(&["qemu", "qemu_version"]).or(qemu);
        }
        let path = out_dir.join(scenario).join("results.json");
        let (file, error) = match std::fs::read_to_string(&path) {
            Ok(text) => match serde_json::from_str::<ScenarioFile>(&text) {
                Ok(f) => (Some(f), None),
                Err(e) => (None, Some(format!("{} is not valid: {e}", path.display()))),
            },
            Err(e) => (
                None,
                Some(format!(
                    "the scenario wrote no results ({}: {e}); see tests/lab/out/{scenario}/log",
                    path.display()
                )),
            ),
        };
        runs.push(ScenarioRun {
            scenario: scenario.to_string(),
            lab_status,
            wall_s,
            file,
            error,
        });
    }
    LabResults {
        date: crate::report::now_utc(),
        reps,
        guest_kernel,
        qemu,
        runs,
    }
}

/// Merges a partial run into the previous results: scenarios that ran replace their old runs.
pub fn merge(previous: Option<LabResults>, new: LabResults) -> LabResults {
    let Some(mut prev) = previous else {
        return new;
    };
    prev.runs
        .retain(|r| !new.runs.iter().any(|n| n.scenario == r.scenario));
    prev.runs.extend(new.runs);
    prev.runs.sort_by(|a, b| a.scenario.cmp(&b.scenario));
    LabResults {
        runs: prev.runs,
        ..new
    }
}

/// Our figure, theirs, and why a figure is missing.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub metric: &'static str,
    pub what: &'static str,
    pub ours: Option<Summary>,
    pub theirs: Option<Summary>,
    pub ours_missing: Option<String>,
    pub theirs_missing: Option<String>,
}

fn summarize(ms: &[&Measurement]) -> (Option<Summary>, Option<String>) {
    let ok: Vec<f64> = ms.iter().filter_map(|m| m.seconds).collect();
    let s = Summary::of(&ok);
    let mut errs: Vec<String> = ms.iter().filter_map(|m| m.error.clone()).collect();
    errs.dedup();
    let why = if ms.is_empty() {
        Some("no measurement was recorded (the scenario did not get this far)".to_string())
    } else if s.is_none() {
        Some(
            errs.first()
                .cloned()
                .unwrap_or_else(|| "no successful run".into()),
        )
    } else if !errs.is_empty() {
        Some(format!(
            "{} of {} runs failed: {}",
            ms.len() - ok.len(),
            ms.len(),
            errs[0]
        ))
    } else {
        None
    };
    (s, why)
}

pub fn compare(lab: &LabResults) -> Vec<Comparison> {
    let all: Vec<&Measurement> = lab
        .runs
        .iter()
        .filter_map(|r| r.file.as_ref())
        .flat_map(|f| f.measurements.iter())
        .collect();
    METRICS
        .iter()
        .map(|(metric, what)| {
            let of = |tool: &str| {
                let v: Vec<&Measurement> = all
                    .iter()
                    .copied()
                    .filter(|m| m.metric == *metric && m.tool == tool)
                    .collect();
                summarize(&v)
            };
            let (ours, ours_missing) = of(OURS);
            let (theirs, theirs_missing) = of(THEIRS);
            Comparison {
                metric,
                what,
                ours,
                theirs,
                ours_missing,
                theirs_missing,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(metric: &str, tool: &str, s: Option<f64>, e: Option<&str>) -> Measurement {
        Measurement {
            metric: metric.into(),
            tool: tool.into(),
            rep: 1,
            seconds: s,
            error: e.map(str::to_string),
        }
    }

    #[test]
    fn missing_figures_carry_their_reason() {
        let lab = LabResults {
            date: String::new(),
            reps: 2,
            guest_kernel: None,
            qemu: None,
            runs: vec![ScenarioRun {
                scenario: "91-bench-coldstart".into(),
                lab_status: "PASS".into(),
                wall_s: 1.0,
                error: None,
                file: Some(ScenarioFile {
                    scenario: "91-bench-coldstart".into(),
                    topology: String::new(),
                    reps: 2,
                    kernel: String::new(),
                    multipath_tools: String::new(),
                    measurements: vec![
                        m("cold_start", THEIRS, Some(2.0), None),
                        m("cold_start", THEIRS, Some(4.0), None),
                        m("cold_start", OURS, None, Some("the daemon exited: boom")),
                    ],
                }),
            }],
        };
        let c = compare(&lab);
        let cold = &c[0];
        assert_eq!(cold.theirs.unwrap().median, 3.0);
        assert!(cold.ours.is_none());
        assert_eq!(
            cold.ours_missing.as_deref(),
            Some("the daemon exited: boom")
        );
        assert!(
            c[1].ours_missing
                .as_deref()
                .unwrap()
                .contains("no measurement")
        );
    }
}
