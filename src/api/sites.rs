//! The network: sites, their resources, and availability.

use std::collections::BTreeMap;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{Datelike, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::extract::{Errors, Query};
use super::state::AppState;
use super::views::{offset_cursor, Page, ResourceView};
use crate::db::network::SiteEntry;
use crate::db::{bookings, naive};
use crate::domain::geo::distance_km;
use crate::domain::holidays::national_holidays;
use crate::domain::opening_hours::WeeklyHoursJson;
use crate::domain::{FieldError, ResourceKind, TimeRange};

#[derive(Serialize, ToSchema)]
pub struct SiteSummary {
    pub id: String,
    pub name: String,
    pub comune: String,
    pub istat_code: String,
    pub province: String,
    pub province_code: String,
    pub region: String,
    pub population: i32,
    pub small_town: bool,
    pub latitude: f64,
    pub longitude: f64,
    pub timezone: String,
    pub size: String,
    pub area_m2: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance_km: Option<f64>,
}

impl SiteSummary {
    fn new(e: &SiteEntry, distance_km: Option<f64>) -> Self {
        let s = &e.site;
        SiteSummary {
            id: s.id.clone(),
            name: s.name.clone(),
            comune: s.comune.clone(),
            istat_code: s.istat_code.clone(),
            province: s.province.clone(),
            province_code: s.province_code.clone(),
            region: s.region.clone(),
            population: s.population,
            small_town: s.small_town,
            latitude: s.latitude,
            longitude: s.longitude,
            timezone: s.timezone.clone(),
            size: s.size.clone(),
            area_m2: s.area_m2,
            distance_km: distance_km.map(|d| (d * 10.0).round() / 10.0),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Closure {
    pub date: String,
    pub reason: String,
    /// `national_holiday` or `site`.
    pub kind: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct SiteDetail {
    #[serde(flatten)]
    pub summary: SiteSummary,
    pub address: String,
    pub coordinates: Coordinates,
    /// Weekly opening hours in local time: `{"mon": [["08:00", "20:00"]], ...}`.
    #[schema(value_type = Object)]
    pub opening_hours: WeeklyHoursJson,
    /// Closures of this year and the next: national holidays and the site's own.
    pub closures: Vec<Closure>,
    #[schema(value_type = Object)]
    pub resource_counts: BTreeMap<String, i64>,
}

#[derive(Serialize, ToSchema)]
pub struct Coordinates {
    pub latitude: f64,
    pub longitude: f64,
}

fn parse_near(q: &Query) -> Result<Option<(f64, f64)>, FieldError> {
    let Some(near) = q.str("near") else {
        return Ok(None);
    };
    let bad = || FieldError::new("near", "must be <lat>,<lon> in decimal degrees");
    let (lat, lon) = near.split_once(',').ok_or_else(bad)?;
    let (lat, lon): (f64, f64) = (
        lat.trim().parse().map_err(|_| bad())?,
        lon.trim().parse().map_err(|_| bad())?,
    );
    if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
        return Err(bad());
    }
    Ok(Some((lat, lon)))
}

#[utoipa::path(get, path = "/api/v1/sites", tag = "network",
    params(("region" = Option<String>, Query), ("province" = Option<String>, Query, description = "name or two-letter code"),
           ("small_town" = Option<bool>, Query), ("near" = Option<String>, Query, description = "lat,lon"),
           ("radius_km" = Option<f64>, Query), ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = Page<SiteSummary>), (status = 422, body = super::error::Problem)))]
pub async fn list(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let q = Query::from_request(&req);
    let mut errors = Errors::default();
    let limit = errors.take(q.limit()).unwrap_or(50) as usize;
    let offset = errors
        .take(offset_cursor::decode(q.str("cursor")))
        .unwrap_or(0);
    let small_town = errors
        .take(q.parse::<bool>("small_town", "true or false"))
        .flatten();
    let near = errors.take(parse_near(&q)).flatten();
    let radius = errors
        .take(q.parse::<f64>("radius_km", "a positive number of kilometres"))
        .flatten();
    if radius.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        errors.push(FieldError::new(
            "radius_km",
            "must be a positive number of kilometres",
        ));
    }
    if radius.is_some() && near.is_none() {
        errors.push(FieldError::new("near", "is required with radius_km"));
    }
    errors.finish()?;
    let region = q.str("region").map(str::to_lowercase);
    let province = q.str("province").map(str::to_lowercase);
    let dir = state.directory();
    let mut found: Vec<(&SiteEntry, Option<f64>)> = dir
        .sites
        .iter()
        .map(|e| {
            (
                e.as_ref(),
                near.map(|(lat, lon)| distance_km(lat, lon, e.site.latitude, e.site.longitude)),
            )
        })
        .filter(|(e, d)| {
            region
                .as_deref()
                .is_none_or(|r| e.site.region.to_lowercase() == r)
                && province.as_deref().is_none_or(|p| {
                    e.site.province.to_lowercase() == p || e.site.province_code.to_lowercase() == p
                })
                && small_town.is_none_or(|s| e.site.small_town == s)
                && radius.is_none_or(|r| d.is_some_and(|d| d <= r))
        })
        .collect();
    if near.is_some() {
        found.sort_by(|a, b| a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal));
    }
    let total = found.len();
    let items: Vec<SiteSummary> = found
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|(e, d)| SiteSummary::new(e, d))
        .collect();
    let next = (offset + items.len() < total).then(|| offset_cursor::encode(offset + items.len()));
    Ok(HttpResponse::Ok().json(Page {
        items,
        next_cursor: next,
    }))
}

pub fn site_or_404(state: &AppState, id: &str) -> Result<std::sync::Arc<SiteEntry>, ApiError> {
    state
        .directory()
        .get(id)
        .cloned()
        .ok_or_else(|| ApiError::NotFound(format!("no site with id {id:?}")))
}

#[utoipa::path(get, path = "/api/v1/sites/{site_id}", tag = "network",
    responses((status = 200, body = SiteDetail), (status = 404, body = super::error::Problem)))]
pub async fn get(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let e = site_or_404(&state, &path)?;
    let this_year = Utc::now().with_timezone(&e.tz).year();
    let mut closures: Vec<Closure> = [this_year, this_year + 1]
        .into_iter()
        .flat_map(national_holidays)
        .map(|(d, name)| Closure {
            date: d.to_string(),
            reason: name.to_string(),
            kind: "national_holiday",
        })
        .chain(
            e.closures
                .iter()
                .filter(|(d, _)| d.year() >= this_year)
                .map(|(d, r)| Closure {
                    date: d.to_string(),
                    reason: r.clone(),
                    kind: "site",
                }),
        )
        .collect();
    closures.sort_by(|a, b| a.date.cmp(&b.date));
    Ok(HttpResponse::Ok().json(SiteDetail {
        summary: SiteSummary::new(&e, None),
        address: e.site.address.clone(),
        coordinates: Coordinates {
            latitude: e.site.latitude,
            longitude: e.site.longitude,
        },
        opening_hours: e.hours.to_json(),
        closures,
        resource_counts: e.resource_counts.clone(),
    }))
}

fn parse_kind(q: &Query, required: bool) -> Result<Option<ResourceKind>, FieldError> {
    match q.str("kind") {
        None if required => Err(FieldError::new(
            "kind",
            "is required: desk, meeting_room, office, event_room or ev_bay",
        )),
        None => Ok(None),
        Some(k) => k.parse().map(Some).map_err(|e| FieldError::new("kind", e)),
    }
}

#[utoipa::path(get, path = "/api/v1/sites/{site_id}/resources", tag = "network",
    params(("kind" = Option<ResourceKind>, Query), ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = Page<ResourceView>), (status = 404, body = super::error::Problem)))]
pub async fn resources(
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let e = site_or_404(&state, &path)?;
    let q = Query::from_request(&req);
    let mut errors = Errors::default();
    let kind = errors.take(parse_kind(&q, false)).flatten();
    let limit = errors.take(q.limit()).unwrap_or(50) as usize;
    let offset = errors
        .take(offset_cursor::decode(q.str("cursor")))
        .unwrap_or(0);
    errors.finish()?;
    let matching: Vec<_> = e
        .resources
        .iter()
        .filter(|r| kind.is_none_or(|k| r.kind == k))
        .collect();
    let total = matching.len();
    let items: Vec<ResourceView> = matching
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|r| ResourceView::new(r))
        .collect();
    let next = (offset + items.len() < total).then(|| offset_cursor::encode(offset + items.len()));
    Ok(HttpResponse::Ok().json(Page {
        items,
        next_cursor: next,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct AvailableResource {
    #[serde(flatten)]
    pub resource: ResourceView,
    pub site_name: String,
}

#[derive(Serialize, ToSchema)]
pub struct Availability {
    pub items: Vec<AvailableResource>,
    pub next_cursor: Option<String>,
    pub from: String,
    pub to: String,
    /// Sites searched whose opening hours or closures exclude the interval.
    pub closed_sites: Vec<String>,
}

#[utoipa::path(get, path = "/api/v1/availability", tag = "network",
    params(("site_id" = Option<String>, Query), ("region" = Option<String>, Query), ("kind" = ResourceKind, Query),
           ("from" = String, Query, description = "RFC 3339"), ("to" = String, Query, description = "RFC 3339"),
           ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = Availability), (status = 404, body = super::error::Problem), (status = 422, body = super::error::Problem)))]
pub async fn availability(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let q = Query::from_request(&req);
    let mut errors = Errors::default();
    let kind = errors.take(parse_kind(&q, true)).flatten();
    let limit = errors.take(q.limit()).unwrap_or(50);
    let offset = errors
        .take(offset_cursor::decode(q.str("cursor")))
        .unwrap_or(0);
    let from = match q.instant("from") {
        Some(v) => errors.take(v),
        None => {
            errors.push(FieldError::new("from", "is required (RFC 3339)"));
            None
        }
    };
    let to = match q.instant("to") {
        Some(v) => errors.take(v),
        None => {
            errors.push(FieldError::new("to", "is required (RFC 3339)"));
            None
        }
    };
    let range = match (from, to) {
        (Some(f), Some(t)) => errors.take(TimeRange::new(f, t).map_err(|mut e| {
            e.field = "to".into();
            e.message = "must be after from".into();
            e
        })),
        _ => None,
    };
    let dir = state.directory();
    let sites: Vec<&std::sync::Arc<SiteEntry>> = match (q.str("site_id"), q.str("region")) {
        (Some(_), Some(_)) => {
            errors.push(FieldError::new(
                "region",
                "give either site_id or region, not both",
            ));
            Vec::new()
        }
        (Some(id), None) => match dir.get(id) {
            Some(site) => vec![site],
            None if errors.is_empty() => {
                return Err(ApiError::NotFound(format!("no site with id {id:?}")))
            }
            None => {
                errors.push(FieldError::new("site_id", "no such site"));
                Vec::new()
            }
        },
        (None, Some(region)) => {
            let found: Vec<_> = dir
                .sites
                .iter()
                .filter(|e| e.site.region.eq_ignore_ascii_case(region))
                .collect();
            if found.is_empty() {
                errors.push(FieldError::new("region", "no site in that region"));
            }
            found
        }
        (None, None) => {
            errors.push(FieldError::new("site_id", "site_id or region is required"));
            Vec::new()
        }
    };
    errors.finish()?;
    let (Some(kind), Some(range)) = (kind, range) else {
        return Err(ApiError::Internal("validated parameters missing".into()));
    };
    let (open, closed): (Vec<_>, Vec<_>) = sites
        .into_iter()
        .partition(|e| e.hours.covers(&range, e.tz, |d| e.closure(d).is_some()));
    let open_ids: Vec<String> = open.iter().map(|e| e.site.id.clone()).collect();
    let busy: std::collections::HashSet<String> = if open_ids.is_empty() {
        Default::default()
    } else {
        let (f, t) = (naive(range.start()), naive(range.end()));
        state
            .db
            .run(move |c| bookings::busy_resources(c, &open_ids, f, t))
            .await?
            .into_iter()
            .collect()
    };
    let mut free = open.iter().flat_map(|e| {
        e.resources
            .iter()
            .filter(|r| r.kind == kind && !busy.contains(&r.resource.id))
            .map(move |r| (e, r))
    });
    let items: Vec<AvailableResource> = free
        .by_ref()
        .skip(offset)
        .take(limit as usize)
        .map(|(e, r)| AvailableResource {
            resource: ResourceView::new(r),
            site_name: e.site.name.clone(),
        })
        .collect();
    let more = free.next().is_some();
    let next_cursor = more.then(|| offset_cursor::encode(offset + items.len()));
    Ok(HttpResponse::Ok().json(Availability {
        items,
        next_cursor,
        from: super::views::utc_text(range.start()),
        to: super::views::utc_text(range.end()),
        closed_sites: closed.iter().map(|e| e.site.id.clone()).collect(),
    }))
}
