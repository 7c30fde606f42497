"""The sessions projection: `sessions`, with running totals.

A session row is made and updated row by row (its metadata merges key by key); its totals
(live prompts, responses and tool calls, tokens, first and last activity, last prompt) are
added set-wise after every other projection has applied the batch, so a tombstone subtracts
exactly what it removes and the totals always equal a count of the live rows.
"""

from __future__ import annotations

import duckdb

from eventlog import events as ev

from ._fold import Batch
from ._stage import Staged
from ._table import RECORDED, Column, Row, Table, json_text, json_value

__all__ = ["SESSIONS", "Sessions"]

SESSIONS = Table(
    "sessions",
    [
        Column("id", "UUID", "NOT NULL"),
        *RECORDED,
        Column("metadata", "JSON"),
        Column("tags", "VARCHAR[]"),
        Column("parent_session_id", "UUID"),
        Column("fork_point", "UUID"),
        Column("prompt_count", "BIGINT", "NOT NULL"),
        Column("response_count", "BIGINT", "NOT NULL"),
        Column("tool_count", "BIGINT", "NOT NULL"),
        Column("prompt_tokens", "BIGINT", "NOT NULL"),
        Column("completion_tokens", "BIGINT", "NOT NULL"),
        Column("first_activity_ts", "BIGINT", "NOT NULL"),
        Column("last_activity_ts", "BIGINT", "NOT NULL"),
        Column("last_prompt_id", "UUID"),
        Column("updated_ts", "BIGINT"),
        Column("deleted_ts", "BIGINT"),
    ],
    ["id"],
    indexed=False,  # see `Table`: unique by the log, found by zone maps
)

_S = SESSIONS.index

# What each staged event adds to its session's totals: (stage, session column, SELECT list of
# prompts, responses, tools, prompt tokens, completion tokens, activity ts, lsn, prompt id).
_ACTIVITY = {
    "prompts": "SELECT session_id, 1, 0, 0, 0, 0, ts, lsn, id FROM stage_prompts",
    "responses": "SELECT session_id, 0, 1, 0, prompt_tokens, completion_tokens, ts, lsn, NULL "
    "FROM stage_responses",
    "tools": "SELECT session_id, 0, 0, 1, 0, 0, ts, lsn, NULL FROM stage_tools",
    "completed": "SELECT session_id, 0, 0, 0, 0, 0, ts, lsn, NULL FROM stage_completed",
    "retried": "SELECT session_id, 0, 0, 0, 0, 0, ts, lsn, NULL FROM stage_retried",
}
_REMOVALS = (  # a tombstone of a prompt, response or tool call subtracts it
    "SELECT p.session_id, -1, 0, 0, 0, 0, d.ts, d.lsn, NULL "
    "FROM stage_deleted d JOIN prompts p ON p.id = d.node_id",
    "SELECT r.session_id, 0, -1, 0, -r.prompt_tokens, -r.completion_tokens, d.ts, d.lsn, NULL "
    "FROM stage_deleted d JOIN responses r ON r.id = d.node_id",
    "SELECT t.session_id, 0, 0, -1, 0, 0, d.ts, d.lsn, NULL "
    "FROM stage_deleted d JOIN tool_invocations t ON t.id = d.node_id",
)


def _session_row(e: ev.SessionCreated | ev.SessionForked, lsn: int) -> Row:
    row = SESSIONS.empty_row()
    row[_S["id"]], row[_S["lsn"]], row[_S["ts"]] = e.id, lsn, e.ts
    row[_S["occurred_at"]], row[_S["actor"]] = e.occurred_at, e.actor
    row[_S["metadata"]], row[_S["tags"]] = json_text(e.metadata), list(e.tags)
    if isinstance(e, ev.SessionForked):
        row[_S["parent_session_id"]], row[_S["fork_point"]] = e.parent_session_id, e.fork_point
    for name in ("prompt_count", "response_count", "tool_count", "prompt_tokens"):
        row[_S[name]] = 0
    row[_S["completion_tokens"]] = 0
    row[_S["first_activity_ts"]] = row[_S["last_activity_ts"]] = e.ts
    return row


class Sessions:
    name = "sessions"
    tables: tuple[Table, ...] = (SESSIONS,)
    views: tuple[str, ...] = ()
    wants: frozenset[type[ev.EventBase]] = frozenset({ev.SessionUpdated})
    applies: frozenset[type[ev.EventBase]] = frozenset(
        {ev.SessionCreated, ev.SessionForked, ev.SessionUpdated}
    )

    def want(self, batch: Batch, event: ev.EventBase) -> None:
        if isinstance(event, ev.SessionUpdated):
            batch["sessions"].want("id", event.session_id)

    def apply(self, batch: Batch, lsn: int, event: ev.EventBase) -> None:
        sessions = batch["sessions"]
        match event:
            case ev.SessionCreated() | ev.SessionForked():
                sessions.add(_session_row(event, lsn))
            case ev.SessionUpdated():
                s = sessions.touch(event.session_id)
                merged = json_value(s[_S["metadata"]]) or {}
                for key, value in event.metadata.items():
                    if value is None:
                        merged.pop(key, None)
                    else:
                        merged[key] = value
                s[_S["metadata"]] = json_text(merged)
                if event.tags is not None:
                    s[_S["tags"]] = list(event.tags)
                s[_S["updated_ts"]] = event.ts
                s[_S["last_activity_ts"]] = max(s[_S["last_activity_ts"]], event.ts)
            case _:
                pass

    def bulk(self, con: duckdb.DuckDBPyConnection, staged: Staged) -> None:
        parts = [sql for stage, sql in _ACTIVITY.items() if stage in staged]
        if "deleted" in staged:
            parts += _REMOVALS
            con.execute(
                "UPDATE sessions SET deleted_ts = d.ts FROM stage_deleted d "
                "WHERE sessions.id = d.node_id"
            )
        if not parts:
            return
        con.execute(
            f"""
            WITH activity(session_id, p, r, t, pt, ct, ts, lsn, prompt_id) AS (
                {" UNION ALL ".join(parts)}
            ), totals AS (
                SELECT session_id, sum(p) AS p, sum(r) AS r, sum(t) AS t, sum(pt) AS pt,
                       sum(ct) AS ct, max(ts) AS last_ts,
                       arg_max(prompt_id, lsn) FILTER (WHERE prompt_id IS NOT NULL) AS last_prompt
                FROM activity WHERE session_id IS NOT NULL GROUP BY session_id
            )
            UPDATE sessions SET
                prompt_count = prompt_count + u.p,
                response_count = response_count + u.r,
                tool_count = tool_count + u.t,
                prompt_tokens = prompt_tokens + u.pt,
                completion_tokens = completion_tokens + u.ct,
                last_activity_ts = greatest(last_activity_ts, u.last_ts),
                last_prompt_id = coalesce(u.last_prompt, last_prompt_id)
            FROM totals u WHERE sessions.id = u.session_id
            """
        )
