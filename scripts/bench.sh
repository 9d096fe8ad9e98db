#!/usr/bin/env bash
# Benchmarks ringcast's two engines, uring and tokio, on this machine, with
# a textbook tokio server (examples/textbook.rs) as a second baseline.
#
# Usage: scripts/bench.sh [--quick] [--cluster] [--rounds N] [--nc-listeners N]
#                         [--out DIR] [--scenarios LIST]
#
# Builds the release binaries and examples (cargo build --release --workspace
# --bins --examples), then runs the harness, target/release/ringcast-bench
# bench, with the same flags. The harness is the crate crates/ringcast-bench;
# `--help` below prints its own help too, which describes every scenario,
# flag and file in full.
#
# It starts `ringcast serve` for each engine, and the textbook server, on free
# loopback ports (side by side, ports read from --ready-file), then for each
# engine:
#   1. idle memory: 10,000 idle connections; server RSS growth per connection;
#   2. netcat swarm: N `nc` listeners (--nc-listeners, default 100) and 3 `nc`
#      publishers; the time until every listener has every line;
#   3. load matrix (the ringcast-load library), against the textbook server
#      too: clients {10,100,1000} x line size {64,1024}, at saturation
#      (--rounds times each, default 3, servers alternating; median and range
#      of per-round ratios) and at a fixed offered load (1,000,000
#      deliveries/s at 64 B, 250,000/s at 1 KiB); then the flood cell, 1000
#      clients x 64 B, one publisher with no window (--paced-by none). Every
#      load cell reports the server's CPU per delivery beside delivered/s:
#      its CPU (/proc/PID/stat) over the same interval (start of publishing
#      to last delivery), in raw.csv's server_cpu_ns_per_delivery and
#      server_cpu_measured_s;
#   4. slow readers: 50 fast readers, 5 publishers at 2,000 lines/s of 200 B,
#      alone and then beside each kind of slow client in turn (4 KiB every 3,
#      5 or 30 ms; five every 10 ms; one pausing 200 ms every 300 ms; 100
#      slow among 200), judged against the reference run;
#   5. TLS: per engine a server with a test certificate (made into the
#      results folder) serving TLS beside plain TCP (--plain-listen); 100
#      clients x {64,1024} B at a fixed 200,000 deliveries/s, each run once
#      plain and once with every client over TLS; delivered/s and the
#      server's CPU per delivery of each, and their TLS/plain ratios;
# then stops the servers with SIGTERM and checks they exit 0.
#
# The full run waits (2 minutes at most in all) for other processes to go
# quiet before each cell and runs a cell again once if they took more than
# 0.3 cores during it. --quick is a smoke test for CI (about two minutes):
# shorter cells, fewer of them, the flood cell once, no waiting, no reruns.
#
# Results go to bench-results/<date>-<host>/ (or --out DIR): setup.txt,
# raw.csv, summary.md (printed at the end; uring/tokio and uring/textbook
# ratios of delivered/s and of CPU per delivery, targets reported but not
# enforced) and delivered_vs_clients*.svg. Exit status 1 if something went
# wrong during the run (listed in summary.md).
#
# --cluster runs instead a single-node vs cross-node comparison on two
# clustered uring nodes and a nats-server of its own (clients {100,1000} x
# 64 B, fixed load and saturation); combine with --quick for shorter cells.
# --scenarios idle,swarm,matrix,slow-readers,tls runs only those.
#
# A/B of two builds is the harness's other subcommand, after this script
# has built it:
#   target/release/ringcast-bench ab --old OLD/ringcast --new target/release/ringcast \
#       [--rounds N] [--cells 1000:64:max:3s,...] [--engines uring,tokio] [--out DIR]
# (target/release/ringcast-bench ab --help says more.)
#
# Needs: cargo, nc (netcat-openbsd); for --cluster, nats-server
# (apt-get install -y nats-server). The server and the load generator share
# this machine's cores, so the numbers are for the pair.

set -euo pipefail
cd "$(dirname "$0")/.."

HARNESS=target/release/ringcast-bench

usage() { sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; }

for arg in "$@"; do
    case "$arg" in
    -h | --help)
        usage
        if [[ -x "$HARNESS" ]]; then
            echo
            "$HARNESS" bench --help
        else
            echo "(for the harness's own help, build it first: cargo build --release --workspace --bins --examples)"
        fi
        exit 0
        ;;
    esac
done

command -v cargo >/dev/null || {
    echo "bench.sh: cargo not found" >&2
    exit 1
}

echo "bench.sh: building (cargo build --release --workspace --bins --examples)" >&2
cargo build --release --quiet --workspace --bins --examples

# exec: the harness gets the signals itself, and kills its children on them.
exec "$HARNESS" bench "$@"
