"""The table and the goal lines of benchmarks/patterns/run.sh, from its results file.

Each line of the file is one measured run: ``round side cell req/s cpu-us requests non-2xx``.
Every ratio is taken within a round, between runs seconds apart, and the figure printed is the
median over the rounds, with the lowest and the highest in brackets: the machine's drift over
minutes moves both sides of a ratio together and drops out.
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

CELLS = ("direct", "scatter", "split", "cached", "jwt", "jwt-fresh")
FLOOR_GOAL = 0.9
CACHE_GOAL = 3.0
JWT_GOAL = 1.15


def read(path: Path) -> tuple[dict[tuple[int, str, str], tuple[float, float]], list[str]]:
    runs: dict[tuple[int, str, str], tuple[float, float]] = {}
    warnings = []
    for line in path.read_text().splitlines():
        round_, side, cell, rate, cpu, _requests, non2xx = line.split()
        runs[int(round_), side, cell] = (float(rate), float(cpu))
        if non2xx != "0":
            warnings.append(f"WARNING: {side} {cell} answered {non2xx} non-2xx responses in round {round_}: "
                            "its figures do not count")
    return runs, warnings


def spread(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def fmt(values: list[float], unit: str = "x") -> str:
    middle, low, high = spread(values)
    return f"{middle:.2f}{unit} ({low:.2f}-{high:.2f})"


def main(path: Path) -> None:
    runs, warnings = read(path)
    rounds = sorted({r for r, _, _ in runs})

    def per_round(fn: Callable[[int], float]) -> list[float]:
        return [fn(r) for r in rounds]

    def rate(r: int, side: str, cell: str) -> float:
        return runs[r, side, cell][0]

    def cpu(r: int, side: str, cell: str) -> float:
        return runs[r, side, cell][1]

    print(f"{len(rounds)} rounds; each figure the median of the rounds, (lowest-highest)")
    print()
    print("| cell | engine req/s | floor req/s | req/s engine/floor | engine CPU µs/req | floor CPU µs/req "
          "| CPU floor/engine |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    ratios: dict[str, tuple[list[float], list[float]]] = {}
    for cell in CELLS:
        by_rate = per_round(lambda r, c=cell: rate(r, "engine", c) / rate(r, "floor", c))
        by_cpu = per_round(lambda r, c=cell: cpu(r, "floor", c) / cpu(r, "engine", c))
        ratios[cell] = (by_rate, by_cpu)
        e_rate = statistics.median(per_round(lambda r, c=cell: rate(r, "engine", c)))
        f_rate = statistics.median(per_round(lambda r, c=cell: rate(r, "floor", c)))
        e_cpu = statistics.median(per_round(lambda r, c=cell: cpu(r, "engine", c)))
        f_cpu = statistics.median(per_round(lambda r, c=cell: cpu(r, "floor", c)))
        print(f"| {cell} | {e_rate:,.0f} | {f_rate:,.0f} | {fmt(by_rate)} | {e_cpu:.0f} | {f_cpu:.0f} "
              f"| {fmt(by_cpu)} |")
    print()
    print("Goals (issue 15), engine figures, medians of the rounds (lowest-highest):")

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    goals = []
    for cell in ("scatter", "split", "cached", "jwt"):
        by_rate, by_cpu = ratios[cell]
        ok = statistics.median(by_rate) >= FLOOR_GOAL and statistics.median(by_cpu) >= FLOOR_GOAL
        goals.append(f"{cell} {fmt(by_rate)} req/s, {fmt(by_cpu)} CPU ({verdict(ok)}; "
                     f"{sum(a >= FLOOR_GOAL and b >= FLOOR_GOAL for a, b in zip(by_rate, by_cpu, strict=True))} "
                     f"of {len(rounds)} rounds)")
    print(f"- each cell >= {FLOOR_GOAL}x its floor: " + "; ".join(goals))
    hit_rate = per_round(lambda r: rate(r, "engine", "cached") / rate(r, "engine", "direct"))
    hit_cpu = per_round(lambda r: cpu(r, "engine", "direct") / cpu(r, "engine", "cached"))
    print(f"- a cache hit >= {CACHE_GOAL:g}x a backend call: {fmt(hit_rate)} req/s, {fmt(hit_cpu)} less CPU per "
          f"request ({verdict(statistics.median(hit_rate) >= CACHE_GOAL)}; "
          f"{sum(v >= CACHE_GOAL for v in hit_rate)} of {len(rounds)} rounds by req/s)")
    for cell, what in (("jwt", "one assertion resent"), ("jwt-fresh", "a new token on every request")):
        added = per_round(lambda r, c=cell: (cpu(r, "engine", c) / cpu(r, "engine", "direct") - 1) * 100)
        added_rate = per_round(lambda r, c=cell: (rate(r, "engine", c) / rate(r, "engine", "direct") - 1) * 100)
        middle, low, high = spread(added)
        rmiddle, rlow, rhigh = spread(added_rate)
        print(f"- JWT verification adds <= {(JWT_GOAL - 1) * 100:.0f} % to the direct proxy, {what}: "
              f"{middle:+.1f} % CPU per request ({low:+.1f} to {high:+.1f}), req/s {rmiddle:+.1f} % "
              f"({rlow:+.1f} to {rhigh:+.1f}) ({verdict(middle <= (JWT_GOAL - 1) * 100)}; "
              f"{sum(v <= (JWT_GOAL - 1) * 100 for v in added)} of {len(rounds)} rounds)")
    alone = per_round(lambda r: cpu(r, "engine", "jwt-fresh") - cpu(r, "engine", "jwt"))
    middle, low, high = spread(alone)
    print(f"- a new token alone (jwt-fresh minus jwt, the same route): {middle:+.0f} µs CPU per request "
          f"({low:+.0f} to {high:+.0f})")
    for line in warnings:
        print(line, file=sys.stderr)
    groups: dict[str, int] = defaultdict(int)
    for _round, side, cell in runs:
        groups[f"{side}/{cell}"] += 1
    if len(set(groups.values())) > 1:
        print(f"WARNING: not every cell ran in every round: {dict(groups)}", file=sys.stderr)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
