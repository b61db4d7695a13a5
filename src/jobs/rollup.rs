//! The 15-minute roll-up: recomputes, from the raw readings, every quarter the ingest pipeline
//! marked, and cascades a counter's quarter into the next so deltas stay chained. The energy
//! ledger of every site whose counters changed follows in the same pass, so late data
//! recomputes the ledger's quarters it touches (and the gaps it closes).
//!
//! Quarters are cut on each site's wall clock (`domain::quarters::quarter_start`). Every zone
//! in use today has an offset that is a whole number of quarter-hours, so a site's local quarter
//! is also a UTC quarter and one window of raw readings serves all sites.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::db::telemetry::{
    devices_between_minutes, mark_before, readings_between_minutes, upsert_rollups, RollupRow,
};
use crate::db::{Db, DbConnection, DbResult};
use crate::domain::quarters::{roll_up, CounterMark, Sample, QUARTER_MS};
use crate::domain::telemetry::Metric;
use crate::fleet::Fleet;

/// Devices whose raw readings of one quarter are read and rolled up in one step.
const DEVICES_PER_STEP: usize = 64;
/// How far back a start recomputes, for quarters whose marks were lost with the process.
const CATCH_UP_MS: i64 = 2 * 3600 * 1000;

pub async fn run(db: Db, fleet: Arc<Fleet>, every: Duration) {
    catch_up(&fleet);
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = pass(&db, &fleet).await {
            tracing::warn!(error = %e, "roll-up pass failed; retrying");
        }
    }
}

/// Marks every quarter of the last [`CATCH_UP_MS`] for recomputing, as a start does.
pub fn catch_up(fleet: &Fleet) {
    let now = crate::domain::epoch::now_ms();
    let current = now - now.rem_euclid(QUARTER_MS);
    let mut q = current - CATCH_UP_MS;
    while q <= current {
        fleet.mark_all(q);
        q += QUARTER_MS;
    }
}

/// Recomputes every marked quarter, oldest first; returns how many roll-up rows were written.
pub async fn pass(db: &Db, fleet: &Fleet) -> DbResult<usize> {
    let mut dirty: BTreeMap<i64, Option<HashSet<i32>>> = fleet.take_dirty();
    let now = crate::domain::epoch::now_ms();
    let current = now - now.rem_euclid(QUARTER_MS);
    let mut written = 0;
    let mut ledger: HashMap<String, (i64, i64)> = HashMap::new();
    while let Some((q, devices)) = dirty.pop_first() {
        let outcome = roll_quarter(db, q, devices.as_ref()).await;
        match outcome {
            Ok((rows, counters)) => {
                written += rows;
                for num in &counters {
                    if let Some(device) = fleet.get_num(*num) {
                        let span = ledger.entry(device.site_id).or_insert((q, q));
                        span.0 = span.0.min(q);
                        span.1 = span.1.max(q);
                    }
                }
                let next = q + QUARTER_MS;
                if next <= current && !counters.is_empty() {
                    if let Some(set) = dirty.entry(next).or_insert_with(|| Some(HashSet::new())) {
                        set.extend(counters);
                    }
                }
            }
            Err(e) => {
                // Put back what is left, so nothing marked is forgotten.
                match devices {
                    Some(set) => fleet.mark(q, set),
                    None => fleet.mark_all(q),
                }
                for (q, d) in dirty {
                    match d {
                        Some(set) => fleet.mark(q, set),
                        None => fleet.mark_all(q),
                    }
                }
                return Err(e);
            }
        }
    }
    let mut regions: HashMap<String, (i64, i64)> = HashMap::new();
    for (site, (first, last)) in ledger {
        let outcome = db
            .run(move |c| crate::db::energy::recompute(c, &site, first, last + QUARTER_MS))
            .await;
        match outcome {
            Ok((region, start, end)) => {
                let span = regions.entry(region).or_insert((start, end));
                span.0 = span.0.min(start);
                span.1 = span.1.max(end);
            }
            Err(e) => {
                tracing::warn!(error = %e, "energy ledger recomputation failed");
                // The counters' quarters are marked again so the next pass tries once more.
                fleet.mark_all(first);
            }
        }
    }
    // Each region's sums once per pass, over what its sites rewrote.
    for (region, (start, end)) in regions {
        let outcome = db
            .run(move |c| crate::db::energy::sum_region(c, &region, start, end))
            .await;
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "regional energy sums not rewritten");
            fleet.mark_all(start);
        }
    }
    Ok(written)
}

/// Rolls up one quarter for the marked devices (`None`: every device with readings in it), a few
/// devices at a time, so the quarter's raw readings are never all in memory at once. Returns the
/// rows written and the devices that have counters in it.
async fn roll_quarter(
    db: &Db,
    q: i64,
    devices: Option<&HashSet<i32>>,
) -> DbResult<(usize, Vec<i32>)> {
    let first_minute = (q / 60_000) as i32;
    let list: Vec<i32> = match devices {
        Some(set) => {
            let mut list: Vec<i32> = set.iter().copied().collect();
            list.sort_unstable();
            list
        }
        None => {
            db.run(move |c| devices_between_minutes(c, first_minute, first_minute + 15))
                .await?
        }
    };
    let mut rows = 0;
    let mut counters = Vec::new();
    for chunk in list.chunks(DEVICES_PER_STEP) {
        let chunk = chunk.to_vec();
        let (n, found) = db.run(move |c| quarter(c, q, &chunk)).await?;
        rows += n;
        counters.extend(found);
    }
    Ok((rows, counters))
}

/// Rolls up one quarter for `devices`. Returns the rows written and the devices that have
/// counters in it.
fn quarter(conn: &mut DbConnection, q: i64, devices: &[i32]) -> DbResult<(usize, Vec<i32>)> {
    let first_minute = (q / 60_000) as i32;
    if devices.is_empty() {
        return Ok((0, Vec::new()));
    }
    let raw = readings_between_minutes(conn, first_minute, first_minute + 15, devices)?;
    let mut by_device: HashMap<i32, Vec<Sample>> = HashMap::new();
    for r in raw {
        let Some(metric) = Metric::from_code(r.metric) else {
            continue;
        };
        by_device.entry(r.device).or_default().push(Sample {
            ts: r.ts,
            seq: r.seq,
            metric,
            value: r.value,
        });
    }
    let mut out = Vec::new();
    let mut counters = Vec::new();
    for (device, mut samples) in by_device {
        let mut marks: HashMap<Metric, CounterMark> = HashMap::new();
        let counter_metrics: HashSet<Metric> = samples
            .iter()
            .map(|s| s.metric)
            .filter(|m| m.is_counter())
            .collect();
        for m in &counter_metrics {
            if let Some(prev) = mark_before(conn, device, m.code(), q)? {
                marks.insert(
                    *m,
                    CounterMark {
                        value: prev.last,
                        epoch: prev.epoch.unwrap_or(0),
                    },
                );
            }
        }
        if !counter_metrics.is_empty() {
            counters.push(device);
        }
        for r in roll_up(q, &mut samples, |m| marks.get(&m).copied()) {
            out.push(RollupRow {
                device,
                metric: r.metric.code(),
                bucket: r.bucket,
                n: r.n as i32,
                min: r.min,
                max: r.max,
                sum: r.sum,
                last: r.last,
                last_ts: r.last_ts,
                delta: r.delta,
                epoch: r.epoch,
            });
        }
    }
    upsert_rollups(conn, &out)?;
    Ok((out.len(), counters))
}
