//! The per-client view: who is connected, and how each one is doing.
//! Gathered from every core on request, so the message path pays nothing
//! for it.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

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
    /// Seconds since it connected.
    pub connected_secs: f64,
    /// Messages queued for it that the kernel has not taken.
    pub queued: usize,
    /// Messages handed to the kernel for it.
    pub sent: u64,
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

/// A request for one core's clients.
pub(crate) type Request = oneshot::Sender<Vec<ClientInfo>>;

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
        let mut waiting = Vec::with_capacity(self.cores.len());
        for core in self.cores.iter() {
            let (reply, answer) = oneshot::channel();
            if core.send(reply).is_ok() {
                waiting.push(answer);
            }
        }
        let mut all = Vec::new();
        for answer in waiting {
            if let Ok(clients) = answer.await {
                all.extend(clients);
            }
        }
        sort_and_limit(all, SortBy::Id, None)
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
            connected_secs: secs,
            queued,
            sent: 0,
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

    #[test]
    fn serializes_as_connz_does() {
        let json = serde_json::to_string(&client(7, 1, 2, 0.5)).expect("json");
        assert_eq!(
            json,
            r#"{"id":7,"peer":"127.0.0.1:1007","core":0,"transport":"tcp","connected_secs":0.5,"queued":2,"sent":0,"dropped":1,"slow":false}"#
        );
    }
}
