//! Accounts: signup, verification, login, refresh, logout and the caller's profile.

use actix_web::{web, HttpResponse};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ApiError;
use super::extract::{Auth, Errors, Json};
use super::state::AppState;
use super::tokens::{hash_token, opaque_token, ACCESS_TTL, REFRESH_TTL, VERIFICATION_TTL};
use crate::bookings::mail::enqueue;
use crate::db::models::{EmailVerification, RefreshToken, Session, User};
use crate::db::users::{self, Rotation};
use crate::db::{naive, DbError};
use crate::domain::{password, FieldError, Role};
use crate::email::compose;

#[derive(Deserialize, ToSchema)]
pub struct SignupRequest {
    pub email: String,
    pub password: String,
    pub name: String,
}

#[derive(Serialize, ToSchema)]
pub struct SignupResponse {
    pub status: &'static str,
    pub detail: &'static str,
}

#[derive(Deserialize, ToSchema)]
pub struct VerifyRequest {
    pub token: String,
}

#[derive(Deserialize, ToSchema)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Serialize, ToSchema)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
}

#[derive(Serialize, ToSchema)]
pub struct OrganizationRef {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub monthly_allowance_minutes: i32,
}

#[derive(Serialize, ToSchema)]
pub struct Me {
    pub id: String,
    pub email: String,
    pub name: String,
    pub roles: Vec<Role>,
    pub organizations: Vec<OrganizationRef>,
    pub managed_sites: Vec<String>,
    pub verified: bool,
}

/// Lower-cases and checks an email address enough to know mail can be addressed to it.
pub fn normalise_email(email: &str) -> Result<String, FieldError> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !email
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || "<>,;\"".contains(c))
        })
        && email.matches('@').count() == 1;
    if valid {
        Ok(email)
    } else {
        Err(FieldError::new("email", "must be a valid email address"))
    }
}

#[utoipa::path(post, path = "/api/v1/auth/signup", tag = "accounts", request_body = SignupRequest,
    responses((status = 201, body = SignupResponse), (status = 422, body = super::error::Problem)))]
pub async fn signup(
    state: web::Data<AppState>,
    body: Json<SignupRequest>,
) -> Result<HttpResponse, ApiError> {
    let req = body.0;
    let mut errors = Errors::default();
    let email = errors.take(normalise_email(&req.email));
    errors.take(password::check_strength(&req.password));
    let name = req.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 120 {
        errors.push(FieldError::new("name", "must be 1 to 120 characters"));
    }
    errors.finish()?;
    let email = email.unwrap_or_default();
    // Hash in every case, so that a taken address answers in the same time as a new one.
    let pw = req.password.clone();
    let hash = web::block(move || password::hash(&pw))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let now = Utc::now();
    let (token, token_hash) = opaque_token();
    let link = format!("{}/verify?token={token}", state.config.public_url);
    let user = User {
        id: uuid::Uuid::now_v7().to_string(),
        email: email.clone(),
        name: name.clone(),
        password_hash: hash,
        role: Role::Member.as_str().to_string(),
        organization_id: None,
        verified_at: None,
        created_at: naive(now),
    };
    let verification = EmailVerification {
        token_hash,
        user_id: user.id.clone(),
        password_hash: user.password_hash.clone(),
        expires_at: naive(now + VERIFICATION_TTL),
        used_at: None,
    };
    let mail = enqueue(
        "verification",
        &compose::verification(&email, &name, &link),
        naive(now),
    )
    .map_err(ApiError::Internal)?;
    let notice = enqueue(
        "already_registered",
        &compose::already_registered(&email, &state.config.public_url),
        naive(now),
    )
    .map_err(ApiError::Internal)?;
    state
        .db
        .run(
            move |c| match users::create(c, &user, Some(&verification), &[], Some(&mail)) {
                Err(DbError::Duplicate) => {
                    users::signup_again(c, &user.email, &verification, &mail, &notice).map(|_| ())
                }
                other => other,
            },
        )
        .await?;
    state.mail_waker.notify_one();
    Ok(HttpResponse::Created().json(SignupResponse {
        status: "pending_verification",
        detail: "if the address can be registered, a verification email is on its way",
    }))
}

#[utoipa::path(post, path = "/api/v1/auth/verify", tag = "accounts", request_body = VerifyRequest,
    responses((status = 200), (status = 422, body = super::error::Problem)))]
pub async fn verify(
    state: web::Data<AppState>,
    body: Json<VerifyRequest>,
) -> Result<HttpResponse, ApiError> {
    let hash = hash_token(body.0.token.trim());
    let now = naive(Utc::now());
    let ok = state
        .db
        .run(move |c| users::verify_email(c, &hash, now))
        .await?;
    if !ok {
        return Err(ApiError::field(
            "token",
            "is invalid, expired or already used",
        ));
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({"status": "verified"})))
}

const BAD_LOGIN: &str = "the email or password is wrong, or the account is not verified yet";

#[utoipa::path(post, path = "/api/v1/auth/login", tag = "accounts", request_body = LoginRequest,
    responses((status = 200, body = TokenPair), (status = 401, body = super::error::Problem)))]
pub async fn login(
    state: web::Data<AppState>,
    body: Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let req = body.0;
    let email = req.email.trim().to_lowercase();
    state
        .login_throttle
        .check(&email, std::time::Instant::now())
        .map_err(ApiError::TooManyRequests)?;
    let lookup = email.clone();
    let user = state.db.run(move |c| users::by_email(c, &lookup)).await?;
    let stored = user
        .as_ref()
        .map(|u| u.password_hash.clone())
        .unwrap_or_else(|| password::decoy_hash().to_string());
    let pw = req.password;
    let matches = web::block(move || password::verify(&pw, &stored))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let user = match user {
        Some(u) if matches && u.verified_at.is_some() => u,
        _ => {
            state
                .metrics
                .events
                .logins_failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            state
                .login_throttle
                .record_failure(&email, std::time::Instant::now());
            return Err(ApiError::Unauthorized(BAD_LOGIN));
        }
    };
    state.login_throttle.record_success(&email);
    let now = Utc::now();
    let session = Session {
        id: uuid::Uuid::now_v7().to_string(),
        user_id: user.id.clone(),
        created_at: naive(now),
        expires_at: naive(now + REFRESH_TTL),
        revoked_at: None,
    };
    let (refresh, refresh_hash) = opaque_token();
    let token = RefreshToken {
        token_hash: refresh_hash,
        session_id: session.id.clone(),
        created_at: naive(now),
        expires_at: naive(now + REFRESH_TTL),
        spent_at: None,
    };
    let access = state.tokens.issue(&user.id, &session.id, now);
    state
        .db
        .run(move |c| users::start_session(c, &session, &token))
        .await?;
    Ok(HttpResponse::Ok().json(pair(access, refresh)))
}

fn pair(access_token: String, refresh_token: String) -> TokenPair {
    TokenPair {
        access_token,
        refresh_token,
        token_type: "Bearer",
        expires_in: ACCESS_TTL.num_seconds(),
    }
}

#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "accounts", request_body = RefreshRequest,
    responses((status = 200, body = TokenPair), (status = 401, body = super::error::Problem)))]
pub async fn refresh(
    state: web::Data<AppState>,
    body: Json<RefreshRequest>,
) -> Result<HttpResponse, ApiError> {
    let hash = hash_token(body.0.refresh_token.trim());
    let (next, next_hash) = opaque_token();
    let now = Utc::now();
    let outcome = state
        .db
        .run(move |c| {
            users::rotate_refresh(c, &hash, &next_hash, naive(now), naive(now + REFRESH_TTL))
        })
        .await?;
    match outcome {
        Rotation::Rotated {
            user_id,
            session_id,
        } => {
            let access = state.tokens.issue(&user_id, &session_id, now);
            Ok(HttpResponse::Ok().json(pair(access, next)))
        }
        Rotation::Reused => {
            tracing::warn!("a spent refresh token was presented again; its session is revoked");
            Err(ApiError::Unauthorized(
                "the refresh token was already used; the session is revoked",
            ))
        }
        Rotation::Invalid => Err(ApiError::Unauthorized(
            "the refresh token is invalid or expired",
        )),
    }
}

#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "accounts",
    responses((status = 204), (status = 401, body = super::error::Problem)), security(("bearer" = [])))]
pub async fn logout(state: web::Data<AppState>, auth: Auth) -> Result<HttpResponse, ApiError> {
    let now = naive(Utc::now());
    let sid = auth.session_id;
    state
        .db
        .run(move |c| users::revoke_session(c, &sid, now))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(get, path = "/api/v1/me", tag = "accounts",
    responses((status = 200, body = Me), (status = 401, body = super::error::Problem)), security(("bearer" = [])))]
pub async fn me(state: web::Data<AppState>, auth: Auth) -> Result<HttpResponse, ApiError> {
    let caller = auth.caller;
    let uid = caller.user_id.clone();
    let org_id = caller.organization_id.clone();
    let (user, org) = state
        .db
        .run(move |c| {
            let user = users::by_id(c, &uid)?.ok_or(DbError::NotFound)?;
            let org = match &org_id {
                Some(o) => users::organization(c, o)?,
                None => None,
            };
            Ok::<_, DbError>((user, org))
        })
        .await?;
    Ok(HttpResponse::Ok().json(Me {
        id: user.id,
        email: user.email,
        name: user.name,
        roles: vec![caller.role],
        organizations: org
            .map(|o| OrganizationRef {
                id: o.id,
                name: o.name,
                role: if caller.role == Role::CompanyAdmin {
                    Role::CompanyAdmin
                } else {
                    Role::Member
                },
                monthly_allowance_minutes: o.monthly_allowance_minutes,
            })
            .into_iter()
            .collect(),
        managed_sites: caller.managed_sites,
        verified: user.verified_at.is_some(),
    }))
}

#[cfg(test)]
mod tests {
    use super::normalise_email;

    #[test]
    fn emails() {
        assert_eq!(
            normalise_email(" Anna@Example.IT ").unwrap(),
            "anna@example.it"
        );
        for bad in [
            "", "anna", "anna@", "@x.it", "a@b", "a b@x.it", "a@@x.it", "a@x.it>",
        ] {
            assert!(normalise_email(bad).is_err(), "{bad}");
        }
    }
}
