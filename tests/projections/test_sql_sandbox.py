"""The SQL sandbox (issue 9, item 1): a user's SQL reads the projections and nothing else.

Each attack of the issue runs through every surface that takes SQL text: ``lmg sql`` (a real
process), `projections.connect` (a raw DuckDB connection: DuckDB's own settings refuse),
`GraphView` over it, and `MemoryGraph.sql` / `rows` (a connection that can write, so the
statement check and the read-only transaction refuse). Each asserts a one-line refusal and
that nothing changed: the log's bytes and both stores' projections (and `lmg verify`, after
each ``lmg sql``).
Replay's surfaces are in tests/replay/test_sql_sandbox.py.
"""

from __future__ import annotations

import re
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

import projections
from projections import MemoryGraph, SchemaRepaired, SqlFailed, SqlRefused
from projections._sandbox import _REFUSED_TABLE_FUNCTIONS, _VIEWS, MAX_CHECKED, REFUSED
from tests._processes import LMG, WAIT_S

pytestmark = (
    pytest.mark.slow
)  # real server or CLI processes: `make test` runs them, `make test-fast` not

SEGMENT = "00000000000000000000.seg"


def attacks(store: Path, other: Path) -> dict[str, str]:
    """The issue's attacks, by name (`other` is a second store, the victim of ATTACH)."""
    return {
        "copy_to_segment": f"COPY (SELECT 'x') TO '{store / SEGMENT}' (FORMAT csv)",
        "attach_other_store_read_write": (
            f"ATTACH '{other / projections.DATABASE_FILE}' AS p (READ_WRITE); "
            "UPDATE p.prompts SET content = 'forged'"
        ),
        "drop_table": "DROP TABLE prompts",
        "update": "UPDATE prompts SET content = 'forged'",
        "read_text_etc_passwd": "SELECT * FROM read_text('/etc/passwd')",
        "read_csv": "SELECT * FROM read_csv('/etc/passwd')",
        "install_httpfs": "INSTALL httpfs",
        "set_config": "SET enable_external_access = true",
        "pragma": "PRAGMA enable_profiling",
        "explain_analyze_delete": "EXPLAIN ANALYZE DELETE FROM prompts",
    }


NAMES = list(attacks(Path(), Path()))


def populate(store: Path) -> None:
    """A small conversation, folded into the store's projections (closed afterwards)."""
    with MemoryGraph.open(store) as g:
        s = g.create_session(metadata={"user": "42"})
        p = g.add_prompt(s.id, "What is Rust?")
        g.add_response(p, "A systems language.")
        g.stats()  # a read: folds the whole log before the graph closes


def fingerprint(*stores: Path) -> dict[str, Any]:
    """What must not change: every log file's bytes and every projection table's rows."""
    found: dict[str, Any] = {}
    for store in stores:
        for path in sorted(store.iterdir()):
            if path.is_file() and not path.name.startswith(projections.DATABASE_FILE):
                found[str(path)] = path.read_bytes()
        con = duckdb.connect(str(store / projections.DATABASE_FILE), read_only=True)
        try:
            for name in projections.TABLE_NAMES:
                found[f"{store}:{name}"] = con.execute(f"FROM {name} ORDER BY ALL").fetchall()
        finally:
            con.close()
    return found


def verified(store: Path) -> bool:
    done = subprocess.run(
        [LMG, "verify", str(store)], check=False, capture_output=True, text=True, timeout=WAIT_S
    )
    return done.returncode == 0


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sandbox")
    store, other = root / "store", root / "other"
    populate(store)
    populate(other)
    return store, other


@pytest.fixture
def untouched(stores: tuple[Path, Path]) -> Iterator[tuple[Path, Path]]:
    """The two stores, checked unchanged after the test."""
    before = fingerprint(*stores)
    yield stores
    assert fingerprint(*stores) == before


def lmg_sql(store: Path, query: str) -> subprocess.CompletedProcess[str]:
    """`lmg sql STORE QUERY --no-fold`, run to its end."""
    return subprocess.run(
        [LMG, "sql", str(store), query, "--no-fold"],
        check=False,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )


@pytest.mark.parametrize("attack", NAMES)
def test_lmg_sql_refuses(untouched: tuple[Path, Path], attack: str) -> None:
    store, other = untouched
    query = attacks(store, other)[attack]
    done = lmg_sql(store, query)
    assert done.returncode != 0, done.stdout
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("Error: refused"), lines[0]
    assert done.stdout == ""
    assert verified(store)


@pytest.mark.parametrize("attack", NAMES)
def test_graph_view_over_connect_refuses(untouched: tuple[Path, Path], attack: str) -> None:
    store, other = untouched
    query = attacks(store, other)[attack]
    with projections.connect(store) as con:
        view = projections.GraphView(con)
        with pytest.raises(SqlRefused, match=r"^refused") as caught:
            view.rows(query)
        assert "\n" not in str(caught.value)
        assert str(store) not in str(caught.value) and str(other) not in str(caught.value)
        with pytest.raises(SqlRefused):
            view.sql(query)


# DuckDB's own error for each attack on the raw connection `connect` gives (its settings and
# read-only open are the sandbox there: nothing parses the text first).
RAW_REFUSALS: dict[str, tuple[type[duckdb.Error], str]] = {
    "copy_to_segment": (duckdb.PermissionException, "disabled by configuration"),
    "attach_other_store_read_write": (duckdb.PermissionException, "disabled by configuration"),
    "drop_table": (duckdb.InvalidInputException, "read-only mode"),
    "update": (duckdb.InvalidInputException, "read-only mode"),
    "read_text_etc_passwd": (duckdb.PermissionException, "disabled by configuration"),
    "read_csv": (duckdb.PermissionException, "disabled by configuration"),
    "install_httpfs": (duckdb.PermissionException, "disabled by configuration"),
    "set_config": (duckdb.InvalidInputException, "configuration has been locked"),
    "pragma": (duckdb.InvalidInputException, "configuration has been locked"),
    "explain_analyze_delete": (duckdb.InvalidInputException, "read-only mode"),
}


@pytest.mark.parametrize("attack", NAMES)
def test_connect_refuses(untouched: tuple[Path, Path], attack: str) -> None:
    store, other = untouched
    error, words = RAW_REFUSALS[attack]
    with projections.connect(store) as con, pytest.raises(error, match=words):
        con.execute(attacks(store, other)[attack])


@pytest.mark.parametrize("attack", NAMES)
def test_memory_graph_refuses(untouched: tuple[Path, Path], attack: str) -> None:
    store, other = untouched
    query = attacks(store, other)[attack]
    with MemoryGraph.open(store) as g:
        with pytest.raises(SqlRefused, match=r"^refused"):
            g.rows(query)
        with pytest.raises(SqlRefused, match=r"^refused"):
            g.sql(query).fetchall()
        assert g.rows("SELECT count(*) FROM prompts") == [(1,)]


def test_memory_graph_in_memory_refuses_drop_and_files(tmp_path: Path) -> None:
    """The ``":memory:"`` database is sandboxed as the file is."""
    with MemoryGraph.open(tmp_path / "s", database=":memory:") as g:
        g.create_session()
        with pytest.raises(SqlRefused):
            g.rows("DROP TABLE sessions")
        with pytest.raises(SqlRefused):
            g.rows("SELECT * FROM read_text('/etc/passwd')")
        assert g.rows("SELECT count(*) FROM sessions") == [(1,)]


def test_reads_still_run(stores: tuple[Path, Path]) -> None:
    """What the sandbox allows: SELECT, WITH, EXPLAIN, DESCRIBE, SHOW, SUMMARIZE, params."""
    store, _ = stores
    with MemoryGraph.open(store) as g:
        assert g.rows("WITH p AS (SELECT * FROM prompts) SELECT count(*) FROM p") == [(1,)]
        assert g.rows("SELECT count(*) FROM prompts WHERE content = ?", ["What is Rust?"]) == [(1,)]
        assert g.rows("EXPLAIN SELECT * FROM prompts")
        assert ("content",) in [r[:1] for r in g.rows("DESCRIBE prompts")]
        assert ("prompts",) in g.rows("SHOW TABLES")
        assert g.rows("SUMMARIZE prompts")
        assert g.sql("SELECT 1; SELECT 2").fetchall() == [(2,)]


def test_sql_relation_reads_the_graph_as_it_was(tmp_path: Path) -> None:
    """`sql` runs lazily in its own read-only transaction: later writes do not leak into it."""
    with MemoryGraph.open(tmp_path / "s") as g:
        g.create_session()
        relation = g.sql("SELECT count(*) FROM sessions")
        g.create_session()
        assert g.rows("SELECT count(*) FROM sessions") == [(2,)]
        assert relation.fetchall() == [(1,)]


def test_lmg_project_rebuilds_a_store_missing_a_table(tmp_path: Path) -> None:
    """``DROP TABLE prompts`` from another DuckDB client: `lmg project` says so and refolds."""
    store = tmp_path / "store"
    populate(store)
    expected = fingerprint(store)
    con = duckdb.connect(str(store / projections.DATABASE_FILE))
    con.execute("DROP TABLE prompts")
    con.close()
    done = subprocess.run(
        [LMG, "project", str(store)], check=False, capture_output=True, text=True, timeout=WAIT_S
    )
    assert done.returncode == 0, done.stderr
    warning = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert warning == [
        "warning: the projections database lacked prompts: emptied it, to fold the whole log again"
    ]
    assert fingerprint(store) == expected


def test_memory_graph_rebuilds_a_store_missing_a_checkpoint(tmp_path: Path) -> None:
    store = tmp_path / "store"
    populate(store)
    con = duckdb.connect(str(store / projections.DATABASE_FILE))
    con.execute("DELETE FROM lmg_checkpoints WHERE projection = 'tools'")
    con.execute("DROP VIEW agent_stats")
    con.close()
    with pytest.warns(SchemaRepaired, match="agent_stats, lmg_checkpoints.tools"):
        g = MemoryGraph.open(store)
    with g, warnings.catch_warnings():
        warnings.simplefilter("error")
        assert g.rows("SELECT count(*) FROM prompts") == [(1,)]
        assert g.rows("SELECT count(*) FROM agent_stats") == [(0,)]
        assert g.rows("SELECT min(lsn) FROM lmg_checkpoints") == [(g.stats().events - 1,)]


def test_a_refusal_names_no_path_of_the_host(untouched: tuple[Path, Path]) -> None:
    """DuckDB names the file it refused to open: the store's, or one under the home of the
    user running the service (its extensions and secrets); the refusal keeps neither."""
    store, _ = untouched
    home = str(Path.home())
    with projections.connect(store) as con:
        view = projections.GraphView(con)
        for query in [
            f"SELECT * FROM read_csv('{store / SEGMENT}')",
            "SELECT * FROM duckdb_extensions()",
        ]:
            with pytest.raises(SqlRefused, match=r"^refused") as caught:
                view.rows(query)
            assert str(store) not in str(caught.value) and home not in str(caught.value), query


# -- the server's own state: settings, paths, other connections -------------------------------

SERVER_STATE: list[tuple[str, str]] = [
    ("SELECT path FROM duckdb_databases()", "duckdb_databases()"),
    ("SELECT path FROM main.duckdb_databases", "duckdb_databases"),
    ("SELECT file FROM pragma_database_list", "pragma_database_list"),
    ("SELECT name, value FROM duckdb_settings()", "duckdb_settings()"),
    ('SELECT * FROM "duckdb_settings"()', "duckdb_settings()"),
    ("SELECT setting FROM pg_catalog.pg_settings", "pg_settings"),
    ("SELECT current_setting('temp_directory')", "current_setting()"),
    ("SELECT 'temp_directory'.current_setting()", "current_setting()"),
    ("SHOW temp_directory", "SHOW temp_directory"),
    ('SHOW "max_memory"', "SHOW max_memory"),
    ("SELECT * FROM duckdb_extensions()", "duckdb_extensions()"),
    ("SELECT * FROM duckdb_temporary_files()", "duckdb_temporary_files()"),
    ("SELECT * FROM duckdb_secrets()", "duckdb_secrets()"),
    ("SELECT * FROM which_secret('s3://bucket/key', 's3')", "which_secret()"),
    ("SELECT getvariable('x')", "getvariable()"),
    ("SELECT * FROM duckdb_logs", "duckdb_logs"),
    ("SELECT * FROM checkpoint()", "checkpoint()"),
    ("SELECT * FROM query('SELECT path FROM duckdb_databases()')", "query()"),
    ("SELECT * FROM query_table('pragma_database_list')", "query_table()"),
    ("FROM histogram('pragma_database_list', file)", "histogram()"),
    ("SUMMARIZE SELECT * FROM duckdb_settings()", "duckdb_settings()"),
    ("EXPLAIN SELECT * FROM duckdb_settings()", "duckdb_settings()"),
    ("SELECT 1; SELECT count(*) FROM prompts, duckdb_settings()", "duckdb_settings()"),
    ("SELECT count(*) FROM prompts WHERE content IN (SELECT value FROM duckdb_settings())",
     "duckdb_settings()"),
]  # fmt: skip
"""Queries that name DuckDB's own state, and the name their refusal gives."""

SERVER_STATE_BY_CLI = [0, 3, 6, 8, 12, 17]
"""The few of them also run through ``lmg sql`` (a process each)."""


def assert_refused_by_name(message: str, name: str, *stores: Path) -> None:
    """One line, naming what was refused, with no path of the host in it."""
    assert message.startswith(f"refused: {name} "), message
    assert "\n" not in message and str(Path.home()) not in message
    assert not [store for store in stores if str(store) in message], message


@pytest.mark.parametrize(("query", "name"), SERVER_STATE)
def test_memory_graph_refuses_the_servers_state(
    untouched: tuple[Path, Path], query: str, name: str
) -> None:
    """`rows` and `sql` refuse before anything runs: `sql` raised DuckDB's own
    PermissionException, naming the service user's home, once its relation ran."""
    store, _ = untouched
    with MemoryGraph.open(store) as g:
        for read in (g.rows, g.sql):
            with pytest.raises(SqlRefused) as caught:
                read(query)
            assert_refused_by_name(str(caught.value), name, store)


@pytest.mark.parametrize(("query", "name"), SERVER_STATE)
def test_graph_view_over_connect_refuses_the_servers_state(
    untouched: tuple[Path, Path], query: str, name: str
) -> None:
    store, _ = untouched
    with projections.connect(store) as con:
        view = projections.GraphView(con)
        for read in (view.rows, view.sql):
            with pytest.raises(SqlRefused) as caught:
                read(query)
            assert_refused_by_name(str(caught.value), name, store)


@pytest.mark.parametrize("index", SERVER_STATE_BY_CLI)
def test_lmg_sql_refuses_the_servers_state(untouched: tuple[Path, Path], index: int) -> None:
    store, _ = untouched
    query, name = SERVER_STATE[index]
    done = lmg_sql(store, query)
    assert done.returncode == 1 and done.stdout == "", done.stdout
    assert done.stderr.startswith("Error: "), done.stderr
    assert_refused_by_name(done.stderr.removeprefix("Error: ").rstrip("\n"), name, store)


def test_catalog_functions_and_the_words_themselves_still_run(stores: tuple[Path, Path]) -> None:
    """What users explore with stays, and the refused names are refused only as what they
    name: a string, a column, an alias or a CTE that holds the same word runs."""
    store, _ = stores
    reads = [
        "SELECT count(*) > 0 FROM duckdb_tables()",
        "SELECT count(*) FROM duckdb_columns() WHERE table_name = 'prompts'",
        "SELECT count(*) > 0 FROM information_schema.tables",
        "SELECT count(*) FROM pragma_table_info('prompts')",
        "SELECT count(*) > 0 FROM duckdb_functions()",
        "SELECT count(*) > 0 FROM duckdb_memory()",
        "SELECT 'duckdb_settings()', 'SELECT path FROM duckdb_databases()'",
        "SELECT current_setting, pg_settings FROM (SELECT 1 AS current_setting, 2 AS pg_settings)",
        "WITH query AS (SELECT 1 AS checkpoint) SELECT checkpoint FROM query",
        "SELECT histogram(lsn) FROM prompts",
        "SELECT count(*) FROM prompts WHERE content <> 'current_setting(''temp_directory'')'",
        "SHOW prompts",
        "SHOW TABLES",
        "DESCRIBE SELECT 1 AS duckdb_settings",
    ]
    with MemoryGraph.open(store) as g:
        for query in reads:
            assert g.rows(query), query
            assert g.sql(query).fetchall(), query


def test_a_long_text_naming_such_a_word_is_refused_unchecked(stores: tuple[Path, Path]) -> None:
    """The names are read from DuckDB's parse tree, some 30 to 100 times the size of its text
    (in JSON): past `MAX_CHECKED` characters, a text that needs it is refused instead, however
    many statements it holds. Without such a word, any length runs."""
    store, _ = stores
    values = ", ".join(["1"] * (MAX_CHECKED // 3))
    with MemoryGraph.open(store) as g:
        with pytest.raises(SqlRefused, match=rf"^refused: a text of more than {MAX_CHECKED} "):
            g.rows(f"SELECT 1 AS show, {values}")
        with pytest.raises(SqlRefused, match=r"^refused: a text of more than "):
            g.rows("SELECT 1 AS query; " * (MAX_CHECKED // 19 + 1))
        assert len(g.rows(f"SELECT {values}")[0]) == MAX_CHECKED // 3


def test_no_view_or_macro_of_duckdb_reaches_a_refused_name() -> None:
    """DuckDB's own views and macros run what they are defined as, unchecked: one that calls
    a refused function or reads a refused view is refused too, or shows nothing of it. A
    DuckDB upgrade that adds one fails here, as does a refused name DuckDB no longer has."""
    con = duckdb.connect()
    functions = {name for (name,) in con.execute("SELECT function_name FROM duckdb_functions()")
                 .fetchall()}  # fmt: skip
    views = {name for (name,) in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}
    assert not set(REFUSED) - functions - views
    assert views >= _VIEWS
    calls = re.compile(rf"\b({'|'.join(REFUSED)})\s*\(|\b({'|'.join(_VIEWS)})\b", re.I)
    harmless = {
        "pg_database": "database names and oids, from duckdb_databases()",
        "get_block_size": "a block size, from pragma_database_size()",
    }
    definitions = con.execute(
        "SELECT view_name, sql FROM duckdb_views() WHERE internal "
        "UNION ALL SELECT function_name, macro_definition FROM duckdb_functions() "
        "WHERE macro_definition IS NOT NULL"
    ).fetchall()
    reaching = {name for name, sql in definitions if calls.search(sql) and name not in harmless}
    assert reaching <= set(REFUSED) | set(_REFUSED_TABLE_FUNCTIONS), reaching


# -- DuckDB's errors: one line, translated, no path -------------------------------------------

PRIVATE = "/home/lmg-user/private"
"""A path a message must not repeat (here the caller's own: DuckDB names few of the host's)."""

FAILING = [
    "SELEC 1",
    "SELECT * FROM no_such_table",
    f'SELECT * FROM "{PRIVATE}"',
    "SELECT x::INT FROM (VALUES ('a')) t(x)",  # fails as it runs, not as it binds
]


NO_STATEMENT = ["", " ; -- nothing"]
"""Queries that hold no statement: `SqlFailed` before anything runs (no DuckDB error)."""


def assert_one_line(exc: BaseException) -> None:
    message = str(exc)
    assert message and "\n" not in message and PRIVATE not in message, message


def test_memory_graph_sql_errors_are_one_line_without_a_path(stores: tuple[Path, Path]) -> None:
    """Every DuckDB error of the caller's SQL is a `SqlFailed` (DuckDB's error its cause);
    `rows` raised a `ProjectionError` of DuckDB's whole message (its LINE and caret too), and
    `sql` a relation's error, DuckDB's own. A relation that fails as it runs still does."""
    store, _ = stores
    with MemoryGraph.open(store) as g:
        assert_each_fails(g.rows, g.sql)
        with pytest.raises(duckdb.ConversionException):
            g.sql(FAILING[-1]).fetchall()
        assert g.rows("SELECT count(*) FROM prompts") == [(1,)]
    with projections.connect(store) as con:
        view = projections.GraphView(con)
        assert_each_fails(view.rows, view.sql)


def test_a_query_of_no_statement_is_a_sql_failed(stores: tuple[Path, Path]) -> None:
    """`sql("")` answered None (no relation: `.fetchall()` an AttributeError), `rows("")`
    DuckDB's "No open result set", and the service an internal error (500), or a reset
    connection for Arrow."""
    store, _ = stores
    with MemoryGraph.open(store) as g:
        for query in NO_STATEMENT:
            for read in (g.rows, g.sql):
                with pytest.raises(SqlFailed, match=r"^the query holds no statement$"):
                    read(query)


def assert_each_fails(rows: Any, sql: Any) -> None:
    """Each of `FAILING` raises `SqlFailed` from `rows`, and from `sql` unless it fails only
    as it runs: one line, DuckDB's error its cause."""
    for query in FAILING:
        for read in [rows] if "VALUES" in query else [rows, sql]:
            with pytest.raises(SqlFailed) as caught:
                read(query)
            assert_one_line(caught.value)
            assert isinstance(caught.value.__cause__, duckdb.Error)


@pytest.mark.parametrize("query", FAILING)
def test_lmg_sql_errors_are_one_line_without_a_path(stores: tuple[Path, Path], query: str) -> None:
    store, _ = stores
    done = lmg_sql(store, query)
    assert done.returncode == 1 and done.stdout == "", done.stdout
    assert done.stderr.startswith("Error: ") and done.stderr.count("\n") == 1, done.stderr
    assert PRIVATE not in done.stderr, done.stderr
