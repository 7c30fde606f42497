"""Idempotency of ingest when a trace is one request (docs/ingest.md, Order, batches and retries).

A trace's events are appended as one request keyed ``otel:trace:<trace>`` (then ``:2``, ...
for spans that come after it was written). Stores written before that hold one request per
span, keyed ``otel:<trace>:<span>``: ingesting the same spans into them again still adds
nothing, and so does ingesting more of a trace in a later run.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

import eventlog
from eventlog import _ingest as ingest
from eventlog import events as ev
from eventlog._genai import map_trace
from eventlog._handoffs import Handoffs
from eventlog._ingest import Ingester, _request
from eventlog._spans import Span
from tests.test_cli import json_lines, lmg

from ._otlp import proto_stream
from ._traces import genai_trace

pytest.importorskip("opentelemetry.proto")  # proto_stream writes OTLP protobuf

_TRACES = [genai_trace(random.Random(21 + i), conversation=f"keys-{i}") for i in range(3)]
_PLAIN = [  # a trace without GenAI spans: no node id can tell that its spans are stored
    Span(
        trace_id="ef" * 16,
        span_id=f"{i:016x}",
        parent_span_id=None if i == 1 else f"{1:016x}",
        name=f"GET /{i}",
        start_ns=10**18 + i,
        end_ns=10**18 + 10,
    )
    for i in range(1, 4)
]


def _file(tmp_path: Path, name: str, traces: list[list[Span]]) -> str:
    path = tmp_path / name
    path.write_bytes(proto_stream(traces))
    return str(path)


def _ingest(store: Path, *files: str) -> None:
    result = lmg("ingest", str(store), *files)
    assert result.exit_code == 0, result.output


def _events(store: Path) -> int:
    with eventlog.open(store) as log:
        return log.next_lsn()


def _unit_by_unit(store: Path, traces: list[list[Span]]) -> None:
    """What ingest stored before a trace was one request: every unit of the mapping (a
    span's events, a session, an agent, a tool call, a handoff) its own keyed request."""
    with eventlog.open(store) as log:
        handoffs = Handoffs(log._store)
        for spans in traces:
            units = map_trace(spans)
            for unit in [*units, *handoffs.after(units)]:
                (result,) = log._store.commit([_request(unit)])
                assert not isinstance(result, Exception), result


def test_a_store_ingested_span_by_span_takes_the_same_spans_again_adding_nothing(
    tmp_path: Path,
) -> None:
    traces = [*_TRACES, _PLAIN]
    _unit_by_unit(tmp_path / "s", traces)
    before = _events(tmp_path / "s")
    _ingest(tmp_path / "s", _file(tmp_path, "all.pb", traces))
    assert _events(tmp_path / "s") == before


def test_a_file_ingested_twice_adds_nothing(tmp_path: Path) -> None:
    path = _file(tmp_path, "all.pb", [*_TRACES, _PLAIN])
    _ingest(tmp_path / "s", path)
    before = _events(tmp_path / "s")
    result = lmg("ingest", str(tmp_path / "s"), path)
    assert "0 spans and 0 events stored" in result.stdout
    assert _events(tmp_path / "s") == before


def _stored_types(store: Path) -> list[str]:
    with eventlog.open(store) as log:
        return [ev.tag_of(type(e)) for _, e in log.read()]


@pytest.mark.parametrize("trace", [_TRACES[0], _PLAIN], ids=["genai", "plain"])
def test_more_of_a_trace_in_a_later_run_adds_only_its_new_spans(
    tmp_path: Path, trace: list[Span]
) -> None:
    """A file the Collector keeps appending to, ingested now and again later: the second
    run finds the spans the first stored (reading the trace's requests back) and adds the
    others once; a third run adds nothing."""
    whole = tmp_path / "whole"
    _ingest(whole, _file(tmp_path, "whole.pb", [trace]))
    _ingest(tmp_path / "s", _file(tmp_path, "part.pb", [trace[:-2]]))
    _ingest(tmp_path / "s", _file(tmp_path, "grown.pb", [trace]))
    after = _events(tmp_path / "s")
    _ingest(tmp_path / "s", _file(tmp_path, "grown.pb", [trace]))
    assert _events(tmp_path / "s") == after
    types = _stored_types(tmp_path / "s")
    assert types.count("span.recorded") == len(trace)
    assert sorted(types) == sorted(_stored_types(whole))
    rows = lmg("sql", str(tmp_path / "s"), "SELECT count(*) AS n FROM spans", "--format", "json")
    assert json_lines(rows.stdout) == [{"n": len(trace)}]


def test_a_trace_is_one_request_and_a_session_it_creates_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session's own request keeps its key in the id index: where it began."""
    later = genai_trace(random.Random(40), 1_760_000_100_000_000_000, conversation="keys-0")
    with eventlog.open(tmp_path / "s") as log:
        sizes: list[list[int]] = []
        commit = log._store.commit

        def counted(requests: list[Any]) -> Any:
            sizes.append([len(r.events) for r in requests])
            return commit(requests)

        monkeypatch.setattr(log._store, "commit", counted)
        ingester = Ingester(log)
        ingester.add(_TRACES[0])
        ingester.add(later)
        types = [ev.tag_of(type(e)) for _, e in log.read()]
    # the spans before the first turn; the session; the rest of the trace; its handoff
    assert sizes[0] == [3, 1, 14, 1] and types[3] == "session.created"
    assert sizes[1] == [15, 1, 1]  # the later trace; the handoffs into it and within it


def test_a_trace_the_log_refuses_is_stored_span_by_span_and_not_again(tmp_path: Path) -> None:
    """A tool result naming a call the log never saw refuses the trace's request: its parts
    are stored in its place, the refused one left out (its span is stored with the turn);
    ingesting it again adds nothing (its spans' own keys are found)."""
    answer = '{"type": "tool_call_response", "id": "x", "response": 1}'
    chat = Span(
        trace_id="cd" * 16,
        span_id="ab" * 8,
        name="chat",
        start_ns=10**18,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.input.messages": f'[{{"role": "tool", "parts": [{answer}]}}]',
        },
    )
    path = _file(tmp_path, "refused.pb", [_TRACES[1], [chat]])
    result = lmg("ingest", str(tmp_path / "s"), path)
    assert result.exit_code == 0, result.output
    assert "1 request(s) stored without their GenAI events" in result.stderr
    types = _stored_types(tmp_path / "s")
    assert types.count("span.recorded") == 8 and types.count("tool.completed") == 1  # theirs
    before = _events(tmp_path / "s")
    _ingest(tmp_path / "s", path)
    assert _events(tmp_path / "s") == before


def test_a_late_span_adds_only_itself_when_the_ingester_forgot_the_keys_it_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The keys an ingester remembers are bounded (`_REMEMBERED_KEYS`); the spans each
    remembered trace's requests hold are kept with the trace, so a late span of it is
    mapped with its trace as context and adds only itself."""
    monkeypatch.setattr(ingest, "_REMEMBERED_KEYS", 1)
    trace = _TRACES[2]
    late = next(s for s in trace if s.name.startswith("GET"))
    with eventlog.open(tmp_path / "s") as log:
        ingester = Ingester(log)
        ingester.add([s for s in trace if s is not late])
        before = log.next_lsn()
        ingester.add([late])
        assert [ev.tag_of(type(e)) for _, e in log.read(before)] == ["span.recorded"]
