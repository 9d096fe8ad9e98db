//! The command line: spells out the library's [`Config`], whose defaults
//! and checks it uses.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand, ValueEnum};
use ringcast::config::{self, ClusterConfig, Config, EngineChoice, TlsConfig, WsOrigins};

/// `ringcast --version`: the package version and the commit it was built
/// from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("RINGCAST_COMMIT"),
    ")"
);

/// ringcast: every line any client sends goes to every connected client.
#[derive(Debug, Parser)]
#[command(name = "ringcast", version = VERSION, about, long_about = None)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

impl Cli {
    /// The command line, as [`Parser::parse`] reads it, plus what the
    /// derived fields cannot say: whether `serve --grace` was given.
    /// Exits, as clap does, on `--help` or a parse error.
    pub(crate) fn from_env() -> Self {
        Self::from_matches(Self::command().get_matches()).unwrap_or_else(|e| e.exit())
    }

    fn from_matches(matches: clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut cli = Self::from_arg_matches(&matches)?;
        if let (Command::Serve(args), Some(serve)) =
            (&mut cli.command, matches.subcommand_matches("serve"))
        {
            args.grace_given =
                serve.value_source("grace") != Some(clap::parser::ValueSource::DefaultValue);
        }
        Ok(cli)
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the broadcast server.
    ///
    /// Each newline-terminated message from any client is written to every
    /// connected client, the sender included. Try it: run the server, then
    /// `nc 127.0.0.1 9000` in two terminals and type.
    Serve(Box<ServeArgs>),

    /// Generate fan-out load against a running server and report what
    /// arrived.
    ///
    /// Opens `--clients` connections (spread round-robin over the
    /// `--connect` addresses, for a cluster); the first `--publishers` of
    /// them send fixed-size, numbered, timestamped lines for `--duration`,
    /// and every connection reads. Reports messages published and
    /// delivered, loss, per-publisher order violations, delivery latency
    /// (p50 to max; at a fixed `--rate` counted from each line's scheduled
    /// send time, so a stalled publisher's wait counts) and the
    /// generator's own CPU use. Rates (delivered/s, MB/s) are over the
    /// measured interval: from the start of publishing to the last
    /// delivery, so the drain after `--duration` is included. With
    /// `--slow-clients`, slow readers are added and reported apart; with
    /// `--tls`, every connection is over TLS. Try it: `ringcast serve` in
    /// one terminal, `ringcast load` in another.
    Load(Box<ringcast_load::LoadArgs>),

    /// Ask a running server's HTTP endpoint and exit 0 if it answers 200,
    /// 1 otherwise: the container image's health check, where there is no
    /// curl.
    Probe(ProbeArgs),
}

/// `ringcast probe` options.
#[derive(Debug, Args)]
pub(crate) struct ProbeArgs {
    /// The server's --metrics address (0.0.0.0 reaches this host).
    #[arg(long, env = "RINGCAST_METRICS", value_name = "ADDR")]
    pub(crate) metrics: SocketAddr,

    /// The endpoint to GET.
    #[arg(long, default_value = "/readyz", value_name = "PATH", value_parser = crate::probe::parse_path)]
    pub(crate) path: String,

    /// Give up after this long.
    #[arg(long, default_value = "2s", value_name = "DUR", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
}

/// The engines `--engine` names.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum EngineArg {
    /// io_uring when the kernel allows it, tokio otherwise.
    Auto,
    /// One pinned tokio-uring runtime per core (the product).
    Uring,
    /// A multi-threaded tokio (epoll) runtime (the baseline).
    Tokio,
}

/// `ringcast serve` options.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to accept clients on.
    #[arg(long, env = "RINGCAST_LISTEN", default_value = config::DEFAULT_LISTEN, value_name = "ADDR")]
    listen: SocketAddr,

    /// I/O engine: `uring` (one io_uring runtime per core), `tokio` (epoll
    /// baseline), or `auto` (uring if the kernel allows it, else tokio).
    #[arg(long, env = "RINGCAST_ENGINE", value_enum, default_value = "auto")]
    engine: EngineArg,

    /// Worker threads, one per core [default: number of available cores].
    /// At most 4 per available core, and 256.
    #[arg(long, env = "RINGCAST_THREADS", value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,

    /// Per-client outgoing queue, in messages the kernel has not taken yet.
    /// A message for a client whose queue and kernel send buffer are both
    /// full is dropped for that client alone, and counted (after one short
    /// wait, see --grace); it drops until it has caught up. At most
    /// 1000000.
    #[arg(long, env = "RINGCAST_QUEUE", value_name = "N", default_value_t = config::DEFAULT_QUEUE)]
    queue: usize,

    /// Longest line a client may send, in bytes, not counting the newline
    /// (for a WebSocket client: the longest message). A client that sends
    /// more without a newline is disconnected (a WebSocket client: closed
    /// with 1009), and counted in ringcast_lines_too_long_total. At most
    /// 1 GiB.
    #[arg(long, env = "RINGCAST_MAX_LINE", value_name = "BYTES", default_value_t = config::DEFAULT_MAX_LINE)]
    max_line: usize,

    /// Kernel send buffer per client (SO_SNDBUF; Linux doubles it), from
    /// 4096 to 1073741823. With --queue, it is all a slow client may hold
    /// before its messages are dropped. Above net.core.wmem_max the kernel
    /// gives wmem_max instead, and a warning at start says so.
    #[arg(long, env = "RINGCAST_SNDBUF", value_name = "BYTES", default_value_t = config::DEFAULT_SNDBUF)]
    sndbuf: usize,

    /// Disconnect a client that has been dropping messages for this long
    /// (e.g. `30s`), the policy of NATS and Redis for slow consumers.
    /// Counted in ringcast_slow_disconnects_total. Off by default: a slow
    /// client stays connected and gets what it can read.
    #[arg(long, env = "RINGCAST_SLOW_DISCONNECT", value_name = "DUR", value_parser = humantime::parse_duration)]
    slow_disconnect: Option<Duration>,

    /// TCP keepalive on every client socket: after this long without
    /// traffic the kernel probes the peer, every quarter of it (at least
    /// 1 s), and drops the connection after four unanswered probes; so a
    /// peer that vanished without a FIN or RST (a NAT timeout, a pulled
    /// cable) goes within about twice this. At most 32767s (the kernel's
    /// limit); `0` turns it off.
    #[arg(long, env = "RINGCAST_TCP_KEEPALIVE", value_name = "DUR", default_value = "60s", value_parser = humantime::parse_duration)]
    tcp_keepalive: Duration,

    /// TCP_USER_TIMEOUT on every client socket: drop a connection whose
    /// sent data stays unacknowledged this long, at most 2147483647ms
    /// (about 24.8 days, the kernel's limit). `0` leaves the kernel's
    /// default, about 15 minutes of retransmits.
    #[arg(long, env = "RINGCAST_TCP_USER_TIMEOUT", value_name = "DUR", default_value = "60s", value_parser = humantime::parse_duration)]
    tcp_user_timeout: Duration,

    /// The most a publisher waits, once per slow episode, for a client
    /// whose queue and socket buffer are full (e.g. `5ms`; at most `1s`):
    /// it may only be behind for a moment. A client still full after it is
    /// slow: its messages are dropped until it has caught up, and it gets
    /// no wait again for 1 s, doubling each time it uses one up, up to 64 s.
    /// A core's waits, all clients together, also come out of a budget that
    /// earns about two such waits every half second (2% of its time).
    /// `0` never waits. Progress never renews the wait. Formerly
    /// --stall-timeout (and RINGCAST_STALL_TIMEOUT), both still read.
    #[arg(long, env = "RINGCAST_GRACE", alias = "stall-timeout", value_name = "DUR", default_value = "5ms", value_parser = humantime::parse_duration)]
    grace: Duration,

    /// Whether --grace (or RINGCAST_GRACE) was given, rather than left at
    /// its default: the deprecated RINGCAST_STALL_TIMEOUT counts only if
    /// not. Set by [`Cli::from_env`], from clap's record of where the value
    /// came from.
    #[arg(skip)]
    grace_given: bool,

    /// While a core is busy (see --coalesce-above), hold a client's writes
    /// back by up to this long (e.g. `1ms`, `500us`) so that
    /// one write carries many lines: far fewer writes, so less CPU and, on a
    /// loaded server, lower latency. A client whose queue is full is written
    /// at once (on the tokio engine, already at a quarter of --queue or
    /// 16 KiB). At most `1s`; `0` turns coalescing off.
    #[arg(long, env = "RINGCAST_COALESCE", value_name = "DUR", default_value = "1ms", value_parser = humantime::parse_duration)]
    coalesce: Duration,

    /// Messages per second per core, counted once per receiving client,
    /// above which a core counts as busy and coalesces writes (see
    /// --coalesce). Re-evaluated every 100 ms. Below it every write goes
    /// out at once; `0` coalesces always.
    #[arg(long, env = "RINGCAST_COALESCE_ABOVE", value_name = "N", default_value_t = config::DEFAULT_COALESCE_ABOVE)]
    coalesce_above: u64,

    /// On SIGTERM or SIGINT, first stop accepting, report not ready on
    /// /readyz, and close the clients spread over this long, so that behind
    /// a load balancer they do not all reconnect to the other nodes at once
    /// (NATS lame duck mode); then the usual drain. Off by default.
    #[arg(long, env = "RINGCAST_LAME_DUCK", value_name = "DUR", value_parser = humantime::parse_duration)]
    lame_duck: Option<Duration>,

    /// On SIGINT/SIGTERM, how long to keep flushing queued output before
    /// closing (e.g. `2s`, `500ms`).
    #[arg(long, env = "RINGCAST_DRAIN_TIMEOUT", value_name = "DUR", default_value = "2s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,

    /// Most clients connected at once (at most 10000000). Past it, a new
    /// connection is accepted and closed at once, and counted in
    /// ringcast_connections_rejected_total. A WebSocket client counts once
    /// its handshake completes (then, with every slot taken, it gets 503).
    #[arg(long, env = "RINGCAST_MAX_CLIENTS", value_name = "N", default_value_t = config::DEFAULT_MAX_CLIENTS)]
    max_clients: usize,

    /// Most connections from one IP address at once, line clients and
    /// WebSocket clients (pending handshakes too) together, counted across
    /// all cores. Past it, a new connection from that address is accepted
    /// and closed at once, and counted in
    /// ringcast_connections_rejected_per_ip_total. `0`: no limit (for load
    /// tests from one machine).
    #[arg(long, env = "RINGCAST_MAX_CLIENTS_PER_IP", value_name = "N", default_value_t = config::DEFAULT_MAX_CLIENTS_PER_IP)]
    max_clients_per_ip: usize,

    /// Which web pages may open a WebSocket, by the Origin header browsers
    /// send: a comma-separated list of origins
    /// (`https://example.com,http://localhost:8080`, `null` for sandboxed
    /// pages and local files), or `*` for any. By default only pages the
    /// --ws address serves itself (the chat page) may. Others get 403,
    /// counted in ringcast_ws_origin_rejected_total. Clients that send no
    /// Origin (not browsers) are always accepted.
    #[arg(long, env = "RINGCAST_WS_ORIGIN", value_name = "LIST")]
    ws_origin: Option<String>,

    /// Disconnect a client that sends nothing for this long (e.g. `5m`).
    /// Off by default: idle clients cost no timers and no CPU.
    #[arg(long, env = "RINGCAST_IDLE_TIMEOUT", value_name = "DUR", value_parser = humantime::parse_duration)]
    idle_timeout: Option<Duration>,

    /// Close a --ws connection whose opening handshake has not arrived
    /// whole this long after it connected, and count it in
    /// ringcast_handshake_timeouts_total. Until its handshake completes, a
    /// WebSocket connection takes no --max-clients slot; at most 1024 wait
    /// at once.
    #[arg(long, env = "RINGCAST_HANDSHAKE_TIMEOUT", value_name = "DUR", default_value = "5s", value_parser = humantime::parse_duration)]
    handshake_timeout: Duration,

    /// Share lines with other ringcast nodes through this NATS server
    /// (e.g. `nats://127.0.0.1:4222`). Lines from this node's clients are
    /// published to --cluster-subject; lines from other nodes go to every
    /// local client. If NATS is down, local broadcast goes on.
    #[arg(long, env = "RINGCAST_CLUSTER", value_name = "URL")]
    cluster: Option<String>,

    /// NATS subject the nodes share.
    #[arg(long, env = "RINGCAST_CLUSTER_SUBJECT", value_name = "SUBJECT", default_value = config::DEFAULT_SUBJECT, requires = "cluster")]
    cluster_subject: String,

    /// This node's id in the cluster [default: <hostname>:<port>].
    #[arg(
        long,
        env = "RINGCAST_NODE_ID",
        value_name = "ID",
        requires = "cluster"
    )]
    node_id: Option<String>,

    /// Accept WebSocket clients on ADDR, in the same broadcast: each line
    /// reaches them as one message, and each message they send reaches
    /// everyone as a line. `http://ADDR/` serves a small chat page.
    #[arg(long, env = "RINGCAST_WS", value_name = "ADDR")]
    ws: Option<SocketAddr>,

    /// Serve TLS on --listen and --ws with this certificate chain (PEM,
    /// the server's certificate first). Needs --tls-key. SIGHUP reads both
    /// files again: new connections get the new certificate; a bad file
    /// keeps the old one and logs one error line.
    #[arg(
        long,
        env = "RINGCAST_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    tls_cert: Option<std::path::PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "RINGCAST_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    tls_key: Option<std::path::PathBuf>,

    /// With TLS: also accept plain line clients on ADDR, in the same
    /// broadcast.
    #[arg(
        long,
        env = "RINGCAST_PLAIN_LISTEN",
        value_name = "ADDR",
        requires = "tls_cert"
    )]
    plain_listen: Option<SocketAddr>,

    /// With TLS: also accept plain WebSocket clients (and serve the chat
    /// page over http://) on ADDR, in the same broadcast.
    #[arg(
        long,
        env = "RINGCAST_PLAIN_WS",
        value_name = "ADDR",
        requires = "tls_cert"
    )]
    plain_ws: Option<SocketAddr>,

    /// Serve Prometheus metrics at http://ADDR/metrics, and /healthz,
    /// /readyz and /clients. A request header must arrive within 3 s.
    #[arg(long, env = "RINGCAST_METRICS", value_name = "ADDR")]
    metrics: Option<SocketAddr>,

    /// Log level or filter (e.g. `info`, `debug`, `ringcast=trace`).
    /// Overrides RUST_LOG [default: RUST_LOG, else `info`].
    #[arg(long, env = "RINGCAST_LOG", value_name = "LEVEL")]
    pub(crate) log: Option<String>,

    /// Log lines as `text` for people or `json` (one object per line) for
    /// log pipelines. Either way they go to stderr through a non-blocking
    /// writer: a full pipe drops lines (counted in
    /// ringcast_log_lines_dropped_total) rather than stalling a core.
    #[arg(long, env = "RINGCAST_LOG_FORMAT", value_enum, default_value = "text")]
    pub(crate) log_format: LogFormat,

    /// Once every core accepts clients, write the bound addresses as JSON
    /// to this file (`{"listen": ..., "metrics": ..., "engine": ...,
    /// "pid": ...}`), for scripts that start the server on port 0.
    #[arg(long, env = "RINGCAST_READY_FILE", value_name = "PATH")]
    pub(crate) ready_file: Option<std::path::PathBuf>,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl ServeArgs {
    /// The server configuration these options describe, and a warning for
    /// each deprecated spelling they used, to log once logging is up.
    pub(crate) fn config(&self) -> Result<(Config, Vec<String>), ringcast::Error> {
        let old_grace = std::env::var_os(OLD_GRACE_ENV);
        let given = self.grace_given.then_some(self.grace);
        let (grace, grace_from_old_env) = resolve_grace(given, old_grace.as_deref())?;
        let warnings = match (grace_from_old_env, old_grace.is_some()) {
            (true, _) => Some(format!(
                "{OLD_GRACE_ENV} is deprecated: set RINGCAST_GRACE instead"
            )),
            (false, true) => Some(format!(
                "{OLD_GRACE_ENV} is ignored, since --grace or RINGCAST_GRACE is given: unset it"
            )),
            (false, false) => None,
        }
        .into_iter()
        .collect();
        let config = Config {
            listen: self.listen,
            engine: match self.engine {
                EngineArg::Auto => EngineChoice::Auto,
                EngineArg::Uring => EngineChoice::Uring,
                EngineArg::Tokio => EngineChoice::Tokio,
            },
            threads: self.threads.map(usize::from),
            queue: self.queue,
            max_line: self.max_line,
            sndbuf: self.sndbuf,
            keepalive: Some(self.tcp_keepalive).filter(|d| !d.is_zero()),
            user_timeout: Some(self.tcp_user_timeout).filter(|d| !d.is_zero()),
            grace,
            coalesce: self.coalesce,
            coalesce_above: self.coalesce_above,
            drain_timeout: self.drain_timeout,
            lame_duck: self.lame_duck,
            max_clients: self.max_clients,
            max_clients_per_ip: self.max_clients_per_ip,
            ws_origin: self
                .ws_origin
                .as_deref()
                .map_or(WsOrigins::Same, WsOrigins::from_list),
            idle_timeout: self.idle_timeout,
            handshake_timeout: self.handshake_timeout,
            slow_disconnect: self.slow_disconnect,
            ws: self.ws,
            tls: self
                .tls_cert
                .clone()
                .zip(self.tls_key.clone())
                .map(|(cert, key)| TlsConfig {
                    cert,
                    key,
                    plain_listen: self.plain_listen,
                    plain_ws: self.plain_ws,
                }),
            metrics: self.metrics,
            cluster: self.cluster.as_ref().map(|url| ClusterConfig {
                url: url.clone(),
                subject: self.cluster_subject.clone(),
                node_id: self.node_id.clone(),
            }),
        };
        Ok((config, warnings))
    }
}

/// The old name of `RINGCAST_GRACE`, from when the flag was
/// `--stall-timeout`: still read, since existing systemd units set it.
pub(crate) const OLD_GRACE_ENV: &str = "RINGCAST_STALL_TIMEOUT";

/// `--grace`: `given` (the flag, its alias `--stall-timeout`, or
/// `RINGCAST_GRACE`, in clap's order) if any, else `old_env` (the value of
/// [`OLD_GRACE_ENV`]) if set, else the default. The flag is `--grace`
/// because "stall" in the code means only a socket that takes nothing
/// (docs/decisions/0036). The `bool` is true when `old_env` was used, so
/// the caller can say it is deprecated.
fn resolve_grace(
    given: Option<Duration>,
    old_env: Option<&std::ffi::OsStr>,
) -> Result<(Duration, bool), ringcast::Error> {
    if let Some(grace) = given {
        return Ok((grace, false));
    }
    let Some(old) = old_env else {
        return Ok((config::DEFAULT_GRACE, false));
    };
    let invalid = |why: &dyn std::fmt::Display| {
        ringcast::Error::Config(format!("invalid {OLD_GRACE_ENV} {old:?}: {why}"))
    };
    let text = old.to_str().ok_or_else(|| invalid(&"not UTF-8"))?;
    let grace = humantime::parse_duration(text).map_err(|e| invalid(&e))?;
    Ok((grace, true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    /// `ringcast serve ARGS`, as parsed, with `old_env` as the value of
    /// RINGCAST_STALL_TIMEOUT. RINGCAST_GRACE would come from the process
    /// environment, which these tests leave alone: clap hands it over in
    /// `given` just as the flag, and tests/cli.rs sets it for a server.
    fn grace_of(args: &[&str], old_env: Option<&str>) -> (Duration, bool) {
        let matches = Cli::command()
            .try_get_matches_from(["ringcast", "serve"].iter().chain(args))
            .expect("parses");
        let cli = Cli::from_matches(matches).expect("parses");
        let Command::Serve(serve) = cli.command else {
            panic!("not serve")
        };
        resolve_grace(
            serve.grace_given.then_some(serve.grace),
            old_env.map(OsStr::new),
        )
        .expect("a grace")
    }

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn the_old_flag_still_sets_the_grace() {
        assert_eq!(grace_of(&["--stall-timeout", "7ms"], None), (MS(7), false));
        assert_eq!(grace_of(&["--stall-timeout=7ms"], None), (MS(7), false));
        assert_eq!(grace_of(&["--grace", "7ms"], None), (MS(7), false));
        assert_eq!(grace_of(&[], None), (config::DEFAULT_GRACE, false));
    }

    #[test]
    fn the_old_variable_counts_only_when_nothing_else_is_given() {
        assert_eq!(grace_of(&[], Some("9ms")), (MS(9), true));
        assert_eq!(grace_of(&["--grace", "3ms"], Some("9ms")), (MS(3), false));
        assert_eq!(
            grace_of(&["--stall-timeout", "3ms"], Some("9ms")),
            (MS(3), false)
        );
        assert_eq!(grace_of(&["--grace", "0s"], Some("9ms")), (MS(0), false));
    }

    #[test]
    fn a_bad_old_variable_is_a_configuration_error_naming_it() {
        let err = resolve_grace(None, Some(OsStr::new("soon"))).expect_err("soon is no duration");
        assert!(err.is_config(), "{err}");
        assert!(err.to_string().contains(OLD_GRACE_ENV), "{err}");
    }
}
