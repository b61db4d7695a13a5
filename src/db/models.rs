//! Rows as stored. Read models that join tables live beside the queries that build them.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::*;

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
    pub status: String,
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
