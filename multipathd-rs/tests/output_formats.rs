#![allow(clippy::unwrap_used)]
//! Output formats checked against what multipath-tools 0.9.4 printed for the reference
//! topology (fixtures/ref-sd2x2-tcmloop2): the views are built from that fixture's sysfs
//! tree, bindings, `dmsetup table` and `dmsetup status`, then formatted and compared byte
//! for byte with `multipath -ll` (ll.txt) and `multipath -v2` (create.txt).

mod common;

use multipathd_rs::output::{
    format_size, maps_json, maps_table, multipathd_map_json, multipathd_maps_json, paths_json,
    paths_table, status_json, status_text, topology,
};
use multipathd_rs::state::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/ref-sd2x2-tcmloop2")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A path as sysfs describes it, keyed by devno.
fn sysfs_path(sys: &Path, dev: &str) -> PathView {
    let block = sys.join("block").join(dev);
    let devno = read(&block.join("dev"));
    let (maj, min) = devno.trim().split_once(':').unwrap();
    let device = std::fs::canonicalize(block.join("device")).unwrap();
    let hctl: Vec<u64> = device
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .split(':')
        .map(|n| n.parse().unwrap())
        .collect();
    let attr = |name: &str| read(&device.join(name)).trim_end().to_string();
    let priority = match attr("access_state").as_str() {
        "active/optimized" => 50,
        "active/non-optimized" => 10,
        "standby" => 1,
        _ => 0,
    };
    PathView {
        hctl: Hctl::new(hctl[0] as u32, hctl[1] as u32, hctl[2] as u32, hctl[3]),
        dev: dev.to_string(),
        devno: DevNo::new(maj.parse().unwrap(), min.parse().unwrap()),
        dm_state: PathDmState::Undef,
        dev_state: match attr("state").as_str() {
            "running" => DevState::Running,
            "offline" => DevState::Offline,
            _ => DevState::Undef,
        },
        chk_state: CheckerState::Ready,
        checker: "tur".into(),
        priority,
        wwid: "".into(),
        vendor: attr("vendor").into(),
        product: attr("model").into(),
        revision: attr("rev").into(),
        size_sectors: read(&block.join("size")).trim().parse().unwrap(),
        host_wwnn: None,
        host_wwpn: None,
        target_wwnn: None,
        target_wwpn: None,
        host_adapter: None,
        marginal: false,
        fail_count: 0,
        next_check: NextCheck::Due {
            remaining_secs: 5,
            interval_secs: 5,
        },
    }
}

/// Build the maps the way the composition layer will: groups and members from the table,
/// kernel states from the status line, identities from sysfs, names from bindings.
/// `live` = false gives the views `multipath -v2` prints before the maps exist.
fn reference_maps(live: bool) -> Vec<MapView> {
    let dir = fixture();
    let sys = dir.join("sys");
    let mut by_devno: HashMap<String, PathView> = HashMap::new();
    for entry in std::fs::read_dir(sys.join("block")).unwrap() {
        let dev = entry.unwrap().file_name().into_string().unwrap();
        let p = sysfs_path(&sys, &dev);
        by_devno.insert(p.devno.to_string(), p);
    }
    let wwids: HashMap<String, String> = read(&dir.join("wwids.txt"))
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].to_string(),
                f[2].trim_start_matches("ID_SERIAL=").to_string(),
            )
        })
        .collect();
    let bindings: HashMap<String, String> = read(&dir.join("bindings"))
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (a, w) = l.split_once(' ').unwrap();
            (a.to_string(), w.to_string())
        })
        .collect();
    let statuses: HashMap<String, Vec<String>> = read(&dir.join("status.txt"))
        .lines()
        .map(|l| {
            let (name, rest) = l.split_once(": ").unwrap();
            (
                name.to_string(),
                rest.split_whitespace().map(String::from).collect(),
            )
        })
        .collect();

    let mut maps = Vec::new();
    for (index, line) in read(&dir.join("table.txt")).lines().enumerate() {
        let (name, rest) = line.split_once(": ").unwrap();
        let t: Vec<&str> = rest.split_whitespace().collect();
        // start len multipath #feat feat... #hw hw... #groups initial groups...
        let size_sectors: u64 = t[1].parse().unwrap();
        let mut i = 3;
        let nfeat: usize = t[i].parse().unwrap();
        let features = t[i..=i + nfeat].join(" ");
        i += nfeat + 1;
        let nhw: usize = t[i].parse().unwrap();
        let hwhandler = t[i..=i + nhw].join(" ");
        i += nhw + 1;
        let ngroups: usize = t[i].parse().unwrap();
        i += 2;
        // Status: #feat feat... #hw hw... #groups current then per group: state #psargs
        // [psargs] #paths #per-path-args then per path: devno A|F failcount args...
        let s = &statuses[name];
        // Skip `start len multipath`.
        let mut j = 3;
        j += s[j].parse::<usize>().unwrap() + 1;
        j += s[j].parse::<usize>().unwrap() + 1;
        j += 2;
        let mut groups = Vec::new();
        for number in 1..=ngroups {
            // multipath-tools shows the selector as the table has it: name, argument count,
            // arguments (`service-time 0`).
            let nsel: usize = t[i + 1].parse().unwrap();
            let selector = t[i..i + 2 + nsel].join(" ");
            i += 2 + nsel;
            let npaths: usize = t[i].parse().unwrap();
            let nargs: usize = t[i + 1].parse().unwrap();
            i += 2;
            let gstate = match s[j].as_str() {
                "A" => GroupDmState::Active,
                "E" => GroupDmState::Enabled,
                "D" => GroupDmState::Disabled,
                _ => GroupDmState::Undef,
            };
            let nps: usize = s[j + 1].parse().unwrap();
            j += 2 + nps;
            let sargs: usize = s[j + 1].parse().unwrap();
            j += 2;
            let mut paths = Vec::new();
            for _ in 0..npaths {
                let mut p = by_devno[t[i]].clone();
                i += 1 + nargs;
                assert_eq!(s[j], p.devno.to_string());
                p.dm_state = if !live {
                    PathDmState::Undef
                } else if s[j + 1] == "A" {
                    PathDmState::Active
                } else {
                    PathDmState::Failed
                };
                p.fail_count = s[j + 2].parse().unwrap();
                j += 3 + sargs;
                p.wwid = wwids[&p.dev].as_str().into();
                paths.push(p);
            }
            let priority = paths.iter().map(|p| p.priority).max().unwrap_or(0);
            groups.push(GroupView {
                number: number as u32,
                selector,
                priority,
                dm_state: if live { gstate } else { GroupDmState::Undef },
                marginal: false,
                paths,
            });
        }
        let first = groups[0].paths[0].clone();
        assert_eq!(bindings[name].as_str(), &*first.wwid);
        maps.push(MapView {
            name: name.to_string(),
            wwid: first.wwid.to_string(),
            uuid: format!("mpath-{}", first.wwid),
            // The fixture has no dm sysfs; multipath-tools created the maps in table order.
            dm_dev: live.then(|| format!("dm-{index}")),
            devno: live.then(|| DevNo::new(254, index as u32)),
            size_sectors,
            vendor: first.vendor.to_string(),
            product: first.product.to_string(),
            revision: first.revision.to_string(),
            features,
            hwhandler,
            write_protect: if live {
                WriteProtect::ReadWrite
            } else {
                WriteProtect::Undef
            },
            dm_state: if live {
                MapDmState::Active
            } else {
                MapDmState::Undef
            },
            queueing: Queueing::Off,
            failback: Failback::Manual,
            action: (!live).then_some(MapAction::Create),
            stats: MapStats::default(),
            groups,
        });
    }
    maps
}

/// The reference output without multipath-tools' log lines (`  123.456 | ...`).
fn reference_output(file: &str) -> String {
    read(&fixture().join(file))
        .lines()
        .filter(|l| !l.contains(" | "))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn topology_matches_multipath_ll_byte_for_byte() {
    let maps = reference_maps(true);
    assert_eq!(topology(&maps), reference_output("ll.txt"));
}

#[test]
fn create_topology_matches_multipath_v2_byte_for_byte() {
    let mut maps = reference_maps(false);
    // multipath -v2 printed features='0' for the maps it created (the table it loaded for
    // mpathc carried queue_if_no_path; the printout does not).
    for m in &mut maps {
        m.features = "0".into();
    }
    assert_eq!(topology(&maps), reference_output("create.txt"));
}

#[test]
fn topology_omits_wwid_when_name_is_wwid_and_aligns_across_maps() {
    let mut maps = reference_maps(true);
    maps[2].name = maps[2].wwid.clone();
    // A wider device name and devno in one map widen the columns of every map.
    maps[0].groups[0].paths[0].dev = "sdaa".into();
    maps[0].groups[0].paths[0].devno = DevNo::new(65, 160);
    maps[0].groups[0].paths[0].dm_state = PathDmState::Failed;
    maps[0].groups[0].paths[0].chk_state = CheckerState::Faulty;
    let out = topology(&maps);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[3], "| `- 0:0:0:0 sdaa 65:160 failed faulty running");
    assert_eq!(lines[5], "  `- 1:0:0:0 sdc  8:32   active ready running");
    assert_eq!(
        lines[12],
        "360014055d1b3c7a0e2f4b8a9c612f3e4 dm-2 LIO-ORG,FILEIO"
    );
    assert_eq!(lines[15], "  |- 2:0:1:0 sde  8:64   active ready running");
}

#[test]
fn sizes() {
    assert_eq!(format_size(16384), "8.0M");
    assert_eq!(format_size(131072), "64M");
    assert_eq!(format_size(2 * 1024 * 1024), "1.0G");
    assert_eq!(format_size(20 * 1024 * 1024 * 1024 * 2), "20T");
}

/// Check that the keys appear in this order (multipathd's order) from `from` on; returns the
/// position just after the last one.
fn assert_keys_in_order(text: &str, from: usize, keys: &[&str]) -> usize {
    let mut pos = from;
    for k in keys {
        let needle = format!("\"{k}\":");
        let at = text[pos..]
            .find(&needle)
            .unwrap_or_else(|| panic!("key {k} missing or out of order"));
        pos += at + needle.len();
    }
    pos
}

#[test]
fn multipathd_json_has_multipathd_shape() {
    let maps = reference_maps(true);
    let v: serde_json::Value = serde_json::from_str(&multipathd_maps_json(&maps)).unwrap();
    assert_eq!(v["major_version"], 0);
    assert_eq!(v["minor_version"], 1);
    let m = &v["maps"][0];
    let text = multipathd_maps_json(&maps);
    let after_groups = assert_keys_in_order(
        &text,
        0,
        &[
            "name",
            "uuid",
            "sysfs",
            "failback",
            "queueing",
            "paths",
            "write_prot",
            "dm_st",
            "features",
            "hwhandler",
            "action",
            "path_faults",
            "vend",
            "prod",
            "rev",
            "switch_grp",
            "map_loads",
            "total_q_time",
            "q_timeouts",
            "path_groups",
        ],
    );
    assert_eq!(m["name"], "mpatha");
    assert_eq!(m["uuid"], "1Linux_scsi_debug_2000");
    assert_eq!(m["sysfs"], "dm-0");
    assert_eq!(m["paths"], 2);
    assert_eq!(m["write_prot"], "rw");
    assert_eq!(m["dm_st"], "active");
    assert_eq!(m["features"], "0");
    assert_eq!(m["hwhandler"], "1 alua");
    assert_eq!(m["action"], "");
    assert_eq!(m["vend"], "Linux");
    assert_eq!(m["prod"], "scsi_debug");
    assert_eq!(m["rev"], "0191");
    assert_eq!(m["queueing"], "off");
    assert_eq!(m["failback"], "manual");
    let g = &m["path_groups"][1];
    assert_eq!(g["selector"], "service-time 0");
    assert_eq!(g["pri"], 10);
    assert_eq!(g["dm_st"], "enabled");
    assert_eq!(g["marginal_st"], "normal");
    assert_eq!(g["group"], 2);
    let p = &g["paths"][0];
    let first_path = text[after_groups..].find("\"paths\": [").unwrap() + after_groups;
    assert_keys_in_order(
        &text,
        first_path,
        &[
            "dev",
            "dev_t",
            "dm_st",
            "dev_st",
            "chk_st",
            "checker",
            "pri",
            "host_wwnn",
            "target_wwnn",
            "host_wwpn",
            "target_wwpn",
            "host_adapter",
            "lun_hex",
            "marginal_st",
        ],
    );
    assert_eq!(p["dev"], "sdc");
    assert_eq!(p["dev_t"], "8:32");
    assert_eq!(p["dm_st"], "active");
    assert_eq!(p["dev_st"], "running");
    assert_eq!(p["chk_st"], "ready");
    assert_eq!(p["pri"], 10);
    assert_eq!(p["host_wwpn"], "[undef]");
    assert_eq!(p["lun_hex"], "0x0000000000000000");
    // LUN 1 of mpathb.
    assert_eq!(
        v["maps"][1]["path_groups"][0]["paths"][0]["lun_hex"],
        "0x0001000000000000"
    );

    let one: serde_json::Value = serde_json::from_str(&multipathd_map_json(&maps[2])).unwrap();
    assert_eq!(one["major_version"], 0);
    assert_eq!(one["map"]["name"], "mpathc");
    assert_eq!(one["map"]["path_groups"][0]["paths"][1]["dev"], "sdf");
}

#[test]
fn json_escapes_hostile_strings() {
    let mut maps = reference_maps(true);
    maps[0].name = "we\"ird\\name\n\u{1}".into();
    maps[0].vendor = "A\tB".into();
    let text = multipathd_maps_json(&maps);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["maps"][0]["name"], "we\"ird\\name\n\u{1}");
    assert_eq!(v["maps"][0]["vend"], "A\tB");
    let v: serde_json::Value = serde_json::from_str(&maps_json(&maps)).unwrap();
    assert_eq!(v["maps"][0]["name"], "we\"ird\\name\n\u{1}");
}

#[test]
fn lun_hex_levels() {
    assert_eq!(Hctl::new(0, 0, 0, 14).lun_hex(), "0x000e000000000000");
    assert_eq!(Hctl::new(0, 0, 0, 256).lun_hex(), "0x0100000000000000");
    assert_eq!(Hctl::new(0, 0, 0, 0x1_0002).lun_hex(), "0x0002000100000000");
}

#[test]
fn paths_table_like_multipathd() {
    let maps = reference_maps(true);
    let mut paths: Vec<PathView> = maps.iter().flat_map(|m| m.paths().cloned()).collect();
    paths.sort_by(|a, b| a.dev.cmp(&b.dev));
    paths[1].next_check = NextCheck::Due {
        remaining_secs: 3,
        interval_secs: 20,
    };
    paths[2].next_check = NextCheck::Orphan;
    paths[2].dm_state = PathDmState::Failed;
    paths[2].chk_state = CheckerState::Faulty;
    let expected = "\
hcil    dev dev_t pri dm_st  chk_st dev_st  next_check
0:0:0:0 sda 8:0   50  active ready  running .......... 0/5
0:0:0:1 sdb 8:16  50  active ready  running XXXXXXXX.. 17/20
1:0:0:0 sdc 8:32  10  failed faulty running orphan
1:0:0:1 sdd 8:48  10  active ready  running .......... 0/5
2:0:1:0 sde 8:64  50  active ready  running .......... 0/5
3:0:1:0 sdf 8:80  50  active ready  running .......... 0/5
";
    assert_eq!(paths_table(&paths), expected);
    let v: serde_json::Value = serde_json::from_str(&paths_json(&paths)).unwrap();
    assert_eq!(v["format_version"], 1);
    assert_eq!(v["paths"].as_array().unwrap().len(), 6);
    assert_eq!(v["paths"][2]["chk_state"], "faulty");
    assert_eq!(v["paths"][2]["next_check"], "orphan");
}

#[test]
fn maps_table_like_multipathd() {
    let maps = reference_maps(true);
    let expected = "\
name   sysfs uuid
mpatha dm-0  1Linux_scsi_debug_2000
mpathb dm-1  1Linux_scsi_debug_2001
mpathc dm-2  360014055d1b3c7a0e2f4b8a9c612f3e4
";
    assert_eq!(maps_table(&maps), expected);
}

#[test]
fn rich_maps_json_round_trips() {
    let maps = reference_maps(true);
    let v: serde_json::Value = serde_json::from_str(&maps_json(&maps)).unwrap();
    assert_eq!(v["format_version"], 1);
    let back: Vec<MapView> = serde_json::from_value(v["maps"].clone()).unwrap();
    assert_eq!(back, maps);
}

#[test]
fn status_outputs() {
    let maps = reference_maps(true);
    let mut paths: Vec<PathView> = maps.iter().flat_map(|m| m.paths().cloned()).collect();
    paths[0].chk_state = CheckerState::Faulty;
    let status = DaemonStatus {
        version: "0.1.0".into(),
        uptime_secs: 3725,
        path_count: paths.len() as u32,
        map_count: maps.len() as u32,
        checker: CheckerStats::from_paths(&paths),
        busy: false,
        checks: multipathd_rs::checker::runner::RunnerStats {
            workers: 16,
            max_in_flight: 4096,
            in_flight: 2,
            submitted: 120,
            refused: 3,
            timed_out: 1,
            late: 1,
            queued_late: 0,
        },
        sweep: multipathd_rs::sweep::SweepStats {
            running: true,
            period_ms: 200,
            members: 6,
            passes: 40,
            last_pass_us: 35,
            last_pass_cpu_us: 30,
            open_files: 4,
            fallback: 2,
            ports: 0,
            early_reads: 0,
            direct_fails: 1,
            gone: 0,
            fail_errors: 0,
            read_errors: 0,
        },
        rereads: Vec::new(),
    };
    let expected = "\
path checker states:
ready               5
faulty              1

paths: 6
maps: 3
busy: False
checks: 120 submitted, 3 refused, 1 timed out, 1 late, 0 queued late (16 workers, 2/4096 in flight)
sweep: 6 paths every 200 ms, last pass 35 us (30 us CPU), 4 files open, 2 read by open/read/close, 0 transport ports watched, 0 early reads, 1 failed at once, 0 map gone, 0 fail errors, 0 read errors
uptime: 01:02:05
version: 0.1.0
";
    assert_eq!(status_text(&status), expected);
    let v: serde_json::Value = serde_json::from_str(&status_json(&status)).unwrap();
    assert_eq!(v["status"]["checker"]["faulty"], 1);
    assert_eq!(v["status"]["map_count"], 3);
    assert_eq!(v["status"]["checks"]["refused"], 3);
    assert_eq!(v["status"]["checks"]["late"], 1);
    assert_eq!(v["status"]["sweep"]["fallback"], 2);
    assert_eq!(v["status"]["sweep"]["direct_fails"], 1);
}

#[test]
fn answer_read_serves_show_commands_from_a_snapshot() {
    use multipathd_rs::socket::{Command, Format, Status, answer_read};
    let maps = reference_maps(true);
    let paths: Vec<PathView> = maps.iter().flat_map(|m| m.paths().cloned()).collect();
    let snap = Snapshot {
        maps: maps.clone(),
        paths: paths.clone(),
        status: None,
    };
    let ask = |c: Command| answer_read(&c, &snap);

    let r = ask(Command::ShowTopology { map: None }).unwrap();
    assert_eq!(r.body, reference_output("ll.txt"));
    let r = ask(Command::ShowMaps {
        format: Format::MultipathdJson,
    })
    .unwrap();
    assert_eq!(r.body, multipathd_maps_json(&maps));
    let r = ask(Command::ShowMaps {
        format: Format::Human,
    })
    .unwrap();
    assert_eq!(r.body, maps_table(&maps));
    let r = ask(Command::ShowPaths {
        format: Format::Human,
    })
    .unwrap();
    assert_eq!(r.body, paths_table(&paths));
    // A map by alias, WWID or dm name.
    for key in ["mpathb", "1Linux_scsi_debug_2001", "dm-1"] {
        let r = ask(Command::ShowMap {
            map: key.into(),
            format: Format::MultipathdJson,
        })
        .unwrap();
        assert_eq!(r.status, Status::Ok);
        assert_eq!(r.body, multipathd_map_json(&maps[1]), "{key}");
    }
    let r = ask(Command::ShowTopology {
        map: Some("dm-2".into()),
    })
    .unwrap();
    assert!(
        r.body
            .starts_with("mpathc (360014055d1b3c7a0e2f4b8a9c612f3e4) dm-2")
    );
    assert_eq!(r.body.lines().count(), 5);
    let r = ask(Command::ShowMap {
        map: "nope".into(),
        format: Format::Json,
    })
    .unwrap();
    assert_eq!(r.status, Status::NotFound);
    assert!(r.body.contains("\"nope\""));
    // Without a status from the daemon, counts come from the snapshot.
    let r = ask(Command::ShowStatus {
        format: Format::Human,
    })
    .unwrap();
    assert!(r.body.contains("paths: 6\nmaps: 3\n"), "{}", r.body);
    // Changes and show config are the daemon's business.
    assert!(ask(Command::ShowConfig).is_none());
    assert!(ask(Command::FailPath { dev: "sda".into() }).is_none());
}

/// The engine's views on a generated FC tree (two qla2xxx HBAs on PCI, one ALUA array): the
/// HBA's node name and PCI address come from sysfs, and a LUN whose block devices say `ro 1`
/// is shown write-protected, in the topology and in multipathd's JSON.
#[test]
fn views_show_read_only_luns_and_the_hba_from_sysfs() {
    let dir = tempfile::tempdir().unwrap();
    let sim = common::dual_hba(dir.path());
    // Every path of LUN 0 is read-only (an array-side snapshot exported read-only).
    let lun0: Vec<&lun_scan::topology::SimPath> = sim
        .present_paths()
        .filter(|p| p.ordinal == 0 && p.group == 0)
        .collect();
    assert_eq!(lun0.len(), 4);
    for p in &lun0 {
        let ro = sim
            .root
            .join(p.dev_dir())
            .join("block")
            .join(&p.dev)
            .join("ro");
        std::fs::write(ro, "1\n").unwrap();
    }
    let ro_wwid = lun0[0].expected_wwid.clone();
    let backend = dm_tables::SimBackend::open_file(dir.path().join("dm.json"), None).unwrap();
    let mut engine = common::engine(
        dir.path(),
        &sim.root,
        multipathd_rs::config::Config::builtin(),
        Box::new(backend),
        std::sync::Arc::new(multipathd_rs::clock::ManualClock::new()),
    );
    engine.sync().unwrap();
    let maps = engine.maps_view();
    assert_eq!(maps.len(), 4);
    for m in &maps {
        let want = if m.wwid == ro_wwid {
            WriteProtect::ReadOnly
        } else {
            WriteProtect::ReadWrite
        };
        assert_eq!(m.write_protect, want, "{}", m.name);
        for p in m.paths() {
            let (wwnn, pci) = if p.host_wwpn.as_deref() == Some("0x21000024ff3a1b10") {
                ("0x20000024ff3a1b10", "0000:00:02.0")
            } else {
                ("0x20000024ff3a1b11", "0000:00:03.0")
            };
            assert_eq!(p.host_wwnn.as_deref(), Some(wwnn), "{}", p.dev);
            assert_eq!(p.host_adapter.as_deref(), Some(pci), "{}", p.dev);
        }
    }
    let ro_map = maps.iter().find(|m| m.wwid == ro_wwid).unwrap();
    let text = topology(std::slice::from_ref(ro_map));
    assert!(text.contains(" wp=ro"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&multipathd_map_json(ro_map)).unwrap();
    assert_eq!(json["map"]["write_prot"], "ro");
    let p0 = &json["map"]["path_groups"][0]["paths"][0];
    assert!(
        p0["host_wwnn"]
            .as_str()
            .unwrap()
            .starts_with("0x20000024ff3a1b1")
    );
    assert!(
        p0["host_adapter"]
            .as_str()
            .unwrap()
            .starts_with("0000:00:0")
    );
}
