//! Doors: a badge scan decided from the grants in memory and answered at once on `cmd/unlock` or
//! `cmd/deny`; the decision logged and the booking checked in afterwards, off the hot path;
//! presence on a booked desk checking its booking in. Grant lists are in `grant_lists.rs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, QoS};
use serde_json::json;

use crate::bookings::{building_check_in_due, check_in_by_building};
use crate::db::access::{self, AccessLogRow};
use crate::db::{Db, DbError};
use crate::domain::access_control::{credential_hash, decide, Door, ReplayGuard};
use crate::domain::command::Command;
use crate::domain::epoch::now_ms;
use crate::domain::policy::CHECK_IN_EARLY;
use crate::domain::telemetry::read_badge;
use crate::domain::{DenyReason, DeviceClass};
use crate::fleet::Fleet;
use crate::grants::Grants;
use crate::jobs::supervisor::Supervisor;
use crate::metrics::Metrics;

/// The job name of the task that writes the access log and checks bookings in.
pub const JOB: &str = "door_after_work";
/// Decisions, check-ins and notices waiting for that task; past this, new ones are dropped
/// (counted in `spazi_access_queue_full_total`) rather than grow memory or stall the event loop.
pub const AFTER_QUEUE: usize = 20_000;
/// Access-log rows kept for a later attempt while the database is unavailable; the oldest are
/// dropped beyond this.
const PENDING_ROWS: usize = 20_000;

/// What happens after a decision, off the hot path.
enum After {
    Logged(Box<AccessLogRow>),
    /// A booking whose credential opened a door, or whose desk sensed presence: check it in.
    CheckIn {
        booking_id: String,
        site_id: String,
    },
    /// Bookings another instance changed: reload their grants.
    Reload(Vec<String>),
}

/// Where door answers go: an MQTT 5 connection (so the broker drops an answer past its expiry
/// before delivering it) while it is up, else the ingest connection (the expiry is always in the
/// payload too).
struct Answers {
    v5: Option<rumqttc::v5::AsyncClient>,
    v5_up: Arc<AtomicBool>,
}

/// An MQTT 5 connection for door answers, reconnecting with bounded backoff.
pub struct AnswerBroker {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl Answers {
    fn connect(broker: Option<AnswerBroker>) -> Answers {
        let up = Arc::new(AtomicBool::new(false));
        let Some(b) = broker else {
            return Answers {
                v5: None,
                v5_up: up,
            };
        };
        use rumqttc::v5::{Event, Incoming, MqttOptions};
        let mut opts = MqttOptions::new(b.client_id, b.host, b.port);
        opts.set_keep_alive(Duration::from_secs(30))
            .set_clean_start(true);
        if let Some(user) = b.username {
            opts.set_credentials(user, b.password.unwrap_or_default());
        }
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        net.set_connection_timeout(5);
        opts.set_network_options(net);
        let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(opts, 10_000);
        let flag = up.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        flag.store(true, Ordering::Relaxed);
                        backoff = Duration::from_millis(100);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if flag.swap(false, Ordering::Relaxed) {
                            tracing::warn!(error = %e, "door answer connection (MQTT 5) lost; answering on the ingest connection");
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
        Answers {
            v5: Some(client),
            v5_up: up,
        }
    }

    fn send(&self, fallback: &AsyncClient, topic: String, body: String, ttl_ms: i64) -> bool {
        if let Some(v5) = self
            .v5
            .as_ref()
            .filter(|_| self.v5_up.load(Ordering::Relaxed))
        {
            let properties = rumqttc::v5::mqttbytes::v5::PublishProperties {
                message_expiry_interval: Some(((ttl_ms + 999) / 1000).max(1) as u32),
                ..Default::default()
            };
            if v5
                .try_publish_with_properties(
                    topic.clone(),
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    false,
                    body.clone(),
                    properties,
                )
                .is_ok()
            {
                return true;
            }
        }
        fallback
            .try_publish(topic, QoS::AtLeastOnce, false, body)
            .is_ok()
    }
}

/// Door decisions for one service instance.
pub struct Doors {
    answers: Answers,
    grants: Arc<Grants>,
    fleet: Arc<Fleet>,
    metrics: Arc<Metrics>,
    guard: Mutex<ReplayGuard>,
    after: flume::Sender<After>,
    /// A grants notice was dropped with a full queue: every grant is reloaded instead.
    reload_all: Arc<AtomicBool>,
    unlock_ttl_ms: i64,
    unlock_secs: i64,
}

impl Doors {
    /// Starts the task that logs decisions and checks bookings in, under `supervisor`.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        supervisor: &Supervisor,
        db: Db,
        grants: Arc<Grants>,
        fleet: Arc<Fleet>,
        metrics: Arc<Metrics>,
        unlock_ttl_ms: i64,
        unlock_secs: i64,
        answer_broker: Option<AnswerBroker>,
    ) -> Arc<Doors> {
        let (tx, rx) = flume::bounded(AFTER_QUEUE);
        let reload_all = Arc::new(AtomicBool::new(false));
        let writer = AfterWork {
            db,
            grants: grants.clone(),
            metrics: metrics.clone(),
            rx,
            reload_all: reload_all.clone(),
        };
        supervisor.spawn(JOB, move || writer.clone().run());
        Arc::new(Doors {
            answers: Answers::connect(answer_broker),
            grants,
            fleet,
            metrics,
            guard: Mutex::new(ReplayGuard::default()),
            after: tx,
            reload_all,
            unlock_ttl_ms,
            unlock_secs,
        })
    }

    /// Queues work for the writer without waiting; false (counted) when its queue is full.
    fn queue(&self, item: After) -> bool {
        match self.after.try_send(item) {
            Ok(()) => true,
            Err(flume::TrySendError::Full(_)) => {
                self.metrics
                    .access
                    .after_queue_full
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!("door writer queue full: an access-log row, check-in or grants notice was dropped");
                false
            }
            Err(flume::TrySendError::Disconnected(_)) => false,
        }
    }

    /// Decides a badge scan from `site`/`device` and queues the answer on `client`. Never waits:
    /// it runs on the MQTT event loop's task.
    pub fn on_badge(
        &self,
        client: &AsyncClient,
        site: &str,
        device: &str,
        payload: &[u8],
        received: Instant,
    ) {
        let Some(door) = self.fleet.get(device) else {
            return;
        };
        if door.site_id != site || door.class != DeviceClass::DoorReader {
            return;
        }
        let now = now_ms();
        let scan = read_badge(payload);
        let mut hash = None;
        let decision = scan.credential.clone().and_then(|credential| {
            hash = Some(credential_hash(&credential));
            let (seq, ts) = (scan.seq.unwrap_or(-1), scan.ts.unwrap_or(0));
            self.guard
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .check(device, seq, ts, now)?;
            let candidates = self.grants.candidates(hash.as_deref().unwrap_or_default());
            let here = Door {
                site_id: site,
                zone_id: door.zone_id.as_deref(),
            };
            decide(candidates.iter().map(|g| g.as_ref()), here, now).map(|g| {
                (
                    g.booking_id.clone(),
                    g.user_id.clone(),
                    g.starts_ms,
                    g.ends_ms,
                )
            })
        });
        let mut nonce = None;
        if let Some(seq) = scan.seq {
            let (name, m) = match &decision {
                Ok(_) => (
                    "unlock",
                    json!({"badge_seq": seq, "duration_s": self.unlock_secs}),
                ),
                Err(reason) => ("deny", json!({"badge_seq": seq, "reason": reason.as_str()})),
            };
            let cmd = Command::new(site, device, name, now, self.unlock_ttl_ms, m);
            nonce = Some(cmd.nonce.clone());
            let payload = cmd.payload();
            if !self
                .answers
                .send(client, cmd.topic, payload, self.unlock_ttl_ms)
            {
                tracing::warn!(
                    door = device,
                    "door answer not queued: the MQTT client is busy"
                );
            }
        }
        let latency_us = received.elapsed().as_micros().min(i64::MAX as u128) as i64;
        let a = &self.metrics.access;
        match &decision {
            Ok(_) => a.granted.fetch_add(1, Ordering::Relaxed),
            Err(_) => a.denied.fetch_add(1, Ordering::Relaxed),
        };
        a.observe_latency_us(latency_us);
        let (booking_id, user_id) = match &decision {
            Ok((b, u, _, _)) => (Some(b.clone()), Some(u.clone())),
            Err(_) => (None, None),
        };
        let row = AccessLogRow {
            id: uuid::Uuid::now_v7().to_string(),
            site_id: site.to_owned(),
            door_id: device.to_owned(),
            zone_id: door.zone_id.clone(),
            at: crate::domain::epoch::to_naive(now),
            badge_ts: scan.ts.map(crate::domain::epoch::to_naive),
            badge_seq: scan.seq,
            credential_sha256: hash,
            booking_id: booking_id.clone(),
            user_id,
            decision: if decision.is_ok() {
                "granted"
            } else {
                "denied"
            }
            .into(),
            reason: decision
                .as_ref()
                .err()
                .map(|r: &DenyReason| r.as_str().to_owned()),
            nonce,
            latency_us,
            anonymised: false,
        };
        self.queue(After::Logged(Box::new(row)));
        if let Ok((booking_id, _, starts_ms, ends_ms)) = decision {
            if building_check_in_due(&self.grants, &booking_id, starts_ms, ends_ms, now)
                && !self.queue(After::CheckIn {
                    booking_id: booking_id.clone(),
                    site_id: site.to_owned(),
                })
            {
                // Tried again at the next scan.
                self.grants.check_in_failed(&booking_id);
            }
        }
    }

    /// Another instance (or this one) announced bookings whose grants changed.
    pub fn on_notice(&self, payload: &[u8]) {
        #[derive(serde::Deserialize)]
        struct Notice {
            bookings: Vec<String>,
        }
        match serde_json::from_slice::<Notice>(payload) {
            Ok(n) if !n.bookings.is_empty() && n.bookings.len() <= 10_000 => {
                if !self.queue(After::Reload(n.bookings)) {
                    self.reload_all.store(true, Ordering::Relaxed);
                }
            }
            _ => tracing::warn!("a grants notice that is not {{\"bookings\":[…]}} was ignored"),
        }
    }

    /// A presence sensor saw someone at `ts`: the booking of its resource on at that moment is
    /// checked in.
    pub fn on_presence(&self, device_num: i32, ts: i64) {
        let Some(sensor) = self.fleet.get_num(device_num) else {
            return;
        };
        let Some(resource) = sensor.resource_id.as_deref() else {
            return;
        };
        let Some(g) = self.grants.booked_at(
            &sensor.site_id,
            resource,
            ts,
            CHECK_IN_EARLY.num_milliseconds(),
        ) else {
            return;
        };
        if building_check_in_due(
            &self.grants,
            &g.booking_id,
            g.starts_ms,
            g.ends_ms,
            now_ms(),
        ) && !self.queue(After::CheckIn {
            booking_id: g.booking_id.clone(),
            site_id: g.site_id.clone(),
        }) {
            self.grants.check_in_failed(&g.booking_id);
        }
    }
}

/// Whether an error may go away if the same write is tried again: the database busy, locked or
/// unreachable, a deadlock or serialization failure. Anything else (text it cannot store, a
/// constraint) fails the same way every time.
pub fn is_transient(e: &DbError) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    match e {
        DbError::Busy(_) | DbError::Unavailable(_) => true,
        DbError::Query(Error::DatabaseError(kind, info)) => {
            matches!(
                kind,
                DatabaseErrorKind::SerializationFailure | DatabaseErrorKind::ClosedConnection
            ) || info.message().contains("deadlock")
        }
        DbError::Query(Error::BrokenTransactionManager | Error::AlreadyInTransaction) => true,
        _ => false,
    }
}

/// Writes decisions to the access log in batches, reloads announced grants and checks bookings
/// in. A row the database refuses for good is logged and skipped; rows that met a transient
/// error wait (at most [`PENDING_ROWS`]) for the next round, so check-ins and reloads go on.
#[derive(Clone)]
struct AfterWork {
    db: Db,
    grants: Arc<Grants>,
    metrics: Arc<Metrics>,
    rx: flume::Receiver<After>,
    reload_all: Arc<AtomicBool>,
}

impl AfterWork {
    async fn run(self) {
        let mut pending: Vec<AccessLogRow> = Vec::new();
        let mut delay = Duration::from_millis(50);
        loop {
            let first = if pending.is_empty() {
                match self.rx.recv_async().await {
                    Ok(item) => Some(item),
                    Err(_) => return,
                }
            } else {
                // Rows are waiting for the database: try again after `delay` at the latest.
                tokio::time::timeout(delay, self.rx.recv_async())
                    .await
                    .ok()
                    .and_then(Result::ok)
            };
            let mut check_ins = Vec::new();
            let mut reload: Vec<String> = Vec::new();
            let mut next = first;
            while let Some(item) = next {
                match item {
                    After::Logged(row) => pending.push(*row),
                    After::CheckIn {
                        booking_id,
                        site_id,
                    } => check_ins.push((booking_id, site_id)),
                    After::Reload(ids) => reload.extend(ids),
                }
                next = if pending.len() < 1_000 {
                    self.rx.try_recv().ok()
                } else {
                    None
                };
            }
            let mut failure = None;
            if !pending.is_empty() {
                match self.write_log(std::mem::take(&mut pending)).await {
                    Ok(()) => delay = Duration::from_millis(50),
                    Err((rows, e)) => {
                        pending = rows;
                        if pending.len() > PENDING_ROWS {
                            let drop = pending.len() - PENDING_ROWS;
                            pending.drain(..drop);
                            tracing::warn!(
                                rows = drop,
                                "access-log rows dropped: the database stayed unavailable"
                            );
                        }
                        failure = Some(format!("access log not written: {e}"));
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
            if self.reload_all.swap(false, Ordering::Relaxed) {
                let since = chrono::Utc::now().naive_utc() - chrono::Duration::days(1);
                match self.db.run(move |c| access::grants(c, None, since)).await {
                    Ok(rows) => rows.iter().for_each(|r| self.grants.upsert_from_peer(r)),
                    Err(e) => {
                        self.reload_all.store(true, Ordering::Relaxed);
                        failure = Some(format!("grants not reloaded: {e}"));
                    }
                }
            }
            if !reload.is_empty() {
                match self
                    .db
                    .run(move |c| {
                        let mut rows = Vec::new();
                        for id in reload {
                            rows.extend(access::grant(c, &id)?);
                        }
                        Ok::<_, DbError>(rows)
                    })
                    .await
                {
                    Ok(rows) => rows.iter().for_each(|r| self.grants.upsert_from_peer(r)),
                    Err(e) => {
                        // The periodic reload of every grant catches up.
                        self.reload_all.store(true, Ordering::Relaxed);
                        failure = Some(format!("announced grants not reloaded: {e}"));
                    }
                }
            }

            for (id, site) in check_ins {
                match check_in_by_building(&self.db, &self.grants, &id, chrono::Utc::now()).await {
                    Ok(Some(_)) => {
                        self.metrics
                            .access
                            .checked_in
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::info!(booking = %id, site = %site, "booking checked in by the building");
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(booking = %id, error = %e, "automatic check-in failed")
                    }
                }
            }
            match failure {
                None => self.metrics.jobs.ok(JOB),
                Some(e) => self.metrics.jobs.failed(JOB, &e),
            }
        }
    }

    /// Writes `rows` in one statement; when the database refuses it for good, row by row,
    /// skipping (and logging) each row it refuses. Gives the rows back on a transient error.
    async fn write_log(&self, rows: Vec<AccessLogRow>) -> Result<(), (Vec<AccessLogRow>, DbError)> {
        let batch = rows.clone();
        let e = match self.db.run(move |c| access::log_decisions(c, &batch)).await {
            Ok(_) => return Ok(()),
            Err(e) if is_transient(&e) => return Err((rows, e)),
            Err(e) => e,
        };
        tracing::warn!(rows = rows.len(), error = %e, "access log refused a batch; writing it row by row");
        let all = rows.clone();
        // How far it got, the rows refused for good, and the transient error that stopped it.
        let outcome = self
            .db
            .run(move |c| {
                let mut refused = Vec::new();
                for (i, row) in rows.iter().enumerate() {
                    match access::log_decisions(c, std::slice::from_ref(row)) {
                        Ok(_) | Err(DbError::Duplicate) => {}
                        Err(e) if is_transient(&e) => {
                            return Ok::<_, DbError>((i, refused, Some(e)))
                        }
                        Err(e) => {
                            refused.push((row.id.clone(), row.door_id.clone(), e.to_string()))
                        }
                    }
                }
                Ok((rows.len(), refused, None))
            })
            .await;
        let (done, refused, stopped) = match outcome {
            Ok(o) => o,
            Err(e) => (0, Vec::new(), Some(e)),
        };
        for (id, door, error) in refused {
            self.metrics
                .access
                .log_refused
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(row = %id, door = %door, %error, "access-log row refused by the database; skipped");
        }
        match stopped {
            None => Ok(()),
            Some(e) => Err((all.into_iter().skip(done).collect(), e)),
        }
    }
}
