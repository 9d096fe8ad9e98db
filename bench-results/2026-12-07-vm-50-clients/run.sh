#!/usr/bin/env bash
# 500,000 deliveries/s to 50 clients (10 publishers x 1,000 lines/s of
# 64 B), against ringcast's uring and tokio engines and the textbook
# server, taking turns, ROUNDS times; one JSON line per run in results.jsonl.
# Run from the repository root after `cargo build --release --workspace
# --bins --examples`.
set -euo pipefail
OUT=$(dirname "$0")
ROUNDS=${ROUNDS:-5}
BIN=target/release/ringcast
TEXTBOOK=target/release/examples/textbook
: > "$OUT/results.jsonl"
serve() {
    case $1 in
    uring | tokio) exec $BIN serve --engine "$1" --listen 127.0.0.1:0 --log warn --ready-file "$2" ${SERVER_ARGS:-} ;;
    textbook) exec $TEXTBOOK 127.0.0.1:0 --ready-file "$2" ;;
    esac
}
for round in $(seq "$ROUNDS"); do
    for server in uring tokio textbook; do
        ready=$(mktemp -u)
        serve $server "$ready" 2>/dev/null &
        pid=$!
        for _ in $(seq 100); do [[ -s $ready ]] && break; sleep 0.05; done
        addr=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['listen'])" "$ready")
        $BIN load --connect "$addr" --clients 50 --publishers 10 --rate 1000 \
            --size 64 --duration 5s --json |
            python3 -c "import json,sys; r=json.load(sys.stdin); r['server']=sys.argv[1]; r['round']=int(sys.argv[2]); print(json.dumps(r))" "$server" "$round" >> "$OUT/results.jsonl"
        kill "$pid"; wait "$pid" 2>/dev/null || true
        rm -f "$ready"
    done
done
