"""`replay.diff`: what changed between two points, table by table, and the events between.

It folds once: to the earlier point, where it copies every table aside, then on to the later
one, and compares the two by each table's key in SQL (a full outer join; a row whose columns
differ in any way is changed).
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import msgspec

import projections
from eventlog import Record

from ._describe import describe
from ._points import Point, resolve
from ._workspace import Progress, Workspace
from .view import open_log

__all__ = ["Diff", "RowChange", "TableDiff", "diff"]

_BEFORE = "lmg_before"


class RowChange(msgspec.Struct, frozen=True):
    """One row changed between the points: its key, and the whole row before and after."""

    key: tuple[Any, ...]
    before: dict[str, Any]
    after: dict[str, Any]

    @property
    def columns(self) -> list[str]:
        """The columns whose values differ."""
        return [c for c in self.after if self.before.get(c) != self.after[c]]


class TableDiff(msgspec.Struct, frozen=True):
    """One table's changes: rows only at the later point, only at the earlier, and changed."""

    added: list[dict[str, Any]]
    removed: list[dict[str, Any]]
    changed: list[RowChange]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


class Diff(msgspec.Struct, frozen=True):
    """From the view at `start` to the view at `stop` (LSNs, resolved from the points given).

    `events` are the events that make the difference: LSNs start+1..stop, in log order.
    If the points were given latest first, `start` > `stop`: the tables then say what going
    back undoes (rows the later point has and the earlier lacks are `removed`).

    `names` maps the ids of agents and templates (by name) and of sessions (by their metadata's
    "title" or "name", if any) at either point to what a person calls them."""

    start: int
    stop: int
    tables: dict[str, TableDiff]
    events: list[Record]
    names: dict[uuid.UUID, str] = {}

    def changed_tables(self) -> list[str]:
        return [name for name, table in self.tables.items() if table]

    def text(self, rows: int = 5) -> str:
        """The diff as a person reads it (what `lmg diff` prints): the events, then each
        changed table, at most `rows` rows of each kind; ids given by name where one exists,
        times in ISO 8601, long strings elided with their length."""
        return "\n".join(describe(self, projections.TABLE_KEYS, rows))


def diff(
    path: str | os.PathLike[str],
    a: Point,
    b: Point,
    *,
    snapshots: bool = True,
    on_progress: Progress | None = None,
) -> Diff:
    """Compare the projections of the store at `path` just after point `a` and after `b`
    (an LSN, or a time: datetime, ISO string, `Time`). Every table and `agent_stats` is
    compared; unchanged tables have empty `TableDiff`s."""
    with open_log(path) as log:
        start, stop = resolve(log, a), resolve(log, b)
        low, high = min(start, stop), max(start, stop)
        workspace = Workspace(log, at_most=low, snapshots=snapshots)
        try:
            workspace.fold_to(low, on_progress)
            con = workspace.con
            with workspace.writing():  # the copies, and the joins' spills, are in the view
                con.execute(f"CREATE SCHEMA {_BEFORE}")
                for name in projections.TABLE_NAMES:
                    con.execute(f"CREATE TABLE {_BEFORE}.{name} AS SELECT * FROM main.{name}")
                workspace.fold_to(high, on_progress)
                backwards = start > stop
                tables = {name: _compare(con, name, backwards) for name in projections.TABLE_NAMES}
                names = dict(con.execute(_NAMES).fetchall())
            events = list(log.read(low + 1, high + 1))
        finally:
            workspace.discard()
    return Diff(start=start, stop=stop, tables=tables, events=events, names=names)


_NAMES = " UNION ".join(
    f"SELECT id, {label} FROM {schema}.{table} WHERE {label} IS NOT NULL"
    for schema in ("main", _BEFORE)
    for table, label in (
        ("agents", "name"),
        ("templates", "name"),
        ("sessions", "coalesce(metadata->>'title', metadata->>'name')"),
    )
)
"""What people call the ids a diff mentions, at either point (see `Diff.names`)."""


def _compare(con: Any, name: str, backwards: bool) -> TableDiff:
    keys = projections.TABLE_KEYS[name]
    on = " AND ".join(f"b.{k} IS NOT DISTINCT FROM a.{k}" for k in keys)
    order = ", ".join(f"coalesce(a.{k}, b.{k})" for k in keys)
    rows = con.execute(
        f"SELECT b.{keys[0]} IS NULL, a.{keys[0]} IS NULL, b, a "
        f"FROM {_BEFORE}.{name} AS b FULL OUTER JOIN main.{name} AS a ON {on} "
        f"WHERE b.{keys[0]} IS NULL OR a.{keys[0]} IS NULL OR b IS DISTINCT FROM a "
        f"ORDER BY {order}"
    ).fetchall()
    added, removed, changed = [], [], []
    if backwards:  # the "before" side is the later point
        rows = [(r[1], r[0], r[3], r[2]) for r in rows]
    for only_after, only_before, before, after in rows:
        if only_after:
            added.append(after)
        elif only_before:
            removed.append(before)
        else:
            changed.append(RowChange(tuple(after[k] for k in keys), before, after))
    return TableDiff(added=added, removed=removed, changed=changed)
