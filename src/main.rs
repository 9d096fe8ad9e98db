//! The `ringcast` binary: parses the command line and calls the library.

mod cli;

use std::io::IsTerminal as _;

use anyhow::Context as _;
use clap::Parser as _;
use cli::{Cli, Command, ServeArgs};
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

fn init_logging(level: Option<&str>) -> anyhow::Result<()> {
    let filter = match level {
        Some(l) => EnvFilter::try_new(l).with_context(|| format!("invalid --log filter {l:?}"))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    Ok(())
}

fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log.as_deref())?;
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
        let server = ringcast::Server::bind(args.config())?;
        if let Some(addr) = server.metrics_addr() {
            tracing::info!(%addr, "metrics at http://{addr}/metrics");
        }
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        };
        server.run(shutdown).await?;
        Ok(())
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
