//! Server configuration, shared by both engines.

use std::net::SocketAddr;
use std::time::Duration;

/// Which I/O engine runs the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum EngineChoice {
    /// io_uring when the kernel allows it, tokio otherwise.
    #[default]
    Auto,
    /// One pinned tokio-uring runtime per core (the product).
    Uring,
    /// A multi-threaded tokio (epoll) runtime (the baseline).
    Tokio,
}

/// The engine actually running, after `auto` has been resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// io_uring, one runtime per core.
    Uring,
    /// tokio multi-threaded runtime.
    Tokio,
}

impl Engine {
    /// The engine's name, as `--engine` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Uring => "uring",
            Engine::Tokio => "tokio",
        }
    }
}

/// Everything the server needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to accept clients on.
    pub listen: SocketAddr,
    /// Engine to run.
    pub engine: EngineChoice,
    /// Threads (cores) to run on; `None` means one per available core.
    pub threads: Option<usize>,
    /// Per-connection outgoing queue length, in messages.
    pub queue: usize,
    /// Longest accepted line, in bytes, not counting the newline.
    pub max_line: usize,
    /// Per-connection kernel send buffer (SO_SNDBUF), in bytes.
    pub sndbuf: usize,
    /// How long a client's queue may stay full before the client counts as
    /// stalled and its messages are dropped instead of waited for.
    pub stall_timeout: Duration,
    /// Longest a write may be held back to carry more messages, while a core
    /// is busy; zero never holds writes back. See [`crate::coalesce`].
    pub coalesce: Duration,
    /// Deliveries per second per core above which a core counts as busy and
    /// coalesces writes.
    pub coalesce_above: u64,
    /// How long shutdown may spend flushing queued output.
    pub drain_timeout: Duration,
    /// Most clients connected at once; more are accepted and closed at once.
    pub max_clients: usize,
    /// Disconnect clients that send nothing for this long; `None` never does.
    pub idle_timeout: Option<Duration>,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// The NATS cluster to share lines with, if any. An empty `node_id`
    /// means `<hostname>:<port>`.
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

/// Default `--listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9000";
/// Default `--queue`.
pub const DEFAULT_QUEUE: usize = 100;
/// Default `--max-line`.
pub const DEFAULT_MAX_LINE: usize = 65536;
/// Default `--sndbuf`. The kernel doubles it for bookkeeping.
pub const DEFAULT_SNDBUF: usize = 64 * 1024;
/// Default `--stall-timeout`.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_millis(50);
/// Default `--coalesce`.
pub const DEFAULT_COALESCE: Duration = Duration::from_millis(1);
/// Default `--coalesce-above`.
pub const DEFAULT_COALESCE_ABOVE: u64 = 200_000;
/// Default `--max-clients`.
pub const DEFAULT_MAX_CLIENTS: usize = 10_000;
/// Default `--drain-timeout`.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9000)),
            engine: EngineChoice::Auto,
            threads: None,
            queue: DEFAULT_QUEUE,
            max_line: DEFAULT_MAX_LINE,
            sndbuf: DEFAULT_SNDBUF,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            coalesce: DEFAULT_COALESCE,
            coalesce_above: DEFAULT_COALESCE_ABOVE,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            max_clients: DEFAULT_MAX_CLIENTS,
            idle_timeout: None,
            metrics: None,
            cluster: None,
        }
    }
}

impl Config {
    /// The number of threads to run: `threads`, or one per available core.
    pub fn thread_count(&self) -> usize {
        self.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
    }
}
