//! The broker ACL made by `spazi::telemetry::mosquitto`, enforced by a real Mosquitto and seen by
//! real MQTT clients: each identity may write only its own part of the topic tree.
//!
//! Mosquitto drops an unauthorised publish silently (the QoS 1 flow still completes), so a refused
//! publish is shown by its absence: each client publishes the forbidden messages, then a marker on
//! a topic it may use; once every marker has reached the service, the service listens a while
//! longer and must have seen nothing else. One connection's messages reach a subscriber in order,
//! so a forbidden message that got through would have arrived before its marker.

use std::collections::BTreeSet;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, LastWill, MqttOptions, Packet, QoS,
    SubscribeReasonCode,
};
use spazi::telemetry::mosquitto::{
    acl_file, generate_password, upsert_password, AclIdentity, SERVICE_USER,
};
use tokio::sync::{mpsc, oneshot};

use crate::mosquitto::{Mosquitto, MosquittoOptions};

const SITE_A: &str = "torino";
const SITE_B: &str = "bari";
const ENV_A: &str = "torino-env-01";
const DOOR_A: &str = "torino-door-01";
const ENV_B: &str = "bari-env-01";
const GATEWAY_A: &str = "torino-gw";

/// How long the service keeps listening after the last marker.
const QUIET: Duration = Duration::from_secs(1);
/// How long any expected message may take.
const PATIENCE: Duration = Duration::from_secs(10);

/// The broker and every identity's password.
struct Fixture {
    broker: Mosquitto,
    passwords: Vec<(String, String)>,
}

impl Fixture {
    fn start() -> Fixture {
        let devices = [
            identity(ENV_A, SITE_A, false),
            identity(DOOR_A, SITE_A, false),
            identity(ENV_B, SITE_B, false),
            identity(GATEWAY_A, SITE_A, true),
        ];
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        let mut passwords = Vec::new();
        for user in std::iter::once(SERVICE_USER).chain(devices.iter().map(|d| &*d.username)) {
            let password = generate_password();
            upsert_password(&passwd, user, &password).unwrap();
            passwords.push((user.to_string(), password));
        }
        let broker = Mosquitto::start(MosquittoOptions {
            auth: Some((
                std::fs::read_to_string(&passwd).unwrap(),
                acl_file(SERVICE_USER, &devices),
            )),
            ..MosquittoOptions::default()
        });
        Fixture { broker, passwords }
    }

    fn password(&self, user: &str) -> &str {
        &self
            .passwords
            .iter()
            .find(|(u, _)| u == user)
            .expect("a known user")
            .1
    }

    async fn connect(&self, user: &str) -> Client {
        Client::connect(self.broker.port, user, self.password(user), None)
            .await
            .unwrap_or_else(|e| panic!("{user} could not connect: {e}\n{}", self.broker.log()))
    }

    /// The service, subscribed the way its instances share the load.
    async fn service(&self) -> Client {
        let mut service = self.connect(SERVICE_USER).await;
        service.subscribe("$share/spazi/spazi/v1/#").await;
        service
    }
}

fn identity(device: &str, site: &str, gateway: bool) -> AclIdentity {
    AclIdentity {
        username: device.into(),
        site_id: site.into(),
        device_id: device.into(),
        gateway,
    }
}

fn topic(site: &str, device: &str, rest: &str) -> String {
    format!("spazi/v1/{site}/{device}/{rest}")
}

/// A connected rumqttc client whose event loop runs in its own task.
struct Client {
    client: AsyncClient,
    publishes: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    subacks: mpsc::UnboundedReceiver<Vec<SubscribeReasonCode>>,
    pubacks: mpsc::UnboundedReceiver<u16>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    /// Connects and waits for the CONNACK; a refusal is the error.
    async fn connect(
        port: u16,
        user: &str,
        password: &str,
        will: Option<LastWill>,
    ) -> Result<Client, ConnectionError> {
        let id = format!("{user}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options
            .set_credentials(user, password)
            .set_keep_alive(Duration::from_secs(5))
            .set_clean_session(true);
        if let Some(will) = will {
            options.set_last_will(will);
        }
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let (connected_tx, connected_rx) = oneshot::channel();
        let (publish_tx, publishes) = mpsc::unbounded_channel();
        let (suback_tx, subacks) = mpsc::unbounded_channel();
        let (puback_tx, pubacks) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut connected_tx = Some(connected_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(tx) = connected_tx.take() {
                            let _ = tx.send(Ok(()));
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = publish_tx.send((p.topic, p.payload.to_vec()));
                    }
                    Ok(Event::Incoming(Packet::SubAck(s))) => {
                        let _ = suback_tx.send(s.return_codes);
                    }
                    Ok(Event::Incoming(Packet::PubAck(a))) => {
                        let _ = puback_tx.send(a.pkid);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if let Some(tx) = connected_tx.take() {
                            let _ = tx.send(Err(e));
                        }
                        // No reconnects: a test sees a dropped connection as silence.
                        return;
                    }
                }
            }
        });
        match tokio::time::timeout(PATIENCE, connected_rx).await {
            Ok(Ok(Ok(()))) => Ok(Client {
                client,
                publishes,
                subacks,
                pubacks,
                task,
            }),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => panic!("the event loop of {user} ended without a CONNACK"),
            Err(_) => panic!("no CONNACK for {user} within {PATIENCE:?}"),
        }
    }

    /// Subscribes at QoS 1 and waits for the SUBACK (which Mosquitto grants even for a filter the
    /// ACL will keep empty: reads are checked per message).
    async fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        let codes = tokio::time::timeout(PATIENCE, self.subacks.recv())
            .await
            .expect("a SUBACK")
            .expect("the connection is up");
        assert!(
            codes
                .iter()
                .all(|c| matches!(c, SubscribeReasonCode::Success(_))),
            "subscription to {filter} refused: {codes:?}"
        );
    }

    /// Publishes at QoS 1 and waits for the broker's PUBACK, which it sends for a refused message
    /// too: afterwards the broker has decided the message's fate.
    async fn publish(&mut self, topic: &str, payload: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
            .await
            .unwrap();
        tokio::time::timeout(PATIENCE, self.pubacks.recv())
            .await
            .unwrap_or_else(|_| panic!("no PUBACK for {topic}"))
            .expect("the connection is up");
    }

    /// Everything that arrives until every topic in `markers` has, and then for `QUIET` more.
    async fn collect_until(&mut self, markers: &[String]) -> Vec<(String, String)> {
        let mut waiting: BTreeSet<&str> = markers.iter().map(String::as_str).collect();
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !waiting.is_empty() {
            match tokio::time::timeout_at(deadline, self.publishes.recv()).await {
                Ok(Some((topic, payload))) => {
                    waiting.remove(topic.as_str());
                    got.push((topic, String::from_utf8_lossy(&payload).into_owned()));
                }
                Ok(None) => panic!("the connection dropped; so far: {got:?}"),
                Err(_) => panic!("markers {waiting:?} never arrived; got {got:?}"),
            }
        }
        got.extend(self.quiet_for(QUIET).await);
        got
    }

    /// Whatever arrives within `window`.
    async fn quiet_for(&mut self, window: Duration) -> Vec<(String, String)> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + window;
        while let Ok(Some((topic, payload))) =
            tokio::time::timeout_at(deadline, self.publishes.recv()).await
        {
            got.push((topic, String::from_utf8_lossy(&payload).into_owned()));
        }
        got
    }

    /// Drops the TCP connection without a DISCONNECT, as a device losing power would.
    fn vanish(self) {
        self.task.abort();
    }
}

fn topics(got: &[(String, String)]) -> BTreeSet<String> {
    got.iter().map(|(t, _)| t.clone()).collect()
}

#[tokio::test]
async fn a_device_may_publish_only_on_its_own_topics() {
    let f = Fixture::start();
    let mut service = f.service().await;
    let mut env_a = f.connect(ENV_A).await;

    let allowed = [
        topic(SITE_A, ENV_A, "status"),
        topic(SITE_A, ENV_A, "meta"),
        topic(SITE_A, ENV_A, "tele/env"),
        topic(SITE_A, ENV_A, "evt/fault"),
        topic(SITE_A, ENV_A, "cmd/setpoint/res"),
    ];
    let forbidden = [
        // another device of the same site
        topic(SITE_A, DOOR_A, "tele/env"),
        topic(SITE_A, DOOR_A, "evt/badge"),
        topic(SITE_A, DOOR_A, "status"),
        // its own id under another site
        topic(SITE_B, ENV_A, "tele/env"),
        // a device of another site
        topic(SITE_B, ENV_B, "tele/env"),
        // a command, even to itself, and the service's own status
        topic(SITE_A, ENV_A, "cmd/unlock"),
        topic(SITE_A, DOOR_A, "cmd/unlock"),
        "spazi/v1/_server/status".into(),
        // outside the contract's sub-paths
        topic(SITE_A, ENV_A, "tele/env/extra"),
        topic(SITE_A, ENV_A, "other"),
        "spazi/v2/torino/torino-env-01/tele/env".into(),
    ];
    for t in &forbidden {
        env_a.publish(t, "forbidden").await;
    }
    for t in &allowed {
        env_a.publish(t, "allowed").await;
    }

    let got = service.collect_until(&allowed).await;
    assert_eq!(
        topics(&got),
        allowed.iter().cloned().collect(),
        "the service must see exactly the device's own topics; got {got:?}"
    );
    assert!(got.iter().all(|(_, p)| p == "allowed"), "{got:?}");
}

#[tokio::test]
async fn devices_of_two_sites_reach_the_service_each_on_its_own_topics() {
    let f = Fixture::start();
    let mut service = f.service().await;
    let mut env_b = f.connect(ENV_B).await;
    let mut door_a = f.connect(DOOR_A).await;

    env_b.publish(&topic(SITE_A, ENV_B, "tele/env"), "x").await;
    env_b.publish(&topic(SITE_A, ENV_A, "tele/env"), "x").await;
    door_a
        .publish(&topic(SITE_B, DOOR_A, "evt/door"), "x")
        .await;
    door_a.publish(&topic(SITE_B, ENV_B, "evt/door"), "x").await;
    let markers = [
        topic(SITE_B, ENV_B, "tele/env"),
        topic(SITE_A, DOOR_A, "evt/badge"),
    ];
    env_b.publish(&markers[0], r#"{"v":1}"#).await;
    door_a.publish(&markers[1], r#"{"v":1}"#).await;

    let got = service.collect_until(&markers).await;
    assert_eq!(topics(&got), markers.iter().cloned().collect(), "{got:?}");
}

#[tokio::test]
async fn a_command_reaches_only_its_device() {
    let f = Fixture::start();
    let mut service = f.connect(SERVICE_USER).await;
    let mut door_a = f.connect(DOOR_A).await;
    let mut env_a = f.connect(ENV_A).await;
    let mut env_b = f.connect(ENV_B).await;
    // The right device listens to its own commands; the others try to listen to the door's, and
    // the widest filters they could ask for.
    door_a.subscribe(&topic(SITE_A, DOOR_A, "cmd/+")).await;
    env_a.subscribe(&topic(SITE_A, DOOR_A, "cmd/+")).await;
    env_a.subscribe("spazi/v1/#").await;
    env_b.subscribe(&topic(SITE_A, DOOR_A, "cmd/+")).await;
    env_b.subscribe("#").await;

    let unlock = topic(SITE_A, DOOR_A, "cmd/unlock");
    service
        .publish(
            &unlock,
            r#"{"v":1,"ts":1,"nonce":"n1","exp":2,"m":{"badge_seq":7,"duration_s":5}}"#,
        )
        .await;

    let got = door_a.collect_until(std::slice::from_ref(&unlock)).await;
    assert_eq!(topics(&got), [unlock.clone()].into(), "{got:?}");
    assert!(got[0].1.contains(r#""nonce":"n1""#));
    let late = env_a.quiet_for(Duration::ZERO).await;
    assert!(late.is_empty(), "env_a received {late:?}");
    let late = env_b.quiet_for(Duration::ZERO).await;
    assert!(late.is_empty(), "env_b received {late:?}");

    // The device answers on its result topic, which the service reads.
    let mut results = f.connect(SERVICE_USER).await;
    results.subscribe(&topic(SITE_A, "+", "cmd/+/res")).await;
    let res = topic(SITE_A, DOOR_A, "cmd/unlock/res");
    door_a
        .publish(&res, r#"{"v":1,"ts":3,"nonce":"n1","ok":true}"#)
        .await;
    let got = results.collect_until(std::slice::from_ref(&res)).await;
    assert_eq!(topics(&got), [res].into());
}

#[tokio::test]
async fn a_wrong_password_is_refused_at_connect() {
    let f = Fixture::start();
    for (user, password) in [
        (ENV_A, "not-the-password".to_string()),
        (ENV_A, f.password(DOOR_A).to_string()),
        (SERVICE_USER, String::new()),
        ("nobody", f.password(ENV_A).to_string()),
    ] {
        match Client::connect(f.broker.port, user, &password, None).await {
            Err(ConnectionError::ConnectionRefused(
                ConnectReturnCode::NotAuthorized | ConnectReturnCode::BadUserNamePassword,
            )) => {}
            Err(e) => panic!("{user}: expected a refused CONNECT, got {e}"),
            Ok(_) => panic!("{user} connected with a wrong password"),
        }
    }
    // The right one still works.
    f.connect(ENV_A).await;
}

#[tokio::test]
async fn a_gateway_speaks_for_its_own_site_only_and_never_commands() {
    let f = Fixture::start();
    let mut service = f.service().await;
    let mut gateway = f.connect(GATEWAY_A).await;
    let mut door_a = f.connect(DOOR_A).await;
    door_a.subscribe(&topic(SITE_A, DOOR_A, "cmd/+")).await;

    let allowed = [
        topic(SITE_A, ENV_A, "tele/env"),
        topic(SITE_A, DOOR_A, "evt/door"),
        topic(SITE_A, DOOR_A, "status"),
        topic(SITE_A, ENV_A, "meta"),
        topic(SITE_A, DOOR_A, "cmd/unlock/res"),
        topic(SITE_A, GATEWAY_A, "status"),
    ];
    let forbidden = [
        topic(SITE_B, ENV_B, "tele/env"),
        topic(SITE_B, GATEWAY_A, "status"),
        topic(SITE_A, DOOR_A, "cmd/unlock"),
        topic(SITE_A, GATEWAY_A, "cmd/setpoint"),
        topic(SITE_B, ENV_B, "cmd/setpoint"),
        "spazi/v1/_server/status".into(),
    ];
    for t in &forbidden {
        gateway.publish(t, "forbidden").await;
    }
    for t in &allowed {
        gateway.publish(t, "allowed").await;
    }

    let got = service.collect_until(&allowed).await;
    assert_eq!(topics(&got), allowed.iter().cloned().collect(), "{got:?}");
    assert!(got.iter().all(|(_, p)| p == "allowed"), "{got:?}");
    // No forged command reached the door.
    let late = door_a.quiet_for(Duration::ZERO).await;
    assert!(late.is_empty(), "door_a received {late:?}");

    // The gateway relays its site's commands, not another site's.
    let mut relay = f.connect(GATEWAY_A).await;
    relay.subscribe("spazi/v1/+/+/cmd/+").await;
    let mine = topic(SITE_A, ENV_A, "cmd/setpoint");
    let theirs = topic(SITE_B, ENV_B, "cmd/setpoint");
    service.publish(&theirs, "theirs").await;
    service.publish(&mine, "mine").await;
    let got = relay.collect_until(std::slice::from_ref(&mine)).await;
    assert_eq!(topics(&got), [mine].into(), "{got:?}");
}

#[tokio::test]
async fn a_devices_last_will_reaches_the_service() {
    let f = Fixture::start();
    let mut service = f.service().await;
    let status = topic(SITE_A, ENV_A, "status");
    let will = LastWill::new(
        status.clone(),
        r#"{"v":1,"online":false}"#,
        QoS::AtLeastOnce,
        true,
    );
    let env_a = Client::connect(f.broker.port, ENV_A, f.password(ENV_A), Some(will))
        .await
        .unwrap();
    env_a.vanish();
    let got = service.collect_until(std::slice::from_ref(&status)).await;
    assert_eq!(got, [(status, r#"{"v":1,"online":false}"#.to_string())]);
}

#[tokio::test]
async fn a_changed_password_applies_on_reload_and_drops_the_old_connection() {
    let mut f = Fixture::start();
    let mut env_a = f.connect(ENV_A).await;
    let old = f.password(ENV_A).to_string();
    let new = generate_password();
    upsert_password(&f.broker.passwd_path(), ENV_A, &new).unwrap();
    f.broker.reload();

    // The broker disconnects the session that logged in with the old password.
    let closed = tokio::time::timeout(PATIENCE, async {
        while env_a.publishes.recv().await.is_some() {}
    })
    .await;
    assert!(closed.is_ok(), "the old connection survived the reload");
    match Client::connect(f.broker.port, ENV_A, &old, None).await {
        Err(ConnectionError::ConnectionRefused(_)) => {}
        Err(e) => panic!("expected a refused CONNECT, got {e}"),
        Ok(_) => panic!("the old password still works"),
    }
    let mut again = Client::connect(f.broker.port, ENV_A, &new, None)
        .await
        .expect("the new password works");
    let mut service = f.service().await;
    let t = topic(SITE_A, ENV_A, "tele/env");
    again.publish(&t, "after").await;
    assert_eq!(
        topics(&service.collect_until(std::slice::from_ref(&t)).await),
        [t].into()
    );
}
