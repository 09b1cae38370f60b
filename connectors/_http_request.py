"""The http kind's one operation, ``request``: its step keys, compiled once at load.

``call: {endpoint, method, path, query, headers, forward_headers, body | xml, content_type,
expect_status}``.  The message's body is forwarded as it is (streamed when it is still a
stream) unless ``body`` or ``xml`` gives a template.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from connectors.base import Invocation, Invoke, Operation, Reply
from engine import jsonfast, xmlsafe
from engine.errors import BackendStatusError
from engine.expressions import Template, to_text

if TYPE_CHECKING:
    from engine.compiler import CompileContext
    from engine.message import Message

# Headers that describe one hop, or that the client library sets itself, never forwarded.
HOP_HEADERS = frozenset({
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
    "content-length", "host", "expect", "proxy-authorization", "proxy-authenticate",
})

REQUEST_PROPERTIES: dict[str, Any] = {
    "method": {"type": "string", "description": "HTTP method (default: the request's method)."},
    "path": {"type": "string", "description": "Path appended to the endpoint URL; ${...} allowed."},
    "query": {"type": "object", "description": "Query parameters: name: value template."},
    "headers": {"type": "object", "description": "Headers to add or override: name: value template."},
    "forward_headers": {"type": "boolean",
                        "description": "Forward the message's headers (default true; the correlation id and "
                                       "traceparent always go)."},
    "body": {"description": "A JSON body template to send instead of the current body."},
    "xml": {"type": "string", "description": "An XML body template to send instead of the current body "
                                              "(e.g. a SOAP envelope); ${...} in texts and attributes."},
    "content_type": {"type": "string", "description": "Content-Type of a body or xml template."},
    "expect_status": {
        "oneOf": [
            {"type": "array", "items": {"type": ["integer", "string"], "pattern": "^[1-5](xx|[0-9][0-9])$"}},
            {"const": "any"},
        ],
        "description": "Statuses that count as success (default [2xx]; e.g. [200, 201], [2xx, 404]); any other "
                       "raises backend-status (502, ${error.backend_status} holds the backend's) for the error "
                       "handlers. `any` takes every answer as the reply (a pure proxy passing a 404 through).",
    },
}

REQUEST_OPERATION = Operation(
    "Send an HTTP request; the reply's status, headers and body become the message. A non-2xx reply is an "
    "error (backend-status, 502) the flow's on_error can handle, unless expect_status takes it.",
    schema={"type": "object", "additionalProperties": False, "properties": REQUEST_PROPERTIES},
    examples=[{"endpoint": "orders", "method": "GET", "path": "/orders/${path.id}"},
              {"endpoint": "backend", "path": "/echo"}],
)


def compile_request(endpoint_name: str, config: dict[str, Any], ctx: CompileContext, invoke: Invoke) -> Invocation:
    from connectors.http import HttpRequest
    from engine.compiler import StepConfigError
    from engine.steps.basic import XmlTemplate

    method = ctx.template(config["method"], "method") if "method" in config else None
    path = ctx.template(config.get("path", ""), "path")
    query = [(str(k), ctx.template(v, ("query", k))) for k, v in (config.get("query") or {}).items()]
    extra_headers = [(str(k).lower(), ctx.template(v, ("headers", k)))
                     for k, v in (config.get("headers") or {}).items()]
    forward = bool(config.get("forward_headers", True))
    if "body" in config and "xml" in config:
        raise StepConfigError("give body (JSON) or xml, not both", "xml")
    body_template: Template | None = ctx.template(config["body"], "body") if "body" in config else None
    xml = XmlTemplate(str(config["xml"]), ctx, "xml") if "xml" in config else None
    content_type = config.get("content_type")
    accept = _status_matcher(config.get("expect_status"))
    if body_template is not None and body_template.uses_payload:
        ctx.needs_body()

    def outbound_headers(msg: Message) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = []
        if forward:
            headers = [(k, v) for k, v in msg.headers.items() if k not in HOP_HEADERS]
        else:
            trace = msg.headers.get("traceparent")
            if trace:
                headers.append(("traceparent", trace))
        for name, value in extra_headers:
            headers = [(k, v) for k, v in headers if k != name]
            headers.append((name, to_text(value.render(msg))))
        if msg.correlation_id:
            headers = [(k, v) for k, v in headers if k != "x-request-id"]
            headers.append(("x-request-id", msg.correlation_id))
        return headers

    async def run(msg: Message) -> Reply:
        verb = to_text(method.render(msg)).upper() if method is not None else msg.method
        headers = outbound_headers(msg)
        body: Any
        if body_template is not None or xml is not None:
            if body_template is not None:
                body, default_type = jsonfast.dumps(body_template.render(msg)), "application/json"
            else:
                assert xml is not None
                body, default_type = xmlsafe.serialize_xml(xml.render(msg)), "application/xml"
            headers = [(k, v) for k, v in headers if k != "content-type"]
            headers.append(("content-type", content_type or default_type))
        elif verb in ("GET", "HEAD", "DELETE", "OPTIONS") and not msg.is_streaming and not msg.body:
            body = None
        else:
            body = msg.take_stream() if msg.is_streaming else msg.body
            if msg.content_type:
                headers = [(k, v) for k, v in headers if k != "content-type"] + [("content-type", msg.content_type)]
        rendered_query = [(k, to_text(v.render(msg))) for k, v in query] or None
        reply = await invoke(HttpRequest(verb, to_text(path.render(msg)), headers, body, rendered_query))
        if accept is not None and not accept(reply.status or 0):
            await reply.aclose()
            raise BackendStatusError(f"endpoint {endpoint_name!r} answered {reply.status}",
                                     extra={"backend_status": reply.status})
        return reply

    return run


def _is_2xx(status: int) -> bool:
    return 200 <= status < 300


def _status_matcher(spec: Any) -> Callable[[int], bool] | None:
    """What counts as success: a backend's non-2xx is an error the flow can handle, unless the
    step lists the statuses it takes (``[2xx, 404]``) or takes ``any``."""
    from engine.compiler import StepConfigError

    if spec is None:
        return _is_2xx
    if spec == "any":
        return None
    exact: set[int] = set()
    classes: set[int] = set()
    for item in spec:
        text = str(item)
        if text.endswith("xx"):
            classes.add(int(text[0]))
        else:
            exact.add(int(text))
    if not exact and not classes:
        raise StepConfigError("expect_status lists no status", "expect_status")
    return lambda status: status in exact or status // 100 in classes
