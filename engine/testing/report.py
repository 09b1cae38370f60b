"""What `interlace test` prints: failures first with diffs, a summary, coverage, JUnit XML."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path
from xml.etree import ElementTree

from engine.testing.runner import CaseResult, SuiteResult, suite_file_label


class Style:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    @classmethod
    def for_stream(cls, stream: object) -> Style:
        tty = bool(getattr(stream, "isatty", lambda: False)())
        return cls(tty and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb")

    def _wrap(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.enabled else text

    def red(self, text: str) -> str:
        return self._wrap("31", text)

    def green(self, text: str) -> str:
        return self._wrap("32", text)

    def yellow(self, text: str) -> str:
        return self._wrap("33", text)

    def bold(self, text: str) -> str:
        return self._wrap("1", text)

    def dim(self, text: str) -> str:
        return self._wrap("2", text)


def describe_failure(result: CaseResult, style: Style) -> list[str]:
    case = result.case
    lines = [style.red(f"FAIL {case.location}  {case.name}")]
    if result.trace is not None:
        lines.append(style.dim(f"     flow {result.trace.flow} answered {result.status}; "
                               f"the flow parted at {result.parted_at or 'its first step'}"))
        if result.trace.steps:
            prefix = result.trace.flow + "/"
            ran = " > ".join(s.removeprefix(prefix) for s in result.trace.steps)
            lines.append(style.dim(f"     ran: {ran}"))
    for failure in result.failures:
        lines.append(f"  {style.bold(str(failure.location))}: {failure.message}")
        for diff_line in failure.diff.splitlines():
            colour = style.red if diff_line.startswith("-") else style.green if diff_line.startswith("+") else str
            lines.append("      " + colour(diff_line))
    return lines


def text_report(outcomes: Iterable[SuiteResult], *, style: Style, verbose: bool = False) -> tuple[str, int, int]:
    """The report for people; returns (text, passed, failed)."""
    outcomes = list(outcomes)
    failures: list[str] = []
    passes: list[str] = []
    passed = failed = 0
    seconds = 0.0
    for outcome in outcomes:
        for error in outcome.errors:
            failed += 1
            failures.append(style.red(f"ERROR {error}"))
        for result in outcome.results:
            seconds += result.seconds
            if result.passed:
                passed += 1
                took = style.dim(f"({result.seconds * 1000:.0f} ms)")
                passes.append(f"{style.green('ok  ')} {result.case.name} {took}")
            else:
                failed += 1
                failures.extend(describe_failure(result, style))
    lines: list[str] = []
    if failures:
        lines += [*failures, ""]
    if verbose:
        lines += [*passes, ""]
    summary = f"{passed} passed, {failed} failed"
    colour = style.red if failed else style.green
    suites = len(outcomes)
    lines.append(colour(style.bold(summary)) + style.dim(f"  ({suites} suite{'s' if suites != 1 else ''}, "
                                                        f"{seconds:.2f} s in cases)"))
    return "\n".join(lines), passed, failed


def coverage_report(outcomes: Iterable[SuiteResult], style: Style) -> str:
    """Per flow, the steps and branches the suites ran, and the ones they never did."""
    points: dict[str, list[str]] = {}
    covered: dict[str, set[str]] = {}
    for outcome in outcomes:
        for flow, flow_points in outcome.coverage_points.items():
            points.setdefault(flow, list(flow_points))
        for flow, ran in outcome.covered.items():
            covered.setdefault(flow, set()).update(ran)
    everything = {i for ran in covered.values() for i in ran}
    lines = [style.bold("coverage (steps and branches run by the suites)")]
    total = hit = 0
    for flow in sorted(points):
        ids = points[flow]
        missed = [i for i in ids if i not in everything]
        total += len(ids)
        hit += len(ids) - len(missed)
        share = 100 * (len(ids) - len(missed)) / len(ids) if ids else 100.0
        colour = style.green if not missed else style.yellow
        lines.append(colour(f"  {flow:<32} {len(ids) - len(missed):>3}/{len(ids):<3} {share:5.1f}%"))
        for item in missed:
            lines.append(style.dim(f"      never ran: {item}"))
    if total:
        lines.append(style.bold(f"  {'all flows':<32} {hit:>3}/{total:<3} {100 * hit / total:5.1f}%"))
    return "\n".join(lines)


def junit_xml(outcomes: Iterable[SuiteResult], path: Path) -> None:
    root = ElementTree.Element("testsuites")
    for outcome in outcomes:
        element = ElementTree.SubElement(root, "testsuite", name=suite_file_label(outcome.suite.file),
                                         tests=str(len(outcome.results) + (1 if outcome.errors else 0)),
                                         failures=str(sum(not r.passed for r in outcome.results)),
                                         errors=str(1 if outcome.errors else 0))
        if outcome.errors:
            case = ElementTree.SubElement(element, "testcase", name="suite", classname=element.get("name", ""))
            error = ElementTree.SubElement(case, "error", message="the suite itself has mistakes")
            error.text = "\n".join(map(str, outcome.errors))
        for result in outcome.results:
            case = ElementTree.SubElement(element, "testcase", name=result.case.name,
                                          classname=element.get("name", ""), time=f"{result.seconds:.4f}")
            if not result.passed:
                failure = ElementTree.SubElement(case, "failure", message=result.failures[0].message)
                failure.text = "\n".join(describe_failure(result, Style(False)))
    path.parent.mkdir(parents=True, exist_ok=True)
    ElementTree.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def write(text: str) -> None:
    sys.stdout.write(text + "\n")
