"""The typed read API every graph shares, and `GraphView`: that API over one connection.

`GraphReads` is the read half of `MemoryGraph`: the Rust crate's lookups, the query builder,
lineage, threads, context windows and SQL. A subclass says how to reach a `GraphReader` (`_run`);
`MemoryGraph` folds the log first (read-your-writes), `GraphView` reads a database as it is
(a connection from `projections.connect`, or a replayed past in `replay`).
"""

from __future__ import annotations

import inspect
import threading
import uuid
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

import duckdb

from . import nodes as n
from ._fold import Batch
from ._params import Params
from ._reads import GraphReader
from ._sandbox import one_line, query_rows, relation
from .errors import ProjectionError
from .query import Query

__all__ = ["GraphReads", "GraphView"]

P = ParamSpec("P")
R = TypeVar("R")


def _read(fn: Callable[Concatenate[GraphReader, P], R]) -> Callable[Concatenate[GraphReads, P], R]:
    def method(self: GraphReads, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._run(lambda reader: fn(reader, *args, **kwargs))

    method.__name__, method.__doc__ = fn.__name__, fn.__doc__
    method.__signature__ = inspect.signature(fn)  # type: ignore[attr-defined]  # for help()
    return method


def outgoing(reader: GraphReader, node_id: uuid.UUID, edge_type: str | None = None) -> list[n.Edge]:
    """Live edges leaving a node (optionally of one type), in log order."""
    return reader.edges(node_id, "out", edge_type)


def incoming(reader: GraphReader, node_id: uuid.UUID, edge_type: str | None = None) -> list[n.Edge]:
    """Live edges arriving at a node (optionally of one type), in log order."""
    return reader.edges(node_id, "in", edge_type)


def fetch(reader: GraphReader, query: str, params: Params) -> list[tuple[Any, ...]]:
    """Every row of the caller's SQL, run in the SQL sandbox (`_sandbox`)."""
    return query_rows(reader.con, query, params)


class GraphReads:
    """Typed reads of the projections; subclasses implement `_run`."""

    def _run(self, fn: Callable[[GraphReader], R]) -> R:
        raise NotImplementedError

    def query(self) -> Query:
        """A query builder: ``g.query().session(s).node_type("prompt").limit(10).execute()``."""
        return Query(self._run)

    def sql(self, query: str, params: Params = None) -> duckdb.DuckDBPyRelation:
        """Run SQL on the projections; returns a DuckDB relation (`.fetchall()`, `.df()`, ...).

        It runs lazily, on a cursor of its own, and reads the projections as they were when it
        was made. Read-only: anything else raises `SqlRefused` (docs/sql.md)."""
        return self._run(lambda reader: relation(reader.con, query, params))

    def rows(self, query: str, params: Params = None) -> list[tuple[Any, ...]]:
        """Run SQL on the projections and fetch every row (read-only, as `sql`)."""
        return self._run(lambda reader: fetch(reader, query, params))

    get_node = _read(GraphReader.get_node)
    get_nodes_batch = _read(GraphReader.get_nodes_batch)
    get_edge = _read(GraphReader.get_edge)
    get_outgoing_edges = _read(outgoing)
    get_incoming_edges = _read(incoming)
    get_session = _read(GraphReader.get_session)
    get_session_nodes = _read(GraphReader.get_session_nodes)
    get_template = _read(GraphReader.get_template)
    conversation_thread = _read(GraphReader.conversation_thread)
    context_window = _read(GraphReader.context_window)
    ancestors = _read(GraphReader.ancestors)
    descendants = _read(GraphReader.descendants)
    template_impact = _read(GraphReader.template_impact)


class GraphView(GraphReads):
    """The typed read API over an open projections connection, read as it is (no fold).

        with projections.connect("./data") as con:
            projections.GraphView(con).get_node(prompt_id)

    Thread-safe: reads are serialised on the connection."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._reader = GraphReader(con)
        self._mutex = threading.RLock()
        self._closed = False

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        return self._reader.con

    def _run(self, fn: Callable[[GraphReader], R]) -> R:
        with self._mutex:
            if self._closed:
                raise ProjectionError("this view is closed")
            try:
                return fn(self._reader)
            except duckdb.Error as exc:
                raise ProjectionError(f"DuckDB: {one_line(exc)}") from exc

    def forget(self, batch: Batch | None = None) -> None:
        """Drop cached answers after the database changed under the view (all, if no batch)."""
        with self._mutex:
            if batch is None:
                self._reader.clear()
            else:
                self._reader.forget(batch)

    def close(self) -> None:
        """Mark the view closed (the connection is its owner's to close)."""
        with self._mutex:
            self._closed = True
