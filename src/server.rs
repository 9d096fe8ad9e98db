//! The server: binds, picks the engine, runs until its shutdown future
//! resolves, then drains.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Engine, EngineChoice};
use crate::engine::{self, Control, Endpoint, Listening};
use crate::error::Error;
use crate::ops::clients::{self, Clients, Transport};
use crate::ops::http::{Endpoints, HttpServer};
use crate::ops::metrics::Metrics;
use crate::policy::send::tls::Certs;
use crate::sys::net;

/// A bound server, ready to [`run`](Server::run).
#[derive(Debug)]
pub struct Server {
    config: Config,
    engine: Engine,
    /// Each core's listeners (one set for tokio).
    listening: Vec<Listening>,
    local_addr: SocketAddr,
    ws_addr: Option<SocketAddr>,
    plain_addr: Option<SocketAddr>,
    plain_ws_addr: Option<SocketAddr>,
    tls: Option<Arc<Certs>>,
    metrics: Arc<Metrics>,
    http: Option<HttpServer>,
    ready: Arc<AtomicBool>,
    clients: Clients,
    inspections: Vec<mpsc::UnboundedReceiver<clients::Request>>,
}

/// `--sndbuf` above `net.core.wmem_max` is capped by the kernel: one warn
/// line says what every client socket gets instead. (Refusing would make a
/// configuration shared by a fleet fail on the one machine whose sysctl
/// differs.)
fn warn_if_sndbuf_capped(asked: usize, listener: &TcpListener) {
    if let Some(effective) = net::sndbuf_granted(listener).filter(|&e| e < asked) {
        let wmem_max = net::wmem_max().map_or_else(|| "unknown".to_owned(), |w| w.to_string());
        tracing::warn!(
            asked,
            effective,
            wmem_max = %wmem_max,
            "--sndbuf is above net.core.wmem_max: every client socket gets the effective size; raise the sysctl for more"
        );
    }
}

impl Server {
    /// Checks the configuration, resolves the engine, binds the listen
    /// address and starts the HTTP endpoints (if any). Clients can connect
    /// once this returns; they are served once [`run`](Server::run) is
    /// called.
    pub fn bind(config: Config) -> Result<Self, Error> {
        config.validate()?;
        let engine = resolve_engine(config.engine)?;
        let threads = config.thread_count();
        let listener_count = match engine {
            Engine::Uring => threads,
            Engine::Tokio => 1,
        };
        let tls = config
            .tls
            .as_ref()
            .map(|t| Certs::load(&t.cert, &t.key).map(Arc::new))
            .transpose()
            .map_err(Error::Config)?;
        let mut listening: Vec<Listening> = (0..listener_count).map(|_| Vec::new()).collect();
        // Binds `addr` once per core, for `transport` clients; returns the
        // bound address.
        let mut bind = |addr: Option<SocketAddr>, transport, tls: &Option<Arc<Certs>>| {
            let Some(addr) = addr else {
                return Ok::<_, Error>(None);
            };
            let listeners = net::bind_listeners(
                addr,
                listener_count,
                &config.sockets(),
                engine == Engine::Tokio,
            )?;
            let bound = listeners[0]
                .local_addr()
                .map_err(|source| Error::Bind { addr, source })?;
            warn_if_sndbuf_capped(config.sndbuf, &listeners[0]);
            for (core, listener) in listening.iter_mut().zip(listeners) {
                let tls = tls.clone();
                core.push((listener, Endpoint { transport, tls }));
            }
            Ok(Some(bound))
        };
        let plain = config.tls.as_ref();
        let local_addr = bind(Some(config.listen), Transport::Tcp, &tls)?.unwrap_or(config.listen);
        let ws_addr = bind(config.ws, Transport::Websocket, &tls)?;
        let plain_addr = bind(plain.and_then(|t| t.plain_listen), Transport::Tcp, &None)?;
        let plain_ws_addr = bind(plain.and_then(|t| t.plain_ws), Transport::Websocket, &None)?;
        let mut config = config;
        if let Some(cluster) = config.cluster.as_mut().filter(|c| c.node_id.is_none()) {
            // The default id is only known once the port is.
            let host = nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "ringcast".into());
            cluster.node_id = Some(format!("{host}:{}", local_addr.port()));
        }
        let metrics = Metrics::new(engine::shard_count(threads));
        metrics.set_engine(engine.name());
        let (clients, inspections) = Clients::new(listener_count);
        let ready = Arc::new(AtomicBool::new(false));
        let http = config
            .metrics
            .map(|addr| {
                HttpServer::start(
                    addr,
                    Endpoints {
                        metrics: Arc::clone(&metrics),
                        clients: clients.clone(),
                        ready: Arc::clone(&ready),
                        inspecting: Endpoints::inspecting(),
                    },
                )
            })
            .transpose()?;
        Ok(Self {
            config,
            engine,
            listening,
            local_addr,
            ws_addr,
            plain_addr,
            plain_ws_addr,
            tls,
            metrics,
            http,
            ready,
            clients,
            inspections,
        })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address WebSocket clients connect to (`--ws`), if enabled.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws_addr
    }

    /// The address plain line clients connect to beside TLS
    /// (`--plain-listen`), if enabled.
    pub fn plain_addr(&self) -> Option<SocketAddr> {
        self.plain_addr
    }

    /// The address plain WebSocket clients connect to beside TLS
    /// (`--plain-ws`), if enabled.
    pub fn plain_ws_addr(&self) -> Option<SocketAddr> {
        self.plain_ws_addr
    }

    /// The TLS certificates, if clients are served TLS: reload them with
    /// [`Certs::reload`].
    pub fn tls(&self) -> Option<Arc<Certs>> {
        self.tls.clone()
    }

    /// The address of the HTTP endpoints (`/metrics`, ...), if enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(HttpServer::local_addr)
    }

    /// The server's counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Asks the running server which clients are connected.
    pub fn clients(&self) -> Clients {
        self.clients.clone()
    }

    /// The engine that will run.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Serves clients until `shutdown` resolves, then stops accepting and
    /// reading, flushes queued output for up to `drain_timeout`, and closes
    /// every connection.
    ///
    /// The engine runs on threads of its own; this future only waits, so any
    /// tokio runtime can drive it. If a core stops on its own while serving,
    /// the rest are shut down too and the error says which.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        self.run_with_ready(shutdown, || Ok(())).await
    }

    /// Like [`run`](Server::run), and calls `on_ready` once every core
    /// accepts clients (not before: a connect then is served at once). This
    /// is when `/readyz` turns 200, and when to tell a supervisor. If
    /// `on_ready` fails, the server stops and returns its error. It is not
    /// called if `shutdown` resolves first.
    pub async fn run_with_ready(
        self,
        shutdown: impl Future<Output = ()>,
        on_ready: impl FnOnce() -> Result<(), Error>,
    ) -> Result<(), Error> {
        let (alive, mut engine_done) = mpsc::channel::<()>(1);
        let (exits, mut died) = mpsc::unbounded_channel::<String>();
        let (accepting, mut accepts) = mpsc::unbounded_channel::<()>();
        let control = Control {
            accepting_ends: CancellationToken::new(),
            stop: CancellationToken::new(),
            abort: CancellationToken::new(),
            alive,
            exits,
            accepting,
        };
        let listening = self.listening;
        // One accept loop per listener.
        let mut accept_loops: usize = listening.iter().map(Vec::len).sum();
        let started = match self.engine {
            Engine::Uring => engine::uring::start(
                listening,
                &self.config,
                &self.metrics,
                &control,
                self.inspections,
            ),
            Engine::Tokio => {
                // Bound for tokio: one listener and one inspector.
                let listener = listening.into_iter().next();
                let inspections = self.inspections.into_iter().next();
                match listener.zip(inspections) {
                    Some((l, i)) => {
                        engine::tokio::start(l, &self.config, &self.metrics, &control, i)
                    }
                    None => unreachable!("bind makes one listener for tokio"),
                }
            }
        };
        let Control {
            accepting_ends,
            stop,
            abort,
            alive,
            ..
        } = control;
        drop(alive);
        if let Err(e) = started {
            abort.cancel();
            accepting_ends.cancel();
            stop.cancel();
            while engine_done.recv().await.is_some() {}
            return Err(e);
        }
        let died_of = |what: Option<String>| Ended::Died(died_with(what));
        let mut shutdown = pin!(shutdown);
        // Ready once every accept loop runs.
        let mut ended = loop {
            if accept_loops == 0 {
                break None;
            }
            tokio::select! {
                () = &mut shutdown => break Some(Ended::Asked),
                what = died.recv() => break Some(died_of(what)),
                Some(()) = accepts.recv() => accept_loops -= 1,
            }
        };
        // Lame duck is for a server that was announced: one stopped while
        // starting has no clients to spread out.
        let mut announced = false;
        if ended.is_none() {
            // Whoever was told (a supervisor, a script) hears it before
            // `/readyz` says it.
            match on_ready() {
                Ok(()) => {
                    announced = true;
                    self.ready.store(true, Ordering::SeqCst);
                    tracing::info!(
                        engine = self.engine.name(),
                        addr = %self.local_addr,
                        tls = self.tls.is_some(),
                        threads = self.config.thread_count(),
                        grace = ?self.config.grace,
                        coalesce = ?self.config.coalesce,
                        coalesce_above = self.config.coalesce_above,
                        "serving"
                    );
                    ended = Some(tokio::select! {
                        () = &mut shutdown => Ended::Asked,
                        what = died.recv() => died_of(what),
                    });
                }
                Err(e) => ended = Some(Ended::Failed(e)),
            }
        }
        let mut ended = ended.unwrap_or(Ended::Asked);
        self.ready.store(false, Ordering::SeqCst);
        accepting_ends.cancel();
        if let (Ended::Asked, Some(over), true) = (&ended, self.config.lame_duck, announced) {
            tracing::info!(lame_duck = ?over, "lame duck: not accepting, closing clients spread over the lame duck time");
            tokio::select! {
                () = tokio::time::sleep(over) => {}
                what = died.recv() => ended = died_of(what),
            }
        }
        if let Ended::Asked = ended {
            tracing::info!(drain_timeout = ?self.config.drain_timeout, "shutting down: no new clients, flushing queued output");
        }
        stop.cancel();
        let drained = tokio::time::timeout(self.config.drain_timeout, async {
            while engine_done.recv().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            if let Ended::Asked = ended {
                tracing::warn!(
                    drain_timeout = ?self.config.drain_timeout,
                    "drain timeout passed with output still queued; closing the remaining connections"
                );
            }
            abort.cancel();
            while engine_done.recv().await.is_some() {}
        }
        if let Some(http) = self.http {
            http.stop().await;
        }
        match ended {
            Ended::Died(what) => Err(Error::Died { what }),
            Ended::Failed(e) => Err(e),
            Ended::Asked => {
                tracing::info!("stopped");
                Ok(())
            }
        }
    }
}

/// Why the server stops.
enum Ended {
    /// Its shutdown future resolved.
    Asked,
    /// A part of the engine stopped on its own.
    Died(String),
    /// `on_ready` failed.
    Failed(Error),
}

fn died_with(what: Option<String>) -> String {
    what.unwrap_or_else(|| "the engine".into())
}

/// Picks the engine: `auto` probes io_uring and falls back to tokio with a
/// warning; an explicit `uring` that cannot start is an error.
fn resolve_engine(choice: EngineChoice) -> Result<Engine, Error> {
    match choice {
        EngineChoice::Tokio => Ok(Engine::Tokio),
        EngineChoice::Uring => net::probe_uring()
            .map(|()| Engine::Uring)
            .map_err(Error::UringUnavailable),
        EngineChoice::Auto => match net::probe_uring() {
            Ok(()) => Ok(Engine::Uring),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "io_uring is not available (disabled by the kernel.io_uring_disabled sysctl, blocked by seccomp, limited by RLIMIT_MEMLOCK, or an old kernel); falling back to the tokio engine"
                );
                Ok(Engine::Tokio)
            }
        },
    }
}
