//! hwtable (being written).
