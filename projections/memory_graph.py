"""`MemoryGraph`: the event log's append API plus live, typed reads of its projections.

Embedded use: the graph folds into its database in-process and holds that database for its
lifetime (one folder per database, see `_database`). Every read first folds whatever the log
holds beyond the checkpoint, so a read sees every write made before it, by this process or
any other. `AsyncMemoryGraph` is the asyncio twin: appends as in `AsyncEventLog`, reads in a
worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

import duckdb
import msgspec

from eventlog import AsyncEventLog, EventLog, Options, Stats

from . import nodes as n
from ._database import FolderLock, Gate, database_path, open_database
from ._fold import Batch
from ._folder import BATCH_EVENTS, LogReader, fold_available
from ._history import folded_history, forget_history, history_differs
from ._reads import TABLE_OF_TYPE, GraphReader, Hop, Impact
from ._sandbox import SANDBOX
from ._schema import checkpoint, ensure_schema
from .errors import ProjectionError
from .graph_view import GraphReads, fetch, incoming, outgoing
from .query import Query

__all__ = ["AsyncMemoryGraph", "AsyncQuery", "GraphStats", "MemoryGraph"]

P = ParamSpec("P")
R = TypeVar("R")


MEMORY_LIMIT = "256MB"
"""DuckDB's memory for an embedded graph, as for the projector: folding one of the largest events
the log accepts (64 MiB of text) takes about three times its size."""


class GraphStats(Stats, kw_only=True):
    """The log's `Stats` plus the projections': checkpoint, lag, nodes and edges by type."""

    checkpoint_lsn: int
    lag_events: int
    nodes_by_type: dict[str, int]
    edges_by_type: dict[str, int]
    database_bytes: int


class _Embedded:
    """The database side of an embedded graph: lock, gate, connection, reader, caches."""

    def __init__(self, log: LogReader, db: Path, wait_s: float, memory_limit: str) -> None:
        self.log = log
        self.db = db
        self._mutex = threading.RLock()
        self.batch_events = BATCH_EVENTS
        self._lock: FolderLock | None = None
        self._gate: Gate | None = None
        # The caller's SQL runs on this instance too (`sql`, `rows`): it is sandboxed from the
        # start, since the fold needs no files (it spills to DuckDB's own temporary files).
        if str(db) == ":memory:":  # private to this handle: nobody to share with
            self.con = duckdb.connect(config={"memory_limit": memory_limit, **SANDBOX})  # no WAL
            ensure_schema(self.con)
        else:
            self._lock = FolderLock(db, "an embedded MemoryGraph")
            self._gate = Gate(db)
            try:
                self._gate.acquire(exclusive=True, timeout=wait_s)
                self.con = open_database(
                    db,
                    read_only=False,
                    timeout=wait_s,
                    memory_limit=memory_limit,
                    sandbox=True,
                )  # DuckDB's checkpoint threshold stays: data not yet checkpointed stays in memory
                ensure_schema(self.con)
                why = history_differs(log, *folded_history(self.con))
                if why is not None:  # the log lost what was folded: never mix two histories
                    forget_history(self.con, why)
                    ensure_schema(self.con)
            except BaseException:
                self._gate.close()
                self._lock.release()
                raise
        self.reader = GraphReader(self.con)
        self.checkpoint = checkpoint(self.con)
        self._closed = False

    def refresh(self) -> None:
        """Fold what the log holds beyond the checkpoint (read-your-writes)."""
        if self.log.next_lsn() - 1 > self.checkpoint:
            # A PoisonEvent propagates: a read cannot promise the writes before it, so it fails
            # (naming the event) until the database is rebuilt; what preceded it is folded.
            self.checkpoint = fold_available(
                self.con, self.log, batch_events=self.batch_events, on_batch=self._forget
            )

    def _forget(self, batch: Batch, _last: object) -> None:
        self.reader.forget(batch)

    def run(self, fn: Callable[[GraphReader], R]) -> R:
        with self._mutex:
            if self._closed:
                raise ProjectionError(f"the graph on {self.db} is closed")
            try:
                self.refresh()
                return fn(self.reader)
            except duckdb.Error as exc:
                raise ProjectionError(f"DuckDB: {exc}") from exc

    def close(self) -> None:
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            self.con.close()
            if self._gate is not None:
                self._gate.release()
                self._gate.close()
            if self._lock is not None:
                self._lock.release()

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
        memory_limit: str = MEMORY_LIMIT,
        **overrides: Any,
    ) -> Self:
        """Open the store at `path` (creating it) and its projections (``projections.duckdb``
        in the store unless `database` names another file, or ``":memory:"``), folding any
        backlog. Waits up to `wait_s` for readers of the database in other processes.
        `memory_limit` bounds DuckDB's memory (it spills to disk beyond it); raise it for
        heavy analytical SQL through `sql`."""
        graph = super().open(path, options, **overrides)
        try:
            db = Path(":memory:") if str(database) == ":memory:" else database_path(path, database)
            graph._embedded = _Embedded(graph, db, wait_s, memory_limit)
            graph._embedded.run(lambda _reader: None)
        except BaseException:
            EventLog.close(graph)
            raise
        return graph

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
        memory_limit: str = MEMORY_LIMIT,
        **overrides: Any,
    ) -> Self:
        """`MemoryGraph.open` for asyncio; opening and the backlog fold run in a thread."""
        graph = await super().open(path, options, **overrides)
        try:
            db = Path(":memory:") if str(database) == ":memory:" else database_path(path, database)
            reads = graph.blocking()  # folds run in worker threads: the blocking reads
            graph._embedded = await asyncio.to_thread(_Embedded, reads, db, wait_s, memory_limit)
            await asyncio.to_thread(graph._embedded.run, lambda _reader: None)
        except BaseException:
            await AsyncEventLog.close(graph)
            raise
        return graph

    async def close(self) -> None:
        if hasattr(self, "_embedded"):
            await asyncio.to_thread(self._embedded.close)
        await super().close()

    def query(self) -> AsyncQuery:
        return AsyncQuery(self._embedded.run)

    async def sql(
        self, query: str, params: Sequence[Any] | dict[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
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
