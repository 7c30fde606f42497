"""The writer's reserve: zeros written ahead of durable appends (see `eventlog/_format.py`).

A store is copied while its log is open, which is what a kill -9 leaves on disk: the last
segment ends in zeros up to a 64 KiB boundary. Those zeros are the end of the log, not a torn
tail; a frame torn inside them is still cut; a zeroed frame with frames after it is still
damage; sealed and closed segments end at their last frame.
"""

from __future__ import annotations

import os
import random
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest

import eventlog
from eventlog import _segment
from eventlog._format import RESERVE_ALIGN

from .test_power_loss import DurableDisk, PowerLoss, Workload, check, recording_torn_tails

SEGMENT_HEADER = 32
FRAME_HEADER = 48


def frames_end(segment: Path) -> int:
    """The end of a segment's last frame, walked by the frames' length fields."""
    data = segment.read_bytes()
    offset = SEGMENT_HEADER
    while data[offset : offset + 4] == b"LMGF":
        offset += FRAME_HEADER + int.from_bytes(data[offset + 4 : offset + 8], "little")
    return offset


def killed_copy(tmp_path: Path, prompts: int = 5) -> tuple[Path, Path, int]:
    """A store copied while its writer had it open: (the copy, its segment, events)."""
    store, copy = tmp_path / "store", tmp_path / "killed"
    with eventlog.open(store) as log:
        session = log.create_session()
        for n in range(prompts):
            log.add_prompt(session.id, f"prompt {n}")
        shutil.copytree(store, copy)
    segment = copy / f"{0:020d}.seg"
    return copy, segment, prompts + 1


def test_a_durable_append_leaves_a_reserve_of_zeros(tmp_path: Path) -> None:
    _copy, segment, _n = killed_copy(tmp_path)
    data, end = segment.read_bytes(), frames_end(segment)
    assert len(data) % RESERVE_ALIGN == 0 and len(data) > end
    assert data[end:] == bytes(len(data) - end)


def test_the_reserve_after_a_kill_is_the_end_of_the_log(tmp_path: Path) -> None:
    copy, segment, n = killed_copy(tmp_path)
    assert eventlog.verify(copy) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no TornTailTruncated: nothing was torn
        with eventlog.open(copy, readonly=True) as log:
            assert len(list(log.read())) == n
        with eventlog.open(copy) as log:
            session = next(iter(log.read())).event
            log.add_prompt(session.id, "after the kill")  # type: ignore[attr-defined]
            assert len(list(log.read())) == n + 1
    assert not (copy / "recovery.jsonl").exists()
    assert segment.stat().st_size == frames_end(segment), "closing trims the reserve"
    assert eventlog.verify(copy) == []


def test_a_frame_torn_inside_the_reserve_is_cut(tmp_path: Path) -> None:
    copy, segment, n = killed_copy(tmp_path)
    end = frames_end(segment)
    with open(segment, "r+b") as f:  # the first bytes of a frame that never completed
        f.seek(end)
        f.write(b"LMGF" + bytes(range(1, 40)))
    size = segment.stat().st_size
    problems = eventlog.verify(copy)
    assert [(p.severity, p.offset) for p in problems] == [("warning", end)]
    with pytest.warns(eventlog.TornTailTruncated, match=f"{size - end} bytes at offset {end}"):
        log = eventlog.open(copy)
    with log:
        assert len(list(log.read())) == n
    assert segment.stat().st_size == end
    assert eventlog.verify(copy) == []


def test_zeros_not_reaching_a_boundary_are_a_torn_tail(tmp_path: Path) -> None:
    copy, segment, _n = killed_copy(tmp_path)
    end = frames_end(segment)
    with open(segment, "r+b") as f:
        f.truncate(end + 100)  # zeros, but not a reserve: the writer never leaves these
    with pytest.warns(eventlog.TornTailTruncated, match=f"100 bytes at offset {end}"):
        eventlog.open(copy).close()


def test_a_zeroed_frame_before_intact_ones_is_damage(tmp_path: Path) -> None:
    copy, segment, _n = killed_copy(tmp_path)
    data = segment.read_bytes()
    second = SEGMENT_HEADER + FRAME_HEADER + int.from_bytes(data[36:40], "little")
    length = FRAME_HEADER + int.from_bytes(data[second + 4 : second + 8], "little")
    with open(segment, "r+b") as f:
        f.seek(second)
        f.write(bytes(length))
    assert [p.severity for p in eventlog.verify(copy)][:1] == ["error"]
    with pytest.raises(eventlog.CorruptionError, match="damaged frame") as info:
        eventlog.open(copy)
    assert info.value.offset == second


def test_a_sealed_segment_ends_at_its_last_frame(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with eventlog.open(store, segment_bytes=4 * RESERVE_ALIGN) as log:
        session = log.create_session()
        while len(list(store.glob("*.seg"))) < 3:
            log.add_prompt(session.id, "a prompt that fills the segment " * 20)
        sealed = sorted(store.glob("*.seg"))[:-1]
        assert all(s.stat().st_size == frames_end(s) for s in sealed)
    assert eventlog.verify(store) == []


def test_readers_and_a_backup_of_an_open_store_stop_at_its_reserve(tmp_path: Path) -> None:
    store, dest = tmp_path / "store", tmp_path / "backup"
    with eventlog.open(store) as log:
        session = log.create_session()
        for n in range(3):
            log.add_prompt(session.id, f"prompt {n}")
        with eventlog.open(store, readonly=True) as reader:
            assert len(list(reader.read())) == 4
            log.add_prompt(session.id, "written into the reserve while a reader is open")
            assert len(list(reader.read())) == 5
        eventlog.backup(store, dest)
    segment = dest / f"{0:020d}.seg"
    assert segment.stat().st_size == frames_end(segment), "the backup has frames, no zeros"
    assert eventlog.verify(dest) == []
    with eventlog.open(dest, readonly=True) as copy:
        assert len(list(copy.read())) == 5


def test_a_follower_polling_at_a_reserve_scans_its_zeros_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each poll at the end of the log stops at the writer's reserve: the first one looks
    through the zeros for a frame beyond them, later ones only at the next frame's place."""
    scans: list[int] = []
    for name in ("is_reserve", "is_torn_tail"):
        scan = getattr(_segment, name)

        def counted(fd: int, offset: int, end: int, scan: Any = scan) -> bool:
            scans.append(offset)
            return bool(scan(fd, offset, end))

        monkeypatch.setattr(_segment, name, counted)
    with eventlog.open(tmp_path / "store") as log:
        session = log.create_session()
        cursor = log.cursor()
        assert len(list(cursor.records())) == 1
        for _ in range(5):
            assert list(cursor.records()) == []
        log.add_prompt(session.id, "written into the reserve")
        assert [r.lsn for r in cursor.records()] == [1]
        assert list(cursor.records()) == []
        cursor.close()
    assert len(scans) == 2, scans  # once before the prompt, once after it


@pytest.mark.slow
def test_power_loss_keeps_every_acknowledged_event_written_into_a_reserve(
    store: Path, rng: random.Random, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`test_power_loss_keeps_every_acknowledged_event` with segments large enough for a
    reserve: its zero-fill is fsynced, its frames only fdatasynced, and power goes out at
    random fsyncs of either kind; every acknowledged event is still there, in order."""
    acked: dict[int, bytes] = {}
    seen: list[bytes] = []
    torn: list[str] = []
    work, reserves = Workload(rng), 0
    store.mkdir()
    for _cycle in range(60):
        disk = DurableDisk(store)
        monkeypatch.setattr(os, "fsync", disk.fsync)
        monkeypatch.setattr(os, "fdatasync", disk.fsync)
        disk.lose_power_at, disk.before_sync = rng.randint(1, 40), rng.random() < 0.5
        log: eventlog.EventLog | None = None
        try:
            with recording_torn_tails(torn):
                log = eventlog.open(store, segment_bytes=4 * RESERVE_ALIGN)
            records = list(log.read())
            seen = check(records, acked, seen, 0)
            work.forget_from(0)
            for record in records:
                work.take_in(record.lsn, record.event)
            for _ in range(rng.randint(0, 30)):
                work.append(log, acked)
            reserves += max(store.glob("*.seg")).stat().st_size % RESERVE_ALIGN == 0
        except PowerLoss:
            pass
        disk.frozen = True
        if log is not None:
            log.close()
        disk.lose_power(rng if rng.random() < 0.5 else None)
    monkeypatch.undo()
    with recording_torn_tails(torn), eventlog.open(store) as log:
        check(list(log.read()), acked, seen)
    assert reserves > 10 and len(acked) > 200 and len(list(store.glob("*.seg"))) > 1
    assert [p for p in eventlog.verify(store) if p.severity == "error"] == []


def test_an_append_not_synced_at_once_trims_the_reserve_first(tmp_path: Path) -> None:
    """Frames of INTERVAL and NONE reach the disk later, maybe out of order: written over
    zeros, a power loss could leave zeros before an intact frame (damage). So a handle in
    those modes grows the file, as before reserves, after trimming one an FSYNC handle left."""
    copy, segment, n = killed_copy(tmp_path)
    with eventlog.open(copy, durability=eventlog.Durability.NONE) as log:
        session = next(iter(log.read())).event
        log.add_prompt(session.id, "not synced at once")  # type: ignore[attr-defined]
        assert segment.stat().st_size == frames_end(segment)
    with eventlog.open(copy, readonly=True) as log:
        assert len(list(log.read())) == n + 1


def test_durable_appends_never_stat_the_segment_they_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stat of a file marks its times as seen, so the next write stamps them at fine grain
    and the `fdatasync` after it writes the inode too: about 60 us more a sync into the
    reserve (docs/benchmarks.md). The writer sizes its segment with `lseek` instead."""
    stats: list[int | str] = []
    fstat, stat = os.fstat, os.stat

    def counted_fstat(fd: int) -> os.stat_result:
        stats.append(fd)
        return fstat(fd)

    def counted_stat(path: object, *args: object, **kwargs: object) -> os.stat_result:
        stats.append(str(path))
        return stat(path, *args, **kwargs)  # type: ignore[arg-type]

    with eventlog.open(tmp_path / "store") as log:
        session = log.create_session()
        log.add_prompt(session.id, "the first append builds what later ones reuse")
        monkeypatch.setattr(os, "fstat", counted_fstat)
        monkeypatch.setattr(os, "stat", counted_stat)
        for n in range(5):
            log.add_prompt(session.id, f"prompt {n}")
        monkeypatch.undo()
    assert stats == []


_APPENDER = """
import sys, eventlog
with eventlog.open(sys.argv[1]) as log:
    session = log.create_session()
    print("ready", flush=True)
    while True:
        log.add_prompt(session.id, "x" * 200)
"""


@pytest.mark.slow
def test_verify_and_readers_beside_a_live_writer_never_call_its_frames_damage(
    tmp_path: Path,
) -> None:
    """A writer puts frames into zeros a reader has just seen; a reader that then finds a
    frame past that spot must look at the spot again, not report damage (it did, about
    once in a thousand `verify` runs beside a writer)."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415
    import time  # noqa: PLC0415

    store, rounds = tmp_path / "store", 0
    with subprocess.Popen(
        [sys.executable, "-c", _APPENDER, str(store)], stdout=subprocess.PIPE, text=True
    ) as writer:
        try:
            assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                errors = [p for p in eventlog.verify(store) if p.severity == "error"]
                assert not errors, f"round {rounds}: {errors[0]}"
                with eventlog.open(store, readonly=True) as log:
                    assert sum(1 for _ in log.read(0)) >= 1
                rounds += 1
        finally:
            writer.kill()
    print(f"{rounds} rounds of verify and read beside the writer")


_TURNS = """
import sys, eventlog
with eventlog.open(sys.argv[1]) as log:
    for _ in sys.stdin:  # a turn: a session and 3 prompts, then say so
        session = log.create_session()
        for n in range(3):
            log.add_prompt(session.id, f"from the other process {n}")
        print("done", flush=True)
"""


@pytest.mark.slow
def test_a_writer_taking_in_another_processs_frames_does_not_read_the_reserve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes append in turn, so each append first takes in the other's frames, up
    to the zeros of the reserve after them. Frames are written whole under the append lock,
    so zeros where a frame would start are the reserve: the writer no longer reads all of it
    (up to 1 MiB, about a third of a durable append's time on a loaded machine) to be sure.
    LSNs, positions and sizes stay exact."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    store = tmp_path / "store"
    scans: list[int] = []
    scan = _segment.is_reserve

    def counted(fd: int, offset: int, end: int) -> bool:
        scans.append(offset)
        return scan(fd, offset, end)

    with eventlog.open(store) as log:
        session = log.create_session()
        with subprocess.Popen(
            [sys.executable, "-c", _TURNS, str(store)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        ) as other:
            assert other.stdin is not None and other.stdout is not None
            monkeypatch.setattr(_segment, "is_reserve", counted)
            for turn in range(3):  # both stay open: each writes into the reserve it finds
                other.stdin.write("turn\n")
                other.stdin.flush()
                assert other.stdout.readline() == "done\n"
                before = log.next_lsn()  # takes the other's 4 events in
                log.add_prompt(session.id, f"turn {turn}")
                assert log.next_lsn() == before + 1 == 5 * (turn + 1) + 1
            other.stdin.close()
            assert other.wait(60) == 0
        assert scans == []
        monkeypatch.undo()
        lsns = [r.lsn for r in log.read()]
    assert lsns == list(range(16))
    assert eventlog.verify(store) == []
    with eventlog.open(store, readonly=True) as reread:
        assert reread.next_lsn() == 16
