//! EV chargers: each day's sessions planned per charger (cars arriving, charging at up to the
//! limit the service sets, leaving), occasional faults, and `cmd/charge_limit`.

use chrono::Datelike;
use rand::Rng;
use serde_json::{json, Map, Value};

use super::model::{self, at_ms, charger_reading, plan_sessions, ChargerMeter};
use super::schedule::period_ms;
use super::site::{num, round1, DevState, Outgoing, SiteSim, Task};

#[derive(Debug)]
pub(super) struct Charger {
    pub(super) meter: ChargerMeter,
    pub(super) fault: Option<(&'static str, &'static str)>,
    pub(super) limit_a: u32,
    pub(super) zeroed: bool,
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

/// The limit a `cmd/charge_limit` sets, A.
pub(super) fn charge_limit(m: &Map<String, Value>) -> Result<f64, &'static str> {
    num(m, "limit_a", 0.0, 1_000.0)
}

impl SiteSim {
    /// Makes sure charger `i` has the plan of the local day of `now`.
    pub(super) fn plan_charger(&mut self, i: usize, now: i64) {
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

    pub(super) fn charger_message(&mut self, i: usize, now: i64, out: &mut Vec<Outgoing>) {
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

    pub(super) fn raise_fault(&mut self, now: i64, out: &mut Vec<Outgoing>) {
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

    pub(super) fn clear_fault(&mut self, i: usize, now: i64, out: &mut Vec<Outgoing>) {
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
}
