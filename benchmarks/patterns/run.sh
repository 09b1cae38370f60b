#!/usr/bin/env bash
# The pattern cells of issue 15, one command: the engine (benchmarks/patterns/flows.yaml) beside a
# floor written by hand for the same work (floor_app.py: Starlette + one pooled aiohttp session),
# against the shared benchmark's echo backend, and every ratio the issue sets a goal for.
#
#   benchmarks/patterns/run.sh [SECONDS]      # default 5 s a cell (after a 2 s warm-up)
#
# Cells: direct proxy, scatter-gather of three calls, split of 100 items, a cached answer, a
# JWT-verified direct proxy (the gateway resending one assertion: verified once, remembered) and
# the same with a new token on every request (a signature check each time).
#
# Two measures per cell: wall req/s (wrk, 50 connections), and CPU per request of the serving
# process (utime+stime from /proc over the measured run / requests answered), each the best of
# BENCH_ROUNDS (default 2) rounds in which engine and floor alternate cell by cell.  The machine may
# be shared: wall rates then measure the others' load too, CPU per request much less so.  The
# serving processes share core 0, wrk runs on core 1 (where the machine has two).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
seconds="${1:-5}"
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
"$py" - "$work" <<'PY'
import json, sys, time
from concurrent.futures import ProcessPoolExecutor
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

work = sys.argv[1]
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
    fresh = [t for batch in pool.map(tokens, range(0, 40_000, 1000)) for t in batch]
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
declare -A rps cpu bad
cell() {  # key port pid path method body script
    local key=$1 port=$2 pid=$3 path=$4 method=$5 body=$6 script=$7
    local args=(-t1 -c50 --timeout 5s)
    [ "$script" = fresh ] || args+=(-H "X-JWT-Assertion: $token")
    [ "$method" = POST ] && args+=(-s "$work/$script.lua")
    # the warm-ups send tokens from the list's last quarter, round N's measured run from N-1 x 15000
    TOKEN_OFFSET=30000 BODY_FILE="$body" TOKENS_FILE="$work/tokens" taskset -c "$load_core" wrk "${args[@]}" -d2s \
        "http://127.0.0.1:$port$path" > /dev/null
    local before after out
    before=$(cpu_ticks "$pid")
    out=$(TOKEN_OFFSET=$(( (round - 1) * 15000 )) BODY_FILE="$body" TOKENS_FILE="$work/tokens" \
        taskset -c "$load_core" wrk "${args[@]}" -d"${seconds}s" \
        "http://127.0.0.1:$port$path")
    after=$(cpu_ticks "$pid")
    local requests rate used
    requests=$(awk '/requests in/ {print $1}' <<< "$out")
    rate=$(awk '/Requests\/sec/ {print $2}' <<< "$out")
    used=$(awk -v t=$((after - before)) -v n="$requests" -v hz="$(getconf CLK_TCK)" \
        'BEGIN {printf "%.0f", t / hz / n * 1e6}')
    # the best of the rounds: another process's burst only ever makes a round look worse
    rps[$key]=$(awk -v a="${rps[$key]:-0}" -v b="$rate" 'BEGIN {print (b > a ? b : a)}')
    cpu[$key]=$(awk -v a="${cpu[$key]:-}" -v b="$used" 'BEGIN {print (a == "" || b < a ? b : a)}')
    bad[$key]=${bad[$key]:-}$(awk '/Non-2xx/ {print $5}' <<< "$out")
    if [ "$script" = fresh ] && [ "$requests" -gt 15000 ]; then
        echo "WARNING: $key sent $requests requests, more than a round's 15000 fresh tokens: some were reused" >&2
    fi
}

cells=("direct /direct POST small post" "scatter /scatter GET small post" "split /split POST split post"
       "cached /cached POST small post" "jwt /jwt POST small post" "jwt-fresh /jwt POST small fresh")
rounds="${BENCH_ROUNDS:-2}"  # engine and floor alternate, cell by cell, this many times
[ "$rounds" -le 2 ] || { echo "BENCH_ROUNDS: at most 2 (the fresh tokens last two rounds)" >&2; exit 2; }
for round in $(seq "$rounds"); do
    for spec in "${cells[@]}"; do
        read -r name path method body script <<< "$spec"
        cell "engine-$name" "$engine_port" "$engine_pid" "$path" "$method" "$work/$body.json" "$script"
        cell "floor-$name" "$floor_port" "$floor_pid" "$path" "$method" "$work/$body.json" "$script"
    done
done

echo "| cell | engine req/s | floor req/s | req/s engine/floor | engine CPU µs/req | floor CPU µs/req | CPU floor/engine |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for spec in "${cells[@]}"; do
    read -r name _ <<< "$spec"
    for side in engine floor; do
        [ -z "${bad[$side-$name]}" ] || echo "WARNING: $side $name answered ${bad[$side-$name]} non-2xx responses: its figures do not count" >&2
    done
    awk -v n="$name" -v e="${rps[engine-$name]}" -v f="${rps[floor-$name]}" -v ec="${cpu[engine-$name]}" \
        -v fc="${cpu[floor-$name]}" \
        'BEGIN {printf "| %s | %.0f | %.0f | %.2fx | %d | %d | %.2fx |\n", n, e, f, e / f, ec, fc, fc / ec}'
done
echo
echo "Goals (issue 15), engine figures:"
awk -v s="${rps[engine-scatter]}" -v fs="${rps[floor-scatter]}" -v sc="${cpu[engine-scatter]}" -v fsc="${cpu[floor-scatter]}" \
    -v p="${rps[engine-split]}" -v fp="${rps[floor-split]}" -v pc="${cpu[engine-split]}" -v fpc="${cpu[floor-split]}" \
    -v c="${rps[engine-cached]}" -v fc="${rps[floor-cached]}" -v cc="${cpu[engine-cached]}" -v fcc="${cpu[floor-cached]}" \
    -v j="${rps[engine-jwt]}" -v fj="${rps[floor-jwt]}" -v jc="${cpu[engine-jwt]}" -v fjc="${cpu[floor-jwt]}" \
    -v x="${rps[engine-jwt-fresh]}" -v xc="${cpu[engine-jwt-fresh]}" \
    -v d="${rps[engine-direct]}" -v dc="${cpu[engine-direct]}" '
    function verdict(ok) { return ok ? "met" : "NOT met" }
    function cellgoal(name, r, c) { return sprintf("%s %.2fx req/s, %.2fx CPU (%s)", name, r, c, verdict(r >= 0.9 && c >= 0.9)) }
    BEGIN {
        printf "- each cell >= 0.9x its floor: %s; %s; %s; %s\n", cellgoal("scatter", s / fs, fsc / sc),
            cellgoal("split", p / fp, fpc / pc), cellgoal("cached", c / fc, fcc / cc), cellgoal("jwt", j / fj, fjc / jc)
        printf "- a cache hit >= 3x a backend call: %.2fx req/s, %.2fx less CPU per request (%s)\n", c / d, dc / cc,
            verdict(c / d >= 3)
        printf "- JWT verification adds <= 15 %% to the direct proxy: one assertion resent %+.1f %% CPU per request, req/s %+.1f %% (%s); a new token on every request %+.1f %% CPU, req/s %+.1f %% (%s)\n",
            (jc / dc - 1) * 100, (j / d - 1) * 100, verdict(jc / dc <= 1.15), (xc / dc - 1) * 100, (x / d - 1) * 100,
            verdict(xc / dc <= 1.15)
        printf "- a new token alone (jwt-fresh minus jwt, the same route): %+.0f µs CPU per request, %+.1f %% of the direct proxy\n",
            xc - jc, (xc - jc) / dc * 100
    }'
