"""Recovery on open, through real files: torn tails, garbage, rotations cut short, stray temp
files, missing segments, damaged or stale index files.

Every case starts from a pristine store built once per module, copied with `shutil`, then
damaged by writing real bytes; the byte layout used here is the one `_format.py` documents.
A torn tail of the last segment is cut (with `TornTailTruncated`); the events before it must
come back byte for byte, and appends must continue at the LSN after them.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import google_crc32c
import msgspec
import pytest

import eventlog

SEGMENT_BYTES = 4096
SEGMENT_HEADER = 32
FRAME_HEADER = 48
FRAME_MAGIC = b"LMGF"
SEGMENT_MAGIC = b"LMGSEG\r\n"
IDX_MAGIC = b"LMGIDX\r\n"

TEXT = (
    "the agent asked the model to summarise the conversation about append only logs and "
    "checksums then it compared segment rotation with index rebuilding before answering a "
    "question on durability fsync torn writes recovery and the cost of compression"
)
WORDS = TEXT.split()


# -- the pristine store -----------------------------------------------------------------------


def sentence(i: int, k: int, words: int = 28) -> str:
    """Plain English-like text, different per (i, k) and compressible (zstd codec 1)."""
    picked = [WORDS[(i * 7 + k * 3 + j * (1 + (i + k) % 5)) % len(WORDS)] for j in range(words)]
    return f"Prompt {i}.{k}: " + " ".join(picked).capitalize() + "."


class Layout(NamedTuple):
    """What a test needs to know of a pristine store."""

    path: Path
    records: list[eventlog.Record]  # every event, as read back
    session: uuid.UUID
    first_prompt: uuid.UUID  # a prompt stored in segment 0 (sealed)


def segment_files(path: Path) -> list[Path]:
    return sorted(path.glob("*.seg"))


def build_store(path: Path, *, segments: int, tail_frames: int, **options: Any) -> Layout:
    """A store with `segments` segments whose last one holds `tail_frames` frames.

    Each frame is one `add_prompts_batch` of three prompts (a few hundred bytes, compressed).
    A rotation happens at the start of the commit after a segment is full, so the append that
    makes a new segment appear is the first frame in it.
    """
    with eventlog.open(path, segment_bytes=SEGMENT_BYTES, **options) as log:
        session = log.create_session(metadata={"user": "recovery-tests"}).id
        i = 0

        def batch() -> list[uuid.UUID]:
            nonlocal i
            i += 1
            return log.add_prompts_batch([(session, sentence(i, k)) for k in range(3)])

        first_prompt = batch()[0]
        while len(segment_files(path)) < segments:
            batch()
        for _ in range(tail_frames - 1):
            batch()
        records = list(log.read())
    assert len(segment_files(path)) == segments
    assert len(frames_of(segment_files(path)[-1])) == tail_frames
    return Layout(path, records, session, first_prompt)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    """Three segments, the last with four frames."""
    return build_store(tmp_path_factory.mktemp("pristine") / "store", segments=3, tail_frames=4)


@pytest.fixture(scope="module")
def fresh_tail(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    """Three segments, the last holding a single frame (the first after a rotation)."""
    return build_store(tmp_path_factory.mktemp("fresh") / "store", segments=3, tail_frames=1)


def copy_store(layout: Layout, dest: Path) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(layout.path, dest)
    return dest


# -- the bytes on disk, read independently of the library ---------------------------------------


class FrameInfo(NamedTuple):
    offset: int
    size: int  # header + stored body
    first_lsn: int
    events: int
    codec: int

    @property
    def end(self) -> int:
        return self.offset + self.size


def frames_of(seg: Path) -> list[FrameInfo]:
    """Walk a healthy segment's frames by their length fields."""
    data = seg.read_bytes()
    found: list[FrameInfo] = []
    offset = SEGMENT_HEADER
    while offset < len(data):
        assert data[offset : offset + 4] == FRAME_MAGIC, f"{seg}: no frame at {offset}"
        (length,) = struct.unpack_from("<I", data, offset + 4)
        first_lsn, count = struct.unpack_from("<QI", data, offset + 12)
        found.append(FrameInfo(offset, FRAME_HEADER + length, first_lsn, count, data[offset + 40]))
        offset += FRAME_HEADER + length
    assert offset == len(data), f"{seg}: frames overrun the file"
    return found


def segment_header(first_lsn: int) -> bytes:
    """A segment header as `_format.py` documents it (magic, version 1, flags, LSN, time, CRC)."""
    head = struct.pack("<8sHHQq", SEGMENT_MAGIC, 1, 0, first_lsn, time.time_ns())
    return head + struct.pack("<I", google_crc32c.value(head))


def snapshot(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


def read_all(path: Path) -> list[eventlog.Record]:
    with eventlog.open(path) as log:
        return list(log.read())


def recovery_notes(path: Path) -> list[dict[str, Any]]:
    log_file = path / "recovery.jsonl"
    if not log_file.exists():
        return []
    return [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]


def errors_of(problems: list[eventlog.Problem]) -> list[eventlog.Problem]:
    return [p for p in problems if p.severity == "error"]


@pytest.fixture
def no_warnings() -> Iterator[None]:
    """Fail on any warning, whatever the pytest configuration says."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def check_recovered(
    log: eventlog.EventLog,
    layout: Layout,
    *,
    keep_lsn: int,
    segment_bytes: bytes,
    dropped: int,
) -> None:
    """In a log just opened (and recovered): the valid prefix is intact, byte for byte, the
    dropped bytes are reported, and appends continue at the LSN after the prefix."""
    store = log.path
    last = segment_files(store)[-1]
    assert last.read_bytes() == segment_bytes, "recovery changed bytes of the valid prefix"
    for name, data in snapshot(layout.path).items():
        if name != last.name:
            assert (store / name).read_bytes() == data, f"recovery touched {name}"
    assert list(log.read()) == layout.records[:keep_lsn]
    stats = log.stats()
    assert (stats.events, stats.recovered_bytes) == (keep_lsn, dropped)
    added = log.add_prompt(layout.session, "appended after recovery")
    tail = list(log.read(keep_lsn))
    assert [r.lsn for r in tail] == [keep_lsn]
    assert getattr(tail[0].event, "id", None) == added
    assert list(log.read()) == [*layout.records[:keep_lsn], *tail]


# -- torn tails -----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("which", ["several frames in the last segment", "frame opens the segment"])
def test_torn_tail_at_every_byte_offset(
    which: str, pristine: Layout, fresh_tail: Layout, tmp_path: Path
) -> None:
    layout = pristine if which.startswith("several") else fresh_tail
    last = segment_files(layout.path)[-1]
    original = last.read_bytes()
    frame = frames_of(last)[-1]
    assert frame.end == len(original)
    assert 100 < frame.size < 1000, "the last frame should be a few hundred bytes"
    assert frame.events == 3 and frame.first_lsn + frame.events == len(layout.records)
    offsets = list(range(frame.offset, frame.end + 1))
    if layout is fresh_tail:  # the frame header byte by byte, then a sample of its body
        offsets = offsets[: FRAME_HEADER + 2] + offsets[FRAME_HEADER + 2 :: 13] + offsets[-2:]

    for cut in offsets:
        store = copy_store(layout, tmp_path / "store")
        with open(store / last.name, "r+b") as f:
            f.truncate(cut)
        torn = frame.offset < cut < frame.end
        dropped = cut - frame.offset if torn else 0
        keep = frame.first_lsn if cut < frame.end else len(layout.records)
        kept = original[:cut] if not torn else original[: frame.offset]

        problems = eventlog.verify(store)
        if torn:
            assert [(p.severity, p.path, p.offset, p.lsn) for p in problems] == [
                ("warning", str(store / last.name), frame.offset, frame.first_lsn)
            ], f"cut at {cut}"
            with pytest.warns(eventlog.TornTailTruncated) as caught:
                log = eventlog.open(store, segment_bytes=SEGMENT_BYTES)
            assert len(caught) == 1, f"cut at {cut}"
            message = str(caught[0].message)  # names the file, the offset and the bytes cut
            assert last.name in message and f"{dropped} bytes" in message, message
            assert f"offset {frame.offset}" in message, message
            (note,) = recovery_notes(store)
            assert {k: v for k, v in note.items() if k != "time"} == {
                "file": last.name,
                "offset": frame.offset,
                "bytes": dropped,
                "next_lsn": frame.first_lsn,
            }, f"cut at {cut}"
        else:  # on a frame boundary nothing is torn: no warning, nothing recorded
            assert problems == [], f"cut at {cut}"
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                log = eventlog.open(store, segment_bytes=SEGMENT_BYTES)
            assert recovery_notes(store) == []
        with log:
            check_recovered(log, layout, keep_lsn=keep, segment_bytes=kept, dropped=dropped)
        assert eventlog.verify(store) == [], f"cut at {cut}"


def garbage(kind: str, size: int, rng: random.Random, layout: Layout) -> bytes:
    """Bytes a crash or a stray writer might leave after the last frame."""
    last_frame = frames_of(segment_files(layout.path)[-1])[-1]
    next_lsn = len(layout.records)
    if kind == "random":
        return rng.randbytes(size)
    if kind == "zeros":
        return bytes(size)
    if kind == "magic":  # starts like a frame, then noise
        return FRAME_MAGIC + rng.randbytes(size - 4)
    if kind == "plausible header":  # a well-formed header at the right LSN, wrong checksum
        body = rng.randbytes(size - FRAME_HEADER)
        ts = time.time_ns()
        head = struct.pack("<4sII", FRAME_MAGIC, len(body), rng.getrandbits(32))
        head += struct.pack("<QIqqBBHI", next_lsn, 1, ts, ts, 1, 0, 0, 3 * len(body))
        return head + body
    if kind == "header claiming more":  # a header whose body never made it to disk
        ts = time.time_ns()
        head = struct.pack("<4sII", FRAME_MAGIC, 10_000, rng.getrandbits(32))
        head += struct.pack("<QIqqBBHI", next_lsn, 2, ts, ts, 1, 0, 0, 30_000)
        return head + rng.randbytes(size - FRAME_HEADER)
    if kind == "copy of the last frame":  # intact checksum, but an LSN already used
        data = segment_files(layout.path)[-1].read_bytes()
        return data[last_frame.offset : last_frame.end][:size]
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "size"),
    [
        ("random", 1),
        ("random", 3),
        ("random", 47),
        ("random", 48),
        ("random", 49),
        ("random", 777),
        ("random", 5000),
        ("zeros", 4096),
        ("magic", 4),
        ("magic", 5),
        ("magic", 48),
        ("magic", 300),
        ("plausible header", 200),
        ("header claiming more", 100),
        ("copy of the last frame", 10_000),
    ],
)
def test_random_garbage_appended(
    kind: str, size: int, rng: random.Random, pristine: Layout, store: Path
) -> None:
    copy_store(pristine, store)
    last = segment_files(store)[-1]
    original = last.read_bytes()
    junk = garbage(kind, size, rng, pristine)
    with open(last, "ab") as f:
        f.write(junk)

    problems = eventlog.verify(store)
    assert [(p.severity, p.offset) for p in problems] == [("warning", len(original))]
    with pytest.warns(eventlog.TornTailTruncated):
        log = eventlog.open(store, segment_bytes=SEGMENT_BYTES)
    with log:
        check_recovered(
            log, pristine, keep_lsn=len(pristine.records), segment_bytes=original, dropped=len(junk)
        )
    assert eventlog.verify(store) == []


# -- rotations cut short, empty segments, stray files --------------------------------------------


def test_empty_segment(pristine: Layout, store: Path, no_warnings: None) -> None:
    """A rotation's new segment holding only its header (its first append was rejected)."""
    n = full_last_segment(pristine, store)
    with eventlog.open(store, segment_bytes=SEGMENT_BYTES) as log:
        with pytest.raises(eventlog.UnknownNode):  # rotates, then rejects: nothing written
            log.add_prompt(uuid.uuid4(), "a prompt for a session that does not exist")
        before = list(log.read())
    last = segment_files(store)[-1]
    assert last.name == f"{n:020d}.seg" and len(before) == n
    assert len(last.read_bytes()) == SEGMENT_HEADER, "expected a segment holding its header only"
    assert eventlog.verify(store) == []

    with eventlog.open(store, segment_bytes=SEGMENT_BYTES) as log:
        assert list(log.read()) == before
        assert list(log.read(n)) == []
        assert log.stats().events == n
        log.add_prompt(pristine.session, "the first frame of the empty segment")
        assert [r.lsn for r in log.read(n)] == [n]
    assert len(frames_of(last)) == 1
    assert eventlog.verify(store) == []


def test_zero_length_last_segment_is_an_error(pristine: Layout, store: Path) -> None:
    """Segments are created as temp files and renamed once their header is synced, so an
    empty `.seg` file is not something a crash leaves: it is damage, and named as such."""
    copy_store(pristine, store)
    empty = store / f"{len(pristine.records):020d}.seg"
    empty.write_bytes(b"")
    with pytest.raises(eventlog.CorruptionError) as raised:
        eventlog.open(store)
    assert (raised.value.path, raised.value.offset) == (str(empty), 0)
    assert raised.value.lsn == len(pristine.records)
    assert empty.read_bytes() == b""


def full_last_segment(layout: Layout, store: Path) -> int:
    """Fill the copy's last segment to the rotation size without rotating; its next LSN."""
    copy_store(layout, store)
    with eventlog.open(store, segment_bytes=SEGMENT_BYTES) as log:
        i = 0
        while segment_files(store)[-1].stat().st_size < SEGMENT_BYTES:
            i += 1
            log.add_prompt(layout.session, sentence(1000 + i, 1))
        assert log.stats().segments == 3
        return log.stats().events


@pytest.mark.parametrize(
    "leftover",
    [
        "header-only segment",
        "seg.tmp with half a header",
        "seg.tmp with a whole header",
        "empty seg.tmp",
    ],
)
def test_interrupted_rotation(
    leftover: str, pristine: Layout, store: Path, no_warnings: None
) -> None:
    """A crash anywhere in a rotation: seal (index files), create `N.seg.tmp`, rename it."""
    next_lsn = full_last_segment(pristine, store)
    sealed = segment_files(store)[-1]
    before = read_all(store)
    name = f"{next_lsn:020d}.seg"
    if leftover == "header-only segment":
        (store / name).write_bytes(segment_header(next_lsn))
    else:
        header = segment_header(next_lsn)
        data = {"seg.tmp with half a header": header[:16], "empty seg.tmp": b""}.get(
            leftover, header
        )
        (store / (name + ".tmp")).write_bytes(data)
    assert errors_of(eventlog.verify(store)) == []

    with eventlog.open(store, segment_bytes=SEGMENT_BYTES) as log:
        assert not list(store.glob("*.tmp"))
        assert list(log.read()) == before
        log.add_prompt(pristine.session, "after the interrupted rotation")
        assert [r.lsn for r in log.read(next_lsn)] == [next_lsn]
    assert (store / name).exists(), "the append should have completed the rotation"
    assert len(frames_of(store / name)) == 1
    assert (store / f"{sealed.name[:20]}.idx").exists()
    assert (store / f"{sealed.name[:20]}.ids").exists()
    assert eventlog.verify(store) == []
    assert len(read_all(store)) == next_lsn + 1


def test_lost_newest_segment_is_an_error(pristine: Layout, store: Path) -> None:
    """A rotation creates the new segment before it writes the old one's index files, so
    index files beside the last segment mean the segment after it (with acknowledged
    events) was lost: an error naming the place, never a silent reuse of its LSNs."""
    next_lsn = full_last_segment(pristine, store)
    with eventlog.open(store, segment_bytes=SEGMENT_BYTES) as log:  # rotate for real...
        log.add_prompt(pristine.session, "this frame and its segment are lost")
    (store / f"{next_lsn:020d}.seg").unlink()  # ...then lose the new segment
    sealed = segment_files(store)[-1]
    with pytest.raises(eventlog.CorruptionError, match="segment after it is missing") as info:
        eventlog.open(store, segment_bytes=SEGMENT_BYTES)
    assert info.value.path == str(sealed)


def test_stray_temp_files_removed(pristine: Layout, store: Path, no_warnings: None) -> None:
    copy_store(pristine, store)
    n = len(pristine.records)
    strays = {
        "00000000000000000000.idx.tmp": b"LMGIDX\r\n half an index",
        "00000000000000000000.ids.tmp": b"",
        f"{n:020d}.seg.tmp": segment_header(n)[:20],
        f"{n + 1000:020d}.seg.tmp": segment_header(n + 1000),
        "notes.txt.tmp": b"anything",
    }
    for name, data in strays.items():
        (store / name).write_bytes(data)
    problems = eventlog.verify(store)
    assert errors_of(problems) == []
    assert sorted(p.path for p in problems) == sorted(str(store / name) for name in strays)

    with eventlog.open(store) as log:
        assert sorted(p.name for p in store.iterdir() if p.name.endswith(".tmp")) == []
        assert list(log.read()) == pristine.records
        log.add_prompt(pristine.session, "after the cleanup")
    assert eventlog.verify(store) == []
    assert snapshot(store).keys() == snapshot(pristine.path).keys()


def test_a_duckdb_spill_directory_is_left_to_duckdb(
    pristine: Layout, store: Path, no_warnings: None
) -> None:
    """``projections.duckdb.tmp`` is DuckDB's spill directory (kept by the projections, or
    left by a fold killed while it spilled), not a temp file of the log's: recovery leaves
    it. Before, it tried to unlink it, and every open of the store failed."""
    copy_store(pristine, store)
    spill = store / "projections.duckdb.tmp"
    spill.mkdir()
    (spill / "duckdb_temp_storage_DEFAULT-0.tmp").write_bytes(b"spilled")
    assert eventlog.verify(store) == []  # nor does verify call it a temp file of the log's
    with eventlog.open(store) as log:
        assert list(log.read()) == pristine.records
    assert (spill / "duckdb_temp_storage_DEFAULT-0.tmp").read_bytes() == b"spilled"


def test_a_temp_file_a_live_process_is_writing_outside_the_lock_is_left_to_it(
    pristine: Layout, store: Path, no_warnings: None
) -> None:
    """An index a reader builds (``NAME.PID.THREAD.tmp``) and the service's advert
    (``.service.json.PID.tmp``) are written without the store's lock: a process opening
    the store meanwhile must not unlink them mid-write (the writer's rename then failed).
    Before, recovery removed every ``*.tmp``. A dead writer's are still litter, and so is
    one untouched for long whatever its pid (reused, or another namespace's)."""
    copy_store(pristine, store)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        first = segment_files(store)[0].name
        live = [
            store / f"{first[:20]}.idx.{sleeper.pid}.140000000000.tmp",
            store / f".service.json.{sleeper.pid}.tmp",
        ]
        dead_pid = _a_dead_pid()
        dead = [
            store / f"{first[:20]}.idx.{dead_pid}.140000000000.tmp",
            store / f".service.json.{dead_pid}.tmp",
            store / f"{first[:20]}.seg.tmp",
            store / "notes.1733299200123.tmp",  # no pid can be that large (os.kill overflows)
            store / f".tokens.json.{sleeper.pid}.tmp",  # a live pid, but untouched for long
        ]
        for path in live + dead:
            path.write_bytes(b"half written")
        long_ago = time.time() - 3600  # past `_STALE_TEMP_S`: a pid reused, a pid 1
        os.utime(dead[-1], (long_ago, long_ago))
        with eventlog.open(store) as log:
            assert list(log.read()) == pristine.records
        assert [p.read_bytes() for p in live] == [b"half written"] * 2
        assert not any(p.exists() for p in dead)
    finally:
        sleeper.kill()
        sleeper.wait()


def _a_dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# -- segments missing --------------------------------------------------------------------------


@pytest.mark.parametrize("with_indexes", [True, False], ids=["index files kept", "all files"])
def test_missing_middle_segment_is_an_error(
    with_indexes: bool, pristine: Layout, store: Path
) -> None:
    copy_store(pristine, store)
    _first, middle, last = segment_files(store)
    gap_start = int(middle.name[:20])
    middle.unlink()
    if not with_indexes:
        for suffix in (".idx", ".ids"):
            (store / (middle.name[:20] + suffix)).unlink()
    segments_before = {p.name: p.read_bytes() for p in segment_files(store)}

    with pytest.raises(eventlog.CorruptionError) as raised:
        eventlog.open(store)
    err = raised.value
    assert err.path == str(last)
    assert err.lsn == gap_start
    assert f"next one starts at {int(last.name[:20])}" in str(err)
    assert "missing" in str(err)
    assert {p.name: p.read_bytes() for p in segment_files(store)} == segments_before

    errors = errors_of(eventlog.verify(store))
    assert [(e.path, e.lsn) for e in errors] == [(str(last), gap_start)]
    assert "missing" in errors[0].message

    # A read-only handle runs no recovery; its reads must not stop quietly at the gap either.
    with eventlog.open(store, readonly=True) as log:
        got: list[eventlog.Record] = []
        with pytest.raises(eventlog.CorruptionError) as raised:
            got.extend(log.read())
        assert got == pristine.records[:gap_start]
        assert (raised.value.path, raised.value.lsn) == (str(middle), gap_start)


def test_missing_first_segment(pristine: Layout, store: Path) -> None:
    copy_store(pristine, store)
    first, second, _ = segment_files(store)
    first.unlink()
    with pytest.raises(eventlog.CorruptionError) as raised:
        eventlog.open(store)
    assert raised.value.path == str(second)
    assert raised.value.lsn == int(second.name[:20])
    assert "LSN 0" in str(raised.value)
    assert not (store / "00000000000000000000.seg").exists(), "open must not start a new log"

    errors = errors_of(eventlog.verify(store))
    assert [(e.path, e.lsn) for e in errors] == [(str(second), 0)]

    # A read-only handle runs no recovery; reading from LSN 0 must not start at a later LSN.
    with eventlog.open(store, readonly=True) as log:
        with pytest.raises(eventlog.CorruptionError) as raised:
            next(log.read())
        assert (raised.value.path, raised.value.lsn) == (str(second), int(second.name[:20]))
        with pytest.raises(eventlog.CorruptionError):
            next(log.read(start_time=0))
        assert list(log.read(int(second.name[:20]))) == pristine.records[int(second.name[:20]) :]


# -- index files ----------------------------------------------------------------------------------


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "flip":
        for at in (9, len(data) // 2, len(data) - 1):  # payload, middle, checksum
            flipped = bytearray(data)
            flipped[at] ^= 0x20
            data = bytes(flipped)
        path.write_bytes(data)
    elif how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "delete":
        path.unlink()
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["flip", "truncate", "empty", "delete"])
@pytest.mark.parametrize("suffix", [".idx", ".ids"])
@pytest.mark.parametrize("segment", [0, 1], ids=["first sealed", "newest sealed"])
@pytest.mark.usefixtures("no_warnings")
def test_damaged_index_is_rebuilt(
    segment: int, suffix: str, how: str, pristine: Layout, store: Path
) -> None:
    copy_store(pristine, store)
    target = store / (segment_files(store)[segment].name[:20] + suffix)
    damage(target, how)
    problems = eventlog.verify(store)
    assert [(p.severity, p.path) for p in problems] == [("warning", str(target))]

    with eventlog.open(store, segment_bytes=SEGMENT_BYTES) as log:
        assert list(log.read()) == pristine.records
        start = pristine.records[len(pristine.records) // 2].lsn
        assert list(log.read(start)) == pristine.records[start:]
        # A response to a prompt of segment 0 looks the prompt up in the sealed id indexes.
        log.add_response(pristine.first_prompt, "an answer", eventlog.TokenUsage(3, 4))
        log.add_prompt(pristine.session, "appended after the index was damaged")
        n = len(pristine.records)
        assert [r.lsn for r in log.read(n)] == [n, n + 1]
    assert target.exists()
    assert target.read_bytes() == (pristine.path / target.name).read_bytes()
    assert eventlog.verify(store) == []


def rewrite_summary(path: Path, **changes: int) -> None:
    """Change fields of an `.idx` summary, keeping it well-formed (magic, CRC32C at the end)."""
    data = path.read_bytes()
    assert data.startswith(IDX_MAGIC)
    summary = msgspec.msgpack.decode(data[len(IDX_MAGIC) : -4])
    summary.update(changes)
    body = IDX_MAGIC + msgspec.msgpack.encode(summary)
    path.write_bytes(body + struct.pack("<I", google_crc32c.value(body)))


@pytest.mark.parametrize("delta", [-300, -1, 1, 4096], ids=lambda d: f"size{d:+d}")
def test_index_stale(delta: int, pristine: Layout, store: Path, no_warnings: None) -> None:
    """An `.idx` with a valid checksum that describes another size of its segment."""
    copy_store(pristine, store)
    seg = segment_files(store)[0]
    idx = store / (seg.name[:20] + ".idx")
    stale_next = int(segment_files(store)[1].name[:20]) + 5  # would break the chain if trusted
    rewrite_summary(idx, size=seg.stat().st_size + delta, next_lsn=stale_next)
    problems = eventlog.verify(store)
    assert [(p.severity, p.path) for p in problems] == [("warning", str(idx))]

    with eventlog.open(store, segment_bytes=SEGMENT_BYTES) as log:
        assert list(log.read()) == pristine.records
        assert list(log.read(5, 9)) == pristine.records[5:9]
        assert log.stats().events == len(pristine.records)
        log.add_prompt(pristine.session, "after the stale index")
    assert idx.read_bytes() == (pristine.path / idx.name).read_bytes()
    assert eventlog.verify(store) == []
