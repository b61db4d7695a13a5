//! The building devices of a site: the inventory, one device with its latest values, a site's
//! live view, and provisioning. Readings over time are in `api/readings.rs`.
//!
//! Health and latest values come from the in-memory fleet. Only the site's managers and network
//! admins see a site's devices; a device outside the caller's sites answers 404.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{SecondsFormat, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::alarms::{alarm_views, live_of_site, AlarmOut};
use super::error::ApiError;
use super::extract::{Auth, Errors, Json, Query};
use super::idempotency::{self, Created};
use super::sites::site_or_404;
use super::state::AppState;
use super::views::{local_text, utc_text, Page};
use crate::db::network::{Directory, SiteEntry};
use crate::db::telemetry::{self as store, NewDevice};
use crate::db::{naive, utc, DbError};
use crate::domain::access::Caller;
use crate::domain::epoch::to_utc;
use crate::domain::presence;
use crate::domain::telemetry::{valid_id, Metric};
use crate::domain::{DeviceClass, DeviceStatus, FieldError};
use crate::fleet::DeviceState;
use crate::telemetry::mosquitto::{generate_password, hash_password, TOPIC_ROOT};

/// A reading's instant: whole seconds, or milliseconds when it has them.
pub(super) fn ts_text(ms: i64) -> String {
    to_utc(ms).to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

pub(super) fn ts_local(ms: i64, tz: Tz) -> String {
    to_utc(ms)
        .with_timezone(&tz)
        .to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

/// A device as clients see it.
#[derive(Serialize, ToSchema)]
pub struct DeviceView {
    pub id: String,
    pub site_id: String,
    pub class: DeviceClass,
    pub status: DeviceStatus,
    /// When the service last heard from the device (UTC), and the same in the site's time.
    pub last_seen: Option<String>,
    pub last_seen_local: Option<String>,
    pub status_changed_at: Option<String>,
    pub zone_id: Option<String>,
    pub resource_id: Option<String>,
    pub gateway_id: Option<String>,
    pub model: Option<String>,
    pub firmware: Option<String>,
    pub report_interval_s: i32,
    /// How the service learned of the device: `seed`, `api` or `meta`.
    pub source: String,
    pub created_at: String,
    pub timezone: String,
}

impl DeviceView {
    pub fn new(d: &DeviceState) -> Self {
        DeviceView {
            id: d.id.clone(),
            site_id: d.site_id.clone(),
            class: d.class,
            status: d.status,
            last_seen: d.last_seen_ms.map(ts_text),
            last_seen_local: d.last_seen_ms.map(|t| ts_local(t, d.tz)),
            status_changed_at: d.status_changed_ms.map(ts_text),
            zone_id: d.zone_id.clone(),
            resource_id: d.resource_id.clone(),
            gateway_id: d.gateway_id.clone(),
            model: d.model.clone(),
            firmware: d.firmware.clone(),
            report_interval_s: d.report_interval_s,
            source: d.source.clone(),
            created_at: utc_text(utc(d.created_at)),
            timezone: d.tz.name().to_string(),
        }
    }
}

/// The site, if the caller manages it: 404 for an unknown site, 403 for someone else's.
pub(super) fn managed_site(
    state: &AppState,
    caller: &Caller,
    site_id: &str,
) -> Result<Arc<SiteEntry>, ApiError> {
    let site = site_or_404(state, site_id)?;
    if !caller.manages_site(&site.site.id) {
        return Err(ApiError::Forbidden(
            "only the site's managers and network admins may see its devices".into(),
        ));
    }
    Ok(site)
}

/// The device, if it is at one of the caller's sites; 404 otherwise, so ids reveal nothing.
pub(super) fn visible_device(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<DeviceState, ApiError> {
    match state.fleet.get(id) {
        Some(d) if caller.manages_site(&d.site_id) => Ok(d),
        _ => Err(ApiError::NotFound(format!(
            "no device {id:?} at your sites"
        ))),
    }
}

fn encode_cursor(id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("d:{id}"))
}

fn decode_cursor(c: &str) -> Result<String, FieldError> {
    URL_SAFE_NO_PAD
        .decode(c)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("d:").map(str::to_owned))
        .filter(|id| valid_id(id))
        .ok_or_else(|| FieldError::new("cursor", "is not a cursor returned by this list"))
}

#[utoipa::path(get, path = "/api/v1/sites/{site_id}/devices", tag = "building",
    params(("class" = Option<DeviceClass>, Query), ("status" = Option<DeviceStatus>, Query),
           ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, description = "the site's devices in id order", body = Page<DeviceView>),
              (status = 401, body = crate::api::error::Problem), (status = 403, body = crate::api::error::Problem),
              (status = 404, body = crate::api::error::Problem), (status = 422, body = crate::api::error::Problem)),
    security(("bearer" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let site = managed_site(&state, &auth.caller, &path)?;
    let q = Query::from_request(&req);
    let mut errors = Errors::default();
    let class = q.str("class").and_then(|s| {
        errors.take(
            s.parse::<DeviceClass>()
                .map_err(|e| FieldError::new("class", e)),
        )
    });
    let status = q.str("status").and_then(|s| {
        errors.take(
            s.parse::<DeviceStatus>()
                .map_err(|e| FieldError::new("status", e)),
        )
    });
    let limit = errors.take(q.limit()).unwrap_or(50) as usize;
    let after = q.str("cursor").and_then(|c| errors.take(decode_cursor(c)));
    errors.finish()?;
    let mut matching = state
        .fleet
        .site(&site.site.id)
        .into_iter()
        .filter(|d| after.as_ref().is_none_or(|a| d.id > *a))
        .filter(|d| class.is_none_or(|c| d.class == c))
        .filter(|d| status.is_none_or(|s| d.status == s));
    let items: Vec<DeviceView> = matching
        .by_ref()
        .take(limit)
        .map(|d| DeviceView::new(&d))
        .collect();
    let next_cursor = match (matching.next(), items.last()) {
        (Some(_), Some(last)) => Some(encode_cursor(&last.id)),
        _ => None,
    };
    Ok(HttpResponse::Ok().json(Page { items, next_cursor }))
}

/// A latest value of a device.
#[derive(Serialize, ToSchema)]
pub struct LatestValue {
    pub value: f64,
    /// The unit, empty for counts, flags and codes.
    pub unit: &'static str,
    pub ts: String,
    pub ts_local: String,
}

#[derive(Serialize, ToSchema)]
pub struct DeviceDetail {
    #[serde(flatten)]
    pub device: DeviceView,
    /// The latest value of each metric the device has reported, by metric name.
    pub values: BTreeMap<String, LatestValue>,
    /// The device's live (open or acknowledged) alarms, newest first.
    pub alarms: Vec<AlarmOut>,
}

#[utoipa::path(get, path = "/api/v1/devices/{device_id}", tag = "building",
    responses((status = 200, body = DeviceDetail),
              (status = 401, body = crate::api::error::Problem),
              (status = 404, description = "no such device at the caller's sites", body = crate::api::error::Problem)),
    security(("bearer" = [])))]
pub async fn get(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let d = visible_device(&state, &auth.caller, &path)?;
    let rows: Vec<_> = live_of_site(&state, &d.site_id)
        .await?
        .into_iter()
        .filter(|a| a.device_id == d.id)
        .collect();
    let alarms = alarm_views(&state, rows).await?;
    let values = d
        .latest
        .iter()
        .map(|l| {
            (
                l.metric.name().to_string(),
                LatestValue {
                    value: l.value,
                    unit: l.metric.unit(),
                    ts: ts_text(l.ts),
                    ts_local: ts_local(l.ts, d.tz),
                },
            )
        })
        .collect();
    Ok(HttpResponse::Ok().json(DeviceDetail {
        device: DeviceView::new(&d),
        values,
        alarms,
    }))
}

/// A latest value in the live view.
#[derive(Serialize, ToSchema)]
pub struct LiveValue {
    pub value: f64,
    pub ts: String,
}

#[derive(Serialize, ToSchema)]
pub struct LiveDevice {
    pub id: String,
    pub class: DeviceClass,
    pub zone_id: Option<String>,
    pub resource_id: Option<String>,
    pub status: DeviceStatus,
    pub last_seen: Option<String>,
    /// Latest value of each metric, by metric name.
    pub values: BTreeMap<String, LiveValue>,
}

#[derive(Serialize, ToSchema)]
pub struct ZoneOccupancy {
    pub zone_id: String,
    /// The zone's presence sensors reporting someone there.
    pub occupied: u32,
    /// The zone's presence sensors whose state is known (reported, and not offline).
    pub sensors: u32,
    /// People counted by the zone's sensors that report a count, plus one for each other
    /// occupied sensor; present when a sensor of the zone reports a count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub people_estimate: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct Occupancy {
    /// Resources whose presence sensor reports them occupied.
    pub occupied_resources: u32,
    /// Resources with a presence sensor whose state is known (reported, and not offline).
    pub sensed_resources: u32,
    /// Every zone with a presence sensor, in id order.
    pub zones: Vec<ZoneOccupancy>,
}

#[derive(Serialize, ToSchema)]
pub struct LiveView {
    pub site_id: String,
    pub at: String,
    pub at_local: String,
    pub timezone: String,
    pub devices: Vec<LiveDevice>,
    pub occupancy: Occupancy,
    /// The site's live (open or acknowledged) alarms, newest first.
    pub alarms: Vec<AlarmOut>,
}

/// Occupancy from the presence sensors' latest `occupied` (and `count`) values, those that
/// still hold at `now_ms` ([`presence::occupied_now`]).
fn occupancy(devices: &[DeviceState], now_ms: i64) -> Occupancy {
    #[derive(Default)]
    struct Zone {
        occupied: u32,
        sensors: u32,
        counted: bool,
        people: u32,
    }
    let mut zones: BTreeMap<String, Zone> = BTreeMap::new();
    let mut sensed: BTreeSet<&str> = BTreeSet::new();
    let mut occupied: BTreeSet<&str> = BTreeSet::new();
    for d in devices
        .iter()
        .filter(|d| d.class == DeviceClass::PresenceSensor)
    {
        let zone = d
            .zone_id
            .as_ref()
            .map(|z| zones.entry(z.clone()).or_default());
        let latest = d.value(Metric::Occupied).map(|l| (l.value, l.ts));
        let known = presence::occupied_now(d.status, d.report_interval_s, latest, now_ms);
        let (Some(is_occupied), Some(zone)) = (known, zone) else {
            if let (Some(is_occupied), Some(r)) = (known, d.resource_id.as_deref()) {
                sensed.insert(r);
                if is_occupied {
                    occupied.insert(r);
                }
            }
            continue;
        };
        zone.sensors += 1;
        if let Some(count) = d.value(Metric::Count) {
            zone.counted = true;
            zone.people += count.value.max(0.0) as u32;
        } else if is_occupied {
            zone.people += 1;
        }
        if is_occupied {
            zone.occupied += 1;
        }
        if let Some(r) = d.resource_id.as_deref() {
            sensed.insert(r);
            if is_occupied {
                occupied.insert(r);
            }
        }
    }
    Occupancy {
        occupied_resources: occupied.len() as u32,
        sensed_resources: sensed.len() as u32,
        zones: zones
            .into_iter()
            .map(|(zone_id, z)| ZoneOccupancy {
                zone_id,
                occupied: z.occupied,
                sensors: z.sensors,
                people_estimate: z.counted.then_some(z.people),
            })
            .collect(),
    }
}

#[utoipa::path(get, path = "/api/v1/sites/{site_id}/live", tag = "building",
    responses((status = 200, body = LiveView),
              (status = 401, body = crate::api::error::Problem), (status = 403, body = crate::api::error::Problem),
              (status = 404, body = crate::api::error::Problem)),
    security(("bearer" = [])))]
pub async fn live(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let site = managed_site(&state, &auth.caller, &path)?;
    let devices = state.fleet.site(&site.site.id);
    let rows = live_of_site(&state, &site.site.id).await?;
    let alarms = alarm_views(&state, rows).await?;
    let now = Utc::now();
    Ok(HttpResponse::Ok().json(LiveView {
        site_id: site.site.id.clone(),
        at: utc_text(now),
        at_local: local_text(now, site.tz),
        timezone: site.tz.name().to_string(),
        occupancy: occupancy(&devices, crate::domain::epoch::ms(now)),
        devices: devices
            .iter()
            .map(|d| LiveDevice {
                id: d.id.clone(),
                class: d.class,
                zone_id: d.zone_id.clone(),
                resource_id: d.resource_id.clone(),
                status: d.status,
                last_seen: d.last_seen_ms.map(ts_text),
                values: d
                    .latest
                    .iter()
                    .map(|l| {
                        (
                            l.metric.name().to_string(),
                            LiveValue {
                                value: l.value,
                                ts: ts_text(l.ts),
                            },
                        )
                    })
                    .collect(),
            })
            .collect(),
        alarms,
    }))
}

#[derive(Deserialize, ToSchema)]
pub struct ProvisionRequest {
    /// `[a-z0-9_-]{1,128}`, unique in the network; also the device's MQTT username and the
    /// `{device}` level of its topics.
    pub id: String,
    #[schema(value_type = DeviceClass)]
    pub class: String,
    /// A zone of this site; defaults to the resource's zone.
    pub zone_id: Option<String>,
    /// A resource of this site.
    pub resource_id: Option<String>,
    /// A gateway device of this site the device talks through.
    pub gateway_id: Option<String>,
    pub model: Option<String>,
    pub firmware: Option<String>,
    /// 1 to 86400; defaults to the class's interval.
    pub report_interval_s: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct MqttTopics {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

/// The device's broker identity. The password is shown in this response only; the service
/// keeps no copy of it outside this response.
#[derive(Serialize, ToSchema)]
pub struct MqttCredentials {
    pub username: String,
    pub password: String,
    /// The password as a Mosquitto `$7$` hash, for the broker's password file
    /// (`username:password_hash`).
    pub password_hash: String,
    pub topics: MqttTopics,
}

#[derive(Serialize, ToSchema)]
pub struct ProvisionedDevice {
    #[serde(flatten)]
    pub device: DeviceView,
    pub mqtt: MqttCredentials,
}

/// The topics of the contract a device may publish and subscribe to; a gateway speaks for every
/// device of its site.
fn topics(site_id: &str, device_id: &str, gateway: bool) -> MqttTopics {
    let base = format!(
        "{TOPIC_ROOT}/{site_id}/{}",
        if gateway { "+" } else { device_id }
    );
    MqttTopics {
        publish: ["status", "meta", "tele/+", "evt/+", "cmd/+/res"]
            .iter()
            .map(|s| format!("{base}/{s}"))
            .collect(),
        subscribe: vec![format!("{base}/cmd/+")],
    }
}

fn text_field(errors: &mut Errors, name: &str, value: &Option<String>) {
    if value
        .as_ref()
        .is_some_and(|v| v.trim().is_empty() || v.chars().count() > 64)
    {
        errors.push(FieldError::new(name, "must be 1 to 64 characters"));
    }
}

/// Checks a provisioning request against the site and the directory; `site_gateway` tells
/// whether an id is a gateway device of the site. Shared by the API and `spazi device add`.
pub fn check(
    dir: &Directory,
    site: &SiteEntry,
    site_gateway: impl Fn(&str) -> bool,
    req: &ProvisionRequest,
    source: &str,
) -> Result<NewDevice, ApiError> {
    let site_id = &site.site.id;
    let mut errors = Errors::default();
    if !valid_id(&req.id) {
        errors.push(FieldError::new(
            "id",
            "must be 1 to 128 characters of a-z, 0-9, '-' and '_'",
        ));
    }
    let class = errors.take(
        req.class
            .parse::<DeviceClass>()
            .map_err(|e| FieldError::new("class", e)),
    );
    let resource = match &req.resource_id {
        None => None,
        Some(r) => match dir.resource(r) {
            Some(e) if e.resource.site_id == *site_id => Some(e.clone()),
            _ => {
                errors.push(FieldError::new(
                    "resource_id",
                    format!("no resource {r:?} at site {site_id}"),
                ));
                None
            }
        },
    };
    let zone_id = match (&req.zone_id, &resource) {
        (Some(z), _) if !site.resources.iter().any(|r| r.zone.id == *z) => {
            errors.push(FieldError::new(
                "zone_id",
                format!("no zone {z:?} at site {site_id}"),
            ));
            None
        }
        (Some(z), Some(r)) if r.zone.id != *z => {
            errors.push(FieldError::new(
                "zone_id",
                format!("resource {} is in zone {}", r.resource.id, r.zone.id),
            ));
            None
        }
        (Some(z), _) => Some(z.clone()),
        (None, Some(r)) => Some(r.zone.id.clone()),
        (None, None) => None,
    };
    match (&req.gateway_id, class) {
        (Some(_), Some(DeviceClass::Gateway)) => errors.push(FieldError::new(
            "gateway_id",
            "a gateway does not connect through another gateway",
        )),
        (Some(g), _) => {
            if !site_gateway(g) {
                errors.push(FieldError::new(
                    "gateway_id",
                    format!("must be a gateway device of site {site_id}"),
                ));
            }
        }
        (None, _) => {}
    }
    text_field(&mut errors, "model", &req.model);
    text_field(&mut errors, "firmware", &req.firmware);
    if req
        .report_interval_s
        .is_some_and(|n| !(1..=86_400).contains(&n))
    {
        errors.push(FieldError::new(
            "report_interval_s",
            "must be an integer from 1 to 86400",
        ));
    }
    errors.finish()?;
    let class = class.ok_or_else(|| ApiError::Internal("validated class missing".into()))?;
    Ok(NewDevice {
        id: req.id.clone(),
        site_id: site_id.clone(),
        class: class.as_str().to_string(),
        zone_id,
        resource_id: resource.map(|r| r.resource.id.clone()),
        gateway_id: req.gateway_id.clone(),
        model: req.model.as_ref().map(|m| m.trim().to_string()),
        firmware: req.firmware.as_ref().map(|f| f.trim().to_string()),
        report_interval_s: req
            .report_interval_s
            .map_or(class.report_interval_s(), |n| n as i32),
        status: DeviceStatus::Unknown.as_str().to_string(),
        source: source.to_string(),
        created_at: naive(Utc::now()),
    })
}

fn taken(id: &str) -> ApiError {
    ApiError::Conflict {
        code: "device_exists",
        detail: format!("a device with id {id:?} already exists"),
    }
}

/// Stores a new device, adds it to the fleet, and makes its broker credentials.
async fn provision_device(
    state: &AppState,
    site: &SiteEntry,
    req: ProvisionRequest,
) -> Result<ProvisionedDevice, ApiError> {
    let site_id = site.site.id.clone();
    let new = check(
        &state.directory(),
        site,
        |g| {
            state
                .fleet
                .get(g)
                .is_some_and(|d| d.site_id == site_id && d.class == DeviceClass::Gateway)
        },
        &req,
        "api",
    )?;
    if state.fleet.get(&new.id).is_some() {
        return Err(taken(&new.id));
    }
    let id = new.id.clone();
    let row = match state.db.run(move |c| store::insert_device(c, &new)).await {
        Err(DbError::Duplicate) => return Err(taken(&id)),
        other => other?,
    };
    state.fleet.upsert(&row, site.tz);
    let device = state
        .fleet
        .get(&row.id)
        .ok_or_else(|| ApiError::Internal("provisioned device missing from the fleet".into()))?;
    let password = generate_password();
    let password_hash = hash_password(&password);
    Ok(ProvisionedDevice {
        mqtt: MqttCredentials {
            username: device.id.clone(),
            password,
            password_hash,
            topics: topics(
                &device.site_id,
                &device.id,
                device.class == DeviceClass::Gateway,
            ),
        },
        device: DeviceView::new(&device),
    })
}

pub fn device_url(state: &AppState, id: &str) -> String {
    format!("{}/api/v1/devices/{id}", state.config.public_url)
}

#[utoipa::path(post, path = "/api/v1/sites/{site_id}/devices", tag = "building", request_body = ProvisionRequest,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = ProvisionedDevice, headers(("Location" = String))),
              (status = 401, body = crate::api::error::Problem), (status = 403, body = crate::api::error::Problem),
              (status = 404, body = crate::api::error::Problem),
              (status = 409, description = "the id is taken", body = crate::api::error::Problem),
              (status = 422, body = crate::api::error::Problem)),
    security(("bearer" = [])))]
pub async fn provision(
    state: web::Data<AppState>,
    req: HttpRequest,
    auth: Auth,
    path: web::Path<String>,
    body: Json<ProvisionRequest>,
) -> Result<HttpResponse, ApiError> {
    let site = site_or_404(&state, &path)?;
    if !auth.caller.manages_site(&site.site.id) {
        return Err(ApiError::Forbidden(
            "only the site's managers and network admins may provision its devices".into(),
        ));
    }
    let Json(request, digest) = body;
    let st = state.clone();
    idempotency::once(&state, &req, &auth.caller.user_id, &digest, || async move {
        let out = provision_device(&st, &site, request).await?;
        let location = device_url(&st, &out.device.id);
        Ok(Created {
            status: StatusCode::CREATED,
            body: serde_json::to_value(&out).map_err(|e| ApiError::Internal(e.to_string()))?,
            location: Some(location),
        })
    })
    .await
}
