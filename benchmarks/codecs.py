"""Time the engine's body codecs on the benchmark's 1/10/100 KiB bodies, beside the plain libraries.

    .venv/bin/python benchmarks/codecs.py [--bench-lib ../shared/bench/lib] [--rounds 5]

XML: ``xmlsafe.parse_xml`` (the hardened parser and its DOCTYPE guards) against a bare
``etree.fromstring`` with lxml's default parser, and ``serialize_xml``. JSON: orjson (what
``jsonfast`` uses) against the standard library, loads + dumps of the same body. Each figure
is the best of several rounds, in microseconds per call.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import timeit
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from lxml import etree

from engine import jsonfast
from engine.xmlsafe import parse_xml, serialize_xml

SIZES = {"1k": 1024, "10k": 10 * 1024, "100k": 100 * 1024}


def best_us(action: Callable[[], Any], rounds: int) -> float:
    # enough calls per round for about 0.2 s, so that timer noise does not matter
    calls, _ = timeit.Timer(action).autorange()
    return min(timeit.repeat(action, number=calls, repeat=rounds)) / calls * 1e6


def stdlib_round_trip(body: bytes) -> bytes:
    return json.dumps(json.loads(body), separators=(",", ":"), ensure_ascii=False).encode()


def orjson_round_trip(body: bytes) -> bytes:
    return orjson.dumps(orjson.loads(body))


def engine_round_trip(body: bytes) -> bytes:
    return jsonfast.dumps(jsonfast.loads(body))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench-lib", type=Path, default=Path(__file__).resolve().parents[2] / "shared/bench/lib")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(args.bench_lib))
    payloads = importlib.import_module("payloads")  # the benchmark's own bodies

    default_parser = etree.XMLParser()
    print("| body | etree.fromstring (default parser) | parse_xml | ratio | serialize_xml |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, size in SIZES.items():
        xml = payloads.xml_body(size)
        plain = best_us(partial(etree.fromstring, xml, default_parser), args.rounds)
        hardened = best_us(partial(parse_xml, xml), args.rounds)
        root = parse_xml(xml)
        written = best_us(partial(serialize_xml, root), args.rounds)
        print(f"| xml {name} | {plain:.1f} us | {hardened:.1f} us | {hardened / plain:.2f} | {written:.1f} us |")
    print()
    print("| body | stdlib json loads+dumps | orjson loads+dumps | jsonfast loads+dumps | stdlib / orjson |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, size in SIZES.items():
        body = payloads.json_body(size)
        assert orjson.loads(stdlib_round_trip(body)) == orjson.loads(orjson_round_trip(body))
        stdlib = best_us(partial(stdlib_round_trip, body), args.rounds)
        fast = best_us(partial(orjson_round_trip, body), args.rounds)
        engine = best_us(partial(engine_round_trip, body), args.rounds)
        print(f"| json {name} | {stdlib:.1f} us | {fast:.1f} us | {engine:.1f} us | {stdlib / fast:.1f}x |")


if __name__ == "__main__":
    main()
