//! ringcast: a line-broadcast TCP server. Every complete line a client
//! sends is written, byte for byte, to every connected client, the sender
//! included.
//!
//! # Layout
//!
//! One line per module, in the groups the folders show. A message's path
//! through them is in `docs/design.md`.
//!
//! - [`server`], [`config`], [`error`]: the front door. Bind a
//!   [`Server`] with a [`Config`], run it until a shutdown future resolves.
//! - `policy/`: decisions with no I/O, the same for both engines.
//!   - `run`: the unit of fan-out, a read's lines as one buffer.
//!   - `codec/`: `line` (bytes into lines, and the reference model the
//!     fuzzer uses), `inbound` (how much a connection reads next, into
//!     which buffer), `websocket` (the handshake and frames, in and out).
//!   - `send/`: `outbound` (a connection's queue and what it drops;
//!     `outbound::send`, what it hands the kernel; `outbound::outcome`, the
//!     one answer every call on it gives), `patience` (how long a core may
//!     hold messages, in all, for clients behind), `coalesce` (when a busy
//!     core holds writes back), `tls` (certificates and their reload, and one
//!     connection's rustls state, which seals from the queue).
//!   - `admission/`: `limits` (the client caps, in all and per address,
//!     accept backoff, log throttling).
//! - `sys/`: the operating system.
//!   - `net`: sockets (SO_REUSEPORT, SO_SNDBUF) and the io_uring probe.
//!   - `send`: the non-blocking send of the tokio engine.
//!   - `sendring`: the uring engine's send ring: a core's sends in one
//!     submission, and its polls for room (the io_uring `unsafe`).
//!   - `timer`: the timerfd the coalescer sleeps on.
//! - `engine/`: the runtimes (`engine/mod.rs`: what a runtime starts
//!   with, failpoints).
//!   - `session/`: one connection's whole life, written once for both
//!     engines: `state` (its state, and every change to it; `state::send`,
//!     its writer's side), `read` (bytes
//!     in, runs out), `deliver` (runs offered to a core's connections),
//!     `write` (after the kernel answered a send), `log` (what it logs),
//!     `host` (what it needs from its engine).
//!   - `lifecycle`: a core's (or the tokio runtime's) whole life, written
//!     once: accept, admit, `/clients`, the idle sweep, lame duck, the
//!     drain and closing.
//!   - `mesh`: the bounded rings between `uring`'s cores.
//!   - `roster`: a core's connections, as fan-out walks them.
//!   - `uring/`, `tokio/`: each engine's runtime glue and its `conn`
//!     (`uring/flush`: a core's sends, round by round).
//! - `ops/`: what operators see.
//!   - [`ops::metrics`]: per-core counters, summed on scrape
//!     (`metrics::text`: their Prometheus text).
//!   - `process`: the standard process metrics, from `/proc/self`.
//!   - [`ops::clients`]: the `/clients` view of who is connected.
//!   - `http`: the `--metrics` endpoints (`/metrics`, `/healthz`,
//!     `/readyz`, `/clients`), on a runtime of their own.
//!   - `cluster/`: the NATS bridge that shares lines between nodes (`ends`:
//!     the engines' ends of it; `events`: naming and logging the server it
//!     is on; `split`: cutting batches to `max_payload` and lines to
//!     `--max-line`).
//! - `internals`: what the benches and the fuzz target reach inside, behind
//!   the `internals` feature.
//!
//! # Example
//!
//! ```no_run
//! # async fn example() -> Result<(), ringcast::Error> {
//! let config = ringcast::Config {
//!     listen: "127.0.0.1:9000".parse().expect("an address"),
//!     ..ringcast::Config::default()
//! };
//! let server = ringcast::Server::bind(config)?;
//! println!("clients connect to {}", server.local_addr());
//! server.run(async { tokio::signal::ctrl_c().await.ok(); }).await
//! # }
//! ```

pub mod config;
mod engine;
pub mod error;
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod internals;
pub mod ops;
mod policy;
pub mod server;
mod sys;

pub use config::{ClusterConfig, Config, Engine, EngineChoice};

/// The git commit this build came from (`-modified` if the tree had
/// changes), or `unknown`.
pub const COMMIT: &str = env!("RINGCAST_COMMIT");
pub use error::Error;
pub use policy::send::tls::Certs;
pub use server::Server;
