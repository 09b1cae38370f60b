#!/usr/bin/env bash
# Profile the engine's hot path under load: the benchmark's echo backend and wrk on CPU 1,
# one engine worker on CPU 0 serving flows/bench, py-spy sampling it while wrk drives one
# scenario.  Prints the hottest functions (self and total time); keeps the raw stacks.
#
#   benchmarks/profile.sh                       # direct, 1 KiB JSON, 10 s
#   benchmarks/profile.sh cbr-json 10k 15       # scenario, size, seconds
#   PROFILE_NATIVE=1 benchmarks/profile.sh      # include C frames (py-spy --native)
#
# Needs node, wrk, taskset and py-spy (`.venv/bin/pip install py-spy`); py-spy needs ptrace
# (root, or kernel.yama.ptrace_scope=0).  Output: $OUT (default /tmp/interlace-profile)/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_DIR="${BENCH_DIR:-$ROOT/../shared/bench}"
[ -d "$BENCH_DIR" ] || BENCH_DIR="$ROOT/../../shared/bench"  # from a worktree one level deeper
SCENARIO="${1:-direct-json}"
SIZE="${2:-1k}"
SECONDS_="${3:-10}"
OUT="${OUT:-/tmp/interlace-profile}"
BACKEND_PORT="${BACKEND_PORT:-18190}"
PORT="${PORT:-18191}"
MGMT_PORT="${MGMT_PORT:-18192}"
PY="$ROOT/.venv/bin/python"
SPY="${PY_SPY:-$ROOT/.venv/bin/py-spy}"
mkdir -p "$OUT"

case "$SCENARIO" in
    direct-json) path=/direct; kind=json ;;
    direct-xml) path=/direct; kind=xml ;;
    cbr-json) path=/cbr-json; kind=json ;;
    cbr-xml) path=/cbr-xml; kind=xml ;;
    hbr) path=/hbr; kind=xml ;;
    xslt) path=/xslt; kind=xml ;;
    json-transform) path=/json-transform; kind=json ;;
    *) echo "unknown scenario $SCENARIO" >&2; exit 2 ;;
esac
bytes=$(case "$SIZE" in 1k) echo 1024 ;; 10k) echo 10240 ;; 100k) echo 102400 ;; *) echo "$SIZE" ;; esac)
"$PY" - "$BENCH_DIR/lib" "$kind" "$bytes" "$OUT/body" <<'EOF'
import sys
sys.path.insert(0, sys.argv[1])
import payloads
make = payloads.json_body if sys.argv[2] == "json" else payloads.xml_body
open(sys.argv[4], "wb").write(make(int(sys.argv[3])))
EOF
ctype=$([ "$kind" = json ] && echo application/json || echo 'text/xml; charset=utf-8')

pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done; }
trap cleanup EXIT

PORT=$BACKEND_PORT setsid taskset -c 1 node "$BENCH_DIR/lib/echo_backend.js" >"$OUT/backend.log" 2>&1 &
pids+=($!)
BACKEND_URL="http://127.0.0.1:$BACKEND_PORT" setsid taskset -c 0 "$ROOT/.venv/bin/interlace" run \
    --host 127.0.0.1 --port "$PORT" --management-port "$MGMT_PORT" "$ROOT/flows/bench" >"$OUT/engine.log" 2>&1 &
engine=$!
pids+=($engine)
for _ in $(seq 100); do
    curl -sf -o /dev/null -X POST -H "content-type: $ctype" --data-binary @"$OUT/body" \
        "http://127.0.0.1:$PORT$path" && break
    sleep 0.1
done
export BENCH_BODY="$OUT/body" BENCH_CTYPE="$ctype" BENCH_HDR_NAME=x-route BENCH_HDR_VALUE=a
taskset -c 1 wrk -t1 -c50 -d2s -s "$BENCH_DIR/lib/post.lua" "http://127.0.0.1:$PORT$path" >/dev/null
taskset -c 1 wrk -t1 -c50 -d"$((SECONDS_ + 2))s" -s "$BENCH_DIR/lib/post.lua" "http://127.0.0.1:$PORT$path" \
    >"$OUT/wrk.txt" &
wrk_pid=$!
sleep 1
native=()
[ "${PROFILE_NATIVE:-0}" = 1 ] && native=(--native)
"$SPY" record -p "$engine" -d "$SECONDS_" -r 250 -f raw -o "$OUT/stacks.txt" "${native[@]}" >/dev/null 2>&1
wait "$wrk_pid"
grep -E "Requests/sec|Latency" "$OUT/wrk.txt"
"$PY" "$ROOT/benchmarks/stacks.py" "$OUT/stacks.txt"
