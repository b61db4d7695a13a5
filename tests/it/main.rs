//! The service's behaviour, driven over HTTP against SQLite and PostgreSQL.

mod helpers;

mod accounts;
mod authorization;
mod bad_input;
mod concurrency;
mod crash;
mod dst;
mod email;
mod network;
mod ops;
