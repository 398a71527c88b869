//! The Switchboard router: a presence and direct-message router for chat
//! backends, serving QUIC sessions.
//!
//! Where things live:
//! - `switchboard_core` (a crate of its own): the sans-IO heart, whose
//!   `Shard` owns a partition of users (sessions, presence, routing) and is
//!   driven by `handle*`/`poll*` calls with the time as an argument.
//! - [`server`]: the QUIC/tokio shell: [`server::Server`] binds, runs one task
//!   per shard and one quinn-proto driver per UDP socket (or, with
//!   `shell = "tasks"`, quinn with one task per connection), and drains on
//!   shutdown.
//! - [`quic`]: plumbing for a task driving many quinn-proto connections on
//!   one socket, shared with the lean load generator.
//! - [`auth`]: HS256 token verification and minting.
//! - [`config`]: the one typed [`config::Config`] and its layering.
//! - [`tls`] and [`dev`]: certificates, and the embedded dev defaults.
//! - [`metrics`]: every metric name, in one place.
//! - [`huge_pages`]: the heap on transparent huge pages (a restart at start).
//! - [`runtime`]: the router's and the load generator's tokio runtimes.
//! - `admin`: the admin HTTP listener (`/metrics`, `/livez`, `/readyz`).
#![forbid(unsafe_code)]

mod admin;
pub mod auth;
pub mod config;
pub mod dev;
pub mod huge_pages;
pub mod metrics;
pub mod quic;
pub mod runtime;
pub mod server;
pub mod tls;
pub mod tls_session;
