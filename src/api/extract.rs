//! Request extractors that turn bad input into problem details naming the field.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::web::{Bytes, Data};
use actix_web::{FromRequest, HttpRequest};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::state::AppState;
use crate::domain::access::Caller;
use crate::domain::{FieldError, Role};

/// Largest JSON body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// A JSON body, parsed with the path of any wrong field kept for the error, and the digest
/// of its canonical form (for `Idempotency-Key`: the same JSON, however formatted, matches).
pub struct Json<T>(pub T, pub String);

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let bytes = Bytes::from_request(req, payload);
        Box::pin(async move {
            let mime = content_type
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            if mime != "application/json" && !mime.ends_with("+json") {
                return Err(ApiError::UnsupportedMediaType(
                    "the body must be JSON, sent with Content-Type: application/json".into(),
                ));
            }
            let body = bytes.await.map_err(|_| {
                ApiError::PayloadTooLarge(format!("the body must be at most {MAX_BODY} bytes"))
            })?;
            let (value, canonical) = parse_json::<T>(&body)?;
            let digest = crate::api::tokens::hash_token(&canonical.to_string());
            Ok(Json(value, digest))
        })
    }
}

/// Parses a JSON object into `T`; the canonical form of the value is returned for digests.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<(T, serde_json::Value), ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body is not valid JSON: {} (line {}, column {})",
            strip_position(&e.to_string()),
            e.line(),
            e.column()
        ))
    })?;
    if !value.is_object() {
        return Err(ApiError::field("body", "must be a JSON object"));
    }
    let value = integral_numbers(value);
    if let Some(path) = nul_path(&value, String::new()) {
        return Err(ApiError::field(&path, "must not contain NUL characters"));
    }
    let parsed = serde_path_to_error::deserialize(&value).map_err(|err| {
        let path = err.path().to_string();
        let message = strip_position(&err.into_inner().to_string());
        let field = missing_field(&message)
            .map(|f| {
                if path == "." {
                    f.to_string()
                } else {
                    format!("{path}.{f}")
                }
            })
            .unwrap_or_else(|| {
                if path == "." {
                    "body".to_string()
                } else {
                    path.clone()
                }
            });
        ApiError::Validation(vec![FieldError::new(field, message)])
    })?;
    Ok((parsed, value))
}

/// JSON has one number type: `5.0` is the integer 5 (as JSON Schema's `integer` says), so a
/// float without a fraction is read as an integer wherever one is expected.
fn integral_numbers(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => {
                Value::Number((f as i64).into())
            }
            _ => Value::Number(n),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(integral_numbers).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, integral_numbers(v)))
                .collect(),
        ),
        other => other,
    }
}

/// The path of the first string (key or value) holding a NUL, which PostgreSQL cannot store.
fn nul_path(value: &serde_json::Value, path: String) -> Option<String> {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match value {
        serde_json::Value::String(s) if s.contains('\0') => {
            Some(if path.is_empty() { "body".into() } else { path })
        }
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| nul_path(v, join(&i.to_string()))),
        serde_json::Value::Object(map) => map.iter().find_map(|(k, v)| {
            if k.contains('\0') {
                Some(join("<key>"))
            } else {
                nul_path(v, join(k))
            }
        }),
        _ => None,
    }
}

fn missing_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next()
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Query-string parameters, parsed one by one so each error names its parameter.
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn from_request(req: &HttpRequest) -> Query {
        Query(
            url::form_urlencoded::parse(req.query_string().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn parse<T: std::str::FromStr>(
        &self,
        name: &str,
        what: &str,
    ) -> Result<Option<T>, FieldError> {
        match self.str(name) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| FieldError::new(name, format!("must be {what}"))),
        }
    }

    /// An RFC 3339 instant. A `+` offset sent unencoded arrives as a space, and is read as `+`.
    pub fn instant(&self, name: &str) -> Option<Result<chrono::DateTime<chrono::Utc>, FieldError>> {
        self.str(name)
            .map(|v| crate::domain::time_range::parse_instant(&v.replace(' ', "+"), name))
    }

    /// `limit`, 1 to 500, 50 by default.
    pub fn limit(&self) -> Result<i64, FieldError> {
        let limit = self
            .parse::<i64>("limit", "an integer from 1 to 500")?
            .unwrap_or(50);
        if !(1..=500).contains(&limit) {
            return Err(FieldError::new("limit", "must be an integer from 1 to 500"));
        }
        Ok(limit)
    }
}

/// Collects field errors and fails with all of them at once.
#[derive(Default)]
pub struct Errors(Vec<FieldError>);

impl Errors {
    pub fn take<T>(&mut self, r: Result<T, FieldError>) -> Option<T> {
        r.map_err(|e| self.0.push(e)).ok()
    }

    pub fn push(&mut self, e: FieldError) {
        self.0.push(e);
    }

    pub fn extend(&mut self, e: impl IntoIterator<Item = FieldError>) {
        self.0.extend(e);
    }

    pub fn take_all<T>(&mut self, r: Result<T, Vec<FieldError>>) -> Option<T> {
        r.map_err(|e| self.0.extend(e)).ok()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_vec(self) -> Vec<FieldError> {
        self.0
    }

    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.0))
        }
    }
}

/// The authenticated caller: a valid access token of a live session.
pub struct Auth {
    pub caller: Caller,
    pub session_id: String,
}

impl FromRequest for Auth {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<Data<AppState>>().cloned();
        let header = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Box::pin(async move {
            let state =
                state.ok_or_else(|| ApiError::Internal("application state missing".into()))?;
            let header =
                header.ok_or(ApiError::Unauthorized("a Bearer access token is required"))?;
            let token = header
                .strip_prefix("Bearer ")
                .or_else(|| header.strip_prefix("bearer "))
                .ok_or(ApiError::Unauthorized(
                    "the Authorization header must be: Bearer <token>",
                ))?
                .trim()
                .to_string();
            let claims = state
                .tokens
                .verify(&token)
                .map_err(|_| ApiError::Unauthorized("the access token is invalid or expired"))?;
            let now = crate::db::naive(chrono::Utc::now());
            let (sid, sub) = (claims.sid.clone(), claims.sub.clone());
            let found = state
                .db
                .run(move |c| crate::db::users::session_user(c, &sid, &sub, now))
                .await?;
            let (user, managed_sites) = found.ok_or(ApiError::Unauthorized(
                "the session has ended; log in again",
            ))?;
            let role: Role = user
                .role
                .parse()
                .map_err(|_| ApiError::Internal(format!("user {} has an unknown role", user.id)))?;
            Ok(Auth {
                caller: Caller {
                    user_id: user.id,
                    name: user.name,
                    email: user.email,
                    role,
                    organization_id: user.organization_id,
                    managed_sites,
                },
                session_id: claims.sid,
            })
        })
    }
}

/// The id of the request being served: the client's `X-Request-Id` when it is sane (1 to 128
/// characters of letters, digits and `-_.:`), else a new UUID. Echoed in the response header
/// and as `request_id` in problem details.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

pub const REQUEST_ID: &str = "x-request-id";

impl RequestId {
    pub fn of(headers: &header::HeaderMap) -> RequestId {
        let given = headers
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| {
                (1..=128).contains(&v.len())
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
            });
        RequestId(given.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string))
    }
}

impl FromRequest for RequestId {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        use actix_web::HttpMessage;
        let id = req
            .extensions()
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(|| RequestId::of(req.headers()));
        std::future::ready(Ok(id))
    }
}
