//! multipath-tools' bindings file (`/etc/multipath/bindings`), read and written so that an
//! unchanged file round-trips byte for byte.
//!
//! Format (as multipath-tools writes it): a header of `#` comment lines, then one `alias wwid`
//! line per binding. On each line everything from `#` on is a comment; fields are separated by
//! spaces or tabs. The file is kept as a list of raw lines; comments, blank lines and the
//! original line endings are preserved, new bindings are appended at the end (as
//! multipath-tools 0.9.4 does), removed bindings lose just their line.
//!
//! Unlike multipath-tools (which skips malformed lines) a malformed line, a line with extra
//! fields, an invalid alias or WWID, or a duplicated alias or WWID makes the file *corrupt*:
//! it is reported with its line and never overwritten until `repair`.

use std::path::{Path, PathBuf};

use crate::Error;
use crate::names::{validate_alias, validate_wwid};

/// The header multipath-tools writes into a new bindings file.
pub const BINDINGS_HEADER: &str = "# Multipath bindings, Version : 1.0\n\
# NOTE: this file is automatically maintained by the multipath program.\n\
# You should not need to edit this file in normal circumstances.\n\
#\n\
# Format:\n\
# alias wwid\n\
#\n";

/// One line of the file, kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawLine {
    /// The line's bytes without its terminator.
    pub text: String,
    /// The terminator as found ("\n", "\r\n" or "" for a last line without one).
    pub ending: String,
    /// The binding on this line, if it holds one.
    pub binding: Option<(String, String)>,
}

/// A problem found on one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineProblem {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// A parsed bindings file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingsFile {
    /// Where it lives.
    pub path: PathBuf,
    /// All lines, verbatim.
    pub lines: Vec<RawLine>,
    /// Problems; non-empty means the file is corrupt.
    pub problems: Vec<LineProblem>,
}

impl BindingsFile {
    /// An empty file (written with [`BINDINGS_HEADER`] when first saved).
    pub fn new_empty(path: &Path) -> Self {
        let mut f = Self::parse(BINDINGS_HEADER, path);
        f.path = path.to_path_buf();
        f
    }

    /// Parses text; never fails: problems are collected in `problems`.
    pub fn parse(text: &str, path: &Path) -> Self {
        let mut lines = Vec::new();
        let mut problems = Vec::new();
        let mut seen_alias: std::collections::HashMap<String, usize> = Default::default();
        let mut seen_wwid: std::collections::HashMap<String, usize> = Default::default();
        let mut rest = text;
        let mut lineno = 0;
        while !rest.is_empty() {
            lineno += 1;
            let (line, ending, next) = match rest.find('\n') {
                Some(i) => {
                    let l = &rest[..i];
                    if let Some(stripped) = l.strip_suffix('\r') {
                        (stripped, "\r\n", &rest[i + 1..])
                    } else {
                        (l, "\n", &rest[i + 1..])
                    }
                }
                None => (rest, "", ""),
            };
            rest = next;
            let mut binding = None;
            let content = line.split('#').next().unwrap_or("");
            let mut fields = content.split([' ', '\t']).filter(|f| !f.is_empty());
            if let Some(alias) = fields.next() {
                match (fields.next(), fields.next()) {
                    (None, _) => problems.push(LineProblem {
                        line: lineno,
                        message: format!("alias {alias:?} has no WWID"),
                    }),
                    (Some(_), Some(extra)) => problems.push(LineProblem {
                        line: lineno,
                        message: format!("unexpected text {extra:?} after the WWID"),
                    }),
                    (Some(wwid), None) => {
                        if let Err(e) = validate_alias(alias).and_then(|()| validate_wwid(wwid)) {
                            problems.push(LineProblem {
                                line: lineno,
                                message: e.to_string(),
                            });
                        } else if let Some(first) = seen_alias.get(alias) {
                            problems.push(LineProblem {
                                line: lineno,
                                message: format!(
                                    "alias {alias:?} is bound again (first bound on line {first})"
                                ),
                            });
                        } else if let Some(first) = seen_wwid.get(wwid) {
                            problems.push(LineProblem {
                                line: lineno,
                                message: format!(
                                    "WWID {wwid} is bound again (first bound on line {first})"
                                ),
                            });
                        } else {
                            seen_alias.insert(alias.to_string(), lineno);
                            seen_wwid.insert(wwid.to_string(), lineno);
                            binding = Some((alias.to_string(), wwid.to_string()));
                        }
                    }
                }
            }
            lines.push(RawLine {
                text: line.to_string(),
                ending: ending.to_string(),
                binding,
            });
        }
        BindingsFile {
            path: path.to_path_buf(),
            lines,
            problems,
        }
    }

    /// Reads a file; a missing file is an empty one (not yet created).
    pub fn load(path: &Path) -> Result<Self, Error> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes).map_err(|e| {
                    let upto = e.utf8_error().valid_up_to();
                    let line = e.as_bytes()[..upto].iter().filter(|b| **b == b'\n').count() + 1;
                    Error::Corrupt {
                        path: path.to_path_buf(),
                        line,
                        message: "the file is not valid UTF-8".to_string(),
                    }
                })?;
                Ok(Self::parse(&text, path))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::new_empty(path)),
            Err(e) => Err(Error::io("read", path, e)),
        }
    }

    /// Errors with the first problem if the file is corrupt.
    pub fn ensure_valid(&self) -> Result<(), Error> {
        match self.problems.first() {
            Some(p) => Err(Error::Corrupt {
                path: self.path.clone(),
                line: p.line,
                message: p.message.clone(),
            }),
            None => Ok(()),
        }
    }

    /// The bindings in file order with their line numbers: `(alias, wwid, line)`.
    pub fn bindings(&self) -> impl Iterator<Item = (&str, &str, usize)> {
        self.lines.iter().enumerate().filter_map(|(i, l)| {
            l.binding
                .as_ref()
                .map(|(a, w)| (a.as_str(), w.as_str(), i + 1))
        })
    }

    /// The alias bound to `wwid`.
    pub fn alias_of(&self, wwid: &str) -> Option<&str> {
        self.bindings()
            .find(|(_, w, _)| *w == wwid)
            .map(|(a, _, _)| a)
    }

    /// The exact bytes of the file.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for l in &self.lines {
            out.push_str(&l.text);
            out.push_str(&l.ending);
        }
        out
    }

    /// Appends `alias wwid` (adding a newline to an unterminated last line first).
    pub fn push(&mut self, alias: &str, wwid: &str) {
        if let Some(last) = self.lines.last_mut()
            && last.ending.is_empty()
        {
            last.ending = "\n".to_string();
        }
        self.lines.push(RawLine {
            text: format!("{alias} {wwid}"),
            ending: "\n".to_string(),
            binding: Some((alias.to_string(), wwid.to_string())),
        });
    }

    /// Removes the line binding `wwid`; returns the alias it had.
    pub fn remove_wwid(&mut self, wwid: &str) -> Option<String> {
        let idx = self
            .lines
            .iter()
            .position(|l| l.binding.as_ref().is_some_and(|(_, w)| w == wwid))?;
        let l = self.lines.remove(idx);
        l.binding.map(|(a, _)| a)
    }

    /// Drops every problematic line (for `repair`); returns `(line, text, reason)` of each.
    pub fn drop_problem_lines(&mut self) -> Vec<(usize, String, String)> {
        let mut dropped = Vec::new();
        let bad: std::collections::BTreeMap<usize, String> = self
            .problems
            .iter()
            .map(|p| (p.line, p.message.clone()))
            .collect();
        let mut kept = Vec::new();
        for (i, l) in std::mem::take(&mut self.lines).into_iter().enumerate() {
            if let Some(reason) = bad.get(&(i + 1)) {
                dropped.push((i + 1, l.text, reason.clone()));
            } else {
                kept.push(l);
            }
        }
        self.lines = kept;
        self.problems.clear();
        dropped
    }
}

/// Renders bindings as a fresh multipath-tools bindings file (header plus `alias wwid` lines).
pub fn render_fresh<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = BINDINGS_HEADER.to_string();
    for (alias, wwid) in entries {
        out.push_str(alias);
        out.push(' ');
        out.push_str(wwid);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const REF: &str = include_str!("../../fixtures/ref-sd2x2-tcmloop2/bindings");

    #[test]
    fn reference_file_round_trips_byte_for_byte() {
        let f = BindingsFile::parse(REF, Path::new("bindings"));
        assert!(f.problems.is_empty(), "{:?}", f.problems);
        assert_eq!(f.render(), REF);
        let b: Vec<_> = f.bindings().map(|(a, w, _)| (a, w)).collect();
        assert_eq!(
            b,
            [
                ("mpatha", "1Linux_scsi_debug_2000"),
                ("mpathb", "1Linux_scsi_debug_2001"),
                ("mpathc", "360014055d1b3c7a0e2f4b8a9c612f3e4"),
            ]
        );
        // The header we write for new files is the one multipath-tools wrote.
        assert!(REF.starts_with(BINDINGS_HEADER));
        assert_eq!(
            render_fresh(b.iter().copied()),
            REF,
            "a freshly rendered file equals the reference"
        );
    }

    #[test]
    fn odd_but_valid_files_round_trip() {
        let text = "# my notes\r\nmpatha\t1abc   # trailing comment\n\n   \nmpathb 1def";
        let f = BindingsFile::parse(text, Path::new("b"));
        assert!(f.problems.is_empty(), "{:?}", f.problems);
        assert_eq!(f.render(), text);
        assert_eq!(f.alias_of("1def"), Some("mpathb"));
        let mut g = f.clone();
        g.push("mpathc", "1ghi");
        assert_eq!(g.render(), format!("{text}\nmpathc 1ghi\n"));
        assert_eq!(g.remove_wwid("1abc").as_deref(), Some("mpatha"));
        assert_eq!(
            g.render(),
            "# my notes\r\n\n   \nmpathb 1def\nmpathc 1ghi\n"
        );
    }

    #[test]
    fn a_new_file_gets_the_multipath_tools_header() {
        let mut f = BindingsFile::new_empty(Path::new("/nonexistent/bindings"));
        assert!(f.problems.is_empty());
        assert_eq!(f.bindings().count(), 0);
        f.push("mpatha", "1Linux_scsi_debug_2000");
        f.push("mpathb", "1Linux_scsi_debug_2001");
        f.push("mpathc", "360014055d1b3c7a0e2f4b8a9c612f3e4");
        assert_eq!(f.render(), REF);
    }

    proptest::proptest! {
        /// Whatever the bytes (valid or not), parse + render gives them back unchanged.
        #[test]
        fn any_text_round_trips(text in "([ -~]{0,30}(\r?\n)?){0,12}") {
            let f = BindingsFile::parse(&text, Path::new("b"));
            proptest::prop_assert_eq!(f.render(), text);
        }
    }

    #[test]
    fn problems_are_reported_with_lines() {
        let text = "mpatha 1a\nmpathb\nmpathc 1c extra\nmpatha 1d\nmpathe 1a\nbad/name 1f\n";
        let f = BindingsFile::parse(text, Path::new("/etc/multipath/bindings"));
        let lines: Vec<_> = f.problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, [2, 3, 4, 5, 6]);
        let e = f.ensure_valid().unwrap_err().to_string();
        assert!(
            e.contains("/etc/multipath/bindings") && e.contains("line 2"),
            "{e}"
        );
        let mut g = f.clone();
        let dropped = g.drop_problem_lines();
        assert_eq!(dropped.len(), 5);
        assert_eq!(g.render(), "mpatha 1a\n");
    }
}
