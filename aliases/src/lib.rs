//! aliases: stable, WWID-based device-mapper names, compatible with multipath-tools' bindings
//! file and `multipaths {}` aliases. See aliases/README.md.

mod error;
pub mod mpconf;

pub use error::{Error, Result};
