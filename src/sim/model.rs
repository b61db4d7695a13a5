//! The physics and habits behind the simulator, as pure functions of time and state: how busy a
//! site is at each hour, what the building draws, how CO2, temperature and humidity follow the
//! people in a zone, when cars arrive at a charger and how much they take.

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, TimeZone, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::domain::opening_hours::WeeklyHours;
use crate::domain::solar;

/// CO2 of the outdoor air, ppm.
pub const OUTDOOR_CO2_PPM: f64 = 420.0;
/// What one seated person adds to the CO2 of one cubic metre of air per minute, in ppm·m³/min:
/// about 0.3 l/min exhaled, so roughly 15 ppm/min per person in a 21 m³ room.
pub const CO2_PPM_M3_PER_PERSON_MIN: f64 = 312.0;
/// Ceiling height used to turn floor area into air volume, m.
pub const CEILING_M: f64 = 3.0;
/// Air changes per hour with the ventilation running, and with only infiltration.
pub const ACH_VENTILATED: f64 = 2.0;
pub const ACH_IDLE: f64 = 0.4;

/// A stable 64-bit hash of a seed and a text key (FNV-1a, then a splitmix64 finaliser).
pub fn key_hash(seed: u64, key: &str) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325 ^ seed;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01B3);
    }
    mix(h)
}

/// splitmix64's finaliser.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A generator seeded from a seed and a key, the same for the same pair.
pub fn rng_for(seed: u64, key: &str) -> StdRng {
    StdRng::seed_from_u64(key_hash(seed, key))
}

/// The instant `ms` (epoch milliseconds) as a UTC date-time.
pub fn at_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// How full a coworking space is through an open day, as a share of its busiest hour, by local
/// minute of the day: people arrive from half past seven, fill it by ten, lunch around one,
/// leave from half past five.
pub fn occupancy_curve(minute_of_day: u32) -> f64 {
    const POINTS: [(u32, f64); 13] = [
        (0, 0.0),
        (450, 0.0),
        (540, 0.7),
        (600, 0.95),
        (720, 1.0),
        (780, 0.65),
        (840, 0.7),
        (870, 0.95),
        (990, 0.9),
        (1080, 0.55),
        (1170, 0.2),
        (1260, 0.0),
        (1440, 0.0),
    ];
    let m = minute_of_day.min(1440);
    for w in POINTS.windows(2) {
        let ((m0, v0), (m1, v1)) = (w[0], w[1]);
        if m <= m1 {
            let f = f64::from(m - m0) / f64::from(m1 - m0);
            return v0 + (v1 - v0) * f;
        }
    }
    0.0
}

/// How busy each day of the week is, compared with a mid-week day.
pub fn weekday_factor(day: Weekday) -> f64 {
    match day {
        Weekday::Mon => 0.9,
        Weekday::Tue | Weekday::Wed | Weekday::Thu => 1.0,
        Weekday::Fri => 0.75,
        Weekday::Sat => 0.35,
        Weekday::Sun => 0.2,
    }
}

/// When a place is open: its weekly hours on its wall clock, less its closed days.
#[derive(Debug, Clone)]
pub struct Calendar {
    pub tz: Tz,
    pub hours: WeeklyHours,
    pub closed: Vec<NaiveDate>,
}

impl Calendar {
    /// Whether the place is open at `at`.
    pub fn is_open(&self, at: DateTime<Utc>) -> bool {
        let local = at.with_timezone(&self.tz);
        if self.closed.contains(&local.date_naive()) {
            return false;
        }
        let minute = (local.hour() * 60 + local.minute()) as u16;
        self.hours
            .on(local.weekday())
            .iter()
            .any(|(o, c)| *o <= minute && minute < *c)
    }

    /// How busy the place is at `at`, 0 (closed or empty hours) to 1 (a busy mid-week morning).
    pub fn activity(&self, at: DateTime<Utc>) -> f64 {
        if !self.is_open(at) {
            return 0.0;
        }
        let local = at.with_timezone(&self.tz);
        occupancy_curve(local.hour() * 60 + local.minute()) * weekday_factor(local.weekday())
    }

    /// Whether heating, cooling and ventilation run: while people are expected, and during the
    /// hour before (pre-conditioning).
    pub fn hvac_on(&self, at: DateTime<Utc>) -> bool {
        self.activity(at) > 0.0 || self.activity(at + chrono::Duration::minutes(60)) > 0.0
    }

    /// The local date and minute of the day at `at`.
    pub fn local(&self, at: DateTime<Utc>) -> (NaiveDate, u32) {
        let l = at.with_timezone(&self.tz);
        (l.date_naive(), l.hour() * 60 + l.minute())
    }

    /// The UTC instant of local `minute` of `date`, skipping forward over a missing hour.
    pub fn instant(&self, date: NaiveDate, minute: u32) -> DateTime<Utc> {
        let mut t = date.and_time(NaiveTime::MIN) + chrono::Duration::minutes(i64::from(minute));
        for _ in 0..8 {
            if let Some(dt) = self.tz.from_local_datetime(&t).earliest() {
                return dt.with_timezone(&Utc);
            }
            t += chrono::Duration::minutes(30);
        }
        Utc.from_utc_datetime(&t)
    }
}

/// How much more the heating or cooling works at this time of year: most in late July, some in
/// late January, least in spring and autumn.
pub fn hvac_season_factor(day_of_year: u32) -> f64 {
    let s = (2.0 * std::f64::consts::PI * (f64::from(day_of_year) - 205.0) / 365.0).cos();
    1.0 + 0.35 * s.max(0.0) + 0.2 * (-s).max(0.0)
}

/// What a building draws from its wiring, before the chargers and the PV plant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadProfile {
    /// Always on: servers, network, fridges, emergency lighting, W.
    pub base_w: f64,
    /// Lighting, HVAC and plug loads of a full house, on top of the base, W.
    pub peak_w: f64,
}

impl LoadProfile {
    /// Typical densities for an office floor: 3.5 W/m² always on and 24 W/m² at the peak.
    pub fn for_area(area_m2: f64) -> Self {
        LoadProfile {
            base_w: 150.0 + 3.5 * area_m2,
            peak_w: 24.0 * area_m2,
        }
    }

    /// The load at a moment: `activity` 0–1, whether the HVAC runs, the seasonal HVAC factor
    /// and a smooth `noise` in [0, 1] (±6 %).
    pub fn load_w(&self, activity: f64, hvac_on: bool, season: f64, noise: f64) -> f64 {
        let hvac = if hvac_on { 0.3 * season } else { 0.0 };
        let people = 0.7 * activity.clamp(0.0, 1.0);
        (self.base_w + self.peak_w * (hvac + people)) * (1.0 + 0.12 * (noise - 0.5))
    }
}

/// The air volume of a zone of `area_m2`, m³.
pub fn volume_m3(area_m2: f64) -> f64 {
    area_m2.max(5.0) * CEILING_M
}

/// CO2 after `dt_s` seconds in a well-mixed zone of `volume_m3` with `people` in it and `ach`
/// air changes per hour: it rises by `people × 312 / volume` ppm per minute towards an
/// equilibrium and decays towards the outdoor level when the zone empties. Exact for constant
/// inputs over the step, so the step length does not matter.
pub fn co2_step(ppm: f64, people: f64, volume_m3: f64, ach: f64, dt_s: f64) -> f64 {
    let k = (ach / 60.0).max(1e-6); // per minute
    let generation = people.max(0.0) * CO2_PPM_M3_PER_PERSON_MIN / volume_m3.max(1.0);
    let equilibrium = OUTDOOR_CO2_PPM + generation / k;
    equilibrium + (ppm - equilibrium) * (-k * dt_s.max(0.0) / 60.0).exp()
}

/// Moves `value` towards `target` with a first-order lag of time constant `tau_s`.
pub fn relax(value: f64, target: f64, dt_s: f64, tau_s: f64) -> f64 {
    target + (value - target) * (-dt_s.max(0.0) / tau_s.max(1.0)).exp()
}

/// Where a zone's temperature and relative humidity head: the setpoint of the season while
/// the HVAC runs, a free-floating value when it does not, a little warmer and damper with
/// people, with a small daily swing peaking mid-afternoon.
pub fn climate_target(
    day_of_year: u32,
    local_minute: u32,
    hvac_on: bool,
    people_per_10_m2: f64,
) -> (f64, f64) {
    let summer = (2.0 * std::f64::consts::PI * (f64::from(day_of_year) - 205.0) / 365.0).cos();
    let (setpoint, free) = (22.5 + 2.0 * summer, 21.0 + 6.5 * summer);
    let base = if hvac_on { setpoint } else { free };
    let hour = f64::from(local_minute) / 60.0;
    let daily = 0.6 * (2.0 * std::f64::consts::PI * (hour - 9.0) / 24.0).sin();
    let crowd = people_per_10_m2.clamp(0.0, 3.0);
    let t = base + daily + 0.4 * crowd;
    let rh = 45.0 + 10.0 * summer - 2.0 * daily + 3.0 * crowd;
    (t, rh.clamp(20.0, 80.0))
}

/// Illuminance at the sensor, lux: lights on while the place is busy, plus daylight through
/// the windows (about 1 % of the outdoor light), a glimmer of emergency lighting otherwise.
pub fn lux(lights_on: bool, sun_elevation_deg: f64, clouds: f64) -> f64 {
    let daylight = solar::clear_sky_ghi(sun_elevation_deg) * clouds * 110.0 * 0.01;
    let lamps = if lights_on { 420.0 } else { 2.0 };
    lamps + daylight
}

/// One step of a resource's presence as a two-state chain: occupied for `mean_stay_s` on
/// average, and occupied a `target` share of the time in the long run. `u` is uniform in [0, 1).
pub fn presence_step(occupied: bool, target: f64, mean_stay_s: f64, dt_s: f64, u: f64) -> bool {
    let stay = mean_stay_s.max(1.0);
    if occupied {
        let leave = 1.0 - (-dt_s / stay).exp();
        u >= leave
    } else {
        let p = target.clamp(0.0, 0.95);
        let rate = p / (1.0 - p) / stay;
        let arrive = 1.0 - (-dt_s * rate).exp();
        u < arrive
    }
}

/// What a charger is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargerState {
    Available,
    Connected,
    Charging,
    Fault,
}

impl ChargerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ChargerState::Available => "available",
            ChargerState::Connected => "connected",
            ChargerState::Charging => "charging",
            ChargerState::Fault => "fault",
        }
    }
}

/// A car's visit to a charger: it plugs in, charges at a constant power until it has taken its
/// target energy (or the charge is stopped), then stays plugged in idle until it leaves.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub id: String,
    pub arrive_ms: i64,
    pub start_ms: i64,
    pub power_w: f64,
    pub target_wh: f64,
    pub depart_ms: i64,
    /// Charging stopped early (a fault), from this instant.
    pub stop_ms: Option<i64>,
}

impl Session {
    /// Energy delivered by `t`, Wh; never decreases in `t`.
    pub fn delivered_wh(&self, t: i64) -> f64 {
        let end = t.min(self.depart_ms).min(self.stop_ms.unwrap_or(i64::MAX));
        if end <= self.start_ms {
            return 0.0;
        }
        (self.power_w * (end - self.start_ms) as f64 / 3_600_000.0).min(self.target_wh)
    }

    /// Whether the car is plugged in at `t`.
    pub fn present(&self, t: i64) -> bool {
        self.arrive_ms <= t && t < self.depart_ms
    }

    /// Whether it is drawing power at `t`.
    pub fn charging(&self, t: i64) -> bool {
        self.present(t)
            && t >= self.start_ms
            && self.stop_ms.is_none_or(|s| t < s)
            && self.delivered_wh(t) < self.target_wh
    }
}

/// A charger's reading at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct ChargerReading {
    pub state: ChargerState,
    pub p_w: f64,
    /// The plugged-in session and its energy so far.
    pub session: Option<(String, f64)>,
}

/// What a charger reports at `t`, given the day's sessions and whether it is in fault.
pub fn charger_reading(sessions: &[Session], t: i64, fault: bool) -> ChargerReading {
    let current = sessions.iter().find(|s| s.present(t));
    let session = current.map(|s| (s.id.clone(), s.delivered_wh(t)));
    let (state, p_w) = match current {
        _ if fault => (ChargerState::Fault, 0.0),
        Some(s) if s.charging(t) => (ChargerState::Charging, s.power_w),
        Some(_) => (ChargerState::Connected, 0.0),
        None => (ChargerState::Available, 0.0),
    };
    ChargerReading {
        state,
        p_w,
        session,
    }
}

/// The visits a charger gets on local `date`: most working days a car in the morning (7:30 to
/// 10:30) that takes 6 to 30 kWh at 7 to 11 kW and leaves in the afternoon; sometimes a
/// second, shorter one after an early departure. `busy` scales how likely a visit is (the
/// weekday, whether the site is open).
pub fn plan_sessions(
    seed: u64,
    charger_id: &str,
    date: NaiveDate,
    cal: &Calendar,
    busy: f64,
) -> Vec<Session> {
    let mut rng = rng_for(seed, &format!("{charger_id}/{date}"));
    let mut out = Vec::new();
    if rng.gen::<f64>() >= (0.8 * busy).clamp(0.0, 0.95) {
        return out;
    }
    let tag = |rng: &mut StdRng, n: usize| {
        format!(
            "{}-{:06x}-{n}",
            date.format("%Y%m%d"),
            rng.gen::<u32>() & 0xFF_FFFF
        )
    };
    let arrive_min = rng.gen_range(450..=630);
    let stay_min = rng.gen_range(240..=540);
    let id = tag(&mut rng, 1);
    let target = rng.gen_range(6_000.0..30_000.0);
    let first = session(cal, date, arrive_min, stay_min, target, &mut rng, id);
    let depart_min = arrive_min + stay_min;
    out.push(first);
    if depart_min < 15 * 60 && rng.gen::<f64>() < 0.35 {
        let arrive = depart_min + rng.gen_range(15..=90);
        let stay = rng.gen_range(120..=240);
        let id = tag(&mut rng, 2);
        let target = rng.gen_range(4_000.0..20_000.0);
        out.push(session(cal, date, arrive, stay, target, &mut rng, id));
    }
    out
}

fn session(
    cal: &Calendar,
    date: NaiveDate,
    arrive_min: u32,
    stay_min: u32,
    target_wh: f64,
    rng: &mut StdRng,
    id: String,
) -> Session {
    let arrive_ms = cal.instant(date, arrive_min).timestamp_millis();
    let start_ms = arrive_ms + rng.gen_range(30_000..180_000);
    let power_w = (rng.gen_range(7_000.0..=11_000.0_f64) / 100.0).round() * 100.0;
    Session {
        id,
        arrive_ms,
        start_ms,
        power_w,
        target_wh: target_wh.round(),
        depart_ms: arrive_ms + i64::from(stay_min) * 60_000,
        stop_ms: None,
    }
}

/// A charger's cumulative energy meter over its planned days.
#[derive(Debug, Clone, PartialEq)]
pub struct ChargerMeter {
    /// The counter when the simulation began, Wh.
    pub initial_wh: f64,
    /// Energy of the days already replaced by a newer plan, Wh.
    banked_wh: f64,
    pub date: Option<NaiveDate>,
    pub sessions: Vec<Session>,
}

impl ChargerMeter {
    pub fn new(initial_wh: f64) -> Self {
        ChargerMeter {
            initial_wh,
            banked_wh: 0.0,
            date: None,
            sessions: Vec::new(),
        }
    }

    /// Replaces the plan with a new day's, at `t`: whatever the old one delivered is banked.
    pub fn replan(&mut self, date: NaiveDate, sessions: Vec<Session>, t: i64) {
        for s in &mut self.sessions {
            s.stop_ms = Some(s.stop_ms.map_or(t, |x| x.min(t)));
            self.banked_wh += s.delivered_wh(t);
        }
        self.date = Some(date);
        self.sessions = sessions;
    }

    /// Stops whatever is charging at `t` (a fault).
    pub fn stop_charging(&mut self, t: i64) {
        for s in &mut self.sessions {
            if s.charging(t) {
                s.stop_ms = Some(t);
            }
        }
    }

    /// The counter at `t`, Wh.
    pub fn counter_wh(&self, t: i64) -> f64 {
        self.initial_wh
            + self.banked_wh
            + self.sessions.iter().map(|s| s.delivered_wh(t)).sum::<f64>()
    }
}

/// Integrates a power signal into cumulative import and export counters with the trapezoid rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnergyCounter {
    pub import_wh: f64,
    pub export_wh: f64,
    last: Option<(i64, f64)>,
}

impl EnergyCounter {
    pub fn new(import_wh: f64, export_wh: f64) -> Self {
        EnergyCounter {
            import_wh,
            export_wh,
            last: None,
        }
    }

    /// Adds what flowed between the previous sample and `(t, p_w)`: positive power is import,
    /// negative is export, each side integrated on its own.
    pub fn sample(&mut self, t: i64, p_w: f64) {
        if let Some((t0, p0)) = self.last {
            if t > t0 {
                let h = (t - t0) as f64 / 3_600_000.0;
                let imp = (p0.max(0.0) + p_w.max(0.0)) / 2.0;
                let exp = ((-p0).max(0.0) + (-p_w).max(0.0)) / 2.0;
                self.import_wh += imp * h;
                self.export_wh += exp * h;
            }
        }
        if self.last.is_none_or(|(t0, _)| t >= t0) {
            self.last = Some((t, p_w));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Europe::Rome;

    fn calendar(hours: WeeklyHours) -> Calendar {
        Calendar {
            tz: Rome,
            hours,
            closed: vec![NaiveDate::from_ymd_opt(2026, 12, 8).unwrap()],
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn the_day_fills_in_the_morning_and_empties_at_night() {
        assert_eq!(occupancy_curve(0), 0.0);
        assert_eq!(occupancy_curve(6 * 60), 0.0);
        assert!(occupancy_curve(10 * 60 + 30) > 0.9);
        assert!(occupancy_curve(13 * 60) < occupancy_curve(11 * 60));
        assert!(occupancy_curve(15 * 60) > 0.9);
        assert_eq!(occupancy_curve(22 * 60), 0.0);
        assert_eq!(occupancy_curve(1440), 0.0);
        for m in 0..=1440 {
            assert!((0.0..=1.0).contains(&occupancy_curve(m)));
        }
    }

    #[test]
    fn activity_follows_the_opening_hours_on_the_local_clock() {
        let cal = calendar(WeeklyHours::weekdays_and_saturday(
            (8 * 60 + 30, 18 * 60 + 30),
            None,
        ));
        // Tuesday 1 December 2026: 11:00 in Rome is 10:00Z.
        assert!(cal.activity(utc("2026-12-01T10:00:00Z")) > 0.9);
        // 08:00 local: not open yet, but the HVAC pre-conditions.
        assert_eq!(cal.activity(utc("2026-12-01T07:00:00Z")), 0.0);
        assert!(cal.hvac_on(utc("2026-12-01T07:00:00Z")));
        assert!(!cal.hvac_on(utc("2026-12-01T02:00:00Z")));
        // Sunday, and the closed 8 December.
        assert_eq!(cal.activity(utc("2026-12-06T10:00:00Z")), 0.0);
        assert_eq!(cal.activity(utc("2026-12-08T10:00:00Z")), 0.0);
        // Summer time: 11:00 in Rome is 09:00Z.
        assert!(cal.is_open(utc("2026-07-01T09:00:00Z")));
        assert!(!cal.is_open(utc("2026-07-01T16:45:00Z")));
        let d = NaiveDate::from_ymd_opt(2026, 7, 1).unwrap();
        assert_eq!(cal.instant(d, 9 * 60), utc("2026-07-01T07:00:00Z"));
        // The missing hour of 29 March 2026 moves forward.
        let d = NaiveDate::from_ymd_opt(2026, 3, 29).unwrap();
        assert_eq!(cal.instant(d, 2 * 60 + 30), utc("2026-03-29T01:00:00Z"));
    }

    #[test]
    fn the_building_load_has_a_base_at_night_and_a_peak_by_day() {
        let small = LoadProfile::for_area(100.0);
        let large = LoadProfile::for_area(1500.0);
        let night = small.load_w(0.0, false, 1.0, 0.5);
        let day = small.load_w(1.0, true, 1.0, 0.5);
        assert!((400.0..700.0).contains(&night), "{night}");
        assert!(day > 4.0 * night && day < 5_000.0, "{day}");
        assert!(large.load_w(1.0, true, 1.0, 0.5) > 30_000.0);
        assert!(large.load_w(0.0, false, 1.0, 0.5) < 8_000.0);
        // The HVAC works harder in July than in April.
        assert!(hvac_season_factor(205) > 1.3 && hvac_season_factor(110) < 1.05);
        assert!(hvac_season_factor(20) > 1.15);
        // Noise stays within a few percent.
        let lo = small.load_w(0.5, true, 1.0, 0.0);
        let hi = small.load_w(0.5, true, 1.0, 1.0);
        assert!(hi > lo && hi / lo < 1.15);
    }

    #[test]
    fn co2_rises_with_people_and_decays_when_the_room_empties() {
        // One person in 21 m³ adds about 15 ppm in the first minute.
        let after = co2_step(OUTDOOR_CO2_PPM, 1.0, 20.8, ACH_VENTILATED, 60.0);
        assert!((after - OUTDOOR_CO2_PPM - 15.0).abs() < 1.0, "{after}");
        // A meeting room of 45 m³ with five people settles between 1,000 and 2,000 ppm.
        let mut c = OUTDOOR_CO2_PPM;
        for _ in 0..240 {
            c = co2_step(c, 5.0, 45.0, ACH_VENTILATED, 60.0);
        }
        assert!((1_000.0..2_000.0).contains(&c), "{c}");
        // The exact step does not depend on its length.
        let one = co2_step(800.0, 3.0, 60.0, 1.0, 600.0);
        let mut many = 800.0;
        for _ in 0..60 {
            many = co2_step(many, 3.0, 60.0, 1.0, 10.0);
        }
        assert!((one - many).abs() < 1e-6);
        // Empty, it falls back towards the outdoor level and never below.
        let mut c = 1_500.0;
        for _ in 0..24 * 60 {
            c = co2_step(c, 0.0, 45.0, ACH_IDLE, 60.0);
            assert!(c >= OUTDOOR_CO2_PPM);
        }
        assert!(c < OUTDOOR_CO2_PPM + 5.0, "{c}");
        // An open space of 320 m² with 30 people stays moderate.
        let eq = co2_step(OUTDOOR_CO2_PPM, 30.0, volume_m3(320.0), ACH_VENTILATED, 1e6);
        assert!((600.0..900.0).contains(&eq), "{eq}");
    }

    #[test]
    fn the_climate_is_plausible_all_year() {
        for doy in (1..=365).step_by(7) {
            for minute in (0..1440).step_by(30) {
                for hvac in [false, true] {
                    let (t, rh) = climate_target(doy, minute, hvac, 1.0);
                    assert!((13.0..32.0).contains(&t), "{doy} {minute} {t}");
                    assert!((20.0..=80.0).contains(&rh));
                }
            }
        }
        let (winter_on, _) = climate_target(20, 600, true, 0.0);
        let (winter_off, _) = climate_target(20, 600, false, 0.0);
        assert!(winter_on > winter_off + 3.0);
        assert!(
            (relax(20.0, 22.0, 3600.0, 3600.0) - (22.0 - 2.0 / std::f64::consts::E)).abs() < 1e-9
        );
        assert!(lux(true, 50.0, 1.0) > lux(true, -5.0, 1.0));
        assert!(lux(false, -5.0, 1.0) < 5.0);
    }

    #[test]
    fn presence_settles_on_its_target_share() {
        let mut rng = StdRng::seed_from_u64(1);
        for target in [0.1, 0.5, 0.8] {
            let mut occupied = false;
            let mut on = 0;
            let steps = 200_000;
            for _ in 0..steps {
                occupied = presence_step(occupied, target, 3_600.0, 60.0, rng.gen());
                on += usize::from(occupied);
            }
            let share = on as f64 / steps as f64;
            assert!((share - target).abs() < 0.05, "{target}: {share}");
        }
        // Nobody arrives at a zero target; someone seated stays for a while.
        assert!(!presence_step(false, 0.0, 3_600.0, 60.0, 0.0));
        assert!(presence_step(true, 0.0, 3_600.0, 60.0, 0.5));
    }

    #[test]
    fn charger_sessions_charge_until_their_target_then_idle() {
        let cal = calendar(WeeklyHours::every_day(0, 1440));
        let mut days = 0;
        let mut with_session = 0;
        for d in 0..200 {
            let date = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + chrono::Duration::days(d);
            let plan = plan_sessions(7, "roma-ev-01-charger", date, &cal, 1.0);
            assert_eq!(
                plan,
                plan_sessions(7, "roma-ev-01-charger", date, &cal, 1.0)
            );
            days += 1;
            with_session += usize::from(!plan.is_empty());
            for pair in plan.windows(2) {
                assert!(pair[0].depart_ms < pair[1].arrive_ms);
            }
            for s in &plan {
                assert!((7_000.0..=11_000.0).contains(&s.power_w));
                let local = at_ms(s.arrive_ms).with_timezone(&Rome);
                assert!((7..=17).contains(&local.hour()), "{local}");
                assert!(s.id.len() <= 64);
                let mut last = 0.0;
                let mut charged = false;
                for t in (s.arrive_ms - 60_000..s.depart_ms + 60_000).step_by(30_000) {
                    let r = charger_reading(&plan, t, false);
                    let e = s.delivered_wh(t);
                    assert!(e >= last && e <= s.target_wh);
                    last = e;
                    if s.charging(t) {
                        charged = true;
                        assert_eq!(r.state, ChargerState::Charging);
                        assert_eq!(r.p_w, s.power_w);
                    }
                    if !s.present(t) && plan.iter().all(|o| !o.present(t)) {
                        assert_eq!(r.state, ChargerState::Available);
                        assert_eq!(r.session, None);
                    }
                }
                assert!(charged);
                assert!((last - s.target_wh).abs() < 1.0 || last > 0.0);
            }
        }
        let share = with_session as f64 / days as f64;
        assert!((0.6..0.95).contains(&share), "{share}");
        // A quiet day is mostly empty.
        let quiet = (0..200)
            .filter(|d| {
                let date =
                    NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + chrono::Duration::days(*d);
                !plan_sessions(7, "x", date, &cal, 0.1).is_empty()
            })
            .count();
        assert!(quiet < 40, "{quiet}");
    }

    #[test]
    fn a_fault_stops_the_charge_and_the_meter_never_goes_back() {
        let cal = calendar(WeeklyHours::every_day(0, 1440));
        let date = (0..50)
            .map(|d| NaiveDate::from_ymd_opt(2026, 5, 1).unwrap() + chrono::Duration::days(d))
            .find(|d| !plan_sessions(3, "c", *d, &cal, 1.0).is_empty())
            .unwrap();
        let plan = plan_sessions(3, "c", date, &cal, 1.0);
        let mut meter = ChargerMeter::new(1_000.0);
        let t0 = cal.instant(date, 0).timestamp_millis();
        meter.replan(date, plan.clone(), t0);
        let s = &plan[0];
        let mid = s.start_ms + 600_000;
        let before = meter.counter_wh(mid);
        meter.stop_charging(mid);
        assert_eq!(meter.counter_wh(mid + 3_600_000), before);
        assert_eq!(
            charger_reading(&meter.sessions, mid + 60_000, false).state,
            ChargerState::Connected
        );
        assert_eq!(
            charger_reading(&meter.sessions, mid + 60_000, true).state,
            ChargerState::Fault
        );
        let mut last = 0.0;
        for t in (t0..t0 + 86_400_000).step_by(60_000) {
            let c = meter.counter_wh(t);
            assert!(c >= last);
            last = c;
        }
        let next = date + chrono::Duration::days(1);
        let end = t0 + 86_400_000;
        meter.replan(next, plan_sessions(3, "c", next, &cal, 1.0), end);
        assert!((meter.counter_wh(end) - last).abs() < 1e-9);
    }

    #[test]
    fn energy_counters_integrate_both_directions() {
        let mut c = EnergyCounter::new(100.0, 0.0);
        c.sample(0, 1_000.0);
        c.sample(3_600_000, 1_000.0);
        assert!((c.import_wh - 1_100.0).abs() < 1e-9);
        c.sample(7_200_000, -1_000.0);
        // Through zero: half an hour at an average of 500 W each way, by the trapezoid.
        assert!((c.import_wh - 1_600.0).abs() < 1e-9);
        assert!((c.export_wh - 500.0).abs() < 1e-9);
        // A sample from the past adds nothing.
        c.sample(0, 5_000.0);
        assert!((c.import_wh - 1_600.0).abs() < 1e-9);
    }
}
