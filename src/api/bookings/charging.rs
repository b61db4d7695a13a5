//! An EV booking's charging wish, and the plan made for it when it is booked: the site's
//! charging over the booking is simulated minute by minute (`domain::charging`) with the EV
//! bookings already there, a clear-sky PV forecast and the building's expected load, so a
//! target that cannot be met is reported at once.

use chrono::{Datelike, Timelike};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::error::ApiError;
use crate::api::state::AppState;
use crate::db::energy::{self as store, EvPlanRow};
use crate::db::models::Booking;
use crate::db::network::SiteEntry;
use crate::db::DbError;
use crate::domain::charging::{
    expected_building_w, expected_pv_w, simulate, Charger, Plan, STEP_MS,
};
use crate::domain::{ChargeMode, FieldError, ResourceKind};

/// The most energy one booking may ask for, Wh.
const MAX_TARGET_WH: f64 = 200_000.0;

/// What the member wants for the car.
#[derive(Deserialize, ToSchema, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct ChargingRequest {
    /// Energy wanted by the booking's end, Wh (1 to 200,000); none: as much as the mode allows.
    pub target_wh: Option<f64>,
    /// `solar_only`, `solar_first` (default) or `fast`.
    pub mode: Option<ChargeMode>,
}

/// The plan made when the booking was made.
#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct ChargingPlan {
    pub mode: ChargeMode,
    pub target_wh: Option<f64>,
    /// Energy the plan expects to deliver by the booking's end, Wh.
    pub expected_wh: f64,
    /// Of that, from the site's PV surplus, Wh.
    pub expected_solar_wh: f64,
    /// Whether the target can be met by the booking's end (true without a target).
    pub feasible: bool,
    /// Why not, when it cannot.
    pub reason: Option<String>,
}

/// The request's problems, each naming its field.
pub fn validate(req: &ChargingRequest, kind: ResourceKind) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if kind != ResourceKind::EvBay {
        errors.push(FieldError::new(
            "charging",
            "only an EV bay's booking charges a car",
        ));
    }
    if let Some(t) = req.target_wh {
        if !t.is_finite() || !(1.0..=MAX_TARGET_WH).contains(&t) {
            errors.push(FieldError::new(
                "charging.target_wh",
                "must be a number of Wh from 1 to 200000",
            ));
        }
    }
    errors
}

/// Whether the site is open at `ms`.
fn open_at(site: &SiteEntry, ms: i64) -> bool {
    let Some(t) = crate::domain::epoch::try_to_utc(ms) else {
        return false;
    };
    let local = t.with_timezone(&site.tz);
    let minute = (local.hour() * 60 + local.minute()) as u16;
    site.closure(local.date_naive()).is_none()
        && site
            .hours
            .on(local.weekday())
            .iter()
            .any(|&(a, b)| a <= minute && minute < b)
}

fn ms(t: chrono::NaiveDateTime) -> i64 {
    crate::domain::epoch::naive_ms(t)
}

/// Plans the booking's charging beside the site's other EV bookings and stores the plan.
pub async fn plan(
    state: &AppState,
    site: &SiteEntry,
    booking: &Booking,
    req: &ChargingRequest,
) -> Result<ChargingPlan, ApiError> {
    let mode = req.mode.unwrap_or(ChargeMode::SolarFirst);
    let (start, end) = (ms(booking.starts_at), ms(booking.ends_at));
    let bays: Vec<String> = site
        .resources
        .iter()
        .filter(|r| r.kind == ResourceKind::EvBay)
        .map(|r| r.resource.id.clone())
        .collect();
    let (site_id, from, to) = (site.site.id.clone(), booking.starts_at, booking.ends_at);
    let (others, plans) = state
        .db
        .run(move |c| {
            let others: Vec<Booking> =
                store::holding_bookings(c, store::Holder::Site(&site_id), from, to)?
                    .into_iter()
                    .filter(|b| bays.contains(&b.resource_id))
                    .collect();
            let ids: Vec<String> = others.iter().map(|b| b.id.clone()).collect();
            Ok::<_, DbError>((others, store::plans(c, &ids)?))
        })
        .await?;
    let mut sessions: Vec<Plan> = others
        .iter()
        .filter(|b| b.id != booking.id)
        .map(|b| {
            let p = plans.iter().find(|p| p.booking_id == b.id);
            Plan {
                arrival_ms: ms(b.starts_at),
                departure_ms: ms(b.ends_at),
                target_wh: p.and_then(|p| p.target_wh),
                mode: p
                    .and_then(|p| p.mode.parse().ok())
                    .unwrap_or(ChargeMode::SolarFirst),
                charger: Charger::ac22(),
            }
        })
        .collect();
    sessions.push(Plan {
        arrival_ms: start,
        departure_ms: end,
        target_wh: req.target_wh,
        mode,
        charger: Charger::ac22(),
    });
    let (kwp, lat, lon, area) = (
        site.site.pv_kwp,
        site.site.latitude,
        site.site.longitude,
        f64::from(site.site.area_m2),
    );
    let trace = simulate(
        &sessions,
        f64::from(site.site.contracted_power_w),
        STEP_MS,
        start,
        end,
        |t| {
            (
                expected_pv_w(kwp, lat, lon, t),
                expected_building_w(area, open_at(site, t)),
            )
        },
    );
    let outcome = trace.outcomes.last().cloned().unwrap_or_default();
    let feasible = outcome.met;
    let round = |wh: f64| (wh * 10.0).round() / 10.0;
    let plan = ChargingPlan {
        mode,
        target_wh: req.target_wh,
        expected_wh: round(outcome.delivered_wh),
        expected_solar_wh: round(outcome.solar_wh),
        feasible,
        reason: (!feasible).then(|| {
            format!(
                "about {:.1} kWh can be delivered by the booking's end in {} mode, with the site's \
                 contracted power and the other EV bookings",
                outcome.delivered_wh / 1000.0,
                mode.as_str()
            )
        }),
    };
    let row = EvPlanRow {
        booking_id: booking.id.clone(),
        mode: mode.as_str().to_owned(),
        target_wh: req.target_wh,
        expected_wh: plan.expected_wh,
        expected_solar_wh: plan.expected_solar_wh,
        feasible,
        created_at: chrono::Utc::now().naive_utc(),
    };
    state.db.run(move |c| store::insert_plan(c, &row)).await?;
    Ok(plan)
}
