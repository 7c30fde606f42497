"""A store's backup carries the newest snapshot of its projections; a restore writes it out as
the projections database, and folding the rest of the log gives the source's tables."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

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
from tests._processes import Child, run_with_full_disk

LMG = Path(sys.executable).with_name("lmg")


def _tables(store: Path) -> dict[str, list[tuple[object, ...]]]:
    with connect(store) as con:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in TABLE_NAMES}


@pytest.mark.slow
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


@pytest.mark.slow
def test_restore_syncs_the_projections_database_and_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The restored database is durable when `restore` returns: the file is fsynced, then
    its directory (a crash right after a restore must not leave it half written)."""
    source = tmp_path / "source"
    with MemoryGraph.open(source) as g:
        record_demo(g)
    with Projector(source, snapshots=SnapshotPolicy(every_events=5)) as projector:
        projector.catch_up()
    backup(source, tmp_path / "bk")
    synced: list[int] = []  # the inodes fsynced, in order
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    _info, restored = restore(tmp_path / "bk", tmp_path / "restored")
    assert restored is not None
    database = (tmp_path / "restored" / "projections.duckdb").stat().st_ino
    directory = (tmp_path / "restored").stat().st_ino
    assert database in synced
    assert directory in synced[synced.index(database) :]


@pytest.mark.slow
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


def test_a_backup_into_a_directory_made_beforehand_is_private(tmp_path: Path) -> None:
    """``mkdir DEST`` (0755 by the usual umask), then ``lmg backup STORE DEST``: the backup's
    files, its manifest and its snapshot's are 0600 and its directories 0700, as in a DEST
    the backup makes (they were 0640 and 0750: the store's content readable by its group)."""
    source = tmp_path / "source"
    with MemoryGraph.open(source) as g:
        record_demo(g)
    with Projector(source, snapshots=SnapshotPolicy(every_events=5)) as projector:
        projector.catch_up()
    dest = tmp_path / "bk"
    old = os.umask(0o022)
    try:
        dest.mkdir()
    finally:
        os.umask(old)
    run = subprocess.run(
        [LMG, "backup", str(source), str(dest)], check=False, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert "projections: the snapshot at LSN" in run.stdout
    modes = {
        str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777)
        for p in [dest, *dest.rglob("*")]
        if not p.is_symlink()
    }
    wanted = {path: oct(0o700 if (tmp_path / path).is_dir() else 0o600) for path in modes}
    assert modes == wanted


@pytest.mark.slow
def test_backups_beside_a_following_projector_restore_its_tables(tmp_path: Path) -> None:
    """A projector follows the log and takes snapshots (pruning as it goes) while backups
    are taken; each restored store, folded on from its snapshot, has the tables of a fresh
    fold of the source up to the backup's LSN."""
    source = tmp_path / "source"
    with eventlog.open(source) as log:
        session = log.create_session()
    follower = Child(
        [str(LMG), "project", str(source), "--follow", "--snapshot-every", "150",
         "--report-every", "0.2"],
        tmp_path,
        "projector",
    )  # fmt: skip
    carried = []
    try:
        follower.wait_stderr("folded to LSN")
        for k in range(4):
            with eventlog.open(source, durability="none") as log:
                for i in range(400):
                    log.add_prompt(session.id, f"prompt {k}.{i}")
            time.sleep(0.5)  # the projector folds some of it, and snapshots
            run, snapshot = backup(source, tmp_path / "bk")
            info, restored = restore(tmp_path / "bk", tmp_path / f"restored{k}")
            carried.append(restored)
            eventlog.copy_prefix(source, tmp_path / f"expected{k}", info.last_lsn)
            assert snapshot is None or snapshot.lsn <= run.info.last_lsn
    finally:
        assert follower.stop() == 0, follower.stderr()
    assert any(carried), "no backup carried a snapshot: a weak test"
    for k in range(4):
        with Projector(tmp_path / f"restored{k}") as projector:
            projector.catch_up()
        with Projector(tmp_path / f"expected{k}", snapshots=None) as projector:
            projector.catch_up()
        assert _tables(tmp_path / f"restored{k}") == _tables(tmp_path / f"expected{k}"), k


def _database_begun(target: Path) -> bool:
    """Has the restore begun to write the projections database (in its copy, or in STORE)?"""
    name = "projections.duckdb"
    return (target / name).exists() or any(target.parent.glob(f".{target.name}.restoring-*/{name}"))


@pytest.mark.slow
def test_kill_9_of_restore_while_it_writes_the_snapshot_leaves_no_half_store(
    tmp_path: Path,
) -> None:
    """`lmg restore` wrote the backup's snapshot out as STORE/projections.duckdb after it
    had renamed the log into place: killed then, STORE was left holding the whole log beside
    a half-written database, and `lmg restore` again refused it as not empty. Now STORE is
    absent until both are whole; a second restore completes it."""
    source, bk, target = tmp_path / "source", tmp_path / "bk", tmp_path / "restored"
    rng = random.Random(0)
    with eventlog.open(source, durability="none") as log:
        session = log.create_session()
        for _ in range(24):
            log.add_prompts_batch([(session.id, rng.randbytes(100).hex()) for _ in range(500)])
    with Projector(source, snapshots=SnapshotPolicy(every_events=5000)) as projector:
        projector.catch_up()
    run, snapshot = backup(source, bk)
    assert snapshot is not None
    _info, expected = restore(bk, tmp_path / "expected")
    assert expected is not None and expected.lsn == snapshot.lsn
    child = Child([str(LMG), "restore", str(bk), str(target)], tmp_path, "restore")
    child.wait_for(
        lambda: child.proc.poll() is not None or _database_begun(target), "the database begun"
    )
    child.kill()
    assert child.proc.returncode == -signal.SIGKILL, "the restore ended before the kill"
    if not target.exists():
        again = subprocess.run(
            [LMG, "restore", str(bk), str(target)], check=False, capture_output=True, text=True
        )
        assert again.returncode == 0, again.stderr
    assert not [p for p in eventlog.verify(target) if p.severity == "error"]
    with eventlog.open(target, readonly=True) as a, eventlog.open(source, readonly=True) as b:
        assert list(a.read()) == list(b.read(0, run.info.last_lsn + 1))
    with connect(target) as con:
        assert checkpoint(con) == snapshot.lsn
    assert _tables(target) == _tables(tmp_path / "expected")
    assert not [p for p in os.listdir(tmp_path) if p.startswith(f".{target.name}.")]


@pytest.mark.slow
def test_cli_backup_whose_snapshot_meets_a_full_disk_says_the_log_is_backed_up(
    tmp_path: Path,
) -> None:
    """Writes failing past 64 KiB: every segment (16 KiB) fits, a snapshot chunk does not.
    The error was DuckDB-free but bare (`[Errno 27] File too large`), as if nothing were
    backed up, while DEST held a complete, verified backup of the log. It says so now."""
    source, bk = tmp_path / "source", tmp_path / "bk"
    _segments_and_snapshots(source)
    full = run_with_full_disk([str(LMG), "backup", str(source), str(bk)], 65_536)
    assert full.returncode == 1, (full.stdout, full.stderr)
    assert len(full.stderr.splitlines()) == 1 and "Traceback" not in full.stderr, full.stderr
    line = full.stderr.strip()
    assert f"the backup of the log in {bk} is complete (LSN 0..3000)" in line, line
    assert "snapshot" in line and "File too large" in line and "Errno" not in line, line
    assert not list(bk.rglob("*.tmp"))  # no half-written chunk left in the backup
    run = subprocess.run(
        [LMG, "restore", str(bk), str(tmp_path / "restored")],
        check=False,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert "restored LSN 0..3000" in run.stdout and "projections snapshot: none" in run.stdout


def _segments_and_snapshots(source: Path) -> None:
    """3,000 prompts of incompressible text in 16 KiB segments, folded with a snapshot every
    1,000 events: segments each small, a snapshot's chunks and database larger."""
    rng = random.Random(0)
    with eventlog.open(source, segment_bytes=16_384, durability="none") as log:
        session = log.create_session()
        for _ in range(3000):
            log.add_prompt(session.id, rng.randbytes(100).hex())
    with Projector(source, snapshots=SnapshotPolicy(every_events=1000)) as projector:
        projector.catch_up()


@pytest.mark.slow
def test_cli_restore_whose_snapshot_meets_a_full_disk_restores_nothing(tmp_path: Path) -> None:
    """Writes failing past 1 MB: every file of the backup fits, the 3 MB database the
    snapshot restores to does not. The log was restored and renamed into place, then the
    database failed half-written: STORE was left, with half a database. Now nothing is."""
    source, bk, target = tmp_path / "source", tmp_path / "bk", tmp_path / "restored"
    _segments_and_snapshots(source)
    _run, snapshot = backup(source, bk)
    assert snapshot is not None and snapshot.size > 1_000_000
    full = run_with_full_disk([str(LMG), "restore", str(bk), str(target)], 1_000_000)
    assert full.returncode == 1, (full.stdout, full.stderr)
    assert len(full.stderr.splitlines()) == 1 and "Traceback" not in full.stderr, full.stderr
    line = full.stderr.strip()
    assert f"could not write projections.duckdb into {target} (File too large)" in line, line
    assert not target.exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(f".{target.name}.")]
    _info, restored = restore(bk, target)  # with room
    assert restored is not None and restored.lsn == snapshot.lsn
