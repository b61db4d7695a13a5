//! Checking a booking in: by its member or the site's staff over the API, or by the building (a
//! door its credential opened, a presence sensor on its desk). Both keep to the one window of
//! [`policy::check_in_open`]; the status change is conditional, so it happens once.

use chrono::{DateTime, Utc};

use super::Error;
use crate::db::bookings::{self as store, BookingWriteError};
use crate::db::models::Booking;
use crate::db::{naive, utc, Db};
use crate::domain::policy;
use crate::domain::{BookingStatus, TimeRange};
use crate::grants::Grants;

fn window(b: &Booking) -> Result<TimeRange, Error> {
    TimeRange::new(utc(b.starts_at), utc(b.ends_at))
        .map_err(|e| Error::Inconsistent(format!("booking {}: {}", b.id, e.message)))
}

/// Checks `b` in at `at`. A confirmed booking outside its check-in window is refused
/// ([`Error::CheckInNotOpen`]); one that is no longer confirmed answers [`Error::WrongStatus`].
pub async fn check_in(db: &Db, b: &Booking, at: DateTime<Utc>) -> Result<Booking, Error> {
    if b.status == BookingStatus::Confirmed && !policy::check_in_open(&window(b)?, at) {
        return Err(Error::CheckInNotOpen);
    }
    let id = b.id.clone();
    Ok(db.run(move |c| store::check_in(c, &id, naive(at))).await?)
}

/// Whether a grant the building just honoured at `now_ms` (a door opened by the booking's
/// credential, presence on its resource) should check its booking in: inside the check-in window
/// and not yet checked in by this instance. Decided from memory, on the event loop's task.
pub fn building_check_in_due(
    grants: &Grants,
    booking_id: &str,
    starts_ms: i64,
    ends_ms: i64,
    now_ms: i64,
) -> bool {
    let instant = DateTime::<Utc>::from_timestamp_millis;
    let (Some(start), Some(end), Some(now)) =
        (instant(starts_ms), instant(ends_ms), instant(now_ms))
    else {
        return false;
    };
    let Ok(range) = TimeRange::new(start, end) else {
        return false;
    };
    policy::check_in_open(&range, now) && grants.first_check_in(booking_id)
}

/// Checks in, at `at`, a booking the building decided was due ([`building_check_in_due`]);
/// answers `None` when it is no longer confirmed (checked in, cancelled or released meanwhile).
/// After a failure, the booking may be tried again.
pub async fn check_in_by_building(
    db: &Db,
    grants: &Grants,
    booking_id: &str,
    at: DateTime<Utc>,
) -> Result<Option<Booking>, Error> {
    let id = booking_id.to_owned();
    match db.run(move |c| store::check_in(c, &id, naive(at))).await {
        Ok(b) => Ok(Some(b)),
        Err(BookingWriteError::WrongStatus(_)) => Ok(None),
        Err(e) => {
            grants.check_in_failed(booking_id);
            Err(e.into())
        }
    }
}
