//! Spazi: booking and building management for the Spazi per l'Italia coworking network.

pub mod api;
pub mod bookings;
pub mod cli;
pub mod config;
pub mod db;
pub mod domain;
pub mod email;
pub mod fleet;
pub mod grants;
pub mod jobs;
pub mod metrics;
pub mod sim;
pub mod startup;
pub mod telemetry;
