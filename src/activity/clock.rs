//! One clock for everything the activity record keeps: microseconds since
//! pgshare started, so that a time fits an atomic, with 0 standing for
//! "never"; turned into wall-clock time only when shown.

use std::time::{Duration, Instant, SystemTime};

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
    base_wall: SystemTime,
}

impl Clock {
    pub fn new() -> Self {
        Self {
            base: Instant::now(),
            base_wall: SystemTime::now(),
        }
    }

    /// Now, in microseconds since the clock started; never 0.
    pub fn now(&self) -> u64 {
        self.at(Instant::now())
    }

    /// `instant` in microseconds since the clock started; never 0.
    pub fn at(&self, instant: Instant) -> u64 {
        (instant.saturating_duration_since(self.base).as_micros() as u64).max(1)
    }

    /// Microseconds from `then` (a time of this clock, 0 for never) until
    /// now.
    pub fn since(&self, then: u64) -> u64 {
        if then == 0 {
            0
        } else {
            self.now().saturating_sub(then)
        }
    }

    /// The wall-clock time of `micros`, a time of this clock.
    pub fn wall(&self, micros: u64) -> SystemTime {
        self.base_wall + Duration::from_micros(micros)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// `time` as PgBouncer's console shows timestamps: `2025-01-31 12:34:56 UTC`.
pub fn format_timestamp(time: SystemTime) -> String {
    let time = time::OffsetDateTime::from(time);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        time.year(),
        u8::from(time.month()),
        time.day(),
        time.hour(),
        time.minute(),
        time.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_with_seconds() {
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(format_timestamp(time), "2023-11-14 22:13:20 UTC");
    }

    #[test]
    fn times_are_never_zero_and_never_run_backwards() {
        let clock = Clock::new();
        let first = clock.now();
        assert!(first >= 1);
        assert!(clock.now() >= first);
        assert_eq!(clock.since(0), 0);
        assert!(clock.wall(first) >= clock.wall(0));
    }
}
