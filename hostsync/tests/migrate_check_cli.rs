//! `hostsync migrate check` end to end: a config read from a file, identities from a simulated
//! sysfs, the target's state from a local: registry, the table, the JSON and the exit status.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use hostsync::hosts::{MapState, publish_host_state};

fn hostsync() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hostsync"))
}

#[test]
fn the_cluster_alias_passes_an_sdx_name_fails_and_a_lost_path_warns() {
    let dir = tempfile::tempdir().unwrap();
    let sys = dir.path().join("sys");
    let topo = lun_scan::topology::Topology::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/topologies/fc-dual-hba.toml"),
    )
    .unwrap();
    let mut sim = lun_scan::topology::Sim::render(&topo, &sys).unwrap();
    let first: Vec<(String, String)> = sim
        .present_paths()
        .map(|p| (p.dev.clone(), p.expected_wwid.clone()))
        .collect();
    let wwid = first[0].1.clone();
    let devs: Vec<&str> = first
        .iter()
        .filter(|(_, w)| *w == wwid)
        .map(|(d, _)| d.as_str())
        .collect();
    sim.add_dm_map("mpatha", &format!("mpath-{wwid}"), &devs)
        .unwrap();
    let reg_url = format!("local:{}", dir.path().join("reg").display());
    let reg = hostsync::open(&reg_url).unwrap();
    let publish = |active: u32| {
        publish_host_state(
            &*reg,
            "b",
            0,
            &[MapState {
                name: "mpatha".into(),
                wwid: wwid.clone(),
                active_paths: active,
                total_paths: 4,
            }],
        )
        .unwrap()
    };
    publish(4);
    let good = dir.path().join("good.cfg");
    std::fs::write(
        &good,
        "name='web1'\ndisk=['phy:/dev/mapper/mpatha,xvda,w']\n",
    )
    .unwrap();
    let bad = dir.path().join("bad.cfg");
    std::fs::write(
        &bad,
        format!("name='web1'\ndisk=['phy:/dev/{},xvda,w']\n", devs[0]),
    )
    .unwrap();
    let run = |cfg: &Path, json: bool| {
        let mut c = hostsync();
        c.args(["--registry", &reg_url, "--host", "a", "migrate", "check"])
            .arg(cfg)
            .args(["--to", "b", "--sysfs"])
            .arg(&sys);
        if json {
            c.arg("--json");
        }
        let o = c.output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let (code, out) = run(&good, false);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("map mpatha has 4 of 4 paths active on b"),
        "{out}"
    );
    let (code, out) = run(&bad, false);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("(the LUN is /dev/mapper/mpatha on b)") && out.contains("UNSAFE"),
        "{out}"
    );
    publish(1);
    let (code, out) = run(&good, true);
    assert_eq!(code, Some(0), "a warning is still safe: {out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["warnings"], 1);
    assert_eq!(v["disks"][0]["level"], "warn");
    publish(0);
    let (code, out) = run(&good, false);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("no active path on b (0 of 4)"), "{out}");
}
