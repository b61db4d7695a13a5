//! Alarms: the list a facility manager watches, and acknowledgement.
//!
//! Network admins see every site's alarms, site managers their own sites'; nobody else sees
//! any. An alarm outside the caller's sites answers 404, as if it did not exist.

use std::collections::{BTreeSet, HashMap};

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{NaiveDateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::extract::{Auth, Errors, Query};
use super::state::AppState;
use super::views::{local_text, time_cursor, utc_text, Page};
use crate::db::alarms::{self as store, AlarmFilter, AlarmRow};
use crate::db::{users, utc, DbError};
use crate::domain::access::Caller;
use crate::domain::{AlarmState, FieldError, Role};

/// Who acknowledged an alarm.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserRef {
    pub id: String,
    pub name: String,
}

/// An alarm as clients see it: instants in UTC and in the site's local time.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AlarmOut {
    pub id: String,
    pub site_id: String,
    pub device_id: String,
    pub zone_id: Option<String>,
    /// `device_offline`, `co2_high`, `temperature_out_of_band`, `door_held_open`,
    /// `charger_fault` or `counter_backwards`.
    #[schema(value_type = crate::domain::AlarmKind)]
    pub kind: String,
    /// `warning` or `critical`.
    pub severity: String,
    #[schema(value_type = AlarmState)]
    pub state: String,
    pub message: String,
    /// The reading that raised the alarm, when there is one.
    pub value: Option<f64>,
    pub raised_at: String,
    pub raised_at_local: String,
    pub acknowledged_at: Option<String>,
    pub acknowledged_at_local: Option<String>,
    pub acknowledged_by: Option<UserRef>,
    pub cleared_at: Option<String>,
    pub cleared_at_local: Option<String>,
    pub timezone: String,
}

fn tz_of(state: &AppState, site_id: &str) -> Tz {
    state
        .directory()
        .get(site_id)
        .map(|s| s.tz)
        .unwrap_or(Tz::UTC)
}

fn alarm_out(a: AlarmRow, tz: Tz, names: &HashMap<String, String>) -> AlarmOut {
    let local = |t: Option<NaiveDateTime>| t.map(|t| local_text(utc(t), tz));
    let text = |t: Option<NaiveDateTime>| t.map(|t| utc_text(utc(t)));
    AlarmOut {
        raised_at: utc_text(utc(a.raised_at)),
        raised_at_local: local_text(utc(a.raised_at), tz),
        acknowledged_at: text(a.acknowledged_at),
        acknowledged_at_local: local(a.acknowledged_at),
        acknowledged_by: a.acknowledged_by.map(|id| UserRef {
            name: names
                .get(&id)
                .cloned()
                .unwrap_or_else(|| "(unknown account)".into()),
            id,
        }),
        cleared_at: text(a.cleared_at),
        cleared_at_local: local(a.cleared_at),
        timezone: tz.name().to_string(),
        id: a.id,
        site_id: a.site_id,
        device_id: a.device_id,
        zone_id: a.zone_id,
        kind: a.kind,
        severity: a.severity,
        state: a.state,
        message: a.message,
        value: a.value,
    }
}

/// Renders alarms, looking up the names of the people who acknowledged them.
pub async fn alarm_views(state: &AppState, rows: Vec<AlarmRow>) -> Result<Vec<AlarmOut>, ApiError> {
    let ids: BTreeSet<String> = rows
        .iter()
        .filter_map(|a| a.acknowledged_by.clone())
        .collect();
    let names: HashMap<String, String> = if ids.is_empty() {
        HashMap::new()
    } else {
        state
            .db
            .run(move |c| {
                let mut out = HashMap::new();
                for id in ids {
                    if let Some(u) = users::by_id(c, &id)? {
                        out.insert(id, u.name);
                    }
                }
                Ok::<_, DbError>(out)
            })
            .await?
    };
    Ok(rows
        .into_iter()
        .map(|a| {
            let tz = tz_of(state, &a.site_id);
            alarm_out(a, tz, &names)
        })
        .collect())
}

/// Most live alarms one site's views show; one per kind per device makes more very unlikely.
const LIVE_CAP: usize = 5_000;

/// The live (open or acknowledged) alarms of a site, newest first.
pub async fn live_of_site(state: &AppState, site_id: &str) -> Result<Vec<AlarmRow>, ApiError> {
    let site = site_id.to_string();
    let mut rows = state
        .db
        .run(move |c| {
            let mut out = Vec::new();
            for s in [AlarmState::Open, AlarmState::Acknowledged] {
                let mut filter = AlarmFilter {
                    sites: Some(vec![site.clone()]),
                    state: Some(s.as_str().to_string()),
                    after: None,
                    limit: 500,
                };
                loop {
                    let page = store::list(c, &filter)?;
                    let full = page.len() as i64 == filter.limit;
                    filter.after = page.last().map(|a| (a.raised_at, a.id.clone()));
                    out.extend(page);
                    if !full || out.len() >= LIVE_CAP {
                        break;
                    }
                }
            }
            Ok::<_, DbError>(out)
        })
        .await?;
    rows.sort_by(|a, b| (b.raised_at, &b.id).cmp(&(a.raised_at, &a.id)));
    Ok(rows)
}

/// The sites whose alarms the caller asked for: `None` is every site.
fn scope(
    state: &AppState,
    caller: &Caller,
    site: Option<&str>,
) -> Result<Option<Vec<String>>, ApiError> {
    match caller.role {
        Role::NetworkAdmin => match site {
            Some(s) if state.directory().get(s).is_none() => {
                Err(ApiError::NotFound(format!("no site with id {s:?}")))
            }
            Some(s) => Ok(Some(vec![s.to_string()])),
            None => Ok(None),
        },
        Role::SiteManager => match site {
            Some(s) if caller.manages_site(s) => Ok(Some(vec![s.to_string()])),
            Some(_) => Err(ApiError::Forbidden(
                "only the site's managers may see its alarms".into(),
            )),
            None => Ok(Some(caller.managed_sites.clone())),
        },
        _ => Err(ApiError::Forbidden(
            "alarms are for site managers and network admins".into(),
        )),
    }
}

#[utoipa::path(get, path = "/api/v1/alarms", tag = "building",
    params(("site_id" = Option<String>, Query, description = "one site; site managers: one of theirs"),
           ("state" = Option<AlarmState>, Query),
           ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, description = "alarms, newest first", body = Page<AlarmOut>),
              (status = 401, body = crate::api::error::Problem), (status = 403, body = crate::api::error::Problem),
              (status = 404, body = crate::api::error::Problem), (status = 422, body = crate::api::error::Problem)),
    security(("bearer" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let q = Query::from_request(&req);
    let sites = scope(&state, &auth.caller, q.str("site_id"))?;
    let mut errors = Errors::default();
    let limit = errors.take(q.limit()).unwrap_or(50);
    let wanted = q.str("state").and_then(|s| {
        errors.take(
            s.parse::<AlarmState>()
                .map_err(|e| FieldError::new("state", e)),
        )
    });
    let after = q
        .str("cursor")
        .and_then(|c| errors.take(time_cursor::decode(c)));
    errors.finish()?;
    if sites.as_ref().is_some_and(|s| s.is_empty()) {
        return Ok(HttpResponse::Ok().json(Page::<AlarmOut> {
            items: Vec::new(),
            next_cursor: None,
        }));
    }
    let filter = AlarmFilter {
        sites,
        state: wanted.map(|s| s.as_str().to_string()),
        after,
        limit: limit + 1,
    };
    let mut rows = state.db.run(move |c| store::list(c, &filter)).await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|a| time_cursor::encode(a.raised_at, &a.id))
    } else {
        None
    };
    let items = alarm_views(&state, rows).await?;
    Ok(HttpResponse::Ok().json(Page { items, next_cursor }))
}

#[utoipa::path(post, path = "/api/v1/alarms/{alarm_id}/ack", tag = "building",
    responses((status = 200, description = "acknowledged (or already acknowledged: unchanged)", body = AlarmOut),
              (status = 401, body = crate::api::error::Problem),
              (status = 404, description = "no such alarm at the caller's sites", body = crate::api::error::Problem),
              (status = 409, description = "the alarm is cleared", body = crate::api::error::Problem)),
    security(("bearer" = [])))]
pub async fn ack(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let not_found = || ApiError::NotFound(format!("no alarm {id:?} at your sites"));
    if id.contains('\0') {
        return Err(not_found());
    }
    let key = id.clone();
    let found = state.db.run(move |c| store::find(c, &key)).await?;
    let alarm = match found {
        Some(a) if auth.caller.manages_site(&a.site_id) => a,
        _ => return Err(not_found()),
    };
    let cleared = || ApiError::Conflict {
        code: "alarm_cleared",
        detail: "the alarm is cleared; there is nothing to acknowledge".into(),
    };
    if alarm.state == AlarmState::Cleared.as_str() {
        return Err(cleared());
    }
    let (key, user, at) = (
        id.clone(),
        auth.caller.user_id.clone(),
        Utc::now().naive_utc(),
    );
    let row = state
        .db
        .run(move |c| store::acknowledge(c, &key, &user, at))
        .await?;
    // Cleared between the read and the update: the update left it alone.
    if row.state == AlarmState::Cleared.as_str() {
        return Err(cleared());
    }
    let out = alarm_views(&state, vec![row])
        .await?
        .pop()
        .ok_or_else(|| ApiError::Internal("acknowledged alarm lost".into()))?;
    Ok(HttpResponse::Ok().json(out))
}
