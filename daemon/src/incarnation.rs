//! A fresh incarnation: unix seconds, strictly greater than any earlier run's.
//!
//! Taken as `floor(now) + 1` after sleeping until that second begins (at most one second).
//! A run that is already using incarnation `I` started at or after second `I`, so a later
//! run of the same node (started after the earlier one) takes at least `I + 1`: incarnations
//! strictly increase across restarts, which keeps AEAD nonces (node id, incarnation, seq)
//! unique. This assumes the wall clock is not stepped backwards across a restart; keep it
//! synchronised (NTP slews, it does not step, once running).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tandem_core::Incarnation;

/// Sleeps until the next whole second and returns it as the incarnation.
pub fn fresh() -> Incarnation {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let next = now.as_secs() + 1;
    std::thread::sleep(Duration::from_secs(next) - now);
    // u32 unix seconds last until 2106.
    Incarnation(u32::try_from(next).unwrap_or(u32::MAX))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;

    #[test]
    fn strictly_increasing_and_at_a_second_boundary() {
        let a = fresh();
        let b = fresh();
        assert!(b > a);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(u64::from(b.0) <= now);
    }
}
