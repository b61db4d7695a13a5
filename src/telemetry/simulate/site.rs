//! One simulated site (or Polis building): the state of its devices and what each one publishes
//! when its time comes. No I/O: [`SiteSim::step`] takes the wall-clock time and returns the
//! messages due, so the whole behaviour can be driven through a day in a test.

use std::collections::{HashMap, HashSet};

use chrono::{Datelike, Timelike};
use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Map, Value};

use super::model::{
    self, at_ms, charger_reading, climate_target, co2_step, plan_sessions, presence_step, relax,
    rng_for, volume_m3, Calendar, ChargerMeter, EnergyCounter, LoadProfile, ACH_IDLE,
    ACH_VENTILATED, OUTDOOR_CO2_PPM,
};
use super::schedule::{exponential_ms, first_due, next_after, period_ms, Schedule};
use crate::domain::access_control::{CommandRefusal, DoorLock, GrantList, UnlockCommand};
use crate::domain::devices::DeviceSpec;
use crate::domain::network::SiteSpec;
use crate::domain::opening_hours::WeeklyHours;
use crate::domain::solar::{self, PvPlant};
use crate::domain::telemetry::valid_id;
use crate::domain::{DeviceClass, ResourceKind};

/// The topic root of contract v1.
pub const ROOT: &str = "spazi/v1";
/// The inverter's own draw while the plant does not produce, W (counted in the PV meter's
/// `e_imp_wh`; below the resolution of its power reading).
pub const PV_STANDBY_W: f64 = 3.0;
/// How often the people, the air and the presence sensors are brought up to date, s (before
/// the rate is applied).
pub const PHYSICS_INTERVAL_S: f64 = 30.0;
/// How often each kind of trouble happens per site with faults on, s (before the rate).
pub const FAULT_MEAN_INTERVAL_S: f64 = 3_600.0;
/// Energy counters report this often, s.
pub const ENERGY_INTERVAL_S: f64 = 60.0;

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

/// The resources with an active booking, as last read from the database.
#[derive(Debug, Clone, Default)]
pub struct Bookings {
    pub resources: HashSet<String>,
}

#[derive(Debug)]
struct Device {
    spec: DeviceSpec,
    /// `spazi/v1/{site}/{device}/`
    base: String,
    seq: i64,
    state: DevState,
}

#[derive(Debug)]
enum DevState {
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

#[derive(Debug)]
struct Charger {
    meter: ChargerMeter,
    fault: Option<(&'static str, &'static str)>,
    limit_a: u32,
    zeroed: bool,
}

#[derive(Debug)]
struct Presence {
    device: usize,
    zone: Option<usize>,
    kind: ResourceKind,
    capacity: u32,
    resource: String,
    occupied: bool,
    count: u32,
    booked: Option<Booked>,
    ghost_until: i64,
}

/// A booking followed by a presence sensor: the person arrives a few minutes after it starts
/// and takes a break now and then.
#[derive(Debug, Clone, Copy)]
struct Booked {
    arrive_ms: i64,
    next_break_ms: i64,
    break_until_ms: i64,
}

#[derive(Debug)]
struct ZoneState {
    area_m2: f64,
    volume_m3: f64,
    co2: f64,
    t_c: f64,
    rh: f64,
    people: f64,
    /// For a zone without presence sensors: people at the busiest hour.
    from_activity: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Task {
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

const FAULTS: [(&str, &str); 4] = [
    ("RCD_TRIP", "residual current device tripped"),
    ("CP_ERROR", "control pilot signal out of range"),
    (
        "OVERTEMP",
        "connector temperature too high, charging suspended",
    ),
    ("GROUND_FAULT", "protective earth not detected"),
];

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
fn ordered(pairs: &[(&str, Value)]) -> Vec<u8> {
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
fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0 + 0.0
}

/// The one simulated place.
pub struct SiteSim {
    place: Place,
    cfg: SimConfig,
    rng: StdRng,
    devices: Vec<Device>,
    presences: Vec<Presence>,
    zones: Vec<ZoneState>,
    chargers: Vec<usize>,
    gateway: Option<usize>,
    schedule: Schedule<Task>,
    plant: PvPlant,
    load: LoadProfile,
    weather_seed: u64,
    noise_seed: u64,
    pv: EnergyCounter,
    grid: EnergyCounter,
    energy_ms: i64,
    pv_w: f64,
    grid_w: f64,
    physics_ms: Option<i64>,
    bookings_seen: bool,
    duplicate_next: bool,
    /// The latest grant list the service left retained on the gateway (`cmd/grants`).
    grants: Option<GrantList>,
    /// Nonces of the commands other than unlocks already carried out, with their `exp` (after
    /// which a command is refused anyway, so its nonce can be forgotten).
    executed: HashMap<String, i64>,
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
        let rest = topic
            .strip_prefix(ROOT)?
            .strip_prefix('/')?
            .strip_prefix(self.place.id.as_str())?
            .strip_prefix('/')?;
        let (device, name) = rest.split_once("/cmd/")?;
        if !valid_id(name) {
            return None;
        }
        let i = self.devices.iter().position(|d| d.spec.id == device)?;
        // An empty payload clears a retained message: not JSON, nothing to do.
        let body: Value = serde_json::from_slice(payload).ok()?;
        if name == "grants" {
            self.keep_grants(i, &body);
            return None;
        }
        let nonce = body
            .get("nonce")
            .and_then(Value::as_str)
            .filter(|n| (1..=64).contains(&n.len()))?
            .to_owned();
        let result = self.execute(i, name, &nonce, &body, now_ms);
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

    /// Keeps a grant list sent to the gateway, unless an older version than the one kept.
    fn keep_grants(&mut self, i: usize, body: &Value) {
        if Some(i) != self.gateway || body.get("v").and_then(Value::as_i64) != Some(1) {
            return;
        }
        let Some(list) = body
            .get("m")
            .and_then(|m| serde_json::from_value::<GrantList>(m.clone()).ok())
        else {
            return;
        };
        if self
            .grants
            .as_ref()
            .is_some_and(|g| list.version < g.version)
        {
            return;
        }
        self.grants = Some(list);
    }

    /// One command for device `i`: `Ok` if carried out, or the reply's error code.
    fn execute(
        &mut self,
        i: usize,
        name: &str,
        nonce: &str,
        body: &Value,
        now: i64,
    ) -> Result<(), &'static str> {
        const BAD: &str = "bad_request";
        if body.get("v").and_then(Value::as_i64) != Some(1) {
            return Err(BAD);
        }
        let exp = body.get("exp").and_then(Value::as_i64).ok_or(BAD)?;
        let m = body.get("m").and_then(Value::as_object).ok_or(BAD)?;
        let int = |k: &str, lo: i64, hi: i64| {
            m.get(k)
                .and_then(Value::as_i64)
                .filter(|n| (lo..=hi).contains(n))
                .ok_or(BAD)
        };
        let num = |k: &str, lo: f64, hi: f64| {
            m.get(k)
                .and_then(Value::as_f64)
                .filter(|x| (lo..=hi).contains(x))
                .ok_or(BAD)
        };
        let one_of = |k: &str, allowed: &[&str]| {
            m.get(k)
                .and_then(Value::as_str)
                .filter(|s| allowed.contains(s))
                .ok_or(BAD)
        };
        let mut limit_a = None;
        match (name, &mut self.devices[i].state) {
            ("unlock", DevState::Door { lock, .. }) => {
                let cmd = UnlockCommand {
                    nonce: nonce.to_owned(),
                    exp,
                    badge_seq: int("badge_seq", 0, i64::MAX)?,
                    duration_s: int("duration_s", 1, 3_600)?,
                };
                return lock.unlock(&cmd, now).map_err(CommandRefusal::as_str);
            }
            ("deny", DevState::Door { .. }) => {
                int("badge_seq", 0, i64::MAX)?;
                let reason = m.get("reason").and_then(Value::as_str).ok_or(BAD)?;
                if !(1..=64).contains(&reason.len()) {
                    return Err(BAD);
                }
            }
            ("setpoint", DevState::Env { .. }) => {
                one_of("mode", &["comfort", "eco", "precondition"])?;
                num("t_c", 5.0, 35.0)?;
                one_of("lights", &["on", "off"])?;
            }
            ("charge_limit", DevState::Charger(_)) => limit_a = Some(num("limit_a", 0.0, 1_000.0)?),
            _ => return Err("unsupported"),
        }
        if now >= exp {
            return Err(CommandRefusal::Expired.as_str());
        }
        if self.executed.contains_key(nonce) {
            return Err(CommandRefusal::Duplicate.as_str());
        }
        if self.executed.len() >= 4_096 {
            self.executed.retain(|_, e| *e > now);
        }
        self.executed.insert(nonce.to_owned(), exp);
        if let (Some(limit), DevState::Charger(c)) = (limit_a, &mut self.devices[i].state) {
            c.limit_a = limit.round() as u32;
        }
        Ok(())
    }

    fn meta(&self, i: usize) -> Outgoing {
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

    fn status(&self, i: usize, now_ms: i64, online: bool) -> Outgoing {
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
    fn envelope(
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

    fn again(&mut self, due: i64, now: i64, interval_s: f64, task: Task) {
        let p = period_ms(interval_s, self.cfg.rate);
        let next = next_after(due, now, p, &mut self.rng);
        self.schedule.push(next, task);
    }

    fn interval_of(&self, i: usize) -> f64 {
        f64::from(self.devices[i].spec.report_interval_s.max(1))
    }

    fn run(
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
                self.advance(now);
                let p = match self.devices[i].state {
                    // Production leaves the PV meter: export, negative.
                    DevState::Pv => -self.pv_w,
                    _ => self.grid_w,
                };
                self.envelope(i, "tele/power", now, json!({"p_w": round1(p)}), out);
                self.again(due, now, self.interval_of(i), task);
            }
            Task::Energy(i) => {
                self.advance(now);
                let epoch = self.cfg.boot_ms / 1000;
                let m = match &self.devices[i].state {
                    DevState::Pv => json!({
                        "e_imp_wh": round1(self.pv.import_wh),
                        "e_exp_wh": round1(self.pv.export_wh),
                        "meter_epoch": epoch,
                    }),
                    DevState::Charger(c) => json!({
                        "e_imp_wh": round1(c.meter.counter_wh(now).max(0.0)),
                        "meter_epoch": epoch,
                    }),
                    _ => json!({
                        "e_imp_wh": round1(self.grid.import_wh),
                        "e_exp_wh": round1(self.grid.export_wh),
                        "meter_epoch": epoch,
                    }),
                };
                self.envelope(i, "tele/energy", now, m, out);
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
            Task::DoorClose(i) => {
                if let DevState::Door { open, .. } = &mut self.devices[i].state {
                    *open = false;
                }
                self.envelope(i, "evt/door", now, json!({"open": false}), out);
            }
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

    fn again_poisson(&mut self, now: i64, task: Task) {
        let mean = FAULT_MEAN_INTERVAL_S * 1000.0 / self.cfg.rate;
        let next = now + exponential_ms(mean, &mut self.rng);
        self.schedule.push(next, task);
    }

    /// Brings the plant, the building and the chargers to `now` and integrates the meters.
    fn advance(&mut self, now: i64) {
        if now <= self.energy_ms {
            return;
        }
        let at = at_ms(now);
        let clouds = solar::clouds_factor(self.weather_seed, at);
        let production = self
            .plant
            .power_at(self.place.latitude, self.place.longitude, at, clouds);
        let mut chargers_w = 0.0;
        for k in 0..self.chargers.len() {
            let i = self.chargers[k];
            self.plan_charger(i, now);
            if let DevState::Charger(c) = &self.devices[i].state {
                chargers_w += charger_reading(&c.meter.sessions, now, c.fault.is_some()).p_w;
            }
        }
        let cal = &self.place.calendar;
        let season = model::hvac_season_factor(at.with_timezone(&cal.tz).ordinal());
        let noise = solar::value_noise(self.noise_seed, now as f64 / 1000.0, 300.0);
        let load = self
            .load
            .load_w(cal.activity(at), cal.hvac_on(at), season, noise);
        let standby = if production > 0.0 { 0.0 } else { PV_STANDBY_W };
        self.pv.sample(now, standby - production);
        let grid = load + chargers_w + standby - production;
        self.grid.sample(now, grid);
        self.pv_w = production;
        self.grid_w = grid;
        self.energy_ms = now;
    }

    /// Makes sure charger `i` has the plan of the local day of `now`.
    fn plan_charger(&mut self, i: usize, now: i64) {
        let cal = &self.place.calendar;
        let (date, _) = cal.local(at_ms(now));
        let DevState::Charger(c) = &mut self.devices[i].state else {
            return;
        };
        if c.meter.date == Some(date) {
            return;
        }
        let open_day = !cal.hours.on(date.weekday()).is_empty() && !cal.closed.contains(&date);
        let busy = model::weekday_factor(date.weekday()) * if open_day { 1.0 } else { 0.3 };
        let sessions = plan_sessions(self.cfg.seed, &self.devices[i].spec.id, date, cal, busy);
        let DevState::Charger(c) = &mut self.devices[i].state else {
            return;
        };
        c.meter.replan(date, sessions, now);
        if !c.zeroed {
            // A fresh meter epoch starts from zero, whatever the day has delivered so far.
            c.meter.initial_wh = -c.meter.counter_wh(now);
            c.zeroed = true;
        }
    }

    fn charger_message(&mut self, i: usize, now: i64, out: &mut Vec<Outgoing>) {
        let DevState::Charger(c) = &self.devices[i].state else {
            return;
        };
        let r = charger_reading(&c.meter.sessions, now, c.fault.is_some());
        let mut m = Map::new();
        m.insert("state".into(), json!(r.state.as_str()));
        m.insert("p_w".into(), json!(round1(r.p_w)));
        if let Some((id, e)) = r.session {
            m.insert("session_id".into(), json!(id));
            m.insert("e_session_wh".into(), json!(round1(e)));
        }
        m.insert("limit_a".into(), json!(c.limit_a));
        self.envelope(i, "tele/charger", now, Value::Object(m), out);
    }

    fn env_message(&mut self, i: usize, now: i64, out: &mut Vec<Outgoing>) {
        let DevState::Env { zone, noise } = self.devices[i].state else {
            return;
        };
        let z = &self.zones[zone];
        let t = now as f64 / 1000.0;
        let n = |k: u64, period: f64| solar::value_noise(noise ^ k, t, period) - 0.5;
        let at = at_ms(now);
        let sun = solar::sun_position(self.place.latitude, self.place.longitude, at);
        let clouds = solar::clouds_factor(self.weather_seed, at);
        let lights = self.place.calendar.activity(at) > 0.0 || z.people > 0.5;
        let lux = model::lux(lights, sun.elevation_deg, clouds) * (1.0 + 0.2 * n(3, 600.0));
        let m = json!({
            "t_c": round1(z.t_c + 0.4 * n(1, 900.0)),
            "rh_pct": round1((z.rh + 2.0 * n(2, 1200.0)).clamp(0.0, 100.0)),
            "co2_ppm": (z.co2 + 15.0 * n(4, 300.0)).max(380.0).round(),
            "lux": lux.max(0.0).round(),
        });
        self.envelope(i, "tele/env", now, m, out);
    }

    fn presence_message(&mut self, p: usize, now: i64, out: &mut Vec<Outgoing>) {
        let pr = &self.presences[p];
        let m = if pr.kind == ResourceKind::Desk {
            json!({"occupied": pr.occupied})
        } else {
            json!({"occupied": pr.occupied, "count": if pr.occupied { pr.count } else { 0 }})
        };
        let device = pr.device;
        self.envelope(device, "tele/presence", now, m, out);
    }

    /// People come and go, the air follows them; presence sensors report what changed.
    fn physics(&mut self, now: i64, bookings: Option<&Bookings>, out: &mut Vec<Outgoing>) {
        let first = self.physics_ms.is_none();
        let dt_s = self
            .physics_ms
            .map_or(0.0, |t| ((now - t) as f64 / 1000.0).clamp(0.0, 600.0));
        self.physics_ms = Some(now);
        let at = at_ms(now);
        let cal = self.place.calendar.clone();
        let activity = cal.activity(at);
        let first_bookings = bookings.is_some() && !self.bookings_seen;
        if bookings.is_some() {
            self.bookings_seen = true;
        }

        for p in 0..self.presences.len() {
            let before = (self.presences[p].occupied, self.presences[p].count);
            let u: f64 = self.rng.gen();
            let pr = &mut self.presences[p];
            let target = activity * base_occupancy(pr.kind);
            match bookings {
                Some(b) => {
                    let active = b.resources.contains(&pr.resource);
                    follow_booking(
                        pr,
                        active,
                        now,
                        first_bookings,
                        activity,
                        dt_s,
                        u,
                        &mut self.rng,
                    );
                }
                None if first => pr.occupied = u < target,
                None => {
                    let stay = mean_stay_s(pr.kind);
                    // After closing, people leave within a quarter of an hour or so.
                    let stay = if activity == 0.0 {
                        stay.min(900.0)
                    } else {
                        stay
                    };
                    pr.occupied = presence_step(pr.occupied, target, stay, dt_s, u);
                }
            }
            if pr.occupied && !before.0 {
                pr.count = people_in(pr.kind, pr.capacity, &mut self.rng);
            }
            if !pr.occupied {
                pr.count = 0;
            }
            if !first && (pr.occupied, pr.count) != before {
                self.presence_message(p, now, out);
            }
        }

        let mut people = vec![0.0; self.zones.len()];
        for pr in &self.presences {
            if let (Some(z), true) = (pr.zone, pr.occupied) {
                people[z] += f64::from(pr.count.max(1));
            }
        }
        let hvac = cal.hvac_on(at);
        let local = at.with_timezone(&cal.tz);
        let (doy, minute) = (local.ordinal(), local.hour() * 60 + local.minute());
        let ach = if hvac { ACH_VENTILATED } else { ACH_IDLE };
        for (z, zone) in self.zones.iter_mut().enumerate() {
            zone.people = match zone.from_activity {
                Some(peak) => peak * activity,
                None => people[z],
            };
            let density = zone.people * 10.0 / zone.area_m2;
            let (t, rh) = climate_target(doy, minute, hvac, density);
            if first {
                zone.co2 = co2_step(OUTDOOR_CO2_PPM, zone.people, zone.volume_m3, ach, 7_200.0);
                zone.t_c = t;
                zone.rh = rh;
            } else {
                zone.co2 = co2_step(zone.co2, zone.people, zone.volume_m3, ach, dt_s);
                zone.t_c = relax(zone.t_c, t, dt_s, 3_600.0);
                zone.rh = relax(zone.rh, rh, dt_s, 2_400.0);
            }
        }
    }

    fn door_next(&mut self, i: usize, now: i64, out: &mut Vec<Outgoing>) {
        let at = at_ms(now);
        let activity = self.place.calendar.activity(at);
        let DevState::Door { zone, .. } = self.devices[i].state else {
            return;
        };
        if activity <= 0.0 {
            let p = period_ms(self.interval_of(i), self.cfg.rate);
            self.schedule.push(now + p, Task::DoorNext(i));
            return;
        }
        // The main door sees everyone; a room's door only its own people.
        let mean_s = match zone {
            None => 600.0 / (self.place.people_at_peak / 10.0).clamp(0.5, 8.0),
            Some(z) if self.zones[z].people > 0.0 => 600.0,
            Some(_) => 1_800.0,
        } / activity;
        if let DevState::Door { open, .. } = &mut self.devices[i].state {
            *open = true;
        }
        self.envelope(i, "evt/door", now, json!({"open": true}), out);
        let close = now + self.rng.gen_range(3_000..12_000);
        self.schedule.push(close, Task::DoorClose(i));
        let next = close + exponential_ms(mean_s * 1000.0 / self.cfg.rate, &mut self.rng);
        self.schedule.push(next, Task::DoorNext(i));
    }

    fn raise_fault(&mut self, now: i64, out: &mut Vec<Outgoing>) {
        let healthy: Vec<usize> = self
            .chargers
            .iter()
            .copied()
            .filter(
                |i| matches!(&self.devices[*i].state, DevState::Charger(c) if c.fault.is_none()),
            )
            .collect();
        if healthy.is_empty() {
            return;
        }
        self.advance(now);
        let i = healthy[self.rng.gen_range(0..healthy.len())];
        let fault = FAULTS[self.rng.gen_range(0..FAULTS.len())];
        if let DevState::Charger(c) = &mut self.devices[i].state {
            c.meter.stop_charging(now);
            c.fault = Some(fault);
        }
        let m = json!({"code": fault.0, "active": true, "message": fault.1});
        self.envelope(i, "evt/fault", now, m, out);
        self.charger_message(i, now, out);
        let lasts = period_ms(self.rng.gen_range(120.0..360.0), self.cfg.rate);
        self.schedule.push(now + lasts, Task::FaultClear(i));
    }

    fn clear_fault(&mut self, i: usize, now: i64, out: &mut Vec<Outgoing>) {
        self.advance(now);
        let fault = match &mut self.devices[i].state {
            DevState::Charger(c) => c.fault.take(),
            _ => None,
        };
        if let Some((code, _)) = fault {
            self.envelope(
                i,
                "evt/fault",
                now,
                json!({"code": code, "active": false}),
                out,
            );
            self.charger_message(i, now, out);
        }
    }

    /// One broken message on a device's telemetry topic: either not JSON at all, or a string
    /// where the contract wants a number.
    fn malformed(&mut self, now: i64, out: &mut Vec<Outgoing>) {
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

impl ZoneState {
    fn new(area_m2: f64, from_activity: Option<f64>) -> Self {
        ZoneState {
            area_m2,
            volume_m3: volume_m3(area_m2),
            co2: OUTDOOR_CO2_PPM,
            t_c: 21.0,
            rh: 45.0,
            people: 0.0,
            from_activity,
        }
    }
}

/// The share of the busiest hour a resource of this kind is occupied, without bookings.
fn base_occupancy(kind: ResourceKind) -> f64 {
    match kind {
        ResourceKind::Desk => 0.6,
        ResourceKind::MeetingRoom => 0.4,
        ResourceKind::Office => 0.7,
        ResourceKind::EventRoom => 0.15,
        ResourceKind::EvBay => 0.0,
    }
}

/// How long people stay once they sit down, on average, s.
fn mean_stay_s(kind: ResourceKind) -> f64 {
    match kind {
        ResourceKind::Desk => 100.0 * 60.0,
        ResourceKind::MeetingRoom => 50.0 * 60.0,
        ResourceKind::Office => 150.0 * 60.0,
        ResourceKind::EventRoom => 120.0 * 60.0,
        ResourceKind::EvBay => 60.0,
    }
}

/// How many people are in a resource that just became occupied.
fn people_in(kind: ResourceKind, capacity: u32, rng: &mut StdRng) -> u32 {
    let cap = capacity.max(1);
    match kind {
        ResourceKind::Desk | ResourceKind::EvBay => 1,
        ResourceKind::EventRoom => rng.gen_range((cap * 3 / 10).max(1)..=cap),
        ResourceKind::MeetingRoom => rng.gen_range(1..=(cap * 8 / 10).max(1)),
        ResourceKind::Office => rng.gen_range(1..=cap),
    }
}

/// Presence for a resource with a booking (`active`): occupied from a few minutes after the
/// booking is first seen, except during breaks; without one, only a rare ghost (someone
/// sitting down for a few minutes without booking).
#[allow(clippy::too_many_arguments)]
fn follow_booking(
    pr: &mut Presence,
    active: bool,
    now: i64,
    first_bookings: bool,
    activity: f64,
    dt_s: f64,
    u: f64,
    rng: &mut StdRng,
) {
    if active {
        let b = pr.booked.get_or_insert_with(|| {
            let delay = if first_bookings {
                0
            } else {
                rng.gen_range(2 * 60_000..10 * 60_000)
            };
            Booked {
                arrive_ms: now + delay,
                next_break_ms: now + delay + rng.gen_range(60 * 60_000..120 * 60_000),
                break_until_ms: 0,
            }
        });
        if now >= b.next_break_ms {
            b.break_until_ms = b.next_break_ms + rng.gen_range(8 * 60_000..15 * 60_000);
            b.next_break_ms = b.break_until_ms + rng.gen_range(90 * 60_000..150 * 60_000);
        }
        pr.occupied = now >= b.arrive_ms && now >= b.break_until_ms;
        return;
    }
    pr.booked = None;
    if now < pr.ghost_until {
        pr.occupied = true;
        return;
    }
    let mean_gap_s = if activity > 0.0 {
        8.0 * 3_600.0
    } else {
        72.0 * 3_600.0
    };
    if u < 1.0 - (-dt_s / mean_gap_s).exp() {
        pr.ghost_until = now + rng.gen_range(3 * 60_000..10 * 60_000);
        pr.occupied = true;
    } else {
        pr.occupied = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::devices::site_devices;
    use crate::domain::network::{generate, DEFAULT_SEED};
    use crate::domain::telemetry::{decode, parse_topic, Decoded, Metric, TopicKind};

    fn cfg(faults: bool, rate: f64) -> SimConfig {
        SimConfig {
            seed: 11,
            rate,
            faults,
            boot_ms: 1_780_000_000_000,
        }
    }

    fn site(id: &str) -> SiteSpec {
        generate(DEFAULT_SEED)
            .into_iter()
            .find(|s| s.id == id)
            .unwrap()
    }

    /// Drives a site from `start` for `hours`, checking every message against the contract.
    fn drive(
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

    fn value(d: &Decoded, metric: Metric) -> Option<f64> {
        match d {
            Decoded::Readings { values, .. } => {
                values.iter().find(|(m, _)| *m == metric).map(|(_, v)| *v)
            }
            _ => None,
        }
    }

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
    fn co2_follows_the_day() {
        let spec = site("roma");
        let start = 1_781_647_200_000; // 17 June 2026 00:00 in Rome
        let mut sim = SiteSim::new(
            Place::from_site(&spec),
            site_devices(&spec),
            cfg(false, 1.0),
            start,
        );
        let all = drive(&mut sim, start, 24, None);
        let co2 = |from_h: i64, to_h: i64| -> f64 {
            let vals: Vec<f64> = all
                .iter()
                .filter_map(|(o, d)| {
                    let d = d.as_ref()?;
                    if !o.topic.contains("-open-1-env/") {
                        return None;
                    }
                    let Decoded::Readings { ts, .. } = d else {
                        return None;
                    };
                    let h = (ts - start) / 3_600_000;
                    (from_h <= h && h < to_h)
                        .then(|| value(d, Metric::Co2Ppm))
                        .flatten()
                })
                .collect();
            vals.iter().sum::<f64>() / vals.len().max(1) as f64
        };
        let night = co2(2, 5);
        let day = co2(10, 12);
        assert!(night < 470.0, "{night}");
        assert!(day > night + 100.0, "day {day} night {night}");
    }

    #[test]
    fn presence_follows_the_bookings() {
        let spec = site("roma");
        let start = 1_781_676_000_000; // 17 June 2026 08:00 in Rome
        let devices = site_devices(&spec);
        let mut sim = SiteSim::new(Place::from_site(&spec), devices, cfg(false, 1.0), start);
        let booked: HashSet<String> = ["roma-desk-001", "roma-room-01"].map(String::from).into();
        let bookings = Bookings { resources: booked };
        let all = drive(&mut sim, start, 3, Some(&bookings));
        let occupied_share = |device: &str| {
            let vals: Vec<f64> = all
                .iter()
                .filter(|(o, _)| o.topic.contains(&format!("/{device}/tele/presence")))
                .filter_map(|(_, d)| value(d.as_ref()?, Metric::Occupied))
                .collect();
            (
                vals.iter().sum::<f64>() / vals.len().max(1) as f64,
                vals.len(),
            )
        };
        let (desk, n) = occupied_share("roma-desk-001-pres");
        assert!(n >= 30 && desk > 0.75, "{desk} over {n}");
        let (room, _) = occupied_share("roma-room-01-pres");
        assert!(room > 0.75, "{room}");
        // Unbooked desks are nearly always free.
        let free: f64 = (2..40)
            .map(|n| occupied_share(&format!("roma-desk-{n:03}-pres")).0)
            .sum::<f64>()
            / 38.0;
        assert!(free < 0.1, "{free}");
    }

    #[test]
    fn polis_buildings_publish_their_six_devices() {
        let start = 1_781_686_800_000; // 17 June 2026 11:00 in Rome
        let specs = crate::telemetry::simulate::building_devices("polis-00001");
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
    fn the_gateway_keeps_the_newest_grant_list() {
        let spec = site("roma");
        let mut sim = SiteSim::new(
            Place::from_site(&spec),
            site_devices(&spec),
            cfg(false, 1.0),
            0,
        );
        let topic = "spazi/v1/roma/roma-gw/cmd/grants";
        let list = |version: i64| {
            let m = json!({
                "version": version,
                "valid_from": 1_000,
                "valid_until": 86_401_000,
                "grants": [{
                    "credential_sha256": crate::domain::access_control::credential_hash("123456"),
                    "from": 1_000,
                    "until": 3_601_000,
                    "doors": ["roma-door-main"],
                }],
            });
            json!({"v": 1, "ts": 1_000, "nonce": format!("g-{version}"), "exp": 86_401_000, "m": m})
                .to_string()
        };
        assert!(sim.grants().is_none());
        // A grant list is kept, not answered.
        assert!(sim.command(topic, list(5).as_bytes(), 2_000).is_none());
        assert_eq!(sim.grants().unwrap().version, 5);
        assert!(sim.command(topic, list(4).as_bytes(), 2_000).is_none());
        assert_eq!(sim.grants().unwrap().version, 5);
        sim.command(topic, list(6).as_bytes(), 2_000);
        let kept = sim.grants().unwrap();
        assert_eq!(kept.version, 6);
        assert_eq!(kept.decide("roma-door-main", "123456", 2_000), Ok(()));
        // An empty retained payload (the list cleared) changes nothing; nor does a list sent to
        // a device that is not the gateway.
        sim.command(topic, b"", 2_000);
        sim.command(
            "spazi/v1/roma/roma-door-main/cmd/grants",
            list(9).as_bytes(),
            2_000,
        );
        assert_eq!(sim.grants().unwrap().version, 6);
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
