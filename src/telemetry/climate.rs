//! The building follows the bookings: every pass, each zone's mode is worked out from its
//! bookings and its presence sensors (`domain::access_control::zone_mode`), and a zone whose mode
//! changed gets one `cmd/setpoint` on its environment controller, logged in `climate_commands`.
//! A zone already in the right mode is left alone, across restarts too.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rumqttc::{AsyncClient, QoS};
use serde_json::json;

use crate::db::access::{self, ClimateRow};
use crate::db::network::Directory;
use crate::db::{bookings, Db};
use crate::domain::access_control::{setpoint, zone_mode, PRECONDITION_LEAD};
use crate::domain::command::Command;
use crate::domain::presence;
use crate::domain::telemetry::Metric;
use crate::domain::{ClimateMode, DeviceClass, DeviceStatus};
use crate::fleet::Fleet;
use crate::metrics::Metrics;

/// A setpoint command not carried out within this is stale.
const COMMAND_TTL: chrono::Duration = chrono::Duration::minutes(15);

#[derive(Clone)]
pub struct Climate {
    pub db: Db,
    pub fleet: Arc<Fleet>,
    pub directory: Arc<dyn Fn() -> Arc<Directory> + Send + Sync>,
    pub client: AsyncClient,
    pub metrics: Arc<Metrics>,
    pub every: Duration,
    pub comfort_c: f64,
    pub eco_c: f64,
}

impl Climate {
    pub async fn run(self) {
        let since = Utc::now().naive_utc() - chrono::Duration::days(30);
        let mut last: HashMap<String, ClimateMode> =
            match self.db.run(move |c| access::latest_climate(c, since)).await {
                Ok(rows) => rows
                    .into_iter()
                    .filter_map(|r| r.mode.parse().ok().map(|m| (r.zone_id, m)))
                    .collect(),
                Err(e) => {
                    self.metrics
                        .jobs
                        .failed("climate", &format!("history not loaded: {e}"));
                    HashMap::new()
                }
            };
        loop {
            let outcome = self.pass(&mut last).await;
            self.metrics.jobs.report("climate", outcome);
            tokio::time::sleep(self.every).await;
        }
    }

    async fn pass(
        &self,
        last: &mut HashMap<String, ClimateMode>,
    ) -> Result<(), crate::db::DbError> {
        let now = Utc::now();
        let (from, to) = (now.naive_utc(), (now + PRECONDITION_LEAD).naive_utc());
        let booked = self
            .db
            .run(move |c| bookings::active_between(c, from, to + chrono::Duration::seconds(1)))
            .await?;
        let dir = (self.directory)();
        let mut by_zone: HashMap<&str, Vec<_>> = HashMap::new();
        for (resource, _, start, end) in &booked {
            if let Some(r) = dir.resource(resource) {
                by_zone
                    .entry(r.zone.id.as_str())
                    .or_default()
                    .push((start.and_utc(), end.and_utc()));
            }
        }
        let now_ms = now.timestamp_millis();
        let mut present: HashMap<String, bool> = HashMap::new();
        let mut controller: BTreeMap<String, String> = BTreeMap::new();
        for d in self.fleet.all() {
            let Some(zone) = d.zone_id.clone().or_else(|| {
                d.resource_id
                    .as_deref()
                    .and_then(|r| dir.resource(r))
                    .map(|r| r.zone.id.clone())
            }) else {
                continue;
            };
            match d.class {
                DeviceClass::PresenceSensor if d.status != DeviceStatus::Offline => {
                    let latest = d.value(Metric::Occupied).map(|l| (l.value, l.ts));
                    let interval = d.report_interval_s;
                    if presence::occupied_now(d.status, interval, latest, now_ms) == Some(true) {
                        present.insert(zone, true);
                    }
                }
                DeviceClass::EnvSensor => {
                    let e = controller.entry(zone).or_insert_with(|| d.id.clone());
                    if d.id < *e {
                        *e = d.id.clone();
                    }
                }
                _ => {}
            }
        }
        let mut rows = Vec::new();
        for site in &dir.sites {
            let mut zones: Vec<&str> = site.resources.iter().map(|r| r.zone.id.as_str()).collect();
            zones.sort_unstable();
            zones.dedup();
            for zone in zones {
                let mode = zone_mode(
                    now,
                    by_zone.get(zone).cloned().unwrap_or_default(),
                    present.get(zone).copied().unwrap_or(false),
                );
                if last.get(zone) == Some(&mode) {
                    continue;
                }
                let Some(device) = controller.get(zone) else {
                    continue;
                };
                let (t_c, lights) = setpoint(mode, self.comfort_c, self.eco_c);
                let exp = now + COMMAND_TTL;
                let m = json!({"mode": mode.as_str(), "t_c": t_c, "lights": if lights { "on" } else { "off" }});
                let ttl_ms = COMMAND_TTL.num_milliseconds();
                let cmd = Command::new(&site.site.id, device, "setpoint", now_ms, ttl_ms, m);
                let nonce = cmd.nonce.clone();
                if let Err(e) = self
                    .client
                    .publish(cmd.topic.as_str(), QoS::AtLeastOnce, false, cmd.payload())
                    .await
                {
                    tracing::warn!(zone, error = %e, "setpoint not sent");
                    continue;
                }
                last.insert(zone.to_owned(), mode);
                self.metrics
                    .access
                    .climate_commands
                    .fetch_add(1, Ordering::Relaxed);
                rows.push(ClimateRow {
                    nonce,
                    site_id: site.site.id.clone(),
                    zone_id: zone.to_owned(),
                    device_id: device.clone(),
                    mode: mode.as_str().to_owned(),
                    t_c,
                    lights,
                    issued_at: now.naive_utc(),
                    expires_at: exp.naive_utc(),
                });
            }
        }
        if !rows.is_empty() {
            self.db.run(move |c| access::log_climate(c, &rows)).await?;
        }
        Ok(())
    }
}
