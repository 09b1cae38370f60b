"""Steps that decide what runs: choice, filter, sequence, try, respond, fail."""

from __future__ import annotations

from typing import Any

from engine.compiler import CompileContext, StepConfigError, Steps, internal_error
from engine.errors import ExpressionError, FlowError, RaisedError
from engine.expressions import to_text
from engine.message import Message
from engine.registry import STEPS_REF, StepFn, status_field, step_kind
from engine.steps.basic import BODY_SCHEMA, _status, compile_body

CONDITION = {"type": "string", "description": "An expression, e.g. ${payload.type == 'gold'}."}


@step_kind(
    "choice",
    summary="Run the steps of the first branch whose condition holds, else the otherwise steps.",
    category="route",
    schema={
        "type": "object", "additionalProperties": False, "required": ["when"],
        "properties": {
            "when": {"type": "array", "minItems": 1, "description": "Branches, tried in order.",
                     "items": {"type": "object", "additionalProperties": False, "required": ["if", "steps"],
                               "properties": {"if": CONDITION, "steps": STEPS_REF,
                                              "description": {"type": "string"}}}},
            "otherwise": {**STEPS_REF, "description": "Steps when no branch matched (default: none)."},
        },
    },
    examples=[{"when": [{"if": "${payload.orders[0].symbol == 'IBM'}", "steps": [{"call": {"endpoint": "a"}}]}],
               "otherwise": [{"call": {"endpoint": "b"}}]}],
    branches=("when", "otherwise"),
)
def compile_choice(config: Any, ctx: CompileContext) -> StepFn:
    branches: list[tuple[Any, Steps, str]] = []
    for index, branch in enumerate(config["when"]):
        condition = ctx.condition(branch["if"], ("when", index, "if"))
        steps = ctx.steps(branch["steps"], ("when", index, "steps"))
        branches.append((condition, steps, ctx.branch(("when", index))))
    otherwise = ctx.steps(config.get("otherwise") or [], "otherwise") if config.get("otherwise") else None
    otherwise_id = ctx.branch("otherwise")
    compiled = tuple(branches)

    async def run(msg: Message) -> None:
        for condition, steps, branch_id in compiled:
            if condition.is_true(msg):
                if msg.trace is not None:
                    msg.trace.append(branch_id)
                await steps.run(msg)
                return
        if msg.trace is not None:
            msg.trace.append(otherwise_id)
        if otherwise is not None:
            await otherwise.run(msg)

    return run


@step_kind(
    "filter",
    summary="Run the nested steps only when the condition holds; the flow goes on either way.",
    category="route",
    schema={
        "type": "object", "additionalProperties": False, "required": ["if", "steps"],
        "properties": {"if": CONDITION, "steps": STEPS_REF},
    },
    examples=[{"if": "${headers.\"x-debug\" == 'true'}", "steps": [{"log": "debug: ${payload}"}]}],
    branches=("steps",),
)
def compile_filter(config: Any, ctx: CompileContext) -> StepFn:
    condition = ctx.condition(config["if"], "if")
    steps = ctx.steps(config["steps"], "steps")
    matched_id, skipped_id = ctx.branch("steps"), ctx.branch("skipped")

    async def run(msg: Message) -> None:
        if condition.is_true(msg):
            if msg.trace is not None:
                msg.trace.append(matched_id)
            await steps.run(msg)
        elif msg.trace is not None:
            msg.trace.append(skipped_id)

    return run


@step_kind(
    "sequence",
    summary="Run a named sequence (a reusable step list declared under sequences:), with arguments for a template.",
    category="route",
    schema={"oneOf": [{"type": "string", "description": "The sequence's name."},
                      {"type": "object", "additionalProperties": False, "required": ["name"],
                       "properties": {"name": {"type": "string"},
                                      "with": {"type": "object",
                                               "description": "Arguments of a template's params: name: value "
                                                              "template; checked against the declaration at load."}}}]},
    examples=["add-audit-headers", {"name": "call-backend", "with": {"path": "/orders/${path.id}", "retries": 2}}],
)
def compile_sequence(config: Any, ctx: CompileContext) -> StepFn:
    name = config if isinstance(config, str) else config["name"]
    resolve = ctx.sequence(name, () if isinstance(config, str) else "name")
    declared = ctx.sequence_params(name)
    given = {} if isinstance(config, str) else dict(config.get("with") or {})
    if not declared and not given:
        async def run(msg: Message) -> None:
            await resolve().run(msg)

        return run
    arguments = _arguments(name, declared, given, ctx)

    async def run_template(msg: Message) -> None:
        values = {param: _typed(name, param, declared[param].get("type", "any"), value.render(msg))
                  for param, value in arguments.items()}
        outer = msg.attributes.get("params")
        msg.attributes["params"] = values
        try:
            await resolve().run(msg)
        finally:
            msg.attributes["params"] = outer

    return run_template


_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,), "object": (dict,),
    "array": (list,),
}


def _arguments(name: str, declared: dict[str, dict[str, Any]], given: dict[str, Any],
               ctx: CompileContext) -> dict[str, Any]:
    unknown = sorted(set(given) - set(declared))
    if unknown:
        known = ", ".join(sorted(declared)) or "none"
        raise StepConfigError(f"sequence {name!r} has no parameter {unknown[0]!r} (parameters: {known})",
                              ("with", unknown[0]))
    missing = sorted(p for p, spec in declared.items() if p not in given and "default" not in spec)
    if missing:
        raise StepConfigError(f"sequence {name!r} needs {', '.join(missing)}: give it under with:", "name")
    arguments = {}
    for param, spec in declared.items():
        value = given.get(param, spec.get("default"))
        kind = spec.get("type", "any")
        if param in given and not (isinstance(value, str) and "${" in value):
            try:  # a literal is checked now, not when the first message comes
                _typed(name, param, kind, value)
            except ExpressionError as exc:
                raise StepConfigError(exc.detail, ("with", param)) from exc
        arguments[param] = ctx.template(value, ("with", param) if param in given else "name")
    return arguments


def _typed(sequence: str, param: str, kind: str, value: Any) -> Any:
    expected = _PYTHON_TYPES.get(kind)
    if expected is None or value is None:
        return value
    wrong_bool = isinstance(value, bool) and kind in ("integer", "number")
    if not isinstance(value, expected) or wrong_bool:
        raise ExpressionError(f"sequence {sequence!r}: parameter {param!r} must be {kind}, got "
                              f"{type(value).__name__} {value!r}")
    return value


@step_kind(
    "try",
    summary="Run steps; if one fails, run the catch steps with ${error.*}; then the finally steps.",
    category="route",
    schema={
        "type": "object", "additionalProperties": False, "required": ["steps"],
        "properties": {
            "steps": STEPS_REF,
            "catch": {**STEPS_REF, "description": "Run on failure; the flow then goes on (unless they fail)."},
            "finally": {**STEPS_REF, "description": "Run after steps and catch, whatever happened."},
        },
    },
    examples=[{"steps": [{"call": {"endpoint": "crm"}}],
               "catch": [{"set": {"var": "crm_down", "value": True}}]}],
    branches=("steps", "catch", "finally"),
)
def compile_try(config: Any, ctx: CompileContext) -> StepFn:
    body = ctx.steps(config["steps"], "steps")
    catch = ctx.steps(config["catch"], "catch") if config.get("catch") else None
    final = ctx.steps(config["finally"], "finally") if config.get("finally") else None
    caught_id = ctx.branch("catch")

    async def run(msg: Message) -> None:
        try:
            await body.run(msg)
        except Exception as exc:
            if catch is None:
                raise
            error = exc if isinstance(exc, FlowError) else internal_error(exc)
            msg.error = {**error.as_dict(), "step": getattr(exc, "step_id", None)}
            if msg.trace is not None:
                msg.trace.append(caught_id)
            await catch.run(msg)
        finally:
            if final is not None:
                await final.run(msg)

    return run


@step_kind(
    "respond",
    summary="Answer the caller now: status, headers and an optional new body; later steps do not run.",
    category="route",
    schema={
        "type": "object", "additionalProperties": False,
        "properties": {
            "status": status_field("HTTP status (default: the current one)."),
            "headers": {"type": "object", "description": "Headers to add: name: value template."},
            **BODY_SCHEMA,
        },
    },
    examples=[{"status": 201, "json": {"id": "${vars.id}"}}, {}],
)
def compile_respond(config: Any, ctx: CompileContext) -> StepFn:
    config = config or {}
    status = ctx.template(config["status"], "status") if "status" in config else None
    headers = [(str(k), ctx.template(v, ("headers", k))) for k, v in (config.get("headers") or {}).items()]
    set_body = compile_body(config, ctx)

    async def run(msg: Message) -> None:
        if status is not None:
            msg.status = _status(status.render(msg), status, msg)
        if set_body is not None:
            set_body(msg)
        for name, value in headers:
            msg.set_header(name, to_text(value.render(msg)))
        msg.done = True

    return run


@step_kind(
    "fail",
    summary="Raise an error: the flow's error handler runs, or the caller gets problem+json.",
    category="route",
    schema={
        "type": "object", "additionalProperties": False, "required": ["message"],
        "properties": {
            "status": status_field("HTTP status of the error (default 500)."),
            "message": {"type": "string", "description": "What went wrong (template), shown to the caller."},
            "code": {"type": "string", "pattern": "^[a-z0-9-]+$",
                     "description": "A short machine-readable code (the problem type's last segment)."},
        },
    },
    examples=[{"status": 404, "message": "order ${path.id} not found", "code": "order-not-found"}],
)
def compile_fail(config: Any, ctx: CompileContext) -> StepFn:
    status = ctx.template(config.get("status", 500), "status")
    message = ctx.template(config["message"], "message")
    code = config.get("code", "flow-error")
    if status.is_constant:
        try:
            _status(status.constant)
        except FlowError as exc:
            raise StepConfigError(str(exc.detail), "status") from None

    async def run(msg: Message) -> None:
        raise RaisedError(to_text(message.render(msg)), status=_status(status.render(msg), status, msg), code=code)

    return run
