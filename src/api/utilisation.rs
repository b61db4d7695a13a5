//! Utilisation over time, for a site's managers: booked hours against the hours the presence
//! sensors saw someone, no-shows and ghost occupancy, by resource, zone or local day.

use std::collections::{BTreeMap, HashMap};

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use utoipa::ToSchema;

use super::devices::{managed_site, ts_local};
use super::error::ApiError;
use super::extract::{Auth, Errors, Query};
use super::state::AppState;
use super::views::utc_text;
use crate::db::bookings;
use crate::db::network::SiteEntry;
use crate::db::{naive, telemetry, utc, DbError};
use crate::domain::access_control::{merge_spans, occupied_spans, overlap_total, spans_total};
use crate::domain::opening_hours::local_day_start;
use crate::domain::telemetry::Metric;
use crate::domain::{BookingStatus, DeviceClass, FieldError};

/// How utilisation is grouped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum By {
    Resource,
    Zone,
    Day,
}

/// The longest span one utilisation request may cover.
const MAX_SPAN: Duration = Duration::days(31);

#[derive(Serialize, ToSchema, Default, Clone)]
pub struct UtilisationItem {
    /// The resource id, the zone id, or the local date (`YYYY-MM-DD`).
    pub key: String,
    pub name: String,
    /// Hours held by bookings (a released booking until its release).
    pub booked_hours: f64,
    /// Hours the presence sensors saw someone.
    pub occupied_hours: f64,
    /// Booked hours in which someone was there.
    pub occupied_booked_hours: f64,
    /// Occupied hours with no booking: ghost occupancy.
    pub ghost_hours: f64,
    /// `occupied_booked_hours / booked_hours`; `null` with nothing booked.
    pub utilisation: Option<f64>,
    /// Bookings that started in the period.
    pub bookings: u32,
    /// Of those, released as no-shows.
    pub no_shows: u32,
    /// `no_shows / bookings`; `null` with no bookings.
    pub no_show_rate: Option<f64>,
}

#[derive(Serialize, ToSchema)]
pub struct Utilisation {
    pub site_id: String,
    pub from: String,
    pub to: String,
    pub from_local: String,
    pub to_local: String,
    pub timezone: String,
    /// `resource`, `zone` or `day`.
    pub by: String,
    pub items: Vec<UtilisationItem>,
    pub totals: UtilisationItem,
}

/// Milliseconds summed per group before they become hours.
#[derive(Default, Clone, Copy)]
struct Sums {
    booked: i64,
    occupied: i64,
    both: i64,
    bookings: u32,
    no_shows: u32,
}

impl Sums {
    fn add(&mut self, o: Sums) {
        self.booked += o.booked;
        self.occupied += o.occupied;
        self.both += o.both;
        self.bookings += o.bookings;
        self.no_shows += o.no_shows;
    }

    fn item(self, key: String, name: String) -> UtilisationItem {
        let h = |ms: i64| (ms as f64 / 3_600_000.0 * 1000.0).round() / 1000.0;
        UtilisationItem {
            key,
            name,
            booked_hours: h(self.booked),
            occupied_hours: h(self.occupied),
            occupied_booked_hours: h(self.both),
            ghost_hours: h(self.occupied - self.both),
            utilisation: (self.booked > 0)
                .then(|| (self.both as f64 / self.booked as f64 * 1000.0).round() / 1000.0),
            bookings: self.bookings,
            no_shows: self.no_shows,
            no_show_rate: (self.bookings > 0).then(|| {
                (f64::from(self.no_shows) / f64::from(self.bookings) * 1000.0).round() / 1000.0
            }),
        }
    }
}

/// The local days meeting `[from, to)`, as `(date, start ms, end ms)` clipped to the range.
fn local_days(from: DateTime<Utc>, to: DateTime<Utc>, tz: Tz) -> Vec<(String, i64, i64)> {
    let mut out = Vec::new();
    let mut day = from.with_timezone(&tz).date_naive();
    loop {
        let start = local_day_start(day, tz);
        if start >= to {
            break;
        }
        let Some(next) = day.succ_opt() else { break };
        let end = local_day_start(next, tz);
        let (a, b) = (start.max(from), end.min(to));
        if a < b {
            out.push((
                day.to_string(),
                crate::domain::epoch::ms(a),
                crate::domain::epoch::ms(b),
            ));
        }
        day = next;
    }
    out
}

#[utoipa::path(get, path = "/api/v1/sites/{site_id}/utilisation", tag = "access",
    params(("from" = String, Query, description = "RFC 3339"), ("to" = String, Query, description = "RFC 3339, exclusive; at most 31 days after from"),
           ("by" = Option<String>, Query, description = "`resource` (default), `zone` or `day` (the site's local days)")),
    responses((status = 200, body = Utilisation),
              (status = 401, body = crate::api::error::Problem), (status = 403, body = crate::api::error::Problem),
              (status = 404, body = crate::api::error::Problem), (status = 422, body = crate::api::error::Problem)),
    security(("bearer" = [])))]
pub async fn utilisation(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let site = managed_site(&state, &auth.caller, &path)?;
    let q = Query::from_request(&req);
    let mut errors = Errors::default();
    let mut required = |name: &str| match q.instant(name) {
        Some(r) => errors.take(r),
        None => {
            errors.push(FieldError::new(name, "required (RFC 3339 with an offset)"));
            None
        }
    };
    let (from, to) = (required("from"), required("to"));
    let by = match q.str("by").unwrap_or("resource") {
        "resource" => Some(By::Resource),
        "zone" => Some(By::Zone),
        "day" => Some(By::Day),
        _ => {
            errors.push(FieldError::new("by", "must be one of: resource, zone, day"));
            None
        }
    };
    if let (Some(f), Some(t)) = (from, to) {
        if t <= f {
            errors.push(FieldError::new("to", "must be after from"));
        } else if t - f > MAX_SPAN {
            errors.push(FieldError::new("to", "must be at most 31 days after from"));
        }
    }
    errors.finish()?;
    let (Some(from), Some(to), Some(by)) = (from, to, by) else {
        return Err(ApiError::Internal("validated parameters missing".into()));
    };
    let out = compute(&state, &site, from, to, by).await?;
    Ok(HttpResponse::Ok().json(out))
}

async fn compute(
    state: &AppState,
    site: &SiteEntry,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    by: By,
) -> Result<Utilisation, ApiError> {
    let tz = site.tz;
    let (f_ms, t_ms) = (crate::domain::epoch::ms(from), crate::domain::epoch::ms(to));
    let sensors: HashMap<i32, (String, i64)> = state
        .fleet
        .site(&site.site.id)
        .into_iter()
        .filter(|d| d.class == DeviceClass::PresenceSensor)
        .filter_map(|d| {
            let hold = i64::from(d.report_interval_s) * 3_000;
            d.resource_id.clone().map(|r| (d.num, (r, hold)))
        })
        .collect();
    let nums: Vec<i32> = sensors.keys().copied().collect();
    let longest_hold = sensors.values().map(|s| s.1).max().unwrap_or(0);
    let id = site.site.id.clone();
    let (held, samples) = state
        .db
        .run(move |c| {
            let held = bookings::held_between(c, &id, naive(from), naive(to))?;
            let samples = telemetry::metric_readings(
                c,
                &nums,
                Metric::Occupied.code(),
                f_ms - longest_hold,
                t_ms,
            )?;
            Ok::<_, DbError>((held, samples))
        })
        .await?;
    // Per resource: booked spans, occupied spans, and the bookings that started in the range.
    let mut booked: HashMap<&str, Vec<(i64, i64)>> = HashMap::new();
    let mut starts: HashMap<&str, Vec<(i64, bool)>> = HashMap::new();
    for (resource, status, s, e, released_at) in &held {
        let (s, mut e) = (
            crate::domain::epoch::ms(utc(*s)),
            crate::domain::epoch::ms(utc(*e)),
        );
        let released = status == BookingStatus::Released.as_str();
        if released {
            if let Some(r) = released_at {
                e = e.min(crate::domain::epoch::ms(utc(*r)));
            }
        }
        booked.entry(resource).or_default().push((s, e));
        if (f_ms..t_ms).contains(&s) {
            starts.entry(resource).or_default().push((s, released));
        }
    }
    let mut by_sensor: HashMap<i32, Vec<(i64, bool)>> = HashMap::new();
    for (device, ts, v) in samples {
        by_sensor.entry(device).or_default().push((ts, v > 0.5));
    }
    let mut occupied: HashMap<&str, Vec<(i64, i64)>> = HashMap::new();
    for (num, (resource, hold)) in &sensors {
        let s = by_sensor.get(num).map(Vec::as_slice).unwrap_or(&[]);
        occupied
            .entry(resource.as_str())
            .or_default()
            .extend(occupied_spans(None, s, f_ms, t_ms, *hold));
    }
    let sums = |resource: &str, a: i64, b: i64| -> Sums {
        let bk = merge_spans(booked.get(resource).cloned().unwrap_or_default());
        let oc = merge_spans(occupied.get(resource).cloned().unwrap_or_default());
        let started: Vec<&(i64, bool)> = starts
            .get(resource)
            .map(|v| v.iter().filter(|(s, _)| (a..b).contains(s)).collect())
            .unwrap_or_default();
        Sums {
            booked: spans_total(&bk, a, b),
            occupied: spans_total(&oc, a, b),
            both: overlap_total(&bk, &oc, a, b),
            bookings: started.len() as u32,
            no_shows: started.iter().filter(|(_, r)| *r).count() as u32,
        }
    };
    let mut totals = Sums::default();
    let mut items = Vec::new();
    match by {
        By::Resource | By::Zone => {
            let mut groups: BTreeMap<String, (String, Sums)> = BTreeMap::new();
            for r in &site.resources {
                let s = sums(&r.resource.id, f_ms, t_ms);
                totals.add(s);
                let (key, name) = if by == By::Resource {
                    (r.resource.id.clone(), r.resource.name.clone())
                } else {
                    (r.zone.id.clone(), r.zone.name.clone())
                };
                groups
                    .entry(key)
                    .or_insert_with(|| (name, Sums::default()))
                    .1
                    .add(s);
            }
            items = groups.into_iter().map(|(k, (n, s))| s.item(k, n)).collect();
        }
        By::Day => {
            for (day, a, b) in local_days(from, to, tz) {
                let mut d = Sums::default();
                for r in &site.resources {
                    d.add(sums(&r.resource.id, a, b));
                }
                totals.add(d);
                items.push(d.item(day.clone(), day));
            }
        }
    }
    Ok(Utilisation {
        site_id: site.site.id.clone(),
        from: utc_text(from),
        to: utc_text(to),
        from_local: ts_local(f_ms, tz),
        to_local: ts_local(t_ms, tz),
        timezone: tz.name().to_string(),
        by: match by {
            By::Resource => "resource",
            By::Zone => "zone",
            By::Day => "day",
        }
        .into(),
        items,
        totals: totals.item("total".into(), site.site.name.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveTime, TimeZone};

    #[test]
    fn local_days_are_cut_at_local_midnight_with_dst() {
        let tz: Tz = "Europe/Rome".parse().unwrap();
        let from = tz
            .from_local_datetime(
                &chrono::NaiveDate::from_ymd_opt(2026, 10, 24)
                    .unwrap()
                    .and_time(NaiveTime::MIN),
            )
            .unwrap()
            .with_timezone(&Utc);
        let days = local_days(from, from + Duration::days(3), tz);
        assert_eq!(days.len(), 3);
        assert_eq!(days[1].0, "2026-10-25");
        assert_eq!(
            days[1].2 - days[1].1,
            25 * 3_600_000,
            "the fall-back day has 25 hours"
        );
    }
}
