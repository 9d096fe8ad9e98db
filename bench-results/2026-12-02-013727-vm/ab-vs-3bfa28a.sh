#!/usr/bin/env bash
# Superseded by `ringcast-bench ab` (docs/benchmarks.md, "A/B of two
# builds"), which also reports CPU per delivery. Kept as the record of the
# runs that used it.
# A/B: an old build against this one, same engine, taking turns under the
# same load generator (this build's `ringcast load`), one JSON result a row.
#   git worktree add --detach /work/wt-old 3bfa28a
#   (cd /work/wt-old && cargo build --release)
# env: OLD, NEW (the two `ringcast` binaries), ROUNDS (3),
#      ENGINES ("uring tokio"), OUT (/tmp/ab/out.csv),
#      LOADARGS (more `ringcast load` flags, e.g. "--window 10")
# The load generator is NEW's `ringcast load`.
# ../2026-12-02-041700-vm/table.py OUT prints a results table.
# args: cells as clients:size:rate:duration, e.g. 1000:64:max:3s 1000:64:100:3s
set -u
OLD=${OLD:-/work/wt-old/target/release/ringcast}
NEW=${NEW:-/work/main/target/release/ringcast}
LOAD=$NEW
mkdir -p /tmp/ab
ROUNDS=${ROUNDS:-3}; ENGINES=${ENGINES:-"uring tokio"}; OUT=${OUT:-/tmp/ab/out.csv}
echo "engine,build,clients,size,rate,dur,round,json" > "$OUT"
port=19100
for engine in $ENGINES; do
  $OLD serve --listen 127.0.0.1:$((port)) --engine $engine >/tmp/ab/old-$engine.log 2>&1 & op=$!
  $NEW serve --listen 127.0.0.1:$((port+1)) --engine $engine >/tmp/ab/new-$engine.log 2>&1 & np=$!
  sleep 1
  for cell in "$@"; do
    IFS=: read -r c s r d <<<"$cell"
    pubs=$(( c < 10 ? c : 10 ))
    for round in $(seq "$ROUNDS"); do
      for build in old new; do
        p=$port; [ $build = new ] && p=$((port+1))
        j=$($LOAD load --connect 127.0.0.1:$p --clients $c --publishers $pubs --size $s --rate $r --duration $d ${LOADARGS:-} --json 2>/dev/null)
        echo "$engine,$build,$c,$s,$r,$d,$round,'$j'" >> "$OUT"
        echo "$engine $build $cell r$round $(grep -oE '"(delivered_per_s|loss)":[0-9.]+' <<<"$j" | tr '\n' ' ')"
      done
    done
  done
  kill -TERM $op $np; wait $op $np 2>/dev/null
  port=$((port+2))
done
