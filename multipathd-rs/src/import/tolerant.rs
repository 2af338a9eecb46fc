//! Reading admins' multipath.conf files as leniently as multipath-tools does, before the
//! workspace's one multipath.conf parser (`aliases::mpconf`, which is strict) sees them.
//!
//! multipath-tools accepts, with at most a log line, things that real files contain: CRLF line
//! endings, no final newline, a last section left open at the end of the file, extra data after
//! a value (XenServer ships `"value",` with a comma), a keyword without a value, a stray `}`.
//! This pass rewrites each line into the strict grammar *on the same line number* (so every
//! origin and report still points at the admin's line), and says what it tolerated. Learned
//! from multipath.conf(5) and observed behaviour, not from multipath-tools' code.

use aliases::mpconf::quote_value;

/// Something the lenient pass accepted that the strict grammar does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tolerated {
    /// 1-based line.
    pub line: usize,
    /// What was accepted and how it was read.
    pub what: String,
}

#[derive(Debug, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
    Open,
    Close,
}

/// Splits one line into tokens; a `#` or `!` outside quotes ends it. Errors describe why the
/// line cannot be read at all.
fn lex(line: &str) -> Result<Vec<Tok>, String> {
    let mut toks = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '#' | '!' => break,
            '{' => {
                chars.next();
                toks.push(Tok::Open);
            }
            '}' => {
                chars.next();
                toks.push(Tok::Close);
            }
            '"' => {
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
                    return Err("a double-quoted string is never closed".into());
                }
                toks.push(Tok::Quoted(s));
            }
            _ => {
                let mut s = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || matches!(c, '#' | '!' | '{' | '}' | '"') {
                        break;
                    }
                    s.push(c);
                    chars.next();
                }
                toks.push(Tok::Word(s));
            }
        }
    }
    Ok(toks)
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Word(w) => format!("{w:?}"),
        Tok::Quoted(q) => format!("\"{q}\""),
        Tok::Open => "'{'".into(),
        Tok::Close => "'}'".into(),
    }
}

fn rest_text(rest: &[Tok]) -> String {
    rest.iter().map(describe).collect::<Vec<_>>().join(" ")
}

/// Rewrites `text` into the strict grammar, line for line, and lists what it tolerated.
/// The result has exactly as many lines as the input, plus one `}` line per section left
/// open at the end.
pub fn normalize(text: &str) -> (String, Vec<Tolerated>) {
    let mut out = String::with_capacity(text.len() + 16);
    let mut notes = Vec::new();
    let mut depth = 0usize;
    let mut crlf = 0usize;
    let mut lines = 0usize;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (idx, raw) in text.split_inclusive('\n').enumerate() {
        let lineno = idx + 1;
        lines = lineno;
        let body = raw.strip_suffix('\n').unwrap_or(raw);
        let body = match body.strip_suffix('\r') {
            Some(b) => {
                crlf += 1;
                b
            }
            None => body,
        };
        let mut note = |what: String| notes.push(Tolerated { line: lineno, what });
        let toks = match lex(body) {
            Ok(t) => t,
            Err(why) => {
                note(format!(
                    "{why}; the line is ignored, as multipath-tools does"
                ));
                out.push('\n');
                continue;
            }
        };
        match toks.as_slice() {
            [] => {}
            [Tok::Word(name), Tok::Open, Tok::Close] => {
                out.push_str(&format!("{name} {{ }}"));
            }
            [Tok::Word(name), Tok::Open, rest @ ..] => {
                if !rest.is_empty() {
                    note(format!(
                        "{} after `{name} {{` is ignored, as multipath-tools does",
                        rest_text(rest)
                    ));
                }
                depth += 1;
                out.push_str(&format!("{name} {{"));
            }
            [Tok::Close, rest @ ..] => {
                if depth == 0 {
                    note("'}' closes no open section; it is ignored".into());
                } else {
                    if !rest.is_empty() {
                        note(format!(
                            "{} after '}}' is ignored, as multipath-tools does",
                            rest_text(rest)
                        ));
                    }
                    depth -= 1;
                    out.push('}');
                }
            }
            [Tok::Word(key), Tok::Word(v) | Tok::Quoted(v), rest @ ..] => {
                if depth == 0 {
                    note(format!(
                        "{key:?} is outside of any section; it is ignored, as multipath-tools does"
                    ));
                } else {
                    if !rest.is_empty() {
                        note(format!(
                            "{} after the value of {key:?} is ignored, as multipath-tools does",
                            rest_text(rest)
                        ));
                    }
                    out.push_str(key);
                    out.push(' ');
                    out.push_str(&quote_value(v));
                }
            }
            [Tok::Word(key)] => {
                note(format!(
                    "{key:?} has no value; it is ignored, as multipath-tools does"
                ));
            }
            [first, ..] => {
                note(format!(
                    "a line starting with {} is not a keyword; it is ignored, as multipath-tools does",
                    describe(first)
                ));
            }
        }
        out.push('\n');
    }
    if crlf > 0 {
        notes.push(Tolerated {
            line: 1,
            what: format!("{crlf} lines end in CRLF (read as plain line ends)"),
        });
    }
    if depth > 0 {
        notes.push(Tolerated {
            line: lines.max(1),
            what: format!(
                "{depth} section(s) still open at the end of the file are closed there, as multipath-tools does"
            ),
        });
        for _ in 0..depth {
            out.push_str("}\n");
        }
    }
    (out, notes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> (aliases::mpconf::ConfFile, Vec<Tolerated>) {
        let (t, n) = normalize(text);
        (
            aliases::mpconf::parse_str(&t, Path::new("t.conf")).unwrap(),
            n,
        )
    }

    #[test]
    fn what_the_strict_parser_rejects_is_read_on_the_same_lines() {
        // Each of these is an error for the strict parser.
        for bad in [
            "defaults {\n a 1\n",
            "devices {\n device {\n  vendor \"DGC\",\n }\n}\n",
            "defaults {\n a\n}\n",
            "defaults {\n a 1 2\n}\n}\n",
        ] {
            assert!(
                aliases::mpconf::parse_str(bad, Path::new("t")).is_err(),
                "{bad}"
            );
            parse(bad);
        }
        let (f, n) = parse(
            "defaults {\r\n\tuser_friendly_names \"no\",\r\n\tlonely\r\n}\r\n}\r\ndevices {\r\n\tdevice {\r\n\t\tvendor \"DGC\" , # c\r\n\t\tproduct \"a \"\"b\"\"\"",
        );
        assert_eq!(
            f.sections[0].get_with_line("user_friendly_names"),
            Some(("no", 2))
        );
        assert_eq!(f.sections[0].items.len(), 1);
        let d = f.sections[1].subsections("device").next().unwrap();
        assert_eq!(d.get_with_line("vendor"), Some(("DGC", 8)));
        assert_eq!(d.get_with_line("product"), Some(("a \"b\"", 9)));
        let lines: Vec<usize> = n.iter().map(|t| t.line).collect();
        assert_eq!(lines, vec![2, 3, 5, 8, 1, 9], "{n:#?}");
    }

    #[test]
    fn valid_files_are_unchanged_in_meaning() {
        let text = "defaults {\n user_friendly_names yes # c\n}\nblacklist { }\n";
        let (f, n) = parse(text);
        assert!(n.is_empty());
        assert_eq!(
            f,
            aliases::mpconf::parse_str(text, Path::new("t.conf")).unwrap()
        );
    }
}
