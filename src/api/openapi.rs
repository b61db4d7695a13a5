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

/// The document served at `/api/v1/openapi.json`: the annotations, completed so that it says
/// what the service answers (every error status an operation can give, as problem details with
/// an example; the constraints its parsers enforce on parameters and bodies).
pub fn document() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document is JSON");
    complete(&mut doc);
    doc
}

/// The HTTP methods an operation can be declared under, in the document's spelling.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Statuses that depend on what a handler decides, by method and path; the ones that follow
/// from an operation's shape (401, 404, 400/413/415/422, 503) are added by `statuses`.
const DECIDED: &[(&str, &str, &[u16])] = &[
    ("post", "/api/v1/auth/login", &[401, 429]),
    ("post", "/api/v1/auth/refresh", &[401]),
    ("post", "/api/v1/bookings", &[403, 409]),
    ("post", "/api/v1/bookings/quote", &[403]),
    ("get", "/api/v1/bookings", &[403]),
    ("post", "/api/v1/bookings/{booking_id}/cancel", &[403, 409]),
    (
        "post",
        "/api/v1/bookings/{booking_id}/check-in",
        &[403, 409],
    ),
    ("post", "/api/v1/sites/{site_id}/devices", &[403, 409]),
    ("post", "/api/v1/alarms/{alarm_id}/ack", &[403, 409]),
    ("get", "/api/v1/alarms", &[403, 404]),
    ("get", "/api/v1/energy", &[403, 404]),
    ("get", "/api/v1/energy/kpis", &[403, 404]),
    ("get", "/api/v1/energy/emission-factors", &[403]),
    ("post", "/api/v1/energy/emission-factors", &[403]),
    ("get", "/api/v1/ev/sessions", &[403, 404]),
    ("get", "/api/v1/availability", &[404]),
    ("get", "/api/v1/sites/{site_id}/access-log", &[403]),
    ("get", "/api/v1/sites/{site_id}/occupancy", &[403]),
    ("get", "/api/v1/sites/{site_id}/utilisation", &[403]),
    ("get", "/api/v1/sites/{site_id}/live", &[403]),
    ("get", "/api/v1/sites/{site_id}/devices", &[403]),
    (
        "get",
        "/api/v1/organizations/{organization_id}/statements/{month}",
        &[403],
    ),
];

/// Operations that never touch the database.
const WITHOUT_DATABASE: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("get", "/readyz"),
    ("get", "/api/v1/sites"),
    ("get", "/api/v1/sites/{site_id}"),
    ("get", "/api/v1/sites/{site_id}/resources"),
];

/// Query parameters that are RFC 3339 instants.
const INSTANTS: &[&str] = &["from", "to", "at", "since", "until"];

/// The error statuses `method path` can answer.
pub fn statuses(method: &str, path: &str, op: &serde_json::Value) -> Vec<u16> {
    let mut out: Vec<u16> = DECIDED
        .iter()
        .filter(|(m, p, _)| *m == method && *p == path)
        .flat_map(|(_, _, s)| s.iter().copied())
        .collect();
    let params = op["parameters"].as_array().map_or(&[][..], Vec::as_slice);
    let has_body = op.get("requestBody").is_some();
    if op.get("security").is_some() {
        out.push(401);
    }
    if path.contains('{') {
        out.push(404);
    }
    if has_body {
        out.extend([400, 413, 415, 422]);
    }
    if params.iter().any(|p| p["in"] != "path") || path.contains('{') {
        out.extend([400, 422]);
    }
    if !WITHOUT_DATABASE.contains(&(method, path)) {
        out.push(503);
    }
    out.sort_unstable();
    out.dedup();
    out
}

fn title_of(status: u16) -> &'static str {
    actix_web::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}

fn complete(doc: &mut serde_json::Value) {
    use serde_json::{json, Value};
    constrain_bodies(doc);
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        for method in METHODS {
            let Some(op) = item.get_mut(method) else {
                continue;
            };
            let wanted = statuses(method, path, op);
            let responses = op["responses"]
                .as_object_mut()
                .expect("every operation has responses");
            for status in &wanted {
                responses
                    .entry(status.to_string())
                    .or_insert_with(|| json!({ "description": title_of(*status) }));
            }
            // Every error the operation documents, annotated or added, is problem details;
            // `/readyz` answers its own report instead.
            let errors: Vec<u16> = responses
                .keys()
                .filter_map(|k| k.parse::<u16>().ok())
                .filter(|s| *s >= 400 && path != "/readyz")
                .collect();
            for status in errors {
                let entry = &mut responses[&status.to_string()];
                let code = title_of(status)
                    .to_ascii_lowercase()
                    .replace([' ', '-'], "_");
                entry["content"] = json!({
                    "application/problem+json": {
                        "schema": { "$ref": "#/components/schemas/Problem" },
                        "example": {
                            "type": format!("/problems/{}", code.replace('_', "-")),
                            "title": title_of(status),
                            "status": status,
                            "detail": "what went wrong, in words",
                            "code": code,
                            "request_id": "0193a5c4-7b1e-7c3a-9d2f-5e8b1a4c6d70",
                        }
                    }
                });
            }
            if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
                for p in params {
                    constrain(path, p);
                    // The query parser reads an empty value as no value.
                    if p["in"] == "query" && p["required"] != true {
                        let schema = p["schema"].take();
                        p["schema"] = json!({ "anyOf": [
                            { "type": "string", "maxLength": 0 },
                            schema,
                        ]});
                    }
                }
            }
        }
    }
}

/// The base64url form of `o:<up to 9 digits>`, the offset cursors of `views::offset_cursor`.
const OFFSET_CURSOR: &str = "^bzo[w-z0-5]((?:[MN][DTjz]|O[DT])[AEIMQUYcgk][w-z0-5]){0,2}((?:[MN][DTjz]|O[DT])[AEIMQUYcgk]|[MN][AQgw]|O[AQ])?$";

/// Lists paged by `views::offset_cursor`.
const OFFSET_PAGED: &[&str] = &[
    "/api/v1/sites",
    "/api/v1/sites/{site_id}/resources",
    "/api/v1/availability",
];

/// A local date or an RFC 3339 instant.
fn date_or_instant() -> serde_json::Value {
    serde_json::json!({ "anyOf": [
        { "type": "string", "format": "date" },
        { "type": "string", "format": "date-time" },
    ]})
}

/// Constraints of request body fields, by schema and property, that their parsers enforce.
fn constrain_bodies(doc: &mut serde_json::Value) {
    use serde_json::json;
    let not_blank = "^[^\\x00]*[^\\s\\x00][^\\x00]*$";
    let rules = [
        (
            "SignupRequest",
            "password",
            json!({ "minLength": 10, "maxLength": 256 }),
        ),
        (
            "SignupRequest",
            "name",
            json!({ "maxLength": 120, "pattern": not_blank }),
        ),
        (
            "SignupRequest",
            "email",
            json!({ "maxLength": 254, "pattern": "^\\s*[^@\\s<>,;\"\\x00-\\x1f\\x7f-\\x9f]+@[^.@\\s<>,;\"\\x00-\\x1f\\x7f-\\x9f][^@\\s<>,;\"\\x00-\\x1f\\x7f-\\x9f]*\\.[^@\\s<>,;\"\\x00-\\x1f\\x7f-\\x9f]*[^.@\\s<>,;\"\\x00-\\x1f\\x7f-\\x9f]\\s*$" }),
        ),
        (
            "BookingRequest",
            "starts_at",
            json!({ "format": "date-time" }),
        ),
        (
            "BookingRequest",
            "ends_at",
            json!({ "format": "date-time" }),
        ),
        ("BookingRequest", "note", json!({ "maxLength": 1000 })),
        ("BookingRequest", "resource_id", json!({ "minLength": 1 })),
        (
            "NewFactor",
            "value",
            json!({ "minimum": 0, "maximum": 2000 }),
        ),
        (
            "NewFactor",
            "source",
            json!({ "maxLength": 200, "pattern": not_blank }),
        ),
        (
            "NewFactor",
            "unit",
            json!({ "enum": ["g_co2_per_kwh", null] }),
        ),
        (
            "ProvisionRequest",
            "id",
            json!({ "pattern": "^[a-z0-9_-]{1,128}$" }),
        ),
        (
            "ProvisionRequest",
            "report_interval_s",
            json!({ "minimum": 1, "maximum": 86400 }),
        ),
        (
            "ChargingRequest",
            "target_wh",
            json!({ "minimum": 1, "maximum": 200000 }),
        ),
    ];
    let bodies: Vec<String> = doc["paths"]
        .as_object()
        .into_iter()
        .flat_map(|paths| paths.values())
        .flat_map(|item| METHODS.iter().filter_map(|m| item.get(*m)))
        .filter_map(|op| {
            op["requestBody"]["content"]["application/json"]["schema"]["$ref"].as_str()
        })
        .filter_map(|r| r.strip_prefix("#/components/schemas/"))
        .map(str::to_string)
        .collect();
    let schemas = &mut doc["components"]["schemas"];
    // No string of a body, key or value, known field or not, may hold a NUL.
    schemas["NulFree"] = json!({
        "description": "Any JSON value whose strings (keys included) hold no NUL character.",
        "anyOf": [
            { "type": "string", "pattern": NUL_FREE },
            { "type": ["number", "boolean", "null"] },
            { "type": "array", "items": { "$ref": "#/components/schemas/NulFree" } },
            { "type": "object", "propertyNames": { "pattern": NUL_FREE },
              "additionalProperties": { "$ref": "#/components/schemas/NulFree" } },
        ]
    });
    let mut pending = bodies;
    let mut seen = std::collections::BTreeSet::new();
    while let Some(name) = pending.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let Some(schema) = schemas.get_mut(&name) else {
            continue;
        };
        if schema.get("properties").is_none() {
            continue;
        }
        schema["propertyNames"] = json!({ "pattern": NUL_FREE });
        if schema.get("additionalProperties").is_none() {
            schema["additionalProperties"] = json!({ "$ref": "#/components/schemas/NulFree" });
        }
        let props = schema
            .get_mut("properties")
            .and_then(serde_json::Value::as_object_mut)
            .into_iter()
            .flatten();
        for (_, prop) in props {
            nul_free_strings(prop, &mut pending);
        }
    }
    for (schema, property, extra) in rules {
        let Some(target) = schemas
            .get_mut(schema)
            .and_then(|s| s.get_mut("properties"))
            .and_then(|p| p.get_mut(property))
            .and_then(serde_json::Value::as_object_mut)
        else {
            continue;
        };
        for (k, v) in extra.as_object().into_iter().flatten() {
            target.insert(k.clone(), v.clone());
        }
    }
    if let Some(valid_from) = schemas
        .get_mut("NewFactor")
        .and_then(|s| s.get_mut("properties"))
        .and_then(|p| p.get_mut("valid_from"))
    {
        let description = valid_from.get("description").cloned();
        *valid_from = date_or_instant();
        if let Some(d) = description {
            valid_from["description"] = d;
        }
    }
}

/// A string without NUL, which the JSON extractor refuses anywhere in a body.
const NUL_FREE: &str = "^[^\\x00]*$";

/// Gives the string schemas inside `schema` the NUL rule, and queues the schemas it refers to.
fn nul_free_strings(schema: &mut serde_json::Value, pending: &mut Vec<String>) {
    use serde_json::Value;
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        if let Some(name) = r.strip_prefix("#/components/schemas/") {
            pending.push(name.to_string());
        }
        return;
    }
    let is_string = schema["type"] == "string"
        || schema["type"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "string"));
    if is_string && schema.get("pattern").is_none() && schema.get("enum").is_none() {
        schema["pattern"] = Value::from(NUL_FREE);
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(items) = schema.get_mut(key).and_then(Value::as_array_mut) {
            for item in items {
                nul_free_strings(item, pending);
            }
        }
    }
    if let Some(items) = schema.get_mut("items") {
        nul_free_strings(items, pending);
    }
}

/// Gives a parameter the constraints its parser enforces.
fn constrain(path: &str, p: &mut serde_json::Value) {
    use serde_json::json;
    let name = p["name"].as_str().unwrap_or_default().to_string();
    let location = p["in"].as_str().unwrap_or_default().to_string();
    let required = p["required"] == true;
    let Some(schema) = p.get_mut("schema") else {
        return;
    };
    let nullable_string = schema["type"] == "string" || schema["type"] == json!(["string", "null"]);
    // An empty query value counts as absent, so a required one must have a character.
    if location == "query" && required && schema["type"] == "string" {
        schema["minLength"] = json!(1);
    }
    let energy = path.starts_with("/api/v1/energy") && !path.contains("emission");
    match (location.as_str(), name.as_str()) {
        ("query", "limit") => {
            *schema = json!({ "type": "integer", "format": "int64", "minimum": 1, "maximum": 500, "default": 50 });
        }
        ("query", "cursor") if OFFSET_PAGED.contains(&path) => {
            schema["pattern"] = json!(OFFSET_CURSOR);
        }
        ("query", "cursor") => {
            schema["pattern"] = json!("^[A-Za-z0-9_-]{1,1024}$");
        }
        ("query", "from" | "to") if energy => {
            *schema = date_or_instant();
        }
        ("query", "scope") => {
            schema["pattern"] = json!("^(network|site:.+|region:.+)$");
        }
        ("query", "interval") if energy => {
            schema["enum"] = json!(["15m", "1h", "1d", "1mo"]);
        }
        ("query", "interval") => {
            schema["enum"] = json!(["raw", "15m", "1h", "1d"]);
        }
        ("query", "period") => {
            schema["enum"] = json!(["day", "month", "year", "all"]);
        }
        ("query", "by") => {
            schema["enum"] = json!(["resource", "zone", "day"]);
        }
        ("query", "near") => {
            schema["pattern"] = json!(
                "^-?(90(\\.0+)?|[1-8]?[0-9](\\.[0-9]+)?),-?(180(\\.0+)?|(1[0-7][0-9]|[1-9]?[0-9])(\\.[0-9]+)?)$"
            );
        }
        ("query", "radius_km") => {
            schema["exclusiveMinimum"] = json!(0);
        }
        ("path", "month") => {
            schema["pattern"] = json!("^[0-9]{4}-(0[1-9]|1[0-2])$");
        }
        ("query", n) if INSTANTS.contains(&n) && nullable_string => {
            schema["format"] = json!("date-time");
        }
        ("header", "Idempotency-Key") => {
            schema["pattern"] = json!("^[\\x21-\\x7e]{1,255}$");
        }
        _ => {}
    }
}

/// What the service answers to `method` on `path`: `None` when no route has that path,
/// else the methods it has there (upper case).
pub fn allowed_methods(path: &str) -> Option<Vec<&'static str>> {
    use actix_web::dev::ResourceDef;
    use std::sync::OnceLock;
    static ROUTES: OnceLock<Vec<(ResourceDef, Vec<&'static str>)>> = OnceLock::new();
    let routes = ROUTES.get_or_init(|| {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
        let mut routes: Vec<(ResourceDef, Vec<&'static str>)> = doc["paths"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(path, item)| {
                let methods = METHODS
                    .iter()
                    .filter(|m| item.get(**m).is_some())
                    .map(|m| match *m {
                        "get" => "GET",
                        "put" => "PUT",
                        "post" => "POST",
                        "delete" => "DELETE",
                        "options" => "OPTIONS",
                        "head" => "HEAD",
                        "patch" => "PATCH",
                        _ => "TRACE",
                    })
                    .collect();
                (ResourceDef::new(path.as_str()), methods)
            })
            .collect();
        for path in ["/verify", "/api/docs", "/api/v1/openapi.json"] {
            routes.push((ResourceDef::new(path), vec!["GET"]));
        }
        routes
    });
    routes
        .iter()
        .find(|(def, _)| def.is_match(path))
        .map(|(_, methods)| methods.clone())
}
