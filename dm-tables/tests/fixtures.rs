#![allow(clippy::unwrap_used)]
//! Parse/render round trips on the issue's lines and on real kernel output
//! (fixtures/ref-sd2x2-tcmloop2, made on Debian's 6.1 kernel with multipath-tools 0.9.4).

use dm_tables::{
    DevNo, Error, Feature, GroupState, HwHandler, MultipathStatus, MultipathTable, PathState,
    QueueMode, Selector, split_name_prefix,
};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../fixtures/ref-sd2x2-tcmloop2"
);

fn read(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap()
}

#[test]
fn issue_table_lines_round_trip() {
    for line in [
        "0 32768 multipath 0 1 alua 2 1 service-time 0 1 2 8:0 1 1 service-time 0 1 2 8:64 1 1",
        "0 32768 multipath 1 queue_if_no_path 0 1 1 round-robin 0 2 1 8:16 1 8:32 1",
    ] {
        let t: MultipathTable = line.parse().unwrap();
        assert_eq!(t.to_string(), line);
    }
    let t: MultipathTable =
        "0 32768 multipath 1 queue_if_no_path 0 1 1 round-robin 0 2 1 8:16 1 8:32 1"
            .parse()
            .unwrap();
    assert_eq!(t.features, vec![Feature::QueueIfNoPath]);
    assert_eq!(t.hw_handler, None);
    assert_eq!(t.initial_group, 1);
    assert_eq!(t.groups.len(), 1);
    assert_eq!(t.groups[0].selector, Selector::RoundRobin);
    assert_eq!(t.devnos(), vec![DevNo::new(8, 16), DevNo::new(8, 32)]);
    assert_eq!(t.groups[0].paths[1].args, vec!["1".to_string()]);
}

#[test]
fn issue_status_line_round_trips_and_is_typed() {
    let line = "0 32768 multipath 2 0 1 0 2 1 A 0 1 2 8:0 A 0 0 1 E 0 1 2 8:64 F 1 0 1";
    let s: MultipathStatus = line.parse().unwrap();
    assert_eq!(s.to_string(), line);
    assert!(!s.queue_io);
    assert_eq!(s.pg_init_count, 1);
    assert_eq!(s.current_group, 1);
    assert_eq!(s.groups[0].state, GroupState::Active);
    assert_eq!(s.groups[1].state, GroupState::Enabled);
    let failed = s.path(DevNo::new(8, 64)).unwrap();
    assert_eq!(failed.state, PathState::Failed);
    assert_eq!(failed.fail_count, 1);
    assert_eq!(failed.selector_info, vec!["0".to_string(), "1".to_string()]);
    assert_eq!(s.active_paths(), vec![DevNo::new(8, 0)]);
}

#[test]
fn kernel_table_fixture_round_trips() {
    let text = read("table.txt");
    let mut n = 0;
    for line in text.lines() {
        let (name, rest) = split_name_prefix(line);
        assert!(name.is_some());
        let t: MultipathTable = line.parse().unwrap();
        assert_eq!(t.to_string(), rest.trim(), "{line}");
        assert_eq!(
            t.hw_handler,
            Some(HwHandler {
                name: "alua".into(),
                args: vec![].into()
            })
        );
        t.validate("fixture").unwrap();
        n += 1;
    }
    assert_eq!(n, 3);
    let c: MultipathTable = text.lines().nth(2).unwrap().parse().unwrap();
    assert_eq!(c.length, 131072);
    assert_eq!(c.groups[0].paths.len(), 2);
    assert_eq!(c.groups[0].selector, Selector::ServiceTime);
}

#[test]
fn kernel_status_fixture_round_trips() {
    let text = read("status.txt");
    for line in text.lines() {
        let (_, rest) = split_name_prefix(line);
        let s: MultipathStatus = line.parse().unwrap();
        assert_eq!(s.to_string(), rest.trim(), "{line}");
        assert!(s.groups.iter().all(|g| g.state == GroupState::Enabled));
        assert!(
            s.paths()
                .all(|p| p.state == PathState::Active && p.fail_count == 0)
        );
    }
}

#[test]
fn multipath_tools_addmap_tables_round_trip() {
    // multipath -v2 prints the table it loads in brackets: addmap [ ... ]
    let text = read("create.txt");
    let mut n = 0;
    for line in text.lines() {
        if let Some(i) = line.find("addmap [") {
            let table = line[i + 8..].trim_end().trim_end_matches(']');
            let t: MultipathTable = table.parse().unwrap();
            assert_eq!(t.to_string(), table);
            n += 1;
        }
    }
    assert_eq!(n, 3);
    let c: MultipathTable =
        "0 131072 multipath 1 queue_if_no_path 1 alua 1 1 service-time 0 2 1 8:64 1 8:80 1"
            .parse()
            .unwrap();
    assert_eq!(c.features, vec![Feature::QueueIfNoPath]);
}

#[test]
fn all_known_features_and_unknown_ones_are_kept() {
    let line = "0 8 multipath 9 queue_if_no_path pg_init_retries 50 pg_init_delay_msecs 2500 retain_attached_hw_handler queue_mode bio no_partitions 2 emc 1 1 1 queue-length 0 1 1 8:0 1";
    let t: MultipathTable = line.parse().unwrap();
    assert_eq!(
        t.features,
        vec![
            Feature::QueueIfNoPath,
            Feature::PgInitRetries(50),
            Feature::PgInitDelayMsecs(2500),
            Feature::RetainAttachedHwHandler,
            Feature::QueueMode(QueueMode::Bio),
            Feature::Other("no_partitions".into()),
        ]
    );
    assert_eq!(
        t.hw_handler,
        Some(HwHandler {
            name: "emc".into(),
            args: vec!["1".into()].into()
        })
    );
    assert_eq!(t.to_string(), line);
    let unknown_sel = "0 8 multipath 0 0 1 1 io-affinity 1 7 1 1 8:0 1";
    let t: MultipathTable = unknown_sel.parse().unwrap();
    assert_eq!(t.groups[0].selector, Selector::Other("io-affinity".into()));
    assert_eq!(t.to_string(), unknown_sel);
}

#[test]
fn zero_groups_is_a_valid_table() {
    let line = "0 8 multipath 1 queue_if_no_path 0 0 0";
    let t: MultipathTable = line.parse().unwrap();
    assert!(t.groups.is_empty());
    assert_eq!(t.to_string(), line);
}

fn parse_err(line: &str) -> (usize, Option<String>, String) {
    match line.parse::<MultipathTable>().unwrap_err() {
        Error::Parse {
            index,
            token,
            expected,
        } => (index, token, expected),
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn errors_name_token_and_position() {
    let (i, t, e) = parse_err("0 32768 multipath 0 0 1 1 round-robin 0 x 1 8:16 1");
    assert_eq!((i, t.as_deref()), (10, Some("x")));
    assert!(e.contains("path count"), "{e}");
    let msg = "0 32768 multipath 0 0 1 1 round-robin 0 x 1 8:16 1"
        .parse::<MultipathTable>()
        .unwrap_err()
        .to_string();
    assert_eq!(msg, "token 10 ('x'): expected the path count");

    let (i, t, _) = parse_err("0 32768 linear 8:0 0");
    assert_eq!((i, t.as_deref()), (3, Some("linear")));
    // truncated
    let (i, t, e) = parse_err("0 32768 multipath 0 0 1 1 round-robin 0 2 1 8:16 1");
    assert_eq!(t, None, "{e}");
    assert_eq!(i, 14);
    // wrong counts: feature count larger than the line
    let (i, _, e) = parse_err("0 32768 multipath 99 queue_if_no_path 0 0 0");
    assert_eq!(i, 4);
    assert!(e.contains("99"), "{e}");
    // trailing garbage
    let (i, t, _) = parse_err("0 8 multipath 0 0 0 0 extra");
    assert_eq!((i, t.as_deref()), (8, Some("extra")));
    // bad devno
    let (i, t, _) = parse_err("0 8 multipath 0 0 1 1 round-robin 0 1 1 sda 1");
    assert_eq!((i, t.as_deref()), (12, Some("sda")));
    // empty group
    let (i, _, e) = parse_err("0 8 multipath 0 0 1 1 round-robin 0 0 1");
    assert_eq!(i, 10);
    assert!(e.contains("at least 1"), "{e}");
    // a two-word feature cut by the count
    let (i, t, _) = parse_err("0 8 multipath 1 pg_init_retries 5 0 0 0");
    assert_eq!((i, t.as_deref()), (5, Some("pg_init_retries")));
    // initial group out of range
    let (i, _, _) = parse_err("0 8 multipath 0 0 1 2 round-robin 0 1 1 8:0 1");
    assert_eq!(i, 7);
}

#[test]
fn status_errors_name_token() {
    let e = "0 8 multipath 2 0 1 0 1 1 X 0 1 0 8:0 A 0"
        .parse::<MultipathStatus>()
        .unwrap_err()
        .to_string();
    assert_eq!(e, "token 10 ('X'): expected a path group state (A, E or D)");
    let e = "0 8 multipath 2 0 1 0 1 1 A 0 1 0 8:0 Q 0"
        .parse::<MultipathStatus>()
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("token 15 ('Q')"), "{e}");
    assert!(
        "0 8 multipath 1 0 0 0 0"
            .parse::<MultipathStatus>()
            .is_err()
    );
}
