"""Folding a log into a database batch by batch: one transaction per batch, with its checkpoint."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import duckdb
import msgspec

from eventlog import Cursor, Record
from eventlog._lean import full_event

from ._fold import Batch, fold
from ._schema import PROJECTIONS, checkpoint
from ._stage import STAGED_TYPES
from .errors import FoldFailed, PoisonEvent, ProjectionError

__all__ = [
    "BATCH_BYTES",
    "BATCH_EVENTS",
    "LogReader",
    "commit_batch",
    "fold_available",
    "fold_records",
    "fold_sized",
    "read_lean",
]

BATCH_EVENTS = 20_000
"""Events per transaction: large enough for bulk writes, small enough to bound memory."""

BATCH_BYTES = 16 * 1024 * 1024
"""Encoded bytes per transaction: a batch closes once its events reach this much, so a batch
holds at most this plus one event. DuckDB holds a batch's texts about three times over (the
staged copy, the joined rows, the table's), so without it two of the largest events the log
accepts (`max_request_bytes`, 64 MiB) would not fit in the projector's 256 MB."""

_ENCODER = msgspec.msgpack.Encoder()


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
    except PoisonEvent as poison:
        _rollback(con)
        before = [r for r in records if r.lsn < poison.lsn]
        if before:
            commit_batch(con, before)
        raise
    except duckdb.Error as exc:
        _rollback(con)
        raise _failed("fold", records, exc) from exc
    except BaseException:
        _rollback(con)
        raise
    try:  # a COMMIT that fails has already ended the transaction: nothing to roll back
        con.execute("COMMIT")
    except duckdb.Error as exc:
        raise _failed("commit", records, exc) from exc
    return batch


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back after a failure; if that fails too (DuckDB may have invalidated the
    database), the first error is the one to report, and the next open recovers."""
    with contextlib.suppress(duckdb.Error):
        con.execute("ROLLBACK")


def _failed(step: str, records: Sequence[Record], exc: duckdb.Error) -> FoldFailed:
    span = f"LSNs {records[0].lsn}..{records[-1].lsn}" if records else "an empty batch"
    return FoldFailed(f"cannot {step} {span}: {_cause(exc)}")


def _cause(exc: duckdb.Error) -> str:
    """DuckDB's message in one line: the original error where it wraps one (a failed COMMIT
    is reported as a failed rollback, with the cause on an ``Original Error:`` line)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if line.startswith("Original Error: "):
            return line.removeprefix("Original Error: ")
    return lines[0] if lines else type(exc).__name__


def fold_available(
    con: duckdb.DuckDBPyConnection,
    log: LogReader,
    *,
    batch_events: int = BATCH_EVENTS,
    batch_bytes: int = BATCH_BYTES,
    stop_lsn: int | None = None,
    keep_going: Callable[[], bool] = lambda: True,
    on_batch: Callable[[Batch, Record], None] | None = None,
) -> int:
    """Fold everything the log holds after the checkpoint (up to `stop_lsn`, excluded).

    Returns the new checkpoint. `keep_going` is asked between batches.
    """
    start = checkpoint(con) + 1
    make_cursor = getattr(log, "_cursor", None)  # a local log: read it lean (`read_lean`)
    if make_cursor is not None:
        cursor = make_cursor(start, stop_lsn, None, None)
        try:
            return fold_sized(
                con,
                read_lean(cursor),
                batch_events=batch_events,
                batch_bytes=batch_bytes,
                keep_going=keep_going,
                on_batch=on_batch,
            )
        finally:
            cursor.close()
    records = log.read(start, stop_lsn)
    try:
        return fold_records(
            con,
            records,
            batch_events=batch_events,
            batch_bytes=batch_bytes,
            keep_going=keep_going,
            on_batch=on_batch,
        )
    finally:  # closing the generator closes its cursor
        close = getattr(records, "close", None)
        if close is not None:
            close()


def read_lean(cursor: Cursor) -> Iterator[tuple[Record, int]]:
    """What the fold reads from a local log: each record with its size as stored, the staged
    types as their lean twins (`eventlog._lean`: ids as 16 bytes, which go into Arrow as
    they are), so neither sizing nor staging makes a Python object per id or encodes an
    event again. Their records never leave the fold (`on_batch` gets the public event)."""
    return cursor._sized_records(STAGED_TYPES)


def fold_records(
    con: duckdb.DuckDBPyConnection,
    records: Iterator[Record],
    *,
    batch_events: int = BATCH_EVENTS,
    batch_bytes: int = BATCH_BYTES,
    keep_going: Callable[[], bool] = lambda: True,
    on_batch: Callable[[Batch, Record], None] | None = None,
) -> int:
    """Fold `records` (which must start just after the checkpoint) in batches of at most
    `batch_events` events and about `batch_bytes` (see `BATCH_BYTES`), one transaction each,
    while `keep_going()`; returns the checkpoint."""
    sized = ((record, len(_ENCODER.encode(record.event))) for record in records)
    return fold_sized(
        con,
        sized,
        batch_events=batch_events,
        batch_bytes=batch_bytes,
        keep_going=keep_going,
        on_batch=on_batch,
    )


def fold_sized(
    con: duckdb.DuckDBPyConnection,
    records: Iterator[tuple[Record, int]],
    *,
    batch_events: int = BATCH_EVENTS,
    batch_bytes: int = BATCH_BYTES,
    keep_going: Callable[[], bool] = lambda: True,
    on_batch: Callable[[Batch, Record], None] | None = None,
) -> int:
    """`fold_records` of records with their sizes in bytes (`read_lean`)."""
    while keep_going():
        chunk = _take(records, batch_events, batch_bytes)
        if not chunk:
            break
        batch = commit_batch(con, chunk)
        if on_batch is not None:
            last = chunk[-1]
            on_batch(batch, Record(last.lsn, full_event(last.event)))
    return checkpoint(con)


def _take(records: Iterator[tuple[Record, int]], events: int, budget: int) -> list[Record]:
    """The next batch: up to `events` records, closed by the one that reaches `budget` bytes.

    It reads no record it does not return: a caller's cursor must stay where the fold is."""
    chunk: list[Record] = []
    if events < 1 or budget < 1:
        return chunk
    size = 0
    for record, bytes_ in records:
        chunk.append(record)
        size += bytes_
        if len(chunk) >= events or size >= budget:
            break
    return chunk
