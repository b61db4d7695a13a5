//! An organization's monthly allowance: what a booking takes from it and gives back, and how
//! much of a month is used.

use diesel::prelude::*;

use super::BookingWriteError;
use crate::db::models::Booking;
use crate::db::schema::{allowance_usage, organizations};
use crate::db::{DbConnection, DbError};

/// What a booking takes from its organization's allowance.
#[derive(Debug, Clone)]
pub struct AllowanceCharge {
    pub organization_id: String,
    pub month: String,
    pub minutes: i32,
}

/// Takes a booking's minutes from its organization's month, refusing when they do not fit.
pub(super) fn consume_allowance(
    conn: &mut DbConnection,
    charge: &AllowanceCharge,
) -> Result<(), BookingWriteError> {
    on_backend!(conn, |c| {
        diesel::insert_into(allowance_usage::table)
            .values((
                allowance_usage::organization_id.eq(&charge.organization_id),
                allowance_usage::month.eq(&charge.month),
                allowance_usage::used_minutes.eq(0),
            ))
            .on_conflict_do_nothing()
            .execute(c)?
    });
    let limit: i32 = organizations::table
        .find(&charge.organization_id)
        .select(organizations::monthly_allowance_minutes)
        .first(conn)?;
    let row = allowance_usage::table.find((&charge.organization_id, &charge.month));
    let updated = diesel::update(row)
        .filter(allowance_usage::used_minutes.le(limit - charge.minutes))
        .set(allowance_usage::used_minutes.eq(allowance_usage::used_minutes + charge.minutes))
        .execute(conn)?;
    if updated == 0 {
        let used = row
            .select(allowance_usage::used_minutes)
            .first(conn)
            .optional()?
            .unwrap_or(0);
        return Err(BookingWriteError::AllowanceExceeded { limit, used });
    }
    Ok(())
}

pub(super) fn refund_allowance(
    conn: &mut DbConnection,
    b: &Booking,
) -> Result<(), BookingWriteError> {
    if let (Some(org), Some(month)) = (&b.organization_id, &b.allowance_month) {
        let row = allowance_usage::table.find((org, month));
        diesel::update(row)
            .filter(allowance_usage::used_minutes.ge(b.charged_minutes))
            .set(
                allowance_usage::used_minutes.eq(allowance_usage::used_minutes - b.charged_minutes),
            )
            .execute(conn)?;
    }
    Ok(())
}

/// Minutes of `organization_id`'s allowance used in `month`.
pub fn allowance_used(
    conn: &mut DbConnection,
    organization_id: &str,
    month: &str,
) -> Result<i32, DbError> {
    Ok(allowance_usage::table
        .find((organization_id, month))
        .select(allowance_usage::used_minutes)
        .first(conn)
        .optional()?
        .unwrap_or(0))
}

/// An organization's monthly limit and the minutes of `month` already used.
pub fn allowance_status(
    conn: &mut DbConnection,
    organization_id: &str,
    month: &str,
) -> Result<(i32, i32), DbError> {
    let limit: i32 = organizations::table
        .find(organization_id)
        .select(organizations::monthly_allowance_minutes)
        .first(conn)?;
    Ok((limit, allowance_used(conn, organization_id, month)?))
}
