//! The building side: MQTT. For now, the broker embedded in the process.

pub mod broker;
pub mod charging;
pub mod climate;
pub mod doors;
pub mod grant_lists;
pub mod ingest;
pub mod mosquitto;
