"""`MemoryGraph`: the event log's append API plus live, typed reads of its projections.

Embedded use: the graph folds into its database in-process. It is the database's one folder
for its lifetime (see `_database`), but opens the file only to read, and lets go of it when a
reader in another process waits or when it is idle, so `lmg sql` and `projections.connect` take
turns with it. Every read first folds whatever the log holds beyond the checkpoint, so a read
sees every write made before it, by this process or any other. `AsyncMemoryGraph` is the
asyncio twin: appends as in `AsyncEventLog`, reads in a worker thread.

An erasure reaches a graph on the store's own database through the erasure's journal (the
graph drops the file at its next hold, `_erasure.apply_pending`), and an in-memory graph
(``database=":memory:"``) through the log itself: it is a live cache of the store, not a
copy, so when a read folds an ``erasure.applied`` record naming an LSN the graph folded
before, it drops its tables and folds again from zero (`_Embedded.refresh`). A database
file elsewhere (``database=PATH``) is a copy the user keeps, as `_erasure` says: the
erasure does not reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Self, TypeVar

import duckdb
import msgspec

from eventlog import AsyncEventLog, EventLog, Options, Stats

from . import nodes as n
from ._database import FolderLock, Gate, database_path, open_database
from ._erasure import apply_pending, erasure_due
from ._fold import Batch
from ._folder import BATCH_EVENTS, LogReader, fold_available
from ._history import folded_history, forget_history, history_differs
from ._params import Params
from ._reads import TABLE_OF_TYPE, GraphReader, Hop, Impact, KindOf
from ._sandbox import one_line, sandbox
from ._schema import checkpoint, ensure_schema
from ._text_index import drop_index
from .errors import DatabaseBusy, FoldFailed, GraphClosed, ProjectionError, SqlFailed
from .graph_view import GraphReads, fetch, incoming, outgoing
from .query import Query

if TYPE_CHECKING:
    from ._remote import AsyncRemoteGraph, RemoteGraph

__all__ = ["AsyncMemoryGraph", "AsyncQuery", "GraphStats", "MemoryGraph"]

P = ParamSpec("P")
R = TypeVar("R")


MEMORY_LIMIT = "48MB"
"""DuckDB's memory for an embedded graph on a database file: the cache of blocks its reads keep,
which fills up to the limit. 48 MB keeps a graph of a million events under 150 MB in all
(docs/benchmarks.md), and folds ordinary batches."""

FOLD_MEMORY_LIMIT = "256MB"
"""DuckDB's memory for what does not fit in `MEMORY_LIMIT`: a fold or a read that runs out of
it runs again once on the file reopened with this limit, kept until the graph lets go of the
file. Folding one of the largest events the log accepts (64 MiB of text) takes about three
times its size; it is also the limit of an in-memory graph, whose tables live in it, and of
the service, which holds its database for good."""


IDLE_S = 0.5
"""How long an embedded graph keeps the database open after its last read when nobody waits
for it: reads closer together than this never reopen it (a reopen costs tens of milliseconds),
and a reader that ignores the gate (the ``duckdb`` CLI) gets in this long after the last."""

WATCH_S = 0.05
"""How often a graph holding the database looks for readers waiting at the gate."""

_FOREIGN = (
    " (a DuckDB connection that bypasses the gate, such as the duckdb CLI or "
    "duckdb.connect(read_only=True)? close it, or read through projections.connect or "
    "lmg sql, which take turns with the graph)"
)


class GraphStats(Stats, kw_only=True):
    """The log's `Stats` plus the projections': checkpoint, lag, nodes and edges by type."""

    checkpoint_lsn: int
    lag_events: int
    nodes_by_type: dict[str, int]
    edges_by_type: dict[str, int]
    database_bytes: int


class _Embedded:
    """The database side of an embedded graph: folder lock, gate, connection, reader, caches.

    The folder lock is held for life (one folder per database); the gate and the DuckDB file
    only while the graph reads ("a hold"). A hold begins with the first read after an idle
    spell and ends after the read during which a reader in another process came to wait, or
    when a watcher thread sees the graph idle for `idle_s`, or sees a reader waiting. A
    relation from `sql` keeps the hold until it is garbage (its cursor reads the file).
    Thread-safe: reads, holds and let-gos are serialised on one lock."""

    def __init__(
        self,
        log: LogReader,
        db: Path,
        wait_s: float,
        memory_limit: str | None,
        idle_s: float = IDLE_S,
        *,
        shares: bool = True,
        kind_of: KindOf | None = None,
    ) -> None:
        self.log = log
        self.kind_of = kind_of  # the log's id index, a hint for `get_node` (`GraphReader`)
        self.db = db
        self.wait_s = wait_s
        self.idle_s = idle_s
        self.shares = shares  # False: a hold lasts until close (the service, which owns it)
        # None: `MEMORY_LIMIT`, and `FOLD_MEMORY_LIMIT` for what does not fit (`_grow`); a
        # limit given is the limit. The service's graph (shares=False) never grows: it holds
        # the file for good, and its cursors with it, so it is given its limit.
        self._memory_limit = memory_limit or MEMORY_LIMIT
        self.in_memory = str(db) == ":memory:"
        # A file grows its limit by reopening; an in-memory instance has its largest already.
        self._grows = memory_limit is None and shares and not self.in_memory
        self._limit = self._memory_limit  # the open file's
        self._mutex = threading.RLock()
        self._changed = threading.Condition(self._mutex)  # a read ended, or the graph closed
        self.batch_events = BATCH_EVENTS
        self._lock: FolderLock | None = None
        self._gate: Gate | None = None
        self.con: duckdb.DuckDBPyConnection | None = None
        self._reader: GraphReader | None = None
        self._relations: weakref.WeakSet[duckdb.DuckDBPyRelation] = weakref.WeakSet()
        self._holds = 0  # holds begun: a watcher watches one
        self._used = 0.0  # when the last read ended (monotonic)
        self.checkpoint = -1
        self._closed = False
        self._spill: str | None = None  # an in-memory instance's private spill directory
        self._private_limit = memory_limit or FOLD_MEMORY_LIMIT  # an in-memory instance's
        if self.in_memory:  # private to this handle: nobody to share with, never let go
            self.con = self._new_instance(self._private_limit)  # the tables live in it
            self._reader = GraphReader(self.con, kind_of=kind_of)
            return
        self._lock = FolderLock(db, "an embedded MemoryGraph")
        try:
            self._gate = Gate(db)
        except BaseException:
            self._lock.release()
            raise

    def _new_instance(self, limit: str) -> duckdb.DuckDBPyConnection:
        """An in-memory instance (no WAL) with the empty tables, that spills to a directory of
        its own, mode 0700, removed at close: DuckDB's default is ``./.tmp`` under the working
        directory, with the umask's modes, where another user could read the prompts it
        spills. The caller's SQL runs on this instance too (`sql`, `rows`), so it is sandboxed
        before any use; the sandbox refuses a spill directory set later, so it is set at
        connect. `_spill` names the new directory only once the instance is made."""
        spill = tempfile.mkdtemp(prefix="lmg-graph-")
        try:
            con = duckdb.connect(config={"memory_limit": limit, "temp_directory": spill})
            sandbox(con)
            ensure_schema(con)
        except BaseException:
            shutil.rmtree(spill, ignore_errors=True)
            raise
        self._spill = spill
        return con

    def _start_over(self) -> None:
        """Replace an in-memory graph's instance with an empty one (checkpoint -1): an erasure
        blanked events its tables hold. The old instance's spill directory goes with it
        (spilled pages may hold the erased text), and so do the cached answers; a relation
        from `sql` on the old instance fails from now on, as after `close`."""
        assert self.con is not None and self._reader is not None
        old, old_spill = self.con, self._spill
        self.con = self._reader.con = self._new_instance(self._private_limit)
        self._reader.clear()
        self._relations.clear()
        self.checkpoint = -1
        old.close()
        if old_spill is not None:
            shutil.rmtree(old_spill, ignore_errors=True)

    def _hold(self, wait_s: float) -> GraphReader:
        """The reader on an open database: opened (gate exclusive, then the file read-write)
        unless this graph holds it already."""
        if self.con is not None and self._reader is not None:
            return self._reader
        assert self._gate is not None
        self._gate.acquire(exclusive=True, timeout=wait_s)
        try:
            apply_pending(self.db.parent, self.db)  # an erasure dropped it: fold anew
            con = open_database(
                self.db,
                read_only=False,
                timeout=wait_s,
                waiting=_FOREIGN,
                memory_limit=self._memory_limit,
                sandbox=True,
            )  # DuckDB's checkpoint threshold stays: data not yet checkpointed stays in memory
            self._limit = self._memory_limit
            try:
                folded = self._prepare(con)
            except BaseException:
                con.close()
                raise
        except BaseException:
            self._gate.release()
            raise
        if self._reader is None:
            self._reader = GraphReader(con, kind_of=self.kind_of)
        else:
            self._reader.con = con
            if folded != self.checkpoint:  # not as this graph left it (deleted, rebuilt)
                self._reader.clear()
        self.con, self.checkpoint = con, folded
        self._holds += 1
        if not self.shares:
            return self._reader
        threading.Thread(
            target=self._watch, args=(self._holds,), name="lmg-graph-idle", daemon=True
        ).start()
        return self._reader

    def _prepare(self, con: duckdb.DuckDBPyConnection) -> int:
        """Check the database as found (schema, history); returns its checkpoint.

        Only this graph folds while it lives (it keeps the folder lock), so the database is
        as it left it, unless a file was deleted or replaced meanwhile: then the caches go."""
        ensure_schema(con)
        why = history_differs(self.log, *folded_history(con))
        if why is not None:  # the log lost what was folded: never mix two histories
            forget_history(con, why)
            drop_index(self.db)  # it indexed the text of that history too
            ensure_schema(con)
        return checkpoint(con)

    def _let_go(self) -> None:
        """End the hold (close the file, release the gate), unless a relation still reads."""
        if self.con is None or self._gate is None or self._relations:
            return
        self.con.close()  # checkpoints the WAL into the file: readers see every fold
        self.con = None
        self._gate.release()

    def _watch(self, hold: int) -> None:
        """While hold number `hold` lasts: end it once a reader waits or after `idle_s`."""
        assert self._gate is not None
        with self._mutex:
            while not self._closed and self.con is not None and self._holds == hold:
                idle = time.monotonic() - self._used
                if idle >= self.idle_s or self._gate.readers_waiting():
                    self._let_go()
                    if self.con is None:
                        return
                self._changed.wait(min(WATCH_S, max(self.idle_s - idle, 0.0) + 0.001))

    def refresh(self, con: duckdb.DuckDBPyConnection) -> None:
        """Fold what the log holds beyond the checkpoint (read-your-writes).

        An in-memory graph that folds an ``erasure.applied`` record naming an LSN at or
        before the checkpoint it started from folded that event's content: it starts over
        and folds from zero (the cost of an erasure is a full fold). The record is appended
        only once every segment is rewritten, and the fold stops at the log's end as it was
        when it began, so whatever this fold reads after the old checkpoint is erased
        already: nothing more is needed. No extra file is looked at: the log's end, which
        every read asks for anyway, moves with each record."""
        end = self.log.next_lsn()
        if end - 1 <= self.checkpoint:
            return
        before, erased = self.checkpoint, False

        def on_batch(batch: Batch, _last: object) -> None:
            nonlocal erased
            if self._reader is not None:
                self._reader.forget(batch)
            first = batch.erased_from
            erased = erased or (self.in_memory and first is not None and first <= before)

        try:
            # A PoisonEvent propagates: a read cannot promise the writes before it, so it fails
            # (naming the event) until the database is rebuilt; what preceded it is folded.
            self.checkpoint = fold_available(
                con, self.log, batch_events=self.batch_events, stop_lsn=end, on_batch=on_batch
            )
        finally:
            if erased:  # (also when a later batch failed: the erased content goes first)
                self._start_over()
        if erased and self.con is not None:
            self.refresh(self.con)

    def run(self, fn: Callable[[GraphReader], R], wait_s: float | None = None) -> R:
        """Fold, then read with `fn`; waits up to `wait_s` (the graph's) for the database."""
        with self._mutex:
            if self._closed:
                raise GraphClosed(f"the graph on {self.db} is closed")
            try:
                if self.con is not None and self._erasure_due():
                    self._let_go()  # an erasure: the file goes at the next hold (just below)
                reader = self._hold(self.wait_s if wait_s is None else wait_s)
                try:
                    result = self._fold_and_read(reader, fn)
                except (duckdb.OutOfMemoryException, FoldFailed, SqlFailed) as exc:
                    if not self._may_grow(exc):
                        raise
                    result = self._fold_and_read(self._grow(), fn)
                if isinstance(result, duckdb.DuckDBPyRelation):
                    self._relations.add(result)  # its cursor reads the file until it is garbage
                return result
            except duckdb.Error as exc:
                raise ProjectionError(f"DuckDB: {one_line(exc)}") from exc
            finally:
                self._used = time.monotonic()
                if self.shares and self._gate is not None and self._gate.readers_waiting():
                    self._let_go()  # someone waits: their turn now, ours again on the next read
                self._changed.notify_all()

    def _erasure_due(self) -> bool:
        """Is an erasure's part due on the file? (An in-memory graph has none: `refresh`.)"""
        return not self.in_memory and erasure_due(self.db.parent, self.db)

    def _fold_and_read(self, reader: GraphReader, fn: Callable[[GraphReader], R]) -> R:
        self.refresh(reader.con)
        return fn(reader)

    def _may_grow(self, exc: BaseException) -> bool:
        """Whether `exc` is DuckDB running out of memory under `MEMORY_LIMIT`, with a limit
        to grow to: nothing of the read is lost, and a failed batch was rolled back."""
        cause = exc.__cause__ if isinstance(exc, (FoldFailed, SqlFailed)) else exc
        return (
            isinstance(cause, duckdb.OutOfMemoryException)
            and self._grows
            and self._limit != FOLD_MEMORY_LIMIT
            and not self._relations  # their cursors read the open file
        )

    def _grow(self) -> GraphReader:
        """Reopen the file with `FOLD_MEMORY_LIMIT` for the rest of this hold: the sandbox
        locks the open instance's settings, so a limit changes only with the instance. The
        gate stays held throughout; if the file cannot be opened again, it is released."""
        assert self.con is not None and self._reader is not None and self._gate is not None
        self.con.close()
        self.con = None
        try:
            con = open_database(
                self.db,
                read_only=False,
                timeout=self.wait_s,
                waiting=_FOREIGN,
                memory_limit=FOLD_MEMORY_LIMIT,
                sandbox=True,
            )
        except BaseException:
            self._gate.release()
            raise
        self.con = self._reader.con = con
        self._limit = FOLD_MEMORY_LIMIT
        return self._reader

    def open_fold(self) -> None:
        """Fold the backlog at open if the database is free; if another process holds it,
        the first read does (appends need no database)."""
        with contextlib.suppress(DatabaseBusy):
            self.run(lambda _reader: None, wait_s=0.0)

    def close(self) -> None:
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            self._relations.clear()  # their cursors close with the connection
            if self.con is not None:
                self.con.close()
                self.con = None
                if self._gate is not None:
                    self._gate.release()
            if self._gate is not None:
                self._gate.close()
            if self._lock is not None:
                self._lock.release()
            if self._spill is not None:
                shutil.rmtree(self._spill, ignore_errors=True)
            self._changed.notify_all()

    def stats(self, base: Stats) -> GraphStats:
        def count(reader: GraphReader) -> tuple[dict[str, int], dict[str, int]]:
            nodes = {
                kind: int(
                    reader.con.execute(
                        f"SELECT count(*) FROM {table} WHERE deleted_ts IS NULL"
                        + (" AND is_current" if table == "templates" else "")  # not versions
                    ).fetchall()[0][0]
                )
                for kind, (table, _) in TABLE_OF_TYPE.items()
            }
            edges = dict(
                reader.con.execute(
                    "SELECT edge_type, count(*) FROM edges WHERE deleted_ts IS NULL "
                    "GROUP BY 1 ORDER BY 1"
                ).fetchall()
            )
            return nodes, edges

        nodes, edges = self.run(count)
        fields = msgspec.structs.asdict(base)
        return GraphStats(
            **fields,
            checkpoint_lsn=self.checkpoint,
            lag_events=max(0, base.events - 1 - self.checkpoint),
            nodes_by_type=nodes,
            edges_by_type=edges,
            database_bytes=_size(self.db),
        )


def _size(db: Path) -> int:
    total = 0
    for path in (db, Path(f"{db}.wal")):
        with contextlib.suppress(FileNotFoundError):
            total += path.stat().st_size
    return total


def _aread(
    fn: Callable[Concatenate[GraphReader, P], R],
) -> Callable[Concatenate[AsyncMemoryGraph, P], Awaitable[R]]:
    async def method(self: AsyncMemoryGraph, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.to_thread(
            self._embedded.run, lambda reader: fn(reader, *args, **kwargs)
        )

    method.__name__, method.__doc__ = fn.__name__, fn.__doc__
    method.__signature__ = inspect.signature(fn)  # type: ignore[attr-defined]  # for help()
    return method


class MemoryGraph(EventLog, GraphReads):
    """The log's append API (every `EventLog` method) plus reads of the live projections."""

    _embedded: _Embedded

    def _run(self, fn: Callable[[GraphReader], R]) -> R:
        return self._embedded.run(fn)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        options: Options | None = None,
        *,
        database: str | os.PathLike[str] | None = None,
        wait_s: float = 10.0,
        memory_limit: str | None = None,
        idle_s: float = IDLE_S,
        **overrides: Any,
    ) -> Self:
        """Open the store at `path` (creating it) and its projections (``projections.duckdb``
        in the store unless `database` names another file, or ``":memory:"``), folding any
        backlog if no other process reads the database (else the first read folds it).

        The graph opens the database file only to read, and lets go of it once a reader in
        another process waits, or after `idle_s` without a read. A read waits up to `wait_s`
        for readers in other processes (`DatabaseBusy` after). `memory_limit` bounds DuckDB's
        memory (it spills to disk beyond it); by default `MEMORY_LIMIT`, and a fold or read
        that does not fit runs again under `FOLD_MEMORY_LIMIT` (``":memory:"``: that one)."""
        graph = super().open(path, options, **overrides)
        try:
            db = Path(":memory:") if str(database) == ":memory:" else database_path(path, database)
            graph._embedded = _Embedded(
                graph, db, wait_s, memory_limit, idle_s, kind_of=graph.kind_of
            )
            graph._embedded.open_fold()
        except BaseException:
            graph.close()  # the folder lock too, if taken: a failed open holds nothing
            raise
        return graph

    @staticmethod
    def connect(
        url: str, store: str = "default", *, token: str | None = None, timeout: float = 30.0
    ) -> RemoteGraph:
        """The store `store` of the `lmg serve` at `url`, with this class's methods over
        HTTP (`RemoteGraph`): an agent moves from embedded to shared by changing only how it
        opens the store. `token` defaults to ``$LMG_TOKEN``; `timeout` bounds each request."""
        from ._remote import RemoteGraph  # noqa: PLC0415 (httpx2, the serve extra: on use)

        return RemoteGraph(url, store, token=token, timeout=timeout)

    def close(self) -> None:
        """Close the projections, then the log. Idempotent."""
        if hasattr(self, "_embedded"):
            self._embedded.close()
        super().close()

    def stats(self) -> GraphStats:
        """The log's stats plus the projections' checkpoint, lag and counts by type."""
        return self._embedded.stats(super().stats())


class AsyncQuery(Query):
    """`Query` for `AsyncMemoryGraph`: `execute`, `count` and `stream` are awaited."""

    async def execute(self) -> list[n.Node]:  # type: ignore[override]
        return await asyncio.to_thread(super().execute)

    async def count(self) -> int:  # type: ignore[override]
        return await asyncio.to_thread(super().count)

    async def stream(self, page: int = 1_000) -> AsyncIterator[n.Node]:  # type: ignore[override]
        source = Query.stream(self, page)
        while chunk := await asyncio.to_thread(_take, source, page):
            for node in chunk:
                yield node


def _take(source: Any, count: int) -> list[n.Node]:
    out: list[n.Node] = []
    for node in source:
        out.append(node)
        if len(out) == count:
            break
    return out


class AsyncMemoryGraph(AsyncEventLog):
    """The asyncio twin of `MemoryGraph`: appends as `AsyncEventLog`, reads awaited."""

    _embedded: _Embedded

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        options: Options | None = None,
        *,
        database: str | os.PathLike[str] | None = None,
        wait_s: float = 10.0,
        memory_limit: str | None = None,
        idle_s: float = IDLE_S,
        **overrides: Any,
    ) -> Self:
        """`MemoryGraph.open` for asyncio; opening and the backlog fold run in a thread."""
        graph = await super().open(path, options, **overrides)
        try:
            db = Path(":memory:") if str(database) == ":memory:" else database_path(path, database)
            reads = graph.blocking()  # folds run in worker threads: the blocking reads
            graph._embedded = await asyncio.to_thread(
                _Embedded, reads, db, wait_s, memory_limit, idle_s, kind_of=reads.kind_of
            )
            await asyncio.to_thread(graph._embedded.open_fold)
        except BaseException:
            await graph.close()  # as in `MemoryGraph.open`
            raise
        return graph

    @staticmethod
    async def connect(
        url: str, store: str = "default", *, token: str | None = None, timeout: float = 30.0
    ) -> AsyncRemoteGraph:
        """The asyncio twin of `MemoryGraph.connect`:
        ``async with await AsyncMemoryGraph.connect(url) as g``."""
        from ._remote import AsyncRemoteGraph  # noqa: PLC0415 (as in MemoryGraph.connect)

        return AsyncRemoteGraph(url, store, token=token, timeout=timeout)

    async def close(self) -> None:
        if hasattr(self, "_embedded"):
            await asyncio.to_thread(self._embedded.close)
        await super().close()

    def query(self) -> AsyncQuery:
        return AsyncQuery(self._embedded.run)

    async def sql(self, query: str, params: Params = None) -> list[tuple[Any, ...]]:
        """Run SQL on the projections; returns every row."""
        return await asyncio.to_thread(self._embedded.run, lambda r: fetch(r, query, params))

    async def graph_stats(self) -> GraphStats:
        return await asyncio.to_thread(self._embedded.stats, await self.stats())

    get_node = _aread(GraphReader.get_node)
    get_nodes_batch = _aread(GraphReader.get_nodes_batch)
    get_edge = _aread(GraphReader.get_edge)
    get_outgoing_edges = _aread(outgoing)
    get_incoming_edges = _aread(incoming)
    get_session = _aread(GraphReader.get_session)
    get_session_nodes = _aread(GraphReader.get_session_nodes)
    get_template = _aread(GraphReader.get_template)
    conversation_thread = _aread(GraphReader.conversation_thread)
    context_window = _aread(GraphReader.context_window)
    ancestors = _aread(GraphReader.ancestors)
    descendants = _aread(GraphReader.descendants)
    template_impact = _aread(GraphReader.template_impact)


__all__ += ["Hop", "Impact"]
