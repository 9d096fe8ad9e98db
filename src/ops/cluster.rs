//! Sharing lines between nodes through NATS.
//!
//! The bridge runs on a thread of its own, beside the engine, and talks to
//! it through two narrow ends: [`LocalLines`] hands it every complete line
//! this node's clients sent, and [`RemoteLines`] takes lines from other
//! nodes to every local client. On the `uring` engine both ends are rings
//! of the ordinary cross-core mesh, with the bridge as one more core.
//!
//! - Outbound, the bridge batches local lines into NATS messages on the
//!   subject, each with a `Ringcast-Node` header naming this node.
//! - Inbound, it subscribes to the subject, skips messages carrying its own
//!   node id, and splits the rest back into lines (without copying).
//! - While NATS is unreachable, local lines go into a bounded buffer; what
//!   does not fit, or is still there when a publish fails, is dropped and
//!   counted. The client reconnects with backoff by itself and
//!   resubscribes.
//!
//! One sender's lines stay in order across nodes: they travel one core's
//! ring, one NATS connection and one subscription, all FIFO.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::ClusterConfig;
use crate::error::Error;
use crate::ops::metrics::Metrics;

/// The NATS header that names the node a message came from.
pub(crate) const NODE_HEADER: &str = "Ringcast-Node";
/// Largest batch of lines in one NATS message.
const BATCH_BYTES: usize = 64 * 1024;
/// Batches waiting for NATS; beyond this, local lines are dropped (counted).
const PENDING_BATCHES: usize = 64;

/// The engine's outbound end: complete lines this node's clients sent.
pub(crate) trait LocalLines: Send + 'static {
    /// The next local line, if one is waiting.
    fn pop(&mut self) -> Option<Bytes>;
    /// Tells the engine the lines popped so far have left (room freed).
    fn release(&mut self);
    /// Waits until a local line may be waiting, or `stop()` holds.
    fn wait(&self, stop: &(dyn Fn() -> bool + Sync)) -> impl Future<Output = ()>;
}

/// The engine's inbound end: delivery to every local client.
pub(crate) trait RemoteLines: Send + 'static {
    /// Hands one line from another node to every local client, waiting if
    /// the engine is full.
    fn deliver(&mut self, line: Bytes) -> impl Future<Output = ()>;
    /// Wakes the engine for what was delivered.
    fn flush(&mut self);
}

/// Runs the bridge on a thread of its own until `stop` is cancelled.
/// `shard` is the metrics shard only the bridge writes.
pub(crate) fn start(
    config: ClusterConfig,
    metrics: Arc<Metrics>,
    shard: usize,
    local: impl LocalLines,
    remote: impl RemoteLines,
    stop: CancellationToken,
    on_exit: impl FnOnce() + Send + 'static,
) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Runtime {
            engine: "cluster bridge",
            source,
        })?;
    std::thread::Builder::new()
        .name("ringcast-cluster".into())
        .spawn(move || {
            // `Server::bind` has filled in the default id.
            let node_id = config.node_id.clone().unwrap_or_default();
            runtime.block_on(run(config, node_id, metrics, shard, local, remote, stop));
            on_exit();
        })
        .map_err(Error::Thread)?;
    Ok(())
}

async fn run(
    config: ClusterConfig,
    node_id: String,
    metrics: Arc<Metrics>,
    shard: usize,
    local: impl LocalLines,
    remote: impl RemoteLines,
    stop: CancellationToken,
) {
    let connected = Arc::new(AtomicBool::new(false));
    metrics.set_cluster(Arc::clone(&connected));
    let events = {
        let (connected, url) = (Arc::clone(&connected), config.url.clone());
        move |event: async_nats::Event| {
            let (connected, url) = (Arc::clone(&connected), url.clone());
            async move {
                match event {
                    async_nats::Event::Connected => {
                        connected.store(true, Ordering::Relaxed);
                        tracing::info!(%url, "cluster: connected to NATS");
                    }
                    async_nats::Event::Disconnected => {
                        connected.store(false, Ordering::Relaxed);
                        tracing::warn!(
                            %url,
                            "cluster: lost NATS; local broadcast goes on, lines for other nodes are dropped (counted) until it is back; reconnecting with backoff"
                        );
                    }
                    other => tracing::info!(%url, event = %other, "cluster: NATS event"),
                }
            }
        }
    };
    let options = async_nats::ConnectOptions::new()
        .name(format!("ringcast {node_id}"))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .event_callback(events);
    let client = match options.connect(config.url.as_str()).await {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(url = %config.url, error = %e, "cluster: cannot use NATS; running without the cluster");
            return;
        }
    };
    let unreachable = {
        let (connected, url) = (Arc::clone(&connected), config.url.clone());
        async move {
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            if !connected.load(Ordering::Relaxed) {
                tracing::warn!(%url, "cluster: NATS not reachable yet; serving local clients and retrying in the background");
            }
            std::future::pending::<()>().await;
        }
    };
    let (batches_tx, batches_rx) = mpsc::channel::<(Bytes, usize)>(PENDING_BATCHES);
    let collect = collect(local, batches_tx, Arc::clone(&metrics), shard, stop.clone());
    let publish = publish(
        client.clone(),
        config.subject.clone(),
        node_id.clone(),
        batches_rx,
        Arc::clone(&metrics),
        shard,
        Arc::clone(&connected),
    );
    let receive = receive(
        client,
        config.subject,
        node_id,
        remote,
        metrics,
        shard,
        stop.clone(),
    );
    tokio::select! {
        () = async { tokio::join!(collect, publish); } => {}
        () = receive => {}
        () = unreachable => {}
        () = stop.cancelled() => {}
    }
}

/// Gathers local lines into batches; drops (and counts) what cannot wait.
async fn collect(
    mut local: impl LocalLines,
    batches: mpsc::Sender<(Bytes, usize)>,
    metrics: Arc<Metrics>,
    shard: usize,
    stop: CancellationToken,
) {
    let mut batch = BytesMut::with_capacity(BATCH_BYTES);
    let mut lines = 0;
    loop {
        while batch.len() < BATCH_BYTES {
            let Some(line) = local.pop() else { break };
            batch.extend_from_slice(&line);
            lines += 1;
        }
        local.release();
        if lines > 0 {
            let full = std::mem::replace(&mut batch, BytesMut::with_capacity(BATCH_BYTES)).freeze();
            if batches.try_send((full, lines)).is_err() {
                metrics.shard(shard).cluster_dropped(lines);
            }
            lines = 0;
            continue;
        }
        if stop.is_cancelled() {
            return;
        }
        local.wait(&|| stop.is_cancelled()).await;
    }
}

/// Publishes batches while NATS is connected; drops (and counts) the rest.
async fn publish(
    client: async_nats::Client,
    subject: String,
    node_id: String,
    mut batches: mpsc::Receiver<(Bytes, usize)>,
    metrics: Arc<Metrics>,
    shard: usize,
    connected: Arc<AtomicBool>,
) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(NODE_HEADER, node_id.as_str());
    while let Some((batch, lines)) = batches.recv().await {
        if !connected.load(Ordering::Relaxed) {
            metrics.shard(shard).cluster_dropped(lines);
            continue;
        }
        match client
            .publish_with_headers(subject.clone(), headers.clone(), batch)
            .await
        {
            Ok(()) => metrics.shard(shard).cluster_published(lines),
            Err(e) => {
                metrics.shard(shard).cluster_dropped(lines);
                tracing::debug!(error = %e, lines, "cluster: publish failed; lines dropped");
            }
        }
    }
}

/// Delivers other nodes' lines to every local client.
async fn receive(
    client: async_nats::Client,
    subject: String,
    node_id: String,
    mut remote: impl RemoteLines,
    metrics: Arc<Metrics>,
    shard: usize,
    stop: CancellationToken,
) {
    use futures_util::StreamExt as _;
    let mut subscription = match client.subscribe(subject.clone()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(%subject, error = %e, "cluster: cannot subscribe; not receiving from other nodes");
            stop.cancelled().await;
            return;
        }
    };
    while let Some(message) = subscription.next().await {
        let from = message
            .headers
            .as_ref()
            .and_then(|h| h.get(NODE_HEADER))
            .map(|v| v.as_str());
        if from == Some(node_id.as_str()) {
            continue; // our own lines, already delivered here
        }
        let payload = message.payload;
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', &payload) {
            remote.deliver(payload.slice(start..=end)).await;
            metrics.shard(shard).cluster_received(1);
            start = end + 1;
        }
        remote.flush();
        if stop.is_cancelled() {
            return;
        }
    }
}
