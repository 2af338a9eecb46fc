#![allow(clippy::unwrap_used)]
//! The checker layer end to end on a simulated SAN (a sysfs tree with two HBAs), on a manual
//! clock: the driver runs the `sysfs` checker on schedule, the decisions turn results into
//! fail / reinstate / switch-group / queueing actions, applied to a model of the kernel.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use multipathd_rs::checker::CheckTarget;
use multipathd_rs::checker::sysfs::SysfsChecker;
use multipathd_rs::clock::{Clock, ManualClock};
use multipathd_rs::scheduler::IntervalPolicy;
use multipathd_rs::scheduler::driver::PathCheckDriver;
use multipathd_rs::scheduler::failover::{
    DmPathState, Failback, FailbackInput, FailbackState, GroupAction, GroupStatus, PathAction,
    path_action,
};
use multipathd_rs::scheduler::queueing::{NoPathRetry, QueueAction, QueueState};

const S: Duration = Duration::from_secs(1);
/// host0 paths are in group 0 (ALUA optimized, prio 50), host1 paths in group 1 (prio 10).
const PATHS: [(&str, &str, usize); 4] = [
    ("sda", "mpatha", 0),
    ("sdb", "mpathb", 0),
    ("sdc", "mpatha", 1),
    ("sdd", "mpathb", 1),
];

struct San {
    root: tempfile::TempDir,
    clock: Arc<ManualClock>,
    driver: PathCheckDriver,
    dm: HashMap<String, DmPathState>,
    usable: HashMap<String, bool>,
    active_group: HashMap<String, usize>,
    queue: HashMap<String, QueueState>,
    failback: HashMap<String, FailbackState>,
    /// (seconds since start, action)
    log: Vec<(u64, String)>,
}

impl San {
    fn new() -> San {
        let root = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new());
        let policy = IntervalPolicy::new(5 * S);
        let driver = PathCheckDriver::new(clock.clone(), policy, 8, 2 * S);
        let checker = Arc::new(SysfsChecker::new(root.path()));
        let mut san = San {
            root,
            clock,
            driver,
            dm: HashMap::new(),
            usable: HashMap::new(),
            active_group: HashMap::new(),
            queue: HashMap::new(),
            failback: HashMap::new(),
            log: Vec::new(),
        };
        for (dev, map, group) in PATHS {
            let access = if group == 0 {
                "active/optimized"
            } else {
                "active/non-optimized"
            };
            san.set(dev, "running", access);
            san.driver
                .add_path(CheckTarget::new(dev), map, checker.clone());
            san.dm.insert(dev.to_string(), DmPathState::Active);
            san.active_group.insert(map.to_string(), 0);
            san.queue.insert(
                map.to_string(),
                QueueState::new(NoPathRetry::Retries(3), policy.polling_interval, true),
            );
            san.failback.insert(map.to_string(), FailbackState::new());
        }
        san
    }

    fn set(&self, dev: &str, state: &str, access: &str) {
        let device = self.root.path().join("block").join(dev).join("device");
        std::fs::create_dir_all(&device).unwrap();
        std::fs::write(device.join("state"), format!("{state}\n")).unwrap();
        std::fs::write(device.join("access_state"), format!("{access}\n")).unwrap();
    }

    fn secs(&self) -> u64 {
        self.clock.elapsed().as_secs()
    }

    fn act(&mut self, what: String) {
        let at = self.secs();
        self.log.push((at, what));
    }

    /// One pass of the daemon loop at the current time.
    fn cycle(&mut self) {
        self.driver.start_due().unwrap();
        let mut updates = Vec::new();
        for _ in 0..200 {
            updates.extend(self.driver.collect(Duration::from_millis(20)));
            if PATHS
                .iter()
                .all(|(dev, _, _)| !self.driver.is_in_flight(dev))
            {
                break;
            }
        }
        // Results arrive in completion order; act in a stable order.
        updates.sort_by(|a, b| a.report.dev.cmp(&b.report.dev));
        let now = self.clock.now();
        for update in &updates {
            let dev = update.report.dev.clone();
            let state = update.report.result.state;
            if state != multipathd_rs::checker::CheckState::Pending {
                self.usable.insert(dev.clone(), state.is_usable());
            }
            match path_action(self.dm[&dev], state) {
                PathAction::FailPath => {
                    self.dm.insert(dev.clone(), DmPathState::Failed);
                    self.act(format!("fail_path {dev}"));
                }
                PathAction::ReinstatePath => {
                    self.dm.insert(dev.clone(), DmPathState::Active);
                    self.act(format!("reinstate_path {dev}"));
                }
                PathAction::Keep => {}
            }
        }
        self.decide_maps(now);
    }

    fn decide_maps(&mut self, now: Instant) {
        for map in ["mpatha", "mpathb"] {
            let mut groups = [
                GroupStatus {
                    priority: 50,
                    usable_paths: 0,
                },
                GroupStatus {
                    priority: 10,
                    usable_paths: 0,
                },
            ];
            for (dev, m, group) in PATHS {
                let ok = self.dm[dev] == DmPathState::Active
                    && self.usable.get(dev).copied().unwrap_or(false);
                if m == map && ok {
                    groups[group].usable_paths += 1;
                }
            }
            let usable: usize = groups.iter().map(|g| g.usable_paths).sum();
            match self.queue.get_mut(map).unwrap().update(usable, now) {
                Some(QueueAction::DisableQueueing) => self.act(format!("fail_if_no_path {map}")),
                Some(QueueAction::EnableQueueing) => self.act(format!("queue_if_no_path {map}")),
                None => {}
            }
            let input = FailbackInput {
                groups: &groups,
                active: self.active_group[map],
                first_path_returned_in: None,
            };
            let decision =
                self.failback
                    .get_mut(map)
                    .unwrap()
                    .decide(Failback::Immediate, input, now);
            if let GroupAction::SwitchGroup(group) = decision {
                self.active_group.insert(map.to_string(), group);
                self.act(format!("switch_group {map} {}", group + 1));
            }
        }
    }

    /// Runs the loop, waking exactly when the driver asks, for `span` of clock time.
    fn run_for(&mut self, span: Duration) {
        let end = self.clock.now() + span;
        loop {
            let wake = self.driver.next_wakeup().unwrap();
            if wake > end {
                self.clock.advance_to(end);
                return;
            }
            self.clock.advance_to(wake);
            self.cycle();
        }
    }

    fn take_log(&mut self) -> Vec<(u64, String)> {
        std::mem::take(&mut self.log)
    }
}

#[test]
fn hba_failure_no_path_retry_and_failback_on_the_simulated_san() {
    let mut san = San::new();
    san.cycle();
    san.run_for(60 * S);
    assert!(san.take_log().is_empty(), "healthy SAN: nothing to do");
    // Back-off: healthy paths are now checked every 20 s (4 x polling_interval).
    assert_eq!(san.driver.scheduler().get("sda").unwrap().interval, 20 * S);

    // HBA host1 dies (paths offline). Without an event, polling notices within 20 s.
    let t_fail = san.secs();
    san.set("sdc", "offline", "active/non-optimized");
    san.set("sdd", "offline", "active/non-optimized");
    san.run_for(20 * S);
    let log = san.take_log();
    let failed: BTreeMap<&str, u64> = log
        .iter()
        .filter_map(|(t, a)| a.strip_prefix("fail_path ").map(|d| (d, *t)))
        .collect();
    assert_eq!(failed.keys().copied().collect::<Vec<_>>(), ["sdc", "sdd"]);
    assert!(failed.values().all(|t| t - t_fail <= 20), "{log:?}");
    assert_eq!(
        log.len(),
        2,
        "no group or queueing change: host0 still serves {log:?}"
    );
    // A failed path is polled at the base interval again.
    assert_eq!(san.driver.scheduler().get("sdc").unwrap().interval, 5 * S);

    // The kernel fails sda on an I/O error (dm event): the map's paths are re-checked at
    // once, sda is failed without waiting for its 20 s interval.
    san.set("sda", "offline", "active/optimized");
    let t_event = san.secs();
    assert_eq!(san.driver.recheck_map("mpatha"), ["sda", "sdc"]);
    san.cycle();
    let log = san.take_log();
    assert_eq!(log, [(t_event, "fail_path sda".to_string())]);

    // mpatha has no usable path: no_path_retry 3 keeps queueing for 3 intervals, then stops.
    san.run_for(14 * S);
    assert!(san.take_log().is_empty());
    san.run_for(2 * S);
    let log = san.take_log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].1, "fail_if_no_path mpatha");
    assert!((15..=16).contains(&(log[0].0 - t_event)), "{log:?}");

    // host1 comes back; a uevent makes the daemon re-check its paths at once.
    san.set("sdc", "running", "active/non-optimized");
    san.set("sdd", "running", "active/non-optimized");
    let t_back = san.secs();
    san.driver.recheck_path("sdc");
    san.driver.recheck_path("sdd");
    san.cycle();
    let actions: Vec<String> = san
        .take_log()
        .into_iter()
        .map(|(t, a)| {
            assert_eq!(t, t_back);
            a
        })
        .collect();
    assert_eq!(
        actions,
        [
            "reinstate_path sdc",
            "reinstate_path sdd",
            "queue_if_no_path mpatha",
            "switch_group mpatha 2",
        ]
    );

    // sda returns: reinstated, and failback immediate moves mpatha back to group 1.
    san.set("sda", "running", "active/optimized");
    san.run_for(5 * S);
    let actions: Vec<String> = san.take_log().into_iter().map(|(_, a)| a).collect();
    assert_eq!(actions, ["reinstate_path sda", "switch_group mpatha 1"]);
}
