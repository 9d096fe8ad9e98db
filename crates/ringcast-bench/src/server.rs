//! `ringcast serve` as a child process: started on loopback port 0 with
//! metrics on, its ports read from `--ready-file` (written once bound,
//! atomically), checked while it runs, stopped with SIGTERM.

use std::fmt;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Deserialize;

use crate::children::ChildGuard;
use crate::metrics::{self, Metrics};
use crate::row::Engine;

/// How long a server has to write its ready file.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// What `--ready-file` holds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct Ready {
    pub(crate) listen: SocketAddr,
    pub(crate) metrics: Option<SocketAddr>,
    pub(crate) ws: Option<SocketAddr>,
    pub(crate) engine: String,
    pub(crate) pid: u32,
}

/// Parses the text of a ready file.
pub(crate) fn parse_ready(text: &str) -> anyhow::Result<Ready> {
    serde_json::from_str(text).context("not the JSON `ringcast serve --ready-file` writes")
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

/// A running `ringcast serve`.
#[derive(Debug)]
pub(crate) struct Server {
    /// `uring`, `tokio`, or a cluster node's name (`a`, `b`).
    pub(crate) name: String,
    pub(crate) engine: Engine,
    pub(crate) ready: Ready,
    /// Where its stderr (its log) goes.
    pub(crate) log: PathBuf,
    /// The command line, for setup.txt.
    pub(crate) command: String,
    child: ChildGuard,
}

impl Server {
    /// Starts `bin serve --engine engine` on 127.0.0.1:0 with metrics on
    /// 127.0.0.1:0 and `extra` flags, logging to `log`, and waits for its
    /// ready file in `scratch`.
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
        let mut command = Command::new(bin);
        command
            .args(["serve", "--engine", engine.name()])
            .args(["--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
            .args(["--log", "info"])
            .arg("--ready-file")
            .arg(&ready_file)
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
        let shown = format!(
            "{} serve --engine {engine} --listen 127.0.0.1:0 --metrics 127.0.0.1:0 --log info --ready-file FILE{}",
            bin.display(),
            extra.iter().map(|a| format!(" {a}")).collect::<String>()
        );
        let mut child = ChildGuard::spawn(&mut command, format!("the {name} server"))?;
        let deadline = Instant::now() + START_TIMEOUT;
        let ready = loop {
            if let Some(status) = child.try_status()? {
                bail!(
                    "the {name} server exited at start ({status}); its log ends: {}",
                    tail(log, 10)
                );
            }
            if let Ok(text) = std::fs::read_to_string(&ready_file) {
                break parse_ready(&text)
                    .with_context(|| format!("cannot read {}", ready_file.display()))?;
            }
            if Instant::now() >= deadline {
                bail!(
                    "the {name} server wrote no ready file in {} s; its log ends: {}",
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
        if ready.metrics.is_none() {
            bail!("the {name} server reports no metrics address");
        }
        Ok(Server {
            name: name.to_owned(),
            engine,
            ready,
            log: log.to_owned(),
            command: shown,
            child,
        })
    }

    /// Where clients connect.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.ready.listen
    }

    /// Where its metrics are (always on: [`Server::start`] checked).
    pub(crate) fn metrics_addr(&self) -> SocketAddr {
        self.ready.metrics.unwrap_or(self.ready.listen)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// One scrape of its metrics.
    pub(crate) fn scrape(&self) -> anyhow::Result<Metrics> {
        metrics::scrape(self.metrics_addr())
    }

    /// Waits until gauge `name` is `value`, `timeout` at most.
    pub(crate) fn wait_for(&self, name: &str, value: u64, timeout: Duration) -> anyhow::Result<()> {
        metrics::wait_for_value(self.metrics_addr(), name, value, timeout)
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
        assert_eq!(r.engine, "uring");
        assert_eq!(r.pid, 26709);
        assert!(parse_ready(r#"{"listen":"nowhere"}"#).is_err());
        assert!(
            parse_ready("").is_err(),
            "half a file is never read, but say so"
        );
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
