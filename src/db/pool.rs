use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool};
use diesel::RunQueryDsl;

use super::{DbConnection, DbError, DbResult};

#[derive(Debug, Clone)]
pub struct DbConfig {
    pub url: String,
    /// Connections in the pool, and database threads that use them.
    pub connections: u32,
}

impl DbConfig {
    pub fn new(url: impl Into<String>) -> Self {
        let url = url.into();
        let connections = if url.starts_with("sqlite") { 4 } else { 8 };
        DbConfig { url, connections }
    }
}

/// Every pooled SQLite connection gets WAL, a busy timeout and foreign keys.
#[derive(Debug)]
struct ConnectionSetup;

impl CustomizeConnection<DbConnection, diesel::r2d2::Error> for ConnectionSetup {
    fn on_acquire(&self, conn: &mut DbConnection) -> Result<(), diesel::r2d2::Error> {
        if let DbConnection::Sqlite(_) = conn {
            for pragma in [
                "PRAGMA busy_timeout = 10000",
                "PRAGMA journal_mode = WAL",
                "PRAGMA synchronous = NORMAL",
                "PRAGMA foreign_keys = ON",
            ] {
                diesel::sql_query(pragma)
                    .execute(conn)
                    .map_err(diesel::r2d2::Error::QueryError)?;
            }
        }
        Ok(())
    }
}

type Job = Box<dyn FnOnce(&mut DbConnection) + Send>;

/// The r2d2 pool behind a fixed set of database threads.
///
/// Async code sends closures over a bounded channel and awaits a oneshot reply, so an actix
/// worker is never blocked on I/O and the number of queries in flight is the number of threads.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool<ConnectionManager<DbConnection>>,
    jobs: flume::Sender<Job>,
}

impl Db {
    pub fn connect(config: &DbConfig) -> DbResult<Db> {
        let url = normalise_url(&config.url)?;
        let manager = ConnectionManager::<DbConnection>::new(url);
        let pool = Pool::builder()
            .max_size(config.connections)
            .min_idle(Some(1))
            .test_on_check_out(false)
            .connection_timeout(Duration::from_secs(10))
            .connection_customizer(Box::new(ConnectionSetup))
            .build(manager)?;
        let (tx, rx) = flume::bounded::<Job>(1024);
        for i in 0..config.connections {
            let rx = rx.clone();
            let pool = pool.clone();
            thread::Builder::new()
                .name(format!("db-{i}"))
                .spawn(move || db_thread(pool, rx))
                .map_err(|e| DbError::Unavailable(e.to_string()))?;
        }
        Ok(Db {
            inner: Arc::new(Inner { pool, jobs: tx }),
        })
    }

    /// Runs `f` with a pooled connection on a database thread and awaits its result.
    pub async fn run<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let outcome = match panic::catch_unwind(AssertUnwindSafe(|| f(conn))) {
                Ok(outcome) => outcome,
                Err(payload) => Err(E::from(panicked(payload))),
            };
            let _ = reply_tx.send(outcome);
        });
        self.inner
            .jobs
            .send_async(job)
            .await
            .map_err(|_| E::from(DbError::Unavailable("database threads stopped".into())))?;
        match reply_rx.await {
            Ok(result) => result,
            Err(_) => Err(E::from(DbError::Unavailable(
                "no connection could be checked out".into(),
            ))),
        }
    }

    /// Runs `f` on the calling thread; for command-line tools and start-up, never from async code.
    pub fn run_blocking<T, E>(
        &self,
        f: impl FnOnce(&mut DbConnection) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<DbError>,
    {
        let mut conn = self.inner.pool.get().map_err(DbError::from)?;
        f(&mut conn)
    }

    /// Connections currently open and idle, for `/metrics`.
    pub fn pool_state(&self) -> (u32, u32) {
        let s = self.inner.pool.state();
        (s.connections, s.idle_connections)
    }
}

/// Takes jobs until the pool is dropped. A job's panic is caught where it runs (see [`Db::run`]);
/// the connection it used goes back to the pool, which closes it instead of reusing it when the
/// panic left a transaction open, so the next job gets a connection in a clean state.
fn db_thread(pool: Pool<ConnectionManager<DbConnection>>, jobs: flume::Receiver<Job>) {
    while let Ok(job) = jobs.recv() {
        match pool.get() {
            Ok(mut conn) => {
                // Jobs built by `Db::run` never unwind; this keeps the thread alive regardless.
                if panic::catch_unwind(AssertUnwindSafe(|| job(&mut conn))).is_err() {
                    tracing::error!("a database job panicked outside its closure");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "database connection unavailable");
                drop(job);
            }
        }
    }
}

/// The error a panicking closure answers with, carrying the panic's message.
fn panicked(payload: Box<dyn Any + Send>) -> DbError {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned());
    tracing::error!(panic = %message, "a database closure panicked");
    DbError::Panicked(message)
}

/// Accepts `sqlite://PATH`, `sqlite:PATH`, a bare path, or a PostgreSQL URL.
fn normalise_url(url: &str) -> DbResult<String> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(url.to_string());
    }
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    if path.is_empty() {
        return Err(DbError::Unavailable(
            "DATABASE_URL names no SQLite file".into(),
        ));
    }
    if path.contains("://") {
        return Err(DbError::Unavailable(format!(
            "DATABASE_URL scheme not supported: {}",
            path.split("://").next().unwrap_or_default()
        )));
    }
    Ok(path.to_string())
}

#[cfg(test)]
mod tests {
    use super::normalise_url;

    #[test]
    fn sqlite_urls_become_paths() {
        assert_eq!(normalise_url("sqlite://spazi.db").unwrap(), "spazi.db");
        assert_eq!(normalise_url("sqlite:///tmp/x.db").unwrap(), "/tmp/x.db");
        assert_eq!(
            normalise_url("postgres://postgres@127.0.0.1/spazi").unwrap(),
            "postgres://postgres@127.0.0.1/spazi"
        );
        assert!(normalise_url("mysql://x").is_err());
        assert!(normalise_url("sqlite://").is_err());
    }
}
