"""The loader meets mutated example files: it answers each with its own positioned errors, never a traceback.

Every case takes one flow file of flows/ or flows/bench/, mutates it the way careless editing and
hostile input do (values swapped for hard ones, lines dropped, doubled or re-indented, bytes
changed, structures nested or aliased), and loads the folder.  The only exception allowed is
``LoadErrors`` whose every error names the file, a line and a column inside it.  The run is
derandomized: CI sees the same 2,000 cases every time.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.loader import LoadErrors, load_project

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p for p in [*REPO.glob("flows/*.yaml"), *REPO.glob("flows/bench/*.yaml")]
                  if not p.name.endswith(".test.yaml"))
CASES = 2_000
# ~60 s on CI's two cores; the limit leaves room for a machine shared with other work
pytestmark = pytest.mark.timeout(600)

# values that broke the loader once, and their relatives
HARD_VALUES = [
    "-1", "0", "1e400", "-1e400", ".nan", ".inf", "!!int 0x1Fz", "!!float .nanX", "!!int ''", "!!bool maybe",
    "!!binary '***'", "!!timestamp 2024-13-45", "!!set {a: 1}", "!!omap [a]", "!!python/object:os.system ls",
    "'9" + "9" * 399 + "s'", "9" * 400, "9" * 400 + "ms", "''", '""', "~", "[]", "{}", "[[]]", "{a: {b: {}}}",
    "*undefined", "&a [*a]", "'${'", "'${}'", "'${payload.'", "'${env.}'", "'${secret.X}'",
    "'svcuser:Hunter2Pass@orders.internal:8080/api'", "'http://u:p@127.0.0.1:1/x'", "'ftp://h/x'", "'http://'",
    "'http://[::1'", "'http://h:99999/'", "'../../../etc/passwd'", "/etc/passwd", "'\\x00'", "\"\\u0000\"",
    "'\u202e'", "'€'", "'a\\nb'", "\"a\\r\\nX-Evil: 1\"", "'{id'", "'/x/{id:nope}'", "'/x/{}'", "'x' * 3",
    "2024-01-02", "true", "null", "12:30", "0o777", "-0x10", "1_000_000_000_000_000_000", "'xs:int'", "''''",
]
ANCHORED = "&hl [1, 2, 3]"


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@st.composite
def mutated(draw: st.DrawFn) -> tuple[Path, str]:
    source = draw(st.sampled_from(EXAMPLES))
    lines = source.read_text(encoding="utf-8").splitlines()
    for _ in range(draw(st.integers(1, 3))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        line = lines[i]
        how = draw(st.sampled_from(["value", "value", "value", "drop", "double", "indent", "dedent", "bytes",
                                    "nest", "alias", "key"]))
        if how == "value" and ":" in line:
            key, _, _ = line.partition(":")
            lines[i] = f"{key}: {draw(st.sampled_from(HARD_VALUES))}"
        elif how == "drop":
            del lines[i]
        elif how == "double":
            lines.insert(i, line)
        elif how == "indent":
            lines[i] = "  " + line
        elif how == "dedent":
            lines[i] = line[2:] if line.startswith("  ") else line.lstrip()
        elif how == "bytes" and line:
            at = draw(st.integers(0, len(line)))
            junk = draw(st.text(alphabet=st.sampled_from(list("{}[]:,&*!|>'\"#%@`-?\t ${}\\x0é")), max_size=4))
            lines[i] = line[:at] + junk + line[at + draw(st.integers(0, 3)):]
        elif how == "nest" and ":" in line:
            key, _, _ = line.partition(":")
            lines[i] = f"{key}: {_deep(draw(st.sampled_from([3, 63, 64, 65, 1_001, 30_000])))}"
        elif how == "alias" and ":" in line:
            key, _, _ = line.partition(":")
            lines[i] = f"{key}: {draw(st.sampled_from(['*hl', '[*hl, *hl]', ANCHORED]))}"
            lines.insert(0, f"x-anchor: {ANCHORED}")
        elif how == "key":
            lines.insert(i, line.split(":")[0] + ": " + draw(st.sampled_from(HARD_VALUES)))
    return source, "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@settings(max_examples=CASES, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(case=mutated())
def test_mutated_example_files_give_positioned_errors_only(workdir: Path, case: tuple[Path, str]) -> None:
    source, text = case
    folder = workdir / "case"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for sibling in source.parent.iterdir():  # the files a flow names (stylesheets) stand beside it
        if sibling.is_file() and not sibling.name.endswith((".yaml", ".yml")):
            shutil.copy(sibling, folder / sibling.name)
    target = folder / source.name
    target.write_text(text, encoding="utf-8")
    line_count = text.count("\n") + 1
    try:
        load_project(folder)
        errors = []
    except LoadErrors as exc:
        errors = exc.errors
        assert errors
    for error in errors:
        assert error.file in (target, folder), error
        assert 1 <= error.line <= line_count and error.column >= 1, error
        assert "Hunter2Pass" not in error.message, error
