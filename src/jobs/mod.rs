//! Background work: the outbox mailer, booking completion, no-show release, telemetry roll-ups, retention, and
//! the device-health and alarm watch, each run under the supervisor.

pub mod analyze;
pub mod housekeeping;
pub mod mailer;
pub mod release;
pub mod retention;
pub mod rollup;
pub mod supervisor;
pub mod watch;
