//! The service's behaviour, driven over HTTP against SQLite and PostgreSQL.

mod helpers;

mod access;
mod accounts;
mod acl;
mod authorization;
mod bad_input;
mod building;
mod concurrency;
mod crash;
mod dst;
mod email;
mod energy;
mod mosquitto;
mod network;
mod openapi;
mod ops;
mod simulator;
mod telemetry;
mod telemetry_api;
mod telemetry_crash;
