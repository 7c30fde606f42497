"""The ingest benchmark's traces, made with the OpenTelemetry SDK: a realistic GenAI mix.

One trace is a turn of a two-agent run in the current GenAI conventions (the same shape as
`tests.eventlog._traces`): a workflow root with a conversation id, a triage agent whose chat
asks for a tool, the tool's span with an HTTP client span inside, then a writer agent whose
chat answers. Seven spans, two of them chats with a few hundred bytes of messages each.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from opentelemetry.trace import SpanKind, Tracer

import eventlog

__all__ = [
    "SPANS_PER_TRACE",
    "UNIT",
    "ChatInstrumented",
    "ChatPlain",
    "ExporterIntoStore",
    "SdkInMemory",
    "emit_trace",
]

SPANS_PER_TRACE = 7


def _text(rng: random.Random, words: int) -> str:
    return " ".join(
        rng.choice(("the", "agent", "weather", "city", "is", "sunny", "tool")) for _ in range(words)
    )


def emit_trace(tracer: Tracer, rng: random.Random) -> None:
    """Create and end the spans of one turn (the SDK exports each as it ends)."""
    call = f"call_{rng.getrandbits(64):016x}"
    question = [{"role": "user", "parts": [{"type": "text", "content": _text(rng, 30)}]}]
    asked = [
        {
            "role": "assistant",
            "parts": [
                {"type": "tool_call", "id": call, "name": "weather", "arguments": {"city": "Paris"}}
            ],
        }
    ]
    answered = [
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": call, "response": "sunny"}]}
    ]
    chat = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06",
    }
    root = {
        "gen_ai.operation.name": "invoke_workflow",
        "gen_ai.conversation.id": f"c-{rng.getrandbits(40)}",
    }
    with tracer.start_as_current_span("invoke_workflow turn", attributes=root):
        with tracer.start_as_current_span(
            "invoke_agent triage",
            attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "triage"},
        ):
            with tracer.start_as_current_span(
                "chat gpt-4o",
                kind=SpanKind.CLIENT,
                attributes={
                    **chat,
                    "gen_ai.usage.input_tokens": 40,
                    "gen_ai.usage.output_tokens": 12,
                    "gen_ai.response.finish_reasons": ("tool_calls",),
                    "gen_ai.input.messages": json.dumps(question),
                    "gen_ai.output.messages": json.dumps(asked),
                },
            ):
                pass
            with (
                tracer.start_as_current_span(
                    "execute_tool weather",
                    attributes={
                        "gen_ai.operation.name": "execute_tool",
                        "gen_ai.tool.name": "weather",
                        "gen_ai.tool.call.id": call,
                        "gen_ai.tool.call.result": "sunny",
                    },
                ),
                tracer.start_as_current_span(
                    "GET",
                    kind=SpanKind.CLIENT,
                    attributes={
                        "http.request.method": "GET",
                        "url.full": "http://weather/paris",
                        "http.response.status_code": 200,
                    },
                ),
            ):
                pass
        with tracer.start_as_current_span(
            "invoke_agent writer",
            attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "writer"},
        ):
            answer = [{"role": "assistant", "parts": [{"type": "text", "content": _text(rng, 40)}]}]
            with tracer.start_as_current_span(
                "chat gpt-4o",
                kind=SpanKind.CLIENT,
                attributes={
                    **chat,
                    "gen_ai.usage.input_tokens": 60,
                    "gen_ai.usage.output_tokens": 40,
                    "gen_ai.response.finish_reasons": ("stop",),
                    "gen_ai.input.messages": json.dumps(question + asked + answered),
                    "gen_ai.output.messages": json.dumps(answer),
                },
            ):
                pass


# -- the sides ------------------------------------------------------------------------------

BATCH = 512  # spans per export: the BatchSpanProcessor's default max_export_batch_size
UNIT = SPANS_PER_TRACE * 64  # slices hold whole traces


def _provider(exporter: Any) -> tuple[Any, Tracer]:
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: PLC0415

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, provider.get_tracer("bench")


class SdkInMemory:
    """The OpenTelemetry SDK's own cost: create the spans of `n / 7` traces, each exported as
    it ends (`SimpleSpanProcessor`) to an `InMemorySpanExporter`, cleared between slices."""

    def __init__(self, path: Path, total: int) -> None:
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: PLC0415
            InMemorySpanExporter,
        )

        self.memory = InMemorySpanExporter()
        self.provider, self.tracer = _provider(self.memory)
        self.rng = random.Random(1)

    def run(self, n: int) -> float:
        tracer, rng = self.tracer, self.rng
        start = time.perf_counter()
        for _ in range(n // SPANS_PER_TRACE):
            emit_trace(tracer, rng)
        seconds = time.perf_counter() - start
        self.memory.clear()
        return seconds

    def close(self) -> dict[str, float]:
        self.provider.shutdown()
        return {}


class ExporterIntoStore:
    """The same spans, made beforehand by the SDK, exported in batches of 512 through
    `eventlog.otel.Exporter` into a durable store (default FSYNC), then `force_flush`."""

    def __init__(self, path: Path, total: int) -> None:
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: PLC0415
            InMemorySpanExporter,
        )

        from eventlog import otel  # noqa: PLC0415

        memory = InMemorySpanExporter()
        provider, tracer = _provider(memory)
        rng = random.Random(2)
        for _ in range(-(-total // SPANS_PER_TRACE)):
            emit_trace(tracer, rng)
        self.spans = list(memory.get_finished_spans())
        provider.shutdown()
        self.at = 0
        self.log = eventlog.open(path / "log")
        self.exporter = otel.Exporter(self.log)

    def run(self, n: int) -> float:
        spans, self.at = self.spans[self.at : self.at + n], self.at + n
        export = self.exporter.export
        start = time.perf_counter()
        for i in range(0, len(spans), BATCH):
            export(spans[i : i + BATCH])
        self.exporter.force_flush()
        return time.perf_counter() - start

    def close(self) -> dict[str, float]:
        stats = self.exporter.stats
        self.log.close()
        return {"events_per_span": stats.events / max(1, stats.spans)}


# -- instrument()'s overhead on one chat completion -----------------------------------------

_COMPLETION = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1_760_000_000,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "It is sunny in Paris."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28},
}
_BODY = json.dumps(_COMPLETION).encode()


def _client() -> Any:
    """An `openai` client whose HTTP transport answers in process (`MockTransport`)."""
    import httpx2  # noqa: PLC0415
    import openai  # noqa: PLC0415

    def answer(request: Any) -> Any:
        return httpx2.Response(200, content=_BODY, headers={"content-type": "application/json"})

    http = httpx2.Client(transport=httpx2.MockTransport(answer))
    return openai.OpenAI(base_url="http://fake/v1", api_key="x", http_client=http)


_MESSAGES = [{"role": "user", "content": "What's the weather in Paris?"}]


class ChatPlain:
    """`client.chat.completions.create` against the in-process fake, uninstrumented."""

    instrumented = False

    def __init__(self, path: Path, total: int) -> None:
        self.client = _client()
        self.path = path
        self.handle: Any = None

    def run(self, n: int) -> float:
        self._on()
        create = self.client.chat.completions.create
        start = time.perf_counter()
        for _ in range(n):
            create(model="gpt-4o", messages=_MESSAGES)
        seconds = time.perf_counter() - start
        self._off()
        return seconds

    def _on(self) -> None:
        pass

    def _off(self) -> None:
        pass

    def close(self) -> dict[str, float]:
        return {}


class ChatInstrumented(ChatPlain):
    """The same calls under `eventlog.otel.instrument(log, "openai-v2")` (content captured,
    spans batched into a durable store): instrumented for its slices only, since an
    instrumentation patches the `openai` classes for every client of the process."""

    def __init__(self, path: Path, total: int) -> None:
        super().__init__(path, total)
        self.log = eventlog.open(path / "log")

    def _on(self) -> None:
        from eventlog import otel  # noqa: PLC0415

        self.handle = otel.instrument(self.log, "openai-v2")

    def _off(self) -> None:
        self.handle.shutdown()  # flushes the slice's spans, untimed

    def close(self) -> dict[str, float]:
        self.log.close()
        return {}
