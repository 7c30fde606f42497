"""The store's own files: never opened through a symbolic link, created private whatever the umask.

A link planted where the store expects one of its files (a segment, a predictable temporary
name) must never make the log read or write the file it points at; a store holding a link is
refused with one clear error. New stores are 0700 with 0600 files under the usual umask 022,
unless created with ``group_readable``.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import eventlog
from tests.conftest import VICTIM

LMG = Path(sys.executable).with_name("lmg")


def modes(root: Path) -> dict[str, int]:
    """Permission bits of `root` and of everything under it, by relative path."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def assert_private(root: Path, file_mode: int = 0o600, dir_mode: int = 0o700) -> None:
    for name, mode in modes(root).items():
        expected = dir_mode if (root / name).is_dir() else file_mode
        assert mode == expected, f"{name} is {mode:o}, not {expected:o}"


def fill_segments(log: eventlog.EventLog, segments: int) -> None:
    """Append until the log has `segments` segment files (so sealed ones have index files)."""
    while len(list(log.path.glob("*.seg"))) < segments:
        s = log.create_session(metadata={"pad": "x" * 500})
        log.add_prompt(s.id, "y" * 500)


def test_symlink_at_next_segment_tmp_is_not_written_through(store: Path, victim: Path) -> None:
    with eventlog.open(store, segment_bytes=4096) as log:
        segment = store / f"{0:020d}.seg"
        while segment.stat().st_size < 4096:  # the next append rotates
            log.create_session(metadata={"pad": "x" * 500})
        rotated_to = log.next_lsn()
        link = store / f"{rotated_to:020d}.seg.tmp"
        link.symlink_to(victim)
        log.create_session()
        new_segment = store / f"{rotated_to:020d}.seg"
        assert new_segment.is_file() and not new_segment.is_symlink()
        assert not link.exists() and not link.is_symlink()
    assert victim.read_bytes() == VICTIM
    with eventlog.open(store, readonly=True) as log:
        assert log.next_lsn() == rotated_to + 1


@pytest.mark.parametrize(
    "name",
    [f"{0:020d}.seg", "LOCK", "projections.duckdb", "projections.duckdb.wal", "snapshots"],
)
def test_store_holding_a_symlink_is_refused(
    store: Path, victim: Path, tmp_path: Path, name: str
) -> None:
    with eventlog.open(store) as log:
        log.create_session()
    entry = store / name
    if entry.exists():  # the store's own file, moved away and linked back
        moved = tmp_path / "moved"
        entry.rename(moved)
        entry.symlink_to(moved)
    else:
        entry.symlink_to(victim)
    for readonly in (False, True):
        with pytest.raises(eventlog.UnsafeStore, match="symbolic link"):
            eventlog.open(store, readonly=readonly)
    assert victim.read_bytes() == VICTIM


def test_cli_refuses_a_store_whose_segment_is_a_symlink(store: Path, tmp_path: Path) -> None:
    with eventlog.open(store) as log:
        log.create_session()
    segment = store / f"{0:020d}.seg"
    segment.rename(tmp_path / "elsewhere.seg")
    segment.symlink_to(tmp_path / "elsewhere.seg")
    result = subprocess.run(
        [LMG, "stats", str(store)], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "symbolic link" in result.stderr and "UnsafeStore" not in result.stderr


@pytest.mark.parametrize("command", ["verify", "stats", "tail", "backup"])
def test_cli_refuses_a_store_whose_segment_is_a_fifo_rather_than_hang(
    store: Path, tmp_path: Path, command: str
) -> None:
    """A FIFO where a segment belongs: opening it waited for a writer, so `lmg verify` (the
    command to run on a damaged store), `lmg stats`, `lmg tail` and `lmg backup` hung."""
    with eventlog.open(store) as log:
        log.create_session()
    segment = store / f"{0:020d}.seg"
    segment.unlink()
    os.mkfifo(segment, 0o600)
    args = [str(store)] + ([str(tmp_path / "backup")] if command == "backup" else [])
    result = subprocess.run(
        [LMG, command, *args], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "not a regular file" in result.stderr


def test_new_store_is_private_under_umask_022(store: Path, umask_022: None) -> None:
    with eventlog.open(store, segment_bytes=4096) as log:
        fill_segments(log, 3)
    names = {p.name for p in store.iterdir()}
    assert {"LOCK", f"{0:020d}.idx", f"{0:020d}.ids"} <= names
    assert_private(store)


def test_torn_tail_journal_is_private(store: Path, umask_022: None) -> None:
    with eventlog.open(store) as log:
        log.create_session()
    with open(store / f"{0:020d}.seg", "ab") as f:
        f.write(b"torn")
    with pytest.warns(eventlog.TornTailTruncated), eventlog.open(store):
        pass
    assert (store / "recovery.jsonl").is_file()
    assert_private(store)


def test_group_readable_store_gives_its_group_read_access(store: Path, umask_022: None) -> None:
    with eventlog.open(store, segment_bytes=4096, group_readable=True) as log:
        fill_segments(log, 2)
    assert_private(store, 0o640, 0o750)


def test_files_follow_the_store_directory_not_the_umask(store: Path) -> None:
    with eventlog.open(store, segment_bytes=4096) as log:
        log.create_session()
    store.chmod(0o770)
    old = os.umask(0o077)
    try:
        with eventlog.open(store, segment_bytes=4096) as log:
            fill_segments(log, 2)
    finally:
        os.umask(old)
    newest = sorted(store.glob("*.seg"))[-1]
    assert stat.S_IMODE(newest.stat().st_mode) == 0o660
