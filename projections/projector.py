"""The projector process: fold a store's log into its database, then follow the log.

`lmg project STORE --follow` runs a `Projector`. It holds the folder lock for its lifetime
but opens the database only to fold (see `_database`). A hold lasts while there is work, up
to `backlog_hold_s` (30 s: each reopen costs a checkpoint), but only `hold_s` (0.5 s) once a
reader is waiting, and ends when a followed log goes quiet for `linger_s`. Readers in other
processes (`connect`, `lmg sql`) so wait about `hold_s` at most; the `duckdb` CLI, which
does not announce itself, may wait a whole hold.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import duckdb
import msgspec
import watchfiles

import eventlog
from eventlog import Record
from eventlog._advert import find

from ._database import FolderLock, Gate, database_path, open_database
from ._erasure import apply_pending, drop_database, erasure_due
from ._fold import Batch
from ._folder import BATCH_EVENTS, fold_sized, read_lean
from ._history import folded_history, forget_history, history_differs
from ._schema import check_version, checkpoint, ensure_schema
from ._text_index import drop_index
from .errors import DatabaseBusy, ProjectionError
from .snapshots import SnapshotInfo, SnapshotPolicy, Snapshots, SnapshotSkipped

__all__ = ["Progress", "Projector", "connect", "read_connection", "rebuild"]

DEFAULT_SNAPSHOTS = SnapshotPolicy()
"""A projector takes snapshots by default (None turns them off)."""

READERS_TURN_S = 0.025
"""Readers poll the gate at least every 20 ms (`Gate.acquire`): between two holds the
projector leaves it free this long, or a backlog would lock them out until it is folded."""


class Progress(msgspec.Struct, frozen=True, kw_only=True):
    """Where a projector stands, reported after each commit."""

    checkpoint: int  # the last LSN folded (-1: none)
    log_end: int  # the log's length when last looked at
    events_per_s: float  # over this run so far
    lag_events: int  # how far behind the log the checkpoint is
    lag_ms: float | None  # now minus the `ts` of the last folded event, when following
    waited_ms: float  # time spent waiting for readers to release the database


def _segments_only(_change: watchfiles.Change, path: str) -> bool:
    return path.endswith(".seg")


class Projector:
    """Folds the log of `store` into `database` (default ``<store>/projections.duckdb``)."""

    def __init__(
        self,
        store: str | os.PathLike[str],
        database: str | os.PathLike[str] | None = None,
        *,
        batch_events: int = BATCH_EVENTS,
        hold_s: float = 0.5,
        backlog_hold_s: float = 30.0,
        linger_s: float = 0.05,
        wait_s: float | None = None,
        rebuild: bool = False,
        memory_limit: str = "256MB",
        snapshots: SnapshotPolicy | None = DEFAULT_SNAPSHOTS,
        passing: bool = False,
        wait_turn: Callable[[str], bool] | None = None,
    ) -> None:
        self.store = Path(store)
        self.db = database_path(store, database)
        self.batch_events = batch_events
        self.hold_s = hold_s  # how long a hold lasts once a reader waits
        self.backlog_hold_s = backlog_hold_s  # how long it lasts at most (a reopen checkpoints)
        self.linger_s = linger_s
        self.wait_s = wait_s  # None: wait for readers as long as it takes
        self.memory_limit = memory_limit  # DuckDB's; it spills to disk beyond it
        # `passing`: it will only catch up (another folder may wait for it); `wait_turn`:
        # wait for such a folder rather than be refused (see `FolderLock`)
        holder = "a one-off catch-up" if passing else "lmg project"
        with contextlib.ExitStack() as undo:  # a failed open (`wait_s` past) holds nothing
            self._lock = FolderLock(self.db, holder, passing=passing, wait_turn=wait_turn)
            undo.callback(self._lock.release)
            self._gate = Gate(self.db)
            undo.callback(self._gate.close)
            if rebuild:
                self._drop(wait_s)
            self._log = eventlog.open(self.store, readonly=True)
            undo.callback(self._log.close)
            if erasure_due(self.store, self.db):  # its part of an erasure, before any fold
                with self._gate.hold(exclusive=True, timeout=wait_s):
                    apply_pending(self.store, self.db)
            self._ready = False
            # A snapshot's chunks are saved by this thread while the fold goes on (`_saved`).
            self._saver = ThreadPoolExecutor(1, thread_name_prefix="lmg-snapshot")
            undo.callback(self._saver.shutdown)
            self._saving: tuple[int, Future[SnapshotInfo]] | None = None
            self._checkpoint = -1
            self._log_end = 0
            self._folded = 0
            self._started = time.monotonic()
            self._waited = 0.0
            self._released = 0.0  # when the gate was last released (monotonic)
            self._last_ts: int | None = None
            self._snapshots = Snapshots(self.store)
            with self._open() as con:
                ensure_schema(con)
                why = history_differs(self._log, *folded_history(con))
                if why is not None:  # the log lost what we folded: never mix two histories
                    forget_history(con, why)
                    drop_index(self.db)  # it indexed the text of that history too
                    ensure_schema(con)
                    self._snapshots.drop_other_histories(self._log)
                self._checkpoint = checkpoint(con)
            self._cursor = self._log.cursor(self._checkpoint + 1)
            undo.callback(self._cursor.close)
            self._ahead: tuple[Record, int] | None = None  # read, not yet folded
            self._policy = snapshots
            taken = self._snapshots.all() if snapshots is not None else []
            self._snapshot_lsn = taken[-1].lsn if taken else -1
            self._snapshot_bytes = 0  # the cursor's bytes_read at the newest snapshot
            self._ready = True
            undo.pop_all()  # open: `close` lets go of it all from now on

    def _drop(self, wait_s: float | None) -> None:
        """Delete the database for a rebuild, with what derives from it (`drop_database`):
        under the folder lock, so no other folder starts in between, and with the gate
        exclusive, so no reader has the file open while it goes (one may be reading it in
        another process: this waits for it, up to `wait_s`, then `DatabaseBusy`)."""
        with self._gate.hold(exclusive=True, timeout=wait_s):
            drop_database(self.db)

    def close(self) -> None:
        self._saver.shutdown()
        self._cursor.close()
        self._log.close()
        self._gate.close()
        self._lock.release()

    def __enter__(self) -> Projector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def checkpoint(self) -> int:
        return self._checkpoint

    @contextlib.contextmanager
    def _open(self) -> Iterator[duckdb.DuckDBPyConnection]:
        pause = self._released + READERS_TURN_S - time.monotonic()
        if pause > 0:
            time.sleep(pause)  # the readers' turn
        began = time.monotonic()
        self._gate.acquire(exclusive=True, timeout=self.wait_s)
        self._waited += time.monotonic() - began
        try:
            erased = apply_pending(self.store, self.db)  # an erasure dropped the database
            if erased and self._ready:  # (while opening, the checkpoint is read from the file)
                self._start_over()
            con = open_database(
                self.db,
                read_only=False,
                timeout=self.wait_s,
                waiting=" (a duckdb CLI?)",
                memory_limit=self.memory_limit,
                checkpoint_threshold="1GB",  # each close checkpoints: one per hold
            )
            try:
                if erased:
                    ensure_schema(con)
                yield con
            finally:
                try:
                    self._saved()  # closing checkpoints: not while a snapshot reads the file
                finally:
                    con.close()
        finally:
            self._gate.release()
            self._released = time.monotonic()

    def _start_over(self) -> None:
        """Fold from LSN 0 into the fresh file an erasure left (it dropped the old one)."""
        self._cursor.close()
        self._cursor = self._log.cursor(0)
        self._ahead = None
        self._checkpoint = -1
        taken = self._snapshots.all()
        self._snapshot_lsn = taken[-1].lsn if taken else -1
        self._snapshot_bytes = 0

    def progress(self, *, following: bool = False) -> Progress:
        elapsed = max(time.monotonic() - self._started, 1e-9)
        lag_ms = None
        if following and self._last_ts is not None:
            lag_ms = max(0.0, (time.time_ns() - self._last_ts) / 1e6)
        return Progress(
            checkpoint=self._checkpoint,
            log_end=self._log_end,
            events_per_s=self._folded / elapsed,
            lag_events=max(0, self._log_end - 1 - self._checkpoint),
            lag_ms=lag_ms,
            waited_ms=self._waited * 1e3,
        )

    def catch_up(
        self,
        *,
        stop: threading.Event | None = None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> int:
        """Fold everything the log holds now; returns the checkpoint. Raises `PoisonEvent`
        (after folding everything before it) at an event the fold cannot apply.

        Opens the database only when there is something to fold, and lets it go whenever a
        hold is over, leaving readers their turn in between."""
        self.measure()
        while not (stop and stop.is_set()) and self._peek():
            with self._open() as con:
                # Hold from here: opening may wait for readers, which is no time held.
                reached_end = self._fold_pending(con, time.monotonic(), stop, on_progress, False)
            if reached_end:
                break
        return self._checkpoint

    def follow(
        self,
        stop: threading.Event,
        on_progress: Callable[[Progress], None] | None = None,
        poll_s: float = 1.0,
    ) -> int:
        """Catch up, then fold new events as they land until `stop` is set.

        While events keep arriving, the database stays open between wake-ups (a reopen
        costs tens of milliseconds, most of a small batch's lag) until the hold is over;
        when the log has been quiet for `linger_s`, readers get their turn too. With nothing
        arriving, it waits on file changes, checking every `poll_s`."""
        watcher = watchfiles.watch(
            self.store,
            watch_filter=_segments_only,
            debounce=0,
            step=5,
            rust_timeout=max(1, int(self.linger_s * 1000)),
            yield_on_timeout=True,
            stop_event=stop,
        )
        try:
            self.catch_up(stop=stop, on_progress=on_progress)
            idle_since = time.monotonic()
            while not stop.is_set():
                if not next(watcher, None) and time.monotonic() - idle_since < poll_s:
                    continue  # nothing changed: a cheap wait, the database stays closed
                idle_since = time.monotonic()
                if not self._peek() and not erasure_due(self.store, self.db):
                    continue  # (an erasure's journal may turn due after its record is folded)
                with self._open() as con:
                    began = time.monotonic()
                    while not stop.is_set():
                        self._fold_pending(con, began, stop, on_progress, True)
                        if self._hold_over(began) or not next(watcher, None):
                            break  # time's up, or quiet for linger_s: the readers' turn
                idle_since = time.monotonic()
        finally:
            with contextlib.suppress(Exception):
                watcher.close()
        return self._checkpoint

    def _hold_over(self, began: float) -> bool:
        """A hold ends after `backlog_hold_s`, or after `hold_s` once a reader waits."""
        held = time.monotonic() - began
        return held >= self.backlog_hold_s or (held >= self.hold_s and self._gate.readers_waiting())

    def measure(self) -> int:
        """Look up the log's length (for progress and lag; it scans the last segment)."""
        self._log_end = max(self._log_end, self._log.next_lsn())
        return self._log_end

    def _peek(self) -> bool:
        """Is there a record after the checkpoint? Keeps it for the next fold."""
        if self._ahead is None:
            self._ahead = next(read_lean(self._cursor), None)
        return self._ahead is not None

    def _fold_pending(
        self,
        con: duckdb.DuckDBPyConnection,
        began: float,
        stop: threading.Event | None,
        on_progress: Callable[[Progress], None] | None,
        following: bool,
    ) -> bool:
        """Fold what the log holds until its end or the hold that `began` is over; True if the
        end was reached."""
        source = read_lean(self._cursor)
        if self._ahead is not None:
            source = itertools.chain([self._ahead], source)
            self._ahead = None
        held_out = False

        def record(batch: Batch, last: Record) -> None:
            self._folded += last.lsn - self._checkpoint
            self._checkpoint, self._last_ts = last.lsn, last.event.ts
            self._log_end = max(self._log_end, last.lsn + 1)
            self._maybe_snapshot(con, last.event.ts)
            if on_progress is not None:
                on_progress(self.progress(following=following))

        def keep_going() -> bool:
            nonlocal held_out
            held_out = self._hold_over(began)
            return not held_out and not (stop and stop.is_set())

        try:
            fold_sized(
                con,
                source,
                batch_events=self.batch_events,
                keep_going=keep_going,
                on_batch=record,
            )
        except BaseException:
            # A poison event commits what precedes it: read back where we stand, and put the
            # cursor there, so this projector can be asked again.
            with contextlib.suppress(Exception):
                self._checkpoint = checkpoint(con)
            self._cursor.close()
            self._cursor = self._log.cursor(self._checkpoint + 1)
            self._ahead = None
            raise
        return not held_out and not (stop and stop.is_set())

    def _maybe_snapshot(self, con: duckdb.DuckDBPyConnection, ts: int) -> None:
        """Take a snapshot when the policy says one is due (after a commit, between batches):
        checkpoint now, save its chunks while the next batches fold (`_saved`)."""
        policy = self._policy
        if policy is None:
            return
        read = self._cursor.bytes_read
        if read < self._snapshot_bytes:  # a new cursor (after a poison event)
            self._snapshot_bytes = 0
        if (
            self._checkpoint - self._snapshot_lsn < policy.every_events
            and read - self._snapshot_bytes < policy.every_bytes
        ):
            return
        self._saved()  # its checkpoint may not come before the last one's chunks are read
        try:
            saving = self._snapshots.take_in_background(
                con, self.db, ts=ts, keep=policy.keep, pool=self._saver
            )
        except (OSError, duckdb.Error, ProjectionError) as exc:
            _not_taken(self._checkpoint, exc)
        else:
            self._saving = (self._checkpoint, saving)
        self._snapshot_lsn, self._snapshot_bytes = self._checkpoint, read

    def _saved(self) -> None:
        """Wait for the snapshot being saved, if any. Its chunks are read from the database
        file while the fold goes on (`Snapshots.take_in_background`): nothing may checkpoint
        the database meanwhile, neither the next snapshot nor closing the connection."""
        if self._saving is None:
            return
        lsn, saving = self._saving
        self._saving = None
        try:
            saving.result()
        except (OSError, duckdb.Error, ProjectionError) as exc:
            _not_taken(lsn, exc)


def _not_taken(lsn: int, exc: Exception) -> None:
    """A snapshot is a cache: one that cannot be taken (a full disk) is reported with a
    warning and the fold goes on."""
    warnings.warn(f"no snapshot at LSN {lsn}: {exc}", SnapshotSkipped, stacklevel=3)


@contextlib.contextmanager
def connect(
    store: str | os.PathLike[str],
    database: str | os.PathLike[str] | None = None,
    *,
    wait_s: float = 10.0,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection to a store's projections, safe beside a running projector.

    Sandboxed (docs/sql.md): DuckDB refuses anything that would read or write a file other
    than the database, load an extension, or change a setting.

    Holds the gate (shared) until the block ends: keep the block short, since the projector
    cannot commit meanwhile. Raises `DatabaseBusy` after `wait_s` if the folder does not let
    go (an embedded MemoryGraph lets go after the read in hand), and at once if `lmg serve`
    owns the store: it holds its database while it runs, and a DuckDB connection cannot come
    over HTTP, so the error names the service to read through instead."""
    if database is None:
        _refuse_if_served(Path(store))
    with read_connection(store, database, wait_s=wait_s, sandbox=True) as con:
        yield con


def _refuse_if_served(store: Path) -> None:
    service = find(store)
    if service is not None:
        url, name = service["url"], service["store"]
        raise DatabaseBusy(
            f"the service at {url} owns these projections (lmg serve): read them through it, "
            f"with projections.MemoryGraph.connect({url!r}, {name!r}) (sql, rows, typed reads)"
        )


@contextlib.contextmanager
def read_connection(
    store: str | os.PathLike[str],
    database: str | os.PathLike[str] | None = None,
    *,
    wait_s: float = 10.0,
    sandbox: bool,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """`connect`, for the project's own code too: without `sandbox`, the connection may
    write files (an export's Parquet), so it never runs a user's SQL."""
    db = database_path(store, database)
    missing = f"{db} does not exist yet: build it with `lmg project {store}`"
    if not db.exists() and not Path(f"{db}.gate").exists():  # never built: no gate to wait at
        raise ProjectionError(missing)
    gate = Gate(db)
    try:
        with gate.hold(exclusive=False, timeout=wait_s):
            # Looked for again under the gate: a folder finishing an erasure deletes the file
            # and makes it anew while it holds the gate, so a look before it may find none.
            if not db.exists():
                raise ProjectionError(missing)
            con = open_database(db, read_only=True, timeout=wait_s, sandbox=sandbox)
            try:
                check_version(con)  # another version's tables are not the documented ones
                yield con
            finally:
                con.close()
    finally:
        gate.close()


def rebuild(
    store: str | os.PathLike[str],
    database: str | os.PathLike[str] | None = None,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    snapshots: SnapshotPolicy | None = DEFAULT_SNAPSHOTS,
) -> int:
    """Delete a store's projections and fold the whole log again (taking snapshots as it
    goes, unless `snapshots` is None); returns the checkpoint. The delete waits for readers
    in other processes to close the file (the gate), as a fold does."""
    with Projector(store, database, rebuild=True, snapshots=snapshots) as projector:
        return projector.catch_up(on_progress=on_progress)
