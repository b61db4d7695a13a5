//! Ending a confirmed booking before its time: cancelled by someone allowed to, or released as a
//! no-show past its site's grace. The status change, the allowance refund and the mail (an iTIP
//! CANCEL, `SEQUENCE` one higher) commit together; the door grant is revoked before this returns.
//! The status change is conditional, so of racing callers (or a late check-in) exactly one wins.

use std::sync::atomic::Ordering;

use chrono::NaiveDateTime;

use super::{mail, member_of, Env, Error};
use crate::db::bookings as store;
use crate::db::models::Booking;
use crate::domain::access_control::GrantState;
use crate::domain::policy::MAX_LENGTH;
use crate::email::compose::{self, BookingEvent};

/// Why a booking ends early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withdrawal {
    /// The member, a company admin or the site's staff cancelled it.
    Cancel,
    /// Nobody checked in within the site's grace after the start.
    Release,
}

/// Withdraws `b` at `now`; answers the booking as stored afterwards.
pub async fn withdraw(
    env: Env<'_>,
    b: &Booking,
    why: Withdrawal,
    now: NaiveDateTime,
) -> Result<Booking, Error> {
    let (site, resource) = env.place_of(b)?;
    let member = member_of(env.db, b).await?;
    let url = env.booking_url(&b.id);
    // Only a confirmed booking can be withdrawn, once, and that raises SEQUENCE by one.
    let mut next = b.clone();
    next.sequence += 1;
    let (event, kind) = match why {
        Withdrawal::Cancel => (BookingEvent::Cancelled, "booking_cancelled"),
        Withdrawal::Release => (BookingEvent::Released, "booking_released"),
    };
    let composed = compose::booking(
        event,
        &mail::context(
            env.mail_from,
            &next,
            &resource.resource.name,
            &site,
            (&member.name, &member.email),
            &url,
        ),
    );
    let row = mail::enqueue(kind, &composed, now).map_err(Error::Mail)?;
    let id = b.id.clone();
    let updated = env
        .db
        .run(move |c| match why {
            Withdrawal::Cancel => store::cancel(c, &id, now, &row),
            Withdrawal::Release => store::release(c, &id, now, &row),
        })
        .await?;
    match why {
        Withdrawal::Cancel => {
            env.grants.revoke(&updated.id, GrantState::Cancelled);
            env.metrics
                .events
                .bookings_cancelled
                .fetch_add(1, Ordering::Relaxed);
        }
        Withdrawal::Release => {
            env.grants.revoke(&updated.id, GrantState::Released);
            env.metrics.access.released.fetch_add(1, Ordering::Relaxed);
            tracing::info!(booking = %updated.id, site = %updated.site_id, "no-show released");
        }
    }
    env.mail_waker.notify_one();
    Ok(updated)
}

/// Releases every confirmed booking past its site's grace at `now`; answers how many. A booking
/// checked in, cancelled or gone meanwhile is skipped.
pub async fn release_no_shows(env: Env<'_>, now: NaiveDateTime) -> Result<usize, Error> {
    let since = now - MAX_LENGTH;
    let candidates = env
        .db
        .run(move |c| store::unattended(c, since, now))
        .await?;
    let mut released = 0;
    for (id, site_id, starts_at) in candidates {
        let Some(site) = env.directory.get(&site_id) else {
            continue;
        };
        let grace = chrono::Duration::minutes(i64::from(site.site.no_show_grace_minutes));
        if starts_at + grace > now {
            continue;
        }
        let Some(b) = env.db.run(move |c| store::find(c, &id)).await? else {
            continue;
        };
        match withdraw(env, &b, Withdrawal::Release, now).await {
            Ok(_) => released += 1,
            Err(Error::WrongStatus(_) | Error::NotFound | Error::UnknownPlace(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(released)
}
