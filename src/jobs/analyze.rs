//! Keeps PostgreSQL's planner statistics current for the tables that grow fast (bookings, their
//! credentials, the outbox, telemetry), whatever the operator's autovacuum settings: a table is
//! analyzed once it has changed by more than autovacuum's default rule (50 rows + 10 %).

use std::time::Duration;

use crate::db::maintenance::{self, Threshold};
use crate::db::{Db, DbError};

/// How often the tables' change counters are read (the supervisor runs [`pass`] this often).
pub const EVERY: Duration = Duration::from_secs(10);

/// Analyzes the tables past `threshold`; returns their names (none on SQLite).
pub async fn pass(db: &Db, threshold: Threshold) -> Result<Vec<String>, DbError> {
    let tables = db
        .run(move |c| maintenance::analyze_stale(c, threshold))
        .await?;
    if !tables.is_empty() {
        tracing::debug!(tables = ?tables, "planner statistics refreshed");
    }
    Ok(tables)
}
