#!/usr/bin/env bash
# Run the mediation benchmark (../shared/bench/run.sh) with Interlace as one more peer, serving
# flows/bench.  Every option this script does not know goes to run.sh unchanged.
#
#   benchmarks/run_bench.sh                                   # the whole matrix (~23 min)
#   benchmarks/run_bench.sh --duration 5 --warmup 1           # what docs/performance.md used (~14 min)
#   benchmarks/run_bench.sh --only interlace,floor-aiohttp --sizes 1k --duration 3
#   benchmarks/run_bench.sh --workers 2 --no-pin ...          # two workers (unpinned: see docs)
#   benchmarks/run_bench.sh --also-asyncio --also-granian --only interlace,floor-aiohttp ...
#   benchmarks/run_bench.sh --dry-run ...                     # print the run.sh command only
#
# Options of this script:
#   --workers N       engine worker processes (default 1)
#   --name NAME       the peer's name in the report (default interlace)
#   --flows-dir DIR   the flows to serve (default flows/bench)
#   --also-asyncio    add the peer NAME-asyncio: the same engine on asyncio's loop, not uvloop
#   --also-granian    add the peer NAME-granian: the facade under granian (benchmarks/granian_app.py,
#                     granian from the benchmark's own venv)
#   --dry-run         print the command instead of running it
# Environment: BENCH_DIR (default ../shared/bench beside the repository).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_DIR="${BENCH_DIR:-$(cd "$ROOT/.." && pwd)/shared/bench}"
workers=1
name=interlace
flows="$ROOT/flows/bench"
also_asyncio=0
also_granian=0
dry_run=0
passthrough=()

usage() { sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
need_value() { [ $# -ge 2 ] && [ -n "$2" ] || { echo "run_bench.sh: $1 needs a value" >&2; exit 2; }; }

while [ $# -gt 0 ]; do
    case "$1" in
        --workers) need_value "$@"; workers="$2"; shift 2 ;;
        --workers=*) workers="${1#*=}"; shift ;;
        --name) need_value "$@"; name="$2"; shift 2 ;;
        --flows-dir) need_value "$@"; flows="$2"; shift 2 ;;
        --also-asyncio) also_asyncio=1; shift ;;
        --also-granian) also_granian=1; shift ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) passthrough+=("$1"); shift ;;
    esac
done
case "$workers" in
    ''|*[!0-9]*|0) echo "run_bench.sh: --workers needs a whole number >= 1, not '$workers'" >&2; exit 2 ;;
esac
case "$name" in
    ''|*[!A-Za-z0-9_-]*) echo "run_bench.sh: --name takes letters, digits, - and _ only" >&2; exit 2 ;;
esac
[ -d "$flows" ] || { echo "run_bench.sh: no flow folder $flows" >&2; exit 2; }
flows="$(cd "$flows" && pwd)"

interlace="$ROOT/.venv/bin/interlace"
# the management port sits 1000 above the facade's, clear of run.sh's ports (18100 and up)
serve="run --host {host} --port {port} --management-port \$((PORT + 1000)) --workers $workers {flows}"
peers=(--peer "$name=exec $interlace $serve" --flows "$name=$flows")
if [ "$also_asyncio" = 1 ]; then
    peers+=(--peer "$name-asyncio=INTERLACE_LOOP=asyncio exec $interlace $serve" --flows "$name-asyncio=$flows")
fi
if [ "$also_granian" = 1 ]; then
    site="$("$ROOT/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    granian="$BENCH_DIR/.peers/venv/bin/granian"
    peers+=(--peer "$name-granian=cd $ROOT && FLOWS_DIR={flows} PYTHONPATH=$ROOT:$site exec $granian --interface asgi \
--host {host} --port {port} --workers $workers --runtime-threads 1 --loop uvloop --http 1 --no-ws --log-level warning \
--no-access-log benchmarks.granian_app:app" --flows "$name-granian=$flows")
fi

command=("$BENCH_DIR/run.sh" "${peers[@]}" "${passthrough[@]}")
if [ "$dry_run" = 1 ]; then
    printf '%q ' "${command[@]}"
    printf '\n'
    exit 0
fi
[ -x "$BENCH_DIR/run.sh" ] || { echo "run_bench.sh: no benchmark at $BENCH_DIR (set BENCH_DIR)" >&2; exit 2; }
[ -x "$interlace" ] || { echo "run_bench.sh: $interlace is missing: run make first" >&2; exit 2; }
exec "${command[@]}"
