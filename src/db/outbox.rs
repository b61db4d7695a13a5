//! The transactional outbox: rows written with the change they announce, sent afterwards.

use chrono::{Duration, NaiveDateTime};
use diesel::prelude::*;

use super::models::OutboxRow;
use super::schema::outbox;
use super::{write_transaction, DbConnection, DbError};

impl OutboxRow {
    /// A row due at once.
    pub fn due(kind: &str, payload: String, now: NaiveDateTime) -> OutboxRow {
        OutboxRow {
            id: uuid::Uuid::now_v7().to_string(),
            kind: kind.to_string(),
            payload,
            created_at: now,
            available_at: now,
            attempts: 0,
            last_error: None,
            sent_at: None,
        }
    }
}

/// How long a claimed row stays invisible to other senders before it may be retried: longer than
/// a batch takes (its sends run side by side and the SMTP client times out at 10 s), short enough
/// that a crash mid-send delays the mail by well under a minute.
pub const CLAIM_LEASE: Duration = Duration::seconds(30);

/// Claims up to `limit` rows that are due, pushing their `available_at` past the lease so no
/// other instance sends them meanwhile. PostgreSQL skips rows another sender has locked.
pub fn claim(
    conn: &mut DbConnection,
    now: NaiveDateTime,
    limit: i64,
) -> Result<Vec<OutboxRow>, DbError> {
    write_transaction(conn, |conn| {
        macro_rules! due {
            () => {
                outbox::table
                    .filter(outbox::sent_at.is_null())
                    .filter(outbox::available_at.le(now))
                    .order(outbox::available_at)
                    .limit(limit)
                    .select(OutboxRow::as_select())
            };
        }
        let rows: Vec<OutboxRow> = match conn {
            DbConnection::Postgresql(c) => due!().for_update().skip_locked().load(c)?,
            DbConnection::Sqlite(c) => due!().load(c)?,
        };
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        diesel::update(outbox::table.filter(outbox::id.eq_any(&ids)))
            .set((
                outbox::available_at.eq(now + CLAIM_LEASE),
                outbox::attempts.eq(outbox::attempts + 1),
            ))
            .execute(conn)?;
        Ok(rows)
    })
}

pub fn mark_sent(
    conn: &mut DbConnection,
    ids: &[String],
    now: NaiveDateTime,
) -> Result<(), DbError> {
    diesel::update(outbox::table.filter(outbox::id.eq_any(ids)))
        .set((
            outbox::sent_at.eq(Some(now)),
            outbox::last_error.eq(None::<String>),
        ))
        .execute(conn)?;
    Ok(())
}

/// Records a failed attempt and when to try again.
pub fn mark_failed(
    conn: &mut DbConnection,
    id: &str,
    error: &str,
    retry_at: NaiveDateTime,
) -> Result<(), DbError> {
    diesel::update(outbox::table.find(id))
        .set((
            outbox::last_error.eq(Some(error)),
            outbox::available_at.eq(retry_at),
        ))
        .execute(conn)?;
    Ok(())
}

/// Rows not yet sent, for `/metrics`.
pub fn pending(conn: &mut DbConnection) -> Result<i64, DbError> {
    Ok(outbox::table
        .filter(outbox::sent_at.is_null())
        .count()
        .get_result(conn)?)
}

/// Backoff after `attempts` failures: 5 s doubling to at most 10 minutes.
pub fn retry_delay(attempts: i32) -> Duration {
    let secs = 5i64.saturating_mul(1i64 << attempts.clamp(0, 7));
    Duration::seconds(secs.min(600))
}
