use super::*;

#[test]
fn fixed_rates_offer_the_total() {
    assert_eq!(fixed_rate(1_000_000, 10, 1000), 100);
    assert_eq!(fixed_rate(1_000_000, 10, 10), 10_000);
    assert_eq!(fixed_rate(250_000, 10, 100), 250);
    assert_eq!(fixed_rate(10, 10, 1000), 1, "never 0");
}

#[test]
fn quick_is_smaller() {
    let args = |quick| BenchArgs {
        quick,
        cluster: false,
        rounds: 3,
        nc_listeners: None,
        out: None,
        scenarios: Vec::new(),
        server_bin: None,
        textbook_bin: None,
    };
    let full = Settings::from_args(&args(false));
    let quick = Settings::from_args(&args(true));
    assert_eq!(full.clients, [10, 100, 1000]);
    assert_eq!(full.sizes, [64, 1024]);
    assert_eq!(quick.clients, [10, 1000]);
    assert_eq!(quick.nc_listeners, 20);
    assert_eq!(quick.quiet_budget, Duration::ZERO);
    assert_eq!(quick.retries, 0);
    assert_eq!(full.retries, 1);
    assert_eq!(full.publishers(1000), 10);
    assert_eq!(full.publishers(3), 3);
    assert_eq!(full.fixed_deliveries(1024), 250_000);
    assert_eq!((quick.flood_clients, quick.flood_size), (1000, 64));
    assert_eq!(full.flood_clients, quick.flood_clients, "in both");
    assert_eq!((full.flood_rounds, quick.flood_rounds), (3, 1));
    assert!(full.runs(ScenarioArg::Swarm));
    assert!(full.runs(ScenarioArg::Tls));
    assert_eq!(
        (full.tls_sizes.as_slice(), quick.tls_sizes.as_slice()),
        (&[64, 1024][..], &[64][..])
    );
    assert_eq!((full.tls_rounds, quick.tls_rounds), (3, 1));
    assert!(
        quick.tls_duration <= Duration::from_secs(1),
        "a second or two in all"
    );
}
