"""The query builder of the Rust crate llm-memory-graph's `AsyncMemoryGraph`: filters chained,
then `execute()` or `stream()`.

    g.query().session(s).node_type("prompt").between(t0, t1).limit(10).execute()

It spans the node tables with one ``UNION ALL`` of their ids and positions, orders and pages
that, then loads the page's rows as typed nodes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Self

import msgspec

from eventlog import InvalidEvent
from eventlog._time import TimeLike, to_ns

from . import nodes as n
from ._reads import TABLE_OF_TYPE
from .errors import BadArgument

if TYPE_CHECKING:
    from ._reads import GraphReader

__all__ = ["Query"]

_SESSION_SCOPED = {"prompts", "responses", "tool_invocations", "nodes"}
_AGENT_FILTER = {
    "prompts": "agent_id = $agent",
    "responses": "prompt_id IN (SELECT id FROM prompts WHERE agent_id = $agent)",
    "tool_invocations": "response_id IN (SELECT r.id FROM responses r JOIN prompts p "
    "ON r.prompt_id = p.id WHERE p.agent_id = $agent)",
}
_METADATA_COLUMN = {
    "sessions": "metadata",
    "prompts": "metadata",
    "responses": "metadata",
    "agents": "metadata",
    "templates": "metadata",
    "nodes": "data",
}


class Query:
    """A query over nodes; every method but `execute`, `stream` and `count` returns self."""

    def __init__(self, run: Callable[[Callable[[GraphReader], Any]], Any]) -> None:
        self._run = run
        self._types = list(TABLE_OF_TYPE)
        self._session: uuid.UUID | None = None
        self._agent: uuid.UUID | None = None
        self._since: int | None = None
        self._until: int | None = None
        self._time_column = "ts"
        self._metadata: list[tuple[str, Any]] = []
        self._limit: int | None = None
        self._offset = 0
        self._descending = False
        self._deleted = False

    def session(self, session_id: uuid.UUID) -> Self:
        """Nodes of one session (prompts, responses, tool calls, generic nodes)."""
        if not isinstance(session_id, uuid.UUID):
            raise BadArgument(f"session_id must be a uuid.UUID, not {type(session_id).__name__}")
        self._session = session_id
        return self

    def node_type(self, *types: str) -> Self:
        """Only these node types: session, prompt, response, tool_invocation, agent, template,
        node. The Rust crate's names (``"PromptNode"``) are accepted too."""
        wanted = [_type_name(t) for t in types]
        self._types = [t for t in TABLE_OF_TYPE if t in wanted]
        return self

    def agent(self, agent_id: uuid.UUID) -> Self:
        """Prompts the agent handled, and the responses and tool calls that followed them."""
        if not isinstance(agent_id, uuid.UUID):
            raise BadArgument(f"agent_id must be a uuid.UUID, not {type(agent_id).__name__}")
        self._agent = agent_id
        return self

    def between(
        self, start: TimeLike | None = None, end: TimeLike | None = None, *, on: str = "ts"
    ) -> Self:
        """Nodes with `start` <= time < `end`, on ``ts`` (recorded) or ``occurred_at``
        (when it happened; falls back to ``ts`` where not given)."""
        if on not in ("ts", "occurred_at"):
            raise BadArgument(f"on must be 'ts' or 'occurred_at', not {on!r}")
        try:
            self._since = None if start is None else to_ns(start, "start")
            self._until = None if end is None else to_ns(end, "end")
        except InvalidEvent as exc:
            raise BadArgument(str(exc)) from None
        self._time_column = "ts" if on == "ts" else "coalesce(occurred_at, ts)"
        return self

    def metadata(self, key: str, value: Any) -> Self:
        """Nodes whose metadata (``data`` for generic nodes) has `key` equal to `value`."""
        if not isinstance(key, str):
            raise BadArgument(f"a metadata key must be a str, not {type(key).__name__}")
        self._metadata.append((key, value))
        return self

    def order_by(self, column: str = "lsn", direction: str = "ASC") -> Self:
        """Log order (``lsn``/``ts``/``timestamp``), ascending or ``"DESC"``."""
        if column not in ("lsn", "ts", "timestamp"):
            raise BadArgument(f"nodes are ordered by log position; {column!r} is not supported")
        if direction.upper() not in ("ASC", "DESC"):
            raise BadArgument(f"direction must be ASC or DESC, not {direction!r}")
        self._descending = direction.upper() == "DESC"
        return self

    def limit(self, count: int) -> Self:
        self._limit = _non_negative(count, "limit")
        return self

    def offset(self, count: int) -> Self:
        self._offset = _non_negative(count, "offset")
        return self

    def include_deleted(self, include: bool = True) -> Self:
        self._deleted = bool(include)  # any truth value, as `if` reads it
        return self

    # -- running ------------------------------------------------------------------------------

    def _sql(self) -> tuple[str, dict[str, Any]]:
        params: dict[str, Any] = {}
        parts = []
        for i, node_type in enumerate(self._types):
            table = TABLE_OF_TYPE[node_type][0]
            where = ["TRUE"]
            if table == "templates":
                where.append("is_current")
            if not self._deleted:
                where.append("deleted_ts IS NULL")
            if self._session is not None:
                if table not in _SESSION_SCOPED:
                    continue
                where.append("session_id = $session")
                params["session"] = self._session
            if self._agent is not None:
                if table not in _AGENT_FILTER:
                    continue
                where.append(_AGENT_FILTER[table])
                params["agent"] = self._agent
            if self._since is not None:
                where.append(f"{self._time_column} >= $since")
                params["since"] = self._since
            if self._until is not None:
                where.append(f"{self._time_column} < $until")
                params["until"] = self._until
            for j, (key, value) in enumerate(self._metadata):
                if table not in _METADATA_COLUMN:
                    where.append("FALSE")
                    continue
                column = _METADATA_COLUMN[table]
                where.append(f"json_extract({column}, $key{j}) = $value{j}::JSON")
                params[f"key{j}"] = _pointer(key)
                params[f"value{j}"] = msgspec.json.encode(value).decode()
            parts.append(f"SELECT {i} AS t, id, lsn FROM {table} WHERE {' AND '.join(where)}")
        if not parts:
            return "SELECT NULL::INT AS t, NULL::UUID AS id, NULL::BIGINT AS lsn LIMIT 0", {}
        order = "DESC" if self._descending else "ASC"
        sql = f"{' UNION ALL '.join(parts)} ORDER BY lsn {order}, t"
        if self._limit is not None:
            sql += f" LIMIT {self._limit}"
        if self._offset:
            sql += f" OFFSET {self._offset}"
        return sql, params

    def execute(self) -> list[n.Node]:
        """Every matching node, typed, in the order asked for."""
        sql, params = self._sql()
        return self._run(lambda reader: _load(reader, self._types, sql, params))  # type: ignore[no-any-return]

    def count(self) -> int:
        sql, params = self._sql()
        rows = self._run(
            lambda r: r.con.execute(f"SELECT count(*) FROM ({sql})", params).fetchall()
        )
        return int(rows[0][0])

    def stream(self, page: int = 1_000) -> Iterator[n.Node]:
        """The same nodes as `execute`, loaded `page` at a time (pages are taken between
        folds, so a fold between pages may add nodes at the end)."""
        page = _page_size(page)
        limit, offset = self._limit, self._offset
        taken = 0
        while limit is None or taken < limit:
            want = page if limit is None else min(page, limit - taken)
            self._limit, self._offset = want, offset + taken
            try:
                chunk = Query.execute(self)  # not an AsyncQuery override (a coroutine)
            finally:
                self._limit, self._offset = limit, offset
            yield from chunk
            taken += len(chunk)
            if len(chunk) < want:
                return


def _load(reader: GraphReader, types: list[str], sql: str, params: dict[str, Any]) -> list[n.Node]:
    hits = reader.con.execute(sql, params).fetchall()
    by_table: dict[int, list[uuid.UUID]] = {}
    for t, node_id, _lsn in hits:
        by_table.setdefault(t, []).append(node_id)
    loaded: dict[uuid.UUID, n.Node] = {}
    for t, ids in by_table.items():
        table, cls = TABLE_OF_TYPE[types[t]]
        current = " AND is_current" if table == "templates" else ""
        for node in reader._structs(
            cls, f"SELECT * FROM {table} WHERE id IN (SELECT unnest($1::UUID[])){current}", [ids]
        ):
            loaded[node.id] = node
    return [loaded[node_id] for _t, node_id, _lsn in hits if node_id in loaded]


_SEED_NAMES = {
    "conversationsession": "session",
    "promptnode": "prompt",
    "responsenode": "response",
    "toolinvocation": "tool_invocation",
    "agentnode": "agent",
    "prompttemplate": "template",
}


def _type_name(name: str) -> str:
    if not isinstance(name, str):
        raise BadArgument(f"a node type is a str, not {type(name).__name__}")
    key = name.lower()
    key = _SEED_NAMES.get(key, key)
    if key not in TABLE_OF_TYPE:
        raise BadArgument(f"unknown node type {name!r}; one of {', '.join(TABLE_OF_TYPE)}")
    return key


def _pointer(key: str) -> str:
    """The JSON Pointer (RFC 6901) of a top-level key: any str, where a JSONPath (``$."k"``)
    is a binder error for the empty key and finds nothing for one holding NUL."""
    return "/" + key.replace("~", "~0").replace("/", "~1")


def _page_size(page: int) -> int:
    """A stream's page, of at least one node (page 0 is one): the client pages as this does."""
    return _non_negative(page, "page") or 1


def _non_negative(value: int, name: str) -> int:
    """A limit, offset or page: an int64 (DuckDB's LIMIT and OFFSET), refused here beyond."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise BadArgument(f"{name} must be a non-negative int64, got {value!r}")
    return value
