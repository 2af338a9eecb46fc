//! BENCHMARKS.md and the SVG plots, written from the saved section results.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::lab::{self, LabResults};
use crate::micro::{MicroResults, num};
use crate::scale::{PointResult, ScaleResults};
use crate::stats::{Summary, growth_words, loglog_slope};
use crate::svg::{self, Bar, BarGroup, COLORS, LineChart, Panel, Point, Series};

/// `YYYY-MM-DD HH:MM:SS UTC` of a Unix time (civil-from-days, proleptic Gregorian).
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_utc(secs)
}

/// The machine and software a run happened on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub date: String,
    pub cpu_model: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub host_kernel: String,
    pub os: String,
    pub rustc: String,
    pub multipath_tools: String,
    pub load_avg_1m: Option<f64>,
}

fn cmd_out(cmd: &str, args: &[&str]) -> Option<String> {
    let o = Command::new(cmd).args(args).output().ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

pub fn machine() -> Machine {
    let (cpu_model, cores, memory_gib) = match sysinfo::System::new() {
        Ok(mut sys) => {
            sys.refresh_memory();
            sys.refresh_cpu_all();
            let model = sys
                .cpus()
                .first()
                .map(|c| c.brand().trim().to_string())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "unknown".into());
            (
                model,
                sys.cpus().len(),
                sys.total_memory() as f64 / (1u64 << 30) as f64,
            )
        }
        Err(_) => ("unknown".into(), 0, 0.0),
    };
    Machine {
        date: now_utc(),
        cpu_model,
        cores,
        memory_gib,
        host_kernel: sysinfo::System::kernel_version().unwrap_or_else(|_| "unknown".into()),
        os: sysinfo::System::long_os_version().unwrap_or_else(|_| "unknown".into()),
        rustc: cmd_out("rustc", &["--version"]).unwrap_or_else(|| "unknown".into()),
        multipath_tools: cmd_out("dpkg-query", &["-W", "-f", "${Version}", "multipath-tools"])
            .map(|v| format!("{v} (Debian package)"))
            .unwrap_or_else(|| "not installed on this host".into()),
        load_avg_1m: sysinfo::System::load_average().ok().map(|l| l.one),
    }
}

/// Everything a report is made of; sections that did not run in this invocation come from
/// their last saved results (each shows its own date).
#[derive(Debug, Default)]
pub struct Inputs {
    pub machine: Option<Machine>,
    pub scale: Option<ScaleResults>,
    pub lab: Option<LabResults>,
    pub micro: Option<MicroResults>,
    pub quick: bool,
}

fn fmt_s(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.1} s")
    } else if v >= 1.0 {
        format!("{v:.2} s")
    } else if v >= 0.001 {
        format!("{:.1} ms", v * 1000.0)
    } else {
        format!("{:.0} µs", v * 1e6)
    }
}

/// A lab figure in its unit.
fn fmt_unit(unit: lab::Unit, v: f64) -> String {
    match unit {
        lab::Unit::Seconds => fmt_s(v),
        lab::Unit::CpuPerSecond => format!("{v:.3} CPU s/s"),
    }
}

/// A lab summary in its unit: median (min–max).
fn fmt_sum_unit(unit: lab::Unit, s: &Option<Summary>) -> String {
    match s {
        Some(s) if s.n > 1 => format!(
            "{} ({}–{})",
            fmt_unit(unit, s.median),
            fmt_unit(unit, s.min),
            fmt_unit(unit, s.max)
        ),
        Some(s) => fmt_unit(unit, s.median),
        None => "—".into(),
    }
}

fn fmt_sum(s: &Option<Summary>) -> String {
    match s {
        Some(s) if s.n > 1 => format!("{} ({}–{})", fmt_s(s.median), fmt_s(s.min), fmt_s(s.max)),
        Some(s) => fmt_s(s.median),
        None => "—".into(),
    }
}

fn fmt_mib(s: &Option<Summary>) -> String {
    match s {
        Some(s) if s.n > 1 => format!("{:.0} ({:.0}–{:.0})", s.median, s.min, s.max),
        Some(s) => format!("{:.0}", s.median),
        None => "—".into(),
    }
}

fn kpaths(v: f64) -> String {
    if v >= 1024.0 {
        format!("{}k", (v / 1024.0).round())
    } else {
        format!("{v}")
    }
}

fn secs_tick(v: f64) -> String {
    if v >= 1.0 {
        format!("{v} s")
    } else if v >= 0.001 {
        format!("{} ms", (v * 1000.0 * 1000.0).round() / 1000.0)
    } else {
        format!("{} µs", (v * 1e6).round())
    }
}

fn mib_tick(v: f64) -> String {
    format!("{v} MiB")
}

fn point(p: &PointResult, s: &Option<Summary>) -> Option<Point> {
    s.map(|s| Point {
        x: p.paths as f64,
        y: s.median,
        lo: s.min,
        hi: s.max,
    })
}

type Phase = (&'static str, fn(&PointResult) -> &Option<Summary>);

const PHASES: [Phase; 4] = [
    ("discovery (scan)", |p| &p.scan),
    ("planning", |p| &p.plan),
    ("map creation (sync after scan)", |p| &p.create),
    ("cold start total", |p| &p.cold_start),
];

fn per_luns(scale: &ScaleResults) -> Vec<usize> {
    let mut v: Vec<usize> = scale.points.iter().map(|p| p.per_lun).collect();
    v.sort_unstable();
    v.dedup();
    v
}

fn time_chart(scale: &ScaleResults) -> String {
    let panels = per_luns(scale)
        .into_iter()
        .map(|k| Panel {
            title: format!("{k} paths per LUN"),
            series: PHASES
                .iter()
                .enumerate()
                .map(|(i, (name, f))| Series {
                    name: (*name).into(),
                    color: COLORS[i],
                    dashed: i == 3,
                    points: scale
                        .points
                        .iter()
                        .filter(|p| p.per_lun == k)
                        .filter_map(|p| point(p, f(p)))
                        .collect(),
                })
                .collect(),
        })
        .collect();
    svg::line_chart(&LineChart {
        title: "multipathd-rs: time against paths (generated sysfs, sim backend; log-log)".into(),
        x_label: "paths".into(),
        y_label: "seconds (log scale)".into(),
        log_x: true,
        log_y: true,
        panels,
        x_fmt: kpaths,
        y_fmt: secs_tick,
    })
}

fn memory_chart(scale: &ScaleResults) -> String {
    let series = per_luns(scale)
        .into_iter()
        .enumerate()
        .map(|(i, k)| Series {
            name: format!("{k} paths per LUN"),
            color: COLORS[i],
            dashed: false,
            points: scale
                .points
                .iter()
                .filter(|p| p.per_lun == k)
                .filter_map(|p| point(p, &p.peak_rss_mib))
                .collect(),
        })
        .collect();
    svg::line_chart(&LineChart {
        title: "multipathd-rs: peak RSS against paths (scan + plan + create; log-log)".into(),
        x_label: "paths".into(),
        y_label: "peak RSS, MiB (log scale)".into(),
        log_x: true,
        log_y: true,
        panels: vec![Panel {
            title: "one fresh process per run".into(),
            series,
        }],
        x_fmt: kpaths,
        y_fmt: mib_tick,
    })
}

fn lab_chart(cmp: &[lab::Comparison]) -> String {
    let groups: Vec<BarGroup> = cmp
        .iter()
        .filter(|c| c.unit == lab::Unit::Seconds)
        .map(|c| BarGroup {
            label: c.metric.replace('_', " "),
            bars: vec![
                Bar {
                    name: lab::OURS.into(),
                    color: COLORS[0],
                    value: c.ours.map(|s| (s.median, s.min, s.max)),
                },
                Bar {
                    name: lab::THEIRS.into(),
                    color: COLORS[1],
                    value: c.theirs.map(|s| (s.median, s.min, s.max)),
                },
            ],
        })
        .collect();
    svg::bar_chart(
        "Real kernel (lab VM, scsi_debug): multipathd-rs vs multipath-tools, lower is better",
        "seconds (log scale)",
        &groups,
        secs_tick,
    )
}

/// Slope over the points of one phase (all sizes, and from 4k up).
fn slopes(
    scale: &ScaleResults,
    k: usize,
    f: fn(&PointResult) -> &Option<Summary>,
) -> (Option<f64>, Option<f64>) {
    let pts: Vec<(f64, f64)> = scale
        .points
        .iter()
        .filter(|p| p.per_lun == k)
        .filter_map(|p| f(p).map(|s| (p.paths as f64, s.median)))
        .collect();
    let upper: Vec<(f64, f64)> = pts.iter().copied().filter(|(x, _)| *x >= 4096.0).collect();
    (loglog_slope(&pts), loglog_slope(&upper))
}

/// Writes BENCHMARKS.md at `md` and the plots under `docs_dir` (linked as `docs/bench/...`).
pub fn write(inputs: &Inputs, md: &Path, docs_dir: &Path) -> Result<()> {
    std::fs::create_dir_all(docs_dir)
        .with_context(|| format!("cannot create {}", docs_dir.display()))?;
    let previous = std::fs::read_to_string(md).ok();
    let micro = inputs
        .micro
        .clone()
        .map(|m| fill_micro_from(m, previous.as_deref()));
    let mut o = String::new();
    let _ = writeln!(o, "# Benchmarks\n");
    let _ = writeln!(
        o,
        "Written by `cargo run --release -p bench`{} — do not edit by hand; \
         rerun it. Every figure is a median over repeated runs with its spread (min–max); the \
         benchmarks never assert times. These machines are shared and noisy: ratios measured side by \
         side in one run mean more than absolute times.\n",
        if inputs.quick {
            " `--quick` (smoke mode: smallest points, one run — not real figures)"
        } else {
            ""
        }
    );
    if let Some(m) = &inputs.machine {
        let _ = writeln!(o, "## Machine\n");
        let _ = writeln!(o, "| | |\n|---|---|");
        let _ = writeln!(o, "| report written | {} |", m.date);
        let _ = writeln!(o, "| CPU | {} ({} cores visible) |", m.cpu_model, m.cores);
        let _ = writeln!(o, "| memory | {:.1} GiB |", m.memory_gib);
        let _ = writeln!(o, "| host kernel | {} ({}) |", m.host_kernel, m.os);
        if let Some(lab) = &inputs.lab {
            let _ = writeln!(
                o,
                "| lab guest kernel | {} under qemu TCG ({}) |",
                lab.guest_kernel.as_deref().unwrap_or("unknown"),
                lab.qemu.as_deref().unwrap_or("qemu version unknown")
            );
        }
        let _ = writeln!(o, "| rustc | {} |", m.rustc);
        let _ = writeln!(o, "| multipath-tools | {} |", m.multipath_tools);
        if let Some(l) = m.load_avg_1m {
            let _ = writeln!(
                o,
                "| load average (1 min) when written | {l:.1} (on 2 cores; the run's own lab guest, just finished, counts in it) |"
            );
        }
        let _ = writeln!(o);
    }

    // ----------------------------------------------------------------- headline
    let _ = writeln!(o, "## Headline\n");
    let mut head = Vec::new();
    if let Some(scale) = &inputs.scale {
        if let Some(p) = scale
            .points
            .iter()
            .find(|p| p.paths == 32768 && p.per_lun == 8)
        {
            head.push(cold_start_line(p));
        }
        head.extend(rss_per_path_line(scale));
        if let Some(p) = scale.points.iter().max_by_key(|p| (p.paths, p.per_lun)) {
            head.push(format!(
                "- Largest point, {} paths ({} LUNs x {}): cold start {}, peak RSS {} MiB.",
                p.paths,
                p.luns,
                p.per_lun,
                fmt_sum(&p.cold_start),
                fmt_mib(&p.peak_rss_mib)
            ));
        }
    }
    if let Some(labr) = &inputs.lab {
        for c in lab::compare(labr) {
            let line = match (&c.ours, &c.theirs) {
                (Some(a), Some(b)) if b.median > 0.0 => format!(
                    "- {}: multipathd-rs {} vs multipath-tools {} (ratio {:.2})",
                    c.metric.replace('_', " "),
                    fmt_unit(c.unit, a.median),
                    fmt_unit(c.unit, b.median),
                    a.median / b.median
                ),
                (None, Some(b)) => format!(
                    "- {}: multipathd-rs not measured ({}); multipath-tools {}",
                    c.metric.replace('_', " "),
                    c.ours_missing.as_deref().unwrap_or("no result"),
                    fmt_unit(c.unit, b.median)
                ),
                _ => continue,
            };
            head.push(line);
        }
        for t in lab::targets(&lab::compare(labr)) {
            head.push(format!(
                "- Target (issue 18, lab): {}: {} (target {}): **{}**",
                t.figure, t.value, t.target, t.verdict
            ));
        }
    }
    if head.is_empty() {
        head.push("- No section has results yet.".into());
    }
    let _ = writeln!(o, "{}\n", head.join("\n"));

    // ----------------------------------------------------------------- scale
    let _ = writeln!(
        o,
        "## Scale curve (generated sysfs, simulated device-mapper)\n"
    );
    match &inputs.scale {
        None => {
            let _ = writeln!(o, "Not run yet.\n");
        }
        Some(scale) => {
            std::fs::write(docs_dir.join("scale-time.svg"), time_chart(scale))
                .context("cannot write scale-time.svg")?;
            std::fs::write(docs_dir.join("scale-memory.svg"), memory_chart(scale))
                .context("cannot write scale-memory.svg")?;
            let _ = writeln!(
                o,
                "Run {}; {} run(s) per point, each a fresh process (`bench point`) so its peak RSS \
                 is its own. Trees from `lun_scan::topology` (2 FC HBAs, `paths/per-LUN` target ports \
                 split over them, ALUA port groups, NAA-6 WWIDs) on {}; \
                 backend: `dm_tables::SimBackend` in memory; built-in configuration. {}\n",
                scale.date,
                scale.runs_per_point,
                scale.tree_fs,
                malloc_note(&scale.malloc_env)
            );
            let _ = writeln!(
                o,
                "Phases: **discovery** = `Engine::scan` (lun-scan reading every path's attributes \
                 and VPD pages); **planning** = filter, group by WWID, priorities, tables and plans \
                 for every map (`discovery::filter_paths`/`desired_map`/`plan_map`, no backend); \
                 **map creation** = the rest of a cold `Engine::sync` after its scan \
                 (`Engine::sync_wwids` over every WWID: plan again, allocate every alias in one \
                 durable batch, load every table into the backend, refresh state); **cold start** = \
                 discovery + map creation, i.e. a daemon's start from nothing to every map \
                 present. Peak RSS is VmHWM of the process doing all of it.\n"
            );
            let _ = writeln!(o, "![time against paths](docs/bench/scale-time.svg)\n");
            let _ = writeln!(
                o,
                "![peak RSS against paths](docs/bench/scale-memory.svg)\n"
            );
            let _ = writeln!(
                o,
                "| paths | LUNs x paths | discovery | planning | map creation | cold start | peak RSS MiB |\n|---:|---|---|---|---|---|---|"
            );
            for p in &scale.points {
                if let Some(why) = &p.skipped {
                    let _ = writeln!(
                        o,
                        "| {} | {} x {} | {why} | | | | |",
                        p.paths, p.luns, p.per_lun
                    );
                    continue;
                }
                let _ = writeln!(
                    o,
                    "| {} | {} x {} | {} | {} | {} | {} | {} |",
                    p.paths,
                    p.luns,
                    p.per_lun,
                    fmt_sum(&p.scan),
                    fmt_sum(&p.plan),
                    fmt_sum(&p.create),
                    fmt_sum(&p.cold_start),
                    fmt_mib(&p.peak_rss_mib)
                );
                for e in &p.errors {
                    let _ = writeln!(
                        o,
                        "| | failed run: {} | | | | | |",
                        e.replace('|', "/").replace('\n', " ")
                    );
                }
            }
            let _ = writeln!(o);
            let _ = writeln!(
                o,
                "### How the cost grows\n\nSlope of log(median) against log(paths), least squares \
                 (1 = linear, 2 = quadratic); \"from 4k\" leaves out the 1k point where fixed costs \
                 weigh most.\n"
            );
            let _ = writeln!(
                o,
                "| paths per LUN | measure | slope (all sizes) | slope (from 4k) | growth |\n|---|---|---:|---:|---|"
            );
            let mut measures: Vec<Phase> = PHASES.to_vec();
            measures.push(("peak RSS", |p| &p.peak_rss_mib));
            for k in per_luns(scale) {
                for (name, f) in &measures {
                    let (all, upper) = slopes(scale, k, *f);
                    let words = upper.or(all).map_or("too few points", growth_words);
                    let f2 = |v: Option<f64>| v.map_or("—".into(), |v| format!("{v:.2}"));
                    let _ = writeln!(
                        o,
                        "| {k} | {name} | {} | {} | {words} |",
                        f2(all),
                        f2(upper)
                    );
                }
            }
            let _ = writeln!(
                o,
                "\nPeak RSS includes the fixed cost of the process (binary, allocator, config); \
                 its slope from 4k up is the per-path cost.\n"
            );
        }
    }

    // ----------------------------------------------------------------- lab
    let _ = writeln!(
        o,
        "## Real kernel, side by side with multipath-tools (lab VM)\n"
    );
    match &inputs.lab {
        None => {
            let _ = writeln!(
                o,
                "Not run yet (`--no-lab`, or no earlier lab results). Run without `--no-lab`.\n"
            );
        }
        Some(labr) => {
            let cmp = lab::compare(labr);
            std::fs::write(docs_dir.join("lab-compare.svg"), lab_chart(&cmp))
                .context("cannot write lab-compare.svg")?;
            let mpt = labr
                .runs
                .iter()
                .filter_map(|r| r.file.as_ref())
                .map(|f| f.multipath_tools.clone())
                .find(|t| !t.is_empty())
                .unwrap_or_else(|| "unknown".into());
            let _ = writeln!(
                o,
                "Run {}: Debian's kernel {} under qemu TCG (no KVM here: everything is slow and \
                 noisy, so read the ratios), scsi_debug topologies as the guest runs below say, {} \
                 repetition(s) per figure unless a guest run below says otherwise, tools alternating within each repetition where \
                 the scenario restarts them. multipath-tools {mpt}: Debian's package with its \
                 default configuration apart from `find_multipaths no`, `multipathd -d -s` as \
                 Debian's unit starts it. multipathd-rs: `multipathd-rs daemon` with the kernel \
                 backend and its built-in configuration. udevd runs in the guest for both (as on a \
                 host). Scenarios: `tests/lab/scenarios/9x-bench-*.sh`; raw results in \
                 `tests/lab/out/9x-bench-*/results.json` (under `$BENCH_LAB_MIRROR` when that \
                 is set).\n",
                labr.date,
                labr.guest_kernel.as_deref().unwrap_or("unknown"),
                labr.reps
            );
            let _ = writeln!(
                o,
                "![multipathd-rs vs multipath-tools](docs/bench/lab-compare.svg)\n"
            );
            let _ = writeln!(
                o,
                "| measurement | multipathd-rs | multipath-tools | ratio (ours / theirs, median) |\n|---|---|---|---|"
            );
            for c in &cmp {
                let ours = match (&c.ours, &c.ours_missing) {
                    (Some(_), Some(w)) => format!("{} ({w})", fmt_sum_unit(c.unit, &c.ours)),
                    (Some(_), None) => fmt_sum_unit(c.unit, &c.ours),
                    (None, w) => format!("not measured: {}", w.as_deref().unwrap_or("no result")),
                };
                let theirs = match (&c.theirs, &c.theirs_missing) {
                    (Some(_), Some(w)) => format!("{} ({w})", fmt_sum_unit(c.unit, &c.theirs)),
                    (Some(_), None) => fmt_sum_unit(c.unit, &c.theirs),
                    (None, w) => format!("not measured: {}", w.as_deref().unwrap_or("no result")),
                };
                let ratio = match (&c.ours, &c.theirs) {
                    (Some(a), Some(b)) if b.median > 0.0 => format!("{:.2}", a.median / b.median),
                    _ => "—".into(),
                };
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {ratio} |",
                    c.what,
                    ours.replace('|', "/"),
                    theirs.replace('|', "/")
                );
            }
            let _ = writeln!(
                o,
                "\nIssue 18's targets on the real kernel (idle CPU has no figure set: it is shown \
                 side by side above, without a verdict):\n\n| figure | value | target | |\n|---|---|---|---|"
            );
            for t in lab::targets(&cmp) {
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} |",
                    t.figure,
                    t.value.replace('|', "/"),
                    t.target,
                    t.verdict
                );
            }
            let _ = writeln!(
                o,
                "\nHow each tool notices a path going offline: multipath-tools by an I/O error on \
                 that path (only while I/O goes through it) or by its path checker, every \
                 `polling_interval` (5 s) stretched up to `max_polling_interval` (20 s) while the \
                 path stays healthy; multipathd-rs by the same two plus a thread that reads every \
                 path's `device/state` every 200 ms (spaced out to at most 0.5 s on hosts with \
                 tens of thousands of paths) and fails a path that went offline itself. So multipath-tools' figures spread widely: with \
                 the dd loop running they depend on whether its I/O was going through the failed \
                 path (each repetition is in `tests/lab/out/92-bench-failover/results.json`). \
                 Adding LUNs: multipathd-rs reads the new paths from kernel uevents and sysfs and \
                 has every new map's ioctls in flight at once (up to 256, each waiting for its udev \
                 cookie); multipath-tools waits for udevd to finish with \
                 each new disk first."
            );
            let _ = writeln!(o, "\nGuest runs:\n");
            for r in &labr.runs {
                let _ = writeln!(
                    o,
                    "- `{}`{}: {}{}{}, {} repetition(s){}",
                    r.scenario,
                    r.file
                        .as_ref()
                        .filter(|f| !f.topology.is_empty())
                        .map(|f| format!(" ({})", f.topology))
                        .unwrap_or_default(),
                    r.lab_status,
                    if r.wall_s > 0.0 {
                        format!(" in {:.0} s", r.wall_s)
                    } else {
                        String::new()
                    },
                    r.ran
                        .as_ref()
                        .map(|d| format!(", run {d}"))
                        .unwrap_or_default(),
                    r.file.as_ref().map_or(0, |f| f.reps),
                    r.error
                        .as_ref()
                        .map(|e| format!(" — {e}"))
                        .unwrap_or_default()
                );
                for line in r.file.iter().flat_map(|f| &f.profile) {
                    let _ = writeln!(o, "  - {line}");
                }
            }
            let _ = writeln!(o);
        }
    }

    crate::failover::section(&mut o, &inputs.micro);
    // ----------------------------------------------------------------- micro
    let _ = writeln!(
        o,
        "## Micro-benchmarks (`cargo bench`, each crate's `benches/`)\n"
    );
    match &micro {
        None => {
            let _ = writeln!(o, "Not run yet.\n");
        }
        Some(micro) => {
            let _ = writeln!(
                o,
                "| benchmark | figure | target | results written |\n|---|---|---|---|"
            );
            for r in &micro.results {
                let name = format!("{} `{}`", r.package, r.bench);
                let Some(j) = &r.json else {
                    let _ = writeln!(
                        o,
                        "| {name} | not measured: {} | | |",
                        r.error.as_deref().unwrap_or("no results").replace('|', "/")
                    );
                    continue;
                };
                let figure = micro_figure(&r.bench, j, &inputs.scale);
                let _ = writeln!(
                    o,
                    "| {name} | {} | {} | {}{} |",
                    figure.0,
                    figure.1,
                    r.written.as_deref().unwrap_or("?"),
                    if r.ran { "" } else { " (earlier run)" }
                );
            }
            let _ = writeln!(
                o,
                "\n<details><summary>Raw results (target/bench/*.json)</summary>\n"
            );
            for r in &micro.results {
                if let Some(j) = &r.json {
                    let _ = writeln!(
                        o,
                        "`{} {}`:\n\n```json\n{}\n```\n",
                        r.package,
                        r.bench,
                        serde_json::to_string_pretty(j).unwrap_or_default()
                    );
                }
            }
            let _ = writeln!(o, "</details>\n");
        }
    }
    let _ = writeln!(
        o,
        "## Reproduce\n\n```sh\ncargo run --release -p bench            # everything (~1 h on 2 shared cores)\ncargo run --release -p bench -- --no-lab  # without the VM\ncargo run --release -p bench -- --quick   # smoke mode, writes target/bench/quick/\n```\n\nSee tests/bench/README.md for the options."
    );
    if let Some(prev) = &previous {
        o = keep_previous(&o, prev, inputs.scale.is_some(), inputs.lab.is_some());
    }
    std::fs::write(md, o).with_context(|| format!("cannot write {}", md.display()))?;
    Ok(())
}

/// What a section without results says (scale, lab and micro sections all start so).
const NOT_RUN: &str = "Not run yet";

/// The report cut at its `## ` headings: (heading line, or "" before the first; body).
fn sections(text: &str) -> Vec<(String, String)> {
    let mut out = vec![(String::new(), String::new())];
    for line in text.split_inclusive('\n') {
        if line.starts_with("## ") {
            out.push((line.to_string(), String::new()));
        } else if let Some(last) = out.last_mut() {
            last.1.push_str(line);
        }
    }
    out
}

/// What the scale section says about the children's malloc settings.
fn malloc_note(env: &std::collections::BTreeMap<String, String>) -> String {
    if env.is_empty() {
        return "The children ran with glibc's default malloc settings (results saved before \
                the bench applied the daemon unit's)."
            .into();
    }
    let kv: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "The children run with the daemon unit's malloc settings ({}, from \
         contrib/multipathd-rs.service), as the daemon does: with glibc's default of one arena \
         per thread, a cold start's 256 concurrent creates spread memory over up to 16 arenas \
         and the peak RSS moved by half with the machine's load.",
        kv.join(" ")
    )
}

#[test]
fn malloc_note_names_the_settings_or_says_there_were_none() {
    let env = std::collections::BTreeMap::from([("MALLOC_ARENA_MAX".to_string(), "2".to_string())]);
    assert!(malloc_note(&env).contains("(MALLOC_ARENA_MAX=2, from contrib/multipathd-rs.service)"));
    assert!(malloc_note(&Default::default()).contains("default malloc settings"));
}

/// Issue 18's cold-start figure at 4096 LUNs x 8 paths (target under 2 s), its verdict, and
/// the profile the runs measured: how the time splits between discovery and map creation and
/// where each phase's CPU went (user or kernel), so a miss says why.
fn cold_start_line(p: &crate::scale::PointResult) -> String {
    let verdict = match &p.cold_start {
        Some(c) if c.median < 2.0 => "met",
        Some(_) => "NOT met",
        None => "not measured",
    };
    let mut line = format!(
        "- Cold start, 4096 LUNs x 8 paths (32,768 paths, generated sysfs, sim backend): **{}** \
         (target < 2 s: **{verdict}**), peak RSS {} MiB.",
        fmt_sum(&p.cold_start),
        fmt_mib(&p.peak_rss_mib)
    );
    if let Some(why) = cold_start_profile(p) {
        line.push_str(&format!(" Profile (medians of the runs): {why}."));
    }
    line
}

/// "discovery 2.03 s (79%), 3.10 CPU-s, 76% of it in the kernel; map creation ..." from the
/// runs' CPU split; None for results saved before the runs recorded it.
fn cold_start_profile(p: &crate::scale::PointResult) -> Option<String> {
    let med = |f: &dyn Fn(&crate::scale::PointRun) -> f64| {
        Summary::of(&p.runs.iter().map(f).collect::<Vec<_>>()).map(|s| s.median)
    };
    let cold = med(&|r| r.cold_start_s)?;
    if cold <= 0.0 || p.runs.iter().all(|r| r.scan_cpu.total_s() == 0.0) {
        return None;
    }
    let phase = |name: &str,
                 wall: &dyn Fn(&crate::scale::PointRun) -> f64,
                 cpu: &dyn Fn(&crate::scale::PointRun) -> crate::scale::CpuSplit|
     -> Option<String> {
        let w = med(wall)?;
        let total = med(&|r| cpu(r).total_s())?;
        let sys = med(&|r| cpu(r).sys_share())?;
        Some(format!(
            "{name} {} ({:.0}% of the start), {total:.2} CPU-s ({:.1} cores busy), {:.0}% of it in \
             the kernel",
            fmt_s(w),
            100.0 * w / cold,
            if w > 0.0 { total / w } else { 0.0 },
            100.0 * sys
        ))
    };
    let scan = phase("discovery", &|r| r.scan_s, &|r| r.scan_cpu)?;
    let create = phase("map creation", &|r| r.create_s, &|r| r.create_cpu)?;
    Some(format!(
        "{scan} (sysfs: an open, read and close per attribute of every path); {create}"
    ))
}

/// Issue 18's memory target, peak RSS per path at cold start (at most 4 KiB), judged at
/// 32,768 paths with 8 and with 2 paths per LUN.
fn rss_per_path_line(scale: &crate::scale::ScaleResults) -> Option<String> {
    let per_path: Vec<String> = [(32768, 8), (32768, 2)]
        .iter()
        .filter_map(|&(paths, per_lun)| {
            let p = scale
                .points
                .iter()
                .find(|p| p.paths == paths && p.per_lun == per_lun)?;
            let kib = p.peak_rss_mib.as_ref()?.median * 1024.0 / p.paths as f64;
            let mut line = format!(
                "{} LUNs x {}: {kib:.2} KiB/path (**{}**",
                p.luns,
                p.per_lun,
                if kib <= 4.0 { "met" } else { "NOT met" }
            );
            // Where the peak is reached, from the runs' high-water marks: a miss says why.
            let med = |f: fn(&crate::scale::PointRun) -> u64| {
                Summary::of(
                    &p.runs
                        .iter()
                        .map(|r| f(r) as f64 / 1024.0)
                        .collect::<Vec<_>>(),
                )
                .map(|s| s.median)
            };
            if kib > 4.0
                && let (Some(plan), Some(peak)) = (
                    med(|r| r.hwm_after_plan_kb).filter(|&m| m > 0.0),
                    med(|r| r.peak_rss_kb),
                )
            {
                line.push_str(&format!(
                    ": {plan:.0} MiB after discovery and planning, {peak:.0} MiB at the end of \
                     map creation, which also holds the simulated kernel's tables of its {} maps",
                    p.luns
                ));
            }
            line.push(')');
            Some(line)
        })
        .collect();
    (!per_path.is_empty()).then(|| {
        format!(
            "- Peak RSS per path at cold start (issue 18, target <= 4 KiB): {}.",
            per_path.join("; ")
        )
    })
}

/// A headline line the scale curve writes (the others come from the lab).
fn headline_from_scale(line: &str) -> bool {
    line.starts_with("- Cold start, ")
        || line.starts_with("- Largest point")
        || line.starts_with("- Peak RSS per path")
}

/// Keeps from the report being replaced what this run has no results for, so a run of one
/// section on a checkout without saved results (target/bench is not in git) never erases the
/// committed figures of the others: a section that would say "Not run yet" keeps its previous
/// text (which carries its own date), and the headline lines and machine row that came from a
/// section without results are kept too.
fn keep_previous(new: &str, old: &str, have_scale: bool, have_lab: bool) -> String {
    let old_secs = sections(old);
    let old_body = |h: &str| {
        old_secs
            .iter()
            .find(|(oh, _)| oh == h)
            .map(|(_, b)| b.as_str())
    };
    let mut out = String::new();
    for (h, body) in sections(new) {
        out.push_str(&h);
        let prev = old_body(&h);
        match (h.trim_end(), prev) {
            (_, Some(p))
                if body.trim_start().starts_with(NOT_RUN)
                    && !p.trim_start().starts_with(NOT_RUN) =>
            {
                out.push_str(p);
            }
            ("## Headline", Some(p)) if !have_scale || !have_lab => {
                let fresh = body
                    .lines()
                    .filter(|l| l.starts_with("- ") && *l != "- No section has results yet.");
                let kept = p.lines().filter(|l| {
                    l.starts_with("- ")
                        && if headline_from_scale(l) {
                            !have_scale
                        } else {
                            !have_lab
                        }
                });
                let mut lines: Vec<&str> = kept.chain(fresh).collect();
                // Scale lines first, as the writer orders them.
                lines.sort_by_key(|l| !headline_from_scale(l));
                if lines.is_empty() {
                    out.push_str(&body);
                } else {
                    out.push_str(&format!("\n{}\n\n", lines.join("\n")));
                }
            }
            ("## Machine", Some(p)) if !have_lab => {
                let guest = p.lines().find(|l| l.starts_with("| lab guest kernel |"));
                for line in body.split_inclusive('\n') {
                    out.push_str(line);
                    if let Some(g) = guest
                        && line.starts_with("| host kernel |")
                    {
                        out.push_str(g);
                        out.push('\n');
                    }
                }
            }
            _ => out.push_str(&body),
        }
    }
    out
}

/// The results of a micro-benchmark that neither ran now nor left JSON under target/bench,
/// taken from the raw results and the date of its row in the report being replaced (shown as
/// an earlier run).
fn fill_micro_from(mut m: MicroResults, old: Option<&str>) -> MicroResults {
    let Some(old) = old else {
        return m;
    };
    for r in m.results.iter_mut().filter(|r| r.json.is_none() && !r.ran) {
        let marker = format!("`{} {}`:\n\n```json\n", r.package, r.bench);
        let json = old.find(&marker).and_then(|i| {
            let rest = &old[i + marker.len()..];
            let end = rest.find("\n```")?;
            serde_json::from_str::<serde_json::Value>(&rest[..end]).ok()
        });
        let row = format!("| {} `{}` |", r.package, r.bench);
        let written = old
            .lines()
            .find(|l| l.starts_with(&row))
            .and_then(|l| l.trim_end().trim_end_matches('|').rsplit('|').next())
            .map(|d| {
                d.trim()
                    .trim_end_matches("(earlier run)")
                    .trim()
                    .to_string()
            })
            .filter(|d| !d.is_empty());
        if let (Some(json), Some(written)) = (json, written) {
            r.json = Some(json);
            r.written = Some(written);
            r.error = None;
        }
    }
    m
}

/// The headline figure and target of a micro-benchmark's JSON.
fn micro_figure(
    bench: &str,
    j: &serde_json::Value,
    scale: &Option<ScaleResults>,
) -> (String, String) {
    match bench {
        "enumerate" => (
            format!(
                "{} paths enumerated with WWIDs in {} median (min {}), peak RSS {:.0} MiB, load {:.1}",
                num(j, "paths").unwrap_or(0.0),
                num(j, "median_s").map_or("?".into(), fmt_s),
                num(j, "min_s").map_or("?".into(), fmt_s),
                num(j, "peak_rss_kb").unwrap_or(0.0) / 1024.0,
                num(j, "load_avg_1m").unwrap_or(f64::NAN)
            ),
            "< 1 s".into(),
        ),
        crate::failover::BENCH => crate::failover::figure(j),
        crate::dmevents::BENCH => crate::dmevents::figure(j),
        "parse_render" => (
            format!(
                "{} tables parsed + rendered in {} (statuses: parse {}, render {})",
                num(j, "tables").unwrap_or(0.0),
                num(j, "table_parse_render_s").map_or("?".into(), fmt_s),
                num(j, "status_parse_s").map_or("?".into(), fmt_s),
                num(j, "status_render_s").map_or("?".into(), fmt_s)
            ),
            "".into(),
        ),
        "allocate" => (
            format!(
                "{} allocations: one durable transaction each {:.0} µs/alloc; one batch {}",
                num(j, "count").unwrap_or(0.0),
                num(j, "durable_each.per_alloc_us").unwrap_or(f64::NAN),
                num(j, "batched.total_s").map_or("?".into(), fmt_s)
            ),
            "".into(),
        ),
        "cold_start" => {
            let own = ["median_s", "cold_start_s", "total_s", "seconds"]
                .iter()
                .find_map(|k| num(j, k));
            let from_curve = scale.as_ref().and_then(|s| {
                s.points
                    .iter()
                    .find(|p| p.paths == 32768 && p.per_lun == 8)
                    .and_then(|p| p.cold_start)
            });
            (
                format!(
                    "4096 LUNs x 8 paths: {}{}",
                    own.map_or("see its JSON".into(), fmt_s),
                    from_curve
                        .map(|s| format!(" (scale curve: {})", fmt_s(s.median)))
                        .unwrap_or_default()
                ),
                "< 2 s".into(),
            )
        }
        "converge" => {
            let per: Vec<String> = j
                .get("results")
                .and_then(|r| r.as_array())
                .map(|rs| {
                    rs.iter()
                        .map(|r| {
                            let t = |k: &str| num(r, k).map_or("?".into(), fmt_s);
                            let checks = r.get("one_name_per_wwid") == Some(&true.into())
                                && r.get("every_table_agrees") == Some(&true.into());
                            format!(
                                "{}: {:.0} allocations/s, to every host p50 {} / p99 {} / max {}{}",
                                r.get("registry").and_then(|v| v.as_str()).unwrap_or("?"),
                                num(r, "allocations_per_s").unwrap_or(f64::NAN),
                                t("to_every_host_p50_s"),
                                t("to_every_host_p99_s"),
                                t("to_every_host_max_s"),
                                if checks { "" } else { " (TABLES DISAGREE)" }
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let skipped = j
                .get("etcd_skipped")
                .and_then(|v| v.as_str())
                .map(|w| format!("; etcd not measured: {w}"))
                .unwrap_or_default();
            (
                format!(
                    "{} hosts, {} LUNs named by {} hosts at once: {}{skipped}; load {:.1}",
                    num(j, "hosts").unwrap_or(0.0),
                    num(j, "luns").unwrap_or(0.0),
                    num(j, "allocating_hosts").unwrap_or(1.0),
                    per.join("; "),
                    num(j, "load_avg_1m").unwrap_or(f64::NAN)
                ),
                "< 1 s from an allocation to every host (p99)".into(),
            )
        }
        _ => {
            // Unknown shape: list its top-level numbers.
            let mut parts = Vec::new();
            if let Some(m) = j.as_object() {
                for (k, v) in m {
                    if let Some(x) = v.as_f64() {
                        parts.push(format!("{k} {x:.4}"));
                    } else if let Some(obj) = v.as_object() {
                        for (k2, v2) in obj {
                            if let Some(x) = v2.as_f64() {
                                parts.push(format!("{k}.{k2} {x:.4}"));
                            }
                        }
                    }
                }
            }
            parts.truncate(8);
            (parts.join(", "), "".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_utc(1_795_305_600 + 3661), "2026-11-22 01:01:01 UTC");
    }

    const OLD: &str = "# Benchmarks\n\nintro\n\n## Machine\n\n| | |\n|---|---|\n\
        | report written | old |\n| host kernel | 6.1 |\n| lab guest kernel | 6.1 TCG |\n\n\
        ## Headline\n\n- Cold start, 4096 LUNs x 8 paths: **1.05 s**\n\
        - cold start: multipathd-rs 1 s vs multipath-tools 2 s (ratio 0.50)\n\n\
        ## Scale curve (generated sysfs, simulated device-mapper)\n\nRun 2026-11-22; curve\n\n\
        ## Real kernel, side by side with multipath-tools (lab VM)\n\nRun 2026-11-22; lab\n\n\
        ## Micro-benchmarks (`cargo bench`, each crate's `benches/`)\n\n\
        | benchmark | figure | target | results written |\n|---|---|---|---|\n\
        | aliases `allocate` | 10 allocations | | 2026-11-22 01:55:12 UTC |\n\n\
        <details><summary>Raw</summary>\n\n`aliases allocate`:\n\n```json\n{\n  \"count\": 10\n}\n```\n\n\
        </details>\n\n## Reproduce\n\nold\n";

    #[test]
    fn a_section_without_results_keeps_its_previous_text_and_headline() {
        let new = "# Benchmarks\n\nintro\n\n## Machine\n\n| | |\n|---|---|\n\
            | report written | new |\n| host kernel | 6.18 |\n\n## Headline\n\n\
            - No section has results yet.\n\n\
            ## Scale curve (generated sysfs, simulated device-mapper)\n\nNot run yet.\n\n\
            ## Real kernel, side by side with multipath-tools (lab VM)\n\nNot run yet (`--no-lab`).\n\n\
            ## Micro-benchmarks (`cargo bench`, each crate's `benches/`)\n\nnew micro\n\n\
            ## Reproduce\n\nnew\n";
        let out = keep_previous(new, OLD, false, false);
        assert!(
            out.contains(
                "| report written | new |\n| host kernel | 6.18 |\n| lab guest kernel | 6.1 TCG |\n"
            ),
            "{out}"
        );
        assert!(out.contains("Run 2026-11-22; curve"), "{out}");
        assert!(out.contains("Run 2026-11-22; lab"), "{out}");
        assert!(
            out.contains("new micro") && !out.contains("10 allocations"),
            "{out}"
        );
        assert!(out.contains("## Headline\n\n- Cold start, 4096 LUNs x 8 paths: **1.05 s**\n- cold start: multipathd-rs 1 s"), "{out}");
        assert!(!out.contains("No section has results yet"), "{out}");
        assert!(!out.contains(NOT_RUN), "{out}");
        // With every section's results, nothing of the old report survives.
        let fresh = "# Benchmarks\n\n## Headline\n\n- Largest point, new\n\n## Reproduce\n\nnew\n";
        assert_eq!(keep_previous(fresh, OLD, true, true), fresh);
        // Fresh lab lines replace the old ones; the scale line is kept, first.
        let lab_only = "## Headline\n\n- fail idle: new\n\n";
        assert_eq!(
            keep_previous(lab_only, OLD, false, true),
            "## Headline\n\n- Cold start, 4096 LUNs x 8 paths: **1.05 s**\n- fail idle: new\n\n"
        );
    }

    #[test]
    fn a_micro_benchmark_without_json_keeps_its_previous_figures() {
        let mut m = MicroResults {
            date: "now".into(),
            results: ["allocate", "converge"]
                .iter()
                .map(|b| crate::micro::MicroResult {
                    package: if *b == "allocate" {
                        "aliases"
                    } else {
                        "hostsync"
                    }
                    .into(),
                    bench: (*b).into(),
                    ran: false,
                    written: None,
                    json: None,
                    error: Some("not written".into()),
                })
                .collect(),
        };
        m = fill_micro_from(m, Some(OLD));
        let a = &m.results[0];
        assert_eq!(a.json, Some(serde_json::json!({"count": 10})));
        assert_eq!(a.written.as_deref(), Some("2026-11-22 01:55:12 UTC"));
        assert!(a.error.is_none() && !a.ran);
        // Nothing to keep for a benchmark the old report did not have.
        assert!(m.results[1].json.is_none());
        assert!(m.results[1].error.is_some());
    }

    #[test]
    fn converge_figure_names_every_backend_and_the_target() {
        let j = serde_json::json!({
            "hosts": 100, "luns": 1000, "allocating_hosts": 4, "load_avg_1m": 2.0,
            "etcd_skipped": null,
            "results": [
                {"registry": "local", "allocations_per_s": 990.0, "to_every_host_p50_s": 0.04,
                 "to_every_host_p99_s": 0.086, "to_every_host_max_s": 0.09,
                 "one_name_per_wwid": true, "every_table_agrees": true},
                {"registry": "etcd, 1 member", "allocations_per_s": 156.0, "to_every_host_p50_s": 0.0037,
                 "to_every_host_p99_s": 0.035, "to_every_host_max_s": 0.068,
                 "one_name_per_wwid": true, "every_table_agrees": false}
            ]
        });
        let (fig, target) = micro_figure("converge", &j, &None);
        assert!(fig.starts_with("100 hosts, 1000 LUNs named by 4 hosts at once: local: 990 allocations/s, to every host p50 40.0 ms / p99 86.0 ms / max 90.0 ms; etcd, 1 member: 156"), "{fig}");
        assert!(fig.contains("(TABLES DISAGREE)"), "{fig}");
        assert_eq!(fig.matches("(TABLES DISAGREE)").count(), 1, "{fig}");
        assert!(target.contains("< 1 s"));
    }

    #[test]
    fn the_lab_section_shows_idle_cpu_in_its_unit_and_the_targets_with_verdicts() {
        let m = |metric: &str, tool: &str, v: f64| lab::Measurement {
            metric: metric.into(),
            tool: tool.into(),
            rep: 1,
            seconds: Some(v),
            error: None,
        };
        let mut ms = vec![
            m("cold_start_256", lab::OURS, 2.0),
            m("cold_start_256", lab::THEIRS, 40.0),
            m("idle_cpu", lab::OURS, 0.0123),
            m("idle_cpu", lab::THEIRS, 0.0456),
        ];
        ms.extend((0..10).map(|i| m("fail_idle", lab::OURS, if i == 9 { 1.3 } else { 0.5 })));
        let labr = LabResults {
            date: "today".into(),
            reps: 3,
            guest_kernel: None,
            qemu: None,
            runs: vec![lab::ScenarioRun {
                scenario: "91-bench-coldstart".into(),
                lab_status: "PASS".into(),
                wall_s: 600.0,
                ran: None,
                error: None,
                file: Some(lab::ScenarioFile {
                    scenario: "91-bench-coldstart".into(),
                    topology: "scsi_debug 2 hosts x 256 LUNs".into(),
                    reps: 1,
                    kernel: String::new(),
                    multipath_tools: String::new(),
                    profile: vec!["multipathd-rs rep 1: scan 1.0 s, apply 44 s".into()],
                    measurements: ms,
                }),
            }],
        };
        let dir = crate::Scratch::new(&std::env::temp_dir(), "bench-report-test").unwrap();
        let md = dir.path().join("BENCHMARKS.md");
        let inputs = Inputs {
            lab: Some(labr),
            ..Inputs::default()
        };
        write(&inputs, &md, &dir.path().join("docs")).unwrap();
        let o = std::fs::read_to_string(&md).unwrap();
        assert!(
            o.contains("| 0.012 CPU s/s | 0.046 CPU s/s | 0.27 |"),
            "{o}"
        );
        assert!(o.contains("| <= 0.1 | met |"), "{o}");
        assert!(o.contains("0.500 s over 10 | <= 0.6 s | met |"), "{o}");
        assert!(o.contains("| 1.300 s | <= 1 s | NOT met |"), "{o}");
        assert!(
            o.contains("`91-bench-coldstart` (scsi_debug 2 hosts x 256 LUNs): PASS"),
            "{o}"
        );
        // the scenario's profile follows its run, one line each
        assert!(
            o.contains("repetition(s)\n  - multipathd-rs rep 1: scan 1.0 s, apply 44 s\n"),
            "{o}"
        );
        assert!(
            o.contains("- Target (issue 18, lab): idle path offline"),
            "{o}"
        );
    }

    #[test]
    fn peak_rss_per_path_is_judged_at_8_and_2_paths_per_lun() {
        let point = |per_lun: usize, mib: f64| {
            let mut p = PointResult::not_measured(32768, per_lun, String::new());
            p.skipped = None;
            p.peak_rss_mib = Some(Summary {
                median: mib,
                min: mib,
                max: mib,
                n: 1,
            });
            p
        };
        let mut scale = crate::scale::ScaleResults {
            date: "d".into(),
            runs_per_point: 1,
            tree_fs: "tmpfs".into(),
            points: vec![point(8, 120.0), point(2, 180.0)],
            malloc_env: Default::default(),
        };
        let line = rss_per_path_line(&scale).unwrap();
        assert_eq!(
            line,
            "- Peak RSS per path at cold start (issue 18, target <= 4 KiB): 4096 LUNs x 8: 3.75 \
             KiB/path (**met**); 16384 LUNs x 2: 5.62 KiB/path (**NOT met**)."
        );
        assert!(headline_from_scale(&line));
        // with the runs' high-water marks, a miss says where the peak is reached
        scale.points[1].runs = vec![
            serde_json::from_value(serde_json::json!({
                "paths": 32768, "per_lun": 2, "luns": 16384, "scan_s": 1.0, "plan_s": 0.1,
                "create_s": 1.0, "cold_start_s": 2.0, "maps_created": 16384,
                "peak_rss_kb": 180 * 1024, "rss_before_kb": 0, "hwm_after_scan_kb": 60 * 1024,
                "hwm_after_plan_kb": 61 * 1024
            }))
            .unwrap(),
        ];
        let line = rss_per_path_line(&scale).unwrap();
        assert!(
            line.ends_with(
                "16384 LUNs x 2: 5.62 KiB/path (**NOT met**: 61 MiB after discovery and planning, \
                 180 MiB at the end of map creation, which also holds the simulated kernel's \
                 tables of its 16384 maps)."
            ),
            "{line}"
        );
        scale.points.clear();
        assert_eq!(rss_per_path_line(&scale), None);
    }

    #[test]
    fn seconds_read_well() {
        assert_eq!(fmt_s(12.34), "12.3 s");
        assert_eq!(fmt_s(0.0123), "12.3 ms");
        assert_eq!(fmt_s(0.000_012), "12 µs");
    }
}

#[test]
fn the_cold_start_headline_gives_its_verdict_and_where_the_time_went() {
    use crate::scale::{CpuSplit, PointResult, PointRun};
    let run = |cold: f64| PointRun {
        paths: 32768,
        per_lun: 8,
        luns: 4096,
        scan_s: cold - 0.5,
        plan_s: 0.1,
        create_s: 0.5,
        cold_start_s: cold,
        maps_created: 4096,
        peak_rss_kb: 80 * 1024,
        rss_before_kb: 0,
        hwm_after_scan_kb: 0,
        hwm_after_plan_kb: 0,
        scan_cpu: CpuSplit {
            user_s: 0.6,
            sys_s: 2.4,
        },
        create_cpu: CpuSplit {
            user_s: 0.4,
            sys_s: 0.1,
        },
    };
    let mut p = PointResult::not_measured(32768, 8, String::new());
    p.runs = vec![run(2.5), run(2.0), run(3.0)];
    p.cold_start = Summary::of(&[2.5, 2.0, 3.0]);
    let line = cold_start_line(&p);
    assert!(line.contains("(target < 2 s: **NOT met**)"), "{line}");
    assert!(
        line.contains("discovery 2.00 s (80% of the start), 3.00 CPU-s (1.5 cores busy), 80% of it in the kernel"),
        "{line}"
    );
    assert!(line.contains("map creation 500"), "{line}");
    p.cold_start = Summary::of(&[1.5]);
    assert!(cold_start_line(&p).contains("**met**"));
    // results saved before the CPU split was recorded: the figure without a profile
    for r in &mut p.runs {
        r.scan_cpu = CpuSplit::default();
    }
    assert!(!cold_start_line(&p).contains("Profile"));
}
