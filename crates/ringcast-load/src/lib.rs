//! `ringcast load`: the fan-out load generator.
//!
//! Opens `clients` connections to a server, or round-robin over the nodes
//! of a cluster (client `i` to address `i % n`). The first `publishers` of
//! them send fixed-size lines; every connection reads what the server
//! broadcasts and checks it: how many lines arrived, whether each
//! publisher's lines arrived in order, and how long they took.
//!
//! The line format is described in [`wire`], and what the rates measure in
//! [`report`].
//!
//! # A run
//!
//! 1. Connect every client, in batches.
//! 2. Warm up: client 0 sends a marker line, again every 100 ms, until every
//!    client has received one, so the server is known to have registered
//!    them all. Markers are never counted.
//! 3. Publish for the duration, in one of two ways:
//!    - `max` (closed loop): each publisher keeps at most a window of
//!      lines in flight and sends more as they come back, so the server's
//!      throughput sets the pace and nothing piles up in socket buffers.
//!      By default a line is in flight until every fast reader has it, and
//!      the window moves as TCP's congestion window does: it halves when a
//!      reader finds lines missing and grows back while none are. The
//!      publishers settle near the highest rate every reader keeps up
//!      with, so the figure means the same for a server that drops for
//!      slow readers (ringcast does) and one that slows its publishers
//!      down. With `--paced-by own-connection` a line is in flight only
//!      until the publisher's own connection has it and the window is
//!      fixed: publishers outpace slower readers, which measures overload.
//!      The details are in the `window` module.
//!    - a fixed rate per publisher (open loop), paced in small batches
//!      whatever the server does. Each line carries its scheduled send
//!      time, not the time it was written, so latency includes any time a
//!      line waited to be sent (no coordinated omission; see `publish`).
//!      At `max` lines carry their actual send time.
//! 4. Drain: keep reading until every published line has reached every
//!    client, or nothing has arrived for 2 s, or 10 s have passed since
//!    publishing stopped.
//!
//! # Latency
//!
//! Every delivery's latency, receive time minus the line's timestamp, goes
//! into a histogram (3 significant digits), reported as p50, p90, p99,
//! p99.9 and max. At a fixed rate the timestamp is the line's slot on the
//! open-loop schedule, `start + i / rate`, not the moment it was written:
//! a publisher held up by the server sends what it owes as soon as it
//! can, and the time those lines waited to be sent is in their latency, as
//! it would be for a client with its own clock. Stamping the actual send
//! time would hide such stalls (coordinated omission). Lines due before
//! the end that were never written are counted apart (`unsent`). The
//! generator's own timer resolution (1 ms) is in these latencies too. At
//! `max` there is no schedule, and lines carry their actual send time.
//!
//! # Slow readers
//!
//! A plan may add slow readers on top of its clients ([`SlowReaders`]):
//! connections with a small receive buffer that read a little at a time,
//! or pause, to see what the server does with them and whether they hold
//! up the others. They are tasks of their own that share nothing with the
//! publishers or the fast readers; they take part in the warm-up, but not
//! in "every line reached every client": the run ends when the fast
//! readers are done, and the slow readers are reported apart
//! ([`SlowReport`]). A slow reader the server disconnects is counted, not
//! an error.
//!
//! # TLS
//!
//! With `--tls` ([`PlanBuilder::tls_ca`]) every connection is a TLS
//! client of the server, trusting only the certificates of a CA file, for
//! the name `localhost`. Each reader decrypts what it reads, and each
//! publisher seals what it writes, with rustls on the same tasks as plain
//! sockets ([`tls`]); the plain path calls tokio's sockets directly.
//!
//! # As a library
//!
//! A bench harness builds a [`Plan`], which checks everything once, and
//! awaits [`run`] on a tokio runtime:
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use std::time::Duration;
//!
//! use ringcast_load::{Plan, Rate, SlowReaders};
//!
//! # async fn bench() -> anyhow::Result<()> {
//! let server: SocketAddr = "127.0.0.1:9000".parse()?;
//! let plan = Plan::builder(server)
//!     .clients(100)
//!     .publishers(10)
//!     .duration(Duration::from_secs(5))
//!     .rate(Rate::Max)
//!     .slow_readers(SlowReaders {
//!         count: 2,
//!         ..SlowReaders::default()
//!     })
//!     .build()?;
//! let report = ringcast_load::run(&plan).await?;
//! println!("{report}");
//! assert_eq!(report.loss, 0);
//! # Ok(())
//! # }
//! ```
//!
//! No socket is ever half-closed (the server takes a half-close for a
//! disconnect); they are all dropped at the end. If the server closes a
//! connection before the end, the run fails with an error naming the client.
//!
//! # Layout
//!
//! One module per job:
//!
//! - [`args`]: the clap options of `ringcast load`, nothing more.
//! - [`plan`]: what a run is asked to do, every default and every check.
//! - [`wire`]: the line format: encoding and parsing the header.
//! - `stats`: what one reader counts, and the latency histograms.
//! - [`report`]: the report, as text for people and JSON for scripts.
//! - `run`: orchestration: connect, warm up, publish, drain, sum up.
//! - `conn`: what a connection is to the tasks, plain or TLS; opening
//!   them, writing against a deadline.
//! - `publish`: the publisher tasks and their pacing.
//! - `window`: the closed loop at `max`: each publisher's window, and how
//!   far its lines have come back to every reader.
//! - `read`: the fast reader tasks, and the line checks all readers share.
//! - `slow`: the slow reader tasks and the pacing of their reads.
//! - [`tls`]: `--tls`: the CA to trust, and rustls driven on tokio's
//!   readiness, as plain sockets are.
//! - `progress`: the progress line on stderr.

pub mod args;
mod conn;
pub mod plan;
mod progress;
mod publish;
mod read;
pub mod report;
mod run;
mod shared;
mod slow;
mod stats;
pub mod tls;
mod window;
pub mod wire;

pub use args::LoadArgs;
pub use plan::{PacedBy, Plan, PlanBuilder, PlanError, Rate, SlowMode, SlowReaders, Targets};
pub use report::{Ended, Latency, LatencyFrom, Report, SlowModeName, SlowReport};
pub use run::{run, run_with_progress};
pub use tls::TlsTrust;
pub use wire::{FILLER, HEADER_LEN, Header, Kind, MAX_PUBLISHERS, MAX_SIZE, MIN_SIZE};
