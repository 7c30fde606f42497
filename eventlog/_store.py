"""The store: a directory of segments, the append lock, recovery, and the write path.

Invariants the code keeps:

1. LSNs are dense from 0: segment ``N.seg`` starts at LSN N, where the one before it ends.
2. Only the last segment is written, and only under an exclusive `flock` on ``LOCK``, so
   frames of several processes never interleave. Before writing, a process reads the frames
   others appended since it last held the lock, and follows their rotations (the segment's
   size, by `lseek`, and a look-up of its successor's name tell if there are any).
3. A frame is the unit of atomicity: one group commit of whole requests. An append is
   acknowledged only after its frame is written and, in the default mode, synced; a new
   segment's directory entry is fsynced before anything in it is acknowledged. In that mode
   the last segment keeps a reserve of zeros ahead of the writer, zero-filled and fsynced
   before any frame is written into it, so a frame overwrites blocks the file already has
   and `fdatasync` syncs its data alone; the reserve is trimmed before the segment is sealed
   and when the handle closes (see `_format`).
4. ``ts`` never decreases along the log: it is max(now, last ts) taken under the lock, or,
   for an import into a new store, the event's own, refused if before the last.
5. A failed fsync stops the handle (`LogFailed`): it is never retried as if it had worked.
6. Damage is never skipped: a torn tail of the last segment is truncated and reported; any
   other bad frame is a `CorruptionError` naming file, offset and LSN.

Thread-safety: `commit` serialises on an in-process mutex, then the flock; readers use
`pread` and need neither.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import fcntl
import functools
import hashlib
import itertools
import json
import os
import re
import threading
import time
import uuid
import warnings
from collections import Counter, OrderedDict
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, cast

import msgspec

from . import events as ev
from ._files import (
    GROUP_DIR,
    PRIVATE_DIR,
    Modes,
    create_file,
    make_dir,
    open_file,
    open_or_create,
    process_alive,
    refuse_linked_store,
)
from ._format import (
    FRAME_HEADER,
    RESERVE_ALIGN,
    SEGMENT_HEADER,
    FrameError,
    FrameHeader,
    Request,
    decode_body,
    encode_body,
    encode_frame,
    encode_segment_header,
    parse_frame_header,
    segment_name,
    unpack_body,
)
from ._index import (
    KIND_KEY,
    Entry,
    IdTable,
    SegmentSummary,
    Tail,
    fsync_dir,
    load_tail,
    pack_records,
    save_tail,
)
from ._reader import Cursor
from ._resolve import RUN_FROM, Resolver, render_template, session_of
from ._sealed import SealedSegments
from ._segment import BadFrame, Frame, Verdict, file_size, iter_frames, read_segment_header
from .errors import (
    AppendConflict,
    CorruptionError,
    EventLogError,
    IdempotencyKeyReused,
    InvalidEvent,
    LogClosed,
    LogFailed,
    StorageFull,
    StoreLocked,
    TornTailTruncated,
)
from .options import Durability, Options

__all__ = ["FULL_DISK", "Appended", "PendingRequest", "Split", "Store", "check_store"]

_SEGMENT_FILE = re.compile(r"^(\d{20})\.seg$")
FULL_DISK = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)  # a full disk, or a file size limit hit
RECOVERY_LOG = "recovery.jsonl"
_EVENT_CACHE = 1024  # stored events kept for event_at: templates are read on every use
_RESERVE_STEP = 1024 * 1024  # zeros written ahead of the writer at a time (FSYNC mode)
_RESERVE_FRAME_MAX = 64 * 1024  # larger frames append to the file instead: zero-filling
# ahead of them would write their bytes twice, and a growing file costs them little
_NO_FRAME = bytes(4)  # the magic of a frame header in the reserve
TAIL_EVENTS = 4096
"""An appender that closes with at least this many events of the last segment beyond its
tail file (``.tail``: see `_index`) writes a new one, so the next appender's first append
decodes at most about this many events to build the id index, not the whole segment."""


class Appended(NamedTuple):
    """What one request stored: its first LSN and its events as stored (with ts, derived ids)."""

    first_lsn: int
    events: list[ev.EventBase]
    duplicate: bool = False  # an idempotent retry: these events were stored earlier

    @property
    def last_lsn(self) -> int:
        return self.first_lsn + len(self.events) - 1


@dataclass
class PendingRequest:
    """One caller's append, type-checked, waiting for the lock."""

    events: list[ev.EventBase]
    key: str | None = None
    expect_store_lsn: int | None = None
    expect_session_lsn: int | None = None
    size: int = 0  # encoded bytes, checked against max_request_bytes
    keep_ts: bool = False  # an import into a new store: each event keeps its own ts
    # requests stored in its place if it is refused whole (made only then): `Split`
    parts: Callable[[], list[PendingRequest]] | None = None


class Split(EventLogError):
    """A request with `parts` was refused whole (`cause`), so its parts were stored in its
    place, each its own request: `parts` says what each became. An ingested trace is one
    request, for speed, and its spans' requests in its place when the log refuses it."""

    def __init__(self, cause: EventLogError, parts: list[Appended | EventLogError]) -> None:
        super().__init__(f"stored part by part: {cause}")
        self.cause = cause
        self.parts = parts


@dataclass
class _Active:
    """The last segment as this process knows it."""

    first_lsn: int
    fd: int
    path: Path
    end: int = SEGMENT_HEADER  # bytes of checked frames
    next_lsn: int = 0
    last_ts: int = 0
    summary: SegmentSummary = field(init=False)
    entries: dict[int, Entry] | None = None  # built on first append (over `base`)
    base: IdTable | None = None  # the entries of the tail file it was built from, if any
    last_offset: int = -1  # where the last frame taken in starts
    tail_lsn: int = -1  # the next LSN after what the segment's tail file indexes (if read)

    def __post_init__(self) -> None:
        self.next_lsn = self.first_lsn
        self.summary = SegmentSummary(
            first_lsn=self.first_lsn, next_lsn=self.first_lsn, size=self.end
        )


def check_store(path: Path) -> None:
    """Raise unless `path` holds a store: a missing directory and a directory that is not a
    store are told apart, since the first is almost always a mistyped path."""
    if not path.is_dir():
        raise EventLogError(f"no store at {path}")
    if not (path / "LOCK").exists():
        raise EventLogError(f"{path} is not an event log store (no LOCK file)")


def key_digest(key: str) -> int:
    """The id-index key of an idempotency key."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=16).digest())


@functools.lru_cache(maxsize=1024)
def _digest_of_types(types: tuple[type[ev.EventBase], ...]) -> int:
    tags = ",".join(map(ev.tag_of, types))
    return len(types) << 64 | int.from_bytes(hashlib.blake2b(tags.encode(), digest_size=8).digest())


def _types_digest(events: Sequence[ev.EventBase]) -> int:
    """What a keyed request was: its event count and a digest of its types (a few short
    shapes of request recur, such as an ingested span's, so each is digested once)."""
    types = tuple(map(type, events))
    return _digest_of_types(types) if len(types) <= 8 else _digest_of_types.__wrapped__(types)


class Store:
    """A log directory opened by this process. See the module docstring for its invariants."""

    def __init__(self, path: Path, options: Options) -> None:
        self.path = path
        self.options = options
        self._mutex = threading.RLock()
        self._closed = False
        self._failed: BaseException | None = None
        self.fsync_s: float | None = None  # the last `commit`'s fsync, in seconds (if it did)
        self._sealed = SealedSegments(path, options, self._rebuild)
        # event_at's cache: each event with the inode of the segment file it was read from
        self._events: OrderedDict[int, tuple[ev.EventBase, int | None]] = OrderedDict()
        self._sealed_bound: int | None = None  # largest key of any sealed segment; None: unknown
        self._dirty_since: float | None = None  # unsynced writes (INTERVAL/NONE)
        self._timer: threading.Timer | None = None
        self._active: _Active | None = None
        self._firsts: list[int] = []  # segments known to this handle (appenders only)
        self._lock_fd = -1
        self._dir_fd = -1  # the store's directory, to look for a successor segment by name
        self._modes = Modes()
        if options.readonly:
            check_store(path)
            refuse_linked_store(path)
            return
        if not path.is_dir():  # a new store (the path itself may be a link the user made)
            path.parent.mkdir(parents=True, exist_ok=True)
            make_dir(path, GROUP_DIR if options.group_readable else PRIVATE_DIR)
        refuse_linked_store(path)
        self._modes = Modes.of(path)
        self._lock_fd = open_or_create(path / "LOCK", self._modes.file)
        try:
            self._dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            with self._flock():
                self._recover()
        except BaseException:
            self.close()
            raise

    # -- lock and lifecycle -------------------------------------------------------------------

    @contextlib.contextmanager
    def _flock(self) -> Iterator[None]:
        self._lock_exclusive()
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _lock_exclusive(self) -> None:
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        except OSError as exc:
            raise StoreLocked(f"cannot lock {self.path / 'LOCK'}: {exc}") from exc

    def close(self) -> None:
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
            if self._active is not None:
                if self._failed is None:
                    with contextlib.suppress(OSError, EventLogError):
                        self._trim_on_close()
                if self._dirty_since is not None and self._failed is None:
                    with contextlib.suppress(OSError):
                        os.fsync(self._active.fd)
                        self._dirty_since = None
                if self._failed is None:
                    with contextlib.suppress(OSError, EventLogError):
                        self._save_tail()
                os.close(self._active.fd)
            self._sealed.close()
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
            if self._dir_fd >= 0:
                os.close(self._dir_fd)

    def _trim_on_close(self) -> None:
        """Cut the reserve off the last segment, so a closed store ends at its last frame.
        Only if the lock is free at once (closing never waits for another process), and not
        synced: a reserve left, or a cut lost, reads as a reserve (see `_format`)."""
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return
        try:
            active = self._catch_up(index=False)
            if file_size(active.fd) > active.end:
                os.ftruncate(active.fd, active.end)
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _check_usable(self) -> None:
        if self._closed:
            raise LogClosed(f"the log at {self.path} is closed")
        if self._failed is not None:
            raise LogFailed(
                f"the log at {self.path} stopped after a failed write or fsync ({self._failed}); "
                "reopen it to recover from what is on disk"
            ) from self._failed
        if self.options.readonly:
            raise EventLogError(f"the log at {self.path} is open read-only")

    # -- segments -----------------------------------------------------------------------------

    def segments(self) -> list[int]:
        """First LSNs of the segment files, in order; stray temp files are ignored."""
        found = (_SEGMENT_FILE.match(name) for name in os.listdir(self.path))
        return sorted(int(m.group(1)) for m in found if m)

    def segment_path(self, first_lsn: int) -> Path:
        return self.path / segment_name(first_lsn)

    def summary(self, first_lsn: int) -> SegmentSummary:
        """Summary and sparse index of a sealed segment (see `SealedSegments`)."""
        return self._sealed.summary(first_lsn)

    def forget_summary(self, first_lsn: int) -> None:
        """Drop a sealed segment's cached summary (it was rewritten: an erasure)."""
        with self._mutex:
            self._sealed.forget(first_lsn)

    def _rebuild(self, first_lsn: int) -> tuple[SegmentSummary, dict[int, Entry]]:
        """Scan a sealed segment whole: its summary and id entries. Damage is an error."""
        path = self.segment_path(first_lsn)
        fd = open_file(path)
        try:
            active = _Active(first_lsn, fd, path)
            active.entries = {}
            self._check_header(active)
            size = os.fstat(fd).st_size
            self._advance(active, size, repair=False, sealed=True)
            active.summary.size = size
            return active.summary, active.entries
        finally:
            os.close(fd)

    def _check_header(self, active: _Active) -> None:
        try:
            declared = read_segment_header(active.fd)
        except FrameError as exc:
            raise CorruptionError(
                f"bad segment header ({exc})", str(active.path), 0, active.first_lsn
            ) from None
        if declared != active.first_lsn:
            raise CorruptionError(
                f"segment header says LSN {declared}, file name says {active.first_lsn}",
                str(active.path),
                0,
                active.first_lsn,
            )

    # -- recovery -----------------------------------------------------------------------------

    def _recover(self) -> None:
        """Under the lock: remove temp files, check the chain of segments, repair the tail.
        A directory is no temp file of the log's: DuckDB's spill directory beside the
        projections database (``projections.duckdb.tmp``) is one."""
        with os.scandir(self.path) as entries:
            for entry in entries:
                name = entry.name
                if name.endswith(".tmp") and not entry.is_dir(follow_symlinks=False):
                    with contextlib.suppress(FileNotFoundError):  # its writer renamed it
                        if not _being_written(name, entry.stat(follow_symlinks=False).st_mtime):
                            os.unlink(entry.path)
        firsts = self.segments()
        for name in os.listdir(self.path):  # a tail of a segment sealed since: stale
            if name.endswith(".tail") and (not firsts or name != f"{firsts[-1]:020d}.tail"):
                os.unlink(self.path / name)
        if not firsts:
            if any(name.endswith((".idx", ".ids")) for name in os.listdir(self.path)):
                raise CorruptionError(
                    "index files but no segment: the log's segments are gone",
                    str(self.path),
                    None,
                    None,
                )
            self._create_segment(0)
            firsts = [0]
        self.check_chain(firsts)
        self._firsts = firsts
        self._sealed_bound = None
        self._active = self._open_active(firsts[-1])

    def check_chain(self, firsts: list[int]) -> None:
        """Raise `CorruptionError` unless the segments `firsts` (not empty) make one log from
        LSN 0: none missing at the start, in the middle, or after a sealed last one."""
        if firsts[0] != 0:
            raise CorruptionError(
                "the log does not start at LSN 0 (first segment missing)",
                str(self.segment_path(firsts[0])),
                None,
                firsts[0],
            )
        for first, following in itertools.pairwise(firsts):
            ends = self.summary(first).next_lsn
            if ends != following:
                raise CorruptionError(
                    f"segment ends at LSN {ends} but the next one starts at {following} "
                    f"(missing or extra segment)",
                    str(self.segment_path(following)),
                    None,
                    ends,
                )
        last = firsts[-1]
        sealed = (self.path / f"{last:020d}.idx").exists() or (
            self.path / f"{last:020d}.ids"
        ).exists()
        # A rotation creates the next segment before it seals this one: listing again tells a
        # reader racing it from a lost successor.
        if sealed and self.segments()[-1] == last:
            raise CorruptionError(
                "the last segment was sealed (it has index files) but the segment after it is "
                "missing",
                str(self.segment_path(last)),
                None,
                last,
            )

    def _open_active(self, first_lsn: int) -> _Active:
        path = self.segment_path(first_lsn)
        fd = open_file(path, os.O_RDWR)
        active = _Active(first_lsn, fd, path)
        try:
            if first_lsn:  # ts never decreases: start from the sealed segments' last ts
                active.last_ts = self.summary(self._previous_segment(first_lsn)).max_ts
            self._check_header(active)
            self._advance(active, os.fstat(fd).st_size, repair=True)
        except BaseException:
            os.close(fd)
            raise
        return active

    def _previous_segment(self, first_lsn: int) -> int:
        earlier = [f for f in self.segments() if f < first_lsn]
        if not earlier:
            raise CorruptionError(
                "no segment before this one", str(self.segment_path(first_lsn)), None, first_lsn
            )
        return earlier[-1]

    def _advance(
        self, active: _Active, size: int, *, repair: bool, sealed: bool = False, live: bool = False
    ) -> None:
        """Take in the frames between `active.end` and `size`: check, summarise, index them.
        `live`: under the lock, after other writers (`iter_frames`'s `whole`)."""
        try:
            for frame in iter_frames(active.fd, active.end, size, active.next_lsn, whole=live):
                self._take_frame(active, frame)
        except BadFrame as bad:
            if sealed or bad.verdict is not Verdict.TORN:
                raise CorruptionError(
                    f"damaged frame ({bad.reason})", str(active.path), bad.offset, bad.lsn
                ) from None
            if repair:
                self._truncate_tail(active, bad.offset, size)

    def _take_frame(self, active: _Active, frame: Frame) -> None:
        self._summarise(active, frame.offset, frame.head)
        if active.entries is not None:
            self._index_frame(active, frame)

    def _summarise(self, active: _Active, offset: int, head: FrameHeader) -> None:
        s = active.summary
        if not s.sparse or offset - s.sparse[-1][2] >= self.options.index_interval_bytes:
            s.sparse.append((head.first_lsn, head.min_ts, offset))
        s.frames += 1
        s.min_ts = head.min_ts if s.frames == 1 else s.min_ts
        s.max_ts = max(s.max_ts, head.max_ts)
        s.raw_bytes += head.raw_length
        s.stored_bytes += head.size
        s.next_lsn = head.next_lsn
        s.size = offset + head.size
        active.last_offset = offset
        active.end, active.next_lsn = s.size, head.next_lsn
        active.last_ts = max(active.last_ts, head.max_ts)

    def _index_frame(self, active: _Active, frame: Frame) -> None:
        entries = active.entries
        assert entries is not None
        resolver = Resolver(
            lambda key: self._active_get(active, key) or self._lookup_sealed(key, active.first_lsn),
            self.event_at,
        )
        lsn = frame.head.first_lsn
        requests = self._decode(active, frame)
        for request in requests:
            if request.key is not None:
                resolver.put(
                    key_digest(request.key), Entry(KIND_KEY, 0, lsn, _types_digest(request.events))
                )
            for event in request.events:
                resolver.record(event, lsn)
                lsn += 1
        _count_types(active.summary.type_counts, [r.events for r in requests])
        resolver.commit_request()
        resolver.publish(entries)

    def _decode(self, active: _Active, frame: Frame) -> list[Request]:
        try:
            return decode_body(unpack_body(frame.head, frame.body))
        except (FrameError, msgspec.DecodeError) as exc:
            raise CorruptionError(
                f"frame does not decode ({exc})",
                str(active.path),
                frame.offset,
                frame.head.first_lsn,
            ) from None

    def _truncate_tail(self, active: _Active, offset: int, size: int) -> None:
        dropped = size - offset
        os.ftruncate(active.fd, offset)
        os.fsync(active.fd)
        note = {
            "time": time.time_ns(),
            "file": active.path.name,
            "offset": offset,
            "bytes": dropped,
            "next_lsn": active.next_lsn,
        }
        appending = os.O_WRONLY | os.O_APPEND
        with os.fdopen(
            open_or_create(self.path / RECOVERY_LOG, self._modes.file, appending), "a"
        ) as f:
            f.write(json.dumps(note) + "\n")
        warnings.warn(
            TornTailTruncated(
                f"recovered {active.path}: dropped a torn tail of {dropped} bytes "
                f"at offset {offset} "
                f"(LSN {active.next_lsn} onward was never acknowledged)"
            ),
            stacklevel=2,
        )

    def _ensure_entries(self, active: _Active) -> dict[int, Entry]:
        """The id index of the last segment, built on first need: from its tail file when
        that matches the segment, then by decoding the frames after it (all, without one).
        The tail's entries stay a table searched by bisect (`base`), under the dict of those
        indexed since: nothing is unpacked until looked up."""
        if active.entries is None:
            offset, lsn = SEGMENT_HEADER, active.first_lsn
            active.entries, active.summary.type_counts = {}, {}
            found = self._load_tail(active)
            if found is not None:
                tail, active.base = found
                active.summary.type_counts = tail.type_counts
                last = parse_frame_header(tail.last_head)
                offset, lsn = tail.last_offset + last.size, last.next_lsn
            active.tail_lsn = lsn
            try:
                for frame in iter_frames(active.fd, offset, active.end, lsn):
                    self._index_frame(active, frame)
            except BaseException:  # never half an index: the next need builds it again
                active.entries = active.base = None
                raise
        return active.entries

    def _tail_path(self, first_lsn: int) -> Path:
        return self.path / f"{first_lsn:020d}.tail"

    @staticmethod
    def _active_get(active: _Active, key: int) -> Entry | None:
        """An id's entry in the last segment: indexed since its tail, else in the tail."""
        assert active.entries is not None
        found = active.entries.get(key)
        if found is None and active.base is not None:
            found = active.base.get(key)
        return found

    def _all_entries(self, active: _Active) -> dict[int, Entry]:
        """Every entry of the last segment in one dict (to seal it or write its tail)."""
        entries = self._ensure_entries(active)
        if active.base is None:
            return entries
        return {**dict(active.base.items()), **entries}

    def _load_tail(self, active: _Active) -> tuple[Tail, IdTable] | None:
        """The last segment's tail file and its entries, if the frame it ends with is where
        it says, byte for byte in its header (which holds the frame's CRC32C): frames of
        the last segment are only ever added after it, so the tail indexes all before."""
        found = load_tail(self._tail_path(active.first_lsn))
        if found is None:
            return None
        tail = found[0]
        try:
            head = parse_frame_header(tail.last_head)
        except FrameError:
            return None
        if (
            tail.first_lsn != active.first_lsn
            or len(tail.last_head) != FRAME_HEADER
            or not active.first_lsn <= head.first_lsn < active.next_lsn
            or not SEGMENT_HEADER <= tail.last_offset <= active.end - head.size
            or os.pread(active.fd, FRAME_HEADER, tail.last_offset) != tail.last_head
        ):
            return None
        return found

    def _save_tail(self) -> None:
        """On close: write the last segment's tail file if its id index is built and at
        least `TAIL_EVENTS` of its events are beyond the file's (under the lock, if free at
        once: recovery deletes temp files under it). Only what is synced: the file must
        never index a frame a crash could still take away."""
        active = self._active
        if (
            active is None
            or active.entries is None
            or self._dirty_since is not None
            or active.next_lsn - active.tail_lsn < TAIL_EVENTS
        ):
            return
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return
        try:  # (if another process sealed the segment meanwhile, the next recovery deletes it)
            tail = Tail(
                first_lsn=active.first_lsn,
                last_offset=active.last_offset,
                last_head=os.pread(active.fd, FRAME_HEADER, active.last_offset),
                type_counts=active.summary.type_counts,
                records=pack_records(self._all_entries(active).items()),
            )
            save_tail(self._tail_path(active.first_lsn), tail)
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    # -- id lookups ---------------------------------------------------------------------------

    def _lookup(self, key: int) -> Entry | None:
        """Current state of an id: the active segment first, then sealed ones, newest first."""
        active = self._active
        assert active is not None and active.entries is not None
        found = self._active_get(active, key)
        bound = self._sealed_bound
        if bound is None:
            bound = self._sealed_bound = self._sealed.max_key(self._firsts[:-1])
        if found is not None or key > bound:
            return found
        return self._lookup_sealed(key, active.first_lsn)

    def _absent(self, keys: Collection[int]) -> bool:
        """True if the index holds none of `keys` (`_lookup` of each is None), in one set
        operation on the active segment's entries while every key is newer than the sealed
        segments' (new ids are time-ordered): what a bulk append's new ids need."""
        active = self._active
        assert active is not None and active.entries is not None
        if not active.entries.keys().isdisjoint(keys):
            return False
        base = active.base  # new ids are newer than the tail's: one comparison, as a rule
        if (
            base is not None
            and keys
            and min(keys) <= base.max_key
            and any(base.get(key) is not None for key in keys)
        ):
            return False
        if self._sealed_bound is None:
            self._sealed_bound = self._sealed.max_key(self._firsts[:-1])
        bound = self._sealed_bound
        if not keys or min(keys) > bound:
            return True
        older = (key for key in keys if key <= bound)
        return all(self._lookup_sealed(key, active.first_lsn) is None for key in older)

    def _lookup_sealed(self, key: int, before: int) -> Entry | None:
        """An id's state in the sealed segments before `before`, newest first."""
        sealed = [f for f in self._firsts if f < before]
        cached = self._active is not None and before == self._active.first_lsn
        return self._sealed.lookup(key, sealed, cached=cached)

    def event_at(self, lsn: int) -> ev.EventBase:
        """The stored event at `lsn` (templates, idempotent retries), via a small LRU cache.

        A cached event is used while its segment file is the one it was read from: an
        erasure by another handle (another process, `lmg erase`) renames a rewritten file
        over it, and a template read before would otherwise render its erased text into new
        prompts. One `stat` a use, of a name in the open directory."""
        inode = self._inode_of(lsn)
        cached = self._events.get(lsn)
        if cached is not None and inode is not None and cached[1] == inode:
            self._events.move_to_end(lsn)
            return cached[0]
        cursor = Cursor(self, start=lsn, stop=lsn + 1)
        try:
            found = next((r.event for r in cursor.records()), None)
        finally:
            cursor.close()
        if found is None:
            raise InvalidEvent(f"LSN {lsn} is beyond the end of the log")
        self._events[lsn] = (found, inode)  # an inode taken before the read: safe if stale
        if len(self._events) > _EVENT_CACHE:
            self._events.popitem(last=False)
        return found

    def _inode_of(self, lsn: int) -> int | None:
        """The inode of the segment file holding `lsn`, as this handle knows the segments
        (None if it knows of none, or the file is gone)."""
        at = bisect.bisect_right(self._firsts, lsn) - 1
        if at < 0:
            return None
        try:
            return os.stat(segment_name(self._firsts[at]), dir_fd=self._dir_fd).st_ino
        except OSError:  # gone (retention), or no directory open (a read-only handle)
            return None

    def render(self, template_id: uuid.UUID, variables: dict[str, Any], version: int | None) -> str:
        """A template version rendered with `variables`, checked as a prompt's bindings are;
        nothing is written."""
        with self._mutex:
            self._check_usable()
            with self._flock():
                self._catch_up()
            resolver = Resolver(self._lookup, self.event_at)
            _version, text, bound = resolver.bind(template_id, variables, version)
        return render_template(text, bound)

    def live_summary(self, first_lsn: int) -> SegmentSummary | None:
        """The in-memory summary of the active segment, if this handle appends to it."""
        active = self._active
        return active.summary if active is not None and active.first_lsn == first_lsn else None

    # -- the write path -----------------------------------------------------------------------

    def commit(self, requests: list[PendingRequest]) -> list[Appended | EventLogError]:
        """Check, frame, write and (per the durability mode) fsync a group of requests."""
        with self._mutex:
            self._check_usable()
            self.fsync_s = None
            self._lock_exclusive()  # `_flock` spelled out: this runs once per append
            try:
                active = self._catch_up()
                if active.end >= self.options.segment_bytes:
                    active = self._rotate(active)
                return self._write_group(active, requests)
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _catch_up(self, *, index: bool = True) -> _Active:
        """Take in what other processes appended, following their rotations.

        With `index` False, an id index not yet built stays unbuilt (a length is all the
        caller wants); it is built in full whenever a lookup or an append first needs it."""
        active = self._active
        assert active is not None
        if index:
            self._ensure_entries(active)
        while True:
            size = file_size(active.fd)
            if size < active.end:
                raise CorruptionError(
                    "segment shrank under the log", str(active.path), size, active.next_lsn
                )
            # Frames are written whole under the lock: a zero magic at the end is our reserve.
            if size > active.end and os.pread(active.fd, 4, active.end) != _NO_FRAME:
                self._advance(active, size, repair=True, live=True)
            # Not gated on our own segment_bytes: a handle opened with a smaller one may
            # have rotated, and writing on here would fork the LSN chain. A segment without
            # frames was never rotated from: its "successor" would be itself (an endless loop).
            # Hot: a name looked up in the open directory, not a path walked from the root.
            if active.next_lsn == active.first_lsn or not os.access(
                segment_name(active.next_lsn), os.F_OK, dir_fd=self._dir_fd
            ):
                return active
            self._sync_before_leaving(active)
            os.close(active.fd)
            self._sealed.adopt(active.first_lsn, active.summary)
            self._firsts.append(active.next_lsn)
            self._sealed_bound = None
            self._active = active = self._open_active(active.next_lsn)
            if index:
                self._ensure_entries(active)

    def _rotate(self, active: _Active) -> _Active:
        """Start the next segment, then seal this one by writing its index files.

        In that order, index files beside the last segment can only mean its successor was
        lost, which recovery reports; index files that fail to write are rebuilt on use.
        """
        self._sync_before_leaving(active)
        entries = self._all_entries(active)
        self._trim(active)
        self._create_segment(active.next_lsn)
        self._sealed.seal(active.first_lsn, active.summary, entries)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tail_path(active.first_lsn))  # sealed: its .ids will say it all
        self._firsts.append(active.next_lsn)
        self._sealed_bound = None
        os.close(active.fd)
        self._active = active = self._open_active(active.next_lsn)
        self._ensure_entries(active)
        return active

    def seal_active(self) -> int:
        """Rotate if the last segment holds any frame, so every event appended so far is in a
        sealed segment (an erasure rewrites only those); returns the log's next LSN."""
        with self._mutex:
            self._check_usable()
            with self._flock():
                active = self._catch_up()
                if active.next_lsn > active.first_lsn:
                    active = self._rotate(active)
                self._sealed.forget(-1)  # waits for the index files of what was just sealed
                return active.next_lsn

    def replace_sealed(self, first_lsn: int, data: bytes) -> None:
        """Replace sealed segment `first_lsn` with `data` (a whole segment holding the same
        LSNs) with the crash safety of an append: a temp file beside it, fsynced, renamed
        over it, the directory fsynced. Under the lock, so no recovery deletes the temp file;
        readers holding the old file keep reading it. Its ``.idx`` is rewritten after (its
        offsets moved); its ``.ids`` stays valid (ids and LSNs do not move)."""
        path = self.segment_path(first_lsn)
        tmp = path.with_name(path.name + ".erase.tmp")
        with self._mutex:
            self._check_usable()
            with self._flock():
                if first_lsn not in self._firsts[:-1]:
                    raise EventLogError(f"segment {path.name} is not sealed")
                counts = self.summary(first_lsn).type_counts  # the same events, the same types
                # (on failure the segment is as it was)
                _write_whole(path, tmp, data, self._modes.file, f"no space to rewrite {path}")
            self._sealed.forget(first_lsn)
            self._events.clear()
            self._sealed.replace(first_lsn, self._summarise_headers(first_lsn, counts))

    def _summarise_headers(self, first_lsn: int, counts: dict[str, int]) -> SegmentSummary:
        """A sealed segment's summary from its frame headers and checksums alone, with the
        type counts given (a rewrite changed no event's type: no event is decoded)."""
        path = self.segment_path(first_lsn)
        fd = open_file(path)
        try:
            active = _Active(first_lsn, fd, path)
            self._check_header(active)
            size = os.fstat(fd).st_size
            self._advance(active, size, repair=False, sealed=True)
        finally:
            os.close(fd)
        active.summary.size = size
        active.summary.type_counts = dict(counts)
        return active.summary

    def _trim(self, active: _Active) -> None:
        """Cut the reserve off a segment about to be sealed, durably before its successor
        exists (a sealed segment ends at its last frame), or before a frame that is not synced
        at once (INTERVAL, NONE): frames written over zeros and synced together later could
        reach the disk out of order, leaving zeros before an intact frame, which is damage."""
        if file_size(active.fd) > active.end:
            try:
                os.ftruncate(active.fd, active.end)
                os.fsync(active.fd)
            except OSError as exc:
                self._failed = exc
                raise LogFailed(f"trimming {active.path} failed ({exc}); the log stops") from exc

    def _reserve(self, active: _Active, need: int) -> None:
        """Zero-fill and fsync the file ahead of the writer, past byte `need`, so frames
        overwrite blocks already written and `fdatasync` has no metadata to commit. Never past
        the rotation size: near it (or in a segment smaller than `RESERVE_ALIGN`) and without
        space for it, the frame just appends (and may find the disk full itself)."""
        size = file_size(active.fd)
        limit = self.options.segment_bytes // RESERVE_ALIGN * RESERVE_ALIGN
        end = min(-(-(need + _RESERVE_STEP) // RESERVE_ALIGN) * RESERVE_ALIGN, limit)
        if need <= size or need > end:
            return
        try:
            _pwrite_all(active.fd, bytes(end - size), size)
            os.fsync(active.fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(active.fd, size)
            if exc.errno in FULL_DISK:
                return
            self._failed = exc
            raise LogFailed(f"zero-filling {active.path} failed ({exc}); the log stops") from exc

    def _sync_before_leaving(self, active: _Active) -> None:
        """INTERVAL/NONE: fsync unsynced frames of a segment this handle moves past. Later
        syncs reach only the new active segment, and a sealed segment that lost its tail in
        a power loss would break the LSN chain (the store would not open)."""
        if self._dirty_since is None:
            return
        try:
            os.fsync(active.fd)
        except OSError as exc:
            self._failed = exc
            raise LogFailed(f"fsync of {active.path} failed ({exc}); the log stops here") from exc
        self._dirty_since = None

    def _create_segment(self, first_lsn: int) -> None:
        path = self.segment_path(first_lsn)
        tmp = path.with_name(path.name + ".tmp")  # one a crashed rotation left is replaced
        header = encode_segment_header(first_lsn)
        _write_whole(path, tmp, header, self._modes.file, f"no space to start segment {path.name}")

    def _write_group(
        self, active: _Active, requests: list[PendingRequest]
    ) -> list[Appended | EventLogError]:
        entries = self._ensure_entries(active)
        resolver = Resolver(self._lookup, self.event_at, self._absent)
        group = _Group(resolver, time.time_ns(), active.last_ts, active.next_lsn)
        results: list[Appended | EventLogError] = []
        run: list[PendingRequest] = []  # plain requests, checked together when they end
        for request in requests:
            if self._plain(request):
                run.append(request)
                continue
            results += self._take_run(group, run)
            run = []
            result = self._take_request(group, request)
            if isinstance(result, EventLogError) and request.parts is not None:
                result = Split(result, [self._take_request(group, p) for p in request.parts()])
            results.append(result)
        results += self._take_run(group, run)
        if not group.accepted:
            return results
        try:
            self._write_frame(active, group.accepted, group.next_lsn)
        except EventLogError as exc:
            # Everything from this group failed, retries of its own requests included.
            unwritten = active.next_lsn
            return [r if _stands(r, unwritten) else exc for r in results]
        group.resolver.publish(entries)
        _count_types(active.summary.type_counts, [r.events for r in group.accepted])
        return results

    def _plain(self, request: PendingRequest) -> bool:
        """Whether `request` asks nothing of the log but to store its events now: no key,
        no expectation, no given times, no parts, within the size limit."""
        return (
            request.key is None
            and request.expect_store_lsn is None
            and request.expect_session_lsn is None
            and not request.keep_ts
            and request.parts is None
            and request.size <= self.options.max_request_bytes
        )

    def _take_run(self, group: _Group, run: list[PendingRequest]) -> list[Appended | EventLogError]:
        """Check a run of plain requests into the group: all of them at once by the
        resolver's short way when it vouches for every event (a group commit of agents'
        single appends: one pass instead of a check per request, measured in
        docs/benchmarks.md), else each its own way, which decides and names any error.
        Every request of a run is taken whole or refused alone, as by `_take_request`:
        the short way accepts only if each event is valid after the ones before it."""
        if len(run) < 2 or sum(len(r.events) for r in run) < RUN_FROM:
            return [self._take_request(group, r) for r in run]
        events = [e for r in run for e in r.events]
        now = max(group.clock, group.last_ts)
        for event in events:
            event.ts = now
        try:
            vouched = group.resolver.resolve_plain(events, group.next_lsn)
        except EventLogError:  # a damaged index file, say: each request hears it as its own
            group.resolver.abort_request()
            vouched = False
        if not vouched:
            return [self._take_request(group, r) for r in run]
        group.resolver.commit_request()
        results: list[Appended | EventLogError] = []
        for request in run:
            results.append(Appended(group.next_lsn, request.events))
            group.accepted.append(Request(cast(list[ev.Event], request.events)))
            group.next_lsn += len(request.events)
        group.last_ts = max(group.last_ts, now)
        return results

    def _take_request(self, group: _Group, request: PendingRequest) -> Appended | EventLogError:
        """Check one request into the group: its result, or the error refusing it."""
        resolver = group.resolver
        try:
            now = max(group.clock, group.last_ts)
            result = self._resolve_request(resolver, request, group.next_lsn, now, group.last_ts)
        except EventLogError as exc:
            resolver.abort_request()
            return exc
        resolver.commit_request()
        if not result.duplicate:
            group.accepted.append(Request(cast(list[ev.Event], result.events), request.key))
            group.next_lsn += len(result.events)
            group.last_ts = max(group.last_ts, result.events[-1].ts)
        return result

    def _resolve_request(
        self, resolver: Resolver, request: PendingRequest, first_lsn: int, now: int, last_ts: int
    ) -> Appended:
        if request.size > self.options.max_request_bytes:
            raise InvalidEvent(
                f"an append of {request.size} bytes exceeds max_request_bytes "
                f"({self.options.max_request_bytes})"
            )
        if request.key is not None:
            digest = _types_digest(request.events)
            key = key_digest(request.key)
            known = resolver.get(key)
            if known is not None:
                if known.aux != digest:
                    raise IdempotencyKeyReused(
                        f"idempotency key {request.key!r} was used for a different request "
                        f"at LSN {known.lsn}"
                    )
                count = len(request.events)
                return Appended(
                    known.lsn, [resolver.event_at(known.lsn + i) for i in range(count)], True
                )
        if request.expect_store_lsn is not None and request.expect_store_lsn != first_lsn - 1:
            raise AppendConflict("the store", request.expect_store_lsn, first_lsn - 1)
        if request.key is not None:
            resolver.put(key, Entry(KIND_KEY, 0, first_lsn, digest))
        if request.keep_ts:
            _keep_times(request.events, last_ts, now)
        else:
            for event in request.events:
                event.ts = now
        resolver.resolve_all(request.events, first_lsn)
        if request.expect_session_lsn is not None:
            self._check_session(resolver, request)
        return Appended(first_lsn, request.events)

    def _check_session(self, resolver: Resolver, request: PendingRequest) -> None:
        sessions = {s for s in map(session_of, request.events) if s is not None}
        if len(sessions) != 1:
            raise InvalidEvent(
                "expect_session_lsn needs a request whose events touch exactly one session"
            )
        session = sessions.pop()
        actual = resolver.session_lsn(session.int)
        if actual != request.expect_session_lsn:
            raise AppendConflict(f"session {session}", request.expect_session_lsn, actual)

    def _write_frame(self, active: _Active, accepted: list[Request], next_lsn: int) -> None:
        count = next_lsn - active.next_lsn
        body = encode_body(accepted)
        frame = encode_frame(
            body,
            first_lsn=active.next_lsn,
            count=count,
            min_ts=accepted[0].events[0].ts,  # times never decrease along the log (4.)
            max_ts=accepted[-1].events[-1].ts,
            level=self.options.compression_level,
        )
        offset = active.end
        if self.options.durability is not Durability.FSYNC:
            self._trim(active)  # left by an FSYNC handle: see `_trim`
        elif len(frame) <= _RESERVE_FRAME_MAX:
            self._reserve(active, offset + len(frame))
        try:
            _pwrite_all(active.fd, frame, offset)
        except OSError as exc:
            self._undo_write(active, offset, exc)
        self._sync(active, count)
        self._summarise(active, offset, parse_frame_header(memoryview(frame)[:FRAME_HEADER]))

    def _undo_write(self, active: _Active, offset: int, exc: OSError) -> None:
        try:
            os.ftruncate(active.fd, offset)
        except OSError as undo:
            self._failed = undo
            raise LogFailed(
                f"write failed ({exc}) and the partial frame could not be removed ({undo})"
            ) from exc
        if exc.errno in FULL_DISK:
            raise StorageFull(
                exc.errno, f"{active.path}: {exc.strerror}; nothing was written"
            ) from exc
        self._failed = exc
        raise LogFailed(f"write to {active.path} failed: {exc}") from exc

    def _sync(self, active: _Active, count: int) -> None:
        mode = self.options.durability
        if mode is Durability.FSYNC or (
            mode is Durability.INTERVAL
            and self._dirty_since is not None
            and time.monotonic() - self._dirty_since >= self.options.fsync_interval_ms / 1000
        ):
            try:
                began = time.perf_counter()
                # Data alone: the frame's blocks were in the file, or its new size is needed
                # to read it back, which fdatasync commits too.
                os.fdatasync(active.fd)
                self.fsync_s = time.perf_counter() - began
            except OSError as exc:
                self._failed = exc
                raise LogFailed(
                    f"fsync of {active.path} failed ({exc}): LSNs {active.next_lsn}.."
                    f"{active.next_lsn + count - 1} "
                    "may or may not be stored; the log stops here"
                ) from exc
            self._dirty_since = None
            return
        if self._dirty_since is None:
            self._dirty_since = time.monotonic()
            if mode is Durability.INTERVAL:
                self._timer = threading.Timer(self.options.fsync_interval_ms / 1000, self.sync)
                self._timer.daemon = True
                self._timer.start()

    def sync(self) -> None:
        """fsync whatever is written but not yet synced (INTERVAL and NONE modes)."""
        with self._mutex:
            if self._closed or self._dirty_since is None or self._active is None:
                return
            try:
                os.fsync(self._active.fd)
            except OSError as exc:
                self._failed = exc
                raise LogFailed(f"fsync of {self._active.path} failed: {exc}") from exc
            self._dirty_since = None

    def last_lsn(self, session: int | None = None) -> int | None:
        """The log's last LSN, or a session's (None: empty log, or no such session)."""
        with self._mutex:
            self._check_usable()
            with self._flock():
                active = self._catch_up(index=session is not None)
            if session is None:
                return active.next_lsn - 1 if active.next_lsn else None
            found = self._lookup(session)
            return found.lsn if found is not None and found.kind == ev.NodeKind.SESSION else None

    def entries(self, keys: Sequence[int]) -> list[Entry | None]:
        """What the id index holds for each of `keys` (a node id's `UUID.int`, or the
        `key_digest` of an idempotency key), with what other processes appended taken in."""
        with self._mutex:
            self._check_usable()
            with self._flock():
                self._catch_up()
            return [self._lookup(key) for key in keys]

    def kind_of(self, key: int) -> int | None:
        """The kind an id was created as (`NodeKind`), from what this handle's index holds:
        None when the id is unknown to it, or when the index is busy (an append holds it,
        maybe through an fsync). Never waits for the lock, and reads index files only (a
        sealed segment's that is missing or damaged is rebuilt, as for any lookup), so a
        reader may ask before every lookup and treat None as "look everywhere". The first
        call builds the last segment's index as the first append would (from its tail
        file, then the frames after it): a handle that only reads knows its newest ids too."""
        if not self._mutex.acquire(blocking=False):
            return None
        try:
            active = self._active
            if self._closed or active is None:
                return None
            try:
                self._ensure_entries(active)
            except (CorruptionError, OSError):  # a hint: the first append reports it
                return None
            found = self._lookup(key)
            return None if found is None else found.kind
        finally:
            self._mutex.release()

    # -- facts for readers and stats ----------------------------------------------------------

    def active_summary(self, *, counts: bool = True) -> SegmentSummary:
        """Summary of the last segment, with counts by type (scans it if needed). Without
        `counts`, a scan reads frame headers and checksums only, decoding no event (type
        counts stay empty): what a reader asking for the log's length needs."""
        with self._mutex:
            if self._closed:  # its descriptor numbers may belong to other files by now
                raise LogClosed(f"the log at {self.path} is closed")
            if self._active is None or self.options.readonly:
                first = self.segments()[-1]
                return self._rebuild_lenient(first, counts=counts)
            with self._flock():
                active = self._catch_up()
            return msgspec.structs.replace(
                active.summary, type_counts=dict(active.summary.type_counts)
            )

    def _rebuild_lenient(self, first_lsn: int, *, counts: bool = True) -> SegmentSummary:
        path = self.segment_path(first_lsn)
        fd = open_file(path)
        try:
            active = _Active(first_lsn, fd, path)
            active.entries = {} if counts else None  # entries: decode, index and count
            self._check_header(active)
            self._advance(active, os.fstat(fd).st_size, repair=False)
            return active.summary
        finally:
            os.close(fd)


@dataclass
class _Group:
    """A group commit being checked: its resolver, clock and the requests accepted so far."""

    resolver: Resolver
    clock: int
    last_ts: int
    next_lsn: int
    accepted: list[Request] = field(default_factory=list)


def _stands(result: Appended | EventLogError, unwritten: int) -> bool:
    """Whether `result` stands after its group's frame failed to write: an error, or an
    idempotent retry of events stored earlier (a split request: if all its parts do)."""
    if isinstance(result, Split):
        return all(_stands(p, unwritten) for p in result.parts)
    return not isinstance(result, Appended) or result.first_lsn < unwritten


def _keep_times(events: Sequence[ev.EventBase], last_ts: int, now: int) -> None:
    """Given times must keep invariant 4: never before the log's last (`last_ts`). An event
    without one (0) gets `now`, as any append."""
    for event in events:
        if not event.ts:
            event.ts = now
        if event.ts < last_ts:
            raise InvalidEvent(
                f"an imported event's ts {event.ts} is before the log's last ({last_ts}): "
                "imported events must come in log order"
            )
        last_ts = event.ts


def _count_types(counts: dict[str, int], batches: Sequence[list[ev.Event]]) -> None:
    """Add the events' tags to `counts` (one Counter pass over their types, in C; a lone
    event, the commonest frame, without the Counter)."""
    if len(batches) == 1 and len(batches[0]) == 1:
        tag = ev.tag_of(type(batches[0][0]))
        counts[tag] = counts.get(tag, 0) + 1
        return
    for cls, n in Counter(map(type, itertools.chain.from_iterable(batches))).items():
        tag = ev.tag_of(cls)
        counts[tag] = counts.get(tag, 0) + n


def _write_whole(path: Path, tmp: Path, data: bytes, mode: int, no_space: str) -> None:
    """Write `data` as `path` with the crash safety of an append: `tmp` beside it (one left
    by a crash replaced), fsynced, renamed over `path`, the directory fsynced. On failure the
    half copy goes; a full disk is `StorageFull`, `no_space` and the system's reason."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    try:
        fd = create_file(tmp, mode)
        try:
            _pwrite_all(fd, data, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if exc.errno in FULL_DISK:
            raise StorageFull(exc.errno, f"{no_space}: {exc.strerror}") from exc
        raise


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


_PID_TAGGED = re.compile(r"\.(\d+)(?:\.\d+)?\.tmp$")
_STALE_TEMP_S = 600.0
"""A temp file untouched this long is litter, whoever's pid it names: its writer renames it
within a second or two of its last write (a pid reused by another process, a writer in
another pid namespace on a shared volume, or pid 1 must not keep litter forever)."""


def _being_written(name: str, mtime: float) -> bool:
    """Whether a temp file may still be in the middle of its write. Files written outside
    the store's lock (an index a reader builds, the service's advert: ``NAME.PID[.THREAD].tmp``)
    may be when another process opens the store: those whose writer is alive and that were
    written to recently are. A file without a pid is written under the lock: never."""
    match = _PID_TAGGED.search(name)
    if match is None or time.time() - mtime > _STALE_TEMP_S:
        return False
    return process_alive(int(match.group(1)))
