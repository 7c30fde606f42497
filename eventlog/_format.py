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
"""

from __future__ import annotations

import functools
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import google_crc32c
import msgspec
import zstandard

from .events import Event, upcast

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
    "Request",
    "check_frame",
    "decode_body",
    "encode_body",
    "encode_frame",
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


def encode_body(requests: list[Request]) -> bytes:
    return ENCODER.encode(requests)


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
