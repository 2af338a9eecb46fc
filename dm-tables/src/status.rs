//! The multipath target's status line (STATUSTYPE_INFO): model, parser and renderer.
//!
//! Grammar (drivers/md/dm-mpath.c, multipath_status()):
//! `start length multipath <#feature args> [queue_io pg_init_count ...] <#hwh status args>
//!  [hwh status...] <#groups> <current group> { A|E|D <#selector status args> [arg...]
//!  <#paths> <#info args per path> { <major:minor> A|F <fail count> [info arg...] }+ }*`
//! Modern kernels print `2 <queue_io> <pg_init_count>` as features and `0` as the hardware
//! handler status.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::devno::DevNo;
use crate::error::{Error, Result};
use crate::tokens::{Tokens, split_name_prefix};
use crate::words::Words;

/// A path group's state in the status line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupState {
    /// `A`: the group I/O currently goes to.
    Active,
    /// `E`: usable, not current.
    Enabled,
    /// `D`: bypassed (disabled by message or by a failed pg_init).
    Disabled,
}

impl GroupState {
    pub fn letter(self) -> char {
        match self {
            GroupState::Active => 'A',
            GroupState::Enabled => 'E',
            GroupState::Disabled => 'D',
        }
    }
}

/// A path's state in the status line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathState {
    /// `A`
    Active,
    /// `F`
    Failed,
}

impl PathState {
    pub fn letter(self) -> char {
        match self {
            PathState::Active => 'A',
            PathState::Failed => 'F',
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PathStatus {
    pub devno: DevNo,
    pub state: PathState,
    /// Cumulative number of times the kernel failed this path.
    pub fail_count: u32,
    /// The selector's per-path info args (service-time: in-flight size, relative throughput;
    /// queue-length: in-flight count; round-robin: none).
    #[serde(default)]
    pub selector_info: Words,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GroupStatus {
    pub state: GroupState,
    /// The selector's group-level status args (empty for every in-tree selector).
    #[serde(default)]
    pub selector_status: Words,
    pub paths: Vec<PathStatus>,
}

impl GroupStatus {
    pub fn info_arg_count(&self) -> usize {
        self.paths.first().map_or(0, |p| p.selector_info.len())
    }
}

/// A multipath status line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MultipathStatus {
    pub start: u64,
    pub length: u64,
    /// `queue_io`: I/O is being queued (pg_init running, or no path and queue_if_no_path).
    pub queue_io: bool,
    /// Number of pg_init calls since the group was switched.
    pub pg_init_count: u32,
    /// Feature args beyond the two above (none on current kernels), kept verbatim.
    #[serde(default)]
    pub extra_features: Words,
    /// Hardware handler status args (current kernels print none).
    #[serde(default)]
    pub hw_handler_status: Words,
    /// The group the kernel will use / uses now (1-based; 0 when there are no groups).
    pub current_group: u32,
    #[serde(default)]
    pub groups: Vec<GroupStatus>,
}

impl MultipathStatus {
    /// Every path status in table order.
    pub fn paths(&self) -> impl Iterator<Item = &PathStatus> {
        self.groups.iter().flat_map(|g| g.paths.iter())
    }

    /// Device numbers of the paths that are active (`A`).
    pub fn active_paths(&self) -> Vec<DevNo> {
        self.paths()
            .filter(|p| p.state == PathState::Active)
            .map(|p| p.devno)
            .collect()
    }

    /// The status of one path, if the map has it.
    pub fn path(&self, devno: DevNo) -> Option<&PathStatus> {
        self.paths().find(|p| p.devno == devno)
    }

    /// Parses one line, with or without a leading `name: `.
    pub fn parse_line(line: &str) -> Result<MultipathStatus> {
        let (_, rest) = split_name_prefix(line);
        let mut t = Tokens::new(rest);
        let (start, length) = t.header()?;
        let nfeat_pos = t.pos();
        let nfeat = t.count("the status feature arg count", 1)?;
        if nfeat < 2 {
            return Err(t.err_at(
                nfeat_pos,
                "expected a status feature arg count of at least 2 (queue_io, pg_init_count)",
            ));
        }
        let qpos = t.pos();
        let queue_io = match t.next("the queue_io flag")? {
            "0" => false,
            "1" => true,
            _ => return Err(t.err_at(qpos, "expected the queue_io flag (0 or 1)")),
        };
        let pg_init_count = t.number("the pg_init count")?;
        let extra_features = t.words(nfeat - 2, "a status feature arg")?;
        let nhw = t.count("the hardware handler status arg count", 1)?;
        let hw_handler_status = t.words(nhw, "a hardware handler status arg")?;
        // Each group takes at least 7 tokens (state, #args, #paths, #info, dev, A|F, count).
        let ngroups = t.count("the path group count", 7)?;
        let cpos = t.pos();
        let current_group: u32 = t.number("the current path group number")?;
        if current_group as usize > ngroups {
            return Err(t.err_at(
                cpos,
                format!("current path group {current_group} is beyond the {ngroups} group(s)"),
            ));
        }
        let mut groups = Vec::with_capacity(ngroups);
        for _ in 0..ngroups {
            let spos = t.pos();
            let state = match t.next("a path group state (A, E or D)")? {
                "A" => GroupState::Active,
                "E" => GroupState::Enabled,
                "D" => GroupState::Disabled,
                _ => return Err(t.err_at(spos, "expected a path group state (A, E or D)")),
            };
            let nsel = t.count("the selector status arg count", 1)?;
            let selector_status = t.words(nsel, "a selector status arg")?;
            let ppos = t.pos();
            let npaths = t.count("the path count", 3)?;
            if npaths == 0 {
                return Err(t.err_at(ppos, "expected a path count of at least 1"));
            }
            let ninfo: usize = t.number("the selector info arg count per path")?;
            let mut paths = Vec::with_capacity(npaths);
            for _ in 0..npaths {
                let devno = t.devno("a path device major:minor")?;
                let apos = t.pos();
                let state = match t.next("a path state (A or F)")? {
                    "A" => PathState::Active,
                    "F" => PathState::Failed,
                    _ => return Err(t.err_at(apos, "expected a path state (A or F)")),
                };
                let fail_count = t.number("a path fail count")?;
                let selector_info = t.words(ninfo, "a selector info arg")?;
                paths.push(PathStatus {
                    devno,
                    state,
                    fail_count,
                    selector_info,
                });
            }
            groups.push(GroupStatus {
                state,
                selector_status,
                paths,
            });
        }
        t.finish()?;
        Ok(MultipathStatus {
            start,
            length,
            queue_io,
            pg_init_count,
            extra_features,
            hw_handler_status,
            current_group,
            groups,
        })
    }
}

impl fmt::Display for MultipathStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} multipath {} {} {}",
            self.start,
            self.length,
            self.extra_features.len() + 2,
            u8::from(self.queue_io),
            self.pg_init_count
        )?;
        for a in self.extra_features.iter() {
            write!(f, " {a}")?;
        }
        write!(f, " {}", self.hw_handler_status.len())?;
        for a in self.hw_handler_status.iter() {
            write!(f, " {a}")?;
        }
        write!(f, " {} {}", self.groups.len(), self.current_group)?;
        for g in &self.groups {
            write!(f, " {} {}", g.state.letter(), g.selector_status.len())?;
            for a in g.selector_status.iter() {
                write!(f, " {a}")?;
            }
            write!(f, " {} {}", g.paths.len(), g.info_arg_count())?;
            for p in &g.paths {
                write!(f, " {} {} {}", p.devno, p.state.letter(), p.fail_count)?;
                for a in p.selector_info.iter() {
                    write!(f, " {a}")?;
                }
            }
        }
        Ok(())
    }
}

impl FromStr for MultipathStatus {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        MultipathStatus::parse_line(s)
    }
}
