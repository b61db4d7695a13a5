//! Energy maths: the 15-minute ledger of a site from its meters' cumulative counters, intervals on
//! a site's wall clock, the key figures of a period, emission factors, and the share of a zone's
//! energy that falls to each booking. Pure: numbers in, numbers out.
//!
//! Counters arrive as 15-minute roll-ups (`domain::quarters`): the energy counted in a quarter
//! is the last reading in it minus the last reading before it. A meter that was silent for some
//! quarters reports the whole gap's energy in its first quarter back; the ledger spreads that
//! energy over the gap in proportion to time and marks those quarters `estimated`, so a gap is
//! never a spike. A quarter in which a counter starts a new `meter_epoch` counts from zero and is
//! `estimated` too (what was counted between the last old reading and the reset is unknown). A
//! quarter no meter has spoken for yet is `missing`. No value is ever negative.

use std::collections::BTreeMap;

use chrono::{Datelike, Timelike};
use chrono_tz::Tz;

use super::kinds::EnergyQuality;
use super::quarters::QUARTER_MS;

/// A `1d` or `1mo` report reaches back at most this far in one request.
pub const MAX_RANGE_DAYS: i64 = 3 * 366;
/// `15m` and `1h` intervals are served for ranges up to this many days.
pub const MAX_FINE_RANGE_DAYS: i64 = 366;
/// Mean share of clear-sky irradiation that reaches the panels in Italy over a year, used for a
/// plant's expected yield.
pub const TYPICAL_CLEARNESS: f64 = 0.7;
/// The emission factor's unit.
pub const FACTOR_UNIT: &str = "g_co2_per_kwh";

/// A counter's energy per quarter (bucket → Wh and quality).
pub type Series = BTreeMap<i64, (f64, EnergyQuality)>;

/// One quarter of one counter of one meter, as rolled up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CounterQuarter {
    pub bucket: i64,
    /// Energy counted in the quarter, Wh (never negative).
    pub delta: f64,
    /// Time of the last reading in the quarter, epoch ms.
    pub last_ts: i64,
    /// The `meter_epoch` of that reading.
    pub epoch: i64,
}

/// The energy of one counter per quarter, with its quality, for every quarter from the first
/// row to the last (gaps filled by spreading). `prev` is the counter's last quarter before
/// `rows` (if any), so a gap reaching back before the first row is spread as well; its own
/// quarter is not returned.
pub fn counter_energy(prev: Option<CounterQuarter>, rows: &[CounterQuarter]) -> Series {
    let mut out = BTreeMap::new();
    let mut last = prev;
    for r in rows {
        let delta = r.delta.max(0.0);
        match last {
            Some(p) if r.bucket > p.bucket + QUARTER_MS => {
                // The meter was silent from p's last reading to r's: spread by time.
                let from = p.last_ts.max(p.bucket + QUARTER_MS);
                let to = r.last_ts.max(from + 1);
                let mut given = 0.0;
                let mut q = p.bucket + QUARTER_MS;
                while q <= r.bucket {
                    let wh = if q == r.bucket {
                        delta - given
                    } else {
                        let overlap = (q + QUARTER_MS).min(to) - q.max(from);
                        delta * overlap.max(0) as f64 / (to - from) as f64
                    };
                    let wh = wh.max(0.0);
                    given += wh;
                    out.insert(q, (wh, EnergyQuality::Estimated));
                    q += QUARTER_MS;
                }
            }
            Some(p) if p.epoch != r.epoch => {
                out.insert(r.bucket, (delta, EnergyQuality::Estimated));
            }
            _ => {
                out.insert(r.bucket, (delta, EnergyQuality::Measured));
            }
        }
        last = Some(*r);
    }
    out
}

/// What a meter's counter stands for in a site's balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Flow {
    /// The PV plant's production (its meter's `e_exp_wh`).
    Pv,
    /// Energy from the grid (the grid meter's `e_imp_wh`).
    Import,
    /// Energy into the grid (the grid meter's `e_exp_wh`).
    Export,
    /// Energy into cars (a charger's `e_imp_wh`).
    Ev,
}

/// One line of a site's ledger.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quarter {
    pub bucket: i64,
    pub pv_wh: f64,
    pub import_wh: f64,
    pub export_wh: f64,
    pub ev_wh: f64,
    pub load_wh: f64,
    pub quality: EnergyQuality,
}

impl Quarter {
    /// Consumption of the building other than the cars, Wh.
    pub fn building_wh(&self) -> f64 {
        (self.load_wh - self.ev_wh).max(0.0)
    }

    /// PV energy used on site, Wh.
    pub fn self_consumed_wh(&self) -> f64 {
        (self.pv_wh - self.export_wh).clamp(0.0, self.load_wh.max(0.0))
    }

    /// The share of this quarter's consumption that came from the PV plant.
    pub fn solar_fraction(&self) -> f64 {
        if self.load_wh > 0.0 {
            self.self_consumed_wh() / self.load_wh
        } else {
            0.0
        }
    }
}

fn worse(a: EnergyQuality, b: EnergyQuality) -> EnergyQuality {
    let rank = |q: EnergyQuality| match q {
        EnergyQuality::Measured => 0,
        EnergyQuality::Estimated => 1,
        EnergyQuality::Missing => 2,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

/// The site's ledger for every quarter in `[from, to)` that at least one counter covers, from
/// each counter's energy per quarter (see [`counter_energy`]). A quarter one counter does not
/// cover is `missing` as a whole; consumption is import + PV − export, never below zero.
pub fn site_ledger(counters: &[(Flow, Series)], from: i64, to: i64) -> Vec<Quarter> {
    let mut buckets: BTreeMap<i64, Quarter> = BTreeMap::new();
    for (_, series) in counters {
        for &b in series.range(from..to).map(|(b, _)| b) {
            buckets.entry(b).or_insert(Quarter {
                bucket: b,
                pv_wh: 0.0,
                import_wh: 0.0,
                export_wh: 0.0,
                ev_wh: 0.0,
                load_wh: 0.0,
                quality: EnergyQuality::Measured,
            });
        }
    }
    for q in buckets.values_mut() {
        for (flow, series) in counters {
            let (wh, quality) = series
                .get(&q.bucket)
                .copied()
                .unwrap_or((0.0, EnergyQuality::Missing));
            q.quality = worse(q.quality, quality);
            match flow {
                Flow::Pv => q.pv_wh += wh,
                Flow::Import => q.import_wh += wh,
                Flow::Export => q.export_wh += wh,
                Flow::Ev => q.ev_wh += wh,
            }
        }
        q.load_wh = (q.import_wh + q.pv_wh - q.export_wh).max(0.0);
    }
    buckets.into_values().collect()
}

/// How long each line of a report is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Quarter,
    Hour,
    Day,
    Month,
    Year,
}

impl std::str::FromStr for Interval {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "15m" => Ok(Interval::Quarter),
            "1h" => Ok(Interval::Hour),
            "1d" => Ok(Interval::Day),
            "1mo" => Ok(Interval::Month),
            "1y" => Ok(Interval::Year),
            _ => Err("must be one of: 15m, 1h, 1d, 1mo, 1y".into()),
        }
    }
}

impl Interval {
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Quarter => "15m",
            Interval::Hour => "1h",
            Interval::Day => "1d",
            Interval::Month => "1mo",
            Interval::Year => "1y",
        }
    }

    /// Whether a local wall-clock time starts an interval of this length.
    fn starts_at(self, local: chrono::NaiveDateTime) -> bool {
        match self {
            Interval::Quarter => true,
            Interval::Hour => local.minute() == 0,
            Interval::Day => local.hour() == 0 && local.minute() == 0,
            Interval::Month => local.day() == 1 && local.hour() == 0 && local.minute() == 0,
            Interval::Year => local.ordinal() == 1 && local.hour() == 0 && local.minute() == 0,
        }
    }
}

/// The intervals covering `[from, to)` (both on quarter boundaries of `tz`), cut on the wall
/// clock of `tz`: a local day is 92, 96 or 100 quarters, an hour is four quarters (the repeated
/// hour of the autumn change is two intervals). The first and last may be partial when the
/// range does not start or end on a boundary.
pub fn intervals(from: i64, to: i64, interval: Interval, tz: Tz) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    let mut q = from;
    while q < to {
        let local = super::epoch::try_to_utc(q)
            .map(|t| t.with_timezone(&tz).naive_local())
            .unwrap_or_default();
        match out.last_mut() {
            Some(last) if !interval.starts_at(local) => last.1 = q + QUARTER_MS,
            _ => out.push((q, q + QUARTER_MS)),
        }
        q += QUARTER_MS;
    }
    out
}

/// Energy summed over quarters (of one site or many), with how many of those quarters were
/// measured, estimated or missing.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sums {
    pub pv_wh: f64,
    pub import_wh: f64,
    pub export_wh: f64,
    pub ev_wh: f64,
    pub load_wh: f64,
    pub measured: i64,
    pub estimated: i64,
    /// Quarters (site-quarters) expected in the interval; those neither measured nor estimated
    /// are missing.
    pub expected: i64,
}

impl Sums {
    pub fn add(&mut self, q: &Quarter) {
        self.pv_wh += q.pv_wh;
        self.import_wh += q.import_wh;
        self.export_wh += q.export_wh;
        self.ev_wh += q.ev_wh;
        self.load_wh += q.load_wh;
        match q.quality {
            EnergyQuality::Measured => self.measured += 1,
            EnergyQuality::Estimated => self.estimated += 1,
            EnergyQuality::Missing => {}
        }
    }

    pub fn merge(&mut self, other: &Sums) {
        self.pv_wh += other.pv_wh;
        self.import_wh += other.import_wh;
        self.export_wh += other.export_wh;
        self.ev_wh += other.ev_wh;
        self.load_wh += other.load_wh;
        self.measured += other.measured;
        self.estimated += other.estimated;
        self.expected += other.expected;
    }

    /// Measured when every expected quarter was measured, missing when none has a value,
    /// estimated otherwise.
    pub fn quality(&self) -> EnergyQuality {
        if self.expected > 0 && self.measured >= self.expected {
            EnergyQuality::Measured
        } else if self.measured + self.estimated == 0 {
            EnergyQuality::Missing
        } else {
            EnergyQuality::Estimated
        }
    }
}

/// A version of grid electricity's emission factor.
#[derive(Debug, Clone, PartialEq)]
pub struct EmissionFactor {
    pub version: i32,
    /// g CO₂ per kWh.
    pub value: f64,
    pub source: String,
    pub valid_from_ms: i64,
}

/// The factor in force at `ts`: the one with the latest `valid_from` not after it (the higher
/// version among equals).
pub fn factor_at(factors: &[EmissionFactor], ts: i64) -> Option<&EmissionFactor> {
    factors
        .iter()
        .filter(|f| f.valid_from_ms <= ts)
        .max_by_key(|f| (f.valid_from_ms, f.version))
}

/// Key figures of a period, from its quarters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Kpis {
    pub sums: Sums,
    pub self_consumed_wh: f64,
    pub ev_solar_wh: f64,
    /// Highest 15-minute mean consumption, W.
    pub peak_load_w: f64,
    /// Highest 15-minute mean grid import, W.
    pub peak_import_w: f64,
    emitted_g: f64,
    avoided_g: f64,
    /// Energy (import and PV) of quarters with no factor in force, Wh.
    without_factor_wh: f64,
    /// The versions of the emission factor used.
    pub factor_versions: Vec<i32>,
}

impl Kpis {
    /// Adds one quarter (of one site, or summed over many at the same time).
    pub fn add(&mut self, q: &Quarter, factors: &[EmissionFactor]) {
        self.sums.add(q);
        let used = q.self_consumed_wh();
        self.self_consumed_wh += used;
        if q.load_wh > 0.0 {
            self.ev_solar_wh += q.ev_wh * used / q.load_wh;
        }
        let hours = QUARTER_MS as f64 / 3_600_000.0;
        self.peak_load_w = self.peak_load_w.max(q.load_wh / hours);
        self.peak_import_w = self.peak_import_w.max(q.import_wh / hours);
        match factor_at(factors, q.bucket) {
            Some(f) => {
                self.emitted_g += q.import_wh / 1000.0 * f.value;
                self.avoided_g += q.pv_wh / 1000.0 * f.value;
                if !self.factor_versions.contains(&f.version) {
                    self.factor_versions.push(f.version);
                }
            }
            None => self.without_factor_wh += q.import_wh + q.pv_wh,
        }
    }

    /// g CO₂ of the grid import; `None` when some of it fell where no factor was in force.
    pub fn co2_emitted_g(&self) -> Option<f64> {
        (self.without_factor_wh == 0.0 && !self.factor_versions.is_empty())
            .then_some(self.emitted_g)
    }

    /// g CO₂ the PV production spared the grid, on the same terms.
    pub fn co2_avoided_g(&self) -> Option<f64> {
        self.co2_emitted_g().map(|_| self.avoided_g)
    }

    /// Share of the PV production used on site.
    pub fn self_consumption(&self) -> Option<f64> {
        (self.sums.pv_wh > 0.0).then(|| self.self_consumed_wh / self.sums.pv_wh)
    }

    /// Share of the consumption met by the PV plant.
    pub fn self_sufficiency(&self) -> Option<f64> {
        (self.sums.load_wh > 0.0).then(|| self.self_consumed_wh / self.sums.load_wh)
    }

    /// Share of the cars' energy that came from the PV plant.
    pub fn ev_solar_share(&self) -> Option<f64> {
        (self.sums.ev_wh > 0.0).then(|| self.ev_solar_wh / self.sums.ev_wh)
    }
}

/// A plant's expected AC production over `[from, to)` for each kWp at `latitude`: the clear-sky
/// model of `domain::solar` on a south-facing roof, times [`TYPICAL_CLEARNESS`], in Wh/kWp.
/// Integrated in half-hour steps at the step's middle.
pub fn expected_yield_wh_per_kwp(latitude: f64, longitude: f64, from: i64, to: i64) -> f64 {
    const STEP: i64 = 30 * 60 * 1000;
    let plant = super::solar::PvPlant::south_facing(1.0);
    let mut wh = 0.0;
    let mut t = from;
    while t < to {
        let end = (t + STEP).min(to);
        let mid = t + (end - t) / 2;
        if let Some(at) = super::epoch::try_to_utc(mid) {
            let w = plant.power_at(latitude, longitude, at, 1.0);
            wh += w * (end - t) as f64 / 3_600_000.0;
        }
        t = end;
    }
    wh * TYPICAL_CLEARNESS
}

/// A booking's stay in a zone, weighted by the part of the zone it takes (its capacity).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stay {
    pub start: i64,
    pub end: i64,
    pub weight: f64,
}

/// The share of the quarter starting at `bucket` that falls to `stays[index]`: the quarter is cut
/// at every stay's start and end; each piece's energy (in proportion to its length) is shared
/// among the stays present in it by weight. Pieces with nobody present fall to no one.
pub fn quarter_share(stays: &[Stay], index: usize, bucket: i64) -> f64 {
    let end = bucket + QUARTER_MS;
    let me = stays[index];
    if me.end <= bucket || me.start >= end || me.weight <= 0.0 {
        return 0.0;
    }
    let mut cuts: Vec<i64> = vec![bucket, end];
    for s in stays {
        for t in [s.start, s.end] {
            if t > bucket && t < end {
                cuts.push(t);
            }
        }
    }
    cuts.sort_unstable();
    cuts.dedup();
    let mut share = 0.0;
    for w in cuts.windows(2) {
        let (a, b) = (w[0], w[1]);
        if me.start >= b || me.end <= a {
            continue;
        }
        let total: f64 = stays
            .iter()
            .filter(|s| s.start < b && s.end > a)
            .map(|s| s.weight.max(0.0))
            .sum();
        if total > 0.0 {
            share += (b - a) as f64 / QUARTER_MS as f64 * me.weight / total;
        }
    }
    share
}

#[cfg(test)]
mod tests;
