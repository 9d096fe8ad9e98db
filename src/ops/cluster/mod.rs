//! Sharing lines between nodes through NATS.
//!
//! The bridge runs on a thread of its own, beside the engine, and talks to
//! it through two narrow ends: [`LocalLines`] hands it every complete line
//! this node's clients sent, and [`RemoteLines`] takes lines from other
//! nodes to every local client. On the `uring` engine both ends are rings
//! of the ordinary cross-core mesh, with the bridge as one more core.
//!
//! - Outbound, the bridge batches local lines into NATS messages on the
//!   subject, each with a `Ringcast-Node` header naming this node and a
//!   `Ringcast-Instance` nonce naming this process.
//!   A batch longer than the server's `max_payload` goes as several
//!   messages; a single line longer than that cannot go at all, and is
//!   dropped, counted (`ringcast_cluster_too_long_total`) and logged.
//! - Inbound, it subscribes to the subject, skips messages carrying its own
//!   nonce (two nodes given one id still hear each other, and are warned),
//!   and splits the rest back into lines (without copying). Lines over this
//!   node's `--max-line` are dropped, counted
//!   (`ringcast_cluster_inbound_too_long_total`) and logged. Messages move
//!   off the subscription at once into a bounded queue of the bridge's own:
//!   while local delivery is behind and it is full, their lines are
//!   dropped and counted (`ringcast_cluster_inbound_dropped_total`).
//! - While NATS is unreachable, local lines go into a bounded buffer; what
//!   does not fit, or is still there when a publish fails, is dropped and
//!   counted. The client reconnects with backoff by itself and
//!   resubscribes.
//!
//! One sender's lines stay in order across nodes: they travel one core's
//! ring, one NATS connection and one subscription, all FIFO.

use std::future::Future;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::ClusterConfig;
use crate::error::Error;
use crate::ops::metrics::Metrics;
use crate::policy::admission::limits::Throttle;
use crate::policy::run::{RUN_LINES, Run};

mod ends;
mod events;
mod split;

pub(crate) use ends::{DirectRemote, MeshLocal, MeshRemote, QueueLocal, QueueOut};

use events::{Dialled, EventThrottles, log_event, pick};
use split::{Piece, Pieces, outgoing};

/// The NATS header that names the node a message came from.
pub(crate) const NODE_HEADER: &str = "Ringcast-Node";
/// The NATS header with the publishing process's nonce.
pub(crate) const NONCE_HEADER: &str = "Ringcast-Instance";
/// NATS messages a subscription may hold before async-nats drops them.
const SUBSCRIPTION_CAPACITY: usize = 1024;
/// Batches from other nodes (up to 64 KiB each) waiting for local delivery.
const INBOUND_BATCHES: usize = 64;
/// Largest batch of lines in one NATS message.
const BATCH_BYTES: usize = 64 * 1024;
/// Batches waiting for NATS; beyond this, local lines are dropped (counted).
const PENDING_BATCHES: usize = 64;

/// The engine's outbound end: complete lines this node's clients sent.
pub(crate) trait LocalLines: Send + 'static {
    /// The next run of local lines, if one is waiting.
    fn pop(&mut self) -> Option<Run>;
    /// Tells the engine the lines popped so far have left (room freed).
    fn release(&mut self);
    /// Waits until a local line may be waiting, or `stop()` holds.
    fn wait(&self, stop: &(dyn Fn() -> bool + Sync)) -> impl Future<Output = ()>;
}

/// The engine's inbound end: delivery to every local client.
pub(crate) trait RemoteLines: Send + 'static {
    /// Publishes a run of lines from another node to every local client
    /// (never back to the cluster), waiting if the engine is full.
    fn publish(&mut self, run: Run) -> impl Future<Output = ()>;
    /// Rings the engine's doorbells for what was published.
    fn ring(&mut self);
}

/// Runs the bridge on a thread of its own until `stop` is cancelled.
/// `shard` is the metrics shard only the bridge writes; lines from other
/// nodes longer than `max_line` (newline not counted) are dropped.
#[allow(clippy::too_many_arguments)]
pub(crate) fn start(
    config: ClusterConfig,
    max_line: usize,
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
            let bridge = Bridge {
                node_id,
                max_line,
                metrics,
                shard,
            };
            runtime.block_on(run(config, bridge, local, remote, stop));
            on_exit();
        })
        .map_err(Error::Thread)?;
    Ok(())
}

/// What the bridge's parts share.
struct Bridge {
    node_id: String,
    /// Longest line from another node, newline not counted.
    max_line: usize,
    metrics: Arc<Metrics>,
    shard: usize,
}

async fn run(
    config: ClusterConfig,
    bridge: Bridge,
    local: impl LocalLines,
    remote: impl RemoteLines,
    stop: CancellationToken,
) {
    let Bridge {
        node_id,
        max_line,
        metrics,
        shard,
    } = bridge;
    let url = config.url.clone();
    let throttles = Arc::new(EventThrottles::default());
    // The event callback names the server the client is on; the client
    // exists only once `connect` returns, before any event is handled.
    let handle = Arc::new(std::sync::OnceLock::<async_nats::Client>::new());
    let dialled = Arc::new(std::sync::Mutex::new(Dialled::default()));
    let events = {
        let (handle, dialled) = (Arc::clone(&handle), Arc::clone(&dialled));
        // async-nats hands the events over one at a time, in order.
        move |event: async_nats::Event| {
            let on = {
                let mut dialled = dialled.lock().unwrap_or_else(|e| e.into_inner());
                if matches!(event, async_nats::Event::Connected) {
                    dialled.on = dialled.last.clone();
                }
                dialled.on.clone()
            };
            let (url, throttles) = (url.clone(), Arc::clone(&throttles));
            let server = handle.get().map(async_nats::Client::server_info);
            async move { log_event(&event, &url, on.as_ref(), server.as_ref(), &throttles) }
        }
    };
    let options = async_nats::ConnectOptions::new()
        .name(format!("ringcast {node_id}"))
        .retry_on_initial_connect()
        .max_reconnects(None)
        // The bridge picks the server to dial as async-nats would, so that
        // it knows which one the client is on.
        .reconnect_to_server_callback(move |servers, _info| {
            let next = pick(&servers).map(|s| s.addr.clone());
            dialled.lock().unwrap_or_else(|e| e.into_inner()).last = next.clone();
            std::future::ready(next.map(|addr| async_nats::ReconnectToServer { addr, delay: None }))
        })
        // The bridge moves messages off the subscription at once into its
        // own bounded queue, where drops are counted; this only has to
        // cover a moment.
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        .event_callback(events);
    let client = match options.connect(config.url.as_str()).await {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(url = %config.url, error = %e, "cluster: cannot use NATS; running without the cluster");
            return;
        }
    };
    let _ = handle.set(client.clone());
    metrics.set_cluster({
        let client = client.clone();
        move || connected(&client)
    });
    let unreachable = {
        let (client, url) = (client.clone(), config.url.clone());
        async move {
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            if !connected(&client) {
                tracing::warn!(%url, "cluster: NATS not reachable yet; serving local clients and retrying in the background");
            }
            std::future::pending::<()>().await;
        }
    };
    let me = Origin::new(node_id);
    let (batches_tx, batches_rx) = mpsc::channel::<(Bytes, usize)>(PENDING_BATCHES);
    let collect = collect(local, batches_tx, Arc::clone(&metrics), shard, stop.clone());
    let publish = publish(
        client.clone(),
        config.subject.clone(),
        me.clone(),
        batches_rx,
        Arc::clone(&metrics),
        shard,
    );
    let receive = receive(
        client,
        config.subject,
        me,
        remote,
        (max_line, metrics, shard),
        stop.clone(),
    );
    tokio::select! {
        () = async { tokio::join!(collect, publish); } => {}
        () = receive => {}
        () = unreachable => {}
        () = stop.cancelled() => {}
    }
}

/// True while the client is connected to a NATS server.
fn connected(client: &async_nats::Client) -> bool {
    client.connection_state() == async_nats::connection::State::Connected
}

/// Who published a NATS message: a node id, and the nonce of the process,
/// so that two nodes given the same id (cloned VMs share a hostname) still
/// tell their own messages from each other's.
#[derive(Debug, Clone)]
struct Origin {
    node_id: String,
    nonce: String,
}

/// What a received message is to this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Published here: its lines were delivered already.
    Own,
    /// Another node's.
    Other,
    /// Another process with this node's id: delivered, and worth a warning.
    SameId,
}

impl Origin {
    fn new(node_id: String) -> Self {
        use std::hash::{BuildHasher as _, Hasher as _};
        // A per-process value no other process shares: std seeds it from
        // the OS's randomness.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        Self {
            node_id,
            nonce: format!("{:016x}", hasher.finish()),
        }
    }

    fn headers(&self) -> async_nats::HeaderMap {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(NODE_HEADER, self.node_id.as_str());
        headers.insert(NONCE_HEADER, self.nonce.as_str());
        headers
    }

    /// How much of a message's `max_payload` the headers take, as NATS
    /// counts them: `NATS/1.0\r\n`, each `Name: value\r\n`, then `\r\n`
    /// (tests/cluster.rs holds it to the byte against a nats-server).
    fn headers_len(&self) -> usize {
        let field = |name: &str, value: &str| name.len() + 2 + value.len() + 2;
        b"NATS/1.0\r\n".len()
            + field(NODE_HEADER, &self.node_id)
            + field(NONCE_HEADER, &self.nonce)
            + 2
    }

    fn judge(&self, headers: Option<&async_nats::HeaderMap>) -> Seen {
        let get = |name| headers.and_then(|h| h.get(name)).map(|v| v.as_str());
        match (get(NODE_HEADER), get(NONCE_HEADER)) {
            (_, Some(nonce)) if nonce == self.nonce => Seen::Own,
            (Some(id), _) if id == self.node_id => Seen::SameId,
            _ => Seen::Other,
        }
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
            let Some(run) = local.pop() else { break };
            batch.extend_from_slice(&run.bytes);
            lines += run.lines as usize;
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
/// A batch longer than the server's `max_payload` goes as several
/// messages; a line that alone is longer is dropped, counted and logged.
async fn publish(
    client: async_nats::Client,
    subject: String,
    me: Origin,
    mut batches: mpsc::Receiver<(Bytes, usize)>,
    metrics: Arc<Metrics>,
    shard: usize,
) {
    let headers = me.headers();
    let headers_len = me.headers_len();
    let too_long = Throttle::default();
    while let Some((batch, lines)) = batches.recv().await {
        if !connected(&client) {
            metrics.shard(shard).cluster_dropped(lines);
            continue;
        }
        // What the server we are on takes, less the headers.
        let max_payload = client.max_payload();
        let room = max_payload.saturating_sub(headers_len);
        for piece in outgoing(&batch, lines, room) {
            let run = match piece {
                Piece::Lines(run) => run,
                Piece::TooLong(length) => {
                    metrics.shard(shard).cluster_too_long(1);
                    if let Some(suppressed) = too_long.allow() {
                        tracing::warn!(
                            length,
                            max_payload,
                            also_since_last_warning = suppressed,
                            "cluster: a local line is longer than the NATS server's max_payload; it reaches this node's clients, not the other nodes' (raise max_payload, or lower --max-line to match)"
                        );
                    }
                    continue;
                }
            };
            let lines = run.lines as usize;
            match client
                .publish_with_headers(subject.clone(), headers.clone(), run.bytes)
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
}

/// Delivers other nodes' lines to every local client. Messages move off
/// the subscription at once into a queue of [`INBOUND_BATCHES`]; while
/// local delivery is behind and that queue is full, the lines are dropped
/// and counted.
async fn receive(
    client: async_nats::Client,
    subject: String,
    me: Origin,
    mut remote: impl RemoteLines,
    (max_line, metrics, shard): (usize, Arc<Metrics>, usize),
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
    let (inbound, mut queued) = mpsc::channel::<Bytes>(INBOUND_BATCHES);
    let same_id = Throttle::default();
    let too_long = Throttle::default();
    let take = async {
        while let Some(message) = subscription.next().await {
            match me.judge(message.headers.as_ref()) {
                Seen::Own => continue,
                Seen::SameId => {
                    if let Some(suppressed) = same_id.allow() {
                        tracing::warn!(
                            node_id = %me.node_id,
                            also_since_last_warning = suppressed,
                            "cluster: another node uses this node's --node-id; its lines are delivered, but give every node its own id"
                        );
                    }
                }
                Seen::Other => {}
            }
            if let Err(dropped) = hand_over(&inbound, message.payload) {
                metrics.shard(shard).cluster_inbound_dropped(dropped);
            }
        }
    };
    let deliver = async {
        while let Some(payload) = queued.recv().await {
            let pieces = Pieces {
                bytes: &payload,
                max_bytes: usize::MAX,
                max_lines: RUN_LINES,
                max_line,
            };
            for piece in pieces.iter() {
                match piece {
                    Piece::Lines(run) => {
                        let lines = run.lines as usize;
                        remote.publish(run).await;
                        metrics.shard(shard).cluster_received(lines);
                    }
                    Piece::TooLong(length) => {
                        metrics.shard(shard).cluster_inbound_too_long(1);
                        if let Some(suppressed) = too_long.allow() {
                            tracing::warn!(
                                length,
                                max_line,
                                also_since_last_warning = suppressed,
                                "cluster: a line from another node is longer than --max-line; dropped (give every node the same --max-line)"
                            );
                        }
                    }
                }
            }
            remote.ring();
            if stop.is_cancelled() {
                return;
            }
        }
    };
    tokio::select! {
        () = take => {}
        () = deliver => {}
    }
}

/// Queues a batch from another node for delivery, or says how many lines
/// it held if the queue is full.
fn hand_over(inbound: &mpsc::Sender<Bytes>, payload: Bytes) -> Result<(), usize> {
    inbound.try_send(payload).map_err(|e| match e {
        mpsc::error::TrySendError::Full(p) | mpsc::error::TrySendError::Closed(p) => {
            memchr::memchr_iter(b'\n', &p).count()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_skips_only_its_own_messages_and_spots_its_id_elsewhere() {
        let me = Origin::new("host:9000".into());
        let twin = Origin::new("host:9000".into());
        let other = Origin::new("other:9000".into());
        assert_ne!(me.nonce, twin.nonce, "one nonce per process start");
        assert_eq!(me.judge(Some(&me.headers())), Seen::Own);
        assert_eq!(me.judge(Some(&twin.headers())), Seen::SameId);
        assert_eq!(me.judge(Some(&other.headers())), Seen::Other);
        assert_eq!(me.judge(None), Seen::Other);
    }

    #[test]
    fn a_full_inbound_queue_counts_the_lines_it_drops() {
        let (tx, _rx) = mpsc::channel(1);
        assert_eq!(hand_over(&tx, Bytes::from_static(b"a\nb\n")), Ok(()));
        assert_eq!(hand_over(&tx, Bytes::from_static(b"c\nd\ne\n")), Err(3));
    }
}
