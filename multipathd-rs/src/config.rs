//! The daemon's configuration: a TOML file (default [`DEFAULT_CONFIG_PATH`]) with the same
//! sections and precedence as multipath-tools' `multipath.conf`, plus a resolver that says for
//! every effective setting which layer and entry decided it.
//!
//! Precedence, highest first (as multipath.conf(5) documents it):
//! `multipaths` entry for the WWID > `overrides` > matching `devices` entries of the user's
//! file (a later entry beats an earlier one) > the first matching entry of the built-in
//! hardware table ([`crate::hwtable`]) > `defaults` of the user's file > built-in defaults.
//!
//! Input for matching is [`PathIdentity`], a plain struct the discovery layer fills in.

mod show;

pub use show::{
    ClusterView, ConfigView, DeviceView, Explanation, RuleView, SettingView, render_toml,
};

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::blacklist::{Blacklist, RuleSet, Verdict};
use crate::error::Error;

/// Where the daemon looks for its configuration unless `--config` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/multipathd-rs/config.toml";

type Result<T> = std::result::Result<T, Error>;

// ---------------------------------------------------------------------------------------------
// Value types: in the leaf module `settings` (shared with blacklist and hwtable, no circle)
// ---------------------------------------------------------------------------------------------

pub use crate::settings::{
    AliasPolicy, Checker, DevLoss, DeviceEntry, Failback, FastIoFail, FindMultipaths,
    GroupingPolicy, KeyLines, NoPathRetry, Origin, PathIdentity, Pattern, Prio, SETTING_KEYS,
    Settings, regexes_compiled,
};

/// The `[defaults]` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Defaults {
    /// Per-map settings.
    #[serde(flatten)]
    pub settings: Settings,
    /// Seconds between path checks of a healthy path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub polling_interval: Option<u32>,
    /// Upper bound in seconds the check interval grows to while paths stay healthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_polling_interval: Option<u32>,
    /// Seconds between the daemon's full reconciles of paths and maps with sysfs (a net for
    /// lost uevents); 0 turns the periodic reconcile off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconcile_interval: Option<u32>,
    /// Naming of maps without a `multipaths` alias.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias_policy: Option<AliasPolicy>,
    /// Prefix of user-friendly names (`mpath` gives `mpatha`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias_prefix: Option<String>,
    /// Template for `alias_policy = "template"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias_template: Option<String>,
    /// Which WWIDs become maps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub find_multipaths: Option<FindMultipaths>,
    /// Use ALUA priorities for paths that report an ALUA access state even where `prio`
    /// says `const` (multipath-tools' `detect_prio`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detect_prio: Option<bool>,
    /// Line of each key in the file.
    #[serde(skip)]
    pub lines: KeyLines,
    /// Line of the `[defaults]` header.
    #[serde(skip)]
    pub origin: Option<Origin>,
}

/// The `[overrides]` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Overrides {
    /// The settings it imposes on every device.
    #[serde(flatten)]
    pub settings: Settings,
    /// Where the section starts.
    #[serde(skip)]
    pub origin: Option<Origin>,
    /// Line of each key.
    #[serde(skip)]
    pub lines: KeyLines,
}

/// A `[[multipaths]]` entry: settings for one WWID.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MultipathEntry {
    /// The WWID, compared exactly.
    pub wwid: String,
    /// The map name for this WWID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// The settings it imposes.
    #[serde(flatten)]
    pub settings: Settings,
    /// Where it was defined.
    #[serde(skip)]
    pub origin: Origin,
    /// Line of each key.
    #[serde(skip)]
    pub lines: KeyLines,
}

/// A whole configuration: the user's file (or nothing) on top of the built-ins.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The file it was read from, if any.
    pub source: Option<PathBuf>,
    /// `[defaults]`.
    pub defaults: Defaults,
    /// `[blacklist]` and `[blacklist_exceptions]` of the file (built-in rules are added by
    /// [`Config::blacklist`]).
    pub blacklist: RuleSet,
    /// `[blacklist_exceptions]`.
    pub blacklist_exceptions: RuleSet,
    /// `[[devices]]`, in file order.
    pub devices: Vec<DeviceEntry>,
    /// `[overrides]`.
    pub overrides: Option<Overrides>,
    /// `[[multipaths]]`, in file order (WWIDs are unique).
    pub multipaths: Vec<MultipathEntry>,
    /// `[cluster]`: names decided cluster-wide through a hostsync registry.
    pub cluster: Option<ClusterSection>,
}

/// Built-in `[cluster] publish_interval`: seconds between this host's state publications
/// (and lease renewals; the lease lives three intervals).
pub const DEFAULT_PUBLISH_INTERVAL: u32 = 10;

/// The `[cluster]` section: when present, a new map's name is decided by the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterSection {
    /// The registry: `local:DIR` or `etcd://HOST:PORT,...`.
    pub registry: String,
    /// The cluster's name (shown and published; one registry serves one cluster).
    pub name: String,
    /// This host's name in the registry; None: the hostname.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Seconds between publications of this host's state and lease renewals.
    pub publish_interval: u32,
    /// Where the section starts.
    #[serde(skip)]
    pub origin: Option<Origin>,
}

impl ClusterSection {
    /// This host's name: the configured one, else the hostname.
    pub fn host_name(&self) -> String {
        self.host.clone().unwrap_or_else(aliases::names::host_name)
    }
}

// ---------------------------------------------------------------------------------------------
// Built-in defaults and resolution
// ---------------------------------------------------------------------------------------------

/// Built-in `reconcile_interval`: a full rescan of sysfs every five minutes repairs a lost
/// uevent without costing a busy host (one scan of 32k paths takes about a second).
pub const DEFAULT_RECONCILE_INTERVAL: u32 = 300;

/// The compiled-in defaults, used where neither the file nor a device entry sets a value.
/// They follow multipath-tools' documented built-ins except where noted in the README.
pub fn builtin_defaults() -> Defaults {
    Defaults {
        settings: Settings {
            path_grouping_policy: Some(GroupingPolicy::Failover),
            path_selector: Some("service-time 0".into()),
            features: Some("0".into()),
            no_path_retry: Some(NoPathRetry::Fail),
            failback: Some(Failback::Manual),
            checker: Some(Checker::Tur),
            prio: Some(Prio::Const),
            hardware_handler: Some("0".into()),
            fast_io_fail_tmo: Some(FastIoFail::Seconds(5)),
            dev_loss_tmo: None,
        },
        polling_interval: Some(5),
        max_polling_interval: Some(20),
        reconcile_interval: Some(DEFAULT_RECONCILE_INTERVAL),
        alias_policy: Some(AliasPolicy::UserFriendlyNames),
        alias_prefix: Some("mpath".into()),
        alias_template: None,
        find_multipaths: Some(FindMultipaths::Yes),
        detect_prio: Some(true),
        lines: KeyLines::new(),
        origin: Some(Origin::Builtin),
    }
}

/// Which layer decided a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// A `[[multipaths]]` entry for the WWID.
    Multipath,
    /// `[overrides]`.
    Overrides,
    /// A `[[devices]]` entry of the user's file.
    Device,
    /// An entry of the built-in hardware table.
    BuiltinDevice,
    /// `[defaults]` of the user's file.
    Defaults,
    /// The compiled-in defaults.
    BuiltinDefaults,
}

/// Why a setting has its value: the layer, a human description of the entry and where it is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Provenance {
    /// The layer.
    pub layer: Layer,
    /// E.g. `device entry HITACHI/OPEN-.* (built-in hwtable)` or
    /// `defaults in /etc/multipathd-rs/config.toml line 4`.
    pub description: String,
}

impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description)
    }
}

/// A value with its provenance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resolved<T> {
    /// The effective value.
    pub value: T,
    /// Who decided it.
    pub from: Provenance,
}

/// The effective per-map settings for one path / WWID.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EffectiveSettings {
    /// `path_grouping_policy`.
    pub path_grouping_policy: Resolved<GroupingPolicy>,
    /// `path_selector`.
    pub path_selector: Resolved<String>,
    /// `features` as configured (see [`EffectiveSettings::table_features`]).
    pub features: Resolved<String>,
    /// `no_path_retry`.
    pub no_path_retry: Resolved<NoPathRetry>,
    /// `failback`.
    pub failback: Resolved<Failback>,
    /// `checker`.
    pub checker: Resolved<Checker>,
    /// `prio`.
    pub prio: Resolved<Prio>,
    /// `hardware_handler`.
    pub hardware_handler: Resolved<String>,
    /// `fast_io_fail_tmo` (multipath-tools' default 5 unless a layer says otherwise).
    pub fast_io_fail_tmo: Resolved<FastIoFail>,
    /// `dev_loss_tmo`; None when no layer sets it (the driver's value is kept, subject to
    /// the rules of [`crate::fc_tmo`]).
    pub dev_loss_tmo: Option<Resolved<DevLoss>>,
    /// The alias from a `[[multipaths]]` entry, if any.
    pub alias: Option<Resolved<String>>,
}

impl EffectiveSettings {
    /// The dm-multipath feature words for a new table: the configured `features` with
    /// `queue_if_no_path` added or removed according to `no_path_retry` (which wins, as in
    /// multipath-tools). Returns the words without the leading count.
    pub fn table_features(&self) -> Vec<String> {
        let mut words: Vec<String> = self
            .features
            .value
            .split_whitespace()
            .skip(1)
            .filter(|w| *w != "queue_if_no_path")
            .map(str::to_string)
            .collect();
        let configured_queue = self
            .features
            .value
            .split_whitespace()
            .any(|w| w == "queue_if_no_path");
        let queue = match self.no_path_retry.from.layer {
            // no_path_retry only from the compiled-in default: features decides.
            Layer::BuiltinDefaults => configured_queue,
            _ => self.no_path_retry.value.queues_initially(),
        };
        if queue {
            words.insert(0, "queue_if_no_path".into());
        }
        words
    }
}

/// Global (not per-map) settings with provenance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GlobalSettings {
    /// `polling_interval` in seconds.
    pub polling_interval: Resolved<u32>,
    /// `max_polling_interval` in seconds.
    pub max_polling_interval: Resolved<u32>,
    /// `reconcile_interval` in seconds (0: off).
    pub reconcile_interval: Resolved<u32>,
    /// `alias_policy`.
    pub alias_policy: Resolved<AliasPolicy>,
    /// `alias_prefix`.
    pub alias_prefix: Resolved<String>,
    /// `alias_template` (only meaningful with the template policy).
    pub alias_template: Option<Resolved<String>>,
    /// `find_multipaths`.
    pub find_multipaths: Resolved<FindMultipaths>,
    /// `detect_prio`.
    pub detect_prio: Resolved<bool>,
}

impl GlobalSettings {
    /// The naming policy in the form the aliases crate's store takes. `alias_template` is
    /// required by the parser whenever the policy is `template`; should it be missing anyway,
    /// maps fall back to user-friendly names rather than all getting one name.
    pub fn alias_store_policy(&self) -> aliases::Policy {
        match (self.alias_policy.value, &self.alias_template) {
            (AliasPolicy::Wwid, _) => aliases::Policy::Wwid,
            (AliasPolicy::Template, Some(t)) => aliases::Policy::Template {
                template: t.value.clone(),
            },
            (AliasPolicy::UserFriendlyNames | AliasPolicy::Template, _) => {
                aliases::Policy::UserFriendlyNames {
                    prefix: self.alias_prefix.value.clone(),
                }
            }
        }
    }
}

/// A device entry that matched a path, and what it was allowed to decide.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceMatch {
    /// `VENDOR/PRODUCT` regexes of the entry.
    pub entry: String,
    /// True for the built-in hardware table.
    pub builtin: bool,
    /// Where it is defined.
    pub origin: String,
    /// The vendor recommendation (built-ins).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Everything the resolver found for one path.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resolution {
    /// The effective settings with provenance.
    pub settings: EffectiveSettings,
    /// The matching device entries in precedence order (user entries, later first; then the
    /// first matching built-in one).
    pub devices: Vec<DeviceMatch>,
    /// The `[[multipaths]]` entry for the WWID, described.
    pub multipath: Option<String>,
}

fn describe_key(section: &str, origin: &Origin, lines: &KeyLines, key: &str) -> String {
    match (origin, lines.get(key)) {
        (Origin::File { path, .. }, Some(line)) => {
            format!("{section} in {} line {line}", path.display())
        }
        (Origin::File { path, line }, None) => {
            format!("{section} in {} line {line}", path.display())
        }
        (Origin::Builtin, _) => format!("{section} (built-in)"),
    }
}

struct Candidate<'a> {
    layer: Layer,
    settings: &'a Settings,
    describe: Box<dyn Fn(&str) -> String + 'a>,
}

impl Config {
    /// A configuration with no file: built-in defaults, hardware table and blacklist only.
    pub fn builtin() -> Self {
        Self::default()
    }

    /// Reads and parses a TOML configuration file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse_str(&text, path)
    }

    /// Like [`Config::load`], but a missing file gives the built-in configuration.
    pub fn load_or_builtin(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse_str(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::builtin()),
            Err(source) => Err(Error::ConfigRead {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Parses TOML text; `path` names the file in errors and provenance.
    pub fn parse_str(text: &str, path: &Path) -> Result<Self> {
        raw::parse(text, path)
    }

    /// The blacklist in effect: the file's rules plus the built-in ones.
    pub fn blacklist(&self) -> Blacklist {
        Blacklist::with_builtins(self.blacklist.clone(), self.blacklist_exceptions.clone())
    }

    /// Whether a path is blacklisted, and by which rule (exceptions win).
    pub fn blacklist_verdict(&self, id: &PathIdentity) -> Verdict {
        crate::blacklist::verdict_with_builtins(&self.blacklist, &self.blacklist_exceptions, id)
    }

    /// The `[[multipaths]]` entry for a WWID.
    pub fn multipath_entry(&self, wwid: &str) -> Option<&MultipathEntry> {
        self.multipaths.iter().find(|m| m.wwid == wwid)
    }

    fn defaults_description(&self, key: &str) -> String {
        let origin = self.defaults.origin.clone().unwrap_or(Origin::Builtin);
        describe_key("defaults", &origin, &self.defaults.lines, key)
    }

    /// The global settings with provenance.
    pub fn global(&self) -> GlobalSettings {
        let builtin = builtin_defaults();
        fn pick<T: Clone>(
            cfg: &Config,
            key: &str,
            user: &Option<T>,
            builtin: &Option<T>,
        ) -> Option<Resolved<T>> {
            if let Some(v) = user {
                return Some(Resolved {
                    value: v.clone(),
                    from: Provenance {
                        layer: Layer::Defaults,
                        description: cfg.defaults_description(key),
                    },
                });
            }
            builtin.as_ref().map(|v| Resolved {
                value: v.clone(),
                from: Provenance {
                    layer: Layer::BuiltinDefaults,
                    description: "built-in defaults".into(),
                },
            })
        }
        let d = &self.defaults;
        fn fallback<T>(value: T) -> Resolved<T> {
            Resolved {
                value,
                from: Provenance {
                    layer: Layer::BuiltinDefaults,
                    description: "built-in defaults".into(),
                },
            }
        }
        GlobalSettings {
            polling_interval: pick(
                self,
                "polling_interval",
                &d.polling_interval,
                &builtin.polling_interval,
            )
            .unwrap_or_else(|| fallback(5)),
            max_polling_interval: pick(
                self,
                "max_polling_interval",
                &d.max_polling_interval,
                &builtin.max_polling_interval,
            )
            .unwrap_or_else(|| fallback(20)),
            reconcile_interval: pick(
                self,
                "reconcile_interval",
                &d.reconcile_interval,
                &builtin.reconcile_interval,
            )
            .unwrap_or_else(|| fallback(DEFAULT_RECONCILE_INTERVAL)),
            alias_policy: pick(self, "alias_policy", &d.alias_policy, &builtin.alias_policy)
                .unwrap_or_else(|| fallback(AliasPolicy::UserFriendlyNames)),
            alias_prefix: pick(self, "alias_prefix", &d.alias_prefix, &builtin.alias_prefix)
                .unwrap_or_else(|| fallback("mpath".to_string())),
            alias_template: pick(
                self,
                "alias_template",
                &d.alias_template,
                &builtin.alias_template,
            ),
            find_multipaths: pick(
                self,
                "find_multipaths",
                &d.find_multipaths,
                &builtin.find_multipaths,
            )
            .unwrap_or_else(|| fallback(FindMultipaths::Yes)),
            detect_prio: pick(self, "detect_prio", &d.detect_prio, &builtin.detect_prio)
                .unwrap_or_else(|| fallback(true)),
        }
    }

    /// Resolves the effective per-map settings for a path, with provenance for each.
    pub fn resolve(&self, id: &PathIdentity) -> Resolution {
        let builtin = builtin_defaults();
        let mut candidates: Vec<Candidate<'_>> = Vec::new();
        let mut devices = Vec::new();

        let mp = id.wwid.as_deref().and_then(|w| self.multipath_entry(w));
        if let Some(m) = mp {
            candidates.push(Candidate {
                layer: Layer::Multipath,
                settings: &m.settings,
                describe: Box::new(move |k| {
                    describe_key(
                        &format!("multipaths entry {}", m.wwid),
                        &m.origin,
                        &m.lines,
                        k,
                    )
                }),
            });
        }
        if let Some(o) = &self.overrides {
            candidates.push(Candidate {
                layer: Layer::Overrides,
                settings: &o.settings,
                describe: Box::new(move |k| {
                    describe_key(
                        "overrides",
                        o.origin.as_ref().unwrap_or(&Origin::Builtin),
                        &o.lines,
                        k,
                    )
                }),
            });
        }
        for d in self
            .devices
            .iter()
            .rev()
            .filter(|d| d.matches(&id.vendor, &id.product))
        {
            devices.push(DeviceMatch {
                entry: d.label(),
                builtin: false,
                origin: d.origin.to_string(),
                note: d.note.clone(),
            });
            candidates.push(Candidate {
                layer: Layer::Device,
                settings: &d.settings,
                describe: Box::new(move |k| {
                    describe_key(
                        &format!("device entry {}", d.label()),
                        &d.origin,
                        &d.lines,
                        k,
                    )
                }),
            });
        }
        if let Some(d) = crate::hwtable::lookup(&id.vendor, &id.product) {
            devices.push(DeviceMatch {
                entry: d.label(),
                builtin: true,
                origin: "built-in hwtable".into(),
                note: d.note.clone(),
            });
            candidates.push(Candidate {
                layer: Layer::BuiltinDevice,
                settings: &d.settings,
                describe: Box::new(move |_| {
                    format!("device entry {} (built-in hwtable)", d.label())
                }),
            });
        }
        candidates.push(Candidate {
            layer: Layer::Defaults,
            settings: &self.defaults.settings,
            describe: Box::new(move |k| self.defaults_description(k)),
        });
        candidates.push(Candidate {
            layer: Layer::BuiltinDefaults,
            settings: &builtin.settings,
            describe: Box::new(|_| "built-in defaults".into()),
        });

        fn first<T: Clone>(
            candidates: &[Candidate<'_>],
            key: &str,
            get: impl Fn(&Settings) -> Option<T>,
            fallback: T,
        ) -> Resolved<T> {
            for c in candidates {
                if let Some(v) = get(c.settings) {
                    return Resolved {
                        value: v,
                        from: Provenance {
                            layer: c.layer,
                            description: (c.describe)(key),
                        },
                    };
                }
            }
            Resolved {
                value: fallback,
                from: Provenance {
                    layer: Layer::BuiltinDefaults,
                    description: "built-in defaults".into(),
                },
            }
        }

        let c = &candidates;
        let settings = EffectiveSettings {
            path_grouping_policy: first(
                c,
                "path_grouping_policy",
                |s| s.path_grouping_policy,
                GroupingPolicy::Failover,
            ),
            path_selector: first(
                c,
                "path_selector",
                |s| s.path_selector.clone(),
                "service-time 0".into(),
            ),
            features: first(c, "features", |s| s.features.clone(), "0".into()),
            no_path_retry: first(c, "no_path_retry", |s| s.no_path_retry, NoPathRetry::Fail),
            failback: first(c, "failback", |s| s.failback, Failback::Manual),
            checker: first(c, "checker", |s| s.checker, Checker::Tur),
            prio: first(c, "prio", |s| s.prio, Prio::Const),
            hardware_handler: first(
                c,
                "hardware_handler",
                |s| s.hardware_handler.clone(),
                "0".into(),
            ),
            fast_io_fail_tmo: first(
                c,
                "fast_io_fail_tmo",
                |s| s.fast_io_fail_tmo,
                FastIoFail::Seconds(5),
            ),
            dev_loss_tmo: c.iter().find_map(|cand| {
                cand.settings.dev_loss_tmo.map(|v| Resolved {
                    value: v,
                    from: Provenance {
                        layer: cand.layer,
                        description: (cand.describe)("dev_loss_tmo"),
                    },
                })
            }),
            alias: mp.and_then(|m| {
                m.alias.as_ref().map(|a| Resolved {
                    value: a.clone(),
                    from: Provenance {
                        layer: Layer::Multipath,
                        description: describe_key(
                            &format!("multipaths entry {}", m.wwid),
                            &m.origin,
                            &m.lines,
                            "alias",
                        ),
                    },
                })
            }),
        };
        Resolution {
            settings,
            devices,
            multipath: mp.map(|m| format!("multipaths entry {} ({})", m.wwid, m.origin)),
        }
    }
}

pub(crate) mod raw;

#[cfg(test)]
mod tests;
