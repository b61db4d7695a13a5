//! Run-time configuration, read from the environment (see README for each variable).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MqttConfig {
    /// rumqttd inside the process, listening here (port 0 picks a free port).
    Embedded(SocketAddr),
    External {
        host: String,
        port: u16,
    },
}

#[derive(Clone)]
pub struct Config {
    pub database_url: String,
    pub listen: String,
    pub mqtt: MqttConfig,
    pub mail_url: String,
    /// The sender of every mail, e.g. `Spazi per l'Italia <noreply@spazi.example>`.
    pub mail_from: String,
    pub public_url: String,
    pub jwt_secret: Vec<u8>,
    /// Seconds between outbox polls when nothing wakes the mailer sooner.
    pub mail_poll_secs: u64,
    pub telemetry: TelemetryConfig,
}

/// How the service hears the buildings, and what it keeps and watches.
#[derive(Clone, PartialEq)]
pub struct TelemetryConfig {
    /// Run the MQTT ingest consumer (`SPAZI_INGEST`, default on).
    pub ingest: bool,
    /// The consumer's fixed client id; its broker session persists across restarts.
    pub client_id: String,
    /// The service's broker identity (`SPAZI_MQTT_USERNAME`, `SPAZI_MQTT_PASSWORD[_FILE]`).
    pub username: Option<String>,
    pub password: Option<String>,
    /// Subscribe with `$share/spazi/…` so several instances split the load.
    pub shared: bool,
    /// Raw readings and device events older than this are removed.
    pub raw_retention_days: u32,
    /// Seconds between roll-up passes.
    pub rollup_secs: u64,
    /// Seconds between device-health and alarm sweeps.
    pub health_secs: u64,
    pub co2_limit_ppm: f64,
    pub temp_min_c: f64,
    pub temp_max_c: f64,
    pub door_held_secs: u64,
    /// How long an unlock or deny command may be executed after it is issued, ms.
    pub unlock_ttl_ms: i64,
    /// How long a door stays unlocked, s.
    pub unlock_secs: i64,
    /// Seconds between passes of the no-show release.
    pub release_secs: u64,
    /// Seconds between passes of the zone climate control.
    pub climate_secs: u64,
    /// How often smart charging sets the chargers' current limits, seconds.
    pub charging_secs: u64,
    /// Setpoints for comfort (and pre-conditioning) and for setback, °C.
    pub comfort_t_c: f64,
    pub eco_t_c: f64,
    /// Badge events and person-linked access records are anonymised after this many days.
    pub personal_retention_days: u32,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            ingest: true,
            client_id: "spazi-ingest".into(),
            username: None,
            password: None,
            shared: false,
            raw_retention_days: 30,
            rollup_secs: 30,
            health_secs: 5,
            co2_limit_ppm: 1000.0,
            temp_min_c: 16.0,
            temp_max_c: 28.0,
            door_held_secs: 60,
            unlock_ttl_ms: 5_000,
            unlock_secs: 5,
            release_secs: 30,
            climate_secs: 30,
            charging_secs: 60,
            comfort_t_c: 21.0,
            eco_t_c: 16.0,
            personal_retention_days: 90,
        }
    }
}

impl std::fmt::Debug for TelemetryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryConfig")
            .field("ingest", &self.ingest)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("shared", &self.shared)
            .field("raw_retention_days", &self.raw_retention_days)
            .finish()
    }
}

fn parsed<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match var(name) {
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{name} {v:?} is not a valid value")),
        None => Ok(default),
    }
}

fn flag(name: &str, default: bool) -> anyhow::Result<bool> {
    match var(name).as_deref().map(str::trim) {
        None => Ok(default),
        Some("1" | "true" | "yes" | "on") => Ok(true),
        Some("0" | "false" | "no" | "off") => Ok(false),
        Some(v) => bail!("{name} {v:?} must be true or false"),
    }
}

impl TelemetryConfig {
    pub fn from_env() -> anyhow::Result<TelemetryConfig> {
        let d = TelemetryConfig::default();
        let password = match (var("SPAZI_MQTT_PASSWORD"), var("SPAZI_MQTT_PASSWORD_FILE")) {
            (Some(p), _) => Some(p),
            (None, Some(path)) => Some(
                std::fs::read_to_string(&path)
                    .with_context(|| format!("reading SPAZI_MQTT_PASSWORD_FILE {path}"))?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        };
        Ok(TelemetryConfig {
            ingest: flag("SPAZI_INGEST", d.ingest)?,
            client_id: var("SPAZI_MQTT_CLIENT_ID").unwrap_or(d.client_id),
            username: var("SPAZI_MQTT_USERNAME"),
            password,
            shared: flag("SPAZI_MQTT_SHARED", d.shared)?,
            raw_retention_days: parsed("SPAZI_RAW_RETENTION_DAYS", d.raw_retention_days)?,
            rollup_secs: parsed("SPAZI_ROLLUP_SECS", d.rollup_secs)?.max(1),
            health_secs: parsed("SPAZI_HEALTH_SECS", d.health_secs)?.max(1),
            co2_limit_ppm: parsed("SPAZI_CO2_LIMIT_PPM", d.co2_limit_ppm)?,
            temp_min_c: parsed("SPAZI_TEMP_MIN_C", d.temp_min_c)?,
            temp_max_c: parsed("SPAZI_TEMP_MAX_C", d.temp_max_c)?,
            door_held_secs: parsed("SPAZI_DOOR_HELD_SECS", d.door_held_secs)?.max(1),
            unlock_ttl_ms: parsed("SPAZI_UNLOCK_TTL_MS", d.unlock_ttl_ms)?.clamp(100, 60_000),
            unlock_secs: parsed("SPAZI_UNLOCK_SECS", d.unlock_secs)?.clamp(1, 3600),
            release_secs: parsed("SPAZI_RELEASE_SECS", d.release_secs)?.max(1),
            climate_secs: parsed("SPAZI_CLIMATE_SECS", d.climate_secs)?.max(1),
            charging_secs: parsed("SPAZI_CHARGING_SECS", d.charging_secs)?.max(1),
            comfort_t_c: parsed("SPAZI_COMFORT_T_C", d.comfort_t_c)?.clamp(5.0, 35.0),
            eco_t_c: parsed("SPAZI_ECO_T_C", d.eco_t_c)?.clamp(5.0, 35.0),
            personal_retention_days: parsed(
                "SPAZI_PERSONAL_RETENTION_DAYS",
                d.personal_retention_days,
            )?
            .max(1),
        })
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &redact_url(&self.database_url))
            .field("listen", &self.listen)
            .field("mqtt", &self.mqtt)
            .field("mail_url", &redact_url(&self.mail_url))
            .field("public_url", &self.public_url)
            .field("jwt_secret", &"<redacted>")
            .field("telemetry", &self.telemetry)
            .finish()
    }
}

/// Where the JWT signing secret comes from when none is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretPolicy {
    /// `serve`: a missing secret is an error.
    Required,
    /// `demo` and tests: a random secret for this process.
    RandomIfMissing,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Config {
    pub fn from_env(secrets: SecretPolicy) -> anyhow::Result<Config> {
        let jwt_secret = match (var("SPAZI_JWT_SECRET"), var("SPAZI_JWT_SECRET_FILE")) {
            (Some(s), _) => s.into_bytes(),
            (None, Some(path)) => std::fs::read(PathBuf::from(&path))
                .with_context(|| format!("reading SPAZI_JWT_SECRET_FILE {path}"))?
                .trim_ascii()
                .to_vec(),
            (None, None) if secrets == SecretPolicy::RandomIfMissing => {
                use rand::RngCore;
                let mut key = vec![0u8; 32];
                rand::thread_rng().fill_bytes(&mut key);
                key
            }
            (None, None) => bail!(
                "SPAZI_JWT_SECRET (or SPAZI_JWT_SECRET_FILE) must be set: at least 32 bytes of secret"
            ),
        };
        if jwt_secret.len() < 32 {
            bail!("the JWT secret must be at least 32 bytes long");
        }
        let mqtt = parse_mqtt(
            &var("SPAZI_MQTT_URL").unwrap_or_else(|| "embedded".into()),
            &var("SPAZI_MQTT_EMBEDDED_LISTEN").unwrap_or_else(|| "127.0.0.1:1883".into()),
        )?;
        Ok(Config {
            database_url: var("DATABASE_URL").unwrap_or_else(|| "sqlite://spazi.db".into()),
            listen: var("SPAZI_LISTEN").unwrap_or_else(|| "127.0.0.1:8080".into()),
            mqtt,
            mail_url: var("SPAZI_MAIL_URL").unwrap_or_else(|| "file://./mail".into()),
            mail_from: var("SPAZI_MAIL_FROM")
                .unwrap_or_else(|| "Spazi per l'Italia <prenotazioni@spazi.example>".into()),
            public_url: var("SPAZI_PUBLIC_URL")
                .unwrap_or_else(|| "http://127.0.0.1:8080".into())
                .trim_end_matches('/')
                .to_string(),
            jwt_secret,
            mail_poll_secs: var("SPAZI_MAIL_POLL_SECS")
                .and_then(|v| v.parse().ok())
                .unwrap_or(5),
            telemetry: TelemetryConfig::from_env()?,
        })
    }
}

pub fn parse_mqtt(url: &str, embedded_listen: &str) -> anyhow::Result<MqttConfig> {
    if url == "embedded" {
        let addr = embedded_listen.parse().with_context(|| {
            format!("SPAZI_MQTT_EMBEDDED_LISTEN {embedded_listen:?} is not host:port")
        })?;
        return Ok(MqttConfig::Embedded(addr));
    }
    let parsed =
        url::Url::parse(url).with_context(|| format!("SPAZI_MQTT_URL {url:?} is not a URL"))?;
    if !matches!(parsed.scheme(), "mqtt" | "tcp") {
        bail!("SPAZI_MQTT_URL must be mqtt://host:port or \"embedded\"");
    }
    let host = parsed
        .host_str()
        .context("SPAZI_MQTT_URL has no host")?
        .to_string();
    Ok(MqttConfig::External {
        host,
        port: parsed.port().unwrap_or(1883),
    })
}

/// A URL with its password replaced, fit for logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_urls() {
        assert_eq!(
            parse_mqtt("mqtt://broker:1884", "x").unwrap(),
            MqttConfig::External {
                host: "broker".into(),
                port: 1884
            }
        );
        assert!(matches!(
            parse_mqtt("embedded", "127.0.0.1:0").unwrap(),
            MqttConfig::Embedded(_)
        ));
        assert!(parse_mqtt("http://x", "").is_err());
    }

    #[test]
    fn passwords_never_reach_logs() {
        assert!(!redact_url("postgres://spazi:s3cret@db/spazi").contains("s3cret"));
    }
}
