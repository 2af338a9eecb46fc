//! Benchmark: failover latency of the running daemon (socket, loop, checker pool, snapshot)
//! on the simulated SAN: 4096 LUNs x 8 paths (32,768 paths, 2 FC HBAs x 4 target ports), a
//! generated sysfs tree in /dev/shm and the in-memory sim backend. Writes
//! target/bench/multipathd-rs-failover-latency.json and prints it. Targets (issue 18):
//!
//! - HBA loss: half the paths go transport-offline at once (the HBA's remote ports Blocked);
//!   time until every one of them is failed in the backend: < 1 s.
//! - One idle path goes offline while `rescan` of every host runs: time to fail it: < 1 s.
//! - One idle path goes offline while 64 clients loop on `show paths --json`: < 1 s.
//! - Daemon CPU per second when nothing happens (after the check intervals settled), and the
//!   sweep thread's pass at this size (wall time and the thread's CPU time).
//! - Peak RSS per path: < 4 KiB.
//!
//! "Failed in the backend" is the moment the sim backend accepted the `fail_path` message
//! for the path (a wrapper records it), checked against the map's status at the end.
//! MULTIPATHD_BENCH_LUNS changes the LUN count, MULTIPATHD_BENCH_REPS the repetitions of
//! the single-path figures (default 5). MULTIPATHD_BENCH_PHASES (a comma-separated list of
//! `hba`, `rescan`, `show`, `idle`; default all) runs only those phases, for iterating on one
//! figure: the others are null in the JSON.
//!
//! The daemon runs in this process, so the process runs under the glibc malloc settings the
//! daemon's systemd unit gives it (contrib/multipathd-rs.service, `Environment=MALLOC_...`):
//! the benchmark re-executes itself once with those that are not set already.
//! MULTIPATHD_BENCH_GLIBC_DEFAULTS=1 measures glibc's defaults instead.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aliases::StorePaths;
use dm_tables::{DevNo, DmBackend, MapInfo, Message, MultipathTable, RemoveMode, SimBackend};
use lun_scan::topology::{Sim, Topology};
use multipathd_rs::clock::SystemClock;
use multipathd_rs::config::Config;
use multipathd_rs::daemon::{self, DaemonOptions};
use multipathd_rs::engine::{Engine, EngineOptions};
use multipathd_rs::socket::{self, Command, Format};

/// The sim backend, recording when each path was last failed and reinstated.
struct Recording {
    inner: SimBackend,
    failed: Mutex<HashMap<DevNo, Instant>>,
    reinstated: Mutex<HashMap<DevNo, Instant>>,
}

/// The engine's handle on the [`Recording`] backend the benchmark also reads.
struct Shared(Arc<Recording>);

impl DmBackend for Shared {
    fn list(&self) -> dm_tables::Result<Vec<MapInfo>> {
        self.0.inner.list()
    }
    fn info(&self, name: &str) -> dm_tables::Result<MapInfo> {
        self.0.inner.info(name)
    }
    fn create(&self, name: &str, uuid: &str, t: &MultipathTable) -> dm_tables::Result<MapInfo> {
        self.0.inner.create(name, uuid, t)
    }
    fn reload(&self, name: &str, t: &MultipathTable) -> dm_tables::Result<()> {
        self.0.inner.reload(name, t)
    }
    fn table_line(&self, name: &str) -> dm_tables::Result<String> {
        self.0.inner.table_line(name)
    }
    fn status_line(&self, name: &str) -> dm_tables::Result<String> {
        self.0.inner.status_line(name)
    }
    fn message(&self, name: &str, msg: &Message) -> dm_tables::Result<()> {
        self.0.inner.message(name, msg)?;
        let now = Instant::now();
        match msg {
            Message::FailPath(d) => {
                self.0.failed.lock().unwrap().insert(*d, now);
            }
            Message::ReinstatePath(d) => {
                self.0.reinstated.lock().unwrap().insert(*d, now);
            }
            _ => {}
        }
        Ok(())
    }
    fn rename(&self, old: &str, new: &str) -> dm_tables::Result<()> {
        self.0.inner.rename(old, new)
    }
    fn remove(&self, name: &str, mode: RemoveMode) -> dm_tables::Result<dm_tables::Removed> {
        self.0.inner.remove(name, mode)
    }
    fn wait_event(&self, name: &str, nr: u32, timeout: Duration) -> dm_tables::Result<Option<u32>> {
        self.0.inner.wait_event(name, nr, timeout)
    }
    // The daemon waits for dm events as it does on the kernel (not the 200 ms fallback).
    fn event_numbers(&self) -> dm_tables::Result<dm_tables::EventNumbers> {
        self.0.inner.event_numbers()
    }
    fn event_source(&self) -> dm_tables::Result<Box<dyn dm_tables::EventSource>> {
        self.0.inner.event_source()
    }
}

fn status_kb(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// utime + stime of this process in clock ticks (USER_HZ = 100).
fn cpu_ticks() -> u64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = s.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// Resets this process's peak RSS (VmHWM) so the next phase's own peak can be read.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The peak RSS since the last [`reset_peak`], in KiB, under `phase` in `peaks`.
fn note_peak(peaks: &mut Vec<(&'static str, u64)>, phase: &'static str) {
    let kb = status_kb("VmHWM:").unwrap_or(0);
    eprintln!("peak RSS during {phase}: {} MiB", kb / 1024);
    peaks.push((phase, kb));
    reset_peak();
}

/// The `MALLOC_*` variables of the daemon's systemd unit (`Environment=` lines).
fn unit_malloc_env() -> Vec<(String, String)> {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/multipathd-rs.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Environment="))
        .flat_map(str::split_whitespace)
        .filter_map(|kv| kv.trim_matches('"').split_once('='))
        .filter(|(k, _)| k.starts_with("MALLOC_"))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The unit's `LimitNOFILE=` (the hard limit; `soft:hard` gives both), if it sets one.
fn unit_nofile() -> Option<u64> {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/multipathd-rs.service");
    let text = std::fs::read_to_string(&unit).ok()?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("LimitNOFILE="))
        .next_back()
        .and_then(|v| v.rsplit(':').next()?.trim().parse().ok())
}

/// Gives this process the unit's open-file limit (as systemd would the daemon), when it may
/// (raising the hard limit needs root); otherwise runs under the limit it has, and the report
/// says which (`nofile_limit`, `nofile_unit`).
fn under_unit_nofile() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (Some(want), Ok((soft, hard))) = (unit_nofile(), getrlimit(Resource::RLIMIT_NOFILE)) else {
        return;
    };
    if hard >= want {
        return;
    }
    if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, soft.max(want.min(1024)), want) {
        eprintln!(
            "cannot give the benchmark the unit's LimitNOFILE={want} ({e}); it runs with {hard}"
        );
    }
}

/// Re-executes the benchmark with the unit's malloc settings that the environment lacks
/// (glibc reads them at the process's first allocation); returns when none is missing.
fn under_unit_malloc_env() {
    if std::env::var_os("MULTIPATHD_BENCH_GLIBC_DEFAULTS").is_some() {
        return;
    }
    let missing: Vec<(String, String)> = unit_malloc_env()
        .into_iter()
        .filter(|(k, _)| std::env::var_os(k).is_none())
        .collect();
    if missing.is_empty() {
        return;
    }
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(std::env::args_os().skip(1))
        .envs(missing)
        .status()
        .unwrap();
    std::process::exit(status.code().unwrap_or(1));
}

fn load_avg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn devno_of(sim: &Sim, dev: &str) -> DevNo {
    let text = std::fs::read_to_string(sim.root.join("class/block").join(dev).join("dev"))
        .or_else(|_| std::fs::read_to_string(sim.root.join("block").join(dev).join("dev")))
        .unwrap();
    text.trim().parse().unwrap()
}

/// Polls until `done` holds or `limit` passes; returns whether it held.
fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    done()
}

/// Removes the trees of earlier runs that were killed before they could (`multipathd-failover-
/// <pid>-*` of a process that is gone): one holds 2.7 GB of /dev/shm at 32,768 paths.
fn remove_stale_trees(base: &Path) {
    let Ok(dir) = std::fs::read_dir(base) else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("multipathd-failover-"))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!(
                "removing the tree of a killed run: {}",
                entry.path().display()
            );
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether MULTIPATHD_BENCH_PHASES asks for `phase` (all phases when it is unset).
fn want(phase: &str) -> bool {
    std::env::var("MULTIPATHD_BENCH_PHASES")
        .map_or(true, |v| v.split(',').any(|p| p.trim() == phase))
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

struct Bench {
    sim: Sim,
    rec: Arc<Recording>,
    socket: PathBuf,
}

impl Bench {
    /// Takes `dev` offline and returns the seconds until the backend failed it (None: not
    /// within 30 s), then brings it back and waits for its reinstatement.
    fn fail_one(&mut self, dev: &str) -> Option<f64> {
        let d = devno_of(&self.sim, dev);
        let t0 = Instant::now();
        self.sim.set_state(dev, "offline").unwrap();
        let ok = wait_for(Duration::from_secs(30), || {
            self.rec
                .failed
                .lock()
                .unwrap()
                .get(&d)
                .is_some_and(|t| *t >= t0)
        });
        let took = self.rec.failed.lock().unwrap().get(&d).map(|t| *t - t0);
        let t1 = Instant::now();
        self.sim.set_state(dev, "running").unwrap();
        wait_for(Duration::from_secs(30), || {
            self.rec
                .reinstated
                .lock()
                .unwrap()
                .get(&d)
                .is_some_and(|t| *t >= t1)
        });
        ok.then(|| took.map(|t| t.as_secs_f64())).flatten()
    }
}

/// Set (to the socket) in the child process that runs the 64 `show paths --json` clients.
const CLIENTS_ENV: &str = "MULTIPATHD_BENCH_SHOW_CLIENTS_OF";

/// Client mode: 64 threads loop on `show paths --json` until stdin closes, then the number of
/// answers received is printed.
fn show_clients(socket: PathBuf) {
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..64)
        .map(|_| {
            let s = socket.clone();
            let stop = stop.clone();
            let answered = answered.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let c = Command::ShowPaths {
                        format: Format::Json,
                    };
                    if let Ok(r) = socket::request_with_timeout(&s, &c, Duration::from_secs(60))
                        && r.status == socket::Status::Ok
                    {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    println!("{}", answered.load(Ordering::Relaxed));
}

fn main() {
    if let Some(s) = std::env::var_os(CLIENTS_ENV) {
        show_clients(PathBuf::from(s));
        return;
    }
    under_unit_malloc_env();
    under_unit_nofile();
    let luns: u32 = std::env::var("MULTIPATHD_BENCH_LUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096);
    let reps: usize = std::env::var("MULTIPATHD_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let base = {
        let shm = PathBuf::from("/dev/shm");
        if shm.is_dir() {
            shm
        } else {
            std::env::temp_dir()
        }
    };
    remove_stale_trees(&base);
    let tmp = tempfile::Builder::new()
        .prefix(&format!("multipathd-failover-{}-", std::process::id()))
        .tempdir_in(&base)
        .unwrap();
    let topo = Topology::big_fc(2, 4, luns);
    let paths = topo.path_count();
    let t = Instant::now();
    let sim = Sim::render(&topo, &tmp.path().join("sys")).unwrap();
    eprintln!(
        "rendered {paths} paths in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let rss_base_kb = status_kb("VmRSS:").unwrap_or(0);
    // The process's peak over the whole run, then each phase's own peak.
    let mut peaks: Vec<(&'static str, u64)> = Vec::new();
    let rec = Arc::new(Recording {
        inner: SimBackend::new(),
        failed: Mutex::new(HashMap::new()),
        reinstated: Mutex::new(HashMap::new()),
    });
    let opts = EngineOptions {
        config_path: None,
        sysfs_root: sim.root.clone(),
        store_paths: StorePaths {
            table: Some(tmp.path().join("aliases.toml")),
            ..StorePaths::default()
        },
        checker_override: Some("sysfs".into()),
    };
    let engine = Engine::new(
        Config::builtin(),
        opts,
        Box::new(Shared(rec.clone())),
        Arc::new(SystemClock),
    )
    .unwrap();
    let sock = tmp.path().join("daemon.sock");
    let t = Instant::now();
    let handle = daemon::start(
        engine,
        Arc::new(SystemClock),
        DaemonOptions {
            socket: sock.clone(),
            uevents: false,
            tick: Duration::from_millis(200),
        },
    )
    .unwrap();
    let d = handle.daemon().clone();
    let ready_s = t.elapsed().as_secs_f64();
    // Every path checked once (the first pass checks them all).
    let all_checked = wait_for(Duration::from_secs(120), || {
        d.published()
            .snapshot
            .status
            .as_ref()
            .is_some_and(|s| s.checker.ready as usize == paths)
    });
    let first_checks_s = t.elapsed().as_secs_f64();
    eprintln!(
        "daemon ready in {ready_s:.2} s, every path checked after {first_checks_s:.2} s ({all_checked})"
    );
    let whole_peak_so_far = status_kb("VmHWM:").unwrap_or(0);
    note_peak(
        &mut peaks,
        "start (initial sync, first check of every path)",
    );
    // The read snapshot the loop publishes (every 250 ms while anything changes), built
    // under the engine lock: its time is time the loop does not handle a failure. Five are
    // kept alive to see what one costs in memory (the growth of RSS over five, divided).
    let (snapshot_s, snapshot_kb) = {
        let mut times = Vec::new();
        let rss0 = status_kb("VmRSS:").unwrap_or(0);
        let mut held = Vec::new();
        for _ in 0..5 {
            let e = d.engine();
            let t = Instant::now();
            let snap = e.snapshot();
            times.push(t.elapsed().as_secs_f64());
            drop(e);
            held.push(snap);
        }
        let kb = status_kb("VmRSS:").unwrap_or(0).saturating_sub(rss0) / 5;
        drop(held);
        (median(&mut times), kb)
    };
    eprintln!("one snapshot: {snapshot_s:?} s, about {snapshot_kb} KiB");
    // What one `show paths --json` answer weighs (the 64 clients' answer, rendered once per
    // snapshot and shared).
    let show_paths_json_bytes = socket::request_with_timeout(
        &sock,
        &Command::ShowPaths {
            format: Format::Json,
        },
        Duration::from_secs(60),
    )
    .map_or(0, |r| r.body.len());
    let mut b = Bench {
        sim,
        rec,
        socket: sock,
    };

    // ---- HBA loss: every path of one host transport-offline, its remote ports Blocked.
    let host = b.sim.paths[0].hctl.host;
    let lost: Vec<DevNo> = b
        .sim
        .present_paths()
        .filter(|p| p.hctl.host == host)
        .map(|p| devno_of(&b.sim, &p.dev))
        .collect();
    let (write_s, all_failed, hba_loss_s, failed_in_status, all_back, hba_return_s) = if want("hba")
    {
        std::thread::sleep(Duration::from_secs(2));
        let t0 = Instant::now();
        b.sim.host_down(&format!("host{host}")).unwrap();
        let write_s = t0.elapsed().as_secs_f64();
        let all_failed = wait_for(Duration::from_secs(60), || {
            let f = b.rec.failed.lock().unwrap();
            lost.iter().all(|d| f.get(d).is_some_and(|t| *t >= t0))
        });
        let hba_loss_s = {
            let f = b.rec.failed.lock().unwrap();
            lost.iter()
                .filter_map(|d| f.get(d))
                .max()
                .map(|t| (*t - t0).as_secs_f64())
        };
        // Checked against the kernel's (sim's) own statuses.
        let failed_in_status: usize = b
            .rec
            .inner
            .list()
            .unwrap()
            .iter()
            .map(|m| {
                b.rec
                    .inner
                    .status(&m.name)
                    .map(|s| {
                        s.groups
                            .iter()
                            .flat_map(|g| g.paths.iter())
                            .filter(|p| p.state == dm_tables::PathState::Failed)
                            .count()
                    })
                    .unwrap_or(0)
            })
            .sum();
        eprintln!(
            "HBA loss: {} paths failed in {:?} s (sim writes took {write_s:.2} s), {failed_in_status} failed in the statuses",
            lost.len(),
            hba_loss_s
        );
        let t1 = Instant::now();
        b.sim.host_up(&format!("host{host}")).unwrap();
        let all_back = wait_for(Duration::from_secs(120), || {
            let r = b.rec.reinstated.lock().unwrap();
            lost.iter().all(|d| r.get(d).is_some_and(|t| *t >= t1))
        });
        let hba_return_s = t1.elapsed().as_secs_f64();
        eprintln!("HBA back: reinstated in {hba_return_s:.2} s ({all_back})");
        note_peak(&mut peaks, "HBA loss and return");
        (
            write_s,
            all_failed,
            hba_loss_s,
            failed_in_status,
            all_back,
            hba_return_s,
        )
    } else {
        (f64::NAN, false, None, 0, false, f64::NAN)
    };

    // Idle paths to fail: one per map, spread over the maps, on the other host.
    let idle: Vec<String> = b
        .sim
        .present_paths()
        .filter(|p| p.hctl.host != host)
        .step_by(paths / 2 / reps.max(1) + 1)
        .map(|p| p.dev.clone())
        .take(reps)
        .collect();

    // ---- One idle path offline during a rescan of every host.
    let mut during_rescan = Vec::new();
    let mut rescan_s = Vec::new();
    for dev in idle.iter().filter(|_| want("rescan")) {
        let s = b.socket.clone();
        let t = Instant::now();
        let rescan = std::thread::spawn(move || {
            let r = socket::request_with_timeout(&s, &Command::Rescan, Duration::from_secs(300));
            (r.map(|r| r.status), t.elapsed().as_secs_f64())
        });
        // Into the rescan's scan (about a second at this size).
        std::thread::sleep(Duration::from_millis(150));
        if let Some(x) = b.fail_one(dev) {
            during_rescan.push(x);
        }
        let (status, took) = rescan.join().unwrap();
        rescan_s.push(took);
        eprintln!(
            "rescan {status:?} in {took:.2} s; {dev} failed after {:?}",
            during_rescan.last()
        );
    }

    if want("rescan") {
        note_peak(&mut peaks, "rescans of every host");
    }
    let mut during_show = Vec::new();
    let mut shows_per_s = f64::NAN;
    if want("show") {
        // ---- One idle path offline while 64 clients loop on `show paths --json`. The clients
        // are another process (this benchmark's binary in client mode), as real clients are: the
        // answers they hold do not count in the daemon's RSS.
        let mut clients = std::process::Command::new(std::env::current_exe().unwrap())
            .env(CLIENTS_ENV, &b.socket)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_secs(2));
        let ts = Instant::now();
        for dev in &idle {
            if let Some(x) = b.fail_one(dev) {
                during_show.push(x);
            }
            eprintln!(
                "under 64 show clients: {dev} failed after {:?}",
                during_show.last()
            );
        }
        let show_s = ts.elapsed().as_secs_f64();
        // Closing their stdin stops the clients; they print how many answers they got.
        drop(clients.stdin.take());
        let out = clients.wait_with_output().unwrap();
        let answered: f64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(f64::NAN);
        shows_per_s = answered / show_s;
        note_peak(&mut peaks, "64 show clients");
    }

    // ---- Idle: CPU per second once the check intervals have grown to their ceiling.
    let mut idle_cpu = f64::NAN;
    let mut sweeps = Vec::new();
    let mut sweep_cpu = Vec::new();
    let mut sweep = multipathd_rs::sweep::SweepStats::default();
    if want("idle") {
        std::thread::sleep(Duration::from_secs(25));
        let c0 = cpu_ticks();
        let ti = Instant::now();
        std::thread::sleep(Duration::from_secs(10));
        idle_cpu = (cpu_ticks() - c0) as f64 / 100.0 / ti.elapsed().as_secs_f64();
        // The sweep thread's pass (one pread of device/state per member path), as it reports it.
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(250));
            sweep = d.engine().status().sweep;
            sweeps.push(sweep.last_pass_us as f64 / 1e6);
            sweep_cpu.push(sweep.last_pass_cpu_us as f64 / 1e6);
        }
        note_peak(&mut peaks, "idle and sweeps");
    }
    let peak_rss_kb = peaks
        .iter()
        .map(|(_, kb)| *kb)
        .max()
        .unwrap_or(0)
        .max(whole_peak_so_far);
    handle.stop().unwrap();

    let single = |v: &mut Vec<f64>| {
        let max = v.iter().copied().fold(f64::NAN, f64::max);
        serde_json::json!({"median_s": median(v), "max_s": if max.is_nan() { None } else { Some(max) }, "runs": v.len(), "values_s": v})
    };
    let json = serde_json::json!({
        "benchmark": "multipathd-rs-failover-latency",
        "luns": luns,
        "paths": paths,
        "hba_loss": {
            "paths_lost": lost.len(),
            "all_failed": all_failed,
            "seconds": hba_loss_s,
            "sim_state_writes_s": write_s,
            "failed_in_kernel_status": failed_in_status,
            "return_all_reinstated": all_back,
            "return_s": hba_return_s,
            "target_s": 1.0,
        },
        "idle_path_during_rescan": {
            "rescan_s_median": median(&mut rescan_s.clone()),
            "target_s": 1.0,
            "fail": single(&mut during_rescan),
        },
        "idle_path_during_64_show_clients": {
            "shows_answered_per_s": shows_per_s,
            "target_s": 1.0,
            "fail": single(&mut during_show),
        },
        "idle_cpu_s_per_s": idle_cpu,
        "sweep_s_median": median(&mut sweeps),
        // The thread's CPU time in a pass: what spaces the passes (ten times it, at least).
        "sweep_cpu_s_median": median(&mut sweep_cpu),
        "sweep_thread": sweep,
        "nofile_limit": nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .ok()
            .map(|(soft, _)| soft),
        "nofile_unit": unit_nofile(),
        "snapshot_build_s_median": snapshot_s,
        "snapshot_kb": snapshot_kb,
        "show_paths_json_bytes": show_paths_json_bytes,
        "daemon_ready_s": ready_s,
        "first_check_of_every_path_s": first_checks_s,
        "peak_rss_kb": peak_rss_kb,
        "rss_before_daemon_kb": rss_base_kb,
        "peak_rss_per_path_kb": peak_rss_kb as f64 / paths as f64,
        "peak_rss_per_path_over_base_kb": peak_rss_kb.saturating_sub(rss_base_kb) as f64 / paths as f64,
        "rss_target_per_path_kb": 4.0,
        "load_avg_1m": load_avg(),
        // The glibc malloc settings in force (the unit's, unless overridden).
        "malloc_env": std::env::vars()
            .filter(|(k, _)| k.starts_with("MALLOC_"))
            .collect::<std::collections::BTreeMap<_, _>>(),
        "peak_rss_kb_by_phase": peaks.iter().map(|(p, kb)| serde_json::json!({"phase": p, "kb": kb, "per_path_kb": *kb as f64 / paths as f64})).collect::<Vec<_>>(),
    });
    let text = serde_json::to_string_pretty(&json).unwrap();
    println!("{text}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("multipathd-rs-failover-latency.json"), text + "\n").unwrap();
}
