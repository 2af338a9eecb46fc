//! `multipathd-rs demo`: a dual-HBA Fibre Channel SAN, simulated end to end (generated sysfs
//! tree, simulated device-mapper, real alias store, the daemon's engine and sysfs checker), told
//! as a short story: build the maps, lose HBA host1, keep every map serving, get host1 back.
//! Nothing here needs root or touches the machine's own devices.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use aliases::StorePaths;
use dm_tables::SimBackend;
use lun_scan::Transport;
use lun_scan::topology::{HostSpec, IdKind, LunGroup, Sim, Size, TargetSpec, Topology};
use serde::Serialize;

use crate::clock::SystemClock;
use crate::config::Config;
use crate::engine::{Engine, EngineOptions, Sent};
use crate::error::Error;
use crate::output;
use crate::state::{MapView, PathDmState};

pub mod cluster;
pub mod migration;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// LUNs the array exports (each seen through 4 paths).
    pub luns: u32,
    /// Keep the scratch directory (sysfs tree, dm state, alias table) instead of deleting it.
    pub keep: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            luns: 4,
            keep: false,
        }
    }
}

/// One path at the end of a step.
#[derive(Debug, Clone, Serialize)]
pub struct PathSummary {
    pub dev: String,
    pub host: String,
    pub dm_state: String,
    pub chk_state: String,
    pub dev_state: String,
    pub priority: i32,
}

/// One map at the end of a step.
#[derive(Debug, Clone, Serialize)]
pub struct MapSummary {
    pub name: String,
    pub wwid: String,
    pub active_paths: usize,
    pub failed_paths: usize,
    pub paths: Vec<PathSummary>,
}

/// One step of the story.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: u32,
    pub title: String,
    pub elapsed_ms: f64,
    /// dm messages the daemon sent in this step.
    pub messages: Vec<String>,
    pub maps: Vec<MapSummary>,
}

/// The whole run, for `demo --json`.
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    pub scratch_dir: PathBuf,
    pub kept: bool,
    pub maps: usize,
    pub paths: usize,
    pub steps: Vec<StepReport>,
    /// Computed after host1 went away: every map had at least one active path.
    pub every_map_kept_a_path: bool,
    /// Computed at the end: every path of every map is active again.
    pub all_paths_active_at_end: bool,
    /// The cluster story (steps 6-8): two dom0s, without and with the registry.
    pub cluster: cluster::ClusterStory,
    /// The migration story (steps 9-11): migrate check, the handoff, a refused second start.
    pub migration: migration::MigrationStory,
}

/// A scratch directory removed on drop unless kept.
struct Scratch {
    path: PathBuf,
    keep: bool,
}

impl Scratch {
    fn new(keep: bool) -> Result<Scratch, Error> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path =
            std::env::temp_dir().join(format!("multipathd-rs-demo-{}-{stamp}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Scratch { path, keep })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The demo SAN: two FC HBAs; each is zoned to two target ports of one ALUA array. host0's
/// ports belong to the owning controller (active/optimized), host1's to the partner
/// (active/non-optimized). `luns` NetApp-like LUNs, each seen through 4 paths.
pub fn demo_topology(luns: u32) -> Topology {
    let host = |wwpn: &str, node: &str| HostSpec {
        transport: Transport::Fc,
        proc_name: Some("qla2xxx".into()),
        wwpn: Some(wwpn.into()),
        node_name: Some(node.into()),
        speed: Some("16 Gbit".into()),
        ..HostSpec::default()
    };
    let target = |h: usize, wwpn: &str, port_id: &str, pg: u16, rel: u16| TargetSpec {
        hosts: Some(vec![h]),
        wwpn: Some(wwpn.into()),
        node_name: Some("0x500a098087a9c400".into()),
        port_id: Some(port_id.into()),
        port_group: Some(pg),
        relative_port: Some(rel),
        ..TargetSpec::default()
    };
    let mut alua = BTreeMap::new();
    alua.insert("1".to_string(), "active/optimized".to_string());
    alua.insert("2".to_string(), "active/non-optimized".to_string());
    Topology {
        name: "demo-dual-hba".into(),
        first_host: 0,
        hosts: vec![
            host("0x21000024ff3a1b10", "0x20000024ff3a1b10"),
            host("0x21000024ff3a1b11", "0x20000024ff3a1b11"),
        ],
        targets: vec![
            target(0, "0x500a098187a9c401", "0x010400", 1, 1),
            target(0, "0x500a098187a9c403", "0x010500", 1, 3),
            target(1, "0x500a098187a9c402", "0x020400", 2, 2),
            target(1, "0x500a098187a9c404", "0x020500", 2, 4),
        ],
        luns: vec![LunGroup {
            count: luns.max(1),
            first_lun: 0,
            targets: None,
            vendor: "NETAPP".into(),
            model: "LUN C-Mode".into(),
            rev: "9800".into(),
            size: Size(20 << 30),
            id: IdKind::Naa6,
            id_base: Some("600a098038303053453f463045727a00".into()),
            serial_prefix: Some("80Xk3$".into()),
            state: "running".into(),
            alua,
            queue_depth: 64,
        }],
        path_overrides: Vec::new(),
    }
}

/// The cluster story's second dom0: the same array and LUNs as [`demo_topology`], exported
/// to it one at a time in the reverse order: each LUN is its own group (last LUN first, LUN
/// numbers 0, 10, 20, ...), empty until [`Sim::add_luns`] adds it. After that, adding one
/// more LUN to group 0 exports the same WWID as adding one to the first host's group 0.
pub fn demo_topology_reversed(luns: u32) -> Topology {
    let mut topo = demo_topology(luns);
    let g = topo.luns[0].clone();
    let base = g.id_base.clone().unwrap_or_default();
    let base = u128::from_str_radix(&base, 16).unwrap_or_default();
    let n = luns.max(1);
    topo.name = "demo-dual-hba-reversed".into();
    topo.luns = (0..n)
        .rev()
        .enumerate()
        .map(|(pos, k)| LunGroup {
            count: 0,
            first_lun: u64::try_from(pos).unwrap_or(0) * 10,
            id_base: Some(format!("{:032x}", base + u128::from(k))),
            serial_prefix: Some(format!("80Xk3$R{k}-")),
            ..g.clone()
        })
        .collect();
    topo
}

fn summarize(maps: &[MapView]) -> Vec<MapSummary> {
    maps.iter()
        .map(|m| MapSummary {
            name: m.name.clone(),
            wwid: m.wwid.clone(),
            active_paths: m
                .paths()
                .filter(|p| p.dm_state == PathDmState::Active)
                .count(),
            failed_paths: m
                .paths()
                .filter(|p| p.dm_state == PathDmState::Failed)
                .count(),
            paths: m
                .paths()
                .map(|p| PathSummary {
                    dev: p.dev.clone(),
                    host: format!("host{}", p.hctl.host),
                    dm_state: p.dm_state.to_string(),
                    chk_state: p.chk_state.to_string(),
                    dev_state: p.dev_state.to_string(),
                    priority: p.priority,
                })
                .collect(),
        })
        .collect()
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

fn sim_err(e: lun_scan::Error) -> Error {
    Error::Demo {
        reason: e.to_string(),
    }
}

struct Story<'a> {
    out: &'a mut dyn Write,
    quiet: bool,
}

impl Story<'_> {
    fn say(&mut self, text: &str) {
        if !self.quiet {
            let _ = writeln!(self.out, "{text}");
        }
    }

    fn heading(&mut self, n: u32, title: &str) {
        self.say(&format!("\n== Step {n}. {title} =="));
    }

    fn command(&mut self, cmd: &str) {
        self.say(&format!("\n  $ {cmd}"));
    }

    fn block(&mut self, text: &str) {
        for line in text.lines() {
            self.say(&format!("  {line}"));
        }
    }
}

fn messages_text(sent: &[Sent]) -> Vec<String> {
    sent.iter()
        .map(|s| format!("{}: {}", s.map, s.message))
        .collect()
}

/// Runs the demo, telling the story on `out` (nothing when `quiet`, for `--json`).
pub fn run(opts: &DemoOptions, out: &mut dyn Write, quiet: bool) -> Result<DemoReport, Error> {
    let mut story = Story { out, quiet };
    let scratch = Scratch::new(opts.keep)?;
    let root = scratch.path.join("sys");
    let topo = demo_topology(opts.luns);
    let total_paths = topo.path_count();
    let mut steps = Vec::new();

    story.say(
        "multipathd-rs demo: one dom0, two FC HBAs, one ALUA array (all simulated, no root needed)",
    );
    story.say(&format!(
        "scratch directory: {} (generated sysfs tree, simulated device-mapper state, alias table)",
        scratch.path.display()
    ));

    // Step 1: the SAN.
    let t = Instant::now();
    let mut sim = Sim::render(&topo, &root).map_err(sim_err)?;
    story.heading(1, "The SAN as the kernel shows it");
    story.say(&format!(
        "  {} LUNs exported by one array, each seen through 2 HBAs x 2 target ports = {} SCSI paths.",
        opts.luns.max(1),
        total_paths
    ));
    let scan = lun_scan::scan(&root);
    for h in &scan.hosts {
        let paths: Vec<&lun_scan::ScsiPath> =
            scan.paths.iter().filter(|p| p.host == h.name).collect();
        let access = paths
            .first()
            .and_then(|p| p.access_state.clone())
            .unwrap_or_else(|| "-".into());
        story.say(&format!(
            "  {}  {}  WWPN {}  {} paths ({})  ALUA {}",
            h.name,
            h.proc_name.as_deref().unwrap_or("?"),
            h.fc.as_ref()
                .and_then(|f| f.port_name.clone())
                .unwrap_or_default(),
            paths.len(),
            paths
                .iter()
                .map(|p| p.dev.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            access
        ));
    }
    steps.push(StepReport {
        step: 1,
        title: "SAN generated".into(),
        elapsed_ms: ms(t),
        messages: Vec::new(),
        maps: Vec::new(),
    });

    // Step 2: build the maps.
    let t = Instant::now();
    let devices = dm_tables::devices_from_sysfs(&root).map_err(|e| Error::Demo {
        reason: e.to_string(),
    })?;
    let backend = SimBackend::open_file(scratch.path.join("dm-state.json"), Some(devices))
        .map_err(|e| Error::Demo {
            reason: e.to_string(),
        })?;
    let eopts = EngineOptions {
        config_path: None,
        sysfs_root: root.clone(),
        store_paths: StorePaths {
            table: Some(scratch.path.join("aliases.toml")),
            ..StorePaths::default()
        },
        checker_override: Some("sysfs".into()),
    };
    let mut engine = Engine::new(
        Config::builtin(),
        eopts,
        Box::new(backend),
        Arc::new(SystemClock),
    )?;
    story.heading(2, "Discover the paths and build the multipath maps");
    story.command("multipathd-rs once");
    let report = engine.sync()?;
    let created = report.maps.iter().filter(|m| m.applied).count();
    story.block(&crate::daemon::report_text(&report));
    story.say(&format!(
        "  {created} maps created in {:.1} ms, named by user_friendly_names (bindings in {}).",
        ms(t),
        scratch.path.join("aliases.toml").display()
    ));
    let first_check = engine.check_all_now()?;
    steps.push(StepReport {
        step: 2,
        title: "maps created".into(),
        elapsed_ms: ms(t),
        messages: messages_text(&first_check),
        maps: summarize(&engine.maps_view()),
    });

    // Step 3: topology.
    let t = Instant::now();
    story.heading(
        3,
        "The topology: host0's optimized paths first, host1's non-optimized paths next",
    );
    story.command("multipathd-rs show topology");
    let maps = engine.maps_view();
    story.block(&output::topology(&maps));
    steps.push(StepReport {
        step: 3,
        title: "topology".into(),
        elapsed_ms: ms(t),
        messages: Vec::new(),
        maps: summarize(&maps),
    });

    // Step 4: host1 goes away.
    let t = Instant::now();
    story.heading(4, "HBA host1 goes away (cable pulled, switch port down)");
    sim.host_down("host1").map_err(sim_err)?;
    story.say(
        "  The FC transport blocks host1's remote ports and takes its devices transport-offline.",
    );
    story.say("  The daemon's path checker (sysfs) looks at every path:");
    let sent = engine.check_all_now()?;
    let check_ms = ms(t);
    for m in messages_text(&sent) {
        story.say(&format!("    {m}"));
    }
    story.say(&format!(
        "  {} paths failed in {check_ms:.1} ms.",
        sent.iter()
            .filter(|s| s.message.starts_with("fail_path"))
            .count()
    ));
    story.command("multipathd-rs show topology");
    let maps = engine.maps_view();
    story.block(&output::topology(&maps));
    let summaries = summarize(&maps);
    let every_map_kept_a_path =
        !summaries.is_empty() && summaries.iter().all(|m| m.active_paths > 0);
    for m in &summaries {
        story.say(&format!(
            "  {}: {} of {} paths active{}",
            m.name,
            m.active_paths,
            m.paths.len(),
            if m.active_paths > 0 {
                ""
            } else {
                "  <-- NO WORKING PATH"
            }
        ));
    }
    story.say(if every_map_kept_a_path {
        "  Every map still has a working path: the domUs' I/O continues through host0."
    } else {
        "  Some map has no working path left: its I/O queues or fails per no_path_retry."
    });
    steps.push(StepReport {
        step: 4,
        title: "host1 down, its paths failed".into(),
        elapsed_ms: ms(t),
        messages: messages_text(&sent),
        maps: summaries,
    });

    // Step 5: host1 returns.
    let t = Instant::now();
    story.heading(5, "HBA host1 comes back");
    sim.host_up("host1").map_err(sim_err)?;
    story.say("  The remote ports are Online again and the devices running; the checker runs:");
    let sent = engine.check_all_now()?;
    let check_ms = ms(t);
    for m in messages_text(&sent) {
        story.say(&format!("    {m}"));
    }
    story.say(&format!(
        "  {} paths reinstated in {check_ms:.1} ms.",
        sent.iter()
            .filter(|s| s.message.starts_with("reinstate_path"))
            .count()
    ));
    story.command("multipathd-rs show topology");
    let maps = engine.maps_view();
    story.block(&output::topology(&maps));
    let summaries = summarize(&maps);
    let all_active = summaries
        .iter()
        .all(|m| m.failed_paths == 0 && m.active_paths == m.paths.len());
    let reloads: u32 = maps.iter().map(|m| m.stats.map_loads).sum();
    story.say(&if all_active {
        format!(
            "  All {} paths are active again. Table reloads during the outage: {reloads}; \
             maps left without a working path: {}.",
            total_paths,
            if every_map_kept_a_path {
                "none"
            } else {
                "some (see step 4)"
            }
        )
    } else {
        "  Some paths are still failed.".to_string()
    });
    steps.push(StepReport {
        step: 5,
        title: "host1 back, its paths reinstated".into(),
        elapsed_ms: ms(t),
        messages: messages_text(&sent),
        maps: summaries,
    });
    let cluster = cluster::run(&scratch.path, opts.luns, 6, &mut story)?;
    let migration = migration::run(&scratch.path.join("migration"), 9, &mut story)?;
    if opts.keep {
        story.say(&format!(
            "\nKept {}. Try: multipathd-rs --sysfs-root {} --dm-backend sim:{} --aliases-table {} once --dry-run",
            scratch.path.display(),
            root.display(),
            scratch.path.join("dm-state.json").display(),
            scratch.path.join("aliases.toml").display()
        ));
    }
    Ok(DemoReport {
        scratch_dir: scratch.path.clone(),
        kept: opts.keep,
        maps: engine.map_names().len(),
        paths: total_paths,
        steps,
        every_map_kept_a_path,
        all_paths_active_at_end: all_active,
        cluster,
        migration,
    })
}

/// Whether a path is the demo's scratch tree (used by tests).
pub fn is_scratch(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("multipathd-rs-demo-"))
}
