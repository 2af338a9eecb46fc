//! multipath-tools' bindings file (`/etc/multipath/bindings`), read and written so that an
//! unchanged file round-trips byte for byte.
//!
//! Format (as multipath-tools writes it): a header of `#` comment lines, then one `alias wwid`
//! line per binding. On each line everything from `#` on is a comment; fields are separated by
//! spaces or tabs. The file is kept as a list of raw lines; comments, blank lines and the
//! original line endings are preserved, new bindings are appended at the end (as
//! multipath-tools 0.9.4 does), removed bindings lose just their line.
//!
//! As multipath-tools does, a malformed line, a line with extra fields or bytes that are not
//! UTF-8, an invalid alias or WWID, or a duplicated alias or WWID is skipped: it is listed in
//! `problems` with its line, kept byte for byte, and dropped only by `repair`.

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
    /// The line's exact bytes when they are not valid UTF-8 (`text` is then a lossy copy);
    /// such a line is a problem, kept as it is.
    pub raw: Option<Vec<u8>>,
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
        Self::parse_bytes(text.as_bytes(), path)
    }

    /// Parses the file's bytes; never fails. A line that is not valid UTF-8 is a problem and
    /// is kept byte for byte.
    pub fn parse_bytes(bytes: &[u8], path: &Path) -> Self {
        let mut lines = Vec::new();
        let mut problems = Vec::new();
        let mut seen_alias: std::collections::HashMap<String, usize> = Default::default();
        let mut seen_wwid: std::collections::HashMap<String, usize> = Default::default();
        let mut rest = bytes;
        let mut lineno = 0;
        while !rest.is_empty() {
            lineno += 1;
            let (line, ending, next): (&[u8], &str, &[u8]) =
                match rest.iter().position(|b| *b == b'\n') {
                    Some(i) => {
                        let l = &rest[..i];
                        if let Some(stripped) = l.strip_suffix(b"\r") {
                            (stripped, "\r\n", &rest[i + 1..])
                        } else {
                            (l, "\n", &rest[i + 1..])
                        }
                    }
                    None => (rest, "", &[]),
                };
            rest = next;
            let line = match std::str::from_utf8(line) {
                Ok(l) => l,
                Err(_) => {
                    problems.push(LineProblem {
                        line: lineno,
                        message: "the line is not valid UTF-8".to_string(),
                    });
                    lines.push(RawLine {
                        text: String::from_utf8_lossy(line).into_owned(),
                        ending: ending.to_string(),
                        binding: None,
                        raw: Some(line.to_vec()),
                    });
                    continue;
                }
            };
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
                raw: None,
            });
        }
        BindingsFile {
            path: path.to_path_buf(),
            lines,
            problems,
        }
    }

    /// Reads a file (through a symlink); a missing or empty file is an empty one (multipath-tools
    /// writes the header into an empty file too). An interrupted in-place change (see
    /// [`crate::fsutil::LockedFile::replace`]) is finished in memory. Never fails on content:
    /// bad lines are listed in `problems`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(Self::from_disk(&bytes, path)?.0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::new_empty(path)),
            Err(e) => Err(Error::io("read", path, e)),
        }
    }

    /// Parses `current`, the file's bytes read under its lock, after finishing an interrupted
    /// in-place change; the flag says whether one was found (the caller that holds the lock
    /// should then write the result).
    pub fn from_disk(current: &[u8], path: &Path) -> Result<(Self, bool), Error> {
        let (bytes, recovered) = match crate::fsutil::pending_journal(path)? {
            Some((old, new)) => (crate::fsutil::recover(current, &old, &new), true),
            None => (current.to_vec(), false),
        };
        let f = if bytes.is_empty() {
            Self::new_empty(path)
        } else {
            Self::parse_bytes(&bytes, path)
        };
        Ok((f, recovered))
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

    /// The file's text (lines that are not valid UTF-8 lossily; see [`Self::render_bytes`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        for l in &self.lines {
            out.push_str(&l.text);
            out.push_str(&l.ending);
        }
        out
    }

    /// The exact bytes of the file.
    pub fn render_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for l in &self.lines {
            match &l.raw {
                Some(r) => out.extend_from_slice(r),
                None => out.extend_from_slice(l.text.as_bytes()),
            }
            out.extend_from_slice(l.ending.as_bytes());
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
            raw: None,
        });
    }

    /// Removes every line that names `wwid` (its binding and any later line binding it again,
    /// which would otherwise take its place at the next read); returns the alias it had.
    pub fn remove_wwid(&mut self, wwid: &str) -> Option<String> {
        let alias = self.alias_of(wwid).map(str::to_string)?;
        let names_it = |l: &RawLine| {
            l.raw.is_none()
                && l.text
                    .split('#')
                    .next()
                    .unwrap_or("")
                    .split([' ', '\t'])
                    .filter(|f| !f.is_empty())
                    .nth(1)
                    == Some(wwid)
        };
        // Keep the line numbers of the remaining problems right.
        let mut kept = Vec::new();
        let mut renumber = Vec::new();
        for l in std::mem::take(&mut self.lines) {
            if names_it(&l) {
                renumber.push(None);
            } else {
                kept.push(l);
                renumber.push(Some(kept.len()));
            }
        }
        self.lines = kept;
        self.problems
            .retain_mut(|p| match renumber.get(p.line - 1) {
                Some(Some(n)) => {
                    p.line = *n;
                    true
                }
                _ => false,
            });
        Some(alias)
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
