//! Instants as epoch milliseconds, the unit of the device contract and of the in-memory state,
//! and back. The database keeps timestamps as naive UTC, so both forms are converted here.
//!
//! An epoch-ms value outside chrono's range (about ±262,000 years) maps to the epoch itself
//! in the infallible conversions; [`try_to_utc`] says so instead.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};

/// Now, epoch ms.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// An instant (in any time zone) as epoch ms.
pub fn ms<Z: TimeZone>(t: DateTime<Z>) -> i64 {
    t.timestamp_millis()
}

/// A naive UTC timestamp (as stored) as epoch ms.
pub fn naive_ms(t: NaiveDateTime) -> i64 {
    t.and_utc().timestamp_millis()
}

/// Epoch ms as an instant, `None` outside chrono's range.
pub fn try_to_utc(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

/// Epoch ms as an instant (the epoch itself outside chrono's range).
pub fn to_utc(ms: i64) -> DateTime<Utc> {
    try_to_utc(ms).unwrap_or_default()
}

/// Epoch ms as a naive UTC timestamp, as stored (the epoch itself outside chrono's range).
pub fn to_naive(ms: i64) -> NaiveDateTime {
    to_utc(ms).naive_utc()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_keep_the_millisecond() {
        let at = 1_781_686_800_123;
        let t = to_utc(at);
        assert_eq!(t.to_rfc3339(), "2026-06-17T09:00:00.123+00:00");
        assert_eq!(ms(t), at);
        assert_eq!(naive_ms(to_naive(at)), at);
        assert_eq!(ms(to_utc(-1)), -1);
    }

    #[test]
    fn out_of_range_is_said_or_the_epoch() {
        assert_eq!(try_to_utc(i64::MAX), None);
        assert_eq!(ms(to_utc(i64::MAX)), 0);
        assert_eq!(naive_ms(to_naive(i64::MIN)), 0);
    }

    #[test]
    fn now_is_now() {
        let before = Utc::now().timestamp_millis();
        let n = now_ms();
        assert!(n >= before && n - before < 5_000, "{before} {n}");
    }
}
