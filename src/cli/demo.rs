//! `spazi demo`: the whole service on the embedded defaults, with people and bookings in it.

use std::net::{SocketAddr, TcpListener};

use anyhow::Context;
use chrono::{Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Utc, Weekday};

use super::{create_account, NewAccount};
use crate::config::{Config, MqttConfig, SecretPolicy};
use crate::db::bookings::{self, AllowanceCharge};
use crate::db::models::{Booking, Organization, OutboxRow};
use crate::db::network::Directory;
use crate::db::{naive, users, Db};
use crate::domain::{policy, BookingStatus, Role, TimeRange};
use crate::email::compose::{self, BookingEvent, BookingMail};
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
    let db = prepare_database(&config.database_url)?;
    let accounts = populate(&db, &config)?;
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(config.clone()).await?;
        let base = format!("http://127.0.0.1:{}", app.port);
        println!("\nSpazi demo is running.\n");
        println!("  API            {base}/api/v1/sites");
        println!("  API docs       {base}/api/docs/");
        println!("  OpenAPI        {base}/api/v1/openapi.json");
        println!("  health         {base}/healthz   readiness {base}/readyz   metrics {base}/metrics");
        println!("  MQTT broker    {}", app.state.mqtt_addr.clone().unwrap_or_default());
        println!("  mail           {}", config.mail_url);
        println!("\nDemo accounts (password: {PASSWORD}):");
        for line in &accounts {
            println!("  {line}");
        }
        println!("\nTry: curl -s -X POST {base}/api/v1/auth/login -H 'Content-Type: application/json' \\\n       -d '{{\"email\":\"giulia.freelance@demo.spazi.example\",\"password\":\"{PASSWORD}\"}}'\n");
        app.run_until_stopped().await?;
        Ok(())
    })
}

/// Creates the demo company, accounts and bookings unless they exist; describes the accounts.
fn populate(db: &Db, config: &Config) -> anyhow::Result<Vec<String>> {
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
            book_demo_week(db, config)?;
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
    Ok(lines)
}

/// A realistic week: desks, rooms and an EV bay at a few sites, on the next working days.
fn book_demo_week(db: &Db, config: &Config) -> anyhow::Result<()> {
    let dir = db.run_blocking(Directory::load)?;
    let plan: &[(usize, &str, &str, u32, u32, u32)] = &[
        // (user, resource, site, day offset, from hour, to hour)
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
    for (who, resource_id, site_id, offset, from, to) in plan {
        let Some(site) = dir.get(site_id) else {
            continue;
        };
        let date: NaiveDate = working_days[(*offset as usize - 1).min(4)];
        if site.closure(date).is_some() {
            continue;
        }
        let at = |h: u32| {
            site.tz
                .from_local_datetime(
                    &date.and_time(NaiveTime::from_hms_opt(h, 0, 0).unwrap_or_default()),
                )
                .earliest()
        };
        let (Some(s), Some(e)) = (at(*from), at(*to)) else {
            continue;
        };
        let Ok(range) = TimeRange::new(s.with_timezone(&Utc), e.with_timezone(&Utc)) else {
            continue;
        };
        let user = db
            .run_blocking(|c| users::by_email(c, USERS[*who].email))?
            .context("demo user missing")?;
        let Some(resource) = dir.resource(resource_id).map(|r| r.resource.clone()) else {
            continue;
        };
        let charge = user.organization_id.as_ref().map(|o| AllowanceCharge {
            organization_id: o.clone(),
            month: policy::allowance_month(&range, site.tz),
            minutes: policy::charged_minutes(&range),
        });
        let now = naive(Utc::now());
        let booking = Booking {
            id: uuid::Uuid::now_v7().to_string(),
            resource_id: resource.id.clone(),
            site_id: site.site.id.clone(),
            user_id: user.id.clone(),
            organization_id: user.organization_id.clone(),
            starts_at: naive(range.start()),
            ends_at: naive(range.end()),
            status: BookingStatus::Confirmed.as_str().into(),
            attendees: 1,
            note: None,
            charged_minutes: charge.as_ref().map_or(0, |c| c.minutes),
            allowance_month: charge.as_ref().map(|c| c.month.clone()),
            sequence: 0,
            created_at: now,
            updated_at: now,
            checked_in_at: None,
            cancelled_at: None,
        };
        let url = format!("{}/api/v1/bookings/{}", config.public_url, booking.id);
        let mail = compose::booking(
            BookingEvent::Confirmed,
            &BookingMail {
                booking_id: &booking.id,
                sequence: 0,
                member_name: &user.name,
                member_email: &user.email,
                resource_name: &resource.name,
                site_name: &site.site.name,
                site_address: &site.site.address,
                timezone: site.tz,
                starts_at: range.start(),
                ends_at: range.end(),
                created_at: range.start(),
                booking_url: &url,
                organizer_email: "prenotazioni@spazi.example",
            },
        );
        let row = OutboxRow {
            id: uuid::Uuid::now_v7().to_string(),
            kind: "booking_confirmed".into(),
            payload: serde_json::to_string(&mail)?,
            created_at: now,
            available_at: now,
            attempts: 0,
            last_error: None,
            sent_at: None,
        };
        db.run_blocking(|c| bookings::create(c, &booking, charge.as_ref(), &row))
            .map_err(|e| anyhow::anyhow!("demo booking {resource_id}: {e}"))?;
    }
    Ok(())
}
