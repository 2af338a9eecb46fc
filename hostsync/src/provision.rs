//! `hostsync lun provision ALIAS --vg VG`: a PV on the multipath map `/dev/mapper/<alias>`, then
//! the VG created (shared when the cluster uses lvmlockd) or extended.
//!
//! LVM must never sit on a member path (`/dev/sdX`): it would bypass multipath, so one path
//! failure fails the VG, and LVM would see the PV once per path. So the device is checked through
//! a sysfs root (a seam: a fake tree in tests): it must be a device-mapper map whose
//! `dm/uuid` starts with `mpath-`. A member path is refused with the map it belongs to.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::lvm::Lvm;
use crate::runner::Command;
use crate::{Error, Result};

/// Where the kernel's views are read from (`/sys` and `/proc` in production).
#[derive(Debug, Clone)]
pub struct Roots {
    /// The sysfs root.
    pub sys: PathBuf,
    /// The procfs root (to find a running lvmlockd).
    pub proc: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Roots {
            sys: "/sys".into(),
            proc: "/proc".into(),
        }
    }
}

/// A multipath map found in sysfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MpathMap {
    /// Its name (the alias).
    pub name: String,
    /// Its kernel name, `dm-N`.
    pub kernel: String,
    /// The WWID (the dm uuid without `mpath-`).
    pub wwid: String,
    /// `/dev/mapper/<name>`.
    pub device: String,
    /// Its member paths (`sdX`), from `slaves/`.
    pub paths: Vec<String>,
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

fn not_multipath(device: &str, why: String) -> Error {
    Error::Lvm {
        target: device.into(),
        action: "provision".into(),
        message: why,
    }
}

fn list_dir(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn map_of_kernel(sys: &Path, kernel: &str) -> Option<MpathMap> {
    let dm = sys.join("block").join(kernel).join("dm");
    let name = read_trim(&dm.join("name"))?;
    let uuid = read_trim(&dm.join("uuid")).unwrap_or_default();
    let wwid = uuid.strip_prefix("mpath-")?.to_string();
    Some(MpathMap {
        device: format!("/dev/mapper/{name}"),
        paths: list_dir(&sys.join("block").join(kernel).join("slaves")),
        name,
        kernel: kernel.into(),
        wwid,
    })
}

/// The multipath map named `alias` (or `/dev/mapper/<alias>`). A member path (`sdX`,
/// `/dev/sdX`), a device-mapper device that is not a multipath map, or a name no map has, is
/// refused with a sentence saying which and what to use instead.
pub fn resolve_map(sys: &Path, alias: &str) -> Result<MpathMap> {
    let name = alias
        .strip_prefix("/dev/mapper/")
        .unwrap_or(alias)
        .to_string();
    let base = name.strip_prefix("/dev/").unwrap_or(&name).to_string();
    let block = sys.join("block");
    // A SCSI disk (a member path, or a LUN that is not multipathed).
    if !base.starts_with("dm-") && block.join(&base).join("device").exists() {
        let holders = list_dir(&block.join(&base).join("holders"));
        let maps: Vec<String> = holders
            .iter()
            .filter_map(|h| map_of_kernel(sys, h))
            .map(|m| m.name)
            .collect();
        let why = if maps.is_empty() {
            format!(
                "{base} is a single SCSI path, not a multipath map; LVM must use \
                 /dev/mapper/<alias> (start multipathd-rs so the LUN gets its map)"
            )
        } else {
            format!(
                "{base} is a member path of the multipath map {m}; LVM on a member path \
                 bypasses multipath: use `hostsync lun provision {m}`",
                m = maps.join(", ")
            )
        };
        return Err(not_multipath(alias, why));
    }
    let mut found_dm = None;
    for k in list_dir(&block)
        .into_iter()
        .filter(|k| k.starts_with("dm-"))
    {
        let dm = block.join(&k).join("dm");
        let n = read_trim(&dm.join("name")).unwrap_or_default();
        if n == name || k == base {
            let uuid = read_trim(&dm.join("uuid")).unwrap_or_default();
            found_dm = Some((k, n, uuid));
            break;
        }
    }
    let Some((kernel, n, uuid)) = found_dm else {
        return Err(not_multipath(
            alias,
            format!(
                "no device-mapper map is named {name:?} in {}; is the LUN multipathed?",
                block.display()
            ),
        ));
    };
    match map_of_kernel(sys, &kernel) {
        Some(m) => Ok(m),
        None => Err(not_multipath(
            alias,
            format!(
                "{n} ({kernel}) is a device-mapper device but not a multipath map (dm uuid {uuid:?} \
                 does not start with \"mpath-\")"
            ),
        )),
    }
}

/// How the cluster's LVM locks shared VGs, as seen on this host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LockdState {
    /// An `lvmlockd` process runs.
    pub running: bool,
    /// `global/use_lvmlockd = 1` in the LVM configuration.
    pub configured: bool,
}

impl LockdState {
    /// The cluster uses lvmlockd: VGs on shared LUNs are created shared.
    pub fn in_use(&self) -> bool {
        self.running || self.configured
    }
}

/// Whether lvmlockd runs (a process named `lvmlockd` under `proc`) and whether LVM is
/// configured for it (`lvmconfig --typeconfig full global/use_lvmlockd`).
pub fn detect_lockd(lvm: &Lvm<'_>, proc: &Path) -> LockdState {
    let running = list_dir(proc)
        .iter()
        .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        .any(|p| read_trim(&proc.join(p).join("comm")).as_deref() == Some("lvmlockd"));
    let cmd = lvm
        .command("lvmconfig")
        .args(["--typeconfig", "full", "global/use_lvmlockd"]);
    let configured = lvm
        .runner()
        .run(&cmd)
        .map(|o| {
            o.success()
                && o.stdout_text()
                    .split('=')
                    .nth(1)
                    .is_some_and(|v| v.trim() == "1")
        })
        .unwrap_or(false);
    LockdState {
        running,
        configured,
    }
}

/// What `lun provision` asks for.
#[derive(Debug, Clone, Default)]
pub struct ProvisionRequest {
    /// The map's alias.
    pub alias: String,
    /// The VG to create or extend.
    pub vg: String,
    /// Create the VG shared even when lvmlockd was not detected.
    pub shared: bool,
    /// `vgcreate -s` (extent size, e.g. `4m`), for a new VG.
    pub extent_size: Option<String>,
}

/// What `lun provision` did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProvisionReport {
    /// The map.
    pub map: MpathMap,
    /// The VG.
    pub vg: String,
    /// lvmlockd as detected.
    pub lockd: LockdState,
    /// The VG is (now) shared.
    pub shared: bool,
    /// `pvcreate` was run (false: the map already was a PV).
    pub pv_created: bool,
    /// `created`, `extended` or `unchanged` (the PV already was in the VG).
    pub vg_action: String,
    /// The LVM commands run that changed something.
    pub commands: Vec<String>,
}

/// Provisions the map `req.alias` into `req.vg`.
pub fn provision(lvm: &Lvm<'_>, roots: &Roots, req: &ProvisionRequest) -> Result<ProvisionReport> {
    let map = resolve_map(&roots.sys, &req.alias)?;
    if map.paths.is_empty() {
        return Err(not_multipath(
            &map.device,
            format!(
                "the multipath map {} has no paths in {}; provision it once a path is up",
                map.name,
                roots.sys.join("block").join(&map.kernel).display()
            ),
        ));
    }
    let lockd = detect_lockd(lvm, &roots.proc);
    let dev = map.device.clone();
    let dm_dev = format!("/dev/{}", map.kernel);
    let mut commands = Vec::new();
    // Is it a PV already? (LVM names a dm device /dev/mapper/<name>.)
    let pvs = lvm.pvs(&[])?;
    let member_pvs: Vec<_> = pvs
        .iter()
        .filter(|p| map.paths.iter().any(|s| p.name == format!("/dev/{s}")))
        .collect();
    if let Some(p) = member_pvs.first() {
        return Err(not_multipath(
            &dev,
            format!(
                "LVM sees the PV on the member path {} (not on {dev}): its filter does not hide \
                 member paths; fix the LVM filter and udev rule first (`hostsync doctor`)",
                p.name
            ),
        ));
    }
    let existing = pvs.iter().find(|p| p.name == dev || p.name == dm_dev);
    let pv_created = match existing {
        Some(p) if !p.vg.is_empty() && p.vg != req.vg => {
            return Err(not_multipath(
                &dev,
                format!(
                    "{dev} is already a PV of the VG {}; it is not given to {}",
                    p.vg, req.vg
                ),
            ));
        }
        Some(_) => false,
        None => {
            // No -y / -f: pvcreate refuses a device with a signature (a filesystem, a
            // partition table) since its stdin is not a terminal: fail closed.
            let cmd = lvm.command("pvcreate").arg(&dev);
            lvm.run(&cmd, &dev, "create a PV on")?;
            commands.push(cmd.line());
            true
        }
    };
    let in_vg = existing.is_some_and(|p| p.vg == req.vg);
    let vgs = lvm.vgs(&[])?;
    let (vg_action, shared) = match vgs.iter().find(|v| v.name == req.vg) {
        Some(v) if in_vg => ("unchanged", v.is_shared()),
        Some(v) => {
            if lockd.in_use() && !v.is_shared() {
                tracing::warn!(vg = %v.name, "extending a VG that is not shared while lvmlockd is in use");
            }
            let cmd = lvm
                .command("vgextend")
                .args([req.vg.as_str(), dev.as_str()]);
            lvm.run(&cmd, &req.vg, "extend")?;
            commands.push(cmd.line());
            ("extended", v.is_shared())
        }
        None => {
            let shared = req.shared || lockd.in_use();
            let mut cmd: Command = lvm.command("vgcreate");
            if shared {
                cmd = cmd.arg("--shared");
            }
            if let Some(s) = &req.extent_size {
                cmd = cmd.args(["-s", s.as_str()]);
            }
            cmd = cmd.args([req.vg.as_str(), dev.as_str()]);
            lvm.run(&cmd, &req.vg, "create")?;
            commands.push(cmd.line());
            ("created", shared)
        }
    };
    Ok(ProvisionReport {
        map,
        vg: req.vg.clone(),
        lockd,
        shared,
        pv_created,
        vg_action: vg_action.into(),
        commands,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::{Output, ScriptedRunner};
    use std::fs;

    /// A sysfs tree: sdb, sdc members of dm-0 (mpatha, mpath-3600a...), sdd a lone path,
    /// dm-1 a linear LV (no mpath uuid).
    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let b = t.path().join("sys/block");
        for (k, name, uuid) in [
            ("dm-0", "mpatha", "mpath-3600a098038303053453f463045727a41"),
            ("dm-1", "vg0-root", "LVM-abcdef"),
        ] {
            fs::create_dir_all(b.join(k).join("dm")).unwrap();
            fs::create_dir_all(b.join(k).join("slaves")).unwrap();
            fs::write(b.join(k).join("dm/name"), format!("{name}\n")).unwrap();
            fs::write(b.join(k).join("dm/uuid"), format!("{uuid}\n")).unwrap();
        }
        for s in ["sdb", "sdc", "sdd"] {
            fs::create_dir_all(b.join(s).join("device")).unwrap();
            fs::create_dir_all(b.join(s).join("holders")).unwrap();
        }
        for s in ["sdb", "sdc"] {
            fs::create_dir_all(b.join(s).join("holders/dm-0")).unwrap();
            fs::create_dir_all(b.join("dm-0/slaves").join(s)).unwrap();
        }
        fs::create_dir_all(t.path().join("proc/1")).unwrap();
        fs::write(t.path().join("proc/1/comm"), "init\n").unwrap();
        t
    }

    fn roots(t: &tempfile::TempDir) -> Roots {
        Roots {
            sys: t.path().join("sys"),
            proc: t.path().join("proc"),
        }
    }

    fn pvs(rows: &str) -> Output {
        Output::ok(format!(r#"{{"report":[{{"pv":[{rows}]}}]}}"#))
    }

    fn vgs(rows: &str) -> Output {
        Output::ok(format!(r#"{{"report":[{{"vg":[{rows}]}}]}}"#))
    }

    const VG_LOCAL: &str = r#"{"vg_name":"vgsan","vg_uuid":"V","vg_attr":"wz--n-","vg_size":"8388608","vg_free":"0","vg_extent_size":"4194304","vg_lock_type":"","vg_lock_args":"","pv_count":"1","lv_count":"0"}"#;

    #[test]
    fn resolves_a_multipath_map_by_alias_or_path() {
        let t = tree();
        let m = resolve_map(&t.path().join("sys"), "/dev/mapper/mpatha").unwrap();
        assert_eq!(m.kernel, "dm-0");
        assert_eq!(m.wwid, "3600a098038303053453f463045727a41");
        assert_eq!(m.paths, ["sdb", "sdc"]);
        assert_eq!(resolve_map(&t.path().join("sys"), "mpatha").unwrap(), m);
    }

    #[test]
    fn refuses_member_paths_lone_paths_and_non_multipath_maps() {
        let t = tree();
        let sys = t.path().join("sys");
        let e = resolve_map(&sys, "/dev/sdb").unwrap_err().to_string();
        assert!(
            e.contains("sdb is a member path of the multipath map mpatha"),
            "{e}"
        );
        assert!(e.contains("hostsync lun provision mpatha"), "{e}");
        let e = resolve_map(&sys, "sdd").unwrap_err().to_string();
        assert!(
            e.contains("sdd is a single SCSI path, not a multipath map"),
            "{e}"
        );
        let e = resolve_map(&sys, "vg0-root").unwrap_err().to_string();
        assert!(e.contains("not a multipath map"), "{e}");
        assert!(e.contains("LVM-abcdef"), "{e}");
        let e = resolve_map(&sys, "mpathz").unwrap_err().to_string();
        assert!(
            e.contains("no device-mapper map is named \"mpathz\""),
            "{e}"
        );
    }

    #[test]
    fn a_refused_member_path_runs_no_lvm_command() {
        let t = tree();
        let r = ScriptedRunner::new();
        let req = ProvisionRequest {
            alias: "/dev/sdc".into(),
            vg: "vgsan".into(),
            ..Default::default()
        };
        assert!(provision(&Lvm::new(&r), &roots(&t), &req).is_err());
        assert!(r.calls().is_empty(), "{:?}", r.lines());
    }

    #[test]
    fn new_pv_and_vg_created_shared_when_lvmlockd_runs() {
        let t = tree();
        fs::create_dir_all(t.path().join("proc/812")).unwrap();
        fs::write(t.path().join("proc/812/comm"), "lvmlockd\n").unwrap();
        let r = ScriptedRunner::new();
        r.expect(&["lvmconfig"], Output::ok("use_lvmlockd=0\n"))
            .expect(&["pvs"], pvs(""))
            .expect(&["pvcreate", "/dev/mapper/mpatha"], Output::ok(""))
            .expect(&["vgs"], vgs(""))
            .expect(&["vgcreate"], Output::ok(""));
        let req = ProvisionRequest {
            alias: "mpatha".into(),
            vg: "vgsan".into(),
            extent_size: Some("1m".into()),
            ..Default::default()
        };
        let rep = provision(&Lvm::new(&r), &roots(&t), &req).unwrap();
        assert!(rep.lockd.running && !rep.lockd.configured);
        assert!(rep.shared && rep.pv_created);
        assert_eq!(rep.vg_action, "created");
        assert_eq!(
            r.lines().last().unwrap(),
            "vgcreate --shared -s 1m vgsan /dev/mapper/mpatha"
        );
    }

    #[test]
    fn use_lvmlockd_in_the_config_makes_the_vg_shared_and_without_it_local() {
        let t = tree();
        for (conf, want) in [("use_lvmlockd=1\n", true), ("use_lvmlockd=0\n", false)] {
            let r = ScriptedRunner::new();
            r.expect(&["lvmconfig"], Output::ok(conf))
                .expect(&["pvs"], pvs(""))
                .expect(&["pvcreate"], Output::ok(""))
                .expect(&["vgs"], vgs(""))
                .expect(&["vgcreate"], Output::ok(""));
            let req = ProvisionRequest {
                alias: "mpatha".into(),
                vg: "vgsan".into(),
                ..Default::default()
            };
            let rep = provision(&Lvm::new(&r), &roots(&t), &req).unwrap();
            assert_eq!(rep.shared, want, "{conf}");
            assert_eq!(
                r.lines().last().unwrap().contains("--shared"),
                want,
                "{:?}",
                r.lines()
            );
        }
    }

    #[test]
    fn an_existing_vg_is_extended_and_a_pv_already_in_it_is_left_alone() {
        let t = tree();
        let r = ScriptedRunner::new();
        r.expect(&["lvmconfig"], Output::ok("use_lvmlockd=0\n"))
            .expect(&["pvs"], pvs(""))
            .expect(&["pvcreate"], Output::ok(""))
            .expect(&["vgs"], vgs(VG_LOCAL))
            .expect(&["vgextend", "vgsan", "/dev/mapper/mpatha"], Output::ok(""));
        let req = ProvisionRequest {
            alias: "mpatha".into(),
            vg: "vgsan".into(),
            ..Default::default()
        };
        let rep = provision(&Lvm::new(&r), &roots(&t), &req).unwrap();
        assert_eq!(rep.vg_action, "extended");

        let r = ScriptedRunner::new();
        r.expect(&["lvmconfig"], Output::ok("use_lvmlockd=0\n"))
            .expect(
                &["pvs"],
                pvs(r#"{"pv_name":"/dev/mapper/mpatha","vg_name":"vgsan","pv_uuid":"P","pv_size":"1","pv_free":"0","dev_size":"1"}"#),
            )
            .expect(&["vgs"], vgs(VG_LOCAL));
        let rep = provision(&Lvm::new(&r), &roots(&t), &req).unwrap();
        assert_eq!(rep.vg_action, "unchanged");
        assert!(!rep.pv_created && rep.commands.is_empty());
    }

    #[test]
    fn refuses_a_pv_of_another_vg_and_a_pv_seen_on_a_member_path() {
        let t = tree();
        let req = ProvisionRequest {
            alias: "mpatha".into(),
            vg: "vgsan".into(),
            ..Default::default()
        };
        for (row, want) in [
            (
                r#"{"pv_name":"/dev/mapper/mpatha","vg_name":"other","pv_uuid":"P","pv_size":"1","pv_free":"0","dev_size":"1"}"#,
                "already a PV of the VG other",
            ),
            (
                r#"{"pv_name":"/dev/sdc","vg_name":"other","pv_uuid":"P","pv_size":"1","pv_free":"0","dev_size":"1"}"#,
                "LVM sees the PV on the member path /dev/sdc",
            ),
        ] {
            let r = ScriptedRunner::new();
            r.expect(&["lvmconfig"], Output::ok("use_lvmlockd=0\n"))
                .expect(&["pvs"], pvs(row));
            let e = provision(&Lvm::new(&r), &roots(&t), &req)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e}");
            assert!(
                !r.lines().iter().any(|l| l.starts_with("pvcreate")
                    || l.starts_with("vgcreate")
                    || l.starts_with("vgextend")),
                "{:?}",
                r.lines()
            );
        }
    }

    #[test]
    fn pvcreate_refusing_a_signature_is_an_error_naming_the_map() {
        let t = tree();
        let r = ScriptedRunner::new();
        r.expect(&["lvmconfig"], Output::ok("use_lvmlockd=0\n"))
            .expect(&["pvs"], pvs(""))
            .expect(
                &["pvcreate"],
                Output::fail(
                    5,
                    "WARNING: ext4 signature detected on /dev/mapper/mpatha at offset 1080. Wipe it? [y/n]: [n]\n  Aborted wiping of ext4.\n",
                ),
            );
        let req = ProvisionRequest {
            alias: "mpatha".into(),
            vg: "vgsan".into(),
            ..Default::default()
        };
        let e = provision(&Lvm::new(&r), &roots(&t), &req)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("LVM could not create a PV on /dev/mapper/mpatha: WARNING: ext4"),
            "{e}"
        );
    }
}
