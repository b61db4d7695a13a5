//! Ingest harness: sustained telemetry from Mosquitto to committed rows at QoS 1.
//!
//! Starts its own Mosquitto (the production settings of `mqtt-config/mosquitto.conf`, anonymous,
//! on a free port) and measures, in the same run:
//! - the floor: the broker's delivery rate to one plain QoS 1 subscriber;
//! - the service (the release binary, `spazi serve`, as its own process) on PostgreSQL and on
//!   SQLite: messages/s from the first publish to the last committed row, the end-to-end lag
//!   (commit time minus device time, sampled from `/metrics`), peak resident memory and CPU.
//!
//! - the service's CPU while the simulator runs the 250 sites at their real rate, and at ten times
//!   it (the load model of DESIGN.md §5), on PostgreSQL.
//!
//! The service's resident memory (`VmRSS`, sampled every 250 ms during each run, and `VmHWM`) is
//! recorded throughout, and again after each run once the service has been idle.
//!
//! Run with `cargo bench --bench ingest`. `SPAZI_BENCH_SIM_SECS` (default 60; 0 skips them) sets
//! how long each simulator scenario is measured. `SPAZI_BENCH_MESSAGES` (default 200000) sets the
//! messages per run, `SPAZI_BENCH_RUNS` (default 3) the runs per scenario, `SPAZI_BENCH_PUBLISHERS`
//! (default 2) the publishing connections, `SPAZI_BENCH_IDLE_SECS` (default 30) how long the
//! service idles before its idle memory is read, `SPAZI_BENCH_SQLITE` (default 1; 0 skips it) the
//! SQLite scenario, `SPAZI_BENCH_EMBEDDED` (default 1; 0 skips it) the scenario where the service
//! runs its embedded rumqttd and the publishers connect to it. `SPAZI_BENCH_LOG` (default `warn`)
//! is the service's `RUST_LOG`, and `SPAZI_BENCH_WRAP` names a program the service is started
//! under (given the binary and its arguments), for example a heap profiler. Needs PostgreSQL on
//! 127.0.0.1:5432 and `mosquitto`.

mod common;

use common::{env_number, free_port, wait_port, PgDatabase, Proc};

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rumqttc::{AsyncClient, Event, MqttOptions, NetworkOptions, Packet, QoS};

const BIN: &str = env!("CARGO_BIN_EXE_spazi");

fn start_mosquitto(dir: &Path) -> anyhow::Result<(Proc, u16)> {
    let port = free_port()?;
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             max_inflight_messages 20000\nmax_queued_messages 13000000\nmax_queued_bytes 3000000000\n\
             message_size_limit 8192\nset_tcp_nodelay true\nlog_dest stderr\nlog_type error\n"
        ),
    )?;
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting mosquitto (is it installed?)")?;
    wait_port(port, Duration::from_secs(10))?;
    Ok((Proc(child), port))
}

/// The seeded devices' power topics, so every message belongs to a known device.
fn device_topics() -> Vec<String> {
    spazi::domain::network::generate(spazi::domain::network::DEFAULT_SEED)
        .iter()
        .flat_map(spazi::domain::devices::site_devices)
        .map(|d| format!("spazi/v1/{}/{}/tele/power", d.site_id, d.id))
        .collect()
}

/// One run's messages, made as they are published: `count` power readings spread over the
/// topics, each device with its own increasing `seq`.
#[derive(Clone)]
struct Messages {
    topics: Arc<Vec<String>>,
    count: usize,
    seq_base: usize,
    now: i64,
}

impl Messages {
    fn new(topics: &Arc<Vec<String>>, count: usize, seq_base: usize) -> Messages {
        Messages {
            topics: topics.clone(),
            count,
            seq_base,
            now: chrono::Utc::now().timestamp_millis(),
        }
    }

    fn len(&self) -> usize {
        self.count
    }

    fn get(&self, i: usize) -> (String, Vec<u8>) {
        let n = self.topics.len();
        let topic = &self.topics[i % n];
        let seq = self.seq_base + i / n;
        let payload = format!(
            r#"{{"v":1,"ts":{},"seq":{seq},"m":{{"p_w":{}}}}}"#,
            self.now + (i / n) as i64,
            (i % 5000) as f64 * 1.5
        );
        (topic.clone(), payload.into_bytes())
    }
}

fn client(port: u16, id: &str, clean: bool) -> (AsyncClient, rumqttc::EventLoop) {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(clean)
        .set_inflight(1000)
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(opts, 10_000);
    let mut net = NetworkOptions::new();
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
    (client, eventloop)
}

/// Publishes every message at QoS 1 over `publishers` connections; returns when the broker has
/// acknowledged them all.
async fn publish_all(port: u16, batch: Messages, publishers: usize) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let batch = batch.clone();
        tasks.push(tokio::spawn(async move {
            let (client, mut eventloop) = client(
                port,
                &format!("bench-pub-{p}-{}", uuid::Uuid::new_v4().simple()),
                true,
            );
            let expected = (p..batch.len()).step_by(publishers).count() as u64;
            let acked = Arc::new(AtomicU64::new(0));
            let counter = acked.clone();
            let poller = tokio::spawn(async move {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::PubAck(_))) => {
                            if counter.fetch_add(1, Ordering::Relaxed) + 1 >= expected {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            eprintln!("publisher connection: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            });
            for i in (p..batch.len()).step_by(publishers) {
                let (topic, payload) = batch.get(i);
                client
                    .publish(topic, QoS::AtLeastOnce, false, payload)
                    .await?;
            }
            poller.await?;
            let _ = client.disconnect().await;
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// The floor: one plain subscriber acknowledging as it reads.
async fn floor(port: u16, batch: Messages, publishers: usize) -> anyhow::Result<f64> {
    let (sub, mut eventloop) = client(
        port,
        &format!("bench-floor-{}", uuid::Uuid::new_v4().simple()),
        true,
    );
    sub.subscribe("spazi/v1/+/+/tele/+", QoS::AtLeastOnce)
        .await?;
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = eventloop.poll().await? {
            break;
        }
    }
    let total = batch.len() as u64;
    let receiver = tokio::spawn(async move {
        let mut n = 0u64;
        let mut first: Option<Instant> = None;
        while n < total {
            if let Event::Incoming(Packet::Publish(_)) = eventloop.poll().await? {
                first.get_or_insert_with(Instant::now);
                n += 1;
            }
        }
        anyhow::Ok(first.map(|f| f.elapsed()).unwrap_or_default())
    });
    let started = Instant::now();
    publish_all(port, batch, publishers).await?;
    let receiving = receiver.await??;
    let _ = sub.disconnect().await;
    let elapsed = started.elapsed().max(receiving);
    Ok(total as f64 / elapsed.as_secs_f64())
}

struct Service {
    proc: Proc,
    base: String,
}

/// The broker the service hears devices through.
#[derive(Clone, Copy)]
enum Broker {
    /// The harness's Mosquitto on this port.
    Mosquitto(u16),
    /// rumqttd inside the service, listening on this port (`SPAZI_MQTT_URL=embedded`).
    Embedded(u16),
}

impl Broker {
    fn port(self) -> u16 {
        match self {
            Broker::Mosquitto(p) | Broker::Embedded(p) => p,
        }
    }
}

fn start_service(database_url: &str, broker: Broker, dir: &Path) -> anyhow::Result<Service> {
    let http = free_port()?;
    let (mqtt_url, listen) = match broker {
        Broker::Mosquitto(port) => (format!("mqtt://127.0.0.1:{port}"), String::new()),
        Broker::Embedded(port) => ("embedded".to_owned(), format!("127.0.0.1:{port}")),
    };
    let log = std::fs::File::create(dir.join(format!("service-{http}.log")))?;
    let mut cmd = match std::env::var("SPAZI_BENCH_WRAP") {
        Ok(w) => {
            let mut c = Command::new(w);
            c.arg(BIN);
            c
        }
        Err(_) => Command::new(BIN),
    };
    let child = cmd
        .arg("serve")
        .env("DATABASE_URL", database_url)
        .env("SPAZI_LISTEN", format!("127.0.0.1:{http}"))
        .env("SPAZI_MQTT_URL", mqtt_url)
        .env("SPAZI_MQTT_EMBEDDED_LISTEN", listen)
        .env("SPAZI_MQTT_CLIENT_ID", format!("spazi-bench-{http}"))
        .env(
            "SPAZI_JWT_SECRET",
            "bench-secret-bench-secret-bench-secret-0123",
        )
        .env(
            "SPAZI_MAIL_URL",
            format!("file://{}", dir.join("mail").display()),
        )
        .env(
            "RUST_LOG",
            std::env::var("SPAZI_BENCH_LOG").unwrap_or("warn".into()),
        )
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    wait_port(http, Duration::from_secs(120))?;
    Ok(Service {
        proc: Proc(child),
        base: format!("http://127.0.0.1:{http}"),
    })
}

async fn metric(client: &reqwest::Client, base: &str, name: &str) -> anyhow::Result<f64> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix(name).and_then(|r| r.strip_prefix(' ')) {
            return Ok(v.trim().parse()?);
        }
    }
    bail!("{name} not in /metrics")
}

/// CPU seconds (user + system) the process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak and current resident memory in MB.
fn memory_mb(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kb("VmHWM:") / 1024.0, kb("VmRSS:") / 1024.0)
}

struct Run {
    rate: f64,
    lag_median_ms: f64,
    lag_max_ms: f64,
    /// `VmHWM` at the end of the run: the process's peak since it started.
    peak_mb: f64,
    /// The highest and the median `VmRSS` sampled every 250 ms during the run.
    rss_max_mb: f64,
    rss_median_mb: f64,
    /// `VmRSS` after the run, once the service has had `idle_secs` without traffic.
    idle_mb: f64,
    cpu_share: f64,
}

/// Samples the process's `VmRSS` every 250 ms until `stop` is set.
fn sample_rss(
    pid: u32,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<Vec<f64>> {
    tokio::spawn(async move {
        let mut samples = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            samples.push(memory_mb(pid).1);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        samples.push(memory_mb(pid).1);
        samples
    })
}

async fn service_run(
    service: &Service,
    port: u16,
    batch: Messages,
    publishers: usize,
    idle_secs: u64,
) -> anyhow::Result<Run> {
    let http = reqwest::Client::new();
    let before = metric(
        &http,
        &service.base,
        "spazi_telemetry_readings_stored_total",
    )
    .await?;
    let target = before + batch.len() as f64;
    let pid = service.proc.0.id();
    let cpu0 = cpu_seconds(pid);
    let stop_sampling = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_rss(pid, stop_sampling.clone());
    let started = Instant::now();
    let publishing = tokio::spawn(publish_all(port, batch, publishers));
    let mut lags = Vec::new();
    loop {
        let stored = metric(
            &http,
            &service.base,
            "spazi_telemetry_readings_stored_total",
        )
        .await?;
        lags.push(metric(&http, &service.base, "spazi_telemetry_lag_milliseconds").await?);
        if stored >= target {
            break;
        }
        if started.elapsed() > Duration::from_secs(3600) {
            bail!(
                "only {} of {} rows committed after an hour",
                stored - before,
                target - before
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    publishing.await??;
    let cpu = cpu_seconds(pid) - cpu0;
    stop_sampling.store(true, Ordering::Relaxed);
    let samples = sampler.await?;
    let peak_mb = memory_mb(pid).0;
    // Idle: no traffic; the roll-up and the other jobs keep their own pace.
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let idle_mb = memory_mb(pid).1;
    lags.sort_by(f64::total_cmp);
    let count = target - before;
    Ok(Run {
        rate: count / elapsed.as_secs_f64(),
        lag_median_ms: lags[lags.len() / 2],
        lag_max_ms: *lags.last().unwrap_or(&0.0),
        peak_mb,
        rss_max_mb: samples.iter().copied().fold(0.0, f64::max),
        rss_median_mb: median(samples),
        idle_mb,
        cpu_share: cpu / elapsed.as_secs_f64(),
    })
}

/// Runs the simulator for the whole network against the service; returns messages/s received by
/// the service, its CPU share and its resident memory (MB) at the end.
async fn simulated_run(
    service: &Service,
    port: u16,
    database_url: &str,
    rate: f64,
    secs: u64,
) -> anyhow::Result<(f64, f64, f64)> {
    use spazi::sim::{run, SimOptions};
    let http = reqwest::Client::new();
    let pid = service.proc.0.id();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let options = SimOptions {
        rate,
        database_url: Some(database_url.to_string()),
        ..SimOptions::new("127.0.0.1", port)
    };
    let sim = tokio::spawn(run(options, stop));
    // The start-up burst of retained meta and status is not the steady state.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let received0 = metric(&http, &service.base, "spazi_telemetry_received_total").await?;
    let cpu0 = cpu_seconds(pid);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let received =
        metric(&http, &service.base, "spazi_telemetry_received_total").await? - received0;
    let cpu = cpu_seconds(pid) - cpu0;
    let elapsed = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let _ = sim.await?;
    Ok((received / elapsed, cpu / elapsed, memory_mb(pid).1))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn wait_connected(service: &Service) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&http, &service.base, "spazi_telemetry_connected")
        .await
        .unwrap_or(0.0)
        < 1.0
    {
        if Instant::now() > deadline {
            bail!("the service never connected to the broker");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let count = env_number("SPAZI_BENCH_MESSAGES", 200_000)?.max(1) as usize;
    let runs = env_number("SPAZI_BENCH_RUNS", 3)?.max(1) as usize;
    let publishers = env_number("SPAZI_BENCH_PUBLISHERS", 2)?.max(1) as usize;
    let idle_secs = env_number("SPAZI_BENCH_IDLE_SECS", 30)?;
    let sim_secs = env_number("SPAZI_BENCH_SIM_SECS", 60)?;
    let with_sqlite = env_number("SPAZI_BENCH_SQLITE", 1)? != 0;
    let with_embedded = env_number("SPAZI_BENCH_EMBEDDED", 1)? != 0;
    let dir = tempfile::Builder::new()
        .prefix("ingestbench")
        .disable_cleanup(true)
        .tempdir()?;
    let (_broker, port) = start_mosquitto(dir.path())?;
    let topics = Arc::new(device_topics());
    eprintln!(
        "{count} messages a run over {} devices, {runs} runs, {publishers} publishers",
        topics.len()
    );

    let mut floors = Vec::new();
    let mut seq = 0;
    for _ in 0..runs {
        let batch = Messages::new(&topics, count, seq);
        seq += count / topics.len() + 1;
        let r = floor(port, batch, publishers).await?;
        eprintln!("floor: {r:.0} msg/s");
        floors.push(r);
    }

    let pg = PgDatabase::create("spazi_bench_ingest")?;
    let sqlite_dir = tempfile::tempdir()?;
    let sqlite_url = format!("sqlite://{}", sqlite_dir.path().join("spazi.db").display());
    let mut backends = vec![("PostgreSQL", pg.url(), Broker::Mosquitto(port))];
    if with_sqlite {
        backends.push(("SQLite", sqlite_url, Broker::Mosquitto(port)));
    }
    let pg_embedded = PgDatabase::create("spazi_bench_ingest_embedded")?;
    if with_embedded {
        // rumqttd takes the next port too (MQTT 5).
        let mut embedded = free_port()?;
        while std::net::TcpListener::bind(("127.0.0.1", embedded + 1)).is_err() {
            embedded = free_port()?;
        }
        backends.push((
            "PostgreSQL, embedded broker",
            pg_embedded.url(),
            Broker::Embedded(embedded),
        ));
    }
    let mut report = Vec::new();
    let mut simulated = Vec::new();
    for (name, url, broker) in backends {
        let service = start_service(&url, broker, dir.path())?;
        let port = broker.port();
        wait_connected(&service).await?;
        let start_mb = memory_mb(service.proc.0.id()).1;
        eprintln!("{name}: service RSS {start_mb:.0} MB after start");
        if matches!(broker, Broker::Mosquitto(_)) && name == "PostgreSQL" && sim_secs > 0 {
            for rate in [1.0, 10.0] {
                let r = simulated_run(&service, port, &url, rate, sim_secs.max(5)).await?;
                eprintln!(
                    "simulator at rate {rate}: {:.0} msg/s, service CPU {:.1}%, RSS {:.0} MB",
                    r.0,
                    r.1 * 100.0,
                    r.2
                );
                simulated.push((rate, r));
            }
        }
        let mut results = Vec::new();
        for _ in 0..runs {
            let batch = Messages::new(&topics, count, seq);
            seq += count / topics.len() + 1;
            let r = service_run(&service, port, batch, publishers, idle_secs).await?;
            eprintln!(
                "{name}: {:.0} msg/s, lag median {:.0} ms max {:.0} ms, RSS max {:.0} MB median {:.0} MB \
                 (VmHWM {:.0} MB), idle {:.0} MB, CPU {:.0}%",
                r.rate,
                r.lag_median_ms,
                r.lag_max_ms,
                r.rss_max_mb,
                r.rss_median_mb,
                r.peak_mb,
                r.idle_mb,
                r.cpu_share * 100.0
            );
            results.push(r);
        }
        report.push((name, start_mb, results));
    }

    let floor_median = median(floors.clone());
    println!("\n## Ingest, broker to committed rows, QoS 1 ({count} messages a run, medians of {runs})\n");
    println!(
        "| scenario | msg/s | ratio to the floor | lag median | lag max | CPU (of one core) |"
    );
    println!("|---|---|---|---|---|---|");
    println!("| floor: Mosquitto to one plain subscriber | {floor_median:.0} | 1.00 | | | |");
    for (name, _, results) in &report {
        let rate = median(results.iter().map(|r| r.rate).collect());
        println!(
            "| service on {name} | {rate:.0} | {:.2} | {:.0} ms | {:.0} ms | {:.0}% |",
            rate / floor_median,
            median(results.iter().map(|r| r.lag_median_ms).collect()),
            median(results.iter().map(|r| r.lag_max_ms).collect()),
            median(results.iter().map(|r| r.cpu_share * 100.0).collect()),
        );
    }
    println!("\n## The service's resident memory (MB; the highest of the runs, idle after {idle_secs} s)\n");
    println!("| service on | after start | RSS median during runs | RSS max sampled | VmHWM (peak) | idle after the last run |");
    println!("|---|---|---|---|---|---|");
    for (name, start_mb, results) in &report {
        println!(
            "| {name} | {start_mb:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            median(results.iter().map(|r| r.rss_median_mb).collect()),
            results.iter().map(|r| r.rss_max_mb).fold(0.0, f64::max),
            results.iter().map(|r| r.peak_mb).fold(0.0, f64::max),
            results.last().map(|r| r.idle_mb).unwrap_or_default(),
        );
    }
    if !simulated.is_empty() {
        println!("\n## The whole network simulated, on PostgreSQL ({sim_secs} s each, after the start-up burst)\n");
        println!("| simulator rate | msg/s received | service CPU (of one core) | service RSS |");
        println!("|---|---|---|---|");
        for (rate, (msgs, cpu, rss)) in &simulated {
            println!(
                "| {rate}× | {msgs:.0} | {:.1}% | {rss:.0} MB |",
                cpu * 100.0
            );
        }
    }
    Ok(())
}
