//! The air of each zone and the environment sensors that report it: CO2 from the people in the
//! zone and its ventilation, temperature and humidity following the season, the hour and the
//! crowd, light from the sun and the lamps; and `cmd/setpoint`.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde_json::{json, Map, Value};

use super::model::{
    self, at_ms, climate_target, co2_step, relax, volume_m3, Calendar, ACH_IDLE, ACH_VENTILATED,
    OUTDOOR_CO2_PPM,
};
use super::site::{num, one_of, round1, DevState, Outgoing, SiteSim};
use crate::domain::solar;

#[derive(Debug)]
pub(super) struct ZoneState {
    pub(super) area_m2: f64,
    pub(super) volume_m3: f64,
    pub(super) co2: f64,
    pub(super) t_c: f64,
    pub(super) rh: f64,
    pub(super) people: f64,
    /// For a zone without presence sensors: people at the busiest hour.
    pub(super) from_activity: Option<f64>,
}

impl ZoneState {
    pub(super) fn new(area_m2: f64, from_activity: Option<f64>) -> Self {
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

/// Checks what a `cmd/setpoint` asks: a mode, a temperature and the lights.
pub(super) fn check_setpoint(m: &Map<String, Value>) -> Result<(), &'static str> {
    one_of(m, "mode", &["comfort", "eco", "precondition"])?;
    num(m, "t_c", 5.0, 35.0)?;
    one_of(m, "lights", &["on", "off"])?;
    Ok(())
}

impl SiteSim {
    pub(super) fn env_message(&mut self, i: usize, now: i64, out: &mut Vec<Outgoing>) {
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

    /// The air of each zone follows its people: CO2 from breathing and ventilation, temperature
    /// and humidity towards what the heating or cooling and the crowd make of them.
    pub(super) fn air_follows(
        &mut self,
        at: DateTime<Utc>,
        cal: &Calendar,
        activity: f64,
        first: bool,
        dt_s: f64,
        people: &[f64],
    ) {
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
}

#[cfg(test)]
mod tests {
    use super::super::site::testing::{cfg, drive, site, value};
    use super::super::site::{Place, SiteSim};
    use crate::domain::devices::site_devices;
    use crate::domain::telemetry::{Decoded, Metric};

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
}
