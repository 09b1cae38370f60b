#!/usr/bin/env bash
# What observability costs on the direct proxy (1 KiB JSON), engines side by side in one run.
#
#   benchmarks/observability_ab.sh [SECONDS] [ROUNDS]            # default 4 s, 6 rounds
#   BEFORE=/tmp/interlace-before benchmarks/observability_ab.sh   # also an older checkout, as "before"
#
# Engines, all running at once pinned to CPU 0 (an idle one costs nothing), the echo backend, wrk
# and the span sink on CPU 1; every round measures each engine's cell back to back, in a rotating
# order:
#   before       BEFORE's engine (e.g. the commit before prometheus_client and OpenTelemetry), if given
#   nometrics    this tree with the telemetry calls made no-ops: what the metrics cost
#   off          tracing off: metrics only (the default)
#   traced       tracing on at 100 % (OTEL_TRACES_SAMPLER=always_on), OTLP/HTTP to a loopback sink
#   requestlog   tracing off, one JSON request line per request (--log-level info) into a file
# Prints the median req/s and engine CPU µs per request of each, and the ratio to "off".
# The machine is shared: compare the figures of one run, never across runs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_DIR="${BENCH_DIR:-$ROOT/../shared/bench}"
[ -d "$BENCH_DIR" ] || BENCH_DIR="$ROOT/../../shared/bench"  # from a worktree one level deeper
SECS="${1:-4}"
ROUNDS="${2:-6}"

BACKEND_PORT=18890
SINK_PORT=18899
# shellcheck source=benchmarks/routing_common.sh
source "$ROOT/benchmarks/routing_common.sh"

# the span sink: answers every OTLP/HTTP export with 200 without decoding it
taskset -c 1 "$ROOT/.venv/bin/python" - "$SINK_PORT" >/dev/null 2>&1 <<'PY' &
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
PY
pids+=($!)

# "nometrics": this tree with the request, step and backend telemetry calls made no-ops (what the
# metrics cost); built from the working tree's HEAD in the work folder
mkdir "$WORK/nometrics"
git -C "$ROOT" archive HEAD | tar -x -C "$WORK/nometrics"
"$ROOT/.venv/bin/python" - "$WORK/nometrics" <<'PY'
import pathlib, sys
root = pathlib.Path(sys.argv[1])
def patch(name, after, line):
    path = root / name
    text = path.read_text()
    assert after in text, (name, after)
    path.write_text(text.replace(after, after + line, 1))
patch("engine/telemetry.py", "def begin(method: str, path: str, headers: dict[str, str], cid: str) -> Seen:\n",
      "    return None  # type: ignore\n")
patch("engine/telemetry.py", "def routed(seen: Seen, flow: str, route: str) -> None:\n", "    return\n")
patch("engine/telemetry.py", "        error: BaseException | None = None) -> None:\n", "    return\n")
patch("engine/instrument.py", '    """``run`` timed (and traced when tracing is on), as a step of the same shape."""\n',
      "    return run\n")
patch("connectors/observe.py", "    def _done(self, outcome: str) -> None:\n", "        return\n")
PY
BEFORE_DIR=${BEFORE:-}
engines=(nometrics off traced requestlog)
[ -n "$BEFORE_DIR" ] && engines=(before "${engines[@]}")
declare -A port pid
next_port=18891
for e in "${engines[@]}"; do
    port[$e]=$next_port
    next_port=$((next_port + 2))
    env_words=()
    level=warning
    case $e in
        before) env_words=("PYTHONPATH=$BEFORE") ;;
        traced) env_words=("OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$SINK_PORT" "OTEL_TRACES_SAMPLER=always_on") ;;
        requestlog) level=info ;;
    esac
    dir=$ROOT  # python -m finds the engine package in the working folder first
    [ "$e" = before ] && dir=$BEFORE_DIR
    [ "$e" = nometrics ] && dir=$WORK/nometrics
    (cd "$dir" && exec env "${env_words[@]}" BACKEND_URL="http://127.0.0.1:$BACKEND_PORT" taskset -c 0 \
        "$ROOT/.venv/bin/python" -m engine.cli run "$ROOT/flows/bench" --host 127.0.0.1 --port "${port[$e]}" \
        --management-port $((port[$e] + 1)) --log-level $level --log-format json) >"$WORK/engine-$e.log" 2>&1 &
    pid[$e]=$!
    pids+=($!)
    for _ in $(seq 200); do
        curl -sf -o /dev/null -X POST -H 'content-type: application/json' --data-binary @"$WORK/json" \
            "http://127.0.0.1:${port[$e]}/direct" && break
        sleep 0.05
    done
done

: >"$WORK/results"
for round in $(seq "$ROUNDS"); do
    count=${#engines[@]}
    for i in $(seq 0 $((count - 1))); do
        e=${engines[$(((i + round) % count))]}
        measure_cell "${pid[$e]}" "${port[$e]}" /direct json application/json
        echo "round $round  $e  $rate req/s  $cpu µs/req"
        echo "$e $rate $cpu" >>"$WORK/results"
    done
done
echo "request lines written: $(grep -c '"logger":"interlace.request"' "$WORK/engine-requestlog.log" || true)"
echo
"$ROOT/.venv/bin/python" - "$WORK/results" <<'EOF'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
engines = list(dict.fromkeys(r[0] for r in rows))
rate = {e: statistics.median(float(r[1]) for r in rows if r[0] == e) for e in engines}
cpu = {e: statistics.median(float(r[2]) for r in rows if r[0] == e) for e in engines}
print("| engine | direct-json req/s (median) | engine CPU µs/req | throughput vs off | CPU vs off |")
print("|---|---:|---:|---:|---:|")
for e in engines:
    print(f"| {e} | {rate[e]:,.0f} | {cpu[e]:.0f} | {rate[e] / rate['off']:.2f} | {cpu[e] - cpu['off']:+.0f} µs |")
EOF
