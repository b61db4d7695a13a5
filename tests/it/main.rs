//! The service's behaviour, driven over HTTP against SQLite and PostgreSQL.

mod helpers;

mod access;
mod accounts;
mod acl;
mod authorization;
mod bad_input;
mod booking_module;
mod building;
mod concurrency;
mod crash;
mod dst;
mod email;
mod energy;
mod ingest_redelivery;
mod mosquitto;
mod network;
mod openapi;
mod ops;
mod resilience;
mod simulator;
mod telemetry;
mod telemetry_api;
mod telemetry_crash;
