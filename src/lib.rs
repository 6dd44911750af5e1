//! TAI Autonomics: per-tenant autonomic governance on supervised actix actors.
//! See README.md › Architecture for the map of the crate.

pub mod auth;
pub mod clock;
pub mod config;
pub mod entitlements;
pub mod governor;
pub mod http;
pub mod intake;
pub mod mcp;
pub mod pubsub;
pub mod receipts;
pub mod startup;
pub mod telemetry;
pub mod tenant;
pub mod tree;
