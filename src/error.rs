//! The library's error type.

use std::io;
use std::net::SocketAddr;

/// Why the server could not start or keep running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The listen address could not be bound (in use, not local, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the kernel said.
        source: io::Error,
    },
    /// The metrics endpoint could not be started.
    #[error("cannot serve metrics on {addr}: {reason}")]
    Metrics {
        /// The address asked for.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// `--engine uring` was asked for but io_uring cannot be set up here.
    #[error(
        "io_uring is not available ({0}); it may be disabled by the kernel.io_uring_disabled sysctl or blocked by seccomp; use --engine tokio or --engine auto"
    )]
    UringUnavailable(io::Error),
    /// A runtime could not be built.
    #[error("cannot start the {engine} runtime: {source}")]
    Runtime {
        /// Which engine.
        engine: &'static str,
        /// What the kernel said.
        source: io::Error,
    },
    /// A thread could not be spawned.
    #[error("cannot spawn a thread: {0}")]
    Thread(io::Error),
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
}
