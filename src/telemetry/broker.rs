//! rumqttd embedded in the process, configured from `mqtt-config/rumqttd.toml`.

use std::net::{SocketAddr, TcpListener};

use anyhow::Context;

const CONFIG: &str = include_str!("../../mqtt-config/rumqttd.toml");

/// Starts the broker on `listen` (v4) and the next port (v5); port 0 picks free ports.
/// Returns the v4 address devices connect to.
pub fn start_embedded(listen: SocketAddr) -> anyhow::Result<SocketAddr> {
    let v4 = resolve(listen)?;
    let v5 = resolve(SocketAddr::new(
        listen.ip(),
        if listen.port() == 0 {
            0
        } else {
            listen.port() + 1
        },
    ))?;
    let mut config: rumqttd::Config = config::Config::builder()
        .add_source(config::File::from_str(CONFIG, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize())
        .context("mqtt-config/rumqttd.toml is not a valid rumqttd configuration")?;
    for (servers, addr) in [(&mut config.v4, v4), (&mut config.v5, v5)] {
        if let Some(servers) = servers {
            for s in servers.values_mut() {
                s.listen = addr;
            }
        }
    }
    // Refuse an address already in use now, rather than inside the broker's thread.
    TcpListener::bind(v4).with_context(|| format!("the MQTT address {v4} is in use"))?;
    let mut broker = rumqttd::Broker::new(config);
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .context("starting the embedded MQTT broker")?;
    Ok(v4)
}

/// Turns port 0 into a free port, since rumqttd does not report the port it bound.
fn resolve(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let probe = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    Ok(probe.local_addr()?)
}
