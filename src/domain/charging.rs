//! Smart charging of the EV chargers at a site, decided afresh every control step (a minute).
//! Pure: the site's present power figures and the sessions' wishes in, a current limit per
//! charger out.
//!
//! The site buys at most its contracted power from the grid. The chargers may therefore use
//! `limit + pv − building` watts (the headroom) and never more; the PV production the building
//! does not consume (the surplus) is the part of the headroom that costs no grid energy. Limits
//! follow IEC 61851: a charger is either paused (0 A) or offered between 6 A and its maximum.
//!
//! Each step, in order: sessions whose target is reached get nothing; `fast` sessions take what
//! they can, earliest departure first, from the grid before the sun; `solar_first` sessions with
//! a target then get the least power that still lets them finish by departure (least laxity,
//! see [`PLAN_SHARE`]), earliest departure first, from the sun before the grid; the surplus left
//! goes first to `solar_only` sessions (they have no other source), then to `solar_first` ones,
//! shared evenly within each group. Grid headroom left over stays unused.

use serde::{Deserialize, Serialize};

use super::kinds::ChargeMode;
use super::solar::PvPlant;

/// Voltage between each phase and neutral, V.
pub const VOLTS: f64 = 230.0;
/// Lowest current a charger may be offered without pausing (IEC 61851), A.
pub const MIN_CURRENT_A: f64 = 6.0;
/// Granularity of current limits, A: every limit is a multiple of it.
pub const CURRENT_STEP_A: f64 = 0.1;
/// Control period that [`allocate`] assumes between two calls, ms.
pub const STEP_MS: i64 = 60_000;
/// Share of its charger's maximum power at which a `solar_first` session plans to finish.
///
/// A session is given grid power only once its remaining energy exceeds what it could still
/// receive after the present step at this share of its maximum power. Planning on half rather
/// than all of it keeps a reserve for the other sessions and for the PV fading towards evening,
/// at the price of starting on the grid somewhat earlier.
pub const PLAN_SHARE: f64 = 0.5;
/// Planning assumption for a building's own consumption while open, W per m² of floor.
pub const BUILDING_OPEN_W_M2: f64 = 12.0;
/// Planning assumption for a building's own consumption while closed, W per m² of floor.
pub const BUILDING_CLOSED_W_M2: f64 = 3.0;
/// Share of the clear-sky PV power assumed when planning without a weather forecast.
pub const PV_PLANNING_DERATE: f64 = 0.6;

const MS_PER_HOUR: f64 = 3_600_000.0;
/// Energy below which a target counts as reached, Wh.
const DONE_WH: f64 = 1e-6;

/// An AC charging point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Charger {
    /// Phases in use, 1 or 3; 0 is read as 1.
    pub phases: u8,
    /// Highest current per phase the charger (and its cable) accepts, A.
    pub max_a: f64,
}

impl Charger {
    /// A three-phase 32 A charger: 22 kW.
    pub fn ac22() -> Self {
        Charger {
            phases: 3,
            max_a: 32.0,
        }
    }

    /// Power drawn at `amps` per phase, W.
    pub fn watts(&self, amps: f64) -> f64 {
        amps * VOLTS * f64::from(self.phases.max(1))
    }

    /// Current per phase that draws `watts`, A.
    pub fn amps(&self, watts: f64) -> f64 {
        watts / (VOLTS * f64::from(self.phases.max(1)))
    }

    /// Power at the highest current, W.
    pub fn max_w(&self) -> f64 {
        self.watts(self.max_a)
    }

    /// Power at the lowest current, W.
    pub fn min_w(&self) -> f64 {
        self.watts(MIN_CURRENT_A)
    }

    /// The highest current, a multiple of [`CURRENT_STEP_A`] and at most `max_a`, whose power is
    /// at most `watts`; 0 when that is below [`MIN_CURRENT_A`].
    fn floor_amps(&self, watts: f64) -> f64 {
        let top = (self.max_a / CURRENT_STEP_A + 1e-9).floor();
        let mut steps = (self.amps(watts.max(0.0)) / CURRENT_STEP_A)
            .round()
            .min(top);
        while steps > 0.0 && self.watts(steps * CURRENT_STEP_A) > watts {
            steps -= 1.0;
        }
        let amps = steps * CURRENT_STEP_A;
        if amps + 1e-9 < MIN_CURRENT_A {
            0.0
        } else {
            amps.max(MIN_CURRENT_A)
        }
    }

    /// The lowest current, a multiple of [`CURRENT_STEP_A`], whose power is at least `watts`,
    /// raised to [`MIN_CURRENT_A`] and capped at `max_a` (rounded down to the granularity).
    fn ceil_amps(&self, watts: f64) -> f64 {
        let top = (self.max_a / CURRENT_STEP_A + 1e-9).floor() * CURRENT_STEP_A;
        let amps = (self.amps(watts) / CURRENT_STEP_A - 1e-9).ceil() * CURRENT_STEP_A;
        amps.max(MIN_CURRENT_A).min(top)
    }
}

/// A site's power figures at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SiteNow {
    /// Contracted grid power: the grid import must never exceed it, W.
    pub limit_w: f64,
    /// Site consumption apart from EV charging, W (≥ 0).
    pub building_w: f64,
    /// PV production, W (≥ 0).
    pub pv_w: f64,
}

impl SiteNow {
    /// Power the chargers may draw together without the import exceeding the limit, W (≥ 0).
    pub fn headroom_w(&self) -> f64 {
        (self.limit_w + self.pv_w.max(0.0) - self.building_w.max(0.0)).max(0.0)
    }

    /// PV production the building does not consume, W (≥ 0).
    pub fn surplus_w(&self) -> f64 {
        (self.pv_w.max(0.0) - self.building_w.max(0.0)).max(0.0)
    }
}

/// What one charging session asks for at the present step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Demand {
    pub charger: Charger,
    pub mode: ChargeMode,
    /// Energy still wanted, Wh; `None` when there is no target and the session takes what its
    /// mode allows.
    pub remaining_wh: Option<f64>,
    /// When the car leaves, ms since the epoch.
    pub departure_ms: i64,
}

/// Current limits (A per phase, in the order of `demands`) for the step starting at `now_ms`,
/// assuming the next decision comes [`STEP_MS`] later. See the module documentation for the
/// policy. Every limit is 0 or within `[MIN_CURRENT_A, max_a]`, the chargers together never draw
/// more than the site's headroom, and `solar_only` sessions together never more than its surplus.
pub fn allocate(site: &SiteNow, now_ms: i64, demands: &[Demand]) -> Vec<f64> {
    allocate_every(site, now_ms, STEP_MS, demands)
}

/// [`allocate`] for a control period of `step_ms`.
pub fn allocate_every(site: &SiteNow, now_ms: i64, step_ms: i64, demands: &[Demand]) -> Vec<f64> {
    let step_ms = step_ms.max(1);
    let headroom = site.headroom_w();
    let mut sun = site.surplus_w().min(headroom);
    let mut grid = headroom - sun;
    let mut amps = vec![0.0; demands.len()];
    let caps: Vec<f64> = demands.iter().map(|d| cap_w(d, now_ms, step_ms)).collect();
    let live = |i: &usize| {
        let d = &demands[*i];
        d.remaining_wh.is_none_or(|r| r > DONE_WH) && d.charger.max_a >= MIN_CURRENT_A
    };
    let by_departure = |keep: &dyn Fn(&Demand) -> bool| {
        let mut ids: Vec<usize> = (0..demands.len())
            .filter(|i| live(i) && keep(&demands[*i]))
            .collect();
        ids.sort_by_key(|&i| (demands[i].departure_ms, i));
        ids
    };

    for i in by_departure(&|d| d.mode == ChargeMode::Fast) {
        let ch = demands[i].charger;
        amps[i] = grant(&ch, caps[i], grid + sun);
        let w = ch.watts(amps[i]);
        let from_grid = w.min(grid);
        grid -= from_grid;
        sun = (sun - (w - from_grid)).max(0.0);
    }

    let solar_first = by_departure(&|d| d.mode == ChargeMode::SolarFirst);
    for &i in &solar_first {
        let need = need_w(&demands[i], now_ms, step_ms);
        if need <= 0.0 {
            continue;
        }
        let ch = demands[i].charger;
        amps[i] = grant(&ch, need, grid + sun);
        let w = ch.watts(amps[i]);
        let from_sun = w.min(sun);
        sun -= from_sun;
        grid = (grid - (w - from_sun)).max(0.0);
    }

    let solar_only = by_departure(&|d| d.mode == ChargeMode::SolarOnly);
    share(&mut sun, &solar_only, demands, &caps, &mut amps);
    share(&mut sun, &solar_first, demands, &caps, &mut amps);
    amps
}

/// The most power a session can use in the step: its charger's maximum, or less when that would
/// overshoot its target within the step (but not below the minimum current's power), W.
fn cap_w(d: &Demand, now_ms: i64, step_ms: i64) -> f64 {
    let max = d.charger.max_w();
    match d.remaining_wh {
        None => max,
        Some(r) => {
            let window_ms = (d.departure_ms - now_ms).clamp(1, step_ms);
            let finish = r / (window_ms as f64 / MS_PER_HOUR);
            finish.max(d.charger.min_w()).min(max)
        }
    }
}

/// Power a `solar_first` session needs in the present step so that its remaining energy can
/// still be delivered after it at [`PLAN_SHARE`] of its maximum power, W; its maximum once the
/// departure has passed; 0 without a target.
fn need_w(d: &Demand, now_ms: i64, step_ms: i64) -> f64 {
    let Some(remaining) = d.remaining_wh else {
        return 0.0;
    };
    let left_ms = d.departure_ms - now_ms;
    if left_ms <= 0 {
        return d.charger.max_w();
    }
    let window_ms = left_ms.min(step_ms);
    let after_h = (left_ms - window_ms) as f64 / MS_PER_HOUR;
    let excess = remaining - PLAN_SHARE * d.charger.max_w() * after_h;
    if excess <= 0.0 {
        0.0
    } else {
        excess / (window_ms as f64 / MS_PER_HOUR)
    }
}

/// The current to offer for `want_w` (rounded up) when at most `avail_w` is free (rounded down):
/// 0 when not even the minimum current fits.
fn grant(ch: &Charger, want_w: f64, avail_w: f64) -> f64 {
    let room = ch.floor_amps(avail_w);
    if room < MIN_CURRENT_A {
        0.0
    } else {
        ch.ceil_amps(want_w).min(room)
    }
}

/// Shares `pool` (W) evenly among the sessions `ids` (earliest departure first) on top of what
/// they already have, each up to its cap. When the pool cannot give every session without power
/// its minimum, the latest-departing of those is left out, until the rest fit.
fn share(pool: &mut f64, ids: &[usize], demands: &[Demand], caps: &[f64], amps: &mut [f64]) {
    let mut active = ids.to_vec();
    while !active.is_empty() {
        let has: Vec<f64> = active
            .iter()
            .map(|&i| demands[i].charger.watts(amps[i]))
            .collect();
        let tops: Vec<f64> = active
            .iter()
            .zip(&has)
            .map(|(&i, &h)| caps[i].max(h))
            .collect();
        let level = fill_level(*pool + has.iter().sum::<f64>(), &has, &tops);
        let starved = active
            .iter()
            .zip(&tops)
            .rposition(|(&i, &top)| amps[i] == 0.0 && level.min(top) < demands[i].charger.min_w());
        if let Some(pos) = starved {
            active.remove(pos);
            continue;
        }
        for (k, &i) in active.iter().enumerate() {
            let ch = demands[i].charger;
            let got = ch.floor_amps(level.clamp(has[k], tops[k])).max(amps[i]);
            *pool = (*pool - (ch.watts(got) - has[k])).max(0.0);
            amps[i] = got;
        }
        return;
    }
}

/// The power level `L` at which sessions holding `has[k]` and taking up to `tops[k]` use
/// `budget` (W) together when each gets `clamp(L, has[k], tops[k])`; never above it.
fn fill_level(budget: f64, has: &[f64], tops: &[f64]) -> f64 {
    let used = |level: f64| -> f64 { has.iter().zip(tops).map(|(&h, &t)| level.clamp(h, t)).sum() };
    let (mut lo, mut hi) = (0.0, tops.iter().cloned().fold(0.0, f64::max));
    if used(hi) <= budget {
        return hi;
    }
    for _ in 0..80 {
        let mid = (lo + hi) / 2.0;
        if used(mid) <= budget {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// A charging session as booked.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub arrival_ms: i64,
    pub departure_ms: i64,
    /// Energy wanted, Wh; `None` for no target.
    pub target_wh: Option<f64>,
    pub mode: ChargeMode,
    pub charger: Charger,
}

/// What one session received in a simulation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Outcome {
    /// Energy delivered, Wh; never above the target.
    pub delivered_wh: f64,
    /// The part of it that came from the PV surplus, Wh.
    pub solar_wh: f64,
    /// Whether the target was reached by departure (true when there is no target).
    pub met: bool,
    /// When the target was reached, ms since the epoch.
    pub finished_ms: Option<i64>,
}

/// The result of a simulation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trace {
    /// One per plan, in the same order.
    pub outcomes: Vec<Outcome>,
    /// Highest grid import in any step (negative when the site exported throughout), W.
    pub peak_grid_w: f64,
    /// Energy delivered to all sessions, Wh.
    pub ev_wh: f64,
    /// The part of it that came from the PV surplus, Wh.
    pub solar_wh: f64,
}

/// Runs [`allocate_every`] every `step_ms` from `from_ms` up to `to_ms` for the sessions present
/// (`arrival_ms ≤ t < departure_ms`), with `forecast(t)` giving `(pv_w, building_w)` for the step
/// starting at `t`. A session charges at its limit for the step (or until it leaves), stopping
/// once its target is reached. The surplus of a step is attributed first to the `solar_only`
/// sessions, which allocation keeps within it, and the rest to the others in proportion to
/// their energy, at most all of it.
pub fn simulate(
    plans: &[Plan],
    limit_w: f64,
    step_ms: i64,
    from_ms: i64,
    to_ms: i64,
    forecast: impl Fn(i64) -> (f64, f64),
) -> Trace {
    let step_ms = step_ms.max(1);
    let mut delivered = vec![0.0; plans.len()];
    let mut solar = vec![0.0; plans.len()];
    let mut finished: Vec<Option<i64>> = vec![None; plans.len()];
    let mut peak = f64::NEG_INFINITY;
    let mut t = from_ms;
    while t < to_ms {
        let dt_ms = step_ms.min(to_ms - t);
        let (pv_w, building_w) = forecast(t);
        let site = SiteNow {
            limit_w,
            building_w,
            pv_w,
        };
        let present: Vec<usize> = (0..plans.len())
            .filter(|&i| plans[i].arrival_ms <= t && t < plans[i].departure_ms)
            .collect();
        let demands: Vec<Demand> = present
            .iter()
            .map(|&i| Demand {
                charger: plans[i].charger,
                mode: plans[i].mode,
                remaining_wh: plans[i].target_wh.map(|w| (w - delivered[i]).max(0.0)),
                departure_ms: plans[i].departure_ms,
            })
            .collect();
        let amps = allocate_every(&site, t, step_ms, &demands);
        let mut drawn_w = 0.0;
        let mut energy = vec![0.0; present.len()];
        for (k, &i) in present.iter().enumerate() {
            let w = plans[i].charger.watts(amps[k]);
            let dur_ms = dt_ms.min(plans[i].departure_ms - t);
            let mut e = w * dur_ms as f64 / MS_PER_HOUR;
            if let Some(r) = demands[k].remaining_wh {
                if e >= r && e > 0.0 {
                    finished[i] = Some(t + (dur_ms as f64 * r / e).round() as i64);
                }
                e = e.min(r);
            }
            if e > 0.0 {
                drawn_w += w;
            }
            energy[k] = e;
        }
        peak = peak.max(site.building_w + drawn_w - site.pv_w);

        let mut sun_wh = site.surplus_w() * dt_ms as f64 / MS_PER_HOUR;
        let mut others_wh = 0.0;
        for (k, &i) in present.iter().enumerate() {
            if plans[i].mode == ChargeMode::SolarOnly {
                let s = energy[k].min(sun_wh);
                solar[i] += s;
                sun_wh -= s;
            } else {
                others_wh += energy[k];
            }
        }
        let ratio = if others_wh > 0.0 {
            (sun_wh / others_wh).min(1.0)
        } else {
            0.0
        };
        for (k, &i) in present.iter().enumerate() {
            if plans[i].mode != ChargeMode::SolarOnly {
                solar[i] += energy[k] * ratio;
            }
            delivered[i] += energy[k];
        }
        t += dt_ms;
    }

    let outcomes: Vec<Outcome> = plans
        .iter()
        .enumerate()
        .map(|(i, p)| Outcome {
            delivered_wh: delivered[i],
            solar_wh: solar[i],
            met: p.target_wh.is_none_or(|w| delivered[i] >= w - DONE_WH),
            finished_ms: finished[i],
        })
        .collect();
    Trace {
        outcomes,
        peak_grid_w: if peak.is_finite() { peak } else { 0.0 },
        ev_wh: delivered.iter().sum(),
        solar_wh: solar.iter().sum(),
    }
}

/// Planning figure for a building's own consumption: [`BUILDING_OPEN_W_M2`] or
/// [`BUILDING_CLOSED_W_M2`] per m² of floor, W.
pub fn expected_building_w(area_m2: f64, open: bool) -> f64 {
    let per_m2 = if open {
        BUILDING_OPEN_W_M2
    } else {
        BUILDING_CLOSED_W_M2
    };
    area_m2.max(0.0) * per_m2
}

/// Planning figure for the PV production of a south-facing plant of `kwp` at an instant: its
/// clear-sky power times [`PV_PLANNING_DERATE`], W.
pub fn expected_pv_w(kwp: f64, latitude: f64, longitude: f64, at_ms: i64) -> f64 {
    match super::epoch::try_to_utc(at_ms) {
        Some(at) => {
            PvPlant::south_facing(kwp).power_at(latitude, longitude, at, 1.0) * PV_PLANNING_DERATE
        }
        None => 0.0,
    }
}

#[cfg(test)]
mod tests;
