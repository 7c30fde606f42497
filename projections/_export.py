"""Export of the projections: every table as Parquet, and a session as one JSON document.

Parquet: one directory per table under the destination. The tables that grow with use
(prompts, responses, tool calls, handoffs, edges, nodes) are partitioned by the UTC day of
their ``ts`` (``prompts/day=2026-11-20/data_0.parquet``, Hive style); the others are one
file (``agents/data.parquet``). Columns are those of docs/sql.md, with ids (UUIDs) written as
text and JSON columns as JSON text, so DuckDB, pandas, pyarrow and Spark read them as they are.

The session document is the Rust crate's session export: one session with its prompts, responses,
tool calls, handoffs, edges and nodes, and the agents and templates they use, as one JSON
object (columns as in docs/sql.md, times as int ns). Beside the rows, ``events`` holds the
session's events export (`eventlog.export_events` of the session): what `eventlog.import_events`
reads of a document, so that its import folds into exactly the rows it shows.
"""

from __future__ import annotations

import errno
import io
import os
import re
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

import duckdb
import msgspec

import eventlog
from eventlog._copy import sync_tree
from eventlog._files import owned, process_alive
from eventlog._index import fsync_dir
from eventlog._time import TimeLike, to_ns

from ._schema import TABLE_NAMES
from .errors import BadArgument, ProjectionError, ProjectorBusy
from .projector import Projector, connect, read_connection

__all__ = [
    "SESSION_FORMAT",
    "being_written",
    "export_parquet",
    "export_sessions",
    "remove_abandoned",
    "session_document",
    "write_parquet",
]

SESSION_FORMAT = "llm-memory-graph/session@1"
_BY_DAY = frozenset({"prompts", "responses", "tool_invocations", "handoffs", "edges", "nodes"})
_SESSION_TABLES = ("prompts", "responses", "tool_invocations", "handoffs", "edges", "nodes")
_BUILDING = "exporting-"  # `.DEST.exporting-PID`: an export being written, beside DEST


def export_parquet(
    store: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    sessions: Iterable[uuid.UUID | str] | None = None,
    start_time: TimeLike | None = None,
    stop_time: TimeLike | None = None,
    database: str | os.PathLike[str] | None = None,
) -> dict[str, int]:
    """Write every table of `store`'s projections as Parquet under `dest` (a new or empty
    directory); return the rows written per table. Folds the log first unless a projector
    is running (then its last commit is exported). See `write_parquet` for the filters."""
    target = Path(dest)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BadArgument(f"{target} already exists and is not an empty directory")
    _catch_up_if_free(store, database)
    # Written beside `dest` and renamed into place (over the empty directory allowed): a
    # failure or a kill midway leaves no `dest` that a reader would take for the export.
    remove_abandoned(target)
    building = being_written(target)
    try:
        with read_connection(store, database, sandbox=False) as con:  # COPY writes files
            counts = write_parquet(
                con, building, sessions=sessions, start_time=start_time, stop_time=stop_time
            )
        sync_tree(building)
        try:
            os.rename(building, target)
        except OSError as exc:  # made since the check above
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise
            raise BadArgument(f"{target} already exists and is not an empty directory") from None
        fsync_dir(target.parent)
    except duckdb.Error as exc:  # a full disk, say: DuckDB's own error, naming `dest`
        said = _said(exc).replace(str(building), str(target))
        raise ProjectionError(f"the Parquet export to {target} failed: {said}") from None
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return counts


def _said(exc: duckdb.Error) -> str:
    """DuckDB's message in one line; of an I/O error, the message within its JSON details
    (`Could not write file "...": File too large`)."""
    said = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    found = re.search(r'"exception_message":("(?:[^"\\]|\\.)*")', said)
    return str(msgspec.json.decode(found.group(1))) if found else f"DuckDB: {said}"


def being_written(target: Path) -> Path:
    """Where this process writes an export to `target` until it is whole: beside it, hidden,
    named with the pid so that `remove_abandoned` knows a killed writer's."""
    return target.with_name(f".{target.name}.{_BUILDING}{os.getpid()}")


def remove_abandoned(target: Path) -> None:
    """Delete the half-written exports to `target` (files or Parquet directories) of killed
    processes (their pid is gone), of this user only (`owned`): in a shared directory (a
    sticky ``/tmp``) another user's, or one planted under that name, failed the export
    ("Operation not permitted"), and run as root the export deleted it."""
    if not target.parent.is_dir():
        return
    for leftover in target.parent.glob(f".{target.name}.{_BUILDING}*"):
        pid = leftover.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not process_alive(int(pid)) and owned(leftover):
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def export_sessions(
    store: str | os.PathLike[str],
    out: BinaryIO,
    sessions: Iterable[uuid.UUID | str],
    *,
    database: str | os.PathLike[str] | None = None,
) -> int:
    """Write each session's document (`session_document`) to `out`, one JSON line each;
    return how many. Folds the log first unless a projector is running."""
    _catch_up_if_free(store, database)
    count = 0
    with connect(store, database) as con:
        for session in sessions:
            document = session_document(con, session)
            events = io.BytesIO()
            eventlog.export_events(store, events, sessions=[_uuid(session)])
            document["events"] = [msgspec.Raw(e) for e in events.getvalue().splitlines()]
            out.write(msgspec.json.encode(document) + b"\n")
            count += 1
    return count


def _catch_up_if_free(
    store: str | os.PathLike[str], database: str | os.PathLike[str] | None
) -> None:
    """Fold what the log holds, unless a projector is following it (then export its last
    commit: a following projector is at most a moment behind)."""
    try:
        with Projector(store, database) as projector:
            projector.catch_up()
    except ProjectorBusy:
        pass


def write_parquet(
    con: duckdb.DuckDBPyConnection,
    dest: Path,
    *,
    sessions: Iterable[uuid.UUID | str] | None = None,
    start_time: TimeLike | None = None,
    stop_time: TimeLike | None = None,
) -> dict[str, int]:
    """Write the tables `con` holds under `dest`. With `sessions`, tables with a session hold
    only those sessions' rows (agents, templates and agent_stats are global: whole); with a
    time range, rows whose ``ts`` is in it (tables without ``ts``: whole)."""
    ids = None if sessions is None else [str(_uuid(s)) for s in sessions]
    if ids:  # as an events or a session export: an unknown session is an error, not no rows
        query = "SELECT CAST(id AS VARCHAR) FROM sessions WHERE CAST(id AS VARCHAR) IN ?"
        known = {row[0] for row in con.execute(query, [ids]).fetchall()}
        unknown = next((i for i in ids if i not in known), None)
        if unknown is not None:
            raise ProjectionError(f"no session {unknown} in the projections")
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    counts = {}
    for table in TABLE_NAMES:
        columns = con.execute(f"DESCRIBE {table}").fetchall()
        names = {c[0] for c in columns}
        where = _where(table, names, ids, start_time, stop_time)
        select = ", ".join(_portable(name, kind) for name, kind, *_ in columns)
        query = f"SELECT {select} FROM {table}{where}"
        (counts[table],) = con.execute(f"SELECT count(*) FROM ({query})").fetchall()[0]
        folder = dest / table
        folder.mkdir(mode=0o700)
        if table in _BY_DAY and counts[table]:
            day = "CAST(to_timestamp(ts // 1000000000) AT TIME ZONE 'UTC' AS DATE) AS day"
            con.execute(
                f"COPY (SELECT *, {day} FROM ({query})) TO {_literal(folder)} "
                "(FORMAT parquet, PARTITION_BY (day))"
            )
        else:
            con.execute(f"COPY ({query}) TO {_literal(folder / 'data.parquet')} (FORMAT parquet)")
    _make_private(dest)
    return counts


def _where(
    table: str,
    names: set[str],
    ids: list[str] | None,
    start_time: TimeLike | None,
    stop_time: TimeLike | None,
) -> str:
    clauses = []
    column = "id" if table == "sessions" else "session_id"
    if ids is not None and column in names:
        listed = ", ".join(f"'{i}'" for i in ids) or "NULL"
        clauses.append(f"{column} IN ({listed})")
    if "ts" in names:
        if start_time is not None:
            clauses.append(f"ts >= {to_ns(start_time, 'start_time')}")
        if stop_time is not None:
            clauses.append(f"ts < {to_ns(stop_time, 'stop_time')}")
    return f" WHERE {' AND '.join(clauses)}" if clauses else ""


def _portable(name: str, kind: str) -> str:
    """A column as readers without DuckDB's types want it: UUIDs as text."""
    if kind == "UUID":
        return f"CAST({name} AS VARCHAR) AS {name}"
    if kind == "UUID[]":
        return f"CAST({name} AS VARCHAR[]) AS {name}"
    return name


def _literal(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _make_private(root: Path) -> None:
    """Owner-only modes on what DuckDB wrote (it creates files with the process umask)."""
    for folder, _dirs, files in os.walk(root):
        os.chmod(folder, 0o700)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o600)


def _uuid(value: uuid.UUID | str) -> uuid.UUID:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise BadArgument(f"{value!r} is not a session id (a UUID)") from None


def session_document(con: duckdb.DuckDBPyConnection, session: uuid.UUID | str) -> dict[str, Any]:
    """The Rust crate's session export of one session (see the module docstring)."""
    sid = _uuid(session)
    found = _rows(con, "sessions", "id = ?", [sid])
    if not found:
        raise ProjectionError(f"no session {sid} in the projections")
    doc: dict[str, Any] = {"format": SESSION_FORMAT, "session": found[0]}
    for table in _SESSION_TABLES:
        doc[table] = _rows(con, table, "session_id = ?", [sid])
    agents = {
        row["agent_id"]
        for table in ("prompts", "responses", "tool_invocations")
        for row in doc[table]
        if row["agent_id"]
    } | {row[k] for row in doc["handoffs"] for k in ("from_agent_id", "to_agent_id") if row[k]}
    templates = {row["template_id"] for row in doc["prompts"] if row["template_id"]}
    doc["agents"] = _rows(con, "agents", "CAST(id AS VARCHAR) IN ?", [sorted(agents)])
    doc["templates"] = _rows(con, "templates", "CAST(id AS VARCHAR) IN ?", [sorted(templates)])
    return doc


def _rows(con: duckdb.DuckDBPyConnection, table: str, where: str, params: list[Any]) -> list[Any]:
    columns = con.execute(f"DESCRIBE {table}").fetchall()
    select = ", ".join(_portable(name, kind) for name, kind, *_ in columns)
    json_columns = {name for name, kind, *_ in columns if kind == "JSON"}
    cursor = con.execute(f"SELECT {select} FROM {table} WHERE {where} ORDER BY lsn", params)
    names = [d[0] for d in cursor.description or ()]
    return [
        {
            n: msgspec.json.decode(v) if n in json_columns and v is not None else v
            for n, v in zip(names, row, strict=True)
        }
        for row in cursor.fetchall()
    ]
