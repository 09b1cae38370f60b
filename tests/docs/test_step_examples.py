"""Every step kind's registry examples load: the examples the reference, the schema and the
designer's palette show are flows a user can paste.

Each example is the one step of a flow; what it names and the flow does not hold (an
endpoint, a sequence, a parameter, a file) is declared or written from what the load error
says, and the flow is loaded again, until it loads or an error names nothing to supply.  That
last error is the example's fault: before this test, a throttle example said ``per: 1d``,
which no duration reads.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from ruamel.yaml import YAML

from engine.loader import LoadErrors
from engine.registry import step_kinds
from engine.runtime import Runtime

EXAMPLES = [(name, index, example) for name, kind in sorted(step_kinds().items())
            for index, example in enumerate(kind.examples)]

# endpoints kinds by what the step said it needs: the loader never connects to them
HTTP = {"http": {"url": "http://127.0.0.1:9"}}
SQL = {"sql": {"url": "sqlite:///examples.db"}}
REDIS = {"redis": {"url": "redis://127.0.0.1:9"}}
XSL = ('<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">'
       '<xsl:template match="/"><done/></xsl:template></xsl:stylesheet>')
XSD = '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"><xs:element name="quote"/></xs:schema>'


def _jwks() -> str:
    numbers = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()

    def b64(value: int) -> str:
        return base64.urlsafe_b64encode(value.to_bytes(32, "big")).rstrip(b"=").decode()

    return json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig",
                                 "x": b64(numbers.x), "y": b64(numbers.y)}]})


def _file_for(name: str) -> str:
    if name.endswith(".xsl") or name.endswith(".xslt"):
        return XSL
    if name.endswith(".xsd"):
        return XSD
    if "jwks" in name:
        return _jwks()
    if name.endswith(".json"):
        return '{"type": "object"}'
    return "example\n"


def _supply(error: str, folder: Path, endpoints: dict[str, Any], sequences: dict[str, Any]) -> bool:
    """Declare or write what ``error`` says is missing; whether anything was."""
    before = (json.dumps(endpoints, sort_keys=True), json.dumps(sequences, sort_keys=True))
    for name in re.findall(r"unknown endpoint '([^']+)'", error):
        endpoints[name] = HTTP
    for name in re.findall(r"endpoint '([^']+)' \(http\) has no transactions", error):
        endpoints[name] = SQL
    for name in re.findall(r"endpoint '([^']+)' cannot (?:keep|hold)", error):
        endpoints[name] = REDIS if endpoints.get(name) != REDIS else SQL
    for name in re.findall(r"unknown sequence '([^']+)'", error):
        sequences[name] = {"steps": [{"log": {"message": "in the sequence"}}]}
    for sequence, param in re.findall(r"sequence '([^']+)' has no parameter '([^']+)'", error):
        sequences[sequence].setdefault("params", {})[param] = {}
    wrote = False
    for name in re.findall(r"file not found: (\S+) \(looked for", error):
        path = folder / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(_file_for(name), encoding="utf-8")
            wrote = True
    return wrote or before != (json.dumps(endpoints, sort_keys=True), json.dumps(sequences, sort_keys=True))


@pytest.mark.parametrize(("kind", "index", "example"), EXAMPLES, ids=[f"{k}[{i}]" for k, i, _ in EXAMPLES])
def test_each_registry_example_loads_as_a_flow(tmp_path: Path, kind: str, index: int, example: Any) -> None:
    endpoints: dict[str, Any] = {}
    sequences: dict[str, Any] = {}
    for _ in range(12):
        document: dict[str, Any] = {"flows": {"example": {"source": {"http": {"method": "POST", "path": "/x"}},
                                                         "steps": [{kind: example}]}}}
        if endpoints:
            document["endpoints"] = endpoints
        if sequences:
            document["sequences"] = sequences
        with (tmp_path / "flows.yaml").open("w", encoding="utf-8") as file:
            YAML().dump(document, file)
        try:
            Runtime(tmp_path).load()
            return
        except LoadErrors as exc:
            error = str(exc)
        assert _supply(error, tmp_path, endpoints, sequences), f"{kind} example {index} does not load:\n{error}"
    pytest.fail(f"{kind} example {index}: still missing something after 12 tries")


def test_every_step_kind_has_an_example() -> None:
    assert not [name for name, kind in step_kinds().items() if not kind.examples]
