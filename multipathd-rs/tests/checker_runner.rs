#![allow(clippy::unwrap_used)]
//! The check runner: a hung path never delays the others, is reported as timed out once at its
//! deadline (manual clock), is never checked twice at the same time, and its late answer is
//! still delivered.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use multipathd_rs::checker::runner::{CheckReport, CheckRunner, Submit};
use multipathd_rs::checker::{CheckResult, CheckState, CheckTarget, PathChecker};
use multipathd_rs::clock::{Clock, ManualClock};

/// Answers Up at once, except for `hung_dev`, whose check blocks until the gate opens.
struct FakeChecker {
    hung_dev: String,
    gate: Arc<(Mutex<bool>, Condvar)>,
    calls: Mutex<HashMap<String, usize>>,
}

impl FakeChecker {
    fn new(hung_dev: &str) -> Arc<Self> {
        Arc::new(FakeChecker {
            hung_dev: hung_dev.to_string(),
            gate: Arc::new((Mutex::new(false), Condvar::new())),
            calls: Mutex::new(HashMap::new()),
        })
    }

    fn open_gate(&self) {
        let (lock, cvar) = &*self.gate;
        *lock.lock().unwrap() = true;
        cvar.notify_all();
    }

    fn calls(&self, dev: &str) -> usize {
        self.calls.lock().unwrap().get(dev).copied().unwrap_or(0)
    }
}

impl PathChecker for FakeChecker {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn check(&self, target: &CheckTarget) -> CheckResult {
        *self
            .calls
            .lock()
            .unwrap()
            .entry(target.dev.clone())
            .or_default() += 1;
        if target.dev == self.hung_dev {
            let (lock, cvar) = &*self.gate;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cvar.wait(open).unwrap();
            }
            return CheckResult::new(CheckState::Up, "came back");
        }
        CheckResult::new(CheckState::Up, "fine")
    }
}

/// Collects reports until `want` of them arrived (bounded by a generous real-time limit that
/// is only reached if the runner is broken).
fn collect(runner: &mut CheckRunner, want: usize) -> Vec<CheckReport> {
    let mut got = Vec::new();
    for _ in 0..200 {
        got.extend(runner.wait(Duration::from_millis(50)));
        if got.len() >= want {
            break;
        }
    }
    got
}

#[test]
fn hung_path_does_not_delay_others_and_times_out_once() {
    let clock = Arc::new(ManualClock::new());
    let mut runner = CheckRunner::new(clock.clone(), 16);
    let checker = FakeChecker::new("sdb");
    let timeout = Duration::from_secs(5);
    for dev in ["sda", "sdb", "sdc"] {
        let submitted = runner
            .submit(checker.clone(), CheckTarget::new(dev), timeout)
            .unwrap();
        assert_eq!(submitted, Submit::Started);
    }

    // sda and sdc answer while sdb hangs, without any clock movement.
    let mut reports = collect(&mut runner, 2);
    reports.sort_by(|a, b| a.dev.cmp(&b.dev));
    let devs: Vec<&str> = reports.iter().map(|r| r.dev.as_str()).collect();
    assert_eq!(devs, ["sda", "sdc"]);
    assert!(
        reports
            .iter()
            .all(|r| r.result.state == CheckState::Up && !r.timed_out)
    );
    assert!(runner.is_in_flight("sdb"));

    // A second check of the hung path is not started.
    let again = runner
        .submit(checker.clone(), CheckTarget::new("sdb"), timeout)
        .unwrap();
    assert_eq!(again, Submit::AlreadyInFlight);

    // Before the deadline: nothing. At the deadline: one Timeout report, then no repeats.
    clock.advance(Duration::from_millis(4999));
    assert!(runner.poll().is_empty());
    clock.advance(Duration::from_millis(1));
    let timed_out = runner.poll();
    assert_eq!(timed_out.len(), 1);
    assert_eq!(timed_out[0].dev, "sdb");
    assert_eq!(timed_out[0].result.state, CheckState::Timeout);
    assert!(timed_out[0].timed_out && !timed_out[0].late);
    assert_eq!(timed_out[0].finished - timed_out[0].started, timeout);
    clock.advance(Duration::from_secs(60));
    assert!(runner.poll().is_empty(), "timeout is reported once");
    assert_eq!(
        runner
            .submit(checker.clone(), CheckTarget::new("sdb"), timeout)
            .unwrap(),
        Submit::AlreadyInFlight
    );

    // The path's check finally returns: its late answer is delivered and the slot frees.
    checker.open_gate();
    let late = collect(&mut runner, 1);
    // Counted after the answer: the worker may enter the hung check late on a loaded box.
    assert_eq!(checker.calls("sdb"), 1);
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].dev, "sdb");
    assert!(late[0].late);
    assert_eq!(late[0].result.state, CheckState::Up);
    assert!(!runner.is_in_flight("sdb"));
    assert_eq!(
        runner
            .submit(checker.clone(), CheckTarget::new("sdb"), timeout)
            .unwrap(),
        Submit::Started
    );
    let fresh = collect(&mut runner, 1);
    assert_eq!(fresh.len(), 1);
    assert!(!fresh[0].late && !fresh[0].timed_out);
    assert_eq!(checker.calls("sdb"), 2);
}

#[test]
fn bounded_number_of_checks_in_flight() {
    let clock = Arc::new(ManualClock::new());
    let mut runner = CheckRunner::new(clock.clone(), 1);
    let checker = FakeChecker::new("sda");
    let timeout = Duration::from_secs(5);
    assert_eq!(
        runner
            .submit(checker.clone(), CheckTarget::new("sda"), timeout)
            .unwrap(),
        Submit::Started
    );
    assert_eq!(
        runner
            .submit(checker.clone(), CheckTarget::new("sdb"), timeout)
            .unwrap(),
        Submit::Busy
    );
    assert_eq!(runner.next_deadline(), Some(clock.now() + timeout));
    checker.open_gate();
    assert_eq!(collect(&mut runner, 1).len(), 1);
    assert_eq!(
        runner
            .submit(checker.clone(), CheckTarget::new("sdb"), timeout)
            .unwrap(),
        Submit::Started
    );
    assert_eq!(collect(&mut runner, 1)[0].dev, "sdb");
    assert!(runner.in_flight().next().is_none());
}

#[test]
fn wait_returns_at_once_when_idle() {
    let clock = Arc::new(ManualClock::new());
    let mut runner = CheckRunner::new(clock, 4);
    assert!(runner.wait(Duration::from_secs(3600)).is_empty());
}

#[test]
fn driver_never_spins_on_a_hung_path() {
    use multipathd_rs::scheduler::IntervalPolicy;
    use multipathd_rs::scheduler::driver::PathCheckDriver;

    let clock = Arc::new(ManualClock::new());
    let policy = IntervalPolicy::new(Duration::from_secs(5));
    let mut driver = PathCheckDriver::new(clock.clone(), policy, 8, Duration::from_secs(2));
    let checker = FakeChecker::new("sdb");
    driver.add_path(CheckTarget::new("sda"), "m", checker.clone());
    driver.add_path(CheckTarget::new("sdb"), "m", checker.clone());
    assert_eq!(driver.start_due().unwrap(), 2);
    let mut updates = Vec::new();
    for _ in 0..200 {
        updates.extend(driver.collect(Duration::from_millis(20)));
        if !updates.is_empty() {
            break;
        }
    }
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].report.dev, "sda");
    assert_eq!(updates[0].map, "m");
    // The next wake-up is sdb's check deadline, not "now" (no busy loop on the in-flight path).
    assert_eq!(
        driver.next_wakeup(),
        Some(clock.now() + Duration::from_secs(2))
    );
    assert_eq!(driver.start_due().unwrap(), 0);

    // A check's deadline runs from when a worker starts it (before it calls the checker):
    // under load sdb's may still be queued when sda's result is in.
    let t = std::time::Instant::now();
    while checker.calls("sdb") == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "sdb's check never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    clock.advance(Duration::from_secs(2));
    let timeout = driver.collect(Duration::from_millis(1));
    assert_eq!(timeout.len(), 1);
    assert_eq!(timeout[0].report.result.state, CheckState::Timeout);
    // Due again after polling_interval; still hung, so it is skipped, not re-run.
    clock.advance(Duration::from_secs(5));
    assert_eq!(driver.start_due().unwrap(), 1, "only sda is checked again");
    assert!(driver.next_wakeup().unwrap() > clock.now());
    checker.open_gate();
    let mut late = Vec::new();
    for _ in 0..200 {
        late.extend(driver.collect(Duration::from_millis(20)));
        if late.iter().any(|u| u.report.dev == "sdb") {
            break;
        }
    }
    let sdb = late.iter().find(|u| u.report.dev == "sdb").unwrap();
    assert!(sdb.report.late);
    assert!(sdb.changed, "Timeout -> Up is a change");
    // Counted only now: the worker thread may not have entered the hung check yet when the
    // second round was due (a loaded CI box), but no second check of sdb was ever started.
    assert_eq!(checker.calls("sdb"), 1);
    assert!(driver.remove_path("sda"));
    assert!(!driver.remove_path("sda"));
}

/// Records which worker thread ran each check and the target it was given.
struct RecordingChecker {
    threads: Mutex<std::collections::HashSet<String>>,
    targets: Mutex<Vec<CheckTarget>>,
}

impl PathChecker for RecordingChecker {
    fn name(&self) -> &'static str {
        "recording"
    }

    fn check(&self, target: &CheckTarget) -> CheckResult {
        let name = std::thread::current().name().unwrap_or("?").to_string();
        self.threads.lock().unwrap().insert(name);
        self.targets.lock().unwrap().push(target.clone());
        CheckResult::new(CheckState::Up, "fine")
    }
}

#[test]
fn checks_run_on_a_fixed_pool_and_targets_are_completed_there() {
    let clock = Arc::new(ManualClock::new());
    let mut runner = CheckRunner::with_workers(clock.clone(), 100, 2);
    let checker = Arc::new(RecordingChecker {
        threads: Mutex::new(Default::default()),
        targets: Mutex::new(Vec::new()),
    });
    let root =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/ref-sd2x2-tcmloop2/sys");
    let deferred = CheckTarget::deferred("sda", &root);
    assert_eq!(
        deferred.sg_node, None,
        "no sysfs read when the target is made"
    );
    runner
        .submit(checker.clone(), deferred, Duration::from_secs(5))
        .unwrap();
    for i in 0..49 {
        let s = runner
            .submit(
                checker.clone(),
                CheckTarget::new(format!("sd{i}x")),
                Duration::from_secs(5),
            )
            .unwrap();
        assert_eq!(s, Submit::Started);
    }
    assert_eq!(collect(&mut runner, 50).len(), 50);
    let threads = checker.threads.lock().unwrap().clone();
    assert!(
        !threads.is_empty() && threads.len() <= 2,
        "50 checks ran on {threads:?}, not on 2 pool workers"
    );
    assert!(
        threads.iter().all(|t| t.starts_with("checker-")),
        "{threads:?}"
    );
    let sda = checker
        .targets
        .lock()
        .unwrap()
        .iter()
        .find(|t| t.dev == "sda")
        .cloned()
        .unwrap();
    assert!(
        sda.sg_node.is_some(),
        "the worker looked the sg node up: {sda:?}"
    );
    let stats = runner.stats();
    assert_eq!(
        (stats.submitted, stats.workers, stats.in_flight),
        (50, 2, 0)
    );
}

#[test]
fn refused_checks_are_counted() {
    let clock = Arc::new(ManualClock::new());
    let mut runner = CheckRunner::new(clock.clone(), 1);
    let checker = FakeChecker::new("sda");
    let timeout = Duration::from_secs(5);
    runner
        .submit(checker.clone(), CheckTarget::new("sda"), timeout)
        .unwrap();
    assert_eq!(runner.free_slots(), 0);
    assert_eq!(
        runner
            .submit(checker.clone(), CheckTarget::new("sdb"), timeout)
            .unwrap(),
        Submit::Busy
    );
    assert_eq!(runner.stats().refused, 1);
    runner.count_refused(3);
    assert_eq!(runner.stats().refused, 4);
    checker.open_gate();
    assert_eq!(collect(&mut runner, 1).len(), 1);
}

#[test]
fn a_check_waiting_for_a_worker_is_never_timed_out_but_counted() {
    let clock = Arc::new(ManualClock::new());
    // One worker, held by the hung sda: sdb waits in the queue.
    let mut runner = CheckRunner::with_workers(clock.clone(), 4, 1);
    let checker = FakeChecker::new("sda");
    let timeout = Duration::from_secs(5);
    for dev in ["sda", "sdb"] {
        runner
            .submit(checker.clone(), CheckTarget::new(dev), timeout)
            .unwrap();
    }
    // Let the worker enter sda's check (real time, bounded).
    for _ in 0..400 {
        if checker.calls("sda") == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(checker.calls("sda"), 1);
    clock.advance(timeout);
    let reports = runner.poll();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].dev, "sda");
    assert_eq!(reports[0].result.state, CheckState::Timeout);
    let stats = runner.stats();
    assert_eq!((stats.timed_out, stats.queued_late), (1, 1));
    assert_eq!(checker.calls("sdb"), 0, "sdb never ran");

    checker.open_gate();
    let mut rest = collect(&mut runner, 2);
    rest.sort_by(|a, b| a.dev.cmp(&b.dev));
    assert_eq!(rest.len(), 2, "{rest:?}");
    assert!(rest[0].late && rest[0].result.state == CheckState::Up);
    assert!(!rest[1].timed_out && !rest[1].late && rest[1].result.state == CheckState::Up);
    assert_eq!(runner.stats().late, 1);
}
