use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{booking_out, booking_url, now, BookingOut};
use crate::api::error::ApiError;
use crate::api::extract::{Auth, Errors, Json};
use crate::api::idempotency::{self, Created};
use crate::api::state::AppState;
use crate::api::views::{local_text, utc_text};
use crate::db::access::{CredentialRow, NewCredential};
use crate::db::bookings::{self as store, AllowanceCharge, BookingWriteError};
use crate::db::models::{Booking, OutboxRow};
use crate::db::network::{ResourceEntry, SiteEntry};
use crate::db::{naive, utc};
use crate::domain::access::Caller;
use crate::domain::policy::{self, BookingContext};
use crate::domain::{BookingStatus, FieldError, TimeRange};
use crate::email::compose::{self, AccessMail, BookingEvent};
use crate::jobs::release::{booking_mail, organizer_address};

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

/// What is being booked, once the resource is known.
#[derive(Clone)]
struct Target {
    resource: Arc<ResourceEntry>,
    site: Arc<SiteEntry>,
}

/// A request that passed every check that needs no lock.
struct Checked {
    target: Target,
    range: TimeRange,
    attendees: i32,
    note: Option<String>,
    charge: Option<AllowanceCharge>,
    charging: Option<super::charging::ChargingRequest>,
}

/// Parses a booking request and checks it against the resource, the site and the policy, from
/// the in-memory directory alone. Every problem is reported, each naming its field.
fn check(
    state: &AppState,
    caller: &Caller,
    req: BookingRequest,
) -> (Option<Target>, Result<Checked, Vec<FieldError>>) {
    let mut errors = Errors::default();
    let range = errors.take_all(TimeRange::parse(
        &req.starts_at,
        &req.ends_at,
        "starts_at",
        "ends_at",
    ));
    if req.note.as_ref().is_some_and(|n| n.chars().count() > 1000) {
        errors.push(FieldError::new("note", "must be at most 1000 characters"));
    }
    let dir = state.directory();
    let target = dir.resource(req.resource_id.trim()).and_then(|r| {
        dir.get(&r.resource.site_id).map(|site| Target {
            resource: r.clone(),
            site: site.clone(),
        })
    });
    let Some(target) = target else {
        let message = if req.resource_id.trim().is_empty() {
            "is required"
        } else {
            "no such resource"
        };
        errors.push(FieldError::new("resource_id", message));
        return (None, Err(errors.into_vec()));
    };
    let Some(range) = range else {
        return (Some(target), Err(errors.into_vec()));
    };
    let attendees = req.attendees.unwrap_or(1);
    let site = target.site.clone();
    let closed = |d| site.closure(d).is_some();
    let ctx = BookingContext {
        kind: target.resource.kind,
        capacity: target.resource.resource.capacity,
        hours: &site.hours,
        timezone: site.tz,
        closed: &closed,
        now: now(),
    };
    errors.extend(policy::check_booking(&ctx, &range, attendees));
    if let Some(ch) = &req.charging {
        errors.extend(super::charging::validate(ch, target.resource.kind));
    }
    let charge = caller.organization_id.as_ref().map(|o| AllowanceCharge {
        organization_id: o.clone(),
        month: policy::allowance_month(&range, site.tz),
        minutes: policy::charged_minutes(&range),
    });
    let errors = errors.into_vec();
    if !errors.is_empty() {
        return (Some(target), Err(errors));
    }
    let note = req
        .note
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty());
    (
        Some(target.clone()),
        Ok(Checked {
            target,
            range,
            attendees,
            note,
            charge,
            charging: req.charging,
        }),
    )
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
    let checked = check(state, caller, request)
        .1
        .map_err(ApiError::Validation)?;
    store_booking(state, caller, checked).await
}

/// Stores the booking, its allowance charge and its confirmation mail in one transaction.
async fn store_booking(
    state: &AppState,
    caller: &Caller,
    c: Checked,
) -> Result<BookingOut, ApiError> {
    let now = naive(now());
    let Target { resource, site } = c.target;
    let booking = Booking {
        id: uuid::Uuid::now_v7().to_string(),
        resource_id: resource.resource.id.clone(),
        site_id: site.site.id.clone(),
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
    let credential = NewCredential::fresh(
        &booking.id,
        &booking.site_id,
        booking.starts_at,
        booking.ends_at,
        now,
    )?;
    let compose_mail = {
        let (b, site, resource_name) = (
            booking.clone(),
            site.clone(),
            resource.resource.name.clone(),
        );
        let (member, organizer) = (
            (caller.name.clone(), caller.email.clone()),
            state.config.mail_from.clone(),
        );
        let url = url.clone();
        move |issued: &CredentialRow| {
            let access_url = format!("{url}/access");
            let mut ctx = booking_mail(
                organizer_address(&organizer),
                &b,
                &resource_name,
                &site,
                (&member.0, &member.1),
                &url,
            );
            ctx.access = Some(AccessMail {
                pin: &issued.pin,
                token: &issued.token,
                access_url: &access_url,
            });
            let mail = compose::booking(BookingEvent::Confirmed, &ctx);
            OutboxRow::due(
                "booking_confirmed",
                serde_json::to_string(&mail).unwrap_or_default(),
                chrono::Utc::now().naive_utc(),
            )
        }
    };
    let (b, charge) = (booking.clone(), c.charge);
    let stored = state
        .db
        .run(move |conn| store::create(conn, &b, charge.as_ref(), &credential, compose_mail))
        .await;
    match stored {
        Err(BookingWriteError::Overlap) => {
            state
                .metrics
                .events
                .booking_conflicts
                .fetch_add(1, Ordering::Relaxed);
            return Err(BookingWriteError::Overlap.into());
        }
        Err(BookingWriteError::AllowanceExceeded { limit, used }) => {
            return Err(ApiError::field(
                "ends_at",
                format!(
                    "the organization's allowance for {} would be exceeded: {used} of {limit} minutes used, this booking needs {}",
                    booking.allowance_month.as_deref().unwrap_or_default(),
                    booking.charged_minutes
                ),
            ));
        }
        other => {
            other?;
        }
    }
    state
        .metrics
        .events
        .bookings_created
        .fetch_add(1, Ordering::Relaxed);
    state.mail_waker.notify_one();
    state.grants.refresh(&state.db, &booking.id).await;
    let charging = match &c.charging {
        Some(req) => Some(super::charging::plan(state, &site, &booking, req).await?),
        None => None,
    };
    let mut out = booking_out(booking, &site, &resource);
    out.charging = charging;
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
    let (start, end) = (request.starts_at.clone(), request.ends_at.clone());
    let caller = auth.caller;
    let (target, checked) = check(&state, &caller, request);
    let Some(target) = target else {
        return Err(ApiError::Validation(checked.err().unwrap_or_default()));
    };
    let tz = target.site.tz;
    let range = TimeRange::parse(&start, &end, "starts_at", "ends_at").ok();
    let mut errors = checked.as_ref().err().cloned().unwrap_or_default();
    let (rid, org) = (
        target.resource.resource.id.clone(),
        caller.organization_id.clone(),
    );
    let month = range.map(|r| policy::allowance_month(&r, tz));
    let (conflicts, allowance) = state
        .db
        .run(move |c| {
            let conflicts = match range {
                Some(r) => store::conflicts(c, &rid, naive(r.start()), naive(r.end()))?,
                None => Vec::new(),
            };
            let allowance = match (org, month) {
                (Some(o), Some(m)) => {
                    Some((o.clone(), m.clone(), store::allowance_status(c, &o, &m)?))
                }
                _ => None,
            };
            Ok::<_, crate::db::DbError>((conflicts, allowance))
        })
        .await?;
    let minutes = range.map(|r| policy::charged_minutes(&r)).unwrap_or(0);
    let allowance = allowance.map(|(organization_id, month, (limit, used))| {
        if used + minutes > limit {
            errors.push(FieldError::new(
                "ends_at",
                format!("the organization's allowance for {month} would be exceeded: {used} of {limit} minutes used, this booking needs {minutes}"),
            ));
        }
        AllowanceUse {
            organization_id,
            month,
            limit_minutes: limit,
            used_minutes: used,
            this_booking_minutes: minutes,
            remaining_after_minutes: limit - used - minutes,
        }
    });
    let conflicts: Vec<Conflict> = conflicts
        .into_iter()
        .map(|(_, s, e)| Conflict {
            starts_at: utc_text(utc(s)),
            ends_at: utc_text(utc(e)),
        })
        .collect();
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
        starts_at_local: range.map(|r| local_text(r.start(), tz)),
        ends_at_local: range.map(|r| local_text(r.end(), tz)),
        timezone: Some(tz.name().to_string()),
        duration_minutes: range.map(|r| r.duration().num_minutes()),
        conflicts,
        errors,
        allowance,
    }))
}
