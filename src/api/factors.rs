//! The grid's emission factor: versioned, set by network admins, and cited by every report that
//! turns energy into CO₂.

use actix_web::{web, HttpResponse};
use chrono::{NaiveDate, SecondsFormat};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ApiError;
use super::extract::{Auth, Errors, Json};
use super::state::AppState;
use crate::db::energy::{self as store, FactorRow};
use crate::db::{naive, DbError};
use crate::domain::energy::{EmissionFactor, FACTOR_UNIT};
use crate::domain::FieldError;

/// An emission factor as reports cite it.
#[derive(Serialize, ToSchema, Clone)]
pub struct FactorOut {
    pub version: i32,
    pub value: f64,
    /// `g_co2_per_kwh`.
    pub unit: String,
    pub source: String,
    pub valid_from: String,
    pub created_at: String,
}

impl From<&FactorRow> for FactorOut {
    fn from(f: &FactorRow) -> Self {
        FactorOut {
            version: f.version,
            value: f.value,
            unit: f.unit.clone(),
            source: f.source.clone(),
            valid_from: crate::db::utc(f.valid_from).to_rfc3339_opts(SecondsFormat::Secs, true),
            created_at: crate::db::utc(f.created_at).to_rfc3339_opts(SecondsFormat::Secs, true),
        }
    }
}

/// The emission factors and their domain form.
pub async fn load_factors(
    state: &AppState,
) -> Result<(Vec<FactorRow>, Vec<EmissionFactor>), ApiError> {
    let rows = state.db.run(store::factors).await?;
    let factors = rows.iter().map(FactorRow::factor).collect();
    Ok((rows, factors))
}

/// The factors among `rows` whose versions are in `used`.
pub fn cited(rows: &[FactorRow], used: &[i32]) -> Vec<FactorOut> {
    rows.iter()
        .filter(|r| used.contains(&r.version))
        .map(FactorOut::from)
        .collect()
}

#[utoipa::path(get, path = "/api/v1/energy/emission-factors", tag = "energy",
    responses((status = 200, body = [FactorOut]), (status = 401, body = crate::api::error::Problem)),
    security(("bearer" = [])))]
pub async fn list_factors(
    state: web::Data<AppState>,
    _auth: Auth,
) -> Result<HttpResponse, ApiError> {
    let (rows, _) = load_factors(&state).await?;
    Ok(HttpResponse::Ok().json(rows.iter().map(FactorOut::from).collect::<Vec<_>>()))
}

/// A new version of the grid's emission factor.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewFactor {
    /// g CO₂ per kWh, 0 to 2,000.
    pub value: f64,
    /// `g_co2_per_kwh` (the default).
    pub unit: Option<String>,
    /// Where the value comes from, 1 to 200 characters.
    pub source: String,
    /// When it takes over: RFC 3339 instant or a date (midnight UTC).
    pub valid_from: String,
}

#[utoipa::path(post, path = "/api/v1/energy/emission-factors", tag = "energy", request_body = NewFactor,
    responses((status = 201, body = FactorOut), (status = 401, body = crate::api::error::Problem),
              (status = 403, body = crate::api::error::Problem), (status = 422, body = crate::api::error::Problem)),
    security(("bearer" = [])))]
pub async fn add_factor(
    state: web::Data<AppState>,
    auth: Auth,
    body: Json<NewFactor>,
) -> Result<HttpResponse, ApiError> {
    if !auth.caller.is_network_admin() {
        return Err(ApiError::Forbidden(
            "only network admins set emission factors".into(),
        ));
    }
    let Json(f, _) = body;
    let mut errors = Errors::default();
    if !f.value.is_finite() || !(0.0..=2_000.0).contains(&f.value) {
        errors.push(FieldError::new(
            "value",
            "must be a number from 0 to 2000 (g CO₂/kWh)",
        ));
    }
    if f.unit.as_deref().is_some_and(|u| u != FACTOR_UNIT) {
        errors.push(FieldError::new("unit", format!("must be {FACTOR_UNIT}")));
    }
    let source = f.source.trim().to_owned();
    if source.is_empty() || source.chars().count() > 200 {
        errors.push(FieldError::new("source", "must be 1 to 200 characters"));
    }
    let valid_from = match NaiveDate::parse_from_str(&f.valid_from, "%Y-%m-%d") {
        Ok(d) => Some(d.and_time(chrono::NaiveTime::MIN)),
        Err(_) => errors
            .take(crate::domain::time_range::parse_instant(&f.valid_from, "valid_from").map(naive)),
    };
    errors.finish()?;
    let Some(valid_from) = valid_from else {
        return Err(ApiError::Internal("validated parameters missing".into()));
    };
    let by = auth.caller.user_id.clone();
    let row = state
        .db
        .run(move |c| store::add_factor(c, f.value, &source, valid_from, Some(&by)))
        .await
        .map_err(|e: DbError| ApiError::from(e))?;
    Ok(HttpResponse::Created().json(FactorOut::from(&row)))
}
