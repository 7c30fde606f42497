"""The projections' schema: a database of an older version, and keys the log keeps unique.

Schema 3 declares no PRIMARY KEY on the large tables (docs/projections.md, "Schema"): a key
is unique because the log refuses a second node with an id, and because a batch and its
checkpoint commit together, so no batch is ever applied twice. These tests hold the fold to
the second half of that, through the public surface.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import duckdb
import pytest
import zstandard

import eventlog
import projections

from .test_projector import lmg, new_store, one_line_error, project_under_size_limit

GOLDEN = Path(__file__).with_name("golden")
GOLDEN_STORE = Path(__file__).parents[1] / "eventlog" / "golden" / "store"
TABLES = [t for t in projections.TABLE_NAMES if t != "agent_stats"]
INDEXED = {"agents", "templates", "lmg_checkpoints", "lmg_meta"}  # small tables with text keys


def duplicate_keys(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Per table, how many rows share their key with an earlier one (none, if all is well)."""
    found = {}
    for table in TABLES:
        columns = ", ".join(projections.TABLE_KEYS[table])
        (rows, distinct) = con.execute(
            f"SELECT count(*), (SELECT count(*) FROM (SELECT DISTINCT {columns} FROM {table})) "
            f"FROM {table}"
        ).fetchall()[0]
        if rows != distinct:
            found[table] = rows - distinct
    return found


def counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    return {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in TABLES}


def test_a_schema_2_database_is_refused_then_rebuilt(tmp_path: Path) -> None:
    """A database written by the previous release (schema 2, the golden store folded by it)
    is refused with one line saying to rebuild it, and `lmg project --rebuild` does."""
    store = tmp_path / "store"
    shutil.copytree(GOLDEN_STORE, store)
    database = store / projections.DATABASE_FILE
    golden = (GOLDEN / "schema-2.duckdb.zst").read_bytes()
    database.write_bytes(zstandard.ZstdDecompressor().decompress(golden))
    query = "SELECT count(*) FROM prompts"
    one_line_error(lmg("sql", store, query), "schema version 2", "lmg project --rebuild")
    # reading without a fold, too: another version's tables are not the documented ones
    no_fold = lmg("sql", store, query, "--no-fold")
    one_line_error(no_fold, "schema version 2", "lmg project --rebuild")
    with pytest.raises(projections.SchemaMismatch, match="schema version 2"):
        projections.connect(store).__enter__()
    with pytest.raises(projections.SchemaMismatch, match="schema version 2"):
        projections.MemoryGraph.open(store).close()
    assert lmg("project", store, "--rebuild").returncode == 0
    done = lmg("sql", store, query, "--format", "csv")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1:] == ["41"]  # what schema 2 held too
    with projections.connect(store) as con:
        keyed = con.execute(
            "SELECT DISTINCT table_name FROM duckdb_constraints() "
            "WHERE constraint_type IN ('PRIMARY KEY', 'UNIQUE')"
        ).fetchall()
    assert {name for (name,) in keyed} == INDEXED


def test_a_batch_folded_again_is_refused_and_adds_nothing(tmp_path: Path) -> None:
    """A batch handed to the fold a second time (a caller retrying after an error it could
    not place) starts before the checkpoint: refused, the tables unchanged."""
    store = tmp_path / "store"
    new_store(store, random.Random(14), 400)
    database = tmp_path / "p.duckdb"
    with eventlog.open(store, readonly=True) as log, duckdb.connect(str(database)) as con:
        projections.ensure_schema(con)
        projections.fold_records(con, log.read(0, 300), batch_events=100)
        before = counts(con)
        with pytest.raises(projections.ProjectionError, match="expect 300"):
            projections.fold_records(con, log.read(200, 300))
        assert projections.checkpoint(con) == 299
        assert counts(con) == before
        projections.fold_available(con, log)
        assert duplicate_keys(con) == {}


@pytest.mark.slow
def test_a_batch_whose_commit_failed_is_folded_once(tmp_path: Path) -> None:
    """The checkpoint is in the batch's transaction: a COMMIT cut short (here the WAL cannot
    grow, as a crash would cut it) leaves neither rows nor checkpoint, and the next fold adds
    each row once, though no key constraint would refuse a second."""
    store = tmp_path / "store"
    new_store(store, random.Random(15), 3000)
    database = store / projections.DATABASE_FILE
    assert lmg("project", store, "--snapshot-every", "0").returncode == 0
    with eventlog.open(store) as log:
        session = log.create_session()
        log.add_prompts_batch([(session.id, f"{n} " + "y" * 4096) for n in range(2_000)])
    limit = database.stat().st_size + 256 * 1024
    done = project_under_size_limit(store, limit)
    assert done.returncode != 0, done.stderr
    for attempt in range(2):  # the second one has nothing left to fold
        assert lmg("project", store, "--snapshot-every", "0").returncode == 0, attempt
    with projections.connect(store) as con:
        assert duplicate_keys(con) == {}
        (count,) = con.execute(
            "SELECT count(*) FROM prompts WHERE session_id = ?", [session.id]
        ).fetchall()[0]
    assert count == 2_000


def test_a_graph_that_fails_to_open_leaves_the_database_to_others(tmp_path: Path) -> None:
    """`MemoryGraph.open` that failed (here on a schema 2 database) kept the folder lock until
    the garbage collector came: `lmg project --rebuild`, the fix its error names, was refused
    ("already folded by an embedded MemoryGraph") in the same process's lifetime."""
    store = tmp_path / "store"
    shutil.copytree(GOLDEN_STORE, store)
    golden = (GOLDEN / "schema-2.duckdb.zst").read_bytes()
    (store / projections.DATABASE_FILE).write_bytes(zstandard.ZstdDecompressor().decompress(golden))
    failed = []
    for _ in range(2):  # the second open is refused for its schema, not for a lock
        try:
            graph = projections.MemoryGraph.open(store)
        except projections.SchemaMismatch as exc:
            failed.append(exc)
        else:
            graph.close()
    assert len(failed) == 2
    assert lmg("project", store, "--rebuild").returncode == 0


def test_edges_store_the_columns_a_walk_looks_up_uncompressed(tmp_path: Path) -> None:
    """A lineage walk finds edges by `from_id` or `to_id` and returns whole rows: those two
    and `properties` are stored plain (DuckDB's default encodings of them are the dearest to
    decode, docs/benchmarks.md); the other columns keep DuckDB's choice."""
    store = tmp_path / "store"
    new_store(store, random.Random(3), 400)
    projections.rebuild(store, snapshots=None)
    with projections.connect(store) as con:
        found = dict(
            con.execute(
                "SELECT column_name, list(DISTINCT compression) FROM pragma_storage_info('edges') "
                "WHERE segment_type <> 'VALIDITY' GROUP BY ALL"
            ).fetchall()
        )
    for column in ("from_id", "to_id", "properties"):
        assert found[column] == ["Uncompressed"], column
    assert found["lsn"] != ["Uncompressed"]


def test_a_database_that_holds_no_projections_is_refused_by_a_reader(tmp_path: Path) -> None:
    """`projections.connect` on a DuckDB file that is not projections (another tool's, named
    by `database`) says so in one line, rather than failing later on a missing table."""
    other = tmp_path / "other.duckdb"
    with duckdb.connect(str(other)) as con:
        con.execute("CREATE TABLE t (x INTEGER)")
    with pytest.raises(projections.SchemaMismatch, match="holds no projections"):
        projections.connect(tmp_path / "store", other).__enter__()
