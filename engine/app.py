"""Embedding the facade: ``create_app(path)`` builds the Starlette app of a flow folder.

    from engine import create_app

    app = create_app("flows/")          # a load error raises LoadErrors here, nothing serves
    # uvicorn module:app, TestClient(app), Mount("/integration", app) in another app ...

The flows are loaded and compiled by the call; the endpoints open in the app's lifespan, or
on its first request when it is mounted inside another app (whose lifespan does not reach
mounted apps).  docs/embedding.md shows mounting, middleware and project settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from starlette.middleware import Middleware

from engine.compiler import CompiledProject, compile_project
from engine.front import DEFAULT_MAX_BODY, Facade
from engine.loader import LoadErrors, load_project


def project_middleware(project: CompiledProject) -> list[Middleware]:
    """The middleware the project's ``settings.http`` declare (CORS, GZip, TrustedHost, proxy headers)."""
    from engine.settings import middleware

    settings_file = project.project.settings_file
    return middleware(project.project.settings, settings_file.parent if settings_file is not None else None)


def create_app(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None,
               middleware: Sequence[Middleware] | None = None, max_body: int = DEFAULT_MAX_BODY,
               debug: bool = False) -> Facade:
    """The Starlette application serving the flows of the folder (or file) ``path``.

    ``env`` replaces ``os.environ`` for ``${env.X}``; ``middleware`` wraps the flows inside the
    middleware the project's settings declare.  Raises ``LoadErrors`` (every error, with
    file:line:column) when the folder is invalid.

    >>> from starlette.testclient import TestClient
    >>> with TestClient(create_app("flows")) as client:
    ...     client.get("/hello", params={"name": "Ada"}).json()["greeting"]
    'Hello, Ada!'
    """
    project = load_project(Path(path), compile_flows=False)
    compiled = compile_project(project, env=dict(env) if env is not None else None)
    if compiled.errors:
        raise LoadErrors(compiled.errors)
    return Facade(compiled, max_body=max_body, middleware=middleware,
                  settings_middleware=project_middleware, debug=debug)


__all__ = ["create_app", "project_middleware"]
