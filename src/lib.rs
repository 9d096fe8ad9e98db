//! ringcast: a line-broadcast TCP server. Every complete line a client
//! sends is written, byte for byte, to every connected client, the sender
//! included.
//!
//! # Layout
//!
//! - [`line`]: the line splitter; pure, no I/O.
//! - [`limits`]: the client cap, accept backoff and log throttling.
//! - [`queue`]: the bounded per-connection queue and its drop policy.
//! - [`coalesce`]: holds writes back briefly while a core is busy, so one
//!   write carries many lines.
//! - [`fanout`]: the cross-core mesh of bounded rings with doorbells.
//! - [`net`]: socket setup (SO_REUSEPORT, SO_SNDBUF) and the io_uring probe.
//! - [`metrics`]: per-core counters, summed on scrape, and `/metrics`.
//! - [`cluster`]: the NATS bridge that shares lines between nodes.
//! - [`server`]: binds, picks the engine, runs until shutdown, drains.
//! - `engine`: what both engines share (accept loop, idle sweep, and the
//!   roster of connections that fan-out walks).
//! - `engine/uring`: one pinned tokio-uring runtime per core (the product).
//! - `engine/tokio`: a multi-threaded tokio runtime (the baseline).
//! - [`cli`]: the command line, shared by the binary and its tests.
//! - [`load`]: `ringcast load`, the fan-out load generator and its report.
//! - [`config`] and [`error`]: what the server is told and what can go wrong.

pub mod cli;
pub mod cluster;
pub mod coalesce;
pub mod config;
mod engine;
pub mod error;
pub mod fanout;
pub mod limits;
pub mod line;
pub mod load;
pub mod metrics;
pub mod net;
pub mod queue;
pub mod server;

pub use config::{Config, Engine, EngineChoice};
pub use error::Error;
pub use server::Server;
