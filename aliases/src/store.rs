//! The alias store: the native table, multipath-tools' bindings file and the `multipaths {}`
//! aliases of multipath.conf, combined with multipath-tools' precedence.
//!
//! Every change happens under exclusive locks (the table's lock file, the bindings file's lock
//! file, then the bindings file itself as multipath-tools locks it), re-reads the files under
//! them, refuses to touch a corrupt table, replaces the table atomically and changes the
//! bindings file in place (see [`crate::fsutil::LockedFile`]). The table and the bindings file are kept in step: a binding present in
//! only one of them (for example after a crash between the two writes) is copied to the other
//! by the next change.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

use crate::Error;
use crate::bindings::BindingsFile;
use crate::fsutil::{self, FileKey, LockGuard, LockedFile};
use crate::mpconf::{self, ConfFile};
use crate::names::{self, validate_alias, validate_wwid};
use crate::table::{self, Entry, Table};

/// Default location of the native table.
pub const DEFAULT_TABLE: &str = "/etc/multipathd-rs/aliases.toml";
/// Default location of multipath-tools' bindings file.
pub const DEFAULT_BINDINGS: &str = "/etc/multipath/bindings";

/// Where the store's files are. Every part is optional; at least one of `table` and
/// `bindings` is needed to create bindings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorePaths {
    /// The native TOML table (read and written).
    pub table: Option<PathBuf>,
    /// multipath-tools' bindings file (read and written, byte-preserving).
    pub bindings: Option<PathBuf>,
    /// multipath.conf (read only: `multipaths {}` aliases and `defaults` policy settings).
    pub config: Option<PathBuf>,
    /// conf.d directory whose `*.conf` files are read after `config` (read only).
    pub config_dir: Option<PathBuf>,
}

/// How a new WWID gets its name when it has neither an explicit alias nor a binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "policy", rename_all = "snake_case")]
pub enum Policy {
    /// multipath-tools' user_friendly_names: `prefix` + bijective base-26 (`mpatha`..`mpathz`,
    /// `mpathaa`, ...), lowest id not bound and not used by a live map.
    UserFriendlyNames {
        /// `alias_prefix` (default `mpath`).
        prefix: String,
    },
    /// A template such as `domU-{label}_{wwid_tail}`; see [`crate::names::expand_template`].
    Template {
        /// The template text.
        template: String,
    },
    /// The WWID itself is the map name; nothing is stored.
    Wwid,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::UserFriendlyNames {
            prefix: names::DEFAULT_ALIAS_PREFIX.to_string(),
        }
    }
}

impl Policy {
    /// The policy multipath.conf asks for: `user_friendly_names` and `alias_prefix` from the
    /// `defaults` sections (later files and later lines win). None if the files say nothing.
    pub fn from_config(files: &[ConfFile]) -> Option<Policy> {
        let mut ufn: Option<bool> = None;
        let mut prefix: Option<String> = None;
        for f in files {
            for s in f.sections_named("defaults") {
                if let Some(v) = s.get("user_friendly_names") {
                    ufn = Some(matches!(v, "yes" | "1" | "on"));
                }
                if let Some(v) = s.get("alias_prefix") {
                    prefix = Some(v.to_string());
                }
            }
        }
        match (ufn, prefix) {
            (Some(false), _) => Some(Policy::Wwid),
            (Some(true), p) | (None, p @ Some(_)) => Some(Policy::UserFriendlyNames {
                prefix: p.unwrap_or_else(|| names::DEFAULT_ALIAS_PREFIX.to_string()),
            }),
            (None, None) => None,
        }
    }
}

/// Inputs of one allocation besides the WWID.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllocateContext<'a> {
    /// An alias the caller's configuration sets for this WWID (highest precedence).
    pub explicit_alias: Option<&'a str>,
    /// Live device-mapper maps as `(name, uuid or wwid)`; a `mpath-` prefix of the uuid is
    /// stripped. Their names are never handed to another WWID.
    pub live_maps: &'a [(String, String)],
    /// Template variables (`label`, ...), name -> value.
    pub vars: &'a [(&'a str, &'a str)],
    /// Comment stored with a newly created entry.
    pub comment: Option<&'a str>,
}

/// Where a binding or claim comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// The native table.
    Table {
        /// File.
        path: PathBuf,
        /// Line of the entry (0 if not yet written).
        line: usize,
    },
    /// The bindings file.
    Bindings {
        /// File.
        path: PathBuf,
        /// Line.
        line: usize,
    },
    /// A `multipaths { multipath { } }` entry.
    Config {
        /// File.
        path: PathBuf,
        /// Line of the `alias` attribute.
        line: usize,
    },
    /// A live device-mapper map.
    LiveMap {
        /// The map name.
        name: String,
    },
    /// The caller's explicit alias ([`AllocateContext::explicit_alias`] or `set`).
    Request,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Table { path, line }
            | Origin::Bindings { path, line }
            | Origin::Config { path, line } => {
                if *line > 0 {
                    write!(f, "{} line {line}", path.display())
                } else {
                    write!(f, "{}", path.display())
                }
            }
            Origin::LiveMap { name } => write!(f, "live device-mapper map {name}"),
            Origin::Request => write!(f, "this request"),
        }
    }
}

/// How an alias was chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AliasSource {
    /// The caller's explicit alias.
    Explicit,
    /// A `multipaths {}` alias from multipath.conf.
    Config,
    /// An existing binding.
    Existing,
    /// Newly generated by the policy and stored.
    Generated,
    /// The WWID itself.
    Wwid,
}

/// The result of [`Store::allocate`] and [`Store::lookup`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alias {
    /// The device-mapper name to use.
    pub name: String,
    /// The WWID.
    pub wwid: String,
    /// How it was chosen.
    pub source: AliasSource,
    /// Where it is recorded (empty for generated-now or WWID names).
    pub origins: Vec<Origin>,
}

/// One row of [`Store::list`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listed {
    /// WWID.
    pub wwid: String,
    /// Alias in effect (a config alias wins over a stored binding).
    pub alias: String,
    /// Every place that names this WWID.
    pub origins: Vec<Origin>,
    /// Table comment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Table `created_by`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Table `created_at`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// multipath-tools' bindings file.
    Bindings,
    /// A `multipaths {}` drop-in for multipath.conf / conf.d.
    MultipathConf,
    /// The native TOML table.
    Toml,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// Bindings added.
    pub added: Vec<(String, String)>,
    /// Bindings that were already present with the same alias.
    pub unchanged: usize,
}

/// What repair did to one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepairedFile {
    /// The repaired file.
    pub path: PathBuf,
    /// Copy of the corrupt original.
    pub backup: PathBuf,
    /// Dropped pieces: (line, text, reason).
    pub dropped: Vec<(usize, String, String)>,
    /// Valid entries kept.
    pub kept: usize,
}

/// A `multipaths {}` alias.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ConfAlias {
    wwid: String,
    alias: String,
    origin: Origin,
}

/// A stored binding (table and/or bindings file).
#[derive(Debug, Clone)]
struct StoredBinding {
    wwid: String,
    alias: String,
    in_table: Option<usize>,
    in_bindings: Option<usize>,
}

/// Files loaded under the lock.
struct State {
    table: Option<Table>,
    bindings: Option<BindingsFile>,
    /// The bindings file's bytes as they are on disk (the base of an in-place change).
    bindings_disk: Vec<u8>,
    /// An interrupted in-place change was finished in memory and must be written.
    bindings_recovered: bool,
    conf: Vec<ConfAlias>,
    /// Identity of the table / bindings file versions the content was read from (taken
    /// *before* reading, or right after our own write under the lock), so the cache can never
    /// pair older content with a newer file.
    table_key: Option<FileKey>,
    bindings_key: Option<FileKey>,
}

/// Merged view of the stored bindings and the config aliases.
struct View {
    /// WWIDs named by a line or claim that lost a conflict (or is malformed), with the
    /// problem: they get no name until a human fixes the files (fail closed).
    disputed: HashMap<String, String>,
    /// Aliases written on such lines: never handed to another WWID.
    reserved: BTreeSet<String>,
    stored: Vec<StoredBinding>,
    stored_by_wwid: HashMap<String, usize>,
    /// alias -> (wwid, origin) for every claim except live maps.
    claims: HashMap<String, (String, Origin)>,
    conf_by_wwid: HashMap<String, usize>,
}

impl View {
    fn stored_alias(&self, wwid: &str) -> Option<&StoredBinding> {
        self.stored_by_wwid.get(wwid).map(|&i| &self.stored[i])
    }
}

#[derive(Default)]
struct Cache {
    table: Option<(FileKey, Table)>,
    bindings: Option<(FileKey, BindingsFile, Vec<u8>)>,
}

/// The locks of one change: our own lock files, then the bindings file itself (as
/// multipath-tools locks it).
struct Locks {
    _own: Vec<LockGuard>,
    bindings: Option<LockedFile>,
}

/// The alias store. Cheap to create; every operation re-reads the files (under the lock for
/// changes), so one `Store` may be used for the life of a daemon.
pub struct Store {
    paths: StorePaths,
    policy: Policy,
    host: String,
    cache: Mutex<Cache>,
    /// The problems the last load found (bad lines, conflicts), as sentences.
    problems: Mutex<Vec<String>>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("paths", &self.paths)
            .field("policy", &self.policy)
            .field("host", &self.host)
            .finish()
    }
}

fn live_wwid(uuid: &str) -> &str {
    uuid.strip_prefix("mpath-").unwrap_or(uuid)
}

impl Store {
    /// Opens a store. `policy` None means: what multipath.conf's `defaults` say, else
    /// user_friendly_names with prefix `mpath`. The config files are parsed here so that a
    /// broken multipath.conf is reported at once.
    pub fn open(paths: StorePaths, policy: Option<Policy>) -> Result<Self, Error> {
        let policy = match policy {
            Some(p) => p,
            None => Policy::from_config(&load_conf(&paths)?).unwrap_or_default(),
        };
        if let Policy::UserFriendlyNames { prefix } = &policy
            && !prefix.is_empty()
        {
            validate_alias(prefix)?;
        }
        Ok(Store {
            paths,
            policy,
            host: names::host_name(),
            cache: Mutex::new(Cache::default()),
            problems: Mutex::new(Vec::new()),
        })
    }

    /// Overrides the host name recorded in `created_by` (tests, cluster layers).
    pub fn with_host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// The paths in use.
    pub fn paths(&self) -> &StorePaths {
        &self.paths
    }

    /// The policy in use.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The problems (bad lines, conflicts between files) the last read of the files found.
    /// They do not stop the store: the bad line is kept and skipped, and the WWIDs it names get
    /// no name until it is fixed. Callers report them loudly.
    pub fn problems(&self) -> Vec<String> {
        self.problems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn lock(&self) -> Result<Locks, Error> {
        let mut own = Vec::new();
        if let Some(t) = &self.paths.table {
            own.push(fsutil::lock_exclusive(t)?);
        }
        let mut bindings = None;
        if let Some(b) = &self.paths.bindings {
            own.push(fsutil::lock_exclusive(b)?);
            bindings = LockedFile::open(b, true)?;
        }
        Ok(Locks {
            _own: own,
            bindings,
        })
    }

    /// Loads every file (using the cache when a file is unchanged). A corrupt table is an
    /// error; bad lines of the bindings file are kept and reported (see [`Store::problems`]).
    /// `locked` is the bindings file when the caller holds its lock; otherwise it is read under
    /// a shared lock.
    fn load(&self, locked: Option<&LockedFile>) -> Result<State, Error> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let mut table_key = None;
        let mut bindings_key = None;
        let table = match &self.paths.table {
            Some(p) => {
                let key = fsutil::file_key(p)?;
                table_key = key;
                match (key, cache.table.take()) {
                    (Some(k), Some((ck, t))) if k == ck => Some(t),
                    _ => Some(Table::load(p)?),
                }
            }
            None => None,
        };
        let mut bindings_disk = Vec::new();
        let mut bindings_recovered = false;
        let bindings = match &self.paths.bindings {
            Some(p) => {
                let key = fsutil::file_key(p)?;
                bindings_key = key;
                let journal = fsutil::pending_journal(p)?.is_some();
                match (key, cache.bindings.take()) {
                    (Some(k), Some((ck, b, disk))) if k == ck && !journal => {
                        bindings_disk = disk;
                        Some(b)
                    }
                    _ => {
                        let shared;
                        let lf = match locked {
                            Some(lf) => Some(lf),
                            None => {
                                shared = LockedFile::open(p, false)?;
                                shared.as_ref()
                            }
                        };
                        match lf {
                            Some(lf) => {
                                bindings_disk = lf.read_all()?;
                                let (b, rec) = BindingsFile::from_disk(&bindings_disk, p)?;
                                bindings_recovered = rec;
                                Some(b)
                            }
                            None => Some(BindingsFile::new_empty(p)),
                        }
                    }
                }
            }
            None => None,
        };
        drop(cache);
        Ok(State {
            table,
            bindings,
            bindings_disk,
            bindings_recovered,
            conf: conf_aliases(&load_conf(&self.paths)?)?,
            table_key,
            bindings_key,
        })
    }

    /// Puts freshly written (or read) files back into the cache.
    fn remember(&self, state: State) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.table = state.table_key.zip(state.table);
        cache.bindings = match (state.bindings_key, state.bindings, state.bindings_recovered) {
            (Some(k), Some(b), false) => Some((k, b, state.bindings_disk)),
            _ => None,
        };
    }

    /// Builds the merged view. Conflicts and bad lines do not stop it (multipath-tools skips a
    /// bad line and goes on): they are recorded for [`Store::problems`], the losing line is
    /// skipped and the WWIDs it names are refused a name.
    fn view(&self, state: &State) -> Result<View, Error> {
        let (view, problems) = build_view(state);
        let mut texts: Vec<String> = Vec::new();
        if let Some(b) = &state.bindings {
            texts.extend(b.problems.iter().map(|p| {
                let text = b.lines.get(p.line - 1).map_or("", |l| l.text.as_str());
                format!(
                    "{} line {}: {text:?} is skipped (and kept in the file): {}",
                    b.path.display(),
                    p.line,
                    p.message
                )
            }));
        }
        texts.extend(problems.iter().map(ToString::to_string));
        *self.problems.lock().unwrap_or_else(|e| e.into_inner()) = texts;
        Ok(view)
    }

    /// Writes the files whose content changed: the table first, then the bindings file.
    fn write(
        &self,
        state: &mut State,
        locked: Option<&LockedFile>,
        table_changed: bool,
        bindings_changed: bool,
    ) -> Result<(), Error> {
        if table_changed && let Some(t) = &mut state.table {
            fsutil::remove_stale_temps(&t.path)?;
            t.generation += 1;
            fsutil::atomic_write(&t.path, t.render().as_bytes(), 0o644)?;
            // We hold the lock: nobody else can have replaced the file since our rename.
            state.table_key = fsutil::file_key(&t.path)?;
        }
        if (bindings_changed || state.bindings_recovered)
            && let Some(b) = &state.bindings
        {
            let Some(lf) = locked else {
                return Err(Error::io(
                    "write",
                    &b.path,
                    std::io::Error::other("the bindings file is not locked"),
                ));
            };
            // In place, never by rename: multipath-tools may be waiting for the lock on this
            // very inode and would append to a replaced one.
            let new = b.render_bytes();
            lf.replace(&state.bindings_disk, &new)?;
            state.bindings_disk = new;
            state.bindings_recovered = false;
            state.bindings_key = fsutil::file_key(&b.path)?;
        }
        Ok(())
    }

    /// Copies bindings present in only one of table / bindings file to the other.
    fn sync(&self, state: &mut State, view: &View) -> (bool, bool) {
        let mut tc = false;
        let mut bc = false;
        for sb in &view.stored {
            if view.disputed.contains_key(&sb.wwid) {
                continue;
            }
            if sb.in_table.is_none()
                && let Some(t) = &mut state.table
            {
                t.entries.push(Entry {
                    wwid: sb.wwid.clone(),
                    alias: sb.alias.clone(),
                    comment: None,
                    created_by: None,
                    created_at: None,
                });
                t.lines.push(0);
                tc = true;
            }
            // Never add a second line for an alias a bad or conflicting line already holds.
            if sb.in_bindings.is_none()
                && !view.reserved.contains(&sb.alias)
                && let Some(b) = &mut state.bindings
            {
                b.push(&sb.alias, &sb.wwid);
                bc = true;
            }
        }
        (tc, bc)
    }

    fn new_entry(&self, wwid: &str, alias: &str, comment: Option<&str>) -> Entry {
        Entry {
            wwid: wwid.to_string(),
            alias: alias.to_string(),
            comment: comment.map(str::to_string),
            created_by: Some(self.host.clone()),
            created_at: Some(names::rfc3339_utc(SystemTime::now())),
        }
    }

    fn add(&self, state: &mut State, entry: Entry) {
        if let Some(b) = &mut state.bindings {
            b.push(&entry.alias, &entry.wwid);
        }
        if let Some(t) = &mut state.table {
            t.entries.push(entry);
            t.lines.push(0);
        }
    }

    fn require_writable(&self) -> Result<(), Error> {
        if self.paths.table.is_none() && self.paths.bindings.is_none() {
            return Err(Error::io(
                "store bindings in",
                "(no table or bindings file)",
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "neither a table nor a bindings file is configured",
                ),
            ));
        }
        Ok(())
    }

    /// Runs `f` under the lock with the loaded state and view; `f` returns its result and
    /// whether the table / bindings file changed. Out-of-step files are synced in the same write.
    fn transaction<T>(
        &self,
        f: impl FnOnce(&Self, &mut State, &View) -> Result<(T, bool, bool), Error>,
    ) -> Result<T, Error> {
        let locks = self.lock()?;
        let mut state = self.load(locks.bindings.as_ref())?;
        let view = self.view(&state)?;
        let (st, sb) = self.sync(&mut state, &view);
        let result = f(self, &mut state, &view);
        match result {
            Ok((value, tc, bc)) => {
                let res = self.write(&mut state, locks.bindings.as_ref(), tc || st, bc || sb);
                if res.is_err() {
                    // The files may be half-updated (table written, bindings not): drop the cache.
                    let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                    *cache = Cache::default();
                    res?;
                }
                self.remember(state);
                Ok(value)
            }
            // Nothing is written on error: `f` may have changed the state half-way (an import
            // that hits a conflict). Out-of-step files are synced by the next successful change.
            Err(e) => Err(e),
        }
    }

    /// Who (other than `wwid`) claims `name`: a stored binding, a config alias or a live map.
    fn claimant(
        view: &View,
        live: &[(String, String)],
        name: &str,
        wwid: &str,
    ) -> Option<(String, Origin)> {
        if let Some((w, o)) = view.claims.get(name)
            && w != wwid
        {
            return Some((w.clone(), o.clone()));
        }
        live.iter()
            .find(|(n, u)| n == name && live_wwid(u) != wwid)
            .map(|(n, u)| {
                (
                    live_wwid(u).to_string(),
                    Origin::LiveMap { name: n.clone() },
                )
            })
    }

    fn check_explicit(
        view: &View,
        ctx: &AllocateContext<'_>,
        wwid: &str,
        alias: &str,
        origin: Origin,
    ) -> Result<(), Error> {
        validate_alias(alias)?;
        if let Some((other, o)) = Self::claimant(view, ctx.live_maps, alias, wwid) {
            return Err(Error::AliasConflict {
                alias: alias.to_string(),
                wwid_a: other,
                source_a: o.to_string(),
                wwid_b: wwid.to_string(),
                source_b: origin.to_string(),
            });
        }
        Ok(())
    }

    /// The name the policy generates for `wwid` (not yet stored). None for the WWID policy.
    fn generate(
        &self,
        view: &View,
        ctx: &AllocateContext<'_>,
        wwid: &str,
        extra_taken: &BTreeSet<String>,
        ufn_used: &mut Option<BTreeSet<u64>>,
    ) -> Result<Option<String>, Error> {
        match &self.policy {
            Policy::Wwid => Ok(None),
            Policy::UserFriendlyNames { prefix } => {
                // Ids of every stored / configured alias (and of names handed out earlier in
                // the same batch), computed once per transaction.
                let used = ufn_used.get_or_insert_with(|| {
                    view.claims
                        .keys()
                        .chain(extra_taken.iter())
                        .chain(view.reserved.iter())
                        .filter_map(|a| names::ufn_id(a, prefix))
                        .collect()
                });
                // Names of live maps of other WWIDs are taken too.
                let live: BTreeSet<u64> = ctx
                    .live_maps
                    .iter()
                    .filter(|(_, u)| live_wwid(u) != wwid)
                    .filter_map(|(n, _)| names::ufn_id(n, prefix))
                    .collect();
                let mut id = names::lowest_free_id(used);
                while live.contains(&id) || used.contains(&id) {
                    id += 1;
                }
                match names::ufn_alias(prefix, id) {
                    Some(a) if validate_alias(&a).is_ok() => {
                        used.insert(id);
                        Ok(Some(a))
                    }
                    _ => Err(Error::Exhausted {
                        prefix: prefix.clone(),
                    }),
                }
            }
            Policy::Template { template } => {
                let uses_n = names::template_uses_counter(template);
                let mut n: u64 = 1;
                loop {
                    let n_str = n.to_string();
                    let lookup = |name: &str| -> Option<String> {
                        match name {
                            "wwid" => Some(wwid.to_string()),
                            "wwid_tail" => Some(names::wwid_tail(wwid).to_string()),
                            "host" => Some(self.host.split('.').next().unwrap_or("").to_string()),
                            "n" => Some(n_str.clone()),
                            other => ctx
                                .vars
                                .iter()
                                .rev()
                                .find(|(k, _)| *k == other)
                                .map(|(_, v)| v.to_string()),
                        }
                    };
                    let name = names::expand_template(template, &lookup)?;
                    let taken = Self::claimant(view, ctx.live_maps, &name, wwid).or_else(|| {
                        (extra_taken.contains(&name) || view.reserved.contains(&name))
                            .then(|| (String::new(), Origin::Request))
                    });
                    match taken {
                        None => return Ok(Some(name)),
                        Some(_) if uses_n && n < 1_000_000 => n += 1,
                        Some((other, o)) => {
                            return Err(Error::AliasConflict {
                                alias: name,
                                wwid_a: other,
                                source_a: o.to_string(),
                                wwid_b: wwid.to_string(),
                                source_b: format!("template {template:?}"),
                            });
                        }
                    }
                }
            }
        }
    }

    /// Decides the alias of `wwid` inside a transaction; returns the alias and the entry to add.
    fn decide(
        &self,
        view: &View,
        state: &State,
        ctx: &AllocateContext<'_>,
        wwid: &str,
        extra_taken: &BTreeSet<String>,
        ufn_used: &mut Option<BTreeSet<u64>>,
    ) -> Result<(Alias, Option<Entry>), Error> {
        validate_wwid(wwid)?;
        // 1. explicit alias: the caller's, then multipath.conf's.
        if let Some(a) = ctx.explicit_alias {
            Self::check_explicit(view, ctx, wwid, a, Origin::Request)?;
            return Ok((
                Alias {
                    name: a.to_string(),
                    wwid: wwid.to_string(),
                    source: AliasSource::Explicit,
                    origins: vec![Origin::Request],
                },
                None,
            ));
        }
        if let Some(&i) = view.conf_by_wwid.get(wwid) {
            let c = &state.conf[i];
            Self::check_explicit(view, ctx, wwid, &c.alias, c.origin.clone())?;
            return Ok((
                Alias {
                    name: c.alias.clone(),
                    wwid: wwid.to_string(),
                    source: AliasSource::Config,
                    origins: vec![c.origin.clone()],
                },
                None,
            ));
        }
        // A WWID on a bad or conflicting line gets no stored or generated name (fail closed).
        if let Some(why) = view.disputed.get(wwid) {
            return Err(Error::Disputed {
                wwid: wwid.to_string(),
                problem: why.clone(),
            });
        }
        // 2. existing binding.
        if let Some(sb) = view.stored_alias(wwid) {
            return Ok((
                Alias {
                    name: sb.alias.clone(),
                    wwid: wwid.to_string(),
                    source: AliasSource::Existing,
                    origins: stored_origins(state, sb),
                },
                None,
            ));
        }
        // 3. a new name from the policy; 4. the WWID.
        match self.generate(view, ctx, wwid, extra_taken, ufn_used)? {
            Some(name) => {
                self.require_writable()?;
                Ok((
                    Alias {
                        name: name.clone(),
                        wwid: wwid.to_string(),
                        source: AliasSource::Generated,
                        origins: Vec::new(),
                    },
                    Some(self.new_entry(wwid, &name, ctx.comment)),
                ))
            }
            None => Ok((
                Alias {
                    name: wwid.to_string(),
                    wwid: wwid.to_string(),
                    source: AliasSource::Wwid,
                    origins: Vec::new(),
                },
                None,
            )),
        }
    }

    /// The alias for `wwid` with multipath-tools' precedence: explicit alias, then existing
    /// binding, then a newly generated (and durably stored) name, then the WWID.
    pub fn allocate(&self, wwid: &str, ctx: &AllocateContext<'_>) -> Result<Alias, Error> {
        self.transaction(|s, state, view| {
            let (alias, entry) = s.decide(view, state, ctx, wwid, &BTreeSet::new(), &mut None)?;
            match entry {
                Some(e) => {
                    s.add(state, e);
                    let (t, b) = (state.table.is_some(), state.bindings.is_some());
                    Ok((alias, t, b))
                }
                None => Ok((alias, false, false)),
            }
        })
    }

    /// Allocates several WWIDs under one lock with one write per file (same rules as
    /// [`Store::allocate`]; the explicit alias of `ctx` is ignored).
    pub fn allocate_batch(
        &self,
        wwids: &[&str],
        ctx: &AllocateContext<'_>,
    ) -> Result<Vec<Alias>, Error> {
        let ctx = AllocateContext {
            explicit_alias: None,
            ..*ctx
        };
        self.transaction(|s, state, view| {
            let mut out = Vec::new();
            let mut taken = BTreeSet::new();
            let mut ufn_used = None;
            let mut new_by_wwid: HashMap<String, String> = HashMap::new();
            let mut changed = false;
            for &w in wwids {
                if let Some(a) = new_by_wwid.get(w) {
                    out.push(Alias {
                        name: a.clone(),
                        wwid: w.to_string(),
                        source: AliasSource::Existing,
                        origins: Vec::new(),
                    });
                    continue;
                }
                let (alias, entry) = s.decide(view, state, &ctx, w, &taken, &mut ufn_used)?;
                if let Some(e) = entry {
                    taken.insert(e.alias.clone());
                    new_by_wwid.insert(w.to_string(), e.alias.clone());
                    s.add(state, e);
                    changed = true;
                }
                out.push(alias);
            }
            Ok((
                out,
                changed && state.table.is_some(),
                changed && state.bindings.is_some(),
            ))
        })
    }

    /// The alias `wwid` has now (explicit config alias, then stored binding), without creating
    /// anything.
    pub fn lookup(&self, wwid: &str) -> Result<Option<Alias>, Error> {
        let state = self.load(None)?;
        let view = self.view(&state)?;
        let found = if let Some(&i) = view.conf_by_wwid.get(wwid) {
            let c = &state.conf[i];
            Some(Alias {
                name: c.alias.clone(),
                wwid: wwid.to_string(),
                source: AliasSource::Config,
                origins: vec![c.origin.clone()],
            })
        } else {
            view.stored_alias(wwid).map(|sb| Alias {
                name: sb.alias.clone(),
                wwid: wwid.to_string(),
                source: AliasSource::Existing,
                origins: stored_origins(&state, sb),
            })
        };
        self.remember(state);
        Ok(found)
    }

    /// Every known binding: stored ones (table order, then bindings-file-only ones), then
    /// config-only ones.
    pub fn list(&self) -> Result<Vec<Listed>, Error> {
        let state = self.load(None)?;
        let view = self.view(&state)?;
        let mut out = Vec::new();
        for sb in &view.stored {
            let mut origins = stored_origins(&state, sb);
            let mut alias = sb.alias.clone();
            if let Some(&i) = view.conf_by_wwid.get(&sb.wwid) {
                alias = state.conf[i].alias.clone();
                origins.insert(0, state.conf[i].origin.clone());
            }
            let e = state.table.as_ref().and_then(|t| t.get(&sb.wwid));
            out.push(Listed {
                wwid: sb.wwid.clone(),
                alias,
                origins,
                comment: e.and_then(|e| e.comment.clone()),
                created_by: e.and_then(|e| e.created_by.clone()),
                created_at: e.and_then(|e| e.created_at.clone()),
            });
        }
        for c in &state.conf {
            if !view.stored_by_wwid.contains_key(&c.wwid) {
                out.push(Listed {
                    wwid: c.wwid.clone(),
                    alias: c.alias.clone(),
                    origins: vec![c.origin.clone()],
                    comment: None,
                    created_by: None,
                    created_at: None,
                });
            }
        }
        self.remember(state);
        Ok(out)
    }

    /// Binds `wwid` to `alias` explicitly. A WWID that already has a different alias is
    /// refused (remove it first: aliases are never silently replaced); an alias claimed by
    /// another WWID (stored, configured or live) is a conflict.
    pub fn set(
        &self,
        wwid: &str,
        alias: &str,
        comment: Option<&str>,
        live_maps: &[(String, String)],
    ) -> Result<bool, Error> {
        validate_wwid(wwid)?;
        validate_alias(alias)?;
        self.require_writable()?;
        self.transaction(|s, state, view| {
            if let Some(sb) = view.stored_alias(wwid) {
                if sb.alias == alias {
                    return Ok((false, false, false));
                }
                return Err(Error::AlreadyBound {
                    wwid: wwid.to_string(),
                    existing: sb.alias.clone(),
                    requested: alias.to_string(),
                });
            }
            let ctx = AllocateContext {
                live_maps,
                ..Default::default()
            };
            Self::check_explicit(view, &ctx, wwid, alias, Origin::Request)?;
            s.add(state, s.new_entry(wwid, alias, comment));
            Ok((true, state.table.is_some(), state.bindings.is_some()))
        })
    }

    /// Removes the stored binding of `wwid`; refused while a live map uses it unless `force`.
    /// Returns the removed alias.
    pub fn remove(
        &self,
        wwid: &str,
        live_maps: &[(String, String)],
        force: bool,
    ) -> Result<String, Error> {
        self.transaction(|_, state, view| {
            let Some(sb) = view.stored_alias(wwid) else {
                if let Some(&i) = view.conf_by_wwid.get(wwid) {
                    let c = &state.conf[i];
                    return Err(Error::Parse {
                        path: match &c.origin {
                            Origin::Config { path, .. } => path.clone(),
                            _ => PathBuf::new(),
                        },
                        line: match &c.origin {
                            Origin::Config { line, .. } => *line,
                            _ => 0,
                        },
                        message: format!(
                            "the alias {:?} of WWID {wwid} is set in multipath.conf, not stored by aliases; edit that file to remove it",
                            c.alias
                        ),
                    });
                }
                return Err(Error::NotFound {
                    wwid: wwid.to_string(),
                });
            };
            let alias = sb.alias.clone();
            let in_use = live_maps
                .iter()
                .any(|(n, u)| *n == alias || (live_wwid(u) == wwid && *n != wwid));
            if in_use && !force {
                return Err(Error::InUse {
                    alias,
                    wwid: wwid.to_string(),
                });
            }
            let mut tc = false;
            let mut bc = false;
            if let Some(t) = &mut state.table
                && let Some(i) = t.entries.iter().position(|e| e.wwid == wwid)
            {
                t.entries.remove(i);
                t.lines.remove(i);
                tc = true;
            }
            if let Some(b) = &mut state.bindings
                && b.remove_wwid(wwid).is_some()
            {
                bc = true;
            }
            Ok((alias, tc, bc))
        })
    }

    /// Imports `(alias, wwid)` pairs all-or-nothing: any conflict with the store, the config,
    /// live maps or within the import aborts without writing.
    pub fn import_pairs(
        &self,
        pairs: &[(String, String, Origin)],
        live_maps: &[(String, String)],
    ) -> Result<ImportReport, Error> {
        self.require_writable()?;
        self.transaction(|s, state, view| {
            let mut report = ImportReport::default();
            let mut new_alias: HashMap<String, (String, Origin)> = HashMap::new();
            let mut new_wwid: HashMap<String, (String, Origin)> = HashMap::new();
            let ctx = AllocateContext {
                live_maps,
                ..Default::default()
            };
            for (alias, wwid, origin) in pairs {
                validate_wwid(wwid)?;
                validate_alias(alias)?;
                if let Some(sb) = view.stored_alias(wwid) {
                    if sb.alias == *alias {
                        report.unchanged += 1;
                        continue;
                    }
                    return Err(Error::WwidConflict {
                        wwid: wwid.clone(),
                        alias_a: sb.alias.clone(),
                        source_a: stored_origins(state, sb)
                            .first()
                            .map(ToString::to_string)
                            .unwrap_or_default(),
                        alias_b: alias.clone(),
                        source_b: origin.to_string(),
                    });
                }
                Self::check_explicit(view, &ctx, wwid, alias, origin.clone())?;
                if let Some((a, o)) = new_wwid.get(wwid) {
                    if a == alias {
                        continue;
                    }
                    return Err(Error::WwidConflict {
                        wwid: wwid.clone(),
                        alias_a: a.clone(),
                        source_a: o.to_string(),
                        alias_b: alias.clone(),
                        source_b: origin.to_string(),
                    });
                }
                if let Some((w, o)) = new_alias.get(alias) {
                    return Err(Error::AliasConflict {
                        alias: alias.clone(),
                        wwid_a: w.clone(),
                        source_a: o.to_string(),
                        wwid_b: wwid.clone(),
                        source_b: origin.to_string(),
                    });
                }
                new_alias.insert(alias.clone(), (wwid.clone(), origin.clone()));
                new_wwid.insert(wwid.clone(), (alias.clone(), origin.clone()));
                s.add(
                    state,
                    s.new_entry(wwid, alias, Some(&format!("imported from {origin}"))),
                );
                report.added.push((alias.clone(), wwid.clone()));
            }
            let changed = !report.added.is_empty();
            Ok((
                report,
                changed && state.table.is_some(),
                changed && state.bindings.is_some(),
            ))
        })
    }

    /// Imports a bindings file (which must not be corrupt).
    pub fn import_bindings(
        &self,
        path: &Path,
        live_maps: &[(String, String)],
    ) -> Result<ImportReport, Error> {
        let f = BindingsFile::load(path)?;
        f.ensure_valid()?;
        let pairs: Vec<_> = f
            .bindings()
            .map(|(a, w, line)| {
                (
                    a.to_string(),
                    w.to_string(),
                    Origin::Bindings {
                        path: path.to_path_buf(),
                        line,
                    },
                )
            })
            .collect();
        self.import_pairs(&pairs, live_maps)
    }

    /// Imports the `multipaths {}` aliases of one multipath.conf-syntax file.
    pub fn import_multipath_conf(
        &self,
        path: &Path,
        live_maps: &[(String, String)],
    ) -> Result<ImportReport, Error> {
        let f = mpconf::parse_file(path)?;
        let pairs: Vec<_> = conf_aliases(std::slice::from_ref(&f))?
            .into_iter()
            .map(|c| (c.alias, c.wwid, c.origin))
            .collect();
        self.import_pairs(&pairs, live_maps)
    }

    /// Renders the stored bindings in `format`.
    pub fn export(&self, format: ExportFormat) -> Result<String, Error> {
        let state = self.load(None)?;
        let view = self.view(&state)?;
        let out = match format {
            ExportFormat::Bindings => crate::bindings::render_fresh(
                view.stored
                    .iter()
                    .map(|s| (s.alias.as_str(), s.wwid.as_str())),
            ),
            ExportFormat::MultipathConf => {
                let mut out = String::from(
                    "# multipaths {} drop-in written by `aliases export --format multipath-conf`\nmultipaths {\n",
                );
                for s in &view.stored {
                    out.push_str("\tmultipath {\n\t\twwid ");
                    out.push_str(&mpconf::quote_value(&s.wwid));
                    out.push_str("\n\t\talias ");
                    out.push_str(&mpconf::quote_value(&s.alias));
                    out.push_str("\n\t}\n");
                }
                out.push_str("}\n");
                out
            }
            ExportFormat::Toml => {
                let mut t = Table::empty(Path::new("export"));
                t.generation = state.table.as_ref().map_or(0, |t| t.generation);
                for s in &view.stored {
                    let e = state.table.as_ref().and_then(|t| t.get(&s.wwid)).cloned();
                    t.entries.push(e.unwrap_or_else(|| Entry {
                        wwid: s.wwid.clone(),
                        alias: s.alias.clone(),
                        comment: None,
                        created_by: None,
                        created_at: None,
                    }));
                }
                t.render()
            }
        };
        self.remember(state);
        Ok(out)
    }

    /// Every problem: corrupt or unreadable files, conflicts between the table, the bindings
    /// file, multipath.conf aliases and live maps. Empty means all is consistent.
    pub fn check(&self, live_maps: &[(String, String)]) -> Vec<Error> {
        let mut problems = Vec::new();
        let table = match &self.paths.table {
            Some(p) => match Table::load(p) {
                Ok(t) => Some(t),
                Err(e) => {
                    problems.push(e);
                    None
                }
            },
            None => None,
        };
        let bindings = match &self.paths.bindings {
            Some(p) => match BindingsFile::load(p) {
                Ok(b) => {
                    for pr in &b.problems {
                        problems.push(Error::Corrupt {
                            path: b.path.clone(),
                            line: pr.line,
                            message: pr.message.clone(),
                        });
                    }
                    Some(b)
                }
                Err(e) => {
                    problems.push(e);
                    None
                }
            },
            None => None,
        };
        let conf = match load_conf(&self.paths).and_then(|c| conf_aliases_all(&c)) {
            Ok((c, mut errs)) => {
                problems.append(&mut errs);
                c
            }
            Err(e) => {
                problems.push(e);
                Vec::new()
            }
        };
        let state = State {
            table,
            bindings,
            bindings_disk: Vec::new(),
            bindings_recovered: false,
            conf,
            table_key: None,
            bindings_key: None,
        };
        let (view, mut errs) = build_view(&state);
        problems.append(&mut errs);
        // Stored binding shadowed by a different config alias.
        for c in &state.conf {
            if let Some(sb) = view.stored_alias(&c.wwid)
                && sb.alias != c.alias
            {
                problems.push(Error::WwidConflict {
                    wwid: c.wwid.clone(),
                    alias_a: sb.alias.clone(),
                    source_a: stored_origins(&state, sb)
                        .first()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    alias_b: c.alias.clone(),
                    source_b: c.origin.to_string(),
                });
            }
        }
        // Live maps.
        for (name, uuid) in live_maps {
            let w = live_wwid(uuid);
            if let Some((other, o)) = view.claims.get(name)
                && other != w
            {
                problems.push(Error::AliasConflict {
                    alias: name.clone(),
                    wwid_a: other.clone(),
                    source_a: o.to_string(),
                    wwid_b: w.to_string(),
                    source_b: Origin::LiveMap { name: name.clone() }.to_string(),
                });
            }
            let expected = view
                .conf_by_wwid
                .get(w)
                .map(|&i| (state.conf[i].alias.clone(), state.conf[i].origin.clone()))
                .or_else(|| {
                    view.stored_alias(w).map(|sb| {
                        (
                            sb.alias.clone(),
                            stored_origins(&state, sb)
                                .into_iter()
                                .next()
                                .unwrap_or(Origin::Request),
                        )
                    })
                });
            if let Some((a, o)) = expected
                && a != *name
                && name != w
            {
                problems.push(Error::WwidConflict {
                    wwid: w.to_string(),
                    alias_a: a,
                    source_a: o.to_string(),
                    alias_b: name.clone(),
                    source_b: Origin::LiveMap { name: name.clone() }.to_string(),
                });
            }
        }
        problems
    }

    /// Repairs corrupt files: each corrupt file is copied to a timestamped backup and rewritten
    /// with only its valid entries. Returns what was done per file (empty if nothing was
    /// corrupt). Conflicts between files are not resolved here (they need a human decision).
    pub fn repair(&self) -> Result<Vec<RepairedFile>, Error> {
        let locks = self.lock()?;
        let mut out = Vec::new();
        if let Some(p) = &self.paths.table {
            let bytes = match std::fs::read(p) {
                Ok(b) => Some(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(Error::io("read", p, e)),
            };
            // A piece that is not valid UTF-8 is dropped by salvage and listed, never kept
            // with replacement characters.
            if let Some(bytes) = bytes
                && let text = String::from_utf8_lossy(&bytes).into_owned()
                && (Table::parse(&text, p).is_err() || std::str::from_utf8(&bytes).is_err())
            {
                let backup = fsutil::backup(p)?;
                let mut s = table::salvage(&text, p);
                s.table.generation += 1;
                fsutil::atomic_write(p, s.table.render().as_bytes(), 0o644)?;
                out.push(RepairedFile {
                    path: p.clone(),
                    backup,
                    kept: s.table.entries.len(),
                    dropped: s.dropped,
                });
            }
        }
        if let Some(p) = &self.paths.bindings
            && let Some(lf) = &locks.bindings
        {
            let disk = lf.read_all()?;
            let (mut b, recovered) = BindingsFile::from_disk(&disk, p)?;
            // Lines that are not valid UTF-8 are problems: dropped and listed.
            if !b.problems.is_empty() || recovered {
                let backup = fsutil::backup(p)?;
                let dropped = b.drop_problem_lines();
                lf.replace(&disk, &b.render_bytes())?;
                out.push(RepairedFile {
                    path: p.clone(),
                    backup,
                    kept: b.bindings().count(),
                    dropped,
                });
            }
        }
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        *cache = Cache::default();
        Ok(out)
    }
}

fn stored_origins(state: &State, sb: &StoredBinding) -> Vec<Origin> {
    let mut v = Vec::new();
    if let (Some(line), Some(t)) = (sb.in_table, &state.table) {
        v.push(Origin::Table {
            path: t.path.clone(),
            line,
        });
    }
    if let (Some(line), Some(b)) = (sb.in_bindings, &state.bindings) {
        v.push(Origin::Bindings {
            path: b.path.clone(),
            line,
        });
    }
    v
}

/// Merges table, bindings file and config aliases, collecting every conflict.
fn build_view(state: &State) -> (View, Vec<Error>) {
    let mut problems = Vec::new();
    let mut view = View {
        disputed: HashMap::new(),
        reserved: BTreeSet::new(),
        stored: Vec::new(),
        stored_by_wwid: HashMap::new(),
        claims: HashMap::new(),
        conf_by_wwid: HashMap::new(),
    };
    if let Some(t) = &state.table {
        view.stored.reserve(t.entries.len());
        view.stored_by_wwid.reserve(t.entries.len());
        view.claims.reserve(t.entries.len());
        for (i, e) in t.entries.iter().enumerate() {
            let line = t.lines.get(i).copied().unwrap_or(0);
            view.stored_by_wwid
                .insert(e.wwid.clone(), view.stored.len());
            view.claims.insert(
                e.alias.clone(),
                (
                    e.wwid.clone(),
                    Origin::Table {
                        path: t.path.clone(),
                        line,
                    },
                ),
            );
            view.stored.push(StoredBinding {
                wwid: e.wwid.clone(),
                alias: e.alias.clone(),
                in_table: Some(line),
                in_bindings: None,
            });
        }
    }
    if let Some(b) = &state.bindings {
        for (alias, wwid, line) in b.bindings() {
            let here = Origin::Bindings {
                path: b.path.clone(),
                line,
            };
            if let Some(&i) = view.stored_by_wwid.get(wwid) {
                let sb = &mut view.stored[i];
                if sb.alias == alias {
                    sb.in_bindings = Some(line);
                } else {
                    let t = state
                        .table
                        .as_ref()
                        .map(|t| t.path.clone())
                        .unwrap_or_default();
                    let e = Error::WwidConflict {
                        wwid: wwid.to_string(),
                        alias_a: sb.alias.clone(),
                        source_a: Origin::Table {
                            path: t,
                            line: sb.in_table.unwrap_or(0),
                        }
                        .to_string(),
                        alias_b: alias.to_string(),
                        source_b: here.to_string(),
                    };
                    view.disputed.insert(wwid.to_string(), e.to_string());
                    view.reserved.insert(alias.to_string());
                    problems.push(e);
                }
                continue;
            }
            if let Some((other, o)) = view.claims.get(alias) {
                let e = Error::AliasConflict {
                    alias: alias.to_string(),
                    wwid_a: other.clone(),
                    source_a: o.to_string(),
                    wwid_b: wwid.to_string(),
                    source_b: here.to_string(),
                };
                view.disputed.insert(wwid.to_string(), e.to_string());
                view.reserved.insert(alias.to_string());
                problems.push(e);
                continue;
            }
            view.stored_by_wwid
                .insert(wwid.to_string(), view.stored.len());
            view.claims
                .insert(alias.to_string(), (wwid.to_string(), here));
            view.stored.push(StoredBinding {
                wwid: wwid.to_string(),
                alias: alias.to_string(),
                in_table: None,
                in_bindings: Some(line),
            });
        }
    }
    if let Some(b) = &state.bindings {
        // Lines the parser rejected (duplicates, malformed): what they name is disputed.
        for p in &b.problems {
            let Some(l) = b.lines.get(p.line - 1) else {
                continue;
            };
            let mut fields = l
                .text
                .split('#')
                .next()
                .unwrap_or("")
                .split([' ', '\t'])
                .filter(|f| !f.is_empty());
            let here = format!("{} line {}: {}", b.path.display(), p.line, p.message);
            if let Some(a) = fields.next() {
                view.reserved.insert(a.to_string());
            }
            // A WWID bound again on a later line keeps its first binding, as in
            // multipath-tools; one whose only line is bad is disputed.
            if let Some(w) = fields.next()
                && !view.stored_by_wwid.contains_key(w)
            {
                view.disputed.entry(w.to_string()).or_insert(here);
            }
        }
    }
    for (i, c) in state.conf.iter().enumerate() {
        if let Some((other, o)) = view.claims.get(&c.alias)
            && *other != c.wwid
        {
            let e = Error::AliasConflict {
                alias: c.alias.clone(),
                wwid_a: other.clone(),
                source_a: o.to_string(),
                wwid_b: c.wwid.clone(),
                source_b: c.origin.to_string(),
            };
            view.disputed.insert(c.wwid.clone(), e.to_string());
            problems.push(e);
            continue;
        }
        view.conf_by_wwid.insert(c.wwid.clone(), i);
        view.claims
            .entry(c.alias.clone())
            .or_insert_with(|| (c.wwid.clone(), c.origin.clone()));
    }
    (view, problems)
}

fn load_conf(paths: &StorePaths) -> Result<Vec<ConfFile>, Error> {
    match (&paths.config, &paths.config_dir) {
        (None, None) => Ok(Vec::new()),
        (Some(main), dir) => mpconf::load_with_conf_d(main, dir.as_deref()),
        (None, Some(dir)) => {
            let mut out = Vec::new();
            for p in mpconf::conf_d_files(dir)? {
                out.push(mpconf::parse_file(&p)?);
            }
            Ok(out)
        }
    }
}

/// The `multipaths { multipath { wwid .. alias .. } }` aliases of the given files, collecting
/// conflicts (one alias for two WWIDs, one WWID with two aliases) instead of failing.
fn conf_aliases_all(files: &[ConfFile]) -> Result<(Vec<ConfAlias>, Vec<Error>), Error> {
    let mut out: Vec<ConfAlias> = Vec::new();
    let mut problems = Vec::new();
    for f in files {
        for mps in f.sections_named("multipaths") {
            for mp in mps.subsections("multipath") {
                let (Some((wwid, _)), Some((alias, line))) =
                    (mp.get_with_line("wwid"), mp.get_with_line("alias"))
                else {
                    continue;
                };
                let origin = Origin::Config {
                    path: f.path.clone(),
                    line,
                };
                if let Err(e) = validate_alias(alias).and_then(|()| validate_wwid(wwid)) {
                    return Err(Error::parse(&f.path, line, e.to_string()));
                }
                if let Some(prev) = out.iter().find(|c| c.wwid == wwid) {
                    if prev.alias != alias {
                        problems.push(Error::WwidConflict {
                            wwid: wwid.to_string(),
                            alias_a: prev.alias.clone(),
                            source_a: prev.origin.to_string(),
                            alias_b: alias.to_string(),
                            source_b: origin.to_string(),
                        });
                    }
                    continue;
                }
                if let Some(prev) = out.iter().find(|c| c.alias == alias) {
                    problems.push(Error::AliasConflict {
                        alias: alias.to_string(),
                        wwid_a: prev.wwid.clone(),
                        source_a: prev.origin.to_string(),
                        wwid_b: wwid.to_string(),
                        source_b: origin.to_string(),
                    });
                    continue;
                }
                out.push(ConfAlias {
                    wwid: wwid.to_string(),
                    alias: alias.to_string(),
                    origin,
                });
            }
        }
    }
    Ok((out, problems))
}

fn conf_aliases(files: &[ConfFile]) -> Result<Vec<ConfAlias>, Error> {
    let (c, mut problems) = conf_aliases_all(files)?;
    if problems.is_empty() {
        Ok(c)
    } else {
        Err(problems.swap_remove(0))
    }
}

/// Reads the live device-mapper maps from `<sysfs_root>/block/dm-*/dm/{name,uuid}` as
/// `(name, uuid)` pairs. A missing `block` directory gives an empty list.
pub fn live_maps_from_sysfs(sysfs_root: &Path) -> Result<Vec<(String, String)>, Error> {
    let block = sysfs_root.join("block");
    let rd = match std::fs::read_dir(&block) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", &block, e)),
    };
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| Error::io("list", &block, e))?;
        if !ent.file_name().to_string_lossy().starts_with("dm-") {
            continue;
        }
        let dm = ent.path().join("dm");
        let read = |f: &str| -> Result<String, Error> {
            let p = dm.join(f);
            std::fs::read_to_string(&p)
                .map(|s| s.trim_end_matches('\n').to_string())
                .map_err(|e| Error::io("read", p, e))
        };
        // A map that vanished between listing and reading is simply not live any more.
        match (read("name"), read("uuid")) {
            (Ok(n), Ok(u)) => out.push((n, u)),
            (Err(Error::Io { source, .. }), _) | (_, Err(Error::Io { source, .. }))
                if source.kind() == std::io::ErrorKind::NotFound => {}
            (Err(e), _) | (_, Err(e)) => return Err(e),
        }
    }
    out.sort();
    Ok(out)
}
