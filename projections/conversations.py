"""The conversations projection: `sessions`, `prompts` and `responses`.

Sessions keep running totals (live prompts, responses and tool calls, tokens, first and last
activity); a tombstone subtracts what it removes, so the totals always equal a count of the
live rows. Each prompt records the prompt before it in its session (the FOLLOWS edge).
"""

from __future__ import annotations

from eventlog import events as ev

from ._fold import Batch, json_text, json_value, touch_or_none
from ._table import Column, Row, Table

__all__ = ["PROMPTS", "RESPONSES", "SESSIONS", "Conversations"]

_COMMON = (
    Column("lsn", "BIGINT", "NOT NULL"),
    Column("ts", "BIGINT", "NOT NULL"),
    Column("occurred_at", "BIGINT"),
    Column("actor", "VARCHAR"),
)

SESSIONS = Table(
    "sessions",
    [
        Column("id", "UUID", "NOT NULL"),
        *_COMMON,
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
)

PROMPTS = Table(
    "prompts",
    [
        Column("id", "UUID", "NOT NULL"),
        Column("session_id", "UUID", "NOT NULL"),
        *_COMMON,
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
)

RESPONSES = Table(
    "responses",
    [
        Column("id", "UUID", "NOT NULL"),
        Column("prompt_id", "UUID", "NOT NULL"),
        Column("session_id", "UUID", "NOT NULL"),
        *_COMMON,
        Column("content", "VARCHAR", "NOT NULL"),
        Column("prompt_tokens", "BIGINT", "NOT NULL"),
        Column("completion_tokens", "BIGINT", "NOT NULL"),
        Column("total_tokens", "BIGINT", "NOT NULL"),
        Column("finish_reason", "VARCHAR"),
        Column("latency_ms", "DOUBLE"),
        Column("model", "VARCHAR"),
        Column("metadata", "JSON"),
        Column("deleted_ts", "BIGINT"),
    ],
    ["id"],
)

_S = SESSIONS.index
_P = PROMPTS.index
_R = RESPONSES.index


def _session_row(e: ev.SessionCreated | ev.SessionForked, lsn: int, parent: object) -> Row:
    row = SESSIONS.empty_row()
    row[_S["id"]], row[_S["lsn"]], row[_S["ts"]] = e.id, lsn, e.ts
    row[_S["occurred_at"]], row[_S["actor"]] = e.occurred_at, e.actor
    row[_S["metadata"]], row[_S["tags"]] = json_text(e.metadata), list(e.tags)
    row[_S["parent_session_id"]] = parent
    row[_S["fork_point"]] = e.fork_point if isinstance(e, ev.SessionForked) else None
    for name in ("prompt_count", "response_count", "tool_count"):
        row[_S[name]] = 0
    row[_S["prompt_tokens"]] = row[_S["completion_tokens"]] = 0
    row[_S["first_activity_ts"]] = row[_S["last_activity_ts"]] = e.ts
    return row


def _prompt_row(e: ev.PromptAdded, lsn: int, previous: object) -> Row:
    m = e.metadata
    return [
        e.id,
        e.session_id,
        lsn,
        e.ts,
        e.occurred_at,
        e.actor,
        e.content,
        e.template_id,
        e.template_version,
        json_text(e.variables) if e.variables else None,
        e.parent_prompt_id,
        previous,
        None if m is None else m.model,
        None if m is None else m.temperature,
        None if m is None else m.max_tokens,
        None if m is None else list(m.tools_available),
        None if m is None or not m.custom else json_text(m.custom),
        None,
        None,
    ]


def _response_row(e: ev.ResponseAdded, lsn: int, session_id: object) -> Row:
    u = e.usage
    return [
        e.id,
        e.prompt_id,
        session_id,
        lsn,
        e.ts,
        e.occurred_at,
        e.actor,
        e.content,
        u.prompt_tokens,
        u.completion_tokens,
        u.prompt_tokens + u.completion_tokens,
        e.finish_reason,
        e.latency_ms,
        e.model,
        json_text(e.metadata) if e.metadata else None,
        None,
    ]


class Conversations:
    name = "conversations"
    tables: tuple[Table, ...] = (SESSIONS, PROMPTS, RESPONSES)
    views: tuple[str, ...] = ()
    wants: frozenset[type[ev.EventBase]] = frozenset(
        {
            ev.SessionUpdated,
            ev.SessionForked,
            ev.PromptAdded,
            ev.ResponseAdded,
            ev.ToolInvoked,
            ev.ToolCompleted,
            ev.AgentAssigned,
            ev.TemplateLinked,
            ev.NodeDeleted,
        }
    )
    applies: frozenset[type[ev.EventBase]] = frozenset(
        {
            ev.SessionCreated,
            ev.SessionForked,
            ev.SessionUpdated,
            ev.PromptAdded,
            ev.ResponseAdded,
            ev.ToolInvoked,
            ev.ToolCompleted,
            ev.AgentAssigned,
            ev.TemplateLinked,
            ev.NodeDeleted,
        }
    )

    def want(self, batch: Batch, event: ev.EventBase) -> None:
        sessions, prompts = batch["sessions"], batch["prompts"]
        match event:
            case ev.SessionUpdated(session_id=sid):
                sessions.want("id", sid)
            case ev.SessionForked(parent_session_id=sid):
                sessions.want("id", sid)
            case ev.PromptAdded(session_id=sid):
                sessions.want("id", sid)
            case ev.ResponseAdded(prompt_id=pid, session_id=sid):
                prompts.want("id", pid)
                sessions.want("id", sid)
            case ev.ToolInvoked(session_id=sid) | ev.ToolCompleted(session_id=sid):
                sessions.want("id", sid)
            case ev.AgentAssigned(prompt_id=pid) | ev.TemplateLinked(prompt_id=pid):
                prompts.want("id", pid)
            case ev.NodeDeleted(node_id=nid, session_id=sid):
                for changes in (sessions, prompts, batch["responses"]):
                    changes.want("id", nid)
                sessions.want("id", sid)
            case _:
                pass

    def apply(self, batch: Batch, lsn: int, event: ev.EventBase) -> None:
        sessions, prompts, responses = batch["sessions"], batch["prompts"], batch["responses"]
        match event:
            case ev.SessionCreated():
                sessions.add(_session_row(event, lsn, None))
            case ev.SessionForked():
                sessions.add(_session_row(event, lsn, event.parent_session_id))
            case ev.SessionUpdated():
                s = self._active(batch, event.session_id, event.ts)
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
            case ev.PromptAdded():
                s = self._active(batch, event.session_id, event.ts)
                prompts.add(_prompt_row(event, lsn, s[_S["last_prompt_id"]]))
                s[_S["prompt_count"]] += 1
                s[_S["last_prompt_id"]] = event.id
            case ev.ResponseAdded():
                sid = event.session_id or prompts.row(event.prompt_id)[_P["session_id"]]
                s = self._active(batch, sid, event.ts)
                responses.add(_response_row(event, lsn, sid))
                s[_S["response_count"]] += 1
                s[_S["prompt_tokens"]] += event.usage.prompt_tokens
                s[_S["completion_tokens"]] += event.usage.completion_tokens
            case ev.ToolInvoked(session_id=sid) if sid is not None:
                self._active(batch, sid, event.ts)[_S["tool_count"]] += 1
            case ev.ToolCompleted(session_id=sid) if sid is not None:
                self._active(batch, sid, event.ts)
            case ev.AgentAssigned():
                prompts.touch(event.prompt_id)[_P["agent_id"]] = event.agent_id
            case ev.TemplateLinked():
                p = prompts.touch(event.prompt_id)
                p[_P["template_id"]] = event.template_id
                p[_P["template_version"]] = event.template_version
                p[_P["variables"]] = json_text(event.variables) if event.variables else None
            case ev.NodeDeleted():
                self._delete(batch, event)
            case _:
                pass

    def _active(self, batch: Batch, session_id: object, ts: int) -> Row:
        """The session row, marked changed, with its last activity moved to `ts`."""
        s = batch["sessions"].touch(session_id)
        s[_S["last_activity_ts"]] = max(s[_S["last_activity_ts"]], ts)
        return s

    def _delete(self, batch: Batch, e: ev.NodeDeleted) -> None:
        sessions = batch["sessions"]
        if (s := touch_or_none(sessions, e.node_id)) is not None:
            s[_S["deleted_ts"]] = e.ts
            return
        if (p := touch_or_none(batch["prompts"], e.node_id)) is not None:
            p[_P["deleted_ts"]] = e.ts
            self._active(batch, p[_P["session_id"]], e.ts)[_S["prompt_count"]] -= 1
        elif (r := touch_or_none(batch["responses"], e.node_id)) is not None:
            r[_R["deleted_ts"]] = e.ts
            s = self._active(batch, r[_R["session_id"]], e.ts)
            s[_S["response_count"]] -= 1
            s[_S["prompt_tokens"]] -= r[_R["prompt_tokens"]]
            s[_S["completion_tokens"]] -= r[_R["completion_tokens"]]
        elif (t := batch["tool_invocations"].get(e.node_id)) is not None and t[2] is not None:
            self._active(batch, t[2], e.ts)[_S["tool_count"]] -= 1  # t[2]: its session_id
