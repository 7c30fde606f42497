"""Erasure, the projections' part: after the log is erased, drop what was folded from it.

Updating rows would not do: DuckDB keeps the old bytes of updated and deleted rows in the
freed blocks of its file, and a snapshot's chunks are copies of such files. So, once
`eventlog.erase` has rewritten the log (its journal in phase ``projections``), whoever holds
the store's folder lock (`FolderLock`) with the gate exclusive deletes the database file (and
its ``.wal``, temporary directory and text index, `_text_index`), drops every snapshot at or
after the first erased LSN (older ones never folded the content) and the chunks only they
used, and ends the erasure.
The next fold starts from LSN 0 on a fresh file: the cost of an erasure is a full fold.

A following `lmg project` or an embedded `MemoryGraph` does this itself at its next fold
(`apply_pending`); `erase` does it when no folder runs, or waits for the one that does.

Which databases the erasure reaches, and why:

- The store's own (``<store>/projections.duckdb``), through the journal, as above.
- A `MemoryGraph` in memory (``database=":memory:"``) through the log: it is no copy but a
  live cache of the store, private to its handle, with nothing on disk, and a user who
  erases someone's data expects every live reader of the store to stop showing it. The
  journal may be gone before it reads again (whoever holds the store's database ends it),
  so it goes by the ``erasure.applied`` record instead, which the log keeps for good and
  its next read folds: a record naming an LSN it folded before makes it drop its tables and
  fold again from zero (`MemoryGraph`'s `refresh`).
- A database file elsewhere (``database=PATH``, ``lmg project --database``) is a copy the
  user keeps, like forks and backups: the erasure cannot find it, it outlives the processes
  that fold it (while none runs, nothing could drop it), and a projector and graphs may take
  turns on it. Delete it, or rebuild it (``lmg project STORE --database PATH --rebuild``).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import eventlog

from ._database import FolderLock, Gate, database_path
from ._text_index import drop_index
from .errors import ProjectionError, ProjectorBusy
from .snapshots import Snapshots

__all__ = ["apply_pending", "drop_database", "ended", "erase", "erasure_due", "resume_erasure"]


def erasure_due(store: Path, db: Path) -> bool:
    """Is the projections' part of an erasure due on `db` (the store's own database)?"""
    if not (store / eventlog.JOURNAL_FILE).exists():  # the common case: one stat
        return False
    if Path(db).resolve() != database_path(store, None).resolve():
        return False
    pending = eventlog.pending_erasure(store)
    return pending is not None and pending.phase == "projections"


def apply_pending(store: Path, db: Path) -> bool:
    """If an erasure's projections' part is due, do it; True if it was. The caller holds the
    folder lock of `db` and its gate exclusively (no reader has the file open)."""
    pending = eventlog.pending_erasure(store) if erasure_due(store, db) else None
    if pending is None:  # (or ended meanwhile by another folder)
        return False
    drop_database(db)
    if pending.projections_from is not None:
        Snapshots(store).drop_from(pending.projections_from)
    eventlog.end_erasure(store, pending.record.erasure_id)
    return True


def drop_database(db: Path) -> None:
    """Delete the database file `db` and what is derived from it: its ``.wal``, its text
    index (`drop_index`) and DuckDB's spill files (``<db>.tmp``), all of which may hold its
    text. The caller holds the folder lock of `db` and its gate exclusively, so no reader
    has the file open (an erasure, `apply_pending`; a rebuild, `Projector`)."""
    for path in (db, Path(f"{db}.wal")):
        path.unlink(missing_ok=True)
    drop_index(db)
    shutil.rmtree(f"{db}.tmp", ignore_errors=True)


def erase(
    store: str | os.PathLike[str],
    selector: eventlog.Selector,
    *,
    actor: str | None = None,
    wait_s: float = 60.0,
) -> eventlog.Erasure:
    """Erase the content `selector` chooses from the log, the projections database and every
    snapshot of the store (first finishing an erasure a crash interrupted). Returns the
    erasure (phase ``done``). Raises `ProjectionError` if a folder holds the database and has
    not dropped it within `wait_s` (the log is erased by then; it drops it at its next fold)."""
    erasure = eventlog.erase(store, selector, actor=actor)
    pending = eventlog.pending_erasure(store)  # this one, or an earlier one still due
    if pending is not None:
        _finish(Path(store), pending, wait_s)
    ended(erasure)
    return erasure


def ended(erasure: eventlog.Erasure) -> None:
    """Mark `erasure` done, and the interrupted one it finished first: the projections' part
    of both is done (this one's drops from the smaller of their LSNs)."""
    erasure.phase = "done"
    if erasure.resumed is not None:
        erasure.resumed.phase = "done"


def resume_erasure(
    store: str | os.PathLike[str], *, wait_s: float = 60.0
) -> eventlog.Erasure | None:
    """Finish an erasure a crash (or a busy folder) interrupted; None if none is pending."""
    erasure = eventlog.resume_erasure(store)
    return None if erasure is None else _finish(Path(store), erasure, wait_s)


def _finish(store: Path, erasure: eventlog.Erasure, wait_s: float) -> eventlog.Erasure:
    if erasure.phase != "projections":
        return erasure
    db = database_path(store, None)
    deadline = time.monotonic() + wait_s
    try:
        lock = FolderLock(
            db, "lmg erase", passing=True, wait_turn=lambda _other: time.monotonic() < deadline
        )
    except ProjectorBusy as busy:  # a lasting folder: it drops the database at its next fold
        while time.monotonic() < deadline and _due(store, erasure):
            time.sleep(0.05)
        if _due(store, erasure):
            raise ProjectionError(
                f"the log is erased, but {busy}; it drops the projections at its next fold "
                "(or stop it and run lmg erase --resume)"
            ) from None
    else:
        try:
            gate = Gate(db)
            try:
                with gate.hold(exclusive=True, timeout=wait_s):
                    apply_pending(store, db)
            finally:
                gate.close()
        finally:
            lock.release()
    erasure.phase = "done"
    return erasure


def _due(store: Path, erasure: eventlog.Erasure) -> bool:
    pending = eventlog.pending_erasure(store)
    return pending is not None and pending.record.erasure_id == erasure.record.erasure_id
