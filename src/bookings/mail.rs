//! A booking's mail: the context every booking mail and calendar file is composed from, and
//! the one way any mail (bookings, sign-up, verification, release) becomes an outbox row.

use chrono::NaiveDateTime;

use crate::db::models::{Booking, OutboxRow};
use crate::db::network::SiteEntry;
use crate::db::utc;
use crate::email::compose::{BookingMail, QueuedMail};

/// The address inside a `Name <address>` mailbox (or the whole string).
pub fn organizer_address(mail_from: &str) -> &str {
    match (mail_from.find('<'), mail_from.rfind('>')) {
        (Some(a), Some(b)) if a < b => &mail_from[a + 1..b],
        _ => mail_from,
    }
}

/// Everything a booking's mail or calendar file needs; strings are borrowed from the arguments.
/// `mail_from` is the service's `From` mailbox, whose address organizes the calendar event.
pub fn context<'a>(
    mail_from: &'a str,
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
        organizer_email: organizer_address(mail_from),
        access: None,
    }
}

/// An outbox row carrying `mail`, due at `now`, to be inserted in the transaction of the change
/// it announces.
pub fn enqueue(kind: &str, mail: &QueuedMail, now: NaiveDateTime) -> Result<OutboxRow, String> {
    let payload = serde_json::to_string(mail).map_err(|e| format!("{kind} mail: {e}"))?;
    Ok(OutboxRow::due(kind, payload, now))
}
