//! Raw readings and device events are kept for the configured period, then removed; the
//! 15-minute roll-ups stay. Personal data (who badged where and when: the access log's credential
//! hash, booking and user, stored badge events, door credentials; and the rendered body of sent
//! mail, with its names, addresses, PIN and QR token) is anonymised after its own period; the
//! decisions, doors and times, and which mail was sent when, stay for the statistics.

use crate::db::access::{anonymise_before, Anonymised};
use crate::db::outbox::scrub_sent_before;
use crate::db::telemetry::delete_raw_before;
use crate::db::{Db, DbError};

/// One pass of every retention rule, logging what it removed and any failure.
pub async fn pass(db: &Db, keep_days: u32, personal_days: u32) {
    if let Err(e) = try_pass(db, keep_days, personal_days).await {
        tracing::warn!(error = %e, "retention pass failed");
    }
}

/// One pass of every retention rule; each rule is tried, the first error is returned.
pub async fn try_pass(db: &Db, keep_days: u32, personal_days: u32) -> Result<(), DbError> {
    let cutoff = crate::domain::epoch::now_ms() - i64::from(keep_days) * 86_400_000;
    let raw = db.run(move |c| delete_raw_before(c, cutoff)).await;
    if let Ok(n @ 1..) = raw {
        tracing::info!(
            rows = n,
            keep_days,
            "raw telemetry past its retention removed"
        );
    }
    let personal =
        chrono::Utc::now().naive_utc() - chrono::Duration::days(i64::from(personal_days));
    let anonymised = db.run(move |c| anonymise_before(c, personal)).await;
    match &anonymised {
        Ok(a) if *a == Anonymised::default() => {}
        Ok(a) => tracing::info!(
            access_log = a.log_entries,
            credentials = a.credentials,
            badge_events = a.badge_events,
            personal_days,
            "personal data past its retention anonymised"
        ),
        Err(_) => {}
    }
    let mail = db.run(move |c| scrub_sent_before(c, personal)).await;
    if let Ok(n @ 1..) = mail {
        tracing::info!(
            mails = n,
            personal_days,
            "sent mail past its retention emptied"
        );
    }
    raw?;
    anonymised?;
    mail?;
    Ok(())
}
