"""A client of `lmg serve` for reads: `MemoryGraph`'s methods over HTTP, sync and async.

`RemoteGraph` is to `eventlog.RemoteLog` what `MemoryGraph` is to `EventLog`: every append
helper, plus the typed reads, the query builder and SQL, answered by the service from the
projections it holds and folds (a read sees every append the service acknowledged before
it). Each read is written once, as the request it makes and the type it answers (`_Read`);
`RemoteGraph` and `AsyncRemoteGraph` send it, so the two cannot drift apart. Answers decode
into the same msgspec types (`nodes`); errors are the embedded classes (`NotFound`,
`BadArgument`, `SqlRefused`, `SqlFailed`), so code moving between the two catches the same.

Where the embedded API cannot be matched, it says so: `sql` answers a DuckDB relation over
the rows fetched (UUIDs arrive as text), so an error met as the query runs is a `SqlFailed`
from `sql` itself (embedded, DuckDB's own from the relation's `fetchall`); and an answer the
service cut at its ``max_rows`` is refused (`ServiceError` ``too_many_rows``) rather than
returned short.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

import duckdb
import msgspec
import pyarrow as pa

from eventlog import LogClosed, ServiceError
from eventlog._client import AsyncRemoteLog, RemoteLog
from eventlog._wire import ERRORS
from eventlog.log import as_method

from . import nodes as n
from ._answer_types import restored
from ._params import Params, to_wire
from ._reads import (
    Hop,
    Impact,
    NotFound,
    _check_edge_type,
    _check_id,
    _check_positive,
    _check_version,
)
from .errors import BadArgument, GraphClosed, SqlFailed, SqlRefused
from .query import Query, _page_size

__all__ = ["AsyncRemoteGraph", "AsyncRemoteQuery", "Forked", "RemoteGraph", "RemoteQuery"]

P = ParamSpec("P")
R = TypeVar("R")

_ERRORS: dict[str, type[Exception]] = {
    **ERRORS,
    "not_found": NotFound,
    "bad_argument": BadArgument,
    "sql_refused": SqlRefused,
    "sql_error": SqlFailed,
}
_ARROW = "application/vnd.apache.arrow.stream"
_TRUNCATED = "lmg-truncated"  # projections._routes.TRUNCATED (that module imports Starlette)
_MOST = 2**63 - 1
"""The largest `turns` or `depth` the service reads (an int64, `_routes._int`): a larger one
answers as this one does, as no session has this many turns and no walk this many levels."""
_ASK = object()


@dataclass(frozen=True)
class _Read(Generic[R]):
    """One typed read: its path under the store, its query, the type it answers, and whether
    "not found" is an answer (None, as `get_node` gives) rather than an error."""

    path: str
    type: Any
    params: dict[str, Any] = field(default_factory=dict)  # a list: the name repeated
    none_if_missing: bool = False
    known: Any = _ASK  # the answer, when the arguments decide it without asking (`_walk`)


def _id(value: uuid.UUID) -> str:
    _check_id(value)  # a str would reach the URL's path: only a UUID does
    return str(value)


def _walk(path: str, depth: int, edge_types: Sequence[str] | None) -> _Read[list[Hop]]:
    """A lineage walk's request. No edge type given is any; an empty list of them matches
    no edge, so the walk reaches nothing (embedded too), which HTTP's repeated `edge_type`
    cannot say: it is answered here."""
    _check_positive(depth, "depth")
    types = None if edge_types is None else [str(t) for t in edge_types]
    params = {"depth": str(min(depth, _MOST)), "edge_type": types or []}
    return _Read(path, list[Hop], params, known=_ASK if types != [] else [])


def get_node(node_id: uuid.UUID, *, include_deleted: bool = False) -> _Read[n.Node | None]:
    """The node with this id, typed, or None."""
    params = {"include_deleted": "true"} if include_deleted else {}
    return _Read(f"/nodes/{_id(node_id)}", n.Node, params, none_if_missing=True)


def get_edge(edge_id: uuid.UUID) -> _Read[n.Edge | None]:
    """The edge with this id, or None."""
    return _Read(f"/edges/{_id(edge_id)}", n.Edge, none_if_missing=True)


def get_outgoing_edges(node_id: uuid.UUID, edge_type: str | None = None) -> _Read[list[n.Edge]]:
    """Live edges leaving a node (optionally of one type), in log order."""
    _check_edge_type(edge_type)
    params = {"direction": "out"} | ({} if edge_type is None else {"type": str(edge_type)})
    return _Read(f"/nodes/{_id(node_id)}/edges", list[n.Edge], params)


def get_incoming_edges(node_id: uuid.UUID, edge_type: str | None = None) -> _Read[list[n.Edge]]:
    """Live edges reaching a node (optionally of one type), in log order."""
    _check_edge_type(edge_type)
    params = {"direction": "in"} | ({} if edge_type is None else {"type": str(edge_type)})
    return _Read(f"/nodes/{_id(node_id)}/edges", list[n.Edge], params)


def get_session(session_id: uuid.UUID) -> _Read[n.Session]:
    """The session (`NotFound` if none)."""
    return _Read(f"/sessions/{_id(session_id)}", n.Session)


def get_session_nodes(session_id: uuid.UUID) -> _Read[list[n.Node]]:
    """The session's nodes, in log order."""
    return _Read(f"/sessions/{_id(session_id)}/nodes", list[n.Node])


def get_template(template_id: uuid.UUID, version: int | None = None) -> _Read[n.Template]:
    """A template, at `version` (None: its current one)."""
    _check_version(version)
    params = {} if version is None else {"version": str(version)}
    return _Read(f"/templates/{_id(template_id)}", n.Template, params)


def conversation_thread(session_id: uuid.UUID) -> _Read[list[n.Turn]]:
    """Every turn of a session (forks include their parent's turns up to the fork point)."""
    return _Read(f"/sessions/{_id(session_id)}/thread", list[n.Turn])


def context_window(session_id: uuid.UUID, turns: int = 10) -> _Read[list[n.Turn]]:
    """The last `turns` turns of a session, oldest first."""
    _check_positive(turns, "turns")
    params = {"turns": str(min(turns, _MOST))}
    return _Read(f"/sessions/{_id(session_id)}/context", list[n.Turn], params)


def ancestors(
    node_id: uuid.UUID, depth: int = 5, edge_types: Sequence[str] | None = None
) -> _Read[list[Hop]]:
    """What a node derives from, breadth first, up to `depth` edges away."""
    return _walk(f"/nodes/{_id(node_id)}/ancestors", depth, edge_types)


def descendants(
    node_id: uuid.UUID, depth: int = 5, edge_types: Sequence[str] | None = None
) -> _Read[list[Hop]]:
    """What derives from a node, breadth first, up to `depth` edges away."""
    return _walk(f"/nodes/{_id(node_id)}/descendants", depth, edge_types)


def template_impact(template_id: uuid.UUID) -> _Read[Impact]:
    """Everything derived from a template or any template inheriting from it."""
    return _Read(f"/templates/{_id(template_id)}/impact", Impact)


def _spec(query: Query, count: bool) -> dict[str, Any]:
    """The builder's calls as the body of ``POST .../query`` (docs/service.md). The builder
    itself checked each (the same `BadArgument` as embedded)."""
    spec: dict[str, Any] = {
        "node_type": query._types,
        "direction": "DESC" if query._descending else "ASC",
        "offset": query._offset,
        "include_deleted": query._deleted,
        "count": count,
        "metadata": query._metadata,  # pairs: a key filtered twice must match both
        "limit": query._limit,
        "session": query._session,
        "agent": query._agent,
    }
    if query._since is not None or query._until is not None:
        spec["between"] = [query._since, query._until]
        spec["on"] = "ts" if query._time_column == "ts" else "occurred_at"
    return spec


def _no_reader(_fn: Callable[[Any], Any]) -> Any:
    raise AssertionError("a remote query runs on the service")


_Post = Callable[[dict[str, Any]], tuple[bytes, bool]]
"""Send a query's spec: the answer's body, and whether the service cut it at `max_rows`."""


class _Count(msgspec.Struct):
    count: int


_NODES = msgspec.json.Decoder(list[n.Node])
_COUNT = msgspec.json.Decoder(_Count)


def _too_many(what: str) -> ServiceError:
    """An answer the service cut at a limit: refused, never returned short."""
    return ServiceError(200, "too_many_rows", f"the answer passes the service's {what}")


def _whole(content: bytes, cut: bool) -> list[n.Node]:
    """An `execute`'s nodes: all of them, as embedded, or `_too_many`."""
    if cut:
        raise _too_many("max_rows: add a limit, or stream the nodes")
    return _NODES.decode(content)


class _Pages:
    """A stream's requests: each asks for the next `page` nodes from where the last answer
    ended. A page the service cut at its `max_rows` (shorter than `page`) is not the end."""

    def __init__(self, query: Query, page: int) -> None:
        self._page = _page_size(page)
        self._spec = _spec(query, False)
        self._taken = self._want = 0
        self._done = False

    def next(self) -> dict[str, Any] | None:
        """The next page's spec; None once the stream has every node."""
        limit = self._spec["limit"]
        if self._done or (limit is not None and self._taken >= limit):
            return None
        self._want = self._page if limit is None else min(self._page, limit - self._taken)
        return {**self._spec, "limit": self._want, "offset": self._spec["offset"] + self._taken}

    def took(self, content: bytes, cut: bool) -> list[n.Node]:
        """The nodes of the page asked for last."""
        chunk = _NODES.decode(content)
        self._taken += len(chunk)
        self._done = not chunk or (len(chunk) < self._want and not cut)
        return chunk


class RemoteQuery(Query):
    """`Query` over HTTP: the same builder, run by the service. An `execute` of more than its
    ``max_rows`` nodes is refused (`ServiceError` ``too_many_rows``); `stream` pages
    through any number."""

    def __init__(self, post: _Post) -> None:
        super().__init__(_no_reader)
        self._post = post

    def execute(self) -> list[n.Node]:
        return _whole(*self._post(_spec(self, False)))

    def count(self) -> int:
        return _COUNT.decode(self._post(_spec(self, True))[0]).count

    def stream(self, page: int = 1_000) -> Iterator[n.Node]:
        pages = _Pages(self, page)
        while (spec := pages.next()) is not None:
            yield from pages.took(*self._post(spec))


class AsyncRemoteQuery(Query):
    """`RemoteQuery` for `AsyncRemoteGraph`: `execute`, `count` and `stream` are awaited."""

    def __init__(
        self, post: Callable[[dict[str, Any]], Coroutine[Any, Any, tuple[bytes, bool]]]
    ) -> None:
        super().__init__(_no_reader)
        self._post = post

    async def execute(self) -> list[n.Node]:  # type: ignore[override]
        return _whole(*await self._post(_spec(self, False)))

    async def count(self) -> int:  # type: ignore[override]
        return _COUNT.decode((await self._post(_spec(self, True)))[0]).count

    async def stream(self, page: int = 1_000) -> AsyncIterator[n.Node]:  # type: ignore[override]
        pages = _Pages(self, page)
        while (spec := pages.next()) is not None:
            for node in pages.took(*await self._post(spec)):
                yield node


class _Sql(msgspec.Struct, omit_defaults=True):
    query: str
    params: list[Any] | dict[str, Any] | None = None
    types: list[Any] | dict[str, Any] | None = None


def _sql_body(query: str, params: Params) -> bytes:
    """The request of `sql`: parameters checked before sending, as embedded (`_params`: one
    `SqlFailed`), those JSON cannot carry as themselves encoded with their types."""
    if not isinstance(query, str):
        raise BadArgument(f"query must be a str, not {type(query).__name__}")
    values, types = to_wire(params)
    try:
        return msgspec.json.encode(_Sql(query, values, types))
    except (TypeError, ValueError, msgspec.EncodeError) as exc:  # a query of lone surrogates
        raise SqlFailed(f"the query cannot be sent to the service: {exc}") from exc


class Forked(msgspec.Struct, frozen=True, kw_only=True):
    """What `RemoteGraph.fork` answers: the new store, served under its name from now on."""

    store: str  # the fork's name: `MemoryGraph.connect(url, store)` reaches it
    forked_from: str  # the store it was forked from
    last_lsn: int  # the last event it holds (-1: none); its own events start after it
    last_ts: int | None  # that event's time, ns
    events: int  # how many events it holds


def _fork_body(at: int | str, name: str) -> bytes:
    return msgspec.json.encode({"at": at, "name": name})


def _table(content: bytes, truncated: str | None) -> pa.Table:
    if truncated == "true":
        raise _too_many("max_rows or max_answer_bytes: add a LIMIT")
    return pa.ipc.open_stream(content).read_all()


def _sync_read(spec: Callable[P, _Read[R]]) -> Callable[Concatenate[RemoteGraph, P], R]:
    @functools.wraps(spec)
    def method(self: RemoteGraph, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._get(spec(*args, **kwargs))

    method.__signature__ = as_method(spec)  # type: ignore[attr-defined]
    return method


def _async_read(
    spec: Callable[P, _Read[R]],
) -> Callable[Concatenate[AsyncRemoteGraph, P], Coroutine[Any, Any, R]]:
    @functools.wraps(spec)
    async def method(self: AsyncRemoteGraph, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await self._get(spec(*args, **kwargs))

    method.__signature__ = as_method(spec)  # type: ignore[attr-defined]
    return method


class RemoteGraph(RemoteLog):
    """A store served by `lmg serve`: `MemoryGraph`'s methods (appends, typed reads, the
    query builder, SQL) over HTTP. Use `MemoryGraph.connect` (or this class's constructor:
    ``RemoteGraph(url, store="default", token=None, timeout=30.0)``)."""

    def __init__(
        self,
        url: str,
        store: str = "default",
        *,
        token: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        super().__init__(url, store, token=token, timeout=timeout, errors=_ERRORS)
        self._duckdb: duckdb.DuckDBPyConnection | None = None

    def close(self) -> None:
        """Close the connections (and the relations `sql` answered). Idempotent."""
        if self._duckdb is not None:
            self._duckdb.close()
        super().close()

    def _read(self, method: str, path: str, **kw: Any) -> Any:
        """A read's request; once closed, `GraphClosed`, as an embedded graph's read."""
        try:
            return self._request(method, path, **kw)
        except LogClosed as exc:
            raise GraphClosed(str(exc)) from None

    def _get(self, read: _Read[R]) -> R:
        if read.known is not _ASK:
            return read.known  # type: ignore[no-any-return]
        try:
            content = self._read("GET", read.path, params=read.params).content
        except NotFound:
            if read.none_if_missing:
                return None  # type: ignore[return-value]
            raise
        return msgspec.json.decode(content, type=read.type)  # type: ignore[no-any-return]

    def _post_query(self, spec: dict[str, Any]) -> tuple[bytes, bool]:
        response = self._read("POST", "/query", content=msgspec.json.encode(spec))
        return response.content, response.headers.get(_TRUNCATED) == "true"

    def _arrow(self, query: str, params: Params) -> pa.Table:
        body = _sql_body(query, params)
        response = self._read("POST", "/sql", content=body, headers={"Accept": _ARROW})
        return _table(response.content, response.headers.get(_TRUNCATED))

    def query(self) -> RemoteQuery:
        """A query builder: ``g.query().session(s).node_type("prompt").limit(10).execute()``."""
        return RemoteQuery(self._post_query)

    def sql(self, query: str, params: Params = None) -> duckdb.DuckDBPyRelation:
        """Run SQL on the service's projections (read-only, sandboxed, limited as its SQL
        route is); a DuckDB relation over the rows it answered (`.fetchall()`, `.df()`)."""
        table = self._arrow(query, params)
        if self._duckdb is None:
            self._duckdb = duckdb.connect()
        return restored(self._duckdb, table)

    def rows(self, query: str, params: Params = None) -> list[tuple[Any, ...]]:
        """Run SQL on the service's projections and fetch every row (as `sql`)."""
        return self.sql(query, params).fetchall()

    def fork(self, at: int | str, name: str) -> Forked:
        """Fork this store at `at` (an LSN or an ISO 8601 time) into a new store `name`,
        made beside it on the service's host and served at once (`replay.fork` there; an
        admin token). A bad name is `BadArgument`; a name in use, `ServiceError`."""
        response = self._request("POST", "/fork", content=_fork_body(at, name))
        return msgspec.json.decode(response.content, type=Forked)

    get_node = _sync_read(get_node)
    get_edge = _sync_read(get_edge)
    get_outgoing_edges = _sync_read(get_outgoing_edges)
    get_incoming_edges = _sync_read(get_incoming_edges)
    get_session = _sync_read(get_session)
    get_session_nodes = _sync_read(get_session_nodes)
    get_template = _sync_read(get_template)
    conversation_thread = _sync_read(conversation_thread)
    context_window = _sync_read(context_window)
    ancestors = _sync_read(ancestors)
    descendants = _sync_read(descendants)
    template_impact = _sync_read(template_impact)


class AsyncRemoteGraph(AsyncRemoteLog):
    """The asyncio twin of `RemoteGraph`: appends and reads are awaited. Use
    `AsyncMemoryGraph.connect`."""

    def __init__(
        self,
        url: str,
        store: str = "default",
        *,
        token: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        super().__init__(url, store, token=token, timeout=timeout, errors=_ERRORS)

    async def _read(self, method: str, path: str, **kw: Any) -> Any:
        """A read's request; once closed, `GraphClosed`, as an embedded graph's read."""
        try:
            return await self._request(method, path, **kw)
        except LogClosed as exc:
            raise GraphClosed(str(exc)) from None

    async def _get(self, read: _Read[R]) -> R:
        if read.known is not _ASK:
            return read.known  # type: ignore[no-any-return]
        try:
            response = await self._read("GET", read.path, params=read.params)
        except NotFound:
            if read.none_if_missing:
                return None  # type: ignore[return-value]
            raise
        return msgspec.json.decode(response.content, type=read.type)  # type: ignore[no-any-return]

    async def _post_query(self, spec: dict[str, Any]) -> tuple[bytes, bool]:
        response = await self._read("POST", "/query", content=msgspec.json.encode(spec))
        return response.content, response.headers.get(_TRUNCATED) == "true"

    def query(self) -> AsyncRemoteQuery:
        """A query builder whose `execute`, `count` and `stream` are awaited."""
        return AsyncRemoteQuery(self._post_query)

    async def sql(self, query: str, params: Params = None) -> list[tuple[Any, ...]]:
        """Run SQL on the service's projections; returns every row (as `AsyncMemoryGraph`)."""
        body = _sql_body(query, params)
        response = await self._read("POST", "/sql", content=body, headers={"Accept": _ARROW})
        table = _table(response.content, response.headers.get(_TRUNCATED))
        with duckdb.connect() as con:
            return restored(con, table).fetchall()

    async def fork(self, at: int | str, name: str) -> Forked:
        """As `RemoteGraph.fork`, awaited."""
        response = await self._request("POST", "/fork", content=_fork_body(at, name))
        return msgspec.json.decode(response.content, type=Forked)

    get_node = _async_read(get_node)
    get_edge = _async_read(get_edge)
    get_outgoing_edges = _async_read(get_outgoing_edges)
    get_incoming_edges = _async_read(get_incoming_edges)
    get_session = _async_read(get_session)
    get_session_nodes = _async_read(get_session_nodes)
    get_template = _async_read(get_template)
    conversation_thread = _async_read(conversation_thread)
    context_window = _async_read(context_window)
    ancestors = _async_read(ancestors)
    descendants = _async_read(descendants)
    template_impact = _async_read(template_impact)
