"""The Sources part of the reference (engine/docs.py): every source kind and the redelivery policy."""

from __future__ import annotations

from typing import Any


def sources_section() -> list[str]:
    from engine.docs import _properties, _yaml_text
    from engine.sources.base import source_kinds
    from engine.sources.connector_source import connector_sources
    from engine.sources.policy import DEAD_LETTER_SCHEMA, REDELIVERY_SCHEMA

    parts = ["\n## Sources\n",
             "A flow's `source:` has one key: `http` (a route of the facade), `soap`, or one of these. A source "
             "other than http acknowledges what it received only after the flow succeeded; `on_error: {redelivery: "
             "...}` says how a failure is tried again and where it goes at the end (see below; an HTTP flow takes it "
             "too, while its caller waits).\n"]
    kinds: list[tuple[str, str, dict[str, Any], list[Any]]] = [
        (name, kind.summary, kind.schema, kind.examples) for name, kind in source_kinds().items()]
    kinds += [(name, f"{operation.summary} (endpoints of kind `{connector}`)", operation.schema, operation.examples)
              for name, (connector, operation) in connector_sources().items()]
    for name, summary, schema, examples in sorted(kinds):
        parts.append(f"### source: {name}\n\n{summary}\n")
        parts.append("| key | type | meaning |\n|---|---|---|")
        parts.extend(_properties(schema))
        for example in examples:
            parts.append(f"\n```yaml\n{_yaml_text({'source': {name: example}})}\n```")
    parts.append("\n### on_error: redelivery\n\n" + str(REDELIVERY_SCHEMA["description"]) + "\n")
    parts.append("| key | type | meaning |\n|---|---|---|")
    parts.extend(_properties(REDELIVERY_SCHEMA))
    parts.append("\n`dead_letter` takes one of:\n\n| key | type | meaning |\n|---|---|---|")
    parts.extend(_properties(DEAD_LETTER_SCHEMA))
    return parts
