//! Devices, raw readings, device events and 15-minute roll-ups.
//!
//! Readings are written in batches that are idempotent on `(device, seq)`: a redelivered
//! message has the same key and is absorbed by `ON CONFLICT DO NOTHING`. PostgreSQL receives a
//! batch as one `INSERT … SELECT FROM unnest(…)` with six array parameters; SQLite as multi-row
//! INSERTs inside one `BEGIN IMMEDIATE` transaction.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Double, Integer, SmallInt};

use super::schema::{device_events, devices, readings, readings_15m};
use super::{write_transaction, DbConnection, DbResult};
use crate::domain::devices::DeviceSpec;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = devices)]
pub struct DeviceRow {
    pub num: i32,
    pub id: String,
    pub site_id: String,
    pub class: String,
    pub zone_id: Option<String>,
    pub resource_id: Option<String>,
    pub gateway_id: Option<String>,
    pub model: Option<String>,
    pub firmware: Option<String>,
    pub report_interval_s: i32,
    pub status: String,
    pub last_seen_at: Option<NaiveDateTime>,
    pub status_changed_at: Option<NaiveDateTime>,
    pub source: String,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = devices)]
pub struct NewDevice {
    pub id: String,
    pub site_id: String,
    pub class: String,
    pub zone_id: Option<String>,
    pub resource_id: Option<String>,
    pub gateway_id: Option<String>,
    pub model: Option<String>,
    pub firmware: Option<String>,
    pub report_interval_s: i32,
    pub status: String,
    pub source: String,
    pub created_at: NaiveDateTime,
}

impl NewDevice {
    pub fn from_spec(spec: &DeviceSpec, source: &str, now: NaiveDateTime) -> Self {
        NewDevice {
            id: spec.id.clone(),
            site_id: spec.site_id.clone(),
            class: spec.class.as_str().to_owned(),
            zone_id: spec.zone_id.clone(),
            resource_id: spec.resource_id.clone(),
            gateway_id: spec.gateway_id.clone(),
            model: Some(spec.model.clone()),
            firmware: None,
            report_interval_s: spec.report_interval_s,
            status: "unknown".to_owned(),
            source: source.to_owned(),
            created_at: now,
        }
    }
}

/// Inserts the devices of `specs` not stored yet; returns how many were added.
pub fn seed_devices(conn: &mut DbConnection, specs: &[DeviceSpec]) -> DbResult<usize> {
    let existing: std::collections::HashSet<String> = devices::table
        .select(devices::id)
        .load::<String>(conn)?
        .into_iter()
        .collect();
    let now = chrono::Utc::now().naive_utc();
    let rows: Vec<NewDevice> = specs
        .iter()
        .filter(|s| !existing.contains(&s.id))
        .map(|s| NewDevice::from_spec(s, "seed", now))
        .collect();
    write_transaction(conn, |conn| {
        on_backend!(conn, |c| {
            for chunk in rows.chunks(500) {
                diesel::insert_into(devices::table)
                    .values(chunk)
                    .execute(c)?;
            }
        });
        Ok(rows.len())
    })
}

pub fn load_devices(conn: &mut DbConnection) -> DbResult<Vec<DeviceRow>> {
    Ok(devices::table
        .select(DeviceRow::as_select())
        .order(devices::num)
        .load(conn)?)
}

pub fn find_device(conn: &mut DbConnection, id: &str) -> DbResult<Option<DeviceRow>> {
    Ok(devices::table
        .filter(devices::id.eq(id))
        .select(DeviceRow::as_select())
        .first(conn)
        .optional()?)
}

/// Stores a new device; `DbError::Duplicate` when the id is taken.
pub fn insert_device(conn: &mut DbConnection, new: &NewDevice) -> DbResult<DeviceRow> {
    write_transaction(conn, |conn| {
        on_backend!(conn, |c| {
            diesel::insert_into(devices::table).values(new).execute(c)?;
        });
        find_device(conn, &new.id)?.ok_or(super::DbError::NotFound)
    })
}

/// What a device's retained `meta` says about it: stored as a new device, or updating the
/// description of a known one (never its site).
pub fn learn_device(conn: &mut DbConnection, new: &NewDevice) -> DbResult<DeviceRow> {
    write_transaction(conn, |conn| {
        match find_device(conn, &new.id)? {
            Some(_) => {
                diesel::update(devices::table.filter(devices::id.eq(&new.id)))
                    .set((
                        devices::class.eq(&new.class),
                        devices::zone_id.eq(&new.zone_id),
                        devices::resource_id.eq(&new.resource_id),
                        devices::gateway_id.eq(&new.gateway_id),
                        devices::model.eq(&new.model),
                        devices::firmware.eq(&new.firmware),
                        devices::report_interval_s.eq(new.report_interval_s),
                    ))
                    .execute(conn)?;
            }
            None => {
                on_backend!(conn, |c| {
                    diesel::insert_into(devices::table).values(new).execute(c)?;
                });
            }
        }
        find_device(conn, &new.id)?.ok_or(super::DbError::NotFound)
    })
}

/// A device's health as last decided, to be stored.
#[derive(Debug, Clone)]
pub struct StatusChange {
    pub num: i32,
    pub status: String,
    pub last_seen_at: Option<NaiveDateTime>,
    pub status_changed_at: Option<NaiveDateTime>,
}

pub fn store_statuses(conn: &mut DbConnection, changes: &[StatusChange]) -> DbResult<()> {
    if changes.is_empty() {
        return Ok(());
    }
    write_transaction(conn, |conn| {
        for ch in changes {
            diesel::update(devices::table.filter(devices::num.eq(ch.num)))
                .set((
                    devices::status.eq(&ch.status),
                    devices::last_seen_at.eq(ch.last_seen_at),
                    devices::status_changed_at.eq(ch.status_changed_at),
                ))
                .execute(conn)?;
        }
        Ok(())
    })
}

/// One raw reading.
#[derive(Debug, Clone, Copy, PartialEq, Queryable, Insertable)]
#[diesel(table_name = readings)]
#[diesel(treat_none_as_default_value = false)]
pub struct ReadingRow {
    pub minute: i32,
    pub device: i32,
    pub metric: i16,
    pub seq: i64,
    pub ts: i64,
    pub value: f64,
}

impl ReadingRow {
    pub fn minute_of(ts_ms: i64) -> i32 {
        ts_ms.div_euclid(60_000) as i32
    }
}

#[derive(Debug, Clone, PartialEq, Queryable, Insertable)]
#[diesel(table_name = device_events)]
#[diesel(treat_none_as_default_value = false)]
pub struct EventRow {
    pub device: i32,
    pub seq: i64,
    pub ts: i64,
    pub kind: String,
    pub body: String,
}

/// What a batch write stored; the rest were duplicates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stored {
    pub readings: usize,
    pub events: usize,
}

/// Rows per multi-row INSERT on SQLite (6 parameters a row, well under its 32,766 limit).
const SQLITE_CHUNK: usize = 2_000;

/// Writes a batch of readings and events in one transaction, absorbing duplicates.
pub fn insert_batch(
    conn: &mut DbConnection,
    rows: &[ReadingRow],
    events: &[EventRow],
) -> DbResult<Stored> {
    write_transaction(conn, |conn| {
        let mut stored = Stored::default();
        match conn {
            DbConnection::Postgresql(c) => {
                if !rows.is_empty() {
                    let mut minute = Vec::with_capacity(rows.len());
                    let mut device = Vec::with_capacity(rows.len());
                    let mut metric = Vec::with_capacity(rows.len());
                    let mut seq = Vec::with_capacity(rows.len());
                    let mut ts = Vec::with_capacity(rows.len());
                    let mut value = Vec::with_capacity(rows.len());
                    for r in rows {
                        minute.push(r.minute);
                        device.push(r.device);
                        metric.push(r.metric);
                        seq.push(r.seq);
                        ts.push(r.ts);
                        value.push(r.value);
                    }
                    stored.readings = diesel::sql_query(
                        "INSERT INTO readings (minute, device, metric, seq, ts, value) \
                         SELECT * FROM unnest($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT DO NOTHING",
                    )
                    .bind::<Array<Integer>, _>(minute)
                    .bind::<Array<Integer>, _>(device)
                    .bind::<Array<SmallInt>, _>(metric)
                    .bind::<Array<BigInt>, _>(seq)
                    .bind::<Array<BigInt>, _>(ts)
                    .bind::<Array<Double>, _>(value)
                    .execute(c)?;
                }
                if !events.is_empty() {
                    stored.events = diesel::insert_into(device_events::table)
                        .values(events)
                        .on_conflict_do_nothing()
                        .execute(c)?;
                }
            }
            DbConnection::Sqlite(c) => {
                for chunk in rows.chunks(SQLITE_CHUNK) {
                    stored.readings += diesel::insert_into(readings::table)
                        .values(chunk)
                        .on_conflict_do_nothing()
                        .execute(c)?;
                }
                for chunk in events.chunks(SQLITE_CHUNK) {
                    stored.events += diesel::insert_into(device_events::table)
                        .values(chunk)
                        .on_conflict_do_nothing()
                        .execute(c)?;
                }
            }
        }
        Ok(stored)
    })
}

/// The devices with raw readings whose `minute` is in `[from, to)`, in number order.
pub fn devices_between_minutes(conn: &mut DbConnection, from: i32, to: i32) -> DbResult<Vec<i32>> {
    Ok(readings::table
        .filter(readings::minute.ge(from))
        .filter(readings::minute.lt(to))
        .select(readings::device)
        .distinct()
        .order(readings::device)
        .load(conn)?)
}

/// Raw readings of `devices` (all devices when empty) with `minute` in `[from, to)`.
pub fn readings_between_minutes(
    conn: &mut DbConnection,
    from: i32,
    to: i32,
    devices: &[i32],
) -> DbResult<Vec<ReadingRow>> {
    let base = || {
        readings::table
            .filter(readings::minute.ge(from))
            .filter(readings::minute.lt(to))
    };
    if devices.is_empty() {
        return Ok(base().load(conn)?);
    }
    let mut out = Vec::new();
    for chunk in devices.chunks(500) {
        out.extend(
            base()
                .filter(readings::device.eq_any(chunk))
                .load::<ReadingRow>(conn)?,
        );
    }
    Ok(out)
}

/// One device's raw readings of one metric in `[from_ms, to_ms)`, oldest first, at most `limit`.
pub fn device_readings(
    conn: &mut DbConnection,
    device: i32,
    metric: i16,
    from_ms: i64,
    to_ms: i64,
    limit: i64,
) -> DbResult<Vec<ReadingRow>> {
    let minutes: Vec<i32> =
        (ReadingRow::minute_of(from_ms)..=ReadingRow::minute_of(to_ms - 1)).collect();
    let mut out = Vec::new();
    // One seek per minute of the primary key (minute, device, metric, seq).
    for chunk in minutes.chunks(720) {
        out.extend(
            readings::table
                .filter(readings::minute.eq_any(chunk))
                .filter(readings::device.eq(device))
                .filter(readings::metric.eq(metric))
                .filter(readings::ts.ge(from_ms))
                .filter(readings::ts.lt(to_ms))
                .load::<ReadingRow>(conn)?,
        );
        if out.len() as i64 >= limit {
            break;
        }
    }
    out.sort_by_key(|r| (r.ts, r.seq));
    out.truncate(limit.max(0) as usize);
    Ok(out)
}

/// Several devices' raw readings of one metric in `[from_ms, to_ms)`, as `(device, ts, value)`
/// in time order: a range scan of the minutes, filtered.
pub fn metric_readings(
    conn: &mut DbConnection,
    devices: &[i32],
    metric: i16,
    from_ms: i64,
    to_ms: i64,
) -> DbResult<Vec<(i32, i64, f64)>> {
    if devices.is_empty() || from_ms >= to_ms {
        return Ok(Vec::new());
    }
    let mut out: Vec<(i32, i64, f64)> = Vec::new();
    for chunk in devices.chunks(500) {
        out.extend(
            readings::table
                .filter(readings::minute.ge(ReadingRow::minute_of(from_ms)))
                .filter(readings::minute.le(ReadingRow::minute_of(to_ms - 1)))
                .filter(readings::device.eq_any(chunk))
                .filter(readings::metric.eq(metric))
                .filter(readings::ts.ge(from_ms))
                .filter(readings::ts.lt(to_ms))
                .select((readings::device, readings::ts, readings::value))
                .load::<(i32, i64, f64)>(conn)?,
        );
    }
    out.sort_by_key(|r| (r.1, r.0));
    Ok(out)
}

pub fn count_readings(conn: &mut DbConnection) -> DbResult<i64> {
    Ok(readings::table.count().get_result(conn)?)
}

pub fn count_events(conn: &mut DbConnection) -> DbResult<i64> {
    Ok(device_events::table.count().get_result(conn)?)
}

/// Removes raw readings and device events older than `before_ms`, in slices so no transaction
/// grows large; returns how many rows went.
pub fn delete_raw_before(conn: &mut DbConnection, before_ms: i64) -> DbResult<usize> {
    let cutoff = ReadingRow::minute_of(before_ms);
    let oldest: Option<i32> = readings::table
        .select(diesel::dsl::min(readings::minute))
        .first(conn)?;
    let mut removed = 0;
    if let Some(mut m) = oldest {
        while m < cutoff {
            let upto = (m + 60).min(cutoff);
            removed +=
                diesel::delete(readings::table.filter(readings::minute.lt(upto))).execute(conn)?;
            m = upto;
        }
    }
    removed += diesel::delete(device_events::table.filter(device_events::ts.lt(before_ms)))
        .execute(conn)?;
    Ok(removed)
}

#[derive(Debug, Clone, PartialEq, Queryable, Insertable, AsChangeset)]
#[diesel(table_name = readings_15m)]
#[diesel(treat_none_as_default_value = false)]
pub struct RollupRow {
    pub device: i32,
    pub metric: i16,
    pub bucket: i64,
    pub n: i32,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub last: f64,
    pub last_ts: i64,
    pub delta: Option<f64>,
    pub epoch: Option<i64>,
}

/// Stores roll-ups, replacing any earlier computation of the same quarter.
pub fn upsert_rollups(conn: &mut DbConnection, rows: &[RollupRow]) -> DbResult<()> {
    use diesel::upsert::excluded;
    write_transaction(conn, |conn| {
        on_backend!(conn, |c| {
            for chunk in rows.chunks(1_000) {
                diesel::insert_into(readings_15m::table)
                    .values(chunk)
                    .on_conflict((
                        readings_15m::device,
                        readings_15m::metric,
                        readings_15m::bucket,
                    ))
                    .do_update()
                    .set((
                        readings_15m::n.eq(excluded(readings_15m::n)),
                        readings_15m::min.eq(excluded(readings_15m::min)),
                        readings_15m::max.eq(excluded(readings_15m::max)),
                        readings_15m::sum.eq(excluded(readings_15m::sum)),
                        readings_15m::last.eq(excluded(readings_15m::last)),
                        readings_15m::last_ts.eq(excluded(readings_15m::last_ts)),
                        readings_15m::delta.eq(excluded(readings_15m::delta)),
                        readings_15m::epoch.eq(excluded(readings_15m::epoch)),
                    ))
                    .execute(c)?;
            }
        });
        Ok(())
    })
}

/// The latest roll-up of a device's metric before `bucket`: where a counter stood.
pub fn mark_before(
    conn: &mut DbConnection,
    device: i32,
    metric: i16,
    bucket: i64,
) -> DbResult<Option<RollupRow>> {
    Ok(readings_15m::table
        .filter(readings_15m::device.eq(device))
        .filter(readings_15m::metric.eq(metric))
        .filter(readings_15m::bucket.lt(bucket))
        .order(readings_15m::bucket.desc())
        .first(conn)
        .optional()?)
}

/// A device's roll-ups of one metric with buckets in `[from_ms, to_ms)`, oldest first.
pub fn rollups(
    conn: &mut DbConnection,
    device: i32,
    metric: i16,
    from_ms: i64,
    to_ms: i64,
) -> DbResult<Vec<RollupRow>> {
    Ok(readings_15m::table
        .filter(readings_15m::device.eq(device))
        .filter(readings_15m::metric.eq(metric))
        .filter(readings_15m::bucket.ge(from_ms))
        .filter(readings_15m::bucket.lt(to_ms))
        .order(readings_15m::bucket)
        .load(conn)?)
}
