//! The plan's checks and defaults, and the values it is made of.

use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::time::Duration;

use clap::Parser as _;

use super::*;

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    args: LoadArgs,
}

/// The plan `ringcast load` builds from these flags.
fn plan(extra: &[&str]) -> Result<Plan, PlanError> {
    let mut argv = vec!["load"];
    argv.extend_from_slice(extra);
    Plan::from_args(&Cli::try_parse_from(argv).expect("flags parse").args)
}

/// The flag a plan with these flags is refused for.
fn refused(extra: &[&str]) -> &'static str {
    match plan(extra) {
        Ok(p) => panic!("{extra:?} was accepted: {p:?}"),
        Err(e) => e.flag(),
    }
}

#[test]
fn default_window_bounds_the_deliveries_in_flight() {
    let w = |extra: &[&str]| plan(extra).expect("valid").window();
    assert_eq!(w(&["--clients", "10", "--publishers", "10"]), 1000);
    assert_eq!(w(&["--clients", "100", "--publishers", "10"]), 1000);
    assert_eq!(w(&["--clients", "1000", "--publishers", "10"]), 100);
    let own = ["--paced-by", "own-connection"];
    assert_eq!(
        w(&[&["--clients", "60000", "--publishers", "60000"][..], &own].concat()),
        1
    );
    assert_eq!(w(&["--clients", "1000", "--window", "7"]), 7);
}

#[test]
fn pacing_by_every_reader_keeps_its_counts_bounded() {
    // A count per publisher and client: 8 publishers share a cache line.
    assert!(plan(&["--clients", "60000", "--publishers", "8"]).is_ok());
    let many = ["--clients", "60000", "--publishers", "600"];
    assert_eq!(refused(&many), "paced-by");
    assert!(plan(&[&many[..], &["--paced-by", "own-connection"]].concat()).is_ok());
    assert!(
        plan(&[&many[..], &["--rate", "100"]].concat()).is_ok(),
        "no window"
    );
}

#[test]
fn paced_by_none_floods_with_no_window_and_no_counts() {
    let p = plan(&[
        "--paced-by",
        "none",
        "--publishers",
        "1",
        "--clients",
        "1000",
    ])
    .expect("valid");
    assert_eq!(p.paced_by(), PacedBy::Nobody);
    assert_eq!(p.paced_by().to_string(), "none");
    // No count per publisher and reader is kept, so no bound on them.
    assert!(
        plan(&[
            "--paced-by",
            "none",
            "--clients",
            "60000",
            "--publishers",
            "600"
        ])
        .is_ok()
    );
    assert_eq!(
        serde_json::to_string(&PacedBy::Nobody).expect("serializes"),
        "\"none\""
    );
}

#[test]
fn command_line_defaults_are_the_builders() {
    let target: SocketAddr = DEFAULT_CONNECT.parse().expect("default address");
    assert_eq!(
        plan(&[]).expect("defaults are valid"),
        Plan::builder(target).build().expect("defaults are valid")
    );
    let p = plan(&[]).expect("defaults are valid");
    assert_eq!(p.clients(), DEFAULT_CLIENTS);
    assert_eq!(p.duration(), DEFAULT_DURATION);
    assert_eq!(p.rate(), Rate::Max);
    assert_eq!(p.threads(), DEFAULT_THREADS);
}

#[test]
fn plan_refuses_what_cannot_run() {
    assert_eq!(refused(&["--clients", "0"]), "clients");
    assert_eq!(refused(&["--publishers", "0"]), "publishers");
    assert_eq!(
        refused(&["--clients", "3", "--publishers", "4"]),
        "publishers"
    );
    assert_eq!(
        refused(&["--clients", "70000", "--publishers", "65537"]),
        "publishers"
    );
    assert_eq!(refused(&["--size", "31"]), "size");
    assert_eq!(refused(&["--size", "1048577"]), "size");
    assert_eq!(refused(&["--duration", "0s"]), "duration");
    assert_eq!(refused(&["--window", "0"]), "window");
    assert_eq!(refused(&["--threads", "0"]), "threads");
    // The edges themselves are fine.
    let edges = plan(&[
        "--clients",
        "1",
        "--publishers",
        "1",
        "--size",
        "32",
        "--window",
        "1",
        "--threads",
        "1",
        "--duration",
        "1ns",
    ]);
    assert!(edges.is_ok(), "{edges:?}");
    assert!(plan(&["--size", "1048576"]).is_ok());
}

#[test]
fn plan_errors_name_the_flag() {
    let e = plan(&["--clients", "2", "--publishers", "3"]).expect_err("refused");
    assert_eq!(
        e.to_string(),
        "--publishers (3) must not exceed --clients (2)"
    );
    let e = Plan::builder("127.0.0.1:1".parse::<SocketAddr>().expect("addr"))
        .size(8)
        .build()
        .expect_err("refused");
    assert_eq!(
        e.to_string(),
        "--size must be at least 32 (the line header and its newline)"
    );
}

#[test]
fn builder_sets_every_value() {
    let target: SocketAddr = "127.0.0.1:9001".parse().expect("addr");
    let p = Plan::builder(target)
        .clients(10)
        .publishers(2)
        .size(100)
        .duration(Duration::from_millis(500))
        .rate(Rate::PerSecond(NonZeroU64::new(250).expect("not zero")))
        .window(9)
        .threads(3)
        .build()
        .expect("valid");
    assert_eq!(p.targets().addrs(), [target]);
    assert_eq!(
        (
            p.clients(),
            p.publishers(),
            p.size(),
            p.window(),
            p.threads()
        ),
        (10, 2, 100, 9, 3)
    );
    assert_eq!(p.duration(), Duration::from_millis(500));
    assert_eq!(p.rate().to_string(), "250/s");
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
    assert_eq!(
        "1000".parse(),
        Ok(Rate::PerSecond(NonZeroU64::new(1000).expect("not zero")))
    );
    assert!("0".parse::<Rate>().is_err());
    assert!("fast".parse::<Rate>().is_err());
    assert_eq!(
        serde_json::to_string(&[
            Rate::Max,
            Rate::PerSecond(NonZeroU64::MIN.saturating_add(4))
        ])
        .expect("serializes"),
        r#"["max",5]"#
    );
}

#[test]
fn slow_readers_default_to_paced_reads_and_a_small_buffer() {
    assert_eq!(plan(&[]).expect("valid").slow(), None);
    let p = plan(&["--slow-clients", "3"]).expect("valid");
    assert_eq!(p.slow_clients(), 3);
    assert_eq!(p.clients(), DEFAULT_CLIENTS, "slow readers come on top");
    assert_eq!(
        p.slow().copied(),
        Some(SlowReaders {
            count: 3,
            mode: SlowMode::Paced {
                read: 4096,
                every: Duration::from_millis(10),
            },
            rcvbuf: Some(8192),
        })
    );
    let p = plan(&["--slow-clients", "1", "--slow-rcvbuf", "0"]).expect("valid");
    assert_eq!(p.slow().and_then(|s| s.rcvbuf), None, "0: the kernel's own");
    let p = plan(&[
        "--slow-clients",
        "1",
        "--slow-read",
        "100",
        "--slow-every",
        "1s",
    ])
    .expect("valid");
    assert_eq!(
        p.slow().map(|s| s.mode),
        Some(SlowMode::Paced {
            read: 100,
            every: Duration::from_secs(1)
        })
    );
}

#[test]
fn slow_readers_pause_when_asked() {
    let p = plan(&[
        "--slow-clients",
        "2",
        "--slow-pause",
        "200ms",
        "--slow-pause-every",
        "300ms",
    ])
    .expect("valid");
    assert_eq!(
        p.slow().map(|s| s.mode),
        Some(SlowMode::Pausing {
            pause: Duration::from_millis(200),
            every: Duration::from_millis(300),
        })
    );
}

#[test]
fn slow_flags_are_checked() {
    let slow = |extra: &[&str]| {
        let mut argv = vec!["--slow-clients", "1"];
        argv.extend_from_slice(extra);
        refused(&argv)
    };
    // Without --slow-clients, a slow flag is a mistake, not a no-op.
    assert_eq!(refused(&["--slow-read", "100"]), "slow-read");
    assert_eq!(refused(&["--slow-rcvbuf", "100"]), "slow-rcvbuf");
    assert_eq!(refused(&["--slow-pause", "1s"]), "slow-pause");
    // The two modes do not mix, and a pause needs its period.
    let pausing = ["--slow-pause", "200ms", "--slow-pause-every", "300ms"];
    assert_eq!(
        slow(&[&pausing[..], &["--slow-read", "10"]].concat()),
        "slow-read"
    );
    assert_eq!(
        slow(&[&pausing[..], &["--slow-every", "1s"]].concat()),
        "slow-every"
    );
    assert_eq!(slow(&["--slow-pause", "200ms"]), "slow-pause-every");
    assert_eq!(slow(&["--slow-pause-every", "300ms"]), "slow-pause");
    assert_eq!(
        slow(&["--slow-pause", "300ms", "--slow-pause-every", "300ms"]),
        "slow-pause-every"
    );
    assert_eq!(
        slow(&["--slow-pause", "0s", "--slow-pause-every", "300ms"]),
        "slow-pause"
    );
    assert_eq!(slow(&["--slow-read", "0"]), "slow-read");
    assert_eq!(slow(&["--slow-read", "1048577"]), "slow-read");
    assert_eq!(slow(&["--slow-every", "0s"]), "slow-every");
    assert_eq!(slow(&["--slow-rcvbuf", "4294967296"]), "slow-rcvbuf");
}

#[test]
fn builder_takes_slow_readers() {
    let target: SocketAddr = "127.0.0.1:9001".parse().expect("addr");
    let none = Plan::builder(target)
        .slow_readers(SlowReaders::default())
        .build()
        .expect("valid");
    assert_eq!(none.slow(), None, "a count of 0 adds none");
    let refused = Plan::builder(target)
        .slow_readers(SlowReaders {
            count: 1,
            rcvbuf: Some(0),
            ..SlowReaders::default()
        })
        .build()
        .expect_err("refused");
    assert_eq!(refused.flag(), "slow-rcvbuf");
}

#[test]
fn tls_needs_a_ca_file_it_can_read() {
    assert!(
        plan(&[]).expect("valid").tls().is_none(),
        "plain by default"
    );
    assert!(
        Cli::try_parse_from(["load", "--tls"]).is_err(),
        "--tls without --tls-ca"
    );
    assert!(
        Cli::try_parse_from(["load", "--tls-ca", "ca.pem"]).is_err(),
        "--tls-ca without --tls"
    );
    assert_eq!(
        refused(&["--tls", "--tls-ca", "/nonexistent/ca.pem"]),
        "tls-ca"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "no certificate here\n").expect("write");
    let empty = empty.to_str().expect("utf-8");
    let e = plan(&["--tls", "--tls-ca", empty]).expect_err("no certificate");
    assert_eq!(e.flag(), "tls-ca");
    assert!(e.to_string().contains("no certificate"), "{e}");
    let builder = Plan::builder("127.0.0.1:9".parse::<SocketAddr>().expect("addr"));
    assert_eq!(
        builder
            .tls_ca("/nonexistent/ca.pem")
            .build()
            .expect_err("missing")
            .flag(),
        "tls-ca"
    );
}
