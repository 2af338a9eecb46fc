//! `show config` and `explain`: human text and JSON views of the configuration, and TOML
//! rendering (used by `config import`).

use std::fmt::{self, Write as _};

use serde::Serialize;

use super::{
    Config, DeviceEntry, DeviceMatch, EffectiveSettings, GlobalSettings, Layer, MultipathEntry,
    PathIdentity, Resolved, SETTING_KEYS, Settings,
};
use crate::blacklist::{DeviceRule, Rule, RuleSet, Verdict};

/// One effective setting with its provenance, as `show config` and `explain` list it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SettingView {
    /// The key, e.g. `path_grouping_policy`.
    pub key: String,
    /// The value as it would be written in the configuration.
    pub value: String,
    /// The layer that decided it.
    pub layer: Layer,
    /// The entry that decided it, e.g. `device entry ^HITACHI$/^OPEN- (built-in hwtable)`.
    pub from: String,
}

/// A device entry as `show config` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceView {
    /// Vendor regex.
    pub vendor: String,
    /// Product regex.
    pub product: String,
    /// `built-in hwtable` or `FILE line N`.
    pub origin: String,
    /// The vendor recommendation the built-in entry follows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The settings the entry sets.
    pub settings: Settings,
}

/// A blacklist rule as `show config` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct RuleView {
    /// `devnode`, `wwid`, `protocol` or `device`.
    pub kind: &'static str,
    /// The pattern(s).
    pub pattern: String,
    /// `built-in` or `FILE line N`.
    pub origin: String,
}

/// Everything `show config` prints: effective defaults (with provenance), blacklist,
/// exceptions, devices (user entries in precedence order, then the built-in table),
/// overrides and multipaths.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigView {
    /// The file, if any.
    pub source: Option<String>,
    /// Global settings with provenance.
    pub global: GlobalSettings,
    /// Per-map defaults with provenance (what a device no entry matches gets).
    pub defaults: Vec<SettingView>,
    /// Blacklist rules (file's first, then built-ins).
    pub blacklist: Vec<RuleView>,
    /// Exceptions.
    pub blacklist_exceptions: Vec<RuleView>,
    /// User device entries (later first, i.e. in precedence order), then built-in ones.
    pub devices: Vec<DeviceView>,
    /// `[overrides]`.
    pub overrides: Option<Settings>,
    /// `[[multipaths]]`.
    pub multipaths: Vec<MultipathEntry>,
    /// `[cluster]`, with this host's name resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterView>,
}

/// The `[cluster]` section as `show config` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    /// The registry URL.
    pub registry: String,
    /// The cluster's name.
    pub name: String,
    /// This host's name in the registry.
    pub host: String,
    /// Where the host name came from: the file or the hostname.
    pub host_from: String,
    /// Seconds between publications.
    pub publish_interval: u32,
    /// Where the section is.
    pub from: String,
}

fn rule_views(set: &RuleSet) -> Vec<RuleView> {
    let mut out = Vec::new();
    let simple = |kind: &'static str, rules: &Vec<Rule>, out: &mut Vec<RuleView>| {
        for r in rules {
            out.push(RuleView {
                kind,
                pattern: r.pattern.as_str().to_string(),
                origin: r.origin.to_string(),
            });
        }
    };
    simple("devnode", &set.devnode, &mut out);
    for d in &set.device {
        out.push(RuleView {
            kind: "device",
            pattern: device_rule_label(d),
            origin: d.origin.to_string(),
        });
    }
    simple("protocol", &set.protocol, &mut out);
    simple("wwid", &set.wwid, &mut out);
    out
}

fn device_rule_label(d: &DeviceRule) -> String {
    format!(
        "vendor {:?} product {:?}",
        d.vendor.as_ref().map_or(".*", |v| v.as_str()),
        d.product.as_ref().map_or(".*", |p| p.as_str())
    )
}

fn device_view(d: &DeviceEntry, builtin: bool) -> DeviceView {
    DeviceView {
        vendor: d.vendor.as_str().to_string(),
        product: d.product.as_str().to_string(),
        origin: if builtin {
            "built-in hwtable".into()
        } else {
            d.origin.to_string()
        },
        note: d.note.clone(),
        settings: d.settings.clone(),
    }
}

fn effective_pairs(e: &EffectiveSettings) -> Vec<SettingView> {
    fn v<T>(key: &str, r: &Resolved<T>, text: String) -> SettingView {
        SettingView {
            key: key.to_string(),
            value: text,
            layer: r.from.layer,
            from: r.from.description.clone(),
        }
    }
    vec![
        v(
            "path_grouping_policy",
            &e.path_grouping_policy,
            e.path_grouping_policy.value.as_str().to_string(),
        ),
        v(
            "path_selector",
            &e.path_selector,
            e.path_selector.value.clone(),
        ),
        v("features", &e.features, e.features.value.clone()),
        v(
            "no_path_retry",
            &e.no_path_retry,
            e.no_path_retry.value.to_string(),
        ),
        v("failback", &e.failback, e.failback.value.to_string()),
        v("checker", &e.checker, e.checker.value.as_str().to_string()),
        v("prio", &e.prio, e.prio.value.as_str().to_string()),
        v(
            "hardware_handler",
            &e.hardware_handler,
            e.hardware_handler.value.clone(),
        ),
        v(
            "fast_io_fail_tmo",
            &e.fast_io_fail_tmo,
            e.fast_io_fail_tmo.value.to_string(),
        ),
        match &e.dev_loss_tmo {
            Some(r) => v("dev_loss_tmo", r, r.value.to_string()),
            None => SettingView {
                key: "dev_loss_tmo".into(),
                value: "(driver default)".into(),
                layer: super::Layer::BuiltinDefaults,
                from:
                    "not set: the FC driver's value is kept, raised where no_path_retry needs more"
                        .into(),
            },
        },
    ]
}

impl Config {
    /// The data behind `show config` (serialize it for `--json`, print it for humans).
    pub fn view(&self) -> ConfigView {
        // Defaults as a device that matches nothing would get them.
        let none = PathIdentity {
            devnode: String::new(),
            wwid: None,
            vendor: "\u{0}".into(),
            product: "\u{0}".into(),
            protocol: None,
        };
        let no_overrides = Config {
            overrides: None,
            multipaths: Vec::new(),
            devices: Vec::new(),
            ..self.clone()
        };
        let eff = no_overrides.resolve(&none).settings;
        let bl = self.blacklist();
        let mut devices: Vec<DeviceView> = self
            .devices
            .iter()
            .rev()
            .map(|d| device_view(d, false))
            .collect();
        devices.extend(
            crate::hwtable::builtin_table()
                .iter()
                .map(|d| device_view(d, true)),
        );
        ConfigView {
            source: self.source.as_ref().map(|p| p.display().to_string()),
            global: self.global(),
            defaults: effective_pairs(&eff),
            blacklist: rule_views(&bl.blacklist),
            blacklist_exceptions: rule_views(&bl.exceptions),
            devices,
            overrides: self.overrides.as_ref().map(|o| o.settings.clone()),
            multipaths: self.multipaths.clone(),
            cluster: self.cluster.as_ref().map(|c| ClusterView {
                registry: c.registry.clone(),
                name: c.name.clone(),
                host: c.host_name(),
                host_from: if c.host.is_some() {
                    "file".into()
                } else {
                    "hostname".into()
                },
                publish_interval: c.publish_interval,
                from: c
                    .origin
                    .as_ref()
                    .map_or_else(|| "built-in".into(), ToString::to_string),
            }),
        }
    }

    /// `explain`: which entries matched a path and why, the effective settings with their
    /// provenance, and whether the path is blacklisted (by which rule).
    pub fn explain(&self, id: &PathIdentity) -> Explanation {
        let resolution = self.resolve(id);
        Explanation {
            path: id.clone(),
            blacklist: self.blacklist_verdict(id),
            devices: resolution.devices,
            multipath: resolution.multipath,
            overrides: self.overrides.as_ref().map(|o| match &o.origin {
                Some(origin) => format!("overrides ({origin})"),
                None => "overrides".into(),
            }),
            settings: effective_pairs(&resolution.settings),
            alias: resolution.settings.alias,
        }
    }
}

/// The answer of `explain` for one path.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// The path asked about.
    pub path: PathIdentity,
    /// Blacklist verdict with the deciding rule.
    pub blacklist: Verdict,
    /// Matching device entries in precedence order.
    pub devices: Vec<DeviceMatch>,
    /// The `[[multipaths]]` entry for the WWID.
    pub multipath: Option<String>,
    /// `[overrides]`, when present (it applies to every path).
    pub overrides: Option<String>,
    /// Effective settings with provenance.
    pub settings: Vec<SettingView>,
    /// Alias from the multipaths entry.
    pub alias: Option<Resolved<String>>,
}

impl Explanation {
    /// JSON for `--json`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.path;
        writeln!(
            f,
            "path {} vendor {:?} product {:?} wwid {} protocol {}",
            p.kernel_name(),
            p.vendor.trim(),
            p.product.trim(),
            p.wwid.as_deref().unwrap_or("(unknown)"),
            p.protocol.as_deref().unwrap_or("undef")
        )?;
        writeln!(f, "blacklist: {}", self.blacklist)?;
        if self.devices.is_empty() {
            writeln!(f, "device entries: none match")?;
        }
        for d in &self.devices {
            write!(f, "device entry {} matches ({})", d.entry, d.origin)?;
            if let Some(n) = &d.note {
                write!(f, ": {n}")?;
            }
            writeln!(f)?;
        }
        if let Some(o) = &self.overrides {
            writeln!(f, "{o} applies to every device")?;
        }
        match &self.multipath {
            Some(m) => writeln!(f, "{m} matches the WWID")?,
            None => writeln!(f, "no multipaths entry for this WWID")?,
        }
        if let Some(a) = &self.alias {
            writeln!(f, "alias {} (from {})", a.value, a.from)?;
        }
        writeln!(f, "effective settings:")?;
        for sv in &self.settings {
            writeln!(f, "  {:<22} {:<22} from {}", sv.key, sv.value, sv.from)?;
        }
        Ok(())
    }
}

impl ConfigView {
    /// JSON for `show config --json`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

fn settings_line(s: &Settings) -> String {
    SETTING_KEYS
        .iter()
        .filter_map(|k| s.get_text(k).map(|v| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join(" ")
}

impl fmt::Display for ConfigView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "configuration: {}",
            self.source.as_deref().unwrap_or("(none, built-in only)")
        )?;
        writeln!(f, "defaults:")?;
        let g = &self.global;
        let mut global: Vec<(&str, String, String)> = vec![
            (
                "polling_interval",
                g.polling_interval.value.to_string(),
                g.polling_interval.from.to_string(),
            ),
            (
                "max_polling_interval",
                g.max_polling_interval.value.to_string(),
                g.max_polling_interval.from.to_string(),
            ),
            (
                "reconcile_interval",
                g.reconcile_interval.value.to_string(),
                g.reconcile_interval.from.to_string(),
            ),
            (
                "alias_policy",
                g.alias_policy.value.as_str().into(),
                g.alias_policy.from.to_string(),
            ),
            (
                "alias_prefix",
                g.alias_prefix.value.clone(),
                g.alias_prefix.from.to_string(),
            ),
            (
                "find_multipaths",
                g.find_multipaths.value.as_str().into(),
                g.find_multipaths.from.to_string(),
            ),
            (
                "detect_prio",
                g.detect_prio.value.to_string(),
                g.detect_prio.from.to_string(),
            ),
        ];
        if let Some(t) = &g.alias_template {
            global.push(("alias_template", t.value.clone(), t.from.to_string()));
        }
        for (k, v, from) in global {
            writeln!(f, "  {k:<22} {v:<22} from {from}")?;
        }
        for sv in &self.defaults {
            writeln!(f, "  {:<22} {:<22} from {}", sv.key, sv.value, sv.from)?;
        }
        if let Some(c) = &self.cluster {
            writeln!(f, "cluster: (from {})", c.from)?;
            writeln!(f, "  {:<22} {}", "registry", c.registry)?;
            writeln!(f, "  {:<22} {}", "name", c.name)?;
            writeln!(f, "  {:<22} {:<22} from {}", "host", c.host, c.host_from)?;
            writeln!(f, "  {:<22} {}", "publish_interval", c.publish_interval)?;
        }
        for (title, rules) in [
            ("blacklist", &self.blacklist),
            ("blacklist_exceptions", &self.blacklist_exceptions),
        ] {
            writeln!(f, "{title}:")?;
            if rules.is_empty() {
                writeln!(f, "  (none)")?;
            }
            for r in rules {
                writeln!(f, "  {:<9} {:<50} ({})", r.kind, r.pattern, r.origin)?;
            }
        }
        writeln!(
            f,
            "devices (first match in this order decides each setting):"
        )?;
        for d in &self.devices {
            writeln!(f, "  {}/{} ({})", d.vendor, d.product, d.origin)?;
            writeln!(f, "    {}", settings_line(&d.settings))?;
            if let Some(n) = &d.note {
                writeln!(f, "    source: {n}")?;
            }
        }
        if let Some(o) = &self.overrides {
            writeln!(f, "overrides: {}", settings_line(o))?;
        }
        writeln!(f, "multipaths:")?;
        if self.multipaths.is_empty() {
            writeln!(f, "  (none)")?;
        }
        for m in &self.multipaths {
            write!(f, "  {}", m.wwid)?;
            if let Some(a) = &m.alias {
                write!(f, " alias {a}")?;
            }
            let s = settings_line(&m.settings);
            if !s.is_empty() {
                write!(f, " {s}")?;
            }
            writeln!(f, " ({})", m.origin)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// TOML rendering
// ---------------------------------------------------------------------------------------------

fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn write_settings(out: &mut String, s: &Settings) {
    if let Some(v) = s.path_grouping_policy {
        let _ = writeln!(out, "path_grouping_policy = {}", q(v.as_str()));
    }
    if let Some(v) = &s.path_selector {
        let _ = writeln!(out, "path_selector = {}", q(v));
    }
    if let Some(v) = &s.features {
        let _ = writeln!(out, "features = {}", q(v));
    }
    if let Some(v) = s.no_path_retry {
        let _ = match v {
            super::NoPathRetry::Retries(n) => writeln!(out, "no_path_retry = {n}"),
            other => writeln!(out, "no_path_retry = {}", q(&other.to_string())),
        };
    }
    if let Some(v) = s.failback {
        let _ = match v {
            super::Failback::Seconds(n) => writeln!(out, "failback = {n}"),
            other => writeln!(out, "failback = {}", q(&other.to_string())),
        };
    }
    if let Some(v) = s.checker {
        let _ = writeln!(out, "checker = {}", q(v.as_str()));
    }
    if let Some(v) = s.prio {
        let _ = writeln!(out, "prio = {}", q(v.as_str()));
    }
    if let Some(v) = &s.hardware_handler {
        let _ = writeln!(out, "hardware_handler = {}", q(v));
    }
    if let Some(v) = s.fast_io_fail_tmo {
        let _ = match v {
            super::FastIoFail::Seconds(n) => writeln!(out, "fast_io_fail_tmo = {n}"),
            other => writeln!(out, "fast_io_fail_tmo = {}", q(&other.to_string())),
        };
    }
    if let Some(v) = s.dev_loss_tmo {
        let _ = match v {
            super::DevLoss::Seconds(n) => writeln!(out, "dev_loss_tmo = {n}"),
            other => writeln!(out, "dev_loss_tmo = {}", q(&other.to_string())),
        };
    }
}

fn write_rules(out: &mut String, section: &str, set: &RuleSet) {
    if set.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n[{section}]");
    let list = |rules: &Vec<Rule>| {
        rules
            .iter()
            .map(|r| q(r.pattern.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !set.devnode.is_empty() {
        let _ = writeln!(out, "devnode = [{}]", list(&set.devnode));
    }
    if !set.wwid.is_empty() {
        let _ = writeln!(out, "wwid = [{}]", list(&set.wwid));
    }
    if !set.protocol.is_empty() {
        let _ = writeln!(out, "protocol = [{}]", list(&set.protocol));
    }
    for d in &set.device {
        let _ = writeln!(out, "\n[[{section}.device]]");
        if let Some(v) = &d.vendor {
            let _ = writeln!(out, "vendor = {}", q(v.as_str()));
        }
        if let Some(p) = &d.product {
            let _ = writeln!(out, "product = {}", q(p.as_str()));
        }
    }
}

/// Renders a configuration (the file's part; built-ins are not written) as TOML that
/// [`Config::parse_str`] reads back to the same configuration.
pub fn render_toml(cfg: &Config) -> String {
    let mut out = String::new();
    let d = &cfg.defaults;
    let mut defaults = String::new();
    write_settings(&mut defaults, &d.settings);
    if let Some(v) = d.polling_interval {
        let _ = writeln!(defaults, "polling_interval = {v}");
    }
    if let Some(v) = d.max_polling_interval {
        let _ = writeln!(defaults, "max_polling_interval = {v}");
    }
    if let Some(v) = d.reconcile_interval {
        let _ = writeln!(defaults, "reconcile_interval = {v}");
    }
    if let Some(v) = d.alias_policy {
        let _ = writeln!(defaults, "alias_policy = {}", q(v.as_str()));
    }
    if let Some(v) = &d.alias_prefix {
        let _ = writeln!(defaults, "alias_prefix = {}", q(v));
    }
    if let Some(v) = &d.alias_template {
        let _ = writeln!(defaults, "alias_template = {}", q(v));
    }
    if let Some(v) = d.find_multipaths {
        let _ = writeln!(defaults, "find_multipaths = {}", q(v.as_str()));
    }
    if let Some(v) = d.detect_prio {
        let _ = writeln!(defaults, "detect_prio = {v}");
    }
    if !defaults.is_empty() {
        let _ = write!(out, "[defaults]\n{defaults}");
    }
    write_rules(&mut out, "blacklist", &cfg.blacklist);
    write_rules(&mut out, "blacklist_exceptions", &cfg.blacklist_exceptions);
    for dev in &cfg.devices {
        let _ = writeln!(out, "\n[[devices]]");
        let _ = writeln!(out, "vendor = {}", q(dev.vendor.as_str()));
        let _ = writeln!(out, "product = {}", q(dev.product.as_str()));
        write_settings(&mut out, &dev.settings);
    }
    if let Some(o) = &cfg.overrides {
        let _ = writeln!(out, "\n[overrides]");
        write_settings(&mut out, &o.settings);
    }
    for m in &cfg.multipaths {
        let _ = writeln!(out, "\n[[multipaths]]");
        let _ = writeln!(out, "wwid = {}", q(&m.wwid));
        if let Some(a) = &m.alias {
            let _ = writeln!(out, "alias = {}", q(a));
        }
        write_settings(&mut out, &m.settings);
    }
    if let Some(c) = &cfg.cluster {
        let _ = writeln!(out, "\n[cluster]");
        let _ = writeln!(out, "registry = {}", q(&c.registry));
        let _ = writeln!(out, "name = {}", q(&c.name));
        if let Some(h) = &c.host {
            let _ = writeln!(out, "host = {}", q(h));
        }
        let _ = writeln!(out, "publish_interval = {}", c.publish_interval);
    }
    out.trim_start().to_string()
}
