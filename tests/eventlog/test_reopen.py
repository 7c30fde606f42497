"""Reopening a store: the last segment's id index comes from its tail file, not a full decode.

Each test counts the events the store decodes to build its id index (the frames of the last
segment turned into events), a deterministic stand-in for the time the first append after
an open takes.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

import eventlog
from eventlog import NodeKind, _store
from eventlog._files import open_file
from eventlog._format import SEGMENT_HEADER, Request, decode_body, encode_frame
from eventlog._segment import iter_frames
from eventlog.verify import verify

BATCHES = 10  # of 500 prompts: beyond TAIL_EVENTS, so a clean close writes a tail
EVENTS = 1 + BATCHES * 500
assert EVENTS > _store.TAIL_EVENTS


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Events decoded by the store from now on, one count per frame."""
    counts: list[int] = []
    real = decode_body

    def counting(body: bytes) -> list[Request]:
        requests = real(body)
        counts.append(sum(len(r.events) for r in requests))
        return requests

    monkeypatch.setattr(_store, "decode_body", counting)
    return counts


def _fill(store: Path) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A store of one segment holding a session and its prompts (`EVENTS` in all), closed
    cleanly."""
    with eventlog.open(store, durability=eventlog.Durability.NONE) as log:
        session = log.create_session().id
        prompts = [p for _ in range(BATCHES) for p in log.add_prompts_batch([(session, "q")] * 500)]
    assert len(list(store.glob("*.seg"))) == 1
    return session, prompts


def _tail(store: Path) -> Path:
    (tail,) = store.glob("*.tail")
    return tail


def test_the_first_append_after_reopening_decodes_no_event_a_clean_close_indexed(
    store: Path, decoded: list[int]
) -> None:
    session, prompts = _fill(store)
    with eventlog.open(store) as log:
        log.add_response(prompts[0], "refers to an id indexed before the reopen")
        log.add_prompt(session, "and to the session")
        log.add_prompts_batch([(session, "a bulk request checks its new ids at once")] * 100)
        assert log.kind_of(prompts[-1]) == NodeKind.PROMPT
        assert log.stats().events_by_type == {
            "session.created": 1,
            "prompt.added": len(prompts) + 101,
            "response.added": 1,
        }
    assert sum(decoded) == 0


def test_events_appended_beyond_the_tail_are_the_only_ones_decoded(
    store: Path, decoded: list[int]
) -> None:
    session, _prompts = _fill(store)
    with eventlog.open(store) as log:  # too few new events to write a new tail on close
        later = log.add_prompts_batch([(session, "later")] * 10)
    assert sum(decoded) == 0
    with eventlog.open(store) as log:
        log.add_response(later[-1], "refers to an id the tail does not hold")
        assert log.kind_of(later[0]) == NodeKind.PROMPT
    assert sum(decoded) == 10


def test_a_damaged_tail_is_not_used(store: Path, decoded: list[int]) -> None:
    _session, prompts = _fill(store)
    tail = _tail(store)
    data = bytearray(tail.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tail.write_bytes(bytes(data))
    with eventlog.open(store) as log:
        log.add_response(prompts[-1], "the whole segment is decoded instead")
    assert sum(decoded) == EVENTS


def test_a_tail_indexing_frames_the_segment_no_longer_holds_is_not_used(
    store: Path, decoded: list[int]
) -> None:
    """A segment cut back to an earlier frame boundary (a restore of an older copy of it):
    the tail would name ids the log does not hold."""
    _session, prompts = _fill(store)
    segment = next(store.glob("*.seg"))
    fd = open_file(segment)
    offsets = [f.offset for f in iter_frames(fd, SEGMENT_HEADER, segment.stat().st_size, 0)]
    os.close(fd)
    with segment.open("r+b") as f:
        f.truncate(offsets[2])  # keeps the session's frame and the first batch of 500
    with eventlog.open(store) as log:
        assert log.kind_of(prompts[0]) == NodeKind.PROMPT
        assert log.kind_of(prompts[-1]) is None
        with pytest.raises(eventlog.UnknownNode):
            log.add_response(prompts[-1], "a prompt the log no longer holds")
    assert sum(decoded) == 501


def test_sealing_the_segment_deletes_its_tail_and_opening_deletes_a_stale_one(
    store: Path, tmp_path: Path
) -> None:
    session, prompts = _fill(store)
    tail = _tail(store)
    assert tail.name == f"{0:020d}.tail"
    assert verify(store) == []  # a known file
    shutil.copy(tail, tmp_path / "old.tail")
    with eventlog.open(store, segment_bytes=4096) as log:
        log.add_prompt(session, "rotates: the segment is past 4096 bytes")
        assert len(list(store.glob("*.seg"))) == 2
        assert not tail.exists()
        shutil.copy(tmp_path / "old.tail", tail)  # as a process sealing it concurrently may
    with eventlog.open(store) as log:
        assert list(store.glob("*.tail")) == []
        assert log.kind_of(prompts[0]) == NodeKind.PROMPT  # sealed with the tail's entries
    assert verify(store) == []


def test_an_id_index_that_failed_to_build_is_never_used_half_built(store: Path) -> None:
    """A frame of the last segment whose checksum holds but whose body does not decode:
    building the index stops there. Before, the entries read up to it stayed as the index,
    so the next append went on after the damage; now every append reports it, and
    `kind_of`, a hint, says it does not know."""
    with eventlog.open(store, durability=eventlog.Durability.NONE) as log:
        session = log.create_session().id
    segment = next(store.glob("*.seg"))
    frame = encode_frame(b"not MessagePack", first_lsn=1, count=1, min_ts=1, max_ts=1, level=None)
    with segment.open("ab") as f:
        f.write(frame)
    with eventlog.open(store) as log:
        assert log.kind_of(session) is None
        for _ in range(2):
            with pytest.raises(eventlog.CorruptionError, match="does not decode"):
                log.add_prompt(session, "after the damage")
