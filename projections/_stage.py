"""Staging: a batch's high-volume events as Arrow tables, for the set-based half of the fold.

Prompts, responses, tool calls, assignments, handoffs, template links, edges, generic nodes
and tombstones make up nearly all of a log. Their effects within a batch commute (inserts,
last-writer-wins updates ordered by LSN, additive totals), so the fold applies them with a
few SQL statements over these tables instead of row by row in Python. Each staged table is
registered on the connection as ``stage_<name>`` while the fold runs. pyarrow is imported
when a batch is first staged, not with this module (see `_table`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import duckdb

from eventlog import Record
from eventlog import events as ev
from eventlog._lean import full_event, is_lean, lean_twin, uuid_fields

from ._table import json_text, to_arrow

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["STAGED_CLASSES", "STAGED_TYPES", "Staged"]

_U, _I, _F, _S, _LIST = "UUID", "BIGINT", "DOUBLE", "VARCHAR", "VARCHAR[]"  # DuckDB types

Getter = Callable[[Any], Any]
_COMMON: list[tuple[str, str, Getter]] = [
    ("ts", _I, attrgetter("ts")),
    ("occurred_at", _I, attrgetter("occurred_at")),
    ("actor", _S, attrgetter("actor")),
]


def _json(field: str) -> Getter:
    return lambda e: json_text(v) if (v := getattr(e, field)) else None


def _props(**getters: Getter) -> Getter:
    """An edge's properties as JSON text: the given fields, leaving out None; None if empty."""

    def get(e: Any) -> str | None:
        props = {k: v for k, get in getters.items() if (v := get(e)) is not None}
        return json_text(props) if props else None

    return get


def _bindings(e: Any) -> str | None:
    """INSTANTIATES' properties (of a prompt from a template, and of a link), spelled out
    as `_responds` is: `_props`' dict of getters cost three times as much."""
    if getattr(e, "template_id", None) is None:
        return None
    version, variables = e.template_version, e.variables
    if version is None:
        return json_text({"variable_bindings": variables}) if variables else None
    if variables:
        return json_text({"template_version": version, "variable_bindings": variables})
    return json_text({"template_version": version})


def _responds(e: Any) -> str | None:
    """RESPONDS_TO's properties, as `_props(latency_ms=..., model=...)` makes them, without
    its dict of getters: a response's costliest column to stage."""
    latency, model = e.latency_ms, e.model
    if latency is None:
        return None if model is None else json_text({"model": model})
    if model is None:
        return json_text({"latency_ms": latency})
    return json_text({"latency_ms": latency, "model": model})


def _meta(field: str) -> Getter:
    return lambda e: None if e.metadata is None else getattr(e.metadata, field)


_COLUMNS: dict[type[ev.EventBase], tuple[str, list[tuple[str, str, Getter]]]] = {
    ev.PromptAdded: (
        "prompts",
        [
            ("id", _U, attrgetter("id")),
            ("session_id", _U, attrgetter("session_id")),
            *_COMMON,
            ("content", _S, attrgetter("content")),
            ("template_id", _U, attrgetter("template_id")),
            ("template_version", _I, attrgetter("template_version")),
            ("variables", _S, _json("variables")),
            ("parent_prompt_id", _U, attrgetter("parent_prompt_id")),
            ("model", _S, _meta("model")),
            ("temperature", _F, _meta("temperature")),
            ("max_tokens", _I, _meta("max_tokens")),
            ("tools_available", _LIST, _meta("tools_available")),
            (
                "metadata",
                _S,
                lambda e: (
                    None
                    if e.metadata is None or not e.metadata.custom
                    else json_text(e.metadata.custom)
                ),
            ),
            ("instantiates", _S, _bindings),
        ],
    ),
    ev.ResponseAdded: (
        "responses",
        [
            ("id", _U, attrgetter("id")),
            ("prompt_id", _U, attrgetter("prompt_id")),
            ("session_id", _U, attrgetter("session_id")),
            *_COMMON,
            ("content", _S, attrgetter("content")),
            ("prompt_tokens", _I, attrgetter("usage.prompt_tokens")),
            ("completion_tokens", _I, attrgetter("usage.completion_tokens")),
            ("finish_reason", _S, attrgetter("finish_reason")),
            ("latency_ms", _F, attrgetter("latency_ms")),
            ("model", _S, attrgetter("model")),
            ("metadata", _S, _json("metadata")),
            ("responds", _S, _responds),
        ],
    ),
    ev.AgentAssigned: (
        "assigned",
        [
            ("id", _U, attrgetter("id")),
            ("prompt_id", _U, attrgetter("prompt_id")),
            ("agent_id", _U, attrgetter("agent_id")),
            ("session_id", _U, attrgetter("session_id")),
            *_COMMON,
        ],
    ),
    ev.AgentHandoff: (
        "handoffs",
        [
            ("id", _U, attrgetter("id")),
            ("response_id", _U, attrgetter("response_id")),
            ("from_agent_id", _U, attrgetter("from_agent_id")),
            ("to_agent_id", _U, attrgetter("to_agent_id")),
            ("reason", _S, attrgetter("reason")),
            ("context_summary", _S, attrgetter("context_summary")),
            ("session_id", _U, attrgetter("session_id")),
            *_COMMON,
            (
                "properties",
                _S,
                _props(
                    reason=lambda e: e.reason,
                    context_summary=lambda e: e.context_summary,
                    from_agent_id=lambda e: _id_text(e.from_agent_id),
                ),
            ),
        ],
    ),
    ev.TemplateLinked: (
        "linked",
        [
            ("id", _U, attrgetter("id")),
            ("prompt_id", _U, attrgetter("prompt_id")),
            ("template_id", _U, attrgetter("template_id")),
            ("template_version", _I, attrgetter("template_version")),
            ("variables", _S, _json("variables")),
            ("session_id", _U, attrgetter("session_id")),
            *_COMMON,
            ("properties", _S, _bindings),
        ],
    ),
    ev.ToolInvoked: (
        "tools",
        [
            ("id", _U, attrgetter("id")),
            ("response_id", _U, attrgetter("response_id")),
            ("session_id", _U, attrgetter("session_id")),
            *_COMMON,
            ("tool_name", _S, attrgetter("tool_name")),
            ("parameters", _S, lambda e: json_text(e.parameters)),
            ("invokes", _S, _props(tool_name=attrgetter("tool_name"))),
            ("metadata", _S, _json("metadata")),
        ],
    ),
    ev.ToolRetried: (
        "retried",
        [
            ("tool_id", _U, attrgetter("tool_id")),
            ("session_id", _U, attrgetter("session_id")),
            ("ts", _I, attrgetter("ts")),
            ("error", _S, attrgetter("error")),
            ("parameters", _S, lambda e: None if e.parameters is None else json_text(e.parameters)),
        ],
    ),
    ev.ToolCompleted: (
        "completed",
        [
            ("tool_id", _U, attrgetter("tool_id")),
            ("session_id", _U, attrgetter("session_id")),
            ("ts", _I, attrgetter("ts")),
            ("result", _S, lambda e: json_text(e.result)),
            ("error", _S, attrgetter("error")),
            ("duration_ms", _F, attrgetter("duration_ms")),
        ],
    ),
    ev.EdgeAdded: (
        "edges",
        [
            ("id", _U, attrgetter("id")),
            ("edge_type", _S, attrgetter("edge_type")),
            ("from_id", _U, attrgetter("from_id")),
            ("to_id", _U, attrgetter("to_id")),
            ("properties", _S, _json("properties")),
            ("session_id", _U, attrgetter("session_id")),
            *_COMMON,
        ],
    ),
    ev.NodeAdded: (
        "nodes",
        [
            ("id", _U, attrgetter("id")),
            ("kind", _S, attrgetter("kind")),
            ("content", _S, attrgetter("content")),
            ("data", _S, _json("data")),
            ("session_id", _U, attrgetter("session_id")),
            *_COMMON,
        ],
    ),
    ev.NodeDeleted: (
        "deleted",
        [
            ("node_id", _U, attrgetter("node_id")),
            ("session_id", _U, attrgetter("session_id")),
            ("ts", _I, attrgetter("ts")),
        ],
    ),
    ev.SpanRecorded: (
        "spans",
        [
            ("trace_id", _S, attrgetter("trace_id")),
            ("span_id", _S, attrgetter("span_id")),
            ("parent_span_id", _S, attrgetter("parent_span_id")),
            *_COMMON,
            ("name", _S, attrgetter("name")),
            ("kind", _S, attrgetter("kind")),
            ("start_ns", _I, attrgetter("start_ns")),
            ("end_ns", _I, attrgetter("end_ns")),
            ("status", _S, attrgetter("status")),
            ("status_message", _S, attrgetter("status_message")),
            ("attributes", _S, _json("attributes")),
            ("events", _S, _json("events")),
            ("resource", _S, _json("resource")),
            ("scope", _S, attrgetter("scope")),
        ],
    ),
}

_INSERTED_BY = {"prompts": "prompts", "responses": "responses", "tool_invocations": "tools"}
"""Table -> the stage each of whose events inserts one of its rows, or the fold fails."""

STAGED_TYPES = frozenset(_COLUMNS)
"""The event types the fold stages and applies with SQL; the rest are applied row by row."""

_PUBLIC_OF: dict[type[Any], type[ev.EventBase]] = {
    **{lean_twin(cls): cls for cls in _COLUMNS},
    **{cls: cls for cls in _COLUMNS},
}
STAGED_CLASSES = frozenset(_PUBLIC_OF)
"""`STAGED_TYPES` and their lean twins (`eventlog._lean`), which the fold reads the log as."""


def _id_text(value: uuid.UUID | bytes | None) -> str | None:
    """An id as text for JSON, from a public event's `uuid.UUID` or a twin's 16 bytes."""
    if value is None:
        return None
    return str(value if value.__class__ is uuid.UUID else uuid.UUID(bytes=value))  # type: ignore[arg-type]


def _ids_to_arrow(values: list[bytes | None]) -> pa.Array:
    """A UUID column from a twin's 16-byte ids: no `uuid.UUID` made, no bytes copied twice."""
    import pyarrow as pa  # noqa: PLC0415 (as in `Staged.__init__`)

    return pa.ExtensionArray.from_storage(pa.uuid(), pa.array(values, pa.binary(16)))


def _previous_prompts(events: list[Any]) -> pa.Array:
    """Each prompt's previous prompt in its session among the batch's (NULL for the first),
    by LSN: one pass over a dict, where DuckDB's ``lag() OVER (PARTITION BY session_id ...)``
    partitioned and sorted the batch, the largest part of the prompts ``INSERT``
    (`conversations`; docs/benchmarks.md)."""
    last: dict[Any, Any] = {}
    previous = []
    for e in events:
        previous.append(last.get(e.session_id))
        last[e.session_id] = e.id
    if is_lean(events[0]):
        return _ids_to_arrow(previous)
    return to_arrow(previous, _U)


def _by_stage(records: Sequence[Record]) -> dict[type[ev.EventBase], list[Record]]:
    """The staged records by public type, in LSN order. A stage is all twins or all public
    events (a caller's records mixed with the fold's own reads: twins made public)."""
    groups: dict[type[Any], list[Record]] = {}
    for record in records:
        cls = record.event.__class__
        if cls in _PUBLIC_OF:
            groups.setdefault(cls, []).append(record)
    by_type: dict[type[ev.EventBase], list[Record]] = {}
    for cls, staged in groups.items():
        public = _PUBLIC_OF[cls]
        if public in by_type:  # both kinds in one batch
            both = sorted([*by_type[public], *staged], key=attrgetter("lsn"))
            by_type[public] = [Record(r.lsn, full_event(r.event)) for r in both]
        else:
            by_type[public] = staged
    return by_type


class Staged:
    """A batch's staged events, by stage name (``prompts``, ``responses``, ...)."""

    def __init__(self, records: Sequence[Record]) -> None:
        import pyarrow as pa  # noqa: PLC0415 (on the first fold: reads never need it)

        by_type = _by_stage(records)
        self.tables: dict[str, pa.Table] = {}
        self.types: dict[str, str] = {}  # stage name -> event tag, for poison reports
        self.references: list[tuple[str, str, str]] = []  # (stage, column, table): `refer`
        self._within: dict[tuple[str, str, str], bool] = {}
        for cls, staged in by_type.items():
            name, columns = _COLUMNS[cls]
            events = [r.event for r in staged]
            arrays = [to_arrow([r.lsn for r in staged], _I)]
            if is_lean(events[0]):
                arrays += [
                    _ids_to_arrow(list(map(get, events)))
                    if kind == _U
                    else to_arrow(map(get, events), kind)
                    for _, kind, get in columns
                ]
            else:
                arrays += [to_arrow(map(get, events), kind) for _, kind, get in columns]
            names = ["lsn", *(c[0] for c in columns)]
            if cls is ev.PromptAdded:
                arrays.append(_previous_prompts(events))
                names.append("previous")
            self.tables[name] = pa.Table.from_arrays(arrays, names=names)
            self.types[name] = ev.tag_of(cls)

    def __contains__(self, name: str) -> bool:
        return name in self.tables

    def within(self, stage: str, column: str, other: str) -> bool:
        """True if every event staged in `stage` names by `column` an event of this batch
        staged in `other` (its ``id``): then it concerns no row of an earlier batch, and
        the projections can apply it as they insert those rows, with no ``UPDATE``."""
        if stage not in self.tables:
            return True
        if other not in self.tables:
            return False
        key = (stage, column, other)
        if key not in self._within:
            import pyarrow.compute as pc  # noqa: PLC0415 (as in `__init__`)

            values = self.tables[stage][column].combine_chunks()
            ids = self.tables[other]["id"].combine_chunks()
            found = pc.is_in(_storage(values), value_set=_storage(ids))
            self._within[key] = bool(pc.all(found).as_py())
        return self._within[key]

    def refer(self, stage: str, column: str, table: str) -> None:
        """Have the fold check that every staged event's `column` (when not NULL) names a
        row of `table` once every projection has applied the batch: the checks of a batch
        run as one query (`_fold.check_references`), not one statement each.

        Not when every one names an event of this batch that inserted a row of `table`
        (`within`): its insert checked that each made its row (`_fold.insert_joined`). The
        check scans the whole table (a million rows at a million events, every batch)."""
        if stage not in self.tables:
            return
        inserter = _INSERTED_BY.get(table)
        if inserter is None or not self.within(stage, column, inserter):
            self.references.append((stage, column, table))

    def register(self, con: duckdb.DuckDBPyConnection) -> None:
        for name, table in self.tables.items():
            con.register(f"stage_{name}", table)

    def unregister(self, con: duckdb.DuckDBPyConnection) -> None:
        for name in self.tables:
            con.unregister(f"stage_{name}")


def _storage(values: pa.Array) -> pa.Array:
    """A UUID array as its 16-byte storage (Arrow's kernels know no extension types)."""
    import pyarrow as pa  # noqa: PLC0415 (as in `Staged.__init__`)

    return values.storage if isinstance(values, pa.ExtensionArray) else values


def assigned_prompts(records: Sequence[Record]) -> set[uuid.UUID]:
    """The prompts the batch's `agent.assigned` events name: the fold changes their
    responses' and tool calls' `agent_id` too, though no event names those."""
    lean = lean_twin(ev.AgentAssigned)
    found: set[uuid.UUID] = set()
    for record in records:
        event = record.event
        if isinstance(event, ev.AgentAssigned):
            found.add(event.prompt_id)
        elif event.__class__ is lean:
            prompt: bytes = event.prompt_id  # type: ignore[attr-defined]  # a lean twin's
            found.add(uuid.UUID(bytes=prompt))
    return found


def touched_ids(records: Sequence[Record]) -> set[uuid.UUID]:
    """Every id any event of the batch names: what a cache must forget after it."""
    ids: set[uuid.UUID] = set()
    for record in records:
        event = record.event
        if is_lean(event):
            ids.update(
                uuid.UUID(bytes=v) for f in uuid_fields(event.__class__) if (v := getattr(event, f))
            )
            continue
        for value in event.__struct_fields__:
            v = getattr(event, value)
            if v.__class__ is uuid.UUID:
                ids.add(v)
    return ids
