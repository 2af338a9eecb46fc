//! `multipathd-rs config import /etc/multipath.conf`: turns a multipath-tools configuration
//! (parsed by the one multipath.conf parser of the workspace, `aliases::mpconf`) into ours,
//! and lists everything it could not carry over with file, line and reason.
//!
//! Mapping (multipath-tools key -> ours):
//! * `path_grouping_policy`, `path_selector`, `features`, `hardware_handler`, `no_path_retry`,
//!   `fast_io_fail_tmo`, `dev_loss_tmo` (written on the FC remote ports, [`crate::fc_tmo`]),
//!   `failback`, `prio` (alua, const; `sysfs` becomes alua, with a note), `path_checker` /
//!   `checker` (tur, directio, none; `readsector0` becomes directio, with a note) in
//!   `defaults`, `devices/device`, `overrides` and `multipaths/multipath`;
//! * `defaults`: `polling_interval`, `max_polling_interval`, `find_multipaths`,
//!   `detect_prio`, `user_friendly_names` (-> `alias_policy`), `alias_prefix`;
//! * `device`: `vendor`, `product`, `product_blacklist` (-> a blacklist device rule);
//!   `multipath`: `wwid`, `alias`;
//! * `blacklist` / `blacklist_exceptions`: `devnode`, `wwid`, `protocol`, `device` (vendor,
//!   product). `property` rules are not supported and are reported.
//!
//! The import starts from multipath-tools' built-in defaults (Debian 12, multipath-tools 0.9.4,
//! as multipath.conf(5) documents them), not from ours: a file that does not set
//! `user_friendly_names` or `find_multipaths` keeps behaving as it did under multipath-tools
//! (WWID names, `strict`). Those values are written into the TOML and the report says so.
//!
//! Files are read as leniently as multipath-tools reads them ([`tolerant`]): CRLF, no final
//! newline, a section left open at the end, extra data after a value; each such spot is noted.
//!
//! Everything else (`uid_attribute`, `rr_min_io`,
//! `revision`, `overrides/protocol`, negated `!regex` patterns, regexes the `regex` crate
//! rejects, values we do not implement) is reported and left out, never guessed.

pub mod tolerant;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use aliases::mpconf::{ConfFile, Section};
use serde::Serialize;

use crate::blacklist::{DeviceRule, Rule, RuleSet};
use crate::config::raw::{check_counted, check_selector};
use crate::config::{
    AliasPolicy, Checker, Config, Defaults, DevLoss, DeviceEntry, Failback, FastIoFail,
    FindMultipaths, GroupingPolicy, KeyLines, MultipathEntry, NoPathRetry, Origin, Overrides,
    Pattern, Prio, Settings, render_toml,
};
use crate::error::Error;

/// Something that was not carried over, or carried over with a changed meaning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportIssue {
    /// The key (with its section path, e.g. `devices/device/dev_loss_tmo`).
    pub key: String,
    /// The file it is in.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// Why.
    pub why: String,
}

impl fmt::Display for ImportIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} line {}: {}: {}",
            self.file.display(),
            self.line,
            self.key,
            self.why
        )
    }
}

/// The result of an import.
#[derive(Debug, Clone)]
pub struct ImportReport {
    /// The imported configuration (origins point at the multipath.conf lines).
    pub config: Config,
    /// The same configuration as TOML for `/etc/multipathd-rs/config.toml`, with the skipped
    /// items listed in a comment at the top.
    pub toml: String,
    /// What could not be carried over.
    pub skipped: Vec<ImportIssue>,
    /// What was carried over with a changed meaning.
    pub notes: Vec<ImportIssue>,
}

struct Importer<'a> {
    file: &'a Path,
    skipped: Vec<ImportIssue>,
    notes: Vec<ImportIssue>,
    /// `multipaths` entries by WWID and by alias (indexes into the list being built), so a
    /// file with thousands of entries imports in linear time.
    wwid_index: &'a mut HashMap<String, usize>,
    alias_index: &'a mut HashMap<String, usize>,
}

enum SettingOutcome {
    Set,
    NotASetting,
}

impl Importer<'_> {
    fn skip(&mut self, key: impl Into<String>, line: usize, why: impl Into<String>) {
        self.skipped.push(ImportIssue {
            key: key.into(),
            file: self.file.to_path_buf(),
            line,
            why: why.into(),
        });
    }

    fn note(&mut self, key: impl Into<String>, line: usize, why: impl Into<String>) {
        self.notes.push(ImportIssue {
            key: key.into(),
            file: self.file.to_path_buf(),
            line,
            why: why.into(),
        });
    }

    fn origin(&self, line: usize) -> Origin {
        Origin::File {
            path: self.file.to_path_buf(),
            line,
        }
    }

    /// Applies one per-map setting; returns whether the key is one.
    fn setting(
        &mut self,
        s: &mut Settings,
        lines: &mut KeyLines,
        ctx: &str,
        key: &str,
        value: &str,
        line: usize,
    ) -> SettingOutcome {
        let full = format!("{ctx}/{key}");
        let bad =
            |me: &mut Self, what: &str| me.skip(&full, line, format!("{value:?} is not {what}"));
        let ours = match key {
            "path_grouping_policy" => match value.parse::<GroupingPolicy>().ok() {
                Some(p) => {
                    s.path_grouping_policy = Some(p);
                    "path_grouping_policy"
                }
                None => {
                    bad(
                        self,
                        "a grouping policy we support (failover, multibus, group_by_prio, group_by_serial, group_by_node_name, group_by_tpg)",
                    );
                    return SettingOutcome::Set;
                }
            },
            "path_selector" | "selector" => match check_selector(value) {
                Ok(()) => {
                    s.path_selector = Some(value.to_string());
                    "path_selector"
                }
                Err(m) => {
                    self.skip(&full, line, m);
                    return SettingOutcome::Set;
                }
            },
            "features" | "hardware_handler" => match check_counted(value) {
                Ok(()) => {
                    if key == "features" {
                        s.features = Some(value.to_string());
                    } else {
                        s.hardware_handler = Some(value.to_string());
                    }
                    key
                }
                Err(m) => {
                    self.skip(&full, line, m);
                    return SettingOutcome::Set;
                }
            },
            "no_path_retry" => match NoPathRetry::parse(value) {
                Some(v) => {
                    s.no_path_retry = Some(v);
                    "no_path_retry"
                }
                None => {
                    bad(self, "\"fail\", \"queue\" or a number");
                    return SettingOutcome::Set;
                }
            },
            "fast_io_fail_tmo" => match FastIoFail::parse(value) {
                Some(v) => {
                    s.fast_io_fail_tmo = Some(v);
                    key
                }
                None => {
                    bad(self, "\"off\" or a number of seconds");
                    return SettingOutcome::Set;
                }
            },
            "dev_loss_tmo" => match DevLoss::parse(value) {
                Some(v) => {
                    s.dev_loss_tmo = Some(v);
                    key
                }
                None => {
                    bad(self, "\"infinity\" or a number of seconds");
                    return SettingOutcome::Set;
                }
            },
            "failback" => match Failback::parse(value) {
                Some(v) => {
                    s.failback = Some(v);
                    "failback"
                }
                None => {
                    bad(
                        self,
                        "\"immediate\", \"manual\", \"followover\" or a number of seconds",
                    );
                    return SettingOutcome::Set;
                }
            },
            "path_checker" | "checker" => {
                let c = match value {
                    "readsector0" => {
                        self.note(
                            &full,
                            line,
                            "readsector0 is carried over as directio (both read the first sector)",
                        );
                        Some(Checker::Directio)
                    }
                    v => Checker::parse(v),
                };
                match c {
                    Some(c) => {
                        s.checker = Some(c);
                        "checker"
                    }
                    None => {
                        self.skip(
                            &full,
                            line,
                            format!("checker {value:?} is not implemented (tur, directio, sysfs, none); the next layer's checker applies"),
                        );
                        return SettingOutcome::Set;
                    }
                }
            }
            "prio" => {
                let p = match value {
                    "sysfs" => {
                        self.note(&full, line, "prio sysfs is carried over as alua (both use the ALUA access_state in sysfs)");
                        Some(Prio::Alua)
                    }
                    v => Prio::parse(v),
                };
                match p {
                    Some(p) => {
                        s.prio = Some(p);
                        "prio"
                    }
                    None => {
                        self.skip(
                            &full,
                            line,
                            format!("prioritizer {value:?} is not implemented (alua, const); the next layer's prio applies"),
                        );
                        return SettingOutcome::Set;
                    }
                }
            }
            _ => return SettingOutcome::NotASetting,
        };
        lines.insert(ours.to_string(), line);
        SettingOutcome::Set
    }

    fn pattern(&mut self, key: &str, value: &str, line: usize) -> Option<Pattern> {
        if value.starts_with('!') {
            self.skip(key, line, format!("negated pattern {value:?} is not supported; write the positive rule as an exception instead"));
            return None;
        }
        match Pattern::new(value) {
            Ok(p) => Some(p),
            Err(e) => {
                self.skip(
                    key,
                    line,
                    format!("{value:?} is not a regular expression we accept: {e}"),
                );
                None
            }
        }
    }

    fn defaults(&mut self, sec: &Section, d: &mut Defaults) {
        if d.origin.is_none() {
            d.origin = Some(self.origin(sec.line));
        }
        for (key, value, line) in sec.key_values() {
            if let SettingOutcome::Set =
                self.setting(&mut d.settings, &mut d.lines, "defaults", key, value, line)
            {
                continue;
            }
            let full = format!("defaults/{key}");
            let num = |me: &mut Self| -> Option<u32> {
                match value.parse::<u32>() {
                    Ok(n) if n > 0 => Some(n),
                    _ => {
                        me.skip(
                            &full,
                            line,
                            format!("{value:?} is not a positive number of seconds"),
                        );
                        None
                    }
                }
            };
            let ours = match key {
                "polling_interval" => match num(self) {
                    Some(n) => {
                        d.polling_interval = Some(n);
                        key
                    }
                    None => continue,
                },
                "max_polling_interval" => match num(self) {
                    Some(n) => {
                        d.max_polling_interval = Some(n);
                        key
                    }
                    None => continue,
                },
                "find_multipaths" => match FindMultipaths::parse(value) {
                    Some(f) => {
                        d.find_multipaths = Some(f);
                        key
                    }
                    None => {
                        self.skip(
                            &full,
                            line,
                            format!("{value:?} is not yes, no, strict, greedy or smart"),
                        );
                        continue;
                    }
                },
                "detect_prio" => match yes_no(value) {
                    Some(b) => {
                        d.detect_prio = Some(b);
                        key
                    }
                    None => {
                        self.skip(&full, line, format!("{value:?} is not yes or no"));
                        continue;
                    }
                },
                "user_friendly_names" => match yes_no(value) {
                    Some(b) => {
                        d.alias_policy = Some(if b {
                            AliasPolicy::UserFriendlyNames
                        } else {
                            AliasPolicy::Wwid
                        });
                        "alias_policy"
                    }
                    None => {
                        self.skip(&full, line, format!("{value:?} is not yes or no"));
                        continue;
                    }
                },
                "alias_prefix" => {
                    if value.is_empty()
                        || value.contains('/')
                        || value.contains(char::is_whitespace)
                    {
                        self.skip(
                            &full,
                            line,
                            format!("{value:?} is not a usable name prefix"),
                        );
                        continue;
                    }
                    d.alias_prefix = Some(value.to_string());
                    key
                }
                _ => {
                    self.skip(&full, line, "not supported by multipathd-rs");
                    continue;
                }
            };
            d.lines.insert(ours.to_string(), line);
        }
        for sub in sec.items.iter().filter_map(sub_section) {
            self.skip(
                format!("defaults/{}", sub.name),
                sub.line,
                "unexpected subsection",
            );
        }
        if let (Some(p), Some(m)) = (d.polling_interval, d.max_polling_interval)
            && m < p
        {
            let line = d
                .lines
                .get("max_polling_interval")
                .copied()
                .unwrap_or(sec.line);
            self.skip(
                "defaults/max_polling_interval",
                line,
                format!("{m} is below polling_interval {p}"),
            );
            d.max_polling_interval = None;
            d.lines.remove("max_polling_interval");
        }
    }

    fn rules(&mut self, sec: &Section, set: &mut RuleSet) {
        let name = sec.name.clone();
        for (key, value, line) in sec.key_values() {
            let full = format!("{name}/{key}");
            let target = match key {
                "devnode" => &mut set.devnode,
                "wwid" => &mut set.wwid,
                "protocol" => &mut set.protocol,
                "property" => {
                    self.skip(
                        &full,
                        line,
                        "udev property rules are not supported (we do not read udev properties)",
                    );
                    continue;
                }
                _ => {
                    self.skip(&full, line, "not a blacklist keyword");
                    continue;
                }
            };
            if let Some(p) = self.pattern(&full, value, line) {
                target.push(Rule {
                    pattern: p,
                    origin: Origin::File {
                        path: self.file.to_path_buf(),
                        line,
                    },
                });
            }
        }
        for sub in sec.items.iter().filter_map(sub_section) {
            if sub.name != "device" {
                self.skip(
                    format!("{name}/{}", sub.name),
                    sub.line,
                    "unexpected subsection",
                );
                continue;
            }
            let mut vendor = None;
            let mut product = None;
            let mut ok = true;
            for (key, value, line) in sub.key_values() {
                let full = format!("{name}/device/{key}");
                match key {
                    "vendor" => {
                        vendor = self.pattern(&full, value, line).or_else(|| {
                            ok = false;
                            None
                        })
                    }
                    "product" => {
                        product = self.pattern(&full, value, line).or_else(|| {
                            ok = false;
                            None
                        })
                    }
                    _ => self.skip(&full, line, "not supported in a blacklist device rule"),
                }
            }
            if !ok {
                continue;
            }
            if vendor.is_none() && product.is_none() {
                self.skip(
                    format!("{name}/device"),
                    sub.line,
                    "a device rule needs vendor or product",
                );
                continue;
            }
            set.device.push(DeviceRule {
                vendor,
                product,
                origin: self.origin(sub.line),
            });
        }
    }

    fn devices(&mut self, sec: &Section, out: &mut Vec<DeviceEntry>, blacklist: &mut RuleSet) {
        for (key, _, line) in sec.key_values() {
            self.skip(
                format!("devices/{key}"),
                line,
                "attributes belong inside device { }",
            );
        }
        for sub in sec.items.iter().filter_map(sub_section) {
            if sub.name != "device" {
                self.skip(
                    format!("devices/{}", sub.name),
                    sub.line,
                    "unexpected subsection",
                );
                continue;
            }
            let mut settings = Settings::default();
            let mut lines = KeyLines::new();
            let mut vendor = None;
            let mut product = None;
            let mut product_blacklist = None;
            let mut ok = true;
            for (key, value, line) in sub.key_values() {
                let full = format!("devices/device/{key}");
                match key {
                    "vendor" => match self.pattern(&full, value, line) {
                        Some(p) => vendor = Some(p),
                        None => ok = false,
                    },
                    "product" => match self.pattern(&full, value, line) {
                        Some(p) => product = Some(p),
                        None => ok = false,
                    },
                    "product_blacklist" => {
                        product_blacklist = self.pattern(&full, value, line).map(|p| (p, line))
                    }
                    _ => {
                        if let SettingOutcome::NotASetting = self.setting(
                            &mut settings,
                            &mut lines,
                            "devices/device",
                            key,
                            value,
                            line,
                        ) {
                            self.skip(&full, line, "not supported by multipathd-rs");
                        }
                    }
                }
            }
            let (Some(vendor), Some(product)) = (vendor, product) else {
                if ok {
                    self.skip(
                        "devices/device",
                        sub.line,
                        "a device entry needs both vendor and product; entry left out",
                    );
                } else {
                    self.skip(
                        "devices/device",
                        sub.line,
                        "entry left out because its vendor or product pattern was rejected",
                    );
                }
                continue;
            };
            if let Some((pb, line)) = product_blacklist {
                self.note(
                    "devices/device/product_blacklist",
                    line,
                    format!(
                        "carried over as a blacklist device rule vendor {:?} product {:?}",
                        vendor.as_str(),
                        pb.as_str()
                    ),
                );
                blacklist.device.push(DeviceRule {
                    vendor: Some(vendor.clone()),
                    product: Some(pb),
                    origin: self.origin(line),
                });
            }
            out.push(DeviceEntry {
                vendor,
                product,
                settings,
                origin: self.origin(sub.line),
                lines,
                note: None,
            });
        }
    }

    fn overrides(&mut self, sec: &Section, o: &mut Overrides) {
        if o.origin.is_none() {
            o.origin = Some(self.origin(sec.line));
        }
        for (key, value, line) in sec.key_values() {
            if let SettingOutcome::NotASetting =
                self.setting(&mut o.settings, &mut o.lines, "overrides", key, value, line)
            {
                self.skip(
                    format!("overrides/{key}"),
                    line,
                    "not supported by multipathd-rs",
                );
            }
        }
        for sub in sec.items.iter().filter_map(sub_section) {
            self.skip(
                format!("overrides/{}", sub.name),
                sub.line,
                "per-protocol overrides are not supported; the section is left out",
            );
        }
    }

    fn multipaths(&mut self, sec: &Section, out: &mut Vec<MultipathEntry>) {
        for (key, _, line) in sec.key_values() {
            self.skip(
                format!("multipaths/{key}"),
                line,
                "attributes belong inside multipath { }",
            );
        }
        for sub in sec.items.iter().filter_map(sub_section) {
            if sub.name != "multipath" {
                self.skip(
                    format!("multipaths/{}", sub.name),
                    sub.line,
                    "unexpected subsection",
                );
                continue;
            }
            let mut settings = Settings::default();
            let mut lines = KeyLines::new();
            let mut wwid = None;
            let mut alias = None;
            for (key, value, line) in sub.key_values() {
                let full = format!("multipaths/multipath/{key}");
                match key {
                    "wwid" => wwid = Some(value.to_string()),
                    "alias" => {
                        if value.is_empty()
                            || value.contains('/')
                            || value.contains(char::is_whitespace)
                        {
                            self.skip(&full, line, format!("{value:?} is not a usable map name"));
                        } else {
                            alias = Some(value.to_string());
                            lines.insert("alias".into(), line);
                        }
                    }
                    _ => {
                        if let SettingOutcome::NotASetting = self.setting(
                            &mut settings,
                            &mut lines,
                            "multipaths/multipath",
                            key,
                            value,
                            line,
                        ) {
                            self.skip(&full, line, "not supported by multipathd-rs");
                        }
                    }
                }
            }
            let Some(wwid) = wwid.filter(|w| !w.is_empty()) else {
                self.skip(
                    "multipaths/multipath",
                    sub.line,
                    "a multipath entry needs a wwid; entry left out",
                );
                continue;
            };
            if let Some(a) = &alias
                && let Some(prev) = self
                    .alias_index
                    .get(a)
                    .map(|&i| &out[i])
                    .filter(|m| m.alias.as_deref() == Some(a) && m.wwid != wwid)
            {
                let line = lines.get("alias").copied().unwrap_or(sub.line);
                let why = format!(
                    "alias {a:?} is already used by {} ({}); this alias is left out",
                    prev.wwid, prev.origin
                );
                self.skip("multipaths/multipath/alias", line, why);
                alias = None;
                lines.remove("alias");
            }
            if let Some(&i) = self.wwid_index.get(&wwid) {
                let prev = &mut out[i];
                self.note(
                    "multipaths/multipath",
                    sub.line,
                    format!(
                        "second entry for {wwid} merged into the one at {} (later values win)",
                        prev.origin
                    ),
                );
                merge(&mut prev.settings, settings);
                if let Some(a) = alias {
                    self.alias_index.insert(a.clone(), i);
                    prev.alias = Some(a);
                }
                prev.lines.extend(lines);
                continue;
            }
            self.wwid_index.insert(wwid.clone(), out.len());
            if let Some(a) = &alias {
                self.alias_index.insert(a.clone(), out.len());
            }
            out.push(MultipathEntry {
                wwid,
                alias,
                settings,
                origin: self.origin(sub.line),
                lines,
            });
        }
    }
}

/// multipath-tools' built-in defaults for the keys we carry (Debian 12's multipath-tools
/// 0.9.4, from multipath.conf(5) and `multipath -t`): the starting point of an import. Ours
/// follow them except for `user_friendly_names` (ours: yes), `find_multipaths` (ours: yes)
/// and `hardware_handler` (left unset: multipath-tools keeps the handler the kernel
/// attached). `tests/config_import.rs` pins every value.
pub fn multipath_tools_defaults() -> Defaults {
    let ours = crate::config::builtin_defaults();
    Defaults {
        settings: Settings {
            hardware_handler: None,
            ..ours.settings
        },
        alias_policy: Some(AliasPolicy::Wwid),
        find_multipaths: Some(FindMultipaths::Strict),
        lines: KeyLines::new(),
        origin: None,
        ..ours
    }
}

/// The multipath.conf spelling of the baseline values the files did not set, e.g.
/// `user_friendly_names no`.
fn baseline_words(d: &Defaults) -> Vec<String> {
    let b = multipath_tools_defaults();
    let mut out = Vec::new();
    let mut add = |set: bool, word: String| {
        if !set {
            out.push(word);
        }
    };
    let s = &d.settings;
    let bs = &b.settings;
    add(
        d.alias_policy.is_some(),
        "user_friendly_names no".to_string(),
    );
    add(
        d.find_multipaths.is_some(),
        "find_multipaths strict".to_string(),
    );
    let pairs: [(&str, bool, Option<String>); 12] = [
        (
            "polling_interval",
            d.polling_interval.is_some(),
            b.polling_interval.map(|v| v.to_string()),
        ),
        (
            "max_polling_interval",
            d.max_polling_interval.is_some(),
            b.max_polling_interval.map(|v| v.to_string()),
        ),
        ("detect_prio", d.detect_prio.is_some(), Some("yes".into())),
        (
            "alias_prefix",
            d.alias_prefix.is_some(),
            b.alias_prefix.clone(),
        ),
        (
            "path_grouping_policy",
            s.path_grouping_policy.is_some(),
            bs.get_text("path_grouping_policy"),
        ),
        (
            "path_selector",
            s.path_selector.is_some(),
            bs.get_text("path_selector"),
        ),
        ("features", s.features.is_some(), bs.get_text("features")),
        (
            "no_path_retry",
            s.no_path_retry.is_some(),
            bs.get_text("no_path_retry"),
        ),
        ("failback", s.failback.is_some(), bs.get_text("failback")),
        ("path_checker", s.checker.is_some(), bs.get_text("checker")),
        ("prio", s.prio.is_some(), bs.get_text("prio")),
        (
            "fast_io_fail_tmo",
            s.fast_io_fail_tmo.is_some(),
            bs.get_text("fast_io_fail_tmo"),
        ),
    ];
    for (k, set, v) in pairs {
        if let Some(v) = v {
            add(set, format!("{k} {}", aliases::mpconf::quote_value(&v)));
        }
    }
    out
}

/// Fills the keys the files left unset with multipath-tools' defaults.
fn apply_baseline(d: &mut Defaults) {
    let b = multipath_tools_defaults();
    let s = &mut d.settings;
    let bs = b.settings;
    s.path_grouping_policy = s.path_grouping_policy.or(bs.path_grouping_policy);
    s.path_selector = s.path_selector.take().or(bs.path_selector);
    s.features = s.features.take().or(bs.features);
    s.no_path_retry = s.no_path_retry.or(bs.no_path_retry);
    s.failback = s.failback.or(bs.failback);
    s.checker = s.checker.or(bs.checker);
    s.prio = s.prio.or(bs.prio);
    s.fast_io_fail_tmo = s.fast_io_fail_tmo.or(bs.fast_io_fail_tmo);
    d.polling_interval = d.polling_interval.or(b.polling_interval);
    d.max_polling_interval = d.max_polling_interval.or(b.max_polling_interval);
    // multipath-tools' max_polling_interval is 4 * polling_interval unless set.
    if d.lines.contains_key("polling_interval") && !d.lines.contains_key("max_polling_interval") {
        d.max_polling_interval = d.polling_interval.map(|p| p.saturating_mul(4));
    }
    d.alias_policy = d.alias_policy.or(b.alias_policy);
    d.alias_prefix = d.alias_prefix.take().or(b.alias_prefix);
    d.find_multipaths = d.find_multipaths.or(b.find_multipaths);
    d.detect_prio = d.detect_prio.or(b.detect_prio);
}

fn sub_section(i: &aliases::mpconf::Item) -> Option<&Section> {
    match i {
        aliases::mpconf::Item::Section(s) => Some(s),
        aliases::mpconf::Item::KeyValue { .. } => None,
    }
}

fn yes_no(v: &str) -> Option<bool> {
    match v {
        "yes" | "on" | "1" => Some(true),
        "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

fn merge(into: &mut Settings, from: Settings) {
    into.path_grouping_policy = from.path_grouping_policy.or(into.path_grouping_policy);
    into.path_selector = from.path_selector.or(into.path_selector.take());
    into.features = from.features.or(into.features.take());
    into.no_path_retry = from.no_path_retry.or(into.no_path_retry);
    into.failback = from.failback.or(into.failback);
    into.checker = from.checker.or(into.checker);
    into.prio = from.prio.or(into.prio);
    into.hardware_handler = from.hardware_handler.or(into.hardware_handler.take());
    into.fast_io_fail_tmo = from.fast_io_fail_tmo.or(into.fast_io_fail_tmo);
    into.dev_loss_tmo = from.dev_loss_tmo.or(into.dev_loss_tmo);
}

/// Imports parsed multipath.conf files (the main file first, then `conf.d` drop-ins, as
/// `aliases::mpconf::load_with_conf_d` returns them). Later files' values win, as in
/// multipath-tools. Keys no file sets start from [`multipath_tools_defaults`]. The TOML is
/// verified by reading it back with [`Config::parse_str`].
pub fn import_multipath_conf(files: &[ConfFile]) -> Result<ImportReport, Error> {
    import_with_notes(files, Vec::new())
}

fn import_with_notes(
    files: &[ConfFile],
    mut notes: Vec<ImportIssue>,
) -> Result<ImportReport, Error> {
    let mut cfg = Config::default();
    let mut overrides: Option<Overrides> = None;
    let mut skipped = Vec::new();
    let mut wwid_index = HashMap::new();
    let mut alias_index = HashMap::new();
    for file in files {
        let mut imp = Importer {
            file: &file.path,
            skipped: Vec::new(),
            notes: Vec::new(),
            wwid_index: &mut wwid_index,
            alias_index: &mut alias_index,
        };
        for sec in &file.sections {
            match sec.name.as_str() {
                "defaults" => imp.defaults(sec, &mut cfg.defaults),
                "blacklist" => imp.rules(sec, &mut cfg.blacklist),
                "blacklist_exceptions" => imp.rules(sec, &mut cfg.blacklist_exceptions),
                "devices" => imp.devices(sec, &mut cfg.devices, &mut cfg.blacklist),
                "overrides" => imp.overrides(sec, overrides.get_or_insert_with(Overrides::default)),
                "multipaths" => imp.multipaths(sec, &mut cfg.multipaths),
                other => imp.skip(
                    other,
                    sec.line,
                    "not a multipath.conf section we know; left out",
                ),
            }
        }
        skipped.append(&mut imp.skipped);
        notes.append(&mut imp.notes);
    }
    cfg.overrides = overrides;
    cfg.source = files.first().map(|f| f.path.clone());
    let baseline = baseline_words(&cfg.defaults);
    apply_baseline(&mut cfg.defaults);
    let first = files.first();
    if !baseline.is_empty() {
        let line = first
            .and_then(|f| f.sections_named("defaults").next())
            .map_or(1, |s| s.line);
        notes.push(ImportIssue {
            key: "defaults".into(),
            file: first.map(|f| f.path.clone()).unwrap_or_default(),
            line,
            why: format!(
                "not set in the file, so multipath-tools' defaults are carried over (not multipathd-rs's): {}",
                baseline.join(", ")
            ),
        });
    }

    let mut toml = String::new();
    toml.push_str("# multipathd-rs configuration imported from ");
    let names: Vec<String> = files.iter().map(|f| f.path.display().to_string()).collect();
    toml.push_str(&if names.is_empty() {
        "(no files)".to_string()
    } else {
        names.join(", ")
    });
    toml.push('\n');
    toml.push_str(
        "# Starting point: multipath-tools 0.9.4's built-in defaults, so the maps behave as they did\n# under multipath-tools; [defaults] below spells every one of them out.\n",
    );
    for s in &skipped {
        toml.push_str(&format!(
            "# not carried over: {}\n",
            one_line(&s.to_string())
        ));
    }
    for n in &notes {
        toml.push_str(&format!("# note: {}\n", one_line(&n.to_string())));
    }
    toml.push('\n');
    toml.push_str(&render_toml(&cfg));
    // The output must be a valid configuration; if it is not, that is our bug, reported as such.
    Config::parse_str(&toml, Path::new("(imported configuration)"))?;
    Ok(ImportReport {
        config: cfg,
        toml,
        skipped,
        notes,
    })
}

/// Reads one multipath.conf text as leniently as multipath-tools does
/// ([`tolerant::normalize`]); what was tolerated comes back as notes on `path`.
pub fn parse_tolerant(text: &str, path: &Path) -> Result<(ConfFile, Vec<ImportIssue>), Error> {
    let (normal, tolerated) = tolerant::normalize(text);
    let file = aliases::mpconf::parse_str(&normal, path).map_err(|e| Error::MultipathConf {
        source: Box::new(e),
    })?;
    let notes = tolerated
        .into_iter()
        .map(|t| ImportIssue {
            key: "syntax".into(),
            file: path.to_path_buf(),
            line: t.line,
            why: t.what,
        })
        .collect();
    Ok((file, notes))
}

/// Imports one multipath.conf text (read leniently); `path` names it in origins and reports.
pub fn import_str(text: &str, path: &Path) -> Result<ImportReport, Error> {
    let (file, notes) = parse_tolerant(text, path)?;
    import_with_notes(&[file], notes)
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// Reads `main` (and `*.conf` in `conf_dir`, sorted, as multipath-tools does) leniently and
/// imports them. A missing main file is an error; bytes that are not UTF-8 are replaced and
/// noted.
pub fn import_files(main: &Path, conf_dir: Option<&Path>) -> Result<ImportReport, Error> {
    let mut paths = vec![main.to_path_buf()];
    if let Some(dir) = conf_dir {
        paths.extend(
            aliases::mpconf::conf_d_files(dir).map_err(|e| Error::MultipathConf {
                source: Box::new(e),
            })?,
        );
    }
    let mut files = Vec::with_capacity(paths.len());
    let mut notes = Vec::new();
    for path in paths {
        let bytes = std::fs::read(&path).map_err(|source| Error::ConfigRead {
            path: path.clone(),
            source,
        })?;
        let text = String::from_utf8_lossy(&bytes);
        if let std::borrow::Cow::Owned(_) = text {
            notes.push(ImportIssue {
                key: "syntax".into(),
                file: path.clone(),
                line: 1,
                why: "bytes that are not UTF-8 were replaced by U+FFFD".into(),
            });
        }
        let (file, mut n) = parse_tolerant(&text, &path)?;
        notes.append(&mut n);
        files.push(file);
    }
    import_with_notes(&files, notes)
}
