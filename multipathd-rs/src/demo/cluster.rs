//! The demo's cluster story: two simulated dom0s see the same LUNs, discovered in a different
//! order. Without a registry their friendly names differ; with one (`[cluster]`, a `local:`
//! registry in the scratch directory) they are identical; a LUN that appears on both hosts at
//! the same moment gets one name. The hosts are also what the cluster tests drive.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};

use aliases::StorePaths;
use dm_tables::SimBackend;
use lun_scan::topology::{Sim, Topology};
use serde::Serialize;

use crate::clock::SystemClock;
use crate::config::Config;
use crate::engine::{Engine, EngineOptions, SyncReport};
use crate::error::Error;

fn demo_err(e: impl ToString) -> Error {
    Error::Demo {
        reason: e.to_string(),
    }
}

/// One simulated dom0: its own sysfs tree, device-mapper state and alias files, its engine.
pub struct DemoHost {
    /// The host's name (its `[cluster] host`).
    pub name: String,
    /// Its scratch directory.
    pub dir: PathBuf,
    /// Its simulated SCSI layer.
    pub sim: Sim,
    /// Its daemon's engine.
    pub engine: Engine,
    /// WWIDs in the order their maps were created on this host.
    pub order: Vec<String>,
}

impl std::fmt::Debug for DemoHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoHost")
            .field("name", &self.name)
            .finish()
    }
}

impl DemoHost {
    /// A host under `base/<name>` seeing `topo`, with `[cluster] registry = registry` if given.
    pub fn new(
        base: &Path,
        name: &str,
        topo: &Topology,
        registry: Option<&str>,
    ) -> Result<DemoHost, Error> {
        let dir = base.join(name);
        let root = dir.join("sys");
        let sim = Sim::render(topo, &root).map_err(demo_err)?;
        let text = registry.map_or_else(String::new, |r| {
            format!(
                "[cluster]\nregistry = {}\nname = \"demo\"\nhost = {}\npublish_interval = 1\n",
                toml_str(r),
                toml_str(name)
            )
        });
        let config = Config::parse_str(&text, &dir.join("config.toml"))?;
        let backend = SimBackend::open_file(dir.join("dm-state.json"), None).map_err(demo_err)?;
        let opts = EngineOptions {
            config_path: None,
            sysfs_root: root,
            store_paths: StorePaths {
                table: Some(dir.join("aliases.toml")),
                bindings: Some(dir.join("bindings")),
                ..StorePaths::default()
            },
            checker_override: Some("sysfs".into()),
        };
        let engine = Engine::new(config, opts, Box::new(backend), Arc::new(SystemClock))?;
        let h = DemoHost {
            name: name.into(),
            dir,
            sim,
            engine,
            order: Vec::new(),
        };
        h.plug()?;
        Ok(h)
    }

    /// The simulated device-mapper learns which block devices exist now.
    fn plug(&self) -> Result<(), Error> {
        let devices = dm_tables::devices_from_sysfs(self.engine.sysfs_root()).map_err(demo_err)?;
        SimBackend::open_file(self.dir.join("dm-state.json"), None)
            .and_then(|b| b.set_devices(devices))
            .map_err(demo_err)
    }

    /// The array exports one more LUN in `group` and this host scans it in.
    pub fn lun_appears(&mut self, group: usize) -> Result<(), Error> {
        self.sim.add_luns(group, 1).map_err(demo_err)?;
        self.sim.scan_all().map_err(demo_err)?;
        self.plug()
    }

    /// One sync of the engine; records the maps it created, in discovery order.
    pub fn sync(&mut self) -> Result<SyncReport, Error> {
        let r = self.engine.sync()?;
        if let Some(e) = r.errors.first() {
            return Err(demo_err(format!("{}: {e}", self.name)));
        }
        // Within one sync, in the order the scan found them (by WWID on the demo SAN): the
        // report is sorted by map name, and with a registry the other host may have chosen
        // those names first, which made the two orders look alike.
        let mut created: Vec<String> = r
            .maps
            .iter()
            .filter(|m| m.applied && m.plan.current_name.is_none())
            .map(|m| m.plan.desired.wwid.clone())
            .collect();
        created.sort();
        self.order.extend(created);
        Ok(r)
    }

    /// WWID -> map name on this host.
    pub fn names(&self) -> BTreeMap<String, String> {
        self.engine
            .maps_view()
            .into_iter()
            .map(|m| (m.wwid, m.name))
            .collect()
    }
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The two hosts of the story over `luns` LUNs: dom0-a finds them all in one scan (the demo
/// SAN), dom0-b one at a time in the reverse order (as they were zoned to it over time).
pub fn two_hosts(
    base: &Path,
    luns: u32,
    registry: Option<&str>,
) -> Result<(DemoHost, DemoHost), Error> {
    let mut a = DemoHost::new(base, "dom0-a", &super::demo_topology(luns), registry)?;
    let mut b = DemoHost::new(
        base,
        "dom0-b",
        &super::demo_topology_reversed(luns),
        registry,
    )?;
    let n = luns.max(1) as usize;
    std::thread::scope(|s| {
        let ja = s.spawn(|| a.sync().map(drop));
        let jb = s.spawn(|| {
            for g in 0..n {
                b.lun_appears(g)?;
                b.sync()?;
            }
            Ok::<(), Error>(())
        });
        let ra = ja
            .join()
            .unwrap_or_else(|_| Err(demo_err("dom0-a's sync panicked")));
        let rb = jb
            .join()
            .unwrap_or_else(|_| Err(demo_err("dom0-b's sync panicked")));
        ra.and(rb)
    })?;
    Ok((a, b))
}

/// A new LUN is exported to both hosts and both scan and sync at the same moment. Returns its
/// WWID.
pub fn new_lun_on_both(a: &mut DemoHost, b: &mut DemoHost) -> Result<String, Error> {
    let before = a.names();
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        let js: Vec<_> = [&mut *a, &mut *b]
            .into_iter()
            .map(|h| {
                let barrier = &barrier;
                s.spawn(move || {
                    h.sim.add_luns(0, 1).map_err(demo_err)?;
                    barrier.wait();
                    h.sim.scan_all().map_err(demo_err)?;
                    h.plug()?;
                    h.sync().map(drop)
                })
            })
            .collect();
        js.into_iter().try_for_each(|j| {
            j.join()
                .unwrap_or_else(|_| Err(demo_err("a host's sync panicked")))
        })
    })?;
    a.names()
        .into_keys()
        .find(|w| !before.contains_key(w))
        .ok_or_else(|| demo_err("dom0-a has no map for the new LUN"))
}

/// One step of the cluster story, for `demo --json`.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStep {
    pub step: u32,
    pub title: String,
    /// The registry the hosts used, None without one.
    pub registry: Option<String>,
    /// Per host: WWIDs in the order their maps were created.
    pub discovery_order: BTreeMap<String, Vec<String>>,
    /// Per host: WWID -> map name.
    pub names: BTreeMap<String, BTreeMap<String, String>>,
    /// The LUN that appeared on both hosts at once (last step).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_wwid: Option<String>,
}

/// The cluster story in `demo --json` (key `cluster`).
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStory {
    pub hosts: Vec<String>,
    pub steps: Vec<ClusterStep>,
}

fn step(
    n: u32,
    title: &str,
    registry: Option<&str>,
    a: &DemoHost,
    b: &DemoHost,
    new_wwid: Option<String>,
) -> ClusterStep {
    ClusterStep {
        step: n,
        title: title.into(),
        registry: registry.map(str::to_string),
        discovery_order: [a, b]
            .iter()
            .map(|h| (h.name.clone(), h.order.clone()))
            .collect(),
        names: [a, b].iter().map(|h| (h.name.clone(), h.names())).collect(),
        new_wwid,
    }
}

/// The side-by-side table of both hosts' names.
fn names_table(a: &DemoHost, b: &DemoHost) -> String {
    let (na, nb) = (a.names(), b.names());
    let mut out = format!("{:<36} {:<10} {:<10}\n", "WWID", a.name, b.name);
    for (w, n) in &na {
        let other = nb.get(w).map_or("-", String::as_str);
        let mark = if other == n { "" } else { "  <-- differs" };
        out.push_str(&format!("{w:<36} {n:<10} {other:<10}{mark}\n"));
    }
    out
}

/// Tells the cluster story as steps `first`, `first + 1` and `first + 2`.
pub(super) fn run(
    scratch: &Path,
    luns: u32,
    first: u32,
    story: &mut super::Story<'_>,
) -> Result<ClusterStory, Error> {
    let mut steps = Vec::new();
    story.heading(
        first,
        "Two dom0s, no cluster registry: the same LUNs, different names",
    );
    story
        .say("  dom0-a finds every LUN in one scan; dom0-b was zoned the same LUNs one at a time,");
    story.say("  last LUN first. Each names new maps on its own (user_friendly_names, per host):");
    let (a, b) = two_hosts(&scratch.join("no-registry"), luns, None)?;
    story.block(&names_table(&a, &b));
    story.say("  A domU migrating from dom0-a to dom0-b with phy:/dev/mapper/mpatha would open another LUN.");
    steps.push(step(first, "no registry: names differ", None, &a, &b, None));

    let reg_dir = scratch.join("registry");
    let registry = format!("local:{}", reg_dir.display());
    story.heading(
        first + 1,
        "The same two dom0s with a cluster registry: identical names",
    );
    story.say(&format!(
        "  Both daemons' configurations carry [cluster] registry = \"{registry}\" (etcd://... in a real cluster):"
    ));
    story.say("  a new map's name is decided by the registry, never invented locally.");
    let (mut a, mut b) = two_hosts(&scratch.join("with-registry"), luns, Some(&registry))?;
    story.block(&names_table(&a, &b));
    story.say(&format!(
        "  Each host's local table is a cache of the registry: {}",
        a.dir.join("bindings.cluster").display()
    ));
    steps.push(step(
        first + 1,
        "registry: names identical",
        Some(&registry),
        &a,
        &b,
        None,
    ));

    story.heading(
        first + 2,
        "A new LUN appears on both dom0s at the same moment",
    );
    let new = new_lun_on_both(&mut a, &mut b)?;
    story.say(&format!(
        "  Both hosts scanned LUN {new} and asked the registry at once; one name won:"
    ));
    story.block(&names_table(&a, &b));
    steps.push(step(
        first + 2,
        "new LUN on both: one name",
        Some(&registry),
        &a,
        &b,
        Some(new),
    ));
    Ok(ClusterStory {
        hosts: vec![a.name.clone(), b.name.clone()],
        steps,
    })
}
