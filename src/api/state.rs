use std::sync::{Arc, RwLock};

use super::tokens::TokenKeys;
use crate::config::Config;
use crate::db::network::Directory;
use crate::db::Db;
use crate::fleet::Fleet;
use crate::metrics::Metrics;

/// What every handler can reach.
pub struct AppState {
    pub db: Db,
    pub directory: RwLock<Arc<Directory>>,
    pub tokens: TokenKeys,
    pub config: Config,
    pub metrics: Arc<Metrics>,
    /// Wakes the outbox mailer as soon as a transaction has queued mail.
    pub mail_waker: Arc<tokio::sync::Notify>,
    pub login_throttle: super::throttle::LoginThrottle,
    /// Where `/readyz` checks the MQTT broker.
    pub mqtt_addr: Option<String>,
    /// Every device with its health and latest values.
    pub fleet: Arc<Fleet>,
    /// Door credentials that matter now, for door decisions and grant lists.
    pub grants: Arc<crate::grants::Grants>,
}

impl AppState {
    pub fn directory(&self) -> Arc<Directory> {
        self.directory
            .read()
            .map(|d| d.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    pub fn replace_directory(&self, dir: Directory) {
        match self.directory.write() {
            Ok(mut d) => *d = Arc::new(dir),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(dir),
        }
    }
}
