//! Storage: the only layer that knows SQLite from PostgreSQL.
//!
//! Every query runs on a fixed set of database threads fed by a bounded channel
//! ([`Db::run`]), so async handlers never block on a connection checkout.

/// Runs the same diesel expression on whichever backend the connection is; defined before the
/// submodules so that each of them sees it.
macro_rules! on_backend {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::db::DbConnection::Sqlite($c) => $body,
            $crate::db::DbConnection::Postgresql($c) => $body,
        }
    };
}

pub mod access;
pub mod alarms;
pub mod bookings;
pub mod energy;
pub mod idempotency;
pub mod maintenance;
pub mod migrations;
pub mod models;
pub mod network;
pub mod outbox;
mod pool;
pub mod schema;
pub mod telemetry;
pub mod users;

use diesel::connection::{AnsiTransactionManager, TransactionManager};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

pub use pool::{Db, DbConfig};

/// One connection type for both backends, chosen at run time from `DATABASE_URL`.
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Postgresql(diesel::PgConnection),
    Sqlite(diesel::SqliteConnection),
}

/// Errors from the storage layer. Constraint outcomes that callers act on are their own variants.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("not found")]
    NotFound,
    #[error("the resource is already booked for part of that interval")]
    Overlap,
    /// Another credential of the site has the same PIN in an overlapping window.
    #[error("the PIN is in use at the site in an overlapping window")]
    PinTaken,
    #[error("unique constraint violated")]
    Duplicate,
    #[error("text the database cannot store: {0}")]
    InvalidText(String),
    #[error("database busy: {0}")]
    Busy(String),
    /// The transaction lost a deadlock or a serialization check (SQLSTATE 40P01 or 40001) and
    /// was rolled back: running it again from the start can succeed.
    #[error("transaction rolled back, retryable: {0}")]
    Retryable(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Query(DieselError),
    /// The closure run on a database thread panicked; its transaction did not commit.
    #[error("database task panicked: {0}")]
    Panicked(String),
}

/// The rule that keeps a site's PINs apart over overlapping windows (an exclusion constraint on
/// PostgreSQL, a trigger on SQLite).
pub const PIN_OVERLAP: &str = "access_credentials_pin_overlap";

impl DbError {
    /// Whether the whole transaction may be run again: it lost a deadlock or a serialization
    /// check and nothing of it was kept.
    pub fn is_retryable(&self) -> bool {
        matches!(self, DbError::Retryable(_))
    }
}

impl From<DieselError> for DbError {
    fn from(e: DieselError) -> Self {
        match &e {
            DieselError::NotFound => DbError::NotFound,
            DieselError::DatabaseError(kind, info) => {
                let msg = info.message();
                if msg.contains("bookings_no_overlap")
                    || info.constraint_name() == Some("bookings_no_overlap")
                {
                    DbError::Overlap
                } else if msg.contains(PIN_OVERLAP) || info.constraint_name() == Some(PIN_OVERLAP) {
                    DbError::PinTaken
                } else if matches!(kind, DatabaseErrorKind::SerializationFailure)
                    || msg.contains("deadlock detected")
                {
                    DbError::Retryable(msg.to_string())
                } else if matches!(kind, DatabaseErrorKind::UniqueViolation) {
                    DbError::Duplicate
                } else if msg.contains("invalid byte sequence") {
                    DbError::InvalidText(msg.to_string())
                } else if msg.contains("database is locked") || msg.contains("busy") {
                    DbError::Busy(msg.to_string())
                } else if matches!(kind, DatabaseErrorKind::ClosedConnection) {
                    DbError::Unavailable(msg.to_string())
                } else {
                    DbError::Query(e)
                }
            }
            _ => DbError::Query(e),
        }
    }
}

impl From<r2d2::Error> for DbError {
    fn from(e: r2d2::Error) -> Self {
        DbError::Unavailable(e.to_string())
    }
}

pub type DbResult<T> = Result<T, DbError>;

/// Whether the database answers a trivial query, on one of the database threads (so a ping also
/// proves the queue to them is moving).
pub async fn ping(db: &Db) -> DbResult<()> {
    db.run(|c| {
        diesel::sql_query("SELECT 1")
            .execute(c)
            .map_err(DbError::from)?;
        Ok::<_, DbError>(())
    })
    .await
}

/// A transaction that holds the write lock from its first statement.
///
/// On SQLite this is `BEGIN IMMEDIATE`, so two writers never read the same state and then both
/// write; on PostgreSQL it is an ordinary transaction and the constraints do the guarding.
pub fn write_transaction<T, E>(
    conn: &mut DbConnection,
    f: impl FnOnce(&mut DbConnection) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<DieselError>,
{
    if let DbConnection::Sqlite(inner) = conn {
        AnsiTransactionManager::begin_transaction_sql(inner, "BEGIN IMMEDIATE")?;
        let outcome = f(conn);
        let DbConnection::Sqlite(inner) = conn else {
            return Err(DieselError::BrokenTransactionManager.into());
        };
        match outcome {
            Ok(value) => {
                if let Err(e) = AnsiTransactionManager::commit_transaction(inner) {
                    let _ = AnsiTransactionManager::rollback_transaction(inner);
                    return Err(e.into());
                }
                Ok(value)
            }
            Err(e) => {
                let _ = AnsiTransactionManager::rollback_transaction(inner);
                Err(e)
            }
        }
    } else {
        conn.transaction(f)
    }
}

/// Timestamps are stored as naive UTC in both databases.
pub fn utc(ts: chrono::NaiveDateTime) -> chrono::DateTime<chrono::Utc> {
    ts.and_utc()
}

pub fn naive(ts: chrono::DateTime<chrono::Utc>) -> chrono::NaiveDateTime {
    ts.naive_utc()
}
