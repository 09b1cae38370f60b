"""`interlace test`: run the test suites (``*.test.yaml``) of flow folders."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from engine.loader import LoadErrors
from engine.testing.report import Style, coverage_report, junit_xml, text_report
from engine.testing.runner import SuiteResult, run_suite
from engine.testing.suite import find_suites, load_suite


async def run_paths(paths: list[Path], pattern: str | None = None) -> list[SuiteResult]:
    outcomes: list[SuiteResult] = []
    for file in find_suites(paths):
        try:
            suite = load_suite(file)
        except LoadErrors as exc:
            from engine.testing.suite import Suite

            outcome = SuiteResult(Suite(file, {}, file.parent))
            outcome.errors = exc.errors
            outcomes.append(outcome)
            continue
        outcomes.append(await run_suite(suite, pattern))
    return outcomes


def _test(args: argparse.Namespace) -> int:
    import logging

    logging.basicConfig(level=logging.ERROR)  # flows' own log lines would drown the report
    paths = [Path(p) for p in args.paths] or [Path("flows")]
    missing = [p for p in paths if not p.exists()]
    if missing:
        print(f"interlace test: no such file or folder: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    outcomes = asyncio.run(run_paths(paths, args.k))
    if not outcomes:
        print(f"interlace test: no test suites (*.test.yaml) under {', '.join(map(str, paths))}", file=sys.stderr)
        return 2
    if args.k and not any(o.results or o.errors for o in outcomes):
        names = sorted({case.name for o in outcomes for case in o.suite.cases})
        print(f"interlace test: no case name contains {args.k!r}; the cases: {', '.join(names) or 'none'}",
              file=sys.stderr)
        return 2
    style = Style.for_stream(sys.stdout)
    text, _, failed = text_report(outcomes, style=style, verbose=args.verbose)
    print(text)
    if args.coverage:
        print()
        print(coverage_report(outcomes, style))
    if args.junit_xml:
        junit_xml(outcomes, Path(args.junit_xml))
    return 1 if failed else 0


def add_commands(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "test", help="run flow test suites (*.test.yaml) with mocked endpoints",
        description="Run the test suites (*.test.yaml) found in PATHs (default: flows) in-process, with the "
                    "endpoints mocked; exit 1 if any case fails.")
    parser.add_argument("paths", nargs="*", metavar="PATH", help="suite files or folders to search")
    parser.add_argument("--junit-xml", metavar="FILE", help="also write a JUnit XML report for pipelines")
    parser.add_argument("--coverage", action="store_true",
                        help="report, per flow, the steps and branches the suites ran and never ran")
    parser.add_argument("-k", metavar="TEXT", help="run only the cases whose name contains TEXT")
    parser.add_argument("-v", "--verbose", action="store_true", help="list passing cases too")
    parser.set_defaults(func=_test)
