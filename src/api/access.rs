//! Door access: a booking's credential (for its owner only) and a site's access log (for the
//! site's managers).

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{Duration, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::bookings::read::visible;
use super::devices::managed_site;
use super::error::ApiError;
use super::extract::{Auth, Errors, Query};
use super::state::AppState;
use super::views::{local_text, time_cursor, utc_text, Page};
use crate::db::access::{self as store, AccessLogRow, CredentialRow};
use crate::db::models::Booking;
use crate::db::{naive, utc};
use crate::domain::access_control::qr_svg;
use crate::domain::{BookingStatus, DeviceClass, FieldError};

/// A booking's door credential.
#[derive(Serialize, ToSchema)]
pub struct AccessOut {
    pub booking_id: String,
    /// `active` (opens doors now), `not_yet_valid`, `expired`, or `revoked` (the booking was
    /// cancelled or released).
    pub status: String,
    /// The QR token (`spz1.` and 32 hex digits); the QR code encodes exactly this.
    pub token: String,
    /// The 6-digit PIN for the readers' keypads.
    pub pin: String,
    /// The credential's half-open window: from 15 minutes before the booking to 15 after.
    pub valid_from: String,
    pub valid_until: String,
    pub valid_from_local: String,
    pub valid_until_local: String,
    pub timezone: String,
    pub site_id: String,
    pub zone_id: String,
    /// The doors it opens: the site's entrance and its zone's door.
    pub doors: Vec<String>,
    /// The QR code as SVG.
    pub qr_url: String,
}

/// The booking and its credential, if the caller owns the booking: 404 for a booking the caller
/// cannot see, 403 for one they can see but do not own (a credential is personal).
async fn owned_credential(
    state: &AppState,
    caller: &crate::domain::access::Caller,
    id: &str,
) -> Result<(Booking, CredentialRow), ApiError> {
    let b = visible(state, caller, id).await?;
    if b.user_id != caller.user_id {
        return Err(ApiError::Forbidden(
            "a booking's door credential is shown to the member who booked only".into(),
        ));
    }
    let key = b.id.clone();
    let found = state.db.run(move |c| store::credential(c, &key)).await?;
    match found {
        Some(cred) => Ok((b, cred)),
        None => Err(ApiError::NotFound(format!(
            "booking {:?} has no door credential",
            b.id
        ))),
    }
}

#[utoipa::path(get, path = "/api/v1/bookings/{booking_id}/access", tag = "access",
    responses((status = 200, body = AccessOut),
              (status = 401, body = crate::api::error::Problem),
              (status = 403, description = "the caller sees the booking but does not own it", body = crate::api::error::Problem),
              (status = 404, body = crate::api::error::Problem)),
    security(("bearer" = [])))]
pub async fn access(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (b, cred) = owned_credential(&state, &auth.caller, &path).await?;
    let dir = state.directory();
    let site = dir
        .get(&b.site_id)
        .ok_or_else(|| ApiError::Internal(format!("booking {} has no site", b.id)))?;
    let zone_id = dir
        .resource(&b.resource_id)
        .map(|r| r.zone.id.clone())
        .unwrap_or_default();
    let now = naive(Utc::now());
    let status = if b.status == BookingStatus::Cancelled || b.status == BookingStatus::Released {
        "revoked"
    } else if now < cred.valid_from {
        "not_yet_valid"
    } else if now >= cred.valid_until {
        "expired"
    } else {
        "active"
    };
    let mut doors: Vec<String> = state
        .fleet
        .site(&b.site_id)
        .into_iter()
        .filter(|d| {
            d.class == DeviceClass::DoorReader && d.zone_id.as_deref().is_none_or(|z| z == zone_id)
        })
        .map(|d| d.id)
        .collect();
    doors.sort();
    let tz = site.tz;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(AccessOut {
            qr_url: format!("/api/v1/bookings/{}/access/qr", b.id),
            booking_id: b.id,
            status: status.into(),
            token: cred.token,
            pin: cred.pin,
            valid_from: utc_text(utc(cred.valid_from)),
            valid_until: utc_text(utc(cred.valid_until)),
            valid_from_local: local_text(utc(cred.valid_from), tz),
            valid_until_local: local_text(utc(cred.valid_until), tz),
            timezone: tz.name().to_string(),
            site_id: b.site_id,
            zone_id,
            doors,
        }))
}

#[utoipa::path(get, path = "/api/v1/bookings/{booking_id}/access/qr", tag = "access",
    responses((status = 200, description = "the QR code of the booking's token", content_type = "image/svg+xml", body = String),
              (status = 401, body = crate::api::error::Problem),
              (status = 403, body = crate::api::error::Problem),
              (status = 404, body = crate::api::error::Problem)),
    security(("bearer" = [])))]
pub async fn qr(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (_, cred) = owned_credential(&state, &auth.caller, &path).await?;
    Ok(HttpResponse::Ok()
        .content_type("image/svg+xml")
        .insert_header(("Cache-Control", "no-store"))
        .body(qr_svg(&cred.token)))
}

/// One door decision.
#[derive(Serialize, ToSchema)]
pub struct AccessLogEntry {
    pub id: String,
    pub at: String,
    pub at_local: String,
    pub timezone: String,
    pub door_id: String,
    /// The zone the door closes; `null` for the entrance.
    pub zone_id: Option<String>,
    /// `granted` or `denied`.
    pub decision: String,
    /// Why a scan was denied: `malformed`, `replayed`, `unknown_credential`, `wrong_site`,
    /// `wrong_zone`, `not_yet_valid`, `expired`, `cancelled` or `released`.
    pub reason: Option<String>,
    /// SHA-256 of the credential presented (never the credential); `null` once anonymised.
    pub credential_sha256: Option<String>,
    pub booking_id: Option<String>,
    pub user_id: Option<String>,
    pub badge_seq: Option<i64>,
    /// The door's own timestamp of the scan.
    pub badge_ts: Option<String>,
    /// Scan received to answer queued, in microseconds.
    pub latency_us: i64,
    /// The answer's nonce (`cmd/unlock` or `cmd/deny`).
    pub nonce: Option<String>,
    /// Personal fields cleared after the retention period.
    pub anonymised: bool,
}

fn entry(r: AccessLogRow, tz: chrono_tz::Tz) -> AccessLogEntry {
    AccessLogEntry {
        at: utc_text(utc(r.at)),
        at_local: local_text(utc(r.at), tz),
        timezone: tz.name().to_string(),
        badge_ts: r.badge_ts.map(|t| utc_text(utc(t))),
        id: r.id,
        door_id: r.door_id,
        zone_id: r.zone_id,
        decision: r.decision,
        reason: r.reason,
        credential_sha256: r.credential_sha256,
        booking_id: r.booking_id,
        user_id: r.user_id,
        badge_seq: r.badge_seq,
        latency_us: r.latency_us,
        nonce: r.nonce,
        anonymised: r.anonymised,
    }
}

#[utoipa::path(get, path = "/api/v1/sites/{site_id}/access-log", tag = "access",
    params(("from" = Option<String>, Query, description = "RFC 3339; default 24 hours before `to`"),
           ("to" = Option<String>, Query, description = "RFC 3339, exclusive; default now"),
           ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, description = "door decisions, oldest first", body = Page<AccessLogEntry>),
              (status = 401, body = crate::api::error::Problem), (status = 403, body = crate::api::error::Problem),
              (status = 404, body = crate::api::error::Problem), (status = 422, body = crate::api::error::Problem)),
    security(("bearer" = [])))]
pub async fn log(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let site = managed_site(&state, &auth.caller, &path)?;
    let q = Query::from_request(&req);
    let mut errors = Errors::default();
    let to = q
        .instant("to")
        .and_then(|r| errors.take(r))
        .unwrap_or_else(Utc::now);
    let from = q
        .instant("from")
        .and_then(|r| errors.take(r))
        .unwrap_or(to - Duration::hours(24));
    let limit = errors.take(q.limit()).unwrap_or(50);
    let after = q
        .str("cursor")
        .and_then(|c| errors.take(time_cursor::decode(c)));
    if errors.is_empty() && from >= to {
        errors.push(FieldError::new("to", "must be after from"));
    }
    errors.finish()?;
    let id = site.site.id.clone();
    let (from, to) = (naive(from), naive(to));
    let mut rows = state
        .db
        .run(move |c| store::log(c, &id, from, to, after, limit + 1))
        .await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| time_cursor::encode(r.at, &r.id))
    } else {
        None
    };
    let items = rows.into_iter().map(|r| entry(r, site.tz)).collect();
    Ok(HttpResponse::Ok().json(Page { items, next_cursor }))
}
