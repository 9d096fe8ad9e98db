//! Server configuration: every default and every check, in one place. The
//! command line only spells these out.

use std::net::SocketAddr;
use std::time::Duration;

use crate::error::Error;

/// Which I/O engine runs the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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

/// Where and as whom to join a cluster of nodes through NATS.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// NATS server URL, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// Subject every node publishes to and subscribes to.
    pub subject: String,
    /// This node's id; `None` means `<hostname>:<port>`.
    pub node_id: Option<String>,
}

/// Which web pages may open a WebSocket to `--ws` (`--ws-origin`), by the
/// `Origin` header browsers send. A client that sends none (not a
/// browser) is always accepted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum WsOrigins {
    /// Pages from the `--ws` address itself, such as the chat page: the
    /// `Origin` must be the request's own scheme, `Host` and port.
    #[default]
    Same,
    /// Any page (`*`).
    Any,
    /// Pages from these origins only, each `scheme://host[:port]` or
    /// `null`.
    List(Vec<String>),
}

impl WsOrigins {
    /// `--ws-origin`'s value: `*`, or a comma-separated list. Each entry
    /// is checked by [`Config::validate`].
    pub fn from_list(list: &str) -> Self {
        if list.trim() == "*" {
            return WsOrigins::Any;
        }
        WsOrigins::List(list.split(',').map(|o| o.trim().to_owned()).collect())
    }
}

/// Everything the server needs to know. [`Config::default`] holds every
/// default; [`Config::validate`] every check.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to accept clients on.
    pub listen: SocketAddr,
    /// Engine to run.
    pub engine: EngineChoice,
    /// Threads (cores) to run on; `None` means one per available core.
    pub threads: Option<usize>,
    /// Per-connection outgoing queue, in messages not yet taken by the
    /// kernel.
    pub queue: usize,
    /// Longest accepted line, in bytes, not counting the newline.
    pub max_line: usize,
    /// Per-connection kernel send buffer (SO_SNDBUF), in bytes.
    pub sndbuf: usize,
    /// TCP keepalive on every client socket: after this long idle, probe
    /// the peer, and drop it if four probes go unanswered. `None` is off.
    pub keepalive: Option<Duration>,
    /// TCP_USER_TIMEOUT on every client socket: drop the connection when
    /// sent data stays unacknowledged this long. `None` is the kernel's
    /// default (about 15 minutes of retransmits).
    pub user_timeout: Option<Duration>,
    /// The most a publisher waits, per slow episode, for a client whose
    /// queue and socket buffer are full (`--grace`): it may only be behind
    /// for a moment. Zero never waits.
    pub grace: Duration,
    /// Longest a write may be held back to carry more messages, while a core
    /// is busy; zero never holds writes back.
    pub coalesce: Duration,
    /// Deliveries per second per core above which a core counts as busy and
    /// coalesces writes.
    pub coalesce_above: u64,
    /// How long shutdown may spend flushing queued output.
    pub drain_timeout: Duration,
    /// On shutdown, stop accepting and close the clients spread over this
    /// long before the drain (lame duck mode); `None` skips it.
    pub lame_duck: Option<Duration>,
    /// Most clients connected at once; more are accepted and closed at once.
    pub max_clients: usize,
    /// Most connections from one IP address at once, clients and pending
    /// WebSocket handshakes together; `0` is no limit.
    pub max_clients_per_ip: usize,
    /// Which web pages may open a WebSocket.
    pub ws_origin: WsOrigins,
    /// Disconnect clients that send nothing for this long; `None` never does.
    pub idle_timeout: Option<Duration>,
    /// Close a WebSocket connection whose opening handshake has not
    /// arrived whole this long after its connect.
    pub handshake_timeout: Duration,
    /// Disconnect a client that has been dropping messages (its queue and
    /// socket full) for this long; `None` never does.
    pub slow_disconnect: Option<Duration>,
    /// Where to accept WebSocket clients (and serve the demo page), if
    /// anywhere.
    pub ws: Option<SocketAddr>,
    /// Where to serve the HTTP endpoints (`/metrics`), if anywhere.
    pub metrics: Option<SocketAddr>,
    /// The NATS cluster to share lines with, if any.
    pub cluster: Option<ClusterConfig>,
    /// TLS on `listen` and `ws`, if any.
    pub tls: Option<TlsConfig>,
}

/// TLS for line and WebSocket clients (`--tls-cert`, `--tls-key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, the server's own first.
    pub cert: std::path::PathBuf,
    /// PEM file with the private key.
    pub key: std::path::PathBuf,
    /// Where to accept plain line clients besides the TLS ones, if anywhere.
    pub plain_listen: Option<SocketAddr>,
    /// Where to accept plain WebSocket clients besides the TLS ones, if
    /// anywhere.
    pub plain_ws: Option<SocketAddr>,
}

/// Default `--listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9000";
/// Default `--queue`.
pub const DEFAULT_QUEUE: usize = 100;
/// Longest `--queue`.
pub const MAX_QUEUE: usize = 1_000_000;
/// Default `--max-line`.
pub const DEFAULT_MAX_LINE: usize = 65536;
/// Longest `--max-line`: 1 GiB.
pub const MAX_MAX_LINE: usize = 1 << 30;
/// Default `--sndbuf`. The kernel doubles it for bookkeeping.
pub const DEFAULT_SNDBUF: usize = 64 * 1024;
/// Smallest `--sndbuf`: below this the kernel's own floor applies anyway.
pub const MIN_SNDBUF: usize = 4096;
/// Largest `--sndbuf`: the kernel takes an `int` and doubles it, so it
/// never gives more than this (and `net.core.wmem_max` usually far less).
pub const MAX_SNDBUF: usize = (i32::MAX / 2) as usize;
/// Most `--threads` per available core: more only share the cores.
pub const MAX_THREADS_PER_CORE: usize = 4;
/// Most `--threads` on any machine: on `uring` every pair of threads has
/// a ring of its own, made at start (512 slots of about 40 B), so the
/// rings take threads² × 20 KiB: 1.3 GiB at this bound.
pub const MAX_THREADS: usize = 256;
/// Longest `--tcp-keepalive`: the kernel's limit for `TCP_KEEPIDLE`.
pub const MAX_KEEPALIVE: Duration = Duration::from_secs(32_767);
/// Longest `--tcp-user-timeout`: the kernel takes it in milliseconds, as an
/// `int` (about 24.8 days).
pub const MAX_USER_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);
/// Default `--tcp-keepalive`: a silent dead peer goes within about two
/// minutes.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(60);
/// Default `--tcp-user-timeout`.
pub const DEFAULT_USER_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `--grace`.
pub const DEFAULT_GRACE: Duration = Duration::from_millis(5);
/// Longest `--grace`.
pub const MAX_GRACE: Duration = Duration::from_secs(1);
/// Default `--coalesce`.
pub const DEFAULT_COALESCE: Duration = Duration::from_millis(1);
/// Longest `--coalesce`: a core holds its sends for at most this long.
pub const MAX_COALESCE: Duration = Duration::from_secs(1);
/// Default `--coalesce-above`.
pub const DEFAULT_COALESCE_ABOVE: u64 = 400_000;
/// Default `--max-clients`.
pub const DEFAULT_MAX_CLIENTS: usize = 10_000;
/// Most `--max-clients`.
pub const MAX_MAX_CLIENTS: usize = 10_000_000;
/// Default `--max-clients-per-ip`.
pub const DEFAULT_MAX_CLIENTS_PER_IP: usize = 1000;
/// Default `--handshake-timeout`.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `--drain-timeout`.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest timeout any option takes (30 days): longer ones would overflow
/// the clock arithmetic of timers.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);
/// Default `--cluster-subject`.
pub const DEFAULT_SUBJECT: &str = "ringcast.lines";

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9000)),
            engine: EngineChoice::Auto,
            threads: None,
            queue: DEFAULT_QUEUE,
            max_line: DEFAULT_MAX_LINE,
            sndbuf: DEFAULT_SNDBUF,
            keepalive: Some(DEFAULT_KEEPALIVE),
            user_timeout: Some(DEFAULT_USER_TIMEOUT),
            grace: DEFAULT_GRACE,
            coalesce: DEFAULT_COALESCE,
            coalesce_above: DEFAULT_COALESCE_ABOVE,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            lame_duck: None,
            max_clients: DEFAULT_MAX_CLIENTS,
            max_clients_per_ip: DEFAULT_MAX_CLIENTS_PER_IP,
            ws_origin: WsOrigins::Same,
            idle_timeout: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            slow_disconnect: None,
            ws: None,
            metrics: None,
            cluster: None,
            tls: None,
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

    /// The most `--threads` this machine takes: [`MAX_THREADS_PER_CORE`]
    /// per available core, and at most [`MAX_THREADS`].
    pub fn max_threads() -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        cores.saturating_mul(MAX_THREADS_PER_CORE).min(MAX_THREADS)
    }

    /// Checks every value, naming the option at fault: each number has an
    /// absolute bound, within what the kernel and the machine accept.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |what: &str| Err(Error::Config(what.to_owned()));
        let at_most = |name: &str, value: usize, max: usize, why: &str| {
            if value > max {
                Err(Error::Config(format!("{name} must be at most {max}{why}")))
            } else {
                Ok(())
            }
        };
        if self.threads == Some(0) {
            return bad("--threads must be at least 1");
        }
        if let Some(threads) = self.threads {
            at_most(
                "--threads",
                threads,
                Self::max_threads(),
                &format!(" ({MAX_THREADS_PER_CORE} per available core, {MAX_THREADS} in all)"),
            )?;
        }
        if self.queue == 0 {
            return bad("--queue must be at least 1");
        }
        at_most("--queue", self.queue, MAX_QUEUE, "")?;
        if self.max_line == 0 {
            return bad("--max-line must be at least 1");
        }
        at_most("--max-line", self.max_line, MAX_MAX_LINE, " (1 GiB)")?;
        if self.sndbuf < MIN_SNDBUF {
            return Err(Error::Config(format!(
                "--sndbuf must be at least {MIN_SNDBUF}"
            )));
        }
        at_most("--sndbuf", self.sndbuf, MAX_SNDBUF, " (the kernel's limit)")?;
        if self.max_clients == 0 {
            return bad("--max-clients must be at least 1");
        }
        at_most("--max-clients", self.max_clients, MAX_MAX_CLIENTS, "")?;
        at_most(
            "--max-clients-per-ip",
            self.max_clients_per_ip,
            MAX_MAX_CLIENTS,
            " (0 for no limit)",
        )?;
        if let WsOrigins::List(list) = &self.ws_origin {
            crate::policy::codec::websocket::Origins::list(list).map_err(Error::Config)?;
        }
        if self.grace > MAX_GRACE {
            return Err(Error::Config(format!(
                "--grace must be at most {MAX_GRACE:?}"
            )));
        }
        if self.coalesce > MAX_COALESCE {
            return Err(Error::Config(format!(
                "--coalesce must be at most {MAX_COALESCE:?}"
            )));
        }
        if self.keepalive.is_some_and(|d| d > MAX_KEEPALIVE) {
            return bad("--tcp-keepalive must be at most 32767s (the kernel's limit)");
        }
        if self.user_timeout.is_some_and(|d| d > MAX_USER_TIMEOUT) {
            return bad(
                "--tcp-user-timeout must be at most 2147483647ms, about 24.8 days (the kernel's limit)",
            );
        }
        let timeouts = [
            ("--drain-timeout", Some(self.drain_timeout)),
            ("--idle-timeout", self.idle_timeout),
            ("--handshake-timeout", Some(self.handshake_timeout)),
            ("--slow-disconnect", self.slow_disconnect),
            ("--lame-duck", self.lame_duck),
        ];
        for (name, value) in timeouts {
            if value.is_some_and(|d| d > MAX_TIMEOUT) {
                return Err(Error::Config(format!("{name} must be at most 30 days")));
            }
        }
        if self.idle_timeout.is_some_and(|t| t.is_zero()) {
            return bad("--idle-timeout must be longer than 0");
        }
        if self.handshake_timeout.is_zero() {
            return bad("--handshake-timeout must be longer than 0");
        }
        if self.slow_disconnect.is_some_and(|t| t.is_zero()) {
            return bad("--slow-disconnect must be longer than 0");
        }
        if self.keepalive.is_some_and(|t| t < Duration::from_secs(1)) {
            return bad("--tcp-keepalive must be at least 1s (or 0 for off)");
        }
        if self
            .user_timeout
            .is_some_and(|t| t < Duration::from_millis(1))
        {
            return bad("--tcp-user-timeout must be at least 1ms (or 0 for the kernel's default)");
        }
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
        }
        Ok(())
    }

    /// What every client socket is set to.
    pub(crate) fn sockets(&self) -> crate::sys::net::Sockets {
        crate::sys::net::Sockets {
            sndbuf: self.sndbuf,
            keepalive: self.keepalive,
            user_timeout: self.user_timeout,
        }
    }

    /// What every connection is told.
    pub(crate) fn session_settings(&self) -> crate::engine::session::Settings {
        crate::engine::session::Settings {
            queue: self.queue,
            max_line: self.max_line,
            grace: self.grace,
            slow_disconnect: self.slow_disconnect,
            drain_stall: self.drain_timeout / 8,
            handshake_timeout: self.handshake_timeout,
            origins: std::sync::Arc::new(match &self.ws_origin {
                WsOrigins::Same => crate::policy::codec::websocket::Origins::Same,
                WsOrigins::Any => crate::policy::codec::websocket::Origins::Any,
                // Checked by `validate`; an invalid list lets nobody in.
                WsOrigins::List(list) => crate::policy::codec::websocket::Origins::list(list)
                    .unwrap_or(crate::policy::codec::websocket::Origins::Nobody),
            }),
        }
    }
}

impl ClusterConfig {
    /// Checks the URL, the subject and the node id, so a typo is an error
    /// at start, not a reconnect loop.
    pub fn validate(&self) -> Result<(), Error> {
        use std::str::FromStr as _;
        async_nats::ServerAddr::from_str(&self.url)
            .map_err(|e| Error::Config(format!("invalid --cluster URL {:?}: {e}", self.url)))?;
        let bad_subject = self.subject.is_empty()
            || self
                .subject
                .chars()
                .any(|c| c.is_whitespace() || c == '*' || c == '>')
            || self.subject.split('.').any(str::is_empty);
        if bad_subject {
            return Err(Error::Config(format!(
                "invalid --cluster-subject {:?}: use dot-separated tokens without spaces or wildcards",
                self.subject
            )));
        }
        if self.node_id.as_deref().is_some_and(str::is_empty) {
            return Err(Error::Config("--node-id must not be empty".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_each_bad_value_names_its_option() {
        assert!(Config::default().validate().is_ok());
        type Spoil = fn(&mut Config);
        let cases: [(&str, Spoil); 21] = [
            ("--max-clients-per-ip", |c| {
                c.max_clients_per_ip = MAX_MAX_CLIENTS + 1
            }),
            ("--ws-origin", |c| {
                c.ws_origin = WsOrigins::from_list("https://a.example/path")
            }),
            ("--ws-origin", |c| {
                c.ws_origin = WsOrigins::from_list("https://a.example,*")
            }),
            ("--ws-origin", |c| c.ws_origin = WsOrigins::from_list("")),
            ("--grace", |c| c.grace = Duration::from_secs(2)),
            ("--threads", |c| c.threads = Some(MAX_THREADS + 1)),
            ("--queue", |c| c.queue = MAX_QUEUE + 1),
            ("--max-line", |c| c.max_line = MAX_MAX_LINE + 1),
            ("--sndbuf", |c| c.sndbuf = MAX_SNDBUF + 1),
            ("--max-clients", |c| c.max_clients = usize::MAX),
            ("--coalesce", |c| c.coalesce = Duration::from_millis(1001)),
            ("--tcp-keepalive", |c| {
                c.keepalive = Some(Duration::from_secs(32_768))
            }),
            ("--tcp-user-timeout", |c| {
                c.user_timeout = Some(MAX_USER_TIMEOUT + Duration::from_millis(1))
            }),
            ("--queue", |c| c.queue = 0),
            ("--max-line", |c| c.max_line = 0),
            ("--sndbuf", |c| c.sndbuf = 100),
            ("--max-clients", |c| c.max_clients = 0),
            ("--coalesce", |c| c.coalesce = Duration::MAX),
            ("--idle-timeout", |c| c.idle_timeout = Some(Duration::MAX)),
            ("--slow-disconnect", |c| {
                c.slow_disconnect = Some(Duration::ZERO)
            }),
            ("--drain-timeout", |c| c.drain_timeout = Duration::MAX),
        ];
        for (name, spoil) in cases {
            let mut c = Config::default();
            spoil(&mut c);
            let err = c.validate().expect_err(name).to_string();
            assert!(err.contains(name), "{err} should name {name}");
        }
    }

    #[test]
    fn the_bounds_themselves_are_valid() {
        let c = Config {
            threads: Some(Config::max_threads()),
            queue: MAX_QUEUE,
            max_line: MAX_MAX_LINE,
            sndbuf: MAX_SNDBUF,
            max_clients: MAX_MAX_CLIENTS,
            max_clients_per_ip: MAX_MAX_CLIENTS,
            ws_origin: WsOrigins::from_list("https://a.example, http://B.example:8080,null"),
            coalesce: MAX_COALESCE,
            keepalive: Some(MAX_KEEPALIVE),
            user_timeout: Some(MAX_USER_TIMEOUT),
            drain_timeout: MAX_TIMEOUT,
            ..Config::default()
        };
        assert!(c.validate().is_ok(), "{:?}", c.validate());
        // The kernel takes them: an int of milliseconds, an int doubled.
        assert!(i32::try_from(MAX_USER_TIMEOUT.as_millis()).is_ok());
        assert!(i32::try_from(MAX_SNDBUF * 2).is_ok());
    }

    #[test]
    fn a_cluster_needs_a_url_a_plain_subject_and_a_non_empty_id() {
        let good = ClusterConfig {
            url: "nats://127.0.0.1:4222".into(),
            subject: DEFAULT_SUBJECT.into(),
            node_id: None,
        };
        assert!(good.validate().is_ok());
        for subject in ["", "a..b", "a.*", "a b"] {
            let c = ClusterConfig {
                subject: subject.into(),
                ..good.clone()
            };
            assert!(c.validate().is_err(), "{subject:?}");
        }
        let c = ClusterConfig {
            node_id: Some(String::new()),
            ..good
        };
        assert!(c.validate().is_err());
    }
}
