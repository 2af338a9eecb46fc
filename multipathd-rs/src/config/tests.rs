use std::path::Path;

use super::*;
use crate::error::Error;

const FILE: &str = "/etc/multipathd-rs/config.toml";

fn parse(text: &str) -> Config {
    Config::parse_str(text, Path::new(FILE)).unwrap()
}

fn parse_err(text: &str) -> (usize, String, String) {
    match Config::parse_str(text, Path::new(FILE)) {
        Err(Error::ConfigInvalid {
            path,
            line,
            key,
            message,
        }) => {
            assert_eq!(path, Path::new(FILE));
            (line, key, message)
        }
        other => panic!("expected ConfigInvalid, got {other:?}"),
    }
}

fn id(vendor: &str, product: &str, wwid: &str) -> PathIdentity {
    PathIdentity {
        devnode: "sdq".into(),
        wwid: Some(wwid.into()),
        vendor: vendor.into(),
        product: product.into(),
        protocol: Some("scsi:fcp".into()),
    }
}

const FULL: &str = r#"# site configuration
[defaults]
path_grouping_policy = "multibus"
no_path_retry = "queue"
failback = 15
polling_interval = 10
max_polling_interval = 40
alias_policy = "template"
alias_template = "san-{wwid_tail}"
find_multipaths = "strict"

[blacklist]
devnode = ["^sd[a-c]$"]
wwid = ["^3600508b1"]
protocol = ["scsi:unspec"]

[[blacklist.device]]
vendor = "^ACME$"

[blacklist_exceptions]
wwid = ["^3600508b1001"]

[[devices]]
vendor = "HITACHI"
product = "OPEN-"
no_path_retry = 30

[[devices]]
vendor = "HITACHI"
product = "OPEN-V"
path_selector = "round-robin 0"
no_path_retry = 12

[overrides]
checker = "directio"

[[multipaths]]
wwid = "360060e8012a8b5005040a8b500000010"
alias = "vmstore01"
failback = "manual"
"#;

#[test]
fn parses_every_section_with_lines() {
    let c = parse(FULL);
    assert_eq!(
        c.defaults.settings.path_grouping_policy,
        Some(GroupingPolicy::Multibus)
    );
    assert_eq!(c.defaults.settings.no_path_retry, Some(NoPathRetry::Queue));
    assert_eq!(c.defaults.settings.failback, Some(Failback::Seconds(15)));
    assert_eq!(c.defaults.lines.get("no_path_retry"), Some(&4));
    assert_eq!(c.defaults.alias_policy, Some(AliasPolicy::Template));
    assert_eq!(c.blacklist.devnode.len(), 1);
    assert_eq!(c.blacklist.device.len(), 1);
    assert_eq!(c.blacklist_exceptions.wwid.len(), 1);
    assert_eq!(c.devices.len(), 2);
    assert_eq!(c.devices[1].lines.get("no_path_retry"), Some(&32));
    assert_eq!(c.multipaths[0].alias.as_deref(), Some("vmstore01"));
    assert_eq!(
        c.overrides.as_ref().unwrap().settings.checker,
        Some(Checker::Directio)
    );
}

#[test]
fn precedence_multipath_overrides_device_defaults_builtin() {
    let c = parse(FULL);
    let r = c.resolve(&id(
        "HITACHI ",
        "OPEN-V          ",
        "360060e8012a8b5005040a8b500000010",
    ));
    let s = &r.settings;
    // multipaths entry decides failback.
    assert_eq!(s.failback.value, Failback::Manual);
    assert_eq!(s.failback.from.layer, Layer::Multipath);
    assert!(
        s.failback.from.description.contains("line 40"),
        "{}",
        s.failback.from
    );
    // overrides decide the checker over the built-in hwtable's tur.
    assert_eq!(s.checker.value, Checker::Directio);
    assert_eq!(s.checker.from.layer, Layer::Overrides);
    // the later user device entry beats the earlier one...
    assert_eq!(s.no_path_retry.value, NoPathRetry::Retries(12));
    assert_eq!(
        s.no_path_retry.from.description,
        format!("device entry HITACHI/OPEN-V in {FILE} line 32")
    );
    assert_eq!(s.path_selector.value, "round-robin 0");
    // ...and user entries beat the built-in table, which beats [defaults].
    assert_eq!(s.path_grouping_policy.value, GroupingPolicy::Multibus);
    assert_eq!(s.path_grouping_policy.from.layer, Layer::BuiltinDevice);
    assert_eq!(
        s.path_grouping_policy.from.description,
        "device entry ^HITACHI$/^OPEN- (built-in hwtable)"
    );
    assert_eq!(s.alias.as_ref().unwrap().value, "vmstore01");
    assert_eq!(r.devices.len(), 3);
    assert!(!r.devices[0].builtin && r.devices[0].entry == "HITACHI/OPEN-V");
    assert!(r.devices[2].builtin);

    // A device no entry matches: [defaults] of the file, then built-in defaults.
    let r = c.resolve(&id("ACME", "Disk", "3600"));
    assert_eq!(
        r.settings.path_grouping_policy.value,
        GroupingPolicy::Multibus
    );
    assert_eq!(
        r.settings.path_grouping_policy.from.description,
        format!("defaults in {FILE} line 3")
    );
    assert_eq!(r.settings.prio.value, Prio::Const);
    assert_eq!(r.settings.prio.from.layer, Layer::BuiltinDefaults);
    assert!(r.settings.alias.is_none());
    assert!(r.multipath.is_none());
}

#[test]
fn builtin_only_config_uses_hwtable_for_the_lab_devices() {
    let c = Config::builtin();
    let r = c.resolve(&id("Linux", "scsi_debug", "1Linux_scsi_debug_2000"));
    assert_eq!(
        r.settings.path_grouping_policy.value,
        GroupingPolicy::GroupByPrio
    );
    assert_eq!(r.settings.hardware_handler.value, "1 alua");
    assert!(
        r.settings.table_features().is_empty(),
        "reference table has features 0"
    );
    let r = c.resolve(&id("LIO-ORG", "FILEIO", "36001405"));
    assert_eq!(
        r.settings.table_features(),
        vec!["queue_if_no_path".to_string()]
    );
    let g = c.global();
    assert_eq!(g.polling_interval.value, 5);
    assert_eq!(g.find_multipaths.from.layer, Layer::BuiltinDefaults);
}

#[test]
fn table_features_follow_no_path_retry() {
    let c = parse("[defaults]\nfeatures = \"2 queue_if_no_path retain_attached_hw_handler\"\n");
    let r = c.resolve(&id("ACME", "Disk", "1"));
    // no_path_retry only from the built-ins: the configured features decide.
    assert_eq!(
        r.settings.table_features(),
        vec!["queue_if_no_path", "retain_attached_hw_handler"]
    );
    let c = parse("[defaults]\nfeatures = \"1 queue_if_no_path\"\nno_path_retry = \"fail\"\n");
    assert!(
        c.resolve(&id("ACME", "Disk", "1"))
            .settings
            .table_features()
            .is_empty()
    );
}

#[test]
fn global_settings_carry_provenance() {
    let c = parse(FULL);
    let g = c.global();
    assert_eq!(g.polling_interval.value, 10);
    assert_eq!(
        g.polling_interval.from.description,
        format!("defaults in {FILE} line 6")
    );
    assert_eq!(g.find_multipaths.value, FindMultipaths::Strict);
    assert_eq!(g.alias_template.as_ref().unwrap().value, "san-{wwid_tail}");
    assert_eq!(g.alias_prefix.value, "mpath");
    assert_eq!(
        g.alias_store_policy(),
        aliases::Policy::Template {
            template: "san-{wwid_tail}".into()
        }
    );
    let g = parse("[defaults]\nalias_prefix = \"lun\"\n").global();
    assert_eq!(
        g.alias_store_policy(),
        aliases::Policy::UserFriendlyNames {
            prefix: "lun".into()
        }
    );
    assert_eq!(
        g.alias_prefix.from.description,
        format!("defaults in {FILE} line 2")
    );
    let g = parse("[defaults]\nalias_policy = \"wwid\"\n").global();
    assert_eq!(g.alias_store_policy(), aliases::Policy::Wwid);
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let (line, key, message) = parse_err("[defaults]\npolling_interval = 5\nrr_min_io = 100\n");
    assert_eq!(line, 3);
    assert_eq!(key, "rr_min_io");
    assert!(message.contains("unknown field"), "{message}");
    let err = Config::parse_str("[defaults]\nrr_min_io = 1\n", Path::new(FILE)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("{FILE} line 2: key `rr_min_io`")),
        "{err}"
    );
}

#[test]
fn bad_values_are_rejected_with_their_line() {
    let (line, key, m) = parse_err("\n[defaults]\npath_grouping_policy = \"round_robin\"\n");
    assert_eq!((line, key.as_str()), (3, "path_grouping_policy"));
    assert!(m.contains("unknown variant"), "{m}");
    let (line, key, _) = parse_err("[defaults]\nno_path_retry = \"forever\"\n");
    assert_eq!((line, key.as_str()), (2, "no_path_retry"));
    let (line, key, m) = parse_err("[[devices]]\nvendor = \"X\"\nproduct = \"(\"\n");
    assert_eq!((line, key.as_str()), (3, "product"));
    assert!(m.contains("regular expression"), "{m}");
    let (line, key, _) = parse_err("[blacklist]\ndevnode = [\"ok\", \"[\"]\n");
    assert_eq!((line, key.as_str()), (2, "blacklist.devnode"));
    let (_, key, m) = parse_err("[defaults]\nhardware_handler = \"1\"\n");
    assert_eq!(key, "hardware_handler");
    assert!(m.contains("announces 1"), "{m}");
    let (_, key, _) = parse_err("[defaults]\npath_selector = \"fastest 0\"\n");
    assert_eq!(key, "path_selector");
    let (line, key, _) = parse_err("[defaults]\npolling_interval = 10\nmax_polling_interval = 5\n");
    assert_eq!((line, key.as_str()), (3, "max_polling_interval"));
    let (_, key, _) = parse_err("[defaults]\nalias_policy = \"template\"\n");
    assert_eq!(key, "alias_policy");
    let (_, key, m) =
        parse_err("[defaults]\nalias_policy = \"template\"\nalias_template = \"static\"\n");
    assert_eq!(key, "alias_template");
    assert!(m.contains("same name"), "{m}");
    let (_, key, _) =
        parse_err("[defaults]\nalias_policy = \"template\"\nalias_template = \"x-{bogus}\"\n");
    assert_eq!(key, "alias_template");
    let (line, _, m) = parse_err("[defaults]\npolling_interval = \n");
    assert_eq!(line, 2);
    assert!(!m.is_empty());
}

#[test]
fn multipaths_need_unique_wwids_and_aliases() {
    let (line, key, m) =
        parse_err("[[multipaths]]\nwwid = \"a\"\nalias = \"x\"\n\n[[multipaths]]\nwwid = \"a\"\n");
    assert_eq!((line, key.as_str()), (6, "wwid"));
    assert!(m.contains("already has a multipaths entry"), "{m}");
    let (line, key, _) = parse_err(
        "[[multipaths]]\nwwid = \"a\"\nalias = \"x\"\n\n[[multipaths]]\nwwid = \"b\"\nalias = \"x\"\n",
    );
    assert_eq!((line, key.as_str()), (7, "alias"));
    let (_, key, _) = parse_err("[[multipaths]]\nalias = \"x\"\n");
    assert_eq!(key, "multipaths");
    let (_, key, _) = parse_err("[[devices]]\nvendor = \"x\"\n");
    assert_eq!(key, "devices");
}

#[test]
fn find_multipaths_semantics() {
    use FindMultipaths::*;
    assert!(No.should_multipath(1, false));
    assert!(Greedy.should_multipath(1, false));
    assert!(!Yes.should_multipath(1, false));
    assert!(Yes.should_multipath(2, false));
    assert!(Yes.should_multipath(1, true));
    assert!(Smart.should_multipath(2, false));
    assert!(!Strict.should_multipath(4, false));
    assert!(Strict.should_multipath(1, true));
    assert_eq!(FindMultipaths::parse("on"), Some(Yes));
}

#[test]
fn toml_rendering_round_trips() {
    let c = parse(FULL);
    let text = render_toml(&c);
    let back = Config::parse_str(&text, Path::new("/tmp/x.toml")).unwrap();
    assert_eq!(back.defaults.settings, c.defaults.settings);
    assert_eq!(back.defaults.polling_interval, c.defaults.polling_interval);
    assert_eq!(back.defaults.alias_template, c.defaults.alias_template);
    assert_eq!(back.defaults.find_multipaths, c.defaults.find_multipaths);
    assert_eq!(back.devices.len(), 2);
    for (a, b) in back.devices.iter().zip(&c.devices) {
        assert_eq!((a.label(), &a.settings), (b.label(), &b.settings));
    }
    assert_eq!(
        back.blacklist.devnode[0].pattern,
        c.blacklist.devnode[0].pattern
    );
    assert_eq!(
        back.blacklist.device[0].vendor,
        c.blacklist.device[0].vendor
    );
    assert_eq!(
        back.overrides.unwrap().settings,
        c.overrides.unwrap().settings
    );
    assert_eq!(back.multipaths[0].alias, c.multipaths[0].alias);
    assert_eq!(back.multipaths[0].settings, c.multipaths[0].settings);
}

#[test]
fn show_and_explain() {
    let c = parse(FULL);
    let view = c.view();
    let text = view.to_string();
    assert!(text.contains("polling_interval       10"), "{text}");
    assert!(
        text.contains(&format!("from defaults in {FILE} line 6")),
        "{text}"
    );
    assert!(
        text.contains("^(ram|zram|raw|loop|fd|md|dm-|sr|scd|st|dcssblk|nvme)[0-9]"),
        "{text}"
    );
    assert!(
        text.contains("^HITACHI$/^OPEN- (built-in hwtable)"),
        "{text}"
    );
    let json = view.to_json();
    assert_eq!(json["global"]["polling_interval"]["value"], 10);
    assert!(json["devices"].as_array().unwrap().len() >= 16);

    let e = c.explain(&id(
        "HITACHI",
        "OPEN-V",
        "360060e8012a8b5005040a8b500000010",
    ));
    let t = e.to_string();
    assert!(t.contains("blacklist: not blacklisted"), "{t}");
    assert!(
        t.contains("device entry ^HITACHI$/^OPEN- matches (built-in hwtable)"),
        "{t}"
    );
    assert!(t.contains("alias vmstore01"), "{t}");
    let j = e.to_json();
    assert_eq!(j["blacklist"]["verdict"], "allowed");
    assert_eq!(j["settings"][0]["key"], "path_grouping_policy");
    assert_eq!(j["settings"][0]["value"], "multibus");
    assert_eq!(j["settings"][0]["layer"], "builtin_device");
    assert_eq!(j["settings"][4]["key"], "failback");
    assert_eq!(j["settings"][4]["layer"], "multipath");
    assert_eq!(j["alias"]["value"], "vmstore01");

    let mut p = id("HITACHI", "OPEN-V", "3600508b1009");
    let e = c.explain(&p);
    assert!(e.blacklist.is_blacklisted());
    assert!(
        e.to_string().contains(&format!(
            "wwid \"^3600508b1\" matches \"3600508b1009\" ({FILE} line 14)"
        )),
        "{e}"
    );
    p.wwid = Some("3600508b1001x".into());
    let e = c.explain(&p);
    assert!(!e.blacklist.is_blacklisted());
    assert!(e.to_string().contains("lifts blacklist"), "{e}");
    let j = e.to_json();
    assert_eq!(
        j["blacklist"]["exceptions"][0]["exception"]["pattern"],
        "^3600508b1001"
    );
    assert_eq!(j["blacklist"]["exceptions"][0]["blacklist"]["kind"], "wwid");
}

#[test]
fn missing_file_falls_back_to_builtins_but_unreadable_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let c = Config::load_or_builtin(&dir.path().join("absent.toml")).unwrap();
    assert!(c.source.is_none());
    assert!(matches!(
        Config::load(&dir.path().join("absent.toml")),
        Err(Error::ConfigRead { .. })
    ));
    let p = dir.path().join("c.toml");
    std::fs::write(&p, "[defaults]\ncheker = \"tur\"\n").unwrap();
    let err = Config::load(&p).unwrap_err().to_string();
    assert!(err.contains("c.toml line 2: key `cheker`"), "{err}");
}

mod roundtrip {
    use super::*;
    use proptest::prelude::*;

    fn opt<T: std::fmt::Debug + Clone + 'static>(
        s: impl Strategy<Value = T> + 'static,
    ) -> impl Strategy<Value = Option<T>> {
        prop::option::of(s)
    }

    fn settings() -> impl Strategy<Value = Settings> {
        (
            opt(prop::sample::select(vec![
                GroupingPolicy::Failover,
                GroupingPolicy::Multibus,
                GroupingPolicy::GroupByPrio,
                GroupingPolicy::GroupBySerial,
                GroupingPolicy::GroupByNodeName,
                GroupingPolicy::GroupByTpg,
            ])),
            opt(prop::sample::select(vec![
                "service-time 0",
                "round-robin 0",
                "queue-length 0",
            ])),
            opt(prop::sample::select(vec![
                "0",
                "1 queue_if_no_path",
                "2 pg_init_retries 50",
            ])),
            opt(prop_oneof![
                Just(NoPathRetry::Fail),
                Just(NoPathRetry::Queue),
                (1u32..1000).prop_map(NoPathRetry::Retries)
            ]),
            opt(prop_oneof![
                Just(Failback::Immediate),
                Just(Failback::Manual),
                Just(Failback::Followover),
                (0u32..1000).prop_map(Failback::Seconds)
            ]),
            opt(prop::sample::select(vec![
                Checker::Tur,
                Checker::Directio,
                Checker::Sysfs,
                Checker::None,
            ])),
            opt(prop::sample::select(vec![Prio::Alua, Prio::Const])),
            opt(prop::sample::select(vec!["0", "1 alua", "1 emc"])),
        )
            .prop_map(|(g, sel, feat, npr, fb, chk, prio, hw)| Settings {
                path_grouping_policy: g,
                path_selector: sel.map(str::to_string),
                features: feat.map(str::to_string),
                no_path_retry: npr,
                failback: fb,
                checker: chk,
                prio,
                hardware_handler: hw.map(str::to_string),
                ..Settings::default()
            })
    }

    proptest! {
        #[test]
        fn rendered_toml_reads_back_to_the_same_settings(
            d in settings(),
            o in settings(),
            m in settings(),
            vendor in "[A-Za-z0-9 .*\"\\\\-]{1,12}",
            alias in "[a-z][a-z0-9_-]{0,10}",
        ) {
            let Ok(vendor_pattern) = Pattern::new(&vendor) else { return Ok(()) };
            let cfg = Config {
                defaults: Defaults { settings: d, ..Defaults::default() },
                devices: vec![DeviceEntry {
                    vendor: vendor_pattern,
                    product: Pattern::new(".").unwrap(),
                    settings: o.clone(),
                    origin: Origin::Builtin,
                    lines: KeyLines::new(),
                    note: None,
                }],
                overrides: Some(Overrides { settings: o, ..Overrides::default() }),
                multipaths: vec![MultipathEntry {
                    wwid: "36001405abc".into(),
                    alias: Some(alias),
                    settings: m,
                    origin: Origin::Builtin,
                    lines: KeyLines::new(),
                }],
                ..Config::default()
            };
            let text = render_toml(&cfg);
            let back = Config::parse_str(&text, Path::new("rt.toml")).unwrap();
            prop_assert_eq!(&back.defaults.settings, &cfg.defaults.settings);
            prop_assert_eq!(&back.devices[0].vendor, &cfg.devices[0].vendor);
            prop_assert_eq!(&back.devices[0].settings, &cfg.devices[0].settings);
            prop_assert_eq!(&back.overrides.unwrap().settings, &cfg.overrides.unwrap().settings);
            prop_assert_eq!(&back.multipaths[0].settings, &cfg.multipaths[0].settings);
            prop_assert_eq!(&back.multipaths[0].alias, &cfg.multipaths[0].alias);
        }
    }
}

#[test]
fn toml_syntax_errors_name_the_line() {
    let (line, key, _) =
        parse_err("[defaults]\npolling_interval = 5\npath_selector = \"service-time 0\n");
    assert_eq!(line, 3);
    assert_eq!(key, "path_selector");
    let (line, key, m) = parse_err("[defaults]\n[defaults]\n");
    assert_eq!(line, 2);
    assert_eq!(key, "defaults");
    assert!(!m.is_empty());
    let (line, key, _) = parse_err("[defualts]\ncheker = 1\n");
    assert_eq!((line, key.as_str()), (1, "defualts"));
}

mod scale {
    use super::*;
    use proptest::prelude::*;

    /// Loading a file with thousands of `multipaths` entries finds every line number from
    /// one pass over the text (it used to rescan from the start for every key: quadratic).
    #[test]
    fn line_numbers_come_from_one_pass_over_the_text() {
        let mut text = String::new();
        for i in 0..4000 {
            text.push_str(&format!(
                "[[multipaths]]\nwwid = \"36001405{i:024x}\"\nalias = \"lun{i}\"\nno_path_retry = 3\n\n"
            ));
        }
        let before = raw::SCANNED.with(|s| s.get());
        let cfg = parse(&text);
        let scanned = raw::SCANNED.with(|s| s.get()) - before;
        assert_eq!(cfg.multipaths.len(), 4000);
        assert_eq!(
            cfg.multipaths[3999].lines.get("alias"),
            Some(&(3999 * 5 + 3))
        );
        assert!(
            scanned <= 2 * text.len(),
            "{scanned} bytes scanned for a {}-byte file",
            text.len()
        );
    }

    proptest! {
        /// Plain-text patterns are matched without the regex crate, with its semantics.
        #[test]
        fn literal_patterns_match_like_the_regex_crate(
            start in any::<bool>(),
            end in any::<bool>(),
            lit in "[a-zA-Z0-9_:/ -]{0,6}",
            text in "[a-zA-Z0-9_:/ -]{0,10}",
        ) {
            let src = format!("{}{lit}{}", if start { "^" } else { "" }, if end { "$" } else { "" });
            let p = Pattern::new(&src).unwrap();
            let re = regex::Regex::new(&src).unwrap();
            prop_assert_eq!(p.is_match(&text), re.is_match(&text), "{} on {}", src, text);
            let embedded = format!("x{lit}y");
            prop_assert_eq!(p.is_match(&embedded), re.is_match(&embedded));
            prop_assert_eq!(p.is_match(&lit), re.is_match(&lit));
        }
    }

    #[test]
    fn regex_patterns_are_checked_at_once_and_still_match() {
        assert!(Pattern::new("(").is_err());
        assert!(Pattern::new("^sd[a-z]+$").unwrap().is_match("sdab"));
        assert!(!Pattern::new("^sd[a-z]+$").unwrap().is_match("sda1"));
        assert!(Pattern::new("a.c").unwrap().is_match("xabcx"));
        assert!(!Pattern::new("a\\.c").unwrap().is_match("abc"));
    }
}
