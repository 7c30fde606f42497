"""GenAI events sent through the OpenTelemetry logs API (`eventlog._logs`).

A chat span plus the log records naming it maps as the same span carrying those records as
span events; the records may come before or after their spans (in one flush), in any batches;
every record is kept as an ``otel.log`` node, and a retry adds nothing.
"""

from __future__ import annotations

import itertools
import json
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventlog
from eventlog._ingest import Ingester
from eventlog._logs import LogRecord, decode_logs_json_line, is_logs_json
from eventlog._spans import Span, SpanEvent
from projections import MemoryGraph
from replay.cli import main

from .test_otel_golden import GOLDEN, events_of
from .test_otel_mapping import stored

_T = "0af7651916cd43dd8448eb211c80319c"
_ROOT, _CHAT, _HTTP = "b7ad6b7169203331", "00f067aa0ba902b7", "53995c3f42cd8ad8"
_NS = 1_760_000_000_000_000_000
_MS = 1_000_000
_SPANS = [
    Span(trace_id=_T, span_id=_ROOT, name="invoke_workflow", start_ns=_NS, end_ns=_NS + 90 * _MS,
         attributes={"gen_ai.operation.name": "invoke_workflow", "gen_ai.conversation.id": "c"}),
    Span(trace_id=_T, span_id=_CHAT, parent_span_id=_ROOT, name="chat gpt-4o", kind="client",
         start_ns=_NS + _MS, end_ns=_NS + 80 * _MS,
         attributes={"gen_ai.system": "openai", "gen_ai.operation.name": "chat",
                     "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 12,
                     "gen_ai.usage.output_tokens": 7, "gen_ai.response.finish_reasons": ["stop"]}),
    Span(trace_id=_T, span_id=_HTTP, parent_span_id=_CHAT, name="POST", kind="client",
         start_ns=_NS + 2 * _MS, end_ns=_NS + 70 * _MS),
]  # fmt: skip
_EVENTS = [  # the older conventions' GenAI events, as bodies
    ("gen_ai.user.message", {"content": "Where is Lima?"}),
    ("gen_ai.choice", {"index": 0, "finish_reason": "stop",
                       "message": {"role": "assistant", "content": "In Peru."}}),
]  # fmt: skip


def _record(i: int, name: str, body: Any, span: str = _CHAT) -> LogRecord:
    return LogRecord(
        trace_id=_T,
        span_id=span,
        time_ns=_NS + (10 + i) * _MS,
        event_name=name,
        body=body,
        attributes={"gen_ai.system": "openai"},
        scope="tests",
    )


_LOGS = [_record(i, name, body) for i, (name, body) in enumerate(_EVENTS)]


def _with_span_events() -> list[Span]:
    """The same call told with span events instead of log records."""
    events = [SpanEvent(r.event_name, r.time_ns, {**r.attributes, **r.body}) for r in _LOGS]
    return [msgspec.structs.replace(s, events=events) if s.span_id == _CHAT else s for s in _SPANS]


_TURN = "SELECT p.content, p.metadata->>'system', r.content, r.prompt_tokens, r.finish_reason "
_TURN += "FROM prompts p JOIN responses r ON r.prompt_id = p.id"


def test_a_chat_span_with_its_log_records_maps_like_one_with_span_events(tmp_path: Path) -> None:
    with MemoryGraph.open(tmp_path / "logs") as g:
        ingester = Ingester(g)
        ingester.add_logs(_LOGS)  # emitted during the call, before its span ends
        ingester.add(_SPANS[::-1])
        from_logs = g.rows(_TURN)
        assert g.rows("SELECT count(*) FROM spans WHERE events <> '[]'") == [(0,)]  # as received
    with MemoryGraph.open(tmp_path / "events") as g:
        Ingester(g).add(_with_span_events()[::-1])
        assert g.rows(_TURN) == from_logs == [("Where is Lima?", None, "In Peru.", 12, "stop")]


def test_every_log_record_is_kept_as_a_node_and_a_retry_adds_nothing(tmp_path: Path) -> None:
    alone = LogRecord(time_ns=_NS, event_name="app.started", body="ready", severity="INFO")
    with MemoryGraph.open(tmp_path / "s") as g:
        ingester = Ingester(g)
        for _ in range(2):  # the exporter retries everything after a timeout
            ingester.add_logs([*_LOGS, alone])
            ingester.add(_SPANS)
        assert g.rows(
            "SELECT data->>'event_name', content, data->>'span_id', data->'body'->>'content' "
            "FROM nodes WHERE kind = 'otel.log' ORDER BY occurred_at, data->>'event_name'"
        ) == [
            ("app.started", "ready", None, None),
            ("gen_ai.user.message", None, _CHAT, "Where is Lima?"),
            ("gen_ai.choice", None, _CHAT, None),
        ]
        assert ingester.stats.logs == 6
        assert g.rows("SELECT count(*) FROM prompts") == [(1,)]


def test_the_newer_inference_details_event_gives_the_turn(tmp_path: Path) -> None:
    details = _record(
        0,
        "gen_ai.client.inference.operation.details",
        None,
    )
    messages = {
        "gen_ai.input.messages": [
            {"role": "user", "parts": [{"type": "text", "content": "Where is Lima?"}]}
        ],
        "gen_ai.output.messages": [
            {"role": "assistant", "parts": [{"type": "text", "content": "In Peru."}]}
        ],
    }
    details = msgspec.structs.replace(details, attributes=messages)
    with MemoryGraph.open(tmp_path / "s") as g:
        ingester = Ingester(g)
        ingester.add_logs([details])
        ingester.add(_SPANS)
        assert g.rows(_TURN) == [("Where is Lima?", None, "In Peru.", 12, "stop")]


def test_a_log_record_after_its_trace_was_written_is_kept_alone(tmp_path: Path) -> None:
    """The trace was mapped when its root came: a record naming it afterwards can no longer
    reach its turn (the prompt is stored), but it is kept."""
    with MemoryGraph.open(tmp_path / "s") as g:
        ingester = Ingester(g)
        ingester.add_logs(_LOGS[:1])  # the question, in time
        ingester.add(_SPANS)
        before = g.next_lsn()
        ingester.add_logs(_LOGS[1:])  # the answer, too late
        assert [type(e).__name__ for _, e in g.read(before)] == ["NodeAdded"]
        assert g.rows(_TURN) == [("Where is Lima?", None, "", 12, "stop")]
        assert g.rows("SELECT count(*) FROM nodes WHERE kind = 'otel.log'") == [(2,)]


def _ingest(batches: list[list[Span | LogRecord]], on_root: bool) -> list[Any]:
    with eventlog.open(tempfile.mkdtemp(), durability=eventlog.Durability.NONE) as log:
        ingester = Ingester(log, flush_on_root=on_root)
        for batch in batches * 2:  # and again: a retry adds nothing
            ingester.add_logs([i for i in batch if isinstance(i, LogRecord)])
            ingester.add([i for i in batch if isinstance(i, Span)])
        ingester.flush()
        return sorted(stored(log), key=lambda e: json.dumps(e, sort_keys=True))


def _split(items: list[Any], cuts: list[int]) -> list[list[Any]]:
    points = sorted({c % (len(items) + 1) for c in cuts})
    return [items[a:b] for a, b in itertools.pairwise([0, *points, len(items)]) if b > a]


_EXPECTED = _ingest([[*_LOGS, *_SPANS]], on_root=False)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order=st.permutations([*_LOGS, *_SPANS]), cuts=st.lists(st.integers(0, 6), max_size=3))
def test_log_records_before_or_after_their_spans_give_the_same_events(
    order: list[Span | LogRecord], cuts: list[int]
) -> None:
    """Read from files (mapped once all are read): records and spans in any order."""
    assert _ingest(_split(order, cuts), on_root=False) == _EXPECTED


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order=st.permutations([*_LOGS, *_SPANS[1:]]), cuts=st.lists(st.integers(0, 5), max_size=3))
def test_log_records_before_the_root_give_the_same_events_in_process(
    order: list[Span | LogRecord], cuts: list[int]
) -> None:
    """What `instrument()` does: records and child spans in any order, the root last."""
    assert _ingest(_split([*order, _SPANS[0]], cuts), on_root=True) == _EXPECTED


# -- files ----------------------------------------------------------------------------------


def _lmg_ingest(store: Path, *files: Path) -> None:
    result = CliRunner().invoke(main, ["ingest", str(store), *map(str, files)])
    assert result.exit_code == 0, result.output


def _plain(events: list[Any]) -> list[Any]:
    return sorted(events, key=lambda e: json.dumps(e, sort_keys=True))


def test_a_logs_file_after_its_traces_file_maps_like_one_file(tmp_path: Path) -> None:
    golden = GOLDEN / "openllmetry-openai-events.jsonl"
    lines = golden.read_bytes().splitlines(keepends=True)
    (tmp_path / "traces.jsonl").write_bytes(b"".join(x for x in lines if not is_logs_json(x)))
    (tmp_path / "logs.jsonl").write_bytes(b"".join(x for x in lines if is_logs_json(x)))
    _lmg_ingest(tmp_path / "split", tmp_path / "traces.jsonl", tmp_path / "logs.jsonl")
    _lmg_ingest(tmp_path / "one", golden)
    assert _plain(events_of(tmp_path / "split")) == _plain(events_of(tmp_path / "one"))


def test_a_protobuf_logs_file_maps_like_its_json(tmp_path: Path) -> None:
    pytest.importorskip("opentelemetry.proto")
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (  # noqa: PLC0415
        ExportLogsServiceRequest,
    )

    golden = GOLDEN / "openllmetry-openai-events.jsonl"
    lines = golden.read_bytes().splitlines(keepends=True)
    request = ExportLogsServiceRequest()
    scope = request.resource_logs.add().scope_logs.add()
    for line in filter(is_logs_json, lines):
        for r in decode_logs_json_line(line):
            assert isinstance(r, LogRecord)
            p = scope.log_records.add()
            p.time_unix_nano, p.event_name = r.time_ns, r.event_name
            p.trace_id, p.span_id = bytes.fromhex(r.trace_id or ""), bytes.fromhex(r.span_id or "")
            _body(p.body, r.body)
    (tmp_path / "logs.pb").write_bytes(request.SerializeToString())
    (tmp_path / "traces.jsonl").write_bytes(b"".join(x for x in lines if not is_logs_json(x)))
    _lmg_ingest(tmp_path / "pb", tmp_path / "logs.pb", tmp_path / "traces.jsonl")
    _lmg_ingest(tmp_path / "json", golden)
    turns = "SELECT p.content, r.content, r.finish_reason FROM prompts p JOIN responses r "
    turns += "ON r.prompt_id = p.id ORDER BY p.occurred_at"
    with MemoryGraph.open(tmp_path / "pb") as a, MemoryGraph.open(tmp_path / "json") as b:
        assert a.rows(turns) == b.rows(turns)
        assert a.rows("SELECT count(*) FROM nodes WHERE kind = 'otel.log'") == [(6,)]


def _body(target: Any, value: Any) -> None:
    """`value` into a protobuf `AnyValue`."""
    if isinstance(value, dict):
        for k, v in value.items():
            kv = target.kvlist_value.values.add()
            kv.key = k
            _body(kv.value, v)
    elif isinstance(value, list):
        for v in value:
            _body(target.array_value.values.add(), v)
    elif isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        target.int_value = value
    elif isinstance(value, str):
        target.string_value = value
