//! A device's readings over time: raw, or the 15-minute roll-ups folded into the site's local
//! hours and days (a DST day is 23 or 25 hours long).

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Days, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use utoipa::ToSchema;

use super::devices::{ts_local, ts_text, visible_device};
use super::error::ApiError;
use super::extract::{Auth, Errors, Query};
use super::state::AppState;
use super::views::{local_text, utc_text};
use crate::db::telemetry::{self as store, RollupRow};
use crate::domain::epoch::to_utc;
use crate::domain::opening_hours::local_day_start;
use crate::domain::quarters::{quarter_start, QUARTER_MS};
use crate::domain::telemetry::Metric;
use crate::domain::FieldError;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// Most raw readings one request returns.
pub const RAW_POINTS: usize = 10_000;

/// How readings are aggregated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interval {
    Raw,
    Quarter,
    Hour,
    Day,
}

impl Interval {
    fn parse(s: &str) -> Option<Interval> {
        match s {
            "raw" => Some(Interval::Raw),
            "15m" => Some(Interval::Quarter),
            "1h" => Some(Interval::Hour),
            "1d" => Some(Interval::Day),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Interval::Raw => "raw",
            Interval::Quarter => "15m",
            Interval::Hour => "1h",
            Interval::Day => "1d",
        }
    }

    /// The longest window a request may ask for, in ms, and as text.
    fn cap(self) -> (i64, &'static str) {
        match self {
            Interval::Raw => (DAY_MS, "24 hours"),
            Interval::Quarter => (31 * DAY_MS, "31 days"),
            Interval::Hour => (92 * DAY_MS, "92 days"),
            Interval::Day => (1_100 * DAY_MS, "1100 days"),
        }
    }
}

fn offset_ms(ts: i64, tz: Tz) -> i64 {
    i64::from(
        tz.offset_from_utc_datetime(&to_utc(ts).naive_utc())
            .fix()
            .local_minus_utc(),
    ) * 1000
}

/// The local hour holding `ts`: `[start, end)` in epoch ms. On a day the clocks go back the
/// repeated hour is two distinct hours.
fn local_hour(ts: i64, tz: Tz) -> (i64, i64) {
    let start = ts - (ts + offset_ms(ts, tz)).rem_euclid(HOUR_MS);
    (start, start + HOUR_MS)
}

/// The local day holding `ts`: `[start, end)` in epoch ms, 23 or 25 hours long on DST days.
fn local_day(ts: i64, tz: Tz) -> (i64, i64) {
    let date = to_utc(ts).with_timezone(&tz).date_naive();
    let next = date.checked_add_days(Days::new(1)).unwrap_or(date);
    (
        crate::domain::epoch::ms(local_day_start(date, tz)),
        crate::domain::epoch::ms(local_day_start(next, tz)),
    )
}

/// Roll-ups folded into one bucket.
#[derive(Debug, Clone, PartialEq)]
struct Folded {
    start: i64,
    end: i64,
    quarters: u32,
    n: i64,
    min: f64,
    max: f64,
    sum: f64,
    last: f64,
    delta: Option<f64>,
}

/// Folds 15-minute roll-ups (in bucket order) into the buckets `span` puts them in: counts and
/// sums add, min and max of the extremes, last of the last quarter, counter deltas add.
fn fold(rows: &[RollupRow], counter: bool, span: impl Fn(i64) -> (i64, i64)) -> Vec<Folded> {
    let mut out: Vec<Folded> = Vec::new();
    for r in rows {
        let (start, end) = span(r.bucket);
        match out.last_mut() {
            Some(f) if f.start == start => {
                f.quarters += 1;
                f.n += i64::from(r.n);
                f.min = f.min.min(r.min);
                f.max = f.max.max(r.max);
                f.sum += r.sum;
                f.last = r.last;
                if let Some(d) = r.delta {
                    f.delta = Some(f.delta.unwrap_or(0.0) + d);
                }
            }
            _ => out.push(Folded {
                start,
                end,
                quarters: 1,
                n: i64::from(r.n),
                min: r.min,
                max: r.max,
                sum: r.sum,
                last: r.last,
                delta: if counter {
                    Some(r.delta.unwrap_or(0.0))
                } else {
                    None
                },
            }),
        }
    }
    out
}

/// One raw reading.
#[derive(Serialize, ToSchema)]
pub struct RawPoint {
    pub ts: String,
    pub ts_local: String,
    pub seq: i64,
    pub value: f64,
}

/// One aggregated bucket `[start, end)`.
#[derive(Serialize, ToSchema)]
pub struct AggregatePoint {
    pub start: String,
    pub end: String,
    pub start_local: String,
    pub end_local: String,
    /// Readings in the bucket.
    pub count: i64,
    pub min: f64,
    pub max: f64,
    /// Mean of every reading in the bucket.
    pub mean: f64,
    /// The last reading of the bucket.
    pub last: f64,
    /// Counters only: what the counter counted in the bucket, across explicit resets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<f64>,
    /// `1h` and `1d`: how many 15-minute roll-ups with readings were folded in (a full local
    /// day has 96, or 92 and 100 on DST days).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarters: Option<u32>,
}

#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum ReadingItem {
    Raw(RawPoint),
    Aggregate(AggregatePoint),
}

#[derive(Serialize, ToSchema)]
pub struct Readings {
    pub device_id: String,
    pub metric: String,
    pub unit: &'static str,
    /// `raw`, `15m`, `1h` or `1d`.
    pub interval: &'static str,
    pub timezone: String,
    pub from: String,
    pub to: String,
    /// `raw`: items are `RawPoint`s; otherwise `AggregatePoint`s of the buckets that overlap
    /// `[from, to)` and hold readings, cut on the site's wall clock.
    pub items: Vec<ReadingItem>,
    /// `raw` only: more than 10,000 readings fell in the window and the first 10,000 are shown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
}

fn required_instant(q: &Query, name: &str, errors: &mut Errors) -> Option<DateTime<Utc>> {
    match q.instant(name) {
        Some(v) => errors.take(v),
        None => {
            errors.push(FieldError::new(name, "is required (RFC 3339)"));
            None
        }
    }
}

fn metric_names() -> String {
    Metric::ALL
        .iter()
        .map(|m| m.name())
        .collect::<Vec<_>>()
        .join(", ")
}

#[utoipa::path(get, path = "/api/v1/devices/{device_id}/readings", tag = "building",
    params(("metric" = String, Query, description = "a metric name: t_c, rh_pct, co2_ppm, lux, p_w, e_imp_wh, e_exp_wh, …"),
           ("from" = String, Query, description = "RFC 3339"), ("to" = String, Query, description = "RFC 3339, after from"),
           ("interval" = Option<String>, Query, description = "raw (window up to 24 h, at most 10,000 points), 15m (default; up to 31 days), 1h (up to 92 days) or 1d (up to 1,100 days); hours and days are the site's local ones")),
    responses((status = 200, body = Readings),
              (status = 401, body = crate::api::error::Problem),
              (status = 404, description = "no such device at the caller's sites", body = crate::api::error::Problem),
              (status = 422, body = crate::api::error::Problem)),
    security(("bearer" = [])))]
pub async fn readings(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let d = visible_device(&state, &auth.caller, &path)?;
    let q = Query::from_request(&req);
    let mut errors = Errors::default();
    let metric = match q.str("metric") {
        None => {
            errors.push(FieldError::new(
                "metric",
                format!("is required: one of {}", metric_names()),
            ));
            None
        }
        Some(m) => {
            let found = Metric::from_name(m);
            if found.is_none() {
                errors.push(FieldError::new(
                    "metric",
                    format!("must be one of: {}", metric_names()),
                ));
            }
            found
        }
    };
    let interval = match q.str("interval") {
        None => Some(Interval::Quarter),
        Some(s) => {
            let found = Interval::parse(s);
            if found.is_none() {
                errors.push(FieldError::new(
                    "interval",
                    "must be one of: raw, 15m, 1h, 1d",
                ));
            }
            found
        }
    };
    let from = required_instant(&q, "from", &mut errors);
    let to = required_instant(&q, "to", &mut errors);
    if let (Some(f), Some(t)) = (from, to) {
        if t <= f {
            errors.push(FieldError::new("to", "must be after from"));
        } else if let Some(i) = interval {
            let (cap, text) = i.cap();
            if (t - f).num_milliseconds() > cap {
                errors.push(FieldError::new(
                    "to",
                    format!(
                        "the window of interval {} is at most {text}; ask for a shorter one or a coarser interval",
                        i.name()
                    ),
                ));
            }
        }
    }
    errors.finish()?;
    let (Some(metric), Some(interval), Some(from), Some(to)) = (metric, interval, from, to) else {
        return Err(ApiError::Internal("validated parameters missing".into()));
    };
    let (from_ms, to_ms) = (crate::domain::epoch::ms(from), crate::domain::epoch::ms(to));
    let (num, code, tz) = (d.num, metric.code(), d.tz);
    let mut truncated = None;
    let items: Vec<ReadingItem> = match interval {
        Interval::Raw => {
            let mut rows = state
                .db
                .run(move |c| {
                    store::device_readings(c, num, code, from_ms, to_ms, RAW_POINTS as i64 + 1)
                })
                .await?;
            truncated = Some(rows.len() > RAW_POINTS);
            rows.truncate(RAW_POINTS);
            rows.into_iter()
                .map(|r| {
                    ReadingItem::Raw(RawPoint {
                        ts: ts_text(r.ts),
                        ts_local: ts_local(r.ts, tz),
                        seq: r.seq,
                        value: r.value,
                    })
                })
                .collect()
        }
        _ => {
            let first = match interval {
                Interval::Hour => local_hour(from_ms, tz).0,
                Interval::Day => local_day(from_ms, tz).0,
                _ => quarter_start(from_ms, tz),
            };
            let rows = state
                .db
                .run(move |c| store::rollups(c, num, code, first, to_ms))
                .await?;
            let counter = metric.is_counter();
            let folded = match interval {
                Interval::Hour => fold(&rows, counter, |b| local_hour(b, tz)),
                Interval::Day => fold(&rows, counter, |b| local_day(b, tz)),
                _ => fold(&rows, counter, |b| (b, b + QUARTER_MS)),
            };
            folded
                .into_iter()
                .map(|f| {
                    ReadingItem::Aggregate(AggregatePoint {
                        start: utc_text(to_utc(f.start)),
                        end: utc_text(to_utc(f.end)),
                        start_local: local_text(to_utc(f.start), tz),
                        end_local: local_text(to_utc(f.end), tz),
                        count: f.n,
                        min: f.min,
                        max: f.max,
                        mean: if f.n > 0 { f.sum / f.n as f64 } else { 0.0 },
                        last: f.last,
                        delta: f.delta,
                        quarters: (interval != Interval::Quarter).then_some(f.quarters),
                    })
                })
                .collect()
        }
    };
    Ok(HttpResponse::Ok().json(Readings {
        device_id: d.id.clone(),
        metric: metric.name().to_string(),
        unit: metric.unit(),
        interval: interval.name(),
        timezone: tz.name().to_string(),
        from: ts_text(from_ms),
        to: ts_text(to_ms),
        items,
        truncated,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        bucket: i64,
        n: i32,
        min: f64,
        max: f64,
        sum: f64,
        last: f64,
        delta: Option<f64>,
    ) -> RollupRow {
        RollupRow {
            device: 1,
            metric: 6,
            bucket,
            n,
            min,
            max,
            sum,
            last,
            last_ts: bucket + 1,
            delta,
            epoch: None,
        }
    }

    fn rome() -> Tz {
        "Europe/Rome".parse().expect("zone")
    }

    #[test]
    fn a_day_the_clocks_go_back_has_25_hours_and_100_quarters() {
        let tz = rome();
        let start = tz
            .with_ymd_and_hms(2026, 10, 25, 0, 0, 0)
            .single()
            .expect("midnight")
            .timestamp_millis();
        let (s, e) = local_day(start + 5 * HOUR_MS, tz);
        assert_eq!((s, e - s), (start, 25 * HOUR_MS));
        let rows: Vec<RollupRow> = (0..100)
            .map(|i| row(start + i * QUARTER_MS, 3, 1.0, 2.0, 4.5, 2.0, Some(1.5)))
            .collect();
        let days = fold(&rows, true, |b| local_day(b, tz));
        assert_eq!(days.len(), 1);
        assert_eq!(days[0].quarters, 100);
        assert_eq!(days[0].n, 300);
        assert_eq!(days[0].delta, Some(150.0));
        let hours = fold(&rows, true, |b| local_hour(b, tz));
        assert_eq!(hours.len(), 25, "the repeated 02:00 hour is two hours");
        assert!(hours
            .iter()
            .all(|h| h.quarters == 4 && h.end - h.start == HOUR_MS));
    }

    #[test]
    fn a_day_the_clocks_go_forward_has_23_hours() {
        let tz = rome();
        let noon = tz
            .with_ymd_and_hms(2026, 3, 29, 12, 0, 0)
            .single()
            .expect("noon")
            .timestamp_millis();
        let (s, e) = local_day(noon, tz);
        assert_eq!(e - s, 23 * HOUR_MS);
    }

    #[test]
    fn folding_weights_by_count_and_keeps_the_last_quarter_last() {
        let rows = vec![
            row(0, 1, 5.0, 5.0, 5.0, 5.0, None),
            row(QUARTER_MS, 3, 1.0, 9.0, 12.0, 1.0, None),
        ];
        let f = fold(&rows, false, |_| (0, HOUR_MS));
        assert_eq!(f.len(), 1);
        let f = &f[0];
        assert_eq!(
            (f.n, f.min, f.max, f.sum, f.last, f.delta),
            (4, 1.0, 9.0, 17.0, 1.0, None)
        );
    }
}
