"""Files made from a store (projections, snapshots, forks, ``--out``): never through a link,
as private as the store whatever the umask.

A link planted at ``projections.duckdb.lock`` once made `lmg project` truncate the file it
pointed at; with the usual umask 022, everything derived from a store was world-readable.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import eventlog
import projections
import replay
from tests.conftest import VICTIM
from tests.eventlog.test_file_safety import assert_private

LMG = Path(sys.executable).with_name("lmg")


def lmg(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [str(LMG), *map(str, args)]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)


def assert_one_line_refusal(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "symbolic link" in result.stderr


def make_store(path: Path, *, group_readable: bool = False) -> Path:
    with eventlog.open(path, segment_bytes=4096, group_readable=group_readable) as log:
        for i in range(40):
            s = log.create_session(metadata={"i": str(i)})
            log.add_prompt(s.id, "p" * 300)
    return path


def test_symlinked_folder_lock_is_refused_and_its_target_untouched(
    store: Path, victim: Path
) -> None:
    make_store(store)
    (store / "projections.duckdb.lock").symlink_to(victim)
    assert_one_line_refusal(lmg("project", store))
    assert victim.read_bytes() == VICTIM
    assert not (store / "projections.duckdb").exists()


@pytest.mark.parametrize("suffix", ["", ".wal", ".lock", ".gate", ".turnstile", ".waiting"])
@pytest.mark.slow
def test_database_elsewhere_refuses_links(
    store: Path, victim: Path, tmp_path: Path, suffix: str
) -> None:
    """With --database outside the store, the projections' own checks are all that stand."""
    make_store(store)
    db = tmp_path / "elsewhere" / "p.duckdb"
    db.parent.mkdir()
    Path(f"{db}{suffix}").symlink_to(victim)
    assert_one_line_refusal(lmg("project", store, "--database", db))
    assert victim.read_bytes() == VICTIM


@pytest.mark.slow
def test_projections_and_snapshots_are_private_under_umask_022(
    store: Path, umask_022: None
) -> None:
    make_store(store)
    result = lmg("project", store, "--snapshot-every", "20")
    assert result.returncode == 0, result.stderr
    replay.snapshot(store)
    assert (store / "projections.duckdb").is_file() and (store / "snapshots" / "chunks").is_dir()
    assert_private(store)


def test_fork_is_private_under_umask_022(store: Path, tmp_path: Path, umask_022: None) -> None:
    make_store(store)
    replay.fork(store, 30, tmp_path / "fork")
    assert_private(tmp_path / "fork")


def test_every_file_of_a_store_is_private_after_a_fold_a_snapshot_and_an_export(
    store: Path, tmp_path: Path, umask_022: None
) -> None:
    """DuckDB makes the database's write-ahead log itself, with the umask's modes, at the
    first commit after each checkpoint: ``projections.duckdb.wal`` was 0644 while a graph
    (or a projector, or the service) held the database, beside store files all 0600."""
    make_store(store)
    with projections.MemoryGraph.open(store, idle_s=600) as graph:
        assert graph.sql("SELECT count(*) FROM sessions").fetchall() == [(40,)]
        assert (store / "projections.duckdb.wal").is_file()  # the fold's, until a checkpoint
        assert_private(store)
    replay.snapshot(store)
    assert_private(store)
    with projections.MemoryGraph.open(store, idle_s=600) as graph:
        graph.create_session()  # a first commit after the checkpoint makes a new log
        assert graph.sql("SELECT count(*) FROM sessions").fetchall() == [(41,)]
        assert (store / "projections.duckdb.wal").is_file()
        assert_private(store)
    projections.export_parquet(store, tmp_path / "export")
    assert_private(store)
    assert_private(tmp_path / "export")


def test_duckdb_spills_into_a_directory_with_the_modes_of_the_databases(
    store: Path, tmp_path: Path, umask_022: None
) -> None:
    """A query that outgrows the memory limit spills into ``<db>.tmp``: made by the open
    with the database directory's owner and group bits, never others' (it was DuckDB's, with
    the umask's: 0755, its files 0644, beside a 0640 database in a directory of 0755)."""
    make_store(store)
    db = tmp_path / "elsewhere" / "p.duckdb"
    db.parent.mkdir()
    db.parent.chmod(0o755)
    spill = Path(f"{db}.tmp")
    spilled: set[str] = set()  # what was in the spill directory while the query ran
    modes: set[int] = set()  # its modes, each time
    running = threading.Event()

    def watch() -> None:
        while running.is_set():
            with contextlib.suppress(FileNotFoundError):
                modes.add(spill.stat().st_mode & 0o777)
                spilled.update(p.name for p in spill.iterdir())
            time.sleep(0.0005)

    with projections.MemoryGraph.open(store, database=db, memory_limit="64MB", idle_s=600) as graph:
        running.set()
        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            groups = graph.sql(
                "SELECT count(*) FROM (SELECT md5(range::VARCHAR) AS s, count(*) "
                "FROM range(1500000) GROUP BY s)"
            ).fetchall()
        finally:
            running.clear()
            watcher.join()
    assert groups == [(1_500_000,)]
    assert any(name.startswith("duckdb_temp") for name in spilled), spilled  # it spilled
    assert modes == {0o750}, modes
    assert spill.stat().st_mode & 0o777 == 0o750
    assert db.stat().st_mode & 0o777 == 0o640


@pytest.mark.slow
def test_replay_out_is_private_under_umask_022(
    store: Path, tmp_path: Path, umask_022: None
) -> None:
    make_store(store)
    out = tmp_path / "out" / "past.duckdb"
    out.parent.mkdir()
    out.parent.chmod(0o755)
    result = lmg("replay", store, "--at", "30", "--out", out)
    assert result.returncode == 0, result.stderr
    assert [p.name for p in out.parent.iterdir()] == ["past.duckdb"]  # nothing left beside
    assert_private(out.parent, 0o600, 0o755)


def test_group_readable_store_widens_what_is_made_from_it(
    store: Path, tmp_path: Path, umask_022: None
) -> None:
    make_store(store, group_readable=True)
    replay.snapshot(store)
    replay.fork(store, 30, tmp_path / "fork")
    out = tmp_path / "past.duckdb"
    with replay.at(store, lsn=30, out=out):
        pass
    assert_private(store, 0o640, 0o750)
    assert_private(tmp_path / "fork", 0o640, 0o750)
    assert out.stat().st_mode & 0o777 == 0o640
