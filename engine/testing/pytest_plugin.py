"""pytest plugin: every case of every ``*.test.yaml`` file collected becomes a pytest item,
so flow suites run in a project's own pytest (and in ``make test`` here)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.loader import LoadErrors
from engine.testing.report import Style, describe_failure
from engine.testing.runner import CaseResult, SuiteError, SuiteRunner
from engine.testing.suite import SUITE_SUFFIXES, Case, Suite, load_suite


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.name.endswith(SUITE_SUFFIXES):
        return FlowSuiteFile.from_parent(parent, path=file_path)
    return None


class FlowSuiteFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        try:
            suite = load_suite(self.path)
        except LoadErrors as exc:
            yield SuiteMistake.from_parent(self, name="suite", errors=[str(e) for e in exc.errors])
            return
        runner: list[SuiteRunner] = []  # made on first use, shared by the file's cases
        for case in suite.cases:
            yield FlowCase.from_parent(self, name=case.name, case=case, suite=suite, runner=runner)


class SuiteMistake(pytest.Item):
    def __init__(self, *, errors: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.errors = errors

    def runtest(self) -> None:
        raise FlowSuiteFailure("\n".join(self.errors))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        return str(excinfo.value)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, "suite"


class FlowSuiteFailure(AssertionError):
    pass


class FlowCase(pytest.Item):
    def __init__(self, *, case: Case, suite: Suite, runner: list[SuiteRunner], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case = case
        self.suite = suite
        self.runner = runner

    def runtest(self) -> None:
        if self.case.mistakes:
            raise FlowSuiteFailure("\n".join(str(e) for e in self.case.mistakes))
        try:
            if not self.runner:
                self.runner.append(SuiteRunner(self.suite))
            result: CaseResult = asyncio.run(self.runner[0].run_case(self.case))
        except SuiteError as exc:
            raise FlowSuiteFailure("\n".join(map(str, exc.errors))) from None
        if not result.passed:
            raise FlowSuiteFailure("\n".join(describe_failure(result, Style(False))))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, FlowSuiteFailure):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.case.location.line - 1, self.case.name
