//! Door readers and the gateway: doors opening as people come and go, `cmd/unlock` and
//! `cmd/deny` carried out the way the contract asks (never late, never twice), and the grant
//! list the service keeps retained on the gateway, of which the newest version is kept.

use rand::Rng;
use serde_json::{json, Map, Value};

use super::model::at_ms;
use super::schedule::{exponential_ms, period_ms};
use super::site::{int, DevState, Outgoing, SiteSim, Task, BAD_REQUEST};
use crate::domain::access_control::{CommandRefusal, DoorLock, GrantList, UnlockCommand};
use crate::domain::command::Received;

/// Carries out a `cmd/unlock` on a door's lock: never at or after its `exp`, each nonce once.
pub(super) fn unlock(
    lock: &mut DoorLock,
    cmd: &Received<'_>,
    now: i64,
) -> Result<(), &'static str> {
    let unlock = UnlockCommand {
        nonce: cmd.nonce.to_owned(),
        exp: cmd.exp,
        badge_seq: int(cmd.m, "badge_seq", 0, i64::MAX)?,
        duration_s: int(cmd.m, "duration_s", 1, 3_600)?,
    };
    lock.unlock(&unlock, now).map_err(CommandRefusal::as_str)
}

/// Checks what a `cmd/deny` says: the scan it answers and why.
pub(super) fn check_deny(m: &Map<String, Value>) -> Result<(), &'static str> {
    int(m, "badge_seq", 0, i64::MAX)?;
    let reason = m.get("reason").and_then(Value::as_str).ok_or(BAD_REQUEST)?;
    if !(1..=64).contains(&reason.len()) {
        return Err(BAD_REQUEST);
    }
    Ok(())
}

impl SiteSim {
    pub(super) fn door_next(&mut self, i: usize, now: i64, out: &mut Vec<Outgoing>) {
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

    /// The door closes behind whoever went through.
    pub(super) fn door_close(&mut self, i: usize, now: i64, out: &mut Vec<Outgoing>) {
        if let DevState::Door { open, .. } = &mut self.devices[i].state {
            *open = false;
        }
        self.envelope(i, "evt/door", now, json!({"open": false}), out);
    }

    /// Keeps a grant list sent to the gateway, unless an older version than the one kept.
    pub(super) fn keep_grants(&mut self, i: usize, body: &Value) {
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
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::site::testing::{cfg, site};
    use super::super::site::{Place, SiteSim};
    use crate::domain::devices::site_devices;

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
}
