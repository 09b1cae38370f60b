"""`interlace test` as integrators use it: suites pass, fail with diffs, catch suite mistakes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from textwrap import dedent
from xml.etree import ElementTree

import pytest

from engine.testing.cli import run_paths
from engine.testing.report import Style, coverage_report, text_report

REPO = Path(__file__).resolve().parents[2]

FLOWS = """
endpoints:
  crm: {http: {url: "http://crm.internal", retry: {attempts: 2, on_status: [503]}, breaker: {failures: 2}}}
flows:
  customer:
    source: {http: {method: GET, path: "/customers/{id}"}}
    steps:
      - call: {endpoint: crm, method: GET, path: "/records/${path.id}"}
      - choice:
          when:
            - if: ${payload.tier == 'gold'}
              steps: [{set: {path: $.vip, value: true}}]
          otherwise:
            - set: {path: $.vip, value: false}
"""


def folder(tmp_path: Path, suite: str) -> Path:
    (tmp_path / "flows.yaml").write_text(dedent(FLOWS).lstrip())
    (tmp_path / "flows.test.yaml").write_text(dedent(suite).lstrip())
    return tmp_path


def interlace(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=60)


PASSING = """
cases:
  - name: gold customers are vip
    request: {path: /customers/1}
    mocks:
      crm:
        - match: {method: GET, path: /records/1}
          respond: {json: {name: Ada, tier: gold}}
    expect:
      status: 200
      json: {name: Ada, tier: gold, vip: true}
      calls: {crm: {count: 1, path: /records/1}}
"""


@pytest.mark.anyio
async def test_a_passing_suite_and_its_coverage(tmp_path: Path) -> None:
    outcomes = await run_paths([folder(tmp_path, PASSING)])
    text, passed, failed = text_report(outcomes, style=Style(False))
    assert (passed, failed) == (1, 0)
    assert text.endswith("in cases)") and "1 passed, 0 failed" in text
    coverage = coverage_report(outcomes, Style(False))
    assert "customer" in coverage and "4/6" in coverage
    assert "never ran: customer/steps[1]/otherwise" in coverage


def test_a_failing_case_shows_the_diff_the_step_and_the_position(tmp_path: Path) -> None:
    folder(tmp_path, """
    cases:
      - name: silver is not vip
        request: {path: /customers/2}
        mocks:
          crm:
            - respond: {json: {name: Bo, tier: silver}}
        expect:
          json: {name: Bo, tier: silver, vip: true}
    """)
    result = interlace("test", str(tmp_path), "--junit-xml", str(tmp_path / "junit.xml"))
    assert result.returncode == 1
    out = result.stdout
    assert f"FAIL {tmp_path / 'flows.test.yaml'}:2:5  silver is not vip" in out
    assert "the flow parted at customer/steps[1]/otherwise[0]" in out
    assert f"{tmp_path / 'flows.test.yaml'}:8:13: json: the body differs" in out
    assert '-  "vip": true' in out and '+  "vip": false' in out
    assert "\033[" not in out  # no colour when not on a terminal
    assert out.rstrip().endswith("in cases)")
    report = ElementTree.parse(tmp_path / "junit.xml").getroot()
    assert report.find("testsuite").get("failures") == "1"  # type: ignore[union-attr]


def test_retries_breaker_and_timeouts_act_as_in_production(tmp_path: Path) -> None:
    folder(tmp_path, """
    cases:
      - name: a 503 is retried once
        request: {path: /customers/3}
        mocks:
          crm:
            - respond: [{status: 503}, {json: {tier: gold}}]
        expect:
          jmespath: {vip: true}
          calls: {crm: {count: 2}}
      - name: a dead backend is a 502 after the retry
        request: {path: /customers/4}
        mocks:
          crm: [{fail: unreachable}]
        expect:
          status: 502
          calls: {crm: {count: 2}}
      - name: a slow backend times out without the test waiting
        request: {path: /customers/5}
        mocks:
          crm: [{respond: {delay: 60s, json: {}}}]
        expect:
          status: 504
    """)
    result = interlace("test", str(tmp_path))
    assert result.returncode == 0, result.stdout
    assert "3 passed, 0 failed" in result.stdout


def test_suite_mistakes_say_which_and_where(tmp_path: Path) -> None:
    folder(tmp_path, """
    cases:
      - name: mocks a stranger
        request: {path: /customers/1}
        mocks:
          billing: [{respond: {json: {}}}]
        expect: {status: 200}
      - name: asks for a route no flow serves
        request: {path: /nowhere}
        expect: {status: 200}
    """)
    (tmp_path / "typo.test.yaml").write_text("cases:\n  - name: x\n    request: {path: /customers/1}\n"
                                             "    expect: {stauts: 200}\n")
    result = interlace("test", str(tmp_path))
    assert result.returncode == 1
    out = result.stdout
    assert ("flows.test.yaml:5:7: mistake in the case: mocks an endpoint the flows do not declare: 'billing' "
            "(endpoints: crm)") in out
    assert ("typo.test.yaml:4:14: mistake in the case: unknown key 'stauts' in cases[0].expect "
            "(did you mean 'status'?)") in out
    assert "0 passed, 3 failed" in out  # one per case


def test_a_case_with_a_mistake_does_not_hide_the_others(tmp_path: Path) -> None:
    good = "".join(f"  - name: good {n}\n    request: {{path: /customers/{n}}}\n"
                   f"    mocks: {{crm: [{{respond: {{json: {{tier: gold}}}}}}]}}\n"
                   f"    expect: {{status: 200, json_subset: {{vip: true}}}}\n" for n in range(1, 6))
    folder(tmp_path, "cases:\n" + good + """\
  - name: typo in expect
    request: {path: /customers/6}
    mocks: {crm: [{respond: {json: {tier: gold}}}]}
    expect: {stauts: 200}
  - name: typo in request
    reqest: {path: /customers/7}
    expect: {status: 200}
""")
    result = interlace("test", str(tmp_path))
    assert result.returncode == 1, result.stdout
    assert "5 passed, 2 failed" in result.stdout, result.stdout
    assert "unknown key 'stauts'" in result.stdout and "unknown key 'reqest'" in result.stdout


def test_k_matching_no_case_fails(tmp_path: Path) -> None:
    folder(tmp_path, PASSING)
    result = interlace("test", str(tmp_path), "-k", "no such case")
    assert result.returncode == 2
    assert "no case name contains 'no such case'; the cases: gold customers are vip" in result.stderr


def test_assertions_on_fields_that_never_exist_fail_clearly(tmp_path: Path) -> None:
    folder(tmp_path, """
    cases:
      - name: looks for a missing field
        request: {path: /customers/1}
        mocks:
          crm: [{respond: {json: {tier: gold}}}]
        expect:
          jmespath: {address.city: Paris}
          calls: {crm: {json_subset: {id: 1}}, ledger: {count: 0}}
    """)
    out = interlace("test", str(tmp_path)).stdout
    assert "jmespath 'address.city' found nothing in the body (expected \"Paris\")" in out
    assert "calls crm: json_subset: $.id: missing" in out or "calls crm: json_subset" in out
    assert "calls: no endpoint 'ledger' in the flows (endpoints: crm)" in out


def test_unmatched_calls_fail_the_case(tmp_path: Path) -> None:
    folder(tmp_path, """
    cases:
      - name: the mock only knows record 9
        request: {path: /customers/1}
        mocks:
          crm: [{match: {path: /records/9}, respond: {json: {}}}]
        expect: {status: 502}
    """)
    out = interlace("test", str(tmp_path)).stdout
    assert "endpoint 'crm' got GET /records/1 and no mock matched it" in out


def test_the_examples_suites_cover_every_step_and_branch() -> None:
    result = interlace("test", "flows", "--coverage")
    assert result.returncode == 0, result.stdout
    assert "0 failed" in result.stdout
    assert "never ran" not in result.stdout
    assert "100.0%" in result.stdout.splitlines()[-1]


def test_pytest_collects_suites_as_items(tmp_path: Path) -> None:
    folder(tmp_path, PASSING)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert "1 passed" in result.stdout, result.stdout


COUNTING = """
endpoints:
  crm: {http: {url: "http://crm.internal"}}
flows:
  count:
    source: {http: {method: POST, path: /count}}
    steps:
      - respond: {json: {count: "${length(payload.items)}"}}
  count-reply:
    source: {http: {method: POST, path: /count-reply}}
    steps:
      - call: {endpoint: crm, method: GET, path: /items}
      - respond: {json: {count: "${length(payload.items)}"}}
"""

COUNTING_SUITE = """
cases:
  - name: the caller's body of the wrong type is the caller's mistake
    request: {method: POST, path: /count, json: {items: 5}}
    expect: {status: 422}
  - name: a backend's answer of the wrong type is the flow's
    request: {method: POST, path: /count-reply, json: {items: []}}
    mocks:
      crm: [{match: {method: GET, path: /items}, respond: {json: {items: 5}}}]
    expect: {status: 500}
"""


@pytest.mark.anyio
async def test_a_suite_sees_the_status_a_caller_would(tmp_path: Path) -> None:
    # the runner drives the same facade: 422 request-data-invalid on the request's data, 500 on a reply's
    (tmp_path / "flows.yaml").write_text(dedent(COUNTING).lstrip())
    (tmp_path / "flows.test.yaml").write_text(dedent(COUNTING_SUITE).lstrip())
    outcomes = await run_paths([tmp_path])
    text, passed, failed = text_report(outcomes, style=Style(False))
    assert (passed, failed) == (2, 0), text
    (tmp_path / "flows.test.yaml").write_text(dedent(COUNTING_SUITE).lstrip().replace("status: 422", "status: 500"))
    text, passed, failed = text_report(await run_paths([tmp_path]), style=Style(False))
    assert (passed, failed) == (1, 1) and "422" in text, text


def test_a_request_body_file_outside_the_folder_is_a_mistake_at_its_place(tmp_path: Path) -> None:
    # request: {file: ../secret.json} was read and sent; a missing file was a traceback
    (tmp_path / "secret.json").write_text('{"tier": "gold"}')
    (tmp_path / "flows").mkdir()
    folder(tmp_path / "flows", """
    cases:
      - name: from outside
        request: {method: GET, path: /customers/1, file: ../secret.json}
        mocks: {crm: [{respond: {json: {tier: gold}}}]}
        expect: {status: 200}
      - name: from nowhere
        request: {method: GET, path: /customers/2, file: missing.json}
        mocks: {crm: [{respond: {json: {tier: gold}}}]}
        expect: {status: 200}
    """)
    result = interlace("test", str(tmp_path / "flows"))
    assert result.returncode == 1, result.stdout
    assert "0 passed, 2 failed" in result.stdout, result.stdout
    said = result.stdout
    assert "flows.test.yaml:3:54: mistake in the case: file: '../secret.json' is outside the flow folder" in said
    assert "flows.test.yaml:7:54: mistake in the case: file: 'missing.json' cannot be read (No such file or " \
           "directory)" in said
    assert "Traceback" not in result.stdout + result.stderr
