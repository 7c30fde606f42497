"""Handoffs of a session whose earlier turns another run stored (`eventlog._handoffs`)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

import eventlog
from eventlog import _handoffs
from eventlog import events as ev
from eventlog._ingest import Ingester
from eventlog._spans import Span

from ._traces import genai_trace

_START = 1_760_000_000_000_000_000


def _plain(trace: str, n: int) -> list[Span]:
    return [Span(trace_id=trace, span_id=f"{i + 1:016x}", name="GET /") for i in range(n)]


def test_a_restart_then_a_later_turn_of_an_old_session_hands_off_from_its_stored_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a restart the ingester has not seen the session: its turns are read from the
    log, from where the session began to its last event, not from the log's start."""
    rng = random.Random(4)
    first, later = (genai_trace(rng, _START + i * 10**12, conversation="old") for i in range(2))
    with eventlog.open(tmp_path / "s") as log:
        Ingester(log).add(_plain("a" * 32, 50))  # before the session began
        Ingester(log).add(first)
        began = next(lsn for lsn, e in log.read() if isinstance(e, ev.SessionCreated))
        Ingester(log).add(_plain("b" * 32, 50))
        size = log.next_lsn()
    reads: list[tuple[Any, Any]] = []
    cursor = _handoffs.Cursor  # type: ignore[attr-defined]

    def recorded(store: Any, *, start: int = 0, stop: int | None = None) -> Any:
        reads.append((start, stop))
        return cursor(store, start=start, stop=stop)

    monkeypatch.setattr(_handoffs, "Cursor", recorded)
    with eventlog.open(tmp_path / "s") as log:  # the restart
        Ingester(log).add(later)
        handoffs = [e for _, e in log.read(size) if isinstance(e, ev.AgentHandoff)]
        agents = {e.id: e.name for _, e in log.read() if isinstance(e, ev.AgentRegistered)}
    pairs = [(agents[h.from_agent_id], agents[h.to_agent_id]) for h in handoffs if h.from_agent_id]
    assert pairs == [("writer", "triage"), ("triage", "writer")]  # the first from the stored turn
    assert len(reads) == 1 and reads[0][0] == began > 50
    assert reads[0][1] is not None and reads[0][1] < size
