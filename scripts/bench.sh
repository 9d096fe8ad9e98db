#!/usr/bin/env bash
# Benchmarks ringcast's two engines, uring and tokio, on this machine.
#
# Usage: scripts/bench.sh [--quick] [--cluster] [--rounds N] [--nc-listeners N] [--out DIR]
#
# It starts `ringcast serve` for each engine on a free loopback port (both
# run side by side; an idle server costs nothing), then for each engine:
#   1. idle memory: opens many idle connections (python3) and reports the
#      server's resident memory per connection (VmRSS after - before) / N;
#   2. netcat swarm: N `nc` listeners and 3 `nc` publishers; the time until
#      every listener has every line;
#   3. load-generator matrix (`ringcast load --json`): clients {10,100,1000}
#      x line size {64,1024}, at saturation (--rate max, closed loop)
#      and once at a fixed offered load of 1,000,000 deliveries/s for 64-byte
#      lines (250,000/s for 1024-byte lines) that both engines should carry
#      without loss; the engines take turns cell by cell;
#      each saturation cell runs --rounds times (default 3; --cluster
#      ignores it), and the summary reports each engine's median run and the
#      range of the per-round ratios: one run's ratio moves by 20 % or more;
# then stops the servers with SIGTERM and checks they exit 0.
#
# On a shared machine, the full run waits (2 minutes at most in all) for
# other processes to go quiet before each cell, and runs a cell again once
# if they took more than 0.3 cores during it; raw.csv records what they took
# (other_cpu_cores).
#
# Results go to bench-results/<date>-<host>/: setup.txt, raw.csv (one row per
# engine x scenario x round), summary.md (printed at the end) and SVG charts of
# delivered/s against clients. --quick is a smoke test for CI (under a
# minute); the full run takes a few minutes.
#
# --cluster runs, instead of all that, a single-node vs cross-node
# comparison: it starts its own nats-server on a loopback port and two
# `ringcast serve --engine uring --cluster nats://...` nodes, A and B (node
# ids bench-a, bench-b), waits until both report ringcast_cluster_connected
# 1, then runs clients {100,1000} x 64 B with 10 publishers, at a fixed
# offered load (1,000,000 deliveries/s: 100 clients x 10 x 1000 lines/s,
# 1000 clients x 10 x 100 lines/s) and at saturation (--rate max), each
# cell twice: "cluster-single" (every client on node A) and "cluster-cross"
# (`ringcast load --connect A,B`: client i on node i mod 2, so publishers
# and readers are split over the nodes and half of every line's deliveries
# cross NATS). summary.md gets a table of delivered/s, loss and p99 side by
# side with cross/single ratios; raw.csv one row per cell (server_cpu_* and
# server_dropped summed over both nodes, server_dropped including lines the
# bridges could not forward). Combine with --quick for shorter cells.
#
# Needs: cargo, python3, nc (netcat-openbsd), setsid (util-linux); for
# --cluster, nats-server (apt-get install -y nats-server).
# The server and the load generator share this machine's cores, so the
# numbers are for the pair; setup.txt records what else was running.

set -euo pipefail

QUICK=0
CLUSTER=0
NC_LISTENERS=""
ROUNDS=""
OUT=""
usage() { sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; }
while (($#)); do
    case "$1" in
    --quick) QUICK=1 ;;
    --cluster) CLUSTER=1 ;;
    --nc-listeners)
        NC_LISTENERS="${2:?--nc-listeners needs a number}"
        shift
        ;;
    --rounds)
        ROUNDS="${2:?--rounds needs a number}"
        shift
        ;;
    --out)
        OUT="${2:?--out needs a directory}"
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        echo "bench.sh: unknown option $1 (try --help)" >&2
        exit 2
        ;;
    esac
    shift
done

# ---------------------------------------------------------------- settings
ENGINES=(uring tokio)
SIZES=(64 1024)
LOAD_THREADS=2
if ((QUICK)); then
    CLIENTS=(10 1000)
    SIZES=(64)
    DURATION=1
    IDLE_CLIENTS=2000
    : "${NC_LISTENERS:=20}"
    NC_LINES=500
    SWARM_TIMEOUT=20
else
    CLIENTS=(10 100 1000)
    DURATION=5
    IDLE_CLIENTS=10000
    : "${NC_LISTENERS:=100}"
    NC_LINES=2000
    SWARM_TIMEOUT=60
fi
NC_PUBLISHERS=3
: "${ROUNDS:=3}"
# A cell during which other processes used more than BUSY_CORES cores is run
# again once (RETRIES=1); before each cell the script waits for the machine
# to be quiet, QUIET_BUDGET seconds at most over the whole run. --quick does
# neither: it is a smoke test.
BUSY_CORES=0.3
QUIET_BUDGET=120
RETRIES=1
if ((QUICK)); then
    QUIET_BUDGET=0
    RETRIES=0
fi
# Fixed-rate cells offer this many deliveries per second in total
# (publishers x lines/s x clients), whatever the number of clients.
FIXED_DELIVERIES_64=1000000
FIXED_DELIVERIES_1024=250000
MAX_PUBLISHERS=10
SERVE_FLAGS=(--log info)
# --cluster: clients per cell, all 64-byte lines.
CLUSTER_CLIENTS=(100 1000)
SUMMARY=summary
((CLUSTER)) && SUMMARY=cluster-summary

if ! [[ "$NC_LISTENERS" =~ ^[1-9][0-9]*$ ]]; then
    echo "bench.sh: --nc-listeners must be a positive whole number" >&2
    exit 2
fi
if ! [[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]]; then
    echo "bench.sh: --rounds must be a positive whole number" >&2
    exit 2
fi

# ------------------------------------------------------------------ checks
cd "$(dirname "$0")/.."
ROOT=$(pwd)
for tool in cargo python3 setsid timeout; do
    command -v "$tool" >/dev/null || {
        echo "bench.sh: $tool not found" >&2
        exit 1
    }
done
NATS_SERVER=""
if ((CLUSTER)); then
    # Debian installs it in /usr/sbin, which may not be on PATH.
    NATS_SERVER=$(command -v nats-server || true)
    [[ -z "$NATS_SERVER" && -x /usr/sbin/nats-server ]] && NATS_SERVER=/usr/sbin/nats-server
    if [[ -z "$NATS_SERVER" ]]; then
        echo "bench.sh: --cluster needs nats-server, which is not installed; install it: apt-get install -y nats-server" >&2
        exit 1
    fi
fi
if ! command -v nc >/dev/null || ! nc -h 2>&1 | grep -q OpenBSD; then
    echo "bench.sh: needs OpenBSD netcat (nc); install it: apt-get install -y netcat-openbsd" >&2
    exit 1
fi

# Every connection is a file descriptor, in the server and in the client.
FD_NEEDED=$((IDLE_CLIENTS + 1000))
((FD_NEEDED < 3000)) && FD_NEEDED=3000
FD_HARD=$(ulimit -Hn)
FD_WANT=30000
if [[ "$FD_HARD" != unlimited ]] && ((FD_HARD < FD_WANT)); then
    FD_WANT=$FD_HARD
fi
ulimit -n "$FD_WANT" 2>/dev/null || true
FD_GOT=$(ulimit -n)
if [[ "$FD_GOT" != unlimited ]] && ((FD_GOT < FD_NEEDED)); then
    echo "bench.sh: the open-files limit is $FD_GOT (hard limit $FD_HARD) but this run needs $FD_NEEDED;" >&2
    echo "          raise the hard limit (e.g. in /etc/security/limits.conf, or run as root) and retry" >&2
    exit 1
fi

# ------------------------------------------------------------- bookkeeping
T0=$EPOCHREALTIME
STAMP="$(date +%Y-%m-%d-%H%M%S)-$(hostname -s 2>/dev/null || hostname)"
((QUICK)) && STAMP="$STAMP-quick"
((CLUSTER)) && STAMP="$STAMP-cluster"
: "${OUT:=$ROOT/bench-results/$STAMP}"
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ringcast-bench.XXXXXX")
RAW="$OUT/raw.csv"
PROBLEMS="$WORK/problems.txt"
: >"$PROBLEMS"
PIDS=()   # plain children, killed by pid
GROUPS_=() # process groups (setsid), killed by group

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local p
    for p in "${GROUPS_[@]}"; do
        kill -- "-$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    sleep 0.2
    for p in "${GROUPS_[@]}"; do
        kill -9 -- "-$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        kill -9 "$p" 2>/dev/null || true
    done
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

elapsed_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }'; }
say() { printf '[%6ss] %s\n' "$(elapsed_since "$T0")" "$*" >&2; }
problem() {
    say "PROBLEM: $*"
    echo "$*" >>"$PROBLEMS"
}

# A small python helper: metrics, idle sockets, CSV rows, the summary.
cat >"$WORK/helper.py" <<'PY'
import json, os, socket, sys, time, urllib.request

COLUMNS = ("engine scenario round clients publishers size rate window duration_s "
           "published delivered expected loss loss_ratio delivered_per_s mb_per_s "
           "publish_delivered_per_s p50_us p99_us p999_us elapsed_s drain_s ended "
           "order_violations malformed published_min published_max load_cpu_s "
           "load_cpu_cores server_cpu_s server_cpu_cores machine_cpu_cores other_cpu_cores server_dropped "
           "lines_expected lines_min lines_max content_ok "
           "rss_before_kb rss_after_kb bytes_per_conn").split()

def metric(url, name):
    try:
        r = urllib.request.urlopen(url, timeout=2)
    except OSError as e:
        raise SystemExit(f"cannot read {url}: {e}")
    with r:
        for line in r.read().decode().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == name:
                return float(parts[1])
    raise SystemExit(f"no metric {name} at {url}")

def cmd_metric(url, name):
    print(int(metric(url, name)))

def cmd_wait_metric(url, name, op, value, timeout):
    value, deadline, last = float(value), time.time() + float(timeout), None
    while time.time() < deadline:
        try:
            last = metric(url, name)
            if (op == "eq" and last == value) or (op == "ge" and last >= value):
                return
        except (OSError, SystemExit):
            pass
        time.sleep(0.05)
    raise SystemExit(f"{name} is {last}, not {op} {value}, after {timeout} s")

def cmd_idle(port, n, ready, hold):
    """Opens n idle connections, writes `ready`, holds them `hold` seconds."""
    socks = []
    for _ in range(int(n)):
        s = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
        socks.append(s)
    with open(ready, "w") as f:
        f.write(f"{len(socks)}\n")
    time.sleep(float(hold))

def cmd_swarm_check(expected, *files):
    """Line counts per listener, and whether each got every publisher's
    lines complete and in order."""
    counts, ok = [], True
    want = {}
    for f in files:
        with open(f, "rb") as fh:
            lines = fh.read().split(b"\n")[:-1]
        counts.append(len(lines))
        by_pub = {}
        for line in lines:
            by_pub.setdefault(line.split(b" ", 1)[0], []).append(line)
        if not want:
            want = {k: len(v) for k, v in by_pub.items()}
        for pub, got in by_pub.items():
            seqs = [int(l.split(b" ")[1]) for l in got]
            if seqs != list(range(len(seqs))):
                ok = False
        if len(lines) != int(expected):
            ok = False
    print(min(counts), max(counts), "yes" if ok else "no")

def cmd_row(raw, *pairs):
    """Appends one CSV row: key=value pairs, and json=FILE for a load report."""
    row = {}
    for p in pairs:
        k, v = p.split("=", 1)
        if k == "json":
            with open(v) as f:
                d = json.load(f)
            lat = d.pop("latency_us", {}) or {}
            for q in ("p50", "p99", "p999"):
                row[f"{q}_us"] = lat.get(q)
            row.update(d)
        else:
            row[k] = v
    if "server_ticks" in row:
        # Server and whole-machine CPU over the cell's wall time.
        tck, wall = int(row.pop("clk_tck")), max(float(row.pop("wall_s")), 1e-9)
        row["server_cpu_s"] = int(row.pop("server_ticks")) / tck
        row["server_cpu_cores"] = row["server_cpu_s"] / wall
        row["machine_cpu_cores"] = int(row.pop("machine_ticks")) / tck / wall
        gen = float(row.get("load_cpu_s") or 0) / wall
        row["other_cpu_cores"] = max(0.0, row["machine_cpu_cores"] - row["server_cpu_cores"] - gen)
    busy = row.pop("retry_if_busy", None)
    if busy is not None and row.get("other_cpu_cores", 0) > float(busy):
        print(f"other processes used {row['other_cpu_cores']:.2f} cores during the cell "
              f"({row['delivered_per_s']:,.0f} deliveries/s); running it again")
        raise SystemExit(3)
    quiet = row.pop("quiet", None)
    new = not os.path.exists(raw) or os.path.getsize(raw) == 0
    with open(raw, "a") as f:
        if new:
            f.write(",".join(COLUMNS) + "\n")
        def fmt(v):
            if v is None:
                return ""
            if isinstance(v, float):
                return f"{v:.6g}" if abs(v) < 1e6 else f"{v:.0f}"
            return str(v).replace(",", ";")
        f.write(",".join(fmt(row.get(c)) for c in COLUMNS) + "\n")
    if quiet is None and "json" in " ".join(pairs):
        p99 = (row.get("p99_us") or 0) / 1000
        print(f"{row['delivered_per_s']:,.0f} deliveries/s, {row['mb_per_s']:.1f} MB/s, "
              f"loss {row['loss']}, p99 {p99:.1f} ms, drain {row['drain_s']:.2f} s, "
              f"ended {row['ended']}, window {row.get('window')}, generator {row['load_cpu_cores']:.2f} cores, "
              f"server {row.get('server_cpu_cores', 0):.2f} cores, others {row.get('other_cpu_cores', 0):.2f} cores, "
              f"server drops {row.get('server_dropped')}")

def cmd_summary(raw, out, problems):
    import csv
    rows = list(csv.DictReader(open(raw)))
    def num(r, k):
        try:
            return float(r[k])
        except (KeyError, TypeError, ValueError):
            return None
    def runs(scenario, engine, **kv):
        return [r for r in rows
                if r["scenario"] == scenario and r["engine"] == engine and all(r[k] == str(v) for k, v in kv.items())]
    def pick(scenario, engine, **kv):
        """The median run by delivered/s (the lower one of an even count)."""
        found = sorted(runs(scenario, engine, **kv), key=lambda r: num(r, "delivered_per_s") or 0)
        return found[(len(found) - 1) // 2] if found else None
    def round_ratios(scenario, **kv):
        """uring/tokio delivered/s of each round, as "lowest to highest"."""
        by_round = lambda e: {r.get("round"): num(r, "delivered_per_s") for r in runs(scenario, e, **kv)}
        u, t = by_round("uring"), by_round("tokio")
        ratios = sorted(u[k] / t[k] for k in u if k in t and u[k] is not None and t[k])
        if len(ratios) < 2:
            return "-"
        return f"{ratios[0]:.2f} to {ratios[-1]:.2f}"
    def f(v, fmt="{:,.0f}"):
        return "-" if v is None else fmt.format(v)
    def ratio(a, b):
        return "-" if a is None or b in (None, 0) else f"{a / b:.2f}"
    def ms(r, k="p99_us"):
        v = num(r, k) if r else None
        return None if v is None else v / 1000
    keys = sorted({(int(r["clients"]), int(r["size"])) for r in rows if r["scenario"] in ("saturation", "fixed")})
    L = []
    L.append("# ringcast benchmark summary\n")
    L.append("Both engines on the same machine, server and load generator sharing its cores; see setup.txt.\n")
    L.append("Delivered/s counts every line every client received, over the measured interval: from the start of publishing to the last delivery (so any drain after the publishing duration is included). Loss = published x clients - delivered. p99 is send-to-receive latency.\n")

    rounds = max((int(r.get("round") or 1) for r in rows if r["scenario"] == "saturation"), default=1)
    L.append("## Saturation (`--rate max`: closed loop, each publisher keeps at most `window` of its own lines in flight)\n")
    if rounds > 1:
        L.append(f"Each cell ran {rounds} times, engines alternating. Every column is from each engine's median run by delivered/s; "
                 "uring/tokio is the ratio of the medians, and the next column the lowest and highest ratio of single rounds.\n")
    L.append("| clients | size B | publishers x window | uring delivered/s | tokio delivered/s | uring/tokio | uring/tokio per round | uring MB/s | tokio MB/s | uring loss | tokio loss | uring p99 ms | tokio p99 ms | uring drain s | tokio drain s |")
    L.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c, s in keys:
        u, t = pick("saturation", "uring", clients=c, size=s), pick("saturation", "tokio", clients=c, size=s)
        if not (u or t):
            continue
        g = lambda r, k: num(r, k) if r else None
        L.append(f"| {c} | {s} | {(u or t)['publishers']} x {(u or t)['window']} | {f(g(u,'delivered_per_s'))} | {f(g(t,'delivered_per_s'))} | {ratio(g(u,'delivered_per_s'), g(t,'delivered_per_s'))} | {round_ratios('saturation', clients=c, size=s)} | "
                 f"{f(g(u,'mb_per_s'), '{:,.1f}')} | {f(g(t,'mb_per_s'), '{:,.1f}')} | {f(g(u,'loss'))} | {f(g(t,'loss'))} | "
                 f"{f(ms(u), '{:,.1f}')} | {f(ms(t), '{:,.1f}')} | {f(g(u,'drain_s'), '{:.2f}')} | {f(g(t,'drain_s'), '{:.2f}')} |")

    L.append("\n## Fixed offered load (open loop)\n")
    L.append("| clients | size B | publishers x lines/s | offered deliveries/s | uring delivered/s | tokio delivered/s | uring/tokio | uring loss | tokio loss | uring p99 ms | tokio p99 ms |")
    L.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c, s in keys:
        u, t = pick("fixed", "uring", clients=c, size=s), pick("fixed", "tokio", clients=c, size=s)
        r0 = u or t
        if not r0:
            continue
        g = lambda r, k: num(r, k) if r else None
        offered = int(r0["publishers"]) * float(r0["rate"]) * c
        L.append(f"| {c} | {s} | {r0['publishers']} x {r0['rate']} | {offered:,.0f} | {f(g(u,'delivered_per_s'))} | {f(g(t,'delivered_per_s'))} | "
                 f"{ratio(g(u,'delivered_per_s'), g(t,'delivered_per_s'))} | {f(g(u,'loss'))} | {f(g(t,'loss'))} | {f(ms(u), '{:,.2f}')} | {f(ms(t), '{:,.2f}')} |")

    L.append("\n## Netcat swarm (time until every listener has every line; lower is better)\n")
    L.append("| listeners | publishers x lines | uring s | tokio s | uring/tokio | uring lines min/max | tokio lines min/max | complete and in order (u/t) |")
    L.append("|---:|---:|---:|---:|---:|---:|---:|---:|")
    u, t = pick("nc_swarm", "uring"), pick("nc_swarm", "tokio")
    r0 = u or t
    if r0:
        g = lambda r, k: num(r, k) if r else None
        mm = lambda r: f"{r['lines_min']}/{r['lines_max']}" if r else "-"
        L.append(f"| {r0['clients']} | {r0['publishers']} x {int(float(r0['lines_expected'])) // int(r0['publishers'])} | {f(g(u,'elapsed_s'), '{:.2f}')} | {f(g(t,'elapsed_s'), '{:.2f}')} | "
                 f"{ratio(g(u,'elapsed_s'), g(t,'elapsed_s'))} | {mm(u)} | {mm(t)} | {(u or {}).get('content_ok','-')}/{(t or {}).get('content_ok','-')} |")

    L.append("\n## Idle memory (server VmRSS growth per idle connection; lower is better)\n")
    L.append("| idle clients | uring B/conn | tokio B/conn | uring/tokio | uring RSS before/after KiB | tokio RSS before/after KiB |")
    L.append("|---:|---:|---:|---:|---:|---:|")
    u, t = pick("idle", "uring"), pick("idle", "tokio")
    r0 = u or t
    if r0:
        g = lambda r, k: num(r, k) if r else None
        ba = lambda r: f"{r['rss_before_kb']}/{r['rss_after_kb']}" if r else "-"
        L.append(f"| {r0['clients']} | {f(g(u,'bytes_per_conn'))} | {f(g(t,'bytes_per_conn'))} | {ratio(g(u,'bytes_per_conn'), g(t,'bytes_per_conn'))} | {ba(u)} | {ba(t)} |")

    L.append(f"\n## CPU (cores busy over each saturation cell, its median run, of {os.cpu_count()}; others = every other process, noise if well above 0)\n")
    L.append("| clients | size B | uring server | uring generator | uring others | tokio server | tokio generator | tokio others |")
    L.append("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c, s in keys:
        u, t = pick("saturation", "uring", clients=c, size=s), pick("saturation", "tokio", clients=c, size=s)
        g = lambda r, k: num(r, k) if r else None
        L.append(f"| {c} | {s} | {f(g(u,'server_cpu_cores'), '{:.2f}')} | {f(g(u,'load_cpu_cores'), '{:.2f}')} | {f(g(u,'other_cpu_cores'), '{:.2f}')} | "
                 f"{f(g(t,'server_cpu_cores'), '{:.2f}')} | {f(g(t,'load_cpu_cores'), '{:.2f}')} | {f(g(t,'other_cpu_cores'), '{:.2f}')} |")

    L.append("\n## Targets\n")
    def check(ok, text):
        L.append(f"- {'PASS' if ok else 'FAIL'}: {text}")
    u, t = pick("saturation", "uring", clients=1000, size=64), pick("saturation", "tokio", clients=1000, size=64)
    if u and t:
        r = num(u, "delivered_per_s") / max(num(t, "delivered_per_s"), 1)
        of = f" (medians of {rounds} rounds; single rounds {round_ratios('saturation', clients=1000, size=64)})" if rounds > 1 else ""
        check(r >= 1.25, f"uring >= 1.25x tokio delivered/s at 1000 clients x 64 B saturation: {r:.2f}x{of}")
    behind = []
    for sc in ("saturation", "fixed"):
        for c, s in keys:
            if sc == "saturation" and (c, s) == (1000, 64):
                continue
            u, t = pick(sc, "uring", clients=c, size=s), pick(sc, "tokio", clients=c, size=s)
            # A fixed cell delivers what is offered: within 1% is a tie.
            tie = 0.99 if sc == "fixed" else 1.0
            if u and t and num(u, "delivered_per_s") < tie * num(t, "delivered_per_s"):
                behind.append(f"{sc} {c}x{s}B {num(u,'delivered_per_s') / num(t,'delivered_per_s'):.2f}x")
    check(not behind, "uring >= tokio delivered/s in every other cell (fixed-rate cells within 1%)" + (f"; behind in: {', '.join(behind)}" if behind else ""))
    u, t = pick("fixed", "uring", clients=1000, size=64), pick("fixed", "tokio", clients=1000, size=64)
    if u:
        offered = int(u["publishers"]) * float(u["rate"]) * 1000
        p99 = ms(u)
        text = f"uring at {offered:,.0f} deliveries/s (1000 clients x 64 B): loss {f(num(u,'loss'))}, p99 {f(p99, '{:.2f}')} ms (want 0 and < 20 ms)"
        if float(u["duration_s"]) < 5:
            # The first second of a run has the highest latencies: over 1 s
            # both engines have measured 10 to 38 ms, against 7.5 to 17.4 ms over 5 s.
            L.append(f"- NOT JUDGED (cells shorter than 5 s, where the start of the run weighs on p99; the full run judges it): {text}; tokio p99 {f(ms(t), '{:.2f}')} ms")
        else:
            check(num(u, "loss") == 0 and p99 is not None and p99 < 20, text)
    for e in ("uring", "tokio"):
        r = pick("idle", e)
        if r:
            b = num(r, "bytes_per_conn")
            check(b is not None and b <= 8192, f"{e}: {f(b)} B per idle connection at {r['clients']} connections (want <= 8192)")
    probs = [p for p in open(problems).read().splitlines() if p.strip()]
    if probs:
        L.append("\n## Problems during the run\n")
        L.extend(f"- {p}" for p in probs)
    open(out, "w").write("\n".join(L) + "\n")

def cmd_cluster_summary(raw, out, problems):
    """summary.md of a --cluster run: single node vs cross-node."""
    import csv
    rows = list(csv.DictReader(open(raw))) if os.path.exists(raw) else []
    def num(r, k):
        try:
            return float(r[k])
        except (KeyError, TypeError, ValueError):
            return None
    def pick(scenario, clients, fixed):
        for r in rows:
            if r["scenario"] == scenario and r["clients"] == str(clients) and (r["rate"] != "max") == fixed:
                return r
        return None
    def f(v, fmt="{:,.0f}"):
        return "-" if v is None else fmt.format(v)
    def ratio(a, b):
        return "-" if a is None or b in (None, 0) else f"{a / b:.2f}"
    def ms(r):
        v = num(r, "p99_us") if r else None
        return None if v is None else v / 1000
    clients = sorted({int(r["clients"]) for r in rows if r["scenario"] in ("cluster-single", "cluster-cross")})
    L = ["# ringcast benchmark summary: cluster\n"]
    L.append("Two `ringcast serve --engine uring --cluster nats://...` nodes, A and B, sharing lines through one local nats-server, "
             "on the same machine as the load generator; see setup.txt.\n")
    L.append("## Cluster: single node vs cross-node\n")
    L.append("single: every client on node A (node B receives the lines through NATS but has no clients). "
             "cross: `--connect A,B`, client i on node i mod 2, so publishers and readers are split over the nodes and half of "
             "every line's deliveries cross NATS. Delivered/s and loss count every client (published x clients expected), "
             "p99 is send-to-receive latency; cross/single > 1 for delivered/s and < 1 for p99 means cross-node is better. "
             "Server CPU and drops are summed over both nodes (drops include lines a bridge could not forward).\n")
    L.append("| load | clients x 64 B | publishers x lines/s | offered deliveries/s | single delivered/s | cross delivered/s | cross/single | "
             "single loss | cross loss | single p99 ms | cross p99 ms | p99 cross/single | server cores single/cross | drops single/cross |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for fixed in (True, False):
        for c in clients:
            a, b = pick("cluster-single", c, fixed), pick("cluster-cross", c, fixed)
            r0 = a or b
            if not r0:
                continue
            g = lambda r, k: num(r, k) if r else None
            offered = f(int(r0["publishers"]) * float(r0["rate"]) * c) if fixed else "max"
            rate = r0["rate"] if fixed else f"max (window {r0['window'] or '-'})"
            L.append(f"| {'fixed' if fixed else 'saturation'} | {c} | {r0['publishers']} x {rate} | {offered} | "
                     f"{f(g(a,'delivered_per_s'))} | {f(g(b,'delivered_per_s'))} | {ratio(g(b,'delivered_per_s'), g(a,'delivered_per_s'))} | "
                     f"{f(g(a,'loss'))} | {f(g(b,'loss'))} | {f(ms(a), '{:,.2f}')} | {f(ms(b), '{:,.2f}')} | {ratio(ms(b), ms(a))} | "
                     f"{f(g(a,'server_cpu_cores'), '{:.2f}')}/{f(g(b,'server_cpu_cores'), '{:.2f}')} | "
                     f"{(a or {}).get('server_dropped') or '-'}/{(b or {}).get('server_dropped') or '-'} |")
    probs = [p for p in open(problems).read().splitlines() if p.strip()]
    if probs:
        L.append("\n## Problems during the run\n")
        L.extend(f"- {p}" for p in probs)
    open(out, "w").write("\n".join(L) + "\n")

if __name__ == "__main__":
    name, *args = sys.argv[1:]
    globals()["cmd_" + name.replace("-", "_")](*args)
PY
helper() { python3 "$WORK/helper.py" "$@"; }

# The "cpu" line of /proc/stat: clock ticks of all cores, by kind.
read_cpu_ticks() {
    read -r _ CPU_USER CPU_NICE CPU_SYSTEM _ _ CPU_IRQ CPU_SOFTIRQ CPU_STEAL _ </proc/stat
}
machine_ticks() { # busy clock ticks of the whole machine, all cores
    read_cpu_ticks
    echo $((CPU_USER + CPU_NICE + CPU_SYSTEM + CPU_IRQ + CPU_SOFTIRQ + CPU_STEAL))
}
steal_ticks() { # clock ticks the hypervisor gave to other guests, all cores
    read_cpu_ticks
    echo "$CPU_STEAL"
}
STEAL0=$(steal_ticks)
# Appends the end-of-run lines to setup.txt; $1 describes raw.csv.
finish_setup() {
    ELAPSED=$(elapsed_since "$T0")
    local stolen
    stolen=$(awk -v t="$(($(steal_ticks) - STEAL0))" -v hz="$CLK_TCK" -v s="$ELAPSED" -v n="$(nproc)" \
        'BEGIN { printf "%.1f s of CPU (%.1f%% of the cores over the run)", t / hz, 100 * t / hz / (s * n) }')
    {
        echo "total run time: ${ELAPSED}s"
        echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
        echo "machine waits for quiet: ${QUIET_WAITED}s of ${QUIET_BUDGET}s allowed"
        echo "stolen by the hypervisor (steal in /proc/stat) during the run: $stolen; well above 0 means a busy host, and noisy numbers"
        echo "$1"
    } >>"$OUT/setup.txt"
    say "stolen by the hypervisor during the run: $stolen"
}
busy_now() { # cores busy over the next $1 seconds (default 1), whatever runs
    local t0 t1 s=${1:-1}
    t0=$(machine_ticks)
    sleep "$s"
    t1=$(machine_ticks)
    awk -v t="$((t1 - t0))" -v hz="$CLK_TCK" -v s="$s" 'BEGIN { printf "%.2f", t / hz / s }'
}
# Waits, within what is left of QUIET_BUDGET seconds over the whole run,
# until other processes leave the machine (less than BUSY_CORES busy).
QUIET_WAITED=0
wait_quiet() {
    local b start=$SECONDS
    while :; do
        b=$(busy_now 0.5)
        awk -v b="$b" -v q="$BUSY_CORES" 'BEGIN { exit !(b < q) }' && break
        if ((QUIET_WAITED + SECONDS - start >= QUIET_BUDGET)); then
            say "machine busy ($b cores in use by other processes); no waiting budget left, going on"
            break
        fi
        say "machine busy ($b cores in use by other processes); waiting"
        sleep 2
    done
    QUIET_WAITED=$((QUIET_WAITED + SECONDS - start))
}
cpu_ticks() { # user+system clock ticks of a process
    local stat f
    stat=$(<"/proc/$1/stat")
    stat=${stat##*) }
    read -r -a f <<<"$stat"
    echo $((f[11] + f[12]))
}
CLK_TCK=$(getconf CLK_TCK)
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# Runs a command in the background, remembered for cleanup, and waits for
# it; returns its status.
run_child() {
    "$@" &
    local pid=$!
    PIDS+=("$pid")
    local rc=0
    wait "$pid" || rc=$?
    return "$rc"
}

# -------------------------------------------------------------------- build
say "building (cargo build --release, and the chart example)"
cargo build --release --quiet
cargo build --release --quiet --example bench_chart
BIN="$ROOT/target/release/ringcast"

# -------------------------------------------------------------------- setup
{
    echo "ringcast benchmark, $(date -Iseconds)"
    echo "mode: $( ((QUICK)) && echo quick || echo full)$( ((CLUSTER)) && echo ', cluster (single node vs cross-node)')"
    echo "host: $(hostname)"
    echo "cpu: $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "cores: $(nproc) online ($(grep -c ^processor /proc/cpuinfo) in /proc/cpuinfo)"
    echo "memory: $(awk '/^MemTotal/ {print $2, $3}' /proc/meminfo)"
    echo "kernel: $(uname -r) ($(uname -sm))"
    echo "git commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (working tree has uncommitted changes)')"
    echo "uncommitted changes to tracked files built into this run: $(git diff --name-only HEAD 2>/dev/null | tr '\n' ' ')"
    echo "rustc: $(rustc -V)"
    echo "cargo profile: release ($(awk '/^\[profile.release\]/ { p = 1; next } /^\[/ { p = 0 } p && NF' Cargo.toml | tr '\n' ' '))"
    echo "server: $BIN serve --engine ENGINE --listen 127.0.0.1:0 --metrics 127.0.0.1:0 ${SERVE_FLAGS[*]} (defaults for everything else)"
    echo "load generator: $BIN load --threads $LOAD_THREADS --json, duration ${DURATION}s per cell, publishers min(10, clients), --window default (1000, or fewer so that publishers x window x clients <= 1,000,000)"
    echo "rounds: each saturation cell $ROUNDS time(s), engines alternating; each fixed-rate cell once"
    echo "fixed offered load: $FIXED_DELIVERIES_64 deliveries/s for 64-byte lines, $FIXED_DELIVERIES_1024 for 1024-byte lines"
    echo "netcat swarm: $NC_LISTENERS listeners, $NC_PUBLISHERS publishers x $NC_LINES lines of 64 bytes"
    echo "idle clients: $IDLE_CLIENTS"
    echo "open-files limit: $FD_GOT (hard $FD_HARD)"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg); cores busy in the second before: $(busy_now) of $(nproc)"
    echo "busiest other processes at start (ps %CPU, lifetime average):"
    ps -eo pcpu,comm --sort=-pcpu | sed -n '2,6p' | sed 's/^/  /'
} >"$OUT/setup.txt"

# ------------------------------------------------------------------ server
# Both servers run side by side (an idle one costs nothing), and the cells
# alternate between them, so a neighbour's load on a shared machine hits
# both engines alike. `use_engine` points the globals at one of them.
SERVER_PID=""
ADDR=""
PORT=""
METRICS=""
declare -A S_PID S_ADDR S_METRICS
use_engine() {
    SERVER_PID=${S_PID[$1]}
    ADDR=${S_ADDR[$1]}
    PORT=${ADDR##*:}
    METRICS=${S_METRICS[$1]}
}

start_server() { # engine [name [more serve flags...]]; name defaults to the engine
    local engine=$1 name=${2:-$1}
    local log="$OUT/server-$name.log"
    local extra=("${@:3}")
    "$BIN" serve --engine "$engine" --listen 127.0.0.1:0 --metrics 127.0.0.1:0 "${SERVE_FLAGS[@]}" "${extra[@]}" 2>"$log" &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    local deadline=$((SECONDS + 15))
    ADDR="" METRICS=""
    while [[ -z "$ADDR" || -z "$METRICS" ]]; do
        if ((SECONDS > deadline)) || ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "bench.sh: the $name server did not start; its log:" >&2
            cat "$log" >&2
            exit 1
        fi
        sleep 0.05
        ADDR=$(sed -n 's/.*serving.* addr=\([0-9.]*:[0-9]*\).*/\1/p' "$log" | head -n1)
        METRICS=$(sed -n 's/.*metrics at.* addr=\([0-9.]*:[0-9]*\).*/\1/p' "$log" | head -n1)
    done
    PORT=${ADDR##*:}
    until nc -z 127.0.0.1 "$PORT" 2>/dev/null; do
        ((SECONDS > deadline)) && {
            echo "bench.sh: the $name server does not accept on $ADDR" >&2
            exit 1
        }
        sleep 0.05
    done
    # nc -z connected and left; wait until the server has seen it go.
    helper wait-metric "http://$METRICS/metrics" ringcast_connected_clients eq 0 10
    local threads
    threads=$(sed -n 's/.*serving.* threads=\([0-9]*\).*/\1/p' "$log" | head -n1)
    echo "$([[ "$name" == "$engine" ]] && echo "engine $engine" || echo "node $name (engine $engine${extra:+, ${extra[*]}})"): pid $SERVER_PID, $ADDR, metrics $METRICS, threads=$threads, log: $(sed -n 's/.*\(serving.*\)/\1/p' "$log" | head -n1)" >>"$OUT/setup.txt"
    S_PID[$name]=$SERVER_PID
    S_ADDR[$name]=$ADDR
    S_METRICS[$name]=$METRICS
    say "$name server up on $ADDR (metrics $METRICS, $threads threads)"
}

stop_server() { # engine
    local engine=$1 rc=0
    use_engine "$engine"
    check_alive "$engine"
    kill -TERM "$SERVER_PID"
    local deadline=$((SECONDS + 20))
    while kill -0 "$SERVER_PID" 2>/dev/null && ((SECONDS < deadline)); do
        sleep 0.05
    done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        problem "$engine server still running 20 s after SIGTERM; killed"
        kill -9 "$SERVER_PID" 2>/dev/null || true
    fi
    wait "$SERVER_PID" || rc=$?
    if ((rc != 0)); then
        problem "$engine server exited with status $rc after SIGTERM (see server-$engine.log)"
    else
        say "$engine server stopped, exit status 0"
    fi
}

# Stops the run, with what it has so far, if the server is gone.
check_alive() { # engine
    kill -0 "$SERVER_PID" 2>/dev/null && return 0
    local rc=0
    wait "$SERVER_PID" 2>/dev/null || rc=$?
    problem "the $1 server (pid $SERVER_PID) is gone, status $rc: it exited or another process killed it; its log ends: $(tail -n 3 "$OUT/server-$1.log" | tr '\n' ' ')"
    helper "$SUMMARY" "$RAW" "$OUT/summary.md" "$PROBLEMS" || true
    echo "bench.sh: stopped early; partial results in $OUT" >&2
    exit 1
}
dropped() { helper metric "http://$METRICS/metrics" ringcast_messages_dropped_total; }

wait_disconnected() { # engine
    check_alive "$1"
    if ! helper wait-metric "http://$METRICS/metrics" ringcast_connected_clients eq 0 30; then
        problem "$1: clients still connected 30 s after they closed"
    fi
}

# ------------------------------------------------------------- idle memory
idle_memory() { # engine
    local engine=$1 ready="$WORK/idle-ready" before after
    check_alive "$engine"
    rm -f "$ready"
    sleep 0.5
    before=$(rss_kb "$SERVER_PID")
    python3 "$WORK/helper.py" idle "$PORT" "$IDLE_CLIENTS" "$ready" 600 &
    local pid=$!
    PIDS+=("$pid")
    local deadline=$((SECONDS + 120))
    until [[ -s "$ready" ]]; do
        if ((SECONDS > deadline)) || ! kill -0 "$pid" 2>/dev/null; then
            problem "$engine: could not open $IDLE_CLIENTS idle connections"
            kill "$pid" 2>/dev/null || true
            return
        fi
        sleep 0.1
    done
    if ! helper wait-metric "http://$METRICS/metrics" ringcast_connected_clients eq "$IDLE_CLIENTS" 60; then
        problem "$engine: the server did not register all $IDLE_CLIENTS idle clients"
    fi
    sleep 1
    after=$(rss_kb "$SERVER_PID")
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local per=$(((after - before) * 1024 / IDLE_CLIENTS))
    helper row "$RAW" engine="$engine" scenario=idle clients="$IDLE_CLIENTS" \
        rss_before_kb="$before" rss_after_kb="$after" bytes_per_conn="$per"
    say "$engine idle: RSS $before -> $after KiB for $IDLE_CLIENTS connections = $per B each"
    wait_disconnected "$engine"
}

# ------------------------------------------------------------ netcat swarm
make_nc_inputs() {
    local p
    for ((p = 1; p <= NC_PUBLISHERS; p++)); do
        # 64-byte lines, unique per publisher: "ncP SEQ xxx...x"
        awk -v p="$p" -v n="$NC_LINES" 'BEGIN {
            pad = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
            for (i = 0; i < n; i++) { s = sprintf("nc%d %08d ", p, i); print s substr(pad, 1, 63 - length(s)) }
        }' >"$WORK/nc-pub-$p.txt"
    done
}

nc_swarm() { # engine
    local engine=$1 dir="$WORK/swarm-$1" i groups=()
    mkdir -p "$dir"
    local expected=$((NC_PUBLISHERS * NC_LINES))
    ((QUIET_BUDGET > 0)) && wait_quiet
    check_alive "$engine"
    local before_drop
    before_drop=$(dropped)
    for ((i = 0; i < NC_LISTENERS; i++)); do
        # stdin stays open: a half-close reads as a disconnect. Each nc runs
        # in its own process group, so it and its sleep are killed together.
        # shellcheck disable=SC2016 # $1.. expand in the inner shell
        setsid bash -c 'sleep 3600 | nc -n 127.0.0.1 "$1" >"$2" 2>>"$3"' _ \
            "$PORT" "$dir/listener-$i.txt" "$dir/nc.err" &
        groups+=("$!")
        GROUPS_+=("$!")
    done
    if ! helper wait-metric "http://$METRICS/metrics" ringcast_connected_clients eq "$NC_LISTENERS" 30; then
        problem "$engine swarm: not all $NC_LISTENERS nc listeners connected"
    fi
    local t_start seconds
    t_start=$EPOCHREALTIME
    for ((i = 1; i <= NC_PUBLISHERS; i++)); do
        # shellcheck disable=SC2016 # $1.. expand in the inner shell
        setsid bash -c '{ cat "$1"; exec sleep 3600; } | nc -n 127.0.0.1 "$2" >/dev/null 2>>"$3"' _ \
            "$WORK/nc-pub-$i.txt" "$PORT" "$dir/nc.err" &
        groups+=("$!")
        GROUPS_+=("$!")
    done
    local deadline=$((SECONDS + SWARM_TIMEOUT)) lowest=0 timed_out=0
    local files=("$dir"/listener-*.txt)
    while :; do
        lowest=$(wc -l "${files[@]}" | awk '$2 != "total" { if (m == "" || $1 < m) m = $1 } END { print m + 0 }')
        ((lowest >= expected)) && break
        if ((SECONDS > deadline)); then
            timed_out=1
            break
        fi
        sleep 0.05
    done
    seconds=$(elapsed_since "$t_start")
    for i in "${groups[@]}"; do
        kill -- "-$i" 2>/dev/null || true
    done
    for i in "${groups[@]}"; do
        wait "$i" 2>/dev/null || true
    done
    local check
    check=$(helper swarm-check "$expected" "${files[@]}")
    read -r lmin lmax ok <<<"$check"
    local total
    total=$(cat "${files[@]}" | wc -l)
    ((timed_out)) && problem "$engine swarm: listeners still missing lines after ${SWARM_TIMEOUT}s (fewest $lowest of $expected)"
    [[ "$ok" == yes ]] || problem "$engine swarm: some listener's lines are missing, extra or out of order"
    local rate
    rate=$(awk -v n="$total" -v s="$seconds" 'BEGIN { printf "%.0f", n / (s > 0 ? s : 1e-9) }')
    helper row "$RAW" engine="$engine" scenario=nc_swarm clients="$NC_LISTENERS" publishers="$NC_PUBLISHERS" \
        size=64 published="$expected" delivered="$total" expected=$((expected * NC_LISTENERS)) \
        loss=$((expected * NC_LISTENERS - total)) elapsed_s="$seconds" delivered_per_s="$rate" \
        lines_expected="$expected" lines_min="$lmin" lines_max="$lmax" content_ok="$ok" \
        server_dropped=$(($(dropped) - before_drop))
    say "$engine swarm: $NC_LISTENERS listeners got $lmin..$lmax of $expected lines in ${seconds}s (complete and in order: $ok)"
    rm -rf "$dir"
    wait_disconnected "$engine"
}

# ------------------------------------------------------------ load matrix
load_cell() { # engine scenario clients size [round]
    local engine=$1 scenario=$2 clients=$3 size=$4 round=${5:-1}
    local pubs=$((clients < MAX_PUBLISHERS ? clients : MAX_PUBLISHERS))
    local rate=max
    if [[ "$scenario" == fixed ]]; then
        local total=$FIXED_DELIVERIES_64
        ((size > 64)) && total=$FIXED_DELIVERIES_1024
        rate=$((total / (pubs * clients)))
        ((rate < 1)) && rate=1
    fi
    local json="$WORK/load.json" err="$WORK/load.err" attempt line
    local ticks0 ticks1 m0 m1 t0 wall drop0 drop1 rc
    for ((attempt = 0; attempt <= RETRIES; attempt++)); do
        ((QUIET_BUDGET > 0)) && wait_quiet
        check_alive "$engine"
        rc=0
        drop0=$(dropped)
        t0=$EPOCHREALTIME
        m0=$(machine_ticks)
        ticks0=$(cpu_ticks "$SERVER_PID")
        run_child timeout --kill-after=5 $((DURATION + 60)) "$BIN" load --connect "$ADDR" \
            --clients "$clients" --publishers "$pubs" --size "$size" --rate "$rate" \
            --duration "${DURATION}s" --threads "$LOAD_THREADS" --json >"$json" 2>"$err" || rc=$?
        check_alive "$engine"
        ticks1=$(cpu_ticks "$SERVER_PID")
        m1=$(machine_ticks)
        wall=$(elapsed_since "$t0")
        drop1=$(dropped)
        local cpu=(server_ticks=$((ticks1 - ticks0)) machine_ticks=$((m1 - m0)) clk_tck="$CLK_TCK" wall_s="$wall")
        if ((rc != 0)) || ! [[ -s "$json" ]]; then
            problem "$engine $scenario ${clients}x${size}B: ringcast load failed (status $rc): $(tr '\n' ' ' <"$err")"
            helper row "$RAW" engine="$engine" scenario="$scenario" round="$round" clients="$clients" publishers="$pubs" \
                size="$size" rate="$rate" ended=error "${cpu[@]}" server_dropped=$((drop1 - drop0))
            break
        fi
        # Another process took CPU during the cell: run it once more.
        local retry=()
        ((attempt < RETRIES)) && retry=(retry_if_busy="$BUSY_CORES")
        rc=0
        line=$(helper row "$RAW" engine="$engine" scenario="$scenario" round="$round" json="$json" "${cpu[@]}" \
            server_dropped=$((drop1 - drop0)) "${retry[@]}") || rc=$?
        say "$engine $scenario ${clients}x${size}B$( ((ROUNDS > 1)) && [[ $scenario == saturation ]] && echo " round $round"): $line"
        ((rc == 3)) || break
    done
    wait_disconnected "$engine"
}

# ----------------------------------------------------------------- cluster
# --cluster: single node vs cross-node, on two uring nodes sharing a local
# nats-server. Runs instead of the engine comparison below, and exits.
NATS_PID=""
start_nats() {
    local log="$OUT/nats-server.log" deadline=$((SECONDS + 15)) port=""
    "$NATS_SERVER" -a 127.0.0.1 -p -1 2>"$log" &
    NATS_PID=$!
    PIDS+=("$NATS_PID")
    while [[ -z "$port" ]]; do
        if ((SECONDS > deadline)) || ! kill -0 "$NATS_PID" 2>/dev/null; then
            echo "bench.sh: nats-server did not start; its log:" >&2
            cat "$log" >&2
            exit 1
        fi
        sleep 0.05
        port=$(sed -n 's/.*Listening for client connections on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -n1)
    done
    NATS_URL="nats://127.0.0.1:$port"
    echo "nats-server: pid $NATS_PID, $NATS_URL ($("$NATS_SERVER" --version 2>&1 | head -n1))" >>"$OUT/setup.txt"
    say "nats-server up on $NATS_URL"
}

metric_sum() { # name, over both nodes
    local n total=0 v
    for n in a b; do
        v=$(helper metric "http://${S_METRICS[$n]}/metrics" "$1")
        total=$((total + v))
    done
    echo "$total"
}
cluster_drops() { echo $(($(metric_sum ringcast_messages_dropped_total) + $(metric_sum ringcast_cluster_dropped_total))); }
cluster_alive() {
    local n
    for n in a b; do
        use_engine "$n"
        check_alive "$n"
    done
}

cluster_cell() { # single|cross scenario clients
    local mode=$1 scenario=$2 clients=$3 size=64
    local pubs=$((clients < MAX_PUBLISHERS ? clients : MAX_PUBLISHERS))
    local rate=max
    if [[ "$scenario" == fixed ]]; then
        rate=$((FIXED_DELIVERIES_64 / (pubs * clients)))
        ((rate < 1)) && rate=1
    fi
    local connect=${S_ADDR[a]}
    [[ "$mode" == cross ]] && connect="${S_ADDR[a]},${S_ADDR[b]}"
    local json="$WORK/load.json" err="$WORK/load.err" attempt line n
    local ticks0 ticks1 m0 m1 t0 wall drop0 drop1 rc
    for ((attempt = 0; attempt <= RETRIES; attempt++)); do
        ((QUIET_BUDGET > 0)) && wait_quiet
        cluster_alive
        rc=0
        drop0=$(cluster_drops)
        t0=$EPOCHREALTIME
        m0=$(machine_ticks)
        ticks0=0
        for n in a b; do ticks0=$((ticks0 + $(cpu_ticks "${S_PID[$n]}"))); done
        run_child timeout --kill-after=5 $((DURATION + 60)) "$BIN" load --connect "$connect" \
            --clients "$clients" --publishers "$pubs" --size "$size" --rate "$rate" \
            --duration "${DURATION}s" --threads "$LOAD_THREADS" --json >"$json" 2>"$err" || rc=$?
        cluster_alive
        ticks1=0
        for n in a b; do ticks1=$((ticks1 + $(cpu_ticks "${S_PID[$n]}"))); done
        m1=$(machine_ticks)
        wall=$(elapsed_since "$t0")
        drop1=$(cluster_drops)
        local cpu=(server_ticks=$((ticks1 - ticks0)) machine_ticks=$((m1 - m0)) clk_tck="$CLK_TCK" wall_s="$wall")
        if ((rc != 0)) || ! [[ -s "$json" ]]; then
            problem "cluster-$mode $scenario ${clients}x${size}B: ringcast load failed (status $rc): $(tr '\n' ' ' <"$err")"
            helper row "$RAW" engine=uring scenario="cluster-$mode" clients="$clients" publishers="$pubs" \
                size="$size" rate="$rate" ended=error "${cpu[@]}" server_dropped=$((drop1 - drop0))
            break
        fi
        local retry=()
        ((attempt < RETRIES)) && retry=(retry_if_busy="$BUSY_CORES")
        rc=0
        line=$(helper row "$RAW" engine=uring scenario="cluster-$mode" json="$json" "${cpu[@]}" \
            server_dropped=$((drop1 - drop0)) "${retry[@]}") || rc=$?
        say "cluster-$mode $scenario ${clients}x${size}B: $line"
        ((rc == 3)) || break
    done
    for n in a b; do
        use_engine "$n"
        wait_disconnected "$n"
    done
}

if ((CLUSTER)); then
    echo "cluster: 2 uring nodes (a: --node-id bench-a, b: --node-id bench-b) on one local nats-server; clients ${CLUSTER_CLIENTS[*]} x 64 B, $MAX_PUBLISHERS publishers, fixed load $FIXED_DELIVERIES_64 deliveries/s and --rate max; single = --connect A, cross = --connect A,B" >>"$OUT/setup.txt"
    start_nats
    start_server uring a --cluster "$NATS_URL" --node-id bench-a
    start_server uring b --cluster "$NATS_URL" --node-id bench-b
    for n in a b; do
        if ! helper wait-metric "http://${S_METRICS[$n]}/metrics" ringcast_cluster_connected eq 1 30; then
            echo "bench.sh: node $n did not join the cluster (ringcast_cluster_connected not 1 after 30 s); its log ends:" >&2
            tail -n 5 "$OUT/server-$n.log" >&2
            exit 1
        fi
    done
    say "both nodes report ringcast_cluster_connected 1"
    order=(single cross)
    for scenario in fixed saturation; do
        for clients in "${CLUSTER_CLIENTS[@]}"; do
            for mode in "${order[@]}"; do
                cluster_cell "$mode" "$scenario" "$clients"
            done
            # Take turns at going first.
            order=("${order[@]:1}" "${order[0]}")
        done
    done
    for n in a b; do
        stop_server "$n"
    done
    kill -TERM "$NATS_PID" 2>/dev/null || true
    wait "$NATS_PID" 2>/dev/null || true
    helper cluster-summary "$RAW" "$OUT/summary.md" "$PROBLEMS"
    finish_setup "raw.csv (cluster rows): server_cpu_cores is both nodes together, over each cell's wall time; server_dropped = ringcast_messages_dropped_total + ringcast_cluster_dropped_total, both nodes"
    cat "$OUT/summary.md"
    echo
    echo "results in $OUT (took ${ELAPSED}s)"
    if [[ -s "$PROBLEMS" ]]; then
        echo "bench.sh: problems during the run (listed in summary.md)" >&2
        exit 1
    fi
    exit 0
fi

# -------------------------------------------------------------------- main
make_nc_inputs
for engine in "${ENGINES[@]}"; do
    start_server "$engine"
done
for engine in "${ENGINES[@]}"; do
    use_engine "$engine"
    idle_memory "$engine"
done
for engine in "${ENGINES[@]}"; do
    use_engine "$engine"
    nc_swarm "$engine"
done
order=("${ENGINES[@]}")
for size in "${SIZES[@]}"; do
    for clients in "${CLIENTS[@]}"; do
        for scenario in saturation fixed; do
            rounds=1
            [[ "$scenario" == saturation ]] && rounds=$ROUNDS
            for ((round = 1; round <= rounds; round++)); do
                for engine in "${order[@]}"; do
                    use_engine "$engine"
                    load_cell "$engine" "$scenario" "$clients" "$size" "$round"
                done
                # Take turns at going first.
                order=("${order[@]:1}" "${order[0]}")
            done
        done
    done
done
for engine in "${ENGINES[@]}"; do
    stop_server "$engine"
done

# ----------------------------------------------------------------- report
helper summary "$RAW" "$OUT/summary.md" "$PROBLEMS"
for size in "${SIZES[@]}"; do
    svg="$OUT/delivered_vs_clients.svg"
    ((size != 64)) && svg="$OUT/delivered_vs_clients_$size.svg"
    if ! cargo run --release --quiet --example bench_chart -- "$RAW" "$svg" "$size" saturation; then
        problem "could not draw $svg"
    fi
done
finish_setup "raw.csv: server_cpu_cores and machine_cpu_cores (every process) are over each cell's wall time, load_cpu_cores over the measured interval; other_cpu_cores = machine - server - generator (which includes steal), noise from other processes if well above 0"
cat "$OUT/summary.md"
echo
echo "results in $OUT (took ${ELAPSED}s)"
if [[ -s "$PROBLEMS" ]]; then
    echo "bench.sh: problems during the run (listed in summary.md)" >&2
    exit 1
fi
