//! Network-namespace harness for multi-host tests (being written).
