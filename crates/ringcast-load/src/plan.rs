//! What a run is asked to do, checked once: [`Plan`], built from the
//! command line's [`LoadArgs`] or by [`Plan::builder`] for callers without
//! one.
//!
//! Every default and every check lives here; the command line only spells
//! the options out, so a bench harness calling the library gets the same
//! checks and the same defaults as `ringcast load`.

use std::path::PathBuf;
use std::time::Duration;

use crate::LoadArgs;
use crate::tls::TlsTrust;
use crate::wire::{MAX_PUBLISHERS, MAX_SIZE, MIN_SIZE};

mod slow;
mod values;

pub use slow::{
    DEFAULT_SLOW_EVERY, DEFAULT_SLOW_RCVBUF, DEFAULT_SLOW_READ, MAX_SLOW_RCVBUF, MAX_SLOW_READ,
    SlowMode, SlowReaders,
};
pub use values::{PacedBy, Rate, Targets};

/// Default `--connect`: where `ringcast serve` listens by default.
pub const DEFAULT_CONNECT: &str = "127.0.0.1:9000";
/// Default `--clients`.
pub const DEFAULT_CLIENTS: usize = 100;
/// Default `--publishers`.
pub const DEFAULT_PUBLISHERS: usize = 1;
/// Default `--size`, in bytes.
pub const DEFAULT_SIZE: usize = 64;
/// Default `--duration`.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// Default `--threads`.
pub const DEFAULT_THREADS: usize = 2;
/// Default `--window`, at most: lines each publisher may have in flight at
/// `max`.
pub const DEFAULT_WINDOW: usize = 1000;
/// The default `--window` shrinks so that publishers × window × clients
/// stays within this many deliveries in flight, which keeps the drain short
/// with many clients.
pub const DEFAULT_WINDOW_DELIVERIES: usize = 1_000_000;

/// `--paced-by every-reader` keeps a count per publisher and fast reader,
/// 8 publishers to a 64-byte cache line: at most this many lines (256 MiB).
const MAX_RECEIVED_LINES: usize = 4 << 20;

/// A value a plan cannot run with. Names the `ringcast load` flag whose
/// value it is; a [`PlanBuilder`] method has the same name, with `_` for
/// `-`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--{flag} {reason}")]
pub struct PlanError {
    flag: &'static str,
    reason: String,
}

impl PlanError {
    fn new(flag: &'static str, reason: impl Into<String>) -> Self {
        PlanError {
            flag,
            reason: reason.into(),
        }
    }

    /// The flag at fault, without its dashes (`clients`, `slow-pause`).
    pub fn flag(&self) -> &'static str {
        self.flag
    }
}

/// A checked description of a run: every value in range and consistent
/// with the others. Build one with [`Plan::builder`] or from [`LoadArgs`]
/// with [`Plan::from_args`]; either checks everything once, so the run
/// itself checks nothing again.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    targets: Targets,
    clients: usize,
    publishers: usize,
    size: usize,
    duration: Duration,
    rate: Rate,
    window: usize,
    paced_by: PacedBy,
    threads: usize,
    slow: Option<SlowReaders>,
    tls: Option<TlsTrust>,
}

impl Plan {
    /// A builder for a plan against `targets`, with every other value at
    /// the same default as `ringcast load`.
    pub fn builder(targets: impl Into<Targets>) -> PlanBuilder {
        PlanBuilder {
            targets: targets.into(),
            clients: DEFAULT_CLIENTS,
            publishers: DEFAULT_PUBLISHERS,
            size: DEFAULT_SIZE,
            duration: DEFAULT_DURATION,
            rate: Rate::Max,
            window: None,
            paced_by: PacedBy::default(),
            threads: DEFAULT_THREADS,
            slow: SlowReaders::default(),
            tls_ca: None,
        }
    }

    /// The plan the command line describes.
    pub fn from_args(args: &LoadArgs) -> Result<Plan, PlanError> {
        Plan::try_from(args)
    }

    /// The servers to connect to.
    pub fn targets(&self) -> &Targets {
        &self.targets
    }

    /// Connections that read everything; the first
    /// [`publishers`](Plan::publishers) of them also publish.
    pub fn clients(&self) -> usize {
        self.clients
    }

    /// Clients that publish, from 1 to [`clients`](Plan::clients).
    pub fn publishers(&self) -> usize {
        self.publishers
    }

    /// Bytes per line, the newline included.
    pub fn size(&self) -> usize {
        self.size
    }

    /// How long the publishers publish.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// Lines per second per publisher, or `max`.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// At `max`, the most lines each publisher keeps in flight: the one
    /// asked for, or the default for these clients and publishers. Not
    /// used at a fixed rate.
    pub fn window(&self) -> usize {
        self.window
    }

    /// At `max`, what holds a publisher's lines in flight. Not used at a
    /// fixed rate.
    pub fn paced_by(&self) -> PacedBy {
        self.paced_by
    }

    /// Worker threads the runtime driving the run should have. The run
    /// itself uses whatever runtime it is awaited on; `ringcast load`
    /// builds one with this many.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The slow readers on top of [`clients`](Plan::clients), if any.
    pub fn slow(&self) -> Option<&SlowReaders> {
        self.slow.as_ref()
    }

    /// How many slow readers: 0 without any.
    pub fn slow_clients(&self) -> usize {
        self.slow.map_or(0, |s| s.count)
    }

    /// With TLS, whom it trusts; `None` for plain TCP.
    pub fn tls(&self) -> Option<&TlsTrust> {
        self.tls.as_ref()
    }
}

impl TryFrom<&LoadArgs> for Plan {
    type Error = PlanError;

    fn try_from(args: &LoadArgs) -> Result<Self, Self::Error> {
        let mut builder = Plan::builder(args.connect.clone())
            .clients(args.clients)
            .publishers(args.publishers)
            .size(args.size)
            .duration(args.duration)
            .rate(args.rate)
            .paced_by(args.paced_by)
            .threads(args.threads);
        if let Some(window) = args.window {
            builder = builder.window(window);
        }
        if let (true, Some(ca)) = (args.tls, &args.tls_ca) {
            builder = builder.tls_ca(ca);
        }
        builder.slow_readers(slow_from_args(args)?).build()
    }
}

/// The slow readers the `--slow-*` flags describe. Which flags were given
/// matters here, so these checks are the command line's own; the values'
/// ranges are checked with the rest of the plan.
fn slow_from_args(args: &LoadArgs) -> Result<SlowReaders, PlanError> {
    let paced = [
        ("slow-read", args.slow_read.is_some()),
        ("slow-every", args.slow_every.is_some()),
    ];
    let pausing = [
        ("slow-pause", args.slow_pause.is_some()),
        ("slow-pause-every", args.slow_pause_every.is_some()),
    ];
    let given = |flags: &[(&'static str, bool)]| flags.iter().find(|f| f.1).map(|f| f.0);
    if args.slow_clients == 0 {
        let rcvbuf = [("slow-rcvbuf", args.slow_rcvbuf.is_some())];
        if let Some(flag) = given(&paced).or(given(&pausing)).or(given(&rcvbuf)) {
            return Err(PlanError::new(flag, "only applies with --slow-clients"));
        }
    }
    let mode = match (args.slow_pause, args.slow_pause_every) {
        (None, None) => SlowMode::Paced {
            read: args.slow_read.unwrap_or(DEFAULT_SLOW_READ),
            every: args.slow_every.unwrap_or(DEFAULT_SLOW_EVERY),
        },
        (Some(pause), Some(every)) => {
            if let Some(flag) = given(&paced) {
                return Err(PlanError::new(
                    flag,
                    "cannot be combined with --slow-pause: a slow reader either paces its \
                     reads or pauses",
                ));
            }
            SlowMode::Pausing { pause, every }
        }
        (Some(_), None) => {
            return Err(PlanError::new(
                "slow-pause-every",
                "is needed with --slow-pause",
            ));
        }
        (None, Some(_)) => {
            return Err(PlanError::new(
                "slow-pause",
                "is needed with --slow-pause-every",
            ));
        }
    };
    Ok(SlowReaders {
        count: args.slow_clients,
        mode,
        rcvbuf: match args.slow_rcvbuf.unwrap_or(DEFAULT_SLOW_RCVBUF) {
            0 => None,
            n => Some(n),
        },
    })
}

/// Collects a plan's values; [`build`](PlanBuilder::build) checks them.
/// Every value not set keeps `ringcast load`'s default.
#[derive(Debug, Clone)]
#[must_use]
pub struct PlanBuilder {
    targets: Targets,
    clients: usize,
    publishers: usize,
    size: usize,
    duration: Duration,
    rate: Rate,
    window: Option<usize>,
    paced_by: PacedBy,
    threads: usize,
    slow: SlowReaders,
    tls_ca: Option<PathBuf>,
}

impl PlanBuilder {
    /// Connections to open, publishers included (`--clients`).
    pub fn clients(mut self, clients: usize) -> Self {
        self.clients = clients;
        self
    }

    /// How many of the clients publish (`--publishers`).
    pub fn publishers(mut self, publishers: usize) -> Self {
        self.publishers = publishers;
        self
    }

    /// Bytes per line, the newline included (`--size`).
    pub fn size(mut self, size: usize) -> Self {
        self.size = size;
        self
    }

    /// How long to publish (`--duration`).
    pub fn duration(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }

    /// Lines per second per publisher, or `max` (`--rate`).
    pub fn rate(mut self, rate: Rate) -> Self {
        self.rate = rate;
        self
    }

    /// Lines in flight per publisher at `max` (`--window`), instead of the
    /// default for the clients and publishers.
    pub fn window(mut self, window: usize) -> Self {
        self.window = Some(window);
        self
    }

    /// At `max`, what holds a publisher's lines in flight (`--paced-by`).
    pub fn paced_by(mut self, paced_by: PacedBy) -> Self {
        self.paced_by = paced_by;
        self
    }

    /// Worker threads for the runtime (`--threads`).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// Slow readers to add on top of the clients (`--slow-*`); none by
    /// default.
    pub fn slow_readers(mut self, slow: SlowReaders) -> Self {
        self.slow = slow;
        self
    }

    /// Every connection over TLS, trusting the certificates of the PEM
    /// file `ca` (`--tls --tls-ca`), which build reads; plain TCP by
    /// default.
    pub fn tls_ca(mut self, ca: impl Into<PathBuf>) -> Self {
        self.tls_ca = Some(ca.into());
        self
    }

    /// Checks every value, alone and against the others.
    pub fn build(self) -> Result<Plan, PlanError> {
        let at_least_1 = |flag, n: usize| {
            if n == 0 {
                Err(PlanError::new(flag, "must be at least 1"))
            } else {
                Ok(n)
            }
        };
        let clients = at_least_1("clients", self.clients)?;
        let publishers = at_least_1("publishers", self.publishers)?;
        if publishers > MAX_PUBLISHERS {
            return Err(PlanError::new(
                "publishers",
                format!("must be at most {MAX_PUBLISHERS} (the header's 4 hex digits)"),
            ));
        }
        if publishers > clients {
            return Err(PlanError::new(
                "publishers",
                format!("({publishers}) must not exceed --clients ({clients})"),
            ));
        }
        if self.size < MIN_SIZE {
            return Err(PlanError::new(
                "size",
                format!("must be at least {MIN_SIZE} (the line header and its newline)"),
            ));
        }
        if self.size > MAX_SIZE {
            return Err(PlanError::new(
                "size",
                format!("must be at most {MAX_SIZE}"),
            ));
        }
        if self.duration.is_zero() {
            return Err(PlanError::new("duration", "must be longer than zero"));
        }
        let window = match self.window {
            Some(window) => at_least_1("window", window)?,
            None => default_window(publishers, clients),
        };
        if self.rate == Rate::Max
            && self.paced_by == PacedBy::EveryReader
            && publishers.div_ceil(8).saturating_mul(clients) > MAX_RECEIVED_LINES
        {
            return Err(PlanError::new(
                "paced-by",
                format!(
                    "every-reader keeps a count per publisher and client, too many for \
                     {publishers} publishers and {clients} clients; use fewer, or \
                     --paced-by own-connection"
                ),
            ));
        }
        Ok(Plan {
            targets: self.targets,
            clients,
            publishers,
            size: self.size,
            duration: self.duration,
            rate: self.rate,
            window,
            paced_by: self.paced_by,
            threads: at_least_1("threads", self.threads)?,
            slow: self.slow.check()?,
            tls: self
                .tls_ca
                .map(|ca| TlsTrust::from_ca_file(&ca).map_err(|e| PlanError::new("tls-ca", e)))
                .transpose()?,
        })
    }
}

/// The default `--window`: [`DEFAULT_WINDOW`], or fewer so that
/// publishers × window × clients stays within
/// [`DEFAULT_WINDOW_DELIVERIES`].
pub fn default_window(publishers: usize, clients: usize) -> usize {
    let fan_out = publishers.max(1).saturating_mul(clients.max(1));
    (DEFAULT_WINDOW_DELIVERIES / fan_out).clamp(1, DEFAULT_WINDOW)
}

#[cfg(test)]
mod tests;
