"""The projections and snapshots fold one history: after the log loses its tail and new
events take the lost LSNs, nothing mixes the old events with the new.

Each case builds a log, folds it (`lmg project`, a snapshot at its end), then cuts the log the
way it happens: power loss in the `NONE` durability mode leaves a torn last segment, which
recovery truncates; or an older copy of the store is restored. New sessions then take the
lost LSNs. Every surface must show exactly the new history: `lmg project` rebuilds (saying
so in one line) and drops the stale snapshot, `replay.at` from a snapshot agrees with a fold
from zero, and an embedded `MemoryGraph` starts over.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

import eventlog
import projections
import replay
from eventlog.events import SessionCreated
from projections import TABLE_NAMES, HistoryChanged, MemoryGraph, SnapshotSkipped

LMG = str(Path(sys.executable).with_name("lmg"))
OLD, NEW = 30, 40  # sessions before the cut, and after it (more than were lost)


def lmg(*args: str | Path | int) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([LMG, *map(str, args)], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result


def add_sessions(store: Path, count: int, tag: str) -> None:
    with eventlog.open(store, durability=eventlog.Durability.NONE) as log:
        for i in range(count):  # one frame each: a cut can fall between any two
            log.create_session(metadata={"history": tag, "i": str(i)})


def tear_the_tail(store: Path, _backup: Path) -> None:
    """Power loss: the unsynced end of the last segment is cut mid-frame."""
    (segment,) = store.glob("*.seg")
    with open(segment, "r+b") as file:
        file.truncate(segment.stat().st_size * 2 // 3)
    with pytest.warns(eventlog.TornTailTruncated):
        eventlog.open(store).close()


def restore_the_backup(store: Path, backup: Path) -> None:
    """An older copy of the log put back (the projections and snapshots stay)."""
    for path in store.iterdir():
        if path.suffix in {".seg", ".idx", ".ids"}:
            path.unlink()
    for path in backup.iterdir():
        shutil.copy2(path, store / path.name)


CUTS: dict[str, Callable[[Path, Path], None]] = {
    "torn-tail": tear_the_tail,
    "restored-backup": restore_the_backup,
}


def rewritten(tmp_path: Path, cut: str) -> tuple[Path, int]:
    """A store whose projections and snapshot folded LSNs 0..OLD-1 of a history the log has
    since lost part of; the log then grew past OLD-1 again. Returns it and the old end."""
    store, backup = tmp_path / "store", tmp_path / "backup"
    add_sessions(store, OLD // 2, "kept")
    shutil.copytree(store, backup, ignore=shutil.ignore_patterns("LOCK", "*.jsonl"))
    add_sessions(store, OLD - OLD // 2, "lost")
    lmg("project", store)
    lmg("snapshot", store)
    assert [s.lsn for s in replay.snapshots(store)] == [OLD - 1]
    CUTS[cut](store, backup)
    add_sessions(store, NEW, "new")
    return store, OLD - 1


def sessions_in_log(store: Path) -> list[uuid.UUID]:
    with eventlog.open(store, readonly=True) as log:
        found = [r.event.id for r in log.read() if isinstance(r.event, SessionCreated)]
    return sorted(found)


@pytest.mark.parametrize("cut", CUTS)
@pytest.mark.slow
def test_lmg_project_rebuilds_when_the_log_lost_the_history_it_folded(
    tmp_path: Path, cut: str
) -> None:
    store, _old_end = rewritten(tmp_path, cut)
    result = lmg("project", store)
    warned = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warned == [
        "warning: the projections are rebuilt from zero: event 29 in the log is not the one "
        "it folded (the log was cut and rewritten)"
    ], result.stderr
    with projections.connect(store) as con:
        folded = sorted(row[0] for row in con.execute("SELECT id FROM sessions").fetchall())
    assert folded == sessions_in_log(store)
    assert replay.snapshots(store) == [], "the stale snapshot is dropped with the rebuild"
    assert "warning" not in lmg("project", store).stderr, "and the next run is quiet"


@pytest.mark.parametrize("cut", CUTS)
@pytest.mark.slow
def test_replay_from_a_snapshot_of_another_history_agrees_with_a_fold_from_zero(
    tmp_path: Path, cut: str
) -> None:
    store, old_end = rewritten(tmp_path, cut)
    with pytest.warns(SnapshotSkipped, match="the log"):
        view = replay.at(store, lsn=old_end)
    with view, replay.at(store, lsn=old_end, snapshots=False) as zero:
        assert view.snapshot is None
        for table in TABLE_NAMES:
            query = f"SELECT * FROM {table} ORDER BY ALL"
            assert view.rows(query) == zero.rows(query), table
    replayed = lmg("replay", store, "--at", old_end, "--sql", "SELECT count(*) FROM sessions")
    from_zero = lmg(
        "replay", store, "--at", old_end, "--no-snapshots", "--sql", "SELECT count(*) FROM sessions"
    )
    assert replayed.stdout == from_zero.stdout
    assert "skipped" in replayed.stderr


@pytest.mark.slow
def test_embedded_graph_starts_over_when_the_log_lost_the_history_it_folded(
    tmp_path: Path,
) -> None:
    store, _old_end = rewritten(tmp_path, "torn-tail")
    with pytest.warns(HistoryChanged, match="rebuilt from zero"):
        graph = MemoryGraph.open(store)
    with graph:
        folded = sorted(row[0] for row in graph.rows("SELECT id FROM sessions"))
    assert folded == sessions_in_log(store)


@pytest.mark.slow
def test_an_intact_history_is_checked_quietly(tmp_path: Path) -> None:
    store = tmp_path / "store"
    add_sessions(store, 5, "first")
    lmg("project", store)
    lmg("snapshot", store)
    add_sessions(store, 5, "second")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with projections.Projector(store) as projector:
            assert projector.catch_up() == 9
        with replay.at(store, lsn=9) as view:
            assert view.snapshot is not None and view.snapshot.lsn == 4
