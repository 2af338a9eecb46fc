#![allow(clippy::unwrap_used)]
//! `[cluster]`: two engines acting as two hosts over generated trees whose LUNs are discovered
//! in a different order. With the registry (local: in a tempdir, and a real etcd cluster)
//! their names are identical; without it (the positive control) they differ. A LUN appearing
//! on both at once gets one name. An unreachable registry names maps by WWID, and the later
//! rename to the registry alias happens only while the map is not open.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use dm_tables::SimBackend;
use multipathd_rs::config::Config;
use multipathd_rs::demo::cluster::{DemoHost, new_lun_on_both, two_hosts};
use multipathd_rs::demo::demo_topology;

/// A scratch directory, on tmpfs where there is one (the registry and alias files fsync every
/// write, and a disk shared with other jobs makes that slow).
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

fn config(registry: Option<&str>, host: &str) -> Config {
    let text = match registry {
        Some(r) => format!(
            "[cluster]\nregistry = \"{r}\"\nname = \"test\"\nhost = \"{host}\"\npublish_interval = 1\n"
        ),
        None => String::new(),
    };
    Config::parse_str(&text, Path::new("/test/config.toml")).unwrap()
}

fn assert_one_name_per_wwid(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) {
    assert_eq!(a, b, "the two hosts name the LUNs differently");
    let distinct: BTreeSet<&String> = a.values().collect();
    assert_eq!(distinct.len(), a.len(), "one name for two WWIDs: {a:?}");
}

/// The story on one registry URL: 4 LUNs discovered in a different order, then a fifth on
/// both at the same moment.
fn two_hosts_agree(base: &Path, registry: &str) {
    let (mut a, mut b) = two_hosts(base, 4, Some(registry)).unwrap();
    assert_ne!(
        a.order, b.order,
        "the hosts discovered the LUNs in a different order"
    );
    let (na, nb) = (a.names(), b.names());
    assert_eq!(na.len(), 4);
    assert_one_name_per_wwid(&na, &nb);
    assert!(
        na.values().all(|n| n.starts_with("mpath")),
        "friendly names from the registry: {na:?}"
    );
    // The local table is a cache of the registry, a bindings file written atomically.
    let cache = std::fs::read_to_string(a.dir.join("bindings.cluster")).unwrap();
    for (w, n) in &na {
        assert!(cache.contains(&format!("{n} {w}")), "{cache}");
    }

    let new = new_lun_on_both(&mut a, &mut b).unwrap();
    let (na5, nb5) = (a.names(), b.names());
    assert_eq!(na5.len(), 5, "{na5:?}");
    assert!(nb5.contains_key(&new), "{nb5:?}");
    assert_one_name_per_wwid(&na5, &nb5);
    for (w, n) in &na {
        assert_eq!(na5.get(w), Some(n), "an existing name changed");
    }
}

#[test]
fn without_a_registry_the_hosts_name_the_luns_differently() {
    // Positive control for the tests below: the two trees really are discovered in a
    // different order, so per-host friendly names disagree.
    let t = scratch();
    let (a, b) = two_hosts(t.path(), 4, None).unwrap();
    let (na, nb) = (a.names(), b.names());
    assert_eq!(na.len(), 4);
    assert_eq!(
        na.keys().collect::<Vec<_>>(),
        nb.keys().collect::<Vec<_>>(),
        "same LUNs on both hosts"
    );
    assert_ne!(na, nb, "the discovery order should make local names differ");
}

#[test]
fn two_hosts_name_the_same_luns_identically_through_a_local_registry() {
    // Several rounds: the fifth LUN's allocation is a race between the two hosts.
    for round in 0..3 {
        let t = scratch();
        let reg = format!("local:{}", t.path().join("registry").display());
        eprintln!("round {round}");
        two_hosts_agree(t.path(), &reg);
    }
}

#[test]
fn two_hosts_name_the_same_luns_identically_through_etcd() {
    if !hostsync::testkit::etcd_available() {
        eprintln!(
            "SKIPPED: {} is not installed (scripts/setup installs etcd-server)",
            hostsync::testkit::ETCD_BIN
        );
        return;
    }
    let etcd = hostsync::testkit::EtcdCluster::start(1).unwrap();
    let t = scratch();
    two_hosts_agree(t.path(), &etcd.url());
}

#[test]
fn an_unreachable_registry_names_by_wwid_and_renames_only_closed_maps() {
    let t = scratch();
    // The registry directory cannot be made while a plain file sits where its parent goes.
    let blocker = t.path().join("blocked");
    std::fs::write(&blocker, "not a directory").unwrap();
    let reg = format!("local:{}", blocker.join("registry").display());
    let mut a = DemoHost::new(t.path(), "dom0-a", &demo_topology(3), Some(&reg)).unwrap();
    a.sync().unwrap();
    let before = a.names();
    assert_eq!(before.len(), 3);
    for (w, n) in &before {
        assert_eq!(w, n, "named by its WWID while the registry is unreachable");
    }

    // The registry comes back; another host has meanwhile named the LUNs.
    std::fs::remove_file(&blocker).unwrap();
    let registry = hostsync::open(&reg).unwrap();
    let (mut other, _) = hostsync::ClusterNamer::open(
        registry.clone(),
        "dom0-b",
        hostsync::NamerOptions::default(),
    )
    .unwrap();
    let wwids: Vec<String> = before.keys().cloned().collect();
    let mut want = BTreeMap::new();
    for w in wwids.iter().rev() {
        want.insert(w.clone(), other.name(w).unwrap().alias);
    }

    // A guest holds the first map open.
    let dm = SimBackend::open_file(a.dir.join("dm-state.json"), None).unwrap();
    let held = wwids[0].clone();
    dm.open(&held).unwrap();

    // The reconnect is due publish_interval (1 s) after the failed attempt.
    let later = Instant::now() + Duration::from_secs(5);
    let r = a
        .engine
        .cluster_tick(later)
        .expect("a re-plan of the WWID-named maps");
    let after = a.names();
    assert_eq!(after[&held], held, "an open map keeps its name");
    assert!(
        r.pending_renames
            .iter()
            .any(|p| p.wwid == held && p.new_name == want[&held]),
        "{:?}",
        r.pending_renames
    );
    for w in &wwids[1..] {
        assert_eq!(after[w], want[w], "a closed map takes its registry alias");
    }

    // The guest closes it: the next publication renames it.
    dm.close(&held).unwrap();
    a.engine
        .cluster_tick(later + Duration::from_secs(5))
        .expect("a re-plan of the WWID-named map");
    assert_eq!(a.names(), want);
}

#[test]
fn cluster_section_is_shown_and_validated() {
    let cfg = config(Some("etcd://10.0.0.1:2379,10.0.0.2:2379"), "dom0-a");
    let text = cfg.view().to_string();
    assert!(
        text.contains("etcd://10.0.0.1:2379,10.0.0.2:2379"),
        "{text}"
    );
    assert!(text.contains("dom0-a"), "{text}");
    let json = serde_json::to_value(cfg.view()).unwrap();
    assert_eq!(json["cluster"]["host"], "dom0-a");
    assert_eq!(json["cluster"]["publish_interval"], 1);
    // Round trip through the rendered TOML.
    let back = Config::parse_str(
        &multipathd_rs::config::render_toml(&cfg),
        Path::new("/test/config.toml"),
    )
    .unwrap();
    assert_eq!(
        back.cluster.as_ref().map(|c| &c.registry),
        cfg.cluster.as_ref().map(|c| &c.registry)
    );
    for bad in [
        "[cluster]\nname = \"x\"\n",
        "[cluster]\nregistry = \"http://x\"\n",
        "[cluster]\nregistry = \"local:/x\"\npublish_interval = 0\n",
        "[cluster]\nregistry = \"local:/x\"\nbogus = 1\n",
    ] {
        let e = Config::parse_str(bad, Path::new("/test/config.toml")).unwrap_err();
        assert!(e.to_string().contains("/test/config.toml"), "{e}");
    }
    // No section: no cluster, and show config says nothing about one.
    let plain = config(None, "x");
    assert!(plain.cluster.is_none());
    assert!(!plain.view().to_string().contains("cluster:"));
}
