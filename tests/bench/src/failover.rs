//! multipathd-rs `failover_latency` (issue 18): the running daemon on the simulated SAN,
//! 4096 LUNs x 8 paths. Its rows in BENCHMARKS.md, each with its target, from the JSON the
//! benchmark writes (target/bench/multipathd-rs-failover-latency.json).

use std::fmt::Write as _;

use crate::micro::{MicroResults, num};

/// The benchmark's name in the micro list.
pub const BENCH: &str = "failover_latency";

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "not measured".into(), |s| format!("{s:.3} s"))
}

fn verdict(v: Option<f64>, target: f64) -> &'static str {
    match v {
        Some(x) if x < target => "met",
        Some(_) => "NOT met",
        None => "not measured",
    }
}

/// Why the running process's peak RSS per path is above the 4 KiB target, from what the run
/// measured (None when it is not above it, or nothing says why).
fn rss_why(j: &serde_json::Value) -> Option<String> {
    let rss = num(j, "peak_rss_per_path_kb")?;
    if rss <= 4.0 {
        return None;
    }
    let mut parts = vec![format!(
        "Why the peak RSS per path above is over 4 KiB: issue 18's target is the daemon's \
         memory at cold start, judged in the scale curve (the headline; the engine alone, in a \
         process of its own). This row is the whole benchmark process: the daemon running, the \
         simulated kernel's tables and the tree model ({:.1} KiB/path before the daemon started)",
        num(j, "rss_before_daemon_kb").unwrap_or(f64::NAN) / num(j, "paths").unwrap_or(f64::NAN)
    )];
    if let Some(kb) = num(j, "snapshot_kb") {
        parts.push(format!(
            "a running daemon also holds the read snapshot `show` answers from (every path in \
             its map and in the path list: {:.1} MiB, {:.2} KiB/path)",
            kb / 1024.0,
            kb / num(j, "paths").unwrap_or(f64::NAN)
        ));
    }
    if let Some(b) = num(j, "show_paths_json_bytes").filter(|&b| b > 0.0) {
        parts.push(format!(
            "and, while clients read, the answers rendered from it (one `show paths --json` is \
             {:.1} MiB, rendered once per snapshot and shared by its clients; at most 2 are sent \
             at a time, and a client waiting for its turn keeps none)",
            b / (1024.0 * 1024.0)
        ));
    }
    Some(parts.join("; ") + ".")
}

/// The one-line figure for the micro-benchmark table.
pub fn figure(j: &serde_json::Value) -> (String, String) {
    (
        format!(
            "HBA loss ({} paths) failed in {}; idle path during rescan {} / under 64 show clients {} (median); idle CPU {:.3} s/s; peak RSS {:.2} KiB/path",
            num(j, "hba_loss.paths_lost").unwrap_or(0.0),
            secs(num(j, "hba_loss.seconds")),
            secs(num(j, "idle_path_during_rescan.fail.median_s")),
            secs(num(j, "idle_path_during_64_show_clients.fail.median_s")),
            num(j, "idle_cpu_s_per_s").unwrap_or(f64::NAN),
            num(j, "peak_rss_per_path_kb").unwrap_or(f64::NAN),
        ),
        "< 1 s each; 4 KiB/path".into(),
    )
}

/// The section with one row per figure of issue 18, or nothing when the benchmark has no
/// results yet.
pub fn section(o: &mut String, micro: &Option<MicroResults>) {
    const HEADING: &str =
        "## Failover under load (multipathd-rs `failover_latency`, sim backend)\n";
    let Some(micro) = micro else {
        // No micro results saved on this checkout (a lab-only run): "Not run yet" makes the
        // report keep this section's text from the BENCHMARKS.md it replaces.
        let _ = writeln!(o, "{HEADING}\nNot run yet.\n");
        return;
    };
    let Some(r) = micro.results.iter().find(|r| r.bench == BENCH) else {
        return;
    };
    let _ = writeln!(o, "{HEADING}");
    let Some(j) = &r.json else {
        let _ = writeln!(
            o,
            "Not measured: {}\n",
            r.error.as_deref().unwrap_or("no results")
        );
        return;
    };
    let _ = writeln!(
        o,
        "The daemon as it runs (control socket, loop, checker pool, published snapshot) on a \
         generated tree of {} LUNs x 8 paths ({} paths, 2 FC HBAs x 4 target ports) in /dev/shm and \
         the in-memory sim backend, `sysfs` checker, default intervals (5 s, backing off to 20 s). \
         \"Failed\" is the moment the backend accepted the path's `fail_path`. Results written {} \
         (load average {:.1}).\n",
        num(j, "luns").unwrap_or(0.0),
        num(j, "paths").unwrap_or(0.0),
        r.written.as_deref().unwrap_or("?"),
        num(j, "load_avg_1m").unwrap_or(f64::NAN)
    );
    let _ = writeln!(o, "| figure | value | target | |\n|---|---|---|---|");
    // The harness writes the lost paths' states file by file (a kernel changes them at once),
    // so the figure from the first write includes the writes: judged on it (the conservative
    // reading), with the time after the last write beside it.
    let hba = num(j, "hba_loss.seconds");
    let writes = num(j, "hba_loss.sim_state_writes_s");
    let after = hba.zip(writes).map(|(h, w)| (h - w).max(0.0));
    let _ = writeln!(
        o,
        "| HBA loss: {} paths transport-offline, time from the first one until every one is failed (the harness writes their states file by file, in {}; after the last write: {}) | {} | < 1 s | {} |",
        num(j, "hba_loss.paths_lost").unwrap_or(0.0),
        secs(writes),
        secs(after),
        secs(hba),
        verdict(hba, 1.0)
    );
    for (key, what) in [
        (
            "idle_path_during_rescan",
            "one idle path offline during a rescan of every host",
        ),
        (
            "idle_path_during_64_show_clients",
            "one idle path offline while 64 clients loop on `show paths --json`",
        ),
    ] {
        let med = num(j, &format!("{key}.fail.median_s"));
        let max = num(j, &format!("{key}.fail.max_s"));
        let _ = writeln!(
            o,
            "| {what}: time to fail it, median (max) of {} | {} ({}) | < 1 s | {} |",
            num(j, &format!("{key}.fail.runs")).unwrap_or(0.0),
            secs(med),
            secs(max),
            verdict(max.or(med), 1.0)
        );
    }
    // The passes' spacing follows from the pass's CPU by the daemon's own rule.
    let sweep_cpu = num(j, "sweep_cpu_s_median").filter(|c| c.is_finite() && *c >= 0.0);
    let spacing = sweep_cpu.map(|c| {
        multipathd_rs::sweep::pause_after(
            multipathd_rs::sweep::SWEEP_PERIOD,
            std::time::Duration::from_secs_f64(c),
        )
        .as_secs_f64()
    });
    let _ = writeln!(
        o,
        "| daemon CPU per second when nothing happens (checks at their 20 s ceiling; the sweep thread's full passes every {}, about {} of CPU a second of it) | {:.3} s/s | small | |",
        secs(spacing),
        match sweep_cpu.zip(spacing) {
            Some((c, s)) if s > 0.0 => format!("{:.3} s", c / s),
            _ => "?".into(),
        },
        num(j, "idle_cpu_s_per_s").unwrap_or(f64::NAN)
    );
    let _ = writeln!(
        o,
        "| one pass of the sweep thread over every member path (wall time; the thread's CPU time, which spaces the passes: ten times it, at most 0.5 s while a quarter of a core keeps them so) | {} ({} CPU) | small | |",
        secs(num(j, "sweep_s_median")),
        secs(sweep_cpu)
    );
    if let Some(t) = num(j, "snapshot_build_s_median") {
        let _ = writeln!(
            o,
            "| one read snapshot (what `show` answers from; built under the engine lock, every 250 ms while anything changes): time to build, median of 5; its memory (RSS growth over 5 kept, divided) | {} ({:.1} MiB) | small | |",
            secs(Some(t)),
            num(j, "snapshot_kb").unwrap_or(f64::NAN) / 1024.0
        );
    }
    let rss = num(j, "peak_rss_per_path_kb");
    let _ = writeln!(
        o,
        "| peak RSS per path (whole benchmark process at its end: the sim backend and the tree model included; the 64 clients run in another process; over the pre-daemon base: {:.2} KiB) | {:.2} KiB | 4 KiB | {} |",
        num(j, "peak_rss_per_path_over_base_kb").unwrap_or(f64::NAN),
        rss.unwrap_or(f64::NAN),
        match rss {
            Some(x) if x <= 4.0 => "met",
            Some(_) => "NOT met",
            None => "not measured",
        }
    );
    if let Some(fallback) = num(j, "sweep_thread.fallback").filter(|&n| n > 0.0) {
        let _ = writeln!(
            o,
            "\nThe process's open-file limit ({}) left the sweep thread {} state files to hold \
             open; the other {} paths are read by open/read/close (`openat` relative to their \
             SCSI target's directory), which costs several times a `pread`, so a pass takes \
             longer and the passes are spaced out to ten times their CPU, at most 0.5 s apart \
             while a quarter of a core keeps them so (last pass {}, {} CPU). {} Where a pass's CPU goes (perf, 4096 x 8 on tmpfs, 18,976 held: 156 ms \
             a pass): `pread` 40%, `openat` 40% (dentry lookup 11%), `close` 8%, the sweep's \
             own code about 5%, no allocation or hashing: the cost is the kernel's per file, \
             so the idle-path targets above wait for the next pass.",
            num(j, "nofile_limit").map_or("?".into(), |v| format!("{v:.0}")),
            num(j, "sweep_thread.open_files").unwrap_or(0.0),
            fallback,
            secs(num(j, "sweep_s_median")),
            secs(num(j, "sweep_cpu_s_median")),
            match num(j, "nofile_unit").filter(|&u| num(j, "nofile_limit").is_some_and(|l| l < u)) {
                Some(u) => format!(
                    "The daemon's unit (contrib/multipathd-rs.service) sets LimitNOFILE={u:.0}, \
                     enough to hold every one open; this machine's hard limit is lower and the \
                     benchmark could not raise it (that needs CAP_SYS_RESOURCE)."
                ),
                None => "A daemon whose unit allows enough open files holds them all open.".into(),
            },
        );
    }
    if let Some(phases) = j.get("peak_rss_kb_by_phase").and_then(|v| v.as_array()) {
        let parts: Vec<String> = phases
            .iter()
            .filter_map(|p| {
                Some(format!(
                    "{} {:.1} KiB/path",
                    p.get("phase")?.as_str()?,
                    p.get("per_path_kb")?.as_f64()?
                ))
            })
            .collect();
        if !parts.is_empty() {
            let _ = writeln!(
                o,
                "\nPeak RSS by phase (whole process): {}.",
                parts.join("; ")
            );
        }
    }
    if let Some(why) = rss_why(j) {
        let _ = writeln!(o, "\n{why}");
    }
    // The daemon's unit sets glibc malloc variables; the benchmark runs under them.
    if let Some(env) = j.get("malloc_env").and_then(|v| v.as_object()) {
        let vars: Vec<String> = env
            .iter()
            .filter_map(|(k, v)| Some(format!("{k}={}", v.as_str()?)))
            .collect();
        let _ = if vars.is_empty() {
            writeln!(
                o,
                "\nThe benchmark ran under glibc's malloc defaults, not the daemon unit's settings."
            )
        } else {
            writeln!(
                o,
                "\nThe benchmark ran under the daemon unit's glibc malloc settings: {}.",
                vars.join(" ")
            )
        };
    }
    let _ = writeln!(
        o,
        "\nAlso: {} `show paths --json` answered per second to the 64 clients; the lost HBA's paths \
         were all reinstated {} after it came back. Issue 18's real-kernel figures (the idle-path \
         median and maximum over 10 repetitions, the 256-LUN cold start and idle CPU side by side \
         with multipath-tools) are in the lab section above, with their targets.\n",
        num(j, "idle_path_during_64_show_clients.shows_answered_per_s")
            .map_or("?".into(), |v| format!("{v:.0}")),
        secs(num(j, "hba_loss.return_s"))
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_carry_values_and_verdicts() {
        let j = serde_json::json!({
            "luns": 4096, "paths": 32768,
            "hba_loss": {"paths_lost": 16384, "seconds": 0.8, "sim_state_writes_s": 0.3, "return_s": 2.0},
            "idle_path_during_rescan": {"fail": {"median_s": 0.5, "max_s": 1.2, "runs": 5}},
            "idle_path_during_64_show_clients": {"fail": {"median_s": 0.4, "max_s": 0.9, "runs": 5}, "shows_answered_per_s": 30.0},
            "idle_cpu_s_per_s": 0.05, "sweep_s_median": 0.04, "sweep_cpu_s_median": 0.03, "nofile_limit": 20000,
            "nofile_unit": 524288,
            "sweep_thread": {"open_files": 18976, "fallback": 13792},
            "peak_rss_per_path_kb": 4.5, "peak_rss_per_path_over_base_kb": 3.9,
            "peak_rss_kb_by_phase": [{"phase": "64 show clients", "kb": 100, "per_path_kb": 3.3}],
            "malloc_env": {"MALLOC_ARENA_MAX": "2"},
            "rss_before_daemon_kb": 32768, "snapshot_kb": 16384, "show_paths_json_bytes": 20971520,
            "snapshot_build_s_median": 0.05
        });
        let micro = Some(MicroResults {
            date: "d".into(),
            results: vec![crate::micro::MicroResult {
                package: "multipathd-rs".into(),
                bench: BENCH.into(),
                ran: true,
                written: Some("w".into()),
                json: Some(j),
                error: None,
            }],
        });
        let mut o = String::new();
        section(&mut o, &micro);
        assert!(
            o.contains(
                "file by file, in 0.300 s; after the last write: 0.500 s) | 0.800 s | < 1 s | met |"
            ),
            "{o}"
        );
        assert!(o.contains("0.500 s (1.200 s) | < 1 s | NOT met"), "{o}");
        assert!(o.contains("0.400 s (0.900 s) | < 1 s | met"), "{o}");
        assert!(o.contains("4.50 KiB | 4 KiB | NOT met"), "{o}");
        // 30 ms of CPU a pass: passes 0.3 s apart, 0.1 s of CPU a second.
        assert!(
            o.contains(
                "full passes every 0.300 s, about 0.100 s of CPU a second of it) | 0.050 s/s"
            ),
            "{o}"
        );
        assert!(o.contains("64 show clients 3.3 KiB/path"), "{o}");
        assert!(o.contains("| 0.050 s (16.0 MiB) | small |"), "{o}");
        assert!(
            o.contains("the tree model (1.0 KiB/path before the daemon started)")
                && o.contains("the path list: 16.0 MiB, 0.50 KiB/path)")
                && o.contains("one `show paths --json` is 20.0 MiB"),
            "{o}"
        );
        assert!(
            o.contains("the daemon unit's glibc malloc settings: MALLOC_ARENA_MAX=2."),
            "{o}"
        );
        assert!(
            o.contains("limit (20000) left the sweep thread 18976 state files")
                && o.contains("the other 13792 paths are read by open/read/close (`openat`")
                && o.contains("(last pass 0.040 s, 0.030 s CPU)")
                && o.contains("sets LimitNOFILE=524288, enough to hold every one open"),
            "{o}"
        );
        // The paragraph follows the table, never splits it.
        assert!(
            o.find("4.50 KiB | 4 KiB").unwrap() < o.find("open-file limit").unwrap(),
            "{o}"
        );
        assert!(rss_why(&serde_json::json!({"peak_rss_per_path_kb": 3.9})).is_none());
        // No micro results at all: a "Not run yet" section, which the report replaces by the
        // previous text; micro results without this benchmark: nothing.
        let mut none = String::new();
        section(&mut none, &None);
        assert!(none.contains("## Failover under load") && none.contains("Not run yet"));
        let mut other = String::new();
        section(
            &mut other,
            &Some(MicroResults {
                date: String::new(),
                results: Vec::new(),
            }),
        );
        assert!(other.is_empty(), "{other}");
    }
}
