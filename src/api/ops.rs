//! Health, readiness and metrics.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use super::state::AppState;
use crate::db::{self, outbox};

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "the process is up", content_type = "application/json",
               example = json!({"status": "ok"}))))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn database_ready(state: &AppState) -> Result<(), String> {
    match tokio::time::timeout(Duration::from_secs(2), db::ping(&state.db)).await {
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

/// Mail that has waited longer than this makes the mail check `degraded` (still ready).
pub const MAIL_DEGRADED_SECS: f64 = 60.0;
/// Mail that has waited longer than this makes the service unready (503).
pub const MAIL_UNREADY_SECS: f64 = 600.0;

async fn mail_backlog(state: &AppState) -> Result<outbox::Backlog, String> {
    let now = crate::db::naive(chrono::Utc::now());
    let query = state.db.run(move |c| outbox::backlog(c, now));
    match tokio::time::timeout(Duration::from_secs(2), query).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 2 s".into()),
    }
}

/// The mail check (how far behind the outbox mailer is) and whether mail leaves the service ready.
fn mail_check(backlog: &Result<outbox::Backlog, String>) -> (serde_json::Value, bool) {
    let b = match backlog {
        Ok(b) => b,
        Err(e) => {
            return (
                serde_json::json!({"status": "unavailable", "detail": format!("outbox not read: {e}")}),
                false,
            )
        }
    };
    let (status, ready) = if b.oldest_secs > MAIL_UNREADY_SECS {
        ("unavailable", false)
    } else if b.oldest_secs > MAIL_DEGRADED_SECS {
        ("degraded", true)
    } else {
        ("ok", true)
    };
    let mut check = serde_json::json!({
        "status": status,
        "backlog": b.due,
        "oldest_due_seconds": b.oldest_secs.floor(),
    });
    if status != "ok" {
        check["detail"] = format!(
            "{} mails due, the oldest queued {:.0} s ago",
            b.due, b.oldest_secs
        )
        .into();
    }
    (check, ready)
}

/// The jobs check: every background job that failed several passes in a row, by name.
fn jobs_check(state: &AppState) -> (serde_json::Value, bool) {
    let failing = state.metrics.jobs.failing();
    if failing.is_empty() {
        return (serde_json::json!({"status": "ok"}), true);
    }
    let detail = failing
        .iter()
        .map(|f| {
            format!(
                "{}: {} failed passes in a row, last: {}",
                f.job, f.in_a_row, f.last_error
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let names: Vec<&str> = failing.iter().map(|f| f.job).collect();
    (
        serde_json::json!({"status": "unavailable", "detail": detail, "failing": names}),
        false,
    )
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "the database and the broker answer", content_type = "application/json",
               example = json!({"status": "ok", "checks": {"database": {"status": "ok"}, "mqtt": {"status": "ok"}, "mail": {"status": "ok", "backlog": 0, "oldest_due_seconds": 0.0}, "jobs": {"status": "ok"}}})),
              (status = 503, description = "a dependency does not answer (not problem details: the same report)",
               content_type = "application/json",
               example = json!({"status": "unavailable", "checks": {"database": {"status": "ok"},
                   "mqtt": {"status": "unavailable", "detail": "connection refused"}}}))))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let (db, mqtt, backlog) = tokio::join!(
        database_ready(&state),
        broker_ready(&state),
        mail_backlog(&state)
    );
    let check = |r: &Result<(), String>| match r {
        Ok(()) => serde_json::json!({"status": "ok"}),
        Err(e) => serde_json::json!({"status": "unavailable", "detail": e}),
    };
    let (mail, mail_ok) = mail_check(&backlog);
    let (jobs, jobs_ok) = jobs_check(&state);
    let ready = db.is_ok() && mqtt.is_ok() && mail_ok && jobs_ok;
    let body = serde_json::json!({
        "status": if ready { "ok" } else { "unavailable" },
        "checks": {
            "database": check(&db),
            "mqtt": check(&mqtt),
            "mail": mail,
            "jobs": jobs,
        },
    });
    if ready {
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
    let backlog = mail_backlog(&state).await;
    let (due, oldest) = backlog.map_or((-1.0, -1.0), |b| (b.due as f64, b.oldest_secs));
    let (connections, idle) = state.db.pool_state();
    let text = state.metrics.render(&[
        (
            "spazi_outbox_pending",
            "Queued emails not yet sent.",
            pending as f64,
        ),
        (
            "spazi_outbox_due",
            "Queued emails due now or being sent (the mailer's backlog).",
            due,
        ),
        (
            "spazi_outbox_oldest_due_seconds",
            "How long the oldest due email has waited since it was queued.",
            oldest,
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
