"""The mediation benchmark never rots: flows/bench answers every scenario the way the
benchmark's smoke checks demand, and the benchmark scripts parse their arguments.

Not a timed test: one request (or one per branch) per scenario against a real `interlace run`
process and a real loopback echo backend.  The checks mirror ../shared/bench's: status 200, the
echoed body (JSON compared parsed, XML canonicalised), the direct proxy's Content-Type, the
transformed document (root, number of trades, first trade), and exactly one backend call on
the right path for both branches of each router.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.backends import BackendServer
from tests.support.engine import REPO, RunningEngine, run_engine

SYMBOLS = ["IBM", "MSFT", "ORCL", "SUNW"]
SOAP_HEAD = ('<?xml version="1.0" encoding="UTF-8"?>\n'
             '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>'
             '<m:buyStocks xmlns:m="http://services.samples">\n')
SOAP_TAIL = "</m:buyStocks></soapenv:Body></soapenv:Envelope>\n"


def orders(first: str, count: int = 6) -> list[dict[str, object]]:
    return [{"symbol": first if i == 0 else SYMBOLS[i % len(SYMBOLS)], "buyerID": f"buyer{i:02d}",
             "price": round(100.01 + i * 7.31, 2), "volume": 1000 + 37 * i} for i in range(count)]


def json_body(first: str = "IBM") -> bytes:
    return json.dumps({"orders": orders(first)}, indent=1).encode()


def xml_body(first: str = "IBM") -> bytes:
    items = "".join(f"<order><symbol>{o['symbol']}</symbol><buyerID>{o['buyerID']}</buyerID>"
                    f"<price>{o['price']}</price><volume>{o['volume']}</volume></order>\n" for o in orders(first))
    return (SOAP_HEAD + items + SOAP_TAIL).encode()


JSON_TYPE = "application/json"
XML_TYPE = "text/xml; charset=utf-8"


def canonical(data: bytes) -> str:
    return ET.canonicalize(data.decode(), strip_text=True)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningEngine, BackendServer]]:
    with BackendServer() as backend:
        logs = tmp_path_factory.mktemp("bench-logs")
        with run_engine(REPO / "flows" / "bench", env={"BACKEND_URL": backend.url}, log_dir=logs) as engine:
            yield engine, backend


def call(bench: tuple[RunningEngine, BackendServer], path: str, body: bytes, content_type: str,
         headers: dict[str, str] | None = None) -> tuple[httpx.Response, list[str]]:
    engine, backend = bench
    before = len(backend.requests)
    reply = httpx.post(f"{engine.url}{path}", content=body,
                       headers={"content-type": content_type, **(headers or {})}, timeout=10)
    assert reply.status_code == 200, reply.text[:300]
    return reply, [seen.path for seen in backend.requests[before:]]


@pytest.mark.parametrize(("body", "content_type", "kind"),
                         [(json_body(), JSON_TYPE, "json"), (xml_body(), XML_TYPE, "xml")], ids=["json", "xml"])
def test_direct_returns_the_backends_echo_with_its_content_type(
        bench: tuple[RunningEngine, BackendServer], body: bytes, content_type: str, kind: str) -> None:
    reply, paths = call(bench, "/direct", body, content_type)
    assert paths == ["/echo"]
    assert kind in reply.headers["content-type"]
    if kind == "json":
        assert json.loads(reply.content) == json.loads(body)
    else:
        assert canonical(reply.content) == canonical(body)


@pytest.mark.parametrize(("path", "make", "content_type"),
                         [("/cbr-json", json_body, JSON_TYPE), ("/cbr-xml", xml_body, XML_TYPE)],
                         ids=["json", "xml"])
def test_content_routing_takes_each_branch_and_forwards_the_original_body(
        bench: tuple[RunningEngine, BackendServer], path: str, make: Callable[[str], bytes], content_type: str) -> None:
    for first, expected in (("IBM", "/echo/a"), ("MSFT", "/echo/b")):
        body = make(first)
        reply, paths = call(bench, path, body, content_type)
        assert paths == [expected]
        if content_type == JSON_TYPE:
            assert json.loads(reply.content) == json.loads(body)
        else:
            assert canonical(reply.content) == canonical(body)


def test_header_routing_takes_each_branch(bench: tuple[RunningEngine, BackendServer]) -> None:
    body = xml_body()
    for value, expected in (("a", "/echo/a"), ("b", "/echo/b")):
        reply, paths = call(bench, "/hbr", body, XML_TYPE, {"x-route": value})
        assert paths == [expected]
        assert canonical(reply.content) == canonical(body)


def test_xslt_forwards_the_trades_document(bench: tuple[RunningEngine, BackendServer]) -> None:
    reply, paths = call(bench, "/xslt", xml_body(), XML_TYPE)
    assert paths == ["/echo"]
    root = ET.fromstring(reply.content)
    trades = root.findall("trade")
    assert root.tag == "trades" and len(trades) == len(orders("IBM"))
    assert {c.tag: c.text for c in trades[0]} == {"ticker": "IBM", "buyer": "buyer00", "price": "100.01",
                                                  "qty": "1000"}


def test_json_transform_forwards_the_trades_document(bench: tuple[RunningEngine, BackendServer]) -> None:
    reply, paths = call(bench, "/json-transform", json_body(), JSON_TYPE)
    assert paths == ["/echo"]
    trades = json.loads(reply.content)["trades"]
    assert len(trades) == len(orders("IBM"))
    assert trades[0] == {"ticker": "IBM", "buyer": "buyer00", "price": 100.01, "qty": 1000}


# --- the scripts ---------------------------------------------------------------------------------


def run_bench(*args: str, bench_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(REPO / "benchmarks" / "run_bench.sh"), *args], capture_output=True,
                          text=True, timeout=30, env={"PATH": "/usr/bin:/bin", "BENCH_DIR": str(bench_dir)})


def test_run_bench_builds_the_run_sh_command(tmp_path: Path) -> None:
    done = run_bench("--dry-run", "--workers", "2", "--also-asyncio", "--sizes", "1k", "--only", "interlace",
                     bench_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    command = done.stdout
    assert command.startswith(f"{tmp_path}/run.sh ")
    assert "--workers\\ 2" in command and "--sizes 1k --only interlace" in command
    assert f"--flows interlace={REPO}/flows/bench" in command
    assert "interlace-asyncio=INTERLACE_LOOP=asyncio" in command


@pytest.mark.parametrize("args", [["--workers", "0"], ["--workers"], ["--name", "a b"], ["--flows-dir", "/nope"]])
def test_run_bench_refuses_bad_arguments(tmp_path: Path, args: list[str]) -> None:
    done = run_bench("--dry-run", *args, bench_dir=tmp_path)
    assert done.returncode == 2
    assert "run_bench.sh:" in done.stderr


@pytest.mark.parametrize("script", ["streaming.py", "startup_memory.py", "gen_flows.py", "stacks.py", "hotpath.py",
                                    "inprocess.py"])
def test_measurement_scripts_parse_their_arguments(script: str) -> None:
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), "--help"], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


@pytest.mark.parametrize("templated", [[], ["--templated"]])
def test_generated_flows_are_valid(tmp_path: Path, templated: list[str]) -> None:
    target = tmp_path / "flows"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "gen_flows.py"), str(target), "--count", "24",
                    *templated], check=True, capture_output=True, timeout=30)
    done = subprocess.run([sys.executable, "-m", "engine.cli", "validate", str(target)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "24 flows" in done.stdout


def test_routing_timers_report_the_routing_steps_of_a_running_engine(tmp_path: Path) -> None:
    """benchmarks/routing_timers.py serves like `interlace run` and, on SIGUSR1, writes what each
    routing step cost per call since the last signal (routing_ab.sh's ROUTING_TIMERS=1)."""
    out = tmp_path / "timers.txt"
    with BackendServer() as backend, run_engine(
            REPO / "flows" / "bench", env={"BACKEND_URL": backend.url, "ROUTING_TIMERS_OUT": str(out)},
            log_dir=tmp_path, command=[sys.executable, str(REPO / "benchmarks" / "routing_timers.py")]) as engine:
        for path, body, content_type, expected in (("/cbr-xml", xml_body(), XML_TYPE, "/echo/a"),
                                                   ("/cbr-xml", xml_body("MSFT"), XML_TYPE, "/echo/b"),
                                                   ("/cbr-json", json_body(), JSON_TYPE, "/echo/a")):
            _, paths = call((engine, backend), path, body, content_type)
            assert paths == [expected]
        engine.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not (out.exists() and out.read_text().endswith("\n")) and time.monotonic() < deadline:
            time.sleep(0.05)
        line = out.read_text()
    timers = dict(part.split(" ", 1) for part in line.strip().split("  "))
    assert timers["condition"].endswith(" x 3") and timers["drop"].endswith(" x 3")
    assert timers["xml"].endswith(" x 2") and timers["libxml2"].endswith(" x 2") and timers["xpath"].endswith(" x 2")
    assert timers["json"].endswith(" x 1")
    assert float(timers["condition"].split(" ")[0]) > 0


@pytest.mark.parametrize("script", ["routing_ab.sh", "routing_pair.sh", "profile.sh"])
def test_measurement_shell_scripts_parse(script: str) -> None:
    done = subprocess.run(["bash", "-n", str(REPO / "benchmarks" / script)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
