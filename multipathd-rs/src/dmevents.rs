//! Device-mapper events by waiting, not by listing every map every tick.
//!
//! A thread ("dm-events") waits on the backend's event source ([`dm_tables::EventWatcher`]:
//! the kernel's arm-poll interface, or the simulated kernel's equivalent). When a map's event
//! number changes (a path the target failed on an I/O error, a message from someone else, a
//! rename, a remove) it notes that events are pending and wakes the daemon loop. The loop's
//! next pass ([`DmEvents::step`], where it polled before) compares every map's event number
//! with what the engine saw last, under the engine lock and from one fresh listing
//! ([`Engine::poll_dm_events`]), so a listing the thread took before the engine's own latest
//! change can never make the engine forget a map it just made. An idle daemon makes no dm
//! ioctl at all for events.
//!
//! When the backend cannot wait (dm ioctl before 4.37) or the thread fails, the loop falls
//! back to comparing the event numbers at most every [`DM_EVENT_POLL`], and says so once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dm_tables::{DmBackend, EventWatcher};

use crate::engine::Engine;

/// Without a waitable backend: how often the loop compares the maps' dm event numbers at
/// most.
pub const DM_EVENT_POLL: Duration = Duration::from_millis(200);

/// How long the thread waits at a time before it looks whether the daemon is stopping.
const WAIT_SLICE: Duration = Duration::from_secs(1);

/// After a wake, the thread lists again no sooner than this: a burst of events (thousands of
/// failed paths) costs one listing per window, not one per event.
const COALESCE: Duration = Duration::from_millis(10);

/// Wakes the daemon loop (a send on its signal channel, see [`crate::daemon`]).
pub type Wake = Box<dyn Fn() + Send>;

/// What the thread tells the loop.
enum Note {
    /// These maps' event numbers changed (or they came or went).
    Changed(Vec<String>),
    /// The thread stopped waiting: the loop polls from now on.
    Failed(String),
}

/// The daemon loop's intake of dm events. See the module docs.
pub struct DmEvents {
    mode: Mode,
}

enum Mode {
    Waiting {
        rx: mpsc::Receiver<Note>,
        /// Set by the thread with each note, cleared by the loop: one wake per pass.
        pending: Arc<AtomicBool>,
        stop: Arc<AtomicBool>,
        /// Compare once at the first pass: events between the initial sync and the
        /// thread's baseline are not lost.
        first: bool,
    },
    Polling {
        last: Option<Instant>,
    },
}

impl std::fmt::Debug for DmEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.mode {
            Mode::Waiting { .. } => "DmEvents(waiting)",
            Mode::Polling { .. } => "DmEvents(polling)",
        })
    }
}

impl Drop for DmEvents {
    fn drop(&mut self) {
        if let Mode::Waiting { stop, .. } = &self.mode {
            // The thread sees it within WAIT_SLICE (or at its next send) and exits.
            stop.store(true, Ordering::Relaxed);
        }
    }
}

impl DmEvents {
    /// Compares the event numbers every [`DM_EVENT_POLL`] (no thread).
    pub fn polling() -> DmEvents {
        DmEvents {
            mode: Mode::Polling { last: None },
        }
    }

    /// Starts the waiting thread on `backend`'s event source; `wake` is called after each
    /// change. Falls back to [`DmEvents::polling`] (and says why) when the backend cannot
    /// wait.
    pub fn start(backend: &dyn DmBackend, wake: Wake) -> DmEvents {
        let watcher = match backend.event_source().and_then(EventWatcher::new) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(
                    "{e}; comparing dm event numbers every {} ms instead",
                    DM_EVENT_POLL.as_millis()
                );
                return DmEvents::polling();
            }
        };
        let (tx, rx) = mpsc::channel();
        // The watcher's baseline is taken: an event from now on wakes the loop through the
        // thread. One before it (after the initial sync) is found by the first pass's
        // comparison, so that pass runs now, not a whole tick later.
        let pending = Arc::new(AtomicBool::new(true));
        wake();
        let stop = Arc::new(AtomicBool::new(false));
        let spawned = {
            let (pending, stop) = (pending.clone(), stop.clone());
            std::thread::Builder::new()
                .name("dm-events".into())
                .spawn(move || watch(watcher, &tx, &pending, &stop, &wake))
        };
        if let Err(e) = spawned {
            tracing::warn!(
                "cannot start the dm events thread ({e}); comparing dm event numbers every {} ms instead",
                DM_EVENT_POLL.as_millis()
            );
            return DmEvents::polling();
        }
        tracing::info!("waiting for dm events (arm-poll)");
        DmEvents {
            mode: Mode::Waiting {
                rx,
                pending,
                stop,
                first: true,
            },
        }
    }

    /// Whether a thread waits for events (false: the loop polls).
    pub fn waiting(&self) -> bool {
        matches!(self.mode, Mode::Waiting { .. })
    }

    /// The loop's pass at `now`: hands what changed to the engine. Returns whether a map
    /// changed behind the engine's back (its paths are then due for a check).
    pub fn step(&mut self, e: &mut Engine, now: Instant) -> bool {
        let due = match &mut self.mode {
            Mode::Polling { last } => {
                if last.is_some_and(|t| now.duration_since(t) < DM_EVENT_POLL) {
                    return false;
                }
                *last = Some(now);
                true
            }
            Mode::Waiting {
                rx, pending, first, ..
            } => {
                pending.store(false, Ordering::Relaxed);
                let mut due = std::mem::take(first);
                let mut failed = None;
                while let Ok(note) = rx.try_recv() {
                    match note {
                        Note::Changed(maps) => {
                            tracing::debug!("dm events on {}", maps.join(", "));
                            due = true;
                        }
                        Note::Failed(why) => failed = Some(why),
                    }
                }
                if let Some(why) = failed {
                    tracing::warn!(
                        "stopped waiting for dm events ({why}); comparing dm event numbers every {} ms instead",
                        DM_EVENT_POLL.as_millis()
                    );
                    self.mode = Mode::Polling { last: Some(now) };
                    due = true;
                }
                due
            }
        };
        if !due {
            return false;
        }
        match e.poll_dm_events() {
            Ok(paths) => !paths.is_empty(),
            Err(err) => {
                tracing::warn!("dm events: {err}");
                false
            }
        }
    }
}

/// The thread: waits, notes the maps that changed, wakes the loop; until `stop` or the loop
/// is gone.
fn watch(
    mut w: EventWatcher,
    tx: &mpsc::Sender<Note>,
    pending: &AtomicBool,
    stop: &AtomicBool,
    wake: &Wake,
) {
    let mut last_listing = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let since = last_listing.elapsed();
        if since < COALESCE {
            std::thread::sleep(COALESCE - since);
        }
        let got = w.next(WAIT_SLICE);
        last_listing = Instant::now();
        let note = match got {
            Ok(None) => continue,
            Ok(Some(c)) => Note::Changed(
                c.changed
                    .into_iter()
                    .chain(c.added)
                    .map(|(name, _)| name)
                    .chain(c.removed)
                    .collect(),
            ),
            Err(e) => Note::Failed(e.to_string()),
        };
        let failed = matches!(note, Note::Failed(_));
        if tx.send(note).is_err() {
            return;
        }
        if !pending.swap(true, Ordering::Relaxed) {
            wake();
        }
        if failed {
            return;
        }
    }
}
