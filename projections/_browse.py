"""What the web view shows, as JSON-ready dicts read from the projections on one cursor.

Each function runs the project's own SQL (no user text is ever spliced into it: filters are
bound parameters, sort columns come from a fixed map, LSNs and ids are the index's), so it
needs no sandbox, and works the same on the live database and on a replay view. The web
view's routes (`replay._web`) serve them; a script gets the same JSON from the same routes.
"""

from __future__ import annotations

import difflib
import uuid
from collections.abc import Sequence
from typing import Any

import duckdb
import msgspec

from ._reads import GraphReader, NotFound
from ._text_index import TextIndex
from .errors import BadArgument

__all__ = [
    "MAX_TURNS",
    "SORTS",
    "SessionFilter",
    "agents_view",
    "lineage",
    "session_view",
    "sessions_page",
    "template_diff",
    "templates_view",
]

SORTS = {
    "last_activity": "s.last_activity_ts",
    "started": "s.first_activity_ts",
    "turns": "s.prompt_count",
    "tokens": "(s.prompt_tokens + s.completion_tokens)",
    "latency": "x.latency_ms",
    "failures": "coalesce(x.failures, 0)",
}
"""The sortable columns of the sessions list, by the name a request gives."""

MAX_PAGE = 200
"""The most sessions one page of the list holds."""

MAX_TURNS = 5000
"""The most turns a session view holds (the first ones; ``"truncated": true`` says so)."""

MAX_SPANS = 2000
"""The most spans a session view holds (the earliest)."""

MAX_SEARCH = 200
"""The longest search text (characters)."""


class SessionFilter(msgspec.Struct, frozen=True, kw_only=True):
    """The sessions list's search, sort and page, as a request gives them."""

    q: str = ""  # in prompts, responses, session metadata, agent names and models
    user: str = ""  # sessions.metadata->>'user' (or 'user_id'), exactly
    agent: str = ""  # an agent's name that handled a prompt of the session
    model: str = ""  # a model that answered in the session
    since: int | None = None  # last activity at or after (ns)
    until: int | None = None  # last activity before (ns)
    sort: str = "last_activity"
    order: str = "desc"
    limit: int = 50
    offset: int = 0

    def __post_init__(self) -> None:
        if self.sort not in SORTS:
            raise BadArgument(f"sort must be one of {', '.join(SORTS)}")
        if self.order not in ("asc", "desc"):
            raise BadArgument("order must be asc or desc")
        if not 1 <= self.limit <= MAX_PAGE or self.offset < 0:
            raise BadArgument(f"limit must be 1..{MAX_PAGE} and offset >= 0")
        if len(self.q) > MAX_SEARCH:
            raise BadArgument(f"q must be at most {MAX_SEARCH} characters")


_JSON_COLUMNS = frozenset({"metadata", "parameters", "result", "variables"})


def _rows(
    cursor: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | dict[str, Any] = ()
) -> list[dict[str, Any]]:
    """The rows as dicts, JSON columns parsed (DuckDB hands them over as text)."""
    cursor.execute(sql, params if isinstance(params, dict) else list(params))
    names = [d[0] for d in cursor.description or ()]
    rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    for row in rows:
        for name in _JSON_COLUMNS.intersection(row):
            if isinstance(row[name], str):
                row[name] = msgspec.json.decode(row[name])
    return rows


_SORT_BY = {
    "latency": "SELECT session_id, avg(latency_ms) AS latency_ms FROM responses "
    "WHERE deleted_ts IS NULL GROUP BY session_id",
    "failures": "SELECT session_id, count(*) AS failures FROM tool_invocations "
    "WHERE deleted_ts IS NULL AND status = 'error' GROUP BY session_id",
}
"""The per-session aggregate a sort needs over every session (the others sort on columns)."""

_FILTERS = {
    "user": "AND coalesce(s.metadata->>'user', s.metadata->>'user_id') = $user",
    "agent": """AND s.id IN (SELECT session_id FROM prompts WHERE deleted_ts IS NULL
        AND agent_id IN (SELECT id FROM agents WHERE name = $agent))""",
    "model": """AND s.id IN (SELECT session_id FROM responses WHERE deleted_ts IS NULL
        AND model = $model)""",
    "since": "AND s.last_activity_ts >= $since",
    "until": "AND s.last_activity_ts < $until",
}
"""Each filter a request may give, as a clause on `sessions s` with its value bound."""


def _holds(text: str) -> str:
    """SQL: `text` holds the search's ``$q`` (see `_SEARCH`)."""
    return f"regexp_matches({text}, regexp_escape($q), 'i')"


_SEARCH = f"""
WITH c AS ({{ordered}} LIMIT $n OFFSET $lo)
SELECT c.id FROM c JOIN sessions m ON m.id = c.id
WHERE {_holds("m.metadata::VARCHAR")}
    OR c.id IN (SELECT session_id FROM prompts WHERE {{within}} deleted_ts IS NULL
                AND ({_holds("content")} OR agent_id IN
                     (SELECT id FROM agents WHERE {_holds("name")})))
    OR c.id IN (SELECT session_id FROM responses WHERE {{within}} deleted_ts IS NULL
                AND ({_holds("content")} OR {_holds("model")}))
ORDER BY c.k {{direction}} NULLS LAST, c.id
"""
"""The sessions of the list's order from `lo`, `n` of them, that hold `q`, in that order. With
`within`, only their prompts and responses are read (DuckDB fetches the content of the
rows whose ``session_id`` is among them, not the whole column); without, every row is (a
plain scan: cheaper once the step holds most sessions).

A text holds `q` when `q`, taken literally, is in it under Unicode case folding (RE2's, with
``'i'``). A search that few sessions hold reads every prompt's and response's text, and
decompressing and matching that text is nearly all it costs: RE2 folds case as it reads,
where ``contains(lower(text), ...)`` first writes a lowered copy of every text (20 to 40%
slower at a million events; docs/benchmarks.md, "The web view")."""

_WITHIN = "session_id IN (SELECT id FROM c) AND"

_FOUND = f"""
WITH c AS ({{ordered}}), t AS (
    {{rows}}
)
SELECT c.id FROM c JOIN sessions m ON m.id = c.id
WHERE {_holds("m.metadata::VARCHAR")}
    OR c.id IN (SELECT session_id FROM t)
    OR c.id IN (SELECT session_id FROM prompts WHERE deleted_ts IS NULL AND agent_id IN
                (SELECT id FROM agents WHERE {_holds("name")}))
    OR c.id IN (SELECT session_id FROM responses WHERE deleted_ts IS NULL
                AND {_holds("model")})
ORDER BY c.k {{direction}} NULLS LAST, c.id
"""
"""Every session of the list that holds `q`, in its order, reading the text of only some
`rows` (`_ROWS`): those the text index names and those beyond its watermark. Metadata, agent
names and models are matched in every session, as `_SEARCH` matches them (they are small)."""

_ROWS = f"""SELECT session_id FROM {{table}} WHERE {{which}} AND deleted_ts IS NULL
    AND {_holds("content")}"""
"""The sessions of some rows of `table` whose text holds `q`: the rows named by id (found by
their zone maps: the table declares no key), or those after an LSN (the blocks after it)."""

SEARCH_CHUNK = 256
"""The sessions a search looks through first, in the list's order (and at least in each
further step)."""

_DECORATE = """
WITH r AS (
    SELECT session_id, avg(latency_ms) AS latency_ms,
           list(DISTINCT model ORDER BY model) FILTER (WHERE model IS NOT NULL) AS models
    FROM responses WHERE deleted_ts IS NULL AND list_contains($ids, session_id) GROUP BY ALL
), f AS (
    SELECT session_id, count(*) AS failures FROM tool_invocations
    WHERE deleted_ts IS NULL AND status = 'error' AND list_contains($ids, session_id) GROUP BY ALL
), a AS (
    SELECT session_id, list(name ORDER BY first) AS agents FROM (
        SELECT p.session_id, g.name, min(p.lsn) AS first
        FROM prompts p JOIN agents g ON g.id = p.agent_id
        WHERE p.deleted_ts IS NULL AND list_contains($ids, p.session_id) GROUP BY ALL
    ) GROUP BY session_id
)
SELECT s.id, r.latency_ms, coalesce(f.failures, 0) AS tool_failures,
       coalesce(a.agents, []) AS agents, coalesce(r.models, []) AS models
FROM (SELECT unnest($ids) AS id) s
LEFT JOIN r ON r.session_id = s.id
LEFT JOIN f ON f.session_id = s.id
LEFT JOIN a ON a.session_id = s.id
"""


def sessions_page(
    cursor: duckdb.DuckDBPyConnection, f: SessionFilter, index: TextIndex | None = None
) -> dict[str, Any]:
    """One page of live sessions, filtered and sorted, with the count of all that match
    (``"exact": false`` when a search stopped early: then ``total`` is a lower bound).

    The page is chosen first, on the sessions table and its running totals (filters on other
    tables are semi-joins), and only its sessions are then aggregated over responses, tool
    calls and agents: at a million events, aggregating every session for each page would
    take most of a second. A search (`q`) reads content the same way, a page's worth at a
    time (`_search`), not every prompt and response; with the store's text `index`, text
    that few rows hold is looked up there, and only those rows are read."""
    sort_by = _SORT_BY.get(f.sort)
    order = f"ORDER BY {SORTS[f.sort]} {f.order} NULLS LAST, s.id"
    where = f"LEFT JOIN ({sort_by}) x ON x.session_id = s.id " if sort_by else ""
    where += "WHERE s.deleted_ts IS NULL "
    params: dict[str, Any] = {}
    given: dict[str, str | int | None] = {"user": f.user, "agent": f.agent, "model": f.model}
    given |= {"since": f.since, "until": f.until}
    for name, value in given.items():
        if value not in ("", None):
            where += _FILTERS[name] + " "
            params[name] = value
    sql = "SELECT s.id, s.first_activity_ts AS started_ts, s.last_activity_ts, "
    sql += "coalesce(s.metadata->>'user', s.metadata->>'user_id') AS \"user\", s.metadata, "
    sql += "s.tags, s.prompt_count AS turns, s.prompt_tokens + s.completion_tokens AS tokens, "
    sql += f"s.parent_session_id, count(*) OVER () AS total FROM sessions s {where}"
    exact = True
    if f.q:
        ids, total, exact = _search(cursor, f, where, order, params, index=index)
        sql += "AND list_contains($ids, s.id) "
        params = {**params, "ids": ids[f.offset : f.offset + f.limit]}
        rows = _rows(cursor, f"{sql}{order}", params)
    else:
        rows = _rows(
            cursor,
            f"{sql}{order} LIMIT $limit OFFSET $offset",
            params | {"limit": f.limit, "offset": f.offset},
        )
        total = rows[0]["total"] if rows else 0
    extra = _rows(cursor, _DECORATE, {"ids": [row["id"] for row in rows]}) if rows else []
    by_id = {row.pop("id"): row for row in extra}
    for row in rows:
        del row["total"]
        row.update(by_id[row["id"]])
    page = {"total": total, "exact": exact, "offset": f.offset, "limit": f.limit}
    return page | {"sessions": rows}


def _search(
    cursor: duckdb.DuckDBPyConnection,
    f: SessionFilter,
    where: str,
    order: str,
    params: dict[str, Any],
    *,
    index: TextIndex | None = None,
) -> tuple[list[Any], int, bool]:
    """The sessions that hold `f.q`, in the list's order, looked for in steps until one more
    than the page needs is found or every session was looked at: a common word costs a few
    hundred sessions' content, not a million events'. Each step is sized by the share of
    sessions that matched so far (a quarter more than that share predicts is needed), and
    takes all the rest when that is more than a third of it, or none matched: a step over a
    third of the sessions reads the content whole (picking the rows of that many costs
    more), so rare text costs about one plain scan, as it did before steps.
    Returns the ids found, how many (all, or the lower bound so far), and whether that
    count is all.

    When the text `index` names few rows that may hold `q` (`TextIndex.lookup`), every
    matching session is found at once by reading only those rows and the ones it does not
    hold yet (`_FOUND`); text that many rows hold goes by steps, which stop early."""
    ordered = f"SELECT s.id, {SORTS[f.sort]} AS k FROM sessions s {where} {order}"
    hits = index.lookup(f.q) if index is not None else None
    if hits is not None:
        watermark, named = hits
        which = [f"lsn > {int(watermark)}"]
        quoted = ", ".join(f"'{node}'" for node in named)  # uuid.UUID: hex and dashes only
        which += [f"id IN ({quoted})"] if named else []
        rows = [_ROWS.format(table=t, which=w) for t in ("prompts", "responses") for w in which]
        sql = _FOUND.format(ordered=ordered, rows=" UNION ALL ".join(rows), direction=f.order)
        ids = [row[0] for row in cursor.execute(sql, params | {"q": f.q}).fetchall()]
        return ids, len(ids), True
    (count,) = cursor.execute(f"SELECT count(*) FROM sessions s {where}", params).fetchone() or (0,)
    some, rest = (
        _SEARCH.format(ordered=ordered, within=w, direction=f.order) for w in (_WITHIN, "")
    )
    found: list[Any] = []
    want = f.offset + f.limit + 1
    lo, step = 0, SEARCH_CHUNK
    while lo < count and len(found) < want:
        chunk = params | {"q": f.q, "lo": lo, "n": step}
        sql = some if step * 3 < count else rest
        found += [row[0] for row in cursor.execute(sql, chunk).fetchall()]
        lo += step
        guess = (want - len(found)) * lo * 5 // (4 * len(found)) if found else count
        step = max(SEARCH_CHUNK, guess if guess * 3 < count - lo else count - lo)
    return found, len(found), lo >= count


def session_view(
    cursor: duckdb.DuckDBPyConnection,
    session_id: uuid.UUID,
    offset: int = 0,
    limit: int = MAX_TURNS,
) -> dict[str, Any]:
    """A session with `limit` of its turns from `offset`, in log order: each prompt with its
    responses, each response with its tool calls and the handoff after it; the agents named;
    with the first turns, the spans of its traces. ``"truncated": true`` says more follow.

    The page reads its turns in steps (a first screen, then the rest), so a long session is
    readable before all of it has arrived and been drawn."""
    if not 1 <= limit <= MAX_TURNS or offset < 0:
        raise BadArgument(f"limit must be 1..{MAX_TURNS} and offset >= 0")
    reader = GraphReader(cursor, cache_size=0)
    session = reader.get_session(session_id)  # NotFound: 404
    prompts = _rows(
        cursor,
        "SELECT id, lsn, ts, actor, content, model, agent_id, template_id, template_version, "
        "metadata FROM prompts WHERE session_id = $1 AND deleted_ts IS NULL ORDER BY lsn "
        "LIMIT $2 OFFSET $3",
        [session_id, limit + 1, offset],
    )
    truncated = len(prompts) > limit
    del prompts[limit:]
    of_prompts = [session_id, [p["id"] for p in prompts]]
    responses = _rows(
        cursor,
        "SELECT id, prompt_id, lsn, ts, content, model, agent_id, prompt_tokens, "
        "completion_tokens, total_tokens, latency_ms, finish_reason FROM responses "
        "WHERE session_id = $1 AND list_contains($2, prompt_id) AND deleted_ts IS NULL "
        "ORDER BY lsn",
        of_prompts,
    )
    of_responses = [session_id, [r["id"] for r in responses]]
    tools = _rows(
        cursor,
        "SELECT id, response_id, lsn, tool_name, parameters, status, result, error, "
        "duration_ms, retry_count FROM tool_invocations WHERE session_id = $1 "
        "AND list_contains($2, response_id) AND deleted_ts IS NULL ORDER BY lsn",
        of_responses,
    )
    handoffs = _rows(
        cursor,
        "SELECT id, response_id, lsn, from_agent_id, to_agent_id, reason, context_summary "
        "FROM handoffs WHERE session_id = $1 AND list_contains($2, response_id) "
        "AND deleted_ts IS NULL ORDER BY lsn",
        of_responses,
    )
    agents = {str(row["id"]): row["name"] for row in _rows(cursor, "SELECT id, name FROM agents")}
    by_response: dict[Any, dict[str, Any]] = {}
    by_prompt: dict[Any, list[dict[str, Any]]] = {}
    for response in responses:
        response.update(tools=[], handoffs=[])
        by_response[response["id"]] = response
        by_prompt.setdefault(response["prompt_id"], []).append(response)
    for item, key in [*((t, "tools") for t in tools), *((h, "handoffs") for h in handoffs)]:
        parent = by_response.get(item["response_id"])
        if parent is not None:  # a tombstone on a response leaves its tool calls live
            parent[key].append(item)
    turns = [{"prompt": p, "responses": by_prompt.get(p["id"], [])} for p in prompts]
    return {
        "session": session,
        "turns": turns,
        "offset": offset,
        "truncated": truncated,
        "agents": agents,
        "spans": _spans(cursor, session_id, session.metadata) if offset == 0 else [],
    }


def _spans(
    cursor: duckdb.DuckDBPyConnection, session_id: uuid.UUID, metadata: dict[str, Any]
) -> list[dict[str, Any]]:
    """The earliest spans of the traces the session's or its prompts' metadata name."""
    (traces,) = cursor.execute(
        "SELECT list(DISTINCT metadata->>'trace_id') FILTER (WHERE metadata->>'trace_id' "
        "IS NOT NULL) FROM prompts WHERE session_id = $1 AND deleted_ts IS NULL",
        [session_id],
    ).fetchone() or ([],)
    found = set(traces or []) | ({str(metadata["trace_id"])} if "trace_id" in metadata else set())
    if not found:
        return []
    return _rows(
        cursor,
        "SELECT trace_id, span_id, parent_span_id, name, kind, start_ns, end_ns, duration_ms, "
        "status, status_message FROM spans WHERE list_contains($1, trace_id) "
        f"ORDER BY start_ns, span_id LIMIT {MAX_SPANS}",
        [sorted(found)],
    )


def lineage(cursor: duckdb.DuckDBPyConnection, node_id: uuid.UUID, depth: int) -> dict[str, Any]:
    """A node with its ancestors and descendants up to `depth` edges away (the hops of
    `MemoryGraph.ancestors` and `descendants`)."""
    reader = GraphReader(cursor, cache_size=0)
    node = reader.get_node(node_id)
    if node is None:
        raise NotFound(f"no node {node_id}")
    return {
        "node": node,
        "ancestors": reader.ancestors(node_id, depth),
        "descendants": reader.descendants(node_id, depth),
    }


def agents_view(cursor: duckdb.DuckDBPyConnection, buckets: int = 24) -> dict[str, Any]:
    """`agent_stats`, and per agent a series over the store's time cut into `buckets` equal
    spans: responses, tokens, p95 latency and tool failures in each."""
    stats = _rows(cursor, "SELECT * FROM agent_stats ORDER BY name, agent_id")
    span = cursor.execute(
        "SELECT min(ts), max(ts) FROM responses WHERE deleted_ts IS NULL"
    ).fetchone()
    series: dict[str, list[dict[str, Any]]] = {}
    if span is not None and span[0] is not None:
        first, last = span
        width = max(1, (last - first + 1 + buckets - 1) // buckets)
        for row in _rows(
            cursor,
            """
            WITH t AS (SELECT agent_id, (ts - $first) // $width AS b, count(*) AS failures
                       FROM tool_invocations WHERE deleted_ts IS NULL AND status = 'error'
                       AND agent_id IS NOT NULL GROUP BY ALL)
            SELECT r.agent_id, (r.ts - $first) // $width AS b, count(*) AS responses,
                   sum(r.total_tokens) AS tokens,
                   quantile_cont(r.latency_ms, 0.95) AS p95_latency_ms,
                   any_value(coalesce(t.failures, 0)) AS failures
            FROM responses r LEFT JOIN t ON t.agent_id = r.agent_id
                 AND t.b = (r.ts - $first) // $width
            WHERE r.deleted_ts IS NULL AND r.agent_id IS NOT NULL
            GROUP BY ALL ORDER BY b
            """,
            {"first": first, "width": width},
        ):
            series.setdefault(str(row.pop("agent_id")), []).append(row)
        return {"agents": stats, "series": series, "first_ts": first, "bucket_ns": width}
    return {"agents": stats, "series": series, "first_ts": None, "bucket_ns": None}


def templates_view(cursor: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Every live template with its versions, oldest first, and how many prompts use each."""
    rows = _rows(
        cursor,
        """
        SELECT t.id, t.version, t.semver, t.name, t.text, t.description, t.tags, t.parent_id,
               t.is_current, t.ts, t.lsn,
               (SELECT count(*) FROM prompts p WHERE p.template_id = t.id
                AND p.template_version = t.version AND p.deleted_ts IS NULL) AS prompts
        FROM templates t WHERE t.deleted_ts IS NULL ORDER BY t.name, t.id, t.version
        """,
    )
    templates: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = templates.setdefault(
            str(row["id"]), {"id": row["id"], "name": row["name"], "versions": []}
        )
        entry["name"] = row["name"]
        entry["versions"].append(row)
    return {"templates": list(templates.values())}


def template_diff(
    cursor: duckdb.DuckDBPyConnection, template_id: uuid.UUID, old: int, new: int
) -> dict[str, Any]:
    """Two versions of a template side by side, and their line diff (difflib's unified)."""
    texts = dict(
        cursor.execute(
            "SELECT version, text FROM templates WHERE id = $1 AND list_contains($2, version) "
            "AND deleted_ts IS NULL",
            [template_id, [old, new]],
        ).fetchall()
    )
    for version in (old, new):
        if version not in texts:
            raise NotFound(f"no version {version} of template {template_id}")
    diff = difflib.unified_diff(
        texts[old].splitlines(), texts[new].splitlines(), f"v{old}", f"v{new}", lineterm=""
    )
    return {
        "old": {"version": old, "text": texts[old]},
        "new": {"version": new, "text": texts[new]},
        "diff": list(diff),
    }
