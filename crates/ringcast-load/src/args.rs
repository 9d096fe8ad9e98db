//! `ringcast load`'s command line. It only spells the options out and
//! parses each value's syntax; [`Plan`](crate::Plan) holds the defaults'
//! meaning and does every range and consistency check, once, for the
//! command line and library callers alike.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::plan::{
    self, DEFAULT_CLIENTS, DEFAULT_PUBLISHERS, DEFAULT_SIZE, DEFAULT_THREADS, PacedBy, Rate,
    Targets,
};

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
    #[arg(long, value_name = "ADDR[,ADDR...]", default_value = plan::DEFAULT_CONNECT)]
    pub connect: Targets,

    /// Connections to open. Every one of them reads everything the server
    /// broadcasts; the first `--publishers` of them also send. The slow
    /// readers of `--slow-clients` come on top of these. A ringcast server
    /// takes at most `--max-clients-per-ip` (1000 by default) from this
    /// machine: start it with `--max-clients-per-ip 0` for more.
    #[arg(long, value_name = "C", default_value_t = DEFAULT_CLIENTS)]
    pub clients: usize,

    /// How many of the clients publish lines (at least 1, at most
    /// `--clients`).
    #[arg(long, value_name = "P", default_value_t = DEFAULT_PUBLISHERS)]
    pub publishers: usize,

    /// Size of each published line in bytes, the trailing newline included.
    /// At least 32, which is the fixed header (publisher, sequence number,
    /// send timestamp) plus the newline, and at most 1048576; the rest is
    /// filler. Keep it within the server's `--max-line`.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_SIZE)]
    pub size: usize,

    /// How long the publishers publish (e.g. `10s`, `500ms`, `1m`). Readers
    /// then keep reading until everything arrived, or nothing has for 2 s,
    /// or 10 s more have passed.
    #[arg(long, value_name = "DUR", default_value = DEFAULT_DURATION, value_parser = humantime::parse_duration)]
    pub duration: Duration,

    /// Lines per second per publisher (open loop: sent on schedule whatever
    /// the server does), or `max` for saturation (closed loop: each
    /// publisher keeps at most a window of its lines in flight; see
    /// `--paced-by`). At a
    /// fixed rate a line's latency counts from its scheduled send time, so
    /// a publisher held up by the server still counts the wait (no
    /// coordinated omission; the generator's 1 ms timer resolution is in it
    /// too); at `max` it counts from the actual send time.
    #[arg(long, value_name = "MSGS_PER_S", default_value = "max")]
    pub rate: Rate,

    /// With `--rate max`: the most lines each publisher may have in flight,
    /// published but not yet received (see `--paced-by` for by whom). It
    /// sends again as its lines come back, so the run measures what the
    /// server moves rather than what piles up in socket buffers, and the
    /// drain after `--duration` is short. A publisher whose window stays
    /// full with nothing back for 1 s gives its lines in flight up, as lost
    /// (reported as `window_resets`). Ignored at a fixed rate. [default:
    /// 1000, or fewer so that publishers × window × clients, the deliveries
    /// in flight, stays within 1,000,000]
    #[arg(long, value_name = "LINES")]
    pub window: Option<usize>,

    /// With `--rate max`, who has to have a publisher's line before it no
    /// longer counts as in flight.
    ///
    /// `every-reader`: every fast reader (a reader that lost it counts,
    /// once it has a later line). The window moves as TCP's does: it starts
    /// at 10 lines and doubles every round trip up to `--window`, halves
    /// when a reader finds lines of the publisher missing, and then grows
    /// by one line per window delivered. So the publishers settle near the
    /// highest rate every reader keeps up with: a saturation figure with
    /// little loss, alike for a server that drops for slow readers and one
    /// that slows its publishers down. A publisher whose wait runs several
    /// times longer than its recent ones sends one line beyond the window,
    /// so that a reader that lost its last lines shows the gap. Reported
    /// as `window_cuts`, `window_probes` and the windows at the end.
    ///
    /// `own-connection`: the publisher's own connection, with the window
    /// fixed. Publishers outpace readers slower than their own connection,
    /// which measures overload: a server that drops for slow readers drops.
    /// Its lines lost on its own connection never come back, so a gap there
    /// gives up its lines in flight.
    ///
    /// `none`: no window at all. Each publisher writes as fast as its
    /// socket takes lines, whatever the readers get: a flood, which
    /// measures what a server does when one publisher outruns it, loss
    /// included. `--window` is ignored.
    #[arg(long, value_name = "WHO", value_enum, default_value_t = PacedBy::EveryReader)]
    pub paced_by: PacedBy,

    /// Worker threads of the generator's own runtime. Connections are
    /// tasks, not threads, so a few threads drive thousands of them.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_THREADS)]
    pub threads: usize,

    /// Print the result as one JSON object on stdout, and no progress.
    #[arg(long)]
    pub json: bool,

    /// Connect over TLS: every connection, publishers, readers and slow
    /// readers alike, as to `ringcast serve --tls-cert`. The server's
    /// certificate must be valid for `localhost` and signed by a CA of
    /// `--tls-ca` (or be one of its certificates). Needs `--tls-ca`.
    #[arg(long, requires = "tls_ca")]
    pub tls: bool,

    /// With `--tls`: a PEM file of the certificates to trust, and no
    /// other (for a self-signed server, its own certificate).
    #[arg(long, value_name = "PEM", requires = "tls")]
    pub tls_ca: Option<PathBuf>,

    /// Slow readers to open on top of `--clients`, to measure how the
    /// server treats clients that cannot keep up. They never publish, do
    /// not count towards "every line reached every client" (the run ends
    /// when the fast readers are done, whatever the slow ones still lack),
    /// and are reported apart: lines received in total and per client,
    /// their loss, and whether each publisher's lines stayed in order
    /// (gaps are expected; reordering is not). By default each reads
    /// `--slow-read` bytes every `--slow-every`; `--slow-pause` makes them
    /// pause instead.
    #[arg(long, value_name = "N", default_value_t = 0, help_heading = SLOW)]
    pub slow_clients: usize,

    /// Bytes a slow reader asks for per read: with `--slow-every`, it
    /// drains at most this many bytes per pause. Not with `--slow-pause`.
    /// [default: 4096]
    #[arg(long, value_name = "BYTES", help_heading = SLOW)]
    pub slow_read: Option<usize>,

    /// How long a slow reader waits after each read (e.g. `10ms`, `1s`).
    /// Not with `--slow-pause`. [default: 10ms]
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration, help_heading = SLOW)]
    pub slow_every: Option<Duration>,

    /// Receive buffer (SO_RCVBUF) each slow reader sets before it
    /// connects, so the server sees a small TCP window from the start;
    /// Linux doubles it. `0` keeps the kernel's default. [default: 8192]
    #[arg(long, value_name = "BYTES", help_heading = SLOW)]
    pub slow_rcvbuf: Option<usize>,

    /// Instead of pacing their reads, slow readers read everything as it
    /// comes but stop reading for this long (e.g. `200ms`) at the end of
    /// every `--slow-pause-every`, which must be given too and be longer.
    /// With `--slow-pause 200ms --slow-pause-every 300ms` a slow reader
    /// reads for 100 ms, then pauses 200 ms, and so on. Cannot be combined
    /// with `--slow-read` or `--slow-every`. [default: off]
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration, help_heading = SLOW)]
    pub slow_pause: Option<Duration>,

    /// The period of `--slow-pause`: a pause ends each one (e.g. `300ms`).
    /// [default: off]
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration, help_heading = SLOW)]
    pub slow_pause_every: Option<Duration>,
}

/// The help heading of the slow-reader options.
const SLOW: &str = "Slow readers";

/// Default `--duration`, as the command line spells
/// [`plan::DEFAULT_DURATION`].
const DEFAULT_DURATION: &str = "10s";
