//! Periodic upkeep: bookings that have ended become `completed`; idempotency keys past their
//! time are forgotten.

use chrono::Utc;

use crate::db::{bookings, idempotency, naive, Db, DbError};

/// One pass of both rules; both are tried, the first error is returned.
pub async fn pass(db: &Db) -> Result<(), DbError> {
    let now = naive(Utc::now());
    let completed = db.run(move |c| bookings::complete_ended(c, now)).await;
    if let Ok(n @ 1..) = completed {
        tracing::info!(bookings = n, "ended bookings marked completed");
    }
    let before = now - chrono::Duration::hours(idempotency::KEEP_HOURS);
    let expired = db.run(move |c| idempotency::expire(c, before)).await;
    completed?;
    expired?;
    Ok(())
}
