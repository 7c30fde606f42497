"""A bulk request of plain events is encoded once (issue 14).

`_commands.prepare` copies such a request's events and checks their exact types instead
of a MessagePack round trip, and encodes the copies once with marks where the lock sets
values (`_format.encode_marked`); the store overwrites the marks (`Marked.stored`) instead
of encoding the events again. The frame must hold the very bytes an encoding of the stored
events gives, the request's size must be the one the round trip measured, and the
caller's events must stay as given. (That it decides as the round trip does is the
property of test_batch_checks.py.)
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest

import eventlog
from eventlog import _commands, _format, _segment
from eventlog import events as ev

NOW = 1_700_000_000_000_000_000


def frame_bodies(store: Path) -> list[bytes]:
    """The raw MessagePack body of every frame of the store's first segment."""
    fd = os.open(store / _format.segment_name(0), os.O_RDONLY)
    try:
        first = _segment.read_segment_header(fd)
        frames = _segment.iter_frames(fd, _format.SEGMENT_HEADER, os.fstat(fd).st_size, first)
        return [_format.unpack_body(f.head, f.body) for f in frames]
    finally:
        os.close(fd)


def conversation(
    session: uuid.UUID, turns: int = 10, new_session: uuid.UUID | None = None
) -> list[ev.EventBase]:
    """A new session, then prompts and responses as callers build them, in it and in
    `session`: some with a ts and a session, most without, some text not ASCII, some
    optional fields, metadata and tags set."""
    out: list[ev.EventBase] = [
        ev.SessionCreated(id=new_session or uuid.uuid4(), metadata={"source": "x"}, tags=["t"])
    ]
    for i in range(turns):
        prompt = ev.PromptAdded(
            id=uuid.uuid4(),
            session_id=session if i % 2 else out[0].id,  # type: ignore[attr-defined]
            content=f"question {i} ünïcode ✓",
            ts=NOW if i % 3 == 0 else 0,
            actor="agent" if i % 4 == 0 else None,
            variables={"n": i} if i % 4 == 1 else {},
            metadata=ev.PromptMetadata(model="m", temperature=0.5) if i % 3 == 1 else None,
        )
        response = ev.ResponseAdded(
            id=uuid.uuid4(),
            prompt_id=prompt.id,
            content="answer " * i,
            usage=ev.TokenUsage(i, 2 * i),
            latency_ms=1.5 if i % 2 else None,
            model="m" if i % 3 else None,
            metadata={"k": [1, 2.5, None]} if i % 4 == 2 else {},
            session_id=prompt.session_id if i % 5 == 0 else None,
            occurred_at=NOW - i if i % 3 == 2 else None,
            actor="ä" * i if i % 4 == 3 else None,
        )
        out += [prompt, response]
    return out


@pytest.fixture
def encoded(monkeypatch: pytest.MonkeyPatch) -> list[bytes | None]:
    """What each `Marked.stored` call gave (None: the store encoded the events)."""
    calls: list[bytes | None] = []
    stored = _format.Marked.stored

    def spy(self: _format.Marked, events: list[ev.EventBase]) -> bytes | None:
        calls.append(stored(self, events))
        return calls[-1]

    monkeypatch.setattr(_format.Marked, "stored", spy)
    return calls


def test_a_bulk_request_is_stored_as_its_events_encode(
    log: eventlog.EventLog, store: Path, encoded: list[bytes | None]
) -> None:
    session = log.create_session().id
    first = log.append(conversation(session), idempotency_key="k")
    second = log.append(conversation(session, turns=8), actor="importer", occurred_at=NOW)
    assert len(encoded) == 2 and None not in encoded
    bodies = frame_bodies(store)
    assert bodies[-2] == _format.ENCODER.encode([_format.Request(first.events, "k")])
    assert bodies[-1] == _format.ENCODER.encode([_format.Request(second.events)])
    assert all(e.ts == first.events[0].ts for e in first.events)
    assert first.events[2].session_id == first.events[0].id  # type: ignore[attr-defined]
    assert [e for _, e in log.read(1)] == [*first.events, *second.events]


def test_a_bulk_request_is_sized_as_the_caller_gave_it() -> None:
    """`max_request_bytes` is compared with the size of the caller's events as encoded,
    with no ts where they have none and no session the log fills in."""
    batch = conversation(uuid.uuid4())
    request = _commands.prepare(batch, {})
    assert request.marked is not None
    assert request.size == len(_format.ENCODER.encode(batch))


def test_the_callers_events_stay_as_given(log: eventlog.EventLog) -> None:
    """The request holds copies with dicts of their own: what the caller does to its events
    after `prepare` changes nothing stored, and the log's values never reach them."""
    session = log.create_session().id
    batch = conversation(session)
    times = [e.ts for e in batch]
    sessions = [getattr(e, "session_id", None) for e in batch]
    request = _commands.prepare(batch, {})
    assert request.marked is not None
    batch[1].variables["late"] = 1  # type: ignore[attr-defined]
    batch[2].metadata["late"] = 1  # type: ignore[attr-defined]
    batch[0].metadata["late"] = 1  # type: ignore[attr-defined]
    batch[0].tags.append("late")  # type: ignore[attr-defined]
    (result,) = log._store.commit([request])
    assert isinstance(result, eventlog.Appended)
    assert result.events[1].variables == {}  # type: ignore[attr-defined]
    assert result.events[2].metadata == {}  # type: ignore[attr-defined]
    assert result.events[0].metadata == {"source": "x"}  # type: ignore[attr-defined]
    assert result.events[0].tags == ["t"]  # type: ignore[attr-defined]
    assert [e for _, e in log.read(1)] == result.events
    assert [e.ts for e in batch] == times
    assert [getattr(e, "session_id", None) for e in batch] == sessions
    assert all(a is not b for a, b in zip(batch, result.events, strict=True))


def test_a_value_the_round_trip_converts_is_stored_as_it_converts(
    log: eventlog.EventLog, store: Path, encoded: list[bytes | None]
) -> None:
    """An id given as text and an int for a float are what the round trip turns into a
    UUID and a float: such a request takes it, and stores what it always stored. An int in
    prompt metadata is converted by that field's own round trip."""
    session = log.create_session().id
    batch = conversation(session)
    text: Any = str(session)
    prompt = ev.PromptAdded(id=uuid.uuid4(), session_id=text, content="q")
    batch[1:3] = [prompt, ev.ResponseAdded(id=uuid.uuid4(), prompt_id=prompt.id, content="a")]
    batch[2].latency_ms = 3  # type: ignore[attr-defined]
    appended = log.append(batch)
    assert encoded == []
    assert appended.events[1].session_id == session  # type: ignore[attr-defined]
    assert type(appended.events[2].latency_ms) is float  # type: ignore[attr-defined]
    assert frame_bodies(store)[-1] == _format.ENCODER.encode([_format.Request(appended.events)])
    batch = conversation(session)
    batch[1].metadata = ev.PromptMetadata(temperature=1)  # type: ignore[attr-defined, arg-type]
    appended = log.append(batch)
    assert encoded != [] and None not in encoded
    assert type(appended.events[1].metadata.temperature) is float  # type: ignore[attr-defined]
    assert frame_bodies(store)[-1] == _format.ENCODER.encode([_format.Request(appended.events)])


def test_an_id_holding_a_mark_is_stored_as_given(
    log: eventlog.EventLog, store: Path, encoded: list[bytes | None]
) -> None:
    """A caller's id that holds the ts mark's bytes makes one mark too many: the request
    is encoded the usual way, and the id stored as given, never overwritten. One that
    holds the session mark's bytes is not before a ts mark: it is never taken for one."""
    session = log.create_session().id
    marked = uuid.UUID(bytes=b"\0" * 8 + _format._TS_MARK)
    batch = conversation(session, new_session=marked)
    assert _commands.prepare(batch, {}).marked is None
    appended = log.append(batch)
    assert encoded == []
    assert appended.events[0].id == marked  # type: ignore[attr-defined]
    assert frame_bodies(store)[-1] == _format.ENCODER.encode([_format.Request(appended.events)])
    batch = conversation(session)
    batch[2] = ev.ResponseAdded(
        id=_format._SESSION_MARK_ID, prompt_id=batch[1].id, content="a"
    )  # type: ignore[attr-defined]
    appended = log.append(batch)
    assert encoded != [] and None not in encoded
    assert frame_bodies(store)[-1] == _format.ENCODER.encode([_format.Request(appended.events)])
    assert [e for _, e in log.read(appended.first_lsn)] == appended.events


def test_batches_the_log_builds_are_stored_as_their_events_encode(
    log: eventlog.EventLog, store: Path, encoded: list[bytes | None]
) -> None:
    """`add_prompts_batch` (its own way past the round trip), `add_responses_batch` and
    `add_conversations_batch` take the single encoding too."""
    session = log.create_session().id
    prompts = log.add_prompts_batch([(session, f"q{i} ✓") for i in range(20)])
    log.add_responses_batch([(p, "a", ev.TokenUsage(1, 2)) for p in prompts])
    log.add_conversations_batch([((session, "q"), ("a", ev.TokenUsage(3, 4)))] * 10)
    assert len(encoded) == 3 and None not in encoded
    frames = frame_bodies(store)[-3:]
    stored = [e for _, e in log.read(1)]
    requests = [stored[:20], stored[20:40], stored[40:]]
    assert frames == [_format.ENCODER.encode([_format.Request(r)]) for r in requests]
