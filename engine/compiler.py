"""Compiling a validated project into runnable flows: every expression, XPath, stylesheet and
endpoint is prepared here, once, so that a request only runs closures.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connectors.base import EndpointContext
from connectors.resilience import build_endpoint
from engine.errors import FlowError, RequestInvalid
from engine.expressions import (
    CompileOptions,
    Expr,
    ExpressionSyntaxError,
    Secrets,
    Template,
    compile_condition,
)
from engine.instrument import observe_step
from engine.loader import LoadError, describe, step_kind_count, unknown_step_kind
from engine.message import Message
from engine.model import Endpoint, Flow, HttpSource, Location, Project
from engine.paths import OutsideFolder, inside
from engine.redact import mask, without_userinfo
from engine.registry import StepFn, StepKind, step_kinds
from engine.schema import STEP_META_KEYS, step_config_schema
from engine.schemacheck import SchemaValidator, offline_validator, unresolved_ref
from engine.sources.base import source_kinds
from engine.sources.connector_source import build_connector_source
from engine.sources.policy import compile_policy, on_error_steps
from engine.urls import UrlTemplate
from engine.yamlio import locate, plain

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator

log = logging.getLogger("interlace.compiler")

EndpointFactory = Callable[[str, str, dict[str, Any]], Any]
# Takes a built step and returns one of the same shape around it (the designer's try-it
# recorder); it is told the step's kind, id and where the step stands in its file.
StepWrapper = Callable[[StepFn, str, str, Location], StepFn]
# what an unset ${env.X}/${secret.X} of an endpoint's settings reads as outside `run`: a URL, so
# that a `url:` made of one still passes the connector's checks
UNSET_STAND_IN = "http://unset.invalid"


class StepConfigError(ValueError):
    """A step's config that cannot compile; ``key`` is where in the config, ``offset`` within it."""

    def __init__(self, message: str, key: Any = (), offset: int = 0) -> None:
        super().__init__(message)
        self.key = key if isinstance(key, tuple) else (key,)
        self.offset = offset


@dataclass(frozen=True, slots=True)
class CompiledStep:
    run: StepFn
    needs_body: bool
    kind: str
    id: str
    location: Location


class Steps:
    """A compiled step list; running it stops early once a step answers (``msg.done``)."""

    __slots__ = ("id", "items")

    def __init__(self, items: tuple[CompiledStep, ...], id: str) -> None:
        self.items = items
        self.id = id

    async def run(self, msg: Message) -> None:
        for step in self.items:
            if step.needs_body and msg._stream is not None:  # msg.is_streaming (a property costs a call from C)
                await msg.load_body()
            if msg.trace is not None:
                msg.trace.append(step.id)
            try:
                await step.run(msg)
            except Exception as exc:
                # remember the innermost step that failed, for logs, traces and test reports
                if not hasattr(exc, "step_id"):
                    with contextlib.suppress(AttributeError):  # a frozen (attrs) exception keeps none
                        exc.step_id = step.id  # type: ignore[attr-defined]
                raise
            if msg.done:
                return

    def __len__(self) -> int:
        return len(self.items)


@dataclass
class CompiledFlow:
    flow: Flow
    steps: Steps
    on_error: Steps | None
    max_body: int | None
    # the JSON Schema of the request body the flow declares (source.http.request.schema)
    request_validator: Draft202012Validator | None = None
    # a source other than http (engine.sources), built at load, started by the runtime
    trigger: Any = None
    # on_error.redelivery, compiled (engine.sources.base.Redelivery)
    policy: Any = None
    # an HTTP flow with on_error.redelivery: its steps run under the policy while the caller
    # waits (engine/sources/http_redelivery.py)
    redelivers: bool = False
    # on_error.redelivery.dead_letter.steps, compiled: what takes a message whose attempts are used up
    dead_letter_steps: Steps | None = None

    @property
    def name(self) -> str:
        return self.flow.name

    @property
    def source(self) -> HttpSource | None:
        return self.flow.source

    async def handle(self, msg: Message) -> None:
        """Run the flow; an error goes to the flow's handler, else propagates to the front."""
        if self.request_validator is not None:
            await self._check_request(msg)
        if self.redelivers:
            from engine.sources.http_redelivery import run_redelivered

            await run_redelivered(self, msg)
            return
        try:
            await self.steps.run(msg)
        except FlowError as exc:
            if self.on_error is None:
                raise
            await self._handle_error(msg, exc)
        except Exception as exc:
            if self.on_error is None:
                raise
            log.exception("flow %s failed at %s", self.name, getattr(exc, "step_id", "?"),
                          extra={"correlation_id": msg.correlation_id})
            await self._handle_error(msg, internal_error(exc))

    async def _check_request(self, msg: Message) -> None:
        """A JSON body that breaks the declared schema is the caller's mistake: 422, each problem named."""
        assert self.request_validator is not None
        if msg.is_streaming:
            await msg.load_body()
        if not msg.body:
            # no body at all is checked too: against the schema it is JSON null
            problems = list(self.request_validator.iter_errors(None))
            if problems:
                raise RequestInvalid("the request has no body; this route expects a JSON body matching its schema",
                                     extra={"errors": [{"path": "$", "message": p.message} for p in problems[:20]]})
            return
        if msg.kind != "json":
            return  # a declared content_type already answered 415 for other media types
        problems = [{"path": "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path),
                     "message": e.message}
                    for e in sorted(self.request_validator.iter_errors(msg.payload), key=lambda e: list(e.path))]
        if problems:
            first = problems[0]
            raise RequestInvalid(f"the request body does not match the schema: {first['path']}: {first['message']}",
                                 extra={"errors": problems[:20]})

    async def _handle_error(self, msg: Message, exc: FlowError) -> None:
        msg.error = exc.as_dict()
        msg.error["step"] = getattr(exc, "step_id", None)
        msg.done = False
        assert self.on_error is not None
        await self.on_error.run(msg)
        if not msg.done:
            raise exc  # the handler did not answer: the caller gets problem+json


def internal_error(exc: BaseException) -> FlowError:
    error = FlowError("internal error; see the logs under this correlation id")
    error.step_id = getattr(exc, "step_id", None)  # type: ignore[attr-defined]
    return error


@dataclass
class CompiledProject:
    project: Project
    flows: list[CompiledFlow] = field(default_factory=list)
    endpoints: dict[str, Any] = field(default_factory=dict)
    sequences: dict[str, Steps] = field(default_factory=dict)
    errors: list[LoadError] = field(default_factory=list)
    # what is worth saying but does not stop a load (an unset ${env.X} outside `run`)
    notes: list[LoadError] = field(default_factory=list)
    # every step id and branch id, per flow: what a test suite can cover
    coverage_points: dict[str, list[str]] = field(default_factory=dict)
    # what steps asked to run when these flows close (CompileContext.on_close)
    closers: list[Callable[[], object]] = field(default_factory=list)
    # what steps asked to run once the endpoints are open (CompileContext.on_open)
    openers: list[Callable[[], object]] = field(default_factory=list)
    # the flows with a soap source, one service per path (connectors/soap/service.py)
    soap_services: list[Any] = field(default_factory=list)
    # what the steps need the runtime to provide (e.g. "store": the message store)
    needs: set[str] = field(default_factory=set)

    # set once open() has opened the endpoints; close() clears it
    opened: bool = False

    async def open(self) -> None:
        if self.opened:
            return
        for endpoint in self.endpoints.values():
            await endpoint.open()
        self.opened = True
        for opener in self.openers:
            result = opener()
            if inspect.isawaitable(result):
                await result

    async def unready(self) -> dict[str, str]:
        """The required endpoints that cannot be used now, with why (empty: ready)."""
        problems: dict[str, str] = {}
        for name, endpoint in self.endpoints.items():
            if getattr(endpoint, "required", False):
                reason = await endpoint.ready()
                if reason is not None:
                    problems[name] = reason
        return problems

    async def close(self) -> None:
        self.opened = False
        for closer in self.closers:
            try:
                result = closer()
                if inspect.isawaitable(result):
                    await result
            except Exception:  # closing must go on for the others
                log.exception("closing a step's resource failed")
        for endpoint in self.endpoints.values():
            try:
                await endpoint.close()
            except Exception:  # closing must go on for the others
                log.exception("closing endpoint %s failed", getattr(endpoint, "name", "?"))


class CompileContext:
    """What a step compiler may use: expressions, templates, nested steps, endpoints, files."""

    def __init__(self, compiler: ProjectCompiler, file: Path, namespaces: Mapping[str, str], owner: str) -> None:
        self._compiler = compiler
        self.file = file
        self.namespaces = dict(namespaces)
        self.owner = owner  # the flow or sequence being compiled
        self.node: Any = None  # the current step's config node
        self.step_id = owner
        self._needs_body = False
        self.endpoints_used: list[str] = []  # by the current step: its spans name them

    @property
    def folder(self) -> Path:
        """The flow folder: every file a flow names lies inside it."""
        return self.file.parent

    @property
    def options(self) -> CompileOptions:
        return self._compiler.options_for(self.namespaces)

    @property
    def stores_in_memory(self) -> bool:
        """A flow-test case: a step's ``store:`` (redis, sql) is checked, then kept in the case's own
        memory, so that cases do not share state and a suite needs no server (docs/testing.md)."""
        return self._compiler.stores_in_memory

    # -- building blocks for step compilers --

    def template(self, value: Any, key: Any = ()) -> Template:
        """Compile a value that may hold ``${...}`` (a string, or a structure of them)."""
        try:
            template = Template(value, self.options)
        except ExpressionSyntaxError as exc:
            raise StepConfigError(str(exc), key, exc.offset) from exc
        self._note(template.expressions)
        return template

    def url_template(self, value: Any, key: Any = ()) -> UrlTemplate:
        """Compile a URL path template: each ``${...}`` percent-encoded for where it lands
        (a path segment or a query value; ``engine/urls.py``)."""
        try:
            template = UrlTemplate(value, self.options)
        except ExpressionSyntaxError as exc:
            raise StepConfigError(str(exc), key, exc.offset) from exc
        self._note(template.expressions)
        return template

    def condition(self, value: Any, key: Any = ()) -> Expr:
        try:
            expr = compile_condition(value, self.options)
        except ExpressionSyntaxError as exc:
            raise StepConfigError(str(exc), key, exc.offset) from exc
        self._note([expr])
        return expr

    def expression(self, value: str, key: Any = (), *, reads_body: bool = True) -> Expr:
        """A bare expression (no ``${}``), e.g. a JMESPath reshaping.  ``reads_body=False`` for one
        the step evaluates over a value it builds itself, so ``payload`` in it does not make the
        step read a streamed request body first."""
        try:
            expr = Expr(value, self.namespaces, self.options.env, self.options.secrets)
        except ExpressionSyntaxError as exc:
            raise StepConfigError(str(exc), key, exc.offset) from exc
        needed = self._needs_body
        self._note([expr])
        if not reads_body:
            self._needs_body = needed
        return expr

    def require(self, what: str) -> None:
        """Declare that the step needs a process-wide service the runtime opens (``"store"``)."""
        self._compiler.compiled.needs.add(what)

    def needs_body(self) -> None:
        """Declare that the step reads the body, so a streamed body is read before it runs."""
        self._needs_body = True

    def steps(self, node: Any, key: Any = ()) -> Steps:
        keys = key if isinstance(key, tuple) else (key,)
        child_id = self.step_id + "".join(f"[{k}]" if isinstance(k, int) else f"/{k}" for k in keys)
        child_node = self.node
        for k in keys:
            child_node = child_node[k] if child_node is not None else None
        return self._compiler.compile_steps(child_node if child_node is not None else node, self.file,
                                            self.namespaces, self.owner, child_id)

    def branch(self, key: Any) -> str:
        """Declare a branch (of a choice, a filter, a try) for coverage; returns its id."""
        keys = key if isinstance(key, tuple) else (key,)
        branch_id = self.step_id + "".join(f"[{k}]" if isinstance(k, int) else f"/{k}" for k in keys)
        self._compiler.coverage.setdefault(self._compiler.coverage_owner, []).append(branch_id)
        return branch_id

    def endpoint(self, name: Any, key: Any = "endpoint") -> Any:
        self.endpoints_used.append(str(name))
        endpoint = self._compiler.endpoints.get(str(name))
        if endpoint is None and (str(name) in self._compiler.project.endpoints
                                 or str(name) in self._compiler.project.broken_endpoints):
            return _BrokenEndpoint()  # declared, but its own error is reported already
        if endpoint is None:
            known = ", ".join(sorted(self._compiler.endpoints)) or "none declared"
            raise StepConfigError(f"unknown endpoint {name!r} (endpoints: {known})", key)
        return endpoint

    def sequence(self, name: Any, key: Any = ()) -> Callable[[], Steps]:
        """A handle on a named sequence, resolved once all sequences are compiled."""
        if str(name) in self._compiler.project.broken_sequences:
            return lambda: Steps((), f"sequence:{name}")  # declared where the file is wrong, reported there
        if str(name) not in self._compiler.project.sequences:
            known = ", ".join(sorted(self._compiler.project.sequences)) or "none declared"
            raise StepConfigError(f"unknown sequence {name!r} (sequences: {known})", key)
        self._compiler.sequence_calls.append((self.owner, f"sequence:{name}", locate(self.file, self.node, ())))
        sequences = self._compiler.compiled.sequences
        return lambda: sequences[str(name)]

    def on_close(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` when these flows are replaced or the server stops (a step's own
        background task, for one): reloads must not leave anything running."""
        self._compiler.compiled.closers.append(callback)

    def on_open(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` once these flows' endpoints are open, inside the serving loop (a step's
        background task that must run before any message comes, for one)."""
        self._compiler.compiled.openers.append(callback)

    def sequence_params(self, name: Any) -> dict[str, dict[str, Any]]:
        """The parameters a sequence declares (empty for a plain step list)."""
        sequence = self._compiler.project.sequences.get(str(name))
        return dict(sequence.params) if sequence is not None else {}

    def file_path(self, value: Any, key: Any = ()) -> Path:
        """A file named relative to the flow file, inside the flow folder (engine.paths); it must exist."""
        try:
            path = inside(self.folder, str(value))
        except OutsideFolder as exc:
            raise StepConfigError(str(exc), key) from None
        if not path.is_file():
            raise StepConfigError(f"file not found: {value} (looked for {path})", key)
        return path

    def _note(self, expressions: list[Expr]) -> None:
        for expr in expressions:
            if expr.uses_payload:
                self._needs_body = True
            self._compiler.project.env_refs.update(expr.env_refs)
            self._compiler.project.secret_refs.update(expr.secret_refs)


def _schema_problem(schema: Any) -> str | None:
    """Why ``schema`` is not a JSON Schema, or None; checking against the 2020-12 metaschema costs
    ~5-30 ms a schema, so a reload that keeps its schemas checks them once."""
    try:
        key = json.dumps(schema, sort_keys=True, default=repr)
    except (TypeError, ValueError):  # keys YAML allows and JSON does not: check without the cache
        return _check_schema(schema)
    return _checked_schema(key)


@lru_cache(maxsize=512)
def _checked_schema(key: str) -> str | None:
    return _check_schema(json.loads(key))


def _check_schema(schema: Any) -> str | None:
    from jsonschema import Draft202012Validator

    try:
        Draft202012Validator.check_schema(schema)
    except Exception as exc:  # jsonschema's SchemaError, with its own words
        return str(getattr(exc, "message", exc))
    return unresolved_ref(schema)


@cache
def _step_validator(kind_name: str) -> SchemaValidator:
    return SchemaValidator(step_config_schema(step_kinds()[kind_name]))


class ProjectCompiler:
    def __init__(self, project: Project, env: Mapping[str, str] | None = None,
                 secrets: Mapping[str, str] | None = None,
                 endpoint_factory: EndpointFactory | None = None, step_wrapper: StepWrapper | None = None,
                 serving: bool = True, stores_in_memory: bool = False) -> None:
        self.project = project
        self.serving = serving
        self.stores_in_memory = stores_in_memory
        self.endpoint_factory = endpoint_factory
        self.step_wrapper = step_wrapper
        self.env = dict(env if env is not None else os.environ)
        self.secrets = secrets if secrets is not None else Secrets()
        self.compiled = CompiledProject(project)
        self.errors = self.compiled.errors
        self.endpoints = self.compiled.endpoints
        self.kinds = step_kinds()
        self.sequence_calls: list[tuple[str, str, Location]] = []
        self.coverage = self.compiled.coverage_points
        self.coverage_owner = ""
        self._options: dict[tuple[tuple[str, str], ...], CompileOptions] = {}
        self._secret_values: list[str] = []  # masked in the endpoints' errors

    def options_for(self, namespaces: Mapping[str, str]) -> CompileOptions:
        key = tuple(sorted(namespaces.items()))
        if key not in self._options:
            self._options[key] = CompileOptions(dict(namespaces), self.env, self.secrets)
        return self._options[key]

    def compile(self) -> CompiledProject:
        self._compile_endpoints()
        for name, sequence in self.project.sequences.items():
            self.coverage_owner = f"sequence:{name}"
            self.compiled.sequences[name] = self.compile_steps(sequence.steps, sequence.file, sequence.namespaces,
                                                               f"sequence:{name}", f"sequence:{name}/steps")
        for flow in self.project.flows:
            self.coverage_owner = flow.name
            if flow.builder is not None:
                steps = self._generated_steps(flow)
            else:
                steps = self.compile_steps(flow.steps, flow.file, flow.namespaces, flow.name, f"{flow.name}/steps")
            steps = self._with_policies(flow, steps)
            on_error = None
            error_steps = on_error_steps(flow.on_error)
            if error_steps:
                on_error = self.compile_steps(error_steps, flow.file, flow.namespaces, flow.name,
                                              f"{flow.name}/on_error" + ("/steps" if error_steps is not flow.on_error
                                                                         else ""))
            max_body = flow.source.max_body if flow.source else None
            compiled_flow = CompiledFlow(flow, steps, on_error, max_body)
            self._compile_trigger(flow, compiled_flow)
            request = (flow.source.request or {}) if flow.source else {}
            if request.get("schema"):
                problem = _schema_problem(request["schema"])
                if problem is None:
                    compiled_flow.request_validator = offline_validator(request["schema"])
                else:
                    where = locate(flow.file, flow.node, ("source", "http", "request", "schema"))
                    self.errors.append(LoadError.at(where, f"request schema is not a valid JSON Schema: {problem}"))
            self.compiled.flows.append(compiled_flow)
        if any(flow.soap is not None for flow in self.project.flows):
            self._compile_soap_services()
        self._check_sequence_cycles()
        return self.compiled

    def _compile_soap_services(self) -> None:
        from connectors.soap.service import build_services

        def report(flow: Flow, key: tuple[str, ...], message: str) -> None:
            self.errors.append(LoadError.at(locate(flow.file, flow.node, ("source", "soap", *key)), message))

        self.compiled.soap_services = build_services(self.compiled.flows, report, self._resolve_source_setting)

    def _compile_trigger(self, flow: Flow, compiled_flow: CompiledFlow) -> None:
        """The flow's redelivery policy and its source, when it is not http (engine/sources)."""
        policy_node = flow.on_error if isinstance(flow.on_error, dict) else None
        try:
            compiled_flow.policy = compile_policy(policy_node, flow.file.parent)
        except ValueError as exc:
            self.errors.append(LoadError.at(locate(flow.file, flow.node, ("on_error", "redelivery")),
                                            f"on_error.redelivery: {exc}"))
            return
        dead_node = ((policy_node or {}).get("redelivery") or {}).get("dead_letter") or {}
        if isinstance(dead_node, dict) and dead_node.get("steps"):
            compiled_flow.dead_letter_steps = self.compile_steps(
                dead_node["steps"], flow.file, flow.namespaces, flow.name,
                f"{flow.name}/on_error/redelivery/dead_letter/steps")
        if flow.trigger is None:
            if policy_node is not None and policy_node.get("redelivery"):
                dead = policy_node["redelivery"].get("dead_letter") or {}
                if "source" in dead:
                    self.errors.append(LoadError.at(
                        locate(flow.file, flow.node, ("on_error", "redelivery", "dead_letter", "source"), key=True),
                        "dead_letter: {source: true} is a queue source's own dead-letter queue; a flow served "
                        "over HTTP dead-letters to a store ({store: NAME}) or a folder ({folder: PATH})"))
                    return
                compiled_flow.redelivers = True  # the caller waits: engine/sources/http_redelivery.py
                if "store" in dead:
                    self.compiled.needs.add("store")
            return
        context = CompileContext(self, flow.file, flow.namespaces, flow.name)
        context.node = flow.node["source"][flow.trigger.kind]
        context.step_id = f"{flow.name}/source"
        try:
            kind = source_kinds().get(flow.trigger.kind)
            if kind is not None:
                compiled_flow.trigger = kind.build(flow.trigger.config, context)
            else:  # a source a connector kind declares (amqp, mqtt, ftp, sftp)
                compiled_flow.trigger = build_connector_source(flow.trigger.kind, flow.trigger.config, context)
        except (StepConfigError, ValueError) as exc:
            keys = exc.key if isinstance(exc, StepConfigError) else ()
            offset = exc.offset if isinstance(exc, StepConfigError) else 0
            where = locate(flow.file, flow.node, ("source", flow.trigger.kind, *keys), text_offset=offset)
            self.errors.append(LoadError.at(where, f"source {flow.trigger.kind}: {exc}"))

    def _with_policies(self, flow: Flow, steps: Steps) -> Steps:
        """The project's settings.policies ahead of the steps of a flow served over HTTP, compiled
        for each flow (its own step ids, spans and coverage), unless the flow says policies: false."""
        node = self.project.settings_node
        policies = node.get("policies") if node is not None else None
        served_over_http = flow.source is not None or flow.soap is not None
        if not policies or not served_over_http or (flow.node is not None and flow.node.get("policies") is False):
            return steps
        assert self.project.settings_file is not None
        compiled = self.compile_steps(policies, self.project.settings_file, flow.namespaces, flow.name,
                                      f"{flow.name}/policies")
        return Steps(compiled.items + steps.items, steps.id)

    def _compile_endpoints(self) -> None:
        for name, endpoint in self.project.endpoints.items():
            unset_before = len(self.compiled.notes)
            try:
                config = self._resolve_config(endpoint, endpoint.config, ())
                if self.endpoint_factory is not None:
                    self.endpoints[name] = self.endpoint_factory(name, endpoint.kind, config)
                else:
                    context = EndpointContext(endpoint.location.file.parent, self.env)
                    self.endpoints[name] = build_endpoint(name, endpoint.kind, config, context)
            except ExpressionSyntaxError as exc:
                self.errors.append(LoadError.at(endpoint.location, f"endpoint {name!r}: {self._clean(exc)}"))
            except ValueError as exc:
                if len(self.compiled.notes) > unset_before:
                    # a stand-in for an unset value did not pass: only `run` can check it for real
                    self.compiled.notes.append(LoadError.at(endpoint.location, f"endpoint {name!r} is checked "
                                                                               f"fully only where it is set: "
                                                                               f"{self._clean(exc)}"))
                else:
                    self.errors.append(LoadError.at(endpoint.location, f"endpoint {name!r}: {self._clean(exc)}"))

    def _clean(self, exc: Exception) -> str:
        """A connector's words may quote a URL's credentials or a setting resolved from a secret."""
        return mask(without_userinfo(str(exc)), self._secret_values)

    def _resolve_source_setting(self, value: Any) -> Any:
        """A source's settings (a served SOAP operation's ws_security) read ``${env.X}`` and
        ``${secret.X}`` as endpoint settings do; unset, they are a load error only when serving."""
        if isinstance(value, dict):
            return {k: self._resolve_source_setting(v) for k, v in value.items()}
        if not isinstance(value, str) or "${" not in value:
            return value
        template = Template(value, self.options_for({}))
        for expr in template.expressions:
            if expr.uses_payload or not (expr.env_refs or expr.secret_refs):
                raise ValueError(f"${{{expr.source}}}: source settings can read only env and secret")
            self.project.env_refs.update(expr.env_refs)
            self.project.secret_refs.update(expr.secret_refs)
            if expr.evaluate(Message()) is None:
                if self.serving:
                    raise ValueError(f"${{{expr.source}}} is not set; give a default with || 'value'")
                return UNSET_STAND_IN
        return template.render(Message())

    def _resolve_config(self, endpoint: Endpoint, value: Any, path: tuple[Any, ...]) -> Any:
        """Endpoint configs may read ``${env.X}`` and ``${secret.X}``, resolved once, here.

        Serving, an unset one (no default) is a load error.  Otherwise (validate, k8s, openapi,
        build, test) it is a note, and a stand-in value lets the rest of the settings be checked.
        """
        if isinstance(value, dict):
            return {k: self._resolve_config(endpoint, v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self._resolve_config(endpoint, v, (*path, i)) for i, v in enumerate(value)]
        if isinstance(value, str) and "${" in value:
            template = Template(value, self.options_for({}))
            for expr in template.expressions:
                if expr.uses_payload or not (expr.env_refs or expr.secret_refs):
                    raise ValueError(f"${{{expr.source}}}: endpoint settings can read only env and secret")
                self.project.env_refs.update(expr.env_refs)
                self.project.secret_refs.update(expr.secret_refs)
                self._secret_values.extend(v for ref in expr.secret_refs if (v := self.secrets.get(ref)))
                if expr.evaluate(Message()) is None:
                    where = "environment variable" if expr.env_refs else "secret (a file in INTERLACE_SECRETS_DIR)"
                    if self.serving:
                        raise ValueError(f"${{{expr.source}}} is not set: no such {where}; "
                                         f"give a default with || 'value'")
                    node = endpoint.node[endpoint.kind] if endpoint.node is not None else None
                    at = locate(endpoint.location.file, node, path) if node is not None else endpoint.location
                    self.compiled.notes.append(LoadError.at(at, f"endpoint {endpoint.name!r}: ${{{expr.source}}} "
                                                                f"is not set here (no such {where}); "
                                                                f"`interlace run` needs it"))
                    return UNSET_STAND_IN
            return template.render(Message())
        return value

    def compile_steps(self, node: Any, file: Path, namespaces: Mapping[str, str], owner: str,
                      list_id: str) -> Steps:
        items: list[CompiledStep] = []
        for index, item in enumerate(node or []):
            step_id = f"{list_id}[{index}]"
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                step_id = f"{owner}/{item['id']}"
            compiled = self._compile_step(item, node, index, file, namespaces, owner, step_id)
            if compiled is not None:
                items.append(compiled)
                self.coverage.setdefault(self.coverage_owner, []).append(step_id)
        return Steps(tuple(items), list_id)

    def _compile_step(self, item: Any, parent: Any, index: int, file: Path, namespaces: Mapping[str, str],
                      owner: str, step_id: str) -> CompiledStep | None:
        where = locate(file, parent, (index,))
        if not isinstance(item, dict):
            self.errors.append(LoadError.at(where, f"a step is a mapping with one step kind, got {item!r}"))
            return None
        kinds = [k for k in item if k not in STEP_META_KEYS]
        if len(kinds) != 1:
            self.errors.append(LoadError.at(where, step_kind_count(kinds, self.kinds)))
            return None
        kind_name = str(kinds[0])
        kind = self.kinds.get(kind_name)
        if kind is None:
            self.errors.append(LoadError.at(locate(file, item, (kind_name,), key=True),
                                            unknown_step_kind(kind_name, self.kinds)))
            return None
        config_errors = self._config_errors(file, item, kind_name)
        if config_errors:
            self.errors.extend(config_errors)
            return None
        return self._build(kind, item, file, namespaces, owner, step_id)

    def _generated_steps(self, flow: Flow) -> Steps:
        """The one step of a flow generated from another declaration (``flow.builder``)."""
        assert flow.builder is not None
        step_id = f"{flow.name}/steps[0]"
        context = CompileContext(self, flow.file, flow.namespaces, flow.name)
        context.node = flow.node
        context.step_id = step_id
        try:
            run = flow.builder(context)
        except StepConfigError as exc:
            self.errors.append(LoadError.at(locate(flow.file, flow.node, exc.key), f"{flow.name}: {exc}"))
            return Steps((), f"{flow.name}/steps")
        run = observe_step(run, kind="resource", step_id=step_id, flow=flow.name, endpoints=context.endpoints_used)
        if self.step_wrapper is not None:
            run = self.step_wrapper(run, "resource", step_id, flow.location)
        self.coverage.setdefault(self.coverage_owner, []).append(step_id)
        step = CompiledStep(run, context._needs_body, "resource", step_id, flow.location)
        return Steps((step,), f"{flow.name}/steps")

    def _config_errors(self, file: Path, item: Any, kind_name: str) -> list[LoadError]:
        config = item[kind_name]
        errors = []
        for error in _step_validator(kind_name).iter_errors(config):
            path, message, on_key = describe(error)
            errors.append(LoadError.at(locate(file, item, (kind_name, *path), key=on_key),
                                       f"{kind_name}: {message}"))
        return errors

    def _build(self, kind: StepKind, item: Any, file: Path, namespaces: Mapping[str, str], owner: str,
               step_id: str) -> CompiledStep | None:
        context = CompileContext(self, file, namespaces, owner)
        context.node = item[kind.name]
        context.step_id = step_id
        try:
            run = kind.compile(context.node, context)
        except StepConfigError as exc:
            where = locate(file, item, (kind.name, *exc.key), text_offset=exc.offset)
            self.errors.append(LoadError.at(where, f"{kind.name}: {exc}"))
            return None
        where = locate(file, item, ())
        if kind.observed:  # timing and tracing wrap the step; the step kind knows nothing of them
            run = observe_step(run, kind=kind.name, step_id=step_id, flow=owner, endpoints=context.endpoints_used)
        if self.step_wrapper is not None:
            run = self.step_wrapper(run, kind.name, step_id, where)
        return CompiledStep(run, context._needs_body, kind.name, step_id, where)

    def _check_sequence_cycles(self) -> None:
        graph: dict[str, set[str]] = {}
        places: dict[tuple[str, str], Location] = {}
        for owner, target, where in self.sequence_calls:
            graph.setdefault(owner, set()).add(target)
            places.setdefault((owner, target), where)
        for start in (f"sequence:{name}" for name in self.project.sequences):
            stack, seen = [(start, [start])], set()
            while stack:
                node, path = stack.pop()
                for nxt in graph.get(node, ()):
                    if nxt == start:
                        cycle = " -> ".join([*path, nxt])
                        self.errors.append(LoadError.at(places[(node, nxt)],
                                                        f"sequence calls loop forever: {cycle}"))
                        return
                    if nxt not in seen:
                        seen.add(nxt)
                        stack.append((nxt, [*path, nxt]))


class _BrokenEndpoint:
    """Stands in for a declared endpoint whose settings failed, so its users compile on."""

    name = "broken"


def compile_project(project: Project, env: Mapping[str, str] | None = None,
                    secrets: Mapping[str, str] | None = None,
                    endpoint_factory: EndpointFactory | None = None,
                    step_wrapper: StepWrapper | None = None, *, serving: bool = True,
                    stores_in_memory: bool = False) -> CompiledProject:
    """Compile a loaded project.  ``endpoint_factory(name, kind, config)`` replaces the real
    connectors (``interlace test`` mocks at this layer; the flows themselves are unchanged);
    ``step_wrapper`` wraps every built step (the designer records a try-it run with it).
    ``serving=False`` (validate, k8s, openapi, build, test) turns an unset ``${env.X}`` or
    ``${secret.X}`` of an endpoint's settings into a note on ``notes`` instead of an error.
    ``stores_in_memory`` (test): the steps' stores are this compilation's memory (``CompileContext``)."""
    return ProjectCompiler(project, env, secrets, endpoint_factory, step_wrapper, serving,
                           stores_in_memory).compile()


__all__ = ["CompileContext", "CompiledFlow", "CompiledProject", "CompiledStep", "StepConfigError", "StepWrapper",
           "Steps", "compile_project", "internal_error", "plain"]
