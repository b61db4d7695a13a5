//! What a presence sensor says now: the one rule that the live view, the occupancy view and
//! the climate pass all follow, so they cannot disagree about a resource.
//!
//! A sensor's latest `occupied` reading counts while the sensor is not offline and the reading
//! is at most [`FRESH_INTERVALS`] report intervals old; past that the sensor says nothing (it is
//! neither occupied nor free). A value above one half is occupied.

use super::kinds::DeviceStatus;

/// How many report intervals a presence reading stays current.
pub const FRESH_INTERVALS: i64 = 3;

/// Whether a reading taken at `ts_ms` by a device reporting every `report_interval_s` still
/// holds at `now_ms`.
pub fn fresh(status: DeviceStatus, report_interval_s: i32, ts_ms: i64, now_ms: i64) -> bool {
    status != DeviceStatus::Offline
        && now_ms.saturating_sub(ts_ms)
            <= i64::from(report_interval_s.max(1)) * FRESH_INTERVALS * 1000
}

/// Whether an `occupied` value means someone is there.
pub fn is_occupied(value: f64) -> bool {
    value > 0.5
}

/// What a presence sensor says at `now_ms` from its latest `occupied` reading (`value`, `ts_ms`):
/// `Some(occupied)`, or `None` when it says nothing (offline, stale or never heard).
pub fn occupied_now(
    status: DeviceStatus,
    report_interval_s: i32,
    latest: Option<(f64, i64)>,
    now_ms: i64,
) -> Option<bool> {
    let (value, ts_ms) = latest?;
    fresh(status, report_interval_s, ts_ms, now_ms).then(|| is_occupied(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_781_686_800_000;

    #[test]
    fn a_reading_holds_for_three_report_intervals() {
        let at =
            |age_ms: i64| occupied_now(DeviceStatus::Online, 60, Some((1.0, NOW - age_ms)), NOW);
        assert_eq!(at(0), Some(true));
        assert_eq!(at(180_000), Some(true));
        assert_eq!(at(180_001), None);
        // A reading from slightly ahead of the service's clock is current.
        assert_eq!(at(-2_000), Some(true));
        let free = occupied_now(DeviceStatus::Online, 60, Some((0.0, NOW - 1_000)), NOW);
        assert_eq!(free, Some(false));
    }

    #[test]
    fn an_offline_or_silent_sensor_says_nothing() {
        let latest = Some((1.0, NOW - 1_000));
        assert_eq!(occupied_now(DeviceStatus::Offline, 60, latest, NOW), None);
        assert_eq!(occupied_now(DeviceStatus::Online, 60, None, NOW), None);
        // Unknown is not offline: a sensor behind a silent gateway still counts while fresh.
        assert_eq!(
            occupied_now(DeviceStatus::Unknown, 60, latest, NOW),
            Some(true)
        );
    }

    #[test]
    fn above_one_half_is_occupied() {
        assert!(is_occupied(1.0));
        assert!(is_occupied(0.51));
        assert!(!is_occupied(0.5));
        assert!(!is_occupied(0.0));
        // A device declaring no interval still gets one second of it.
        assert!(fresh(DeviceStatus::Online, 0, NOW - 3_000, NOW));
        assert!(!fresh(DeviceStatus::Online, 0, NOW - 3_001, NOW));
    }
}
