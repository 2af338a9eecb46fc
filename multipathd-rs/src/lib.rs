//! multipathd-rs: the multipath daemon composing lun-scan, aliases and dm-tables.
//!
//! Module owners while the crate is being built (see multipathd-rs/README.md once written):
//! configuration (`config`, `hwtable`, `blacklist`, `import`) and path checking / events
//! (`checker`, `clock`, `scheduler`, `uevent`); the discovery pipeline, control socket and CLI
//! arrive on top of them.

pub mod blacklist;
pub mod checker;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod discovery;
pub mod dmevents;
pub mod engine;
pub mod error;
pub mod fc_tmo;
pub mod hwtable;
pub mod import;
pub mod output;
pub mod priority;
pub mod scheduler;
pub mod settings;
pub mod socket;
pub mod state;
pub mod sweep;
pub mod uevent;

pub use error::Error;
