//! The HTTP edge: routes, handlers, extractors, and the mapping of errors to problem details.

pub mod access;
pub mod alarms;
pub mod auth;
pub mod bookings;
pub mod devices;
pub mod energy;
pub mod error;
pub mod extract;
pub mod factors;
pub mod idempotency;
pub mod occupancy;
pub mod openapi;
pub mod ops;
pub mod pages;
pub mod readings;
pub mod sites;
pub mod state;
pub mod statements;
pub mod throttle;
pub mod tokens;
pub mod utilisation;
pub mod views;

use actix_web::web;

/// Every route of the service, in one place.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(ops::healthz))
        .route("/readyz", web::get().to(ops::readyz))
        .route("/metrics", web::get().to(ops::metrics))
        .route("/verify", web::get().to(pages::verify))
        .route("/api/docs", web::get().to(pages::docs_redirect))
        .service(
            utoipa_swagger_ui::SwaggerUi::new("/api/docs/{_:.*}")
                .external_url_unchecked("/api/v1/openapi.json", openapi::document()),
        )
        .service(
            web::scope("/api/v1")
                .route("/auth/signup", web::post().to(auth::signup))
                .route("/auth/verify", web::post().to(auth::verify))
                .route("/auth/login", web::post().to(auth::login))
                .route("/auth/refresh", web::post().to(auth::refresh))
                .route("/auth/logout", web::post().to(auth::logout))
                .route("/me", web::get().to(auth::me))
                .route("/sites", web::get().to(sites::list))
                .route("/sites/{site_id}", web::get().to(sites::get))
                .route(
                    "/sites/{site_id}/resources",
                    web::get().to(sites::resources),
                )
                .route("/sites/{site_id}/devices", web::get().to(devices::list))
                .route(
                    "/sites/{site_id}/devices",
                    web::post().to(devices::provision),
                )
                .route("/sites/{site_id}/live", web::get().to(devices::live))
                .route("/sites/{site_id}/access-log", web::get().to(access::log))
                .route(
                    "/sites/{site_id}/occupancy",
                    web::get().to(occupancy::occupancy),
                )
                .route(
                    "/sites/{site_id}/utilisation",
                    web::get().to(utilisation::utilisation),
                )
                .route("/devices/{device_id}", web::get().to(devices::get))
                .route(
                    "/devices/{device_id}/readings",
                    web::get().to(readings::readings),
                )
                .route("/energy", web::get().to(energy::report))
                .route("/energy/kpis", web::get().to(energy::kpis))
                .route(
                    "/energy/emission-factors",
                    web::get().to(factors::list_factors),
                )
                .route(
                    "/energy/emission-factors",
                    web::post().to(factors::add_factor),
                )
                .route(
                    "/organizations/{organization_id}/statements/{month}",
                    web::get().to(statements::statement),
                )
                .route("/ev/sessions", web::get().to(statements::ev_sessions))
                .route("/alarms", web::get().to(alarms::list))
                .route("/alarms/{alarm_id}/ack", web::post().to(alarms::ack))
                .route("/availability", web::get().to(sites::availability))
                .route("/bookings/quote", web::post().to(bookings::create::quote))
                .route("/bookings", web::post().to(bookings::create::create))
                .route("/bookings", web::get().to(bookings::read::list))
                .route("/bookings/{booking_id}", web::get().to(bookings::read::get))
                .route(
                    "/bookings/{booking_id}/ics",
                    web::get().to(bookings::read::ics),
                )
                .route(
                    "/bookings/{booking_id}/access",
                    web::get().to(access::access),
                )
                .route(
                    "/bookings/{booking_id}/access/qr",
                    web::get().to(access::qr),
                )
                .route(
                    "/bookings/{booking_id}/cancel",
                    web::post().to(bookings::status::cancel),
                )
                .route(
                    "/bookings/{booking_id}/check-in",
                    web::post().to(bookings::status::check_in),
                ),
        );
}
