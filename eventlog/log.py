"""The append API: `EventLog` for threads, `AsyncEventLog` for asyncio, same methods.

Each typed helper of `_commands` becomes a method of both classes, so they never drift.
Appends from many threads share one write and one fsync: the first waiting thread becomes
the leader, takes everything queued, commits it as one frame and wakes the others (group
commit). Asyncio appends queue for one committer thread, which commits whatever is queued when
its last commit ends: 64 agents cost one fsync per group, the loop builds the next group
while the disk syncs the last one, and the loop never blocks on the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import itertools
import json
import os
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

import msgspec

from . import _commands as c
from ._format import ENCODER
from ._reader import AsyncCursor, Cursor, Record, follow, follow_async
from ._store import RECOVERY_LOG, Appended, PendingRequest, Store
from ._time import TimeLike, to_ns
from .errors import EventLogError, InvalidEvent, LogClosed
from .events import NodeKind
from .options import Options

__all__ = [
    "Appends",
    "AsyncAppends",
    "AsyncEventLog",
    "EventLog",
    "Stats",
    "open",
    "open_async",
]

P = ParamSpec("P")

SETTLE_WAIT_S = 0.005
"""How long the asyncio committer waits for a loop to run the callers its last commit
answered, before taking what is queued without them (a loop busy with something else)."""
R = TypeVar("R")


class Stats(msgspec.Struct, kw_only=True):
    """What a store holds: `stats` of the Rust crate llm-memory-graph, for a log."""

    path: str
    segments: int
    events: int
    events_by_type: dict[str, int]
    first_ts: int | None
    last_ts: int | None
    stored_bytes: int  # frames as on disk (headers and compressed bodies)
    raw_bytes: int  # the same events as uncompressed MessagePack
    disk_bytes: int  # every file of the store, indexes included
    compression_ratio: float
    recovered_bytes: int  # torn-tail bytes recovery has ever dropped (recovery.jsonl)
    durability: str


def _held_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass
class _Slot:
    """One thread's request. `wake` is a lock taken at the start and released by whoever
    serves it (or hands it the lead): a follower blocks acquiring it. A bare lock costs a
    tenth of a `threading.Event` (a condition and its lock) to make, on every append."""

    request: PendingRequest
    result: Appended | BaseException | None = None
    wake: threading.Lock = field(default_factory=_held_lock)
    next: _Slot | None = None  # the next thread served by the same commit: this one wakes it
    woken: bool = False  # set before `wake` is released: an interrupt after it ends the wait

    def rouse(self) -> None:
        self.woken = True
        self.wake.release()


class _GroupCommit:
    """Leader/follower group commit for threads (see the module docstring).

    A thread that finds no leader leads: it commits its own request, as one frame, then
    hands the lead to the first thread queued meanwhile (if any), which commits everything
    queued. The threads a commit served wake in a chain: the leader wakes the first, each
    the next as it runs. Woken all at once, they would stampede for the GIL with the next
    leader; one at a time, 16 threads spent about an eighth less CPU per append and
    appended 1.12-1.15x as fast (docs/benchmarks.md). A lone writer makes no slot and waits
    on no lock of its own.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()  # guards _queue and _leading
        self._queue: list[_Slot] = []
        self._leading = False

    def submit(self, request: PendingRequest) -> Appended:
        with self._lock:
            alone = not self._leading
            self._leading = True
            if not alone:
                slot = _Slot(request)
                self._queue.append(slot)
        if alone:  # a lone writer commits its own request: no slot, no wake-up lock
            try:
                result = _commit(self._store, [request])[0]
            finally:  # a Ctrl-C landing here must not leave the lead taken for good
                self._hand_over()
        else:
            interrupted = _wait(slot)  # served by a leader, or handed the lead
            if slot.next is not None:
                slot.next.rouse()  # the chain of a commit's threads: see the class
            if slot.result is None:
                self._lead(slot)
            if interrupted is not None:
                raise interrupted
            assert slot.result is not None
            result = slot.result
        if isinstance(result, BaseException):
            raise result
        return result

    def _lead(self, own: _Slot) -> None:
        """Commit everything queued, `own` request among it, and wake the chain of the
        other threads served. What makes the commit fail is the result of every thread
        still without one: so is an interrupt (Ctrl-C) that lands in this thread, even
        after the commit. Either way, as for a lone writer, the threads served are woken
        and the lead handed over, so neither they nor later appends wait for good."""
        batch: list[_Slot] = []
        try:
            with self._lock:
                batch, self._queue = self._queue, []
            results = self._store.commit([s.request for s in batch])
            for s, result in zip(batch, results, strict=True):
                s.result = result
        except BaseException as exc:
            for s in batch:
                if s.result is None:
                    s.result = exc
            raise
        finally:
            served = [s for s in batch if s is not own]
            for s, following in itertools.pairwise(served):
                s.next = following
            self._hand_over(served[0] if served else None)

    def _hand_over(self, first: _Slot | None = None) -> None:
        """Wake the first thread served (it wakes the next), and hand the lead to the first
        thread queued meanwhile."""
        with self._lock:
            successor = self._queue[0] if self._queue else None
            self._leading = successor is not None
        if first is not None:
            first.rouse()
        if successor is not None:
            successor.rouse()  # its result is None: it leads the next group


def _wait(slot: _Slot) -> BaseException | None:
    """Wait until `slot` is roused, and return the interrupt (KeyboardInterrupt) that came
    meanwhile, if any: it is raised only once this thread has done its part, waking the next
    thread of its chain or leading, so no other thread waits for it forever (a commit takes
    milliseconds). An interrupt that lands just after the lock was acquired must not make
    the thread acquire it again (it would wait for itself): `woken` says it was roused."""
    interrupted = None
    while True:
        try:
            slot.wake.acquire()
            return interrupted
        except BaseException as exc:
            interrupted = exc
            if slot.woken:
                return interrupted


def _commit(store: Store, requests: list[PendingRequest]) -> list[Appended | BaseException]:
    try:
        return list(store.commit(requests))
    except BaseException as exc:  # the whole group failed; every caller hears it
        return [exc] * len(requests)


def as_method(spec: Callable[..., Any]) -> inspect.Signature:
    """A request builder's parameters after a `self`, for help() and inspect of the method
    made of it (a bound method drops the first parameter); its return annotation is the
    request's, not the answer's, so it goes."""
    signature = inspect.signature(spec)
    receiver = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
    return signature.replace(
        parameters=[receiver, *signature.parameters.values()],
        return_annotation=inspect.Signature.empty,
    )


def _sync_method(build: Callable[P, c.Command[R]]) -> Callable[Concatenate[Appends, P], R]:
    @functools.wraps(build)
    def method(self: Appends, /, *args: P.args, **kwargs: P.kwargs) -> R:
        command = build(*args, **kwargs)
        return command.result(self._submit(command.request))

    method.__signature__ = as_method(build)  # type: ignore[attr-defined]
    return method


def _async_method(
    build: Callable[P, c.Command[R]],
) -> Callable[Concatenate[AsyncAppends, P], Coroutine[Any, Any, R]]:
    @functools.wraps(build)
    async def method(self: AsyncAppends, /, *args: P.args, **kwargs: P.kwargs) -> R:
        command = build(*args, **kwargs)
        return command.result(await self._submit(command.request))

    method.__signature__ = as_method(build)  # type: ignore[attr-defined]
    return method


class Appends:
    """The typed append helpers (`_commands`), over `_submit`: an `EventLog` commits each
    request to its store, a client of `lmg serve` (`eventlog.connect`) sends it there."""

    def _submit(self, request: PendingRequest) -> Appended:
        raise NotImplementedError

    append = _sync_method(c.append)
    create_session = _sync_method(c.create_session)
    create_sessions_batch = _sync_method(c.create_sessions_batch)
    update_session = _sync_method(c.update_session)
    fork_session = _sync_method(c.fork_session)
    add_prompt = _sync_method(c.add_prompt)
    add_prompts_batch = _sync_method(c.add_prompts_batch)
    add_response = _sync_method(c.add_response)
    add_responses_batch = _sync_method(c.add_responses_batch)
    add_conversations_batch = _sync_method(c.add_conversations_batch)
    add_agent = _sync_method(c.add_agent)
    update_agent = _sync_method(c.update_agent)
    assign_agent_to_prompt = _sync_method(c.assign_agent_to_prompt)
    transfer_to_agent = _sync_method(c.transfer_to_agent)
    create_template = _sync_method(c.create_template)
    create_template_from_parent = _sync_method(c.create_template_from_parent)
    update_template = _sync_method(c.update_template)
    link_prompt_to_template = _sync_method(c.link_prompt_to_template)
    add_tool_invocation = _sync_method(c.add_tool_invocation)
    complete_tool_invocation = _sync_method(c.complete_tool_invocation)
    retry_tool_invocation = _sync_method(c.retry_tool_invocation)
    add_edge = _sync_method(c.add_edge)
    add_node = _sync_method(c.add_node)
    delete_node = _sync_method(c.delete_node)
    delete_nodes_batch = _sync_method(c.delete_nodes_batch)


class AsyncAppends:
    """The asyncio twin of `Appends`: every helper is a coroutine."""

    def _submit(self, request: PendingRequest) -> Awaitable[Appended]:
        """The request's outcome, to await: a coroutine, or (`AsyncEventLog`) the future
        the committer settles, awaited directly rather than through a coroutine of its own."""
        raise NotImplementedError

    append = _async_method(c.append)
    create_session = _async_method(c.create_session)
    create_sessions_batch = _async_method(c.create_sessions_batch)
    update_session = _async_method(c.update_session)
    fork_session = _async_method(c.fork_session)
    add_prompt = _async_method(c.add_prompt)
    add_prompts_batch = _async_method(c.add_prompts_batch)
    add_response = _async_method(c.add_response)
    add_responses_batch = _async_method(c.add_responses_batch)
    add_conversations_batch = _async_method(c.add_conversations_batch)
    add_agent = _async_method(c.add_agent)
    update_agent = _async_method(c.update_agent)
    assign_agent_to_prompt = _async_method(c.assign_agent_to_prompt)
    transfer_to_agent = _async_method(c.transfer_to_agent)
    create_template = _async_method(c.create_template)
    create_template_from_parent = _async_method(c.create_template_from_parent)
    update_template = _async_method(c.update_template)
    link_prompt_to_template = _async_method(c.link_prompt_to_template)
    add_tool_invocation = _async_method(c.add_tool_invocation)
    complete_tool_invocation = _async_method(c.complete_tool_invocation)
    retry_tool_invocation = _async_method(c.retry_tool_invocation)
    add_edge = _async_method(c.add_edge)
    add_node = _async_method(c.add_node)
    delete_node = _async_method(c.delete_node)
    delete_nodes_batch = _async_method(c.delete_nodes_batch)


_VARIABLES = msgspec.msgpack.Decoder(dict[str, Any])
_KINDS = frozenset(NodeKind)  # the id index holds idempotency keys too, of another kind


class _Reads:
    """Reading and facts, blocking: `EventLog`'s, and what `AsyncEventLog` runs in a thread."""

    _store: Store

    def __init__(self, store: Store) -> None:
        self._store = store

    @property
    def path(self) -> Path:
        return self._store.path

    def read(
        self,
        start: int = 0,
        stop: int | None = None,
        *,
        start_time: TimeLike | None = None,
        stop_time: TimeLike | None = None,
    ) -> Generator[Record, None, None]:
        """Events from LSN `start` (or the first at/after `start_time`), up to but excluding
        LSN `stop` (or the first event at/after `stop_time`), as (lsn, event) records."""
        cursor = self._cursor(start, stop, start_time, stop_time)
        try:
            yield from cursor.records()
        finally:
            cursor.close()

    def kind_of(self, node_id: uuid.UUID) -> NodeKind | None:
        """The kind of node (or edge) `node_id` was created as, if this handle's id index
        holds it; None when it does not know: not in the log, appended by another process
        and not yet taken in, a read-only handle, or an append holds the index just now.
        Never waits for an append, and reads the id index only: a hint for readers, which
        look everywhere on None. The first call builds the last segment's index, as the
        first append does (cheap when the last appender to close left a tail file, see
        docs/format.md). Plain, not awaited, on `AsyncEventLog` too."""
        if not isinstance(node_id, uuid.UUID):
            raise InvalidEvent(f"node_id must be a UUID, not {type(node_id).__name__}")
        kind = self._store.kind_of(node_id.int)
        return None if kind is None or kind not in _KINDS else NodeKind(kind)

    def cursor(
        self, start: int = 0, stop: int | None = None, *, start_time: TimeLike | None = None
    ) -> Cursor:
        """A position in the log for a reader that polls: each `records()` call yields what
        the log holds now, from where the last one stopped, up to LSN `stop` (excluded) if
        given. Close it when done."""
        return self._cursor(start, stop, start_time, None)

    def _cursor(
        self, start: int, stop: int | None, start_time: TimeLike | None, stop_time: TimeLike | None
    ) -> Cursor:
        for name, value in (("start", start), ("stop", stop)):
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 0
            ):
                raise InvalidEvent(f"{name} must be a non-negative int LSN, got {value!r}")
        return Cursor(
            self._store,
            start=start,
            stop=stop,
            start_ts=None if start_time is None else to_ns(start_time, "start_time"),
            stop_ts=None if stop_time is None else to_ns(stop_time, "stop_time"),
        )

    def render(
        self,
        template_id: uuid.UUID,
        variables: dict[str, Any] | None = None,
        *,
        version: int | None = None,
    ) -> str:
        """The content a prompt from the template's `version` (None: current) would get, with
        the same checks as `add_prompt` (MissingVariable, InvalidVariable); nothing is written."""
        if not isinstance(template_id, uuid.UUID):
            raise InvalidEvent(f"template_id must be a UUID, not {type(template_id).__name__}")
        try:  # the round trip an appended prompt's bindings make, so both render alike
            bound = _VARIABLES.decode(ENCODER.encode(variables or {}))
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidEvent(f"invalid variables: {exc}") from None
        return self._store.render(template_id, bound, version)

    def next_lsn(self) -> int:
        """The LSN the next event will get: the log's length, including what other processes
        have appended (cheap: one lock and one stat). Read-only handles scan the last segment."""
        if self._store.options.readonly:
            segments = self._store.segments()
            return self._store.active_summary(counts=False).next_lsn if segments else 0
        last = self._store.last_lsn()
        return 0 if last is None else last + 1

    def stats(self) -> Stats:
        """Segments, events by type, bytes, compression ratio, recovered bytes. Raises
        `CorruptionError` if a segment is missing (first, middle, or after a sealed last)."""
        store = self._store
        firsts = store.segments()
        if firsts:  # counting what is there would hide what is missing
            store.check_chain(firsts)
        summaries = [store.summary(f) for f in firsts[:-1]] + [store.active_summary()]
        by_type: dict[str, int] = {}
        for s in summaries:
            for tag, n in s.type_counts.items():
                by_type[tag] = by_type.get(tag, 0) + n
        stored = sum(s.stored_bytes for s in summaries)
        raw = sum(s.raw_bytes for s in summaries)
        with_events = [s for s in summaries if s.frames]
        return Stats(
            path=str(store.path),
            segments=len(firsts),
            events=summaries[-1].next_lsn,
            events_by_type=dict(sorted(by_type.items())),
            first_ts=with_events[0].min_ts if with_events else None,
            last_ts=with_events[-1].max_ts if with_events else None,
            stored_bytes=stored,
            raw_bytes=raw,
            disk_bytes=_disk_bytes(store.path),
            compression_ratio=round(raw / stored, 3) if stored else 0.0,
            recovered_bytes=_recovered_bytes(store.path),
            durability=store.options.durability.value,
        )


def _session_key(session_id: uuid.UUID | None) -> int | None:
    if session_id is None:
        return None
    if not isinstance(session_id, uuid.UUID):
        raise InvalidEvent(f"session_id must be a UUID, not {type(session_id).__name__}")
    return session_id.int


def _settle(
    settled: list[tuple[asyncio.Future[Appended], Appended | BaseException]],
    then: Callable[[], None],
) -> None:
    """On the loop: hand each waiting append its outcome, then call `then` once the callers
    woken have run (their wake-ups are queued first, so they run before it)."""
    for future, result in settled:
        if future.done():
            continue  # the caller was cancelled; the outcome stands in the log
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
    asyncio.get_running_loop().call_soon(then)


def _disk_bytes(path: Path) -> int:
    """Bytes of every file in the store; a temp file may vanish while we look (sealing)."""
    total = 0
    with os.scandir(path) as entries:
        for entry in entries:
            with contextlib.suppress(FileNotFoundError):
                if entry.is_file():
                    total += entry.stat().st_size
    return total


def _recovered_bytes(path: Path) -> int:
    try:
        lines = (path / RECOVERY_LOG).read_text().splitlines()
    except FileNotFoundError:
        return 0
    return sum(int(json.loads(line)["bytes"]) for line in lines if line.strip())


class EventLog(_Reads, Appends):
    """An open store, for appending and reading from threads. Use `eventlog.open`."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._committer = _GroupCommit(store)

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], options: Options | None = None, **overrides: Any
    ) -> Self:
        """`eventlog.open`, for this class or a subclass (projections' MemoryGraph)."""
        return cls(Store(_store_path(path), _options(options, overrides)))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Sync anything unsynced (non-default modes), release files. Idempotent."""
        self._store.close()

    def flush(self) -> None:
        """fsync whatever is written but not yet synced; a no-op in the default mode."""
        self._store.sync()

    def _submit(self, request: PendingRequest) -> Appended:
        return self._committer.submit(request)

    def last_lsn(self, session_id: uuid.UUID | None = None) -> int | None:
        """The last LSN of the log, or of a session's events: what `expect_store_lsn` and
        `expect_session_lsn` compare with. None for an empty log or an unknown session."""
        return self._store.last_lsn(_session_key(session_id))

    def follow(
        self,
        start: int = 0,
        *,
        start_time: TimeLike | None = None,
        stop: threading.Event | None = None,
    ) -> Iterator[Record]:
        """Like `read`, then waits for new events (woken by file changes) until `stop` is set."""
        return follow(self._cursor(start, None, start_time, None), stop)


class AsyncEventLog(_Reads, AsyncAppends):
    """The asyncio twin of `EventLog`: every append method is a coroutine. Use `open_async`."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._queue: list[tuple[PendingRequest, asyncio.Future[Appended]]] = []
        # `_lock` guards _queue, _stopping and _idle; held through it directly (a C context
        # manager) where no wait or notify is needed, since `Condition.__enter__` is Python.
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stopping = False
        self._idle = False  # the committer waits for a request: the next one notifies it
        # Loops still running the callers a commit answered: their next appends are coming,
        # so the committer waits for them rather than take a part and sync twice.
        self._settling = 0
        self._committer: threading.Thread | None = None
        self._closed = False
        self.on_commit: Callable[[int, int, float | None], None] | None = None
        """Called in the committer thread after each group commit with its requests, its
        events and its fsync's seconds (None without one): how `lmg serve` measures group
        commit. It must be quick; it delays the next group."""

    @classmethod
    async def open(
        cls, path: str | os.PathLike[str], options: Options | None = None, **overrides: Any
    ) -> Self:
        """`eventlog.open_async`, for this class or a subclass; recovery runs in a thread."""
        opts = _options(options, overrides)
        return cls(await asyncio.to_thread(Store, _store_path(path), opts))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Let queued appends commit, then close the store. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._committer is not None:
            await asyncio.to_thread(self._committer.join)
        await asyncio.to_thread(self._store.close)

    async def flush(self) -> None:
        if self._closed:
            return  # close() synced everything, like EventLog.flush after close
        await asyncio.to_thread(self._store.sync)

    def _submit(self, request: PendingRequest) -> asyncio.Future[Appended]:
        self._refuse_if_closed()
        future: asyncio.Future[Appended] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._queue.append((request, future))
            self._notify()
        return future

    async def _submit_group(self, requests: list[PendingRequest]) -> list[Appended | BaseException]:
        """Several requests queued at once, so they join one group commit (one write, one
        fsync), each with its own outcome as `_submit` gives it: the service's batch route."""
        return await asyncio.gather(*self._enqueue(requests), return_exceptions=True)

    def _enqueue(self, requests: list[PendingRequest]) -> list[asyncio.Future[Appended]]:
        """Queue requests for the committer (started on first use); their futures."""
        self._refuse_if_closed()
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Appended]] = [loop.create_future() for _ in requests]
        with self._lock:
            self._queue.extend(zip(requests, futures, strict=True))
            self._notify()
        return futures

    def _refuse_if_closed(self) -> None:
        if self._closed:  # no committer would ever run: the caller would wait forever
            raise LogClosed(f"the log at {self._store.path} is closed")

    def _notify(self) -> None:
        """With the lock held, after queueing: start the committer, or wake it if idle."""
        if self._committer is None:
            self._committer = threading.Thread(
                target=self._commit_forever, name="eventlog-commit", daemon=True
            )
            self._committer.start()
        elif self._idle and not self._settling:  # else `_settled` wakes it
            self._idle = False
            self._wake.notify()

    def _settled(self) -> None:
        """On a loop, once the callers a commit answered there have run: if no other loop
        is still running its own, the committer takes what they queued, as one group."""
        with self._lock:
            self._settling = max(self._settling - 1, 0)
            if self._idle and self._queue and not self._settling:
                self._idle = False
                self._wake.notify()

    def _commit_forever(self) -> None:
        """The committer thread: whatever is queued when a commit ends forms the next group,
        so the loop builds requests while the disk syncs the previous frame; but once the
        loops have run the callers that commit answered, so that their next appends, which
        they queue at once, share one frame and one sync instead of splitting into two."""
        while True:
            with self._wake:
                while (not self._queue or self._settling) and not self._stopping:
                    self._idle = True
                    if not self._wake.wait(SETTLE_WAIT_S if self._settling else None):
                        self._settling = 0  # a loop blocked or gone: wait for it no longer
                self._idle = False
                if not self._queue:
                    return
                batch, self._queue = self._queue, []
            results = _commit(self._store, [request for request, _ in batch])
            if self.on_commit is not None:
                events = sum(len(request.events) for request, _ in batch)
                self.on_commit(len(batch), events, self._store.fsync_s)
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, Any]]] = {}
            for (_, future), result in zip(batch, results, strict=True):
                by_loop.setdefault(future.get_loop(), []).append((future, result))
            with self._lock:
                self._settling += len(by_loop)
            for loop, settled in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_settle, settled, self._settled)
                except RuntimeError:  # that loop is closed: nobody waits
                    self._settled()

    async def last_lsn(self, session_id: uuid.UUID | None = None) -> int | None:
        """The async twin of `EventLog.last_lsn`."""
        key = _session_key(session_id)
        if self._closed:
            raise LogClosed(f"the log at {self._store.path} is closed")
        return await asyncio.to_thread(self._store.last_lsn, key)

    def follow(
        self,
        start: int = 0,
        *,
        start_time: TimeLike | None = None,
        stop: asyncio.Event | None = None,
    ) -> AsyncIterator[Record]:
        """Async iterator over events from `start`, then new ones as they arrive."""
        return follow_async(self._cursor(start, None, start_time, None), stop)

    # The blocking reads, awaited: each runs in a worker thread, never on the loop.

    def blocking(self) -> _Reads:
        """The blocking reads of this log (`read`, `cursor`, `stats`, `next_lsn`, `render`),
        for code already in a worker thread (as `AsyncMemoryGraph`'s folds are)."""
        return _Reads(self._store)

    async def read(  # type: ignore[override]
        self,
        start: int = 0,
        stop: int | None = None,
        *,
        start_time: TimeLike | None = None,
        stop_time: TimeLike | None = None,
    ) -> AsyncIterator[Record]:
        """The async twin of `EventLog.read`: records are read in a worker thread, in chunks."""
        cursor = AsyncCursor(self._cursor(start, stop, start_time, stop_time))
        try:
            async for record in cursor.records():
                yield record
        finally:
            cursor.close()

    def cursor(  # type: ignore[override]
        self, start: int = 0, stop: int | None = None, *, start_time: TimeLike | None = None
    ) -> AsyncCursor:
        """The async twin of `EventLog.cursor`: ``async for record in cursor.records()``."""
        return AsyncCursor(self._cursor(start, stop, start_time, None))

    async def stats(self) -> Stats:  # type: ignore[override]
        """The async twin of `EventLog.stats`, in a worker thread."""
        return await asyncio.to_thread(_Reads.stats, self)

    async def next_lsn(self) -> int:  # type: ignore[override]
        """The async twin of `EventLog.next_lsn`, in a worker thread."""
        return await asyncio.to_thread(_Reads.next_lsn, self)

    async def render(  # type: ignore[override]
        self,
        template_id: uuid.UUID,
        variables: dict[str, Any] | None = None,
        *,
        version: int | None = None,
    ) -> str:
        """The async twin of `EventLog.render`, in a worker thread."""
        return await asyncio.to_thread(_Reads.render, self, template_id, variables, version=version)


def _options(options: Options | None, overrides: dict[str, Any]) -> Options:
    base = options or Options()
    try:
        merged = msgspec.structs.replace(base, **overrides) if overrides else base
        # replace() checks no types: durability="fsync" (a str) would silently never fsync
        return msgspec.convert(msgspec.structs.asdict(merged), Options)
    except (TypeError, ValueError) as exc:
        raise InvalidEvent(f"bad option: {exc}") from None


def open(
    path: str | os.PathLike[str], options: Options | None = None, **overrides: Any
) -> EventLog:
    """Open (creating if needed) the store at `path` for appending and reading.

    Recovery runs here: a torn tail of the last segment is cut (a `TornTailTruncated`
    warning); any other damage raises `CorruptionError`. Keyword overrides set `Options`
    fields: ``eventlog.open(path, durability=Durability.INTERVAL)``.
    """
    return EventLog.open(path, options, **overrides)


async def open_async(
    path: str | os.PathLike[str], options: Options | None = None, **overrides: Any
) -> AsyncEventLog:
    """The asyncio twin of `open`; recovery runs in a worker thread."""
    return await AsyncEventLog.open(path, options, **overrides)


def _store_path(path: str | os.PathLike[str]) -> Path:
    if not isinstance(path, str | os.PathLike):
        raise InvalidEvent(f"path must be a str or path, not {type(path).__name__}")
    resolved = Path(path)
    if resolved.exists() and not resolved.is_dir():
        raise EventLogError(f"{resolved} exists and is not a directory")
    return resolved
