"""The SQL sandbox: how a caller's SQL text runs on the projections.

SQL from a user (`lmg sql`, `lmg replay --sql`, `sql` and `rows` of a graph or a view) may
read the projections and nothing else. Two layers keep it there:

1. The DuckDB instance it runs on is configured (`SANDBOX` at connect, or `sandbox` once open)
   with external access off, so no statement reads or writes a file other than the database's
   own, reaches the network, or installs or loads an extension; and with its configuration
   locked, so no statement turns that back on. The instance's own work (folding, spilling to
   its temporary directory, Arrow tables registered by the fold) is not affected.
2. The text is parsed before it runs (`check`): only SELECT (with WITH, VALUES, DESCRIBE,
   SHOW, SUMMARIZE) and EXPLAIN of a SELECT pass (EXPLAIN ANALYZE runs what it explains).
   It then runs on its own cursor inside a READ ONLY transaction, so nothing it runs writes
   to the database, even where the instance may write (an embedded MemoryGraph, a
   `replay.step` walk).

A refusal is a `SqlRefused`, and any other error DuckDB raises for the caller's SQL a
`SqlFailed`: one line naming what was refused or failed, without a path of the host.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import duckdb

from .errors import SqlFailed, SqlRefused

__all__ = [
    "SANDBOX",
    "check",
    "one_line",
    "query_rows",
    "relation",
    "sandbox",
    "start",
    "translated",
    "user_cursor",
]

SANDBOX: dict[str, str | bool | int | float | list[str]] = {
    "enable_external_access": False,  # no files but the database's own, no network
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "lock_configuration": True,  # last: no SET, RESET or PRAGMA may change the above
}
"""DuckDB's configuration of an instance that runs user SQL (given at connect)."""

_ALLOWED = frozenset({duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN})
_READ_ONLY = "SQL on the projections is read-only: SELECT, WITH, EXPLAIN, DESCRIBE, SHOW, SUMMARIZE"

Params = Sequence[Any] | dict[str, Any] | None
R = TypeVar("R")


def sandbox(con: duckdb.DuckDBPyConnection) -> None:
    """Apply `SANDBOX` to an instance already open, once its own setup is done (settings are
    per instance: this covers every cursor of `con`)."""
    for name, value in SANDBOX.items():
        con.execute(f"SET {name} = {str(value).lower()}")


def check(con: duckdb.DuckDBPyConnection, query: str) -> None:
    """Parse `query` without running it; raise `SqlRefused` unless every statement reads
    (`SqlFailed` if DuckDB cannot parse it)."""
    translated(lambda: _check(con, query))


def _check(con: duckdb.DuckDBPyConnection, query: str) -> None:
    for statement in con.extract_statements(query):
        try:
            kind = statement.type
        except ValueError:  # a type the Python API does not know (UPDATE EXTENSIONS)
            raise SqlRefused(f"refused a statement of an unknown type: {_READ_ONLY}") from None
        if kind not in _ALLOWED:
            raise SqlRefused(f"refused a statement of type {kind.name}: {_READ_ONLY}")
        if kind == duckdb.StatementType.EXPLAIN:
            _check_explained(con, statement.query)


_EXPLAIN = re.compile(
    r"\s*(?:(?:--[^\n]*(?:\n|$)|/\*.*?\*/)\s*)*EXPLAIN\s*(?:ANALYZE\b|\([^)]*\))?(.*)",
    re.IGNORECASE | re.DOTALL,
)


def _check_explained(con: duckdb.DuckDBPyConnection, query: str) -> None:
    """EXPLAIN ANALYZE runs the statement it explains, whatever its type (a CHECKPOINT, a
    CREATE TEMP TABLE): only a SELECT may be explained."""
    found = _EXPLAIN.fullmatch(query)
    inner = con.extract_statements(found.group(1)) if found else []
    if len(inner) != 1 or inner[0].type != duckdb.StatementType.SELECT:
        raise SqlRefused(f"refused: EXPLAIN of anything but a SELECT: {_READ_ONLY}")


@contextlib.contextmanager
def user_cursor(
    con: duckdb.DuckDBPyConnection, query: str, params: Params = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Check and run `query` on a new cursor of `con`, read-only; yields that cursor with its
    result (`description`, `fetchall`), closed (and its transaction ended) afterwards."""
    cursor = con.cursor()
    try:
        start(cursor, query, params)
        yield cursor
    finally:
        cursor.close()


def start(cursor: duckdb.DuckDBPyConnection, query: str, params: Params = None) -> None:
    """Check `query` and run it on `cursor`, a cursor of its own, in a READ ONLY transaction
    (`user_cursor` makes one; the service makes its own, to `interrupt` it at its time limit)."""
    check(cursor, query)
    cursor.execute("BEGIN TRANSACTION READ ONLY")
    translated(lambda: cursor.execute(query, params))


def query_rows(con: duckdb.DuckDBPyConnection, query: str, params: Params = None) -> list[Any]:
    """Every row of `query`, run as `user_cursor` runs it."""
    with user_cursor(con, query, params) as cursor:
        return translated(cursor.fetchall)


def relation(
    con: duckdb.DuckDBPyConnection, query: str, params: Params = None
) -> duckdb.DuckDBPyRelation:
    """`query` as a lazy DuckDB relation, checked, on its own cursor in a READ ONLY transaction.

    The relation keeps its cursor, and the transaction, until it is garbage: it reads the
    database as it was when it was made. It is DuckDB's: an error raised where it runs
    (`fetchall`, `df`, ...) is DuckDB's own."""
    check(con, query)
    cursor = con.cursor()
    try:
        cursor.execute("BEGIN TRANSACTION READ ONLY")
        return translated(lambda: cursor.sql(query, params=params))
    except BaseException:
        cursor.close()
        raise


def translated(fn: Callable[[], R]) -> R:
    """Call `fn` (a caller's statement, or a fetch of its rows): DuckDB's errors become one
    line without a path, the sandbox's refusals `SqlRefused` and the others `SqlFailed`.

    A closed connection (`duckdb.ConnectionException`) passes: it is not the SQL's doing,
    and the caller says why it was closed (the service: an erasure)."""
    try:
        return fn()
    except duckdb.ConnectionException:
        raise
    except duckdb.PermissionException as exc:  # external access is off
        # Without the path DuckDB names: it may be the host's (the service user's home).
        raise SqlRefused(f"refused: {_QUOTED.sub('', _first_line(exc))} (docs/sql.md)") from None
    except (duckdb.TransactionException, duckdb.InvalidInputException) as exc:
        if "read-only" in str(exc):  # a write the parse let through (EXPLAIN ANALYZE)
            raise SqlRefused(f"refused a write: {_READ_ONLY}") from None
        if "configuration has been locked" in str(exc):  # a function that sets a setting
            raise SqlRefused(f"refused: {one_line(exc)} (docs/sql.md)") from None
        raise SqlFailed(one_line(exc)) from exc
    except duckdb.Error as exc:  # a syntax error, an unknown table, a cast that fails, ...
        raise SqlFailed(one_line(exc)) from exc


_QUOTED = re.compile(r'\s*"[^"]*"')
_PATH = re.compile(
    r"""\s*(?:"[^"\n]*[/\\][\w.~-][^"\n]*"|'[^'\n]*[/\\][\w.~-][^'\n]*'"""
    r"""|(?<![\w.:/])/[\w.~-][^\s"',;:()\[\]]*)"""
)
"""A quoted text with a slash in it, or an unquoted absolute path: what may be a host path."""


def one_line(exc: BaseException) -> str:
    """The first line of DuckDB's message, without what may be a path of the host (a file it
    could not open, its temporary directory, the service user's home)."""
    return _PATH.sub("", _first_line(exc))


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
