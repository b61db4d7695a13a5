//! Health, readiness and metrics.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use diesel::RunQueryDsl;

use super::state::AppState;
use crate::db::{outbox, DbError};

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "the process is up", content_type = "application/json",
               example = json!({"status": "ok"}))))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn database_ready(state: &AppState) -> Result<(), String> {
    let ping = state.db.run(|c| {
        diesel::sql_query("SELECT 1")
            .execute(c)
            .map_err(DbError::from)?;
        Ok::<_, DbError>(())
    });
    match tokio::time::timeout(Duration::from_secs(2), ping).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 2 s".into()),
    }
}

/// A real MQTT 3.1.1 handshake: any CONNACK, even a refusal, proves the broker is serving.
async fn broker_ready(state: &AppState) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(addr) = &state.mqtt_addr else {
        return Err("no broker configured".into());
    };
    let handshake = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let client_id = format!(
            "spazi-readyz-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let mut packet = vec![
            0x10,
            (10 + 2 + client_id.len()) as u8,
            0,
            4,
            b'M',
            b'Q',
            b'T',
            b'T',
            4,
            0x02,
            0,
            5,
        ];
        packet.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
        packet.extend_from_slice(client_id.as_bytes());
        stream.write_all(&packet).await?;
        let mut connack = [0u8; 4];
        stream.read_exact(&mut connack).await?;
        let _ = stream.write_all(&[0xE0, 0x00]).await;
        Ok::<_, std::io::Error>(connack)
    };
    match tokio::time::timeout(Duration::from_secs(2), handshake).await {
        Ok(Ok([0x20, 0x02, _, _])) => Ok(()),
        Ok(Ok(other)) => Err(format!("{addr}: unexpected answer {other:02x?}")),
        Ok(Err(e)) => Err(format!("{addr}: {e}")),
        Err(_) => Err(format!("{addr}: no answer within 2 s")),
    }
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "the database and the broker answer", content_type = "application/json",
               example = json!({"status": "ok", "checks": {"database": {"status": "ok"}, "mqtt": {"status": "ok"}}})),
              (status = 503, description = "a dependency does not answer (not problem details: the same report)",
               content_type = "application/json",
               example = json!({"status": "unavailable", "checks": {"database": {"status": "ok"},
                   "mqtt": {"status": "unavailable", "detail": "connection refused"}}}))))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let (db, mqtt) = tokio::join!(database_ready(&state), broker_ready(&state));
    let check = |r: &Result<(), String>| match r {
        Ok(()) => serde_json::json!({"status": "ok"}),
        Err(e) => serde_json::json!({"status": "unavailable", "detail": e}),
    };
    let body = serde_json::json!({
        "status": if db.is_ok() && mqtt.is_ok() { "ok" } else { "unavailable" },
        "checks": {"database": check(&db), "mqtt": check(&mqtt)},
    });
    if db.is_ok() && mqtt.is_ok() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String,
               example = "# HELP spazi_outbox_pending Queued emails not yet sent.\n# TYPE spazi_outbox_pending gauge\nspazi_outbox_pending 0\n")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let pending = state.db.run(outbox::pending).await.unwrap_or(-1);
    let (connections, idle) = state.db.pool_state();
    let text = state.metrics.render(&[
        (
            "spazi_outbox_pending",
            "Queued emails not yet sent.",
            pending as f64,
        ),
        (
            "spazi_db_connections",
            "Open database connections.",
            f64::from(connections),
        ),
        (
            "spazi_db_connections_idle",
            "Idle database connections.",
            f64::from(idle),
        ),
        (
            "spazi_sites",
            "Sites in the network.",
            state.directory().sites.len() as f64,
        ),
    ]);
    HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        ))
        .body(text)
}
