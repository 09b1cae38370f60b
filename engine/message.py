"""The message a flow works on: body bytes parsed lazily, headers, variables, attributes.

The body stays bytes (or an unread stream) until a step needs its parsed form; it is parsed
once and cached; a changed payload is serialised once, when the bytes are next needed.  A pure
passthrough therefore never parses, copies or even fully reads the body.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Final

from engine import jsonfast, xmlsafe
from engine.errors import PayloadTooLarge

_UNSET: Final = object()

JSON = "json"
XML = "xml"
TEXT = "text"
BINARY = "binary"

# attributes key of the connection's peer, the ASGI scope's ``client`` (host, port), as the front
# sets it; read as ``Message.client`` (``${client.*}``)
CLIENT = "client"


def kind_of(content_type: str | None, body: bytes | None = None) -> str:
    """Which parser a content type calls for; sniffs the first byte when there is none."""
    if content_type:
        kind = _KINDS.get(content_type)
        if kind is None:
            kind = _kind_of_type(content_type)
            if len(_KINDS) < 256:  # a client may send any text: the first few hundred are kept
                _KINDS[content_type] = kind
        return kind
    if body:
        first = body.lstrip()[:1]
        if first in (b"{", b"["):
            return JSON
        if first == b"<":
            return XML
    return BINARY


def _kind_of_type(content_type: str) -> str:
    ct = content_type.split(";", 1)[0].strip().lower()
    if ct.endswith("json"):
        return JSON
    if ct.endswith("xml"):
        return XML
    if ct.startswith("text/") or ct == "application/x-www-form-urlencoded":
        return TEXT
    return BINARY


# content type -> kind: a message's kind is asked at its parse and again at its serialisation
_KINDS: dict[str, str] = {}
_DEFAULT_CONTENT_TYPE = {JSON: "application/json", XML: "application/xml", TEXT: "text/plain; charset=utf-8"}


class Message:
    """One message moving through a flow.

    ``headers`` are the current message's transport headers, lower-cased: the request's at
    first, the backend reply's after a ``call``.  ``headers_explicit`` names the headers a
    flow set itself, and those it removed (no longer the caller's either: a removed header read
    later is the flow's doing, engine/expression_blame.py); when the headers are still the
    request's, only those of them still present reach the client.
    ``payload_is_request`` is True while the body holds the caller's request body (the front
    gives it with ``set_request_body``): a wrong shape there is the caller's mistake, a 422
    (engine/expression_blame.py).  A new body or payload clears it.  A step writing inside the
    JSON payload (``set: {path}``, ``remove: {path}``, ``enrich: {into}``) keeps it and records
    where it wrote in ``payload_edits``: the rest is still what the caller sent, and only what
    lies at or under (or above) a written place is the flow's (``payload_is_request_at``).
    ``payload_edits`` means something only while ``payload_is_request`` is set (no new body pays
    for clearing it): whatever sets the flag sets the edits with it.
    """

    __slots__ = (
        "_body", "_payload", "_stream", "attributes", "content_type", "correlation_id", "done",
        "error", "headers", "headers_are_request", "headers_explicit", "max_body", "method",
        "path_params", "payload_edits", "payload_is_request", "query", "query_string", "status", "trace", "vars",
    )

    def __init__(  # positional too: the front makes one per request, and keywords cost a dict per call
        self,
        body: bytes | None = b"",
        stream: AsyncIterator[bytes] | None = None,
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
        method: str = "POST",
        path_params: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
        query_string: str = "",
        correlation_id: str = "",
        max_body: int = 10 * 1024 * 1024,
    ) -> None:
        self._body: bytes | None = body
        self._stream = stream
        self._payload: Any = _UNSET
        self.content_type = content_type
        self.headers: dict[str, str] = headers if headers is not None else {}
        self.headers_are_request = True
        self.payload_is_request = False  # the front's request messages only
        self.payload_edits: tuple[tuple[str, ...], ...] = ()  # where a step wrote into the caller's body
        self.headers_explicit: set[str] = set()
        self.vars: dict[str, Any] = {}
        self.attributes: dict[str, Any] = {}
        self.method = method
        self.path_params = path_params or {}
        self.query = query or {}
        self.query_string = query_string
        self.status = 200
        self.error: dict[str, Any] | None = None
        self.done = False
        self.correlation_id = correlation_id
        self.max_body = max_body
        # step ids visited, kept only when a test run or a debugger asks for it
        self.trace: list[str] | None = None

    # --- body -------------------------------------------------------------------------------

    @property
    def is_streaming(self) -> bool:
        """True while the body is an unread stream (nothing has needed its bytes yet)."""
        return self._stream is not None

    def take_stream(self) -> AsyncIterator[bytes] | None:
        """Hand the unread stream to whoever forwards it (a call, the response); once only."""
        stream, self._stream = self._stream, None
        if stream is not None:
            self._body = None
        return stream

    async def load_body(self) -> bytes:
        """Read a streaming body whole, refusing it once it passes ``max_body``."""
        stream = self._stream
        if stream is None:
            return self.body
        self._stream = None
        chunks: list[bytes] = []
        size = 0
        async for chunk in stream:
            size += len(chunk)
            if size > self.max_body:
                raise PayloadTooLarge(f"request body is larger than the limit of {self.max_body} bytes")
            chunks.append(chunk)
        self._body = b"".join(chunks)
        return self._body

    @property
    def body(self) -> bytes:
        """The body as bytes, serialising a changed payload once."""
        if self._body is None:
            if self._stream is not None:
                raise RuntimeError("body still streaming: the step must declare that it needs the body")
            self._body = self._serialise(self._payload)
        return self._body

    def set_body(self, body: bytes, content_type: str | None = None) -> None:
        """A new body, the flow's (a backend's answer, a body it made)."""
        self._body = body
        self._stream = None
        self._payload = _UNSET
        self.payload_is_request = False
        if content_type is not None:
            self.content_type = content_type

    def set_stream(self, stream: AsyncIterator[bytes], content_type: str | None) -> None:
        """A new body still to be read, the flow's (a backend's answer streamed through)."""
        self._stream = stream
        self._body = None
        self._payload = _UNSET
        self.payload_is_request = False
        self.content_type = content_type

    def set_request_body(self, body: bytes | AsyncIterator[bytes], content_type: str | None) -> None:
        """The caller's request body, as bytes that have all come or as a stream still to read:
        a wrong shape in it is the caller's mistake (``payload_is_request``) until a step
        replaces it.  The front's one way of giving a message its request's body."""
        if isinstance(body, bytes):
            self._body = body
            self._stream = None
        else:
            self._stream = body
            self._body = None
        self._payload = _UNSET
        self.payload_is_request = True
        self.payload_edits = ()
        self.content_type = content_type

    # --- payload ----------------------------------------------------------------------------

    @property
    def kind(self) -> str:
        return kind_of(self.content_type, self._body)

    @property
    def payload(self) -> Any:
        """The parsed body: JSON values, an lxml element for XML, str for text, None if empty."""
        payload = self._payload
        if payload is _UNSET:  # the body's bytes read without the body property (a property costs a call from C)
            body = self._body
            payload = self._payload = self._parse(body if body is not None else self.body)
        return payload

    def json_unread(self) -> bool:
        """True while the payload is a JSON body not yet parsed: the next read of ``payload``
        gives the JSON parser's own values (dict, list, str, int, float, bool and None, nothing
        else and no subclass), which no step has seen."""
        return self._payload is _UNSET and self._stream is None and kind_of(self.content_type, self._body) == JSON

    def set_payload(self, value: Any, kind: str, content_type: str | None = None) -> None:
        """Replace the payload, as the flow's own; the bytes are produced when next needed."""
        self._payload = value
        self._body = None
        self._stream = None
        self.payload_is_request = False
        self.content_type = content_type or _DEFAULT_CONTENT_TYPE.get(kind, "application/octet-stream")

    def set_payload_edited(self, document: Any, places: tuple[tuple[str, ...], ...]) -> None:
        """The JSON payload ``document`` after a step wrote inside it at ``places``, each the field
        names leading from the root to where it wrote (``$.meta.seen``: ("meta", "seen"); () for
        the whole payload, or a place no field names lead to).  What the step did not touch stays
        whose it was: while the payload is the caller's, the places become the flow's and the
        rest stays the caller's; a write at () makes the whole payload the flow's."""
        is_request = self.payload_is_request and () not in places
        edits = self.payload_edits
        self.set_payload(document, JSON, self.content_type)
        if is_request:
            self.payload_is_request = True
            # a write repeated (a loop's) is kept once
            self.payload_edits = (*edits, *(at for at in places if at not in edits))

    def payload_is_request_at(self, fields: tuple[str, ...]) -> bool:
        """Whether what lies at ``fields`` of the payload (field names from the root; () for the
        whole) is still what the caller sent: the body is the caller's and no step wrote at,
        under or above that place."""
        if not self.payload_is_request:
            return False
        for edit in self.payload_edits:
            shorter = min(len(edit), len(fields))
            if edit[:shorter] == fields[:shorter]:
                return False
        return True

    def _parse(self, body: bytes) -> Any:
        if not body.strip():
            return None
        kind = kind_of(self.content_type, body)  # self.kind: body is self._body here
        if kind == JSON:
            return jsonfast.loads(body)
        if kind == XML:
            return xmlsafe.parse_xml(body)
        if kind == TEXT:
            return body.decode("utf-8", errors="replace")
        return None

    def _serialise(self, value: Any) -> bytes:
        if value is None or value is _UNSET:
            return b""
        if isinstance(value, bytes):
            return value
        if isinstance(value, str):
            return value.encode()
        if kind_of(self.content_type, self._body) == XML:  # self.kind
            return xmlsafe.serialize_xml(value)
        return jsonfast.dumps(value)

    def mark_payload_changed(self) -> None:
        """Call after changing the parsed payload in place (e.g. writing at a JSONPath)."""
        self._body = None
        self.payload_is_request = False

    # --- the connection -------------------------------------------------------------------------

    @property
    def client(self) -> dict[str, Any] | None:
        """The connection's peer as flows read it, ``{"address": "127.0.0.1", "port": 51234}``:
        the ASGI scope's ``client`` (with ``settings.http.proxy_headers``, the address a trusted
        proxy names in X-Forwarded-For, port 0); None for a message that came from no connection
        (a schedule, a queue, a file).  Made when read: the front keeps only the scope's tuple."""
        peer = self.attributes.get(CLIENT)
        if peer is None:
            return None
        return {"address": peer[0], "port": peer[1]}

    # --- headers ----------------------------------------------------------------------------

    def set_header(self, name: str, value: str) -> None:
        key = name.lower()
        self.headers[key] = value
        self.headers_explicit.add(key)

    def remove_header(self, name: str) -> None:
        key = name.lower()
        self.headers.pop(key, None)
        # kept, not discarded: the header's absence is now the flow's, not the caller's (every
        # reader of the names also checks ``headers``), and it costs nothing until a removal
        self.headers_explicit.add(key)

    def replace_headers(self, headers: dict[str, str]) -> None:
        """Take a backend reply's headers as the current message's."""
        self.headers = headers
        self.headers_are_request = False
        self.headers_explicit = set()
