"""A private projections database folded to a point: where every replay does its work.

It starts from the newest usable snapshot at or before the point (or from an empty schema),
then folds the log forward with the projections' own fold (`projections.fold_records`), one
transaction per batch, exactly as the projector does. So a view at a point is, by
construction, the fold of exactly the events up to it; tests/replay checks it table by table.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import duckdb

import projections
from eventlog import EventLog, Record
from projections import SANDBOX, Batch, SnapshotInfo, Snapshots

__all__ = ["Progress", "Workspace"]

Progress = Callable[[int, int], None]
"""Called as ``on_progress(folded, total)`` while a replay folds toward its point."""

BATCH_EVENTS = 100_000
"""Events per transaction of a replay's fold: a private database can take bigger batches
than the projector's (fewer statements per event: about 1.4x faster from zero)."""

MEMORY_LIMIT = "512MB"  # DuckDB's, for a replay; it spills to disk beyond it

_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "memory_limit": MEMORY_LIMIT,
    "checkpoint_threshold": "256MB",  # a private file: checkpoint rarely, never on close
}


def _private_directory() -> Path:
    """A new temporary directory named after this process; first, delete those of processes
    that died with a view open (nothing else would)."""
    root = Path(tempfile.gettempdir())
    for leftover in root.glob("lmg-replay-*-*"):
        pid = leftover.name.split("-")[2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"lmg-replay-{os.getpid()}-"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's
        return True
    return True


class Workspace:
    """A database file (a private temporary one, or `out`) holding the projections at `lsn`."""

    def __init__(
        self, log: EventLog, *, at_most: int, out: Path | None = None, snapshots: bool = True
    ) -> None:
        self.log = log
        self._temp = None if out is not None else _private_directory()
        self.db = out if out is not None else Path(self._temp or ".") / "view.duckdb"
        self.snapshot: SnapshotInfo | None = None
        try:
            restored = (
                Snapshots(log.path).restore(self.db, at_most=at_most, config=_CONFIG)
                if snapshots
                else None
            )
            if restored is not None:
                self.snapshot, self.con = restored
            else:
                self.con = duckdb.connect(str(self.db), config=_CONFIG)
                projections.ensure_schema(self.con)
            if out is None:
                self.con.execute("PRAGMA disable_checkpoint_on_shutdown")
            # A walk's view (`replay.step`) runs the caller's SQL on this connection.
            projections.sandbox(self.con)
        except BaseException:
            self.discard()
            raise

    @property
    def lsn(self) -> int:
        return projections.checkpoint(self.con)

    def fold_to(
        self,
        lsn: int,
        on_progress: Progress | None = None,
        on_batch: Callable[[Batch], None] | None = None,
    ) -> None:
        """Fold the log forward to `lsn` (included)."""
        start = self.lsn
        total = lsn - start

        def report(batch: Batch, last: Record) -> None:
            if on_batch is not None:
                on_batch(batch)
            if on_progress is not None:
                on_progress(last.lsn - start, total)

        if total > 0:
            projections.fold_available(
                self.con, self.log, batch_events=BATCH_EVENTS, stop_lsn=lsn + 1, on_batch=report
            )

    def read_only(self, *, keep: bool) -> duckdb.DuckDBPyConnection:
        """Close the writable connection and reopen the file read-only and sandboxed (its
        SQL is the caller's), for a view. With
        `keep`, checkpoint first, so the file stands alone (no write-ahead log beside it)."""
        if keep:
            self.con.execute("CHECKPOINT")
        self.con.close()
        config: dict[str, str | bool | int | float | list[str]] = {"memory_limit": MEMORY_LIMIT}
        self.con = duckdb.connect(str(self.db), read_only=True, config=config | SANDBOX)
        return self.con

    def discard(self) -> None:
        """Close the connection and delete the private file (an `out` file is kept)."""
        con = getattr(self, "con", None)
        if con is not None:
            con.close()
        if self._temp is not None:
            shutil.rmtree(self._temp, ignore_errors=True)
