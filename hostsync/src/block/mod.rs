//! The hotplug side of migration: Xen's block script (`hostsync block add|remove`, run by
//! `contrib/xen/block-hostsync`) and libvirt's qemu hook (`hostsync hook qemu`, run by
//! `contrib/libvirt/qemu`). Both apply one rule to the domU's LVs:
//!
//! - a normal start activates exclusively (`-aey`);
//! - the destination of a registered migration (`migrations/<domu>` says `to` = this host)
//!   activates shared (`-asy`), which succeeds only while the source holds the LV shared;
//! - anything else that would make a second writer is refused: another host holds the LV
//!   (by the hosts' published LVM records; lvmlockd refuses it on the SAN as well), a migration
//!   of the domU to another host is registered, the target is not an LV hostsync can lock;
//! - `remove`/`release` deactivates (`-an`), releasing the lock.
//!
//! Everything runs within the hotplug time limit (libxl gives a script 40 s): the registry is
//! given [`REGISTRY_LIMIT`], the whole script [`HOTPLUG_BUDGET`]. If the registry cannot be
//! reached in time the start is refused (fail closed) with a message saying so. A refusal of a
//! Xen `add` is written where libxl reads it: `hotplug-error` and `hotplug-status` = `error`
//! under `XENBUS_PATH`, and the exit status is 1.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::domu::Resolver;
use crate::lvm::{Activation, Lv, Lvm};
use crate::lvstate::{HostLvm, LvMode, Migration};
use crate::registry::Registry;
use crate::runner::{Command, Runner};

/// The time the whole script may take (libxl kills a hotplug script at 40 s).
pub const HOTPLUG_BUDGET: Duration = Duration::from_secs(34);
/// The time the registry is given to answer.
pub const REGISTRY_LIMIT: Duration = Duration::from_secs(10);
/// The suffix `xl migrate` gives the incoming domain until the migration is done.
const INCOMING: &str = "--incoming";

/// What the block script and the hook need.
pub struct Context<'a> {
    /// Runs xenstore-*, lvchange, lvs.
    pub runner: &'a dyn Runner,
    /// This host.
    pub host: String,
    /// The sysfs root.
    pub sysfs: PathBuf,
    /// The registry URL, or why there is none.
    pub registry_url: std::result::Result<String, String>,
    /// The registry's time limit.
    pub registry_limit: Duration,
    /// When the script started.
    pub start: Instant,
    /// The whole script's time limit.
    pub budget: Duration,
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("host", &self.host)
            .field("registry_url", &self.registry_url)
            .finish()
    }
}

impl Context<'_> {
    fn left(&self) -> Duration {
        self.budget.saturating_sub(self.start.elapsed())
    }

    fn lvm(&self) -> Lvm<'_> {
        // Keep 3 s for the xenstore writes that report the result.
        Lvm::new(self.runner).with_timeout(
            self.left()
                .saturating_sub(Duration::from_secs(3))
                .max(Duration::from_secs(1)),
        )
    }

    fn now_unix(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// Runs `f` against the registry within the registry limit (and the budget), on a
    /// worker thread: a registry that does not answer is an error, not a hang.
    fn registry<T: Send + 'static>(
        &self,
        what: &str,
        f: impl FnOnce(&dyn Registry) -> crate::Result<T> + Send + 'static,
    ) -> std::result::Result<T, String> {
        let url = self
            .registry_url
            .clone()
            .map_err(|e| format!("no registry to {what}: {e}"))?;
        let limit = self.registry_limit.min(self.left());
        let (tx, rx) = mpsc::channel();
        let u = url.clone();
        std::thread::spawn(move || {
            let r = crate::open(&u).and_then(|reg| f(&*reg));
            let _ = tx.send(r);
        });
        match rx.recv_timeout(limit) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("the registry could not {what}: {e}")),
            Err(_) => Err(format!(
                "the registry {url} did not answer within {:.0} s, so hostsync cannot tell whether another host holds the disk",
                limit.as_secs_f64()
            )),
        }
    }
}

/// An LV a domU uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvRef {
    /// VG.
    pub vg: String,
    /// LV.
    pub lv: String,
    /// LV UUID.
    pub uuid: String,
}

impl LvRef {
    /// `VG/LV`.
    pub fn full(&self) -> String {
        format!("{}/{}", self.vg, self.lv)
    }

    fn of(lv: &Lv) -> Self {
        LvRef {
            vg: lv.vg.clone(),
            lv: lv.name.clone(),
            uuid: lv.uuid.clone(),
        }
    }
}

/// How `host` may activate `lv` for `domu`, from the registry's view; `Err` is the refusal, as
/// a sentence.
pub fn decide(
    host: &str,
    domu: &str,
    lv: &LvRef,
    migration: Option<&Migration>,
    lvm: &[HostLvm],
) -> std::result::Result<(Activation, String), String> {
    let holders: Vec<(String, LvMode)> = lvm
        .iter()
        .filter(|h| h.host != host)
        .filter_map(|h| {
            h.lvs
                .iter()
                .find(|l| l.uuid == lv.uuid || (l.vg == lv.vg && l.lv == lv.lv))
                .map(|l| (h.host.clone(), l.mode))
        })
        .collect();
    let held = |except: Option<&str>| -> Option<String> {
        let others: Vec<String> = holders
            .iter()
            .filter(|(h, _)| Some(h.as_str()) != except)
            .map(|(h, m)| format!("{h} ({})", format!("{m:?}").to_lowercase()))
            .collect();
        (!others.is_empty()).then(|| others.join(", "))
    };
    match migration {
        Some(m) if m.to == host => {
            if !m.lv_uuids.is_empty() && !m.lv_uuids.contains(&lv.uuid) {
                return Err(format!(
                    "{} is not among the LVs of the registered migration of {domu} from {} to {host}",
                    lv.full(),
                    m.from
                ));
            }
            if let Some(o) = held(Some(&m.from)) {
                return Err(format!(
                    "{} is active on {o}, not only on the migration's source {}",
                    lv.full(),
                    m.from
                ));
            }
            Ok((
                Activation::Shared,
                format!(
                    "destination of the registered migration of {domu} from {}",
                    m.from
                ),
            ))
        }
        Some(m) => Err(format!(
            "a migration of {domu} from {} to {} is registered; finish or abort it first",
            m.from, m.to
        )),
        None => match held(None) {
            Some(o) => Err(format!(
                "{} is active on {o}: starting {domu} here would make a second writer",
                lv.full()
            )),
            None => Ok((Activation::Exclusive, "a normal start".into())),
        },
    }
}

fn lv_mode(a: Activation) -> Option<LvMode> {
    match a {
        Activation::Exclusive => Some(LvMode::Exclusive),
        Activation::Shared => Some(LvMode::Shared),
        Activation::Off => None,
    }
}

/// The LV at `path` on this host, or why the path cannot be guarded.
fn lv_at(ctx: &Context<'_>, path: &str) -> std::result::Result<Lv, String> {
    let res = Resolver::new(&ctx.sysfs, ctx.lvm());
    match res.lv_at(path) {
        Ok(Some(lv)) => Ok(lv),
        Ok(None) => Err(format!(
            "{path} is not an LV on this host; block-hostsync guards LVs of shared VGs only"
        )),
        Err(e) => Err(format!("cannot tell which LV {path} is: {e}")),
    }
}

/// Activates the LV at `path` for `domu` by the rule; returns the LV and how it was activated.
pub fn attach(
    ctx: &Context<'_>,
    domu: &str,
    path: &str,
) -> std::result::Result<(Lv, Activation), String> {
    let lv = lv_at(ctx, path)?;
    let r = LvRef::of(&lv);
    let d = domu.to_string();
    let (migration, lvm) = ctx.registry("read the migrations and the hosts' LVM", move |reg| {
        let held = reg.hold(false)?;
        let read = (
            crate::lvstate::migration(reg, &d)?,
            crate::lvstate::cluster_lvm_state(reg)?,
        );
        held.release()?;
        Ok(read)
    })?;
    let (mode, why) = decide(&ctx.host, domu, &r, migration.as_ref(), &lvm)?;
    tracing::info!(lv = %r.full(), domu, mode = mode.flag(), why, "activating");
    ctx.lvm()
        .activate(&r.vg, &r.lv, mode)
        .map_err(|e| e.to_string())?;
    record(ctx, &r, lv_mode(mode));
    Ok((lv, mode))
}

/// Deactivates the LV at `path`.
pub fn detach(ctx: &Context<'_>, path: &str) -> std::result::Result<Lv, String> {
    let lv = lv_at(ctx, path)?;
    let r = LvRef::of(&lv);
    ctx.lvm()
        .activate(&r.vg, &r.lv, Activation::Off)
        .map_err(|e| e.to_string())?;
    record(ctx, &r, None);
    Ok(lv)
}

/// Records the change in this host's LVM record (best effort: the lock itself is on the SAN).
fn record(ctx: &Context<'_>, r: &LvRef, mode: Option<LvMode>) {
    let (host, r2, now) = (ctx.host.clone(), r.clone(), ctx.now_unix());
    if let Err(e) = ctx.registry("record the activation", move |reg| {
        crate::lvstate::record_lv(reg, &host, &r2.vg, &r2.lv, &r2.uuid, mode, now)
    }) {
        eprintln!(
            "hostsync: warning: {} changed on {} but the registry does not know it yet: {e}",
            r.full(),
            ctx.host
        );
    }
}

/// xenstore through the runner.
struct Xenstore<'c, 'a> {
    ctx: &'c Context<'a>,
}

impl Xenstore<'_, '_> {
    fn timeout(&self) -> Duration {
        self.ctx
            .left()
            .clamp(Duration::from_secs(1), Duration::from_secs(5))
    }

    fn read(&self, path: &str) -> std::result::Result<String, String> {
        let out = self
            .ctx
            .runner
            .run(
                &Command::new("xenstore-read")
                    .arg(path)
                    .timeout(self.timeout()),
            )
            .map_err(|e| e.to_string())?;
        if !out.success() {
            return Err(format!("xenstore has no {path}: {}", out.stderr_text()));
        }
        Ok(out.stdout_text().trim_end_matches('\n').to_string())
    }

    fn write(&self, pairs: &[(String, String)]) -> std::result::Result<(), String> {
        let mut c = Command::new("xenstore-write").timeout(self.timeout());
        for (k, v) in pairs {
            c = c.arg(k).arg(v);
        }
        let out = self.ctx.runner.run(&c).map_err(|e| e.to_string())?;
        if out.success() {
            Ok(())
        } else {
            Err(format!("xenstore-write failed: {}", out.stderr_text()))
        }
    }
}

/// The domU's name and the disk's path, from xenstore.
fn xen_disk(xs: &Xenstore<'_, '_>, bp: &str) -> std::result::Result<(String, String), String> {
    let mut parts = bp.split('/');
    let domid = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("backend"), Some("vbd"), Some(domid), Some(_)) => domid.to_string(),
        _ => {
            return Err(format!(
                "XENBUS_PATH {bp:?} is not backend/vbd/<domid>/<devid>"
            ));
        }
    };
    let params = xs.read(&format!("{bp}/params"))?;
    let name = xs.read(&format!("/local/domain/{domid}/name"))?;
    let domu = name.strip_suffix(INCOMING).unwrap_or(&name).to_string();
    let path = if params.starts_with('/') {
        params
    } else {
        format!("/dev/{params}")
    };
    Ok((domu, path))
}

/// `hostsync block add|remove`: the Xen block script. Returns the exit status.
pub fn xen_block(ctx: &Context<'_>, action: &str, xenbus_path: Option<&str>) -> i32 {
    let xs = Xenstore { ctx };
    let Some(bp) = xenbus_path.filter(|p| !p.is_empty()) else {
        eprintln!(
            "hostsync block: XENBUS_PATH is not set; libxl sets it when it runs a block script"
        );
        return 1;
    };
    let result = match action {
        "add" => xen_add(ctx, &xs, bp),
        "remove" => xen_disk(&xs, bp).and_then(|(_, path)| detach(ctx, &path).map(|_| ())),
        other => Err(format!("unknown action {other:?} (add or remove)")),
    };
    match result {
        Ok(()) => 0,
        Err(msg) => {
            let msg = format!("block-hostsync {action} on {}: {msg}", ctx.host);
            eprintln!("{msg}");
            if action == "add" {
                // What xen-hotplug-common.sh's fatal() leaves for libxl to read.
                let _ = xs.write(&[
                    (format!("{bp}/hotplug-error"), msg),
                    (format!("{bp}/hotplug-status"), "error".into()),
                ]);
            }
            1
        }
    }
}

fn xen_add(ctx: &Context<'_>, xs: &Xenstore<'_, '_>, bp: &str) -> std::result::Result<(), String> {
    let (domu, path) = xen_disk(xs, bp)?;
    let (lv, mode) = attach(ctx, &domu, &path)?;
    let dm_name = lv
        .dm_path
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let dev = crate::domu::dm_devices(&ctx.sysfs)
        .into_iter()
        .find(|d| d.name == dm_name)
        .map(|d| d.dev)
        .unwrap_or_default();
    let hex = dev
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .map(|(a, b)| format!("{a:x}:{b:x}"));
    // Activated but not usable by libxl: undo, so the disk's failed start leaves no lock behind
    // (a shared one left on a migration's destination would keep the source from taking its LV
    // back when the migration fails).
    let undo = |why: String| {
        let _ = ctx.lvm().activate(&lv.vg, &lv.name, Activation::Off);
        record(ctx, &LvRef::of(&lv), None);
        format!(
            "{} was activated but {why}; deactivated again",
            lv.full_name()
        )
    };
    let Some(hex) = hex else {
        return Err(undo(format!("device-mapper shows no device {dm_name}")));
    };
    xs.write(&[
        (format!("{bp}/physical-device"), hex),
        (format!("{bp}/physical-device-path"), lv.dm_path.clone()),
        (format!("{bp}/hotplug-status"), "connected".into()),
    ])
    .map_err(|e| undo(format!("its device could not be reported in xenstore: {e}")))?;
    eprintln!(
        "block-hostsync: {} attached to {domu} on {} ({})",
        lv.full_name(),
        ctx.host,
        mode.flag()
    );
    Ok(())
}

/// `hostsync hook qemu GUEST OP SUBOP EXTRA` with the domain XML: libvirt's hook. `prepare`
/// activates the domU's LVs by the rule, `release` deactivates them, `migrate` (on the
/// destination, before anything is started) checks the rule without activating. Other
/// operations pass.
pub fn libvirt_hook(
    ctx: &Context<'_>,
    guest: &str,
    op: &str,
    xml: &str,
) -> std::result::Result<Vec<String>, String> {
    let (name, disks) = crate::domu::libvirt::disks(xml)
        .map_err(|e| format!("the domain XML of {guest} does not parse: {e}"))?;
    let domu = name.unwrap_or_else(|| guest.to_string());
    let paths: Vec<String> = disks
        .iter()
        .filter(|d| d.backendtype.as_deref() == Some("block"))
        .filter_map(|d| d.path())
        .collect();
    let mut done = Vec::new();
    match op {
        "prepare" => {
            let mut attached: Vec<Lv> = Vec::new();
            for p in &paths {
                match attach(ctx, &domu, p) {
                    Ok((lv, mode)) => {
                        done.push(format!("{} {}", lv.full_name(), mode.flag()));
                        attached.push(lv);
                    }
                    Err(e) if e.contains("is not an LV") => done.push(format!("{p}: not guarded")),
                    Err(e) => {
                        // Leave nothing half-started.
                        for lv in &attached {
                            let _ = ctx.lvm().activate(&lv.vg, &lv.name, Activation::Off);
                            record(ctx, &LvRef::of(lv), None);
                        }
                        return Err(e);
                    }
                }
            }
        }
        "release" => {
            for p in &paths {
                match detach(ctx, p) {
                    Ok(lv) => done.push(format!("{} -an", lv.full_name())),
                    Err(e) => eprintln!("hostsync hook: {e}"),
                }
            }
        }
        "migrate" => {
            let d = domu.clone();
            let (migration, lvm) =
                ctx.registry("read the migrations and the hosts' LVM", move |reg| {
                    Ok((
                        crate::lvstate::migration(reg, &d)?,
                        crate::lvstate::cluster_lvm_state(reg)?,
                    ))
                })?;
            for p in &paths {
                let Ok(lv) = lv_at(ctx, p) else { continue };
                let (mode, _) =
                    decide(&ctx.host, &domu, &LvRef::of(&lv), migration.as_ref(), &lvm)?;
                if mode != Activation::Shared {
                    return Err(format!(
                        "no migration of {domu} to {} is registered: run `hostsync migrate run {domu} --to {}` so the disks are handed over",
                        ctx.host, ctx.host
                    ));
                }
                done.push(format!("{} may be taken shared", lv.full_name()));
            }
        }
        _ => {}
    }
    Ok(done)
}

#[cfg(test)]
mod tests;
