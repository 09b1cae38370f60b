"""Local data in a pod: the SQLite files the flows' sql endpoints keep beside them.

In the generated Deployment the root filesystem is read-only and there are several replicas,
so a database file beside the flows can neither be written nor shared.  ``local_databases``
finds such endpoints (their URL resolved as the pod would: the ConfigMap's values, else the
flow's default) and the environment variable each one's URL is read from, so ``interlace
k8s`` can move the file into a writable emptyDir for a single replica, or refuse more
replicas and name the variable that points the endpoint at a shared database instead.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

from engine.model import Location, Project
from engine.yamlio import locate

DATA_VOLUME = "data"
DATA_DIR = "/var/lib/interlace"  # the emptyDir a single replica keeps its SQLite files in
_ENV_REF = re.compile(r"\benv\.([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class LocalDatabase:
    endpoint: str
    location: Location
    file: str  # the SQLite file's name
    variables: tuple[str, ...]  # the environment variables its URL reads (empty: written in the flow)

    def pod_url(self) -> str:
        """Where the file goes in the pod's data volume, as the endpoint's URL."""
        return f"sqlite:///{DATA_DIR}/{self.file}"


def local_databases(project: Project, env: Mapping[str, str]) -> list[LocalDatabase]:
    """The sql endpoints whose database is a SQLite file, ``env`` being the pod's environment
    (the flows compiled again with it; nothing is opened)."""
    from connectors.sql import SqlConnector
    from engine.compiler import compile_project

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # the load already said what compiling says (an open policy...)
    try:
        compiled = compile_project(project, env=dict(env), secrets={}, serving=False)
    finally:
        logging.disable(previous)
    found: list[LocalDatabase] = []
    for name, endpoint in sorted(project.endpoints.items()):
        connector = getattr(compiled.endpoints.get(name), "connector", None)
        if not isinstance(connector, SqlConnector):
            continue
        given = endpoint.config.get("urls", [endpoint.config.get("url")])
        urls = [str(u) for u in (given if isinstance(given, list) else [given])]
        node = endpoint.node.get("sql") if endpoint.node is not None else None
        for index, (database, raw) in enumerate(zip(connector.databases, urls, strict=False)):
            path = database.url.database
            if database.url.get_backend_name() == "sqlite" and path not in (None, "", ":memory:"):
                variables = tuple(dict.fromkeys(_ENV_REF.findall(raw)))
                key = ("urls", index) if "urls" in endpoint.config else ("url",)
                where = locate(endpoint.location.file, node, key) if node is not None else endpoint.location
                found.append(LocalDatabase(name, where, PurePosixPath(str(path)).name, variables))
    return found
