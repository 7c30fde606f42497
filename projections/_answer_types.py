"""The DuckDB types of a SQL answer sent as Arrow (`lmg serve`), and their return.

DuckDB's Arrow export changes some values: the largest UHUGEINT became -1, a TIMETZ lost its
offset, a BIT became its internal bytes; and others' types: a UUID is text, a HUGEINT a
decimal, JSON text, an ENUM a dictionary. Its lossless export (`arrow_lossless_conversion`)
keeps them, but it is a setting of the whole instance, and turns an embedded graph's
`.arrow()` of a `sum()` (a HUGEINT) into opaque bytes. So the service sends a column of the
first kind as its text (`exported`), with every column's DuckDB type in the schema's metadata,
and `RemoteGraph` casts each column back (`restored`): the values and types an embedded
graph answers.
"""

from __future__ import annotations

import re

import duckdb
import msgspec
import pyarrow as pa

__all__ = ["DUCKDB_TYPES", "exported", "restored"]

DUCKDB_TYPES = b"lmg.duckdb_types"
"""The key of an Arrow answer's schema metadata: the JSON list of its columns' DuckDB types."""

_AS_TEXT = re.compile(r"\b(UHUGEINT|TIME WITH TIME ZONE|BIT)\b")
"""Types whose values the export changes (alone or within a list, struct, map or union)."""


def exported(relation: duckdb.DuckDBPyRelation) -> tuple[duckdb.DuckDBPyRelation, bytes]:
    """`relation` with its `_AS_TEXT` columns as text, and the JSON of its DuckDB types."""
    types = [str(t) for t in relation.types]
    casts = ["VARCHAR" if _AS_TEXT.search(t) else None for t in types]
    return _cast(relation, casts, relation.columns), msgspec.json.encode(types)


def restored(con: duckdb.DuckDBPyConnection, table: pa.Table) -> duckdb.DuckDBPyRelation:
    """`table` (an answer) as a relation on `con` of the DuckDB types its metadata says, and
    of its own column names (`from_arrow` renames a repeated one: ``a``, ``a_1``)."""
    relation = con.from_arrow(table)
    said = (table.schema.metadata or {}).get(DUCKDB_TYPES)
    types = [] if said is None else msgspec.json.decode(said, type=list[str])
    arrived = [str(t) for t in relation.types]
    wanted = [_parsed(con, t) for t in types] if len(types) == len(arrived) else arrived
    casts = [None if w == a else w for w, a in zip(wanted, arrived, strict=True)]
    return _cast(relation, casts, table.column_names)


def _parsed(con: duckdb.DuckDBPyConnection, said: str) -> str | None:
    """DuckDB's own spelling of a type the service said, parsed here (the service's text is
    never pasted into SQL), or None for one this DuckDB does not know."""
    try:
        return str(con.sqltype(said))
    except duckdb.Error:
        return None


def _cast(
    relation: duckdb.DuckDBPyRelation, casts: list[str | None], names: list[str]
) -> duckdb.DuckDBPyRelation:
    """`relation` with each column cast to its type in `casts` (None: as it is), by position,
    named `names` (which may repeat)."""
    if not any(casts) and names == relation.columns:
        return relation
    columns = (
        (f"#{k}" if cast is None else f"CAST(#{k} AS {cast})")
        + ' AS "{}"'.format(name.replace('"', '""'))
        for k, (name, cast) in enumerate(zip(names, casts, strict=True), 1)
    )
    return relation.project(", ".join(columns))
