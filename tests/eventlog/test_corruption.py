"""Damage that recovery must not repair: flipped bits in frames and segment headers.

Bits are flipped in real segment files of a store built once per module (through the byte
layout `_format.py` documents). A bad frame anywhere but in a torn tail of the last segment
must surface as a `CorruptionError` naming the file, the frame's offset and its first LSN:
readers never stop early without raising, `eventlog.verify` and `lmg verify` name the place,
and recovery never truncates frames that were acknowledged.
"""

from __future__ import annotations

import random
import struct
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import google_crc32c
import pytest
from click.testing import CliRunner

import eventlog
from eventlog import _reader, _segment
from replay.cli import main as lmg

from .test_recovery import (
    FRAME_HEADER,
    SEGMENT_BYTES,
    FrameInfo,
    Layout,
    build_store,
    copy_store,
    errors_of,
    frames_of,
    segment_files,
)

# Byte ranges of the frame header fields (see _format.py), and one inside the body.
FIELDS = {
    "magic": (0, 4),
    "length": (4, 8),
    "crc": (8, 12),
    "first_lsn": (12, 20),
    "count": (20, 24),
    "min_ts": (24, 32),
    "max_ts": (32, 40),
    "codec": (40, 41),
    "flags": (41, 42),
    "raw_length": (44, 48),
    "body": (FRAME_HEADER, None),
}
SEGMENT_FIELDS = {
    "magic": (0, 8),
    "version": (8, 10),
    "flags": (10, 12),
    "first_lsn": (12, 20),
    "created": (20, 28),
    "crc": (28, 32),
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    """Three segments, the last with five frames; a sparse index entry for every frame, so
    that reads from an LSN seek straight to the frame holding it."""
    path = tmp_path_factory.mktemp("corruption") / "store"
    return build_store(path, segments=3, tail_frames=5, index_interval_bytes=1)


@pytest.fixture
def no_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def flip_bit(seg: Path, frame: FrameInfo, field: str, rng: random.Random) -> None:
    """Flip one random bit of one random byte of `field` (see FIELDS) in the frame."""
    lo, hi = FIELDS[field]
    at = frame.offset + rng.randrange(lo, frame.size if hi is None else hi)
    data = bytearray(seg.read_bytes())
    data[at] ^= 1 << rng.randrange(8)
    seg.write_bytes(bytes(data))


def read_until_error(
    log: eventlog.EventLog, start: int = 0
) -> tuple[list[eventlog.Record], eventlog.CorruptionError]:
    """Read from `start`; every record yielded before the CorruptionError that must come."""
    got: list[eventlog.Record] = []
    with pytest.raises(eventlog.CorruptionError) as raised:
        for record in log.read(start):
            got.append(record)
    return got, raised.value


def assert_place(
    err: eventlog.CorruptionError | eventlog.Problem, seg: Path, frame: FrameInfo
) -> None:
    assert (err.path, err.offset, err.lsn) == (str(seg), frame.offset, frame.first_lsn), err


def lmg_verify(store: Path) -> tuple[int, str]:
    result = CliRunner().invoke(lmg, ["verify", str(store)])
    return result.exit_code, result.output


# -- sealed segments ------------------------------------------------------------------------------


@pytest.mark.parametrize("field", list(FIELDS))
@pytest.mark.parametrize("position", ["first", "middle", "last"], ids=lambda p: f"{p} frame")
@pytest.mark.usefixtures("no_warnings")
def test_flipped_bit_in_sealed_segment(
    position: str, field: str, pristine: Layout, store: Path, rng: random.Random
) -> None:
    copy_store(pristine, store)
    seg = segment_files(store)[1]  # sealed, with a segment on either side
    frames = frames_of(seg)
    frame = frames[{"first": 0, "middle": len(frames) // 2, "last": -1}[position]]
    assert frame.codec == 1, "the bodies should be zstd-compressed"
    flip_bit(seg, frame, field, rng)
    everything = pristine.records

    # verify: an error at the frame (the first error it reports), and lmg verify fails.
    errors = errors_of(eventlog.verify(store))
    assert errors, "verify missed the damage"
    assert_place(errors[0], seg, frame)
    code, output = lmg_verify(store)
    assert code == 1, output
    assert f"{seg} at offset {frame.offset} (LSN {frame.first_lsn})" in output

    # Opening succeeds: sealed segments are trusted through their checksummed index files and
    # are not re-read at open. Reading through the frame raises, naming it; nothing is skipped.
    with eventlog.open(store, segment_bytes=SEGMENT_BYTES) as log:
        got, err = read_until_error(log)
        assert_place(err, seg, frame)
        assert got == everything[: frame.first_lsn]
        for start in (frame.first_lsn, frame.first_lsn + frame.events - 1):  # seeks to the frame
            got, err = read_until_error(log, start)
            assert_place(err, seg, frame)
            assert got == []
        # Past the damage the log reads (the next segment) and appends.
        after = int(segment_files(store)[2].name[:20])
        assert list(log.read(after)) == everything[after:]
        log.add_prompt(pristine.session, "appended beside a damaged sealed segment")
        got, err = read_until_error(log)
        assert_place(err, seg, frame)

    # Without its index file the segment is scanned at open, and the open fails, naming it.
    (store / (seg.name[:20] + ".idx")).unlink()
    with pytest.raises(eventlog.CorruptionError) as raised:
        eventlog.open(store)
    assert_place(raised.value, seg, frame)


@pytest.mark.parametrize("junk", [b"\0", b"LMGF", b"LMGF" + bytes(100), b"tail of another file"])
def test_garbage_after_a_sealed_segment(junk: bytes, pristine: Layout, store: Path) -> None:
    """Bytes after the last frame of a sealed segment are damage, not a torn tail to cut."""
    copy_store(pristine, store)
    seg = segment_files(store)[1]
    end, next_lsn = seg.stat().st_size, int(segment_files(store)[2].name[:20])
    with open(seg, "ab") as f:
        f.write(junk)
    place = (str(seg), end, next_lsn)

    errors = errors_of(eventlog.verify(store))
    assert errors and (errors[0].path, errors[0].offset, errors[0].lsn) == place
    with pytest.raises(eventlog.CorruptionError) as raised:  # its index no longer matches
        eventlog.open(store)
    assert (raised.value.path, raised.value.offset, raised.value.lsn) == place
    assert seg.stat().st_size == end + len(junk)
    with eventlog.open(store, readonly=True) as log:
        with pytest.raises(eventlog.CorruptionError) as raised:
            list(log.read())
        assert (raised.value.path, raised.value.offset, raised.value.lsn) == place


def test_lmg_verify_command(pristine: Layout, store: Path) -> None:
    """The installed `lmg` script: 0 on an intact store, 1 naming file and offset on damage."""
    command = [str(Path(sys.executable).with_name("lmg")), "verify", str(store)]
    copy_store(pristine, store)
    ok = subprocess.run(command, check=False, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"ok: {store} verified")

    seg = segment_files(store)[0]
    frame = frames_of(seg)[3]
    data = bytearray(seg.read_bytes())
    data[frame.offset + FRAME_HEADER + 7] ^= 0x04
    seg.write_bytes(bytes(data))
    bad = subprocess.run(command, check=False, capture_output=True, text=True)
    assert bad.returncode == 1
    assert f"error: {seg} at offset {frame.offset} (LSN {frame.first_lsn}): " in bad.stderr
    assert "1 damaged place(s)" in bad.stderr


@pytest.mark.parametrize("moment", ["frame half written", "frame not yet written"])
def test_reader_racing_a_rotation_is_not_damage(
    moment: str, pristine: Layout, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader that saw the last segment while a frame was being written, and looks again
    after the writer finished it and rotated, must not call it damage: the segment is sealed
    now, but its frame is whole. (The writer is simulated: it acts when the reader reaches
    the end of what it saw.) It may stop at the end it saw or read on; it must not raise."""
    copy_store(pristine, store)
    _, seg, newest = segment_files(store)
    whole, newest_bytes = seg.read_bytes(), newest.read_bytes()
    frame = frames_of(seg)[-1]
    cut = frame.offset + frame.size // 2 if moment == "frame half written" else frame.offset
    seg.write_bytes(whole[:cut])  # the moment the reader starts: seg is the last segment
    newest.unlink()
    for suffix in (".idx", ".ids"):
        (store / (seg.name[:20] + suffix)).unlink()

    real = _segment.read_frame
    acted = False

    def writer_finishes() -> None:
        nonlocal acted
        if not acted:
            acted = True
            seg.write_bytes(whole)
            newest.write_bytes(newest_bytes)

    def racing(fd: int, offset: int, end: int, lsn: int | None) -> object:
        try:
            found = real(fd, offset, end, lsn)
        except _segment.BadFrame:
            writer_finishes()  # between the reader's failed read and its second look
            raise
        if found.offset + found.head.size == cut:
            writer_finishes()  # after the reader's last frame, before it looks for more
        return found

    monkeypatch.setattr(_reader, "read_frame", racing)
    with eventlog.open(store, readonly=True) as log:
        got = list(log.read())
        assert acted
        assert len(got) >= frame.first_lsn and got == pristine.records[: len(got)]
        assert list(log.read()) == pristine.records


# -- the last segment -----------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["magic", "length", "crc", "first_lsn", "count", "body"])
@pytest.mark.parametrize("index", [0, 2, 3], ids=lambda i: f"frame {i} of 5")
@pytest.mark.usefixtures("no_warnings")
def test_flipped_bit_mid_last_segment_is_damage_not_tail(
    index: int, field: str, pristine: Layout, store: Path, rng: random.Random
) -> None:
    copy_store(pristine, store)
    seg = segment_files(store)[-1]
    frames = frames_of(seg)
    frame = frames[index]
    assert frame.codec == 1 and index < len(frames) - 1  # intact frames follow it
    flip_bit(seg, frame, field, rng)
    damaged = seg.read_bytes()

    errors = errors_of(eventlog.verify(store))
    assert len(errors) == 1
    assert_place(errors[0], seg, frame)
    code, output = lmg_verify(store)
    assert code == 1 and f"{seg} at offset {frame.offset}" in output

    with pytest.raises(eventlog.CorruptionError) as raised:
        eventlog.open(store)
    assert_place(raised.value, seg, frame)
    assert seg.read_bytes() == damaged, "recovery must not cut acknowledged frames"
    assert not (store / "recovery.jsonl").exists()

    with eventlog.open(store, readonly=True) as log:  # no recovery: a reader sees the damage
        got, err = read_until_error(log)
        assert_place(err, seg, frame)
        assert got == pristine.records[: frame.first_lsn]
    assert seg.read_bytes() == damaged


# -- segment headers --------------------------------------------------------------------------


def damage_header(seg: Path, how: str, rng: random.Random) -> None:
    data = bytearray(seg.read_bytes())
    first_lsn = int(seg.name[:20])
    if how in SEGMENT_FIELDS:
        lo, hi = SEGMENT_FIELDS[how]
        data[rng.randrange(lo, hi)] ^= 1 << rng.randrange(8)
    elif how == "another LSN":  # intact checksum, but the header names another segment
        struct.pack_into("<Q", data, 12, first_lsn + 1)
        struct.pack_into("<I", data, 28, google_crc32c.value(bytes(data[:28])))
    elif how == "version 2":
        struct.pack_into("<H", data, 8, 2)
        struct.pack_into("<I", data, 28, google_crc32c.value(bytes(data[:28])))
    else:
        raise AssertionError(how)
    seg.write_bytes(bytes(data))


HEADER_DAMAGE = [*SEGMENT_FIELDS, "another LSN", "version 2"]


@pytest.mark.parametrize("how", HEADER_DAMAGE)
@pytest.mark.parametrize("which", ["last", "sealed"])
@pytest.mark.usefixtures("no_warnings")
def test_bad_segment_header(
    which: str, how: str, pristine: Layout, store: Path, rng: random.Random
) -> None:
    copy_store(pristine, store)
    seg = segment_files(store)[-1 if which == "last" else 1]
    first_lsn = int(seg.name[:20])
    damage_header(seg, how, rng)
    damaged = seg.read_bytes()

    errors = errors_of(eventlog.verify(store))
    assert errors and (errors[0].path, errors[0].offset, errors[0].lsn) == (str(seg), 0, first_lsn)
    code, output = lmg_verify(store)
    assert code == 1 and f"{seg} at offset 0" in output

    if which == "last":  # the last segment is always checked at open: the open fails
        with pytest.raises(eventlog.CorruptionError) as raised:
            eventlog.open(store)
        assert (raised.value.path, raised.value.offset, raised.value.lsn) == (
            str(seg),
            0,
            first_lsn,
        )
        assert seg.read_bytes() == damaged
        return

    # A sealed segment is trusted through its index at open, so the open succeeds; its frames
    # are intact, so a read either returns every event or raises naming the segment.
    with eventlog.open(store) as log:
        try:
            got = list(log.read())
        except eventlog.CorruptionError as err:
            assert (err.path, err.offset) == (str(seg), 0)
        else:
            assert got == pristine.records
    (store / (seg.name[:20] + ".idx")).unlink()  # now the open has to read the header
    with pytest.raises(eventlog.CorruptionError) as raised:
        eventlog.open(store)
    assert (raised.value.path, raised.value.offset, raised.value.lsn) == (str(seg), 0, first_lsn)
    assert seg.read_bytes() == damaged


# -- verify reports every damaged place -----------------------------------------------------------


@pytest.mark.parametrize(
    ("which", "indexes"),
    [("sealed", (1, 4)), ("sealed", (0, 2)), ("last", (0, 2)), ("last", (1, 3))],
)
def test_verify_resynchronises_after_damage(
    which: str, indexes: tuple[int, int], pristine: Layout, store: Path, rng: random.Random
) -> None:
    """Two damaged frames of one segment (not adjacent): both reported, in one run."""
    copy_store(pristine, store)
    seg = segment_files(store)[-1 if which == "last" else 1]
    frames = frames_of(seg)
    damaged = [frames[i] for i in indexes]
    for frame, field in zip(damaged, ("body", "first_lsn"), strict=True):
        flip_bit(seg, frame, field, rng)

    problems = eventlog.verify(store)
    assert [(p.severity, p.path, p.offset, p.lsn) for p in problems] == [
        ("error", str(seg), f.offset, f.first_lsn) for f in damaged
    ]
    code, output = lmg_verify(store)
    assert code == 1
    for frame in damaged:
        assert f"{seg} at offset {frame.offset} (LSN {frame.first_lsn})" in output
    assert "2 damaged place(s)" in output


# -- a missing segment is reported, never counted around ------------------------------------------


def test_verify_reports_a_lost_last_segment_after_a_sealed_one(
    pristine: Layout, store: Path
) -> None:
    """The last segment deleted (or lost with a restored backup): the one before it has index
    files, so the log went on after it. `verify` said ok; it is an error naming the place."""
    copy_store(pristine, store)
    lost = segment_files(store)[-1]
    lost.unlink()
    problems = eventlog.verify(store)
    assert [(p.severity, p.path, p.lsn) for p in errors_of(problems)] == [
        ("error", str(lost), int(lost.name[:20]))
    ]
    code, output = lmg_verify(store)
    assert code == 1
    assert f"error: {lost} (LSN {int(lost.name[:20])}): segment missing" in output


@pytest.mark.parametrize("which", ["first", "middle", "last"])
@pytest.mark.slow
def test_stats_refuses_a_log_with_a_missing_segment(
    which: str, pristine: Layout, store: Path
) -> None:
    """`lmg stats` counted the events of the segments left; a missing one is now an error."""
    copy_store(pristine, store)
    segment_files(store)[["first", "middle", "last"].index(which)].unlink()
    with eventlog.open(store, readonly=True) as log, pytest.raises(eventlog.CorruptionError):
        log.stats()
    command = [str(Path(sys.executable).with_name("lmg")), "stats", str(store)]
    result = subprocess.run(command, check=False, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "missing" in result.stderr
