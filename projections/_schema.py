"""The projections' catalogue: which projections exist, their DDL, and the schema version."""

from __future__ import annotations

import contextlib
import warnings

import duckdb

from ._database import keep_wal_private
from ._fold import Projection
from .agents import Agents
from .conversations import Conversations
from .errors import SchemaMismatch
from .graph import Graph
from .sessions import Sessions
from .spans import Spans
from .templates import Templates
from .tools import Tools

__all__ = [
    "PROJECTIONS",
    "SCHEMA_VERSION",
    "TABLE_KEYS",
    "TABLE_NAMES",
    "SchemaRepaired",
    "check_version",
    "checkpoint",
    "ensure_schema",
]

SCHEMA_VERSION = 4
"""Bumped whenever a table's columns, constraints or a fold's meaning change; a database
of another version is refused (`SchemaMismatch`: ``lmg project --rebuild`` makes it anew).
3: the large tables lost their PRIMARY KEY (see `Table`). 4: so did `spans`, whose key is
now its trace id, span id and start (`projections.spans`)."""

PROJECTIONS: tuple[Projection, ...] = (
    Conversations(),
    Tools(),
    Agents(),
    Templates(),
    Graph(),
    Sessions(),
    Spans(),
)
"""In fold order: a projection's `bulk` may read rows an earlier one wrote in the same batch
(tool calls need their responses; session totals come last, over everything)."""

TABLE_NAMES = (*(t.name for p in PROJECTIONS for t in p.tables), "agent_stats")

TABLE_KEYS: dict[str, tuple[str, ...]] = {
    **{t.name: t.key for p in PROJECTIONS for t in p.tables},
    "agent_stats": ("agent_id",),
}
"""Each table's (and view's) key columns: what makes two rows the same row at two points."""


_BOOKKEEPING = ("lmg_meta", "lmg_checkpoints")


class SchemaRepaired(UserWarning):
    """The projections database lacked tables or checkpoints it must have (something other
    than the fold changed it): it was emptied, and the fold starts again from the log."""


def check_version(con: duckdb.DuckDBPyConnection) -> None:
    """Raise `SchemaMismatch` unless the database is projections of this version: another
    version's tables may have other columns, keys or meanings than the documented ones."""
    try:
        rows = con.execute("SELECT value FROM lmg_meta WHERE key = 'schema_version'").fetchall()
    except duckdb.CatalogException:
        raise SchemaMismatch(
            "the database holds no projections (no lmg_meta table): build them with lmg project"
        ) from None
    found = int(rows[0][0]) if rows else None
    if found != SCHEMA_VERSION:
        raise SchemaMismatch(
            f"the projections database has schema version {found}, this code writes "
            f"{SCHEMA_VERSION}: rebuild it (lmg project --rebuild)"
        )


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create every table, view and checkpoint row, or check an existing database's version.

    A database of this version that lacks a table, a view or a checkpoint row was changed by
    something other than the fold (``DROP TABLE`` from a DuckDB client): its rows can no
    longer be trusted, and the log is the truth, so it is emptied in one transaction and the
    next fold rebuilds it from LSN 0 (`SchemaRepaired` says so)."""
    (exists,) = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'lmg_meta'"
    ).fetchall()[0]
    missing: list[str] = []
    if exists:
        check_version(con)
        missing = _missing(con)
        if not missing:
            return
        warnings.warn(
            f"the projections database lacked {', '.join(missing)}: emptied it, "
            "to fold the whole log again",
            SchemaRepaired,
            stacklevel=2,
        )
    con.execute("BEGIN")
    try:
        if missing:
            _drop(con)
        con.execute("CREATE TABLE lmg_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)")
        con.execute(
            "CREATE TABLE lmg_checkpoints (projection VARCHAR PRIMARY KEY, "
            "lsn BIGINT NOT NULL, ts BIGINT)"
        )
        con.execute("INSERT INTO lmg_meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
        for p in PROJECTIONS:
            for table in p.tables:
                con.execute(table.ddl())
            con.execute("INSERT INTO lmg_checkpoints VALUES (?, -1, NULL)", [p.name])
        for p in PROJECTIONS:
            for view in p.views:
                con.execute(view)
        con.execute("COMMIT")
    except BaseException:
        # A failed COMMIT (a full disk) has ended the transaction: its error is the one to say.
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")
        raise
    keep_wal_private(con)


def _present(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """The main schema's tables and views: name to type (``BASE TABLE`` or ``VIEW``)."""
    return dict(
        con.execute(
            "SELECT table_name, table_type FROM information_schema.tables "
            "WHERE table_catalog = current_database() AND table_schema = 'main'"
        ).fetchall()
    )


def _missing(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The tables, views (and checkpoint rows, as ``lmg_checkpoints.<name>``) not there."""
    present = _present(con)
    missing = [name for name in (*_BOOKKEEPING, *TABLE_NAMES) if name not in present]
    if "lmg_checkpoints" in present:
        rows = con.execute("SELECT projection FROM lmg_checkpoints").fetchall()
        have = {name for (name,) in rows}
        missing += [f"lmg_checkpoints.{p.name}" for p in PROJECTIONS if p.name not in have]
    return missing


def _drop(con: duckdb.DuckDBPyConnection) -> None:
    """Drop what is left of the projections' tables and views (views first)."""
    present = _present(con)
    ours = [name for name in (*_BOOKKEEPING, *TABLE_NAMES) if name in present]
    for name in sorted(ours, key=lambda n: present[n] != "VIEW"):
        con.execute(f"DROP {'VIEW' if present[name] == 'VIEW' else 'TABLE'} {name}")


def checkpoint(con: duckdb.DuckDBPyConnection) -> int:
    """The last LSN every projection has folded (-1: none)."""
    (lsn,) = con.execute("SELECT min(lsn) FROM lmg_checkpoints").fetchall()[0]
    return -1 if lsn is None else int(lsn)
