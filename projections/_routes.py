"""The projections' routes of `lmg serve`: SQL and the typed reads of `MemoryGraph`.

Each read runs in a worker thread on a cursor of its own (`Owner.cursor`): it never waits
for the fold or a file lock, at most for one of `Limits.max_queries` turns. A read that runs
past `Limits.sql_time_s` is interrupted (DuckDB's `interrupt`) and refused.

Typed reads answer with the JSON of the structs `MemoryGraph` returns (`nodes`), named as its
methods are: ``GET .../nodes/{id}`` is `get_node`, ``.../sessions/{id}/context`` is
`context_window`, ``POST .../query`` is the query builder.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import math
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import msgspec
import pyarrow as pa
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import eventlog
from eventlog._http import (
    ApiError,
    Limits,
    ServedLog,
    Service,
    handle_api_error,
    read_body,
    service_of,
)

from ._answer_types import DUCKDB_TYPES, exported
from ._owner import Owner
from ._params import from_wire, values_within
from ._reads import GraphReader, NotFound
from ._sandbox import check, one_line, relation_on, start, translated
from .errors import BadArgument, DatabaseBusy, ProjectionError, SqlFailed, SqlRefused
from .graph_view import incoming, outgoing
from .query import Query

__all__ = [
    "TRUNCATED",
    "EraseRequest",
    "SqlRequest",
    "erase_served",
    "exception_handlers",
    "json_response",
    "routes",
    "run_read",
    "sql_response",
]

R = TypeVar("R")
_JSON = msgspec.json.Encoder(enc_hook=str)  # DuckDB's odd values (intervals, ...) as text
_ARROW = "application/vnd.apache.arrow.stream"
TRUNCATED = "LMG-Truncated"
"""The header of an Arrow answer (JSON says it in its body) or of a query's nodes saying
whether `max_rows` cut it."""


@dataclass
class ServedGraph(ServedLog):
    """A served store with its projections' owner."""

    owner: Owner | None = None


async def _served(request: Request, scope: str) -> tuple[Service, Owner]:
    """The store's owner, once its fold holds every append the service has acknowledged."""
    service = service_of(request)
    served = service.store(request, request.path_params["name"], scope)
    assert isinstance(served, ServedGraph) and served.owner is not None
    await served.owner.reach(served.acknowledged, service.limits.sql_time_s)
    return service, served.owner


async def run_read(service: Service, cursor: duckdb.DuckDBPyConnection, fn: Callable[[], R]) -> R:
    """Run `fn` (which uses `cursor`) in a worker thread, in one of the query turns, and
    interrupt it at the time limit; the cursor is closed once it has stopped."""
    assert service.queries is not None
    async with service.queries:
        task = asyncio.ensure_future(asyncio.to_thread(fn))
        try:
            limit = service.limits.sql_time_s
            done, _ = await asyncio.wait({task}, timeout=limit)
            if not done:
                while not task.done():  # it may not have started its statement yet
                    cursor.interrupt()
                    await asyncio.wait({task}, timeout=0.05)
                with contextlib.suppress(Exception):
                    task.result()
                raise ApiError(422, "time_limit", f"the query ran longer than {limit:g} s")
            try:
                return task.result()
            except duckdb.ConnectionException:  # closed by an erasure while it waited a turn
                raise DatabaseBusy("the projections were folded again; retry shortly") from None
        finally:
            if not task.done():
                await asyncio.wait({task})
            cursor.close()


async def _read(request: Request, scope: str, fn: Callable[[GraphReader], R]) -> Response:
    service, owner = await _served(request, scope)
    cursor = owner.cursor()
    reader = GraphReader(cursor, cache_size=0, kind_of=owner.kind_of)
    result = await run_read(service, cursor, lambda: fn(reader))
    return json_response(result)


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_JSON.encode(value), status, headers, media_type="application/json")


def _id(request: Request, key: str = "id") -> uuid.UUID:
    value = request.path_params[key]
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ApiError(422, "bad_argument", f"{key} must be a UUID, got {value[:40]!r}") from None


def _int(request: Request, key: str, default: int) -> int:
    """A query parameter's int64 (signed). The reader checks the rest (`turns` positive,
    ...) and says it as embedded; a version -1 is not found."""
    value = request.query_params.get(key)
    if value is None:
        return default
    digits = value.removeprefix("-")
    number = int(value) if digits.isascii() and digits.isdigit() and len(digits) <= 19 else None
    if number is None or not -(2**63) <= number < 2**63:
        raise ApiError(422, "bad_argument", f"{key} must be an int64")
    return number


def _found(value: R | None, what: str) -> R:
    if value is None:
        raise ApiError(404, "not_found", f"no such {what}")
    return value


# -- SQL --------------------------------------------------------------------------------------


class SqlRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST .../sql``."""

    query: str
    # Any JSON: `_params.from_wire` refuses what is not parameters as embedded (`SqlFailed`).
    params: Any = None
    types: Any = None  # of the params JSON cannot carry as themselves (`_params`)
    at: int | str | None = None  # an LSN or an ISO 8601 time: the replay view at that point


def sql_response(
    cursor: duckdb.DuckDBPyConnection, body: SqlRequest, limits: Limits, arrow: bool
) -> Callable[[], Response]:
    """What runs in the worker thread: check and run the query on `cursor` (sandboxed, read
    only), fetch at most `max_rows` rows and `max_answer_bytes`, answer as JSON or an Arrow
    IPC stream."""

    def run() -> Response:
        if arrow:  # a relation on the cursor: DuckDB streams it as Arrow without a copy
            relation = relation_on(cursor, body.query, body.params)
            # It runs as it is read: its errors are the query's, translated as they are.
            return translated(
                lambda: _arrow_answer(relation, limits.max_rows, limits.max_answer_bytes)
            )
        start(cursor, body.query, body.params)
        return translated(lambda: _json_answer(cursor, limits.max_rows, limits.max_answer_bytes))

    return run


_CHUNK_ROWS = 256
"""Rows fetched (JSON, at most: `_json_answer`) or streamed (Arrow) at a time, so an answer's
size is known before much more than `max_answer_bytes` is held."""


def _arrow_answer(relation: duckdb.DuckDBPyRelation, max_rows: int, max_bytes: int) -> Response:
    relation, types = exported(relation)
    reader = relation.to_arrow_reader(min(max_rows + 1, _CHUNK_ROWS))
    batches: list[pa.RecordBatch] = []
    rows = size = 0
    truncated = False
    for batch in reader:
        room = max_rows - rows
        kept = _head_within(batch.slice(0, room), max_bytes - size)
        batches.append(kept)
        rows, size = rows + kept.num_rows, size + kept.nbytes
        if kept.num_rows < batch.num_rows:  # cut by rows or bytes: there is more
            truncated = True
            break
        if rows >= max_rows:  # max_rows exactly: more only if the reader has more
            truncated = any(b.num_rows for b in reader)
            break
    schema = reader.schema.with_metadata({**(reader.schema.metadata or {}), DUCKDB_TYPES: types})
    return _arrow_response(schema, batches, truncated=truncated)


def _arrow_response(
    schema: pa.Schema, batches: list[pa.RecordBatch], *, truncated: bool
) -> Response:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    headers = {TRUNCATED: "true" if truncated else "false"}
    return Response(sink.getvalue(), media_type=_ARROW, headers=headers)


def _json_answer(cursor: duckdb.DuckDBPyConnection, max_rows: int, max_bytes: int) -> Response:
    """``{"columns", "rows", "truncated"}``, encoded a row at a time as they are fetched, and
    cut where the rows would pass `max_bytes` (or `max_rows`).

    Rows are fetched one first, then twice as many each time (at most `_CHUNK_ROWS`), but
    never more than the room left holds at the size of the rows fetched so far: a chunk of
    256 rows of 1 MB was made into Python strings and JSON whole before its size was
    counted, three times what DuckDB made, for an answer of a few of them."""
    columns = [d[0] for d in cursor.description or ()]
    floats = [k for k, d in enumerate(cursor.description or ()) if _FLOATS.search(str(d[1]))]
    parts: list[bytes] = []
    rows = size = 0
    truncated = False
    want = 1
    while not truncated:
        chunk = cursor.fetchmany(min(want, max_rows + 1 - rows))
        if not chunk:
            break
        if rows + len(chunk) > max_rows:  # the one row past max_rows says there are more
            chunk, truncated = chunk[: max_rows - rows], True
        began = size
        for row in chunk:
            encoded = _JSON.encode(_spelled(row, floats) if floats else row)
            size += len(encoded) + 1
            if size > max_bytes:
                truncated = True
                break
            parts.append(encoded)
            rows += 1
        each = max(1, (size - began) // max(1, len(chunk)))  # bytes a row, so far
        want = max(1, min(_CHUNK_ROWS, want * 2, (max_bytes - size) // each))
    body = b'{"columns":%s,"rows":[%s],"truncated":%s}' % (
        _JSON.encode(columns),
        b",".join(parts),
        b"true" if truncated else b"false",
    )
    return Response(body, media_type="application/json")


_FLOATS = re.compile(r"\b(DOUBLE|FLOAT)\b")
"""A column type that holds floats, alone or within a list, struct or map."""

_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
"""JSON's words for the floats it has no number for (PostgreSQL's): msgspec writes null."""


def _spelled(row: tuple[Any, ...], floats: list[int]) -> list[Any]:
    """`row` with each non-finite float in the columns `floats` as its `_NON_FINITE` word."""
    spelled = list(row)
    for k in floats:
        spelled[k] = _finite(spelled[k])
    return spelled


def _finite(value: Any) -> Any:
    if type(value) is float:
        return value if math.isfinite(value) else _NON_FINITE[repr(value)]  # -nan's is "nan"
    if type(value) is list or type(value) is tuple:
        return [_finite(v) for v in value]
    if type(value) is dict:
        return {k: _finite(v) for k, v in value.items()}
    return value


def _head_within(batch: pa.RecordBatch, budget: int) -> pa.RecordBatch:
    """The longest head of `batch` of at most `budget` bytes (bisected: a slice's `nbytes`
    counts only its own rows)."""
    if batch.nbytes <= budget:
        return batch
    low, high = 0, batch.num_rows  # the head of `low` rows fits; of `high` rows, not
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if batch.slice(0, middle).nbytes <= budget else (low, middle)
    return batch.slice(0, low)


async def sql_body(request: Request, service: Service) -> SqlRequest:
    """The request, its query at most `max_sql_bytes` long (a parse cannot be interrupted),
    its parameters at most `max_sql_params` values (nor a bind), rebuilt from their JSON and
    checked as embedded (`_params`, `SqlFailed`)."""
    raw = await read_body(request, service.limits.max_body_bytes, service.limits.body_timeout_s)
    try:
        body = msgspec.json.decode(raw, type=SqlRequest)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise ApiError(422, "bad_request", f"not a SQL request: {exc}") from None
    limit = service.limits.max_sql_bytes
    if len(body.query.encode()) > limit:
        raise ApiError(413, "too_large", f"the query is longer than {limit} bytes")
    most = service.limits.max_sql_params
    if not values_within(body.params, most):
        raise ApiError(
            413,
            "too_large",
            f"the parameters hold more than {most} values, or make STRUCTs of more fields",
        )
    params = from_wire(body.params, body.types)
    return msgspec.structs.replace(body, params=params, types=None)


SqlAt = Callable[[Request, Service, SqlRequest], Awaitable[Response]]


def _sql_route(at: SqlAt | None) -> Callable[[Request], Awaitable[Response]]:
    async def sql(request: Request) -> Response:
        """``{"query", "params", "at"}`` -> ``{"columns", "rows", "truncated"}`` or Arrow."""
        service, owner = await _served(request, "sql")
        body = await sql_body(request, service)
        if body.at is not None:
            if at is None:
                raise ApiError(422, "bad_argument", "this service does not replay (no `at`)")
            # Checked before the replay view is built, which takes a turn for up to
            # `replay_time_s`: a refused query took it, to be refused afterwards.
            parsing = owner.cursor()
            await run_read(service, parsing, lambda: check(parsing, body.query))
            return await at(request, service, body)
        arrow = _ARROW in request.headers.get("accept", "")
        cursor = owner.cursor()
        run = sql_response(cursor, body, service.limits, arrow)
        began = asyncio.get_running_loop().time()
        try:
            return await run_read(service, cursor, run)
        finally:
            elapsed = asyncio.get_running_loop().time() - began
            service.metrics.sql.labels(request.path_params["name"]).observe(elapsed)

    return sql


# -- typed reads ------------------------------------------------------------------------------


async def get_node(request: Request) -> Response:
    node_id = _id(request)
    deleted = request.query_params.get("include_deleted", "false").lower() in ("1", "true")
    return await _read(
        request, "read", lambda r: _found(r.get_node(node_id, include_deleted=deleted), "node")
    )


async def get_edge(request: Request) -> Response:
    edge_id = _id(request)
    return await _read(request, "read", lambda r: _found(r.get_edge(edge_id), "edge"))


async def get_edges(request: Request) -> Response:
    """`get_outgoing_edges` (``direction=out``, the default) or `get_incoming_edges`."""
    node_id = _id(request)
    direction = request.query_params.get("direction", "out")
    if direction not in ("out", "in"):
        raise ApiError(422, "bad_argument", "direction must be out or in")
    edge_type = request.query_params.get("type")
    walk = outgoing if direction == "out" else incoming
    return await _read(request, "read", lambda r: walk(r, node_id, edge_type))


async def get_session(request: Request) -> Response:
    session_id = _id(request)
    return await _read(request, "read", lambda r: r.get_session(session_id))


async def get_session_nodes(request: Request) -> Response:
    session_id = _id(request)
    return await _read(request, "read", lambda r: r.get_session_nodes(session_id))


async def conversation_thread(request: Request) -> Response:
    session_id = _id(request)
    return await _read(request, "read", lambda r: r.conversation_thread(session_id))


async def context_window(request: Request) -> Response:
    session_id = _id(request)
    turns = _int(request, "turns", 10)
    return await _read(request, "read", lambda r: r.context_window(session_id, turns))


def _walk(up: bool) -> Callable[[Request], Awaitable[Response]]:
    async def walk(request: Request) -> Response:
        node_id = _id(request)
        depth = _int(request, "depth", 5)
        types = request.query_params.getlist("edge_type") or None
        method = GraphReader.ancestors if up else GraphReader.descendants
        return await _read(request, "read", lambda r: method(r, node_id, depth, types))

    walk.__name__ = "ancestors" if up else "descendants"
    return walk


async def get_template(request: Request) -> Response:
    template_id = _id(request)
    version = request.query_params.get("version")
    number = None if version is None else _int(request, "version", 0)
    return await _read(request, "read", lambda r: r.get_template(template_id, number))


async def template_impact(request: Request) -> Response:
    template_id = _id(request)
    return await _read(request, "read", lambda r: r.template_impact(template_id))


class QueryRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST .../query``: the query builder's calls, as fields."""

    session: uuid.UUID | None = None
    node_type: list[str] | None = None
    agent: uuid.UUID | None = None
    between: tuple[int | str | None, int | str | None] | None = None  # ns or ISO 8601
    on: str = "ts"
    # {KEY: VALUE}, or [[KEY, VALUE], ...]: one key may be filtered on twice (both must hold)
    metadata: dict[str, Any] | list[tuple[str, Any]] = {}
    order_by: str = "lsn"
    direction: str = "ASC"
    limit: int | None = None
    offset: int = 0
    include_deleted: bool = False
    count: bool = False  # answer {"count": n} instead of the nodes

    def build(self, query: Query) -> Query:
        if self.session is not None:
            query.session(self.session)
        if self.node_type is not None:
            query.node_type(*self.node_type)
        if self.agent is not None:
            query.agent(self.agent)
        if self.between is not None:
            query.between(*self.between, on=self.on)
        pairs = self.metadata.items() if isinstance(self.metadata, dict) else self.metadata
        for key, value in pairs:
            query.metadata(key, value)
        query.order_by(self.order_by, self.direction)
        if self.limit is not None:
            query.limit(self.limit)
        return query.offset(self.offset).include_deleted(self.include_deleted)


async def query(request: Request) -> Response:
    """The builder's nodes, at most `max_rows` of them: one more is fetched, so the header
    `TRUNCATED` says whether the limit cut the answer (the client refuses a cut `execute`
    and pages a `stream` on from where the cut was), or ``{"count": n}``."""
    service, owner = await _served(request, "read")
    raw = await read_body(request, service.limits.max_body_bytes, service.limits.body_timeout_s)
    try:
        spec = msgspec.json.decode(raw, type=QueryRequest)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise ApiError(422, "bad_request", f"not a query: {exc}") from None
    most = service.limits.max_rows
    capped = not spec.count and (spec.limit is None or spec.limit > most)
    if capped:
        spec = msgspec.structs.replace(spec, limit=most + 1)
    cursor = owner.cursor()
    reader = GraphReader(cursor, cache_size=0, kind_of=owner.kind_of)
    built = spec.build(Query(lambda fn: fn(reader)))

    def run() -> Any:
        return {"count": built.count()} if spec.count else built.execute()

    answer = await run_read(service, cursor, run)
    if spec.count:
        return json_response(answer)
    cut = capped and len(answer) > most
    return json_response(answer[:most], headers={TRUNCATED: "true" if cut else "false"})


# -- erasure ----------------------------------------------------------------------------------


class EraseRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST .../erase``: `lmg erase`'s criteria (they add up), and `dry_run`.
    ``by`` names who erases (recorded in the log); by default the token's name."""

    sessions: list[str] = []
    nodes: list[str] = []
    actors: list[str] = []
    metadata: dict[str, str] = {}
    before: int | str | None = None  # ns or ISO 8601
    due: bool = False  # what the store's retention policy makes due now (not with `before`)
    dry_run: bool = False
    by: str | None = None


async def erase(request: Request) -> Response:
    """Erase the chosen content (admin only) from the store's log, projections and
    snapshots, through the service's own owner of them, or with ``dry_run`` list what would
    be erased (at most `max_rows` events, and their ``count``). Answers the erasure as
    `projections.erase` returns it: its record, LSN ranges and segments rewritten."""
    service = service_of(request)
    served = service.store(request, request.path_params["name"], "admin")
    assert isinstance(served, ServedGraph) and served.owner is not None
    raw = await read_body(request, service.limits.max_body_bytes, service.limits.body_timeout_s)
    try:
        body = msgspec.json.decode(raw, type=EraseRequest)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise ApiError(422, "bad_request", f"not an erasure request: {exc}") from None
    sessions: list[str | uuid.UUID] = list(body.sessions)
    before = body.before
    if body.due:
        due = await asyncio.to_thread(_due, served.path, before)
        before = due.before
        sessions += due.sessions
    selector = eventlog.Selector.of(
        sessions=sessions,
        nodes=body.nodes,
        actors=body.actors,
        metadata=body.metadata,
        before=before,
    )
    if body.dry_run:
        chosen = await asyncio.to_thread(eventlog.select, served.path, selector)
        cut = chosen[: service.limits.max_rows]
        return json_response(
            {"selected": cut, "count": len(chosen), "truncated": len(cut) < len(chosen)}
        )
    by = body.by if body.by is not None else request.scope.get("lmg.token")
    return json_response(await erase_served(service, served, selector, by))


def _due(store: Path, before: int | str | None) -> eventlog.Selector:
    """``"due": true``: what the store's retention policy makes due now, as `lmg erase
    --due` chooses it (422 if `before` is given too, if the store has no policy, or if the
    policy can select nothing now)."""
    if before is not None:
        raise ApiError(422, "bad_argument", "due and before are exclusive")
    if eventlog.retention(store) is None:
        raise ApiError(422, "no_retention_policy", "this store has no retention policy")
    chosen = eventlog.due(store).selector()
    if chosen is None:
        raise ApiError(422, "nothing_due", "the retention policy makes nothing due now")
    return chosen


async def erase_served(
    service: Service, served: ServedGraph, selector: eventlog.Selector, by: str | None
) -> eventlog.Erasure:
    """Erase through the service's owner of the store (`Owner.erase`), then have the service
    forget what it keeps in memory of the store's content: the erase route's path, and the
    retention schedule's (`projections._retention`)."""
    assert served.owner is not None
    done = await asyncio.to_thread(served.owner.erase, selector, by)
    for forget in service.erased:
        forget(served.name)
    return done


def routes(at: SqlAt | None = None) -> list[Route]:
    """The routes; `at` runs SQL with ``at`` given (replay's, where the app is assembled)."""
    base = "/v1/stores/{name}"
    return [
        Route(f"{base}/sql", _sql_route(at), methods=["POST"]),
        Route(f"{base}/erase", erase, methods=["POST"]),
        Route(f"{base}/query", query, methods=["POST"]),
        Route(f"{base}/nodes/{{id}}", get_node),
        Route(f"{base}/nodes/{{id}}/edges", get_edges),
        Route(f"{base}/nodes/{{id}}/ancestors", _walk(up=True)),
        Route(f"{base}/nodes/{{id}}/descendants", _walk(up=False)),
        Route(f"{base}/edges/{{id}}", get_edge),
        Route(f"{base}/sessions/{{id}}", get_session),
        Route(f"{base}/sessions/{{id}}/nodes", get_session_nodes),
        Route(f"{base}/sessions/{{id}}/thread", conversation_thread),
        Route(f"{base}/sessions/{{id}}/context", context_window),
        Route(f"{base}/templates/{{id}}", get_template),
        Route(f"{base}/templates/{{id}}/impact", template_impact),
    ]


def projection_error(exc: ProjectionError) -> ApiError:
    """The projections' errors as HTTP: refused or failed SQL and bad arguments 422, an unknown
    id 404, anything else 500 without its message (it may name files)."""
    match exc:
        case NotFound():
            return ApiError(404, "not_found", str(exc))
        case SqlRefused():
            return ApiError(422, "sql_refused", str(exc))
        case SqlFailed():
            return ApiError(422, "sql_error", str(exc))
        case BadArgument():
            return ApiError(422, "bad_argument", str(exc))
        case DatabaseBusy():
            return ApiError(503, "busy", str(exc))
    return ApiError(500, "internal", "the projections could not answer (see the service's log)")


async def _handle_projection_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProjectionError)
    return await handle_api_error(request, projection_error(exc))


async def _handle_duckdb_error(request: Request, exc: Exception) -> Response:
    """A DuckDB error that reached no translation (`_sandbox.translated` makes a user's
    SQL errors `SqlFailed`): its first line, without what may be a path of the host."""
    return await handle_api_error(request, ApiError(422, "sql_error", one_line(exc)))


exception_handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
    ProjectionError: _handle_projection_error,
    duckdb.Error: _handle_duckdb_error,
}
