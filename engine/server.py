"""Serving: uvicorn (httptools, uvloop) on the facade and the management ports, one or more workers.

SIGTERM: readiness turns 503 at once, the facade stops accepting, requests in flight finish
within the drain timeout, then the process exits 0.  Requests still in flight at the drain
timeout are cut (a 503 problem+json each, engine/drain.py), the log says how many, and the
process exits 3.  A port that cannot be bound exits 1 with one line naming the flag.  SIGHUP
reloads the flows.  With several
workers a parent process holds the listening sockets, forks the workers and relays signals;
each worker also listens on a private Unix socket, where the one that takes a management
request asks the others (engine/workers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import ipaddress
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from connectors._tls import import_aiohttp
from engine import metrics, tracing
from engine.compiler import CompiledProject
from engine.drain import EXIT_DRAIN_CUT, DrainGuard
from engine.front import DEFAULT_MAX_BODY
from engine.httpguard import (
    DEFAULT_FIRST_BYTE_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_HEADERS,
    HttpLimits,
    protocol_class,
)
from engine.loader import LoadErrors, flow_files
from engine.management import build_management_app, build_worker_app
from engine.runtime import Runtime
from engine.tls import FacadeTls, TlsConfigError
from engine.tls_live import LiveTls
from engine.workers import WorkerGroup

log = logging.getLogger("interlace.server")


@dataclass
class ServeOptions:
    flows_dir: Path
    host: str = "127.0.0.1"
    port: int = 8290
    # management (health, flows, endpoints, metrics, reload, the designer) listens apart from the
    # facade and on loopback unless told otherwise; elsewhere it needs a token (docs/security.md)
    management_host: str = "127.0.0.1"
    insecure_management: bool = False  # serve management on a non-loopback address without a token
    management_port: int = 9201
    workers: int = 1
    watch: bool = False
    drain_timeout: float = 20.0
    max_body: int = DEFAULT_MAX_BODY
    keep_alive: float = 75.0  # longer than a gateway's idle timeout, so the gateway closes first
    designer: bool = False  # the designer on the management port, behind the management token
    # what one connection may make the engine hold before its request reaches a flow (engine/httpguard.py)
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_headers: int = DEFAULT_MAX_HEADERS
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    first_byte_timeout: float = DEFAULT_FIRST_BYTE_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    tls: FacadeTls | None = None  # TLS (and mutual TLS) on the facade port (engine/tls.py)

    @property
    def limits(self) -> HttpLimits:
        return HttpLimits(self.max_header_bytes, self.max_headers, self.header_timeout, self.first_byte_timeout,
                          self.max_connections)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the engine decides how to drain."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class CannotListen(Exception):
    """A port that cannot be bound, said in one line with the flag that changes it."""


def bind_or_explain(host: str, port: int, flag: str) -> socket.socket:
    try:
        return bind(host, port)
    except OSError as exc:
        reason = "it is already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc)).lower()
        raise CannotListen(f"cannot listen on {host}:{port}: {reason}; choose another port with {flag}") from None


def _config(app: object, opts: ServeOptions, *, facade: bool, tls: LiveTls | None = None) -> uvicorn.Config:
    """uvicorn's settings for the facade (``tls``: its live TLS) or a management listener (plain
    HTTP, behind its token)."""
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        http=protocol_class(opts.limits, "facade" if facade else "management", tls=tls is not None),
        # the listener's context hands each handshake the newest certificates (engine/tls_live.py)
        ssl_context_factory=(lambda _config, _default: tls.listener_context()) if tls is not None else None,
        loop="none",
        lifespan="off",
        access_log=False,
        # the client address flows read (${client.*}, the throttle's policies) is the connection's,
        # or what the project's settings.http.proxy_headers trust: uvicorn's own rewrite (trusting
        # 127.0.0.1 by default) would be a second trust list and one more ASGI layer per request
        proxy_headers=False,
        server_header=False,
        date_header=True,
        log_config=None,
        timeout_keep_alive=int(opts.keep_alive) if facade else 5,
        # the facade's drain is cut by DrainGuard at drain_timeout; this is uvicorn's backstop
        timeout_graceful_shutdown=int(opts.drain_timeout) + 5 if facade else 1,
        limit_concurrency=None,
        backlog=2048,
    )


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps a port reachable from this machine only."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name, "" or 0.0.0.0's relatives: reachable from elsewhere


def check_management_exposure(opts: ServeOptions) -> None:
    """Refuse to open management to the network without a token (before anything is bound)."""
    if is_loopback(opts.management_host) or os.environ.get("INTERLACE_MANAGEMENT_TOKEN") \
            or opts.insecure_management:
        return
    raise SystemExit(
        f"interlace run: refusing to serve management (flows, endpoints, metrics, reload) on "
        f"{opts.management_host or 'every address'} without a token: set INTERLACE_MANAGEMENT_TOKEN, keep "
        f"--management-host 127.0.0.1 (the default), or pass --insecure-management to serve it open")


def _management_token() -> str:
    token = os.environ.get("INTERLACE_MANAGEMENT_TOKEN")
    if not token:
        raise SystemExit("interlace run --designer: set INTERLACE_MANAGEMENT_TOKEN; the designer edits the flow "
                         "files and is served only behind the management token")
    return token


async def serve_worker(opts: ServeOptions, facade_sock: socket.socket, management_sock: socket.socket,
                       group: WorkerGroup | None = None) -> int:
    """Run one worker until SIGTERM/SIGINT; returns the exit code.  With ``group`` it is one of
    several: its management answers cover all of them (engine/workers.py)."""
    try:
        tracing.configure()  # here, in the worker: the span exporter's thread does not survive a fork
    except tracing.TracingConfigError as exc:
        print(f"interlace: {exc}", file=sys.stderr)
        return 2
    runtime = Runtime(opts.flows_dir, max_body=opts.max_body)
    loop = asyncio.get_running_loop()
    if group is not None:
        metrics.worker_started(group.index, group.restarts)
        from engine.ocsp import share_answers_in

        share_answers_in(group.directory / "ocsp")  # one OCSP lookup per certificate for the group, not per worker

    management_app = build_management_app(runtime, group=group)
    if opts.designer:
        from designer.app import build_designer_app

        management_app.mount("/designer", build_designer_app(opts.flows_dir, token=_management_token()))
    management = _Server(_config(management_app, opts, facade=False))
    management_task = asyncio.create_task(management.serve(sockets=[management_sock]))
    peer_server: _Server | None = None
    if group is not None:  # what the other workers ask this one
        peer_server = _Server(_config(build_worker_app(runtime), opts, facade=False))
        peer_task = asyncio.create_task(peer_server.serve(sockets=[group.bind()]))

    async def stop_side_servers() -> None:
        # The management port and the peers' port close on every way out, after the facade.
        management.should_exit = True
        await management_task
        if peer_server is not None:
            peer_server.should_exit = True
            await peer_task
    watched = snapshot(opts.flows_dir) if opts.watch else None
    try:
        compiled = await loop.run_in_executor(None, runtime.load)
    except LoadErrors as exc:
        print(f"interlace: the flows in {opts.flows_dir} are invalid, nothing served:\n{exc}", file=sys.stderr)
        await stop_side_servers()
        return 2
    await runtime.start(compiled)
    assert runtime.app is not None
    # Collect the young generation every 10,000 net allocations instead of 700: with 50 requests
    # in flight the default ran ~100 collections a second, about 5% of the CPU (docs/performance.md).
    # Cycles are rare on the hot path; reference counting frees the rest.  (No gc.freeze(): a
    # reloaded project's old objects would never be collected.)
    gc.set_threshold(10_000, 10, 10)
    guard = DrainGuard(runtime.app)
    try:
        live_tls = _live_tls(opts, compiled)
    except TlsConfigError as exc:
        print(f"interlace: {exc}", file=sys.stderr)
        await runtime.stop()
        await stop_side_servers()
        return 2
    facade = _Server(_config(guard, opts, facade=True, tls=live_tls))
    stop = asyncio.Event()

    def terminate() -> None:
        if not runtime.draining:
            log.info("draining: finishing requests in flight (up to %ss)", opts.drain_timeout)
            runtime.draining = True
            stop.set()

    loop.add_signal_handler(signal.SIGTERM, terminate)
    loop.add_signal_handler(signal.SIGINT, terminate)
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(runtime.reload()))
    tls_watcher = None
    if live_tls is not None:  # a reload (SIGHUP, management) checks the TLS files too, as does a timer
        runtime.reload_hooks.append(live_tls.refresh)
        tls_watcher = asyncio.create_task(live_tls.watch())
    if opts.tls is None:  # the TLS settings of the flow folder, as a reload finds them
        runtime.reloaded_hooks.append(lambda new: _reconfigure_tls(live_tls, new))
    facade_task = asyncio.create_task(facade.serve(sockets=[facade_sock]))
    watcher = asyncio.create_task(watch(opts.flows_dir, runtime.reload, seen=watched)) if opts.watch else None
    await stop.wait()
    facade.should_exit = True
    # past the drain timeout the requests still in flight are cut (a 503 problem+json each);
    # uvicorn's own timeout, a little later, is only the backstop
    cutter = loop.call_later(opts.drain_timeout, guard.cut)
    await facade_task
    cutter.cancel()
    for task in (watcher, tls_watcher):
        if task is not None:
            task.cancel()
    await stop_side_servers()
    await runtime.stop()
    await loop.run_in_executor(None, tracing.shutdown)  # export the spans still buffered
    if guard.cut_total:
        log.warning("drain timeout (%gs) passed with %d request(s) in flight: %d answered 503, %d cut mid-answer; "
                    "exiting with %d", opts.drain_timeout, guard.cut_total, guard.cut_answered, guard.cut_streaming,
                    EXIT_DRAIN_CUT)
        return EXIT_DRAIN_CUT
    log.info("stopped")
    return 0


def _settings_tls(compiled: CompiledProject) -> FacadeTls | None:
    """The TLS the flow folder's ``settings.tls`` declares (paths relative to the settings' file)."""
    project = compiled.project
    base = project.settings_file.parent if project.settings_file is not None else project.root
    return FacadeTls.from_settings(project.settings, base)


def _live_tls(opts: ServeOptions, compiled: CompiledProject) -> LiveTls | None:
    """The facade's TLS: the command line's (--tls-*, INTERLACE_TLS_*), else the flow folder's settings.tls."""
    if opts.tls is not None:
        if compiled.project.settings.get("tls"):
            log.info("settings.tls is not used: the --tls-* options (or INTERLACE_TLS_* variables) are given")
        return LiveTls(opts.tls)
    declared = _settings_tls(compiled)
    if declared is None:
        return None
    live = LiveTls(declared)  # checks the files: a bad one raises TlsConfigError, nothing served
    log.info("facade serves TLS from settings.tls%s", f" (client certificates {declared.client_cert})"
             if declared.client_ca else "")
    return live


def _reconfigure_tls(live: LiveTls | None, compiled: CompiledProject) -> None:
    try:
        declared = _settings_tls(compiled)
    except TlsConfigError as exc:
        log.warning("settings.tls cannot serve, keeping the previous TLS settings: %s", exc)
        return
    if live is None:
        if declared is not None:
            log.warning("settings.tls now declares TLS: turning TLS on takes a restart; the facade still serves "
                        "plain HTTP")
        return
    live.reconfigure(declared)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """What --watch compares: every file of the folder (flows and the files they name)."""
    state: dict[str, tuple[int, int]] = {}
    for path in sorted(folder.rglob("*")) if folder.is_dir() else flow_files(folder):
        if path.is_file() and not any(part.startswith(".") for part in path.parts[-2:]):
            stat = path.stat()
            state[str(path)] = (stat.st_mtime_ns, stat.st_size)
    return state


async def watch(folder: Path, reload: Callable[[], object], interval: float = 0.5,
                seen: dict[str, tuple[int, int]] | None = None) -> None:
    """Poll the folder; reload when a file changes, once it has been quiet for one interval.
    ``seen`` is the snapshot taken before the flows were read: a file saved between the load and
    this task's first turn (the engine already answering ready) is a change, not the baseline."""
    if seen is None:
        seen = snapshot(folder)
    while True:
        await asyncio.sleep(interval)
        now = snapshot(folder)
        if now == seen:
            continue
        await asyncio.sleep(interval)  # let an editor finish writing
        seen = snapshot(folder)
        log.info("flow folder changed: reloading")
        result = reload()
        if asyncio.iscoroutine(result):
            await result


def _event_loop_runner() -> Callable[..., int]:
    if os.environ.get("INTERLACE_LOOP") == "asyncio":  # for measurement: uvloop is the default
        return asyncio.run
    try:
        import uvloop

        return uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported platform
        return asyncio.run


def serve(opts: ServeOptions) -> int:
    """Bind the ports, run one worker here or fork several; returns the exit code."""
    # aiohttp without reading the system's CA bundle at import (80 ms a start); an https
    # endpoint reads it when it opens (connectors/_tls.py)
    import_aiohttp()
    if opts.designer:
        _management_token()  # refuse before binding anything
    check_management_exposure(opts)
    if opts.insecure_management and not is_loopback(opts.management_host) \
            and not os.environ.get("INTERLACE_MANAGEMENT_TOKEN"):
        log.warning("management on %s without a token (--insecure-management): anyone who reaches the port can "
                    "reload and read the flows", opts.management_host)
    management_host = opts.management_host
    if opts.tls is not None:
        try:
            opts.tls.check()
        except TlsConfigError as exc:
            print(f"interlace: {exc}", file=sys.stderr)
            return 2
    try:
        facade_sock = bind_or_explain(opts.host, opts.port, "--port")
        management_sock = bind_or_explain(management_host, opts.management_port, "--management-port")
    except CannotListen as exc:
        print(f"interlace: {exc}", file=sys.stderr)
        return 1
    log.info("facade on %s://%s:%d%s, management on http://%s:%d", "https" if opts.tls else "http",
             _url_host(opts.host), opts.port,
             f" (client certificates {opts.tls.client_cert})" if opts.tls and opts.tls.client_ca else "",
             _url_host(management_host), opts.management_port)
    if opts.workers <= 1:
        return int(_event_loop_runner()(serve_worker(opts, facade_sock, management_sock)))
    return _supervise(opts, facade_sock, management_sock)


def _url_host(host: str) -> str:
    """The host as a URL writes it: an IPv6 address in brackets (http://[::1]:9200)."""
    return f"[{host}]" if ":" in host else host


# a worker that died is started again after a pause that doubles while it keeps dying young
RESPAWN_FIRST_DELAY = 0.5
RESPAWN_MAX_DELAY = 30.0
RESPAWN_SETTLED = 30.0  # a worker that lived this long died of something new: the pause starts over
EXIT_CONFIG = 2  # the worker refused to start (invalid flows or settings): starting it again cannot help


@dataclass
class _Slot:
    """One worker place of the group: its current process and how it has been dying."""

    index: int
    pid: int = 0
    started: float = 0.0
    restarts: int = 0
    quick_deaths: int = 0

    def next_delay(self, now: float) -> float:
        self.quick_deaths = self.quick_deaths + 1 if now - self.started < RESPAWN_SETTLED else 1
        return float(min(RESPAWN_MAX_DELAY, RESPAWN_FIRST_DELAY * 2.0 ** (self.quick_deaths - 1)))


def _how_it_ended(status: int) -> str:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(number).name}"
        return f"killed by signal {number}"
    return f"exited with {os.waitstatus_to_exitcode(status)}"


def _supervise(opts: ServeOptions, facade_sock: socket.socket, management_sock: socket.socket) -> int:
    """Fork ``opts.workers`` workers on the shared sockets, relay TERM/INT/HUP to them, and start
    again (after a backoff) a worker that dies while the group is serving."""
    worker_opts = ServeOptions(**{**opts.__dict__, "watch": False})
    # the workers' private sockets, for management answers that cover all of them (mode 0700)
    group_dir = Path(tempfile.mkdtemp(prefix="interlace-workers-"))
    slots = [_Slot(index) for index in range(opts.workers)]
    by_pid: dict[int, _Slot] = {}
    stopping = False

    def spawn(slot: _Slot) -> None:
        pid = os.fork()
        if pid == 0:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # the worker sets its own, not relay's
                signal.signal(sig, signal.SIG_DFL)
            code = 1
            try:
                code = int(_event_loop_runner()(serve_worker(
                    worker_opts, facade_sock, management_sock,
                    WorkerGroup(group_dir, slot.index, opts.workers, slot.restarts))))
            finally:
                os._exit(code)
        slot.pid, slot.started = pid, time.monotonic()
        by_pid[pid] = slot

    watched = snapshot(opts.flows_dir) if opts.watch else None  # before a worker reads the flows
    for place in slots:
        spawn(place)

    def relay(sig: int, _frame: object = None) -> None:
        nonlocal stopping
        if sig != signal.SIGHUP:
            stopping = True
        for child in list(by_pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, sig)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, relay)
    if opts.watch:
        import threading

        def watch_thread() -> None:
            asyncio.run(watch(opts.flows_dir, lambda: relay(signal.SIGHUP), seen=watched))

        threading.Thread(target=watch_thread, daemon=True).start()
    worst = 0
    while by_pid:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        dead = by_pid.get(pid)
        if dead is None:
            continue
        del by_pid[pid]
        code = os.waitstatus_to_exitcode(status)
        if stopping or code == EXIT_CONFIG:
            worst = max(worst, code)
            if code == EXIT_CONFIG and not stopping:
                log.error("worker %d (pid %d) could not start (exit %d); stopping the others", dead.index, pid, code)
                relay(signal.SIGTERM)
            continue
        delay = dead.next_delay(time.monotonic())
        dead.restarts += 1
        log.warning("worker %d (pid %d) %s; starting it again in %.1f s (restart %d of this worker)",
                    dead.index, pid, _how_it_ended(status), delay, dead.restarts)
        deadline = time.monotonic() + delay
        while not stopping and time.monotonic() < deadline:
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        if not stopping:
            spawn(dead)
    shutil.rmtree(group_dir, ignore_errors=True)
    return worst
