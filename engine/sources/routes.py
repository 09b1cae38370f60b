"""Management routes for sources and the message store (mounted by engine/management.py).

GET  /sources                          every non-HTTP source: state, last run, lag, failures
POST /sources/{flow}/pause | /resume   stop taking new work / take it again
GET  /stores                           per queue: stored, retrying, dead, age of the oldest
GET  /stores/{queue}/messages          stored messages, paged (?offset=0&limit=50)
GET  /stores/{store}/dead              dead letters, paged, each with its error
POST /stores/{store}/dead/replay       back to their queue as new: {"ids": [...]} or {"all": true}
POST /stores/{store}/dead/discard      gone for good: {"ids": [...]} or {"all": true}

With ``--workers N`` every worker runs the sources, so the source routes ask every worker
(engine/workers.py) and answer for the group: ``GET /sources`` sums each flow's counts over the
workers (``workers`` keeps each one's view), and pause/resume reach every worker.  The store
routes need no fan-out: the workers share one store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from engine.store import StoreError

if TYPE_CHECKING:
    from engine.runtime import Runtime
    from engine.workers import WorkerGroup

Handler = Callable[[Request], Awaitable[Response]]
MAX_PAGE = 500


def _problem(status: int, title: str, detail: str) -> JSONResponse:
    return JSONResponse({"type": "about:blank", "title": title, "status": status, "detail": detail},
                        status_code=status, media_type="application/problem+json")


def _page(request: Request) -> tuple[int, int] | JSONResponse:
    try:
        offset = int(request.query_params.get("offset", "0"))
        limit = int(request.query_params.get("limit", "50"))
    except ValueError:
        return _problem(400, "Bad request", "offset and limit are whole numbers")
    if offset < 0 or not 1 <= limit <= MAX_PAGE:
        return _problem(400, "Bad request", f"offset >= 0 and 1 <= limit <= {MAX_PAGE}")
    return offset, limit


async def _selection(request: Request) -> list[str] | JSONResponse | None:
    try:
        body = await request.json()
    except ValueError:
        return _problem(400, "Bad request", 'send {"ids": ["..."]} or {"all": true} as JSON')
    if isinstance(body, dict) and body.get("all") is True:
        return None
    ids = body.get("ids") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        return _problem(400, "Bad request", 'send {"ids": ["..."]} (a non-empty list of ids) or {"all": true}')
    return ids


# counts that add up over the workers; the other fields take the latest (times) or the worst (lag)
_SUMMED = ("processed", "failures", "dead_letters")
_LATEST = ("last_run", "last_success")


def merge_sources(answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per flow from every worker's ``GET /sources``: counts summed, the latest run, the
    largest lag, the state every worker agrees on (else ``mixed``), each worker's part in ``workers``."""
    merged: dict[str, dict[str, Any]] = {}
    for answer in answers:
        for item in answer.get("sources") or []:
            entry = merged.get(item["flow"])
            part = {"worker": answer["worker"], "pid": answer.get("pid"), "state": item["state"],
                    "processed": item["processed"], "failures": item["failures"], "last_error": item["last_error"]}
            if entry is None:
                merged[item["flow"]] = {**item, "workers": [part]}
                continue
            entry["workers"].append(part)
            for key in _SUMMED:
                entry[key] += item[key]
            for key in _LATEST:
                if item[key] is not None and (entry[key] is None or item[key] > entry[key]):
                    entry[key] = item[key]
            if item["since_last_run_seconds"] is not None:
                since = entry["since_last_run_seconds"]
                entry["since_last_run_seconds"] = item["since_last_run_seconds"] if since is None \
                    else min(since, item["since_last_run_seconds"])
            entry["lag_seconds"] = max(entry["lag_seconds"], item["lag_seconds"])
            if entry["state"] != item["state"]:
                entry["state"] = "mixed"
            entry["last_error"] = entry["last_error"] or item["last_error"]
    return list(merged.values())


def source_routes(runtime: Runtime, guarded: Callable[[Handler], Handler],
                  group: WorkerGroup | None = None) -> list[Route]:
    def store_or_problem() -> Any:
        if runtime.store is None:
            return _problem(404, "No store", "no flow of this folder uses the message store")
        return runtime.store

    async def sources(_: Request) -> Response:
        if group is None:
            return JSONResponse({"sources": runtime.sources.describe()})
        answers = await group.ask_all("GET", "/sources")
        body: dict[str, Any] = {"sources": merge_sources(answers)}
        failed = [{"worker": a["worker"], "error": a["error"]} for a in answers if "error" in a]
        if failed:
            body["unanswered"] = failed  # a worker that did not answer in time is named, not waited for
        return JSONResponse(body)

    def switch(pause: bool) -> Handler:
        action = "pause" if pause else "resume"

        async def handler(request: Request) -> Response:
            name = request.path_params["flow"]
            if group is not None:
                answers = await group.ask_all("POST", f"/sources/{quote(name, safe='')}/{action}")
                if not any("state" in a for a in answers):
                    problem = next((a for a in answers if a.get("status") == 404), None)
                    if problem is not None:
                        return _problem(404, "Not found", str(problem.get("detail")))
                    return _problem(503, "Workers unavailable", f"no worker answered the {action}")
                workers = [{k: a[k] for k in ("worker", "state", "error") if k in a} for a in answers]
                states = {a.get("state") for a in answers}
                state = states.pop() if len(states) == 1 else "mixed"
                return JSONResponse({"flow": name, "state": state, "workers": workers})
            done = runtime.sources.pause(name) if pause else runtime.sources.resume(name)
            if not done:
                known = ", ".join(runtime.sources.contexts) or "none"
                return _problem(404, "Not found", f"no source for flow {name!r} (sources: {known})")
            return JSONResponse({"flow": name, "state": runtime.sources.contexts[name].stats.state})
        return handler

    async def stores(_: Request) -> Response:
        store = store_or_problem()
        if isinstance(store, Response):
            return store
        try:
            return JSONResponse({"stores": await store.queue_counts()})
        except StoreError as exc:
            return _problem(503, "Store unavailable", str(exc))

    async def stored(request: Request) -> Response:
        store = store_or_problem()
        page = _page(request)
        if isinstance(store, Response) or isinstance(page, Response):
            return store if isinstance(store, Response) else page  # type: ignore[return-value]
        try:
            items = await store.page_stored(request.path_params["queue"], *page)
        except StoreError as exc:
            return _problem(503, "Store unavailable", str(exc))
        return JSONResponse({"queue": request.path_params["queue"], "offset": page[0], "messages": items})

    async def dead(request: Request) -> Response:
        store = store_or_problem()
        page = _page(request)
        if isinstance(store, Response) or isinstance(page, Response):
            return store if isinstance(store, Response) else page  # type: ignore[return-value]
        try:
            items = await store.page_dead(request.path_params["store"], *page)
        except StoreError as exc:
            return _problem(503, "Store unavailable", str(exc))
        return JSONResponse({"store": request.path_params["store"], "offset": page[0],
                             "messages": [item.as_dict() for item in items]})

    def act(replay: bool) -> Handler:
        async def handler(request: Request) -> Response:
            store = store_or_problem()
            if isinstance(store, Response):
                return store
            selection = await _selection(request)
            if isinstance(selection, Response):
                return selection
            name = request.path_params["store"]
            try:
                count = await (store.replay(name, selection) if replay else store.discard(name, selection))
            except StoreError as exc:
                return _problem(503, "Store unavailable", str(exc))
            if replay:
                store.wake_all()
            return JSONResponse({"store": name, "replayed" if replay else "discarded": count})
        return handler

    return [
        Route("/sources", guarded(sources)),
        Route("/sources/{flow}/pause", guarded(switch(True)), methods=["POST"]),
        Route("/sources/{flow}/resume", guarded(switch(False)), methods=["POST"]),
        Route("/stores", guarded(stores)),
        Route("/stores/{queue}/messages", guarded(stored)),
        Route("/stores/{store}/dead", guarded(dead)),
        Route("/stores/{store}/dead/replay", guarded(act(True)), methods=["POST"]),
        Route("/stores/{store}/dead/discard", guarded(act(False)), methods=["POST"]),
    ]
