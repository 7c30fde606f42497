"""The fold's own read of a local log (`fold_available`, a projector): staged events decoded
as lean twins (ids as their 16 bytes) and sized as stored. It must fold exactly what the
public records fold (`fold_records`), however the log is cut into batches, and hand callers
only public events."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventlog
from eventlog import Record
from eventlog import events as ev
from projections import Batch, fold_available, fold_records
from projections._folder import commit_batch
from projections._stage import touched_ids
from tests.eventlog.test_golden import TS, body_of, raw_frame, segment_header

from .test_fold import Op, assert_same_tables, build_log, fresh_db, histories


@pytest.mark.slow
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(history=histories, batch_events=st.integers(1, 40))
def test_the_lean_read_folds_what_the_public_records_fold(
    history: list[Op], batch_events: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store"
        records = build_log(path, history)
        public = fresh_db()
        commit_batch(public, records)
        lean = fresh_db()
        seen: list[tuple[Batch, Record]] = []
        with eventlog.open(path, readonly=True) as log:
            fold_available(
                lean,
                log,
                batch_events=batch_events,
                on_batch=lambda batch, last: seen.append((batch, last)),
            )
    assert_same_tables(public, lean)
    start = 0
    for batch, last in seen:
        assert last == records[last.lsn]  # the public event, ids as `uuid.UUID`
        assert batch.touched == touched_ids(records[start : last.lsn + 1])
        start = last.lsn + 1
    assert start == len(records)
    public.close()
    lean.close()


def test_batches_are_sized_by_the_events_bytes_as_stored(store: Path) -> None:
    with eventlog.open(store) as log:
        session = log.create_session()
        prompts = [log.add_prompt(session.id, "x" * 1000) for _ in range(4)]
    lasts: list[int] = []
    con = fresh_db()
    with eventlog.open(store, readonly=True) as log:
        fold_available(con, log, batch_bytes=1001, on_batch=lambda _b, last: lasts.append(last.lsn))
    assert lasts == [1, 2, 3, 4]  # a prompt reaches 1,001 bytes (with the session before it)
    ids = {row[0] for row in con.execute("SELECT id FROM prompts").fetchall()}
    assert ids == set(prompts)


def test_an_old_version_of_a_staged_event_folds_upcast(tmp_path: Path) -> None:
    """A prompt of an older version (a made-up ``prompt.added@0`` with ``text``, no
    ``content``) is upcast before it is decoded lean, as `decode_body` does for records."""

    def prompt_v0_to_v1(raw: dict[str, Any]) -> dict[str, Any]:
        fields = {k: v for k, v in raw.items() if k != "text"}
        return {**fields, "type": "prompt.added", "content": raw["text"]}

    session, prompt = uuid.uuid4(), uuid.uuid4()
    events = [
        {"type": "session.created", "id": session.bytes, "ts": TS},
        {"type": "prompt.added@0", "id": prompt.bytes, "session_id": session.bytes,
         "text": "old words", "ts": TS},
    ]  # fmt: skip
    path = tmp_path / "store"
    path.mkdir()
    (path / "LOCK").write_bytes(b"")
    frame = raw_frame(body_of(*events), first_lsn=0, count=2)
    (path / f"{0:020d}.seg").write_bytes(segment_header(0) + frame)
    ev.upcaster("prompt.added", 0)(prompt_v0_to_v1)
    try:
        with eventlog.open(path, readonly=True) as log:
            public = fresh_db()
            fold_records(public, log.read())
            lean = fresh_db()
            fold_available(lean, log)
    finally:
        ev._UPCASTERS.pop(("prompt.added", 0), None)
    assert_same_tables(public, lean)
    assert lean.execute("SELECT id, content FROM prompts").fetchall() == [(prompt, "old words")]
