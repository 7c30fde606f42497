"""The fold: a pure function of (tables, events) that every projection shares.

`fold(con, projections, records)` applies one batch inside the caller's transaction, in two
tiers:

1. *Rows*: the few low-volume events whose effects depend on order (a session's metadata
   merged key by key, an agent's or a template's next version) are applied one by one to
   rows held in memory: each projection names the existing rows it needs (*want*), one
   query per table loads them, each event changes them (*apply*), and each table is written
   once (Arrow ``INSERT`` for new rows, ``UPDATE ... FROM`` for changed ones).
2. *Sets*: everything else (prompts, responses, tool calls, assignments, handoffs, links,
   edges, generic nodes, tombstones, session totals) is staged as Arrow tables
   (`_stage.Staged`) and applied by each projection's `bulk` SQL: inserts, last-writer-wins
   updates ordered by LSN, and additive totals, whose results do not depend on how the log
   is cut into batches.

Then every projection's checkpoint moves to the batch's last LSN, with the mark of the event
there (`_history`). The projector,
`MemoryGraph` and `replay` all call this function; there is no other fold code.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import uuid
from collections.abc import Callable, Sequence
from typing import Protocol, TypeAlias

import duckdb

from eventlog import Record
from eventlog._lean import full_event
from eventlog.events import ErasureApplied, EventBase, tag_of

from ._history import record_mark
from ._stage import STAGED_CLASSES, Staged, assigned_prompts, touched_ids
from ._table import Table, TableChanges
from .errors import PoisonEvent

__all__ = [
    "Batch",
    "Projection",
    "SetsOnly",
    "check_references",
    "first_missing",
    "fold",
    "implicit_edge_id",
    "implicit_edge_sql",
    "insert_joined",
]

_FORGET_ALL_AFTER = 5_000  # events: past this, a batch's touched ids are not listed


def implicit_edge_id(edge_type: str, from_id: uuid.UUID, to_id: uuid.UUID) -> uuid.UUID:
    """The id of an edge the log implies but never names (RESPONDS_TO, FOLLOWS, ...).

    The MD5 of ``"<type>:<from>:<to>"`` as a UUID: the same in every fold (SQL computes it
    with `implicit_edge_sql`), so replays and rebuilds agree and no event carries it.
    """
    return uuid.UUID(hashlib.md5(f"{edge_type}:{from_id}:{to_id}".encode()).hexdigest())


def implicit_edge_sql(edge_type: str, from_sql: str, to_sql: str) -> str:
    """`implicit_edge_id` as a DuckDB expression over two UUID expressions."""
    return f"md5('{edge_type}:' || {from_sql}::VARCHAR || ':' || {to_sql}::VARCHAR)::UUID"


class Batch:
    """What one fold call changed: rows of the row tier by table, and the ids it touched."""

    def __init__(self, tables: Sequence[Table], records: Sequence[Record] = ()) -> None:
        self.tables = {t.name: TableChanges(t) for t in tables}
        self.rows_written = 0
        self._records = records

    @functools.cached_property
    def touched(self) -> set[uuid.UUID] | None:
        """Every id the batch's events name (None: too many to list, forget all), found when
        first asked: only a reader with answers cached asks (`GraphReader.forget`), and
        finding them costs a fold of an OTLP request about 4% of its CPU (a `uuid.UUID` made
        per id; docs/benchmarks.md, "Reads while ingesting 5,000 spans/s")."""
        if len(self._records) > _FORGET_ALL_AFTER:
            return None
        return touched_ids(self._records)

    @functools.cached_property
    def erased_from(self) -> int | None:
        """The first LSN an ``erasure.applied`` record of the batch says it erased (None: the
        batch holds none that erased anything). A fold that read that LSN before this batch
        holds its old content; only an in-memory graph asks (`memory_graph`), since the
        store's own database learns of an erasure from its journal (`_erasure`)."""
        found = [
            r.event.first_lsn
            for r in self._records
            if isinstance(r.event, ErasureApplied) and r.event.first_lsn is not None
        ]
        return min(found, default=None)

    @functools.cached_property
    def reassigned(self) -> set[uuid.UUID]:
        """The prompts assigned to an agent by the batch (`assigned_prompts`)."""
        return assigned_prompts(self._records)

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
        """The row-tier event types `want` looks at (the fold calls it for no others)."""

    @property
    def applies(self) -> frozenset[type[EventBase]]:
        """The row-tier event types `apply` handles (the fold calls it for no others)."""

    def want(self, batch: Batch, event: EventBase) -> None:
        """Name the existing rows `apply` will need for `event`."""

    def apply(self, batch: Batch, lsn: int, event: EventBase) -> None:
        """Change rows in memory; KeyError or ValueError means the event cannot apply."""

    def bulk(self, con: duckdb.DuckDBPyConnection, staged: Staged) -> None:
        """Apply the staged events with SQL; raise `PoisonEvent` for one that cannot apply."""


class SetsOnly:
    """For a projection with no row tier: it wants and applies nothing one by one."""

    wants: frozenset[type[EventBase]] = frozenset()
    applies: frozenset[type[EventBase]] = frozenset()

    def want(self, batch: Batch, event: EventBase) -> None:
        pass

    def apply(self, batch: Batch, lsn: int, event: EventBase) -> None:
        pass


def fold(
    con: duckdb.DuckDBPyConnection,
    projections: Sequence[Projection],
    records: Sequence[Record],
) -> Batch:
    """Fold `records` into the tables through `con` (inside the caller's transaction).

    Returns the batch. Raises `PoisonEvent` naming an event that cannot be applied; the
    caller rolls back (and may fold the events before it on their own).
    """
    batch = Batch([t for p in projections for t in p.tables], records)
    if not records:
        return batch
    _fold_rows(
        con, projections, batch, [r for r in records if r.event.__class__ not in STAGED_CLASSES]
    )
    staged = Staged(records)
    staged.register(con)
    try:
        for p in projections:
            p.bulk(con, staged)
        check_references(con, staged)
    except BaseException:
        # DuckDB refuses even this in an aborted transaction: the error to report is the first
        # (a retry registers the same names again, replacing these)
        with contextlib.suppress(duckdb.Error):
            staged.unregister(con)
        raise
    staged.unregister(con)
    last = records[-1]
    # literals, not parameters: a prepared statement costs DuckDB a second round trip, and
    # every batch pays it (the names are the projections' own, the numbers ints)
    names = ", ".join(f"'{p.name}'" for p in projections)
    con.execute(
        f"UPDATE lmg_checkpoints SET lsn = {int(last.lsn)}, ts = {int(last.event.ts)} "
        f"WHERE projection IN ({names})"
    )
    record_mark(con, full_event(last.event))  # which history: see `_history`
    return batch


def _fold_rows(
    con: duckdb.DuckDBPyConnection,
    projections: Sequence[Projection],
    batch: Batch,
    records: Sequence[Record],
) -> None:
    if not records:
        return
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


def first_missing(
    con: duckdb.DuckDBPyConnection, staged: Staged, stage: str, column: str, table: str
) -> None:
    """Raise `PoisonEvent` for the first staged event whose `column` names no row of `table`."""
    if stage in staged:
        _raise_missing(con, staged, [(stage, column, table)])


def check_references(con: duckdb.DuckDBPyConnection, staged: Staged) -> None:
    """Raise `PoisonEvent` for the first staged event (by LSN) that names a row its table
    does not hold, over every reference the projections asked checked (`Staged.refer`).

    One query for all of them, after every `bulk`: statements cost DuckDB about a
    millisecond each whatever their size, which is most of a small batch's fold. Checking
    late changes nothing: the fold only adds rows, a statement naming a missing row changes
    nothing, and a poison rolls the whole batch back.
    """
    if staged.references:
        _raise_missing(con, staged, staged.references)


def _raise_missing(
    con: duckdb.DuckDBPyConnection, staged: Staged, references: Sequence[tuple[str, str, str]]
) -> None:
    """A left join per reference, not ``NOT EXISTS``: DuckDB plans ``NOT EXISTS`` as a mark
    join that hashes the whole referenced table (at a million events 15 to 30 ms a check),
    and this as a right anti-join that hashes the few thousand staged rows and scans the
    table (about 6 ms). Ties on an LSN go to the reference named first."""
    parts = [
        f"(SELECT s.lsn, {i} AS ref, s.{column} AS missing FROM stage_{stage} s "
        f"LEFT JOIN {table} t ON t.id = s.{column} "
        f"WHERE t.id IS NULL AND s.{column} IS NOT NULL)"
        for i, (stage, column, table) in enumerate(references)
    ]
    found = con.execute(f"{' UNION ALL '.join(parts)} ORDER BY lsn, ref LIMIT 1").fetchall()
    if found:
        lsn, ref, missing = found[0]
        stage, _, table = references[ref]
        raise PoisonEvent(
            lsn, staged.types[stage], f"it refers to {missing}, which {table} does not hold"
        )


def insert_joined(
    con: duckdb.DuckDBPyConnection, staged: Staged, stage: str, sql: str, reference: tuple[str, str]
) -> None:
    """Run an ``INSERT ... SELECT`` whose inner join on `reference` (column, table) keeps one
    row per staged event; a short count means a missing row, named by `first_missing`."""
    (inserted,) = con.execute(sql).fetchall()[0]
    if inserted != staged.tables[stage].num_rows:
        first_missing(con, staged, stage, *reference)
        raise PoisonEvent(-1, staged.types[stage], "a reference is missing")  # unreachable


def _reason(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"it refers to {exc.args[0]}, which the projections do not hold"
    return str(exc)
