//! No-shows: a confirmed booking nobody checked in to within its site's grace after the start is
//! released: status `released`, allowance refunded, the member told by email (an iTIP CANCEL),
//! its credential revoked and the resource free again. The status change is conditional, so of
//! several instances (or a late check-in) exactly one wins.

use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDateTime, Utc};

use crate::bookings::{self, Env};
use crate::db::network::Directory;
use crate::db::{Db, DbError};
use crate::grants::Grants;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct Release {
    pub db: Db,
    pub grants: Arc<Grants>,
    pub directory: Arc<dyn Fn() -> Arc<Directory> + Send + Sync>,
    pub metrics: Arc<Metrics>,
    pub mail_waker: Arc<tokio::sync::Notify>,
    pub public_url: String,
    pub mail_from: String,
    pub every: Duration,
}

impl Release {
    pub async fn run(self) {
        loop {
            match self.pass(Utc::now().naive_utc()).await {
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(bookings = n, "no-shows released");
                    }
                    self.metrics.jobs.ok("release");
                }
                Err(e) => self.metrics.jobs.failed("release", &e),
            }
            tokio::time::sleep(self.every).await;
        }
    }

    /// Releases every booking past its grace at `now` (`bookings::release_no_shows`); returns
    /// how many.
    pub async fn pass(&self, now: NaiveDateTime) -> Result<usize, DbError> {
        let dir = (self.directory)();
        let env = Env {
            db: &self.db,
            directory: &dir,
            grants: &self.grants,
            metrics: &self.metrics,
            mail_waker: &self.mail_waker,
            public_url: &self.public_url,
            mail_from: &self.mail_from,
        };
        bookings::release_no_shows(env, now)
            .await
            .map_err(|e| match e {
                bookings::Error::Db(e) => e,
                other => DbError::Unavailable(other.to_string()),
            })
    }
}
