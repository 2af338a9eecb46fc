#![allow(clippy::unwrap_used)]
//! Issue 12 item 15: errors read as one sentence, without `X: X`. Real error chains from this
//! crate and the leaves (configuration, control socket, alias store, sysfs), wrapped in anyhow
//! context as the command line does, are rendered with `error::sentence` and by the binary;
//! no `: `-separated segment may repeat and the file is named once.

use std::path::Path;
use std::process::Command;

use anyhow::Context;
use multipathd_rs::config::Config;
use multipathd_rs::error::sentence;

/// The text's `: `-separated segments, checked for repeats; returns the text.
fn assert_one_sentence(text: &str, names: &str) -> String {
    let segments: Vec<&str> = text.split(": ").map(str::trim).collect();
    for (i, s) in segments.iter().enumerate() {
        assert!(
            !segments[i + 1..].contains(s),
            "segment {s:?} repeats in {text:?}"
        );
    }
    assert_eq!(
        text.matches(names).count(),
        1,
        "{names} must be named exactly once in {text:?}"
    );
    text.to_string()
}

#[test]
fn rendered_chains_do_not_repeat_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();

    // The configuration file is a directory.
    let e = Config::load(dir.path()).unwrap_err();
    let chained = format!(
        "{:#}",
        anyhow::Error::from(Config::load(dir.path()).unwrap_err())
    );
    assert!(
        chained.matches("Is a directory").count() > 1,
        "the chain itself repeats (what sentence() exists for): {chained}"
    );
    let t = assert_one_sentence(&sentence(&e), &d);
    assert!(t.contains("Is a directory"), "{t}");

    // The same under anyhow context, as `config show` wraps it.
    let wrapped = Config::load(dir.path())
        .context("loading the configuration")
        .unwrap_err();
    let t = assert_one_sentence(&sentence(wrapped.as_ref()), &d);
    assert!(
        t.starts_with("loading the configuration: cannot read"),
        "{t}"
    );

    // The control socket is not there.
    let sock = dir.path().join("nope.sock");
    let e = multipathd_rs::socket::request(&sock, &multipathd_rs::socket::Command::ShowConfig)
        .unwrap_err();
    let t = assert_one_sentence(&sentence(&e), &sock.display().to_string());
    assert!(t.contains("No such file"), "{t}");

    // The alias table is a directory: three errors deep (engine, aliases, io).
    let store = aliases::Store::open(
        aliases::StorePaths {
            table: Some(dir.path().to_path_buf()),
            ..aliases::StorePaths::default()
        },
        None,
    )
    .unwrap();
    let e = store
        .lookup("3600a0b80001")
        .map_err(|source| multipathd_rs::Error::Alias {
            wwid: "3600a0b80001".into(),
            source: Box::new(source),
        })
        .unwrap_err();
    let t = assert_one_sentence(&sentence(&e), &d);
    assert!(
        t.contains("Is a directory") && t.contains("3600a0b80001"),
        "{t}"
    );

    // lun-scan on a path that does not exist.
    let e = lun_scan::scan_path(Path::new("/nonexistent-sysfs"), "sdq").unwrap_err();
    let e = multipathd_rs::Error::Scan { source: e };
    assert_one_sentence(&sentence(&e), "sdq");

    // A plain chain with distinct parts keeps every part.
    let io = std::io::Error::other("disk on fire");
    let e = anyhow::Error::from(io).context("writing /x");
    assert_eq!(sentence(e.as_ref()), "writing /x: disk on fire");
}

#[test]
fn the_binary_prints_one_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_multipathd-rs"))
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        String::from_utf8(out.stderr).unwrap()
    };
    let d = dir.path().display().to_string();
    let text = run(&["--config", &d, "config", "show"]);
    assert_one_sentence(text.trim_end(), &d);
    let sock = dir.path().join("nope.sock").display().to_string();
    let text = run(&["--socket", &sock, "show", "status"]);
    assert_one_sentence(text.trim_end(), &sock);
}
