//! `spazi demo`: the whole service on the embedded defaults, with people and bookings in it.

use std::net::{SocketAddr, TcpListener};

use anyhow::Context;
use chrono::{Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Utc, Weekday};

use super::{create_account, NewAccount};
use crate::api::state::AppState;
use crate::bookings::{self, charging::ChargingWish, Env, NewBooking};
use crate::config::{Config, MqttConfig, SecretPolicy};
use crate::db::models::Organization;
use crate::db::{naive, users, Db};
use crate::domain::access::Caller;
use crate::domain::Role;
use crate::sim::{self, SimOptions};
use crate::startup::{prepare_database, Application};

pub const PASSWORD: &str = "spazi-demo-2026";

struct DemoUser {
    email: &'static str,
    name: &'static str,
    role: Role,
    sites: &'static [&'static str],
    in_company: bool,
}

const USERS: &[DemoUser] = &[
    DemoUser {
        email: "giulia.freelance@demo.spazi.example",
        name: "Giulia Conti",
        role: Role::Member,
        sites: &[],
        in_company: false,
    },
    DemoUser {
        email: "marco.admin@demo.spazi.example",
        name: "Marco Ferri",
        role: Role::CompanyAdmin,
        sites: &[],
        in_company: true,
    },
    DemoUser {
        email: "sara.rossi@demo.spazi.example",
        name: "Sara Rossi",
        role: Role::Member,
        sites: &[],
        in_company: true,
    },
    DemoUser {
        email: "luca.bianchi@demo.spazi.example",
        name: "Luca Bianchi",
        role: Role::Member,
        sites: &[],
        in_company: true,
    },
    DemoUser {
        email: "elena.manager@demo.spazi.example",
        name: "Elena Galli",
        role: Role::SiteManager,
        sites: &["bologna", "modena"],
        in_company: false,
    },
    DemoUser {
        email: "admin@demo.spazi.example",
        name: "Paolo Greco",
        role: Role::NetworkAdmin,
        sites: &[],
        in_company: false,
    },
];

const COMPANY: &str = "Officina Digitale S.r.l.";

pub fn run() -> anyhow::Result<()> {
    let mut config = Config::from_env(SecretPolicy::RandomIfMissing)?;
    if let MqttConfig::Embedded(addr) = config.mqtt {
        if TcpListener::bind(addr).is_err() {
            let free = SocketAddr::new(addr.ip(), 0);
            tracing::warn!(%addr, "MQTT port in use (another broker?); the embedded broker takes a free port");
            config.mqtt = MqttConfig::Embedded(free);
        }
    }
    let (accounts, fresh) = {
        let db = prepare_database(&config.database_url)?;
        populate(&db)?
    };
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(config.clone()).await?;
        if fresh {
            book_demo_week(&app.state).await?;
        }
        // The whole network's devices, publishing to the embedded broker; presence follows the
        // bookings just made. The sender keeps the simulator running as long as the demo.
        let (_keep_simulating, stop) = tokio::sync::watch::channel(false);
        let broker = app.state.mqtt_addr.clone().unwrap_or_default();
        if let Some((host, port)) = broker.rsplit_once(':').and_then(|(h, p)| Some((h.to_string(), p.parse().ok()?))) {
            let options = SimOptions {
                database_url: Some(config.database_url.clone()),
                ..SimOptions::new(host, port)
            };
            tokio::spawn(async move {
                match sim::run(options, stop).await {
                    Ok(report) => tracing::info!(%report, "simulator stopped"),
                    Err(e) => tracing::warn!(error = %e, "simulator failed"),
                }
            });
        }
        let base = format!("http://127.0.0.1:{}", app.port);
        println!("\nSpazi demo is running.\n");
        println!("  API            {base}/api/v1/sites");
        println!("  API docs       {base}/api/docs/");
        println!("  OpenAPI        {base}/api/v1/openapi.json");
        println!("  health         {base}/healthz   readiness {base}/readyz   metrics {base}/metrics");
        println!("  MQTT broker    {broker}  (simulated devices of all 250 sites publishing)");
        println!("  live site      {base}/api/v1/sites/bologna/live  (as elena.manager or admin)");
        println!("  mail           {}", config.mail_url);
        println!("  database       {}", without_credentials(&config.database_url));
        println!("\nRunning: the API, the embedded MQTT broker, the ingest consumer, door decisions, climate");
        println!("and charging commands, the mailer, the roll-ups, device health and alarms, and the");
        println!("simulator of all 250 sites' devices, whose presence follows the demo bookings.");
        println!("\nDemo accounts (password: {PASSWORD}):");
        for line in &accounts {
            println!("  {line}");
        }
        println!("\nTry: curl -s -X POST {base}/api/v1/auth/login -H 'Content-Type: application/json' \\\n       -d '{{\"email\":\"giulia.freelance@demo.spazi.example\",\"password\":\"{PASSWORD}\"}}'\n");
        app.run_until_stopped().await?;
        Ok(())
    })
}

/// A database URL without the user and password it may carry, for the screen.
fn without_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

/// Creates the demo company and accounts unless they exist; describes the accounts, and says
/// whether they are new (and so want their week of bookings).
fn populate(db: &Db) -> anyhow::Result<(Vec<String>, bool)> {
    let existing = db.run_blocking(|c| users::by_email(c, USERS[0].email))?;
    let mut lines = Vec::new();
    let org_id = match existing {
        Some(_) => db
            .run_blocking(|c| users::by_email(c, USERS[1].email))?
            .and_then(|u| u.organization_id)
            .context("the demo company admin has no organization")?,
        None => {
            let org = Organization {
                id: uuid::Uuid::now_v7().to_string(),
                name: COMPANY.into(),
                monthly_allowance_minutes: 400 * 60,
                created_at: naive(Utc::now()),
            };
            db.run_blocking(|c| users::create_organization(c, &org))?;
            for u in USERS {
                let sites: Vec<String> = u.sites.iter().map(|s| s.to_string()).collect();
                create_account(
                    db,
                    &NewAccount {
                        email: u.email,
                        name: u.name,
                        role: u.role,
                        sites: &sites,
                        organization: u.in_company.then_some(org.id.as_str()),
                        password: PASSWORD,
                    },
                )?;
            }
            org.id
        }
    };
    for u in USERS {
        let scope = match (u.role, u.in_company) {
            (Role::SiteManager, _) => format!("site manager of {}", u.sites.join(", ")),
            (Role::NetworkAdmin, _) => "network admin".into(),
            (Role::CompanyAdmin, _) => format!("company admin of {COMPANY} ({org_id})"),
            (_, true) => format!("member of {COMPANY}"),
            _ => "freelancer".into(),
        };
        lines.push(format!("{:<40} {}", u.email, scope));
    }
    Ok((lines, existing.is_none()))
}

/// A realistic week: desks, rooms and an EV bay at a few sites, on the next working days, booked
/// through the same path as `POST /api/v1/bookings` (policy, allowance, confirmation mail).
async fn book_demo_week(state: &AppState) -> anyhow::Result<()> {
    let plan: &[(usize, &str, &str, usize, u32, u32)] = &[
        // (user, resource, site, working day, from hour, to hour)
        (0, "bologna-desk-001", "bologna", 1, 9, 13),
        (0, "bologna-room-01", "bologna", 2, 14, 16),
        (1, "milano-room-01", "milano", 1, 10, 12),
        (2, "milano-desk-003", "milano", 1, 9, 18),
        (3, "milano-desk-004", "milano", 1, 9, 18),
        (3, "milano-ev-01", "milano", 1, 9, 12),
        (2, "roma-desk-010", "roma", 3, 9, 17),
        (0, "modena-desk-002", "modena", 4, 9, 13),
    ];
    let mut day = Utc::now().date_naive();
    let mut working_days = Vec::new();
    while working_days.len() < 5 {
        day += Duration::days(1);
        if !matches!(day.weekday(), Weekday::Sat | Weekday::Sun)
            && crate::domain::holidays::national_holiday(day).is_none()
        {
            working_days.push(day);
        }
    }
    let dir = state.directory();
    for (who, resource_id, site_id, nth, from, to) in plan {
        let Some(site) = dir.get(site_id) else {
            continue;
        };
        let date: NaiveDate = working_days[(nth - 1).min(4)];
        let at = |h: u32| {
            let local = date.and_time(NaiveTime::from_hms_opt(h, 0, 0).unwrap_or_default());
            site.tz
                .from_local_datetime(&local)
                .earliest()
                .map(|t| t.to_rfc3339())
        };
        let (Some(starts_at), Some(ends_at)) = (at(*from), at(*to)) else {
            continue;
        };
        let email = USERS[*who].email;
        let user = state
            .db
            .run(move |c| users::by_email(c, email))
            .await?
            .context("demo user missing")?;
        let caller = Caller {
            role: user.role.parse().map_err(|e: String| anyhow::anyhow!(e))?,
            user_id: user.id,
            name: user.name,
            email: user.email,
            organization_id: user.organization_id,
            managed_sites: Vec::new(),
        };
        let request = NewBooking {
            resource_id: resource_id.to_string(),
            starts_at,
            ends_at,
            attendees: None,
            note: None,
            charging: dir
                .resource(resource_id)
                .filter(|r| r.kind == crate::domain::ResourceKind::EvBay)
                .map(|_| ChargingWish {
                    target_wh: Some(15_000.0),
                    mode: None,
                }),
        };
        let env = Env {
            db: &state.db,
            directory: &dir,
            grants: &state.grants,
            metrics: &state.metrics,
            mail_waker: &state.mail_waker,
            public_url: &state.config.public_url,
            mail_from: &state.config.mail_from,
        };
        // A closure of the site that day is the policy working, not a failure of the demo.
        if let Err(e) = bookings::create(env, &caller, request).await {
            let why = match &e {
                bookings::Error::Invalid(errors) => errors
                    .iter()
                    .map(|f| f.message.clone())
                    .collect::<Vec<_>>()
                    .join("; "),
                other => other.to_string(),
            };
            tracing::info!(resource = resource_id, %date, %why, "demo booking skipped");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::without_credentials;

    #[test]
    fn the_screen_never_shows_the_database_password() {
        assert_eq!(
            without_credentials("postgres://spazi:s3cret@db.example:5432/spazi"),
            "postgres://db.example:5432/spazi"
        );
        assert_eq!(
            without_credentials("postgres://localhost/spazi"),
            "postgres://localhost/spazi"
        );
        assert_eq!(
            without_credentials("sqlite://spazi.db"),
            "sqlite://spazi.db"
        );
        assert_eq!(without_credentials("spazi.db"), "spazi.db");
    }
}
