//! Decisions with no I/O, each unit-tested without a socket, in three
//! groups that import only downwards (`send` uses `run`, nothing here
//! uses `engine/` or `ops/`):
//!
//! - `run`: the unit of fan-out, a read's lines as one buffer: the word
//!   every group shares.
//! - `codec/`: bytes in and out of the wire formats.
//!   - `line`: bytes into lines (and the reference model the fuzzer uses).
//!   - `inbound`: how much a connection reads next, into which buffer.
//!   - `websocket`: the WebSocket handshake and frames, in and out.
//! - `send/`: what a connection does with an offered message.
//!   - `outbound`: a connection's queue, what it hands the kernel, and
//!     what it drops.
//!   - `patience`: how long a core may hold messages, in all, for clients
//!     that are behind.
//!   - `coalesce`: when a busy core holds writes back.
//!   - `tls`: certificates and their reload, and one connection's rustls
//!     state, which seals from the queue.
//! - `admission/`: who may connect.
//!   - `limits`: the client caps (in all and per address), accept backoff,
//!     log throttling.

pub(crate) mod admission;
pub(crate) mod codec;
pub(crate) mod run;
pub(crate) mod send;
