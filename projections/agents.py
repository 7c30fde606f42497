"""The agents projection: `agents` (current definition and version), `handoffs`, and the
`agent_stats` view.

`agent_stats` is a view, not a table: its mean and p95 latency need every latency, which no
running total keeps, and a view over typed columns can never double-count. Responses and
tool calls carry their prompt's ``agent_id``, so it is a few GROUP BYs with no joins
(its time over a million events is in docs/benchmarks.md).
"""

from __future__ import annotations

import duckdb

from eventlog import events as ev

from ._fold import Batch
from ._stage import Staged
from ._table import RECORDED, Column, Table, json_text

__all__ = ["AGENTS", "AGENT_STATS", "HANDOFFS", "Agents"]

AGENTS = Table(
    "agents",
    [
        Column("id", "UUID", "NOT NULL"),
        *RECORDED,
        Column("name", "VARCHAR", "NOT NULL"),
        Column("role", "VARCHAR", "NOT NULL"),
        Column("capabilities", "VARCHAR[]"),
        Column("model", "VARCHAR"),
        Column("metadata", "JSON"),
        Column("version", "BIGINT", "NOT NULL"),
        Column("updated_ts", "BIGINT"),
        Column("deleted_ts", "BIGINT"),
    ],
    ["id"],
)

HANDOFFS = Table(
    "handoffs",
    [
        Column("id", "UUID", "NOT NULL"),
        Column("response_id", "UUID", "NOT NULL"),
        Column("from_agent_id", "UUID"),
        Column("to_agent_id", "UUID", "NOT NULL"),
        Column("reason", "VARCHAR"),
        Column("context_summary", "VARCHAR"),
        Column("session_id", "UUID"),
        *RECORDED,
        Column("deleted_ts", "BIGINT"),
    ],
    ["id"],
    indexed=False,  # see `Table`: unique by the log, found by zone maps
)

AGENT_STATS = """
CREATE OR REPLACE VIEW agent_stats AS
WITH by_prompt AS (
    SELECT agent_id, count(*) AS n, max(ts) AS last_ts FROM prompts
    WHERE agent_id IS NOT NULL AND deleted_ts IS NULL GROUP BY agent_id
), by_response AS (
    SELECT agent_id, count(*) AS n, sum(prompt_tokens)::BIGINT AS tokens_in,
           sum(completion_tokens)::BIGINT AS tokens_out, avg(latency_ms) AS mean_latency_ms,
           quantile_cont(latency_ms, 0.95) AS p95_latency_ms, max(ts) AS last_ts
    FROM responses WHERE agent_id IS NOT NULL AND deleted_ts IS NULL GROUP BY agent_id
), by_call AS (
    SELECT agent_id, count(*) AS n, count(*) FILTER (WHERE status = 'error') AS failures,
           max(ts) AS last_ts
    FROM tool_invocations WHERE agent_id IS NOT NULL AND deleted_ts IS NULL GROUP BY agent_id
), handoffs_in AS (
    SELECT to_agent_id AS agent_id, count(*) AS n, max(ts) AS last_ts
    FROM handoffs WHERE deleted_ts IS NULL GROUP BY to_agent_id
), handoffs_out AS (
    SELECT from_agent_id AS agent_id, count(*) AS n, max(ts) AS last_ts
    FROM handoffs WHERE deleted_ts IS NULL AND from_agent_id IS NOT NULL
    GROUP BY from_agent_id
)
SELECT a.id AS agent_id, a.name, a.role,
       coalesce(p.n, 0) AS prompts_handled,
       coalesce(r.n, 0) AS responses,
       coalesce(hi.n, 0) AS handoffs_in,
       coalesce(ho.n, 0) AS handoffs_out,
       coalesce(r.tokens_in, 0) AS tokens_in,
       coalesce(r.tokens_out, 0) AS tokens_out,
       r.mean_latency_ms,
       r.p95_latency_ms,
       coalesce(c.n, 0) AS tool_calls,
       coalesce(c.failures, 0) AS tool_failures,
       greatest(a.ts, a.updated_ts, p.last_ts, r.last_ts, c.last_ts, hi.last_ts, ho.last_ts)
           AS last_active_ts
FROM agents a
LEFT JOIN by_prompt p ON p.agent_id = a.id
LEFT JOIN by_response r ON r.agent_id = a.id
LEFT JOIN by_call c ON c.agent_id = a.id
LEFT JOIN handoffs_in hi ON hi.agent_id = a.id
LEFT JOIN handoffs_out ho ON ho.agent_id = a.id
WHERE a.deleted_ts IS NULL
"""

_A = AGENTS.index

_INSERT_HANDOFFS = """
INSERT INTO handoffs
SELECT id, response_id, from_agent_id, to_agent_id, reason, context_summary, session_id, lsn,
       ts, occurred_at, actor, NULL
FROM stage_handoffs ORDER BY lsn
"""


# A handoff dies with its own tombstone or with the response it followed, as its
# TRANSFERS_TO edge does; the first tombstone wins.
_DELETE_HANDOFFS = """
UPDATE handoffs SET deleted_ts = x.ts
FROM (
    SELECT h.id, min(d.ts) AS ts FROM handoffs h JOIN stage_deleted d
        ON d.node_id = h.id OR (d.node_id = h.response_id AND h.lsn < d.lsn)
    WHERE h.deleted_ts IS NULL GROUP BY h.id
) x
WHERE handoffs.id = x.id
"""


class Agents:
    name = "agents"
    tables: tuple[Table, ...] = (AGENTS, HANDOFFS)
    views = (AGENT_STATS,)
    wants: frozenset[type[ev.EventBase]] = frozenset({ev.AgentUpdated})
    applies: frozenset[type[ev.EventBase]] = frozenset({ev.AgentRegistered, ev.AgentUpdated})

    def want(self, batch: Batch, event: ev.EventBase) -> None:
        if isinstance(event, ev.AgentUpdated):
            batch["agents"].want("id", event.agent_id)

    def apply(self, batch: Batch, lsn: int, event: ev.EventBase) -> None:
        agents = batch["agents"]
        match event:
            case ev.AgentRegistered():
                agents.add(
                    [
                        event.id,
                        lsn,
                        event.ts,
                        event.occurred_at,
                        event.actor,
                        event.name,
                        event.role,
                        list(event.capabilities),
                        event.model,
                        json_text(event.metadata) if event.metadata else None,
                        1,
                        None,
                        None,
                    ]
                )
            case ev.AgentUpdated():
                a = agents.touch(event.agent_id)
                for field in ("name", "role", "model"):
                    if (value := getattr(event, field)) is not None:
                        a[_A[field]] = value
                if event.capabilities is not None:
                    a[_A["capabilities"]] = list(event.capabilities)
                if event.metadata is not None:
                    a[_A["metadata"]] = json_text(event.metadata) if event.metadata else None
                a[_A["version"]] += 1
                a[_A["updated_ts"]] = event.ts
            case _:
                pass

    def bulk(self, con: duckdb.DuckDBPyConnection, staged: Staged) -> None:
        if "handoffs" in staged:
            staged.refer("handoffs", "response_id", "responses")
            staged.refer("handoffs", "to_agent_id", "agents")
            con.execute(_INSERT_HANDOFFS)
        if "deleted" in staged:
            con.execute(
                "UPDATE agents SET deleted_ts = d.ts FROM stage_deleted d "
                "WHERE agents.id = d.node_id"
            )
            con.execute(_DELETE_HANDOFFS)
