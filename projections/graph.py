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

EDGES = Table(
    "edges",
    [
        Column("id", "UUID", "NOT NULL"),
        Column("edge_type", "VARCHAR", "NOT NULL"),
        Column("from_id", "UUID", "NOT NULL"),
        Column("to_id", "UUID", "NOT NULL"),
        Column("properties", "JSON"),
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

_LINEAGE = {
    "prompts": """
        SELECT p.id, 'prompt', p.session_id, NULL, p.parent_prompt_id, NULL, p.template_id,
               p.template_version,
               CASE WHEN p.template_id IS NOT NULL THEN coalesce(t.ancestors, []) END,
               p.lsn, NULL
        FROM stage_prompts p LEFT JOIN templates t ON t.id = p.template_id AND t.is_current
        ORDER BY p.lsn""",
    "responses": """
        SELECT r.id, 'response', l.session_id, r.prompt_id, NULL, NULL, l.template_id,
               l.template_version, l.template_ancestors, r.lsn, NULL
        FROM stage_responses r JOIN lineage l ON l.node_id = r.prompt_id ORDER BY r.lsn""",
    "tools": """
        SELECT t.id, 'tool_invocation', l.session_id, l.prompt_id, NULL, t.response_id,
               l.template_id, l.template_version, l.template_ancestors, t.lsn, NULL
        FROM stage_tools t JOIN lineage l ON l.node_id = t.response_id ORDER BY t.lsn""",
}

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
        for stage, sql in _LINEAGE.items():
            if stage in staged:
                con.execute(f"INSERT INTO lineage {sql}")
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
