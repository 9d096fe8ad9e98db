//! `ringcast load`: the fan-out load generator.
//!
//! Opens `clients` connections to a server, or round-robin over the nodes
//! of a cluster (client `i` to address `i % n`). The first `publishers` of
//! them send fixed-size lines; every connection reads what the server broadcasts
//! and checks it: how many lines arrived, whether each publisher's lines
//! arrived in order, and how long they took.
//!
//! # The line format
//!
//! Every line is exactly `size` bytes, the trailing newline included, and
//! starts with a fixed 31-byte ASCII header:
//!
//! ```text
//! P0001S00000000002aT000000bc614e xxxxxxxx…x\n
//! ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
//! │ │   │           │
//! │ │   │           └ send time: ns since the run's origin, 12 hex digits
//! │ │   └ sequence number, per publisher from 0, 12 hex digits
//! │ └ publisher id, 4 hex digits
//! └ `P` for a counted line, `W` for a warm-up marker
//! ```
//!
//! then the filler byte `x` up to the newline (the example shows a space
//! only to separate the header). Sequence numbers and timestamps are taken
//! modulo 2^48 (about 78 hours of nanoseconds). Nothing in a line but its
//! last byte can be a newline, and a reader finds every field at a fixed
//! offset without allocating.
//!
//! # A run
//!
//! 1. Connect every client, in batches.
//! 2. Warm up: client 0 sends a marker line, again every 100 ms, until every
//!    client has received one, so the server is known to have registered
//!    them all. Markers are never counted.
//! 3. Publish for the duration, in one of two ways:
//!    - `max` (closed loop): each publisher keeps at most `window` of its
//!      own lines in flight, published but not yet received back on its own
//!      connection, and sends more as they come back. The server's
//!      throughput sets the pace, so nothing piles up in socket buffers and
//!      any loss is the server's.
//!    - a fixed rate per publisher (open loop), paced in small batches
//!      whatever the server does.
//! 4. Drain: keep reading until every published line has reached every
//!    client, or nothing has arrived for 2 s, or 10 s have passed since
//!    publishing stopped.
//!
//! # What the rates measure
//!
//! Delivered/s and MB/s count every delivery over the measured interval:
//! from the start of publishing to the last delivery (never shorter than
//! the publishing duration), so a slow drain lowers them. The rate over
//! the publishing duration alone is reported too, as is the generator's own
//! CPU use over the same interval, since a generator short of CPU limits
//! what it can measure.
//!
//! No socket is ever half-closed (the server takes a half-close for a
//! disconnect); they are all dropped at the end. If the server closes a
//! connection before the end, the run fails with an error naming the client.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use crossbeam_utils::CachePadded;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Serialize, Serializer};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

pub mod args;

pub use args::LoadArgs;

/// Length of the line header, in bytes.
pub const HEADER_LEN: usize = 31;
/// Smallest `--size`: the header plus the newline.
pub const MIN_SIZE: usize = HEADER_LEN + 1;
/// Largest `--size`.
pub const MAX_SIZE: usize = 1 << 20;
/// Most publishers the 4-hex-digit publisher id can name.
pub const MAX_PUBLISHERS: usize = 1 << 16;
/// The byte that pads a line from its header to its newline.
pub const FILLER: u8 = b'x';
/// Default `--window`, at most: lines each publisher may have in flight at
/// `max`.
pub const DEFAULT_WINDOW: usize = 1000;
/// The default `--window` shrinks so that publishers × window × clients
/// stays within this many deliveries in flight, which keeps the drain short
/// with many clients.
pub const DEFAULT_WINDOW_DELIVERIES: usize = 1_000_000;

/// The `--window` a run uses: the one given, or the default for its
/// publishers and clients.
pub fn window(args: &LoadArgs) -> usize {
    args.window.unwrap_or_else(|| {
        let fan_out = args.publishers.max(1).saturating_mul(args.clients.max(1));
        (DEFAULT_WINDOW_DELIVERIES / fan_out).clamp(1, DEFAULT_WINDOW)
    })
}

/// Tag of a counted line.
const DATA_TAG: u8 = b'P';
/// Tag of a warm-up marker.
const WARMUP_TAG: u8 = b'W';
/// Header field offsets.
const PUB_AT: usize = 1;
const SEQ_TAG_AT: usize = 5;
const SEQ_AT: usize = 6;
const TS_TAG_AT: usize = 18;
const TS_AT: usize = 19;
const PUB_DIGITS: usize = 4;
const WIDE_DIGITS: usize = 12;
const WIDE_MASK: u64 = (1 << (4 * WIDE_DIGITS)) - 1;

/// Connections opened concurrently.
const CONNECT_BATCH: usize = 128;
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long every client has to receive a warm-up marker.
const WARMUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the warm-up marker is sent again.
const WARMUP_RESEND: Duration = Duration::from_millis(100);
/// After publishing, the run ends when nothing has arrived for this long.
const QUIET: Duration = Duration::from_secs(2);
/// After publishing, the run ends after this long in any case.
const DRAIN_CAP: Duration = Duration::from_secs(10);
/// How long readers have to hand in their results once told to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes a publisher hands the kernel per write, at most.
const WRITE_BATCH: usize = 64 * 1024;
/// Bytes a reader asks the kernel for per read.
const READ_CHUNK: usize = 64 * 1024;
/// Latency samples kept over all readers, roughly.
const SAMPLE_BUDGET: usize = 1_000_000;
/// Latency samples kept per reader, at least and at most.
const SAMPLES_PER_READER: (usize, usize) = (1_000, 100_000);
/// How often the run checks whether it is done.
const TICK: Duration = Duration::from_millis(20);
/// How often the progress line is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// How fast each publisher sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    /// As fast as the server takes the lines.
    Max,
    /// This many lines per second per publisher.
    PerSecond(u64),
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Rate::Max);
        }
        match s.parse::<u64>() {
            Ok(0) => Err("must be at least 1 line per second, or `max`".to_owned()),
            Ok(n) => Ok(Rate::PerSecond(n)),
            Err(_) => Err(format!(
                "{s:?} is neither `max` nor a whole number of lines per second"
            )),
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::Max => f.write_str("max"),
            Rate::PerSecond(n) => write!(f, "{n}/s"),
        }
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Rate::Max => serializer.serialize_str("max"),
            Rate::PerSecond(n) => serializer.serialize_u64(*n),
        }
    }
}

/// The servers a run connects to (`--connect`): one address, or several
/// nodes of a cluster. Client `i` connects to address `i % len`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets(Vec<SocketAddr>);

impl Targets {
    /// The given addresses; `None` if there are none.
    pub fn new(addrs: Vec<SocketAddr>) -> Option<Self> {
        (!addrs.is_empty()).then_some(Targets(addrs))
    }

    /// The addresses, in order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.0
    }

    /// The address client `client` connects to.
    pub fn for_client(&self, client: usize) -> SocketAddr {
        self.0[client % self.0.len()]
    }
}

impl From<SocketAddr> for Targets {
    fn from(addr: SocketAddr) -> Self {
        Targets(vec![addr])
    }
}

impl FromStr for Targets {
    type Err = String;

    /// Parses `ADDR[,ADDR...]`; spaces around an address are ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let addrs = s
            .split(',')
            .map(|a| {
                let a = a.trim();
                if a.is_empty() {
                    return Err(format!(
                        "{s:?} has an empty address; use ADDR or ADDR,ADDR,..."
                    ));
                }
                a.parse::<SocketAddr>()
                    .map_err(|e| format!("{a:?} is not an IP:PORT address: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Targets::new(addrs).ok_or_else(|| "no address given".to_owned())
    }
}

impl fmt::Display for Targets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, addr) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{addr}")?;
        }
        Ok(())
    }
}

/// What a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A published line, counted in the results.
    Data,
    /// A warm-up marker, never counted.
    Warmup,
}

/// The header every generated line starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Counted line or warm-up marker.
    pub kind: Kind,
    /// The publishing client.
    pub publisher: u16,
    /// Per-publisher sequence number, from 0 (kept modulo 2^48).
    pub seq: u64,
    /// Send time, in nanoseconds since the run's origin (kept modulo 2^48).
    pub sent_ns: u64,
}

impl Header {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `line`,
    /// leaving the rest alone.
    ///
    /// # Panics
    ///
    /// If `line` is shorter than [`HEADER_LEN`].
    pub fn write(&self, line: &mut [u8]) {
        line[0] = match self.kind {
            Kind::Data => DATA_TAG,
            Kind::Warmup => WARMUP_TAG,
        };
        put_hex(
            &mut line[PUB_AT..PUB_AT + PUB_DIGITS],
            u64::from(self.publisher),
        );
        line[SEQ_TAG_AT] = b'S';
        put_hex(&mut line[SEQ_AT..SEQ_AT + WIDE_DIGITS], self.seq);
        line[TS_TAG_AT] = b'T';
        put_hex(&mut line[TS_AT..TS_AT + WIDE_DIGITS], self.sent_ns);
    }

    /// Fills `line` with a whole line: the header, filler, and a newline as
    /// its last byte.
    ///
    /// # Panics
    ///
    /// If `line` is shorter than [`MIN_SIZE`].
    pub fn encode(&self, line: &mut [u8]) {
        assert!(
            line.len() >= MIN_SIZE,
            "a line needs at least {MIN_SIZE} bytes"
        );
        self.write(line);
        let last = line.len() - 1;
        line[HEADER_LEN..last].fill(FILLER);
        line[last] = b'\n';
    }

    /// Reads the header of a whole line (newline included). `None` if the
    /// line is too short, does not end in a newline, or its header is not
    /// one this generator writes. The filler is not checked.
    pub fn parse(line: &[u8]) -> Option<Header> {
        if line.len() < MIN_SIZE || line.last() != Some(&b'\n') {
            return None;
        }
        let kind = match line[0] {
            DATA_TAG => Kind::Data,
            WARMUP_TAG => Kind::Warmup,
            _ => return None,
        };
        if line[SEQ_TAG_AT] != b'S' || line[TS_TAG_AT] != b'T' {
            return None;
        }
        let publisher = get_hex(&line[PUB_AT..PUB_AT + PUB_DIGITS])?;
        Some(Header {
            kind,
            publisher: u16::try_from(publisher).ok()?,
            seq: get_hex(&line[SEQ_AT..SEQ_AT + WIDE_DIGITS])?,
            sent_ns: get_hex(&line[TS_AT..TS_AT + WIDE_DIGITS])?,
        })
    }
}

/// Writes `v` as lowercase hex filling `out`, keeping its low digits.
fn put_hex(out: &mut [u8], mut v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in out.iter_mut().rev() {
        *b = DIGITS[(v & 0xf) as usize];
        v >>= 4;
    }
}

/// Reads lowercase hex; `None` on any other byte.
fn get_hex(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |v, &b| {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        Some(v << 4 | u64::from(d))
    })
}

/// The `q` quantile (0 to 1) of sorted values, by nearest rank; `None` if
/// there are none.
pub fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let rank = (q.clamp(0.0, 1.0) * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

/// A bounded, evenly spread sample of a stream of values, without
/// randomness: keeps every `stride`-th value, and when full drops every
/// other sample and doubles the stride.
#[derive(Debug)]
struct Sampler {
    samples: Vec<u64>,
    cap: usize,
    stride: u64,
    countdown: u64,
}

impl Sampler {
    fn new(cap: usize) -> Self {
        let cap = cap.max(2);
        Self {
            samples: Vec::with_capacity(cap),
            cap,
            stride: 1,
            countdown: 1,
        }
    }

    fn offer(&mut self, value: u64) {
        self.countdown -= 1;
        if self.countdown != 0 {
            return;
        }
        if self.samples.len() == self.cap {
            let mut i = 0usize;
            self.samples.retain(|_| {
                i += 1;
                i.is_multiple_of(2)
            });
            self.stride *= 2;
        }
        self.samples.push(value);
        self.countdown = self.stride;
    }
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// 99.9th percentile.
    pub p999: Option<f64>,
    /// How many deliveries were sampled.
    pub samples: u64,
}

/// What a load run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Connections opened.
    pub clients: usize,
    /// Connections that published.
    pub publishers: usize,
    /// Line size in bytes, newline included.
    pub size: usize,
    /// Lines per second per publisher, or `"max"`.
    pub rate: Rate,
    /// How long the publishers published, in seconds.
    pub duration_s: f64,
    /// Lines the publishers wrote in full.
    pub published: u64,
    /// Lines received, summed over all clients.
    pub delivered: u64,
    /// Deliveries a lossless server would make: published × clients.
    pub expected: u64,
    /// `expected - delivered` (never negative).
    pub loss: u64,
    /// `loss / expected`, 0 when nothing was expected.
    pub loss_ratio: f64,
    /// Deliveries per second over `elapsed_s`.
    pub delivered_per_s: f64,
    /// Megabytes (10^6 bytes) delivered per second over `elapsed_s`.
    pub mb_per_s: f64,
    /// Lines that arrived at a client with a sequence number no higher than
    /// one it had already had from the same publisher.
    pub order_violations: u64,
    /// Received lines that were not generated by this run (wrong size or
    /// header), e.g. corrupted or from other clients of the server.
    pub malformed: u64,
    /// Delivery latency, send to receive.
    pub latency_us: Latency,
    /// Seconds from the start of publishing to the last delivery (at least
    /// the publishing duration).
    pub elapsed_s: f64,
    /// Why reading stopped.
    pub ended: Ended,
    /// Lines each publisher could have in flight (`--window`) at `max`;
    /// `null` at a fixed rate.
    pub window: Option<usize>,
    /// Seconds from the end of publishing to the last delivery (0 if
    /// everything had arrived by then).
    pub drain_s: f64,
    /// Fewest lines any one publisher wrote; far below `published_max`
    /// means the server served publishers unevenly.
    pub published_min: u64,
    /// Most lines any one publisher wrote.
    pub published_max: u64,
    /// Deliveries per second counted during the publishing duration alone.
    pub publish_delivered_per_s: f64,
    /// CPU seconds (user + system) the generator used over `elapsed_s`.
    pub load_cpu_s: f64,
    /// `load_cpu_s / elapsed_s`: cores the generator kept busy.
    pub load_cpu_cores: f64,
}

/// Why a run stopped reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ended {
    /// Every published line reached every client.
    Complete,
    /// Nothing arrived for 2 s after publishing stopped.
    Quiet,
    /// 10 s passed after publishing stopped with lines still arriving.
    Cap,
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ended::Complete => "every line reached every client",
            Ended::Quiet => "nothing arrived for 2 s",
            Ended::Cap => "still arriving 10 s after publishing stopped; cut off",
        })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "ringcast load: {} clients, {} publishers, {}-byte lines, rate {}, {}",
            self.clients,
            self.publishers,
            self.size,
            self.rate,
            humantime::format_duration(Duration::from_secs_f64(self.duration_s)),
        )?;
        writeln!(f, "  published         {}", self.published)?;
        writeln!(
            f,
            "  delivered         {} in {:.2} s: {:.0}/s, {:.1} MB/s",
            self.delivered, self.elapsed_s, self.delivered_per_s, self.mb_per_s
        )?;
        writeln!(
            f,
            "  expected          {} (published × clients)",
            self.expected
        )?;
        writeln!(
            f,
            "  loss              {} ({:.4}%)",
            self.loss,
            self.loss_ratio * 100.0
        )?;
        writeln!(f, "  order violations  {}", self.order_violations)?;
        writeln!(f, "  ended             {}", self.ended)?;
        if self.malformed > 0 {
            writeln!(f, "  malformed lines   {}", self.malformed)?;
        }
        let l = &self.latency_us;
        writeln!(
            f,
            "  latency           p50 {}  p99 {}  p99.9 {}  ({} samples)",
            fmt_us(l.p50),
            fmt_us(l.p99),
            fmt_us(l.p999),
            l.samples
        )?;
        writeln!(
            f,
            "  while publishing  {:.0}/s; drain after it {:.2} s",
            self.publish_delivered_per_s, self.drain_s
        )?;
        writeln!(
            f,
            "  per publisher     {} to {} lines",
            self.published_min, self.published_max
        )?;
        if let Some(window) = self.window {
            writeln!(f, "  window            {window} lines per publisher")?;
        }
        writeln!(
            f,
            "  generator CPU     {:.2} s ({:.2} cores)",
            self.load_cpu_s, self.load_cpu_cores
        )
    }
}

/// A latency for people: µs below 10 ms, ms below 10 s, s above.
fn fmt_us(us: Option<f64>) -> String {
    match us {
        None => "-".to_owned(),
        Some(us) if us < 10_000.0 => format!("{us:.0} µs"),
        Some(us) if us < 10_000_000.0 => format!("{:.1} ms", us / 1e3),
        Some(us) => format!("{:.2} s", us / 1e6),
    }
}

/// Checks what clap cannot check flag by flag.
fn validate(args: &LoadArgs) -> anyhow::Result<()> {
    if args.clients < 1 {
        bail!("--clients must be at least 1");
    }
    if args.publishers < 1 || args.publishers > MAX_PUBLISHERS {
        bail!("--publishers must be from 1 to {MAX_PUBLISHERS}");
    }
    if args.publishers > args.clients {
        bail!(
            "--publishers ({}) must not exceed --clients ({})",
            args.publishers,
            args.clients
        );
    }
    if !(MIN_SIZE..=MAX_SIZE).contains(&args.size) {
        bail!("--size must be from {MIN_SIZE} to {MAX_SIZE} bytes");
    }
    if args.duration.is_zero() {
        bail!("--duration must be longer than zero");
    }
    if args.window == Some(0) {
        bail!("--window must be at least 1");
    }
    Ok(())
}

/// State every task of a run shares.
struct Shared {
    /// Time zero of the send timestamps.
    origin: Instant,
    /// Line size, newline included.
    size: usize,
    /// Number of publishers.
    publishers: usize,
    /// Lines written in full, over all publishers.
    published: AtomicU64,
    /// Lines received, over all readers.
    delivered: AtomicU64,
    /// When the latest counted line was received, in ns since `origin`.
    last_rx_ns: AtomicU64,
    /// Per publisher: lines written and how far they have come back.
    pubs: Box<[PubState]>,
}

/// One publisher's progress: lines written, how far they have come back
/// on its own connection, and its wake-up.
#[derive(Default)]
struct PubState {
    /// Lines written in full.
    written: CachePadded<AtomicU64>,
    /// One past the highest sequence number received back on the
    /// publisher's own connection.
    next: CachePadded<AtomicU64>,
    /// Notified when `next` moves.
    moved: Notify,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// CPU seconds, user plus system, this process has used so far.
fn cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |u| {
        let s = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        s(u.user_time()) + s(u.system_time())
    })
}

/// What one reader saw.
#[derive(Debug)]
struct ReaderStats {
    delivered: u64,
    order_violations: u64,
    malformed: u64,
    samples: Vec<u64>,
}

/// Runs a load test as `args` describe, without a progress display.
pub async fn run(args: &LoadArgs) -> anyhow::Result<Report> {
    run_with_progress(args, false).await
}

/// Runs a load test as `args` describe; with `progress`, draws a progress
/// line on stderr while it runs.
pub async fn run_with_progress(args: &LoadArgs, progress: bool) -> anyhow::Result<Report> {
    validate(args)?;
    let progress = Progress::new(progress);
    let shared = Arc::new(Shared {
        origin: Instant::now(),
        size: args.size,
        publishers: args.publishers,
        published: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        last_rx_ns: AtomicU64::new(0),
        pubs: (0..args.publishers).map(|_| PubState::default()).collect(),
    });

    progress.say(format!(
        "connecting {} clients to {}",
        args.clients, args.connect
    ));
    let streams = connect_all(&args.connect, args.clients).await?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let (warm_tx, mut warm_rx) = mpsc::unbounded_channel();
    let sample_cap =
        (SAMPLE_BUDGET / args.clients).clamp(SAMPLES_PER_READER.0, SAMPLES_PER_READER.1);
    let mut readers = JoinSet::new();
    for (client, stream) in streams.iter().enumerate() {
        readers.spawn(read_client(
            client,
            Arc::clone(stream),
            Arc::clone(&shared),
            stop_rx.clone(),
            warm_tx.clone(),
            sample_cap,
        ));
    }
    drop(warm_tx);

    progress.say("warming up".to_owned());
    let first = streams.first().context("no client connected")?;
    warm_up(first, &shared, &mut warm_rx, &mut readers, args.clients).await?;

    let cpu_at_start = cpu_seconds();
    let start = Instant::now();
    let deadline = start + args.duration;
    let mut publishers = JoinSet::new();
    for (client, stream) in streams.iter().take(args.publishers).enumerate() {
        publishers.spawn(publish(
            client,
            Arc::clone(stream),
            Arc::clone(&shared),
            args.rate,
            window(args),
            deadline,
        ));
    }
    let at_deadline = tokio::time::sleep_until(deadline);
    tokio::pin!(at_deadline);
    let mut delivered_by_deadline: Option<u64> = None;

    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut publishing = args.publishers;
    let mut published_at: Option<Instant> = None;
    let mut last_delivered = 0;
    let mut last_change = start;
    let mut rate_window = (start, 0u64, 0.0f64);
    let ended = loop {
        tokio::select! {
            Some(done) = publishers.join_next(), if publishing > 0 => {
                done.map_err(|e| anyhow!("a publisher failed: {e}"))??;
                publishing -= 1;
                if publishing == 0 {
                    published_at = Some(Instant::now());
                }
            }
            Some(done) = readers.join_next() => {
                done.map_err(|e| anyhow!("a reader failed: {e}"))??;
                bail!("a reader stopped before the end of the run");
            }
            () = &mut at_deadline, if delivered_by_deadline.is_none() => {
                delivered_by_deadline = Some(shared.delivered.load(Ordering::Relaxed));
            }
            _ = ticker.tick() => {
                let now = Instant::now();
                let delivered = shared.delivered.load(Ordering::Relaxed);
                let published = shared.published.load(Ordering::Relaxed);
                if delivered != last_delivered {
                    last_delivered = delivered;
                    last_change = now;
                }
                if now.duration_since(rate_window.0) >= PROGRESS_EVERY {
                    let dt = now.duration_since(rate_window.0).as_secs_f64();
                    rate_window = (now, delivered, delivered.saturating_sub(rate_window.1) as f64 / dt);
                    let phase = if published_at.is_some() { "draining" } else { "publishing" };
                    progress.say(format!(
                        "{phase}: published {published}, delivered {delivered} of {} ({:.0}/s)",
                        published.saturating_mul(args.clients as u64),
                        rate_window.2,
                    ));
                }
                if let Some(published_at) = published_at {
                    if delivered >= published.saturating_mul(args.clients as u64) {
                        break Ended::Complete;
                    }
                    if now.duration_since(last_change.max(published_at)) >= QUIET {
                        break Ended::Quiet;
                    }
                }
                if now >= deadline + DRAIN_CAP {
                    break Ended::Cap;
                }
            }
        }
    };
    // Publishers still running at the cap are stalled in a write; what
    // they wrote in full is counted.
    publishers.abort_all();
    let _ = stop_tx.send(true);
    progress.finish();

    let mut stats = Vec::with_capacity(args.clients);
    tokio::time::timeout(STOP_TIMEOUT, async {
        while let Some(done) = readers.join_next().await {
            stats.push(done.map_err(|e| anyhow!("a reader failed: {e}"))??);
        }
        anyhow::Ok(())
    })
    .await
    .map_err(|_| anyhow!("readers did not stop within {STOP_TIMEOUT:?}"))??;

    let cpu = cpu_seconds() - cpu_at_start;
    let last_rx = shared.origin + Duration::from_nanos(shared.last_rx_ns.load(Ordering::Relaxed));
    let elapsed = last_rx.max(deadline).duration_since(start).as_secs_f64();
    let published = shared.published.load(Ordering::Relaxed);
    let measured = Measured {
        published,
        elapsed_s: elapsed,
        delivered_by_deadline: delivered_by_deadline
            .unwrap_or_else(|| shared.delivered.load(Ordering::Relaxed)),
        cpu_s: cpu,
        ended,
        per_publisher: shared
            .pubs
            .iter()
            .map(|a| a.written.load(Ordering::Relaxed))
            .collect(),
    };
    Ok(report(args, &measured, stats))
}

/// What the run itself measured, besides the readers' counts.
struct Measured {
    /// Lines written in full.
    published: u64,
    /// Start of publishing to the last delivery, at least the duration.
    elapsed_s: f64,
    /// Deliveries counted when the duration ended.
    delivered_by_deadline: u64,
    /// Generator CPU seconds over `elapsed_s`, roughly.
    cpu_s: f64,
    /// Why reading stopped.
    ended: Ended,
    /// Lines each publisher wrote in full.
    per_publisher: Vec<u64>,
}

/// Sums what the readers saw into a report.
fn report(args: &LoadArgs, measured: &Measured, stats: Vec<ReaderStats>) -> Report {
    let Measured {
        published,
        elapsed_s,
        delivered_by_deadline,
        cpu_s,
        ended,
        ref per_publisher,
    } = *measured;
    let delivered: u64 = stats.iter().map(|s| s.delivered).sum();
    let order_violations = stats.iter().map(|s| s.order_violations).sum();
    let malformed = stats.iter().map(|s| s.malformed).sum();
    let mut samples: Vec<u64> = Vec::with_capacity(stats.iter().map(|s| s.samples.len()).sum());
    for s in stats {
        samples.extend_from_slice(&s.samples);
    }
    samples.sort_unstable();
    let us = |q| percentile(&samples, q).map(|ns| ns as f64 / 1000.0);
    let expected = published.saturating_mul(args.clients as u64);
    let loss = expected.saturating_sub(delivered);
    let elapsed = elapsed_s.max(f64::MIN_POSITIVE);
    Report {
        clients: args.clients,
        publishers: args.publishers,
        size: args.size,
        rate: args.rate,
        duration_s: args.duration.as_secs_f64(),
        published,
        delivered,
        expected,
        loss,
        loss_ratio: if expected == 0 {
            0.0
        } else {
            loss as f64 / expected as f64
        },
        delivered_per_s: delivered as f64 / elapsed,
        mb_per_s: delivered as f64 * args.size as f64 / elapsed / 1e6,
        order_violations,
        malformed,
        latency_us: Latency {
            p50: us(0.5),
            p99: us(0.99),
            p999: us(0.999),
            samples: samples.len() as u64,
        },
        elapsed_s,
        ended,
        window: (args.rate == Rate::Max).then(|| window(args)),
        published_min: per_publisher.iter().copied().min().unwrap_or(0),
        published_max: per_publisher.iter().copied().max().unwrap_or(0),
        drain_s: (elapsed_s - args.duration.as_secs_f64()).max(0.0),
        publish_delivered_per_s: delivered_by_deadline as f64 / args.duration.as_secs_f64(),
        load_cpu_s: cpu_s,
        load_cpu_cores: cpu_s / elapsed,
    }
}

/// Opens `clients` connections, client `i` to address `i % n` of
/// `targets`, [`CONNECT_BATCH`] at a time.
async fn connect_all(targets: &Targets, clients: usize) -> anyhow::Result<Vec<Arc<TcpStream>>> {
    let mut streams = Vec::with_capacity(clients);
    for from in (0..clients).step_by(CONNECT_BATCH) {
        let to = (from + CONNECT_BATCH).min(clients);
        let mut batch = JoinSet::new();
        for client in from..to {
            let addr = targets.for_client(client);
            batch.spawn(async move { (client, connect(client, addr).await) });
        }
        let mut got: Vec<Option<TcpStream>> = (from..to).map(|_| None).collect();
        let mut failed: Option<(usize, anyhow::Error)> = None;
        while let Some(done) = batch.join_next().await {
            let (client, result) = done.map_err(|e| anyhow!("a connect task failed: {e}"))?;
            match result {
                Ok(stream) => got[client - from] = Some(stream),
                Err(e) => {
                    if failed.as_ref().is_none_or(|(first, _)| client < *first) {
                        failed = Some((client, e));
                    }
                }
            }
        }
        if let Some((_, e)) = failed {
            return Err(e);
        }
        for stream in got {
            streams.push(Arc::new(stream.context("a connect task vanished")?));
        }
    }
    Ok(streams)
}

/// Opens one connection.
async fn connect(client: usize, addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Err(_) => bail!(
            "cannot connect client {client} to {addr}: timed out after {}",
            humantime::format_duration(CONNECT_TIMEOUT)
        ),
        Ok(Err(e)) => {
            let hint = if e.raw_os_error() == Some(24) {
                " (raise the open-file limit, e.g. `ulimit -n 65536`)"
            } else {
                ""
            };
            bail!("cannot connect client {client} to {addr}: {e}{hint}");
        }
        Ok(Ok(stream)) => stream,
    };
    stream
        .set_nodelay(true)
        .with_context(|| format!("cannot set TCP_NODELAY on client {client}"))?;
    Ok(stream)
}

/// The error for a connection the server closed, or that failed, mid-run.
fn closed(client: usize, error: Option<io::Error>) -> anyhow::Error {
    match error {
        None => anyhow!("server closed connection of client {client} during the run"),
        Some(e) => anyhow!("server closed connection of client {client} during the run: {e}"),
    }
}

/// Sends warm-up markers on `first` until every client has received one.
async fn warm_up(
    first: &TcpStream,
    shared: &Shared,
    warmed: &mut mpsc::UnboundedReceiver<usize>,
    readers: &mut JoinSet<anyhow::Result<ReaderStats>>,
    clients: usize,
) -> anyhow::Result<()> {
    let give_up = Instant::now() + WARMUP_TIMEOUT;
    let mut marker = vec![0u8; shared.size];
    let mut resend = tokio::time::interval(WARMUP_RESEND);
    let mut sent = 0u64;
    let mut ready = 0usize;
    while ready < clients {
        tokio::select! {
            Some(_) = warmed.recv() => ready += 1,
            Some(done) = readers.join_next() => {
                done.map_err(|e| anyhow!("a reader failed: {e}"))??;
                bail!("a reader stopped during the warm-up");
            }
            _ = resend.tick() => {
                Header { kind: Kind::Warmup, publisher: 0, seq: sent, sent_ns: shared.now_ns() }
                    .encode(&mut marker);
                sent += 1;
                let n = write_until(first, &marker, give_up).await.map_err(|e| closed(0, Some(e)))?;
                if n < marker.len() {
                    bail!("server did not take the warm-up line within {}", humantime::format_duration(WARMUP_TIMEOUT));
                }
            }
            _ = tokio::time::sleep_until(give_up) => bail!(
                "server did not echo the warm-up line to {} of {clients} clients within {}",
                clients - ready,
                humantime::format_duration(WARMUP_TIMEOUT)
            ),
        }
    }
    Ok(())
}

/// Writes `buf` unless `deadline` passes first; returns the bytes written.
async fn write_until(stream: &TcpStream, buf: &[u8], deadline: Instant) -> io::Result<usize> {
    let mut off = 0;
    while off < buf.len() {
        match stream.try_write(&buf[off..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tokio::select! {
                    ready = stream.writable() => ready?,
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(off)
}

/// Publishes from client `client` until `deadline`; returns the lines
/// written in full.
async fn publish(
    client: usize,
    stream: Arc<TcpStream>,
    shared: Arc<Shared>,
    rate: Rate,
    window: usize,
    deadline: Instant,
) -> anyhow::Result<u64> {
    let size = shared.size;
    let publisher = u16::try_from(client).context("publisher id out of range")?;
    let per_batch = (WRITE_BATCH / size).max(1);
    let mut buf = vec![0u8; per_batch * size];
    for line in buf.chunks_exact_mut(size) {
        Header {
            kind: Kind::Data,
            publisher,
            seq: 0,
            sent_ns: 0,
        }
        .encode(line);
    }
    let mut seq = 0u64;
    let mut lines_written = 0u64;
    // Writes the next `lines` lines; false once the deadline cut a write.
    let mut send = async |lines: usize, seq: &mut u64| -> anyhow::Result<bool> {
        let sent_ns = shared.now_ns();
        for (i, line) in buf.chunks_exact_mut(size).take(lines).enumerate() {
            let header = Header {
                kind: Kind::Data,
                publisher,
                seq: *seq + i as u64,
                sent_ns,
            };
            header.write(line);
        }
        let wanted = lines * size;
        let n = write_until(&stream, &buf[..wanted], deadline)
            .await
            .map_err(|e| closed(client, Some(e)))?;
        let full = (n / size) as u64;
        *seq += full;
        lines_written += full;
        shared.published.fetch_add(full, Ordering::Relaxed);
        shared.pubs[usize::from(publisher)]
            .written
            .store(lines_written, Ordering::Relaxed);
        Ok(n == wanted)
    };
    match rate {
        Rate::Max => {
            // Closed loop: at most `window` lines in flight. Refill only
            // when a good part of the window is free, so writes stay large.
            let ack = &shared.pubs[usize::from(publisher)];
            let window = window as u64;
            let refill = (window.min(per_batch as u64) / 4).max(1);
            let end = tokio::time::sleep_until(deadline);
            tokio::pin!(end);
            while Instant::now() < deadline {
                let in_flight = seq.saturating_sub(ack.next.load(Ordering::Acquire));
                let free = window.saturating_sub(in_flight);
                if free < refill {
                    // A wake-up stored since the check is kept as a permit,
                    // so none is lost.
                    tokio::select! {
                        () = ack.moved.notified() => continue,
                        () = &mut end => break,
                    }
                }
                let lines = usize::try_from(free).unwrap_or(usize::MAX).min(per_batch);
                if !send(lines, &mut seq).await? {
                    break;
                }
                // Writes rarely wait, so let the readers on this worker run.
                tokio::task::yield_now().await;
            }
        }
        Rate::PerSecond(per_s) => {
            // Wake often enough to send in small batches, at most every 1 ms.
            let period = Duration::from_secs(1)
                .checked_div(u32::try_from(per_s).unwrap_or(u32::MAX))
                .unwrap_or(Duration::ZERO)
                .clamp(Duration::from_millis(1), Duration::from_millis(50));
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
            let start = Instant::now();
            let end = tokio::time::sleep_until(deadline);
            tokio::pin!(end);
            'run: loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = &mut end => break,
                }
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                // Lines due by now, the first one at once.
                let elapsed = now.duration_since(start).as_nanos();
                let due = u64::try_from(u128::from(per_s) * elapsed / 1_000_000_000)
                    .unwrap_or(u64::MAX)
                    .saturating_add(1);
                while seq < due {
                    let lines = usize::try_from(due - seq)
                        .unwrap_or(usize::MAX)
                        .min(per_batch);
                    if !send(lines, &mut seq).await? {
                        break 'run;
                    }
                }
            }
        }
    }
    Ok(lines_written)
}

/// Reads everything client `client` receives until told to stop.
async fn read_client(
    client: usize,
    stream: Arc<TcpStream>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    warmed: mpsc::UnboundedSender<usize>,
    sample_cap: usize,
) -> anyhow::Result<ReaderStats> {
    let size = shared.size;
    // An unfinished line is kept at the front: shorter than `size`, or it
    // is not one of ours and is skipped.
    let mut buf = vec![0u8; READ_CHUNK + size];
    let mut kept = 0usize;
    let mut skipping = false;
    let mut warm = false;
    let mut next_seq = vec![0u64; shared.publishers];
    // A publisher's own reader tells it how far its lines have come back.
    let own = shared.pubs.get(client);
    let mut sampler = Sampler::new(sample_cap);
    let mut stats = ReaderStats {
        delivered: 0,
        order_violations: 0,
        malformed: 0,
        samples: Vec::new(),
    };
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            ready = stream.readable() => ready.map_err(|e| closed(client, Some(e)))?,
        }
        let n = match stream.try_read(&mut buf[kept..]) {
            Ok(0) => return Err(closed(client, None)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(closed(client, Some(e))),
        };
        let now = shared.now_ns();
        let end = kept + n;
        let mut line_start = 0;
        let mut delivered = 0u64;
        for nl in memchr::memchr_iter(b'\n', &buf[kept..end]) {
            let line = &buf[line_start..=kept + nl];
            line_start = kept + nl + 1;
            if skipping {
                skipping = false;
                stats.malformed += 1;
                continue;
            }
            let header = if line.len() == size {
                Header::parse(line)
            } else {
                None
            };
            match header {
                Some(h) if h.kind == Kind::Data && usize::from(h.publisher) < next_seq.len() => {
                    if !warm {
                        // Not ours to count: it predates the warm-up.
                        continue;
                    }
                    let next = &mut next_seq[usize::from(h.publisher)];
                    if h.seq < *next {
                        stats.order_violations += 1;
                    } else {
                        *next = h.seq + 1;
                    }
                    delivered += 1;
                    sampler.offer(now.wrapping_sub(h.sent_ns) & WIDE_MASK);
                }
                Some(h) if h.kind == Kind::Warmup => {
                    if !warm {
                        warm = true;
                        // The run has moved on if nobody listens.
                        let _ = warmed.send(client);
                    }
                }
                _ => stats.malformed += 1,
            }
        }
        let rest = end - line_start;
        if rest >= size {
            // Longer than any line of ours: drop it up to its newline.
            skipping = true;
            kept = 0;
        } else {
            buf.copy_within(line_start..end, 0);
            kept = rest;
        }
        if delivered > 0 {
            stats.delivered += delivered;
            shared.delivered.fetch_add(delivered, Ordering::Relaxed);
            shared.last_rx_ns.fetch_max(now, Ordering::Relaxed);
            if let Some(ack) = own {
                let next = next_seq[client];
                if ack.next.load(Ordering::Relaxed) != next {
                    ack.next.store(next, Ordering::Release);
                    ack.moved.notify_one();
                }
            }
        }
    }
    stats.samples = sampler.samples;
    Ok(stats)
}

/// The progress line on stderr, when wanted.
struct Progress(Option<ProgressBar>);

impl Progress {
    fn new(show: bool) -> Self {
        Progress(show.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template("{spinner} [{elapsed}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        }))
    }

    fn say(&self, message: String) {
        if let Some(bar) = &self.0 {
            bar.set_message(message);
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_round_trips() {
        let header = Header {
            kind: Kind::Data,
            publisher: 0x1a2b,
            seq: 0x0123_4567_89ab,
            sent_ns: 42,
        };
        let mut line = vec![0u8; 64];
        header.encode(&mut line);
        assert_eq!(line.len(), 64);
        assert_eq!(&line[..HEADER_LEN], b"P1a2bS0123456789abT00000000002a");
        assert!(line[HEADER_LEN..63].iter().all(|&b| b == FILLER));
        assert_eq!(memchr::memchr_iter(b'\n', &line).collect::<Vec<_>>(), [63]);
        assert_eq!(Header::parse(&line), Some(header));
    }

    #[test]
    fn smallest_line_has_no_filler() {
        let header = Header {
            kind: Kind::Warmup,
            publisher: 0,
            seq: u64::MAX,
            sent_ns: 7,
        };
        let mut line = vec![0u8; MIN_SIZE];
        header.encode(&mut line);
        assert_eq!(&line[..], b"W0000SffffffffffffT000000000007\n");
        let parsed = Header::parse(&line).expect("parses");
        assert_eq!(parsed.kind, Kind::Warmup);
        assert_eq!(parsed.seq, WIDE_MASK, "kept modulo 2^48");
    }

    #[test]
    fn parse_rejects_foreign_lines() {
        assert_eq!(Header::parse(b"hello\n"), None);
        let mut line = vec![0u8; 40];
        Header {
            kind: Kind::Data,
            publisher: 1,
            seq: 2,
            sent_ns: 3,
        }
        .encode(&mut line);
        let mut no_newline = line.clone();
        *no_newline.last_mut().expect("not empty") = b'x';
        assert_eq!(Header::parse(&no_newline), None);
        let mut bad_digit = line.clone();
        bad_digit[SEQ_AT + 3] = b'G';
        assert_eq!(Header::parse(&bad_digit), None);
        let mut bad_tag = line;
        bad_tag[0] = b'Q';
        assert_eq!(Header::parse(&bad_tag), None);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[7], 0.999), Some(7));
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&v, 0.5), Some(500));
        assert_eq!(percentile(&v, 0.99), Some(990));
        assert_eq!(percentile(&v, 0.999), Some(999));
        assert_eq!(percentile(&v, 1.0), Some(1000));
        let v: Vec<u64> = (1..=10).collect();
        assert_eq!(percentile(&v, 0.99), Some(10));
        assert_eq!(percentile(&v, 0.5), Some(5));
    }

    #[test]
    fn sampler_stays_bounded_and_spread() {
        let mut s = Sampler::new(100);
        for v in 0..10_000u64 {
            s.offer(v);
        }
        assert!(s.samples.len() <= 100);
        assert!(s.samples.len() >= 50);
        // Evenly spread: the samples cover the whole stream.
        assert!(s.samples.first().is_some_and(|&v| v < 200));
        assert!(s.samples.last().is_some_and(|&v| v > 9_500));
        assert!(s.samples.windows(2).all(|w| w[0] < w[1]));
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: LoadArgs,
    }

    #[test]
    fn default_window_bounds_the_deliveries_in_flight() {
        use clap::Parser as _;
        let args = |extra: &[&str]| {
            let mut argv = vec!["load"];
            argv.extend_from_slice(extra);
            Cli::parse_from(argv).args
        };
        let w = |extra: &[&str]| window(&args(extra));
        assert_eq!(w(&["--clients", "10", "--publishers", "10"]), 1000);
        assert_eq!(w(&["--clients", "100", "--publishers", "10"]), 1000);
        assert_eq!(w(&["--clients", "1000", "--publishers", "10"]), 100);
        assert_eq!(w(&["--clients", "60000", "--publishers", "60000"]), 1);
        assert_eq!(w(&["--clients", "1000", "--window", "7"]), 7);
    }

    #[test]
    fn connect_addresses_parse() {
        let a: SocketAddr = "127.0.0.1:9001".parse().expect("addr");
        let b: SocketAddr = "127.0.0.1:9002".parse().expect("addr");
        let c: SocketAddr = "[::1]:9003".parse().expect("addr");
        let one: Targets = "127.0.0.1:9001".parse().expect("one address");
        assert_eq!(one.addrs(), [a]);
        assert_eq!(one.for_client(0), a);
        assert_eq!(one.for_client(7), a);
        let two: Targets = "127.0.0.1:9001,127.0.0.1:9002".parse().expect("two");
        assert_eq!(two.addrs(), [a, b]);
        let spread: Vec<_> = (0..5).map(|i| two.for_client(i)).collect();
        assert_eq!(spread, [a, b, a, b, a]);
        assert_eq!(two.to_string(), "127.0.0.1:9001,127.0.0.1:9002");
        let three: Targets = " 127.0.0.1:9001 , 127.0.0.1:9002,[::1]:9003"
            .parse()
            .expect("spaces and IPv6");
        assert_eq!(three.addrs(), [a, b, c]);
        assert_eq!(three.for_client(5), c);
        assert!("".parse::<Targets>().is_err());
        assert!("127.0.0.1:9001,".parse::<Targets>().is_err());
        assert!(",127.0.0.1:9001".parse::<Targets>().is_err());
        assert!("127.0.0.1:9001,,127.0.0.1:9002".parse::<Targets>().is_err());
        assert!("127.0.0.1".parse::<Targets>().is_err(), "no port");
        assert!("localhost:9001".parse::<Targets>().is_err(), "not an IP");
        assert_eq!(Targets::new(Vec::new()), None);
        assert_eq!(Targets::from(a), one);
    }

    #[test]
    fn connect_flag_takes_a_list() {
        use clap::Parser as _;
        let load = |argv: &[&str]| Cli::try_parse_from(&argv[1..]).map(|c| c.args.connect);
        let default = load(&["ringcast", "load"]).expect("default");
        assert_eq!(default.addrs().len(), 1);
        let two = load(&[
            "ringcast",
            "load",
            "--connect",
            "127.0.0.1:9001,127.0.0.1:9002",
        ])
        .expect("two addresses");
        assert_eq!(two.addrs().len(), 2);
        assert!(load(&["ringcast", "load", "--connect", "127.0.0.1:9001,nope"]).is_err());
    }

    #[test]
    fn rate_parses() {
        assert_eq!("max".parse(), Ok(Rate::Max));
        assert_eq!("1000".parse(), Ok(Rate::PerSecond(1000)));
        assert!("0".parse::<Rate>().is_err());
        assert!("fast".parse::<Rate>().is_err());
        assert_eq!(
            serde_json::to_string(&[Rate::Max, Rate::PerSecond(5)]).expect("serializes"),
            r#"["max",5]"#
        );
    }
}
