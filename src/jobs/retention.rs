//! Raw readings and device events are kept for the configured period, then removed; the
//! 15-minute roll-ups stay. Personal data (who badged where and when: the access log's credential
//! hash, booking and user, stored badge events, door credentials) is anonymised after its own
//! period; the decisions, doors and times stay for the statistics.

use std::time::Duration;

use crate::db::access::{anonymise_before, Anonymised};
use crate::db::telemetry::delete_raw_before;
use crate::db::Db;

pub async fn run(db: Db, keep_days: u32, personal_days: u32, every: Duration) {
    loop {
        pass(&db, keep_days, personal_days).await;
        tokio::time::sleep(every).await;
    }
}

/// One pass of both retention rules.
pub async fn pass(db: &Db, keep_days: u32, personal_days: u32) {
    let cutoff = crate::domain::epoch::now_ms() - i64::from(keep_days) * 86_400_000;
    match db.run(move |c| delete_raw_before(c, cutoff)).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            rows = n,
            keep_days,
            "raw telemetry past its retention removed"
        ),
        Err(e) => tracing::warn!(error = %e, "raw telemetry retention failed"),
    }
    let personal =
        chrono::Utc::now().naive_utc() - chrono::Duration::days(i64::from(personal_days));
    match db.run(move |c| anonymise_before(c, personal)).await {
        Ok(a) if a == Anonymised::default() => {}
        Ok(a) => tracing::info!(
            access_log = a.log_entries,
            credentials = a.credentials,
            badge_events = a.badge_events,
            personal_days,
            "personal data past its retention anonymised"
        ),
        Err(e) => tracing::warn!(error = %e, "personal data retention failed"),
    }
}
