//! The benchmark suite: runs every benchmark and rewrites BENCHMARKS.md and docs/bench/*.svg.
//!
//! ```sh
//! cargo run --release -p bench                 # everything
//! cargo run --release -p bench -- --no-lab      # without the lab VM
//! cargo run --release -p bench -- --quick       # smoke mode (CI)
//! ```
//!
//! Sections: `scale` (generated sysfs + sim backend, 1k..64k paths), `lab` (real kernel in the
//! lab VM, side by side with multipath-tools), `micro` (the crates' `cargo bench` targets).
//! Each section saves its results as JSON (target/bench/bench-<section>.json; the lab's in
//! docs/bench/lab-results.json, in git); the report is written from the saved results, so `--only` reruns one section and keeps the others' last
//! figures (each shows its own date). `--quick` writes under target/bench/quick/ instead of the
//! repository, so a smoke run never replaces real figures.

mod dmevents;
mod failover;
mod lab;
mod micro;
mod report;
mod scale;
mod stats;
mod svg;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Parser, Debug)]
#[command(
    name = "bench",
    about = "Runs every benchmark and rewrites BENCHMARKS.md"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Smoke mode: smallest points, one run, no lab (unless --lab), no micro-benchmarks;
    /// writes under target/bench/quick/.
    #[arg(long)]
    quick: bool,
    /// Skip the lab VM (the report keeps the last saved lab results, with their date).
    #[arg(long)]
    no_lab: bool,
    /// With --quick: also run the lab scenarios once each.
    #[arg(long)]
    lab: bool,
    /// Runs per scale point and repetitions per lab figure (default 5; 1 with --quick).
    #[arg(long)]
    runs: Option<usize>,
    /// Run only these sections (comma-separated); the others keep their saved results.
    #[arg(long, value_delimiter = ',')]
    only: Vec<Section>,
    /// Do not rerun the micro-benchmarks: read the JSON their last `cargo bench` left.
    #[arg(long)]
    reuse_micro: bool,
    /// Micro: run only these benchmarks (`converge` or `hostsync/converge`, comma-separated);
    /// the others show the results their last run left.
    #[arg(long, value_delimiter = ',')]
    micro: Vec<String>,
    /// Scale curve: skip the larger sizes of a paths-per-LUN series once a point's median
    /// cold start exceeds this many seconds.
    #[arg(long, default_value_t = 20.0)]
    max_cold_start: f64,
    /// Scale curve: stop a run after this many seconds.
    #[arg(long, default_value_t = 120.0)]
    run_timeout: f64,
    /// Scale curve: start no further run of a point after this many seconds on it.
    #[arg(long, default_value_t = 180.0)]
    point_budget: f64,
    /// Lab: repetitions of the 16-new-LUNs scenario (default: --runs); each one adds and
    /// deletes 64 SCSI devices, which takes minutes under emulation.
    #[arg(long)]
    addluns_reps: Option<u32>,
    /// Lab: repetitions of the 256-LUN cold start and idle CPU (91); each starts both daemons
    /// on 512 paths, minutes under emulation.
    #[arg(long, default_value_t = 3)]
    coldstart_reps: u32,
    /// Lab: repetitions of the idle map's failover and reinstatement (92); issue 18's target
    /// is judged over 10.
    #[arg(long, default_value_t = 10)]
    fail_idle_reps: u32,
    /// Lab: seconds over which each daemon's idle CPU is measured (91).
    #[arg(long, default_value_t = 20)]
    idle_window: u32,
    /// Lab: seconds 91 may take in all (setup, calibration, both daemons); it measures at
    /// fewer LUNs than 256 when its calibration says 256 do not fit.
    #[arg(long, default_value_t = 1980)]
    coldstart_budget: u32,
    /// Lab: boot nothing, collect the results the last run of each scenario left in
    /// tests/lab/out (e.g. after running one by hand with tests/lab/run).
    #[arg(long)]
    collect: bool,
    /// Lab: run only these scenarios (names or number prefixes, comma-separated); the others
    /// keep their saved results.
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Scale sizes in paths (comma-separated), instead of 1k,4k,16k,32k,64k.
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<usize>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// (internal) one run of one scale point in this fresh process; prints JSON.
    Point {
        #[arg(long)]
        tree: PathBuf,
        #[arg(long)]
        paths: usize,
        #[arg(long)]
        per_lun: usize,
    },
    /// (internal) render a scale point's sysfs tree into DIR (which must not exist), to
    /// profile `bench point` on it by hand.
    Tree {
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        paths: usize,
        #[arg(long)]
        per_lun: usize,
    },
    /// Rewrite BENCHMARKS.md and the plots from the saved results only.
    Render,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Section {
    Scale,
    Lab,
    Micro,
}

/// A scratch directory removed on drop (tempfile is only a dev-dependency of this crate).
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    pub fn new(base: &Path, prefix: &str) -> Result<Scratch> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = base.join(format!("{prefix}-{}-{stamp}", std::process::id()));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Scratch { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A hard link to (or else a copy of) this executable, taken at start: cargo replaces
/// target/release/bench when it rebuilds it, and a child started from the replaced path would
/// be another build or nothing at all ("No such file or directory" once it is unlinked).
struct PinnedExe {
    path: PathBuf,
}

impl PinnedExe {
    fn new(dir: &Path) -> Result<PinnedExe> {
        let exe = std::env::current_exe().context("cannot find the bench executable")?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(format!(".bench-self-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        std::fs::hard_link(&exe, &path)
            .or_else(|_| std::fs::copy(&exe, &path).map(|_| ()))
            .with_context(|| format!("cannot pin {} as {}", exe.display(), path.display()))?;
        Ok(PinnedExe { path })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PinnedExe {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The workspace root: this package lives in `tests/bench/`.
fn workspace() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .nth(2)
        .map_or_else(|| here.clone(), Path::to_path_buf)
}

fn save<T: Serialize>(dir: &Path, name: &str, v: &T) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_string_pretty(v)? + "\n")
        .with_context(|| format!("cannot write {}", p.display()))
}

fn load<T: DeserializeOwned>(dir: &Path, name: &str) -> Option<T> {
    let text = std::fs::read_to_string(dir.join(name)).ok()?;
    match serde_json::from_str(&text) {
        Ok(v) => Some(v),
        Err(e) => {
            eprintln!(
                "bench: ignoring {} (unreadable, from an older bench?): {e}",
                dir.join(name).display()
            );
            None
        }
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(Cmd::Point {
        tree,
        paths,
        per_lun,
    }) = &cli.cmd
    {
        let r = scale::run_point(tree, *paths, *per_lun)?;
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    if let Some(Cmd::Tree {
        out,
        paths,
        per_lun,
    }) = &cli.cmd
    {
        let topo = scale::topology(*paths, *per_lun)?;
        lun_scan::topology::Sim::render(&topo, out)
            .with_context(|| format!("cannot generate {paths} paths in {}", out.display()))?;
        return Ok(());
    }
    let ws = workspace();
    let (results_dir, md, docs) = if cli.quick {
        let q = ws.join("target/bench/quick");
        (q.clone(), q.join("BENCHMARKS.md"), q.join("docs/bench"))
    } else {
        (
            ws.join("target/bench"),
            ws.join("BENCHMARKS.md"),
            ws.join("docs/bench"),
        )
    };
    let render_only = matches!(cli.cmd, Some(Cmd::Render));
    // The micro-benchmarks' `cargo bench` and the lab's `cargo build` rebuild this very binary
    // in place; the scale curve's children must still find it.
    let pinned = PinnedExe::new(&results_dir)?;
    let runs = cli.runs.unwrap_or(if cli.quick { 1 } else { 5 }).max(1);
    let wanted = |s: Section| !render_only && (cli.only.is_empty() || cli.only.contains(&s));

    if wanted(Section::Micro) && !cli.quick {
        if let Some(n) = cli
            .micro
            .iter()
            .find(|n| !micro::SPECS.iter().any(|s| s.is(n)))
        {
            anyhow::bail!("--micro {n}: no such micro-benchmark");
        }
        let m = micro::run_all(&ws, !cli.reuse_micro, &cli.micro);
        save(&results_dir, "bench-micro.json", &m)?;
    }
    if wanted(Section::Scale) {
        let sizes: Vec<usize> = if !cli.sizes.is_empty() {
            cli.sizes.clone()
        } else if cli.quick {
            vec![1024]
        } else {
            vec![1024, 4096, 16384, 32768, 65536]
        };
        let budget = scale::Budget {
            max_cold_start_s: cli.max_cold_start,
            run_timeout_s: cli.run_timeout,
            point_budget_s: cli.point_budget,
        };
        let s = scale::run_curve(
            pinned.path(),
            &sizes,
            &[2, 4, 8],
            runs,
            budget,
            &|partial| {
                let _ = save(&results_dir, "bench-scale.json", partial);
            },
        )?;
        save(&results_dir, "bench-scale.json", &s)?;
    }
    // The lab's results are kept in git (docs/bench/lab-results.json), not only under target/:
    // a lab run takes many minutes, and rerunning one scenario on another checkout must merge
    // with the other scenarios' figures. Results an older bench left in target/ are read if
    // there are none there yet.
    let (lab_dir, lab_name) = if cli.quick {
        (results_dir.clone(), "bench-lab.json")
    } else {
        (docs.clone(), "lab-results.json")
    };
    let load_lab = || {
        load::<lab::LabResults>(&lab_dir, lab_name).or_else(|| load(&results_dir, "bench-lab.json"))
    };
    let lab_on = if cli.quick { cli.lab } else { !cli.no_lab };
    if wanted(Section::Lab) && lab_on {
        let reps = u32::try_from(runs).unwrap_or(5);
        let params = lab::Params {
            reps,
            addluns_reps: cli.addluns_reps.unwrap_or(reps),
            coldstart_reps: if cli.quick { 1 } else { cli.coldstart_reps },
            fail_idle_reps: if cli.quick { 1 } else { cli.fail_idle_reps },
            idle_window_s: cli.idle_window,
            coldstart_budget_s: cli.coldstart_budget,
            collect_only: cli.collect,
        };
        let l = lab::run_all(&ws, params, &cli.scenarios);
        let l = if cli.scenarios.is_empty() {
            l
        } else {
            lab::merge(load_lab(), l)
        };
        save(&lab_dir, lab_name, &l)?;
    }

    let inputs = report::Inputs {
        machine: Some(report::machine()),
        scale: load(&results_dir, "bench-scale.json"),
        lab: load_lab(),
        micro: load(&results_dir, "bench-micro.json"),
        quick: cli.quick,
    };
    report::write(&inputs, &md, &docs)?;
    eprintln!(
        "bench: wrote {} and plots in {}",
        md.display(),
        docs.display()
    );
    Ok(())
}
