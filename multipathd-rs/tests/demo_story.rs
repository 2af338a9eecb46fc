#![allow(clippy::unwrap_used)]
//! `multipathd-rs demo`: the story's facts, from its JSON and from its text.

use std::process::Command;

use serde_json::Value;

fn demo(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_multipathd-rs"))
        .arg("demo")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn demo_json_shows_failover_and_failback() {
    let out = demo(&["--json", "--luns", "6"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["maps"], 6);
    assert_eq!(v["paths"], 24);
    let steps = v["steps"].as_array().unwrap();
    let step = |n: u64| steps.iter().find(|s| s["step"] == n).unwrap();
    // after the maps are built: 6 maps, 4 active paths each
    let s2 = step(2)["maps"].as_array().unwrap();
    assert_eq!(s2.len(), 6);
    assert!(s2.iter().all(|m| m["active_paths"] == 4));
    // host1 gone: all its paths failed, every map still has an active path
    let s4 = step(4);
    for m in s4["maps"].as_array().unwrap() {
        for p in m["paths"].as_array().unwrap() {
            let want = if p["host"] == "host1" {
                "failed"
            } else {
                "active"
            };
            assert_eq!(p["dm_state"], want, "{m}");
        }
        assert!(m["active_paths"].as_u64().unwrap() >= 1);
    }
    assert_eq!(
        s4["messages"].as_array().unwrap().len(),
        12,
        "one fail_path per host1 path"
    );
    assert_eq!(v["every_map_kept_a_path"], true);
    // host1 back: everything active again
    let s5 = step(5);
    for m in s5["maps"].as_array().unwrap() {
        assert_eq!(m["failed_paths"], 0);
        assert_eq!(m["active_paths"], 4);
    }
    assert_eq!(v["all_paths_active_at_end"], true);
    // the scratch directory is cleaned up
    assert!(!std::path::Path::new(v["scratch_dir"].as_str().unwrap()).exists());
}

#[test]
fn demo_story_reads_as_steps_with_commands() {
    let out = demo(&[]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "== Step 1.",
        "== Step 4. HBA host1 goes away",
        "== Step 5. HBA host1 comes back",
        "$ multipathd-rs once",
        "$ multipathd-rs show topology",
        "Every map still has a working path",
        "failed faulty transport-offline",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
}
