//! TOML file -> [`Config`]: serde structs with spans, then validation that names file, line
//! and key.

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::{
    AliasPolicy, Checker, Config, Defaults, DevLoss, DeviceEntry, Failback, FastIoFail,
    FindMultipaths, GroupingPolicy, KeyLines, MultipathEntry, NoPathRetry, Origin, Overrides,
    Pattern, Prio, Settings,
};
use crate::blacklist::{DeviceRule, Rule, RuleSet};
use crate::error::Error;

type Result<T> = std::result::Result<T, Error>;

/// 1-based line of a byte offset.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    #[cfg(test)]
    SCANNED.with(|s| s.set(s.get() + end));
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The key an error at `offset` is about: the `key =` on that line, else the `[table]` name.
fn key_at(text: &str, offset: usize) -> String {
    let line_no = line_of(text, offset);
    let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
    if let Some((k, _)) = line.split_once('=') {
        return k.trim().trim_matches('"').to_string();
    }
    let header = line.trim_start_matches('[').trim_end_matches(']').trim();
    if header.is_empty() {
        "(file)".to_string()
    } else {
        header.to_string()
    }
}

macro_rules! raw_section {
    ($name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $name {
            $( #[serde(default)] $field: $ty, )*
            #[serde(default)]
            path_grouping_policy: Option<Spanned<GroupingPolicy>>,
            #[serde(default)]
            path_selector: Option<Spanned<String>>,
            #[serde(default)]
            features: Option<Spanned<String>>,
            #[serde(default)]
            no_path_retry: Option<Spanned<NoPathRetry>>,
            #[serde(default)]
            failback: Option<Spanned<Failback>>,
            #[serde(default)]
            checker: Option<Spanned<Checker>>,
            #[serde(default)]
            prio: Option<Spanned<Prio>>,
            #[serde(default)]
            hardware_handler: Option<Spanned<String>>,
            #[serde(default)]
            fast_io_fail_tmo: Option<Spanned<FastIoFail>>,
            #[serde(default)]
            dev_loss_tmo: Option<Spanned<DevLoss>>,
        }

        impl $name {
            fn settings(&self, ctx: &Ctx<'_>, lines: &mut KeyLines) -> Result<Settings> {
                fn take<T: Clone>(
                    ctx: &Ctx<'_>,
                    lines: &mut KeyLines,
                    key: &str,
                    v: &Option<Spanned<T>>,
                ) -> Option<T> {
                    v.as_ref().map(|s| {
                        lines.insert(key.to_string(), ctx.line(s.span().start));
                        s.get_ref().clone()
                    })
                }
                let settings = Settings {
                    path_grouping_policy: take(ctx, lines, "path_grouping_policy", &self.path_grouping_policy),
                    path_selector: take(ctx, lines, "path_selector", &self.path_selector),
                    features: take(ctx, lines, "features", &self.features),
                    no_path_retry: take(ctx, lines, "no_path_retry", &self.no_path_retry),
                    failback: take(ctx, lines, "failback", &self.failback),
                    checker: take(ctx, lines, "checker", &self.checker),
                    prio: take(ctx, lines, "prio", &self.prio),
                    hardware_handler: take(ctx, lines, "hardware_handler", &self.hardware_handler),
                    fast_io_fail_tmo: take(ctx, lines, "fast_io_fail_tmo", &self.fast_io_fail_tmo),
                    dev_loss_tmo: take(ctx, lines, "dev_loss_tmo", &self.dev_loss_tmo),
                };
                if let Some(sel) = &self.path_selector {
                    validate_selector(ctx, sel)?;
                }
                if let Some(f) = &self.features {
                    validate_counted(ctx, "features", f)?;
                }
                if let Some(h) = &self.hardware_handler {
                    validate_counted(ctx, "hardware_handler", h)?;
                }
                Ok(settings)
            }
        }
    };
}

raw_section!(RawDefaults {
    polling_interval: Option<Spanned<u32>>,
    max_polling_interval: Option<Spanned<u32>>,
    reconcile_interval: Option<Spanned<u32>>,
    alias_policy: Option<Spanned<AliasPolicy>>,
    alias_prefix: Option<Spanned<String>>,
    alias_template: Option<Spanned<String>>,
    find_multipaths: Option<Spanned<FindMultipaths>>,
    detect_prio: Option<Spanned<bool>>,
});
raw_section!(RawDevice {
    vendor: Option<Spanned<String>>,
    product: Option<Spanned<String>>,
});
raw_section!(RawOverrides {});
raw_section!(RawMultipath {
    wwid: Option<Spanned<String>>,
    alias: Option<Spanned<String>>,
});

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeviceRule {
    #[serde(default)]
    vendor: Option<Spanned<String>>,
    #[serde(default)]
    product: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRules {
    #[serde(default)]
    devnode: Vec<Spanned<String>>,
    #[serde(default)]
    wwid: Vec<Spanned<String>>,
    #[serde(default)]
    protocol: Vec<Spanned<String>>,
    #[serde(default)]
    device: Vec<Spanned<RawDeviceRule>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    defaults: Option<Spanned<RawDefaults>>,
    #[serde(default)]
    blacklist: Option<RawRules>,
    #[serde(default)]
    blacklist_exceptions: Option<RawRules>,
    #[serde(default)]
    devices: Vec<Spanned<RawDevice>>,
    #[serde(default)]
    overrides: Option<Spanned<RawOverrides>>,
    #[serde(default)]
    multipaths: Vec<Spanned<RawMultipath>>,
    #[serde(default)]
    cluster: Option<Spanned<RawCluster>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    #[serde(default)]
    registry: Option<Spanned<String>>,
    #[serde(default)]
    name: Option<Spanned<String>>,
    #[serde(default)]
    host: Option<Spanned<String>>,
    #[serde(default)]
    publish_interval: Option<Spanned<u32>>,
}

fn cluster(ctx: &Ctx<'_>, c: &Spanned<RawCluster>) -> Result<super::ClusterSection> {
    let at = c.span().start;
    let c = c.get_ref();
    let Some(reg) = &c.registry else {
        return Err(ctx.err(
            at,
            "cluster",
            "the [cluster] section needs a registry (local:DIR or etcd://HOST:PORT,...)",
        ));
    };
    let url = reg.get_ref().trim();
    let ok = url.strip_prefix("local:").is_some_and(|d| !d.is_empty())
        || url
            .strip_prefix("etcd://")
            .is_some_and(|e| e.split(',').any(|hp| !hp.trim().is_empty()));
    if !ok {
        return Err(ctx.err(
            reg.span().start,
            "registry",
            format!("{url:?} is not a registry URL (local:DIR or etcd://HOST:PORT,...)"),
        ));
    }
    let text = |v: &Option<Spanned<String>>, key: &str| -> Result<Option<String>> {
        match v {
            Some(s) if s.get_ref().trim().is_empty() => {
                Err(ctx.err(s.span().start, key, "must not be empty"))
            }
            Some(s) => Ok(Some(s.get_ref().trim().to_string())),
            None => Ok(None),
        }
    };
    let publish_interval = match &c.publish_interval {
        Some(p) if *p.get_ref() == 0 => {
            return Err(ctx.err(
                p.span().start,
                "publish_interval",
                "must be at least 1 second (the host's liveness lease is renewed at this pace)",
            ));
        }
        Some(p) => *p.get_ref(),
        None => super::DEFAULT_PUBLISH_INTERVAL,
    };
    Ok(super::ClusterSection {
        registry: url.to_string(),
        name: text(&c.name, "name")?.unwrap_or_else(|| "default".into()),
        host: text(&c.host, "host")?,
        publish_interval,
        origin: Some(ctx.origin(at)),
    })
}

/// Line numbers of byte offsets in one pass over the text: a lookup is a binary search, not
/// a scan from the start (which made loading a big file quadratic).
pub(crate) struct LineIndex {
    /// Offset just past every `\n`.
    starts: Vec<usize>,
}

impl LineIndex {
    pub(crate) fn new(text: &str) -> Self {
        #[cfg(test)]
        SCANNED.with(|s| s.set(s.get() + text.len()));
        let starts = text
            .bytes()
            .enumerate()
            .filter(|(_, b)| *b == b'\n')
            .map(|(i, _)| i + 1)
            .collect();
        Self { starts }
    }

    /// 1-based line of a byte offset (as [`line_of`]).
    pub(crate) fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&s| s <= offset) + 1
    }
}

#[cfg(test)]
thread_local! {
    /// Bytes of configuration text scanned to find line numbers (test builds only).
    pub(crate) static SCANNED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

struct Ctx<'a> {
    path: &'a Path,
    lines: LineIndex,
}

impl Ctx<'_> {
    fn line(&self, offset: usize) -> usize {
        self.lines.line(offset)
    }

    fn origin(&self, offset: usize) -> Origin {
        Origin::File {
            path: self.path.to_path_buf(),
            line: self.line(offset),
        }
    }

    fn err(&self, offset: usize, key: &str, message: impl Into<String>) -> Error {
        Error::ConfigInvalid {
            path: self.path.to_path_buf(),
            line: self.line(offset),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn pattern(&self, key: &str, s: &Spanned<String>) -> Result<Pattern> {
        Pattern::new(s.get_ref()).map_err(|e| {
            self.err(
                s.span().start,
                key,
                format!("{:?} is not a valid regular expression: {e}", s.get_ref()),
            )
        })
    }
}

/// Checks a dm-multipath path selector: a known name, then its argument count and arguments.
pub(crate) fn check_selector(sel: &str) -> std::result::Result<(), String> {
    let mut words = sel.split_whitespace();
    let name = words.next().unwrap_or("");
    if !SELECTORS.contains(&name) {
        return Err(format!(
            "{sel:?} is not a dm-multipath path selector ({})",
            SELECTORS.join(", ")
        ));
    }
    check_counted_words(sel, &words.collect::<Vec<_>>())
}

const SELECTORS: [&str; 5] = [
    "round-robin",
    "queue-length",
    "service-time",
    "historical-service-time",
    "io-affinity",
];

/// Checks `features` / `hardware_handler`: a count followed by that many words.
pub(crate) fn check_counted(value: &str) -> std::result::Result<(), String> {
    check_counted_words(value, &value.split_whitespace().collect::<Vec<_>>())
}

fn check_counted_words(value: &str, words: &[&str]) -> std::result::Result<(), String> {
    let Some((count, rest)) = words.split_first() else {
        return Err(format!("{value:?} is missing its argument count"));
    };
    match count.parse::<usize>() {
        Ok(n) if n == rest.len() => Ok(()),
        Ok(n) => Err(format!(
            "{value:?} announces {n} argument(s) but has {}",
            rest.len()
        )),
        Err(_) => Err(format!(
            "{value:?} must start with its argument count, e.g. \"0\" or \"1 alua\""
        )),
    }
}

fn validate_selector(ctx: &Ctx<'_>, sel: &Spanned<String>) -> Result<()> {
    check_selector(sel.get_ref()).map_err(|m| ctx.err(sel.span().start, "path_selector", m))
}

fn validate_counted(ctx: &Ctx<'_>, key: &str, v: &Spanned<String>) -> Result<()> {
    check_counted(v.get_ref()).map_err(|m| ctx.err(v.span().start, key, m))
}

fn rules(ctx: &Ctx<'_>, raw: Option<RawRules>, section: &str) -> Result<RuleSet> {
    let Some(raw) = raw else {
        return Ok(RuleSet::default());
    };
    let mut set = RuleSet::default();
    for d in &raw.devnode {
        set.devnode.push(Rule {
            pattern: ctx.pattern(&format!("{section}.devnode"), d)?,
            origin: ctx.origin(d.span().start),
        });
    }
    for w in &raw.wwid {
        set.wwid.push(Rule {
            pattern: ctx.pattern(&format!("{section}.wwid"), w)?,
            origin: ctx.origin(w.span().start),
        });
    }
    for p in &raw.protocol {
        set.protocol.push(Rule {
            pattern: ctx.pattern(&format!("{section}.protocol"), p)?,
            origin: ctx.origin(p.span().start),
        });
    }
    for d in &raw.device {
        let at = d.span().start;
        let dev = d.get_ref();
        let vendor = dev
            .vendor
            .as_ref()
            .map(|v| ctx.pattern(&format!("{section}.device.vendor"), v))
            .transpose()?;
        let product = dev
            .product
            .as_ref()
            .map(|v| ctx.pattern(&format!("{section}.device.product"), v))
            .transpose()?;
        if vendor.is_none() && product.is_none() {
            return Err(ctx.err(
                at,
                &format!("{section}.device"),
                "a device rule needs vendor, product or both",
            ));
        }
        set.device.push(DeviceRule {
            vendor,
            product,
            origin: ctx.origin(at),
        });
    }
    Ok(set)
}

pub(super) fn parse(text: &str, path: &Path) -> Result<Config> {
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let at = e.span().map_or(0, |s| s.start);
        Error::ConfigInvalid {
            path: path.to_path_buf(),
            line: line_of(text, at),
            key: key_at(text, at),
            message: e.message().trim().to_string(),
        }
    })?;
    let ctx = Ctx {
        path,
        lines: LineIndex::new(text),
    };
    let mut cfg = Config {
        source: Some(path.to_path_buf()),
        ..Config::default()
    };

    if let Some(d) = &raw.defaults {
        let at = d.span().start;
        let d = d.get_ref();
        let mut lines = KeyLines::new();
        let settings = d.settings(&ctx, &mut lines)?;
        let mut get = |key: &str, v: Option<(usize, ())>| {
            if let Some((off, ())) = v {
                lines.insert(key.to_string(), ctx.line(off));
            }
        };
        get(
            "polling_interval",
            d.polling_interval.as_ref().map(|s| (s.span().start, ())),
        );
        get(
            "max_polling_interval",
            d.max_polling_interval
                .as_ref()
                .map(|s| (s.span().start, ())),
        );
        get(
            "reconcile_interval",
            d.reconcile_interval.as_ref().map(|s| (s.span().start, ())),
        );
        get(
            "alias_policy",
            d.alias_policy.as_ref().map(|s| (s.span().start, ())),
        );
        get(
            "alias_prefix",
            d.alias_prefix.as_ref().map(|s| (s.span().start, ())),
        );
        get(
            "alias_template",
            d.alias_template.as_ref().map(|s| (s.span().start, ())),
        );
        get(
            "find_multipaths",
            d.find_multipaths.as_ref().map(|s| (s.span().start, ())),
        );
        get(
            "detect_prio",
            d.detect_prio.as_ref().map(|s| (s.span().start, ())),
        );
        if let Some(p) = &d.polling_interval
            && *p.get_ref() == 0
        {
            return Err(ctx.err(
                p.span().start,
                "polling_interval",
                "must be at least 1 second",
            ));
        }
        let poll = d.polling_interval.as_ref().map_or(5, |p| *p.get_ref());
        if let Some(m) = &d.max_polling_interval
            && *m.get_ref() < poll
        {
            return Err(ctx.err(
                m.span().start,
                "max_polling_interval",
                format!("{} is below polling_interval ({poll})", m.get_ref()),
            ));
        }
        if let Some(p) = &d.alias_prefix
            && (p.get_ref().is_empty()
                || p.get_ref().contains('/')
                || p.get_ref().contains(char::is_whitespace))
        {
            return Err(ctx.err(
                p.span().start,
                "alias_prefix",
                "must be a non-empty name without '/' or spaces",
            ));
        }
        match (&d.alias_policy, &d.alias_template) {
            (Some(p), None) if *p.get_ref() == AliasPolicy::Template => {
                return Err(ctx.err(
                    p.span().start,
                    "alias_policy",
                    "\"template\" needs an alias_template",
                ));
            }
            (_, Some(t)) => {
                let vars = |name: &str| {
                    aliases::names::BUILTIN_TEMPLATE_VARS
                        .contains(&name)
                        .then(|| "x".to_string())
                };
                if let Err(e) = aliases::names::expand_template(t.get_ref(), &vars) {
                    return Err(ctx.err(t.span().start, "alias_template", e.to_string()));
                }
                let plain = t.get_ref().replace("{{", "");
                if !["{wwid}", "{wwid_tail}", "{n}"]
                    .iter()
                    .any(|v| plain.contains(v))
                {
                    return Err(ctx.err(
                        t.span().start,
                        "alias_template",
                        "must use {wwid}, {wwid_tail} or {n}, or all maps would get the same name",
                    ));
                }
            }
            _ => {}
        }
        cfg.defaults = Defaults {
            settings,
            polling_interval: d.polling_interval.as_ref().map(|s| *s.get_ref()),
            max_polling_interval: d.max_polling_interval.as_ref().map(|s| *s.get_ref()),
            reconcile_interval: d.reconcile_interval.as_ref().map(|s| *s.get_ref()),
            alias_policy: d.alias_policy.as_ref().map(|s| *s.get_ref()),
            alias_prefix: d.alias_prefix.as_ref().map(|s| s.get_ref().clone()),
            alias_template: d.alias_template.as_ref().map(|s| s.get_ref().clone()),
            find_multipaths: d.find_multipaths.as_ref().map(|s| *s.get_ref()),
            detect_prio: d.detect_prio.as_ref().map(|s| *s.get_ref()),
            lines,
            origin: Some(ctx.origin(at)),
        };
    }

    if let Some(c) = &raw.cluster {
        cfg.cluster = Some(cluster(&ctx, c)?);
    }
    cfg.blacklist = rules(&ctx, raw.blacklist, "blacklist")?;
    cfg.blacklist_exceptions = rules(&ctx, raw.blacklist_exceptions, "blacklist_exceptions")?;

    for d in &raw.devices {
        let at = d.span().start;
        let dev = d.get_ref();
        let (Some(vendor), Some(product)) = (&dev.vendor, &dev.product) else {
            return Err(ctx.err(
                at,
                "devices",
                "a device entry needs both vendor and product",
            ));
        };
        let mut lines = KeyLines::new();
        let settings = dev.settings(&ctx, &mut lines)?;
        cfg.devices.push(DeviceEntry {
            vendor: ctx.pattern("vendor", vendor)?,
            product: ctx.pattern("product", product)?,
            settings,
            origin: ctx.origin(at),
            lines,
            note: None,
        });
    }

    if let Some(o) = &raw.overrides {
        let mut lines = KeyLines::new();
        let settings = o.get_ref().settings(&ctx, &mut lines)?;
        cfg.overrides = Some(Overrides {
            settings,
            origin: Some(ctx.origin(o.span().start)),
            lines,
        });
    }

    // wwid -> entry index and alias -> entry index, so duplicates are found in O(1) each.
    let mut by_wwid: std::collections::HashMap<String, usize> =
        std::collections::HashMap::with_capacity(raw.multipaths.len());
    let mut by_alias: std::collections::HashMap<String, usize> =
        std::collections::HashMap::with_capacity(raw.multipaths.len());
    for m in &raw.multipaths {
        let at = m.span().start;
        let mp = m.get_ref();
        let Some(wwid) = &mp.wwid else {
            return Err(ctx.err(at, "multipaths", "a multipaths entry needs a wwid"));
        };
        if wwid.get_ref().trim().is_empty() {
            return Err(ctx.err(wwid.span().start, "wwid", "is empty"));
        }
        if let Some(prev) = by_wwid.get(wwid.get_ref()).map(|&i| &cfg.multipaths[i]) {
            return Err(ctx.err(
                wwid.span().start,
                "wwid",
                format!(
                    "{} already has a multipaths entry at {}",
                    wwid.get_ref(),
                    prev.origin
                ),
            ));
        }
        if let Some(alias) = &mp.alias {
            let a = alias.get_ref();
            if a.is_empty() || a.contains('/') || a.contains(char::is_whitespace) {
                return Err(ctx.err(
                    alias.span().start,
                    "alias",
                    format!("{a:?} is not a usable map name"),
                ));
            }
            if let Some(prev) = by_alias.get(a.as_str()).map(|&i| &cfg.multipaths[i]) {
                return Err(ctx.err(
                    alias.span().start,
                    "alias",
                    format!(
                        "{a:?} is already the alias of {} ({})",
                        prev.wwid, prev.origin
                    ),
                ));
            }
        }
        let mut lines = KeyLines::new();
        let settings = mp.settings(&ctx, &mut lines)?;
        if let Some(a) = &mp.alias {
            lines.insert("alias".into(), ctx.line(a.span().start));
        }
        let index = cfg.multipaths.len();
        by_wwid.insert(wwid.get_ref().clone(), index);
        if let Some(a) = &mp.alias {
            by_alias.insert(a.get_ref().clone(), index);
        }
        cfg.multipaths.push(MultipathEntry {
            wwid: wwid.get_ref().clone(),
            alias: mp.alias.as_ref().map(|a| a.get_ref().clone()),
            settings,
            origin: ctx.origin(at),
            lines,
        });
    }
    Ok(cfg)
}
