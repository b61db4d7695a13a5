//! The ingest writer's side: decoding a batch against the contract, committing it (whole, or
//! message by message when the database refuses the batch's data), and telling the fleet.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::db::telemetry::{insert_batch, learn_device, EventRow, NewDevice, ReadingRow, Stored};
use crate::db::DbError;
use crate::domain::epoch::now_ms;
use crate::domain::telemetry::{
    decode, parse_topic, Decoded, Meta, Metric, Refusal, Reject, TopicKind,
};
use crate::fleet::Heard;

use super::{Incoming, Pipeline, RateLimited, COMMIT_TRIES};

pub(super) struct Writer {
    pub(super) p: Pipeline,
    log: RateLimited,
}

/// One batch, decoded.
#[derive(Default)]
pub(super) struct Batch {
    rows: Vec<ReadingRow>,
    events: Vec<EventRow>,
    heard: Vec<(i32, Heard)>,
    values: Vec<(Metric, f64)>,
    newest_ts: i64,
}

impl Batch {
    /// The rows of one message, and what the fleet will hear of them.
    fn push_readings(&mut self, device: i32, ts: i64, seq: i64, values: Vec<(Metric, f64)>) {
        let minute = ReadingRow::minute_of(ts);
        let from = self.values.len();
        for &(metric, value) in &values {
            self.rows.push(ReadingRow {
                minute,
                device,
                metric: metric.code(),
                seq,
                ts,
                value,
            });
        }
        self.values.extend(values);
        self.heard.push((
            device,
            Heard::Readings {
                ts,
                from,
                to: self.values.len(),
            },
        ));
        self.newest_ts = self.newest_ts.max(ts);
    }
}

impl Writer {
    pub(super) fn new(p: Pipeline) -> Self {
        Writer {
            p,
            log: RateLimited::new(Duration::from_secs(10), 10),
        }
    }

    fn reject(&mut self, topic: &str, refusal: Refusal) {
        self.p.metrics.telemetry.rejected[refusal.reason.index()].fetch_add(1, Ordering::Relaxed);
        if self.log.allow() {
            tracing::warn!(topic, reason = refusal.reason.label(), detail = %refusal.detail, "telemetry message refused");
        }
    }

    /// Decodes a batch against the contract, learning devices from their `meta` first.
    pub(super) async fn prepare(&mut self, batch: &[Incoming]) -> Batch {
        let metrics = self.p.metrics.clone();
        let t = &metrics.telemetry;
        t.received.fetch_add(batch.len() as u64, Ordering::Relaxed);
        let now = now_ms();
        // Devices describe themselves first, so their readings in the same batch are admitted.
        for m in batch {
            if let Some(topic) = parse_topic(&m.publish.topic) {
                if topic.kind == TopicKind::Meta {
                    self.learn(topic.site, topic.device, &m.publish.payload, now)
                        .await;
                }
            }
        }
        let mut d = Batch::default();
        for m in batch {
            let name = m.publish.topic.as_str();
            let Some(topic) = parse_topic(name) else {
                self.reject(
                    name,
                    Refusal {
                        reason: Reject::UnknownTopic,
                        detail: "outside the contract".into(),
                    },
                );
                continue;
            };
            if topic.kind == TopicKind::Meta {
                continue;
            }
            let Some(adm) = self.p.fleet.admit(topic.site, topic.device) else {
                self.reject(
                    name,
                    Refusal {
                        reason: Reject::UnknownDevice,
                        detail: format!("no device {}", topic.device),
                    },
                );
                continue;
            };
            if !adm.site_matches {
                self.reject(
                    name,
                    Refusal {
                        reason: Reject::SiteMismatch,
                        detail: format!("{} is not at {}", topic.device, topic.site),
                    },
                );
                continue;
            }
            let decoded = match decode(topic.kind, &m.publish.payload, now) {
                Ok(x) => x,
                Err(r) => {
                    self.reject(name, r);
                    continue;
                }
            };
            match decoded {
                Decoded::Readings { ts, seq, values } => {
                    d.push_readings(adm.num, ts, seq, values);
                    d.newest_ts = d.newest_ts.max(ts);
                }
                Decoded::Event {
                    ts,
                    seq,
                    kind,
                    body,
                    values,
                    active,
                } => {
                    d.events.push(EventRow {
                        device: adm.num,
                        seq,
                        ts,
                        kind: kind.as_str().into(),
                        body,
                    });
                    if !values.is_empty() {
                        d.push_readings(adm.num, ts, seq, values);
                    }
                    if let Some(active) = active {
                        d.heard.push((adm.num, Heard::Fault { active }));
                    }
                    d.newest_ts = d.newest_ts.max(ts);
                }
                Decoded::Status { online, .. } => d.heard.push((adm.num, Heard::Status { online })),
                Decoded::CmdResult { .. } | Decoded::Meta(_) => {}
            }
        }
        d
    }

    /// Counts what a committed batch stored and tells the fleet.
    pub(super) fn finish(&self, d: &Batch, stored: Stored) {
        let t = &self.p.metrics.telemetry;
        let groups = d.rows.len() + d.events.len();
        let written = stored.readings + stored.events;
        if groups > written {
            t.duplicates
                .fetch_add((groups - written) as u64, Ordering::Relaxed);
        }
        t.readings_stored
            .fetch_add(stored.readings as u64, Ordering::Relaxed);
        t.events_stored
            .fetch_add(stored.events as u64, Ordering::Relaxed);
        t.batches.fetch_add(1, Ordering::Relaxed);
        if d.newest_ts > 0 {
            t.lag_ms.store(
                now_ms().saturating_sub(d.newest_ts).max(0) as u64,
                Ordering::Relaxed,
            );
        }
        self.p.fleet.apply(&d.heard, &d.values, now_ms());
        if let Some(doors) = &self.p.doors {
            for (num, heard) in &d.heard {
                if let Heard::Readings { ts, from, to } = heard {
                    let seen = d.values[*from..*to]
                        .iter()
                        .any(|&(m, v)| m == Metric::Occupied && v > 0.5);
                    if seen {
                        doors.on_presence(*num, *ts);
                    }
                }
            }
        }
    }

    /// Registers or updates a device from its retained `meta`.
    async fn learn(&mut self, site: &str, device: &str, payload: &[u8], now: i64) {
        let topic = format!("spazi/v1/{site}/{device}/meta");
        let meta: Meta = match decode(TopicKind::Meta, payload, now) {
            Ok(Decoded::Meta(m)) => m,
            Ok(_) => return,
            Err(r) => return self.reject(&topic, r),
        };
        if let Some(known) = self.p.fleet.get(device) {
            if known.site_id != site {
                return self.reject(
                    &topic,
                    Refusal {
                        reason: Reject::SiteMismatch,
                        detail: format!("{device} is not at {site}"),
                    },
                );
            }
            let unchanged = known.class == meta.class
                && (meta.model.is_none() || known.model == meta.model)
                && (meta.firmware.is_none() || known.firmware == meta.firmware)
                && (meta.zone.is_none() || known.zone_id == meta.zone)
                && (meta.report_interval_s.is_none()
                    || Some(known.report_interval_s) == meta.report_interval_s);
            if unchanged {
                return;
            }
        }
        let Some(tz) = (self.p.site_tz)(site) else {
            return self.reject(
                &topic,
                Refusal {
                    reason: Reject::UnknownDevice,
                    detail: format!("no site {site}"),
                },
            );
        };
        if !(self.p.place_ok)(site, meta.zone.as_deref(), meta.resource.as_deref()) {
            return self.reject(
                &topic,
                Refusal {
                    reason: Reject::Schema,
                    detail: "zone or resource is not at this site".into(),
                },
            );
        }
        let known = self.p.fleet.get(device);
        let new = NewDevice {
            id: device.to_owned(),
            site_id: site.to_owned(),
            class: meta.class.as_str().to_owned(),
            zone_id: meta.zone.or(known.as_ref().and_then(|k| k.zone_id.clone())),
            resource_id: meta
                .resource
                .or(known.as_ref().and_then(|k| k.resource_id.clone())),
            gateway_id: meta
                .gateway
                .or(known.as_ref().and_then(|k| k.gateway_id.clone())),
            model: meta.model.or(known.as_ref().and_then(|k| k.model.clone())),
            firmware: meta
                .firmware
                .or(known.as_ref().and_then(|k| k.firmware.clone())),
            report_interval_s: meta
                .report_interval_s
                .or(known.as_ref().map(|k| k.report_interval_s))
                .unwrap_or_else(|| meta.class.report_interval_s()),
            status: "unknown".into(),
            source: "meta".into(),
            created_at: chrono::Utc::now().naive_utc(),
        };
        match self.p.db.run(move |c| learn_device(c, &new)).await {
            Ok(row) => {
                tracing::debug!(device, site, "device described itself");
                self.p.fleet.upsert(&row, tz);
            }
            Err(e) => self.reject(
                &topic,
                Refusal {
                    reason: Reject::Schema,
                    detail: e.to_string(),
                },
            ),
        }
    }
}

/// Commits a batch. A database that answers busy or unreachable is tried again a few times; a
/// batch whose rows the database refuses as data is written message by message, so one bad row
/// cannot hold the rest. Any other failure (and a panic) is returned: the writer then leaves the
/// batch unacknowledged, and the broker delivers it again.
pub(super) async fn commit(p: Pipeline, d: Arc<Batch>) -> Result<Stored, DbError> {
    if d.rows.is_empty() && d.events.is_empty() {
        return Ok(Stored::default());
    }
    let mut delay = Duration::from_millis(50);
    let mut tries = 0;
    loop {
        tries += 1;
        let batch = d.clone();
        match p
            .db
            .run(move |c| insert_batch(c, &batch.rows, &batch.events))
            .await
        {
            Ok(stored) => return Ok(stored),
            Err(e) if is_transient(&e) && tries < COMMIT_TRIES => {
                p.metrics
                    .telemetry
                    .batch_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "telemetry batch not committed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) if refuses_data(&e) => {
                p.metrics
                    .telemetry
                    .batch_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "telemetry batch refused; writing it row by row");
                return commit_one_by_one(&p, &d).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The database may answer differently when asked again.
fn is_transient(e: &DbError) -> bool {
    matches!(e, DbError::Unavailable(_) | DbError::Busy(_))
}

/// The database refused the rows themselves; asking again with the same rows cannot succeed.
fn refuses_data(e: &DbError) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    match e {
        DbError::InvalidText(_) => true,
        DbError::Query(Error::DatabaseError(kind, _)) => matches!(
            kind,
            DatabaseErrorKind::CheckViolation
                | DatabaseErrorKind::NotNullViolation
                | DatabaseErrorKind::ForeignKeyViolation
        ),
        _ => false,
    }
}

/// Writes a refused batch one row at a time. A row refused as data is counted and dropped (its
/// message is acknowledged with the batch); any other failure fails the whole batch, whose
/// stored rows the key then absorbs on redelivery.
async fn commit_one_by_one(p: &Pipeline, d: &Batch) -> Result<Stored, DbError> {
    let mut total = Stored::default();
    let refused = |what: &str, e: DbError| {
        p.metrics.telemetry.rejected[Reject::Schema.index()].fetch_add(1, Ordering::Relaxed);
        tracing::warn!(what, error = %e, "telemetry row refused by the database");
    };
    for row in &d.rows {
        let r = [*row];
        match p.db.run(move |c| insert_batch(c, &r, &[])).await {
            Ok(s) => total.readings += s.readings,
            Err(e) if refuses_data(&e) => refused("reading", e),
            Err(e) => return Err(e),
        }
    }
    for ev in &d.events {
        let e = [ev.clone()];
        match p.db.run(move |c| insert_batch(c, &[], &e)).await {
            Ok(s) => total.events += s.events,
            Err(e) if refuses_data(&e) => refused("event", e),
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}
