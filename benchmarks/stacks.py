"""Summarise py-spy's raw (collapsed) stacks: the hottest functions by self and by total time.

    python benchmarks/stacks.py /tmp/interlace-profile/stacks.txt [--top 25] [--match engine/]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _name(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    path = match["file"]
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match['func']} ({path})"


_GROUPS = (("uvicorn/", "ASGI server (uvicorn, httptools)"), ("httptools", "ASGI server (uvicorn, httptools)"),
           ("aiohttp/", "HTTP client (aiohttp)"), ("yarl/", "HTTP client (aiohttp)"),
           ("multidict/", "HTTP client (aiohttp)"), ("httpx/", "httpx objects"), ("httpcore/", "httpx objects"),
           ("engine/", "engine and connectors"), ("connectors/", "engine and connectors"),
           ("jmespath/", "JMESPath, lxml, orjson"), ("lxml", "JMESPath, lxml, orjson"),
           ("asyncio/", "event loop (uvloop, asyncio)"), ("uvloop", "event loop (uvloop, asyncio)"))


def _group(frame: str) -> str:
    for marker, name in _GROUPS:
        if marker in frame:
            return name
    return "other (stdlib)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stacks")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match", default="", help="only functions whose file contains this")
    parser.add_argument("--children", action="append", default=[], metavar="FUNC",
                        help="also show where the time under FUNC goes (its direct callees)")
    parser.add_argument("--groups", action="store_true",
                        help="also sum self time by library: server, HTTP client, httpx, engine, loop, other")
    parser.add_argument("--threads", action="store_true",
                        help="keep worker threads (the default keeps the event loop's thread only: the "
                             "executor's idle threads otherwise read as busy)")
    args = parser.parse_args()
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    callees: dict[str, Counter[str]] = {name: Counter() for name in args.children}
    groups: Counter[str] = Counter()
    samples = 0
    idle = 0
    with open(args.stacks) as fh:
        for line in fh:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            count = int(count_text)
            frames = [_name(f) for f in stack.split(";")]
            if not args.threads and frames[0].startswith("Thread._bootstrap"):
                continue
            samples += count
            for wanted, counter in callees.items():
                for i, name in enumerate(frames):
                    if name.startswith(wanted):
                        counter[frames[i + 1] if i + 1 < len(frames) else "<self>"] += count
                        break
            if "select (selectors.py)" in frames[-1] or "run_forever" in frames[-1] or "poll" in frames[-1]:
                idle += count
            own[frames[-1]] += count
            groups[_group(frames[-1])] += count
            for name in set(frames):
                total[name] += count
    print(f"{samples} samples, {idle} ({100 * idle / max(samples, 1):.0f}%) idle in the event loop's poll")
    for title, counter in (("self", own), ("total", total)):
        print(f"\n-- top by {title} time --")
        shown = 0
        for name, count in counter.most_common():
            if args.match and args.match not in name:
                continue
            print(f"{100 * count / samples:6.1f}%  {name}")
            shown += 1
            if shown >= args.top:
                break
    if args.groups:
        print("\n-- self time by library --")
        for name, count in groups.most_common():
            print(f"{100 * count / samples:6.1f}%  {name}")
    for wanted, counter in callees.items():
        print(f"\n-- under {wanted}: {100 * sum(counter.values()) / samples:.1f}% --")
        for name, count in counter.most_common(12):
            print(f"{100 * count / samples:6.1f}%  {name}")


if __name__ == "__main__":
    main()
