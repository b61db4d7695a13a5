//! The energy ledger: a site's 15-minute lines computed from its meters' roll-ups, their sums per
//! region, emission factors, and EV bookings' charging plans.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::{
    devices, emission_factors, energy_15m, energy_region_15m, ev_plans, readings_15m, sites,
};
use super::telemetry::RollupRow;
use super::{write_transaction, DbConnection, DbResult};
use crate::domain::energy::{
    counter_energy, site_ledger, CounterQuarter, EmissionFactor, Flow, Quarter, Series,
};
use crate::domain::quarters::QUARTER_MS;
use crate::domain::telemetry::Metric;
use crate::domain::{DeviceClass, EnergyQuality};

/// How far a recomputation reaches beyond the quarters asked for, to find the readings on
/// either side of a gap.
pub const GAP_REACH_MS: i64 = 31 * 86_400_000;

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = energy_15m)]
pub struct EnergyRow {
    pub site_id: String,
    pub bucket: i64,
    pub pv_wh: f64,
    pub import_wh: f64,
    pub export_wh: f64,
    pub ev_wh: f64,
    pub load_wh: f64,
    pub quality: i16,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = energy_region_15m)]
pub struct RegionRow {
    pub region: String,
    pub bucket: i64,
    pub pv_wh: f64,
    pub import_wh: f64,
    pub export_wh: f64,
    pub ev_wh: f64,
    pub load_wh: f64,
    pub sites: i32,
    pub measured: i32,
    pub estimated: i32,
}

pub fn quality_code(q: EnergyQuality) -> i16 {
    match q {
        EnergyQuality::Measured => 0,
        EnergyQuality::Estimated => 1,
        EnergyQuality::Missing => 2,
    }
}

pub fn quality_of(code: i16) -> EnergyQuality {
    match code {
        0 => EnergyQuality::Measured,
        1 => EnergyQuality::Estimated,
        _ => EnergyQuality::Missing,
    }
}

impl EnergyRow {
    pub fn quarter(&self) -> Quarter {
        Quarter {
            bucket: self.bucket,
            pv_wh: self.pv_wh,
            import_wh: self.import_wh,
            export_wh: self.export_wh,
            ev_wh: self.ev_wh,
            load_wh: self.load_wh,
            quality: quality_of(self.quality),
        }
    }
}

/// The counters that make a site's balance: the PV meter's production, the main grid meter's
/// import and export (a grid meter in a zone is that zone's sub-meter, not the site's), and
/// every charger's import.
pub fn site_counters(conn: &mut DbConnection, site_id: &str) -> DbResult<Vec<(i32, Metric, Flow)>> {
    let rows: Vec<(i32, String, Option<String>)> = on_backend!(conn, |c| devices::table
        .filter(devices::site_id.eq(site_id))
        .select((devices::num, devices::class, devices::zone_id))
        .order(devices::num)
        .load(c)?);
    let mut out = Vec::new();
    for (num, class, zone) in rows {
        match class.parse::<DeviceClass>() {
            Ok(DeviceClass::PvMeter) => out.push((num, Metric::EExpWh, Flow::Pv)),
            Ok(DeviceClass::GridMeter) if zone.is_none() => {
                out.push((num, Metric::EImpWh, Flow::Import));
                out.push((num, Metric::EExpWh, Flow::Export));
            }
            Ok(DeviceClass::EvCharger) => out.push((num, Metric::EImpWh, Flow::Ev)),
            _ => {}
        }
    }
    Ok(out)
}

fn counter_quarter(r: &RollupRow) -> CounterQuarter {
    CounterQuarter {
        bucket: r.bucket,
        delta: r.delta.unwrap_or(0.0),
        last_ts: r.last_ts,
        epoch: r.epoch.unwrap_or(0),
    }
}

fn rollup_at(
    conn: &mut DbConnection,
    device: i32,
    metric: i16,
    bucket: i64,
    before: bool,
) -> DbResult<Option<RollupRow>> {
    let q = readings_15m::table
        .filter(readings_15m::device.eq(device))
        .filter(readings_15m::metric.eq(metric));
    Ok(if before {
        on_backend!(conn, |c| q
            .filter(readings_15m::bucket.lt(bucket))
            .order(readings_15m::bucket.desc())
            .first(c)
            .optional()?)
    } else {
        on_backend!(conn, |c| q
            .filter(readings_15m::bucket.ge(bucket))
            .order(readings_15m::bucket)
            .first(c)
            .optional()?)
    })
}

/// One counter's energy per quarter over `[from, to)`, widened to the readings on either side
/// of a gap that crosses the range's edges (within [`GAP_REACH_MS`]). Returns the series and
/// the widened range.
fn counter_series(
    conn: &mut DbConnection,
    device: i32,
    metric: Metric,
    from: i64,
    to: i64,
) -> DbResult<(Series, i64, i64)> {
    let code = metric.code();
    let before =
        rollup_at(conn, device, code, from, true)?.filter(|p| p.bucket >= from - GAP_REACH_MS);
    let start = before
        .as_ref()
        .map_or(from, |p| (p.bucket + QUARTER_MS).min(from));
    let after = rollup_at(conn, device, code, to, false)?.filter(|n| n.bucket < to + GAP_REACH_MS);
    let end = after.as_ref().map_or(to, |n| n.bucket + QUARTER_MS);
    let rows = super::telemetry::rollups(conn, device, code, start, end)?;
    let prev = match before {
        Some(p) => Some(p),
        None => rollup_at(conn, device, code, start, true)?,
    };
    let series = counter_energy(
        prev.as_ref().map(counter_quarter),
        &rows.iter().map(counter_quarter).collect::<Vec<_>>(),
    );
    Ok((series, start, end))
}

/// Recomputes a site's ledger over `[from, to)` (quarter boundaries), reaching as far as the
/// gaps at the edges need. Returns the site's region and the range rewritten, for
/// [`sum_region`].
pub fn recompute(
    conn: &mut DbConnection,
    site_id: &str,
    from: i64,
    to: i64,
) -> DbResult<(String, i64, i64)> {
    let counters = site_counters(conn, site_id)?;
    let mut series = Vec::with_capacity(counters.len());
    let (mut start, mut end) = (from, to);
    for (device, metric, flow) in &counters {
        let (s, a, b) = counter_series(conn, *device, *metric, from, to)?;
        start = start.min(a);
        end = end.max(b);
        // A meter with no reading within reach of the range (not installed yet, or long
        // gone) is not part of the balance; one that is merely silent makes quarters missing.
        if s.is_empty() && (a, b) == (from, to) {
            continue;
        }
        series.push((*flow, s));
    }
    let ledger = site_ledger(&series, start, end);
    let rows: Vec<EnergyRow> = ledger
        .iter()
        .map(|q| EnergyRow {
            site_id: site_id.to_owned(),
            bucket: q.bucket,
            pv_wh: q.pv_wh,
            import_wh: q.import_wh,
            export_wh: q.export_wh,
            ev_wh: q.ev_wh,
            load_wh: q.load_wh,
            quality: quality_code(q.quality),
        })
        .collect();
    let region: String = on_backend!(conn, |c| sites::table
        .find(site_id)
        .select(sites::region)
        .first(c)?);
    write_transaction(conn, |conn| {
        on_backend!(conn, |c| {
            diesel::delete(
                energy_15m::table
                    .filter(energy_15m::site_id.eq(site_id))
                    .filter(energy_15m::bucket.ge(start))
                    .filter(energy_15m::bucket.lt(end)),
            )
            .execute(c)?;
        });
        write_lines(conn, &rows)
    })?;
    Ok((region, start, end))
}

/// A region's quarter as summed by the database: bucket, the five sums, and the sites.
type RegionSum = (
    i64,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    i64,
);

/// Rewrites a region's sums over `[from, to)` from its sites' ledgers.
pub fn sum_region(conn: &mut DbConnection, region: &str, from: i64, to: i64) -> DbResult<()> {
    write_transaction(conn, |conn| write_region(conn, region, from, to))
}

/// [`sum_region`] inside the caller's transaction.
fn write_region(conn: &mut DbConnection, region: &str, from: i64, to: i64) -> DbResult<()> {
    use diesel::dsl::{count_star, sum};
    let lines: Vec<RegionSum> = on_backend!(conn, |c| energy_15m::table
        .inner_join(sites::table)
        .filter(sites::region.eq(region))
        .filter(energy_15m::bucket.ge(from))
        .filter(energy_15m::bucket.lt(to))
        .group_by(energy_15m::bucket)
        .select((
            energy_15m::bucket,
            sum(energy_15m::pv_wh),
            sum(energy_15m::import_wh),
            sum(energy_15m::export_wh),
            sum(energy_15m::ev_wh),
            sum(energy_15m::load_wh),
            count_star(),
        ))
        .load(c)?);
    let qualities: Vec<(i64, i16, i64)> = on_backend!(conn, |c| energy_15m::table
        .inner_join(sites::table)
        .filter(sites::region.eq(region))
        .filter(energy_15m::bucket.ge(from))
        .filter(energy_15m::bucket.lt(to))
        .filter(energy_15m::quality.lt(2))
        .group_by((energy_15m::bucket, energy_15m::quality))
        .select((energy_15m::bucket, energy_15m::quality, count_star()))
        .load(c)?);
    let mut by_bucket: BTreeMap<i64, RegionRow> = lines
        .into_iter()
        .map(|(bucket, pv, imp, exp, ev, load, n)| {
            (
                bucket,
                RegionRow {
                    region: region.to_owned(),
                    bucket,
                    pv_wh: pv.unwrap_or(0.0),
                    import_wh: imp.unwrap_or(0.0),
                    export_wh: exp.unwrap_or(0.0),
                    ev_wh: ev.unwrap_or(0.0),
                    load_wh: load.unwrap_or(0.0),
                    sites: n as i32,
                    measured: 0,
                    estimated: 0,
                },
            )
        })
        .collect();
    for (bucket, quality, n) in qualities {
        if let Some(row) = by_bucket.get_mut(&bucket) {
            match quality {
                0 => row.measured = n as i32,
                _ => row.estimated = n as i32,
            }
        }
    }
    let rows: Vec<RegionRow> = by_bucket.into_values().collect();
    on_backend!(conn, |c| {
        diesel::delete(
            energy_region_15m::table
                .filter(energy_region_15m::region.eq(region))
                .filter(energy_region_15m::bucket.ge(from))
                .filter(energy_region_15m::bucket.lt(to)),
        )
        .execute(c)?;
        for chunk in rows.chunks(1_000) {
            diesel::insert_into(energy_region_15m::table)
                .values(chunk)
                .execute(c)?;
        }
    });
    Ok(())
}

/// Writes ledger lines as they are (used to load history in bulk); the region sums follow with
/// [`sum_region`].
pub fn insert_lines(conn: &mut DbConnection, rows: &[EnergyRow]) -> DbResult<()> {
    write_transaction(conn, |conn| write_lines(conn, rows))
}

/// [`insert_lines`] inside the caller's transaction.
fn write_lines(conn: &mut DbConnection, rows: &[EnergyRow]) -> DbResult<()> {
    on_backend!(conn, |c| {
        for chunk in rows.chunks(1_000) {
            diesel::insert_into(energy_15m::table)
                .values(chunk)
                .execute(c)?;
        }
    });
    Ok(())
}

/// Ledger lines of some sites in `[from, to)`, by site then time.
pub fn site_lines(
    conn: &mut DbConnection,
    site_ids: &[String],
    from: i64,
    to: i64,
) -> DbResult<Vec<EnergyRow>> {
    Ok(on_backend!(conn, |c| energy_15m::table
        .filter(energy_15m::site_id.eq_any(site_ids))
        .filter(energy_15m::bucket.ge(from))
        .filter(energy_15m::bucket.lt(to))
        .order((energy_15m::site_id, energy_15m::bucket))
        .select(EnergyRow::as_select())
        .load(c)?))
}

/// Region sums in `[from, to)`; every region when `regions` is `None`.
pub fn region_lines(
    conn: &mut DbConnection,
    regions: Option<&[String]>,
    from: i64,
    to: i64,
) -> DbResult<Vec<RegionRow>> {
    let rows: Vec<RegionRow> = match conn {
        DbConnection::Sqlite(c) => {
            let mut q = energy_region_15m::table
                .filter(energy_region_15m::bucket.ge(from))
                .filter(energy_region_15m::bucket.lt(to))
                .into_boxed();
            if let Some(r) = regions {
                q = q.filter(energy_region_15m::region.eq_any(r.to_vec()));
            }
            q.order(energy_region_15m::bucket)
                .select(RegionRow::as_select())
                .load(c)?
        }
        DbConnection::Postgresql(c) => {
            let mut q = energy_region_15m::table
                .filter(energy_region_15m::bucket.ge(from))
                .filter(energy_region_15m::bucket.lt(to))
                .into_boxed();
            if let Some(r) = regions {
                q = q.filter(energy_region_15m::region.eq_any(r.to_vec()));
            }
            q.order(energy_region_15m::bucket)
                .select(RegionRow::as_select())
                .load(c)?
        }
    };
    Ok(rows)
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = emission_factors)]
pub struct FactorRow {
    pub version: i32,
    pub value: f64,
    pub unit: String,
    pub source: String,
    pub valid_from: NaiveDateTime,
    pub created_at: NaiveDateTime,
    pub created_by: Option<String>,
}

impl FactorRow {
    pub fn factor(&self) -> EmissionFactor {
        EmissionFactor {
            version: self.version,
            value: self.value,
            source: self.source.clone(),
            valid_from_ms: crate::domain::epoch::naive_ms(self.valid_from),
        }
    }
}

/// Every version of the emission factor, oldest first.
pub fn factors(conn: &mut DbConnection) -> DbResult<Vec<FactorRow>> {
    Ok(on_backend!(conn, |c| emission_factors::table
        .order(emission_factors::version)
        .select(FactorRow::as_select())
        .load(c)?))
}

/// Adds a new version of the emission factor (the next number); returns it.
pub fn add_factor(
    conn: &mut DbConnection,
    value: f64,
    source: &str,
    valid_from: NaiveDateTime,
    by: Option<&str>,
) -> DbResult<FactorRow> {
    write_transaction(conn, |conn| {
        let last: Option<i32> = on_backend!(conn, |c| emission_factors::table
            .select(diesel::dsl::max(emission_factors::version))
            .first(c)?);
        let row = FactorRow {
            version: last.unwrap_or(0) + 1,
            value,
            unit: crate::domain::energy::FACTOR_UNIT.to_owned(),
            source: source.to_owned(),
            valid_from,
            created_at: chrono::Utc::now().naive_utc(),
            created_by: by.map(str::to_owned),
        };
        on_backend!(conn, |c| diesel::insert_into(emission_factors::table)
            .values(&row)
            .execute(c)?);
        Ok(row)
    })
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = ev_plans)]
pub struct EvPlanRow {
    pub booking_id: String,
    pub mode: String,
    pub target_wh: Option<f64>,
    pub expected_wh: f64,
    pub expected_solar_wh: f64,
    pub feasible: bool,
    pub created_at: NaiveDateTime,
}

pub fn insert_plan(conn: &mut DbConnection, plan: &EvPlanRow) -> DbResult<()> {
    on_backend!(conn, |c| diesel::insert_into(ev_plans::table)
        .values(plan)
        .execute(c)?);
    Ok(())
}

/// The charging plans of some bookings.
pub fn plans(conn: &mut DbConnection, booking_ids: &[String]) -> DbResult<Vec<EvPlanRow>> {
    Ok(on_backend!(conn, |c| ev_plans::table
        .filter(ev_plans::booking_id.eq_any(booking_ids))
        .select(EvPlanRow::as_select())
        .load(c)?))
}

/// Bookings that held their resource: all but cancelled ones (a released no-show until its
/// release).
const HOLDING: [&str; 4] = ["confirmed", "checked_in", "completed", "released"];

/// Desk bookings at some sites overlapping `[from, to)`: `(site, starts, ends)`, a released
/// no-show ending at its release.
pub fn desk_stays(
    conn: &mut DbConnection,
    site_ids: &[String],
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> DbResult<Vec<(String, NaiveDateTime, NaiveDateTime)>> {
    use super::schema::{bookings, resources};
    Ok(on_backend!(conn, |c| bookings::table
        .inner_join(resources::table)
        .filter(resources::kind.eq("desk"))
        .filter(bookings::site_id.eq_any(site_ids))
        .filter(bookings::status.eq_any(HOLDING))
        .filter(bookings::starts_at.lt(to))
        .filter(bookings::ends_at.gt(from))
        .select((
            bookings::site_id,
            bookings::starts_at,
            bookings::ends_at,
            bookings::status,
            bookings::cancelled_at,
        ))
        .load::<(
            String,
            NaiveDateTime,
            NaiveDateTime,
            String,
            Option<NaiveDateTime>
        )>(c)?)
    .into_iter()
    .map(|(site, s, e, status, released)| match released {
        Some(at) if status == "released" => (site, s, e.min(at).max(s)),
        _ => (site, s, e),
    })
    .collect())
}

/// Whose bookings: one organization's, or one site's.
#[derive(Debug, Clone, Copy)]
pub enum Holder<'a> {
    Organization(&'a str),
    Site(&'a str),
}

/// Bookings that held their resource, overlapping `[from, to)`, of an organization or at a site,
/// by start.
pub fn holding_bookings(
    conn: &mut DbConnection,
    holder: Holder,
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> DbResult<Vec<super::models::Booking>> {
    use super::models::Booking;
    use super::schema::bookings;
    Ok(on_backend!(conn, |c| {
        let q = bookings::table
            .filter(bookings::status.eq_any(HOLDING))
            .filter(bookings::starts_at.lt(to))
            .filter(bookings::ends_at.gt(from))
            .into_boxed();
        let q = match holder {
            Holder::Organization(o) => q.filter(bookings::organization_id.eq(o.to_owned())),
            Holder::Site(s) => q.filter(bookings::site_id.eq(s.to_owned())),
        };
        q.order((bookings::starts_at, bookings::id))
            .select(Booking::as_select())
            .load(c)?
    }))
}

/// One counter's energy per quarter over `[from, to)`, gaps spread (see
/// `domain::energy::counter_energy`).
pub fn device_energy(
    conn: &mut DbConnection,
    device: i32,
    metric: Metric,
    from: i64,
    to: i64,
) -> DbResult<Series> {
    Ok(counter_series(conn, device, metric, from, to)?.0)
}

/// EV bay bookings in force at `now` (confirmed or checked in), with their charging plans.
pub fn ev_bookings_now(
    conn: &mut DbConnection,
    now: NaiveDateTime,
) -> DbResult<Vec<(super::models::Booking, Option<EvPlanRow>)>> {
    use super::models::Booking;
    use super::schema::{bookings, resources};
    let list: Vec<Booking> = on_backend!(conn, |c| bookings::table
        .inner_join(resources::table)
        .filter(resources::kind.eq("ev_bay"))
        .filter(bookings::status.eq_any(["confirmed", "checked_in"]))
        .filter(bookings::starts_at.le(now))
        .filter(bookings::ends_at.gt(now))
        .select(Booking::as_select())
        .load(c)?);
    let ids: Vec<String> = list.iter().map(|b| b.id.clone()).collect();
    let mut plans = plans(conn, &ids)?;
    Ok(list
        .into_iter()
        .map(|b| {
            let plan = plans
                .iter()
                .position(|p| p.booking_id == b.id)
                .map(|i| plans.swap_remove(i));
            (b, plan)
        })
        .collect())
}
