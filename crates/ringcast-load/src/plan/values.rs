//! The values `--connect`, `--rate` and `--paced-by` parse into.

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// How fast each publisher sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    /// As fast as the server takes the lines.
    Max,
    /// This many lines per second per publisher; never zero, so a plan
    /// cannot ask for a rate that sends nothing.
    PerSecond(NonZeroU64),
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Rate::Max);
        }
        match s.parse::<u64>() {
            Ok(n) => NonZeroU64::new(n)
                .map(Rate::PerSecond)
                .ok_or_else(|| "must be at least 1 line per second, or `max`".to_owned()),
            Err(_) => Err(format!(
                "{s:?} is neither `max` nor a whole number of lines per second"
            )),
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::Max => f.write_str("max"),
            Rate::PerSecond(n) => write!(f, "{n}/s"),
        }
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Rate::Max => serializer.serialize_str("max"),
            Rate::PerSecond(n) => serializer.serialize_u64(n.get()),
        }
    }
}

/// At `max`, what holds a publisher's lines in flight (`--paced-by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PacedBy {
    /// A line is in flight until every fast reader has it (or lost it),
    /// and the window halves on loss: the highest rate every reader keeps
    /// up with.
    #[default]
    EveryReader,
    /// A line is in flight until the publisher's own connection has it,
    /// with a fixed window: publishers outpace slower readers (overload).
    OwnConnection,
    /// Nothing is in flight: no window, the publisher writes as fast as
    /// its socket takes lines (a flood, open loop at full speed).
    #[value(name = "none")]
    #[serde(rename = "none")]
    Nobody,
}

impl fmt::Display for PacedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PacedBy::EveryReader => "every-reader",
            PacedBy::OwnConnection => "own-connection",
            PacedBy::Nobody => "none",
        })
    }
}

/// The servers a run connects to (`--connect`): one address, or several
/// nodes of a cluster. Client `i` connects to address `i % len`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets(Vec<SocketAddr>);

impl Targets {
    /// The given addresses; `None` if there are none.
    pub fn new(addrs: Vec<SocketAddr>) -> Option<Self> {
        (!addrs.is_empty()).then_some(Targets(addrs))
    }

    /// The addresses, in order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.0
    }

    /// The address client `client` connects to.
    pub fn for_client(&self, client: usize) -> SocketAddr {
        self.0[client % self.0.len()]
    }
}

impl From<SocketAddr> for Targets {
    fn from(addr: SocketAddr) -> Self {
        Targets(vec![addr])
    }
}

impl FromStr for Targets {
    type Err = String;

    /// Parses `ADDR[,ADDR...]`; spaces around an address are ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let addrs = s
            .split(',')
            .map(|a| {
                let a = a.trim();
                if a.is_empty() {
                    return Err(format!(
                        "{s:?} has an empty address; use ADDR or ADDR,ADDR,..."
                    ));
                }
                a.parse::<SocketAddr>()
                    .map_err(|e| format!("{a:?} is not an IP:PORT address: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Targets::new(addrs).ok_or_else(|| "no address given".to_owned())
    }
}

impl fmt::Display for Targets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, addr) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{addr}")?;
        }
        Ok(())
    }
}
