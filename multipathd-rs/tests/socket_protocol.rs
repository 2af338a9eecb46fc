#![allow(clippy::unwrap_used)]
//! The request language of the control socket: multipathd-style words and the JSON form.

use multipathd_rs::Error;
use multipathd_rs::socket::{Command, Format, may_run};

fn parse(s: &str) -> Command {
    Command::parse_request(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

#[test]
fn words_mirror_multipathd() {
    use Command::*;
    let cases: Vec<(&str, Command)> = vec![
        (
            "show paths",
            ShowPaths {
                format: Format::Human,
            },
        ),
        (
            "list paths --json",
            ShowPaths {
                format: Format::Json,
            },
        ),
        (
            "show maps",
            ShowMaps {
                format: Format::Human,
            },
        ),
        (
            "show maps json",
            ShowMaps {
                format: Format::MultipathdJson,
            },
        ),
        (
            "show multipaths --json",
            ShowMaps {
                format: Format::Json,
            },
        ),
        ("show topology", ShowTopology { map: None }),
        ("show maps topology", ShowTopology { map: None }),
        (
            "show map mpathA topology",
            ShowTopology {
                map: Some("mpathA".into()),
            },
        ),
        (
            "show map mpatha json",
            ShowMap {
                map: "mpatha".into(),
                format: Format::MultipathdJson,
            },
        ),
        (
            "show map mpatha",
            ShowMap {
                map: "mpatha".into(),
                format: Format::Human,
            },
        ),
        ("show config", ShowConfig),
        (
            "show status",
            ShowStatus {
                format: Format::Human,
            },
        ),
        (
            "show status --json",
            ShowStatus {
                format: Format::Json,
            },
        ),
        ("fail path sda", FailPath { dev: "sda".into() }),
        ("reinstate path sdB", ReinstatePath { dev: "sdB".into() }),
        (
            "switchgroup mpatha 2",
            SwitchGroup {
                map: "mpatha".into(),
                group: 2,
            },
        ),
        (
            "switch map mpatha group 1",
            SwitchGroup {
                map: "mpatha".into(),
                group: 1,
            },
        ),
        (
            "switchgroup map mpatha group 3",
            SwitchGroup {
                map: "mpatha".into(),
                group: 3,
            },
        ),
        (
            "resize map mpatha",
            ResizeMap {
                map: "mpatha".into(),
            },
        ),
        (
            "rename map mpatha force",
            RenameMapForce {
                map: "mpatha".into(),
            },
        ),
        ("add path sdc", AddPath { dev: "sdc".into() }),
        ("del path sdc", DelPath { dev: "sdc".into() }),
        ("remove path sdc", DelPath { dev: "sdc".into() }),
        (
            "add map mpathz",
            AddMap {
                map: "mpathz".into(),
            },
        ),
        (
            "del map mpathz",
            DelMap {
                map: "mpathz".into(),
            },
        ),
        ("reconfigure", Reconfigure),
        ("rescan", Rescan),
        ("shutdown", Shutdown),
        (
            "  SHOW   Paths  ",
            ShowPaths {
                format: Format::Human,
            },
        ),
    ];
    for (words, expected) in cases {
        assert_eq!(parse(words), expected, "{words}");
        // The canonical words read back as the same command, and so does the JSON form.
        assert_eq!(parse(&expected.to_string()), expected);
        let json = serde_json::to_string(&expected).unwrap();
        assert!(json.starts_with('{'));
        assert_eq!(parse(&json), expected, "{json}");
    }
}

#[test]
fn json_form_is_documented_shape() {
    assert_eq!(
        parse(r#"{"command":"fail_path","dev":"sda"}"#),
        Command::FailPath { dev: "sda".into() }
    );
    assert_eq!(
        parse(r#"{"command":"show_maps","format":"multipathd_json"}"#),
        Command::ShowMaps {
            format: Format::MultipathdJson
        }
    );
    assert_eq!(
        serde_json::to_string(&Command::SwitchGroup {
            map: "m".into(),
            group: 2
        })
        .unwrap(),
        r#"{"command":"switch_group","map":"m","group":2}"#
    );
}

#[test]
fn bad_requests_are_errors_that_say_why() {
    for (req, needle) in [
        ("", "empty request"),
        ("frobnicate", "unknown command"),
        ("show", "unknown command"),
        ("fail path", "unknown command"),
        ("fail path sda sdb", "unknown command"),
        ("show maps yaml", "unexpected words after the command: yaml"),
        ("switchgroup mpatha 0", "not a number from 1 up"),
        ("switchgroup mpatha two", "not a number from 1 up"),
        ("{\"command\":\"fail_path\"}", "not a valid JSON command"),
        ("{not json", "not a valid JSON command"),
    ] {
        match Command::parse_request(req) {
            Err(e @ Error::BadRequest { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(needle), "{req:?}: {msg}");
            }
            other => panic!("{req:?} gave {other:?}"),
        }
    }
    let Err(e) = Command::parse_request("frobnicate") else {
        panic!()
    };
    assert!(
        e.to_string().contains("switchgroup MAP N"),
        "lists the commands"
    );
}

#[test]
fn only_changes_need_root() {
    let reads = [
        "show paths",
        "show maps json",
        "show map m",
        "show topology",
        "show config",
        "show status",
    ];
    let changes = [
        "fail path sda",
        "reinstate path sda",
        "switchgroup m 1",
        "resize map m",
        "add path sda",
        "del path sda",
        "add map m",
        "del map m",
        "reconfigure",
        "rescan",
        "shutdown",
    ];
    for r in reads {
        let c = parse(r);
        assert!(!c.is_change(), "{r}");
        assert!(may_run(&c, 0) && may_run(&c, 1000), "{r}");
    }
    for w in changes {
        let c = parse(w);
        assert!(c.is_change(), "{w}");
        assert!(may_run(&c, 0), "{w}");
        assert!(!may_run(&c, 1000), "{w}");
        assert!(!may_run(&c, 65534), "{w}");
    }
}
