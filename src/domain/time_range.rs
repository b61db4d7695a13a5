use chrono::{DateTime, Duration, Utc};

use super::FieldError;

/// A half-open interval of instants `[start, end)` with `end > start`; it cannot exist otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

impl TimeRange {
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> Result<Self, FieldError> {
        if end <= start {
            return Err(FieldError::new(
                "ends_at",
                "must be after starts_at (intervals are half-open [start, end))",
            ));
        }
        Ok(TimeRange { start, end })
    }

    /// Parses two RFC 3339 instants with an offset, naming the field that is wrong.
    pub fn parse(
        start: &str,
        end: &str,
        start_field: &str,
        end_field: &str,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let s = parse_instant(start, start_field)
            .map_err(|e| errors.push(e))
            .ok();
        let e = parse_instant(end, end_field)
            .map_err(|e| errors.push(e))
            .ok();
        match (s, e) {
            (Some(s), Some(e)) => TimeRange::new(s, e).map_err(|mut err| {
                err.field = end_field.to_string();
                vec![err]
            }),
            _ => Err(errors),
        }
    }

    pub fn start(&self) -> DateTime<Utc> {
        self.start
    }

    pub fn end(&self) -> DateTime<Utc> {
        self.end
    }

    pub fn duration(&self) -> Duration {
        self.end - self.start
    }

    pub fn overlaps(&self, other: &TimeRange) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// An RFC 3339 instant; a local time without an offset is refused, since it is ambiguous.
pub fn parse_instant(value: &str, field: &str) -> Result<DateTime<Utc>, FieldError> {
    DateTime::parse_from_rfc3339(value.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            FieldError::new(
                field,
                "must be an RFC 3339 instant with an offset, e.g. 2026-12-01T09:00:00+01:00",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_must_follow_start() {
        let err = TimeRange::parse(
            "2026-12-01T10:00:00+01:00",
            "2026-12-01T09:00:00+01:00",
            "starts_at",
            "ends_at",
        )
        .unwrap_err();
        assert_eq!(err[0].field, "ends_at");
        assert!(
            TimeRange::parse("2026-12-01T10:00:00Z", "2026-12-01T10:00:00Z", "a", "b").is_err()
        );
    }

    #[test]
    fn adjacent_ranges_do_not_overlap() {
        let r = |a: &str, b: &str| TimeRange::parse(a, b, "s", "e").unwrap();
        let first = r("2026-12-01T09:00:00+01:00", "2026-12-01T10:00:00+01:00");
        let second = r("2026-12-01T10:00:00+01:00", "2026-12-01T11:00:00+01:00");
        assert!(!first.overlaps(&second));
        assert!(first.overlaps(&r("2026-12-01T09:59:00+01:00", "2026-12-01T10:30:00+01:00")));
    }

    #[test]
    fn naive_local_times_are_refused() {
        assert_eq!(
            parse_instant("2026-12-01T09:00:00", "starts_at")
                .unwrap_err()
                .field,
            "starts_at"
        );
    }
}
