//! Shared by the contract and fault suites: hosts as processes, and the invariants.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use hostsync::Registry;
use hostsync::names::Bindings;

pub fn wwids(n: usize, tag: &str) -> Vec<String> {
    (0..n).map(|i| format!("36001405{tag}{i:06}")).collect()
}

/// Starts `hostsync alias allocate` as host `host` for `wwids`, in the order given, with the
/// host's table cached at `dir/<host>.bindings`.
pub fn spawn_host(url: &str, host: &str, wwids: &[String], dir: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_hostsync"))
        .args([
            "--registry",
            url,
            "--host",
            host,
            "alias",
            "allocate",
            "--cache",
        ])
        .arg(dir.join(format!("{host}.bindings")))
        .args(wwids)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a host process; returns what it printed (WWID -> name).
pub fn finish_host(host: &str, c: Child) -> BTreeMap<String, String> {
    let out = c.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "host {host} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut m = BTreeMap::new();
    for l in String::from_utf8(out.stdout).unwrap().lines() {
        let (w, a) = l.split_once(' ').unwrap();
        assert!(
            m.insert(w.to_string(), a.to_string()).is_none(),
            "{host} printed {w} twice"
        );
    }
    m
}

/// Host `i` of `n` walks the WWIDs rotated by i/n of the list, odd hosts backwards, so hosts
/// race for the same WWIDs and for the same names from different sides.
pub fn order_for(i: usize, n: usize, all: &[String]) -> Vec<String> {
    let mut v = all.to_vec();
    v.rotate_left(i * all.len() / n);
    if i % 2 == 1 {
        v.reverse();
    }
    v
}

/// The registry's bindings after checking they are a bijection: every WWID one name, every
/// bound name one WWID, both keys agreeing.
pub fn registry_table(reg: &dyn Registry) -> BTreeMap<String, String> {
    let b = Bindings::read(reg).unwrap();
    let mut names = BTreeSet::new();
    for (w, r) in &b.by_wwid {
        assert!(
            names.insert(r.alias.clone()),
            "name {} has two WWIDs",
            r.alias
        );
        let a = b
            .by_alias
            .get(&r.alias)
            .unwrap_or_else(|| panic!("no alias/{} key", r.alias));
        assert_eq!(&a.wwid, w, "alias/{} points elsewhere", r.alias);
        assert!(a.bound);
    }
    for (name, a) in &b.by_alias {
        if a.bound {
            assert_eq!(
                b.by_wwid.get(&a.wwid).map(|r| r.alias.as_str()),
                Some(name.as_str()),
                "alias/{name} is bound but wwid/{} disagrees",
                a.wwid
            );
        }
    }
    b.by_wwid.into_iter().map(|(w, r)| (w, r.alias)).collect()
}

/// The table a host cached.
pub fn cached_table(dir: &Path, host: &str) -> BTreeMap<String, String> {
    let f = aliases::bindings::BindingsFile::load(&dir.join(format!("{host}.bindings"))).unwrap();
    assert!(f.problems.is_empty(), "{:?}", f.problems);
    f.bindings()
        .map(|(a, w, _)| (w.to_string(), a.to_string()))
        .collect()
}

/// `n` hosts as processes allocate `all` at once; checks every invariant and returns the table.
pub fn many_hosts_allocate(
    url: &str,
    n: usize,
    all: &[String],
    dir: &Path,
    during: impl FnOnce(),
) -> BTreeMap<String, String> {
    let kids: Vec<(String, Child)> = (0..n)
        .map(|i| {
            let h = format!("host{i:02}");
            let c = spawn_host(url, &h, &order_for(i, n, all), dir);
            (h, c)
        })
        .collect();
    during();
    let printed: Vec<(String, BTreeMap<String, String>)> = kids
        .into_iter()
        .map(|(h, c)| (h.clone(), finish_host(&h, c)))
        .collect();
    let reg = hostsync::open(url).unwrap();
    let table = registry_table(&*reg);
    let want: BTreeSet<&String> = all.iter().collect();
    let have: BTreeSet<&String> = table.keys().collect();
    assert!(want.is_subset(&have), "some WWIDs have no name");
    for (h, p) in &printed {
        for (w, a) in p {
            assert_eq!(
                table.get(w),
                Some(a),
                "{h} printed {w} {a}, the registry disagrees"
            );
        }
        assert_eq!(p.len(), all.len(), "{h} printed fewer WWIDs");
        let cached = cached_table(dir, h);
        for w in all {
            assert_eq!(
                cached.get(w),
                table.get(w),
                "{h}'s cached table disagrees on {w}"
            );
        }
    }
    table
}

/// A temporary directory on tmpfs when there is one: the local backend fsyncs every write,
/// which on a busy disk would make the suite slow without testing anything more.
pub fn tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::Builder::new()
            .prefix("hostsync-test-")
            .tempdir_in(shm)
            .unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

/// A 3-member etcd cluster on loopback, or None (with a message) if etcd is not installed.
pub fn etcd() -> Option<hostsync::testkit::EtcdCluster> {
    if !hostsync::testkit::etcd_available() {
        eprintln!("SKIP: /usr/bin/etcd is absent; install etcd-server (scripts/setup does)");
        return None;
    }
    Some(hostsync::testkit::EtcdCluster::start(3).unwrap())
}
