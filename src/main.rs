//! The `ringcast` binary: parses the command line and calls the library.

mod cli;
mod probe;

use std::io::IsTerminal as _;

use anyhow::Context as _;
use cli::{Cli, Command, LogFormat, ServeArgs};
use ringcast_load::{LoadArgs, Plan};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

/// Exit status for a failure while starting or serving (including a second
/// SIGTERM or SIGINT that cut shutdown short). 0 is a clean stop.
const EXIT_FAILURE: u8 = 1;

/// Exit status for a configuration that cannot work: starting again with
/// it fails the same way (`RestartPreventExitStatus=2`). Also clap's, for a
/// flag it cannot parse.
const EXIT_CONFIG: u8 = 2;

fn main() -> std::process::ExitCode {
    let cli = Cli::from_env();
    let result = match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Load(args) => load(&args),
        Command::Probe(args) => probe::probe(args.metrics, &args.path, args.timeout),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringcast: error: {e:#}");
            let config = e
                .chain()
                .filter_map(|cause| cause.downcast_ref::<ringcast::Error>())
                .any(ringcast::Error::is_config);
            std::process::ExitCode::from(if config { EXIT_CONFIG } else { EXIT_FAILURE })
        }
    }
}

/// Logs go to stderr through a writer thread, so that a full pipe never
/// stalls a core: lines that do not fit its buffer are dropped and counted.
/// The guard flushes what is buffered when dropped.
fn init_logging(
    level: Option<&str>,
    format: LogFormat,
) -> anyhow::Result<(
    tracing_appender::non_blocking::WorkerGuard,
    tracing_appender::non_blocking::ErrorCounter,
)> {
    let filter = match level {
        Some(l) => EnvFilter::try_new(l)
            .map_err(|e| ringcast::Error::Config(format!("invalid --log filter {l:?}: {e}")))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .thread_name("ringcast-log")
        .finish(std::io::stderr());
    let dropped = writer.error_counter();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok((guard, dropped))
}

fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let (flush_logs, dropped_logs) = init_logging(args.log.as_deref(), args.log_format)?;
    let mut flush_logs = Some(flush_logs);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal-handling runtime")?;
    runtime.block_on(async {
        // Install the handlers before the engine starts, so a signal sent as
        // soon as clients are served is never fatal.
        let mut term =
            signal(SignalKind::terminate()).context("cannot install a SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot install a SIGINT handler")?;
        let mut hup = signal(SignalKind::hangup()).context("cannot install a SIGHUP handler")?;
        let (config, warnings) = args.config()?;
        for warning in warnings {
            tracing::warn!("{warning}");
        }
        let server = ringcast::Server::bind(config)?;
        server
            .metrics()
            .count_log_drops(move || dropped_logs.dropped_lines() as u64);
        if let Some(addr) = server.metrics_addr() {
            tracing::info!(%addr, "metrics at http://{addr}/metrics");
        }
        if let Some(addr) = server.ws_addr() {
            if server.tls().is_some() {
                tracing::info!(%addr, "websocket clients at wss://{addr}/, the chat page at https://{addr}/");
            } else {
                tracing::info!(%addr, "websocket clients at ws://{addr}/, the chat page at http://{addr}/");
            }
        }
        if let Some(addr) = server.plain_addr() {
            tracing::info!(%addr, "plain line clients beside TLS at {addr}");
        }
        if let Some(addr) = server.plain_ws_addr() {
            tracing::info!(%addr, "plain websocket clients beside TLS at ws://{addr}/");
        }
        let certs = server.tls();
        let ready_file = args.ready_file.clone();
        let addresses = addresses(&server);
        // Once every core accepts: scripts and systemd (Type=notify) may
        // send clients now.
        let on_ready = move || {
            if let Some(path) = &ready_file {
                write_ready_file(path, &addresses)?;
            }
            notify(&[sd_notify::NotifyState::Ready]);
            Ok(())
        };
        let (asked, stop_asked) = tokio::sync::oneshot::channel::<()>();
        // The first SIGTERM or SIGINT begins shutdown; the second is
        // returned.
        let signals = async move {
            let mut asked = Some(asked);
            loop {
                let name = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                    _ = hup.recv() => {
                        match &certs {
                            Some(certs) => match certs.reload() {
                                Ok(()) => tracing::info!(
                                    cert = %certs.cert_path().display(),
                                    "SIGHUP received: TLS certificate reloaded; new connections use it"
                                ),
                                Err(e) => tracing::error!(
                                    error = %e,
                                    "SIGHUP received: cannot reload the TLS certificate; keeping the old one"
                                ),
                            },
                            None => tracing::info!(
                                "SIGHUP received: nothing to reload, the configuration is read at start and logs go to stderr; still serving"
                            ),
                        }
                        continue;
                    }
                };
                match asked.take() {
                    Some(asked) => {
                        tracing::info!("{name} received");
                        notify(&[sd_notify::NotifyState::Stopping]);
                        let _ = asked.send(());
                    }
                    None => return name,
                }
            }
        };
        let shutdown = async {
            let _ = stop_asked.await;
        };
        tokio::select! {
            ran = server.run_with_ready(shutdown, on_ready) => Ok(ran?),
            name = signals => {
                tracing::error!("{name} received again while stopping: exiting at once, without draining");
                // The log line goes out before the process ends.
                drop(flush_logs.take());
                std::process::exit(i32::from(EXIT_FAILURE))
            }
        }
    })
}

/// Tells systemd how the service is doing, if it asked (`NOTIFY_SOCKET`).
fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// The server's addresses, as `--ready-file` holds them.
fn addresses(server: &ringcast::Server) -> serde_json::Value {
    serde_json::json!({
        "listen": server.local_addr().to_string(),
        "metrics": server.metrics_addr().map(|a| a.to_string()),
        "ws": server.ws_addr().map(|a| a.to_string()),
        "plain_listen": server.plain_addr().map(|a| a.to_string()),
        "plain_ws": server.plain_ws_addr().map(|a| a.to_string()),
        "tls": server.tls().is_some(),
        "engine": server.engine().name(),
        "pid": std::process::id(),
    })
}

/// Writes the server's addresses as JSON, through a temporary file renamed
/// into place, so a reader never sees half of it.
fn write_ready_file(
    path: &std::path::Path,
    addresses: &serde_json::Value,
) -> Result<(), ringcast::Error> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, format!("{addresses}\n"))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| ringcast::Error::Ready {
            what: format!("cannot write --ready-file {}", path.display()),
            source,
        })
}

fn load(args: &LoadArgs) -> anyhow::Result<()> {
    let plan = Plan::from_args(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(plan.threads())
        .enable_all()
        .build()
        .context("cannot start the load generator's runtime")?;
    let progress = !args.json && std::io::stderr().is_terminal();
    let report = runtime.block_on(ringcast_load::run_with_progress(&plan, progress))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}
