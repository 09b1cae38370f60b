# Sourced by routing_ab.sh and routing_pair.sh: the work folder and its clean-up, the benchmark's
# 1 KiB JSON and SOAP bodies ($WORK/json, $WORK/xml), and its echo backend on CPU 1.
# Expects ROOT, BENCH_DIR and BACKEND_PORT; appends every process it starts to pids.
WORK="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

"$ROOT/.venv/bin/python" - "$BENCH_DIR/lib" "$WORK" <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
import payloads
open(f"{sys.argv[2]}/json", "wb").write(payloads.json_body(1024))
open(f"{sys.argv[2]}/xml", "wb").write(payloads.xml_body(1024))
PY
PORT=$BACKEND_PORT taskset -c 1 node "$BENCH_DIR/lib/echo_backend.js" >/dev/null 2>&1 </dev/null &
pids+=($!)

hz=$(getconf CLK_TCK)

# measure_cell PID PORT PATH BODY CTYPE: wrk on CPU 1 drives one cell for $SECS seconds; sets
# rate (req/s) and cpu (the engine's CPU µs per request, from /proc/PID/stat).
measure_cell() {
    local engine_pid=$1 engine_port=$2 path=$3 body=$4 ctype=$5 before after out requests us
    before=$(awk '{ print $14 + $15 }' "/proc/$engine_pid/stat")
    out=$(BENCH_BODY="$WORK/$body" BENCH_CTYPE="$ctype" BENCH_HDR_NAME=x-route BENCH_HDR_VALUE=a \
        taskset -c 1 wrk -t1 -c50 -d"${SECS}s" -s "$BENCH_DIR/lib/post.lua" "http://127.0.0.1:$engine_port$path")
    after=$(awk '{ print $14 + $15 }' "/proc/$engine_pid/stat")
    requests=$(sed -n 's/^BENCH_RESULT .*"requests":\([0-9]*\).*/\1/p' <<<"$out")
    us=$(sed -n 's/^BENCH_RESULT .*"duration_us":\([0-9]*\).*/\1/p' <<<"$out")
    rate=$(awk -v r="$requests" -v u="$us" 'BEGIN { printf "%.0f", r / (u / 1e6) }')
    cpu=$(awk -v t="$((after - before))" -v hz="$hz" -v r="$requests" 'BEGIN { printf "%.1f", t / hz * 1e6 / r }')
}
