//! An EV booking's charging plan, made when it is booked: the site's charging over the booking
//! is simulated minute by minute (`domain::charging`) with the EV bookings already there, a
//! clear-sky PV forecast and the building's expected load, so a target that cannot be met is
//! reported at once. The plan is stored in the booking's own transaction.

use chrono::{Datelike, NaiveDateTime, Timelike};

use crate::db::energy::{self as store, EvPlanRow};
use crate::db::models::Booking;
use crate::db::network::SiteEntry;
use crate::db::{Db, DbError};
use crate::domain::charging::{
    expected_building_w, expected_pv_w, simulate, Charger, Plan, STEP_MS,
};
use crate::domain::{ChargeMode, FieldError, ResourceKind};

/// The most energy one booking may ask for, Wh.
pub const MAX_TARGET_WH: f64 = 200_000.0;

/// What the member wants for the car.
#[derive(Clone, Debug, Default)]
pub struct ChargingWish {
    /// Energy wanted by the booking's end, Wh; none: as much as the mode allows.
    pub target_wh: Option<f64>,
    /// Default `solar_first`.
    pub mode: Option<ChargeMode>,
}

/// The plan made when the booking was made, as the booking's answer shows it.
#[derive(serde::Serialize, utoipa::ToSchema, Clone, Debug)]
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

impl ChargingPlan {
    /// The plan as stored for `booking_id`.
    pub fn row(&self, booking_id: &str, now: NaiveDateTime) -> EvPlanRow {
        EvPlanRow {
            booking_id: booking_id.to_owned(),
            mode: self.mode.as_str().to_owned(),
            target_wh: self.target_wh,
            expected_wh: self.expected_wh,
            expected_solar_wh: self.expected_solar_wh,
            feasible: self.feasible,
            created_at: now,
        }
    }
}

/// The wish's problems, each naming its field.
pub fn validate(wish: &ChargingWish, kind: ResourceKind) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if kind != ResourceKind::EvBay {
        errors.push(FieldError::new(
            "charging",
            "only an EV bay's booking charges a car",
        ));
    }
    if let Some(t) = wish.target_wh {
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
    let Some(t) = chrono::DateTime::from_timestamp_millis(ms) else {
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

use crate::domain::epoch::naive_ms as ms;

/// Plans `booking`'s charging beside the site's other EV bookings (read from the database);
/// stores nothing.
pub async fn plan(
    db: &Db,
    site: &SiteEntry,
    booking: &Booking,
    wish: &ChargingWish,
) -> Result<ChargingPlan, DbError> {
    let mode = wish.mode.unwrap_or(ChargeMode::SolarFirst);
    let (start, end) = (ms(booking.starts_at), ms(booking.ends_at));
    let bays: Vec<String> = site
        .resources
        .iter()
        .filter(|r| r.kind == ResourceKind::EvBay)
        .map(|r| r.resource.id.clone())
        .collect();
    let (site_id, from, to) = (site.site.id.clone(), booking.starts_at, booking.ends_at);
    let (others, plans) = db
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
        target_wh: wish.target_wh,
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
    Ok(ChargingPlan {
        mode,
        target_wh: wish.target_wh,
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
    })
}
