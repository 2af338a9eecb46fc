#![allow(clippy::unwrap_used)]
//! Property tests of the kernel uevent parser: arbitrary bytes never panic it, and any
//! well-formed message round-trips.

use std::collections::BTreeMap;

use multipathd_rs::uevent::{UeventAction, parse_kernel_uevent};
use proptest::prelude::*;

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_kernel_uevent(&bytes);
    }

    #[test]
    fn arbitrary_fields_never_panic(
        fields in proptest::collection::vec("[A-Z@=/a-z0-9_]{0,12}", 0..12),
        header in "[a-z]{0,8}@?/?[a-z/]{0,16}",
    ) {
        let mut message = header.into_bytes();
        for field in fields {
            message.push(0);
            message.extend(field.into_bytes());
        }
        message.push(0);
        let _ = parse_kernel_uevent(&message);
    }

    #[test]
    fn well_formed_messages_round_trip(
        action in prop_oneof!["add", "remove", "change", "online", "offline", "move"],
        devpath in "/devices(/[a-z0-9:_-]{1,10}){1,6}",
        extra in proptest::collection::btree_map("[A-Z][A-Z_]{0,10}", "[ -~&&[^\\x00]]{0,30}", 0..8),
        major in 0u32..4096,
        minor in 0u32..1_048_576,
        seqnum in any::<u64>(),
    ) {
        let mut env: BTreeMap<String, String> = extra;
        env.insert("ACTION".into(), action.clone());
        env.insert("DEVPATH".into(), devpath.clone());
        env.insert("MAJOR".into(), major.to_string());
        env.insert("MINOR".into(), minor.to_string());
        env.insert("SEQNUM".into(), seqnum.to_string());
        let mut message = format!("{action}@{devpath}").into_bytes();
        for (key, value) in &env {
            message.push(0);
            message.extend(format!("{key}={value}").into_bytes());
        }
        message.push(0);
        let event = parse_kernel_uevent(&message).unwrap();
        prop_assert_eq!(&event.action, &UeventAction::parse(&action));
        prop_assert_eq!(&event.devpath, &devpath);
        prop_assert_eq!(event.dev_t(), Some((major, minor)));
        prop_assert_eq!(event.seqnum, Some(seqnum));
        prop_assert_eq!(&event.env, &env);
    }
}
