#!/usr/bin/env bash
# The pattern cells of issue 15, one command: the engine (benchmarks/patterns/flows.yaml) beside a
# floor written by hand for the same work (floor_app.py: Starlette + one pooled aiohttp session),
# against the shared benchmark's echo backend, and every ratio the issue sets a goal for.
#
#   benchmarks/patterns/run.sh [SECONDS]      # default 4 s a cell (after a 1 s warm-up)
#   BENCH_ROUNDS=7 benchmarks/patterns/run.sh  # rounds (default 5)
#
# Cells: direct proxy, scatter-gather of three calls, split of 100 items, a cached answer, a
# JWT-verified direct proxy (the gateway resending one assertion: verified once, remembered) and
# the same with a new token on every request (a signature check each time).
#
# Two measures per cell: wall req/s (wrk, 50 connections), and CPU per request of the serving
# process (utime+stime from /proc over the measured run / requests answered).  Every round runs
# every cell on both sides, engine and floor back to back; a ratio is taken within each round
# (engine/floor of one cell; cached, jwt and jwt-fresh against that round's direct), and the
# figure printed is the median of the rounds' ratios, with their lowest and highest.  This VM's
# speed drifts by tens of percent over minutes, so a ratio of two figures taken seconds apart
# holds where one of two bests taken minutes apart did not.  The serving processes share core
# 0, wrk runs on core 1 (where the machine has two).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
seconds="${1:-4}"
rounds="${BENCH_ROUNDS:-5}"
# fresh tokens a round's measured jwt-fresh run may use (at 8,000 req/s, 4 s take 32,000)
per_round="${BENCH_FRESH_TOKENS:-10000}"; per_round=$(( per_round * seconds ))
py="$repo/.venv/bin/python"
work="$(mktemp -d)"; echo "work: $work" >&2
trap 'kill $(jobs -p) 2>/dev/null || true; [ -n "${BENCH_KEEP:-}" ] || rm -rf "$work"' EXIT
free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cores=$(nproc)
serve_core=0; load_core=$(( cores > 1 ? 1 : 0 ))

# the shared benchmark's echo backend, beside the repository (a worktree sits one level deeper)
echo_js=""
for shared in "$repo/../shared" "$repo/../../shared"; do
    [ -f "$shared/bench/lib/echo_backend.js" ] && { echo_js="$shared/bench/lib/echo_backend.js"; break; }
done
[ -n "$echo_js" ] || { echo "no shared/bench/lib/echo_backend.js beside $repo" >&2; exit 1; }
backend_port=$(free_port)
PORT=$backend_port node "$echo_js" > "$work/backend.log" 2>&1 &
export BACKEND_URL="http://127.0.0.1:$backend_port"

# keys, tokens and bodies made here: the fresh-token cell needs more tokens than it sends requests
# (the engine remembers 10,000 verified tokens, least recently used out first)
"$py" - "$work" "$rounds" "$per_round" <<'PY'
import json, sys, time
from concurrent.futures import ProcessPoolExecutor
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

work, rounds, per_round = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
key = rsa.generate_private_key(65537, 2048)
jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
open(f"{work}/jwks.json", "w").write(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig"}]}))
pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
exp = int(time.time()) + 3600

def tokens(start: int, count: int = 1000) -> list[str]:
    signer = serialization.load_pem_private_key(pem, None)
    return [jwt.encode({"iss": "https://gateway.bench", "sub": f"user-{n}", "exp": exp}, signer, algorithm="RS256",
                       headers={"kid": "k1"}) for n in range(start, start + count)]

with ProcessPoolExecutor() as pool:
    # a round's measured run takes per_round of its own; the warm-ups share the last 10,000
    fresh = [t for batch in pool.map(tokens, range(0, rounds * per_round + 10_000, 1000)) for t in batch]
open(f"{work}/token", "w").write(fresh[0])
open(f"{work}/tokens", "w").write("\n".join(fresh[1:]) + "\n")
items = [{"id": f"i{n}", "qty": n % 7 + 1, "price": 2.5} for n in range(100)]
open(f"{work}/split.json", "w").write(json.dumps({"items": items}))
open(f"{work}/small.json", "w").write(json.dumps({"order": {"id": "1001", "lines": [1, 2, 3]}}))
PY
export BENCH_JWKS="$work/jwks.json"
token=$(cat "$work/token")

engine_port=$(free_port); mgmt_port=$(free_port); floor_port=$(free_port)
taskset -c "$serve_core" "$repo/.venv/bin/interlace" run "$here" --port "$engine_port" \
    --management-port "$mgmt_port" > "$work/engine.log" 2>&1 &
engine_pid=$!
(cd "$repo" && exec taskset -c "$serve_core" "$py" -m uvicorn benchmarks.patterns.floor_app:app \
    --port "$floor_port" --loop uvloop --http httptools --no-access-log --log-level warning \
    > "$work/floor.log" 2>&1) &
floor_pid=$!
for port in "$engine_port" "$floor_port" "$backend_port"; do
    for _ in $(seq 200); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
done

cat > "$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BODY_FILE"), "rb"); wrk.body = f:read("*a"); f:close()
LUA
cat > "$work/fresh.lua" <<'LUA'
-- a new token on every request, each thread from its own part of the list
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BODY_FILE"), "rb"); wrk.body = f:read("*a"); f:close()
local tokens = {}
for line in io.lines(os.getenv("TOKENS_FILE")) do tokens[#tokens + 1] = line end
local n = tonumber(os.getenv("TOKEN_OFFSET") or "0")
request = function()
    n = n % #tokens + 1
    wrk.headers["X-JWT-Assertion"] = tokens[n]
    return wrk.format(nil, nil, nil, nil)
end
LUA

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
results="$work/results"  # one line a measured run: round side cell req/s cpu-us requests non-2xx
cell() {  # side name port pid path method body script
    local side=$1 name=$2 port=$3 pid=$4 path=$5 method=$6 body=$7 script=$8
    local args=(-t1 -c50 --timeout 5s)
    [ "$script" = fresh ] || args+=(-H "X-JWT-Assertion: $token")
    [ "$method" = POST ] && args+=(-s "$work/$script.lua")
    TOKEN_OFFSET=$(( rounds * per_round )) BODY_FILE="$body" TOKENS_FILE="$work/tokens" \
        taskset -c "$load_core" wrk "${args[@]}" -d1s "http://127.0.0.1:$port$path" > /dev/null
    local before after out
    before=$(cpu_ticks "$pid")
    out=$(TOKEN_OFFSET=$(( (round - 1) * per_round )) BODY_FILE="$body" TOKENS_FILE="$work/tokens" \
        taskset -c "$load_core" wrk "${args[@]}" -d"${seconds}s" "http://127.0.0.1:$port$path")
    after=$(cpu_ticks "$pid")
    local requests rate used non2xx
    requests=$(awk '/requests in/ {print $1}' <<< "$out")
    rate=$(awk '/Requests\/sec/ {print $2}' <<< "$out")
    used=$(awk -v t=$((after - before)) -v n="$requests" -v hz="$(getconf CLK_TCK)" \
        'BEGIN {printf "%.1f", t / hz / n * 1e6}')
    non2xx=$(awk '/Non-2xx/ {print $5}' <<< "$out")
    echo "$round $side $name $rate $used $requests ${non2xx:-0}" >> "$results"
    if [ "$script" = fresh ] && [ "$requests" -gt "$per_round" ]; then
        echo "WARNING: $side $name sent $requests requests, more than a round's $per_round fresh tokens: some were" \
             "reused, and its figures do not count (BENCH_FRESH_TOKENS: tokens a second)" >&2
    fi
}

cells=("direct /direct POST small post" "scatter /scatter GET small post" "split /split POST split post"
       "cached /cached POST small post" "jwt /jwt POST small post" "jwt-fresh /jwt POST small fresh")
for round in $(seq "$rounds"); do
    for spec in "${cells[@]}"; do
        read -r name path method body script <<< "$spec"
        # which side goes first alternates by round: neither always meets the other's leftovers
        if (( round % 2 )); then sides=(engine floor); else sides=(floor engine); fi
        for side in "${sides[@]}"; do
            if [ "$side" = engine ]; then port=$engine_port pid=$engine_pid; else port=$floor_port pid=$floor_pid; fi
            cell "$side" "$name" "$port" "$pid" "$path" "$method" "$work/$body.json" "$script"
        done
    done
done

"$py" "$here/report.py" "$results"
