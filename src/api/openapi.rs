use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{
    access, alarms, auth, bookings, devices, energy, error, factors, occupancy, ops, readings,
    sites, statements, utilisation, views,
};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Spazi API", version = "1", description = "Booking and building management for the Spazi per l'Italia network. Errors are RFC 9457 problem details."),
    paths(
        ops::healthz, ops::readyz, ops::metrics,
        auth::signup, auth::verify, auth::login, auth::refresh, auth::logout, auth::me,
        sites::list, sites::get, sites::resources, sites::availability,
        bookings::create::quote, bookings::create::create, bookings::read::list, bookings::read::get,
        bookings::read::ics, bookings::status::cancel, bookings::status::check_in,
        devices::list, devices::provision, devices::get, readings::readings, devices::live,
        alarms::list, alarms::ack,
        access::access, access::qr, access::log, occupancy::occupancy, utilisation::utilisation,
        energy::report, energy::kpis, factors::list_factors, factors::add_factor,
        statements::statement, statements::ev_sessions,
    ),
    components(schemas(error::Problem, crate::domain::FieldError, views::ResourceView, views::SiteRef, views::ZoneRef,
        devices::DeviceView, devices::DeviceDetail, devices::LatestValue, readings::Readings, readings::ReadingItem,
        readings::RawPoint, readings::AggregatePoint, devices::LiveView, devices::LiveDevice, devices::LiveValue,
        devices::Occupancy, devices::ZoneOccupancy, devices::ProvisionRequest, devices::ProvisionedDevice,
        devices::MqttCredentials, devices::MqttTopics, alarms::AlarmOut, alarms::UserRef,
        access::AccessOut, access::AccessLogEntry, occupancy::SiteOccupancy, occupancy::ZoneOccupancyNow,
        occupancy::ResourceOccupancy, utilisation::Utilisation, utilisation::UtilisationItem,
        energy::EnergyReport, energy::EnergyInterval, energy::KpiReport, energy::KpiPeriod, factors::FactorOut,
        factors::NewFactor, statements::Statement, statements::StatementLine, statements::StatementTotals,
        statements::EvSession, statements::EvSessions, bookings::charging::ChargingRequest,
        bookings::charging::ChargingPlan, crate::domain::EnergyQuality, crate::domain::ChargeMode,
        crate::domain::DeviceClass, crate::domain::DeviceStatus, crate::domain::AlarmKind, crate::domain::AlarmState)),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;
