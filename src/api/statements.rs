//! What bookings cost in energy: a company's monthly statement (each booking's share of its
//! zone's consumption, or its car's charge) and the EV charging sessions at a site.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{Datelike, NaiveDate};
use serde::Serialize;
use utoipa::ToSchema;

use super::energy::{local_text, r3, range};
use super::error::ApiError;
use super::extract::{Auth, Errors, Query};
use super::factors::{cited, load_factors, FactorOut};
use super::sites::site_or_404;
use super::state::AppState;
use crate::db::energy::{self as store, EnergyRow, EvPlanRow};
use crate::db::models::Booking;
use crate::db::network::{Directory, SiteEntry};
use crate::db::DbError;
use crate::domain::energy::{factor_at, quarter_share, EmissionFactor, Quarter, Series, Stay};
use crate::domain::epoch::{naive_ms, to_naive};
use crate::domain::opening_hours::local_day_start;
use crate::domain::quarters::{quarter_start, QUARTER_MS};
use crate::domain::telemetry::Metric;
use crate::domain::{ChargeMode, DeviceClass, EnergyQuality, ResourceKind};

/// The longest span one sessions request may cover, days.
const MAX_SESSION_DAYS: i64 = 93;

/// One booking's energy.
#[derive(Debug, Clone, Default)]
struct Attribution {
    wh: f64,
    solar_wh: f64,
    co2_g: f64,
    /// A quarter without any factor in force held some of the energy.
    no_factor: bool,
    quality: Option<EnergyQuality>,
}

impl Attribution {
    fn add(&mut self, wh: f64, line: Option<&Quarter>, factors: &[EmissionFactor], bucket: i64) {
        let quality = line.map_or(EnergyQuality::Missing, |l| l.quality);
        self.quality = Some(match (self.quality, quality) {
            (Some(EnergyQuality::Missing), _) | (_, EnergyQuality::Missing) => {
                EnergyQuality::Missing
            }
            (Some(EnergyQuality::Estimated), _) | (_, EnergyQuality::Estimated) => {
                EnergyQuality::Estimated
            }
            _ => EnergyQuality::Measured,
        });
        if wh <= 0.0 {
            return;
        }
        let solar = line.map_or(0.0, Quarter::solar_fraction);
        self.wh += wh;
        self.solar_wh += wh * solar;
        match factor_at(factors, bucket) {
            Some(f) => self.co2_g += wh / 1000.0 * (1.0 - solar) * f.value,
            None => self.no_factor = true,
        }
    }
}

/// The quarters `[start, end)` touches.
fn quarters_of(start: i64, end: i64, tz: chrono_tz::Tz) -> impl Iterator<Item = i64> {
    let first = quarter_start(start, tz);
    (0..)
        .map(move |i| first + i * QUARTER_MS)
        .take_while(move |q| *q < end)
}

/// Until when a booking held its resource: its end, or its release for a no-show.
fn held_until(b: &Booking) -> i64 {
    let end = naive_ms(b.ends_at);
    match b.cancelled_at {
        Some(at) if b.status == crate::domain::BookingStatus::Released => {
            end.min(naive_ms(at)).max(naive_ms(b.starts_at))
        }
        _ => end,
    }
}

/// What the statement and the sessions need from one site over a span.
struct SiteEnergy {
    lines: HashMap<i64, Quarter>,
    bookings: Vec<Booking>,
    /// Charger energy per bay: quarter → Wh.
    chargers: HashMap<String, (String, Series)>,
    /// A zone's own consumption, where a sub-meter (a grid meter in the zone) measures it.
    submeters: HashMap<String, Series>,
}

async fn site_energy(
    state: &AppState,
    site: &SiteEntry,
    from: i64,
    to: i64,
    bays: &[String],
) -> Result<SiteEnergy, ApiError> {
    let tz = site.tz;
    let (qf, qt) = (quarter_start(from, tz), to);
    let chargers: Vec<(String, String, i32)> = state
        .fleet
        .site(&site.site.id)
        .into_iter()
        .filter(|d| d.class == DeviceClass::EvCharger)
        .filter_map(|d| {
            let bay = d.resource_id.clone()?;
            bays.contains(&bay).then_some((bay, d.id.clone(), d.num))
        })
        .collect();
    let submeters: Vec<(String, i32)> = state
        .fleet
        .site(&site.site.id)
        .into_iter()
        .filter(|d| d.class == DeviceClass::GridMeter)
        .filter_map(|d| d.zone_id.clone().map(|z| (z, d.num)))
        .collect();
    let id = site.site.id.clone();
    let (lines, bookings, series, zones) = state
        .db
        .run(move |c| {
            let lines = store::site_lines(c, std::slice::from_ref(&id), qf, qt)?;
            let bookings =
                store::holding_bookings(c, store::Holder::Site(&id), to_naive(qf), to_naive(qt))?;
            let mut series = HashMap::new();
            for (bay, device, num) in chargers {
                let s = store::device_energy(c, num, Metric::EImpWh, qf, qt)?;
                series.insert(bay, (device, s));
            }
            let mut zones: HashMap<String, Series> = HashMap::new();
            for (zone, num) in submeters {
                let s = store::device_energy(c, num, Metric::EImpWh, qf, qt)?;
                let total = zones.entry(zone).or_default();
                for (q, (wh, quality)) in s {
                    let e = total.entry(q).or_insert((0.0, quality));
                    e.0 += wh;
                }
            }
            Ok::<_, DbError>((lines, bookings, series, zones))
        })
        .await?;
    Ok(SiteEnergy {
        lines: lines
            .iter()
            .map(|l: &EnergyRow| (l.bucket, l.quarter()))
            .collect(),
        bookings,
        chargers: series,
        submeters: zones,
    })
}

/// A booking's energy: its car's charge for an EV bay, otherwise its share of its zone's
/// consumption (the zone's sub-meter where it has one, else the building's consumption without
/// the cars in proportion to the zone's seats; each quarter shared among the bookings present by
/// their seats and time).
fn attribute(
    dir: &Directory,
    site: &SiteEntry,
    energy: &SiteEnergy,
    booking: &Booking,
    factors: &[EmissionFactor],
) -> Attribution {
    let mut out = Attribution::default();
    let (start, end) = (naive_ms(booking.starts_at), held_until(booking));
    let Some(resource) = dir.resource(&booking.resource_id) else {
        return out;
    };
    if resource.kind == ResourceKind::EvBay {
        let series = energy.chargers.get(&booking.resource_id).map(|c| &c.1);
        for q in quarters_of(start, end, site.tz) {
            let part = ((end.min(q + QUARTER_MS) - start.max(q)) as f64) / QUARTER_MS as f64;
            let wh = series
                .and_then(|s| s.get(&q))
                .map_or(0.0, |(wh, _)| wh * part);
            out.add(wh, energy.lines.get(&q), factors, q);
        }
        return out;
    }
    let seats = |zone: Option<&str>| -> f64 {
        site.resources
            .iter()
            .filter(|r| r.kind != ResourceKind::EvBay)
            .filter(|r| zone.is_none_or(|z| r.zone.id == z))
            .map(|r| f64::from(r.resource.capacity.max(1)))
            .sum()
    };
    let zone = resource.zone.id.as_str();
    let weight = if seats(None) > 0.0 {
        seats(Some(zone)) / seats(None)
    } else {
        0.0
    };
    let mut stays = Vec::new();
    let mut me = 0;
    for b in &energy.bookings {
        let Some(r) = dir.resource(&b.resource_id) else {
            continue;
        };
        if r.kind == ResourceKind::EvBay || r.zone.id != zone {
            continue;
        }
        if b.id == booking.id {
            me = stays.len();
        }
        stays.push(Stay {
            start: naive_ms(b.starts_at),
            end: held_until(b),
            weight: f64::from(r.resource.capacity.max(1)),
        });
    }
    if stays.is_empty() {
        return out;
    }
    for q in quarters_of(start, end, site.tz) {
        let line = energy.lines.get(&q);
        let zone_wh = match energy.submeters.get(zone) {
            Some(meter) => meter.get(&q).map_or(0.0, |(wh, _)| *wh),
            None => line.map_or(0.0, |l| l.building_wh() * weight),
        };
        out.add(zone_wh * quarter_share(&stays, me, q), line, factors, q);
    }
    out
}

/// One booking in a statement.
#[derive(Serialize, ToSchema)]
pub struct StatementLine {
    pub booking_id: String,
    pub resource_id: String,
    pub resource_kind: ResourceKind,
    pub site_id: String,
    pub zone_id: String,
    pub starts_at: String,
    pub ends_at: String,
    pub booked_hours: f64,
    pub kwh: f64,
    /// `null` when no emission factor was in force for some of its energy.
    pub co2_kg: Option<f64>,
    /// Share of its energy that came from the site's PV plant.
    pub solar_share: Option<f64>,
    pub quality: EnergyQuality,
}

#[derive(Serialize, ToSchema)]
pub struct StatementTotals {
    pub bookings: usize,
    pub booked_hours: f64,
    pub kwh: f64,
    pub co2_kg: Option<f64>,
    pub solar_share: Option<f64>,
}

#[derive(Serialize, ToSchema)]
pub struct Statement {
    pub organization_id: String,
    /// `YYYY-MM`: bookings that start in that month, on their site's clock.
    pub month: String,
    pub bookings: Vec<StatementLine>,
    /// The sums of the lines above.
    pub totals: StatementTotals,
    pub emission_factors: Vec<FactorOut>,
}

#[utoipa::path(get, path = "/api/v1/organizations/{organization_id}/statements/{month}", tag = "energy",
    params(("organization_id" = String, Path), ("month" = String, Path, description = "YYYY-MM")),
    responses((status = 200, body = Statement),
              (status = 401, body = crate::api::error::Problem), (status = 403, body = crate::api::error::Problem),
              (status = 404, body = crate::api::error::Problem), (status = 422, body = crate::api::error::Problem)),
    security(("bearer" = [])))]
pub async fn statement(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (org, month) = path.into_inner();
    let caller = &auth.caller;
    if !caller.administers_organization(&org) {
        return Err(if caller.organization_id.as_deref() == Some(org.as_str()) {
            ApiError::Forbidden("statements are for the company's admins".into())
        } else {
            ApiError::NotFound(format!("no organization {org:?} of yours"))
        });
    }
    let first = NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d")
        .ok()
        .filter(|_| month.len() == 7)
        .ok_or_else(|| ApiError::field("month", "must be YYYY-MM"))?;
    let next = first
        .checked_add_months(chrono::Months::new(1))
        .ok_or_else(|| ApiError::field("month", "must be YYYY-MM"))?;
    let known = {
        let o = org.clone();
        state
            .db
            .run(move |c| crate::db::users::organization(c, &o).map(|o| o.is_some()))
            .await?
    };
    if !known {
        return Err(ApiError::NotFound(format!("no organization {org:?}")));
    }
    // Every zone in use is within a day of UTC: widen by a day, then keep the local month.
    let from = crate::domain::epoch::ms(local_day_start(first, chrono_tz::UTC)) - 86_400_000;
    let to = crate::domain::epoch::ms(local_day_start(next, chrono_tz::UTC)) + 86_400_000;
    let o = org.clone();
    let bookings = state
        .db
        .run(move |c| {
            store::holding_bookings(
                c,
                store::Holder::Organization(&o),
                to_naive(from),
                to_naive(to),
            )
        })
        .await?;
    let dir = state.directory();
    let mut by_site: BTreeMap<String, Vec<Booking>> = BTreeMap::new();
    for b in bookings {
        let Some(site) = dir.get(&b.site_id) else {
            continue;
        };
        let local = b.starts_at.and_utc().with_timezone(&site.tz).date_naive();
        if local.year() == first.year() && local.month() == first.month() {
            by_site.entry(b.site_id.clone()).or_default().push(b);
        }
    }
    let (rows, factors) = load_factors(&state).await?;
    let mut lines = Vec::new();
    let mut used: Vec<i32> = Vec::new();
    for (site_id, list) in by_site {
        let Some(site) = dir.get(&site_id).cloned() else {
            continue;
        };
        let from = list
            .iter()
            .map(|b| naive_ms(b.starts_at))
            .min()
            .unwrap_or(0);
        let to = list.iter().map(held_until).max().unwrap_or(0);
        let bays: Vec<String> = list.iter().map(|b| b.resource_id.clone()).collect();
        let energy = site_energy(&state, &site, from, to, &bays).await?;
        for b in &list {
            let a = attribute(&dir, &site, &energy, b, &factors);
            for q in quarters_of(naive_ms(b.starts_at), held_until(b), site.tz) {
                if let Some(f) = factor_at(&factors, q) {
                    if !used.contains(&f.version) {
                        used.push(f.version);
                    }
                }
            }
            lines.push(line_of(&dir, &site, b, &a));
        }
    }
    lines.sort_by(|a, b| (&a.starts_at, &a.booking_id).cmp(&(&b.starts_at, &b.booking_id)));
    let kwh: f64 = lines.iter().map(|l| l.kwh).sum();
    let solar: f64 = lines
        .iter()
        .map(|l| l.kwh * l.solar_share.unwrap_or(0.0))
        .sum();
    let totals = StatementTotals {
        bookings: lines.len(),
        booked_hours: r3(lines.iter().map(|l| l.booked_hours).sum()),
        kwh: r3(kwh),
        co2_kg: lines.iter().map(|l| l.co2_kg).sum::<Option<f64>>().map(r3),
        solar_share: (kwh > 0.0).then(|| (solar / kwh * 10_000.0).round() / 10_000.0),
    };
    used.sort_unstable();
    Ok(HttpResponse::Ok().json(Statement {
        organization_id: org,
        month,
        bookings: lines,
        totals,
        emission_factors: cited(&rows, &used),
    }))
}

fn line_of(dir: &Directory, site: &SiteEntry, b: &Booking, a: &Attribution) -> StatementLine {
    let resource = dir.resource(&b.resource_id);
    StatementLine {
        booking_id: b.id.clone(),
        resource_id: b.resource_id.clone(),
        resource_kind: resource.map_or(ResourceKind::Desk, |r| r.kind),
        site_id: b.site_id.clone(),
        zone_id: resource.map(|r| r.zone.id.clone()).unwrap_or_default(),
        starts_at: local_text(naive_ms(b.starts_at), site.tz),
        ends_at: local_text(held_until(b), site.tz),
        booked_hours: r3((held_until(b) - naive_ms(b.starts_at)) as f64 / 3_600_000.0),
        kwh: r3(a.wh / 1000.0),
        co2_kg: (!a.no_factor).then(|| r3(a.co2_g / 1000.0)),
        solar_share: (a.wh > 0.0).then(|| (a.solar_wh / a.wh * 10_000.0).round() / 10_000.0),
        quality: a.quality.unwrap_or(EnergyQuality::Missing),
    }
}

/// One charging session at an EV bay.
#[derive(Serialize, ToSchema)]
pub struct EvSession {
    /// The booking it belongs to; `null` for charging while the bay had no booking.
    pub booking_id: Option<String>,
    pub resource_id: String,
    pub charger_id: Option<String>,
    pub starts_at: String,
    pub ends_at: String,
    /// Energy the charger's meter counted, Wh.
    pub energy_wh: f64,
    /// Of that, from the site's PV plant (each quarter's PV share of consumption), Wh.
    pub solar_wh: f64,
    pub solar_share: Option<f64>,
    /// The booking's charging mode and target, and what the plan made at booking time expected.
    pub mode: Option<ChargeMode>,
    pub target_wh: Option<f64>,
    pub expected_wh: Option<f64>,
    pub feasible: Option<bool>,
    /// Whether the target was reached; `null` without a target.
    pub target_met: Option<bool>,
    pub quality: EnergyQuality,
}

#[derive(Serialize, ToSchema)]
pub struct EvSessions {
    pub site_id: String,
    pub from: String,
    pub to: String,
    pub sessions: Vec<EvSession>,
}

#[utoipa::path(get, path = "/api/v1/ev/sessions", tag = "energy",
    params(("site_id" = String, Query), ("from" = String, Query, description = "a local date or an RFC 3339 instant, on a quarter-hour"),
           ("to" = String, Query, description = "exclusive; at most 93 days after from")),
    responses((status = 200, body = EvSessions, description = "the site's managers see every session, others those of their own bookings (a company admin, the company's)"),
              (status = 401, body = crate::api::error::Problem), (status = 404, body = crate::api::error::Problem),
              (status = 422, body = crate::api::error::Problem)),
    security(("bearer" = [])))]
pub async fn ev_sessions(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let q = Query::from_request(&req);
    let site_id = q
        .str("site_id")
        .ok_or_else(|| ApiError::field("site_id", "required"))?;
    let site: Arc<SiteEntry> = site_or_404(&state, site_id)?;
    let mut errors = Errors::default();
    let span = range(&q, site.tz, MAX_SESSION_DAYS, &mut errors);
    errors.finish()?;
    let Some((from, to)) = span else {
        return Err(ApiError::Internal("validated parameters missing".into()));
    };
    let caller = &auth.caller;
    let manager = caller.manages_site(&site.site.id);
    let dir = state.directory();
    let bays: Vec<String> = site
        .resources
        .iter()
        .filter(|r| r.kind == ResourceKind::EvBay)
        .map(|r| r.resource.id.clone())
        .collect();
    let energy = site_energy(&state, &site, from, to, &bays).await?;
    let (_, factors) = load_factors(&state).await?;
    let mine = |b: &Booking| {
        manager
            || b.user_id == caller.user_id
            || b.organization_id
                .as_deref()
                .is_some_and(|o| caller.administers_organization(o))
    };
    let ev: Vec<&Booking> = energy
        .bookings
        .iter()
        .filter(|b| bays.contains(&b.resource_id))
        .filter(|b| held_until(b) > from && naive_ms(b.starts_at) < to)
        .collect();
    let ids: Vec<String> = ev.iter().map(|b| b.id.clone()).collect();
    let plans: HashMap<String, EvPlanRow> = state
        .db
        .run(move |c| store::plans(c, &ids))
        .await?
        .into_iter()
        .map(|p| (p.booking_id.clone(), p))
        .collect();
    let mut sessions = Vec::new();
    for b in ev.iter().filter(|b| mine(b)) {
        let a = attribute(&dir, &site, &energy, b, &factors);
        let plan = plans.get(&b.id);
        sessions.push(EvSession {
            booking_id: Some(b.id.clone()),
            resource_id: b.resource_id.clone(),
            charger_id: energy.chargers.get(&b.resource_id).map(|c| c.0.clone()),
            starts_at: local_text(naive_ms(b.starts_at), site.tz),
            ends_at: local_text(held_until(b), site.tz),
            energy_wh: r3(a.wh),
            solar_wh: r3(a.solar_wh),
            solar_share: (a.wh > 0.0).then(|| (a.solar_wh / a.wh * 10_000.0).round() / 10_000.0),
            mode: plan.and_then(|p| p.mode.parse().ok()),
            target_wh: plan.and_then(|p| p.target_wh),
            expected_wh: plan.map(|p| r3(p.expected_wh)),
            feasible: plan.map(|p| p.feasible),
            target_met: plan.and_then(|p| p.target_wh).map(|t| a.wh + 0.5 >= t),
            quality: a.quality.unwrap_or(EnergyQuality::Missing),
        });
    }
    if manager {
        sessions.extend(unbooked(&site, &energy, &ev, from, to));
    }
    sessions.sort_by(|a, b| (&a.starts_at, &a.resource_id).cmp(&(&b.starts_at, &b.resource_id)));
    Ok(HttpResponse::Ok().json(EvSessions {
        site_id: site.site.id.clone(),
        from: local_text(from, site.tz),
        to: local_text(to, site.tz),
        sessions,
    }))
}

/// Charging while a bay had no booking: runs of quarters in which its charger counted energy.
fn unbooked(
    site: &SiteEntry,
    energy: &SiteEnergy,
    booked: &[&Booking],
    from: i64,
    to: i64,
) -> Vec<EvSession> {
    let mut out = Vec::new();
    for (bay, (charger, series)) in &energy.chargers {
        let held = |q: i64| {
            booked.iter().any(|b| {
                &b.resource_id == bay && naive_ms(b.starts_at) < q + QUARTER_MS && held_until(b) > q
            })
        };
        let mut run: Option<(i64, i64, f64, f64, EnergyQuality)> = None;
        let mut flush = |run: &mut Option<(i64, i64, f64, f64, EnergyQuality)>| {
            if let Some((s, e, wh, solar, quality)) = run.take() {
                out.push(EvSession {
                    booking_id: None,
                    resource_id: bay.clone(),
                    charger_id: Some(charger.clone()),
                    starts_at: local_text(s, site.tz),
                    ends_at: local_text(e, site.tz),
                    energy_wh: r3(wh),
                    solar_wh: r3(solar),
                    solar_share: (wh > 0.0).then(|| (solar / wh * 10_000.0).round() / 10_000.0),
                    mode: None,
                    target_wh: None,
                    expected_wh: None,
                    feasible: None,
                    target_met: None,
                    quality,
                });
            }
        };
        for (&q, &(wh, quality)) in series.range(from..to) {
            if wh <= 0.0 || held(q) {
                flush(&mut run);
                continue;
            }
            let solar = wh * energy.lines.get(&q).map_or(0.0, Quarter::solar_fraction);
            match run.as_mut() {
                Some(r) if r.1 == q => {
                    r.1 = q + QUARTER_MS;
                    r.2 += wh;
                    r.3 += solar;
                    if quality != EnergyQuality::Measured {
                        r.4 = EnergyQuality::Estimated;
                    }
                }
                _ => {
                    flush(&mut run);
                    run = Some((q, q + QUARTER_MS, wh, solar, quality));
                }
            }
        }
        flush(&mut run);
    }
    out
}
