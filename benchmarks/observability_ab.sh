#!/usr/bin/env bash
# What observability costs on the direct proxy (1 KiB JSON): tracing off, tracing on at 100 %,
# metrics; engines side by side in one run, read as CPU time per request.
#
#   benchmarks/observability_ab.sh [SECONDS] [ROUNDS]            # default 4 s, 6 rounds
#   BEFORE=/tmp/interlace-before benchmarks/observability_ab.sh   # also an older checkout, as "before"
#   ENGINES="off traced" benchmarks/observability_ab.sh 4 12     # only these engines (off among them)
#   TRACED_ENV="OTEL_BSP_MAX_EXPORT_BATCH_SIZE=64" ...            # more variables for "traced" alone
#
# Engines, all running at once pinned to CPU 0 (an idle one costs nothing), the echo backend, wrk
# and the span sink on CPU 1; every round drives each engine's cell back to back, in a rotating
# order:
#   before      BEFORE's engine (e.g. an older commit), if given, tracing off
#   beforetraced  BEFORE's engine with tracing on as "traced" (its own sink)
#   nometrics   this tree with the request, step and backend telemetry calls made no-ops
#               (no metrics, no tracing code at all): what the metrics cost
#   notracing   this tree with every `tracing.ENABLED` test replaced by False: the tracing code
#               compiled away, metrics on
#   off         this tree as it ships, tracing off (OTEL_* unset), metrics on
#   traced      tracing on at 100 % (OTEL_TRACES_SAMPLER=always_on), OTLP/HTTP to a loopback sink
#               that decodes every export and counts its spans (2 a request: server, and the call step's client span)
#   requestlog  tracing off, one JSON request line per request (--log-level info) into a file
# and, named in ENGINES only, tracing's cost taken apart (each traced at 100 %, as "traced"):
#   tracedids       OTEL_BSP_MAX_QUEUE_SIZE=0: every span dropped before it is encoded (the ids,
#                   the current span, the traceparent sent on, the exemplars; no span written)
#   tracednoqueue   this tree with each span encoded and then dropped (never queued)
#   tracednoexport  this tree with the spans encoded and queued, a full batch dropped by the
#                   request that fills it (no export thread at work)
#
# CPU per request = utime + stime (/proc/PID/stat) of the engine process (its span export
# thread included: engine/span_export.py) and of any process under it, over the requests wrk
# counted.  The machine is shared: read the ratios of one run, back to back; wall
# req/s moves with everyone else's load, CPU µs per request much less.
#
# Prints one table: CPU µs/request and its ratio to "off" (the figures to quote), req/s and its
# ratio; then the spans the sink received per traced request (2.00 or a little more: none dropped).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# the peer benchmark's folder: beside the checkout (/work/main -> /work/shared/bench), or one up
BENCH_DIR="${BENCH_DIR:-$(cd "$ROOT/.." && pwd)/shared/bench}"
[ -d "$BENCH_DIR" ] || BENCH_DIR="$(cd "$ROOT/../.." && pwd)/shared/bench"
SECS="${1:-4}"
ROUNDS="${2:-6}"

BACKEND_PORT=18890
SINK_PORT=18880
# shellcheck source=benchmarks/routing_common.sh
source "$ROOT/benchmarks/routing_common.sh"

# the span sink: decodes every OTLP/HTTP export (opentelemetry-proto) and counts the spans;
# GET answers the count
for sink_port in "$SINK_PORT" $((SINK_PORT + 1)); do  # the second for BEFORE's traced engine
    taskset -c 1 "$ROOT/.venv/bin/python" "$ROOT/benchmarks/span_sink.py" "$sink_port" >"$WORK/sink-$sink_port.log" 2>&1 &
    pids+=($!)
done

# the patched trees, copies of the working tree (its files, committed or not)
variant() {  # variant NAME PYTHON-PATCH
    mkdir "$WORK/$1"
    (cd "$ROOT" && git ls-files -z -co --exclude-standard engine connectors designer | tar --null -T - -c) |
        tar -x -C "$WORK/$1"
    "$ROOT/.venv/bin/python" - "$WORK/$1" <<<"$2"
}
variant nometrics '
import pathlib, sys
root = pathlib.Path(sys.argv[1])
def patch(name, after, line):
    path = root / name
    text = path.read_text()
    assert after in text, (name, after)
    path.write_text(text.replace(after, after + line, 1))
patch("engine/telemetry.py", "def begin(method: str, path: str, headers: dict[str, str], cid: str) -> Seen:\n",
      "    return None  # type: ignore\n")
patch("engine/telemetry.py", "def routed(seen: Seen, flow: str, route: str, tallies: RouteTallies | None = None) -> None:\n",
      "    return\n")
patch("engine/telemetry.py", "        error: BaseException | None = None) -> None:\n", "    return\n")
patch("engine/instrument.py", "    \"\"\"``run`` timed (and traced when tracing is on), as a step of the same shape.\"\"\"\n",
      "    return run\n")
patch("connectors/observe.py", "    def _done(self, outcome: str) -> None:\n", "        return\n")
'
variant notracing '
import pathlib, sys
root = pathlib.Path(sys.argv[1])
count = 0
for path in [*root.glob("engine/**/*.py"), *root.glob("connectors/**/*.py")]:
    text = path.read_text()
    if "tracing.ENABLED" in text:
        count += text.count("tracing.ENABLED")
        path.write_text(text.replace("tracing.ENABLED", "False"))
assert count >= 4, count
'

if [[ " ${ENGINES:-} " == *" tracednoqueue "* ]]; then
    variant tracednoqueue '
import pathlib, sys
path = pathlib.Path(sys.argv[1]) / "engine/tracing.py"
text = path.read_text()
assert text.count("pending.append(") >= 6, text.count("pending.append(")
path.write_text(text.replace("pending.append(", "("))
'
fi
if [[ " ${ENGINES:-} " == *" tracednoexport "* ]]; then
    variant tracednoexport '
import pathlib, sys
path = pathlib.Path(sys.argv[1]) / "engine/tracing.py"
text = path.read_text()
assert text.count("exporter.wake.set()") >= 3, text.count("exporter.wake.set()")
path.write_text(text.replace("exporter.wake.set()", "del pending[:]"))
'
fi

BEFORE_DIR=${BEFORE:-}
engines=(nometrics notracing off traced requestlog)
[ -n "$BEFORE_DIR" ] && engines=(before beforetraced "${engines[@]}")
if [ -n "${ENGINES:-}" ]; then
    read -r -a engines <<<"$ENGINES"
fi
declare -A port pid served
next_port=18891
for e in "${engines[@]}"; do
    port[$e]=$next_port
    next_port=$((next_port + 2))
    env_words=()
    level=warning
    case $e in
        traced) env_words=("OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$SINK_PORT" "OTEL_TRACES_SAMPLER=always_on"
                           ${TRACED_ENV:-}) ;;
        # the parts: no timed export either, so that the sink counts "traced"'s spans alone
        tracednoqueue | tracednoexport)
            env_words=("OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$SINK_PORT" "OTEL_TRACES_SAMPLER=always_on"
                       "OTEL_BSP_SCHEDULE_DELAY=3600000") ;;
        tracedids) env_words=("OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$SINK_PORT" "OTEL_TRACES_SAMPLER=always_on"
                              "OTEL_BSP_SCHEDULE_DELAY=3600000" "OTEL_BSP_MAX_QUEUE_SIZE=0") ;;
        beforetraced) env_words=("OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$((SINK_PORT + 1))"
                                 "OTEL_TRACES_SAMPLER=always_on") ;;
        requestlog) level=info ;;
    esac
    case $e in  # python -m finds the engine package in the working folder first
        before | beforetraced) dir=$BEFORE_DIR ;;
        nometrics | notracing | tracednoqueue | tracednoexport) dir=$WORK/$e ;;
        *) dir=$ROOT ;;
    esac
    (cd "$dir" && exec env "${env_words[@]}" BACKEND_URL="http://127.0.0.1:$BACKEND_PORT" taskset -c 0 \
        "$ROOT/.venv/bin/python" -m engine.cli run "$ROOT/flows/bench" --host 127.0.0.1 --port "${port[$e]}" \
        --management-port $((port[$e] + 1)) --log-level $level --log-format json) >"$WORK/engine-$e.log" 2>&1 &
    pid[$e]=$!
    pids+=($!)
    served[$e]=0
    for _ in $(seq 200); do
        curl -sf -o /dev/null -X POST -H 'content-type: application/json' --data-binary @"$WORK/json" \
            "http://127.0.0.1:${port[$e]}/direct" && break
        sleep 0.05
    done
    served[$e]=1
done

hz=$(getconf CLK_TCK)
cpu_ticks() {  # utime + stime of a process and every process under it, in clock ticks
    local total=0 p kids
    total=$(awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0)
    kids=$(cat /proc/"$1"/task/*/children 2>/dev/null || true)
    for p in $kids; do
        total=$((total + $(cpu_ticks "$p")))
    done
    echo "$total"
}

: >"$WORK/results"
for round in $(seq "$ROUNDS"); do
    count=${#engines[@]}
    for i in $(seq 0 $((count - 1))); do
        e=${engines[$(((i + round) % count))]}
        before=$(cpu_ticks "${pid[$e]}")
        own_before=$(awk '{ print $14 + $15 }' "/proc/${pid[$e]}/stat")
        out=$(BENCH_BODY="$WORK/json" BENCH_CTYPE=application/json taskset -c 1 \
            wrk -t1 -c50 -d"${SECS}s" -s "$BENCH_DIR/lib/post.lua" "http://127.0.0.1:${port[$e]}/direct")
        after=$(cpu_ticks "${pid[$e]}")
        own_after=$(awk '{ print $14 + $15 }' "/proc/${pid[$e]}/stat")
        requests=$(sed -n 's/^BENCH_RESULT .*"requests":\([0-9]*\).*/\1/p' <<<"$out")
        us=$(sed -n 's/^BENCH_RESULT .*"duration_us":\([0-9]*\).*/\1/p' <<<"$out")
        served[$e]=$((served[$e] + requests))
        rate=$(awk -v r="$requests" -v u="$us" 'BEGIN { printf "%.0f", r / (u / 1e6) }')
        cpu=$(awk -v t="$((after - before))" -v hz="$hz" -v r="$requests" 'BEGIN { printf "%.1f", t / hz * 1e6 / r }')
        helper=$(awk -v t="$((after - before - own_after + own_before))" -v hz="$hz" -v r="$requests" \
            'BEGIN { printf "%.1f", t / hz * 1e6 / r }')
        echo "round $round  $e  $rate req/s  $cpu µs/req (of which processes under the engine: $helper)"
        echo "$e $rate $cpu $helper $round" >>"$WORK/results"
    done
done
[ -n "${pid[requestlog]:-}" ] &&
    echo "request lines written: $(grep -c '"logger":"interlace.request"' "$WORK/engine-requestlog.log" || true)"
# the traced engine's last spans leave on its next export (OTEL_BSP_SCHEDULE_DELAY, 5 s)
sleep 6
spans=$(curl -sf "http://127.0.0.1:$SINK_PORT/" || echo 0)
echo
"$ROOT/.venv/bin/python" - "$WORK/results" "$spans" "${served[traced]:-0}" <<'EOF'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
engines = list(dict.fromkeys(r[0] for r in rows))
rate = {e: statistics.median(float(r[1]) for r in rows if r[0] == e) for e in engines}
cpu = {e: statistics.median(float(r[2]) for r in rows if r[0] == e) for e in engines}
helper = {e: statistics.median(float(r[3]) for r in rows if r[0] == e) for e in engines}
print("| engine | CPU µs/request (median) | CPU vs off | req/s (median) | req/s vs off |")
print("|---|---:|---:|---:|---:|")
for e in engines:
    print(f"| {e} | {cpu[e]:.0f} | {cpu[e] / cpu['off']:.3f} | {rate[e]:,.0f} | {rate[e] / rate['off']:.2f} |")
print()
def paired(e: str, against: str) -> str:
    """The median over rounds of e's CPU / against's CPU in the same round (back to back: the
    machine's load moves less between them than between rounds)."""
    ratios = [float(a[2]) / float(b[2]) for a in rows if a[0] == e for b in rows if b[0] == against and b[4] == a[4]]
    return f"; paired by round {statistics.median(ratios) - 1:+.1%}" if ratios else ""


if "traced" in cpu:
    print(f"tracing on at 100 %:  {cpu['traced'] / cpu['off'] - 1:+.1%} CPU per request against off "
          f"({cpu['traced'] - cpu['off']:+.0f} µs, export thread included){paired('traced', 'off')}")
if "beforetraced" in cpu and "before" in cpu:
    print(f"before, tracing on:   {cpu['beforetraced'] / cpu['before'] - 1:+.1%} CPU per request against before off "
          f"({cpu['beforetraced'] - cpu['before']:+.0f} µs, of which processes under it {helper['beforetraced']:.0f} µs)"
          f"{paired('beforetraced', 'before')}")
if "beforetraced" in cpu:  # this tree's tracing against BEFORE's, each against this tree's off
    print(f"before, tracing on:   {cpu['beforetraced'] / cpu['off'] - 1:+.1%} CPU per request against off"
          f"{paired('beforetraced', 'off')}")
    if "traced" in cpu:
        print(f"traced / beforetraced: {cpu['traced'] / cpu['beforetraced'] - 1:+.1%}{paired('traced', 'beforetraced')}")
if "notracing" in cpu:
    print(f"tracing off:          {cpu['off'] / cpu['notracing'] - 1:+.1%} against the tracing code compiled away")
if "nometrics" in cpu:
    print(f"metrics:              {cpu['off'] / cpu['nometrics'] - 1:+.1%} against no telemetry at all")
for part in ("tracedids", "tracednoqueue", "tracednoexport"):
    if part in cpu:
        print(f"{part + ':':<22}{cpu[part] / cpu['off'] - 1:+.1%} against off{paired(part, 'off')}")
if "requestlog" in cpu:
    print(f"request log (info):   {cpu['requestlog'] / cpu['off'] - 1:+.1%} against off{paired('requestlog', 'off')}")
spans, served = int(sys.argv[2]), int(sys.argv[3])
if served:
    print(f"spans received per traced request: {spans / served:.2f} ({spans} for {served} requests; 2.00 or a little "
          f"more = none dropped: wrk does not count the requests in flight when it stops)")
EOF
