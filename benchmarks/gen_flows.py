"""Generate a flow folder with many flows, for start-up and memory measurements.

    python benchmarks/gen_flows.py /tmp/flows200                 # 200 flows, one file each
    python benchmarks/gen_flows.py /tmp/flows200 --count 200 --per-file 10

The flows rotate through the step kinds a real project mixes: answering from a template,
routing on a header and on the payload, reshaping JSON with JMESPath, XSLT, calling and
enriching from an HTTP endpoint (declared, never called at start), logging and headers.
Every flow serves its own route: ``POST /gen/<n>`` (``GET /gen/<n>/ping`` for the first
kind, which answers without a backend, so a probe can time start to first answer); with
``--templated`` every other one's path has a parameter.
"""

from __future__ import annotations

import argparse
from pathlib import Path

XSL = """<?xml version="1.0"?>
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:template match="/"><out><xsl:value-of select="count(//*)"/></out></xsl:template>
</xsl:stylesheet>
"""

HEADER = """endpoints:
  backend-{file}:
    http:
      url: ${{env.BACKEND_URL || 'http://127.0.0.1:18100'}}
      timeout: {{connect: 1s, read: 5s}}
      retry: {{attempts: 2, backoff: 50ms, on_status: [503]}}
      breaker: {{failures: 5, reset: 10s}}

flows:
"""

KINDS = [
    """  gen-{n}:
    description: Generated flow {n}, answers from a template.
    source: {{http: {{method: GET, path: /gen/{n}/ping}}}}
    steps:
      - set: {{headers: {{X-Flow: gen-{n}}}}}
      - respond:
          json: {{flow: gen-{n}, id: '${{correlation_id}}', who: "${{query.name || 'anyone'}}"}}
""",
    """  gen-{n}:
    description: Generated flow {n}, routes on a header.
    source: {{http: {{method: POST, path: /gen/{n}}}}}
    steps:
      - choice:
          when:
            - if: ${{headers."x-route" == 'a'}}
              steps:
                - call: {{endpoint: backend-{file}, path: /echo/a}}
          otherwise:
            - call: {{endpoint: backend-{file}, path: /echo/b}}
""",
    """  gen-{n}:
    description: Generated flow {n}, reshapes JSON and forwards it.
    source: {{http: {{method: POST, path: /gen/{n}}}}}
    steps:
      - log: reshaping for flow {n}
      - transform:
          jmespath: "{{items: orders[*].{{sku: symbol, n: volume}}, total: length(orders)}}"
      - call: {{endpoint: backend-{file}, path: /echo}}
""",
    """  gen-{n}:
    description: Generated flow {n}, routes on the JSON payload.
    source: {{http: {{method: POST, path: /gen/{n}}}}}
    steps:
      - choice:
          when:
            - if: ${{payload.orders[0].symbol == 'IBM'}}
              steps:
                - call: {{endpoint: backend-{file}, path: /echo/ibm}}
          otherwise:
            - respond: {{status: 422, json: {{error: not IBM}}}}
""",
    """  gen-{n}:
    description: Generated flow {n}, XSLT then forward.
    source: {{http: {{method: POST, path: /gen/{n}}}}}
    steps:
      - transform: {{xslt: gen.xsl, content_type: application/xml}}
      - call: {{endpoint: backend-{file}, path: /echo}}
""",
    """  gen-{n}:
    description: Generated flow {n}, enriches the payload from the backend.
    source: {{http: {{method: POST, path: /gen/{n}}}}}
    steps:
      - enrich:
          call: {{endpoint: backend-{file}, method: GET, path: '/customers/${{payload.customer}}'}}
          select: "payload.{{name: name}}"
          into: $.customer_info
      - set: {{headers: {{Cache-Control: no-store}}}}
""",
]


def _templated(text: str, n: int) -> str:
    """Every other flow's path with a parameter: ``/gen/{id}/N`` (grouped under its literal first
    segment) or ``/{tenant}/gen/N`` (a parameter first: a template tried for any path)."""
    if n % 2 == 0:
        return text
    template = f"/gen/{{id}}/{n}" if n % 4 == 1 else f"/{{tenant}}/gen/{n}"
    return text.replace(f"path: /gen/{n}}}", f"path: '{template}'}}")


def generate(target: Path, count: int, per_file: int, templated: bool = False) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    (target / "gen.xsl").write_text(XSL)
    written: list[Path] = []
    for first in range(0, count, per_file):
        index = first // per_file
        text = HEADER.format(file=index)
        for n in range(first, min(first + per_file, count)):
            flow = KINDS[n % len(KINDS)].format(n=n, file=index)
            text += _templated(flow, n) if templated else flow
        path = target / f"gen-{index:04d}.yaml"
        path.write_text(text)
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", type=Path, help="folder to write (created)")
    parser.add_argument("--count", type=int, default=200, help="flows in all (default 200)")
    parser.add_argument("--per-file", type=int, default=1, help="flows per file (default 1)")
    parser.add_argument("--templated", action="store_true",
                        help="every other flow's path with a parameter (/gen/{id}/N, /{tenant}/gen/N)")
    args = parser.parse_args()
    files = generate(args.target, args.count, args.per_file, args.templated)
    print(f"{args.count} flows in {len(files)} files under {args.target}")


if __name__ == "__main__":
    main()
