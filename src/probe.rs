//! `ringcast probe`: one GET to a running server's HTTP endpoints, for a
//! container's HEALTHCHECK (slim images have no curl). Exit status 0 when
//! the answer is 200, 1 for any other answer, none, or none in time.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};

/// Sends `GET path` to `addr` and checks that the answer's status is 200,
/// all within `timeout`.
pub(crate) fn probe(addr: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<()> {
    let url = format!("http://{addr}{path}");
    let deadline = Instant::now() + timeout;
    // What is left of the timeout; never zero, which the socket calls refuse.
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let failed = |e: std::io::Error| match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => {
            anyhow!(
                "{url}: no answer within {}",
                humantime::format_duration(timeout)
            )
        }
        _ => anyhow!("{url}: {e}"),
    };
    let mut stream = TcpStream::connect_timeout(&addr, left()).map_err(failed)?;
    stream.set_write_timeout(Some(left())).map_err(failed)?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .map_err(failed)?;
    // Only the status line matters: read until its end, at most 1 KiB.
    let mut head = Vec::new();
    let mut buf = [0; 1024];
    while !head.contains(&b'\n') && head.len() < buf.len() {
        stream.set_read_timeout(Some(left())).map_err(failed)?;
        match stream.read(&mut buf).map_err(failed)? {
            0 => break,
            n => head.extend_from_slice(&buf[..n]),
        }
    }
    let status = String::from_utf8_lossy(head.split(|&b| b == b'\n').next().unwrap_or(&[]));
    let status = status.trim_end();
    match status.split_once(' ') {
        Some((version, rest)) if version.starts_with("HTTP/") => {
            if rest.starts_with("200 ") || rest == "200" {
                Ok(())
            } else {
                bail!("{url} answered {rest}")
            }
        }
        _ => bail!("{url}: not an HTTP answer: {status:?}"),
    }
}

/// `--path`: an absolute path, with nothing that would end the request line.
pub(crate) fn parse_path(path: &str) -> Result<String, String> {
    if path.starts_with('/') && !path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Ok(path.to_owned())
    } else {
        Err("must start with / and hold no spaces or control characters".into())
    }
}
