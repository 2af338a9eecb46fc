#![allow(clippy::unwrap_used)]
//! Library behaviour of the alias store: precedence, user_friendly_names allocation,
//! templates, conflicts, corruption, repair, import/export, round trips.

use std::path::{Path, PathBuf};

use aliases::{AliasSource, AllocateContext, Error, ExportFormat, Policy, Store, StorePaths};

const REF_BINDINGS: &str = include_str!("../../fixtures/ref-sd2x2-tcmloop2/bindings");

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.p(name);
        std::fs::write(&p, text).unwrap();
        p
    }
    fn store(&self, table: bool, bindings: bool, policy: Option<Policy>) -> Store {
        Store::open(
            StorePaths {
                table: table.then(|| self.p("aliases.toml")),
                bindings: bindings.then(|| self.p("bindings")),
                config: Some(self.p("multipath.conf")),
                config_dir: Some(self.p("conf.d")),
            },
            policy,
        )
        .unwrap()
        .with_host("dom0-test")
    }
}

fn ctx() -> AllocateContext<'static> {
    AllocateContext::default()
}

fn ufn() -> Option<Policy> {
    Some(Policy::UserFriendlyNames {
        prefix: "mpath".into(),
    })
}

fn bindings_with(aliases: &[(&str, &str)]) -> String {
    aliases::bindings::render_fresh(aliases.iter().copied())
}

#[test]
fn ufn_with_the_reference_bindings_file_gives_mpathd_and_keeps_existing() {
    let env = Env::new();
    env.write("bindings", REF_BINDINGS);
    let s = env.store(false, true, ufn());
    // Existing bindings are returned unchanged and the file is not touched.
    let a = s
        .allocate("360014055d1b3c7a0e2f4b8a9c612f3e4", &ctx())
        .unwrap();
    assert_eq!(a.name, "mpathc");
    assert_eq!(a.source, AliasSource::Existing);
    assert_eq!(
        std::fs::read_to_string(env.p("bindings")).unwrap(),
        REF_BINDINGS
    );
    // A new WWID gets the next id, appended exactly as multipath-tools appends it.
    let a = s.allocate("1Linux_scsi_debug_2002", &ctx()).unwrap();
    assert_eq!(a.name, "mpathd");
    assert_eq!(a.source, AliasSource::Generated);
    assert_eq!(
        std::fs::read_to_string(env.p("bindings")).unwrap(),
        format!("{REF_BINDINGS}mpathd 1Linux_scsi_debug_2002\n")
    );
    // Removing it again restores the original bytes.
    s.remove("1Linux_scsi_debug_2002", &[], false).unwrap();
    assert_eq!(
        std::fs::read_to_string(env.p("bindings")).unwrap(),
        REF_BINDINGS
    );
}

#[test]
fn ufn_takes_the_lowest_free_id_and_skips_live_maps() {
    let env = Env::new();
    env.write(
        "bindings",
        &bindings_with(&[("mpatha", "1a"), ("mpathc", "1c"), ("yellow", "1y")]),
    );
    let s = env.store(false, true, ufn());
    assert_eq!(s.allocate("1new", &ctx()).unwrap().name, "mpathb");
    // mpathd is used by a live map of another WWID (for example created by hand): skipped.
    let live = vec![
        ("mpathd".to_string(), "mpath-1other".to_string()),
        ("vg-root".to_string(), "LVM-abc".to_string()),
    ];
    let c = AllocateContext {
        live_maps: &live,
        ..ctx()
    };
    assert_eq!(s.allocate("1new2", &c).unwrap().name, "mpathe");
    // A live map of the same WWID does not block its own name.
    let live = vec![("mpathf".to_string(), "mpath-1new3".to_string())];
    let c = AllocateContext {
        live_maps: &live,
        ..ctx()
    };
    assert_eq!(s.allocate("1new3", &c).unwrap().name, "mpathd");
}

#[test]
fn ufn_goes_from_mpathz_to_mpathaa_and_ba_after_az() {
    let env = Env::new();
    let s = env.store(true, false, ufn());
    let mut names = Vec::new();
    for i in 0..54 {
        names.push(s.allocate(&format!("1w{i:03}"), &ctx()).unwrap().name);
    }
    assert_eq!(names[0], "mpatha");
    assert_eq!(names[25], "mpathz");
    assert_eq!(names[26], "mpathaa");
    assert_eq!(names[51], "mpathaz");
    assert_eq!(names[52], "mpathba");
    // A custom prefix (alias_prefix).
    let env2 = Env::new();
    let s2 = env2.store(
        true,
        false,
        Some(Policy::UserFriendlyNames {
            prefix: "lun".into(),
        }),
    );
    assert_eq!(s2.allocate("1x", &ctx()).unwrap().name, "luna");
}

#[test]
fn table_entries_carry_generation_host_and_time() {
    let env = Env::new();
    let s = env.store(true, false, ufn());
    let c = AllocateContext {
        comment: Some("web01 root"),
        ..ctx()
    };
    s.allocate("1a", &c).unwrap();
    s.allocate("1b", &ctx()).unwrap();
    s.allocate("1a", &ctx()).unwrap(); // existing: no change
    let t = aliases::table::Table::load(&env.p("aliases.toml")).unwrap();
    assert_eq!(t.generation, 2);
    assert_eq!(t.entries.len(), 2);
    let e = &t.entries[0];
    assert_eq!(e.alias, "mpatha");
    assert_eq!(e.comment.as_deref(), Some("web01 root"));
    assert_eq!(e.created_by.as_deref(), Some("dom0-test"));
    let at = e.created_at.as_deref().unwrap();
    assert_eq!(at.len(), 20, "{at}");
    assert!(at.ends_with('Z') && at.as_bytes()[10] == b'T', "{at}");
    s.remove("1a", &[], false).unwrap();
    let t = aliases::table::Table::load(&env.p("aliases.toml")).unwrap();
    assert_eq!(t.generation, 3);
    // The freed id is reused by the next allocation (lowest free id).
    assert_eq!(s.allocate("1c", &ctx()).unwrap().name, "mpatha");
}

#[test]
fn precedence_explicit_then_config_then_binding_then_policy_then_wwid() {
    let env = Env::new();
    env.write(
        "multipath.conf",
        "defaults {\n user_friendly_names yes\n}\nmultipaths {\n multipath {\n  wwid 1conf\n  alias yellow\n }\n}\n",
    );
    env.write(
        "bindings",
        &bindings_with(&[("mpatha", "1bound"), ("mpathb", "1conf")]),
    );
    let s = env.store(false, true, None);
    assert_eq!(
        s.policy(),
        &Policy::UserFriendlyNames {
            prefix: "mpath".into()
        }
    );
    // Explicit alias wins over everything, and is not stored.
    let c = AllocateContext {
        explicit_alias: Some("green"),
        ..ctx()
    };
    let a = s.allocate("1bound", &c).unwrap();
    assert_eq!(
        (a.name.as_str(), &a.source),
        ("green", &AliasSource::Explicit)
    );
    // multipath.conf alias wins over the binding.
    let a = s.allocate("1conf", &ctx()).unwrap();
    assert_eq!(
        (a.name.as_str(), &a.source),
        ("yellow", &AliasSource::Config)
    );
    // Existing binding.
    let a = s.allocate("1bound", &ctx()).unwrap();
    assert_eq!(
        (a.name.as_str(), &a.source),
        ("mpatha", &AliasSource::Existing)
    );
    // New name.
    assert_eq!(s.allocate("1fresh", &ctx()).unwrap().name, "mpathc");
    // With the WWID policy a new WWID is its own name and nothing is written.
    let before = std::fs::read(env.p("bindings")).unwrap();
    let w = env.store(false, true, Some(Policy::Wwid));
    let a = w.allocate("1other", &ctx()).unwrap();
    assert_eq!((a.name.as_str(), &a.source), ("1other", &AliasSource::Wwid));
    assert_eq!(std::fs::read(env.p("bindings")).unwrap(), before);
    // An explicit alias that another WWID holds is a conflict naming both.
    let c = AllocateContext {
        explicit_alias: Some("mpatha"),
        ..ctx()
    };
    let e = s.allocate("1x", &c).unwrap_err().to_string();
    assert!(
        e.contains("1bound") && e.contains("1x") && e.contains("bindings line 8"),
        "{e}"
    );
}

#[test]
fn policy_from_config_defaults() {
    let env = Env::new();
    env.write("multipath.conf", "defaults {\n user_friendly_names no\n}\n");
    assert_eq!(env.store(true, false, None).policy(), &Policy::Wwid);
    std::fs::create_dir(env.p("conf.d")).unwrap();
    env.write(
        "conf.d/10-ufn.conf",
        "defaults {\n user_friendly_names yes\n alias_prefix disk\n}\n",
    );
    assert_eq!(
        env.store(true, false, None).policy(),
        &Policy::UserFriendlyNames {
            prefix: "disk".into()
        }
    );
}

#[test]
fn templates_expand_and_validate() {
    let env = Env::new();
    let s = env.store(
        true,
        false,
        Some(Policy::Template {
            template: "domU-{label}_{wwid_tail}".into(),
        }),
    );
    let vars = [("label", "web01")];
    let c = AllocateContext {
        vars: &vars,
        ..ctx()
    };
    let a = s.allocate("360014055d1b3c7a0e2f4b8a9c612f3e4", &c).unwrap();
    assert_eq!(a.name, "domU-web01_c612f3e4");
    // Missing variable: an error naming the template, nothing stored.
    let e = s.allocate("1other", &ctx()).unwrap_err();
    assert!(matches!(e, Error::Template { .. }), "{e}");
    // A result that is not a valid dm name is rejected.
    let bad = [("label", "a/b")];
    let c = AllocateContext {
        vars: &bad,
        ..ctx()
    };
    assert!(s.allocate("1third", &c).is_err());
    // Same label and same tail for another WWID: conflict naming both WWIDs.
    let c = AllocateContext {
        vars: &vars,
        ..ctx()
    };
    let e = s
        .allocate("3600140000000000000000000c612f3e4", &c)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("360014055d1b3c7a0e2f4b8a9c612f3e4")
            && e.contains("3600140000000000000000000c612f3e4"),
        "{e}"
    );
    // {n} finds the lowest free counter instead.
    let s2 = env.store(
        true,
        false,
        Some(Policy::Template {
            template: "lun{n}".into(),
        }),
    );
    s2.set("1manual", "lun1", None, &[]).unwrap();
    assert_eq!(s2.allocate("1p", &ctx()).unwrap().name, "lun2");
    assert_eq!(s2.allocate("1q", &ctx()).unwrap().name, "lun3");
}

#[test]
fn table_and_bindings_are_kept_in_step() {
    let env = Env::new();
    env.write("bindings", REF_BINDINGS);
    let s = env.store(true, true, ufn());
    s.allocate("1new", &ctx()).unwrap();
    // The first change copied the three existing bindings into the table as well.
    let t = aliases::table::Table::load(&env.p("aliases.toml")).unwrap();
    let got: Vec<_> = t
        .entries
        .iter()
        .map(|e| (e.alias.as_str(), e.wwid.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("mpatha", "1Linux_scsi_debug_2000"),
            ("mpathb", "1Linux_scsi_debug_2001"),
            ("mpathc", "360014055d1b3c7a0e2f4b8a9c612f3e4"),
            ("mpathd", "1new"),
        ]
    );
    assert_eq!(
        std::fs::read_to_string(env.p("bindings")).unwrap(),
        format!("{REF_BINDINGS}mpathd 1new\n")
    );
    // An entry only in the table (crash between the two writes) reaches the bindings file on
    // the next change.
    let table_only = env.store(true, false, ufn());
    table_only.allocate("1tableonly", &ctx()).unwrap();
    s.allocate("1later", &ctx()).unwrap();
    let b = std::fs::read_to_string(env.p("bindings")).unwrap();
    assert!(
        b.ends_with("mpathd 1new\nmpathe 1tableonly\nmpathf 1later\n"),
        "{b}"
    );
}

#[test]
fn conflicts_between_files_name_both_wwids_and_files() {
    let env = Env::new();
    env.write("bindings", &bindings_with(&[("mpatha", "1b-wwid")]));
    let t = env.store(true, false, ufn());
    t.set("1t-wwid", "mpatha", None, &[]).unwrap();
    let s = env.store(true, true, ufn());
    // The conflict does not stop the store: it is reported, the losing line is kept and its
    // WWID gets no name; others are named as usual and no second mpatha line is written.
    let before = std::fs::read_to_string(env.p("bindings")).unwrap();
    assert_eq!(s.allocate("1z", &ctx()).unwrap().name, "mpathb");
    let problems = s.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    let msg = &problems[0];
    assert!(msg.contains("1t-wwid") && msg.contains("1b-wwid"), "{msg}");
    assert!(
        msg.contains("aliases.toml") && msg.contains("bindings line 8"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read_to_string(env.p("bindings")).unwrap(),
        format!("{before}mpathb 1z\n")
    );
    let e = s.allocate("1b-wwid", &ctx()).unwrap_err();
    assert!(matches!(e, Error::Disputed { .. }), "{e}");
    assert!(e.to_string().contains("bindings line 8"), "{e}");
    assert_eq!(s.allocate("1t-wwid", &ctx()).unwrap().name, "mpatha");
    // check lists it too; a conf alias of the same name for a third WWID is another conflict.
    env.write(
        "multipath.conf",
        "multipaths {\n multipath {\n  wwid 1c-wwid\n  alias mpatha\n }\n}\n",
    );
    let s = env.store(true, true, ufn());
    let problems = s.check(&[]);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[1].to_string().contains("multipath.conf line 4"),
        "{}",
        problems[1]
    );

    // One WWID with two aliases across sources.
    let env = Env::new();
    env.write("bindings", &bindings_with(&[("mpathb", "1w")]));
    env.store(true, false, ufn())
        .set("1w", "red", None, &[])
        .unwrap();
    let e = env
        .store(true, true, ufn())
        .allocate("1w", &ctx())
        .unwrap_err();
    assert!(matches!(e, Error::Disputed { .. }), "{e}");
    assert!(
        e.to_string().contains("red") && e.to_string().contains("mpathb"),
        "{e}"
    );
}

#[test]
fn check_reports_live_map_conflicts() {
    let env = Env::new();
    let s = env.store(true, false, ufn());
    s.set("1a", "data", None, &[]).unwrap();
    assert!(s.check(&[("data".into(), "mpath-1a".into())]).is_empty());
    // A live map named "data" belongs to another WWID.
    let p = s.check(&[("data".into(), "mpath-1other".into())]);
    assert_eq!(p.len(), 1);
    assert!(p[0].to_string().contains("1other") && p[0].to_string().contains("1a"));
    // The live map of 1a runs under another name.
    let p = s.check(&[("mpathq".into(), "mpath-1a".into())]);
    assert_eq!(p.len(), 1);
    assert!(p[0].to_string().contains("mpathq"), "{}", p[0]);
}

#[test]
fn bad_bindings_lines_are_kept_and_skipped_and_repair_keeps_a_backup() {
    let env = Env::new();
    let text = format!("{REF_BINDINGS}mpathd\nmpathe 1e\nmpathe 1dup\n");
    env.write("bindings", &text);
    let s = env.store(false, true, ufn());
    // multipath-tools skips a bad line and goes on; so do we, loudly. The aliases on bad
    // lines (mpathd, mpathe) are not handed out again.
    assert_eq!(s.allocate("1new", &ctx()).unwrap().name, "mpathf");
    let problems = s.problems();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].contains("bindings line 11: \"mpathd\" is skipped")
            && problems[0].contains("kept"),
        "{problems:?}"
    );
    assert!(problems[1].contains("line 13"), "{problems:?}");
    // The WWID whose only line is bad gets no name (which one is right is for a human).
    let e = s.allocate("1dup", &ctx()).unwrap_err();
    assert!(matches!(e, Error::Disputed { .. }), "{e}");
    assert!(e.to_string().contains("line 13"), "{e}");
    let now = format!("{text}mpathf 1new\n");
    assert_eq!(std::fs::read_to_string(env.p("bindings")).unwrap(), now);
    assert_eq!(s.check(&[]).len(), 2);

    let done = s.repair().unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].kept, 5);
    let dropped: Vec<_> = done[0].dropped.iter().map(|d| d.0).collect();
    assert_eq!(dropped, [11, 13]);
    assert_eq!(std::fs::read_to_string(&done[0].backup).unwrap(), now);
    assert_eq!(
        std::fs::read_to_string(env.p("bindings")).unwrap(),
        format!("{REF_BINDINGS}mpathe 1e\nmpathf 1new\n")
    );
    assert_eq!(s.allocate("1dup", &ctx()).unwrap().name, "mpathd");
    assert_eq!(s.allocate("1e", &ctx()).unwrap().name, "mpathe");
    assert!(s.repair().unwrap().is_empty());
    assert!(s.problems().is_empty());
}

#[test]
fn corrupt_table_is_refused_and_salvaged() {
    let env = Env::new();
    let s = env.store(true, false, ufn());
    s.allocate("1a", &ctx()).unwrap();
    s.allocate("1b", &ctx()).unwrap();
    let good = std::fs::read_to_string(env.p("aliases.toml")).unwrap();
    let broken = good.replace("alias = \"mpathb\"", "alias = mpathb");
    env.write("aliases.toml", &broken);
    let e = s.allocate("1c", &ctx()).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("aliases.toml"), "{e}");
    assert_eq!(
        std::fs::read_to_string(env.p("aliases.toml")).unwrap(),
        broken
    );
    let done = s.repair().unwrap();
    assert_eq!(done[0].kept, 1);
    assert_eq!(done[0].dropped.len(), 1);
    let t = aliases::table::Table::load(&env.p("aliases.toml")).unwrap();
    assert_eq!(t.entries.len(), 1);
    assert_eq!(t.generation, 3);
    assert_eq!(std::fs::read_to_string(&done[0].backup).unwrap(), broken);
}

#[test]
fn set_and_remove_rules() {
    let env = Env::new();
    let s = env.store(true, true, ufn());
    assert!(s.set("1a", "data", Some("db"), &[]).unwrap());
    assert!(!s.set("1a", "data", None, &[]).unwrap());
    let e = s.set("1a", "other", None, &[]).unwrap_err();
    assert!(matches!(e, Error::AlreadyBound { .. }), "{e}");
    let e = s.set("1b", "data", None, &[]).unwrap_err();
    assert!(matches!(e, Error::AliasConflict { .. }), "{e}");
    let live = vec![("busy".to_string(), "mpath-1zz".to_string())];
    assert!(s.set("1b", "busy", None, &live).is_err());
    for bad in ["a b", "x/y", ".", ""] {
        assert!(s.set("1b", bad, None, &[]).is_err(), "{bad:?}");
    }
    // Removal while a live map uses the alias needs force.
    let live = vec![("data".to_string(), "mpath-1a".to_string())];
    let e = s.remove("1a", &live, false).unwrap_err();
    assert!(matches!(e, Error::InUse { .. }), "{e}");
    assert_eq!(s.lookup("1a").unwrap().unwrap().name, "data");
    assert_eq!(s.remove("1a", &live, true).unwrap(), "data");
    assert!(s.lookup("1a").unwrap().is_none());
    assert!(matches!(
        s.remove("1a", &[], false),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn import_and_export_round_trip() {
    let env = Env::new();
    let refb = env.write("ref-bindings", REF_BINDINGS);
    let s = env.store(true, false, ufn());
    let r = s.import_bindings(&refb, &[]).unwrap();
    assert_eq!(r.added.len(), 3);
    assert_eq!(s.import_bindings(&refb, &[]).unwrap().unchanged, 3);
    // Exported bindings are byte-identical to what multipath-tools wrote.
    assert_eq!(s.export(ExportFormat::Bindings).unwrap(), REF_BINDINGS);
    // multipaths {} drop-in parses back to the same aliases.
    let conf = s.export(ExportFormat::MultipathConf).unwrap();
    let cp = env.write("exported.conf", &conf);
    let env2 = Env::new();
    let s2 = env2.store(true, false, ufn());
    assert_eq!(s2.import_multipath_conf(&cp, &[]).unwrap().added.len(), 3);
    assert_eq!(s2.export(ExportFormat::Bindings).unwrap(), REF_BINDINGS);
    // TOML export parses as a table.
    let toml = s.export(ExportFormat::Toml).unwrap();
    let t = aliases::table::Table::parse(&toml, Path::new("x")).unwrap();
    assert_eq!(t.entries.len(), 3);
    // A conflicting import changes nothing.
    let before = std::fs::read(env.p("aliases.toml")).unwrap();
    let bad = env.write(
        "bad-bindings",
        &bindings_with(&[("newname", "1fine"), ("mpatha", "1thief")]),
    );
    let e = s.import_bindings(&bad, &[]).unwrap_err().to_string();
    assert!(
        e.contains("1thief") && e.contains("1Linux_scsi_debug_2000"),
        "{e}"
    );
    assert_eq!(std::fs::read(env.p("aliases.toml")).unwrap(), before);
}

#[test]
fn batch_allocation_matches_single_allocation() {
    let env = Env::new();
    let s = env.store(true, true, ufn());
    s.allocate("1first", &ctx()).unwrap();
    let got = s
        .allocate_batch(&["1x", "1first", "1y", "1x"], &ctx())
        .unwrap();
    let names: Vec<_> = got.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["mpathb", "mpatha", "mpathc", "mpathb"]);
    let t = aliases::table::Table::load(&env.p("aliases.toml")).unwrap();
    assert_eq!(t.generation, 2);
    assert_eq!(t.entries.len(), 3);
    assert!(s.check(&[]).is_empty());
    // Live maps of other WWIDs are skipped in a batch as well.
    let live = vec![("mpathe".to_string(), "mpath-1elsewhere".to_string())];
    let c = AllocateContext {
        live_maps: &live,
        ..ctx()
    };
    let got = s.allocate_batch(&["1p", "1q", "1r"], &c).unwrap();
    let names: Vec<_> = got.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["mpathd", "mpathf", "mpathg"]);
}

#[test]
fn live_maps_are_read_from_sysfs() {
    let env = Env::new();
    let root = env.p("sys");
    for (dm, name, uuid) in [("dm-0", "mpatha", "mpath-1a"), ("dm-1", "vg-root", "LVM-x")] {
        let d = root.join("block").join(dm).join("dm");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("name"), format!("{name}\n")).unwrap();
        std::fs::write(d.join("uuid"), format!("{uuid}\n")).unwrap();
    }
    std::fs::create_dir_all(root.join("block/sda")).unwrap();
    let maps = aliases::live_maps_from_sysfs(&root).unwrap();
    assert_eq!(
        maps,
        [
            ("mpatha".to_string(), "mpath-1a".to_string()),
            ("vg-root".to_string(), "LVM-x".to_string())
        ]
    );
    assert!(
        aliases::live_maps_from_sysfs(&env.p("nosys"))
            .unwrap()
            .is_empty()
    );
    // The reference sysfs tree has no device-mapper devices.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/ref-sd2x2-tcmloop2/sys");
    assert!(aliases::live_maps_from_sysfs(&fixture).unwrap().is_empty());
}

#[test]
fn several_stores_and_threads_in_one_process_see_each_others_writes() {
    let env = Env::new();
    let s1 = env.store(true, true, ufn());
    let s2 = env.store(true, true, ufn());
    assert_eq!(s1.allocate("1a", &ctx()).unwrap().name, "mpatha");
    assert_eq!(s1.list().unwrap().len(), 1); // s1 caches the table now
    assert_eq!(s2.allocate("1b", &ctx()).unwrap().name, "mpathb");
    // s1's cache is stale and must be noticed.
    assert_eq!(s1.allocate("1c", &ctx()).unwrap().name, "mpathc");
    assert_eq!(s1.lookup("1b").unwrap().unwrap().name, "mpathb");

    let shared = std::sync::Arc::new(env.store(true, true, ufn()));
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let own = env.store(true, true, ufn());
            let shared = shared.clone();
            std::thread::spawn(move || {
                for i in 0..20 {
                    let w = format!("1t{t}i{i}");
                    if i % 2 == 0 {
                        own.allocate(&w, &ctx()).unwrap();
                    } else {
                        shared.allocate(&w, &ctx()).unwrap();
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let t = aliases::table::Table::load(&env.p("aliases.toml")).unwrap();
    assert_eq!(t.entries.len(), 163);
    assert_eq!(t.generation, 163);
    let distinct: std::collections::HashSet<_> = t.entries.iter().map(|e| &e.alias).collect();
    assert_eq!(distinct.len(), 163);
    assert!(s1.check(&[]).is_empty());
}

#[test]
fn symlinked_files_are_written_through_the_link_with_owner_and_mode_kept() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let env = Env::new();
    std::fs::create_dir(env.p("real")).unwrap();
    let real_b = env.write("real/bindings", REF_BINDINGS);
    let real_t = env.p("real/aliases.toml");
    std::os::unix::fs::symlink("real/bindings", env.p("bindings")).unwrap();
    std::os::unix::fs::symlink("real/aliases.toml", env.p("aliases.toml")).unwrap();
    let s = env.store(true, true, ufn());
    assert_eq!(s.allocate("1new", &ctx()).unwrap().name, "mpathd");
    for (link, real) in [
        (env.p("bindings"), &real_b),
        (env.p("aliases.toml"), &real_t),
    ] {
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink(),
            "{} was replaced by a regular file",
            link.display()
        );
        assert!(std::fs::read_to_string(real).unwrap().contains("1new"));
    }
    // Owner and mode of the targets survive the next change.
    let root = nix::unistd::Uid::effective().is_root();
    for real in [&real_b, &real_t] {
        std::fs::set_permissions(real, std::fs::Permissions::from_mode(0o640)).unwrap();
        if root {
            std::os::unix::fs::chown(real, Some(4321), Some(4322)).unwrap();
        }
    }
    assert_eq!(s.allocate("1other", &ctx()).unwrap().name, "mpathe");
    for real in [&real_b, &real_t] {
        let m = std::fs::metadata(real).unwrap();
        assert!(std::fs::read_to_string(real).unwrap().contains("1other"));
        assert_eq!(m.permissions().mode() & 0o7777, 0o640, "{}", real.display());
        if root {
            assert_eq!((m.uid(), m.gid()), (4321, 4322), "{}", real.display());
        }
    }
    let names: Vec<_> = std::fs::read_dir(env.p("real"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.contains(".tmp.") && !n.contains("journal")),
        "{names:?}"
    );
}

#[test]
fn repair_says_when_a_line_is_not_utf8_instead_of_keeping_replacement_characters() {
    let env = Env::new();
    let mut bytes = REF_BINDINGS.as_bytes().to_vec();
    bytes.extend_from_slice(b"mpath\xff\xfe 1bad\nmpathe 1e\n");
    std::fs::write(env.p("bindings"), &bytes).unwrap();
    let table = b"generation = 1\n\n[[alias]]\nwwid = \"1t\"\nalias = \"t\xffx\"\n\n[[alias]]\nwwid = \"1u\"\nalias = \"u\"\n".to_vec();
    std::fs::write(env.p("aliases.toml"), &table).unwrap();
    let s = env.store(true, true, ufn());
    let done = s.repair().unwrap();
    assert_eq!(done.len(), 2, "{done:?}");
    for f in &done {
        assert_eq!(f.dropped.len(), 1, "{f:?}");
        assert!(f.dropped[0].2.contains("UTF-8"), "{f:?}");
    }
    assert_eq!(std::fs::read(&done[0].backup).unwrap(), table);
    assert_eq!(std::fs::read(&done[1].backup).unwrap(), bytes);
    let b = std::fs::read_to_string(env.p("bindings")).unwrap();
    assert_eq!(b, format!("{REF_BINDINGS}mpathe 1e\n"));
    let t = std::fs::read_to_string(env.p("aliases.toml")).unwrap();
    assert!(!t.contains('\u{FFFD}') && t.contains("\"u\""), "{t}");
    // Nothing with a replacement character was stored anywhere.
    assert!(
        s.list()
            .unwrap()
            .iter()
            .all(|l| !l.alias.contains('\u{FFFD}'))
    );
}

#[test]
fn a_removed_binding_is_not_brought_back_by_a_later_line_for_the_same_wwid() {
    let env = Env::new();
    // The same WWID bound twice: the second line is skipped while the first one is there.
    env.write(
        "bindings",
        &bindings_with(&[("mpatha", "1a"), ("mpathb", "1b"), ("mpathq", "1a")]),
    );
    let s = env.store(true, true, ufn());
    assert_eq!(s.remove("1a", &[], false).unwrap(), "mpatha");
    // The next change syncs table and bindings file: 1a must stay removed.
    s.allocate("1c", &ctx()).unwrap();
    assert_eq!(s.lookup("1a").unwrap(), None);
    let b = std::fs::read_to_string(env.p("bindings")).unwrap();
    assert!(!b.contains("1a"), "{b}");
    let t = std::fs::read_to_string(env.p("aliases.toml")).unwrap();
    assert!(!t.contains("\"1a\""), "{t}");
}
