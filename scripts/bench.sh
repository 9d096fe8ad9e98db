#!/usr/bin/env bash
# Benchmarks ringcast's two engines, uring and tokio, on this machine, with
# a textbook tokio server (examples/textbook.rs) as a second baseline.
#
# Usage: scripts/bench.sh [--quick] [--cluster] [--rounds N] [--nc-listeners N]
#                         [--out DIR] [--scenarios LIST]
#
# Builds the release binaries and examples (cargo build --release --workspace
# --bins --examples), then runs the harness, target/release/ringcast-bench
# bench, with the same flags (the crate crates/ringcast-bench).
#
# What it runs (the scenarios, their cells and numbers, --quick, the
# files it writes and the targets) is described once, in the harness's
# help, which `scripts/bench.sh --help` prints after this text.
# `--quick` is the smoke test CI runs (about two minutes).
#
# A/B of two builds is the harness's other subcommand, after this script
# has built it (target/release/ringcast-bench ab --help says how):
#   target/release/ringcast-bench ab --old OLD/ringcast --new target/release/ringcast
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
