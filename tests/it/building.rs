//! The building follows the bookings: presence check-in, no-show release, climate, privacy.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use chrono::{NaiveDateTime, Utc};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};
use spazi::db::access::{AccessLogRow, ClimateRow};
use spazi::domain::Role;
use tokio::sync::mpsc;

use crate::email::{booking_calendar, property, ReceivedMail, SmtpSink};
use crate::helpers::{spawn_with, Backend, TestApp, TestUser};
use crate::on_both;
use crate::telemetry::{device, now_ms, rig, wait, Broker};

fn minutes(n: i64) -> chrono::Duration {
    chrono::Duration::minutes(n)
}

/// A booking's status as its member sees it.
async fn status_of(app: &TestApp, user: &TestUser, id: &str) -> String {
    let (status, body) = app
        .get_json(&format!("/api/v1/bookings/{id}"), Some(&user.token))
        .await;
    assert_eq!(status, 200, "GET booking {id}: {body}");
    body["status"]
        .as_str()
        .unwrap_or_else(|| panic!("no status in {body}"))
        .to_string()
}

/// Polls the booking until it shows `wanted`; the booking as last seen.
async fn wait_status(app: &TestApp, user: &TestUser, id: &str, wanted: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = app
            .get_json(&format!("/api/v1/bookings/{id}"), Some(&user.token))
            .await;
        assert_eq!(status, 200, "GET booking {id}: {body}");
        if body["status"] == wanted {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "booking {id} never became {wanted}; it is {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Minutes of the organization's allowance in use, over all months.
fn allowance_used(app: &TestApp, org: &str) -> i64 {
    app.count(&format!(
        "SELECT CAST(COALESCE(SUM(used_minutes), 0) AS BIGINT) AS n \
         FROM allowance_usage WHERE organization_id = '{org}'"
    ))
}

fn presence(resource: &str, seq: i64) -> (String, String) {
    (
        format!("spazi/v1/bologna/{resource}-pres/tele/presence"),
        format!(
            r#"{{"v":1,"ts":{},"seq":{seq},"m":{{"occupied":true}}}}"#,
            now_ms()
        ),
    )
}

/// A header decoded from RFC 2047 encoded words (base64 or quoted-printable).
fn decode_header(raw: &str) -> String {
    let mut out = String::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut last_encoded = false;
    for word in raw.split_whitespace() {
        let encoded = word
            .strip_prefix("=?")
            .and_then(|w| w.strip_suffix("?="))
            .and_then(|w| {
                let mut p = w.splitn(3, '?');
                let (_charset, enc, text) = (p.next()?, p.next()?, p.next()?);
                if enc.eq_ignore_ascii_case("b") {
                    base64::engine::general_purpose::STANDARD.decode(text).ok()
                } else if enc.eq_ignore_ascii_case("q") {
                    let mut bytes = Vec::new();
                    let raw = text.as_bytes();
                    let mut i = 0;
                    while i < raw.len() {
                        match raw[i] {
                            b'_' => bytes.push(b' '),
                            b'=' if i + 2 < raw.len() => {
                                let hex = std::str::from_utf8(&raw[i + 1..i + 3]).ok()?;
                                bytes.push(u8::from_str_radix(hex, 16).ok()?);
                                i += 2;
                            }
                            c => bytes.push(c),
                        }
                        i += 1;
                    }
                    Some(bytes)
                } else {
                    None
                }
            });
        match encoded {
            Some(bytes) => {
                if !last_encoded && !out.is_empty() {
                    out.push(' ');
                }
                pending.extend(bytes);
                last_encoded = true;
            }
            None => {
                if !pending.is_empty() {
                    out.push_str(&String::from_utf8_lossy(&pending));
                    pending.clear();
                }
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(word);
                last_encoded = false;
            }
        }
    }
    out.push_str(&String::from_utf8_lossy(&pending));
    out
}

/// An MQTT client that records what arrives on `filter`.
pub struct Watcher {
    rx: mpsc::UnboundedReceiver<(String, Value)>,
    _client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Watcher {
    pub async fn start(port: u16, filter: &str) -> Watcher {
        let id = format!("building-watch-{}", uuid::Uuid::new_v4().simple());
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30))
            .set_clean_session(true)
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        let (tx, rx) = mpsc::unbounded_channel();
        let (acked_tx, acked_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut acked = Some(acked_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(a) = acked.take() {
                            let _ = a.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let body: Value = serde_json::from_slice(&p.payload).unwrap_or_else(|e| {
                            panic!("{} carried no JSON ({e}): {:?}", p.topic, p.payload)
                        });
                        let _ = tx.send((p.topic.clone(), body));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), acked_rx)
            .await
            .expect("SUBACK in time")
            .expect("SUBACK");
        Watcher {
            rx,
            _client: client,
            task,
        }
    }

    /// Everything that arrives within `window`.
    pub async fn collect(&mut self, window: Duration) -> Vec<(String, Value)> {
        let deadline = tokio::time::Instant::now() + window;
        let mut got = Vec::new();
        while let Ok(Some(m)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            got.push(m);
        }
        got
    }

    /// What arrives until `done` holds for what was collected (or `timeout` passes).
    async fn collect_until(
        &mut self,
        timeout: Duration,
        done: impl Fn(&[(String, Value)]) -> bool,
    ) -> Vec<(String, Value)> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut got = Vec::new();
        while !done(&got) {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(m)) => got.push(m),
                _ => break,
            }
        }
        got
    }
}

fn setpoint_topic(env: &str) -> String {
    format!("spazi/v1/bologna/{env}/cmd/setpoint")
}

/// The messages of `got` on `topic`.
fn on_topic<'a>(got: &'a [(String, Value)], topic: &str) -> Vec<&'a Value> {
    got.iter()
        .filter(|(t, _)| t == topic)
        .map(|(_, b)| b)
        .collect()
}

/// A setpoint command as the contract has it: fresh, expiring 15 minutes later, with a nonce.
fn assert_setpoint(body: &Value, mode: &str, t_c: f64, lights: &str) {
    assert_eq!(body["v"], 1, "{body}");
    assert_eq!(body["m"]["mode"], mode, "{body}");
    assert_eq!(body["m"]["t_c"].as_f64(), Some(t_c), "{body}");
    assert_eq!(body["m"]["lights"], lights, "{body}");
    let ts = body["ts"].as_i64().expect("ts");
    assert!((now_ms() - ts).abs() < 30_000, "stale ts in {body}");
    assert_eq!(body["exp"].as_i64(), Some(ts + 15 * 60_000), "{body}");
    assert!(
        body["nonce"].as_str().is_some_and(|n| n.len() >= 16),
        "{body}"
    );
}

/// The climate commands logged for a zone, oldest first.
fn climate_log(app: &TestApp, zone: &str) -> Vec<ClimateRow> {
    let since = Utc::now().naive_utc() - chrono::Duration::days(1);
    let mut rows = app
        .state
        .db
        .run_blocking(move |c| spazi::db::access::climate_history(c, "bologna", since, 100_000))
        .expect("climate history");
    rows.retain(|r| r.zone_id == zone);
    rows.reverse();
    rows
}

// a) Sensor-fused check-in.

async fn presence_on_a_booked_desk_checks_the_booking_in(backend: Backend) {
    let rig = rig(backend, Broker::Embedded, |c| c).await;
    let app = &rig.app;
    let org = app.create_org("Presenza Srl", 100);
    let member = app.user(Role::Member, Some(&org), &[]).await;
    let now = Utc::now();
    let booked = app
        .store_booking(
            &member,
            Some(&org),
            "bologna-desk-001",
            now - minutes(5),
            now + minutes(55),
            60,
        )
        .await;
    let neighbour = app
        .store_booking(
            &member,
            Some(&org),
            "bologna-desk-002",
            now - minutes(5),
            now + minutes(55),
            60,
        )
        .await;
    let later = app
        .store_booking(
            &member,
            Some(&org),
            "bologna-desk-004",
            now + minutes(120),
            now + minutes(180),
            60,
        )
        .await;
    assert_eq!(status_of(app, &member, &booked.id).await, "confirmed");

    // Someone sits at an unbooked desk and at the desk booked two hours from now, then at the
    // booked one.
    let sensors = device(rig.port, "building-presence-sensors", None);
    sensors
        .send_all(
            &[
                presence("bologna-desk-003", 1),
                presence("bologna-desk-004", 1),
                presence("bologna-desk-001", 1),
            ],
            3,
        )
        .await;
    let seen = wait_status(app, &member, &booked.id, "checked_in").await;
    let at = seen["checked_in_at"]
        .as_str()
        .unwrap_or_else(|| panic!("no checked_in_at in {seen}"));
    let at = chrono::DateTime::parse_from_rfc3339(at).expect("RFC 3339");
    assert!(
        (at.with_timezone(&Utc) - Utc::now()).num_seconds().abs() < 30,
        "{seen}"
    );

    // The others are untouched: the neighbour's desk sensed nobody, the later booking's window
    // has not opened, and the empty desk has no booking to check in.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(status_of(app, &member, &neighbour.id).await, "confirmed");
    assert_eq!(status_of(app, &member, &later.id).await, "confirmed");
    assert_eq!(
        app.count("SELECT COUNT(*) AS n FROM bookings WHERE status = 'checked_in'"),
        1
    );

    // More presence on the checked-in desk changes nothing.
    sensors
        .send_all(&[presence("bologna-desk-001", 2)], 4)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = wait_status(app, &member, &booked.id, "checked_in").await;
    assert_eq!(again["checked_in_at"], seen["checked_in_at"]);
}

on_both!(presence_checks_in, |backend| async move {
    presence_on_a_booked_desk_checks_the_booking_in(backend).await
});

/// Back-to-back bookings on one desk: presence in the last minutes of the first checks in the
/// first, never the next one (whose check-in window is already open).
async fn presence_at_a_booking_boundary_checks_in_the_current_booking(backend: Backend) {
    let rig = rig(backend, Broker::Embedded, |c| c).await;
    let app = &rig.app;
    let org = app.create_org("Confine Srl", 100);
    let member = app.user(Role::Member, Some(&org), &[]).await;
    let now = Utc::now();
    let desks: Vec<String> = (11..19).map(|n| format!("bologna-desk-{n:03}")).collect();
    let mut pairs = Vec::new();
    for desk in &desks {
        let current = app
            .store_booking(
                &member,
                Some(&org),
                desk,
                now - minutes(10),
                now + minutes(5),
                15,
            )
            .await;
        let next = app
            .store_booking(
                &member,
                Some(&org),
                desk,
                now + minutes(5),
                now + minutes(65),
                60,
            )
            .await;
        pairs.push((current, next));
    }
    let sensors = device(rig.port, "boundary-presence-sensors", None);
    let readings: Vec<_> = desks.iter().map(|d| presence(d, 1)).collect();
    sensors.send_all(&readings, readings.len()).await;
    for (current, _) in &pairs {
        wait_status(app, &member, &current.id, "checked_in").await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for (_, next) in &pairs {
        assert_eq!(status_of(app, &member, &next.id).await, "confirmed");
    }
}

on_both!(presence_at_a_boundary, |backend| async move {
    presence_at_a_booking_boundary_checks_in_the_current_booking(backend).await
});

// b) No-show release.

async fn app_mailing_to(backend: Backend, sink: &SmtpSink) -> TestApp {
    let port = sink.port;
    spawn_with(backend, move |mut c| {
        c.mail_url = format!("smtp://127.0.0.1:{port}");
        c
    })
    .await
}

async fn quote_conflicts(
    app: &TestApp,
    user: &TestUser,
    resource: &str,
    from: &str,
    to: &str,
) -> Vec<Value> {
    let (status, quote) = app
        .post_json(
            "/api/v1/bookings/quote",
            Some(&user.token),
            &json!({"resource_id": resource, "starts_at": from, "ends_at": to}),
        )
        .await;
    assert_eq!(status, 200, "{quote}");
    quote["conflicts"]
        .as_array()
        .unwrap_or_else(|| panic!("no conflicts in {quote}"))
        .clone()
}

async fn no_shows_are_released(backend: Backend) {
    let sink = SmtpSink::start().await;
    let app = app_mailing_to(backend, &sink).await;
    let org = app.create_org("Assenti SpA", 100);
    let member = app.user(Role::Member, Some(&org), &[]).await;
    let colleague = app.user(Role::Member, Some(&org), &[]).await;
    let now = Utc::now();
    let (start, end) = (now - minutes(20), now + minutes(40));
    let absent = app
        .store_booking(&member, Some(&org), "bologna-desk-010", start, end, 60)
        .await;
    let recent = app
        .store_booking(
            &colleague,
            Some(&org),
            "bologna-desk-011",
            now - minutes(10),
            now + minutes(50),
            60,
        )
        .await;
    let present = app
        .store_booking(&colleague, Some(&org), "bologna-desk-012", start, end, 60)
        .await;
    let (status, body) = app
        .post_json(
            &format!("/api/v1/bookings/{}/check-in", present.id),
            Some(&colleague.token),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "check-in: {body}");
    assert_eq!(body["status"], "checked_in");

    let released = wait_status(&app, &member, &absent.id, "released").await;
    assert_eq!(released["id"], absent.id.as_str());
    assert_eq!(released["checked_in_at"], Value::Null);
    // Too late to check in now.
    let (status, body) = app
        .post_json(
            &format!("/api/v1/bookings/{}/check-in", absent.id),
            Some(&member.token),
            &json!({}),
        )
        .await;
    assert_eq!(status, 409, "check-in of a released booking: {body}");
    assert_eq!(status_of(&app, &member, &absent.id).await, "released");

    // The allowance of the released hour is back; the other two stay charged.
    assert_eq!(allowance_used(&app, &org), 120);

    // The desk is free again for that slot.
    let (from, to) = (
        (now - minutes(5)).to_rfc3339(),
        (now + minutes(30)).to_rfc3339(),
    );
    assert!(
        quote_conflicts(&app, &member, "bologna-desk-010", &from, &to)
            .await
            .is_empty(),
        "the released desk still shows a conflict"
    );
    assert_eq!(
        quote_conflicts(&app, &member, "bologna-desk-012", &from, &to)
            .await
            .len(),
        1,
        "the checked-in desk must stay taken"
    );
    let walk_in = app
        .store_booking(
            &colleague,
            Some(&org),
            "bologna-desk-010",
            now - minutes(5),
            now + minutes(30),
            35,
        )
        .await;
    assert_eq!(status_of(&app, &colleague, &walk_in.id).await, "confirmed");

    // The member is told, with a calendar cancellation of the same event.
    let mail: ReceivedMail = sink
        .wait_for(|m| m.is_to(&member.email), Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("no release mail; {}", sink.summary()));
    let subject = decode_header(&mail.header("subject").unwrap_or_default());
    assert!(subject.contains("Booking released"), "subject {subject:?}");
    let text = mail.text();
    assert!(
        text.contains("released automatically") && text.contains("grace period"),
        "{text}"
    );
    let lines = booking_calendar(&mail, "CANCEL");
    let uid = format!("booking-{}@spazi", absent.id);
    assert_eq!(property(&lines, "UID").as_deref(), Some(uid.as_str()));
    assert_eq!(property(&lines, "STATUS").as_deref(), Some("CANCELLED"));
    let res = app
        .client
        .get(app.url(&format!("/api/v1/bookings/{}/ics", absent.id)))
        .bearer_auth(&member.token)
        .send()
        .await
        .expect("ics");
    assert_eq!(res.status().as_u16(), 200);
    let ics = res.text().await.expect("ics body");
    assert!(ics.contains(&format!("UID:{uid}")), "{ics}");

    // A booking 10 minutes in is still within its grace; a checked-in one is never released.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(status_of(&app, &colleague, &recent.id).await, "confirmed");
    assert_eq!(status_of(&app, &colleague, &present.id).await, "checked_in");
    assert_eq!(allowance_used(&app, &org), 155);
    assert!(
        !sink.received().iter().any(|m| m.is_to(&colleague.email)),
        "the colleague was mailed: {}",
        sink.summary()
    );
    assert_eq!(
        sink.received()
            .iter()
            .filter(|m| m.is_to(&member.email))
            .count(),
        1,
        "{}",
        sink.summary()
    );
}

on_both!(no_show_release, |backend| async move {
    no_shows_are_released(backend).await
});

async fn a_site_with_a_longer_grace_keeps_the_booking(backend: Backend) {
    let app = crate::helpers::spawn(backend).await;
    let org = app.create_org("Pazienti Srl", 100);
    let member = app.user(Role::Member, Some(&org), &[]).await;
    app.state
        .db
        .run_blocking(|c| {
            use diesel::RunQueryDsl;
            diesel::sql_query("UPDATE sites SET no_show_grace_minutes = 30 WHERE id = 'bologna'")
                .execute(c)
                .map_err(spazi::db::DbError::from)
        })
        .expect("set grace");
    app.state.replace_directory(
        app.state
            .db
            .run_blocking(spazi::db::network::Directory::load)
            .expect("directory"),
    );
    assert_eq!(
        app.state
            .directory()
            .get("bologna")
            .expect("bologna")
            .site
            .no_show_grace_minutes,
        30
    );
    let now = Utc::now();
    let kept = app
        .store_booking(
            &member,
            Some(&org),
            "bologna-desk-020",
            now - minutes(20),
            now + minutes(40),
            60,
        )
        .await;
    let late = app
        .store_booking(
            &member,
            Some(&org),
            "bologna-desk-021",
            now - minutes(35),
            now + minutes(25),
            60,
        )
        .await;
    // Elsewhere the default grace of 15 minutes still applies.
    let milano = app
        .state
        .directory()
        .get("milano")
        .and_then(|s| {
            s.resources
                .iter()
                .find(|r| r.kind == spazi::domain::ResourceKind::Desk)
                .map(|r| r.resource.id.clone())
        })
        .expect("a desk at Milano");
    let elsewhere = app
        .store_booking(
            &member,
            Some(&org),
            &milano,
            now - minutes(20),
            now + minutes(40),
            60,
        )
        .await;
    wait_status(&app, &member, &late.id, "released").await;
    wait_status(&app, &member, &elsewhere.id, "released").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(status_of(&app, &member, &kept.id).await, "confirmed");
    assert_eq!(allowance_used(&app, &org), 60);
}

on_both!(longer_grace, |backend| async move {
    a_site_with_a_longer_grace_keeps_the_booking(backend).await
});

// c) Setback and pre-conditioning.

async fn zones_follow_their_bookings(backend: Backend) {
    let rig = rig(backend, Broker::Embedded, |c| c).await;
    let app = &rig.app;
    let mut setpoints = Watcher::start(rig.port, "spazi/v1/bologna/+/cmd/setpoint").await;
    let (meeting, offices, events) = ("bologna-meeting", "bologna-offices", "bologna-events");
    // The first pass after startup commands every zone; let it finish and forget it.
    assert!(
        wait(Duration::from_secs(15), || [meeting, offices, events]
            .iter()
            .all(|z| !climate_log(app, z).is_empty()))
        .await,
        "the startup climate pass never logged Bologna's zones"
    );
    setpoints.collect(Duration::from_millis(1500)).await;
    for zone in [meeting, offices, events] {
        let log = climate_log(app, zone);
        assert_eq!(log.len(), 1, "{zone}: {log:?}");
        assert_eq!(log[0].mode, "eco", "{zone}: {log:?}");
        assert_eq!(log[0].t_c, 16.0);
        assert!(!log[0].lights);
        assert_eq!(log[0].device_id, format!("{zone}-env"));
    }

    let org = app.create_org("Clima Srl", 100);
    let member = app.user(Role::Member, Some(&org), &[]).await;
    let now = Utc::now();
    let soon = app
        .store_booking(
            &member,
            Some(&org),
            "bologna-room-01",
            now + minutes(20),
            now + minutes(80),
            60,
        )
        .await;
    app.store_booking(
        &member,
        Some(&org),
        "bologna-office-01",
        now - minutes(10),
        now + minutes(50),
        60,
    )
    .await;
    // A booking two hours ahead is too far off to pre-condition anything.
    app.store_booking(
        &member,
        Some(&org),
        "bologna-event-01",
        now + minutes(120),
        now + minutes(180),
        60,
    )
    .await;

    let (meeting_t, offices_t) = (
        setpoint_topic(&format!("{meeting}-env")),
        setpoint_topic(&format!("{offices}-env")),
    );
    let mut got = setpoints
        .collect_until(Duration::from_secs(10), |g| {
            !on_topic(g, &meeting_t).is_empty() && !on_topic(g, &offices_t).is_empty()
        })
        .await;
    // A few more passes: nothing changes, so nothing more is sent.
    got.extend(setpoints.collect(Duration::from_secs(3)).await);
    let topics: BTreeMap<&str, usize> = got.iter().fold(BTreeMap::new(), |mut m, (t, _)| {
        *m.entry(t.as_str()).or_default() += 1;
        m
    });
    assert_eq!(
        topics,
        BTreeMap::from([(meeting_t.as_str(), 1), (offices_t.as_str(), 1)]),
        "{got:?}"
    );
    let pre = on_topic(&got, &meeting_t)[0];
    assert_setpoint(pre, "precondition", 21.0, "off");
    let comfort = on_topic(&got, &offices_t)[0];
    assert_setpoint(comfort, "comfort", 21.0, "on");
    let log = climate_log(app, meeting);
    assert_eq!(
        log.iter().map(|r| r.mode.as_str()).collect::<Vec<_>>(),
        ["eco", "precondition"]
    );
    assert_eq!(log[1].nonce, pre["nonce"].as_str().unwrap());
    assert_eq!(log[1].device_id, "bologna-meeting-env");
    assert_eq!(climate_log(app, events).len(), 1, "events stays in eco");

    // The meeting is cancelled: the zone goes back to eco, once.
    let (status, body) = app
        .post_json(
            &format!("/api/v1/bookings/{}/cancel", soon.id),
            Some(&member.token),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "cancel: {body}");
    let mut got = setpoints
        .collect_until(Duration::from_secs(10), |g| {
            !on_topic(g, &meeting_t).is_empty()
        })
        .await;
    got.extend(setpoints.collect(Duration::from_secs(3)).await);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, meeting_t);
    assert_setpoint(&got[0].1, "eco", 16.0, "off");
    let log = climate_log(app, meeting);
    assert_eq!(
        log.iter().map(|r| r.mode.as_str()).collect::<Vec<_>>(),
        ["eco", "precondition", "eco"]
    );
    assert_eq!(
        climate_log(app, offices)
            .iter()
            .map(|r| (r.mode.as_str(), r.lights))
            .collect::<Vec<_>>(),
        [("eco", false), ("comfort", true)]
    );
}

on_both!(climate_follows_bookings, |backend| async move {
    zones_follow_their_bookings(backend).await
});

// d) Privacy.

fn log_row(at: NaiveDateTime, decision: &str, booking: &str, user: &str) -> AccessLogRow {
    AccessLogRow {
        id: uuid::Uuid::now_v7().to_string(),
        site_id: "bologna".into(),
        door_id: "bologna-door-main".into(),
        zone_id: None,
        at,
        badge_ts: Some(at),
        badge_seq: Some(7),
        credential_sha256: Some("ab".repeat(32)),
        booking_id: Some(booking.into()),
        user_id: Some(user.into()),
        decision: decision.into(),
        reason: (decision == "denied").then(|| "expired".to_string()),
        nonce: Some(uuid::Uuid::now_v7().simple().to_string()),
        latency_us: 420,
        anonymised: false,
    }
}

fn access_log(app: &TestApp) -> Vec<AccessLogRow> {
    let from = Utc::now().naive_utc() - chrono::Duration::days(400);
    let to = Utc::now().naive_utc() + chrono::Duration::days(1);
    app.state
        .db
        .run_blocking(move |c| spazi::db::access::log(c, "bologna", from, to, None, 1000))
        .expect("access log")
}

fn badge_bodies(app: &TestApp) -> BTreeMap<i64, (String, String)> {
    #[derive(diesel::QueryableByName)]
    struct Ev {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        seq: i64,
        #[diesel(sql_type = diesel::sql_types::Text)]
        kind: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        body: String,
    }
    app.state
        .db
        .run_blocking(|c| {
            use diesel::RunQueryDsl;
            diesel::sql_query("SELECT seq, kind, body FROM device_events")
                .load::<Ev>(c)
                .map_err(spazi::db::DbError::from)
        })
        .expect("events")
        .into_iter()
        .map(|e| (e.seq, (e.kind, e.body)))
        .collect()
}

async fn personal_data_is_anonymised_after_its_period(backend: Backend) {
    // Raw events are kept long here so that only the personal-data rule acts on them.
    let app = spawn_with(backend, |mut c| {
        c.telemetry.raw_retention_days = 3650;
        c
    })
    .await;
    let org = app.create_org("Riservata Srl", 100);
    let member = app.user(Role::Member, Some(&org), &[]).await;
    let now = Utc::now();
    let old_booking = app
        .store_booking(
            &member,
            Some(&org),
            "bologna-desk-030",
            now - chrono::Duration::days(100),
            now - chrono::Duration::days(100) + minutes(60),
            60,
        )
        .await;
    let new_booking = app
        .store_booking(
            &member,
            Some(&org),
            "bologna-desk-031",
            now - chrono::Duration::days(10),
            now - chrono::Duration::days(10) + minutes(60),
            60,
        )
        .await;
    let (old_at, new_at) = (
        (now - chrono::Duration::days(91)).naive_utc(),
        (now - chrono::Duration::days(89)).naive_utc(),
    );
    let mut rows = vec![
        log_row(old_at, "granted", &old_booking.id, &member.id),
        log_row(old_at, "denied", &old_booking.id, &member.id),
        log_row(new_at, "granted", &new_booking.id, &member.id),
    ];
    rows.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
    let written = rows.clone();
    app.state
        .db
        .run_blocking(move |c| spazi::db::access::log_decisions(c, &written))
        .expect("log");
    let door = app
        .state
        .fleet
        .get("bologna-door-main")
        .expect("the main door")
        .num;
    let badge = format!(r#"{{"credential_sha256":"{}"}}"#, "cd".repeat(32));
    let events = [
        (1, old_at, "badge", badge.as_str()),
        (2, new_at, "badge", badge.as_str()),
        (3, old_at, "door", r#"{"open":true}"#),
    ];
    for (seq, at, kind, body) in events {
        let sql = format!(
            "INSERT INTO device_events (device, seq, ts, kind, body) VALUES ({door}, {seq}, {}, '{kind}', '{body}')",
            at.and_utc().timestamp_millis()
        );
        app.state
            .db
            .run_blocking(move |c| {
                use diesel::RunQueryDsl;
                diesel::sql_query(sql)
                    .execute(c)
                    .map_err(spazi::db::DbError::from)
            })
            .expect("event");
    }

    spazi::jobs::retention::pass(&app.state.db, 3650, 90).await;

    let log = access_log(&app);
    assert_eq!(log.len(), 3, "{log:?}");
    for (before, after) in rows.iter().zip(&log) {
        assert_eq!(before.id, after.id);
        // The statistics keep what happened where and when.
        assert_eq!(after.decision, before.decision);
        assert_eq!(after.reason, before.reason);
        assert_eq!(after.door_id, before.door_id);
        assert_eq!(after.site_id, before.site_id);
        assert_eq!(
            after.at.and_utc().timestamp_millis() / 1000,
            before.at.and_utc().timestamp_millis() / 1000
        );
        if before.at == old_at {
            assert!(after.anonymised, "{after:?}");
            assert_eq!(after.credential_sha256, None, "{after:?}");
            assert_eq!(after.booking_id, None, "{after:?}");
            assert_eq!(after.user_id, None, "{after:?}");
        } else {
            assert!(!after.anonymised, "{after:?}");
            assert_eq!(after.credential_sha256, before.credential_sha256);
            assert_eq!(after.booking_id, before.booking_id);
            assert_eq!(after.user_id, before.user_id);
        }
    }
    let bodies = badge_bodies(&app);
    assert_eq!(bodies.len(), 3, "{bodies:?}");
    assert_eq!(bodies[&1], ("badge".to_string(), "{}".to_string()));
    assert_eq!(bodies[&2], ("badge".to_string(), badge.clone()));
    assert_eq!(
        bodies[&3],
        ("door".to_string(), r#"{"open":true}"#.to_string())
    );
    // The old booking's door credential is gone; the booking itself and the recent credential stay.
    let credentials = |id: &str| {
        app.count(&format!(
            "SELECT COUNT(*) AS n FROM access_credentials WHERE booking_id = '{id}'"
        ))
    };
    assert_eq!(credentials(&old_booking.id), 0);
    assert_eq!(credentials(&new_booking.id), 1);
    let (status, _) = app
        .get_json(
            &format!("/api/v1/bookings/{}", old_booking.id),
            Some(&member.token),
        )
        .await;
    assert_eq!(status, 200);

    // A second pass finds nothing more to do and changes nothing.
    spazi::jobs::retention::pass(&app.state.db, 3650, 90).await;
    assert_eq!(access_log(&app), log);
    assert_eq!(badge_bodies(&app), bodies);
}

on_both!(privacy_retention, |backend| async move {
    personal_data_is_anonymised_after_its_period(backend).await
});

// e) The building over HTTP: occupancy now, utilisation over time, the access log.

async fn occupancy_shows_who_is_where(backend: Backend) {
    let rig = rig(backend, Broker::Embedded, |c| c).await;
    let app = &rig.app;
    let org = app.create_org("Occupata Srl", 100);
    let member = app.user(Role::Member, Some(&org), &[]).await;
    let manager = app.user(Role::SiteManager, None, &["bologna"]).await;
    let other_manager = app.user(Role::SiteManager, None, &["milano"]).await;
    let admin = app.user(Role::NetworkAdmin, None, &[]).await;
    let now = Utc::now();
    let seated = app
        .store_booking(
            &member,
            Some(&org),
            "bologna-desk-050",
            now - minutes(5),
            now + minutes(55),
            60,
        )
        .await;
    let away = app
        .store_booking(
            &member,
            Some(&org),
            "bologna-desk-051",
            now - minutes(5),
            now + minutes(55),
            60,
        )
        .await;
    let sensors = device(rig.port, "building-occupancy-sensors", None);
    sensors
        .send_all(
            &[
                presence("bologna-desk-050", 1),
                presence("bologna-desk-052", 1),
            ],
            2,
        )
        .await;
    wait_status(app, &member, &seated.id, "checked_in").await;

    let path = "/api/v1/sites/bologna/occupancy";
    let zone_050 = app
        .state
        .directory()
        .resource("bologna-desk-050")
        .expect("desk")
        .zone
        .id
        .clone();
    // The zone with someone in it is in comfort soon after.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (status, body) = app.get_json(path, Some(&manager.token)).await;
        assert_eq!(status, 200, "{body}");
        let zone = body["zones"]
            .as_array()
            .expect("zones")
            .iter()
            .find(|z| z["zone_id"] == zone_050.as_str())
            .cloned()
            .expect("the desk's zone");
        if zone["climate_mode"] == "comfort" && body["occupied_resources"] == 2 {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the occupancy never showed the desks occupied and the zone in comfort: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(body["site_id"], "bologna");
    assert_eq!(body["timezone"], "Europe/Rome");
    let resource = |id: &str| {
        body["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .find(|r| r["resource_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} missing from {body}"))
    };
    let d = resource("bologna-desk-050");
    assert_eq!(d["occupied"], true, "{d}");
    assert_eq!(d["booking_id"], seated.id.as_str(), "{d}");
    assert_eq!(d["booking_status"], "checked_in", "{d}");
    assert_eq!(d["ghost"], false, "{d}");
    assert!(d["sensed_at"].is_string(), "{d}");
    let d = resource("bologna-desk-051");
    assert_eq!(d["occupied"], Value::Null, "no reading, nothing known: {d}");
    assert_eq!(d["booking_id"], away.id.as_str(), "{d}");
    assert_eq!(d["booking_status"], "confirmed", "{d}");
    assert_eq!(d["ghost"], false, "{d}");
    let d = resource("bologna-desk-052");
    assert_eq!(d["occupied"], true, "{d}");
    assert_eq!(d["booking_id"], Value::Null, "{d}");
    assert_eq!(d["ghost"], true, "{d}");
    let d = resource("bologna-desk-053");
    assert_eq!(d["occupied"], Value::Null, "{d}");
    assert_eq!(d["booking_id"], Value::Null, "{d}");
    assert_eq!(body["occupied_resources"], 2, "{body}");
    assert_eq!(body["sensed_resources"], 2, "{body}");
    assert_eq!(body["booked_resources"], 2, "{body}");
    assert_eq!(body["checked_in_bookings"], 1, "{body}");
    assert_eq!(body["ghost_resources"], 1, "{body}");
    assert_eq!(body["people"], 2, "{body}");

    // Who may look.
    let (status, admin_view) = app.get_json(path, Some(&admin.token)).await;
    assert_eq!(status, 200, "{admin_view}");
    assert_eq!(admin_view["occupied_resources"], 2);
    for (user, expected) in [(&member, 403), (&other_manager, 403)] {
        let (status, body) = app.get_json(path, Some(&user.token)).await;
        assert_eq!(status, expected, "{body}");
        assert!(body["booking_id"].is_null() && body["resources"].is_null());
    }
    let (status, _) = app.get_json(path, None).await;
    assert_eq!(status, 401);
    let (status, body) = app
        .get_json("/api/v1/sites/atlantide/occupancy", Some(&admin.token))
        .await;
    assert_eq!(status, 404, "{body}");
}

on_both!(occupancy_now, |backend| async move {
    occupancy_shows_who_is_where(backend).await
});

/// Presence samples of one desk's sensor, straight into storage.
fn store_presence(app: &TestApp, resource: &str, samples: &[(i64, bool)]) {
    use spazi::db::telemetry::ReadingRow;
    use spazi::domain::telemetry::Metric;
    let num = app
        .state
        .fleet
        .get(&format!("{resource}-pres"))
        .expect("presence sensor")
        .num;
    let rows: Vec<ReadingRow> = samples
        .iter()
        .enumerate()
        .map(|(i, &(ts, occupied))| ReadingRow {
            minute: ReadingRow::minute_of(ts),
            device: num,
            metric: Metric::Occupied.code(),
            seq: i as i64,
            ts,
            value: if occupied { 1.0 } else { 0.0 },
        })
        .collect();
    app.state
        .db
        .run_blocking(move |c| spazi::db::telemetry::insert_batch(c, &rows, &[]))
        .expect("readings");
}

fn item<'a>(body: &'a Value, key: &str) -> &'a Value {
    body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {body}"))
        .iter()
        .find(|i| i["key"] == key)
        .unwrap_or_else(|| panic!("no item {key} in {body}"))
}

fn hours(v: &Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("no {field} in {v}"))
}

async fn utilisation_compares_bookings_with_presence(backend: Backend) {
    // The release job is slowed down so that the no-show below is released exactly when the
    // test says.
    let app = spawn_with(backend, |mut c| {
        c.telemetry.release_secs = 3600;
        c
    })
    .await;
    let org = app.create_org("Statistica Srl", 100);
    let member = app.user(Role::Member, Some(&org), &[]).await;
    let manager = app.user(Role::SiteManager, None, &["bologna"]).await;
    let admin = app.user(Role::NetworkAdmin, None, &[]).await;
    // The release and completion jobs make their first pass at startup; let it go by before
    // storing bookings that both would act on.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t0 = Utc::now() - chrono::Duration::hours(6);
    let t0 = chrono::DateTime::from_timestamp(t0.timestamp() / 60 * 60, 0).expect("t0");
    let at = |m: i64| t0 + minutes(m);
    let ms = |m: i64| at(m).timestamp_millis();
    let (used, no_show, ghost) = ("bologna-desk-040", "bologna-desk-041", "bologna-desk-042");
    // Booked two hours, there for the middle hour, checked in.
    let kept = app
        .store_booking(&member, Some(&org), used, at(0), at(120), 120)
        .await;
    app.state
        .db
        .run_blocking({
            let id = kept.id.clone();
            let when = at(35).naive_utc();
            move |c| {
                spazi::db::bookings::check_in(c, &id, when)
                    .map_err(|e| spazi::db::DbError::Unavailable(e.to_string()))
            }
        })
        .expect("check in");
    store_presence(
        &app,
        used,
        &[
            (ms(30), true),
            (ms(40), true),
            (ms(50), true),
            (ms(60), true),
            (ms(70), true),
            (ms(80), true),
            (ms(90), false),
        ],
    );
    // Booked an hour, nobody came, released a quarter of an hour in.
    let missed = app
        .store_booking(&member, Some(&org), no_show, at(60), at(120), 60)
        .await;
    app.state
        .db
        .run_blocking({
            let id = missed.id.clone();
            let when = at(75).naive_utc();
            move |c| {
                let mut mail = spazi::db::models::OutboxRow::due("none", "{}".into(), when);
                mail.sent_at = Some(when);
                spazi::db::bookings::release(c, &id, when, &mail)
                    .map_err(|e| spazi::db::DbError::Unavailable(e.to_string()))
            }
        })
        .expect("release");
    // Someone sat at a desk nobody booked for half an hour.
    store_presence(
        &app,
        ghost,
        &[
            (ms(120), true),
            (ms(130), true),
            (ms(140), true),
            (ms(150), false),
        ],
    );

    let (from, to) = (at(0).to_rfc3339(), at(240).to_rfc3339());
    let q = |by: &str| {
        format!(
            "/api/v1/sites/bologna/utilisation?from={}&to={}&by={by}",
            urlencode(&from),
            urlencode(&to)
        )
    };
    let (status, body) = app.get_json(&q("resource"), Some(&manager.token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["by"], "resource");
    let site_resources = app
        .state
        .directory()
        .get("bologna")
        .expect("site")
        .resources
        .len();
    assert_eq!(
        body["items"].as_array().expect("items").len(),
        site_resources
    );
    let u = item(&body, used);
    assert_eq!(hours(u, "booked_hours"), 2.0, "{u}");
    assert_eq!(hours(u, "occupied_hours"), 1.0, "{u}");
    assert_eq!(hours(u, "ghost_hours"), 0.0, "{u}");
    assert_eq!(u["no_shows"], 0, "{u}");
    assert_eq!(hours(u, "no_show_rate"), 0.0, "{u}");
    let n = item(&body, no_show);
    assert_eq!(
        hours(n, "booked_hours"),
        0.25,
        "held until its release: {n}"
    );
    assert_eq!(hours(n, "occupied_hours"), 0.0, "{n}");
    assert_eq!(hours(n, "ghost_hours"), 0.0, "{n}");
    assert_eq!(n["no_shows"], 1, "{n}");
    assert_eq!(hours(n, "no_show_rate"), 1.0, "{n}");
    let g = item(&body, ghost);
    assert_eq!(hours(g, "booked_hours"), 0.0, "{g}");
    assert_eq!(hours(g, "occupied_hours"), 0.5, "{g}");
    assert_eq!(hours(g, "ghost_hours"), 0.5, "{g}");
    assert_eq!(g["no_shows"], 0, "{g}");
    assert_eq!(g["no_show_rate"], Value::Null, "no bookings, no rate: {g}");
    let idle = item(&body, "bologna-desk-043");
    for f in ["booked_hours", "occupied_hours", "ghost_hours"] {
        assert_eq!(hours(idle, f), 0.0, "{idle}");
    }
    let totals = &body["totals"];
    assert_eq!(hours(totals, "booked_hours"), 2.25, "{totals}");
    assert_eq!(hours(totals, "occupied_hours"), 1.5, "{totals}");
    assert_eq!(hours(totals, "ghost_hours"), 0.5, "{totals}");
    assert_eq!(totals["no_shows"], 1, "{totals}");
    assert_eq!(hours(totals, "no_show_rate"), 0.5, "{totals}");

    // By zone: each desk's hours land in its zone.
    let (status, by_zone) = app.get_json(&q("zone"), Some(&admin.token)).await;
    assert_eq!(status, 200, "{by_zone}");
    let dir = app.state.directory();
    let zone_of = |r: &str| dir.resource(r).expect("resource").zone.id.clone();
    let mut expected: BTreeMap<String, (f64, f64, f64, i64)> = BTreeMap::new();
    for (r, b, o, g, ns) in [
        (used, 2.0, 1.0, 0.0, 0),
        (no_show, 0.25, 0.0, 0.0, 1),
        (ghost, 0.0, 0.5, 0.5, 0),
    ] {
        let e = expected.entry(zone_of(r)).or_default();
        e.0 += b;
        e.1 += o;
        e.2 += g;
        e.3 += ns;
    }
    for (zone, (b, o, g, ns)) in &expected {
        let z = item(&by_zone, zone);
        assert_eq!(hours(z, "booked_hours"), *b, "{z}");
        assert_eq!(hours(z, "occupied_hours"), *o, "{z}");
        assert_eq!(hours(z, "ghost_hours"), *g, "{z}");
        assert_eq!(z["no_shows"].as_i64(), Some(*ns), "{z}");
    }
    assert_eq!(by_zone["totals"], body["totals"]);

    // By local day: the days add up to the same totals.
    let (status, by_day) = app.get_json(&q("day"), Some(&manager.token)).await;
    assert_eq!(status, 200, "{by_day}");
    let days = by_day["items"].as_array().expect("items");
    assert!((1..=2).contains(&days.len()), "{by_day}");
    let sum = |f: &str| days.iter().map(|d| hours(d, f)).sum::<f64>();
    assert!((sum("booked_hours") - 2.25).abs() < 1e-9, "{by_day}");
    assert!((sum("occupied_hours") - 1.5).abs() < 1e-9, "{by_day}");
    assert!((sum("ghost_hours") - 0.5).abs() < 1e-9, "{by_day}");
    assert_eq!(
        days.iter()
            .map(|d| d["no_shows"].as_i64().unwrap())
            .sum::<i64>(),
        1
    );
    let first_day = at(0)
        .with_timezone(&chrono_tz::Europe::Rome)
        .date_naive()
        .to_string();
    assert_eq!(days[0]["key"], first_day.as_str(), "{by_day}");

    // Bad requests name the parameter.
    let (status, body) = app.get_json(&q("week"), Some(&manager.token)).await;
    crate::helpers::assert_field_error(status, &body, 422, "by");
    let backwards = format!(
        "/api/v1/sites/bologna/utilisation?from={}&to={}",
        urlencode(&to),
        urlencode(&from)
    );
    let (status, body) = app.get_json(&backwards, Some(&manager.token)).await;
    crate::helpers::assert_field_error(status, &body, 422, "to");
    let same = format!(
        "/api/v1/sites/bologna/utilisation?from={}&to={}",
        urlencode(&from),
        urlencode(&from)
    );
    let (status, body) = app.get_json(&same, Some(&manager.token)).await;
    crate::helpers::assert_field_error(status, &body, 422, "to");
    let (status, body) = app
        .get_json(
            &format!("/api/v1/sites/bologna/utilisation?to={}", urlencode(&to)),
            Some(&manager.token),
        )
        .await;
    crate::helpers::assert_field_error(status, &body, 422, "from");
    let (status, body) = app
        .get_json(
            "/api/v1/sites/bologna/utilisation?from=yesterday&to=today",
            Some(&manager.token),
        )
        .await;
    crate::helpers::assert_field_error(status, &body, 422, "from");

    // Who may look.
    let (status, body) = app.get_json(&q("resource"), Some(&member.token)).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = app
        .get_json(
            &format!(
                "/api/v1/sites/atlantide/utilisation?from={}&to={}",
                urlencode(&from),
                urlencode(&to)
            ),
            Some(&admin.token),
        )
        .await;
    assert_eq!(status, 404, "{body}");
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

on_both!(utilisation_over_time, |backend| async move {
    utilisation_compares_bookings_with_presence(backend).await
});

fn badge(door: &str, seq: i64, credential: &str) -> (String, String) {
    (
        format!("spazi/v1/bologna/{door}/evt/badge"),
        json!({"v": 1, "ts": now_ms(), "seq": seq, "m": {"credential": credential}}).to_string(),
    )
}

async fn the_access_log_shows_door_decisions_to_managers(backend: Backend) {
    let rig = rig(backend, Broker::Embedded, |c| c).await;
    let app = &rig.app;
    let org = app.create_org("Porte Srl", 100);
    let member = app.user(Role::Member, Some(&org), &[]).await;
    let manager = app.user(Role::SiteManager, None, &["bologna"]).await;
    let other_manager = app.user(Role::SiteManager, None, &["milano"]).await;
    let admin = app.user(Role::NetworkAdmin, None, &[]).await;
    let now = Utc::now();
    let valid = app
        .store_booking(
            &member,
            Some(&org),
            "bologna-desk-060",
            now - minutes(5),
            now + minutes(55),
            60,
        )
        .await;
    // A no-show: released by the job, after which its credential opens nothing.
    let gone = app
        .store_booking(
            &member,
            Some(&org),
            "bologna-desk-061",
            now - minutes(20),
            now + minutes(40),
            60,
        )
        .await;
    wait_status(app, &member, &gone.id, "released").await;

    let door = device(rig.port, "building-door-main", None);
    door.send_all(
        &[
            badge("bologna-door-main", 1, &valid.token),
            badge("bologna-door-main", 2, &gone.token),
            badge("bologna-door-main", 3, &format!("spz1.{}", "0".repeat(32))),
        ],
        3,
    )
    .await;
    // The door let the member in, and that checked the booking in.
    wait_status(app, &member, &valid.id, "checked_in").await;

    let (from, to) = (
        urlencode(&(now - minutes(60)).to_rfc3339()),
        urlencode(&(Utc::now() + minutes(1)).to_rfc3339()),
    );
    let path = format!("/api/v1/sites/bologna/access-log?from={from}&to={to}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let page = loop {
        let (status, page) = app.get_json(&path, Some(&manager.token)).await;
        assert_eq!(status, 200, "{page}");
        if page["items"].as_array().map_or(0, Vec::len) >= 3 {
            break page;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the access log never showed the three scans: {page}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // A QoS 1 publish the door's client sends again after a reconnect is logged too, as a replay.
    let replay = |i: &&Value| i["reason"] == "replayed";
    let items: Vec<Value> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|i| !replay(i))
        .cloned()
        .collect();
    assert_eq!(items.len(), 3, "{page}");
    assert_eq!(page["next_cursor"], Value::Null, "{page}");
    let by_seq = |seq: i64| {
        items
            .iter()
            .find(|i| i["badge_seq"] == seq)
            .unwrap_or_else(|| panic!("no scan {seq} in {page}"))
    };
    let granted = by_seq(1);
    assert_eq!(granted["decision"], "granted", "{granted}");
    assert_eq!(granted["door_id"], "bologna-door-main");
    assert_eq!(granted["booking_id"], valid.id.as_str(), "{granted}");
    assert_eq!(granted["user_id"], member.id.as_str(), "{granted}");
    assert_eq!(granted["reason"], Value::Null);
    assert_eq!(granted["anonymised"], false);
    let hash = granted["credential_sha256"].as_str().expect("hash");
    assert_eq!(hash.len(), 64);
    assert!(!page.to_string().contains(&valid.token), "the token leaked");
    let released = by_seq(2);
    assert_eq!(released["decision"], "denied", "{released}");
    assert_eq!(released["reason"], "released", "{released}");
    let unknown = by_seq(3);
    assert_eq!(unknown["decision"], "denied", "{unknown}");
    assert_eq!(unknown["reason"], "unknown_credential", "{unknown}");
    assert_eq!(unknown["booking_id"], Value::Null);

    // One by one, oldest first, with a cursor.
    let mut seen = Vec::new();
    let mut next = format!("{path}&limit=1");
    loop {
        let (status, page) = app.get_json(&next, Some(&admin.token)).await;
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 1, "{page}");
        seen.extend(items.iter().filter(|i| !replay(i)).map(|i| i["id"].clone()));
        match page["next_cursor"].as_str() {
            Some(c) => next = format!("{path}&limit=1&cursor={c}"),
            None => break,
        }
        assert!(seen.len() <= 3 + 10, "the cursor never ends: {seen:?}");
    }
    let all: Vec<Value> = items.iter().map(|i| i["id"].clone()).collect();
    assert_eq!(seen, all);

    // After the retention period the personal fields are gone, the decisions stay.
    let old = log_row(
        (now - chrono::Duration::days(120)).naive_utc(),
        "granted",
        &valid.id,
        &member.id,
    );
    let row = old.clone();
    app.state
        .db
        .run_blocking(move |c| spazi::db::access::log_decisions(c, &[row]))
        .expect("old row");
    spazi::jobs::retention::pass(&app.state.db, 3650, 90).await;
    let (status, page) = app
        .get_json(
            &format!(
                "/api/v1/sites/bologna/access-log?from={}&to={to}",
                urlencode(&(now - chrono::Duration::days(121)).to_rfc3339())
            ),
            Some(&manager.token),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let items: Vec<&Value> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|i| !replay(i))
        .collect();
    assert_eq!(items.len(), 4, "{page}");
    assert_eq!(items[0]["id"], old.id.as_str());
    assert_eq!(items[0]["anonymised"], true);
    assert_eq!(items[0]["decision"], "granted");
    assert_eq!(items[0]["door_id"], "bologna-door-main");
    for f in ["credential_sha256", "booking_id", "user_id"] {
        assert_eq!(items[0][f], Value::Null, "{f} in {}", items[0]);
    }
    assert_eq!(
        items[1]["booking_id"],
        valid.id.as_str(),
        "recent rows keep theirs"
    );

    // Who may look, and bad ranges.
    for user in [&member, &other_manager] {
        let (status, body) = app.get_json(&path, Some(&user.token)).await;
        assert_eq!(status, 403, "{body}");
    }
    let (status, body) = app
        .get_json(
            &format!("/api/v1/sites/bologna/access-log?from={to}&to={from}"),
            Some(&manager.token),
        )
        .await;
    crate::helpers::assert_field_error(status, &body, 422, "to");
    let (status, _) = app
        .get_json("/api/v1/sites/atlantide/access-log", Some(&admin.token))
        .await;
    assert_eq!(status, 404);
}

on_both!(access_log_over_http, |backend| async move {
    the_access_log_shows_door_decisions_to_managers(backend).await
});
