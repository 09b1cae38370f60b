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
