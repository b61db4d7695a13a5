//! Load harness: the real service in process on a fresh PostgreSQL database, driven over HTTP
//! and, for the floors, straight through the same database pool.
//!
//! Run with `cargo bench --bench load`. `SPAZI_BENCH_SECS` (default 10) sets how long each
//! scenario is measured, `SPAZI_BENCH_CONCURRENCY` (default 32) how many clients run at once,
//! `SPAZI_BENCH_FULL_BOOKINGS` (default 50,000) how many future bookings the full site of
//! scenario e holds before it is measured. The harness never runs ANALYZE: the database is left
//! to the service, as in production with autovacuum off.
//! Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust); sends traffic only to 127.0.0.1.

mod common;

use common::{env_positive, PgDatabase, PG_ADMIN_URL};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web;
use anyhow::{bail, Context};
use chrono::{Datelike, NaiveDate, SecondsFormat, TimeZone, Utc};
use chrono_tz::Tz;
use diesel::prelude::*;
use futures::future::{BoxFuture, FutureExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use spazi::api::state::AppState;
use spazi::cli::{create_account, NewAccount};
use spazi::config::{Config, MqttConfig};
use spazi::db::access::NewCredential;
use spazi::db::models::{Booking, OutboxRow, Resource};
use spazi::db::network::SiteEntry;
use spazi::db::schema::{bookings, outbox, resources};
use spazi::db::{naive, write_transaction, DbConnection, DbError};
use spazi::domain::policy::{check_booking, BookingContext};
use spazi::domain::{ResourceKind, Role, TimeRange};
use spazi::startup::Application;

const MEMBERS: usize = 8;
const PASSWORD: &str = "bench-horse-battery-staple";
/// Each scenario runs this long unrecorded first, so connections and caches are warm.
const WARM_UP: Duration = Duration::from_secs(1);
/// Days ahead that bookings and availability queries use: inside the 90-day desk lead time.
const FIRST_DAY: i64 = 1;
const LAST_DAY: i64 = 88;
/// The outbox kind of the write floor's rows.
const FLOOR_KIND: &str = "bench_floor";
/// The longest the harness waits for booking mail to be sent before the read scenarios.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

struct Settings {
    secs: u64,
    concurrency: usize,
    /// Future bookings stored at the full site before scenario e.
    full_bookings: u64,
}

/// Alternating measurements of the empty and the full site in scenario e.
const E_ROUNDS: usize = 4;
/// Bookings stored at once while the full site is filled.
const FILL_CONCURRENCY: usize = 8;

fn postgres_version() -> String {
    #[derive(QueryableByName)]
    struct V {
        #[diesel(sql_type = diesel::sql_types::Text)]
        server_version: String,
    }
    PgConnection::establish(PG_ADMIN_URL)
        .ok()
        .and_then(|mut c| {
            diesel::sql_query("SHOW server_version")
                .get_result::<V>(&mut c)
                .ok()
        })
        .map_or_else(|| "unknown".into(), |v| v.server_version)
}

/// The service on its own actix system thread, as `spazi serve` runs it.
struct Service {
    port: u16,
    state: web::Data<AppState>,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

fn start_service(config: Config) -> anyhow::Result<Service> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("service".into())
        .spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                match Application::build(config).await {
                    Ok(app) => {
                        let _ = ready_tx.send(Ok((app.port, app.state.clone())));
                        actix_web::rt::spawn(app.run_until_stopped());
                        let _ = stopped.await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
        })?;
    let (port, state) = ready_rx
        .recv()
        .context("the service thread ended before starting")??;
    Ok(Service {
        port,
        state,
        stop,
        thread,
    })
}

/// A large site with what the load needs: its desks and the days it is open.
struct Site {
    entry: Arc<SiteEntry>,
    desks: Vec<String>,
    days: Vec<NaiveDate>,
}

impl Site {
    fn clone_of(&self) -> Site {
        Site {
            entry: self.entry.clone(),
            desks: self.desks.clone(),
            days: self.days.clone(),
        }
    }

    /// The hour starting at `hour` local time on `day`, if the policy accepts it for a desk now.
    fn hour(&self, day: NaiveDate, hour: u32) -> Option<TimeRange> {
        let tz: Tz = self.entry.tz;
        let start = tz
            .from_local_datetime(&day.and_hms_opt(hour, 0, 0)?)
            .single()?
            .with_timezone(&Utc);
        let range = TimeRange::new(start, start + chrono::Duration::hours(1)).ok()?;
        let closed = |d| self.entry.closure(d).is_some();
        let ctx = BookingContext {
            kind: ResourceKind::Desk,
            capacity: 1,
            hours: &self.entry.hours,
            timezone: tz,
            closed: &closed,
            now: Utc::now(),
        };
        check_booking(&ctx, &range, 1).is_empty().then_some(range)
    }
}

fn large_sites(state: &AppState) -> anyhow::Result<Vec<Site>> {
    let dir = state.directory();
    let mut sites = Vec::new();
    for entry in dir.sites.iter().filter(|e| e.site.size == "large") {
        let desks: Vec<String> = entry
            .resources
            .iter()
            .filter(|r| r.kind == spazi::domain::ResourceKind::Desk)
            .map(|r| r.resource.id.clone())
            .collect();
        let today = Utc::now().with_timezone(&entry.tz).date_naive();
        let days: Vec<NaiveDate> = (FIRST_DAY..=LAST_DAY)
            .map(|n| today + chrono::Duration::days(n))
            .filter(|d| entry.closure(*d).is_none() && !entry.hours.on(d.weekday()).is_empty())
            .collect();
        if !desks.is_empty() && !days.is_empty() {
            sites.push(Site {
                entry: entry.clone(),
                desks,
                days,
            });
        }
    }
    if sites.is_empty() {
        bail!("the seeded network has no large site with desks");
    }
    Ok(sites)
}

/// Hands out (desk, hour) pairs that no other request has had, spread over sites, desks and time.
struct Slots {
    sites: Arc<Vec<Site>>,
    next: AtomicU64,
}

/// A prime above 88 days x 24 hours, so stepping by it visits every hour of a site once.
const STRIDE: u64 = 7919;

impl Slots {
    fn take(&self) -> Option<(String, TimeRange)> {
        let count = self.sites.len() as u64;
        loop {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            let site = &self.sites[(n % count) as usize];
            let m = n / count;
            let desks = site.desks.len() as u64;
            let (desk, round) = (m % desks, m / desks);
            let hours = site.days.len() as u64 * 24;
            if round >= hours {
                return None;
            }
            // A different starting hour per desk, so consecutive rounds touch many days at once.
            let offset =
                ((n % count).wrapping_mul(1_000_003) ^ desk.wrapping_mul(2_654_435_761)) % hours;
            let t = (round * STRIDE % hours + offset) % hours;
            let day = site.days[(t / 24) as usize];
            if let Some(range) = site.hour(day, (t % 24) as u32) {
                return Some((site.desks[desk as usize].clone(), range));
            }
        }
    }
}

type Op = Arc<dyn Fn(usize, &mut StdRng) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

#[derive(Default)]
struct Outcome {
    /// Latency of every successful request, in nanoseconds.
    latencies: Vec<u64>,
    errors: BTreeMap<String, u64>,
    elapsed: Duration,
    cpu: Cpu,
}

/// CPU time in clock ticks, split by who spent it.
#[derive(Default, Clone, Copy)]
struct Cpu {
    /// Threads of the load generator's runtime.
    load: u64,
    /// The `db-N` threads that run every query of the pool.
    db: u64,
    /// Every other thread of this process: actix workers, the mailer, the service runtime.
    service: u64,
    /// Every `postgres` process on the machine.
    postgres: u64,
    machine_busy: u64,
    machine_total: u64,
    steal: u64,
}

/// Clock ticks per second in `/proc`: USER_HZ, 100 on every Linux this runs on.
const TICKS_PER_SEC: f64 = 100.0;

/// A process or thread's name and its user plus system ticks, from a `/proc/.../stat` file.
fn stat_ticks(path: &std::path::Path) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let (head, tail) = text.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_string();
    let fields: Vec<&str> = tail.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((name, ticks))
}

fn sample_cpu() -> Cpu {
    let mut cpu = Cpu::default();
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Some((name, ticks)) = stat_ticks(&task.path().join("stat")) {
                if name.starts_with("load") {
                    cpu.load += ticks;
                } else if name.starts_with("db-") {
                    cpu.db += ticks;
                } else {
                    cpu.service += ticks;
                }
            }
        }
    }
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            if p.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
            {
                if let Some((name, ticks)) = stat_ticks(&p.path().join("stat")) {
                    if name == "postgres" {
                        cpu.postgres += ticks;
                    }
                }
            }
        }
    }
    if let Ok(stat) = std::fs::read_to_string("/proc/stat") {
        let t: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        if t.len() >= 8 {
            // user nice system idle iowait irq softirq steal; guest time is already in user.
            cpu.machine_total = t[..8].iter().sum();
            cpu.machine_busy = cpu.machine_total - t[3] - t[4];
            cpu.steal = t[7];
        }
    }
    cpu
}

impl Cpu {
    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            load: self.load.saturating_sub(before.load),
            db: self.db.saturating_sub(before.db),
            service: self.service.saturating_sub(before.service),
            postgres: self.postgres.saturating_sub(before.postgres),
            machine_busy: self.machine_busy.saturating_sub(before.machine_busy),
            machine_total: self.machine_total.saturating_sub(before.machine_total),
            steal: self.steal.saturating_sub(before.steal),
        }
    }
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1] as f64 / 1e6
    }

    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Runs `op` from `concurrency` clients, each back to back, until `length` has passed.
async fn drive(op: &Op, concurrency: usize, length: Duration) -> Outcome {
    let started = Instant::now();
    let deadline = started + length;
    let clients: Vec<_> = (0..concurrency)
        .map(|client| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(client as u64 ^ 0x5bd1_e995);
                let mut latencies = Vec::with_capacity(16 * 1024);
                let mut errors: BTreeMap<String, u64> = BTreeMap::new();
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    match op(client, &mut rng).await {
                        Ok(()) => latencies.push(sent.elapsed().as_nanos() as u64),
                        Err(e) => *errors.entry(e).or_default() += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut outcome = Outcome::default();
    for client in clients {
        match client.await {
            Ok((latencies, errors)) => {
                outcome.latencies.extend(latencies);
                for (e, n) in errors {
                    *outcome.errors.entry(e).or_default() += n;
                }
            }
            Err(e) => {
                *outcome
                    .errors
                    .entry(format!("client task: {e}"))
                    .or_default() += 1
            }
        }
    }
    outcome.elapsed = started.elapsed();
    outcome.latencies.sort_unstable();
    outcome
}

async fn measure(name: &str, op: &Op, settings: &Settings) -> Outcome {
    eprintln!("{name}: warming up, then {} s", settings.secs);
    drive(op, settings.concurrency, WARM_UP).await;
    let before = sample_cpu();
    let mut outcome = drive(op, settings.concurrency, Duration::from_secs(settings.secs)).await;
    outcome.cpu = sample_cpu().since(before);
    outcome
}

/// Booking mail the outbox mailer has not sent yet (the floor's rows are due in ten years).
async fn mail_backlog(state: &AppState) -> anyhow::Result<i64> {
    Ok(state
        .db
        .run(|c| {
            outbox::table
                .filter(outbox::sent_at.is_null())
                .filter(outbox::kind.ne(FLOOR_KIND))
                .count()
                .get_result::<i64>(c)
                .map_err(DbError::from)
        })
        .await?)
}

/// Waits until the mailer has sent what the bookings queued, so it does not compete with reads.
async fn drain_mail(state: &AppState, limit: Duration) -> anyhow::Result<Drain> {
    let started = Instant::now();
    let backlog = mail_backlog(state).await?;
    let mut left = backlog;
    while left > 0 && started.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(250)).await;
        left = mail_backlog(state).await?;
    }
    Ok(Drain {
        backlog,
        left,
        took: started.elapsed(),
    })
}

struct Drain {
    backlog: i64,
    left: i64,
    took: Duration,
}

/// One indexed SELECT through the service's pool: the read floor.
async fn select_one(db: spazi::db::Db, id: String) -> Result<(), String> {
    db.run(move |c| {
        resources::table
            .find(id)
            .select(Resource::as_select())
            .first::<Resource>(c)
            .map_err(DbError::from)
    })
    .await
    .map(|_| ())
    .map_err(|e| format!("select: {e}"))
}

/// One single-row INSERT transaction through the service's pool: the write floor.
async fn insert_one(db: spazi::db::Db) -> Result<(), String> {
    let now = naive(Utc::now());
    // Due in ten years, so the outbox mailer leaves the row alone.
    let row = OutboxRow {
        id: uuid::Uuid::now_v7().to_string(),
        kind: FLOOR_KIND.into(),
        payload: "{}".into(),
        created_at: now,
        available_at: now + chrono::Duration::days(3650),
        attempts: 0,
        last_error: None,
        sent_at: None,
    };
    db.run(move |c| {
        write_transaction(c, |c| match c {
            DbConnection::Postgresql(pg) => {
                diesel::insert_into(outbox::table).values(&row).execute(pg)
            }
            DbConnection::Sqlite(lite) => diesel::insert_into(outbox::table)
                .values(&row)
                .execute(lite),
        })
        .map_err(DbError::from)
    })
    .await
    .map(|_| ())
    .map_err(|e| format!("insert: {e}"))
}

fn raw_select(state: &AppState, desk_ids: Arc<Vec<String>>) -> Op {
    let db = state.db.clone();
    Arc::new(move |_, rng| {
        select_one(
            db.clone(),
            desk_ids[rng.gen_range(0..desk_ids.len())].clone(),
        )
        .boxed()
    })
}

fn raw_insert(state: &AppState) -> Op {
    let db = state.db.clone();
    Arc::new(move |_, _| insert_one(db.clone()).boxed())
}

/// A second HTTP server on the same pool whose handlers do nothing but the floor queries, so the
/// floors can also be read with the HTTP stack (actix and the client) included.
fn start_floor_server(db: spazi::db::Db) -> anyhow::Result<u16> {
    use actix_web::{App, HttpResponse, HttpServer};
    async fn select(db: web::Data<spazi::db::Db>, id: web::Path<String>) -> HttpResponse {
        match select_one(db.get_ref().clone(), id.into_inner()).await {
            Ok(()) => HttpResponse::Ok().json(json!({"ok": true})),
            Err(e) => HttpResponse::InternalServerError().body(e),
        }
    }
    async fn insert(db: web::Data<spazi::db::Db>) -> HttpResponse {
        match insert_one(db.get_ref().clone()).await {
            Ok(()) => HttpResponse::Created().json(json!({"ok": true})),
            Err(e) => HttpResponse::InternalServerError().body(e),
        }
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::Builder::new()
        .name("floor-http".into())
        .spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let data = web::Data::new(db);
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .route("/floor/select/{id}", web::get().to(select))
                        .route("/floor/insert", web::post().to(insert))
                })
                .listen(listener)?
                .run();
                server.await
            })
        })?;
    Ok(port)
}

fn http_select(client: reqwest::Client, port: u16, desk_ids: Arc<Vec<String>>) -> Op {
    Arc::new(move |_, rng| {
        let url = format!(
            "http://127.0.0.1:{port}/floor/select/{}",
            desk_ids[rng.gen_range(0..desk_ids.len())]
        );
        let request = client.get(url);
        async move { expect_status(request, 200).await }.boxed()
    })
}

fn http_insert(client: reqwest::Client, port: u16) -> Op {
    let url = format!("http://127.0.0.1:{port}/floor/insert");
    Arc::new(move |_, _| {
        let request = client.post(&url);
        async move { expect_status(request, 201).await }.boxed()
    })
}

async fn expect_status(request: reqwest::RequestBuilder, expected: u16) -> Result<(), String> {
    let res = request
        .send()
        .await
        .map_err(|e| format!("transport: {e}"))?;
    let status = res.status().as_u16();
    let body = res.bytes().await.map_err(|e| format!("body: {e}"))?;
    if status == expected {
        Ok(())
    } else {
        Err(problem_key(status, &body))
    }
}

fn utc_text(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A random open hour at a random large site, as availability query parameters.
fn availability_query(sites: &[Site], rng: &mut StdRng) -> [(&'static str, String); 4] {
    loop {
        let site = &sites[rng.gen_range(0..sites.len())];
        let day = site.days[rng.gen_range(0..site.days.len())];
        if let Some(range) = site.hour(day, rng.gen_range(0..24)) {
            return [
                ("site_id", site.entry.site.id.clone()),
                ("kind", "desk".into()),
                ("from", utc_text(range.start())),
                ("to", utc_text(range.end())),
            ];
        }
    }
}

fn availability(client: reqwest::Client, base: String, sites: Arc<Vec<Site>>) -> Op {
    let url = format!("{base}/api/v1/availability");
    Arc::new(move |_, rng| {
        let request = client.get(&url).query(&availability_query(&sites, rng));
        async move { expect_status(request, 200).await }.boxed()
    })
}

fn create_booking(
    client: reqwest::Client,
    base: String,
    tokens: Arc<Vec<String>>,
    slots: Arc<Slots>,
) -> Op {
    let url = format!("{base}/api/v1/bookings");
    Arc::new(move |client_no, _| {
        let slot = slots.take();
        let request = slot.map(|(desk, range)| {
            client
                .post(&url)
                .bearer_auth(&tokens[client_no % tokens.len()])
                .json(&json!({
                    "resource_id": desk,
                    "starts_at": utc_text(range.start()),
                    "ends_at": utc_text(range.end()),
                }))
        });
        async move {
            let request = request.ok_or_else(|| "no free slot left".to_string())?;
            expect_status(request, 201).await
        }
        .boxed()
    })
}

/// Groups failures by status and problem code, with the first field error as an example.
fn problem_key(status: u16, body: &[u8]) -> String {
    let problem: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let code = problem["code"].as_str().unwrap_or("-");
    let first = &problem["errors"][0];
    match (first["field"].as_str(), first["message"].as_str()) {
        (Some(f), Some(m)) => format!("{status} {code} ({f}: {m})"),
        _ => format!("{status} {code}"),
    }
}

async fn login(client: &reqwest::Client, base: &str, email: &str) -> anyhow::Result<String> {
    let res = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await?;
    let status = res.status();
    let body: Value = res.json().await?;
    match body["access_token"].as_str() {
        Some(t) if status.is_success() => Ok(t.to_string()),
        _ => bail!("login of {email} answered {status}: {body}"),
    }
}

struct Report {
    select: Outcome,
    select_http: Outcome,
    availability: Outcome,
    insert: Outcome,
    insert_http: Outcome,
    create: Outcome,
    stored_bookings: i64,
    drain: Drain,
    full: FullSite,
}

/// Scenario e: booking creation at a site holding many future bookings beside an empty one.
struct FullSite {
    /// Future bookings at the full site when its measurement started.
    held: i64,
    fill_took: Duration,
    empty: Vec<Outcome>,
    full: Vec<Outcome>,
}

impl FullSite {
    fn median_rate(outcomes: &[Outcome]) -> f64 {
        median(outcomes.iter().map(Outcome::rate).collect())
    }

    fn median_p50(outcomes: &[Outcome]) -> f64 {
        median(outcomes.iter().map(|o| o.percentile_ms(50.0)).collect())
    }
}

/// The median (the mean of the middle two for an even count); NaN for none.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Stores `count` future bookings at the slots of `slots`, each with its door credential and its
/// (already sent) confirmation mail, through the same storage function the booking endpoint uses.
async fn fill_site(
    state: &AppState,
    slots: Arc<Slots>,
    user_id: String,
    count: u64,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let left = Arc::new(AtomicU64::new(count));
    let workers: Vec<_> = (0..FILL_CONCURRENCY)
        .map(|_| {
            let (db, slots, left, user_id) = (
                state.db.clone(),
                slots.clone(),
                left.clone(),
                user_id.clone(),
            );
            tokio::spawn(async move {
                while left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    let (desk, range) = slots.take().context("the full site ran out of slots")?;
                    let now = naive(Utc::now());
                    let site_id = slots.sites[0].entry.site.id.clone();
                    let booking = Booking {
                        id: uuid::Uuid::now_v7().to_string(),
                        resource_id: desk,
                        site_id: site_id.clone(),
                        user_id: user_id.clone(),
                        organization_id: None,
                        starts_at: naive(range.start()),
                        ends_at: naive(range.end()),
                        status: spazi::domain::BookingStatus::Confirmed,
                        attendees: 1,
                        note: None,
                        charged_minutes: 0,
                        allowance_month: None,
                        sequence: 0,
                        created_at: now,
                        updated_at: now,
                        checked_in_at: None,
                        cancelled_at: None,
                    };
                    let credential = NewCredential::fresh(
                        &booking.id,
                        &site_id,
                        booking.starts_at,
                        booking.ends_at,
                        now,
                    )?;
                    db.run(move |c| {
                        spazi::db::bookings::create(c, &booking, None, &credential, None, |_| {
                            let mut mail = OutboxRow::due("booking_confirmed", "{}".into(), now);
                            mail.sent_at = Some(now);
                            mail
                        })
                    })
                    .await
                    .map_err(|e| anyhow::anyhow!("filling the full site: {e}"))?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for w in workers {
        w.await??;
    }
    Ok(started.elapsed())
}

/// Active bookings at `site_id` that have not started.
async fn future_bookings(state: &AppState, site_id: String) -> anyhow::Result<i64> {
    Ok(state
        .db
        .run(move |c| {
            bookings::table
                .filter(bookings::site_id.eq(site_id))
                .filter(bookings::starts_at.gt(naive(Utc::now())))
                .filter(bookings::status.eq("confirmed"))
                .count()
                .get_result::<i64>(c)
                .map_err(DbError::from)
        })
        .await?)
}

async fn run_scenarios(
    service: &Service,
    sites: Arc<Vec<Site>>,
    settings: &Settings,
) -> anyhow::Result<Report> {
    let state = service.state.clone();
    let base = format!("http://127.0.0.1:{}", service.port);
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(settings.concurrency)
        .timeout(Duration::from_secs(30))
        .build()?;

    let mut tokens = Vec::new();
    let mut member_ids = Vec::new();
    for i in 0..MEMBERS {
        let email = format!("bench-member-{i}@bench.spazi.example");
        let db = state.db.clone();
        let address = email.clone();
        let id = tokio::task::spawn_blocking(move || {
            create_account(
                &db,
                &NewAccount {
                    email: &address,
                    name: "Bench Member",
                    role: Role::Member,
                    sites: &[],
                    organization: None,
                    password: PASSWORD,
                },
            )
        })
        .await??;
        member_ids.push(id);
        tokens.push(login(&client, &base, &email).await?);
    }
    let tokens = Arc::new(tokens);

    // One request by hand, so a broken setup fails loudly instead of filling the error column.
    let probe: Value = client
        .get(format!("{base}/api/v1/availability"))
        .query(&availability_query(&sites, &mut StdRng::seed_from_u64(7)))
        .send()
        .await?
        .json()
        .await?;
    if probe["items"].as_array().is_none_or(|a| a.is_empty()) {
        bail!("availability of a large site returned no desks: {probe}");
    }

    let desk_ids: Arc<Vec<String>> = Arc::new(sites.iter().flat_map(|s| s.desks.clone()).collect());
    // Scenario e keeps two large sites to itself: the first is filled, the second stays empty.
    let mut others: Vec<Site> = sites.iter().map(Site::clone_of).collect();
    if others.len() < 3 {
        bail!("the seeded network has fewer than three large sites");
    }
    let rest = others.split_off(2);
    let empty_site = others.pop().context("an empty site")?;
    let full_site = others.pop().context("a full site")?;
    let full_id = full_site.entry.site.id.clone();
    let full_slots = Arc::new(Slots {
        sites: Arc::new(vec![full_site]),
        next: AtomicU64::new(0),
    });
    let empty_slots = Arc::new(Slots {
        sites: Arc::new(vec![empty_site]),
        next: AtomicU64::new(0),
    });
    let slots = Arc::new(Slots {
        sites: Arc::new(rest),
        next: AtomicU64::new(0),
    });

    let floor_port = start_floor_server(state.db.clone())?;
    // Writes first, so availability then probes a bookings table that holds real rows.
    let insert = measure("c. raw INSERT", &raw_insert(&state), settings).await;
    let insert_http = measure(
        "c'. raw INSERT behind HTTP",
        &http_insert(client.clone(), floor_port),
        settings,
    )
    .await;
    let create = measure(
        "d. POST /api/v1/bookings",
        &create_booking(client.clone(), base.clone(), tokens.clone(), slots),
        settings,
    )
    .await;
    eprintln!("waiting for the outbox mailer to send the booking mail");
    let drain = drain_mail(&state, DRAIN_LIMIT).await?;
    let select = measure(
        "a. raw SELECT",
        &raw_select(&state, desk_ids.clone()),
        settings,
    )
    .await;
    let select_http = measure(
        "a'. raw SELECT behind HTTP",
        &http_select(client.clone(), floor_port, desk_ids),
        settings,
    )
    .await;
    let availability = measure(
        "b. GET /api/v1/availability",
        &availability(client.clone(), base.clone(), sites.clone()),
        settings,
    )
    .await;

    eprintln!(
        "e. filling one large site with {} future bookings",
        settings.full_bookings
    );
    let fill_took = fill_site(
        &state,
        full_slots.clone(),
        member_ids[0].clone(),
        settings.full_bookings,
    )
    .await?;
    let held = future_bookings(&state, full_id).await?;
    let (mut empty, mut full) = (Vec::new(), Vec::new());
    for round in 0..E_ROUNDS {
        // The two sites take turns going first, so a drift over the rounds (the tables grow)
        // weighs on both alike.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for at_full in order {
            let (name, slots) = if at_full {
                (
                    "e'. POST /api/v1/bookings at the full site",
                    full_slots.clone(),
                )
            } else {
                (
                    "e. POST /api/v1/bookings at an empty site",
                    empty_slots.clone(),
                )
            };
            let outcome = measure(
                &format!("{name}, round {}", round + 1),
                &create_booking(client.clone(), base.clone(), tokens.clone(), slots),
                settings,
            )
            .await;
            if at_full {
                full.push(outcome);
            } else {
                empty.push(outcome);
            }
        }
    }
    let drain_e = drain_mail(&state, DRAIN_LIMIT).await?;
    if drain_e.left > 0 {
        eprintln!("{} booking mails of e still unsent", drain_e.left);
    }

    let stored_bookings = state
        .db
        .run(|c| {
            bookings::table
                .count()
                .get_result::<i64>(c)
                .map_err(DbError::from)
        })
        .await?;
    Ok(Report {
        select,
        select_http,
        availability,
        insert,
        insert_http,
        create,
        stored_bookings,
        drain,
        full: FullSite {
            held,
            fill_took,
            empty,
            full,
        },
    })
}

fn print_report(report: &Report, settings: &Settings, sites: &[Site]) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let desks: usize = sites.iter().map(|s| s.desks.len()).sum();
    println!();
    println!(
        "spazi load bench: PostgreSQL {}, {} s per scenario after {} s warm-up, {} clients, {} CPUs",
        postgres_version(),
        settings.secs,
        WARM_UP.as_secs(),
        settings.concurrency,
        cpus
    );
    println!(
        "{} large sites, {} desks (d spreads over all but the two of e); run order c, c', d, a, a', b, e; no ANALYZE by the harness",
        sites.len(),
        desks,
    );
    println!();
    println!("| scenario | ok requests | req/s | p50 ms | p99 ms | errors |");
    println!("|---|---:|---:|---:|---:|---:|");
    let rows = [
        ("a. raw SELECT by primary key (pool)", &report.select),
        ("a'. the same SELECT behind HTTP", &report.select_http),
        ("b. GET /api/v1/availability", &report.availability),
        ("c. raw INSERT transaction (pool)", &report.insert),
        ("c'. the same INSERT behind HTTP", &report.insert_http),
        ("d. POST /api/v1/bookings", &report.create),
    ];
    for (name, o) in rows {
        println!(
            "| {name} | {} | {:.0} | {:.2} | {:.2} | {} |",
            o.latencies.len(),
            o.rate(),
            o.percentile_ms(50.0),
            o.percentile_ms(99.0),
            o.error_count()
        );
    }
    println!();
    let b_over_a = report.availability.rate() / report.select.rate();
    let d_over_c = report.create.rate() / report.insert.rate();
    let b_p99 = report.availability.percentile_ms(99.0);
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "b/a = {b_over_a:.2} (target >= 0.50: {}); b p99 = {b_p99:.2} ms (target < 10 ms: {})",
        verdict(b_over_a >= 0.5),
        verdict(b_p99 < 10.0)
    );
    println!(
        "d/c = {d_over_c:.2} (target >= 0.50: {})",
        verdict(d_over_c >= 0.5)
    );
    println!(
        "against the floors behind the same HTTP stack: b/a' = {:.2}, d/c' = {:.2}",
        report.availability.rate() / report.select_http.rate(),
        report.create.rate() / report.insert_http.rate()
    );
    println!(
        "bookings stored: {} (201s measured: {}, the rest from warm-up)",
        report.stored_bookings,
        report.create.latencies.len()
    );
    let drain = &report.drain;
    println!(
        "outbox after d: {} booking mails unsent; the mailer took {:.1} s to send them ({} left) before a and b",
        drain.backlog,
        drain.took.as_secs_f64(),
        drain.left
    );
    let e = &report.full;
    let (empty_rate, full_rate) = (
        FullSite::median_rate(&e.empty),
        FullSite::median_rate(&e.full),
    );
    println!();
    println!(
        "e. booking creation at a site holding {} future bookings (stored in {:.0} s with their credentials) beside an empty site, {} alternating rounds:",
        e.held,
        e.fill_took.as_secs_f64(),
        e.empty.len()
    );
    println!();
    println!("| site | req/s per round | median req/s | median p50 ms | errors |");
    println!("|---|---|---:|---:|---:|");
    for (name, outcomes) in [("empty", &e.empty), ("full", &e.full)] {
        let rates: Vec<String> = outcomes
            .iter()
            .map(|o| format!("{:.0}", o.rate()))
            .collect();
        println!(
            "| {name} | {} | {:.0} | {:.2} | {} |",
            rates.join(", "),
            FullSite::median_rate(outcomes),
            FullSite::median_p50(outcomes),
            outcomes.iter().map(Outcome::error_count).sum::<u64>()
        );
    }
    println!();
    println!(
        "full/empty = {:.2} (target >= 0.90: {})",
        full_rate / empty_rate,
        verdict(full_rate / empty_rate >= 0.9)
    );
    for (name, outcomes) in [("e (empty site)", &e.empty), ("e' (full site)", &e.full)] {
        for o in outcomes {
            for (err, n) in &o.errors {
                println!("error in {name}: {n} x {err}");
            }
        }
    }
    println!();
    println!("CPU per successful request (us), and how busy the machine was:");
    println!();
    println!("| scenario | load generator | service threads | db threads | postgres | machine busy | other processes | steal |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, o) in rows {
        let per = |ticks: u64| ticks as f64 / TICKS_PER_SEC * 1e6 / o.latencies.len().max(1) as f64;
        let share = |ticks: u64| 100.0 * ticks as f64 / o.cpu.machine_total.max(1) as f64;
        // Whatever else ran on the shared machine meanwhile (builds, other tenants).
        let ours = o.cpu.load + o.cpu.service + o.cpu.db + o.cpu.postgres;
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0}% | {:.0}% | {:.1}% |",
            per(o.cpu.load),
            per(o.cpu.service),
            per(o.cpu.db),
            per(o.cpu.postgres),
            share(o.cpu.machine_busy),
            share(o.cpu.machine_busy.saturating_sub(ours)),
            share(o.cpu.steal)
        );
    }
    println!();
    for (name, o) in rows {
        for (e, n) in &o.errors {
            println!("error in {name}: {n} x {e}");
        }
    }
}

fn main() -> anyhow::Result<()> {
    // Cargo passes `--bench` and maybe a filter; this harness has nothing to filter, so it ignores them.
    let settings = Settings {
        secs: env_positive("SPAZI_BENCH_SECS", 10)?,
        concurrency: env_positive("SPAZI_BENCH_CONCURRENCY", 32)? as usize,
        full_bookings: env_positive("SPAZI_BENCH_FULL_BOOKINGS", 50_000)?,
    };
    let database = PgDatabase::create("spazi_bench")?;
    let mail_dir = tempfile::tempdir()?;
    let config = Config {
        database_url: database.url(),
        listen: "127.0.0.1:0".into(),
        mqtt: MqttConfig::External {
            host: "127.0.0.1".into(),
            port: 1883,
        },
        mail_url: format!("file://{}", mail_dir.path().display()),
        mail_from: "Spazi per l'Italia <prenotazioni@spazi.example>".into(),
        public_url: "http://spazi.bench".into(),
        jwt_secret: b"bench-secret-bench-secret-bench-secret".to_vec(),
        mail_poll_secs: 1,
        telemetry: spazi::config::TelemetryConfig {
            ingest: false,
            ..Default::default()
        },
    };
    eprintln!("starting the service on database {}", database.name());
    let service = start_service(config)?;
    let sites = Arc::new(large_sites(&service.state)?);

    let load = tokio::runtime::Builder::new_multi_thread()
        .thread_name("load")
        .enable_all()
        .build()?;
    let report = load.block_on(run_scenarios(&service, sites.clone(), &settings));
    load.shutdown_timeout(Duration::from_secs(5));

    let _ = service.stop.send(());
    let _ = service.thread.join();
    drop(service.state);
    let report = report?;
    print_report(&report, &settings, &sites);
    drop(database);
    Ok(())
}
