//! `spazi simulate` against a real Mosquitto, watched by a plain MQTT subscriber: three sites at
//! rate 20 for three seconds must speak the device contract, and presence sensors follow the
//! bookings of the database (SQLite and PostgreSQL).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use spazi::db::bookings::active_resources;
use spazi::db::schema::bookings;
use spazi::db::{naive, DbError};
use spazi::domain::devices::site_devices;
use spazi::domain::network::{generate, DEFAULT_SEED};
use spazi::domain::solar::sun_position;
use spazi::domain::telemetry::{decode, parse_topic, Decoded, Metric, TopicKind};
use spazi::domain::Role;
use spazi::sim::{self as simulate, SimOptions};
use tokio::sync::mpsc;

use crate::helpers::spawn;
use crate::mosquitto::{Mosquitto, MosquittoOptions};
use crate::on_both;

/// One message as the subscriber got it.
struct Received {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
    at_ms: i64,
}

/// Subscribes to `filter` and forwards every message; returns once the subscription is granted.
async fn subscriber(
    port: u16,
    id: &str,
    filter: &str,
) -> (
    AsyncClient,
    mpsc::UnboundedReceiver<Received>,
    tokio::task::JoinHandle<()>,
) {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut subscribed = Some(subscribed_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(s) = subscribed.take() {
                        let _ = s.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send(Received {
                        topic: p.topic.clone(),
                        payload: p.payload.to_vec(),
                        retain: p.retain,
                        at_ms: Utc::now().timestamp_millis(),
                    });
                }
                Ok(_) => {}
                Err(e) => panic!("the subscriber lost its connection: {e}"),
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
        .await
        .expect("SUBACK in time")
        .unwrap();
    (client, rx, task)
}

/// Drains `rx` until nothing has arrived for `quiet`.
async fn drain(rx: &mut mpsc::UnboundedReceiver<Received>, quiet: Duration) -> Vec<Received> {
    let mut got = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(quiet, rx.recv()).await {
        got.push(m);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sites_at_rate_20_speak_the_contract() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let network = generate(DEFAULT_SEED);
    let sites = &network[..3];
    let devices: HashMap<String, _> = sites
        .iter()
        .flat_map(site_devices)
        .map(|d| (d.id.clone(), d))
        .collect();

    // Everything, from before the simulator connects.
    let (live_client, mut live, live_task) =
        subscriber(broker.port, "observer", "spazi/v1/#").await;

    let mut opts = SimOptions::new("127.0.0.1", broker.port);
    opts.sites = Some(3);
    opts.rate = 20.0;
    opts.duration = Some(Duration::from_secs(3));
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let report = tokio::time::timeout(Duration::from_secs(30), simulate::run(opts, stop_rx))
        .await
        .expect("the simulator stops after its duration")
        .expect("the simulator runs");
    let got = drain(&mut live, Duration::from_millis(1_500)).await;
    live_task.abort();
    drop(live_client);

    assert_eq!(report.sites, 3);
    assert_eq!(report.devices, devices.len());
    assert_eq!(report.acked, report.published, "{report}");
    // QoS 1 on both legs and a local broker: the subscriber got every message.
    assert_eq!(got.len() as u64, report.published, "{report}");

    let mut seqs: HashMap<&str, (i64, &[u8])> = HashMap::new();
    let mut counters: HashMap<(&str, i64, Metric), f64> = HashMap::new();
    let (mut duplicates, mut malformed, mut telemetry, mut pv_readings) = (0, 0, 0, 0);
    let mut metas = BTreeSet::new();
    for m in &got {
        let topic =
            parse_topic(&m.topic).unwrap_or_else(|| panic!("not a contract topic: {}", m.topic));
        let spec = devices
            .get(topic.device)
            .unwrap_or_else(|| panic!("an unknown device: {}", m.topic));
        assert_eq!(topic.site, spec.site_id, "{}", m.topic);
        match topic.kind {
            TopicKind::Meta => {
                metas.insert(topic.device);
                continue;
            }
            TopicKind::Status | TopicKind::CmdResult(_) => continue,
            TopicKind::Tele(_) | TopicKind::Evt(_) => {}
        }
        assert!(
            !m.retain,
            "telemetry and events are never retained: {}",
            m.topic
        );
        let decoded = match decode(topic.kind, &m.payload, m.at_ms) {
            Ok(d) => d,
            Err(refusal) => {
                malformed += 1;
                assert!(
                    matches!(refusal.reason.label(), "not_json" | "schema"),
                    "{refusal:?}"
                );
                continue;
            }
        };
        telemetry += 1;
        // The envelope, read as plain JSON too.
        let json: Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(json["v"], 1);
        assert!(json["m"].is_object());
        let (ts, seq, values) = match &decoded {
            Decoded::Readings { ts, seq, values } => (*ts, *seq, values.as_slice()),
            Decoded::Event {
                ts, seq, values, ..
            } => (*ts, *seq, values.as_slice()),
            other => panic!("{other:?}"),
        };
        assert!(
            (ts - m.at_ms).abs() < 5_000,
            "ts {ts} is not near the time it arrived, {}",
            m.at_ms
        );
        // One seq counter per device, strictly increasing; a repeat is the same message again.
        match seqs.insert(topic.device, (seq, &m.payload)) {
            Some((last, payload)) if last == seq => {
                assert_eq!(
                    payload,
                    m.payload.as_slice(),
                    "a reused seq with another payload"
                );
                duplicates += 1;
            }
            Some((last, _)) => assert!(seq > last, "{}: seq {seq} after {last}", topic.device),
            None => {}
        }
        // Counters never go back within their epoch.
        let epoch = values
            .iter()
            .find(|(k, _)| *k == Metric::MeterEpoch)
            .map(|(_, v)| *v as i64);
        for (metric, v) in values {
            if metric.is_counter() {
                let key = (
                    topic.device,
                    epoch.expect("a counter comes with its epoch"),
                    *metric,
                );
                if let Some(prev) = counters.insert(key, *v) {
                    assert!(
                        *v >= prev,
                        "{} {metric} went from {prev} to {v}",
                        topic.device
                    );
                }
            }
        }
        // No PV production without the sun.
        if topic.device.ends_with("-pv") && matches!(topic.kind, TopicKind::Tele(_)) {
            if let Some((_, p)) = values.iter().find(|(k, _)| *k == Metric::PW) {
                pv_readings += 1;
                let site = sites.iter().find(|s| s.id == topic.site).unwrap();
                let at = chrono::DateTime::from_timestamp_millis(ts).unwrap();
                let sun = sun_position(site.latitude, site.longitude, at);
                if sun.elevation_deg <= 0.0 {
                    assert_eq!(*p, 0.0, "PV at {} with the sun down", topic.site);
                } else if sun.elevation_deg > 10.0 {
                    assert!(*p < 0.0, "PV production leaves the PV meter as export: {p}");
                }
            }
        }
    }
    assert!(
        telemetry > 60,
        "only {telemetry} readings in 3 s at rate 20"
    );
    assert!(pv_readings >= 3 * 4, "{pv_readings} PV readings");
    assert_eq!(duplicates, report.duplicates, "{report}");
    assert_eq!(malformed, report.malformed, "{report}");
    for kind in ["tele/power", "tele/energy", "tele/env", "tele/charger"] {
        assert!(
            report.by_kind.get(kind).copied().unwrap_or(0) > 0,
            "no {kind}: {report}"
        );
    }
    let expected: BTreeSet<&str> = devices.keys().map(String::as_str).collect();
    assert_eq!(metas, expected, "every device announces itself");

    // What a service subscribing now learns from the retained messages: every device's meta,
    // and every device offline after the simulator's planned stop.
    let (late_client, mut late, late_task) =
        subscriber(broker.port, "latecomer", "spazi/v1/+/+/+").await;
    let retained = drain(&mut late, Duration::from_millis(1_000)).await;
    late_task.abort();
    drop(late_client);
    let mut retained_meta = BTreeSet::new();
    let mut offline = BTreeSet::new();
    for m in &retained {
        assert!(
            m.retain,
            "only retained messages come without publishers: {}",
            m.topic
        );
        let topic = parse_topic(&m.topic).unwrap();
        match decode(topic.kind, &m.payload, m.at_ms).unwrap() {
            Decoded::Meta(meta) => {
                let spec = &devices[topic.device];
                assert_eq!(meta.class, spec.class, "{}", topic.device);
                assert_eq!(meta.zone, spec.zone_id);
                assert_eq!(meta.resource, spec.resource_id);
                assert_eq!(meta.gateway, spec.gateway_id);
                retained_meta.insert(topic.device);
            }
            Decoded::Status { online, .. } => {
                assert!(!online, "{} is still online after the stop", topic.device);
                offline.insert(topic.device);
            }
            other => panic!("{other:?} on {}", m.topic),
        }
    }
    assert_eq!(retained_meta, expected);
    assert_eq!(offline, expected);
}

on_both!(
    presence_follows_the_bookings_in_the_database,
    |backend| async move {
        let app = spawn(backend).await;
        let org = app.create_org("Simulata", 100);
        let member = app.user(Role::Member, Some(&org), &[]).await;
        let (site, day) = app.open_day("large", 2);
        let desk = app.resource_id(&site, "desk").await;
        let (status, booking) = app
            .book(
                &member.token,
                &desk,
                &app.local(&site, day, 10, 0),
                &app.local(&site, day, 12, 0),
            )
            .await;
        assert_eq!(status, 201, "{booking}");
        let id = booking["id"].as_str().unwrap().to_owned();

        // Held from its start, up to but not including its end.
        let local = |hh, mm| {
            naive(
                DateTime::parse_from_rfc3339(&app.local(&site, day, hh, mm))
                    .unwrap()
                    .with_timezone(&Utc),
            )
        };
        let active = |at: NaiveDateTime| {
            app.state
                .db
                .run_blocking(|c| active_resources(c, at))
                .unwrap()
        };
        assert!(active(local(9, 59)).is_empty());
        assert_eq!(active(local(10, 0)), std::slice::from_ref(&desk));
        assert_eq!(active(local(11, 30)), std::slice::from_ref(&desk));
        assert!(active(local(12, 0)).is_empty());

        // The booking now covers the present, as if its member had just sat down.
        let now = Utc::now();
        let (id2, from, to) = (
            id.clone(),
            naive(now - chrono::Duration::minutes(5)),
            naive(now + chrono::Duration::minutes(55)),
        );
        app.state
            .db
            .run_blocking(move |c| {
                diesel::update(bookings::table.find(id2))
                    .set((bookings::starts_at.eq(from), bookings::ends_at.eq(to)))
                    .execute(c)
                    .map_err(DbError::from)
            })
            .unwrap();
        assert_eq!(active(naive(now)), std::slice::from_ref(&desk));

        let broker = Mosquitto::start(MosquittoOptions::default());
        let filter = format!("spazi/v1/{site}/+/tele/presence");
        let (client, mut rx, task) = subscriber(broker.port, "presence-observer", &filter).await;
        let mut opts = SimOptions::new("127.0.0.1", broker.port);
        opts.site_ids = vec![site.clone()];
        opts.rate = 100.0;
        opts.duration = Some(Duration::from_secs(4));
        opts.faults = false;
        opts.database_url = Some(app.state.config.database_url.clone());
        let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let report = tokio::time::timeout(Duration::from_secs(30), simulate::run(opts, stop_rx))
            .await
            .expect("the simulator stops after its duration")
            .expect("the simulator runs");
        let got = drain(&mut rx, Duration::from_millis(1_000)).await;
        task.abort();
        drop(client);

        let desk_topic = format!("spazi/v1/{site}/{desk}-pres/tele/presence");
        let occupied = |m: &Received| {
            let json: Value = serde_json::from_slice(&m.payload).unwrap();
            json["m"]["occupied"].as_bool().unwrap()
        };
        let booked: Vec<bool> = got
            .iter()
            .filter(|m| m.topic == desk_topic)
            .map(occupied)
            .collect();
        assert!(
            !booked.is_empty(),
            "the booked desk reported nothing: {report}"
        );
        assert!(
            booked.iter().all(|o| *o),
            "the booked desk looked free: {booked:?}"
        );
        let others: Vec<bool> = got
            .iter()
            .filter(|m| m.topic != desk_topic)
            .map(occupied)
            .collect();
        assert!(
            others.len() > 50,
            "{} other reports: {report}",
            others.len()
        );
        let ghosts = others.iter().filter(|o| **o).count();
        assert!(
            ghosts * 20 <= others.len(),
            "{ghosts} of {} unbooked resources occupied",
            others.len()
        );

        // Cancelled, it holds nothing.
        app.state
            .db
            .run_blocking(move |c| {
                diesel::update(bookings::table.find(id))
                    .set(bookings::status.eq("cancelled"))
                    .execute(c)
                    .map_err(DbError::from)
            })
            .unwrap();
        assert!(active(naive(now)).is_empty());
    }
);
