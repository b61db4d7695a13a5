use actix_web::{web, HttpResponse};

use super::{booking_out, env, now, owner, place_of, BookingOut};
use crate::api::error::ApiError;
use crate::api::extract::Auth;
use crate::api::state::AppState;
use crate::bookings::{self, Withdrawal};
use crate::db::naive;

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
    let dir = state.directory();
    let updated =
        bookings::withdraw(env(&state, &dir), &b, Withdrawal::Cancel, naive(now())).await?;
    let (site, r) = place_of(&state, &updated)?;
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
    let updated = bookings::check_in(&state.db, &b, now()).await?;
    let (site, r) = place_of(&state, &updated)?;
    Ok(HttpResponse::Ok().json(booking_out(updated, &site, &r)))
}
