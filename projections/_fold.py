"""The fold: a pure function of (tables, events) that every projection shares.

`fold(con, records)` runs in three passes over one batch, all in the caller's transaction:

1. *want*: each projection names the existing rows the events refer to;
2. *load*: one query per table fetches them;
3. *apply*: each event changes rows in memory, in LSN order, projection by projection;

then each table is written once (Arrow ``INSERT`` for new rows, ``UPDATE ... FROM`` for
changed ones) and every projection's checkpoint moves to the batch's last LSN. The projector,
`MemoryGraph` and `replay` all call this function; there is no other fold code.
"""

from __future__ import annotations

import functools
import hashlib
import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeAlias

import duckdb
import msgspec

from eventlog import Record
from eventlog.events import EventBase, tag_of

from ._table import Row, Table, TableChanges
from .errors import PoisonEvent

__all__ = ["Batch", "Projection", "fold", "implicit_edge_id", "implicit_edge_key", "json_text"]

_json_encode = msgspec.json.Encoder().encode


def implicit_edge_key(edge_type: str, from_id: uuid.UUID, to_id: uuid.UUID) -> bytes:
    """The 16 bytes of `implicit_edge_id`, as the fold stores them (no UUID object made)."""
    both = (from_id.int << 128 | to_id.int).to_bytes(32, "big")
    digest = bytearray(
        hashlib.blake2b(both, digest_size=16, person=edge_type.encode()[:16]).digest()
    )
    digest[6] = digest[6] & 0x0F | 0x80  # version 8 (RFC 9562: custom)
    digest[8] = digest[8] & 0x3F | 0x80  # the RFC variant
    return bytes(digest)


def implicit_edge_id(edge_type: str, from_id: uuid.UUID, to_id: uuid.UUID) -> uuid.UUID:
    """The id of an edge the log implies but never names (RESPONDS_TO, FOLLOWS, ...).

    A hash of (type, from, to) as a version 8 UUID: the same in every fold, so replays and
    rebuilds agree, and no event needs to carry it.
    """
    return uuid.UUID(bytes=implicit_edge_key(edge_type, from_id, to_id))


def json_text(value: Any) -> str | None:
    """A JSON column value; None stays SQL NULL."""
    return None if value is None else _json_encode(value).decode()


def json_value(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class Batch:
    """The rows one fold call has loaded or made, by table name."""

    def __init__(self, tables: Sequence[Table]) -> None:
        self.tables = {t.name: TableChanges(t) for t in tables}
        self.rows_written = 0

    def changed(self, name: str) -> list[Row]:
        """The rows of table `name` this batch made or changed."""
        changes = self.tables[name]
        return [changes.rows[k] for k in (*changes.new, *changes.dirty)]

    def __getitem__(self, name: str) -> TableChanges:
        return self.tables[name]


class Projection(Protocol):
    """A named set of tables and the code that folds events into them."""

    @property
    def name(self) -> str:
        """The projection's name, its key in ``lmg_checkpoints``."""

    @property
    def tables(self) -> tuple[Table, ...]: ...

    @property
    def views(self) -> tuple[str, ...]:
        """CREATE OR REPLACE VIEW statements over the tables."""

    @property
    def wants(self) -> frozenset[type[EventBase]]:
        """The event types `want` looks at (the fold calls it for no others)."""

    @property
    def applies(self) -> frozenset[type[EventBase]]:
        """The event types `apply` changes rows for (the fold calls it for no others)."""

    def want(self, batch: Batch, event: EventBase) -> None:
        """Name the existing rows `apply` will need for `event`."""

    def apply(self, batch: Batch, lsn: int, event: EventBase) -> None:
        """Change rows in memory; KeyError or ValueError means the event cannot apply."""


def fold(
    con: duckdb.DuckDBPyConnection,
    projections: Sequence[Projection],
    records: Sequence[Record],
) -> Batch:
    """Fold `records` into the tables through `con` (inside the caller's transaction).

    Returns the batch (what it changed, `rows_written`). Raises `PoisonEvent` naming the first
    event that cannot be applied; nothing of this batch is written then: the caller rolls back.
    """
    batch = Batch([t for p in projections for t in p.tables])
    if not records:
        return batch
    wants, applies = _dispatch(tuple(projections))
    for _lsn, event in records:
        for want in wants.get(event.__class__, ()):
            want(batch, event)
    for changes in batch.tables.values():
        changes.load(con)
    for lsn, event in records:
        try:
            for apply in applies.get(event.__class__, ()):
                apply(batch, lsn, event)
        except (KeyError, ValueError, TypeError) as exc:
            raise PoisonEvent(lsn, tag_of(event), _reason(exc)) from exc
    batch.rows_written = sum(changes.write(con) for changes in batch.tables.values())
    last = records[-1]
    con.execute(
        "UPDATE lmg_checkpoints SET lsn = ?, ts = ? WHERE projection IN "
        f"({', '.join('?' for _ in projections)})",
        [last.lsn, last.event.ts, *(p.name for p in projections)],
    )
    return batch


_Handlers: TypeAlias = dict[type[EventBase], list[Callable[..., None]]]


@functools.cache
def _dispatch(projections: tuple[Projection, ...]) -> tuple[_Handlers, _Handlers]:
    """Per event type, the `want` and `apply` methods to call, in projection order."""
    wants: _Handlers = {}
    applies: _Handlers = {}
    for p in projections:
        for cls in p.wants:
            wants.setdefault(cls, []).append(p.want)
        for cls in p.applies:
            applies.setdefault(cls, []).append(p.apply)
    return wants, applies


def _reason(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"it refers to {exc.args[0]}, which the projections do not hold"
    return str(exc)


def touch_or_none(changes: TableChanges, key: Any) -> Row | None:
    """The row at `key` marked changed, or None when the fold does not hold it."""
    return changes.touch(key) if changes.get(key) is not None else None
