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

from ._fold import Batch, implicit_edge_id, json_text, touch_or_none
from ._table import Column, Row, Table, TableChanges
from .templates import TEMPLATES, current_template

__all__ = ["EDGES", "Graph", "LINEAGE", "NODES"]

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
_TEMPLATE_COLUMNS = slice(_L["template_id"], _L["template_ancestors"] + 1)


def _edge(
    edge_id: uuid.UUID,
    edge_type: str,
    from_id: uuid.UUID,
    to_id: uuid.UUID,
    properties: dict[str, Any] | None,
    lsn: int,
    e: ev.EventBase,
    session_id: uuid.UUID | None,
) -> Row:
    props = {k: v for k, v in (properties or {}).items() if v is not None}
    return [
        edge_id,
        edge_type,
        from_id,
        to_id,
        json_text(props) if props else None,
        session_id,
        lsn,
        e.ts,
        e.occurred_at,
        e.actor,
        None,
    ]


def _implied(
    edges: TableChanges, edge_type: str, from_id: uuid.UUID, to_id: uuid.UUID, lsn: int,
    e: ev.EventBase, session_id: uuid.UUID | None, properties: dict[str, Any] | None = None,
) -> None:
    edge_id = implicit_edge_id(edge_type, from_id, to_id)
    edges.add(_edge(edge_id, edge_type, from_id, to_id, properties, lsn, e, session_id))


def _template_lineage(batch: Batch, template_id: uuid.UUID | None, version: int | None) -> list[Any]:
    if template_id is None:
        return [None, None, None]
    ancestors = current_template(batch["templates"], template_id)[_TEMPLATE_ANCESTORS]
    return [template_id, version, list(ancestors or [])]


class Graph:
    name = "graph"
    tables = (EDGES, NODES, LINEAGE)
    views: tuple[str, ...] = ()

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
        edges, lineage = batch["edges"], batch["lineage"]
        match event:
            case ev.PromptAdded():
                sid = event.session_id
                previous = batch["prompts"].rows[event.id][batch["prompts"].table.index["previous_prompt_id"]]
                if previous is not None:
                    _implied(edges, "FOLLOWS", event.id, previous, lsn, event, sid)
                if event.template_id is not None:
                    props = {"template_version": event.template_version,
                             "variable_bindings": event.variables or None}
                    _implied(edges, "INSTANTIATES", event.id, event.template_id, lsn, event, sid, props)
                lineage.add([event.id, "prompt", sid, None, event.parent_prompt_id, None,
                             *_template_lineage(batch, event.template_id, event.template_version),
                             lsn, None])
            case ev.ResponseAdded():
                prompt = lineage.rows[event.prompt_id]
                sid = prompt[_L["session_id"]]
                props = {"latency_ms": event.latency_ms, "model": event.model}
                _implied(edges, "RESPONDS_TO", event.id, event.prompt_id, lsn, event, sid, props)
                lineage.add([event.id, "response", sid, event.prompt_id, None, None,
                             *prompt[_TEMPLATE_COLUMNS], lsn, None])
            case ev.ToolInvoked():
                response = lineage.rows[event.response_id]
                sid = response[_L["session_id"]]
                props = {"tool_name": event.tool_name}
                _implied(edges, "INVOKES", event.response_id, event.id, lsn, event, sid, props)
                lineage.add([event.id, "tool_invocation", sid, response[_L["prompt_id"]], None,
                             event.response_id, *response[_TEMPLATE_COLUMNS], lsn, None])
            case ev.TemplateCreated(parent_id=parent) if parent is not None:
                _implied(edges, "INHERITS", event.id, parent, lsn, event, None)
            case ev.AgentAssigned():
                edges.add(_edge(event.id, "HANDLED_BY", event.prompt_id, event.agent_id, None,
                                lsn, event, event.session_id))
            case ev.AgentHandoff():
                props = {"reason": event.reason, "context_summary": event.context_summary,
                         "from_agent_id": None if event.from_agent_id is None else str(event.from_agent_id)}
                edges.add(_edge(event.id, "TRANSFERS_TO", event.response_id, event.to_agent_id,
                                props, lsn, event, event.session_id))
            case ev.TemplateLinked():
                props = {"template_version": event.template_version,
                         "variable_bindings": event.variables or None}
                edges.add(_edge(event.id, "INSTANTIATES", event.prompt_id, event.template_id,
                                props, lsn, event, event.session_id))
                template = _template_lineage(batch, event.template_id, event.template_version)
                for key, row in list(lineage.rows.items()):
                    if key == event.prompt_id or row[_L["prompt_id"]] == event.prompt_id:
                        lineage.touch(key)[_TEMPLATE_COLUMNS] = template
            case ev.EdgeAdded():
                edges.add(_edge(event.id, event.edge_type, event.from_id, event.to_id,
                                event.properties, lsn, event, event.session_id))
            case ev.NodeAdded():
                batch["nodes"].add([event.id, event.kind, event.content,
                                    json_text(event.data) if event.data else None,
                                    event.session_id, lsn, event.ts, event.occurred_at,
                                    event.actor, None])
            case ev.NodeDeleted():
                for name, key in (("edges", event.node_id), ("nodes", event.node_id),
                                  ("lineage", event.node_id)):
                    if (row := touch_or_none(batch[name], key)) is not None:
                        row[-1] = event.ts  # deleted_ts is the last column of all three
            case _:
                pass
