"""Export of the projections (Parquet, the session document) and the proof that an import of
a session's export folds into the very same rows as the session had in its source store."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest

import eventlog
from eventlog._demo import record_demo
from projections import (
    TABLE_NAMES,
    MemoryGraph,
    connect,
    export_parquet,
    export_sessions,
    rebuild,
    session_document,
)

LMG = Path(sys.executable).with_name("lmg")


def _lmg(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LMG, *args], check=False, capture_output=True, text=True)


_SESSION_COLUMN = {
    "sessions": "id",
    "agents": None,
    "templates": None,
    "agent_stats": None,
    "spans": None,  # spans name traces, not sessions; the demo records none
}


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, uuid.UUID]:
    """A store with the demo session and two other sessions (one forked from the demo)."""
    store = tmp_path / "a"
    with MemoryGraph.open(store) as g:
        other = g.create_session(metadata={"user": "bob"})
        g.add_prompt(other.id, "before", occurred_at="2026-01-02T03:04:05Z")
        session = record_demo(g)
        g.add_prompt(other.id, "after")
    return store, session


def _rows(store: Path, table: str, session: uuid.UUID) -> list[tuple[Any, ...]]:
    """A table's rows of one session (global tables whole), without the `lsn` column: LSNs
    are positions in a log, and a session imported alone sits elsewhere in its new one."""
    with connect(store) as con:
        columns = [c[0] for c in con.execute(f"DESCRIBE {table}").fetchall() if c[0] != "lsn"]
        column = _SESSION_COLUMN.get(table, "session_id")
        where = "" if column is None else f" WHERE {column} = '{session}'"
        query = f"SELECT {', '.join(columns)} FROM {table}{where} ORDER BY ALL"
        return con.execute(query).fetchall()


def test_session_import_reproduces_the_session_projections(
    source: tuple[Path, uuid.UUID], tmp_path: Path
) -> None:
    store, session = source
    out = io.BytesIO()
    eventlog.export_events(store, out, sessions=[session])
    eventlog.import_events(tmp_path / "b", out.getvalue().splitlines())
    rebuild(store, snapshots=None)
    rebuild(tmp_path / "b", snapshots=None)
    for table in TABLE_NAMES:
        expected = _rows(store, table, session)
        assert _rows(tmp_path / "b", table, session) == expected, table
        assert expected or table in {"nodes", "spans"}, f"the demo has no {table} rows: a weak test"


@pytest.mark.slow
def test_whole_store_import_reproduces_every_table_with_lsns(
    source: tuple[Path, uuid.UUID], tmp_path: Path
) -> None:
    store, _ = source
    out = io.BytesIO()
    eventlog.export_events(store, out)
    eventlog.import_events(tmp_path / "b", out.getvalue().splitlines())
    rebuild(store, snapshots=None)
    rebuild(tmp_path / "b", snapshots=None)
    for table in TABLE_NAMES:
        with connect(store) as a, connect(tmp_path / "b") as b:
            query = f"SELECT * FROM {table} ORDER BY ALL"
            assert a.execute(query).fetchall() == b.execute(query).fetchall(), table


def test_parquet_export_is_read_without_our_code(
    source: tuple[Path, uuid.UUID], tmp_path: Path
) -> None:
    store, session = source
    counts = export_parquet(store, tmp_path / "pq")
    assert set(counts) == set(TABLE_NAMES)
    days = [p.name for p in (tmp_path / "pq" / "prompts").iterdir()]
    assert days and all(d.startswith("day=20") for d in days)  # by the day of `ts`
    for table in TABLE_NAMES:
        read = ds.dataset(tmp_path / "pq" / table, format="parquet", partitioning="hive")
        assert read.count_rows() == counts[table], table
    prompts = ds.dataset(tmp_path / "pq" / "prompts", partitioning="hive").to_table()
    assert str(session) in prompts.column("session_id").to_pylist()  # ids as text
    mode = (tmp_path / "pq" / "prompts").stat().st_mode & 0o777
    assert mode == 0o700


def test_parquet_export_of_one_session(source: tuple[Path, uuid.UUID], tmp_path: Path) -> None:
    store, session = source
    counts = export_parquet(store, tmp_path / "pq", sessions=[session])
    table = ds.dataset(tmp_path / "pq" / "prompts", partitioning="hive").to_table()
    assert set(table.column("session_id").to_pylist()) == {str(session)}
    assert counts["sessions"] == 1


def test_parquet_export_refuses_a_non_empty_directory(
    source: tuple[Path, uuid.UUID], tmp_path: Path
) -> None:
    (tmp_path / "pq").mkdir()
    (tmp_path / "pq" / "keep").write_text("mine")
    run = _lmg("export", str(source[0]), "--format", "parquet", "-o", str(tmp_path / "pq"))
    assert run.returncode != 0 and "not an empty directory" in run.stderr
    assert "Traceback" not in run.stderr
    assert [p.name for p in (tmp_path / "pq").iterdir()] == ["keep"]


@pytest.mark.slow
def test_session_document_holds_the_session_and_its_nodes(
    source: tuple[Path, uuid.UUID],
) -> None:
    store, session = source
    run = _lmg("export", str(store), "--format", "session", "--session", str(session))
    assert run.returncode == 0, run.stderr
    (doc,) = [json.loads(line) for line in run.stdout.splitlines()]
    assert doc["format"] == "llm-memory-graph/session@1"
    assert doc["session"]["id"] == str(session)
    assert doc["session"]["metadata"] == {"user": "ada", "channel": "chat"}  # JSON, not text
    assert len(doc["prompts"]) == 2 and len(doc["responses"]) == 2
    assert len(doc["tool_invocations"]) == 2 and doc["handoffs"] and doc["edges"]
    assert {a["name"] for a in doc["agents"]} == {"triage", "coder"}
    assert doc["templates"]
    for table in ("prompts", "responses", "tool_invocations", "edges"):
        assert {row["session_id"] for row in doc[table]} == {str(session)}


def test_session_document_import_reproduces_the_session_projections(
    source: tuple[Path, uuid.UUID], tmp_path: Path
) -> None:
    """`lmg import` reads the session document `lmg export --format session` writes (seed
    000's session export), and folds it into exactly the session's rows."""
    store, session = source
    doc = tmp_path / "session.json"
    run = _lmg(
        "export", str(store), "--format", "session", "--session", str(session), "-o", str(doc)
    )
    assert run.returncode == 0, run.stderr
    run = _lmg("import", str(tmp_path / "b"), str(doc))
    assert run.returncode == 0, run.stderr
    rebuild(store, snapshots=None)
    rebuild(tmp_path / "b", snapshots=None)
    for table in TABLE_NAMES:
        assert _rows(tmp_path / "b", table, session) == _rows(store, table, session), table


def test_documents_of_two_sessions_import_their_shared_events_once(
    source: tuple[Path, uuid.UUID], tmp_path: Path
) -> None:
    store, session = source
    with MemoryGraph.open(store) as g:
        (triage,) = g.rows("SELECT id FROM agents WHERE name = 'triage'")[0]
        other = g.create_session()
        g.assign_agent_to_prompt(g.add_prompt(other.id, "shared agent"), triage)
    out = io.BytesIO()
    assert export_sessions(store, out, [other.id, session]) == 2
    imported = eventlog.import_events(tmp_path / "b", out.getvalue().splitlines())
    assert imported.new_store
    rebuild(store, snapshots=None)
    rebuild(tmp_path / "b", snapshots=None)
    for chosen in (session, other.id):
        for table in TABLE_NAMES:
            if table != "agent_stats":  # global: the source has a third session's too
                assert _rows(tmp_path / "b", table, chosen) == _rows(store, table, chosen)


def test_a_session_document_without_events_is_refused(
    source: tuple[Path, uuid.UUID], tmp_path: Path
) -> None:
    store, session = source
    rebuild(store, snapshots=None)
    with connect(store) as con:
        doc = json.dumps(session_document(con, session), default=str)  # rows only
    (tmp_path / "old.json").write_text(doc + "\n")
    run = _lmg("import", str(tmp_path / "b"), str(tmp_path / "old.json"))
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert "carries no events" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()
