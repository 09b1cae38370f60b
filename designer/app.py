"""The designer's HTTP side: the built front end and the routes it calls.

    GET  /api/registry              step kinds, connectors and the JSON Schema (palette, forms)
    GET  /api/files                 the folder's flow files and test suites, with what each declares
    POST /api/files                 a new file {name, text?}
    GET  /api/files/{name}          text, hash, outline (what the canvas draws), the loader's problems
    POST /api/files/{name}/preview  {base, edits}: the text those edits give, its outline, its problems
    PUT  /api/files/{name}          {base, edits}: the same, written (409 if the file changed meanwhile)
    POST /api/try                   run a request or a suite case through the flows as edited
    POST /api/tests/{name}/cases    add a case to a test suite (a new suite if there is none)

Edits are applied by ``designer.yamlpatch`` to the text on disk, never by rewriting the file;
``base`` is the hash of the text the edits were made on.  Errors are RFC 9457 problem+json.
Served alone (``interlace designer``) the routes answer only requests addressed to the
loopback host, and changes need the ``X-Interlace-Designer`` header, which a page of another
origin cannot send without a CORS preflight this app never grants; under ``interlace run``
every ``/api`` route needs the management token.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from connectors.base import connector_kinds
from connectors.resilience import settings_schema
from designer.lint import lint_folder, staged
from designer.outline import build_outline, parse, step_at
from designer.tryit import TryError, suite_mocks, try_flow
from designer.workspace import MAX_FILE_BYTES, Workspace, WorkspaceError, check_text, text_hash
from designer.yamlpatch import PatchError, apply_edits, block_lines
from engine.registry import step_kinds
from engine.schema import project_schema
from engine.testing.schema import suite_schema
from engine.yamlio import YamlSyntaxError

STATIC = Path(__file__).parent / "static"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})
CHANGE_HEADER = "x-interlace-designer"
NEW_FLOW = """\
flows:
  {name}:
    source: {{http: {{method: POST, path: /{name}}}}}
    steps:
      - log: received ${{payload}}
      - respond: {{status: 200}}
"""

Handler = Callable[[Request], Awaitable[Response]]


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"type": "about:blank", "title": title, "status": status, "detail": detail, **extra},
                        status_code=status, media_type="application/problem+json")


async def read_json(request: Request) -> dict[str, Any]:
    size = 0
    chunks = []
    async for chunk in request.stream():
        size += len(chunk)
        if size > 2 * MAX_FILE_BYTES:
            raise WorkspaceError(413, "Request too large", f"the request is over {2 * MAX_FILE_BYTES} bytes")
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks) or b"{}")
    except ValueError as exc:
        raise WorkspaceError(400, "Malformed JSON", f"the request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise WorkspaceError(400, "Malformed request", "the request body must be a JSON object")
    return body


def registry_view() -> dict[str, Any]:
    """Everything the palette and the forms are generated from."""
    kinds = [{"name": k.name, "summary": k.summary, "category": k.category, "schema": k.schema,
              "branches": list(k.branches), "example": k.examples[0] if k.examples else None}
             for k in step_kinds().values()]
    connectors = [{"name": name, "summary": getattr(cls, "SUMMARY", ""), "schema": settings_schema(cls),
                   "operations": {op: {"summary": o.summary, "schema": o.schema, "examples": o.examples}
                                  for op, o in getattr(cls, "OPERATIONS", {}).items()}}
                  for name, cls in sorted(connector_kinds().items())]
    return {"kinds": kinds, "connectors": connectors, "schema": project_schema(), "suite_schema": suite_schema()}


class Designer:
    def __init__(self, root: Path) -> None:
        self.workspace = Workspace(root)

    # --- what a file looks like to the front end

    def state(self, name: str, text: str, base: str) -> dict[str, Any]:
        suite = self.workspace.is_suite(name)
        outline: dict[str, Any] = {"flows": [], "sequences": [], "endpoints": [], "namespaces": None}
        problems: list[dict[str, Any]]
        try:
            doc = parse(text, name)
        except YamlSyntaxError as exc:
            problems = [{"file": name, "line": exc.location.line, "column": exc.location.column,
                         "message": exc.message, "text": f"{name}:{exc.location.line}:{exc.location.column}: "
                                                         f"{exc.message}"}]
            doc = None
        else:
            if not suite:
                outline = build_outline(doc)
            with staged(self.workspace, {name: text}) as folder:
                problems = lint_folder(folder, name if suite else None)
        for item in problems:
            item["step"] = step_at(outline, item["line"]) if item["file"] == name else None
        return {"name": name, "suite": suite, "text": text, "hash": text_hash(text), "base": base,
                "outline": outline, "problems": problems, "parsed": doc is not None}

    def files(self) -> list[dict[str, Any]]:
        out = []
        for name in self.workspace.names():
            entry: dict[str, Any] = {"name": name, "suite": self.workspace.is_suite(name)}
            try:
                current = self.workspace.read(name)
                entry["hash"] = current.hash  # the front end compares it with its base: a change on disk
                doc = parse(current.text, name)
                if isinstance(doc, dict) and not entry["suite"]:
                    for key in ("flows", "sequences", "endpoints"):
                        entry[key] = sorted(map(str, doc.get(key) or {})) if isinstance(doc.get(key), dict) else []
                elif isinstance(doc, dict):
                    entry["cases"] = [str(c.get("name")) for c in doc.get("cases") or [] if isinstance(c, dict)]
            except (WorkspaceError, YamlSyntaxError) as exc:
                entry["error"] = getattr(exc, "detail", None) or str(exc)
            out.append(entry)
        return out

    def edited(self, name: str, body: dict[str, Any]) -> tuple[str, str]:
        """(text on disk, text after the body's edits), refusing a stale base."""
        current = self.workspace.read(name)
        base = body.get("base")
        if base is not None and base != current.hash:
            raise WorkspaceError(409, "Changed on disk",
                                 f"{name} was changed on disk since it was opened; reload it to edit the new "
                                 f"version", current_hash=current.hash)
        edits = body.get("edits") or []
        if not isinstance(edits, list) or not all(isinstance(e, dict) for e in edits):
            raise WorkspaceError(400, "Malformed edits", "'edits' must be a list of edit objects")
        text = apply_edits(current.text, edits)
        check_text(name, text)
        return current.text, text

    # --- routes

    async def registry(self, _: Request) -> Response:
        return JSONResponse(registry_view())

    async def list_files(self, _: Request) -> Response:
        return JSONResponse({"root": self.workspace.root.name, "files": self.files()})

    async def create_file(self, request: Request) -> Response:
        body = await read_json(request)
        name = str(body.get("name", ""))
        text = body.get("text")
        if text is None:
            stem = name.split(".")[0] or "new-flow"
            text = "cases: []\n" if self.workspace.is_suite(name) else NEW_FLOW.format(name=stem)
        written = self.workspace.write(name, str(text), None)
        return JSONResponse(self.state(name, written.text, written.hash), status_code=201)

    async def open_file(self, request: Request) -> Response:
        name = request.path_params["name"]
        current = self.workspace.read(name)
        return JSONResponse(self.state(name, current.text, current.hash), headers={"etag": f'"{current.hash}"'})

    async def preview(self, request: Request) -> Response:
        name = request.path_params["name"]
        body = await read_json(request)
        disk, text = self.edited(name, body)
        return JSONResponse(self.state(name, text, text_hash(disk)))

    async def save(self, request: Request) -> Response:
        name = request.path_params["name"]
        body = await read_json(request)
        if body.get("base") is None:
            raise WorkspaceError(428, "Base needed", "saving needs 'base', the hash of the text the edits were made on")
        _, text = self.edited(name, body)
        written = self.workspace.write(name, text, body["base"])
        return JSONResponse(self.state(name, written.text, written.hash), headers={"etag": f'"{written.hash}"'})

    async def try_it(self, request: Request) -> Response:
        body = await read_json(request)
        texts: dict[str, str] = {}
        name = body.get("file")
        if isinstance(name, str) and body.get("edits"):
            texts[name] = self.edited(name, body)[1]
        suite_name = body.get("suite")
        if suite_name is None and isinstance(name, str):
            candidate = name.rsplit(".", 1)[0] + ".test.yaml"
            suite_name = candidate if (self.workspace.root / candidate).is_file() else None
        with staged(self.workspace, texts) as folder:
            mocks = None
            request_spec = body.get("request")
            case_index = body.get("case")
            if suite_name is not None:
                self.workspace.path(str(suite_name))
            if case_index is not None:
                if suite_name is None:
                    raise WorkspaceError(400, "No suite", "a case needs 'suite', the test suite it comes from")
                rules, case = suite_mocks(folder / str(suite_name), int(case_index))
                request_spec = (case or {}).get("request")
                mocks = rules if body.get("mocks", True) else None
            elif body.get("mocks"):
                if suite_name is None:
                    raise WorkspaceError(400, "No mocks", "mocks come from a test suite; name one in 'suite'")
                mocks, _ = suite_mocks(folder / str(suite_name))
            if not isinstance(request_spec, dict):
                raise WorkspaceError(400, "No request", "give 'request' ({method, path, headers, json|text|xml}) "
                                                        "or a suite's 'case'")
            result = await try_flow(folder, request_spec, mocks=mocks, mocks_dir=folder)
        return JSONResponse(result)

    async def add_case(self, request: Request) -> Response:
        name = request.path_params["name"]
        if not self.workspace.is_suite(name):
            raise WorkspaceError(400, "Not a suite", f"{name} is not a test suite (*.test.yaml)")
        body = await read_json(request)
        case = body.get("case")
        if not isinstance(case, dict) or not case.get("name") or not isinstance(case.get("request"), dict):
            raise WorkspaceError(400, "Malformed case", "a case needs a 'name' and a 'request'")
        path = self.workspace.path(name)
        if not path.exists():
            text = "\n".join(block_lines({"cases": [case]})) + "\n"
            written = self.workspace.write(name, text, None)
        else:
            current = self.workspace.read(name)
            doc = parse(current.text, name)
            count = len(doc.get("cases") or []) if isinstance(doc, dict) else 0
            text = apply_edits(current.text, [{"op": "insert", "path": ["cases"], "index": count, "value": case}])
            written = self.workspace.write(name, text, current.hash)
        return JSONResponse(self.state(name, written.text, written.hash), status_code=201)


def _guard(handler: Handler, token: str | None) -> Handler:
    async def guarded(request: Request) -> Response:
        if token is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return problem(401, "Unauthorized", "the designer's routes need the management token")
        else:
            host = request.headers.get("host", "").rsplit(":", 1)[0] if "]" not in request.headers.get(
                "host", "") else request.headers.get("host", "").split("]")[0] + "]"
            if host not in LOOPBACK_HOSTS:
                return problem(403, "Forbidden", "the designer answers only requests to 127.0.0.1 or localhost")
            if request.method != "GET" and request.headers.get(CHANGE_HEADER) != "1":
                return problem(403, "Forbidden", f"changes need the {CHANGE_HEADER} header")
        try:
            return await handler(request)
        except WorkspaceError as exc:
            return problem(exc.status, exc.title, exc.detail, **exc.extra)
        except PatchError as exc:
            return problem(422, "Edit not applied", str(exc))
        except TryError as exc:
            return problem(422, "Cannot try the flow", exc.detail, errors=exc.errors)
        except YamlSyntaxError as exc:
            return problem(422, "Invalid YAML", str(exc))
    return guarded


def build_designer_app(root: Path, *, token: str | None = None, static_dir: Path = STATIC) -> Starlette:
    """The designer for the flow folder ``root``; with ``token``, every API route needs it."""
    designer = Designer(root)
    index = static_dir / "index.html"

    async def home(_: Request) -> Response:
        if not index.is_file():
            return HTMLResponse("<!doctype html><title>Interlace designer</title><p>The designer's front end is "
                                "not built: run <code>make run</code> (or <code>make designer</code>).</p>",
                                status_code=503)
        return FileResponse(index, headers={"cache-control": "no-cache"})

    def api(path: str, handler: Handler, methods: list[str]) -> Route:
        return Route(path, _guard(handler, token), methods=methods)

    routes: list[Route | Mount] = [
        Route("/", home),
        api("/api/registry", designer.registry, ["GET"]),
        api("/api/files", designer.list_files, ["GET"]),
        api("/api/files", designer.create_file, ["POST"]),
        api("/api/files/{name}", designer.open_file, ["GET"]),
        api("/api/files/{name}", designer.save, ["PUT"]),
        api("/api/files/{name}/preview", designer.preview, ["POST"]),
        api("/api/try", designer.try_it, ["POST"]),
        api("/api/tests/{name}/cases", designer.add_case, ["POST"]),
    ]
    if (static_dir / "assets").is_dir():
        routes.append(Mount("/assets", StaticFiles(directory=static_dir / "assets")))
    return Starlette(routes=routes)
