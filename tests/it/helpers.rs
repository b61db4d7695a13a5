//! Test setup in one line: a running app on a fresh database of either backend.

use std::sync::atomic::{AtomicU32, Ordering};

use chrono::{Duration, NaiveDate, NaiveTime, TimeZone, Utc};
use diesel::{Connection, RunQueryDsl};
use serde_json::{json, Value};
use spazi::api::state::AppState;
use spazi::cli::{create_account, NewAccount};
use spazi::config::{Config, MqttConfig, TelemetryConfig};
use spazi::db::models::Organization;
use spazi::db::{naive, users};
use spazi::domain::Role;
use spazi::startup::Application;

pub const PASSWORD: &str = "correct-horse-battery";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs the test body once against SQLite and once against PostgreSQL.
#[macro_export]
macro_rules! on_both {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[actix_web::test]
            async fn sqlite() {
                let f = $body;
                f($crate::helpers::Backend::Sqlite).await;
            }

            #[actix_web::test]
            async fn postgres() {
                let f = $body;
                f($crate::helpers::Backend::Postgres).await;
            }
        }
    };
}

pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A fresh, empty database URL for one test; the PostgreSQL one is created here.
pub fn fresh_database(backend: Backend) -> (String, Option<tempfile::TempDir>) {
    static N: AtomicU32 = AtomicU32::new(0);
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}", dir.path().join("spazi.db").display());
            (url, Some(dir))
        }
        Backend::Postgres => {
            let name = format!(
                "spazi_test_{}_{}_{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            );
            let mut admin = diesel::PgConnection::establish(PG_ADMIN_URL).unwrap_or_else(|e| {
                panic!("PostgreSQL must be running on 127.0.0.1:5432 for these tests (scripts/test starts it): {e}")
            });
            diesel::sql_query(format!("CREATE DATABASE {name}"))
                .execute(&mut admin)
                .expect("create test database");
            (format!("postgres://postgres@127.0.0.1:5432/{name}"), None)
        }
    }
}

pub fn test_config(database_url: String, mail_url: String) -> Config {
    Config {
        database_url,
        listen: "127.0.0.1:0".into(),
        mqtt: MqttConfig::External {
            host: "127.0.0.1".into(),
            port: 1883,
        },
        mail_url,
        mail_from: "Spazi per l'Italia <prenotazioni@spazi.example>".into(),
        public_url: "http://spazi.test".into(),
        jwt_secret: b"test-secret-test-secret-test-secret!".to_vec(),
        mail_poll_secs: 1,
        telemetry: TelemetryConfig {
            ingest: false,
            rollup_secs: 1,
            health_secs: 1,
            release_secs: 1,
            climate_secs: 1,
            charging_secs: 1,
            ..TelemetryConfig::default()
        },
    }
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub state: actix_web::web::Data<AppState>,
    _mail_dir: tempfile::TempDir,
    _db_dir: Option<tempfile::TempDir>,
}

pub async fn spawn(backend: Backend) -> TestApp {
    spawn_with(backend, |c| c).await
}

/// Starts the app with the test configuration, adjusted by `adjust`.
pub async fn spawn_with(backend: Backend, adjust: impl FnOnce(Config) -> Config) -> TestApp {
    let (url, db_dir) = fresh_database(backend);
    spawn_on(url, db_dir, adjust).await
}

/// Starts the app on a database that exists already (another instance may be using it).
pub async fn spawn_on(
    url: String,
    db_dir: Option<tempfile::TempDir>,
    adjust: impl FnOnce(Config) -> Config,
) -> TestApp {
    let mail_dir = tempfile::tempdir().expect("mail dir");
    let config = adjust(test_config(
        url,
        format!("file://{}", mail_dir.path().display()),
    ));
    let app = Application::build(config).await.expect("app starts");
    let base = format!("http://127.0.0.1:{}", app.port);
    let state = app.state.clone();
    actix_web::rt::spawn(app.run_until_stopped());
    TestApp {
        base,
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .expect("client"),
        state,
        _mail_dir: mail_dir,
        _db_dir: db_dir,
    }
}

pub struct TestUser {
    pub id: String,
    pub email: String,
    pub token: String,
    pub refresh: String,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn create_org(&self, name: &str, allowance_hours: i32) -> String {
        let org = Organization {
            id: uuid::Uuid::now_v7().to_string(),
            name: name.into(),
            monthly_allowance_minutes: allowance_hours * 60,
            created_at: naive(Utc::now()),
        };
        self.state
            .db
            .run_blocking(|c| users::create_organization(c, &org))
            .expect("org");
        org.id
    }

    /// A verified account, logged in.
    pub async fn user(&self, role: Role, org: Option<&str>, sites: &[&str]) -> TestUser {
        let email = format!(
            "{}-{}@test.spazi.example",
            role.as_str().replace('_', "-"),
            uuid::Uuid::new_v4().simple()
        );
        let sites: Vec<String> = sites.iter().map(|s| s.to_string()).collect();
        let id = create_account(
            &self.state.db,
            &NewAccount {
                email: &email,
                name: "Test User",
                role,
                sites: &sites,
                organization: org,
                password: PASSWORD,
            },
        )
        .expect("account");
        let tokens = self.login(&email, PASSWORD).await;
        assert_eq!(tokens.0, 200, "login of a fresh account: {}", tokens.1);
        TestUser {
            id,
            email,
            token: tokens.1["access_token"]
                .as_str()
                .expect("access token")
                .to_string(),
            refresh: tokens.1["refresh_token"]
                .as_str()
                .expect("refresh token")
                .to_string(),
        }
    }

    pub async fn login(&self, email: &str, password: &str) -> (u16, Value) {
        self.post_json(
            "/api/v1/auth/login",
            None,
            &json!({"email": email, "password": password}),
        )
        .await
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        let mut req = self.client.post(self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn get_json(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn book(&self, token: &str, resource: &str, start: &str, end: &str) -> (u16, Value) {
        self.post_json(
            "/api/v1/bookings",
            Some(token),
            &json!({"resource_id": resource, "starts_at": start, "ends_at": end}),
        )
        .await
    }

    /// How many rows a SQL count query returns, straight from the database.
    pub fn count(&self, sql: &str) -> i64 {
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let sql = sql.to_string();
        self.state
            .db
            .run_blocking(|c| {
                diesel::sql_query(sql)
                    .get_result::<N>(c)
                    .map_err(spazi::db::DbError::from)
            })
            .expect("count query")
            .n
    }

    /// A large (open round the clock) site and a day at least `days_ahead` ahead on which it is open.
    pub fn open_day(&self, site_size: &str, days_ahead: i64) -> (String, NaiveDate) {
        let dir = self.state.directory();
        let site = dir
            .sites
            .iter()
            .find(|s| s.site.size == site_size)
            .expect("a site of that size");
        let mut day = Utc::now().date_naive() + Duration::days(days_ahead);
        while site.closure(day).is_some()
            || site.hours.on(chrono::Datelike::weekday(&day)).is_empty()
        {
            day += Duration::days(1);
        }
        (site.site.id.clone(), day)
    }

    /// `day` at `hh:mm` local time at `site_id`, as RFC 3339 with its offset.
    pub fn local(&self, site_id: &str, day: NaiveDate, hh: u32, mm: u32) -> String {
        let dir = self.state.directory();
        let tz = dir.get(site_id).expect("site").tz;
        tz.from_local_datetime(&day.and_time(NaiveTime::from_hms_opt(hh, mm, 0).expect("time")))
            .earliest()
            .expect("local time exists")
            .to_rfc3339()
    }

    /// The id of the first resource of `kind` at `site_id`.
    pub async fn resource_id(&self, site_id: &str, kind: &str) -> String {
        self.resource(site_id, kind).await["id"]
            .as_str()
            .expect("resource id")
            .to_string()
    }

    /// The first resource of `kind` at `site_id`.
    pub async fn resource(&self, site_id: &str, kind: &str) -> Value {
        let (status, page) = self
            .get_json(
                &format!("/api/v1/sites/{site_id}/resources?kind={kind}"),
                None,
            )
            .await;
        assert_eq!(status, 200);
        page["items"][0].clone()
    }
}

/// Asserts a problem+json response naming `field` among its errors.
/// A booking written straight to storage (any time: past, now, outside opening hours) with its
/// door credential, and made known to the running service's door decisions.
pub struct StoredBooking {
    pub id: String,
    pub token: String,
    pub pin: String,
}

impl TestApp {
    pub async fn store_booking(
        &self,
        user: &TestUser,
        organization_id: Option<&str>,
        resource_id: &str,
        starts: chrono::DateTime<Utc>,
        ends: chrono::DateTime<Utc>,
        charged_minutes: i32,
    ) -> StoredBooking {
        use spazi::db::access::NewCredential;
        use spazi::db::models::{Booking, OutboxRow};
        let dir = self.state.directory();
        let site_id = dir
            .resource(resource_id)
            .expect("resource")
            .resource
            .site_id
            .clone();
        let id = uuid::Uuid::now_v7().to_string();
        let now = Utc::now().naive_utc();
        let month = starts.format("%Y-%m").to_string();
        let booking = Booking {
            id: id.clone(),
            resource_id: resource_id.into(),
            site_id: site_id.clone(),
            user_id: user.id.clone(),
            organization_id: organization_id.map(str::to_owned),
            starts_at: starts.naive_utc(),
            ends_at: ends.naive_utc(),
            status: spazi::domain::BookingStatus::Confirmed,
            attendees: 1,
            note: None,
            charged_minutes,
            allowance_month: organization_id.map(|_| month.clone()),
            sequence: 0,
            created_at: now,
            updated_at: now,
            checked_in_at: None,
            cancelled_at: None,
        };
        let credential =
            NewCredential::fresh(&id, &site_id, booking.starts_at, booking.ends_at, now)
                .expect("credential");
        let token = credential.row.token.clone();
        let charge = organization_id.map(|org| spazi::db::bookings::AllowanceCharge {
            organization_id: org.to_owned(),
            month,
            minutes: charged_minutes,
        });
        let issued = self
            .state
            .db
            .run_blocking(move |c| {
                spazi::db::bookings::create(c, &booking, charge.as_ref(), &credential, None, |_| {
                    let mut row = OutboxRow::due("none", "{}".into(), now);
                    row.sent_at = Some(now);
                    row
                })
            })
            .expect("store booking");
        self.state.grants.refresh(&self.state.db, &id).await;
        StoredBooking {
            id,
            token,
            pin: issued.pin,
        }
    }
}

pub fn assert_field_error(status: u16, body: &Value, expected_status: u16, field: &str) {
    assert_eq!(status, expected_status, "body: {body}");
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors array in {body}"))
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert!(
        fields.contains(&field),
        "expected an error on {field}, got {fields:?} in {body}"
    );
}
