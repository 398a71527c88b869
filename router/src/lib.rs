//! The Switchboard router: the shell that serves the routing core over QUIC,
//! and the `switchboard` binary (`src/main.rs`).
//!
//! The layers, one crate each:
//! - `switchboard_core`: the sans-IO heart. Its `Shard` owns a partition of
//!   users (sessions, presence, inboxes, rooms) and is driven by
//!   `handle*`/`poll*` calls with the time as an argument.
//! - `switchboard_quic`: the endpoint driver, one task per UDP socket
//!   driving every quinn-proto connection on it, shared with the load
//!   generator.
//! - this crate, the shell:
//!   - [`server`]: [`server::Server`] binds, runs one task per shard and one
//!     endpoint driver per socket (running the router's sessions), and
//!     drains on shutdown;
//!   - [`auth`]: token verification;
//!   - [`config`]: the one typed [`config::Config`] and its layering;
//!   - [`tls`] and [`dev`]: certificates, and the embedded dev default;
//!   - [`engine`]: what a cluster keeps in Redis (being built: node
//!     liveness so far);
//!   - [`metrics`]: every metric name, in one place;
//!   - `admin`: the admin HTTP listener (`/metrics`, `/livez`, `/readyz`,
//!     the server API).
#![forbid(unsafe_code)]

mod admin;
pub mod auth;
pub mod config;
pub mod dev;
pub mod engine;
pub mod metrics;
pub mod server;
pub mod tls;
