//! The pure functions on the request hot paths: opening hours, the booking policy, instant
//! parsing, holiday look-ups, and generating the whole seed network.
//!
//! Run with `cargo bench --bench domain`.

use std::hint::black_box;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Europe::Rome;
use criterion::{criterion_group, criterion_main, Criterion};
use spazi::domain::holidays::national_holiday;
use spazi::domain::network::generate;
use spazi::domain::opening_hours::WeeklyHours;
use spazi::domain::policy::{check_booking, BookingContext};
use spazi::domain::{ResourceKind, TimeRange};

fn range(start: &str, end: &str) -> TimeRange {
    TimeRange::parse(start, end, "starts_at", "ends_at").expect("valid range")
}

/// The closure test a site entry answers: national holidays plus two closures of its own.
fn site_closed(own: [NaiveDate; 2]) -> impl Fn(NaiveDate) -> bool {
    move |d| national_holiday(d).is_some() || own.contains(&d)
}

fn own_closures() -> [NaiveDate; 2] {
    [
        NaiveDate::from_ymd_opt(2026, 6, 29).expect("date"),
        NaiveDate::from_ymd_opt(2026, 9, 14).expect("date"),
    ]
}

fn opening_hours(c: &mut Criterion) {
    let medium = WeeklyHours::weekdays_and_saturday((8 * 60, 20 * 60), Some((9 * 60, 13 * 60)));
    let large = WeeklyHours::every_day(0, 24 * 60);
    let closed = site_closed(own_closures());
    let one_hour = range("2026-12-01T09:00:00+01:00", "2026-12-01T10:00:00+01:00");
    // Saturday evening to Sunday morning of 29 March 2026: midnight and the spring-forward gap.
    let dst_night = range("2026-03-28T20:00:00+01:00", "2026-03-29T08:00:00+02:00");
    assert!(medium.covers(&one_hour, Rome, &closed));
    assert!(large.covers(&dst_night, Rome, &closed));

    let mut g = c.benchmark_group("covers");
    g.bench_function("one_hour_medium_site", |b| {
        b.iter(|| black_box(&medium).covers(black_box(&one_hour), Rome, &closed))
    });
    g.bench_function("dst_night_large_site", |b| {
        b.iter(|| black_box(&large).covers(black_box(&dst_night), Rome, &closed))
    });
    g.finish();
}

fn policy(c: &mut Criterion) {
    let hours = WeeklyHours::weekdays_and_saturday((8 * 60, 20 * 60), Some((9 * 60, 13 * 60)));
    let closed = site_closed(own_closures());
    let ctx = BookingContext {
        kind: ResourceKind::Desk,
        capacity: 1,
        hours: &hours,
        timezone: Rome,
        closed: &closed,
        now: DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z")
            .expect("instant")
            .with_timezone(&Utc),
    };
    let good = range("2026-12-01T09:00:00+01:00", "2026-12-01T10:00:00+01:00");
    // Too long and outside the hours: the path that formats error messages.
    let bad = range("2026-12-01T07:00:00+01:00", "2026-12-01T21:00:00+01:00");
    assert!(check_booking(&ctx, &good, 1).is_empty());
    assert_eq!(check_booking(&ctx, &bad, 1).len(), 2);

    let mut g = c.benchmark_group("check_booking");
    g.bench_function("desk_accepted", |b| {
        b.iter(|| check_booking(black_box(&ctx), black_box(&good), black_box(1)))
    });
    g.bench_function("desk_two_errors", |b| {
        b.iter(|| check_booking(black_box(&ctx), black_box(&bad), black_box(1)))
    });
    g.finish();
}

fn parsing(c: &mut Criterion) {
    let (start, end) = ("2026-12-01T09:00:00+01:00", "2026-12-01T10:00:00+01:00");
    c.bench_function("time_range_parse", |b| {
        b.iter(|| TimeRange::parse(black_box(start), black_box(end), "starts_at", "ends_at"))
    });
    // Every `covers` and `check_booking` calls this once per local day it touches.
    let day = NaiveDate::from_ymd_opt(2026, 12, 1).expect("date");
    c.bench_function("national_holiday_lookup", |b| {
        b.iter(|| national_holiday(black_box(day)))
    });
}

fn network(c: &mut Criterion) {
    assert_eq!(generate(2026).len(), 250);
    let mut g = c.benchmark_group("network");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(4));
    g.bench_function("generate_2026", |b| b.iter(|| generate(black_box(2026))));
    g.finish();
}

fn config() -> Criterion {
    // Short runs keep the whole file under a minute on a small shared machine.
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = opening_hours, policy, parsing, network
}
criterion_main!(benches);
