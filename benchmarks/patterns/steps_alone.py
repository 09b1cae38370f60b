"""A pattern flow's steps alone (no front, no server): CPU µs or instructions per request.

    .venv/bin/python benchmarks/patterns/steps_alone.py --flow split              # CPU µs per run
    .venv/bin/python benchmarks/patterns/steps_alone.py --flow split --callgrind  # instructions per run
    .venv/bin/python benchmarks/patterns/steps_alone.py --flow cached --callgrind --before /tmp/main-tree

The flow of benchmarks/patterns/flows.yaml runs on a message made as the front makes it (the
split cell's 100 items, or the small body), and its body is serialised as the answer would be.
Under callgrind only the measured loop is counted, so the figure does not move with the machine's
load: compare two trees in one run with --before (a checkout of the tree to compare against).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

ITEMS = [{"id": f"i{n}", "qty": n % 7 + 1, "price": 2.5} for n in range(100)]
BODIES = {"split": json.dumps({"items": ITEMS}).encode(),
          "cached": json.dumps({"order": {"id": "1001", "lines": [1, 2, 3]}}).encode()}


def _control(*options: str) -> None:
    subprocess.run(["callgrind_control", *options, str(os.getpid())], check=True, stdout=subprocess.DEVNULL)


async def _measure(flow_name: str, runs: int, counted: bool) -> None:
    from engine.message import Message
    from engine.runtime import Runtime

    runtime = Runtime(HERE)
    flow = next(f for f in runtime.load().flows if f.name == flow_name)
    body = BODIES[flow_name]

    async def loop(n: int) -> None:
        for _ in range(n):
            msg = Message(body=body, content_type="application/json")
            await flow.steps.run(msg)
            msg.body  # noqa: B018 (the answer serialised, as the front would)

    await loop(50)  # warm: the cached flow's one miss, the first parse
    if counted:
        _control("--zero")
        _control("--instr=on")
        await loop(runs)
        _control("--instr=off")
        _control("--dump=steps")
        return
    best = min([await _timed(loop, runs) for _ in range(5)])
    print(f"{flow_name} steps alone: {best:.1f} CPU µs per run (best of 5 x {runs})")


async def _timed(loop: object, runs: int) -> float:
    started = time.process_time()
    await loop(runs)  # type: ignore[operator]
    return (time.process_time() - started) / runs * 1e6


def _instructions(tree: Path, args: argparse.Namespace, env: dict[str, str]) -> float:
    out = Path(tempfile.mkdtemp(prefix="interlace-steps-")) / "callgrind.out"
    subprocess.run(["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
                    sys.executable, __file__, "--flow", args.flow,  # this script, the tree's engine
                    "--runs", str(args.runs), "--counted"],
                   cwd=tree, env={**env, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"}, check=True,
                   stderr=subprocess.DEVNULL)
    for dump in sorted(out.parent.glob(f"{out.name}.*")):
        for line in dump.read_text(errors="replace").splitlines():
            if line.startswith("totals:"):
                return float(line.split()[1]) / args.runs
    raise SystemExit(f"no callgrind dump next to {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flow", choices=sorted(BODIES), default="split")
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--callgrind", action="store_true", help="instructions per run under valgrind's callgrind")
    parser.add_argument("--before", type=Path, help="with --callgrind: also count this tree (a checkout), first")
    parser.add_argument("--counted", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="interlace-steps-"))
    # the jwt flow of flows.yaml names a JWKS file at load: any key set will do, nothing is verified here
    (work / "jwks.json").write_text(json.dumps({"keys": [{"kty": "oct", "k": "AAAA", "kid": "x"}]}))
    os.environ.setdefault("BENCH_JWKS", str(work / "jwks.json"))
    backend = None
    if args.flow == "cached" and not args.counted:  # its one miss calls the echo backend
        sys.path.insert(0, str(HERE.parent.parent))
        from benchmarks.hotpath_common import bench_dir

        port = os.environ.get("PORT_BASE", "18987")
        backend = subprocess.Popen(["node", str(bench_dir() / "lib" / "echo_backend.js")],
                                   env={**os.environ, "PORT": port}, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        os.environ["BACKEND_URL"] = f"http://127.0.0.1:{port}"
        time.sleep(0.5)
    try:
        if args.counted:
            sys.path.insert(0, os.getcwd())
            asyncio.run(_measure(args.flow, args.runs, True))
        elif args.callgrind:
            trees = ([("before", args.before.resolve())] if args.before else []) + [("this tree", HERE.parent.parent)]
            for name, tree in trees:
                print(f"{args.flow} steps alone, {name} ({tree}): "
                      f"{_instructions(tree, args, dict(os.environ)):,.0f} instructions per run")
        else:
            sys.path.insert(0, str(HERE.parent.parent))
            asyncio.run(_measure(args.flow, args.runs, False))
    finally:
        if backend is not None:
            backend.terminate()
            backend.wait()


if __name__ == "__main__":
    main()
