use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::{Db, DbConnection, DbError, DbResult};

const SQLITE: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Applies pending migrations; returns how many ran.
pub fn run(db: &Db) -> DbResult<usize> {
    db.run_blocking(|conn: &mut DbConnection| {
        let applied = match conn {
            DbConnection::Sqlite(c) => c.run_pending_migrations(SQLITE).map(|v| v.len()),
            DbConnection::Postgresql(c) => c.run_pending_migrations(POSTGRES).map(|v| v.len()),
        };
        applied.map_err(|e| DbError::Unavailable(format!("migration failed: {e}")))
    })
}
