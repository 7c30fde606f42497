"""What the golden files (each convention alone, well formed) cannot see, through
`eventlog.otel.Exporter` and the real OpenTelemetry SDK: where conventions disagree on one
span, the one docs/ingest.md names wins ("the current GenAI conventions, then OpenInference,
then OpenLLMetry's `traceloop.*`, then the legacy GenAI names"); an empty string is absent
and a 0 is not; indexed messages with gaps; ancestors arriving in any order and batches."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

import eventlog
from eventlog import events as ev
from eventlog import otel

_CHAT = {
    "gen_ai.operation.name": "chat",
    "gen_ai.input.messages": '[{"role": "user", "parts": [{"type": "text", "content": "Hi"}]}]',
    "gen_ai.output.messages": '[{"role": "assistant", "parts": [{"type":"text", "content":"Ok"}]}]',
}


def _mapped(store: Path, attributes: dict[str, Any], *, failed: bool = False) -> list[ev.EventBase]:
    """The events one chat span with `attributes` makes, exported through `Exporter`."""
    with eventlog.open(store, durability=eventlog.Durability.NONE) as log:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(otel.Exporter(log)))
        tracer = provider.get_tracer("test")
        with tracer.start_as_current_span("chat m", attributes={**_CHAT, **attributes}) as span:
            if failed:
                span.set_status(Status(StatusCode.ERROR, "boom"))
        provider.shutdown()
        return [record.event for record in log.read()]


def _one(events: list[ev.EventBase], kind: type[Any]) -> Any:
    (found,) = [e for e in events if isinstance(e, kind)]
    return found


def test_the_current_gen_ai_user_id_wins_over_openinference_user_id(tmp_path: Path) -> None:
    events = _mapped(
        tmp_path / "s",
        {"user.id": "oi-user", "gen_ai.user.id": "genai-user"},
    )
    assert _one(events, ev.SessionCreated).metadata["user_id"] == "genai-user"


def test_an_empty_gen_ai_user_id_does_not_hide_openinference_user_id(tmp_path: Path) -> None:
    """As for every other field: the first convention with a non-empty value wins."""
    events = _mapped(tmp_path / "s", {"gen_ai.user.id": "", "user.id": "u-1"})
    assert _one(events, ev.SessionCreated).metadata["user_id"] == "u-1"


def test_openinference_provider_wins_over_the_legacy_gen_ai_system(tmp_path: Path) -> None:
    events = _mapped(
        tmp_path / "s",
        {"gen_ai.system": "openai", "llm.provider": "azure"},
    )
    assert _one(events, ev.PromptAdded).metadata.custom["provider"] == "azure"


def test_openinference_token_counts_win_over_the_legacy_usage_names(tmp_path: Path) -> None:
    events = _mapped(
        tmp_path / "s",
        {
            "gen_ai.usage.prompt_tokens": 1,
            "gen_ai.usage.completion_tokens": 2,
            "llm.token_count.prompt": 10,
            "llm.token_count.completion": 20,
        },
    )
    assert _one(events, ev.ResponseAdded).usage == ev.TokenUsage(10, 20)


def test_a_current_gen_ai_token_detail_wins_over_openinference_of_the_same_name(
    tmp_path: Path,
) -> None:
    events = _mapped(
        tmp_path / "s",
        {
            "gen_ai.usage.reasoning_tokens": 7,
            "llm.token_count.reasoning_tokens": 70,
            "llm.token_count.prompt_details.cache_read": 3,
        },
    )
    assert _one(events, ev.ResponseAdded).metadata["usage"] == {
        "reasoning_tokens": 7,
        "prompt_details.cache_read": 3,
    }


def test_empty_gen_ai_messages_do_not_hide_another_conventions_messages(tmp_path: Path) -> None:
    """An empty string counts as absent for the messages too, not as one empty message
    (whose prompt the log refuses: the turn was lost)."""
    events = _mapped(
        tmp_path / "s",
        {
            "gen_ai.input.messages": "",
            "gen_ai.output.messages": "",
            "llm.input_messages.0.message.role": "user",
            "llm.input_messages.0.message.content": "Hello",
            "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.content": "Hi there",
        },
    )
    assert _one(events, ev.PromptAdded).content == "Hello"
    assert _one(events, ev.ResponseAdded).content == "Hi there"


def test_an_empty_finish_reason_of_a_failed_call_is_error(tmp_path: Path) -> None:
    events = _mapped(tmp_path / "s", {"llm.finish_reason": ""}, failed=True)
    assert _one(events, ev.ResponseAdded).finish_reason == "error"


def test_empty_system_instructions_are_no_system_prompt(tmp_path: Path) -> None:
    events = _mapped(tmp_path / "s", {"gen_ai.system_instructions": ""})
    assert "system" not in _one(events, ev.PromptAdded).metadata.custom


def test_a_temperature_of_zero_is_kept(tmp_path: Path) -> None:
    """0 is a value, not an absence (a deterministic call's temperature)."""
    events = _mapped(tmp_path / "s", {"gen_ai.request.temperature": 0.0})
    assert _one(events, ev.PromptAdded).metadata.temperature == 0.0
    events = _mapped(tmp_path / "t", {"llm.invocation_parameters": '{"temperature": 0}'})
    assert _one(events, ev.PromptAdded).metadata.temperature == 0.0


def test_indexed_messages_are_read_in_numeric_order_whatever_their_gaps(tmp_path: Path) -> None:
    """``N`` orders the messages (10 after 2, not before), whatever order the attributes
    come in; a missing index is skipped."""
    attributes: dict[str, Any] = {"gen_ai.input.messages": "", "gen_ai.output.messages": ""}
    for n, role, text in reversed(
        [(0, "system", "Be brief."), (2, "user", "Hi"), (10, "user", "?")]
    ):
        attributes[f"gen_ai.prompt.{n}.role"] = role
        attributes[f"gen_ai.prompt.{n}.content"] = text
    attributes["gen_ai.completion.0.content"] = "Hello"
    prompt = _one(_mapped(tmp_path / "s", attributes), ev.PromptAdded)
    assert prompt.content == "Be brief.\nHi\n?"
    assert [m["content"] for m in prompt.metadata.custom["messages"]] == ["Be brief.", "Hi", "?"]


def _agents_trace() -> list[Any]:
    """A workflow naming the conversation, two agents each with a chat below it, and a tool
    of the second: what the conversation and agent of each turn are read from lies in its
    ancestors, which an SDK exports after it."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracer = provider.get_tracer("test")
    workflow = {"gen_ai.operation.name": "invoke_workflow", "gen_ai.conversation.id": "c-9"}
    with tracer.start_as_current_span("workflow", attributes=workflow):
        for agent in ("triage", "writer"):
            named = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent}
            with tracer.start_as_current_span(f"invoke_agent {agent}", attributes=named):
                with tracer.start_as_current_span("chat", attributes={**_CHAT, "user.id": agent}):
                    pass
                tool = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}
                with tracer.start_as_current_span("execute_tool search", attributes=tool):
                    pass
    provider.shutdown()
    return list(spans.get_finished_spans())


_AGENTS_TRACE = _agents_trace()


def _exported(store: Path, batches: list[list[Any]]) -> list[Any]:
    with eventlog.open(store, durability=eventlog.Durability.NONE) as log:
        exporter = otel.Exporter(log)
        for batch in batches:
            exporter.export(batch)
        exporter.shutdown()
        out = []
        for record in log.read():
            raw = msgspec.json.decode(msgspec.json.encode(record.event))
            raw.pop("ts", None)
            out.append(raw)
        return out


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order=st.permutations(_AGENTS_TRACE[:-1]), cuts=st.lists(st.integers(0, 10), max_size=3))
def test_turns_read_from_ancestors_do_not_depend_on_their_order_or_batches(
    tmp_path_factory: pytest.TempPathFactory, order: list[Any], cuts: list[int]
) -> None:
    """The nearest agent and conversation of a span are remembered per trace mapping: they
    must be the same whichever order and batches the ancestors come in (the root last, as an
    SDK sends it)."""
    spans = [*order, _AGENTS_TRACE[-1]]
    points = sorted({c % (len(spans) + 1) for c in cuts})
    edges = [0, *points, len(spans)]
    batches = [spans[a:b] for a, b in itertools.pairwise(edges) if b > a]
    one = _exported(tmp_path_factory.mktemp("one"), [_AGENTS_TRACE])
    assert _exported(tmp_path_factory.mktemp("split"), batches) == one
    agents = {e.get("actor") for e in one if e["type"] == "response.added"}
    assert agents == {"triage", "writer"}


def test_a_token_count_that_is_no_number_does_not_hide_another_conventions(
    tmp_path: Path,
) -> None:
    events = _mapped(
        tmp_path / "s", {"gen_ai.usage.input_tokens": "n/a", "llm.token_count.prompt": 10}
    )
    assert _one(events, ev.ResponseAdded).usage == ev.TokenUsage(10, 0)


def test_a_temperature_given_as_a_string_is_read_as_a_number(tmp_path: Path) -> None:
    """Some instrumentations stringify request parameters; a string that is no finite
    number is no temperature."""
    events = _mapped(tmp_path / "s", {"gen_ai.request.temperature": "0.7"})
    assert _one(events, ev.PromptAdded).metadata.temperature == 0.7
    for i, bad in enumerate(["warm", "nan", "inf"]):
        events = _mapped(tmp_path / f"bad{i}", {"gen_ai.request.temperature": bad})
        assert _one(events, ev.PromptAdded).metadata.temperature is None


def test_a_chat_span_without_content_is_still_a_turn_with_its_usage(tmp_path: Path) -> None:
    """Content capture off (the default of most instrumentations): no messages on the span.
    The turn keeps its model, usage, finish reason and latency; its prompt says why it has
    no text."""
    attributes = {
        "gen_ai.input.messages": "",
        "gen_ai.output.messages": "",
        "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 7,
        "gen_ai.response.finish_reasons": ["stop"],
    }
    events = _mapped(tmp_path / "s", attributes)
    prompt, response = _one(events, ev.PromptAdded), _one(events, ev.ResponseAdded)
    assert prompt.content == otel.NOT_CAPTURED
    assert prompt.metadata.custom["messages"] == []
    assert (response.content, response.usage, response.model, response.finish_reason) == (
        "",
        ev.TokenUsage(12, 7),
        "gpt-4o-2024-08-06",
        "stop",
    )
    assert response.latency_ms is not None and response.latency_ms >= 0


def test_an_input_that_ends_with_the_assistant_is_a_prompt_of_no_new_input(
    tmp_path: Path,
) -> None:
    """A call that continues the assistant's own message adds nothing new; the messages
    are kept whole."""
    history = (
        '[{"role": "user", "parts": [{"type": "text", "content": "Hi"}]},'
        ' {"role": "assistant", "parts": [{"type": "text", "content": "Hel"}]}]'
    )
    prompt = _one(_mapped(tmp_path / "s", {"gen_ai.input.messages": history}), ev.PromptAdded)
    assert prompt.content == otel.NO_NEW_INPUT
    assert [m["content"] for m in prompt.metadata.custom["messages"]] == ["Hi", "Hel"]


def _under_agent(store: Path, agent: dict[str, Any], span_name: str) -> list[ev.EventBase]:
    with eventlog.open(store, durability=eventlog.Durability.NONE) as log:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(otel.Exporter(log)))
        tracer = provider.get_tracer("test")
        attributes = {"gen_ai.operation.name": "invoke_agent", **agent}
        with (
            tracer.start_as_current_span(span_name, attributes=attributes),
            tracer.start_as_current_span("chat m", attributes=_CHAT),
        ):
            pass
        provider.shutdown()
        return [record.event for record in log.read()]


@pytest.mark.parametrize("span_name", ["invoke_agent", "invoke_agent ", ""])
def test_an_agent_span_that_names_no_agent_gives_its_turn_none(
    tmp_path: Path, span_name: str
) -> None:
    """The conventions name such a span bare ``invoke_agent``: that is no agent's name (it
    made an agent called "invoke_agent", or one with an empty name, before)."""
    events = _under_agent(tmp_path / "s", {}, span_name)
    assert not [e for e in events if isinstance(e, ev.AgentRegistered | ev.AgentAssigned)]
    assert _one(events, ev.ResponseAdded).actor is None


def test_an_agent_span_with_only_an_id_is_the_agent_of_that_id(tmp_path: Path) -> None:
    events = _under_agent(tmp_path / "s", {"gen_ai.agent.id": "asst_42"}, "invoke_agent")
    assert _one(events, ev.AgentRegistered).name == "asst_42"
    assert _one(events, ev.ResponseAdded).actor == "asst_42"


def test_an_unnamed_agent_span_inside_a_named_one_is_passed_over(tmp_path: Path) -> None:
    """Its turns are the named agent's above it: that agent ran them."""
    with eventlog.open(tmp_path / "s", durability=eventlog.Durability.NONE) as log:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(otel.Exporter(log)))
        tracer = provider.get_tracer("test")
        outer = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "Supervisor"}
        inner = {"gen_ai.operation.name": "invoke_agent"}
        with (
            tracer.start_as_current_span("invoke_agent Supervisor", attributes=outer),
            tracer.start_as_current_span("invoke_agent", attributes=inner),
            tracer.start_as_current_span("chat m", attributes=_CHAT),
        ):
            pass
        provider.shutdown()
        events = [record.event for record in log.read()]
    assert _one(events, ev.AgentRegistered).name == "Supervisor"
    assert _one(events, ev.ResponseAdded).actor == "Supervisor"


def test_an_image_in_the_input_is_named_not_taken_for_uncaptured_content(
    tmp_path: Path,
) -> None:
    image = (
        '[{"role": "user", "parts": [{"type": "blob", "modality": "image",'
        ' "mime_type": "image/png", "content": "iVBORw0KGgo="}]}]'
    )
    prompt = _one(_mapped(tmp_path / "s", {"gen_ai.input.messages": image}), ev.PromptAdded)
    assert prompt.content == "[image]"
    openinference = {
        "gen_ai.input.messages": "",
        "llm.input_messages.0.message.role": "user",
        "llm.input_messages.0.message.contents.0.message_content.type": "text",
        "llm.input_messages.0.message.contents.0.message_content.text": "What is this?",
        "llm.input_messages.0.message.contents.1.message_content.type": "image",
    }
    prompt = _one(_mapped(tmp_path / "t", openinference), ev.PromptAdded)
    assert prompt.content == "What is this?\n[image]"


def test_a_tool_result_without_content_completes_its_call_with_no_result(
    tmp_path: Path,
) -> None:
    """Content capture off: the tool message carries its call id and no text. The call is
    completed (the model got its result) with no result, not an empty string."""
    call = '{"role": "assistant", "parts": [{"type": "tool_call", "id": "call_1", "name": "f"}]}'
    asked = {"gen_ai.operation.name": "chat", "gen_ai.output.messages": f"[{call}]"}
    answered = {
        "gen_ai.operation.name": "chat",
        "gen_ai.input.messages": (
            f'[{{"role": "user", "parts": []}}, {call},'
            ' {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1"}]}]'
        ),
    }
    with eventlog.open(tmp_path / "s", durability=eventlog.Durability.NONE) as log:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(otel.Exporter(log)))
        tracer = provider.get_tracer("test")
        with tracer.start_as_current_span("turns"):
            for attributes in (asked, answered):
                with tracer.start_as_current_span("chat m", attributes=attributes):
                    pass
        provider.shutdown()
        events = [record.event for record in log.read()]
    assert _one(events, ev.ToolInvoked).tool_name == "f"
    assert _one(events, ev.ToolCompleted).result is None
    prompts = [e.content for e in events if isinstance(e, ev.PromptAdded)]
    assert prompts == [otel.NOT_CAPTURED, otel.NOT_CAPTURED]


@pytest.mark.parametrize("bad", ["inf", "-inf", "nan", "1e30", 2**70])
def test_a_count_past_64_bits_or_no_number_is_absent_and_keeps_the_turn(
    tmp_path: Path, bad: Any
) -> None:
    """Before, ``"inf"`` raised inside the mapping and ``"1e30"`` was refused by the log:
    either lost every turn of the trace."""
    events = _mapped(
        tmp_path / "s", {"gen_ai.usage.output_tokens": bad, "gen_ai.request.max_tokens": bad}
    )
    assert _one(events, ev.PromptAdded).metadata.max_tokens is None
    assert _one(events, ev.ResponseAdded).usage == ev.TokenUsage(0, 0)
