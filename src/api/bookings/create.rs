use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{booking_out, booking_url, mail_context, now, BookingOut};
use crate::api::auth::queued;
use crate::api::error::ApiError;
use crate::api::extract::{Auth, Errors, Json};
use crate::api::idempotency::{self, Created};
use crate::api::state::AppState;
use crate::api::views::{local_text, utc_text};
use crate::db::bookings::{self as store, AllowanceCharge};
use crate::db::models::{Booking, Organization, Resource, User, Zone};
use crate::db::network::{self, SiteEntry};
use crate::db::{naive, users, utc, DbError};
use crate::domain::access::Caller;
use crate::domain::policy::{self, BookingContext};
use crate::domain::{BookingStatus, FieldError, ResourceKind, TimeRange};
use crate::email::compose::{self, BookingEvent};

#[derive(Deserialize, ToSchema)]
pub struct BookingRequest {
    pub resource_id: String,
    /// RFC 3339 with an offset.
    pub starts_at: String,
    pub ends_at: String,
    pub attendees: Option<i32>,
    pub note: Option<String>,
}

/// A request that passed every check that needs no lock.
struct Checked {
    range: TimeRange,
    attendees: i32,
    note: Option<String>,
    resource: Resource,
    zone: Zone,
    site: Arc<SiteEntry>,
    user: User,
    charge: Option<AllowanceCharge>,
    allowance_used: Option<i32>,
}

/// Parses and checks a booking request against the resource, the site and the policy.
/// Errors that do not depend on the caller are all reported together.
async fn check(
    state: &AppState,
    caller: &Caller,
    req: BookingRequest,
) -> Result<Result<Checked, Vec<FieldError>>, ApiError> {
    let mut errors = Errors::default();
    let range = errors.take_all(TimeRange::parse(
        &req.starts_at,
        &req.ends_at,
        "starts_at",
        "ends_at",
    ));
    if req.resource_id.trim().is_empty() {
        errors.push(FieldError::new("resource_id", "is required"));
    }
    if req.note.as_ref().is_some_and(|n| n.chars().count() > 1000) {
        errors.push(FieldError::new("note", "must be at most 1000 characters"));
    }
    let (resource_id, user_id, org_id) = (
        req.resource_id.clone(),
        caller.user_id.clone(),
        caller.organization_id.clone(),
    );
    let lookup = state
        .db
        .run(move |c| {
            let resource = network::resource(c, &resource_id)
                .map(Some)
                .or_else(|e| match e {
                    DbError::NotFound => Ok(None),
                    other => Err(other),
                })?;
            let user = users::by_id(c, &user_id)?.ok_or(DbError::NotFound)?;
            let org: Option<Organization> = match &org_id {
                Some(o) => users::organization(c, o)?,
                None => None,
            };
            Ok::<_, DbError>((resource, user, org))
        })
        .await?;
    let (resource, user, org) = lookup;
    let Some((resource, zone)) = resource else {
        errors.push(FieldError::new("resource_id", "no such resource"));
        return Ok(Err(errors.into_vec()));
    };
    let site = super::site_of(state, &resource.site_id)?;
    let Some(range) = range else {
        return Ok(Err(errors.into_vec()));
    };
    let kind: ResourceKind = resource
        .kind
        .parse()
        .map_err(|_| ApiError::Internal(format!("resource {} has an unknown kind", resource.id)))?;
    let attendees = req.attendees.unwrap_or(1);
    let closed = |d| site.closure(d).is_some();
    let ctx = BookingContext {
        kind,
        capacity: resource.capacity,
        hours: &site.hours,
        timezone: site.tz,
        closed: &closed,
        now: now(),
    };
    errors.extend(policy::check_booking(&ctx, &range, attendees));
    let minutes = policy::charged_minutes(&range);
    let month = policy::allowance_month(&range, site.tz);
    let (charge, allowance_used) = match org {
        Some(o) => {
            let (oid, m) = (o.id.clone(), month.clone());
            let used = state
                .db
                .run(move |c| store::allowance_used(c, &oid, &m))
                .await?;
            if used + minutes > o.monthly_allowance_minutes {
                errors.push(FieldError::new(
                    "ends_at",
                    format!(
                        "the organization's allowance for {month} would be exceeded: {used} of {} minutes used, this booking needs {minutes}",
                        o.monthly_allowance_minutes
                    ),
                ));
            }
            let charge = AllowanceCharge {
                organization_id: o.id,
                month,
                minutes,
                limit: o.monthly_allowance_minutes,
            };
            (Some(charge), Some(used))
        }
        None => (None, None),
    };
    let errors = errors.into_vec();
    if !errors.is_empty() {
        return Ok(Err(errors));
    }
    Ok(Ok(Checked {
        range,
        attendees,
        note: req
            .note
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty()),
        resource,
        zone,
        site,
        user,
        charge,
        allowance_used,
    }))
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
            let checked = check(&st, &caller, request)
                .await?
                .map_err(ApiError::Validation)?;
            let booking = store_booking(&st, &caller, checked).await?;
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

async fn store_booking(
    state: &AppState,
    caller: &Caller,
    c: Checked,
) -> Result<BookingOut, ApiError> {
    let now = naive(now());
    let booking = Booking {
        id: uuid::Uuid::now_v7().to_string(),
        resource_id: c.resource.id.clone(),
        site_id: c.resource.site_id.clone(),
        user_id: caller.user_id.clone(),
        organization_id: caller.organization_id.clone(),
        starts_at: naive(c.range.start()),
        ends_at: naive(c.range.end()),
        status: BookingStatus::Confirmed.as_str().to_string(),
        attendees: c.attendees,
        note: c.note,
        charged_minutes: c.charge.as_ref().map_or(0, |ch| ch.minutes),
        allowance_month: c.charge.as_ref().map(|ch| ch.month.clone()),
        sequence: 0,
        created_at: now,
        updated_at: now,
        checked_in_at: None,
        cancelled_at: None,
    };
    let url = booking_url(state, &booking.id);
    let mail = compose::booking(
        BookingEvent::Confirmed,
        &mail_context(
            state,
            &booking,
            &c.resource.name,
            &c.site,
            (&c.user.name, &c.user.email),
            &url,
        ),
    );
    let row = queued("booking_confirmed", &mail)?;
    let (b, charge) = (booking.clone(), c.charge.clone());
    let stored = state
        .db
        .run(move |conn| store::create(conn, &b, charge.as_ref(), &row))
        .await;
    if let Err(crate::db::bookings::BookingWriteError::Overlap) = &stored {
        state
            .metrics
            .events
            .booking_conflicts
            .fetch_add(1, Ordering::Relaxed);
    }
    stored?;
    state
        .metrics
        .events
        .bookings_created
        .fetch_add(1, Ordering::Relaxed);
    state.mail_waker.notify_one();
    Ok(booking_out((booking, c.resource, c.zone), &c.site))
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
    let (start, end) = (request.starts_at.clone(), request.ends_at.clone());
    let checked = check(&state, &auth.caller, request).await?;
    let (range, errors, tz, allowance) = match &checked {
        Ok(c) => (Some(c.range), Vec::new(), Some(c.site.tz), allowance_use(c)),
        Err(errors) => {
            if errors.iter().any(|e| e.field == "resource_id") {
                return Err(ApiError::Validation(errors.clone()));
            }
            let range = TimeRange::parse(&start, &end, "starts_at", "ends_at").ok();
            let site = {
                let rid = resource_id.clone();
                let found = state.db.run(move |c| network::resource(c, &rid)).await?;
                super::site_of(&state, &found.0.site_id)?
            };
            (range, errors.clone(), Some(site.tz), None)
        }
    };
    let conflicts = match range {
        Some(r) => {
            let rid = resource_id.clone();
            state
                .db
                .run(move |c| store::conflicts(c, &rid, naive(r.start()), naive(r.end())))
                .await?
                .into_iter()
                .map(|(_, s, e)| Conflict {
                    starts_at: utc_text(utc(s)),
                    ends_at: utc_text(utc(e)),
                })
                .collect()
        }
        None => Vec::new(),
    };
    let outcome = if !errors.is_empty() {
        422
    } else if !conflicts.is_empty() {
        409
    } else {
        201
    };
    Ok(HttpResponse::Ok().json(Quote {
        bookable: outcome == 201,
        outcome,
        resource_id,
        starts_at: range.map(|r| utc_text(r.start())),
        ends_at: range.map(|r| utc_text(r.end())),
        starts_at_local: range.zip(tz).map(|(r, tz)| local_text(r.start(), tz)),
        ends_at_local: range.zip(tz).map(|(r, tz)| local_text(r.end(), tz)),
        timezone: tz.map(|t| t.name().to_string()),
        duration_minutes: range.map(|r| r.duration().num_minutes()),
        conflicts,
        errors,
        allowance,
    }))
}

fn allowance_use(c: &Checked) -> Option<AllowanceUse> {
    let charge = c.charge.as_ref()?;
    let used = c.allowance_used.unwrap_or(0);
    Some(AllowanceUse {
        organization_id: charge.organization_id.clone(),
        month: charge.month.clone(),
        limit_minutes: charge.limit,
        used_minutes: used,
        this_booking_minutes: charge.minutes,
        remaining_after_minutes: charge.limit - used - charge.minutes,
    })
}
