//! The crate's module layering, checked on the source: which module may import which. A
//! circle (config -> blacklist -> config) compiles in Rust, so only a test keeps it out.

use std::path::Path;

/// The `crate::X` modules a source file imports (`use crate::X...` or a `crate::X::` path in
/// code), comments and doc links left out.
fn imports(file: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && !out.contains(&name) {
                out.push(name);
            }
        }
        // `use crate::{a, b}` groups
        if let Some(i) = code.find("crate::{") {
            for part in code[i + "crate::{".len()..].split([',', '}']) {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && !out.contains(&name) {
                    out.push(name);
                }
            }
        }
    }
    out
}

#[test]
fn the_configuration_modules_form_no_circle() {
    let settings = imports("settings.rs");
    for m in ["config", "blacklist", "hwtable"] {
        assert!(
            !settings.contains(&m.to_string()),
            "settings.rs is the leaf of the configuration modules but imports crate::{m}"
        );
    }
    for file in ["blacklist.rs", "hwtable.rs"] {
        let used = imports(file);
        assert!(
            !used.contains(&"config".to_string()),
            "{file} imports crate::config, which imports it back: {used:?}"
        );
        assert!(
            used.contains(&"settings".to_string()),
            "{file} should take the shared types from crate::settings: {used:?}"
        );
    }
    // The positive control: config does use both, so the reader above sees imports.
    let config = imports("config.rs");
    for m in ["blacklist", "hwtable", "settings"] {
        assert!(
            config.contains(&m.to_string()),
            "config.rs: {m} not seen in {config:?}"
        );
    }
}

/// The engine's planner talks to no backend and applies nothing: only the applier
/// (`engine/apply.rs`) and event intake reach the kernel. Positive control: the applier does.
#[test]
fn the_engine_planner_talks_to_no_backend() {
    let code = |file: &str| -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(file);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        text.lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n")
    };
    for word in ["self.backend", "apply_to_backend", "run_concurrently"] {
        assert!(
            !code("engine/plan.rs").contains(word),
            "engine/plan.rs uses {word}"
        );
        assert!(
            !code("engine/views.rs").contains(word),
            "engine/views.rs uses {word}"
        );
    }
    assert!(code("engine/apply.rs").contains("self.backend"));
}
