"""The span-to-event mapping (`eventlog._genai`) and its writer (`eventlog._ingest`).

Properties: a trace's events do not depend on the order or batches its spans arrive in, and
a retried batch adds nothing. Named cases: every span is kept, a malformed span never fails
its neighbours, content past the limits is cut with a marker, each convention's spellings.
"""

from __future__ import annotations

import itertools
import json
import random
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventlog
from eventlog import events as ev
from eventlog._ingest import Ingester
from eventlog._spans import (
    MAX_DEPTH,
    MAX_TEXT_BYTES,
    Malformed,
    Span,
    decode_json_line,
    decode_protobuf,
)
from projections import MemoryGraph

from ._traces import genai_trace

_PLAIN = msgspec.json.Encoder(uuid_format="canonical")


def stored(log: eventlog.EventLog) -> list[Any]:
    """The log's events as plain values, without `ts` (the time of the append)."""
    out = []
    for record in log.read():
        raw = msgspec.json.decode(_PLAIN.encode(record.event))
        raw.pop("ts", None)
        out.append(raw)
    return out


def ingest(batches: list[list[Span]], *, on_root: bool = True) -> list[Any]:
    with eventlog.open(tempfile.mkdtemp(), durability=eventlog.Durability.NONE) as log:
        ingester = Ingester(log, flush_on_root=on_root)
        for batch in batches:
            ingester.add(batch)
        ingester.flush()
        before = stored(log)
        for batch in batches:  # the exporter retries everything after a timeout
            ingester.add(batch)
        ingester.flush()
        assert stored(log) == before, "a retried batch added events"
        return before


def _split(spans: list[Span], cuts: list[int]) -> list[list[Span]]:
    points = sorted({c % (len(spans) + 1) for c in cuts})
    edges = [0, *points, len(spans)]
    return [spans[a:b] for a, b in itertools.pairwise(edges) if b > a]


_TRACE = genai_trace(random.Random(7), conversation="c-1")
_EXPECTED = ingest([_TRACE])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order=st.permutations(_TRACE[1:]), cuts=st.lists(st.integers(0, 10), max_size=4))
def test_events_do_not_depend_on_order_or_batches_when_the_root_comes_last(
    order: list[Span], cuts: list[int]
) -> None:
    """What an SDK does: children in any order and batches, the root span last."""
    assert ingest(_split([*order, _TRACE[0]], cuts)) == _EXPECTED


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order=st.permutations(_TRACE), cuts=st.lists(st.integers(0, 10), max_size=4))
def test_events_do_not_depend_on_order_or_batches_read_from_files(
    order: list[Span], cuts: list[int]
) -> None:
    """What a file holds: any order, the root anywhere; mapped when the files are read."""
    assert ingest(_split(order, cuts), on_root=False) == _EXPECTED


_FIRST_SEEN = ("session.created", "agent.registered")


def live(events: list[Any]) -> list[Any]:
    """The events as a set: tombstoned handoffs and their tombstones left out (a turn that
    arrives late retracts the handoff it came between), the rest sorted. A session or agent
    named by many traces is made by the first to arrive: its time is that trace's."""
    gone = {e["node_id"] for e in events if e["type"] == "node.deleted"}
    kept = [e for e in events if e["type"] != "node.deleted" and e.get("id") not in gone]
    kept = [{**e, "occurred_at": None} if e["type"] in _FIRST_SEEN else e for e in kept]
    return sorted(kept, key=lambda e: json.dumps(e, sort_keys=True))


_SESSION_RNG = random.Random(11)
_SESSION = [  # one conversation, three traces (turns: triage, writer in each)
    genai_trace(_SESSION_RNG, 1_760_000_000_000_000_000 + i * 10**12, conversation="c-2")
    for i in range(3)
]
_SESSION_EXPECTED = live(ingest(_SESSION))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    traces=st.permutations(range(3)),
    order=st.randoms(use_true_random=False),
    cuts=st.lists(st.integers(0, 21), max_size=6),
)
def test_handoffs_of_a_session_over_many_traces_do_not_depend_on_order_or_batches(
    traces: list[int], order: random.Random, cuts: list[int]
) -> None:
    """Traces of one session arrive in any order, their spans in any order and batches, each
    root last: the live handoffs are those of the whole session (writer -> triage across
    traces too), and a retried batch adds nothing."""
    spans = [s for t in traces for s in _SESSION[t][1:]]
    order.shuffle(spans)
    spans += [_SESSION[t][0] for t in traces]
    assert live(ingest(_split(spans, cuts))) == _SESSION_EXPECTED
    handoffs = [e for e in _SESSION_EXPECTED if e["type"] == "agent.handoff"]
    assert len(handoffs) == 5  # triage -> writer in each trace, writer -> triage between


def test_a_session_continued_in_a_later_ingest_hands_off_from_its_stored_turns(
    tmp_path: Path,
) -> None:
    """Each run of `lmg ingest` is a fresh ingester: the session's earlier turns are read
    from the log. The later trace first, then the earlier one: the handoff the first run
    made between them is retracted."""
    first, second, third = _SESSION
    with MemoryGraph.open(tmp_path / "s") as g:
        for trace in (first, third, second):
            Ingester(g).add(trace)
        rows = g.rows(
            "SELECT from_agent_id = (SELECT id FROM agents WHERE name = 'writer') "
            "FROM handoffs WHERE deleted_ts IS NULL"
        )
        assert sorted(rows) == [(False,)] * 3 + [(True,)] * 2
        assert g.rows("SELECT name, handoffs_out, handoffs_in FROM agent_stats ORDER BY name") == [
            ("triage", 3, 2),
            ("writer", 2, 3),
        ]
        assert g.rows("SELECT count(*) FROM handoffs WHERE deleted_ts IS NOT NULL") == [(1,)]


def test_a_trace_maps_to_sessions_prompts_responses_tools_agents_and_a_handoff(
    tmp_path: Path,
) -> None:
    with MemoryGraph.open(tmp_path / "s") as g:
        Ingester(g).add(_TRACE)
        assert g.rows("SELECT count(*) FROM spans") == [(7,)]
        assert g.rows(
            "SELECT p.content, r.content, r.prompt_tokens, r.completion_tokens, r.finish_reason, "
            "r.latency_ms, r.model FROM prompts p JOIN responses r ON r.prompt_id = p.id "
            "ORDER BY p.occurred_at"
        ) == [
            ("Weather in Lima?", "", 40, 12, "tool_call", 198.0, "gpt-4o-2024-08-06"),
            ("sunny", "Sunny in Lima.", 60, 9, "stop", 396.0, "gpt-4o-2024-08-06"),
        ]
        assert g.rows(
            "SELECT tool_name, parameters->>'city', status, result, duration_ms "
            "FROM tool_invocations"
        ) == [("weather", "Lima", "success", '"sunny"', 190.0)]
        assert g.rows(
            "SELECT name, responses, handoffs_out, handoffs_in FROM agent_stats ORDER BY name"
        ) == [("triage", 1, 1, 0), ("writer", 1, 0, 1)]
        assert g.rows("SELECT metadata->>'conversation_id', tags FROM sessions") == [
            ("c-1", ["otel"])
        ]


def test_turns_of_one_conversation_in_two_traces_share_a_session(tmp_path: Path) -> None:
    rng = random.Random(3)
    with MemoryGraph.open(tmp_path / "s") as g:
        ingester = Ingester(g)
        ingester.add(genai_trace(rng, conversation="same"))
        ingester.add(genai_trace(rng, 1_760_000_100_000_000_000, conversation="same"))
        ingester.add(genai_trace(rng, 1_760_000_200_000_000_000))  # no conversation id
        assert g.rows("SELECT prompt_count FROM sessions ORDER BY prompt_count") == [(2,), (4,)]


def test_a_malformed_span_is_counted_and_its_neighbours_are_kept(log: eventlog.EventLog) -> None:
    good = {"traceId": "ab" * 16, "spanId": "cd" * 8, "name": "ok"}
    bad = {"traceId": "not hex", "spanId": "cd" * 8, "name": "bad"}
    line = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [bad, good]}]}]})
    ingester = Ingester(log)
    ingester.add(decode_json_line(line))
    ingester.add(decode_json_line("{not json"))
    assert (ingester.stats.malformed, ingester.stats.spans) == (2, 1)
    assert [e.name for _, e in log.read() if isinstance(e, ev.SpanRecorded)] == ["ok"]


def test_content_past_the_limit_is_cut_with_a_marker(log: eventlog.EventLog) -> None:
    image = "A" * (MAX_TEXT_BYTES + 5_000)
    span = {
        "traceId": "ab" * 16,
        "spanId": "cd" * 8,
        "name": "chat",
        "attributes": [
            {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
            {"key": "gen_ai.prompt.0.content", "value": {"stringValue": image}},
            {"key": "big", "value": {"intValue": str(2**70)}},
            {"key": "nan", "value": {"doubleValue": "NaN"}},
        ],
    }
    line = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]})
    Ingester(log).add(decode_json_line(line))
    prompt = next(e for _, e in log.read() if isinstance(e, ev.PromptAdded))
    assert prompt.content.endswith("...[truncated 5000 bytes]")
    assert len(prompt.content) < MAX_TEXT_BYTES + 100
    recorded = next(e for _, e in log.read() if isinstance(e, ev.SpanRecorded))
    assert recorded.attributes["big"] == str(2**70)


def test_a_tool_result_naming_an_unknown_call_keeps_its_span(log: eventlog.EventLog) -> None:
    messages = [
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "x", "response": 1}]}
    ]
    span = Span(
        trace_id="ab" * 16,
        span_id="cd" * 8,
        name="chat",
        attributes={"gen_ai.operation.name": "chat", "gen_ai.input.messages": json.dumps(messages)},
    )
    ingester = Ingester(log)
    ingester.add([span])
    assert ingester.stats.partial == 1
    assert {type(e).__name__ for _, e in log.read()} == {
        "SpanRecorded",
        "SessionCreated",
        "PromptAdded",
        "ResponseAdded",
    }


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        pytest.param(
            {
                "openinference.span.kind": "LLM",
                "llm.model_name": "gpt-4o",
                "llm.input_messages.0.message.role": "user",
                "llm.input_messages.0.message.content": "hi",
                "llm.output_messages.0.message.role": "assistant",
                "llm.output_messages.0.message.content": "hello",
                "llm.token_count.prompt": 3,
                "llm.token_count.completion": 2,
                "session.id": "s1",
            },
            ("hi", "hello", 3, 2, "gpt-4o"),
            id="openinference",
        ),
        pytest.param(
            {
                "llm.request.type": "chat",
                "gen_ai.system": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.prompt.0.role": "user",
                "gen_ai.prompt.0.content": "hi",
                "gen_ai.completion.0.role": "assistant",
                "gen_ai.completion.0.content": "hello",
                "gen_ai.completion.0.finish_reason": "stop",
                "gen_ai.usage.prompt_tokens": 3,
                "gen_ai.usage.completion_tokens": 2,
            },
            ("hi", "hello", 3, 2, "gpt-4o"),
            id="openllmetry-legacy",
        ),
    ],
)
def test_each_convention_gives_the_same_turn(
    tmp_path: Path, attributes: dict[str, Any], expected: tuple[Any, ...]
) -> None:
    span = Span(trace_id="ab" * 16, span_id="cd" * 8, name="chat", attributes=attributes)
    with MemoryGraph.open(tmp_path / "s") as g:
        Ingester(g).add([span])
        assert g.rows(
            "SELECT p.content, r.content, r.prompt_tokens, r.completion_tokens, r.model "
            "FROM prompts p JOIN responses r ON r.prompt_id = p.id"
        ) == [expected]


def test_malformed_entries_are_reported_not_raised() -> None:
    found = list(decode_json_line(b'{"resourceSpans": [{"scopeSpans": [{"spans": [1]}]}]}'))
    assert len(found) == 1 and isinstance(found[0], Malformed)


def test_values_the_log_refuses_are_kept_as_text(log: eventlog.EventLog) -> None:
    """Nesting past the limit and NaN are bounded when decoded, never refused (a lone
    surrogate cannot come through OTLP JSON: msgspec refuses the line, reported as malformed)."""
    deep: dict[str, Any] = {"stringValue": "bottom"}
    for _ in range(100):
        deep = {"kvlistValue": {"values": [{"key": "k", "value": deep}]}}
    span = {
        "traceId": "ab" * 16,
        "spanId": "cd" * 8,
        "name": "odd values",
        "attributes": [
            {"key": "deep", "value": deep},
            {"key": "nan", "value": {"doubleValue": "NaN"}},
        ],
    }
    line = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]})
    ingester = Ingester(log)
    ingester.add(decode_json_line(line))
    assert (ingester.stats.spans, ingester.stats.partial) == (1, 0)
    recorded = next(e for _, e in log.read() if isinstance(e, ev.SpanRecorded))
    assert recorded.attributes["nan"] == "NaN"  # OTLP JSON writes it as a string
    level: Any = recorded.attributes
    depth = 0
    while isinstance(level, dict):
        level, depth = level.get("deep", level.get("k")), depth + 1
    assert depth == MAX_DEPTH
    assert isinstance(level, str) and level.startswith('{"k":')


def test_buffered_spans_are_bounded_while_a_file_is_read(log: eventlog.EventLog) -> None:
    """With `max_pending_spans` reached mid-batch, the oldest traces are written at once."""
    rng = random.Random(11)
    traces = [genai_trace(rng, conversation=f"c{i}") for i in range(5)]
    seen: list[int] = []

    def spans() -> Any:
        for trace in traces:
            yield from trace
            seen.append(log.next_lsn())

    ingester = Ingester(log, flush_on_root=False, max_pending_spans=10)
    ingester.add(spans())
    assert seen[1] > 0  # written while the batch was still being read
    ingester.flush()
    assert ingester.stats.spans == 35


_NAMES = [
    "gen_ai.operation.name", "gen_ai.input.messages", "gen_ai.output.messages",
    "gen_ai.system_instructions", "gen_ai.response.finish_reasons", "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens", "gen_ai.conversation.id", "gen_ai.agent.name",
    "gen_ai.tool.name", "gen_ai.tool.call.id", "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result", "gen_ai.tool.definitions", "gen_ai.request.temperature",
    "gen_ai.request.max_tokens", "openinference.span.kind", "llm.input_messages.0.message.role",
    "llm.input_messages.0.message.content",
    "llm.output_messages.0.message.tool_calls.0.tool_call.id",
    "llm.invocation_parameters", "llm.tools.0.tool.json_schema", "llm.token_count.prompt",
    "gen_ai.prompt.0.content", "gen_ai.completion.0.tool_calls.0.arguments", "session.id",
    "traceloop.span.kind", "llm.request.type", "gen_ai.system", "input.value", "output.value",
]  # fmt: skip
_LEAF = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
_JSONISH = st.recursive(
    _LEAF, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3)
)
_VALUES = (
    _LEAF
    | st.lists(_LEAF, max_size=3)
    | _JSONISH.map(json.dumps)
    | st.sampled_from(["chat", "execute_tool", "invoke_agent", "LLM", "TOOL", "AGENT", "tool"])
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.dictionaries(st.sampled_from(_NAMES), _VALUES), st.integers(0, 3)),
        min_size=1,
        max_size=5,
    )
)
@pytest.mark.slow
def test_any_attribute_values_map_without_raising(spans: list[tuple[dict[str, Any], int]]) -> None:
    """Whatever shape an instrumentation gives a known attribute, mapping never raises."""
    from eventlog._genai import map_trace  # noqa: PLC0415
    from eventlog._spans import bound_attributes  # noqa: PLC0415

    ids = [f"{i + 1:016x}" for i in range(len(spans))]
    trace = [
        Span(
            trace_id="ab" * 16,
            span_id=ids[i],
            parent_span_id=ids[parent] if i > 0 and parent < i else None,
            name="s",
            start_ns=i,
            end_ns=i + 1,
            attributes=bound_attributes(attributes),
        )
        for i, (attributes, parent) in enumerate(spans)
    ]
    units = map_trace(trace)
    assert sum(isinstance(e, ev.SpanRecorded) for u in units for e in u.events) == len(trace)


def test_a_trace_whose_mapping_fails_keeps_its_spans(
    log: eventlog.EventLog, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import eventlog._ingest as ingest  # noqa: PLC0415

    def broken(spans: Any) -> Any:
        raise KeyError("an attribute shape nobody foresaw")

    monkeypatch.setattr(ingest, "map_trace", broken)
    ingester = Ingester(log)
    ingester.add(_TRACE)
    assert (ingester.stats.spans, ingester.stats.partial) == (7, 1)
    assert "stored as spans only" in caplog.text


def test_a_late_span_is_mapped_with_its_written_trace_as_context(tmp_path: Path) -> None:
    """The tool span comes after its trace was written: the call it answers was completed
    from the next turn's input meanwhile, so only its span is added; nothing written
    before changes."""
    late = next(s for s in _TRACE if s.name.startswith("execute_tool"))
    with MemoryGraph.open(tmp_path / "s") as g:
        ingester = Ingester(g)
        ingester.add([s for s in _TRACE if s is not late])
        assert g.rows("SELECT status FROM tool_invocations") == [("success",)]  # by message
        before = g.next_lsn()
        ingester.add([late])
        assert [type(e).__name__ for _, e in g.read(before)] == ["SpanRecorded"]
        assert g.rows("SELECT count(*) FROM spans") == [(7,)]


def test_protobuf_and_json_requests_decode_to_the_same_spans() -> None:
    """The protobuf decoder builds spans straight from the message (no JSON detour): the
    same requests give the same spans, attributes, events, ids and times."""
    pytest.importorskip("opentelemetry.proto")
    from ._otlp import proto_stream  # noqa: PLC0415 (needs opentelemetry.proto)

    spans = [*_TRACE, *genai_trace(random.Random(8), conversation="c-2")]
    decoded = list(decode_protobuf(proto_stream([spans]), "file"))
    as_json = msgspec.json.encode  # tuples in the test's spans are lists once decoded
    assert msgspec.json.decode(as_json(decoded)) == msgspec.json.decode(as_json(spans))


def test_an_otlp_request_is_stored_in_one_group_commit(
    log: eventlog.EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``record_first`` (the service's route), a request holding a whole trace and the
    children of a trace still waiting for its root costs one write and one fsync."""
    commits: list[int] = []
    commit = log._store.commit

    def counted(requests: list[Any]) -> Any:
        commits.append(len(requests))
        return commit(requests)

    monkeypatch.setattr(log._store, "commit", counted)
    waiting = genai_trace(random.Random(9), conversation="c-3")[1:]  # no root yet
    ingester = Ingester(log, record_first=True)
    ingester.add([*_TRACE, *waiting])
    assert len(commits) == 1
    assert ingester.stats.spans == len(_TRACE) + len(waiting)


_WINS = {  # docs/ingest.md's order: where conventions disagree, the first non-empty wins
    "provider": ("gen_ai.provider.name", "llm.provider", "llm.system", "gen_ai.system"),
    "request_model": ("gen_ai.request.model", "llm.model_name", "llm.request.model"),
    "response_model": (
        "gen_ai.response.model",
        "llm.model_name",
        "llm.response.model",
        "gen_ai.request.model",
    ),
    "input_tokens": (
        "gen_ai.usage.input_tokens",
        "llm.token_count.prompt",
        "gen_ai.usage.prompt_tokens",
    ),
    "output_tokens": (
        "gen_ai.usage.output_tokens",
        "llm.token_count.completion",
        "gen_ai.usage.completion_tokens",
    ),
    "response_id": ("gen_ai.response.id",),
}
_TOKENS = {"input_tokens", "output_tokens"}
_WIN_NAMES = sorted({name for names in _WINS.values() for name in names})


def _winner(attributes: dict[str, Any], field: str) -> Any:
    return next((attributes[n] for n in _WINS[field] if attributes.get(n) not in (None, "")), None)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_where_conventions_disagree_the_documented_one_wins_in_any_order(data: Any) -> None:
    """A chat span naming one value in several conventions at once (the golden files have
    each convention alone): the mapping reads each span's attributes in one pass, and which
    convention wins must not depend on the order the attributes come in."""
    from eventlog._genai import map_trace  # noqa: PLC0415

    names = data.draw(st.lists(st.sampled_from(_WIN_NAMES), unique=True))
    attributes: dict[str, Any] = {"gen_ai.operation.name": "chat"}
    for name in names:  # in the drawn order: the pass must not care
        tokens = name.startswith(("gen_ai.usage.", "llm.token_count."))
        empty = st.none() | st.just("")
        attributes[name] = data.draw(
            empty | st.integers(0, 10**6) if tokens else empty | st.text(min_size=1, max_size=4)
        )
    span = Span(trace_id="ab" * 16, span_id="cd" * 8, name="chat", attributes=attributes)
    (unit,) = [u for u in map_trace([span]) if len(u.events) > 1]
    prompt, response = unit.events[1], unit.events[2]
    assert isinstance(prompt, ev.PromptAdded)
    assert isinstance(response, ev.ResponseAdded)
    assert prompt.metadata is not None
    assert prompt.metadata.model == _winner(attributes, "request_model")
    assert prompt.metadata.custom.get("provider") == _winner(attributes, "provider")
    assert response.model == _winner(attributes, "response_model")
    assert response.usage == ev.TokenUsage(
        _winner(attributes, "input_tokens") or 0, _winner(attributes, "output_tokens") or 0
    )
    assert response.metadata.get("response_id") == _winner(attributes, "response_id")


def test_an_attribute_read_as_a_field_is_in_no_group_but_the_main_token_counts() -> None:
    """`_genai._walk` gives each attribute to the fields that read it, else to its prefixed
    group: an attribute both would lose its group entry, which only the main token counts
    (`TokenUsage`'s own, left out of the usage details) may."""
    from eventlog import _genai  # noqa: PLC0415

    both = {name for name in _genai._SLOTS if name.startswith(_genai._FAMILIES)}
    assert both <= _genai._USAGE_MAIN
