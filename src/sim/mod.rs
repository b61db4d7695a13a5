//! `spazi simulate`: the building side of the network, simulated, speaking the device contract
//! (`mqtt-config/CONTRACT.md`) to any MQTT broker.
//!
//! Every site (and every extra Polis building) is one gateway with one MQTT connection
//! (`sim-{site}`, clean session, TCP_NODELAY, the gateway's offline status as its Last Will). At
//! each connection it publishes every device's retained `meta` and `status`; then its devices
//! report at their class intervals, divided by the rate, each with a jittered period so a site's
//! messages spread evenly. Each site is a [`site::SiteSim`]; what its devices report comes from
//! their family's file, on the physics of [`model`]: PV from the sun over the site
//! (`domain::solar`) with passing clouds and the building's load by size, hour and opening hours
//! ([`meters`]), EV charging sessions ([`chargers`]), presence from the real bookings or from the
//! opening hours ([`presence`]), CO2, temperature and humidity following the people in each zone
//! ([`environment`]), door events and the gateway's grant list ([`doors`]). This file holds the
//! plumbing they share: the connection per site, its event loop, publishing and the counters.
//!
//! A simulated device cannot store its counters, so it does what the contract asks of such a
//! device: `seq` starts at the simulator's boot time in epoch ms, and energy counters start from
//! zero in a new `meter_epoch` (the boot time in epoch seconds). A planned stop publishes every
//! device's `online:false` (the gateway's last) before DISCONNECT.
//!
//! The gateway also hears the commands for its site's devices (`spazi/v1/{site}/+/cmd/+`, QoS 1,
//! subscribed again at each connection): doors carry out `unlock` and `deny`, environment
//! sensors `setpoint`, chargers `charge_limit` (the new limit shows in their `tele/charger`), each
//! answered on `cmd/{name}/res`; none is run at or after its `exp`, or twice for one nonce. The
//! retained grant list on the gateway's `cmd/grants` is kept, the newest version only.

mod chargers;
mod doors;
mod environment;
mod meters;
mod model;
mod presence;
mod schedule;
mod site;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::Utc;
use rand::Rng;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, NetworkOptions, Packet,
    QoS,
};
use tokio::sync::watch;

use crate::db::{bookings, naive, Db, DbConfig, DbError};
use crate::domain::devices::DeviceSpec;
use crate::domain::epoch::now_ms;
use crate::domain::network::{generate, DEFAULT_SEED};
use crate::domain::DeviceClass;
use presence::Bookings;
use site::{Outgoing, Place, SimConfig, SiteSim};

/// How the simulator runs.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The first N sites of the network; `None` = all 250.
    pub sites: Option<usize>,
    /// Explicit sites; when not empty, overrides `sites`.
    pub site_ids: Vec<String>,
    /// Extra Polis buildings (post offices), `polis-00001`…
    pub buildings: usize,
    /// Multiplier on every interval: 2.0 = twice as often.
    pub rate: f64,
    /// Stop after this long; `None` = until stopped.
    pub duration: Option<Duration>,
    /// Seed of everything random in the simulation (the network itself is the default one).
    pub seed: u64,
    /// Follow the real bookings of this database for presence.
    pub database_url: Option<String>,
    /// Occasional charger faults, duplicates and malformed messages.
    pub faults: bool,
}

impl SimOptions {
    /// All sites at rate 1 with faults, against `host:port`.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        SimOptions {
            host: host.into(),
            port,
            username: None,
            password: None,
            sites: None,
            site_ids: Vec::new(),
            buildings: 0,
            rate: 1.0,
            duration: None,
            seed: DEFAULT_SEED,
            database_url: None,
            faults: true,
        }
    }
}

/// What a run published.
#[derive(Debug, Clone, Default)]
pub struct SimReport {
    pub sites: usize,
    pub devices: usize,
    /// Messages handed to the MQTT client, all kinds together (duplicates and malformed too).
    pub published: u64,
    /// Of those, acknowledged by the broker (PUBACK).
    pub acked: u64,
    /// Published messages by kind: `meta`, `status`, `tele/power`, …, `evt/fault`.
    pub by_kind: BTreeMap<String, u64>,
    /// Deliberate second copies (same payload, same `seq`).
    pub duplicates: u64,
    /// Deliberately malformed messages.
    pub malformed: u64,
    /// Commands heard for the simulated devices (grant lists included).
    pub commands: u64,
    /// Failed connection attempts and dropped connections.
    pub connection_errors: u64,
    pub elapsed: Duration,
}

impl SimReport {
    /// Messages per second over the run.
    pub fn per_second(&self) -> f64 {
        self.published as f64 / self.elapsed.as_secs_f64().max(1e-3)
    }
}

impl fmt::Display for SimReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} site(s), {} device(s), {:.1} s: {} message(s) published ({:.0}/s), {} acknowledged",
            self.sites,
            self.devices,
            self.elapsed.as_secs_f64(),
            self.published,
            self.per_second(),
            self.acked
        )?;
        for (kind, n) in &self.by_kind {
            writeln!(f, "  {kind:<14} {n}")?;
        }
        write!(
            f,
            "  duplicates {}, malformed {}, commands heard {}, connection errors {}",
            self.duplicates, self.malformed, self.commands, self.connection_errors
        )
    }
}

/// `n` Polis buildings, `polis-00001`…, each placed within about 30 km of one of the network's
/// sites (deterministic from `seed`): `(id, latitude, longitude)`.
pub fn polis_buildings(n: usize, seed: u64) -> Vec<(String, f64, f64)> {
    let network = generate(DEFAULT_SEED);
    if network.is_empty() {
        return Vec::new();
    }
    (0..n)
        .map(|k| {
            let mut rng = model::rng_for(seed, &format!("polis/{k}"));
            let near = &network[rng.gen_range(0..network.len())];
            let u: f64 = rng.gen();
            let r_km = 2.0 + 28.0 * u * u;
            let angle = rng.gen_range(0.0..std::f64::consts::TAU);
            let lat = near.latitude + r_km * angle.cos() / 111.32;
            let lon =
                near.longitude + r_km * angle.sin() / (111.32 * lat.to_radians().cos().max(0.1));
            let round = |x: f64| (x * 1e5).round() / 1e5;
            (format!("polis-{:05}", k + 1), round(lat), round(lon))
        })
        .collect()
}

/// The devices of a Polis building: a gateway, a PV meter, a grid meter, two chargers and an
/// environment sensor (`{id}-gw`, `-pv`, `-grid`, `-evc-1`, `-evc-2`, `-env`).
pub fn building_devices(id: &str) -> Vec<DeviceSpec> {
    let gw = format!("{id}-gw");
    [
        ("gw", DeviceClass::Gateway),
        ("pv", DeviceClass::PvMeter),
        ("grid", DeviceClass::GridMeter),
        ("evc-1", DeviceClass::EvCharger),
        ("evc-2", DeviceClass::EvCharger),
        ("env", DeviceClass::EnvSensor),
    ]
    .into_iter()
    .map(|(suffix, class)| DeviceSpec {
        id: format!("{id}-{suffix}"),
        site_id: id.to_owned(),
        class,
        zone_id: None,
        resource_id: None,
        gateway_id: (class != DeviceClass::Gateway).then(|| gw.clone()),
        model: crate::domain::devices::model_of(class).to_owned(),
        report_interval_s: class.report_interval_s(),
    })
    .collect()
}

/// The places a run simulates, with their devices.
fn places(opts: &SimOptions) -> anyhow::Result<Vec<(Place, Vec<DeviceSpec>)>> {
    let network = generate(DEFAULT_SEED);
    let chosen: Vec<_> = if opts.site_ids.is_empty() {
        network
            .iter()
            .take(opts.sites.unwrap_or(network.len()))
            .collect()
    } else {
        let mut seen = HashSet::new();
        let mut chosen = Vec::new();
        for id in &opts.site_ids {
            let Some(site) = network.iter().find(|s| &s.id == id) else {
                bail!("no site {id:?} in the network");
            };
            if seen.insert(id) {
                chosen.push(site);
            }
        }
        chosen
    };
    let mut out: Vec<(Place, Vec<DeviceSpec>)> = chosen
        .into_iter()
        .map(|s| (Place::from_site(s), crate::domain::devices::site_devices(s)))
        .collect();
    for (id, lat, lon) in polis_buildings(opts.buildings, opts.seed) {
        let devices = building_devices(&id);
        out.push((Place::polis(&id, lat, lon), devices));
    }
    Ok(out)
}

const KINDS: [&str; 13] = [
    "meta",
    "status",
    "tele/env",
    "tele/power",
    "tele/energy",
    "tele/presence",
    "tele/charger",
    "evt/badge",
    "evt/door",
    "evt/fault",
    "duplicate",
    "malformed",
    "cmd/res",
];

/// Counters shared by every site's tasks.
struct Stats {
    by_kind: [AtomicU64; KINDS.len()],
    acked: AtomicU64,
    commands: AtomicU64,
    connection_errors: AtomicU64,
    connected: AtomicI64,
    last_error: Mutex<Option<String>>,
}

impl Stats {
    fn new() -> Self {
        Stats {
            by_kind: std::array::from_fn(|_| AtomicU64::new(0)),
            acked: AtomicU64::new(0),
            commands: AtomicU64::new(0),
            connection_errors: AtomicU64::new(0),
            connected: AtomicI64::new(0),
            last_error: Mutex::new(None),
        }
    }

    fn count(&self, kind: &str) {
        if let Some(i) = KINDS.iter().position(|k| *k == kind) {
            self.by_kind[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn published(&self) -> u64 {
        self.by_kind.iter().map(|a| a.load(Ordering::Relaxed)).sum()
    }
}

/// Resolves once `rx` holds `true`; never if its sender goes away first.
async fn halted(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|h| *h).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Runs the simulation until `stop` turns true or `opts.duration` has passed.
pub async fn run(opts: SimOptions, stop: watch::Receiver<bool>) -> anyhow::Result<SimReport> {
    if !(opts.rate.is_finite() && opts.rate > 0.0) {
        bail!("the rate must be a positive number, not {}", opts.rate);
    }
    if opts.port == 0 {
        bail!("the broker port must not be 0");
    }
    let places = places(&opts)?;
    if places.is_empty() {
        bail!("nothing to simulate: no sites and no buildings");
    }
    let started = Instant::now();
    let boot_ms = now_ms();
    let cfg = SimConfig {
        seed: opts.seed,
        rate: opts.rate,
        faults: opts.faults,
        boot_ms,
    };
    let (halt_tx, halt_rx) = watch::channel(false);
    let bookings = match &opts.database_url {
        Some(url) => Some(follow_bookings(url, halt_rx.clone()).await?),
        None => None,
    };

    let stats = Arc::new(Stats::new());
    let mut report = SimReport {
        sites: places.len(),
        ..SimReport::default()
    };
    let mut tasks = tokio::task::JoinSet::new();
    for (place, devices) in places {
        let sim = SiteSim::new(place, devices, cfg, now_ms());
        report.devices += sim.device_count();
        tasks.spawn(site_task(
            sim,
            opts.clone(),
            halt_rx.clone(),
            bookings.clone(),
            stats.clone(),
        ));
    }
    tracing::info!(
        sites = report.sites,
        devices = report.devices,
        rate = opts.rate,
        broker = %format!("{}:{}", opts.host, opts.port),
        "simulating"
    );

    // Wait for the stop, the deadline, or every site giving up; log progress meanwhile.
    let mut stop = stop;
    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.tick().await;
    let mut last = (0u64, Instant::now());
    loop {
        tokio::select! {
            _ = halted(&mut stop) => break,
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => break,
            _ = tick.tick() => {
                let published = stats.published();
                let per_s = (published - last.0) as f64 / last.1.elapsed().as_secs_f64();
                last = (published, Instant::now());
                let connected = stats.connected.load(Ordering::Relaxed);
                tracing::info!(
                    published,
                    per_s = per_s.round(),
                    acked = stats.acked.load(Ordering::Relaxed),
                    connected,
                    "simulator progress"
                );
                if connected == 0 {
                    let error = stats.last_error.lock().map(|e| e.clone()).unwrap_or_default();
                    tracing::warn!(
                        error = error.as_deref().unwrap_or("none yet"),
                        "no site is connected to the broker"
                    );
                }
            }
            done = tasks.join_next(), if !tasks.is_empty() => {
                if let Some(Err(e)) = done {
                    tracing::error!(error = %e, "a site task failed");
                }
            }
        }
    }
    let _ = halt_tx.send(true);
    // Each site says goodbye and disconnects; give them a moment, then stop the rest.
    let grace = tokio::time::sleep(Duration::from_secs(10));
    tokio::pin!(grace);
    loop {
        tokio::select! {
            done = tasks.join_next() => match done {
                None => break,
                Some(Err(e)) if !e.is_cancelled() => {
                    tracing::error!(error = %e, "a site task failed");
                }
                Some(_) => {}
            },
            _ = &mut grace => {
                tracing::warn!(
                    left = tasks.len(),
                    "sites still busy after the grace period; stopping them"
                );
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
                break;
            }
        }
    }

    report.elapsed = started.elapsed();
    for (i, kind) in KINDS.iter().enumerate() {
        let n = stats.by_kind[i].load(Ordering::Relaxed);
        if n > 0 {
            report.by_kind.insert((*kind).to_owned(), n);
        }
    }
    report.published = stats.published();
    report.acked = stats.acked.load(Ordering::Relaxed);
    report.commands = stats.commands.load(Ordering::Relaxed);
    report.duplicates = report.by_kind.get("duplicate").copied().unwrap_or(0);
    report.malformed = report.by_kind.get("malformed").copied().unwrap_or(0);
    report.connection_errors = stats.connection_errors.load(Ordering::Relaxed);
    Ok(report)
}

/// Reads the active bookings now and every minute after, until `halt`.
async fn follow_bookings(
    url: &str,
    mut halt: watch::Receiver<bool>,
) -> anyhow::Result<watch::Receiver<Arc<Bookings>>> {
    let mut config = DbConfig::new(url);
    config.connections = 1;
    let db = Db::connect(&config).context("opening the database")?;
    let first = load_bookings(&db)
        .await
        .context("reading the active bookings")?;
    tracing::info!(
        active = first.resources.len(),
        "following the bookings of the database"
    );
    let (tx, rx) = watch::channel(Arc::new(first));
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        every.tick().await;
        loop {
            tokio::select! {
                _ = halted(&mut halt) => break,
                _ = every.tick() => match load_bookings(&db).await {
                    Ok(b) => {
                        let _ = tx.send(Arc::new(b));
                    }
                    Err(e) => tracing::warn!(
                        error = %e,
                        "could not reload the bookings; keeping the last ones"
                    ),
                },
            }
        }
    });
    Ok(rx)
}

async fn load_bookings(db: &Db) -> Result<Bookings, DbError> {
    let at = naive(Utc::now());
    let ids = db.run(move |c| bookings::active_resources(c, at)).await?;
    Ok(Bookings {
        resources: ids.into_iter().collect(),
    })
}

/// Hands messages to the client in order, counting them; `false` if halted meanwhile.
async fn publish_all(
    client: &AsyncClient,
    out: &mut Vec<Outgoing>,
    stats: &Stats,
    halt: &mut watch::Receiver<bool>,
    sent: &mut u64,
) -> bool {
    for msg in out.drain(..) {
        let kind = msg.kind;
        let result = tokio::select! {
            r = client.publish(msg.topic, QoS::AtLeastOnce, msg.retain, msg.payload) => r,
            _ = halted(halt) => return false,
        };
        match result {
            Ok(()) => {
                stats.count(kind);
                *sent += 1;
            }
            Err(e) => {
                tracing::debug!(error = %e, "publish refused by the client");
                return false;
            }
        }
    }
    true
}

/// One site: its connection, its event loop and its devices, until `halt`.
async fn site_task(
    mut sim: SiteSim,
    opts: SimOptions,
    mut halt: watch::Receiver<bool>,
    bookings: Option<watch::Receiver<Arc<Bookings>>>,
    stats: Arc<Stats>,
) {
    let mut mqtt = MqttOptions::new(format!("sim-{}", sim.id()), opts.host.clone(), opts.port);
    mqtt.set_clean_session(true)
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(1 << 20, 64 * 1024);
    if let Some(user) = &opts.username {
        mqtt.set_credentials(user.clone(), opts.password.clone().unwrap_or_default());
    }
    if let Some((topic, payload)) = sim.last_will() {
        mqtt.set_last_will(LastWill::new(topic, payload, QoS::AtLeastOnce, true));
    }
    let (client, mut eventloop) = AsyncClient::new(mqtt, 256);
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(5);
    eventloop.set_network_options(network);
    let (conn_tx, mut conn_rx) = watch::channel(0u64);
    let acked = Arc::new(AtomicU64::new(0));
    let (cmd_tx, mut cmd_rx) = tokio::sync::mpsc::channel(COMMAND_QUEUE);
    let mut events = tokio::spawn(drive_eventloop(
        eventloop,
        conn_tx,
        cmd_tx,
        stats.clone(),
        acked.clone(),
    ));

    // Nothing is said before the first connection: then meta and status, as at every one.
    let mut connected = false;
    tokio::select! {
        r = conn_rx.changed() => connected = r.is_ok(),
        _ = halted(&mut halt) => {}
    }
    if !connected {
        events.abort();
        return;
    }
    let mut out = Vec::new();
    let mut sent = 0u64;
    conn_rx.borrow_and_update();
    let filter = sim.command_filter();
    let _ = client.subscribe(filter.as_str(), QoS::AtLeastOnce).await;
    out.extend(sim.announce(now_ms()));
    let mut running = publish_all(&client, &mut out, &stats, &mut halt, &mut sent).await;
    let mut grants_version = None;
    while running {
        let now = now_ms();
        let snapshot = bookings.as_ref().map(|rx| rx.borrow().clone());
        sim.step(now, snapshot.as_deref(), &mut out);
        if !publish_all(&client, &mut out, &stats, &mut halt, &mut sent).await {
            break;
        }
        let due = sim.next_due().unwrap_or(now + 1_000);
        let wait = Duration::from_millis((due - now_ms()).max(0) as u64);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = halted(&mut halt) => running = false,
            r = conn_rx.changed() => {
                if r.is_err() {
                    running = false;
                } else {
                    // A new connection with a clean session: subscribe again, and say again
                    // what we are.
                    let _ = client.subscribe(filter.as_str(), QoS::AtLeastOnce).await;
                    out.extend(sim.announce(now_ms()));
                    running = publish_all(&client, &mut out, &stats, &mut halt, &mut sent).await;
                }
            }
            Some((topic, payload)) = cmd_rx.recv() => {
                stats.commands.fetch_add(1, Ordering::Relaxed);
                out.extend(sim.command(&topic, &payload, now_ms()));
                let version = sim.grants().map(|g| g.version);
                if version != grants_version {
                    grants_version = version;
                    tracing::debug!(
                        site = sim.id(),
                        version,
                        grants = sim.grants().map_or(0, |g| g.grants.len()),
                        "grant list kept"
                    );
                }
                running = publish_all(&client, &mut out, &stats, &mut halt, &mut sent).await;
            }
        }
    }
    // A planned disconnect: every device offline, the gateway last, then DISCONNECT.
    out.clear();
    let goodbye = sim.goodbye(now_ms());
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        for msg in goodbye {
            if client
                .publish(msg.topic, QoS::AtLeastOnce, true, msg.payload)
                .await
                .is_ok()
            {
                stats.count(msg.kind);
                sent += 1;
            }
        }
        // Let the broker acknowledge what is in flight before the DISCONNECT cuts it short
        // (what a reconnection lost is never acknowledged: the timeout ends the wait).
        while acked.load(Ordering::Relaxed) < sent {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(1), client.disconnect()).await;
    drop(client);
    if tokio::time::timeout(Duration::from_secs(5), &mut events)
        .await
        .is_err()
    {
        // Still trying to reach the broker, or waiting for it to close: give up on it.
        tracing::debug!(
            site = sim.id(),
            "event loop still busy after the disconnect"
        );
        events.abort();
    }
}

/// Commands waiting for their site's task; more are dropped (and never answered), as a busy
/// device would.
const COMMAND_QUEUE: usize = 1_024;

/// Polls the connection: counts acknowledgements, announces each new connection, hands the
/// commands heard to the site's task, reconnects with a growing pause after errors, and ends at
/// the DISCONNECT or when the client is gone.
async fn drive_eventloop(
    mut eventloop: EventLoop,
    connected: watch::Sender<u64>,
    commands: tokio::sync::mpsc::Sender<(String, Vec<u8>)>,
    stats: Arc<Stats>,
    acked: Arc<AtomicU64>,
) {
    let mut up = false;
    let mut failures: u32 = 0;
    let mut halting = false;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                failures = 0;
                if !up {
                    up = true;
                    stats.connected.fetch_add(1, Ordering::Relaxed);
                }
                connected.send_modify(|n| *n += 1);
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                stats.acked.fetch_add(1, Ordering::Relaxed);
                acked.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if commands.try_send((p.topic, p.payload.to_vec())).is_err() {
                    tracing::debug!("command dropped: the site is busy");
                }
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                halting = true;
            }
            Ok(_) => {}
            Err(ConnectionError::RequestsDone) => break,
            Err(e) => {
                if up {
                    up = false;
                    stats.connected.fetch_sub(1, Ordering::Relaxed);
                }
                if halting {
                    break;
                }
                stats.connection_errors.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut last) = stats.last_error.lock() {
                    *last = Some(e.to_string());
                }
                failures = failures.saturating_add(1);
                let pause = Duration::from_millis((250u64 << failures.min(5)).min(5_000));
                tokio::time::sleep(pause).await;
            }
        }
        if halting && connected.is_closed() {
            break;
        }
    }
    if up {
        stats.connected.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polis_buildings_are_deterministic_and_near_the_network() {
        let a = polis_buildings(50, 7);
        assert_eq!(a, polis_buildings(50, 7));
        assert_ne!(a, polis_buildings(50, 8));
        assert_eq!(a[0].0, "polis-00001");
        assert_eq!(a[49].0, "polis-00050");
        let network = generate(DEFAULT_SEED);
        for (id, lat, lon) in &a {
            assert!(crate::domain::telemetry::valid_id(id));
            let nearest = network
                .iter()
                .map(|s| crate::domain::geo::distance_km(*lat, *lon, s.latitude, s.longitude))
                .fold(f64::MAX, f64::min);
            assert!(nearest < 35.0, "{id} is {nearest} km from any site");
        }
        assert_eq!(polis_buildings(7_000, 1).len(), 7_000);
    }

    #[test]
    fn a_building_has_six_devices_behind_its_gateway() {
        let d = building_devices("polis-00042");
        let ids: Vec<_> = d.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "polis-00042-gw",
                "polis-00042-pv",
                "polis-00042-grid",
                "polis-00042-evc-1",
                "polis-00042-evc-2",
                "polis-00042-env"
            ]
        );
        assert!(d.iter().all(|x| x.site_id == "polis-00042"));
        assert_eq!(d[0].gateway_id, None);
        assert!(d[1..]
            .iter()
            .all(|x| x.gateway_id.as_deref() == Some("polis-00042-gw")));
        assert_eq!(d[3].class, DeviceClass::EvCharger);
        assert_eq!(d[3].report_interval_s, 30);
    }

    #[test]
    fn places_follow_the_options() {
        let mut o = SimOptions::new("localhost", 1883);
        assert_eq!(places(&o).unwrap().len(), 250);
        o.sites = Some(3);
        o.buildings = 2;
        let p = places(&o).unwrap();
        assert_eq!(p.len(), 5);
        assert_eq!(p[4].0.id, "polis-00002");
        o.site_ids = vec!["roma".into(), "milano".into(), "roma".into()];
        let p = places(&o).unwrap();
        assert_eq!(p.len(), 4);
        assert_eq!(p[0].0.id, "roma");
        o.site_ids = vec!["atlantide".into()];
        assert!(places(&o).unwrap_err().to_string().contains("atlantide"));
    }
}
