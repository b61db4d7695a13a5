//! Making a booking: checked against the resource, the site and the policy from the directory
//! alone, then stored with everything that comes with it in one transaction.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::charging::{self, ChargingPlan, ChargingWish};
use super::{mail, Env, Error};
use crate::db::access::{CredentialRow, NewCredential};
use crate::db::bookings::{self as store, AllowanceCharge};
use crate::db::models::Booking;
use crate::db::naive;
use crate::db::network::{Directory, ResourceEntry, SiteEntry};
use crate::domain::access::Caller;
use crate::domain::policy::{self, BookingContext};
use crate::domain::{BookingStatus, FieldError, TimeRange};
use crate::email::compose::{self, AccessMail, BookingEvent};

/// A booking as asked for: times as RFC 3339 text with an offset, as a member types them.
#[derive(Clone, Debug, Default)]
pub struct NewBooking {
    pub resource_id: String,
    pub starts_at: String,
    pub ends_at: String,
    /// Default 1.
    pub attendees: Option<i32>,
    pub note: Option<String>,
    /// For an EV bay: the car's energy target and charging mode.
    pub charging: Option<ChargingWish>,
}

/// What is being booked, once the resource is known.
#[derive(Clone)]
pub struct Target {
    pub resource: Arc<ResourceEntry>,
    pub site: Arc<SiteEntry>,
}

/// A request that passed every check that needs no lock.
pub struct Checked {
    pub target: Target,
    pub range: TimeRange,
    pub attendees: i32,
    pub note: Option<String>,
    pub charge: Option<AllowanceCharge>,
    pub charging: Option<ChargingWish>,
}

/// A booking just stored, with its place and (for an EV bay) its charging plan.
pub struct Created {
    pub booking: Booking,
    pub site: Arc<SiteEntry>,
    pub resource: Arc<ResourceEntry>,
    pub charging: Option<ChargingPlan>,
}

/// Parses a booking request and checks it against the resource, the site and the policy at
/// `now`, from the directory alone. Every problem is reported, each naming its field; the
/// target is known whenever the resource is.
pub fn check(
    dir: &Directory,
    caller: &Caller,
    req: &NewBooking,
    now: DateTime<Utc>,
) -> (Option<Target>, Result<Checked, Vec<FieldError>>) {
    let mut errors: Vec<FieldError> = Vec::new();
    let range = match TimeRange::parse(&req.starts_at, &req.ends_at, "starts_at", "ends_at") {
        Ok(r) => Some(r),
        Err(e) => {
            errors.extend(e);
            None
        }
    };
    if req.note.as_ref().is_some_and(|n| n.chars().count() > 1000) {
        errors.push(FieldError::new("note", "must be at most 1000 characters"));
    }
    let target = dir.resource(req.resource_id.trim()).and_then(|r| {
        dir.get(&r.resource.site_id).map(|site| Target {
            resource: r.clone(),
            site: site.clone(),
        })
    });
    let Some(target) = target else {
        let message = if req.resource_id.trim().is_empty() {
            "is required"
        } else {
            "no such resource"
        };
        errors.push(FieldError::new("resource_id", message));
        return (None, Err(errors));
    };
    let Some(range) = range else {
        return (Some(target), Err(errors));
    };
    let attendees = req.attendees.unwrap_or(1);
    let site = target.site.clone();
    let closed = |d| site.closure(d).is_some();
    let ctx = BookingContext {
        kind: target.resource.kind,
        capacity: target.resource.resource.capacity,
        hours: &site.hours,
        timezone: site.tz,
        closed: &closed,
        now,
    };
    errors.extend(policy::check_booking(&ctx, &range, attendees));
    if let Some(wish) = &req.charging {
        errors.extend(charging::validate(wish, target.resource.kind));
    }
    if !errors.is_empty() {
        return (Some(target), Err(errors));
    }
    let charge = caller.organization_id.as_ref().map(|o| AllowanceCharge {
        organization_id: o.clone(),
        month: policy::allowance_month(&range, site.tz),
        minutes: policy::charged_minutes(&range),
    });
    let note = req
        .note
        .as_ref()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty());
    (
        Some(target.clone()),
        Ok(Checked {
            target,
            range,
            attendees,
            note,
            charge,
            charging: req.charging.clone(),
        }),
    )
}

/// Checks and stores one booking for `caller`: the allowance charge, the booking, its door
/// credential, its confirmation mail and its charging plan commit together or not at all.
/// Afterwards the booking's grant is loaded for the doors and the mailer is woken.
pub async fn create(env: Env<'_>, caller: &Caller, req: NewBooking) -> Result<Created, Error> {
    let now_utc = Utc::now();
    let checked = check(env.directory, caller, &req, now_utc)
        .1
        .map_err(Error::Invalid)?;
    let now = naive(now_utc);
    let Target { resource, site } = checked.target;
    let charge = checked.charge;
    let booking = Booking {
        id: uuid::Uuid::now_v7().to_string(),
        resource_id: resource.resource.id.clone(),
        site_id: site.site.id.clone(),
        user_id: caller.user_id.clone(),
        organization_id: caller.organization_id.clone(),
        starts_at: naive(checked.range.start()),
        ends_at: naive(checked.range.end()),
        status: BookingStatus::Confirmed,
        attendees: checked.attendees,
        note: checked.note,
        charged_minutes: charge.as_ref().map_or(0, |ch| ch.minutes),
        allowance_month: charge.as_ref().map(|ch| ch.month.clone()),
        sequence: 0,
        created_at: now,
        updated_at: now,
        checked_in_at: None,
        cancelled_at: None,
    };
    let charging = match &checked.charging {
        Some(wish) => Some(charging::plan(env.db, &site, &booking, wish).await?),
        None => None,
    };
    let plan_row = charging.as_ref().map(|p| p.row(&booking.id, now));
    let credential = NewCredential::fresh(
        &booking.id,
        &booking.site_id,
        booking.starts_at,
        booking.ends_at,
        now,
    )?;
    let compose_mail = {
        let (b, site, resource_name) = (
            booking.clone(),
            site.clone(),
            resource.resource.name.clone(),
        );
        let member = (caller.name.clone(), caller.email.clone());
        let (from, url) = (env.mail_from.to_owned(), env.booking_url(&booking.id));
        move |issued: &CredentialRow| {
            let access_url = format!("{url}/access");
            let mut ctx = mail::context(
                &from,
                &b,
                &resource_name,
                &site,
                (&member.0, &member.1),
                &url,
            );
            ctx.access = Some(AccessMail {
                pin: &issued.pin,
                token: &issued.token,
                access_url: &access_url,
            });
            let composed = compose::booking(BookingEvent::Confirmed, &ctx);
            // A composed mail is strings only, so it always serialises; were it not to, the
            // row is stored empty and the mailer parks it as not a mail.
            mail::enqueue("booking_confirmed", &composed, Utc::now().naive_utc()).unwrap_or_else(
                |e| {
                    tracing::error!(booking = %b.id, error = %e, "confirmation mail not queued");
                    crate::db::models::OutboxRow::due("booking_confirmed", String::new(), now)
                },
            )
        }
    };
    let (b, ch) = (booking.clone(), charge.clone());
    let stored = env
        .db
        .run(move |conn| {
            store::create(
                conn,
                &b,
                ch.as_ref(),
                &credential,
                plan_row.as_ref(),
                compose_mail,
            )
        })
        .await;
    match stored.map_err(Error::from) {
        Ok(_) => {}
        Err(Error::Overlap) => {
            env.metrics
                .events
                .booking_conflicts
                .fetch_add(1, Ordering::Relaxed);
            return Err(Error::Overlap);
        }
        Err(Error::AllowanceExceeded { limit, used, .. }) => {
            return Err(Error::AllowanceExceeded {
                month: booking.allowance_month.clone().unwrap_or_default(),
                limit,
                used,
                needed: booking.charged_minutes,
            });
        }
        Err(e) => return Err(e),
    }
    env.metrics
        .events
        .bookings_created
        .fetch_add(1, Ordering::Relaxed);
    env.mail_waker.notify_one();
    env.grants.refresh(env.db, &booking.id).await;
    Ok(Created {
        booking,
        site,
        resource,
        charging,
    })
}
