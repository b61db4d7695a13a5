//! `spazi simulate`: publishes the network's building telemetry to an MQTT broker until Ctrl-C
//! or `--duration`, then prints what it sent.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

use crate::domain::network::DEFAULT_SEED;
use crate::sim::{self, SimOptions};

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The broker to publish to, mqtt://host:port.
    #[arg(
        long,
        env = "SPAZI_MQTT_URL",
        default_value = "mqtt://127.0.0.1:1883",
        value_name = "URL"
    )]
    pub broker: String,
    /// Broker username (the same for every site's gateway).
    #[arg(long)]
    pub username: Option<String>,
    /// Broker password; prefer the environment variable, which stays out of `ps`.
    #[arg(long, env = "SPAZI_SIM_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Simulate the first N sites of the network (default: all 250).
    #[arg(long, value_name = "N")]
    pub sites: Option<usize>,
    /// Simulate this site (repeatable); overrides --sites.
    #[arg(long = "site", value_name = "ID")]
    pub site_ids: Vec<String>,
    /// Extra Polis buildings (post offices): polis-00001, …
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub buildings: usize,
    /// Multiplier on every report interval: 2 = twice as often (a load test uses 50).
    #[arg(long, default_value_t = 1.0, value_name = "X")]
    pub rate: f64,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Seed of the simulation's randomness.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    /// No charger faults, duplicates or malformed messages.
    #[arg(long)]
    pub no_faults: bool,
    /// Follow the bookings of this database for presence (default: DATABASE_URL, if set).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_name = "URL")]
    pub database_url: Option<String>,
}

/// Host, port and any credentials of an `mqtt://` (or `tcp://`) URL; `embedded` (the service's
/// own default) means the embedded broker's address, `SPAZI_MQTT_EMBEDDED_LISTEN`.
fn parse_broker(text: &str) -> anyhow::Result<(String, u16, Option<String>, Option<String>)> {
    if text == "embedded" {
        let listen = std::env::var("SPAZI_MQTT_EMBEDDED_LISTEN")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| "127.0.0.1:1883".into());
        let addr: std::net::SocketAddr = listen
            .parse()
            .with_context(|| format!("SPAZI_MQTT_EMBEDDED_LISTEN {listen:?} is not host:port"))?;
        return Ok((addr.ip().to_string(), addr.port(), None, None));
    }
    let url = url::Url::parse(text).with_context(|| format!("--broker {text:?} is not a URL"))?;
    match url.scheme() {
        "mqtt" | "tcp" => {}
        "mqtts" | "ssl" | "tls" => {
            bail!("--broker: the simulator speaks plain MQTT only (mqtt://host:port)")
        }
        other => bail!("--broker: unknown scheme {other:?}; use mqtt://host:port"),
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .with_context(|| format!("--broker {text:?} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = url.port().unwrap_or(1883);
    if port == 0 {
        bail!("--broker: port 0 is not a broker's port");
    }
    let user = (!url.username().is_empty()).then(|| url.username().to_owned());
    let password = url.password().map(str::to_owned);
    Ok((host, port, user, password))
}

impl SimulateArgs {
    /// The simulator's options, checked.
    pub fn options(self) -> anyhow::Result<SimOptions> {
        let (host, port, url_user, url_password) = parse_broker(&self.broker)?;
        if !(self.rate.is_finite() && self.rate > 0.0) {
            bail!("--rate must be a positive number");
        }
        let duration = match self.duration {
            Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
            Some(_) => bail!("--duration must be a positive number of seconds"),
            None => None,
        };
        let database_url = self.database_url.filter(|u| !u.trim().is_empty());
        Ok(SimOptions {
            host,
            port,
            username: self.username.or(url_user),
            password: self.password.filter(|p| !p.is_empty()).or(url_password),
            sites: self.sites,
            site_ids: self.site_ids,
            buildings: self.buildings,
            rate: self.rate,
            duration,
            seed: self.seed,
            database_url,
            faults: !self.no_faults,
        })
    }
}

pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let options = args.options()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("spazi-sim")
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::info!("stopping: every device goes offline, then the gateways");
                let _ = stop_tx.send(true);
                // A second Ctrl-C does not wait for the goodbyes.
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
        let report = sim::run(options, stop_rx).await?;
        println!("{report}");
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SimulateArgs,
    }

    fn parse(argv: &[&str]) -> anyhow::Result<SimOptions> {
        let cli = Cli::try_parse_from(std::iter::once("simulate").chain(argv.iter().copied()))?;
        cli.args.options()
    }

    #[test]
    fn broker_urls() {
        assert_eq!(
            parse_broker("mqtt://10.0.0.5:1884").unwrap(),
            ("10.0.0.5".into(), 1884, None, None)
        );
        assert_eq!(parse_broker("mqtt://broker").unwrap().1, 1883);
        assert_eq!(parse_broker("mqtt://[::1]:2000").unwrap().0, "::1");
        let (_, _, u, p) = parse_broker("mqtt://sim:s3cret@localhost:1883").unwrap();
        assert_eq!((u.as_deref(), p.as_deref()), (Some("sim"), Some("s3cret")));
        assert!(parse_broker("mqtts://broker:8883").is_err());
        assert!(parse_broker("http://broker").is_err());
        assert!(parse_broker("broker:1883").is_err());
        assert!(parse_broker("mqtt://broker:0").is_err());
        // The service's default names the embedded broker; with no override it is 1883 here.
        if std::env::var("SPAZI_MQTT_EMBEDDED_LISTEN").is_err() {
            let (host, port, _, _) = parse_broker("embedded").unwrap();
            assert_eq!((host.as_str(), port), ("127.0.0.1", 1883));
        }
    }

    #[test]
    fn arguments_become_options() {
        let o = parse(&[
            "--broker",
            "mqtt://127.0.0.1:4000",
            "--site",
            "roma",
            "--site",
            "milano",
            "--buildings",
            "3",
            "--rate",
            "20",
            "--duration",
            "2.5",
            "--no-faults",
            "--database-url",
            "sqlite://x.db",
        ])
        .unwrap();
        assert_eq!((o.host.as_str(), o.port), ("127.0.0.1", 4000));
        assert_eq!(o.site_ids, ["roma", "milano"]);
        assert_eq!(o.buildings, 3);
        assert_eq!(o.rate, 20.0);
        assert_eq!(o.duration, Some(Duration::from_millis(2_500)));
        assert!(!o.faults);
        assert_eq!(o.database_url.as_deref(), Some("sqlite://x.db"));
        assert!(parse(&["--rate", "0"]).is_err());
        assert!(parse(&["--rate", "-2"]).is_err());
        assert!(parse(&["--duration", "0"]).is_err());
        assert!(parse(&["--sites", "x"]).is_err());
    }
}
