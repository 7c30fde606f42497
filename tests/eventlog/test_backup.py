"""Backups of the log while it is written, and restores from them.

Every restore is compared event by event with the source up to the backup's last LSN. The
slow tests take backups while four processes append, and kill `lmg backup` midway: a backup
directory then either restores whole or is refused as interrupted, never restored in part.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import eventlog
from eventlog import events as ev
from eventlog._backup import backing_up
from tests._processes import LMG, Child, run_with_full_disk

SEGMENT_BYTES = 16_384
CRASH_CHILD = Path(__file__).with_name("_crash_child.py")


def _records(store: Path, stop: int | None = None) -> list[tuple[int, ev.EventBase]]:
    with eventlog.open(store, readonly=True) as log:
        return [(r.lsn, r.event) for r in log.read(0, stop)]


def _fill(store: Path, prompts: int, size: int = 200, seed: int = 0) -> None:
    """Sessions of prompts with incompressible text: many segments at SEGMENT_BYTES."""
    rng = random.Random(seed)
    with eventlog.open(store, segment_bytes=SEGMENT_BYTES, durability="none") as log:
        session = log.create_session()
        for _ in range(prompts):
            log.add_prompt(session.id, rng.randbytes(size // 2).hex())


def _under_way(child: Child, dest: Path) -> bool:
    return (dest / "BACKUP.partial").exists() or child.proc.poll() is not None


def _assert_restores_identically(backup: Path, source: Path, target: Path) -> None:
    info = eventlog.restore(backup, target)
    assert not [p for p in eventlog.verify(target) if p.severity == "error"]
    assert _records(target) == _records(source, info.last_lsn + 1)


def test_backup_and_restore_round_trip(store: Path, tmp_path: Path) -> None:
    _fill(store, 300)
    run = eventlog.backup(store, tmp_path / "bk")
    assert run.info.last_lsn == 300 and run.reused == 0
    assert (tmp_path / "bk").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "bk" / "BACKUP.json").stat().st_mode & 0o777 == 0o600
    _assert_restores_identically(tmp_path / "bk", store, tmp_path / "restored")
    with eventlog.open(tmp_path / "restored") as log:  # and it goes on as a store
        log.create_session()


def test_incremental_backup_copies_only_new_segments(store: Path, tmp_path: Path) -> None:
    _fill(store, 300)
    first = eventlog.backup(store, tmp_path / "bk")
    _fill(store, 100, seed=1)
    second = eventlog.backup(store, tmp_path / "bk")
    old_segments = len(first.info.segments)
    assert second.reused == old_segments - 1  # all sealed ones; the then-last is recopied
    assert second.copied == len(second.info.segments) - second.reused
    _assert_restores_identically(tmp_path / "bk", store, tmp_path / "restored")


def test_backup_with_link_hard_links_sealed_segments(store: Path, tmp_path: Path) -> None:
    _fill(store, 300)
    run = eventlog.backup(store, tmp_path / "bk", link=True)
    *sealed, last = sorted(run.info.segments)
    assert sealed and all(
        (tmp_path / "bk" / n).stat().st_ino == (store / n).stat().st_ino for n in sealed
    )
    assert (tmp_path / "bk" / last).stat().st_ino != (store / last).stat().st_ino  # copied
    _fill(store, 50, seed=1)
    assert eventlog.backup(store, tmp_path / "bk", link=True).reused == len(sealed)
    _assert_restores_identically(tmp_path / "bk", store, tmp_path / "restored")


def test_incremental_backup_recopies_a_segment_replaced_in_the_source(
    store: Path, tmp_path: Path
) -> None:
    """As a rewrite of a sealed segment would (same name, maybe the same size and tail)."""
    _fill(store, 300)
    eventlog.backup(store, tmp_path / "bk")
    first = min(store.glob("*.seg"))
    shutil.copyfile(first, tmp_path / "rewritten")
    os.replace(tmp_path / "rewritten", first)
    run = eventlog.backup(store, tmp_path / "bk")
    assert run.copied == 2  # the replaced one and the last one
    _assert_restores_identically(tmp_path / "bk", store, tmp_path / "restored")


def test_incremental_backup_without_hard_links_copies_and_restores(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a file system without hard links (FAT, some network mounts) the older backup's
    segments are copied into the new one, and the new one's files copied into place."""
    _fill(store, 300)
    eventlog.backup(store, tmp_path / "bk")
    _fill(store, 100, seed=1)

    def no_link(src: object, dst: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted", str(src))

    monkeypatch.setattr(os, "link", no_link)
    run = eventlog.backup(store, tmp_path / "bk")
    assert run.reused > 0
    _assert_restores_identically(tmp_path / "bk", store, tmp_path / "restored")
    assert not (tmp_path / "bk" / "BACKUP.partial").exists()


def test_backup_carries_the_retention_policy(store: Path, tmp_path: Path) -> None:
    _fill(store, 3)
    policy = eventlog.RetentionPolicy(content_days=30)
    eventlog.set_retention(store, policy)
    eventlog.backup(store, tmp_path / "bk")
    eventlog.restore(tmp_path / "bk", tmp_path / "restored")
    assert eventlog.retention(tmp_path / "restored") == policy


def test_backup_of_an_empty_store(store: Path, tmp_path: Path) -> None:
    eventlog.open(store).close()
    run = eventlog.backup(store, tmp_path / "bk")
    assert run.info.last_lsn == -1
    _assert_restores_identically(tmp_path / "bk", store, tmp_path / "restored")


def test_backup_stops_at_the_last_complete_frame(store: Path, tmp_path: Path) -> None:
    _fill(store, 10)
    last = max(store.glob("*.seg"))
    with last.open("ab") as f:  # a frame being written: a header and part of a body
        f.write(b"LMGF" + bytes(40))
    run = eventlog.backup(store, tmp_path / "bk")
    assert run.info.last_lsn == 10
    assert (tmp_path / "bk" / last.name).stat().st_size == last.stat().st_size - 44
    _assert_restores_identically(tmp_path / "bk", store, tmp_path / "restored")


def test_backup_refuses_a_directory_that_is_not_a_backup(store: Path, tmp_path: Path) -> None:
    _fill(store, 3)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(eventlog.EventLogError, match="neither empty nor a backup"):
        eventlog.backup(store, tmp_path / "mine")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


def test_backup_refuses_a_backup_of_another_store(store: Path, tmp_path: Path) -> None:
    _fill(store, 3)
    _fill(tmp_path / "other", 3)
    eventlog.backup(tmp_path / "other", tmp_path / "bk")
    with pytest.raises(eventlog.EventLogError, match="backup of another store"):
        eventlog.backup(store, tmp_path / "bk")


def test_restore_of_an_interrupted_backup_is_refused(store: Path, tmp_path: Path) -> None:
    _fill(store, 3)
    eventlog.backup(store, tmp_path / "bk")
    (tmp_path / "bk" / "BACKUP.json").rename(tmp_path / "bk" / "BACKUP.partial")
    with pytest.raises(eventlog.EventLogError, match="an interrupted backup"):
        eventlog.restore(tmp_path / "bk", tmp_path / "restored")
    assert not (tmp_path / "restored").exists()


def test_restore_refuses_a_backup_holding_a_symlink(store: Path, tmp_path: Path) -> None:
    _fill(store, 3)
    eventlog.backup(store, tmp_path / "bk")
    (tmp_path / "secret").write_text("not for the store")
    (tmp_path / "bk" / "notes").symlink_to(tmp_path / "secret")
    with pytest.raises(eventlog.EventLogError, match="symbolic link"):
        eventlog.restore(tmp_path / "bk", tmp_path / "restored")
    assert not (tmp_path / "restored").exists()


def test_restore_of_a_changed_segment_is_refused(store: Path, tmp_path: Path) -> None:
    _fill(store, 300)
    eventlog.backup(store, tmp_path / "bk")
    first = min((tmp_path / "bk").glob("*.seg"))
    with first.open("r+b") as f:
        f.seek(first.stat().st_size - 10)
        f.write(b"XXXXXXXXXX")
    with pytest.raises(eventlog.CorruptionError, match="differs from the backup's manifest"):
        eventlog.restore(tmp_path / "bk", tmp_path / "restored")
    assert not (tmp_path / "restored").exists()


def _assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
    line = result.stderr.strip()
    assert line.startswith("Error: "), line
    for word in words:
        assert word in line, (word, line)
    return line


def _assert_nothing_restored(tmp_path: Path, target: Path) -> None:
    assert not target.exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(f".{target.name}.")]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "missing"])
def test_cli_restore_of_a_damaged_segment_is_one_line_and_restores_nothing(
    store: Path, tmp_path: Path, damage: str
) -> None:
    """A byte flipped far from a segment's tail passes the manifest's check (size and tail
    checksum) and is caught by verifying the copy: the error named the temporary copy
    (``.restored.restoring-PID/...seg``, gone by then), not the backup's file."""
    _fill(store, 300)
    source = _tree(store)
    backup, target = tmp_path / "bk", tmp_path / "restored"
    eventlog.backup(store, backup)
    segment = min(backup.glob("*.seg"))
    data = bytearray(segment.read_bytes())
    assert len(data) > 8192  # the flip lands before the tail's 4 KiB
    if damage == "flipped byte":
        data[len(data) // 3] ^= 0x10
        segment.write_bytes(bytes(data))
    elif damage == "truncated":
        segment.write_bytes(bytes(data[: len(data) // 2]))
    else:
        segment.unlink()
    damaged = _tree(backup)
    line = _assert_one_line_error(
        subprocess.run(
            [LMG, "restore", str(backup), str(target)], capture_output=True, text=True, check=False
        ),
        str(segment),
    )
    assert "restoring" not in line, line
    _assert_nothing_restored(tmp_path, target)
    assert _tree(backup) == damaged  # the backup is left as it was
    assert _tree(store) == source and eventlog.verify(store) == []


def test_cli_restore_onto_a_full_disk_is_one_line_and_restores_nothing(
    store: Path, tmp_path: Path
) -> None:
    """`lmg restore` whose writes fail past 8 KiB (a segment is ~16 KiB): a one-line error,
    no STORE and no temporary copy left; the backup is intact and restores once there is room."""
    _fill(store, 300)
    backup, target = tmp_path / "bk", tmp_path / "restored"
    eventlog.backup(store, backup)
    before = _tree(backup)
    full = run_with_full_disk([str(LMG), "restore", str(backup), str(target)], 8192)
    first = min(backup.glob("*.seg")).name  # the first file past 8 KiB
    line = _assert_one_line_error(full, "File too large", first, str(target))
    assert "restoring" not in line and "Errno" not in line, line  # no temporary path
    _assert_nothing_restored(tmp_path, target)
    assert _tree(backup) == before
    _assert_restores_identically(backup, store, target)


def test_cli_backup_onto_a_full_disk_is_one_line_and_leaves_no_backup(
    store: Path, tmp_path: Path
) -> None:
    """`lmg backup` whose writes fail past 8 KiB: a one-line error naming the file it could
    not write, DEST holds nothing `lmg restore` accepts, the store is untouched, and a backup
    with room completes it."""
    _fill(store, 300)
    source = _tree(store)
    backup, target = tmp_path / "bk", tmp_path / "restored"
    full = run_with_full_disk([str(LMG), "backup", str(store), str(backup)], 8192)
    first = min(store.glob("*.seg")).name
    line = _assert_one_line_error(full, "File too large", str(backup / first))
    assert "Errno" not in line, line
    assert _tree(store) == source
    refused = subprocess.run(
        [LMG, "restore", str(backup), str(target)], capture_output=True, text=True, check=False
    )
    _assert_one_line_error(refused, "interrupted backup")
    _assert_nothing_restored(tmp_path, target)
    again = subprocess.run(
        [LMG, "backup", str(store), str(backup)], capture_output=True, text=True, check=False
    )
    assert again.returncode == 0, again.stderr
    _assert_restores_identically(backup, store, target)
    assert _tree(store) == source


def _log_files(root: Path) -> dict[str, bytes]:
    """The backup's or store's own files: a stopped backup's copies (``BACKUP.partial/``) aside."""
    return {k: v for k, v in _tree(root).items() if not k.startswith("BACKUP.partial")}


def test_cli_incremental_backup_onto_a_full_disk_keeps_the_older_backup(
    store: Path, tmp_path: Path
) -> None:
    """An incremental `lmg backup` whose writes fail past 8 KiB (the first segment it copies
    is ~16 KiB) says DEST still holds the older backup, and it does, file for file: `lmg
    restore` gives the store that backup gave. The older manifest was removed when a backup
    began, so a user's last good backup was lost to a full disk."""
    _fill(store, 300)
    backup = tmp_path / "bk"
    older = eventlog.backup(store, backup).info
    eventlog.restore(backup, tmp_path / "before")
    kept = _log_files(backup)
    _fill(store, 300, seed=1)
    full = run_with_full_disk([str(LMG), "backup", str(store), str(backup)], 8192)
    line = _assert_one_line_error(
        full,
        "File too large",
        str(backup),
        f"still holds the older backup (LSN 0..{older.last_lsn})",
    )
    assert "BACKUP.partial" not in line and "Errno" not in line, line
    assert _log_files(backup) == kept
    restored = subprocess.run(
        [LMG, "restore", str(backup), str(tmp_path / "after")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert restored.returncode == 0, restored.stderr
    assert f"LSN 0..{older.last_lsn} " in restored.stdout
    assert _tree(tmp_path / "after") == _tree(tmp_path / "before")
    assert _records(tmp_path / "after") == _records(store, older.last_lsn + 1)
    eventlog.backup(store, backup)  # with room, the next backup completes
    _assert_restores_identically(backup, store, tmp_path / "newer")
    assert not (backup / "BACKUP.partial").exists()


def test_a_backup_stopped_while_put_in_place_is_finished_by_the_next_reader(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Complete and verified, the new backup replaces the older one's files one by one: a
    stop midway (here, after the first) leaves its manifest staged, and the next reader
    (a restore) finishes the move before it reads, so it sees the new backup whole."""
    _fill(store, 300)
    backup = tmp_path / "bk"
    eventlog.backup(store, backup)
    _fill(store, 300, seed=1)
    real = eventlog._backup._move_in
    moved: list[str] = []

    def stop_after_one(staged: Path, root: Path, name: str) -> None:
        if moved:
            raise KeyboardInterrupt  # as a kill would stop it
        moved.append(name)
        real(staged, root, name)

    monkeypatch.setattr(eventlog._backup, "_move_in", stop_after_one)
    with pytest.raises(KeyboardInterrupt):
        eventlog.backup(store, backup)
    monkeypatch.undo()
    assert (backup / "BACKUP.partial" / "BACKUP.json").exists()
    _assert_restores_identically(backup, store, tmp_path / "restored")
    assert not (backup / "BACKUP.partial").exists()


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "flipped byte":
        path.write_bytes(bytes([data[0] ^ 0x01]) + data[1:])  # `{` becomes `z`
    else:
        path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage", ["flipped byte", "truncated"])
def test_cli_backup_of_a_damaged_retention_policy_is_refused_and_keeps_the_older_backup(
    store: Path, tmp_path: Path, damage: str
) -> None:
    """A RETENTION.json the store itself refuses (`lmg retention`, `lmg erase --due`: "is
    unreadable") was copied into the backup as it was, without a word. The backup is refused
    now, naming the file, before DEST is touched: the older backup there still restores."""
    _fill(store, 30)
    policy = eventlog.RetentionPolicy(content_days=30)
    eventlog.set_retention(store, policy)
    backup = tmp_path / "bk"
    eventlog.backup(store, backup)
    older = _tree(backup)
    damaged = store / "RETENTION.json"
    _damage(damaged, damage)
    source = _tree(store)
    shown = subprocess.run(
        [LMG, "retention", str(store)], capture_output=True, text=True, check=False
    )
    _assert_one_line_error(shown, str(damaged), "unreadable")  # as the store says it
    refused = subprocess.run(
        [LMG, "backup", str(store), str(backup)], capture_output=True, text=True, check=False
    )
    _assert_one_line_error(refused, str(damaged), "unreadable")
    assert _tree(backup) == older and _tree(store) == source
    _assert_restores_identically(backup, store, tmp_path / "restored")
    assert eventlog.retention(tmp_path / "restored") == policy


def test_cli_restore_of_a_backup_with_a_damaged_retention_policy_is_refused(
    store: Path, tmp_path: Path
) -> None:
    """A backup holding a policy the restored store would refuse (damaged after the backup,
    or taken before backups checked it) is refused, naming the backup's file."""
    _fill(store, 30)
    eventlog.set_retention(store, eventlog.RetentionPolicy(content_days=30))
    backup, target = tmp_path / "bk", tmp_path / "restored"
    eventlog.backup(store, backup)
    _damage(backup / "RETENTION.json", "flipped byte")
    refused = subprocess.run(
        [LMG, "restore", str(backup), str(target)], capture_output=True, text=True, check=False
    )
    _assert_one_line_error(refused, str(backup / "RETENTION.json"), "unreadable")
    _assert_nothing_restored(tmp_path, target)


def _copying(child: Child, target: Path) -> bool:
    """Has the restore begun to write segments into its copy (or ended)?"""
    if child.proc.poll() is not None:
        return True
    for path in target.parent.glob(f".{target.name}.restoring-*/*.seg"):
        with contextlib.suppress(FileNotFoundError):  # renamed into place meanwhile
            if path.stat().st_size > 0:
                return True
    return False


@pytest.mark.slow
def test_kill_9_of_restore_leaves_no_store_or_a_whole_one(store: Path, tmp_path: Path) -> None:
    """`lmg restore` killed while it copies the backup (~8 MB, ~500 segments): STORE is
    absent, and a second restore (which removes the killed one's copy) gives the whole store;
    or it is whole already. Never a STORE holding part of the backup."""
    _fill(store, 20_000, size=400)
    backup = tmp_path / "bk"
    eventlog.backup(store, backup)
    rng = random.Random()
    outcomes = set()
    for attempt in range(3):
        target = tmp_path / f"restored{attempt}"
        child = Child([str(LMG), "restore", str(backup), str(target)], tmp_path, "restore")
        child.wait_for(functools.partial(_copying, child, target), "a restore copying")
        time.sleep(rng.uniform(0, 0.05))
        child.kill()
        if target.exists():  # the copy was renamed into place before the kill: whole
            outcomes.add("whole")
        else:
            outcomes.add("absent")
            again = subprocess.run(
                [LMG, "restore", str(backup), str(target)],
                capture_output=True,
                text=True,
                check=False,
            )
            assert again.returncode == 0, again.stderr
        assert not [p for p in eventlog.verify(target) if p.severity == "error"]
        assert _records(target) == _records(store)
        assert not [p for p in os.listdir(tmp_path) if p.startswith(f".{target.name}.")]
    print(f"outcomes: {outcomes}")
    assert "absent" in outcomes, "every kill came after the restore: a weak test"


RESTORE_CHILD = [sys.executable, "-m", "tests.eventlog._restore_child"]


def _old_and_backup(store: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A backup of `store` and another store, `target`, for `lmg restore --force` to replace."""
    _fill(store, 300)
    backup, target = tmp_path / "bk", tmp_path / "target"
    eventlog.backup(store, backup)
    _fill(target, 5, seed=2)
    return backup, target


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux's")
def test_kill_9_of_restore_force_right_after_the_swap_leaves_the_whole_new_store(
    store: Path, tmp_path: Path
) -> None:
    """`lmg restore --force` SIGKILLed at the first moment the old STORE has left its name.
    It moved the old one aside, then renamed the new one in: killed between the two, it
    left no STORE, and the old one at ``.STORE.replaced-PID`` that nothing names. The swap
    is one step now, so the kill finds STORE whole (the new one), and the next restore
    deletes the old one the kill left under the building's name."""
    backup, target = _old_and_backup(store, tmp_path)
    child = Child([*RESTORE_CHILD, str(backup), str(target)], tmp_path, "restore")
    assert child.wait() == -signal.SIGKILL, child.stderr()
    assert _records(target) == _records(store)
    assert not [p for p in eventlog.verify(target) if p.severity == "error"]
    assert not list(tmp_path.glob(".target.replaced-*"))
    again = subprocess.run(
        [LMG, "restore", str(backup), str(target), "--force"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert again.returncode == 0 and not again.stderr, again.stderr
    assert _records(target) == _records(store)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".target.")]


@pytest.mark.slow
def test_kill_9_of_restore_force_without_the_exchange_is_named_by_the_next_restore(
    store: Path, tmp_path: Path
) -> None:
    """Where the system has no one-step exchange, `lmg restore --force` renames twice: a
    kill between the two leaves the old store as ``.STORE.replaced-PID``. The next `lmg
    restore` says so in one line, naming it, and keeps it: it is the user's data."""
    backup, target = _old_and_backup(store, tmp_path)
    old = _tree(target)
    child = Child([*RESTORE_CHILD, str(backup), str(target), "fallback"], tmp_path, "restore")
    assert child.wait() == -signal.SIGKILL, child.stderr()
    assert not target.exists()
    (leftover,) = tmp_path.glob(".target.replaced-*")
    restored = subprocess.run(
        [LMG, "restore", str(backup), str(target)], capture_output=True, text=True, check=False
    )
    assert restored.returncode == 0, restored.stderr
    (line,) = restored.stderr.splitlines()
    assert line.startswith("warning: ") and str(leftover) in line and "restore --force" in line
    assert _records(target) == _records(store)
    assert _tree(leftover) == old


def test_restore_force_without_the_exchange_still_replaces_the_store(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Off Linux (or on a file system without ``RENAME_EXCHANGE``) the old store is renamed
    aside, the new one renamed in, and the old one deleted."""
    backup, target = _old_and_backup(store, tmp_path)
    monkeypatch.setattr(eventlog._copy, "_exchange", lambda _a, _b: False)
    eventlog.restore(backup, target, force=True)
    assert _records(target) == _records(store)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".target.")]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux's")
def test_restore_force_swaps_in_one_step(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the exchange works, STORE is never renamed away: no moment without it."""
    backup, target = _old_and_backup(store, tmp_path)
    renamed: list[str] = []
    rename = os.rename

    def renaming(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        renamed.append(os.fspath(src))
        rename(src, dst)

    monkeypatch.setattr(os, "rename", renaming)
    eventlog.restore(backup, target, force=True)
    assert str(target) not in renamed
    assert _records(target) == _records(store)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".target.")]


@pytest.mark.slow
def test_cli_restore_refuses_a_non_empty_store_without_force(store: Path, tmp_path: Path) -> None:
    _fill(store, 5)
    run = subprocess.run(
        [LMG, "backup", str(store), str(tmp_path / "bk")],
        check=False,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert "verified" in run.stdout
    _fill(tmp_path / "other", 2)
    refused = subprocess.run(
        [LMG, "restore", str(tmp_path / "bk"), str(tmp_path / "other")],
        check=False,
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0 and "not an empty directory" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
    assert len(_records(tmp_path / "other")) == 3
    forced = subprocess.run(
        [LMG, "restore", str(tmp_path / "bk"), str(tmp_path / "other"), "--force"],
        check=False,
        capture_output=True,
        text=True,
    )
    assert forced.returncode == 0, forced.stderr
    assert _records(tmp_path / "other") == _records(store)


def test_one_backup_into_a_dest_at_a_time(store: Path, tmp_path: Path) -> None:
    """Two ``lmg backup`` into one DEST at once deleted each other's copies as they went:
    both failed, with lines that named a missing file or a segment that "starts at LSN
    5359, expected 0". While one runs, another (or a restore from DEST) is refused in one
    line and the one running completes."""
    _fill(store, 300)
    dest = tmp_path / "bk"
    eventlog.backup(store, dest)
    _fill(store, 300, seed=1)

    def lmg(*args: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([LMG, *map(str, args)], check=False, capture_output=True, text=True)

    with backing_up(dest):  # a backup running
        refused = lmg(Path("backup"), store, dest)
        assert refused.returncode == 1 and refused.stderr == (
            f"Error: a backup into {dest} is running; nothing was backed up: run this once it"
            " ends\n"
        )
        refused = lmg(Path("restore"), dest, tmp_path / "restored")
        assert refused.returncode == 1 and refused.stderr == (
            f"Error: a backup into {dest} is running; nothing was restored: run this once it ends\n"
        )
    assert eventlog.backup_info(dest).last_lsn == 300
    both = [
        subprocess.Popen([LMG, "backup", str(store), str(dest)], stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    said = [child.communicate(timeout=60)[1] for child in both]
    assert 0 in [child.returncode for child in both], said
    assert all(not line or "a backup into" in line for line in said), said
    _assert_restores_identically(dest, store, tmp_path / "restored")


def test_restore_refuses_a_fifo_in_the_backup(store: Path, tmp_path: Path) -> None:
    """A named pipe among a backup's files: `lmg restore` waited for ever in its open. It is
    refused in one line, as a symbolic link is, leaving no store and no copy."""
    _fill(store, 5)
    eventlog.backup(store, tmp_path / "bk")
    os.mkfifo(tmp_path / "bk" / "notes")
    run = subprocess.run(
        [LMG, "restore", str(tmp_path / "bk"), str(tmp_path / "restored")],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 1 and run.stderr == (
        f"Error: {tmp_path / 'bk' / 'notes'} is not a regular file: a backup holds none\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bk", "store"]
    segment = next((tmp_path / "bk").glob("*.seg"))  # one the manifest names
    segment.unlink()
    os.mkfifo(segment)
    run = subprocess.run(
        [LMG, "restore", str(tmp_path / "bk"), str(tmp_path / "restored")],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 1 and run.stderr.startswith(
        f"Error: segment differs from the backup's manifest: {segment}"
    )


def test_cli_restore_force_replaces_a_store_and_nothing_else(store: Path, tmp_path: Path) -> None:
    """``lmg restore BACKUP DIR --force`` with DIR a directory of the user's that is not a
    store (a mistyped path: a project, a home) is refused in one line, DIR untouched: it
    was swapped out and deleted, files and all."""
    _fill(store, 5)
    eventlog.backup(store, tmp_path / "bk")
    mine = tmp_path / "project"
    (mine / "src").mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    refused = subprocess.run(
        [LMG, "restore", str(tmp_path / "bk"), str(mine), "--force"],
        check=False,
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr == (
        f"Error: {mine} is not a store (no LOCK file): --force replaces a store, nothing else;"
        " nothing was restored\n"
    )
    assert (mine / "notes.txt").read_text() == "mine" and (mine / "src").is_dir()
    assert not list(tmp_path.glob(".project.*"))


@pytest.mark.parametrize(
    ("backup", "target", "where"),
    [("bk", "bk", "is"), ("store/bk", "store", "is inside"), ("bk", "bk/store", "holds")],
)
def test_cli_restore_refuses_a_store_that_is_or_holds_its_backup(
    store: Path, tmp_path: Path, backup: str, target: str, where: str
) -> None:
    """``lmg restore bk bk --force`` replaced the backup (it has a LOCK file) with the
    restored store: the only copy, gone on a typo. A backup inside the store went with it."""
    _fill(store, 5)
    eventlog.backup(store, tmp_path / backup)
    before = sorted(p.name for p in (tmp_path / backup).iterdir())
    refused = subprocess.run(
        [LMG, "restore", backup, target, "--force"],
        check=False, capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr == (
        f"Error: the backup {backup} {where} {target}: restore into a store apart from its"
        " backup; nothing was restored\n"
    )
    assert sorted(p.name for p in (tmp_path / backup).iterdir()) == before
    eventlog.restore(tmp_path / backup, tmp_path / "apart")  # the backup is whole


@pytest.mark.parametrize("force", [[], ["--force"]], ids=["", "--force"])
def test_cli_restore_refuses_a_symbolic_link_to_a_store(
    store: Path, tmp_path: Path, force: list[str]
) -> None:
    """With --force, a link to a store was replaced by the restored store (the store it
    pointed to untouched) and left beside it as ``.link.restoring-PID``, as if a restore had
    been interrupted; without, it was "not an empty directory". Now one line says why."""
    _fill(store, 5)
    eventlog.backup(store, tmp_path / "bk")
    link = tmp_path / "link"
    link.symlink_to(store)
    refused = subprocess.run(
        [LMG, "restore", str(tmp_path / "bk"), str(link), *force],
        check=False,
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr == (
        f"Error: {link} is a symbolic link: a restore makes the store's own directory (name"
        " the directory it points to); nothing was restored\n"
    )
    assert link.is_symlink() and not list(tmp_path.glob(".link.*"))


@pytest.mark.slow
def test_backups_under_load_restore_identically(
    store: Path, tmp_path: Path, drawn_seed: int
) -> None:
    """Four processes append (rotating segments) while backups are taken into one place.
    They run the child's mode for several writers: the crash mode's appends expect to be
    the only writer's, so there they stopped one another, and none might be left."""
    eventlog.open(store, segment_bytes=SEGMENT_BYTES).close()
    seed = drawn_seed
    children = [
        Child(
            [
                sys.executable,
                str(CRASH_CHILD),
                "shared",
                str(store),
                str(seed + i),
                "16384",
                str(i),
            ],
            tmp_path,
            f"appender{i}",
        )
        for i in range(4)
    ]
    try:
        for child in children:
            child.wait_for(child.said_something, "ready")
        runs = []
        for k in range(5):
            time.sleep(0.3)
            run = eventlog.backup(store, tmp_path / "bk")
            eventlog.restore(tmp_path / "bk", tmp_path / f"restored{k}")
            runs.append(run)
    finally:
        for child in children:
            child.kill()
    assert runs[-1].info.last_lsn > runs[0].info.last_lsn  # the appenders got on meanwhile
    assert any(run.reused for run in runs[1:])  # incremental under load
    for k, run in enumerate(runs):
        restored = _records(tmp_path / f"restored{k}")
        assert restored == _records(store, run.info.last_lsn + 1), k
        assert not [p for p in eventlog.verify(tmp_path / f"restored{k}") if p.severity == "error"]


@pytest.mark.slow
def test_kill_9_of_backup_leaves_a_whole_backup_or_a_refused_one(
    store: Path, tmp_path: Path
) -> None:
    _fill(store, 20_000, size=400)  # ~8 MB in ~500 segments: a backup takes a while
    rng = random.Random()
    outcomes = set()
    for attempt in range(4):
        child = Child([str(LMG), "backup", str(store), str(tmp_path / "bk")], tmp_path, "bk")
        child.wait_for(functools.partial(_under_way, child, tmp_path / "bk"), "a backup under way")
        time.sleep(rng.uniform(0, 0.2))
        child.kill()
        target = tmp_path / f"restored{attempt}"
        try:
            eventlog.restore(tmp_path / "bk", target)
        except eventlog.EventLogError as exc:
            assert "interrupted backup" in str(exc)
            assert not target.exists()
            outcomes.add("refused")
        else:
            assert _records(target) == _records(store)
            outcomes.add("whole")
    print(f"outcomes: {outcomes}")
    eventlog.backup(store, tmp_path / "bk")  # the next backup completes it
    _assert_restores_identically(tmp_path / "bk", store, tmp_path / "final")
    assert not any(name.startswith(".final") for name in os.listdir(tmp_path))


def _copying_new_segments(child: Child, dest: Path, older: eventlog.BackupInfo) -> bool:
    """Has the backup begun to copy segments the older backup lacks (or ended)?"""
    if child.proc.poll() is not None:
        return True
    with contextlib.suppress(FileNotFoundError):  # moved meanwhile
        return any(p.name not in older.segments for p in dest.rglob("*.seg"))
    return False


@pytest.mark.slow
def test_kill_9_of_an_incremental_backup_leaves_the_older_backup_or_the_new_one(
    store: Path, tmp_path: Path
) -> None:
    """`lmg backup` killed while it copies ~8 MB of new segments into DEST: DEST restores
    exactly the older backup's store (or, killed after it was complete, the new one's).
    The older manifest was removed when a backup began, so a kill lost the last backup."""
    _fill(store, 1_000, size=400)
    backup = tmp_path / "bk"
    older = eventlog.backup(store, backup).info
    eventlog.restore(backup, tmp_path / "before")
    _fill(store, 20_000, size=400, seed=1)
    rng = random.Random()
    outcomes = set()
    for attempt in range(3):
        child = Child([str(LMG), "backup", str(store), str(backup)], tmp_path, f"bk{attempt}")
        child.wait_for(
            functools.partial(_copying_new_segments, child, backup, older), "new segments copied"
        )
        time.sleep(rng.uniform(0, 0.1))
        child.kill()
        target = tmp_path / f"restored{attempt}"
        info = eventlog.restore(backup, target)
        if info.last_lsn == older.last_lsn:
            assert _tree(target) == _tree(tmp_path / "before")
            outcomes.add("older")
        else:
            assert _records(target) == _records(store)
            outcomes.add("newer")
    print(f"outcomes: {outcomes}")
    assert "older" in outcomes, "every kill came after the backup: a weak test"
    eventlog.backup(store, backup)  # the next backup completes it
    _assert_restores_identically(backup, store, tmp_path / "final")
