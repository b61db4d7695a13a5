//! One simulated site (or Polis building): its devices, its schedule of what is due, and the
//! plumbing every device family shares (the message envelopes, `meta` and `status`, the commands
//! heard and the deliberate faults). No I/O: [`SiteSim::step`] takes the wall-clock time and
//! returns the messages due, so the whole behaviour can be driven through a day in a test.
//!
//! What each family does lives beside it: [`super::meters`] (PV and grid), [`super::chargers`],
//! [`super::environment`] (zones' air and their sensors), [`super::presence`] (people and the
//! presence sensors), [`super::doors`] (door readers and the gateway's grant list).

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Map, Value};

use super::chargers::{charge_limit, Charger};
use super::doors::{check_deny, unlock};
use super::environment::{check_setpoint, ZoneState};
use super::meters::ENERGY_INTERVAL_S;
use super::model::{self, at_ms, rng_for, Calendar, ChargerMeter, EnergyCounter, LoadProfile};
use super::presence::{Bookings, Presence};
use super::schedule::{exponential_ms, first_due, next_after, period_ms, Schedule};
use crate::domain::access_control::{CommandRefusal, DoorLock, GrantList};
use crate::domain::command::{self, Received, Unreadable};
use crate::domain::devices::DeviceSpec;
use crate::domain::network::SiteSpec;
use crate::domain::opening_hours::WeeklyHours;
use crate::domain::solar::PvPlant;
use crate::domain::{DeviceClass, ResourceKind};

/// The topic root of contract v1.
pub const ROOT: &str = "spazi/v1";
/// How often the people, the air and the presence sensors are brought up to date, s (before
/// the rate is applied).
pub const PHYSICS_INTERVAL_S: f64 = 30.0;
/// How often each kind of trouble happens per site with faults on, s (before the rate).
pub const FAULT_MEAN_INTERVAL_S: f64 = 3_600.0;

/// What the simulator needs to know about a place.
#[derive(Debug, Clone)]
pub struct Place {
    pub id: String,
    pub latitude: f64,
    pub longitude: f64,
    pub calendar: Calendar,
    pub area_m2: f64,
    pub pv_kwp: f64,
    pub zones: Vec<ZoneInfo>,
    /// People in the place at its busiest hour, for environment sensors that sit in no zone.
    pub people_at_peak: f64,
}

#[derive(Debug, Clone)]
pub struct ZoneInfo {
    pub id: String,
    pub area_m2: f64,
    pub resources: Vec<ResourceInfo>,
}

#[derive(Debug, Clone)]
pub struct ResourceInfo {
    pub id: String,
    pub kind: ResourceKind,
    pub capacity: u32,
}

/// Floor area a resource takes in its zone, m².
fn resource_area_m2(kind: ResourceKind, capacity: u32) -> f64 {
    let cap = f64::from(capacity.max(1));
    match kind {
        ResourceKind::Desk => 8.0,
        ResourceKind::MeetingRoom => 6.0 + 2.5 * cap,
        ResourceKind::Office => 6.0 * cap,
        ResourceKind::EventRoom => 20.0 + 1.5 * cap,
        ResourceKind::EvBay => 15.0,
    }
}

impl Place {
    /// A coworking site of the network.
    pub fn from_site(site: &SiteSpec) -> Place {
        let tz = site.timezone.parse().unwrap_or(chrono_tz::Europe::Rome);
        let zones: Vec<ZoneInfo> = site
            .zones
            .iter()
            .map(|z| {
                let resources: Vec<ResourceInfo> = z
                    .resources
                    .iter()
                    .map(|r| ResourceInfo {
                        id: r.id.clone(),
                        kind: r.kind,
                        capacity: r.capacity.max(1) as u32,
                    })
                    .collect();
                let area = resources
                    .iter()
                    .map(|r| resource_area_m2(r.kind, r.capacity))
                    .sum::<f64>()
                    .max(15.0);
                ZoneInfo {
                    id: z.id.clone(),
                    area_m2: area,
                    resources,
                }
            })
            .collect();
        let seats: u32 = zones
            .iter()
            .flat_map(|z| &z.resources)
            .filter(|r| r.kind != ResourceKind::EvBay)
            .map(|r| r.capacity)
            .sum();
        Place {
            id: site.id.clone(),
            latitude: site.latitude,
            longitude: site.longitude,
            calendar: Calendar {
                tz,
                hours: site.hours.clone(),
                closed: site.closures.iter().map(|(d, _)| *d).collect(),
            },
            area_m2: f64::from(site.area_m2.max(50)),
            pv_kwp: site.size.pv_kwp(),
            zones,
            people_at_peak: f64::from(seats) * 0.6,
        }
    }

    /// A Polis building (a post office): counter hours, 400 m², a 20 kWp roof, no bookable
    /// resources.
    pub fn polis(id: &str, latitude: f64, longitude: f64) -> Place {
        let hours = WeeklyHours::weekdays_and_saturday(
            (8 * 60 + 20, 19 * 60 + 5),
            Some((8 * 60 + 20, 12 * 60 + 35)),
        );
        Place {
            id: id.to_owned(),
            latitude,
            longitude,
            calendar: Calendar {
                tz: chrono_tz::Europe::Rome,
                hours,
                closed: Vec::new(),
            },
            area_m2: 400.0,
            pv_kwp: 20.0,
            zones: Vec::new(),
            people_at_peak: 25.0,
        }
    }
}

/// Settings shared by every site of a run.
#[derive(Debug, Clone, Copy)]
pub struct SimConfig {
    pub seed: u64,
    /// Multiplier on every interval: 2.0 = twice as often.
    pub rate: f64,
    /// Occasional charger faults, duplicates and malformed messages.
    pub faults: bool,
    /// When the simulator started, epoch ms: where every `seq` starts, and the `meter_epoch`
    /// (in seconds) of counters that start again from zero.
    pub boot_ms: i64,
}

/// One message to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    /// What it is, for the report: `meta`, `status`, `tele/env`, …, `evt/fault`, `duplicate`,
    /// `malformed`.
    pub kind: &'static str,
}

#[derive(Debug)]
pub(super) struct Device {
    pub(super) spec: DeviceSpec,
    /// `spazi/v1/{site}/{device}/`
    pub(super) base: String,
    pub(super) seq: i64,
    pub(super) state: DevState,
}

#[derive(Debug)]
pub(super) enum DevState {
    Gateway,
    Pv,
    Grid,
    Charger(Charger),
    Env {
        zone: usize,
        noise: u64,
    },
    /// Index into the presences.
    Presence(usize),
    Door {
        zone: Option<usize>,
        open: bool,
        /// Carries out `cmd/unlock`: never at or after `exp`, each nonce once.
        lock: DoorLock,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Task {
    Status(usize),
    Power(usize),
    Energy(usize),
    Charger(usize),
    Env(usize),
    Presence(usize),
    DoorNext(usize),
    DoorClose(usize),
    Physics,
    FaultRaise,
    FaultClear(usize),
    Duplicate,
    Malformed,
}

fn firmware(class: DeviceClass) -> &'static str {
    match class {
        DeviceClass::Gateway => "3.2.0",
        DeviceClass::PvMeter => "1.8.4",
        DeviceClass::GridMeter => "2.1.0",
        DeviceClass::EvCharger => "5.0.3",
        DeviceClass::EnvSensor => "2.4.1",
        DeviceClass::PresenceSensor => "1.3.7",
        DeviceClass::DoorReader => "4.0.2",
    }
}

fn units(class: DeviceClass) -> Value {
    match class {
        DeviceClass::PvMeter | DeviceClass::GridMeter => {
            json!({"p_w": "W", "e_imp_wh": "Wh", "e_exp_wh": "Wh"})
        }
        DeviceClass::EvCharger => {
            json!({"p_w": "W", "e_imp_wh": "Wh", "e_session_wh": "Wh", "limit_a": "A"})
        }
        DeviceClass::EnvSensor => {
            json!({"t_c": "°C", "rh_pct": "%", "co2_ppm": "ppm", "lux": "lx"})
        }
        _ => json!({}),
    }
}

/// A compact JSON object with its keys in the given order (the contract writes `v` first).
pub(super) fn ordered(pairs: &[(&str, Value)]) -> Vec<u8> {
    let mut s = String::with_capacity(128);
    s.push('{');
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&Value::from(*k).to_string());
        s.push(':');
        s.push_str(&v.to_string());
    }
    s.push('}');
    s.into_bytes()
}

/// To a tenth, and never `-0.0` (which JSON would carry as such).
pub(super) fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0 + 0.0
}

/// The reply's code for a command the device cannot read.
pub(super) const BAD_REQUEST: &str = "bad_request";

/// An integer field of a command's `m` within `lo..=hi`.
pub(super) fn int(m: &Map<String, Value>, k: &str, lo: i64, hi: i64) -> Result<i64, &'static str> {
    m.get(k)
        .and_then(Value::as_i64)
        .filter(|n| (lo..=hi).contains(n))
        .ok_or(BAD_REQUEST)
}

/// A number field of a command's `m` within `lo..=hi`.
pub(super) fn num(m: &Map<String, Value>, k: &str, lo: f64, hi: f64) -> Result<f64, &'static str> {
    m.get(k)
        .and_then(Value::as_f64)
        .filter(|x| (lo..=hi).contains(x))
        .ok_or(BAD_REQUEST)
}

/// A text field of a command's `m`, one of `allowed`.
pub(super) fn one_of<'a>(
    m: &'a Map<String, Value>,
    k: &str,
    allowed: &[&str],
) -> Result<&'a str, &'static str> {
    m.get(k)
        .and_then(Value::as_str)
        .filter(|s| allowed.contains(s))
        .ok_or(BAD_REQUEST)
}

/// The one simulated place.
pub struct SiteSim {
    pub(super) place: Place,
    pub(super) cfg: SimConfig,
    pub(super) rng: StdRng,
    pub(super) devices: Vec<Device>,
    pub(super) presences: Vec<Presence>,
    pub(super) zones: Vec<ZoneState>,
    pub(super) chargers: Vec<usize>,
    pub(super) gateway: Option<usize>,
    pub(super) schedule: Schedule<Task>,
    pub(super) plant: PvPlant,
    pub(super) load: LoadProfile,
    pub(super) weather_seed: u64,
    pub(super) noise_seed: u64,
    pub(super) pv: EnergyCounter,
    pub(super) grid: EnergyCounter,
    pub(super) energy_ms: i64,
    pub(super) pv_w: f64,
    pub(super) grid_w: f64,
    pub(super) physics_ms: Option<i64>,
    pub(super) bookings_seen: bool,
    pub(super) duplicate_next: bool,
    /// The latest grant list the service left retained on the gateway (`cmd/grants`).
    pub(super) grants: Option<GrantList>,
    /// Nonces of the commands other than unlocks already carried out, with their `exp` (after
    /// which a command is refused anyway, so its nonce can be forgotten).
    pub(super) executed: HashMap<String, i64>,
}

impl SiteSim {
    /// A place and its devices, with every periodic task spread over its first period from
    /// `now_ms`.
    pub fn new(place: Place, specs: Vec<DeviceSpec>, cfg: SimConfig, now_ms: i64) -> SiteSim {
        let mut rng = rng_for(cfg.seed, &place.id);
        let mut zones: Vec<ZoneState> = Vec::new();
        let mut zone_index: HashMap<String, usize> = HashMap::new();
        let mut resources: HashMap<String, (usize, ResourceInfo)> = HashMap::new();
        for z in &place.zones {
            zone_index.insert(z.id.clone(), zones.len());
            for r in &z.resources {
                resources.insert(r.id.clone(), (zones.len(), r.clone()));
            }
            zones.push(ZoneState::new(z.area_m2, None));
        }
        let mut open_zone = None;
        let mut devices = Vec::with_capacity(specs.len());
        let mut presences = Vec::new();
        let mut chargers = Vec::new();
        let mut gateway = None;
        for spec in specs {
            let index = devices.len();
            let zone = spec
                .zone_id
                .as_ref()
                .and_then(|z| zone_index.get(z).copied());
            let state = match spec.class {
                DeviceClass::Gateway => {
                    gateway = Some(index);
                    DevState::Gateway
                }
                DeviceClass::PvMeter => DevState::Pv,
                DeviceClass::GridMeter => DevState::Grid,
                DeviceClass::EvCharger => {
                    chargers.push(index);
                    DevState::Charger(Charger {
                        meter: ChargerMeter::new(0.0),
                        fault: None,
                        limit_a: 16,
                        zeroed: false,
                    })
                }
                DeviceClass::EnvSensor => {
                    let zone = zone.unwrap_or_else(|| {
                        *open_zone.get_or_insert_with(|| {
                            zones.push(ZoneState::new(place.area_m2, Some(place.people_at_peak)));
                            zones.len() - 1
                        })
                    });
                    DevState::Env {
                        zone,
                        noise: model::key_hash(cfg.seed, &spec.id),
                    }
                }
                DeviceClass::PresenceSensor => {
                    let found = spec.resource_id.as_ref().and_then(|r| resources.get(r));
                    let (zone, kind, capacity) = match found {
                        Some((z, r)) => (Some(*z), r.kind, r.capacity),
                        None => (zone, ResourceKind::Desk, 1),
                    };
                    presences.push(Presence {
                        device: index,
                        zone,
                        kind,
                        capacity,
                        resource: spec.resource_id.clone().unwrap_or_default(),
                        occupied: false,
                        count: 0,
                        booked: None,
                        ghost_until: 0,
                    });
                    DevState::Presence(presences.len() - 1)
                }
                DeviceClass::DoorReader => DevState::Door {
                    zone,
                    open: false,
                    lock: DoorLock::default(),
                },
            };
            devices.push(Device {
                base: format!("{ROOT}/{}/{}/", place.id, spec.id),
                seq: cfg.boot_ms,
                spec,
                state,
            });
        }

        let mut schedule = Schedule::new();
        let rate = cfg.rate;
        for (i, d) in devices.iter().enumerate() {
            let base = f64::from(d.spec.report_interval_s.max(1));
            let mut periodic = |task: Task, interval_s: f64, rng: &mut StdRng| {
                let p = period_ms(interval_s, rate);
                schedule.push(first_due(now_ms, p, rng), task);
            };
            match d.state {
                DevState::Gateway => periodic(Task::Status(i), base, &mut rng),
                DevState::Pv | DevState::Grid => {
                    periodic(Task::Power(i), base, &mut rng);
                    periodic(Task::Energy(i), ENERGY_INTERVAL_S, &mut rng);
                }
                DevState::Charger(_) => {
                    periodic(Task::Charger(i), base, &mut rng);
                    periodic(Task::Energy(i), ENERGY_INTERVAL_S, &mut rng);
                }
                DevState::Env { .. } => periodic(Task::Env(i), base, &mut rng),
                DevState::Presence(_) => periodic(Task::Presence(i), base, &mut rng),
                DevState::Door { .. } => {
                    periodic(Task::Status(i), base, &mut rng);
                    periodic(Task::DoorNext(i), base, &mut rng);
                }
            }
        }
        schedule.push(now_ms, Task::Physics);
        if cfg.faults {
            let mean = FAULT_MEAN_INTERVAL_S * 1000.0 / rate;
            for task in [Task::FaultRaise, Task::Duplicate, Task::Malformed] {
                schedule.push(now_ms + exponential_ms(mean, &mut rng), task);
            }
        }

        // Neighbouring places share the weather: one seed per cell of about 30 km.
        let cell = format!(
            "{}/{}",
            (place.latitude / 0.3).floor(),
            (place.longitude / 0.3).floor()
        );
        SiteSim {
            plant: PvPlant::south_facing(place.pv_kwp),
            load: LoadProfile::for_area(place.area_m2),
            weather_seed: model::key_hash(cfg.seed, &cell),
            noise_seed: model::key_hash(cfg.seed ^ 0x10AD, &place.id),
            pv: EnergyCounter::new(0.0, 0.0),
            grid: EnergyCounter::new(0.0, 0.0),
            energy_ms: i64::MIN,
            pv_w: 0.0,
            grid_w: 0.0,
            physics_ms: None,
            bookings_seen: false,
            duplicate_next: false,
            grants: None,
            executed: HashMap::new(),
            place,
            cfg,
            rng,
            devices,
            presences,
            zones,
            chargers,
            gateway,
            schedule,
        }
    }

    pub fn id(&self) -> &str {
        &self.place.id
    }

    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    /// When the next task is due, epoch ms.
    pub fn next_due(&self) -> Option<i64> {
        self.schedule.next_due()
    }

    /// The gateway's Last Will: its own status topic and `{"v":1,"online":false}`.
    pub fn last_will(&self) -> Option<(String, Vec<u8>)> {
        let g = &self.devices[self.gateway?];
        Some((
            format!("{}status", g.base),
            br#"{"v":1,"online":false}"#.to_vec(),
        ))
    }

    /// Every device's retained `meta` and `status` online, the gateway first: what a gateway
    /// publishes at each (re)connection.
    pub fn announce(&self, now_ms: i64) -> Vec<Outgoing> {
        let mut order: Vec<usize> = (0..self.devices.len()).collect();
        order.sort_by_key(|i| Some(*i) != self.gateway);
        let mut out = Vec::with_capacity(2 * order.len());
        for i in order {
            out.push(self.meta(i));
            out.push(self.status(i, now_ms, true));
        }
        out
    }

    /// Every device's retained `status` offline, the gateway last: a planned disconnect.
    pub fn goodbye(&self, now_ms: i64) -> Vec<Outgoing> {
        let mut order: Vec<usize> = (0..self.devices.len()).collect();
        order.sort_by_key(|i| Some(*i) == self.gateway);
        order
            .into_iter()
            .map(|i| self.status(i, now_ms, false))
            .collect()
    }

    /// The subscription through which the gateway hears the commands for every device of its
    /// site (QoS 1; the contract's ACL lets a gateway read `spazi/v1/{site}/+/cmd/+`).
    pub fn command_filter(&self) -> String {
        format!("{ROOT}/{}/+/cmd/+", self.place.id)
    }

    /// The latest grant list the service left retained on the gateway, if any.
    pub fn grants(&self) -> Option<&GrantList> {
        self.grants.as_ref()
    }

    /// Carries out a command the service sent to one of the site's devices, at `now_ms`, as the
    /// contract asks: never at or after its `exp`, each nonce at most once. Returns the reply
    /// for `cmd/{name}/res`; nothing for a grant list (the gateway only keeps the newest), for a
    /// topic that is not a command for a device of this site, and for a payload without a
    /// nonce to answer to.
    pub fn command(&mut self, topic: &str, payload: &[u8], now_ms: i64) -> Option<Outgoing> {
        let (site, device, name) = command::parse_topic(topic)?;
        if site != self.place.id {
            return None;
        }
        let i = self.devices.iter().position(|d| d.spec.id == device)?;
        // An empty payload clears a retained message: not JSON, nothing to do.
        let body: Value = serde_json::from_slice(payload).ok()?;
        if name == "grants" {
            self.keep_grants(i, &body);
            return None;
        }
        let (nonce, result) = match Received::read(&body) {
            Ok(cmd) => (cmd.nonce.to_owned(), self.execute(i, name, &cmd, now_ms)),
            Err(Unreadable::NoNonce) => return None,
            Err(Unreadable::Bad { nonce }) => (nonce, Err(BAD_REQUEST)),
        };
        let mut reply = vec![
            ("v", json!(1)),
            ("ts", json!(now_ms)),
            ("nonce", json!(nonce)),
            ("ok", json!(result.is_ok())),
        ];
        if let Err(error) = result {
            reply.push(("error", json!(error)));
        }
        Some(Outgoing {
            topic: format!("{topic}/res"),
            payload: ordered(&reply),
            retain: false,
            kind: "cmd/res",
        })
    }

    /// One command for device `i`: `Ok` if carried out, or the reply's error code. The device's
    /// family checks what the command asks; every command is then refused at or after its
    /// `exp` and for a nonce already carried out.
    pub(super) fn execute(
        &mut self,
        i: usize,
        name: &str,
        cmd: &Received<'_>,
        now: i64,
    ) -> Result<(), &'static str> {
        let mut limit_a = None;
        match (name, &mut self.devices[i].state) {
            ("unlock", DevState::Door { lock, .. }) => return unlock(lock, cmd, now),
            ("deny", DevState::Door { .. }) => check_deny(cmd.m)?,
            ("setpoint", DevState::Env { .. }) => check_setpoint(cmd.m)?,
            ("charge_limit", DevState::Charger(_)) => limit_a = Some(charge_limit(cmd.m)?),
            _ => return Err("unsupported"),
        }
        if !cmd.in_time(now) {
            return Err(CommandRefusal::Expired.as_str());
        }
        if self.executed.contains_key(cmd.nonce) {
            return Err(CommandRefusal::Duplicate.as_str());
        }
        if self.executed.len() >= 4_096 {
            self.executed.retain(|_, e| *e > now);
        }
        self.executed.insert(cmd.nonce.to_owned(), cmd.exp);
        if let (Some(limit), DevState::Charger(c)) = (limit_a, &mut self.devices[i].state) {
            c.limit_a = limit.round() as u32;
        }
        Ok(())
    }

    pub(super) fn meta(&self, i: usize) -> Outgoing {
        let d = &self.devices[i];
        let class = d.spec.class;
        // Faster than the class default under a rate above 1 still declares the default, so a
        // simulator that falls behind is not taken for offline; slower declares the longer one.
        let base = f64::from(d.spec.report_interval_s.max(1));
        let declared = (base / self.cfg.rate.min(1.0)).ceil().clamp(1.0, 86_400.0) as i64;
        let mut m: Vec<(&str, Value)> = vec![
            ("v", json!(1)),
            ("class", json!(class.as_str())),
            ("model", json!(d.spec.model)),
            ("firmware", json!(firmware(class))),
        ];
        if let Some(z) = &d.spec.zone_id {
            m.push(("zone", json!(z)));
        }
        if let Some(r) = &d.spec.resource_id {
            m.push(("resource", json!(r)));
        }
        if let Some(g) = &d.spec.gateway_id {
            m.push(("gateway", json!(g)));
        }
        m.push(("units", units(class)));
        m.push(("report_interval_s", json!(declared)));
        Outgoing {
            topic: format!("{}meta", d.base),
            payload: ordered(&m),
            retain: true,
            kind: "meta",
        }
    }

    pub(super) fn status(&self, i: usize, now_ms: i64, online: bool) -> Outgoing {
        let d = &self.devices[i];
        Outgoing {
            topic: format!("{}status", d.base),
            payload: ordered(&[
                ("v", json!(1)),
                ("online", json!(online)),
                ("ts", json!(now_ms)),
            ]),
            retain: true,
            kind: "status",
        }
    }

    /// A telemetry or event message of device `i`: the next `seq`, and a second identical copy
    /// when a duplicate is pending.
    pub(super) fn envelope(
        &mut self,
        i: usize,
        sub: &'static str,
        now_ms: i64,
        m: Value,
        out: &mut Vec<Outgoing>,
    ) {
        let d = &mut self.devices[i];
        d.seq += 1;
        let msg = Outgoing {
            topic: format!("{}{sub}", d.base),
            payload: ordered(&[
                ("v", json!(1)),
                ("ts", json!(now_ms)),
                ("seq", json!(d.seq)),
                ("m", m),
            ]),
            retain: false,
            kind: sub,
        };
        if self.duplicate_next && sub.starts_with("tele/") {
            self.duplicate_next = false;
            let copy = Outgoing {
                kind: "duplicate",
                ..msg.clone()
            };
            out.push(msg);
            out.push(copy);
        } else {
            out.push(msg);
        }
    }

    /// Runs every task due at `now_ms` and appends what they publish to `out`. `bookings` is
    /// the set of booked resources when the simulator follows a database.
    pub fn step(&mut self, now_ms: i64, bookings: Option<&Bookings>, out: &mut Vec<Outgoing>) {
        while let Some((due, task)) = self.schedule.pop_due(now_ms) {
            self.run(due, now_ms, task, bookings, out);
        }
    }

    pub(super) fn again(&mut self, due: i64, now: i64, interval_s: f64, task: Task) {
        let p = period_ms(interval_s, self.cfg.rate);
        let next = next_after(due, now, p, &mut self.rng);
        self.schedule.push(next, task);
    }

    pub(super) fn interval_of(&self, i: usize) -> f64 {
        f64::from(self.devices[i].spec.report_interval_s.max(1))
    }

    pub(super) fn run(
        &mut self,
        due: i64,
        now: i64,
        task: Task,
        bookings: Option<&Bookings>,
        out: &mut Vec<Outgoing>,
    ) {
        match task {
            Task::Status(i) => {
                out.push(self.status(i, now, true));
                self.again(due, now, self.interval_of(i), task);
            }
            Task::Power(i) => {
                self.power_message(i, now, out);
                self.again(due, now, self.interval_of(i), task);
            }
            Task::Energy(i) => {
                self.energy_message(i, now, out);
                self.again(due, now, ENERGY_INTERVAL_S, task);
            }
            Task::Charger(i) => {
                self.advance(now);
                self.charger_message(i, now, out);
                self.again(due, now, self.interval_of(i), task);
            }
            Task::Env(i) => {
                self.env_message(i, now, out);
                self.again(due, now, self.interval_of(i), task);
            }
            Task::Presence(i) => {
                if let DevState::Presence(p) = self.devices[i].state {
                    self.presence_message(p, now, out);
                }
                self.again(due, now, self.interval_of(i), task);
            }
            Task::DoorNext(i) => self.door_next(i, now, out),
            Task::DoorClose(i) => self.door_close(i, now, out),
            Task::Physics => {
                self.physics(now, bookings, out);
                self.again(due, now, PHYSICS_INTERVAL_S, task);
            }
            Task::FaultRaise => {
                self.raise_fault(now, out);
                self.again_poisson(now, task);
            }
            Task::FaultClear(i) => self.clear_fault(i, now, out),
            Task::Duplicate => {
                self.duplicate_next = true;
                self.again_poisson(now, task);
            }
            Task::Malformed => {
                self.malformed(now, out);
                self.again_poisson(now, task);
            }
        }
    }

    pub(super) fn again_poisson(&mut self, now: i64, task: Task) {
        let mean = FAULT_MEAN_INTERVAL_S * 1000.0 / self.cfg.rate;
        let next = now + exponential_ms(mean, &mut self.rng);
        self.schedule.push(next, task);
    }

    /// People come and go, the air follows them; presence sensors report what changed.
    pub(super) fn physics(
        &mut self,
        now: i64,
        bookings: Option<&Bookings>,
        out: &mut Vec<Outgoing>,
    ) {
        let first = self.physics_ms.is_none();
        let dt_s = self
            .physics_ms
            .map_or(0.0, |t| ((now - t) as f64 / 1000.0).clamp(0.0, 600.0));
        self.physics_ms = Some(now);
        let at = at_ms(now);
        let cal = self.place.calendar.clone();
        let activity = cal.activity(at);

        self.people_move(now, activity, first, dt_s, bookings, out);
        let people = self.people_by_zone();
        self.air_follows(at, &cal, activity, first, dt_s, &people);
    }

    /// One broken message on a device's telemetry topic: either not JSON at all, or a string
    /// where the contract wants a number.
    pub(super) fn malformed(&mut self, now: i64, out: &mut Vec<Outgoing>) {
        let candidates: Vec<usize> = (0..self.devices.len())
            .filter(|i| {
                !matches!(
                    self.devices[*i].state,
                    DevState::Gateway | DevState::Door { .. }
                )
            })
            .collect();
        if candidates.is_empty() {
            return;
        }
        let i = candidates[self.rng.gen_range(0..candidates.len())];
        let truncated = self.rng.gen_bool(0.5);
        let d = &mut self.devices[i];
        d.seq += 1;
        let (sub, m) = match d.state {
            DevState::Pv | DevState::Grid => ("tele/power", r#"{"p_w":"1234.5"}"#),
            DevState::Charger(_) => ("tele/charger", r#"{"state":"charging","p_w":"7400"}"#),
            DevState::Env { .. } => ("tele/env", r#"{"t_c":21.5,"co2_ppm":"650"}"#),
            _ => ("tele/presence", r#"{"occupied":true,"count":"2"}"#),
        };
        let whole = format!(r#"{{"v":1,"ts":{now},"seq":{},"m":{m}}}"#, d.seq);
        let payload = if truncated {
            whole[..whole.len() - 7].to_owned()
        } else {
            whole
        };
        out.push(Outgoing {
            topic: format!("{}{sub}", d.base),
            payload: payload.into_bytes(),
            retain: false,
            kind: "malformed",
        });
    }
}

/// What the tests of every family drive a site with.
#[cfg(test)]
pub(super) mod testing {
    use super::*;
    use crate::domain::network::{generate, DEFAULT_SEED};
    use crate::domain::telemetry::{decode, parse_topic, Decoded, Metric};

    pub(crate) fn cfg(faults: bool, rate: f64) -> SimConfig {
        SimConfig {
            seed: 11,
            rate,
            faults,
            boot_ms: 1_780_000_000_000,
        }
    }

    pub(crate) fn site(id: &str) -> SiteSpec {
        generate(DEFAULT_SEED)
            .into_iter()
            .find(|s| s.id == id)
            .unwrap()
    }

    /// Drives a site from `start` for `hours`, checking every message against the contract.
    pub(crate) fn drive(
        sim: &mut SiteSim,
        start: i64,
        hours: i64,
        bookings: Option<&Bookings>,
    ) -> Vec<(Outgoing, Option<Decoded>)> {
        let mut all = Vec::new();
        let mut out = Vec::new();
        let end = start + hours * 3_600_000;
        while let Some(due) = sim.next_due() {
            if due >= end {
                break;
            }
            sim.step(due, bookings, &mut out);
            for o in out.drain(..) {
                let topic = parse_topic(&o.topic).expect("a contract topic");
                assert_eq!(topic.site, sim.id());
                let decoded = decode(topic.kind, &o.payload, due + 1_000).ok();
                if o.kind != "malformed" {
                    assert!(
                        decoded.is_some(),
                        "{} {}",
                        o.topic,
                        String::from_utf8_lossy(&o.payload)
                    );
                } else {
                    assert!(decoded.is_none(), "{}", String::from_utf8_lossy(&o.payload));
                }
                all.push((o, decoded));
            }
        }
        all
    }

    pub(crate) fn value(d: &Decoded, metric: Metric) -> Option<f64> {
        match d {
            Decoded::Readings { values, .. } => {
                values.iter().find(|(m, _)| *m == metric).map(|(_, v)| *v)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::testing::{cfg, drive, site, value};
    use super::*;
    use crate::domain::devices::site_devices;
    use crate::domain::solar;
    use crate::domain::telemetry::{decode, parse_topic, Decoded, Metric, TopicKind};

    #[test]
    fn a_day_at_a_site_keeps_the_contract() {
        let spec = site("roma");
        let devices = site_devices(&spec);
        // Wednesday 17 June 2026 from midnight, Rome.
        let start = 1_781_647_200_000;
        let mut sim = SiteSim::new(
            Place::from_site(&spec),
            devices.clone(),
            cfg(true, 1.0),
            start,
        );
        let announced = sim.announce(start);
        assert_eq!(announced.len(), 2 * devices.len());
        assert!(announced.iter().all(|o| o.retain));
        assert!(announced[0]
            .topic
            .ends_with(&format!("{}/meta", devices[0].id)));
        for o in &announced {
            let t = parse_topic(&o.topic).unwrap();
            let decoded = decode(t.kind, &o.payload, start).unwrap();
            if let Decoded::Meta(meta) = decoded {
                let spec = devices.iter().find(|d| d.id == t.device).unwrap();
                assert_eq!(meta.class, spec.class);
                assert_eq!(meta.resource, spec.resource_id);
                assert_eq!(meta.zone, spec.zone_id);
            }
        }

        let all = drive(&mut sim, start, 24, None);
        let mut seqs: HashMap<String, i64> = HashMap::new();
        let mut counters: HashMap<(String, Metric), f64> = HashMap::new();
        let mut pv_noon: f64 = 0.0;
        let mut grid_export = false;
        let mut kinds: HashSet<&str> = HashSet::new();
        for (o, d) in &all {
            kinds.insert(o.kind);
            let t = parse_topic(&o.topic).unwrap();
            let Some(d) = d else { continue };
            let (ts, seq) = match d {
                Decoded::Readings { ts, seq, .. } | Decoded::Event { ts, seq, .. } => (*ts, *seq),
                _ => continue,
            };
            let last = seqs.insert(t.device.to_owned(), seq);
            if o.kind == "duplicate" {
                assert_eq!(last, Some(seq));
            } else {
                assert!(
                    last.is_none_or(|l| seq > l),
                    "{} {seq} after {last:?}",
                    t.device
                );
            }
            for metric in [Metric::EImpWh, Metric::EExpWh] {
                if let Some(v) = value(d, metric) {
                    let prev = counters.insert((t.device.to_owned(), metric), v);
                    assert!(prev.is_none_or(|p| v >= p), "{} {metric}", t.device);
                }
            }
            if let (TopicKind::Tele(_), Some(p)) = (t.kind, value(d, Metric::PW)) {
                let sun = solar::sun_position(spec.latitude, spec.longitude, at_ms(ts));
                if t.device == "roma-pv" {
                    assert!(p <= 0.0);
                    if sun.elevation_deg < 0.0 {
                        assert_eq!(p, 0.0);
                    }
                    pv_noon = pv_noon.max(-p);
                }
                if t.device == "roma-grid" && p < 0.0 {
                    grid_export = true;
                }
            }
        }
        assert!(
            pv_noon > 30_000.0,
            "a large site's 100 kWp at June noon: {pv_noon}"
        );
        assert!(grid_export || pv_noon < 50_000.0);
        for k in [
            "tele/power",
            "tele/energy",
            "tele/env",
            "tele/presence",
            "tele/charger",
            "evt/door",
            "status",
        ] {
            assert!(kinds.contains(k), "no {k}");
        }
        // A day at rate 1 with faults on: about 24 of each kind of trouble, give or take.
        let count = |k: &str| all.iter().filter(|(o, _)| o.kind == k).count();
        assert!(
            (5..60).contains(&count("duplicate")),
            "{}",
            count("duplicate")
        );
        assert!(
            (5..60).contains(&count("malformed")),
            "{}",
            count("malformed")
        );
        assert!(count("evt/fault") >= 10);

        // About 24 h of messages at the class intervals.
        let power = all
            .iter()
            .filter(|(o, _)| o.topic == "spazi/v1/roma/roma-pv/tele/power")
            .count();
        assert!((8_000..9_500).contains(&power), "{power}");
    }

    #[test]
    fn polis_buildings_publish_their_six_devices() {
        let start = 1_781_686_800_000; // 17 June 2026 11:00 in Rome
        let specs = crate::sim::building_devices("polis-00001");
        let mut sim = SiteSim::new(
            Place::polis("polis-00001", 44.5, 11.3),
            specs,
            cfg(false, 1.0),
            start,
        );
        assert_eq!(sim.announce(start).len(), 12);
        let all = drive(&mut sim, start, 1, None);
        let topics: HashSet<&str> = all.iter().map(|(o, _)| o.topic.as_str()).collect();
        for t in [
            "spazi/v1/polis-00001/polis-00001-gw/status",
            "spazi/v1/polis-00001/polis-00001-pv/tele/power",
            "spazi/v1/polis-00001/polis-00001-grid/tele/energy",
            "spazi/v1/polis-00001/polis-00001-evc-1/tele/charger",
            "spazi/v1/polis-00001/polis-00001-evc-2/tele/energy",
            "spazi/v1/polis-00001/polis-00001-env/tele/env",
        ] {
            assert!(topics.contains(t), "{t}");
        }
    }

    #[test]
    fn the_rate_multiplies_the_messages() {
        let spec = site("roma");
        let start = 1_781_686_800_000;
        let count = |rate: f64| {
            let mut sim = SiteSim::new(
                Place::from_site(&spec),
                site_devices(&spec),
                cfg(false, rate),
                start,
            );
            drive(&mut sim, start, 1, None).len() as f64
        };
        let (one, ten) = (count(1.0), count(10.0));
        assert!((ten / one - 10.0).abs() < 1.5, "{one} {ten}");
    }

    #[test]
    fn no_negative_zero() {
        assert_eq!(json!(round1(-0.0)).to_string(), "0.0");
        assert_eq!(json!(round1(-0.04)).to_string(), "0.0");
        assert_eq!(round1(-1234.56), -1234.6);
    }

    #[test]
    fn commands_are_carried_out_once_and_never_late() {
        let spec = site("roma");
        let now = 1_781_686_800_000;
        let mut sim = SiteSim::new(
            Place::from_site(&spec),
            site_devices(&spec),
            cfg(false, 1.0),
            now,
        );
        assert_eq!(sim.command_filter(), "spazi/v1/roma/+/cmd/+");
        let door = "spazi/v1/roma/roma-door-main/cmd/unlock";
        let unlock = |nonce: &str, exp: i64| {
            format!(
                r#"{{"v":1,"ts":{},"nonce":"{nonce}","exp":{exp},"m":{{"badge_seq":7,"duration_s":5}}}}"#,
                exp - 5_000
            )
        };
        // Each reply is a command result the service accepts, on the command's own `res` topic.
        let answer = |sim: &mut SiteSim, topic: &str, payload: String, at: i64| {
            let o = sim.command(topic, payload.as_bytes(), at).expect("a reply");
            assert_eq!(o.topic, format!("{topic}/res"));
            assert!(!o.retain);
            let t = parse_topic(&o.topic).unwrap();
            assert!(matches!(t.kind, TopicKind::CmdResult(_)));
            assert!(decode(t.kind, &o.payload, at).is_ok());
            serde_json::from_slice::<Value>(&o.payload).unwrap()
        };

        let ok = answer(&mut sim, door, unlock("n-1", now + 5_000), now + 80);
        assert_eq!(ok, json!({"v":1,"ts":now + 80,"nonce":"n-1","ok":true}));
        // The same nonce again (a QoS 1 redelivery) is not run twice.
        let again = answer(&mut sim, door, unlock("n-1", now + 5_000), now + 90);
        assert_eq!(again["ok"], json!(false));
        assert_eq!(again["error"], json!("duplicate"));
        // Delivered at or after its exp: dropped, not run late.
        let late = answer(&mut sim, door, unlock("n-2", now + 5_000), now + 5_000);
        assert_eq!(late["nonce"], json!("n-2"));
        assert_eq!(late["ok"], json!(false));
        assert_eq!(late["error"], json!("expired"));
        let deny = format!(
            r#"{{"v":1,"ts":{now},"nonce":"n-3","exp":{},"m":{{"badge_seq":8,"reason":"wrong_zone"}}}}"#,
            now + 5_000
        );
        let deny_topic = door.replace("/unlock", "/deny");
        assert_eq!(
            answer(&mut sim, &deny_topic, deny, now + 50)["ok"],
            json!(true)
        );

        // A charger takes its new limit and reports it.
        let charger = sim
            .devices
            .iter()
            .position(|d| d.spec.class == DeviceClass::EvCharger)
            .unwrap();
        let topic = format!("{}cmd/charge_limit", sim.devices[charger].base);
        let limit = format!(
            r#"{{"v":1,"ts":{now},"nonce":"n-4","exp":{},"m":{{"limit_a":10}}}}"#,
            now + 60_000
        );
        assert_eq!(answer(&mut sim, &topic, limit, now + 10)["ok"], json!(true));
        let mut out = Vec::new();
        sim.charger_message(charger, now + 20, &mut out);
        assert!(String::from_utf8_lossy(&out[0].payload).contains(r#""limit_a":10"#));

        // A setpoint on the zone's environment sensor; a late one is refused.
        let setpoint = |nonce: &str| {
            format!(
                r#"{{"v":1,"ts":{now},"nonce":"{nonce}","exp":{},"m":{{"mode":"eco","t_c":17.0,"lights":"off"}}}}"#,
                now + 900_000
            )
        };
        let env = "spazi/v1/roma/roma-open-1-env/cmd/setpoint";
        assert_eq!(
            answer(&mut sim, env, setpoint("n-5"), now)["ok"],
            json!(true)
        );
        assert_eq!(
            answer(&mut sim, env, setpoint("n-6"), now + 900_000)["error"],
            json!("expired")
        );
        // A command the device cannot carry out, and a broken one.
        let odd = answer(
            &mut sim,
            &topic.replace("charge_limit", "unlock"),
            unlock("n-7", now + 5_000),
            now,
        );
        assert_eq!(odd["error"], json!("unsupported"));
        let broken = format!(
            r#"{{"v":1,"ts":{now},"nonce":"n-8","exp":{},"m":{{}}}}"#,
            now + 5_000
        );
        assert_eq!(
            answer(&mut sim, door, broken, now)["error"],
            json!("bad_request")
        );
        // No nonce, nothing to answer to; another site's topic is not ours.
        assert!(sim.command(door, br#"{"v":1}"#, now).is_none());
        assert!(sim
            .command(
                "spazi/v1/milano/milano-door-main/cmd/unlock",
                unlock("n-9", now + 5_000).as_bytes(),
                now
            )
            .is_none());
    }

    #[test]
    fn the_last_will_and_the_goodbye() {
        let spec = site("roma");
        let sim = SiteSim::new(
            Place::from_site(&spec),
            site_devices(&spec),
            cfg(false, 1.0),
            0,
        );
        let (topic, payload) = sim.last_will().unwrap();
        assert_eq!(topic, "spazi/v1/roma/roma-gw/status");
        assert_eq!(payload, br#"{"v":1,"online":false}"#);
        let bye = sim.goodbye(5);
        assert_eq!(bye.last().unwrap().topic, topic);
        assert!(bye.iter().all(|o| o.retain && o.kind == "status"));
        assert_eq!(bye.len(), sim.device_count());
    }
}
