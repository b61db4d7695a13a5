//! Bookings: quote, create, list, read, calendar file, cancel and check-in.

pub mod charging;
pub mod create;
pub mod read;
pub mod status;

use std::sync::Arc;

use chrono::Utc;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::state::AppState;
use super::views::{local_text, utc_text, ResourceView, SiteRef};
use crate::db::models::Booking;
use crate::db::network::{ResourceEntry, SiteEntry};
use crate::db::utc;
use crate::domain::access::BookingOwner;
use crate::domain::BookingStatus;
use crate::email::compose::BookingMail;
use crate::jobs::release::{booking_mail, organizer_address};

#[derive(Serialize, ToSchema)]
pub struct BookingOut {
    pub id: String,
    pub status: BookingStatus,
    /// UTC instants.
    pub starts_at: String,
    pub ends_at: String,
    /// The same instants in the site's local time, with its offset.
    pub starts_at_local: String,
    pub ends_at_local: String,
    pub timezone: String,
    pub resource: ResourceView,
    pub site: SiteRef,
    pub attendees: i32,
    pub note: Option<String>,
    pub user_id: String,
    pub organization_id: Option<String>,
    /// Minutes taken from the organization's monthly allowance (refunded on cancellation).
    pub allowance_minutes: i32,
    pub created_at: String,
    pub updated_at: String,
    pub checked_in_at: Option<String>,
    pub cancelled_at: Option<String>,
    /// For an EV bay booked with a charging wish: the plan made when it was booked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub charging: Option<charging::ChargingPlan>,
}

/// The booking as clients see it; its resource and site come from the directory.
pub fn booking_out(b: Booking, site: &SiteEntry, resource: &ResourceEntry) -> BookingOut {
    let tz = site.tz;
    BookingOut {
        status: b.status.parse().unwrap_or(BookingStatus::Confirmed),
        starts_at: utc_text(utc(b.starts_at)),
        ends_at: utc_text(utc(b.ends_at)),
        starts_at_local: local_text(utc(b.starts_at), tz),
        ends_at_local: local_text(utc(b.ends_at), tz),
        timezone: tz.name().to_string(),
        resource: ResourceView::new(resource),
        site: SiteRef::new(site),
        attendees: b.attendees,
        note: b.note,
        user_id: b.user_id,
        organization_id: b.organization_id,
        allowance_minutes: b.charged_minutes,
        created_at: utc_text(utc(b.created_at)),
        updated_at: utc_text(utc(b.updated_at)),
        checked_in_at: b.checked_in_at.map(|t| utc_text(utc(t))),
        cancelled_at: b.cancelled_at.map(|t| utc_text(utc(t))),
        charging: None,
        id: b.id,
    }
}

/// The site and resource a stored booking refers to.
pub fn place_of(
    state: &AppState,
    b: &Booking,
) -> Result<(Arc<SiteEntry>, Arc<ResourceEntry>), ApiError> {
    let dir = state.directory();
    let site = dir.get(&b.site_id).cloned();
    let resource = dir.resource(&b.resource_id).cloned();
    match (site, resource) {
        (Some(s), Some(r)) => Ok((s, r)),
        _ => Err(ApiError::Internal(format!(
            "booking {} refers to a place not in the directory",
            b.id
        ))),
    }
}

pub fn owner(b: &Booking) -> BookingOwner<'_> {
    BookingOwner {
        user_id: &b.user_id,
        organization_id: b.organization_id.as_deref(),
        site_id: &b.site_id,
    }
}

/// Everything a booking's mail or calendar file needs; strings are borrowed from the arguments.
pub fn mail_context<'a>(
    state: &'a AppState,
    b: &'a Booking,
    resource_name: &'a str,
    site: &'a SiteEntry,
    member: (&'a str, &'a str),
    booking_url: &'a str,
) -> BookingMail<'a> {
    booking_mail(
        organizer_address(&state.config.mail_from),
        b,
        resource_name,
        site,
        member,
        booking_url,
    )
}

/// The account that owns `b`, for its mail and calendar file.
pub async fn member_of(state: &AppState, b: &Booking) -> Result<crate::db::models::User, ApiError> {
    let uid = b.user_id.clone();
    Ok(state
        .db
        .run(move |c| crate::db::users::by_id(c, &uid)?.ok_or(crate::db::DbError::NotFound))
        .await?)
}

pub fn booking_url(state: &AppState, id: &str) -> String {
    format!("{}/api/v1/bookings/{id}", state.config.public_url)
}

pub fn now() -> chrono::DateTime<Utc> {
    Utc::now()
}
