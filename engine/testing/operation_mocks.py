"""Mocked endpoints of every kind but http: the suite's rules answer the connector's ``attempt``.

The endpoint is the real one (its operations compiled from the steps' keys at load, its
retries, failover, breaker and deadline as configured); only ``attempt``, one try of one
request, is answered from the rules, which match on the operation and the fields of the
request's ``view()`` (sql: statement and params; publish: exchange, routing key, topic; files:
name, folder; soap: action, headers) and on a condition over what the request carries
(``Request.content()``).  The kind's ``mock_reply`` turns the rule's answer into the Reply a
real attempt gives (sql rows shaped by the step's ``expect``, a SOAP envelope or Fault), so
what follows in the flow runs as in production.  ``open``, ``close`` and ``check`` touch
nothing; ``begin`` opens a transaction that records whether it was committed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from connectors.base import Connector, Reply, Request, Transaction, TransactionOptions
from connectors.resilience import Endpoint
from engine.errors import BackendFault, BackendRejected, BackendTimeout, BackendUnreachable, ConstraintViolation
from engine.testing.mocks import MockCall, Rule, body_of
from engine.units import parse_duration


@dataclass
class MockTransaction(Transaction):
    """A mocked endpoint's transaction: what happened to it is kept for the suite."""

    outcome: str = "open"

    async def commit(self) -> None:
        self.outcome = "committed"

    async def rollback(self) -> None:
        self.outcome = "rolled back"


@dataclass
class OperationMock:
    """Stands in for one endpoint's ``attempt``; records every call."""

    endpoint: Endpoint
    rules: list[Rule]
    base_dir: Path
    calls: list[MockCall] = field(default_factory=list)
    unmatched: list[MockCall] = field(default_factory=list)
    transactions: list[MockTransaction] = field(default_factory=list)

    def install(self) -> None:
        connector = self.endpoint.connector
        # per-instance overrides: the class's own prepare() (and isinstance checks) stay as they are
        for name, method in (("attempt", self.attempt), ("open", self._nothing), ("close", self._nothing),
                             ("check", self._nothing), ("begin", self.begin)):
            setattr(connector, name, method)

    async def _nothing(self) -> None:
        return None

    async def begin(self, options: TransactionOptions, target: int = 0) -> Transaction:
        transaction = MockTransaction()
        self.transactions.append(transaction)
        return transaction

    async def attempt(self, request: Request, target: int) -> Reply:
        call = await record(request)
        self.calls.append(call)
        for rule in self.rules:
            if rule.matches(call):
                return await self._serve(rule, request)
        self.unmatched.append(call)
        raise BackendUnreachable(f"endpoint {self.endpoint.name!r}: no mock matched this call",
                                 internal=call.describe())

    async def _serve(self, rule: Rule, request: Request) -> Reply:
        spec = rule.spec
        name = self.endpoint.name
        if "fail" in spec:
            fail = spec["fail"]
            if fail == "timeout":
                raise BackendTimeout(f"endpoint {name!r} did not answer in time (mocked)")
            if fail == "rejected":
                raise BackendRejected(f"endpoint {name!r} refused the request (mocked)")
            if fail == "constraint":
                raise ConstraintViolation(f"endpoint {name!r}: the change breaks a constraint (mocked)")
            if fail == "fault":
                raise BackendFault(f"endpoint {name!r} answered a fault (mocked)")
            raise BackendUnreachable(f"endpoint {name!r} cannot be reached (mocked)")
        answers = spec["respond"] if isinstance(spec["respond"], list) else [spec["respond"]]
        answer = answers[min(rule.served, len(answers) - 1)]
        rule.served += 1
        if "delay" in answer:
            delay = parse_duration(answer["delay"])
            deadline = self.endpoint.deadline
            if deadline is not None and delay >= deadline:  # the deadline would strike: say so without waiting
                raise BackendTimeout(f"endpoint {name!r} did not answer within its deadline of {deadline:g} s")
            await asyncio.sleep(delay)
        has_body = any(key in answer for key in ("json", "xml", "text", "file"))
        body, content_type = body_of(answer, self.base_dir) if has_body else (None, None)
        return self.endpoint.connector.mock_reply(request, answer, body, content_type)


async def record(request: Request) -> MockCall:
    """A request as the suite sees it: its view's fields, and what it carries as the body."""
    view = request.view()
    body, content_type = await request.content()
    headers: dict[str, str] = {}
    given = getattr(request, "headers", None)
    if isinstance(given, dict):
        headers = {str(k).lower(): str(v) for k, v in given.items()}
    elif isinstance(given, list):
        headers = {str(k).lower(): str(v) for k, v in given}
    if content_type and "content-type" not in headers:
        headers["content-type"] = content_type
    return MockCall(str(view.get("method", "")), str(view.get("path", "")), {}, headers, body,
                    operation=request.operation if "operation" not in view else str(view["operation"]), view=view)


def mocked_endpoint(endpoint: Endpoint, rules: list[Rule], base_dir: Path) -> OperationMock:
    """Answer ``endpoint``'s attempts from ``rules`` (retries do not wait)."""
    endpoint.retry.backoff = endpoint.retry.max_backoff = 0.0
    mock = OperationMock(endpoint, rules, base_dir)
    mock.install()
    return mock


@dataclass
class Recorder:
    """Records the calls of an endpoint that runs for real in a suite (an embedded database)."""

    calls: list[MockCall] = field(default_factory=list)
    unmatched: list[MockCall] = field(default_factory=list)


def recorded_endpoint(endpoint: Endpoint) -> Recorder:
    recorder = Recorder()
    real = endpoint.connector.attempt

    async def attempt(request: Request, target: int) -> Reply:
        recorder.calls.append(await record(request))
        return await real(request, target)

    setattr(endpoint.connector, "attempt", attempt)  # noqa: B010  # an instance override, as in install()
    return recorder


def mock_fields(kind: type[Connector] | None) -> tuple[set[str], set[str]]:
    """The keys a rule's ``match`` (and ``expect.calls``) and its ``respond`` may use for a kind."""
    match = {"operation", "body", *(kind.MOCK_MATCH if kind is not None else {})}
    answer = {"delay", "json", "xml", "text", "file", "content_type", "payload", "meta",
              *(kind.MOCK_ANSWER if kind is not None else {})}
    return match, answer
