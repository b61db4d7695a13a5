use super::*;

const H: i64 = 3_600_000;
const M: i64 = 60_000;
/// Midnight UTC of an arbitrary day; the scenario uses hours after it.
const DAY: i64 = 1_790_000_000_000 - 1_790_000_000_000 % (24 * H);
const EPS: f64 = 1e-6;

fn at(hours: f64) -> i64 {
    DAY + (hours * H as f64).round() as i64
}

fn demand(mode: ChargeMode, remaining_wh: Option<f64>, departure_ms: i64) -> Demand {
    Demand {
        charger: Charger::ac22(),
        mode,
        remaining_wh,
        departure_ms,
    }
}

fn total_w(demands: &[Demand], amps: &[f64], keep: impl Fn(&Demand) -> bool) -> f64 {
    demands
        .iter()
        .zip(amps)
        .filter(|(d, _)| keep(d))
        .map(|(d, &a)| d.charger.watts(a))
        .sum()
}

/// Checks the invariants every allocation must hold.
fn check(site: &SiteNow, demands: &[Demand], amps: &[f64]) {
    assert_eq!(amps.len(), demands.len());
    for (d, &a) in demands.iter().zip(amps) {
        assert!(
            a == 0.0 || (MIN_CURRENT_A..=d.charger.max_a).contains(&a),
            "{a} A for {d:?}"
        );
        let steps = a / CURRENT_STEP_A;
        assert!(
            (steps - steps.round()).abs() < 1e-6,
            "{a} A is off the grid"
        );
        if d.remaining_wh.is_some_and(|r| r <= 0.0) {
            assert_eq!(a, 0.0, "a finished session charges: {d:?}");
        }
    }
    let all = total_w(demands, amps, |_| true);
    assert!(all <= site.headroom_w() + EPS, "{all} W over {site:?}");
    let sun_only = total_w(demands, amps, |d| d.mode == ChargeMode::SolarOnly);
    assert!(
        sun_only <= site.surplus_w() + EPS,
        "{sun_only} W over {site:?}"
    );
}

/// A small deterministic generator (64-bit LCG) for the sweep.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[test]
fn charger_converts_between_amps_and_watts() {
    let c = Charger::ac22();
    assert_eq!((c.phases, c.max_a), (3, 32.0));
    assert!((c.watts(32.0) - 22_080.0).abs() < EPS);
    assert!((c.amps(6_900.0) - 10.0).abs() < EPS);
    let mono = Charger {
        phases: 1,
        max_a: 16.0,
    };
    assert!((mono.watts(16.0) - 3_680.0).abs() < EPS);
    assert!((mono.min_w() - 1_380.0).abs() < EPS);
}

#[test]
fn sweep_respects_headroom_minimum_current_and_surplus() {
    let modes = [
        ChargeMode::Fast,
        ChargeMode::SolarFirst,
        ChargeMode::SolarOnly,
    ];
    let mut rng = Lcg(7);
    let now = at(10.0);
    for _ in 0..3_000 {
        let site = SiteNow {
            limit_w: 40_000.0 * rng.next() - 2_000.0,
            building_w: 20_000.0 * rng.next(),
            pv_w: 30_000.0 * rng.next(),
        };
        let n = (rng.next() * 7.0) as usize;
        let demands: Vec<Demand> = (0..n)
            .map(|_| Demand {
                charger: Charger {
                    phases: if rng.next() < 0.3 { 1 } else { 3 },
                    max_a: 4.0 + 30.0 * rng.next(),
                },
                mode: modes[(rng.next() * 3.0) as usize],
                remaining_wh: match (rng.next() * 4.0) as u32 {
                    0 => None,
                    1 => Some(-10.0 * rng.next()),
                    _ => Some(60_000.0 * rng.next()),
                },
                departure_ms: now + ((rng.next() * 10.0 - 1.0) * H as f64) as i64,
            })
            .collect();
        check(&site, &demands, &allocate(&site, now, &demands));
    }
}

#[test]
fn fast_goes_first_by_departure_and_solar_first_waits_for_sun() {
    // 9 kW of headroom, no sun: room for one fast session at full power, not two.
    let site = SiteNow {
        limit_w: 15_000.0,
        building_w: 6_000.0,
        pv_w: 0.0,
    };
    let now = at(9.0);
    let demands = [
        demand(ChargeMode::Fast, None, at(12.0)),
        demand(ChargeMode::Fast, Some(50_000.0), at(11.0)),
        demand(ChargeMode::SolarFirst, Some(10_000.0), at(17.0)),
        demand(ChargeMode::SolarOnly, None, at(17.0)),
    ];
    let amps = allocate(&site, now, &demands);
    check(&site, &demands, &amps);
    assert_eq!(
        amps[1], 13.0,
        "the earlier departure gets 9 kW rounded down"
    );
    assert_eq!(amps[0], 0.0, "the 0.03 kW left cannot give 6 A");
    assert_eq!(amps[2], 0.0, "plenty of time: waits for sun");
    assert_eq!(amps[3], 0.0);
}

#[test]
fn solar_first_draws_from_the_grid_only_when_it_must() {
    let site = SiteNow {
        limit_w: 30_000.0,
        building_w: 2_000.0,
        pv_w: 0.0,
    };
    // 11 kWh at half of 22.08 kW takes just under an hour.
    let leaving = at(12.0);
    let wants = |now| {
        allocate(
            &site,
            now,
            &[demand(ChargeMode::SolarFirst, Some(11_000.0), leaving)],
        )[0]
    };
    assert_eq!(wants(at(10.0)), 0.0);
    assert_eq!(wants(leaving - 61 * M), 0.0);
    assert!(wants(leaving - 59 * M) >= 16.0);
    assert_eq!(
        wants(leaving + M),
        32.0,
        "past departure it needs everything"
    );
    // Without a target it never touches the grid.
    assert_eq!(
        allocate(
            &site,
            at(11.9),
            &[demand(ChargeMode::SolarFirst, None, leaving)]
        )[0],
        0.0
    );
}

#[test]
fn surplus_goes_to_solar_only_first_then_is_shared_evenly() {
    let site = SiteNow {
        limit_w: 15_000.0,
        building_w: 2_000.0,
        pv_w: 12_000.0,
    };
    let now = at(12.0);
    let demands = [
        demand(ChargeMode::SolarOnly, None, at(16.0)),
        demand(ChargeMode::SolarOnly, Some(30_000.0), at(15.0)),
        demand(ChargeMode::SolarFirst, None, at(17.0)),
    ];
    let amps = allocate(&site, now, &demands);
    check(&site, &demands, &amps);
    // 10 kW of surplus: 5 kW each is 7.2 A; the solar_first session gets nothing left.
    assert_eq!(&amps, &[7.2, 7.2, 0.0]);

    // Only 5 kW: one 6 A session fits, and the earlier departure keeps it.
    let dim = SiteNow {
        pv_w: 7_000.0,
        ..site
    };
    let amps = allocate(&dim, now, &demands);
    check(&dim, &demands, &amps);
    assert_eq!(&amps, &[0.0, 7.2, 0.0]);
}

#[test]
fn finished_sessions_get_nothing() {
    let site = SiteNow {
        limit_w: 50_000.0,
        building_w: 0.0,
        pv_w: 20_000.0,
    };
    let demands = [
        demand(ChargeMode::Fast, Some(0.0), at(12.0)),
        demand(ChargeMode::SolarOnly, Some(-5.0), at(12.0)),
        demand(ChargeMode::SolarFirst, Some(0.0), at(12.0)),
    ];
    assert_eq!(allocate(&site, at(10.0), &demands), vec![0.0; 3]);
}

/// The scenario site: limit 15 kW; building 6 kW from 08:00 to 18:00, 2 kW otherwise; PV a
/// sine bell from 07:00 to 19:00 peaking at 12 kW at 13:00.
fn scenario_forecast(t: i64) -> (f64, f64) {
    let hours = (t - DAY) as f64 / H as f64;
    let pv = if (7.0..=19.0).contains(&hours) {
        12_000.0 * (std::f64::consts::PI * (hours - 7.0) / 12.0).sin()
    } else {
        0.0
    };
    let building = if (8.0..18.0).contains(&hours) {
        6_000.0
    } else {
        2_000.0
    };
    (pv, building)
}

fn plan(mode: ChargeMode, from: f64, to: f64, target_kwh: f64) -> Plan {
    Plan {
        arrival_ms: at(from),
        departure_ms: at(to),
        target_wh: Some(target_kwh * 1000.0),
        mode,
        charger: Charger::ac22(),
    }
}

#[test]
fn scenario_day_meets_targets_within_the_limit() {
    let plans = [
        plan(ChargeMode::SolarFirst, 8.0, 17.0, 30.0),
        plan(ChargeMode::Fast, 9.0, 11.0, 20.0),
        plan(ChargeMode::SolarOnly, 10.0, 16.0, 15.0),
    ];
    let trace = simulate(&plans, 15_000.0, M, at(0.0), at(24.0), scenario_forecast);
    for (p, o) in plans.iter().zip(&trace.outcomes) {
        assert!(o.met, "{p:?} -> {o:?}");
        assert!((o.delivered_wh - p.target_wh.unwrap()).abs() < EPS);
        let done = o.finished_ms.expect("a met target has a finishing time");
        assert!(p.arrival_ms < done && done <= p.departure_ms, "{o:?}");
    }
    assert!(trace.peak_grid_w <= 15_000.0 + EPS, "{}", trace.peak_grid_w);
    let (a, c) = (&trace.outcomes[0], &trace.outcomes[2]);
    assert!(a.solar_wh > 0.0 && a.solar_wh < a.delivered_wh, "{a:?}");
    assert!((c.solar_wh - c.delivered_wh).abs() < EPS, "{c:?}");
    let sum: f64 = trace.outcomes.iter().map(|o| o.solar_wh).sum();
    assert!((trace.solar_wh - sum).abs() < EPS);
    assert!((trace.ev_wh - 65_000.0).abs() < EPS);

    // The same day step by step: every allocation within the headroom.
    let mut delivered = [0.0; 3];
    let mut t = at(0.0);
    while t < at(24.0) {
        let (pv_w, building_w) = scenario_forecast(t);
        let site = SiteNow {
            limit_w: 15_000.0,
            building_w,
            pv_w,
        };
        let present: Vec<usize> = (0..3)
            .filter(|&i| plans[i].arrival_ms <= t && t < plans[i].departure_ms)
            .collect();
        let demands: Vec<Demand> = present
            .iter()
            .map(|&i| Demand {
                charger: plans[i].charger,
                mode: plans[i].mode,
                remaining_wh: plans[i].target_wh.map(|w| w - delivered[i]),
                departure_ms: plans[i].departure_ms,
            })
            .collect();
        let amps = allocate(&site, t, &demands);
        check(&site, &demands, &amps);
        let ev: f64 = total_w(&demands, &amps, |_| true);
        assert!(building_w + ev - pv_w <= 15_000.0 + EPS);
        for (k, &i) in present.iter().enumerate() {
            let r = demands[k].remaining_wh.unwrap();
            delivered[i] += (plans[i].charger.watts(amps[k]) / 60.0).min(r);
        }
        t += M;
    }
    assert!((delivered[0] - 30_000.0).abs() < EPS);
}

#[test]
fn infeasible_target_is_missed_without_breaking_the_limit() {
    let plans = [plan(ChargeMode::SolarFirst, 9.0, 10.0, 40.0)];
    let trace = simulate(&plans, 15_000.0, M, at(8.0), at(11.0), scenario_forecast);
    let d = &trace.outcomes[0];
    assert!(!d.met);
    assert!(d.delivered_wh < 40_000.0);
    assert!(
        d.delivered_wh > 14_000.0,
        "it still gets all the headroom: {d:?}"
    );
    assert_eq!(d.finished_ms, None);
    assert!(trace.peak_grid_w <= 15_000.0 + EPS);
}

#[test]
fn solar_only_without_sun_gets_nothing() {
    let plans = [
        plan(ChargeMode::SolarOnly, 20.0, 23.0, 10.0),
        Plan {
            target_wh: None,
            ..plan(ChargeMode::SolarOnly, 0.0, 6.0, 0.0)
        },
    ];
    let trace = simulate(&plans, 15_000.0, M, at(0.0), at(24.0), scenario_forecast);
    for o in &trace.outcomes {
        assert_eq!((o.delivered_wh, o.solar_wh), (0.0, 0.0));
    }
    assert!(!trace.outcomes[0].met);
    assert!(trace.outcomes[1].met, "no target is always met");
    assert_eq!(trace.ev_wh, 0.0);
}

#[test]
fn planning_figures() {
    assert_eq!(expected_building_w(500.0, true), 6_000.0);
    assert_eq!(expected_building_w(500.0, false), 1_500.0);
    assert_eq!(expected_building_w(-1.0, true), 0.0);
    // Bologna, 21 June 2026: noon (10:00 UTC is close to solar noon) and midnight.
    let noon = 1_782_036_000_000;
    let pv = expected_pv_w(20.0, 44.49, 11.34, noon);
    assert!(
        pv > 0.3 * 20_000.0 && pv <= PV_PLANNING_DERATE * 20_000.0,
        "{pv}"
    );
    assert_eq!(expected_pv_w(20.0, 44.49, 11.34, noon + 12 * H), 0.0);
}
