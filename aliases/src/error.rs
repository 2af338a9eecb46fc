//! The crate's single error type.

use std::path::PathBuf;

/// Everything that can go wrong in this crate. Every variant names the file, WWID or alias it
/// is about, and the messages read as sentences.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read, written, locked or synced.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What we tried to do ("read", "write", "lock", ...).
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file has a syntax error; nothing was written.
    #[error("{}:{line}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A name is not a valid device-mapper name.
    #[error("invalid alias {alias:?}: {reason}")]
    InvalidAlias {
        /// The rejected name.
        alias: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// A WWID is empty or contains characters that cannot be stored.
    #[error("invalid WWID {wwid:?}: {reason}")]
    InvalidWwid {
        /// The rejected WWID.
        wwid: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// One alias is claimed by two WWIDs.
    #[error(
        "alias {alias:?} is claimed by WWID {wwid_a} ({source_a}) and by WWID {wwid_b} ({source_b})"
    )]
    AliasConflict {
        /// The contested alias.
        alias: String,
        /// First claimant.
        wwid_a: String,
        /// Where the first claim comes from.
        source_a: String,
        /// Second claimant.
        wwid_b: String,
        /// Where the second claim comes from.
        source_b: String,
    },
    /// One WWID has two different aliases.
    #[error("WWID {wwid} has alias {alias_a:?} ({source_a}) and alias {alias_b:?} ({source_b})")]
    WwidConflict {
        /// The WWID.
        wwid: String,
        /// First alias.
        alias_a: String,
        /// Where it comes from.
        source_a: String,
        /// Second alias.
        alias_b: String,
        /// Where it comes from.
        source_b: String,
    },
    /// A file is corrupt and must be repaired before anything is allocated in it.
    #[error(
        "{} is corrupt at line {line} ({message}); refusing to change it until it is fixed or `aliases repair` is run",
        path.display()
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// First bad line.
        line: usize,
        /// What is wrong there.
        message: String,
    },
    /// The WWID is named on a bad or conflicting line; it gets no name until that is fixed.
    #[error(
        "WWID {wwid} gets no name until its bindings are fixed (`aliases check`, then `aliases repair` or an edit): {problem}"
    )]
    Disputed {
        /// The WWID.
        wwid: String,
        /// The problem, naming the file and line.
        problem: String,
    },
    /// The WWID already has a different alias and the caller did not ask to replace it.
    #[error(
        "WWID {wwid} already has alias {existing:?}; refusing to replace it with {requested:?} (remove it first)"
    )]
    AlreadyBound {
        /// The WWID.
        wwid: String,
        /// Its current alias.
        existing: String,
        /// What was asked for.
        requested: String,
    },
    /// No binding exists for this WWID.
    #[error("WWID {wwid} has no alias")]
    NotFound {
        /// The WWID.
        wwid: String,
    },
    /// A live device-mapper map uses the alias, so it may not be removed.
    #[error(
        "alias {alias:?} of WWID {wwid} is used by a live device-mapper map; use --force to remove it anyway"
    )]
    InUse {
        /// The alias.
        alias: String,
        /// The WWID.
        wwid: String,
    },
    /// A template could not be expanded.
    #[error("template {template:?}: {message}")]
    Template {
        /// The template text.
        template: String,
        /// What is wrong.
        message: String,
    },
    /// The user_friendly_names id space is exhausted (practically impossible).
    #[error("no free user_friendly_names id is left for prefix {prefix:?}")]
    Exhausted {
        /// The alias prefix.
        prefix: String,
    },
    /// The TOML table could not be serialized.
    #[error("cannot serialize the alias table: {0}")]
    Serialize(String),
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn parse(path: impl Into<PathBuf>, line: usize, message: impl Into<String>) -> Self {
        Error::Parse {
            path: path.into(),
            line,
            message: message.into(),
        }
    }
}
