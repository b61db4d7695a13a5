//! The one error type of the HTTP edge, rendered as RFC 9457 problem details.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::db::bookings::BookingWriteError;
use crate::db::DbError;
use crate::domain::FieldError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("the request is not valid")]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{detail}")]
    Conflict { code: &'static str, detail: String },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("too many attempts; retry in {0} seconds")]
    TooManyRequests(u64),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

/// RFC 9457 problem details, with `code` (stable, snake_case) and `errors` for validation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub code: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// The request's `X-Request-Id`, to quote when reporting a problem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl ApiError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        ApiError::Validation(vec![FieldError::new(field, message)])
    }

    fn code_and_title(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::BadRequest(_) => ("malformed_request", "Malformed request"),
            ApiError::Validation(_) => ("validation_failed", "Validation failed"),
            ApiError::Unauthorized(_) => ("unauthorized", "Authentication required"),
            ApiError::Forbidden(_) => ("forbidden", "Forbidden"),
            ApiError::NotFound(_) => ("not_found", "Not found"),
            ApiError::Conflict { code, .. } => (code, "Conflict"),
            ApiError::UnsupportedMediaType(_) => {
                ("unsupported_media_type", "Unsupported media type")
            }
            ApiError::PayloadTooLarge(_) => ("payload_too_large", "Payload too large"),
            ApiError::TooManyRequests(_) => ("too_many_requests", "Too many requests"),
            ApiError::Unavailable(_) => ("service_unavailable", "Service unavailable"),
            ApiError::Internal(_) => ("internal_error", "Internal server error"),
        }
    }

    pub fn problem(&self) -> Problem {
        let (code, title) = self.code_and_title();
        let detail = match self {
            ApiError::Validation(errors) => errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; "),
            ApiError::Internal(_) => "an unexpected error occurred; it has been logged".into(),
            other => other.to_string(),
        };
        Problem {
            kind: format!("/problems/{}", code.replace('_', "-")),
            title: title.to_string(),
            status: self.status_code().as_u16(),
            detail,
            code: code.to_string(),
            errors: match self {
                ApiError::Validation(e) => e.clone(),
                _ => Vec::new(),
            },
            request_id: None,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(cause) = self {
            tracing::error!(%cause, "request failed");
        }
        let mut res = HttpResponse::build(self.status_code());
        res.insert_header((header::CONTENT_TYPE, "application/problem+json"));
        if let ApiError::Unauthorized(_) = self {
            res.insert_header((
                header::WWW_AUTHENTICATE,
                r#"Bearer realm="spazi", error="invalid_token""#,
            ));
        }
        match self {
            ApiError::Unavailable(_) => {
                res.insert_header((header::RETRY_AFTER, "5"));
            }
            ApiError::TooManyRequests(secs) => {
                res.insert_header((header::RETRY_AFTER, secs.to_string()));
            }
            _ => {}
        }
        res.body(serde_json::to_string(&self.problem()).unwrap_or_default())
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::NotFound => ApiError::NotFound("not found".into()),
            DbError::InvalidText(_) => ApiError::BadRequest(
                "the request contains characters that cannot be stored (NUL)".into(),
            ),
            DbError::Busy(m) | DbError::Unavailable(m) | DbError::Retryable(m) => {
                tracing::warn!(cause = %m, "database unavailable");
                ApiError::Unavailable("the database is busy or unreachable; retry shortly".into())
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<BookingWriteError> for ApiError {
    fn from(e: BookingWriteError) -> Self {
        match e {
            BookingWriteError::Overlap => ApiError::Conflict {
                code: "booking_conflict",
                detail: "the resource is already booked for part of [starts_at, ends_at)".into(),
            },
            BookingWriteError::AllowanceExceeded { limit, used } => ApiError::Validation(vec![FieldError::new(
                "ends_at",
                format!(
                    "the organization's monthly allowance would be exceeded ({used} of {limit} minutes used)"
                ),
            )]),
            BookingWriteError::WrongStatus(status) => ApiError::Conflict {
                code: "booking_state_conflict",
                detail: format!("the booking is {status}"),
            },
            BookingWriteError::NotFound => ApiError::NotFound("booking not found".into()),
            BookingWriteError::Db(e) => e.into(),
        }
    }
}

/// Problem details for errors raised by actix itself (unknown route, wrong method, bad path).
pub fn framework_problem(status: StatusCode, detail: &str) -> HttpResponse {
    let title = status.canonical_reason().unwrap_or("Error");
    let code = title.to_ascii_lowercase().replace([' ', '-'], "_");
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, "application/problem+json"))
        .body(
            serde_json::json!({
                "type": format!("/problems/{}", code.replace('_', "-")),
                "title": title,
                "status": status.as_u16(),
                "detail": detail,
                "code": code,
            })
            .to_string(),
        )
}

/// Adds `request_id` to a problem details body; any other body is returned unchanged.
pub fn with_request_id(body: &[u8], request_id: &str) -> Option<Vec<u8>> {
    let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value
        .as_object_mut()?
        .insert("request_id".into(), request_id.into());
    serde_json::to_vec(&value).ok()
}

/// A 405 for a known path, naming the methods it has in `Allow`.
pub fn method_not_allowed(allowed: &[&str]) -> HttpResponse {
    let allow = allowed.join(", ");
    let mut res = framework_problem(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("this path answers only {allow}"),
    );
    if let Ok(value) = header::HeaderValue::from_str(&allow) {
        res.headers_mut().insert(header::ALLOW, value);
    }
    res
}
