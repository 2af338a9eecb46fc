//! Benchmark: dm ioctls per second of an idle daemon, before (every map's event number
//! compared every 200 ms by listing every map: 1 + N ioctls) and after (a thread waits on
//! the kernel's arm-poll interface; the loop compares only after an event, from one
//! DM_LIST_DEVICES). 4096 LUNs x 2 paths (4096 maps), a generated sysfs tree in /dev/shm,
//! the in-memory sim backend behind a wrapper that counts what each call costs on the
//! kernel backend (`list`: 1 + N, `event_numbers`: 1, every other call: 1; the waiting
//! thread's arm and listing: 1 each; its `poll` is no ioctl). Writes
//! target/bench/multipathd-rs-dm-events-idle.json and prints it. MULTIPATHD_BENCH_LUNS
//! changes the LUN count, MULTIPATHD_BENCH_IDLE_S the measured idle window (default 10 s).

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aliases::StorePaths;
use dm_tables::{
    DmBackend, EventNumbers, EventSource, MapInfo, Message, MultipathTable, RemoveMode, SimBackend,
};
use lun_scan::topology::{Sim, Topology};
use multipathd_rs::clock::SystemClock;
use multipathd_rs::config::Config;
use multipathd_rs::daemon::{self, DaemonOptions};
use multipathd_rs::engine::{Engine, EngineOptions};

/// Kernel ioctls the daemon's calls would have cost, by purpose.
#[derive(Default)]
struct Counts {
    /// Comparing event numbers: listings, the waiting thread's arm + listing.
    events: AtomicU64,
    /// Everything else (status/table reads after checks, messages, ...).
    other: AtomicU64,
}

/// The sim backend counting kernel-equivalent ioctls; `wait` false hides the event source
/// and lists every map for the event numbers, as the daemon did before.
struct Counting {
    inner: SimBackend,
    counts: Arc<Counts>,
    wait: bool,
}

impl Counting {
    fn other(&self) {
        self.counts.other.fetch_add(1, Ordering::Relaxed);
    }
}

struct CountingSource {
    inner: Box<dyn EventSource>,
    counts: Arc<Counts>,
}

impl EventSource for CountingSource {
    fn arm(&mut self) -> dm_tables::Result<()> {
        self.counts.events.fetch_add(1, Ordering::Relaxed);
        self.inner.arm()
    }
    fn event_numbers(&mut self) -> dm_tables::Result<EventNumbers> {
        self.counts.events.fetch_add(1, Ordering::Relaxed);
        self.inner.event_numbers()
    }
    fn wait(&mut self, timeout: Duration) -> dm_tables::Result<bool> {
        self.inner.wait(timeout)
    }
}

impl DmBackend for Counting {
    fn list(&self) -> dm_tables::Result<Vec<MapInfo>> {
        let l = self.inner.list()?;
        self.counts
            .other
            .fetch_add(1 + l.len() as u64, Ordering::Relaxed);
        Ok(l)
    }
    fn info(&self, name: &str) -> dm_tables::Result<MapInfo> {
        self.other();
        self.inner.info(name)
    }
    fn create(&self, name: &str, uuid: &str, t: &MultipathTable) -> dm_tables::Result<MapInfo> {
        self.other();
        self.inner.create(name, uuid, t)
    }
    fn reload(&self, name: &str, t: &MultipathTable) -> dm_tables::Result<()> {
        self.other();
        self.inner.reload(name, t)
    }
    fn table_line(&self, name: &str) -> dm_tables::Result<String> {
        self.other();
        self.inner.table_line(name)
    }
    fn status_line(&self, name: &str) -> dm_tables::Result<String> {
        self.other();
        self.inner.status_line(name)
    }
    fn message(&self, name: &str, msg: &Message) -> dm_tables::Result<()> {
        self.other();
        self.inner.message(name, msg)
    }
    fn rename(&self, old: &str, new: &str) -> dm_tables::Result<()> {
        self.other();
        self.inner.rename(old, new)
    }
    fn remove(&self, name: &str, mode: RemoveMode) -> dm_tables::Result<dm_tables::Removed> {
        self.other();
        self.inner.remove(name, mode)
    }
    fn wait_event(&self, name: &str, nr: u32, timeout: Duration) -> dm_tables::Result<Option<u32>> {
        self.inner.wait_event(name, nr, timeout)
    }
    fn event_numbers(&self) -> dm_tables::Result<EventNumbers> {
        let n = self.inner.event_numbers()?;
        let cost = if self.wait { 1 } else { 1 + n.len() as u64 };
        self.counts.events.fetch_add(cost, Ordering::Relaxed);
        Ok(n)
    }
    fn event_source(&self) -> dm_tables::Result<Box<dyn EventSource>> {
        if !self.wait {
            return Err(dm_tables::Error::EventsUnsupported {
                reason: "the benchmark's 'before' run lists every map".into(),
            });
        }
        Ok(Box::new(CountingSource {
            inner: self.inner.event_source()?,
            counts: self.counts.clone(),
        }))
    }
}

/// One idle daemon: returns (event ioctls/s, other ioctls/s, CPU s/s) over `window`.
fn idle(sim: &Sim, dir: &std::path::Path, wait: bool, window: Duration) -> serde_json::Value {
    let counts = Arc::new(Counts::default());
    let opts = EngineOptions {
        config_path: None,
        sysfs_root: sim.root.clone(),
        store_paths: StorePaths {
            table: Some(dir.join(format!("aliases-{wait}.toml"))),
            ..StorePaths::default()
        },
        checker_override: Some("sysfs".into()),
    };
    let backend = Counting {
        inner: SimBackend::new(),
        counts: counts.clone(),
        wait,
    };
    let engine = Engine::new(
        Config::builtin(),
        opts,
        Box::new(backend),
        Arc::new(SystemClock),
    )
    .unwrap();
    let h = daemon::start(
        engine,
        Arc::new(SystemClock),
        DaemonOptions {
            socket: dir.join(format!("d-{wait}.sock")),
            uevents: false,
            tick: Duration::from_millis(200),
        },
    )
    .unwrap();
    let paths = sim.paths.len();
    let d = h.daemon().clone();
    let t = Instant::now();
    let all_checked = || {
        d.published()
            .snapshot
            .status
            .as_ref()
            .is_some_and(|s| s.checker.ready as usize == paths)
    };
    while !all_checked() {
        assert!(t.elapsed() < Duration::from_secs(300), "first checks");
        std::thread::sleep(Duration::from_millis(50));
    }
    // settle: the first checks' results applied
    std::thread::sleep(Duration::from_secs(2));
    let (e0, o0, c0) = (
        counts.events.load(Ordering::Relaxed),
        counts.other.load(Ordering::Relaxed),
        cpu_ticks(),
    );
    let t0 = Instant::now();
    std::thread::sleep(window);
    let secs = t0.elapsed().as_secs_f64();
    let (e1, o1, c1) = (
        counts.events.load(Ordering::Relaxed),
        counts.other.load(Ordering::Relaxed),
        cpu_ticks(),
    );
    h.stop().unwrap();
    serde_json::json!({
        "event_ioctls_per_s": (e1 - e0) as f64 / secs,
        "other_ioctls_per_s": (o1 - o0) as f64 / secs,
        "cpu_s_per_s": (c1 - c0) as f64 / 100.0 / secs,
        "window_s": secs,
    })
}

/// utime + stime of this process in clock ticks (USER_HZ = 100).
fn cpu_ticks() -> u64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = s.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn main() {
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let luns = env("MULTIPATHD_BENCH_LUNS", 4096) as u32;
    let window = Duration::from_secs(env("MULTIPATHD_BENCH_IDLE_S", 10));
    let base = {
        let shm = PathBuf::from("/dev/shm");
        if shm.is_dir() {
            shm
        } else {
            std::env::temp_dir()
        }
    };
    let tmp = tempfile::Builder::new()
        .prefix("multipathd-dm-events-")
        .tempdir_in(&base)
        .unwrap();
    let topo = Topology::big_fc(2, 1, luns);
    let sim = Sim::render(&topo, &tmp.path().join("sys")).unwrap();
    let before = idle(&sim, tmp.path(), false, window);
    let after = idle(&sim, tmp.path(), true, window);
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok());
    let out = serde_json::json!({
        "maps": luns,
        "paths": topo.path_count(),
        "before": before,
        "after": after,
        "load_avg_1m": load,
    });
    let text = serde_json::to_string_pretty(&out).unwrap();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("multipathd-rs-dm-events-idle.json"), &text).unwrap();
    println!("{text}");
}
