//! The service's behaviour, driven over HTTP against SQLite and PostgreSQL.

mod helpers;

mod accounts;
mod authorization;
mod bad_input;
mod concurrency;
mod dst;
mod crash;
mod email;
mod network;
mod ops;
