"""The graph projection: `edges` (every typed edge), `nodes` (generic nodes) and `lineage`.

Edges the log implies (PART_OF from a prompt to its session, FOLLOWS, RESPONDS_TO, INVOKES,
INSTANTIATES from a prompt's own template, INHERITS) get a deterministic id
(`implicit_edge_id`); edges the log names (HANDLED_BY, TRANSFERS_TO, a link to a template,
custom edges) keep the event's id.

A tombstone marks the node's edges deleted too (``deleted_ts``), so the live graph
(``deleted_ts IS NULL``) never leads through a deleted node.

`lineage` has one row per prompt, response and tool call, naming what it derives from: its
session, prompt, parent prompt, response, template version and that template's ancestors.
A later link of a prompt to a template rewrites the template columns of the prompt and of
everything derived from it.
"""

from __future__ import annotations

import duckdb

from eventlog import events as ev

from ._fold import Batch, implicit_edge_id, implicit_edge_sql
from ._stage import Staged
from ._table import Column, Table

__all__ = ["EDGES", "LINEAGE", "NODES", "Graph"]

_COMMON = (
    Column("session_id", "UUID"),
    Column("lsn", "BIGINT", "NOT NULL"),
    Column("ts", "BIGINT", "NOT NULL"),
    Column("occurred_at", "BIGINT"),
    Column("actor", "VARCHAR"),
    Column("deleted_ts", "BIGINT"),
)

# A lineage walk looks edges up by `from_id` (ancestors) or `to_id` (descendants) and returns
# whole rows; DuckDB decodes a whole vector of 2,048 values of each column to return one. Its
# default encodings of these three (run-length or bit-packed UUIDs, dictionary and FSST for
# the JSON) are the dearest to decode: stored plain, a cold walk's statement costs about half
# the CPU, for about 9% more file at a million events (docs/benchmarks.md).
_PLAIN = "USING COMPRESSION uncompressed"

EDGES = Table(
    "edges",
    [
        Column("id", "UUID", "NOT NULL"),
        Column("edge_type", "VARCHAR", "NOT NULL"),
        Column("from_id", "UUID", f"NOT NULL {_PLAIN}"),
        Column("to_id", "UUID", f"NOT NULL {_PLAIN}"),
        Column("properties", "JSON", _PLAIN),
        *_COMMON,
    ],
    ["id"],
    indexed=False,  # a million edges: an index would cost more memory and time than it saves
)

NODES = Table(
    "nodes",
    [
        Column("id", "UUID", "NOT NULL"),
        Column("kind", "VARCHAR", "NOT NULL"),
        Column("content", "VARCHAR"),
        Column("data", "JSON"),
        *_COMMON,
    ],
    ["id"],
    indexed=False,  # see `Table`: unique by the log, found by zone maps
)

LINEAGE = Table(
    "lineage",
    [
        Column("node_id", "UUID", "NOT NULL"),
        Column("node_kind", "VARCHAR", "NOT NULL"),
        Column("session_id", "UUID"),
        Column("prompt_id", "UUID"),
        Column("parent_prompt_id", "UUID"),
        Column("response_id", "UUID"),
        Column("template_id", "UUID"),
        Column("template_version", "BIGINT"),
        Column("template_ancestors", "UUID[]"),
        Column("lsn", "BIGINT", "NOT NULL"),
        Column("deleted_ts", "BIGINT"),
    ],
    ["node_id"],
    indexed=False,  # read by scans and hash joins, never by point lookups
)

_EDGE_SOURCES = {  # stage -> SELECT of edges rows (id, type, from, to, properties, session, ...)
    "prompts": (
        f"SELECT {implicit_edge_sql('INSTANTIATES', 'id', 'template_id')}, 'INSTANTIATES', id, "
        "template_id, instantiates, session_id, lsn, ts, occurred_at, actor, NULL "
        "FROM stage_prompts WHERE template_id IS NOT NULL"
    ),
    "responses": (
        f"SELECT {implicit_edge_sql('RESPONDS_TO', 'id', 'prompt_id')}, 'RESPONDS_TO', id, "
        "prompt_id, responds, session_id, lsn, ts, occurred_at, actor, NULL FROM stage_responses"
    ),
    "tools": (
        f"SELECT {implicit_edge_sql('INVOKES', 'response_id', 'id')}, 'INVOKES', response_id, "
        "id, invokes, session_id, lsn, ts, occurred_at, actor, NULL FROM stage_tools"
    ),
    "assigned": (
        "SELECT id, 'HANDLED_BY', prompt_id, agent_id, NULL, session_id, lsn, ts, occurred_at, "
        "actor, NULL FROM stage_assigned"
    ),
    "handoffs": (
        "SELECT id, 'TRANSFERS_TO', response_id, to_agent_id, properties, session_id, lsn, ts, "
        "occurred_at, actor, NULL FROM stage_handoffs"
    ),
    "linked": (
        "SELECT id, 'INSTANTIATES', prompt_id, template_id, properties, session_id, lsn, ts, "
        "occurred_at, actor, NULL FROM stage_linked"
    ),
    "edges": (
        "SELECT id, edge_type, from_id, to_id, properties, session_id, lsn, ts, occurred_at, "
        "actor, NULL FROM stage_edges"
    ),
}

_PART_OF = (  # a prompt belongs to its session, as in the original crate's data model
    f"SELECT {implicit_edge_sql('PART_OF', 'id', 'session_id')}, 'PART_OF', id, session_id, "
    "NULL, session_id, lsn, ts, occurred_at, actor, NULL FROM stage_prompts"
)

_FOLLOWS = (  # from the prompts just inserted, which know the prompt before them
    f"SELECT {implicit_edge_sql('FOLLOWS', 'p.id', 'p.previous_prompt_id')}, 'FOLLOWS', p.id, "
    "p.previous_prompt_id, NULL, p.session_id, p.lsn, p.ts, p.occurred_at, p.actor, NULL "
    "FROM prompts p JOIN stage_prompts s ON s.id = p.id WHERE p.previous_prompt_id IS NOT NULL"
)

# The lineage of a batch's prompts, responses and tool calls, in one statement: each part is
# a CTE, and a response finds its prompt's row (a tool call its response's) among the rows of
# earlier batches or the part before it. stage -> (CTE, SELECT, (column naming the parent,
# the parents' CTE)).
_LINEAGE = {
    "prompts": (
        "new_prompts",
        """SELECT p.id AS node_id, 'prompt' AS node_kind, p.session_id, NULL::UUID AS prompt_id,
               p.parent_prompt_id, NULL::UUID AS response_id, p.template_id, p.template_version,
               CASE WHEN p.template_id IS NOT NULL THEN coalesce(t.ancestors, []) END
                   AS template_ancestors, p.lsn
        FROM stage_prompts p LEFT JOIN templates t ON t.id = p.template_id AND t.is_current""",
        None,
    ),
    "responses": (
        "new_responses",
        """SELECT r.id AS node_id, 'response' AS node_kind, l.session_id, r.prompt_id,
               NULL::UUID AS parent_prompt_id, NULL::UUID AS response_id, l.template_id,
               l.template_version, l.template_ancestors, r.lsn
        FROM stage_responses r JOIN ({known}) l ON l.node_id = r.prompt_id""",
        ("prompt_id", "new_prompts"),
    ),
    "tools": (
        "new_tools",
        """SELECT t.id AS node_id, 'tool_invocation' AS node_kind, l.session_id, l.prompt_id,
               NULL::UUID AS parent_prompt_id, t.response_id, l.template_id,
               l.template_version, l.template_ancestors, t.lsn
        FROM stage_tools t JOIN ({known}) l ON l.node_id = t.response_id""",
        ("response_id", "new_responses"),
    ),
}
_KNOWN = "node_id, session_id, prompt_id, template_id, template_version, template_ancestors"


def _lineage_sql(staged: Staged) -> str | None:
    """One ``INSERT`` of the lineage rows of the batch (None: it has none), in the order of
    one statement per part: prompts, responses, tool calls, each by LSN."""
    ctes: list[str] = []
    names: list[str] = []
    for stage, (name, template, parent) in _LINEAGE.items():
        if stage not in staged:
            continue
        select = template
        if parent is not None:
            column, parents = parent
            known = f"SELECT {_KNOWN} FROM lineage WHERE node_id IN "
            known += f"(SELECT {column} FROM stage_{stage})"
            if parents in names:
                known += f" UNION ALL SELECT {_KNOWN} FROM {parents}"
            select = template.format(known=known)
        ctes.append(f"{name} AS ({select})")
        names.append(name)
    if not ctes:
        return None
    parts = " UNION ALL ".join(f"SELECT *, {i} AS part FROM {n}" for i, n in enumerate(names))
    columns = ", ".join(c for c in LINEAGE.names if c != "deleted_ts")
    return (
        f"INSERT INTO lineage WITH {', '.join(ctes)} "
        f"SELECT {columns}, NULL FROM ({parts}) ORDER BY part, lsn"
    )


_RELINK = """
UPDATE lineage SET template_id = x.template_id, template_version = x.template_version,
                   template_ancestors = coalesce(x.ancestors, [])
FROM (
    SELECT l.prompt_id, l.template_id, l.template_version, t.ancestors
    FROM (SELECT * FROM stage_linked QUALIFY row_number() OVER (
            PARTITION BY prompt_id ORDER BY lsn DESC) = 1) l
    LEFT JOIN templates t ON t.id = l.template_id AND t.is_current
) x
WHERE lineage.{column} = x.prompt_id
"""


# An edge dies with its own tombstone, or with the first tombstone of an end it had then.
# (Only FOLLOWS can reach a deleted node later: a prompt follows the one added before it.)
_DELETE_EDGES = """
UPDATE edges SET deleted_ts = x.ts
FROM (
    SELECT edge_id, min(ts) AS ts FROM (
        SELECT e.id AS edge_id, d.ts FROM edges e JOIN stage_deleted d ON e.id = d.node_id
        UNION ALL
        SELECT e.id, d.ts FROM edges e JOIN stage_deleted d
            ON e.from_id = d.node_id AND e.lsn < d.lsn
        UNION ALL
        SELECT e.id, d.ts FROM edges e JOIN stage_deleted d
            ON e.to_id = d.node_id AND e.lsn < d.lsn
    ) WHERE edge_id IN (SELECT id FROM edges WHERE deleted_ts IS NULL) GROUP BY edge_id
) x
WHERE edges.id = x.edge_id AND edges.deleted_ts IS NULL
"""


class Graph:
    name = "graph"
    tables: tuple[Table, ...] = (EDGES, NODES, LINEAGE)
    views: tuple[str, ...] = ()
    wants: frozenset[type[ev.EventBase]] = frozenset()
    applies: frozenset[type[ev.EventBase]] = frozenset({ev.TemplateCreated})

    def want(self, batch: Batch, event: ev.EventBase) -> None:
        pass

    def apply(self, batch: Batch, lsn: int, event: ev.EventBase) -> None:
        if isinstance(event, ev.TemplateCreated) and event.parent_id is not None:
            edge_id = implicit_edge_id("INHERITS", event.id, event.parent_id)
            batch["edges"].add(
                [
                    edge_id,
                    "INHERITS",
                    event.id,
                    event.parent_id,
                    None,
                    None,
                    lsn,
                    event.ts,
                    event.occurred_at,
                    event.actor,
                    None,
                ]
            )

    def bulk(self, con: duckdb.DuckDBPyConnection, staged: Staged) -> None:
        if "nodes" in staged:
            con.execute(
                "INSERT INTO nodes SELECT id, kind, content, data, session_id, lsn, ts, "
                "occurred_at, actor, NULL FROM stage_nodes ORDER BY lsn"
            )
        sources = [sql for stage, sql in _EDGE_SOURCES.items() if stage in staged]
        if "prompts" in staged:
            sources += [_PART_OF, _FOLLOWS]
        if sources:
            union = " UNION ALL ".join(f"({sql})" for sql in sources)
            columns = ", ".join(EDGES.names)
            con.execute(
                f"INSERT INTO edges SELECT * FROM ({union}) AS u({columns}) ORDER BY lsn, edge_type"
            )
        lineage = _lineage_sql(staged)
        if lineage is not None:
            con.execute(lineage)
        if "linked" in staged:
            for column in ("node_id", "prompt_id"):
                con.execute(_RELINK.format(column=column))
        if "deleted" in staged:
            for table, key in (("nodes", "id"), ("lineage", "node_id")):
                con.execute(
                    f"UPDATE {table} SET deleted_ts = d.ts FROM stage_deleted d "
                    f"WHERE {table}.{key} = d.node_id"
                )
            con.execute(_DELETE_EDGES)
