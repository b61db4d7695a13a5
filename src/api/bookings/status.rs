use std::sync::atomic::Ordering;

use actix_web::{web, HttpResponse};

use super::{booking_out, booking_url, mail_context, now, owner, place_of, BookingOut};
use crate::api::auth::queued;
use crate::api::error::ApiError;
use crate::api::extract::Auth;
use crate::api::state::AppState;
use crate::db::bookings as store;
use crate::db::{naive, utc};
use crate::domain::access_control::GrantState;
use crate::domain::policy::{check_in_open, CHECK_IN_EARLY};
use crate::domain::TimeRange;
use crate::email::compose::{self, BookingEvent};

#[utoipa::path(post, path = "/api/v1/bookings/{booking_id}/cancel", tag = "bookings",
    responses((status = 200, body = BookingOut), (status = 404, body = crate::api::error::Problem),
              (status = 409, body = crate::api::error::Problem)),
    security(("bearer" = [])))]
pub async fn cancel(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let b = super::read::visible(&state, &auth.caller, &path).await?;
    if !auth.caller.can_cancel_booking(owner(&b)) {
        return Err(ApiError::Forbidden(
            "you may not cancel this booking".into(),
        ));
    }
    let (site, r) = place_of(&state, &b)?;
    let member = super::member_of(&state, &b).await?;
    let url = booking_url(&state, &b.id);
    // Only a confirmed booking can be cancelled, once, and that raises SEQUENCE by one.
    let mut next = b.clone();
    next.sequence += 1;
    let mail = compose::booking(
        BookingEvent::Cancelled,
        &mail_context(
            &state,
            &next,
            &r.resource.name,
            &site,
            (&member.name, &member.email),
            &url,
        ),
    );
    let row = queued("booking_cancelled", &mail)?;
    let (id, when) = (b.id.clone(), naive(now()));
    let updated = state
        .db
        .run(move |c| store::cancel(c, &id, when, &row))
        .await?;
    state
        .metrics
        .events
        .bookings_cancelled
        .fetch_add(1, Ordering::Relaxed);
    state.mail_waker.notify_one();
    state.grants.revoke(&updated.id, GrantState::Cancelled);
    Ok(HttpResponse::Ok().json(booking_out(updated, &site, &r)))
}

#[utoipa::path(post, path = "/api/v1/bookings/{booking_id}/check-in", tag = "bookings",
    responses((status = 200, body = BookingOut), (status = 404, body = crate::api::error::Problem),
              (status = 409, body = crate::api::error::Problem)),
    security(("bearer" = [])))]
pub async fn check_in(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let b = super::read::visible(&state, &auth.caller, &path).await?;
    if !auth.caller.can_check_in(owner(&b)) {
        return Err(ApiError::Forbidden(
            "only the member or the site's staff may check in".into(),
        ));
    }
    let range = TimeRange::new(utc(b.starts_at), utc(b.ends_at))
        .map_err(|e| ApiError::Internal(e.message))?;
    let at = now();
    if b.status == "confirmed" && !check_in_open(&range, at) {
        return Err(ApiError::Conflict {
            code: "check_in_not_open",
            detail: format!(
                "check-in is open from {} minutes before the start until the end of the booking",
                CHECK_IN_EARLY.num_minutes()
            ),
        });
    }
    let id = b.id.clone();
    let updated = state
        .db
        .run(move |c| store::check_in(c, &id, naive(at)))
        .await?;
    let (site, r) = place_of(&state, &updated)?;
    Ok(HttpResponse::Ok().json(booking_out(updated, &site, &r)))
}
