"""The templates projection: `templates`, one row per version, the newest marked current.

Each version has its integer `version` (1, 2, ...: the order) and its semantic version
`semver` (``1.0.0`` unless the template says otherwise, then raised by each update's bump);
`tags` are set at creation and replaced by an update that gives them.

Each row carries its template's ancestors (parent first), so the lineage of a prompt and the
impact of a template are lookups, not recursive walks.
"""

from __future__ import annotations

import uuid

import duckdb

from eventlog import events as ev

from ._fold import Batch
from ._stage import Staged
from ._table import RECORDED, Column, Row, Table, TableChanges, json_text

__all__ = ["TEMPLATES", "Templates", "current_template"]

TEMPLATES = Table(
    "templates",
    [
        Column("id", "UUID", "NOT NULL"),
        Column("version", "BIGINT", "NOT NULL"),
        *RECORDED,
        Column("name", "VARCHAR", "NOT NULL"),
        Column("text", "VARCHAR", "NOT NULL"),
        Column("variables", "JSON"),
        Column("parent_id", "UUID"),
        Column("ancestors", "UUID[]"),
        Column("description", "VARCHAR"),
        Column("metadata", "JSON"),
        Column("is_current", "BOOLEAN", "NOT NULL"),
        Column("deleted_ts", "BIGINT"),
        Column("tags", "VARCHAR[]"),
        Column("semver", "VARCHAR", "NOT NULL"),
    ],
    ["id", "version"],
)

_T = TEMPLATES.index


def current_template(templates: TableChanges, template_id: uuid.UUID) -> Row:
    """The newest version's row of a template the batch holds; KeyError if none."""
    rows = [r for r in templates.rows.values() if r[0] == template_id]
    if not rows:
        raise KeyError(f"template {template_id}")
    return max(rows, key=lambda r: r[_T["version"]])


def _variables(specs: list[ev.VariableSpec]) -> str | None:
    return (
        json_text(
            [
                {
                    "name": v.name,
                    "type_hint": v.type_hint,
                    "required": v.required,
                    "default": v.default,
                    **({} if v.pattern is None else {"pattern": v.pattern}),
                }
                for v in specs
            ]
        )
        if specs
        else None
    )


class Templates:
    name = "templates"
    tables: tuple[Table, ...] = (TEMPLATES,)
    views: tuple[str, ...] = ()
    wants: frozenset[type[ev.EventBase]] = frozenset({ev.TemplateCreated, ev.TemplateUpdated})
    applies: frozenset[type[ev.EventBase]] = frozenset({ev.TemplateCreated, ev.TemplateUpdated})

    def want(self, batch: Batch, event: ev.EventBase) -> None:
        templates = batch["templates"]
        match event:
            case ev.TemplateCreated(parent_id=tid) | ev.TemplateUpdated(template_id=tid):
                templates.want("id", tid)
            case _:
                pass

    def apply(self, batch: Batch, lsn: int, event: ev.EventBase) -> None:
        templates = batch["templates"]
        match event:
            case ev.TemplateCreated():
                ancestors: list[uuid.UUID] = []
                if event.parent_id is not None:
                    parent = current_template(templates, event.parent_id)
                    ancestors = [event.parent_id, *(parent[_T["ancestors"]] or [])]
                templates.add(
                    [
                        event.id,
                        1,
                        lsn,
                        event.ts,
                        event.occurred_at,
                        event.actor,
                        event.name,
                        event.text,
                        _variables(event.variables),
                        event.parent_id,
                        ancestors,
                        event.description,
                        json_text(event.metadata) if event.metadata else None,
                        True,
                        None,
                        list(event.tags),
                        ev.template_semver(event),
                    ]
                )
            case ev.TemplateUpdated():
                old = current_template(templates, event.template_id)
                templates.touch((event.template_id, old[_T["version"]]))[_T["is_current"]] = False
                new = list(old)
                new[_T["version"]] = event.version or old[_T["version"]] + 1
                new[_T["lsn"]], new[_T["ts"]] = lsn, event.ts
                new[_T["occurred_at"]], new[_T["actor"]] = event.occurred_at, event.actor
                new[_T["text"]], new[_T["variables"]] = event.text, _variables(event.variables)
                if event.name is not None:
                    new[_T["name"]] = event.name
                if event.description is not None:
                    new[_T["description"]] = event.description
                if event.tags is not None:
                    new[_T["tags"]] = list(event.tags)
                new[_T["semver"]] = ev.template_semver(event)
                new[_T["is_current"]] = True
                templates.add(new)
            case _:
                pass

    def bulk(self, con: duckdb.DuckDBPyConnection, staged: Staged) -> None:
        if "deleted" in staged:  # a tombstone covers every version
            con.execute(
                "UPDATE templates SET deleted_ts = d.ts FROM stage_deleted d "
                "WHERE templates.id = d.node_id"
            )
