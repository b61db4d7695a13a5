//! An EV booking's charging wish, and the plan made for it when it is booked, as clients send
//! and see them; the plan itself is made by `bookings::charging`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::bookings::charging as plans;
use crate::domain::ChargeMode;

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

impl From<ChargingRequest> for plans::ChargingWish {
    fn from(r: ChargingRequest) -> Self {
        plans::ChargingWish {
            target_wh: r.target_wh,
            mode: r.mode,
        }
    }
}

impl From<plans::ChargingPlan> for ChargingPlan {
    fn from(p: plans::ChargingPlan) -> Self {
        ChargingPlan {
            mode: p.mode,
            target_wh: p.target_wh,
            expected_wh: p.expected_wh,
            expected_solar_wh: p.expected_solar_wh,
            feasible: p.feasible,
            reason: p.reason,
        }
    }
}
