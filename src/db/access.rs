//! Door credentials, the access log and climate commands.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::{
    access_credentials, access_log, bookings, climate_commands, device_events, resources,
};
use super::{DbConnection, DbError};
use crate::domain::access_control::{credential_hash, credential_window, pin_from, token_from};
use crate::domain::TimeRange;

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = access_credentials)]
pub struct CredentialRow {
    pub booking_id: String,
    pub site_id: String,
    pub token: String,
    pub pin: String,
    pub token_sha256: String,
    pub pin_sha256: String,
    pub valid_from: NaiveDateTime,
    pub valid_until: NaiveDateTime,
    pub created_at: NaiveDateTime,
}

/// A credential about to be issued, with PINs to choose from: the first one no other credential
/// of the site holds in an overlapping window is taken ([`issue`]).
#[derive(Debug, Clone)]
pub struct NewCredential {
    pub row: CredentialRow,
    /// `(pin, sha256)` candidates, in order of preference.
    pub pins: Vec<(String, String)>,
}

impl NewCredential {
    /// A fresh credential for a booking of `[starts, ends)`: a random QR token and PIN
    /// candidates, valid over the booking's credential window.
    pub fn fresh(
        booking_id: &str,
        site_id: &str,
        starts: NaiveDateTime,
        ends: NaiveDateTime,
        now: NaiveDateTime,
    ) -> Result<NewCredential, DbError> {
        let range = TimeRange::new(starts.and_utc(), ends.and_utc())
            .map_err(|e| DbError::Unavailable(format!("booking {booking_id}: {}", e.message)))?;
        let token = token_from(rand::random());
        let pins: Vec<(String, String)> = (0..8)
            .map(|_| {
                let pin = pin_from(rand::random());
                let hash = credential_hash(&pin);
                (pin, hash)
            })
            .collect();
        let (from, until) = credential_window(&range);
        Ok(NewCredential {
            row: CredentialRow {
                booking_id: booking_id.to_owned(),
                site_id: site_id.to_owned(),
                token_sha256: credential_hash(&token),
                token,
                pin: pins[0].0.clone(),
                pin_sha256: pins[0].1.clone(),
                valid_from: from.naive_utc(),
                valid_until: until.naive_utc(),
                created_at: now,
            },
            pins,
        })
    }
}

/// Issues a credential to every active booking that has none and has not ended (bookings made
/// before credentials existed); returns how many.
pub fn backfill(conn: &mut DbConnection, now: NaiveDateTime) -> Result<usize, DbError> {
    let missing: Vec<(String, String, NaiveDateTime, NaiveDateTime)> = bookings::table
        .left_join(access_credentials::table)
        .filter(access_credentials::booking_id.is_null())
        .filter(bookings::status.eq_any(crate::domain::BookingStatus::ACTIVE))
        .filter(bookings::ends_at.gt(now))
        .select((
            bookings::id,
            bookings::site_id,
            bookings::starts_at,
            bookings::ends_at,
        ))
        .load(conn)?;
    for (id, site, starts, ends) in &missing {
        let new = NewCredential::fresh(id, site, *starts, *ends, now)?;
        super::write_transaction(conn, |c| issue(c, &new).map(|_| ()))?;
    }
    Ok(missing.len())
}

/// How many PINs a credential tries before giving up: the candidates it came with, then fresh
/// random ones. With a million PINs and a few thousand overlapping windows at one site, a second
/// try is already rare.
pub const PIN_ATTEMPTS: usize = 16;

/// Stores a credential inside the caller's transaction, with the first of its PIN candidates
/// (then fresh random PINs) that no other credential of the site holds in an overlapping window.
///
/// The database refuses a PIN in use ([`super::PIN_OVERLAP`]); each attempt runs in a savepoint,
/// so a refused one leaves the caller's transaction intact. Nothing reads the site's other
/// credentials.
pub fn issue(conn: &mut DbConnection, new: &NewCredential) -> Result<CredentialRow, DbError> {
    let mut row = new.row.clone();
    let fresh = std::iter::repeat_with(|| {
        let pin = pin_from(rand::random());
        let hash = credential_hash(&pin);
        (pin, hash)
    });
    let candidates = new.pins.iter().cloned().chain(fresh).take(PIN_ATTEMPTS);
    for (pin, hash) in candidates {
        row.pin = pin;
        row.pin_sha256 = hash;
        let stored = conn.transaction(|c| {
            on_backend!(c, |c| diesel::insert_into(access_credentials::table)
                .values(&row)
                .execute(c))
        });
        match stored.map_err(DbError::from) {
            Ok(_) => return Ok(row),
            Err(DbError::PinTaken) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(DbError::PinTaken)
}

pub fn credential(
    conn: &mut DbConnection,
    booking_id: &str,
) -> Result<Option<CredentialRow>, DbError> {
    Ok(access_credentials::table
        .find(booking_id)
        .select(CredentialRow::as_select())
        .first(conn)
        .optional()?)
}

/// A credential with what a door decision needs of its booking.
#[derive(Debug, Clone, PartialEq, Queryable)]
pub struct GrantRow {
    pub booking_id: String,
    pub site_id: String,
    pub token_sha256: String,
    pub pin_sha256: String,
    pub valid_from: NaiveDateTime,
    pub valid_until: NaiveDateTime,
    pub user_id: String,
    pub resource_id: String,
    pub zone_id: String,
    pub status: String,
    pub starts_at: NaiveDateTime,
    pub ends_at: NaiveDateTime,
}

macro_rules! grants {
    () => {
        access_credentials::table
            .inner_join(bookings::table.inner_join(resources::table))
            .select((
                access_credentials::booking_id,
                access_credentials::site_id,
                access_credentials::token_sha256,
                access_credentials::pin_sha256,
                access_credentials::valid_from,
                access_credentials::valid_until,
                bookings::user_id,
                bookings::resource_id,
                resources::zone_id,
                bookings::status,
                bookings::starts_at,
                bookings::ends_at,
            ))
    };
}

/// Credentials whose window ends after `since`, of one site or of every site.
pub fn grants(
    conn: &mut DbConnection,
    site_id: Option<&str>,
    since: NaiveDateTime,
) -> Result<Vec<GrantRow>, DbError> {
    let mut q = grants!()
        .filter(access_credentials::valid_until.gt(since))
        .into_boxed();
    if let Some(site) = site_id {
        q = q.filter(access_credentials::site_id.eq(site.to_owned()));
    }
    Ok(q.load(conn)?)
}

pub fn grant(conn: &mut DbConnection, booking_id: &str) -> Result<Option<GrantRow>, DbError> {
    Ok(grants!()
        .filter(access_credentials::booking_id.eq(booking_id))
        .first(conn)
        .optional()?)
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = access_log)]
pub struct AccessLogRow {
    pub id: String,
    pub site_id: String,
    pub door_id: String,
    pub zone_id: Option<String>,
    pub at: NaiveDateTime,
    pub badge_ts: Option<NaiveDateTime>,
    pub badge_seq: Option<i64>,
    pub credential_sha256: Option<String>,
    pub booking_id: Option<String>,
    pub user_id: Option<String>,
    pub decision: String,
    pub reason: Option<String>,
    pub nonce: Option<String>,
    pub latency_us: i64,
    pub anonymised: bool,
}

pub fn log_decisions(conn: &mut DbConnection, rows: &[AccessLogRow]) -> Result<usize, DbError> {
    let mut n = 0;
    for chunk in rows.chunks(500) {
        n += on_backend!(conn, |c| diesel::insert_into(access_log::table)
            .values(chunk)
            .execute(c)?);
    }
    Ok(n)
}

/// A site's access log in `[from, to)`, oldest first, after the keyset `(at, id)`.
pub fn log(
    conn: &mut DbConnection,
    site_id: &str,
    from: NaiveDateTime,
    to: NaiveDateTime,
    after: Option<(NaiveDateTime, String)>,
    limit: i64,
) -> Result<Vec<AccessLogRow>, DbError> {
    let mut q = access_log::table
        .filter(access_log::site_id.eq(site_id.to_owned()))
        .filter(access_log::at.ge(from))
        .filter(access_log::at.lt(to))
        .order((access_log::at, access_log::id))
        .limit(limit)
        .select(AccessLogRow::as_select())
        .into_boxed();
    if let Some((at, id)) = after {
        q = q.filter(
            access_log::at
                .gt(at)
                .or(access_log::at.eq(at).and(access_log::id.gt(id))),
        );
    }
    Ok(q.load(conn)?)
}

/// Doors opened at a site since `since` (for the occupancy view).
pub fn admitted_since(
    conn: &mut DbConnection,
    site_id: &str,
    since: NaiveDateTime,
) -> Result<i64, DbError> {
    Ok(access_log::table
        .filter(access_log::site_id.eq(site_id))
        .filter(access_log::at.ge(since))
        .filter(access_log::decision.eq("granted"))
        .count()
        .get_result(conn)?)
}

/// What the privacy job did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Anonymised {
    pub log_entries: usize,
    pub credentials: usize,
    pub badge_events: usize,
}

/// Clears what ties a person to a place and time before `cutoff`: the access log's credential
/// hash, booking and user; credentials whose window ended; badge events' credential hashes.
/// Decisions, doors and times stay.
pub fn anonymise_before(
    conn: &mut DbConnection,
    cutoff: NaiveDateTime,
) -> Result<Anonymised, DbError> {
    let log_entries = diesel::update(
        access_log::table
            .filter(access_log::at.lt(cutoff))
            .filter(access_log::anonymised.eq(false)),
    )
    .set((
        access_log::credential_sha256.eq(None::<String>),
        access_log::booking_id.eq(None::<String>),
        access_log::user_id.eq(None::<String>),
        access_log::anonymised.eq(true),
    ))
    .execute(conn)?;
    let credentials = diesel::delete(
        access_credentials::table.filter(access_credentials::valid_until.lt(cutoff)),
    )
    .execute(conn)?;
    let cutoff_ms = crate::domain::epoch::naive_ms(cutoff);
    let badge_events = diesel::update(
        device_events::table
            .filter(device_events::kind.eq("badge"))
            .filter(device_events::ts.lt(cutoff_ms))
            .filter(device_events::body.ne("{}")),
    )
    .set(device_events::body.eq("{}"))
    .execute(conn)?;
    Ok(Anonymised {
        log_entries,
        credentials,
        badge_events,
    })
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = climate_commands)]
pub struct ClimateRow {
    pub nonce: String,
    pub site_id: String,
    pub zone_id: String,
    pub device_id: String,
    pub mode: String,
    pub t_c: f64,
    pub lights: bool,
    pub issued_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
}

pub fn log_climate(conn: &mut DbConnection, rows: &[ClimateRow]) -> Result<usize, DbError> {
    let mut n = 0;
    for chunk in rows.chunks(500) {
        n += on_backend!(conn, |c| diesel::insert_into(climate_commands::table)
            .values(chunk)
            .execute(c)?);
    }
    Ok(n)
}

/// The newest climate command of every zone issued since `since`.
pub fn latest_climate(
    conn: &mut DbConnection,
    since: NaiveDateTime,
) -> Result<Vec<ClimateRow>, DbError> {
    let rows: Vec<ClimateRow> = climate_commands::table
        .filter(climate_commands::issued_at.ge(since))
        .order((climate_commands::zone_id, climate_commands::issued_at))
        .select(ClimateRow::as_select())
        .load(conn)?;
    let mut latest: Vec<ClimateRow> = Vec::new();
    for r in rows {
        match latest.last_mut() {
            Some(l) if l.zone_id == r.zone_id => *l = r,
            _ => latest.push(r),
        }
    }
    Ok(latest)
}

/// A site's climate commands since `since`, newest first.
pub fn climate_history(
    conn: &mut DbConnection,
    site_id: &str,
    since: NaiveDateTime,
    limit: i64,
) -> Result<Vec<ClimateRow>, DbError> {
    Ok(climate_commands::table
        .filter(climate_commands::site_id.eq(site_id))
        .filter(climate_commands::issued_at.ge(since))
        .order((
            climate_commands::issued_at.desc(),
            climate_commands::nonce.desc(),
        ))
        .limit(limit)
        .select(ClimateRow::as_select())
        .load(conn)?)
}
