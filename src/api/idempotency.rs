//! `Idempotency-Key` on creating POSTs: replay the first response, refuse a changed body.

use std::future::Future;

use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use chrono::Utc;

use super::error::ApiError;
use super::state::AppState;
use crate::db::idempotency::{self, Begin};
use crate::db::naive;

/// The outcome of a creating handler: status, JSON body and `Location`.
pub struct Created {
    pub status: StatusCode,
    pub body: serde_json::Value,
    pub location: Option<String>,
}

fn respond(
    status: StatusCode,
    body: String,
    location: Option<&str>,
    replayed: bool,
) -> HttpResponse {
    let mut res = HttpResponse::build(status);
    let content_type = if status.is_success() {
        "application/json"
    } else {
        "application/problem+json"
    };
    res.insert_header((header::CONTENT_TYPE, content_type));
    if let Some(loc) = location {
        res.insert_header((header::LOCATION, loc.to_string()));
    }
    if replayed {
        res.insert_header(("Idempotent-Replayed", "true"));
    }
    if status == StatusCode::UNAUTHORIZED {
        res.insert_header((header::WWW_AUTHENTICATE, r#"Bearer realm="spazi""#));
    }
    res.body(body)
}

fn key_of(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(raw) = req.headers().get("Idempotency-Key") else {
        return Ok(None);
    };
    let key = raw
        .to_str()
        .ok()
        .filter(|k| {
            !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| (0x21..=0x7e).contains(&b))
        })
        .ok_or_else(|| {
            ApiError::field(
                "Idempotency-Key",
                "must be 1 to 255 visible ASCII characters",
            )
        })?;
    Ok(Some(key.to_string()))
}

/// Runs `handler` once per `(caller, key)`; later calls with the same key get its response.
pub async fn once<F, Fut>(
    state: &AppState,
    req: &HttpRequest,
    user_id: &str,
    digest: &str,
    handler: F,
) -> Result<HttpResponse, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Created, ApiError>>,
{
    let Some(key) = key_of(req)? else {
        let created = handler().await?;
        return Ok(respond(
            created.status,
            created.body.to_string(),
            created.location.as_deref(),
            false,
        ));
    };
    let scoped = format!("{} {}", req.path(), key);
    let (uid, k, d) = (user_id.to_string(), scoped.clone(), digest.to_string());
    let now = naive(Utc::now());
    let begun = state
        .db
        .run(move |c| idempotency::begin(c, &uid, &k, &d, now))
        .await?;
    if let Begin::Existing(record) = begun {
        if record.request_hash != digest {
            return Err(ApiError::field(
                "Idempotency-Key",
                "was already used with a different request body",
            ));
        }
        return match (record.status_code, record.response_body) {
            (Some(status), Some(body)) => Ok(respond(
                StatusCode::from_u16(status as u16).unwrap_or(StatusCode::OK),
                body,
                record.location.as_deref(),
                true,
            )),
            _ => Err(ApiError::Conflict {
                code: "idempotency_in_progress",
                detail: "a request with this Idempotency-Key is still being processed".into(),
            }),
        };
    }
    let outcome = handler().await;
    let (uid, k) = (user_id.to_string(), scoped);
    let (status, body, location) = match &outcome {
        Ok(c) => (c.status, c.body.to_string(), c.location.clone()),
        Err(e) if e.status_code().is_client_error() => (
            e.status_code(),
            serde_json::to_string(&e.problem()).unwrap_or_default(),
            None,
        ),
        Err(_) => {
            state
                .db
                .run(move |c| idempotency::abandon(c, &uid, &k))
                .await?;
            return Err(outcome
                .err()
                .unwrap_or_else(|| ApiError::Internal("lost error".into())));
        }
    };
    let (b, l) = (body.clone(), location.clone());
    state
        .db
        .run(move |c| {
            idempotency::finish(c, &uid, &k, i32::from(status.as_u16()), &b, l.as_deref())
        })
        .await?;
    Ok(respond(status, body, location.as_deref(), false))
}
