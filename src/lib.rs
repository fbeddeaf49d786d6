//! maxbridge: a Matrix application-service bridge to the MAX messenger.
//!
//! - [`matrix`]: the appservice layer (HTTP server, homeserver client); knows nothing of MAX.
//! - [`bridge`]: the core joining MAX (the `maxproto` crate) and Matrix: logins, portals, ghosts, commands.
//! - [`store`]: PostgreSQL storage, one module per table.
//! - [`config`]: the YAML configuration and the appservice registration.
//! - [`queue`]: per-key ordered work queues used on both sides.
//! - [`retry`]: waiting out an outage with bounded backoff.
//! - [`fetch`]: fetching URLs from outside: public addresses only, bounded.
//! - [`app`]: starting and stopping a bridge.

pub mod app;
pub mod bridge;
pub mod config;
pub mod fetch;
pub mod matrix;
pub mod metrics;
pub mod queue;
pub mod retry;
pub mod store;
