"""Backup and restore of a whole store: the log (`eventlog.backup`) plus the newest snapshot.

The log in a backup is consistent to one LSN (see `eventlog`'s backup). The projections are
not copied from the live database, which a projector may be writing: a backup carries the
newest snapshot at or before that LSN, a checked, checkpointed copy of the projections as of
its own LSN. A restore writes that snapshot out as the store's projections database, and a
projector folds the rest of the log from there; with no snapshot, it folds all of the log.
"""

from __future__ import annotations

import os
from pathlib import Path

import eventlog
from eventlog import BackupInfo, BackupRun
from eventlog._backup import backing_up, backup_log, restoring
from eventlog._copy import fsync_file
from eventlog._index import fsync_dir

from ._database import database_path
from .errors import ProjectionError
from .snapshots import SnapshotInfo, Snapshots

__all__ = ["backup", "restore"]


def backup(
    store: str | os.PathLike[str], dest: str | os.PathLike[str], *, link: bool = False
) -> tuple[BackupRun, SnapshotInfo | None]:
    """Back up `store` into `dest`: its log, then the newest snapshot up to the log's copy
    (None if there is none). A kill while the snapshot is copied leaves a complete backup of
    the log whose snapshot is the older one, or none."""
    with backing_up(dest):  # its snapshot too: one backup into `dest` at a time
        run = backup_log(store, dest, link=link)
        try:
            return run, Snapshots(store).copy_to(dest, at_most=run.info.last_lsn)
        except OSError as exc:  # a full disk: the backup of the log is whole, and says so
            raise ProjectionError(
                f"the backup of the log in {dest} is complete (LSN 0..{run.info.last_lsn}), "
                f"but its snapshot could not be copied ({exc.strerror or exc}): a restore of "
                "it folds the projections from an older snapshot, or from the whole log"
            ) from None


def restore(
    dest: str | os.PathLike[str],
    store: str | os.PathLike[str],
    *,
    force: bool = False,
    database: str | os.PathLike[str] | None = None,
) -> tuple[BackupInfo, SnapshotInfo | None]:
    """Create `store` from the backup at `dest` (see `eventlog.restore`), and its projections
    database from the backup's snapshot, if it has one. The store's own database is written
    while the store is built beside its name, so the two appear together or not at all
    (written after the store, a kill left the whole log beside half a database, in a store
    a second restore refused as not empty); a `database` elsewhere is written after it."""
    snapshot = None
    with restoring(dest, store, force=force) as (info, building):
        if database is None:
            snapshot = _write_database(building, database_path(building, None), info)
    if database is not None:
        snapshot = _write_database(Path(store), database_path(store, database), info)
    return info, snapshot


def _write_database(store: Path, target: Path, info: BackupInfo) -> SnapshotInfo | None:
    """Write the newest snapshot of `store` up to the backup's LSN out as the database
    `target`; None if there is none. It is synced, with its directory: the snapshot's
    restore does not sync, as a replay's private copy needs not, but a store's database
    must survive a crash right after the restore reported it. An error writing it (a full
    disk) names `target`."""
    try:
        with eventlog.open(store, readonly=True) as log:
            restored = Snapshots(store).restore(target, at_most=info.last_lsn, log=log)
        if restored is None:
            return None
        snapshot, con = restored
        con.close()
        _sync(target)
    except OSError as exc:
        if exc.filename is not None:
            raise
        raise OSError(exc.errno, exc.strerror, str(target)) from None
    return snapshot


def _sync(path: Path) -> None:
    """Make the file at `path` and its name in its directory durable."""
    fsync_file(path)
    fsync_dir(path.parent)
