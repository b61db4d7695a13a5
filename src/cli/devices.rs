//! `spazi device add` and `spazi mqtt credentials`: devices and their broker identities.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Subcommand;

use crate::api::devices::{check, ProvisionRequest};
use crate::api::error::ApiError;
use crate::db::network::Directory;
use crate::db::telemetry::{insert_device, load_devices};
use crate::db::DbError;
use crate::domain::DeviceClass;
use crate::telemetry::mosquitto::{
    acl_file, generate_password, upsert_password, AclIdentity, SERVICE_USER,
};

#[derive(Subcommand)]
pub enum DeviceCommand {
    /// Register a device at a site and make its broker password (printed once).
    Add {
        #[arg(long)]
        site: String,
        #[arg(long)]
        id: String,
        #[arg(long, value_parser = ["gateway", "pv_meter", "grid_meter", "ev_charger", "env_sensor", "presence_sensor", "door_reader"])]
        class: String,
        #[arg(long)]
        zone: Option<String>,
        #[arg(long)]
        resource: Option<String>,
        #[arg(long)]
        gateway: Option<String>,
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        report_interval_s: Option<i64>,
        /// Mosquitto password file to add the device's identity to.
        #[arg(long)]
        passwd: Option<PathBuf>,
        /// Mosquitto ACL file to rewrite for every device.
        #[arg(long)]
        acl: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum MqttCommand {
    /// Write Mosquitto's password and ACL files for every device and the service: identities
    /// missing from the password file get a fresh password, printed once as `username password`.
    Credentials {
        #[arg(long)]
        passwd: PathBuf,
        #[arg(long)]
        acl: PathBuf,
    },
}

fn identities(db: &crate::db::Db) -> anyhow::Result<Vec<AclIdentity>> {
    let devices = db.run_blocking(load_devices)?;
    Ok(devices
        .into_iter()
        .map(|d| AclIdentity {
            gateway: d.class == DeviceClass::Gateway.as_str(),
            username: d.id.clone(),
            site_id: d.site_id,
            device_id: d.id,
        })
        .collect())
}

fn write_acl(db: &crate::db::Db, path: &Path) -> anyhow::Result<usize> {
    let ids = identities(db)?;
    std::fs::write(path, acl_file(SERVICE_USER, &ids))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(ids.len())
}

/// Users already in a Mosquitto password file.
fn users_in(path: &Path) -> anyhow::Result<HashSet<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .filter_map(|l| l.split_once(':').map(|(u, _)| u.to_string()))
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashSet::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

pub fn device(command: DeviceCommand) -> anyhow::Result<()> {
    let DeviceCommand::Add {
        site,
        id,
        class,
        zone,
        resource,
        gateway,
        model,
        report_interval_s,
        passwd,
        acl,
    } = command;
    let db = crate::startup::prepare_database(&super::database_url())?;
    let dir = db.run_blocking(Directory::load)?;
    let Some(entry) = dir.get(&site) else {
        bail!("no site {site}");
    };
    let devices = db.run_blocking(load_devices)?;
    let request = ProvisionRequest {
        id,
        class,
        zone_id: zone,
        resource_id: resource,
        gateway_id: gateway,
        model,
        firmware: None,
        report_interval_s,
    };
    let new = check(
        &dir,
        entry,
        |g| {
            devices
                .iter()
                .any(|d| d.id == g && d.site_id == site && d.class == "gateway")
        },
        &request,
        "cli",
    )
    .map_err(|e| match e {
        ApiError::Validation(errors) => anyhow::anyhow!(
            "{}",
            errors
                .iter()
                .map(|f| format!("--{}: {}", f.field.replace('_', "-"), f.message))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        other => anyhow::anyhow!("{other:?}"),
    })?;
    let row = db
        .run_blocking(|c| insert_device(c, &new))
        .map_err(|e| match e {
            DbError::Duplicate => anyhow::anyhow!("a device with id {} exists", new.id),
            other => other.into(),
        })?;
    let password = generate_password();
    if let Some(path) = &passwd {
        upsert_password(path, &row.id, &password)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &acl {
        write_acl(&db, path)?;
    }
    println!("{} {}", row.id, password);
    eprintln!(
        "device {} added at {}; its broker password is printed once, above{}",
        row.id,
        row.site_id,
        if passwd.is_some() || acl.is_some() {
            "; reload Mosquitto (SIGHUP) to apply the files"
        } else {
            ""
        }
    );
    Ok(())
}

pub fn mqtt(command: MqttCommand) -> anyhow::Result<()> {
    let MqttCommand::Credentials { passwd, acl } = command;
    let db = crate::startup::prepare_database(&super::database_url())?;
    let ids = identities(&db)?;
    let known = users_in(&passwd)?;
    let mut added = 0;
    for user in
        std::iter::once(SERVICE_USER.to_string()).chain(ids.iter().map(|i| i.username.clone()))
    {
        if known.contains(&user) {
            continue;
        }
        let password = generate_password();
        upsert_password(&passwd, &user, &password)
            .with_context(|| format!("writing {}", passwd.display()))?;
        println!("{user} {password}");
        added += 1;
    }
    let n = write_acl(&db, &acl)?;
    eprintln!(
        "{added} new identities in {} (passwords printed once, above); ACL for {n} devices and the service in {}; reload Mosquitto (SIGHUP) to apply",
        passwd.display(),
        acl.display()
    );
    Ok(())
}
