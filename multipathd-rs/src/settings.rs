//! The configuration's value types, shared by [`crate::config`] (the file and the resolver),
//! [`crate::blacklist`] (rules over [`PathIdentity`]) and [`crate::hwtable`] (built-in
//! [`DeviceEntry`]s). A leaf: it imports nothing of those three, so they form no circle
//! (config uses blacklist and hwtable; both use only this module). [`crate::config`]
//! re-exports every item, so `config::Pattern` and friends keep working.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use regex::Regex;
use serde::{Deserialize, Serialize};

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
