//! Builds the running service: storage, the broker, background jobs and the HTTP server.

use std::net::TcpListener;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Server, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{web, App, HttpServer};
use anyhow::Context;

use crate::api::error::{framework_problem, method_not_allowed, with_request_id};
use crate::api::extract::{RequestId, MAX_BODY, REQUEST_ID};
use crate::api::state::AppState;
use crate::api::tokens::TokenKeys;
use crate::config::{Config, MqttConfig};
use crate::db::network::Directory;
use crate::db::{migrations, network, Db, DbConfig};
use crate::domain::network::{generate, DEFAULT_SEED};
use crate::email::{MailConfig, Mailer};
use crate::fleet::Fleet;
use crate::grants::Grants;
use crate::jobs::housekeeping;
use crate::jobs::mailer::MailJob;
use crate::jobs::release::Release;
use crate::jobs::supervisor::Supervisor;
use crate::jobs::watch::{Thresholds, Watch};
use crate::jobs::{retention, rollup};
use crate::metrics::Metrics;
use crate::telemetry::charging::SmartCharging;
use crate::telemetry::climate::Climate;
use crate::telemetry::doors::{AnswerBroker, Doors};
use crate::telemetry::grant_lists;
use crate::telemetry::ingest::{self, IngestOptions, Pipeline};

pub struct Application {
    pub port: u16,
    pub state: web::Data<AppState>,
    server: Server,
}

/// Opens the database, migrates it, and on an empty database seeds the network.
pub fn prepare_database(url: &str) -> anyhow::Result<Db> {
    let db = Db::connect(&DbConfig::new(url)).context("opening the database")?;
    let applied = migrations::run(&db)?;
    if applied > 0 {
        tracing::info!(applied, "migrations applied");
    }
    let added = db.run_blocking(|c| network::seed(c, &generate(DEFAULT_SEED)))?;
    if added != network::Seeded::default() {
        tracing::info!(
            sites = added.sites,
            devices = added.devices,
            "network seeded"
        );
    }
    Ok(db)
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let url = config.database_url.clone();
        let db = tokio::task::spawn_blocking(move || prepare_database(&url)).await??;
        let directory = db.run_blocking(Directory::load)?;
        let (mqtt_host, mqtt_port) = match &config.mqtt {
            MqttConfig::Embedded(listen) => {
                let addr = crate::telemetry::broker::start_embedded(*listen)?;
                tracing::info!(%addr, "embedded MQTT broker listening");
                (addr.ip().to_string(), addr.port())
            }
            MqttConfig::External { host, port } => (host.clone(), *port),
        };
        let mqtt_addr = format!("{mqtt_host}:{mqtt_port}");
        let fleet = Arc::new(Fleet::default());
        let rows = db.run_blocking(crate::db::telemetry::load_devices)?;
        fleet.load(&rows, |site| {
            directory
                .get(site)
                .map_or(chrono_tz::Europe::Rome, |s| s.tz)
        });
        let now = chrono::Utc::now().naive_utc();
        let issued = db.run_blocking(move |c| crate::db::access::backfill(c, now))?;
        if issued > 0 {
            tracing::info!(
                bookings = issued,
                "door credentials issued to bookings that had none"
            );
        }
        let grants = Arc::new(Grants::default());
        let since = chrono::Utc::now().naive_utc() - chrono::Duration::days(1);
        let rows = db.run_blocking(move |c| crate::db::access::grants(c, None, since))?;
        grants.load_all(&rows, directory.sites.iter().map(|s| s.site.id.clone()));
        let mail_config = MailConfig::parse(&config.mail_url).context("SPAZI_MAIL_URL")?;
        let mailer = Mailer::new(&mail_config).context("setting up the mail transport")?;
        let metrics = Arc::new(Metrics::default());
        let waker = Arc::new(tokio::sync::Notify::new());
        let state = web::Data::new(AppState {
            db: db.clone(),
            directory: RwLock::new(Arc::new(directory)),
            tokens: TokenKeys::new(&config.jwt_secret),
            metrics: metrics.clone(),
            mail_waker: waker.clone(),
            login_throttle: Default::default(),
            mqtt_addr: Some(mqtt_addr),
            fleet: fleet.clone(),
            grants,
            config: config.clone(),
        });
        let supervisor = Supervisor::new(metrics.clone());
        start_telemetry(&supervisor, &state, &config, mqtt_host, mqtt_port).await;
        let mail = MailJob {
            db: db.clone(),
            mailer,
            from: config.mail_from.clone(),
            waker,
            metrics,
            poll: Duration::from_secs(config.mail_poll_secs.max(1)),
        };
        supervisor.spawn("mailer", move || mail.clone().run());
        let upkeep = db.clone();
        supervisor.every("booking_completion", Duration::from_secs(60), move || {
            let db = upkeep.clone();
            async move { housekeeping::pass(&db).await }
        });
        let dir_state = state.clone();
        supervisor.every_later("directory_refresh", DIRECTORY_EVERY, move || {
            refresh_directory(dir_state.clone())
        });
        let stats = db.clone();
        supervisor.every("analyze", crate::jobs::analyze::EVERY, move || {
            let db = stats.clone();
            async move {
                crate::jobs::analyze::pass(&db, Default::default())
                    .await
                    .map(|_| ())
            }
        });

        let listener = TcpListener::bind(&config.listen)
            .with_context(|| format!("binding SPAZI_LISTEN {}", config.listen))?;
        let port = listener.local_addr()?.port();
        let data = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(MAX_BODY))
                .wrap(ErrorHandlers::new().default_handler(problem_for_framework_errors))
                .wrap_fn(|req, srv| {
                    use actix_web::dev::Service;
                    use actix_web::HttpMessage;
                    use tracing::Instrument;
                    let started = Instant::now();
                    let method = req.method().to_string();
                    let request_id = RequestId::of(req.headers());
                    req.extensions_mut().insert(request_id.clone());
                    let span = tracing::info_span!(
                        "request",
                        %method,
                        path = %req.path(),
                        request_id = %request_id.0,
                    );
                    let metrics = req
                        .app_data::<web::Data<AppState>>()
                        .map(|s| s.metrics.clone());
                    let fut = span.in_scope(|| srv.call(req));
                    async move {
                        let res = fut.await?;
                        let route = res
                            .request()
                            .match_pattern()
                            .unwrap_or_else(|| "unmatched".into());
                        let status = res.status().as_u16();
                        let secs = started.elapsed().as_secs_f64();
                        if let Some(m) = metrics {
                            m.observe(&method, &route, status, secs);
                        }
                        tracing::debug!(%method, %route, status, ms = secs * 1000.0, "request");
                        tag_request_id(res, &request_id.0).await
                    }
                    .instrument(span)
                })
                .configure(crate::api::routes)
                .default_service(web::to(|req: actix_web::HttpRequest| async move {
                    match crate::api::openapi::allowed_methods(req.path()) {
                        Some(allowed) => method_not_allowed(&allowed),
                        None => framework_problem(
                            actix_web::http::StatusCode::NOT_FOUND,
                            "no such route",
                        ),
                    }
                }))
        })
        .listen(listener)?
        .run();
        tracing::info!(port, url = %format!("http://{}", display_addr(&config.listen, port)), "HTTP server listening");
        Ok(Application {
            port,
            state,
            server,
        })
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

fn display_addr(listen: &str, port: u16) -> String {
    let host = listen.rsplit_once(':').map_or(listen, |(h, _)| h);
    format!("{host}:{port}")
}

/// Echoes the request id in `X-Request-Id` and, in problem details, as `request_id`.
async fn tag_request_id<B>(
    res: ServiceResponse<B>,
    request_id: &str,
) -> actix_web::Result<ServiceResponse<BoxBody>>
where
    B: MessageBody + 'static,
{
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/problem+json"));
    let mut res = if is_problem {
        let (req, res) = res.into_parts();
        let (res, body) = res.into_parts();
        let bytes = actix_web::body::to_bytes(body)
            .await
            .map_err(|_| actix_web::error::ErrorInternalServerError("unreadable response"))?;
        let tagged = with_request_id(&bytes, request_id).unwrap_or_else(|| bytes.to_vec());
        ServiceResponse::new(req, res.set_body(BoxBody::new(tagged)))
    } else {
        res.map_into_boxed_body()
    };
    if let Ok(value) = header::HeaderValue::from_str(request_id) {
        res.headers_mut()
            .insert(header::HeaderName::from_static(REQUEST_ID), value);
    }
    Ok(res)
}

/// Turns actix's own plain-text errors (bad method, unmatched path) into problem details.
fn problem_for_framework_errors<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if is_json || !(res.status().is_client_error() || res.status().is_server_error()) {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let detail = res
        .response()
        .error()
        .map(|e| e.to_string())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
    let (req, _) = res.into_parts();
    let problem: actix_web::HttpResponse<BoxBody> = framework_problem(status, &detail);
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, problem).map_into_right_body(),
    ))
}

/// Starts the ingest consumer (unless switched off) and the telemetry jobs.
async fn start_telemetry(
    supervisor: &Supervisor,
    state: &web::Data<AppState>,
    config: &Config,
    host: String,
    port: u16,
) {
    let t = &config.telemetry;
    if t.ingest {
        let site_state = state.clone();
        let place_state = state.clone();
        let pipeline = Pipeline {
            db: state.db.clone(),
            fleet: state.fleet.clone(),
            metrics: state.metrics.clone(),
            site_tz: Arc::new(move |site| site_state.directory().get(site).map(|s| s.tz)),
            place_ok: Arc::new(move |site, zone, resource| {
                let dir = place_state.directory();
                let zone_ok = zone.is_none_or(|z| {
                    dir.get(site)
                        .is_some_and(|s| s.resources.iter().any(|r| r.zone.id == z))
                });
                let resource_ok = resource
                    .is_none_or(|id| dir.resource(id).is_some_and(|r| r.resource.site_id == site));
                zone_ok && resource_ok
            }),
            doors: Some(Doors::start(
                supervisor,
                state.db.clone(),
                state.grants.clone(),
                state.fleet.clone(),
                state.metrics.clone(),
                t.unlock_ttl_ms,
                t.unlock_secs,
                // On the embedded broker the answers share the ingest connection and carry their
                // expiry in the payload only; an external broker (Mosquitto) also gets an MQTT 5
                // message expiry, so it drops an answer that waited too long.
                matches!(config.mqtt, MqttConfig::External { .. }).then(|| AnswerBroker {
                    host: host.clone(),
                    port,
                    client_id: format!("{}-doors", t.client_id),
                    username: t.username.clone(),
                    password: t.password.clone(),
                }),
            )),
        };
        let client = ingest::start(
            IngestOptions {
                host,
                port,
                client_id: t.client_id.clone(),
                username: t.username.clone(),
                password: t.password.clone(),
                shared: t.shared,
            },
            pipeline,
        );
        let sites_state = state.clone();
        let (db, grants, fleet, metrics) = (
            state.db.clone(),
            state.grants.clone(),
            state.fleet.clone(),
            state.metrics.clone(),
        );
        let publisher_client = client.clone();
        supervisor.spawn(grant_lists::JOB, move || {
            let sites_state = sites_state.clone();
            grant_lists::publish_grants(
                db.clone(),
                grants.clone(),
                fleet.clone(),
                publisher_client.clone(),
                Arc::new(move || {
                    sites_state
                        .directory()
                        .sites
                        .iter()
                        .map(|s| s.site.id.clone())
                        .collect()
                }),
                metrics.clone(),
            )
        });
        let dir_state = state.clone();
        let climate = Climate {
            db: state.db.clone(),
            fleet: state.fleet.clone(),
            directory: Arc::new(move || dir_state.directory()),
            client: client.clone(),
            metrics: state.metrics.clone(),
            every: Duration::from_secs(t.climate_secs),
            comfort_c: t.comfort_t_c,
            eco_c: t.eco_t_c,
        };
        supervisor.spawn("climate", move || climate.clone().run());
        let dir_state = state.clone();
        let charging = SmartCharging {
            db: state.db.clone(),
            fleet: state.fleet.clone(),
            directory: Arc::new(move || dir_state.directory()),
            client,
            metrics: state.metrics.clone(),
            every: Duration::from_secs(t.charging_secs),
        };
        supervisor.spawn("charging", move || charging.clone().run());
    }
    let dir_state = state.clone();
    let release = Release {
        db: state.db.clone(),
        grants: state.grants.clone(),
        directory: Arc::new(move || dir_state.directory()),
        metrics: state.metrics.clone(),
        mail_waker: state.mail_waker.clone(),
        public_url: config.public_url.clone(),
        mail_from: config.mail_from.clone(),
        every: Duration::from_secs(t.release_secs),
    };
    supervisor.spawn("release", move || release.clone().run());
    rollup::catch_up(&state.fleet);
    let (db, fleet) = (state.db.clone(), state.fleet.clone());
    supervisor.every_later("rollup", Duration::from_secs(t.rollup_secs), move || {
        let (db, fleet) = (db.clone(), fleet.clone());
        async move { rollup::pass(&db, &fleet).await.map(|_| ()) }
    });
    let (db, keep, personal) = (
        state.db.clone(),
        t.raw_retention_days,
        t.personal_retention_days,
    );
    supervisor.every("retention", Duration::from_secs(3600), move || {
        let db = db.clone();
        async move { retention::try_pass(&db, keep, personal).await }
    });
    let (db, fleet, metrics) = (state.db.clone(), state.fleet.clone(), state.metrics.clone());
    let (limits, every) = (Thresholds::from(t), Duration::from_secs(t.health_secs));
    supervisor.spawn("watch", move || {
        let (db, fleet, metrics, limits) =
            (db.clone(), fleet.clone(), metrics.clone(), limits.clone());
        async move {
            Watch::start(db, fleet, metrics, limits)
                .await
                .run(every)
                .await
        }
    });
}

/// How often the directory is reloaded, so closures added by another instance show up.
const DIRECTORY_EVERY: Duration = Duration::from_secs(60);

/// Reloads the directory.
async fn refresh_directory(state: web::Data<AppState>) -> Result<(), crate::db::DbError> {
    let dir = state.db.run(Directory::load).await?;
    state.replace_directory(dir);
    Ok(())
}
