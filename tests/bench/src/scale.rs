//! The scale curve: generated sysfs trees (lun-scan's topology generator, 2 FC HBAs) with the
//! simulated device-mapper backend. Every run of every point is a fresh child process
//! (`bench point ...`), so its peak RSS is that point's alone.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use aliases::StorePaths;
use anyhow::{Context, Result, bail};
use dm_tables::SimBackend;
use lun_scan::topology::{Sim, Topology};
use multipathd_rs::clock::SystemClock;
use multipathd_rs::config::Config;
use multipathd_rs::discovery;
use multipathd_rs::engine::{Engine, EngineOptions};
use serde::{Deserialize, Serialize};

use crate::stats::Summary;

/// What one child process measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PointRun {
    pub paths: usize,
    pub per_lun: usize,
    pub luns: usize,
    /// `lun_scan::scan` through `Engine::scan` (discovery).
    pub scan_s: f64,
    /// Filtering, grouping by WWID, priorities, tables and plans for every map
    /// (`discovery::filter_paths`, `desired_map`, `plan_map`), no backend.
    pub plan_s: f64,
    /// The rest of a cold `Engine::sync` after the scan (`sync_wwids` over every WWID): plan,
    /// alias allocation (one durable batch), table load into the sim backend, state refresh.
    pub create_s: f64,
    /// scan_s + create_s: a daemon's cold start from nothing to every map present.
    pub cold_start_s: f64,
    pub maps_created: usize,
    pub peak_rss_kb: u64,
    pub rss_before_kb: u64,
    /// VmHWM at the end of discovery and at the end of planning (0 in older results): where
    /// in the cold start the peak is reached.
    #[serde(default)]
    pub hwm_after_scan_kb: u64,
    #[serde(default)]
    pub hwm_after_plan_kb: u64,
    /// The process's CPU (all threads) during discovery, split into user and kernel time, in
    /// CPU-seconds (0 in older results): the profile next to the cold-start figure.
    #[serde(default)]
    pub scan_cpu: CpuSplit,
    /// The same during map creation.
    #[serde(default)]
    pub create_cpu: CpuSplit,
}

/// CPU-seconds of this process (every thread) in user and kernel mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuSplit {
    pub user_s: f64,
    pub sys_s: f64,
}

impl CpuSplit {
    /// This process's CPU so far: utime and stime of /proc/self/stat, in the kernel's
    /// USER_HZ ticks (100 a second on Linux, whatever the kernel's own HZ). Zero if unreadable.
    pub fn now() -> CpuSplit {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        CpuSplit::parse(&stat).unwrap_or_default()
    }

    fn parse(stat: &str) -> Option<CpuSplit> {
        // The command name (field 2) may hold spaces; the fields after it follow its ')'.
        let rest = stat.rsplit_once(')')?.1;
        let mut f = rest.split_whitespace().skip(11); // field 14 is utime
        let user: u64 = f.next()?.parse().ok()?;
        let sys: u64 = f.next()?.parse().ok()?;
        Some(CpuSplit {
            user_s: user as f64 / 100.0,
            sys_s: sys as f64 / 100.0,
        })
    }

    /// CPU used between `earlier` and `self`.
    pub fn since(self, earlier: CpuSplit) -> CpuSplit {
        CpuSplit {
            user_s: (self.user_s - earlier.user_s).max(0.0),
            sys_s: (self.sys_s - earlier.sys_s).max(0.0),
        }
    }

    pub fn total_s(self) -> f64 {
        self.user_s + self.sys_s
    }

    /// The kernel's share of the total, 0..=1 (0 when nothing was used).
    pub fn sys_share(self) -> f64 {
        if self.total_s() > 0.0 {
            self.sys_s / self.total_s()
        } else {
            0.0
        }
    }
}

fn status_kb(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// The topology of a point: `paths / per_lun` LUNs behind 2 FC HBAs with `per_lun / 2` target
/// ports each.
pub fn topology(paths: usize, per_lun: usize) -> Result<Topology> {
    if per_lun < 2 || !per_lun.is_multiple_of(2) || !paths.is_multiple_of(per_lun) {
        bail!("{paths} paths cannot be split into LUNs of {per_lun} paths over 2 HBAs");
    }
    let luns = u32::try_from(paths / per_lun).context("too many LUNs")?;
    Ok(Topology::big_fc(2, per_lun / 2, luns))
}

/// The child: measures one run on an already generated tree and returns what it saw.
pub fn run_point(tree: &Path, paths: usize, per_lun: usize) -> Result<PointRun> {
    let luns = paths / per_lun;
    let scratch = crate::Scratch::new(&std::env::temp_dir(), "mpbench-aliases")?;
    let devices = dm_tables::devices_from_sysfs(tree)
        .with_context(|| format!("cannot list the block devices of {}", tree.display()))?;
    // The peak RSS from here on is this run's (the tree listing above is small).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss_before_kb = status_kb("VmRSS:");
    let opts = EngineOptions {
        config_path: None,
        sysfs_root: tree.to_path_buf(),
        store_paths: StorePaths {
            table: Some(scratch.path().join("aliases.toml")),
            ..StorePaths::default()
        },
        checker_override: Some("sysfs".into()),
    };
    let mut engine = Engine::new(
        Config::builtin(),
        opts,
        Box::new(SimBackend::with_devices(devices)),
        Arc::new(SystemClock),
    )?;

    let cpu0 = CpuSplit::now();
    let t = Instant::now();
    let errors = engine.scan();
    let scan_s = t.elapsed().as_secs_f64();
    let scan_cpu = CpuSplit::now().since(cpu0);
    if !errors.is_empty() {
        bail!(
            "the scan of {} reported: {}",
            tree.display(),
            errors.join("; ")
        );
    }
    if engine.paths().len() != paths {
        bail!(
            "the scan found {} paths in {}, expected {paths}",
            engine.paths().len(),
            tree.display()
        );
    }

    let hwm_after_scan_kb = status_kb("VmHWM:");

    let t = Instant::now();
    let (planned, wwids) = plan_every_map(&engine)?;
    let plan_s = t.elapsed().as_secs_f64();
    let hwm_after_plan_kb = status_kb("VmHWM:");
    if planned != luns {
        bail!("planning gave {planned} maps for {luns} LUNs");
    }

    let cpu0 = CpuSplit::now();
    let t = Instant::now();
    let report = engine.sync_wwids(&wwids)?;
    let create_s = t.elapsed().as_secs_f64();
    let create_cpu = CpuSplit::now().since(cpu0);
    if !report.errors.is_empty() {
        bail!("the sync reported: {}", report.errors.join("; "));
    }
    let maps_created = report.changed();
    if maps_created != luns || engine.backend().list()?.len() != luns {
        bail!("the sync created {maps_created} maps for {luns} LUNs");
    }
    Ok(PointRun {
        paths,
        per_lun,
        luns,
        scan_s,
        plan_s,
        create_s,
        cold_start_s: scan_s + create_s,
        maps_created,
        peak_rss_kb: status_kb("VmHWM:"),
        rss_before_kb,
        hwm_after_scan_kb,
        hwm_after_plan_kb,
        scan_cpu,
        create_cpu,
    })
}

/// The planning phase on its own (no backend): how many maps plan without error, and the
/// WWIDs to create. Its own data (the filtered paths, one plan at a time) is dropped before it
/// returns, so the map creation that follows is measured without it: the daemon's cold start
/// never holds it (its sync plans again), and at 16384 LUNs x 2 paths it was 2.6 MB of the
/// peak.
fn plan_every_map(engine: &Engine) -> Result<(usize, BTreeSet<String>)> {
    let cfg = engine.config();
    let detect = cfg.global().detect_prio.value;
    let filtered = discovery::filter_paths(cfg, engine.paths(), &|_: &str| false);
    let mut planned = 0usize;
    let mut wwids = BTreeSet::new();
    for (i, (wwid, ps)) in filtered.by_wwid.iter().enumerate() {
        let d = discovery::desired_map(cfg, detect, wwid, ps, &|p| p.is_running())
            .map_err(|reason| anyhow::anyhow!("no map for WWID {wwid}: {reason}"))?;
        let plan = discovery::plan_map(d, None, &format!("mpath{i}"), None);
        planned += usize::from(plan.error.is_none());
        wwids.insert(wwid.clone());
    }
    Ok((planned, wwids))
}

/// One point of the curve over its runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PointResult {
    pub paths: usize,
    pub per_lun: usize,
    pub luns: usize,
    pub generate_s: f64,
    pub runs: Vec<PointRun>,
    pub scan: Option<Summary>,
    pub plan: Option<Summary>,
    pub create: Option<Summary>,
    pub cold_start: Option<Summary>,
    pub peak_rss_mib: Option<Summary>,
    /// Why runs failed, if any did.
    pub errors: Vec<String>,
    /// Why this point was not measured (time budget), if it was not.
    #[serde(default)]
    pub skipped: Option<String>,
}

impl PointResult {
    /// A point that was not measured, saying why (too slow a series, no tree).
    pub(crate) fn not_measured(paths: usize, per_lun: usize, why: String) -> PointResult {
        PointResult {
            paths,
            per_lun,
            luns: paths / per_lun,
            generate_s: 0.0,
            runs: Vec::new(),
            scan: None,
            plan: None,
            create: None,
            cold_start: None,
            peak_rss_mib: None,
            errors: Vec::new(),
            skipped: Some(why),
        }
    }
}

/// Time limits that keep a full run within about an hour on a loaded 2-core machine.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Larger sizes of a paths-per-LUN series are skipped once a point's median cold start
    /// exceeds this.
    pub max_cold_start_s: f64,
    /// A child still running after this is killed (the run counts as failed).
    pub run_timeout_s: f64,
    /// No further run of a point starts after this much time was spent on it.
    pub point_budget_s: f64,
}

/// Runs one child with a timeout; its stdout on success.
fn run_child(
    exe: &Path,
    tree: &Path,
    (paths, per_lun): (usize, usize),
    env: &std::collections::BTreeMap<String, String>,
    timeout_s: f64,
) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut child = Command::new(exe)
        .envs(env)
        .arg("point")
        .arg("--tree")
        .arg(tree)
        .arg("--paths")
        .arg(paths.to_string())
        .arg("--per-lun")
        .arg(per_lun.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start a benchmark child: {e}"))?;
    let t = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if t.elapsed().as_secs_f64() > timeout_s => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("a run took over {timeout_s:.0} s and was stopped"));
            }
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(50)),
            Err(e) => return Err(format!("cannot wait for the benchmark child: {e}")),
        }
    };
    let mut out = Vec::new();
    let mut err = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_end(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    if status.success() {
        Ok(out)
    } else {
        Err(format!("the run failed ({status}): {}", err.trim()))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScaleResults {
    pub date: String,
    pub runs_per_point: usize,
    pub tree_fs: String,
    pub points: Vec<PointResult>,
    /// The glibc malloc settings the children ran with (the daemon unit's `MALLOC_*`).
    #[serde(default)]
    pub malloc_env: std::collections::BTreeMap<String, String>,
}

/// The `MALLOC_*` settings of the daemon's systemd unit (`Environment=` lines of
/// contrib/multipathd-rs.service), which the scale children run with: the peak RSS per path is
/// the daemon's as it is deployed (with one arena per thread, glibc's default, the 256
/// concurrent creates of a cold start leave memory in up to 16 arenas, and the peak varies by
/// half with the load). A setting already in the bench's own environment wins.
pub fn unit_malloc_env(workspace: &Path) -> std::collections::BTreeMap<String, String> {
    let unit = workspace.join("contrib/multipathd-rs.service");
    let text = std::fs::read_to_string(&unit).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Environment="))
        .flat_map(str::split_whitespace)
        .filter_map(|kv| kv.trim_matches('"').split_once('='))
        .filter(|(k, _)| k.starts_with("MALLOC_"))
        .map(|(k, v)| {
            let v = std::env::var(k).unwrap_or_else(|_| v.to_string());
            (k.to_string(), v)
        })
        .collect()
}

/// Where the trees are generated. A 64k-path tree needs about 3.2 million inodes, more than
/// /dev/shm allows by default, and on disk it takes minutes to write and to delete. So: a
/// private tmpfs without an inode limit when this process may mount one (root), unmounted
/// (instantly emptied) at the end; else /dev/shm; else the temp dir.
struct TreeFs {
    base: PathBuf,
    mounted: bool,
}

/// The private tree tmpfs mounts in `mounts` (`/proc/self/mounts` text) under `tmp` whose
/// bench process is gone (`alive(pid)` false): a bench killed before its [`TreeFs`] was
/// dropped leaves its tmpfs, gigabytes of memory, mounted.
fn stale_tree_mounts(mounts: &str, tmp: &Path, alive: impl Fn(u32) -> bool) -> Vec<PathBuf> {
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (src, dir, fstype) = (f.next()?, f.next()?, f.next()?);
            if src != "mpbench" || fstype != "tmpfs" {
                return None;
            }
            let dir = Path::new(dir);
            let pid: u32 = dir
                .strip_prefix(tmp)
                .ok()?
                .to_str()?
                .strip_prefix("mpbench-tmpfs-")?
                .parse()
                .ok()?;
            (!alive(pid)).then(|| dir.to_path_buf())
        })
        .collect()
}

impl TreeFs {
    /// Unmounts the trees of bench processes that were killed (see [`stale_tree_mounts`]).
    fn unmount_stale() {
        let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
            return;
        };
        let tmp = std::env::temp_dir();
        for dir in stale_tree_mounts(&mounts, &tmp, |pid| {
            Path::new("/proc").join(pid.to_string()).exists()
        }) {
            match nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH) {
                Ok(()) => {
                    let _ = std::fs::remove_dir(&dir);
                    eprintln!(
                        "bench: unmounted {}, left by a bench that was killed",
                        dir.display()
                    );
                }
                Err(e) => eprintln!("bench: cannot unmount the stale {}: {e}", dir.display()),
            }
        }
    }

    fn new() -> TreeFs {
        Self::unmount_stale();
        let mnt = std::env::temp_dir().join(format!("mpbench-tmpfs-{}", std::process::id()));
        let mounted = std::fs::create_dir_all(&mnt).is_ok()
            && nix::mount::mount(
                Some("mpbench"),
                &mnt,
                Some("tmpfs"),
                nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
                Some("size=90%,nr_inodes=0,mode=0700"),
            )
            .map_err(|e| eprintln!("bench: no private tmpfs for the trees ({e}); using /dev/shm"))
            .is_ok();
        if mounted {
            return TreeFs {
                base: mnt,
                mounted: true,
            };
        }
        let _ = std::fs::remove_dir(&mnt);
        let shm = PathBuf::from("/dev/shm");
        TreeFs {
            base: if shm.is_dir() {
                shm
            } else {
                std::env::temp_dir()
            },
            mounted: false,
        }
    }

    fn describe(&self) -> String {
        if self.mounted {
            "a private tmpfs without an inode limit (in memory, like sysfs)".into()
        } else if self.base == Path::new("/dev/shm") {
            "/dev/shm (in memory, like sysfs)".into()
        } else {
            format!("{} (on disk)", self.base.display())
        }
    }
}

impl Drop for TreeFs {
    fn drop(&mut self) {
        if self.mounted {
            if let Err(e) = nix::mount::umount2(&self.base, nix::mount::MntFlags::MNT_DETACH) {
                eprintln!("bench: cannot unmount {}: {e}", self.base.display());
                return;
            }
            let _ = std::fs::remove_dir(&self.base);
        }
    }
}

/// Generates each point's tree once, runs `runs` children (`exe point ...`) on it, removes it.
/// `save` is called after every point with the results so far, so a run stopped early keeps
/// what it measured.
pub fn run_curve(
    exe: &Path,
    sizes: &[usize],
    per_luns: &[usize],
    runs: usize,
    budget: Budget,
    save: &dyn Fn(&ScaleResults),
) -> Result<ScaleResults> {
    let tree_fs = TreeFs::new();
    let base = tree_fs.base.clone();
    let mut points = Vec::new();
    let mut too_slow: std::collections::HashMap<usize, String> = Default::default();
    let malloc_env = unit_malloc_env(&crate::workspace());
    let snapshot = |points: &Vec<PointResult>| ScaleResults {
        date: crate::report::now_utc(),
        runs_per_point: runs,
        tree_fs: tree_fs.describe(),
        points: points.clone(),
        malloc_env: malloc_env.clone(),
    };
    for &paths in sizes {
        for &per_lun in per_luns {
            if let Some(why) = too_slow.get(&per_lun) {
                points.push(PointResult::not_measured(paths, per_lun, why.clone()));
                continue;
            }
            let topo = topology(paths, per_lun)?;
            let t = Instant::now();
            // /dev/shm may run out of inodes for the largest trees: fall back to the temp dir.
            let generated = generate(&topo, &base).or_else(|e| {
                eprintln!("bench: {e:#}; trying {}", std::env::temp_dir().display());
                generate(&topo, &std::env::temp_dir())
            });
            let dir = match generated {
                Ok(d) => d,
                Err(e) => {
                    let why = format!("not measured: the tree could not be generated: {e:#}");
                    points.push(PointResult::not_measured(paths, per_lun, why.clone()));
                    too_slow.insert(per_lun, why);
                    save(&snapshot(&points));
                    continue;
                }
            };
            let generate_s = t.elapsed().as_secs_f64();
            eprintln!("bench: scale {paths} paths x{per_lun}: tree generated in {generate_s:.1} s");
            let mut rs = Vec::new();
            let mut errors = Vec::new();
            let started = Instant::now();
            for i in 0..runs {
                if i > 0 && started.elapsed().as_secs_f64() > budget.point_budget_s {
                    errors.push(format!(
                        "{i} of {runs} runs: the point's time budget of {:.0} s was used up",
                        budget.point_budget_s
                    ));
                    break;
                }
                let out = match run_child(
                    exe,
                    dir.path(),
                    (paths, per_lun),
                    &malloc_env,
                    budget.run_timeout_s,
                ) {
                    Ok(o) => o,
                    Err(e) => {
                        eprintln!("bench: run {} of {paths}x{per_lun} failed: {e}", i + 1);
                        errors.push(e);
                        continue;
                    }
                };
                match serde_json::from_slice::<PointRun>(&out) {
                    Ok(r) => {
                        eprintln!(
                            "bench:   run {}: scan {:.3} s, plan {:.3} s, create {:.3} s, peak RSS {} MiB",
                            i + 1,
                            r.scan_s,
                            r.plan_s,
                            r.create_s,
                            r.peak_rss_kb / 1024
                        );
                        rs.push(r);
                    }
                    Err(e) => errors.push(format!("unreadable child output: {e}")),
                }
            }
            let col = |f: fn(&PointRun) -> f64| Summary::of(&rs.iter().map(f).collect::<Vec<_>>());
            let cold_start = col(|r| r.cold_start_s);
            match cold_start {
                Some(c) if c.median > budget.max_cold_start_s => {
                    too_slow.insert(per_lun, format!(
                        "not measured: at {paths} paths the cold start already took {:.0} s (over the \
                         {:.0} s budget per point), so the larger sizes would take far longer",
                        c.median, budget.max_cold_start_s
                    ));
                }
                None => {
                    too_slow.insert(
                        per_lun,
                        format!("not measured: no run at {paths} paths succeeded"),
                    );
                }
                _ => {}
            }
            points.push(PointResult {
                paths,
                per_lun,
                luns: paths / per_lun,
                generate_s,
                scan: col(|r| r.scan_s),
                plan: col(|r| r.plan_s),
                create: col(|r| r.create_s),
                cold_start,
                peak_rss_mib: col(|r| r.peak_rss_kb as f64 / 1024.0),
                runs: rs,
                errors,
                skipped: None,
            });
            drop(dir);
            save(&snapshot(&points));
        }
    }
    points.sort_by_key(|p| (p.paths, p.per_lun));
    Ok(ScaleResults {
        date: crate::report::now_utc(),
        runs_per_point: runs,
        tree_fs: tree_fs.describe(),
        points,
        malloc_env,
    })
}

/// Renders a topology into a fresh directory under `base`.
fn generate(topo: &Topology, base: &Path) -> Result<crate::Scratch> {
    let dir = crate::Scratch::new(base, "mpbench-tree")?;
    Sim::render(topo, dir.path()).with_context(|| {
        format!(
            "cannot generate {} paths in {}",
            topo.path_count(),
            base.display()
        )
    })?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_tree_mounts_of_dead_benches_are_stale() {
        let mounts = "mpbench /tmp/mpbench-tmpfs-3668 tmpfs rw,nosuid,nodev 0 0\n\
                      mpbench /tmp/mpbench-tmpfs-42 tmpfs rw 0 0\n\
                      tmpfs /tmp/mpbench-tmpfs-7 tmpfs rw 0 0\n\
                      mpbench /other/mpbench-tmpfs-9 tmpfs rw 0 0\n\
                      mpbench /tmp/mpbench-tmpfs-x tmpfs rw 0 0\n\
                      proc /proc proc rw 0 0\n";
        let stale = stale_tree_mounts(mounts, Path::new("/tmp"), |pid| pid == 42);
        assert_eq!(stale, vec![PathBuf::from("/tmp/mpbench-tmpfs-3668")]);
    }

    #[test]
    fn cpu_split_reads_utime_and_stime_after_the_command_name() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 3 0";
        let c = CpuSplit::parse(stat).unwrap();
        assert_eq!(
            c,
            CpuSplit {
                user_s: 2.5,
                sys_s: 0.37
            }
        );
        assert!((c.sys_share() - 0.37 / 2.87).abs() < 1e-9);
        let burnt = {
            let t = Instant::now();
            let mut x = 0u64;
            while t.elapsed().as_millis() < 300 {
                x = x.wrapping_add(std::hint::black_box(1));
            }
            x
        };
        assert!(burnt > 0);
        assert!(CpuSplit::now().total_s() > 0.1, "{:?}", CpuSplit::now());
    }

    #[test]
    fn topology_splits_paths_over_two_hbas() {
        let t = topology(1024, 8).unwrap();
        assert_eq!(t.path_count(), 1024);
        assert_eq!(topology(1024, 2).unwrap().path_count(), 1024);
        assert!(topology(1000, 3).is_err());
    }

    #[test]
    fn a_small_point_creates_one_map_per_lun() {
        let dir = crate::Scratch::new(&std::env::temp_dir(), "mpbench-test").unwrap();
        Sim::render(&topology(64, 4).unwrap(), dir.path()).unwrap();
        let r = run_point(dir.path(), 64, 4).unwrap();
        assert_eq!((r.luns, r.maps_created), (16, 16));
        assert!(r.peak_rss_kb > 0 && r.cold_start_s >= r.scan_s);
        // The high-water marks of the phases are read in order, so they never decrease.
        assert!(r.hwm_after_scan_kb > 0);
        assert!(r.hwm_after_scan_kb <= r.hwm_after_plan_kb);
        assert!(r.hwm_after_plan_kb <= r.peak_rss_kb);
    }
}

#[test]
fn the_children_get_the_daemon_units_malloc_settings() {
    let env = unit_malloc_env(&crate::workspace());
    assert!(env.contains_key("MALLOC_ARENA_MAX"), "{env:?}");
    assert!(env.keys().all(|k| k.starts_with("MALLOC_")), "{env:?}");
}
