//! A telemetry batch whose commit fails is not acknowledged: the broker delivers it again and it
//! is stored exactly once. A database closure that panics answers an error, and the database
//! thread it ran on keeps serving.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use diesel::prelude::*;
use spazi::db::schema::readings;
use spazi::db::telemetry::{insert_batch, ReadingRow};
use spazi::db::{write_transaction, Db, DbConfig, DbConnection, DbError};

use crate::helpers::{fresh_database, Backend};
use crate::on_both;
use crate::telemetry::{device, now_ms, rig, wait, Broker};

const DEVICES: [&str; 3] = ["bologna-pv", "bologna-grid", "bologna-ev-01-charger"];
const PER_DEVICE: i64 = 300;

/// A trigger that makes every insert into `readings` fail while `ingest_fault.armed` is set.
fn arm_fault(conn: &mut DbConnection) -> Result<(), DbError> {
    let statements: &[&str] = match conn {
        DbConnection::Postgresql(_) => &[
            "CREATE TABLE ingest_fault (armed BOOLEAN NOT NULL)",
            "INSERT INTO ingest_fault VALUES (TRUE)",
            "CREATE FUNCTION ingest_fault_check() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN \
               IF (SELECT armed FROM ingest_fault) THEN \
                 RAISE EXCEPTION 'readings are refused for now'; \
               END IF; \
               RETURN NULL; \
             END $$",
            "CREATE TRIGGER ingest_fault BEFORE INSERT ON readings \
             FOR EACH STATEMENT EXECUTE FUNCTION ingest_fault_check()",
        ],
        DbConnection::Sqlite(_) => &[
            "CREATE TABLE ingest_fault (armed INTEGER NOT NULL)",
            "INSERT INTO ingest_fault VALUES (1)",
            "CREATE TRIGGER ingest_fault BEFORE INSERT ON readings \
             WHEN (SELECT armed FROM ingest_fault) = 1 \
             BEGIN SELECT RAISE(ABORT, 'readings are refused for now'); END",
        ],
    };
    for sql in statements {
        diesel::sql_query(*sql).execute(conn)?;
    }
    Ok(())
}

fn disarm_fault(conn: &mut DbConnection) -> Result<usize, DbError> {
    let sql = match conn {
        DbConnection::Postgresql(_) => "UPDATE ingest_fault SET armed = FALSE",
        DbConnection::Sqlite(_) => "UPDATE ingest_fault SET armed = 0",
    };
    Ok(diesel::sql_query(sql).execute(conn)?)
}

async fn failed_commit_is_redelivered(backend: Backend) {
    let rig = rig(backend, Broker::Mosquitto, |c| c).await;
    let app = &rig.app;
    let metrics = app.state.metrics.clone();
    app.state.db.run(arm_fault).await.expect("arm the fault");

    let start = now_ms() - PER_DEVICE * 1000;
    let mut messages = Vec::new();
    for seq in 0..PER_DEVICE {
        for (d, id) in DEVICES.iter().enumerate() {
            let ts = start + seq * 1000 + d as i64;
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
    let gw = device(rig.port, "bologna-gw-redelivery", None);
    gw.send_all(&messages, total).await;

    let failures = || metrics.telemetry.batch_failures.load(Ordering::Relaxed);
    assert!(
        wait(Duration::from_secs(20), || failures() >= 1).await,
        "the armed trigger made no commit fail"
    );
    let count = || {
        let db = app.state.db.clone();
        async move {
            db.run(|c| {
                readings::table
                    .count()
                    .get_result::<i64>(c)
                    .map_err(DbError::from)
            })
            .await
            .expect("count")
        }
    };
    assert_eq!(count().await, 0, "nothing stored while inserts fail");
    let reconnects_before = metrics.telemetry.reconnects.load(Ordering::Relaxed);
    app.state
        .db
        .run(disarm_fault)
        .await
        .expect("disarm the fault");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while count().await < total as i64 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let keys: Vec<(i32, i64)> = app
        .state
        .db
        .run(|c| {
            readings::table
                .select((readings::device, readings::seq))
                .load::<(i32, i64)>(c)
                .map_err(DbError::from)
        })
        .await
        .expect("keys");
    let distinct: HashSet<_> = keys.iter().copied().collect();
    assert_eq!(distinct.len(), keys.len(), "no reading stored twice");
    assert_eq!(keys.len(), total, "every reading stored once");
    let mut per_device: HashMap<i32, HashSet<i64>> = HashMap::new();
    for (d, seq) in keys {
        per_device.entry(d).or_default().insert(seq);
    }
    assert_eq!(per_device.len(), DEVICES.len());
    for seqs in per_device.values() {
        assert_eq!(seqs, &(0..PER_DEVICE).collect::<HashSet<_>>());
    }
    // The batches came back because the consumer dropped the connection without acknowledging
    // them; the broker had already acknowledged every publish to the device.
    assert!(
        metrics.telemetry.reconnects.load(Ordering::Relaxed) >= reconnects_before.max(1),
        "the consumer reconnected to get the batch again"
    );
    // What the service tells an operator: every message stored, the failures counted.
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let stored_line = format!("spazi_telemetry_readings_stored_total {total}");
    assert!(text.contains(&stored_line), "{stored_line} in:\n{text}");
    assert!(
        !text.contains("spazi_telemetry_batch_failures_total 0\n"),
        "the failed commits are counted:\n{text}"
    );
}

on_both!(failed_commit_is_redelivered_and_stored_once, |b| {
    failed_commit_is_redelivered(b)
});

fn reading(seq: i64) -> ReadingRow {
    let ts = now_ms();
    ReadingRow {
        minute: ReadingRow::minute_of(ts),
        device: 1,
        metric: 1,
        seq,
        ts,
        value: 42.0,
    }
}

fn bug() -> Result<(), DbError> {
    panic!("a bug in a database closure")
}

fn readings_count(conn: &mut DbConnection) -> Result<i64, DbError> {
    Ok(readings::table.count().get_result(conn)?)
}

async fn panicking_closure_answers_an_error(backend: Backend) {
    // The service migrates the database; its own pool is not used here.
    let (url, _dir) = fresh_database(backend);
    let app = crate::helpers::spawn_on(url.clone(), None, |c| c).await;
    drop(app);
    // One database thread, so every closure below runs on the same thread.
    let db = Db::connect(&DbConfig {
        url: url.clone(),
        connections: 1,
    })
    .expect("pool");
    for attempt in 0..3 {
        let outcome: Result<(), DbError> = db
            .run(move |c| {
                write_transaction(c, |c| {
                    diesel::insert_into(readings::table)
                        .values(reading(attempt))
                        .execute(c)?;
                    bug()
                })
            })
            .await;
        match outcome {
            Err(DbError::Panicked(message)) => {
                assert!(message.contains("a bug in a database closure"), "{message}")
            }
            other => panic!("expected a panic answered as an error, got {other:?}"),
        }
        // The same thread answers the next closure, on a connection in no transaction: the
        // panicking closure's insert did not commit.
        assert_eq!(db.run(readings_count).await.expect("next closure runs"), 0);
    }
    // Writes still work, on this pool and from another connection (no lock was left held).
    let stored = db
        .run(|c| insert_batch(c, &[reading(10)], &[]))
        .await
        .expect("a write after the panics");
    assert_eq!(stored.readings, 1);
    let other = Db::connect(&DbConfig {
        url,
        connections: 1,
    })
    .expect("second pool");
    let stored = tokio::time::timeout(
        Duration::from_secs(5),
        other.run(|c| insert_batch(c, &[reading(11)], &[])),
    )
    .await
    .expect("the write lock is free")
    .expect("a write from another connection");
    assert_eq!(stored.readings, 1);
    assert_eq!(db.run(readings_count).await.expect("count"), 2);
}

on_both!(
    panicking_closure_answers_an_error_and_the_pool_goes_on,
    |b| { panicking_closure_answers_an_error(b) }
);
