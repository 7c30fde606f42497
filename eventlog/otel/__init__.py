"""OpenTelemetry in, events out: the agents people already run write into the store.

```python
import eventlog
import eventlog.otel

log = eventlog.open("./lmg-data")
handle = eventlog.otel.instrument(log, "openai")  # then use the openai SDK as usual
...
handle.shutdown()  # flushes every buffered trace
```

`Exporter(log)` is a standard `SpanExporter` for an app that already sets up tracing, and
`LogExporter(exporter)` the `LogRecordExporter` beside it for the GenAI events some
instrumentations emit through the logs API;
`instrument(log, ...)` sets one up, turns on content capture and calls the installed
instrumentors; `session`, `agent` and `tool` trace code no library instruments, with GenAI
attributes, so it goes through the same mapping. Needs the ``otel`` extra
(``pip install 'llm-memory-graph[otel]'``); `import eventlog` never imports this package.
docs/ingest.md has the mapping, the order and retry rules, and the limits.
"""

try:
    import opentelemetry.sdk.trace  # noqa: F401 (the extra's one check, before the rest)
except ModuleNotFoundError as exc:  # name the extra, not only the module it lacks
    raise ModuleNotFoundError(
        f"eventlog.otel needs the otel extra ({exc.name} is missing): "
        "pip install 'llm-memory-graph[otel]' (from a clone: pip install '.[otel]')",
        name=exc.name,
    ) from None

from .._genai import NO_NEW_INPUT, NOT_CAPTURED
from .._ingest import IngestStats
from .._spans import MAX_ATTRIBUTES, MAX_DEPTH, MAX_LIST_ITEMS, MAX_TEXT_BYTES
from ._exporter import Exporter, from_readable
from ._instrument import INSTRUMENTATIONS, Instrumentation, instrument
from ._logs import LogExporter, from_readable_log
from ._runs import AgentRun, ToolRun, agent, session, tool

__all__ = [
    "INSTRUMENTATIONS",
    "MAX_ATTRIBUTES",
    "MAX_DEPTH",
    "MAX_LIST_ITEMS",
    "MAX_TEXT_BYTES",
    "NOT_CAPTURED",
    "NO_NEW_INPUT",
    "AgentRun",
    "Exporter",
    "IngestStats",
    "Instrumentation",
    "LogExporter",
    "ToolRun",
    "agent",
    "from_readable",
    "from_readable_log",
    "instrument",
    "session",
    "tool",
]
