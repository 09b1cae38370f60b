"""Read a benchmark run's results.jsonl and check issue 4's goals, cell by cell.

    .venv/bin/python benchmarks/goals.py ../shared/bench/results/<timestamp>/results.jsonl
    .venv/bin/python benchmarks/goals.py RESULTS --engine interlace --floor floor-aiohttp

Prints a markdown table per goal: the engine against the aiohttp floor and Node-RED (req/s
ratio, CPU per request ratio, p99 ratio), and content routing against the engine's own direct
proxy.  With several rounds, the median of each cell is used.  Exits 0 always: it reports.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

SIZES = ("1k", "10k", "100k")
SCENARIOS = ("direct-json", "direct-xml", "cbr-json", "cbr-xml", "hbr", "xslt", "json-transform")


def load(path: Path) -> dict[tuple[str, str, str], dict[str, float]]:
    cells: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            cells[(row["scenario"], row["size"], row["peer"])].append(row)
    return {key: {field: statistics.median(r[field] for r in rows if r.get(field) is not None)
                  for field in ("rps", "cpu_us_per_req", "p99_ms")}
            for key, rows in cells.items()}


def mark(ok: bool) -> str:
    return "yes" if ok else "**no**"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--engine", default="interlace")
    parser.add_argument("--floor", default="floor-aiohttp")
    parser.add_argument("--peer", default="nodered", help="the integrator peer to beat 2x (default nodered)")
    args = parser.parse_args()
    cells = load(args.results)
    engine, floor, peer = args.engine, args.floor, args.peer

    print(f"| scenario | size | {engine} req/s | {floor} | x {floor} | {peer} | x {peer} | CPU µs {engine} / "
          f"{floor} | p99 ms {engine} / {floor} | goals met |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for scenario in SCENARIOS:
        for size in SIZES:
            mine = cells.get((scenario, size, engine))
            if mine is None:
                continue
            base = cells.get((scenario, size, floor))
            other = cells.get((scenario, size, peer))
            notes = []
            vs_floor = mine["rps"] / base["rps"] if base else None
            vs_peer = mine["rps"] / other["rps"] if other else None
            cpu = mine["cpu_us_per_req"] / base["cpu_us_per_req"] if base else None
            p99 = mine["p99_ms"] / base["p99_ms"] if base else None
            if vs_peer is not None:
                notes.append(f"2x {peer}: {mark(vs_peer >= 2)}")
            if vs_floor is not None:
                if scenario.startswith("direct") or scenario == "hbr":
                    notes.append(f"0.9x floor: {mark(vs_floor >= 0.9)}")
                if scenario in ("xslt", "json-transform"):
                    notes.append(f"1x floor: {mark(vs_floor >= 1.0)}")
            if cpu is not None and scenario.startswith("direct"):
                notes.append(f"CPU <= 1.2x: {mark(cpu <= 1.2)}")
            if p99 is not None:
                notes.append(f"p99 <= 1.5x: {mark(p99 <= 1.5)}")
            print(f"| {scenario} | {size} | {mine['rps']:,.0f} | {base['rps'] if base else 0:,.0f} | "
                  f"{vs_floor or 0:.2f} | {other['rps'] if other else 0:,.0f} | {vs_peer or 0:.1f} | "
                  f"{mine['cpu_us_per_req']:.0f} / {base['cpu_us_per_req'] if base else 0:.0f} = {cpu or 0:.2f} | "
                  f"{mine['p99_ms']:.1f} / {base['p99_ms'] if base else 0:.1f} = {p99 or 0:.2f} | "
                  f"{'; '.join(notes)} |")

    print(f"\nContent routing at 1 KiB against {engine}'s own direct proxy (goal: within 15%):\n")
    print("| routing | req/s | direct req/s | ratio | CPU µs | direct CPU µs | met |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for routing, direct in (("cbr-json", "direct-json"), ("cbr-xml", "direct-xml")):
        mine, own = cells.get((routing, "1k", engine)), cells.get((direct, "1k", engine))
        if mine and own:
            ratio = mine["rps"] / own["rps"]
            print(f"| {routing} | {mine['rps']:,.0f} | {own['rps']:,.0f} | {ratio:.2f} | "
                  f"{mine['cpu_us_per_req']:.0f} | {own['cpu_us_per_req']:.0f} | {mark(ratio >= 0.85)} |")


if __name__ == "__main__":
    main()
