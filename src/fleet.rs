//! The fleet: every device of the network in memory, with its health and latest values, so the
//! console's live view and the alarm engine never query the database for them.
//!
//! The ingest pipeline writes here after each commit; the health and alarm job and the HTTP API
//! read. It also carries the quarters the roll-up job must recompute.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, RwLock};

use chrono::NaiveDateTime;
use chrono_tz::Tz;

use crate::db::telemetry::DeviceRow;
use crate::domain::quarters::quarter_start;
use crate::domain::telemetry::Metric;
use crate::domain::{DeviceClass, DeviceStatus};

/// The latest value of one metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latest {
    pub metric: Metric,
    pub value: f64,
    pub ts: i64,
}

/// One device as the service knows it now.
#[derive(Debug, Clone)]
pub struct DeviceState {
    pub num: i32,
    pub id: String,
    pub site_id: String,
    pub class: DeviceClass,
    pub zone_id: Option<String>,
    pub resource_id: Option<String>,
    pub gateway_id: Option<String>,
    pub model: Option<String>,
    pub firmware: Option<String>,
    pub report_interval_s: i32,
    pub source: String,
    pub created_at: NaiveDateTime,
    pub tz: Tz,
    pub status: DeviceStatus,
    /// When the service last heard from the device, epoch ms.
    pub last_seen_ms: Option<i64>,
    pub status_changed_ms: Option<i64>,
    pub latest: Vec<Latest>,
    /// The latest `active` flag of the device's fault events.
    pub fault_active: bool,
    /// A counter went down without a new `meter_epoch` (cleared by a new epoch).
    pub counter_backwards: bool,
    /// Health changed since it was last stored.
    pub unsaved: bool,
}

impl DeviceState {
    pub fn from_row(row: &DeviceRow, tz: Tz) -> DeviceState {
        DeviceState {
            num: row.num,
            id: row.id.clone(),
            site_id: row.site_id.clone(),
            class: row.class.parse().unwrap_or(DeviceClass::EnvSensor),
            zone_id: row.zone_id.clone(),
            resource_id: row.resource_id.clone(),
            gateway_id: row.gateway_id.clone(),
            model: row.model.clone(),
            firmware: row.firmware.clone(),
            report_interval_s: row.report_interval_s,
            source: row.source.clone(),
            created_at: row.created_at,
            tz,
            status: row.status.parse().unwrap_or(DeviceStatus::Unknown),
            last_seen_ms: row.last_seen_at.map(crate::domain::epoch::naive_ms),
            status_changed_ms: row.status_changed_at.map(crate::domain::epoch::naive_ms),
            latest: Vec::new(),
            fault_active: false,
            counter_backwards: false,
            unsaved: false,
        }
    }

    pub fn value(&self, metric: Metric) -> Option<Latest> {
        self.latest.iter().copied().find(|l| l.metric == metric)
    }

    fn set_status(&mut self, status: DeviceStatus, at_ms: i64) {
        if self.status != status {
            self.status = status;
            self.status_changed_ms = Some(at_ms);
            self.unsaved = true;
        }
    }
}

/// Something a committed batch told about a device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Heard {
    /// Readings `values[from..to]` of a message stamped `ts`.
    Readings {
        ts: i64,
        from: usize,
        to: usize,
    },
    Status {
        online: bool,
    },
    Fault {
        active: bool,
    },
}

#[derive(Default)]
struct Inner {
    devices: Vec<DeviceState>,
    by_id: HashMap<String, usize>,
    by_num: HashMap<i32, usize>,
}

/// Quarters to recompute: `None` means every device.
pub type Dirty = BTreeMap<i64, Option<HashSet<i32>>>;

/// Devices marked one by one in a quarter, at most; beyond this the quarter is marked for every
/// device, so the marks take a bounded amount of memory however many quarters late data touches
/// (readings are accepted up to a week old: 672 quarters).
pub const MAX_MARKED_PER_QUARTER: usize = 1024;

/// Adds `nums` to the marks of quarter `q`.
fn mark_in(dirty: &mut Dirty, q: i64, nums: impl IntoIterator<Item = i32>) {
    let entry = dirty.entry(q).or_insert_with(|| Some(HashSet::new()));
    if let Some(set) = entry {
        set.extend(nums);
        if set.len() > MAX_MARKED_PER_QUARTER {
            *entry = None;
        }
    }
}

#[derive(Default)]
pub struct Fleet {
    inner: RwLock<Inner>,
    dirty: Mutex<Dirty>,
    /// Devices whose state changed since the alarm engine last looked.
    touched: Mutex<HashSet<i32>>,
    touched_signal: tokio::sync::Notify,
}

/// A device as the ingest pipeline needs it to accept a message.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    pub num: i32,
    pub site_matches: bool,
}

impl Fleet {
    /// Replaces the device list, keeping the live state of devices already known.
    pub fn load(&self, rows: &[DeviceRow], tz_of: impl Fn(&str) -> Tz) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let mut old: HashMap<i32, DeviceState> =
            inner.devices.drain(..).map(|d| (d.num, d)).collect();
        let mut next = Inner::default();
        for row in rows {
            let mut state = DeviceState::from_row(row, tz_of(&row.site_id));
            if let Some(prev) = old.remove(&row.num) {
                state.status = prev.status;
                state.last_seen_ms = prev.last_seen_ms;
                state.status_changed_ms = prev.status_changed_ms;
                state.latest = prev.latest;
                state.fault_active = prev.fault_active;
                state.counter_backwards = prev.counter_backwards;
                state.unsaved = prev.unsaved;
            }
            next.by_id.insert(state.id.clone(), next.devices.len());
            next.by_num.insert(state.num, next.devices.len());
            next.devices.push(state);
        }
        *inner = next;
    }

    /// Adds or replaces one device (provisioned, or learned from its `meta`).
    pub fn upsert(&self, row: &DeviceRow, tz: Tz) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let mut state = DeviceState::from_row(row, tz);
        if let Some(&i) = inner.by_num.get(&row.num) {
            let prev = &inner.devices[i];
            state.status = prev.status;
            state.last_seen_ms = prev.last_seen_ms;
            state.status_changed_ms = prev.status_changed_ms;
            state.latest = prev.latest.clone();
            state.fault_active = prev.fault_active;
            state.counter_backwards = prev.counter_backwards;
            inner.devices[i] = state;
        } else {
            let i = inner.devices.len();
            inner.by_id.insert(state.id.clone(), i);
            inner.by_num.insert(state.num, i);
            inner.devices.push(state);
        }
    }

    pub fn len(&self) -> usize {
        self.inner.read().map(|i| i.devices.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Looks up the device of a topic; `None` for an unknown device.
    pub fn admit(&self, site: &str, device: &str) -> Option<Admission> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let d = &inner.devices[*inner.by_id.get(device)?];
        Some(Admission {
            num: d.num,
            site_matches: d.site_id == site,
        })
    }

    pub fn get(&self, id: &str) -> Option<DeviceState> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner.by_id.get(id).map(|&i| inner.devices[i].clone())
    }

    pub fn get_num(&self, num: i32) -> Option<DeviceState> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner.by_num.get(&num).map(|&i| inner.devices[i].clone())
    }

    /// The devices of a site, in id order.
    pub fn site(&self, site_id: &str) -> Vec<DeviceState> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<DeviceState> = inner
            .devices
            .iter()
            .filter(|d| d.site_id == site_id)
            .cloned()
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Every device, for sweeps.
    pub fn all(&self) -> Vec<DeviceState> {
        self.inner
            .read()
            .map(|i| i.devices.clone())
            .unwrap_or_default()
    }

    /// Applies what a committed batch said, in batch order; `values` holds the readings that
    /// `Heard::Readings` entries point into. Marks the quarters to roll up.
    pub fn apply(&self, heard: &[(i32, Heard)], values: &[(Metric, f64)], now_ms: i64) {
        let mut quarters: BTreeMap<i64, HashSet<i32>> = BTreeMap::new();
        let mut touched = HashSet::new();
        {
            let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
            let mut gateways_down = Vec::new();
            for (num, what) in heard {
                let Some(&idx) = inner.by_num.get(num) else {
                    continue;
                };
                let d = &mut inner.devices[idx];
                touched.insert(*num);
                match *what {
                    Heard::Readings { ts, from, to } => {
                        let msg = &values[from..to];
                        quarters
                            .entry(quarter_start(ts, d.tz))
                            .or_default()
                            .insert(*num);
                        d.last_seen_ms = Some(d.last_seen_ms.map_or(now_ms, |s| s.max(now_ms)));
                        d.unsaved = true;
                        d.set_status(DeviceStatus::Online, now_ms);
                        let prev_epoch = d.value(Metric::MeterEpoch).map(|l| l.value);
                        let epoch = msg
                            .iter()
                            .find(|(m, _)| *m == Metric::MeterEpoch)
                            .map(|(_, v)| *v)
                            .or(prev_epoch);
                        let newer = d.value(Metric::MeterEpoch).is_none_or(|l| ts >= l.ts);
                        if newer && epoch != prev_epoch {
                            d.counter_backwards = false;
                        }
                        for &(metric, value) in msg {
                            match d.latest.iter_mut().find(|l| l.metric == metric) {
                                Some(l) if ts >= l.ts => {
                                    if metric.is_counter() && epoch == prev_epoch && value < l.value
                                    {
                                        d.counter_backwards = true;
                                    }
                                    *l = Latest { metric, value, ts };
                                }
                                Some(_) => {}
                                None => d.latest.push(Latest { metric, value, ts }),
                            }
                        }
                    }
                    Heard::Status { online } => {
                        d.last_seen_ms = Some(now_ms);
                        d.unsaved = true;
                        if online {
                            d.set_status(DeviceStatus::Online, now_ms);
                        } else {
                            d.set_status(DeviceStatus::Offline, now_ms);
                            if d.class == DeviceClass::Gateway {
                                gateways_down.push(d.id.clone());
                            }
                        }
                    }
                    Heard::Fault { active } => {
                        d.last_seen_ms = Some(now_ms);
                        d.set_status(DeviceStatus::Online, now_ms);
                        d.fault_active = active;
                    }
                }
            }
            for gw in gateways_down {
                for d in inner.devices.iter_mut() {
                    if d.gateway_id.as_deref() == Some(gw.as_str()) {
                        d.set_status(DeviceStatus::Unknown, now_ms);
                        touched.insert(d.num);
                    }
                }
            }
        }
        if !quarters.is_empty() {
            let mut dirty = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
            for (q, nums) in quarters {
                mark_in(&mut dirty, q, nums);
            }
        }
        self.touch(touched);
    }

    fn touch(&self, nums: HashSet<i32>) {
        if nums.is_empty() {
            return;
        }
        self.touched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(nums);
        self.touched_signal.notify_one();
    }

    /// Devices changed since the last call.
    pub fn take_touched(&self) -> HashSet<i32> {
        std::mem::take(&mut *self.touched.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Waits until some device changes.
    pub async fn changed(&self) {
        self.touched_signal.notified().await
    }

    /// Marks a quarter for recomputation for every device (catch-up after a start).
    pub fn mark_all(&self, quarter: i64) {
        self.dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(quarter, None);
    }

    /// Marks a quarter for recomputation for some devices (for every device once more than
    /// [`MAX_MARKED_PER_QUARTER`] are marked in it).
    pub fn mark(&self, quarter: i64, nums: impl IntoIterator<Item = i32>) {
        let mut dirty = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
        mark_in(&mut dirty, quarter, nums);
    }

    pub fn take_dirty(&self) -> Dirty {
        std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Marks devices silent for longer than their class allows as offline, and the devices
    /// behind an offline gateway as unknown. Returns the devices that went offline.
    pub fn sweep_silent(&self, now_ms: i64) -> Vec<DeviceState> {
        let mut went = Vec::new();
        let mut touched = HashSet::new();
        {
            let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
            let mut gateways_down = Vec::new();
            for d in inner.devices.iter_mut() {
                let Some(seen) = d.last_seen_ms else { continue };
                if d.status == DeviceStatus::Online
                    && now_ms - seen > crate::domain::kinds::offline_after_ms(d.report_interval_s)
                {
                    d.set_status(DeviceStatus::Offline, now_ms);
                    touched.insert(d.num);
                    if d.class == DeviceClass::Gateway {
                        gateways_down.push(d.id.clone());
                    }
                    went.push(d.clone());
                }
            }
            for gw in gateways_down {
                for d in inner.devices.iter_mut() {
                    if d.gateway_id.as_deref() == Some(gw.as_str())
                        && d.status == DeviceStatus::Online
                    {
                        d.set_status(DeviceStatus::Unknown, now_ms);
                        touched.insert(d.num);
                    }
                }
            }
        }
        self.touch(touched);
        went
    }

    /// Health changes not yet stored; clears the flags.
    pub fn take_unsaved(&self) -> Vec<DeviceState> {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        inner
            .devices
            .iter_mut()
            .filter(|d| d.unsaved)
            .map(|d| {
                d.unsaved = false;
                d.clone()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quarter_with_many_marked_devices_is_marked_for_all() {
        let fleet = Fleet::default();
        fleet.mark(0, 0..10);
        fleet.mark(QUARTER, 0..MAX_MARKED_PER_QUARTER as i32);
        fleet.mark(QUARTER, [-1]);
        let dirty = fleet.take_dirty();
        assert_eq!(dirty[&0].as_ref().map(HashSet::len), Some(10));
        assert_eq!(dirty[&QUARTER], None);
        fleet.mark_all(0);
        fleet.mark(0, [1, 2]);
        assert_eq!(fleet.take_dirty()[&0], None, "all stays all");
    }

    const QUARTER: i64 = 15 * 60 * 1000;
}
