"""The SQL sandbox: how a caller's SQL text runs on the projections.

SQL from a user (`lmg sql`, `lmg replay --sql`, `sql` and `rows` of a graph or a view) may
read the projections and nothing else. Two layers keep it there:

1. The DuckDB instance it runs on is configured (`SANDBOX` at connect, or `sandbox` once open)
   with external access off, so no statement reads or writes a file other than the database's
   own, reaches the network, or installs or loads an extension; and with its configuration
   locked, so no statement turns that back on. The instance's own work (folding, spilling to
   its temporary directory, Arrow tables registered by the fold) is not affected.
2. The text is parsed before it runs (`check`): only SELECT (with WITH, VALUES, DESCRIBE,
   SHOW, SUMMARIZE) and EXPLAIN of a SELECT pass (EXPLAIN ANALYZE runs what it explains),
   and none that names one of DuckDB's functions or views about the server itself
   (`REFUSED`: its settings and paths, other connections' activity) or one that changes the
   instance. The names are read from DuckDB's own parse tree (`json_serialize_sql`), so a
   quoted name is found and a string or a column that holds the same word is not.
   It then runs on its own cursor inside a READ ONLY transaction, so nothing it runs writes
   to the database, even where the instance may write (an embedded MemoryGraph, a
   `replay.step` walk).

A refusal is a `SqlRefused`, and any other error DuckDB raises for the caller's SQL a
`SqlFailed`: one line naming what was refused or failed, without a path of the host. The
caller's parameters are checked first (`_params.checked`: a `SqlFailed`), before the query.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import duckdb
import msgspec

from ._params import Params, checked
from .errors import SqlFailed, SqlRefused

__all__ = [
    "MAX_CHECKED",
    "REFUSED",
    "SANDBOX",
    "check",
    "one_line",
    "query_rows",
    "relation",
    "relation_on",
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

_SERVER = "shows the server's settings or paths"
_OTHERS = "shows other connections' activity"
_CHANGES = "changes the DuckDB instance"
_UNCHECKED = "runs SQL text that the sandbox cannot check"

REFUSED: dict[str, str] = {
    **dict.fromkeys(
        [
            "current_setting",
            "duckdb_databases",  # a table function, and a view of it
            "duckdb_extension_repositories",
            "duckdb_extensions",
            "duckdb_external_file_cache",
            "duckdb_external_resource_types",
            "duckdb_external_resources",
            "duckdb_profiling_settings",
            "duckdb_secrets",
            "duckdb_settings",
            "duckdb_temporary_files",
            "duckdb_variables",
            "getvariable",
            "pg_settings",  # a view of duckdb_settings()
            "pragma_database_list",  # a view of duckdb_databases()
            "pragma_database_size",  # its memory_limit
            "which_secret",
        ],
        _SERVER,
    ),
    **dict.fromkeys(
        ["duckdb_live_query_metrics", "duckdb_log_contexts", "duckdb_logs", "duckdb_logs_parsed"],
        _OTHERS,
    ),
    **dict.fromkeys(
        [
            "add_grammar_extension",
            "checkpoint",
            "create_external_resource",
            "deregister_external_resource",
            "destroy_external_resource",
            "disable_logging",
            "disable_profiling",
            "enable_logging",
            "enable_profiling",
            "force_checkpoint",
            "register_external_resource",
            "register_external_resource_type",
            "remove_grammar_extension",
            "truncate_duckdb_logs",
            "write_log",
        ],
        _CHANGES,
    ),
    # Their argument is SQL, or a table's name, as text: what it names is not in the parse.
    **dict.fromkeys(
        ["histogram_values", "json_execute_serialized_sql", "query", "query_table"], _UNCHECKED
    ),
}
"""What user SQL may not name, as a function or a view (of any schema), and why. The
catalog's own functions and views (`duckdb_tables()`, `duckdb_columns()`,
`information_schema`, `pragma_table_info`, ...) stay: they show only the projections."""

_VIEWS = frozenset({"duckdb_databases", "duckdb_logs", "pg_settings", "pragma_database_list"})
"""The names of `REFUSED` that are views (DuckDB's own): refused in a FROM as well. Other
names there are refused only where they are called, so a table alias or a CTE may use them."""

_REFUSED_TABLE_FUNCTIONS = {"histogram": _UNCHECKED}
"""Names refused only as a table function: the `histogram` aggregate is another function."""

_MENTIONS = re.compile(
    rf"\b(?:{'|'.join([*REFUSED, *_REFUSED_TABLE_FUNCTIONS, 'show'])})\b", re.IGNORECASE
)
"""A word of the text that may be one of those names, or a SHOW: only a text with one is
parsed for its names (a statement of its own; most queries name none of them)."""

MAX_CHECKED = 64 * 1024
"""The most characters of SELECT text whose names are checked (those with a `_MENTIONS`
word); more is refused. Its parse tree is some 30 to 100 times as large, in JSON."""

_ALLOWED = frozenset({duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN})
_READ_ONLY = "SQL on the projections is read-only: SELECT, WITH, EXPLAIN, DESCRIBE, SHOW, SUMMARIZE"
_SERIALIZE = "SELECT json_serialize_sql(?::VARCHAR)"
_TREE = msgspec.json.Decoder()

R = TypeVar("R")


def sandbox(con: duckdb.DuckDBPyConnection) -> None:
    """Apply `SANDBOX` to an instance already open, once its own setup is done (settings are
    per instance: this covers every cursor of `con`)."""
    for name, value in SANDBOX.items():
        con.execute(f"SET {name} = {str(value).lower()}")


def check(con: duckdb.DuckDBPyConnection, query: str) -> None:
    """Parse `query` without running it; raise `SqlRefused` unless every statement reads and
    names nothing in `REFUSED` (`SqlFailed` if DuckDB cannot parse it, or it holds none:
    DuckDB runs nothing then, and answers no result)."""
    translated(lambda: _check(con, query))


def _check(con: duckdb.DuckDBPyConnection, query: str) -> None:
    statements = con.extract_statements(query)
    if not statements:
        raise SqlFailed("the query holds no statement")
    selects = []
    for statement in statements:
        try:
            kind = statement.type
        except ValueError:  # a type the Python API does not know (UPDATE EXTENSIONS)
            raise SqlRefused(f"refused a statement of an unknown type: {_READ_ONLY}") from None
        if kind not in _ALLOWED:
            raise SqlRefused(f"refused a statement of type {kind.name}: {_READ_ONLY}")
        explained = kind == duckdb.StatementType.EXPLAIN
        selects.append(_explained(con, statement.query) if explained else statement.query)
    _check_names(con, [select for select in selects if _MENTIONS.search(select)])


_EXPLAIN = re.compile(
    r"\s*(?:(?:--[^\n]*(?:\n|$)|/\*.*?\*/)\s*)*EXPLAIN\s*(?:ANALYZE\b|\([^)]*\))?(.*)",
    re.IGNORECASE | re.DOTALL,
)


def _explained(con: duckdb.DuckDBPyConnection, query: str) -> str:
    """The SELECT an EXPLAIN explains. EXPLAIN ANALYZE runs the statement it explains,
    whatever its type (a CHECKPOINT, a CREATE TEMP TABLE): only a SELECT may be explained."""
    found = _EXPLAIN.fullmatch(query)
    inner = con.extract_statements(found.group(1)) if found else []
    if len(inner) != 1 or inner[0].type != duckdb.StatementType.SELECT:
        raise SqlRefused(f"refused: EXPLAIN of anything but a SELECT: {_READ_ONLY}")
    return inner[0].query


def _check_names(con: duckdb.DuckDBPyConnection, selects: list[str]) -> None:
    """Refuse SELECTs that call a function or read a view of `REFUSED`, or SHOW one of the
    instance's settings (``SHOW temp_directory``). They are parsed by DuckDB together (one
    statement, whatever their number), on a cursor of its own (`con` may hold the caller's
    open result), up to `MAX_CHECKED` characters: the parse tree is far larger than its text."""
    if not selects:
        return
    if sum(len(select) for select in selects) > MAX_CHECKED:
        raise SqlRefused(
            f"refused: a text of more than {MAX_CHECKED} characters that holds a word such as"
            " SHOW or the name of a function about the server cannot be checked (docs/sql.md)"
        )
    cursor = con.cursor()
    try:
        [(serialized,)] = cursor.execute(_SERIALIZE, [";\n".join(selects)]).fetchall()
        shown = _shown_names(_parse_tree(serialized))
        settings = _settings(cursor) if shown else set()
        for name in shown:
            if name.lower() in settings:
                raise SqlRefused(f"refused: SHOW {name} shows a server's setting (docs/sql.md)")
    finally:
        cursor.close()


def _parse_tree(serialized: str) -> Any:
    try:
        tree = _TREE.decode(serialized)
    except RecursionError:
        raise SqlRefused("refused: a statement nested too deeply to be checked") from None
    if tree.get("error"):  # DuckDB could not serialize a statement it parsed
        said = _PATH.sub("", str(tree.get("error_message", "")).partition("\n")[0])
        raise SqlRefused(f"refused: a statement the sandbox cannot read: {said}")
    return tree


def _shown_names(tree: Any) -> list[str]:
    """Walk the parse tree (without recursion: it may be deep) and raise `SqlRefused` at a
    name of `REFUSED`; return the names ``SHOW name`` shows (a table's, or a setting's)."""
    shown: list[str] = []
    nodes = [tree]
    while nodes:
        node = nodes.pop()
        if isinstance(node, list):
            nodes.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        nodes.extend(node.values())
        kind = node.get("type")
        if node.get("class") == "FUNCTION":  # a call: scalar, aggregate, table, macro
            _refuse(node["function_name"], REFUSED, "()")
        elif kind == "TABLE_FUNCTION" and isinstance(node.get("function"), dict):
            _refuse(node["function"].get("function_name", ""), _REFUSED_TABLE_FUNCTIONS, "()")
        elif kind == "BASE_TABLE" and node["table_name"].lower() in _VIEWS:
            _refuse(node["table_name"], REFUSED, "")
        elif kind == "SHOW_REF" and node.get("show_type") == "SHOW" and node["table_name"]:
            shown.append(node["table_name"])
    return shown


def _refuse(name: str, refused: dict[str, str], call: str) -> None:
    why = refused.get(name.lower())
    if why is not None:
        raise SqlRefused(f"refused: {name}{call} {why} (docs/sql.md)")


def _settings(cursor: duckdb.DuckDBPyConnection) -> set[str]:
    """The instance's settings, by name and alias (lower case), which ``SHOW name`` shows."""
    names: set[str] = set()
    for name, aliases in cursor.execute("SELECT name, aliases FROM duckdb_settings()").fetchall():
        names.update(n.lower() for n in [name, *(aliases or [])])
    return names


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
    bound = checked(params)
    check(cursor, query)
    cursor.execute("BEGIN TRANSACTION READ ONLY")
    translated(lambda: cursor.execute(query, bound))


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
    cursor = con.cursor()
    try:
        return relation_on(cursor, query, params)
    except BaseException:
        cursor.close()
        raise


def relation_on(
    cursor: duckdb.DuckDBPyConnection, query: str, params: Params = None
) -> duckdb.DuckDBPyRelation:
    """`relation` on `cursor`, a cursor of its own (the service's, to `interrupt` it)."""
    bound = checked(params)
    check(cursor, query)
    cursor.execute("BEGIN TRANSACTION READ ONLY")
    return translated(lambda: cursor.sql(query, params=bound))


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


# Each match starts where no space precedes it, and a quoted text ends at its quote: linear
# in the message, which may repeat the caller's text (a value that failed a cast). A space
# led each start of a run of them, and a text with a slash searched on past every slash for
# a quote the line did not hold (cut at a newline the value had): quadratic, holding the
# GIL, so 80 KB of '/a' froze the service 11 s and a 256 KiB query for minutes.
_QUOTED = re.compile(r'(?<!\s)\s*"[^"]*"')
_PATH = re.compile(r"""(?<!\s)\s*(?:"[^"\n]*"|'[^'\n]*'|(?<![\w.:/])/[\w.~-][^\s"',;:()\[\]]*)""")
"""A quoted text, or an unquoted absolute path: what may be a host path (`_unpathed`)."""
_SLASHED = re.compile(r"[/\\][\w.~-]")


def one_line(exc: BaseException) -> str:
    """The first line of DuckDB's message, without what may be a path of the host (a file it
    could not open, its temporary directory, the service user's home)."""
    return _PATH.sub(_unpathed, _first_line(exc))


def _unpathed(found: re.Match[str]) -> str:
    """What `_PATH` found, less a path: a quoted text with a slash in it, or an absolute
    path, goes with the space before it; a quoted text without one stays."""
    text = found.group()
    quoted = text.lstrip()[:1] in ("'", '"')
    return text if quoted and _SLASHED.search(text) is None else ""


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
