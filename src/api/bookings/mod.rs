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
use crate::bookings::{Env, Error as LifeCycleError};
use crate::db::models::Booking;
use crate::db::network::Directory;
use crate::db::network::{ResourceEntry, SiteEntry};
use crate::db::utc;
use crate::domain::access::BookingOwner;
use crate::domain::policy::CHECK_IN_EARLY;
use crate::domain::BookingStatus;

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
        status: b.status,
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
    Ok(crate::bookings::place_of(&state.directory(), b)?)
}

pub fn owner(b: &Booking) -> BookingOwner<'_> {
    BookingOwner {
        user_id: &b.user_id,
        organization_id: b.organization_id.as_deref(),
        site_id: &b.site_id,
    }
}

/// The booking life cycle's inputs, from the application state and a directory snapshot.
pub fn env<'a>(state: &'a AppState, directory: &'a Directory) -> Env<'a> {
    Env {
        db: &state.db,
        directory,
        grants: &state.grants,
        metrics: &state.metrics,
        mail_waker: &state.mail_waker,
        public_url: &state.config.public_url,
        mail_from: &state.config.mail_from,
    }
}

impl From<LifeCycleError> for ApiError {
    fn from(e: LifeCycleError) -> Self {
        match e {
            LifeCycleError::Invalid(errors) => ApiError::Validation(errors),
            LifeCycleError::Overlap => ApiError::Conflict {
                code: "booking_conflict",
                detail: "the resource is already booked for part of [starts_at, ends_at)".into(),
            },
            e @ LifeCycleError::AllowanceExceeded { .. } => ApiError::field("ends_at", e.to_string()),
            LifeCycleError::WrongStatus(status) => ApiError::Conflict {
                code: "booking_state_conflict",
                detail: format!("the booking is {status}"),
            },
            LifeCycleError::CheckInNotOpen => ApiError::Conflict {
                code: "check_in_not_open",
                detail: format!(
                    "check-in is open from {} minutes before the start until the end of the booking",
                    CHECK_IN_EARLY.num_minutes()
                ),
            },
            LifeCycleError::NotFound => ApiError::NotFound("booking not found".into()),
            e @ (LifeCycleError::UnknownPlace(_)
            | LifeCycleError::Inconsistent(_)
            | LifeCycleError::Mail(_)) => ApiError::Internal(e.to_string()),
            LifeCycleError::Db(e) => e.into(),
        }
    }
}

pub fn booking_url(state: &AppState, id: &str) -> String {
    format!("{}/api/v1/bookings/{id}", state.config.public_url)
}

pub fn now() -> chrono::DateTime<Utc> {
    Utc::now()
}
