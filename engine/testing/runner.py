"""Running test cases in-process: the flows compile as in production, the endpoints' network
is replaced by the suite's mocks, and the facade is called through ASGI."""

from __future__ import annotations

import difflib
import ipaddress
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jmespath
from lxml import etree

from engine.compiler import CompiledProject, compile_project
from engine.errors import FlowError
from engine.expressions import xpath_value
from engine.front import Facade, RequestTrace
from engine.loader import LoadError, LoadErrors, load_project
from engine.message import Message
from engine.model import Location, Project
from engine.sources.manager import SourceManager
from engine.testing.client_cert import ClientCertError, client_cert_view, presenting
from engine.testing.mocks import HTTP_MATCH, BodyFileError, MockCall, MockFactory, Rule, body_of, fits, make_rule
from engine.testing.operation_mocks import mock_fields
from engine.testing.suite import Case, Suite
from engine.xmlsafe import parse_xml
from engine.yamlio import plain


@dataclass
class Failure:
    message: str
    location: Location
    diff: str = ""


@dataclass
class CaseResult:
    case: Case
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0
    trace: RequestTrace | None = None
    status: int | None = None

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def parted_at(self) -> str | None:
        """The step where the flow stopped: the one that failed, else the last one that ran."""
        if self.trace is None:
            return None
        if self.trace.failed_step:
            return self.trace.failed_step
        return self.trace.steps[-1] if self.trace.steps else None


class SuiteError(Exception):
    """A mistake in the suite itself (not a failing flow)."""

    def __init__(self, errors: list[LoadError]) -> None:
        super().__init__("\n".join(map(str, errors)))
        self.errors = errors


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def diff_text(expected: Any, actual: Any) -> str:
    left = expected if isinstance(expected, str) else _pretty(expected)
    right = actual if isinstance(actual, str) else _pretty(actual)
    lines = difflib.unified_diff(left.splitlines(), right.splitlines(), "expected", "actual", lineterm="", n=2)
    return "\n".join(lines)


def subset_mismatch(expected: Any, actual: Any, path: str = "$") -> str | None:
    """Where ``actual`` does not contain ``expected`` (dict keys; list items in order), or None."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{path}: expected an object, got {_kind(actual)}"
        for key, value in expected.items():
            if key not in actual:
                return f"{path}.{key}: missing"
            problem = subset_mismatch(value, actual[key], f"{path}.{key}")
            if problem:
                return problem
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return f"{path}: expected a list, got {_kind(actual)}"
        if len(actual) < len(expected):
            return f"{path}: expected at least {len(expected)} items, got {len(actual)}"
        for index, value in enumerate(expected):
            problem = subset_mismatch(value, actual[index], f"{path}[{index}]")
            if problem:
                return problem
        return None
    if expected != actual or (type(expected) is bool and type(actual) is not bool):
        return f"{path}: expected {json.dumps(expected)}, got {json.dumps(actual, default=str)}"
    return None


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def canonical_xml(data: bytes) -> str:
    parser = etree.XMLParser(remove_blank_text=True, resolve_entities=False, no_network=True)
    root = etree.fromstring(data, parser)
    return etree.tostring(root, method="c14n").decode()


class _Checker:
    """Compares one answer (or one recorded call) with what a case expects."""

    def __init__(self, case: Case, base: tuple[Any, ...], body: bytes, content_type: str | None) -> None:
        self.case = case
        self.base = base
        self.body = body
        self.content_type = content_type or ""
        self.failures: list[Failure] = []

    def at(self, *path: Any) -> Location:
        return self.case.at(*self.base, *path)

    def fail(self, message: str, *path: Any, diff: str = "") -> None:
        self.failures.append(Failure(message, self.at(*path), diff))

    def json(self, key: str) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            self.fail(f"{key}: the body is not JSON ({self.content_type or 'no content type'}): "
                      f"{self.body[:120]!r}", key)
            raise

    def check_body(self, spec: Mapping[str, Any]) -> None:
        if "json" in spec:
            try:
                actual = self.json("json")
            except ValueError:
                pass
            else:
                if actual != spec["json"]:
                    self.fail("json: the body differs", "json", diff=diff_text(spec["json"], actual))
        if "json_subset" in spec:
            try:
                actual = self.json("json_subset")
            except ValueError:
                pass
            else:
                problem = subset_mismatch(spec["json_subset"], actual)
                if problem:
                    self.fail(f"json_subset: {problem}", "json_subset", diff=diff_text(spec["json_subset"], actual))
        text = self.body.decode(errors="replace")
        if "text" in spec and text != spec["text"]:
            self.fail("text: the body differs", "text", diff=diff_text(spec["text"], text))
        if "body_contains" in spec and str(spec["body_contains"]).encode() not in self.body:
            self.fail(f"body_contains: {spec['body_contains']!r} is not in the body: {self.body[:200]!r}",
                      "body_contains")
        if "xml" in spec:
            self._compare_xml(str(spec["xml"]).encode(), "xml")
        if "file" in spec:
            self._compare_file(spec["file"])
        for expr, expected in (spec.get("jmespath") or {}).items():
            self._jmespath(str(expr), expected)
        for expr, expected in (spec.get("xpath") or {}).items():
            self._xpath(str(expr), expected)

    def _compare_xml(self, expected: bytes, key: str) -> None:
        try:
            want, got = canonical_xml(expected), canonical_xml(self.body)
        except etree.XMLSyntaxError as exc:
            self.fail(f"{key}: not XML: {exc}", key)
            return
        if want != got:
            self.fail(f"{key}: the XML differs", key, diff=diff_text(want.replace("><", ">\n<"),
                                                                   got.replace("><", ">\n<")))

    def _compare_file(self, name: str) -> None:
        path = self.case.suite.file.parent / name
        if not path.is_file():
            self.fail(f"file: no such file {path}", "file")
            return
        expected = path.read_bytes()
        if path.suffix == ".json":
            try:
                actual = json.loads(self.body)
            except ValueError:
                self.fail("file: the body is not JSON", "file")
                return
            if actual != json.loads(expected):
                self.fail(f"file: the body differs from {name}", "file", diff=diff_text(json.loads(expected), actual))
        elif path.suffix in (".xml", ".xsl"):
            self._compare_xml(expected, "file")
        elif expected != self.body:
            self.fail(f"file: the body differs from {name}", "file",
                      diff=diff_text(expected.decode(errors="replace"), self.body.decode(errors="replace")))

    def _jmespath(self, expr: str, expected: Any) -> None:
        try:
            document = json.loads(self.body)
        except ValueError:
            self.fail(f"jmespath {expr!r}: the body is not JSON", "jmespath", expr)
            return
        try:
            actual = jmespath.search(expr, document)
        except jmespath.exceptions.JMESPathError as exc:
            self.fail(f"jmespath {expr!r}: {exc}", "jmespath", expr)
            return
        if actual is None and expected is not None:
            self.fail(f"jmespath {expr!r} found nothing in the body (expected {json.dumps(expected)})",
                      "jmespath", expr, diff=diff_text({"expected at " + expr: expected}, document))
        elif actual != expected:
            self.fail(f"jmespath {expr!r}: expected {json.dumps(expected)}, got {json.dumps(actual, default=str)}",
                      "jmespath", expr)

    def _xpath(self, expr: str, expected: Any) -> None:
        try:
            root = parse_xml(self.body)
        except FlowError as exc:
            self.fail(f"xpath {expr!r}: the body is not XML: {exc.detail}", "xpath", expr)
            return
        try:
            actual = xpath_value(root.xpath(expr, namespaces=_namespaces(root)))
        except etree.XPathError as exc:
            self.fail(f"xpath {expr!r}: {exc}", "xpath", expr)
            return
        if actual is None and expected is not None:
            self.fail(f"xpath {expr!r} found nothing in the body (expected {expected!r})", "xpath", expr)
        elif actual != expected and str(actual) != str(expected):
            self.fail(f"xpath {expr!r}: expected {expected!r}, got {actual!r}", "xpath", expr)


def _namespaces(root: etree._Element) -> dict[str, str]:
    """The prefixes the answer itself declares, usable in the suite's XPath."""
    found: dict[str, str] = {}
    for element in root.iter():
        for prefix, uri in (element.nsmap or {}).items():
            if prefix:
                found.setdefault(prefix, uri)
    return found


class SuiteRunner:
    """Runs the cases of one suite; the flows are parsed once, compiled afresh per case."""

    def __init__(self, suite: Suite) -> None:
        self.suite = suite
        try:
            self.project: Project = load_project(suite.flows_dir, compile_flows=False)
        except LoadErrors as exc:
            raise SuiteError(exc.errors) from None
        self.covered: dict[str, set[str]] = {}
        self.coverage_points: dict[str, list[str]] = {}
        self.store: Any = None
        self._store_dir: Any = None

    def _rules(self, case: Case) -> dict[str, list[Rule]]:
        errors: list[LoadError] = []
        rules: dict[str, list[Rule]] = {}
        for name, items in case.mocks.items():
            if name not in self.project.endpoints:
                known = ", ".join(sorted(self.project.endpoints)) or "none"
                where = case.mock_location(name)
                errors.append(LoadError.at(where, f"mocks an endpoint the flows do not declare: {name!r} "
                                                  f"(endpoints: {known})"))
                continue
            kind = self.project.endpoints[name].kind
            for spec, location in items:
                problem = unsuitable(name, kind, spec)
                if problem:
                    errors.append(LoadError.at(location, problem))
                    continue
                try:
                    rules.setdefault(name, []).append(make_rule(spec, location, {}))
                except ValueError as exc:
                    errors.append(LoadError.at(location, f"mock for {name!r}: {exc}"))
        if errors:
            raise SuiteError(errors)
        return rules

    def _compile(self, case: Case, factory: MockFactory) -> CompiledProject:
        env = {**self.suite.env, **{str(k): str(v) for k, v in (case.node.get("env") or {}).items()}}
        compiled = compile_project(self.project, env=env, secrets=self.suite.secrets, endpoint_factory=factory,
                                   serving=False, stores_in_memory=True)
        if compiled.errors:
            raise SuiteError(compiled.errors)
        self.coverage_points = compiled.coverage_points
        return compiled

    async def _services(self, compiled: CompiledProject) -> None:
        """A throwaway message store for flows that need one (store steps, processors)."""
        if self.store is not None or not SourceManager.needs_store(compiled):
            return
        import tempfile

        from engine.store import use_store
        from engine.store.store import Store, default_url

        self._store_dir = tempfile.TemporaryDirectory(prefix="interlace-test-store-")
        self.store = Store(default_url(Path(self._store_dir.name)))
        await self.store.open()
        use_store(self.store)

    async def close(self) -> None:
        if self.store is not None:
            from engine.store import use_store

            await self.store.close()
            use_store(None)
            self.store = None
        if self._store_dir is not None:
            self._store_dir.cleanup()
            self._store_dir = None

    async def run_case(self, case: Case) -> CaseResult:
        started = time.perf_counter()
        result = CaseResult(case)
        factory = MockFactory(self._rules(case), self.suite.file.parent)
        compiled = self._compile(case, factory)
        await self._services(compiled)
        if "message" in case.node:
            return await self._run_message(case, compiled, factory, result, started)
        facade = Facade(compiled)
        facade.traces = []
        request = case.node["request"]
        self._check_route(case, facade, request)
        try:
            body, content_type = body_of(request, self.suite.file.parent)
        except BodyFileError as exc:
            raise SuiteError([LoadError.at(case.at("request", "file"), str(exc))]) from None
        method = str(request.get("method", "POST" if body else "GET")).upper()
        headers = {str(k): str(v) for k, v in (request.get("headers") or {}).items()}
        if content_type and not any(k.lower() == "content-type" for k in headers):
            headers["content-type"] = content_type
        app = presenting(facade, self._client_cert(case, request))
        await compiled.open()
        try:
            transport = httpx.ASGITransport(app=app, client=self._peer(case, request))
            async with httpx.AsyncClient(transport=transport, base_url="http://interlace.test") as client:
                for _ in range(int(request.get("repeat", 1))):
                    answer = await client.request(method, str(request["path"]), params=request.get("query"),
                                                  headers=headers, content=body or None)
        finally:
            await compiled.close()
        result.status = answer.status_code
        result.trace = facade.traces[-1] if facade.traces else None
        for trace in facade.traces:  # a repeated request covers what each of its runs took
            self.covered.setdefault(trace.flow, set()).update(trace.steps)
        result.failures = self._check(case, answer, factory)
        result.seconds = time.perf_counter() - started
        return result

    def _peer(self, case: Case, request: dict[str, Any]) -> tuple[str, int]:
        """The connection's peer the case's request comes from (``client``: an address)."""
        address = request.get("client", "127.0.0.1")
        try:
            return str(ipaddress.ip_address(str(address))), 50000
        except ValueError:
            raise SuiteError([LoadError.at(case.at("request", "client"),
                                           f"client is the address the request comes from, e.g. 10.1.2.3 or "
                                           f"2001:db8::1; {str(address)!r} is not one")]) from None

    def _client_cert(self, case: Case, request: dict[str, Any]) -> dict[str, Any] | None:
        """The client certificate the case's request presents (engine/testing/client_cert.py)."""
        spec = request.get("client_cert")
        if spec is None:
            return None
        try:
            return client_cert_view(plain(spec), self.suite.file.parent)
        except ClientCertError as exc:
            raise SuiteError([LoadError.at(case.at("request", "client_cert"), str(exc))]) from None

    async def _run_message(self, case: Case, compiled: CompiledProject, factory: MockFactory, result: CaseResult,
                           started: float) -> CaseResult:
        spec = case.node["message"]
        flow = next((f for f in compiled.flows if f.name == spec["flow"]), None)
        if flow is None or flow.trigger is None:
            names = ", ".join(f.name for f in compiled.flows if f.trigger is not None) or "none"
            raise SuiteError([LoadError.at(case.at("message", "flow"),
                                           f"no flow {spec['flow']!r} with a source other than http "
                                           f"(such flows: {names})")])
        try:
            body, content_type = body_of(spec, self.suite.file.parent)
        except BodyFileError as exc:
            raise SuiteError([LoadError.at(case.at("message", "file"), str(exc))]) from None
        msg = Message(body=body or b"", content_type=content_type,
                      headers={str(k).lower(): str(v) for k, v in (spec.get("headers") or {}).items()},
                      correlation_id="test-message")
        msg.payload_is_request = flow.trigger.brings_data  # whose a wrong shape is, as the source would say
        msg.vars.update(plain(spec.get("vars") or {}))
        msg.trace = []
        error: dict[str, Any] | None = None
        await compiled.open()
        try:
            await flow.handle(msg)
        except FlowError as exc:
            error = exc.as_dict()
        finally:
            await compiled.close()
        self.covered.setdefault(flow.name, set()).update(msg.trace)
        expect = case.node["expect"]
        checker = _Checker(case, ("expect",), b"" if error else msg.body, msg.content_type)
        outcome = "failed" if error else "done"
        if "outcome" in expect and expect["outcome"] != outcome:
            why = f": {error.get('message')}" if error else ""
            checker.fail(f"outcome: expected {expect['outcome']}, got {outcome}{why}", "outcome")
        for key, value in (expect.get("error") or {}).items():
            got = (error or {}).get(str(key))
            if got != value:
                checker.fail(f"error.{key}: expected {value!r}, got {got!r}", "error", key)
        if error is None:
            checker.check_body(expect)
        result.failures = checker.failures + self._check_mock_calls(case, expect, factory)
        result.status = msg.status
        result.seconds = time.perf_counter() - started
        return result

    def _check_route(self, case: Case, facade: Facade, request: Any) -> None:
        body, _ = (b"", None) if not any(k in request for k in ("json", "xml", "text", "file")) else (b"x", None)
        method = str(request.get("method", "POST" if body else "GET")).upper()
        try:
            facade.table.match(method, str(request["path"]))
        except FlowError as exc:
            if "expect" in case.node and case.node["expect"].get("status") in (404, 405):
                return  # the case is about an unknown route
            routes = sorted({f"{m} {f.source.path}" for f in self.project.flows if f.source for m in f.source.methods})
            raise SuiteError([LoadError.at(case.at("request", "path"),
                                           f"{method} {request['path']} matches no flow ({exc.detail}); "
                                           f"routes: {', '.join(routes)}")]) from None

    def _check(self, case: Case, answer: httpx.Response, factory: MockFactory) -> list[Failure]:
        expect = case.node["expect"]
        checker = _Checker(case, ("expect",), answer.content, answer.headers.get("content-type"))
        if "status" in expect and answer.status_code != expect["status"]:
            detail = ""
            if answer.headers.get("content-type") == "application/problem+json":
                detail = f": {answer.json().get('detail')}"
            checker.fail(f"status: expected {expect['status']}, got {answer.status_code}{detail}", "status")
        for name, value in (expect.get("headers") or {}).items():
            got = answer.headers.get(str(name))
            if got is None:
                checker.fail(f"header {name}: missing (the answer has: {', '.join(sorted(answer.headers))})",
                             "headers", name)
            elif got != str(value):
                checker.fail(f"header {name}: expected {value!r}, got {got!r}", "headers", name)
        checker.check_body(expect)
        return checker.failures + self._check_mock_calls(case, expect, factory)

    def _check_mock_calls(self, case: Case, expect: Any, factory: MockFactory) -> list[Failure]:
        failures: list[Failure] = []
        for name, transport in factory.transports.items():
            for call in transport.unmatched:
                failures.append(Failure(f"endpoint {name!r} got {call.describe()} and no mock matched it "
                                        f"(add a rule under mocks: {name}:)", case.location))
        for name, spec in (expect.get("calls") or {}).items():
            if name not in factory.transports:
                known = ", ".join(sorted(factory.transports)) or "none"
                failures.append(Failure(f"calls: no endpoint {name!r} in the flows (endpoints: {known})",
                                        case.at("expect", "calls", name, key=True)))
                continue
            failures.extend(self._check_calls(case, name, spec, factory.transports[name].calls))
        return failures

    def _check_calls(self, case: Case, name: str, spec: Any, calls: list[MockCall]) -> list[Failure]:
        base = ("expect", "calls", name)
        out: list[Failure] = []
        if "count" in spec and len(calls) != spec["count"]:
            seen = "; ".join(c.describe() for c in calls) or "none"
            out.append(Failure(f"calls {name}: expected {spec['count']} calls, got {len(calls)} ({seen})",
                               case.at(*base, "count")))
        if not calls:
            if set(spec) - {"count"}:
                out.append(Failure(f"calls {name}: never called, so nothing to compare", case.at(*base)))
            return out
        last = calls[-1]
        if "method" in spec and last.method != str(spec["method"]).upper():
            out.append(Failure(f"calls {name}: method {last.method}, expected {spec['method']}",
                               case.at(*base, "method")))
        if "path" in spec and last.path != spec["path"]:
            out.append(Failure(f"calls {name}: path {last.path}, expected {spec['path']}", case.at(*base, "path")))
        for header, value in (spec.get("headers") or {}).items():
            got = last.headers.get(str(header).lower())
            if got != str(value):
                out.append(Failure(f"calls {name}: header {header} is {got!r}, expected {value!r}",
                                   case.at(*base, "headers", header)))
        if "operation" in spec and last.operation != spec["operation"]:
            out.append(Failure(f"calls {name}: operation {last.operation}, expected {spec['operation']}",
                               case.at(*base, "operation")))
        for key, value in spec.items():  # other kinds' request fields (sql, params, routing_key, name...)
            if key in CALL_CHECKS:
                continue
            got = last.view.get(key)
            if key not in last.view or not fits(value, got):
                out.append(Failure(f"calls {name}: {key} is {json.dumps(got, default=str)}, expected "
                                   f"{json.dumps(value, default=str)}", case.at(*base, key),
                                   diff=diff_text(value, got) if isinstance(value, (dict, list)) else ""))
        checker = _Checker(case, base, last.body, last.headers.get("content-type"))
        checker.check_body(spec)
        for failure in checker.failures:
            failure.message = f"calls {name}: {failure.message}"
        return out + checker.failures


# expect.calls keys with a meaning of their own; any other names a field of the request's view
CALL_CHECKS = frozenset({"count", "method", "path", "headers", "operation", "json", "json_subset", "body_contains",
                         "jmespath", "xpath"})
HTTP_ANSWER = frozenset({"status", "headers", "delay", "json", "xml", "text", "file", "content_type"})


def unsuitable(name: str, kind: str, spec: Any) -> str | None:
    """Why a mock rule's keys do not fit its endpoint's kind, or None."""
    from connectors.base import connector_kinds

    cls = connector_kinds().get(kind)
    if kind == "http":
        match_keys, answer_keys = set(HTTP_MATCH), set(HTTP_ANSWER)
    else:
        if cls is not None and not cls.OPERATIONS:
            return f"mock for {name!r}: a {kind} endpoint has no operations to mock"
        match_keys, answer_keys = mock_fields(cls)
    for key in (spec.get("match") or {}):
        if key not in match_keys:
            return (f"mock for {name!r} ({kind}): match has no {key!r} for this kind; it matches on "
                    f"{', '.join(sorted(match_keys))}")
    responses = spec.get("respond")
    for answer in responses if isinstance(responses, list) else [responses] if responses is not None else []:
        for key in answer:
            if key not in answer_keys:
                return (f"mock for {name!r} ({kind}): respond has no {key!r} for this kind; it answers with "
                        f"{', '.join(sorted(answer_keys))}")
    if kind == "http" and spec.get("fail") not in (None, "timeout", "unreachable"):
        return f"mock for {name!r} (http): fail is timeout or unreachable (a refusal is a respond with its status)"
    return None


def mistaken(case: Case, errors: list[LoadError]) -> CaseResult:
    """A case that cannot run as written: failed, with each mistake where it stands."""
    return CaseResult(case, [Failure(f"mistake in the case: {e.message}", Location(e.file, e.line, e.column))
                             for e in errors])


@dataclass
class SuiteResult:
    suite: Suite
    results: list[CaseResult] = field(default_factory=list)
    errors: list[LoadError] = field(default_factory=list)
    covered: dict[str, set[str]] = field(default_factory=dict)
    coverage_points: dict[str, list[str]] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return sum(not r.passed for r in self.results) + (1 if self.errors else 0)


async def run_suite(suite: Suite, pattern: str | None = None) -> SuiteResult:
    outcome = SuiteResult(suite)
    try:
        runner = SuiteRunner(suite)
    except SuiteError as exc:
        outcome.errors = exc.errors
        return outcome
    for case in suite.cases:
        if pattern and pattern.lower() not in case.name.lower():
            continue
        if case.mistakes:
            outcome.results.append(mistaken(case, case.mistakes))
            continue
        try:
            outcome.results.append(await runner.run_case(case))
        except SuiteError as exc:  # a mistake in this case: it fails with it, the others run
            outcome.results.append(mistaken(case, exc.errors))
    await runner.close()
    outcome.covered = runner.covered
    outcome.coverage_points = runner.coverage_points
    return outcome


def suite_file_label(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
