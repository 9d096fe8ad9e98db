//! Publisher tasks: what each publishing client sends, and when.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior};

use crate::conn::{closed, write_until};
use crate::plan::Rate;
use crate::run::Shared;
use crate::wire::{Header, Kind};

/// Bytes a publisher hands the kernel per write, at most.
const WRITE_BATCH: usize = 64 * 1024;

/// Publishes from client `client` until `deadline`; returns the lines
/// written in full.
pub(crate) async fn publish(
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
            let per_s = per_s.get();
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
