//! Orchestration of a run: connect, warm up, publish, drain, and sum up;
//! the steps are in the crate docs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use crate::conn::{Conn, closed, connect_all, write_until};
use crate::plan::{PacedBy, Plan, Rate};
use crate::progress::Progress;
use crate::publish::publish;
use crate::read::read_client;
use crate::report::{Ended, Measured, Report, report};
use crate::shared::Shared;
use crate::slow::{SlowRead, read_slowly};
use crate::stats::ReaderStats;
use crate::tls::TlsConn;
use crate::window::{PubState, Received};
use crate::wire::{Header, Kind};

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
/// How often the run checks whether it is done.
const TICK: Duration = Duration::from_millis(20);
/// How often the progress line is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// CPU seconds, user plus system, this process has used so far.
fn cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |u| {
        let s = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        s(u.user_time()) + s(u.system_time())
    })
}

/// Runs the load test `plan` describes, without a progress display.
///
/// Connections are tasks on the runtime this is awaited on, which must be
/// tokio's, with timers and I/O enabled.
pub async fn run(plan: &Plan) -> anyhow::Result<Report> {
    run_with_progress(plan, false).await
}

/// Runs the load test `plan` describes; with `progress`, draws a progress
/// line on stderr while it runs.
pub async fn run_with_progress(plan: &Plan, progress: bool) -> anyhow::Result<Report> {
    match plan.tls() {
        None => run_over::<TcpStream>(plan, progress, &()).await,
        Some(trust) => run_over::<TlsConn>(plan, progress, trust).await,
    }
}

/// Runs `plan` over connections of kind `C`, made with `setup`.
async fn run_over<C: Conn>(
    plan: &Plan,
    progress: bool,
    setup: &C::Setup,
) -> anyhow::Result<Report> {
    let progress = Progress::new(progress);
    let shared = Arc::new(Shared {
        origin: Instant::now(),
        size: plan.size(),
        publishers: plan.publishers(),
        published: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        last_rx_ns: AtomicU64::new(0),
        pubs: (0..plan.publishers())
            .map(|_| PubState::new(plan.window(), plan.paced_by()))
            .collect(),
        paced_by: plan.paced_by(),
        received: Received::new(
            if plan.rate() == Rate::Max && plan.paced_by() == PacedBy::EveryReader {
                plan.clients()
            } else {
                0
            },
            plan.publishers(),
        ),
    });

    progress.say(format!(
        "connecting {} clients to {}{}",
        plan.clients(),
        plan.targets(),
        if plan.tls().is_some() {
            " over TLS"
        } else {
            ""
        }
    ));
    let streams: Vec<Arc<C>> = connect_all(
        |i| plan.targets().for_client(i),
        0..plan.clients(),
        None,
        setup,
    )
    .await?;
    // Slow readers come after the fast ones, so the round-robin over the
    // targets goes on where the fast readers left it.
    let slow_streams = match plan.slow() {
        None => Vec::new(),
        Some(slow) => {
            progress.say(format!(
                "connecting {} slow readers to {}",
                slow.count,
                plan.targets()
            ));
            let ids = plan.clients()..plan.clients() + slow.count;
            connect_all::<C>(|i| plan.targets().for_client(i), ids, slow.rcvbuf, setup).await?
        }
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let (warm_tx, mut warm_rx) = mpsc::unbounded_channel();
    let mut readers = JoinSet::new();
    for (client, stream) in streams.iter().enumerate() {
        readers.spawn(read_client(
            client,
            Arc::clone(stream),
            Arc::clone(&shared),
            stop_rx.clone(),
            warm_tx.clone(),
        ));
    }
    let mut slow_readers = JoinSet::new();
    if let Some(slow) = plan.slow() {
        let how = SlowRead {
            size: plan.size(),
            publishers: plan.publishers(),
            mode: slow.mode,
        };
        for (i, stream) in slow_streams.into_iter().enumerate() {
            slow_readers.spawn(read_slowly(
                plan.clients() + i,
                stream,
                how,
                stop_rx.clone(),
                warm_tx.clone(),
            ));
        }
    }
    drop(warm_tx);

    progress.say("warming up".to_owned());
    let first = &**streams.first().context("no client connected")?;
    let everyone = plan.clients() + plan.slow_clients();
    warm_up(first, &shared, &mut warm_rx, &mut readers, everyone).await?;

    let cpu_at_start = cpu_seconds();
    let start = Instant::now();
    let deadline = start + plan.duration();
    let mut publishers = JoinSet::new();
    for (client, stream) in streams.iter().take(plan.publishers()).enumerate() {
        publishers.spawn(publish(
            client,
            Arc::clone(stream),
            Arc::clone(&shared),
            plan.rate(),
            start,
            deadline,
        ));
    }
    let at_deadline = tokio::time::sleep_until(deadline);
    tokio::pin!(at_deadline);
    let mut delivered_by_deadline: Option<u64> = None;

    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut publishing = plan.publishers();
    let mut unsent = 0u64;
    let mut published_at: Option<Instant> = None;
    let mut last_delivered = 0;
    let mut last_change = start;
    let mut rate_window = (start, 0u64, 0.0f64);
    let ended = loop {
        tokio::select! {
            Some(done) = publishers.join_next(), if publishing > 0 => {
                unsent += done.map_err(|e| anyhow!("a publisher failed: {e}"))??;
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
                        published.saturating_mul(plan.clients() as u64),
                        rate_window.2,
                    ));
                }
                if let Some(published_at) = published_at {
                    if delivered >= published.saturating_mul(plan.clients() as u64) {
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

    let mut stats = Vec::with_capacity(plan.clients());
    tokio::time::timeout(STOP_TIMEOUT, async {
        while let Some(done) = readers.join_next().await {
            stats.push(done.map_err(|e| anyhow!("a reader failed: {e}"))??);
        }
        anyhow::Ok(())
    })
    .await
    .map_err(|_| anyhow!("readers did not stop within {STOP_TIMEOUT:?}"))??;
    let mut slow = Vec::with_capacity(plan.slow_clients());
    tokio::time::timeout(STOP_TIMEOUT, async {
        while let Some(done) = slow_readers.join_next().await {
            slow.push(done.map_err(|e| anyhow!("a slow reader failed: {e}"))?);
        }
        anyhow::Ok(())
    })
    .await
    .map_err(|_| anyhow!("slow readers did not stop within {STOP_TIMEOUT:?}"))??;

    let cpu = cpu_seconds() - cpu_at_start;
    let last_rx = shared.origin + Duration::from_nanos(shared.last_rx_ns.load(Ordering::Relaxed));
    let end = last_rx.max(deadline);
    let elapsed = end.duration_since(start).as_secs_f64();
    let published = shared.published.load(Ordering::Relaxed);
    // A counter summed over the publishers.
    let over_publishers = |counter: fn(&PubState) -> &AtomicU64| -> u64 {
        shared
            .pubs
            .iter()
            .map(|p| counter(p).load(Ordering::Relaxed))
            .sum()
    };
    let measured = Measured {
        published,
        elapsed_s: elapsed,
        from: start.into_std(),
        to: end.into_std(),
        delivered_by_deadline: delivered_by_deadline
            .unwrap_or_else(|| shared.delivered.load(Ordering::Relaxed)),
        cpu_s: cpu,
        ended,
        unsent,
        per_publisher: shared
            .pubs
            .iter()
            .map(|a| a.written.load(Ordering::Relaxed))
            .collect(),
        window_resets: over_publishers(|p| &p.resets),
        window_cuts: over_publishers(|p| &p.cuts),
        window_probes: over_publishers(|p| &p.probes),
        windows_at_end: shared.pubs.iter().map(PubState::window).collect(),
    };
    report(plan, &measured, &stats, &slow)
}

/// Sends warm-up markers on `first` until every client has received one.
async fn warm_up<C: Conn>(
    first: &C,
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
