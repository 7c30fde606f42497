"""A store's backup carries the newest snapshot of its projections; a restore writes it out as
the projections database, and folding the rest of the log gives the source's tables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import eventlog
from eventlog._demo import record_demo
from projections import (
    TABLE_NAMES,
    MemoryGraph,
    Projector,
    SnapshotPolicy,
    Snapshots,
    backup,
    checkpoint,
    connect,
    restore,
)

LMG = Path(sys.executable).with_name("lmg")


def _tables(store: Path) -> dict[str, list[tuple[object, ...]]]:
    with connect(store) as con:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in TABLE_NAMES}


def test_restore_builds_the_projections_from_the_backed_up_snapshot(tmp_path: Path) -> None:
    source = tmp_path / "source"
    with MemoryGraph.open(source) as g:
        record_demo(g)
    with Projector(source, snapshots=SnapshotPolicy(every_events=5)) as projector:
        projector.catch_up()
    with eventlog.open(source) as log:  # after the last snapshot: folded after the restore
        log.create_session(metadata={"late": True})
    run, snapshot = backup(source, tmp_path / "bk")
    assert snapshot is not None and snapshot.lsn <= run.info.last_lsn
    assert [s.lsn for s in Snapshots(tmp_path / "bk").all()] == [snapshot.lsn]
    info, restored = restore(tmp_path / "bk", tmp_path / "restored")
    assert restored is not None and restored.lsn == snapshot.lsn
    with connect(tmp_path / "restored") as con:
        assert checkpoint(con) == snapshot.lsn  # the snapshot, not a fold from LSN 0
    with Projector(tmp_path / "restored") as projector:
        assert projector.catch_up() == info.last_lsn
    with Projector(source) as projector:
        projector.catch_up()
    assert _tables(tmp_path / "restored") == _tables(source)


def test_backup_without_a_snapshot_says_so(tmp_path: Path) -> None:
    with eventlog.open(tmp_path / "source") as log:
        log.create_session()
    run = subprocess.run(
        [LMG, "backup", str(tmp_path / "source"), str(tmp_path / "bk")],
        check=False,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert "no snapshot" in run.stdout
    run = subprocess.run(
        [LMG, "restore", str(tmp_path / "bk"), str(tmp_path / "restored")],
        check=False,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert "projections snapshot: none" in run.stdout
    assert not (tmp_path / "restored" / "projections.duckdb").exists()
