#![allow(clippy::unwrap_used)]
//! The configuration layer against the reference capture (real kernel + multipath-tools 0.9.4):
//! with only built-ins, the devices of fixtures/ref-sd2x2-tcmloop2 resolve to the settings
//! multipath-tools used for them (table.txt / create.txt), and a user file changes them with
//! provenance that names file and line.

use std::path::{Path, PathBuf};

use multipathd_rs::config::{Config, GroupingPolicy, Layer, PathIdentity, Prio};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/ref-sd2x2-tcmloop2")
}

/// Builds identities the way the discovery layer will: raw (padded) sysfs vendor/model, WWID
/// from wwids.txt (udev ID_SERIAL).
fn identities() -> Vec<PathIdentity> {
    let root = fixture();
    let wwids = std::fs::read_to_string(root.join("wwids.txt")).unwrap();
    wwids
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dev = f[0];
            let serial = f[2].strip_prefix("ID_SERIAL=").unwrap();
            let attr = |a: &str| {
                let raw = std::fs::read_to_string(root.join(format!("sys/block/{dev}/device/{a}")))
                    .unwrap();
                raw.trim_end_matches('\n').to_string()
            };
            PathIdentity {
                devnode: dev.into(),
                wwid: Some(serial.into()),
                vendor: attr("vendor"),
                product: attr("model"),
                protocol: Some("scsi:unspec".into()),
            }
        })
        .collect()
}

#[test]
fn builtins_reproduce_the_reference_tables() {
    let cfg = Config::builtin();
    let ids = identities();
    assert_eq!(ids.len(), 6);
    let table = std::fs::read_to_string(fixture().join("table.txt")).unwrap();
    for id in &ids {
        assert!(
            !cfg.blacklist_verdict(id).is_blacklisted(),
            "{}",
            id.devnode
        );
        let r = cfg.resolve(id);
        let s = &r.settings;
        assert_eq!(
            s.path_grouping_policy.value,
            GroupingPolicy::GroupByPrio,
            "{}",
            id.devnode
        );
        assert_eq!(s.prio.value, Prio::Alua);
        assert_eq!(s.path_selector.value, "service-time 0");
        assert_eq!(s.hardware_handler.value, "1 alua");
        assert!(table.contains(&format!(
            "1 {} ",
            s.hardware_handler.value.trim_start_matches("1 ")
        )));
        assert_eq!(s.path_grouping_policy.from.layer, Layer::BuiltinDevice);
        assert_eq!(r.devices.len(), 1);
        // create.txt: scsi_debug maps start without queueing, the LIO map with queue_if_no_path.
        let lio = id.vendor.starts_with("LIO-ORG");
        let want: Vec<String> = if lio {
            vec!["queue_if_no_path".into()]
        } else {
            vec![]
        };
        assert_eq!(s.table_features(), want, "{}", id.devnode);
    }
    let create = std::fs::read_to_string(fixture().join("create.txt")).unwrap();
    assert!(create.contains("mpathc: addmap [0 131072 multipath 1 queue_if_no_path 1 alua"));
    assert!(create.contains("mpatha: addmap [0 16384 multipath 0 1 alua"));
}

#[test]
fn user_file_changes_the_lab_devices_with_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        r#"[defaults]
find_multipaths = "no"

[blacklist]
wwid = ["^1Linux_scsi_debug_2001$"]

[[devices]]
vendor = "^Linux$"
product = "^scsi_debug"
path_grouping_policy = "multibus"

[[multipaths]]
wwid = "360014055d1b3c7a0e2f4b8a9c612f3e4"
alias = "lab_fileio"
no_path_retry = "fail"
"#,
    )
    .unwrap();
    let cfg = Config::load(&path).unwrap();
    let ids = identities();
    let by = |d: &str| ids.iter().find(|i| i.devnode == d).unwrap();

    let sda = cfg.explain(by("sda"));
    assert!(!sda.blacklist.is_blacklisted());
    let text = sda.to_string();
    assert!(
        text.contains("device entry ^Linux$/^scsi_debug matches"),
        "{text}"
    );
    assert!(text.contains("multibus"), "{text}");
    assert!(
        text.contains(&format!(
            "from device entry ^Linux$/^scsi_debug in {} line 10",
            path.display()
        )),
        "{text}"
    );

    let sdb = cfg.explain(by("sdb"));
    assert!(sdb.blacklist.is_blacklisted());
    assert!(sdb.to_string().contains(&format!(
        "wwid \"^1Linux_scsi_debug_2001$\" matches \"1Linux_scsi_debug_2001\" ({} line 5)",
        path.display()
    )));

    let sde = cfg.resolve(by("sde"));
    assert_eq!(sde.settings.alias.as_ref().unwrap().value, "lab_fileio");
    assert!(
        sde.settings.table_features().is_empty(),
        "multipaths no_path_retry fail beats the hwtable's 12"
    );
    assert_eq!(sde.settings.no_path_retry.from.layer, Layer::Multipath);

    let json = sda.to_json();
    assert_eq!(json["path"]["devnode"], "sda");
    assert_eq!(json["devices"][0]["builtin"], false);
    assert_eq!(json["devices"][1]["builtin"], true);
}
