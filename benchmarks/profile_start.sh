#!/usr/bin/env bash
# py-spy over one start of `interlace run`, from spawning it to its first answer; prints the
# hottest functions of every thread (the flows load in an executor thread).
#
#   benchmarks/profile_start.sh                    # 200 generated flows, GET /gen/0/ping
#   benchmarks/profile_start.sh flows /hello       # a folder and a route it answers with 200
#
# Needs py-spy (test extras) with ptrace allowed.  Output: $OUT (default /tmp/interlace-start)/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-/tmp/interlace-start}"
PORT="${PORT:-18391}"
MGMT_PORT="${MGMT_PORT:-18392}"
PY="$ROOT/.venv/bin/python"
SPY="${PY_SPY:-$ROOT/.venv/bin/py-spy}"
mkdir -p "$OUT"
DIR="${1:-}"
ROUTE="${2:-/gen/0/ping}"
if [ -z "$DIR" ]; then
    DIR="$OUT/flows"
    rm -rf "$DIR"
    "$PY" "$ROOT/benchmarks/gen_flows.py" "$DIR" >/dev/null
fi

"$SPY" record -r 250 -f raw -o "$OUT/stacks.txt" -- "$PY" -m engine.cli run "$DIR" --host 127.0.0.1 \
    --port "$PORT" --management-port "$MGMT_PORT" --log-level warning >"$OUT/py-spy.log" 2>&1 &
spy=$!
started=$(date +%s.%N)
engine=""
for _ in $(seq 3000); do
    [ -n "$engine" ] || engine=$(pgrep -P "$spy" || true)
    curl -sf -o /dev/null "http://127.0.0.1:$PORT$ROUTE" && break
    sleep 0.005
done
echo "first answer after $(echo "$(date +%s.%N) - $started" | bc) s (sampled, so slower than unprofiled)"
[ -n "$engine" ] || engine=$(pgrep -P "$spy")
kill -TERM "$engine"
wait "$spy" || true
"$PY" "$ROOT/benchmarks/stacks.py" "$OUT/stacks.txt" --threads --top "${TOP:-40}"
