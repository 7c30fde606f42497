"""Realistic GenAI traces as neutral spans, for the mapping's tests and the ingest benchmark.

One trace is a conversation turn of a two-agent run in the current OTel GenAI conventions:
an ``invoke_workflow`` root, a triage agent whose chat asks for a tool, the tool's
``execute_tool`` span, an HTTP client span under it, then a handoff to a writer agent whose
chat answers with the tool's result in its input.
"""

from __future__ import annotations

import json
import random

from eventlog._spans import Span

__all__ = ["genai_trace"]

_MS = 1_000_000


def _hex(rng: random.Random, digits: int) -> str:
    return f"{rng.getrandbits(digits * 4) | 1:0{digits}x}"


def _parts(role: str, *parts: dict[str, object]) -> dict[str, object]:
    return {"role": role, "parts": list(parts)}


def genai_trace(
    rng: random.Random, start_ns: int = 1_760_000_000_000_000_000, conversation: str | None = None
) -> list[Span]:
    """The spans of one turn (root first); `conversation` sets ``gen_ai.conversation.id``."""
    trace = _hex(rng, 32)
    ids = [_hex(rng, 16) for _ in range(7)]
    call = f"call_{rng.getrandbits(32):08x}"
    city = rng.choice(["Paris", "Lima", "Oslo"])
    question = _parts("user", {"type": "text", "content": f"Weather in {city}?"})
    asked = _parts(
        "assistant",
        {"type": "tool_call", "id": call, "name": "weather", "arguments": {"city": city}},
    )
    answered = _parts("tool", {"type": "tool_call_response", "id": call, "response": "sunny"})
    root_attrs: dict[str, object] = {"gen_ai.operation.name": "invoke_workflow"}
    if conversation is not None:
        root_attrs["gen_ai.conversation.id"] = conversation
    resource = {"service.name": "agents"}

    def span(i: int, parent: int | None, name: str, t0: int, t1: int, **attrs: object) -> Span:
        return Span(
            trace_id=trace,
            span_id=ids[i],
            parent_span_id=None if parent is None else ids[parent],
            name=name,
            kind="client" if name.startswith(("chat", "GET")) else "internal",
            start_ns=start_ns + t0 * _MS,
            end_ns=start_ns + t1 * _MS,
            attributes=attrs,
            resource=resource,
            scope="tests",
        )

    chat = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai"}
    return [
        span(0, None, "invoke_workflow weather", 0, 900, **root_attrs),
        span(
            1,
            0,
            "invoke_agent triage",
            1,
            500,
            **{"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "triage"},
        ),
        span(
            2,
            1,
            "chat gpt-4o",
            2,
            200,
            **chat,
            **{
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.response.model": "gpt-4o-2024-08-06",
                "gen_ai.usage.input_tokens": 40,
                "gen_ai.usage.output_tokens": 12,
                "gen_ai.response.finish_reasons": ("tool_calls",),
                "gen_ai.input.messages": json.dumps([question]),
                "gen_ai.output.messages": json.dumps([asked]),
            },
        ),
        span(
            3,
            1,
            "execute_tool weather",
            210,
            400,
            **{
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "weather",
                "gen_ai.tool.call.id": call,
                "gen_ai.tool.call.result": "sunny",
            },
        ),
        span(4, 3, "GET", 220, 390, **{"http.request.method": "GET", "url.full": "http://wx/"}),
        span(
            5,
            0,
            "invoke_agent writer",
            501,
            899,
            **{"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "writer"},
        ),
        span(
            6,
            5,
            "chat gpt-4o",
            502,
            898,
            **chat,
            **{
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.response.model": "gpt-4o-2024-08-06",
                "gen_ai.usage.input_tokens": 60,
                "gen_ai.usage.output_tokens": 9,
                "gen_ai.response.finish_reasons": ("stop",),
                "gen_ai.input.messages": json.dumps([question, asked, answered]),
                "gen_ai.output.messages": json.dumps(
                    [_parts("assistant", {"type": "text", "content": f"Sunny in {city}."})]
                ),
            },
        ),
    ]
