#![allow(clippy::unwrap_used)]
//! `config import`: realistic multipath.conf files become our TOML, and everything that cannot
//! be carried over is listed with file, line and reason.

use std::path::Path;

use aliases::mpconf;
use multipathd_rs::config::{
    AliasPolicy, Checker, Config, DevLoss, Failback, FastIoFail, FindMultipaths, GroupingPolicy,
    Layer, NoPathRetry, PathIdentity, Prio,
};
use multipathd_rs::import::{ImportReport, import_files, import_multipath_conf};

/// What Debian/Ubuntu admins typically have: a small defaults section, a wwid blacklist with
/// exceptions, and aliases.
const DEBIAN: &str = r#"# /etc/multipath.conf (Debian)
defaults {
    user_friendly_names yes
    find_multipaths     yes
    polling_interval    10
    verbosity           2
}

blacklist {
    devnode "^(ram|raw|loop|fd|md|dm-|sr|scd|st)[0-9]*"
    devnode "^hd[a-z]"
    wwid ".*"
    property "(SCSI_IDENT_|ID_WWN)"
}

blacklist_exceptions {
    wwid "3600508b400105e210000900000490000"
    wwid "^36001405"
}

multipaths {
    multipath {
        wwid  3600508b400105e210000900000490000
        alias yellow
    }
    multipath {
        wwid  360014055d1b3c7a0e2f4b8a9c612f3e4
        alias lab_fileio
        path_grouping_policy multibus
        rr_weight priorities
    }
}
"#;

/// A vendor-style file: device sections with array settings, a device blacklist, overrides.
const VENDOR: &str = r#"defaults {
	path_selector		"round-robin 0"
	path_grouping_policy	failover
	failback		immediate
	no_path_retry		fail
	detect_prio		no
	max_polling_interval	40
	fast_io_fail_tmo	5
}
blacklist {
	device {
		vendor	"DELL"
		product	"PERC"
	}
	protocol "scsi:sas"
}
blacklist_exceptions {
	protocol "scsi:(fcp|iscsi)"
}
devices {
	device {
		vendor			"NETAPP"
		product			"LUN.*"
		path_grouping_policy	group_by_prio
		features		"2 pg_init_retries 50"
		no_path_retry		queue
		prio			"ontap"
		hardware_handler	"1 alua"
		path_checker		tur
		dev_loss_tmo		infinity
	}
	device {
		vendor			"DGC"
		product			".*"
		product_blacklist	"LUNZ"
		path_checker		emc_clariion
		prio			sysfs
		failback		15
	}
	device {
		vendor			"HP"
		product			"*"
	}
}
overrides {
	path_checker	readsector0
	no_path_retry	12
	protocol {
		type	"scsi:iscsi"
		no_path_retry	30
	}
}
"#;

fn import(text: &str, name: &str) -> ImportReport {
    let file = mpconf::parse_str(text, Path::new(name)).unwrap();
    import_multipath_conf(&[file]).unwrap()
}

fn skipped_keys(r: &ImportReport) -> Vec<(String, usize)> {
    r.skipped.iter().map(|s| (s.key.clone(), s.line)).collect()
}

fn id(dev: &str, vendor: &str, product: &str, wwid: &str, protocol: &str) -> PathIdentity {
    PathIdentity {
        devnode: dev.into(),
        wwid: Some(wwid.into()),
        vendor: vendor.into(),
        product: product.into(),
        protocol: Some(protocol.into()),
    }
}

#[test]
fn debian_style_file() {
    let r = import(DEBIAN, "/etc/multipath.conf");
    let c = &r.config;
    assert_eq!(
        c.defaults.alias_policy,
        Some(AliasPolicy::UserFriendlyNames)
    );
    assert_eq!(c.defaults.find_multipaths, Some(FindMultipaths::Yes));
    assert_eq!(c.defaults.polling_interval, Some(10));
    assert_eq!(c.blacklist.devnode.len(), 2);
    assert_eq!(c.blacklist.wwid.len(), 1);
    assert_eq!(c.blacklist_exceptions.wwid.len(), 2);
    assert_eq!(c.multipaths.len(), 2);
    assert_eq!(c.multipaths[0].alias.as_deref(), Some("yellow"));
    assert_eq!(
        c.multipaths[1].settings.path_grouping_policy,
        Some(GroupingPolicy::Multibus)
    );

    assert_eq!(
        skipped_keys(&r),
        vec![
            ("defaults/verbosity".to_string(), 6),
            ("blacklist/property".to_string(), 13),
            ("multipaths/multipath/rr_weight".to_string(), 30),
        ]
    );
    assert!(r.skipped[1].why.contains("property"), "{}", r.skipped[1]);
    assert_eq!(r.skipped[0].file, Path::new("/etc/multipath.conf"));

    // The TOML reads back, lists what was left out, and behaves like the original.
    assert!(
        r.toml
            .contains("# not carried over: /etc/multipath.conf line 13: blacklist/property")
    );
    let back = Config::parse_str(&r.toml, Path::new("/etc/multipathd-rs/config.toml")).unwrap();
    let allowed = id(
        "sdc",
        "LIO-ORG",
        "FILEIO",
        "360014055d1b3c7a0e2f4b8a9c612f3e4",
        "scsi:unspec",
    );
    let other = id(
        "sdd",
        "ACME",
        "Disk",
        "3600a0980000000000000000000000001",
        "scsi:fcp",
    );
    for cfg in [c, &back] {
        assert!(!cfg.blacklist_verdict(&allowed).is_blacklisted());
        assert!(cfg.blacklist_verdict(&other).is_blacklisted());
        assert!(
            cfg.blacklist_verdict(&id("loop0", "", "", "x", "undef"))
                .is_blacklisted()
        );
        let res = cfg.resolve(&allowed);
        assert_eq!(res.settings.alias.unwrap().value, "lab_fileio");
        assert_eq!(
            res.settings.path_grouping_policy.value,
            GroupingPolicy::Multibus
        );
        assert_eq!(
            res.settings.path_grouping_policy.from.layer,
            Layer::Multipath
        );
    }
    // Provenance of the imported config points at multipath.conf.
    let res = c.resolve(&allowed);
    assert_eq!(
        res.settings.path_grouping_policy.from.description,
        "multipaths entry 360014055d1b3c7a0e2f4b8a9c612f3e4 in /etc/multipath.conf line 29"
    );
}

#[test]
fn vendor_style_file() {
    let r = import(VENDOR, "/etc/multipath.conf");
    let c = &r.config;
    let d = &c.defaults;
    assert_eq!(d.settings.path_selector.as_deref(), Some("round-robin 0"));
    assert_eq!(d.settings.failback, Some(Failback::Immediate));
    assert_eq!(d.settings.no_path_retry, Some(NoPathRetry::Fail));
    assert_eq!(d.detect_prio, Some(false));
    assert_eq!(d.max_polling_interval, Some(40));
    assert_eq!(
        c.blacklist.device.len(),
        2,
        "PERC rule plus DGC product_blacklist"
    );
    assert_eq!(c.blacklist.protocol.len(), 1);

    assert_eq!(
        c.devices.len(),
        2,
        "HP/* is an invalid regex and is left out"
    );
    let netapp = &c.devices[0];
    assert_eq!(
        netapp.settings.path_grouping_policy,
        Some(GroupingPolicy::GroupByPrio)
    );
    assert_eq!(
        netapp.settings.features.as_deref(),
        Some("2 pg_init_retries 50")
    );
    assert_eq!(netapp.settings.no_path_retry, Some(NoPathRetry::Queue));
    assert_eq!(netapp.settings.prio, None, "ontap prio is not implemented");
    assert_eq!(netapp.settings.checker, Some(Checker::Tur));
    let dgc = &c.devices[1];
    assert_eq!(dgc.settings.prio, Some(Prio::Alua));
    assert_eq!(dgc.settings.checker, None);
    assert_eq!(dgc.settings.failback, Some(Failback::Seconds(15)));
    let o = c.overrides.as_ref().unwrap();
    assert_eq!(o.settings.checker, Some(Checker::Directio));
    assert_eq!(o.settings.no_path_retry, Some(NoPathRetry::Retries(12)));

    // FC remote-port timeouts are carried over (they were "not supported" before).
    assert_eq!(d.settings.fast_io_fail_tmo, Some(FastIoFail::Seconds(5)));
    assert_eq!(netapp.settings.dev_loss_tmo, Some(DevLoss::Infinity));
    let skipped = skipped_keys(&r);
    for (key, line) in [
        ("devices/device/prio", 27),
        ("devices/device/path_checker", 36),
        ("devices/device/product", 42),
        ("devices/device", 40),
        ("overrides/protocol", 48),
    ] {
        assert!(
            skipped.contains(&(key.to_string(), line)),
            "{key} line {line} missing from {skipped:?}"
        );
    }
    assert_eq!(skipped.len(), 5, "{skipped:?}");
    let notes: Vec<_> = r.notes.iter().map(|n| (n.key.as_str(), n.line)).collect();
    assert!(notes.contains(&("devices/device/prio", 37)), "{notes:?}");
    assert!(
        notes.contains(&("devices/device/product_blacklist", 35)),
        "{notes:?}"
    );
    assert!(notes.contains(&("overrides/path_checker", 46)), "{notes:?}");

    let back = Config::parse_str(&r.toml, Path::new("/etc/multipathd-rs/config.toml")).unwrap();
    for cfg in [c, &back] {
        // Blacklists: SAS blacklisted, FC excepted, DGC LUNZ blacklisted via product_blacklist.
        assert!(
            cfg.blacklist_verdict(&id("sda", "X", "Y", "1", "scsi:sas"))
                .is_blacklisted()
        );
        assert!(
            !cfg.blacklist_verdict(&id("sdb", "NETAPP", "LUN C-Mode", "2", "scsi:fcp"))
                .is_blacklisted()
        );
        assert!(
            cfg.blacklist_verdict(&id("sdb", "DELL", "PERC H730", "2", "scsi:fcp"))
                .is_blacklisted()
        );
        let lunz = cfg.blacklist_verdict(&id("sdz", "DGC", "LUNZ", "3", "scsi:fcp"));
        assert!(lunz.is_blacklisted());

        // NetApp: the user's entry beats the built-in table; prio falls through to it.
        let res = cfg.resolve(&id("sdb", "NETAPP  ", "LUN C-Mode      ", "2", "scsi:fcp"));
        let s = &res.settings;
        assert_eq!(
            s.no_path_retry.value,
            NoPathRetry::Retries(12),
            "overrides win over devices"
        );
        assert_eq!(s.no_path_retry.from.layer, Layer::Overrides);
        assert_eq!(s.features.value, "2 pg_init_retries 50");
        assert_eq!(s.features.from.layer, Layer::Device);
        assert_eq!(s.prio.value, Prio::Alua);
        assert_eq!(s.prio.from.layer, Layer::BuiltinDevice);
        assert_eq!(
            s.path_selector.value, "service-time 0",
            "built-in NETAPP entry beats defaults"
        );
        // An unknown array gets the defaults section.
        let res = cfg.resolve(&id("sdc", "ACME", "Disk", "4", "scsi:fcp"));
        assert_eq!(res.settings.path_selector.value, "round-robin 0");
        assert_eq!(res.settings.path_selector.from.layer, Layer::Defaults);
    }
}

#[test]
fn conf_d_drop_ins_are_read_in_order_and_later_values_win() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("multipath.conf");
    let confd = dir.path().join("conf.d");
    std::fs::create_dir(&confd).unwrap();
    std::fs::write(&main, "defaults {\n  polling_interval 5\n}\nmultipaths {\n  multipath {\n    wwid 36001\n    alias db\n  }\n}\n").unwrap();
    std::fs::write(
        confd.join("10-site.conf"),
        "defaults {\n  polling_interval 7\n}\n",
    )
    .unwrap();
    std::fs::write(
        confd.join("20-more.conf"),
        "multipaths {\n  multipath {\n    wwid 36001\n    no_path_retry queue\n  }\n}\nweird {\n}\n",
    )
    .unwrap();
    let r = import_files(&main, Some(&confd)).unwrap();
    assert_eq!(r.config.defaults.polling_interval, Some(7));
    assert_eq!(r.config.multipaths.len(), 1);
    assert_eq!(r.config.multipaths[0].alias.as_deref(), Some("db"));
    assert_eq!(
        r.config.multipaths[0].settings.no_path_retry,
        Some(NoPathRetry::Queue)
    );
    let merges: Vec<_> = r.notes.iter().filter(|n| n.key != "defaults").collect();
    assert_eq!(merges.len(), 1, "the merge is noted: {:?}", r.notes);
    assert_eq!(r.skipped.len(), 1);
    assert_eq!(r.skipped[0].key, "weird");
    assert!(r.skipped[0].file.ends_with("20-more.conf"));
    assert_eq!(r.skipped[0].line, 7);
}

#[test]
fn unreadable_or_malformed_input_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.conf");
    let err = import_files(&missing, None).unwrap_err().to_string();
    assert!(err.contains("nope.conf"), "{err}");
    // A file that cannot be read at all (here: a directory) is an error naming it; a keyword
    // without a value is not (multipath-tools ignores that line, and so do we, noted).
    let bad = dir.path().join("bad.conf");
    std::fs::create_dir(&bad).unwrap();
    let err = import_files(&bad, None).unwrap_err().to_string();
    assert!(err.contains("bad.conf"), "{err}");
    let lonely = dir.path().join("lonely.conf");
    std::fs::write(&lonely, "defaults {\n  polling_interval\n}\n").unwrap();
    let r = import_files(&lonely, None).unwrap();
    assert!(
        r.notes.iter().any(|n| n.key == "syntax" && n.line == 2),
        "{:?}",
        r.notes
    );
}

#[test]
fn bad_values_are_reported_not_guessed() {
    let text = "defaults {\n  path_grouping_policy round_robin\n  no_path_retry forever\n  features \"2 queue_if_no_path\"\n  path_selector \"fastest 0\"\n  polling_interval 0\n  find_multipaths maybe\n  user_friendly_names perhaps\n}\nblacklist {\n  devnode \"!^sd[a-z]\"\n  wwid \"(\"\n}\nmultipaths {\n  multipath {\n    alias orphan\n  }\n  multipath {\n    wwid a\n    alias same\n  }\n  multipath {\n    wwid b\n    alias same\n  }\n}\n";
    let r = import(text, "/etc/multipath.conf");
    let lines: Vec<usize> = r.skipped.iter().map(|s| s.line).collect();
    assert_eq!(
        lines,
        vec![2, 3, 4, 5, 6, 7, 8, 11, 12, 15, 24],
        "{:#?}",
        r.skipped
    );
    // None of the bad values landed: the defaults are multipath-tools' own.
    let d = &r.config.defaults;
    assert_eq!(
        d.settings.path_grouping_policy,
        Some(GroupingPolicy::Failover)
    );
    assert_eq!(d.settings.no_path_retry, Some(NoPathRetry::Fail));
    assert_eq!(d.settings.features.as_deref(), Some("0"));
    assert_eq!(d.settings.path_selector.as_deref(), Some("service-time 0"));
    assert_eq!(d.polling_interval, Some(5));
    assert_eq!(d.find_multipaths, Some(FindMultipaths::Strict));
    assert_eq!(d.alias_policy, Some(AliasPolicy::Wwid));
    assert!(r.config.blacklist.is_empty());
    assert_eq!(r.config.multipaths.len(), 2);
    assert_eq!(
        r.config.multipaths[1].alias, None,
        "duplicate alias left out"
    );
    Config::parse_str(&r.toml, Path::new("x.toml")).unwrap();
}

fn corpus_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/multipath-conf")
}

fn corpus(name: &str) -> ImportReport {
    import_files(&corpus_dir().join(name), None)
        .unwrap_or_else(|e| panic!("{name} does not import: {e}"))
}

/// A file that sets neither `user_friendly_names` nor `find_multipaths` keeps
/// multipath-tools' behaviour (WWID names, strict), and the import says so.
#[test]
fn import_starts_from_multipath_tools_defaults_and_says_so() {
    let r = import_multipath_conf(&[mpconf::parse_str(
        "blacklist {\n  devnode \"^sda$\"\n}\n",
        Path::new("m.conf"),
    )
    .unwrap()])
    .unwrap();
    let g = r.config.global();
    assert_eq!(g.alias_policy.value, AliasPolicy::Wwid);
    assert_eq!(g.find_multipaths.value, FindMultipaths::Strict);
    assert_eq!(g.polling_interval.value, 5);
    assert_eq!(g.max_polling_interval.value, 20);
    assert_eq!(g.alias_prefix.value, "mpath");
    assert!(g.detect_prio.value);
    // Every per-map value of multipath.conf(5) / `multipath -t` (0.9.4).
    let d = &r.config.defaults.settings;
    assert_eq!(d.path_grouping_policy, Some(GroupingPolicy::Failover));
    assert_eq!(d.path_selector.as_deref(), Some("service-time 0"));
    assert_eq!(d.features.as_deref(), Some("0"));
    assert_eq!(d.no_path_retry, Some(NoPathRetry::Fail));
    assert_eq!(d.failback, Some(Failback::Manual));
    assert_eq!(d.checker, Some(Checker::Tur));
    assert_eq!(d.prio, Some(Prio::Const));
    assert_eq!(d.fast_io_fail_tmo, Some(FastIoFail::Seconds(5)));
    assert_eq!(d.dev_loss_tmo, None);
    assert_eq!(d.hardware_handler, None);
    let note = r.notes.iter().find(|n| n.key == "defaults").unwrap();
    assert!(note.why.contains("multipath-tools' defaults"), "{note}");
    assert!(note.why.contains("user_friendly_names no"), "{note}");
    assert!(note.why.contains("find_multipaths strict"), "{note}");
    assert!(r.toml.contains("multipath-tools 0.9.4's built-in defaults"));
    // The written TOML keeps that behaviour under our own (different) built-ins.
    let back = Config::parse_str(&r.toml, Path::new("c.toml")).unwrap();
    assert_eq!(back.global().alias_policy.value, AliasPolicy::Wwid);
    assert_eq!(back.global().find_multipaths.value, FindMultipaths::Strict);
    assert_ne!(
        Config::builtin().global().alias_policy.value,
        AliasPolicy::Wwid,
        "control: our own built-in default differs, so the baseline matters"
    );

    // What the file sets wins, and is not listed as a baseline value.
    let r = import_multipath_conf(&[mpconf::parse_str(
        "defaults {\n  user_friendly_names yes\n  polling_interval 10\n}\n",
        Path::new("m.conf"),
    )
    .unwrap()])
    .unwrap();
    assert_eq!(
        r.config.global().alias_policy.value,
        AliasPolicy::UserFriendlyNames
    );
    assert_eq!(
        r.config.global().max_polling_interval.value,
        40,
        "4 * polling_interval"
    );
    let note = r.notes.iter().find(|n| n.key == "defaults").unwrap();
    assert!(!note.why.contains("user_friendly_names"), "{note}");
    assert!(note.why.contains("find_multipaths strict"), "{note}");
}

/// What admins' files contain and multipath-tools accepts: CRLF, no final newline, a last
/// section left open, a comma after a quoted value, two defaults sections, comments after
/// values, extra words after a value.
#[test]
fn import_accepts_what_multipath_tools_accepts() {
    let text = "defaults {\r\n  user_friendly_names yes # names\r\n  polling_interval 10 ! bang\r\n}\r\ndevices {\r\n  device {\r\n    vendor \"DELL\",\r\n    product \"MD36xx(i|f)\",\r\n    failback 30,\r\n  }\r\n}\r\ndefaults {\r\n  find_multipaths no\r\n  no_path_retry 12 extra words\r\n}\r\nmultipaths {\r\n  multipath {\r\n    wwid 36001\r\n    alias db";
    assert!(
        mpconf::parse_str(text, Path::new("x")).is_err(),
        "control: the strict parser rejects this file"
    );
    let r = multipathd_rs::import::import_str(text, Path::new("/etc/multipath.conf")).unwrap();
    let d = &r.config.defaults;
    assert_eq!(d.alias_policy, Some(AliasPolicy::UserFriendlyNames));
    assert_eq!(d.polling_interval, Some(10));
    assert_eq!(
        d.find_multipaths,
        Some(FindMultipaths::No),
        "second defaults section"
    );
    assert_eq!(d.settings.no_path_retry, Some(NoPathRetry::Retries(12)));
    let dev = &r.config.devices[0];
    assert_eq!(dev.vendor.as_str(), "DELL");
    assert_eq!(dev.product.as_str(), "MD36xx(i|f)");
    assert_eq!(r.config.multipaths[0].alias.as_deref(), Some("db"));
    assert_eq!(r.config.multipaths[0].lines.get("alias"), Some(&19));
    // `failback 30,` is a word with a comma: multipath-tools reads "30," too; reported.
    assert!(
        r.skipped
            .iter()
            .any(|s| s.key == "devices/device/failback" && s.line == 9),
        "{:?}",
        r.skipped
    );
    let syntax: Vec<usize> = r
        .notes
        .iter()
        .filter(|n| n.key == "syntax")
        .map(|n| n.line)
        .collect();
    assert!(
        syntax.contains(&7) && syntax.contains(&8),
        "comma notes {syntax:?}"
    );
    assert!(syntax.contains(&14), "extra words {syntax:?}");
    assert!(syntax.contains(&19), "unclosed sections {syntax:?}");
    Config::parse_str(&r.toml, Path::new("c.toml")).unwrap();
}

/// Every real file of the corpus imports; the ones with known content carry their values.
#[test]
fn every_file_of_the_corpus_imports() {
    let mut names: Vec<String> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".conf"))
        .collect();
    names.sort();
    assert!(names.len() >= 10, "{names:?}");
    let sources = std::fs::read_to_string(corpus_dir().join("SOURCES.md")).unwrap();
    for n in &names {
        assert!(
            sources.contains(&format!("`{n}`")),
            "{n} has no source in SOURCES.md"
        );
        let r = corpus(n);
        Config::parse_str(&r.toml, Path::new("c.toml"))
            .unwrap_or_else(|e| panic!("{n}: the TOML does not read back: {e}"));
    }

    // XenServer 8: no final newline; 15 device entries, globals as shipped.
    let r = corpus("xenserver-sm-2024.conf");
    let g = r.config.global();
    assert_eq!(g.alias_policy.value, AliasPolicy::Wwid);
    assert_eq!(g.find_multipaths.value, FindMultipaths::Yes);
    assert_eq!(
        r.config.defaults.settings.no_path_retry,
        Some(NoPathRetry::Retries(10))
    );
    assert_eq!(
        r.config.defaults.settings.failback,
        Some(Failback::Seconds(10))
    );
    assert_eq!(r.config.blacklist.devnode.len(), 4);
    let pure = r
        .config
        .devices
        .iter()
        .find(|d| d.vendor.as_str() == "PURE")
        .unwrap();
    assert_eq!(pure.settings.no_path_retry, Some(NoPathRetry::Fail));
    assert_eq!(
        pure.settings.path_selector.as_deref(),
        Some("queue-length 0")
    );

    // XenServer 6: commas after values. Quoted values lose the comma; the DELL entry exists.
    let r = corpus("xenserver-sm-2014-commas.conf");
    let dell = r
        .config
        .devices
        .iter()
        .find(|d| d.vendor.as_str() == "DELL")
        .unwrap();
    assert_eq!(dell.product.as_str(), "MD36xx(i|f)");
    assert_eq!(
        dell.settings.features.as_deref(),
        Some("2 pg_init_retries 50")
    );
    assert_eq!(
        dell.settings.path_selector.as_deref(),
        Some("round-robin 0")
    );
    assert!(r.notes.iter().any(|n| n.key == "syntax" && n.line == 15));
    assert!(
        r.skipped
            .iter()
            .any(|s| s.key == "blacklist/wwid" && s.line == 8),
        "wwid \"*\" is not a regex: reported, not guessed"
    );

    // The RHEL sample whose multipaths section is never closed: all four aliases.
    let r = corpus("rhel-oracle-reference-unclosed.conf");
    let aliases: Vec<_> = r
        .config
        .multipaths
        .iter()
        .filter_map(|m| m.alias.clone())
        .collect();
    assert_eq!(aliases, ["redo", "fra", "db2", "db1"]);
    assert_eq!(
        r.config.global().alias_policy.value,
        AliasPolicy::UserFriendlyNames
    );

    // CRLF gives the same configuration as LF.
    let lf = corpus("proxmox-compellent.conf");
    let crlf = corpus("proxmox-compellent-crlf.conf");
    assert_eq!(
        multipathd_rs::config::render_toml(&lf.config),
        multipathd_rs::config::render_toml(&crlf.config)
    );
    assert_eq!(lf.config.defaults.lines, crlf.config.defaults.lines);
    assert_eq!(lf.config.defaults.polling_interval, Some(10));
    assert_eq!(
        lf.config.devices[0].settings.no_path_retry,
        Some(NoPathRetry::Retries(24))
    );

    // oVirt VDSM: WWID names and no_path_retry fail everywhere.
    let r = corpus("ovirt-vdsm-revision-1.2.conf");
    assert_eq!(r.config.global().alias_policy.value, AliasPolicy::Wwid);
    assert_eq!(r.config.devices.len(), 3);
    assert_eq!(
        r.config.blacklist.device.len(),
        1,
        "DGC product_blacklist LUNZ"
    );

    // Tegile: the misspelt `mutipaths` section is reported, the devices are kept.
    let r = corpus("oracle-tegile-intelliflash.conf");
    assert!(
        r.skipped.iter().any(|s| s.key == "mutipaths"),
        "{:?}",
        r.skipped
    );
    assert_eq!(r.config.devices[0].settings.prio, Some(Prio::Alua));
}
