//! Publisher tasks: what each publishing client sends, when, and with
//! which timestamp.
//!
//! # Timestamps and coordinated omission
//!
//! At `max` (closed loop) a line is stamped with the moment it is handed to
//! the kernel: the publisher waits for its window anyway, so there is no
//! schedule to fall behind.
//!
//! # The window
//!
//! At `max` a publisher keeps at most a window of lines in flight; who has
//! to have them, how the window moves, and what happens to lines that
//! never come back is in [`crate::window`].
//!
//! At a fixed rate (open loop) line `i` of every publisher is due at
//! `start + i / rate`, and is stamped with that scheduled time, not with
//! the moment it was written. A publisher held up (a full socket buffer, a
//! server that stopped reading, a descheduled generator) sends the lines it
//! owes as soon as it can, and their latency includes the time they waited
//! to be sent, as a client with its own clock would see it. Stamping the
//! actual send time instead would hide every such stall: the coordinated
//! omission of a load generator that slows down with the server it
//! measures. What is still not counted is a line that was due before the
//! end of the duration and never written at all; the report counts those
//! as `unsent`.

use std::num::NonZeroU64;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use tokio::time::Instant;

use crate::conn::{Conn, closed, write_until};
use crate::plan::Rate;
use crate::shared::Shared;
use crate::window::{Loop, Room};
use crate::wire::{Header, Kind};

/// Bytes a publisher hands the kernel per write, at most.
const WRITE_BATCH: usize = 64 * 1024;
/// At `max`, how long a publisher with a full window waits for any of its
/// lines to come back before it gives them up for lost (see
/// [`crate::window`]).
const GIVE_UP_AFTER: Duration = Duration::from_secs(1);

/// When line `index` of a publisher sending `per_s` lines per second from
/// `start_ns` is due, in ns on the same clock: `start_ns + index / per_s`
/// seconds, rounded down to the nanosecond.
pub(crate) fn scheduled_ns(start_ns: u64, per_s: NonZeroU64, index: u64) -> u64 {
    let offset = u128::from(index) * 1_000_000_000 / u128::from(per_s.get());
    start_ns.saturating_add(u64::try_from(offset).unwrap_or(u64::MAX))
}

/// How many lines are due `elapsed_ns` after the start at `per_s` lines
/// per second: every line whose scheduled time is not later, the first one
/// (due at the start itself) included.
pub(crate) fn due_by(per_s: NonZeroU64, elapsed_ns: u64) -> u64 {
    let due = u128::from(per_s.get()) * u128::from(elapsed_ns) / 1_000_000_000;
    u64::try_from(due).unwrap_or(u64::MAX).saturating_add(1)
}

/// Which time a batch of lines carries.
#[derive(Clone, Copy)]
enum Stamp {
    /// The time of the write (closed loop).
    Now,
    /// Each line's time on the open-loop schedule.
    Scheduled { start_ns: u64, per_s: NonZeroU64 },
}

/// Publishes from client `client`, from `start` until `deadline`. Returns
/// the lines a fixed rate's schedule called for before `deadline` that
/// were not written (0 at `max`).
pub(crate) async fn publish<C: Conn>(
    client: usize,
    stream: Arc<C>,
    shared: Arc<Shared>,
    rate: Rate,
    start: Instant,
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
    let mut send = async |lines: usize, seq: &mut u64, stamp: Stamp| -> anyhow::Result<bool> {
        let now_ns = shared.now_ns();
        for (i, line) in buf.chunks_exact_mut(size).take(lines).enumerate() {
            let index = *seq + i as u64;
            let header = Header {
                kind: Kind::Data,
                publisher,
                seq: index,
                sent_ns: match stamp {
                    Stamp::Now => now_ns,
                    Stamp::Scheduled { start_ns, per_s } => scheduled_ns(start_ns, per_s, index),
                },
            };
            header.write(line);
        }
        let wanted = lines * size;
        let n = write_until(&*stream, &buf[..wanted], deadline)
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
            let me = &shared.pubs[usize::from(publisher)];
            let mut window = Loop::new(
                me,
                usize::from(publisher),
                &shared.received,
                shared.paced_by,
                per_batch,
            );
            let end = tokio::time::sleep_until(deadline);
            tokio::pin!(end);
            // Since when nothing has come back, while the window is full.
            let mut stuck_since: Option<Instant> = None;
            while Instant::now() < deadline {
                let lines = match window.room(seq) {
                    Room::Lines(lines) => {
                        stuck_since = None;
                        lines
                    }
                    Room::Wait => {
                        let now = Instant::now();
                        let since = *stuck_since.get_or_insert(now);
                        if now >= since + GIVE_UP_AFTER {
                            me.give_up_in_flight();
                            stuck_since = None;
                            continue;
                        }
                        // A wake-up stored since the check is kept as a
                        // permit, so none is lost.
                        tokio::select! {
                            () = me.moved.notified() => {
                                window.waited(now.elapsed());
                                continue;
                            }
                            () = &mut end => break,
                            () = tokio::time::sleep(window.probe_after()) => {
                                me.probes.fetch_add(1, Ordering::Relaxed);
                                1
                            }
                        }
                    }
                };
                let lines = usize::try_from(lines).unwrap_or(usize::MAX);
                if !send(lines, &mut seq, Stamp::Now).await? {
                    break;
                }
                // Writes rarely wait, so let the readers on this worker run.
                tokio::task::yield_now().await;
            }
        }
        Rate::PerSecond(per_s) => {
            let start_ns = ns_since(shared.origin, start);
            let stamp = Stamp::Scheduled { start_ns, per_s };
            // The last line due is the last one scheduled before the end.
            let last_ns = ns_since(start, deadline).saturating_sub(1);
            let end = tokio::time::sleep_until(deadline);
            tokio::pin!(end);
            'run: loop {
                // Sleep until the next line is due rather than on a fixed
                // tick, so no line waits for the generator longer than the
                // timer's resolution (1 ms); at high rates each wake-up
                // sends every line due by then, however late, in batches.
                let next_ns = scheduled_ns(0, per_s, seq);
                if next_ns > last_ns {
                    break;
                }
                tokio::select! {
                    () = tokio::time::sleep_until(start + Duration::from_nanos(next_ns)) => {}
                    () = &mut end => {}
                }
                let now = Instant::now();
                let due = due_by(per_s, ns_since(start, now).min(last_ns));
                while seq < due {
                    let lines = usize::try_from(due - seq)
                        .unwrap_or(usize::MAX)
                        .min(per_batch);
                    if !send(lines, &mut seq, stamp).await? {
                        break 'run;
                    }
                }
                if now >= deadline {
                    break;
                }
            }
            return Ok(due_by(per_s, last_ns).saturating_sub(seq));
        }
    }
    Ok(0)
}

/// Nanoseconds from `from` to `to`, 0 if `to` is earlier.
fn ns_since(from: Instant, to: Instant) -> u64 {
    u64::try_from(to.saturating_duration_since(from).as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_s: u64) -> NonZeroU64 {
        NonZeroU64::new(per_s).expect("not zero")
    }

    #[test]
    fn schedule_spaces_lines_evenly_from_the_start() {
        assert_eq!(scheduled_ns(5_000, rate(1000), 0), 5_000);
        assert_eq!(scheduled_ns(5_000, rate(1000), 1), 1_005_000);
        assert_eq!(scheduled_ns(0, rate(1000), 2500), 2_500_000_000);
        assert_eq!(scheduled_ns(0, rate(3), 1), 333_333_333, "rounded down");
        assert_eq!(scheduled_ns(0, rate(3), 3), 1_000_000_000, "no drift");
        assert_eq!(scheduled_ns(0, rate(1), 86_400), 86_400_000_000_000);
        assert_eq!(scheduled_ns(7, rate(1), u64::MAX), u64::MAX, "saturates");
    }

    #[test]
    fn lines_due_are_those_scheduled_by_then() {
        assert_eq!(due_by(rate(1000), 0), 1, "the first line at once");
        assert_eq!(due_by(rate(1000), 999_999), 1);
        assert_eq!(due_by(rate(1000), 1_000_000), 2);
        assert_eq!(due_by(rate(1000), 1_000_000_000), 1001);
        for per_s in [1, 3, 7, 1000, 999_983, 10_000_000] {
            for elapsed in [0, 1, 999, 1_000_000, 123_456_789, 5_000_000_000] {
                let due = due_by(rate(per_s), elapsed);
                // The last line due is not later than now, the next one is
                // not earlier.
                assert!(scheduled_ns(0, rate(per_s), due - 1) <= elapsed);
                assert!(scheduled_ns(0, rate(per_s), due) >= elapsed);
            }
        }
    }

    #[test]
    fn a_late_batch_keeps_its_scheduled_times() {
        // A publisher that wakes 40 ms late at 1000/s owes 41 lines, and
        // each carries its own slot, not the time of the write.
        let start = 1_000_000u64;
        let due = due_by(rate(1000), 40_000_000);
        assert_eq!(due, 41);
        let stamps: Vec<u64> = (0..due)
            .map(|i| scheduled_ns(start, rate(1000), i))
            .collect();
        assert_eq!(stamps[0], start);
        assert_eq!(stamps[40], start + 40_000_000);
        assert!(stamps.windows(2).all(|w| w[1] - w[0] == 1_000_000));
    }
}
