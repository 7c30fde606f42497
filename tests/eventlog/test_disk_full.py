"""Disk full, file too large, failed fsync: clear errors, nothing acknowledged lost.

A full disk (ENOSPC, or EFBIG past RLIMIT_FSIZE) is `StorageFull`: the partial frame is
removed, nothing of the append is acknowledged, and the handle goes on working once there
is room. A failed fsync is `LogFailed`: the handle stops for good, and reopening recovers.
"""

from __future__ import annotations

import errno
import json
import os
import random
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

import eventlog
import eventlog._index as index
from eventlog import events as ev
from eventlog._format import SEGMENT_HEADER

CHILD = Path(__file__).with_name("_crash_child.py")


def run_disk_full_child(store: Path, seed: int, segment_bytes: int, limit: int) -> list[Any]:
    """Run the child in `diskfull` mode to its end; its report lines."""
    args = ["diskfull", str(store), str(seed), str(segment_bytes), str(limit)]
    done = subprocess.run(
        [sys.executable, str(CHILD), *args],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return [json.loads(line) for line in done.stdout.decode().splitlines()]


def acknowledged(lines: list[Any]) -> dict[int, tuple[uuid.UUID, str]]:
    """LSN -> (id, content) of every event the child had acknowledged."""
    acked: dict[int, tuple[uuid.UUID, str]] = {}
    for line in lines:
        if "ids" in line:
            pairs = zip(line["ids"], line["contents"], strict=True)
            for lsn, (hexed, content) in enumerate(pairs, line["lsn"]):
                acked[lsn] = (uuid.UUID(hex=hexed), content)
    return acked


def check_after_reopen(
    store: Path, acked: dict[int, tuple[uuid.UUID, str]], segment_bytes: int
) -> None:
    """Reopened without the limit: intact, everything acknowledged there, appends work."""
    problems = eventlog.verify(store)
    assert [p for p in problems if p.severity == "error"] == [], problems
    assert not [p for p in problems if "torn tail" in p.message], "a partial frame was left"
    with eventlog.open(store, segment_bytes=segment_bytes) as log:
        records = list(log.read())
        assert [r.lsn for r in records] == list(range(len(records)))
        # Nothing acknowledged is missing, and nothing unacknowledged was stored: the
        # failed appends left no trace.
        assert len(records) == len(acked) and sorted(acked) == list(range(len(records)))
        for record in records:
            event = record.event
            assert isinstance(event, ev.SessionCreated | ev.PromptAdded)
            content = event.content if isinstance(event, ev.PromptAdded) else ""
            assert (event.id, content) == acked[record.lsn], f"LSN {record.lsn} differs"
        session = acked[0][0]
        # Room again: the same store takes appends, enough to rotate if it was about to.
        for n in range(50):
            log.add_prompts_batch([(session, f"after {n}.{k}") for k in range(20)])
        after = list(log.read())
        assert [r.lsn for r in after] == list(range(len(after)))
        assert len(after) == len(records) + 50 * 20
    assert [p for p in eventlog.verify(store) if p.severity == "error"] == []


def check_storage_full_lines(lines: list[Any], store: Path) -> dict[str, Any]:
    assert lines[0].get("ready"), lines[:1]
    errors = [line for line in lines if "error" in line]
    assert len(errors) == 2, errors  # the child tries again after the first failure, then stops
    first = errors[0]
    assert first["error"] == "StorageFull", first
    assert first["errno"] == errno.EFBIG, first
    assert "File too large" in first["message"], first
    assert str(store) in first["message"], "the message should name the file"
    assert errors[1]["error"] == "StorageFull", errors[1]
    return dict(first)


@pytest.mark.slow
def test_disk_full_is_a_clear_error_and_recoverable(store: Path, rng: random.Random) -> None:
    """EFBIG inside a segment: RLIMIT_FSIZE far below segment_bytes."""
    limit = rng.randrange(20_000, 60_000)
    lines = run_disk_full_child(store, rng.randrange(2**32), 16 * 1024 * 1024, limit)
    first = check_storage_full_lines(lines, store)
    assert first["message"].endswith("nothing was written"), first
    acked = acknowledged(lines)
    assert len(acked) > 10
    segments = sorted(store.glob("*.seg"))
    assert len(segments) == 1
    assert segments[0].stat().st_size <= limit
    check_after_reopen(store, acked, 16 * 1024 * 1024)


@pytest.mark.slow
def test_index_files_that_cannot_be_written_never_block_appends(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sealing writes a segment's .idx and .ids after its successor exists. They are a cache
    of the segment: when the disk cannot take them, appends go on (the index lives in
    memory), `verify` warns, and the next open with space rebuilds them."""

    def no_space(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    with eventlog.open(store, segment_bytes=4096) as log:
        session = log.create_session()
        early = log.add_prompt(session.id, "in the segment that will be sealed")
        monkeypatch.setattr(index, "write_atomically", no_space)
        for n in range(60):
            log.add_prompt(session.id, f"filler {n} " * 5)
        assert len(list(store.glob("*.seg"))) > 1, "the segment should have rotated"
        assert not list(store.glob("*.idx")) and not list(store.glob("*.ids"))
        log.add_response(early, "refers to a prompt in a sealed, unindexed segment")
        count = log.stats().events
    monkeypatch.undo()
    warnings = [p for p in eventlog.verify(store) if "index" in p.message]
    assert warnings and {p.severity for p in warnings} == {"warning"}
    with eventlog.open(store, segment_bytes=4096) as log:
        assert len(list(log.read())) == count
        log.add_response(early, "the rebuilt index still finds it")
    assert list(store.glob("*.idx")) and list(store.glob("*.ids"))
    assert eventlog.verify(store) == []


def test_enospc_mid_frame_truncates_and_the_handle_recovers(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_pwrite = os.pwrite
    calls: list[int] = []  # the file's size after each call

    def short_then_full(fd: int, data: Any, offset: int) -> int:
        if not calls:
            written = real_pwrite(fd, bytes(data)[: len(data) // 2], offset)  # part of a frame
            calls.append(os.fstat(fd).st_size)
            return written
        calls.append(os.fstat(fd).st_size)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with eventlog.open(store) as log:
        session = log.create_session()
        kept = log.add_prompts_batch([(session.id, f"before {n}") for n in range(5)])
        segment = store / f"{0:020d}.seg"
        size = SEGMENT_HEADER + log.stats().stored_bytes  # its frames' end: zeros may follow
        monkeypatch.setattr(os, "pwrite", short_then_full)
        with pytest.raises(eventlog.StorageFull) as raised:
            log.add_prompt(session.id, "x" * 5000)
        monkeypatch.undo()
        assert len(calls) == 2, "the store should retry a short write before failing"
        assert calls[0] > size, "half a frame was on disk when the disk filled"
        assert raised.value.errno == errno.ENOSPC
        assert "No space left on device" in str(raised.value)
        assert str(segment) in str(raised.value)
        assert segment.stat().st_size == size, "the partial frame must be cut off"
        assert eventlog.verify(store) == []
        # The same handle goes on: nothing acknowledged was lost, the failed one is absent.
        again = log.add_prompt(session.id, "after the disk had room again")
        contents = [getattr(r.event, "content", None) for r in log.read()]
    assert contents == [None, *[f"before {n}" for n in range(5)], "after the disk had room again"]
    assert len(kept) == 5 and again
    with eventlog.open(store) as log:
        assert len(list(log.read())) == 7
    assert eventlog.verify(store) == []


def test_storage_full_when_creating_the_next_segment(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rotation writes the new segment as a .tmp then renames it; no space there is
    StorageFull too, leaves no temp file, and a later append rotates fine."""
    real_pwrite = os.pwrite

    def no_room_for_segments(fd: int, data: Any, offset: int) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".seg.tmp"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_pwrite(fd, data, offset)

    with eventlog.open(store, segment_bytes=4096) as log:
        session = log.create_session()
        while len(list(store.glob("*.seg"))) < 2:  # the first rotation works
            log.add_prompt(session.id, os.urandom(200).hex())
        monkeypatch.setattr(os, "pwrite", no_room_for_segments)
        before = len(list(log.read()))
        with pytest.raises(eventlog.StorageFull) as raised:
            for _ in range(100):
                log.add_prompt(session.id, os.urandom(200).hex())
                before += 1
        monkeypatch.undo()
        assert raised.value.errno == errno.ENOSPC
        assert "no space to start segment" in str(raised.value)
        # Only the segment: the sealed index files are written by a thread, maybe right now.
        assert not list(store.glob("*.seg.tmp")), "the temp segment must be removed"
        assert len(list(log.read())) == before
        log.add_prompt(session.id, "fits in the next segment")
        assert len(list(store.glob("*.seg"))) == 3
        assert len(list(log.read())) == before + 1
    assert eventlog.verify(store) == []


def test_failed_fsync_stops_the_handle_and_reopening_recovers(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fsync = os.fsync
    failures: list[int] = []

    def fsync_fails_once(fd: int) -> None:
        if not failures:
            failures.append(fd)
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync(fd)

    with eventlog.open(store) as log:
        session = log.create_session()
        prompt = log.add_prompt(session.id, "acknowledged before the failure")
        monkeypatch.setattr(os, "fsync", fsync_fails_once)
        monkeypatch.setattr(os, "fdatasync", fsync_fails_once)
        with pytest.raises(eventlog.LogFailed) as raised:
            log.add_prompt(session.id, "its fsync fails")
        monkeypatch.undo()
        assert failures, "the append should have fsynced"
        assert "fsync" in str(raised.value) and "Input/output error" in str(raised.value)
        assert isinstance(raised.value.__cause__, OSError)
        # Fail-stop: fsync works again, but this handle never pretends it did before.
        for attempt in (
            lambda: log.add_prompt(session.id, "later"),
            lambda: log.add_response(prompt, "later", eventlog.TokenUsage(1, 2)),
            log.create_session,
            lambda: log.append(ev.SessionCreated(id=uuid.uuid4())),
        ):
            with pytest.raises(eventlog.LogFailed, match="reopen"):
                attempt()
    with eventlog.open(store) as log:  # reopening recovers from what is on disk
        contents = [getattr(r.event, "content", None) for r in log.read()]
        assert contents[:2] == [None, "acknowledged before the failure"]
        # The failed append may or may not be there ("may or may not be stored"); never twice.
        assert contents[2:] in ([], ["its fsync fails"])
        log.add_prompt(session.id, "after reopening")
    assert eventlog.verify(store) == []


def test_a_file_written_atomically_leaves_no_temp_file_when_the_disk_fills(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Index, id and policy files are written as ``NAME.PID.THREAD.tmp`` and renamed. A
    recovery leaves a live process's temp files alone (it may be mid-write), so the writer
    removes its own half file when the write fails."""
    from eventlog._index import write_atomically  # noqa: PLC0415

    def full(fd: int, data: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError, match="No space left"):
        write_atomically(tmp_path / "00000000000000000000.idx", b"x" * 10_000)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []
