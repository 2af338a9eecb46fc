//! checker (being written).
