"""Erasure of the log alone (`eventlog.erase`): frames, indexes, the journal, the schema's
content table. The whole store (projections, snapshots, crashes) is proved in
``tests/projections/test_erase.py``."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import msgspec
import pytest

import eventlog
from eventlog import _format, _segment
from eventlog import events as ev


def _frames(store: Path) -> dict[int, tuple[_format.FrameHeader, bytes]]:
    """Every frame of every segment by first LSN: its header and its stored bytes."""
    out = {}
    for seg in sorted(store.glob("*.seg")):
        fd = os.open(seg, os.O_RDONLY)
        try:
            first = _segment.read_segment_header(fd)
            for f in _segment.iter_frames(fd, _format.SEGMENT_HEADER, os.fstat(fd).st_size, first):
                out[f.head.first_lsn] = (f.head, os.pread(fd, f.head.size, f.offset))
        finally:
            os.close(fd)
    return out


def _two_users(store: Path) -> tuple[uuid.UUID, uuid.UUID]:
    with eventlog.open(store, segment_bytes=4096) as log:
        alice = log.create_session(metadata={"user": "alice"}).id
        bob = log.create_session(metadata={"user": 7}).id
        for i in range(60):
            p = log.add_prompt(alice, f"alice {i} " * 8)
            log.add_response(p, "to alice", eventlog.TokenUsage(1, 2), latency_ms=5.0)
            log.add_prompt(bob, f"bob {i} " * 8)
    return alice, bob


def test_frames_keep_their_lsns_and_times_and_untouched_frames_their_bytes(
    tmp_path: Path,
) -> None:
    alice, _bob = _two_users(tmp_path)
    before = _frames(tmp_path)
    erasure = eventlog.erase(tmp_path, eventlog.Selector.of(sessions=[alice]))
    after = _frames(tmp_path)
    assert erasure.segments_rewritten > 1
    changed = 0
    for lsn, (head, raw) in before.items():
        new_head, new_raw = after[lsn]
        assert (new_head.event_count, new_head.min_ts, new_head.max_ts) == (
            head.event_count,
            head.min_ts,
            head.max_ts,
        )
        changed += new_raw != raw
    assert changed > 0
    assert not eventlog.verify(tmp_path)  # and every .idx matches its new segment
    assert not list(tmp_path.glob("*.tmp"))
    assert eventlog.pending_erasure(tmp_path) == erasure  # the projections' part is due


def test_metadata_values_match_as_text_or_json_and_are_not_recorded(tmp_path: Path) -> None:
    _alice, bob = _two_users(tmp_path)
    chosen = eventlog.select(tmp_path, eventlog.Selector.of(metadata={"user": "7"}))
    assert {c.session_id for c in chosen} == {bob} and len(chosen) == 61
    erasure = eventlog.erase(tmp_path, eventlog.Selector.of(metadata={"user": "7"}))
    assert erasure.record.events == 61 and erasure.record.metadata_keys == ["user"]
    erasure = eventlog.erase(tmp_path, eventlog.Selector.of(metadata={"user": "alice"}))
    assert b"alice" not in (tmp_path / eventlog.JOURNAL_FILE).read_bytes()
    with eventlog.open(tmp_path, readonly=True) as log:
        records = [r.event for r in log.read() if isinstance(r.event, ev.ErasureApplied)]
    assert len(records) == 2 and b"alice" not in msgspec.msgpack.encode(records)


def test_erase_content_blanks_exactly_the_content_fields() -> None:
    at = 1_800_000_000_000_000_000
    marker = ev.erased_marker(at)
    done = ev.ToolCompleted(tool_id=uuid.uuid4(), result="found", duration_ms=2.0)
    erased = ev.erase_content(done, at)
    assert isinstance(erased, ev.ToolCompleted)
    assert (erased.result, erased.error, erased.duration_ms) == (marker, None, 2.0)
    assert ev.erase_content(erased, at + 1) is erased  # erasing twice changes nothing
    prompt = ev.PromptAdded(
        id=uuid.uuid4(),
        session_id=uuid.uuid4(),
        content="hi",
        metadata=ev.PromptMetadata(model="m", temperature=0.5, custom={"k": "v"}),
    )
    blank = ev.erase_content(prompt, at)
    assert isinstance(blank, ev.PromptAdded) and blank.metadata is not None
    assert (blank.content, blank.metadata.custom, blank.metadata.temperature) == (marker, {}, 0.5)
    assert set(ev.CONTENT_FIELDS) == set(ev.event_types())


def test_an_empty_selector_is_refused(tmp_path: Path) -> None:
    _two_users(tmp_path)
    with pytest.raises(eventlog.InvalidEvent, match="at least one criterion"):
        eventlog.erase(tmp_path, eventlog.Selector())
    assert not (tmp_path / eventlog.JOURNAL_FILE).exists()


def test_a_handle_open_elsewhere_renders_no_erased_template_from_its_cache(
    tmp_path: Path,
) -> None:
    """A handle keeps the stored events it reads for templates; an erasure made by another
    handle (another process, `lmg erase`) rewrites their segment under it. A prompt rendered
    afterwards from the erased template must not carry the erased text back into the log."""
    store = tmp_path / "s"
    with eventlog.open(store) as log:
        session = log.create_session().id
        template = log.create_template("t", "the secret is {{x}}", [ev.VariableSpec(name="x")])
        log.add_prompt(session, template_id=template, variables={"x": "1"})  # cached now
        eventlog.erase(store, eventlog.Selector.of(nodes=[template]))
        later = log.add_prompt(session, template_id=template, variables={"x": "2"})
        (prompt,) = [r.event for r in log.read() if getattr(r.event, "id", None) == later]
    assert isinstance(prompt, ev.PromptAdded) and "secret" not in prompt.content
