//! What the load harnesses share: settings from the environment, ports, child processes.

#![allow(dead_code)]

use std::net::TcpListener;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// A whole number from the environment (`default` when unset or empty); 0 is allowed.
pub fn env_number(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .with_context(|| format!("{name}={v:?} is not a whole number")),
        _ => Ok(default),
    }
}

/// As [`env_number`], but at least 1.
pub fn env_positive(name: &str, default: u64) -> anyhow::Result<u64> {
    let n = env_number(name, default)?;
    if n == 0 {
        bail!("{name} must be at least 1");
    }
    Ok(n)
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub fn wait_port(port: u16, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on port {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A child process killed with the harness.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// PostgreSQL as the machine runs it (trust authentication).
pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A PostgreSQL database of our own, dropped however the run ends.
pub struct PgDatabase(String);

impl PgDatabase {
    /// A fresh database named `{prefix}_{pid}_{random}`.
    pub fn create(prefix: &str) -> anyhow::Result<PgDatabase> {
        use diesel::{Connection, PgConnection, RunQueryDsl};
        let name = format!(
            "{prefix}_{}_{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let mut admin = PgConnection::establish(PG_ADMIN_URL)
            .context("PostgreSQL must accept connections on 127.0.0.1:5432 as postgres")?;
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .context("creating the bench database")?;
        Ok(PgDatabase(name))
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.0)
    }

    pub fn name(&self) -> &str {
        &self.0
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        use diesel::{Connection, PgConnection, RunQueryDsl};
        // FORCE ends the pools' idle connections.
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0);
        for attempt in 0..3 {
            let dropped = PgConnection::establish(PG_ADMIN_URL)
                .map_err(|e| e.to_string())
                .and_then(|mut c| {
                    diesel::sql_query(&sql)
                        .execute(&mut c)
                        .map_err(|e| e.to_string())
                });
            match dropped {
                Ok(_) => return,
                Err(e) if attempt == 2 => eprintln!("could not drop database {}: {e}", self.0),
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }
}
