"""The message-store flows that the messaging tests and ``benchmarks/store_throughput.py`` run.

An HTTP flow ``accept`` stores what is POSTed to ``path`` (202 with the message id), and a
processor ``forward`` sends each stored message to the endpoint ``backend`` with its
``Idempotency-Key``, expecting a 2xx.  One text; the callers vary only what they test (the
store step's and the processor's settings, the redelivery policy, the backend's path).
"""

from __future__ import annotations

IDEMPOTENT_CALL = ('{endpoint: backend, method: POST, path: "%s", headers: {Idempotency-Key: "${vars.message_id}"}, '
                   'expect_status: [2xx]}')


def store_flows(*, queue: str, path: str, forward_to: str | None = None, store: str = "", processor: str = "",
                redelivery: str = "", url: str = "${env.BACKEND_URL}",
                timeout: str = "{connect: 1s, read: 5s}") -> str:
    """The flows' YAML.  ``store`` and ``processor``: more settings of the store step and of the
    store source (flow-mapping entries, e.g. ``"concurrency: 4, poll: 100ms"``); ``redelivery``:
    the forward flow's ``on_error.redelivery`` as a flow mapping (none: the processor's default);
    ``forward_to``: the backend path (default ``path``; may hold ``${...}``)."""
    extra_store = f", {store}" if store else ""
    extra_processor = f", {processor}" if processor else ""
    text = f"""
endpoints:
  backend:
    http: {{url: "{url}", timeout: {timeout}}}
flows:
  accept:
    source: {{http: {{method: POST, path: {path}}}}}
    steps:
      - store: {{queue: {queue}{extra_store}}}
  forward:
    source: {{store: {{queue: {queue}{extra_processor}}}}}
    steps:
      - call: {IDEMPOTENT_CALL % (forward_to or path)}
"""
    if redelivery:
        text += f"""    on_error:
      redelivery: {redelivery}
"""
    return text
