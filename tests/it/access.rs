//! Doors over MQTT: credentials, decisions, grant lists, check-in by the door.
//!
//! A door is a real MQTT client: it publishes `evt/badge` at QoS 1 and listens on its own
//! `cmd/+`, as a reader in a building does. Bookings that must be on now are written with
//! `TestApp::store_booking` (the API refuses past starts), everything else goes through the API.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use spazi::db::access::AccessLogRow;
use spazi::domain::access_control::{CommandRefusal, DoorLock, GrantList, UnlockCommand};
use spazi::domain::{DenyReason, DeviceClass, ResourceKind, Role};
use tokio::sync::mpsc;

use crate::helpers::{spawn, Backend, StoredBooking, TestApp, TestUser};
use crate::on_both;
use crate::telemetry::{now_ms, rig, Broker};

const MINUTE_MS: i64 = 60_000;
/// How long a door waits for the service's answer to a badge before the test gives up.
const ANSWER_WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// Lower-case hex SHA-256, computed here rather than with the crate's own function.
fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn minutes(n: i64) -> chrono::Duration {
    chrono::Duration::minutes(n)
}

/// A spawned task aborted when dropped.
pub(crate) struct Task(tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A command the service sent to a door.
#[derive(Debug, Clone)]
struct Cmd {
    /// `unlock`, `deny`, …
    name: String,
    body: Value,
    /// When the door's client received it, epoch ms.
    received_ms: i64,
}

impl Cmd {
    fn badge_seq(&self) -> Option<i64> {
        self.body["m"]["badge_seq"].as_i64()
    }

    fn unlock_command(&self) -> UnlockCommand {
        UnlockCommand {
            nonce: self.body["nonce"].as_str().expect("nonce").to_owned(),
            exp: self.body["exp"].as_i64().expect("exp"),
            badge_seq: self.body["m"]["badge_seq"].as_i64().expect("badge_seq"),
            duration_s: self.body["m"]["duration_s"].as_i64().expect("duration_s"),
        }
    }
}

/// Connects an MQTT client, subscribes to `filter` at QoS 1 and waits for the SUBACK; every
/// publish it receives is forwarded as `(topic, payload, received at ms)`.
pub(crate) async fn subscriber(
    port: u16,
    client_id: &str,
    filter: &str,
) -> (
    AsyncClient,
    mpsc::UnboundedReceiver<(String, Vec<u8>, i64)>,
    Task,
) {
    let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        .set_max_packet_size(4 << 20, 4 << 20);
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    let (tx, rx) = mpsc::unbounded_channel();
    let (subacked_tx, subacked_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut subacked = Some(subacked_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send((p.topic.clone(), p.payload.to_vec(), now_ms()));
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(s) = subacked.take() {
                        let _ = s.send(());
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    client
        .subscribe(filter, QoS::AtLeastOnce)
        .await
        .expect("queue subscribe");
    tokio::time::timeout(Duration::from_secs(10), subacked_rx)
        .await
        .unwrap_or_else(|_| panic!("{client_id}: the broker never acknowledged {filter}"))
        .expect("subscription acknowledged");
    (client, rx, Task(task))
}

/// A door reader: badges at QoS 1 on `evt/badge`, hears its `cmd/+`.
struct DoorClient {
    site: String,
    id: String,
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<(String, Vec<u8>, i64)>,
    /// Commands received but not yet looked at.
    backlog: Vec<Cmd>,
    next_seq: i64,
    _task: Task,
}

impl DoorClient {
    async fn connect(port: u16, site: &str, door: &str) -> DoorClient {
        let filter = format!("spazi/v1/{site}/{door}/cmd/+");
        let client_id = format!("{door}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let (client, rx, task) = subscriber(port, &client_id, &filter).await;
        DoorClient {
            site: site.to_owned(),
            id: door.to_owned(),
            client,
            rx,
            backlog: Vec::new(),
            next_seq: 1000,
            _task: task,
        }
    }

    fn badge_topic(&self) -> String {
        format!("spazi/v1/{}/{}/evt/badge", self.site, self.id)
    }

    /// Publishes a raw payload on the door's badge topic.
    async fn publish(&self, payload: String) {
        self.client
            .publish(self.badge_topic(), QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish badge");
    }

    fn take_seq(&mut self) -> i64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// A badge message with a fresh `seq` and `ts` = now; returns `(seq, payload)`.
    fn badge_message(&mut self, credential: &str) -> (i64, String) {
        let seq = self.take_seq();
        let payload = json!({"v": 1, "ts": now_ms(), "seq": seq, "m": {"credential": credential}})
            .to_string();
        (seq, payload)
    }

    /// Scans a credential; returns the badge's `seq`.
    async fn badge(&mut self, credential: &str) -> i64 {
        let (seq, payload) = self.badge_message(credential);
        self.publish(payload).await;
        seq
    }

    fn drain(&mut self) {
        while let Ok((topic, payload, received_ms)) = self.rx.try_recv() {
            self.push(topic, payload, received_ms);
        }
    }

    fn push(&mut self, topic: String, payload: Vec<u8>, received_ms: i64) {
        let name = topic.rsplit('/').next().unwrap_or_default().to_owned();
        let body: Value = serde_json::from_slice(&payload)
            .unwrap_or_else(|e| panic!("a command that is not JSON on {topic}: {e}"));
        self.backlog.push(Cmd {
            name,
            body,
            received_ms,
        });
    }

    /// The first command answering badge `seq`, waiting up to [`ANSWER_WAIT`].
    async fn answer(&mut self, seq: i64) -> Cmd {
        let deadline = tokio::time::Instant::now() + ANSWER_WAIT;
        loop {
            self.drain();
            if let Some(i) = self.backlog.iter().position(|c| c.badge_seq() == Some(seq)) {
                return self.backlog.remove(i);
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some((topic, payload, at))) => self.push(topic, payload, at),
                Ok(None) => panic!("{}: the MQTT client stopped", self.id),
                Err(_) => panic!(
                    "{}: no answer to badge {seq} within {ANSWER_WAIT:?}; received {:?}",
                    self.id, self.backlog
                ),
            }
        }
    }

    /// Waits for the answer to `seq` and checks it is a well-formed unlock.
    async fn expect_unlock(&mut self, seq: i64) -> Cmd {
        let cmd = self.answer(seq).await;
        assert_eq!(
            cmd.name, "unlock",
            "{}: badge {seq} was answered with {cmd:?}",
            self.id
        );
        let b = &cmd.body;
        assert_eq!(b["v"], 1, "{b}");
        assert_eq!(b["m"]["badge_seq"], seq, "{b}");
        assert_eq!(b["m"]["duration_s"], 5, "{b}");
        assert!(
            b["nonce"]
                .as_str()
                .is_some_and(|n| !n.is_empty() && n.len() <= 64),
            "{b}"
        );
        let (ts, exp) = (
            b["ts"].as_i64().expect("ts"),
            b["exp"].as_i64().expect("exp"),
        );
        assert!(exp > ts, "exp before ts: {b}");
        assert!(
            exp > cmd.received_ms,
            "the unlock arrived already expired: {b}"
        );
        cmd
    }

    /// Waits for the answer to `seq` and checks it is a deny for `reason`.
    async fn expect_deny(&mut self, seq: i64, reason: &str) -> Cmd {
        let cmd = self.answer(seq).await;
        assert_eq!(
            (cmd.name.as_str(), cmd.body["m"]["reason"].as_str()),
            ("deny", Some(reason)),
            "{}: badge {seq} was answered with {cmd:?}",
            self.id
        );
        let b = &cmd.body;
        assert_eq!(b["v"], 1, "{b}");
        assert!(b["nonce"].as_str().is_some_and(|n| !n.is_empty()), "{b}");
        assert!(b["exp"].as_i64() > b["ts"].as_i64(), "{b}");
        cmd
    }

    /// Everything that arrives within `quiet`, plus the backlog.
    async fn collect_for(&mut self, quiet: Duration) -> Vec<Cmd> {
        tokio::time::sleep(quiet).await;
        self.drain();
        std::mem::take(&mut self.backlog)
    }
}

/// The door of an enclosed zone and a bookable resource in it.
struct ZoneDoor {
    zone: String,
    door: String,
    resource: String,
}

/// The enclosed zones of a site that have a door reader, each with its first resource.
fn zone_doors(app: &TestApp, site: &str) -> Vec<ZoneDoor> {
    let dir = app.state.directory();
    let entry = dir.get(site).expect("site");
    let mut out = Vec::new();
    for d in app.state.fleet.site(site) {
        if d.class != DeviceClass::DoorReader {
            continue;
        }
        let Some(zone) = d.zone_id.clone() else {
            continue;
        };
        let Some(r) = entry.resources.iter().find(|r| r.zone.id == zone) else {
            continue;
        };
        out.push(ZoneDoor {
            zone,
            door: d.id.clone(),
            resource: r.resource.id.clone(),
        });
    }
    assert!(
        out.len() >= 2,
        "{site} should have at least two enclosed zones with a door"
    );
    out
}

/// The entrance reader of a site.
fn main_door(app: &TestApp, site: &str) -> String {
    let door = app
        .state
        .fleet
        .site(site)
        .into_iter()
        .find(|d| d.class == DeviceClass::DoorReader && d.zone_id.is_none())
        .expect("an entrance door reader")
        .id;
    assert_eq!(door, format!("{site}-door-main"));
    door
}

/// A resource of `kind` at a site other than `not_site`.
fn resource_elsewhere(app: &TestApp, not_site: &str, kind: ResourceKind) -> String {
    let dir = app.state.directory();
    dir.sites
        .iter()
        .filter(|s| s.site.id != not_site)
        .flat_map(|s| s.resources.iter())
        .find(|r| r.kind == kind)
        .expect("a resource at another site")
        .resource
        .id
        .clone()
}

/// An organization with plenty of allowance and a member of it.
async fn member(app: &TestApp) -> (String, TestUser) {
    let org = app.create_org(&format!("Acme {}", uuid::Uuid::new_v4().simple()), 500);
    let user = app.user(Role::Member, Some(&org), &[]).await;
    (org, user)
}

/// A booking stored for `user` from `start_min` to `end_min` minutes from now.
async fn booking_at(
    app: &TestApp,
    user: &TestUser,
    org: &str,
    resource: &str,
    start_min: i64,
    end_min: i64,
) -> (StoredBooking, DateTime<Utc>, DateTime<Utc>) {
    let now = Utc::now();
    let (starts, ends) = (now + minutes(start_min), now + minutes(end_min));
    let b = app
        .store_booking(
            user,
            Some(org),
            resource,
            starts,
            ends,
            (end_min - start_min) as i32,
        )
        .await;
    (b, starts, ends)
}

async fn booking_status(app: &TestApp, user: &TestUser, id: &str) -> String {
    let (status, body) = app
        .get_json(&format!("/api/v1/bookings/{id}"), Some(&user.token))
        .await;
    assert_eq!(status, 200, "{body}");
    body["status"].as_str().expect("status").to_owned()
}

async fn wait_status(app: &TestApp, user: &TestUser, id: &str, want: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let status = booking_status(app, user, id).await;
        if status == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "booking {id} is {status}, not {want}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A site's access log from the last hour, oldest first.
async fn access_log(app: &TestApp, site: &str) -> Vec<AccessLogRow> {
    let site = site.to_owned();
    let now = Utc::now().naive_utc();
    app.state
        .db
        .run(move |c| {
            spazi::db::access::log(
                c,
                &site,
                now - chrono::Duration::hours(1),
                now + chrono::Duration::hours(1),
                None,
                10_000,
            )
        })
        .await
        .expect("access log")
}

/// Waits until the site's access log holds at least `n` rows, and returns it.
async fn access_log_with(app: &TestApp, site: &str, n: usize) -> Vec<AccessLogRow> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = access_log(app, site).await;
        if rows.len() >= n {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "the access log of {site} has {} rows, expected {n}: {rows:?}",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sql_execute(app: &TestApp, sql: String) -> usize {
    use diesel::RunQueryDsl;
    app.state
        .db
        .run_blocking(move |c| {
            diesel::sql_query(sql)
                .execute(c)
                .map_err(spazi::db::DbError::from)
        })
        .expect("sql statement")
}

// ---------------------------------------------------------------------------------------------
// 1. Valid credentials open the doors and check the booking in
// ---------------------------------------------------------------------------------------------

async fn valid_credentials_open_doors(backend: Backend, broker: Broker) {
    let rig = rig(backend, broker, |c| c).await;
    let app = &rig.app;
    let site = "bologna";
    let entrance = main_door(app, site);
    let zones = zone_doors(app, site);
    let zone = &zones[0];
    let (org, user) = member(app).await;
    // On for five minutes, for another 55.
    let (b, _, _) = booking_at(app, &user, &org, &zone.resource, -5, 55).await;
    assert_eq!(booking_status(app, &user, &b.id).await, "confirmed");
    assert!(b.token.starts_with("spz1."), "{}", b.token);
    assert!(
        b.pin.len() == 6 && b.pin.bytes().all(|c| c.is_ascii_digit()),
        "{}",
        b.pin
    );

    let mut main = DoorClient::connect(rig.port, site, &entrance).await;
    let mut inner = DoorClient::connect(rig.port, site, &zone.door).await;

    // The QR token at the entrance, then at the zone's door.
    let s1 = main.badge(&b.token).await;
    main.expect_unlock(s1).await;
    let s2 = inner.badge(&b.token).await;
    inner.expect_unlock(s2).await;
    // The PIN at both.
    let s3 = main.badge(&b.pin).await;
    main.expect_unlock(s3).await;
    let s4 = inner.badge(&b.pin).await;
    inner.expect_unlock(s4).await;

    // Nothing else was sent to either door: one answer per badge.
    assert!(main
        .collect_for(Duration::from_millis(300))
        .await
        .is_empty());
    assert!(inner.collect_for(Duration::ZERO).await.is_empty());

    // The door checked the booking in.
    wait_status(app, &user, &b.id, "checked_in", Duration::from_secs(5)).await;
    let (_, body) = app
        .get_json(&format!("/api/v1/bookings/{}", b.id), Some(&user.token))
        .await;
    assert!(body["checked_in_at"].is_string(), "{body}");

    // Four granted rows, each with the credential's SHA-256 and never the credential.
    let rows = access_log_with(app, site, 4).await;
    assert_eq!(rows.len(), 4, "{rows:?}");
    let token_hash = sha256_hex(&b.token);
    let pin_hash = sha256_hex(&b.pin);
    let expected = [
        (&entrance, s1, &token_hash),
        (&zone.door, s2, &token_hash),
        (&entrance, s3, &pin_hash),
        (&zone.door, s4, &pin_hash),
    ];
    for (door, seq, hash) in expected {
        let row = rows
            .iter()
            .find(|r| r.door_id == *door && r.badge_seq == Some(seq))
            .unwrap_or_else(|| panic!("no log row for {door} seq {seq}: {rows:?}"));
        assert_eq!(row.decision, "granted", "{row:?}");
        assert_eq!(row.reason, None, "{row:?}");
        assert_eq!(row.booking_id.as_deref(), Some(b.id.as_str()), "{row:?}");
        assert_eq!(row.user_id.as_deref(), Some(user.id.as_str()), "{row:?}");
        assert_eq!(
            row.credential_sha256.as_deref(),
            Some(hash.as_str()),
            "{row:?}"
        );
        assert_eq!(row.site_id, site);
        assert!(row.latency_us >= 0, "{row:?}");
        assert!(row.nonce.is_some(), "{row:?}");
        assert!(!row.anonymised);
    }
    let zone_rows: Vec<_> = rows.iter().filter(|r| r.door_id == zone.door).collect();
    assert!(zone_rows
        .iter()
        .all(|r| r.zone_id.as_deref() == Some(zone.zone.as_str())));
    for row in &rows {
        let text = format!("{row:?}");
        assert!(
            !text.contains(&b.token) && !text.contains(&format!("\"{}\"", b.pin)),
            "the access log holds a credential: {row:?}"
        );
    }
    let raw = app.count(&format!(
        "SELECT COUNT(*) AS n FROM access_log WHERE credential_sha256 IN ('{}', '{}') \
         OR nonce IN ('{}', '{}')",
        b.token, b.pin, b.token, b.pin
    ));
    assert_eq!(raw, 0, "a credential stored in clear in the access log");

    // The stored badge events keep the hash too, never the credential.
    let db_events = || {
        app.count(&format!(
            "SELECT COUNT(*) AS n FROM device_events WHERE body LIKE '%{token_hash}%' \
             OR body LIKE '%{pin_hash}%'"
        ))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while db_events() < 4 {
        assert!(
            Instant::now() < deadline,
            "the badge events were not stored"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) AS n FROM device_events WHERE body LIKE '%{}%' \
             OR body LIKE '%\"credential\"%'",
            b.token
        )),
        0,
        "a stored badge event holds the credential"
    );
}

on_both!(
    valid_credentials_embedded,
    |b| valid_credentials_open_doors(b, Broker::Embedded)
);
on_both!(valid_credentials_mosquitto, |b| {
    valid_credentials_open_doors(b, Broker::Mosquitto)
});

// ---------------------------------------------------------------------------------------------
// 2. Denials, each with its reason and no unlock
// ---------------------------------------------------------------------------------------------

async fn credentials_are_denied(backend: Backend, broker: Broker) {
    // The no-show release is kept out of the way here (it has its own test below): a past
    // booking nobody checked in to would otherwise turn from expired into released.
    let rig = rig(backend, broker, |mut c| {
        c.telemetry.release_secs = 3600;
        c
    })
    .await;
    let app = &rig.app;
    let site = "bologna";
    let entrance = main_door(app, site);
    let zones = zone_doors(app, site);
    let (org, user) = member(app).await;

    // Ended 20 minutes ago (attended): past the 15-minute grace after the end.
    let (ended, _, _) = booking_at(app, &user, &org, &zones[0].resource, -140, -20).await;
    let n = sql_execute(
        app,
        format!(
            "UPDATE bookings SET status = 'checked_in' WHERE id = '{}'",
            ended.id
        ),
    );
    assert_eq!(n, 1);
    // Starts in two hours: its window opens in 1 h 45 min.
    let (later, _, _) = booking_at(app, &user, &org, &zones[0].resource, 120, 180).await;
    // On now, cancelled through the API below.
    let (cancelled, _, _) = booking_at(app, &user, &org, &zones[1].resource, -5, 55).await;
    // On now, at another site.
    let elsewhere = resource_elsewhere(app, site, ResourceKind::MeetingRoom);
    let (other_site, _, _) = booking_at(app, &user, &org, &elsewhere, -5, 55).await;
    // On now, in the first zone: the second zone's door stays shut.
    let (zoned, _, _) = booking_at(app, &user, &org, &zones[0].resource, 0, 60).await;

    let mut main = DoorClient::connect(rig.port, site, &entrance).await;
    let mut wrong_door = DoorClient::connect(rig.port, site, &zones[1].door).await;
    let mut expect = Vec::new();

    // Expired, by token and by PIN.
    let s = main.badge(&ended.token).await;
    main.expect_deny(s, "expired").await;
    expect.push((s, "expired"));
    let s = main.badge(&ended.pin).await;
    main.expect_deny(s, "expired").await;
    expect.push((s, "expired"));

    // Not yet valid.
    let s = main.badge(&later.token).await;
    main.expect_deny(s, "not_yet_valid").await;
    expect.push((s, "not_yet_valid"));

    // Cancelled through the API, then badged at once: refused immediately.
    let (status, body) = app
        .post_json(
            &format!("/api/v1/bookings/{}/cancel", cancelled.id),
            Some(&user.token),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "cancelled", "{body}");
    let s = main.badge(&cancelled.token).await;
    main.expect_deny(s, "cancelled").await;
    expect.push((s, "cancelled"));
    let s = main.badge(&cancelled.pin).await;
    main.expect_deny(s, "cancelled").await;
    expect.push((s, "cancelled"));

    // A booking at another site.
    let s = main.badge(&other_site.token).await;
    main.expect_deny(s, "wrong_site").await;
    expect.push((s, "wrong_site"));

    // The door of another zone.
    let ws = wrong_door.badge(&zoned.token).await;
    wrong_door.expect_deny(ws, "wrong_zone").await;

    // A credential nobody issued.
    let s = main.badge("spz1.00000000000000000000000000000000").await;
    main.expect_deny(s, "unknown_credential").await;
    expect.push((s, "unknown_credential"));

    // Replayed: the very same message twice opens once.
    let (seq, payload) = main.badge_message(&zoned.token);
    main.publish(payload.clone()).await;
    main.expect_unlock(seq).await;
    main.publish(payload).await;
    main.expect_deny(seq, "replayed").await;
    // And a scan 60 s old.
    let old_seq = main.take_seq();
    main.publish(
        json!({"v": 1, "ts": now_ms() - 60_000, "seq": old_seq,
               "m": {"credential": zoned.token}})
        .to_string(),
    )
    .await;
    main.expect_deny(old_seq, "replayed").await;
    expect.push((old_seq, "replayed"));
    // Or one from 60 s in the future (a recorded scan with a forged clock).
    let future_seq = main.take_seq();
    main.publish(
        json!({"v": 1, "ts": now_ms() + 60_000, "seq": future_seq,
               "m": {"credential": zoned.token}})
        .to_string(),
    )
    .await;
    main.expect_deny(future_seq, "replayed").await;
    expect.push((future_seq, "replayed"));

    // Malformed: empty, not a string, longer than 128 bytes, an unknown field, no `m` at all.
    let mut malformed = Vec::new();
    for m in [
        json!({"credential": ""}),
        json!({"credential": 12345678}),
        json!({"credential": "x".repeat(129)}),
        json!({"credential": zoned.token, "extra": 1}),
        Value::Null,
    ] {
        let seq = main.take_seq();
        let mut msg = json!({"v": 1, "ts": now_ms(), "seq": seq});
        if !m.is_null() {
            msg["m"] = m;
        }
        main.publish(msg.to_string()).await;
        main.expect_deny(seq, "malformed").await;
        malformed.push(seq);
        expect.push((seq, "malformed"));
    }
    // Not JSON at all: no seq to answer, so no answer; the decision is still logged.
    main.publish(format!("{{not json {}", zoned.token)).await;

    // No unlock came for any of these (the one unlock above was the first of the replayed pair).
    let late = main.collect_for(Duration::from_millis(500)).await;
    assert!(late.is_empty(), "unexpected commands: {late:?}");
    assert!(wrong_door.collect_for(Duration::ZERO).await.is_empty());

    // The access log: each denial with its reason; the one grant is the replayed pair's first.
    // The denials listed, the replayed pair, the unanswerable one and the wrong zone.
    let total = expect.len() + 2 + 1 + 1;
    let rows = access_log_with(app, site, total).await;
    assert_eq!(rows.len(), total, "{rows:?}");
    for (seq, reason) in &expect {
        let row = rows
            .iter()
            .find(|r| r.door_id == entrance && r.badge_seq == Some(*seq))
            .unwrap_or_else(|| panic!("no log row for seq {seq}: {rows:?}"));
        assert_eq!(
            (row.decision.as_str(), row.reason.as_deref()),
            ("denied", Some(*reason)),
            "{row:?}"
        );
        assert_eq!(row.booking_id, None, "{row:?}");
    }
    let wz = rows
        .iter()
        .find(|r| r.door_id == zones[1].door)
        .expect("the wrong zone's row");
    assert_eq!(
        (wz.decision.as_str(), wz.reason.as_deref(), wz.badge_seq),
        ("denied", Some("wrong_zone"), Some(ws))
    );
    let pair: Vec<_> = rows.iter().filter(|r| r.badge_seq == Some(seq)).collect();
    assert_eq!(pair.len(), 2, "{pair:?}");
    assert_eq!(
        (pair[0].decision.as_str(), pair[0].reason.as_deref()),
        ("granted", None)
    );
    assert_eq!(
        (pair[1].decision.as_str(), pair[1].reason.as_deref()),
        ("denied", Some("replayed"))
    );
    assert_eq!(
        rows.iter().filter(|r| r.decision == "granted").count(),
        1,
        "{rows:?}"
    );
    // The unanswerable one: denied, malformed, no seq, no nonce.
    let garbage: Vec<_> = rows.iter().filter(|r| r.badge_seq.is_none()).collect();
    assert_eq!(garbage.len(), 1, "{rows:?}");
    assert_eq!(
        (
            garbage[0].decision.as_str(),
            garbage[0].reason.as_deref(),
            garbage[0].nonce.as_deref()
        ),
        ("denied", Some("malformed"), None)
    );
    // Denials are logged by hash too.
    let expired_row = rows
        .iter()
        .find(|r| r.badge_seq == Some(expect[0].0))
        .expect("expired row");
    assert_eq!(
        expired_row.credential_sha256.as_deref(),
        Some(sha256_hex(&ended.token).as_str())
    );
    for row in &rows {
        let text = format!("{row:?}");
        for b in [&ended, &later, &cancelled, &other_site, &zoned] {
            assert!(!text.contains(&b.token), "credential in clear: {row:?}");
        }
    }

    // None of the refused bookings was checked in by its scans.
    assert_eq!(booking_status(app, &user, &later.id).await, "confirmed");
    assert_eq!(booking_status(app, &user, &cancelled.id).await, "cancelled");
}

on_both!(denials_mosquitto, |b| credentials_are_denied(
    b,
    Broker::Mosquitto
));
on_both!(denials_embedded, |b| credentials_are_denied(
    b,
    Broker::Embedded
));

/// A no-show released by the service's own job no longer opens a door.
async fn released_booking_is_denied(backend: Backend) {
    let rig = rig(backend, Broker::Embedded, |c| c).await;
    let app = &rig.app;
    let site = "bologna";
    let entrance = main_door(app, site);
    let zones = zone_doors(app, site);
    let (org, user) = member(app).await;
    // Started 20 minutes ago, nobody came: past the 15-minute grace.
    let (b, _, _) = booking_at(app, &user, &org, &zones[0].resource, -20, 40).await;
    wait_status(app, &user, &b.id, "released", Duration::from_secs(10)).await;

    let mut main = DoorClient::connect(rig.port, site, &entrance).await;
    let mut inner = DoorClient::connect(rig.port, site, &zones[0].door).await;
    let s1 = main.badge(&b.token).await;
    main.expect_deny(s1, "released").await;
    let s2 = inner.badge(&b.pin).await;
    inner.expect_deny(s2, "released").await;
    assert!(main
        .collect_for(Duration::from_millis(300))
        .await
        .is_empty());
    assert!(inner.collect_for(Duration::ZERO).await.is_empty());

    let rows = access_log_with(app, site, 2).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows
        .iter()
        .all(|r| r.decision == "denied" && r.reason.as_deref() == Some("released")));
    // Still released: a refused scan checks nothing in.
    assert_eq!(booking_status(app, &user, &b.id).await, "released");
}

on_both!(released, |b| released_booking_is_denied(b));

// ---------------------------------------------------------------------------------------------
// 3. A late unlock is not executed
// ---------------------------------------------------------------------------------------------

async fn late_unlock_is_dropped(backend: Backend) {
    let rig = rig(backend, Broker::Embedded, |mut c| {
        c.telemetry.unlock_ttl_ms = 100;
        c
    })
    .await;
    let app = &rig.app;
    let site = "bologna";
    let entrance = main_door(app, site);
    let zones = zone_doors(app, site);
    let (org, user) = member(app).await;
    let (b, _, _) = booking_at(app, &user, &org, &zones[0].resource, -5, 55).await;
    let mut door = DoorClient::connect(rig.port, site, &entrance).await;

    // A timely unlock: the door carries it out the moment it arrives, once.
    let s = door.badge(&b.token).await;
    let timely = door.expect_unlock(s).await;
    let cmd = timely.unlock_command();
    assert_eq!(cmd.exp - timely.body["ts"].as_i64().expect("ts"), 100);
    let mut lock = DoorLock::default();
    assert!(!lock.is_unlocked(timely.received_ms));
    assert_eq!(lock.unlock(&cmd, timely.received_ms), Ok(()));
    assert!(lock.is_unlocked(timely.received_ms));
    assert!(lock.is_unlocked(timely.received_ms + 4_999));
    assert!(!lock.is_unlocked(timely.received_ms + 5_000));
    // A redelivery of the same command is not run again.
    assert_eq!(
        lock.unlock(&cmd, timely.received_ms),
        Err(CommandRefusal::Duplicate)
    );

    // A late unlock: received, but processed only after its expiry.
    let s = door.badge(&b.pin).await;
    let late = door.answer(s).await;
    assert_eq!(late.name, "unlock", "{late:?}");
    let cmd = late.unlock_command();
    let wait_ms = (cmd.exp - now_ms()).max(0) as u64 + 50;
    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
    let processed = now_ms();
    assert!(processed > cmd.exp);
    let mut lock = DoorLock::default();
    assert_eq!(lock.unlock(&cmd, processed), Err(CommandRefusal::Expired));
    assert!(!lock.is_unlocked(processed));
    // Exactly at `exp` is too late as well; a moment before is in time.
    let mut lock = DoorLock::default();
    assert_eq!(lock.unlock(&cmd, cmd.exp), Err(CommandRefusal::Expired));
    assert_eq!(lock.unlock(&cmd, cmd.exp - 1), Ok(()));
}

on_both!(late_unlock, |b| late_unlock_is_dropped(b));

// ---------------------------------------------------------------------------------------------
// 4. The grant list a gateway decides from offline
// ---------------------------------------------------------------------------------------------

/// A gateway listening to its site's retained grant list.
struct Gateway {
    rx: mpsc::UnboundedReceiver<(String, Vec<u8>, i64)>,
    latest: Option<(Value, i64)>,
    _client: AsyncClient,
    _task: Task,
}

impl Gateway {
    async fn connect(port: u16, site: &str) -> Gateway {
        let topic = format!("spazi/v1/{site}/{site}-gw/cmd/grants");
        let id = format!(
            "{site}-gw-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let (client, rx, task) = subscriber(port, &id, &topic).await;
        Gateway {
            rx,
            latest: None,
            _client: client,
            _task: task,
        }
    }

    /// The first list (in arrival order, from now on) for which `pred` holds, with its envelope
    /// and when it arrived; panics after `within`.
    async fn until(
        &mut self,
        within: Duration,
        what: &str,
        pred: impl Fn(&GrantList) -> bool,
    ) -> (GrantList, Value, i64) {
        if let Some((body, at)) = &self.latest {
            let list: GrantList = serde_json::from_value(body["m"].clone()).expect("grant list");
            if pred(&list) {
                return (list, body.clone(), *at);
            }
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some((_, payload, at))) => {
                    let body: Value = serde_json::from_slice(&payload).expect("grants JSON");
                    let list: GrantList =
                        serde_json::from_value(body["m"].clone()).unwrap_or_else(|e| {
                            panic!("the grant list does not deserialize: {e}: {body}")
                        });
                    self.latest = Some((body.clone(), at));
                    if pred(&list) {
                        return (list, body, at);
                    }
                }
                Ok(None) => panic!("the gateway's client stopped"),
                Err(_) => panic!(
                    "no grant list {what} within {within:?}; last: {:?}",
                    self.latest.as_ref().map(|l| &l.0)
                ),
            }
        }
    }

    /// Lists that arrive within `quiet`.
    async fn quiet_for(&mut self, quiet: Duration) -> Vec<Value> {
        tokio::time::sleep(quiet).await;
        let mut out = Vec::new();
        while let Ok((_, payload, at)) = self.rx.try_recv() {
            let body: Value = serde_json::from_slice(&payload).expect("grants JSON");
            self.latest = Some((body.clone(), at));
            out.push(body);
        }
        out
    }
}

fn lists(list: &GrantList, hash: &str) -> bool {
    list.grants.iter().any(|g| g.credential_sha256 == hash)
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// A site open round the clock today and tomorrow (local), so a booking through the API an hour
/// from now is within its hours: Bologna unless it is closed.
fn open_site(app: &TestApp) -> String {
    let dir = app.state.directory();
    let today = Utc::now().date_naive();
    let candidates = std::iter::once(dir.get("bologna").expect("bologna").clone())
        .chain(dir.sites.iter().cloned());
    for s in candidates {
        let round_the_clock = (0..7).all(|_| true)
            && [today, today.succ_opt().expect("tomorrow")]
                .iter()
                .all(|d| {
                    s.closure(*d).is_none() && !s.hours.on(chrono::Datelike::weekday(d)).is_empty()
                });
        let large = s.site.size == "large";
        if large && round_the_clock {
            return s.site.id.clone();
        }
    }
    panic!("no large site open today and tomorrow")
}

async fn grant_list_follows_bookings(backend: Backend) {
    let rig = rig(backend, Broker::Embedded, |c| c).await;
    let app = &rig.app;
    let site = open_site(app);
    let entrance = main_door(app, &site);
    let zones = zone_doors(app, &site);
    let (org, user) = member(app).await;
    let mut gw = Gateway::connect(rig.port, &site).await;

    // The list published at start-up, kept retained by the broker.
    let (first, envelope, _) = gw
        .until(Duration::from_secs(5), "at start-up", |_| true)
        .await;
    assert_eq!(envelope["v"], 1);
    assert!(envelope["nonce"].as_str().is_some_and(|n| !n.is_empty()));
    let v0 = first.version;

    // A booking on now: listed within a second, token and PIN, the entrance and its zone's door.
    let t = Instant::now();
    let (b, starts, ends) = booking_at(app, &user, &org, &zones[0].resource, -5, 55).await;
    let (token_hash, pin_hash) = (sha256_hex(&b.token), sha256_hex(&b.pin));
    let (list, envelope, _) = gw
        .until(Duration::from_secs(3), "with the stored booking", |l| {
            lists(l, &token_hash)
        })
        .await;
    let took = t.elapsed();
    assert!(
        took <= Duration::from_millis(1_000),
        "the grant list took {took:?}"
    );
    assert!(list.version > v0, "version {} after {v0}", list.version);
    let now = now_ms();
    assert!(
        list.valid_from <= now && now < list.valid_until,
        "{envelope}"
    );
    assert!(envelope["exp"].as_i64().expect("exp") > now, "{envelope}");
    let mut doors = vec![entrance.clone(), zones[0].door.clone()];
    doors.sort();
    for hash in [&token_hash, &pin_hash] {
        let entry = list
            .grants
            .iter()
            .find(|g| g.credential_sha256 == *hash)
            .unwrap_or_else(|| panic!("{hash} not listed: {list:?}"));
        assert_eq!(entry.from, ms(starts) - 15 * MINUTE_MS);
        assert_eq!(entry.until, ms(ends) + 15 * MINUTE_MS);
        let mut listed = entry.doors.clone();
        listed.sort();
        assert_eq!(listed, doors);
    }
    // The list never holds a credential in clear.
    let text = envelope.to_string();
    assert!(!text.contains(&b.token) && !text.contains(&format!("\"{}\"", b.pin)));

    // Deciding from the list alone.
    let (from, until) = (ms(starts) - 15 * MINUTE_MS, ms(ends) + 15 * MINUTE_MS);
    assert_eq!(list.decide(&entrance, &b.token, now), Ok(()));
    assert_eq!(list.decide(&zones[0].door, &b.pin, now), Ok(()));
    assert_eq!(list.decide(&entrance, &b.pin, from), Ok(()));
    assert_eq!(list.decide(&entrance, &b.token, until - 1), Ok(()));
    assert_eq!(
        list.decide(&entrance, &b.token, from - 1),
        Err(DenyReason::NotYetValid)
    );
    assert_eq!(
        list.decide(&entrance, &b.token, until),
        Err(DenyReason::Expired)
    );
    assert_eq!(
        list.decide(&zones[1].door, &b.token, now),
        Err(DenyReason::WrongZone)
    );
    assert_eq!(
        list.decide(&entrance, "spz1.ffffffffffffffffffffffffffffffff", now),
        Err(DenyReason::UnknownCredential)
    );
    assert_eq!(list.decide(&entrance, "", now), Err(DenyReason::Malformed));

    // A booking through the API, an hour ahead, in the second zone.
    let start = Utc::now() + chrono::Duration::hours(1);
    let start = start - chrono::Duration::seconds(start.timestamp() % 60);
    let end = start + chrono::Duration::hours(1);
    let t = Instant::now();
    let (status, created) = app
        .book(
            &user.token,
            &zones[1].resource,
            &start.to_rfc3339(),
            &end.to_rfc3339(),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let api_id = created["id"].as_str().expect("id").to_owned();
    let id = api_id.clone();
    let cred = app
        .state
        .db
        .run(move |c| spazi::db::access::credential(c, &id))
        .await
        .expect("credential")
        .expect("the API booking has a credential");
    let (api_token, api_pin) = (cred.token.clone(), cred.pin.clone());
    let api_token_hash = sha256_hex(&api_token);
    let (list, _, _) = gw
        .until(Duration::from_secs(3), "with the API booking", |l| {
            lists(l, &api_token_hash)
        })
        .await;
    let took = t.elapsed();
    assert!(took <= Duration::from_millis(1_000), "took {took:?}");
    assert!(lists(&list, &sha256_hex(&api_pin)));
    assert!(
        lists(&list, &token_hash),
        "the first booking is still listed"
    );
    let entry = list
        .grants
        .iter()
        .find(|g| g.credential_sha256 == api_token_hash)
        .expect("entry");
    assert_eq!(entry.from, ms(start) - 15 * MINUTE_MS);
    assert_eq!(entry.until, ms(end) + 15 * MINUTE_MS);
    let mut doors = vec![entrance.clone(), zones[1].door.clone()];
    doors.sort();
    let mut listed = entry.doors.clone();
    listed.sort();
    assert_eq!(listed, doors);
    let now = now_ms();
    assert_eq!(
        list.decide(&entrance, &api_token, now),
        Err(DenyReason::NotYetValid)
    );
    assert_eq!(list.decide(&zones[1].door, &api_pin, ms(start)), Ok(()));
    assert_eq!(
        list.decide(&zones[0].door, &api_pin, ms(start)),
        Err(DenyReason::WrongZone)
    );
    let v1 = list.version;

    // A booking at another site changes nothing here: no new list.
    let elsewhere = resource_elsewhere(app, &site, ResourceKind::MeetingRoom);
    booking_at(app, &user, &org, &elsewhere, -5, 55).await;
    let extra = gw.quiet_for(Duration::from_millis(1_200)).await;
    assert!(extra.is_empty(), "unexpected lists: {extra:?}");

    // Cancelled: a new list without it within a second.
    let t = Instant::now();
    let (status, body) = app
        .post_json(
            &format!("/api/v1/bookings/{api_id}/cancel"),
            Some(&user.token),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (list, _, _) = gw
        .until(
            Duration::from_secs(3),
            "without the cancelled booking",
            |l| !lists(l, &api_token_hash),
        )
        .await;
    let took = t.elapsed();
    assert!(took <= Duration::from_millis(1_000), "took {took:?}");
    assert!(list.version > v1);
    assert!(!lists(&list, &sha256_hex(&api_pin)));
    assert!(lists(&list, &token_hash));
    assert_eq!(
        list.decide(&zones[1].door, &api_pin, ms(start)),
        Err(DenyReason::UnknownCredential)
    );

    // The first one cancelled too (it is on now, not checked in).
    let t = Instant::now();
    let (status, body) = app
        .post_json(
            &format!("/api/v1/bookings/{}/cancel", b.id),
            Some(&user.token),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (list, _, _) = gw
        .until(Duration::from_secs(3), "without the first booking", |l| {
            !lists(l, &token_hash)
        })
        .await;
    let took = t.elapsed();
    assert!(took <= Duration::from_millis(1_000), "took {took:?}");
    assert!(!lists(&list, &pin_hash));
    assert_eq!(
        list.decide(&entrance, &b.token, now_ms()),
        Err(DenyReason::UnknownCredential)
    );
    let last = list.version;

    // A gateway connecting now gets the latest list, retained.
    let mut late = Gateway::connect(rig.port, &site).await;
    let (retained, _, _) = late
        .until(Duration::from_secs(5), "retained", |_| true)
        .await;
    assert_eq!(retained.version, last);
    assert_eq!(retained, list);
}

on_both!(grant_list, |b| grant_list_follows_bookings(b));

// ---------------------------------------------------------------------------------------------
// The member's own credential over HTTP
// ---------------------------------------------------------------------------------------------

/// An instant in a response: an RFC 3339 string or epoch ms.
fn instant_ms(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_millis()),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

async fn access_route(backend: Backend) {
    let app = spawn(backend).await;
    let site = "bologna";
    let zones = zone_doors(&app, site);
    let (org, owner) = member(&app).await;
    let (b, starts, ends) = booking_at(&app, &owner, &org, &zones[0].resource, 60, 120).await;
    let path = format!("/api/v1/bookings/{}/access", b.id);

    let (status, body) = app.get_json(&path, Some(&owner.token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["booking_id"], b.id.as_str(), "{body}");
    // The window opens 15 minutes before the start, an hour from now.
    assert_eq!(body["status"], "not_yet_valid", "{body}");
    assert_eq!(body["token"], b.token.as_str(), "{body}");
    assert_eq!(body["pin"], b.pin.as_str(), "{body}");
    // Instants may be given to the second.
    let seconds = |v: &Value| instant_ms(v).map(|t| t.div_euclid(1000));
    assert_eq!(
        seconds(&body["valid_from"]),
        Some((ms(starts) - 15 * MINUTE_MS).div_euclid(1000)),
        "{body}"
    );
    assert_eq!(
        seconds(&body["valid_until"]),
        Some((ms(ends) + 15 * MINUTE_MS).div_euclid(1000)),
        "{body}"
    );
    // Not without logging in.
    let (status, _) = app.get_json(&path, None).await;
    assert_eq!(status, 401);

    // The site's manager sees the booking, not the credential.
    let manager = app.user(Role::SiteManager, None, &[site]).await;
    let (status, body) = app.get_json(&path, Some(&manager.token)).await;
    assert_eq!(status, 403, "{body}");
    assert!(!body.to_string().contains(&b.token));
    // Another member does not even learn that the booking exists.
    let (_, stranger) = member(&app).await;
    let (status, body) = app.get_json(&path, Some(&stranger.token)).await;
    assert_eq!(status, 404, "{body}");
    assert!(!body.to_string().contains(&b.token));

    // The QR code, for the owner.
    let res = app
        .client
        .get(app.url(&format!("{path}/qr")))
        .bearer_auth(&owner.token)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status().as_u16(), 200);
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("image/svg+xml"),
        "content type {content_type}"
    );
    let svg = res.text().await.expect("body");
    let head = svg.trim_start();
    assert!(
        head.starts_with("<?xml") || head.starts_with("<svg"),
        "not an SVG document: {}",
        &svg[..svg.len().min(80)]
    );
    assert!(svg.contains("<svg"));
    // Nor the QR code to anyone else.
    for (who, want) in [(&manager, 403), (&stranger, 404)] {
        let res = app
            .client
            .get(app.url(&format!("{path}/qr")))
            .bearer_auth(&who.token)
            .send()
            .await
            .expect("request");
        assert_eq!(res.status().as_u16(), want);
    }

    // Once cancelled, the credential is shown as revoked.
    let (status, body) = app
        .post_json(
            &format!("/api/v1/bookings/{}/cancel", b.id),
            Some(&owner.token),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app.get_json(&path, Some(&owner.token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "revoked", "{body}");
}

on_both!(access_over_http, |b| access_route(b));

/// Two instances on one database share the badge load (`$share/spazi/…`): a booking made and
/// then cancelled through one of them is honoured and then refused by both, at once, because each
/// change is announced on `spazi/v1/_server/grants`.
async fn instances_share_grant_changes(backend: Backend) {
    use crate::mosquitto::{Mosquitto, MosquittoOptions};
    use crate::telemetry::{ingest_config, wait};
    use spazi::config::{Config, MqttConfig};
    use std::sync::atomic::Ordering;

    let broker = Mosquitto::start(MosquittoOptions::default());
    let (url, db_dir) = crate::helpers::fresh_database(backend);
    let mqtt = MqttConfig::External {
        host: "127.0.0.1".into(),
        port: broker.port,
    };
    let shared = |c: Config| {
        let mut c = ingest_config(c, mqtt.clone());
        c.telemetry.shared = true;
        c
    };
    let first = crate::helpers::spawn_on(url.clone(), db_dir, shared).await;
    let second = crate::helpers::spawn_on(url, None, shared).await;
    for app in [&first, &second] {
        let m = app.state.metrics.clone();
        assert!(
            wait(Duration::from_secs(10), || m
                .telemetry
                .connected
                .load(Ordering::Relaxed)
                == 1)
            .await
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let site = "bologna";
    let entrance = main_door(&first, site);
    let zones = zone_doors(&first, site);
    let (org, user) = member(&first).await;
    // Stored through the first instance only; the second learns of it from the announcement.
    let (b, _, _) = booking_at(&first, &user, &org, &zones[0].resource, 5, 65).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let mut door = DoorClient::connect(broker.port, site, &entrance).await;
    for _ in 0..6 {
        let seq = door.badge(&b.token).await;
        door.expect_unlock(seq).await;
    }
    // A later booking: refused as not yet valid, then, once cancelled through the first
    // instance, refused as cancelled by whichever instance decides.
    let (later, _, _) = booking_at(&first, &user, &org, &zones[1].resource, 60, 120).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    for _ in 0..4 {
        let seq = door.badge(&later.pin).await;
        door.expect_deny(seq, "not_yet_valid").await;
    }
    let (status, body) = first
        .post_json(
            &format!("/api/v1/bookings/{}/cancel", later.id),
            Some(&user.token),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    for _ in 0..6 {
        let seq = door.badge(&later.token).await;
        door.expect_deny(seq, "cancelled").await;
    }
    for app in [&first, &second] {
        let a = &app.state.metrics.access;
        assert!(
            a.granted.load(Ordering::Relaxed) >= 1 && a.denied.load(Ordering::Relaxed) >= 1,
            "both instances decided scans before and after the cancellation"
        );
    }
}

on_both!(two_instances, |b| instances_share_grant_changes(b));

/// A busy site's grant list is far larger than a device's payload: it passes a broker with the
/// production settings (packets up to 1 MiB), reaches the gateway whole, and the service keeps
/// its connection.
async fn a_busy_site_grant_list_reaches_the_gateway(backend: Backend) {
    use std::sync::atomic::Ordering;
    let rig = rig(backend, Broker::Mosquitto, |c| c).await;
    let app = &rig.app;
    let site = "bologna";
    let (org, user) = member(app).await;
    let desks: Vec<String> = app
        .state
        .directory()
        .get(site)
        .expect("bologna")
        .resources
        .iter()
        .filter(|r| r.kind == ResourceKind::Desk)
        .map(|r| r.resource.id.clone())
        .take(60)
        .collect();
    assert!(desks.len() >= 40, "bologna has {} desks", desks.len());
    let mut hashes = Vec::new();
    for desk in &desks {
        let (b, _, _) = booking_at(app, &user, &org, desk, 30, 90).await;
        hashes.push(sha256_hex(&b.token));
    }
    let (_gw, mut rx, _task) = subscriber(
        rig.port,
        "busy-gateway",
        &format!("spazi/v1/{site}/{site}-gw/cmd/grants"),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut complete = None;
    while Instant::now() < deadline {
        let Ok(Some((_, payload, _))) =
            tokio::time::timeout(Duration::from_millis(500), rx.recv()).await
        else {
            continue;
        };
        let body: Value = serde_json::from_slice(&payload).expect("JSON");
        let list: GrantList = serde_json::from_value(body["m"].clone()).expect("a grant list");
        if hashes.iter().all(|h| lists(&list, h)) {
            complete = Some((payload.len(), list));
            break;
        }
    }
    let (size, list) = complete.expect("the gateway got a list with every booking");
    assert!(size > 8_192, "{size} bytes: larger than any device payload");
    assert!(list.grants.len() >= 2 * desks.len());
    assert_eq!(
        app.state
            .metrics
            .telemetry
            .reconnects
            .load(Ordering::Relaxed),
        0,
        "the broker never disconnected the service"
    );
}

on_both!(busy_grant_list, |b| {
    a_busy_site_grant_list_reaches_the_gateway(b)
});

/// Bookings made before credentials existed get one when the service starts, and their owner
/// can then read it.
async fn bookings_without_credentials_get_them_at_start(backend: Backend) {
    let (url, db_dir) = crate::helpers::fresh_database(backend);
    let first = crate::helpers::spawn_on(url.clone(), db_dir, |c| c).await;
    let (org, user) = member(&first).await;
    let resource = zone_doors(&first, "bologna")[0].resource.clone();
    let (b, _, _) = booking_at(&first, &user, &org, &resource, 60, 120).await;
    let removed = sql_execute(
        &first,
        format!(
            "DELETE FROM access_credentials WHERE booking_id = '{}'",
            b.id
        ),
    );
    assert_eq!(removed, 1);
    let (status, _) = first
        .get_json(
            &format!("/api/v1/bookings/{}/access", b.id),
            Some(&user.token),
        )
        .await;
    assert_eq!(status, 404, "no credential yet");

    let second = crate::helpers::spawn_on(url, None, |c| c).await;
    let (status, body) = second
        .get_json(
            &format!("/api/v1/bookings/{}/access", b.id),
            Some(&user.token),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().expect("token");
    assert!(token.starts_with("spz1.") && token != b.token, "{body}");
    assert_eq!(body["pin"].as_str().map(str::len), Some(6), "{body}");
    assert_eq!(body["status"], "not_yet_valid");
}

on_both!(credentials_backfilled, |b| {
    bookings_without_credentials_get_them_at_start(b)
});
