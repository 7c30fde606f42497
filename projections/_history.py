"""Which history a database folded: the mark of its checkpoint event, checked against the log.

A checkpoint says how far a database folded, not *what* it folded. If the log loses its tail
(power loss in the `INTERVAL`/`NONE` modes, a deleted last segment, a restored older copy) and
new events then take the lost LSNs, the checkpoint still counts, but the events behind it are
gone. So the fold records, in the same transaction as the checkpoint, a mark of the event at
it: its ``ts`` (the checkpoint's ``ts`` column) and the CRC32C of its MessagePack encoding (key
``checkpoint_crc32c`` of ``lmg_meta``), which covers its ids (random bits of UUIDv7) and its
time. On open, the event at the checkpoint is read back from the log (one seek) and compared:

- equal: the log begins with exactly the history folded (a history cut and rewritten before
  the checkpoint would have rewritten the event at it too);
- missing or different: the database holds events the log no longer has, and must be rebuilt.

The mark depends only on the event as decoded, so it survives a rewritten segment file that
keeps its events (a rebuilt index, another compression), and an event type that gains a field
(defaults are not encoded).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import duckdb
import google_crc32c
import msgspec

from eventlog import EventBase

from ._database import keep_wal_private

if TYPE_CHECKING:
    from ._folder import LogReader

__all__ = [
    "HistoryChanged",
    "event_mark",
    "folded_history",
    "forget_history",
    "history_differs",
    "record_mark",
]

_KEY = "checkpoint_crc32c"
_encode = msgspec.msgpack.Encoder().encode


class HistoryChanged(UserWarning):
    """A database (or snapshot) folded events the log no longer holds: it was rebuilt (or
    skipped), never mixed with the log's present history."""


def event_mark(event: EventBase) -> int:
    """The CRC32C of an event's encoding: what `history_differs` compares."""
    return int(google_crc32c.value(_encode(event)))


def record_mark(con: duckdb.DuckDBPyConnection, event: EventBase) -> None:
    """Record the mark of the checkpoint event (inside the fold's transaction).

    An ``UPDATE`` with a literal, and an insert only the first time: every batch records a
    mark, and DuckDB runs an ``INSERT OR REPLACE`` or a prepared statement several times
    slower than a plain ``UPDATE`` (about 2 ms against 0.5)."""
    mark = event_mark(event)
    (updated,) = con.execute(
        f"UPDATE lmg_meta SET value = '{mark}' WHERE key = '{_KEY}'"
    ).fetchall()[0]
    if not updated:
        con.execute("INSERT INTO lmg_meta VALUES (?, ?)", [_KEY, str(mark)])


def folded_history(con: duckdb.DuckDBPyConnection) -> tuple[int, int | None, int | None]:
    """The database's checkpoint LSN, that event's ts and mark (None: not recorded)."""
    lsn, ts = con.execute("SELECT lsn, ts FROM lmg_checkpoints ORDER BY lsn LIMIT 1").fetchall()[0]
    rows = con.execute("SELECT value FROM lmg_meta WHERE key = ?", [_KEY]).fetchall()
    return int(lsn), ts, int(rows[0][0]) if rows and lsn >= 0 else None


def history_differs(log: LogReader, lsn: int, ts: int | None, mark: int | None) -> str | None:
    """Why the event at `lsn` in the log is not the one folded (None: it is, or `lsn` < 0).

    A mark not recorded (a database of older code) is not compared; the ts still is."""
    if lsn < 0:
        return None
    records = list(log.read(lsn, lsn + 1))  # read to its end: the cursor closes
    if not records:
        return f"it folded LSN {lsn}, but the log ends before it"
    found = records[0]
    if (ts is not None and found.event.ts != ts) or (
        mark is not None and event_mark(found.event) != mark
    ):
        return f"event {lsn} in the log is not the one it folded (the log was cut and rewritten)"
    return None


def forget_history(con: duckdb.DuckDBPyConnection, why: str) -> None:
    """Empty a database that folded another history, warning in one line, so that it folds
    the log from zero: every table and view goes, in one transaction (the caller then makes
    the schema again). A database is a cache of the log, never mixed with another history."""
    warnings.warn(f"the projections are rebuilt from zero: {why}", HistoryChanged, stacklevel=3)
    objects = con.execute(
        "SELECT table_name, table_type FROM information_schema.tables "
        "WHERE table_schema = 'main' ORDER BY table_type = 'BASE TABLE'"
    ).fetchall()
    con.execute("BEGIN")
    try:
        for name, kind in objects:
            con.execute(f'DROP {"TABLE" if kind == "BASE TABLE" else "VIEW"} "{name}" CASCADE')
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    keep_wal_private(con)
