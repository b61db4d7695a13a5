//! Device health and alarms: the fleet is swept for silent devices, and every device whose
//! state changed is checked against the alarm rules. Alarms are raised and cleared here and
//! acknowledged by people through the API.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{NaiveDateTime, Utc};

use crate::config::TelemetryConfig;
use crate::db::alarms::{self, AlarmRow};
use crate::db::telemetry::{store_statuses, StatusChange};
use crate::db::Db;
use crate::domain::telemetry::{Metric, CHARGER_FAULT};
use crate::domain::{AlarmKind, DeviceClass, DeviceStatus};
use crate::fleet::{DeviceState, Fleet};
use crate::metrics::Metrics;

/// The limits alarms are raised at.
#[derive(Debug, Clone)]
pub struct Thresholds {
    pub co2_limit_ppm: f64,
    pub temp_min_c: f64,
    pub temp_max_c: f64,
    pub door_held_ms: i64,
}

impl From<&TelemetryConfig> for Thresholds {
    fn from(c: &TelemetryConfig) -> Self {
        Thresholds {
            co2_limit_ppm: c.co2_limit_ppm,
            temp_min_c: c.temp_min_c,
            temp_max_c: c.temp_max_c,
            door_held_ms: c.door_held_secs as i64 * 1000,
        }
    }
}

/// Below the limit by this share before a CO2 alarm clears, so a reading hovering at the
/// limit does not raise and clear in turn.
const CO2_HYSTERESIS: f64 = 0.05;
const TEMP_HYSTERESIS_C: f64 = 0.5;
/// How often device health (status, last seen) is written back; the API reads the fleet, so this
/// only serves a restart.
const SAVE_EVERY: Duration = Duration::from_secs(30);
/// How long changed devices gather before they are judged.
const CHANGE_DEBOUNCE: Duration = Duration::from_millis(250);

pub struct Watch {
    db: Db,
    fleet: Arc<Fleet>,
    metrics: Arc<Metrics>,
    limits: Thresholds,
    /// Live alarms by (device, kind), as stored.
    live: HashSet<(String, AlarmKind)>,
    /// Doors seen open, since when (epoch ms).
    open_doors: HashMap<i32, i64>,
    booked_zones: HashSet<String>,
    booked_loaded: Option<Instant>,
}

/// A decision about one alarm.
enum Verdict {
    Raise {
        kind: AlarmKind,
        severity: &'static str,
        message: String,
        value: Option<f64>,
    },
    Clear(AlarmKind),
}

impl Watch {
    pub async fn start(
        db: Db,
        fleet: Arc<Fleet>,
        metrics: Arc<Metrics>,
        limits: Thresholds,
    ) -> Watch {
        let live = match db.run(alarms::live).await {
            Ok(rows) => rows
                .into_iter()
                .filter_map(|a| Some((a.device_id, a.kind.parse().ok()?)))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "could not load live alarms");
                HashSet::new()
            }
        };
        Watch {
            db,
            fleet,
            metrics,
            limits,
            live,
            open_doors: HashMap::new(),
            booked_zones: HashSet::new(),
            booked_loaded: None,
        }
    }

    /// Sweeps the fleet every `every`; between sweeps, judges changed devices as they change,
    /// a few times a second at most.
    pub async fn run(mut self, every: Duration) {
        let mut last_save = Instant::now();
        let mut next_sweep = tokio::time::Instant::now() + every;
        loop {
            let sweep = tokio::select! {
                _ = self.fleet.changed() => false,
                _ = tokio::time::sleep_until(next_sweep) => true,
            };
            if sweep {
                next_sweep = tokio::time::Instant::now() + every;
            } else {
                // Let a burst of changes gather into one round.
                tokio::time::sleep(CHANGE_DEBOUNCE.min(every)).await;
            }
            self.tick(sweep).await;
            if last_save.elapsed() >= SAVE_EVERY {
                self.save_health().await;
                last_save = Instant::now();
            }
        }
    }

    /// One round: silent devices (when `sweep`), changed devices, doors held open.
    pub async fn tick(&mut self, sweep: bool) {
        let now = crate::domain::epoch::now_ms();
        if sweep {
            self.fleet.sweep_silent(now);
        }
        if self
            .booked_loaded
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        {
            let at = Utc::now().naive_utc();
            match self.db.run(move |c| alarms::booked_zones(c, at)).await {
                Ok(zones) => {
                    self.booked_zones = zones.into_iter().collect();
                    self.booked_loaded = Some(Instant::now());
                }
                Err(e) => tracing::warn!(error = %e, "could not load booked zones"),
            }
        }
        let touched = self.fleet.take_touched();
        let mut verdicts = Vec::new();
        for num in touched
            .iter()
            .copied()
            .chain(self.open_doors.keys().copied().collect::<Vec<_>>())
        {
            let Some(d) = self.fleet.get_num(num) else {
                continue;
            };
            for v in self.judge(&d, now) {
                verdicts.push((d.clone(), v));
            }
        }
        for (device, verdict) in verdicts {
            self.apply(&device, verdict).await;
        }
    }

    fn zone_occupied(&self, d: &DeviceState) -> bool {
        let Some(zone) = &d.zone_id else {
            return false;
        };
        if self.booked_zones.contains(zone) {
            return true;
        }
        self.fleet.site(&d.site_id).iter().any(|p| {
            p.zone_id.as_ref() == Some(zone)
                && p.class == DeviceClass::PresenceSensor
                && p.value(Metric::Occupied).is_some_and(|l| l.value >= 1.0)
        })
    }

    fn judge(&mut self, d: &DeviceState, now: i64) -> Vec<Verdict> {
        let mut out = Vec::new();
        match d.status {
            DeviceStatus::Offline => out.push(Verdict::Raise {
                kind: AlarmKind::DeviceOffline,
                severity: if d.class == DeviceClass::Gateway {
                    "critical"
                } else {
                    "warning"
                },
                message: format!("{} ({}) is offline", d.id, d.class),
                value: None,
            }),
            DeviceStatus::Online => out.push(Verdict::Clear(AlarmKind::DeviceOffline)),
            // Behind a gateway that is down: the gateway's alarm speaks for it.
            DeviceStatus::Unknown => {}
        }
        let l = &self.limits;
        if let Some(co2) = d.value(Metric::Co2Ppm) {
            if co2.value > l.co2_limit_ppm && self.zone_occupied(d) {
                out.push(Verdict::Raise {
                    kind: AlarmKind::Co2High,
                    severity: "warning",
                    message: format!(
                        "CO2 {:.0} ppm above {:.0} ppm in occupied zone {}",
                        co2.value,
                        l.co2_limit_ppm,
                        d.zone_id.as_deref().unwrap_or("-")
                    ),
                    value: Some(co2.value),
                });
            } else if co2.value < l.co2_limit_ppm * (1.0 - CO2_HYSTERESIS) {
                out.push(Verdict::Clear(AlarmKind::Co2High));
            }
        }
        if let Some(t) = d.value(Metric::TC) {
            if t.value < l.temp_min_c || t.value > l.temp_max_c {
                out.push(Verdict::Raise {
                    kind: AlarmKind::TemperatureOutOfBand,
                    severity: "warning",
                    message: format!(
                        "temperature {:.1} °C outside {:.1}–{:.1} °C",
                        t.value, l.temp_min_c, l.temp_max_c
                    ),
                    value: Some(t.value),
                });
            } else if t.value >= l.temp_min_c + TEMP_HYSTERESIS_C
                && t.value <= l.temp_max_c - TEMP_HYSTERESIS_C
            {
                out.push(Verdict::Clear(AlarmKind::TemperatureOutOfBand));
            }
        }
        if let Some(door) = d.value(Metric::DoorOpen) {
            if door.value >= 1.0 {
                let since = *self.open_doors.entry(d.num).or_insert(door.ts.min(now));
                if now - since >= l.door_held_ms {
                    out.push(Verdict::Raise {
                        kind: AlarmKind::DoorHeldOpen,
                        severity: "warning",
                        message: format!("door {} open for {} s", d.id, (now - since) / 1000),
                        value: Some(((now - since) / 1000) as f64),
                    });
                }
            } else {
                self.open_doors.remove(&d.num);
                out.push(Verdict::Clear(AlarmKind::DoorHeldOpen));
            }
        }
        if d.class == DeviceClass::EvCharger {
            let state_fault = d
                .value(Metric::ChargerState)
                .is_some_and(|s| s.value == CHARGER_FAULT);
            if state_fault || d.fault_active {
                out.push(Verdict::Raise {
                    kind: AlarmKind::ChargerFault,
                    severity: "critical",
                    message: format!("charger {} reports a fault", d.id),
                    value: None,
                });
            } else {
                out.push(Verdict::Clear(AlarmKind::ChargerFault));
            }
        }
        if d.counter_backwards {
            out.push(Verdict::Raise {
                kind: AlarmKind::CounterBackwards,
                severity: "warning",
                message: format!(
                    "an energy counter of {} went backwards without a new meter_epoch",
                    d.id
                ),
                value: None,
            });
        } else if d.value(Metric::MeterEpoch).is_some() {
            out.push(Verdict::Clear(AlarmKind::CounterBackwards));
        }
        out
    }

    async fn apply(&mut self, d: &DeviceState, verdict: Verdict) {
        let now: NaiveDateTime = Utc::now().naive_utc();
        match verdict {
            Verdict::Raise {
                kind,
                severity,
                message,
                value,
            } => {
                let key = (d.id.clone(), kind);
                if self.live.contains(&key) {
                    return;
                }
                let row = AlarmRow {
                    id: uuid::Uuid::now_v7().to_string(),
                    site_id: d.site_id.clone(),
                    device_id: d.id.clone(),
                    zone_id: d.zone_id.clone(),
                    kind: kind.as_str().to_owned(),
                    severity: severity.to_owned(),
                    state: "open".into(),
                    message,
                    value,
                    raised_at: now,
                    acknowledged_at: None,
                    acknowledged_by: None,
                    cleared_at: None,
                };
                match self.db.run(move |c| alarms::raise(c, &row)).await {
                    Ok(raised) => {
                        if let Some(a) = raised {
                            tracing::info!(alarm = %a.id, device = %a.device_id, kind = %a.kind, "alarm raised");
                            self.metrics
                                .telemetry
                                .alarms_raised
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        self.live.insert(key);
                    }
                    Err(e) => tracing::warn!(error = %e, "could not raise an alarm"),
                }
            }
            Verdict::Clear(kind) => {
                let key = (d.id.clone(), kind);
                if !self.live.contains(&key) {
                    return;
                }
                let device = d.id.clone();
                match self
                    .db
                    .run(move |c| alarms::clear(c, &device, kind.as_str(), now))
                    .await
                {
                    Ok(cleared) => {
                        if let Some(a) = cleared {
                            tracing::info!(alarm = %a.id, device = %a.device_id, kind = %a.kind, "alarm cleared");
                            self.metrics
                                .telemetry
                                .alarms_cleared
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        self.live.remove(&key);
                    }
                    Err(e) => tracing::warn!(error = %e, "could not clear an alarm"),
                }
            }
        }
    }

    /// Stores health changes (status, last seen) so a restart and the API's lists agree.
    pub async fn save_health(&self) {
        let changes: Vec<StatusChange> = self
            .fleet
            .take_unsaved()
            .into_iter()
            .map(|d| StatusChange {
                num: d.num,
                status: d.status.as_str().to_owned(),
                last_seen_at: d
                    .last_seen_ms
                    .and_then(crate::domain::epoch::try_to_utc)
                    .map(|t| t.naive_utc()),
                status_changed_at: d
                    .status_changed_ms
                    .and_then(crate::domain::epoch::try_to_utc)
                    .map(|t| t.naive_utc()),
            })
            .collect();
        if changes.is_empty() {
            return;
        }
        if let Err(e) = self.db.run(move |c| store_statuses(c, &changes)).await {
            tracing::warn!(error = %e, "could not store device health");
        }
    }
}
