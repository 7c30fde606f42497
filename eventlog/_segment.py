"""Reading and checking the frames of one segment file.

Functions here take an open file descriptor and read with `os.pread`, so several threads may
read one segment at once; writing is the store's business. A frame is returned only after
its header, LSN and checksum all pass. A bad frame raises `BadFrame`, and `is_torn_tail`
tells the two ways a frame can be bad apart:

- a torn tail: nothing valid follows it. A crash cut the last write short, or appended
  garbage; recovery truncates the segment there, since no fsync can have acknowledged it.
- damage: a valid frame follows it. Bytes the log once acknowledged have changed; this is
  never repaired silently.

Neither is the writer's reserve (see `_format`): zeros from the frame to a file end on a
`RESERVE_ALIGN` boundary. `iter_frames` stops there, as at the file's end. `judge` is the
one place that tells the three apart (readers, recovery and `verify` all ask it).
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterator
from typing import NamedTuple

from ._format import (
    FRAME_HEADER,
    FRAME_MAGIC,
    RESERVE_ALIGN,
    SEGMENT_HEADER,
    FrameError,
    FrameHeader,
    check_frame,
    parse_frame_header,
    parse_segment_header,
)

__all__ = [
    "BadFrame",
    "Frame",
    "Verdict",
    "file_size",
    "is_reserve",
    "is_torn_tail",
    "iter_frames",
    "judge",
    "next_intact_frame",
    "read_frame",
    "read_segment_header",
    "written_since",
]


_NO_FRAME = bytes(len(FRAME_MAGIC))  # what starts the reserve, where a frame's magic would


class Frame(NamedTuple):
    offset: int
    head: FrameHeader
    body: bytes  # as stored: checked, still compressed


class Verdict(enum.Enum):
    """What bytes that fail to read as a frame are (`judge`)."""

    RESERVE = "reserve"  # the writer's zeros: the end of the log, nothing is wrong
    TORN = "torn"  # no intact frame follows: a write cut short (recovery cuts it off)
    DAMAGED = "damaged"  # an intact frame follows: bytes once acknowledged have changed


class BadFrame(Exception):
    """The frame at `offset`, expected to start at `lsn`, failed a check. Raised out of
    `iter_frames`, it carries the `judge`'s verdict on it (else None)."""

    def __init__(self, offset: int, lsn: int, reason: str) -> None:
        super().__init__(f"{reason} at offset {offset} (LSN {lsn})")
        self.offset = offset
        self.lsn = lsn
        self.reason = reason
        self.verdict: Verdict | None = None


def file_size(fd: int) -> int:
    """The size of an open file, by `lseek`, not `fstat`: a stat marks the file's times as
    seen, so the next write stamps them at fine grain and dirties the inode, and the
    `fdatasync` after it writes the inode too (measured here: about 60 us more a sync of a
    frame written into the reserve; see docs/benchmarks.md). Readers and writers use `pread`
    and `pwrite`, so the offset this moves is never read."""
    return os.lseek(fd, 0, os.SEEK_END)


def read_segment_header(fd: int) -> int:
    """First LSN of the segment; FrameError if its header is not intact."""
    return parse_segment_header(os.pread(fd, SEGMENT_HEADER, 0))


def iter_frames(
    fd: int, offset: int, end: int, lsn: int, *, whole: bool = False
) -> Iterator[Frame]:
    """Checked frames from `offset` (a frame boundary holding `lsn`) up to byte `end`, or up
    to the writer's reserve of zeros before it. `whole`: the caller holds the append lock,
    under which frames are written whole (nothing is being written), so zeros where a frame
    would start are the reserve, without reading all of it (up to 1 MiB)."""
    while offset < end:
        try:
            frame = read_frame(fd, offset, end, lsn)
        except BadFrame as bad:
            if whole and os.pread(fd, len(_NO_FRAME), offset) == _NO_FRAME:
                return
            verdict = judge(fd, offset, end, lsn, last=True)
            if verdict is Verdict.RESERVE:
                return
            if not isinstance(verdict, Frame) or offset + verdict.head.size > end:
                bad.verdict = verdict if isinstance(verdict, Verdict) else Verdict.TORN
                raise
            frame = verdict
        yield frame
        offset += frame.head.size
        lsn = frame.head.next_lsn


def judge(
    fd: int, offset: int, end: int, lsn: int | None, *, last: bool, known: Verdict | None = None
) -> Frame | Verdict:
    """What the bytes at `offset`, which did not read as the frame holding `lsn` in a file
    of `end` bytes, are. `last`: the segment is the log's last, which writers may fill as we
    look; a sealed segment never changes, and has no reserve. `known`: the verdict found at
    this offset and size before, which only a frame written since can change.

    1. In the last segment, zeros from `offset` to `end` on a `RESERVE_ALIGN` boundary are
       the writer's `RESERVE`.
    2. Else the bytes are `TORN` if no intact frame starts after them, `DAMAGED` if one does.
    3. In the last segment, a writer may have put a frame at `offset` since the read failed:
       that `Frame` is returned, to read on. Looked for after step 2, since writers append
       in order: a frame that step 2 saw past `offset` was written after this one, so it
       is seen here too, never taken for damage.
    """
    if known is None:
        if last and is_reserve(fd, offset, end):
            known = Verdict.RESERVE
        else:
            known = Verdict.TORN if is_torn_tail(fd, offset, end) else Verdict.DAMAGED
    if last and (again := written_since(fd, offset, lsn)) is not None:
        return again
    return known


def written_since(fd: int, offset: int, lsn: int | None) -> Frame | None:
    """The frame at `offset` if it reads intact now, else None. Where a reader found the
    writer's reserve a moment ago, a writer may since have put frames; they are written in
    order, so a frame seen past a bad spot of the last segment means the spot was written
    first: look at it again before calling it damage."""
    try:
        return read_frame(fd, offset, file_size(fd), lsn)
    except BadFrame:
        return None


def read_frame(fd: int, offset: int, end: int, lsn: int | None) -> Frame:
    """The checked frame at `offset`; BadFrame if it is torn, damaged or out of sequence."""
    expected = -1 if lsn is None else lsn
    raw_head = os.pread(fd, FRAME_HEADER, offset)
    try:
        head = parse_frame_header(raw_head)
        if offset + head.size > end:
            raise FrameError("frame extends past the end of the segment")
        if lsn is not None and head.first_lsn != lsn:
            raise FrameError(f"frame starts at LSN {head.first_lsn}, expected {lsn}")
        body = os.pread(fd, head.length, offset + FRAME_HEADER)
        check_frame(raw_head, head, body)
    except FrameError as exc:
        raise BadFrame(offset, expected, str(exc)) from None
    return Frame(offset, head, body)


def next_intact_frame(fd: int, offset: int, end: int) -> Frame | None:
    """The first intact frame starting in (offset, end), found by its magic, or None."""
    data = os.pread(fd, end - offset, offset)
    at = data.find(FRAME_MAGIC, 1)
    while at != -1:
        try:
            return read_frame(fd, offset + at, end, None)
        except BadFrame:
            at = data.find(FRAME_MAGIC, at + 1)
    return None


def is_torn_tail(fd: int, offset: int, end: int) -> bool:
    """True when no intact frame starts anywhere in (offset, end): the bad bytes are a tail."""
    return next_intact_frame(fd, offset, end) is None


def is_reserve(fd: int, offset: int, end: int) -> bool:
    """True when the bytes from `offset` to `end`, the file's end, are a writer's reserve:
    all zeros, ending on a `RESERVE_ALIGN` boundary."""
    if end % RESERVE_ALIGN or offset >= end:
        return False
    data = os.pread(fd, end - offset, offset)
    return len(data) == end - offset and data.count(0) == len(data)
