"""The deploy commands of `interlace`: build (OCI image), k8s (manifests), openapi."""

from __future__ import annotations

import importlib
from typing import Any


def add_commands(subparsers: Any) -> None:
    """Each command lives in its own module with an ``add_command(subparsers)``."""
    for module in ("deploy.image", "deploy.k8s", "deploy.openapi"):
        try:
            importlib.import_module(module).add_command(subparsers)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
