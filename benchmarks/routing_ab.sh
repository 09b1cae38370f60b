#!/usr/bin/env bash
# Content routing against the direct proxy, back to back on one engine process.
#
#   benchmarks/routing_ab.sh            # 3 rounds of 4 s cells, 1 KiB bodies
#   benchmarks/routing_ab.sh 5 5        # seconds per cell, rounds
#   ROUTING_TIMERS=1 benchmarks/routing_ab.sh   # also what the routing steps cost per call in the
#                                               # loaded engine (benchmarks/routing_timers.py)
#
# run.sh measures direct-json and cbr-json minutes apart, and on this shared VM the machine
# changes in between; here one engine (CPU 0) and the echo backend and wrk (CPU 1) serve
# direct-json, cbr-json, direct-xml, cbr-xml and hbr in turn, seconds apart, round after
# round.  Prints req/s and the engine's CPU µs per request for every cell, then the medians
# and each router's ratio to the direct proxy of the same body (the goal: within 15 %).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_DIR="${BENCH_DIR:-$ROOT/../shared/bench}"
[ -d "$BENCH_DIR" ] || BENCH_DIR="$ROOT/../../shared/bench"  # from a worktree one level deeper
SECS="${1:-4}"
ROUNDS="${2:-3}"
BACKEND_PORT=18590
PORT=18591
# shellcheck source=benchmarks/routing_common.sh
source "$ROOT/benchmarks/routing_common.sh"
interlace=("$ROOT/.venv/bin/interlace")
[ "${ROUTING_TIMERS:-0}" = 1 ] && interlace=("$ROOT/.venv/bin/python" "$ROOT/benchmarks/routing_timers.py")
BACKEND_URL="http://127.0.0.1:$BACKEND_PORT" ROUTING_TIMERS_OUT="$WORK/timers" taskset -c 0 "${interlace[@]}" run \
    "$ROOT/flows/bench" --host 127.0.0.1 --port $PORT --management-port $((PORT + 1)) --log-level warning \
    >"$WORK/engine.log" 2>&1 &
engine=$!
pids+=($engine)
for _ in $(seq 200); do
    curl -sf -o /dev/null -X POST -H 'content-type: application/json' --data-binary @"$WORK/json" \
        "http://127.0.0.1:$PORT/direct" && break
    sleep 0.05
done
cells=("direct-json /direct json application/json" "cbr-json /cbr-json json application/json"
       "direct-xml /direct xml text/xml" "cbr-xml /cbr-xml xml text/xml" "hbr /hbr xml text/xml")
: >"$WORK/results"
for round in $(seq "$ROUNDS"); do
    for cell in "${cells[@]}"; do
        read -r name path body ctype <<<"$cell"
        if [ "${ROUTING_TIMERS:-0}" = 1 ]; then kill -USR1 "$engine"; sleep 0.2; : >"$WORK/timers"; fi
        measure_cell "$engine" "$PORT" "$path" "$body" "$ctype"
        echo "round $round  $name  $rate req/s  $cpu µs/req"
        if [ "${ROUTING_TIMERS:-0}" = 1 ]; then kill -USR1 "$engine"; sleep 0.2; sed 's/^/    /' "$WORK/timers"; fi
        echo "$name $rate $cpu" >>"$WORK/results"
    done
done
echo
"$ROOT/.venv/bin/python" - "$WORK/results" <<'EOF'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
med = {name: (statistics.median(float(r[1]) for r in rows if r[0] == name),
              statistics.median(float(r[2]) for r in rows if r[0] == name)) for name in dict.fromkeys(r[0] for r in rows)}
print("| scenario | req/s (median) | CPU µs/req | ratio to the direct proxy of the same body |")
print("|---|---:|---:|---:|")
for name, (rate, cpu) in med.items():
    direct = med["direct-xml" if name in ("cbr-xml", "hbr") else "direct-json"][0]
    print(f"| {name} | {rate:,.0f} | {cpu:.0f} | {rate / direct:.2f} |")
EOF
