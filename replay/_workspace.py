"""A private projections database folded to a point: where every replay does its work.

It starts from the newest usable snapshot at or before the point (or from an empty schema),
then folds the log forward with the projections' own fold (`projections.fold_records`), one
transaction per batch, exactly as the projector does. So a view at a point is, by
construction, the fold of exactly the events up to it; tests/replay checks it table by table.

The file is as private as the store (`eventlog._files.Modes`), whatever the umask. DuckDB
makes its write-ahead log and spill files with the umask, so the database is built in a
private directory (a temporary one, or one beside `out`) and an `out` file is linked into
place only once it is complete: a failed replay leaves no `out` behind.

Whatever fails in writing the view (a full disk, a file size limit, DuckDB out of memory) is
one `ReplayError` saying why, without the private directory's path (`Workspace.writing`);
what fails in reading the store is the store's own error.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb

import projections
from eventlog import EventLog, EventLogError, Record
from eventlog._files import Modes, make_dir
from projections import SANDBOX, Batch, FoldFailed, SnapshotInfo, Snapshots
from projections._sandbox import one_line

from .errors import ReplayError, ViewStorageFull

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


def _building_directory(out: Path, store: Path) -> Path:
    """A new directory beside `out`, with the store's modes, where `out` is built; first,
    delete those of processes that died building one."""
    if not out.parent.is_dir():  # said of `out`, not of the building directory's name
        raise ReplayError(f"{out}: no such directory as {out.parent} to write it in")
    prefix = f".{out.name}.building-"
    for leftover in out.parent.glob(glob.escape(prefix) + "*"):
        pid = leftover.name.removeprefix(prefix)
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)
    path = out.parent / f"{prefix}{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    make_dir(path, Modes.of(store).dir)
    return path


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
        self._out = out
        self._temp: Path | None = None
        self.snapshot: SnapshotInfo | None = None
        try:
            with self.writing():
                self._temp = (
                    _private_directory() if out is None else _building_directory(out, log.path)
                )
                self.db = self._temp / "view.duckdb"
                self.con = self._open(at_most, snapshots)
        except BaseException:
            self.discard()
            raise

    def _open(self, at_most: int, snapshots: bool) -> duckdb.DuckDBPyConnection:
        """The database, from the newest usable snapshot or an empty schema, writable."""
        restored = (
            Snapshots(self.log.path).restore(self.db, at_most=at_most, log=self.log, config=_CONFIG)
            if snapshots
            else None
        )
        if restored is not None:
            self.snapshot, con = restored
        else:
            con = duckdb.connect(str(self.db), config=_CONFIG)
            assert self._temp is not None
            os.chmod(self.db, Modes.of(self._temp).file)  # DuckDB created it by the umask
            projections.ensure_schema(con)
        if self._out is None:
            con.execute("PRAGMA disable_checkpoint_on_shutdown")
        # A walk's view (`replay.step`) runs the caller's SQL on this connection.
        projections.sandbox(con)
        return con

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Where the view is written: DuckDB's failures and the OS's (other than of the
        store's files) become one `ReplayError` saying why, naming `out` but never the
        private directory (a user cannot act on its name, only on the disk it is on)."""
        try:
            yield
        except (duckdb.Error, FoldFailed, OSError) as exc:
            if not self._owns(exc):
                raise
            what = "the temporary view" if self._out is None else str(self._out)
            why = _why(exc)
            error = ViewStorageFull if _is_full(exc, why) else ReplayError
            raise error(f"{what} could not be written: {why}") from exc

    def _owns(self, exc: BaseException) -> bool:
        """Whether `exc` is a failure of the view's files, not of the store's (its log, its
        snapshots), which the store's own errors already say."""
        if isinstance(exc, EventLogError):
            return False
        if not isinstance(exc, OSError) or not isinstance(exc.filename, str | bytes):
            return True  # DuckDB's, the fold's, or a write to a descriptor
        named = Path(os.path.abspath(os.fsdecode(exc.filename)))
        return not named.is_relative_to(os.path.abspath(self.log.path))

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
            with self.writing():
                projections.fold_available(
                    self.con,
                    self.log,
                    batch_events=BATCH_EVENTS,
                    stop_lsn=lsn + 1,
                    on_batch=report,
                )

    def read_only(self, *, keep: bool) -> duckdb.DuckDBPyConnection:
        """Close the writable connection and reopen the file read-only and sandboxed (its
        SQL is the caller's), for a view. With `keep`, checkpoint first, so the file stands
        alone (no write-ahead log beside it); an `out` file is then linked into place."""
        config: dict[str, str | bool | int | float | list[str]] = {"memory_limit": MEMORY_LIMIT}
        with self.writing():
            if keep:
                self.con.execute("CHECKPOINT")
            self.con.close()
            if self._out is not None:
                self._publish(self._out)
            self.con = duckdb.connect(str(self.db), read_only=True, config=config | SANDBOX)
        return self.con

    def _publish(self, out: Path) -> None:
        """Link the complete file at `out` (never over a file that appeared there meanwhile)
        and delete the directory it was built in."""
        try:
            os.link(self.db, out)
        except FileExistsError:
            raise ReplayError(f"{out} already exists: --out writes a new database file") from None
        assert self._temp is not None
        shutil.rmtree(self._temp, ignore_errors=True)
        self._temp, self.db = None, out

    def discard(self) -> None:
        """Close the connection and delete the private file (an `out` file is kept)."""
        con = getattr(self, "con", None)
        if con is not None:
            # Its last checkpoint (an `out` not yet complete) may fail on the full disk that
            # ended the replay: that error is the one to say, and the files still go.
            with contextlib.suppress(duckdb.Error):
                con.close()
        if self._temp is not None:
            shutil.rmtree(self._temp, ignore_errors=True)


_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""The errors of a disk with no room: full, over quota, or refusing a file that large."""


def _is_full(exc: BaseException, why: str) -> bool:
    """Whether `exc` (the OS's, or DuckDB's, which says the OS's words) is `_FULL`'s."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno in _FULL
    return any(os.strerror(code) in why for code in _FULL)


def _why(exc: BaseException) -> str:
    """Why a write failed, in a few words: ``File too large``, ``No space left on device``
    (what DuckDB says after the file it names, or the OS's own words)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return one_line(exc).rsplit(": ", 1)[-1]
