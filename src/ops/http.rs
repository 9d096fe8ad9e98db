//! The HTTP endpoints on `--metrics ADDR`, served by axum on a small tokio
//! runtime of its own, off the engines' cores:
//!
//! - `GET /metrics`: the Prometheus text exposition.
//! - `GET /healthz`: 200 while the process serves.
//! - `GET /readyz`: 200 while accepting clients, 503 once shutdown (or lame
//!   duck) has begun.
//! - `GET /clients?sort=dropped|queued|connected_secs|id&offset=N&limit=N`:
//!   a page of the connected clients in an envelope like NATS's `/connz`
//!   (`now`, `total`, `offset`, `limit`, `clients`), gathered from every
//!   core on request, a chunk at a time; at most [`CLIENTS_AT_ONCE`]
//!   requests at once.
//!
//! A connection must send each request header within
//! [`HEADER_READ_TIMEOUT`], and lives at most [`CONNECTION_LIFETIME`]: a
//! client that stops reading its answer holds nothing for longer. At most
//! [`CONNECTIONS`] are open at once; more wait in the listen backlog. When
//! the process runs out of descriptors, the
//! accept loop pauses a second and tries again, so the endpoints come back
//! by themselves. Stopping takes at most [`STOP_GRACE`] for requests in
//! flight.

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::Listener;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::ops::clients::{self, Clients, Envelope, SortBy};
use crate::ops::metrics::Metrics;

/// What the endpoints read.
#[derive(Debug, Clone)]
pub(crate) struct Endpoints {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) clients: Clients,
    /// True while the server accepts clients.
    pub(crate) ready: Arc<AtomicBool>,
    /// Turns for `/clients` requests: [`CLIENTS_AT_ONCE`].
    pub(crate) inspecting: Arc<Semaphore>,
}

impl Endpoints {
    /// The turns for `/clients`.
    pub(crate) fn inspecting() -> Arc<Semaphore> {
        Arc::new(Semaphore::new(CLIENTS_AT_ONCE))
    }
}

/// `/clients` requests that may run at once; one more is answered 503 with
/// `Retry-After: 1`.
pub(crate) const CLIENTS_AT_ONCE: usize = 2;

/// How long `/clients` waits for the cores' answers before giving up (503).
const CLIENTS_TIMEOUT: Duration = Duration::from_secs(5);

/// A client must send its whole request header within this long, or its
/// connection is closed: a half-sent request (or a connection that sends
/// nothing) neither holds a descriptor for long nor holds up shutdown.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(3);

/// The longest an HTTP connection stays open, however it is used: a
/// response its client does not read holds a descriptor and its socket
/// buffer no longer than this.
pub(crate) const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

/// HTTP connections open at once; past it, new ones wait in the backlog
/// until one closes.
pub(crate) const CONNECTIONS: usize = 64;

/// How long requests in flight may take to finish once the endpoints stop;
/// connections still open then are closed.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(1);

/// How long stopping waits for the endpoints' thread before abandoning it
/// (it ends with the process).
const STOP_LIMIT: Duration = Duration::from_secs(2);

/// The running endpoints. Dropping it stops them, within [`STOP_LIMIT`].
#[derive(Debug)]
pub(crate) struct HttpServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    /// Resolves (closed) once the thread has finished.
    finished: Option<oneshot::Receiver<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds `addr` and serves the endpoints from a thread of its own.
    pub(crate) fn start(addr: SocketAddr, endpoints: Endpoints) -> Result<Self, Error> {
        let failed = |source| Error::Http { addr, source };
        let listener = std::net::TcpListener::bind(addr).map_err(failed)?;
        listener.set_nonblocking(true).map_err(failed)?;
        let local = listener.local_addr().map_err(failed)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| Error::Runtime {
                engine: "http",
                source,
            })?;
        let (stop, stopped) = oneshot::channel::<()>();
        let (finishing, finished) = oneshot::channel::<()>();
        let app = router(endpoints);
        let thread = std::thread::Builder::new()
            .name("ringcast-http".into())
            .spawn(move || {
                let _finishing = finishing;
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => serve(listener, app, stopped).await,
                        Err(e) => tracing::error!(error = %e, "http: cannot serve the endpoints"),
                    }
                });
                // Dropping the runtime closes whatever connection is left.
            })
            .map_err(Error::Thread)?;
        Ok(Self {
            addr: local,
            stop: Some(stop),
            finished: Some(finished),
            thread: Some(thread),
        })
    }

    /// Stops the endpoints: requests in flight get [`STOP_GRACE`], and the
    /// thread is abandoned (it ends with the process) if it has not
    /// finished within [`STOP_LIMIT`]. Waits without blocking the caller's
    /// runtime, so that its other tasks (a second signal) still run.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(finished) = self.finished.take() else {
            return;
        };
        match tokio::time::timeout(STOP_LIMIT, finished).await {
            Err(_) => tracing::warn!(
                limit = ?STOP_LIMIT,
                "http: the endpoints did not stop in time; abandoning them"
            ),
            Ok(_) => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
            }
        }
    }

    /// The address the endpoints listen on.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HttpServer {
    /// Without [`stop`](HttpServer::stop) (a server that never ran): asks
    /// the endpoints to stop, and lets their thread end by itself.
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Accepts and serves connections until `stopped` resolves, then gives the
/// requests in flight [`STOP_GRACE`] to finish and closes every connection.
///
/// When the process runs out of descriptors, accept (axum's) logs, pauses
/// a second and tries again.
async fn serve(mut listener: tokio::net::TcpListener, app: Router, stopped: oneshot::Receiver<()>) {
    let mut stopped = pin!(stopped);
    let closing = CancellationToken::new();
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            (stream, _) = Listener::accept(&mut listener), if conns.len() < CONNECTIONS => {
                let service = TowerToHyperService::new(app.clone());
                conns.spawn(serve_connection(stream, service, closing.clone()));
            }
        }
    }
    drop(listener);
    closing.cancel();
    let finished = tokio::time::timeout(STOP_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::info!(
            connections = conns.len(),
            grace = ?STOP_GRACE,
            "http: closing connections still open after the grace"
        );
    }
    conns.abort_all();
}

/// One HTTP/1 connection, closed if a request header takes longer than
/// [`HEADER_READ_TIMEOUT`], and closed once idle after `closing`.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    service: TowerToHyperService<Router>,
    closing: CancellationToken,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let mut conn = pin!(builder.serve_connection(TokioIo::new(stream), service));
    // A test shortens it rather than wait half a minute.
    let lifetime = if crate::engine::failpoint("http-lifetime-1s") {
        Duration::from_secs(1)
    } else {
        CONNECTION_LIFETIME
    };
    let lifetime = tokio::time::sleep(lifetime);
    let served = tokio::select! {
        served = conn.as_mut() => served,
        () = closing.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        () = lifetime => {
            tracing::debug!(lifetime = ?CONNECTION_LIFETIME, "http: connection open too long; closing it");
            return;
        }
    };
    if let Err(e) = served {
        tracing::debug!(error = %e, "http: connection closed");
    }
}

fn router(endpoints: Endpoints) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/clients", get(clients))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "not found: try /metrics, /healthz, /readyz or /clients\n",
            )
        })
        .with_state(endpoints)
}

async fn metrics(State(e): State<Endpoints>) -> Response {
    let mut body = e.metrics.render();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn ready(State(e): State<Endpoints>) -> Response {
    if e.ready.load(Ordering::SeqCst) {
        "ready\n".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: starting, shutting down or in lame duck\n",
        )
            .into_response()
    }
}

#[derive(Debug, Deserialize)]
struct ClientsQuery {
    sort: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

async fn clients(State(e): State<Endpoints>, Query(q): Query<ClientsQuery>) -> Response {
    let sort = match q.sort.as_deref().map(str::parse::<SortBy>).transpose() {
        Ok(sort) => sort.unwrap_or_default(),
        Err(why) => return (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response(),
    };
    let Ok(_turn) = e.inspecting.try_acquire() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            format!("busy: {CLIENTS_AT_ONCE} /clients requests are running; try again\n"),
        )
            .into_response();
    };
    let now = std::time::SystemTime::now();
    let (offset, limit) = (q.offset.unwrap_or(0), clients::limit(q.limit));
    let Ok(page) =
        tokio::time::timeout(CLIENTS_TIMEOUT, e.clients.query(sort, offset, limit)).await
    else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            format!("the cores did not answer within {CLIENTS_TIMEOUT:?}\n"),
        )
            .into_response();
    };
    match serde_json::to_string(&Envelope::new(now, offset, limit, page)) {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_most_two_clients_requests_run_at_once() {
        // Cores that never answer: every request waits.
        let (handle, _cores) = Clients::new(2);
        let endpoints = Endpoints {
            metrics: Metrics::new(1),
            clients: handle,
            ready: Arc::new(AtomicBool::new(true)),
            inspecting: Endpoints::inspecting(),
        };
        let ask = || {
            let e = endpoints.clone();
            tokio::spawn(clients(
                State(e),
                Query(ClientsQuery {
                    sort: None,
                    offset: None,
                    limit: None,
                }),
            ))
        };
        let running: Vec<_> = (0..CLIENTS_AT_ONCE).map(|_| ask()).collect();
        while endpoints.inspecting.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let busy = tokio::time::timeout(Duration::from_secs(1), ask())
            .await
            .expect("answered at once")
            .expect("the handler");
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.headers()[header::RETRY_AFTER], "1");
        for r in running {
            assert!(!r.is_finished(), "still waiting for the cores");
            r.abort();
        }
        // Once they are gone, the next one runs (and waits for the cores).
        let next = ask();
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert!(!next.is_finished());
        next.abort();
    }

    #[tokio::test]
    async fn clients_answers_a_page_in_an_envelope() {
        let (handle, mut cores) = Clients::new(1);
        let mut core = cores.remove(0);
        tokio::spawn(async move {
            let conns: Vec<u64> = (1..=5).collect();
            while let Some(request) = core.recv().await {
                clients::answer(&conns, request, |&id| clients::ClientInfo {
                    id,
                    peer: SocketAddr::from(([127, 0, 0, 1], 1000)),
                    core: 0,
                    transport: clients::Transport::Tcp,
                    tls: false,
                    connected_secs: 1.0,
                    idle_secs: 1.0,
                    queued: 0,
                    msgs_in: 0,
                    bytes_in: 0,
                    sent: 0,
                    bytes_out: 0,
                    dropped: 0,
                    slow: false,
                })
                .await;
            }
        });
        let endpoints = Endpoints {
            metrics: Metrics::new(1),
            clients: handle,
            ready: Arc::new(AtomicBool::new(true)),
            inspecting: Endpoints::inspecting(),
        };
        let ask = |offset, limit| {
            clients(
                State(endpoints.clone()),
                Query(ClientsQuery {
                    sort: None,
                    offset,
                    limit,
                }),
            )
        };
        let json = |answer: Response| async move {
            assert_eq!(answer.status(), StatusCode::OK);
            let body = axum::body::to_bytes(answer.into_body(), 1 << 20)
                .await
                .expect("a body");
            serde_json::from_slice::<serde_json::Value>(&body).expect("json")
        };
        let ids = |page: &serde_json::Value| {
            page["clients"]
                .as_array()
                .expect("clients")
                .iter()
                .map(|c| c["id"].as_u64().expect("an id"))
                .collect::<Vec<_>>()
        };
        let all = json(ask(None, None).await).await;
        assert_eq!(
            (&all["total"], &all["offset"], &all["limit"]),
            (&5.into(), &0.into(), &1024.into())
        );
        assert_eq!(ids(&all), [1, 2, 3, 4, 5]);
        assert!(
            humantime::parse_rfc3339(all["now"].as_str().expect("now")).is_ok(),
            "{all}"
        );
        let page = json(ask(Some(3), Some(1)).await).await;
        assert_eq!(
            (&page["total"], &page["offset"], &page["limit"]),
            (&5.into(), &3.into(), &1.into())
        );
        assert_eq!(ids(&page), [4]);
        let bounded = json(ask(None, Some(usize::MAX)).await).await;
        assert_eq!(bounded["limit"], clients::MAX_LIMIT);
    }
}
