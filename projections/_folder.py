"""Folding a log into a database batch by batch: one transaction per batch, with its checkpoint."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import duckdb

from eventlog import Record

from ._fold import Batch, fold
from ._schema import PROJECTIONS, checkpoint
from .errors import PoisonEvent, ProjectionError

__all__ = ["BATCH_EVENTS", "LogReader", "commit_batch", "fold_available", "fold_records"]

BATCH_EVENTS = 20_000
"""Events per transaction: large enough for bulk writes, small enough to bound memory."""


class LogReader(Protocol):
    """What folding needs of a log handle (`EventLog`, `AsyncEventLog`, read-only or not)."""

    def read(self, start: int = 0, stop: int | None = None) -> Iterator[Record]: ...

    def next_lsn(self) -> int: ...


def commit_batch(con: duckdb.DuckDBPyConnection, records: Sequence[Record]) -> Batch:
    """Fold `records` and move the checkpoint in one transaction.

    The records must start just after the checkpoint read inside that transaction, so no
    batch is ever applied twice. On a `PoisonEvent`, the events before it are committed and
    the error is raised: the checkpoint stops just before the poison.
    """
    con.execute("BEGIN")
    try:
        expected = checkpoint(con) + 1
        if records and records[0].lsn != expected:
            raise ProjectionError(
                f"batch starts at LSN {records[0].lsn} but the projections expect {expected}"
            )
        batch = fold(con, PROJECTIONS, records)
        con.execute("COMMIT")
        return batch
    except PoisonEvent as poison:
        con.execute("ROLLBACK")
        before = [r for r in records if r.lsn < poison.lsn]
        if before:
            commit_batch(con, before)
        raise
    except BaseException:
        con.execute("ROLLBACK")
        raise


def fold_available(
    con: duckdb.DuckDBPyConnection,
    log: LogReader,
    *,
    batch_events: int = BATCH_EVENTS,
    stop_lsn: int | None = None,
    keep_going: Callable[[], bool] = lambda: True,
    on_batch: Callable[[Batch, Record], None] | None = None,
) -> int:
    """Fold everything the log holds after the checkpoint (up to `stop_lsn`, excluded).

    Returns the new checkpoint. `keep_going` is asked between batches.
    """
    records = log.read(checkpoint(con) + 1, stop_lsn)
    try:
        return fold_records(
            con, records, batch_events=batch_events, keep_going=keep_going, on_batch=on_batch
        )
    finally:  # closing the generator closes its cursor
        close = getattr(records, "close", None)
        if close is not None:
            close()


def fold_records(
    con: duckdb.DuckDBPyConnection,
    records: Iterator[Record],
    *,
    batch_events: int = BATCH_EVENTS,
    keep_going: Callable[[], bool] = lambda: True,
    on_batch: Callable[[Batch, Record], None] | None = None,
) -> int:
    """Fold `records` (which must start just after the checkpoint) in batches of
    `batch_events`, one transaction each, while `keep_going()`; returns the checkpoint."""
    while keep_going():
        chunk = list(itertools.islice(records, batch_events))
        if not chunk:
            break
        batch = commit_batch(con, chunk)
        if on_batch is not None:
            on_batch(batch, chunk[-1])
    return checkpoint(con)
