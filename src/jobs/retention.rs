//! Raw readings and device events are kept for the configured period, then removed; the
//! 15-minute roll-ups stay.

use std::time::Duration;

use crate::db::telemetry::delete_raw_before;
use crate::db::Db;

pub async fn run(db: Db, keep_days: u32, every: Duration) {
    loop {
        let cutoff = chrono::Utc::now().timestamp_millis() - i64::from(keep_days) * 86_400_000;
        match db.run(move |c| delete_raw_before(c, cutoff)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                rows = n,
                keep_days,
                "raw telemetry past its retention removed"
            ),
            Err(e) => tracing::warn!(error = %e, "raw telemetry retention failed"),
        }
        tokio::time::sleep(every).await;
    }
}
