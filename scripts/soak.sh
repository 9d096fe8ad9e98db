#!/usr/bin/env bash
# Soak test of the release binary on loopback, one engine after another.
#
#   scripts/soak.sh                  # 10 minutes per engine (uring, then tokio)
#   scripts/soak.sh --minutes 30     # longer
#   scripts/soak.sh --quick          # about a minute for both engines
#   scripts/soak.sh --engines tokio  # one engine only
#
# For each engine it starts `ringcast serve --engine E` on 127.0.0.1 (ports
# chosen by the kernel, read back from the server's log) with /metrics on,
# records the server's descriptor count and RSS, then runs at once:
#   - churn: short-lived connections (10,000 by default, 2,000 with --quick),
#     spread over the run; each either closes cleanly or resets (SO_LINGER 0),
#     some after reading a little;
#   - load: `ringcast load --clients 50 --publishers 5 --rate 200 --json`
#     (every one of its clients reads everything and checks per-publisher
#     order);
#   - one stalled client: connected with a small SO_RCVBUF, never reads;
#   - RSS sampled every few seconds.
# Then a controlled phase for the counters (see below), and SIGTERM.
#
# One PASS/FAIL line per property; exit status 1 if any FAIL:
#   engine     the serving line names the engine asked for
#   delivery   the load generator saw loss 0, order_violations 0, malformed 0
#   churn      every churn connect succeeded (at most 1% may fail)
#   stalled    the stalled client really stalled: messages were dropped for it
#   gauge      ringcast_connected_clients returns to 0 once everyone left
#   fds        the server's descriptor count returns to its starting value
#              (waits up to 10 s)
#   rss        RSS flat after warm-up: last sample <= 1.2 x the sample at 25%
#              of the run + 8 MiB
#   counters   sent + dropped == received x K over a controlled phase. During
#              the main phase the receivers of each message are whoever was
#              registered at that instant, which no scrape can observe, and
#              messages queued for a client that disconnects are neither sent
#              nor dropped, so the identity only holds for a fixed set of
#              clients that all read everything. So, with churn, load and the
#              stalled client gone and the gauge at 0: K clients connect; once
#              the gauge shows all K registered, scrape; P of them publish N
#              lines each while all K read everything (checking per-publisher
#              order); they close; poll for up to 5 s (a writer counts its last
#              write just after it completes, which may be after its client's
#              disconnect was registered) until the deltas satisfy
#              Δsent + Δdropped == Δreceived × K with Δreceived == P × N.
#              (`ringcast load` is not used here: it broadcasts warm-up lines
#              until all its clients have seen one, while some of them may not
#              be registered yet, so those lines reach fewer than K.)
#   exit       SIGTERM makes the server exit 0
#
# Needs: cargo, python3, curl. Traffic stays on 127.0.0.1; every loop is
# bounded in count and time; the EXIT trap kills whatever is still running.
# shellcheck disable=SC2317,SC2012 # functions run via wait_until and trap; /proc fd names are numbers
set -euo pipefail

MINUTES=10
QUICK=0
ENGINES="uring tokio"
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) MINUTES="$2"; shift 2 ;;
        --quick) QUICK=1; shift ;;
        --engines) ENGINES="$2"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "soak.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done

if [ "$QUICK" = 1 ]; then
    MAIN_S=18        # main phase per engine; with start, checks and the
    CHURN=2000       # controlled phase, about 30 s per engine
    PHASE_LINES=500
    SAMPLE_S=1
else
    MAIN_S=$((MINUTES * 60))
    CHURN=10000
    PHASE_LINES=5000
    SAMPLE_S=5
fi
LOAD_CLIENTS=50
LOAD_PUBLISHERS=5
LOAD_RATE=200
K=20             # clients of the controlled phase
K_PUBLISHERS=4   # of them publishing PHASE_LINES lines each

cd "$(dirname "$0")/.."
for tool in python3 curl; do
    command -v "$tool" >/dev/null || { echo "soak.sh: needs $tool" >&2; exit 2; }
done
echo "building release binary..."
cargo build --release --quiet --bin ringcast
BIN=target/release/ringcast

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

# Clients written in Python: churn and the stalled client.
cat >"$WORK/clients.py" <<'PY'
import random, socket, struct, sys, time

def churn(host, port, cycles, seconds, seed):
    """`cycles` connect/disconnect cycles spread over `seconds`."""
    rng = random.Random(seed)
    start = time.monotonic()
    failures = 0
    for i in range(cycles):
        # Pace to finish on time; never faster than the schedule.
        due = start + seconds * i / cycles
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        try:
            s = socket.create_connection((host, port), timeout=5)
        except OSError:
            failures += 1
            continue
        try:
            if rng.random() < 0.3:
                s.settimeout(0.05)
                try:
                    s.recv(1024)
                except OSError:
                    pass
            if rng.random() < 0.5:
                # RST instead of FIN.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        finally:
            s.close()
    print(f"churn: {cycles} cycles, {failures} failed connects", flush=True)
    sys.exit(1 if failures > cycles // 100 else 0)

def stall(host, port, seconds):
    """Connects with a tiny receive buffer and never reads, for `seconds`."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((host, port))
    time.sleep(seconds)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()

def scrape(metrics):
    import urllib.request
    body = urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5).read().decode()
    return {l.split()[0]: int(l.split()[1]) for l in body.splitlines()
            if l.startswith("ringcast_") and len(l.split()) == 2}

def wait_metric(metrics, check, seconds):
    deadline = time.monotonic() + seconds
    while True:
        m = scrape(metrics)
        if check(m) or time.monotonic() > deadline:
            return m
        time.sleep(0.05)

def phase(host, port, metrics, k, publishers, lines):
    """Counter identity for a fixed set of k clients that all read everything."""
    import selectors
    def fail(why):
        print(f"FAIL {why}", flush=True)
        sys.exit(1)
    if wait_metric(metrics, lambda m: m["ringcast_connected_clients"] == 0, 10)["ringcast_connected_clients"]:
        fail("clients still connected before the phase")
    socks = [socket.create_connection((host, port), timeout=5) for _ in range(k)]
    # Only once the server has registered all k is the set of receivers fixed.
    if wait_metric(metrics, lambda m: m["ringcast_connected_clients"] == k, 10)["ringcast_connected_clients"] != k:
        fail(f"the server did not register {k} clients")
    before = scrape(metrics)
    sel = selectors.DefaultSelector()
    out = {}
    for i, s in enumerate(socks):
        s.setblocking(False)
        if i < publishers:
            out[i] = b"".join(b"p%d %d %s\n" % (i, n, b"x" * 40) for n in range(lines))
        sel.register(s, selectors.EVENT_READ | (selectors.EVENT_WRITE if i in out else 0), i)
    want = publishers * lines
    got = [0] * k
    partial = [b""] * k
    nexts = [[0] * publishers for _ in range(k)]
    deadline = time.monotonic() + 60
    while min(got) < want:
        if time.monotonic() > deadline:
            fail(f"timed out: clients got {min(got)}..{max(got)} of {want} lines")
        for key, events in sel.select(timeout=1):
            i, s = key.data, key.fileobj
            if events & selectors.EVENT_WRITE and out.get(i):
                try:
                    n = s.send(out[i][:65536])
                except BlockingIOError:
                    n = 0
                out[i] = out[i][n:]
                if not out[i]:
                    sel.modify(s, selectors.EVENT_READ, i)
            if events & selectors.EVENT_READ:
                try:
                    data = s.recv(1 << 20)
                except BlockingIOError:
                    continue
                if not data:
                    fail(f"client {i} closed by the server")
                buf = partial[i] + data
                *complete, partial[i] = buf.split(b"\n")
                for line in complete:
                    p, seq = line.split(b" ")[:2]
                    p, seq = int(p[1:]), int(seq)
                    if seq != nexts[i][p]:
                        fail(f"client {i}: publisher {p} line {seq}, expected {nexts[i][p]}")
                    nexts[i][p] += 1
                    got[i] += 1
    for s in socks:
        s.close()
    def balanced(m):
        d = {n: m[n] - before[n] for n in before}
        return (d["ringcast_connected_clients"] == -k and
                d["ringcast_messages_sent_total"] + d["ringcast_messages_dropped_total"]
                == d["ringcast_messages_received_total"] * k)
    # Writers count a write just after it completes, which may be after the
    # client's disconnect was registered: poll for a few seconds.
    after = wait_metric(metrics, balanced, 5)
    d = {n: after[n] - before[n] for n in before}
    r, sent, dropped = (d["ringcast_messages_received_total"], d["ringcast_messages_sent_total"],
                        d["ringcast_messages_dropped_total"])
    ok = balanced(after) and r == want
    print(f"{'PASS' if ok else 'FAIL'} K={k}: received {r} (published {want}) x {k} = {r * k}, "
          f"sent {sent} + dropped {dropped} = {sent + dropped}; every client got all {want} lines in order",
          flush=True)
    sys.exit(0 if ok else 1)

if __name__ == "__main__":
    cmd, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if cmd == "churn":
        churn(host, port, int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]))
    elif cmd == "stall":
        stall(host, port, float(sys.argv[4]))
    elif cmd == "phase":
        phase(host, port, sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]))
PY

FAILED=0
result() { # result ENGINE NAME OK DETAIL
    if [ "$3" = 1 ]; then
        printf 'PASS %-6s %-9s %s\n' "$1" "$2" "$4"
    else
        printf 'FAIL %-6s %-9s %s\n' "$1" "$2" "$4"
        FAILED=1
    fi
}

scrape() { curl -fsS --max-time 5 "http://$METRICS/metrics"; }
metric() { # metric NAME [SCRAPE]: value of one metric
    local body="${2:-$(scrape)}"
    awk -v n="$1" '$1 == n { print $2 }' <<<"$body"
}
fds() { ls "/proc/$SERVER/fd" | wc -l; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$SERVER/status"; }
json_field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

# wait_until SECONDS COMMAND...: polls COMMAND every 0.1 s; false on timeout.
wait_until() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ $SECONDS -lt "$deadline" ] || return 1
        sleep 0.1
    done
}
# True once process $1 has exited (a zombie not yet waited for counts).
exited() {
    local state
    state=$(awk '/^State:/ { print $2 }' "/proc/$1/status" 2>/dev/null || true)
    [ -z "$state" ] || [ "$state" = Z ]
}
gauge_is_zero() { [ "$(metric ringcast_connected_clients)" = 0 ]; }
fds_back() { [ "$(fds)" -le "$FDS_START" ]; }

soak_engine() {
    local engine=$1 ok
    local log="$WORK/server-$engine.log"
    echo "== $engine: ${MAIN_S}s main phase, $CHURN churn cycles, then a controlled phase of $K clients"
    "$BIN" serve --engine "$engine" --listen 127.0.0.1:0 --metrics 127.0.0.1:0 --log info \
        2>"$log" &
    SERVER=$!
    PIDS+=("$SERVER")
    if ! wait_until 10 grep -q ' serving ' "$log"; then
        result "$engine" engine 0 "server did not start: $(tr '\n' ' ' <"$log")"
        return
    fi
    local addr port
    addr=$(grep ' serving ' "$log" | sed -n 's/.*addr=\([^ ]*\).*/\1/p' | head -1)
    METRICS=$(grep 'metrics at' "$log" | sed -n 's/.*addr=\([^ ]*\).*/\1/p' | head -1)
    port=${addr##*:}
    if grep ' serving ' "$log" | grep -q "engine=\"$engine\""; then
        result "$engine" engine 1 "serving on $addr, metrics on $METRICS"
    else
        result "$engine" engine 0 "$(grep ' serving ' "$log")"
    fi

    FDS_START=$(fds)
    local rss_start
    rss_start=$(rss_kib)
    echo "   start: $FDS_START descriptors, RSS $rss_start KiB"

    # Main phase: load, churn and a stalled client at once, RSS sampled.
    local samples="$WORK/rss-$engine"
    : >"$samples"
    (
        end=$((SECONDS + MAIN_S + 15))
        while [ $SECONDS -lt $end ] && ! exited "$SERVER"; do
            awk '/^VmRSS:/ { print $2 }' "/proc/$SERVER/status" >>"$samples" 2>/dev/null || true
            sleep "$SAMPLE_S"
        done
    ) &
    local sampler=$!
    PIDS+=("$sampler")
    # Killed once the load generator is done (at most MAIN_S + 60 s).
    python3 "$WORK/clients.py" stall 127.0.0.1 "$port" "$((MAIN_S + 60))" &
    local stalled=$!
    PIDS+=("$stalled")
    python3 "$WORK/clients.py" churn 127.0.0.1 "$port" "$CHURN" "$MAIN_S" 7 \
        >"$WORK/churn-$engine.out" 2>&1 &
    local churner=$!
    PIDS+=("$churner")
    local report="$WORK/load-$engine.json"
    local load_ok=1
    "$BIN" load --connect "$addr" --clients "$LOAD_CLIENTS" --publishers "$LOAD_PUBLISHERS" \
        --rate "$LOAD_RATE" --duration "${MAIN_S}s" --json >"$report" 2>"$WORK/load-$engine.err" ||
        load_ok=0
    local churn_ok=1
    wait "$churner" || churn_ok=0
    # The stalled client leaves with unread data: its kernel sends RST.
    kill "$stalled" "$sampler" 2>/dev/null || true
    wait "$stalled" "$sampler" 2>/dev/null || true

    if [ "$load_ok" = 1 ]; then
        local loss order malformed published delivered ended
        loss=$(json_field "$report" loss)
        order=$(json_field "$report" order_violations)
        malformed=$(json_field "$report" malformed)
        published=$(json_field "$report" published)
        delivered=$(json_field "$report" delivered)
        ended=$(json_field "$report" ended)
        [ "$loss" = 0 ] && [ "$order" = 0 ] && [ "$malformed" = 0 ] && [ "$published" -gt 0 ] &&
            ok=1 || ok=0
        result "$engine" delivery "$ok" "published $published, delivered $delivered to $LOAD_CLIENTS readers, loss $loss, order_violations $order, malformed $malformed, ended $ended"
    else
        result "$engine" delivery 0 "ringcast load failed: $(tr '\n' ' ' <"$WORK/load-$engine.err")"
    fi
    result "$engine" churn "$churn_ok" "$(tr '\n' ' ' <"$WORK/churn-$engine.out")"
    local dropped
    dropped=$(metric ringcast_messages_dropped_total)
    [ "${dropped:-0}" -gt 0 ] && ok=1 || ok=0
    result "$engine" stalled "$ok" "$dropped messages dropped for the stalled client (and churners), none for the fast readers"

    # Everyone has left: the gauge and the descriptors come back.
    if wait_until 10 gauge_is_zero; then
        result "$engine" gauge 1 "connected_clients back to 0 ($(metric ringcast_connections_accepted_total) accepted in all)"
    else
        result "$engine" gauge 0 "connected_clients is $(metric ringcast_connected_clients) after everyone left"
    fi
    if wait_until 10 fds_back; then
        result "$engine" fds 1 "$(fds) descriptors, $FDS_START at start"
    else
        result "$engine" fds 0 "$(fds) descriptors after 10 s, $FDS_START at start: $(ls -l "/proc/$SERVER/fd" | awk 'NR > 1 { print $NF }' | sort | uniq -c | tr '\n' ' ')"
    fi

    local n quarter last
    n=$(wc -l <"$samples")
    if [ "$n" -ge 4 ]; then
        quarter=$(sed -n "$((n / 4 + 1))p" "$samples")
        last=$(tail -1 "$samples")
        local limit=$((quarter * 12 / 10 + 8192))
        [ "$last" -le "$limit" ] && ok=1 || ok=0
        result "$engine" rss "$ok" "$n samples: start $rss_start KiB, at 25% $quarter KiB, last $last KiB (limit $limit KiB), peak $(sort -n "$samples" | tail -1) KiB"
    else
        result "$engine" rss 0 "only $n RSS samples"
    fi

    # Controlled phase: K clients, nothing else connected.
    local phase_out ok=1
    phase_out=$(python3 "$WORK/clients.py" phase 127.0.0.1 "$port" "$METRICS" "$K" "$K_PUBLISHERS" \
        "$PHASE_LINES" 2>&1) || ok=0
    result "$engine" counters "$ok" "${phase_out#PASS }"

    # Clean exit on SIGTERM.
    kill -TERM "$SERVER"
    local status=0
    if wait_until 10 exited "$SERVER"; then
        wait "$SERVER" || status=$?
        [ "$status" = 0 ] && ok=1 || ok=0
        result "$engine" exit "$ok" "SIGTERM: exit status $status"
    else
        result "$engine" exit 0 "still running 10 s after SIGTERM"
    fi
    if grep -q 'panicked' "$log"; then
        result "$engine" panic 0 "$(grep -m1 panicked "$log")"
    fi
}

for engine in $ENGINES; do
    soak_engine "$engine"
done
if [ "$FAILED" = 0 ]; then
    echo "soak: all properties held"
else
    echo "soak: FAILED"
fi
exit "$FAILED"
