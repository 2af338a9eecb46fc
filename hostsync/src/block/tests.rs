use super::*;
use crate::lvstate::{LvState, Migration};

fn lv() -> LvRef {
    LvRef {
        vg: "vgsan".into(),
        lv: "web1".into(),
        uuid: "LV1".into(),
    }
}

fn holding(host: &str, mode: LvMode) -> HostLvm {
    HostLvm {
        host: host.into(),
        host_id: None,
        io_timeout: None,
        taken_unix: 0,
        vgs: vec![],
        lvs: vec![LvState {
            vg: "vgsan".into(),
            lv: "web1".into(),
            uuid: "LV1".into(),
            mode,
            open: true,
        }],
    }
}

fn mig(from: &str, to: &str) -> Migration {
    Migration {
        domu: "web1".into(),
        from: from.into(),
        to: to.into(),
        lv_uuids: vec!["LV1".into()],
        started_unix: 0,
    }
}

#[test]
fn a_normal_start_is_exclusive_and_refused_while_another_host_holds_the_lv() {
    assert_eq!(
        decide("b", "web1", &lv(), None, &[]).unwrap().0,
        Activation::Exclusive
    );
    // Our own record does not count against us.
    let ours = [holding("b", LvMode::Exclusive)];
    assert_eq!(
        decide("b", "web1", &lv(), None, &ours).unwrap().0,
        Activation::Exclusive
    );
    for mode in [LvMode::Exclusive, LvMode::Shared, LvMode::Unlocked] {
        let e = decide("b", "web1", &lv(), None, &[holding("a", mode)]).unwrap_err();
        assert!(
            e.contains("vgsan/web1 is active on a (") && e.contains("second writer"),
            "{e}"
        );
    }
}

#[test]
fn the_registered_destination_is_shared_and_nobody_else_is() {
    let src = [holding("a", LvMode::Shared)];
    let (m, why) = decide("b", "web1", &lv(), Some(&mig("a", "b")), &src).unwrap();
    assert_eq!(m, Activation::Shared);
    assert!(why.contains("from a"), "{why}");
    // A third host starting it during the migration.
    let e = decide("c", "web1", &lv(), Some(&mig("a", "b")), &src).unwrap_err();
    assert!(
        e.contains("a migration of web1 from a to b is registered"),
        "{e}"
    );
    // A third holder besides the source.
    let both = [holding("a", LvMode::Shared), holding("c", LvMode::Shared)];
    let e = decide("b", "web1", &lv(), Some(&mig("a", "b")), &both).unwrap_err();
    assert!(
        e.contains("active on c (shared), not only on the migration's source a"),
        "{e}"
    );
    // An LV the migration does not hand over.
    let mut m = mig("a", "b");
    m.lv_uuids = vec!["OTHER".into()];
    assert!(
        decide("b", "web1", &lv(), Some(&m), &src)
            .unwrap_err()
            .contains("not among the LVs")
    );
    // The source itself restarting the domU mid-migration.
    assert!(decide("a", "web1", &lv(), Some(&mig("a", "b")), &src).is_err());
}
