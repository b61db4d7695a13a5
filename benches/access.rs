//! Access harness: badge scan to unlock command, end to end through the broker, beside the MQTT
//! round trip of the same broker measured in the same run.
//!
//! Starts its own Mosquitto (the production settings of `mqtt-config/mosquitto.conf` that matter
//! here, `set_tcp_nodelay true` among them, anonymous, on a free port), a fresh PostgreSQL
//! database with bookings spanning now, and two instances of the real service in this process
//! (each on its own actix system thread, as `spazi serve` runs it): one on the Mosquitto, one on
//! its embedded rumqttd. Then, at a fixed rate (open loop), a rumqttc "door" client publishes
//! badge scans at QoS 1 and times each one until its answer arrives:
//! - floor: a plain rumqttc responder (its own thread and current-thread runtime, like the
//!   service's event loop) answers each scan at QoS 1 as it reads it;
//! - service: the service decides the scan from its grants in memory and answers on `cmd/unlock`.
//!
//! The floor's topics start with `floor/` instead of `spazi/`, so the services never see them.
//! Every scenario runs `SPAZI_BENCH_RUNS` times, interleaved, and the report gives the medians.
//!
//! Run with `cargo bench --bench access`. `SPAZI_BENCH_SECS` (default 20) sets the measured
//! seconds of each run, `SPAZI_BENCH_RUNS` (default 3) the runs per scenario, `SPAZI_BENCH_RATE`
//! (default 100) the scans per second, `SPAZI_BENCH_BOOKINGS` (default 2000) the bookings stored
//! and `SPAZI_BENCH_SITES` (default 20) the sites (and so the main doors) they are spread over.
//! Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust) and `mosquitto`; all traffic stays
//! on 127.0.0.1.

mod common;

use common::{env_number, env_positive, free_port, wait_port, PgDatabase, Proc};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::web;
use anyhow::{bail, Context};
use chrono::{DurationRound, Utc};
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, NetworkOptions, Outgoing, Packet, QoS,
    SubscribeFilter,
};
use serde_json::Value;
use spazi::api::state::AppState;
use spazi::cli::{create_account, NewAccount};
use spazi::config::{Config, MqttConfig, TelemetryConfig};
use spazi::db::access::NewCredential;
use spazi::db::models::{Booking, OutboxRow};
use spazi::db::network::Directory;
use spazi::db::Db;
use spazi::domain::access_control::credential_hash;
use spazi::domain::{ResourceKind, Role};
use spazi::startup::Application;

/// Scans sent before each measured window, unrecorded (connections, caches and the broker's
/// routes warm).
const WARM_UP: Duration = Duration::from_secs(2);
/// How long the harness waits for the last answers of a run.
const DRAIN: Duration = Duration::from_secs(5);
const MEMBERS: usize = 10;
const PASSWORD: &str = "bench-horse-battery-staple";

struct Settings {
    secs: u64,
    runs: usize,
    rate: u64,
    bookings: usize,
    sites: usize,
}

/// Production's packet limits (`mqtt-config/mosquitto.conf`): 1 MiB, which a busy site's retained
/// grant list needs; `SPAZI_BENCH_MAX_PACKET_SIZE` sets another.
fn start_mosquitto(dir: &Path) -> anyhow::Result<(Proc, u16)> {
    let port = free_port()?;
    let max_packet = match env_number("SPAZI_BENCH_MAX_PACKET_SIZE", 1_048_576)? {
        0 => String::new(),
        n => format!("message_size_limit {n}\nmax_packet_size {n}\n"),
    };
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             max_inflight_messages 20000\nmax_queued_messages 13000000\nmax_queued_bytes 3000000000\n\
             set_tcp_nodelay true\n{max_packet}\
             log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n\
             log_type information\nconnection_messages true\n"
        ),
    )?;
    let log = std::fs::File::create(dir.join("mosquitto.log"))?;
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting mosquitto (is it installed?)")?;
    let proc = Proc(child);
    wait_port(port, Duration::from_secs(10))?;
    Ok((proc, port))
}

fn mosquitto_version() -> String {
    Command::new("mosquitto")
        .arg("-h")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "mosquitto, version unknown".into())
}

/// A door reader's main door and the QR tokens of bookings at its site.
struct Door {
    site: String,
    door: String,
    tokens: Vec<String>,
}

/// Writes `settings.bookings` bookings spanning now, each with its credential, straight to the
/// database (as `TestApp::store_booking` does), one resource each, over the sites with the most
/// people resources. Returns the doors with their tokens.
fn store_bookings(db: &Db, settings: &Settings) -> anyhow::Result<Vec<Door>> {
    let directory = db.run_blocking(Directory::load)?;
    let members: Vec<String> = (0..MEMBERS)
        .map(|i| {
            create_account(
                db,
                &NewAccount {
                    email: &format!("door-bench-{i}@bench.spazi.example"),
                    name: "Door Bench",
                    role: Role::Member,
                    sites: &[],
                    organization: None,
                    password: PASSWORD,
                },
            )
        })
        .collect::<anyhow::Result<_>>()?;
    let mut sites: Vec<_> = directory.sites.iter().collect();
    sites.sort_by_key(|s| std::cmp::Reverse(s.resources.len()));
    let sites = &sites[..settings.sites.min(sites.len())];
    let per_site = settings.bookings.div_ceil(sites.len());
    // Start within the credential's early window (valid from 5 minutes ago), and far enough
    // ahead that the no-show release leaves them alone for the whole bench.
    let now = Utc::now();
    let starts =
        (now + chrono::Duration::minutes(10)).duration_trunc(chrono::Duration::minutes(1))?;
    let ends = starts + chrono::Duration::hours(3);
    let mut work = Vec::new();
    for site in sites {
        let resources: Vec<_> = site
            .resources
            .iter()
            .filter(|r| r.kind != ResourceKind::EvBay)
            .take(per_site)
            .collect();
        for r in resources {
            if work.len() == settings.bookings {
                break;
            }
            work.push((site.site.id.clone(), r.resource.id.clone()));
        }
    }
    if work.len() < settings.bookings {
        bail!(
            "only {} resources at the {} largest sites; ask for fewer bookings or more sites",
            work.len(),
            sites.len()
        );
    }
    let work = Arc::new(Mutex::new(work.into_iter().enumerate().collect::<Vec<_>>()));
    let stored: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for _ in 0..4 {
            let work = work.clone();
            let stored = &stored;
            let members = &members;
            handles.push(scope.spawn(move || -> anyhow::Result<()> {
                loop {
                    let next = work.lock().unwrap_or_else(|p| p.into_inner()).pop();
                    let Some((i, (site_id, resource_id))) = next else {
                        return Ok(());
                    };
                    let id = uuid::Uuid::now_v7().to_string();
                    let created = Utc::now().naive_utc();
                    let booking = Booking {
                        id: id.clone(),
                        resource_id,
                        site_id: site_id.clone(),
                        user_id: members[i % members.len()].clone(),
                        organization_id: None,
                        starts_at: starts.naive_utc(),
                        ends_at: ends.naive_utc(),
                        status: spazi::domain::BookingStatus::Confirmed,
                        attendees: 1,
                        note: None,
                        charged_minutes: 0,
                        allowance_month: None,
                        sequence: 0,
                        created_at: created,
                        updated_at: created,
                        checked_in_at: None,
                        cancelled_at: None,
                    };
                    let credential = NewCredential::fresh(
                        &id,
                        &site_id,
                        booking.starts_at,
                        booking.ends_at,
                        created,
                    )
                    .map_err(|e| anyhow::anyhow!("a credential: {e}"))?;
                    let token = credential.row.token.clone();
                    db.run_blocking(|c| {
                        spazi::db::bookings::create(c, &booking, None, &credential, None, |_| {
                            let mut row = OutboxRow::due("none", "{}".into(), created);
                            row.sent_at = Some(created);
                            row
                        })
                    })
                    .map_err(|e| anyhow::anyhow!("storing a booking: {e}"))?;
                    stored
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((site_id, token));
                }
            }));
        }
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a booking writer panicked"))??;
        }
        anyhow::Ok(())
    })?;
    let mut doors: Vec<Door> = sites
        .iter()
        .map(|s| Door {
            site: s.site.id.clone(),
            door: format!("{}-door-main", s.site.id),
            tokens: Vec::new(),
        })
        .collect();
    for (site, token) in stored.into_inner().unwrap_or_else(|p| p.into_inner()) {
        if let Some(d) = doors.iter_mut().find(|d| d.site == site) {
            d.tokens.push(token);
        }
    }
    doors.retain(|d| !d.tokens.is_empty());
    Ok(doors)
}

/// The service on its own actix system thread, as `spazi serve` runs it.
struct Service {
    state: web::Data<AppState>,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

fn start_service(config: Config, name: &str) -> anyhow::Result<Service> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                match Application::build(config).await {
                    Ok(app) => {
                        let _ = ready_tx.send(Ok(app.state.clone()));
                        actix_web::rt::spawn(app.run_until_stopped());
                        let _ = stopped.await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
        })?;
    let state = ready_rx
        .recv()
        .context("the service thread ended before starting")??;
    Ok(Service {
        state,
        stop,
        thread,
    })
}

fn service_config(database_url: &str, mail_dir: &Path, mqtt: MqttConfig, id: &str) -> Config {
    Config {
        database_url: database_url.into(),
        listen: "127.0.0.1:0".into(),
        mqtt,
        mail_url: format!("file://{}", mail_dir.display()),
        mail_from: "Spazi per l'Italia <prenotazioni@spazi.example>".into(),
        public_url: "http://spazi.bench".into(),
        jwt_secret: b"bench-secret-bench-secret-bench-secret-0123".to_vec(),
        mail_poll_secs: 1,
        telemetry: TelemetryConfig {
            client_id: id.into(),
            ..TelemetryConfig::default()
        },
    }
}

/// Waits until the service's consumer is connected and every token is in its grants.
async fn wait_ready(state: &AppState, doors: &[Door]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while state.metrics.telemetry.connected.load(Ordering::Relaxed) < 1 {
        if Instant::now() > deadline {
            bail!("the service never connected to its broker");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let missing = doors
        .iter()
        .flat_map(|d| &d.tokens)
        .filter(|t| state.grants.candidates(&credential_hash(t)).is_empty())
        .count();
    if missing > 0 {
        bail!("{missing} stored credentials are not in the service's grants");
    }
    Ok(())
}

fn client(port: u16, id: &str) -> (AsyncClient, EventLoop) {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        .set_inflight(1000)
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(opts, 10_000);
    let mut net = NetworkOptions::new();
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
    (client, eventloop)
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// The floor's answerer: a plain rumqttc client on its own thread and current-thread runtime
/// (as the service's event loop runs), answering each scan at QoS 1 as it reads it.
struct Responder {
    client: AsyncClient,
    thread: std::thread::JoinHandle<()>,
}

impl Responder {
    fn start(port: u16, prefix: &'static str) -> anyhow::Result<Responder> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("responder".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow::anyhow!(e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    let id = format!("bench-responder-{}", uuid::Uuid::new_v4().simple());
                    let (client, mut eventloop) = client(port, &id);
                    let ready = client
                        .subscribe(format!("{prefix}/v1/+/+/evt/badge"), QoS::AtLeastOnce)
                        .await;
                    if let Err(e) = ready {
                        let _ = ready_tx.send(Err(anyhow::anyhow!(e)));
                        return;
                    }
                    loop {
                        match eventloop.poll().await {
                            Ok(Event::Incoming(Packet::SubAck(_))) => {
                                let _ = ready_tx.send(Ok(client.clone()));
                            }
                            Ok(Event::Incoming(Packet::Publish(p))) => {
                                let seq = serde_json::from_slice::<Value>(&p.payload)
                                    .ok()
                                    .and_then(|v| v["seq"].as_i64());
                                let Some(base) = p.topic.strip_suffix("/evt/badge") else {
                                    continue;
                                };
                                let Some(seq) = seq else { continue };
                                let now = now_ms();
                                let body = serde_json::json!({
                                    "v": 1,
                                    "ts": now,
                                    "nonce": uuid::Uuid::now_v7().simple().to_string(),
                                    "exp": now + 5_000,
                                    "m": {"badge_seq": seq, "duration_s": 5},
                                });
                                let _ = client.try_publish(
                                    format!("{base}/cmd/unlock"),
                                    QoS::AtLeastOnce,
                                    false,
                                    body.to_string(),
                                );
                            }
                            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                            Ok(_) => {}
                            Err(e) => {
                                eprintln!("responder connection: {e}");
                                return;
                            }
                        }
                    }
                });
            })?;
        let client = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .context("the responder did not subscribe")??;
        Ok(Responder { client, thread })
    }

    async fn stop(self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::task::spawn_blocking(move || self.thread.join()).await;
    }
}

/// One answer as the door saw it.
struct Reply {
    latency: Duration,
    measured: bool,
    /// `Some(reason)` for a `cmd/deny`.
    denied: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answerer {
    Floor,
    Service,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Broker {
    Mosquitto,
    Embedded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scenario {
    answerer: Answerer,
    broker: Broker,
}

impl Scenario {
    fn name(self) -> &'static str {
        match (self.answerer, self.broker) {
            (Answerer::Floor, Broker::Mosquitto) => "floor: rumqttc responder via Mosquitto",
            (Answerer::Service, Broker::Mosquitto) => "service via Mosquitto",
            (Answerer::Floor, Broker::Embedded) => "floor: rumqttc responder via embedded rumqttd",
            (Answerer::Service, Broker::Embedded) => "service via embedded rumqttd",
        }
    }
}

const SCENARIOS: [Scenario; 4] = [
    Scenario {
        answerer: Answerer::Floor,
        broker: Broker::Mosquitto,
    },
    Scenario {
        answerer: Answerer::Service,
        broker: Broker::Mosquitto,
    },
    Scenario {
        answerer: Answerer::Floor,
        broker: Broker::Embedded,
    },
    Scenario {
        answerer: Answerer::Service,
        broker: Broker::Embedded,
    },
];

#[derive(Debug, Clone, Default)]
struct Stats {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    replies: usize,
    denials: usize,
    lost: usize,
    /// The service's own mean time from the badge read to the answer queued, µs.
    decision_us: Option<f64>,
    /// How busy the whole machine was, 0..1.
    busy: f64,
}

/// Busy and total jiffies of the whole machine.
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// The service's decision histogram's sum (s) and count.
fn decision_totals(state: &AppState) -> (f64, f64) {
    let text = state.metrics.render(&[]);
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        value("spazi_access_decision_seconds_sum"),
        value("spazi_access_decision_seconds_count"),
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Counters that carry over from run to run: badge `seq` (increasing at every door) and which
/// booking is badged next.
#[derive(Default)]
struct Sequence {
    seq: AtomicI64,
    scan: AtomicUsize,
}

/// One run: scans at `rate` per second for the warm-up plus `secs`, each timed from its publish
/// to its answer's arrival.
async fn run_once(
    port: u16,
    scenario: Scenario,
    doors: &Arc<Vec<Door>>,
    service: Option<&AppState>,
    settings: &Settings,
    counters: &Sequence,
) -> anyhow::Result<Stats> {
    let prefix = match scenario.answerer {
        Answerer::Floor => "floor",
        Answerer::Service => "spazi",
    };
    let responder = match scenario.answerer {
        Answerer::Floor => Some(Responder::start(port, prefix)?),
        Answerer::Service => None,
    };
    let (door, mut eventloop) = client(
        port,
        &format!("bench-door-{}", uuid::Uuid::new_v4().simple()),
    );
    let filters: Vec<SubscribeFilter> = doors
        .iter()
        .flat_map(|d| {
            ["unlock", "deny"].map(|cmd| {
                SubscribeFilter::new(
                    format!("{prefix}/v1/{}/{}/cmd/{cmd}", d.site, d.door),
                    QoS::AtLeastOnce,
                )
            })
        })
        .collect();
    door.subscribe_many(filters).await?;
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = eventloop.poll().await? {
                return anyhow::Ok(());
            }
        }
    })
    .await
    .context("the door's subscription was not acknowledged")??;

    let sent: Arc<Mutex<HashMap<i64, (Instant, bool)>>> = Arc::default();
    let replies: Arc<Mutex<Vec<Reply>>> = Arc::default();
    let strays = Arc::new(AtomicUsize::new(0));
    let receiver = {
        let (sent, replies, strays) = (sent.clone(), replies.clone(), strays.clone());
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let arrived = Instant::now();
                        let body: Value = serde_json::from_slice(&p.payload).unwrap_or_default();
                        let seq = body["m"]["badge_seq"].as_i64().unwrap_or(-1);
                        let Some((at, measured)) =
                            sent.lock().unwrap_or_else(|e| e.into_inner()).remove(&seq)
                        else {
                            if strays.fetch_add(1, Ordering::Relaxed) < 5 {
                                eprintln!(
                                    "an answer that matches no scan waiting: {} {}",
                                    p.topic,
                                    String::from_utf8_lossy(&p.payload)
                                );
                            }
                            continue;
                        };
                        let denied = p.topic.ends_with("/cmd/deny").then(|| {
                            body["m"]["reason"]
                                .as_str()
                                .unwrap_or("no reason")
                                .to_owned()
                        });
                        replies
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(Reply {
                                latency: arrived - at,
                                measured,
                                denied,
                            });
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(anyhow::anyhow!("door connection: {e}")),
                }
            }
        })
    };

    let warm = (WARM_UP.as_secs_f64() * settings.rate as f64) as usize;
    let total = warm + (settings.secs * settings.rate) as usize;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / settings.rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let reconnects = |s: &AppState| s.metrics.telemetry.reconnects.load(Ordering::Relaxed);
    let reconnects0 = service.map_or(0, reconnects);
    let mut before = (machine_ticks(), service.map(decision_totals));
    for i in 0..total {
        tick.tick().await;
        if i == warm {
            before = (machine_ticks(), service.map(decision_totals));
        }
        let n = counters.scan.fetch_add(1, Ordering::Relaxed);
        let d = &doors[n % doors.len()];
        let token = &d.tokens[(n / doors.len()) % d.tokens.len()];
        let seq = counters.seq.fetch_add(1, Ordering::Relaxed);
        let payload = format!(
            r#"{{"v":1,"ts":{},"seq":{seq},"m":{{"credential":"{token}"}}}}"#,
            now_ms()
        );
        let topic = format!("{prefix}/v1/{}/{}/evt/badge", d.site, d.door);
        sent.lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(seq, (Instant::now(), i >= warm));
        door.publish(topic, QoS::AtLeastOnce, false, payload)
            .await?;
    }
    let after = (machine_ticks(), service.map(decision_totals));
    let deadline = Instant::now() + DRAIN;
    while Instant::now() < deadline && !sent.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lost = sent
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .filter(|(_, measured)| *measured)
        .count();
    let _ = door.disconnect().await;
    match tokio::time::timeout(Duration::from_secs(5), receiver).await {
        Ok(done) => done??,
        Err(_) => bail!("the door's event loop did not end after its disconnect"),
    }
    if let Some(r) = responder {
        r.stop().await;
    }

    let replies = std::mem::take(&mut *replies.lock().unwrap_or_else(|e| e.into_inner()));
    let measured: Vec<&Reply> = replies.iter().filter(|r| r.measured).collect();
    let mut denials: HashMap<String, usize> = HashMap::new();
    for r in &replies {
        if let Some(reason) = &r.denied {
            *denials.entry(reason.clone()).or_default() += 1;
        }
    }
    let mut ms: Vec<f64> = measured
        .iter()
        .map(|r| r.latency.as_secs_f64() * 1e3)
        .collect();
    ms.sort_by(f64::total_cmp);
    let ((busy1, total1), decisions1) = after;
    let ((busy0, total0), decisions0) = before;
    let stats = Stats {
        p50_ms: percentile(&ms, 0.50),
        p99_ms: percentile(&ms, 0.99),
        max_ms: ms.last().copied().unwrap_or(f64::NAN),
        replies: ms.len(),
        denials: denials.values().sum(),
        lost,
        decision_us: match (decisions0, decisions1) {
            (Some((s0, c0)), Some((s1, c1))) if c1 > c0 => Some((s1 - s0) / (c1 - c0) * 1e6),
            _ => None,
        },
        busy: (busy1 - busy0) as f64 / (total1 - total0).max(1) as f64,
    };
    let reconnected = service.map_or(0, reconnects) - reconnects0;
    if stats.denials > 0 || stats.lost > 0 || strays.load(Ordering::Relaxed) > 0 || reconnected > 0
    {
        bail!(
            "{}: every scan must be answered by one unlock, but {} were denied ({denials:?}), \
             {} measured scans got no answer within {DRAIN:?}, {} answers matched no scan; \
             the service's broker connection was re-established {reconnected} times in the run",
            scenario.name(),
            stats.denials,
            stats.lost,
            strays.load(Ordering::Relaxed),
        );
    }
    Ok(stats)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|r| r.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

fn print_report(settings: &Settings, doors: &[Door], results: &[(Scenario, Vec<Stats>)]) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let stored: usize = doors.iter().map(|d| d.tokens.len()).sum();
    println!(
        "\n## Badge scan to unlock, QoS 1, {} scans/s for {} s a run (after {} s of warm-up), \
         medians of {} runs\n",
        settings.rate,
        settings.secs,
        WARM_UP.as_secs(),
        settings.runs
    );
    println!(
        "{stored} bookings with credentials at {} sites, scanned in turn at their main doors; \
         machine: {cpus} CPUs ({}), shared with other work; {}\n",
        doors.len(),
        cpu_model(),
        mosquitto_version()
    );
    println!("| scenario | p50 ms | p99 ms | max ms | answers a run | denials | in-service decision µs | machine busy |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (scenario, runs) in results {
        let m = |f: fn(&Stats) -> f64| median(runs.iter().map(f).collect());
        let decision = m(|s| s.decision_us.unwrap_or(f64::NAN));
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.0} | {} | {} | {:.0}% |",
            scenario.name(),
            m(|s| s.p50_ms),
            m(|s| s.p99_ms),
            m(|s| s.max_ms),
            m(|s| s.replies as f64),
            runs.iter().map(|s| s.denials).sum::<usize>(),
            if decision.is_nan() {
                String::new()
            } else {
                format!("{decision:.0}")
            },
            m(|s| s.busy * 100.0),
        );
    }
    println!("\nEach run, p50 / p99 / max in ms:\n");
    print!("| run |");
    for (scenario, _) in results {
        print!(" {} |", scenario.name());
    }
    println!();
    println!("|---|{}", "---|".repeat(results.len()));
    for run in 0..settings.runs {
        print!("| {} |", run + 1);
        for (_, runs) in results {
            let s = &runs[run];
            print!(" {:.2} / {:.2} / {:.2} |", s.p50_ms, s.p99_ms, s.max_ms);
        }
        println!();
    }
    println!("\nService p99 minus floor p99, same broker:\n");
    println!("| broker | median p99 service − median p99 floor | per run | target |");
    println!("|---|---:|---|---|");
    for broker in [Broker::Mosquitto, Broker::Embedded] {
        let find = |answerer| {
            results
                .iter()
                .find(|(s, _)| s.answerer == answerer && s.broker == broker)
                .map(|(_, r)| r)
        };
        let (Some(floor), Some(service)) = (find(Answerer::Floor), find(Answerer::Service)) else {
            continue;
        };
        let diff = median(service.iter().map(|s| s.p99_ms).collect())
            - median(floor.iter().map(|s| s.p99_ms).collect());
        let per_run: Vec<String> = floor
            .iter()
            .zip(service)
            .map(|(f, s)| format!("{:+.2}", s.p99_ms - f.p99_ms))
            .collect();
        let target = match broker {
            Broker::Mosquitto if diff <= 5.0 => "≤ 5 ms: met",
            Broker::Mosquitto => "≤ 5 ms: **not met**",
            Broker::Embedded => "(none)",
        };
        println!(
            "| {broker:?} | {diff:+.2} ms | {} | {target} |",
            per_run.join(", ")
        );
    }
}

fn main() -> anyhow::Result<()> {
    let settings = Settings {
        secs: env_positive("SPAZI_BENCH_SECS", 20)?,
        runs: env_positive("SPAZI_BENCH_RUNS", 3)? as usize,
        rate: env_positive("SPAZI_BENCH_RATE", 100)?,
        bookings: env_positive("SPAZI_BENCH_BOOKINGS", 2000)? as usize,
        sites: env_positive("SPAZI_BENCH_SITES", 20)? as usize,
    };
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let (_broker, mosquitto_port) = start_mosquitto(dir.path())?;
    let pg = PgDatabase::create("spazi_bench_access")?;

    let setup_db = spazi::startup::prepare_database(&pg.url())?;
    let doors = Arc::new(store_bookings(&setup_db, &settings)?);
    drop(setup_db);
    eprintln!(
        "{} bookings stored at {} sites in {:.1} s",
        doors.iter().map(|d| d.tokens.len()).sum::<usize>(),
        doors.len(),
        started.elapsed().as_secs_f64()
    );

    let mail_dir = dir.path().join("mail");
    std::fs::create_dir_all(&mail_dir)?;
    let on_mosquitto = start_service(
        service_config(
            &pg.url(),
            &mail_dir,
            MqttConfig::External {
                host: "127.0.0.1".into(),
                port: mosquitto_port,
            },
            "spazi-bench-mosquitto",
        ),
        "service-mosquitto",
    )?;
    let embedded = start_service(
        service_config(
            &pg.url(),
            &mail_dir,
            MqttConfig::Embedded(SocketAddr::from(([127, 0, 0, 1], 0))),
            "spazi-bench-embedded",
        ),
        "service-embedded",
    )?;
    let embedded_port: u16 = embedded
        .state
        .mqtt_addr
        .as_deref()
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .map(|a| a.port())
        .context("the embedded broker's address")?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench")
        .enable_all()
        .build()?;
    let results = rt.block_on(async {
        wait_ready(&on_mosquitto.state, &doors).await?;
        wait_ready(&embedded.state, &doors).await?;
        // Let the start-up burst (every site's retained grant list) pass.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let counters = Sequence::default();
        let mut results: Vec<(Scenario, Vec<Stats>)> =
            SCENARIOS.iter().map(|s| (*s, Vec::new())).collect();
        for run in 0..settings.runs {
            for (scenario, stats) in results.iter_mut() {
                let (port, state) = match scenario.broker {
                    Broker::Mosquitto => (mosquitto_port, &on_mosquitto.state),
                    Broker::Embedded => (embedded_port, &embedded.state),
                };
                let service = (scenario.answerer == Answerer::Service).then_some(state.get_ref());
                let s = run_once(port, *scenario, &doors, service, &settings, &counters).await?;
                eprintln!(
                    "run {}: {}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {} answers, machine {:.0}% busy",
                    run + 1,
                    scenario.name(),
                    s.p50_ms,
                    s.p99_ms,
                    s.max_ms,
                    s.replies,
                    s.busy * 100.0
                );
                stats.push(s);
            }
        }
        anyhow::Ok(results)
    });
    let results = match results {
        Ok(r) => r,
        Err(e) => {
            let log = std::fs::read_to_string(dir.path().join("mosquitto.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "the last lines of Mosquitto's log:\n{}",
                lines[lines.len().saturating_sub(15)..].join("\n")
            );
            return Err(e);
        }
    };
    print_report(&settings, &doors, &results);
    println!(
        "\nWhole bench: {:.0} s (`cargo bench --bench access`).",
        started.elapsed().as_secs_f64()
    );
    for s in [on_mosquitto, embedded] {
        let _ = s.stop.send(());
        let _ = s.thread.join();
    }
    drop(rt);
    Ok(())
}
