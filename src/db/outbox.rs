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

/// Queues one row.
pub fn enqueue(conn: &mut DbConnection, row: &OutboxRow) -> Result<(), DbError> {
    on_backend!(conn, |c| diesel::insert_into(outbox::table)
        .values(row)
        .execute(c)?);
    Ok(())
}

/// How far the mailer is behind: mail due now or being sent (claimed, not yet marked), and how
/// long the oldest of it has waited since it was queued. Mail waiting out a retry backoff longer
/// than a claim's lease is not counted until it is due again.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Backlog {
    pub due: i64,
    pub oldest_secs: f64,
}

pub fn backlog(conn: &mut DbConnection, now: NaiveDateTime) -> Result<Backlog, DbError> {
    let due = outbox::table
        .filter(outbox::sent_at.is_null())
        .filter(outbox::available_at.le(now + CLAIM_LEASE));
    let count: i64 = due.count().get_result(conn)?;
    let oldest: Option<NaiveDateTime> = due
        .select(diesel::dsl::min(outbox::created_at))
        .first(conn)?;
    Ok(Backlog {
        due: count,
        oldest_secs: oldest.map_or(0.0, |t| {
            ((now - t).num_milliseconds().max(0) as f64) / 1000.0
        }),
    })
}

/// What a sent mail's row keeps once its personal data is gone: kind, times and attempts.
pub const SCRUBBED_PAYLOAD: &str = "{}";

/// Empties the rendered mail (addresses, names, the PIN, the QR token, the calendar file) and
/// the last transport error of every row sent before `before`; returns how many rows.
/// Unsent mail keeps everything it needs to be sent.
pub fn scrub_sent_before(conn: &mut DbConnection, before: NaiveDateTime) -> Result<usize, DbError> {
    Ok(diesel::update(
        outbox::table
            .filter(outbox::sent_at.is_not_null())
            .filter(outbox::sent_at.lt(before))
            .filter(outbox::payload.ne(SCRUBBED_PAYLOAD)),
    )
    .set((
        outbox::payload.eq(SCRUBBED_PAYLOAD),
        outbox::last_error.eq(None::<String>),
    ))
    .execute(conn)?)
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
