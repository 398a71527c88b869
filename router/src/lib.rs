//! Switchboard router (placeholder during bring-up).
pub mod core;
pub mod metrics;
