#![allow(clippy::unwrap_used)]
//! dm events reach the daemon by waiting, not by polling: with a loop tick of 5 s (the loop
//! runs its first pass only after a tick, or when woken), a path the simulated target fails
//! on an I/O error is seen at once, re-checked and reinstated (the device itself is fine).
//! Control: the same daemon on a backend that cannot wait falls back to comparing event
//! numbers once per pass, and has not noticed 2 s later. Both start once the first checks are
//! booked (the pass that books them would notice too).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Hooks, PassThrough};
use dm_tables::{DevNo, DmBackend, PathState, SimBackend};
use multipathd_rs::clock::SystemClock;
use multipathd_rs::config::Config;
use multipathd_rs::daemon::DaemonHandle;

/// The sim without its event source: `event_source` is the trait's default (unsupported),
/// like a kernel whose dm ioctl interface predates arm-poll.
struct CannotWait(SimBackend);

impl Hooks for CannotWait {
    fn inner(&self) -> &dyn DmBackend {
        &self.0
    }
}

/// Long enough that the loop runs no pass of its own while a test looks (and short enough
/// that stopping the daemon, noticed at the next tick, stays cheap).
const TICK: Duration = Duration::from_secs(5);

struct Lab {
    dir: tempfile::TempDir,
    daemon: Option<DaemonHandle>,
}

impl Lab {
    /// A daemon on a generated dual-HBA tree and a file-backed sim, with a tick of [`TICK`].
    fn start(can_wait: bool) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let sim = common::dual_hba(dir.path());
        let backend = SimBackend::open_file(dir.path().join("dm.json"), None).unwrap();
        let backend: Box<dyn DmBackend> = if can_wait {
            Box::new(backend)
        } else {
            Box::new(PassThrough(Arc::new(CannotWait(backend))))
        };
        let e = common::engine(
            dir.path(),
            &sim.root,
            Config::builtin(),
            backend,
            Arc::new(SystemClock),
        );
        let h = common::start_daemon(e, dir.path().join("d.sock"), TICK).unwrap();
        let lab = Lab {
            dir,
            daemon: Some(h),
        };
        lab.wait_quiet();
        lab
    }

    /// Waits until the checks the first pass submits for every member path are answered and
    /// booked. The loop runs a pass for those results, and any pass compares event numbers;
    /// after it the loop is quiet until its next tick, so what notices a failure from then on
    /// is the dm event wait (or, for the control, nothing).
    fn wait_quiet(&self) {
        let deadline = Instant::now() + TICK;
        loop {
            let s = self.daemon.as_ref().unwrap().daemon().engine().status();
            if s.path_count > 0 && s.checker.ready == s.path_count && s.checks.in_flight == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the first checks were not booked within {TICK:?}: {:?} {:?}",
                s.checker,
                s.checks
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Another handle on the simulated kernel (as another process would have).
    fn kernel(&self) -> SimBackend {
        SimBackend::open_file(self.dir.path().join("dm.json"), None).unwrap()
    }

    /// A member path of the first map: (map, devno).
    fn victim(&self) -> (String, DevNo) {
        let k = self.kernel();
        let map = k.list_multipath().unwrap()[0].name.clone();
        let devno = k.status(&map).unwrap().groups[0].paths[0].devno;
        (map, devno)
    }

    /// The victim's (state, fail count) in the kernel.
    fn path(&self, map: &str, devno: DevNo) -> (PathState, u32) {
        let s = self.kernel().status(map).unwrap();
        let p = s.path(devno).unwrap();
        (p.state, p.fail_count)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(h) = self.daemon.take() {
            h.stop().unwrap();
        }
    }
}

#[test]
fn a_path_the_target_fails_is_seen_by_waiting_not_by_the_poll() {
    let lab = Lab::start(true);
    let (map, devno) = lab.victim();
    assert_eq!(lab.path(&map, devno), (PathState::Active, 0));
    // the target fails the path on an I/O error, behind the daemon's back
    let started = Instant::now();
    assert_eq!(
        lab.kernel().inject_io_error(devno).unwrap(),
        vec![map.clone()]
    );
    // the daemon sees the dm event, re-checks the map's paths and reinstates the healthy one,
    // before its loop would run a pass on its own
    let deadline = started + TICK;
    while lab.path(&map, devno) != (PathState::Active, 1) {
        assert!(
            Instant::now() < deadline,
            "the daemon did not notice the failed path: {:?}",
            lab.path(&map, devno)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    assert!(took < TICK, "{took:?}");
}

#[test]
fn control_without_waiting_the_same_failure_waits_for_the_next_pass() {
    let lab = Lab::start(false);
    let (map, devno) = lab.victim();
    lab.kernel().inject_io_error(devno).unwrap();
    // give it the time the waiting daemon needs (a few hundred ms on a quiet machine)
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        lab.path(&map, devno),
        (PathState::Failed, 1),
        "nothing may notice before the loop's first pass"
    );
}
