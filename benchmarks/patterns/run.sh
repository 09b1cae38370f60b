#!/usr/bin/env bash
# The pattern cells side by side: the engine (benchmarks/patterns/flows.yaml) and a floor written
# by hand (floor_app.py), against the shared benchmark's echo backend, one wrk run per cell.
#
#   benchmarks/patterns/run.sh [SECONDS]      # default 5 s a cell; prints a markdown table
#
# Cells: scatter-gather of three calls, split of 100 items, a cached answer (beside the direct
# proxy it saves), a JWT-verified direct proxy (beside the plain one). One core each for the
# mediator and wrk where the machine has two.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
seconds="${1:-5}"
py="$repo/.venv/bin/python"
work="$(mktemp -d)"; echo "work: $work" >&2
trap 'kill $(jobs -p) 2>/dev/null || true; [ -n "${BENCH_KEEP:-}" ] || rm -rf "$work"' EXIT
free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

backend_port=$(free_port)
PORT=$backend_port node "$repo/../shared/bench/lib/echo_backend.js" > "$work/backend.log" 2>&1 &
export BACKEND_URL="http://127.0.0.1:$backend_port"

"$py" - "$work" <<'PY'
import json, sys, time, jwt
from cryptography.hazmat.primitives.asymmetric import rsa
work = sys.argv[1]
key = rsa.generate_private_key(65537, 2048)
jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
open(f"{work}/jwks.json", "w").write(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig"}]}))
open(f"{work}/token", "w").write(jwt.encode({"iss": "https://gateway.bench", "sub": "bench",
                                             "exp": int(time.time()) + 3600}, key, algorithm="RS256",
                                            headers={"kid": "k1"}))
items = [{"id": f"i{n}", "qty": n % 7 + 1, "price": 2.5} for n in range(100)]
open(f"{work}/split.json", "w").write(json.dumps({"items": items}))
open(f"{work}/small.json", "w").write(json.dumps({"order": {"id": "1001", "lines": [1, 2, 3]}}))
PY
export BENCH_JWKS="$work/jwks.json"
token=$(cat "$work/token")

engine_port=$(free_port); mgmt_port=$(free_port); floor_port=$(free_port)
taskset -c 0 "$repo/.venv/bin/interlace" run "$here" --port "$engine_port" --management-port "$mgmt_port" \
    > "$work/engine.log" 2>&1 &
(cd "$repo" && taskset -c 0 "$py" -m uvicorn benchmarks.patterns.floor_app:app --port "$floor_port" \
    --loop uvloop --http httptools --no-access-log --log-level warning > "$work/floor.log" 2>&1) &
for port in "$engine_port" "$floor_port" "$backend_port"; do
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
done

cat > "$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BODY_FILE"), "rb"); wrk.body = f:read("*a"); f:close()
LUA

cell() {  # name port path method body -> req/s
    local port=$1 path=$2 method=$3 body=$4
    local args=(-t1 -c50 -d"${seconds}s" --timeout 5s -H "X-JWT-Assertion: $token")
    [ "$method" = POST ] && args+=(-s "$work/post.lua")
    BODY_FILE="$body" taskset -c 1 wrk "${args[@]}" "http://127.0.0.1:$port$path" > /dev/null  # warm-up
    BODY_FILE="$body" taskset -c 1 wrk "${args[@]}" "http://127.0.0.1:$port$path" | awk '/Requests\/sec/ {print $2}'
}

echo "| cell | engine req/s | floor req/s | engine / floor |"
echo "|---|---:|---:|---:|"
declare -A engine floor
for spec in "direct /direct POST small" "scatter /scatter GET small" "split /split POST split" \
            "cached /cached POST small" "jwt /jwt POST small"; do
    read -r name path method body <<< "$spec"
    engine[$name]=$(cell "$engine_port" "$path" "$method" "$work/$body.json")
    floor[$name]=$(cell "$floor_port" "$path" "$method" "$work/$body.json")
    awk -v n="$name" -v e="${engine[$name]}" -v f="${floor[$name]}" \
        'BEGIN {printf "| %s | %.0f | %.0f | %.2fx |\n", n, e, f, e / f}'
done
awk -v c="${engine[cached]}" -v d="${engine[direct]}" -v j="${engine[jwt]}" \
    'BEGIN {printf "\nengine: a cached answer is %.2fx a backend call; JWT verification costs %.1f %% of the direct proxy\n", c / d, (1 - j / d) * 100}'
