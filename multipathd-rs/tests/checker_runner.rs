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
