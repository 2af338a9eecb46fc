//! A cursor over the whitespace-separated tokens of one line, producing errors that name the
//! token and its (1-based) position.

use std::str::FromStr;

use crate::devno::DevNo;
use crate::error::{Error, Result};
use crate::words::{Word, Words, word, words};

/// Splits off an optional leading `name: ` as printed by `dmsetup table`/`dmsetup status`.
/// Returns (name, rest).
pub fn split_name_prefix(line: &str) -> (Option<&str>, &str) {
    let trimmed = line.trim_start();
    if let Some(first) = trimmed.split_ascii_whitespace().next()
        && let Some(name) = first.strip_suffix(':')
        && !name.is_empty()
    {
        return (Some(name), &trimmed[first.len()..]);
    }
    (None, line)
}

pub(crate) struct Tokens<'a> {
    toks: Vec<&'a str>,
    pos: usize,
}

impl<'a> Tokens<'a> {
    pub(crate) fn new(line: &'a str) -> Self {
        Tokens {
            toks: line.split_ascii_whitespace().collect(),
            pos: 0,
        }
    }

    /// Error about the token at the cursor (or end of line).
    pub(crate) fn err_here(&self, expected: impl Into<String>) -> Error {
        self.err_at(self.pos, expected)
    }

    pub(crate) fn err_at(&self, pos: usize, expected: impl Into<String>) -> Error {
        Error::Parse {
            index: pos + 1,
            token: self.toks.get(pos).map(|t| (*t).to_string()),
            expected: expected.into(),
        }
    }

    pub(crate) fn next(&mut self, expected: &str) -> Result<&'a str> {
        match self.toks.get(self.pos) {
            Some(t) => {
                self.pos += 1;
                Ok(t)
            }
            None => Err(self.err_here(format!("expected {expected}"))),
        }
    }

    pub(crate) fn number<T: FromStr>(&mut self, expected: &str) -> Result<T> {
        let pos = self.pos;
        let t = self.next(expected)?;
        if !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.err_at(pos, format!("expected {expected}")));
        }
        t.parse()
            .map_err(|_| self.err_at(pos, format!("expected {expected} (number out of range)")))
    }

    /// A count that is followed by that many tokens: refuses counts larger than what is left,
    /// so a corrupt count can never make us allocate or loop wildly.
    pub(crate) fn count(&mut self, expected: &str, per_item: usize) -> Result<usize> {
        let pos = self.pos;
        let n: usize = self.number(expected)?;
        let left = self.toks.len() - self.pos;
        if n.saturating_mul(per_item.max(1)) > left {
            return Err(self.err_at(
                pos,
                format!("{expected} is {n}, but only {left} token(s) follow"),
            ));
        }
        Ok(n)
    }

    pub(crate) fn devno(&mut self, expected: &str) -> Result<DevNo> {
        let pos = self.pos;
        let t = self.next(expected)?;
        t.parse()
            .map_err(|_| self.err_at(pos, format!("expected {expected}")))
    }

    /// The next `n` tokens as a compact list ([`crate::words`]).
    pub(crate) fn words(&mut self, n: usize, expected: &str) -> Result<Words> {
        // Never more room than tokens are left: a corrupt count must not allocate wildly.
        let mut v: Vec<&str> = Vec::with_capacity(n.min(self.toks.len() - self.pos));
        for _ in 0..n {
            v.push(self.next(expected)?);
        }
        Ok(words(&v))
    }

    /// The next token as a word ([`crate::words`]).
    pub(crate) fn word(&mut self, expected: &str) -> Result<Word> {
        self.next(expected).map(word)
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn finish(&self) -> Result<()> {
        if self.pos < self.toks.len() {
            return Err(self.err_here("unexpected token after the end of the line's grammar"));
        }
        Ok(())
    }

    /// Parses `start length multipath`.
    pub(crate) fn header(&mut self) -> Result<(u64, u64)> {
        let start = self.number("a start sector")?;
        let length = self.number("a length in sectors")?;
        let pos = self.pos;
        let target = self.next("the target type 'multipath'")?;
        if target != "multipath" {
            return Err(self.err_at(
                pos,
                "expected the target type 'multipath' (other targets are not handled)",
            ));
        }
        Ok((start, length))
    }
}
