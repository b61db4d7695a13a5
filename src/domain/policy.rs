use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;

use super::opening_hours::WeeklyHours;
use super::{FieldError, ResourceKind, TimeRange};

/// Limits that depend on what is booked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindPolicy {
    pub min_length: Duration,
    pub max_length: Duration,
    /// How far ahead a booking may start.
    pub max_lead: Duration,
}

pub fn kind_policy(kind: ResourceKind) -> KindPolicy {
    let p = |min_minutes, max_hours, lead_days| KindPolicy {
        min_length: Duration::minutes(min_minutes),
        max_length: Duration::hours(max_hours),
        max_lead: Duration::days(lead_days),
    };
    match kind {
        ResourceKind::Desk => p(15, 12, 90),
        ResourceKind::MeetingRoom => p(15, 10, 180),
        ResourceKind::Office => p(60, 14, 365),
        ResourceKind::EventRoom => p(60, 14, 365),
        ResourceKind::EvBay => p(15, 12, 30),
    }
}

/// No booking of any kind is longer than this; storage relies on it to bound overlap searches.
pub const MAX_LENGTH: Duration = Duration::hours(24);

/// How far in the past a start may lie and still count as "now" (clock skew, a walk-in booking).
pub const START_TOLERANCE: Duration = Duration::minutes(5);

/// Check-in opens this long before the start.
pub const CHECK_IN_EARLY: Duration = Duration::minutes(15);
/// A booking not checked in this many minutes after its start is released, unless its site sets
/// its own grace.
pub const NO_SHOW_GRACE_MINUTES: i32 = 15;

/// What a booking request is checked against.
pub struct BookingContext<'a> {
    pub kind: ResourceKind,
    pub capacity: i32,
    pub hours: &'a WeeklyHours,
    pub timezone: Tz,
    pub closed: &'a dyn Fn(NaiveDate) -> bool,
    pub now: DateTime<Utc>,
}

/// Every policy the range and attendee count break, each naming its field.
pub fn check_booking(ctx: &BookingContext, range: &TimeRange, attendees: i32) -> Vec<FieldError> {
    let policy = kind_policy(ctx.kind);
    let mut errors = Vec::new();
    if range.start() < ctx.now - START_TOLERANCE {
        errors.push(FieldError::new("starts_at", "is in the past"));
    } else if range.start() > ctx.now + policy.max_lead {
        errors.push(FieldError::new(
            "starts_at",
            format!(
                "is too far ahead: a {} can be booked at most {} days in advance",
                ctx.kind,
                policy.max_lead.num_days()
            ),
        ));
    }
    if range.duration() > policy.max_length {
        errors.push(FieldError::new(
            "ends_at",
            format!(
                "the booking is too long: a {} can be booked for at most {} hours",
                ctx.kind,
                policy.max_length.num_hours()
            ),
        ));
    } else if range.duration() < policy.min_length {
        errors.push(FieldError::new(
            "ends_at",
            format!(
                "the booking is too short: at least {} minutes",
                policy.min_length.num_minutes()
            ),
        ));
    }
    let local_start = range.start().with_timezone(&ctx.timezone).date_naive();
    let local_last = (range.end() - Duration::nanoseconds(1))
        .with_timezone(&ctx.timezone)
        .date_naive();
    let closed_day = local_start
        .iter_days()
        .take_while(|d| *d <= local_last)
        .find(|d| (ctx.closed)(*d));
    if let Some(day) = closed_day {
        errors.push(FieldError::new(
            "starts_at",
            format!("the site is closed on {day}"),
        ));
    } else if !ctx.hours.covers(range, ctx.timezone, |_| false) {
        errors.push(FieldError::new(
            "starts_at",
            format!(
                "the interval is outside the site's opening hours (local time, {})",
                ctx.timezone
            ),
        ));
    }
    if attendees < 1 {
        errors.push(FieldError::new("attendees", "must be at least 1"));
    } else if attendees > ctx.capacity {
        errors.push(FieldError::new(
            "attendees",
            format!("exceeds the resource's capacity of {}", ctx.capacity),
        ));
    }
    errors
}

/// Allowance minutes a range consumes: whole minutes, rounded up.
pub fn charged_minutes(range: &TimeRange) -> i32 {
    let secs = range.duration().num_seconds();
    ((secs + 59) / 60).min(i64::from(i32::MAX)) as i32
}

/// The allowance month (`YYYY-MM`) a booking counts against: the month of its local start.
pub fn allowance_month(range: &TimeRange, tz: Tz) -> String {
    range.start().with_timezone(&tz).format("%Y-%m").to_string()
}

/// Whether check-in is possible at `now` for a booking over `range`.
pub fn check_in_open(range: &TimeRange, now: DateTime<Utc>) -> bool {
    now >= range.start() - CHECK_IN_EARLY && now < range.end()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Europe::Rome;

    fn ctx<'a>(
        hours: &'a WeeklyHours,
        closed: &'a dyn Fn(NaiveDate) -> bool,
        now: &str,
    ) -> BookingContext<'a> {
        BookingContext {
            kind: ResourceKind::Desk,
            capacity: 1,
            hours,
            timezone: Rome,
            closed,
            now: DateTime::parse_from_rfc3339(now)
                .unwrap()
                .with_timezone(&Utc),
        }
    }

    fn range(a: &str, b: &str) -> TimeRange {
        TimeRange::parse(a, b, "starts_at", "ends_at").unwrap()
    }

    #[test]
    fn every_kind_fits_the_longest_booking() {
        for kind in ResourceKind::ALL {
            assert!(kind_policy(*kind).max_length <= MAX_LENGTH, "{kind}");
        }
    }

    #[test]
    fn a_good_booking_passes() {
        let hours = WeeklyHours::weekdays_and_saturday((480, 1200), None);
        let c = ctx(&hours, &|_| false, "2026-11-30T12:00:00Z");
        assert!(check_booking(
            &c,
            &range("2026-12-01T09:00:00+01:00", "2026-12-01T10:00:00+01:00"),
            1
        )
        .is_empty());
    }

    #[test]
    fn each_rule_names_its_field() {
        let hours = WeeklyHours::weekdays_and_saturday((480, 1200), None);
        let holiday = NaiveDate::from_ymd_opt(2026, 12, 8).unwrap();
        let closed = move |d: NaiveDate| d == holiday;
        let c = ctx(&hours, &closed, "2026-11-30T12:00:00Z");
        let fields = |r: TimeRange, a| {
            check_booking(&c, &r, a)
                .into_iter()
                .map(|e| e.field)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            fields(
                range("2026-11-01T09:00:00+01:00", "2026-11-02T10:00:00+01:00"),
                1
            )[0],
            "starts_at"
        );
        assert_eq!(
            fields(
                range("2026-12-01T08:00:00+01:00", "2026-12-01T21:00:00+01:00"),
                1
            ),
            ["ends_at", "starts_at"]
        );
        assert_eq!(
            fields(
                range("2026-12-08T09:00:00+01:00", "2026-12-08T10:00:00+01:00"),
                1
            ),
            ["starts_at"]
        );
        assert_eq!(
            fields(
                range("2026-12-01T09:00:00+01:00", "2026-12-01T10:00:00+01:00"),
                2
            ),
            ["attendees"]
        );
        assert_eq!(
            fields(
                range("2027-06-01T09:00:00+02:00", "2027-06-01T10:00:00+02:00"),
                1
            ),
            ["starts_at"]
        );
    }

    #[test]
    fn allowance_counts_real_minutes_across_dst() {
        let r = range("2026-10-25T01:00:00+02:00", "2026-10-25T04:00:00+01:00");
        assert_eq!(charged_minutes(&r), 240);
        assert_eq!(allowance_month(&r, Rome), "2026-10");
    }
}
