//! The native alias table (TOML), default `/etc/multipathd-rs/aliases.toml`:
//!
//! ```toml
//! generation = 2
//!
//! [[alias]]
//! wwid = "360014055d1b3c7a0e2f4b8a9c612f3e4"
//! alias = "mpatha"
//! comment = "web01 root disk"
//! created_by = "dom0-a"
//! created_at = "2026-11-21T22:37:11Z"
//! ```
//!
//! `generation` grows by one on every change of the table. `comment`, `created_by` and
//! `created_at` are optional. Unknown keys, invalid names, a duplicated WWID or alias make the
//! table corrupt: it is reported with file and line and never overwritten until `repair`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::names::{validate_alias, validate_wwid};

/// One binding of the native table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The WWID (as multipath-tools computes it).
    pub wwid: String,
    /// The device-mapper name.
    pub alias: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Host name of the machine that created the entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// RFC 3339 UTC creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    #[serde(default)]
    generation: u64,
    #[serde(default)]
    alias: Vec<toml::Spanned<Entry>>,
}

/// The parsed table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Where it lives.
    pub path: PathBuf,
    /// Change counter.
    pub generation: u64,
    /// Entries in file order.
    pub entries: Vec<Entry>,
    /// 1-based line of each entry's `[[alias]]` header (0 for entries not yet written).
    pub lines: Vec<usize>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

impl Table {
    /// An empty table at `path`.
    pub fn empty(path: &Path) -> Self {
        Table {
            path: path.to_path_buf(),
            generation: 0,
            entries: Vec::new(),
            lines: Vec::new(),
        }
    }

    /// Parses and validates the text of a table. Any problem is [`Error::Corrupt`].
    pub fn parse(text: &str, path: &Path) -> Result<Self, Error> {
        let corrupt = |line: usize, message: String| Error::Corrupt {
            path: path.to_path_buf(),
            line,
            message,
        };
        let raw: RawTable = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(1, |s| line_of(text, s.start));
            corrupt(line, e.message().trim().to_string())
        })?;
        let mut t = Table::empty(path);
        t.generation = raw.generation;
        let mut by_alias = std::collections::HashMap::new();
        let mut by_wwid = std::collections::HashMap::new();
        for sp in raw.alias {
            let line = line_of(text, sp.span().start);
            let e = sp.into_inner();
            validate_alias(&e.alias)
                .and_then(|()| validate_wwid(&e.wwid))
                .map_err(|err| corrupt(line, err.to_string()))?;
            if let Some(first) = by_alias.insert(e.alias.clone(), line) {
                return Err(corrupt(
                    line,
                    format!("alias {:?} is bound again (first at line {first})", e.alias),
                ));
            }
            if let Some(first) = by_wwid.insert(e.wwid.clone(), line) {
                return Err(corrupt(
                    line,
                    format!("WWID {} is bound again (first at line {first})", e.wwid),
                ));
            }
            t.entries.push(e);
            t.lines.push(line);
        }
        Ok(t)
    }

    /// Reads the table; a missing file is an empty table.
    pub fn load(path: &Path) -> Result<Self, Error> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes).map_err(|e| Error::Corrupt {
                    path: path.to_path_buf(),
                    line: e.as_bytes()[..e.utf8_error().valid_up_to()]
                        .iter()
                        .filter(|b| **b == b'\n')
                        .count()
                        + 1,
                    message: "the file is not valid UTF-8".to_string(),
                })?;
                Self::parse(&text, path)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::empty(path)),
            Err(e) => Err(Error::io("read", path, e)),
        }
    }

    /// The entry for `wwid`.
    pub fn get(&self, wwid: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.wwid == wwid)
    }

    /// Index and line of the entry for `wwid`.
    pub fn line_of_wwid(&self, wwid: &str) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.wwid == wwid)
            .and_then(|i| self.lines.get(i).copied())
    }

    /// Renders the table (deterministic layout).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(64 + self.entries.len() * 160);
        out.push_str("# Alias table of the `aliases` tool: WWID -> device-mapper name.\n");
        out.push_str("# Written atomically under a lock; change it with `aliases`, not by hand.\n");
        out.push_str("generation = ");
        out.push_str(&self.generation.to_string());
        out.push('\n');
        for e in &self.entries {
            out.push_str("\n[[alias]]\nwwid = ");
            push_toml_str(&mut out, &e.wwid);
            out.push_str("\nalias = ");
            push_toml_str(&mut out, &e.alias);
            for (k, v) in [
                ("comment", &e.comment),
                ("created_by", &e.created_by),
                ("created_at", &e.created_at),
            ] {
                if let Some(v) = v {
                    out.push('\n');
                    out.push_str(k);
                    out.push_str(" = ");
                    push_toml_str(&mut out, v);
                }
            }
            out.push('\n');
        }
        out
    }
}

/// Appends `s` as a TOML basic string.
fn push_toml_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// What `repair` salvaged from a corrupt table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Salvage {
    /// The valid entries, in file order (first occurrence wins on duplicates).
    pub table: Table,
    /// Dropped pieces: (line, text, reason).
    pub dropped: Vec<(usize, String, String)>,
}

/// Salvages the valid entries from a table that does not parse as a whole: the text is cut at
/// each `[[alias]]` header and every piece is parsed on its own.
pub fn salvage(text: &str, path: &Path) -> Salvage {
    let mut chunks: Vec<(usize, String)> = vec![(1, String::new())];
    for (i, line) in text.lines().enumerate() {
        if line.trim() == "[[alias]]" {
            chunks.push((i + 1, String::new()));
        }
        if let Some(c) = chunks.last_mut() {
            c.1.push_str(line);
            c.1.push('\n');
        }
    }
    let mut table = Table::empty(path);
    let mut dropped = Vec::new();
    let mut seen_alias = std::collections::HashSet::new();
    let mut seen_wwid = std::collections::HashSet::new();
    for (idx, (line, chunk)) in chunks.into_iter().enumerate() {
        if idx == 0 {
            // Header: only `generation` (and comments) belong here.
            match toml::from_str::<RawTable>(&chunk) {
                Ok(r) => table.generation = r.generation,
                Err(e) => {
                    if !chunk.trim().is_empty() {
                        dropped.push((line, chunk.trim_end().to_string(), e.message().to_string()));
                    }
                }
            }
            continue;
        }
        if chunk.contains('\u{FFFD}') {
            dropped.push((
                line,
                chunk.trim_end().to_string(),
                "it holds bytes that are not valid UTF-8 (shown as U+FFFD); the original is in the backup".to_string(),
            ));
            continue;
        }
        let parsed = toml::from_str::<RawTable>(&chunk)
            .map_err(|e| e.message().to_string())
            .and_then(|r| {
                let mut v = r.alias;
                match (v.pop(), v.is_empty()) {
                    (Some(e), true) => Ok(e.into_inner()),
                    _ => Err("not exactly one entry".to_string()),
                }
            })
            .and_then(|e| {
                validate_alias(&e.alias)
                    .and_then(|()| validate_wwid(&e.wwid))
                    .map_err(|err| err.to_string())?;
                if seen_alias.contains(&e.alias) {
                    return Err(format!("alias {:?} was already bound above", e.alias));
                }
                if seen_wwid.contains(&e.wwid) {
                    return Err(format!("WWID {} was already bound above", e.wwid));
                }
                Ok(e)
            });
        match parsed {
            Ok(e) => {
                seen_alias.insert(e.alias.clone());
                seen_wwid.insert(e.wwid.clone());
                table.entries.push(e);
                table.lines.push(line);
            }
            Err(reason) => dropped.push((line, chunk.trim_end().to_string(), reason)),
        }
    }
    Salvage { table, dropped }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(w: &str, a: &str) -> Entry {
        Entry {
            wwid: w.into(),
            alias: a.into(),
            comment: Some("quote \" and \\ and\nnewline".into()),
            created_by: Some("dom0".into()),
            created_at: Some("2026-11-21T22:37:11Z".into()),
        }
    }

    #[test]
    fn render_parse_round_trip() {
        let mut t = Table::empty(Path::new("t.toml"));
        t.generation = 7;
        t.entries.push(entry("1a", "mpatha"));
        t.entries.push(Entry {
            comment: None,
            created_by: None,
            created_at: None,
            ..entry("1b", "web")
        });
        let text = t.render();
        let p = Table::parse(&text, Path::new("t.toml")).unwrap();
        assert_eq!(p.generation, 7);
        assert_eq!(p.entries, t.entries);
        assert_eq!(p.lines, [5, 12]);
        assert_eq!(p.render(), text);
    }

    #[test]
    fn corrupt_tables_name_the_line() {
        let cases = [
            ("generation = 1\n[[alias]]\nwwid = \"1a\"\n", 2),
            (
                "generation = 1\n[[alias]]\nwwid = \"1a\"\nalias = \"a/b\"\n",
                2,
            ),
            (
                "[[alias]]\nwwid = \"1a\"\nalias = \"x\"\n[[alias]]\nwwid = \"1b\"\nalias = \"x\"\n",
                4,
            ),
            (
                "generation = 1\n[[alias]]\nwwid = \"1a\"\nalias = \"x\"\ncolor = 3\n",
                5,
            ),
            ("generation = 1\nthis is not toml\n", 2),
        ];
        for (text, line) in cases {
            match Table::parse(text, Path::new("/t.toml")) {
                Err(Error::Corrupt { line: l, path, .. }) => {
                    assert_eq!(path, Path::new("/t.toml"));
                    assert_eq!(l, line, "{text}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn salvage_keeps_valid_entries() {
        let text = "generation = 4\n\n[[alias]]\nwwid = \"1a\"\nalias = \"mpatha\"\n\n[[alias]]\nwwid = \"1b\"\nalias = \n\n[[alias]]\nwwid = \"1c\"\nalias = \"mpatha\"\n\n[[alias]]\nwwid = \"1d\"\nalias = \"mpathd\"\n";
        assert!(Table::parse(text, Path::new("t")).is_err());
        let s = salvage(text, Path::new("t"));
        assert_eq!(s.table.generation, 4);
        let kept: Vec<_> = s.table.entries.iter().map(|e| e.wwid.as_str()).collect();
        assert_eq!(kept, ["1a", "1d"]);
        let lines: Vec<_> = s.dropped.iter().map(|d| d.0).collect();
        assert_eq!(lines, [7, 11]);
    }
}
