//! The energy ledger, its reports and KPIs, company statements and EV sessions, on both
//! databases: counters are written as the ingest pipeline stores them, rolled up by the real
//! roll-up pass, and read back over HTTP.

use std::collections::BTreeMap;

use chrono::{NaiveDate, TimeZone, Timelike};
use chrono_tz::Europe::Rome;
use serde_json::{json, Value};
use spazi::db::telemetry::ReadingRow;
use spazi::domain::opening_hours::local_day_start;
use spazi::domain::quarters::{quarter_start, QUARTER_MS};
use spazi::domain::telemetry::Metric;
use spazi::domain::{DeviceClass, Role};

use crate::helpers::{assert_field_error, spawn_with, Backend, TestApp};
use crate::on_both;

const STEP_MS: i64 = 5 * 60_000;

/// A meter's message: every counter it reports, with its epoch.
struct Message {
    ts: i64,
    seq: i64,
    counters: Vec<(Metric, f64)>,
    epoch: i64,
}

/// The ledger's counters of one site: PV production, grid import and export, one charger.
struct SiteMeters {
    pv: i32,
    grid: i32,
    charger: i32,
    bay: String,
}

fn meters(app: &TestApp, site: &str) -> SiteMeters {
    let devices = app.state.fleet.site(site);
    let find = |class: DeviceClass| {
        devices
            .iter()
            .find(|d| d.class == class && (class == DeviceClass::EvCharger || d.zone_id.is_none()))
            .unwrap_or_else(|| panic!("a {class:?} at {site}"))
            .clone()
    };
    let charger = find(DeviceClass::EvCharger);
    SiteMeters {
        pv: find(DeviceClass::PvMeter).num,
        grid: find(DeviceClass::GridMeter).num,
        charger: charger.num,
        bay: charger.resource_id.clone().expect("a charger serves a bay"),
    }
}

fn rows_of(device: i32, messages: &[Message]) -> Vec<ReadingRow> {
    let mut rows = Vec::new();
    for m in messages {
        let row = |metric: Metric, value: f64| ReadingRow {
            minute: ReadingRow::minute_of(m.ts),
            device,
            metric: metric.code(),
            seq: m.seq,
            ts: m.ts,
            value,
        };
        for &(metric, value) in &m.counters {
            rows.push(row(metric, value));
        }
        rows.push(row(Metric::MeterEpoch, m.epoch as f64));
    }
    rows
}

/// Cumulative counters from increments; a reset at `reset` starts a new epoch from zero.
fn counters(
    from: i64,
    to: i64,
    metrics: &[Metric],
    start: f64,
    reset: Option<i64>,
    inc: impl Fn(i64, usize) -> f64,
) -> Vec<Message> {
    let mut values = vec![start; metrics.len()];
    let mut epoch = 0;
    let mut out = Vec::new();
    let mut ts = from;
    let mut seq = 0;
    while ts < to {
        if reset == Some(ts) {
            epoch += 1;
            values.iter_mut().for_each(|v| *v = 0.0);
        }
        for (k, v) in values.iter_mut().enumerate() {
            if seq > 0 {
                *v += inc(ts, k);
            }
        }
        out.push(Message {
            ts,
            seq,
            counters: metrics
                .iter()
                .copied()
                .zip(values.iter().copied())
                .collect(),
            epoch,
        });
        ts += STEP_MS;
        seq += 1;
    }
    out
}

/// What each quarter's counter difference is: the last reading in it minus the last before it
/// (from zero after a reset); the first reading counts nothing.
fn differences(messages: &[Message], k: usize) -> BTreeMap<i64, f64> {
    let mut out: BTreeMap<i64, f64> = BTreeMap::new();
    let mut last: Option<(f64, i64)> = None;
    for m in messages {
        let v = m.counters[k].1;
        let d = match last {
            Some((p, e)) if e == m.epoch => v - p,
            Some(_) => v,
            None => 0.0,
        };
        *out.entry(quarter_start(m.ts, Rome)).or_default() += d;
        last = Some((v, m.epoch));
    }
    out
}

async fn store(app: &TestApp, rows: Vec<ReadingRow>) {
    app.state
        .db
        .run(move |c| {
            for chunk in rows.chunks(5_000) {
                spazi::db::telemetry::insert_batch(c, chunk, &[])?;
            }
            Ok::<_, spazi::db::DbError>(())
        })
        .await
        .expect("readings stored");
}

/// Marks every quarter of `[from, to)` for the devices and runs the roll-up pass (which
/// recomputes the ledger).
async fn roll_up(app: &TestApp, devices: &[i32], from: i64, to: i64) {
    let mut q = from;
    while q < to {
        app.state.fleet.mark(q, devices.iter().copied());
        q += QUARTER_MS;
    }
    spazi::jobs::rollup::pass(&app.state.db, &app.state.fleet)
        .await
        .expect("roll-up pass");
}

fn local_ms(y: i32, m: u32, d: u32, h: u32, min: u32) -> i64 {
    Rome.with_ymd_and_hms(y, m, d, h, min, 0)
        .earliest()
        .expect("local time")
        .timestamp_millis()
}

fn day_ms(y: i32, m: u32, d: u32) -> i64 {
    local_day_start(NaiveDate::from_ymd_opt(y, m, d).expect("date"), Rome).timestamp_millis()
}

async fn quiet_app(backend: Backend) -> TestApp {
    spawn_with(backend, |mut c| {
        // The test drives the roll-up itself; its readings and bookings in the past stay as
        // stored.
        c.telemetry.rollup_secs = 3_600;
        c.telemetry.release_secs = 3_600;
        c.telemetry.raw_retention_days = 36_500;
        c
    })
    .await
}

/// A month of one site: PV, grid (reset on the 20th) and a charger every 5 minutes, the PV
/// meter silent for three hours on the 10th; its readings of those hours arrive late.
struct Month {
    pv: Vec<Message>,
    grid: Vec<Message>,
    ev: Vec<Message>,
    gap: (i64, i64),
    reset: i64,
}

fn month(from: i64, to: i64) -> Month {
    let hour = |ts: i64| {
        Rome.timestamp_millis_opt(ts)
            .single()
            .expect("instant")
            .hour()
    };
    let reset = local_ms(2026, 10, 20, 6, 0);
    let pv = counters(from, to, &[Metric::EExpWh], 5_000_000.0, None, |ts, _| {
        let h = hour(ts);
        if (8..17).contains(&h) {
            150.0 + f64::from((ts / STEP_MS % 7) as u32) * 10.0
        } else {
            0.0
        }
    });
    let grid = counters(
        from,
        to,
        &[Metric::EImpWh, Metric::EExpWh],
        12_000_000.0,
        Some(reset),
        |ts, k| {
            let h = hour(ts);
            match k {
                0 => 100.0 + f64::from((ts / STEP_MS % 5) as u32) * 3.0,
                _ if (11..15).contains(&h) && ts / STEP_MS % 3 == 0 => 40.0,
                _ => 0.0,
            }
        },
    );
    let ev = counters(from, to, &[Metric::EImpWh], 800_000.0, None, |ts, _| {
        if (9..12).contains(&hour(ts)) {
            300.0
        } else {
            0.0
        }
    });
    Month {
        pv,
        grid,
        ev,
        gap: (local_ms(2026, 10, 10, 10, 0), local_ms(2026, 10, 10, 13, 0)),
        reset,
    }
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("a number: {v}"))
}

async fn ledger_follows_the_counters(backend: Backend) {
    let app = quiet_app(backend).await;
    let site = "bologna";
    let m = meters(&app, site);
    let (from, to) = (day_ms(2026, 10, 1), day_ms(2026, 11, 1));
    let data = month(from, to);
    let (gap_from, gap_to) = data.gap;
    let in_gap = |msg: &&Message| msg.ts >= gap_from && msg.ts < gap_to;
    let on_time: Vec<&Message> = data.pv.iter().filter(|x| !in_gap(x)).collect();
    let late: Vec<&Message> = data.pv.iter().filter(in_gap).collect();
    let copy = |v: &[&Message]| -> Vec<Message> {
        v.iter()
            .map(|x| Message {
                ts: x.ts,
                seq: x.seq,
                counters: x.counters.clone(),
                epoch: x.epoch,
            })
            .collect()
    };
    let mut rows = rows_of(m.pv, &copy(&on_time));
    rows.extend(rows_of(m.grid, &data.grid));
    rows.extend(rows_of(m.charger, &data.ev));
    store(&app, rows).await;
    let devices = [m.pv, m.grid, m.charger];
    roll_up(&app, &devices, from, to).await;

    let admin = app.user(Role::NetworkAdmin, None, &[]).await;
    let (status, report) = app
        .get_json(
            &format!("/api/v1/energy?scope=site:{site}&from=2026-10-01&to=2026-11-01&interval=15m"),
            Some(&admin.token),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    let lines = report["intervals"].as_array().expect("intervals");
    // 31 days, one of them 25 hours long.
    assert_eq!(lines.len(), 31 * 96 + 4);
    let starts: Vec<i64> = (0..lines.len() as i64)
        .map(|i| from + i * QUARTER_MS)
        .collect();

    let pv = differences(&data.pv, 0);
    let import = differences(&data.grid, 0);
    let export = differences(&data.grid, 1);
    let ev = differences(&data.ev, 0);
    let gap_quarters: Vec<i64> = (gap_from..=gap_to).step_by(QUARTER_MS as usize).collect();
    let reset_quarter = quarter_start(data.reset, Rome);
    let (mut pv_total, mut gap_sum) = (0.0, 0.0);
    for (line, q) in lines.iter().zip(&starts) {
        for key in ["pv_wh", "import_wh", "export_wh", "ev_wh", "load_wh"] {
            assert!(num(&line[key]) >= 0.0, "no negative energy: {line}");
        }
        pv_total += num(&line["pv_wh"]);
        let quality = line["quality"].as_str().expect("quality");
        if gap_quarters.contains(q) {
            assert_eq!(quality, "estimated", "the gap is flagged: {line}");
            gap_sum += num(&line["pv_wh"]);
            assert!(
                num(&line["pv_wh"]) <= 250.0 * 3.0,
                "the gap is spread, not a spike: {line}"
            );
            continue;
        }
        if *q == reset_quarter {
            assert_eq!(quality, "estimated", "the reset is flagged: {line}");
        } else {
            assert_eq!(quality, "measured", "{line}");
        }
        assert_eq!(num(&line["pv_wh"]), pv[q], "PV at {}", line["start"]);
        assert_eq!(
            num(&line["import_wh"]),
            import[q],
            "import at {}",
            line["start"]
        );
        assert_eq!(
            num(&line["export_wh"]),
            export[q],
            "export at {}",
            line["start"]
        );
        assert_eq!(num(&line["ev_wh"]), ev[q], "EV at {}", line["start"]);
        assert_eq!(
            num(&line["load_wh"]),
            import[q] + pv[q] - export[q],
            "consumption at {}",
            line["start"]
        );
    }
    let gap_expected: f64 = gap_quarters.iter().map(|q| pv[q]).sum();
    assert!(
        (gap_sum - gap_expected).abs() < 0.01,
        "{gap_sum} vs {gap_expected}"
    );
    let month_pv: f64 = pv.values().sum();
    let last = data.pv.last().expect("readings").counters[0].1;
    assert_eq!(
        month_pv,
        last - data.pv[0].counters[0].1,
        "counter difference"
    );
    assert!(
        (pv_total - month_pv).abs() < 0.01,
        "{pv_total} vs {month_pv}"
    );
    assert!((num(&report["totals"]["pv_wh"]) - month_pv).abs() < 0.01);
    assert_eq!(report["totals"]["quality"], "estimated");

    // The same month by day, and as CSV.
    let (status, days) = app
        .get_json(
            &format!("/api/v1/energy?scope=site:{site}&from=2026-10-01&to=2026-11-01&interval=1d"),
            Some(&admin.token),
        )
        .await;
    assert_eq!(status, 200);
    let days = days["intervals"].as_array().expect("days").clone();
    assert_eq!(days.len(), 31);
    assert_eq!(days[24]["start"], "2026-10-25T00:00:00+02:00");
    assert_eq!(days[24]["end"], "2026-10-26T00:00:00+01:00");
    assert_eq!(days[9]["quality"], "estimated");
    assert_eq!(days[0]["quality"], "measured");
    let csv = app
        .client
        .get(app.url(&format!(
            "/api/v1/energy?scope=site:{site}&from=2026-10-25&to=2026-10-26"
        )))
        .bearer_auth(&admin.token)
        .header("Accept", "text/csv")
        .send()
        .await
        .expect("csv");
    assert_eq!(csv.status(), 200);
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .starts_with("text/csv"));
    let text = csv.text().await.expect("body");
    let mut csv_lines = text.lines();
    assert_eq!(
        csv_lines.next(),
        Some("start,end,pv_wh,import_wh,export_wh,ev_wh,load_wh,quality")
    );
    assert_eq!(csv_lines.count(), 100, "the autumn change has 100 quarters");

    // The PV meter's readings of the gap arrive late: those quarters become measured.
    store(&app, rows_of(m.pv, &copy(&late))).await;
    roll_up(&app, &[m.pv], gap_from, gap_to).await;
    let (_, after) = app
        .get_json(
            &format!("/api/v1/energy?scope=site:{site}&from=2026-10-10&to=2026-10-11"),
            Some(&admin.token),
        )
        .await;
    for line in after["intervals"].as_array().expect("intervals") {
        assert_eq!(line["quality"], "measured", "{line}");
    }
    let quarter_of = |line: &Value| {
        let start = chrono::DateTime::parse_from_rfc3339(line["start"].as_str().expect("start"))
            .expect("rfc 3339");
        start.timestamp_millis()
    };
    for line in after["intervals"].as_array().expect("intervals") {
        assert_eq!(num(&line["pv_wh"]), pv[&quarter_of(line)], "{line}");
    }

    // The region and the network see the site's energy.
    let region = app
        .state
        .directory()
        .get(site)
        .expect("site")
        .site
        .region
        .clone();
    let (status, by_region) = app
        .get_json(
            &format!(
                "/api/v1/energy?scope=region:{}&from=2026-10-01&to=2026-11-01&interval=1mo",
                region.replace(' ', "%20")
            ),
            Some(&admin.token),
        )
        .await;
    assert_eq!(status, 200, "{by_region}");
    assert_eq!(by_region["intervals"].as_array().map(Vec::len), Some(1));
    assert!((num(&by_region["intervals"][0]["pv_wh"]) - month_pv).abs() < 0.01);
    let (_, network) = app
        .get_json(
            "/api/v1/energy?scope=network&from=2026-10-01&to=2026-11-01&interval=1mo",
            Some(&admin.token),
        )
        .await;
    assert!((num(&network["intervals"][0]["pv_wh"]) - month_pv).abs() < 0.01);
    assert_eq!(
        network["intervals"][0]["quality"], "estimated",
        "the other sites reported nothing"
    );
}

on_both!(ledger_month, |b| ledger_follows_the_counters(b));

async fn dst_days_have_100_and_92_quarters(backend: Backend) {
    let app = quiet_app(backend).await;
    let admin = app.user(Role::NetworkAdmin, None, &[]).await;
    for (from, to, n) in [
        ("2026-10-25", "2026-10-26", 100),
        ("2026-03-29", "2026-03-30", 92),
        ("2026-06-01", "2026-06-02", 96),
    ] {
        let (status, body) = app
            .get_json(
                &format!("/api/v1/energy?scope=site:bologna&from={from}&to={to}&interval=15m"),
                Some(&admin.token),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let lines = body["intervals"].as_array().expect("intervals");
        assert_eq!(lines.len(), n, "{from}");
        assert!(lines.iter().all(|l| l["quality"] == "missing"));
        let (_, hours) = app
            .get_json(
                &format!("/api/v1/energy?scope=site:bologna&from={from}&to={to}&interval=1h"),
                Some(&admin.token),
            )
            .await;
        assert_eq!(hours["intervals"].as_array().map(Vec::len), Some(n / 4));
    }
}

on_both!(dst_days, |b| dst_days_have_100_and_92_quarters(b));

async fn energy_routes_check_scope_and_input(backend: Backend) {
    let app = quiet_app(backend).await;
    let manager = app.user(Role::SiteManager, None, &["bologna"]).await;
    let member = app.user(Role::Member, None, &[]).await;
    let elsewhere = app
        .state
        .directory()
        .sites
        .iter()
        .find(|s| s.site.id != "bologna")
        .expect("another site")
        .site
        .id
        .clone();
    let ok = "from=2026-10-01&to=2026-10-02";
    let get = |path: String, token: String| {
        let app = &app;
        async move { app.get_json(&path, Some(&token)).await }
    };
    let (s, _) = get(
        format!("/api/v1/energy?scope=site:bologna&{ok}"),
        manager.token.clone(),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = get(
        format!("/api/v1/energy?scope=site:{elsewhere}&{ok}"),
        manager.token.clone(),
    )
    .await;
    assert_eq!(s, 403, "another site");
    let (s, _) = get(
        format!("/api/v1/energy?scope=network&{ok}"),
        manager.token.clone(),
    )
    .await;
    assert_eq!(s, 403);
    let (s, _) = get(
        format!("/api/v1/energy?scope=site:bologna&{ok}"),
        member.token.clone(),
    )
    .await;
    assert_eq!(s, 403);
    let (s, _) = get(
        format!("/api/v1/energy?scope=site:nowhere&{ok}"),
        manager.token.clone(),
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = app
        .get_json(&format!("/api/v1/energy?scope=site:bologna&{ok}"), None)
        .await;
    assert_eq!(s, 401);
    for (query, field) in [
        (format!("scope=site:bologna&{ok}&interval=2h"), "interval"),
        (format!("scope=bologna&{ok}"), "scope"),
        (
            "scope=site:bologna&from=2026-10-02&to=2026-10-01".into(),
            "to",
        ),
        (
            "scope=site:bologna&from=yesterday&to=2026-10-01".into(),
            "from",
        ),
        (
            "scope=site:bologna&from=2026-10-01T10:07:00Z&to=2026-10-02".into(),
            "from",
        ),
        ("scope=site:bologna&from=2026-10-01".into(), "to"),
        (
            "scope=site:bologna&from=2024-01-01&to=2026-01-01&interval=15m".into(),
            "to",
        ),
    ] {
        let (s, body) = get(format!("/api/v1/energy?{query}"), manager.token.clone()).await;
        assert_field_error(s, &body, 422, field);
    }
    let (s, body) = get(
        format!("/api/v1/energy/kpis?scope=site:bologna&{ok}&period=week"),
        manager.token.clone(),
    )
    .await;
    assert_field_error(s, &body, 422, "period");
}

on_both!(energy_input, |b| energy_routes_check_scope_and_input(b));

/// One day of the site's meters: PV, grid and the charger, every 5 minutes, at constant rates.
async fn feed_day(
    app: &TestApp,
    m: &SiteMeters,
    day: (i32, u32, u32),
    rates: [f64; 4],
) -> (i64, i64) {
    let (from, to) = (
        day_ms(day.0, day.1, day.2),
        day_ms(day.0, day.1, day.2) + 86_400_000,
    );
    // One reading just before the day, so the day's first quarter has a mark to count from.
    let start = from - STEP_MS;
    let pv = counters(start, to, &[Metric::EExpWh], 1_000.0, None, |_, _| rates[0]);
    let grid = counters(
        start,
        to,
        &[Metric::EImpWh, Metric::EExpWh],
        1_000.0,
        None,
        |_, k| if k == 0 { rates[1] } else { rates[2] },
    );
    let ev = counters(start, to, &[Metric::EImpWh], 1_000.0, None, |_, _| rates[3]);
    let mut rows = rows_of(m.pv, &pv);
    rows.extend(rows_of(m.grid, &grid));
    rows.extend(rows_of(m.charger, &ev));
    store(app, rows).await;
    roll_up(app, &[m.pv, m.grid, m.charger], from - QUARTER_MS, to).await;
    (from, to)
}

async fn kpis_state_the_factor_they_used(backend: Backend) {
    let app = quiet_app(backend).await;
    let admin = app.user(Role::NetworkAdmin, None, &[]).await;
    let m = meters(&app, "bologna");
    // Per 5 minutes: 100 Wh PV, 50 Wh import, 20 Wh export, 30 Wh to the car.
    feed_day(&app, &m, (2026, 9, 14), [100.0, 50.0, 20.0, 30.0]).await;

    let (s, body) = app
        .post_json(
            "/api/v1/energy/emission-factors",
            Some(&admin.token),
            &json!({"value": 250.0, "source": "operator's test value", "valid_from": "2026-01-01"}),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(body["version"], 1);
    assert_eq!(body["unit"], "g_co2_per_kwh");
    let manager = app.user(Role::SiteManager, None, &["bologna"]).await;
    let (s, _) = app
        .post_json(
            "/api/v1/energy/emission-factors",
            Some(&manager.token),
            &json!({"value": 1.0, "source": "x", "valid_from": "2026-01-01"}),
        )
        .await;
    assert_eq!(s, 403);
    for (body, field) in [
        (
            json!({"value": -1.0, "source": "x", "valid_from": "2026-01-01"}),
            "value",
        ),
        (
            json!({"value": 1.0, "source": "", "valid_from": "2026-01-01"}),
            "source",
        ),
        (
            json!({"value": 1.0, "source": "x", "valid_from": "soon"}),
            "valid_from",
        ),
        (
            json!({"value": 1.0, "unit": "kg", "source": "x", "valid_from": "2026-01-01"}),
            "unit",
        ),
    ] {
        let (s, out) = app
            .post_json("/api/v1/energy/emission-factors", Some(&admin.token), &body)
            .await;
        assert_field_error(s, &out, 422, field);
    }

    let (s, k) = app
        .get_json(
            "/api/v1/energy/kpis?scope=site:bologna&from=2026-09-14&to=2026-09-15",
            Some(&manager.token),
        )
        .await;
    assert_eq!(s, 200, "{k}");
    let t = &k["total"];
    // 288 steps in the day; the first reading of the day counts nothing.
    let steps = 288.0;
    assert_eq!(num(&t["pv_kwh"]), 100.0 * steps / 1000.0);
    assert_eq!(num(&t["import_kwh"]), 50.0 * steps / 1000.0);
    assert_eq!(num(&t["export_kwh"]), 20.0 * steps / 1000.0);
    assert_eq!(num(&t["ev_kwh"]), 30.0 * steps / 1000.0);
    assert_eq!(num(&t["consumption_kwh"]), 130.0 * steps / 1000.0);
    assert_eq!(num(&t["self_consumption"]), 0.8);
    assert_eq!(num(&t["self_sufficiency"]), 0.6154);
    assert_eq!(num(&t["ev_solar_share"]), 0.6154);
    assert_eq!(num(&t["peak_power_kw"]), 1.56, "130 Wh per 5 minutes");
    assert_eq!(num(&t["co2_emitted_kg"]), 50.0 * steps / 1000.0 * 0.25);
    assert_eq!(num(&t["co2_avoided_kg"]), 100.0 * steps / 1000.0 * 0.25);
    assert_eq!(t["emission_factor_versions"], json!([1]));
    assert_eq!(k["emission_factors"][0]["source"], "operator's test value");
    assert!(num(&t["pv_expected_kwh"]) > 0.0);
    assert!(num(&t["pv_performance_ratio"]) > 0.0);
    assert!(num(&t["kwh_per_m2"]) > 0.0);
    assert_eq!(t["quality"], "measured");

    // A new version takes over from its date; a period before any factor has no CO₂.
    let (s, _) = app
        .post_json(
            "/api/v1/energy/emission-factors",
            Some(&admin.token),
            &json!({"value": 200.0, "source": "newer", "valid_from": "2026-09-14T12:00:00+02:00"}),
        )
        .await;
    assert_eq!(s, 201);
    let (_, k) = app
        .get_json(
            "/api/v1/energy/kpis?scope=site:bologna&from=2026-09-14&to=2026-09-15&period=day",
            Some(&manager.token),
        )
        .await;
    assert_eq!(k["total"]["emission_factor_versions"], json!([1, 2]));
    assert_eq!(k["emission_factors"].as_array().map(Vec::len), Some(2));
    assert_eq!(k["periods"].as_array().map(Vec::len), Some(1));
    let (s, list) = app
        .get_json("/api/v1/energy/emission-factors", Some(&manager.token))
        .await;
    assert_eq!(s, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(2));
}

on_both!(kpis, |b| kpis_state_the_factor_they_used(b));

async fn statement_adds_up_its_bookings(backend: Backend) {
    let app = quiet_app(backend).await;
    let m = meters(&app, "bologna");
    feed_day(&app, &m, (2026, 9, 14), [60.0, 80.0, 10.0, 40.0]).await;
    let org = app.create_org("Studio Energia", 100);
    let other = app.create_org("Altra Srl", 100);
    let admin = app.user(Role::CompanyAdmin, Some(&org), &[]).await;
    let member = app.user(Role::Member, Some(&org), &[]).await;
    let stranger = app.user(Role::CompanyAdmin, Some(&other), &[]).await;
    let dir = app.state.directory();
    let site = dir.get("bologna").expect("site").clone();
    let desks: Vec<_> = site
        .resources
        .iter()
        .filter(|r| r.kind == spazi::domain::ResourceKind::Desk)
        .collect();
    let zone = desks[0].zone.id.clone();
    let same_zone: Vec<String> = desks
        .iter()
        .filter(|r| r.zone.id == zone)
        .map(|r| r.resource.id.clone())
        .collect();
    assert!(same_zone.len() >= 3, "a zone with three desks");
    let at = |h: u32, min: u32| {
        chrono::DateTime::from_timestamp_millis(local_ms(2026, 9, 14, h, min)).expect("instant")
    };
    // Two of the company's desk bookings overlap one of another company; one EV booking.
    let a = app
        .store_booking(&member, Some(&org), &same_zone[0], at(9, 0), at(13, 0), 0)
        .await;
    let b = app
        .store_booking(&member, Some(&org), &same_zone[1], at(11, 0), at(17, 30), 0)
        .await;
    app.store_booking(
        &stranger,
        Some(&other),
        &same_zone[2],
        at(10, 0),
        at(12, 0),
        0,
    )
    .await;
    let ev = app
        .store_booking(&member, Some(&org), &m.bay, at(8, 0), at(10, 0), 0)
        .await;

    let path = format!("/api/v1/organizations/{org}/statements/2026-09");
    let (s, st) = app.get_json(&path, Some(&admin.token)).await;
    assert_eq!(s, 200, "{st}");
    let lines = st["bookings"].as_array().expect("bookings");
    assert_eq!(lines.len(), 3);
    let ids: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["booking_id"].as_str())
        .collect();
    for id in [&a.id, &b.id, &ev.id] {
        assert!(ids.contains(&id.as_str()));
    }
    let sum = |key: &str| -> f64 { lines.iter().map(|l| num(&l[key])).sum() };
    assert!(
        (num(&st["totals"]["kwh"]) - sum("kwh")).abs() < 1e-6,
        "{st}"
    );
    assert!((num(&st["totals"]["booked_hours"]) - sum("booked_hours")).abs() < 1e-6);
    assert_eq!(num(&st["totals"]["booked_hours"]), 12.5);
    let ev_line = lines
        .iter()
        .find(|l| l["booking_id"] == ev.id.as_str())
        .expect("EV line");
    // The car's meter: 40 Wh per 5 minutes for two hours.
    assert_eq!(num(&ev_line["kwh"]), 40.0 * 24.0 / 1000.0, "{st}");
    for l in lines {
        assert!(num(&l["kwh"]) > 0.0, "{l}");
        assert!(l["co2_kg"].is_null(), "no factor set: {l}");
        let share = num(&l["solar_share"]);
        assert!((0.0..=1.0).contains(&share));
    }
    // The zone's consumption is shared, never counted twice: the three desk bookings of both
    // companies together never take more than the zone's share of the building.
    let (s, _) = app.get_json(&path, Some(&member.token)).await;
    assert_eq!(s, 403, "members do not see the company's statement");
    let (s, _) = app.get_json(&path, Some(&stranger.token)).await;
    assert_eq!(s, 404, "another company's statement does not exist for it");
    let (s, body) = app
        .get_json(
            &format!("/api/v1/organizations/{org}/statements/2026-13"),
            Some(&admin.token),
        )
        .await;
    assert_field_error(s, &body, 422, "month");
    let (_, empty) = app
        .get_json(
            &format!("/api/v1/organizations/{org}/statements/2026-08"),
            Some(&admin.token),
        )
        .await;
    assert_eq!(empty["bookings"].as_array().map(Vec::len), Some(0));
    assert_eq!(num(&empty["totals"]["kwh"]), 0.0);

    // EV sessions: the manager sees the booked session and the charging outside it.
    let manager = app.user(Role::SiteManager, None, &["bologna"]).await;
    let (s, sessions) = app
        .get_json(
            "/api/v1/ev/sessions?site_id=bologna&from=2026-09-14&to=2026-09-15",
            Some(&manager.token),
        )
        .await;
    assert_eq!(s, 200, "{sessions}");
    let list = sessions["sessions"].as_array().expect("sessions");
    let booked = list
        .iter()
        .find(|x| x["booking_id"] == ev.id.as_str())
        .expect("the booked session");
    assert_eq!(num(&booked["energy_wh"]), 40.0 * 24.0);
    assert!(
        list.iter().any(|x| x["booking_id"].is_null()),
        "charging without a booking"
    );
    let (_, own) = app
        .get_json(
            "/api/v1/ev/sessions?site_id=bologna&from=2026-09-14&to=2026-09-15",
            Some(&stranger.token),
        )
        .await;
    assert_eq!(
        own["sessions"].as_array().map(Vec::len),
        Some(0),
        "not theirs"
    );
    let (s, body) = app
        .get_json(
            "/api/v1/ev/sessions?site_id=bologna&from=2026-09-14",
            Some(&manager.token),
        )
        .await;
    assert_field_error(s, &body, 422, "to");
}

on_both!(statement, |b| statement_adds_up_its_bookings(b));

// Smart charging: booking-time plans, and the limits sent to the chargers.

async fn an_infeasible_target_is_reported_when_booked(backend: Backend) {
    let app = quiet_app(backend).await;
    let org = app.create_org("Auto Srl", 400);
    let member = app.user(Role::Member, Some(&org), &[]).await;
    let (site, day) = app.open_day("large", 2);
    let bay = app.resource_id(&site, "ev_bay").await;
    let desk = app.resource_id(&site, "desk").await;
    let book = |resource: String, from: u32, to: u32, charging: Value| {
        let (app, member) = (&app, &member);
        let body = json!({
            "resource_id": resource,
            "starts_at": app.local(&site, day, from, 0),
            "ends_at": app.local(&site, day, to, 0),
            "charging": charging,
        });
        async move {
            app.post_json("/api/v1/bookings", Some(&member.token), &body)
                .await
        }
    };
    // 150 kWh in one hour is beyond a 22 kW charger.
    let (s, b) = book(
        bay.clone(),
        9,
        10,
        json!({"target_wh": 150000, "mode": "fast"}),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["charging"]["feasible"], false, "{b}");
    assert!(num(&b["charging"]["expected_wh"]) < 150_000.0);
    assert!(b["charging"]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("kWh")));
    // 10 kWh over two hours is.
    let (s, b) = book(bay.clone(), 11, 13, json!({"target_wh": 10000})).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["charging"]["mode"], "solar_first");
    assert_eq!(b["charging"]["feasible"], true, "{b}");
    assert_eq!(num(&b["charging"]["expected_wh"]), 10_000.0);
    assert!(b["charging"]["reason"].is_null());
    let id = b["id"].as_str().expect("id").to_string();
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) AS n FROM ev_plans WHERE booking_id = '{id}' AND feasible"
        )),
        1
    );
    // Bad wishes name their field, and nothing is stored.
    let before = app.count("SELECT COUNT(*) AS n FROM bookings");
    let (s, b) = book(desk, 14, 15, json!({"target_wh": 1000})).await;
    assert_field_error(s, &b, 422, "charging");
    let (s, b) = book(bay.clone(), 14, 15, json!({"target_wh": -5})).await;
    assert_field_error(s, &b, 422, "charging.target_wh");
    let (s, b) = book(bay.clone(), 14, 15, json!({"mode": "turbo"})).await;
    assert_eq!(s, 422, "{b}");
    let (s, b) = book(bay, 14, 15, json!({"target_wh": 1000, "speed": 3})).await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(app.count("SELECT COUNT(*) AS n FROM bookings"), before);
}

on_both!(charging_at_booking, |b| {
    an_infeasible_target_is_reported_when_booked(b)
});

async fn chargers_get_limits_within_the_contracted_power(backend: Backend) {
    use crate::building::Watcher;
    use crate::telemetry::{device, now_ms, rig, Broker};
    let rig = rig(backend, Broker::Embedded, |c| c).await;
    let app = &rig.app;
    let site = "bologna";
    // A 20 kW contract.
    let dir = app
        .state
        .db
        .run(|c| {
            use diesel::prelude::*;
            use spazi::db::schema::sites;
            diesel::update(sites::table.find("bologna"))
                .set(sites::contracted_power_w.eq(20_000))
                .execute(c)?;
            spazi::db::network::Directory::load(c)
        })
        .await
        .expect("contract");
    app.state.replace_directory(dir);
    let chargers: Vec<_> = app
        .state
        .fleet
        .site(site)
        .into_iter()
        .filter(|d| d.class == DeviceClass::EvCharger)
        .collect();
    assert!(chargers.len() >= 2, "two chargers at {site}");
    let (fast, walk_in) = (&chargers[0], &chargers[1]);
    let org = app.create_org("Flotta Srl", 100);
    let member = app.user(Role::Member, Some(&org), &[]).await;
    let now = chrono::Utc::now();
    let booking = app
        .store_booking(
            &member,
            Some(&org),
            fast.resource_id.as_deref().expect("bay"),
            now - chrono::Duration::minutes(10),
            now + chrono::Duration::hours(2),
            0,
        )
        .await;
    let plan = spazi::db::energy::EvPlanRow {
        booking_id: booking.id.clone(),
        mode: "fast".into(),
        target_wh: Some(40_000.0),
        expected_wh: 40_000.0,
        expected_solar_wh: 0.0,
        feasible: true,
        created_at: now.naive_utc(),
    };
    app.state
        .db
        .run(move |c| spazi::db::energy::insert_plan(c, &plan))
        .await
        .expect("plan");

    let mut limits = Watcher::start(rig.port, "spazi/v1/bologna/+/cmd/charge_limit").await;
    let meters = device(rig.port, "energy-meters", None);
    let mut sent = 0;
    // PV and grid power (W); both cars plugged in and not yet drawing.
    let mut publish = |pv: f64, grid: f64| {
        let ts = now_ms();
        let mut out = vec![
            (
                format!("spazi/v1/{site}/{site}-pv/tele/power"),
                format!(r#"{{"v":1,"ts":{ts},"seq":{ts},"m":{{"p_w":{pv}}}}}"#),
            ),
            (
                format!("spazi/v1/{site}/{site}-grid/tele/power"),
                format!(r#"{{"v":1,"ts":{ts},"seq":{ts},"m":{{"p_w":{grid}}}}}"#),
            ),
        ];
        for c in [fast, walk_in] {
            out.push((
                format!("spazi/v1/{site}/{}/tele/charger", c.id),
                format!(
                    r#"{{"v":1,"ts":{ts},"seq":{ts},"m":{{"state":"connected","p_w":0,"e_session_wh":0}}}}"#
                ),
            ));
        }
        sent += out.len();
        (out, sent)
    };
    let limit_of = |got: &[(String, Value)], id: &str| -> Option<f64> {
        got.iter()
            .rev()
            .find(|(t, _)| t.contains(&format!("/{id}/")))
            .map(|(_, b)| b["m"]["limit_a"].as_f64().expect("limit_a"))
    };
    let check = |got: &[(String, Value)], headroom_w: f64| {
        let mut total = 0.0;
        for c in [fast, walk_in] {
            let a = limit_of(got, &c.id).expect("a limit for each charger");
            assert!(a == 0.0 || (6.0..=32.0).contains(&a), "{a} A");
            total += a * 690.0;
        }
        assert!(total <= headroom_w + 1e-6, "{total} W over {headroom_w} W");
        for (_, body) in got {
            assert!(body["exp"].as_i64() > body["ts"].as_i64(), "{body}");
            assert!(body["nonce"].as_str().is_some_and(|n| !n.is_empty()));
        }
    };

    // Morning: 9 kW of PV, 3 kW imported: the building uses 12 kW, no surplus.
    let (msgs, total) = publish(9_000.0, 3_000.0);
    meters.send_all(&msgs, total).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    limits.collect(std::time::Duration::from_millis(1200)).await;
    let got = limits.collect(std::time::Duration::from_millis(2500)).await;
    // Headroom: 20 kW + 9 kW − 12 kW.
    check(&got, 17_000.0);
    assert!(limit_of(&got, &fast.id).expect("fast") >= 24.0, "{got:?}");
    assert_eq!(
        limit_of(&got, &walk_in.id),
        Some(0.0),
        "no surplus for a car without booking"
    );

    // Noon: 20 kW of PV, 8 kW exported: 8 kW of surplus.
    let (msgs, total) = publish(20_000.0, -8_000.0);
    meters.send_all(&msgs, total).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    limits.collect(std::time::Duration::from_millis(1200)).await;
    let got = limits.collect(std::time::Duration::from_millis(2500)).await;
    check(&got, 28_000.0);
    assert_eq!(limit_of(&got, &fast.id), Some(32.0), "{got:?}");
    assert!(
        limit_of(&got, &walk_in.id).expect("walk-in") >= 6.0,
        "the surplus: {got:?}"
    );
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("spazi_charge_limit_commands_total"));
}

on_both!(smart_charging, |b| {
    chargers_get_limits_within_the_contracted_power(b)
});

async fn a_zone_sub_meter_measures_its_bookings(backend: Backend) {
    let app = quiet_app(backend).await;
    let m = meters(&app, "bologna");
    let manager = app.user(Role::SiteManager, None, &["bologna"]).await;
    let desk = app.resource("bologna", "desk").await;
    let zone = desk["zone"]["id"].as_str().expect("zone").to_string();
    let (s, body) = app
        .post_json(
            "/api/v1/sites/bologna/devices",
            Some(&manager.token),
            &json!({"id": "bologna-zone-meter", "class": "grid_meter", "zone_id": zone}),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    let sub = app
        .state
        .fleet
        .get("bologna-zone-meter")
        .expect("in the fleet")
        .num;
    let (from, to) = feed_day(&app, &m, (2026, 9, 15), [60.0, 80.0, 10.0, 0.0]).await;
    // The zone's own meter: 25 Wh every 5 minutes.
    let readings = counters(
        from - STEP_MS,
        to,
        &[Metric::EImpWh],
        500.0,
        None,
        |_, _| 25.0,
    );
    store(&app, rows_of(sub, &readings)).await;
    roll_up(&app, &[sub], from - QUARTER_MS, to).await;

    let org = app.create_org("Zona Srl", 100);
    let admin = app.user(Role::CompanyAdmin, Some(&org), &[]).await;
    let at = |h: u32| {
        chrono::DateTime::from_timestamp_millis(local_ms(2026, 9, 15, h, 0)).expect("instant")
    };
    let desk_id = desk["id"].as_str().expect("desk id");
    app.store_booking(&admin, Some(&org), desk_id, at(9), at(11), 0)
        .await;
    let (s, st) = app
        .get_json(
            &format!("/api/v1/organizations/{org}/statements/2026-09"),
            Some(&admin.token),
        )
        .await;
    assert_eq!(s, 200, "{st}");
    // Alone in the zone for two hours: the sub-meter's 24 readings of 25 Wh.
    assert_eq!(num(&st["bookings"][0]["kwh"]), 0.6, "{st}");
    assert_eq!(num(&st["totals"]["kwh"]), 0.6);
    // The sub-meter is not part of the site's balance.
    let (_, day) = app
        .get_json(
            "/api/v1/energy?scope=site:bologna&from=2026-09-15&to=2026-09-16&interval=1d",
            Some(&manager.token),
        )
        .await;
    assert_eq!(num(&day["totals"]["import_wh"]), 80.0 * 288.0, "{day}");
}

on_both!(zone_sub_meter, |b| a_zone_sub_meter_measures_its_bookings(
    b
));
