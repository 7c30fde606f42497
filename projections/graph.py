"""The graph projection: `edges` (every typed edge), `nodes` (generic nodes) and `lineage`.

Edges the log implies (FOLLOWS, RESPONDS_TO, INVOKES, INSTANTIATES from a prompt's own
template, INHERITS) get a deterministic id (`implicit_edge_id`); edges the log names
(HANDLED_BY, TRANSFERS_TO, a link to a template, custom edges) keep the event's id.

`lineage` has one row per prompt, response and tool call, naming what it derives from: its
session, prompt, parent prompt, response, template version and that template's ancestors.
"""

from __future__ import annotations

import uuid
from typing import Any

from eventlog import events as ev

from ._fold import Batch, implicit_edge_key, json_text, touch_or_none
from ._table import Column, Row, Table
from .conversations import PROMPTS
from .templates import TEMPLATES, current_template

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
)

_L = LINEAGE.index
_TEMPLATE_ANCESTORS = TEMPLATES.index["ancestors"]
_PREVIOUS_PROMPT = PROMPTS.index["previous_prompt_id"]
_TEMPLATE_COLUMNS = slice(_L["template_id"], _L["template_ancestors"] + 1)


def _edge(
    at: tuple[int, ev.EventBase],
    edge_id: uuid.UUID | bytes,
    edge_type: str,
    ends: tuple[uuid.UUID, uuid.UUID],
    *,
    session_id: uuid.UUID | None,
    properties: dict[str, Any] | None = None,
) -> Row:
    """An `edges` row; `at` is the (LSN, event) that made it, `ends` its (from, to)."""
    lsn, e = at
    props = {k: v for k, v in (properties or {}).items() if v is not None}
    return [
        edge_id,
        edge_type,
        ends[0],
        ends[1],
        json_text(props) if props else None,
        session_id,
        lsn,
        e.ts,
        e.occurred_at,
        e.actor,
        None,
    ]


def _implied(
    at: tuple[int, ev.EventBase],
    edge_type: str,
    ends: tuple[uuid.UUID, uuid.UUID],
    session_id: uuid.UUID | None,
    properties: dict[str, Any] | None = None,
) -> Row:
    """An edge the log implies, with its deterministic id."""
    edge_id = implicit_edge_key(edge_type, *ends)
    return _edge(at, edge_id, edge_type, ends, session_id=session_id, properties=properties)


def _template_lineage(
    batch: Batch, template_id: uuid.UUID | None, version: int | None
) -> list[Any]:
    if template_id is None:
        return [None, None, None]
    ancestors = current_template(batch["templates"], template_id)[_TEMPLATE_ANCESTORS]
    return [template_id, version, list(ancestors or [])]


class Graph:
    name = "graph"
    tables: tuple[Table, ...] = (EDGES, NODES, LINEAGE)
    views: tuple[str, ...] = ()
    wants: frozenset[type[ev.EventBase]] = frozenset(
        {ev.ResponseAdded, ev.ToolInvoked, ev.TemplateLinked, ev.NodeDeleted}
    )
    applies: frozenset[type[ev.EventBase]] = frozenset(
        {
            ev.PromptAdded,
            ev.ResponseAdded,
            ev.ToolInvoked,
            ev.TemplateCreated,
            ev.AgentAssigned,
            ev.AgentHandoff,
            ev.TemplateLinked,
            ev.EdgeAdded,
            ev.NodeAdded,
            ev.NodeDeleted,
        }
    )

    def want(self, batch: Batch, event: ev.EventBase) -> None:
        lineage = batch["lineage"]
        match event:
            case ev.ResponseAdded(prompt_id=pid):
                lineage.want("node_id", pid)
            case ev.ToolInvoked(response_id=rid):
                lineage.want("node_id", rid)
            case ev.TemplateLinked(prompt_id=pid):
                lineage.want("node_id", pid)
                lineage.want("prompt_id", pid)
            case ev.NodeDeleted(node_id=nid):
                for name in ("edges", "nodes", "lineage"):
                    batch[name].want("node_id" if name == "lineage" else "id", nid)
            case _:
                pass

    def apply(self, batch: Batch, lsn: int, event: ev.EventBase) -> None:
        edges, lineage, at = batch["edges"], batch["lineage"], (lsn, event)
        match event:
            case ev.PromptAdded(id=pid, session_id=sid, template_id=tid):
                previous = batch["prompts"].row(pid)[_PREVIOUS_PROMPT]
                if previous is not None:
                    edges.add(_implied(at, "FOLLOWS", (pid, previous), sid))
                if tid is not None:
                    edges.add(_implied(at, "INSTANTIATES", (pid, tid), sid, _bindings(event)))
                template = _template_lineage(batch, tid, event.template_version)
                lineage.add(
                    [pid, "prompt", sid, None, event.parent_prompt_id, None, *template, lsn, None]
                )
            case ev.ResponseAdded(id=rid, prompt_id=pid):
                prompt = lineage.row(pid)
                sid = prompt[_L["session_id"]]
                props = {"latency_ms": event.latency_ms, "model": event.model}
                edges.add(_implied(at, "RESPONDS_TO", (rid, pid), sid, props))
                lineage.add(
                    [rid, "response", sid, pid, None, None, *prompt[_TEMPLATE_COLUMNS], lsn, None]
                )
            case ev.ToolInvoked(id=tid, response_id=rid):
                response = lineage.row(rid)
                sid = response[_L["session_id"]]
                edges.add(_implied(at, "INVOKES", (rid, tid), sid, {"tool_name": event.tool_name}))
                template = response[_TEMPLATE_COLUMNS]
                pid = response[_L["prompt_id"]]
                lineage.add([tid, "tool_invocation", sid, pid, None, rid, *template, lsn, None])
            case ev.TemplateCreated(parent_id=parent) if parent is not None:
                edges.add(_implied(at, "INHERITS", (event.id, parent), None))
            case ev.AgentAssigned():
                ends = (event.prompt_id, event.agent_id)
                edges.add(_edge(at, event.id, "HANDLED_BY", ends, session_id=event.session_id))
            case ev.AgentHandoff():
                props = {
                    "reason": event.reason,
                    "context_summary": event.context_summary,
                    "from_agent_id": None
                    if event.from_agent_id is None
                    else str(event.from_agent_id),
                }
                ends = (event.response_id, event.to_agent_id)
                edges.add(
                    _edge(
                        at,
                        event.id,
                        "TRANSFERS_TO",
                        ends,
                        session_id=event.session_id,
                        properties=props,
                    )
                )
            case ev.TemplateLinked():
                ends = (event.prompt_id, event.template_id)
                props = _bindings(event)
                edges.add(
                    _edge(
                        at,
                        event.id,
                        "INSTANTIATES",
                        ends,
                        session_id=event.session_id,
                        properties=props,
                    )
                )
                template = _template_lineage(batch, event.template_id, event.template_version)
                for row in list(lineage.rows.values()):
                    if event.prompt_id in (row[_L["node_id"]], row[_L["prompt_id"]]):
                        lineage.touch(row[_L["node_id"]])[_TEMPLATE_COLUMNS] = template
            case ev.EdgeAdded():
                ends = (event.from_id, event.to_id)
                edges.add(
                    _edge(
                        at,
                        event.id,
                        event.edge_type,
                        ends,
                        session_id=event.session_id,
                        properties=event.properties,
                    )
                )
            case ev.NodeAdded():
                data = json_text(event.data) if event.data else None
                batch["nodes"].add(
                    [
                        event.id,
                        event.kind,
                        event.content,
                        data,
                        event.session_id,
                        lsn,
                        event.ts,
                        event.occurred_at,
                        event.actor,
                        None,
                    ]
                )
            case ev.NodeDeleted(node_id=nid):
                for name in ("edges", "nodes", "lineage"):
                    if (gone := touch_or_none(batch[name], nid)) is not None:
                        gone[-1] = event.ts  # deleted_ts is the last column of all three
            case _:
                pass


def _bindings(event: ev.PromptAdded | ev.TemplateLinked) -> dict[str, Any]:
    return {
        "template_version": event.template_version,
        "variable_bindings": event.variables or None,
    }
