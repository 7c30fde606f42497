"""Tables as the fold sees them: a schema, and (for the row tier) a batch of rows in memory.

The row tier of the fold never writes a row at a time either. For each batch it loads the
existing rows its events touch (one query per table), applies every event to rows held in
memory as lists, then writes once per table: new rows with one ``INSERT ... SELECT`` from
Arrow, changed rows with one ``UPDATE ... FROM`` Arrow. The same Python code applies an event
whether its row was made in this batch or loaded from an earlier one, so any split of the log
into batches gives the same tables (tests/projections/test_fold.py checks it).

pyarrow is imported by the first fold that needs it, not with this module: the projections'
tables are declared here, and a graph that opens a folded database only to read would
otherwise pay its import (about 40 MB of memory and a tenth of a second).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

import duckdb
import msgspec

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "RECORDED",
    "Column",
    "Row",
    "Table",
    "TableChanges",
    "json_text",
    "json_value",
    "norm",
    "to_arrow",
]

_json_encode = msgspec.json.Encoder().encode


def json_text(value: Any) -> str | None:
    """A JSON column value; None stays SQL NULL."""
    return None if value is None else _json_encode(value).decode()


def json_value(text: str | None) -> Any:
    return None if text is None else msgspec.json.decode(text)


Row: TypeAlias = list[Any]
Key: TypeAlias = Any  # a column value, or a tuple of them for a composite key


@functools.cache
def _arrow_types() -> tuple[dict[str, pa.DataType], dict[str, pa.DataType]]:
    """Each DuckDB type's Arrow type, and the storage type of those Arrow builds from Python
    values only through their storage (extension types): made on first use (see above)."""
    import pyarrow as pa  # noqa: PLC0415 (on the first fold: reads never need it)

    arrow = {
        "UUID": pa.uuid(),
        "BIGINT": pa.int64(),
        "DOUBLE": pa.float64(),
        "BOOLEAN": pa.bool_(),
        "VARCHAR": pa.string(),
        "JSON": pa.string(),
        "VARCHAR[]": pa.list_(pa.string()),
        "UUID[]": pa.list_(pa.uuid()),
    }
    storage = {"UUID": pa.binary(16), "UUID[]": pa.list_(pa.binary(16))}
    return arrow, storage


def _uuid_bytes(values: Iterable[uuid.UUID | None]) -> list[bytes | None]:
    return [None if v is None else v.int.to_bytes(16, "big") for v in values]


def _uuid_lists_bytes(values: Iterable[list[uuid.UUID] | None]) -> list[list[bytes] | None]:
    return [None if v is None else [u.int.to_bytes(16, "big") for u in v] for v in values]


_TO_ARROW: dict[str, Callable[[Iterable[Any]], list[Any]]] = {
    "UUID": _uuid_bytes,
    "UUID[]": _uuid_lists_bytes,
}


def norm(key: Any) -> Any:
    """A dict key for a row key: UUIDs by their int, whose hash is computed in C."""
    if key.__class__ is uuid.UUID:
        return key.int
    if key.__class__ is tuple:
        return tuple(k.int if k.__class__ is uuid.UUID else k for k in key)
    return key


class Column(NamedTuple):
    name: str
    sql_type: str
    constraint: str = ""  # e.g. "NOT NULL"


RECORDED = (
    Column("lsn", "BIGINT", "NOT NULL"),
    Column("ts", "BIGINT", "NOT NULL"),
    Column("occurred_at", "BIGINT"),
    Column("actor", "VARCHAR"),
)
"""Where and when the log recorded a row's event, and what the caller said about it."""


class Table:
    """A projection table: its columns, key and DDL, and its Arrow conversion.

    `indexed` declares the key as DuckDB's PRIMARY KEY, an ART index. The large tables do
    without: the log already makes their keys unique (an id is refused at append if any node
    has it), the fold applies each event once (its checkpoint moves in the batch's
    transaction), and their rows go in by LSN, so zone maps on the time-ordered ids (UUIDv7)
    find a row without an index. An ART index costs every insert of the fold, every
    checkpoint (which writes it out), and the memory of every node a read loads, which DuckDB
    keeps for as long as the database is open (docs/benchmarks.md, issue 14).
    """

    def __init__(
        self, name: str, columns: Sequence[Column], key: Sequence[str], *, indexed: bool = True
    ) -> None:
        self.name = name
        self.indexed = indexed  # False: the key is the fold's, not declared to DuckDB
        self.columns = tuple(columns)
        self.names = tuple(c.name for c in columns)
        self.key = tuple(key)
        self.index = {n: i for i, n in enumerate(self.names)}
        self._key_at = tuple(self.index[k] for k in key)

    def ddl(self) -> str:
        cols = ",\n  ".join(f"{c.name} {c.sql_type} {c.constraint}".rstrip() for c in self.columns)
        if not self.indexed:
            return f"CREATE TABLE IF NOT EXISTS {self.name} (\n  {cols}\n)"
        key = ", ".join(self.key)
        return f"CREATE TABLE IF NOT EXISTS {self.name} (\n  {cols},\n  PRIMARY KEY ({key})\n)"

    def key_of(self, row: Row) -> Key:
        """The row's key, normalised (`norm`)."""
        if len(self._key_at) == 1:
            return norm(row[self._key_at[0]])
        return norm(tuple(row[i] for i in self._key_at))

    def empty_row(self) -> Row:
        return [None] * len(self.columns)

    @functools.cached_property
    def _schema(self) -> pa.Schema:
        import pyarrow as pa  # noqa: PLC0415 (on the first fold, as in `_arrow_types`)

        arrow, _ = _arrow_types()
        return pa.schema([(c.name, arrow[c.sql_type]) for c in self.columns])

    def arrow(self, rows: Iterable[Row]) -> pa.Table:
        import pyarrow as pa  # noqa: PLC0415 (on the first fold, as in `_arrow_types`)

        columns = list(zip(*rows, strict=True)) or [() for _ in self.columns]
        arrays = []
        for column, values in zip(self.columns, columns, strict=True):
            arrays.append(to_arrow(values, column.sql_type))
        return pa.Table.from_arrays(arrays, schema=self._schema)


class TableChanges:
    """One table's rows touched by a batch: loaded ones (maybe changed) and new ones."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self._key_at0 = table.index[table.key[0]]
        self.rows: dict[Key, Row] = {}  # every row the batch knows, by key
        self.new: dict[Key, None] = {}  # insertion (LSN) order
        self.dirty: set[Key] = set()
        self.wanted: dict[str, set[Any]] = {}  # column -> values whose rows to load

    def want(self, column: str, value: Any) -> None:
        """Ask `load` for the existing rows whose `column` equals `value`."""
        if value is not None:
            self.wanted.setdefault(column, set()).add(value)

    def load(self, con: duckdb.DuckDBPyConnection) -> None:
        import pyarrow as pa  # noqa: PLC0415 (on the first fold, as in `_arrow_types`)

        t = self.table
        for column, values in self.wanted.items():
            if not values:
                continue
            ids = pa.table({"v": to_arrow(values, t.columns[t.index[column]].sql_type)})
            con.register("lmg_wanted", ids)
            try:
                found = con.execute(
                    f"SELECT * FROM {t.name} WHERE {column} IN (SELECT v FROM lmg_wanted)"
                ).fetchall()
            finally:
                con.unregister("lmg_wanted")
            for values_row in found:
                row = list(values_row)
                self.rows.setdefault(t.key_of(row), row)
        self.wanted.clear()

    def get(self, key: Key) -> Row | None:
        return self.rows.get(norm(key))

    def row(self, key: Key) -> Row:
        """The row at `key`, unchanged; KeyError if the fold never saw it."""
        try:
            return self.rows[norm(key)]
        except KeyError:
            raise KeyError(key) from None

    def add(self, row: Row) -> None:
        key = self.table.key_of(row)
        if self.rows.setdefault(key, row) is not row:
            raise ValueError(f"{self.table.name} already has a row {row[self._key_at0]}")
        self.new[key] = None

    def touch(self, key: Key) -> Row:
        """The row at `key`, marked changed; KeyError if the fold never saw it."""
        k = norm(key)
        try:
            row = self.rows[k]
        except KeyError:
            raise KeyError(key) from None
        if k not in self.new:
            self.dirty.add(k)
        return row

    def write(self, con: duckdb.DuckDBPyConnection) -> int:
        """Insert the new rows and update the changed ones; returns rows written."""
        t = self.table
        written = 0
        if self.new:
            con.register("lmg_rows", t.arrow(self.rows[k] for k in self.new))
            try:
                con.execute(f"INSERT INTO {t.name} SELECT * FROM lmg_rows")
            finally:
                con.unregister("lmg_rows")
            written += len(self.new)
        if self.dirty:
            sets = ", ".join(f"{n} = u.{n}" for n in t.names if n not in t.key)
            match = " AND ".join(f"{t.name}.{k} = u.{k}" for k in t.key)
            con.register("lmg_rows", t.arrow(self.rows[k] for k in self.dirty))
            try:
                con.execute(f"UPDATE {t.name} SET {sets} FROM lmg_rows u WHERE {match}")
            finally:
                con.unregister("lmg_rows")
            written += len(self.dirty)
        return written


def to_arrow(values: Iterable[Any], sql_type: str) -> pa.Array:
    """An Arrow array of Python values for a column of DuckDB type `sql_type`."""
    import pyarrow as pa  # noqa: PLC0415 (on the first fold, as in `_arrow_types`)

    arrow, storages = _arrow_types()
    storage = storages.get(sql_type)
    if storage is None:
        return pa.array(list(values), arrow[sql_type])
    return pa.array(_TO_ARROW[sql_type](values), storage).cast(arrow[sql_type])
