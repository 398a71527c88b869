//! End-to-end tests over real QUIC on loopback, one module per area.
//!
//! They live in one test binary rather than one per file: each binary links the
//! whole router, client, load generator and HTTP stack, so a dozen of them cost
//! gigabytes of disk and minutes of linking for nothing. Only `metrics` stays
//! apart, because it installs the process-global metrics recorder, and
//! `flood`, because it measures the process's memory.

mod admin;
mod bad_input;
mod delivery;
mod engine_inbox;
mod engine_liveness;
mod engine_redis;
mod fuzz_corpus;
mod lifecycle;
mod limits;
mod load_smoke;
mod messaging;
mod presence;
mod rooms;
mod server_api;
mod signals;
mod webhook;
