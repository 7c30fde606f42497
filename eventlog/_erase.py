"""Erasure: blank the content of chosen events in the log itself, and keep its structure.

An erasure selects events (by session, node, actor, metadata key and value, or age), blanks
their `CONTENT_FIELDS` (`events.erase_content`: texts become a marker, mappings and lists
empty, ``erased_at`` set) and keeps everything else: LSNs, ids, times, kinds, edges, numbers.
The log then records that it happened (an ``erasure.applied`` event: selector, time, actor,
never the content). It runs in these steps, each safe to repeat:

1. Select, with one scan of the log. Unknown session or node ids are an error; nothing is
   written. A dry run stops here.
2. Journal: ``ERASURE.json`` (written atomically) holds the LSN ranges to blank, the record to
   append and the phase, never content (metadata values are left out of it).
3. Seal: rotate, so that every selected event is in a sealed segment.
4. Rewrite each sealed segment holding a selected event (`Store.replace_sealed`): a temp file
   beside it, fsynced, renamed over it, the directory fsynced, under the append lock. Frames
   keep their LSN ranges and times; frames without a selected event are copied byte for byte.
   The ``.idx`` is rebuilt (offsets move); the ``.ids`` stays valid (ids and LSNs do not).
5. Append the ``erasure.applied`` record, with idempotency key ``erasure:<id>``.
6. Journal phase ``projections``: the log is done; the projections' part (`projections.erase`)
   drops the database and the snapshots that may hold the content, then ends the erasure.

A crash anywhere leaves every segment wholly old or wholly new; the next `erase` (or
`resume_erasure`) finds the journal and runs steps 3 to 6 again: an event already erased is
left as it is, a segment with nothing left to blank is not rewritten, and the record's key
makes its append happen once. Only one erasure runs on a store at a time (``ERASURE.lock``).
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import functools
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple, cast

import msgspec

from . import events as ev
from ._files import Modes, open_file, open_or_create
from ._format import (
    FRAME_HEADER,
    SEGMENT_HEADER,
    FrameError,
    Request,
    decode_body,
    encode_body,
    encode_frame,
    unpack_body,
)
from ._ids import new_id
from ._index import fsync_dir, write_atomically
from ._resolve import session_of
from ._segment import BadFrame, Frame, iter_frames
from ._store import FULL_DISK, PendingRequest, Store, check_store
from ._time import TimeLike, to_ns
from .errors import CorruptionError, EventLogError, InvalidEvent, StorageFull, UnknownNode
from .log import EventLog, _Reads

__all__ = [
    "JOURNAL_FILE",
    "Erasure",
    "ErasureRunning",
    "Selected",
    "Selector",
    "end_erasure",
    "erase",
    "erase_open",
    "pending_erasure",
    "resume_erasure",
    "select",
]

JOURNAL_FILE = "ERASURE.json"
_LOCK_FILE = "ERASURE.lock"
_SUBJECT_FIELDS = ("id", "agent_id", "template_id", "tool_id", "node_id", "session_id")
_SESSION_EVENTS = (ev.SessionCreated, ev.SessionUpdated, ev.SessionForked)


class ErasureRunning(EventLogError):
    """Another process is erasing from this store (it holds ``ERASURE.lock``)."""


class Selector(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Which events to erase: those matching any of the criteria.

    `sessions`: every event of these sessions. `nodes`: every event about these nodes (the
    one creating it and those updating, completing or deleting it; a session's id counts as
    `sessions`). `actors`: every event these actors caused. `metadata`: key and value pairs;
    a session whose metadata holds one (say ``user=42``) is erased whole, any other node
    whose `metadata` holds one is erased like `nodes`; a value matches a text equal to it or
    a JSON value that encodes to it. `before`: every event the log recorded before this
    time (``ts``, ns UTC)."""

    sessions: list[uuid.UUID] = []
    nodes: list[uuid.UUID] = []
    actors: list[str] = []
    metadata: dict[str, str] = {}
    before: int | None = None

    @classmethod
    def of(
        cls,
        *,
        sessions: Sequence[uuid.UUID | str] = (),
        nodes: Sequence[uuid.UUID | str] = (),
        actors: Sequence[str] = (),
        metadata: dict[str, str] | None = None,
        before: TimeLike | None = None,
    ) -> Selector:
        """A selector from ids as UUIDs or text, a time as `TimeLike`; InvalidEvent if bad."""
        try:
            return cls(
                sessions=[_uuid(s, "session") for s in sessions],
                nodes=[_uuid(n, "node") for n in nodes],
                actors=list(actors),
                metadata=dict(metadata or {}),
                before=None if before is None else to_ns(before, "before"),
            )
        except msgspec.ValidationError as exc:
            raise InvalidEvent(f"bad selector: {exc}") from None

    def is_empty(self) -> bool:
        return not (self.sessions or self.nodes or self.actors or self.metadata) and (
            self.before is None
        )


class Erasure(msgspec.Struct, kw_only=True):
    """One erasure, as its journal holds it: the record the log gets, the LSN ranges
    (inclusive) to blank, the phase, the LSN from which projections and snapshots must be
    dropped (the smallest of every erasure whose projections' part is still due), and the
    sealed segments it rewrote (a run a crash interrupted included: counted at the end).

    `resumed` is never journaled: `erase` returns in it the erasure a crash interrupted
    that it finished before this one, so that a caller can say so."""

    record: ev.ErasureApplied
    ranges: list[tuple[int, int]]
    phase: Literal["log", "projections", "done"] = "log"
    projections_from: int | None = None
    segments_rewritten: int = 0
    resumed: Erasure | None = None


class Selected(NamedTuple):
    """An event an erasure selects (what a dry run lists): never its content."""

    lsn: int
    type: str
    node_id: uuid.UUID | None
    session_id: uuid.UUID | None
    ts: int


def select(store: str | os.PathLike[str], selector: Selector) -> list[Selected]:
    """The events `selector` would erase now, in LSN order (a dry run: nothing is written).
    Events already erased are not listed. UnknownNode for a session or node id no event
    created; InvalidEvent for an empty selector."""
    root = _root(store)
    with EventLog.open(root, readonly=True) as log:
        return _select(log, selector, log.next_lsn())


def erase(
    store: str | os.PathLike[str],
    selector: Selector,
    *,
    actor: str | None = None,
    now: int | None = None,
) -> Erasure:
    """Erase the content of the events `selector` chooses from the log (steps 1 to 6 of the
    module docstring), first finishing the log's part of an erasure a crash interrupted.
    Returns the erasure in phase ``projections`` (``done`` with nothing selected, whose
    record is not appended), with the interrupted one it finished first in `resumed`: the
    projections' part is left to `projections.erase`, which calls this."""
    root = _root(store)
    with EventLog.open(root) as log:
        return erase_open(log, selector, actor=actor, now=now)


def erase_open(
    log: _Reads, selector: Selector, *, actor: str | None = None, now: int | None = None
) -> Erasure:
    """`erase` through a log this process has open for appending. The service erases
    through its own handle, so that handle's caches (the events it keeps for templates and
    retries, its active segment) see the rewrite as it happens."""
    root = log._store.path
    with _erasure_lock(root):
        pending = _finish(log, pending_erasure(root))  # its projections' part may be due
        chosen = _select(log, selector, log.next_lsn())
        marked_at = time.time_ns() if now is None else now
        record = ev.ErasureApplied(
            erasure_id=new_id(),
            marked_at=marked_at,
            events=len(chosen),
            first_lsn=chosen[0].lsn if chosen else None,
            last_lsn=chosen[-1].lsn if chosen else None,
            sessions=list(selector.sessions),
            nodes=list(selector.nodes),
            actors=list(selector.actors),
            metadata_keys=sorted(selector.metadata),
            before=selector.before,
            actor=actor,
        )
        if not chosen:  # (a pending erasure's projections' part stays due)
            return Erasure(record=record, ranges=[], phase="done", resumed=pending)
        due = [chosen[0].lsn]
        if pending is not None and pending.projections_from is not None:
            due.append(pending.projections_from)
        erasure = Erasure(
            record=record, ranges=_ranges(s.lsn for s in chosen), projections_from=min(due)
        )
        _write_journal(root, erasure)
        done = _finish(log, erasure) or erasure
        done.resumed = pending  # (after the journal's last write: it never holds one)
        return done


def pending_erasure(store: str | os.PathLike[str]) -> Erasure | None:
    """The erasure the store's journal holds (one a crash interrupted, or whose projections'
    part is still due), or None."""
    path = Path(store) / JOURNAL_FILE
    try:
        return msgspec.json.decode(path.read_bytes(), type=Erasure)
    except FileNotFoundError:
        return None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise EventLogError(f"{path} is unreadable: {exc}") from None


def resume_erasure(store: str | os.PathLike[str]) -> Erasure | None:
    """Finish the log's part of an interrupted erasure (steps 3 to 6); None if none."""
    root = _root(store)
    pending = pending_erasure(root)
    if pending is None or pending.phase != "log":
        return pending
    with _erasure_lock(root), EventLog.open(root) as log:
        return _finish(log, pending_erasure(root))


def end_erasure(store: str | os.PathLike[str], erasure_id: uuid.UUID) -> bool:
    """Remove the journal of erasure `erasure_id` once its projections' part is done too
    (`projections.erase`). False, leaving it, if the journal holds another erasure or one
    still in its log phase, or an erasure is running (its journal is not for us to end)."""
    root = Path(store)
    try:
        with _erasure_lock(root):
            pending = pending_erasure(root)
            if pending is None or pending.phase != "projections":
                return False
            if pending.record.erasure_id != erasure_id:
                return False
            (root / JOURNAL_FILE).unlink()
            fsync_dir(root)
            return True
    except ErasureRunning:
        return False


# -- selecting ----------------------------------------------------------------------------------


def _select(log: _Reads, selector: Selector, end: int) -> list[Selected]:
    """The events to erase, in LSN order: one scan of the log, two with `metadata` (the
    first finds the sessions and nodes it matches). Memory holds only what is chosen."""
    if selector.is_empty():
        raise InvalidEvent("an erasure needs at least one criterion (session, node, ...)")
    sessions, nodes = set(selector.sessions), set(selector.nodes)
    traces: set[str] = set()
    spans = (sessions or nodes) and log.stats().events_by_type.get("span.recorded", 0) > 0
    if selector.metadata or spans:
        traces = _sessions_and_traces(log, end, selector.metadata, sessions, nodes)
    wanted = set(selector.sessions) | set(selector.nodes)
    created: dict[uuid.UUID, bool] = {}  # wanted ids seen created: is it a session?
    whole = sessions | nodes  # a node that is a session: every event of it
    actors, before = set(selector.actors), selector.before
    chosen: list[Selected] = []
    for lsn, event in log.read(0, end):
        subject = _subject(event)
        if subject in wanted and getattr(event, "id", None) == subject:
            created[subject] = isinstance(event, ev.SessionCreated | ev.SessionForked)
        if event.erased_at is not None or isinstance(event, ev.ErasureApplied):
            continue
        session = session_of(event)
        if (
            session in whole
            or subject in nodes
            or (isinstance(event, ev.SpanRecorded) and event.trace_id in traces)
            or (event.actor is not None and event.actor in actors)
            or (before is not None and event.ts < before)
        ):
            chosen.append(Selected(lsn, ev.tag_of(event), subject, session, event.ts))
    for node in selector.nodes:
        if node not in created:
            raise UnknownNode(node, "node")
    for session in selector.sessions:
        if not created.get(session, False):
            raise UnknownNode(session, "session")
    return chosen


def _sessions_and_traces(
    log: _Reads, end: int, metadata: dict[str, str], sessions: set[uuid.UUID], nodes: set[uuid.UUID]
) -> set[str]:
    """The first scan: adds to `sessions` and `nodes` those whose metadata holds a pair of
    `metadata`, and returns the traces the chosen sessions came from. Spans name traces, not
    sessions, and their attributes hold the prompts: the ingest mapping (`_genai`) writes the
    trace of each session, prompt and response it makes into its metadata (``trace_id``), so
    the spans of those traces are erased with the session. A session is created before its
    other events, so one scan finds both."""
    traces: set[str] = set()
    for _lsn, event in log.read(0, end):
        subject = _subject(event)
        if metadata and subject is not None and _metadata_matches(event, metadata):
            (sessions if isinstance(event, _SESSION_EVENTS) else nodes).add(subject)
        session = session_of(event)
        if session is not None and (session in sessions or session in nodes):
            trace = _trace_of(event)
            if trace is not None:
                traces.add(trace)
    return traces


def _trace_of(event: ev.EventBase) -> str | None:
    """The trace the ingest mapping made `event` from (its metadata's ``trace_id``), if any."""
    metadata: Any = getattr(event, "metadata", None)
    if isinstance(metadata, ev.PromptMetadata):
        metadata = metadata.custom
    found = metadata.get("trace_id") if isinstance(metadata, dict) else None
    return found if isinstance(found, str) else None


def _subject(event: ev.EventBase) -> uuid.UUID | None:
    """The node an event creates or changes (a session update's session, a completion's tool)."""
    name = _subject_field(type(event))
    found: uuid.UUID | None = None if name is None else getattr(event, name)
    return found


@functools.cache
def _subject_field(cls: type[ev.EventBase]) -> str | None:
    return next((f for f in _SUBJECT_FIELDS if f in cls.__struct_fields__), None)


def _metadata_matches(event: ev.EventBase, wanted: dict[str, str]) -> bool:
    metadata: Any = getattr(event, "metadata", None)
    if isinstance(metadata, ev.PromptMetadata):
        metadata = metadata.custom
    if not isinstance(metadata, dict):
        return False
    return any(key in metadata and _equal(metadata[key], value) for key, value in wanted.items())


def _equal(found: Any, value: str) -> bool:
    if isinstance(found, str):
        return found == value
    try:
        return msgspec.json.encode(found).decode() == value
    except (TypeError, msgspec.EncodeError):
        return False


def _uuid(value: uuid.UUID | str, what: str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InvalidEvent(f"{what} id {value!r} is not a UUID") from None


def _ranges(lsns: Iterator[int] | Any) -> list[tuple[int, int]]:
    """Sorted LSNs as inclusive ranges of consecutive ones."""
    ranges: list[tuple[int, int]] = []
    for lsn in lsns:
        if ranges and ranges[-1][1] == lsn - 1:
            ranges[-1] = (ranges[-1][0], lsn)
        else:
            ranges.append((lsn, lsn))
    return ranges


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Inclusive ranges sorted, those that overlap or touch merged (an empty one dropped)."""
    merged: list[tuple[int, int]] = []
    for first, last in sorted(r for r in ranges if r[0] <= r[1]):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


class _Targets:
    """Membership in sorted inclusive LSN ranges, by bisect."""

    def __init__(self, ranges: list[tuple[int, int]]) -> None:
        self._starts = [a for a, _ in ranges]
        self._ranges = ranges

    def __contains__(self, lsn: int) -> bool:
        i = bisect.bisect_right(self._starts, lsn) - 1
        return i >= 0 and self._ranges[i][1] >= lsn

    def overlaps(self, first: int, stop: int) -> bool:
        """Any target in [first, stop)?"""
        i = bisect.bisect_right(self._starts, stop - 1) - 1
        return i >= 0 and self._ranges[i][1] >= first


# -- applying -----------------------------------------------------------------------------------


def _finish(log: _Reads, erasure: Erasure | None) -> Erasure | None:
    """Steps 3 to 6 for a journaled erasure still in its log phase; others come back as is.
    A full disk stops it where it is (each segment wholly old or new), and says how to
    finish it: the journal holds it, and steps 3 to 6 are safe to repeat."""
    if erasure is None or erasure.phase != "log":
        return erasure
    try:
        return _apply(log, erasure)
    except OSError as exc:
        if exc.errno not in FULL_DISK:
            raise
        said = exc.strerror if exc.filename is None else f"{exc.filename}: {exc.strerror}"
        raise StorageFull(
            exc.errno,
            f"{said}; the erasure stopped, journaled, and nothing was lost: `lmg erase "
            "--resume` (or the same erasure again) finishes it once there is room",
        ) from None


def _apply(log: _Reads, erasure: Erasure) -> Erasure:
    """Steps 3 to 6 (see `_finish`)."""
    store: Store = log._store
    store.seal_active()
    # A journal is ours, but may have been edited by hand: erase every LSN it names (the
    # ranges in order, merged), and drop the snapshots from the first of them at least.
    erasure.ranges = _merged(erasure.ranges)
    if erasure.ranges:
        first = erasure.ranges[0][0]
        due = erasure.projections_from
        erasure.projections_from = first if due is None else min(due, first)
    targets = _Targets(erasure.ranges)
    rewritten = 0  # each holds an event selected unerased: rewritten by now, if not here
    for first in store.segments()[:-1]:
        end = store.summary(first).next_lsn
        if targets.overlaps(first, end):
            _rewrite(store, first, targets, erasure.record.marked_at)
            rewritten += 1
    record = msgspec.structs.replace(erasure.record)
    request = PendingRequest([record], key=f"erasure:{record.erasure_id}")
    (result,) = store.commit([request])
    if isinstance(result, EventLogError):
        raise result
    erasure.record = cast(ev.ErasureApplied, result.events[0])
    erasure.phase = "projections"
    erasure.segments_rewritten = rewritten
    _redescribe_backup(store.path)
    _write_journal(store.path, erasure)
    return erasure


def _redescribe_backup(root: Path) -> None:
    """A backup is a store, and may be erased: its manifest must then say what it holds."""
    from ._backup import BACKUP_FILE, redescribe  # noqa: PLC0415 (_backup imports this module)

    if (root / BACKUP_FILE).exists():
        redescribe(root)


def _rewrite(store: Store, first: int, targets: _Targets, marked_at: int) -> bool:
    """Rewrite one sealed segment with its targets erased; False if none was left to erase."""
    path = store.segment_path(first)
    fd = open_file(path)
    try:
        size = os.fstat(fd).st_size
        parts: list[bytes] = [os.pread(fd, SEGMENT_HEADER, 0)]
        changed: list[tuple[int, list[Request], Frame]] = []
        try:
            for frame in iter_frames(fd, SEGMENT_HEADER, size, first):
                requests = _erased_frame(frame, targets, marked_at)
                if requests is None:
                    parts.append(os.pread(fd, FRAME_HEADER, frame.offset) + frame.body)
                else:
                    changed.append((len(parts), requests, frame))
                    parts.append(b"")
        except BadFrame as bad:
            raise CorruptionError(
                f"damaged frame ({bad.reason})", str(path), bad.offset, bad.lsn
            ) from None
    finally:
        os.close(fd)
    if not changed:
        return False
    # A new size tells every cached summary of the old file apart (`Cursor`, `.idx`): if the
    # erased frames came out the same size, store them at another compression level.
    for level in (store.options.compression_level, None, 1, 19):
        for at, requests, frame in changed:
            parts[at] = _frame(requests, frame, level)
        if sum(map(len, parts)) != size:
            break
    store.replace_sealed(first, b"".join(parts))
    return True


def _erased_frame(frame: Frame, targets: _Targets, marked_at: int) -> list[Request] | None:
    """The frame's requests with the targets erased; None if it holds none left to erase."""
    head = frame.head
    if not targets.overlaps(head.first_lsn, head.next_lsn):
        return None
    try:
        requests = decode_body(unpack_body(head, frame.body))
    except (FrameError, msgspec.DecodeError) as exc:
        raise CorruptionError(
            f"frame does not decode ({exc})", "", frame.offset, head.first_lsn
        ) from None
    lsn, touched = head.first_lsn, False
    out: list[Request] = []
    for request in requests:
        events: list[ev.Event] = []
        for event in request.events:
            erased = lsn in targets and event.erased_at is None
            events.append(cast(ev.Event, ev.erase_content(event, marked_at)) if erased else event)
            touched = touched or erased
            lsn += 1
        out.append(Request(events, request.key))
    return out if touched else None


def _frame(requests: list[Request], frame: Frame, level: int | None) -> bytes:
    head = frame.head
    return encode_frame(
        encode_body(requests),
        first_lsn=head.first_lsn,
        count=head.event_count,
        min_ts=head.min_ts,
        max_ts=head.max_ts,
        level=level,
    )


# -- files --------------------------------------------------------------------------------------


def _root(store: str | os.PathLike[str]) -> Path:
    root = Path(store)
    check_store(root)
    return root


def _write_journal(root: Path, erasure: Erasure) -> None:
    write_atomically(root / JOURNAL_FILE, msgspec.json.encode(erasure))


@contextlib.contextmanager
def _erasure_lock(root: Path) -> Iterator[None]:
    fd = open_or_create(root / _LOCK_FILE, Modes.of(root).file)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ErasureRunning(f"an erasure is already running on {root}") from None
        yield
    finally:
        os.close(fd)
