//! Shared helpers for the tandem benches.
