#!/usr/bin/env bash
# Two engines side by side (A and B), a router against the direct proxy on each, cells alternating.
#
#   A_ENV='PYTHONPATH=/tmp/old-checkout' benchmarks/routing_pair.sh 4 8     # old code (A) against this tree (B)
#   B_ENV='GLIBC_TUNABLES=glibc.malloc.tcache_count=2000' benchmarks/routing_pair.sh
#   CELLS='direct-json /direct json application/json;cbr-json /cbr-json json application/json' benchmarks/routing_pair.sh
#   B_FLOWS=/tmp/flows200 benchmarks/routing_pair.sh      # the same engine on another flow folder
#   PORT_BASE=18690 benchmarks/routing_pair.sh            # beside another run of this script
#
# For changes under ~20 µs per request, which routing_ab.sh cannot separate from the machine's
# drift between two runs: both engines run at once, pinned to CPU 0 (the idle one costs nothing),
# the echo backend and wrk on CPU 1, and every round measures A's and B's cells back to back
# (A first in odd rounds, B first in even ones).  A_ENV and B_ENV are `VAR=value ...` words put in
# front of that engine's `interlace run` (a PYTHONPATH runs another checkout's engine with this
# venv).  Prints each engine's medians and the per-round CPU difference between the second cell
# and the first (by default cbr-xml minus direct-xml): compare the two engines' medians of that.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_DIR="${BENCH_DIR:-$ROOT/../shared/bench}"
[ -d "$BENCH_DIR" ] || BENCH_DIR="$ROOT/../../shared/bench"  # from a worktree one level deeper
SECS="${1:-4}"
ROUNDS="${2:-8}"
PORT_BASE="${PORT_BASE:-18790}"
BACKEND_PORT=$PORT_BASE
# shellcheck source=benchmarks/routing_common.sh
source "$ROOT/benchmarks/routing_common.sh"
declare -A port pid
for e in A B; do
    port[$e]=$([ $e = A ] && echo $((PORT_BASE + 1)) || echo $((PORT_BASE + 3)))
    words="${e}_ENV"
    folder="${e}_FLOWS"
    # shellcheck disable=SC2086  # the words are meant to split
    env ${!words:-} BACKEND_URL="http://127.0.0.1:$BACKEND_PORT" taskset -c 0 "$ROOT/.venv/bin/interlace" run \
        "${!folder:-$ROOT/flows/bench}" --host 127.0.0.1 --port "${port[$e]}" --management-port $((port[$e] + 1)) \
        --log-level warning >"$WORK/engine-$e.log" 2>&1 &
    pid[$e]=$!
    pids+=($!)
    for _ in $(seq 200); do
        curl -sf -o /dev/null -X POST -H 'content-type: application/json' --data-binary @"$WORK/json" \
            "http://127.0.0.1:${port[$e]}/direct" && break
        sleep 0.05
    done
done
IFS=";" read -r -a cells <<<"${CELLS:-direct-xml /direct xml text/xml;cbr-xml /cbr-xml xml text/xml}"
: >"$WORK/results"
for round in $(seq "$ROUNDS"); do
    order=(A B)
    [ $((round % 2)) = 0 ] && order=(B A)
    for e in "${order[@]}"; do
        for cell in "${cells[@]}"; do
            read -r name path body ctype <<<"$cell"
            measure_cell "${pid[$e]}" "${port[$e]}" "$path" "$body" "$ctype"
            echo "round $round  $e  $name  $rate req/s  $cpu µs/req"
            echo "$e $name $rate $cpu $round" >>"$WORK/results"
        done
    done
done
echo
"$ROOT/.venv/bin/python" - "$WORK/results" <<'EOF'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
names = list(dict.fromkeys(r[1] for r in rows))
print("| engine | " + " | ".join(f"{n} req/s | {n} CPU µs" for n in names) + " | ratio | CPU difference per round (median) |")
print("|---|" + "---:|---:|" * len(names) + "---:|---|")
for engine in ("A", "B"):
    mine = [r for r in rows if r[0] == engine]
    rate = {n: statistics.median(float(r[2]) for r in mine if r[1] == n) for n in names}
    cpu = {n: statistics.median(float(r[3]) for r in mine if r[1] == n) for n in names}
    by_round: dict[str, dict[str, float]] = {}
    for r in mine:
        by_round.setdefault(r[4], {})[r[1]] = float(r[3])
    diffs = [c[names[-1]] - c[names[0]] for c in by_round.values()] if len(names) > 1 else [0.0]
    cells = " | ".join(f"{rate[n]:,.0f} | {cpu[n]:.0f}" for n in names)
    print(f"| {engine} | {cells} | {rate[names[-1]] / rate[names[0]]:.2f} | "
          f"{', '.join(f'{d:+.0f}' for d in diffs)} ({statistics.median(diffs):+.0f}) |")
EOF
