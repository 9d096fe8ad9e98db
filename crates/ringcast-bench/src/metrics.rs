//! The server's metrics: one HTTP GET of `/metrics` on loopback (ureq),
//! and the Prometheus text format it returns.
//!
//! The text is read by the small parser below rather than a crate: the
//! Rust parsers on crates.io are either unmaintained and skip lines they
//! cannot read (prometheus-parse, last released in 2023) or LGPL
//! (openmetrics-parser), and this harness reads only a handful of plain
//! counters and gauges.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// How long one scrape may take in all.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer taken: a few hundred lines are expected.
const MAX_BODY: u64 = 4 << 20;

/// One scrape: every sample, by name with its labels as written
/// (`ringcast_build_info{version="0.1.0",...}`).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Metrics(BTreeMap<String, f64>);

impl Metrics {
    /// The sample named exactly `name`, labels included.
    pub(crate) fn get(&self, name: &str) -> Option<f64> {
        self.0.get(name).copied()
    }

    /// A counter or gauge that must be there, as a whole number (a
    /// negative gauge reads as 0).
    pub(crate) fn count(&self, name: &str) -> anyhow::Result<u64> {
        let v = self
            .get(name)
            .with_context(|| format!("the server reports no {name}"))?;
        Ok(v.max(0.0).round() as u64)
    }
}

/// Parses the Prometheus text exposition format: `name value` or
/// `name{labels} value`, an optional timestamp after it; `#` lines and
/// blank lines are skipped. A line that does not parse is an error: it
/// would mean the format is not what this harness reads.
pub(crate) fn parse(text: &str) -> anyhow::Result<Metrics> {
    let mut samples = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, rest) = split_name(line).with_context(|| format!("line {}: {line:?}", n + 1))?;
        let value = rest
            .split_whitespace()
            .next()
            .with_context(|| format!("line {}: {line:?} has no value", n + 1))?;
        let value = parse_value(value)
            .with_context(|| format!("line {}: {value:?} is not a number", n + 1))?;
        samples.insert(name.to_owned(), value);
    }
    Ok(Metrics(samples))
}

/// Splits a sample line after its name and labels. Label values are
/// quoted and may hold spaces, braces and escaped quotes.
fn split_name(line: &str) -> anyhow::Result<(&str, &str)> {
    let Some(brace) = line.find('{') else {
        return line
            .split_once(char::is_whitespace)
            .context("no value after the name");
    };
    if line[..brace].contains(char::is_whitespace) {
        return line
            .split_once(char::is_whitespace)
            .context("no value after the name");
    }
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in line[brace..].char_indices() {
        let at = brace + i;
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '}' if !in_quotes => return Ok((&line[..=at], &line[at + 1..])),
            _ => {}
        }
    }
    bail!("labels not closed")
}

/// A sample value: a float, or `+Inf`, `-Inf`, `NaN`.
fn parse_value(text: &str) -> anyhow::Result<f64> {
    Ok(match text {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => text.parse()?,
    })
}

/// Scrapes `http://addr/metrics`: a status other than 200 is an error.
pub(crate) fn scrape(addr: SocketAddr) -> anyhow::Result<Metrics> {
    let url = format!("http://{addr}/metrics");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(SCRAPE_TIMEOUT))
        .proxy(None)
        .build()
        .into();
    let body = agent
        .get(&url)
        .call()
        .and_then(|mut answer| {
            answer
                .body_mut()
                .with_config()
                .limit(MAX_BODY)
                .read_to_string()
        })
        .with_context(|| format!("cannot read {url}"))?;
    parse(&body).with_context(|| format!("{url} is not Prometheus text"))
}

/// Polls `addr`'s metrics every 50 ms until `ok` holds, `timeout` at
/// most. Returns the last scrape, and whether `ok` held for it; a scrape
/// that fails only counts as not yet.
pub(crate) fn wait_until(
    addr: SocketAddr,
    timeout: Duration,
    ok: impl Fn(&Metrics) -> bool,
) -> (Option<Metrics>, bool) {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        if let Ok(m) = scrape(addr) {
            if ok(&m) {
                return (Some(m), true);
            }
            last = Some(m);
        }
        if Instant::now() >= deadline {
            return (last, false);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until gauge `name` equals `value`; an error saying what it was
/// if it did not within `timeout`.
pub(crate) fn wait_for_value(
    addr: SocketAddr,
    name: &str,
    value: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let (last, ok) = wait_until(addr, timeout, |m| m.get(name) == Some(value as f64));
    if ok {
        return Ok(());
    }
    let was = last
        .and_then(|m| m.get(name))
        .map_or_else(|| "unknown".to_owned(), |v| v.to_string());
    bail!(
        "{name} is {was}, not {value}, after {} s",
        timeout.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP ringcast_connected_clients Clients connected now.
# TYPE ringcast_connected_clients gauge
ringcast_connected_clients 3
# TYPE ringcast_messages_dropped counter
ringcast_messages_dropped_total 12345
ringcast_build_info{version=\"0.1.0\",revision=\"ab c}d\\\"e\"} 1
ringcast_engine_info{engine=\"uring\"} 1
# UNIT process_resident_memory_bytes bytes
process_resident_memory_bytes 1.9595264e7
ringcast_ratio 0.25 1700000000000
ringcast_inf +Inf

# EOF
";

    #[test]
    fn parses_samples_labels_and_timestamps() {
        let m = parse(TEXT).expect("parses");
        assert_eq!(m.get("ringcast_connected_clients"), Some(3.0));
        assert_eq!(
            m.count("ringcast_messages_dropped_total").expect("there"),
            12345
        );
        assert_eq!(
            m.get("ringcast_build_info{version=\"0.1.0\",revision=\"ab c}d\\\"e\"}"),
            Some(1.0)
        );
        assert_eq!(m.get("ringcast_engine_info{engine=\"uring\"}"), Some(1.0));
        assert_eq!(m.get("process_resident_memory_bytes"), Some(19_595_264.0));
        assert_eq!(m.get("ringcast_ratio"), Some(0.25));
        assert_eq!(m.get("ringcast_inf"), Some(f64::INFINITY));
        assert!(m.count("ringcast_missing").is_err());
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        assert!(parse("ringcast_x").is_err(), "no value");
        assert!(parse("ringcast_x abc").is_err(), "not a number");
        assert!(parse("ringcast_x{a=\"b\" 1").is_err(), "labels not closed");
    }
}
