"""Where a start of `interlace run` goes, phase by phase, in fresh processes (median of N).

    .venv/bin/python benchmarks/startup_phases.py              # 200 generated flows, 7 processes
    .venv/bin/python benchmarks/startup_phases.py DIR --runs 5

Each process does what `interlace run DIR` does before it serves: build the command line, import
the server, then load the folder (read, validate, compile), timing the imports and each phase
of the load.  Start to first answer as a whole is benchmarks/startup_memory.py's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from gen_flows import generate  # noqa: E402

CHILD = r"""
import sys, time
t0 = time.perf_counter()
import gc
gc.set_threshold(10_000, 10, 10)  # as engine.cli's run does
from engine import cli
cli.build_parser("run")
from engine.observability import setup_logging
from engine.server import ServeOptions, serve
import engine.runtime
from connectors._tls import import_aiohttp
import_aiohttp()
t1 = time.perf_counter()
import json
from pathlib import Path
import engine.compiler as compiler
import engine.loader as loader
spent = {"read": 0.0, "validate": 0.0, "compile": 0.0}
def timed(name, fn):
    def run(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[name] += time.perf_counter() - start
    return run
loader.read_yaml = timed("read", loader.read_yaml)
loader.schema_errors = timed("validate", loader.schema_errors)
compiler.compile_project = timed("compile", compiler.compile_project)
t2 = time.perf_counter()
loader.load_project(Path(sys.argv[1]))
t3 = time.perf_counter()
spent["imports"] = t1 - t0
spent["load"] = t3 - t2
spent["load, the rest"] = spent["load"] - spent["read"] - spent["validate"] - spent["compile"]
print(json.dumps(spent))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", nargs="?", type=Path, help="flow folder (default: 200 generated flows)")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.dir
        if folder is None:
            folder = Path(tmp) / "flows"
            generate(folder, 200, 1)
        results = []
        for _ in range(args.runs):
            done = subprocess.run([sys.executable, "-c", CHILD, str(folder)], cwd=ROOT, capture_output=True,
                                  text=True, check=False)
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                return 1
            results.append(json.loads(done.stdout))
    print(f"| phase ({args.runs} processes) | median, s | min-max, s |")
    print("|---|---:|---:|")
    for name in ("imports", "read", "validate", "compile", "load, the rest", "load"):
        values = [r[name] for r in results]
        print(f"| {name} | {statistics.median(values):.3f} | {min(values):.3f}-{max(values):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
