//! Commands from the service to a device (`mqtt-config/CONTRACT.md` §6): the one envelope
//! `{v, ts, nonce, exp, m}` on `spazi/v1/{site}/{device}/cmd/{name}`. A [`Command`] can only be
//! made with a fresh nonce and an expiry after its issue, so no command leaves without either;
//! [`Received`] is the same envelope as a device reads it.

use serde::Serialize;
use serde_json::{Map, Value};

use super::telemetry::{valid_id, PREFIX};

/// The topic of command `name` for `device` at `site`.
pub fn topic(site: &str, device: &str, name: &str) -> String {
    format!("{PREFIX}{site}/{device}/cmd/{name}")
}

/// The site, device and name of a command topic; `None` for any other topic (a reply on
/// `cmd/{name}/res` included).
pub fn parse_topic(topic: &str) -> Option<(&str, &str, &str)> {
    let (site, rest) = topic.strip_prefix(PREFIX)?.split_once('/')?;
    let (device, name) = rest.split_once("/cmd/")?;
    (valid_id(site) && valid_id(device) && valid_id(name)).then_some((site, device, name))
}

/// A command ready to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub topic: String,
    /// Unique per command; the device's reply carries it back.
    pub nonce: String,
    /// When it was issued, epoch ms.
    pub ts: i64,
    /// The device must not carry it out at or after this instant, epoch ms.
    pub exp: i64,
    /// The command's own fields.
    pub m: Value,
}

#[derive(Serialize)]
struct Envelope<'a> {
    v: u8,
    ts: i64,
    nonce: &'a str,
    exp: i64,
    m: &'a Value,
}

impl Command {
    /// Command `name` for `device` at `site`, issued at `now_ms` and valid for `ttl_ms` (at
    /// least 1 ms), with a fresh nonce (a UUIDv7, so nonces also sort by issue).
    pub fn new(site: &str, device: &str, name: &str, now_ms: i64, ttl_ms: i64, m: Value) -> Self {
        Command {
            topic: topic(site, device, name),
            nonce: uuid::Uuid::now_v7().simple().to_string(),
            ts: now_ms,
            exp: now_ms.saturating_add(ttl_ms.max(1)),
            m,
        }
    }

    /// The payload: `{"v":1,"ts":…,"nonce":…,"exp":…,"m":{…}}`, in the contract's order.
    pub fn payload(&self) -> String {
        let envelope = Envelope {
            v: 1,
            ts: self.ts,
            nonce: &self.nonce,
            exp: self.exp,
            m: &self.m,
        };
        serde_json::to_string(&envelope).expect("a JSON value always serialises")
    }
}

/// Why a device cannot take a command's envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreadable {
    /// No nonce of 1–64 bytes: there is nothing to answer to.
    NoNonce,
    /// A nonce, but not a v1 envelope with an `exp` and an object `m`: answered `bad_request`.
    Bad { nonce: String },
}

/// A command's envelope as a device reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Received<'a> {
    pub nonce: &'a str,
    pub exp: i64,
    pub m: &'a Map<String, Value>,
}

impl<'a> Received<'a> {
    /// Reads the envelope of a command's JSON body.
    pub fn read(body: &'a Value) -> Result<Received<'a>, Unreadable> {
        let nonce = body
            .get("nonce")
            .and_then(Value::as_str)
            .filter(|n| (1..=64).contains(&n.len()))
            .ok_or(Unreadable::NoNonce)?;
        let bad = || Unreadable::Bad {
            nonce: nonce.to_owned(),
        };
        if body.get("v").and_then(Value::as_i64) != Some(1) {
            return Err(bad());
        }
        let exp = body.get("exp").and_then(Value::as_i64).ok_or_else(bad)?;
        let m = body.get("m").and_then(Value::as_object).ok_or_else(bad)?;
        Ok(Received { nonce, exp, m })
    }

    /// Whether it may still be carried out at `now_ms`.
    pub fn in_time(&self, now_ms: i64) -> bool {
        now_ms < self.exp
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_command_carries_a_fresh_nonce_and_its_expiry() {
        let m = json!({"limit_a": 16});
        let a = Command::new(
            "roma",
            "roma-evc-01",
            "charge_limit",
            1_000,
            60_000,
            m.clone(),
        );
        let b = Command::new("roma", "roma-evc-01", "charge_limit", 1_000, 60_000, m);
        assert_eq!(a.topic, "spazi/v1/roma/roma-evc-01/cmd/charge_limit");
        assert_eq!(
            parse_topic(&a.topic),
            Some(("roma", "roma-evc-01", "charge_limit"))
        );
        assert_eq!(parse_topic(&format!("{}/res", a.topic)), None);
        assert_eq!(parse_topic("spazi/v1/roma/roma-evc-01/tele/charger"), None);
        assert_eq!(parse_topic("spazi/v1/Roma/roma-evc-01/cmd/x"), None);
        assert_ne!(a.nonce, b.nonce);
        assert!((1..=64).contains(&a.nonce.len()));
        assert_eq!((a.ts, a.exp), (1_000, 61_000));
        // Never issued already expired, whatever the caller asks.
        let c = Command::new("roma", "roma-door-main", "unlock", 5, -10, json!({}));
        assert_eq!(c.exp, 6);
    }

    #[test]
    fn the_payload_is_the_contract_envelope_in_order() {
        let c = Command::new(
            "roma",
            "roma-door-main",
            "deny",
            7,
            5_000,
            json!({"badge_seq": 3}),
        );
        let expected = format!(
            r#"{{"v":1,"ts":7,"nonce":"{}","exp":5007,"m":{{"badge_seq":3}}}}"#,
            c.nonce
        );
        assert_eq!(c.payload(), expected);
    }

    #[test]
    fn a_device_reads_what_the_service_sends() {
        let c = Command::new(
            "roma",
            "roma-door-main",
            "unlock",
            100,
            5_000,
            json!({"x": 1}),
        );
        let body: Value = serde_json::from_str(&c.payload()).unwrap();
        let r = Received::read(&body).unwrap();
        assert_eq!(r.nonce, c.nonce);
        assert_eq!(r.exp, 5_100);
        assert_eq!(r.m.get("x"), Some(&json!(1)));
        assert!(r.in_time(5_099));
        assert!(!r.in_time(5_100));
    }

    #[test]
    fn a_broken_envelope_is_answered_only_when_it_has_a_nonce() {
        let read = |v: Value| Received::read(&v).map(|r| r.nonce.to_owned());
        assert_eq!(
            read(json!({"v": 1, "exp": 5, "m": {}})),
            Err(Unreadable::NoNonce)
        );
        assert_eq!(read(json!({"nonce": ""})), Err(Unreadable::NoNonce));
        assert_eq!(
            read(json!({"nonce": "n".repeat(65)})),
            Err(Unreadable::NoNonce)
        );
        let bad = || {
            Err(Unreadable::Bad {
                nonce: "n-1".into(),
            })
        };
        assert_eq!(
            read(json!({"v": 2, "nonce": "n-1", "exp": 5, "m": {}})),
            bad()
        );
        assert_eq!(read(json!({"v": 1, "nonce": "n-1", "m": {}})), bad());
        assert_eq!(
            read(json!({"v": 1, "nonce": "n-1", "exp": 5, "m": []})),
            bad()
        );
        assert_eq!(
            read(json!({"v": 1, "nonce": "n-1", "exp": 5, "m": {}})),
            Ok("n-1".into())
        );
    }
}
