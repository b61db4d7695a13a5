//! The `spazi` subcommands.

pub mod demo;
pub mod devices;
pub mod simulate;

use std::io::Read;

use anyhow::{bail, Context};
use chrono::Utc;
use clap::Subcommand;

use crate::config::{Config, SecretPolicy};
use crate::db::models::{Organization, User};
use crate::db::{migrations, naive, network, users, Db, DbConfig, DbError};
use crate::domain::{password, Role};
use crate::startup::Application;

pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,rumqttd=warn,actix_server=warn"));
    let json = std::env::var("SPAZI_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

pub fn serve() -> anyhow::Result<()> {
    let config = Config::from_env(SecretPolicy::Required)?;
    tracing::info!(?config, "starting");
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(config).await?;
        app.run_until_stopped().await?;
        Ok(())
    })
}

pub(crate) fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite://spazi.db".into())
}

fn open_db() -> anyhow::Result<Db> {
    Db::connect(&DbConfig::new(database_url())).context("opening the database")
}

pub fn migrate() -> anyhow::Result<()> {
    let db = open_db()?;
    let n = migrations::run(&db)?;
    println!("{n} migration(s) applied");
    Ok(())
}

pub fn seed(seed: u64) -> anyhow::Result<()> {
    let db = open_db()?;
    migrations::run(&db)?;
    let added = db.run_blocking(|c| network::seed(c, &crate::domain::network::generate(seed)))?;
    println!(
        "{} site(s) and {} device(s) added",
        added.sites, added.devices
    );
    Ok(())
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a verified account; the password comes from SPAZI_USER_PASSWORD or standard input.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = ["member", "company_admin", "site_manager", "network_admin"])]
        role: String,
        /// A site a site manager is responsible for (repeatable).
        #[arg(long = "site")]
        sites: Vec<String>,
        #[arg(long)]
        organization: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum OrganizationCommand {
    /// Create a company with a monthly allowance of booking hours; prints its id.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 160)]
        allowance_hours: i32,
    },
}

pub struct NewAccount<'a> {
    pub email: &'a str,
    pub name: &'a str,
    pub role: Role,
    pub sites: &'a [String],
    pub organization: Option<&'a str>,
    pub password: &'a str,
}

/// Creates a verified account after checking its role's scope; returns its id.
pub fn create_account(db: &Db, a: &NewAccount) -> anyhow::Result<String> {
    let email = crate::api::auth::normalise_email(a.email)
        .map_err(|e| anyhow::anyhow!("email {}", e.message))?;
    password::check_strength(a.password).map_err(|e| anyhow::anyhow!("password {}", e.message))?;
    match a.role {
        Role::SiteManager if a.sites.is_empty() => {
            bail!("a site manager needs at least one --site")
        }
        Role::CompanyAdmin if a.organization.is_none() => {
            bail!("a company admin needs --organization")
        }
        _ => {}
    }
    let now = naive(Utc::now());
    let user = User {
        id: uuid::Uuid::now_v7().to_string(),
        email,
        name: a.name.trim().to_string(),
        password_hash: password::hash(a.password),
        role: a.role.as_str().to_string(),
        organization_id: a.organization.map(str::to_string),
        verified_at: Some(now),
        created_at: now,
    };
    let sites = if a.role == Role::SiteManager {
        a.sites.to_vec()
    } else {
        Vec::new()
    };
    db.run_blocking(|c| {
        if let Some(org) = a.organization {
            if users::organization(c, org)?.is_none() {
                return Err(anyhow::anyhow!("no organization {org}"));
            }
        }
        let dir = network::Directory::load(c)?;
        if let Some(unknown) = sites.iter().find(|s| dir.get(s).is_none()) {
            bail!("no site {unknown}");
        }
        users::create(c, &user, None, &sites, None).map_err(|e| match e {
            DbError::Duplicate => anyhow::anyhow!("an account with that email exists"),
            other => other.into(),
        })
    })?;
    Ok(user.id)
}

pub fn user(command: UserCommand) -> anyhow::Result<()> {
    let UserCommand::Create {
        email,
        name,
        role,
        sites,
        organization,
    } = command;
    let role: Role = role.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let password = match std::env::var("SPAZI_USER_PASSWORD") {
        Ok(p) if !p.is_empty() => p,
        _ => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s.trim_end_matches(['\n', '\r']).to_string()
        }
    };
    // Like `serve`, an empty database is migrated and seeded first, so sites can be named.
    let db = crate::startup::prepare_database(&database_url())?;
    let id = create_account(
        &db,
        &NewAccount {
            email: &email,
            name: &name,
            role,
            sites: &sites,
            organization: organization.as_deref(),
            password: &password,
        },
    )?;
    println!("{id}");
    Ok(())
}

pub fn organization(command: OrganizationCommand) -> anyhow::Result<()> {
    let OrganizationCommand::Create {
        name,
        allowance_hours,
    } = command;
    if allowance_hours < 0 {
        bail!("--allowance-hours must not be negative");
    }
    // Like `serve`, an empty database is migrated and seeded first, so sites can be named.
    let db = crate::startup::prepare_database(&database_url())?;
    let org = Organization {
        id: uuid::Uuid::now_v7().to_string(),
        name,
        monthly_allowance_minutes: allowance_hours.saturating_mul(60),
        created_at: naive(Utc::now()),
    };
    db.run_blocking(|c| users::create_organization(c, &org))?;
    println!("{}", org.id);
    Ok(())
}
