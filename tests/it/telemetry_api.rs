//! The building side of the HTTP API: device lists, one device, readings at every interval,
//! the live view, provisioning, and alarms; who may see and do what.

use chrono::{DateTime, Duration, Utc};
use reqwest::header::{LOCATION, WWW_AUTHENTICATE};
use serde_json::{json, Value};
use spazi::db::alarms::{self as alarm_store, AlarmRow};
use spazi::db::telemetry::{insert_batch, ReadingRow};
use spazi::domain::quarters::QUARTER_MS;
use spazi::domain::telemetry::Metric;
use spazi::domain::Role;
use spazi::fleet::Heard;
use spazi::telemetry::mosquitto::verify_password;

use crate::bad_input::{assert_problem, send, Reply};
use crate::helpers::{assert_field_error, spawn_with, Backend, TestApp, TestUser};
use crate::on_both;

const SITE: &str = "bologna";

/// The app with the background roll-up pass slowed down, so tests run theirs by hand.
async fn app(backend: Backend) -> TestApp {
    spawn_with(backend, |mut c| {
        c.telemetry.rollup_secs = 3600;
        c
    })
    .await
}

fn ms(rfc3339: &str) -> i64 {
    DateTime::parse_from_rfc3339(rfc3339)
        .expect("instant")
        .timestamp_millis()
}

fn num(app: &TestApp, device: &str) -> i32 {
    app.state
        .fleet
        .get(device)
        .unwrap_or_else(|| panic!("device {device} in the fleet"))
        .num
}

/// Stores raw readings.
async fn put(app: &TestApp, rows: Vec<ReadingRow>) {
    app.state
        .db
        .run(move |c| insert_batch(c, &rows, &[]))
        .await
        .expect("readings stored");
}

fn reading(device: i32, metric: Metric, seq: i64, ts: i64, value: f64) -> ReadingRow {
    ReadingRow {
        minute: ReadingRow::minute_of(ts),
        device,
        metric: metric.code(),
        seq,
        ts,
        value,
    }
}

/// Rolls up every quarter of `[from, to)` for `device`.
async fn roll_up(app: &TestApp, device: i32, from: i64, to: i64) {
    let mut q = from - from.rem_euclid(QUARTER_MS);
    while q < to {
        app.state.fleet.mark(q, [device]);
        q += QUARTER_MS;
    }
    spazi::jobs::rollup::pass(&app.state.db, &app.state.fleet)
        .await
        .expect("roll-up pass");
}

/// What a device just said, as the ingest pipeline tells the fleet.
fn heard(app: &TestApp, device: &str, values: &[(Metric, f64)]) {
    let now = Utc::now().timestamp_millis();
    app.state.fleet.apply(
        &[(
            num(app, device),
            Heard::Readings {
                ts: now,
                from: 0,
                to: values.len(),
            },
        )],
        values,
        now,
    );
}

async fn raise(app: &TestApp, site: &str, device: &str, kind: &str, ago_min: i64) -> String {
    let row = AlarmRow {
        id: uuid::Uuid::now_v7().to_string(),
        site_id: site.into(),
        device_id: device.into(),
        zone_id: None,
        kind: kind.into(),
        severity: "warning".into(),
        state: "open".into(),
        message: format!("{kind} on {device}"),
        value: Some(1234.0),
        raised_at: (Utc::now() - Duration::minutes(ago_min)).naive_utc(),
        acknowledged_at: None,
        acknowledged_by: None,
        cleared_at: None,
    };
    let id = row.id.clone();
    let raised = app
        .state
        .db
        .run(move |c| alarm_store::raise(c, &row))
        .await
        .expect("alarm raised");
    assert!(raised.is_some(), "{kind} on {device} was not live yet");
    id
}

async fn clear(app: &TestApp, device: &str, kind: &str) {
    let (device, kind) = (device.to_string(), kind.to_string());
    let cleared = app
        .state
        .db
        .run(move |c| alarm_store::clear(c, &device, &kind, Utc::now().naive_utc()))
        .await
        .expect("alarm cleared");
    assert!(cleared.is_some());
}

/// A site other than bologna.
fn other_site(app: &TestApp) -> String {
    app.state
        .directory()
        .sites
        .iter()
        .map(|s| s.site.id.clone())
        .find(|id| id != SITE)
        .expect("another site")
}

struct People {
    member: TestUser,
    company_admin: TestUser,
    manager: TestUser,
    other_manager: TestUser,
    admin: TestUser,
}

async fn people(app: &TestApp, other: &str) -> People {
    let org = app.create_org("Acme", 10);
    People {
        member: app.user(Role::Member, Some(&org), &[]).await,
        company_admin: app.user(Role::CompanyAdmin, Some(&org), &[]).await,
        manager: app.user(Role::SiteManager, None, &[SITE]).await,
        other_manager: app.user(Role::SiteManager, None, &[other]).await,
        admin: app.user(Role::NetworkAdmin, None, &[]).await,
    }
}

async fn get(app: &TestApp, who: Option<&TestUser>, path: &str) -> Reply {
    let mut req = app.client.get(app.url(path));
    if let Some(u) = who {
        req = req.bearer_auth(&u.token);
    }
    send(req).await
}

async fn post(
    app: &TestApp,
    who: Option<&TestUser>,
    path: &str,
    body: &Value,
    key: Option<&str>,
) -> Reply {
    let mut req = app.client.post(app.url(path)).json(body);
    if let Some(u) = who {
        req = req.bearer_auth(&u.token);
    }
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    send(req).await
}

fn assert_401(r: &Reply, what: &str) {
    assert_problem(r, 401, what);
    let challenge = r
        .headers
        .get(WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        challenge.starts_with("Bearer"),
        "{what}: WWW-Authenticate {challenge:?}"
    );
}

fn field(r: &Reply, status: u16, name: &str) {
    assert_field_error(r.status, &r.body, status, name);
}

fn items(r: &Reply) -> &Vec<Value> {
    r.body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {}", r.body))
}

fn ids(r: &Reply) -> Vec<String> {
    items(r)
        .iter()
        .map(|i| i["id"].as_str().expect("id").to_string())
        .collect()
}

on_both!(every_route_checks_who_is_asking, |backend| async move {
    use super::*;
    let app = app(backend).await;
    let other = other_site(&app);
    let p = people(&app, &other).await;
    let alarm = raise(&app, SITE, "bologna-pv", "device_offline", 5).await;
    let from = "2026-11-01T00:00:00Z";
    let to = "2026-11-01T06:00:00Z";
    let readings =
        format!("/api/v1/devices/bologna-grid/readings?metric=e_imp_wh&from={from}&to={to}");

    // The site's device list and live view: 403 for a known site the caller does not manage.
    for path in [
        format!("/api/v1/sites/{SITE}/devices"),
        format!("/api/v1/sites/{SITE}/live"),
    ] {
        assert_401(&get(&app, None, &path).await, &path);
        for (who, name) in [
            (&p.member, "member"),
            (&p.company_admin, "company admin"),
            (&p.other_manager, "another site's manager"),
        ] {
            assert_problem(
                &get(&app, Some(who), &path).await,
                403,
                &format!("{name}: {path}"),
            );
        }
        for who in [&p.manager, &p.admin] {
            let r = get(&app, Some(who), &path).await;
            assert_eq!(r.status, 200, "{path}: {}", r.body);
        }
        let unknown = path.replace(SITE, "atlantide");
        assert_problem(
            &get(&app, Some(&p.admin), &unknown).await,
            404,
            "an unknown site",
        );
    }
    let r = get(
        &app,
        Some(&p.other_manager),
        &format!("/api/v1/sites/{other}/devices"),
    )
    .await;
    assert_eq!(r.status, 200, "a manager sees their own site: {}", r.body);

    // One device and its readings: 404 outside the caller's sites, exactly as if absent.
    for path in ["/api/v1/devices/bologna-grid".to_string(), readings.clone()] {
        assert_401(&get(&app, None, &path).await, &path);
        let absent = get(
            &app,
            Some(&p.admin),
            &path.replace("bologna-grid", "no-such-device"),
        )
        .await;
        assert_problem(&absent, 404, "a device that does not exist");
        for who in [&p.member, &p.company_admin, &p.other_manager] {
            let r = get(&app, Some(who), &path).await;
            assert_problem(&r, 404, &path);
            assert_eq!(r.body["code"], absent.body["code"]);
        }
        for who in [&p.manager, &p.admin] {
            let r = get(&app, Some(who), &path).await;
            assert_eq!(r.status, 200, "{path}: {}", r.body);
        }
    }

    // Provisioning.
    let path = format!("/api/v1/sites/{SITE}/devices");
    let body = json!({"id": "bologna-auth-probe", "class": "env_sensor"});
    assert_401(
        &post(&app, None, &path, &body, None).await,
        "provisioning without a token",
    );
    for who in [&p.member, &p.company_admin, &p.other_manager] {
        assert_problem(
            &post(&app, Some(who), &path, &body, None).await,
            403,
            "provisioning",
        );
    }
    assert!(
        app.state.fleet.get("bologna-auth-probe").is_none(),
        "nothing provisioned"
    );
    let r = post(&app, Some(&p.admin), &path, &body, None).await;
    assert_eq!(r.status, 201, "a network admin provisions: {}", r.body);

    // Alarms.
    assert_401(
        &get(&app, None, "/api/v1/alarms").await,
        "alarms without a token",
    );
    for who in [&p.member, &p.company_admin] {
        assert_problem(&get(&app, Some(who), "/api/v1/alarms").await, 403, "alarms");
    }
    let r = get(&app, Some(&p.other_manager), "/api/v1/alarms").await;
    assert_eq!(r.status, 200);
    assert!(
        !ids(&r).contains(&alarm),
        "another site's manager does not see the alarm"
    );
    let r = get(
        &app,
        Some(&p.other_manager),
        &format!("/api/v1/alarms?site_id={SITE}"),
    )
    .await;
    assert_problem(&r, 403, "another site's manager asking for its alarms");
    for who in [&p.manager, &p.admin] {
        let r = get(&app, Some(who), "/api/v1/alarms").await;
        assert_eq!(r.status, 200);
        assert!(ids(&r).contains(&alarm));
    }
    let ack = format!("/api/v1/alarms/{alarm}/ack");
    assert_401(
        &post(&app, None, &ack, &json!({}), None).await,
        "ack without a token",
    );
    for who in [&p.member, &p.company_admin, &p.other_manager] {
        assert_problem(
            &post(&app, Some(who), &ack, &json!({}), None).await,
            404,
            "ack",
        );
    }
    let r = get(&app, Some(&p.manager), "/api/v1/alarms?state=open").await;
    assert!(ids(&r).contains(&alarm), "still open after refused acks");
    let r = post(&app, Some(&p.manager), &ack, &json!({}), None).await;
    assert_eq!(r.status, 200, "{}", r.body);

    // The contract is described.
    let (status, doc) = app.get_json("/api/v1/openapi.json", None).await;
    assert_eq!(status, 200);
    for path in [
        "/api/v1/sites/{site_id}/devices",
        "/api/v1/sites/{site_id}/live",
        "/api/v1/devices/{device_id}",
        "/api/v1/devices/{device_id}/readings",
        "/api/v1/alarms",
        "/api/v1/alarms/{alarm_id}/ack",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} in the OpenAPI description"
        );
    }
});

/// The grid meter's import counter over Sunday 25 October 2026, the day Rome's clocks go back:
/// 25 hours, 100 quarters, a reading every 5 minutes from local midnight to local midnight, the
/// counter rising by 10 Wh a reading, and power readings 0, 1, 2, …
async fn a_25_hour_day(app: &TestApp) -> (i32, i64, i64) {
    let grid = num(app, "bologna-grid");
    let start = ms("2026-10-25T00:00:00+02:00");
    let end = ms("2026-10-26T00:00:00+01:00");
    assert_eq!(end - start, 25 * 3_600_000);
    let mut rows = Vec::new();
    for k in 0..300 {
        let ts = start + k * 300_000;
        rows.push(reading(
            grid,
            Metric::EImpWh,
            k,
            ts,
            1_000.0 + 10.0 * k as f64,
        ));
        rows.push(reading(grid, Metric::MeterEpoch, k, ts, 1.0));
        rows.push(reading(grid, Metric::PW, k, ts, k as f64));
    }
    put(app, rows).await;
    roll_up(app, grid, start, end).await;
    (grid, start, end)
}

on_both!(readings_at_every_interval, |backend| async move {
    use super::*;
    let app = app(backend).await;
    let manager = app.user(Role::SiteManager, None, &[SITE]).await;
    let _ = a_25_hour_day(&app).await;
    let base = "/api/v1/devices/bologna-grid/readings";
    let day = "from=2026-10-24T22:00:00Z&to=2026-10-25T23:00:00Z";

    // Raw: the readings themselves, oldest first, in UTC and in Rome's time.
    let r = get(
        &app,
        Some(&manager),
        &format!(
            "{base}?metric=e_imp_wh&interval=raw&from=2026-10-25T00:30:00Z&to=2026-10-25T01:30:00Z"
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["device_id"], "bologna-grid");
    assert_eq!(r.body["metric"], "e_imp_wh");
    assert_eq!(r.body["unit"], "Wh");
    assert_eq!(r.body["interval"], "raw");
    assert_eq!(r.body["timezone"], "Europe/Rome");
    assert_eq!(r.body["truncated"], false);
    let raw = items(&r);
    assert_eq!(raw.len(), 12, "one hour at one reading every 5 minutes");
    // 00:30Z is 02:30 CEST, the first of the two 02:30s; 01:25Z is 02:25 CET, the second 02:00 hour.
    assert_eq!(raw[0]["ts"], "2026-10-25T00:30:00Z");
    assert_eq!(raw[0]["ts_local"], "2026-10-25T02:30:00+02:00");
    assert_eq!(raw[11]["ts_local"], "2026-10-25T02:25:00+01:00");
    assert_eq!(raw[0]["seq"], 30);
    assert_eq!(raw[0]["value"], 1_300.0);

    // 15 minutes: the roll-ups, 100 of them, three readings each, 30 Wh a quarter after the first.
    let r = get(
        &app,
        Some(&manager),
        &format!("{base}?metric=e_imp_wh&{day}"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["interval"], "15m", "the default interval");
    let quarters = items(&r);
    assert_eq!(quarters.len(), 100);
    assert!(quarters.iter().all(|q| q["count"] == 3));
    assert_eq!(quarters[0]["start"], "2026-10-24T22:00:00Z");
    assert_eq!(quarters[0]["end"], "2026-10-24T22:15:00Z");
    assert_eq!(quarters[0]["start_local"], "2026-10-25T00:00:00+02:00");
    assert_eq!(
        quarters[0]["delta"], 20.0,
        "the first quarter counts from its first reading"
    );
    assert!(quarters[1..].iter().all(|q| q["delta"] == 30.0));
    let quarter_sum: f64 = quarters
        .iter()
        .map(|q| q["delta"].as_f64().expect("delta"))
        .sum();
    assert_eq!(quarter_sum, 2_990.0);
    assert_eq!(quarters[99]["last"], 3_990.0);

    // One hour: 25 local hours, the repeated 02:00 twice.
    let r = get(
        &app,
        Some(&manager),
        &format!("{base}?metric=e_imp_wh&interval=1h&{day}"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let hours = items(&r);
    assert_eq!(hours.len(), 25);
    assert!(hours.iter().all(|h| h["quarters"] == 4 && h["count"] == 12));
    let twos: Vec<&str> = hours
        .iter()
        .filter_map(|h| h["start_local"].as_str())
        .filter(|s| s.starts_with("2026-10-25T02:00:00"))
        .collect();
    assert_eq!(
        twos,
        ["2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00"]
    );
    let hour_sum: f64 = hours
        .iter()
        .map(|h| h["delta"].as_f64().expect("delta"))
        .sum();
    assert_eq!(hour_sum, 2_990.0, "hourly deltas add up to the day's");
    assert_eq!(hours[1]["delta"], 120.0);

    // One day: the 25-hour day is one bucket of 100 quarters, from local midnight to local midnight.
    let r = get(
        &app,
        Some(&manager),
        &format!(
            "{base}?metric=e_imp_wh&interval=1d&from=2026-10-23T22:00:00Z&to=2026-10-27T23:00:00Z"
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let days = items(&r);
    assert_eq!(days.len(), 1, "only that day has readings: {}", r.body);
    let d = &days[0];
    assert_eq!(d["start"], "2026-10-24T22:00:00Z");
    assert_eq!(d["end"], "2026-10-25T23:00:00Z");
    assert_eq!(d["start_local"], "2026-10-25T00:00:00+02:00");
    assert_eq!(d["end_local"], "2026-10-26T00:00:00+01:00");
    assert_eq!(d["quarters"], 100);
    assert_eq!(d["count"], 300);
    assert_eq!(
        d["delta"], 2_990.0,
        "the day's energy is last minus first, exactly"
    );
    assert_eq!(d["min"], 1_000.0);
    assert_eq!(d["max"], 3_990.0);
    assert_eq!(d["last"], 3_990.0);

    // A gauge: min, max and mean weighted by count, and no delta.
    let r = get(
        &app,
        Some(&manager),
        &format!("{base}?metric=p_w&interval=1d&{day}"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let d = &items(&r)[0];
    assert_eq!(d["count"], 300);
    assert_eq!(d["min"], 0.0);
    assert_eq!(d["max"], 299.0);
    assert_eq!(d["mean"], 149.5);
    assert_eq!(d["last"], 299.0);
    assert!(d.get("delta").is_none(), "a gauge has no delta: {d}");
    let r = get(
        &app,
        Some(&manager),
        &format!("{base}?metric=p_w&interval=1h&{day}"),
    )
    .await;
    let h = &items(&r)[0];
    assert_eq!(
        (h["min"].clone(), h["max"].clone(), h["mean"].clone()),
        (json!(0.0), json!(11.0), json!(5.5))
    );

    // A window that starts mid-hour includes the hour it starts in.
    let r = get(
        &app,
        Some(&manager),
        &format!("{base}?metric=p_w&interval=1h&from=2026-10-24T22:40:00Z&to=2026-10-24T23:10:00Z"),
    )
    .await;
    assert_eq!(
        ids_of_starts(&r),
        ["2026-10-24T22:00:00Z", "2026-10-24T23:00:00Z"]
    );

    // Nothing stored: an empty list, not an error.
    let r = get(&app, Some(&manager), &format!("{base}?metric=t_c&{day}")).await;
    assert_eq!(r.status, 200);
    assert!(items(&r).is_empty());
});

fn ids_of_starts(r: &Reply) -> Vec<String> {
    items(r)
        .iter()
        .map(|i| i["start"].as_str().expect("start").to_string())
        .collect()
}

on_both!(
    every_bad_readings_parameter_is_named,
    |backend| async move {
        use super::*;
        let app = app(backend).await;
        let manager = app.user(Role::SiteManager, None, &[SITE]).await;
        let base = "/api/v1/devices/bologna-grid/readings";
        let ok = "metric=p_w&from=2026-11-01T00:00:00Z&to=2026-11-01T01:00:00Z";
        let r = get(&app, Some(&manager), &format!("{base}?{ok}")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let cases: &[(&str, &str)] = &[
            (
                "from=2026-11-01T00:00:00Z&to=2026-11-01T01:00:00Z",
                "metric",
            ),
            (
                "metric=volts&from=2026-11-01T00:00:00Z&to=2026-11-01T01:00:00Z",
                "metric",
            ),
            ("metric=p_w&to=2026-11-01T01:00:00Z", "from"),
            ("metric=p_w&from=yesterday&to=2026-11-01T01:00:00Z", "from"),
            (
                "metric=p_w&from=2026-11-01T00:00:00&to=2026-11-01T01:00:00Z",
                "from",
            ),
            ("metric=p_w&from=2026-11-01T00:00:00Z", "to"),
            ("metric=p_w&from=2026-11-01T00:00:00Z&to=soon", "to"),
            (
                "metric=p_w&from=2026-11-01T01:00:00Z&to=2026-11-01T01:00:00Z",
                "to",
            ),
            (
                "metric=p_w&from=2026-11-01T02:00:00Z&to=2026-11-01T01:00:00Z",
                "to",
            ),
            (
                "metric=p_w&interval=5m&from=2026-11-01T00:00:00Z&to=2026-11-01T01:00:00Z",
                "interval",
            ),
        ];
        for (query, name) in cases {
            let r = get(&app, Some(&manager), &format!("{base}?{query}")).await;
            assert_problem(&r, 422, query);
            field(&r, 422, name);
        }
        // Window caps: at the cap is fine, a second more names `to` and says the cap.
        let caps = [
            (
                "raw",
                "2026-11-02T00:00:00Z",
                "2026-11-02T00:00:01Z",
                "24 hours",
            ),
            (
                "15m",
                "2026-12-02T00:00:00Z",
                "2026-12-02T00:00:01Z",
                "31 days",
            ),
            (
                "1h",
                "2027-02-01T00:00:00Z",
                "2027-02-01T00:00:01Z",
                "92 days",
            ),
            (
                "1d",
                "2029-11-05T00:00:00Z",
                "2029-11-05T00:00:01Z",
                "1100 days",
            ),
        ];
        for (interval, at_cap, past_cap, text) in caps {
            let from = "2026-11-01T00:00:00Z";
            let r = get(
                &app,
                Some(&manager),
                &format!("{base}?metric=p_w&interval={interval}&from={from}&to={at_cap}"),
            )
            .await;
            assert_eq!(r.status, 200, "{interval} up to its cap: {}", r.body);
            let r = get(
                &app,
                Some(&manager),
                &format!("{base}?metric=p_w&interval={interval}&from={from}&to={past_cap}"),
            )
            .await;
            field(&r, 422, "to");
            assert!(
                r.body["errors"][0]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(text)),
                "{interval}: the message gives the cap: {}",
                r.body
            );
        }
        // Everything wrong at once: every field named.
        let r = get(
            &app,
            Some(&manager),
            &format!("{base}?metric=x&interval=y&from=z"),
        )
        .await;
        for name in ["metric", "interval", "from", "to"] {
            field(&r, 422, name);
        }
        // An offset sent unencoded ('+' read as a space) is understood.
        let r = get(
            &app,
            Some(&manager),
            &format!(
                "{base}?metric=p_w&from=2026-11-01T01:00:00+01:00&to=2026-11-01T02:00:00+01:00"
            ),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["from"], "2026-11-01T00:00:00Z");
    }
);

on_both!(
    raw_readings_stop_at_ten_thousand_points,
    |backend| async move {
        use super::*;
        let app = app(backend).await;
        let admin = app.user(Role::NetworkAdmin, None, &[]).await;
        let pv = num(&app, "bologna-pv");
        let start = ms("2026-11-20T00:00:00Z");
        let rows = (0..10_050)
            .map(|k| reading(pv, Metric::PW, k, start + k * 1_000, k as f64))
            .collect();
        put(&app, rows).await;
        let r = get(&app, Some(&admin), "/api/v1/devices/bologna-pv/readings?metric=p_w&interval=raw&from=2026-11-20T00:00:00Z&to=2026-11-21T00:00:00Z").await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(items(&r).len(), 10_000);
        assert_eq!(r.body["truncated"], true);
        assert_eq!(
            items(&r)[9_999]["value"],
            9_999.0,
            "the first 10,000, oldest first"
        );
    }
);

on_both!(devices_live_view_and_latest_values, |backend| async move {
    use super::*;
    let app = app(backend).await;
    let manager = app.user(Role::SiteManager, None, &[SITE]).await;
    let dir = app.state.directory();
    let site = dir.get(SITE).expect("bologna");
    // Two presence sensors in one zone, and a third elsewhere that reports a head count.
    let zone_of = |kind: spazi::domain::ResourceKind| {
        site.resources
            .iter()
            .filter(|r| r.kind == kind)
            .map(|r| (r.zone.id.clone(), r.resource.id.clone()))
            .collect::<Vec<_>>()
    };
    let desks = zone_of(spazi::domain::ResourceKind::Desk);
    let (desk_zone, desk_a, desk_b) = desks
        .iter()
        .find_map(|(z, a)| {
            desks
                .iter()
                .find(|(z2, b)| z2 == z && b != a)
                .map(|(_, b)| (z.clone(), a.clone(), b.clone()))
        })
        .expect("two desks in one zone");
    let (room_zone, room) = zone_of(spazi::domain::ResourceKind::MeetingRoom)
        .into_iter()
        .find(|(z, _)| *z != desk_zone)
        .expect("a meeting room in another zone");
    heard(&app, &format!("{desk_a}-pres"), &[(Metric::Occupied, 1.0)]);
    heard(&app, &format!("{desk_b}-pres"), &[(Metric::Occupied, 0.0)]);
    heard(
        &app,
        &format!("{room}-pres"),
        &[(Metric::Occupied, 1.0), (Metric::Count, 4.0)],
    );
    let env = format!("{desk_zone}-env");
    heard(&app, &env, &[(Metric::Co2Ppm, 650.0), (Metric::TC, 21.5)]);
    let alarm = raise(&app, SITE, &env, "temperature_out_of_band", 3).await;
    let older = raise(&app, SITE, "bologna-door-main", "door_held_open", 30).await;
    raise(&app, SITE, "bologna-pv", "counter_backwards", 60).await;
    clear(&app, "bologna-pv", "counter_backwards").await;

    // One device: its latest values with units, and its live alarms.
    let r = get(&app, Some(&manager), &format!("/api/v1/devices/{env}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["class"], "env_sensor");
    assert_eq!(r.body["status"], "online");
    assert_eq!(r.body["zone_id"], json!(desk_zone));
    assert_eq!(r.body["gateway_id"], "bologna-gw");
    assert_eq!(r.body["timezone"], "Europe/Rome");
    assert!(r.body["last_seen"].is_string() && r.body["last_seen_local"].is_string());
    let co2 = &r.body["values"]["co2_ppm"];
    assert_eq!(co2["value"], 650.0);
    assert_eq!(co2["unit"], "ppm");
    assert!(co2["ts"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert!(co2["ts_local"].is_string());
    assert_eq!(r.body["values"]["t_c"]["unit"], "°C");
    let live_ids: Vec<&str> = r.body["alarms"]
        .as_array()
        .expect("alarms")
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert_eq!(live_ids, [alarm.as_str()]);
    let r = get(&app, Some(&manager), "/api/v1/devices/bologna-pv").await;
    assert_eq!(r.body["alarms"], json!([]), "a cleared alarm is not live");
    assert_eq!(r.body["values"], json!({}));
    assert_eq!(r.body["status"], "unknown");

    // The live view.
    let r = get(&app, Some(&manager), &format!("/api/v1/sites/{SITE}/live")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["site_id"], SITE);
    assert_eq!(r.body["timezone"], "Europe/Rome");
    let devices = r.body["devices"].as_array().expect("devices");
    assert_eq!(devices.len(), app.state.fleet.site(SITE).len());
    let e = devices
        .iter()
        .find(|d| d["id"] == json!(env))
        .expect("env sensor");
    assert_eq!(e["values"]["co2_ppm"]["value"], 650.0);
    assert_eq!(e["status"], "online");
    let occ = &r.body["occupancy"];
    assert_eq!(occ["occupied_resources"], 2);
    assert_eq!(occ["sensed_resources"], 3);
    let zone = |id: &str| {
        occ["zones"]
            .as_array()
            .expect("zones")
            .iter()
            .find(|z| z["zone_id"] == json!(id))
            .cloned()
            .unwrap_or_else(|| panic!("zone {id} in {occ}"))
    };
    let dz = zone(&desk_zone);
    assert_eq!(
        (dz["occupied"].clone(), dz["sensors"].clone()),
        (json!(1), json!(2))
    );
    assert!(dz.get("people_estimate").is_none());
    let rz = zone(&room_zone);
    assert_eq!(rz["people_estimate"], 4);
    let alarm_ids: Vec<&str> = r.body["alarms"]
        .as_array()
        .expect("alarms")
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert_eq!(
        alarm_ids,
        [alarm.as_str(), older.as_str()],
        "live alarms, newest first"
    );

    // The device list: filters and a keyset cursor.
    let r = get(
        &app,
        Some(&manager),
        &format!("/api/v1/sites/{SITE}/devices?status=online"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut online = ids(&r);
    online.sort();
    let mut expected = vec![
        format!("{desk_a}-pres"),
        format!("{desk_b}-pres"),
        format!("{room}-pres"),
        env.clone(),
    ];
    expected.sort();
    assert_eq!(online, expected);
    let r = get(
        &app,
        Some(&manager),
        &format!("/api/v1/sites/{SITE}/devices?class=grid_meter"),
    )
    .await;
    assert_eq!(ids(&r), ["bologna-grid"]);
    let g = &items(&r)[0];
    assert_eq!(g["source"], "seed");
    assert_eq!(g["report_interval_s"], 10);
    assert!(g["last_seen"].is_null());
    let total = app.state.fleet.site(SITE).len();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/sites/{SITE}/devices?limit=7&cursor={c}"),
            None => format!("/api/v1/sites/{SITE}/devices?limit=7"),
        };
        let r = get(&app, Some(&manager), &path).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(items(&r).len() <= 7);
        seen.extend(ids(&r));
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        (seen.len(), sorted),
        (total, seen.clone()),
        "every device once, in id order"
    );
    for (query, name) in [
        ("class=toaster", "class"),
        ("status=asleep", "status"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("cursor=bm9wZQ", "cursor"),
    ] {
        let r = get(
            &app,
            Some(&manager),
            &format!("/api/v1/sites/{SITE}/devices?{query}"),
        )
        .await;
        field(&r, 422, name);
    }
});

on_both!(provisioning_a_device, |backend| async move {
    use super::*;
    let app = app(backend).await;
    let other = other_site(&app);
    let manager = app.user(Role::SiteManager, None, &[SITE]).await;
    let admin = app.user(Role::NetworkAdmin, None, &[]).await;
    let dir = app.state.directory();
    let site = dir.get(SITE).expect("bologna");
    let room = site
        .resources
        .iter()
        .find(|r| r.kind == spazi::domain::ResourceKind::MeetingRoom)
        .expect("a meeting room");
    let (room_id, zone_id) = (room.resource.id.clone(), room.zone.id.clone());
    let another_zone = site
        .resources
        .iter()
        .map(|r| r.zone.id.clone())
        .find(|z| *z != zone_id)
        .expect("a second zone");
    let elsewhere = dir.get(&other).expect("other").resources[0]
        .resource
        .id
        .clone();
    let path = format!("/api/v1/sites/{SITE}/devices");
    let body = json!({
        "id": "bologna-room-co2",
        "class": "env_sensor",
        "resource_id": room_id,
        "gateway_id": "bologna-gw",
        "model": "CO2 sensor E-2",
        "firmware": "2.1.0"
    });
    let before = app.count("SELECT COUNT(*) AS n FROM devices");

    let r = post(&app, Some(&manager), &path, &body, None).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let location = r
        .headers
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        location.ends_with("/api/v1/devices/bologna-room-co2"),
        "Location {location:?}"
    );
    let d = &r.body;
    assert_eq!(d["id"], "bologna-room-co2");
    assert_eq!(d["site_id"], SITE);
    assert_eq!(d["class"], "env_sensor");
    assert_eq!(
        d["zone_id"],
        json!(zone_id),
        "the zone defaults to the resource's"
    );
    assert_eq!(d["resource_id"], json!(room_id));
    assert_eq!(
        d["report_interval_s"], 60,
        "the class's interval by default"
    );
    assert_eq!(d["source"], "api");
    assert_eq!(d["status"], "unknown");
    let mqtt = &d["mqtt"];
    assert_eq!(mqtt["username"], "bologna-room-co2");
    let password = mqtt["password"].as_str().expect("password");
    assert_eq!(password.len(), 32);
    let hash = mqtt["password_hash"].as_str().expect("hash");
    assert!(hash.starts_with("$7$"), "{hash}");
    assert!(
        verify_password(hash, password),
        "the hash is of the password"
    );
    assert!(!hash.contains(password));
    let publish: Vec<&str> = mqtt["topics"]["publish"]
        .as_array()
        .expect("publish")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        publish.contains(&"spazi/v1/bologna/bologna-room-co2/tele/+"),
        "{publish:?}"
    );
    assert!(publish.contains(&"spazi/v1/bologna/bologna-room-co2/status"));
    assert_eq!(
        mqtt["topics"]["subscribe"],
        json!(["spazi/v1/bologna/bologna-room-co2/cmd/+"])
    );
    assert_eq!(app.count("SELECT COUNT(*) AS n FROM devices"), before + 1);
    assert_eq!(
        app.count(
            "SELECT COUNT(*) AS n FROM devices WHERE id = 'bologna-room-co2' AND source = 'api'"
        ),
        1
    );

    // Visible at once: in the site's list and on its own.
    let r = get(
        &app,
        Some(&manager),
        &format!("{path}?class=env_sensor&limit=500"),
    )
    .await;
    assert!(ids(&r).contains(&"bologna-room-co2".to_string()));
    let r = get(&app, Some(&manager), "/api/v1/devices/bologna-room-co2").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["model"], "CO2 sensor E-2");
    assert_eq!(r.body["firmware"], "2.1.0");
    assert!(
        r.body.get("mqtt").is_none(),
        "the password is shown once only"
    );

    // A taken id: 409, whether provisioned or seeded.
    for id in ["bologna-room-co2", "bologna-grid"] {
        let r = post(
            &app,
            Some(&manager),
            &path,
            &json!({"id": id, "class": "env_sensor"}),
            None,
        )
        .await;
        assert_problem(&r, 409, id);
    }
    assert_eq!(app.count("SELECT COUNT(*) AS n FROM devices"), before + 1);

    // Every bad field named, in one answer.
    let r = post(
        &app,
        Some(&manager),
        &path,
        &json!({
            "id": "Bad Id!",
            "class": "toaster",
            "zone_id": "nowhere",
            "resource_id": elsewhere,
            "gateway_id": "bologna-pv",
            "model": "",
            "firmware": "x".repeat(65),
            "report_interval_s": 0
        }),
        None,
    )
    .await;
    assert_problem(&r, 422, "bad fields");
    for name in [
        "id",
        "class",
        "zone_id",
        "resource_id",
        "gateway_id",
        "model",
        "firmware",
        "report_interval_s",
    ] {
        field(&r, 422, name);
    }
    let bad: &[(Value, &str)] = &[
        (json!({"class": "env_sensor"}), "id"),
        (json!({"id": "bologna-x"}), "class"),
        (
            json!({"id": "bologna-x", "class": "env_sensor", "report_interval_s": 86_401}),
            "report_interval_s",
        ),
        (
            json!({"id": "bologna-x", "class": "env_sensor", "report_interval_s": "often"}),
            "report_interval_s",
        ),
        (
            json!({"id": "bologna-x", "class": "gateway", "gateway_id": "bologna-gw"}),
            "gateway_id",
        ),
        (
            json!({"id": "bologna-x", "class": "env_sensor", "gateway_id": format!("{other}-gw")}),
            "gateway_id",
        ),
        (
            json!({"id": "bologna-x", "class": "presence_sensor", "resource_id": room_id, "zone_id": another_zone}),
            "zone_id",
        ),
        (json!({"id": "x".repeat(129), "class": "env_sensor"}), "id"),
    ];
    for (body, name) in bad {
        let r = post(&app, Some(&manager), &path, body, None).await;
        field(&r, 422, name);
    }
    assert!(app.state.fleet.get("bologna-x").is_none());

    // An unknown site.
    let r = post(
        &app,
        Some(&admin),
        "/api/v1/sites/atlantide/devices",
        &json!({"id": "atl-1", "class": "env_sensor"}),
        None,
    )
    .await;
    assert_problem(&r, 404, "an unknown site");

    // Idempotency-Key: the same request answers the same, and creates one device.
    let gw = json!({"id": "bologna-gw-2", "class": "gateway", "report_interval_s": 30});
    let first = post(&app, Some(&admin), &path, &gw, Some("prov-gw-2")).await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(first.body["report_interval_s"], 30);
    assert_eq!(first.body["gateway_id"], Value::Null);
    assert_eq!(
        first.body["mqtt"]["topics"]["subscribe"],
        json!(["spazi/v1/bologna/+/cmd/+"]),
        "a gateway speaks for the whole site"
    );
    let again = post(&app, Some(&admin), &path, &gw, Some("prov-gw-2")).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body, first.body, "the same body, password included");
    assert_eq!(again.headers.get(LOCATION), first.headers.get(LOCATION));
    assert_eq!(
        app.count("SELECT COUNT(*) AS n FROM devices WHERE id = 'bologna-gw-2'"),
        1
    );
    let changed = post(
        &app,
        Some(&admin),
        &path,
        &json!({"id": "bologna-gw-3", "class": "gateway"}),
        Some("prov-gw-2"),
    )
    .await;
    field(&changed, 422, "Idempotency-Key");
    // The new gateway can carry devices.
    let r = post(
        &app,
        Some(&manager),
        &path,
        &json!({"id": "bologna-behind-gw-2", "class": "env_sensor", "gateway_id": "bologna-gw-2"}),
        None,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
});

on_both!(alarm_list_and_acknowledgement, |backend| async move {
    use super::*;
    let app = app(backend).await;
    let other = other_site(&app);
    let p = people(&app, &other).await;
    let oldest = raise(&app, SITE, "bologna-pv", "device_offline", 180).await;
    let middle = raise(&app, SITE, "bologna-grid", "counter_backwards", 120).await;
    let cleared = raise(&app, SITE, "bologna-door-main", "door_held_open", 60).await;
    clear(&app, "bologna-door-main", "door_held_open").await;
    let elsewhere = raise(&app, &other, &format!("{other}-pv"), "device_offline", 90).await;

    let list = |q: &str| format!("/api/v1/alarms{q}");
    let r = get(&app, Some(&p.manager), &list("")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        ids(&r),
        [cleared.as_str(), middle.as_str(), oldest.as_str()],
        "newest first, own site only"
    );
    assert!(r.body["next_cursor"].is_null());
    let a = &items(&r)[0];
    assert_eq!(a["state"], "cleared");
    assert_eq!(a["timezone"], "Europe/Rome");
    assert!(a["cleared_at"].is_string() && a["raised_at_local"].is_string());
    assert_eq!(a["device_id"], "bologna-door-main");
    assert_eq!(a["kind"], "door_held_open");
    assert_eq!(a["value"], 1234.0);

    let r = get(&app, Some(&p.manager), &list("?state=open")).await;
    assert_eq!(ids(&r), [middle.as_str(), oldest.as_str()]);
    let r = get(&app, Some(&p.manager), &list("?state=cleared")).await;
    assert_eq!(ids(&r), [cleared.as_str()]);
    let r = get(
        &app,
        Some(&p.manager),
        &list(&format!("?site_id={SITE}&state=open&limit=1")),
    )
    .await;
    assert_eq!(ids(&r), [middle.as_str()]);
    let cursor = r.body["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    let r = get(
        &app,
        Some(&p.manager),
        &list(&format!(
            "?site_id={SITE}&state=open&limit=1&cursor={cursor}"
        )),
    )
    .await;
    assert_eq!(ids(&r), [oldest.as_str()]);
    assert!(r.body["next_cursor"].is_null());
    for (query, name) in [
        ("?state=snoozed", "state"),
        ("?limit=0", "limit"),
        ("?limit=abc", "limit"),
        ("?cursor=not-a-cursor", "cursor"),
    ] {
        let r = get(&app, Some(&p.manager), &list(query)).await;
        assert_problem(&r, 422, query);
        field(&r, 422, name);
    }

    let r = get(&app, Some(&p.admin), &list("")).await;
    let all = ids(&r);
    for id in [&oldest, &middle, &cleared, &elsewhere] {
        assert!(all.contains(id), "a network admin sees every site");
    }
    let r = get(&app, Some(&p.admin), &list(&format!("?site_id={other}"))).await;
    assert_eq!(ids(&r), [elsewhere.as_str()]);
    let r = get(&app, Some(&p.admin), &list("?site_id=atlantide")).await;
    assert_problem(&r, 404, "an unknown site");
    let r = get(&app, Some(&p.other_manager), &list("")).await;
    assert_eq!(ids(&r), [elsewhere.as_str()]);

    // Acknowledge: 200, then 200 again with nothing changed.
    let ack = |id: &str| format!("/api/v1/alarms/{id}/ack");
    let r = post(
        &app,
        Some(&p.other_manager),
        &ack(&oldest),
        &json!({}),
        None,
    )
    .await;
    assert_problem(&r, 404, "another site's manager");
    let r = post(&app, Some(&p.manager), &ack(&oldest), &json!({}), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["state"], "acknowledged");
    assert_eq!(
        r.body["acknowledged_by"],
        json!({"id": p.manager.id, "name": "Test User"})
    );
    let at = r.body["acknowledged_at"]
        .as_str()
        .expect("acknowledged_at")
        .to_string();
    assert!(r.body["cleared_at"].is_null());
    let again = post(&app, Some(&p.admin), &ack(&oldest), &json!({}), None).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body, r.body, "unchanged");
    assert_eq!(again.body["acknowledged_at"], json!(at));
    let r = get(&app, Some(&p.manager), &list("?state=acknowledged")).await;
    assert_eq!(ids(&r), [oldest.as_str()]);
    assert_eq!(items(&r)[0]["acknowledged_by"]["id"], json!(p.manager.id));

    // A cleared alarm cannot be acknowledged; an unknown one is 404.
    let r = post(&app, Some(&p.manager), &ack(&cleared), &json!({}), None).await;
    assert_problem(&r, 409, "a cleared alarm");
    let r = post(
        &app,
        Some(&p.admin),
        &ack("no-such-alarm"),
        &json!({}),
        None,
    )
    .await;
    assert_problem(&r, 404, "an unknown alarm");
    let r = post(&app, Some(&p.member), &ack(&middle), &json!({}), None).await;
    assert_problem(&r, 404, "a member");
    let r = get(&app, Some(&p.manager), &list("?state=open")).await;
    assert_eq!(
        ids(&r),
        [middle.as_str()],
        "the refused acks changed nothing"
    );
    let n = app.count("SELECT COUNT(*) AS n FROM alarms WHERE acknowledged_by IS NOT NULL");
    assert_eq!(n, 1);
});
