//! A booking's life cycle, in one place between the edges (HTTP handlers, jobs, the CLI, door
//! decisions) and `db/` + `domain/`:
//!
//! - [`create`] (and [`quote`], what it would answer): the policy, the allowance charge, the booking, its door credential, its
//!   confirmation mail and, for an EV bay, its charging plan, all in one transaction;
//! - [`withdraw`]: a cancellation or a no-show release (status, refund, mail, grant revocation),
//!   and [`release_no_shows`], one pass of the release job;
//! - [`check_in`] (a member or the site's staff) and [`check_in_by_building`] (a door or a
//!   presence sensor), both inside the one window [`crate::domain::policy::check_in_open`];
//! - [`mail`]: the booking's mail context and [`mail::enqueue`], the one way an outbox row is made.
//!
//! Every input is explicit ([`Env`]); nothing here knows HTTP.

pub mod charging;
mod check_in;
mod create;
pub mod mail;
mod quote;
mod withdraw;

use std::sync::Arc;

use crate::db::bookings::BookingWriteError;
use crate::db::models::Booking;
use crate::db::network::{Directory, ResourceEntry, SiteEntry};
use crate::db::{Db, DbError};
use crate::domain::FieldError;
use crate::grants::Grants;
use crate::metrics::Metrics;

pub use check_in::{building_check_in_due, check_in, check_in_by_building};
pub use create::{check, create, Checked, Created, NewBooking, Target};
pub use quote::{quote, AllowanceQuote, Quoted};
pub use withdraw::{release_no_shows, withdraw, Withdrawal};

/// What the life cycle works with: the database, a snapshot of the site directory, the door
/// grants in memory, the counters, the mailer's wake-up and the two configuration values mail
/// needs.
#[derive(Clone, Copy)]
pub struct Env<'a> {
    pub db: &'a Db,
    pub directory: &'a Directory,
    pub grants: &'a Grants,
    pub metrics: &'a Metrics,
    pub mail_waker: &'a tokio::sync::Notify,
    /// The service's public base URL (booking links in mail).
    pub public_url: &'a str,
    /// The `From` mailbox; its address is the organizer of calendar invitations.
    pub mail_from: &'a str,
}

impl Env<'_> {
    /// The booking's own URL.
    pub fn booking_url(&self, id: &str) -> String {
        format!("{}/api/v1/bookings/{id}", self.public_url)
    }

    /// The site and resource a stored booking refers to.
    pub fn place_of(&self, b: &Booking) -> Result<(Arc<SiteEntry>, Arc<ResourceEntry>), Error> {
        place_of(self.directory, b)
    }
}

/// The site and resource a stored booking refers to, from the directory.
pub fn place_of(
    dir: &Directory,
    b: &Booking,
) -> Result<(Arc<SiteEntry>, Arc<ResourceEntry>), Error> {
    match (dir.get(&b.site_id), dir.resource(&b.resource_id)) {
        (Some(s), Some(r)) => Ok((s.clone(), r.clone())),
        _ => Err(Error::UnknownPlace(b.id.clone())),
    }
}

/// Why a step of the life cycle did not happen.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request breaks the policy or is malformed; every problem names its field.
    #[error("the request is not valid")]
    Invalid(Vec<FieldError>),
    #[error("the resource is already booked for part of that interval")]
    Overlap,
    #[error(
        "the organization's allowance for {month} would be exceeded: {used} of {limit} minutes \
         used, this booking needs {needed}"
    )]
    AllowanceExceeded {
        month: String,
        limit: i32,
        used: i32,
        needed: i32,
    },
    /// The booking is not in a state that allows the step (e.g. cancelling a cancelled one).
    #[error("the booking is {0}")]
    WrongStatus(String),
    #[error("check-in is not open at this time")]
    CheckInNotOpen,
    #[error("booking not found")]
    NotFound,
    #[error("booking {0} refers to a place not in the directory")]
    UnknownPlace(String),
    /// A stored booking breaks a rule the database should have kept.
    #[error("inconsistent booking: {0}")]
    Inconsistent(String),
    #[error("mail could not be composed: {0}")]
    Mail(String),
    #[error(transparent)]
    Db(DbError),
}

impl From<DbError> for Error {
    fn from(e: DbError) -> Self {
        match e {
            DbError::NotFound => Error::NotFound,
            DbError::Overlap => Error::Overlap,
            other => Error::Db(other),
        }
    }
}

impl From<BookingWriteError> for Error {
    fn from(e: BookingWriteError) -> Self {
        match e {
            BookingWriteError::Overlap => Error::Overlap,
            // The caller knows the month and the minutes; `create` fills them in.
            BookingWriteError::AllowanceExceeded { limit, used } => Error::AllowanceExceeded {
                month: String::new(),
                limit,
                used,
                needed: 0,
            },
            BookingWriteError::WrongStatus(s) => Error::WrongStatus(s),
            BookingWriteError::NotFound => Error::NotFound,
            BookingWriteError::Db(e) => e.into(),
        }
    }
}

/// The account that owns `b`, for its mail and calendar file.
pub async fn member_of(db: &Db, b: &Booking) -> Result<crate::db::models::User, Error> {
    let uid = b.user_id.clone();
    Ok(db
        .run(move |c| crate::db::users::by_id(c, &uid)?.ok_or(DbError::NotFound))
        .await?)
}
