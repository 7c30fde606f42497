"""The tools projection: `tool_invocations`, one row per call, completed in place.

A call starts ``pending``; its completion sets ``success`` or ``error``, the result or error,
the duration and ``completed_ts``.
"""

from __future__ import annotations

from eventlog import events as ev

from ._fold import Batch, json_text, touch_or_none
from ._table import Column, Table

__all__ = ["TOOL_INVOCATIONS", "Tools"]

TOOL_INVOCATIONS = Table(
    "tool_invocations",
    [
        Column("id", "UUID", "NOT NULL"),
        Column("response_id", "UUID", "NOT NULL"),
        Column("session_id", "UUID"),  # column 2: conversations reads it on a tombstone
        Column("lsn", "BIGINT", "NOT NULL"),
        Column("ts", "BIGINT", "NOT NULL"),
        Column("occurred_at", "BIGINT"),
        Column("actor", "VARCHAR"),
        Column("tool_name", "VARCHAR", "NOT NULL"),
        Column("parameters", "JSON"),
        Column("status", "VARCHAR", "NOT NULL"),
        Column("result", "JSON"),
        Column("error", "VARCHAR"),
        Column("duration_ms", "DOUBLE"),
        Column("completed_ts", "BIGINT"),
        Column("deleted_ts", "BIGINT"),
    ],
    ["id"],
)

_T = TOOL_INVOCATIONS.index


class Tools:
    name = "tools"
    tables: tuple[Table, ...] = (TOOL_INVOCATIONS,)
    views: tuple[str, ...] = ()
    wants: frozenset[type[ev.EventBase]] = frozenset({ev.ToolCompleted, ev.NodeDeleted})
    applies: frozenset[type[ev.EventBase]] = frozenset(
        {ev.ToolInvoked, ev.ToolCompleted, ev.NodeDeleted}
    )

    def want(self, batch: Batch, event: ev.EventBase) -> None:
        match event:
            case ev.ToolCompleted(tool_id=tid) | ev.NodeDeleted(node_id=tid):
                batch["tool_invocations"].want("id", tid)
            case _:
                pass

    def apply(self, batch: Batch, lsn: int, event: ev.EventBase) -> None:
        tools = batch["tool_invocations"]
        match event:
            case ev.ToolInvoked():
                tools.add(
                    [
                        event.id,
                        event.response_id,
                        event.session_id,
                        lsn,
                        event.ts,
                        event.occurred_at,
                        event.actor,
                        event.tool_name,
                        json_text(event.parameters),
                        "pending",
                        None,
                        None,
                        None,
                        None,
                        None,
                    ]
                )
            case ev.ToolCompleted():
                t = tools.touch(event.tool_id)
                t[_T["status"]] = "success" if event.error is None else "error"
                t[_T["result"]] = json_text(event.result)
                t[_T["error"]] = event.error
                t[_T["duration_ms"]] = event.duration_ms
                t[_T["completed_ts"]] = event.ts
            case ev.NodeDeleted():
                if (gone := touch_or_none(tools, event.node_id)) is not None:
                    gone[_T["deleted_ts"]] = event.ts
            case _:
                pass
