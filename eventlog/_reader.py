"""Reading the log: a cursor that walks segments from an LSN or a time, and followers.

A `Cursor` seeks with the sealed segments' sparse indexes (a bisect, then at most one index
interval of frames), then yields `Record`s in LSN order. It reads with `pread` and takes no
lock, so it runs beside appenders in this or other processes. At the end of the last segment,
a frame still being written, or a torn tail no appender has truncated yet, reads as the end
of the log; a bad frame with an intact one after it, or anywhere in a sealed segment, is
damage and raises `CorruptionError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import msgspec

from . import events as ev
from ._files import open_file
from ._format import ENCODER, SEGMENT_HEADER, FrameError, decode_body, unpack_body
from ._lean import lean_decoder
from ._segment import BadFrame, Frame, Verdict, file_size, judge, read_frame
from .errors import CorruptionError

if TYPE_CHECKING:
    import watchfiles

    from ._index import SegmentSummary
    from ._store import Store

__all__ = ["AsyncCursor", "Cursor", "Record", "follow", "follow_async"]


class Record(NamedTuple):
    """An event and its LSN."""

    lsn: int
    event: ev.EventBase


_T = TypeVar("_T")
_B = TypeVar("_B")  # what a frame's body decodes to

_record = functools.partial(tuple.__new__, Record)
"""`Record(lsn, event)` without the Python frame of a named tuple's ``__new__``: the reader
makes one per event (about 2% of a fold's time)."""


class Cursor:
    """A position in the log; `records()` yields what is there now and keeps its place."""

    def __init__(
        self,
        store: Store,
        *,
        start: int = 0,
        stop: int | None = None,
        start_ts: int | None = None,
        stop_ts: int | None = None,
    ) -> None:
        self._store = store
        self._stop, self._start_ts, self._stop_ts = stop, start_ts, stop_ts
        self.next_lsn = start  # the next record wanted
        self.bytes_read = 0  # frames read whole so far, in bytes as stored (size triggers)
        self.bytes_decoded = 0  # frame bodies decoded so far, as MessagePack (`CHUNK_BYTES`)
        self._fd: int | None = None
        self.done = False
        self._seek_size: int | None = None  # the size of the sealed segment the seek used
        # (segment, offset, file size) where the log was last found to end, and how: the
        # zeros of a writer's reserve, which each poll would otherwise scan again
        self._quiet_tail: tuple[tuple[int, int, int] | None, Verdict | None] = (None, None)
        self._segment, self._offset, self._frame_lsn = self._seek(start, start_ts)

    def _seek(self, lsn: int, ts: int | None) -> tuple[int, int, int | None]:
        """Segment, frame offset and that frame's LSN (None if not known) to start from."""
        firsts = self._store.segments()
        if not firsts:
            return 0, SEGMENT_HEADER, 0
        if lsn < firsts[0]:  # an appender's open refuses such a store; a reader must too
            raise CorruptionError(
                "the log does not start at LSN 0 (first segment missing)",
                str(self._store.segment_path(firsts[0])),
                None,
                firsts[0],
            )
        candidates = [f for f in firsts[:-1] if self._store.summary(f).next_lsn > lsn]
        if ts is not None:
            candidates = [f for f in candidates if self._store.summary(f).max_ts >= ts]
        if not candidates:
            last = firsts[-1]
            live = self._store.live_summary(last)  # an appender knows its segment's frames
            if live is not None and live.sparse and ts is None:
                offset = live.seek_lsn(lsn)
                if offset > SEGMENT_HEADER:
                    return last, offset, _lsn_at(live, offset)
            return last, SEGMENT_HEADER, last
        first = candidates[0]
        summary = self._store.summary(first)
        self._seek_size = summary.size
        offset = (
            summary.seek_lsn(lsn)
            if ts is None
            else max(summary.seek_lsn(lsn), summary.seek_time(ts))
        )
        if offset <= SEGMENT_HEADER:
            return first, SEGMENT_HEADER, first
        return first, offset, _lsn_at(summary, offset)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def records(self) -> Iterator[Record]:
        """Records from the current position to the end of the log as it is now (or `stop`)."""
        return self._walk(self._take)

    def _sized_records(self, lean: frozenset[type[ev.EventBase]]) -> Iterator[tuple[Record, int]]:
        """`records()` for the fold, each with its size as stored (bytes of MessagePack), the
        types in `lean` as their lean twins (`_lean`: ids as bytes). Only without time bounds.

        Internal: a `Record` holding a twin never leaves the fold (`_lean.full_event`)."""
        assert self._start_ts is None and self._stop_ts is None
        return self._walk(functools.partial(self._take_sized, lean_decoder(lean)))

    def _walk(self, take: Callable[[Frame, str], Iterator[_T]]) -> Iterator[_T]:
        """What `take` makes of each frame, from the current position to the end of the log."""
        while not self.done:
            path = self._store.segment_path(self._segment)
            if self._fd is None:
                try:
                    self._fd = open_file(path)
                except FileNotFoundError:
                    return
            size = file_size(self._fd)
            if self._seek_size is not None and self._reseek(size):
                continue
            try:
                while self._offset < size and not self.done:
                    frame = read_frame(self._fd, self._offset, size, self._frame_lsn)
                    yield from take(frame, str(path))
                    self._offset += frame.head.size
                    self.bytes_read += frame.head.size
                    self._frame_lsn = frame.head.next_lsn
            except BadFrame as bad:
                # A later segment means this one is sealed: a bad frame in it is damage, even
                # its last one. Unless it grew meanwhile (written, then sealed): read again.
                sealed = self._sealed()
                if sealed and file_size(self._fd) != size:
                    continue
                # Judged at this size before: not scanned again (a reserve is up to 1 MiB).
                spot = (self._segment, bad.offset, size)
                known = self._quiet_tail[1] if self._quiet_tail[0] == spot else None
                verdict = judge(
                    self._fd, bad.offset, size, self._frame_lsn, last=not sealed, known=known
                )
                if isinstance(verdict, Frame):
                    continue  # a writer filled its reserve as we looked: read on
                if sealed or verdict is Verdict.DAMAGED:
                    raise CorruptionError(
                        f"damaged frame ({bad.reason})", str(path), bad.offset, bad.lsn
                    ) from None
                self._quiet_tail = (spot, verdict)
                return  # the writer's reserve, or a torn tail recovery will cut
            if self.done:
                return
            if not self._successor_exists():
                if not self._sealed():
                    return  # the end of the log
                if file_size(self._fd) != size or self._successor_exists():
                    continue  # appended to, or its successor created, since we looked: again
                missing = self._segment if self._frame_lsn is None else self._frame_lsn
                raise CorruptionError(
                    "segment missing: a later segment exists, but none starts here",
                    str(self._store.segment_path(missing)),
                    None,
                    missing,
                )
            self.close()
            assert self._frame_lsn is not None
            self._segment, self._offset = self._frame_lsn, SEGMENT_HEADER

    def _reseek(self, size: int) -> bool:
        """True if the seek used the summary of a segment since rewritten (an erasure: its
        offsets moved; it is told by its size): seek again with the new one."""
        known, self._seek_size = self._seek_size, None
        if size == known:
            return False
        self._store.forget_summary(self._segment)
        self.close()
        self._segment, self._offset, self._frame_lsn = self._seek(self.next_lsn, self._start_ts)
        return True

    def _sealed(self) -> bool:
        """True when a later segment exists: this one is complete and never written again."""
        return any(f > self._segment for f in self._store.segments())

    def _successor_exists(self) -> bool:
        # A segment without frames (a new store, a fresh rotation) has no successor; without
        # the `!= self._segment` test it would name itself and `records` would loop forever.
        return (
            self._frame_lsn is not None
            and self._frame_lsn != self._segment
            and self._store.segment_path(self._frame_lsn).exists()
        )

    def _take(self, frame: Frame, path: str) -> Iterator[Record]:
        head = frame.head
        if head.next_lsn <= self.next_lsn or (
            self._start_ts is not None and head.max_ts < self._start_ts
        ):
            return
        requests = _decoded(frame, path, decode_body)
        self.bytes_decoded += head.raw_length
        lsn = head.first_lsn
        stop, start_ts, stop_ts = self._stop, self._start_ts, self._stop_ts
        for event in itertools.chain.from_iterable(r.events for r in requests):
            if (stop is not None and lsn >= stop) or (stop_ts is not None and event.ts >= stop_ts):
                self.done = True
                return
            if lsn >= self.next_lsn and (start_ts is None or event.ts >= start_ts):
                self.next_lsn = lsn + 1
                yield _record((lsn, event))
            lsn += 1

    def _take_sized(
        self, decoder: msgspec.msgpack.Decoder[Any], frame: Frame, path: str
    ) -> Iterator[tuple[Record, int]]:
        """`_take` for `_sized_records`: the body split into each event's bytes (which gives
        its size without encoding it again), and only the events wanted decoded."""
        head = frame.head
        if head.next_lsn <= self.next_lsn:
            return
        requests = _decoded(frame, path, _RAW_BODY.decode)
        lsn = head.first_lsn
        stop, decode = self._stop, decoder.decode
        for raw in itertools.chain.from_iterable(r.events for r in requests):
            if stop is not None and lsn >= stop:
                self.done = True
                return
            if lsn >= self.next_lsn:
                try:
                    try:
                        event = decode(raw)
                    except msgspec.ValidationError:  # an older version: upcast, as `decode_body`
                        event = decode(ENCODER.encode(ev.upcast(_RAW_EVENT.decode(raw))))
                except msgspec.DecodeError as exc:
                    raise _undecodable(frame, path, exc) from None
                self.next_lsn = lsn + 1
                yield _record((lsn, event)), len(raw)
            lsn += 1


def _decoded(frame: Frame, path: str, decode: Callable[[bytes], _B]) -> _B:
    """`decode` of the frame's body (`_take` and `_take_sized` decode it differently)."""
    try:
        return decode(unpack_body(frame.head, frame.body))
    except (FrameError, msgspec.DecodeError) as exc:
        raise _undecodable(frame, path, exc) from None


def _undecodable(frame: Frame, path: str, exc: Exception) -> CorruptionError:
    return CorruptionError(
        f"frame does not decode ({exc})", path, frame.offset, frame.head.first_lsn
    )


class _RawRequest(msgspec.Struct, array_like=True, gc=False):
    """A `Request` whose events are left as their bytes."""

    events: list[msgspec.Raw]
    key: str | None = None


_RAW_BODY = msgspec.msgpack.Decoder(list[_RawRequest])
_RAW_EVENT = msgspec.msgpack.Decoder()


class AsyncCursor:
    """A `Cursor` for asyncio: `records()` reads in a worker thread, `chunk` records at a
    time, so the event loop never waits on the disk. Close it when done."""

    def __init__(self, cursor: Cursor, chunk: int = 4096) -> None:
        self._cursor = cursor
        self._chunk = chunk

    @property
    def next_lsn(self) -> int:
        """The LSN of the next record wanted."""
        return self._cursor.next_lsn

    async def records(self) -> AsyncIterator[Record]:
        """What the log holds now from where the last call stopped, like `Cursor.records`."""
        source = self._cursor.records()
        more = True
        while more:
            batch, more = await asyncio.to_thread(_take_some, source, self._chunk, self._cursor)
            for record in batch:
                yield record

    def close(self) -> None:
        self._cursor.close()


def _lsn_at(summary: SegmentSummary, offset: int) -> int | None:
    """The first LSN of the frame a sparse index entry puts at `offset`, so that a bad frame
    there is reported with its LSN (and a stale index is caught by the LSN check)."""
    return next((lsn for lsn, _ts, at in summary.sparse if at == offset), None)


def _segments_only(change: watchfiles.Change, path: str) -> bool:
    return path.endswith(".seg")


def follow(
    cursor: Cursor, stop: threading.Event | None = None, poll_s: float = 1.0
) -> Iterator[Record]:
    """Records as they arrive: drain the cursor, then sleep until a segment file changes.

    The watcher stays open between drains, so a change made while draining wakes the next
    wait; a timeout of `poll_s` re-checks anyway, as a safety net for missed notifications.
    """
    import watchfiles  # noqa: PLC0415 (here, not at the top: reading the log never needs it)

    watcher = watchfiles.watch(
        cursor._store.path,
        watch_filter=_segments_only,
        debounce=0,
        step=5,
        rust_timeout=int(poll_s * 1000),
        yield_on_timeout=True,
        stop_event=stop,
    )
    try:
        while not cursor.done and not (stop is not None and stop.is_set()):
            yield from cursor.records()
            if not cursor.done:
                next(watcher, None)
    finally:
        with contextlib.suppress(Exception):
            watcher.close()
        cursor.close()


async def follow_async(
    cursor: Cursor, stop: asyncio.Event | None = None, poll_s: float = 1.0, chunk: int = 4096
) -> AsyncIterator[Record]:
    """The asyncio twin of `follow`: reads in a worker thread, waits with `watchfiles.awatch`."""
    import watchfiles  # noqa: PLC0415 (as in `follow`)

    watcher = watchfiles.awatch(
        cursor._store.path,
        watch_filter=_segments_only,
        debounce=0,
        step=5,
        rust_timeout=int(poll_s * 1000),
        yield_on_timeout=True,
        stop_event=stop,
    )
    source = cursor.records()
    try:
        while not cursor.done and not (stop is not None and stop.is_set()):
            batch, more = await asyncio.to_thread(_take_some, source, chunk, cursor)
            for record in batch:
                yield record
            if not more and not cursor.done:  # the log's end: wait for more
                source = cursor.records()
                await anext(watcher, None)
    finally:
        cursor.close()
        with contextlib.suppress(Exception):
            await watcher.aclose()


CHUNK_BYTES = 4 * 1024 * 1024
"""An async read's chunk (`AsyncCursor`, `follow_async`) ends at its `count` of records, or
once the frames decoded for it pass this many bytes (as MessagePack): what a reader holds
while its consumer is slow, whatever the size of its events (a chunk of 4096 records of
60 KB was 240 MB, and `lmg serve` keeps one for each reader of its feed that reads slowly
or not at all). It stops after the record that passed it, so one frame's records may be
left to the next chunk, still decoded: a reader holds about this and one frame."""


def _take_some(source: Iterator[Record], count: int, cursor: Cursor) -> tuple[list[Record], bool]:
    """Up to `count` records of `source` (`cursor`'s), within `CHUNK_BYTES`, and whether it
    stopped before `source` ended (there may be more now: a follower must not wait for a
    write to read them; it did, up to a second a chunk)."""
    began = cursor.bytes_decoded
    taken: list[Record] = []
    for record in source:
        taken.append(record)
        if len(taken) >= count or cursor.bytes_decoded - began >= CHUNK_BYTES:
            return taken, True
    return taken, False
