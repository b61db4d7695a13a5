//! Booking writes and reads. Writes hold the write lock from their first statement
//! ([`write_transaction`]); overlaps are refused by the database itself.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::access::{self, CredentialRow, NewCredential};
use super::energy::{insert_plan, EvPlanRow};
use super::models::{Booking, OutboxRow};
use super::schema::{bookings, outbox};
use super::{write_transaction, DbConnection, DbError};

mod allowance;
use crate::domain::policy::MAX_LENGTH;
use crate::domain::BookingStatus;
pub use allowance::{allowance_status, allowance_used, AllowanceCharge};
use allowance::{consume_allowance, refund_allowance};

#[derive(Debug, thiserror::Error)]
pub enum BookingWriteError {
    #[error("the resource is already booked for part of that interval")]
    Overlap,
    #[error("the organization's monthly allowance would be exceeded")]
    AllowanceExceeded { limit: i32, used: i32 },
    #[error("the booking is {0}")]
    WrongStatus(String),
    #[error("booking not found")]
    NotFound,
    #[error(transparent)]
    Db(DbError),
}

impl From<DbError> for BookingWriteError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Overlap => BookingWriteError::Overlap,
            DbError::NotFound => BookingWriteError::NotFound,
            other => BookingWriteError::Db(other),
        }
    }
}

impl From<diesel::result::Error> for BookingWriteError {
    fn from(e: diesel::result::Error) -> Self {
        DbError::from(e).into()
    }
}

/// How many times a booking's transaction is run when it loses a deadlock or a serialization
/// check, before the failure is answered.
pub const CREATE_ATTEMPTS: u32 = 4;

/// Stores a booking with its door credential and (for an EV bay) its charging plan, charges the
/// allowance and queues its email, all or nothing. Returns the credential as issued (its PIN is the first candidate free at the site).
///
/// A booking that overlaps one already committed is refused before any lock is taken. Contenders
/// for one resource are serialized before anything is written: on PostgreSQL by a
/// transaction-scoped advisory lock on the resource, on SQLite by the write lock
/// ([`write_transaction`]). A transaction that still loses a deadlock or a serialization check
/// is run again from the start, up to [`CREATE_ATTEMPTS`] times, so `mail` may be called more
/// than once.
pub fn create(
    conn: &mut DbConnection,
    booking: &Booking,
    charge: Option<&AllowanceCharge>,
    credential: &NewCredential,
    ev_plan: Option<&EvPlanRow>,
    mail: impl Fn(&CredentialRow) -> OutboxRow,
) -> Result<CredentialRow, BookingWriteError> {
    if already_taken(conn, booking)? {
        return Err(BookingWriteError::Overlap);
    }
    let mut attempt = 1;
    loop {
        let outcome = write_transaction(conn, |conn| {
            lock_resource(conn, &booking.resource_id)?;
            if let Some(charge) = charge {
                consume_allowance(conn, charge)?;
            }
            on_backend!(conn, |c| {
                diesel::insert_into(bookings::table)
                    .values(booking)
                    .execute(c)?;
            });
            let issued = access::issue(conn, credential)?;
            if let Some(plan) = ev_plan {
                insert_plan(conn, plan)?;
            }
            let mail = mail(&issued);
            on_backend!(conn, |c| {
                diesel::insert_into(outbox::table)
                    .values(&mail)
                    .execute(c)?;
            });
            Ok(issued)
        });
        match outcome {
            Err(BookingWriteError::Db(e)) if e.is_retryable() && attempt < CREATE_ATTEMPTS => {
                tracing::debug!(error = %e, attempt, "booking transaction retried");
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Whether a committed active booking already overlaps `booking`: read without any lock, so the
/// losers of a race answer at once instead of queueing for the lock one after the other. The
/// constraint still decides the cases this read cannot see.
fn already_taken(conn: &mut DbConnection, booking: &Booking) -> Result<bool, BookingWriteError> {
    let found = overlapping(
        conn,
        &booking.resource_id,
        booking.starts_at,
        booking.ends_at,
        Some(1),
    )?;
    Ok(!found.is_empty())
}

/// One resource's active bookings that overlap `[from, to)`, earliest first, at most `limit`.
/// On PostgreSQL the overlap is asked as the exclusion constraint states it (the same partial
/// GiST index on the resource and the time range), so the cost does not grow with the resource's
/// other bookings; on SQLite through `starts_at`, bounded by the longest possible booking.
fn overlapping(
    conn: &mut DbConnection,
    resource_id: &str,
    from: NaiveDateTime,
    to: NaiveDateTime,
    limit: Option<i64>,
) -> Result<Vec<(String, NaiveDateTime, NaiveDateTime)>, DbError> {
    use diesel::dsl::sql;
    use diesel::sql_types::{Bool, Timestamp};
    let columns = (bookings::id, bookings::starts_at, bookings::ends_at);
    let limit = limit.unwrap_or(i64::MAX);
    Ok(match conn {
        DbConnection::Postgresql(c) => {
            // Spelled as the index's predicate, so that a generic plan can use it too.
            let active = sql::<Bool>(&format!(
                "bookings.status IN ('{}', '{}')",
                BookingStatus::ACTIVE[0],
                BookingStatus::ACTIVE[1]
            ));
            let overlap =
                sql::<Bool>("tsrange(bookings.starts_at, bookings.ends_at, '[)') && tsrange(")
                    .bind::<Timestamp, _>(from)
                    .sql(", ")
                    .bind::<Timestamp, _>(to)
                    .sql(", '[)')");
            bookings::table
                .filter(bookings::resource_id.eq(resource_id))
                .filter(active)
                .filter(overlap)
                .select(columns)
                .order(bookings::starts_at)
                .limit(limit)
                .load(c)?
        }
        DbConnection::Sqlite(c) => bookings::table
            .filter(bookings::resource_id.eq(resource_id))
            .filter(bookings::status.eq_any(BookingStatus::ACTIVE))
            .filter(bookings::starts_at.lt(to))
            .filter(bookings::starts_at.gt(from - MAX_LENGTH))
            .filter(bookings::ends_at.gt(from))
            .select(columns)
            .order(bookings::starts_at)
            .limit(limit)
            .load(c)?,
    })
}

/// The advisory-lock class of bookings' resources (the first key of the two-key form).
const RESOURCE_LOCK_CLASS: i32 = 0x5350_4b01;

/// Makes every other booking transaction of `resource_id` wait until this one ends (PostgreSQL;
/// SQLite's writers are serialized by the write lock already). Taken before any write, so two
/// contenders never hold parts of the exclusion constraint's index that the other needs.
fn lock_resource(conn: &mut DbConnection, resource_id: &str) -> Result<(), BookingWriteError> {
    if let DbConnection::Postgresql(c) = conn {
        diesel::sql_query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind::<diesel::sql_types::Integer, _>(RESOURCE_LOCK_CLASS)
            .bind::<diesel::sql_types::Text, _>(resource_id)
            .execute(c)?;
    }
    Ok(())
}

/// Moves a booking from `confirmed` to `to`; exactly one of several racing callers wins.
fn transition(
    conn: &mut DbConnection,
    id: &str,
    to: BookingStatus,
    now: NaiveDateTime,
) -> Result<Booking, BookingWriteError> {
    let target = bookings::table
        .find(id)
        .filter(bookings::status.eq(BookingStatus::Confirmed.as_str()));
    let updated = match to {
        BookingStatus::CheckedIn => diesel::update(target)
            .set((
                bookings::status.eq(to.as_str()),
                bookings::checked_in_at.eq(Some(now)),
                bookings::updated_at.eq(now),
            ))
            .execute(conn)?,
        _ => diesel::update(target)
            .set((
                bookings::status.eq(to.as_str()),
                bookings::cancelled_at.eq(Some(now)),
                bookings::sequence.eq(bookings::sequence + 1),
                bookings::updated_at.eq(now),
            ))
            .execute(conn)?,
    };
    let booking: Booking = bookings::table
        .find(id)
        .select(Booking::as_select())
        .first(conn)?;
    if updated == 0 {
        return Err(BookingWriteError::WrongStatus(booking.status.to_string()));
    }
    Ok(booking)
}

/// Cancels a confirmed booking, refunds its allowance and queues the cancellation email.
pub fn cancel(
    conn: &mut DbConnection,
    id: &str,
    now: NaiveDateTime,
    mail: &OutboxRow,
) -> Result<Booking, BookingWriteError> {
    withdraw(conn, id, BookingStatus::Cancelled, now, mail)
}

/// Releases a confirmed booking nobody checked in to, refunds its allowance and queues the email.
pub fn release(
    conn: &mut DbConnection,
    id: &str,
    now: NaiveDateTime,
    mail: &OutboxRow,
) -> Result<Booking, BookingWriteError> {
    withdraw(conn, id, BookingStatus::Released, now, mail)
}

/// Ends a confirmed booking before its time (`to` is cancelled or released): the status change,
/// the refund and the mail in one transaction.
fn withdraw(
    conn: &mut DbConnection,
    id: &str,
    to: BookingStatus,
    now: NaiveDateTime,
    mail: &OutboxRow,
) -> Result<Booking, BookingWriteError> {
    write_transaction(conn, |conn| {
        let booking = transition(conn, id, to, now)?;
        refund_allowance(conn, &booking)?;
        on_backend!(conn, |c| diesel::insert_into(outbox::table)
            .values(mail)
            .execute(c)?);
        Ok(booking)
    })
}

/// Confirmed bookings that started at or before `started_by` (and after `since`): candidates
/// for release, as `(id, site_id, starts_at)`.
pub fn unattended(
    conn: &mut DbConnection,
    since: NaiveDateTime,
    started_by: NaiveDateTime,
) -> Result<Vec<(String, String, NaiveDateTime)>, DbError> {
    Ok(bookings::table
        .filter(bookings::status.eq(BookingStatus::Confirmed.as_str()))
        .filter(bookings::starts_at.le(started_by))
        .filter(bookings::starts_at.gt(since))
        .select((bookings::id, bookings::site_id, bookings::starts_at))
        .order(bookings::starts_at)
        .load(conn)?)
}

/// Active bookings overlapping `[from, to)` across the network, as
/// `(resource_id, site_id, starts_at, ends_at)`.
pub fn active_between(
    conn: &mut DbConnection,
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> Result<Vec<(String, String, NaiveDateTime, NaiveDateTime)>, DbError> {
    Ok(bookings::table
        .filter(bookings::status.eq_any(BookingStatus::ACTIVE))
        .filter(bookings::starts_at.lt(to))
        .filter(bookings::starts_at.gt(from - MAX_LENGTH))
        .filter(bookings::ends_at.gt(from))
        .select((
            bookings::resource_id,
            bookings::site_id,
            bookings::starts_at,
            bookings::ends_at,
        ))
        .load(conn)?)
}

/// A booking as utilisation counts it.
pub type HeldBooking = (
    String,
    String,
    NaiveDateTime,
    NaiveDateTime,
    Option<NaiveDateTime>,
);

/// A site's bookings overlapping `[from, to)` that held their resource (all but cancelled), as
/// `(resource_id, status, starts_at, ends_at, released_at)`.
pub fn held_between(
    conn: &mut DbConnection,
    site_id: &str,
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> Result<Vec<HeldBooking>, DbError> {
    Ok(bookings::table
        .filter(bookings::site_id.eq(site_id))
        .filter(bookings::status.ne(BookingStatus::Cancelled.as_str()))
        .filter(bookings::starts_at.lt(to))
        .filter(bookings::starts_at.gt(from - MAX_LENGTH))
        .filter(bookings::ends_at.gt(from))
        .select((
            bookings::resource_id,
            bookings::status,
            bookings::starts_at,
            bookings::ends_at,
            bookings::cancelled_at,
        ))
        .load(conn)?)
}

pub fn check_in(
    conn: &mut DbConnection,
    id: &str,
    now: NaiveDateTime,
) -> Result<Booking, BookingWriteError> {
    write_transaction(conn, |conn| {
        transition(conn, id, BookingStatus::CheckedIn, now)
    })
}

/// Marks bookings that have ended as completed; returns how many.
pub fn complete_ended(conn: &mut DbConnection, now: NaiveDateTime) -> Result<usize, DbError> {
    Ok(diesel::update(
        bookings::table
            .filter(bookings::status.eq_any(BookingStatus::ACTIVE))
            .filter(bookings::ends_at.le(now)),
    )
    .set((
        bookings::status.eq(BookingStatus::Completed.as_str()),
        bookings::updated_at.eq(now),
    ))
    .execute(conn)?)
}

pub fn find(conn: &mut DbConnection, id: &str) -> Result<Option<Booking>, DbError> {
    Ok(bookings::table
        .find(id)
        .select(Booking::as_select())
        .first(conn)
        .optional()?)
}

#[derive(Debug, Default, Clone)]
pub struct BookingFilter {
    pub user_id: Option<String>,
    pub organization_id: Option<String>,
    pub site_ids: Option<Vec<String>>,
    pub status: Option<String>,
    /// Bookings that end after this instant.
    pub from: Option<NaiveDateTime>,
    /// Bookings that start before this instant.
    pub to: Option<NaiveDateTime>,
    /// Keyset cursor: the `(starts_at, id)` of the last booking already returned.
    pub after: Option<(NaiveDateTime, String)>,
    pub limit: i64,
}

pub fn list(conn: &mut DbConnection, f: &BookingFilter) -> Result<Vec<Booking>, DbError> {
    let mut q = bookings::table
        .select(Booking::as_select())
        .order((bookings::starts_at, bookings::id))
        .limit(f.limit)
        .into_boxed();
    if let Some(u) = &f.user_id {
        q = q.filter(bookings::user_id.eq(u.clone()));
    }
    if let Some(o) = &f.organization_id {
        q = q.filter(bookings::organization_id.eq(o.clone()));
    }
    if let Some(sites) = &f.site_ids {
        q = q.filter(bookings::site_id.eq_any(sites.clone()));
    }
    if let Some(s) = &f.status {
        q = q.filter(bookings::status.eq(s.clone()));
    }
    if let Some(from) = f.from {
        q = q.filter(bookings::ends_at.gt(from));
    }
    if let Some(to) = f.to {
        q = q.filter(bookings::starts_at.lt(to));
    }
    if let Some((ts, id)) = &f.after {
        q = q.filter(
            bookings::starts_at
                .gt(*ts)
                .or(bookings::starts_at.eq(*ts).and(bookings::id.gt(id.clone()))),
        );
    }
    Ok(q.load(conn)?)
}

/// Ids of the resources at `site_ids` held by an active booking overlapping `[from, to)`.
///
/// No booking is longer than [`MAX_LENGTH`], so only bookings starting in
/// `(from - MAX_LENGTH, to)` can overlap: a short range scan of `(site_id, starts_at)`.
pub fn busy_resources(
    conn: &mut DbConnection,
    site_ids: &[String],
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> Result<Vec<String>, DbError> {
    Ok(bookings::table
        .filter(bookings::site_id.eq_any(site_ids))
        .filter(bookings::starts_at.lt(to))
        .filter(bookings::starts_at.gt(from - MAX_LENGTH))
        .filter(bookings::ends_at.gt(from))
        .filter(bookings::status.eq_any(BookingStatus::ACTIVE))
        .select(bookings::resource_id)
        .load(conn)?)
}

/// Active bookings of one resource that overlap `[from, to)`, for a quote's answer.
pub fn conflicts(
    conn: &mut DbConnection,
    resource_id: &str,
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> Result<Vec<(String, NaiveDateTime, NaiveDateTime)>, DbError> {
    overlapping(conn, resource_id, from, to, None)
}

/// Ids of the resources held at `at` by a confirmed or checked-in booking
/// (`starts_at <= at < ends_at`), across the network; the simulator's presence sensors follow them.
pub fn active_resources(
    conn: &mut DbConnection,
    at: NaiveDateTime,
) -> Result<Vec<String>, DbError> {
    Ok(bookings::table
        .filter(bookings::status.eq_any(BookingStatus::ACTIVE))
        .filter(bookings::starts_at.le(at))
        .filter(bookings::starts_at.gt(at - MAX_LENGTH))
        .filter(bookings::ends_at.gt(at))
        .select(bookings::resource_id)
        .distinct()
        .load(conn)?)
}
