//! What creating a booking would answer now, without booking: the policy's findings, the
//! resource's overlapping bookings and the allowance it would use.

use chrono::{DateTime, NaiveDateTime, Utc};

use super::{check, Error, NewBooking, Target};
use crate::db::bookings as store;
use crate::db::{naive, Db, DbError};
use crate::domain::access::Caller;
use crate::domain::policy;
use crate::domain::{FieldError, TimeRange};

/// The allowance a booking would use.
#[derive(Debug, Clone)]
pub struct AllowanceQuote {
    pub organization_id: String,
    pub month: String,
    pub limit_minutes: i32,
    pub used_minutes: i32,
    pub this_booking_minutes: i32,
}

/// A quote: everything `create` would check, and what it found.
pub struct Quoted {
    pub target: Target,
    /// The interval, when its times parse.
    pub range: Option<TimeRange>,
    /// Policy violations (and an allowance that would be exceeded), each naming its field.
    pub errors: Vec<FieldError>,
    /// Active bookings of the resource overlapping the interval, as `(starts_at, ends_at)`.
    pub conflicts: Vec<(NaiveDateTime, NaiveDateTime)>,
    pub allowance: Option<AllowanceQuote>,
}

impl Quoted {
    /// The status `create` would answer: 201, 409 or 422.
    pub fn outcome(&self) -> u16 {
        if !self.errors.is_empty() {
            422
        } else if !self.conflicts.is_empty() {
            409
        } else {
            201
        }
    }
}

/// Quotes `req` for `caller` at `now`. An unknown resource is [`Error::Invalid`]; every other
/// finding is in the answer.
pub async fn quote(
    db: &Db,
    dir: &crate::db::network::Directory,
    caller: &Caller,
    req: &NewBooking,
    now: DateTime<Utc>,
) -> Result<Quoted, Error> {
    let (target, checked) = check(dir, caller, req, now);
    let Some(target) = target else {
        return Err(Error::Invalid(checked.err().unwrap_or_default()));
    };
    let tz = target.site.tz;
    let range = TimeRange::parse(&req.starts_at, &req.ends_at, "starts_at", "ends_at").ok();
    let mut errors = checked.err().unwrap_or_default();
    let (rid, org) = (
        target.resource.resource.id.clone(),
        caller.organization_id.clone(),
    );
    let month = range.map(|r| policy::allowance_month(&r, tz));
    let (conflicts, used) = db
        .run(move |c| {
            let conflicts = match range {
                Some(r) => store::conflicts(c, &rid, naive(r.start()), naive(r.end()))?,
                None => Vec::new(),
            };
            let used = match (org, month) {
                (Some(o), Some(m)) => {
                    let status = store::allowance_status(c, &o, &m)?;
                    Some((o, m, status))
                }
                _ => None,
            };
            Ok::<_, DbError>((conflicts, used))
        })
        .await?;
    let minutes = range.map(|r| policy::charged_minutes(&r)).unwrap_or(0);
    let allowance = used.map(|(organization_id, month, (limit, used))| {
        if used + minutes > limit {
            let exceeded = Error::AllowanceExceeded {
                month: month.clone(),
                limit,
                used,
                needed: minutes,
            };
            errors.push(FieldError::new("ends_at", exceeded.to_string()));
        }
        AllowanceQuote {
            organization_id,
            month,
            limit_minutes: limit,
            used_minutes: used,
            this_booking_minutes: minutes,
        }
    });
    Ok(Quoted {
        target,
        range,
        errors,
        conflicts: conflicts.into_iter().map(|(_, s, e)| (s, e)).collect(),
        allowance,
    })
}
