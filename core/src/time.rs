//! The caller's monotonic clock.
//!
//! The core never reads a clock: every input carries `now`. Microsecond resolution is enough
//! for millisecond failure detection and keeps arithmetic in `u64` (585 000 years of range).

use core::ops::{Add, Sub};
use core::time::Duration;

/// A point on the caller's monotonic clock, in microseconds since an arbitrary origin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    pub const ZERO: Instant = Instant(0);
    /// The far future: a deadline that never fires.
    pub const NEVER: Instant = Instant(u64::MAX);

    pub const fn from_micros(micros: u64) -> Self {
        Instant(micros)
    }

    pub const fn from_millis(millis: u64) -> Self {
        Instant(millis.saturating_mul(1000))
    }

    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// `self` plus `micros`, saturating at [`Instant::NEVER`]. Cheaper than adding a
    /// `Duration` where 64-bit division is a library call (32-bit targets).
    // Out of line: a saturating u64 add is a dozen Thumb instructions at every deadline.
    #[inline(never)]
    pub const fn saturating_add_micros(self, micros: u64) -> Instant {
        Instant(self.0.saturating_add(micros))
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }

    // Out of line: inlined, this is spelled out at every `now + timeout` (flash).
    #[inline(never)]
    pub fn checked_add(self, d: Duration) -> Option<Instant> {
        let us = u64::try_from(d.as_micros()).ok()?;
        self.0.checked_add(us).map(Instant)
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    /// Saturates at [`Instant::NEVER`] rather than overflowing.
    // Out of line too: the unwrap at every call site costs flash as well.
    #[inline(never)]
    fn add(self, d: Duration) -> Instant {
        self.checked_add(d).unwrap_or(Instant::NEVER)
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    /// Saturates at zero.
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Instant::from_millis(5);
        assert_eq!(t + Duration::from_millis(1), Instant::from_micros(6000));
        assert_eq!(Instant::NEVER + Duration::from_secs(1), Instant::NEVER);
        assert_eq!(t.saturating_add_micros(7), Instant::from_micros(5007));
        assert_eq!(t.saturating_add_micros(u64::MAX), Instant::NEVER);
        assert_eq!(Instant::ZERO - t, Duration::ZERO);
        assert_eq!(t - Instant::ZERO, Duration::from_millis(5));
    }
}
