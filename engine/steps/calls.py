"""Steps that call endpoints: call (the reply becomes the message) and enrich (merged into it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine import jsonfast, xmlsafe
from engine.compiler import CompileContext, StepConfigError
from engine.errors import BackendStatusError, ExpressionError
from engine.expressions import Template, to_text
from engine.message import JSON, XML, Message, kind_of
from engine.registry import StepFn, step_kind
from engine.steps.basic import XmlTemplate, compile_jsonpath, json_payload

# Headers that describe one hop, or that the client library sets itself, never forwarded.
HOP_HEADERS = frozenset({
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
    "content-length", "host", "expect", "proxy-authorization", "proxy-authenticate",
})

CALL_PROPERTIES: dict[str, Any] = {
    "endpoint": {"type": "string", "description": "The endpoint's name (declared under endpoints:)."},
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


class CallSpec:
    """The request part shared by call and enrich, compiled once."""

    def __init__(self, config: Any, ctx: CompileContext, base: tuple[Any, ...] = ()) -> None:
        self.endpoint = ctx.endpoint(config["endpoint"], (*base, "endpoint"))
        self.method = ctx.template(config["method"], (*base, "method")) if "method" in config else None
        self.path = ctx.template(config.get("path", ""), (*base, "path"))
        self.query = [(str(k), ctx.template(v, (*base, "query", k))) for k, v in (config.get("query") or {}).items()]
        self.headers = [(str(k).lower(), ctx.template(v, (*base, "headers", k)))
                        for k, v in (config.get("headers") or {}).items()]
        self.forward = bool(config.get("forward_headers", True))
        if "body" in config and "xml" in config:
            raise StepConfigError("give body (JSON) or xml, not both", (*base, "xml"))
        self.body: Template | None = ctx.template(config["body"], (*base, "body")) if "body" in config else None
        self.xml = XmlTemplate(str(config["xml"]), ctx, (*base, "xml")) if "xml" in config else None
        self.content_type = config.get("content_type")
        self.accept = _status_matcher(config.get("expect_status"), ctx, (*base, "expect_status"))
        self.endpoint_name = str(config["endpoint"])
        if self.body is not None and self.body.uses_payload:
            ctx.needs_body()

    def outbound_headers(self, msg: Message) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = []
        if self.forward:
            headers = [(k, v) for k, v in msg.headers.items() if k not in HOP_HEADERS]
        else:
            trace = msg.headers.get("traceparent")
            if trace:
                headers.append(("traceparent", trace))
        for name, value in self.headers:
            headers = [(k, v) for k, v in headers if k != name]
            headers.append((name, to_text(value.render(msg))))
        if msg.correlation_id:
            headers = [(k, v) for k, v in headers if k != "x-request-id"]
            headers.append(("x-request-id", msg.correlation_id))
        return headers

    async def send(self, msg: Message) -> Any:
        method = to_text(self.method.render(msg)).upper() if self.method is not None else msg.method
        headers = self.outbound_headers(msg)
        body: Any
        if self.body is not None or self.xml is not None:
            if self.body is not None:
                body, default_type = jsonfast.dumps(self.body.render(msg)), "application/json"
            else:
                assert self.xml is not None
                body, default_type = xmlsafe.serialize_xml(self.xml.render(msg)), "application/xml"
            headers = [(k, v) for k, v in headers if k != "content-type"]
            headers.append(("content-type", self.content_type or default_type))
        elif method in ("GET", "HEAD", "DELETE", "OPTIONS") and not msg.is_streaming and not msg.body:
            body = None
        else:
            body = msg.take_stream() if msg.is_streaming else msg.body
            if msg.content_type:
                headers = [(k, v) for k, v in headers if k != "content-type"] + [("content-type", msg.content_type)]
        query = [(k, to_text(v.render(msg))) for k, v in self.query] or None
        reply = await self.endpoint.request(method, to_text(self.path.render(msg)), headers=headers, body=body,
                                            query=query)
        if self.accept is not None and not self.accept(reply.status):
            await reply.aclose()
            raise BackendStatusError(f"endpoint {self.endpoint_name!r} answered {reply.status}",
                                     extra={"backend_status": reply.status})
        return reply


def _is_2xx(status: int) -> bool:
    return 200 <= status < 300


def _status_matcher(spec: Any, ctx: CompileContext, key: Any) -> Callable[[int], bool] | None:
    """What counts as success: a backend's non-2xx is an error the flow can handle, unless the
    step lists the statuses it takes (``[2xx, 404]``) or takes ``any``."""
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
        raise StepConfigError("expect_status lists no status", key)
    return lambda status: status in exact or status // 100 in classes


@step_kind(
    "call",
    summary="Call an endpoint; its reply (status, headers, body) becomes the message. A non-2xx reply is an "
            "error (backend-status, 502) the flow's on_error can handle, unless expect_status takes it.",
    category="connect",
    schema={"type": "object", "additionalProperties": False, "required": ["endpoint"],
            "properties": {**CALL_PROPERTIES,
                           "into": {"type": "string",
                                    "description": "Keep the message; store the reply as ${vars.NAME} "
                                                   "({status, headers, body}) instead."}}},
    examples=[{"endpoint": "orders", "method": "GET", "path": "/orders/${path.id}"},
              {"endpoint": "backend", "path": "/echo"}],
)
def compile_call(config: Any, ctx: CompileContext) -> StepFn:
    spec = CallSpec(config, ctx)
    into = config.get("into")
    if into is not None:
        ctx.needs_body()  # keeping the message means reading it before the call

    async def run(msg: Message) -> None:
        reply = await spec.send(msg)
        content_type = _header(reply.headers, "content-type")
        if into is not None:
            body = await reply.read()
            msg.vars[into] = {"status": reply.status, "headers": dict(reply.headers),
                              "body": _parse_reply(body, content_type)}
            return
        msg.status = reply.status
        msg.replace_headers(dict(reply.headers))
        if reply.body is not None:
            msg.set_body(reply.body, content_type)
        else:
            msg.set_stream(reply.stream, content_type)

    return run


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def _parse_reply(body: bytes, content_type: str | None) -> Any:
    probe = Message(body=body, content_type=content_type)
    return probe.payload


@step_kind(
    "enrich",
    summary="Call an endpoint and merge (part of) its answer into the JSON payload or a variable. A non-2xx "
            "reply is an error (backend-status, 502), never merged, unless call.expect_status takes it.",
    category="connect",
    schema={
        "type": "object", "additionalProperties": False, "required": ["call"],
        "properties": {
            "call": {"type": "object", "additionalProperties": False, "required": ["endpoint"],
                     "properties": CALL_PROPERTIES, "description": "The request, as in the call step."},
            "select": {"type": "string",
                       "description": "JMESPath over the reply's JSON (or xpath('...') over its XML) picking "
                                      "what to merge; default the whole reply."},
            "into": {"type": "string", "pattern": r"^\$",
                     "description": "JSONPath in the current payload where the value goes, e.g. $.customer."},
            "var": {"type": "string", "description": "Put the value in this variable instead."},
        },
    },
    examples=[{"call": {"endpoint": "crm", "method": "GET", "path": "/customers/${payload.customerId}"},
               "select": "payload.{name: name, tier: tier}", "into": "$.customer"}],
)
def compile_enrich(config: Any, ctx: CompileContext) -> StepFn:
    if ("into" in config) == ("var" in config):
        raise StepConfigError("enrich needs one destination: into (a JSONPath) or var")
    spec = CallSpec(config["call"], ctx, ("call",))
    select = ctx.expression(config["select"], "select") if "select" in config else None
    into = compile_jsonpath(config["into"], ctx, "into") if "into" in config else None
    var = config.get("var")
    if into is not None:
        ctx.needs_body()

    async def run(msg: Message) -> None:
        if into is not None:
            json_payload(msg, "enrich into a JSONPath")  # fail before calling, not after
        reply = await spec.send(msg)
        content_type = _header(reply.headers, "content-type")
        body = await reply.read()
        if select is not None:
            answer = Message(body=body, content_type=content_type, correlation_id=msg.correlation_id)
            answer.vars = msg.vars
            answer.status = reply.status
            value = select.evaluate(answer)
        else:
            value = _parse_reply(body, content_type)
            if kind_of(content_type, body) == XML:
                raise ExpressionError("enrich got XML: add select: xpath('...') to pick the value")
        if var is not None:
            msg.vars[var] = value
        else:
            assert into is not None
            document = json_payload(msg, "enrich into a JSONPath")
            msg.set_payload(into.update_or_create(document if document is not None else {}, value), JSON,
                            msg.content_type)

    return run
