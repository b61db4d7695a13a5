//! Alarms: raised, acknowledged by a person, cleared. At most one live (not cleared) alarm of a
//! kind per device, by a partial unique index.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::alarms;
use super::{write_transaction, DbConnection, DbError, DbResult};

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = alarms)]
pub struct AlarmRow {
    pub id: String,
    pub site_id: String,
    pub device_id: String,
    pub zone_id: Option<String>,
    pub kind: String,
    pub severity: String,
    pub state: String,
    pub message: String,
    pub value: Option<f64>,
    pub raised_at: NaiveDateTime,
    pub acknowledged_at: Option<NaiveDateTime>,
    pub acknowledged_by: Option<String>,
    pub cleared_at: Option<NaiveDateTime>,
}

/// Raises an alarm unless one of the same kind is already live for the device; returns the new
/// alarm, or `None` when it was already live.
pub fn raise(conn: &mut DbConnection, alarm: &AlarmRow) -> DbResult<Option<AlarmRow>> {
    write_transaction(conn, |conn| {
        let live = alarms::table
            .filter(alarms::device_id.eq(&alarm.device_id))
            .filter(alarms::kind.eq(&alarm.kind))
            .filter(alarms::state.ne("cleared"))
            .count()
            .get_result::<i64>(conn)?;
        if live > 0 {
            return Ok(None);
        }
        let inserted = on_backend!(conn, |c| diesel::insert_into(alarms::table)
            .values(alarm)
            .execute(c));
        match inserted {
            Ok(_) => Ok(Some(alarm.clone())),
            Err(e) => match DbError::from(e) {
                DbError::Duplicate => Ok(None),
                other => Err(other),
            },
        }
    })
}

/// Clears the live alarm of `kind` on `device_id`, if any; returns it.
pub fn clear(
    conn: &mut DbConnection,
    device_id: &str,
    kind: &str,
    at: NaiveDateTime,
) -> DbResult<Option<AlarmRow>> {
    write_transaction(conn, |conn| {
        let live: Option<AlarmRow> = alarms::table
            .filter(alarms::device_id.eq(device_id))
            .filter(alarms::kind.eq(kind))
            .filter(alarms::state.ne("cleared"))
            .select(AlarmRow::as_select())
            .first(conn)
            .optional()?;
        let Some(mut alarm) = live else {
            return Ok(None);
        };
        diesel::update(alarms::table.filter(alarms::id.eq(&alarm.id)))
            .set((alarms::state.eq("cleared"), alarms::cleared_at.eq(Some(at))))
            .execute(conn)?;
        alarm.state = "cleared".into();
        alarm.cleared_at = Some(at);
        Ok(Some(alarm))
    })
}

/// Acknowledges an open alarm. An alarm already acknowledged or cleared keeps its state and is
/// returned as it is, so a repeated acknowledgement changes nothing.
pub fn acknowledge(
    conn: &mut DbConnection,
    id: &str,
    user_id: &str,
    at: NaiveDateTime,
) -> DbResult<AlarmRow> {
    write_transaction(conn, |conn| {
        diesel::update(
            alarms::table
                .filter(alarms::id.eq(id))
                .filter(alarms::state.eq("open")),
        )
        .set((
            alarms::state.eq("acknowledged"),
            alarms::acknowledged_at.eq(Some(at)),
            alarms::acknowledged_by.eq(Some(user_id)),
        ))
        .execute(conn)?;
        find(conn, id)?.ok_or(DbError::NotFound)
    })
}

pub fn find(conn: &mut DbConnection, id: &str) -> DbResult<Option<AlarmRow>> {
    Ok(alarms::table
        .filter(alarms::id.eq(id))
        .select(AlarmRow::as_select())
        .first(conn)
        .optional()?)
}

/// Every live (open or acknowledged) alarm, for the alarm engine's start.
pub fn live(conn: &mut DbConnection) -> DbResult<Vec<AlarmRow>> {
    Ok(alarms::table
        .filter(alarms::state.ne("cleared"))
        .select(AlarmRow::as_select())
        .load(conn)?)
}

/// Filters for a list of alarms; `sites: None` means every site.
#[derive(Debug, Clone, Default)]
pub struct AlarmFilter {
    pub sites: Option<Vec<String>>,
    pub state: Option<String>,
    /// Keyset cursor: alarms raised before this one in (raised_at desc, id desc) order.
    pub after: Option<(NaiveDateTime, String)>,
    pub limit: i64,
}

/// Alarms newest first.
pub fn list(conn: &mut DbConnection, filter: &AlarmFilter) -> DbResult<Vec<AlarmRow>> {
    let mut q = alarms::table.select(AlarmRow::as_select()).into_boxed();
    if let Some(sites) = &filter.sites {
        q = q.filter(alarms::site_id.eq_any(sites.clone()));
    }
    if let Some(state) = &filter.state {
        q = q.filter(alarms::state.eq(state.clone()));
    }
    if let Some((at, id)) = &filter.after {
        q = q.filter(
            alarms::raised_at
                .lt(*at)
                .or(alarms::raised_at.eq(*at).and(alarms::id.lt(id.clone()))),
        );
    }
    Ok(q.order((alarms::raised_at.desc(), alarms::id.desc()))
        .limit(filter.limit)
        .load(conn)?)
}

/// Zones with a booking that holds a resource at `at`: a person is expected there.
pub fn booked_zones(conn: &mut DbConnection, at: NaiveDateTime) -> DbResult<Vec<String>> {
    use super::schema::{bookings, resources};
    Ok(bookings::table
        .inner_join(resources::table)
        .filter(bookings::status.eq_any(crate::domain::BookingStatus::ACTIVE))
        .filter(bookings::starts_at.le(at))
        .filter(bookings::ends_at.gt(at))
        .select(resources::zone_id)
        .distinct()
        .load(conn)?)
}
