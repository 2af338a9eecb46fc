//! socket (being written).
