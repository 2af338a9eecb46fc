//! uevent (being written).
