#![allow(clippy::unwrap_used)]
//! `once` with a bad line in multipath-tools' bindings file, on a generated dual-HBA FC tree
//! with the simulated device-mapper. multipath-tools skips the bad line and builds the other
//! maps; so must we, loudly, and `once` exits non-zero when a map could not be built.

mod common;

use std::process::{Command, Output};

use common::Lab;
use serde_json::Value;

use aliases::bindings::BINDINGS_HEADER as HEADER;

impl Lab {
    fn once(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_multipathd-rs"))
            .arg("--sysfs-root")
            .arg(&self.sim.root)
            .arg("--dm-backend")
            .arg(format!("sim:{}", self.p("dm.json").display()))
            .arg("--aliases-table")
            .arg(self.p("aliases.toml"))
            .arg("--bindings-file")
            .arg(self.p("bindings"))
            .arg("--config")
            .arg(self.p("config.toml"))
            .arg("--socket")
            .arg(self.p("ctl.sock"))
            .arg("once")
            .args(args)
            .output()
            .unwrap()
    }

    /// The WWIDs of the tree, from a dry run.
    fn wwids(&self) -> Vec<String> {
        let out = self.once(&["--dry-run", "--json"]);
        assert!(out.status.success(), "{out:?}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut w: Vec<String> = v["maps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["wwid"].as_str().unwrap().to_string())
            .collect();
        w.sort();
        w
    }
}

fn maps(out: &Output) -> Vec<(String, String)> {
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["maps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["wwid"].as_str().unwrap().to_string(),
                m["name"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn an_unrelated_duplicate_alias_does_not_stop_any_map() {
    let lab = Lab::new();
    let wwids = lab.wwids();
    assert_eq!(wwids.len(), 4);
    let text = format!("{HEADER}mpathz 3600dead\nmpathz 3600beef\n");
    std::fs::write(lab.p("bindings"), &text).unwrap();
    let out = lab.once(&["--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "no map failed: {stderr}");
    let built = maps(&out);
    assert_eq!(built.len(), 4, "every map is built: {built:?}\n{stderr}");
    // Loudly: a warning that names the file and the line.
    assert!(
        stderr.contains("WARN")
            && stderr.contains("bindings line 9")
            && stderr.contains("3600beef"),
        "{stderr}"
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().contains("bindings line 9")),
        "{v}"
    );
    // The bad line is kept; the new bindings are appended; mpathz is not handed out.
    let now = std::fs::read_to_string(lab.p("bindings")).unwrap();
    assert!(now.starts_with(&text), "{now}");
    for (w, name) in &built {
        assert!(now.contains(&format!("{name} {w}\n")), "{now}");
        assert_ne!(name, "mpathz");
    }
}

#[test]
fn a_map_whose_wwid_is_on_a_bad_line_is_not_built_and_once_fails() {
    let lab = Lab::new();
    let wwids = lab.wwids();
    // Two present LUNs claim one alias: the first keeps it, the second gets no name.
    let text = format!("{HEADER}mpathy {}\nmpathy {}\n", wwids[0], wwids[1]);
    std::fs::write(lab.p("bindings"), &text).unwrap();
    let out = lab.once(&["--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a map could not be built: {stderr}"
    );
    let built = maps(&out);
    assert_eq!(built.len(), 3, "{built:?}");
    assert!(built.contains(&(wwids[0].clone(), "mpathy".to_string())));
    assert!(!built.iter().any(|(w, _)| *w == wwids[1]));
    assert!(
        stderr.contains("ERROR") && stderr.contains(&wwids[1]),
        "{stderr}"
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["unnamed"], serde_json::json!([wwids[1]]));
    assert!(
        std::fs::read_to_string(lab.p("bindings"))
            .unwrap()
            .starts_with(&text)
    );
}
