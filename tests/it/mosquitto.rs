//! A real Mosquitto for tests: its own process, port, configuration and persistence directory.
//!
//! ```ignore
//! let mut broker = Mosquitto::start(MosquittoOptions::default()); // anonymous, no persistence
//! let mut opts = rumqttc::MqttOptions::new("client", "127.0.0.1", broker.port);
//! // …
//! broker.restart(); // same port, same persistence directory
//! ```
//!
//! The configuration follows `mqtt-config/mosquitto.conf` (wide inflight window, large queues,
//! `set_tcp_nodelay`, the same packet size limit) with a listener on 127.0.0.1 and a free port.
//! Without the `mosquitto` binary the helper panics: these tests need the real broker and are
//! never skipped.

#![allow(dead_code)]

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a broker may take to accept connections, and to exit after SIGTERM.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What the test broker enforces.
#[derive(Debug, Clone, Default)]
pub struct MosquittoOptions {
    /// `Some((passwd, acl))`: the text of a Mosquitto `password_file` and `acl_file` (as made by
    /// `spazi::telemetry::mosquitto`), and anonymous clients are refused. `None`: anonymous
    /// clients may do anything.
    pub auth: Option<(String, String)>,
    /// Keep retained messages, subscriptions and queued QoS 1 messages of persistent sessions in
    /// the broker's directory, so they survive [`Mosquitto::restart`] (saved at a clean stop and
    /// every 60 s, as in production: a [`Mosquitto::kill`] loses what came since the last save).
    pub persistence: bool,
    /// Further lines appended to the configuration (a later option overrides an earlier one).
    pub extra_config: String,
}

/// A running `mosquitto -c …`; killed when dropped.
pub struct Mosquitto {
    /// The port of the plain listener on 127.0.0.1; it stays the same across restarts.
    pub port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl Mosquitto {
    /// Writes the configuration into a fresh temporary directory, spawns the broker on a free port
    /// and returns once the port accepts connections. Panics, with the broker's log, if it does not
    /// come up.
    pub fn start(opts: MosquittoOptions) -> Mosquitto {
        let binary = binary();
        let dir = tempfile::Builder::new()
            .prefix("spazi-mosquitto-")
            .tempdir()
            .expect("a temporary directory for mosquitto");
        fs::create_dir(dir.path().join("data")).unwrap();
        if let Some((passwd, acl)) = &opts.auth {
            fs::write(dir.path().join("passwd"), passwd).unwrap();
            fs::write(dir.path().join("acl"), acl).unwrap();
        }
        // A free port can be taken by someone else between our probe and the broker's bind: try a
        // few.
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = free_port();
            fs::write(
                dir.path().join("mosquitto.conf"),
                config(dir.path(), port, &opts),
            )
            .unwrap();
            match spawn(&binary, dir.path(), port) {
                Ok(child) => {
                    return Mosquitto {
                        port,
                        dir,
                        child: Some(child),
                    }
                }
                Err(log) if log.contains("Address already in use") => last_log = log,
                Err(log) => panic!("mosquitto did not start on port {port}:\n{log}"),
            }
        }
        panic!("mosquitto found no free port:\n{last_log}")
    }

    /// The broker's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The password file the broker reads (rewrite it and call [`Mosquitto::reload`]).
    pub fn passwd_path(&self) -> PathBuf {
        self.dir.path().join("passwd")
    }

    /// The ACL file the broker reads (rewrite it and call [`Mosquitto::reload`]).
    pub fn acl_path(&self) -> PathBuf {
        self.dir.path().join("acl")
    }

    /// Everything the broker has logged so far, across restarts.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The broker's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGHUP: the broker rereads its password and ACL files, as an operator would make it.
    pub fn reload(&mut self) {
        self.signal("HUP");
    }

    /// SIGTERM and wait: a clean shutdown, which saves the persistence file. Falls back to SIGKILL
    /// if the broker has not exited within 10 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            send_signal(child.id(), "TERM");
            let deadline = Instant::now() + STOP_TIMEOUT;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGKILL and wait: a crash; nothing is saved.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the broker (cleanly) if it runs and starts it again on the same port with the same
    /// configuration and persistence directory.
    pub fn restart(&mut self) {
        self.stop();
        let binary = binary();
        // The port was ours a moment ago, but a client's reconnect loop cannot take a listening
        // port: if the bind fails it is a real problem, so do not hunt for another one.
        match spawn(&binary, self.dir.path(), self.port) {
            Ok(child) => self.child = Some(child),
            Err(log) => panic!("mosquitto did not restart on port {}:\n{log}", self.port),
        }
    }

    fn signal(&mut self, signal: &str) {
        if let Some(pid) = self.pid() {
            send_signal(pid, signal);
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The mosquitto binary: `$MOSQUITTO` if set, else `mosquitto` on `PATH`, else the Debian and
/// Homebrew locations. Panics if there is none: the tests that use it must not pass vacuously.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("MOSQUITTO") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(
            ["/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin"]
                .into_iter()
                .map(PathBuf::from),
        )
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the mosquitto binary was not found (PATH, /usr/sbin, /usr/local/sbin): install \
                 Mosquitto 2.0 (`apt-get install mosquitto`) or set MOSQUITTO to its path"
            )
        })
}

/// Spawns `mosquitto -c dir/mosquitto.conf` and waits until `port` accepts connections; on failure
/// the process is killed and the error is this run's part of the log.
fn spawn(binary: &Path, dir: &Path, port: u16) -> Result<Child, String> {
    let log_path = dir.join("mosquitto.log");
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .unwrap();
    let start_of_this_run = log.metadata().map(|m| m.len()).unwrap_or(0) as usize;
    let mut child = Command::new(binary)
        .arg("-c")
        .arg(dir.join("mosquitto.conf"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", binary.display()));
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let exited = !matches!(child.try_wait(), Ok(None));
        if !exited && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(child);
        }
        if exited || Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let text = fs::read_to_string(&log_path).unwrap_or_default();
            let run = text.get(start_of_this_run..).unwrap_or(&text);
            let why = if exited {
                "exited"
            } else {
                "accepted no connection within 10 s"
            };
            return Err(format!("mosquitto {why}; its log:\n{run}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

fn send_signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Whether this process runs as root (the owner of a file it just created).
fn running_as_root(dir: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(dir).map(|m| m.uid() == 0).unwrap_or(false)
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        false
    }
}

fn config(dir: &Path, port: u16, opts: &MosquittoOptions) -> String {
    let mut c =
        String::from("# Written by tests/it/mosquitto.rs from mqtt-config/mosquitto.conf.\n");
    if running_as_root(dir) {
        // Mosquitto started as root switches to the `mosquitto` user, which could not read this
        // private temporary directory.
        c.push_str("user root\n");
    }
    c.push_str(
        "max_inflight_messages 20000\n\
         max_queued_messages 10000000\n\
         max_queued_bytes 0\n\
         set_tcp_nodelay true\n\
         message_size_limit 1048576\n\
         max_packet_size 1048576\n\
         log_dest stderr\n\
         log_type error\n\
         log_type warning\n\
         log_type notice\n\
         log_type information\n\
         log_timestamp_format %H:%M:%S\n",
    );
    if opts.persistence {
        c.push_str(&format!(
            "persistence true\n\
             persistence_location {}/\n\
             persistence_file mosquitto.db\n\
             autosave_interval 60\n",
            dir.join("data").display()
        ));
    } else {
        c.push_str("persistence false\n");
    }
    match &opts.auth {
        Some(_) => c.push_str(&format!(
            "allow_anonymous false\n\
             password_file {}\n\
             acl_file {}\n",
            dir.join("passwd").display(),
            dir.join("acl").display()
        )),
        None => c.push_str("allow_anonymous true\n"),
    }
    c.push_str(&format!("listener {port} 127.0.0.1\n"));
    c.push_str(&opts.extra_config);
    c.push('\n');
    c
}

/// Publishes one retained QoS 1 message and waits for the broker's PUBACK.
fn publish_retained(port: u16, topic: &str, payload: &str) {
    let mut options = rumqttc::MqttOptions::new("helper-publisher", "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut connection) = rumqttc::Client::new(options, 10);
    client
        .publish(topic, rumqttc::QoS::AtLeastOnce, true, payload.as_bytes())
        .unwrap();
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        match connection.recv_timeout(Duration::from_millis(200)) {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))) => return,
            Ok(Err(e)) => panic!("publishing to {topic}: {e}"),
            _ => {}
        }
    }
    panic!("no PUBACK for {topic}");
}

/// The retained message on `topic`, if the broker has one (waits up to 2 s for it).
fn read_retained(port: u16, topic: &str) -> Option<String> {
    let mut options = rumqttc::MqttOptions::new("helper-reader", "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut connection) = rumqttc::Client::new(options, 10);
    client.subscribe(topic, rumqttc::QoS::AtLeastOnce).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match connection.recv_timeout(Duration::from_millis(200)) {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)))) if p.retain => {
                return Some(String::from_utf8_lossy(&p.payload).into_owned())
            }
            Ok(Err(e)) => panic!("reading {topic}: {e}"),
            _ => {}
        }
    }
    None
}

#[test]
fn a_persistent_broker_keeps_retained_messages_across_a_restart_on_the_same_port() {
    let topic = "spazi/v1/torino/torino-gw/status";
    let payload = r#"{"v":1,"online":true}"#;
    let mut broker = Mosquitto::start(MosquittoOptions {
        persistence: true,
        ..MosquittoOptions::default()
    });
    let port = broker.port;
    publish_retained(port, topic, payload);
    broker.restart();
    assert_eq!(broker.port, port);
    assert!(broker.is_running());
    assert_eq!(read_retained(port, topic).as_deref(), Some(payload));

    broker.kill();
    assert!(!broker.is_running());
    assert!(TcpStream::connect(broker.addr()).is_err());
    broker.restart();
    assert_eq!(read_retained(port, topic).as_deref(), Some(payload));
    broker.stop();
    assert!(!broker.is_running());
}

#[test]
fn without_persistence_a_restart_forgets() {
    let topic = "spazi/v1/torino/torino-gw/status";
    let mut broker = Mosquitto::start(MosquittoOptions::default());
    publish_retained(broker.port, topic, "x");
    assert_eq!(read_retained(broker.port, topic).as_deref(), Some("x"));
    broker.restart();
    assert_eq!(read_retained(broker.port, topic), None);
}

#[test]
fn a_configuration_mosquitto_refuses_fails_with_its_log() {
    let outcome = std::panic::catch_unwind(|| {
        Mosquitto::start(MosquittoOptions {
            extra_config: "no_such_option true".into(),
            ..MosquittoOptions::default()
        })
    });
    let message = match outcome {
        Ok(_) => panic!("mosquitto started with an unknown option"),
        Err(e) => e.downcast_ref::<String>().cloned().unwrap_or_default(),
    };
    assert!(message.contains("no_such_option"), "{message}");
}
