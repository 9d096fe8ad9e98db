//! The library's error type.
//!
//! Each error says what failed in its message and carries the cause as its
//! [`source`](std::error::Error::source), not in the message too, so a
//! chain printed with `{:#}` states the cause once.

use std::io;
use std::net::SocketAddr;

/// Why the server could not start or keep running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The listen address could not be bound (in use, not local, no permission).
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the kernel said.
        source: io::Error,
    },
    /// The HTTP endpoints (`--metrics`) could not be started.
    #[error("cannot serve the HTTP endpoints on {addr}")]
    Http {
        /// The address asked for.
        addr: SocketAddr,
        /// What the kernel said.
        source: io::Error,
    },
    /// `--engine uring` was asked for but io_uring cannot be set up here.
    #[error(
        "io_uring is not available; it may be disabled by the kernel.io_uring_disabled sysctl, blocked by seccomp, or limited by RLIMIT_MEMLOCK; use --engine tokio or --engine auto"
    )]
    UringUnavailable(#[source] io::Error),
    /// A runtime could not be built.
    #[error("cannot start the {engine} runtime")]
    Runtime {
        /// Which engine.
        engine: &'static str,
        /// What the kernel said.
        source: io::Error,
    },
    /// A thread could not be spawned.
    #[error("cannot spawn a thread")]
    Thread(#[source] io::Error),
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// What was to be done once the server was ready (such as writing
    /// `--ready-file`) failed.
    #[error("{what}")]
    Ready {
        /// What failed.
        what: String,
        /// What the kernel said.
        source: io::Error,
    },
    /// A core (or the whole engine) stopped while the server was serving:
    /// its clients are gone, and the process should be restarted.
    #[error("{what} stopped unexpectedly; exiting so that a supervisor can restart ringcast")]
    Died {
        /// Which part: "core 1", "the tokio engine", ...
        what: String,
    },
}

impl Error {
    /// True if the configuration is at fault: starting again with the same
    /// one fails the same way. A bad value, `--engine uring` where io_uring
    /// cannot run, an address that is not this machine's or not allowed
    /// (not one already in use: its holder may go), or a `--ready-file`
    /// where none can be written.
    pub fn is_config(&self) -> bool {
        match self {
            Error::Config(_) | Error::UringUnavailable(_) => true,
            Error::Bind { source, .. } | Error::Http { source, .. } => matches!(
                source.raw_os_error(),
                Some(
                    nix::libc::EADDRNOTAVAIL
                        | nix::libc::EACCES
                        | nix::libc::EPERM
                        | nix::libc::EINVAL
                        | nix::libc::EAFNOSUPPORT
                )
            ),
            Error::Ready { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
            ),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_in_use_may_free_up_but_one_not_here_never_does() {
        let bind = |errno| Error::Bind {
            addr: "127.0.0.1:9555".parse().expect("addr"),
            source: io::Error::from_raw_os_error(errno),
        };
        assert!(!bind(nix::libc::EADDRINUSE).is_config());
        assert!(bind(nix::libc::EADDRNOTAVAIL).is_config());
        assert!(bind(nix::libc::EACCES).is_config());
        let ready = |kind: io::ErrorKind| Error::Ready {
            what: "cannot write --ready-file".into(),
            source: kind.into(),
        };
        assert!(ready(io::ErrorKind::NotFound).is_config());
        assert!(!ready(io::ErrorKind::StorageFull).is_config());
    }

    #[test]
    fn a_chain_states_its_cause_once() {
        let e = Error::Bind {
            addr: "127.0.0.1:9555".parse().expect("addr"),
            source: io::Error::from_raw_os_error(98),
        };
        let chain = format!("{:#}", anyhow::Error::from(e));
        assert_eq!(
            chain.matches("Address already in use").count(),
            1,
            "{chain}"
        );
        assert!(
            chain.starts_with("cannot listen on 127.0.0.1:9555: "),
            "{chain}"
        );
    }
}
