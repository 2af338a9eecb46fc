//! A domU's disks as LVs: `domu disk create`, `domu clone` (a snapshot clone of a golden
//! image), `domu snapshot|undo|commit` (a safety snapshot before a risky change; undo merges it
//! back, commit drops it).
//!
//! What hostsync records in LV tags (so it survives the origin being merged or renamed):
//! `hostsync.origin=VG/GOLDEN` on a clone, `hostsync.snapshot-of=NAME` on a safety snapshot
//! (named `NAME-snap`).

use serde::Serialize;

use crate::lvm::{Lv, Lvm};
use crate::{Error, Result};

/// The tag key recording a clone's golden image.
pub const ORIGIN_TAG: &str = "hostsync.origin";
/// The tag key marking a safety snapshot of a disk.
pub const SNAPSHOT_TAG: &str = "hostsync.snapshot-of";
/// The suffix of a safety snapshot's name.
pub const SNAPSHOT_SUFFIX: &str = "-snap";

fn err(target: &str, action: &str, message: impl Into<String>) -> Error {
    Error::Lvm {
        target: target.into(),
        action: action.into(),
        message: message.into(),
    }
}

/// Parses a size as LVM's `-L` takes it: a number with an optional unit `b k m g t p` (powers
/// of 1024, case-insensitive, `iB`/`B` tolerated; no unit is MiB as in LVM). Returns bytes.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let lower = lower
        .strip_suffix("ib")
        .or_else(|| {
            lower
                .strip_suffix('b')
                .filter(|r| !r.is_empty() && !r.ends_with(|c: char| c.is_ascii_digit()))
        })
        .unwrap_or(&lower)
        .to_string();
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (num, unit) = lower.split_at(split);
    let mult: u64 = match unit {
        "" | "m" => 1 << 20,
        "b" => 1,
        "k" => 1 << 10,
        "g" => 1 << 30,
        "t" => 1 << 40,
        "p" => 1 << 50,
        _ => return Err(format!("{s:?} has an unknown unit (use k, m, g or t)")),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 10g, 512m)"))?;
    if v.is_nan() || v <= 0.0 {
        return Err(format!("{s:?} is not a positive size"));
    }
    Ok((v * mult as f64).ceil() as u64)
}

/// An LV or VG name LVM accepts: `[A-Za-z0-9+_.-]`, not starting with `-`, not `.`/`..`,
/// at most 127 characters, not ending in LVM's reserved suffixes.
pub fn check_name(kind: &str, name: &str) -> Result<()> {
    let bad = |why: &str| err(name, &format!("use {kind} name"), why.to_string());
    if name.is_empty() || name.len() > 127 {
        return Err(bad("a name has 1 to 127 characters"));
    }
    if name.starts_with('-') || name == "." || name == ".." {
        return Err(bad("a name must not start with '-' or be '.' or '..'"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '_' | '.' | '-'))
    {
        return Err(bad("LVM names use only letters, digits and + _ . -"));
    }
    for r in [
        "_cdata", "_cmeta", "_corig", "_mlog", "_mimage", "_pmspare", "_rimage", "_rmeta",
        "_tdata", "_tmeta", "_vorigin", "_vdata",
    ] {
        if name.contains(r) {
            return Err(bad(&format!("LVM reserves names containing {r}")));
        }
    }
    Ok(())
}

/// The VG to use: `vg` when given, else the only VG this host sees.
pub fn pick_vg(lvm: &Lvm<'_>, vg: Option<&str>) -> Result<String> {
    if let Some(v) = vg {
        return Ok(v.to_string());
    }
    let vgs = lvm.vgs(&[])?;
    match vgs.as_slice() {
        [one] => Ok(one.name.clone()),
        [] => Err(err(
            "every VG",
            "choose a VG among",
            "LVM sees no VG; give --vg or run `hostsync lun provision` first",
        )),
        many => Err(err(
            "every VG",
            "choose a VG among",
            format!(
                "there are {} VGs ({}); say which with --vg",
                many.len(),
                many.iter()
                    .map(|v| v.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// Finds the LV `NAME` or `VG/NAME` (`vg` narrows the search) with one `lvs`; returns it and
/// every LV of its VG. An error names it when it does not exist or is ambiguous.
pub fn find_lv(lvm: &Lvm<'_>, name: &str, vg: Option<&str>) -> Result<(Lv, Vec<Lv>)> {
    let (vg, name) = match name.split_once('/') {
        Some((v, n)) => (Some(v), n),
        None => (vg, name),
    };
    let all = match vg {
        Some(v) => lvm.lvs(&[v])?,
        None => lvm.lvs(&[])?,
    };
    let found: Vec<&Lv> = all
        .iter()
        .filter(|l| l.name == name && vg.is_none_or(|v| l.vg == v))
        .collect();
    let lv = match found.as_slice() {
        [one] => (*one).clone(),
        [] => {
            return Err(match vg {
                Some(v) => err(&format!("{v}/{name}"), "find", "no such LV"),
                None => err(name, "find", "no VG has an LV of that name"),
            });
        }
        many => {
            return Err(err(
                name,
                "find",
                format!(
                    "several VGs have one ({}); say which with VG/{name} or --vg",
                    many.iter()
                        .map(|l| l.vg.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    };
    let siblings = all.into_iter().filter(|l| l.vg == lv.vg).collect();
    Ok((lv, siblings))
}

/// The lines an admin pastes into a domU's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskLines {
    /// `/dev/VG/LV`.
    pub device: String,
    /// The `disk = [ ... ]` entry for xl (xl-disk-configuration(5)).
    pub xl: String,
    /// The `<disk>` element for libvirt (Xen `libxl` or KVM `qemu` driver).
    pub libvirt: String,
}

/// Disk lines for `/dev/VG/LV` as the guest's `vdev` (`xvda`, `vdb`, ...).
pub fn disk_lines(vg: &str, lv: &str, vdev: &str) -> DiskLines {
    let device = format!("/dev/{vg}/{lv}");
    let bus = if vdev.starts_with("xvd") {
        "xen"
    } else if vdev.starts_with("vd") {
        "virtio"
    } else {
        "scsi"
    };
    DiskLines {
        xl: format!("'phy:{device},{vdev},w'"),
        libvirt: format!(
            "<disk type='block' device='disk'>\n  <driver name='phy'/>\n  <source dev='{device}'/>\n  <target dev='{vdev}' bus='{bus}'/>\n</disk>"
        ),
        device,
    }
}

/// What a disk command did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiskReport {
    /// `VG/LV` acted on (the new LV for create, clone and snapshot).
    pub lv: String,
    /// What was done (`created`, `cloned (cow)`, `cloned (thin)`, `snapshot`, `undone`,
    /// `committed`).
    pub action: String,
    /// The origin (golden image, or the disk of a snapshot).
    pub origin: Option<String>,
    /// The LVM commands run.
    pub commands: Vec<String>,
    /// Lines to paste (create and clone).
    pub lines: Option<DiskLines>,
}

/// `domu disk create NAME --size SIZE [--vg VG]`.
pub fn create(
    lvm: &Lvm<'_>,
    name: &str,
    size: u64,
    vg: Option<&str>,
    vdev: &str,
) -> Result<DiskReport> {
    check_name("an LV", name)?;
    let vg = pick_vg(lvm, vg)?;
    let full = format!("{vg}/{name}");
    // An existing name is refused by lvcreate itself ("already exists"), named in the error.
    // -Zy -Wy: a fresh disk starts zeroed at its head and without an old filesystem's
    // signature; -y answers LVM's wipe question (the LV is new, nothing of the admin's is on it).
    let cmd = lvm.command("lvcreate").args([
        "-y",
        "-Wy",
        "-Zy",
        "-n",
        name,
        "-L",
        &format!("{size}b"),
        &vg,
    ]);
    lvm.run(&cmd, &full, "create")?;
    Ok(DiskReport {
        lv: full,
        action: "created".into(),
        origin: None,
        commands: vec![cmd.line()],
        lines: Some(disk_lines(&vg, name, vdev)),
    })
}

fn refuse_open(lv: &Lv, what: &str) -> Result<()> {
    if lv.open {
        return Err(err(
            &lv.full_name(),
            what,
            "it is open (a running domU or a mount holds it); stop the domU (or unmount) first: \
             this needs the disk quiet",
        ));
    }
    Ok(())
}

/// The default COW size of a clone or safety snapshot: a quarter of the origin, at least
/// 4 MiB (the watcher extends it as it fills).
pub fn default_cow_size(origin: &Lv) -> u64 {
    (origin.size / 4).max(4 << 20)
}

/// `domu clone GOLDEN NAME [--cow-size SIZE]`: a thin snapshot when the golden image is a thin
/// volume, a COW snapshot of `cow_size` otherwise; the origin is tagged on the clone. The
/// golden image must not be open (a clone of a disk in use is not consistent).
pub fn clone(
    lvm: &Lvm<'_>,
    golden: &str,
    name: &str,
    cow_size: Option<u64>,
    vg: Option<&str>,
    vdev: &str,
) -> Result<DiskReport> {
    check_name("an LV", name)?;
    let (g, siblings) = find_lv(lvm, golden, vg)?;
    refuse_open(&g, "clone")?;
    if g.is_cow_snapshot() {
        return Err(err(
            &g.full_name(),
            "clone",
            "it is itself a COW snapshot; LVM cannot snapshot a snapshot: clone its origin",
        ));
    }
    let full = format!("{}/{name}", g.vg);
    if siblings.iter().any(|l| l.name == name) {
        return Err(err(
            &full,
            "create",
            "an LV of that name exists already; nothing was changed",
        ));
    }
    let tag = format!("{ORIGIN_TAG}={}", g.full_name());
    let (cmd, action) = if g.is_thin_volume() {
        // -kn: a thin snapshot is created with activation skip set; a clone is meant to run.
        (
            lvm.command("lvcreate").args([
                "-s",
                "-kn",
                "-n",
                name,
                "--addtag",
                &tag,
                &g.full_name(),
            ]),
            "cloned (thin)",
        )
    } else {
        let size = cow_size.unwrap_or_else(|| default_cow_size(&g));
        (
            lvm.command("lvcreate").args([
                "-s",
                "-n",
                name,
                "-L",
                &format!("{size}b"),
                "--addtag",
                &tag,
                &g.full_name(),
            ]),
            "cloned (cow)",
        )
    };
    lvm.run(&cmd, &full, "create the clone")?;
    Ok(DiskReport {
        lv: full,
        action: action.into(),
        origin: Some(g.full_name()),
        commands: vec![cmd.line()],
        lines: Some(disk_lines(&g.vg, name, vdev)),
    })
}

/// The safety snapshot of `disk` among the LVs of its VG (tagged, or named `<disk>-snap` with
/// `disk` as origin).
fn safety_snapshot(disk: &Lv, siblings: &[Lv]) -> Option<Lv> {
    let snap = format!("{}{SNAPSHOT_SUFFIX}", disk.name);
    siblings
        .iter()
        .find(|l| {
            l.tag(SNAPSHOT_TAG) == Some(disk.name.as_str())
                || (l.name == snap && l.origin == disk.name)
        })
        .cloned()
}

/// `domu snapshot NAME [--cow-size SIZE]`: `NAME-snap`, a snapshot to undo or commit later.
pub fn snapshot(
    lvm: &Lvm<'_>,
    name: &str,
    cow_size: Option<u64>,
    vg: Option<&str>,
) -> Result<DiskReport> {
    let (d, siblings) = find_lv(lvm, name, vg)?;
    if d.is_cow_snapshot() || d.tag(SNAPSHOT_TAG).is_some() {
        return Err(err(&d.full_name(), "snapshot", "it is a snapshot itself"));
    }
    if let Some(s) = safety_snapshot(&d, &siblings) {
        return Err(err(
            &d.full_name(),
            "snapshot",
            format!(
                "it has a snapshot already ({}); undo or commit it first",
                s.full_name()
            ),
        ));
    }
    let sname = format!("{}{SNAPSHOT_SUFFIX}", d.name);
    let full = format!("{}/{sname}", d.vg);
    let tag = format!("{SNAPSHOT_TAG}={}", d.name);
    let cmd = if d.is_thin_volume() {
        lvm.command("lvcreate")
            .args(["-s", "-n", &sname, "--addtag", &tag, &d.full_name()])
    } else {
        let size = cow_size.unwrap_or_else(|| default_cow_size(&d));
        lvm.command("lvcreate").args([
            "-s",
            "-n",
            &sname,
            "-L",
            &format!("{size}b"),
            "--addtag",
            &tag,
            &d.full_name(),
        ])
    };
    lvm.run(&cmd, &full, "create the snapshot")?;
    Ok(DiskReport {
        lv: full,
        action: "snapshot".into(),
        origin: Some(d.full_name()),
        commands: vec![cmd.line()],
        lines: None,
    })
}

fn disk_and_snapshot(lvm: &Lvm<'_>, name: &str, vg: Option<&str>, what: &str) -> Result<(Lv, Lv)> {
    let (d, siblings) = find_lv(lvm, name, vg)?;
    let s = safety_snapshot(&d, &siblings).ok_or_else(|| {
        err(&d.full_name(), what, format!("it has no snapshot ({}{SNAPSHOT_SUFFIX}); take one with `hostsync domu snapshot {}`", d.name, d.name))
    })?;
    Ok((d, s))
}

/// `domu undo NAME`: merges the snapshot back (`lvconvert --merge`), so the disk returns to its
/// state at the snapshot; the snapshot is gone afterwards. Refused while the disk or the
/// snapshot is open (LVM would postpone the merge to the next activation: the domU would keep
/// running on the changed data) and when the snapshot is invalid (its COW area filled: it no
/// longer holds the old state).
pub fn undo(lvm: &Lvm<'_>, name: &str, vg: Option<&str>) -> Result<DiskReport> {
    let (d, s) = disk_and_snapshot(lvm, name, vg, "undo")?;
    refuse_open(&d, "undo the changes of")?;
    refuse_open(&s, "merge")?;
    if s.is_invalid_snapshot() {
        return Err(err(
            &s.full_name(),
            "merge",
            "it is invalid (its COW area filled up), so it no longer holds the state to return to; nothing was changed",
        ));
    }
    let cmd = lvm
        .command("lvconvert")
        .args(["--merge", "-i", "1", &s.full_name()]);
    lvm.run(&cmd, &d.full_name(), "merge the snapshot back into")?;
    Ok(DiskReport {
        lv: d.full_name(),
        action: "undone".into(),
        origin: Some(d.full_name()),
        commands: vec![cmd.line()],
        lines: None,
    })
}

/// `domu commit NAME`: drops the snapshot and keeps the changes (the disk may be in use).
pub fn commit(lvm: &Lvm<'_>, name: &str, vg: Option<&str>) -> Result<DiskReport> {
    let (d, s) = disk_and_snapshot(lvm, name, vg, "commit")?;
    refuse_open(&s, "remove")?;
    let cmd = lvm.command("lvremove").args(["-y", &s.full_name()]);
    lvm.run(&cmd, &s.full_name(), "remove")?;
    Ok(DiskReport {
        lv: d.full_name(),
        action: "committed".into(),
        origin: Some(d.full_name()),
        commands: vec![cmd.line()],
        lines: None,
    })
}

/// A human rendering of a report.
pub fn render(r: &DiskReport) -> String {
    let mut s = format!("{}: {}", r.lv, r.action);
    if let Some(o) = &r.origin
        && *o != r.lv
    {
        s.push_str(&format!(" (origin {o})"));
    }
    s.push('\n');
    if let Some(l) = &r.lines {
        s.push_str(&format!(
            "xl:      disk = [ {} ]\nlibvirt:\n{}\n",
            l.xl, l.libvirt
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::{Output, ScriptedRunner};

    fn lv_row(
        name: &str,
        attr: &str,
        size: u64,
        origin: &str,
        pool: &str,
        open: bool,
        tags: &str,
    ) -> String {
        format!(
            r#"{{"lv_name":"{name}","vg_name":"vgsan","lv_uuid":"u-{name}","lv_attr":"{attr}","lv_size":"{size}","origin":"{origin}","pool_lv":"{pool}","snap_percent":"","data_percent":"","metadata_percent":"","lv_active_locally":"1","lv_active_exclusively":"1","lv_device_open":"{}","lv_lock_args":"","lv_path":"/dev/vgsan/{name}","lv_dm_path":"/dev/mapper/vgsan-{name}","lv_tags":"{tags}"}}"#,
            u8::from(open)
        )
    }

    fn web01(attr: &str, open: bool) -> String {
        lv_row("web01", attr, 64 << 20, "", "", open, "")
    }

    fn web01_snap(attr: &str) -> String {
        lv_row(
            "web01-snap",
            attr,
            16 << 20,
            "web01",
            "",
            false,
            "hostsync.snapshot-of=web01",
        )
    }

    fn lvs(rows: &[String]) -> Output {
        Output::ok(format!(r#"{{"report":[{{"lv":[{}]}}]}}"#, rows.join(",")))
    }

    #[test]
    fn sizes_parse_like_lvm() {
        assert_eq!(parse_size("128m").unwrap(), 128 << 20);
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("64").unwrap(), 64 << 20);
        assert_eq!(parse_size("4096b").unwrap(), 4096);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5x").unwrap_err().contains("unknown unit"));
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn names_lvm_refuses_are_refused_before_lvm_runs() {
        assert!(check_name("an LV", "web01-disk0").is_ok());
        for bad in ["", "-x", "a b", "a/b", "x_tmeta", ".."] {
            assert!(check_name("an LV", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn create_makes_the_lv_and_prints_xl_and_libvirt_lines() {
        let r = ScriptedRunner::new();
        r.expect(&["vgs"], Output::ok(r#"{"report":[{"vg":[{"vg_name":"vgsan","vg_size":"1","vg_free":"1","vg_extent_size":"1","pv_count":"1","lv_count":"0"}]}]}"#))
            .expect(&["lvs"], lvs(&[]))
            .expect(&["lvcreate"], Output::ok(""));
        let rep = create(&Lvm::new(&r), "web01", 4 << 30, None, "xvda").unwrap();
        assert_eq!(rep.lv, "vgsan/web01");
        assert_eq!(
            r.lines().last().unwrap(),
            "lvcreate -y -Wy -Zy -n web01 -L 4294967296b vgsan"
        );
        let l = rep.lines.unwrap();
        assert_eq!(l.xl, "'phy:/dev/vgsan/web01,xvda,w'");
        assert!(
            l.libvirt.contains("<source dev='/dev/vgsan/web01'/>"),
            "{}",
            l.libvirt
        );
        assert!(
            l.libvirt.contains("<target dev='xvda' bus='xen'/>"),
            "{}",
            l.libvirt
        );
    }

    #[test]
    fn create_refuses_an_existing_name_and_an_ambiguous_vg() {
        let r = ScriptedRunner::new();
        r.expect(
            &["lvcreate"],
            Output::fail(
                5,
                "  Logical Volume \"web01\" already exists in volume group \"vgsan\"\n",
            ),
        );
        let e = create(&Lvm::new(&r), "web01", 1 << 30, Some("vgsan"), "xvda")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("LVM could not create vgsan/web01: ") && e.contains("already exists"),
            "{e}"
        );
        let r = ScriptedRunner::new();
        r.expect(
            &["vgs"],
            Output::ok(r#"{"report":[{"vg":[{"vg_name":"a"},{"vg_name":"b"}]}]}"#),
        );
        let e = create(&Lvm::new(&r), "web01", 1 << 30, None, "xvda")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("there are 2 VGs (a, b); say which with --vg"),
            "{e}"
        );
        assert!(!r.lines().iter().any(|l| l.starts_with("lvcreate")));
    }

    #[test]
    fn clone_is_cow_with_its_origin_tagged_or_thin_on_a_thin_golden() {
        let r = ScriptedRunner::new();
        let golden = lv_row("golden", "-wi-a-----", 64 << 20, "", "", false, "");
        r.expect(&["lvs"], lvs(&[golden]))
            .expect(&["lvcreate"], Output::ok(""));
        let rep = clone(&Lvm::new(&r), "golden", "c1", Some(8 << 20), None, "xvda").unwrap();
        assert_eq!(rep.action, "cloned (cow)");
        assert_eq!(
            r.lines().last().unwrap(),
            "lvcreate -s -n c1 -L 8388608b --addtag hostsync.origin=vgsan/golden vgsan/golden"
        );
        let r = ScriptedRunner::new();
        let tg = lv_row("tgold", "Vwi-a-tz--", 64 << 20, "", "pool0", false, "");
        r.expect(&["lvs"], lvs(&[tg]))
            .expect(&["lvcreate"], Output::ok(""));
        let rep = clone(&Lvm::new(&r), "vgsan/tgold", "t1", None, None, "xvda").unwrap();
        assert_eq!(rep.action, "cloned (thin)");
        assert_eq!(
            r.lines().last().unwrap(),
            "lvcreate -s -kn -n t1 --addtag hostsync.origin=vgsan/tgold vgsan/tgold"
        );
    }

    #[test]
    fn clone_of_an_open_golden_is_refused() {
        let r = ScriptedRunner::new();
        r.expect(
            &["lvs"],
            lvs(&[lv_row("golden", "-wi-ao----", 64 << 20, "", "", true, "")]),
        );
        let e = clone(&Lvm::new(&r), "golden", "c1", None, None, "xvda")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("vgsan/golden") && e.contains("it is open"),
            "{e}"
        );
        assert!(!r.lines().iter().any(|l| l.starts_with("lvcreate")));
    }

    #[test]
    fn snapshot_then_undo_merges_and_commit_removes() {
        let disk = web01("owi-a-s---", false);
        let snap = web01_snap("swi-a-s---");
        let r = ScriptedRunner::new();
        r.expect(&["lvs"], lvs(&[web01("-wi-a-----", false)]))
            .expect(&["lvcreate"], Output::ok(""));
        let rep = snapshot(&Lvm::new(&r), "web01", None, Some("vgsan")).unwrap();
        assert_eq!(rep.lv, "vgsan/web01-snap");
        assert_eq!(
            r.lines().last().unwrap(),
            "lvcreate -s -n web01-snap -L 16777216b --addtag hostsync.snapshot-of=web01 vgsan/web01"
        );

        let r = ScriptedRunner::new();
        r.expect(&["lvs"], lvs(&[disk.clone(), snap.clone()]))
            .expect(&["lvconvert", "--merge"], Output::ok(""));
        let rep = undo(&Lvm::new(&r), "web01", None).unwrap();
        assert_eq!(rep.action, "undone");
        assert_eq!(
            r.lines().last().unwrap(),
            "lvconvert --merge -i 1 vgsan/web01-snap"
        );

        let r = ScriptedRunner::new();
        r.expect(&["lvs"], lvs(&[disk, snap]))
            .expect(&["lvremove"], Output::ok(""));
        commit(&Lvm::new(&r), "web01", None).unwrap();
        assert_eq!(r.lines().last().unwrap(), "lvremove -y vgsan/web01-snap");
    }

    #[test]
    fn undo_is_refused_while_the_disk_is_open_or_the_snapshot_invalid() {
        let snap = web01_snap("swi-a-s---");
        let open_disk = web01("owi-aos---", true);
        let r = ScriptedRunner::new();
        r.expect(&["lvs"], lvs(&[open_disk, snap]));
        let e = undo(&Lvm::new(&r), "web01", None).unwrap_err().to_string();
        assert!(
            e.contains("could not undo the changes of vgsan/web01: it is open"),
            "{e}"
        );
        assert!(e.contains("stop the domU"), "{e}");
        assert!(!r.lines().iter().any(|l| l.starts_with("lvconvert")));

        let disk = web01("owi-a-s---", false);
        let bad = web01_snap("swi-I-s---");
        let r = ScriptedRunner::new();
        r.expect(&["lvs"], lvs(&[disk, bad]));
        let e = undo(&Lvm::new(&r), "web01", None).unwrap_err().to_string();
        assert!(e.contains("it is invalid"), "{e}");
        assert!(!r.lines().iter().any(|l| l.starts_with("lvconvert")));
    }

    #[test]
    fn a_second_snapshot_and_undo_without_one_are_refused() {
        let disk = web01("owi-a-s---", false);
        let snap = web01_snap("swi-a-s---");
        let r = ScriptedRunner::new();
        r.expect(&["lvs"], lvs(&[disk.clone(), snap]));
        let e = snapshot(&Lvm::new(&r), "web01", None, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("has a snapshot already (vgsan/web01-snap)"),
            "{e}"
        );
        let r = ScriptedRunner::new();
        r.expect(&["lvs"], lvs(&[disk]));
        let e = undo(&Lvm::new(&r), "web01", None).unwrap_err().to_string();
        assert!(e.contains("it has no snapshot (web01-snap)"), "{e}");
    }
}
