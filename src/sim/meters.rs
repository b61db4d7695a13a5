//! The PV and grid meters: the plant's production from the sun over the site and passing
//! clouds, the building's draw by size, hour and opening hours plus the chargers', both
//! integrated into cumulative import and export counters.

use chrono::Datelike;
use serde_json::json;

use super::model::{self, at_ms, charger_reading};
use super::site::{round1, DevState, Outgoing, SiteSim};
use crate::domain::solar;

/// The inverter's own draw while the plant does not produce, W (counted in the PV meter's
/// `e_imp_wh`; below the resolution of its power reading).
pub const PV_STANDBY_W: f64 = 3.0;
/// Energy counters report this often, s.
pub const ENERGY_INTERVAL_S: f64 = 60.0;

impl SiteSim {
    /// Brings the plant, the building and the chargers to `now` and integrates the meters.
    pub(super) fn advance(&mut self, now: i64) {
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

    /// A PV or grid meter's `tele/power`: what leaves the PV meter (production, negative) or
    /// what the site draws from the grid.
    pub(super) fn power_message(&mut self, i: usize, now: i64, out: &mut Vec<Outgoing>) {
        self.advance(now);
        let p = match self.devices[i].state {
            // Production leaves the PV meter: export, negative.
            DevState::Pv => -self.pv_w,
            _ => self.grid_w,
        };
        self.envelope(i, "tele/power", now, json!({"p_w": round1(p)}), out);
    }

    /// A meter's (or a charger's) `tele/energy`: its cumulative counters, in the meter epoch that
    /// started at the simulator's boot.
    pub(super) fn energy_message(&mut self, i: usize, now: i64, out: &mut Vec<Outgoing>) {
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
    }
}
