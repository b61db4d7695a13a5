//! Occupancy now, for a site's managers: the presence sensors, the doors and the bookings side
//! by side.

use std::collections::{BTreeMap, HashMap};

use actix_web::{web, HttpResponse};
use chrono::{Duration, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::devices::{managed_site, ts_text};
use super::error::ApiError;
use super::extract::Auth;
use super::state::AppState;
use super::views::{local_text, utc_text};
use crate::db::bookings::{self, BookingFilter};
use crate::db::{access, naive, DbError};
use crate::domain::opening_hours::local_day_start;
use crate::domain::presence;
use crate::domain::telemetry::Metric;
use crate::domain::{BookingStatus, DeviceClass};
use crate::fleet::DeviceState;

/// What a presence sensor says now ([`presence::occupied_now`]): occupied or not, when, and the
/// people it counts.
fn sensed(d: &DeviceState, now_ms: i64) -> Option<(bool, i64, Option<u32>)> {
    let l = d.value(Metric::Occupied)?;
    let occupied =
        presence::occupied_now(d.status, d.report_interval_s, Some((l.value, l.ts)), now_ms)?;
    let people = d.value(Metric::Count).map(|c| c.value.max(0.0) as u32);
    Some((occupied, l.ts, people))
}

#[derive(Serialize, ToSchema)]
pub struct ResourceOccupancy {
    pub resource_id: String,
    pub name: String,
    pub kind: String,
    pub zone_id: String,
    /// What its presence sensor says now; `null` when there is no sensor, or it is offline or
    /// silent.
    pub occupied: Option<bool>,
    pub sensed_at: Option<String>,
    /// People counted by the sensor, where it counts.
    pub people: Option<u32>,
    /// The booking holding the resource now, if any.
    pub booking_id: Option<String>,
    /// `confirmed` or `checked_in`.
    pub booking_status: Option<String>,
    /// Occupied with no booking holding it.
    pub ghost: bool,
}

#[derive(Serialize, ToSchema)]
pub struct ZoneOccupancyNow {
    pub zone_id: String,
    pub name: String,
    pub resources: u32,
    pub sensed: u32,
    pub occupied: u32,
    pub booked: u32,
    pub people: u32,
    /// The last climate mode commanded: `comfort`, `precondition` or `eco`.
    pub climate_mode: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SiteOccupancy {
    pub site_id: String,
    pub at: String,
    pub at_local: String,
    pub timezone: String,
    /// People on site by the sensors: counted where sensors count, one per occupied resource
    /// otherwise.
    pub people: u32,
    pub occupied_resources: u32,
    pub sensed_resources: u32,
    pub booked_resources: u32,
    pub checked_in_bookings: u32,
    /// Occupied resources that no booking holds.
    pub ghost_resources: u32,
    /// Doors opened since the site's local midnight.
    pub admitted_today: i64,
    pub zones: Vec<ZoneOccupancyNow>,
    pub resources: Vec<ResourceOccupancy>,
}

#[utoipa::path(get, path = "/api/v1/sites/{site_id}/occupancy", tag = "access",
    responses((status = 200, body = SiteOccupancy),
              (status = 401, body = crate::api::error::Problem), (status = 403, body = crate::api::error::Problem),
              (status = 404, body = crate::api::error::Problem)),
    security(("bearer" = [])))]
pub async fn occupancy(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let site = managed_site(&state, &auth.caller, &path)?;
    let now = Utc::now();
    let now_ms = crate::domain::epoch::ms(now);
    let tz = site.tz;
    let midnight = local_day_start(now.with_timezone(&tz).date_naive(), tz);
    let (id, at) = (site.site.id.clone(), naive(now));
    let (held, admitted, climate) = state
        .db
        .run(move |c| {
            let held = bookings::list(
                c,
                &BookingFilter {
                    site_ids: Some(vec![id.clone()]),
                    from: Some(at),
                    to: Some(at + Duration::milliseconds(1)),
                    limit: 10_000,
                    ..Default::default()
                },
            )?;
            let admitted = access::admitted_since(c, &id, naive(midnight))?;
            let climate = access::climate_history(c, &id, at - Duration::days(30), 10_000)?;
            Ok::<_, DbError>((held, admitted, climate))
        })
        .await?;
    let booked: HashMap<&str, (&str, &str)> = held
        .iter()
        .filter(|b| BookingStatus::ACTIVE.contains(&b.status.as_str()))
        .map(|b| (b.resource_id.as_str(), (b.id.as_str(), b.status.as_str())))
        .collect();
    let mut modes: HashMap<&str, &str> = HashMap::new();
    for c in &climate {
        modes.entry(c.zone_id.as_str()).or_insert(c.mode.as_str());
    }
    let sensors: HashMap<String, DeviceState> = state
        .fleet
        .site(&site.site.id)
        .into_iter()
        .filter(|d| d.class == DeviceClass::PresenceSensor)
        .filter_map(|d| d.resource_id.clone().map(|r| (r, d)))
        .collect();
    let mut out = SiteOccupancy {
        site_id: site.site.id.clone(),
        at: utc_text(now),
        at_local: local_text(now, tz),
        timezone: tz.name().to_string(),
        people: 0,
        occupied_resources: 0,
        sensed_resources: 0,
        booked_resources: booked.len() as u32,
        checked_in_bookings: booked
            .values()
            .filter(|(_, s)| *s == BookingStatus::CheckedIn.as_str())
            .count() as u32,
        ghost_resources: 0,
        admitted_today: admitted,
        zones: Vec::new(),
        resources: Vec::new(),
    };
    let mut zones: BTreeMap<String, ZoneOccupancyNow> = BTreeMap::new();
    for r in &site.resources {
        let now_sensed = sensors.get(&r.resource.id).and_then(|d| sensed(d, now_ms));
        let booking = booked.get(r.resource.id.as_str());
        let occupied = now_sensed.map(|s| s.0);
        let people = now_sensed.and_then(|s| s.2);
        let ghost = occupied == Some(true) && booking.is_none();
        let z = zones
            .entry(r.zone.id.clone())
            .or_insert_with(|| ZoneOccupancyNow {
                zone_id: r.zone.id.clone(),
                name: r.zone.name.clone(),
                resources: 0,
                sensed: 0,
                occupied: 0,
                booked: 0,
                people: 0,
                climate_mode: modes.get(r.zone.id.as_str()).map(|m| m.to_string()),
            });
        z.resources += 1;
        if booking.is_some() {
            z.booked += 1;
        }
        if occupied.is_some() {
            z.sensed += 1;
            out.sensed_resources += 1;
        }
        if occupied == Some(true) {
            let n = people.unwrap_or(1).max(1);
            z.occupied += 1;
            z.people += n;
            out.occupied_resources += 1;
            out.people += n;
        }
        if ghost {
            out.ghost_resources += 1;
        }
        out.resources.push(ResourceOccupancy {
            resource_id: r.resource.id.clone(),
            name: r.resource.name.clone(),
            kind: r.kind.as_str().to_string(),
            zone_id: r.zone.id.clone(),
            occupied,
            sensed_at: now_sensed.map(|s| ts_text(s.1)),
            people,
            booking_id: booking.map(|b| b.0.to_string()),
            booking_status: booking.map(|b| b.1.to_string()),
            ghost,
        });
    }
    out.zones = zones.into_values().collect();
    Ok(HttpResponse::Ok().json(out))
}
