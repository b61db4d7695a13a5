//! The device contract (`mqtt-config/CONTRACT.md`, v1) as types: topics, payloads, metrics,
//! and the reasons a message is refused. Pure: bytes in, values or a reason out.

use std::fmt;

use serde_json::{Map, Value};

use super::kinds::DeviceClass;

/// The topic prefix of contract v1.
pub const PREFIX: &str = "spazi/v1/";
/// Largest payload accepted, in bytes.
pub const MAX_PAYLOAD: usize = 4096;
/// How far ahead of the service's clock a device's timestamp may be.
pub const MAX_FUTURE_MS: i64 = 5 * 60 * 1000;
/// How old a reading may be and still be accepted (a gateway replaying a long outage).
pub const MAX_AGE_MS: i64 = 7 * 24 * 3600 * 1000;

/// A measured quantity. The code is what the readings tables store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(i16)]
pub enum Metric {
    TC = 1,
    RhPct = 2,
    Co2Ppm = 3,
    Lux = 4,
    PW = 5,
    EImpWh = 6,
    EExpWh = 7,
    MeterEpoch = 8,
    Occupied = 9,
    Count = 10,
    ChargerState = 11,
    ESessionWh = 12,
    LimitA = 13,
    DoorOpen = 14,
}

impl Metric {
    pub const ALL: [Metric; 14] = [
        Metric::TC,
        Metric::RhPct,
        Metric::Co2Ppm,
        Metric::Lux,
        Metric::PW,
        Metric::EImpWh,
        Metric::EExpWh,
        Metric::MeterEpoch,
        Metric::Occupied,
        Metric::Count,
        Metric::ChargerState,
        Metric::ESessionWh,
        Metric::LimitA,
        Metric::DoorOpen,
    ];

    pub fn code(self) -> i16 {
        self as i16
    }

    pub fn from_code(code: i16) -> Option<Metric> {
        Metric::ALL.iter().copied().find(|m| m.code() == code)
    }

    pub fn name(self) -> &'static str {
        match self {
            Metric::TC => "t_c",
            Metric::RhPct => "rh_pct",
            Metric::Co2Ppm => "co2_ppm",
            Metric::Lux => "lux",
            Metric::PW => "p_w",
            Metric::EImpWh => "e_imp_wh",
            Metric::EExpWh => "e_exp_wh",
            Metric::MeterEpoch => "meter_epoch",
            Metric::Occupied => "occupied",
            Metric::Count => "count",
            Metric::ChargerState => "charger_state",
            Metric::ESessionWh => "e_session_wh",
            Metric::LimitA => "limit_a",
            Metric::DoorOpen => "door_open",
        }
    }

    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.iter().copied().find(|m| m.name() == name)
    }

    /// The unit a value of this metric is in.
    pub fn unit(self) -> &'static str {
        match self {
            Metric::TC => "°C",
            Metric::RhPct => "%",
            Metric::Co2Ppm => "ppm",
            Metric::Lux => "lx",
            Metric::PW => "W",
            Metric::EImpWh | Metric::EExpWh | Metric::ESessionWh => "Wh",
            Metric::LimitA => "A",
            _ => "",
        }
    }

    /// A cumulative counter: roll-ups carry its delta, and it must never go backwards
    /// within one `meter_epoch`.
    pub fn is_counter(self) -> bool {
        matches!(self, Metric::EImpWh | Metric::EExpWh)
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Charger states, stored as the `charger_state` metric.
pub const CHARGER_STATES: [&str; 4] = ["available", "connected", "charging", "fault"];
/// The `charger_state` value of a charger in fault.
pub const CHARGER_FAULT: f64 = 3.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TeleKind {
    Env,
    Power,
    Energy,
    Presence,
    Charger,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvtKind {
    Badge,
    Door,
    Fault,
}

impl EvtKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EvtKind::Badge => "badge",
            EvtKind::Door => "door",
            EvtKind::Fault => "fault",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind<'a> {
    Status,
    Meta,
    Tele(TeleKind),
    Evt(EvtKind),
    /// A device's reply to a command.
    CmdResult(&'a str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topic<'a> {
    pub site: &'a str,
    pub device: &'a str,
    pub kind: TopicKind<'a>,
}

/// Site and device ids in topics: lower-case letters, digits, `-` and `_`, 1 to 128 characters.
pub fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Parses a device topic; `None` for anything outside the contract (including the service's own
/// `cmd/` topics and `_server/status`).
pub fn parse_topic(topic: &str) -> Option<Topic<'_>> {
    let rest = topic.strip_prefix(PREFIX)?;
    let mut parts = rest.split('/');
    let site = parts.next()?;
    let device = parts.next()?;
    if !valid_id(site) || !valid_id(device) {
        return None;
    }
    let kind = match (parts.next()?, parts.next(), parts.next(), parts.next()) {
        ("status", None, _, _) => TopicKind::Status,
        ("meta", None, _, _) => TopicKind::Meta,
        ("tele", Some(k), None, _) => TopicKind::Tele(match k {
            "env" => TeleKind::Env,
            "power" => TeleKind::Power,
            "energy" => TeleKind::Energy,
            "presence" => TeleKind::Presence,
            "charger" => TeleKind::Charger,
            _ => return None,
        }),
        ("evt", Some(k), None, _) => TopicKind::Evt(match k {
            "badge" => EvtKind::Badge,
            "door" => EvtKind::Door,
            "fault" => EvtKind::Fault,
            _ => return None,
        }),
        ("cmd", Some(name), Some("res"), None) if valid_id(name) => TopicKind::CmdResult(name),
        _ => return None,
    };
    Some(Topic { site, device, kind })
}

/// Why a message was refused; the label is what `/metrics` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    NotJson,
    NonFinite,
    Schema,
    Oversized,
    UnknownTopic,
    UnknownDevice,
    SiteMismatch,
    FutureTimestamp,
    StaleTimestamp,
}

impl Reject {
    pub const ALL: [Reject; 9] = [
        Reject::NotJson,
        Reject::NonFinite,
        Reject::Schema,
        Reject::Oversized,
        Reject::UnknownTopic,
        Reject::UnknownDevice,
        Reject::SiteMismatch,
        Reject::FutureTimestamp,
        Reject::StaleTimestamp,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Reject::NotJson => "not_json",
            Reject::NonFinite => "non_finite",
            Reject::Schema => "schema",
            Reject::Oversized => "oversized",
            Reject::UnknownTopic => "unknown_topic",
            Reject::UnknownDevice => "unknown_device",
            Reject::SiteMismatch => "site_mismatch",
            Reject::FutureTimestamp => "future_timestamp",
            Reject::StaleTimestamp => "stale_timestamp",
        }
    }

    pub fn index(self) -> usize {
        Reject::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// A refusal with a short human detail for the (rate-limited) log.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub reason: Reject,
    pub detail: String,
}

impl Refusal {
    fn new(reason: Reject, detail: impl Into<String>) -> Self {
        Refusal {
            reason,
            detail: detail.into(),
        }
    }
}

fn schema(detail: impl Into<String>) -> Refusal {
    Refusal::new(Reject::Schema, detail)
}

/// What a device declares about itself in its retained `meta`.
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    pub class: DeviceClass,
    pub model: Option<String>,
    pub firmware: Option<String>,
    pub zone: Option<String>,
    pub resource: Option<String>,
    pub gateway: Option<String>,
    pub report_interval_s: Option<i32>,
}

/// A message that passed the contract.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Readings {
        ts: i64,
        seq: i64,
        values: Vec<(Metric, f64)>,
    },
    Event {
        ts: i64,
        seq: i64,
        kind: EvtKind,
        /// The event's `m` object, as JSON text.
        body: String,
        /// Numeric readings the event also carries (a door's `door_open`).
        values: Vec<(Metric, f64)>,
        /// A fault event's `active` flag.
        active: Option<bool>,
    },
    Status {
        online: bool,
        ts: Option<i64>,
    },
    Meta(Meta),
    CmdResult {
        ts: i64,
    },
}

fn parse_json(payload: &[u8]) -> Result<Map<String, Value>, Refusal> {
    if payload.len() > MAX_PAYLOAD {
        return Err(Refusal::new(
            Reject::Oversized,
            format!("{} bytes, more than {MAX_PAYLOAD}", payload.len()),
        ));
    }
    match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(schema("the payload is not a JSON object")),
        Err(e) => {
            let text = String::from_utf8_lossy(payload);
            let non_finite = ["NaN", "Infinity", "inf"].iter().any(|w| text.contains(w))
                || e.to_string().contains("out of range");
            if non_finite {
                Err(Refusal::new(Reject::NonFinite, "a number is not finite"))
            } else {
                Err(Refusal::new(Reject::NotJson, e.to_string()))
            }
        }
    }
}

fn version(map: &Map<String, Value>) -> Result<(), Refusal> {
    match map.get("v") {
        Some(v) if v.as_u64() == Some(1) => Ok(()),
        Some(_) => Err(schema("v: only version 1 is understood")),
        None => Err(schema("v: required")),
    }
}

fn check_ts(ts: i64, now_ms: i64) -> Result<i64, Refusal> {
    if ts > now_ms + MAX_FUTURE_MS {
        return Err(Refusal::new(
            Reject::FutureTimestamp,
            format!("ts {ts} is {} s ahead", (ts - now_ms) / 1000),
        ));
    }
    if ts < now_ms - MAX_AGE_MS {
        return Err(Refusal::new(
            Reject::StaleTimestamp,
            format!("ts {ts} is older than the accepted age"),
        ));
    }
    Ok(ts)
}

fn int_field(map: &Map<String, Value>, key: &str) -> Result<i64, Refusal> {
    match map.get(key) {
        Some(v) => v
            .as_i64()
            .filter(|n| *n >= 0)
            .ok_or_else(|| schema(format!("{key}: must be a non-negative integer"))),
        None => Err(schema(format!("{key}: required"))),
    }
}

fn envelope(
    map: &Map<String, Value>,
    now_ms: i64,
) -> Result<(i64, i64, &Map<String, Value>), Refusal> {
    version(map)?;
    for key in map.keys() {
        if !matches!(key.as_str(), "v" | "ts" | "seq" | "m") {
            return Err(schema(format!("{key}: unknown field")));
        }
    }
    let ts = int_field(map, "ts")?;
    let seq = int_field(map, "seq")?;
    let m = match map.get("m") {
        Some(Value::Object(m)) => m,
        Some(_) => return Err(schema("m: must be an object")),
        None => return Err(schema("m: required")),
    };
    Ok((check_ts(ts, now_ms)?, seq, m))
}

/// Reads `m`, allowing only `allowed` keys and requiring `required` ones.
struct Fields<'a> {
    m: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    fn new(m: &'a Map<String, Value>, allowed: &[&str]) -> Result<Self, Refusal> {
        for key in m.keys() {
            if !allowed.contains(&key.as_str()) {
                return Err(schema(format!("m.{key}: unknown field")));
            }
        }
        Ok(Fields { m })
    }

    fn number(&self, key: &str, min: f64, max: f64) -> Result<Option<f64>, Refusal> {
        match self.m.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => {
                let v = n.as_f64().filter(|v| v.is_finite()).ok_or_else(|| {
                    Refusal::new(Reject::NonFinite, format!("m.{key}: not finite"))
                })?;
                if v < min || v > max {
                    return Err(schema(format!("m.{key}: {v} is outside [{min}, {max}]")));
                }
                Ok(Some(v))
            }
            Some(_) => Err(schema(format!("m.{key}: must be a number"))),
        }
    }

    fn required_number(&self, key: &str, min: f64, max: f64) -> Result<f64, Refusal> {
        self.number(key, min, max)?
            .ok_or_else(|| schema(format!("m.{key}: required")))
    }

    fn integer(&self, key: &str) -> Result<Option<i64>, Refusal> {
        match self.m.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .filter(|n| *n >= 0)
                .map(Some)
                .ok_or_else(|| schema(format!("m.{key}: must be a non-negative integer"))),
        }
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>, Refusal> {
        match self.m.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(schema(format!("m.{key}: must be true or false"))),
        }
    }

    fn required_bool(&self, key: &str) -> Result<bool, Refusal> {
        self.boolean(key)?
            .ok_or_else(|| schema(format!("m.{key}: required")))
    }

    fn string(&self, key: &str, max: usize) -> Result<Option<&'a str>, Refusal> {
        match self.m.get(key) {
            None => Ok(None),
            Some(Value::String(s)) if !s.is_empty() && s.len() <= max => Ok(Some(s)),
            Some(_) => Err(schema(format!(
                "m.{key}: must be a string of 1 to {max} bytes"
            ))),
        }
    }
}

const BIG: f64 = 1e15;

/// An event's numeric readings and, for a fault, its `active` flag.
type EventValues = (Vec<(Metric, f64)>, Option<bool>);

fn tele_values(kind: TeleKind, m: &Map<String, Value>) -> Result<Vec<(Metric, f64)>, Refusal> {
    let mut out = Vec::with_capacity(4);
    let mut push = |metric: Metric, v: Option<f64>| {
        if let Some(v) = v {
            out.push((metric, v));
        }
    };
    match kind {
        TeleKind::Env => {
            let f = Fields::new(m, &["t_c", "rh_pct", "co2_ppm", "lux"])?;
            push(Metric::TC, f.number("t_c", -60.0, 100.0)?);
            push(Metric::RhPct, f.number("rh_pct", 0.0, 100.0)?);
            push(Metric::Co2Ppm, f.number("co2_ppm", 0.0, 100_000.0)?);
            push(Metric::Lux, f.number("lux", 0.0, 500_000.0)?);
        }
        TeleKind::Power => {
            let f = Fields::new(m, &["p_w"])?;
            push(Metric::PW, Some(f.required_number("p_w", -BIG, BIG)?));
        }
        TeleKind::Energy => {
            let f = Fields::new(m, &["e_imp_wh", "e_exp_wh", "meter_epoch"])?;
            push(
                Metric::EImpWh,
                Some(f.required_number("e_imp_wh", 0.0, BIG)?),
            );
            push(Metric::EExpWh, f.number("e_exp_wh", 0.0, BIG)?);
            let epoch = f
                .integer("meter_epoch")?
                .ok_or_else(|| schema("m.meter_epoch: required"))?;
            push(Metric::MeterEpoch, Some(epoch as f64));
        }
        TeleKind::Presence => {
            let f = Fields::new(m, &["occupied", "count"])?;
            let occupied = f.required_bool("occupied")?;
            push(Metric::Occupied, Some(if occupied { 1.0 } else { 0.0 }));
            push(Metric::Count, f.integer("count")?.map(|c| c as f64));
        }
        TeleKind::Charger => {
            let f = Fields::new(
                m,
                &["state", "p_w", "session_id", "e_session_wh", "limit_a"],
            )?;
            let state = f
                .string("state", 16)?
                .ok_or_else(|| schema("m.state: required"))?;
            let code = CHARGER_STATES
                .iter()
                .position(|s| *s == state)
                .ok_or_else(|| {
                    schema(format!(
                        "m.state: must be one of {}",
                        CHARGER_STATES.join(", ")
                    ))
                })?;
            push(Metric::ChargerState, Some(code as f64));
            push(Metric::PW, Some(f.required_number("p_w", 0.0, BIG)?));
            f.string("session_id", 64)?;
            push(Metric::ESessionWh, f.number("e_session_wh", 0.0, BIG)?);
            push(Metric::LimitA, f.number("limit_a", 0.0, 1000.0)?);
        }
    }
    if out.is_empty() {
        return Err(schema("m: no measurement"));
    }
    Ok(out)
}

fn event(kind: EvtKind, m: &Map<String, Value>) -> Result<EventValues, Refusal> {
    match kind {
        EvtKind::Badge => {
            let f = Fields::new(m, &["credential"])?;
            f.string("credential", 128)?
                .ok_or_else(|| schema("m.credential: required"))?;
            Ok((Vec::new(), None))
        }
        EvtKind::Door => {
            let f = Fields::new(m, &["open"])?;
            let open = f.required_bool("open")?;
            Ok((vec![(Metric::DoorOpen, if open { 1.0 } else { 0.0 })], None))
        }
        EvtKind::Fault => {
            let f = Fields::new(m, &["code", "active", "message"])?;
            f.string("code", 64)?
                .ok_or_else(|| schema("m.code: required"))?;
            f.string("message", 256)?;
            Ok((Vec::new(), Some(f.required_bool("active")?)))
        }
    }
}

fn meta(map: &Map<String, Value>) -> Result<Meta, Refusal> {
    version(map)?;
    let f = Fields::new(
        map,
        &[
            "v",
            "ts",
            "class",
            "model",
            "firmware",
            "zone",
            "resource",
            "gateway",
            "units",
            "report_interval_s",
        ],
    )?;
    let class = f
        .string("class", 32)?
        .ok_or_else(|| schema("class: required"))?
        .parse::<DeviceClass>()
        .map_err(|e| schema(format!("class: {e}")))?;
    let id = |key: &str| -> Result<Option<String>, Refusal> {
        match f.string(key, 128)? {
            Some(s) if valid_id(s) => Ok(Some(s.to_owned())),
            Some(_) => Err(schema(format!("{key}: not a valid id"))),
            None => Ok(None),
        }
    };
    let report_interval_s = match f.integer("report_interval_s")? {
        Some(n) if (1..=86_400).contains(&n) => Some(n as i32),
        Some(_) => return Err(schema("report_interval_s: must be between 1 and 86400")),
        None => None,
    };
    if let Some(units) = map.get("units") {
        if !units.is_object() {
            return Err(schema("units: must be an object"));
        }
    }
    Ok(Meta {
        class,
        model: f.string("model", 64)?.map(str::to_owned),
        firmware: f.string("firmware", 64)?.map(str::to_owned),
        zone: id("zone")?,
        resource: id("resource")?,
        gateway: id("gateway")?,
        report_interval_s,
    })
}

/// A badge scan as the door decision reads it. Unlike [`decode`], a scan that breaks the contract
/// is still answered (denied as `malformed`) as long as it carries a `seq` to answer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadgeScan {
    pub seq: Option<i64>,
    pub ts: Option<i64>,
    pub credential: Result<String, super::DenyReason>,
}

pub fn read_badge(payload: &[u8]) -> BadgeScan {
    let value: Option<Value> = if payload.len() > MAX_PAYLOAD {
        None
    } else {
        serde_json::from_slice(payload).ok()
    };
    let map = value.as_ref().and_then(Value::as_object);
    let int = |k: &str| {
        map.and_then(|m| m.get(k))
            .and_then(Value::as_i64)
            .filter(|n| *n >= 0)
    };
    let (seq, ts) = (int("seq"), int("ts"));
    let credential = map
        .filter(|m| m.get("v").and_then(Value::as_i64) == Some(1) && ts.is_some() && seq.is_some())
        .and_then(|m| m.get("m"))
        .and_then(Value::as_object)
        .filter(|m| m.len() == 1)
        .and_then(|m| m.get("credential"))
        .and_then(Value::as_str)
        .ok_or(super::DenyReason::Malformed)
        .and_then(|c| super::access_control::check_credential(c).map(str::to_owned));
    BadgeScan {
        seq,
        ts,
        credential,
    }
}

/// What is kept of an event's `m`: a badge's credential only as its SHA-256, so stored events
/// never hold a working QR token or PIN.
fn stored_body(kind: EvtKind, m: &Map<String, Value>) -> String {
    let mut kept = m.clone();
    if kind == EvtKind::Badge {
        if let Some(Value::String(credential)) = kept.remove("credential") {
            kept.insert(
                "credential_sha256".into(),
                Value::String(super::access_control::credential_hash(&credential)),
            );
        }
    }
    Value::Object(kept).to_string()
}

/// Checks a payload against the contract for its topic kind.
pub fn decode(kind: TopicKind<'_>, payload: &[u8], now_ms: i64) -> Result<Decoded, Refusal> {
    let map = parse_json(payload)?;
    match kind {
        TopicKind::Tele(k) => {
            let (ts, seq, m) = envelope(&map, now_ms)?;
            Ok(Decoded::Readings {
                ts,
                seq,
                values: tele_values(k, m)?,
            })
        }
        TopicKind::Evt(k) => {
            let (ts, seq, m) = envelope(&map, now_ms)?;
            let (values, active) = event(k, m)?;
            Ok(Decoded::Event {
                ts,
                seq,
                kind: k,
                body: stored_body(k, m),
                values,
                active,
            })
        }
        TopicKind::Status => {
            let f = Fields::new(&map, &["v", "online", "ts"])?;
            if map.contains_key("v") {
                version(&map)?;
            }
            let online = f.required_bool("online")?;
            let ts = f.integer("ts")?;
            Ok(Decoded::Status { online, ts })
        }
        TopicKind::Meta => Ok(Decoded::Meta(meta(&map)?)),
        TopicKind::CmdResult(_) => {
            version(&map)?;
            let ts = int_field(&map, "ts")?;
            Ok(Decoded::CmdResult {
                ts: check_ts(ts, now_ms)?,
            })
        }
    }
}

#[cfg(test)]
mod tests;
