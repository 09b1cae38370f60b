"""`interlace designer`: serve the designer for a flow folder on 127.0.0.1."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _designer(args: argparse.Namespace) -> int:
    import uvicorn

    from designer.app import build_designer_app
    from designer.workspace import WorkspaceError

    try:
        app = build_designer_app(Path(args.dir))
    except WorkspaceError as exc:
        print(f"interlace designer: {exc.detail}", file=sys.stderr)
        return 2
    print(f"designer for {Path(args.dir).resolve()} on http://127.0.0.1:{args.port}/", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, lifespan="off")
    return 0


def add_commands(sub: Any) -> None:
    designer = sub.add_parser(
        "designer", help="draw and edit the flows of a folder in the browser",
        description="Serve the designer for DIR on 127.0.0.1 (only there: it reads and writes DIR's files). "
                    "`interlace run --designer` serves it on the management port behind the management token.")
    designer.add_argument("dir", nargs="?", default="flows", metavar="DIR", help="flow folder (default: flows)")
    designer.add_argument("--port", type=int, default=9290, help="port on 127.0.0.1 (default 9290)")
    designer.set_defaults(func=_designer)
