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

#[derive(Clone)]
pub struct MailJob {
    pub db: Db,
    pub mailer: Mailer,
    pub from: String,
    pub waker: Arc<Notify>,
    pub metrics: Arc<Metrics>,
    pub poll: Duration,
}

impl MailJob {
    /// Drains the outbox whenever woken or every `poll`; each batch is a pass of job `mailer`.
    pub async fn run(self) {
        tracing::info!(target = %self.mailer.target(), "outbox mailer started");
        loop {
            let sent = match self.drain_once().await {
                Ok(n) => {
                    self.metrics.jobs.ok(JOB);
                    n
                }
                Err(e) => {
                    self.metrics.jobs.failed(JOB, &e);
                    0
                }
            };
            if sent < BATCH as usize {
                tokio::select! {
                    _ = self.waker.notified() => {}
                    _ = tokio::time::sleep(self.poll) => {}
                }
            }
        }
    }

    /// Claims a batch of due rows, sends them [`SENDERS`] at a time, and records the outcome;
    /// returns how many rows were attempted. A batch takes about `BATCH / SENDERS` times its
    /// slowest send, which the claim's lease covers.
    pub async fn drain_once(&self) -> Result<usize, DbError> {
        let now = naive(Utc::now());
        let rows = self.db.run(move |c| outbox::claim(c, now, BATCH)).await?;
        let n = rows.len();
        let mut sending = Vec::with_capacity(n);
        let mut readable = Vec::with_capacity(n);
        for row in rows {
            match serde_json::from_str::<QueuedMail>(&row.payload) {
                Ok(mail) => readable.push((row, mail.into_outgoing(&self.from))),
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
        // Each sender takes every SENDERS-th mail and sends its share one after the other.
        let mut shares: Vec<Vec<_>> = (0..SENDERS).map(|_| Vec::new()).collect();
        for (i, item) in readable.into_iter().enumerate() {
            shares[i % SENDERS].push(item);
        }
        for share in shares.into_iter().filter(|s| !s.is_empty()) {
            let mailer = self.mailer.clone();
            sending.push(tokio::task::spawn_blocking(move || {
                let started = std::time::Instant::now();
                share
                    .into_iter()
                    // Past half the lease, the rest waits for the lease to run out and is
                    // claimed again, so no other instance sends a mail this one is sending.
                    .take_while(|_| started.elapsed() < SEND_WITHIN)
                    .map(|(row, outgoing)| {
                        let result = mailer.send(&outgoing);
                        (row, result)
                    })
                    .collect::<Vec<_>>()
            }));
        }
        let mut outcomes = Vec::with_capacity(n);
        for handle in sending {
            match handle.await {
                Ok(done) => outcomes.extend(done),
                // The rows of a sender that panicked stay claimed and are retried after the lease.
                Err(e) => tracing::error!(error = %e, "a mail sender died"),
            }
        }
        let mut sent = Vec::with_capacity(n);
        for (row, result) in outcomes {
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

const JOB: &str = "mailer";

/// Mails claimed together, and marked sent together: two statements per batch, so the mailer
/// keeps up while bookings compete for the same database threads.
const BATCH: i64 = 128;
/// Mails of a batch sent at once (each sender sends its share in turn).
const SENDERS: usize = 8;
/// A sender starts no mail of its share after this much of the claim's lease has passed.
const SEND_WITHIN: Duration = Duration::from_secs(15);
