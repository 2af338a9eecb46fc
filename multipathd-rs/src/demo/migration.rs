//! The demo's migration story (issue 16): the same two dom0s with the cluster registry. A domU
//! config naming the cluster alias passes `migrate check`, one naming `/dev/sdX` is flagged;
//! as dom0-b loses paths the check warns, then fails. Then `migrate run` hands an LV over from
//! dom0-a to dom0-b through a simulated lvmlockd (the LV lock rules of lvmlockd: `-aey` only
//! when no other host holds it, `-asy` only when no other host holds it exclusively), with the
//! destination's block script run by the stand-in `xl migrate`; a later start on dom0-a is
//! refused. The lock timeline is reported so check-demo can verify no two exclusive holders.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hostsync::block::Context;
use hostsync::domu::{DiskReport, DiskSpec, Identity, PvIdentity};
use hostsync::hosts::{MapState, publish_host_state};
use hostsync::lvstate::{HostLvm, VgState, publish_lvm_state};
use hostsync::migrate::{self, CheckReport, ClusterView, RunOptions};
use hostsync::runner::{Command, Output, Runner};
use serde::Serialize;

use super::cluster::{DemoHost, two_hosts};
use crate::error::Error;

fn demo_err(e: impl ToString) -> Error {
    Error::Demo {
        reason: e.to_string(),
    }
}

const VG: &str = "vgsan";
const LV: &str = "web1";
const LV_UUID: &str = "dEm0Lv-web1-0000-0000-0000-0000-000001";

/// Who holds the LV's lock after each LVM command: the simulated SAN's lease.
#[derive(Debug, Default)]
struct Lockd {
    holders: Mutex<BTreeMap<String, &'static str>>,
    timeline: Mutex<Vec<LockEvent>>,
}

/// One change of the LV's lock.
#[derive(Debug, Clone, Serialize)]
pub struct LockEvent {
    /// What ran where (`dom0-a: lvchange -asy vgsan/web1`).
    pub command: String,
    /// Whether lvmlockd granted it.
    pub granted: bool,
    /// host -> "ex" | "sh" after it.
    pub holders: BTreeMap<String, String>,
}

/// One host's LVM through the simulated lvmlockd; `xl migrate` runs the stand-in.
struct HostLvmSim {
    host: String,
    lockd: Arc<Lockd>,
    xl_migrate: Option<Box<dyn Fn() -> Result<(), String> + Send + Sync>>,
    peer: Option<Arc<HostLvmSim>>,
}

impl HostLvmSim {
    fn lvchange(&self, cmd: &Command) -> Output {
        let flag = cmd.args.first().map(String::as_str).unwrap_or("");
        let mut h = self.lockd.holders.lock().unwrap_or_else(|e| e.into_inner());
        let others: Vec<&'static str> = h
            .iter()
            .filter(|(k, _)| **k != self.host)
            .map(|(_, v)| *v)
            .collect();
        let mode = match flag {
            "-aey" if others.is_empty() => Some(Some("ex")),
            "-asy" if !others.contains(&"ex") => Some(Some("sh")),
            "-an" => Some(None),
            _ => None,
        };
        let granted = mode.is_some();
        match mode {
            Some(Some(m)) => {
                h.insert(self.host.clone(), m);
            }
            Some(None) => {
                h.remove(&self.host);
            }
            None => {}
        }
        let holders = h.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
        drop(h);
        if let Ok(mut t) = self.lockd.timeline.lock() {
            t.push(LockEvent {
                command: format!("{}: {}", self.host, cmd.line()),
                granted,
                holders,
            });
        }
        if granted {
            Output::ok("")
        } else {
            Output::fail(5, format!("  LV locked by other host: {VG}/{LV}\n"))
        }
    }

    fn lvs(&self) -> Output {
        let mode = self
            .lockd
            .holders
            .lock()
            .map(|h| h.get(&self.host).copied())
            .unwrap_or(None);
        let row = serde_json::json!({"lv_name": LV, "vg_name": VG, "lv_uuid": LV_UUID,
            "lv_attr": "-wi-a-----", "lv_size": "4294967296", "origin": "", "pool_lv": "",
            "snap_percent": "", "data_percent": "", "metadata_percent": "",
            "lv_active_locally": if mode.is_some() { "1" } else { "0" },
            "lv_active_exclusively": if mode == Some("ex") { "1" } else { "0" },
            "lv_device_open": "0", "lv_lock_args": "1.0.0:70254592",
            "lv_path": format!("/dev/{VG}/{LV}"), "lv_dm_path": format!("/dev/mapper/{VG}-{LV}")});
        Output::ok(serde_json::json!({"report": [{"lv": [row]}]}).to_string())
    }
}

impl Runner for HostLvmSim {
    fn run(&self, cmd: &Command) -> hostsync::Result<Output> {
        match cmd.program.as_str() {
            "lvchange" => Ok(self.lvchange(cmd)),
            "lvs" => Ok(self.lvs()),
            "xl" => match &self.xl_migrate {
                Some(f) => Ok(match f() {
                    Ok(()) => Output::ok(""),
                    Err(e) => Output::fail(1, e),
                }),
                None => Ok(Output::fail(127, "no xl here")),
            },
            "on" => match &self.peer {
                Some(p) => p.run(
                    &Command::new(cmd.args.get(1).cloned().unwrap_or_default())
                        .args(cmd.args.iter().skip(2).cloned()),
                ),
                None => Ok(Output::fail(127, "no peer")),
            },
            _ => Ok(Output::fail(
                127,
                format!("{} is not simulated", cmd.program),
            )),
        }
    }
}

/// One step of the migration story, for `demo --json`.
#[derive(Debug, Clone, Serialize)]
pub struct MigrationStep {
    pub step: u32,
    pub title: String,
    /// `migrate check` reports (per config).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckReport>,
    /// The lock timeline of the handoff.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub locks: Vec<LockEvent>,
    /// What hostsync said (run) or refused (start).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub said: Vec<String>,
    /// The command's outcome: "ok" or the refusal.
    pub outcome: String,
}

/// The migration story in `demo --json` (key `migration`).
#[derive(Debug, Clone, Serialize)]
pub struct MigrationStory {
    pub domu: String,
    pub lv: String,
    pub steps: Vec<MigrationStep>,
}

fn maps_of(h: &DemoHost) -> Vec<MapState> {
    h.names()
        .into_iter()
        .map(|(wwid, name)| {
            let (mut active, mut total) = (0, 0);
            for p in h.sim.present_paths().filter(|p| p.expected_wwid == wwid) {
                total += 1;
                if p.state == "running" {
                    active += 1;
                }
            }
            MapState {
                name,
                wwid,
                active_paths: active,
                total_paths: total,
            }
        })
        .collect()
}

fn host_lvm(host: &str, id: u32) -> HostLvm {
    HostLvm {
        host: host.into(),
        host_id: Some(id),
        io_timeout: Some(10),
        taken_unix: now(),
        vgs: vec![VgState {
            name: VG.into(),
            uuid: "dEm0Vg".into(),
            lock_type: "sanlock".into(),
            lockspace_started: true,
            pvs: vec![],
        }],
        lvs: vec![],
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn disk(vdev: &str, path: &str, identity: Identity) -> DiskReport {
    DiskReport {
        disk: DiskSpec {
            spec: format!("phy:{path},{vdev},w"),
            target: Some(path.into()),
            vdev: Some(vdev.into()),
            ..DiskSpec::default()
        },
        path: Some(path.into()),
        identity,
        warnings: vec![],
    }
}

fn ctx<'a>(runner: &'a dyn Runner, host: &str, registry: &str) -> Context<'a> {
    Context {
        runner,
        host: host.into(),
        sysfs: "/nonexistent".into(),
        registry_url: Ok(registry.into()),
        registry_limit: Duration::from_secs(10),
        start: Instant::now(),
        budget: Duration::from_secs(34),
    }
}

/// Tells the migration story as steps `first` ..= `first + 2` (on two LUNs, to stay quick).
pub(super) fn run(
    scratch: &Path,
    first: u32,
    story: &mut super::Story<'_>,
) -> Result<MigrationStory, Error> {
    let reg_dir = scratch.join("registry");
    let registry = format!("local:{}", reg_dir.display());
    let (a, mut b) = two_hosts(&scratch.join("hosts"), 2, Some(&registry))?;
    let reg = hostsync::open(&registry).map_err(demo_err)?;
    let publish = |b: &DemoHost| -> Result<(), Error> {
        publish_host_state(&*reg, &a.name, 0, &maps_of(&a)).map_err(demo_err)?;
        publish_host_state(&*reg, &b.name, 0, &maps_of(b)).map_err(demo_err)
    };
    publish(&b)?;
    publish_lvm_state(&*reg, &host_lvm(&a.name, 1), 0).map_err(demo_err)?;
    publish_lvm_state(&*reg, &host_lvm(&b.name, 2), 0).map_err(demo_err)?;
    let names = a.names();
    let (wwid, alias) = names
        .iter()
        .next()
        .map(|(w, n)| (w.clone(), n.clone()))
        .ok_or_else(|| demo_err("dom0-a has no map"))?;
    let (pv_wwid, pv_alias) = names
        .iter()
        .nth(1)
        .map(|(w, n)| (w.clone(), n.clone()))
        .ok_or_else(|| demo_err("dom0-a has a single map"))?;
    let sd = a
        .sim
        .present_paths()
        .find(|p| p.expected_wwid == wwid)
        .map(|p| p.dev.clone())
        .ok_or_else(|| demo_err("no path of the first LUN on dom0-a"))?;
    let alias_disk = disk(
        "xvda",
        &format!("/dev/mapper/{alias}"),
        Identity::Multipath {
            map: alias.clone(),
            wwid: wwid.clone(),
        },
    );
    let sd_disk = disk(
        "xvda",
        &format!("/dev/{sd}"),
        Identity::Raw {
            device: sd.clone(),
            wwid: Some(wwid.clone()),
        },
    );
    let lv_disk = disk(
        "xvdb",
        &format!("/dev/{VG}/{LV}"),
        Identity::Lv {
            vg: VG.into(),
            lv: LV.into(),
            vg_uuid: "dEm0Vg".into(),
            lv_uuid: LV_UUID.into(),
            lock_type: "sanlock".into(),
            pvs: vec![PvIdentity {
                device: format!("/dev/mapper/{pv_alias}"),
                map: Some(pv_alias.clone()),
                wwid: Some(pv_wwid.clone()),
            }],
        },
    );
    let check = |disks: &[DiskReport]| -> Result<CheckReport, Error> {
        let view = ClusterView::read(&*reg).map_err(demo_err)?;
        Ok(migrate::check(
            "web1",
            &a.name,
            &b.name,
            disks,
            &view,
            now(),
        ))
    };
    let verdict = |r: &CheckReport| {
        format!(
            "{} ({} failure(s), {} warning(s))",
            if r.safe { "safe" } else { "UNSAFE" },
            r.failures,
            r.warnings
        )
    };
    let mut steps = Vec::new();

    // Step: migrate check.
    story.heading(first, "migrate check: is it safe to move web1 to dom0-b?");
    let ok = check(&[alias_disk.clone(), lv_disk.clone()])?;
    story.command(&format!(
        "hostsync migrate check web1.cfg --to {}     # disk = ['phy:/dev/mapper/{alias},xvda,w', 'phy:/dev/{VG}/{LV},xvdb,w']",
        b.name
    ));
    story.say(&format!("  {}", verdict(&ok)));
    let bad = check(std::slice::from_ref(&sd_disk))?;
    story.command(&format!(
        "hostsync migrate check web1-sdx.cfg --to {}     # disk = ['phy:/dev/{sd},xvda,w']",
        b.name
    ));
    for d in &bad.disks {
        for x in &d.findings {
            story.say(&format!("  {:?}: {}", x.level, x.message));
        }
    }
    // dom0-b loses paths of the LUN: one left, then none.
    let b_paths: Vec<String> = b
        .sim
        .present_paths()
        .filter(|p| p.expected_wwid == wwid)
        .map(|p| p.dev.clone())
        .collect();
    let (keep, lose) = b_paths
        .split_first()
        .ok_or_else(|| demo_err("dom0-b has no path of the LUN"))?;
    for d in lose {
        b.sim.set_state(d, "offline").map_err(demo_err)?;
    }
    publish(&b)?;
    let one = check(std::slice::from_ref(&alias_disk))?;
    story.say(&format!(
        "  dom0-b loses {} of its {} paths to {alias}: {}",
        lose.len(),
        b_paths.len(),
        verdict(&one)
    ));
    b.sim.set_state(keep, "offline").map_err(demo_err)?;
    publish(&b)?;
    let none = check(std::slice::from_ref(&alias_disk))?;
    story.say(&format!("  and the last one: {}", verdict(&none)));
    for d in &b_paths {
        b.sim.set_state(d, "running").map_err(demo_err)?;
    }
    publish(&b)?;
    steps.push(MigrationStep {
        step: first,
        title: "migrate check: alias ok, sdX flagged, one path warns, none fails".into(),
        checks: vec![ok, bad, one, none],
        locks: vec![],
        said: vec![],
        outcome: "ok".into(),
    });

    // Step: the handoff.
    story.heading(
        first + 1,
        "migrate run: web1's LV handed over from dom0-a to dom0-b without two writers",
    );
    let lockd = Arc::new(Lockd::default());
    let b_lvm = Arc::new(HostLvmSim {
        host: b.name.clone(),
        lockd: lockd.clone(),
        xl_migrate: None,
        peer: None,
    });
    // web1 runs on dom0-a: its block script activated the LV exclusively at start.
    let a_start = HostLvmSim {
        host: a.name.clone(),
        lockd: lockd.clone(),
        xl_migrate: None,
        peer: None,
    };
    hostsync::block::attach(
        &ctx(&a_start, &a.name, &registry),
        "web1",
        &format!("/dev/{VG}/{LV}"),
    )
    .map_err(demo_err)?;
    // The stand-in `xl migrate`: the stream arrives, dom0-b's block script runs `add` for
    // web1--incoming (xl's name for it until the migration is done), then dom0-a's `remove`.
    let (b_for_xl, reg_url, b_name) = (b_lvm.clone(), registry.clone(), b.name.clone());
    let a_lvm = HostLvmSim {
        host: a.name.clone(),
        lockd: lockd.clone(),
        xl_migrate: Some(Box::new(move || {
            hostsync::block::attach(
                &ctx(&*b_for_xl, &b_name, &reg_url),
                "web1",
                &format!("/dev/{VG}/{LV}"),
            )
            .map(drop)
        })),
        peer: Some(b_lvm.clone()),
    };
    let opts = RunOptions {
        domu: "web1".into(),
        from: a.name.clone(),
        to: b.name.clone(),
        migrate: ["xl", "migrate", "{domu}", "{to}"]
            .map(String::from)
            .to_vec(),
        remote: ["on", "{to}"].map(String::from).to_vec(),
        migrate_timeout: Duration::from_secs(30),
        recover_for: Duration::from_secs(2),
    };
    story.command(&format!("hostsync migrate run web1 --to {}", b.name));
    let mut said = Vec::new();
    let lvm = hostsync::lvm::Lvm::new(&a_lvm);
    let res = migrate::run(
        &*reg,
        &a_lvm,
        &lvm,
        &[alias_disk.clone(), lv_disk.clone()],
        &opts,
        now(),
        &mut |s| said.push(s.to_string()),
    );
    for s in &said {
        story.say(&format!("  {s}"));
    }
    let locks = lockd.timeline.lock().map(|t| t.clone()).unwrap_or_default();
    story.say("  The LV's lock after each LVM command (simulated lvmlockd):");
    for e in &locks {
        let h: Vec<String> = e.holders.iter().map(|(k, v)| format!("{k}={v}")).collect();
        story.say(&format!(
            "    {:<42} {:<8} {}",
            e.command,
            if e.granted { "granted" } else { "REFUSED" },
            h.join(" ")
        ));
    }
    steps.push(MigrationStep {
        step: first + 1,
        title: "migrate run: handoff".into(),
        checks: vec![],
        locks,
        said,
        outcome: match res {
            Ok(()) => "ok".into(),
            Err(e) => e,
        },
    });

    // Step: a later start on dom0-a.
    story.heading(first + 2, "xl create web1 on dom0-a again: refused");
    let a_again = HostLvmSim {
        host: a.name.clone(),
        lockd: lockd.clone(),
        xl_migrate: None,
        peer: None,
    };
    let refused = hostsync::block::attach(
        &ctx(&a_again, &a.name, &registry),
        "web1",
        &format!("/dev/{VG}/{LV}"),
    );
    let outcome = match refused {
        Ok(_) => "ok".to_string(),
        Err(e) => e,
    };
    story.say(&format!("  block-hostsync add on {}: {outcome}", a.name));
    steps.push(MigrationStep {
        step: first + 2,
        title: "later start on the source: refused".into(),
        checks: vec![],
        locks: lockd.timeline.lock().map(|t| t.clone()).unwrap_or_default(),
        said: vec![],
        outcome,
    });
    Ok(MigrationStory {
        domu: "web1".into(),
        lv: format!("{VG}/{LV}"),
        steps,
    })
}
