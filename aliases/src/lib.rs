//! aliases: stable, WWID-based device-mapper names, compatible with multipath-tools' bindings
//! file and `multipaths {}` aliases. See aliases/README.md.

pub mod bindings;
mod error;
pub mod fsutil;
pub mod mpconf;
pub mod names;
pub mod store;
pub mod table;

pub use error::{Error, Result};
pub use store::{
    Alias, AliasSource, AllocateContext, ExportFormat, ImportReport, Listed, Origin, Policy,
    RepairedFile, Store, StorePaths, live_maps_from_sysfs,
};
