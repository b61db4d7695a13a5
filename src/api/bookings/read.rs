use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use super::{booking_out, booking_url, owner, place_of, BookingOut};
use crate::api::error::ApiError;
use crate::api::extract::{Auth, Errors, Query};
use crate::api::state::AppState;
use crate::api::views::{time_cursor, Page};
use crate::db::bookings::{self as store, BookingFilter};
use crate::db::models::Booking;
use crate::db::naive;
use crate::domain::access::Caller;
use crate::domain::{BookingStatus, FieldError};
use crate::email::compose;

/// Which bookings the caller asked for, and whether they may see them.
fn scope(caller: &Caller, q: &Query, filter: &mut BookingFilter) -> Result<(), ApiError> {
    match (q.str("organization_id"), q.str("site_id")) {
        (Some(org), _) => {
            if !caller.administers_organization(org) {
                return Err(ApiError::Forbidden(
                    "only the organization's admins may list its bookings".into(),
                ));
            }
            filter.organization_id = Some(org.to_string());
            if let Some(site) = q.str("site_id") {
                filter.site_ids = Some(vec![site.to_string()]);
            }
        }
        (None, Some(site)) => {
            if !caller.manages_site(site) {
                return Err(ApiError::Forbidden(
                    "only the site's managers may list its bookings".into(),
                ));
            }
            filter.site_ids = Some(vec![site.to_string()]);
        }
        (None, None) => filter.user_id = Some(caller.user_id.clone()),
    }
    Ok(())
}

#[utoipa::path(get, path = "/api/v1/bookings", tag = "bookings",
    params(("status" = Option<BookingStatus>, Query), ("from" = Option<String>, Query), ("to" = Option<String>, Query),
           ("organization_id" = Option<String>, Query, description = "company admins: their organization's bookings"),
           ("site_id" = Option<String>, Query, description = "site managers: their site's bookings"),
           ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = Page<BookingOut>), (status = 403, body = crate::api::error::Problem)),
    security(("bearer" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let q = Query::from_request(&req);
    let mut errors = Errors::default();
    let mut filter = BookingFilter {
        limit: errors.take(q.limit()).unwrap_or(50),
        ..Default::default()
    };
    if let Some(s) = q.str("status") {
        filter.status = errors
            .take(
                s.parse::<BookingStatus>()
                    .map_err(|e| FieldError::new("status", e)),
            )
            .map(|s| s.as_str().to_string());
    }
    filter.from = q.instant("from").and_then(|v| errors.take(v)).map(naive);
    filter.to = q.instant("to").and_then(|v| errors.take(v)).map(naive);
    filter.after = q
        .str("cursor")
        .and_then(|c| errors.take(time_cursor::decode(c)));
    errors.finish()?;
    scope(&auth.caller, &q, &mut filter)?;
    let limit = filter.limit;
    filter.limit += 1;
    let mut rows = state.db.run(move |c| store::list(c, &filter)).await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|b| time_cursor::encode(b.starts_at, &b.id))
    } else {
        None
    };
    let items = rows
        .into_iter()
        .map(|b| {
            let (site, resource) = place_of(&state, &b)?;
            Ok(booking_out(b, &site, &resource))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(HttpResponse::Ok().json(Page { items, next_cursor }))
}

/// The booking if the caller may see it; 404 otherwise, so ids reveal nothing.
pub async fn visible(state: &AppState, caller: &Caller, id: &str) -> Result<Booking, ApiError> {
    if id.contains('\0') {
        return Err(ApiError::NotFound(format!(
            "no booking {id:?} that you can see"
        )));
    }
    let bid = id.to_string();
    let found = state.db.run(move |c| store::find(c, &bid)).await?;
    match found {
        Some(b) if caller.can_view_booking(owner(&b)) => Ok(b),
        _ => Err(ApiError::NotFound(format!(
            "no booking {id:?} that you can see"
        ))),
    }
}

#[utoipa::path(get, path = "/api/v1/bookings/{booking_id}", tag = "bookings",
    responses((status = 200, body = BookingOut), (status = 404, body = crate::api::error::Problem)),
    security(("bearer" = [])))]
pub async fn get(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let b = visible(&state, &auth.caller, &path).await?;
    let (site, resource) = place_of(&state, &b)?;
    Ok(HttpResponse::Ok().json(booking_out(b, &site, &resource)))
}

#[utoipa::path(get, path = "/api/v1/bookings/{booking_id}/ics", tag = "bookings",
    responses((status = 200, content_type = "text/calendar", body = String), (status = 404, body = crate::api::error::Problem)),
    security(("bearer" = [])))]
pub async fn ics(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let b = visible(&state, &auth.caller, &path).await?;
    let (site, r) = place_of(&state, &b)?;
    let member = crate::bookings::member_of(&state.db, &b).await?;
    let url = booking_url(&state, &b.id);
    let cancelled = matches!(b.status, BookingStatus::Cancelled | BookingStatus::Released);
    let body = compose::booking_ics(
        &crate::bookings::mail::context(
            &state.config.mail_from,
            &b,
            &r.resource.name,
            &site,
            (&member.name, &member.email),
            &url,
        ),
        cancelled,
    );
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/calendar; charset=utf-8"))
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"booking-{}.ics\"", b.id),
        ))
        .body(body))
}
