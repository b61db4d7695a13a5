//! The ingest pipeline end to end: real MQTT clients publish to a real broker (the embedded
//! rumqttd and Mosquitto), the service stores, rolls up, watches and raises alarms.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diesel::prelude::*;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use spazi::config::{Config, MqttConfig, TelemetryConfig};
use spazi::db::schema::{readings, readings_15m};
use spazi::domain::quarters::QUARTER_MS;
use spazi::domain::telemetry::Metric;
use spazi::domain::DeviceStatus;

use crate::helpers::{spawn_with, Backend, TestApp};
use crate::mosquitto::{Mosquitto, MosquittoOptions};
use crate::on_both;

#[derive(Clone, Copy)]
pub enum Broker {
    Embedded,
    Mosquitto,
}

/// The app with its ingest consumer on, and the broker its devices publish to.
pub struct Rig {
    pub app: TestApp,
    pub port: u16,
    _mosquitto: Option<Mosquitto>,
}

pub fn ingest_config(c: Config, mqtt: MqttConfig) -> Config {
    Config {
        mqtt,
        telemetry: TelemetryConfig {
            ingest: true,
            client_id: format!("spazi-test-{}", uuid::Uuid::new_v4().simple()),
            ..c.telemetry
        },
        ..c
    }
}

pub async fn rig(backend: Backend, broker: Broker, adjust: impl FnOnce(Config) -> Config) -> Rig {
    let mosquitto = match broker {
        Broker::Mosquitto => Some(Mosquitto::start(MosquittoOptions::default())),
        Broker::Embedded => None,
    };
    let mqtt = match &mosquitto {
        Some(m) => MqttConfig::External {
            host: "127.0.0.1".into(),
            port: m.port,
        },
        None => MqttConfig::Embedded("127.0.0.1:0".parse().unwrap()),
    };
    let app = spawn_with(backend, |c| adjust(ingest_config(c, mqtt))).await;
    let port = match &mosquitto {
        Some(m) => m.port,
        None => app
            .state
            .mqtt_addr
            .as_deref()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .expect("embedded broker port"),
    };
    let rig = Rig {
        app,
        port,
        _mosquitto: mosquitto,
    };
    let metrics = rig.app.state.metrics.clone();
    assert!(
        wait(Duration::from_secs(10), || metrics
            .telemetry
            .connected
            .load(Ordering::Relaxed)
            == 1)
        .await,
        "the ingest consumer never connected"
    );
    // The subscription is queued right after CONNACK; give the broker a moment to install it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    rig
}

pub(crate) use crate::email::wait_until as wait;

/// A device-side MQTT client that counts the broker's acknowledgements of its QoS 1 publishes.
pub struct Device {
    pub client: AsyncClient,
    pub acked: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Device {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn device(port: u16, client_id: &str, will: Option<LastWill>) -> Device {
    let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30))
        .set_inflight(500)
        .set_clean_session(false);
    if let Some(w) = will {
        opts.set_last_will(w);
    }
    let (client, mut eventloop) = AsyncClient::new(opts, 1000);
    let acked = Arc::new(AtomicUsize::new(0));
    let counter = acked.clone();
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    Device {
        client,
        acked,
        task,
    }
}

impl Device {
    /// Publishes at QoS 1 and waits until the broker has acknowledged `total` publishes.
    pub async fn send_all(&self, messages: &[(String, String)], total: usize) {
        for (topic, payload) in messages {
            self.client
                .publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())
                .await
                .expect("publish");
        }
        let acked = self.acked.clone();
        assert!(
            wait(Duration::from_secs(60), || acked.load(Ordering::SeqCst)
                >= total)
            .await,
            "the broker acknowledged {} of {total}",
            self.acked.load(Ordering::SeqCst)
        );
    }
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub async fn stored(app: &TestApp) -> i64 {
    app.state
        .db
        .run(spazi::db::telemetry::count_readings)
        .await
        .expect("count")
}

/// Each device's counter readings, `(ts, value)` in time order.
type Series = HashMap<String, Vec<(i64, i64)>>;

/// Energy counters for `devices` × `per_device` messages, a minute apart, ending now.
fn energy_messages(devices: &[&str], per_device: usize) -> (Vec<(String, String)>, Series) {
    let now = now_ms();
    let mut out = Vec::new();
    let mut counters: HashMap<String, Vec<(i64, i64)>> = HashMap::new();
    for (d, device) in devices.iter().enumerate() {
        let mut counter: i64 = 1_000_000 * (d as i64 + 1);
        for i in 0..per_device {
            counter += ((i * 7919 + d * 31) % 97) as i64 + 1;
            let ts = now - (per_device - i) as i64 * 60_000;
            out.push((
                format!("spazi/v1/bologna/{device}/tele/energy"),
                format!(
                    r#"{{"v":1,"ts":{ts},"seq":{i},"m":{{"e_imp_wh":{counter},"meter_epoch":0}}}}"#
                ),
            ));
            counters
                .entry(device.to_string())
                .or_default()
                .push((ts, counter));
        }
    }
    (out, counters)
}

async fn duplicates_are_absorbed(backend: Backend, broker: Broker) {
    let rig = rig(backend, broker, |c| c).await;
    let app = &rig.app;
    // 20 meters at Bologna: the PV meter, the grid meter and the chargers are seeded devices;
    // the rest are provisioned here as sub-meters.
    let mut ids: Vec<String> = vec!["bologna-pv".into(), "bologna-grid".into()];
    for n in 0..18 {
        let id = format!("bologna-sub-{n:02}");
        let new = spazi::db::telemetry::NewDevice {
            id: id.clone(),
            site_id: "bologna".into(),
            class: "grid_meter".into(),
            zone_id: None,
            resource_id: None,
            gateway_id: Some("bologna-gw".into()),
            model: None,
            firmware: None,
            report_interval_s: 60,
            status: "unknown".into(),
            source: "api".into(),
            created_at: chrono::Utc::now().naive_utc(),
        };
        let row = app
            .state
            .db
            .run(move |c| spazi::db::telemetry::insert_device(c, &new))
            .await
            .expect("provision");
        app.state.fleet.upsert(&row, chrono_tz::Europe::Rome);
        ids.push(id);
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let (messages, counters) = energy_messages(&refs, 500);
    assert_eq!(messages.len(), 10_000);
    let dev = device(rig.port, "meters-gateway", None);
    dev.send_all(&messages, 10_000).await;
    dev.send_all(&messages, 20_000).await;
    let received = || app.state.metrics.telemetry.received.load(Ordering::Relaxed);
    assert!(
        wait(Duration::from_secs(60), || received() >= 20_000).await,
        "the pipeline received {} of 20000",
        received()
    );
    // Every message has two rows: the counter and its epoch.
    let db = app.state.db.clone();
    let energy = move || {
        let db = db.clone();
        async move {
            db.run(|c| {
                readings::table
                    .filter(readings::metric.eq(Metric::EImpWh.code()))
                    .count()
                    .get_result::<i64>(c)
                    .map_err(spazi::db::DbError::from)
            })
            .await
            .expect("count")
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while energy().await < 10_000 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(energy().await, 10_000, "each reading stored once");
    assert_eq!(stored(app).await, 20_000);
    assert_eq!(
        app.state
            .metrics
            .telemetry
            .duplicates
            .load(Ordering::Relaxed),
        20_000,
        "every row of the second round was absorbed"
    );

    // Roll-ups: each quarter's delta is the counter's last value in it minus its last value
    // before it, exactly.
    let mut expected: BTreeMap<(i32, i64), i64> = BTreeMap::new();
    let mut nums = Vec::new();
    for (id, series) in &counters {
        let num = app.state.fleet.get(id).expect("device").num;
        nums.push(num);
        let mut prev: Option<i64> = None;
        let mut last_in: BTreeMap<i64, i64> = BTreeMap::new();
        for &(ts, v) in series {
            last_in.insert(ts - ts.rem_euclid(QUARTER_MS), v);
        }
        for (q, last) in last_in {
            let delta = prev.map_or(0, |p| last - p)
                + if prev.is_none() {
                    last - series[0].1
                } else {
                    0
                };
            expected.insert((num, q), delta);
            prev = Some(last);
        }
    }
    let db = app.state.db.clone();
    let fleet = app.state.fleet.clone();
    let actual = || {
        let db = db.clone();
        let nums = nums.clone();
        async move {
            db.run(move |c| {
                readings_15m::table
                    .filter(readings_15m::device.eq_any(&nums))
                    .filter(readings_15m::metric.eq(Metric::EImpWh.code()))
                    .select((
                        readings_15m::device,
                        readings_15m::bucket,
                        readings_15m::delta,
                    ))
                    .load::<(i32, i64, Option<f64>)>(c)
                    .map_err(spazi::db::DbError::from)
            })
            .await
            .expect("roll-ups")
            .into_iter()
            .map(|(d, b, delta)| ((d, b), delta.expect("counters have a delta") as i64))
            .collect::<BTreeMap<_, _>>()
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut got = actual().await;
    while got != expected && tokio::time::Instant::now() < deadline {
        let _ = spazi::jobs::rollup::pass(&app.state.db, &fleet).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        got = actual().await;
    }
    assert_eq!(got.len(), expected.len());
    assert_eq!(
        got, expected,
        "15-minute deltas equal the counters' differences"
    );
    for (id, series) in &counters {
        let num = app.state.fleet.get(id).unwrap().num;
        let total: i64 = got
            .iter()
            .filter(|((d, _), _)| *d == num)
            .map(|(_, v)| v)
            .sum();
        assert_eq!(total, series.last().unwrap().1 - series[0].1, "{id}");
    }
}

on_both!(duplicates_absorbed_embedded, |b| duplicates_are_absorbed(
    b,
    Broker::Embedded
));
on_both!(duplicates_absorbed_mosquitto, |b| duplicates_are_absorbed(
    b,
    Broker::Mosquitto
));

async fn malformed_messages_are_refused(backend: Backend, broker: Broker) {
    let rig = rig(backend, broker, |c| c).await;
    let app = &rig.app;
    let now = now_ms();
    let good = |seq: i64| {
        (
            "spazi/v1/bologna/bologna-grid/tele/power".to_string(),
            format!(
                r#"{{"v":1,"ts":{now},"seq":{seq},"m":{{"p_w":{}}}}}"#,
                1000 + seq
            ),
        )
    };
    let topic = "spazi/v1/bologna/bologna-grid/tele/power".to_string();
    let bad: Vec<(&str, (String, String))> = vec![
        ("not_json", (topic.clone(), "hello, broker".into())),
        (
            "schema",
            (
                topic.clone(),
                format!(r#"{{"v":1,"ts":{now},"seq":900,"m":{{"p_w":"1200"}}}}"#),
            ),
        ),
        (
            "non_finite",
            (
                topic.clone(),
                format!(r#"{{"v":1,"ts":{now},"seq":901,"m":{{"p_w":NaN}}}}"#),
            ),
        ),
        (
            "oversized",
            (
                topic.clone(),
                format!(
                    r#"{{"v":1,"ts":{now},"seq":902,"m":{{"p_w":1}},"pad":"{}"}}"#,
                    "x".repeat(6000)
                ),
            ),
        ),
        (
            "unknown_device",
            (
                "spazi/v1/bologna/bologna-ghost/tele/power".into(),
                format!(r#"{{"v":1,"ts":{now},"seq":1,"m":{{"p_w":1}}}}"#),
            ),
        ),
        (
            "site_mismatch",
            (
                "spazi/v1/milano/bologna-grid/tele/power".into(),
                format!(r#"{{"v":1,"ts":{now},"seq":903,"m":{{"p_w":1}}}}"#),
            ),
        ),
        (
            "future_timestamp",
            (
                topic.clone(),
                format!(
                    r#"{{"v":1,"ts":{},"seq":904,"m":{{"p_w":1}}}}"#,
                    now + 3_600_000
                ),
            ),
        ),
        (
            "unknown_topic",
            (
                "spazi/v1/bologna/bologna-grid/tele/weather".into(),
                format!(r#"{{"v":1,"ts":{now},"seq":905,"m":{{"p_w":1}}}}"#),
            ),
        ),
    ];
    let mut messages = Vec::new();
    let mut seq = 0;
    for (_, m) in &bad {
        messages.push(good(seq));
        seq += 1;
        messages.push(m.clone());
    }
    messages.push(good(seq));
    let goods = seq + 1;
    let dev = device(rig.port, "bologna-gw-test", None);
    dev.send_all(&messages, messages.len()).await;
    let t = &app.state.metrics.telemetry;
    assert!(
        wait(Duration::from_secs(20), || t
            .received
            .load(Ordering::Relaxed)
            >= messages.len() as u64)
        .await,
        "received {} of {}",
        t.received.load(Ordering::Relaxed),
        messages.len()
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stored(app).await < goods && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        stored(app).await,
        goods,
        "every good message stored, no bad one"
    );
    let metrics = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (reason, _) in &bad {
        let line = format!("spazi_telemetry_rejected_total{{reason=\"{reason}\"}} 1");
        assert!(metrics.contains(&line), "{line} missing in\n{metrics}");
    }
    // The pipeline goes on: a later good message is stored.
    dev.send_all(&[good(1000)], messages.len() + 1).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stored(app).await < goods + 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stored(app).await, goods + 1);
    let latest = app
        .state
        .fleet
        .get("bologna-grid")
        .unwrap()
        .value(Metric::PW)
        .unwrap();
    assert_eq!(latest.value, 2000.0, "the latest value is in memory");
}

on_both!(malformed_refused_embedded, |b| {
    malformed_messages_are_refused(b, Broker::Embedded)
});
on_both!(malformed_refused_mosquitto, |b| {
    malformed_messages_are_refused(b, Broker::Mosquitto)
});

async fn silent_devices_and_gateway_wills(backend: Backend, broker: Broker) {
    let rig = rig(backend, broker, |c| c).await;
    let app = &rig.app;
    // A meta declares a 1-second interval: offline after 3 s of silence.
    let dev = device(rig.port, "bologna-env-fast", None);
    let zone = app
        .state
        .fleet
        .get("bologna-grid")
        .map(|_| ())
        .and(Some(()));
    assert!(zone.is_some());
    dev.client
        .publish(
            "spazi/v1/bologna/bologna-env-fast/meta",
            QoS::AtLeastOnce,
            true,
            r#"{"v":1,"class":"env_sensor","model":"E-1","firmware":"1.2.0","gateway":"bologna-gw","report_interval_s":1}"#,
        )
        .await
        .unwrap();
    let fleet = app.state.fleet.clone();
    assert!(
        wait(Duration::from_secs(10), || fleet
            .get("bologna-env-fast")
            .is_some())
        .await,
        "the device is learned from its meta"
    );
    let learned = fleet.get("bologna-env-fast").unwrap();
    assert_eq!(learned.report_interval_s, 1);
    assert_eq!(learned.source, "meta");
    let reading = format!(
        r#"{{"v":1,"ts":{},"seq":1,"m":{{"t_c":21.5,"co2_ppm":600}}}}"#,
        now_ms()
    );
    dev.client
        .publish(
            "spazi/v1/bologna/bologna-env-fast/tele/env",
            QoS::AtLeastOnce,
            false,
            reading,
        )
        .await
        .unwrap();
    assert!(
        wait(Duration::from_secs(5), || fleet
            .get("bologna-env-fast")
            .unwrap()
            .status
            == DeviceStatus::Online)
        .await,
        "online once it reports"
    );
    let last = tokio::time::Instant::now();
    let db = app.state.db.clone();
    let offline_alarm = || {
        let db = db.clone();
        async move {
            db.run(|c| {
                spazi::db::alarms::list(
                    c,
                    &spazi::db::alarms::AlarmFilter {
                        limit: 100,
                        ..Default::default()
                    },
                )
            })
            .await
            .unwrap()
            .into_iter()
            .find(|a| a.device_id == "bologna-env-fast" && a.kind == "device_offline")
        }
    };
    while offline_alarm().await.is_none() && last.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = last.elapsed();
    let alarm = offline_alarm().await.expect("an offline alarm");
    assert_eq!(alarm.state, "open");
    assert!(
        elapsed <= Duration::from_secs(3 + 2),
        "raised {elapsed:?} after the last message: within three intervals and a sweep"
    );
    assert_eq!(
        fleet.get("bologna-env-fast").unwrap().status,
        DeviceStatus::Offline
    );

    // The gateway: its children report through it; its Last Will marks them unknown.
    let will = LastWill::new(
        "spazi/v1/bologna/bologna-gw/status",
        r#"{"v":1,"online":false}"#,
        QoS::AtLeastOnce,
        true,
    );
    let gw = device(rig.port, "bologna-gw", Some(will));
    let ts = now_ms();
    let msgs = vec![
        (
            "spazi/v1/bologna/bologna-gw/status".to_string(),
            format!(r#"{{"v":1,"online":true,"ts":{ts}}}"#),
        ),
        (
            "spazi/v1/bologna/bologna-pv/tele/power".to_string(),
            format!(r#"{{"v":1,"ts":{ts},"seq":1,"m":{{"p_w":5300}}}}"#),
        ),
        (
            "spazi/v1/bologna/bologna-grid/tele/power".to_string(),
            format!(r#"{{"v":1,"ts":{ts},"seq":1,"m":{{"p_w":-1200}}}}"#),
        ),
    ];
    gw.send_all(&msgs, msgs.len()).await;
    assert!(
        wait(Duration::from_secs(5), || [
            "bologna-gw",
            "bologna-pv",
            "bologna-grid"
        ]
        .iter()
        .all(|d| fleet.get(d).unwrap().status == DeviceStatus::Online))
        .await
    );
    // The gateway's connection dies without a DISCONNECT: the broker publishes its will.
    drop(gw);
    assert!(
        wait(Duration::from_secs(40), || fleet
            .get("bologna-gw")
            .unwrap()
            .status
            == DeviceStatus::Offline)
        .await,
        "the gateway's will marks it offline"
    );
    assert!(
        wait(Duration::from_secs(5), || ["bologna-pv", "bologna-grid"]
            .iter()
            .all(
                |d| fleet.get(d).unwrap().status == DeviceStatus::Unknown
            ))
        .await,
        "its children are unknown"
    );
}

on_both!(silence_and_wills_embedded, |b| {
    silent_devices_and_gateway_wills(b, Broker::Embedded)
});
on_both!(silence_and_wills_mosquitto, |b| {
    silent_devices_and_gateway_wills(b, Broker::Mosquitto)
});

/// Two instances on one database and one broker, subscribed with `$share/spazi/…`: the broker
/// splits the messages between them and each is stored once.
async fn shared_subscription_splits_the_load(backend: Backend) {
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
    let instances = [&first, &second];
    for app in instances {
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
    let now = now_ms();
    let messages: Vec<(String, String)> = (0..2_000)
        .map(|seq| {
            (
                "spazi/v1/bologna/bologna-pv/tele/power".to_string(),
                format!(
                    r#"{{"v":1,"ts":{},"seq":{seq},"m":{{"p_w":{seq}}}}}"#,
                    now - 2_000 + seq
                ),
            )
        })
        .collect();
    let dev = device(broker.port, "bologna-gw-shared", None);
    dev.send_all(&messages, messages.len()).await;
    let received = || {
        instances
            .iter()
            .map(|a| a.state.metrics.telemetry.received.load(Ordering::Relaxed))
            .collect::<Vec<_>>()
    };
    assert!(
        wait(Duration::from_secs(20), || received().iter().sum::<u64>()
            >= 2_000)
        .await,
        "{:?}",
        received()
    );
    let split = received();
    assert_eq!(
        split.iter().sum::<u64>(),
        2_000,
        "no message went to both: {split:?}"
    );
    assert!(
        split.iter().all(|n| *n > 0),
        "both instances took a share: {split:?}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stored(&first).await < 2_000 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stored(&first).await, 2_000);
}

on_both!(
    shared_subscription,
    |b| shared_subscription_splits_the_load(b)
);

async fn live_alarm(
    app: &TestApp,
    device: &str,
    kind: &str,
) -> Option<spazi::db::alarms::AlarmRow> {
    app.state
        .db
        .run(|c| {
            spazi::db::alarms::list(
                c,
                &spazi::db::alarms::AlarmFilter {
                    limit: 500,
                    ..Default::default()
                },
            )
        })
        .await
        .expect("alarms")
        .into_iter()
        .find(|a| a.device_id == device && a.kind == kind)
}

async fn wait_alarm(app: &TestApp, device: &str, kind: &str, state: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found = live_alarm(app, device, kind).await;
        if found.as_ref().is_some_and(|a| a.state == state) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {state} {kind} alarm on {device}: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each alarm rule, raised by what devices publish and cleared when the condition ends.
async fn alarms_follow_the_readings(backend: Backend) {
    let rig = rig(backend, Broker::Embedded, |mut c| {
        c.telemetry.door_held_secs = 1;
        c
    })
    .await;
    let app = &rig.app;
    let site = app.state.fleet.site("bologna");
    let env = site
        .iter()
        .find(|d| d.class == spazi::domain::DeviceClass::EnvSensor)
        .expect("an env sensor");
    let zone = env.zone_id.clone().expect("its zone");
    let presence = site
        .iter()
        .find(|d| {
            d.class == spazi::domain::DeviceClass::PresenceSensor
                && d.zone_id.as_ref() == Some(&zone)
        })
        .expect("a presence sensor in the zone");
    let charger = site
        .iter()
        .find(|d| d.class == spazi::domain::DeviceClass::EvCharger)
        .expect("a charger");
    let door = "bologna-door-main";
    let dev = device(rig.port, "bologna-gw-alarms", None);
    let mut seq = 0;
    let mut send = |device: &str, kind: &str, m: &str| {
        seq += 1;
        (
            format!("spazi/v1/bologna/{device}/{kind}"),
            format!(r#"{{"v":1,"ts":{},"seq":{seq},"m":{m}}}"#, now_ms()),
        )
    };
    let batch = vec![
        send(&presence.id, "tele/presence", r#"{"occupied":true}"#),
        send(&env.id, "tele/env", r#"{"co2_ppm":1450,"t_c":31.5}"#),
        send(
            charger.id.as_str(),
            "tele/charger",
            r#"{"state":"fault","p_w":0}"#,
        ),
        send(
            "bologna-grid",
            "tele/energy",
            r#"{"e_imp_wh":5000,"meter_epoch":0}"#,
        ),
        send(
            "bologna-grid",
            "tele/energy",
            r#"{"e_imp_wh":4900,"meter_epoch":0}"#,
        ),
        send(door, "evt/door", r#"{"open":true}"#),
    ];
    let mut sent = batch.len();
    dev.send_all(&batch, sent).await;
    wait_alarm(app, &env.id, "co2_high", "open").await;
    wait_alarm(app, &env.id, "temperature_out_of_band", "open").await;
    wait_alarm(app, &charger.id, "charger_fault", "open").await;
    wait_alarm(app, "bologna-grid", "counter_backwards", "open").await;
    wait_alarm(app, door, "door_held_open", "open").await;

    // The site's manager acknowledges one; it stays acknowledged until its condition ends.
    let manager = app
        .user(spazi::domain::Role::SiteManager, None, &["bologna"])
        .await;
    let co2 = live_alarm(app, &env.id, "co2_high").await.expect("alarm");
    let (status, body) = app
        .post_json(
            &format!("/api/v1/alarms/{}/ack", co2.id),
            Some(&manager.token),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "acknowledged");
    assert_eq!(body["acknowledged_by"]["id"], manager.id.as_str());

    let batch = vec![
        send(&env.id, "tele/env", r#"{"co2_ppm":650,"t_c":22.0}"#),
        send(
            charger.id.as_str(),
            "tele/charger",
            r#"{"state":"available","p_w":0}"#,
        ),
        send(
            "bologna-grid",
            "tele/energy",
            r#"{"e_imp_wh":10,"meter_epoch":1}"#,
        ),
        send(door, "evt/door", r#"{"open":false}"#),
    ];
    sent += batch.len();
    dev.send_all(&batch, sent).await;
    wait_alarm(app, &env.id, "co2_high", "cleared").await;
    wait_alarm(app, &env.id, "temperature_out_of_band", "cleared").await;
    wait_alarm(app, &charger.id, "charger_fault", "cleared").await;
    wait_alarm(app, "bologna-grid", "counter_backwards", "cleared").await;
    wait_alarm(app, door, "door_held_open", "cleared").await;
}

on_both!(alarm_rules, |b| alarms_follow_the_readings(b));

/// Raw readings and device events past the retention period go; the roll-ups stay.
async fn retention_removes_old_raw_rows(backend: Backend) {
    // The service's own hourly pass keeps everything here, so only the call under test removes.
    let app = spawn_with(backend, |mut c| {
        c.telemetry.raw_retention_days = 36_500;
        c
    })
    .await;
    let num = app.state.fleet.get("bologna-grid").expect("device").num;
    let day = 86_400_000;
    let now = now_ms();
    let rows: Vec<spazi::db::telemetry::ReadingRow> = [40 * day, 31 * day, 29 * day, 1000]
        .iter()
        .enumerate()
        .map(|(i, age)| spazi::db::telemetry::ReadingRow {
            minute: spazi::db::telemetry::ReadingRow::minute_of(now - age),
            device: num,
            metric: Metric::PW.code(),
            seq: i as i64,
            ts: now - age,
            value: i as f64,
        })
        .collect();
    let events = vec![spazi::db::telemetry::EventRow {
        device: num,
        seq: 99,
        ts: now - 35 * day,
        kind: "door".into(),
        body: r#"{"open":true}"#.into(),
    }];
    let rollup = spazi::db::telemetry::RollupRow {
        device: num,
        metric: Metric::PW.code(),
        bucket: now - 40 * day - (now - 40 * day).rem_euclid(QUARTER_MS),
        n: 1,
        min: 0.0,
        max: 0.0,
        sum: 0.0,
        last: 0.0,
        last_ts: now - 40 * day,
        delta: None,
        epoch: None,
    };
    let removed = app
        .state
        .db
        .run(move |c| {
            spazi::db::telemetry::insert_batch(c, &rows, &events)?;
            spazi::db::telemetry::upsert_rollups(c, &[rollup])?;
            spazi::db::telemetry::delete_raw_before(c, now - 30 * day)
        })
        .await
        .expect("retention");
    assert_eq!(removed, 3, "two readings and one event past 30 days");
    assert_eq!(stored(&app).await, 2);
    let (events, rollups) = app
        .state
        .db
        .run(|c| {
            Ok::<_, spazi::db::DbError>((
                spazi::db::telemetry::count_events(c)?,
                readings_15m::table.count().get_result::<i64>(c)?,
            ))
        })
        .await
        .expect("counts");
    assert_eq!((events, rollups), (0, 1));
}

on_both!(retention, |b| retention_removes_old_raw_rows(b));
