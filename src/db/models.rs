//! Rows as stored. Read models that join tables live beside the queries that build them.

use chrono::NaiveDateTime;
use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql};
use diesel::prelude::*;
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::Text;

use super::schema::*;
use crate::domain::BookingStatus;

/// `bookings.status` is read as a [`BookingStatus`]; text that is not one of its values is an
/// error, never a default.
#[derive(diesel::expression::AsExpression, diesel::deserialize::FromSqlRow)]
#[diesel(foreign_derive)]
#[diesel(sql_type = Text)]
#[allow(dead_code)]
struct BookingStatusColumn(BookingStatus);

impl<DB> FromSql<Text, DB> for BookingStatus
where
    DB: Backend,
    String: FromSql<Text, DB>,
{
    fn from_sql(bytes: DB::RawValue<'_>) -> deserialize::Result<Self> {
        let text = String::from_sql(bytes)?;
        text.parse()
            .map_err(|e| format!("booking status {text:?} {e}").into())
    }
}

impl<DB> ToSql<Text, DB> for BookingStatus
where
    DB: Backend,
    str: ToSql<Text, DB>,
{
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, DB>) -> serialize::Result {
        self.as_str().to_sql(out)
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = organizations)]
pub struct Organization {
    pub id: String,
    pub name: String,
    pub monthly_allowance_minutes: i32,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = users)]
pub struct User {
    pub id: String,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub role: String,
    pub organization_id: Option<String>,
    pub verified_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = sessions)]
pub struct Session {
    pub id: String,
    pub user_id: String,
    pub created_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
    pub revoked_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = refresh_tokens)]
pub struct RefreshToken {
    pub token_hash: String,
    pub session_id: String,
    pub created_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
    pub spent_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = email_verifications)]
pub struct EmailVerification {
    pub token_hash: String,
    pub user_id: String,
    pub password_hash: String,
    pub expires_at: NaiveDateTime,
    pub used_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = sites)]
pub struct Site {
    pub id: String,
    pub name: String,
    pub comune: String,
    pub istat_code: String,
    pub province: String,
    pub province_code: String,
    pub region: String,
    pub population: i32,
    pub small_town: bool,
    pub address: String,
    pub latitude: f64,
    pub longitude: f64,
    pub timezone: String,
    pub size: String,
    pub area_m2: i32,
    pub opening_hours: String,
    /// Minutes after a booking's start before an unused booking is released.
    pub no_show_grace_minutes: i32,
    /// The PV plant's nameplate power, kWp.
    pub pv_kwp: f64,
    /// Grid import must never exceed this, W.
    pub contracted_power_w: i32,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = site_closures)]
pub struct SiteClosure {
    pub site_id: String,
    pub day: String,
    pub reason: String,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = zones)]
pub struct Zone {
    pub id: String,
    pub site_id: String,
    pub name: String,
    pub floor: i32,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = resources)]
pub struct Resource {
    pub id: String,
    pub site_id: String,
    pub zone_id: String,
    pub kind: String,
    pub name: String,
    pub capacity: i32,
    pub amenities: String,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = bookings)]
pub struct Booking {
    pub id: String,
    pub resource_id: String,
    pub site_id: String,
    pub user_id: String,
    pub organization_id: Option<String>,
    pub starts_at: NaiveDateTime,
    pub ends_at: NaiveDateTime,
    pub status: BookingStatus,
    pub attendees: i32,
    pub note: Option<String>,
    pub charged_minutes: i32,
    pub allowance_month: Option<String>,
    pub sequence: i32,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub checked_in_at: Option<NaiveDateTime>,
    pub cancelled_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = outbox)]
pub struct OutboxRow {
    pub id: String,
    pub kind: String,
    pub payload: String,
    pub created_at: NaiveDateTime,
    pub available_at: NaiveDateTime,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub sent_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = idempotency_keys)]
pub struct IdempotencyRecord {
    pub user_id: String,
    pub key: String,
    pub request_hash: String,
    pub status_code: Option<i32>,
    pub response_body: Option<String>,
    pub location: Option<String>,
    pub created_at: NaiveDateTime,
}
