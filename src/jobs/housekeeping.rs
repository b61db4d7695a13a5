//! Periodic upkeep: bookings that have ended become `completed`.

use std::time::Duration;

use chrono::Utc;

use crate::db::{bookings, naive, Db};

pub async fn complete_ended_bookings(db: Db, every: Duration) {
    loop {
        let now = naive(Utc::now());
        match db.run(move |c| bookings::complete_ended(c, now)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(bookings = n, "ended bookings marked completed"),
            Err(e) => tracing::warn!(error = %e, "could not complete ended bookings"),
        }
        tokio::time::sleep(every).await;
    }
}
