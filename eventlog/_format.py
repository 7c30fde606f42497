"""The bytes on disk: segment header, frame header, frame body. Pure functions, thread-safe.

A segment file ``{first_lsn:020d}.seg`` is a 32-byte header followed by frames::

    segment header (32 bytes, little-endian)
    0   8  magic      b"LMGSEG\\r\\n"
    8   2  version    format version, 1
    10  2  flags      0
    12  8  first_lsn  LSN of the first event in this segment (equals the file name)
    20  8  created    ns since epoch, informational
    28  4  crc32c     of bytes 0..28

    frame (48-byte header + body)
    0   4  magic      b"LMGF"
    4   4  length     body length in bytes (as stored, i.e. compressed)
    8   4  crc32c     over header bytes 12..48 followed by the body
    12  8  first_lsn  LSN of the frame's first event
    20  4  count      number of events in the frame (>= 1)
    24  8  min_ts     smallest `ts` of the frame's events
    32  8  max_ts     largest `ts` of the frame's events
    40  1  codec      0: raw MessagePack, 1: one zstd frame of it, 2: two zstd frames of its
                      halves, after a 12-byte table (u32 lengths of each, u32 raw split point)
    41  1  flags      0
    42  2  reserved   0
    44  4  raw_length length of the MessagePack before compression
    48  .. body

The last segment may end in a reserve: zeros from the end of its last frame to a file size
that is a multiple of `RESERVE_ALIGN` (64 KiB), written and fsynced ahead of the writer so a
durable append overwrites blocks the file already has and syncs with `fdatasync` (no size,
no block allocation to journal). A frame header read there is all zeros: the end of the log.
Zeros that do not reach such a boundary are a torn tail like any other bytes. A writer trims
its reserve when it closes and before it seals the segment, so sealed segments never have one.

The MessagePack body is an array of requests, each ``[events, idempotency_key]``: one
request is what one caller appended at once; a frame carries one group commit. The CRC
covers everything but the magic, length and itself, so a torn or flipped frame never passes.

A bulk request's events may be encoded once, in their caller's thread, before the lock
sets their ``ts`` and fills responses' ``session_id`` (`encode_marked`): those values are
encoded as marks of the width the real ones take, which `Marked.stored` overwrites. The
bytes are then those an encoding of the stored events would give, byte for byte.
"""

from __future__ import annotations

import functools
import itertools
import struct
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import google_crc32c
import msgspec
import zstandard

from .events import Event, EventBase, upcast

__all__ = [
    "CODEC_RAW",
    "CODEC_ZSTD",
    "ENCODER",
    "FRAME_HEADER",
    "FRAME_MAGIC",
    "RESERVE_ALIGN",
    "SEGMENT_HEADER",
    "FrameError",
    "FrameHeader",
    "Marked",
    "Request",
    "check_frame",
    "decode_body",
    "encode_body",
    "encode_frame",
    "encode_marked",
    "encode_segment_header",
    "parse_frame_header",
    "parse_segment_header",
    "segment_name",
    "unpack_body",
]

SEGMENT_MAGIC = b"LMGSEG\r\n"
FORMAT_VERSION = 1
_SEGMENT = struct.Struct("<8sHHQqI")
SEGMENT_HEADER = _SEGMENT.size  # 32

FRAME_MAGIC = b"LMGF"
_FRAME = struct.Struct("<4sIIQIqqBBHI")
FRAME_HEADER = _FRAME.size  # 48
_CRC_FROM = 12

RESERVE_ALIGN = 64 * 1024  # a reserve of zeros ends the file on a multiple of this

CODEC_RAW = 0
CODEC_ZSTD = 1
CODEC_ZSTD_SPLIT = 2
_CODECS = (CODEC_RAW, CODEC_ZSTD, CODEC_ZSTD_SPLIT)
MAX_BODY = 1 << 31
SPLIT_FROM = 256 * 1024  # bodies this large are compressed as two halves, in parallel
_CHUNKS = struct.Struct("<III")  # codec 2: stored length of the first half, of the second, raw


class FrameError(ValueError):
    """A frame or header fails its checks; the caller knows where and decides what it means."""


class Request(msgspec.Struct, array_like=True, gc=False):
    """One caller's append: its events, stored contiguously, and its idempotency key."""

    events: list[Event]
    key: str | None = None


class _Encoded(msgspec.Struct, array_like=True, gc=False):
    """A `Request` whose events are MessagePack already (`Marked.stored`): the same bytes."""

    events: msgspec.Raw
    key: str | None = None


class FrameHeader(NamedTuple):
    length: int
    crc: int
    first_lsn: int
    event_count: int
    min_ts: int
    max_ts: int
    codec: int
    raw_length: int

    @property
    def next_lsn(self) -> int:
        return self.first_lsn + self.event_count

    @property
    def size(self) -> int:
        return FRAME_HEADER + self.length


def segment_name(first_lsn: int) -> str:
    return f"{first_lsn:020d}.seg"


def encode_segment_header(first_lsn: int) -> bytes:
    head = _SEGMENT.pack(SEGMENT_MAGIC, FORMAT_VERSION, 0, first_lsn, time.time_ns(), 0)
    return head[:-4] + struct.pack("<I", google_crc32c.value(head[:-4]))


def parse_segment_header(data: bytes) -> int:
    """Return the first LSN a segment header declares; FrameError if it is not intact."""
    if len(data) < SEGMENT_HEADER:
        raise FrameError("segment header cut short")
    magic, version, _flags, first_lsn, _created, crc = _SEGMENT.unpack_from(data)
    if magic != SEGMENT_MAGIC:
        raise FrameError("not a segment file (bad magic)")
    if crc != google_crc32c.value(bytes(data[: SEGMENT_HEADER - 4])):
        raise FrameError("segment header checksum mismatch")
    if version != FORMAT_VERSION:
        raise FrameError(f"segment format version {version} is not supported")
    return int(first_lsn)


ENCODER = msgspec.msgpack.Encoder(uuid_format="bytes")
"""Events as the log stores them (ids as 16 bytes): the one encoder every module uses."""
_BODY_DECODER = msgspec.msgpack.Decoder(list[Request])
_RAW_DECODER = msgspec.msgpack.Decoder()


def encode_body(
    requests: list[Request], encoded: dict[int, bytes | bytearray] | None = None
) -> bytes:
    """The body of a frame of `requests`; `encoded` holds the events of some of them (by
    index) as their MessagePack array already, which goes in as it is."""
    if not encoded:
        return ENCODER.encode(requests)
    body = [
        _Encoded(msgspec.Raw(encoded[i]), r.key) if i in encoded else r
        for i, r in enumerate(requests)
    ]
    return ENCODER.encode(body)


# The marks `encode_marked` writes where the log sets values under its lock, each of the
# width the final value takes (``ts``: a uint64, as any clock reading since 1970 + 4 s; a
# session: 16 bytes of bin). The ts mark's value is eight different bytes that valid UTF-8
# never holds: a split of the encoding at it finds every occurrence (none can begin inside
# another), exactly one an event unless an id or a number holds those bytes, and scans text
# fast (a byte of text is never one of them).
_TS_MARK_VALUE = 0xF8F9_FAFB_FCFD_FEFF
_TS_MARK = _TS_MARK_VALUE.to_bytes(8, "big")
_TS_KEY = b"\xa2ts\xcf"  # "ts", then a uint64
_SESSION_MARK_ID = uuid.UUID(bytes=b"~" * 16)
_SESSION_MARK = b"\xaasession_id\xc4\x10" + _SESSION_MARK_ID.bytes + _TS_KEY
_TS_STORED = range(1 << 32, 1 << 63)  # the ts values stored at the mark's width


def _session_before_ts(t: type[EventBase]) -> bool:
    """Whether `session_id` is encoded just before `ts` (msgspec writes an event's own
    fields with defaults, then its base's: ``ts``, ``occurred_at``, ``actor``, ``erased_at``)."""
    names = t.__struct_fields__
    return names[names.index("ts") - 1] == "session_id"


_FILLED = {  # event types with a session_id the log may fill in: is it just before ts?
    t: _session_before_ts(t)
    for t in Event.__args__
    if any(f.name == "session_id" and f.default is None for f in msgspec.structs.fields(t))
}


class Marked(NamedTuple):
    """A request's events encoded once, with marks where the log sets values (`stored`)."""

    pieces: list[bytes]  # the events' MessagePack array cut at each ts mark (one an event)
    # the length of the events' encoding without what the log sets: the caller's, but for a
    # value a field's own round trip converts (an int in a float of prompt metadata)
    size: int
    sessions: list[tuple[int, int]]  # (event, where its session_id's 16 bytes start)

    def stored(self, events: list[EventBase]) -> bytearray | None:
        """The encoding of `events`, with the values they got under the lock in place of the
        marks. Every event must have the one ts the lock gave the request; None if it has
        not the mark's width, or if a session was not filled in."""
        now = events[0].ts
        if now not in _TS_STORED:
            return None
        raw = bytearray(now.to_bytes(8, "big")).join(self.pieces)
        for i, at in self.sessions:
            session = getattr(events[i], "session_id", None)
            if type(session) is not uuid.UUID:
                return None
            raw[at : at + 16] = session.int.to_bytes(16, "big")
        return raw


def encode_marked(events: list[EventBase]) -> Marked | None:
    """Encode events the caller owns (copies) with a mark for each ts and each session the
    log may fill in, and cut the encoding at the ts marks; the events are left as they
    were. None if a ts has another width, if the marks are not one an event (a value
    holding a mark's bytes), or if a filled session is not just before its ts.
    Raises what the encoder raises."""
    saved = [e.ts for e in events]
    if saved.count(0) + sum(map(_TS_STORED.__contains__, saved)) != len(saved):
        return None
    filled = [
        i
        for i, e in enumerate(events)
        if type(e) in _FILLED and e.session_id is None  # type: ignore[attr-defined]
    ]
    try:
        for e in events:
            e.ts = _TS_MARK_VALUE
        for i in filled:
            events[i].session_id = _SESSION_MARK_ID  # type: ignore[attr-defined]
        raw = ENCODER.encode(events)
    finally:
        for e, ts in zip(events, saved, strict=True):
            e.ts = ts
        for i in filled:
            events[i].session_id = None  # type: ignore[attr-defined]
    pieces = raw.split(_TS_MARK)
    if len(pieces) != len(events) + 1:
        return None
    sessions = []
    if filled:
        before = list(itertools.accumulate(map(len, pieces)))  # bytes before each mark, less marks
        for i in filled:
            if not (_FILLED[type(events[i])] and pieces[i].endswith(_SESSION_MARK)):
                return None
            sessions.append((i, before[i] + i * len(_TS_MARK) - len(_TS_KEY) - 16))
    size = (
        len(raw)
        - (len(_TS_KEY) + 8) * saved.count(0)
        - (len(_SESSION_MARK) - len(_TS_KEY)) * len(filled)
    )
    return Marked(pieces, size, sessions)


def decode_body(raw: bytes) -> list[Request]:
    """Decode a frame body, upcasting events of older schema versions when needed."""
    try:
        return _BODY_DECODER.decode(raw)
    except msgspec.ValidationError:
        return _decode_upcasting(raw)


def _decode_upcasting(raw: bytes) -> list[Request]:
    requests: list[Any] = _RAW_DECODER.decode(raw)
    modern = [[[upcast(e) for e in events], key] for events, key in requests]
    # Re-encode so UUID bytes and nested structs take the typed decoder's exact path.
    return _BODY_DECODER.decode(ENCODER.encode(modern))


def encode_frame(
    body: bytes, *, first_lsn: int, count: int, min_ts: int, max_ts: int, level: int | None
) -> bytes:
    """Frame a body: compress it (zstd at `level`, None: never) if that saves space,
    checksum it, prepend the header."""
    codec, stored = CODEC_RAW, body
    if level is not None:
        codec, packed = compress(body, level)
        if len(packed) < len(body):
            stored = packed
        else:
            codec = CODEC_RAW
    if len(stored) >= MAX_BODY:
        raise FrameError("frame body too large")
    tail = _FRAME.pack(
        FRAME_MAGIC, len(stored), 0, first_lsn, count, min_ts, max_ts, codec, 0, 0, len(body)
    )[_CRC_FROM:]
    crc = google_crc32c.extend(google_crc32c.value(tail), stored)
    return struct.pack("<4sII", FRAME_MAGIC, len(stored), crc) + tail + stored


def parse_frame_header(data: bytes | memoryview) -> FrameHeader:
    """Parse a frame header without checking the body; FrameError if it cannot be a header."""
    if len(data) < FRAME_HEADER:
        raise FrameError("frame header cut short")
    magic, length, crc, first_lsn, count, min_ts, max_ts, codec, _f, _r, raw_length = (
        _FRAME.unpack_from(data)
    )
    if magic != FRAME_MAGIC:
        raise FrameError("bad frame magic")
    if count < 1 or length < 1 or codec not in _CODECS or min_ts > max_ts:
        raise FrameError("frame header fields out of range")
    return FrameHeader(length, crc, first_lsn, count, min_ts, max_ts, codec, raw_length)


def check_frame(header_bytes: bytes | memoryview, head: FrameHeader, body: bytes) -> None:
    """Raise FrameError unless the body is complete and the checksum matches."""
    if len(body) < head.length:
        raise FrameError("frame body cut short")
    crc = google_crc32c.extend(
        google_crc32c.value(bytes(header_bytes[_CRC_FROM:FRAME_HEADER])), body
    )
    if crc != head.crc:
        raise FrameError("frame checksum mismatch")


_LOCAL = threading.local()  # zstd (de)compressors must not be shared between threads


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache: dict[int, zstandard.ZstdCompressor] = _LOCAL.__dict__.setdefault("compressors", {})
    found = cache.get(level)
    if found is None:
        found = cache[level] = zstandard.ZstdCompressor(level=level)
    return found


def _decompressor() -> zstandard.ZstdDecompressor:
    d: zstandard.ZstdDecompressor | None = getattr(_LOCAL, "decompressor", None)
    if d is None:
        d = _LOCAL.decompressor = zstandard.ZstdDecompressor()
    return d


@functools.cache
def _helper() -> ThreadPoolExecutor:
    """One helper thread, made on first use, for the second half of big bodies."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="eventlog-zstd")


def compress(body: bytes, level: int) -> tuple[int, bytes]:
    """zstd `body`; a big one as two independent halves at once (zstd releases the GIL,
    so this uses a second core: compression is the append path's bottleneck)."""
    if len(body) < SPLIT_FROM:
        return CODEC_ZSTD, _compressor(level).compress(body)
    half = len(body) // 2
    second = _helper().submit(lambda: _compressor(level).compress(body[half:]))
    first = _compressor(level).compress(body[:half])
    tail = second.result()
    return CODEC_ZSTD_SPLIT, _CHUNKS.pack(len(first), len(tail), half) + first + tail


def unpack_body(head: FrameHeader, body: bytes) -> bytes:
    """The raw MessagePack of a checked frame body."""
    if head.codec == CODEC_RAW:
        return body
    try:
        if head.codec == CODEC_ZSTD:
            return _decompressor().decompress(body, max_output_size=head.raw_length)
        first_len, tail_len, half = _CHUNKS.unpack_from(body)
        start = _CHUNKS.size
        if start + first_len + tail_len != len(body) or not 0 < half < head.raw_length:
            raise FrameError("split body's chunk table does not match its length")
        tail = body[start + first_len :]
        second = _helper().submit(
            lambda: _decompressor().decompress(tail, max_output_size=head.raw_length - half)
        )
        first = _decompressor().decompress(body[start : start + first_len], max_output_size=half)
        return first + second.result()
    except (zstandard.ZstdError, struct.error) as exc:
        raise FrameError(f"frame body does not decompress: {exc}") from exc
