"""SQL parameters over the wire (`projections._params`): what the client sends, decoded by the
service, binds in DuckDB as the caller's own values bind embedded (tests/replay/test_client.py
runs the same against a real `lmg serve`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import duckdb
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projections._params import checked, from_wire, to_wire

_OFFSETS = st.builds(
    dt.timezone, st.timedeltas(min_value=dt.timedelta(hours=-23), max_value=dt.timedelta(hours=23))
)
_LARGEST = 15 * 3600 + 59 * 60 + 59  # a time's, in whole seconds (DuckDB's TIMETZ)
_TIME_OFFSETS = st.integers(-_LARGEST, _LARGEST).map(
    lambda seconds: dt.timezone(dt.timedelta(seconds=seconds))
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**127), max_value=2**127 - 1),
    st.floats(),
    st.text(),
    st.binary(),
    st.uuids(),
    st.datetimes(timezones=st.none() | _OFFSETS),
    st.dates(),
    st.times(timezones=st.none() | _TIME_OFFSETS),
    st.timedeltas(),
    st.decimals(places=3, max_value=10**20, min_value=-(10**20)) | st.decimals(),
)
_VALUES = _SCALARS | _SCALARS.flatmap(lambda s: st.lists(st.just(s), max_size=3))
_PARAMS = st.lists(_VALUES, max_size=4) | st.dictionaries(
    st.from_regex(r"[a-z]\w{0,5}", fullmatch=True), _VALUES, max_size=4
)


@pytest.fixture(scope="module")
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    with duckdb.connect() as connection:
        yield connection


def _bound(con: duckdb.DuckDBPyConnection, params: Any) -> list[Any]:
    """What DuckDB makes of each parameter: its type and its text, or the error it raises."""
    values = params.values() if isinstance(params, dict) else params
    answers: list[Any] = []
    for value in values:
        try:
            answers.append(con.execute("SELECT typeof($1), $1::VARCHAR", [value]).fetchall())
        except duckdb.Error as exc:
            answers.append(str(exc).splitlines()[0])
    return answers


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(params=_PARAMS)
def test_parameters_sent_bind_as_the_callers_own(
    con: duckdb.DuckDBPyConnection, params: Any
) -> None:
    """Every accepted value (bytes, UUIDs, times, Decimals, NaN, ints past 64 bits, lists of
    them) survives the JSON of a request: DuckDB binds the same type and the same value."""
    values, types = to_wire(params)
    sent = msgspec.json.decode(msgspec.json.encode({"params": values, "types": types}))
    assert _bound(con, from_wire(sent["params"], sent["types"])) == _bound(con, checked(params))


@pytest.mark.parametrize("value", [float("nan"), -float("nan"), float("inf"), -float("inf")])
def test_floats_json_has_no_number_for_travel_whole(
    con: duckdb.DuckDBPyConnection, value: float
) -> None:
    """A NaN keeps its sign over the wire (DuckDB shows ``-nan``), infinities theirs."""
    values, types = to_wire([value])
    sent = msgspec.json.decode(msgspec.json.encode({"params": values, "types": types}))
    assert _bound(con, from_wire(sent["params"], sent["types"])) == _bound(con, [value])


@pytest.mark.parametrize("micros", [1, -1, 500_000])
def test_a_timestamps_offset_under_a_second_travels(
    con: duckdb.DuckDBPyConnection, micros: int
) -> None:
    """Python 3.11's `fromisoformat` reads ``+00:00:00.000001`` as UTC: the instant moved."""
    offset = dt.timezone(dt.timedelta(microseconds=micros))
    value = [dt.datetime(2000, 1, 1, tzinfo=offset)]
    values, types = to_wire(value)
    sent = msgspec.json.decode(msgspec.json.encode({"params": values, "types": types}))
    assert _bound(con, from_wire(sent["params"], sent["types"])) == _bound(con, value)


def test_plain_json_parameters_travel_without_types() -> None:
    """A request of JSON values only has no ``"types"``: raw callers' bodies are unchanged."""
    assert to_wire([1, 0.5, "a", None, True, [1], {"k": "v"}]) == (
        [1, 0.5, "a", None, True, [1], {"k": "v"}],
        None,
    )
    assert to_wire({"x": [b"\x00"], "y": 1}) == ({"x": ["AA=="], "y": 1}, {"x": ["blob"]})
