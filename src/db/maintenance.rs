//! Planner statistics kept by the service itself, so that its query plans do not depend on the
//! operator's autovacuum settings (PostgreSQL only; SQLite's planner needs none of this).

use diesel::prelude::*;
use diesel::sql_types::{Double, Text};

use super::{DbConnection, DbError};

/// When a table counts as changed enough to analyze again: more than `base + fraction × rows`
/// rows inserted, updated or deleted since its last ANALYZE (autovacuum's own default rule is
/// 50 + 10 %).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    pub base: f64,
    pub fraction: f64,
}

impl Default for Threshold {
    fn default() -> Self {
        Threshold {
            base: 50.0,
            fraction: 0.1,
        }
    }
}

#[derive(QueryableByName)]
struct Table {
    #[diesel(sql_type = Text)]
    name: String,
}

/// The service's tables past `threshold`, as quoted identifiers; none on SQLite.
///
/// A table never analyzed counts as empty, so it is analyzed once it holds more than `base`
/// changed rows. An empty table is left unanalyzed on purpose: statistics saying "no rows" make
/// PostgreSQL cache sequential-scan plans that stay while the table grows, whereas without
/// statistics it estimates from the table's current size.
pub fn stale_tables(conn: &mut DbConnection, threshold: Threshold) -> Result<Vec<String>, DbError> {
    let DbConnection::Postgresql(c) = conn else {
        return Ok(Vec::new());
    };
    let tables: Vec<Table> = diesel::sql_query(
        "SELECT quote_ident(s.relname) AS name \
         FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid \
         WHERE s.schemaname = current_schema() \
           AND s.n_mod_since_analyze > $1 + $2 * GREATEST(c.reltuples, 0) \
         ORDER BY s.n_mod_since_analyze DESC",
    )
    .bind::<Double, _>(threshold.base)
    .bind::<Double, _>(threshold.fraction)
    .load(c)?;
    Ok(tables.into_iter().map(|t| t.name).collect())
}

/// Analyzes the tables past `threshold` (see [`stale_tables`]); returns their names. ANALYZE
/// also invalidates the plans that connections cached for statements on those tables, so a plan
/// made while a table was nearly empty does not outlive its growth.
pub fn analyze_stale(
    conn: &mut DbConnection,
    threshold: Threshold,
) -> Result<Vec<String>, DbError> {
    let tables = stale_tables(conn, threshold)?;
    for table in &tables {
        diesel::sql_query(format!("ANALYZE {table}")).execute(conn)?;
    }
    Ok(tables)
}

/// Analyzes every table of the database that holds rows (after seeding it), leaving the empty
/// ones without statistics for the reason given at [`stale_tables`]; nothing on SQLite.
pub fn analyze_filled(conn: &mut DbConnection) -> Result<(), DbError> {
    if let DbConnection::Postgresql(c) = conn {
        diesel::sql_query(
            "DO $$ \
             DECLARE t text; filled boolean; \
             BEGIN \
               FOR t IN SELECT quote_ident(tablename) FROM pg_tables \
                        WHERE schemaname = current_schema() ORDER BY tablename LOOP \
                 EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', t) INTO filled; \
                 IF filled THEN EXECUTE 'ANALYZE ' || t; END IF; \
               END LOOP; \
             END $$",
        )
        .execute(c)?;
    }
    Ok(())
}
