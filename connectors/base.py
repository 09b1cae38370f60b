"""The connector protocol: what every kind of outside system looks like to a flow.

A connector kind is one class, registered under a name with ``@register_connector("kind")``
(built-ins) or through the Python entry point group ``interlace.connectors`` (third-party
packages: the entry point's name is the kind, its object the class).  That name is the key
under ``endpoints: NAME: KIND:`` in flow files.  The class declares, as class attributes:

- ``SUMMARY``: one line for the docs and the designer's palette.
- ``SCHEMA``: the JSON Schema (draft 2020-12) of its own settings, every property described,
  ``"additionalProperties": false``.  The shared resilience settings (``connectors.resilience``:
  retry, breaker, strategy, deadline, required) are merged in by ``settings_schema()``.
- ``OPERATIONS``: name -> ``Operation`` (summary, JSON Schema of the step keys, examples).  A
  ``call`` step names ``endpoint`` and ``operation``; ``DEFAULT_OPERATION`` is used when it does
  not (http: ``request``, so ``call: {endpoint, method, path}`` reads as before).
- ``SOURCES``: name -> ``Operation`` for kinds that also receive (queues, polled folders): the
  schema of ``source: {NAME: {...}}`` in a flow; the connector then implements ``listen``.

An instance is driven like this::

    connector = Kind(name, config, context)   # validated config; opens nothing
    await connector.open()                    # pools, sessions; a backend that is down is no error yet
    run = connector.prepare("query", step_config, compile_context, endpoint.invoke)   # at load
    reply = await run(message)                # per message: render a Request, endpoint.invoke(request)
    # endpoint.invoke (connectors.resilience.Endpoint) calls connector.attempt(request, target)
    # once per try, with retries, failover over connector.targets, a breaker per target
    await connector.check()                   # readiness: returns, or raises a typed BackendError
    await connector.close()

``attempt`` maps its library's exceptions to ``engine.errors`` (BackendUnreachable,
BackendTimeout, BackendRejected, BackendFault and their subclasses) ``from exc``, with a
message naming the endpoint and ``internal=`` for what only the logs may see.
"""

from __future__ import annotations

import abc
import importlib
import logging
import pkgutil
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeVar

from engine.tracing import CLIENT

if TYPE_CHECKING:
    from engine.compiler import CompileContext
    from engine.message import Message

log = logging.getLogger("interlace.connectors")

ENTRY_POINT_GROUP: Final = "interlace.connectors"
# msg.attributes key of the transactions a ``transaction`` step holds open, by endpoint name
TRANSACTIONS_KEY: Final = "_transactions"
# Modules of this package that are helpers, not connector kinds.
_NOT_CONNECTORS = frozenset({"base", "aiohttp_transport", "resilience", "fields"})


class _NoPayload:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_PAYLOAD"


NO_PAYLOAD: Final = _NoPayload()


@dataclass(frozen=True)
class Operation:
    """One thing an endpoint of a kind can do, with the JSON Schema of its step keys."""

    summary: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class EndpointContext:
    """Where an endpoint is declared: relative paths (an SQLite file, a WSDL) start at ``folder``."""

    folder: Path
    env: Mapping[str, str] = field(default_factory=dict)


class Transaction(abc.ABC):
    """An open transaction on one endpoint (see the ``transaction`` step); each kind that has
    transactions implements both."""

    @abc.abstractmethod
    async def commit(self) -> None:
        """Make the transaction's statements last."""

    @abc.abstractmethod
    async def rollback(self) -> None:
        """Undo the transaction's statements."""


@dataclass(frozen=True)
class TransactionOptions:
    isolation: str | None = None  # e.g. "serializable", "repeatable read", "read committed"
    read_only: bool = False


class Request:
    """One rendered request of an operation; kinds subclass it with their own fields.

    ``transaction`` is the open transaction it must run in (never retried nor failed over).
    """

    __slots__ = ("observation", "operation", "transaction")
    span_kind = CLIENT  # the kind of an attempt's span: a publish is a PRODUCER (OTLP's SpanKind numbers)

    def __init__(self, operation: str, transaction: Transaction | None = None) -> None:
        self.operation = operation
        self.transaction = transaction
        # the attempt being observed (connectors.observe.Attempt), set by the resilience layer before
        # each attempt: a kind that can carry trace context (HTTP headers) asks it to propagate
        self.observation: Any = None

    def replayable(self) -> bool:
        """Whether it may be sent again (False e.g. once a streamed body has started)."""
        return True

    def view(self) -> dict[str, Any]:
        """A JSON-able view for flow-test mocks and traces: never a secret."""
        return {"operation": self.operation}

    async def content(self) -> tuple[bytes, str | None]:
        """What the request carries, for flow-test mocks (a rule's ``body`` condition, the
        checks of ``expect.calls``): the body sent, or by default its view as JSON."""
        from engine import jsonfast

        return jsonfast.dumps(self.view()), "application/json"

    def span_name(self) -> str:
        """The name of an attempt's client span (HTTP: the method)."""
        return self.operation

    def location(self, target: str) -> str:
        """What an attempt on ``target`` addresses (HTTP: the target's URL and the path)."""
        return target


class Reply:
    """What an operation answers.

    ``status`` and ``headers`` replace the message's when not None.  ``payload`` (a JSON-able
    value or an lxml element) replaces the message's payload when the connector produced
    structure; otherwise ``body`` holds the bytes, or ``stream`` yields them (``body`` is None
    until ``read()``).  ``meta``: what else the operation reports (row count, generated key).
    """

    __slots__ = ("_closer", "body", "content_type", "headers", "meta", "payload", "status", "stream")

    def __init__(self, status: int | None = None, headers: list[tuple[str, str]] | None = None,
                 body: bytes | None = b"", stream: AsyncIterator[bytes] | None = None, *,
                 content_type: str | None = None, payload: Any = NO_PAYLOAD,
                 meta: dict[str, Any] | None = None, closer: Any = None) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.stream = stream
        self.content_type = content_type
        self.payload = payload
        self.meta = meta if meta is not None else {}
        self._closer = closer

    async def read(self) -> bytes:
        """The whole body, reading the stream if there is one (once; the result is kept)."""
        if self.body is None:
            stream = self.stream
            self.body = b"".join([chunk async for chunk in stream]) if stream is not None else b""
            self.stream = None
        return self.body

    async def aclose(self) -> None:
        """Give up an unread stream (frees its connection); harmless otherwise."""
        self.stream = None
        if self._closer is not None:
            await self._closer.aclose()

    def header(self, name: str) -> str | None:
        """The first value of a header (``name`` in lower case), or None."""
        for key, value in self.headers or ():
            if key == name:
                return value
        return None


Invoke = Callable[[Request], Awaitable[Reply]]
Invocation = Callable[["Message"], Awaitable[Reply]]
Deliver = Callable[["Message"], Awaitable[None]]


class Connector:
    """The base of connector kinds: the protocol with its defaults (see the module docstring).

    Example, a kind with one operation::

        @register_connector("clock")
        class Clock(Connector):
            SUMMARY = "The time, as JSON."
            SCHEMA = {"type": "object", "additionalProperties": False, "properties": {}}
            OPERATIONS = {"now": Operation("The current time.")}
            DEFAULT_OPERATION = "now"

            def prepare(self, operation, config, ctx, invoke):
                async def run(msg):
                    return await invoke(Request("now"))
                return run

            async def attempt(self, request, target):
                return Reply(payload={"now": time.time()})
    """

    SUMMARY: ClassVar[str] = ""
    SCHEMA: ClassVar[dict[str, Any]] = {"type": "object", "additionalProperties": False, "properties": {}}
    OPERATIONS: ClassVar[dict[str, Operation]] = {}
    DEFAULT_OPERATION: ClassVar[str | None] = None
    SOURCES: ClassVar[dict[str, Operation]] = {}
    TRANSACTIONS: ClassVar[bool] = False  # True when ``begin`` works (the transaction step checks at load)
    # Flow-test mocks (``interlace test``, engine.testing.operation_mocks) answer ``attempt`` for
    # every kind but http, whose mocks stand in for its connection pool.  MOCK_MATCH: JSON Schema
    # properties of the request's ``view()`` fields a rule's ``match`` and ``expect.calls`` may
    # name (``operation`` and ``body`` are common to all); MOCK_ANSWER: the keys a rule's
    # ``respond`` may give besides the common ones (json, xml, text, file, content_type,
    # payload, meta, delay); ``mock_reply`` makes such an answer the Reply ``attempt`` gives.
    MOCK_MATCH: ClassVar[dict[str, Any]] = {}
    MOCK_ANSWER: ClassVar[dict[str, Any]] = {}

    def __init__(self, name: str, config: dict[str, Any], context: EndpointContext | None = None) -> None:
        self.name = name
        self.config = config
        self.context = context or EndpointContext(Path.cwd())
        # the addresses the resilience layer tries in turn (display form: never credentials)
        self.targets: tuple[str, ...] = (name,)

    async def open(self) -> None:
        """Acquire what calls need.  Idempotent; must not fail because the backend is down."""

    async def close(self) -> None:
        """Release what ``open`` acquired.  Idempotent; the connector may be opened again."""

    async def check(self) -> None:
        """Readiness probe: return when usable, raise a BackendError when not."""

    def health(self) -> dict[str, Any]:
        """A JSON-able view of the connector's state for the management API: never a secret."""
        return {}

    def needs_server(self) -> bool:
        """Whether calls go to a server (not an SQLite file, a local folder, a clock): a
        flow-test suite that does not mock such an endpoint fails its calls, naming them,
        instead of reaching out; one that needs none runs for real unless mocked."""
        return False

    def operations(self) -> Mapping[str, Operation]:
        """This endpoint's operations: the kind's ``OPERATIONS`` unless the instance knows better
        (a soap endpoint's are its WSDL's, read when it is built)."""
        return type(self).OPERATIONS

    def prepare(self, operation: str, config: dict[str, Any], ctx: CompileContext, invoke: Invoke) -> Invocation:
        """At load: compile one step's operation keys; return what runs per message."""
        raise NotImplementedError(f"{type(self).__name__} does not implement prepare()")

    async def attempt(self, request: Request, target: int) -> Reply:
        """One try of ``request`` on ``targets[target]``; typed errors only."""
        raise NotImplementedError(f"{type(self).__name__} does not implement attempt()")

    def mock_reply(self, request: Request, answer: Mapping[str, Any], body: bytes | None,
                   content_type: str | None) -> Reply:
        """A flow-test mock's answer as the Reply ``attempt`` would give: ``payload`` (a JSON
        value) becomes the payload, else a body (``body``: from json, xml, text or file) the
        body; neither keeps the message (a publish acknowledged); ``meta`` is reported."""
        meta = dict(answer.get("meta") or {})
        if "payload" in answer:
            return Reply(None, None, None, payload=answer["payload"], content_type="application/json", meta=meta)
        if body is not None:
            return Reply(None, None, body, content_type=content_type, meta=meta)
        return Reply(None, None, None, meta=meta)

    async def begin(self, options: TransactionOptions, target: int = 0) -> Transaction:
        """Open a transaction on ``targets[target]`` (kinds that have them); the resilience
        layer picks the target and fails over when it cannot be reached."""
        from engine.errors import BackendRejected

        raise BackendRejected(f"endpoint {self.name!r} has no transactions")

    async def listen(self, source: str, config: dict[str, Any], deliver: Deliver) -> None:
        """Source kinds: deliver each arrival until cancelled; ack after ``deliver`` returns."""
        raise NotImplementedError(f"{type(self).__name__} is not a source")


C = TypeVar("C")
_KINDS: dict[str, type[Any]] = {}
_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


def register_connector(kind: str) -> Callable[[type[C]], type[C]]:
    """Class decorator: register a connector class under ``kind`` (its key in flow files)."""

    def register(cls: type[C]) -> type[C]:
        schema = getattr(cls, "SCHEMA", None)
        if not isinstance(schema, dict):
            raise TypeError(f"connector kind {kind!r}: {cls.__name__} needs a SCHEMA dict (its JSON Schema)")
        if not kind or not set(kind) <= _NAME_OK:
            raise ValueError(f"connector kind {kind!r}: use lower-case letters, digits, - and _")
        for name, operation in getattr(cls, "OPERATIONS", {}).items():
            if not isinstance(operation, Operation):
                raise TypeError(f"connector kind {kind!r}: operation {name!r} must be an Operation")
        default = getattr(cls, "DEFAULT_OPERATION", None)
        if default is not None and default not in getattr(cls, "OPERATIONS", {}):
            raise ValueError(f"connector kind {kind!r}: DEFAULT_OPERATION {default!r} is not one of its OPERATIONS")
        if kind in _KINDS and _KINDS[kind] is not cls:
            raise ValueError(f"connector kind {kind!r} registered twice ({_KINDS[kind].__name__}, {cls.__name__})")
        _KINDS[kind] = cls
        return cls

    return register


_loaded = False


def connector_kinds() -> dict[str, type[Any]]:
    """Every connector kind by name: this package's modules, then the entry points."""
    global _loaded
    if not _loaded:
        _loaded = True
        import connectors

        for module in pkgutil.iter_modules(connectors.__path__):
            if module.name not in _NOT_CONNECTORS and not module.name.startswith("_"):
                importlib.import_module(f"connectors.{module.name}")
        for point in entry_points(group=ENTRY_POINT_GROUP):
            try:
                cls = point.load()
            except Exception:  # a broken plug-in must not take the engine down
                log.exception("connector kind %r (entry point %s) could not be loaded", point.name, point.value)
                continue
            if _KINDS.get(point.name) is not cls:
                register_connector(point.name)(cls)
    return dict(sorted(_KINDS.items()))


def kind_of_class(cls: type[Any]) -> str:
    """The registered name of a connector class."""
    for name, known in connector_kinds().items():
        if known is cls:
            return name
    raise KeyError(cls.__name__)


def operations_of(cls: type[Any]) -> dict[str, Operation]:
    return dict(getattr(cls, "OPERATIONS", {}))
