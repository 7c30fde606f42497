"""The tools projection: `tool_invocations`, one row per call, completed in place.

A call starts ``pending``; its completion sets ``success`` or ``error``, the result or error,
the duration and ``completed_ts``.
"""

from __future__ import annotations

import duckdb

from ._fold import SetsOnly, first_missing, insert_joined
from ._stage import Staged
from ._table import RECORDED, Column, Table

__all__ = ["TOOL_INVOCATIONS", "Tools"]

TOOL_INVOCATIONS = Table(
    "tool_invocations",
    [
        Column("id", "UUID", "NOT NULL"),
        Column("response_id", "UUID", "NOT NULL"),
        Column("session_id", "UUID"),  # column 2: conversations reads it on a tombstone
        *RECORDED,
        Column("tool_name", "VARCHAR", "NOT NULL"),
        Column("parameters", "JSON"),
        Column("status", "VARCHAR", "NOT NULL"),
        Column("result", "JSON"),
        Column("error", "VARCHAR"),
        Column("duration_ms", "DOUBLE"),
        Column("completed_ts", "BIGINT"),
        Column("agent_id", "UUID"),  # the agent of the prompt it answers, as responses have
        Column("deleted_ts", "BIGINT"),
    ],
    ["id"],
)

_INSERT = """
INSERT INTO tool_invocations
SELECT t.id, t.response_id, t.session_id, t.lsn, t.ts, t.occurred_at, t.actor, t.tool_name,
       t.parameters, 'pending', NULL, NULL, NULL, NULL, r.agent_id, NULL
FROM stage_tools t JOIN responses r ON r.id = t.response_id ORDER BY t.lsn
"""

_COMPLETE = """
UPDATE tool_invocations SET
    status = CASE WHEN c.error IS NULL THEN 'success' ELSE 'error' END,
    result = c.result, error = c.error, duration_ms = c.duration_ms, completed_ts = c.ts
FROM (SELECT * FROM stage_completed QUALIFY row_number() OVER (
        PARTITION BY tool_id ORDER BY lsn DESC) = 1) c
WHERE tool_invocations.id = c.tool_id
"""


class Tools(SetsOnly):
    name = "tools"
    tables: tuple[Table, ...] = (TOOL_INVOCATIONS,)
    views: tuple[str, ...] = ()

    def bulk(self, con: duckdb.DuckDBPyConnection, staged: Staged) -> None:
        if "tools" in staged:
            insert_joined(con, staged, "tools", _INSERT, ("response_id", "responses"))
        if "assigned" in staged:  # a prompt's new agent is its tool calls' agent too
            con.execute(
                "UPDATE tool_invocations SET agent_id = r.agent_id FROM responses r "
                "WHERE tool_invocations.response_id = r.id "
                "AND r.prompt_id IN (SELECT prompt_id FROM stage_assigned)"
            )
        if "completed" in staged:
            first_missing(con, staged, "completed", "tool_id", "tool_invocations")
            con.execute(_COMPLETE)
        if "deleted" in staged:
            con.execute(
                "UPDATE tool_invocations SET deleted_ts = d.ts FROM stage_deleted d "
                "WHERE tool_invocations.id = d.node_id"
            )
