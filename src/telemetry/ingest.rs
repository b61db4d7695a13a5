//! The ingest pipeline: one MQTT consumer with a fixed client id and a persistent session,
//! a writer that commits batches, and acknowledgements sent only after the commit.
//!
//! The event loop task only reads the network and forwards publishes; it never waits on the
//! database or the writer, so the acknowledgements the writer queues are always sent. What waits
//! is bounded whatever the broker sends: at most [`MAX_QUEUED`] messages for the writer (one that
//! finds the queue full is dropped unacknowledged, and once the writer has caught up the consumer
//! reconnects so the broker delivers it again), and at most [`MAX_UNACKED`] committed messages
//! whose acknowledgement the event loop has not taken yet (packet ids only; the writer takes no
//! more messages until they are sent). The writer drains what has
//! arrived (up to [`MAX_BATCH`]), decodes it against the contract, writes readings and events in
//! one transaction (idempotent on `(minute, device, metric, seq)`), then updates the fleet and
//! acknowledges the batch in arrival order.
//!
//! A batch is acknowledged only after its commit returned success. A commit that failed or
//! panicked leaves the batch unacknowledged: the writer stops acknowledging on that connection
//! and the event loop drops it, so the broker delivers the session's unacknowledged messages
//! again on the reconnect, and the key absorbs whatever part of them was stored. A crash before
//! the commit likewise leaves the messages unacknowledged; a crash after the commit but before
//! the acknowledgements makes the broker redeliver messages that the key then absorbs.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono_tz::Tz;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, NetworkOptions, Packet, Publish, QoS};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::db::telemetry::Stored;
use crate::db::{Db, DbError};
use crate::domain::epoch::now_ms;
use crate::domain::telemetry::EvtKind;
use crate::domain::telemetry::{parse_topic, TopicKind};
use crate::fleet::Fleet;
use crate::metrics::Metrics;
use crate::telemetry::doors::Doors;
use crate::telemetry::grant_lists::GRANTS_NOTICE_TOPIC;

mod writer;
use writer::{commit, Batch, Writer};

/// Messages per committed batch, at most.
pub const MAX_BATCH: usize = 5_000;
/// Batches committing at once. They are finished (fleet updated, messages acknowledged) in the
/// order they arrived, whatever order their commits end in.
const MAX_COMMITS: usize = 3;
/// Messages read and waiting for the writer, at most (about 35 MB of them): more than the
/// broker's window (20,000 in `mqtt-config/mosquitto.conf`) and the batches in flight.
pub const MAX_QUEUED: usize = 50_000;
/// Committed messages whose acknowledgement waits for room in the event loop's queue, at most.
pub const MAX_UNACKED: usize = 50_000;
/// Requests (acknowledgements, subscriptions, the birth message) queued for the event loop.
const REQUESTS: usize = 4 * MAX_BATCH;
/// Tries of a commit the database answered busy or unreachable, before the batch is left for
/// redelivery.
const COMMIT_TRIES: u32 = 4;
/// The pause before reconnecting after a failed batch, doubled while batches keep failing.
const FIRST_FAILURE_DELAY: Duration = Duration::from_millis(100);
const MAX_FAILURE_DELAY: Duration = Duration::from_secs(5);
/// The service's own birth and last will.
pub const SERVER_STATUS_TOPIC: &str = "spazi/v1/_server/status";

/// Where and how the consumer connects.
#[derive(Clone)]
pub struct IngestOptions {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Subscribe to telemetry and events with `$share/spazi/…`.
    pub shared: bool,
}

/// The topic filters the consumer subscribes to. Retained `status` and `meta` are never shared
/// (a shared subscription gets no retained messages), so every instance learns every device.
pub fn subscriptions(shared: bool) -> Vec<String> {
    let share = if shared { "$share/spazi/" } else { "" };
    vec![
        "spazi/v1/+/+/status".to_owned(),
        "spazi/v1/+/+/meta".to_owned(),
        format!("{share}spazi/v1/+/+/tele/+"),
        format!("{share}spazi/v1/+/+/evt/+"),
        format!("{share}spazi/v1/+/+/cmd/+/res"),
        GRANTS_NOTICE_TOPIC.to_owned(),
    ]
}

/// The time zone of a site, `None` for an unknown site.
pub type SiteZone = Arc<dyn Fn(&str) -> Option<Tz> + Send + Sync>;
/// Whether a zone and a resource (each optional) belong to a site.
pub type PlaceCheck = Arc<dyn Fn(&str, Option<&str>, Option<&str>) -> bool + Send + Sync>;

/// What the pipeline needs from the rest of the service.
#[derive(Clone)]
pub struct Pipeline {
    pub db: Db,
    pub fleet: Arc<Fleet>,
    pub metrics: Arc<Metrics>,
    /// The time zone of a site, `None` for an unknown site.
    pub site_tz: SiteZone,
    /// Whether a zone (second) belongs to a site (first), and a resource (third) too.
    pub place_ok: PlaceCheck,
    /// Door decisions and presence check-ins, when access control runs here.
    pub doors: Option<Arc<Doors>>,
}

struct Incoming {
    publish: Publish,
    generation: u64,
}

impl Incoming {
    /// What its acknowledgement needs (the packet id and QoS), without the topic and payload.
    fn into_ack(self) -> Incoming {
        let mut publish = Publish::new("", self.publish.qos, Vec::new());
        publish.pkid = self.publish.pkid;
        Incoming {
            publish,
            generation: self.generation,
        }
    }
}

/// A batch whose commit is running: the commit, the decoded batch and its messages.
type InFlight = (
    JoinHandle<Result<Stored, DbError>>,
    Arc<Batch>,
    Vec<Incoming>,
);

/// Starts the consumer; it runs until the process ends, reconnecting with bounded backoff.
pub fn start(options: IngestOptions, pipeline: Pipeline) -> AsyncClient {
    let mut mqtt = MqttOptions::new(
        options.client_id.clone(),
        options.host.clone(),
        options.port,
    );
    mqtt.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(1 << 20, 1 << 20)
        .set_request_channel_capacity(REQUESTS)
        .set_last_will(LastWill::new(
            SERVER_STATUS_TOPIC,
            r#"{"v":1,"online":false}"#,
            QoS::AtLeastOnce,
            true,
        ));
    if let Some(user) = &options.username {
        mqtt.set_credentials(user.clone(), options.password.clone().unwrap_or_default());
    }
    let (client, mut eventloop) = AsyncClient::new(mqtt, REQUESTS);
    let mut net = NetworkOptions::new();
    net.set_tcp_nodelay(true);
    net.set_connection_timeout(5);
    eventloop.set_network_options(net);

    let (tx, rx) = flume::bounded::<Incoming>(MAX_QUEUED);
    let generation = Arc::new(AtomicU64::new(0));
    // Acknowledgements the writer holds because the event loop's queue was full.
    let backlog = Arc::new(AtomicUsize::new(0));
    let reader_backlog = backlog.clone();
    let reconnect = Arc::new(Notify::new());
    let metrics = pipeline.metrics.clone();
    let reader_client = client.clone();
    let reader_generation = generation.clone();
    let reader_reconnect = reconnect.clone();
    let filters = subscriptions(options.shared);
    let endpoint = format!("{}:{}", options.host, options.port);
    let doors = pipeline.doors.clone();
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        let mut errors = RateLimited::new(Duration::from_secs(30), 3);
        // Messages of this connection dropped because the writer's queue was full.
        let mut dropped: u64 = 0;
        loop {
            if dropped > 0 && tx.is_empty() && reader_backlog.load(Ordering::SeqCst) == 0 {
                // The writer has caught up: reconnect, so the broker delivers the dropped
                // messages again (with anything else unacknowledged, which the key absorbs).
                tracing::info!(
                    dropped,
                    "ingest reconnecting for the messages it had no room for"
                );
                dropped = 0;
                metrics.telemetry.connected.store(0, Ordering::Relaxed);
                reader_generation.fetch_add(1, Ordering::SeqCst);
                eventloop.clean();
            }
            let event = tokio::select! {
                event = eventloop.poll() => event,
                () = reader_reconnect.notified() => {
                    // The writer could not commit a batch: drop the connection without
                    // acknowledging it, so the broker delivers the session's unacknowledged
                    // messages again when the consumer reconnects.
                    metrics.telemetry.connected.store(0, Ordering::Relaxed);
                    eventloop.clean();
                    continue;
                }
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    backoff = Duration::from_millis(100);
                    dropped = 0;
                    let g = reader_generation.fetch_add(1, Ordering::SeqCst) + 1;
                    if g > 1 {
                        metrics.telemetry.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    metrics.telemetry.connected.store(1, Ordering::Relaxed);
                    tracing::info!(broker = %endpoint, session_present = ack.session_present, "ingest connected");
                    let subs = filters
                        .iter()
                        .map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                    if let Err(e) = reader_client.try_subscribe_many(subs) {
                        tracing::warn!(error = %e, "could not queue the subscriptions");
                    }
                    let _ = reader_client.try_publish(
                        SERVER_STATUS_TOPIC,
                        QoS::AtLeastOnce,
                        true,
                        format!(r#"{{"v":1,"online":true,"ts":{}}}"#, now_ms()),
                    );
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    if publish.topic == GRANTS_NOTICE_TOPIC {
                        if let Some(doors) = &doors {
                            doors.on_notice(&publish.payload);
                        }
                        let _ = reader_client.try_ack(&publish);
                        continue;
                    }
                    if let Some(doors) = &doors {
                        // A badge is answered here, before anything is stored: the door waits.
                        if let Some(t) = parse_topic(&publish.topic) {
                            if t.kind == TopicKind::Evt(EvtKind::Badge) {
                                doors.on_badge(
                                    &reader_client,
                                    t.site,
                                    t.device,
                                    &publish.payload,
                                    Instant::now(),
                                );
                            }
                        }
                    }
                    let generation = reader_generation.load(Ordering::SeqCst);
                    match tx.try_send(Incoming {
                        publish,
                        generation,
                    }) {
                        Ok(()) => {}
                        Err(flume::TrySendError::Full(_)) => {
                            // Left unacknowledged: the broker delivers it again after the
                            // reconnect above.
                            dropped += 1;
                            metrics.telemetry.queue_full.fetch_add(1, Ordering::Relaxed);
                            if dropped == 1 && errors.allow() {
                                tracing::warn!(
                                    queued = MAX_QUEUED,
                                    "telemetry queue full; messages left for redelivery"
                                );
                            }
                        }
                        Err(flume::TrySendError::Disconnected(_)) => return,
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    metrics.telemetry.connected.store(0, Ordering::Relaxed);
                    if errors.allow() {
                        tracing::warn!(broker = %endpoint, error = %e, "ingest connection lost; reconnecting");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    });
    let writer_client = client.clone();
    tokio::spawn(async move {
        let mut writer = Writer::new(pipeline);
        // Commits in flight, oldest first; they finish (fleet, acknowledgements) in this order.
        let mut pending: VecDeque<InFlight> = VecDeque::new();
        // Committed messages whose acknowledgement the event loop has not taken yet.
        let mut unacked: VecDeque<Incoming> = VecDeque::new();
        let mut failure_delay = FIRST_FAILURE_DELAY;
        loop {
            let all_sent = acknowledge(&writer_client, &mut unacked, &generation);
            backlog.store(unacked.len(), Ordering::SeqCst);
            if !all_sent && rx.is_disconnected() {
                return;
            }
            if unacked.len() >= MAX_UNACKED && pending.is_empty() {
                // No more messages until the event loop has taken these acknowledgements.
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            let first = if !pending.is_empty() {
                rx.try_recv().ok()
            } else if unacked.is_empty() {
                match rx.recv_async().await {
                    Ok(m) => Some(m),
                    Err(_) => return,
                }
            } else {
                // Acknowledgements wait for room in the event loop's queue: look again shortly.
                tokio::select! {
                    m = rx.recv_async() => match m {
                        Ok(m) => Some(m),
                        Err(_) => return,
                    },
                    () = tokio::time::sleep(Duration::from_millis(1)) => None,
                }
            };
            if let Some(first) = first {
                let mut batch = Vec::with_capacity(64);
                batch.push(first);
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(m) => batch.push(m),
                        Err(_) => break,
                    }
                }
                writer
                    .p
                    .metrics
                    .telemetry
                    .queued
                    .store(rx.len() as u64, Ordering::Relaxed);
                let prepared = Arc::new(writer.prepare(&batch).await);
                let commit = tokio::spawn(commit(writer.p.clone(), prepared.clone()));
                pending.push_back((commit, prepared, batch));
                if pending.len() < MAX_COMMITS {
                    continue;
                }
            }
            let Some((commit, prepared, batch)) = pending.pop_front() else {
                continue;
            };
            let failure = match commit.await {
                Ok(Ok(stored)) => {
                    writer.finish(&prepared, stored);
                    None
                }
                Ok(Err(e)) => Some(e.to_string()),
                Err(e) => Some(format!("the commit task failed: {e}")),
            };
            if let Some(error) = failure {
                writer
                    .p
                    .metrics
                    .telemetry
                    .batch_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    %error,
                    messages = batch.len(),
                    "telemetry batch not committed; left unacknowledged for redelivery"
                );
                // No acknowledgement of this connection is sent from now on (later batches are
                // delivered again too, and their keys absorb them); the reader reconnects.
                generation.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(failure_delay).await;
                failure_delay = (failure_delay * 2).min(MAX_FAILURE_DELAY);
                reconnect.notify_one();
                continue;
            }
            failure_delay = FIRST_FAILURE_DELAY;
            unacked.extend(batch.into_iter().map(Incoming::into_ack));
        }
    });
    client
}

/// Hands the event loop the acknowledgements of committed messages, oldest first, as far as its
/// queue has room; never waits, so the event loop (which may be waiting for room in the writer's
/// queue) and the writer cannot wait on each other. An acknowledgement belongs to the connection
/// that delivered the message: once that connection is gone, none is sent (the broker delivers
/// the message again and the key absorbs it). False when some are left for later.
fn acknowledge(
    client: &AsyncClient,
    unacked: &mut VecDeque<Incoming>,
    generation: &AtomicU64,
) -> bool {
    let current = generation.load(Ordering::SeqCst);
    while let Some(m) = unacked.front() {
        if m.generation == current && client.try_ack(&m.publish).is_err() {
            return false;
        }
        unacked.pop_front();
    }
    true
}

/// Allows `burst` events per `window`, and counts the rest.
pub struct RateLimited {
    window: Duration,
    burst: u32,
    started: Instant,
    used: u32,
    suppressed: u64,
}

impl RateLimited {
    pub fn new(window: Duration, burst: u32) -> Self {
        RateLimited {
            window,
            burst,
            started: Instant::now(),
            used: 0,
            suppressed: 0,
        }
    }

    /// Whether this event may be logged.
    pub fn allow(&mut self) -> bool {
        if self.started.elapsed() >= self.window {
            if self.suppressed > 0 {
                tracing::warn!(
                    suppressed = self.suppressed,
                    "similar messages were not logged"
                );
            }
            self.started = Instant::now();
            self.used = 0;
            self.suppressed = 0;
        }
        if self.used < self.burst {
            self.used += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}
