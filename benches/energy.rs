//! Energy harness: the network's energy reports over HTTP, beside plain aggregates of the same
//! ledger straight on PostgreSQL, measured in the same run.
//!
//! Creates a fresh PostgreSQL database, migrates and seeds it (the 250 sites), and fills the
//! ledger: October 2026 (Europe/Rome, 2,980 quarters with the day the clocks go back) for every
//! site and the whole of 2026 for one large site, through `spazi::db::energy::insert_lines`,
//! then the region sums through `sum_region`, then `VACUUM ANALYZE` of both tables. It starts the
//! release binary (`spazi serve`, its own process) on that database, logs in as a network admin
//! and times, one request at a time, interleaved in rounds:
//! - the network's month in quarters, days and as one interval, and the month's KPIs;
//! - one site's year in hours, and its KPIs month by month;
//! - the baselines: `GROUP BY bucket` sums of `energy_15m` over the month for all sites and over
//!   the year for the site, and of `energy_region_15m` over the month (what the network reports
//!   read), through a direct diesel connection from this process;
//! - the service's own reads (`region_lines` for the network's month, `site_lines` for the site's
//!   year) through a connection of the service's type, to tell the database's part of a report
//!   from the rest.
//!
//! It also times, in this process, the expected PV yield that the KPIs compute for the same
//! ranges.
//!
//! Run with `cargo bench --bench energy`. `SPAZI_BENCH_ROUNDS` (default 3) sets the rounds,
//! `SPAZI_BENCH_REQUESTS` (default 20) the requests of each scenario per round,
//! `SPAZI_BENCH_WARMUP` (default 3) the unrecorded requests of each scenario before the first
//! round. Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust); all traffic stays on
//! 127.0.0.1.

mod common;

use common::{env_number, env_positive, free_port, wait_port, PgDatabase, Proc, PG_ADMIN_URL};

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Nullable, Text};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use spazi::cli::{create_account, NewAccount};
use spazi::db::energy::{insert_lines, region_lines, site_lines, sum_region, EnergyRow};
use spazi::db::network::{Directory, SiteEntry};
use spazi::db::{Db, DbConnection};
use spazi::domain::energy::expected_yield_wh_per_kwp;
use spazi::domain::opening_hours::local_day_start;
use spazi::domain::quarters::QUARTER_MS;
use spazi::domain::solar::{clouds_factor, value_noise, PvPlant};
use spazi::domain::Role;

const BIN: &str = env!("CARGO_BIN_EXE_spazi");
const ADMIN: &str = "energy-bench-admin@bench.spazi.example";
const PASSWORD: &str = "bench-horse-battery-staple";
const ZONE: Tz = chrono_tz::Europe::Rome;
/// Threads writing the ledger.
const WRITERS: usize = 4;

struct Settings {
    rounds: usize,
    requests: usize,
    warmup: usize,
}

fn day(y: i32, m: u32, d: u32) -> anyhow::Result<NaiveDate> {
    NaiveDate::from_ymd_opt(y, m, d).with_context(|| format!("no date {y}-{m}-{d}"))
}

/// `[from, to)` in epoch ms between two local midnights.
fn span(from: NaiveDate, to: NaiveDate) -> (i64, i64) {
    (
        local_day_start(from, ZONE).timestamp_millis(),
        local_day_start(to, ZONE).timestamp_millis(),
    )
}

/// A site's ledger lines over `[from, to)`: PV from the clear-sky model of `domain::solar` dimmed
/// by passing clouds, an office load that follows the working day, EV charging on working days
/// at the sites with chargers, and the grid's import and export as what is left over.
fn ledger(site: &SiteEntry, seed: u64, from: i64, to: i64) -> Vec<EnergyRow> {
    let s = &site.site;
    let plant = PvPlant::south_facing(s.pv_kwp);
    let chargers = match s.size.as_str() {
        "large" => 4.0,
        "medium" => 2.0,
        _ => 0.0,
    };
    let area = f64::from(s.area_m2);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut rows = Vec::with_capacity(((to - from) / QUARTER_MS).max(0) as usize);
    let mut bucket = from;
    while bucket < to {
        let mid =
            DateTime::<Utc>::from_timestamp_millis(bucket + QUARTER_MS / 2).unwrap_or_default();
        let local = mid.with_timezone(&site.tz);
        let hour = f64::from(local.hour()) + f64::from(local.minute()) / 60.0;
        let week = match local.weekday() {
            Weekday::Sat => 0.3,
            Weekday::Sun => 0.05,
            _ => 1.0,
        };
        let office = if (7.5..19.5).contains(&hour) {
            ((hour - 7.5) / 12.0 * std::f64::consts::PI).sin() * week
        } else {
            0.0
        };
        let t = mid.timestamp() as f64;
        let jitter = 0.9 + 0.2 * value_noise(seed, t, 3_600.0);
        let building_w = area * (3.0 + 12.0 * office) * jitter;
        let plugged = ((value_noise(seed ^ 0xE5, t, 5_400.0) - 0.4) / 0.6).clamp(0.0, 1.0);
        let ev_w = chargers * 7_400.0 * office * plugged;
        let pv_w = plant.power_at(s.latitude, s.longitude, mid, clouds_factor(seed, mid));
        let (pv, load, ev) = (pv_w / 4.0, (building_w + ev_w) / 4.0, ev_w / 4.0);
        let own = pv.min(load);
        rows.push(EnergyRow {
            site_id: s.id.clone(),
            bucket,
            pv_wh: pv,
            import_wh: load - own,
            export_wh: pv - own,
            ev_wh: ev,
            load_wh: load,
            quality: i16::from(rng.gen_ratio(1, 400)),
        });
        bucket += QUARTER_MS;
    }
    rows
}

/// What the ledger load did.
struct Loaded {
    rows: usize,
    lines_secs: f64,
    regions: usize,
    regions_secs: f64,
    vacuum_secs: f64,
    year_site: String,
}

/// Writes the month for every site and the year for the first large one, then the region sums.
fn load_ledger(db: &Db, dir: &Directory, url: &str) -> anyhow::Result<Loaded> {
    let month = span(day(2026, 10, 1)?, day(2026, 11, 1)?);
    let year = span(day(2026, 1, 1)?, day(2027, 1, 1)?);
    let year_site = dir
        .sites
        .iter()
        .find(|s| s.site.size == "large")
        .context("the seeded network has no large site")?
        .clone();
    let work: Vec<(u64, Arc<SiteEntry>, (i64, i64))> = dir
        .sites
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let range = if s.site.id == year_site.site.id {
                year
            } else {
                month
            };
            (i as u64 + 1, s.clone(), range)
        })
        .collect();
    let work = Mutex::new(work);
    let written = Mutex::new(0usize);
    let started = Instant::now();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..WRITERS)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<()> {
                    loop {
                        let next = work.lock().unwrap_or_else(|p| p.into_inner()).pop();
                        let Some((seed, site, (from, to))) = next else {
                            return Ok(());
                        };
                        let rows = ledger(&site, seed, from, to);
                        db.run_blocking(|c| insert_lines(c, &rows))
                            .map_err(|e| anyhow::anyhow!("writing {}: {e}", site.site.id))?;
                        *written.lock().unwrap_or_else(|p| p.into_inner()) += rows.len();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a ledger writer panicked"))??;
        }
        anyhow::Ok(())
    })?;
    let lines_secs = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut regions: Vec<String> = dir.sites.iter().map(|s| s.site.region.clone()).collect();
    regions.sort();
    regions.dedup();
    for region in &regions {
        let range = if *region == year_site.site.region {
            year
        } else {
            month
        };
        db.run_blocking(|c| sum_region(c, region, range.0, range.1))
            .map_err(|e| anyhow::anyhow!("summing {region}: {e}"))?;
    }
    let regions_secs = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut conn = PgConnection::establish(url)?;
    diesel::sql_query("VACUUM ANALYZE energy_15m, energy_region_15m").execute(&mut conn)?;
    Ok(Loaded {
        rows: written.into_inner().unwrap_or_else(|p| p.into_inner()),
        lines_secs,
        regions: regions.len(),
        regions_secs,
        vacuum_secs: started.elapsed().as_secs_f64(),
        year_site: year_site.site.id.clone(),
    })
}

/// The PV plants of some sites grouped by rounded position, as the KPIs group them for the
/// expected yield: `(lat, lon)` of each group that has a plant.
fn plant_groups(sites: &[&SiteEntry]) -> Vec<(f64, f64)> {
    let mut groups: BTreeMap<(i64, i64), f64> = BTreeMap::new();
    for s in sites {
        let key = (
            (s.site.latitude * 2.0).round() as i64,
            s.site.longitude.round() as i64,
        );
        *groups.entry(key).or_default() += s.site.pv_kwp;
    }
    groups
        .into_iter()
        .filter(|(_, kwp)| *kwp > 0.0)
        .map(|((lat, lon), _)| (lat as f64 / 2.0, lon as f64))
        .collect()
}

/// Milliseconds (median of 5) that the expected PV yield of `groups` over `[from, to)` takes
/// computed twice, as a KPI report does (its periods, then its total).
fn yield_ms(groups: &[(f64, f64)], from: i64, to: i64) -> f64 {
    let times: Vec<f64> = (0..5)
        .map(|_| {
            let started = Instant::now();
            let wh: f64 = (0..2)
                .flat_map(|_| groups.iter())
                .map(|&(lat, lon)| expected_yield_wh_per_kwp(lat, lon, from, to))
                .sum();
            std::hint::black_box(wh);
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    median(&times)
}

/// The expected-yield part of the two KPI scenarios, timed in this process.
struct YieldCost {
    network_groups: usize,
    network_ms: f64,
    site_ms: f64,
}

fn yield_cost(dir: &Directory, site: &str) -> anyhow::Result<YieldCost> {
    let month = span(day(2026, 10, 1)?, day(2026, 11, 1)?);
    let year = span(day(2026, 1, 1)?, day(2027, 1, 1)?);
    let all: Vec<&SiteEntry> = dir.sites.iter().map(|s| s.as_ref()).collect();
    let one: Vec<&SiteEntry> = all.iter().copied().filter(|s| s.site.id == site).collect();
    let network = plant_groups(&all);
    Ok(YieldCost {
        network_groups: network.len(),
        network_ms: yield_ms(&network, month.0, month.1),
        site_ms: yield_ms(&plant_groups(&one), year.0, year.1),
    })
}

fn start_service(database_url: &str, dir: &Path) -> anyhow::Result<(Proc, String)> {
    let http = free_port()?;
    // Nothing listens there: with ingest off, only /readyz would look for the broker.
    let mqtt = free_port()?;
    let log = std::fs::File::create(dir.join("service.log"))?;
    let child = Command::new(BIN)
        .arg("serve")
        .env("DATABASE_URL", database_url)
        .env("SPAZI_LISTEN", format!("127.0.0.1:{http}"))
        .env("SPAZI_MQTT_URL", format!("mqtt://127.0.0.1:{mqtt}"))
        .env("SPAZI_INGEST", "0")
        .env(
            "SPAZI_JWT_SECRET",
            "bench-secret-bench-secret-bench-secret-0123",
        )
        .env(
            "SPAZI_MAIL_URL",
            format!("file://{}", dir.join("mail").display()),
        )
        .env("RUST_LOG", "warn")
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {BIN}"))?;
    let proc = Proc(child);
    wait_port(http, Duration::from_secs(120))?;
    Ok((proc, format!("http://127.0.0.1:{http}")))
}

#[derive(QueryableByName)]
struct Line {
    #[diesel(sql_type = BigInt)]
    _bucket: i64,
    #[diesel(sql_type = Nullable<Double>)]
    _pv: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    _import: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    _export: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    _ev: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    _load: Option<f64>,
}

const SUMS: &str = "bucket AS _bucket, sum(pv_wh) AS _pv, sum(import_wh) AS _import, \
     sum(export_wh) AS _export, sum(ev_wh) AS _ev, sum(load_wh) AS _load";

#[derive(Clone, Copy, PartialEq)]
enum Baseline {
    /// Every site's quarters of the month, summed per quarter.
    NetworkMonth,
    /// The region sums of the month, summed per quarter.
    RegionMonth,
    /// One site's quarters of the year.
    SiteYear,
}

enum Probe {
    Http {
        path: String,
        baseline: Baseline,
    },
    Sql(Baseline),
    /// The service's own read of the ledger (`region_lines` for the network's month, `site_lines`
    /// for the site's year), through a connection of the service's type, rows decoded.
    Read(Baseline),
}

struct Scenario {
    name: &'static str,
    probe: Probe,
}

struct Target<'a> {
    rt: &'a tokio::runtime::Runtime,
    client: reqwest::Client,
    base: String,
    token: String,
    pg: PgConnection,
    spazi: DbConnection,
    month: (i64, i64),
    year: (i64, i64),
    site: String,
}

impl Target<'_> {
    /// Times one request or query; returns the milliseconds and the bytes (or rows) received.
    fn time(&mut self, probe: &Probe) -> anyhow::Result<(f64, usize)> {
        match probe {
            Probe::Http { path, .. } => {
                let url = format!("{}{path}", self.base);
                let started = Instant::now();
                let (status, body) = self.rt.block_on(async {
                    let res = self
                        .client
                        .get(&url)
                        .bearer_auth(&self.token)
                        .send()
                        .await?;
                    let status = res.status();
                    anyhow::Ok((status, res.bytes().await?))
                })?;
                let ms = started.elapsed().as_secs_f64() * 1e3;
                if !status.is_success() {
                    bail!(
                        "{path} answered {status}: {}",
                        String::from_utf8_lossy(&body[..body.len().min(500)])
                    );
                }
                Ok((ms, body.len()))
            }
            Probe::Sql(b) => {
                let started = Instant::now();
                let rows: Vec<Line> = match b {
                    Baseline::NetworkMonth => diesel::sql_query(format!(
                        "SELECT {SUMS} FROM energy_15m WHERE bucket >= $1 AND bucket < $2 \
                         GROUP BY bucket ORDER BY bucket"
                    ))
                    .bind::<BigInt, _>(self.month.0)
                    .bind::<BigInt, _>(self.month.1)
                    .load(&mut self.pg)?,
                    Baseline::RegionMonth => diesel::sql_query(format!(
                        "SELECT {SUMS} FROM energy_region_15m WHERE bucket >= $1 AND bucket < $2 \
                         GROUP BY bucket ORDER BY bucket"
                    ))
                    .bind::<BigInt, _>(self.month.0)
                    .bind::<BigInt, _>(self.month.1)
                    .load(&mut self.pg)?,
                    Baseline::SiteYear => diesel::sql_query(format!(
                        "SELECT {SUMS} FROM energy_15m WHERE site_id = $1 AND bucket >= $2 \
                         AND bucket < $3 GROUP BY bucket ORDER BY bucket"
                    ))
                    .bind::<Text, _>(&self.site)
                    .bind::<BigInt, _>(self.year.0)
                    .bind::<BigInt, _>(self.year.1)
                    .load(&mut self.pg)?,
                };
                Ok((started.elapsed().as_secs_f64() * 1e3, rows.len()))
            }
            Probe::Read(b) => {
                let (from, to) = match b {
                    Baseline::SiteYear => self.year,
                    _ => self.month,
                };
                let started = Instant::now();
                let rows = match b {
                    Baseline::SiteYear => {
                        site_lines(&mut self.spazi, std::slice::from_ref(&self.site), from, to)?
                            .len()
                    }
                    _ => region_lines(&mut self.spazi, None, from, to)?.len(),
                };
                Ok((started.elapsed().as_secs_f64() * 1e3, rows))
            }
        }
    }

    /// An unrecorded `GET /healthz` before a block of HTTP requests, so the block's first
    /// request does not pay for a new connection.
    fn touch(&self, probe: &Probe) -> anyhow::Result<()> {
        if let Probe::Http { .. } = probe {
            let url = format!("{}/healthz", self.base);
            self.rt.block_on(async {
                self.client.get(&url).send().await?.bytes().await?;
                anyhow::Ok(())
            })?;
        }
        Ok(())
    }

    fn json(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        self.rt.block_on(async {
            let res = self
                .client
                .get(&url)
                .bearer_auth(&self.token)
                .send()
                .await?;
            let status = res.status();
            let body: Value = res.json().await?;
            if !status.is_success() {
                bail!("{path} answered {status}: {body}");
            }
            Ok(body)
        })
    }
}

fn scenarios(site: &str) -> Vec<Scenario> {
    let month = "from=2026-10-01&to=2026-11-01";
    let year = "from=2026-01-01&to=2027-01-01";
    let http = |name, path: String, baseline| Scenario {
        name,
        probe: Probe::Http { path, baseline },
    };
    vec![
        http(
            "a. network month, 15m",
            format!("/api/v1/energy?scope=network&{month}&interval=15m"),
            Baseline::NetworkMonth,
        ),
        http(
            "b. network month, 1d",
            format!("/api/v1/energy?scope=network&{month}&interval=1d"),
            Baseline::NetworkMonth,
        ),
        http(
            "b. network month, 1mo",
            format!("/api/v1/energy?scope=network&{month}&interval=1mo"),
            Baseline::NetworkMonth,
        ),
        http(
            "b. network month KPIs",
            format!("/api/v1/energy/kpis?scope=network&{month}"),
            Baseline::NetworkMonth,
        ),
        http(
            "c. site year, 1h",
            format!("/api/v1/energy?scope=site:{site}&{year}&interval=1h"),
            Baseline::SiteYear,
        ),
        http(
            "c. site year KPIs by month",
            format!("/api/v1/energy/kpis?scope=site:{site}&{year}&period=month"),
            Baseline::SiteYear,
        ),
        Scenario {
            name: "d. SQL: energy_15m month, all sites",
            probe: Probe::Sql(Baseline::NetworkMonth),
        },
        Scenario {
            name: "d. SQL: energy_15m year, one site",
            probe: Probe::Sql(Baseline::SiteYear),
        },
        Scenario {
            name: "d. SQL: energy_region_15m month",
            probe: Probe::Sql(Baseline::RegionMonth),
        },
        Scenario {
            name: "e. service's read: region_lines month",
            probe: Probe::Read(Baseline::NetworkMonth),
        },
        Scenario {
            name: "e. service's read: site_lines year",
            probe: Probe::Read(Baseline::SiteYear),
        },
    ]
}

/// Checks the reports' shape once before timing them.
fn check_reports(target: &Target, scenarios: &[Scenario]) -> anyhow::Result<()> {
    let expected = [
        ("a. network month, 15m", "intervals", 2_980),
        ("b. network month, 1d", "intervals", 31),
        ("b. network month, 1mo", "intervals", 1),
        ("b. network month KPIs", "periods", 1),
        ("c. site year, 1h", "intervals", 8_760),
        ("c. site year KPIs by month", "periods", 12),
    ];
    for (name, key, count) in expected {
        let Some(Probe::Http { path, .. }) =
            scenarios.iter().find(|s| s.name == name).map(|s| &s.probe)
        else {
            bail!("no scenario {name}");
        };
        let body = target.json(path)?;
        let got = body[key].as_array().map_or(0, Vec::len);
        if got != count {
            bail!("{name}: {got} {key}, expected {count}");
        }
        let quality = if key == "intervals" {
            &body["totals"]["quality"]
        } else {
            &body["total"]["quality"]
        };
        if quality != "estimated" && quality != "measured" {
            bail!(
                "{name}: the total's quality is {quality}: {}",
                body["totals"]
            );
        }
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|r| r.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

fn postgres_version() -> String {
    #[derive(QueryableByName)]
    struct V {
        #[diesel(sql_type = Text)]
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

/// One scenario's samples: per round, the milliseconds; and the size of its answer.
struct Samples {
    rounds: Vec<Vec<f64>>,
    size: usize,
}

impl Samples {
    fn all(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self.rounds.iter().flatten().copied().collect();
        v.sort_by(f64::total_cmp);
        v
    }
}

fn print_report(
    settings: &Settings,
    loaded: &Loaded,
    cost: &YieldCost,
    scenarios: &[Scenario],
    samples: &[Samples],
) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "\n## Energy reports, one request at a time, {} rounds of {} per scenario (after {} \
         unrecorded)\n",
        settings.rounds, settings.requests, settings.warmup
    );
    println!(
        "Ledger: {} lines (October 2026 for every site, 2026 for {}), {} regions summed; \
         machine: {cpus} CPUs ({}), PostgreSQL {}\n",
        loaded.rows,
        loaded.year_site,
        loaded.regions,
        cpu_model(),
        postgres_version()
    );
    let baseline_median = |b: Baseline| {
        scenarios
            .iter()
            .zip(samples)
            .find(|(s, _)| matches!(s.probe, Probe::Sql(x) if x == b))
            .map_or(f64::NAN, |(_, r)| median(&r.all()))
    };
    println!(
        "| scenario | median ms | p95 ms | min ms | max ms | answer | ratio to baseline median |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (s, r) in scenarios.iter().zip(samples) {
        let all = r.all();
        let med = median(&all);
        let (answer, ratio) = match &s.probe {
            Probe::Http { baseline, .. } => (
                format!("{:.0} kB", r.size as f64 / 1e3),
                format!("{:.2}", med / baseline_median(*baseline)),
            ),
            Probe::Sql(_) => (format!("{} rows", r.size), "1.00".into()),
            Probe::Read(_) => (format!("{} rows", r.size), String::new()),
        };
        println!(
            "| {} | {med:.1} | {:.1} | {:.1} | {:.1} | {answer} | {ratio} |",
            s.name,
            percentile(&all, 0.95),
            all.first().copied().unwrap_or(f64::NAN),
            all.last().copied().unwrap_or(f64::NAN),
        );
    }
    println!("\nMedian ms of each round:\n");
    print!("| scenario |");
    for round in 0..settings.rounds {
        print!(" {} |", round + 1);
    }
    println!();
    println!("|---|{}", "---:|".repeat(settings.rounds));
    for (s, r) in scenarios.iter().zip(samples) {
        print!("| {} |", s.name);
        for round in &r.rounds {
            print!(" {:.1} |", median(round));
        }
        println!();
    }
    println!(
        "\nExpected PV yield as the KPIs compute it (twice: periods and total), in this process: \
         network month, {} plant groups: {:.1} ms; the site's year, one plant: {:.1} ms",
        cost.network_groups, cost.network_ms, cost.site_ms
    );
    let network = scenarios
        .iter()
        .zip(samples)
        .find(|(s, _)| s.name.starts_with("a."))
        .map_or(f64::NAN, |(_, r)| median(&r.all()));
    println!(
        "\nTarget: network month in quarters under 200 ms median: {network:.1} ms, {}",
        if network < 200.0 { "met" } else { "NOT met" }
    );
}

fn main() -> anyhow::Result<()> {
    let settings = Settings {
        rounds: env_positive("SPAZI_BENCH_ROUNDS", 3)? as usize,
        requests: env_positive("SPAZI_BENCH_REQUESTS", 20)? as usize,
        warmup: env_number("SPAZI_BENCH_WARMUP", 3)? as usize,
    };
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("mail"))?;
    let pg = PgDatabase::create("spazi_bench_energy")?;

    let db = spazi::startup::prepare_database(&pg.url())?;
    let directory = db
        .run_blocking(Directory::load)
        .map_err(|e| anyhow::anyhow!("loading the directory: {e}"))?;
    create_account(
        &db,
        &NewAccount {
            email: ADMIN,
            name: "Energy Bench",
            role: Role::NetworkAdmin,
            sites: &[],
            organization: None,
            password: PASSWORD,
        },
    )?;
    eprintln!(
        "migrated and seeded {} sites in {:.1} s",
        directory.sites.len(),
        started.elapsed().as_secs_f64()
    );
    let loaded = load_ledger(&db, &directory, &pg.url())?;
    drop(db);
    eprintln!(
        "ledger: {} lines in {:.1} s ({:.0} lines/s), {} region sums in {:.1} s, \
         VACUUM ANALYZE in {:.1} s",
        loaded.rows,
        loaded.lines_secs,
        loaded.rows as f64 / loaded.lines_secs,
        loaded.regions,
        loaded.regions_secs,
        loaded.vacuum_secs
    );

    let cost = yield_cost(&directory, &loaded.year_site)?;
    let (service, base) = start_service(&pg.url(), dir.path())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = reqwest::Client::builder()
        .no_proxy()
        // Below the server's keep-alive (5 s), so an idle connection is never reused as the
        // server closes it; `touch` opens the next one before a block of requests is timed.
        .pool_idle_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(60))
        .build()?;
    let token = rt.block_on(async {
        let res = client
            .post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"email": ADMIN, "password": PASSWORD}))
            .send()
            .await?;
        let status = res.status();
        let body: Value = res.json().await?;
        match body["access_token"].as_str() {
            Some(t) if status.is_success() => anyhow::Ok(t.to_owned()),
            _ => bail!("login answered {status}: {body}"),
        }
    })?;
    let mut target = Target {
        rt: &rt,
        client,
        base,
        token,
        pg: PgConnection::establish(&pg.url())?,
        spazi: DbConnection::Postgresql(PgConnection::establish(&pg.url())?),
        month: span(day(2026, 10, 1)?, day(2026, 11, 1)?),
        year: span(day(2026, 1, 1)?, day(2027, 1, 1)?),
        site: loaded.year_site.clone(),
    };
    let scenarios = scenarios(&loaded.year_site);
    check_reports(&target, &scenarios)?;

    let mut samples: Vec<Samples> = scenarios
        .iter()
        .map(|_| Samples {
            rounds: Vec::new(),
            size: 0,
        })
        .collect();
    for (s, out) in scenarios.iter().zip(samples.iter_mut()) {
        target.touch(&s.probe)?;
        for _ in 0..settings.warmup {
            out.size = target.time(&s.probe)?.1;
        }
    }
    for round in 0..settings.rounds {
        for (s, out) in scenarios.iter().zip(samples.iter_mut()) {
            let mut times = Vec::with_capacity(settings.requests);
            target.touch(&s.probe)?;
            for _ in 0..settings.requests {
                let (ms, size) = target.time(&s.probe)?;
                out.size = size;
                times.push(ms);
            }
            eprintln!(
                "round {}: {}: median {:.1} ms",
                round + 1,
                s.name,
                median(&times)
            );
            out.rounds.push(times);
        }
    }
    drop(target);
    drop(service);
    print_report(&settings, &loaded, &cost, &scenarios, &samples);
    println!(
        "\nLedger load: {} lines in {:.1} s, region sums {:.1} s, VACUUM ANALYZE {:.1} s. \
         Whole bench: {:.0} s (`cargo bench --bench energy`).",
        loaded.rows,
        loaded.lines_secs,
        loaded.regions_secs,
        loaded.vacuum_secs,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
