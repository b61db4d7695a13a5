//! No-shows: a confirmed booking nobody checked in to within its site's grace after the start is
//! released: status `released`, allowance refunded, the member told by email (an iTIP CANCEL),
//! its credential revoked and the resource free again. The status change is conditional, so of
//! several instances (or a late check-in) exactly one wins.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDateTime, Utc};

use crate::db::bookings::{self, BookingWriteError};
use crate::db::models::{Booking, OutboxRow};
use crate::db::network::{Directory, SiteEntry};
use crate::db::{users, utc, Db, DbError};
use crate::domain::access_control::GrantState;
use crate::domain::policy::MAX_LENGTH;
use crate::email::compose::{self, BookingEvent, BookingMail};
use crate::grants::Grants;
use crate::metrics::Metrics;

/// The address inside a `Name <address>` mailbox (or the whole string).
pub fn organizer_address(mail_from: &str) -> &str {
    match (mail_from.find('<'), mail_from.rfind('>')) {
        (Some(a), Some(b)) if a < b => &mail_from[a + 1..b],
        _ => mail_from,
    }
}

/// Everything a booking's mail or calendar file needs; strings are borrowed from the arguments.
pub fn booking_mail<'a>(
    organizer_email: &'a str,
    b: &'a Booking,
    resource_name: &'a str,
    site: &'a SiteEntry,
    member: (&'a str, &'a str),
    booking_url: &'a str,
) -> BookingMail<'a> {
    BookingMail {
        booking_id: &b.id,
        sequence: b.sequence.max(0) as u32,
        member_name: member.0,
        member_email: member.1,
        resource_name,
        site_name: &site.site.name,
        site_address: &site.site.address,
        timezone: site.tz,
        starts_at: utc(b.starts_at),
        ends_at: utc(b.ends_at),
        created_at: utc(b.created_at),
        booking_url,
        organizer_email,
        access: None,
    }
}

#[derive(Clone)]
pub struct Release {
    pub db: Db,
    pub grants: Arc<Grants>,
    pub directory: Arc<dyn Fn() -> Arc<Directory> + Send + Sync>,
    pub metrics: Arc<Metrics>,
    pub mail_waker: Arc<tokio::sync::Notify>,
    pub public_url: String,
    pub mail_from: String,
    pub every: Duration,
}

impl Release {
    pub async fn run(self) {
        loop {
            match self.pass(Utc::now().naive_utc()).await {
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(bookings = n, "no-shows released");
                    }
                    self.metrics.jobs.ok("release");
                }
                Err(e) => self.metrics.jobs.failed("release", &e),
            }
            tokio::time::sleep(self.every).await;
        }
    }

    /// Releases every booking past its grace at `now`; returns how many.
    pub async fn pass(&self, now: NaiveDateTime) -> Result<usize, DbError> {
        let dir = (self.directory)();
        let since = now - MAX_LENGTH;
        let candidates = self
            .db
            .run(move |c| bookings::unattended(c, since, now))
            .await?;
        let mut released = 0;
        for (id, site_id, starts_at) in candidates {
            let Some(site) = dir.get(&site_id) else {
                continue;
            };
            let grace = chrono::Duration::minutes(i64::from(site.site.no_show_grace_minutes));
            if starts_at + grace > now {
                continue;
            }
            if self.release(&dir, site, &id, now).await? {
                released += 1;
            }
        }
        if released > 0 {
            self.mail_waker.notify_one();
        }
        Ok(released)
    }

    async fn release(
        &self,
        dir: &Directory,
        site: &SiteEntry,
        id: &str,
        now: NaiveDateTime,
    ) -> Result<bool, DbError> {
        let booking_id = id.to_owned();
        let Some(b) = self.db.run(move |c| bookings::find(c, &booking_id)).await? else {
            return Ok(false);
        };
        let Some(resource) = dir.resource(&b.resource_id) else {
            return Ok(false);
        };
        let uid = b.user_id.clone();
        let Some(member) = self.db.run(move |c| users::by_id(c, &uid)).await? else {
            return Ok(false);
        };
        let url = format!("{}/api/v1/bookings/{}", self.public_url, b.id);
        let mut next = b.clone();
        next.sequence += 1;
        let mail = compose::booking(
            BookingEvent::Released,
            &booking_mail(
                organizer_address(&self.mail_from),
                &next,
                &resource.resource.name,
                site,
                (&member.name, &member.email),
                &url,
            ),
        );
        let payload = serde_json::to_string(&mail)
            .map_err(|e| DbError::Unavailable(format!("release mail: {e}")))?;
        let row = OutboxRow::due("booking_released", payload, now);
        let booking_id = b.id.clone();
        match self
            .db
            .run(move |c| bookings::release(c, &booking_id, now, &row))
            .await
        {
            Ok(_) => {
                self.grants.revoke(&b.id, GrantState::Released);
                self.metrics.access.released.fetch_add(1, Ordering::Relaxed);
                tracing::info!(booking = %b.id, site = %b.site_id, "no-show released");
                Ok(true)
            }
            Err(BookingWriteError::WrongStatus(_) | BookingWriteError::NotFound) => Ok(false),
            Err(BookingWriteError::Db(e)) => Err(e),
            Err(e) => Err(DbError::Unavailable(e.to_string())),
        }
    }
}
