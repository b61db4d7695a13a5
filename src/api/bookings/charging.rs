//! An EV booking's charging wish, and the plan made for it when it is booked, as clients send
//! and see them; the plan itself is made by `bookings::charging`.

use serde::Deserialize;
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

pub use plans::ChargingPlan;

impl From<ChargingRequest> for plans::ChargingWish {
    fn from(r: ChargingRequest) -> Self {
        plans::ChargingWish {
            target_wh: r.target_wh,
            mode: r.mode,
        }
    }
}
