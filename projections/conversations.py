"""The conversations projection: `prompts` and `responses`, applied set-wise.

Each prompt records the prompt before it in its session (``previous_prompt_id``, the FOLLOWS
edge) and the agent that handles it; a link to a template rewrites its template columns.
The last assignment and the last link (by LSN) win. Responses (and tool calls) carry their
prompt's agent too, so per-agent statistics need no joins.
"""

from __future__ import annotations

import duckdb

from ._fold import SetsOnly, insert_joined
from ._stage import Staged
from ._table import RECORDED, Column, Table

__all__ = ["PROMPTS", "RESPONSES", "Conversations"]

PROMPTS = Table(
    "prompts",
    [
        Column("id", "UUID", "NOT NULL"),
        Column("session_id", "UUID", "NOT NULL"),
        *RECORDED,
        Column("content", "VARCHAR", "NOT NULL"),
        Column("template_id", "UUID"),
        Column("template_version", "BIGINT"),
        Column("variables", "JSON"),
        Column("parent_prompt_id", "UUID"),
        Column("previous_prompt_id", "UUID"),
        Column("model", "VARCHAR"),
        Column("temperature", "DOUBLE"),
        Column("max_tokens", "BIGINT"),
        Column("tools_available", "VARCHAR[]"),
        Column("metadata", "JSON"),
        Column("agent_id", "UUID"),
        Column("deleted_ts", "BIGINT"),
    ],
    ["id"],
    indexed=False,  # see `Table`: unique by the log, found by zone maps
)

RESPONSES = Table(
    "responses",
    [
        Column("id", "UUID", "NOT NULL"),
        Column("prompt_id", "UUID", "NOT NULL"),
        Column("session_id", "UUID", "NOT NULL"),
        *RECORDED,
        Column("content", "VARCHAR", "NOT NULL"),
        Column("prompt_tokens", "BIGINT", "NOT NULL"),
        Column("completion_tokens", "BIGINT", "NOT NULL"),
        Column("total_tokens", "BIGINT", "NOT NULL"),
        Column("finish_reason", "VARCHAR"),
        Column("latency_ms", "DOUBLE"),
        Column("model", "VARCHAR"),
        Column("metadata", "JSON"),
        Column("agent_id", "UUID"),  # its prompt's agent, kept in step with assignments
        Column("deleted_ts", "BIGINT"),
    ],
    ["id"],
    indexed=False,  # see `Table`: unique by the log, found by zone maps
)

_INSERT_PROMPTS = """
INSERT INTO prompts
SELECT p.id, p.session_id, p.lsn, p.ts, p.occurred_at, p.actor, p.content, p.template_id,
       p.template_version, p.variables, p.parent_prompt_id,
       coalesce(p.previous, s.last_prompt_id),
       p.model, p.temperature, p.max_tokens, p.tools_available, p.metadata, {agent}, NULL
FROM stage_prompts p JOIN sessions s ON s.id = p.session_id {assigned}
ORDER BY p.lsn
"""
_ASSIGNED = (  # the batch's last assignment of each prompt, joined as the prompts are inserted
    "LEFT JOIN (SELECT * FROM stage_assigned QUALIFY row_number() OVER ("
    "PARTITION BY prompt_id ORDER BY lsn DESC) = 1) a ON a.prompt_id = p.id"
)

_INSERT_RESPONSES = """
INSERT INTO responses
SELECT r.id, r.prompt_id, coalesce(r.session_id, p.session_id), r.lsn, r.ts, r.occurred_at,
       r.actor, r.content, r.prompt_tokens, r.completion_tokens,
       r.prompt_tokens + r.completion_tokens, r.finish_reason, r.latency_ms, r.model,
       r.metadata, p.agent_id, NULL
FROM stage_responses r JOIN prompts p ON p.id = r.prompt_id
ORDER BY r.lsn
"""

_ASSIGN = """
UPDATE prompts SET agent_id = a.agent_id
FROM (SELECT * FROM stage_assigned QUALIFY row_number() OVER (
        PARTITION BY prompt_id ORDER BY lsn DESC) = 1) a
WHERE prompts.id = a.prompt_id;
UPDATE responses SET agent_id = p.agent_id FROM prompts p
WHERE responses.prompt_id = p.id AND p.id IN (SELECT prompt_id FROM stage_assigned)
"""

_LINK = """
UPDATE prompts SET template_id = l.template_id, template_version = l.template_version,
                   variables = l.variables
FROM (SELECT * FROM stage_linked QUALIFY row_number() OVER (
        PARTITION BY prompt_id ORDER BY lsn DESC) = 1) l
WHERE prompts.id = l.prompt_id
"""


class Conversations(SetsOnly):
    name = "conversations"
    tables: tuple[Table, ...] = (PROMPTS, RESPONSES)
    views: tuple[str, ...] = ()

    def bulk(self, con: duckdb.DuckDBPyConnection, staged: Staged) -> None:
        if "prompts" in staged:
            staged.refer("prompts", "template_id", "templates")
            assigned = "assigned" in staged
            sql = _INSERT_PROMPTS.format(
                agent="a.agent_id" if assigned else "NULL", assigned=_ASSIGNED if assigned else ""
            )
            insert_joined(con, staged, "prompts", sql, ("session_id", "sessions"))
        if "responses" in staged:
            insert_joined(con, staged, "responses", _INSERT_RESPONSES, ("prompt_id", "prompts"))
        if "assigned" in staged:
            staged.refer("assigned", "prompt_id", "prompts")
            staged.refer("assigned", "agent_id", "agents")
            if not staged.within("assigned", "prompt_id", "prompts"):  # else done as inserted
                con.execute(_ASSIGN)
        if "linked" in staged:
            staged.refer("linked", "prompt_id", "prompts")
            staged.refer("linked", "template_id", "templates")
            con.execute(_LINK)
        if "deleted" in staged:
            for table in ("prompts", "responses"):
                con.execute(
                    f"UPDATE {table} SET deleted_ts = d.ts FROM stage_deleted d "
                    f"WHERE {table}.id = d.node_id"
                )
