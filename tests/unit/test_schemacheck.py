"""The compiled schema check against jsonschema: the same answer on every document.

The loader trusts ``engine.schemacheck`` to call a document valid only when jsonschema would;
when the check fails, jsonschema explains.  These tests compare both answers on the
registries' schemas (every one of which must compile: a keyword the compiler does not know
would silently send start-up back to jsonschema) and on thousands of documents made by
mutating the example flows.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from connectors.base import connector_kinds
from engine.loader import LoadErrors, flow_files, load_project, schema_errors
from engine.registry import step_kinds
from engine.schema import outline_schema, project_schema, step_config_schema
from engine.schemacheck import SchemaValidator, compile_schema, equal, unique
from engine.yamlio import plain, read_yaml

REPO = Path(__file__).resolve().parents[2]
FOLDERS = [REPO / "flows", REPO / "flows" / "bench"]

VALUES: list[Any] = [None, True, False, 0, 1, -1, 1.0, 2.5, 100, 599, 600, 99, "", "x", "/x", "GET", "POST", "get",
                     "1s", "10MiB", "http://127.0.0.1:9", "200", "2000", "a b", "${payload.x}", [], [1], [1, 1.0],
                     [True, 1], ["GET", "GET"], ["GET", "POST"], [{}], [{"log": "x"}], {}, {"a": 1}, {"x": None},
                     {"url": "http://h"}, {"url": "http://h", "urls": ["http://h"]}, {"http": {"url": "http://h"}},
                     {1: "int key"}, {"respond": {"status": 200}}]


def schemas() -> Iterator[tuple[str, dict[str, Any]]]:
    yield "outline", outline_schema()
    yield "project", project_schema()
    for name, kind in step_kinds().items():
        yield f"step:{name}", step_config_schema(kind)
    for name, cls in connector_kinds().items():
        yield f"connector:{name}", {"$schema": "https://json-schema.org/draft/2020-12/schema", **cls.SCHEMA}


def documents() -> list[Any]:
    return [plain(read_yaml(file)) for folder in FOLDERS for file in flow_files(folder)]


def step_configs(docs: list[Any]) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in step_kinds() and isinstance(value, (dict, list, str)):
                    found.setdefault(key, []).append(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for doc in docs:
        walk(doc)
    return found


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from paths(value, (*prefix, index))


def mutate(doc: Any, rng: random.Random) -> Any:
    doc = copy.deepcopy(doc)
    for _ in range(rng.choice((1, 1, 2, 3))):
        where = rng.choice(list(paths(doc)))
        if not where:
            continue
        parent = doc
        for step in where[:-1]:
            parent = parent[step]
        last = where[-1]
        action = rng.random()
        if action < 0.55:
            parent[last] = copy.deepcopy(rng.choice(VALUES))
        elif action < 0.7:
            del parent[last]
        elif action < 0.85 and isinstance(parent[last], dict):
            parent[last][rng.choice(["extra", "description", "id", "url", "path", "steps"])] = \
                copy.deepcopy(rng.choice(VALUES))
        elif isinstance(parent[last], list) and parent[last]:
            parent[last].append(copy.deepcopy(rng.choice(parent[last])))
        else:
            parent[last] = copy.deepcopy(rng.choice(VALUES))
    return doc


@pytest.mark.parametrize(("name", "schema"), list(schemas()), ids=[name for name, _ in schemas()])
def test_every_registry_schema_compiles(name: str, schema: dict[str, Any]) -> None:
    assert compile_schema(schema) is not None, f"{name}: a keyword engine.schemacheck does not know"


def test_the_same_answer_as_jsonschema_on_mutated_flow_files() -> None:
    rng = random.Random(4)
    docs = documents()
    outline, project = outline_schema(), project_schema()
    checks = [(compile_schema(outline), Draft202012Validator(outline)),
              (compile_schema(project), Draft202012Validator(project))]
    seen = {True: 0, False: 0}
    for doc in docs:
        for _ in range(150):
            candidate = mutate(doc, rng)
            for check, reference in checks:
                assert check is not None
                expected = reference.is_valid(candidate)
                assert check(candidate) == expected, candidate
                seen[expected] += 1
    assert seen[True] > 50 and seen[False] > 50, seen  # both answers were exercised


def test_the_same_answer_as_jsonschema_on_mutated_step_and_endpoint_configs() -> None:
    rng = random.Random(7)
    configs = step_configs(documents())
    cases: list[tuple[dict[str, Any], list[Any]]] = []
    for name, kind in step_kinds().items():
        samples = configs.get(name, []) + [rng.choice(VALUES) for _ in range(3)]
        cases.append((step_config_schema(kind), samples))
    endpoints = [node for doc in documents() for node in (doc.get("endpoints") or {}).values()]
    for name, cls in connector_kinds().items():
        samples = [node[name] for node in endpoints if name in node] + [{"url": "http://h"}]
        cases.append(({"$schema": "https://json-schema.org/draft/2020-12/schema", **cls.SCHEMA}, samples))
    for schema, samples in cases:
        check, reference = compile_schema(schema), Draft202012Validator(schema)
        assert check is not None
        for sample in samples:
            for _ in range(60):
                candidate = mutate({"v": sample}, rng).get("v")
                assert check(candidate) == reference.is_valid(candidate), candidate
            assert check(sample) == reference.is_valid(sample), sample


@pytest.mark.parametrize(("schema", "value"), [
    ({"enum": [1, "a", None]}, True), ({"enum": [1, "a", None]}, 1.0), ({"enum": [True]}, 1),
    ({"const": [1, 2]}, [1, 2.0]), ({"const": {"a": [True]}}, {"a": [1]}), ({"const": "x"}, "x"),
    ({"uniqueItems": True}, [1, True]), ({"uniqueItems": True}, [1, 1.0]),
    ({"uniqueItems": True}, [{"a": 1}, {"a": 1}]),
    ({"uniqueItems": True}, [[1], [True]]), ({"uniqueItems": True}, ["a", 1, None, {}]),
    ({"type": "integer"}, 2.0), ({"type": "integer"}, True), ({"type": "number"}, False),
    ({"type": ["null", "string"]}, None),
    ({"minimum": 1}, "0"), ({"maximum": 1}, 2), ({"exclusiveMinimum": 1}, 1), ({"exclusiveMaximum": 1}, 0.5),
    ({"pattern": "^a"}, 5), ({"pattern": "b"}, "abc"), ({"minLength": 2}, "é"), ({"maxLength": 1}, "ab"),
    ({"required": ["a"]}, []), ({"required": ["a"]}, {"a": None}), ({"minProperties": 1}, {}),
    ({"propertyNames": {"pattern": "^[a-z]+$"}}, {"A": 1}), ({"propertyNames": {"pattern": "^[a-z]+$"}}, {1: 1}),
    ({"additionalProperties": False, "properties": {"a": {}}}, {"a": 1, "b": 2}),
    ({"additionalProperties": {"type": "string"}}, {"a": 1}), ({"items": False}, []), ({"items": False}, [1]),
    ({"oneOf": [{"type": "integer"}, {"minimum": 0}]}, 1), ({"oneOf": [{"type": "integer"}, {"minimum": 0}]}, -1),
    ({"not": {"required": ["a", "b"]}}, {"a": 1, "b": 2}), ({"not": {"required": ["a", "b"]}}, {"a": 1}),
    ({"anyOf": [{"required": ["a"]}, {"required": ["b"]}]}, {"c": 1}), ({"allOf": [{"minimum": 1}, {"maximum": 2}]}, 3),
    ({"$defs": {"n": {"type": "array", "items": {"$ref": "#/$defs/n"}}}, "$ref": "#/$defs/n"}, [[[]], [[1]]]),
    ({"$defs": {"n": {"type": "array", "items": {"$ref": "#/$defs/n"}}}, "$ref": "#/$defs/n"}, [[[]], [[]]]),
    (True, {"any": "thing"}), (False, None),
])
def test_keywords_mean_what_they_mean_to_jsonschema(schema: Any, value: Any) -> None:
    check = compile_schema(schema)
    assert check is not None
    assert check(value) == Draft202012Validator(schema).is_valid(value)


def test_equality_and_uniqueness_follow_jsonschema() -> None:
    assert equal(1, 1.0) and not equal(1, True) and not equal([0], [False]) and equal({"a": [1]}, {"a": [1.0]})
    assert unique([1, True, "1"]) and not unique([1, 1.0])
    assert not unique([{"a": 1}, {"a": 1}]) and unique([[0], [False]])


def test_a_schema_with_unknown_keywords_is_left_to_jsonschema(tmp_path: Path) -> None:
    schema = {"type": "object", "dependentRequired": {"a": ["b"]}}
    assert compile_schema(schema) is None
    validator = SchemaValidator(schema)
    assert validator.is_valid({"b": 1}) and not validator.is_valid({"a": 1})
    assert [e.validator for e in validator.iter_errors({"a": 1})] == ["dependentRequired"]


def test_errors_still_come_from_jsonschema_with_their_positions(tmp_path: Path) -> None:
    file = tmp_path / "f.yaml"
    file.write_text("flows:\n  one:\n    source: {http: {path: /x, mehtod: GET}}\n    steps: []\n")
    node = read_yaml(file)
    fast = schema_errors(file, node, SchemaValidator(outline_schema()))
    slow = schema_errors(file, node, Draft202012Validator(outline_schema()))
    assert [str(e) for e in fast] == [str(e) for e in slow]
    assert len(fast) == 1 and fast[0].line == 3 and "unknown key 'mehtod'" in fast[0].message


# A value failing a oneOf/anyOf: the message names what the alternative it was meant for broke
# (minItems, minimum, required, an unknown key, a nested item's type), where it broke, not the
# type of another alternative; a value of no alternative's kind lists the kinds.
_MESSAGE_HEAD = ("endpoints:\n  a: {http: {url: 'http://127.0.0.1:9'}}\nsequences:\n  s: [{log: x}]\n"
                 "flows:\n  f:\n    source: {http: {path: /f}}\n    steps:\n      - ")
_THROTTLE = "throttle: {key: '${headers.x}', limit: 1, per: 1s, "


@pytest.mark.parametrize(("step", "expected"), [
    pytest.param(_THROTTLE + "policies: [{keys: []}]}",
                 "9:78: throttle: [] should be non-empty in policies[0].keys", id="keys-minItems"),
    pytest.param(_THROTTLE + "policies: [{keys: [a, [b]]}]}",
                 "9:82: throttle: expected a string or an integer in policies[0].keys[1], got a list",
                 id="keys-item-type"),
    pytest.param("throttle: {limit: 1, per: 1s, policies: [{cidr: []}]}",
                 "9:57: throttle: [] should be non-empty in policies[0].cidr", id="cidr-minItems"),
    pytest.param("throttle: {limit: 1, per: 1s, networks: [{cidr: [10.0.0.0/8, 5]}]}",
                 "9:70: throttle: expected a string in networks[0].cidr[1], got the number 5", id="cidr-item-type"),
    pytest.param("throttle: {limit: 1, per: 1s, networks: [{cidr: {a: 1}}]}",
                 "9:57: throttle: expected a string or a list in networks[0].cidr, got a mapping",
                 id="cidr-no-kind"),
    pytest.param("load_balance: {endpoints: [{name: a, weight: 0}]}",
                 "9:54: load_balance: 0 is less than the minimum of 1 in endpoints[0].weight", id="weight-minimum"),
    pytest.param("load_balance: {endpoints: [{name: a, weight: 2000}]}",
                 "9:54: load_balance: 2000 is greater than the maximum of 1000 in endpoints[0].weight",
                 id="weight-maximum"),
    pytest.param("load_balance: {endpoints: [{name: a, weight: '2'}]}",
                 "9:54: load_balance: expected an integer in endpoints[0].weight, got the string '2'",
                 id="weight-type"),
    pytest.param("load_balance: {endpoints: [{weight: 2}]}",
                 "9:36: load_balance: missing required key 'name' in endpoints[0]", id="endpoint-required"),
    pytest.param("load_balance: {endpoints: [{name: a, wieght: 2}]}",
                 "9:46: load_balance: unknown key 'wieght' in endpoints[0] (did you mean 'weight'?); expected one "
                 "of: name, weight", id="endpoint-additionalProperties"),
    pytest.param("load_balance: {endpoints: [3]}",
                 "9:36: load_balance: expected a string or a mapping in endpoints[0], got the number 3",
                 id="endpoint-no-kind"),
    pytest.param("log: {message: x, level: loud}",
                 "9:34: log: expected one of debug, info, warning, error in level, got the string 'loud'",
                 id="log-enum"),
    pytest.param("log: {level: info}", "9:14: log: missing required key 'message'", id="log-required"),
    pytest.param("log: {mesage: x}",
                 "9:15: log: unknown key 'mesage' (did you mean 'message'?); expected one of: level, message",
                 id="log-additionalProperties"),
    pytest.param("log: 5", "9:14: log: expected a string or a mapping, got the number 5", id="log-no-kind"),
    pytest.param("sequence: {name: s, with: 3}", "9:35: sequence: expected a mapping in with, got the number 3",
                 id="sequence-with-type"),
    pytest.param("sequence: {nmae: s}",
                 "9:20: sequence: unknown key 'nmae' (did you mean 'name'?); expected one of: name, with",
                 id="sequence-additionalProperties"),
    pytest.param("respond: {status: 700}", "9:27: respond: 700 is greater than the maximum of 599 in status",
                 id="status-maximum"),
    pytest.param("respond: {status: abc}",
                 "9:27: respond: expected an integer or a ${...} expression in status, got the string 'abc'",
                 id="status-pattern"),
    pytest.param("respond: {status: 99.5}",
                 "9:27: respond: expected an integer or a string in status, got the number 99.5", id="status-type"),
    pytest.param("authenticate: {client_cert: {subject: {CN: []}}}",
                 "9:52: authenticate: [] should be non-empty in client_cert.subject.CN", id="subject-minItems"),
    pytest.param("authenticate: {client_cert: {subject: {CN: [a, 1]}}}",
                 "9:56: authenticate: expected a string in client_cert.subject.CN[1], got the number 1",
                 id="subject-item-type"),
    pytest.param("authenticate: {jwt: {header: X, jwks: j.json, issuer: i, audience: [1]}}",
                 "9:77: authenticate: expected a string in jwt.audience[0], got the number 1", id="audience-item-type"),
    pytest.param("records: {from: csv, to: csv}", "9:18: records: give only one of from, to, not both",
                 id="records-oneOf-both"),
    pytest.param("records: {delimiter: ';'}", "9:18: records: missing required key 'from'", id="records-neither"),
])
def test_a_value_failing_a_oneof_is_told_what_it_broke_where(tmp_path: Path, step: str, expected: str) -> None:
    (tmp_path / "flows.yaml").write_text(_MESSAGE_HEAD + step + "\n")
    with pytest.raises(LoadErrors) as caught:
        load_project(tmp_path)
    assert [str(e) for e in caught.value.errors] == [f"{tmp_path / 'flows.yaml'}:{expected}"]


@pytest.mark.parametrize(("step", "where", "expected"), [
    pytest.param("lgo: hi", "5:9", "unknown step kind 'lgo' (did you mean 'log'?); expected one of: ", id="typo"),
    pytest.param("{id: x, frobnicate: {a: 1}}", "5:17", "unknown step kind 'frobnicate'; expected one of: ",
                 id="no-hint"),
    pytest.param("{id: x}", "5:9", "a step needs one step kind (kinds: ", id="none"),
    pytest.param("{lgo: a, rspond: b}", "5:9", "a step has one step kind, found 2: lgo, rspond (kinds: ",
                 id="several-unknown"),
])
def test_the_editors_schema_tells_an_unknown_step_kind_as_validate_does(tmp_path: Path, step: str, where: str,
                                                                        expected: str) -> None:
    """project_schema (editors, the designer) and the loader (interlace validate) say the same
    thing at the same place: not the first kind's "missing required key 'aggregate'"."""
    from designer.lint import lint_folder

    file = tmp_path / "flows.yaml"
    file.write_text(f"flows:\n  f:\n    source: {{http: {{path: /f}}}}\n    steps:\n      - {step}\n")
    with pytest.raises(LoadErrors) as caught:
        load_project(tmp_path)
    validated = [str(e) for e in caught.value.errors]
    kinds = ", ".join(step_kinds())
    assert validated == [f"{file}:{where}: {expected}{kinds}" + (")" if "(kinds: " in expected else "")]
    node = read_yaml(file)
    for validator in (Draft202012Validator(project_schema()), SchemaValidator(project_schema())):
        assert [str(e) for e in schema_errors(file, node, validator)] == validated
    assert [p["text"] for p in lint_folder(tmp_path)] == [f"flows.yaml:{where}: {validated[0].split(': ', 1)[1]}"]
