//! Compact storage for the short argument lists of tables and statuses.
//!
//! A multipath table names, for every path, the selector's per-path args (`1 1` for
//! service-time), for every group the selector's args (`0`), and a status adds each path's
//! selector info (`0 1`). Kept as `Vec<String>`, those were three heap blocks per path per
//! copy, and a daemon holds several copies of every table (the desired one, the one read
//! back, the simulator's): at 16384 LUNs x 2 paths about a sixth of a cold start's peak
//! memory. A [`Word`] and a [`Words`] list borrow a static copy of the common values and
//! own only the rare others; they read (`Deref`), compare and serialize exactly as the
//! strings and lists they replace.

use std::borrow::Cow;

/// One word of a table or status line (an argument, a handler name).
pub type Word = Cow<'static, str>;

/// A list of words.
pub type Words = Cow<'static, [Word]>;

const fn w(s: &'static str) -> Word {
    Cow::Borrowed(s)
}

/// Words kept once for the whole process: small numbers and the in-tree handler names.
const COMMON: &[&str] = &[
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "alua", "emc", "rdac", "hp_sw",
];

/// Argument lists kept once: none, and every one- and two-word list of 0 and 1 (the
/// in-tree selectors' args and per-path info as the kernel prints them).
const LISTS: &[&[Word]] = &[
    &[],
    &[w("0")],
    &[w("1")],
    &[w("1"), w("1")],
    &[w("0"), w("1")],
    &[w("0"), w("0")],
    &[w("1"), w("0")],
];

/// `s` as a word: a static one when it is common, else an owned copy.
pub fn word(s: &str) -> Word {
    COMMON
        .iter()
        .find(|c| **c == s)
        .map_or_else(|| Cow::Owned(s.to_string()), |c| Cow::Borrowed(*c))
}

/// A list of words: a static list when it is a common one, else an owned list of exactly
/// its length.
pub fn words<S: AsRef<str>>(items: &[S]) -> Words {
    if let Some(l) = LISTS
        .iter()
        .find(|l| l.len() == items.len() && l.iter().zip(items).all(|(a, b)| a == b.as_ref()))
    {
        return Cow::Borrowed(*l);
    }
    Cow::Owned(items.iter().map(|s| word(s.as_ref())).collect())
}

/// [`words`] of an owned list.
pub fn words_of(items: Vec<Word>) -> Words {
    match words(&items) {
        Cow::Borrowed(l) => Cow::Borrowed(l),
        Cow::Owned(_) => {
            let mut v = items;
            v.shrink_to_fit();
            Cow::Owned(v)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_words_and_lists_are_shared_and_the_rest_owned() {
        assert!(matches!(word("1"), Cow::Borrowed("1")));
        assert!(matches!(word("alua"), Cow::Borrowed("alua")));
        assert!(matches!(word("4711"), Cow::Owned(ref s) if s == "4711"));
        assert!(matches!(words(&["1", "1"]), Cow::Borrowed(_)));
        assert!(matches!(words::<&str>(&[]), Cow::Borrowed(_)));
        let odd = words(&["1", "2", "3"]);
        assert!(matches!(odd, Cow::Owned(_)));
        assert_eq!(odd.as_ref(), ["1", "2", "3"]);
        assert_eq!(words_of(vec![word("0"), word("1")]).as_ref(), ["0", "1"]);
        assert!(matches!(
            words_of(vec![word("0"), word("1")]),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn words_read_compare_and_serialize_like_strings() {
        let ws = words(&["1", "x"]);
        assert_eq!(ws.join(" "), "1 x");
        assert_eq!(ws, vec!["1".to_string(), "x".to_string()]);
        assert_eq!(
            serde_json::to_string(&ws).unwrap(),
            serde_json::to_string(&vec!["1", "x"]).unwrap()
        );
        let back: Words = serde_json::from_str("[\"1\",\"x\"]").unwrap();
        assert_eq!(back, ws);
    }
}
