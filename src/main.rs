//! The `ringcast` binary: parses the command line and calls the library.

mod cli;

use std::io::IsTerminal as _;

use anyhow::Context as _;
use clap::Parser as _;
use cli::{Cli, Command, LogFormat, ServeArgs};
use ringcast_load::{LoadArgs, Plan};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Load(args) => load(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringcast: error: {e:#}");
            std::process::ExitCode::FAILURE
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
        Some(l) => EnvFilter::try_new(l).with_context(|| format!("invalid --log filter {l:?}"))?,
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
    let (_flush_logs, dropped_logs) = init_logging(args.log.as_deref(), args.log_format)?;
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
        let server = ringcast::Server::bind(args.config())?;
        server
            .metrics()
            .count_log_drops(move || dropped_logs.dropped_lines() as u64);
        if let Some(addr) = server.metrics_addr() {
            tracing::info!(%addr, "metrics at http://{addr}/metrics");
        }
        if let Some(addr) = server.ws_addr() {
            tracing::info!(%addr, "websocket clients at ws://{addr}/, the chat page at http://{addr}/");
        }
        if let Some(path) = &args.ready_file {
            write_ready_file(path, &server)?;
        }
        // Clients can connect now; systemd (Type=notify) may route to us.
        notify(&[sd_notify::NotifyState::Ready]);
        let shutdown = async move {
            loop {
                tokio::select! {
                    _ = term.recv() => break tracing::info!("SIGTERM received"),
                    _ = int.recv() => break tracing::info!("SIGINT received"),
                    _ = hup.recv() => tracing::info!(
                        "SIGHUP received: nothing to reload, the configuration is read at start and logs go to stderr; still serving"
                    ),
                }
            }
            notify(&[sd_notify::NotifyState::Stopping]);
        };
        server.run(shutdown).await?;
        Ok(())
    })
}

/// Tells systemd how the service is doing, if it asked (`NOTIFY_SOCKET`).
fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Writes the server's addresses as JSON, through a temporary file renamed
/// into place, so a reader never sees half of it.
fn write_ready_file(path: &std::path::Path, server: &ringcast::Server) -> anyhow::Result<()> {
    let ready = serde_json::json!({
        "listen": server.local_addr().to_string(),
        "metrics": server.metrics_addr().map(|a| a.to_string()),
        "ws": server.ws_addr().map(|a| a.to_string()),
        "engine": server.engine().name(),
        "pid": std::process::id(),
    });
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, format!("{ready}\n"))
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("cannot write --ready-file {}", path.display()))
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
