use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{booking_out, booking_url, env, now, BookingOut};
use crate::api::error::ApiError;
use crate::api::extract::{Auth, Json};
use crate::api::idempotency::{self, Created};
use crate::api::state::AppState;
use crate::api::views::{local_text, utc_text};
use crate::bookings::{self, NewBooking};
use crate::db::utc;
use crate::domain::access::Caller;
use crate::domain::FieldError;

#[derive(Deserialize, ToSchema)]
pub struct BookingRequest {
    pub resource_id: String,
    /// RFC 3339 with an offset.
    pub starts_at: String,
    pub ends_at: String,
    pub attendees: Option<i32>,
    pub note: Option<String>,
    /// For an EV bay: the car's energy target and charging mode.
    pub charging: Option<super::charging::ChargingRequest>,
}

impl From<BookingRequest> for NewBooking {
    fn from(r: BookingRequest) -> Self {
        NewBooking {
            resource_id: r.resource_id,
            starts_at: r.starts_at,
            ends_at: r.ends_at,
            attendees: r.attendees,
            note: r.note,
            charging: r.charging.map(Into::into),
        }
    }
}

#[utoipa::path(post, path = "/api/v1/bookings", tag = "bookings", request_body = BookingRequest,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = BookingOut, headers(("Location" = String))),
              (status = 409, body = crate::api::error::Problem), (status = 422, body = crate::api::error::Problem)),
    security(("bearer" = [])))]
pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    auth: Auth,
    body: Json<BookingRequest>,
) -> Result<HttpResponse, ApiError> {
    let Json(request, digest) = body;
    let caller = auth.caller;
    let st = state.clone();
    idempotency::once(
        &state,
        &req,
        &caller.user_id.clone(),
        &digest,
        || async move {
            let booking = book(&st, &caller, request).await?;
            let location = booking_url(&st, &booking.id);
            Ok(Created {
                status: StatusCode::CREATED,
                body: serde_json::to_value(&booking)
                    .map_err(|e| ApiError::Internal(e.to_string()))?,
                location: Some(location),
            })
        },
    )
    .await
}

/// Checks and stores one booking for `caller`: `POST /bookings` without its HTTP envelope.
pub async fn book(
    state: &AppState,
    caller: &Caller,
    request: BookingRequest,
) -> Result<BookingOut, ApiError> {
    let dir = state.directory();
    let created = bookings::create(env(state, &dir), caller, request.into()).await?;
    let mut out = booking_out(created.booking, &created.site, &created.resource);
    out.charging = created.charging;
    Ok(out)
}

#[derive(Serialize, ToSchema)]
pub struct Conflict {
    pub starts_at: String,
    pub ends_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct AllowanceUse {
    pub organization_id: String,
    pub month: String,
    pub limit_minutes: i32,
    pub used_minutes: i32,
    pub this_booking_minutes: i32,
    pub remaining_after_minutes: i32,
}

#[derive(Serialize, ToSchema)]
pub struct Quote {
    /// Whether create would succeed now.
    pub bookable: bool,
    /// The status create would answer: 201, 409 or 422.
    pub outcome: u16,
    pub resource_id: String,
    pub starts_at: Option<String>,
    pub ends_at: Option<String>,
    pub starts_at_local: Option<String>,
    pub ends_at_local: Option<String>,
    pub timezone: Option<String>,
    pub duration_minutes: Option<i64>,
    /// Active bookings of the resource that overlap the interval (times only).
    pub conflicts: Vec<Conflict>,
    /// Policy violations, each naming its field.
    pub errors: Vec<FieldError>,
    pub allowance: Option<AllowanceUse>,
}

#[utoipa::path(post, path = "/api/v1/bookings/quote", tag = "bookings", request_body = BookingRequest,
    responses((status = 200, body = Quote), (status = 400, body = crate::api::error::Problem),
              (status = 422, body = crate::api::error::Problem)),
    security(("bearer" = [])))]
pub async fn quote(
    state: web::Data<AppState>,
    auth: Auth,
    body: Json<BookingRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = body.0;
    let resource_id = request.resource_id.clone();
    let dir = state.directory();
    let q = bookings::quote(&state.db, &dir, &auth.caller, &request.into(), now()).await?;
    let (tz, range, outcome) = (q.target.site.tz, q.range, q.outcome());
    let allowance = q.allowance.map(|a| AllowanceUse {
        remaining_after_minutes: a.limit_minutes - a.used_minutes - a.this_booking_minutes,
        organization_id: a.organization_id,
        month: a.month,
        limit_minutes: a.limit_minutes,
        used_minutes: a.used_minutes,
        this_booking_minutes: a.this_booking_minutes,
    });
    let conflicts: Vec<Conflict> = q
        .conflicts
        .into_iter()
        .map(|(s, e)| Conflict {
            starts_at: utc_text(utc(s)),
            ends_at: utc_text(utc(e)),
        })
        .collect();
    let errors = q.errors;
    Ok(HttpResponse::Ok().json(Quote {
        bookable: outcome == 201,
        outcome,
        resource_id,
        starts_at: range.map(|r| utc_text(r.start())),
        ends_at: range.map(|r| utc_text(r.end())),
        starts_at_local: range.map(|r| local_text(r.start(), tz)),
        ends_at_local: range.map(|r| local_text(r.end(), tz)),
        timezone: Some(tz.name().to_string()),
        duration_minutes: range.map(|r| r.duration().num_minutes()),
        conflicts,
        errors,
        allowance,
    }))
}
