"""What a flow folder declares, after parsing and schema validation (before compilation)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from engine.compiler import CompileContext, CompiledProject
    from engine.registry import StepFn


@dataclass(frozen=True)
class Location:
    file: Path
    line: int  # 1-based
    column: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass
class HttpSource:
    methods: list[str]
    path: str
    path_params: list[str]
    request: dict[str, Any] | None = None
    responses: dict[str, dict[str, Any]] | None = None
    query: dict[str, dict[str, Any]] | None = None
    max_body: int | None = None


@dataclass
class SoapSource:
    """A flow serving one SOAP operation (``source: {soap: ...}``; connectors/soap/service.py)."""

    path: str
    operation: str
    wsdl: str | None = None
    service: str | None = None
    port: str | None = None
    action: str | None = None
    element: str | None = None
    version: str | None = None
    validate: bool = False
    max_body: int | None = None
    ws_security: dict[str, Any] | None = None  # username, password: a UsernameToken requests must carry


@dataclass
class SourceSpec:
    """A source other than http: its kind (a key of engine.sources' registry) and settings."""

    kind: str
    config: dict[str, Any]
    location: Location


@dataclass
class Flow:
    name: str
    description: str | None
    source: HttpSource | None
    steps: Any  # the YAML node of the step list (ruamel, with positions)
    on_error: Any
    namespaces: dict[str, str]
    file: Path
    location: Location
    node: Any = None  # the flow's own YAML mapping
    soap: SoapSource | None = None  # when it serves a SOAP operation (then source is None)
    trigger: SourceSpec | None = None  # a schedule, file poll, queue... (source is None then)
    # a flow generated from another declaration (a data service's route) builds its one step
    # itself from a compile context, instead of from a YAML step list
    builder: Callable[[CompileContext], StepFn] | None = None


@dataclass
class Endpoint:
    name: str
    kind: str
    config: dict[str, Any]
    location: Location
    node: Any = None


@dataclass
class Sequence:
    name: str
    steps: Any
    namespaces: dict[str, str]
    file: Path
    location: Location
    description: str | None = None
    # declared parameters (a template): name -> {type, default, description}
    params: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Project:
    root: Path
    files: list[Path] = field(default_factory=list)
    flows: list[Flow] = field(default_factory=list)
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    sequences: dict[str, Sequence] = field(default_factory=dict)
    env_refs: set[str] = field(default_factory=set)
    secret_refs: set[str] = field(default_factory=set)
    # the folder's `settings:` (engine/settings.py), and where they were declared
    settings: dict[str, Any] = field(default_factory=dict)
    settings_location: Location | None = None
    # the settings' YAML node and file, for settings.policies (compiled as steps, with positions)
    settings_node: Any = None
    settings_file: Path | None = None
    compiled: CompiledProject | None = None
    # names declared in files whose outline is wrong (reported there, not where they are used)
    broken_endpoints: set[str] = field(default_factory=set)
    broken_sequences: set[str] = field(default_factory=set)

    def flow(self, name: str) -> Flow:
        for flow in self.flows:
            if flow.name == name:
                return flow
        raise KeyError(name)
