//! xl/xm domain configuration files (`xl.cfg(5)`) and their `disk = [ ... ]` entries
//! (`xl-disk-configuration(5)`), read the way xl reads them.
//!
//! The file is a list of `name = value` (or `name += value`) settings ended by a newline or `;`;
//! values are numbers, strings in single or double quotes (with C-like backslash escapes), or
//! `[ ... ]` lists that may span lines and end with a comma; `#` starts a comment outside a
//! string. A disk spec is comma-separated: `key=value` parameters, bare flags (`cdrom`,
//! `discard`, ...), and positional parameters filling `target, format, vdev, access` in that
//! order; `target=` takes the rest of the string, commas included. The xm-era forms are
//! accepted as xl accepts them: a target prefix (`phy:`, `file:`, `raw:`, `tap:aio:`, ...)
//! stands for the format (so the next positional is the vdev), `iscsi:`/`nbd:`/`drbd:` for
//! `script=block-...`, and `hdc:cdrom` for `vdev=hdc, devtype=cdrom`.

use std::collections::BTreeMap;

use super::{Access, DiskSpec};

/// A value of an xl configuration setting.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A quoted string (escapes resolved).
    Str(String),
    /// A bare number or word, as written.
    Atom(String),
    /// A list.
    List(Vec<Value>),
}

/// Parses an xl configuration file into its settings (`+=` appends to a list). Errors name the
/// line.
pub fn parse_cfg(text: &str) -> Result<BTreeMap<String, Value>, String> {
    let toks = lex(text)?;
    let mut out: BTreeMap<String, Value> = BTreeMap::new();
    let mut i = 0;
    while i < toks.len() {
        match &toks[i].tok {
            Tok::End => {
                i += 1;
                continue;
            }
            Tok::Ident(name) => {
                let line = toks[i].line;
                let append = match toks.get(i + 1).map(|t| &t.tok) {
                    Some(Tok::Eq) => false,
                    Some(Tok::PlusEq) => true,
                    _ => return Err(format!("line {line}: expected `=` after {name}")),
                };
                i += 2;
                let (v, next) = parse_value(&toks, i)?;
                i = next;
                match toks.get(i).map(|t| &t.tok) {
                    None | Some(Tok::End) => {}
                    Some(_) => {
                        return Err(format!(
                            "line {}: unexpected text after the value of {name}",
                            toks[i].line
                        ));
                    }
                }
                if append {
                    match (out.remove(name), v) {
                        (Some(Value::List(mut a)), Value::List(b)) => {
                            a.extend(b);
                            out.insert(name.clone(), Value::List(a));
                        }
                        (None, v) => {
                            out.insert(name.clone(), v);
                        }
                        _ => return Err(format!("line {line}: `+=` needs lists on both sides")),
                    }
                } else {
                    out.insert(name.clone(), v);
                }
            }
            _ => return Err(format!("line {}: expected a setting name", toks[i].line)),
        }
    }
    Ok(out)
}

fn parse_value(toks: &[Spanned], mut i: usize) -> Result<(Value, usize), String> {
    let Some(t) = toks.get(i) else {
        return Err("the file ends where a value was expected".into());
    };
    match &t.tok {
        Tok::Str(s) => Ok((Value::Str(s.clone()), i + 1)),
        Tok::Atom(s) | Tok::Ident(s) => Ok((Value::Atom(s.clone()), i + 1)),
        Tok::Open => {
            i += 1;
            let mut items = Vec::new();
            loop {
                // Newlines inside a list do not end anything.
                while matches!(toks.get(i).map(|t| &t.tok), Some(Tok::End)) {
                    i += 1;
                }
                match toks.get(i).map(|t| &t.tok) {
                    Some(Tok::Close) => return Ok((Value::List(items), i + 1)),
                    None => return Err(format!("line {}: the list is not closed", t.line)),
                    _ => {}
                }
                let (v, next) = parse_value(toks, i)?;
                items.push(v);
                i = next;
                while matches!(toks.get(i).map(|t| &t.tok), Some(Tok::End)) {
                    i += 1;
                }
                match toks.get(i).map(|t| &t.tok) {
                    Some(Tok::Comma) => i += 1,
                    Some(Tok::Close) => return Ok((Value::List(items), i + 1)),
                    None => return Err(format!("line {}: the list is not closed", t.line)),
                    _ => {
                        return Err(format!(
                            "line {}: expected `,` or `]` in the list",
                            toks.get(i).map_or(t.line, |t| t.line)
                        ));
                    }
                }
            }
        }
        _ => Err(format!("line {}: expected a value", t.line)),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Atom(String),
    Str(String),
    Eq,
    PlusEq,
    Open,
    Close,
    Comma,
    /// A newline or `;`.
    End,
}

#[derive(Debug)]
struct Spanned {
    tok: Tok,
    line: usize,
}

fn lex(text: &str) -> Result<Vec<Spanned>, String> {
    let mut out = Vec::new();
    let mut line = 1;
    let mut it = text.chars().peekable();
    while let Some(c) = it.next() {
        let tok = match c {
            '\n' => {
                let t = Spanned {
                    tok: Tok::End,
                    line,
                };
                line += 1;
                out.push(t);
                continue;
            }
            ' ' | '\t' | '\r' => continue,
            '#' => {
                while it.peek().is_some_and(|&c| c != '\n') {
                    it.next();
                }
                continue;
            }
            ';' => Tok::End,
            '=' => Tok::Eq,
            '+' if it.peek() == Some(&'=') => {
                it.next();
                Tok::PlusEq
            }
            '[' => Tok::Open,
            ']' => Tok::Close,
            ',' => Tok::Comma,
            '\'' | '"' => Tok::Str(string(c, &mut it, &mut line)?),
            c if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' => {
                let mut w = String::from(c);
                while let Some(&n) = it.peek() {
                    if n.is_ascii_alphanumeric() || n == '_' || n == '-' || n == '.' {
                        w.push(n);
                        it.next();
                    } else {
                        break;
                    }
                }
                if w.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                    && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    Tok::Ident(w)
                } else {
                    Tok::Atom(w)
                }
            }
            other => return Err(format!("line {line}: unexpected character {other:?}")),
        };
        out.push(Spanned { tok, line });
    }
    Ok(out)
}

fn string(
    quote: char,
    it: &mut std::iter::Peekable<std::str::Chars<'_>>,
    line: &mut usize,
) -> Result<String, String> {
    let start = *line;
    let mut s = String::new();
    loop {
        let Some(c) = it.next() else {
            return Err(format!("line {start}: the string is not closed"));
        };
        match c {
            c if c == quote => return Ok(s),
            '\n' => {
                return Err(format!(
                    "line {start}: the string is not closed on its line"
                ));
            }
            '\\' => {
                let Some(e) = it.next() else {
                    return Err(format!("line {start}: the string is not closed"));
                };
                match e {
                    'n' => s.push('\n'),
                    't' => s.push('\t'),
                    'r' => s.push('\r'),
                    'v' => s.push('\x0b'),
                    'f' => s.push('\x0c'),
                    'a' => s.push('\x07'),
                    'b' => s.push('\x08'),
                    'x' => {
                        let mut h = String::new();
                        while h.len() < 2 && it.peek().is_some_and(char::is_ascii_hexdigit) {
                            h.extend(it.next());
                        }
                        let v = u8::from_str_radix(&h, 16)
                            .map_err(|_| format!("line {start}: bad \\x escape"))?;
                        s.push(char::from(v));
                    }
                    '0'..='7' => {
                        let mut o = String::from(e);
                        while o.len() < 3 && it.peek().is_some_and(|c| ('0'..='7').contains(c)) {
                            o.extend(it.next());
                        }
                        let v = u8::from_str_radix(&o, 8)
                            .map_err(|_| format!("line {start}: bad octal escape"))?;
                        s.push(char::from(v));
                    }
                    other => s.push(other),
                }
            }
            c => s.push(c),
        }
    }
}

/// Target prefixes of the xm era that xl still accepts: each stands for the format (or the
/// backend), so a positional parameter after such a target is the vdev.
const FORMAT_PREFIXES: &[&str] = &["raw", "qcow", "qcow2", "vhd"];
const BACKEND_PREFIXES: &[&str] = &["phy", "file", "tap", "tap2", "tapdisk", "aio", "ioemu"];
const SCRIPT_PREFIXES: &[&str] = &["iscsi", "nbd", "enbd", "drbd"];
/// Bare flags xl knows.
const FLAGS: &[&str] = &[
    "discard",
    "no-discard",
    "direct-io-safe",
    "trusted",
    "untrusted",
    "colo",
];

/// Parses one disk spec. Errors say what is wrong with it.
pub fn parse_disk(spec: &str) -> Result<DiskSpec, String> {
    let mut d = DiskSpec {
        spec: spec.to_string(),
        ..DiskSpec::default()
    };
    let mut set: BTreeMap<&'static str, String> = BTreeMap::new();
    let mut positional = 0usize; // next of target, format, vdev, access
    let mut rest = spec;
    loop {
        let trimmed = rest.trim_start();
        if let Some(t) = trimmed.strip_prefix("target=") {
            put(&mut set, "target", t.to_string())?;
            break;
        }
        let (param, next) = match trimmed.split_once(',') {
            Some((p, n)) => (p, Some(n)),
            None => (trimmed, None),
        };
        let param = param.trim_end();
        if let Some((k, v)) = param.split_once('=') {
            let key: &'static str = match k {
                "format" => "format",
                "vdev" => "vdev",
                "access" => "access",
                "devtype" => "devtype",
                "script" => "script",
                "backendtype" => "backendtype",
                "backend" => "backend",
                "specification" => "specification",
                other => {
                    d.other.insert(other.to_string(), v.to_string());
                    rest = match next {
                        Some(n) => n,
                        None => break,
                    };
                    continue;
                }
            };
            put(&mut set, key, v.to_string())?;
        } else if param == "cdrom" {
            put(&mut set, "devtype", "cdrom".into())?;
        } else if FLAGS.contains(&param) {
            d.flags.push(param.to_string());
        } else if !(param.is_empty() && next.is_none() && positional > 0) {
            // A positional parameter (an empty one takes its slot with the default value).
            let mut value = param.to_string();
            while positional < 4
                && set.contains_key(["target", "format", "vdev", "access"][positional])
            {
                positional += 1;
            }
            match positional {
                0 => {
                    let (target, prefixed) = strip_prefixes(&value, &mut set, &mut d)?;
                    value = target;
                    put(&mut set, "target", value)?;
                    positional = if prefixed { 2 } else { 1 };
                    rest = match next {
                        Some(n) => n,
                        None => break,
                    };
                    continue;
                }
                1 => put(&mut set, "format", value)?,
                2 => {
                    // The legacy `vdev:devtype` form (and `vdev:w` of some xm files).
                    if let Some((v, t)) = value.clone().rsplit_once(':') {
                        match t {
                            "cdrom" | "disk" => {
                                put(&mut set, "devtype", t.to_string())?;
                                value = v.to_string();
                            }
                            "r" | "ro" | "w" | "rw" => {
                                put(&mut set, "access", t.to_string())?;
                                d.notes.push(format!(
                                    "`{}` gives the access after a colon, an xm-era form",
                                    param
                                ));
                                value = v.to_string();
                            }
                            _ => {}
                        }
                    }
                    put(&mut set, "vdev", value)?;
                }
                3 => put(&mut set, "access", value)?,
                _ => return Err(format!("too many positional parameters at {param:?}")),
            }
            positional += 1;
        }
        rest = match next {
            Some(n) => n,
            None => break,
        };
    }
    let nonempty = |k: &str| set.get(k).filter(|v| !v.is_empty()).cloned();
    d.target = nonempty("target");
    d.format = nonempty("format");
    d.vdev = nonempty("vdev");
    d.devtype = nonempty("devtype");
    d.script = nonempty("script").or(d.script.take());
    d.backendtype = nonempty("backendtype").or(d.backendtype.take());
    d.access = match nonempty("access").as_deref() {
        None if d.devtype.as_deref() == Some("cdrom") => Access::ReadOnly,
        None => Access::ReadWrite,
        Some("r" | "ro") => Access::ReadOnly,
        Some("w" | "rw") => Access::ReadWrite,
        Some(other) => return Err(format!("access {other:?} is not r, ro, w or rw")),
    };
    if d.vdev.is_none() {
        return Err("it names no guest device (vdev)".into());
    }
    Ok(d)
}

fn put(set: &mut BTreeMap<&'static str, String>, k: &'static str, v: String) -> Result<(), String> {
    if set.insert(k, v).is_some() {
        return Err(format!("{k} is given twice"));
    }
    Ok(())
}

/// Strips xm-era prefixes from a positional target; true when there was one.
fn strip_prefixes(
    target: &str,
    set: &mut BTreeMap<&'static str, String>,
    d: &mut DiskSpec,
) -> Result<(String, bool), String> {
    let mut t = target;
    let mut any = false;
    while let Some((p, rest)) = t.split_once(':') {
        if FORMAT_PREFIXES.contains(&p) {
            put(set, "format", p.to_string())?;
        } else if BACKEND_PREFIXES.contains(&p) {
            if p == "phy" {
                d.backendtype = Some("phy".into());
            }
        } else if SCRIPT_PREFIXES.contains(&p) {
            d.script = Some(format!("block-{p}"));
        } else {
            break;
        }
        d.notes
            .push(format!("the `{p}:` prefix is deprecated in xl"));
        any = true;
        t = rest;
    }
    Ok((t.to_string(), any))
}

/// The disks of an xl configuration file, with the domain's name.
pub fn disks(text: &str) -> Result<(Option<String>, Vec<DiskSpec>), String> {
    let cfg = parse_cfg(text)?;
    let name = match cfg.get("name") {
        Some(Value::Str(s) | Value::Atom(s)) => Some(s.clone()),
        _ => None,
    };
    let list = match cfg.get("disk") {
        None => Vec::new(),
        Some(Value::List(l)) => l.clone(),
        Some(_) => return Err("`disk` is not a list".into()),
    };
    let mut out = Vec::new();
    for (i, v) in list.iter().enumerate() {
        let Value::Str(s) = v else {
            return Err(format!("disk entry {} is not a string", i + 1));
        };
        out.push(parse_disk(s).map_err(|e| format!("disk entry {} ({s:?}): {e}", i + 1))?);
    }
    Ok((name, out))
}
