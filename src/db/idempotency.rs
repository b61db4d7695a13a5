//! Stored responses for `Idempotency-Key`, scoped to the caller.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::models::IdempotencyRecord;
use super::schema::idempotency_keys;
use super::{DbConnection, DbError};

pub enum Begin {
    /// This request owns the key now and must call [`finish`] or [`abandon`].
    Started,
    /// A request with this key exists: its record, finished or not.
    Existing(IdempotencyRecord),
}

pub fn begin(
    conn: &mut DbConnection,
    user_id: &str,
    key: &str,
    request_hash: &str,
    now: NaiveDateTime,
) -> Result<Begin, DbError> {
    let record = IdempotencyRecord {
        user_id: user_id.to_string(),
        key: key.to_string(),
        request_hash: request_hash.to_string(),
        status_code: None,
        response_body: None,
        location: None,
        created_at: now,
    };
    let inserted = on_backend!(conn, |c| diesel::insert_into(idempotency_keys::table)
        .values(&record)
        .on_conflict_do_nothing()
        .execute(c)?);
    if inserted == 1 {
        return Ok(Begin::Started);
    }
    let existing = idempotency_keys::table
        .find((user_id, key))
        .select(IdempotencyRecord::as_select())
        .first(conn)?;
    Ok(Begin::Existing(existing))
}

pub fn finish(
    conn: &mut DbConnection,
    user_id: &str,
    key: &str,
    status: i32,
    body: &str,
    location: Option<&str>,
) -> Result<(), DbError> {
    diesel::update(idempotency_keys::table.find((user_id, key)))
        .set((
            idempotency_keys::status_code.eq(Some(status)),
            idempotency_keys::response_body.eq(Some(body)),
            idempotency_keys::location.eq(location),
        ))
        .execute(conn)?;
    Ok(())
}

/// Forgets a key whose request failed on our side, so that the client may retry it.
pub fn abandon(conn: &mut DbConnection, user_id: &str, key: &str) -> Result<(), DbError> {
    diesel::delete(idempotency_keys::table.find((user_id, key))).execute(conn)?;
    Ok(())
}

/// How long a key is remembered. A stored response can hold a secret shown once (a device's
/// broker password), so it is kept no longer than a client's retries need.
pub const KEEP_HOURS: i64 = 24;

/// Forgets keys older than `before`; returns how many.
pub fn expire(conn: &mut DbConnection, before: NaiveDateTime) -> Result<usize, DbError> {
    Ok(
        diesel::delete(idempotency_keys::table.filter(idempotency_keys::created_at.lt(before)))
            .execute(conn)?,
    )
}
