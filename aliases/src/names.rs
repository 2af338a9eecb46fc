//! Name rules and generators: device-mapper name validation, multipath-tools'
//! user_friendly_names ids, alias templates, WWID checks and RFC 3339 timestamps.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::Error;

/// Longest device-mapper name the kernel accepts (DM_NAME_LEN 128 including the NUL).
pub const DM_NAME_MAX: usize = 127;

/// The default user_friendly_names prefix of multipath-tools (`alias_prefix`).
pub const DEFAULT_ALIAS_PREFIX: &str = "mpath";

/// Checks the device-mapper name rules: 1..=127 bytes, no `/`, not `.` or `..`, no whitespace
/// and no control characters.
pub fn validate_alias(alias: &str) -> Result<(), Error> {
    let bad = |reason: &str| {
        Err(Error::InvalidAlias {
            alias: alias.to_string(),
            reason: reason.to_string(),
        })
    };
    if alias.is_empty() {
        return bad("a device-mapper name cannot be empty");
    }
    if alias.len() > DM_NAME_MAX {
        return bad(&format!(
            "it is {} bytes long and device-mapper names are at most {DM_NAME_MAX} bytes",
            alias.len()
        ));
    }
    if alias == "." || alias == ".." {
        return bad("'.' and '..' cannot be device names");
    }
    if alias.contains('/') {
        return bad("device-mapper names cannot contain '/'");
    }
    if alias.chars().any(char::is_whitespace) {
        return bad("device-mapper names cannot contain whitespace");
    }
    if alias.chars().any(char::is_control) {
        return bad("device-mapper names cannot contain control characters");
    }
    if alias.contains('#') {
        // Not a kernel rule, but '#' starts a comment in the bindings file and multipath.conf,
        // so such an alias could not be stored in multipath-tools' formats.
        return bad("'#' cannot be stored in the bindings file (it starts a comment)");
    }
    Ok(())
}

/// Checks that a WWID can be stored: non-empty, at most 127 bytes (it is also a possible map
/// name), no whitespace, control characters or '#'.
pub fn validate_wwid(wwid: &str) -> Result<(), Error> {
    let bad = |reason: &str| {
        Err(Error::InvalidWwid {
            wwid: wwid.to_string(),
            reason: reason.to_string(),
        })
    };
    if wwid.is_empty() {
        return bad("a WWID cannot be empty");
    }
    if wwid.len() > DM_NAME_MAX {
        return bad("it is longer than 127 bytes");
    }
    if wwid.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("it contains whitespace or control characters");
    }
    if wwid.contains('#') {
        return bad("'#' cannot be stored in the bindings file");
    }
    Ok(())
}

/// The bijective base-26 suffix of user_friendly_names id `id` (1 = `a`, 26 = `z`, 27 = `aa`,
/// 52 = `az`, 53 = `ba`, 702 = `zz`, 703 = `aaa`). Id 0 has no suffix.
pub fn ufn_suffix(id: u64) -> Option<String> {
    if id == 0 {
        return None;
    }
    let mut n = id;
    let mut out = Vec::new();
    while n > 0 {
        n -= 1;
        out.push(b'a' + (n % 26) as u8);
        n /= 26;
    }
    out.reverse();
    String::from_utf8(out).ok()
}

/// The user_friendly_names id of `alias` under `prefix` (`mpathc` -> 3), or None if the alias
/// is not prefix + one or more lowercase letters.
pub fn ufn_id(alias: &str, prefix: &str) -> Option<u64> {
    let rest = alias.strip_prefix(prefix)?;
    if rest.is_empty() {
        return None;
    }
    let mut id: u64 = 0;
    for b in rest.bytes() {
        if !b.is_ascii_lowercase() {
            return None;
        }
        id = id.checked_mul(26)?.checked_add(u64::from(b - b'a' + 1))?;
    }
    Some(id)
}

/// The user_friendly_names alias for id `id` under `prefix`.
pub fn ufn_alias(prefix: &str, id: u64) -> Option<String> {
    ufn_suffix(id).map(|s| format!("{prefix}{s}"))
}

/// Lowest id >= 1 not in `used` (which must be sorted or not; it is a set).
pub fn lowest_free_id(used: &std::collections::BTreeSet<u64>) -> u64 {
    // Common case first, in O(log n): ids 1..=k all taken (a batch hands them out in order), so
    // the walk below would be O(k) per allocation and a batch of k names O(k^2).
    let k = used.len() as u64;
    if !used.contains(&0) && used.last() == Some(&k) {
        return k + 1;
    }
    let mut want = 1;
    for &id in used.range(1..) {
        if id == want {
            want += 1;
        } else if id > want {
            break;
        }
    }
    want
}

/// Variables a template may use besides the caller's own (`label` and anything else passed in
/// [`crate::AllocateContext::vars`]).
pub const BUILTIN_TEMPLATE_VARS: &[&str] = &["wwid", "wwid_tail", "host", "n"];

/// How many characters of the WWID `{wwid_tail}` keeps.
pub const WWID_TAIL_LEN: usize = 8;

/// Expands `template` with `vars` (name -> value). `{name}` is replaced, `{{` and `}}` are
/// literal braces. Unknown variables and unbalanced braces are errors. The result is validated
/// as a device-mapper name.
pub fn expand_template(
    template: &str,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Error> {
    let err = |m: String| Error::Template {
        template: template.to_string(),
        message: m,
    };
    let mut out = String::new();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let mut name = String::new();
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == '}' {
                        closed = true;
                        break;
                    }
                    name.push(c);
                }
                if !closed {
                    return Err(err("a '{' is never closed".to_string()));
                }
                match vars(&name) {
                    Some(v) => out.push_str(&v),
                    None => {
                        return Err(err(format!(
                            "unknown variable {{{name}}} (built-in: wwid, wwid_tail, host, n; others must be passed with --var NAME=VALUE)"
                        )));
                    }
                }
            }
            '}' => {
                return Err(err(
                    "a '}' has no matching '{' (write '}}' for a literal brace)".to_string(),
                ));
            }
            c => out.push(c),
        }
    }
    validate_alias(&out).map_err(|e| err(format!("it expands to an invalid name: {e}")))?;
    Ok(out)
}

/// Whether a template uses the `{n}` counter.
pub fn template_uses_counter(template: &str) -> bool {
    template.replace("{{", "").contains("{n}")
}

/// The last [`WWID_TAIL_LEN`] characters of a WWID (all of it if shorter).
pub fn wwid_tail(wwid: &str) -> &str {
    let n = wwid.chars().count();
    if n <= WWID_TAIL_LEN {
        return wwid;
    }
    let skip = n - WWID_TAIL_LEN;
    let idx = wwid.char_indices().nth(skip).map_or(0, |(i, _)| i);
    &wwid[idx..]
}

/// Formats a time as RFC 3339 UTC with second precision (`2026-11-21T22:37:11Z`).
pub fn rfc3339_utc(t: SystemTime) -> String {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

/// Compact UTC timestamp for backup file names (`20261121T223711Z`).
pub fn compact_utc(t: SystemTime) -> String {
    rfc3339_utc(t).replace(['-', ':'], "")
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's civil_from_days algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Short host name of this machine (sysinfo), or "localhost" if it cannot be determined.
pub fn host_name() -> String {
    sysinfo::System::host_name()
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ufn_suffixes_follow_bijective_base_26() {
        let cases = [
            (1, "a"),
            (2, "b"),
            (26, "z"),
            (27, "aa"),
            (28, "ab"),
            (52, "az"),
            (53, "ba"),
            (702, "zz"),
            (703, "aaa"),
            (18_278, "zzz"),
            (18_279, "aaaa"),
        ];
        for (id, s) in cases {
            assert_eq!(ufn_suffix(id).as_deref(), Some(s), "id {id}");
            assert_eq!(ufn_id(&format!("mpath{s}"), "mpath"), Some(id), "{s}");
        }
        assert_eq!(ufn_suffix(0), None);
        assert_eq!(ufn_alias("mpath", 26).as_deref(), Some("mpathz"));
        assert_eq!(ufn_alias("mpath", 27).as_deref(), Some("mpathaa"));
    }

    #[test]
    fn ufn_id_rejects_non_ufn_names() {
        assert_eq!(ufn_id("mpath", "mpath"), None);
        assert_eq!(ufn_id("mpathA", "mpath"), None);
        assert_eq!(ufn_id("mpath1", "mpath"), None);
        assert_eq!(ufn_id("mpatha1", "mpath"), None);
        assert_eq!(ufn_id("yellow", "mpath"), None);
        assert_eq!(ufn_id("diskb", "disk"), Some(2));
        assert_eq!(ufn_id(&format!("mpath{}", "z".repeat(40)), "mpath"), None);
    }

    #[test]
    fn roundtrip_many_ids() {
        for id in 1..5000 {
            let a = ufn_alias("mpath", id).unwrap();
            assert_eq!(ufn_id(&a, "mpath"), Some(id));
        }
    }

    #[test]
    fn lowest_free() {
        let s = |v: &[u64]| v.iter().copied().collect();
        assert_eq!(lowest_free_id(&s(&[])), 1);
        assert_eq!(lowest_free_id(&s(&[1, 2, 3])), 4);
        assert_eq!(lowest_free_id(&s(&[1, 3])), 2);
        assert_eq!(lowest_free_id(&s(&[2, 3])), 1);
        assert_eq!(lowest_free_id(&s(&(1..=26).collect::<Vec<_>>())), 27);
        assert_eq!(lowest_free_id(&s(&[0, 1, 2])), 3);
        assert_eq!(lowest_free_id(&s(&[0, 2, 3])), 1);
        assert_eq!(lowest_free_id(&s(&[1, 2, 4])), 3);
        assert_eq!(lowest_free_id(&s(&[1, 2, 3, 5, 6])), 4);
    }

    #[test]
    fn dm_name_rules() {
        assert!(validate_alias("mpatha").is_ok());
        assert!(validate_alias("domU-web01_5d1b3c7a").is_ok());
        assert!(validate_alias(&"x".repeat(127)).is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "a\tb", "a\u{7}b", "a#b"] {
            assert!(validate_alias(bad).is_err(), "{bad:?}");
        }
        let e = validate_alias(&"x".repeat(128)).unwrap_err().to_string();
        assert!(e.contains("128 bytes"), "{e}");
        // 127 bytes limit counts bytes, not characters.
        assert!(validate_alias(&"é".repeat(64)).is_err());
    }

    #[test]
    fn templates() {
        let vars = |n: &str| match n {
            "label" => Some("web01".to_string()),
            "wwid_tail" => Some(wwid_tail("360014055d1b3c7a0e2f4b8a9c612f3e4").to_string()),
            _ => None,
        };
        assert_eq!(
            expand_template("domU-{label}_{wwid_tail}", &vars).unwrap(),
            "domU-web01_c612f3e4"
        );
        assert_eq!(
            expand_template("{{x}}-{label}", &vars).unwrap(),
            "{x}-web01"
        );
        assert!(expand_template("{nope}", &vars).is_err());
        assert!(expand_template("{label", &vars).is_err());
        assert!(expand_template("a}b", &vars).is_err());
        assert!(expand_template("a/{label}", &vars).is_err());
        assert!(expand_template("{label} x", &vars).is_err());
        assert!(template_uses_counter("lun{n}"));
        assert!(!template_uses_counter("lun{{n}}"));
        assert_eq!(wwid_tail("abc"), "abc");
    }

    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339_utc(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            rfc3339_utc(UNIX_EPOCH + Duration::from_secs(1_795_300_631)),
            "2026-11-21T22:37:11Z"
        );
        assert_eq!(
            rfc3339_utc(UNIX_EPOCH + Duration::from_secs(4_107_542_399)),
            "2100-02-28T23:59:59Z"
        );
        assert_eq!(compact_utc(UNIX_EPOCH), "19700101T000000Z");
    }
}
