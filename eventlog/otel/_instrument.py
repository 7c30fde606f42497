"""`instrument(log, "openai", ...)`: tracing set up, content capture on, instrumentors called.

Each name maps to the instrumentation packages that can serve it, tried in order; the first
installed is used. A specific package can be asked for by its own name (`INSTRUMENTATIONS`).
Content capture needs, per package (the values are set only where the environment has none):

- the official OpenAI instrumentation (``opentelemetry-instrumentation-openai-v2``) puts
  messages on spans only with ``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental``
  and ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=SPAN_ONLY`` (``true`` is
  rejected as not a valid option, and nothing is captured);
- OpenLLMetry's (``opentelemetry-instrumentation-openai``, ``-anthropic``) capture unless
  ``TRACELOOP_TRACE_CONTENT`` is false: it is set to ``true``;
- OpenInference's capture unless ``OPENINFERENCE_HIDE_INPUTS``/``_OUTPUTS`` are set.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

from .. import EventLog, EventLogError
from ._exporter import Exporter
from ._logs import LogExporter
from ._runs import use_provider

__all__ = ["INSTRUMENTATIONS", "Instrumentation", "instrument"]

_OFFICIAL_OPENAI = ("opentelemetry.instrumentation.openai_v2", "OpenAIInstrumentor")
_OPENINFERENCE_OPENAI = ("openinference.instrumentation.openai", "OpenAIInstrumentor")
_OPENLLMETRY_OPENAI = ("opentelemetry.instrumentation.openai", "OpenAIInstrumentor")
_OPENINFERENCE_ANTHROPIC = ("openinference.instrumentation.anthropic", "AnthropicInstrumentor")
_OPENLLMETRY_ANTHROPIC = ("opentelemetry.instrumentation.anthropic", "AnthropicInstrumentor")
_OPENINFERENCE_LANGCHAIN = ("openinference.instrumentation.langchain", "LangChainInstrumentor")
_OPENLLMETRY_LANGCHAIN = ("opentelemetry.instrumentation.langchain", "LangchainInstrumentor")

INSTRUMENTATIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "openai": (_OFFICIAL_OPENAI, _OPENINFERENCE_OPENAI, _OPENLLMETRY_OPENAI),
    "anthropic": (_OPENINFERENCE_ANTHROPIC, _OPENLLMETRY_ANTHROPIC),
    "langchain": (_OPENINFERENCE_LANGCHAIN, _OPENLLMETRY_LANGCHAIN),
    "openai-v2": (_OFFICIAL_OPENAI,),
    "openinference-openai": (_OPENINFERENCE_OPENAI,),
    "openllmetry-openai": (_OPENLLMETRY_OPENAI,),
    "openinference-anthropic": (_OPENINFERENCE_ANTHROPIC,),
    "openllmetry-anthropic": (_OPENLLMETRY_ANTHROPIC,),
    "openinference-langchain": (_OPENINFERENCE_LANGCHAIN,),
    "openllmetry-langchain": (_OPENLLMETRY_LANGCHAIN,),
}
"""Each name `instrument` accepts, and the (module, instrumentor class) it tries, in order."""

_CONTENT_CAPTURE = {
    "OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental",
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "SPAN_ONLY",
    "TRACELOOP_TRACE_CONTENT": "true",
}


class Instrumentation:
    """What `instrument` set up: the tracer and logger providers, the span exporter, the
    instrumentors."""

    def __init__(
        self,
        provider: TracerProvider,
        exporter: Exporter,
        used: list[Any],
        logger_provider: LoggerProvider | None = None,
    ) -> None:
        self.provider = provider
        self.exporter = exporter
        self.instrumentors = used
        self.logger_provider = logger_provider

    def force_flush(self) -> None:
        """Export every ended span and write every buffered trace now."""
        self.provider.force_flush()
        self.exporter.force_flush()

    def shutdown(self) -> None:
        """Uninstrument, flush, and stop the provider (the log stays open)."""
        for instrumentor in self.instrumentors:
            instrumentor.uninstrument()
        self.provider.shutdown()  # spans first: the log records wait for their traces
        if self.logger_provider is not None:
            self.logger_provider.shutdown()
        use_provider(None, self.provider)

    def __enter__(self) -> Instrumentation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _instrumentor(name: str) -> Any:
    candidates = INSTRUMENTATIONS.get(name)
    if candidates is None:
        raise EventLogError(
            f"unknown instrumentation {name!r}: use one of {', '.join(INSTRUMENTATIONS)}"
        )
    for module_name, class_name in candidates:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        return getattr(module, class_name)()
    packages = ", ".join(m.replace(".", "-").replace("_", "-") for m, _ in candidates)
    raise EventLogError(f"no instrumentation for {name!r} is installed (one of: {packages})")


def instrument(
    log: EventLog,
    *names: str,
    service_name: str = "agent",
    batch: bool = True,
    trace_timeout: float = 30.0,
) -> Instrumentation:
    """Trace the named libraries (``"openai"``, ``"anthropic"``, ``"langchain"``, ...) into
    `log`, with content capture on; `session`, `agent` and `tool` use the same provider.

    With `batch` (the default) spans are exported by a background thread, as in production;
    ``batch=False`` exports each span as it ends. Instrumentations that emit GenAI events
    through the logs API get a logger provider exporting to `LogExporter` (synchronously, so
    a call's records are buffered before its span ends). Call `shutdown` (or use it as a context
    manager) to flush and stop.
    """
    for key, value in _CONTENT_CAPTURE.items():
        os.environ.setdefault(key, value)
    instrumentors = [_instrumentor(name) for name in names]  # all found before any is used
    exporter = Exporter(log, trace_timeout=trace_timeout)
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    logger_provider = LoggerProvider(resource=provider.resource)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(LogExporter(exporter)))
    used: list[Any] = []
    for instrumentor in instrumentors:
        instrumentor.instrument(tracer_provider=provider, logger_provider=logger_provider)
        used.append(instrumentor)
    use_provider(provider)
    return Instrumentation(provider, exporter, used, logger_provider)
