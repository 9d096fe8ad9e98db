//! The command line.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config, EngineChoice};

/// ringcast: every line any client sends goes to every connected client.
#[derive(Debug, Parser)]
#[command(name = "ringcast", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broadcast server.
    ///
    /// Each newline-terminated message from any client is written to every
    /// connected client, the sender included. Try it: run the server, then
    /// `nc 127.0.0.1 9000` in two terminals and type.
    Serve(ServeArgs),
}

/// `ringcast serve` options.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to accept clients on.
    #[arg(long, default_value = config::DEFAULT_LISTEN, value_name = "ADDR")]
    pub listen: SocketAddr,

    /// I/O engine: `uring` (one io_uring runtime per core), `tokio` (epoll
    /// baseline), or `auto` (uring if the kernel allows it, else tokio).
    #[arg(long, value_enum, default_value_t = EngineChoice::Auto)]
    pub engine: EngineChoice,

    /// Worker threads, one per core [default: number of available cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,

    /// Per-client outgoing queue, in messages. When a client's socket is not
    /// draining and its queue is full, new messages are dropped for that
    /// client alone and counted.
    #[arg(long, value_name = "N", default_value_t = config::DEFAULT_QUEUE, value_parser = at_least::<1>)]
    pub queue: usize,

    /// Longest line a client may send, in bytes, not counting the newline.
    /// A client that sends more without a newline is disconnected.
    #[arg(long, value_name = "BYTES", default_value_t = config::DEFAULT_MAX_LINE, value_parser = at_least::<1>)]
    pub max_line: usize,

    /// Kernel send buffer per client (SO_SNDBUF; Linux doubles it). Bounds
    /// what a stalled client holds in the kernel, beyond its queue.
    #[arg(long, value_name = "BYTES", default_value_t = config::DEFAULT_SNDBUF, value_parser = at_least::<4096>)]
    pub sndbuf: usize,

    /// On SIGINT/SIGTERM, how long to keep flushing queued output before
    /// closing (e.g. `2s`, `500ms`).
    #[arg(long, value_name = "DUR", default_value = "2s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,

    /// Log level or filter (e.g. `info`, `debug`, `ringcast=trace`).
    /// Overrides RUST_LOG [default: RUST_LOG, else `info`].
    #[arg(long, value_name = "LEVEL")]
    pub log: Option<String>,
}

impl ServeArgs {
    /// The server configuration these options describe.
    pub fn config(&self) -> Config {
        Config {
            listen: self.listen,
            engine: self.engine,
            threads: self.threads.map(usize::from),
            queue: self.queue,
            max_line: self.max_line,
            sndbuf: self.sndbuf,
            drain_timeout: self.drain_timeout,
            metrics: self.metrics,
        }
    }
}

/// Parses a whole number no smaller than `MIN`.
fn at_least<const MIN: usize>(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|e| format!("{s:?} is not a whole number: {e}"))?;
    if n < MIN {
        return Err(format!("must be at least {MIN}"));
    }
    Ok(n)
}
