//! Pure types and rules of the booking domain: no I/O, no actix, diesel or rumqttc.

pub mod access;
pub mod access_control;
pub mod charging;
pub mod command;
pub mod devices;
pub mod energy;
pub mod epoch;
pub mod geo;
pub mod holidays;
pub mod kinds;
pub mod network;
pub mod opening_hours;
pub mod password;
pub mod policy;
pub mod presence;
pub mod quarters;
pub mod solar;
pub mod telemetry;
pub mod time_range;

pub use kinds::{
    AlarmKind, AlarmState, BookingStatus, ChargeMode, ClimateMode, DenyReason, DeviceClass,
    DeviceStatus, EnergyQuality, ResourceKind, Role,
};
pub use time_range::TimeRange;

/// A problem with one field of a request, as clients see it in a problem's `errors` array.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}
