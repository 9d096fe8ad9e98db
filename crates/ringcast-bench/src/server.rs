//! A server as a child process: `ringcast serve --engine E`, or the
//! textbook server of `examples/textbook.rs`. Started on loopback port 0
//! with metrics on (ringcast), its ports read from `--ready-file` (written
//! once bound, atomically), checked while it runs, stopped with SIGTERM.
//!
//! A ringcast build older than `--ready-file` (`ringcast-bench ab --old`
//! may be one) gets ports picked here and is ready once it accepts a
//! connection; which flags a build has is read from its `serve --help`.

use std::fmt;
use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Deserialize;

use crate::children::ChildGuard;
use crate::metrics::{self, Metrics};
use crate::procfs;
use crate::row::Engine;

/// How long a server has to write its ready file.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// What `--ready-file` holds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct Ready {
    pub(crate) listen: SocketAddr,
    pub(crate) metrics: Option<SocketAddr>,
    pub(crate) ws: Option<SocketAddr>,
    /// With TLS on `listen`: the plain TCP listener beside it
    /// (`--plain-listen`), if any.
    #[serde(default)]
    pub(crate) plain_listen: Option<SocketAddr>,
    pub(crate) engine: String,
    pub(crate) pid: u32,
}

/// Parses the text of a ready file.
pub(crate) fn parse_ready(text: &str) -> anyhow::Result<Ready> {
    serde_json::from_str(text).context("not the JSON `ringcast serve --ready-file` writes")
}

/// Which of the flags the harness uses a `ringcast` build has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ServeFlags {
    pub(crate) ready_file: bool,
    pub(crate) metrics: bool,
    /// Whether it limits the connections per address: the harness's
    /// thousands of clients all come from 127.0.0.1.
    pub(crate) max_clients_per_ip: bool,
}

impl ServeFlags {
    /// The flags named in the text of `ringcast serve --help`.
    pub(crate) fn parse(help: &str) -> Self {
        ServeFlags {
            ready_file: help.contains("--ready-file"),
            metrics: help.contains("--metrics"),
            max_clients_per_ip: help.contains("--max-clients-per-ip"),
        }
    }

    /// The flags of `bin`, from its `serve --help`.
    pub(crate) fn of(bin: &Path) -> anyhow::Result<Self> {
        let out = Command::new(bin)
            .args(["serve", "--help"])
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {} serve --help", bin.display()))?;
        if !out.status.success() {
            bail!(
                "{} serve --help failed ({}): not a ringcast binary?",
                bin.display(),
                out.status
            );
        }
        Ok(Self::parse(&String::from_utf8_lossy(&out.stdout)))
    }
}

/// A free loopback port, for a build that cannot report the one it got.
/// Another process could take it before the server does; on loopback, in
/// a benchmark, that is not worth more than the clear error it gives.
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?)
}

/// A server that is gone while the run needed it: the run stops, with
/// what it has so far.
#[derive(Debug)]
pub(crate) struct ServerGone(pub(crate) String);

impl fmt::Display for ServerGone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ServerGone {}

/// A running server.
#[derive(Debug)]
pub(crate) struct Server {
    /// `uring`, `tokio`, `textbook`, a cluster node's name (`a`, `b`), or
    /// `ab`'s `old-uring` and the like.
    pub(crate) name: String,
    pub(crate) engine: Engine,
    pub(crate) ready: Ready,
    /// Where its stderr (its log) goes.
    pub(crate) log: PathBuf,
    /// The command line, for setup.txt.
    pub(crate) command: String,
    /// Its open descriptors once ready: back to this many, every client
    /// has left (for a server without metrics).
    fd_baseline: usize,
    child: ChildGuard,
}

/// The server of `engine` among `servers`.
pub(crate) fn of_engine(servers: &mut [Server], engine: Engine) -> anyhow::Result<&mut Server> {
    servers
        .iter_mut()
        .find(|s| s.engine == engine)
        .context("no server of that engine")
}

/// How a server tells it is ready.
enum Readiness {
    /// It writes this ready file.
    File(PathBuf),
    /// It accepts connections here; metrics (if any) there.
    Accepts(Ready),
}

impl Server {
    /// Starts `engine` on 127.0.0.1:0 with metrics on 127.0.0.1:0 and
    /// `extra` flags, logging to `log`, and waits until it is ready (its
    /// ready file, in `scratch`). `bin` is `ringcast`, or for
    /// [`Engine::Textbook`] the textbook example, which takes no flags but
    /// its address and `--ready-file`.
    pub(crate) fn start(
        bin: &Path,
        engine: Engine,
        name: &str,
        extra: &[String],
        log: &Path,
        scratch: &Path,
    ) -> anyhow::Result<Server> {
        let ready_file = scratch.join(format!("ready-{name}.json"));
        // A file left from an earlier start would be read as this one's.
        let _ = std::fs::remove_file(&ready_file);
        let log_file =
            File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let mut args: Vec<String> = Vec::new();
        let readiness = if engine.is_ringcast() {
            let flags = ServeFlags::of(bin)?;
            args.extend(["serve", "--engine", engine.name()].map(String::from));
            if flags.max_clients_per_ip {
                // Every client of the harness comes from 127.0.0.1.
                args.extend(["--max-clients-per-ip", "0"].map(String::from));
            }
            if flags.ready_file {
                args.extend(["--listen", "127.0.0.1:0"].map(String::from));
                if flags.metrics {
                    args.extend(["--metrics", "127.0.0.1:0"].map(String::from));
                }
                Readiness::File(ready_file.clone())
            } else {
                let listen = free_port()?;
                args.extend(["--listen".to_owned(), listen.to_string()]);
                let metrics = if flags.metrics {
                    let metrics = free_port()?;
                    args.extend(["--metrics".to_owned(), metrics.to_string()]);
                    Some(metrics)
                } else {
                    None
                };
                Readiness::Accepts(Ready {
                    listen,
                    metrics,
                    ws: None,
                    plain_listen: None,
                    engine: engine.name().to_owned(),
                    pid: 0,
                })
            }
        } else {
            args.push("127.0.0.1:0".to_owned());
            Readiness::File(ready_file.clone())
        };
        if engine.is_ringcast() {
            args.extend(["--log", "info"].map(String::from));
        }
        let mut shown_args = args.clone();
        if let Readiness::File(_) = readiness {
            shown_args.extend(["--ready-file".to_owned(), "FILE".to_owned()]);
        }
        shown_args.extend(extra.iter().cloned());
        let shown = format!("{} {}", bin.display(), shown_args.join(" "));
        let mut command = Command::new(bin);
        command.args(&args);
        if let Readiness::File(path) = &readiness {
            command.arg("--ready-file").arg(path);
        }
        command
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        // The server takes any flag from RINGCAST_* variables: the harness
        // decides every flag, not the caller's environment.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("RINGCAST_") {
                command.env_remove(key);
            }
        }
        let mut child = ChildGuard::spawn(&mut command, format!("the {name} server"))?;
        let deadline = Instant::now() + START_TIMEOUT;
        let ready = loop {
            if let Some(status) = child.try_status()? {
                bail!(
                    "the {name} server exited at start ({status}); its log ends: {}",
                    tail(log, 10)
                );
            }
            match &readiness {
                Readiness::File(path) => {
                    if let Ok(text) = std::fs::read_to_string(path) {
                        break parse_ready(&text)
                            .with_context(|| format!("cannot read {}", path.display()))?;
                    }
                }
                Readiness::Accepts(ready) => {
                    let up = |addr| TcpStream::connect_timeout(&addr, Duration::from_secs(1));
                    if up(ready.listen).is_ok() && ready.metrics.is_none_or(|m| up(m).is_ok()) {
                        break Ready {
                            pid: child.pid(),
                            ..ready.clone()
                        };
                    }
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "the {name} server was not ready in {} s; its log ends: {}",
                    START_TIMEOUT.as_secs(),
                    tail(log, 10)
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        if ready.pid != child.pid() {
            bail!(
                "{} names pid {}, but the server is pid {}",
                ready_file.display(),
                ready.pid,
                child.pid()
            );
        }
        if let Readiness::Accepts(_) = readiness {
            // Let the server close the connection that found it ready, so
            // the baseline does not count it.
            thread::sleep(Duration::from_millis(100));
        }
        let fd_baseline = procfs::fd_count(child.pid())?;
        Ok(Server {
            name: name.to_owned(),
            engine,
            ready,
            log: log.to_owned(),
            command: shown,
            fd_baseline,
            child,
        })
    }

    /// Where clients connect.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.ready.listen
    }

    /// With TLS on [`addr`](Self::addr): the plain TCP listener beside it
    /// (`--plain-listen`).
    pub(crate) fn plain_addr(&self) -> Option<SocketAddr> {
        self.ready.plain_listen
    }

    /// Where its metrics are: every ringcast build the bench runs has
    /// them; the textbook server and old builds may not.
    pub(crate) fn metrics_addr(&self) -> Option<SocketAddr> {
        self.ready.metrics
    }

    /// Its metrics address, or an error naming the server.
    fn need_metrics(&self) -> anyhow::Result<SocketAddr> {
        self.ready
            .metrics
            .with_context(|| format!("the {} server has no metrics", self.name))
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// One scrape of its metrics; an error if it has none.
    pub(crate) fn scrape(&self) -> anyhow::Result<Metrics> {
        metrics::scrape(self.need_metrics()?)
    }

    /// Waits until gauge `name` is `value`, `timeout` at most.
    pub(crate) fn wait_for(&self, name: &str, value: u64, timeout: Duration) -> anyhow::Result<()> {
        metrics::wait_for_value(self.need_metrics()?, name, value, timeout)
    }

    /// Waits, `timeout` at most, until every client has left: its
    /// `ringcast_connected_clients` gauge is 0, or without metrics, its
    /// descriptors are back to what they were once it was ready.
    pub(crate) fn wait_disconnected(&self, timeout: Duration) -> anyhow::Result<()> {
        if self.ready.metrics.is_some() {
            return self.wait_for("ringcast_connected_clients", 0, timeout);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let fds = procfs::fd_count(self.pid())?;
            if fds <= self.fd_baseline {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{fds} descriptors open, against {} once ready ({})",
                    self.fd_baseline,
                    procfs::fd_kinds(self.pid())
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// A [`ServerGone`] error if it has exited.
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_status()? {
            return Err(ServerGone(format!(
                "the {} server (pid {}) is gone, {status}: it exited or another process killed it; its log ends: {}",
                self.name,
                self.pid(),
                tail(&self.log, 3)
            ))
            .into());
        }
        Ok(())
    }

    /// Sends SIGTERM and waits `timeout` for it to exit; kills it if it
    /// does not. `None` if it had to be killed.
    pub(crate) fn stop(&mut self, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
        let status = self.child.terminate(timeout)?;
        if status.is_none() {
            self.child.kill();
        }
        Ok(status)
    }

    /// The last lines of its log, on one line.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// The first log line containing `needle`, for setup.txt.
    pub(crate) fn log_line(&self, needle: &str) -> Option<String> {
        let text = std::fs::read_to_string(&self.log).ok()?;
        text.lines()
            .find(|l| l.contains(needle))
            .map(|l| l.trim().to_owned())
    }
}

/// The last `n` lines of `path`, joined with spaces.
pub(crate) fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_files_parse() {
        let r = parse_ready(
            r#"{"listen":"127.0.0.1:39489","metrics":"127.0.0.1:43075","ws":null,"engine":"uring","pid":26709}"#,
        )
        .expect("parses");
        assert_eq!(r.listen, "127.0.0.1:39489".parse().expect("addr"));
        assert_eq!(r.metrics, Some("127.0.0.1:43075".parse().expect("addr")));
        assert_eq!(r.ws, None);
        assert_eq!(r.plain_listen, None, "a build before TLS");
        assert_eq!(r.engine, "uring");
        assert_eq!(r.pid, 26709);
        let tls = parse_ready(
            r#"{"listen":"127.0.0.1:1","metrics":null,"ws":null,"plain_listen":"127.0.0.1:2","plain_ws":null,"tls":true,"engine":"tokio","pid":1}"#,
        )
        .expect("parses");
        assert_eq!(tls.plain_listen, Some("127.0.0.1:2".parse().expect("addr")));
        assert!(parse_ready(r#"{"listen":"nowhere"}"#).is_err());
        assert!(
            parse_ready("").is_err(),
            "half a file is never read, but say so"
        );
    }

    #[test]
    fn serve_flags_are_read_from_the_help() {
        let new = "Usage: ringcast serve [OPTIONS]\n      --metrics <ADDR>\n      --ready-file <PATH>\n      --max-clients-per-ip <N>\n";
        assert_eq!(
            ServeFlags::parse(new),
            ServeFlags {
                ready_file: true,
                metrics: true,
                max_clients_per_ip: true,
            }
        );
        let old = "Usage: ringcast serve [OPTIONS]\n      --metrics <ADDR>\n";
        assert!(!ServeFlags::parse(old).ready_file);
        assert!(!ServeFlags::parse(old).max_clients_per_ip);
        assert!(!ServeFlags::parse("--listen <ADDR>").metrics);
    }

    #[test]
    fn tail_takes_the_last_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        std::fs::write(&path, "a\nb\nc\n").expect("write");
        assert_eq!(tail(&path, 2), "b c");
        assert_eq!(tail(&path, 10), "a b c");
        assert_eq!(tail(&dir.path().join("none"), 3), "");
    }
}
