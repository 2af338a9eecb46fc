//! CPU priority of the daemon's threads: failing a path never waits behind `show` traffic.
//!
//! On Linux the nice value belongs to a thread, not to the process (setpriority(2), "BUGS"),
//! and a new thread starts with its creator's. The daemon thread raises its own priority to
//! [`CRITICAL_NICE`] before it starts the sweep, the applier, dm event and socket threads, so
//! the failover-critical ones inherit it (when the daemon may: a negative nice needs
//! `CAP_SYS_NICE`, which root has; otherwise everything stays where it was, which is logged).
//! The control socket's accept thread lowers itself to [`READ_NICE`], and its connections
//! start there: reads (rendering and sending a 20 MB `show paths --json` to 64 clients is the
//! daemon's biggest CPU user) and the 503s of clients beyond the limit run below failover. A
//! connection goes back to the server's starting priority for a change (only root may ask for
//! one, and root may raise it back). multipath-tools' multipathd runs the whole daemon at SCHED_RR for
//! the same reason; a nice value keeps the socket's readers served, just after failover.

/// The nice value of the threads that fail and reinstate paths (sweep, checks, dm events,
/// the daemon loop, the applier).
pub const CRITICAL_NICE: i32 = -10;

/// The nice value of a control connection's thread while it answers read commands.
pub const READ_NICE: i32 = 10;

/// The calling thread's nice value.
pub fn thread_nice() -> std::io::Result<i32> {
    // PRIO_PROCESS with pid 0 is the calling thread on Linux.
    rustix::process::getpriority_process(None).map_err(std::io::Error::from)
}

/// Sets the calling thread's nice value (threads it starts afterwards inherit it). Lowering
/// the priority (a higher value) is always allowed; raising it needs `CAP_SYS_NICE`.
pub fn set_thread_nice(nice: i32) -> std::io::Result<()> {
    rustix::process::setpriority_process(None, nice).map_err(std::io::Error::from)
}

/// A thread that moves between a base priority and [`READ_NICE`] as the commands it runs
/// ask (the control socket's accept thread and its connections).
#[derive(Debug)]
pub struct ThreadPriority {
    /// The nice value of changes (None: unknown, then changes run where the thread is).
    base: Option<i32>,
    /// The nice value of reads (None: reads run at the base priority). Never above the base.
    read: Option<i32>,
    /// The thread's nice value now (None: unknown, then it is left alone).
    now: Option<i32>,
}

impl ThreadPriority {
    /// The calling thread's, whatever its nice value now (a connection's thread starts at its
    /// accept thread's, lowered already): `base` for changes, `read` for reads.
    pub fn of_this_thread(base: Option<i32>, read: Option<i32>) -> ThreadPriority {
        ThreadPriority {
            base,
            read,
            now: thread_nice().ok(),
        }
    }

    /// Sets the thread's priority for the next command: lowered for a read, back to the base
    /// for a change (a failure to go back up is logged: the change runs lowered).
    pub fn for_command(&mut self, is_change: bool) {
        let want = if is_change {
            self.base
        } else {
            match (self.read, self.base) {
                (Some(r), Some(b)) => Some(r.max(b)),
                (r, b) => r.or(b),
            }
        };
        let (Some(want), Some(now)) = (want, self.now) else {
            return;
        };
        if want == now {
            return;
        }
        match set_thread_nice(want) {
            Ok(()) => self.now = Some(want),
            Err(e) => {
                tracing::debug!("cannot move a control thread from nice {now} to {want}: {e}")
            }
        }
    }
}

/// Raises the calling thread to [`CRITICAL_NICE`] (the threads it starts afterwards inherit
/// it), if it is not there already and the daemon may; says what it did in the log.
pub fn raise_for_failover() {
    match thread_nice() {
        Ok(n) if n <= CRITICAL_NICE => {}
        Ok(n) => match set_thread_nice(CRITICAL_NICE) {
            Ok(()) => tracing::info!(
                "failover threads run at nice {CRITICAL_NICE} (was {n}); control connections answer reads at nice {READ_NICE}"
            ),
            Err(e) => tracing::warn!(
                "cannot raise the failover threads' priority to nice {CRITICAL_NICE} ({e}); they stay at {n}, control connections answer reads at nice {READ_NICE}"
            ),
        },
        Err(e) => tracing::warn!("cannot read the daemon thread's priority: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` on a thread of its own (priorities are per thread; the test's stays as it is).
    fn on_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(f).join().unwrap()
    }

    #[test]
    fn reads_run_lowered_and_only_on_their_thread() {
        let outer = thread_nice().unwrap();
        let (base, during_read, again) = on_thread(|| {
            let base = thread_nice().unwrap();
            let mut p = ThreadPriority::of_this_thread(Some(base), Some(19));
            p.for_command(false);
            let during_read = thread_nice().unwrap();
            p.for_command(false);
            (base, during_read, thread_nice().unwrap())
        });
        assert_eq!(base, outer);
        assert_eq!(during_read, 19);
        assert_eq!(again, 19);
        assert_eq!(
            thread_nice().unwrap(),
            outer,
            "another thread's nice changed"
        );
    }

    #[test]
    fn a_change_gets_the_base_priority_back_when_allowed() {
        let (base, after_change) = on_thread(|| {
            let base = thread_nice().unwrap();
            let mut p = ThreadPriority::of_this_thread(Some(base), Some(19));
            p.for_command(false);
            p.for_command(true);
            (base, thread_nice().unwrap())
        });
        // Going back up needs CAP_SYS_NICE (or RLIMIT_NICE); without it the change runs at
        // the read priority, which is what the permission allows.
        let may_raise = on_thread(|| {
            let n = thread_nice().unwrap();
            set_thread_nice(n + 1).unwrap();
            set_thread_nice(n).is_ok()
        });
        if may_raise {
            assert_eq!(after_change, base);
        } else {
            assert_eq!(after_change, 19);
        }
    }

    #[test]
    fn no_read_nice_leaves_the_thread_alone() {
        let (base, after) = on_thread(|| {
            let base = thread_nice().unwrap();
            let mut p = ThreadPriority::of_this_thread(Some(base), None);
            p.for_command(false);
            (base, thread_nice().unwrap())
        });
        assert_eq!(after, base);
    }

    #[test]
    fn threads_started_after_a_raise_inherit_it() {
        let (before, now, child) = on_thread(|| {
            let before = thread_nice().unwrap();
            raise_for_failover();
            let now = thread_nice().unwrap();
            let child = std::thread::spawn(|| thread_nice().unwrap())
                .join()
                .unwrap();
            (before, now, child)
        });
        // Without CAP_SYS_NICE the raise is refused and both stay where they were.
        assert!(
            now == CRITICAL_NICE.min(before) || now == before,
            "{before} -> {now}"
        );
        assert_eq!(child, now);
    }
}
