"""Who may open the projections database, and how, across processes.

DuckDB lets one process open a file read-write, and refuses read-only opens elsewhere while
it does. Three rules make a folder and many readers share one file:

1. One folder per database: whoever folds (an `lmg project` process or an embedded
   `MemoryGraph`) holds ``<db>.lock`` exclusively for its lifetime; a second is refused with
   `ProjectorBusy`, naming the holder. It can never double-apply: its checkpoint would also
   stop it, since the fold starts after the checkpoint it reads in its own transaction.
   A *passing* holder (`lmg sql` catching up, `lmg project` without ``--follow``) says so in
   the lock file; a folder that asks to (`lmg project`) waits for it to finish instead.
2. A gate, ``<db>.gate``, is held exclusively by the folder while it has the file open or
   deletes it (an erasure, a rebuild) and shared by readers while they have it open. A
   turnstile (``<db>.turnstile``) in front of it gives a waiting folder priority over
   readers who arrive after it, so readers cannot starve it.
   A waiting reader holds ``<db>.waiting`` shared, so the folder knows to let go soon.
   `lmg project` opens the file only to fold, and ends a hold after `hold_s` when someone
   waits, so readers slip in between. An embedded `MemoryGraph` opens it only to read (fold,
   then read), and ends a hold after the read during which someone came to wait, or when
   idle: it looks for waiting readers every 50 ms, and lets go after `idle_s` without a read.
3. Anything that ignores the gate (the ``duckdb`` CLI, a plain read-only DuckDB connection)
   is met by DuckDB's own lock: the folder retries until it is released (the projector's
   progress shows the time it waited; an embedded graph's read gives up after `wait_s` with
   `DatabaseBusy`, saying to close that connection or read through the gate).

None of these files is opened through a symbolic link, nor is the database (`open_database`
checks it and its ``.wal`` before DuckDB opens them); each is created with the modes of the
directory it is in (`eventlog._files`). DuckDB makes the database's write-ahead log itself,
with the umask's modes, at the first commit after each checkpoint (which deletes it): each
commit of ours gives it the database file's modes (`keep_wal_private`). Its spill directory,
``<db>.tmp`` (DuckDB's default temporary directory), is made by every read-write open with
the directory modes of the database's directory, before DuckDB would make it with the
umask's (`_spill_dir`); it then stays, empty between spills, as the lock files do.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb

from eventlog._files import Modes, make_dir, open_file, open_or_create, refuse_link

from ._sandbox import SANDBOX
from .errors import DatabaseBusy, ProjectionError, ProjectorBusy

__all__ = [
    "DATABASE_FILE",
    "FolderLock",
    "Gate",
    "database_path",
    "keep_wal_private",
    "open_database",
]

DATABASE_FILE = "projections.duckdb"


def database_path(store: str | os.PathLike[str], database: str | os.PathLike[str] | None) -> Path:
    """The database file of a store: ``<store>/projections.duckdb`` unless given."""
    return Path(database) if database is not None else Path(store) / DATABASE_FILE


_PASSING = "passing"  # the lock file's second line when its holder only catches up


class FolderLock:
    """Rule 1: the exclusive right to fold into one database file.

    `passing`: this holder only catches up and lets go. `wait_turn`: while a passing holder
    has the lock, it is called with that holder's name about every `poll_s` and the lock is
    tried again, until it returns False (then `ProjectorBusy`); a lasting holder is refused
    at once, since it may never let go."""

    def __init__(
        self,
        db: Path,
        holder: str,
        *,
        passing: bool = False,
        wait_turn: Callable[[str], bool] | None = None,
        poll_s: float = 0.05,
    ) -> None:
        self.path = Path(f"{db}.lock")
        self._fd = open_or_create(self.path, Modes.of(db.parent).file)
        try:
            while not _try_flock(self._fd):
                other, other_passing = self._read_holder()
                if not (other_passing and wait_turn is not None and wait_turn(other)):
                    raise ProjectorBusy(
                        f"{db} is already folded by {other}; one folder per database "
                        "(stop it, or give this one its own database file)"
                    )
                time.sleep(poll_s)
        except BaseException:
            os.close(self._fd)
            raise
        os.ftruncate(self._fd, 0)
        mark = f"{_PASSING}\n" if passing else ""
        os.pwrite(self._fd, f"{holder} (pid {os.getpid()})\n{mark}".encode(), 0)

    def _read_holder(self) -> tuple[str, bool]:
        """Who holds the lock, and whether it is passing (read from the lock file)."""
        lines = os.pread(self._fd, 200, 0).decode(errors="replace").splitlines()
        name = lines[0].strip() if lines and lines[0].strip() else "another process"
        return name, _PASSING in lines[1:]

    def release(self) -> None:
        if self._fd >= 0:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = -1


class Gate:
    """Rule 2: exclusive for the folder while it has the file open, shared for readers."""

    def __init__(self, db: Path) -> None:
        self.path = Path(f"{db}.gate")
        mode = Modes.of(db.parent).file
        self._fd = open_or_create(self.path, mode)
        # The turnstile gives the folder priority: flock has none, so a stream of readers,
        # each taking the gate shared before the last lets go, could keep it out forever.
        # A folder holds the turnstile while it waits for the gate; readers pass through it.
        self._turnstile = open_or_create(f"{db}.turnstile", mode)
        # Readers hold this one shared while they wait: a folder that sees it taken knows
        # someone is waiting and ends its hold after the batch in hand.
        try:
            self._waiting = open_or_create(f"{db}.waiting", mode)
        except BaseException:
            os.close(self._fd)
            os.close(self._turnstile)
            raise

    @contextlib.contextmanager
    def hold(self, *, exclusive: bool, timeout: float | None) -> Iterator[None]:
        self.acquire(exclusive=exclusive, timeout=timeout)
        try:
            yield
        finally:
            self.release()

    def acquire(self, *, exclusive: bool, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        if not exclusive:  # announce the wait, so a folder holding the gate lets go soon
            fcntl.flock(self._waiting, fcntl.LOCK_SH)
        try:
            self._lock(self._turnstile, mode, deadline, timeout)
            try:
                self._lock(self._fd, mode, deadline, timeout)
            finally:
                fcntl.flock(self._turnstile, fcntl.LOCK_UN)
        finally:
            if not exclusive:
                fcntl.flock(self._waiting, fcntl.LOCK_UN)

    def readers_waiting(self) -> bool:
        """True while a reader waits for the gate (the folder asks between batches)."""
        try:
            fcntl.flock(self._waiting, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(self._waiting, fcntl.LOCK_UN)
        return False

    def _lock(self, fd: int, mode: int, deadline: float | None, timeout: float | None) -> None:
        if deadline is None:
            fcntl.flock(fd, mode)
            return
        delay = 0.001
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise DatabaseBusy(self._busy(mode == fcntl.LOCK_EX, timeout)) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.02)

    def _busy(self, exclusive: bool, timeout: float | None) -> str:
        """What a caller who waited `timeout` for the gate in vain is told, and what to do."""
        db = self.path.with_suffix("")
        if exclusive:  # a folder, kept out by readers
            return (
                f"waited {timeout:g} s for readers of {db} in other processes to finish: end "
                "them (a long `projections.connect` block or `lmg sql` query), or wait longer "
                "(wait_s)"
            )
        return (
            f"waited {timeout:g} s for {db}, held by {_holder(self.path)}: it lets readers in "
            "between folds and when idle, so it was busy reading or folding all along; try "
            "again, or wait longer (wait_s, `lmg sql --wait`)"
        )

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            os.close(self._turnstile)
            os.close(self._waiting)
            self._fd = -1


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _holder(gate: Path) -> str:
    try:
        lines = Path(str(gate).removesuffix(".gate") + ".lock").read_text().splitlines()
    except OSError:
        lines = []
    return lines[0].strip() if lines and lines[0].strip() else "another process"


def open_database(
    db: Path,
    *,
    read_only: bool,
    timeout: float | None,
    waiting: str = "",
    memory_limit: str | None = None,
    checkpoint_threshold: str | None = None,
    sandbox: bool = False,
) -> duckdb.DuckDBPyConnection:
    """Connect, retrying while another process (rule 3) holds DuckDB's own lock.

    `memory_limit` (DuckDB's syntax: ``"64MB"``) bounds DuckDB's buffers; its default is 80%
    of RAM, which a long fold fills with cached blocks it never needs again.
    `checkpoint_threshold` is the WAL size at which a commit also checkpoints. DuckDB's
    default, 16 MB, makes nearly every batch of a fold a checkpoint, and a checkpoint
    rewrites the tables' indexes: the cost grows with the database, so a folder raises it
    (closing the connection checkpoints anyway). With `sandbox`, the instance is configured
    to run a user's SQL (`_sandbox.SANDBOX`: no files, no extensions, settings locked).

    DuckDB opens the file itself, following links: a link there (or at its ``.wal``) is
    refused first. A file DuckDB creates gets the modes of its directory, not the umask."""
    config: dict[str, str | bool | int | float | list[str]] = {}
    if memory_limit is not None:
        config["memory_limit"] = memory_limit
    if checkpoint_threshold is not None:
        config["checkpoint_threshold"] = checkpoint_threshold
    if sandbox:
        config |= SANDBOX
    for path in (db, Path(f"{db}.wal")):
        refuse_link(path)
    created = not db.exists()
    if read_only and created:
        raise ProjectionError(
            f"{db} does not exist yet: build it with `lmg project` or `MemoryGraph.open`"
        )
    if not read_only:
        _spill_dir(db)
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            con = duckdb.connect(str(db), read_only=read_only, config=config)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise ProjectionError(f"cannot open {db}: {exc}") from exc
            if deadline is not None and time.monotonic() >= deadline:
                said = str(exc).splitlines()[0]
                raise DatabaseBusy(
                    f"{db} stayed locked by another process for {timeout:g} s{waiting}: {said}"
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
            continue
        except duckdb.Error as exc:
            raise ProjectionError(f"cannot open {db}: {exc}") from exc
        if created:
            os.chmod(db, Modes.of(db.parent).file)
        _OPENED[con] = db
        return con


def _spill_dir(db: Path) -> None:
    """Make DuckDB's spill directory, ``<db>.tmp``, with the modes of a directory made in the
    database's own (or give it them, if it is there already; never through a link). DuckDB
    spills there, with the umask's modes, when a fold outgrows its memory limit; a directory
    it makes itself gets the umask's modes too, and goes at close. One made here is used as
    it is, and stays. It is DuckDB's default rather than a `temp_directory` setting: the
    sandbox (``enable_external_access=false``) refuses that setting."""
    path = Path(f"{db}.tmp")
    mode = Modes.of(db.parent).dir
    if not make_dir(path, mode) and os.stat(path).st_mode & 0o777 != mode:
        os.chmod(path, mode)


def keep_wal_private(con: duckdb.DuckDBPyConnection) -> None:
    """Give the write-ahead log of the database `con` was opened on (by `open_database`)
    that database file's modes (the store's). DuckDB creates the log with the umask's modes
    at the first commit after a checkpoint, and a checkpoint deletes it, so no mode set once
    lasts: call this after each commit. Never through a link."""
    path = _OPENED.get(con)
    if path is None:  # not a file this module opened
        return
    wal = f"{path}.wal"
    try:
        mode = os.lstat(path).st_mode & 0o777
        if os.lstat(wal).st_mode & 0o777 == mode:
            return
        fd = open_file(wal)
    except FileNotFoundError:  # checkpointed since (or not written yet)
        return
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


_OPENED: weakref.WeakKeyDictionary[duckdb.DuckDBPyConnection, Path] = weakref.WeakKeyDictionary()
"""The database file of each connection `open_database` made, for `keep_wal_private` (a
query would cost a millisecond a commit)."""
