//! The HTTP endpoints on `--metrics ADDR`, served by axum on a small tokio
//! runtime of its own, off the engines' cores:
//!
//! - `GET /metrics`: the Prometheus text exposition.
//! - `GET /healthz`: 200 while the process serves.
//! - `GET /readyz`: 200 while accepting clients, 503 once shutdown (or lame
//!   duck) has begun.
//! - `GET /clients?sort=dropped|queued|connected_secs|id&limit=N`: one JSON
//!   entry per connected client, gathered from every core on request.
//!
//! When the process runs out of descriptors, axum's accept loop pauses a
//! second and tries again, so the endpoints come back by themselves.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio::sync::oneshot;

use crate::error::Error;
use crate::ops::clients::{Clients, SortBy, sort_and_limit};
use crate::ops::metrics::Metrics;

/// What the endpoints read.
#[derive(Debug, Clone)]
pub(crate) struct Endpoints {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) clients: Clients,
    /// True while the server accepts clients.
    pub(crate) ready: Arc<AtomicBool>,
}

/// The running endpoints. Dropping it stops them.
#[derive(Debug)]
pub(crate) struct HttpServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
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
        let app = router(endpoints);
        let thread = std::thread::Builder::new()
            .name("ringcast-http".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(error = %e, "http: cannot serve the endpoints");
                            return;
                        }
                    };
                    let served = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await;
                    if let Err(e) = served {
                        tracing::error!(error = %e, "http: the endpoints stopped");
                    }
                });
            })
            .map_err(Error::Thread)?;
        Ok(Self {
            addr: local,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address the endpoints listen on.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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
    limit: Option<usize>,
}

async fn clients(State(e): State<Endpoints>, Query(q): Query<ClientsQuery>) -> Response {
    let sort = match q.sort.as_deref().map(str::parse::<SortBy>).transpose() {
        Ok(sort) => sort.unwrap_or_default(),
        Err(why) => return (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response(),
    };
    let list = sort_and_limit(e.clients.list().await, sort, q.limit);
    match serde_json::to_string(&list) {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}
