//! `ringcast load`'s command line.

use std::time::Duration;

use clap::Args;

use crate::{self as load, Rate};

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
    #[arg(long, value_name = "ADDR[,ADDR...]", default_value = DEFAULT_CONNECT)]
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

/// Default `--connect`: where `ringcast serve` listens by default.
pub const DEFAULT_CONNECT: &str = "127.0.0.1:9000";

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
