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
from engine.errors import BackendStatusError, FlowError
from engine.expressions import Template, to_text

if TYPE_CHECKING:
    from connectors.http import HttpRequest
    from engine.compiler import CompileContext
    from engine.message import Message

# Headers that describe one hop, or that the client library sets itself, never forwarded.
HOP_HEADERS = frozenset({
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
    "content-length", "host", "expect", "proxy-authorization", "proxy-authenticate",
})
# Credentials: the caller's (or the gateway's) are never passed on to a backend unless the flow
# names them (a call's headers:, a set step, or forward_headers: [name, ...]).  Proxy-* too.
# INTERLACE_CREDENTIAL_HEADERS adds names (comma-separated), e.g. the gateway's own secret header.
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "set-cookie", "x-api-key", "api-key", "apikey"})
CREDENTIAL_HEADERS_ENV = "INTERLACE_CREDENTIAL_HEADERS"

REQUEST_PROPERTIES: dict[str, Any] = {
    "method": {"type": "string", "description": "HTTP method (default: the request's method)."},
    "path": {"type": "string",
             "description": "Path appended to the endpoint URL; each ${...} is percent-encoded as a path segment "
                            "(after a ?, as a query value); a path that is one whole ${...} keeps its slashes; "
                            "${raw(...)} inserts a value that is a piece of URL as it is. A '.' or '..' segment "
                            "is refused (400 bad-url-value)."},
    "query": {"type": "object", "description": "Query parameters: name: value template (values percent-encoded)."},
    "headers": {"type": "object",
                "description": "Headers to add or override: name: value template. They replace the endpoint's "
                               "headers of the same name; forwarded headers never do."},
    "forward_headers": {
        "type": ["boolean", "array"], "items": {"type": "string", "minLength": 1},
        "description": "Which of the message's headers go to the backend: true (default) all but hop-by-hop, "
                       "Proxy-* and credentials (Authorization, Cookie, X-Api-Key, Api-Key, Apikey and the names "
                       "in INTERLACE_CREDENTIAL_HEADERS); false none; a list: exactly those, credentials included. "
                       "Headers a flow set itself always go; the correlation id and traceparent always go; a "
                       "forwarded header never replaces one of the endpoint's or the step's."},
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
    """The step's request, sent through ``invoke`` (the endpoint's retries, failover, breakers)."""
    render, accept = compile_render(config, ctx)

    async def run(msg: Message) -> Reply:
        reply = await invoke(render(msg))
        if accept is not None and not accept(reply.status or 0):
            await reply.aclose()
            raise status_error(endpoint_name, reply.status)
        return reply

    return run


def status_error(endpoint_name: str, status: int | None) -> BackendStatusError:
    """A reply whose status the step does not take (expect_status)."""
    return BackendStatusError(f"endpoint {endpoint_name!r} answered {status}", extra={"backend_status": status})


def compile_render(config: dict[str, Any], ctx: CompileContext
                   ) -> tuple[Callable[[Message], HttpRequest], Callable[[int], bool] | None]:
    """At load: (what makes a message's request, what says whether a reply's status is success;
    None when every status is)."""
    from connectors.http import HttpRequest, checked_path
    from engine.compiler import StepConfigError
    from engine.steps.basic import XmlTemplate

    method = ctx.template(config["method"], "method") if "method" in config else None
    path = ctx.url_template(config.get("path", ""), "path")
    # a literal path is made ready once, here; one that would fail is left to fail per request as before
    literal_path: str | None = None
    if path.is_constant:
        try:
            literal_path = checked_path(path.constant)
        except FlowError:
            literal_path = None
    query = [(str(k), ctx.template(v, ("query", k))) for k, v in (config.get("query") or {}).items()]
    extra_headers = [(str(k).lower(), ctx.template(v, ("headers", k)))
                     for k, v in (config.get("headers") or {}).items()]
    forward_setting = config.get("forward_headers", True)
    # what is never copied from the message: named here once, at load
    forward = bool(forward_setting)
    forward_only: frozenset[str] | None = None
    if isinstance(forward_setting, list):
        forward_only = frozenset(str(name).lower() for name in forward_setting) - HOP_HEADERS
    extra = ctx.options.env.get(CREDENTIAL_HEADERS_ENV, "")
    blocked = HOP_HEADERS | CREDENTIAL_HEADERS | {n.strip().lower() for n in extra.split(",") if n.strip()}
    own_names = frozenset(name for name, _ in extra_headers) | {"x-request-id"}
    if "body" in config and "xml" in config:
        raise StepConfigError("give body (JSON) or xml, not both", "xml")
    body_template: Template | None = ctx.template(config["body"], "body") if "body" in config else None
    xml = XmlTemplate(str(config["xml"]), ctx, "xml") if "xml" in config else None
    content_type = config.get("content_type")
    accept = _status_matcher(config.get("expect_status"))
    if body_template is not None and body_template.uses_payload:
        ctx.needs_body()

    def outbound_headers(msg: Message) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(own, forwarded): the headers the flow names (set steps, the step's headers, the
        correlation id) and those copied from the message, which the endpoint's never yield to."""
        own: list[tuple[str, str]] = []
        forwarded: list[tuple[str, str]] = []
        explicit = msg.headers_explicit
        if forward:
            for k, v in msg.headers.items():
                if k in own_names:
                    continue
                if k in explicit:
                    own.append((k, v))
                elif forward_only is not None:
                    if k in forward_only:
                        forwarded.append((k, v))
                elif k not in blocked and not k.startswith("proxy-"):
                    forwarded.append((k, v))
        else:
            for k in explicit:
                if k not in own_names and k in msg.headers:
                    own.append((k, msg.headers[k]))
            trace = msg.headers.get("traceparent")
            if trace and "traceparent" not in explicit:
                forwarded.append(("traceparent", trace))
        for name, value in extra_headers:
            own.append((name, to_text(value.render(msg))))
        if msg.correlation_id:
            own.append(("x-request-id", msg.correlation_id))
        return own, forwarded

    def render(msg: Message) -> HttpRequest:
        verb = to_text(method.render(msg)).upper() if method is not None else msg.method
        headers, forwarded = outbound_headers(msg)
        body: Any
        if body_template is not None or xml is not None:
            if body_template is not None:
                body, default_type = jsonfast.dumps(body_template.render(msg)), "application/json"
            else:
                assert xml is not None
                body, default_type = xmlsafe.serialize_xml(xml.render(msg)), "application/xml"
            headers = [(k, v) for k, v in headers if k != "content-type"]
            headers.append(("content-type", content_type or default_type))
            forwarded = [(k, v) for k, v in forwarded if k != "content-type"]
        elif verb in ("GET", "HEAD", "DELETE", "OPTIONS") and not msg.is_streaming and not msg.body:
            body = None
        else:
            body = msg.take_stream() if msg.is_streaming else msg.body
            if msg.content_type:
                headers = [(k, v) for k, v in headers if k != "content-type"] + [("content-type", msg.content_type)]
                forwarded = [(k, v) for k, v in forwarded if k != "content-type"]
        rendered_query = [(k, to_text(v.render(msg))) for k, v in query] or None
        if literal_path is not None:
            return HttpRequest(verb, literal_path, headers, body, rendered_query, forwarded=forwarded, checked=True)
        return HttpRequest(verb, path.render(msg), headers, body, rendered_query, forwarded=forwarded)

    return render, accept


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
