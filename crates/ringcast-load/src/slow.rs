//! Slow reader tasks, and the pacing of their reads.
//!
//! A slow reader is a task of its own on its own connection, like every
//! reader, and shares nothing with the rest of the run but the stop signal
//! and the warm-up channel: it never touches the counters the publishers
//! and the drain watch, so however slowly it reads, only the server can
//! make it hold anyone up. That is what it is there to measure.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::conn::{self, Conn};
use crate::plan::SlowMode;
use crate::read::{READ_CHUNK, Tally};

/// What a slow reader does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Read up to this many bytes as soon as there are any.
    Read { max: usize },
    /// Read nothing until this long after the reader started.
    WaitUntil(Duration),
}

/// When a slow reader may read, and how much: a pure function of its mode,
/// the time since it started, and when it last read.
#[derive(Debug)]
pub(crate) struct Pacer {
    mode: SlowMode,
    last_read: Option<Duration>,
}

impl Pacer {
    pub(crate) fn new(mode: SlowMode) -> Self {
        Pacer {
            mode,
            last_read: None,
        }
    }

    /// The most one read may take, whatever the time.
    pub(crate) fn max_read(&self) -> usize {
        match self.mode {
            SlowMode::Paced { read, .. } => read,
            SlowMode::Pausing { .. } => READ_CHUNK,
        }
    }

    /// What to do `now` after the start.
    pub(crate) fn step(&self, now: Duration) -> Step {
        match self.mode {
            SlowMode::Paced { read, every } => match self.last_read {
                Some(at) if now < at + every => Step::WaitUntil(at + every),
                _ => Step::Read { max: read },
            },
            SlowMode::Pausing { pause, every } => {
                // Each period starts with its reading part and ends with
                // the pause.
                let period = every.as_nanos();
                let phase = now.as_nanos() % period;
                if phase < period - pause.as_nanos() {
                    Step::Read { max: READ_CHUNK }
                } else {
                    let rest = u64::try_from(period - phase).unwrap_or(u64::MAX);
                    Step::WaitUntil(now + Duration::from_nanos(rest))
                }
            }
        }
    }

    /// Notes a read made `at` after the start.
    pub(crate) fn read_at(&mut self, at: Duration) {
        self.last_read = Some(at);
    }
}

/// What one slow reader saw.
#[derive(Debug, Default)]
pub(crate) struct SlowStats {
    /// Lines counted.
    pub(crate) received: u64,
    /// Lines that came before one their publisher had already sent after
    /// them.
    pub(crate) order_violations: u64,
    /// Lines that are not ours.
    pub(crate) malformed: u64,
    /// The server closed the connection (or it failed) before the end.
    pub(crate) disconnected: bool,
    /// The receive buffer the kernel gave the socket.
    pub(crate) rcvbuf: Option<usize>,
}

/// What a slow reader needs to know about the run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SlowRead {
    /// Line size, newline included.
    pub(crate) size: usize,
    /// Number of publishers.
    pub(crate) publishers: usize,
    /// How it reads.
    pub(crate) mode: SlowMode,
}

/// Reads what client `client` receives, slowly, until told to stop or the
/// server closes the connection. A closed connection is a result here,
/// not an error: dropping a slow client is one thing a server may do.
pub(crate) async fn read_slowly<C: Conn>(
    client: usize,
    stream: Arc<C>,
    how: SlowRead,
    mut stop: watch::Receiver<bool>,
    warmed: mpsc::UnboundedSender<usize>,
) -> SlowStats {
    let mut pacer = Pacer::new(how.mode);
    let mut tally = Tally::new(how.size, how.publishers, pacer.max_read());
    let mut stats = SlowStats {
        rcvbuf: conn::rcvbuf(&*stream).ok(),
        ..SlowStats::default()
    };
    let started = Instant::now();
    loop {
        let max = match pacer.step(started.elapsed()) {
            Step::WaitUntil(until) => {
                tokio::select! {
                    biased;
                    _ = stop.changed() => break,
                    () = tokio::time::sleep_until(started + until) => continue,
                }
            }
            Step::Read { max } => max,
        };
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            ready = stream.readable() => if ready.is_err() {
                stats.disconnected = true;
                break;
            },
        }
        // Data may have come in during what is now a pause.
        let now = started.elapsed();
        if matches!(pacer.step(now), Step::WaitUntil(_)) {
            continue;
        }
        let spare = tally.spare();
        let len = spare.len().min(max);
        match stream.try_read(&mut spare[..len]) {
            Ok(0) => {
                stats.disconnected = true;
                break;
            }
            Ok(n) => {
                pacer.read_at(now);
                if tally.take(n, |_, _| {}).warmed {
                    // The run has moved on if nobody listens.
                    let _ = warmed.send(client);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => {
                stats.disconnected = true;
                break;
            }
        }
    }
    stats.received = tally.delivered;
    stats.order_violations = tally.order_violations;
    stats.malformed = tally.malformed;
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn paced_reads_wait_after_each_read() {
        let mut p = Pacer::new(SlowMode::Paced {
            read: 4096,
            every: 10 * MS,
        });
        assert_eq!(p.max_read(), 4096);
        assert_eq!(p.step(Duration::ZERO), Step::Read { max: 4096 });
        p.read_at(3 * MS);
        assert_eq!(p.step(3 * MS), Step::WaitUntil(13 * MS));
        assert_eq!(p.step(12 * MS), Step::WaitUntil(13 * MS));
        assert_eq!(p.step(13 * MS), Step::Read { max: 4096 });
        // No data for a while: the next read is allowed at once when it
        // comes, and the wait counts from it.
        assert_eq!(p.step(40 * MS), Step::Read { max: 4096 });
        p.read_at(41 * MS);
        assert_eq!(p.step(41 * MS), Step::WaitUntil(51 * MS));
    }

    #[test]
    fn pausing_reads_fully_then_pauses_each_period() {
        let p = Pacer::new(SlowMode::Pausing {
            pause: 200 * MS,
            every: 300 * MS,
        });
        let full = Step::Read { max: READ_CHUNK };
        assert_eq!(p.max_read(), READ_CHUNK);
        assert_eq!(p.step(Duration::ZERO), full);
        assert_eq!(p.step(99 * MS), full);
        assert_eq!(p.step(100 * MS), Step::WaitUntil(300 * MS));
        assert_eq!(p.step(299 * MS), Step::WaitUntil(300 * MS));
        assert_eq!(p.step(300 * MS), full);
        assert_eq!(p.step(1000 * MS), Step::WaitUntil(1200 * MS));
        assert_eq!(p.step(1250 * MS), full);
    }

    #[test]
    fn pausing_ignores_when_it_last_read() {
        let mut p = Pacer::new(SlowMode::Pausing {
            pause: MS,
            every: 2 * MS,
        });
        p.read_at(Duration::ZERO);
        assert_eq!(p.step(Duration::ZERO), Step::Read { max: READ_CHUNK });
    }
}
