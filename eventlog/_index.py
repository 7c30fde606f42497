"""Per-segment index files, written when a segment is sealed and rebuilt from it when needed.

``{first_lsn:020d}.idx``: a summary of the segment (LSN range, size, counts by event type,
raw and stored bytes) and a sparse index, one (first LSN, min ts, offset) entry per
`index_interval_bytes` of frames. Seeking to an LSN or a time is a bisect, then a short scan.

``{first_lsn:020d}.ids``: the id index of the segment, fixed 40-byte records sorted by id::

    0  16 id      node id, or blake2b-128 of an idempotency key (big-endian, so sorted
                  bytes are sorted UUID.int values)
    16 16 aux     the node's session id (nodes), or the request's count and type digest (keys)
    32  8 packed  lsn << 16 | kind << 8 | flags

A record holds the state a node reached within the segment (created, touched, updated,
deleted); the newest segment holding an id has its current state. The file is kept open and
searched a block at a time (`IdTable`), so its memory belongs to the page cache, not the
process.

``{first_lsn:020d}.tail``: the id index of the last (active) segment as of a frame, written
by an appender that closes with many events not yet in it, so the next appender indexes only
the frames after that one instead of decoding the whole segment (`Tail`). It names the frame
it ends with (offset and raw header, which holds the frame's CRC32C), and is used only while
that frame is still there; sealing the segment deletes it.

All three files open with an 8-byte magic and end with a CRC32C of everything before it; a
file that fails its check is treated as missing and rebuilt. Not thread-safe: the store guards
them.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from pathlib import Path

import google_crc32c
import msgspec

from ._files import Modes, create_file, open_file, read_bytes

__all__ = [
    "Entry",
    "IdTable",
    "SegmentSummary",
    "Tail",
    "load_summary",
    "load_tail",
    "pack_records",
    "save_summary",
    "save_tail",
    "write_atomically",
]

_IDX_MAGIC = b"LMGIDX\r\n"
_IDS_MAGIC = b"LMGIDS\r\n"
_TAIL_MAGIC = b"LMGTAIL\n"
_IDS_HEADER = struct.Struct("<8sQQ")  # magic, record count, next_lsn of the segment
_RECORD = struct.Struct("<16s16sQ")
RECORD = _RECORD.size  # 40

FLAG_DELETED = 1
FLAG_COMPLETED = 2
KIND_KEY = 255  # an idempotency key, not a node


class Entry(msgspec.Struct, frozen=True, gc=False):
    """What the id index knows of one id (ids are keyed by `UUID.int`).

    Not tracked by the garbage collector (it holds ints only): an index holds one per id of
    its segment, and tracked, they were a third of what each full collection walked anew
    while ingesting."""

    kind: int
    flags: int
    lsn: int
    aux: int  # the node's session as UUID.int (0: none), or a key's request digest


class SegmentSummary(msgspec.Struct, kw_only=True):
    first_lsn: int
    next_lsn: int
    size: int
    frames: int = 0
    min_ts: int = 0
    max_ts: int = 0
    raw_bytes: int = 0
    stored_bytes: int = 0
    type_counts: dict[str, int] = {}
    sparse: list[tuple[int, int, int]] = []  # (first lsn, min ts, offset) of a frame

    def seek_lsn(self, lsn: int) -> int:
        """Offset of a frame at or before the one holding `lsn`."""
        i = bisect_right([e[0] for e in self.sparse], lsn) - 1
        return self.sparse[i][2] if i >= 0 else 0

    def seek_time(self, ts: int) -> int:
        """Offset of a frame at or before the first holding an event at or after `ts`."""
        i = bisect_left([e[1] for e in self.sparse], ts) - 1
        return self.sparse[max(i, 0)][2] if self.sparse else 0


_SUMMARY_ENCODER = msgspec.msgpack.Encoder()
_SUMMARY_DECODER = msgspec.msgpack.Decoder(SegmentSummary)


def write_atomically(path: Path, data: bytes) -> None:
    """Write a file whole or not at all: temp file, fsync, rename, fsync the directory. The
    file gets the modes of the store it is in (`Modes.of`), and never goes through a link."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")  # no sharing
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # left by a killed process of the same pid, or a link: not followed
    fd = create_file(tmp, Modes.of(path.parent).file)
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # a full disk's half file: recovery leaves a live writer's alone
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _sealed(magic: bytes, payload: bytes) -> bytes:
    body = magic + payload
    return body + struct.pack("<I", google_crc32c.value(body))


_CRC_CHUNK = 1 << 20


def _sound(magic: bytes, data: bytes) -> bool:
    """Whether `data` is `magic`, a payload and the CRC32C of both. The checksum is taken a
    MiB at a time (google_crc32c takes bytes only, not a view), not over a copy of all but
    the last four bytes: a tail file was copied three times on the way to its table."""
    size = len(data)
    if size < len(magic) + 4 or data[: len(magic)] != magic:
        return False
    (crc,) = struct.unpack_from("<I", data, size - 4)
    found = 0
    for start in range(0, size - 4, _CRC_CHUNK):
        found = google_crc32c.extend(found, data[start : min(start + _CRC_CHUNK, size - 4)])
    return bool(crc == found)


def _unsealed(magic: bytes, data: bytes) -> memoryview | None:
    """The payload of `data` (a view of it: no copy) if it is sound (`_sound`)."""
    if not _sound(magic, data):
        return None
    return memoryview(data)[len(magic) : -4]


def save_summary(path: Path, summary: SegmentSummary) -> None:
    write_atomically(path, _sealed(_IDX_MAGIC, _SUMMARY_ENCODER.encode(summary)))


def load_summary(path: Path) -> SegmentSummary | None:
    """The summary stored at `path`, or None if it is missing or damaged."""
    try:
        payload = _unsealed(_IDX_MAGIC, read_bytes(path))
        return None if payload is None else _SUMMARY_DECODER.decode(payload)
    except (OSError, msgspec.DecodeError):
        return None


class Tail(msgspec.Struct, kw_only=True):
    """The id index of the active segment up to the end of one frame, and its type counts."""

    first_lsn: int  # the segment's
    last_offset: int  # where the last frame it covers starts
    last_head: bytes  # that frame's header as stored (its length, CRC32C and LSNs)
    type_counts: dict[str, int]
    records: bytes  # `.ids` records, sorted by id


_TAIL_ENCODER = msgspec.msgpack.Encoder()
_TAIL_DECODER = msgspec.msgpack.Decoder(Tail)


def pack_records(entries: Iterable[tuple[int, Entry]]) -> bytes:
    """Id entries as `.ids` records, sorted by id."""
    items = sorted(entries, key=lambda item: item[0])
    return b"".join(
        _RECORD.pack(key.to_bytes(16), e.aux.to_bytes(16), e.lsn << 16 | e.kind << 8 | e.flags)
        for key, e in items
    )


def save_tail(path: Path, tail: Tail) -> None:
    write_atomically(path, _sealed(_TAIL_MAGIC, _TAIL_ENCODER.encode(tail)))


def load_tail(path: Path) -> tuple[Tail, IdTable] | None:
    """The tail at `path` and its entries as a table searched by bisect (nothing unpacked
    until looked up), or None if it is missing or damaged."""
    try:
        payload = _unsealed(_TAIL_MAGIC, read_bytes(path))
        tail = None if payload is None else _TAIL_DECODER.decode(payload)
    except (OSError, msgspec.DecodeError):
        return None
    if tail is None or len(tail.records) % RECORD:
        return None
    table = IdTable(bytes(_IDS_HEADER.size) + tail.records, len(tail.records) // RECORD, -1)
    return tail, table


_BLOCK = 102  # records a lookup in a file reads: 4,080 bytes, within a page or two


class IdTable:
    """A segment's id index: sorted fixed records, searched by bisect. Either in memory (a
    tail's, `load_tail`) or in a sealed segment's file (`load`), of which it keeps the first
    key of every block of `_BLOCK` records (16 bytes a block, 0.4% of the file) and the
    file open: a lookup bisects those keys, reads one block with `os.pread` and bisects it.
    The file's pages stay in the page cache and out of this process's resident set: a
    mapping of it (as before) became resident as a whole after a few hundred lookups (the
    kernel maps the 16 pages around each fault), 4 MiB a sealed segment, and an embedded
    graph's peak at a million events was a fifth of it (tests/benchmarks/probe_rss_reads.py)."""

    def __init__(
        self,
        data: bytes,
        count: int,
        next_lsn: int,
        *,
        fd: int | None = None,
        firsts: list[bytes] | None = None,
        bounds: tuple[int, int] | None = None,
    ) -> None:
        self._data = data  # the header and records (in memory), or b"" (`fd`)
        self._fd = fd
        self._firsts = firsts or []
        self._count = count
        self.next_lsn = next_lsn
        if bounds is None:
            keys = _Keys(data, count)
            bounds = (int.from_bytes(keys[0]), int.from_bytes(keys[count - 1])) if count else (1, 0)
        self.min_key, self.max_key = bounds

    @staticmethod
    def write(path: Path, entries: Iterable[tuple[int, Entry]], next_lsn: int) -> None:
        records = pack_records(entries)
        header = _IDS_HEADER.pack(_IDS_MAGIC, len(records) // RECORD, next_lsn)
        header = header[len(_IDS_MAGIC) :]
        write_atomically(path, _sealed(_IDS_MAGIC, header + records))

    @classmethod
    def load(cls, path: Path, *, verify: bool = True) -> IdTable | None:
        """The table at `path`, or None if missing or damaged. `verify` checks its checksum;
        either way the file is read once, a MiB at a time, for the first key of each block
        (a sealed segment's files are only ever replaced whole, by the same content)."""
        try:
            fd = open_file(path)
        except OSError:
            return None
        try:
            table = cls._read(fd, verify=verify)
        except OSError:
            table = None
        if table is None:
            os.close(fd)
        return table

    @classmethod
    def _read(cls, fd: int, *, verify: bool) -> IdTable | None:
        size = os.fstat(fd).st_size
        header = os.pread(fd, _IDS_HEADER.size, 0)
        if size < _IDS_HEADER.size + 4 or len(header) != _IDS_HEADER.size:
            return None
        magic, count, next_lsn = _IDS_HEADER.unpack(header)
        if magic != _IDS_MAGIC or size != _IDS_HEADER.size + count * RECORD + 4:
            return None
        crc = google_crc32c.value(header)
        firsts: list[bytes] = []
        last = b""
        step = (_CRC_CHUNK // (_BLOCK * RECORD)) * _BLOCK * RECORD  # whole blocks
        for offset in range(0, count * RECORD, step):
            chunk = os.pread(fd, min(step, count * RECORD - offset), _IDS_HEADER.size + offset)
            if len(chunk) != min(step, count * RECORD - offset):
                return None
            if verify:
                crc = google_crc32c.extend(crc, chunk)
            firsts.extend(chunk[i : i + 16] for i in range(0, len(chunk), _BLOCK * RECORD))
            last = chunk[len(chunk) - RECORD : len(chunk) - RECORD + 16]
        if verify:
            (stored,) = struct.unpack("<I", os.pread(fd, 4, size - 4))
            if stored != crc:
                return None
        bounds = (int.from_bytes(firsts[0]), int.from_bytes(last)) if count else (1, 0)
        return cls(b"", count, next_lsn, fd=fd, firsts=firsts, bounds=bounds)

    def get(self, key: int) -> Entry | None:
        if self._fd is None and not self._data:  # never "not found" from a closed file
            raise ValueError("lookup in a closed id table")
        if not self.min_key <= key <= self.max_key:
            return None
        wanted = key.to_bytes(16)
        data, base, count = self._data, _IDS_HEADER.size, self._count
        if self._fd is not None:  # the one block that may hold it
            block = bisect_right(self._firsts, wanted) - 1
            if block < 0:
                return None
            first = block * _BLOCK
            count = min(_BLOCK, self._count - first)
            data = os.pread(self._fd, count * RECORD, _IDS_HEADER.size + first * RECORD)
            base = 0
        keys = _Keys(data, count, base)
        i = bisect_left(keys, wanted)
        if i == count or keys[i] != wanted:
            return None
        _key, aux, packed = _RECORD.unpack_from(data, base + i * RECORD)
        return Entry(packed >> 8 & 0xFF, packed & 0xFF, packed >> 16, int.from_bytes(aux))

    def items(self) -> Iterator[tuple[int, Entry]]:
        """Every (key, entry), in key order."""
        frm = int.from_bytes
        for records in self._chunks():
            for key, aux, packed in _RECORD.iter_unpack(records):
                yield frm(key), Entry(packed >> 8 & 0xFF, packed & 0xFF, packed >> 16, frm(aux))

    def _chunks(self) -> Iterator[bytes | memoryview]:
        size = self._count * RECORD
        if self._fd is None and not self._data:
            raise ValueError("read of a closed id table")
        if self._fd is None:
            yield memoryview(self._data)[_IDS_HEADER.size : _IDS_HEADER.size + size]
            return
        step = (_CRC_CHUNK // RECORD) * RECORD
        for offset in range(0, size, step):
            yield os.pread(self._fd, min(step, size - offset), _IDS_HEADER.size + offset)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # a lookup after raises: it must not read what reuses the number


class _Keys:
    """A sequence view of the records' ids, for bisect."""

    def __init__(self, data: bytes, count: int, base: int = _IDS_HEADER.size) -> None:
        self._data = data
        self._count = count
        self._base = base

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, i: int) -> bytes:
        start = self._base + i * RECORD
        return self._data[start : start + 16]
