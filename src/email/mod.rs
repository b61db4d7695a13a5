//! Outgoing mail: bilingual templates, iCalendar invitations and delivery.
//!
//! Self-contained on purpose: it depends on no other module of the crate, so
//! callers translate their domain types into the plain structs defined here.

pub mod compose;
pub mod ical;
pub mod templates;
pub mod transport;

pub use ical::{CalendarEvent, Method};
pub use templates::{BookingDetails, RenderedMail};
pub use transport::{build_message, MailConfig, MailError, Mailer, OutgoingMail};
