"""`Owner`: the service's hold on one store's projections, folding while it answers reads.

An embedded `MemoryGraph` folds before each read and lets its database go when idle; the
service holds it until it stops (`shares=False`: it owns the store's projections, and local
`lmg sql` goes through it) and otherwise folds with the same code (`memory_graph._Embedded`:
the folder lock, the gate, one sandboxed DuckDB instance, the history check,
`fold_available`), with two differences:

1. A thread folds continuously, in batches: it looks at the log's length every `poll_s` (one
   lock and one stat; appends through the service and by other processes alike) and folds
   what is new, resting longer after a long fold (`REST`), so that folding takes at most a
   tenth of the time however fast appends arrive. A read that needs appends the fold does not
   hold yet wakes it at once (`reach`): reads see acknowledged writes however long it rests.
   The thread answers such a read when its fold commits past what the read needs: one
   wake-up of the event loop per read, and another fold at once only while a read still
   waits for more (a read polling the checkpoint every 2 ms kept the event loop busy, and
   woke the fold again after every fold, for the few events appended meanwhile).
2. Reads never wait for the fold, nor for a file lock: each runs on a cursor of its own
   (`cursor`) of the same instance, and sees the last committed fold (DuckDB's MVCC).

`close` stops the thread, folds to the end of the log, and lets the database go.

A second thread keeps the store's text index (`_text_index`) caught up, once a search has
asked for it (or the file exists): after each fold, in batches read from a cursor of the
committed projections, resting as long as each batch took. The fold never waits for it.

`erase` runs an erasure through the owner (the service's admin route): the log through the
service's own handle, then at once the projections' part, by the same fold that notices an
erasure made by another process (`lmg erase`): the database file is closed and deleted, the
snapshots from the first erased LSN dropped, the log folded into a new file, and reads move
to it. It first waits for the reads already running on the old file to end (closing a
connection under a running read fails half done); while it folds, reads are refused as busy
rather than answered from the old file (which held the erased text), and the text index
waits: the erasure deletes it (it held the erased text too), and it is built again from the
new file.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from pathlib import Path

import duckdb

import eventlog
from eventlog import AsyncEventLog
from eventlog._erase import erase_open

from ._database import database_path
from ._erasure import ended, erasure_due
from ._text_index import TextIndex
from .errors import DatabaseBusy, ProjectionError
from .memory_graph import FOLD_MEMORY_LIMIT, _Embedded

__all__ = ["Owner"]

REST = 10.0
"""After a fold that took d seconds, the next waits max(`poll_s`, REST x d) unless a read
needs it: a fold costs tens of milliseconds whatever its size (a few dozen statements and a
commit), and its Python half holds the interpreter the service's requests run in: under
append load it folds larger batches less often (docs/benchmarks.md, the service)."""


class Owner:
    """Holds and folds the projections of the store that `log` has open."""

    def __init__(
        self,
        log: AsyncEventLog,
        database: str | Path | None = None,
        *,
        memory_limit: str = FOLD_MEMORY_LIMIT,
        wait_s: float = 10.0,
        poll_s: float = 0.1,
    ) -> None:
        self._reads = log.blocking()
        self.kind_of = self._reads.kind_of  # the id index's hint for readers' `get_node`
        db = database_path(log.path, database)
        self._embedded = _Embedded(
            self._reads, db, wait_s, memory_limit, shares=False, kind_of=self._reads.kind_of
        )
        self._embedded.run(lambda _reader: None)  # holds the database until close, and folds
        assert self._embedded.con is not None
        self._con = self._embedded.con
        self._root = self._con.cursor()  # read cursors are made from this one
        self._cursors = threading.Lock()
        self._folding = threading.Lock()  # one fold at a time: the thread's, or an erasure's
        self._rebuilding = False  # an erasure dropped the database; the new one is not folded
        self._lent: list[duckdb.DuckDBPyConnection] = []  # cursors given out, maybe still open
        self.poll_s = poll_s
        self.error: str | None = None  # why the fold stopped (a poison event), if it did
        self._log_end = 0
        self._behind_since: float | None = None
        self._wake = threading.Event()  # a read waits (`reach`), or the service stops
        self._waiting = threading.Lock()  # the reads waiting, and the wake for them
        self._waiters: dict[asyncio.Future[None], tuple[int, asyncio.AbstractEventLoop]] = {}
        self._stop = threading.Event()
        self.index = TextIndex(db)
        self._fold()  # ready means current: the backlog is folded before the first read
        if self.index.path.exists():
            self.index.wanted.set()
        self._thread = threading.Thread(target=self._follow, name="lmg-fold", daemon=True)
        self._thread.start()
        self._indexer = threading.Thread(target=self._keep_index, name="lmg-index", daemon=True)
        self._indexer.start()

    @property
    def checkpoint(self) -> int:
        return self._embedded.checkpoint

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor for one read: it sees the last committed fold; close it when done."""
        with self._cursors:
            if self._rebuilding:
                raise DatabaseBusy(
                    "the projections are being folded again after an erasure; retry shortly"
                )
            self._lent = [c for c in self._lent if _is_open(c)]
            cursor = self._root.cursor()
            self._lent.append(cursor)
            return cursor

    def erase(self, selector: eventlog.Selector, actor: str | None) -> eventlog.Erasure:
        """Erase what `selector` chooses from the log, the projections and the snapshots
        (`projections.erase`, through this owner; see the module docstring). Returns once
        reads are answered from the new database."""
        erasure = erase_open(self._reads, selector, actor=actor)
        self._fold()
        if erasure_due(self._embedded.db.parent, self._embedded.db):
            raise ProjectionError(f"the fold stopped before the erasure was done: {self.error}")
        ended(erasure)
        return erasure

    async def reach(self, lsn: int, timeout_s: float) -> None:
        """Wait (up to `timeout_s`) until the fold holds `lsn`: a read sees every append the
        service acknowledged before it, as an embedded graph's reads see their writes. The
        fold folds now rather than at its next poll, and answers when it holds `lsn`."""
        loop = asyncio.get_running_loop()
        reached: asyncio.Future[None] = loop.create_future()
        with self._waiting:
            if self.checkpoint >= lsn or self.error is not None:
                return
            self._waiters[reached] = (lsn, loop)
            self._wake.set()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reached, timeout_s)
        finally:
            with self._waiting:
                self._waiters.pop(reached, None)

    def _answer(self) -> None:
        """After a fold: answer the reads it reached (all of them once the fold has stopped),
        and leave the fold awake only while a read still waits for more (or to stop)."""
        with self._waiting:
            stopped = self.error is not None or self._stop.is_set()
            for reached, (lsn, loop) in list(self._waiters.items()):
                if stopped or lsn <= self.checkpoint:
                    del self._waiters[reached]
                    with contextlib.suppress(RuntimeError):  # its loop closed: nobody waits
                        loop.call_soon_threadsafe(_settle, reached)
            if self._waiters or self._stop.is_set():
                self._wake.set()
            else:
                self._wake.clear()

    def lag(self) -> tuple[int, float]:
        """How far the fold is behind the log: events, and seconds it has been behind."""
        events = max(0, self._log_end - 1 - self.checkpoint)
        since = self._behind_since
        return events, 0.0 if since is None or not events else time.monotonic() - since

    def _fold(self) -> None:
        try:
            self._fold_new()
        finally:
            self._answer()

    def _fold_new(self) -> None:
        with self._folding:
            self._log_end = self._reads.next_lsn()
            erasing = erasure_due(self._embedded.db.parent, self._embedded.db)
            if self._log_end - 1 <= self.checkpoint and not erasing:
                self._behind_since = None
                return
            if self._behind_since is None:
                self._behind_since = time.monotonic()
            indexed = self.index.path.exists()
            if erasing:
                with self._cursors:
                    self._rebuilding = True
            try:
                # an erasure waits for a batch of the index to end (it deletes the index),
                # then for the reads running on the database it closes
                with self.index.lock if erasing else contextlib.nullcontext():
                    if erasing:
                        self._settle()
                    self._embedded.run(lambda _reader: None)  # folds what the log holds
                    self._reopened()
            finally:
                with self._cursors:
                    self._rebuilding = False
            if indexed or self.index.path.exists():  # an erasure deleted it: build it again
                self.index.wanted.set()
            end = self._log_end - 1
            self._behind_since = None if end <= self.checkpoint else time.monotonic()

    def _settle(self) -> None:
        """Close the cursors given out (no new one is while an erasure folds), waiting for a
        read still running on one to end (it ends by the SQL time limit at most): the
        erasure closes their connection, and a close under a running read fails half done,
        leaving the database closed for every later read and the fold stopped."""
        with self._cursors:
            busy, self._lent = self._lent, []
        while busy := [cursor for cursor in busy if not _closed(cursor)]:
            time.sleep(0.01)

    def _reopened(self) -> None:
        """After an erasure the graph drops its database and folds into a new one: reads
        move to a cursor of the new connection (the old file held erased text)."""
        con = self._embedded.con
        if con is None or con is self._con:
            return
        with self._cursors:
            self._con, self._root = con, con.cursor()

    def _follow(self) -> None:
        rest = self.poll_s
        while not self._stop.is_set():
            folded = self.checkpoint
            try:
                began = time.monotonic()
                self._fold()
                rest = max(self.poll_s, REST * (time.monotonic() - began))
                if self.error is not None:  # what stopped it is gone (a journal repaired)
                    print("lmg serve: the fold goes on again", file=sys.stderr, flush=True)
                    self.error = None
            except Exception as exc:  # a poison event: reads go on, /readyz says why
                if self.error is None:
                    print(f"lmg serve: the fold stopped: {exc}", file=sys.stderr, flush=True)
                self.error = str(exc)
                self._answer()
                self._stop.wait(5.0)
            if self.checkpoint == folded:  # a read waits for more than the log holds yet
                self._stop.wait(0.002)
            self._wake.wait(rest)  # `_answer` set it if a read waits, else cleared it

    def _keep_index(self) -> None:
        """Catch the text index up whenever it is wanted (a search asked, or a fold added
        to an index that exists), a batch at a time, resting as long as each batch took, so
        it takes at most half of a core. An error is retried when next wanted; the log says
        when the index fails (again, or otherwise), and when it is kept again."""
        failing: str | None = None  # the error said last, until a batch succeeds
        while not self._stop.is_set():
            self.index.wanted.wait()
            self.index.wanted.clear()
            more = True
            while more and not self._stop.is_set():
                began = time.monotonic()
                try:
                    with self.index.lock:
                        cursor = self.cursor()  # DatabaseBusy while an erasure folds
                        try:
                            more = self.index.catch_up(cursor)
                        finally:
                            cursor.close()
                except DatabaseBusy:  # an erasure folds: the index is built again after it
                    more = False
                except Exception as exc:  # searches read the text meanwhile
                    if str(exc) != failing:
                        _say(f"the text index: {exc} (searches read the text meanwhile)")
                    failing, more = str(exc), False
                else:
                    if failing is not None:
                        _say("the text index is kept again")
                    failing = None
                self._stop.wait(time.monotonic() - began)

    def close(self) -> None:
        """Stop following, fold what the log holds (the drain's last step), close."""
        self._stop.set()
        self._wake.set()
        self.index.wanted.set()
        self._thread.join()
        self._indexer.join()
        try:
            if self.error is None:
                self._fold()
        finally:
            self._root.close()
            self._embedded.close()


def _settle(reached: asyncio.Future[None]) -> None:
    """On the read's event loop: the fold holds what it waits for (unless it timed out)."""
    if not reached.done():
        reached.set_result(None)


def _closed(cursor: duckdb.DuckDBPyConnection) -> bool:
    """Close `cursor` unless a read runs on it; True if it is closed now (an idle one at
    once: a read still waiting for its turn then finds it closed, and is told to retry)."""
    try:
        cursor.close()
    except duckdb.ResourceInUseException:
        return False
    return True


def _is_open(cursor: duckdb.DuckDBPyConnection) -> bool:
    """Is `cursor` still open (its reader has not closed it)? Cheap, and never waits for a
    read running on it."""
    try:
        cursor.query_progress()
    except duckdb.ConnectionException:
        return False
    return True


def _say(line: str) -> None:
    """A line in the service's log (its standard error)."""
    print(f"lmg serve: {line}", file=sys.stderr, flush=True)
