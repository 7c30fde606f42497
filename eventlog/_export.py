"""Export and import of events as JSON lines, the shape `lmg tail` prints and `lmg append` reads.

An export line is one stored event with its LSN in the source log:
``{"lsn": 12, "type": "prompt.added", "ts": ..., "occurred_at": ..., "actor": ..., "id": ...}``
(fields at their defaults are left out, as in the log itself). An export of chosen sessions
carries what they refer to, so it imports on its own: the agents and templates they use
(every event of those), and the sessions their forks and edges reach.

An import into a new store (no directory, or an empty one) keeps every event's id, ``ts`` and
``occurred_at``; the store is built beside its target and renamed into place, so it appears
whole or not at all. An import into an existing store appends the events as new ones: ids
are kept and checked like any append (a duplicate id is an error), ``ts`` is the time of the
import, and ``occurred_at`` keeps the original time (its ``occurred_at``, or else its ``ts``).
"""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import msgspec

from . import _commands as c
from . import events as ev
from ._copy import building_store, check_new_store
from ._reader import Record
from ._resolve import session_of
from ._time import TimeLike, to_ns
from ._wire import record_json
from .errors import InvalidEvent
from .log import EventLog
from .options import Durability, Options

__all__ = ["Imported", "export_events", "import_events", "read_export"]

_JSON = msgspec.json.Encoder()
_EVENT = msgspec.json.Decoder(ev.Event)
_NEW_STORE_CHUNK = 4096  # events per request of an import into a new store


class _Position(msgspec.Struct):
    lsn: int | None = None


SESSION_DOCUMENT = "llm-memory-graph/session@"
"""How the ``format`` of a session document (`projections.export_sessions`) begins."""


class _Document(msgspec.Struct):
    """What an import reads of a session document: its format, and the export lines of the
    session's events (the rows beside them are what the events fold into)."""

    format: str
    events: list[msgspec.Raw] | None = None


class Imported(msgspec.Struct, frozen=True, kw_only=True):
    """What an import stored."""

    events: int
    first_lsn: int  # of the first imported event in the target (-1: none imported)
    new_store: bool  # True: ids, ts and occurred_at kept; False: appended as new events
    stored_before: int = 0
    """Of `events`, those an earlier run of the same import into this store had stored (a rerun
    after a failure, or of an import that completed): not stored again."""


def export_events(
    store: str | os.PathLike[str],
    out: BinaryIO,
    *,
    sessions: Iterable[uuid.UUID | str] | None = None,
    start_time: TimeLike | None = None,
    stop_time: TimeLike | None = None,
) -> int:
    """Write the events of `store` to `out` as JSON lines; return how many.

    Everything by default; with `sessions`, those sessions and what they refer to (see the
    module docstring); with `start_time`/`stop_time`, only events recorded in that range.
    The export ends at the log's end when it starts: appends meanwhile are not in it."""
    start = None if start_time is None else to_ns(start_time, "start_time")
    stop = None if stop_time is None else to_ns(stop_time, "stop_time")
    with EventLog.open(store, readonly=True) as log:
        end = log.next_lsn()

        def scan() -> Iterator[Record]:
            return log.read(0, end, start_time=start, stop_time=stop)

        wanted = None if sessions is None else _select(scan, {_session_id(s) for s in sessions})
        count = 0
        for record in scan():
            if wanted is None or record.lsn in wanted:
                out.write(record_json(record) + b"\n")
                count += 1
    return count


def _session_id(value: uuid.UUID | str) -> int:
    try:
        return (value if isinstance(value, uuid.UUID) else uuid.UUID(value)).int
    except (ValueError, AttributeError, TypeError):
        raise InvalidEvent(f"{value!r} is not a session id (a UUID)") from None


def _ids(event: ev.EventBase) -> set[int]:
    """Every node id an event names (its own, its session, what it refers to)."""
    return {
        v.int
        for v in (getattr(event, f) for f in event.__struct_fields__)
        if isinstance(v, uuid.UUID)
    }


def _select(scan: Callable[[], Iterator[Record]], sessions: set[int]) -> set[int]:
    """The LSNs of `sessions`' events and of everything they refer to.

    References point backwards, so one scan finds them, except references into sessions not
    chosen (a fork's parent, an edge's far end): those sessions join, and the scan repeats.
    Events of no session (agents, templates, global nodes) are kept aside by the ids they
    name, and those the chosen events reach (transitively: a template's parent) join."""
    requested = set(sessions)
    while True:
        chosen: set[int] = set()
        owned: set[int] = set()  # nodes the chosen sessions' events created
        foreign: set[int] = set()  # referred to, not (yet) known to be owned or global
        by_global: dict[int, list[int]] = {}  # node id -> LSNs of global events naming it
        global_ids: dict[int, set[int]] = {}  # LSN of a global event -> the ids it names
        reached_globals: set[int] = set()
        seen: set[int] = set()
        for record in scan():
            event = record.event
            session = session_of(event)
            if session is not None and session.int not in sessions:
                continue
            ids = _ids(event)
            if session is None:
                global_ids[record.lsn] = ids
                for node in ids:
                    by_global.setdefault(node, []).append(record.lsn)
                continue
            seen.add(session.int)
            chosen.add(record.lsn)
            own = getattr(event, "id", None)
            if isinstance(own, uuid.UUID):
                owned.add(own.int)
            reached_globals |= ids & by_global.keys()
            foreign |= ids - owned - by_global.keys()
        missing = requested - seen
        if missing:
            raise InvalidEvent(f"no events of session {uuid.UUID(int=min(missing))} to export")
        reached = _owners(scan, foreign - owned) - sessions
        if not reached:
            return chosen | _global_closure(reached_globals, by_global, global_ids)
        sessions |= reached


def _owners(scan: Callable[[], Iterator[Record]], nodes: set[int]) -> set[int]:
    """The sessions the `nodes` belong to (one scan; none if `nodes` is empty)."""
    if not nodes:
        return set()
    found: set[int] = set()
    for record in scan():
        node = getattr(record.event, "id", None)
        session = session_of(record.event)
        if isinstance(node, uuid.UUID) and node.int in nodes and session is not None:
            found.add(session.int)
    return found


def _global_closure(
    todo: set[int], by_global: dict[int, list[int]], global_ids: dict[int, set[int]]
) -> set[int]:
    """The LSNs of the global events naming the nodes `todo`, and of those they name in turn."""
    done: set[int] = set()
    lsns: set[int] = set()
    while todo:
        node = todo.pop()
        done.add(node)
        for lsn in by_global[node]:
            lsns.add(lsn)
            todo |= (global_ids[lsn] & by_global.keys()) - done
    return lsns


MAX_IMPORT_LINE_BYTES = 6 * Options().max_request_bytes
"""The longest line an import reads from a file: the JSON of the largest event the log
accepts, were every byte of it escaped (``\\u001f`` is six bytes for one). Without a bound, a
file with no newline was read whole (a 600 MB line used 1.2 GB)."""


def _bounded_lines(stream: io.BufferedIOBase | io.RawIOBase, limit: int) -> Iterator[bytes]:
    """The lines of `stream`; `InvalidEvent` once one passes `limit` bytes, before more of it
    is read."""
    for n, line in enumerate(iter(lambda: stream.readline(limit + 1), b""), 1):
        if len(line.rstrip(b"\r\n")) > limit:
            raise InvalidEvent(f"line {n}: longer than {limit} bytes: not an exported event")
        yield line


def read_export(lines: Iterable[bytes]) -> Iterator[ev.EventBase]:
    """The events of an export, in order; `InvalidEvent` naming the line of a bad one (a line
    that is not an event, or whose LSN is not after the one before).

    A file of session documents (``lmg export --format session``, one per line) gives the
    events each carries, in the order of their LSNs in the source, an event that several
    documents carry (an agent or template they share) once."""
    last = -1
    documents: dict[int, bytes] = {}  # the documents' events, by their LSN in the source
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            event = _EVENT.decode(line)
            lsn = msgspec.json.decode(line, type=_Position).lsn
        except (msgspec.DecodeError, RecursionError) as exc:
            found = _document_events(line, n, exc)
            if last >= 0:
                raise InvalidEvent(f"line {n}: a session document among events") from None
            _merge_documents(documents, found, n)
            continue
        if documents:
            raise InvalidEvent(f"line {n}: an event among session documents")
        if lsn is not None:
            if lsn <= last:
                raise InvalidEvent(f"line {n}: LSN {lsn} is not after {last} (out of order)")
            last = lsn
        yield event
    for lsn in sorted(documents):
        yield _EVENT.decode(documents[lsn])


def _merge_documents(documents: dict[int, bytes], found: list[tuple[int, bytes]], n: int) -> None:
    """Add the events of the document on line `n` to those of the documents before it.

    An LSN that two documents carry is one event of the source (an agent or template they
    share), so it must be the same event in both (and in one document, at most once);
    `InvalidEvent` if not. Documents of two stores, concatenated, carry different events at
    the same LSNs: merged by LSN, the later replaced the earlier, and one store's sessions
    were silently left out of the import."""
    for lsn, raw in found:
        known = documents.get(lsn)
        if known is not None and known != raw and _EVENT.decode(known) != _EVENT.decode(raw):
            raise InvalidEvent(
                f"line {n}: LSN {lsn} is carried twice, as two different events: "
                "documents of different stores (or exports of a store since erased)? import "
                "each file on its own"
            )
        documents[lsn] = raw


def _document_events(line: bytes, n: int, error: Exception) -> list[tuple[int, bytes]]:
    """The events of the session document on line `n`, with their LSNs; `InvalidEvent` with `error`
    (why the line is no event) if it is no session document either."""
    try:
        document = msgspec.json.decode(line, type=_Document)
    except (msgspec.DecodeError, RecursionError):
        raise InvalidEvent(f"line {n}: not an exported event ({error})") from None
    if not document.format.startswith(SESSION_DOCUMENT):
        raise InvalidEvent(f"line {n}: not an exported event ({error})")
    if document.events is None:
        raise InvalidEvent(
            f"line {n}: this session document carries no events (written before they were "
            "added): export the session again"
        )
    found: list[tuple[int, bytes]] = []
    for raw in document.events:
        try:
            _EVENT.decode(raw)
            lsn = msgspec.json.decode(raw, type=_Position).lsn
        except (msgspec.DecodeError, RecursionError) as exc:
            raise InvalidEvent(f"line {n}: an event of the document is bad ({exc})") from None
        if lsn is None:
            raise InvalidEvent(f"line {n}: an event of the document has no lsn")
        found.append((lsn, bytes(raw)))
    return found


def import_events(
    store: str | os.PathLike[str], lines: Iterable[bytes], *, part_bytes: int | None = None
) -> Imported:
    """Import an export (JSON lines, as `export_events` writes) into `store`.

    Into a new store, events keep their ids, ``ts`` and ``occurred_at``, and the store
    appears whole or not at all. Into an existing store, they are appended as new events:
    ids kept and checked, ``ts`` now, ``occurred_at`` the original time. There the import
    is one all-or-nothing request of up to `part_bytes` of JSON (default: half of
    `Options.max_request_bytes`); a larger one goes in parts of that size, each with an
    idempotency key made from the input up to its end, so running the import again after a
    failure (with the same input, or one that differs only after the part that failed)
    completes it without storing any part twice."""
    if part_bytes is not None and (isinstance(part_bytes, bool) or part_bytes < 1):
        raise InvalidEvent(f"part_bytes must be a positive int, got {part_bytes!r}")
    path = Path(store)
    if isinstance(lines, io.BufferedIOBase | io.RawIOBase):  # a file: bound each line
        lines = _bounded_lines(lines, MAX_IMPORT_LINE_BYTES)
    events = read_export(lines)
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return _import_new(path, events)
    return _import_existing(path, events, part_bytes)


def _import_new(path: Path, events: Iterator[ev.EventBase]) -> Imported:
    check_new_store(path)
    count = 0
    with (
        building_store(path, "importing") as building,
        EventLog.open(building, durability=Durability.NONE) as log,
    ):
        for chunk in _chunks(events, _NEW_STORE_CHUNK, None):
            request = c.prepare(chunk, {})
            request.keep_ts = True
            log._committer.submit(request)
            count += len(chunk)
    return Imported(events=count, first_lsn=0 if count else -1, new_store=True)


def _import_existing(
    path: Path, events: Iterator[ev.EventBase], part_bytes: int | None
) -> Imported:
    with EventLog.open(path) as log:
        # JSON bytes; their MessagePack, what max_request_bytes limits, is smaller
        limit = part_bytes or log._store.options.max_request_bytes // 2
        digest = hashlib.sha256()
        count, first, before = 0, -1, 0
        for i, chunk in enumerate(_chunks(events, None, limit)):
            for event in chunk:
                digest.update(_JSON.encode(event))
            fresh = [
                msgspec.structs.replace(e, ts=0, occurred_at=e.occurred_at or e.ts or None)
                for e in chunk
            ]
            result = log.append(fresh, idempotency_key=f"import:{digest.hexdigest()}:{i}")
            first = result.first_lsn if first < 0 else first
            count += len(chunk)
            before += len(chunk) if result.duplicate else 0
    return Imported(events=count, first_lsn=first, new_store=False, stored_before=before)


def _chunks(
    events: Iterator[ev.EventBase], max_events: int | None, max_bytes: int | None
) -> Iterator[list[ev.EventBase]]:
    chunk: list[ev.EventBase] = []
    size = 0
    for event in events:
        chunk.append(event)
        if max_bytes is not None:
            size += len(_JSON.encode(event))
        if (max_events is not None and len(chunk) >= max_events) or (
            max_bytes is not None and size >= max_bytes
        ):
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk
