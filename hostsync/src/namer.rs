//! [`ClusterNamer`]: what a host (the daemon, or the CLI acting as one) uses to name maps.
//! It keeps a local table of the registry's bindings, fed by a watch (a watch cancelled by
//! compaction resynchronises in full), names new WWIDs through the registry, and writes the
//! table as a multipath-tools bindings file (atomically) so the host has a cache of the
//! registry. On start a cache left by an earlier run is reconciled: the registry wins, and a
//! cached binding the registry lacks is claimed for it, so nothing is dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aliases::bindings::{BindingsFile, render_fresh};
use aliases::fsutil;
use aliases::names::{DEFAULT_ALIAS_PREFIX, ufn_id};
use serde::Serialize;

use crate::Result;
use crate::names::{self, Bindings, Named, SetOutcome, WWID_PREFIX, WwidRecord, decode};
use crate::registry::{Event, Registry, WatchEvent, Watcher};

/// Options of a [`ClusterNamer`].
#[derive(Debug, Clone)]
pub struct NamerOptions {
    /// user_friendly_names prefix (`mpath`).
    pub prefix: String,
    /// Where the local table is cached (a bindings file); None keeps it in memory only.
    pub cache: Option<PathBuf>,
}

impl Default for NamerOptions {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_ALIAS_PREFIX.into(),
            cache: None,
        }
    }
}

/// How a cached table compared with the registry on start.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CacheReport {
    /// Cached bindings the registry lacked, now claimed into it: (wwid, alias).
    pub claimed: Vec<(String, String)>,
    /// Cached bindings that disagree with the registry: (wwid, cached alias, registry alias
    /// or None when the cached alias belongs to another WWID). The registry wins.
    pub stale: Vec<(String, String, Option<String>)>,
}

/// Names LUNs cluster-wide and keeps a local table of the registry.
pub struct ClusterNamer {
    reg: Arc<dyn Registry>,
    host: String,
    opts: NamerOptions,
    table: BTreeMap<String, String>,
    used: BTreeSet<u64>,
    watcher: Option<Box<dyn Watcher>>,
    dirty: bool,
}

impl std::fmt::Debug for ClusterNamer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNamer")
            .field("registry", &self.reg.url())
            .field("host", &self.host)
            .field("bindings", &self.table.len())
            .finish()
    }
}

impl ClusterNamer {
    /// Opens the namer for `host`: reads the registry in full, reconciles a cached table if
    /// one exists, and starts watching.
    pub fn open(
        reg: Arc<dyn Registry>,
        host: &str,
        opts: NamerOptions,
    ) -> Result<(Self, CacheReport)> {
        let mut n = Self {
            reg,
            host: host.into(),
            opts,
            table: BTreeMap::new(),
            used: BTreeSet::new(),
            watcher: None,
            dirty: true,
        };
        let cached = n.load_cache()?;
        n.resync()?;
        let mut report = CacheReport::default();
        for (wwid, alias) in cached {
            match n.table.get(&wwid) {
                Some(a) if *a == alias => {}
                Some(a) => report.stale.push((wwid, alias, Some(a.clone()))),
                None => {
                    let (now, ok) = names::claim(&*n.reg, &n.host, &wwid, &alias, "cache")?;
                    if let Some(a) = &now {
                        n.learn(&wwid, a);
                    }
                    if ok {
                        report.claimed.push((wwid, alias));
                    } else {
                        report.stale.push((wwid, alias, now));
                    }
                }
            }
        }
        if !report.claimed.is_empty() || !report.stale.is_empty() {
            tracing::warn!(host = %n.host, claimed = report.claimed.len(), stale = report.stale.len(),
                "the cached alias table differed from the registry; the registry wins");
        }
        Ok((n, report))
    }

    fn load_cache(&self) -> Result<Vec<(String, String)>> {
        let Some(path) = &self.opts.cache else {
            return Ok(Vec::new());
        };
        if !path.exists() {
            return Ok(Vec::new());
        }
        let f = BindingsFile::load(path)?;
        f.ensure_valid()?;
        Ok(f.bindings()
            .map(|(a, w, _)| (w.to_string(), a.to_string()))
            .collect())
    }

    fn learn(&mut self, wwid: &str, alias: &str) -> bool {
        if let Some(i) = ufn_id(alias, &self.opts.prefix) {
            self.used.insert(i);
        }
        if self.table.get(wwid).map(String::as_str) == Some(alias) {
            return false;
        }
        self.table.insert(wwid.into(), alias.into());
        self.dirty = true;
        true
    }

    /// Reads the registry in full and watches again from there.
    pub fn resync(&mut self) -> Result<()> {
        let b = Bindings::read(&*self.reg)?;
        let table: BTreeMap<String, String> = b
            .by_wwid
            .iter()
            .map(|(w, r)| (w.clone(), r.alias.clone()))
            .collect();
        if table != self.table {
            self.dirty = true;
        }
        self.table = table;
        self.used = names::used_ids(b.by_alias.keys(), &self.opts.prefix);
        self.used
            .extend(names::used_ids(self.table.values(), &self.opts.prefix));
        self.watcher = Some(self.reg.watch(WWID_PREFIX, b.revision + 1)?);
        Ok(())
    }

    /// Applies registry changes, waiting up to `timeout` for the first. Returns the bindings
    /// that are new or changed in the local table.
    pub fn poll(&mut self, timeout: Duration) -> Result<Vec<(String, String)>> {
        let ev = match self.watcher.as_mut() {
            Some(w) => w.next(timeout)?,
            None => WatchEvent::Resync,
        };
        let mut out = Vec::new();
        match ev {
            WatchEvent::Idle => {}
            WatchEvent::Resync => {
                tracing::info!(host = %self.host, registry = %self.reg.url(), "watch compacted; reading the registry in full");
                let before = self.table.clone();
                self.resync()?;
                out = self
                    .table
                    .iter()
                    .filter(|(w, a)| before.get(*w) != Some(*a))
                    .map(|(w, a)| (w.clone(), a.clone()))
                    .collect();
            }
            WatchEvent::Changes { events, .. } => {
                for e in events {
                    match e {
                        Event::Put(kv) => {
                            let Some(wwid) = kv.key.strip_prefix(WWID_PREFIX) else {
                                continue;
                            };
                            let rec: WwidRecord = decode(&*self.reg, &kv)?;
                            if self.learn(wwid, &rec.alias) {
                                out.push((wwid.to_string(), rec.alias));
                            }
                        }
                        Event::Delete { key, .. } => {
                            if let Some(wwid) = key.strip_prefix(WWID_PREFIX)
                                && self.table.remove(wwid).is_some()
                            {
                                self.dirty = true;
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Applies every change already made, without waiting.
    pub fn catch_up(&mut self) -> Result<()> {
        while !self.poll(Duration::ZERO)?.is_empty() {}
        Ok(())
    }

    /// The registry's name for `wwid`, allocating the lowest free friendly name if it has none.
    pub fn name(&mut self, wwid: &str) -> Result<Named> {
        if let Some(a) = self.table.get(wwid) {
            return Ok(Named {
                wwid: wwid.into(),
                alias: a.clone(),
                created: false,
            });
        }
        let named = names::name_wwid(
            &*self.reg,
            &self.host,
            &self.opts.prefix,
            wwid,
            &mut self.used,
        )?;
        self.learn(wwid, &named.alias);
        Ok(named)
    }

    /// Sets an admin alias (see [`names::set_alias`]).
    pub fn set(&mut self, wwid: &str, alias: &str, reuse: bool) -> Result<SetOutcome> {
        let out = names::set_alias(&*self.reg, &self.host, wwid, alias, reuse, "admin")?;
        self.learn(wwid, alias);
        Ok(out)
    }

    /// The local table: WWID -> name.
    pub fn table(&self) -> &BTreeMap<String, String> {
        &self.table
    }

    /// The name of `wwid` in the local table.
    pub fn alias_of(&self, wwid: &str) -> Option<&str> {
        self.table.get(wwid).map(String::as_str)
    }

    /// The registry this namer uses.
    pub fn registry(&self) -> &Arc<dyn Registry> {
        &self.reg
    }

    /// Writes the local table to the cache file if it changed (atomically; sorted by name).
    pub fn save_cache(&mut self) -> Result<bool> {
        let Some(path) = &self.opts.cache else {
            return Ok(false);
        };
        if !self.dirty && path.exists() {
            return Ok(false);
        }
        let mut rows: Vec<(&str, &str)> = self
            .table
            .iter()
            .map(|(w, a)| (a.as_str(), w.as_str()))
            .collect();
        rows.sort();
        fsutil::atomic_write(path, render_fresh(rows).as_bytes(), 0o644)?;
        self.dirty = false;
        Ok(true)
    }
}
