//! The per-client view: who is connected, and how each one is doing.
//! Gathered from every core on request, so the message path pays nothing
//! for it.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

/// One connected client, as `/clients` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientInfo {
    /// The connection id the server's log lines name.
    pub id: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// The core that owns the connection (always 0 on the tokio engine,
    /// which has no per-core ownership).
    pub core: usize,
    /// How the client speaks.
    pub transport: Transport,
    /// It came to a TLS listener.
    pub tls: bool,
    /// Seconds since it connected.
    pub connected_secs: f64,
    /// Seconds since it last sent anything (since it connected, if it
    /// never did).
    pub idle_secs: f64,
    /// Messages queued for it that the kernel has not taken.
    pub queued: usize,
    /// Complete messages received from it.
    pub msgs_in: u64,
    /// Bytes of those messages.
    pub bytes_in: u64,
    /// Messages handed to the kernel for it.
    pub sent: u64,
    /// Bytes of those messages (WebSocket clients: of their frames).
    pub bytes_out: u64,
    /// Messages dropped for it.
    pub dropped: u64,
    /// True while it is dropping messages (a slow episode).
    pub slow: bool,
}

/// How a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Newline-terminated lines over TCP.
    Tcp,
    /// WebSocket messages.
    Websocket,
}

/// The order of a client list, as `?sort=` names it. Largest first, but
/// for `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortBy {
    /// By connection id, oldest first.
    #[default]
    Id,
    /// Most dropped first.
    Dropped,
    /// Most queued first.
    Queued,
    /// Longest connected first.
    ConnectedSecs,
}

impl FromStr for SortBy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "id" => Ok(SortBy::Id),
            "dropped" => Ok(SortBy::Dropped),
            "queued" => Ok(SortBy::Queued),
            "connected_secs" => Ok(SortBy::ConnectedSecs),
            other => Err(format!(
                "unknown sort {other:?}: use id, dropped, queued or connected_secs"
            )),
        }
    }
}

/// `/clients`'s `limit` when none is asked for, as on NATS's `/connz`.
pub const DEFAULT_LIMIT: usize = 1024;

/// The largest `limit` `/clients` takes; a larger one is taken as this.
/// Each core sends at most `offset + limit` entries of about 200 bytes.
pub const MAX_LIMIT: usize = 100_000;

/// The `limit` of a `/clients` request that asked for `asked`.
pub fn limit(asked: Option<usize>) -> usize {
    asked.map_or(DEFAULT_LIMIT, |l| l.min(MAX_LIMIT))
}

/// Sorts `clients` by `sort` and keeps the first `limit`.
pub fn sort_and_limit(
    mut clients: Vec<ClientInfo>,
    sort: SortBy,
    limit: Option<usize>,
) -> Vec<ClientInfo> {
    match sort {
        SortBy::Id => clients.sort_by_key(|c| c.id),
        SortBy::Dropped => clients.sort_by(|a, b| b.dropped.cmp(&a.dropped).then(a.id.cmp(&b.id))),
        SortBy::Queued => clients.sort_by(|a, b| b.queued.cmp(&a.queued).then(a.id.cmp(&b.id))),
        SortBy::ConnectedSecs => clients.sort_by(|a, b| {
            b.connected_secs
                .total_cmp(&a.connected_secs)
                .then(a.id.cmp(&b.id))
        }),
    }
    if let Some(limit) = limit {
        clients.truncate(limit);
    }
    clients
}

/// Sorts `clients` by `sort` and keeps `limit` from the `offset`th on.
pub fn page(
    clients: Vec<ClientInfo>,
    sort: SortBy,
    offset: usize,
    limit: usize,
) -> Vec<ClientInfo> {
    let mut kept = sort_and_limit(clients, sort, Some(offset.saturating_add(limit)));
    kept.drain(..offset.min(kept.len()));
    kept
}

/// One page of the sorted list of connected clients.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Page {
    /// Clients connected in all.
    pub total: usize,
    /// The page's clients.
    pub clients: Vec<ClientInfo>,
}

/// What `/clients` answers: a page in an envelope like NATS's `/connz`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Envelope {
    /// When the list was asked for, in RFC 3339, UTC.
    pub now: String,
    /// Clients connected in all.
    pub total: usize,
    /// How many of the sorted list come before this page.
    pub offset: usize,
    /// The most this page holds.
    pub limit: usize,
    /// The page's clients.
    pub clients: Vec<ClientInfo>,
}

impl Envelope {
    /// The envelope of `page`, from `offset` and at most `limit` long,
    /// asked for at `now`.
    pub fn new(now: SystemTime, offset: usize, limit: usize, page: Page) -> Self {
        Self {
            now: humantime::format_rfc3339_millis(now).to_string(),
            total: page.total,
            offset,
            limit,
            clients: page.clients,
        }
    }
}

/// Connections a core looks at between two yields while it answers: well
/// under a millisecond of its time.
pub(crate) const WALK_CHUNK: usize = 256;

/// A request for one core's clients: how many it has, and its first
/// `limit` by `sort`.
#[derive(Debug)]
pub(crate) struct Request {
    sort: SortBy,
    limit: Option<usize>,
    reply: oneshot::Sender<Page>,
}

/// Answers `request` on a core: walks `conns` [`WALK_CHUNK`] at a time,
/// letting the core's other tasks run between chunks, and keeps only what
/// the reply can hold (`limit`). Stops early if the asker has gone.
pub(crate) async fn answer<T>(conns: &[T], request: Request, info: impl Fn(&T) -> ClientInfo) {
    let mut kept = Vec::new();
    let mut chunks = conns.chunks(WALK_CHUNK).peekable();
    while let Some(chunk) = chunks.next() {
        for conn in chunk {
            kept.push(info(conn));
            if request
                .limit
                .is_some_and(|limit| kept.len() >= limit.saturating_mul(2).max(64))
            {
                kept = sort_and_limit(kept, request.sort, request.limit);
            }
        }
        if request.reply.is_closed() {
            return;
        }
        if chunks.peek().is_some() {
            tokio::task::yield_now().await;
        }
    }
    let _ = request.reply.send(Page {
        total: conns.len(),
        clients: sort_and_limit(kept, request.sort, request.limit),
    });
}

/// Asks every core of a running server for its clients.
#[derive(Debug, Clone)]
pub struct Clients {
    cores: Arc<[mpsc::UnboundedSender<Request>]>,
}

impl Clients {
    /// A handle on `n` cores, and the receiving end each core serves.
    pub(crate) fn new(n: usize) -> (Self, Vec<mpsc::UnboundedReceiver<Request>>) {
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..n).map(|_| mpsc::unbounded_channel()).unzip();
        (
            Self {
                cores: senders.into(),
            },
            receivers,
        )
    }

    /// Every connected client, by id. Empty once the server has stopped.
    pub async fn list(&self) -> Vec<ClientInfo> {
        self.ask(SortBy::Id, None).await.clients
    }

    /// How many clients are connected, and `limit` of them by `sort` from
    /// the `offset`th on. Each core sends at most `offset + limit`. Empty
    /// once the server has stopped.
    pub async fn query(&self, sort: SortBy, offset: usize, limit: usize) -> Page {
        let mut all = self.ask(sort, Some(offset.saturating_add(limit))).await;
        all.clients = page(all.clients, sort, offset, limit);
        all
    }

    /// Every core's count and first `limit` by `sort`, merged.
    async fn ask(&self, sort: SortBy, limit: Option<usize>) -> Page {
        let mut waiting = Vec::with_capacity(self.cores.len());
        for core in self.cores.iter() {
            let (reply, answer) = oneshot::channel();
            if core.send(Request { sort, limit, reply }).is_ok() {
                waiting.push(answer);
            }
        }
        let mut all = Page::default();
        for answer in waiting {
            if let Ok(core) = answer.await {
                all.total += core.total;
                all.clients.extend(core.clients);
            }
        }
        all.clients = sort_and_limit(all.clients, sort, limit);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(id: u64, dropped: u64, queued: usize, secs: f64) -> ClientInfo {
        ClientInfo {
            id,
            peer: SocketAddr::from(([127, 0, 0, 1], 1000 + id as u16)),
            core: 0,
            transport: Transport::Tcp,
            tls: false,
            connected_secs: secs,
            idle_secs: 0.25,
            queued,
            msgs_in: 3,
            bytes_in: 30,
            sent: 0,
            bytes_out: 0,
            dropped,
            slow: false,
        }
    }

    #[test]
    fn sorts_largest_first_and_limits() {
        let all = vec![
            client(1, 5, 0, 3.0),
            client(2, 9, 7, 1.0),
            client(3, 9, 2, 2.0),
        ];
        let ids = |v: Vec<ClientInfo>| v.iter().map(|c| c.id).collect::<Vec<_>>();
        assert_eq!(
            ids(sort_and_limit(all.clone(), SortBy::Dropped, None)),
            [2, 3, 1]
        );
        assert_eq!(
            ids(sort_and_limit(all.clone(), SortBy::Queued, Some(1))),
            [2]
        );
        assert_eq!(
            ids(sort_and_limit(all.clone(), SortBy::ConnectedSecs, None)),
            [1, 3, 2]
        );
        assert_eq!(ids(sort_and_limit(all, SortBy::Id, Some(2))), [1, 2]);
        assert!("bytes".parse::<SortBy>().is_err());
        assert_eq!("connected_secs".parse(), Ok(SortBy::ConnectedSecs));
    }

    /// A core's walk: one chunk at a time, the core's other tasks between
    /// chunks, never more kept than the reply needs.
    #[tokio::test]
    async fn a_core_answers_a_chunk_at_a_time_and_keeps_only_the_limit() {
        const CONNS: usize = 10_000;
        let conns: Vec<u64> = (0..CONNS as u64).collect();
        let (reply, answer) = oneshot::channel();
        let request = Request {
            sort: SortBy::Dropped,
            limit: Some(3),
            reply,
        };
        let turns = std::rc::Rc::new(std::cell::Cell::new(0usize));
        let walked = std::rc::Rc::new(std::cell::Cell::new(0usize));
        let most_between_turns = std::rc::Rc::new(std::cell::Cell::new(0usize));
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                // Another task of the core: counts its turns, and how many
                // connections were walked between two of them.
                let other = tokio::task::spawn_local({
                    let (turns, walked, most) =
                        (turns.clone(), walked.clone(), most_between_turns.clone());
                    async move {
                        let mut last = 0;
                        loop {
                            turns.set(turns.get() + 1);
                            most.set(most.get().max(walked.get() - last));
                            last = walked.get();
                            tokio::task::yield_now().await;
                        }
                    }
                });
                tokio::task::yield_now().await;
                answer_walk(&conns, request, &walked).await;
                other.abort();
            })
            .await;
        let got = answer.await.expect("an answer");
        assert_eq!(got.total, CONNS);
        let got = got.clients;
        assert_eq!(
            got.iter().map(|c| c.id).collect::<Vec<_>>(),
            [9_999, 9_998, 9_997]
        );
        assert!(
            turns.get() >= CONNS / WALK_CHUNK - 1,
            "{} turns",
            turns.get()
        );
        assert!(
            most_between_turns.get() <= WALK_CHUNK,
            "{} connections between two turns",
            most_between_turns.get()
        );

        // The asker left: the walk stops after a chunk.
        let (reply, answer) = oneshot::channel();
        drop(answer);
        let walked = std::rc::Rc::new(std::cell::Cell::new(0usize));
        let request = Request {
            sort: SortBy::Id,
            limit: None,
            reply,
        };
        answer_walk(&conns, request, &walked).await;
        assert_eq!(walked.get(), WALK_CHUNK);
    }

    async fn answer_walk(conns: &[u64], request: Request, walked: &std::cell::Cell<usize>) {
        answer(conns, request, |&n| {
            walked.set(walked.get() + 1);
            client(n, n, 0, 0.0)
        })
        .await;
    }

    #[test]
    fn serializes_as_connz_does() {
        let json = serde_json::to_string(&client(7, 1, 2, 0.5)).expect("json");
        assert_eq!(
            json,
            r#"{"id":7,"peer":"127.0.0.1:1007","core":0,"transport":"tcp","tls":false,"connected_secs":0.5,"idle_secs":0.25,"queued":2,"msgs_in":3,"bytes_in":30,"sent":0,"bytes_out":0,"dropped":1,"slow":false}"#
        );
    }

    #[test]
    fn pages_by_offset_and_limit() {
        let all: Vec<ClientInfo> = (1..=10).map(|id| client(id, id % 3, 0, 0.0)).collect();
        let ids = |v: Vec<ClientInfo>| v.iter().map(|c| c.id).collect::<Vec<_>>();
        assert_eq!(ids(page(all.clone(), SortBy::Id, 0, 3)), [1, 2, 3]);
        assert_eq!(ids(page(all.clone(), SortBy::Id, 8, 3)), [9, 10]);
        assert_eq!(ids(page(all.clone(), SortBy::Id, 10, 3)), [] as [u64; 0]);
        assert_eq!(
            ids(page(all.clone(), SortBy::Id, usize::MAX, 3)),
            [] as [u64; 0]
        );
        assert_eq!(ids(page(all.clone(), SortBy::Id, 3, 0)), [] as [u64; 0]);
        // Sorted first, then cut: the second page of the most dropped.
        assert_eq!(ids(page(all, SortBy::Dropped, 3, 4)), [1, 4, 7, 10]);
    }

    #[test]
    fn the_limit_defaults_to_1024_and_is_bounded() {
        assert_eq!(limit(None), 1024);
        assert_eq!(limit(Some(5)), 5);
        assert_eq!(limit(Some(0)), 0);
        assert_eq!(limit(Some(usize::MAX)), MAX_LIMIT);
    }

    /// Two cores' pages merged: the total counts every client, the page
    /// is cut from the merged order.
    #[tokio::test]
    async fn a_query_pages_across_cores() {
        let (handle, receivers) = Clients::new(2);
        for (core, mut requests) in receivers.into_iter().enumerate() {
            // Core 0 has the odd ids, core 1 the even ones.
            let conns: Vec<u64> = (1..=9).filter(|id| id % 2 != core as u64).collect();
            tokio::spawn(async move {
                while let Some(request) = requests.recv().await {
                    answer(&conns, request, |&id| client(id, 0, 0, 0.0)).await;
                }
            });
        }
        let got = handle.query(SortBy::Id, 2, 4).await;
        assert_eq!(got.total, 9);
        assert_eq!(
            got.clients.iter().map(|c| c.id).collect::<Vec<_>>(),
            [3, 4, 5, 6]
        );
        assert_eq!(handle.list().await.len(), 9);
    }

    #[test]
    fn the_envelope_serializes_as_connz_does() {
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_765_000_000_123);
        let envelope = Envelope::new(
            now,
            1,
            2,
            Page {
                total: 3,
                clients: vec![client(7, 1, 2, 0.5)],
            },
        );
        let json = serde_json::to_value(&envelope).expect("json");
        assert_eq!(json["now"], "2025-12-06T05:46:40.123Z");
        assert_eq!(
            (&json["total"], &json["offset"], &json["limit"]),
            (&3.into(), &1.into(), &2.into())
        );
        assert_eq!(json["clients"][0]["id"], 7);
        assert_eq!(
            json.as_object()
                .expect("an object")
                .keys()
                .collect::<Vec<_>>(),
            ["clients", "limit", "now", "offset", "total"]
        );
    }
}
