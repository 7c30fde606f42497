"""The tools projection: `tool_invocations`, one row per call, completed in place.

A call starts ``pending``; its completion sets ``success`` or ``error``, the result or error,
the duration and ``completed_ts``. A retry (``tool.retried``) counts one more attempt in
``retry_count`` and makes the call ``pending`` again, keeping the last error until the next
completion; the last event of a call decides its status, however the log is cut into batches.
"""

from __future__ import annotations

import duckdb

from ._fold import SetsOnly, insert_joined
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
        Column("metadata", "JSON"),
        Column("retry_count", "BIGINT", "NOT NULL"),  # attempts are retry_count + 1
    ],
    ["id"],
    indexed=False,  # see `Table`: unique by the log, found by zone maps
)

_INSERT = """
INSERT INTO tool_invocations
SELECT t.id, t.response_id, t.session_id, t.lsn, t.ts, t.occurred_at, t.actor, t.tool_name,
       t.parameters, 'pending', NULL, NULL, NULL, NULL, r.agent_id, NULL, t.metadata, 0
FROM stage_tools t JOIN responses r ON r.id = t.response_id ORDER BY t.lsn
"""

# The same, with the batch's last completion of each call applied as it is inserted.
_INSERT_COMPLETED = """
INSERT INTO tool_invocations
SELECT t.id, t.response_id, t.session_id, t.lsn, t.ts, t.occurred_at, t.actor, t.tool_name,
       t.parameters,
       CASE WHEN c.tool_id IS NULL THEN 'pending' WHEN c.error IS NULL THEN 'success'
            ELSE 'error' END,
       c.result, c.error, c.duration_ms, c.ts, r.agent_id, NULL, t.metadata, 0
FROM stage_tools t JOIN responses r ON r.id = t.response_id
LEFT JOIN (SELECT * FROM stage_completed QUALIFY row_number() OVER (
        PARTITION BY tool_id ORDER BY lsn DESC) = 1) c ON c.tool_id = t.id
ORDER BY t.lsn
"""

_COMPLETE = """
UPDATE tool_invocations SET
    status = CASE WHEN c.error IS NULL THEN 'success' ELSE 'error' END,
    result = c.result, error = c.error, duration_ms = c.duration_ms, completed_ts = c.ts
FROM (SELECT * FROM stage_completed QUALIFY row_number() OVER (
        PARTITION BY tool_id ORDER BY lsn DESC) = 1) c
WHERE tool_invocations.id = c.tool_id
"""


# Retries after the batch's completions: a retry later than the call's last completion in the
# batch makes it pending again; every retry counts, and the last new parameters stand.
_RETRY = """
UPDATE tool_invocations SET
    retry_count = retry_count + x.n,
    parameters = coalesce(x.parameters, tool_invocations.parameters),
    status = CASE WHEN x.reopen THEN 'pending' ELSE tool_invocations.status END,
    result = CASE WHEN x.reopen THEN NULL ELSE tool_invocations.result END,
    error = coalesce(CASE WHEN x.reopen THEN x.error END, tool_invocations.error),
    duration_ms = CASE WHEN x.reopen THEN NULL ELSE tool_invocations.duration_ms END,
    completed_ts = CASE WHEN x.reopen THEN NULL ELSE tool_invocations.completed_ts END
FROM (
    SELECT r.tool_id, r.n, r.parameters, r.error, r.lsn > coalesce(c.lsn, -1) AS reopen
    FROM (SELECT tool_id, count(*) AS n, max(lsn) AS lsn, arg_max(error, lsn) AS error,
                 arg_max(parameters, lsn) FILTER (WHERE parameters IS NOT NULL) AS parameters
          FROM stage_retried GROUP BY tool_id) r
    LEFT JOIN ({completed}) c ON c.tool_id = r.tool_id
) x
WHERE tool_invocations.id = x.tool_id
"""
_NO_COMPLETIONS = "SELECT NULL::UUID AS tool_id, NULL::BIGINT AS lsn WHERE false"


class Tools(SetsOnly):
    name = "tools"
    tables: tuple[Table, ...] = (TOOL_INVOCATIONS,)
    views: tuple[str, ...] = ()

    def bulk(self, con: duckdb.DuckDBPyConnection, staged: Staged) -> None:
        # Completions of calls made in this batch are applied as the calls are inserted;
        # retries need the completions' order, so they take the statements below.
        merge = "completed" in staged and "retried" not in staged
        if "tools" in staged:
            sql = _INSERT_COMPLETED if merge else _INSERT
            insert_joined(con, staged, "tools", sql, ("response_id", "responses"))
        # A prompt's new agent is its tool calls' agent too; calls answering prompts of this
        # batch took it from their response as they were inserted.
        if "assigned" in staged and not staged.within("assigned", "prompt_id", "prompts"):
            con.execute(
                "UPDATE tool_invocations SET agent_id = r.agent_id FROM responses r "
                "WHERE tool_invocations.response_id = r.id "
                "AND r.prompt_id IN (SELECT prompt_id FROM stage_assigned)"
            )
        if "completed" in staged:
            staged.refer("completed", "tool_id", "tool_invocations")
            if not (merge and staged.within("completed", "tool_id", "tools")):
                con.execute(_COMPLETE)
        if "retried" in staged:
            staged.refer("retried", "tool_id", "tool_invocations")
            completed = (
                "SELECT tool_id, max(lsn) AS lsn FROM stage_completed GROUP BY tool_id"
                if "completed" in staged
                else _NO_COMPLETIONS
            )
            con.execute(_RETRY.format(completed=completed))
        if "deleted" in staged:
            con.execute(
                "UPDATE tool_invocations SET deleted_ts = d.ts FROM stage_deleted d "
                "WHERE tool_invocations.id = d.node_id"
            )
