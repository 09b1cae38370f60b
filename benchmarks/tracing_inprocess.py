"""What tracing at 100 % costs the engine per request, in one process, off and on back to back.

    .venv/bin/python benchmarks/tracing_inprocess.py                    # direct-json, 5000 x 7
    .venv/bin/python benchmarks/tracing_inprocess.py --requests 10000 --repeats 9 --profile /tmp/traced.prof

One process serves flows/bench twice, as benchmarks/inprocess.py drives it (the ASGI app called
directly by 50 tasks, the calls going to the benchmark's echo backend over loopback): once
compiled with tracing off, once with tracing on (``OTEL_TRACES_SAMPLER=always_on``, OTLP/HTTP to
a loopback sink that decodes each export and counts its spans).  The two are driven in turn,
round after round, so both see the same machine; the figure is CPU time per request of this
process, its span export thread included, median of the rounds.
No HTTP server parses the requests: the difference is what tracing adds to the engine's own
path, which on the shared machine moves much less than wrk's figures (benchmarks/observability_ab.sh
measures the whole server).  ``--profile`` writes a cProfile of the traced rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import inprocess  # the driver this shares: the same requests, the same bodies

ROOT = inprocess.ROOT
SINK = r'''
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
spans = 0
class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        global spans
        request = ExportTraceServiceRequest.FromString(self.rfile.read(int(self.headers.get("content-length", "0"))))
        spans += sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def do_GET(self):
        body = str(spans).encode()
        self.send_response(200); self.send_header("content-length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
'''


async def main(args: argparse.Namespace, sink_port: int) -> None:
    from engine import tracing
    from engine.drain import DrainGuard
    from engine.observability import setup_logging
    from engine.runtime import Runtime

    log = tempfile.NamedTemporaryFile("w", prefix="interlace-tracing-", suffix=".log", delete=False)  # noqa: SIM115
    sys.stderr = log
    setup_logging(args.log_level, "text")
    plain = Runtime(ROOT / "flows" / "bench")
    compiled = plain.load()
    await plain.start(compiled)
    # the exporter reads its endpoint from the process environment, as the SDK's exporters do
    os.environ.update({"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
                       "OTEL_TRACES_SAMPLER": "always_on"})
    tracing.configure()
    traced = Runtime(ROOT / "flows" / "bench")
    compiled_traced = traced.load()
    await traced.start(compiled_traced)
    gc.set_threshold(10_000, 10, 10)  # as the server does
    if args.gc_off:
        gc.disable()
    apps = {"off": DrainGuard(plain.app), "traced": DrainGuard(traced.app)}
    bench = inprocess.bench_dir()
    sys.path.insert(0, str(bench / "lib"))
    import payloads

    bodies = {"json": payloads.json_body(1024), "xml": payloads.xml_body(1024)}
    results: dict[str, list[float]] = {"off": [], "traced": []}
    export_share: list[float] = []
    profile = cProfile.Profile() if args.profile else None
    served = 0

    async def cell(name: str, requests: int) -> tuple[float, float]:
        tracing.ENABLED = name == "traced"
        # each cell starts with nothing to collect: otherwise one cell pays for the garbage the
        # other left (measured: the "off" cells ran 220 young and 2 full collections, 187 ms, the
        # traced ones 4 and 4 ms, ~20 µs a request taken from tracing's figure)
        gc.collect()
        exporting = tracing._exporter.thread
        assert exporting is not None and exporting.ident is not None
        export_clock = time.pthread_getcpuclockid(exporting.ident)
        export_before = time.clock_gettime(export_clock)
        started = time.process_time()
        if profile is not None and name == "traced":
            profile.enable()
        await inprocess.drive(apps[name], args.cell, bodies, requests, args.concurrency)
        if profile is not None:
            profile.disable()
        if name == "traced":  # this round's last spans leave now, so that their export is counted here
            tracing._exporter.wake.set()
            await asyncio.sleep(0.3)
        export_us = (time.clock_gettime(export_clock) - export_before) / requests * 1e6
        return (time.process_time() - started) / requests * 1e6, export_us

    for name in ("off", "traced"):
        await cell(name, max(args.requests // 5, 500))  # warm-up
    for round_ in range(args.repeats):
        for name in (("off", "traced") if round_ % 2 == 0 else ("traced", "off")):
            total, export_us = await cell(name, args.requests)
            results[name].append(total)
            if name == "traced":
                export_share.append(export_us)
                served += args.requests
    tracing.ENABLED = True
    await traced.stop()
    await plain.stop()
    tracing.shutdown()
    sys.stderr = sys.__stderr__
    log.close()
    os.unlink(log.name)
    if profile is not None:
        profile.dump_stats(args.profile)
    off, on = statistics.median(results["off"]), statistics.median(results["traced"])
    print(f"{args.cell}, {args.requests} requests x {args.repeats} rounds, {args.concurrency} at once, "
          f"log level {args.log_level}; CPU µs per request (this process, its export thread included)")
    for name, values in results.items():
        print(f"  {name:7} median {statistics.median(values):6.1f}   all {', '.join(f'{v:.0f}' for v in values)}")
    print(f"tracing on at 100 %: {on / off - 1:+.1%} CPU per request ({on - off:+.1f} µs; the export thread "
          f"alone {statistics.median(export_share):.1f} µs)")
    # the warm-up's spans count too; the last batch left at shutdown
    spans = int(await asyncio.to_thread(lambda: urllib.request.urlopen(f"http://127.0.0.1:{sink_port}/").read()))
    total = served + max(args.requests // 5, 500)
    print(f"spans received per traced request: {spans / total:.2f}")


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="direct-json", choices=list(inprocess.CELLS))
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--log-level", default="warning", help="as `interlace run --log-level` (default warning)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT_BASE", "18960")))
    parser.add_argument("--gc-off", action="store_true", help="no garbage collection at all (what the GC costs)")
    parser.add_argument("--profile", help="write a cProfile of the traced rounds here")
    args = parser.parse_args()
    bench = inprocess.bench_dir()
    backend = subprocess.Popen(["taskset", "-c", "1", "node", str(bench / "lib" / "echo_backend.js")],
                               env={**os.environ, "PORT": str(args.port)}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    sink = subprocess.Popen(["taskset", "-c", "1", sys.executable, "-c", SINK, str(args.port + 1)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ["BACKEND_URL"] = f"http://127.0.0.1:{args.port}"
    try:
        time.sleep(0.7)
        try:
            import uvloop

            uvloop.run(main(args, args.port + 1))
        except ImportError:
            asyncio.run(main(args, args.port + 1))
    finally:
        for process in (backend, sink):
            process.terminate()
            process.wait()
    logging.shutdown()


if __name__ == "__main__":
    run()
