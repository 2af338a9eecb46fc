//! Cluster-wide naming (`[cluster]` in the configuration): a new map's name is decided by the
//! hostsync registry, never invented locally, and this host's maps are published under
//! `hosts/<host>/` tied to its liveness lease.
//!
//! Every registry call runs on a short-lived worker thread and is waited for at most
//! [`CALL_TIMEOUT`]: a registry that hangs never holds up failover work for long. A call that
//! fails or times out marks the registry unreachable (a WARN naming its URL); from then on a
//! new map is named by its WWID (the same on every host by construction) with no registry
//! call, and the connection is retried every `publish_interval`. On recovery (an INFO naming
//! the URL) the engine renames WWID-named maps to their registry alias, but only while they
//! are not open: the engine's rule for held-back renames decides that. An existing name that is
//! not the WWID is never changed.
//!
//! The local table (WWID -> registry name) is cached as a bindings file next to the alias
//! store's (`<bindings>.cluster`), written atomically by hostsync's [`ClusterNamer`].

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hostsync::{ClusterNamer, HostPresence, MapState, NamerOptions};

use crate::config::ClusterSection;

/// The longest the daemon waits for one registry call (connecting included).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// A live connection: the namer (local table fed by the registry) and this host's presence.
struct Conn {
    namer: ClusterNamer,
    presence: HostPresence,
}

/// This host's view of the cluster registry. See the module docs.
pub struct Cluster {
    section: ClusterSection,
    host: String,
    opts: NamerOptions,
    conn: Option<Conn>,
    /// None before the first attempt, then whether the last call succeeded.
    reachable: Option<bool>,
    last_connect: Option<Instant>,
    last_publish: Option<Instant>,
    timeout: Duration,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("registry", &self.section.registry)
            .field("host", &self.host)
            .field("reachable", &self.reachable)
            .finish()
    }
}

/// Where the local table of the registry is cached: beside the alias store's bindings file.
pub fn cache_path(bindings: Option<&std::path::Path>) -> Option<PathBuf> {
    let b = bindings?;
    let name = b.file_name()?.to_string_lossy().into_owned();
    Some(b.with_file_name(format!("{name}.cluster")))
}

/// Runs `f` on a worker thread, waiting at most `timeout`. None when it did not answer in
/// time (the thread finishes on its own and its result is dropped).
fn bounded<T: Send + 'static>(
    timeout: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("cluster-call".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .ok()?;
    rx.recv_timeout(timeout).ok()
}

impl Cluster {
    /// The cluster view for `section`; connects at once (bounded) and logs the outcome.
    /// `prefix` is the user_friendly_names prefix, `cache` where the local table is kept.
    pub fn open(section: &ClusterSection, prefix: &str, cache: Option<PathBuf>) -> Cluster {
        Self::open_with_timeout(section, prefix, cache, CALL_TIMEOUT)
    }

    /// [`Cluster::open`] with another call timeout (tests).
    pub fn open_with_timeout(
        section: &ClusterSection,
        prefix: &str,
        cache: Option<PathBuf>,
        timeout: Duration,
    ) -> Cluster {
        let mut c = Cluster {
            section: section.clone(),
            host: section.host_name(),
            opts: NamerOptions {
                prefix: prefix.to_string(),
                cache,
            },
            conn: None,
            reachable: None,
            last_connect: None,
            last_publish: None,
            timeout,
        };
        c.connect(Instant::now());
        c
    }

    /// The registry URL.
    pub fn registry(&self) -> &str {
        &self.section.registry
    }

    /// This host's name in the registry.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The section this view was opened for.
    pub fn section(&self) -> &ClusterSection {
        &self.section
    }

    /// Whether the last registry call succeeded.
    pub fn reachable(&self) -> bool {
        self.reachable == Some(true) && self.conn.is_some()
    }

    fn interval(&self) -> Duration {
        Duration::from_secs(u64::from(self.section.publish_interval.max(1)))
    }

    fn went_down(&mut self, why: &str) {
        self.conn = None;
        if self.reachable != Some(false) {
            tracing::warn!(
                registry = %self.section.registry,
                "cluster registry {} cannot be reached ({why}); new maps are named by their WWID until it answers again",
                self.section.registry
            );
        }
        self.reachable = Some(false);
    }

    fn came_up(&mut self) {
        if self.reachable != Some(true) {
            tracing::info!(
                registry = %self.section.registry,
                host = %self.host,
                "cluster registry {} reached; maps are named by the registry",
                self.section.registry
            );
        }
        self.reachable = Some(true);
    }

    fn connect(&mut self, now: Instant) {
        self.last_connect = Some(now);
        let url = self.section.registry.clone();
        let host = self.host.clone();
        let opts = self.opts.clone();
        let ttl = i64::from(self.section.publish_interval.max(1)) * 3;
        let r = bounded(self.timeout, move || -> hostsync::Result<Conn> {
            let reg = hostsync::open(&url)?;
            let (mut namer, _report) = ClusterNamer::open(reg.clone(), &host, opts)?;
            namer.save_cache()?;
            let presence = HostPresence::join(reg, &host, ttl)?;
            Ok(Conn { namer, presence })
        });
        match r {
            Some(Ok(conn)) => {
                self.conn = Some(conn);
                self.last_publish = None;
                self.came_up();
            }
            Some(Err(e)) => self.went_down(&e.to_string()),
            None => self.went_down(&format!("no answer within {} ms", self.timeout.as_millis())),
        }
    }

    /// Runs `f` on the connection, bounded by the call timeout. A registry error or a timeout
    /// drops the connection (the registry is then unreachable); another error (a WWID the
    /// registry refuses) is returned with the connection kept.
    fn call<T: Send + 'static>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut Conn) -> hostsync::Result<T> + Send + 'static,
    ) -> Option<hostsync::Result<T>> {
        let mut conn = self.conn.take()?;
        let r = bounded(self.timeout, move || {
            let r = f(&mut conn);
            (conn, r)
        });
        match r {
            Some((conn, Err(e @ hostsync::Error::Registry { .. }))) => {
                drop(conn);
                self.went_down(&format!("{what}: {e}"));
                None
            }
            Some((conn, r)) => {
                self.conn = Some(conn);
                self.came_up();
                Some(r)
            }
            None => {
                self.went_down(&format!(
                    "{what}: no answer within {} ms",
                    self.timeout.as_millis()
                ));
                None
            }
        }
    }

    /// The name the registry gives `wwid`; with `allocate`, one is allocated if it has none
    /// (lowest free friendly name cluster-wide). None when the registry cannot answer now:
    /// the caller names the map by its WWID.
    pub fn name(&mut self, wwid: &str, allocate: bool) -> Option<String> {
        if let Some(a) = self.alias_of(wwid) {
            return Some(a);
        }
        if !allocate || self.conn.is_none() {
            return None;
        }
        let w = wwid.to_string();
        match self.call("allocate a name", move |c| {
            let named = c.namer.name(&w)?;
            c.namer.save_cache()?;
            Ok(named)
        })? {
            Ok(named) => {
                if named.created {
                    tracing::info!(wwid, alias = %named.alias, registry = %self.section.registry,
                        "WWID {wwid} named {} by the cluster registry", named.alias);
                }
                Some(named.alias)
            }
            Err(e) => {
                tracing::warn!(
                    wwid,
                    "the cluster registry gave WWID {wwid} no name ({e}); its map is named by its WWID"
                );
                None
            }
        }
    }

    /// The registry's name for `wwid` in the local table, if it has one.
    pub fn alias_of(&self, wwid: &str) -> Option<String> {
        self.conn
            .as_ref()
            .and_then(|c| c.namer.alias_of(wwid).map(str::to_string))
    }

    /// The periodic work, from the daemon's loop: reconnects an unreachable registry every
    /// `publish_interval`; applies registry changes to the local table (and its cache); every
    /// `publish_interval` renews the lease and publishes `maps`. Returns true when it is time
    /// for the engine to look for WWID-named maps to rename (after a (re)connection or a
    /// publication).
    pub fn tick(&mut self, now: Instant, maps: impl FnOnce() -> Vec<MapState>) -> bool {
        if self.conn.is_none() {
            let due = self
                .last_connect
                .is_none_or(|t| now.saturating_duration_since(t) >= self.interval());
            if !due {
                return false;
            }
            self.connect(now);
            if self.conn.is_none() {
                return false;
            }
        }
        let publish = self
            .last_publish
            .is_none_or(|t| now.saturating_duration_since(t) >= self.interval());
        let maps = publish.then(maps);
        let r = self.call("follow the registry", move |c| {
            c.namer.catch_up()?;
            c.namer.save_cache()?;
            if let Some(m) = maps {
                c.presence.keep_alive()?;
                c.presence.publish(&m)?;
            }
            Ok(())
        });
        if let Some(Err(e)) = r {
            tracing::warn!(registry = %self.section.registry, "cluster registry: {e}");
        }
        if publish {
            self.last_publish = Some(now);
        }
        publish && self.conn.is_some()
    }
}
