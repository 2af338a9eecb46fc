//! blacklist (being written).
