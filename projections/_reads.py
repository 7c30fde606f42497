"""The read side of a MemoryGraph: typed lookups, lineage, threads and context windows.

Every method runs SQL on one DuckDB connection (the caller serialises access). Hot reads
(`get_node`, `context_window`) are served from small LRU caches that the embedding graph
clears for exactly the rows each fold changes, so a cached answer is never stale.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Generic, TypeVar

import duckdb
import msgspec

from eventlog import NodeKind

from . import nodes as n
from ._fold import Batch

__all__ = ["TABLE_OF_TYPE", "GraphReader", "Hop", "Impact", "NotFound"]

from .errors import BadArgument, ProjectionError


class NotFound(ProjectionError, LookupError):
    """No live node, session or template has that id."""


TABLE_OF_TYPE: dict[str, tuple[str, type[msgspec.Struct]]] = {
    "session": ("sessions", n.Session),
    "prompt": ("prompts", n.Prompt),
    "response": ("responses", n.Response),
    "tool_invocation": ("tool_invocations", n.ToolInvocation),
    "agent": ("agents", n.Agent),
    "template": ("templates", n.Template),
    "node": ("nodes", n.GenericNode),
}
_NODE_TABLES = [(t, cls) for t, cls in TABLE_OF_TYPE.values()]
# The table a node of each kind is folded into; an edge is in no node table.
_TABLE_OF_KIND: dict[NodeKind, str | None] = {
    NodeKind.SESSION: "sessions",
    NodeKind.PROMPT: "prompts",
    NodeKind.RESPONSE: "responses",
    NodeKind.AGENT: "agents",
    NodeKind.TEMPLATE: "templates",
    NodeKind.TOOL_INVOCATION: "tool_invocations",
    NodeKind.NODE: "nodes",
    NodeKind.EDGE: None,
}
KindOf = Callable[[uuid.UUID], NodeKind | None]
"""What a log knows of an id's kind (`EventLog.kind_of`); None when it does not know."""

_K = TypeVar("_K")
_V = TypeVar("_V")


class _LRU(Generic[_K, _V]):
    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[_K, _V] = OrderedDict()

    def get(self, key: _K) -> _V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: _K, value: _V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        if len(self._items) > self._size:
            self._items.popitem(last=False)

    def drop(self, keys: Iterable[_K]) -> None:
        for key in keys:
            self._items.pop(key, None)

    def clear(self) -> None:
        self._items.clear()

    def __iter__(self) -> Iterator[_K]:
        return iter(list(self._items))  # a copy: callers drop entries while iterating

    def values(self) -> Iterator[_V]:
        return iter(list(self._items.values()))

    def __len__(self) -> int:
        return len(self._items)


class Hop(msgspec.Struct, frozen=True):
    """One step of a lineage walk: the node reached, how far, and the edge that led there."""

    depth: int
    node_id: uuid.UUID
    edge: n.Edge
    node: n.Node | None  # None when the far end is not a node the projections hold


class Impact(msgspec.Struct, frozen=True):
    """Everything derived from a template or from any template that inherits from it."""

    template_id: uuid.UUID
    templates: list[uuid.UUID]  # the template and its live descendants
    prompts: list[uuid.UUID]
    responses: list[uuid.UUID]
    tool_invocations: list[uuid.UUID]


_CLASS_OF_TABLE: dict[str, type[msgspec.Struct]] = dict(_NODE_TABLES)
# Which table the far end of an edge is in, walking up (to what a node derives from) and down.
_UP_HINTS = {
    "PART_OF": "sessions",
    "FOLLOWS": "prompts",
    "RESPONDS_TO": "prompts",
    "INSTANTIATES": "templates",
    "INHERITS": "templates",
    "HANDLED_BY": "agents",
    "TRANSFERS_TO": "agents",
    "INVOKES": "responses",
}
_DOWN_HINTS = {
    "PART_OF": "prompts",
    "FOLLOWS": "prompts",
    "RESPONDS_TO": "responses",
    "INSTANTIATES": "prompts",
    "INHERITS": "templates",
    "HANDLED_BY": "prompts",
    "TRANSFERS_TO": "responses",
    "INVOKES": "tool_invocations",
}


def _union_selects(*parts: tuple[str, type[msgspec.Struct]]) -> list[str]:
    """One SELECT per (table, Struct), each of every Struct's fields by name (NULL where a
    table has none) after a first column naming the part, so their UNION ALL reads rows of
    several tables in one statement, and each row converts to its Struct (`from_row` drops
    NULLs)."""
    columns = [cls.__struct_fields__ for _, cls in parts]
    names = list(dict.fromkeys(c for own in columns for c in own))
    return [
        f"SELECT {i} AS part, "
        + ", ".join(c if c in own else f"NULL AS {c}" for c in names)
        + f" FROM {table}"
        for i, ((table, _), own) in enumerate(zip(parts, columns, strict=True))
    ]


_TURN_PROMPTS, _TURN_RESPONSES = _union_selects(("prompts", n.Prompt), ("responses", n.Response))


# Lineage runs from what is derived to what it derives from. Every edge type points that way
# (a response RESPONDS_TO its prompt) except INVOKES, which points from a response to the
# tool call it caused.
_REVERSED = "INVOKES"


class GraphReader:
    """Typed reads over one connection; see MemoryGraph for the public face."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        cache_size: int = 10_000,
        *,
        kind_of: KindOf | None = None,
    ) -> None:
        self.con = con
        self._kind_of = kind_of  # from the log, when the graph has one: `_load_node`
        self._nodes: _LRU[uuid.UUID, n.Node] = _LRU(cache_size)
        self._windows: _LRU[tuple[uuid.UUID, int], list[n.Turn]] = _LRU(1_000)
        self._walks: _LRU[tuple[Any, ...], list[Hop]] = _LRU(1_000)

    # -- cache upkeep -------------------------------------------------------------------------

    def forget(self, batch: Batch) -> None:
        """Drop cached answers the batch may have changed: any naming an id it touched.
        With nothing cached (the service's graph, which never reads), nothing is asked."""
        if not (len(self._nodes) or len(self._windows) or len(self._walks)):
            return
        touched = batch.touched
        if touched is None:
            self.clear()
            return
        if touched:
            self._walks.clear()  # a new edge may lengthen any walk: no finer rule is safe
        self._nodes.drop(touched)
        if reassigned := batch.reassigned:  # their responses' `agent_id` changed with them,
            # and their tool calls': a call names only its response, which may not be cached,
            # so every cached call goes (only after a batch that assigns prompts)
            self._nodes.drop(
                [
                    v.id
                    for v in self._nodes.values()
                    if isinstance(v, n.ToolInvocation)
                    or (isinstance(v, n.Response) and v.prompt_id in reassigned)
                ]
            )
        stale = [key for key in self._windows if key[0] in touched]
        self._windows.drop(stale)

    def clear(self) -> None:
        self._nodes.clear()
        self._windows.clear()
        self._walks.clear()

    # -- nodes and edges ----------------------------------------------------------------------

    def _rows(
        self, sql: str, params: Sequence[Any] = ()
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        cursor = self.con.execute(sql, list(params))
        rows = cursor.fetchall()
        names = [d[0] for d in cursor.description or ()]
        return names, rows

    def _structs(
        self, cls: type[msgspec.Struct], sql: str, params: Sequence[Any] = ()
    ) -> list[Any]:
        names, rows = self._rows(sql, params)
        return [n.from_row(cls, names, row) for row in rows]

    def get_node(self, node_id: uuid.UUID, *, include_deleted: bool = False) -> n.Node | None:
        """The node with this id (any kind), or None. Deleted nodes are None unless asked for."""
        _check_id(node_id)
        node = self._nodes.get(node_id)
        if node is None:
            node = self._load_node(node_id)
            if node is None:
                return None
            self._nodes.put(node_id, node)
        return node if include_deleted or node.deleted_ts is None else None

    def _load_node(self, node_id: uuid.UUID) -> n.Node | None:
        """One statement on one table when the log knows the id's kind (an id never changes
        kind, so this holds at any fold position: a row not folded yet is not found), else
        the probe of every node table, then the row. An id the log does not know may still
        be in the tables (appended by another process), so it is looked for everywhere."""
        known, table = self._hint(node_id)
        if not known:
            table = self._table_of(node_id)
        return None if table is None else self._load_from(table, node_id)

    def _hint(self, node_id: uuid.UUID) -> tuple[bool, str | None]:
        """(True, the table of the id's kind) when the log knows the id (None for an edge,
        which is in no node table); (False, None) when it does not."""
        kind = None if self._kind_of is None else self._kind_of(node_id)
        if kind is None or kind not in _TABLE_OF_KIND:
            return False, None
        return True, _TABLE_OF_KIND[kind]

    def _table_of(self, node_id: uuid.UUID, *, live: bool = False) -> str | None:
        """The table holding the id (with `live`, only a live node's), in one probe of each
        node table's key. Two statements (this, then the row) cost less than one that
        fetches the row from whichever table has it: DuckDB plans and fetches every
        table's columns for that (`UNION ALL BY NAME`, or a row as JSON, measured)."""
        union = " UNION ALL ".join(
            f"SELECT {i} FROM {table} WHERE id = {_sql(node_id)}"
            + (f" AND deleted_ts IS NULL{_current(table)}" if live else "")
            for i, (table, _) in enumerate(_NODE_TABLES)
        )
        found = self.con.execute(f"{union} LIMIT 1").fetchall()
        return _NODE_TABLES[found[0][0]][0] if found else None

    def _load_from(self, table: str, node_id: uuid.UUID) -> n.Node | None:
        sql = f"SELECT * FROM {table} WHERE id = {_sql(node_id)}{_current(table)}"
        nodes = self._structs(_CLASS_OF_TABLE[table], sql)
        return nodes[0] if nodes else None

    def get_nodes_batch(self, ids: Sequence[uuid.UUID]) -> list[n.Node | None]:
        return [self.get_node(i) for i in ids]

    def get_edge(self, edge_id: uuid.UUID) -> n.Edge | None:
        _check_id(edge_id)
        edges = self._structs(
            n.Edge, f"SELECT * FROM edges WHERE id = {_sql(edge_id)} AND deleted_ts IS NULL"
        )
        return edges[0] if edges else None

    def edges(
        self, node_id: uuid.UUID, direction: str, edge_type: str | None = None
    ) -> list[n.Edge]:
        _check_id(node_id)
        _check_edge_type(edge_type)
        column = "from_id" if direction == "out" else "to_id"
        typed = "" if edge_type is None else " AND edge_type = $1"
        params: list[Any] = [] if edge_type is None else [edge_type]
        return self._structs(
            n.Edge,
            f"SELECT * FROM edges WHERE {column} = {_sql(node_id)} AND deleted_ts IS NULL"
            f"{typed} ORDER BY lsn, edge_type, id",
            params,
        )

    # -- sessions and templates ---------------------------------------------------------------

    def get_session(self, session_id: uuid.UUID) -> n.Session:
        """The live session; read from `sessions` alone, as `get_node` would find it there
        (no probe of the other tables: a context window's first statement)."""
        _check_id(session_id)
        node = self._nodes.get(session_id)
        if node is None:
            node = self._load_from("sessions", session_id)
            if node is not None:
                self._nodes.put(session_id, node)
        if not isinstance(node, n.Session) or node.deleted_ts is not None:
            raise NotFound(f"no session {session_id}")
        return node

    def get_session_nodes(self, session_id: uuid.UUID) -> list[n.Node]:
        """The session itself, then every live prompt, response, tool call and generic node
        of it, in log order (as the original crate's `get_session_nodes` returns them)."""
        session = self.get_session(session_id)
        found: list[tuple[int, n.Node]] = []
        for table, cls in _NODE_TABLES:
            if table in ("sessions", "agents", "templates"):
                continue
            for node in self._structs(
                cls,
                f"SELECT * FROM {table} WHERE session_id = {_sql(session_id)} "
                "AND deleted_ts IS NULL",
            ):
                found.append((node.lsn, node))
        return [session, *(node for _, node in sorted(found, key=lambda pair: pair[0]))]

    def get_template(self, template_id: uuid.UUID, version: int | None = None) -> n.Template:
        _check_id(template_id)
        _check_version(version)
        which = "is_current" if version is None else "version = $1"
        params: list[Any] = [] if version is None else [version]
        found = self._structs(
            n.Template,
            f"SELECT * FROM templates WHERE id = {_sql(template_id)} AND {which} "
            "AND deleted_ts IS NULL",
            params,
        )
        if not found:
            at = "" if version is None else f" at version {version}"
            raise NotFound(f"no template {template_id}{at}")
        return found[0]  # type: ignore[no-any-return]

    # -- conversations ------------------------------------------------------------------------

    def conversation_thread(self, session_id: uuid.UUID) -> list[n.Turn]:
        """Every turn of a session, oldest first. A fork starts with its parent's turns up to
        the fork point (and so on up, for a fork of a fork)."""
        return self._history(self.get_session(session_id), None, None)

    def context_window(self, session_id: uuid.UUID, turns: int = 10) -> list[n.Turn]:
        """The last `turns` prompt-and-responses pairs of a session (a fork's inherited turns
        included), oldest first."""
        _check_positive(turns, "turns")
        cached = self._windows.get((session_id, turns))
        if cached is not None:
            return list(cached)  # a copy: the caller may reorder or trim it
        session = self.get_session(session_id)
        window = self._history(session, turns, None)
        if session.parent_session_id is None:  # a fork's inherited turns change unnamed
            self._windows.put((session_id, turns), window)
        return list(window)

    def _history(self, session: n.Session, last: int | None, upto: int | None) -> list[n.Turn]:
        """The session's turns up to LSN `upto` (None: all), its parent's before them.

        A session's `prompt_count` is the number of its live prompts, so when it is at most
        `last` every one of them is in the window, and the statement that finds the window's
        first LSN is not needed (one statement of a cold window's three). The turns are
        trimmed to `last` either way, so an answer never rests on the count."""
        bounded = last is not None and session.prompt_count > last
        own = self._turns(session.id, last if bounded else None, upto)
        if last is not None:
            own = own[-last:]
        if session.parent_session_id is None or (last is not None and len(own) >= last):
            return own
        parent = self.get_node(session.parent_session_id, include_deleted=True)
        if not isinstance(parent, n.Session):
            return own
        point = None if session.fork_point is None else self.get_node(session.fork_point)
        cut = session.lsn - 1 if point is None else point.lsn  # None: all it had at the fork
        need = None if last is None else last - len(own)
        return [*self._history(parent, need, cut), *own]

    def _turns(self, session_id: uuid.UUID, last: int | None, upto: int | None) -> list[n.Turn]:
        """The session's last `last` turns (None: all) up to LSN `upto`, in two statements:
        the window's first LSN from the narrow `(session_id, lsn)` columns, then its prompts
        and responses together. Both are bounded by literals, so zone maps prune row groups;
        an `ORDER BY lsn DESC LIMIT` over whole rows would instead be planned as a Top-N
        that joins back on `rowid` and reads every column of a whole row group."""
        live = f"session_id = {_sql(session_id)} AND deleted_ts IS NULL"
        if upto is not None:
            live += f" AND lsn <= {int(upto)}"
        if last is not None:
            found = self.con.execute(
                f"SELECT lsn FROM prompts WHERE {live} ORDER BY lsn DESC LIMIT {int(last)}"
            ).fetchall()
            if not found:
                return []
            live += f" AND lsn >= {int(found[-1][0])}"
        names, rows = self._rows(
            f"{_TURN_PROMPTS} WHERE {live} UNION ALL {_TURN_RESPONSES} WHERE {live}"
        )
        at = names.index("lsn")  # sorted here: DuckDB's sort of these wide rows costs more
        prompts: list[n.Prompt] = []
        responses: list[n.Response] = []
        for row in sorted(rows, key=lambda row: row[at]):  # column 0: which table it is from
            if row[0] == 0:
                prompts.append(n.from_row(n.Prompt, names[1:], row[1:]))
            else:
                responses.append(n.from_row(n.Response, names[1:], row[1:]))
        by_prompt: dict[uuid.UUID, list[n.Response]] = {p.id: [] for p in prompts}
        for r in responses:
            if r.prompt_id in by_prompt:  # (a later response to an earlier prompt: not a turn here)
                by_prompt[r.prompt_id].append(r)
        return [n.Turn(p, by_prompt[p.id]) for p in prompts]

    # -- lineage ------------------------------------------------------------------------------

    def ancestors(
        self, node_id: uuid.UUID, depth: int = 5, edge_types: Sequence[str] | None = None
    ) -> list[Hop]:
        """What a node derives from, breadth first, up to `depth` edges away."""
        return self._walk(node_id, depth, edge_types, up=True)

    def descendants(
        self, node_id: uuid.UUID, depth: int = 5, edge_types: Sequence[str] | None = None
    ) -> list[Hop]:
        """What derives from a node, breadth first, up to `depth` edges away."""
        return self._walk(node_id, depth, edge_types, up=False)

    def _walk(
        self, start: uuid.UUID, depth: int, edge_types: Sequence[str] | None, *, up: bool
    ) -> list[Hop]:
        _check_id(start)
        _check_positive(depth, "depth")
        types = None if edge_types is None else [str(t) for t in edge_types]
        key = (start, depth, None if types is None else tuple(types), up)
        cached = self._walks.get(key)
        if cached is None:
            cached = self._walk_uncached(start, depth, types, up=up)
            self._walks.put(key, cached)
        return list(cached)

    def _walk_uncached(
        self, start: uuid.UUID, depth: int, types: list[str] | None, *, up: bool
    ) -> list[Hop]:
        seen = {start}
        first = self._nodes.get(start)  # only its table matters: a cold walk asks only that
        if first is not None:
            table = None if first.deleted_ts is not None else TABLE_OF_TYPE[_type_of(first)][0]
        else:  # the log's hint, else a probe of the live rows. The table decides only whether
            # INVOKES edges are followed the other way (`_edges_at`), and a deleted node has
            # no live INVOKES edge (its tombstone deleted them; none may be added after), so
            # the hint, which does not say whether a node was deleted, answers the same.
            known, table = self._hint(start)
            if not known:
                table = self._table_of(start, live=True)
        frontier: list[tuple[uuid.UUID, str | None]] = [(start, table)]
        hints = _UP_HINTS if up else _DOWN_HINTS
        reached: list[tuple[int, uuid.UUID, n.Edge]] = []
        for level in range(1, depth + 1):
            if not frontier:
                break
            edges = self._edges_at(frontier, up=up, types=types)
            frontier = []
            for edge in edges:
                target = edge.to_id if (edge.edge_type != _REVERSED) == up else edge.from_id
                if target not in seen:
                    seen.add(target)
                    frontier.append((target, hints.get(edge.edge_type)))
                    reached.append((level, target, edge))
        # Tombstones took their edges out of the live graph, so no walk reaches or crosses a
        # deleted node; the nodes are loaded once, at the end, one query per table.
        tables = {target: hints.get(edge.edge_type) for _level, target, edge in reached}
        nodes = self._nodes_of(tables)
        return [
            Hop(level, target, edge, nodes.get(target))
            for level, target, edge in reached
            if target not in nodes or nodes[target].deleted_ts is None  # FOLLOWS to a deleted
        ]

    def _edges_at(
        self,
        frontier: list[tuple[uuid.UUID, str | None]],
        *,
        up: bool,
        types: list[str] | None,
    ) -> list[n.Edge]:
        """Live edges leaving the frontier in the walk's direction, in one round trip.

        One branch per run of ids made close together (`_matching`): DuckDB prunes each by
        the column's min/max zone maps, which a join or a bare IN list would not, so a
        lookup reads a row group or two instead of the whole table. INVOKES runs the other
        way, so only a tool call (going up) or a response (going down), or a node of unknown
        kind, is looked for on the far side: for an old node such as an agent, that column's
        zone maps prune nothing."""
        near, far = ("from_id", "to_id") if up else ("to_id", "from_id")
        invoked = "tool_invocations" if up else "responses"
        typed = "" if types is None else " AND list_contains($1, edge_type)"
        sides = [(near, "<>", [node_id for node_id, _ in frontier])]
        sides.append(
            (far, "=", [node_id for node_id, table in frontier if table in (None, invoked)])
        )
        sql = " UNION ALL ".join(  # not ORDER BY: sorted here, for less (see `_turns`)
            f"SELECT * FROM edges WHERE {match} AND edge_type {op} '{_REVERSED}' "
            f"AND deleted_ts IS NULL{typed}"
            for column, op, ids in sides
            for match in _matching(column, ids)
        )
        return sorted(self._structs(n.Edge, sql, [] if types is None else [types]), key=_position)

    def _nodes_of(self, wanted: dict[uuid.UUID, str | None]) -> dict[uuid.UUID, n.Node]:
        """Nodes by id, cached or loaded, one query per table; `wanted` maps each id to the
        table it is known to be in (from the edge type), or None if unknown."""
        found: dict[uuid.UUID, n.Node] = {}
        by_table: dict[str, list[uuid.UUID]] = {}
        for node_id, table in wanted.items():
            cached = self._nodes.get(node_id)
            if cached is not None:
                found[node_id] = cached
            elif table is None:
                if (node := self.get_node(node_id, include_deleted=True)) is not None:
                    found[node_id] = node
            else:
                by_table.setdefault(table, []).append(node_id)
        for table, ids in by_table.items():
            cls = _CLASS_OF_TABLE[table]
            sql = " UNION ALL ".join(
                f"SELECT * FROM {table} WHERE {match}{_current(table)}"
                for match in _matching("id", ids)
            )
            for node in self._structs(cls, sql):
                self._nodes.put(node.id, node)
                found[node.id] = node
        # An edge type names the table its implicit edges reach, but a custom edge of a
        # built-in type (`add_edge(agent, prompt, "PART_OF")`) may reach any node: one not in
        # that table is looked for as `get_node` does. Else the answer (node None, or the
        # node) would depend on whether it happened to be cached.
        for ids in by_table.values():
            for node_id in ids:
                if node_id in found:
                    continue
                if (node := self.get_node(node_id, include_deleted=True)) is not None:
                    found[node_id] = node
        return found

    def template_impact(self, template_id: uuid.UUID) -> Impact:
        """Every live prompt, response and tool call made from a template or its descendants."""
        self.get_template(template_id)
        rows = self.con.execute(
            "SELECT node_kind, list(node_id ORDER BY lsn) FROM lineage "
            "WHERE deleted_ts IS NULL "
            "AND (template_id = $1 OR list_contains(template_ancestors, $1)) "
            "GROUP BY node_kind",
            [template_id],
        ).fetchall()
        kinds: dict[str, list[uuid.UUID]] = {kind: ids for kind, ids in rows}
        templates = self.con.execute(
            "SELECT list(DISTINCT id) FROM templates WHERE deleted_ts IS NULL "
            "AND (id = $1 OR list_contains(ancestors, $1))",
            [template_id],
        ).fetchall()[0][0]
        return Impact(
            template_id,
            sorted(templates or []),
            kinds.get("prompt", []),
            kinds.get("response", []),
            kinds.get("tool_invocation", []),
        )


def _current(table: str) -> str:
    """The filter that picks a template's current version (its row as a node)."""
    return " AND is_current" if table == "templates" else ""


def _sql(value: uuid.UUID) -> str:
    """A UUID as a SQL literal. Literals, unlike parameters, reach DuckDB's planner, which
    prunes row groups by their zone maps (UUIDv7 ids grow with time): about twice as fast
    on a large table. A `uuid.UUID` formats as hex and dashes only, so it is safe inline."""
    return f"'{uuid.UUID(int=value.int)}'"


NEAR_MS = 1_000
"""Ids made within this many milliseconds of the first of a run are looked up by one scan."""


def _matching(column: str, ids: Iterable[uuid.UUID]) -> list[str]:
    """Conditions on `column`, one per scan, that together match exactly `ids`. A UUIDv7
    begins with the millisecond it was made, and rows go in by LSN, so the ids of a run made
    within `NEAR_MS` of each other lie in a few segments of the table: they share one scan,
    `BETWEEN` the first and the last (which zone maps prune; an IN list alone is not) `AND
    IN` the run. Each scan costs DuckDB about as much to plan and start as it saves to
    widen, so fewer is cheaper (docs/benchmarks.md). Any other id is a scan of its own."""
    runs: list[list[uuid.UUID]] = []
    for node_id in sorted(set(ids)):
        ms = node_id.int >> 80
        last = runs[-1][0] if runs else None
        if (
            node_id.version == 7
            and last is not None
            and last.version == 7
            and ms - (last.int >> 80) <= NEAR_MS
        ):
            runs[-1].append(node_id)
        else:
            runs.append([node_id])
    return [
        f"{column} = {_sql(run[0])}"
        if len(run) == 1
        else f"{column} BETWEEN {_sql(run[0])} AND {_sql(run[-1])} "
        f"AND {column} IN ({', '.join(_sql(i) for i in run)})"
        for run in runs
    ]


def _position(edge: n.Edge) -> tuple[int, str, uuid.UUID]:
    """`ORDER BY lsn, edge_type, id`: a UUID orders by its bytes in DuckDB and in Python."""
    return edge.lsn, edge.edge_type, edge.id


def _type_of(node: n.Node) -> str:
    return str(node.__struct_config__.tag)


def _check_id(value: object) -> None:
    if not isinstance(value, uuid.UUID):
        raise BadArgument(f"an id must be a uuid.UUID, not {type(value).__name__}")


def _check_positive(value: object, name: str) -> None:
    """`turns` and `depth`: checked here and by the client (`_remote`) alike."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BadArgument(f"{name} must be a positive int, got {value!r}")


def _check_edge_type(value: object) -> None:
    """An edge type to match is a str (or None: any); DuckDB would cast a number to compare."""
    if value is not None and not isinstance(value, str):
        raise BadArgument(f"an edge type must be a str, not {type(value).__name__}")


def _check_version(value: object) -> None:
    """A template version is an int64 (or None: the current one); True is no version 1."""
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise BadArgument(f"version must be an int, not {type(value).__name__}")
    if value is not None and not -(2**63) <= value < 2**63:
        raise BadArgument(f"version must be an int64, got {value!r}")
