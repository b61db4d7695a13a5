//! Energy reports: the 15-minute ledger of a site, a region or the network in intervals (JSON or
//! CSV), the key figures of a period, and the operator's emission factors.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{NaiveDate, SecondsFormat};
use chrono_tz::Tz;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::extract::{Auth, Errors, Query};
use super::factors::{cited, load_factors, FactorOut};
use super::sites::site_or_404;
use super::state::AppState;
use crate::db::energy as store;
use crate::db::network::SiteEntry;
use crate::domain::access::Caller;
use crate::domain::energy::{
    expected_yield_wh_per_kwp, intervals, EmissionFactor, Interval, Kpis, Quarter, Sums,
    MAX_FINE_RANGE_DAYS, MAX_RANGE_DAYS,
};
use crate::domain::opening_hours::local_day_start;
use crate::domain::quarters::{quarter_start, QUARTER_MS};
use crate::domain::{EnergyQuality, FieldError};

/// What a report covers.
pub enum Scope {
    Site(Arc<SiteEntry>),
    Region(String, Vec<Arc<SiteEntry>>),
    Network(Vec<Arc<SiteEntry>>),
}

impl Scope {
    pub fn sites(&self) -> Vec<Arc<SiteEntry>> {
        match self {
            Scope::Site(s) => vec![s.clone()],
            Scope::Region(_, v) | Scope::Network(v) => v.clone(),
        }
    }

    pub fn label(&self) -> String {
        match self {
            Scope::Site(s) => format!("site:{}", s.site.id),
            Scope::Region(r, _) => format!("region:{r}"),
            Scope::Network(_) => "network".into(),
        }
    }

    /// The zone the scope's sites share (UTC when they do not).
    pub fn tz(&self) -> Tz {
        let sites = self.sites();
        match sites.first() {
            Some(first) if sites.iter().all(|s| s.tz == first.tz) => first.tz,
            _ => Tz::UTC,
        }
    }
}

/// Reads `scope` and checks the caller may see it: a site's managers see the site, network admins
/// everything; a region needs every one of its sites, the network a network admin.
pub fn scope_of(state: &AppState, caller: &Caller, raw: Option<&str>) -> Result<Scope, ApiError> {
    let raw = raw.ok_or_else(|| {
        ApiError::field(
            "scope",
            "required: site:{site_id}, region:{region} or network",
        )
    })?;
    let dir = state.directory();
    if raw == "network" {
        if !caller.is_network_admin() {
            return Err(ApiError::Forbidden(
                "only network admins see the whole network".into(),
            ));
        }
        return Ok(Scope::Network(dir.sites.clone()));
    }
    if let Some(id) = raw.strip_prefix("site:") {
        let site = site_or_404(state, id)?;
        if !caller.manages_site(&site.site.id) {
            return Err(ApiError::Forbidden(
                "only the site's managers and network admins see its energy".into(),
            ));
        }
        return Ok(Scope::Site(site));
    }
    if let Some(region) = raw.strip_prefix("region:") {
        let sites: Vec<Arc<SiteEntry>> = dir
            .sites
            .iter()
            .filter(|s| s.site.region.eq_ignore_ascii_case(region))
            .cloned()
            .collect();
        let Some(first) = sites.first() else {
            return Err(ApiError::NotFound(format!("no region {region:?}")));
        };
        if !sites.iter().all(|s| caller.manages_site(&s.site.id)) {
            return Err(ApiError::Forbidden(
                "a region's energy is for those who manage all of its sites".into(),
            ));
        }
        return Ok(Scope::Region(first.site.region.clone(), sites));
    }
    Err(ApiError::field(
        "scope",
        "must be site:{site_id}, region:{region} or network",
    ))
}

/// A bound of a report: a local date (its midnight in `tz`) or an RFC 3339 instant, on a
/// quarter-hour of `tz`.
fn bound(q: &Query, name: &str, tz: Tz) -> Option<Result<i64, FieldError>> {
    let raw = q.str(name)?;
    let ms = match NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        Ok(date) => Ok(crate::domain::epoch::ms(local_day_start(date, tz))),
        Err(_) => q.instant(name)?.map(crate::domain::epoch::ms),
    };
    Some(ms.and_then(|ms| {
        if quarter_start(ms, tz) == ms {
            Ok(ms)
        } else {
            Err(FieldError::new(name, "must fall on a quarter-hour"))
        }
    }))
}

/// `from` and `to`, both required, `to` after `from` and at most `max_days` later.
pub fn range(q: &Query, tz: Tz, max_days: i64, errors: &mut Errors) -> Option<(i64, i64)> {
    let mut required = |name: &str| match bound(q, name, tz) {
        Some(r) => errors.take(r),
        None => {
            errors.push(FieldError::new(
                name,
                "required: a date (YYYY-MM-DD) or an RFC 3339 instant",
            ));
            None
        }
    };
    let (from, to) = (required("from"), required("to"));
    let (from, to) = (from?, to?);
    if to <= from {
        errors.push(FieldError::new("to", "must be after from"));
        return None;
    }
    if to - from > max_days * 86_400_000 {
        errors.push(FieldError::new(
            "to",
            format!("must be at most {max_days} days after from"),
        ));
        return None;
    }
    Some((from, to))
}

pub fn local_text(ms: i64, tz: Tz) -> String {
    crate::domain::epoch::to_utc(ms)
        .with_timezone(&tz)
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn r4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// The scope's quarters in `[from, to)` that have a ledger line, each summed over the scope's
/// sites (`expected` left at zero: it depends on the interval).
pub async fn scope_quarters(
    state: &AppState,
    scope: &Scope,
    from: i64,
    to: i64,
) -> Result<BTreeMap<i64, Sums>, ApiError> {
    let mut out: BTreeMap<i64, Sums> = BTreeMap::new();
    match scope {
        Scope::Site(site) => {
            let ids = vec![site.site.id.clone()];
            let rows = state
                .db
                .run(move |c| store::site_lines(c, &ids, from, to))
                .await?;
            for r in rows {
                out.entry(r.bucket).or_default().add(&r.quarter());
            }
        }
        Scope::Region(..) | Scope::Network(_) => {
            let regions = match scope {
                Scope::Region(r, _) => Some(vec![r.clone()]),
                _ => None,
            };
            let rows = state
                .db
                .run(move |c| store::region_lines(c, regions.as_deref(), from, to))
                .await?;
            for r in rows {
                let s = out.entry(r.bucket).or_default();
                s.pv_wh += r.pv_wh;
                s.import_wh += r.import_wh;
                s.export_wh += r.export_wh;
                s.ev_wh += r.ev_wh;
                s.load_wh += r.load_wh;
                s.measured += i64::from(r.measured);
                s.estimated += i64::from(r.estimated);
            }
        }
    }
    Ok(out)
}

fn quarter_of(bucket: i64, s: &Sums) -> Quarter {
    Quarter {
        bucket,
        pv_wh: s.pv_wh,
        import_wh: s.import_wh,
        export_wh: s.export_wh,
        ev_wh: s.ev_wh,
        load_wh: s.load_wh,
        quality: s.quality(),
    }
}

/// One interval of an energy report.
#[derive(Serialize, ToSchema)]
pub struct EnergyInterval {
    /// Start, local time with its offset.
    pub start: String,
    /// End (exclusive), local time with its offset.
    pub end: String,
    pub pv_wh: f64,
    pub import_wh: f64,
    pub export_wh: f64,
    pub ev_wh: f64,
    /// Consumption: import + PV − export.
    pub load_wh: f64,
    /// `measured` (every quarter of every site measured), `estimated` (some spread over gaps
    /// or across a counter reset, or some missing), `missing` (nothing known).
    pub quality: EnergyQuality,
}

#[derive(Serialize, ToSchema)]
pub struct EnergyReport {
    pub scope: String,
    pub timezone: String,
    pub from: String,
    pub to: String,
    /// `15m`, `1h`, `1d` or `1mo`.
    pub interval: String,
    pub intervals: Vec<EnergyInterval>,
    pub totals: EnergyInterval,
}

fn line(start: i64, end: i64, s: &Sums, tz: Tz) -> EnergyInterval {
    EnergyInterval {
        start: local_text(start, tz),
        end: local_text(end, tz),
        pv_wh: r3(s.pv_wh),
        import_wh: r3(s.import_wh),
        export_wh: r3(s.export_wh),
        ev_wh: r3(s.ev_wh),
        load_wh: r3(s.load_wh),
        quality: s.quality(),
    }
}

#[utoipa::path(get, path = "/api/v1/energy", tag = "energy",
    params(("scope" = String, Query, description = "`site:{site_id}`, `region:{region}` or `network`"),
           ("from" = String, Query, description = "a local date (YYYY-MM-DD) or an RFC 3339 instant, on a quarter-hour"),
           ("to" = String, Query, description = "exclusive; same forms"),
           ("interval" = Option<String>, Query, description = "`15m` (default), `1h`, `1d` or `1mo`, on the scope's local clock")),
    responses((status = 200, body = EnergyReport, description = "JSON, or CSV with `Accept: text/csv`"),
              (status = 401, body = crate::api::error::Problem), (status = 403, body = crate::api::error::Problem),
              (status = 404, body = crate::api::error::Problem), (status = 422, body = crate::api::error::Problem)),
    security(("bearer" = [])))]
pub async fn report(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let q = Query::from_request(&req);
    let scope = scope_of(&state, &auth.caller, q.str("scope"))?;
    let tz = scope.tz();
    let mut errors = Errors::default();
    let interval = match q.str("interval").unwrap_or("15m") {
        "1y" => {
            errors.push(FieldError::new(
                "interval",
                "must be one of: 15m, 1h, 1d, 1mo",
            ));
            None
        }
        raw => errors.take(
            raw.parse::<Interval>()
                .map_err(|_| FieldError::new("interval", "must be one of: 15m, 1h, 1d, 1mo")),
        ),
    };
    let max_days = match interval {
        Some(Interval::Quarter | Interval::Hour) => MAX_FINE_RANGE_DAYS,
        _ => MAX_RANGE_DAYS,
    };
    let span = range(&q, tz, max_days, &mut errors);
    errors.finish()?;
    let (Some(interval), Some((from, to))) = (interval, span) else {
        return Err(ApiError::Internal("validated parameters missing".into()));
    };
    let sites = scope.sites().len() as i64;
    let quarters = scope_quarters(&state, &scope, from, to).await?;
    let mut totals = Sums::default();
    let lines: Vec<EnergyInterval> = intervals(from, to, interval, tz)
        .into_iter()
        .map(|(s, e)| {
            let mut sums = Sums {
                expected: (e - s) / QUARTER_MS * sites,
                ..Sums::default()
            };
            for (_, part) in quarters.range(s..e) {
                sums.merge(part);
            }
            totals.merge(&sums);
            line(s, e, &sums, tz)
        })
        .collect();
    let wants_csv = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/csv"));
    if wants_csv {
        let mut csv = String::from("start,end,pv_wh,import_wh,export_wh,ev_wh,load_wh,quality\n");
        for l in &lines {
            csv.push_str(&format!(
                "{},{},{},{},{},{},{},{}\n",
                l.start, l.end, l.pv_wh, l.import_wh, l.export_wh, l.ev_wh, l.load_wh, l.quality
            ));
        }
        return Ok(HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .body(csv));
    }
    Ok(HttpResponse::Ok().json(EnergyReport {
        scope: scope.label(),
        timezone: tz.name().to_owned(),
        from: local_text(from, tz),
        to: local_text(to, tz),
        interval: interval.as_str().to_owned(),
        totals: line(from, to, &totals, tz),
        intervals: lines,
    }))
}

/// Key figures of one period.
#[derive(Serialize, ToSchema)]
pub struct KpiPeriod {
    pub start: String,
    pub end: String,
    pub pv_kwh: f64,
    /// Consumption: import + PV − export.
    pub consumption_kwh: f64,
    pub import_kwh: f64,
    pub export_kwh: f64,
    pub ev_kwh: f64,
    /// Share of the PV production used on site; `null` without production.
    pub self_consumption: Option<f64>,
    /// Share of the consumption met by PV; `null` without consumption.
    pub self_sufficiency: Option<f64>,
    /// Share of the cars' energy that came from PV (each quarter's PV share of consumption);
    /// `null` without EV energy.
    pub ev_solar_share: Option<f64>,
    /// Highest 15-minute mean consumption (summed over the scope's sites at the same time).
    pub peak_power_kw: f64,
    /// Highest 15-minute mean grid import.
    pub peak_import_kw: f64,
    /// Floor area of the scope's sites.
    pub area_m2: f64,
    pub kwh_per_m2: f64,
    /// Hours of desk bookings (not cancelled or released) in the period.
    pub booked_desk_hours: f64,
    /// Consumption other than EV charging per booked desk-hour; `null` with no desk booked.
    pub kwh_per_desk_hour: Option<f64>,
    /// Expected PV production: the plants' kWp and the clear-sky yield at each site's latitude
    /// times a typical clearness of 0.7.
    pub pv_expected_kwh: f64,
    /// `pv_kwh / pv_expected_kwh`; `null` when nothing is expected.
    pub pv_performance_ratio: Option<f64>,
    /// CO₂ of the grid import; `null` when no emission factor was in force for some of it.
    pub co2_emitted_kg: Option<f64>,
    /// CO₂ the PV production spared the grid.
    pub co2_avoided_kg: Option<f64>,
    /// Versions of the emission factor used.
    pub emission_factor_versions: Vec<i32>,
    pub quality: EnergyQuality,
}

#[derive(Serialize, ToSchema)]
pub struct KpiReport {
    pub scope: String,
    pub timezone: String,
    pub from: String,
    pub to: String,
    /// `day`, `month`, `year`, or `all` (the whole range as one period).
    pub period: String,
    pub periods: Vec<KpiPeriod>,
    pub total: KpiPeriod,
    /// The emission factors used, as they were set.
    pub emission_factors: Vec<FactorOut>,
}

/// The scope's PV plants grouped by rounded position, for the expected yield: `(lat, lon, kWp)`.
fn plants(sites: &[Arc<SiteEntry>]) -> Vec<(f64, f64, f64)> {
    let mut groups: BTreeMap<(i64, i64), (f64, f64, f64)> = BTreeMap::new();
    for s in sites {
        let key = (
            (s.site.latitude * 2.0).round() as i64,
            s.site.longitude.round() as i64,
        );
        let g = groups
            .entry(key)
            .or_insert((key.0 as f64 / 2.0, key.1 as f64, 0.0));
        g.2 += s.site.pv_kwp;
    }
    groups.into_values().filter(|g| g.2 > 0.0).collect()
}

#[allow(clippy::too_many_arguments)]
fn kpi_period(
    start: i64,
    end: i64,
    quarters: &BTreeMap<i64, Sums>,
    sites: &[Arc<SiteEntry>],
    plants: &[(f64, f64, f64)],
    desk_stays: &[(i64, i64)],
    factors: &[EmissionFactor],
    tz: Tz,
) -> KpiPeriod {
    let mut k = Kpis::default();
    let mut counts = Sums {
        expected: (end - start) / QUARTER_MS * sites.len() as i64,
        ..Sums::default()
    };
    for (b, s) in quarters.range(start..end) {
        k.add(&quarter_of(*b, s), factors);
        counts.measured += s.measured;
        counts.estimated += s.estimated;
    }
    k.sums.measured = counts.measured;
    k.sums.estimated = counts.estimated;
    k.sums.expected = counts.expected;
    let area: f64 = sites.iter().map(|s| f64::from(s.site.area_m2)).sum();
    let desk_ms: i64 = desk_stays
        .iter()
        .map(|&(s, e)| (e.min(end) - s.max(start)).max(0))
        .sum();
    let desk_hours = desk_ms as f64 / 3_600_000.0;
    let expected_wh: f64 = plants
        .iter()
        .map(|&(lat, lon, kwp)| kwp * expected_yield_wh_per_kwp(lat, lon, start, end))
        .sum();
    let kwh = |wh: f64| r3(wh / 1000.0);
    let building_kwh = (k.sums.load_wh - k.sums.ev_wh).max(0.0) / 1000.0;
    KpiPeriod {
        start: local_text(start, tz),
        end: local_text(end, tz),
        pv_kwh: kwh(k.sums.pv_wh),
        consumption_kwh: kwh(k.sums.load_wh),
        import_kwh: kwh(k.sums.import_wh),
        export_kwh: kwh(k.sums.export_wh),
        ev_kwh: kwh(k.sums.ev_wh),
        self_consumption: k.self_consumption().map(r4),
        self_sufficiency: k.self_sufficiency().map(r4),
        ev_solar_share: k.ev_solar_share().map(r4),
        peak_power_kw: r3(k.peak_load_w / 1000.0),
        peak_import_kw: r3(k.peak_import_w / 1000.0),
        area_m2: area,
        kwh_per_m2: if area > 0.0 {
            r4(k.sums.load_wh / 1000.0 / area)
        } else {
            0.0
        },
        booked_desk_hours: r3(desk_hours),
        kwh_per_desk_hour: (desk_hours > 0.0).then(|| r4(building_kwh / desk_hours)),
        pv_expected_kwh: kwh(expected_wh),
        pv_performance_ratio: (expected_wh > 0.0).then(|| r4(k.sums.pv_wh / expected_wh)),
        co2_emitted_kg: k.co2_emitted_g().map(|g| r3(g / 1000.0)),
        co2_avoided_kg: k.co2_avoided_g().map(|g| r3(g / 1000.0)),
        emission_factor_versions: k.factor_versions.clone(),
        quality: k.sums.quality(),
    }
}

#[utoipa::path(get, path = "/api/v1/energy/kpis", tag = "energy",
    params(("scope" = String, Query, description = "`site:{site_id}`, `region:{region}` or `network`"),
           ("from" = String, Query, description = "a local date (YYYY-MM-DD) or an RFC 3339 instant, on a quarter-hour"),
           ("to" = String, Query, description = "exclusive; same forms; at most three years after from"),
           ("period" = Option<String>, Query, description = "`day`, `month`, `year` (local calendar) or `all` (default)")),
    responses((status = 200, body = KpiReport),
              (status = 401, body = crate::api::error::Problem), (status = 403, body = crate::api::error::Problem),
              (status = 404, body = crate::api::error::Problem), (status = 422, body = crate::api::error::Problem)),
    security(("bearer" = [])))]
pub async fn kpis(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let q = Query::from_request(&req);
    let scope = scope_of(&state, &auth.caller, q.str("scope"))?;
    let tz = scope.tz();
    let mut errors = Errors::default();
    let period = match q.str("period").unwrap_or("all") {
        "all" => Some(None),
        "day" => Some(Some(Interval::Day)),
        "month" => Some(Some(Interval::Month)),
        "year" => Some(Some(Interval::Year)),
        _ => {
            errors.push(FieldError::new(
                "period",
                "must be one of: day, month, year, all",
            ));
            None
        }
    };
    let span = range(&q, tz, MAX_RANGE_DAYS, &mut errors);
    errors.finish()?;
    let (Some(period), Some((from, to))) = (period, span) else {
        return Err(ApiError::Internal("validated parameters missing".into()));
    };
    let sites = scope.sites();
    let quarters = scope_quarters(&state, &scope, from, to).await?;
    let (rows, factors) = load_factors(&state).await?;
    let ids: Vec<String> = sites.iter().map(|s| s.site.id.clone()).collect();
    let (f, t) = (
        crate::domain::epoch::to_naive(from),
        crate::domain::epoch::to_naive(to),
    );
    let stays: Vec<(i64, i64)> = state
        .db
        .run(move |c| store::desk_stays(c, &ids, f, t))
        .await?
        .into_iter()
        .map(|(_, s, e)| {
            (
                crate::domain::epoch::naive_ms(s),
                crate::domain::epoch::naive_ms(e),
            )
        })
        .collect();
    let plants = plants(&sites);
    let spans = match period {
        None => vec![(from, to)],
        Some(i) => intervals(from, to, i, tz),
    };
    let periods: Vec<KpiPeriod> = spans
        .iter()
        .map(|&(s, e)| kpi_period(s, e, &quarters, &sites, &plants, &stays, &factors, tz))
        .collect();
    let total = kpi_period(from, to, &quarters, &sites, &plants, &stays, &factors, tz);
    Ok(HttpResponse::Ok().json(KpiReport {
        scope: scope.label(),
        timezone: tz.name().to_owned(),
        from: local_text(from, tz),
        to: local_text(to, tz),
        period: match period {
            None => "all",
            Some(Interval::Day) => "day",
            Some(Interval::Month) => "month",
            Some(_) => "year",
        }
        .to_owned(),
        emission_factors: cited(&rows, &total.emission_factor_versions),
        periods,
        total,
    }))
}
