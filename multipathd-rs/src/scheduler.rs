//! scheduler (being written).
