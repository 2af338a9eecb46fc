//! A generic parser for multipath.conf(5) and its `conf.d/*.conf` drop-ins.
//!
//! The grammar follows the man page of multipath-tools:
//! - `#` and `!` start a comment that runs to the end of the line (outside quoted strings);
//! - a section opens with `name {` (the brace on the same line as the name) and closes with a
//!   line holding only `}`; `name { }` on one line is an empty section;
//! - an attribute is `key value` on one line; the value is either a simple word (no whitespace,
//!   no `"`, `#` or `!`) or one double-quoted string in which whitespace, `#` and `!` are kept and
//!   `""` stands for one `"` (so `"2.5"" SSD"` is `2.5" SSD`);
//! - top-level entries must be sections.
//!
//! Everything else (a `}` without an open section, a section left open at the end of the file,
//! extra words after a value, a key without a value, an unterminated quote) is an error that names
//! the file and line. The parser knows no keywords: it returns the tree, and callers (aliases
//! reading `multipaths`, the daemon's `config import`) interpret it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::Error;

/// One parsed configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfFile {
    /// Where it was read from (or the name given to [`parse_str`]).
    pub path: PathBuf,
    /// Top-level sections in file order (`defaults`, `blacklist`, `multipaths`, ...).
    pub sections: Vec<Section>,
}

/// A section `name { ... }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The section keyword.
    pub name: String,
    /// 1-based line of the `name {` line.
    pub line: usize,
    /// Attributes and subsections in file order.
    pub items: Vec<Item>,
}

/// One entry of a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// `key value`; `value` has quotes removed and `""` unescaped.
    KeyValue {
        /// The attribute keyword.
        key: String,
        /// The value, unquoted.
        value: String,
        /// 1-based line.
        line: usize,
    },
    /// A nested section.
    Section(Section),
}

impl ConfFile {
    /// Top-level sections with this name, in file order.
    pub fn sections_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Section> + 'a {
        self.sections.iter().filter(move |s| s.name == name)
    }

    /// Renders the file back in multipath.conf syntax (comments are not kept).
    pub fn render(&self) -> String {
        let mut out = String::new();
        for s in &self.sections {
            s.render_into(&mut out, 0);
        }
        out
    }
}

impl Section {
    /// The value of the last `key` attribute directly in this section (later ones win, as in
    /// multipath-tools).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.key_values()
            .filter(|(k, _, _)| *k == key)
            .last()
            .map(|(_, v, _)| v)
    }

    /// The attribute `key`'s value and line (last occurrence).
    pub fn get_with_line(&self, key: &str) -> Option<(&str, usize)> {
        self.key_values()
            .filter(|(k, _, _)| *k == key)
            .last()
            .map(|(_, v, l)| (v, l))
    }

    /// All `(key, value, line)` attributes directly in this section.
    pub fn key_values(&self) -> impl Iterator<Item = (&str, &str, usize)> {
        self.items.iter().filter_map(|i| match i {
            Item::KeyValue { key, value, line } => Some((key.as_str(), value.as_str(), *line)),
            Item::Section(_) => None,
        })
    }

    /// Direct subsections with this name.
    pub fn subsections<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Section> + 'a {
        self.items.iter().filter_map(move |i| match i {
            Item::Section(s) if s.name == name => Some(s),
            _ => None,
        })
    }

    /// Renders this section in multipath.conf syntax, indented with tabs.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_into(&mut out, 0);
        out
    }

    fn render_into(&self, out: &mut String, depth: usize) {
        let indent = "\t".repeat(depth);
        let _ = writeln!(out, "{indent}{} {{", self.name);
        for item in &self.items {
            match item {
                Item::KeyValue { key, value, .. } => {
                    let _ = writeln!(out, "{indent}\t{key} {}", quote_value(value));
                }
                Item::Section(s) => s.render_into(out, depth + 1),
            }
        }
        let _ = writeln!(out, "{indent}}}");
    }
}

/// Quotes a value for multipath.conf if it is not a simple word (`""` escapes `"`).
pub fn quote_value(value: &str) -> String {
    let simple = !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '"' | '#' | '!' | '{' | '}'));
    if simple {
        value.to_string()
    } else {
        format!("\"{}\"", value.replace('"', "\"\""))
    }
}

#[derive(Debug, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
    Open,
    Close,
}

fn tokenize(line: &str, path: &Path, lineno: usize) -> Result<Vec<Tok>, Error> {
    let mut toks = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '#' || c == '!' {
            break;
        } else if c == '{' {
            chars.next();
            toks.push(Tok::Open);
        } else if c == '}' {
            chars.next();
            toks.push(Tok::Close);
        } else if c == '"' {
            chars.next();
            let mut s = String::new();
            let mut closed = false;
            while let Some(c) = chars.next() {
                if c == '"' {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        s.push('"');
                    } else {
                        closed = true;
                        break;
                    }
                } else {
                    s.push(c);
                }
            }
            if !closed {
                return Err(Error::parse(
                    path,
                    lineno,
                    "unterminated double-quoted string",
                ));
            }
            if let Some(&n) = chars.peek()
                && !n.is_whitespace()
                && !matches!(n, '#' | '!' | '{' | '}')
            {
                return Err(Error::parse(
                    path,
                    lineno,
                    format!("unexpected character {n:?} right after a quoted string"),
                ));
            }
            toks.push(Tok::Quoted(s));
        } else {
            let mut s = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || matches!(c, '#' | '!' | '{' | '}') {
                    break;
                }
                if c == '"' {
                    return Err(Error::parse(
                        path,
                        lineno,
                        format!("unexpected '\"' inside the word {s:?}; quote the whole value"),
                    ));
                }
                s.push(c);
                chars.next();
            }
            toks.push(Tok::Word(s));
        }
    }
    Ok(toks)
}

/// Parses multipath.conf text; `path` is used in error messages and stored in the result.
pub fn parse_str(text: &str, path: &Path) -> Result<ConfFile, Error> {
    // Stack of open sections; the bottom is a pseudo root holding the top-level sections.
    let mut stack: Vec<Section> = vec![Section {
        name: String::new(),
        line: 0,
        items: Vec::new(),
    }];
    for (idx, raw) in text.lines().enumerate() {
        let lineno = idx + 1;
        let toks = tokenize(raw, path, lineno)?;
        let mut rest: &[Tok] = &toks;
        if rest.is_empty() {
            continue;
        }
        // `name {` possibly followed by `}` (empty section on one line).
        if let [Tok::Word(name), Tok::Open, tail @ ..] = rest {
            stack.push(Section {
                name: name.clone(),
                line: lineno,
                items: Vec::new(),
            });
            rest = tail;
            match rest {
                [] => continue,
                [Tok::Close] => {}
                _ => {
                    return Err(Error::parse(
                        path,
                        lineno,
                        format!(
                            "unexpected text after `{name} {{`; put each attribute on its own line"
                        ),
                    ));
                }
            }
        }
        match rest {
            [Tok::Close] => {
                if stack.len() <= 1 {
                    return Err(Error::parse(
                        path,
                        lineno,
                        "unbalanced '}': no section is open",
                    ));
                }
                if let Some(done) = stack.pop()
                    && let Some(parent) = stack.last_mut()
                {
                    parent.items.push(Item::Section(done));
                }
            }
            [Tok::Word(key), Tok::Word(v) | Tok::Quoted(v)] => {
                if stack.len() <= 1 {
                    return Err(Error::parse(
                        path,
                        lineno,
                        format!("attribute {key:?} outside of any section"),
                    ));
                }
                if let Some(cur) = stack.last_mut() {
                    cur.items.push(Item::KeyValue {
                        key: key.clone(),
                        value: v.clone(),
                        line: lineno,
                    });
                }
            }
            [Tok::Word(key)] => {
                return Err(Error::parse(
                    path,
                    lineno,
                    format!("{key:?} has no value and is not followed by '{{'"),
                ));
            }
            [Tok::Word(key), Tok::Word(_) | Tok::Quoted(_), extra, ..] => {
                return Err(Error::parse(
                    path,
                    lineno,
                    format!(
                        "stray token {} after the value of {key:?} (quote values that contain spaces)",
                        describe(extra)
                    ),
                ));
            }
            [Tok::Word(_), Tok::Close, ..] | [Tok::Close, ..] => {
                return Err(Error::parse(path, lineno, "'}' must be alone on its line"));
            }
            [first, ..] => {
                return Err(Error::parse(
                    path,
                    lineno,
                    format!("unexpected {} at the start of a line", describe(first)),
                ));
            }
            [] => {}
        }
    }
    if stack.len() > 1 {
        let open = stack
            .last()
            .map(|s| (s.name.clone(), s.line))
            .unwrap_or_default();
        return Err(Error::parse(
            path,
            open.1,
            format!("section {:?} opened here is never closed", open.0),
        ));
    }
    let root = stack.pop().map(|s| s.items).unwrap_or_default();
    let sections = root
        .into_iter()
        .filter_map(|i| match i {
            Item::Section(s) => Some(s),
            Item::KeyValue { .. } => None,
        })
        .collect();
    Ok(ConfFile {
        path: path.to_path_buf(),
        sections,
    })
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Word(w) => format!("{w:?}"),
        Tok::Quoted(q) => format!("quoted string {q:?}"),
        Tok::Open => "'{'".to_string(),
        Tok::Close => "'}'".to_string(),
    }
}

/// Reads and parses one file. Invalid UTF-8 is an error naming the line.
pub fn parse_file(path: &Path) -> Result<ConfFile, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let upto = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..upto].iter().filter(|b| **b == b'\n').count() + 1;
        Error::parse(path, line, "the file is not valid UTF-8")
    })?;
    parse_str(&text, path)
}

/// The main file plus every `*.conf` in `conf_dir` (sorted by name), as multipath-tools reads
/// them. A missing main file or a missing conf_dir is not an error (multipath-tools runs with
/// neither); a file that exists but cannot be read or parsed is.
pub fn load_with_conf_d(main: &Path, conf_dir: Option<&Path>) -> Result<Vec<ConfFile>, Error> {
    let mut out = Vec::new();
    match std::fs::metadata(main) {
        Ok(_) => out.push(parse_file(main)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("read", main, e)),
    }
    if let Some(dir) = conf_dir {
        for p in conf_d_files(dir)? {
            out.push(parse_file(&p)?);
        }
    }
    Ok(out)
}

/// The `*.conf` regular files (or symlinks to them) of a drop-in directory, sorted by name.
pub fn conf_d_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", dir, e)),
    };
    let mut files = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| Error::io("list", dir, e))?;
        let p = ent.path();
        let is_conf = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".conf") && n.len() > ".conf".len());
        if is_conf && p.is_file() {
            files.push(p);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("/etc/multipath.conf")
    }

    #[test]
    fn parses_all_top_level_sections() {
        let text = r#"# comment
defaults {
	user_friendly_names yes   # trailing
	find_multipaths no ! bang comment
	polling_interval 5
}
blacklist {
	devnode "^(ram|raw|loop|fd|md|dm-|sr|scd|st)[0-9]*"
	device {
		vendor "IBM"
		product "3S42"
	}
}
blacklist_exceptions {
	wwid "3600508b4000156d70001200000b0000"
}
devices {
	device {
		vendor "COMPELNT"
		product "Compellent Vol"
		features "1 queue_if_no_path"
	}
}
multipaths {
	multipath {
		wwid 3600508b4000156d700012000000b0000
		alias yellow
	}
}
overrides {
	no_path_retry fail
}
"#;
        let f = parse_str(text, p()).unwrap();
        let names: Vec<_> = f.sections.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "defaults",
                "blacklist",
                "blacklist_exceptions",
                "devices",
                "multipaths",
                "overrides"
            ]
        );
        assert_eq!(f.sections[0].get("user_friendly_names"), Some("yes"));
        assert_eq!(f.sections[0].get("find_multipaths"), Some("no"));
        assert_eq!(f.sections[0].line, 2);
        let bl = &f.sections[1];
        assert_eq!(
            bl.get("devnode"),
            Some("^(ram|raw|loop|fd|md|dm-|sr|scd|st)[0-9]*")
        );
        let dev = bl.subsections("device").next().unwrap();
        assert_eq!(dev.get("product"), Some("3S42"));
        let devices = &f.sections[3];
        let d = devices.subsections("device").next().unwrap();
        assert_eq!(d.get("product"), Some("Compellent Vol"));
        assert_eq!(d.get("features"), Some("1 queue_if_no_path"));
        let mp = f.sections[4].subsections("multipath").next().unwrap();
        assert_eq!(mp.get("alias"), Some("yellow"));
        assert_eq!(mp.get_with_line("wwid").map(|x| x.1), Some(26));
    }

    #[test]
    fn quotes_keep_spaces_comment_chars_and_doubled_quotes() {
        let text = "devices {\n device {\n  product \"2.5\"\" SSD # not ! a comment\"\n  vendor \"\"\n }\n}\n";
        let f = parse_str(text, p()).unwrap();
        let d = f.sections[0].subsections("device").next().unwrap();
        assert_eq!(d.get("product"), Some("2.5\" SSD # not ! a comment"));
        assert_eq!(d.get("vendor"), Some(""));
    }

    #[test]
    fn empty_section_on_one_line_and_close_with_comment() {
        let f = parse_str("defaults { }\nblacklist {\n} # done\n", p()).unwrap();
        assert_eq!(f.sections.len(), 2);
        assert!(f.sections[0].items.is_empty());
        assert!(f.sections[1].items.is_empty());
    }

    #[test]
    fn later_value_wins() {
        let f = parse_str("defaults {\n a 1\n a 2\n}\n", p()).unwrap();
        assert_eq!(f.sections[0].get("a"), Some("2"));
    }

    fn err_line(text: &str) -> (usize, String) {
        match parse_str(text, p()) {
            Err(Error::Parse {
                line,
                message,
                path,
            }) => {
                assert_eq!(path, p());
                (line, message)
            }
            other => panic!("expected parse error, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(err_line("defaults {\n}\n}\n").0, 3);
        let (l, m) = err_line("defaults {\n a 1\nmultipaths {\n");
        assert_eq!(l, 3);
        assert!(m.contains("never closed"), "{m}");
        let (l, m) = err_line("defaults {\n features 1 queue_if_no_path\n}\n");
        assert_eq!(l, 2);
        assert!(m.contains("stray token"), "{m}");
        assert_eq!(err_line("defaults {\n a \"open\n}\n").0, 2);
        assert_eq!(err_line("a b\n").0, 1);
        assert_eq!(err_line("defaults {\n lonely\n}\n").0, 2);
        assert_eq!(err_line("defaults {\n a b }\n").0, 2);
        assert_eq!(err_line("defaults {\n a b\"c\"\n}\n").0, 2);
        assert_eq!(err_line("{\n}\n").0, 1);
    }

    #[test]
    fn render_round_trips() {
        let text = "devices {\n device {\n  product \"2.5\"\" SSD\"\n  vendor X\n }\n}\nmultipaths {\n multipath {\n  wwid 36001\n  alias \"a b\"\n }\n}\n";
        let f = parse_str(text, p()).unwrap();
        let again = parse_str(&f.render(), p()).unwrap();
        // Lines differ only if layout differs; compare the trees without lines.
        fn strip(s: &Section) -> Section {
            Section {
                name: s.name.clone(),
                line: 0,
                items: s
                    .items
                    .iter()
                    .map(|i| match i {
                        Item::KeyValue { key, value, .. } => Item::KeyValue {
                            key: key.clone(),
                            value: value.clone(),
                            line: 0,
                        },
                        Item::Section(s) => Item::Section(strip(s)),
                    })
                    .collect(),
            }
        }
        let a: Vec<_> = f.sections.iter().map(strip).collect();
        let b: Vec<_> = again.sections.iter().map(strip).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn conf_d_is_read_sorted_after_main() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("multipath.conf");
        std::fs::write(&main, "defaults {\n a 1\n}\n").unwrap();
        let confd = dir.path().join("conf.d");
        std::fs::create_dir(&confd).unwrap();
        std::fs::write(confd.join("b.conf"), "defaults {\n a 3\n}\n").unwrap();
        std::fs::write(confd.join("a.conf"), "defaults {\n a 2\n}\n").unwrap();
        std::fs::write(confd.join("ignored.txt"), "garbage {{{").unwrap();
        let files = load_with_conf_d(&main, Some(&confd)).unwrap();
        let vals: Vec<_> = files
            .iter()
            .map(|f| f.sections[0].get("a").unwrap().to_string())
            .collect();
        assert_eq!(vals, ["1", "2", "3"]);
        assert_eq!(files[1].path, confd.join("a.conf"));
        // Missing main file and missing dir are fine.
        let none =
            load_with_conf_d(&dir.path().join("nope"), Some(&dir.path().join("nodir"))).unwrap();
        assert!(none.is_empty());
        // A broken drop-in is an error naming it.
        std::fs::write(confd.join("c.conf"), "defaults {\n").unwrap();
        let e = load_with_conf_d(&main, Some(&confd)).unwrap_err();
        assert!(e.to_string().contains("c.conf:1"), "{e}");
    }

    #[test]
    fn invalid_utf8_is_an_error_with_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.conf");
        std::fs::write(&f, b"defaults {\n a \xff\n}\n").unwrap();
        match parse_file(&f) {
            Err(Error::Parse { line, .. }) => assert_eq!(line, 2),
            other => panic!("{other:?}"),
        }
    }

    proptest::proptest! {
        #[test]
        fn quoted_values_round_trip(v in "[ -~\t]{0,40}") {
            let text = format!("defaults {{\n k {}\n}}\n", quote_value(&v));
            let f = parse_str(&text, p()).unwrap();
            // Leading/trailing tabs inside quotes are preserved as well.
            proptest::prop_assert_eq!(f.sections[0].get("k"), Some(v.as_str()));
        }
    }
}
