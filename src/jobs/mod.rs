//! Background work that claims rows: the outbox mailer, booking completion, directory refresh.

pub mod housekeeping;
pub mod mailer;
