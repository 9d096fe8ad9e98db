//! What a run is asked to do: the servers, the rate, and the window.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Serialize, Serializer};

use crate::LoadArgs;

/// Default `--window`, at most: lines each publisher may have in flight at
/// `max`.
pub const DEFAULT_WINDOW: usize = 1000;
/// The default `--window` shrinks so that publishers × window × clients
/// stays within this many deliveries in flight, which keeps the drain short
/// with many clients.
pub const DEFAULT_WINDOW_DELIVERIES: usize = 1_000_000;

/// The `--window` a run uses: the one given, or the default for its
/// publishers and clients.
pub fn window(args: &LoadArgs) -> usize {
    args.window.unwrap_or_else(|| {
        let fan_out = args.publishers.max(1).saturating_mul(args.clients.max(1));
        (DEFAULT_WINDOW_DELIVERIES / fan_out).clamp(1, DEFAULT_WINDOW)
    })
}

/// How fast each publisher sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    /// As fast as the server takes the lines.
    Max,
    /// This many lines per second per publisher.
    PerSecond(u64),
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Rate::Max);
        }
        match s.parse::<u64>() {
            Ok(0) => Err("must be at least 1 line per second, or `max`".to_owned()),
            Ok(n) => Ok(Rate::PerSecond(n)),
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
            Rate::PerSecond(n) => serializer.serialize_u64(*n),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: LoadArgs,
    }

    #[test]
    fn default_window_bounds_the_deliveries_in_flight() {
        use clap::Parser as _;
        let args = |extra: &[&str]| {
            let mut argv = vec!["load"];
            argv.extend_from_slice(extra);
            Cli::parse_from(argv).args
        };
        let w = |extra: &[&str]| window(&args(extra));
        assert_eq!(w(&["--clients", "10", "--publishers", "10"]), 1000);
        assert_eq!(w(&["--clients", "100", "--publishers", "10"]), 1000);
        assert_eq!(w(&["--clients", "1000", "--publishers", "10"]), 100);
        assert_eq!(w(&["--clients", "60000", "--publishers", "60000"]), 1);
        assert_eq!(w(&["--clients", "1000", "--window", "7"]), 7);
    }

    #[test]
    fn connect_addresses_parse() {
        let a: SocketAddr = "127.0.0.1:9001".parse().expect("addr");
        let b: SocketAddr = "127.0.0.1:9002".parse().expect("addr");
        let c: SocketAddr = "[::1]:9003".parse().expect("addr");
        let one: Targets = "127.0.0.1:9001".parse().expect("one address");
        assert_eq!(one.addrs(), [a]);
        assert_eq!(one.for_client(0), a);
        assert_eq!(one.for_client(7), a);
        let two: Targets = "127.0.0.1:9001,127.0.0.1:9002".parse().expect("two");
        assert_eq!(two.addrs(), [a, b]);
        let spread: Vec<_> = (0..5).map(|i| two.for_client(i)).collect();
        assert_eq!(spread, [a, b, a, b, a]);
        assert_eq!(two.to_string(), "127.0.0.1:9001,127.0.0.1:9002");
        let three: Targets = " 127.0.0.1:9001 , 127.0.0.1:9002,[::1]:9003"
            .parse()
            .expect("spaces and IPv6");
        assert_eq!(three.addrs(), [a, b, c]);
        assert_eq!(three.for_client(5), c);
        assert!("".parse::<Targets>().is_err());
        assert!("127.0.0.1:9001,".parse::<Targets>().is_err());
        assert!(",127.0.0.1:9001".parse::<Targets>().is_err());
        assert!("127.0.0.1:9001,,127.0.0.1:9002".parse::<Targets>().is_err());
        assert!("127.0.0.1".parse::<Targets>().is_err(), "no port");
        assert!("localhost:9001".parse::<Targets>().is_err(), "not an IP");
        assert_eq!(Targets::new(Vec::new()), None);
        assert_eq!(Targets::from(a), one);
    }

    #[test]
    fn connect_flag_takes_a_list() {
        use clap::Parser as _;
        let load = |argv: &[&str]| Cli::try_parse_from(&argv[1..]).map(|c| c.args.connect);
        let default = load(&["ringcast", "load"]).expect("default");
        assert_eq!(default.addrs().len(), 1);
        let two = load(&[
            "ringcast",
            "load",
            "--connect",
            "127.0.0.1:9001,127.0.0.1:9002",
        ])
        .expect("two addresses");
        assert_eq!(two.addrs().len(), 2);
        assert!(load(&["ringcast", "load", "--connect", "127.0.0.1:9001,nope"]).is_err());
    }

    #[test]
    fn rate_parses() {
        assert_eq!("max".parse(), Ok(Rate::Max));
        assert_eq!("1000".parse(), Ok(Rate::PerSecond(1000)));
        assert!("0".parse::<Rate>().is_err());
        assert!("fast".parse::<Rate>().is_err());
        assert_eq!(
            serde_json::to_string(&[Rate::Max, Rate::PerSecond(5)]).expect("serializes"),
            r#"["max",5]"#
        );
    }
}
