//! The daemon's monotonic clock, as the core's [`Instant`] (microseconds since daemon start).
//!
//! Kernel receive timestamps (SO_TIMESTAMPNS) are CLOCK_REALTIME. [`Clock::from_realtime`]
//! maps them onto the monotonic clock through the offset between the two clocks sampled at
//! start, and clamps the result to the last second before `now`: if the wall clock is stepped
//! (NTP, an operator), arrival times fall back to "now" instead of jumping, so a clock step can
//! at worst make a heartbeat look as fresh as the loop's own reading, never from the future.

use std::time::{SystemTime, UNIX_EPOCH};

use tandem_core::Instant;

/// How far before `now` a kernel timestamp may lie before it is distrusted.
const MAX_TIMESTAMP_AGE_US: u64 = 1_000_000;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: std::time::Instant,
    /// CLOCK_REALTIME at `start`, in nanoseconds since the epoch (i64 lasts until 2262; 64-bit
    /// arithmetic keeps the per-packet conversion free of 128-bit division).
    realtime_start_ns: i64,
}

impl Clock {
    pub fn new() -> Clock {
        let start = std::time::Instant::now();
        let realtime_start_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        Clock {
            start,
            realtime_start_ns,
        }
    }

    pub fn now(&self) -> Instant {
        let us = self.start.elapsed().as_micros();
        Instant::from_micros(u64::try_from(us).unwrap_or(u64::MAX))
    }

    /// Converts a kernel CLOCK_REALTIME timestamp to this clock, clamped to `[now - 1 s, now]`.
    pub fn from_realtime(&self, realtime_ns: i64, now: Instant) -> Instant {
        let since_start_us = realtime_ns.saturating_sub(self.realtime_start_ns) / 1000;
        let now_us = now.as_micros();
        let floor = now_us.saturating_sub(MAX_TIMESTAMP_AGE_US);
        // Negative (before start) fails the conversion and falls back to `now`.
        match u64::try_from(since_start_us) {
            Ok(us) if us >= floor && us <= now_us => Instant::from_micros(us),
            _ => now,
        }
    }

    /// The realtime instant (ns since the epoch) that corresponds to `t`.
    #[cfg(test)]
    pub fn to_realtime(&self, t: Instant) -> i64 {
        self.realtime_start_ns.saturating_add(
            i64::try_from(t.as_micros())
                .unwrap_or(i64::MAX)
                .saturating_mul(1000),
        )
    }
}

/// Wall clock in unix milliseconds (0 before 1970): session expiry times are absolute.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.
mod tests {
    use super::*;

    #[test]
    fn realtime_maps_and_clamps() {
        let c = Clock::new();
        let now = Instant::from_micros(5_000_000);
        let t = Instant::from_micros(4_999_000);
        assert_eq!(c.from_realtime(c.to_realtime(t), now), t);
        // From the future (clock stepped back): now.
        assert_eq!(c.from_realtime(c.to_realtime(now) + 10_000_000, now), now);
        // Too old (clock stepped forward): now.
        assert_eq!(
            c.from_realtime(c.to_realtime(now) - 3_000_000_000, now),
            now
        );
        assert!(c.now() <= c.now());
    }
}
