//! Periodic upkeep: bookings that have ended become `completed`; idempotency keys past their
//! time are forgotten.

use std::time::Duration;

use chrono::Utc;

use crate::db::{bookings, idempotency, naive, Db};

pub async fn complete_ended_bookings(db: Db, every: Duration) {
    loop {
        let now = naive(Utc::now());
        match db.run(move |c| bookings::complete_ended(c, now)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(bookings = n, "ended bookings marked completed"),
            Err(e) => tracing::warn!(error = %e, "could not complete ended bookings"),
        }
        let before = now - chrono::Duration::hours(idempotency::KEEP_HOURS);
        if let Err(e) = db.run(move |c| idempotency::expire(c, before)).await {
            tracing::warn!(error = %e, "could not expire idempotency keys");
        }
        tokio::time::sleep(every).await;
    }
}
