//! Quarter-hours on a site's wall clock, and the 15-minute roll-up of a device's readings:
//! min, max, mean, last, count, and for cumulative counters the delta, epoch-aware.

use chrono::{Offset, TimeZone};
use chrono_tz::Tz;

use super::telemetry::Metric;

pub const QUARTER_MS: i64 = 15 * 60 * 1000;

/// The start (epoch ms) of the local quarter-hour holding `ts_ms` in `tz`. Quarters are cut on
/// the wall clock, so a zone with a :30 or :45 offset gets its own boundaries, and a DST day has
/// 92 or 100 of them.
pub fn quarter_start(ts_ms: i64, tz: Tz) -> i64 {
    let Some(utc) = super::epoch::try_to_utc(ts_ms) else {
        return ts_ms - ts_ms.rem_euclid(QUARTER_MS);
    };
    let offset_ms = i64::from(
        tz.offset_from_utc_datetime(&utc.naive_utc())
            .fix()
            .local_minus_utc(),
    ) * 1000;
    let local = ts_ms + offset_ms;
    local - local.rem_euclid(QUARTER_MS) - offset_ms
}

/// One reading as the roll-up sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub ts: i64,
    pub seq: i64,
    pub metric: Metric,
    pub value: f64,
}

/// Where a counter stood at the end of the previous quarter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CounterMark {
    pub value: f64,
    pub epoch: i64,
}

/// The roll-up of one metric of one device over one quarter.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollup {
    pub metric: Metric,
    pub bucket: i64,
    pub n: i64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub last: f64,
    pub last_ts: i64,
    /// For counters: the energy counted in this quarter (last minus the previous mark, across
    /// explicit resets); `None` for other metrics.
    pub delta: Option<f64>,
    /// For counters: the `meter_epoch` of the last reading.
    pub epoch: Option<i64>,
    /// A counter went down without a new epoch in this quarter.
    pub backwards: bool,
}

/// Rolls up one device's samples of one quarter. `samples` may come in any order; readings of
/// one message share `(ts, seq)`, and a message's `meter_epoch` applies to its counters. `prev`
/// gives each counter's mark at the end of the previous quarter. A counter that restarts in a
/// new epoch counts from zero; one that goes down in the same epoch counts nothing and is flagged.
pub fn roll_up(
    bucket: i64,
    samples: &mut [Sample],
    prev: impl Fn(Metric) -> Option<CounterMark>,
) -> Vec<Rollup> {
    samples.sort_by_key(|s| (s.metric.code(), s.ts, s.seq));
    let epoch_of = |samples: &[Sample], ts: i64, seq: i64| -> Option<i64> {
        samples
            .iter()
            .find(|s| s.metric == Metric::MeterEpoch && s.ts == ts && s.seq == seq)
            .map(|s| s.value as i64)
    };
    let mut out: Vec<Rollup> = Vec::new();
    let mut mark: Option<CounterMark> = None;
    for i in 0..samples.len() {
        let s = samples[i];
        let new_metric = out.last().is_none_or(|r| r.metric != s.metric);
        if new_metric {
            mark = if s.metric.is_counter() {
                prev(s.metric)
            } else {
                None
            };
            out.push(Rollup {
                metric: s.metric,
                bucket,
                n: 0,
                min: f64::INFINITY,
                max: f64::NEG_INFINITY,
                sum: 0.0,
                last: s.value,
                last_ts: s.ts,
                delta: s.metric.is_counter().then_some(0.0),
                epoch: None,
                backwards: false,
            });
        }
        let r = out.last_mut().expect("pushed above");
        r.n += 1;
        r.min = r.min.min(s.value);
        r.max = r.max.max(s.value);
        r.sum += s.value;
        r.last = s.value;
        r.last_ts = s.ts;
        if s.metric.is_counter() {
            let epoch = epoch_of(samples, s.ts, s.seq)
                .or(mark.map(|m| m.epoch))
                .unwrap_or(0);
            let step = match mark {
                Some(m) if m.epoch == epoch && s.value >= m.value => s.value - m.value,
                Some(m) if m.epoch == epoch => {
                    r.backwards = true;
                    0.0
                }
                Some(_) => s.value,
                None => 0.0,
            };
            r.delta = Some(r.delta.unwrap_or(0.0) + step);
            r.epoch = Some(epoch);
            mark = Some(CounterMark {
                value: s.value,
                epoch,
            });
        }
    }
    out
}

/// How many quarters the local day starting at `day_start_ms` has (92, 96 or 100).
pub fn quarters_in_local_day(date: chrono::NaiveDate, tz: Tz) -> i64 {
    let start = super::opening_hours::local_day_start(date, tz);
    let end = super::opening_hours::local_day_start(date.succ_opt().unwrap_or(date), tz);
    (end - start).num_milliseconds() / QUARTER_MS
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn s(ts: i64, seq: i64, metric: Metric, value: f64) -> Sample {
        Sample {
            ts,
            seq,
            metric,
            value,
        }
    }

    #[test]
    fn quarters_follow_the_local_clock() {
        let rome: Tz = "Europe/Rome".parse().unwrap();
        let kathmandu: Tz = "Asia/Kathmandu".parse().unwrap();
        let t = super::super::epoch::ms(
            chrono::DateTime::parse_from_rfc3339("2026-12-01T09:07:30+01:00").unwrap(),
        );
        let q = super::super::epoch::ms(
            chrono::DateTime::parse_from_rfc3339("2026-12-01T09:00:00+01:00").unwrap(),
        );
        assert_eq!(quarter_start(t, rome), q);
        // +05:45: local 13:52:30 belongs to the quarter starting 13:45 local.
        let k = super::super::epoch::ms(
            chrono::DateTime::parse_from_rfc3339("2026-12-01T13:52:30+05:45").unwrap(),
        );
        let kq = super::super::epoch::ms(
            chrono::DateTime::parse_from_rfc3339("2026-12-01T13:45:00+05:45").unwrap(),
        );
        assert_eq!(quarter_start(k, kathmandu), kq);
        let d = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        assert_eq!(quarters_in_local_day(d(2026, 10, 25), rome), 100);
        assert_eq!(quarters_in_local_day(d(2026, 3, 29), rome), 92);
        assert_eq!(quarters_in_local_day(d(2026, 6, 1), rome), 96);
    }

    #[test]
    fn counter_deltas_are_exact_across_resets() {
        let e = Metric::EImpWh;
        let ep = Metric::MeterEpoch;
        let mut samples = vec![
            s(1, 1, e, 110.0),
            s(1, 1, ep, 0.0),
            s(2, 2, e, 125.0),
            s(2, 2, ep, 0.0),
            // reset: new epoch starts from zero
            s(3, 3, e, 5.0),
            s(3, 3, ep, 1.0),
            s(4, 4, e, 9.0),
            s(4, 4, ep, 1.0),
        ];
        let out = roll_up(0, &mut samples, |_| {
            Some(CounterMark {
                value: 100.0,
                epoch: 0,
            })
        });
        let r = out.iter().find(|r| r.metric == e).unwrap();
        assert_eq!(r.delta, Some(25.0 + 9.0));
        assert_eq!(
            (r.n, r.min, r.max, r.last, r.epoch),
            (4, 5.0, 125.0, 9.0, Some(1))
        );
        assert!(!r.backwards);
        let epoch = out.iter().find(|r| r.metric == ep).unwrap();
        assert_eq!(epoch.delta, None);

        let mut backwards = vec![s(1, 1, e, 90.0), s(1, 1, ep, 0.0)];
        let out = roll_up(0, &mut backwards, |_| {
            Some(CounterMark {
                value: 100.0,
                epoch: 0,
            })
        });
        assert!(out[0].backwards);
        assert_eq!(out[0].delta, Some(0.0));
    }

    #[test]
    fn plain_metrics_give_min_max_mean_last() {
        let mut samples = vec![
            s(3, 3, Metric::TC, 21.0),
            s(1, 1, Metric::TC, 19.0),
            s(2, 2, Metric::TC, 23.0),
        ];
        let out = roll_up(0, &mut samples, |_| None);
        assert_eq!(out.len(), 1);
        let r = &out[0];
        assert_eq!(
            (r.n, r.min, r.max, r.sum, r.last, r.last_ts),
            (3, 19.0, 23.0, 63.0, 21.0, 3)
        );
        assert_eq!(r.delta, None);
    }
}
