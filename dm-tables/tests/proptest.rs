#![allow(clippy::unwrap_used)]
//! Property tests: Display -> FromStr -> Display round trips on generated tables and statuses,
//! and random token soup never panics the parsers.

use dm_tables::{
    DevNo, Feature, GroupState, GroupStatus, HwHandler, Message, MultipathStatus, MultipathTable,
    PathGroup, PathState, PathStatus, QueueMode, Selector, TablePath,
};
use proptest::prelude::*;

fn word() -> impl Strategy<Value = String> {
    "[a-z0-9_]{1,6}"
}

fn devno() -> impl Strategy<Value = DevNo> {
    (0u32..300, 0u32..5000).prop_map(|(a, b)| DevNo::new(a, b))
}

fn feature() -> impl Strategy<Value = Feature> {
    prop_oneof![
        Just(Feature::QueueIfNoPath),
        any::<u32>().prop_map(Feature::PgInitRetries),
        any::<u32>().prop_map(Feature::PgInitDelayMsecs),
        prop_oneof![
            Just(QueueMode::Bio),
            Just(QueueMode::Rq),
            Just(QueueMode::Mq),
            Just(QueueMode::Nvme)
        ]
        .prop_map(Feature::QueueMode),
        Just(Feature::RetainAttachedHwHandler),
        "x[a-z_]{0,8}".prop_map(Feature::Other),
    ]
}

fn selector() -> impl Strategy<Value = Selector> {
    prop_oneof![
        Just(Selector::RoundRobin),
        Just(Selector::QueueLength),
        Just(Selector::ServiceTime),
        Just(Selector::HistoricalServiceTime),
        "io-[a-z]{1,6}".prop_map(Selector::Other),
    ]
}

fn group() -> impl Strategy<Value = PathGroup> {
    (
        selector(),
        prop::collection::vec(word(), 0..3),
        0usize..3,
        1usize..6,
    )
        .prop_flat_map(|(selector, sargs, npa, np)| {
            prop::collection::vec((devno(), prop::collection::vec(word(), npa..=npa)), np..=np)
                .prop_map(move |ps| PathGroup {
                    selector: selector.clone(),
                    selector_args: dm_tables::words(&sargs),
                    paths: ps
                        .into_iter()
                        .map(|(devno, args)| TablePath {
                            devno,
                            args: dm_tables::words(&args),
                        })
                        .collect(),
                })
        })
}

fn table() -> impl Strategy<Value = MultipathTable> {
    (
        any::<u64>(),
        any::<u64>(),
        prop::collection::vec(feature(), 0..5),
        prop::option::of(
            ("[a-z]{1,6}", prop::collection::vec(word(), 0..3)).prop_map(|(name, args)| {
                HwHandler {
                    name: name.into(),
                    args: dm_tables::words(&args),
                }
            }),
        ),
        prop::collection::vec(group(), 0..5),
        any::<u32>(),
    )
        .prop_map(|(start, length, features, hw_handler, groups, ig)| {
            let initial_group = ig % (groups.len() as u32 + 1);
            MultipathTable {
                start,
                length,
                features,
                hw_handler,
                initial_group,
                groups,
            }
        })
}

fn gstatus() -> impl Strategy<Value = GroupStatus> {
    (
        prop_oneof![
            Just(GroupState::Active),
            Just(GroupState::Enabled),
            Just(GroupState::Disabled)
        ],
        prop::collection::vec(word(), 0..2),
        0usize..3,
        1usize..6,
    )
        .prop_flat_map(|(state, sel, ninfo, np)| {
            prop::collection::vec(
                (
                    devno(),
                    any::<bool>(),
                    any::<u32>(),
                    prop::collection::vec(word(), ninfo..=ninfo),
                ),
                np..=np,
            )
            .prop_map(move |ps| GroupStatus {
                state,
                selector_status: dm_tables::words(&sel),
                paths: ps
                    .into_iter()
                    .map(|(devno, ok, fail_count, selector_info)| PathStatus {
                        devno,
                        state: if ok {
                            PathState::Active
                        } else {
                            PathState::Failed
                        },
                        fail_count,
                        selector_info: dm_tables::words(&selector_info),
                    })
                    .collect(),
            })
        })
}

fn status() -> impl Strategy<Value = MultipathStatus> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
        any::<u32>(),
        prop::collection::vec(word(), 0..2),
        prop::collection::vec(word(), 0..2),
        prop::collection::vec(gstatus(), 0..5),
        any::<u32>(),
    )
        .prop_map(
            |(
                start,
                length,
                queue_io,
                pg_init_count,
                extra_features,
                hw_handler_status,
                groups,
                cg,
            )| {
                let current_group = cg % (groups.len() as u32 + 1);
                MultipathStatus {
                    start,
                    length,
                    queue_io,
                    pg_init_count,
                    extra_features: dm_tables::words(&extra_features),
                    hw_handler_status: dm_tables::words(&hw_handler_status),
                    current_group,
                    groups,
                }
            },
        )
}

fn soup_token() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u32..6).prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        devno().prop_map(|d| d.to_string()),
        prop_oneof![
            Just("multipath"),
            Just("queue_if_no_path"),
            Just("pg_init_retries"),
            Just("queue_mode"),
            Just("round-robin"),
            Just("service-time"),
            Just("A"),
            Just("E"),
            Just("D"),
            Just("F"),
            Just("alua"),
            Just("-1"),
            Just(":"),
            Just("8:"),
        ]
        .prop_map(str::to_string),
        "[ -~]{1,5}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn table_round_trip(t in table()) {
        let line = t.to_string();
        let back: MultipathTable = line.parse().unwrap();
        prop_assert_eq!(&back, &t);
        prop_assert_eq!(back.to_string(), line.clone());
        // with the dmsetup prefix and trailing space too
        let prefixed: MultipathTable = format!("mpathx: {line} ").parse().unwrap();
        prop_assert_eq!(prefixed, t);
    }

    #[test]
    fn status_round_trip(s in status()) {
        let line = s.to_string();
        let back: MultipathStatus = line.parse().unwrap();
        prop_assert_eq!(&back, &s);
        prop_assert_eq!(back.to_string(), line);
    }

    #[test]
    fn json_model_round_trip(t in table()) {
        let j = serde_json::to_string(&t).unwrap();
        let back: MultipathTable = serde_json::from_str(&j).unwrap();
        prop_assert_eq!(back, t);
    }

    #[test]
    fn random_tokens_never_panic(toks in prop::collection::vec(soup_token(), 0..40), deep in any::<bool>()) {
        let mut line = toks.join(" ");
        if deep {
            line = format!("0 8 multipath {line}");
        }
        let _ = line.parse::<MultipathTable>();
        let _ = line.parse::<MultipathStatus>();
        let _ = line.parse::<Message>();
        let _ = line.parse::<DevNo>();
    }

    #[test]
    fn arbitrary_text_never_panics(s in "\\PC*") {
        let _ = s.parse::<MultipathTable>();
        let _ = s.parse::<MultipathStatus>();
    }

    #[test]
    fn mutated_real_lines_never_panic(idx in 0usize..40, tok in soup_token(), drop in any::<bool>()) {
        let base = "0 32768 multipath 2 0 1 0 2 1 A 0 1 2 8:0 A 0 0 1 E 0 1 2 8:64 F 1 0 1";
        let tbl = "0 32768 multipath 1 queue_if_no_path 1 alua 2 1 service-time 0 1 2 8:0 1 1 service-time 0 1 2 8:64 1 1";
        for line in [base, tbl] {
            let mut v: Vec<String> = line.split(' ').map(str::to_string).collect();
            let i = idx % v.len();
            if drop { v.truncate(i); } else { v[i] = tok.clone(); }
            let l = v.join(" ");
            if let Err(e) = l.parse::<MultipathTable>() {
                prop_assert!(e.to_string().starts_with("token "), "{}", e);
            }
            if let Err(e) = l.parse::<MultipathStatus>() {
                prop_assert!(e.to_string().starts_with("token "), "{}", e);
            }
        }
    }
}
