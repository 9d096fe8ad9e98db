//! The command line.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config, EngineChoice};
use crate::load::{self, Rate};

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

    /// Generate fan-out load against a running server and report what
    /// arrived.
    ///
    /// Opens `--clients` connections (spread round-robin over the
    /// `--connect` addresses, for a cluster); the first `--publishers` of them send
    /// fixed-size, numbered, timestamped lines for `--duration`, and every
    /// connection reads. Reports messages published and delivered, loss,
    /// per-publisher order violations, delivery latency and the generator's
    /// own CPU use. Rates (delivered/s, MB/s) are over the measured
    /// interval: from the start of publishing to the last delivery, so the
    /// drain after `--duration` is included. Try it: `ringcast serve` in one
    /// terminal, `ringcast load` in another.
    Load(LoadArgs),
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

    /// Per-client outgoing queue, in messages. When a client is not draining
    /// (see --stall-timeout) and its queue is full, new messages are dropped
    /// for that client alone and counted.
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

    /// How long a client's queue may stay full, with nothing more going into
    /// its socket, before the client counts as stalled. Until then the
    /// server waits for it (pausing reads from the publisher, so nothing is
    /// lost); after that it drops that client's new messages until it
    /// catches up.
    #[arg(long, value_name = "DUR", default_value = "50ms", value_parser = humantime::parse_duration)]
    pub stall_timeout: Duration,

    /// While a core is busy (see --coalesce-above), hold a client's writes
    /// back by up to this long (e.g. `1ms`, `500us`) so that one write
    /// carries many lines: far fewer writes, so less CPU and, on a loaded
    /// server, lower latency. A client with a quarter of --queue or 16 KiB
    /// waiting is written at once. `0` turns coalescing off.
    #[arg(long, value_name = "DUR", default_value = "1ms", value_parser = humantime::parse_duration)]
    pub coalesce: Duration,

    /// Messages per second per core, counted once per receiving client,
    /// above which a core counts as busy and coalesces writes (see
    /// --coalesce). Re-evaluated every 100 ms. Below it every write goes
    /// out at once; `0` coalesces always.
    #[arg(long, value_name = "N", default_value_t = config::DEFAULT_COALESCE_ABOVE)]
    pub coalesce_above: u64,

    /// On SIGINT/SIGTERM, how long to keep flushing queued output before
    /// closing (e.g. `2s`, `500ms`).
    #[arg(long, value_name = "DUR", default_value = "2s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// Most clients connected at once. Past it, a new connection is accepted
    /// and closed at once, and counted in
    /// ringcast_connections_rejected_total.
    #[arg(long, value_name = "N", default_value_t = config::DEFAULT_MAX_CLIENTS, value_parser = at_least::<1>)]
    pub max_clients: usize,

    /// Disconnect a client that sends nothing for this long (e.g. `5m`).
    /// Off by default: idle clients cost no timers and no CPU.
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration)]
    pub idle_timeout: Option<Duration>,

    /// Share lines with other ringcast nodes through this NATS server
    /// (e.g. `nats://127.0.0.1:4222`). Lines from this node's clients are
    /// published to --cluster-subject; lines from other nodes go to every
    /// local client. If NATS is down, local broadcast goes on.
    #[arg(long, value_name = "URL")]
    pub cluster: Option<String>,

    /// NATS subject the nodes share.
    #[arg(long, value_name = "SUBJECT", default_value = crate::cluster::DEFAULT_SUBJECT, requires = "cluster")]
    pub cluster_subject: String,

    /// This node's id in the cluster [default: <hostname>:<port>].
    #[arg(long, value_name = "ID", requires = "cluster")]
    pub node_id: Option<String>,

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
            stall_timeout: self.stall_timeout,
            coalesce: self.coalesce,
            coalesce_above: self.coalesce_above,
            drain_timeout: self.drain_timeout,
            max_clients: self.max_clients,
            idle_timeout: self.idle_timeout,
            metrics: self.metrics,
            cluster: self
                .cluster
                .as_ref()
                .map(|url| crate::cluster::ClusterConfig {
                    url: url.clone(),
                    subject: self.cluster_subject.clone(),
                    node_id: self.node_id.clone().unwrap_or_default(),
                }),
        }
    }
}

/// `ringcast load` options.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Address of the server to load, or a comma-separated list of the
    /// addresses of cluster nodes (`127.0.0.1:9001,127.0.0.1:9002`).
    /// Client i connects to address i mod N, so with several addresses the
    /// publishers (the first clients) and the readers spread over the
    /// nodes: publisher 0 on the first, publisher 1 on the second, and so
    /// on. Loss counts every client missing any publisher's line, whichever
    /// node it was published on.
    #[arg(long, value_name = "ADDR[,ADDR...]", default_value = config::DEFAULT_LISTEN)]
    pub connect: load::Targets,

    /// Connections to open. Every one of them reads everything the server
    /// broadcasts; the first `--publishers` of them also send.
    #[arg(long, value_name = "C", default_value_t = 100, value_parser = at_least::<1>)]
    pub clients: usize,

    /// How many of the clients publish lines (at least 1, at most
    /// `--clients`).
    #[arg(long, value_name = "P", default_value_t = 1, value_parser = publishers)]
    pub publishers: usize,

    /// Size of each published line in bytes, the trailing newline included.
    /// At least 32, which is the fixed header (publisher, sequence number,
    /// send timestamp) plus the newline; the rest is filler. Keep it within
    /// the server's `--max-line`.
    #[arg(long, value_name = "BYTES", default_value_t = 64, value_parser = line_size)]
    pub size: usize,

    /// How long the publishers publish (e.g. `10s`, `500ms`, `1m`). Readers
    /// then keep reading until everything arrived, or nothing has for 2 s,
    /// or 10 s more have passed.
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = positive_duration)]
    pub duration: Duration,

    /// Lines per second per publisher (open loop: sent on schedule whatever
    /// the server does), or `max` for saturation (closed loop: each
    /// publisher keeps at most `--window` of its own lines in flight).
    #[arg(long, value_name = "MSGS_PER_S", default_value = "max", value_parser = parse_rate)]
    pub rate: Rate,

    /// With `--rate max`: the most lines each publisher may have in flight,
    /// that is, published but not yet received back on its own connection
    /// (every publisher also reads, and gets its own lines). It sends again
    /// as its lines come back, so the run measures what the server moves
    /// rather than what piles up in socket buffers, and the drain after
    /// `--duration` is short. Ignored at a fixed rate. [default: 1000, or
    /// fewer so that publishers × window × clients, the deliveries in
    /// flight, stays within 1,000,000]
    #[arg(long, value_name = "LINES", value_parser = at_least::<1>)]
    pub window: Option<usize>,

    /// Worker threads of the generator's own runtime. Connections are
    /// tasks, not threads, so a few threads drive thousands of them.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = at_least::<1>)]
    pub threads: usize,

    /// Print the result as one JSON object on stdout, and no progress.
    #[arg(long)]
    pub json: bool,
}

/// Parses `--publishers`: a whole number from 1 to [`load::MAX_PUBLISHERS`].
fn publishers(s: &str) -> Result<usize, String> {
    let n = at_least::<1>(s)?;
    if n > load::MAX_PUBLISHERS {
        return Err(format!("must be at most {}", load::MAX_PUBLISHERS));
    }
    Ok(n)
}

/// Parses `--size`: from [`load::MIN_SIZE`] to [`load::MAX_SIZE`] bytes.
fn line_size(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|e| format!("{s:?} is not a whole number: {e}"))?;
    if n < load::MIN_SIZE {
        return Err(format!(
            "must be at least {} (the line header and its newline)",
            load::MIN_SIZE
        ));
    }
    if n > load::MAX_SIZE {
        return Err(format!("must be at most {}", load::MAX_SIZE));
    }
    Ok(n)
}

/// Parses `--rate`: `max` or a whole number of lines per second, at least 1.
fn parse_rate(s: &str) -> Result<Rate, String> {
    s.parse()
}

/// Parses a duration longer than zero.
fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration: {e}"))?;
    if d.is_zero() {
        return Err("must be longer than zero".to_owned());
    }
    Ok(d)
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
