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

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::blacklist::{Blacklist, RuleSet, Verdict};
use crate::error::Error;

/// Where the daemon looks for its configuration unless `--config` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/multipathd-rs/config.toml";

type Result<T> = std::result::Result<T, Error>;

// ---------------------------------------------------------------------------------------------
// Value types
// ---------------------------------------------------------------------------------------------

/// How the paths of one map are put into priority groups: dm-tables owns the policies (and
/// their keywords, shared by our TOML and multipath.conf), the configuration only names one.
pub use dm_tables::GroupingPolicy;

/// What the map does when no path is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoPathRetry {
    /// Fail I/O at once (no `queue_if_no_path`).
    Fail,
    /// Queue I/O until a path returns.
    Queue,
    /// Queue for this many path-checker intervals, then fail.
    Retries(u32),
}

impl NoPathRetry {
    /// Parses `fail`, `queue` or a number (`0` means fail, as in multipath-tools).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "fail" => Some(Self::Fail),
            "queue" => Some(Self::Queue),
            n => n
                .parse::<u32>()
                .ok()
                .map(|n| if n == 0 { Self::Fail } else { Self::Retries(n) }),
        }
    }

    /// Whether a freshly built table starts with `queue_if_no_path` (queue, or retries left).
    pub fn queues_initially(self) -> bool {
        !matches!(self, Self::Fail)
    }
}

impl fmt::Display for NoPathRetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fail => f.write_str("fail"),
            Self::Queue => f.write_str("queue"),
            Self::Retries(n) => write!(f, "{n}"),
        }
    }
}

/// When the daemon switches back to the highest-priority group after it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failback {
    /// At once.
    Immediate,
    /// Never on its own (only `switchgroup`).
    Manual,
    /// Only when the first path of a group comes back (multipath-tools' followover).
    Followover,
    /// After this many seconds.
    Seconds(u32),
}

impl Failback {
    /// Parses `immediate`, `manual`, `followover` or a number of seconds.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "immediate" => Some(Self::Immediate),
            "manual" => Some(Self::Manual),
            "followover" => Some(Self::Followover),
            n => n.parse::<u32>().ok().map(Self::Seconds),
        }
    }
}

impl fmt::Display for Failback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Immediate => f.write_str("immediate"),
            Self::Manual => f.write_str("manual"),
            Self::Followover => f.write_str("followover"),
            Self::Seconds(n) => write!(f, "{n}"),
        }
    }
}

/// `fast_io_fail_tmo` of the FC remote ports: how long the transport holds I/O after it
/// lost a remote port before failing it to dm-multipath (see [`crate::fc_tmo`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FastIoFail {
    /// `off`: I/O is held until `dev_loss_tmo` removes the port.
    Off,
    /// Seconds (`0` fails I/O at once).
    Seconds(u32),
}

impl FastIoFail {
    /// Parses `off` or a number of seconds (multipath-tools' `-1` also means off).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "off" | "-1" => Some(Self::Off),
            n => n.parse::<u32>().ok().map(Self::Seconds),
        }
    }
}

impl fmt::Display for FastIoFail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::Seconds(n) => write!(f, "{n}"),
        }
    }
}

/// `dev_loss_tmo` of the FC remote ports: how long the transport keeps a lost remote port
/// (and its SCSI devices) before removing them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevLoss {
    /// `infinity`: 2^32-1 seconds, the largest value the kernel takes.
    Infinity,
    /// Seconds.
    Seconds(u32),
}

impl DevLoss {
    /// Parses `infinity` or a number of seconds.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "infinity" => Some(Self::Infinity),
            n => n.parse::<u32>().ok().map(|n| {
                if n == u32::MAX {
                    Self::Infinity
                } else {
                    Self::Seconds(n)
                }
            }),
        }
    }

    /// The value in seconds as the kernel takes it.
    pub fn seconds(self) -> u32 {
        match self {
            Self::Infinity => u32::MAX,
            Self::Seconds(n) => n,
        }
    }
}

impl fmt::Display for DevLoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Infinity => f.write_str("infinity"),
            Self::Seconds(n) => write!(f, "{n}"),
        }
    }
}

/// The path checker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Checker {
    /// SCSI TEST UNIT READY.
    Tur,
    /// A direct-I/O read of the first sector.
    Directio,
    /// The sysfs device state.
    Sysfs,
    /// No checking: paths are always up.
    None,
}

impl Checker {
    /// The keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tur => "tur",
            Self::Directio => "directio",
            Self::Sysfs => "sysfs",
            Self::None => "none",
        }
    }

    /// Parses a keyword (`none` also accepts multipath-tools' spelling `none`).
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Tur, Self::Directio, Self::Sysfs, Self::None]
            .into_iter()
            .find(|c| c.as_str() == s)
    }
}

/// The path prioritizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prio {
    /// ALUA access state: active/optimized 50, non-optimized 10, standby 1, unavailable 0.
    Alua,
    /// Every path priority 1.
    Const,
}

impl Prio {
    /// The keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alua => "alua",
            Self::Const => "const",
        }
    }

    /// Parses a keyword.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Alua, Self::Const]
            .into_iter()
            .find(|p| p.as_str() == s)
    }
}

/// How maps without a `multipaths` alias are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AliasPolicy {
    /// `<alias_prefix>a`, `<alias_prefix>b`, ... kept in the bindings file (aliases crate).
    UserFriendlyNames,
    /// The map is named by its WWID.
    Wwid,
    /// The `alias_template` string, expanded by `aliases::names::expand_template` (variables
    /// `{wwid}`, `{wwid_tail}`, `{host}`, `{n}`).
    Template,
}

impl AliasPolicy {
    /// The keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserFriendlyNames => "user_friendly_names",
            Self::Wwid => "wwid",
            Self::Template => "template",
        }
    }
}

/// Which WWIDs become multipath maps.
///
/// * `no` and `greedy`: every WWID that is not blacklisted gets a map, even with one path.
/// * `yes`: a WWID gets a map when two or more non-blacklisted paths share it, or when it has
///   a `multipaths` entry, or when it is already known (in the bindings/wwids files or an
///   existing map).
/// * `strict`: only WWIDs that are already known or have a `multipaths` entry.
/// * `smart`: like `yes`; multipath-tools additionally waits for a second path to appear
///   before releasing a single path to the system. We decide on what is present (the daemon
///   re-evaluates on every uevent), so `smart` behaves as `yes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindMultipaths {
    /// See the type documentation.
    Yes,
    /// See the type documentation.
    No,
    /// See the type documentation.
    Strict,
    /// See the type documentation.
    Greedy,
    /// See the type documentation.
    Smart,
}

impl FindMultipaths {
    /// The keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Yes => "yes",
            Self::No => "no",
            Self::Strict => "strict",
            Self::Greedy => "greedy",
            Self::Smart => "smart",
        }
    }

    /// Parses a keyword; multipath-tools' `on`/`off` are taken as `yes`/`no`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "yes" | "on" => Some(Self::Yes),
            "no" | "off" => Some(Self::No),
            "strict" => Some(Self::Strict),
            "greedy" => Some(Self::Greedy),
            "smart" => Some(Self::Smart),
            _ => None,
        }
    }

    /// Whether a WWID with `path_count` usable paths becomes a map. `known` means the WWID
    /// has a `multipaths` entry, a binding, or an existing map.
    pub fn should_multipath(self, path_count: usize, known: bool) -> bool {
        match self {
            Self::No | Self::Greedy => path_count > 0 || known,
            Self::Yes | Self::Smart => path_count >= 2 || known,
            Self::Strict => known,
        }
    }
}

macro_rules! str_serde {
    ($t:ty, $what:literal) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                match self.to_string().parse::<u64>() {
                    Ok(n) => s.serialize_u64(n),
                    Err(_) => s.serialize_str(&self.to_string()),
                }
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(
                d: D,
            ) -> std::result::Result<Self, D::Error> {
                #[derive(Deserialize)]
                #[serde(untagged)]
                enum Raw {
                    N(i64),
                    S(String),
                }
                let text = match Raw::deserialize(d)? {
                    Raw::N(n) => n.to_string(),
                    Raw::S(s) => s,
                };
                <$t>::parse(&text)
                    .ok_or_else(|| serde::de::Error::custom(format!("{:?} is not {}", text, $what)))
            }
        }
    };
}

str_serde!(NoPathRetry, "\"fail\", \"queue\" or a number of retries");
str_serde!(
    Failback,
    "\"immediate\", \"manual\", \"followover\" or a number of seconds"
);
str_serde!(FastIoFail, "\"off\" or a number of seconds");
str_serde!(DevLoss, "\"infinity\" or a number of seconds");

/// A regular expression from the configuration, kept with its source text.
///
/// Matching is unanchored, as in multipath-tools (`"IBM"` matches any vendor containing
/// IBM); write `^...$` to anchor.
///
/// A compiled `Regex` costs about 9 KB; an 8k-entry blacklist would hold tens of megabytes.
/// So plain-text patterns (a WWID, optionally between `^` and `$`, the bulk of big files) are
/// matched as text with the regex crate's semantics and never compiled, and real regexes are
/// checked when read but compiled only when first matched.
#[derive(Clone)]
pub struct Pattern {
    source: String,
    matcher: Matcher,
}

#[derive(Clone)]
enum Matcher {
    /// `^`/`$` anchors around text that holds no regex syntax (the text is the source
    /// without them).
    Literal { start: bool, end: bool },
    /// Validated when the pattern is made, compiled on first use: loading or importing a
    /// configuration holds no compiled automata, only the daemon's matching does.
    Regex(std::sync::OnceLock<Option<Regex>>),
}

/// The literal a pattern stands for, when it is plain text between optional anchors.
fn as_literal(source: &str) -> Option<(bool, &str, bool)> {
    let (start, rest) = match source.strip_prefix('^') {
        Some(r) => (true, r),
        None => (false, source),
    };
    let (text, end) = match rest.strip_suffix('$') {
        Some(t) => (t, true),
        None => (rest, false),
    };
    let plain = !text.chars().any(|c| {
        matches!(
            c,
            '\\' | '.' | '+' | '*' | '?' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$'
        ) || c.is_whitespace()
    });
    plain.then_some((start, text, end))
}

/// How many regular expressions [`Pattern::new`] has compiled in this process (plain-text
/// patterns are not compiled). Lets a test count the work a big import does.
pub fn regexes_compiled() -> usize {
    REGEXES_COMPILED.load(std::sync::atomic::Ordering::Relaxed)
}

static REGEXES_COMPILED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn compile(source: &str) -> std::result::Result<Regex, String> {
    REGEXES_COMPILED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Regex::new(source).map_err(|e| e.to_string())
}

impl Pattern {
    /// Compiles a pattern; the error text is regex's.
    pub fn new(source: &str) -> std::result::Result<Self, String> {
        let matcher = match as_literal(source) {
            Some((start, _, end)) => Matcher::Literal { start, end },
            None => {
                compile(source)?;
                Matcher::Regex(std::sync::OnceLock::new())
            }
        };
        Ok(Self {
            source: source.to_string(),
            matcher,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern matches anywhere in `text`.
    pub fn is_match(&self, text: &str) -> bool {
        match &self.matcher {
            Matcher::Literal { start, end } => {
                let lit = &self.source[usize::from(*start)..self.source.len() - usize::from(*end)];
                match (start, end) {
                    (true, true) => text == lit,
                    (true, false) => text.starts_with(lit),
                    (false, true) => text.ends_with(lit),
                    (false, false) => text.contains(lit),
                }
            }
            Matcher::Regex(re) => re
                .get_or_init(|| compile(&self.source).ok())
                .as_ref()
                .is_some_and(|re| re.is_match(text)),
        }
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.source)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

// ---------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------

/// The per-map settings that every layer (defaults, devices, overrides, multipaths) can set.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Settings {
    /// `path_grouping_policy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_grouping_policy: Option<GroupingPolicy>,
    /// `path_selector`, e.g. `"service-time 0"`, `"round-robin 0"`, `"queue-length 0"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_selector: Option<String>,
    /// `features`, the dm-multipath feature string, e.g. `"0"` or `"1 queue_if_no_path"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub features: Option<String>,
    /// `no_path_retry`; wins over `queue_if_no_path` in `features`, as in multipath-tools.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_path_retry: Option<NoPathRetry>,
    /// `failback`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failback: Option<Failback>,
    /// `checker`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checker: Option<Checker>,
    /// `prio`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prio: Option<Prio>,
    /// `hardware_handler`, e.g. `"1 alua"` or `"0"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hardware_handler: Option<String>,
    /// `fast_io_fail_tmo` of the FC remote ports the map's paths run through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fast_io_fail_tmo: Option<FastIoFail>,
    /// `dev_loss_tmo` of the FC remote ports; unset keeps the driver's value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev_loss_tmo: Option<DevLoss>,
}

/// The names of the [`Settings`] keys, in display order.
pub const SETTING_KEYS: [&str; 10] = [
    "path_grouping_policy",
    "path_selector",
    "features",
    "no_path_retry",
    "failback",
    "checker",
    "prio",
    "hardware_handler",
    "fast_io_fail_tmo",
    "dev_loss_tmo",
];

impl Settings {
    /// The value of one key as text, `None` when unset. `key` is one of [`SETTING_KEYS`].
    pub fn get_text(&self, key: &str) -> Option<String> {
        match key {
            "path_grouping_policy" => self.path_grouping_policy.map(|v| v.as_str().to_string()),
            "path_selector" => self.path_selector.clone(),
            "features" => self.features.clone(),
            "no_path_retry" => self.no_path_retry.map(|v| v.to_string()),
            "failback" => self.failback.map(|v| v.to_string()),
            "checker" => self.checker.map(|v| v.as_str().to_string()),
            "prio" => self.prio.map(|v| v.as_str().to_string()),
            "hardware_handler" => self.hardware_handler.clone(),
            "fast_io_fail_tmo" => self.fast_io_fail_tmo.map(|v| v.to_string()),
            "dev_loss_tmo" => self.dev_loss_tmo.map(|v| v.to_string()),
            _ => None,
        }
    }

    /// Whether no key is set.
    pub fn is_empty(&self) -> bool {
        SETTING_KEYS.iter().all(|k| self.get_text(k).is_none())
    }
}

/// Where an entry (or one key of it) was defined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// Compiled in (built-in defaults, hardware table, default blacklist).
    Builtin,
    /// A line of a configuration file.
    File {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Builtin => f.write_str("built-in"),
            Self::File { path, line } => write!(f, "{} line {line}", path.display()),
        }
    }
}

/// Lines of the individual keys of an entry (key name to 1-based line); empty for built-ins.
pub type KeyLines = BTreeMap<String, usize>;

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

/// A `[[devices]]` entry (or a built-in hardware table entry).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceEntry {
    /// Regex matched against the SCSI vendor (trimmed).
    pub vendor: Pattern,
    /// Regex matched against the SCSI product (trimmed).
    pub product: Pattern,
    /// The settings it imposes.
    #[serde(flatten)]
    pub settings: Settings,
    /// Where it was defined.
    #[serde(skip)]
    pub origin: Origin,
    /// Line of each key.
    #[serde(skip)]
    pub lines: KeyLines,
    /// For built-in entries: the vendor recommendation the entry follows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl DeviceEntry {
    /// Whether vendor and product both match.
    pub fn matches(&self, vendor: &str, product: &str) -> bool {
        self.vendor.is_match(vendor.trim()) && self.product.is_match(product.trim())
    }

    /// `VENDOR/PRODUCT` as written.
    pub fn label(&self) -> String {
        format!("{}/{}", self.vendor.as_str(), self.product.as_str())
    }
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

/// What the discovery layer knows about a path, as plain data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathIdentity {
    /// Kernel name, e.g. `sda` (a leading `/dev/` is ignored).
    pub devnode: String,
    /// The WWID as multipath-tools computes it (udev `ID_SERIAL`), when known.
    pub wwid: Option<String>,
    /// SCSI vendor (padding is trimmed before matching).
    pub vendor: String,
    /// SCSI product (padding is trimmed before matching).
    pub product: String,
    /// multipath-tools' protocol string: `scsi:fcp`, `scsi:iscsi`, `scsi:sas`, `scsi:unspec`,
    /// `nvme`, `undef`, ...
    pub protocol: Option<String>,
}

impl PathIdentity {
    /// The devnode without `/dev/`.
    pub fn kernel_name(&self) -> &str {
        self.devnode.strip_prefix("/dev/").unwrap_or(&self.devnode)
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
