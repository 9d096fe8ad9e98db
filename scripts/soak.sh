#!/usr/bin/env bash
# Soak test of the release binary on loopback, one engine after another.
#
#   scripts/soak.sh                  # 10 minutes per engine (uring, then tokio)
#   scripts/soak.sh --minutes 30     # longer
#   scripts/soak.sh --quick          # about a minute for both engines
#   scripts/soak.sh --engines tokio  # one engine only ("uring tokio" for both)
#
# Builds the release binaries (cargo build --release --workspace), then runs
# the harness, target/release/ringcast-bench soak, with the same flags (the
# crate crates/ringcast-bench; `--help` below prints its own help too).
#
# For each engine it starts `ringcast serve --engine E` on 127.0.0.1 (ports
# read from --ready-file) with /metrics on, records the server's descriptor
# count and RSS, then runs at once:
#   - churn: short-lived connections (10,000, 2,000 with --quick) spread over
#     the run; each closes cleanly or resets (SO_LINGER 0), some after
#     reading a little;
#   - load: 50 clients, 5 publishers at 200 lines/s (the ringcast-load
#     library; every client reads everything and checks per-publisher order);
#   - one stalled client: connected with a small SO_RCVBUF, never reads (the
#     server waits at most --grace once per episode, then drops);
#   - RSS sampled every few seconds.
# Then a controlled phase for the counters, and SIGTERM.
#
# One PASS/FAIL line per property; exit status 1 if any FAIL:
#   engine     the ready file names the engine asked for
#   delivery   the load saw loss 0, order_violations 0, malformed 0
#   churn      every churn connect succeeded (at most 1% may fail)
#   stalled    the stalled client really stalled: messages were dropped for it
#   gauge      ringcast_connected_clients returns to 0 once everyone left
#   fds        the server's descriptor count returns to its starting value
#              (waits up to 10 s)
#   rss        RSS flat after warm-up: last sample <= 1.2 x the sample at 25%
#              of the run + 8 MiB
#   counters   sent + dropped == received x K over a controlled phase: with
#              nothing else connected, K = 20 clients connect; once the gauge
#              shows all K, scrape; 4 of them publish N lines each while all
#              K read everything (checking per-publisher order); they close;
#              poll up to 5 s until Δsent + Δdropped == Δreceived x K with
#              Δreceived == 4 x N (a writer counts its last write just after
#              it completes). During the main phase the identity cannot hold:
#              each message's receivers are whoever was registered then, and
#              lines queued for a client that left are neither sent nor
#              dropped.
#   exit       SIGTERM makes the server exit 0
#   panic      (only when it fails) the server's log shows a panic
#
# Needs: cargo. Traffic stays on 127.0.0.1; every loop is bounded in count
# and time; the harness kills whatever it started on every way out.

set -euo pipefail
cd "$(dirname "$0")/.."

HARNESS=target/release/ringcast-bench

for arg in "$@"; do
    case "$arg" in
    -h | --help)
        sed -n '2,/^$/s/^# \{0,1\}//p' "$0"
        if [[ -x "$HARNESS" ]]; then
            echo
            "$HARNESS" soak --help
        else
            echo "(for the harness's own help, build it first: cargo build --release --workspace)"
        fi
        exit 0
        ;;
    esac
done

command -v cargo >/dev/null || {
    echo "soak.sh: cargo not found" >&2
    exit 2
}

echo "building release binaries..."
cargo build --release --quiet --workspace

exec "$HARNESS" soak "$@"
