//! Output formats: the `multipath -ll` topology, multipathd's `show maps json`, the human
//! tables of `show paths` / `show maps` / `show status`, and our own richer JSON.
//!
//! Every function here is pure: it takes views from [`crate::state`] and returns the text.
//! The multipath-tools-compatible formats were learnt from multipath-tools 0.9.4 output
//! (fixtures/ref-sd2x2-tcmloop2/ll.txt, create.txt) and its documentation, not its code.

use crate::state::{DaemonStatus, MapView, PathView};
use serde::Serialize;
use std::fmt::Write as _;

/// multipathd's JSON format version (`major_version`, `minor_version`).
pub const JSON_MAJOR_VERSION: u32 = 0;
pub const JSON_MINOR_VERSION: u32 = 1;

/// Version of our own `--json` documents (the `format_version` key).
pub const RICH_JSON_VERSION: u32 = 1;

/// Human size of a device given in 512-byte sectors, as multipath-tools prints it: the
/// value in KiB is divided by 1024 while it is at least 1024 (units K, M, G, T, P, E), then
/// printed with one decimal below 10 and none from 10 on: `8.0M`, `64M`, `1.0G`, `1022M`.
pub fn format_size(sectors: u64) -> String {
    const UNITS: [char; 6] = ['K', 'M', 'G', 'T', 'P', 'E'];
    let mut value = sectors as f64 / 2.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    // Decide on the rounded value so 9.96 prints as "10" rather than "10.0".
    let one_decimal = format!("{value:.1}");
    if one_decimal.parse::<f64>().unwrap_or(value) < 10.0 {
        format!("{one_decimal}{}", UNITS[unit])
    } else {
        format!("{value:.0}{}", UNITS[unit])
    }
}

fn trim(s: &str) -> &str {
    s.trim_end()
}

/// The first line of a map in the topology: `[action: ]name[ (wwid)] dm-N|undef vendor,product`.
fn topology_header(map: &MapView) -> String {
    let mut line = String::new();
    if let Some(action) = map.action {
        let _ = write!(line, "{action}: ");
    }
    line.push_str(&map.name);
    if map.name != map.wwid {
        let _ = write!(line, " ({})", map.wwid);
    }
    let _ = write!(
        line,
        " {} {},{}",
        map.dm_dev.as_deref().unwrap_or("undef"),
        trim(&map.vendor),
        trim(&map.product)
    );
    line
}

/// Column widths of the path lines (hcil, dev, dev_t). Like multipath-tools, they are the
/// widest value over every path being printed, so columns line up across maps too.
struct PathLayout {
    hcil: usize,
    dev: usize,
    devno: usize,
}

impl PathLayout {
    fn of<'a>(paths: impl IntoIterator<Item = &'a PathView>) -> Self {
        let mut l = PathLayout {
            hcil: 0,
            dev: 0,
            devno: 0,
        };
        for p in paths {
            l.hcil = l.hcil.max(p.hctl.to_string().len());
            l.dev = l.dev.max(p.dev.len());
            l.devno = l.devno.max(p.devno.to_string().len());
        }
        l
    }
}

fn write_map_topology(out: &mut String, map: &MapView, layout: &PathLayout) {
    let _ = writeln!(out, "{}", topology_header(map));
    let _ = writeln!(
        out,
        "size={} features='{}' hwhandler='{}' wp={}",
        format_size(map.size_sectors),
        map.features,
        map.hwhandler,
        map.write_protect
    );
    let ngroups = map.groups.len();
    for (gi, group) in map.groups.iter().enumerate() {
        let last_group = gi + 1 == ngroups;
        let (branch, indent) = if last_group {
            ("`-+- ", "  ")
        } else {
            ("|-+- ", "| ")
        };
        let _ = writeln!(
            out,
            "{branch}policy='{}' prio={} status={}",
            group.selector, group.priority, group.dm_state
        );
        let npaths = group.paths.len();
        for (pi, path) in group.paths.iter().enumerate() {
            let leaf = if pi + 1 == npaths { "`- " } else { "|- " };
            let _ = writeln!(
                out,
                "{indent}{leaf}{:<hw$} {:<dw$} {:<nw$} {} {} {}",
                path.hctl.to_string(),
                path.dev,
                path.devno.to_string(),
                path.dm_state,
                path.chk_state,
                path.dev_state,
                hw = layout.hcil,
                dw = layout.dev,
                nw = layout.devno,
            );
        }
    }
}

/// `multipathd show topology` / `multipath -ll`: every map with its groups and paths, in the
/// order given. Byte-compatible with multipath-tools 0.9.4 for the same data.
pub fn topology(maps: &[MapView]) -> String {
    let layout = PathLayout::of(maps.iter().flat_map(|m| m.paths()));
    let mut out = String::new();
    for map in maps {
        write_map_topology(&mut out, map, &layout);
    }
    out
}

// ---------------------------------------------------------------------------------------
// multipathd's JSON (`show maps json`, `show map MAP json`)
// ---------------------------------------------------------------------------------------

const UNDEF: &str = "[undef]";

#[derive(Serialize)]
struct MpPath<'a> {
    dev: &'a str,
    dev_t: String,
    dm_st: &'static str,
    dev_st: &'static str,
    chk_st: &'static str,
    checker: &'a str,
    pri: i32,
    host_wwnn: &'a str,
    target_wwnn: &'a str,
    host_wwpn: &'a str,
    target_wwpn: &'a str,
    host_adapter: &'a str,
    lun_hex: String,
    marginal_st: &'static str,
}

#[derive(Serialize)]
struct MpGroup<'a> {
    selector: &'a str,
    pri: i32,
    dm_st: &'static str,
    marginal_st: &'static str,
    group: u32,
    paths: Vec<MpPath<'a>>,
}

#[derive(Serialize)]
struct MpMap<'a> {
    name: &'a str,
    uuid: &'a str,
    sysfs: &'a str,
    failback: String,
    queueing: String,
    paths: usize,
    write_prot: &'static str,
    dm_st: &'static str,
    features: &'a str,
    hwhandler: &'a str,
    action: &'static str,
    path_faults: u32,
    vend: &'a str,
    prod: &'a str,
    rev: &'a str,
    switch_grp: u32,
    map_loads: u32,
    total_q_time: u32,
    q_timeouts: u32,
    path_groups: Vec<MpGroup<'a>>,
}

#[derive(Serialize)]
struct MpMaps<'a> {
    major_version: u32,
    minor_version: u32,
    maps: Vec<MpMap<'a>>,
}

#[derive(Serialize)]
struct MpOneMap<'a> {
    major_version: u32,
    minor_version: u32,
    map: MpMap<'a>,
}

fn marginal_word(marginal: bool) -> &'static str {
    if marginal { "marginal" } else { "normal" }
}

fn mp_path(p: &PathView) -> MpPath<'_> {
    MpPath {
        dev: &p.dev,
        dev_t: p.devno.to_string(),
        dm_st: p.dm_state.as_str(),
        dev_st: p.dev_state.as_str(),
        chk_st: p.chk_state.as_str(),
        checker: &p.checker,
        pri: p.priority,
        host_wwnn: p.host_wwnn.as_deref().unwrap_or(UNDEF),
        target_wwnn: p.target_wwnn.as_deref().unwrap_or(UNDEF),
        host_wwpn: p.host_wwpn.as_deref().unwrap_or(UNDEF),
        target_wwpn: p.target_wwpn.as_deref().unwrap_or(UNDEF),
        host_adapter: p.host_adapter.as_deref().unwrap_or(UNDEF),
        lun_hex: p.hctl.lun_hex(),
        marginal_st: marginal_word(p.marginal),
    }
}

fn mp_map(m: &MapView) -> MpMap<'_> {
    MpMap {
        name: &m.name,
        // multipathd's "uuid" is the WWID, not the dm UUID.
        uuid: &m.wwid,
        sysfs: m.dm_dev.as_deref().unwrap_or(UNDEF),
        failback: m.failback.to_string(),
        queueing: m.queueing.to_string(),
        paths: m.path_count(),
        write_prot: m.write_protect.as_str(),
        dm_st: m.dm_state.as_str(),
        features: &m.features,
        hwhandler: &m.hwhandler,
        action: m.action.map(|a| a.as_str()).unwrap_or(""),
        path_faults: m.stats.path_faults,
        vend: trim(&m.vendor),
        prod: trim(&m.product),
        rev: trim(&m.revision),
        switch_grp: m.stats.switch_group,
        map_loads: m.stats.map_loads,
        total_q_time: m.stats.total_queueing_time,
        q_timeouts: m.stats.queueing_timeouts,
        path_groups: m
            .groups
            .iter()
            .map(|g| MpGroup {
                selector: &g.selector,
                pri: g.priority,
                dm_st: g.dm_state.as_str(),
                marginal_st: marginal_word(g.marginal),
                group: g.number,
                paths: g.paths.iter().map(mp_path).collect(),
            })
            .collect(),
    }
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Serialising these plain structs of strings and integers cannot fail; fall back to an
    // empty object rather than panicking if it ever did.
    let mut s = serde_json::to_string_pretty(value).unwrap_or_else(|_| String::from("{}"));
    s.push('\n');
    s
}

/// `multipathd show maps json`: `{"major_version":0,"minor_version":1,"maps":[...]}` with
/// multipathd's field names and types.
pub fn multipathd_maps_json(maps: &[MapView]) -> String {
    to_json(&MpMaps {
        major_version: JSON_MAJOR_VERSION,
        minor_version: JSON_MINOR_VERSION,
        maps: maps.iter().map(mp_map).collect(),
    })
}

/// `multipathd show map MAP json`: the same object for one map under the key `map`.
pub fn multipathd_map_json(map: &MapView) -> String {
    to_json(&MpOneMap {
        major_version: JSON_MAJOR_VERSION,
        minor_version: JSON_MINOR_VERSION,
        map: mp_map(map),
    })
}

// ---------------------------------------------------------------------------------------
// Human tables
// ---------------------------------------------------------------------------------------

/// Render rows under a header, each column padded to its widest cell (header included) and
/// separated by one space, without trailing blanks.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                l.push(' ');
            }
            let _ = write!(l, "{cell:<w$}", w = widths.get(i).copied().unwrap_or(0));
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// `show paths`: `hcil dev dev_t pri dm_st chk_st dev_st next_check`, like multipathd.
pub fn paths_table(paths: &[PathView]) -> String {
    let rows: Vec<Vec<String>> = paths
        .iter()
        .map(|p| {
            vec![
                p.hctl.to_string(),
                p.dev.clone(),
                p.devno.to_string(),
                p.priority.to_string(),
                p.dm_state.to_string(),
                p.chk_state.to_string(),
                p.dev_state.to_string(),
                p.next_check.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "hcil",
            "dev",
            "dev_t",
            "pri",
            "dm_st",
            "chk_st",
            "dev_st",
            "next_check",
        ],
        &rows,
    )
}

/// `show maps`: `name sysfs uuid`, like multipathd (its `uuid` column is the WWID).
pub fn maps_table(maps: &[MapView]) -> String {
    let rows: Vec<Vec<String>> = maps
        .iter()
        .map(|m| {
            vec![
                m.name.clone(),
                m.dm_dev.clone().unwrap_or_else(|| "undef".into()),
                m.wwid.clone(),
            ]
        })
        .collect();
    table(&["name", "sysfs", "uuid"], &rows)
}

/// `show status`: checker state counts like multipathd, then the daemon's own figures.
pub fn status_text(status: &DaemonStatus) -> String {
    let c = &status.checker;
    let mut out = String::from("path checker states:\n");
    for (word, n) in [
        ("ready", c.ready),
        ("faulty", c.faulty),
        ("shaky", c.shaky),
        ("ghost", c.ghost),
        ("i/o pending", c.pending),
        ("other", c.other),
    ] {
        if n > 0 {
            let _ = writeln!(out, "{word:<20}{n}");
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "paths: {}", status.path_count);
    let _ = writeln!(out, "maps: {}", status.map_count);
    let _ = writeln!(out, "busy: {}", if status.busy { "True" } else { "False" });
    let k = &status.checks;
    let _ = writeln!(
        out,
        "checks: {} submitted, {} refused, {} timed out, {} late, {} queued late ({} workers, {}/{} in flight)",
        k.submitted,
        k.refused,
        k.timed_out,
        k.late,
        k.queued_late,
        k.workers,
        k.in_flight,
        k.max_in_flight
    );
    for r in &status.rereads {
        let _ = writeln!(
            out,
            "waiting to be read again: {} (re-read {}: {})",
            r.dev, r.attempt, r.why
        );
    }
    let w = &status.sweep;
    if w.running || w.passes > 0 {
        let _ = writeln!(
            out,
            "sweep: {} paths every {} ms, last pass {} us ({} us CPU), {} files open, {} read by open/read/close, {} transport ports watched, {} early reads, {} failed at once, {} map gone, {} fail errors, {} read errors",
            w.members,
            w.pass_spacing_ms(),
            w.last_pass_us,
            w.last_pass_cpu_us,
            w.open_files,
            w.fallback,
            w.ports,
            w.early_reads,
            w.direct_fails,
            w.gone,
            w.fail_errors,
            w.read_errors
        );
    }
    let _ = writeln!(out, "uptime: {}", format_uptime(status.uptime_secs));
    let _ = writeln!(out, "version: {}", status.version);
    out
}

/// `3d 04:05:06` / `04:05:06`.
pub fn format_uptime(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

// ---------------------------------------------------------------------------------------
// Our own JSON (`--json`): the views as they are, with a format version.
// ---------------------------------------------------------------------------------------

#[derive(Serialize)]
struct Rich<'a, T: Serialize> {
    format_version: u32,
    #[serde(flatten)]
    body: &'a T,
}

#[derive(Serialize)]
struct PathsBody<'a> {
    paths: &'a [PathView],
}

#[derive(Serialize)]
struct MapsBody<'a> {
    maps: &'a [MapView],
}

#[derive(Serialize)]
struct StatusBody<'a> {
    status: &'a DaemonStatus,
}

/// `show paths --json`: `{"format_version":1,"paths":[PathView...]}`.
pub fn paths_json(paths: &[PathView]) -> String {
    to_json(&Rich {
        format_version: RICH_JSON_VERSION,
        body: &PathsBody { paths },
    })
}

/// `show maps --json`: `{"format_version":1,"maps":[MapView...]}` with groups and paths.
pub fn maps_json(maps: &[MapView]) -> String {
    to_json(&Rich {
        format_version: RICH_JSON_VERSION,
        body: &MapsBody { maps },
    })
}

/// `show status --json`: `{"format_version":1,"status":{...}}`.
pub fn status_json(status: &DaemonStatus) -> String {
    to_json(&Rich {
        format_version: RICH_JSON_VERSION,
        body: &StatusBody { status },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_multipath_tools() {
        assert_eq!(format_size(16384), "8.0M");
        assert_eq!(format_size(131072), "64M");
        assert_eq!(format_size(2 * 1024 * 1024), "1.0G");
        assert_eq!(format_size(1022 * 2048), "1022M");
        assert_eq!(format_size(1023 * 2048), "1023M");
        assert_eq!(format_size(3), "1.5K");
        assert_eq!(format_size(0), "0.0K");
        // 9.96 GiB rounds to 10 and is printed without a decimal.
        assert_eq!(format_size((9.96 * 1024.0 * 1024.0 * 2.0) as u64), "10G");
        assert_eq!(format_size(269 * 1024 * 1024 * 2), "269G");
        // 3.6 TiB
        assert_eq!(format_size(7_730_941_132), "3.6T");
    }

    #[test]
    fn uptime_format() {
        assert_eq!(format_uptime(59), "00:00:59");
        assert_eq!(format_uptime(90_061), "1d 01:01:01");
    }

    #[test]
    fn table_pads_to_header_and_trims() {
        let t = table(
            &["name", "sysfs", "uuid"],
            &[vec!["a".into(), "dm-10".into(), "x".into()]],
        );
        assert_eq!(t, "name sysfs uuid\na    dm-10 x\n");
    }
}
