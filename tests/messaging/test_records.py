"""The records step: CSV and fixed-width to JSON and back, streamed, with errors that name the line."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import FlowError
from engine.loader import load_project
from engine.message import Message
from tests.support.engine import write_flows

pytestmark = pytest.mark.anyio


def step(folder: Path, config: str):  # type: ignore[no-untyped-def]
    write_flows(folder, f"""
    flows:
      convert:
        source: {{http: {{path: /convert}}}}
        steps:
          - records: {config}
    """)
    project = load_project(folder)
    assert project.compiled is not None
    return project.compiled.flows[0]


async def run(flow, body: bytes, content_type: str = "text/csv") -> bytes:  # type: ignore[no-untyped-def]
    async def chunks():  # type: ignore[no-untyped-def]
        for start in range(0, len(body), 7):  # tiny chunks: every boundary case
            yield body[start:start + 7]

    msg = Message(body=None, stream=chunks(), content_type=content_type)
    await flow.handle(msg)
    return await msg.load_body()


async def test_csv_to_json_with_quotes_newlines_and_bom(tmp_path: Path) -> None:
    flow = step(tmp_path, "{from: csv}")
    text = '\ufeffsku,name,qty\r\nA-1,"Bolt, steel",4\r\nB-2,"two\nlines ""quoted""",10\r\n\r\n'.encode()
    assert json.loads(await run(flow, text)) == [
        {"sku": "A-1", "name": "Bolt, steel", "qty": "4"},
        {"sku": "B-2", "name": 'two\nlines "quoted"', "qty": "10"}]


async def test_csv_options_and_latin1(tmp_path: Path) -> None:
    flow = step(tmp_path, "{from: csv, delimiter: ';', header: false, columns: [city, n], encoding: latin-1}")
    assert json.loads(await run(flow, "Zürich;1\nGenève;2\n".encode("latin-1"))) == [
        {"city": "Zürich", "n": "1"}, {"city": "Genève", "n": "2"}]


async def test_bad_rows_name_their_line(tmp_path: Path) -> None:
    flow = step(tmp_path, "{from: csv}")
    with pytest.raises(FlowError, match="line 3: 2 fields where the header has 3") as caught:
        await run(flow, b"a,b,c\n1,2,3\n4,5\n")
    assert caught.value.status == 422 and caught.value.code == "records-invalid"
    with pytest.raises(FlowError, match="line 2: not valid utf-8"):
        await run(flow, b"a,b,c\n\xff,1,2\n")
    with pytest.raises(FlowError, match="not closed"):
        await run(flow, b'a,b,c\n1,"2,3\n')


async def test_fixed_width_both_ways(tmp_path: Path) -> None:
    fields = "[{name: sku, width: 6}, {name: qty, width: 4}, {name: note, start: 11, end: 20}]"
    parsed = json.loads(await run(step(tmp_path / "a", f"{{from: fixed, fields: {fields}}}"),
                                  b"A-1     4 first\nB-22   10 second    \n"))
    assert parsed == [{"sku": "A-1", "qty": "4", "note": "first"}, {"sku": "B-22", "qty": "10", "note": "second"}]
    back = await run(step(tmp_path / "b", f"{{to: fixed, fields: {fields}}}"), json.dumps(parsed).encode(),
                     "application/json")
    assert back == b"A-1   4   first\nB-22  10  second\n"


async def test_json_array_back_to_csv(tmp_path: Path) -> None:
    flow = step(tmp_path, "{to: csv}")
    rows = [{"sku": "A,1", "qty": 4, "tags": ["x"]}, {"sku": 'say "hi"', "qty": None, "tags": []}]
    out = await run(flow, json.dumps(rows).encode(), "application/json")
    assert out == b'sku,qty,tags\r\n"A,1",4,"[""x""]"\r\n"say ""hi""",,[]\r\n'
    with pytest.raises(FlowError, match="JSON array"):
        await run(flow, b'{"not": "an array"}', "application/json")


def test_config_errors_point_at_the_key(tmp_path: Path) -> None:
    from engine.loader import LoadErrors

    with pytest.raises(LoadErrors, match=r"flows.yaml:5:\d+: records: without a header row, name the fields"):
        step(tmp_path / "a", "{from: csv, header: false}")
    with pytest.raises(LoadErrors, match="unknown encoding 'klingon'"):
        step(tmp_path / "b", "{from: csv, encoding: klingon}")


MILLION = r'''
import asyncio, resource, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from engine.loader import load_project
from engine.message import Message

folder = Path(sys.argv[2])
(folder / "f.yaml").write_text("flows:\n  c:\n    source: {http: {path: /c}}\n"
                               "    steps:\n      - records: {from: csv}\n")
flow = load_project(folder).compiled.flows[0]

async def rows():
    yield b"id,name,qty,price,note\n"
    block = b"".join(b"%d,item number %d,%d,%d.50,some text here\n" % (i, i, i % 7, i % 100) for i in range(1000))
    for _ in range(1000):
        yield block

async def main():
    msg = Message(body=None, stream=rows(), content_type="text/csv")
    await flow.handle(msg)
    size = 0
    async for chunk in msg.take_stream():
        size += len(chunk)
    print(size, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)

asyncio.run(main())
'''


@pytest.mark.slow
def test_a_million_rows_stream_in_little_memory(tmp_path: Path) -> None:
    """A million CSV rows (~50 MB in, ~90 MB of JSON out) converted with no more memory than a baseline
    process that only imports the engine, give or take a few MiB."""
    root = str(Path(__file__).resolve().parents[2])
    baseline = subprocess.run([sys.executable, "-c", "import resource, engine.loader, engine.message, "
                               "engine.registry; engine.registry.step_kinds(); "
                               "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"],
                              capture_output=True, text=True, check=True, cwd=root).stdout.split()[-1]
    out = subprocess.run([sys.executable, "-c", MILLION, root, str(tmp_path)], capture_output=True, text=True,
                         check=True, cwd=root).stdout.split()
    size, peak = int(out[0]), int(out[1])
    assert size > 60_000_000  # the whole JSON went through
    assert peak - int(baseline) < 30 * 1024, f"peak RSS grew by {(peak - int(baseline)) // 1024} MiB"
    assert resource  # (imported for the child's measurement)
