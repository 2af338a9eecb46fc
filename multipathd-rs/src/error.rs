//! The crate's one error type. Each area adds its variants in its own block below.

use std::path::PathBuf;

/// Everything that can go wrong in multipathd-rs, naming the file, device or map it is about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    // --- configuration (config, hwtable, blacklist, import) ---

    // --- path checking and events (checker, clock, scheduler, uevent) ---

    // --- daemon state, output formats and control socket (state, output, socket) ---
}
