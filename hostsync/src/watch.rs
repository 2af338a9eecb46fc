//! `hostsync watch snapshots`: the fill level of every COW snapshot and thin pool, a warning
//! threshold, and automatic extension from the VG's free space before it fills (what dmeventd
//! does with `snapshot_autoextend_threshold` / `snapshot_autoextend_percent` and the thin pool
//! equivalents), so a clone is never invalidated silently. An invalidated snapshot is reported
//! loudly.
//!
//! One pass: `lvs -a` and `vgs` (JSON), [`assess`] (pure: what each LV's state is and what to
//! extend, keeping account of the VG's free space as extensions are planned), then one
//! `lvextend` per planned extension. A loop is passes every interval (the binary's job).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::Result;
use crate::lvm::{Lv, Lvm, Vg};

/// Thresholds and extension size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WatchOptions {
    /// Fill level (percent) at which a snapshot or pool is extended (or warned about).
    pub threshold: f64,
    /// Grow by this percentage of the current size (at least one extent).
    pub extend_by: f64,
    /// Extend (false: only report).
    pub extend: bool,
}

impl Default for WatchOptions {
    /// dmeventd's example values: extend at 70 %, by 20 %.
    fn default() -> Self {
        WatchOptions {
            threshold: 70.0,
            extend_by: 20.0,
            extend: true,
        }
    }
}

/// What a watched LV is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A COW snapshot (`snap_percent`).
    Snapshot,
    /// A thin pool's data (`data_percent`).
    ThinPool,
    /// A thin pool's metadata (`metadata_percent`).
    ThinPoolMetadata,
}

/// An LV's state after a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Below the threshold.
    Ok,
    /// Not active here: no fill level to read.
    Inactive,
    /// Extended in this pass.
    Extended,
    /// At or above the threshold and not extended (`--no-extend`).
    Warning,
    /// At or above the threshold and as large as it can usefully be (a COW area as large as its
    /// origin cannot fill).
    AtMaximum,
    /// At or above the threshold, and the VG has no free extent to extend it.
    NoSpace,
    /// The lvextend failed.
    ExtendFailed,
    /// An invalidated snapshot (its COW area filled; the kernel dropped it), or a full thin
    /// pool.
    Invalid,
}

impl State {
    /// Needs the admin.
    pub fn is_problem(self) -> bool {
        matches!(
            self,
            State::Warning | State::NoSpace | State::ExtendFailed | State::Invalid
        )
    }
}

/// One watched LV.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Item {
    /// `VG/LV`.
    pub lv: String,
    /// What it is.
    pub kind: Kind,
    /// The snapshot's origin (COW), from LVM or hostsync's origin tag.
    pub origin: Option<String>,
    /// Size in bytes (COW area; pool data; pool metadata) before this pass.
    pub size: u64,
    /// Fill level in percent.
    pub fill: Option<f64>,
    /// The state.
    pub state: State,
    /// The new size when extended (or planned).
    pub extend_to: Option<u64>,
    /// A sentence for the admin (empty when OK).
    pub message: String,
}

/// The result of a pass.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Watched LVs.
    pub items: Vec<Item>,
    /// Free bytes per VG after the pass's extensions.
    pub vg_free: BTreeMap<String, u64>,
    /// Items needing the admin.
    pub problems: usize,
    /// LVM commands run.
    pub commands: Vec<String>,
}

fn round_up(v: u64, extent: u64) -> u64 {
    if extent == 0 {
        v
    } else {
        v.div_ceil(extent) * extent
    }
}

fn gib(b: u64) -> String {
    if b >= 1 << 30 {
        format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    }
}

/// Assesses every COW snapshot and thin pool of `lvs` (from `lvs -a`) against `opts`, planning
/// extensions from `vgs`' free space (an extension planned for one LV is no longer free for the
/// next). Pure: nothing is run.
pub fn assess(lvs: &[Lv], vgs: &[Vg], opts: &WatchOptions) -> Report {
    let mut free: BTreeMap<String, u64> = vgs.iter().map(|v| (v.name.clone(), v.free)).collect();
    let extent: BTreeMap<&str, u64> = vgs
        .iter()
        .map(|v| (v.name.as_str(), v.extent_size))
        .collect();
    let mut items = Vec::new();
    for lv in lvs {
        let mut watch = Vec::new();
        if lv.is_cow_snapshot() {
            watch.push((Kind::Snapshot, lv.size, lv.snap_percent));
        } else if lv.is_thin_pool() {
            watch.push((Kind::ThinPool, lv.size, lv.data_percent));
            let meta = format!("[{}_tmeta]", lv.name);
            let msize = lvs
                .iter()
                .find(|m| m.vg == lv.vg && m.name == meta)
                .map(|m| m.size)
                .unwrap_or(0);
            watch.push((Kind::ThinPoolMetadata, msize, lv.metadata_percent));
        }
        for (kind, size, fill) in watch {
            items.push(assess_one(
                lv, lvs, kind, size, fill, opts, &extent, &mut free,
            ));
        }
    }
    let problems = items.iter().filter(|i| i.state.is_problem()).count();
    Report {
        items,
        vg_free: free,
        problems,
        commands: Vec::new(),
    }
}

#[allow(clippy::too_many_arguments)]
fn assess_one(
    lv: &Lv,
    lvs: &[Lv],
    kind: Kind,
    size: u64,
    fill: Option<f64>,
    opts: &WatchOptions,
    extent: &BTreeMap<&str, u64>,
    free: &mut BTreeMap<String, u64>,
) -> Item {
    let origin = if kind == Kind::Snapshot {
        if lv.origin.is_empty() {
            lv.tag(crate::domu_disk::ORIGIN_TAG).map(str::to_string)
        } else {
            Some(format!("{}/{}", lv.vg, lv.origin))
        }
    } else {
        None
    };
    let mut item = Item {
        lv: lv.full_name(),
        kind,
        origin: origin.clone(),
        size,
        fill,
        state: State::Ok,
        extend_to: None,
        message: String::new(),
    };
    let what = match kind {
        Kind::Snapshot => "snapshot",
        Kind::ThinPool => "thin pool",
        Kind::ThinPoolMetadata => "thin pool metadata of",
    };
    if kind == Kind::Snapshot && lv.is_invalid_snapshot() {
        item.state = State::Invalid;
        item.message = format!(
            "INVALID: {what} {} {}filled its copy-on-write area and the kernel invalidated it: \
             the data written to it is lost; remove it (lvremove) and clone again",
            lv.full_name(),
            origin
                .as_deref()
                .map(|o| format!("(clone of {o}) "))
                .unwrap_or_default()
        );
        return item;
    }
    let Some(pct) = fill else {
        item.state = State::Inactive;
        return item;
    };
    if kind != Kind::Snapshot && pct >= 100.0 {
        item.state = State::Invalid;
        item.message = format!(
            "FULL: {what} {} is 100 % full: writes to its thin volumes fail or queue",
            lv.full_name()
        );
        // Still try to extend below: a full pool resumes once it has space.
    } else if pct < opts.threshold {
        return item;
    }
    let ext = extent.get(lv.vg.as_str()).copied().unwrap_or(0).max(1);
    let mut delta = round_up(((size as f64) * opts.extend_by / 100.0).ceil() as u64, ext).max(ext);
    if kind == Kind::Snapshot {
        // A COW area a little larger than its origin (exception metadata) cannot fill.
        if let Some(o) = lvs.iter().find(|o| o.vg == lv.vg && o.name == lv.origin) {
            let cap = round_up(o.size + o.size / 32 + ext, ext);
            if size >= cap {
                item.state = State::AtMaximum;
                item.message = format!(
                    "{what} {} is {pct:.1} % full but its COW area ({}) is already as large as \
                     its origin: it cannot overflow",
                    lv.full_name(),
                    gib(size)
                );
                return item;
            }
            delta = delta.min(cap - size);
        }
    }
    let vg_free = free.get(&lv.vg).copied().unwrap_or(0);
    let full_note = |item: &Item| {
        if item.state == State::Invalid {
            format!("{}; ", item.message)
        } else {
            String::new()
        }
    };
    if !opts.extend {
        item.message = format!(
            "{}{what} {} is {pct:.1} % full (threshold {:.0} %); not extended (--no-extend)",
            full_note(&item),
            lv.full_name(),
            opts.threshold
        );
        if item.state != State::Invalid {
            item.state = State::Warning;
        }
        return item;
    }
    let grant = if vg_free >= delta {
        delta
    } else {
        vg_free / ext * ext
    };
    if grant == 0 {
        item.message = format!(
            "{}{what} {} is {pct:.1} % full and the VG {} has no free extent to extend it: add a \
             LUN (`hostsync lun provision ALIAS --vg {}`) or remove LVs, or it will be invalidated",
            full_note(&item),
            lv.full_name(),
            lv.vg,
            lv.vg
        );
        if item.state != State::Invalid {
            item.state = State::NoSpace;
        }
        return item;
    }
    free.insert(lv.vg.clone(), vg_free - grant);
    item.extend_to = Some(size + grant);
    item.message = format!(
        "{}{what} {} is {pct:.1} % full: extend by {} to {}{}",
        full_note(&item),
        lv.full_name(),
        gib(grant),
        gib(size + grant),
        if grant < delta {
            " (all the VG had left)"
        } else {
            ""
        }
    );
    if item.state != State::Invalid {
        item.state = State::Extended;
    }
    item
}

/// One pass: read, assess, run the planned `lvextend`s. A failed extension is
/// [`State::ExtendFailed`] with LVM's words (the other LVs are still handled).
pub fn pass(lvm: &Lvm<'_>, opts: &WatchOptions) -> Result<Report> {
    let lvs = lvm.lvs(&[])?;
    let vgs = lvm.vgs(&[])?;
    let mut rep = assess(&lvs, &vgs, opts);
    for item in &mut rep.items {
        let Some(to) = item.extend_to else {
            continue;
        };
        let grow = format!("+{}b", to - item.size);
        let cmd = if item.kind == Kind::ThinPoolMetadata {
            lvm.command("lvextend")
                .args(["--poolmetadatasize", grow.as_str(), item.lv.as_str()])
        } else {
            lvm.command("lvextend")
                .args(["-L", grow.as_str(), item.lv.as_str()])
        };
        rep.commands.push(cmd.line());
        if let Err(e) = lvm.run(&cmd, &item.lv, "extend") {
            if item.state != State::Invalid {
                item.state = State::ExtendFailed;
            }
            item.message = format!("{}; {e}", item.message);
        }
    }
    rep.problems = rep.items.iter().filter(|i| i.state.is_problem()).count();
    for i in &rep.items {
        match i.state {
            State::Invalid => tracing::error!(lv = %i.lv, "{}", i.message),
            s if s.is_problem() => tracing::warn!(lv = %i.lv, "{}", i.message),
            State::Extended => tracing::info!(lv = %i.lv, "{}", i.message),
            _ => {}
        }
    }
    Ok(rep)
}

/// A human table of a pass, then one line per message.
pub fn render(rep: &Report) -> String {
    let w = rep
        .items
        .iter()
        .map(|i| i.lv.len())
        .max()
        .unwrap_or(2)
        .max(2);
    let mut s = format!(
        "{:w$}  {:18}  {:>10}  {:>6}  {:12}  ORIGIN\n",
        "LV", "KIND", "SIZE", "FILL%", "STATE"
    );
    for i in &rep.items {
        let kind = match i.kind {
            Kind::Snapshot => "snapshot",
            Kind::ThinPool => "thin-pool",
            Kind::ThinPoolMetadata => "thin-pool-metadata",
        };
        let state = serde_json::to_value(i.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        s.push_str(&format!(
            "{:w$}  {kind:18}  {:>10}  {:>6}  {:12}  {}\n",
            i.lv,
            gib(i.size),
            i.fill
                .map(|f| format!("{f:.1}"))
                .unwrap_or_else(|| "-".into()),
            state.to_uppercase(),
            i.origin.as_deref().unwrap_or("-")
        ));
    }
    for i in rep.items.iter().filter(|i| !i.message.is_empty()) {
        s.push_str(&i.message);
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::{Output, ScriptedRunner};

    fn fixture(name: &str) -> String {
        let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/lvm-provision/");
        std::fs::read_to_string(format!("{p}{name}")).unwrap()
    }

    fn run_pass(
        lvs: &str,
        vgs: &str,
        opts: &WatchOptions,
        lvextend: Output,
    ) -> (Report, Vec<String>) {
        let r = ScriptedRunner::new();
        r.expect(&["lvs"], Output::ok(lvs))
            .expect(&["vgs"], Output::ok(vgs))
            .always(&["lvextend"], lvextend);
        let rep = pass(&Lvm::new(&r), opts).unwrap();
        (rep, r.lines())
    }

    fn item<'a>(rep: &'a Report, lv: &str, kind: Kind) -> &'a Item {
        rep.items
            .iter()
            .find(|i| i.lv == lv && i.kind == kind)
            .unwrap_or_else(|| panic!("{lv} not watched: {rep:#?}"))
    }

    #[test]
    fn a_snapshot_above_the_threshold_is_extended_from_the_vg_free_space() {
        let (rep, lines) = run_pass(
            &fixture("lvs-clones.json"),
            &fixture("vgs.json"),
            &WatchOptions::default(),
            Output::ok(""),
        );
        // clone1: 4 MiB COW at 81.25 %: +20 % rounds up to one 4 MiB extent.
        let c1 = item(&rep, "vglab/clone1", Kind::Snapshot);
        assert_eq!(c1.state, State::Extended, "{c1:?}");
        assert_eq!(c1.extend_to, Some(8 << 20));
        assert_eq!(c1.origin.as_deref(), Some("vglab/golden"));
        assert!(
            lines.contains(&"lvextend -L +4194304b vglab/clone1".to_string()),
            "{lines:?}"
        );
        // clone2 at 12.5 %: left alone; golden (an origin) and plain LVs are not watched.
        assert_eq!(item(&rep, "vglab/clone2", Kind::Snapshot).state, State::Ok);
        assert!(!rep.items.iter().any(|i| i.lv == "vglab/golden"));
        assert_eq!(
            lines.iter().filter(|l| l.starts_with("lvextend")).count(),
            1
        );
        assert_eq!(rep.vg_free["vglab"], (88 << 20) - (4 << 20));
        assert_eq!(rep.problems, 1, "only the invalid clone3 needs the admin");
    }

    #[test]
    fn an_invalid_snapshot_is_reported_loudly_and_never_extended() {
        let (rep, lines) = run_pass(
            &fixture("lvs-clones.json"),
            &fixture("vgs.json"),
            &WatchOptions::default(),
            Output::ok(""),
        );
        let c3 = item(&rep, "vglab/clone3", Kind::Snapshot);
        assert_eq!(c3.state, State::Invalid);
        assert!(
            c3.message
                .starts_with("INVALID: snapshot vglab/clone3 (clone of vglab/golden)"),
            "{}",
            c3.message
        );
        assert!(!lines.iter().any(|l| l.contains("clone3")), "{lines:?}");
        let text = render(&rep);
        assert!(text.contains("INVALID"), "{text}");
    }

    #[test]
    fn without_free_space_the_snapshot_is_a_problem_and_what_is_left_is_shared_out() {
        let vgs = fixture("vgs.json").replace("\"92274688\"", "\"0\"");
        let (rep, lines) = run_pass(
            &fixture("lvs-clones.json"),
            &vgs,
            &WatchOptions::default(),
            Output::ok(""),
        );
        let c1 = item(&rep, "vglab/clone1", Kind::Snapshot);
        assert_eq!(c1.state, State::NoSpace);
        assert!(c1.message.contains("has no free extent"), "{}", c1.message);
        assert!(!lines.iter().any(|l| l.starts_with("lvextend")));
        assert!(rep.problems >= 2); // clone1 and the invalid clone3
    }

    #[test]
    fn report_only_mode_warns_and_a_failed_lvextend_is_a_problem() {
        let opts = WatchOptions {
            extend: false,
            ..Default::default()
        };
        let (rep, lines) = run_pass(
            &fixture("lvs-clones.json"),
            &fixture("vgs.json"),
            &opts,
            Output::ok(""),
        );
        assert_eq!(
            item(&rep, "vglab/clone1", Kind::Snapshot).state,
            State::Warning
        );
        assert!(!lines.iter().any(|l| l.starts_with("lvextend")));
        let (rep, _) = run_pass(
            &fixture("lvs-clones.json"),
            &fixture("vgs.json"),
            &WatchOptions::default(),
            Output::fail(
                5,
                "  Insufficient free space: 1 extents needed, but only 0 available\n",
            ),
        );
        let c1 = item(&rep, "vglab/clone1", Kind::Snapshot);
        assert_eq!(c1.state, State::ExtendFailed);
        assert!(
            c1.message.contains("Insufficient free space"),
            "{}",
            c1.message
        );
    }

    #[test]
    fn thin_pool_data_and_metadata_are_extended_separately() {
        let opts = WatchOptions {
            threshold: 80.0,
            extend_by: 50.0,
            extend: true,
        };
        let (rep, lines) = run_pass(
            &fixture("lvs-thin.json"),
            &fixture("vgs.json"),
            &opts,
            Output::ok(""),
        );
        let data = item(&rep, "vglab/pool0", Kind::ThinPool);
        assert_eq!(data.state, State::Extended);
        assert_eq!(data.extend_to, Some(48 << 20)); // 32 MiB + 16 MiB
        let meta = item(&rep, "vglab/pool0", Kind::ThinPoolMetadata);
        assert_eq!(meta.state, State::Extended);
        assert_eq!(meta.size, 4 << 20);
        assert!(
            lines.contains(&"lvextend -L +16777216b vglab/pool0".to_string()),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"lvextend --poolmetadatasize +4194304b vglab/pool0".to_string()),
            "{lines:?}"
        );
        // A thin snapshot (a thin volume) is not a COW snapshot: the pool is what fills.
        assert!(!rep.items.iter().any(|i| i.lv == "vglab/tclone1"));
    }

    #[test]
    fn a_cow_area_as_large_as_its_origin_is_not_extended() {
        let lvs = fixture("lvs-clones.json").replace(
            r#""lv_name":"clone1", "vg_name":"vglab", "lv_uuid":"clone1", "lv_attr":"swi-a-s---", "lv_size":"4194304""#,
            r#""lv_name":"clone1", "vg_name":"vglab", "lv_uuid":"clone1", "lv_attr":"swi-a-s---", "lv_size":"25165824""#,
        );
        assert_ne!(lvs, fixture("lvs-clones.json"));
        let (rep, lines) = run_pass(
            &lvs,
            &fixture("vgs.json"),
            &WatchOptions::default(),
            Output::ok(""),
        );
        assert_eq!(
            item(&rep, "vglab/clone1", Kind::Snapshot).state,
            State::AtMaximum
        );
        assert!(!lines.iter().any(|l| l.contains("clone1")));
    }
}
