"""Export of the projections (Parquet, the session document) and the proof that an import of
a session's export folds into the very same rows as the session had in its source store."""

from __future__ import annotations

import functools
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
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
    ProjectionError,
    Projector,
    connect,
    export_parquet,
    export_sessions,
    rebuild,
    session_document,
)
from tests._processes import Child, run_with_full_disk

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


def _assert_one_line_error(run: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 1, one `Error: ...` line: no traceback, no Python class name."""
    assert run.returncode == 1, (run.stdout, run.stderr)
    assert len(run.stderr.splitlines()) == 1 and "Traceback" not in run.stderr, run.stderr
    line = run.stderr.strip()
    assert line.startswith("Error: ") and not re.search(r"[a-z](Error|Argument)\b", line), line
    for word in words:
        assert word in line, (word, line)
    return line


def _big_store(store: Path, prompts: int) -> None:
    """Prompts of incompressible text, their projections folded."""
    rng = random.Random(0)
    with eventlog.open(store, durability="none") as log:
        session = log.create_session()
        for _ in range(prompts // 500):
            log.add_prompts_batch([(session.id, rng.randbytes(100).hex()) for _ in range(500)])
    with Projector(store) as projector:
        projector.catch_up()


def test_parquet_export_of_an_unknown_session_is_an_error(
    source: tuple[Path, uuid.UUID], tmp_path: Path
) -> None:
    """It wrote the global tables and exited 0, as if the session had no rows (an events or
    a session export of it is an error): a typo made an export that looked complete."""
    store, session = source
    unknown = uuid.uuid4()
    with pytest.raises(ProjectionError, match=f"no session {unknown}"):
        export_parquet(store, tmp_path / "pq", sessions=[session, unknown])
    assert not (tmp_path / "pq").exists()
    args = ["export", str(store), "--format", "parquet", "--session", str(unknown)]
    _assert_one_line_error(_lmg(*args, "-o", str(tmp_path / "pq")), f"no session {unknown}")
    assert os.listdir(tmp_path) == [store.name]


def test_parquet_export_onto_a_full_disk_is_one_line_and_leaves_no_directory(
    tmp_path: Path,
) -> None:
    """`lmg export --format parquet` whose writes fail past 64 KiB: DuckDB's IOException went
    out as a traceback, and DEST was left half written (the tables before the failure, or
    empty directories), which a reader would take for the export."""
    store, dest = tmp_path / "store", tmp_path / "pq"
    _big_store(store, 2000)
    args = [str(LMG), "export", str(store), "--format", "parquet", "-o", str(dest)]
    line = _assert_one_line_error(run_with_full_disk(args, 65536), "File too large", str(dest))
    assert "exporting" not in line, line
    assert not dest.exists() and os.listdir(tmp_path) == [store.name]
    assert eventlog.verify(store) == []
    counts = export_parquet(store, dest)  # with room, the same export is whole
    assert counts["prompts"] == 2000
    assert ds.dataset(dest / "prompts", partitioning="hive").count_rows() == 2000


def test_cli_events_export_onto_a_full_disk_is_one_line_and_leaves_no_file(
    tmp_path: Path,
) -> None:
    """`lmg export -o FILE` whose writes fail past 64 KiB (the export is ~500 KB): a one-line
    error naming FILE (not its temporary name), no FILE and no temporary file left; the
    store is untouched and the same export with room is whole."""
    store, out = tmp_path / "store", tmp_path / "export.jsonl"
    _big_store(store, 2000)
    args = [str(LMG), "export", str(store), "-o", str(out)]
    line = _assert_one_line_error(run_with_full_disk(args, 65536), "File too large", str(out))
    assert "exporting" not in line and "Errno" not in line, line
    assert os.listdir(tmp_path) == [store.name]
    assert eventlog.verify(store) == []
    again = _lmg("export", str(store), "-o", str(out))
    assert again.returncode == 0, again.stderr
    assert len(out.read_bytes().splitlines()) == 2001


def test_cli_events_export_to_standard_output_onto_a_full_disk_is_one_line(
    tmp_path: Path,
) -> None:
    """`lmg export STORE > FILE` whose writes fail past 64 KiB: one line naming standard
    output (it said `[Errno 27] File too large`); the store is untouched."""
    store, out = tmp_path / "store", tmp_path / "export.jsonl"
    _big_store(store, 2000)
    args = ["sh", "-c", f'exec "{LMG}" export "{store}" > "{out}"']
    line = _assert_one_line_error(run_with_full_disk(args, 65536), "File too large")
    assert "standard output" in line and "Errno" not in line, line
    assert eventlog.verify(store) == []


def _table_written(child: Child, dest: Path) -> bool:
    """Has the Parquet export written a file of some table (or ended)?"""
    return child.proc.poll() is not None or any(
        dest.parent.glob(f".{dest.name}.exporting-*/*/*.parquet")
    )


@pytest.mark.slow
def test_cli_parquet_export_killed_mid_write_leaves_no_directory_that_looks_complete(
    tmp_path: Path,
) -> None:
    """`lmg export --format parquet` killed once it has written a table: no DEST (the
    tables written so far are in the hidden `.DEST.exporting-PID`), and the next export to
    DEST removes that and is whole."""
    store, dest = tmp_path / "store", tmp_path / "pq"
    _big_store(store, 8000)
    args = [str(LMG), "export", str(store), "--format", "parquet", "-o", str(dest)]
    child = Child(args, tmp_path, "export")
    child.wait_for(functools.partial(_table_written, child, dest), "a table written")
    child.kill()
    assert child.proc.returncode == -signal.SIGKILL, "the export ended before the kill"
    assert not dest.exists()
    assert eventlog.verify(store) == []
    again = _lmg("export", str(store), "--format", "parquet", "-o", str(dest))
    assert again.returncode == 0, again.stderr
    assert ds.dataset(dest / "prompts", partitioning="hive").count_rows() == 8000
    assert not [p for p in os.listdir(tmp_path) if p.startswith(f".{dest.name}")]


def _started(child: Child, folder: Path) -> bool:
    """Has the export written some bytes (into its file, or a temporary one beside it)?"""
    return child.proc.poll() is not None or any(
        p.stat().st_size > 0 for p in folder.glob("*export.jsonl*")
    )


def test_cli_export_killed_mid_write_leaves_no_file_that_imports(tmp_path: Path) -> None:
    """`lmg export -o FILE` killed midway left FILE holding the events up to the kill, cut
    at any byte: cut at a line's end, `lmg import` took it for the whole export."""
    store, out = tmp_path / "store", tmp_path / "export.jsonl"
    _big_store(store, 8000)
    child = Child([str(LMG), "export", str(store), "-o", str(out)], tmp_path, "export")
    child.wait_for(functools.partial(_started, child, tmp_path), "bytes written")
    time.sleep(random.uniform(0, 0.01))  # of the ~3.5 MB, at most some 100 KB are written
    child.kill()
    assert child.proc.returncode == -signal.SIGKILL, "the export ended before the kill"
    if out.exists():  # the kill came as the process exited: the export is whole
        assert len(out.read_bytes().splitlines()) == 8001, "a cut export under its name"
        out.unlink()
    assert eventlog.verify(store) == []
    again = _lmg("export", str(store), "-o", str(out))  # and the next export is whole
    assert again.returncode == 0, again.stderr
    assert len(out.read_bytes().splitlines()) == 8001
    assert not [p for p in os.listdir(tmp_path) if p.startswith(f".{out.name}")]


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="gives a file to another user: needs root")
def test_leftovers_of_another_user_are_not_deleted_by_export_or_import(tmp_path: Path) -> None:
    """A shared directory (a sticky /tmp) may hold another user's `.NAME.exporting-PID`
    (or one planted under that name): removing it as a killed export's failed the export
    ("Operation not permitted", naming the temporary file) and, run as root, deleted it."""
    store = tmp_path / "a"
    with eventlog.open(store) as log:
        log.create_session()
    dead = subprocess.Popen(["true"])
    dead.wait()
    export_leftover = tmp_path / f".out.jsonl.exporting-{dead.pid}"
    export_leftover.write_bytes(b"theirs")
    import_leftover = tmp_path / f".b.importing-{dead.pid}"
    import_leftover.mkdir()
    (import_leftover / "x").write_bytes(b"theirs")
    for path in (export_leftover, import_leftover, import_leftover / "x"):
        os.chown(path, 65534, 65534)
    run = _lmg("export", str(store), "-o", str(tmp_path / "out.jsonl"))
    assert run.returncode == 0, run.stderr
    run = _lmg("import", str(tmp_path / "b"), str(tmp_path / "out.jsonl"))
    assert run.returncode == 0, run.stderr
    assert export_leftover.read_bytes() == b"theirs"
    assert (import_leftover / "x").read_bytes() == b"theirs"


def test_cli_export_into_a_missing_directory_names_the_file_not_its_temporary(
    tmp_path: Path,
) -> None:
    """The error named ``.x.jsonl.exporting-PID``, a file the user never asked for."""
    store = tmp_path / "a"
    with eventlog.open(store) as log:
        log.create_session()
    target = tmp_path / "missing" / "x.jsonl"
    run = _lmg("export", str(store), "-o", str(target))
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert str(target) in run.stderr and "exporting" not in run.stderr


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


def test_documents_of_two_stores_concatenated_are_refused_not_half_imported(
    source: tuple[Path, uuid.UUID], tmp_path: Path
) -> None:
    """Documents of two stores, concatenated (`cat a.jsonl b.jsonl`), carry different events
    at the same source LSNs: the import kept the later and dropped the other store's whole
    session, reporting success."""
    store, session = source
    other_store = tmp_path / "other"
    with MemoryGraph.open(other_store) as g:
        other = record_demo(g)
    both = tmp_path / "both.jsonl"
    for path, chosen in ((store, session), (other_store, other)):
        out = io.BytesIO()
        export_sessions(path, out, [chosen])
        with both.open("ab") as f:
            f.write(out.getvalue())
    run = _lmg("import", str(tmp_path / "b"), str(both))
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert "line 2" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()


def test_a_document_carrying_two_events_at_one_lsn_is_refused(
    source: tuple[Path, uuid.UUID], tmp_path: Path
) -> None:
    """A damaged (or hostile) document with two different events at one LSN: one was
    silently left out."""
    store, session = source
    out = io.BytesIO()
    export_sessions(store, out, [session])
    document = json.loads(out.getvalue())
    twin = dict(document["events"][-1], id=str(uuid.uuid4()))
    document["events"].append(twin)
    (tmp_path / "doc.json").write_text(json.dumps(document) + "\n")
    run = _lmg("import", str(tmp_path / "b"), str(tmp_path / "doc.json"))
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert "carried twice" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()


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
