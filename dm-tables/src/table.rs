//! The multipath target's table line: model, parser ([`FromStr`]) and renderer ([`Display`]).
//!
//! Grammar (drivers/md/dm-mpath.c, constructor and STATUSTYPE_TABLE):
//! `start length multipath <#features> [feature...] <#hwh args> [hwh_name [hwh_arg...]]
//!  <#groups> <initial group> { <selector> <#sel args> [sel arg...] <#paths> <#path args>
//!  { <major:minor> [path arg...] }+ }*`

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::devno::DevNo;
use crate::error::{Error, Result};
use crate::tokens::{Tokens, split_name_prefix};
use crate::words::{Word, Words, words};

/// `queue_mode` feature values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueMode {
    Bio,
    Rq,
    Mq,
    Nvme,
}

impl QueueMode {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueMode::Bio => "bio",
            QueueMode::Rq => "rq",
            QueueMode::Mq => "mq",
            QueueMode::Nvme => "nvme",
        }
    }
}

/// One table feature. Unknown features are kept verbatim (one token each).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    QueueIfNoPath,
    PgInitRetries(u32),
    PgInitDelayMsecs(u32),
    QueueMode(QueueMode),
    RetainAttachedHwHandler,
    /// A feature word this crate does not know, kept as is.
    Other(String),
}

impl Feature {
    /// How many words the feature takes in the feature count.
    pub fn word_count(&self) -> usize {
        match self {
            Feature::PgInitRetries(_) | Feature::PgInitDelayMsecs(_) | Feature::QueueMode(_) => 2,
            _ => 1,
        }
    }

    /// Words a known feature name uses, or None when the word is not a known feature name.
    fn known_word_count(word: &str) -> Option<usize> {
        match word {
            "queue_if_no_path" | "retain_attached_hw_handler" => Some(1),
            "pg_init_retries" | "pg_init_delay_msecs" | "queue_mode" => Some(2),
            _ => None,
        }
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Feature::QueueIfNoPath => f.write_str("queue_if_no_path"),
            Feature::PgInitRetries(n) => write!(f, "pg_init_retries {n}"),
            Feature::PgInitDelayMsecs(n) => write!(f, "pg_init_delay_msecs {n}"),
            Feature::QueueMode(m) => write!(f, "queue_mode {}", m.as_str()),
            Feature::RetainAttachedHwHandler => f.write_str("retain_attached_hw_handler"),
            Feature::Other(s) => f.write_str(s),
        }
    }
}

/// Hardware handler (`scsi_dh` module name) with its arguments.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HwHandler {
    pub name: Word,
    #[serde(default)]
    pub args: Words,
}

/// Path selector names. Unknown names are kept.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Selector {
    RoundRobin,
    QueueLength,
    ServiceTime,
    HistoricalServiceTime,
    Other(String),
}

impl Selector {
    pub fn name(&self) -> &str {
        match self {
            Selector::RoundRobin => "round-robin",
            Selector::QueueLength => "queue-length",
            Selector::ServiceTime => "service-time",
            Selector::HistoricalServiceTime => "historical-service-time",
            Selector::Other(s) => s,
        }
    }

    pub fn from_name(name: &str) -> Selector {
        match name {
            "round-robin" => Selector::RoundRobin,
            "queue-length" => Selector::QueueLength,
            "service-time" => Selector::ServiceTime,
            "historical-service-time" => Selector::HistoricalServiceTime,
            other => Selector::Other(other.to_string()),
        }
    }

    /// The per-path arguments the kernel prints for this selector when none were given
    /// (`repeat_count` 1, and relative throughput 1 for service-time). Used by the table builder
    /// so a table we load reads back identical.
    pub fn default_path_args(&self) -> Words {
        match self {
            Selector::ServiceTime => words(&["1", "1"]),
            Selector::RoundRobin | Selector::QueueLength => words(&["1"]),
            Selector::HistoricalServiceTime | Selector::Other(_) => words::<&str>(&[]),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One path in a table: device number plus the selector's per-path arguments.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TablePath {
    pub devno: DevNo,
    #[serde(default)]
    pub args: Words,
}

/// One priority group. All its paths carry the same number of args (the grammar has one count
/// per group); [`MultipathTable::validate`] checks that for built tables.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PathGroup {
    pub selector: Selector,
    #[serde(default)]
    pub selector_args: Words,
    pub paths: Vec<TablePath>,
}

impl PathGroup {
    pub fn path_arg_count(&self) -> usize {
        self.paths.first().map_or(0, |p| p.args.len())
    }
}

/// A multipath table line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MultipathTable {
    pub start: u64,
    pub length: u64,
    #[serde(default)]
    pub features: Vec<Feature>,
    #[serde(default)]
    pub hw_handler: Option<HwHandler>,
    /// 1-based group number to start with; 0 = let the kernel pick (the first).
    pub initial_group: u32,
    #[serde(default)]
    pub groups: Vec<PathGroup>,
}

impl MultipathTable {
    /// Every path of every group, in table order.
    pub fn paths(&self) -> impl Iterator<Item = &TablePath> {
        self.groups.iter().flat_map(|g| g.paths.iter())
    }

    /// Every device number of the table, in table order.
    pub fn devnos(&self) -> Vec<DevNo> {
        self.paths().map(|p| p.devno).collect()
    }

    pub fn has_feature(&self, f: &Feature) -> bool {
        self.features.contains(f)
    }

    /// Parameters only (what follows `multipath`), as handed to the kernel's table_load.
    pub fn params(&self) -> String {
        let mut s = String::new();
        self.write_params(&mut s).unwrap_or(());
        s
    }

    fn write_params(&self, f: &mut impl fmt::Write) -> fmt::Result {
        let words: usize = self.features.iter().map(Feature::word_count).sum();
        write!(f, "{words}")?;
        for feat in &self.features {
            write!(f, " {feat}")?;
        }
        match &self.hw_handler {
            None => f.write_str(" 0")?,
            Some(h) => {
                write!(f, " {} {}", h.args.len() + 1, h.name)?;
                for a in h.args.iter() {
                    write!(f, " {a}")?;
                }
            }
        }
        write!(f, " {} {}", self.groups.len(), self.initial_group)?;
        for g in &self.groups {
            write!(f, " {} {}", g.selector, g.selector_args.len())?;
            for a in g.selector_args.iter() {
                write!(f, " {a}")?;
            }
            write!(f, " {} {}", g.paths.len(), g.path_arg_count())?;
            for p in &g.paths {
                write!(f, " {}", p.devno)?;
                for a in p.args.iter() {
                    write!(f, " {a}")?;
                }
            }
        }
        Ok(())
    }

    /// Checks what the kernel's constructor checks beyond the grammar: a non-zero length, no
    /// empty group, the same number of per-path args within a group, an initial group in range,
    /// no device twice, tokens without whitespace. `map` names the map in the error.
    pub fn validate(&self, map: &str) -> Result<()> {
        let bad = |reason: String| {
            Err(Error::InvalidTable {
                map: map.to_string(),
                reason,
            })
        };
        if self.length == 0 {
            return bad("the length is 0 sectors".into());
        }
        if self.initial_group as usize > self.groups.len() {
            return bad(format!(
                "initial group {} is beyond the {} group(s)",
                self.initial_group,
                self.groups.len()
            ));
        }
        let word_ok = |w: &str| !w.is_empty() && !w.chars().any(char::is_whitespace);
        for feat in &self.features {
            if let Feature::Other(w) = feat
                && (!word_ok(w) || Feature::known_word_count(w).is_some())
            {
                return bad(format!("feature '{w}' is not a single unknown word"));
            }
        }
        if let Some(h) = &self.hw_handler
            && (!word_ok(&h.name) || !h.args.iter().all(|a| word_ok(a)))
        {
            return bad(format!(
                "hardware handler '{}' has an empty or multi-word token",
                h.name
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, g) in self.groups.iter().enumerate() {
            let n = i + 1;
            if g.paths.is_empty() {
                return bad(format!("path group {n} has no paths"));
            }
            if !word_ok(g.selector.name()) || !g.selector_args.iter().all(|a| word_ok(a)) {
                return bad(format!(
                    "path group {n} has an empty or multi-word selector token"
                ));
            }
            let count = g.path_arg_count();
            for p in &g.paths {
                if p.args.len() != count {
                    return bad(format!(
                        "path group {n}: path {} has {} args, but the group's first path has {count}",
                        p.devno,
                        p.args.len()
                    ));
                }
                if !p.args.iter().all(|a| word_ok(a)) {
                    return bad(format!(
                        "path {} has an empty or multi-word argument",
                        p.devno
                    ));
                }
                if !seen.insert(p.devno) {
                    return bad(format!("device {} appears more than once", p.devno));
                }
            }
        }
        Ok(())
    }

    /// Parses one line, with or without a leading `name: `.
    pub fn parse_line(line: &str) -> Result<MultipathTable> {
        let (_, rest) = split_name_prefix(line);
        let mut t = Tokens::new(rest);
        let (start, length) = t.header()?;
        let table = Self::parse_params(&mut t, start, length)?;
        t.finish()?;
        Ok(table)
    }

    pub(crate) fn parse_params(
        t: &mut Tokens<'_>,
        start: u64,
        length: u64,
    ) -> Result<MultipathTable> {
        let nfeat = t.count("the feature count", 1)?;
        let feat_end = t.pos() + nfeat;
        let mut features = Vec::new();
        while t.pos() < feat_end {
            let pos = t.pos();
            let word = t.next("a feature")?;
            match Feature::known_word_count(word) {
                Some(2) if t.pos() >= feat_end => {
                    return Err(t.err_at(
                        pos,
                        format!("feature '{word}' needs a value within the feature count {nfeat}"),
                    ));
                }
                _ => {}
            }
            features.push(match word {
                "queue_if_no_path" => Feature::QueueIfNoPath,
                "retain_attached_hw_handler" => Feature::RetainAttachedHwHandler,
                "pg_init_retries" => Feature::PgInitRetries(t.number("the pg_init_retries value")?),
                "pg_init_delay_msecs" => {
                    Feature::PgInitDelayMsecs(t.number("the pg_init_delay_msecs value")?)
                }
                "queue_mode" => {
                    let vpos = t.pos();
                    Feature::QueueMode(match t.next("a queue mode")? {
                        "bio" => QueueMode::Bio,
                        "rq" => QueueMode::Rq,
                        "mq" => QueueMode::Mq,
                        "nvme" => QueueMode::Nvme,
                        _ => {
                            return Err(
                                t.err_at(vpos, "expected a queue mode (bio, rq, mq or nvme)")
                            );
                        }
                    })
                }
                other => Feature::Other(other.to_string()),
            });
        }
        let nhw = t.count("the hardware handler arg count", 1)?;
        let hw_handler = if nhw == 0 {
            None
        } else {
            let name = t.word("a hardware handler name")?;
            Some(HwHandler {
                name,
                args: t.words(nhw - 1, "a hardware handler arg")?,
            })
        };
        // Each group takes at least 5 tokens (selector, #args, #paths, #path args, one path).
        let ngroups = t.count("the path group count", 5)?;
        let ipos = t.pos();
        let initial_group: u32 = t.number("the initial path group number")?;
        if initial_group as usize > ngroups {
            return Err(t.err_at(
                ipos,
                format!("initial path group {initial_group} is beyond the {ngroups} group(s)"),
            ));
        }
        let mut groups = Vec::with_capacity(ngroups);
        for _ in 0..ngroups {
            let selector = Selector::from_name(t.next("a path selector name")?);
            let nsel = t.count("the path selector arg count", 1)?;
            let selector_args = t.words(nsel, "a path selector arg")?;
            let ppos = t.pos();
            let npaths = t.count("the path count", 1)?;
            if npaths == 0 {
                return Err(t.err_at(
                    ppos,
                    "expected a path count of at least 1 (the kernel refuses empty groups)",
                ));
            }
            let npargs = t.number::<usize>("the per-path arg count")?;
            let mut paths = Vec::with_capacity(npaths);
            for _ in 0..npaths {
                let devno = t.devno("a path device major:minor")?;
                paths.push(TablePath {
                    devno,
                    args: t.words(npargs, "a per-path selector arg")?,
                });
            }
            groups.push(PathGroup {
                selector,
                selector_args,
                paths,
            });
        }
        Ok(MultipathTable {
            start,
            length,
            features,
            hw_handler,
            initial_group,
            groups,
        })
    }
}

impl fmt::Display for MultipathTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} multipath ", self.start, self.length)?;
        self.write_params(f)
    }
}

impl FromStr for MultipathTable {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        MultipathTable::parse_line(s)
    }
}
