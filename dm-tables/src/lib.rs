//! dm-tables: the device-mapper `multipath` target as typed Rust.
//!
//! - [`MultipathTable`] / [`MultipathStatus`]: parse ([`std::str::FromStr`]) and render
//!   ([`std::fmt::Display`]) the kernel's table and status lines byte for byte.
//! - [`Message`]: target messages (`fail_path`, `reinstate_path`, `switch_group`, ...).
//! - [`DmBackend`]: list/create/reload/table/status/message/rename/remove/wait, implemented by
//!   the kernel backend (ioctls through the `devicemapper` crate) and a simulated one.
//! - [`EventWatcher`]: wait for any map's dm event (arm-poll) instead of polling every map.
//!
//! See README.md in this crate for the CLI and design notes.

pub mod backend;
pub mod devno;
pub mod error;
pub mod events;
pub mod grouping;
pub mod kernel;
pub mod message;
pub mod plan;
pub mod sim;
pub mod status;
pub mod table;
mod tokens;
pub mod words;

pub use backend::{
    DmBackend, MPATH_UUID_PREFIX, MapInfo, RemoveMode, Removed, SuspendFlags, uuid_for_wwid,
    wwid_from_uuid,
};
pub use devno::DevNo;
pub use error::{Error, Result};
pub use events::{EventChanges, EventNumbers, EventSource, EventWatcher};
pub use grouping::{GroupSpec, GroupingPolicy, PathInfo, TableBuilder, group_paths};
pub use kernel::KernelBackend;
pub use message::Message;
pub use plan::{Change, Plan, plan};
pub use sim::{SimBackend, SimIo, devices_from_sysfs};
pub use status::{GroupState, GroupStatus, MultipathStatus, PathState, PathStatus};
pub use table::{Feature, HwHandler, MultipathTable, PathGroup, QueueMode, Selector, TablePath};
pub use tokens::split_name_prefix;
pub use words::{Word, Words, word, words};
