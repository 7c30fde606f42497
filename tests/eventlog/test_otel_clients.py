"""Real clients, real instrumentations, no network: the same conversation lands the same way.

The real `openai` SDK (sync, async, streaming) and `anthropic` SDK talk to a fake model
server on 127.0.0.1 (`tests._fake_llm`), instrumented by the real packages: the official
OpenAI GenAI instrumentation, OpenInference's and OpenLLMetry's. A two-turn conversation with
a tool call must end as the same prompts, responses, tool invocation and tokens in the
projections, whichever instrumentation recorded it. These need the ``otel`` and
``test-otel`` extras, which `make test` installs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")
pytest.importorskip("opentelemetry.sdk")

from eventlog import otel  # noqa: E402
from projections import MemoryGraph  # noqa: E402
from tests._fake_llm import ANSWER, fake_llm  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    # OpenLLMetry's instrumentation still declares a pydantic class-based config
    "ignore:Support for class-based `config` is deprecated:DeprecationWarning"
)

QUESTION = "What's the weather in Paris?"
OPENAI_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
ANTHROPIC_TOOLS = [
    {
        "name": "get_weather",
        "description": "The weather in a city.",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]


def _asked_and_answered(call_id: str) -> list[dict[str, Any]]:
    """The assistant's tool call and the tool's result, as the app sends them back."""
    call = {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}
    return [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": call_id, "type": "function", "function": call}],
        },
        {"role": "tool", "tool_call_id": call_id, "content": "sunny"},
    ]


TURNS = [
    (QUESTION, "", 20, 10, "tool_call"),
    ("sunny", ANSWER, 30, 8, "stop"),
]
TOOL = [("get_weather", "Paris", "success", '"sunny"')]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with fake_llm() as url:
        yield url


def _openai_sync(url: str, stream: bool) -> None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="test", max_retries=0)
    messages: list[dict[str, Any]] = [{"role": "user", "content": QUESTION}]
    if stream:
        chunks = client.chat.completions.create(
            model="gpt-4o",
            messages=messages,
            tools=OPENAI_TOOLS,
            stream=True,
            stream_options={"include_usage": True},
        )
        calls = [c.id for chunk in chunks for d in chunk.choices for c in d.delta.tool_calls or ()]
        call_id = calls[0]
    else:
        first = client.chat.completions.create(
            model="gpt-4o", messages=messages, tools=OPENAI_TOOLS
        )
        call_id = first.choices[0].message.tool_calls[0].id
    client.chat.completions.create(
        model="gpt-4o", messages=[*messages, *_asked_and_answered(call_id)], tools=OPENAI_TOOLS
    )


async def _openai_async(url: str) -> None:
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="test", max_retries=0)
    messages: list[dict[str, Any]] = [{"role": "user", "content": QUESTION}]
    first = await client.chat.completions.create(
        model="gpt-4o", messages=messages, tools=OPENAI_TOOLS
    )
    call_id = first.choices[0].message.tool_calls[0].id
    await client.chat.completions.create(
        model="gpt-4o", messages=[*messages, *_asked_and_answered(call_id)], tools=OPENAI_TOOLS
    )
    await client.close()


def _anthropic(url: str) -> None:
    client = anthropic.Anthropic(base_url=url, api_key="test", max_retries=0)
    messages: list[dict[str, Any]] = [{"role": "user", "content": QUESTION}]
    first = client.messages.create(
        model="claude-sonnet-4-5", max_tokens=100, messages=messages, tools=ANTHROPIC_TOOLS
    )
    result = {"type": "tool_result", "tool_use_id": first.content[0].id, "content": "sunny"}
    messages += [
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {"role": "user", "content": [result]},
    ]
    client.messages.create(
        model="claude-sonnet-4-5", max_tokens=100, messages=messages, tools=ANTHROPIC_TOOLS
    )


def _check(g: MemoryGraph, conversation: str, model: str) -> None:
    session = "(SELECT id FROM sessions WHERE metadata->>'conversation_id' = ?)"
    assert (
        g.rows(
            "SELECT p.content, r.content, r.prompt_tokens, r.completion_tokens, r.finish_reason "
            f"FROM prompts p JOIN responses r ON r.prompt_id = p.id WHERE p.session_id = {session} "
            "ORDER BY p.occurred_at",
            [conversation],
        )
        == TURNS
    ), conversation
    assert g.rows(
        f"SELECT DISTINCT model FROM responses WHERE session_id = {session}", [conversation]
    ) == [(model,)]
    assert g.rows(
        f"SELECT count(*) FROM responses WHERE latency_ms > 0 AND session_id = {session}",
        [conversation],
    ) == [(2,)]
    assert (
        g.rows(
            "SELECT tool_name, parameters->>'city', status, result FROM tool_invocations "
            f"WHERE session_id = {session}",
            [conversation],
        )
        == TOOL
    ), conversation


# Each instrumentation is set up once per process: OpenLLMetry's wraps a stream twice when
# instrumented again after `uninstrument` (tool call arguments arrive doubled).
@pytest.mark.parametrize(
    "instrumentation", ["openai-v2", "openinference-openai", "openllmetry-openai"]
)
@pytest.mark.slow
def test_an_openai_conversation_lands_the_same_under_every_instrumentation(
    tmp_path: Path, server: str, instrumentation: str
) -> None:
    with MemoryGraph.open(tmp_path / "s") as g:
        with otel.instrument(g, instrumentation):
            with otel.session("sync"):
                _openai_sync(server, stream=False)
            with otel.session("stream"):
                _openai_sync(server, stream=True)
            with otel.session("async"):
                asyncio.run(_openai_async(server))
        for conversation in ("sync", "stream", "async"):
            _check(g, conversation, "gpt-4o-2024-08-06")
        assert g.rows("SELECT count(*) FROM spans WHERE name LIKE 'invoke_workflow%'") == [(3,)]


@pytest.mark.slow
def test_with_content_capture_off_a_conversation_keeps_its_tokens_models_and_latencies(
    tmp_path: Path, server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Most instrumentations capture no message content by default, and operators turn it
    off on purpose: the turns still land, with usage, model, finish reason and latency, and
    a prompt that says its input was not captured. Before, the log refused a prompt without
    content and such a call was a bare span."""
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "NO_CONTENT")
    with MemoryGraph.open(tmp_path / "s") as g:
        with otel.instrument(g, "openai-v2"), otel.session("dark"):
            _openai_sync(server, stream=False)
        assert g.rows(
            "SELECT p.content, r.content, r.prompt_tokens, r.completion_tokens, r.finish_reason,"
            " r.model, r.latency_ms > 0 FROM prompts p JOIN responses r ON r.prompt_id = p.id"
            " ORDER BY p.occurred_at"
        ) == [
            (otel.NOT_CAPTURED, "", 20, 10, "tool_call", "gpt-4o-2024-08-06", True),
            (otel.NOT_CAPTURED, "", 30, 8, "stop", "gpt-4o-2024-08-06", True),
        ]
        assert "sunny" not in json.dumps(g.rows("SELECT metadata FROM prompts"))


@pytest.mark.parametrize("instrumentation", ["openinference-anthropic", "openllmetry-anthropic"])
def test_an_anthropic_conversation_lands_the_same_under_every_instrumentation(
    tmp_path: Path, server: str, instrumentation: str
) -> None:
    with MemoryGraph.open(tmp_path / "s") as g:
        with otel.instrument(g, instrumentation), otel.session("sync"):
            _anthropic(server)
        _check(g, "sync", "claude-sonnet-4-5")
        assert g.rows("SELECT count(*) FROM spans") == [(3,)]  # the session and two calls


def _langchain(url: str) -> Any:
    """A LangChain agent (a runnable named ``weather_agent``): ask, run the tools the model
    asks for, ask again, until it answers."""
    from langchain_core.messages import BaseMessage, HumanMessage  # noqa: PLC0415
    from langchain_core.runnables import RunnableLambda  # noqa: PLC0415
    from langchain_core.tools import tool  # noqa: PLC0415
    from langchain_openai import ChatOpenAI  # noqa: PLC0415

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    def agent(question: str) -> Any:
        llm = ChatOpenAI(
            model="gpt-4o", base_url=f"{url}/v1", api_key=lambda: "test", max_retries=0
        ).bind_tools([get_weather])
        messages: list[BaseMessage] = [HumanMessage(question)]
        while True:
            reply = llm.invoke(messages)
            messages.append(reply)
            if not reply.tool_calls:
                return reply.content
            messages += [get_weather.invoke(call) for call in reply.tool_calls]

    return RunnableLambda(agent).with_config(run_name="weather_agent").invoke(QUESTION)


@pytest.mark.slow
def test_a_langchain_agent_under_openinference_lands_as_agent_turns_and_tool(
    tmp_path: Path, server: str
) -> None:
    pytest.importorskip("langchain_openai")
    pytest.importorskip("openinference.instrumentation.langchain")
    with MemoryGraph.open(tmp_path / "s") as g:
        with otel.instrument(g, "openinference-langchain"), otel.session("sync"):
            answer = _langchain(server)
        assert answer == ANSWER
        _check(g, "sync", "gpt-4o-2024-08-06")
        assert g.rows("SELECT name, responses, tool_calls FROM agent_stats") == [
            ("weather_agent", 2, 1)
        ]
        assert g.rows("SELECT duration_ms > 0 FROM tool_invocations") == [(True,)]
