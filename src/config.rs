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
