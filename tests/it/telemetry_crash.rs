//! The real binary under fire: devices publish at QoS 1 to Mosquitto while the service is
//! killed with SIGKILL, or while the broker restarts. Nothing is lost and nothing is stored twice.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use diesel::prelude::*;
use rumqttc::QoS;
use spazi::db::schema::readings;

use crate::crash::Service;
use crate::helpers::{fresh_database, Backend};
use crate::mosquitto::{Mosquitto, MosquittoOptions};
use crate::on_both;
use crate::telemetry::{device, now_ms, wait};

const DEVICES: [&str; 3] = ["bologna-pv", "bologna-grid", "bologna-ev-01-charger"];
const PER_DEVICE: usize = 2_000;

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    KillService,
    RestartBroker,
}

async fn connected(client: &reqwest::Client, base: &str) -> bool {
    match client.get(format!("{base}/metrics")).send().await {
        Ok(res) => res
            .text()
            .await
            .is_ok_and(|t| t.contains("spazi_telemetry_connected 1")),
        Err(_) => false,
    }
}

async fn wait_connected(client: &reqwest::Client, service: &Service) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !connected(client, &service.base).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the service never connected to the broker:\n{}",
            service.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the subscription settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
}

fn stored_keys(db: &spazi::db::Db) -> Vec<(i32, i64)> {
    db.run_blocking(|c| {
        readings::table
            .select((readings::device, readings::seq))
            .load::<(i32, i64)>(c)
            .map_err(spazi::db::DbError::from)
    })
    .expect("read readings")
}

async fn nothing_lost(backend: Backend, fault: Fault) {
    let mut broker = Mosquitto::start(MosquittoOptions {
        persistence: true,
        ..Default::default()
    });
    let (database_url, _db_dir) = fresh_database(backend);
    let dir = tempfile::tempdir().expect("work dir");
    let env: Vec<(&str, String)> = vec![
        ("DATABASE_URL", database_url.clone()),
        (
            "SPAZI_MQTT_URL",
            format!("mqtt://127.0.0.1:{}", broker.port),
        ),
        (
            "SPAZI_MQTT_CLIENT_ID",
            format!("spazi-crash-{}", uuid::Uuid::new_v4().simple()),
        ),
        (
            "SPAZI_JWT_SECRET",
            "crash-test-secret-crash-test-secret-0123".into(),
        ),
        (
            "SPAZI_MAIL_URL",
            format!("file://{}", dir.path().join("mail").display()),
        ),
    ];
    let client = reqwest::Client::new();
    let mut service = Service::start(&env, dir.path(), "first");
    service.wait_healthy(&client).await;
    wait_connected(&client, &service).await;

    let start = now_ms() - (PER_DEVICE as i64) * 1000;
    let mut messages = Vec::new();
    for seq in 0..PER_DEVICE {
        for (d, id) in DEVICES.iter().enumerate() {
            let ts = start + seq as i64 * 1000 + d as i64;
            messages.push((
                format!("spazi/v1/bologna/{id}/tele/power"),
                format!(
                    r#"{{"v":1,"ts":{ts},"seq":{seq},"m":{{"p_w":{}}}}}"#,
                    100 + seq
                ),
            ));
        }
    }
    let total = messages.len();
    let gw = device(broker.port, "bologna-gw-crash", None);
    let third = total / 3;
    let mut second_run = None;
    for (i, (topic, payload)) in messages.iter().enumerate() {
        gw.client
            .publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())
            .await
            .expect("publish");
        if i % 200 == 199 {
            // About 10,000 messages a second: the fault lands mid-stream.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if i == third {
            match fault {
                Fault::KillService => service.kill(),
                Fault::RestartBroker => broker.restart(),
            }
        }
        if i == 2 * third && fault == Fault::KillService {
            let mut next = Service::start(&env, dir.path(), "second");
            next.wait_healthy(&client).await;
            second_run = Some(next);
        }
    }
    let acked = gw.acked.clone();
    assert!(
        wait(Duration::from_secs(60), || acked.load(Ordering::SeqCst)
            >= total)
        .await,
        "the broker acknowledged {} of {total}:\n{}",
        gw.acked.load(Ordering::SeqCst),
        broker.log()
    );
    let running = second_run.as_ref().unwrap_or(&service);
    let db = spazi::db::Db::connect(&spazi::db::DbConfig::new(&database_url)).expect("db");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut keys = stored_keys(&db);
    while keys.len() < total && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        keys = stored_keys(&db);
    }
    let distinct: HashSet<_> = keys.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        keys.len(),
        "no reading stored twice (the key makes it impossible)"
    );
    assert_eq!(
        keys.len(),
        total,
        "every reading stored once\nservice log:\n{}\nbroker log:\n{}",
        running.log(),
        broker.log()
    );
    let per_device: Vec<usize> = {
        let mut counts = std::collections::HashMap::new();
        for (d, _) in &keys {
            *counts.entry(*d).or_insert(0usize) += 1;
        }
        counts.into_values().collect()
    };
    assert!(
        per_device.iter().all(|n| *n == PER_DEVICE),
        "{per_device:?}"
    );
}

on_both!(sigkill_loses_no_reading, |b| nothing_lost(
    b,
    Fault::KillService
));
on_both!(broker_restart_loses_no_reading, |b| nothing_lost(
    b,
    Fault::RestartBroker
));
