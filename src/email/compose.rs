//! The mails Spazi sends, composed in full when their change commits and queued as JSON.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::ical::{self, CalendarEvent, Method};
use super::templates::{self, BookingDetails};
use super::transport::OutgoingMail;
use crate::domain::access_control::qr_svg;

/// A mail as stored in the outbox: everything needed to send it, nothing to look up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedMail {
    pub message_id: String,
    pub to: String,
    pub subject: String,
    pub text: String,
    /// iTIP method and iCalendar body.
    pub calendar: Option<(String, String)>,
    /// An inline SVG image: file name and document.
    #[serde(default)]
    pub image: Option<(String, String)>,
}

impl QueuedMail {
    pub fn into_outgoing(self, from: &str) -> OutgoingMail {
        OutgoingMail {
            message_id: self.message_id,
            from: from.to_string(),
            to: self.to,
            subject: self.subject,
            text: self.text,
            calendar: self.calendar,
            image: self.image,
        }
    }
}

pub fn verification(to: &str, name: &str, link: &str) -> QueuedMail {
    let m = templates::verification(name, link);
    QueuedMail {
        message_id: format!("verify-{}@spazi", uuid::Uuid::new_v4()),
        to: to.to_string(),
        subject: m.subject,
        text: m.text,
        calendar: None,
        image: None,
    }
}

/// Sent instead of a verification when someone signs up with an address already registered.
pub fn already_registered(to: &str, login_url: &str) -> QueuedMail {
    let text = format!(
        "Qualcuno (forse tu) ha provato a registrarsi a Spazi per l'Italia con questo indirizzo, \
         che ha già un account. Puoi accedere da {login_url}. Se non sei stato tu, ignora questo messaggio.\n\n\
         ------------------------------------------------------------\n\n\
         Someone (perhaps you) tried to sign up to Spazi per l'Italia with this address, which already \
         has an account. You can log in at {login_url}. If it was not you, ignore this message.\n\n\
         Spazi per l'Italia – Poste Italiane\n"
    );
    QueuedMail {
        message_id: format!("signup-{}@spazi", uuid::Uuid::new_v4()),
        to: to.to_string(),
        subject: "Hai già un account / You already have an account – Spazi per l'Italia".into(),
        text,
        calendar: None,
        image: None,
    }
}

/// What a booking mail needs, whatever the booking's state.
pub struct BookingMail<'a> {
    pub booking_id: &'a str,
    pub sequence: u32,
    pub member_name: &'a str,
    pub member_email: &'a str,
    pub resource_name: &'a str,
    pub site_name: &'a str,
    pub site_address: &'a str,
    pub timezone: Tz,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub booking_url: &'a str,
    pub organizer_email: &'a str,
    /// The door credential, for the confirmation.
    pub access: Option<AccessMail<'a>>,
}

/// A booking's door credential as its confirmation shows it.
#[derive(Clone, Copy)]
pub struct AccessMail<'a> {
    pub pin: &'a str,
    pub token: &'a str,
    /// Where the owner finds the credential (`…/bookings/{id}/access`).
    pub access_url: &'a str,
}

/// File name of the QR code attached to a confirmation.
pub const QR_FILENAME: &str = "accesso-qr.svg";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookingEvent {
    Confirmed,
    Cancelled,
    Released,
}

/// The stable iCalendar UID of a booking: every update of it names the same event.
pub fn booking_uid(booking_id: &str) -> String {
    format!("booking-{booking_id}@spazi")
}

pub fn booking(event: BookingEvent, b: &BookingMail) -> QueuedMail {
    let details = BookingDetails {
        member_name: b.member_name,
        resource_name: b.resource_name,
        site_name: b.site_name,
        site_address: b.site_address,
        starts_local: b.starts_at.with_timezone(&b.timezone),
        ends_local: b.ends_at.with_timezone(&b.timezone),
        booking_url: b.booking_url,
        access: b
            .access
            .filter(|_| event == BookingEvent::Confirmed)
            .map(|a| (a.pin, a.access_url)),
    };
    let (rendered, method, tag) = match event {
        BookingEvent::Confirmed => (
            templates::booking_confirmed(&details),
            Method::Request,
            "confirmed",
        ),
        BookingEvent::Cancelled => (
            templates::booking_cancelled(&details),
            Method::Cancel,
            "cancelled",
        ),
        BookingEvent::Released => (
            templates::booking_released(&details),
            Method::Cancel,
            "released",
        ),
    };
    let ics = calendar(b, method);
    QueuedMail {
        message_id: format!("booking-{}-{tag}-{}@spazi", b.booking_id, b.sequence),
        to: b.member_email.to_string(),
        subject: rendered.subject,
        text: rendered.text,
        calendar: Some((method.as_str().to_string(), ics)),
        image: b
            .access
            .filter(|_| event == BookingEvent::Confirmed)
            .map(|a| (QR_FILENAME.to_string(), qr_svg(a.token))),
    }
}

/// The booking's calendar file as served by `GET /bookings/{id}/ics`.
pub fn booking_ics(b: &BookingMail, cancelled: bool) -> String {
    calendar(
        b,
        if cancelled {
            Method::Cancel
        } else {
            Method::Request
        },
    )
}

fn calendar(b: &BookingMail, method: Method) -> String {
    let uid = booking_uid(b.booking_id);
    let summary = format!("Spazi – {}, {}", b.resource_name, b.site_name);
    let location = format!("{}, {}", b.site_name, b.site_address);
    ical::render(&CalendarEvent {
        uid: &uid,
        sequence: b.sequence,
        method,
        summary: &summary,
        location: &location,
        description: &format!("{} – {}", b.resource_name, b.booking_url),
        starts_at: b.starts_at,
        ends_at: b.ends_at,
        created_at: b.created_at,
        organizer_email: b.organizer_email,
        attendee_email: b.member_email,
        attendee_name: b.member_name,
        url: Some(b.booking_url),
    })
}
