#![allow(clippy::unwrap_used)]
//! `config import`: realistic multipath.conf files become our TOML, and everything that cannot
//! be carried over is listed with file, line and reason.

use std::path::Path;

use aliases::mpconf;
use multipathd_rs::config::{
    AliasPolicy, Checker, Config, Failback, FindMultipaths, GroupingPolicy, Layer, NoPathRetry,
    PathIdentity, Prio,
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

    let skipped = skipped_keys(&r);
    for (key, line) in [
        ("defaults/fast_io_fail_tmo", 8),
        ("devices/device/prio", 27),
        ("devices/device/dev_loss_tmo", 30),
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
    assert_eq!(skipped.len(), 7, "{skipped:?}");
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
    assert_eq!(r.notes.len(), 1, "the merge is noted: {:?}", r.notes);
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
    let bad = dir.path().join("bad.conf");
    std::fs::write(&bad, "defaults {\n  polling_interval\n}\n").unwrap();
    let err = import_files(&bad, None).unwrap_err().to_string();
    assert!(err.contains("bad.conf"), "{err}");
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
    assert!(r.config.defaults.settings.is_empty());
    assert!(r.config.blacklist.is_empty());
    assert_eq!(r.config.multipaths.len(), 2);
    assert_eq!(
        r.config.multipaths[1].alias, None,
        "duplicate alias left out"
    );
    Config::parse_str(&r.toml, Path::new("x.toml")).unwrap();
}
