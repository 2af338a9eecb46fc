#![allow(clippy::unwrap_used)]
//! `config import` of a big multipath.conf (thousands of blacklist regexes and `multipaths`
//! entries) stays linear and lean. Work and memory are counted, never timed: the number of
//! regular expressions compiled, and the resident memory the import adds. Before the fix an
//! import compiled and kept every pattern twice (about 21 KB per regex) and looked up line
//! numbers and duplicates by scanning, quadratic in the file size.
//!
//! One test per binary (this file), so the resident-memory reading sees only this import.

use std::path::Path;

use multipathd_rs::config::regexes_compiled;
use multipathd_rs::import::import_str;

fn big_conf(rules: usize, entries: usize, regex: bool) -> String {
    let mut t = String::from("defaults {\n  user_friendly_names yes\n}\nblacklist {\n");
    for i in 0..rules {
        if regex {
            t.push_str(&format!(
                "  wwid \"^3600a0980383030{i:013x}[0-9a-f]{{4}}$\"\n"
            ));
        } else {
            t.push_str(&format!("  wwid \"^3600a0980383030{i:017x}$\"\n"));
        }
    }
    t.push_str("}\nmultipaths {\n");
    for i in 0..entries {
        t.push_str(&format!(
            "  multipath {{\n    wwid 3600a0980383031{i:017x}\n    alias lun{i}\n  }}\n"
        ));
    }
    t.push_str("}\n");
    t
}

/// Resident memory of this process in KiB.
fn rss_kib() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn big_imports_compile_each_regex_at_most_twice_and_keep_none() {
    // Real regexes first, on a fresh heap: each is compiled to check it when the file is
    // read and again when the TOML is read back, then dropped. Work is linear and nothing
    // compiled is kept (the old import kept about 21 KiB per regex: 43 MiB here; compiling
    // and dropping costs a few MiB of heap the allocator keeps, whatever the count).
    let n = 2048;
    let text = big_conf(n, 0, true);
    let compiled = regexes_compiled();
    let before_rss = rss_kib();
    let r = import_str(&text, Path::new("/etc/multipath.conf")).unwrap();
    assert_eq!(r.config.blacklist.wwid.len(), n);
    let work = regexes_compiled() - compiled;
    assert!(work <= 2 * n, "{work} compilations for {n} regexes");
    let grown = rss_kib().saturating_sub(before_rss);
    assert!(
        grown < n * 8,
        "the import grew the process by {grown} KiB for {n} regexes"
    );
    // They still match (compiled on first use).
    let id = multipathd_rs::config::PathIdentity {
        devnode: "sdq".into(),
        wwid: Some(format!("3600a0980383030{:013x}beef", 7)),
        vendor: "X".into(),
        product: "Y".into(),
        protocol: None,
    };
    assert!(r.config.blacklist_verdict(&id).is_blacklisted());
    drop(r);

    // 8k WWID rules (plain text between anchors, as generated blacklists are) and 8k
    // multipaths entries: nothing to compile at all, and linear bookkeeping.
    let text = big_conf(8192, 8192, false);
    let before_rss = rss_kib();
    let compiled = regexes_compiled();
    let r = import_str(&text, Path::new("/etc/multipath.conf")).unwrap();
    assert_eq!(r.config.blacklist.wwid.len(), 8192);
    assert_eq!(r.config.multipaths.len(), 8192);
    assert_eq!(
        regexes_compiled() - compiled,
        0,
        "plain WWID patterns are matched as text, not compiled"
    );
    let grown = rss_kib().saturating_sub(before_rss);
    // 16k entries with their TOML (about 1.3 MB of text) in well under 3 KiB each; the old
    // import's compiled patterns alone took about 170 MiB here.
    assert!(
        grown < 16384 * 3,
        "the import grew the process by {grown} KiB for 16k entries"
    );
    let id = multipathd_rs::config::PathIdentity {
        wwid: Some(format!("3600a0980383030{:017x}", 8191)),
        ..id
    };
    assert!(r.config.blacklist_verdict(&id).is_blacklisted());
    let id = multipathd_rs::config::PathIdentity {
        wwid: Some(format!("3600a0980383030{:017x}0", 8191)),
        ..id
    };
    assert!(
        !r.config.blacklist_verdict(&id).is_blacklisted(),
        "the $ anchor holds"
    );
}
