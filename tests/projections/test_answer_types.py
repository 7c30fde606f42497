"""SQL answers as Arrow (`projections._answer_types`): whatever DuckDB type a column has, the
relation `RemoteGraph` makes of the service's Arrow answer has the values and types an
embedded graph answers (tests/replay/test_client.py runs the same through `lmg serve`)."""

from __future__ import annotations

import datetime as dt
import io
import uuid
from collections.abc import Iterator

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projections._answer_types import DUCKDB_TYPES, exported, restored


def _text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


_TEXTS = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=8)
_OFFSET = 15 * 3600 + 59 * 60 + 59
_SCALARS = st.one_of(
    st.integers(-(2**127) + 1, 2**127 - 1).map(lambda n: f"{n}::HUGEINT"),
    st.integers(0, 2**128 - 1).map(lambda n: f"{n}::UHUGEINT"),
    st.integers(-(2**63), 2**63 - 1).map(lambda n: f"{n}::BIGINT"),
    st.floats().map(lambda x: f"{_text(repr(x))}::DOUBLE"),
    st.decimals(places=2, min_value=-(10**10), max_value=10**10, allow_nan=False).map(
        lambda d: f"{d}::DECIMAL(14,2)"
    ),
    _TEXTS.map(_text),
    st.binary(max_size=6).map(lambda b: f"from_hex('{b.hex()}')"),
    st.uuids().map(lambda u: f"'{u}'::UUID"),
    st.dates().map(lambda d: f"DATE '{d}'"),
    st.times().map(lambda t: f"TIME '{t}'"),
    st.builds(
        lambda t, s: f"TIMETZ '{t.replace(tzinfo=dt.timezone(dt.timedelta(seconds=s)))}'",
        st.times(),
        st.integers(-_OFFSET, _OFFSET),
    ),
    st.datetimes(min_value=dt.datetime(1, 1, 2)).map(lambda t: f"TIMESTAMPTZ '{t}+00'"),
    st.timedeltas(min_value=dt.timedelta(days=-(10**5)), max_value=dt.timedelta(days=10**5)).map(
        lambda d: f"INTERVAL '{d.days} days {d.seconds} seconds {d.microseconds} microseconds'"
    ),
    st.text("01", min_size=1, max_size=20).map(lambda b: f"'{b}'::BIT"),
    st.booleans().map(str),
    _TEXTS.map(lambda s: f"to_json({_text(s)})"),
    st.sampled_from(["'a'::ENUM('a', 'b''c')", "'b''c'::ENUM('a', 'b''c')"]),
    st.just("NULL"),
)


def _nested(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    same = inner.flatmap(lambda e: st.lists(st.just(e), min_size=1, max_size=3))
    return st.one_of(
        same.map(lambda items: "[" + ", ".join(items) + "]"),
        st.lists(inner, min_size=1, max_size=3).map(
            lambda items: "{" + ", ".join(f"'k{i}': {e}" for i, e in enumerate(items)) + "}"
        ),
        inner.map(lambda e: f"MAP {{'k': {e}}}"),
    )


_VALUES = st.recursive(_SCALARS, _nested, max_leaves=6)


@pytest.fixture(scope="module")
def cons() -> Iterator[tuple[duckdb.DuckDBPyConnection, duckdb.DuckDBPyConnection]]:
    with duckdb.connect() as service, duckdb.connect() as client:
        yield service, client


def _answered(relation: duckdb.DuckDBPyRelation) -> tuple[list[str], list[str], str]:
    return relation.columns, [str(t) for t in relation.types], repr(relation.fetchall())


def _over_the_wire(relation: duckdb.DuckDBPyRelation) -> pa.Table:
    """What the service sends (`_routes._arrow_answer`) and the client reads."""
    sent, types = exported(relation)
    table = sent.to_arrow_table()
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema.with_metadata({DUCKDB_TYPES: types})) as writer:
        writer.write_table(table)
    return pa.ipc.open_stream(sink.getvalue()).read_all()


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(columns=st.lists(_VALUES, min_size=1, max_size=3))
def test_an_answer_comes_back_with_its_values_and_types(
    cons: tuple[duckdb.DuckDBPyConnection, duckdb.DuckDBPyConnection], columns: list[str]
) -> None:
    service, client = cons
    query = "SELECT " + ", ".join(f"{c} AS c" for c in columns)  # one name, repeated
    try:
        relation = service.sql(query)
        embedded = _answered(relation)
    except duckdb.Error:
        return  # a value DuckDB itself refuses (an ENUM mixed into a list of others, ...)
    assert _answered(restored(client, _over_the_wire(service.sql(query)))) == embedded


def test_an_answer_without_types_is_read_as_it_came() -> None:
    """An Arrow answer of an older service (no metadata) is DuckDB's reading of it."""
    table = pa.table({"a": [str(uuid.UUID(int=1))]})
    with duckdb.connect() as con:
        assert _answered(restored(con, table)) == (
            ["a"],
            ["VARCHAR"],
            "[('00000000-0000-0000-0000-000000000001',)]",
        )
