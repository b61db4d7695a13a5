use chrono::NaiveDate;
use chrono_tz::Europe::Rome;

use super::*;
use crate::domain::opening_hours::local_day_start;

const Q: i64 = QUARTER_MS;

fn row(bucket: i64, delta: f64, epoch: i64) -> CounterQuarter {
    CounterQuarter {
        bucket,
        delta,
        last_ts: bucket + Q - 60_000,
        epoch,
    }
}

#[test]
fn contiguous_quarters_are_measured_as_they_are() {
    let rows = [row(0, 10.0, 0), row(Q, 20.0, 0), row(2 * Q, 0.0, 0)];
    let out = counter_energy(None, &rows);
    assert_eq!(out.len(), 3);
    assert_eq!(out[&Q], (20.0, EnergyQuality::Measured));
    assert_eq!(out[&(2 * Q)], (0.0, EnergyQuality::Measured));
}

#[test]
fn a_gap_is_spread_by_time_and_estimated_never_a_spike() {
    // Silent for three hours (12 quarters), then the first quarter back carries 1,300 Wh.
    let prev = row(0, 100.0, 0);
    let back = row(13 * Q, 1_300.0, 0);
    let out = counter_energy(Some(prev), &[back]);
    assert_eq!(out.len(), 13, "the twelve silent quarters and the one back");
    let total: f64 = out.values().map(|(wh, _)| wh).sum();
    assert!(
        (total - 1_300.0).abs() < 1e-9,
        "nothing lost or made up: {total}"
    );
    for (b, (wh, quality)) in &out {
        assert_eq!(*quality, EnergyQuality::Estimated, "quarter {b}");
        assert!(*wh >= 0.0 && *wh <= 110.0, "no spike: {wh} in {b}");
    }
}

#[test]
fn a_reset_counts_from_zero_and_is_flagged() {
    let rows = [row(0, 50.0, 0), row(Q, 7.0, 1), row(2 * Q, 40.0, 1)];
    let out = counter_energy(None, &rows);
    assert_eq!(out[&Q], (7.0, EnergyQuality::Estimated));
    assert_eq!(out[&(2 * Q)], (40.0, EnergyQuality::Measured));
}

#[test]
fn the_ledger_balances_and_flags_what_a_meter_did_not_cover() {
    let series = |v: &[(i64, f64)]| -> BTreeMap<i64, (f64, EnergyQuality)> {
        v.iter()
            .map(|&(b, wh)| (b, (wh, EnergyQuality::Measured)))
            .collect()
    };
    let counters = vec![
        (Flow::Pv, series(&[(0, 500.0), (Q, 600.0)])),
        (Flow::Import, series(&[(0, 100.0), (Q, 0.0)])),
        (Flow::Export, series(&[(0, 50.0), (Q, 300.0)])),
        (Flow::Ev, series(&[(0, 200.0)])),
    ];
    let ledger = site_ledger(&counters, 0, 2 * Q);
    assert_eq!(ledger.len(), 2);
    assert_eq!(ledger[0].load_wh, 550.0);
    assert_eq!(ledger[0].quality, EnergyQuality::Measured);
    assert_eq!(ledger[0].building_wh(), 350.0);
    assert_eq!(ledger[1].load_wh, 300.0);
    assert_eq!(
        ledger[1].quality,
        EnergyQuality::Missing,
        "the charger said nothing"
    );
    assert!((ledger[0].solar_fraction() - 450.0 / 550.0).abs() < 1e-12);
}

#[test]
fn local_days_have_92_96_or_100_quarters() {
    for (date, n) in [
        (NaiveDate::from_ymd_opt(2026, 3, 29).unwrap(), 92),
        (NaiveDate::from_ymd_opt(2026, 6, 1).unwrap(), 96),
        (NaiveDate::from_ymd_opt(2026, 10, 25).unwrap(), 100),
    ] {
        let from = crate::domain::epoch::ms(local_day_start(date, Rome));
        let to = local_day_start(date.succ_opt().unwrap(), Rome).timestamp_millis();
        assert_eq!(intervals(from, to, Interval::Quarter, Rome).len(), n);
        assert_eq!(intervals(from, to, Interval::Hour, Rome).len(), n / 4);
        assert_eq!(intervals(from, to, Interval::Day, Rome), vec![(from, to)]);
    }
}

#[test]
fn months_follow_the_local_calendar() {
    let from = local_day_start(NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(), Rome);
    let to = local_day_start(NaiveDate::from_ymd_opt(2027, 1, 1).unwrap(), Rome);
    let months = intervals(
        crate::domain::epoch::ms(from),
        crate::domain::epoch::ms(to),
        Interval::Month,
        Rome,
    );
    assert_eq!(months.len(), 12);
    let april = local_day_start(NaiveDate::from_ymd_opt(2026, 4, 1).unwrap(), Rome);
    assert_eq!(months[3].0, crate::domain::epoch::ms(april));
    assert!("2h".parse::<Interval>().is_err());
}

#[test]
fn sums_say_how_much_was_measured() {
    let mut s = Sums {
        expected: 2,
        ..Sums::default()
    };
    assert_eq!(s.quality(), EnergyQuality::Missing);
    let q = Quarter {
        bucket: 0,
        pv_wh: 1.0,
        import_wh: 1.0,
        export_wh: 0.0,
        ev_wh: 0.0,
        load_wh: 2.0,
        quality: EnergyQuality::Measured,
    };
    s.add(&q);
    assert_eq!(s.quality(), EnergyQuality::Estimated);
    s.add(&q);
    assert_eq!(s.quality(), EnergyQuality::Measured);
}

#[test]
fn the_factor_in_force_is_the_latest_valid_one() {
    let f = |version, value, valid_from_ms| EmissionFactor {
        version,
        value,
        source: "test".into(),
        valid_from_ms,
    };
    let factors = [f(1, 300.0, 0), f(2, 250.0, 1_000), f(3, 260.0, 1_000)];
    assert_eq!(factor_at(&factors, 999).map(|f| f.version), Some(1));
    assert_eq!(factor_at(&factors, 1_000).map(|f| f.version), Some(3));
    assert!(factor_at(&factors, -1).is_none());

    let mut k = Kpis::default();
    let q = Quarter {
        bucket: 2_000,
        pv_wh: 2_000.0,
        import_wh: 1_000.0,
        export_wh: 500.0,
        ev_wh: 500.0,
        load_wh: 2_500.0,
        quality: EnergyQuality::Measured,
    };
    k.add(&q, &factors);
    assert_eq!(k.co2_emitted_g(), Some(260.0));
    assert_eq!(k.co2_avoided_g(), Some(520.0));
    assert_eq!(k.factor_versions, vec![3]);
    assert_eq!(k.self_consumption(), Some(0.75));
    assert_eq!(k.self_sufficiency(), Some(0.6));
    assert_eq!(k.ev_solar_share(), Some(0.6));
    assert_eq!(k.peak_load_w, 10_000.0);
    k.add(&Quarter { bucket: -5, ..q }, &factors);
    assert_eq!(
        k.co2_emitted_g(),
        None,
        "energy before any factor: CO₂ unknown"
    );
}

#[test]
fn expected_yield_is_larger_in_the_south_and_in_summer() {
    let day = |m, d| {
        let from = local_day_start(NaiveDate::from_ymd_opt(2026, m, d).unwrap(), Rome);
        (
            crate::domain::epoch::ms(from),
            crate::domain::epoch::ms(from) + 86_400_000,
        )
    };
    let (f, t) = day(6, 21);
    let palermo = expected_yield_wh_per_kwp(38.1, 13.4, f, t);
    let bolzano = expected_yield_wh_per_kwp(46.5, 11.3, f, t);
    let (wf, wt) = day(12, 21);
    let winter = expected_yield_wh_per_kwp(38.1, 13.4, wf, wt);
    assert!(palermo > 3_000.0 && palermo < 8_000.0, "{palermo}");
    assert!(winter < palermo && winter > 0.0, "{winter}");
    assert!(bolzano > 0.0);
    let (_, _) = (palermo, bolzano);
}

#[test]
fn a_zone_quarter_is_shared_by_time_and_weight() {
    let stays = [
        Stay {
            start: 0,
            end: Q,
            weight: 1.0,
        },
        Stay {
            start: Q / 3,
            end: 2 * Q,
            weight: 2.0,
        },
    ];
    let a = quarter_share(&stays, 0, 0);
    let b = quarter_share(&stays, 1, 0);
    // First third: A alone; the rest: A one third, B two thirds.
    assert!((a - (1.0 / 3.0 + 2.0 / 3.0 / 3.0)).abs() < 1e-12, "{a}");
    assert!((b - 2.0 / 3.0 * 2.0 / 3.0).abs() < 1e-12, "{b}");
    assert!(
        (a + b - 1.0).abs() < 1e-12,
        "the whole quarter is attributed"
    );
    assert_eq!(quarter_share(&stays, 0, Q), 0.0);
    assert_eq!(quarter_share(&stays, 1, Q), 1.0);
}
