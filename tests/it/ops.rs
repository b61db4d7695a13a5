//! Health, readiness, metrics, OpenAPI and the documentation page; migrations in step.

use std::collections::BTreeSet;

use spazi::config::MqttConfig;

use crate::helpers::{spawn, spawn_with};
use crate::on_both;

on_both!(health_ready_and_metrics, |backend| async move {
    let app = spawn(backend).await;
    let (s, health) = app.get_json("/healthz", None).await;
    assert_eq!((s, health["status"].as_str()), (200, Some("ok")));
    let (s, ready) = app.get_json("/readyz", None).await;
    assert_eq!(s, 200, "{ready}");
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains(
            "spazi_http_requests_total{method=\"GET\",route=\"/readyz\",status=\"200\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("# TYPE spazi_outbox_pending gauge"));
});

on_both!(readiness_names_the_missing_broker, |backend| async move {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = spawn_with(backend, |mut c| {
        c.mqtt = MqttConfig::External {
            host: "127.0.0.1".into(),
            port,
        };
        c
    })
    .await;
    let (s, ready) = app.get_json("/readyz", None).await;
    assert_eq!(s, 503);
    assert_eq!(ready["checks"]["mqtt"]["status"], "unavailable");
    assert_eq!(ready["checks"]["database"]["status"], "ok");
});

on_both!(embedded_broker_is_ready, |backend| async move {
    let app = spawn_with(backend, |mut c| {
        c.mqtt = MqttConfig::Embedded("127.0.0.1:0".parse().unwrap());
        c
    })
    .await;
    let (s, ready) = app.get_json("/readyz", None).await;
    assert_eq!(s, 200, "{ready}");
});

on_both!(openapi_and_offline_docs, |backend| async move {
    let app = spawn(backend).await;
    let (s, spec) = app.get_json("/api/v1/openapi.json", None).await;
    assert_eq!(s, 200);
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/bookings",
        "/api/v1/availability",
        "/api/v1/auth/login",
        "/api/v1/bookings/{booking_id}/cancel",
        "/api/v1/energy",
        "/api/v1/energy/kpis",
        "/api/v1/organizations/{organization_id}/statements/{month}",
        "/api/v1/ev/sessions",
    ] {
        assert!(
            spec["paths"][path].is_object(),
            "{path} missing from the OpenAPI description"
        );
    }
    // Every schema referred to is described.
    fn refs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    match (k.as_str(), x.as_str()) {
                        ("$ref", Some(r)) => out.push(r.to_owned()),
                        _ => refs(x, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&spec, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r.trim_start_matches("#/components/schemas/");
        assert!(
            spec["components"]["schemas"][name].is_object(),
            "{r} is referred to but not described"
        );
    }
    let docs = app.client.get(app.url("/api/docs/")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    let html = docs.text().await.unwrap();
    assert!(html.contains("swagger"), "{html}");
    assert!(
        !html.contains("cdn") && !html.contains("unpkg"),
        "docs must be served offline"
    );
});

#[test]
fn migration_folders_are_in_step() {
    let names = |backend: &str| -> BTreeSet<String> {
        std::fs::read_dir(format!(
            "{}/migrations/{backend}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
    };
    let (sqlite, postgres) = (names("sqlite"), names("postgres"));
    assert!(!sqlite.is_empty());
    assert_eq!(sqlite, postgres);
    for m in &sqlite {
        for file in ["up.sql", "down.sql"] {
            for backend in ["sqlite", "postgres"] {
                let path = format!(
                    "{}/migrations/{backend}/{m}/{file}",
                    env!("CARGO_MANIFEST_DIR")
                );
                assert!(std::path::Path::new(&path).exists(), "{path} missing");
            }
        }
    }
}

#[test]
fn migrations_create_the_same_tables() {
    let tables = |backend: &str| -> BTreeSet<String> {
        let dir = format!("{}/migrations/{backend}", env!("CARGO_MANIFEST_DIR"));
        let mut out = BTreeSet::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let sql = std::fs::read_to_string(e.unwrap().path().join("up.sql")).unwrap();
            for line in sql.lines() {
                if let Some(rest) = line.trim().strip_prefix("CREATE TABLE ") {
                    out.insert(rest.split_whitespace().next().unwrap().to_string());
                }
            }
        }
        out
    };
    assert_eq!(tables("sqlite"), tables("postgres"));
}

#[test]
fn every_pooled_sqlite_connection_is_configured() {
    #[derive(diesel::QueryableByName)]
    struct Mode {
        #[diesel(sql_type = diesel::sql_types::Text)]
        journal_mode: String,
    }
    #[derive(diesel::QueryableByName)]
    struct Flag {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        foreign_keys: i64,
    }
    #[derive(diesel::QueryableByName)]
    struct Timeout {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        timeout: i64,
    }
    use diesel::RunQueryDsl;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("p.db").display());
    let db = spazi::db::Db::connect(&spazi::db::DbConfig::new(url)).unwrap();
    // Four threads meet at a barrier while holding a connection each, so four distinct connections are checked.
    let barrier = std::sync::Barrier::new(4);
    let held: Vec<(String, i64, i64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    db.run_blocking(|c| {
                        barrier.wait();
                        let err = spazi::db::DbError::from;
                        let mode: Mode = diesel::sql_query("PRAGMA journal_mode")
                            .get_result(c)
                            .map_err(err)?;
                        let fk: Flag = diesel::sql_query("PRAGMA foreign_keys")
                            .get_result(c)
                            .map_err(err)?;
                        let busy: Timeout = diesel::sql_query("PRAGMA busy_timeout")
                            .get_result(c)
                            .map_err(err)?;
                        Ok::<_, spazi::db::DbError>((
                            mode.journal_mode,
                            fk.foreign_keys,
                            busy.timeout,
                        ))
                    })
                    .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (mode, fk, busy) in held {
        assert_eq!(mode, "wal");
        assert_eq!(fk, 1);
        assert!(busy >= 1000, "busy_timeout {busy}");
    }
}
