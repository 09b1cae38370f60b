#!/usr/bin/env bash
# One worker against two: throughput and the engine's CPU per request, nothing pinned.
#
#   benchmarks/workers.sh                 # 10 s per cell, 3 rounds, 1 KiB JSON
#   benchmarks/workers.sh 5 1             # seconds per cell, rounds
#
# This VM has two cores and nowhere else to put the load, so the load generator (wrk, 2
# threads, 100 connections) and the echo backend share the two cores with the workers.  Two
# scenarios: "direct" (POST /direct through the benchmark's node echo backend, as in run.sh)
# and "local" (a flow that routes on the JSON payload and answers itself: no backend, so the
# engine's share of the machine is largest).  For each it prints req/s with 1 and 2 workers,
# their ratio, and the engine's CPU time per request (all its processes, /proc): if that stays
# flat from 1 to 2 workers the engine scales linearly, and what is missing from 2x is the CPU
# the load generator and the backend take from the second core.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_DIR="${BENCH_DIR:-$(cd "$ROOT/.." && pwd)/shared/bench}"
SECS="${1:-10}"
ROUNDS="${2:-3}"
BACKEND_PORT=18290
PORT=18291
MPORT=18292
WORK="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/flows"
cp "$ROOT/flows/bench/bench.yaml" "$ROOT/flows/bench/transform.xsl" "$WORK/flows/"
cat >"$WORK/flows/local.yaml" <<'EOF'
flows:
  local:
    description: Routes on the JSON payload and answers itself (no backend).
    source: {http: {method: POST, path: /local}}
    steps:
      - choice:
          when:
            - if: ${payload.orders[0].symbol == 'IBM'}
              steps:
                - respond: {json: {routed: a, first: '${payload.orders[0].buyerID}'}}
          otherwise:
            - respond: {json: {routed: b}}
EOF
"$ROOT/.venv/bin/python" - "$BENCH_DIR/lib" "$WORK/body" <<'EOF'
import sys
sys.path.insert(0, sys.argv[1])
import payloads
open(sys.argv[2], "wb").write(payloads.json_body(1024))
EOF

cpu_ticks() {  # user+system clock ticks of every process in the group
    local total=0 pid stat
    for pid in $(pgrep -g "$1"); do
        stat=$(cut -d' ' -f14,15 "/proc/$pid/stat" 2>/dev/null) || continue
        total=$((total + ${stat% *} + ${stat#* }))
    done
    echo "$total"
}

PORT=$BACKEND_PORT setsid node "$BENCH_DIR/lib/echo_backend.js" >/dev/null 2>&1 &
pids+=($!)
export BENCH_BODY="$WORK/body" BENCH_CTYPE=application/json
hz=$(getconf CLK_TCK)

printf '| scenario | workers | req/s (median of %s) | engine CPU µs/req | ratio to 1 worker |\n|---|---:|---:|---:|---:|\n' "$ROUNDS"
for scenario in direct local; do
    one=""
    for workers in 1 2; do
        BACKEND_URL="http://127.0.0.1:$BACKEND_PORT" setsid "$ROOT/.venv/bin/interlace" run "$WORK/flows" \
            --host 127.0.0.1 --port $PORT --management-port $MPORT --workers "$workers" --log-level warning \
            >"$WORK/engine.log" 2>&1 &
        engine=$!
        pids+=($engine)
        for _ in $(seq 200); do
            curl -sf -o /dev/null -X POST -H 'content-type: application/json' --data-binary @"$WORK/body" \
                "http://127.0.0.1:$PORT/$scenario" && break
            sleep 0.05
        done
        wrk -t2 -c100 -d2s -s "$BENCH_DIR/lib/post.lua" "http://127.0.0.1:$PORT/$scenario" >/dev/null
        rates=()
        cpus=()
        for _ in $(seq "$ROUNDS"); do
            before=$(cpu_ticks "$engine")
            out=$(wrk -t2 -c100 -d"${SECS}s" -s "$BENCH_DIR/lib/post.lua" "http://127.0.0.1:$PORT/$scenario")
            after=$(cpu_ticks "$engine")
            requests=$(sed -n 's/^BENCH_RESULT .*"requests":\([0-9]*\).*/\1/p' <<<"$out")
            us=$(sed -n 's/^BENCH_RESULT .*"duration_us":\([0-9]*\).*/\1/p' <<<"$out")
            rates+=("$(awk -v r="$requests" -v u="$us" 'BEGIN { printf "%.0f", r / (u / 1e6) }')")
            cpus+=("$(awk -v t="$((after - before))" -v hz="$hz" -v r="$requests" \
                'BEGIN { printf "%.0f", t / hz * 1e6 / r }')")
        done
        rate=$(printf '%s\n' "${rates[@]}" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
        cpu=$(printf '%s\n' "${cpus[@]}" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
        [ -z "$one" ] && one=$rate
        printf '| %s | %s | %s (%s) | %s | %s |\n' "$scenario" "$workers" "$rate" "${rates[*]}" "$cpu" \
            "$(awk -v a="$rate" -v b="$one" 'BEGIN { printf "%.2f", a / b }')"
        kill -TERM -- "-$engine" 2>/dev/null || true
        wait "$engine" 2>/dev/null || true
    done
done
