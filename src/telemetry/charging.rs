//! Smart charging: every pass (a minute by default) each site's online chargers get a current
//! limit on `cmd/charge_limit`, worked out by `domain::charging::allocate` from the live PV and
//! grid power, the cars plugged in, and the EV bookings with their targets, modes and
//! departures. Grid import never exceeds the site's contracted power. A car at a bay without a
//! booking charges from the PV surplus only. A charger never heard from gets nothing.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rumqttc::{AsyncClient, QoS};
use serde_json::json;

use crate::db::energy::{ev_bookings_now, EvPlanRow};
use crate::db::models::Booking;
use crate::db::network::{Directory, SiteEntry};
use crate::db::Db;
use crate::domain::charging::{allocate_every, expected_building_w, Charger, Demand, SiteNow};
use crate::domain::command::Command;
use crate::domain::telemetry::Metric;
use crate::domain::{ChargeMode, DeviceClass, DeviceStatus};
use crate::fleet::{DeviceState, Fleet};
use crate::metrics::Metrics;

/// `charger_state` values of a car plugged in: `connected`, `charging`.
const PLUGGED: [f64; 2] = [1.0, 2.0];

#[derive(Clone)]
pub struct SmartCharging {
    pub db: Db,
    pub fleet: Arc<Fleet>,
    pub directory: Arc<dyn Fn() -> Arc<Directory> + Send + Sync>,
    pub client: AsyncClient,
    pub metrics: Arc<Metrics>,
    pub every: Duration,
}

/// A live power reading no older than three report intervals, W.
fn fresh_power(d: &DeviceState, now_ms: i64) -> Option<f64> {
    let limit = i64::from(d.report_interval_s) * 3_000;
    d.value(Metric::PW)
        .filter(|l| now_ms - l.ts <= limit)
        .map(|l| l.value)
}

/// The site's state now, from its meters: building load is grid import + PV − the chargers'
/// draw; without a live grid reading, the building's expected load stands in.
pub fn site_now(site: &SiteEntry, devices: &[DeviceState], now_ms: i64) -> SiteNow {
    let pv: f64 = devices
        .iter()
        .filter(|d| d.class == DeviceClass::PvMeter)
        .filter_map(|d| fresh_power(d, now_ms))
        .map(|w| w.max(0.0))
        .sum();
    let chargers: f64 = devices
        .iter()
        .filter(|d| d.class == DeviceClass::EvCharger)
        .filter_map(|d| fresh_power(d, now_ms))
        .map(|w| w.max(0.0))
        .sum();
    let grid = devices
        .iter()
        .filter(|d| d.class == DeviceClass::GridMeter && d.zone_id.is_none())
        .find_map(|d| fresh_power(d, now_ms));
    let building = match grid {
        Some(g) => (g + pv - chargers).max(0.0),
        None => expected_building_w(f64::from(site.site.area_m2), true),
    };
    SiteNow {
        limit_w: f64::from(site.site.contracted_power_w),
        building_w: building,
        pv_w: pv,
    }
}

/// What a plugged-in charger asks for: its bay's booking (mode, what is left of its target,
/// departure), or the PV surplus alone without one.
pub fn demand(
    charger: &DeviceState,
    booking: Option<&(Booking, Option<EvPlanRow>)>,
    now_ms: i64,
) -> Demand {
    let delivered = charger
        .value(Metric::ESessionWh)
        .map_or(0.0, |l| l.value.max(0.0));
    match booking {
        Some((b, plan)) => Demand {
            charger: Charger::ac22(),
            mode: plan
                .as_ref()
                .and_then(|p| p.mode.parse().ok())
                .unwrap_or(ChargeMode::SolarFirst),
            remaining_wh: plan
                .as_ref()
                .and_then(|p| p.target_wh)
                .map(|t| (t - delivered).max(0.0)),
            departure_ms: crate::domain::epoch::naive_ms(b.ends_at),
        },
        None => Demand {
            charger: Charger::ac22(),
            mode: ChargeMode::SolarOnly,
            remaining_wh: None,
            departure_ms: now_ms + 3_600_000,
        },
    }
}

impl SmartCharging {
    pub async fn run(self) {
        loop {
            let outcome = self.pass().await.map(|_| ());
            self.metrics.jobs.report("charging", outcome);
            tokio::time::sleep(self.every).await;
        }
    }

    /// One pass over every site with chargers; returns the limits sent, by charger.
    pub async fn pass(&self) -> Result<HashMap<String, f64>, crate::db::DbError> {
        let now = Utc::now();
        let now_ms = now.timestamp_millis();
        let at = now.naive_utc();
        let booked = self.db.run(move |c| ev_bookings_now(c, at)).await?;
        let by_bay: HashMap<&str, &(Booking, Option<EvPlanRow>)> = booked
            .iter()
            .map(|entry| (entry.0.resource_id.as_str(), entry))
            .collect();
        let mut by_site: HashMap<String, Vec<DeviceState>> = HashMap::new();
        for d in self.fleet.all() {
            if matches!(
                d.class,
                DeviceClass::PvMeter | DeviceClass::GridMeter | DeviceClass::EvCharger
            ) {
                by_site.entry(d.site_id.clone()).or_default().push(d);
            }
        }
        let dir = (self.directory)();
        let step = self.every.as_millis().max(1) as i64;
        let mut sent = HashMap::new();
        for (site_id, devices) in by_site {
            let Some(site) = dir.get(&site_id) else {
                continue;
            };
            let chargers: Vec<&DeviceState> = devices
                .iter()
                .filter(|d| d.class == DeviceClass::EvCharger && d.status == DeviceStatus::Online)
                .collect();
            if chargers.is_empty() {
                continue;
            }
            let plugged: Vec<&DeviceState> = chargers
                .iter()
                .copied()
                .filter(|d| {
                    d.value(Metric::ChargerState)
                        .is_some_and(|l| PLUGGED.contains(&l.value))
                })
                .collect();
            let demands: Vec<Demand> = plugged
                .iter()
                .map(|d| {
                    let booking = d
                        .resource_id
                        .as_deref()
                        .and_then(|r| by_bay.get(r).copied());
                    demand(d, booking, now_ms)
                })
                .collect();
            let limits = allocate_every(&site_now(site, &devices, now_ms), now_ms, step, &demands);
            for charger in chargers {
                let limit = plugged
                    .iter()
                    .position(|p| p.num == charger.num)
                    .and_then(|i| limits.get(i).copied())
                    .unwrap_or(0.0);
                let m = json!({"limit_a": limit});
                let ttl_ms = step + 30_000;
                let cmd = Command::new(&site_id, &charger.id, "charge_limit", now_ms, ttl_ms, m);
                match self
                    .client
                    .publish(cmd.topic.as_str(), QoS::AtLeastOnce, false, cmd.payload())
                    .await
                {
                    Ok(()) => {
                        self.metrics
                            .access
                            .charge_limits
                            .fetch_add(1, Ordering::Relaxed);
                        sent.insert(charger.id.clone(), limit);
                    }
                    Err(e) => {
                        tracing::warn!(charger = %charger.id, error = %e, "charge limit not sent")
                    }
                }
            }
        }
        Ok(sent)
    }
}
