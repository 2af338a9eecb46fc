//! lun-scan: see the crate README section in the workspace README.
