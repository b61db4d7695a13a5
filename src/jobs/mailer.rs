//! Sends the outbox: claims due rows, sends each outside any transaction, then marks it sent.
//! A crash after sending and before marking resends the same Message-ID: at least once, never lost.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Notify;

use crate::db::{naive, outbox, Db, DbError};
use crate::email::compose::QueuedMail;
use crate::email::Mailer;
use crate::metrics::Metrics;

pub struct MailJob {
    pub db: Db,
    pub mailer: Mailer,
    pub from: String,
    pub waker: Arc<Notify>,
    pub metrics: Arc<Metrics>,
    pub poll: Duration,
}

impl MailJob {
    pub async fn run(self) {
        tracing::info!(target = %self.mailer.target(), "outbox mailer started");
        loop {
            let sent = match self.drain_once().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox could not be read");
                    0
                }
            };
            if sent == 0 {
                tokio::select! {
                    _ = self.waker.notified() => {}
                    _ = tokio::time::sleep(self.poll) => {}
                }
            }
        }
    }

    /// Claims a batch of due rows, sends them side by side, and records the outcome; returns
    /// how many rows were attempted. The sends run in parallel, so the batch takes about as long
    /// as its slowest send, which the claim's lease covers.
    pub async fn drain_once(&self) -> Result<usize, DbError> {
        let now = naive(Utc::now());
        let rows = self.db.run(move |c| outbox::claim(c, now, BATCH)).await?;
        let n = rows.len();
        let mut sending = Vec::with_capacity(n);
        for row in rows {
            match serde_json::from_str::<QueuedMail>(&row.payload) {
                Ok(mail) => {
                    let (mailer, outgoing) = (self.mailer.clone(), mail.into_outgoing(&self.from));
                    sending.push((
                        row,
                        tokio::task::spawn_blocking(move || mailer.send(&outgoing)),
                    ));
                }
                Err(e) => {
                    tracing::error!(id = %row.id, error = %e, "outbox row is not a mail; parked");
                    let park = naive(Utc::now() + chrono::Duration::days(3650));
                    let msg = format!("unreadable payload: {e}");
                    self.db
                        .run(move |c| outbox::mark_failed(c, &row.id, &msg, park))
                        .await?;
                }
            }
        }
        let mut sent = Vec::with_capacity(n);
        for (row, handle) in sending {
            let result = handle
                .await
                .unwrap_or_else(|e| Err(crate::email::MailError::InvalidMessage(e.to_string())));
            match result {
                Ok(()) => {
                    self.metrics
                        .events
                        .mails_sent
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(id = %row.id, kind = %row.kind, "mail sent");
                    sent.push(row.id);
                }
                Err(e) => {
                    self.metrics
                        .events
                        .mail_failures
                        .fetch_add(1, Ordering::Relaxed);
                    let retry = naive(Utc::now() + outbox::retry_delay(row.attempts));
                    tracing::warn!(id = %row.id, kind = %row.kind, attempt = row.attempts + 1, error = %e, "mail not sent; will retry");
                    let msg = e.to_string();
                    self.db
                        .run(move |c| outbox::mark_failed(c, &row.id, &msg, retry))
                        .await?;
                }
            }
        }
        if !sent.is_empty() {
            let now = naive(Utc::now());
            self.db
                .run(move |c| outbox::mark_sent(c, &sent, now))
                .await?;
        }
        Ok(n)
    }
}

/// Mails claimed and sent together.
const BATCH: i64 = 16;
