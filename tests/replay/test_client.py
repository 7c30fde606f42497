"""The Python client of `lmg serve` (`eventlog.connect`, `MemoryGraph.connect`), sync and async,
against a real service: the same answers and the same errors as the embedded API."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import enum
import math
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import msgspec
import pyarrow as pa
import pytest

import eventlog
import projections
from projections import AsyncMemoryGraph, MemoryGraph
from projections._answer_types import DUCKDB_TYPES, restored
from tests._processes import LMG, WAIT_S
from tests.replay.test_service import Service

pytestmark = (
    pytest.mark.slow
)  # real server or CLI processes: `make test` runs them, `make test-fast` not

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SERVICE_PAGES = [README, ROOT / "docs" / "service.md"]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Service]:
    store = tmp_path / "store"
    eventlog.open(store).close()
    service = Service(tmp_path, [str(store), "--limit", "max_rows=50"])
    yield service
    assert service.stop() == 0


def _normal(text: str) -> str:
    """Output with ids and times replaced by their order of first appearance: two runs of
    the same program on two fresh stores print the same."""
    ids: dict[str, str] = {}

    def number(found: re.Match[str]) -> str:
        return ids.setdefault(found.group(0), f"<id{len(ids)}>")

    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", number, text)
    return re.sub(r"(ts=)\d+", r"\1<ts>", text)


_REMOTE = {
    "eventlog.open(tempfile.mkdtemp())": "eventlog.connect(sys.argv[1])",
    "await eventlog.open_async(tempfile.mkdtemp())": "await eventlog.connect_async(sys.argv[1])",
    "MemoryGraph.open(tempfile.mkdtemp())": "MemoryGraph.connect(sys.argv[1])",
}


def _readme_block(index: int) -> str:
    blocks: list[str] = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    return blocks[index]


@pytest.mark.parametrize(("index", "opens"), [(0, "open("), (1, "open_async("), (2, "open(")])
def test_readme_examples_answer_through_the_service_as_embedded(
    served: Service, tmp_path: Path, index: int, opens: str
) -> None:
    """The README's quick start (sync, asyncio) and its MemoryGraph example, with only the
    line that opens the store changed, print what they print embedded."""
    code = "import sys\n" + _readme_block(index)
    remote = code
    for embedded, shared in _REMOTE.items():
        remote = remote.replace(embedded, shared)
    assert remote != code and f".{opens}" in code

    def run(program: str) -> str:
        result = subprocess.run(
            [sys.executable, "-c", program, served.url],
            cwd=tmp_path, capture_output=True, text=True, timeout=WAIT_S, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return _normal(result.stdout)

    assert run(remote) == run(code)


def _service_blocks() -> list[tuple[Path, int]]:
    return [(page, i) for page in SERVICE_PAGES for i in range(len(_py_blocks(page)))]


def _py_blocks(page: Path) -> list[str]:
    blocks: list[str] = re.findall(r"```py\n(.*?)```", page.read_text(), flags=re.S)
    return blocks


@pytest.mark.parametrize(("page", "index"), _service_blocks(), ids=str)
def test_client_examples_in_the_docs_run(
    served: Service, tmp_path: Path, page: Path, index: int
) -> None:
    """The docs' client examples are fenced ``py``, not ``python``: they need a service
    (tests/test_docs.py runs the ``python`` blocks alone), so they run here, against one."""
    code = _py_blocks(page)[index].replace('"http://127.0.0.1:8420"', "sys.argv[1]")
    assert "sys.argv[1]" in code
    result = subprocess.run(
        [sys.executable, "-c", "import sys\n" + code, served.url],
        cwd=tmp_path, capture_output=True, text=True, timeout=WAIT_S, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def _builtins(value: Any) -> Any:
    """`value` as JSON values, ids numbered (`_normal`) and times (``ts``, ``*_ts``) left out."""

    def timeless(item: Any) -> Any:
        if isinstance(item, dict):
            return {k: timeless(v) for k, v in item.items() if k != "ts" and not k.endswith("_ts")}
        if isinstance(item, list):
            return [timeless(v) for v in item]
        return item

    return timeless(msgspec.json.decode(_normal(msgspec.json.encode(value).decode())))


def _async_reads(url: str | Path, remote: bool) -> Any:
    async def main() -> Any:
        if remote:
            g: Any = await AsyncMemoryGraph.connect(str(url))
        else:
            g = await AsyncMemoryGraph.open(url)
        async with g:
            s = await g.create_session(tags=["a"])
            prompts = [await g.add_prompt(s.id, f"q{i}") for i in range(4)]
            await g.add_responses_batch([(p, "a", eventlog.TokenUsage(1, 2)) for p in prompts])
            window = await g.context_window(s.id, turns=2)
            count = await g.query().session(s.id).node_type("prompt").count()
            streamed = [x async for x in g.query().session(s.id).stream(page=3)]
            rows = await g.sql("SELECT prompt_count, response_count FROM sessions")
            return [window, count, streamed, rows, await g.get_session_nodes(s.id)]

    return asyncio.run(main())


def test_async_graph_reads_answer_as_embedded(served: Service, tmp_path: Path) -> None:
    embedded = _async_reads(tmp_path / "embedded", remote=False)
    assert _builtins(_async_reads(served.url, remote=True)) == _builtins(embedded)


def test_appends_return_what_they_return_embedded(served: Service) -> None:
    with eventlog.connect(served.url) as log:
        session = log.create_session(metadata={"user": "42"}, actor="ada")
        assert isinstance(session, eventlog.events.SessionCreated)
        assert session.ts > 0 and session.actor == "ada"
        template = log.create_template("t", "Hello {{who}}", [eventlog.VariableSpec(name="who")])
        assert log.update_template(template, "Hi {{who}}", [eventlog.VariableSpec(name="who")]) == 2
        prompt = log.add_prompt(session.id, template_id=template, variables={"who": "Ada"})
        pairs = log.add_conversations_batch([((session.id, "q"), ("a", eventlog.TokenUsage(1, 1)))])
        again = (
            log.add_conversations_batch([((session.id, "q"), None)], idempotency_key="k"),
            log.add_conversations_batch([((session.id, "q"), None)], idempotency_key="k"),
        )
        assert again[0] == again[1]
        records = list(log.read(start=2))
        assert records[0].lsn == 2 and len(records) == log.next_lsn() - 2
        assert list(log.read(stop=1)) == [eventlog.Record(0, session)]
        stored = next(r.event for r in records if getattr(r.event, "id", None) == prompt)
        assert isinstance(stored, eventlog.events.PromptAdded)
        assert stored.content == "Hi Ada"  # rendered by the service's log, as embedded
        assert log.last_lsn(session.id) == log.last_lsn() and isinstance(pairs[0][1], uuid.UUID)


def test_errors_come_back_as_the_embedded_classes(served: Service) -> None:
    with MemoryGraph.connect(served.url) as g:
        session = g.create_session()
        prompt = g.add_prompt(session.id, "q")
        with pytest.raises(eventlog.UnknownNode) as unknown:
            g.add_response(uuid.uuid4(), "a")
        assert unknown.value.expected == "prompt" and isinstance(unknown.value.node_id, uuid.UUID)
        with pytest.raises(eventlog.WrongNodeKind) as kind:
            g.add_response(session.id, "a")
        assert kind.value.actual == "session"
        with pytest.raises(eventlog.AppendConflict) as conflict:
            g.add_prompt(session.id, "q2", expect_session_lsn=0)
        assert (conflict.value.expected, conflict.value.actual) == (0, g.last_lsn(session.id))
        assert str(conflict.value).endswith(f"expected last LSN 0, log has {conflict.value.actual}")
        g.create_session(idempotency_key="once")
        with pytest.raises(eventlog.IdempotencyKeyReused):
            g.add_prompt(session.id, "other", idempotency_key="once")
        with pytest.raises(eventlog.InvalidEvent):
            g.create_session(metadata={"n": 2**70})  # refused before it is sent
        with pytest.raises(projections.SqlRefused):
            g.rows("DELETE FROM sessions")
        with pytest.raises(projections.NotFound):
            g.get_session(prompt)
        with pytest.raises(projections.BadArgument):
            g.get_node("../sql")  # type: ignore[arg-type]
        assert g.get_node(uuid.uuid4()) is None
        with pytest.raises(eventlog.ServiceError) as cut:
            g.rows("SELECT * FROM range(51)")  # max_rows is 50: no silently short answer
        assert cut.value.code == "too_many_rows"
    with (
        pytest.raises(eventlog.ServiceError) as unknown_store,
        eventlog.connect(served.url, "elsewhere") as elsewhere,
    ):
        elsewhere.create_session()
    assert (unknown_store.value.status, unknown_store.value.code) == (404, "unknown_store")


_BAD_SQL = {
    "SELEC 1": True,  # a syntax error (True: `sql` raises it before anything runs)
    "SELECT * FROM nope": True,  # an unknown table
    "SELECT nope FROM sessions": True,  # an unknown column
    "SELECT ?": True,  # a parameter not given
    "SELECT 'x'::INTEGER": False,  # a cast that fails as it runs
    "DELETE FROM sessions": True,  # a write, refused
    "SELECT * FROM read_csv('/etc/passwd')": True,  # a file, refused
    " ; -- nothing": True,  # no statement
}


def _raised(fn: Callable[[str], Any], query: str) -> tuple[type[BaseException], str]:
    """What `fn(query)` raised (any class: the test compares two), and its message."""
    with pytest.raises(Exception) as caught:
        fn(query)
    return type(caught.value), str(caught.value)


def test_bad_sql_raises_what_embedded_raises(served: Service, tmp_path: Path) -> None:
    """The same class and message for the same bad SQL, embedded or remote, sync or async:
    moving to the service changes no ``except`` (`SqlFailed`, not DuckDB's own error)."""
    with MemoryGraph.open(tmp_path / "embedded") as e, MemoryGraph.connect(served.url) as r:
        for query, before_running in _BAD_SQL.items():
            assert _raised(r.rows, query) == _raised(e.rows, query), query
            if before_running:  # else embedded's lazy relation raises as it is fetched
                assert _raised(r.sql, query) == _raised(e.sql, query), query
        assert _raised(r.rows, "SELEC 1")[0] is projections.SqlFailed

    async def both(query: str) -> list[tuple[type[BaseException], str]]:
        raised: list[tuple[type[BaseException], str]] = []
        for g in (
            await AsyncMemoryGraph.open(tmp_path / "embedded"),
            await AsyncMemoryGraph.connect(served.url),
        ):
            async with g:
                with pytest.raises(projections.ProjectionError) as caught:
                    await g.sql(query)
                raised.append((type(caught.value), str(caught.value)))
        return raised

    for query in _BAD_SQL:
        embedded, remote = asyncio.run(both(query))
        assert remote == embedded, query


_U = uuid.UUID("0192f0c1-7d1e-7c3a-8e55-2a3b4c5d6e7f")


class _Color(enum.IntEnum):
    RED = 1


class _Name(enum.StrEnum):
    ADA = "ada"


class _Id(enum.Enum):
    ROOT = uuid.UUID(int=7)


class _Shape(enum.Enum):
    SQUARE = frozenset({4})  # a value of no parameter type: refused as it


class _Stamp(dt.datetime):
    """A datetime of a subclass (as pandas' `Timestamp` is)."""


class _Row(list[Any]):
    """A list of a subclass."""


class _NoOffset(dt.tzinfo):
    """A tzinfo that gives no UTC offset (a datetime of it is naive)."""

    def utcoffset(self, _when: dt.datetime | None) -> dt.timedelta | None:
        return None

    def dst(self, _when: dt.datetime | None) -> dt.timedelta | None:
        return None

    def tzname(self, _when: dt.datetime | None) -> str | None:
        return None


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


_BOUND: dict[str, tuple[Any, str]] = {
    "bytes": (b"\x00\xff", "BLOB"),
    "UUID": (_U, "UUID"),
    "datetime": (dt.datetime(2026, 1, 2, 3, 4, 5, 6), "TIMESTAMP"),
    "aware datetime": (
        dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        "TIMESTAMP WITH TIME ZONE",
    ),
    "date": (dt.date(2026, 1, 2), "DATE"),
    "time": (dt.time(3, 4, 5, 6), "TIME"),
    "aware time": (dt.time(3, 4, tzinfo=dt.UTC), "TIME WITH TIME ZONE"),
    # Naive, as Python says (its tzinfo gives no UTC offset): embedded, DuckDB's bind raised
    # a bare AttributeError ('NoneType' object has no attribute 'days'), remote bound TIME.
    "a time in a ZoneInfo": (dt.time(3, 4, tzinfo=ZoneInfo("Europe/Paris")), "TIME"),
    "a datetime of a tzinfo without offset": (
        dt.datetime(2026, 1, 2, 3, 4, tzinfo=_NoOffset()),
        "TIMESTAMP",
    ),
    "timedelta": (dt.timedelta(days=-1, microseconds=5), "INTERVAL"),
    "Decimal": (decimal.Decimal("1.250"), "DECIMAL(4,3)"),
    "NaN": (math.nan, "DOUBLE"),
    "infinity": (-math.inf, "DOUBLE"),
    "negative zero": (-0.0, "DOUBLE"),
    "float": (0.1, "DOUBLE"),
    "int past 64 bits": (2**70, "HUGEINT"),
    "bool": (True, "BOOLEAN"),
    "None": (None, '"NULL"'),
    "str": ("é\n'", "VARCHAR"),
    "list of UUIDs": ([_U, _U], "UUID[]"),
    "tuple": ((1, 2), "INTEGER[]"),
    "dict": ({"a": b"x", "b": [decimal.Decimal("2")]}, "STRUCT(a BLOB, b DECIMAL(1,0)[])"),
    "deepest": (_nested(16), "INTEGER" + "[]" * 16),
    "an IntEnum": (_Color.RED, "INTEGER"),
    "a StrEnum": (_Name.ADA, "VARCHAR"),
    "an Enum of a UUID": (_Id.ROOT, "UUID"),
    "a bytearray": (bytearray(b"\x00x"), "BLOB"),
    "a memoryview": (memoryview(b"y"), "BLOB"),
    "a datetime's subclass": (_Stamp(2026, 1, 2, 3, 4, 5, 6), "TIMESTAMP"),
    "a list's subclass": (_Row([_Color.RED, 2]), "INTEGER[]"),
}
"""A parameter's value, and the DuckDB type an embedded graph binds it as: remote binds the
same type and value (`typeof` and its text), where JSON alone would send text or NULL."""

_SHAPE = "SQL parameters are a list, a tuple or a dict of names to values, not "
_REFUSED: dict[str, tuple[Any, str]] = {
    "object": (object(), _SHAPE + "object"),
    "str": ("ab", _SHAPE + "str"),
    "bytes": (b"ab", _SHAPE + "bytes"),
    "set": ({1}, _SHAPE + "set"),
    "range": (range(1), _SHAPE + "range"),
    "int name": ({1: 1}, "SQL parameter names are str, not int"),
    "a set": ([{1, 2}], "SQL parameter 1 is of type set: a parameter is one of None, bool,"),
    "an object": ([1, object()], "SQL parameter 2 is of type object"),
    "a named object": ({"x": object()}, "SQL parameter $x is of type object"),
    "an enum's value": ([_Shape.SQUARE], "SQL parameter 1 is of type frozenset"),
    "an int key": ([{"a": {1: 2}}], "SQL parameter 1['a'] has a key of type int"),
    "a lone surrogate": ({"x": ["a\ud800"]}, "SQL parameter $x[0] is a str that is not UTF-8"),
    "too deep": ([_nested(17)], "SQL parameter 1" + "[0]" * 16 + " nests deeper than 16"),
    # Bound, then DuckDB's INTERNAL Error where it was read: a bare InternalException from
    # `rows` of RemoteGraph (reading the Arrow answer), SqlFailed embedded.
    "a time 20 hours east": (
        {"t": [dt.time(12, tzinfo=dt.timezone(dt.timedelta(hours=20)))]},
        "SQL parameter $t[0] is a time whose UTC offset is past 15:59:59",
    ),
    # Refused embedded by DuckDB's bind, bound rounded to +00 over HTTP before.
    "a time a microsecond east": (
        [dt.time(tzinfo=dt.timezone(dt.timedelta(microseconds=1)))],
        "SQL parameter 1 is a time whose UTC offset is past 15:59:59 or has a fraction",
    ),
}
"""Parameters refused, and the start of the one line that says why (naming the parameter and
its type), the same embedded and remote, from `sql` and `rows`."""


def _typed(value: Any) -> list[tuple[str, Any]]:
    """`value` as a positional, a tuple's and a named parameter, each with its query."""
    query = "SELECT typeof({p}), {p}::VARCHAR"
    return [
        (query.format(p="$1"), [value]),
        (query.format(p="$1"), (value,)),
        (query.format(p="$x"), {"x": value}),
    ]


def _refused(fn: Callable[[str, Any], Any], params: Any) -> tuple[type[BaseException], str]:
    with pytest.raises(Exception) as caught:
        fn("SELECT 1", params)
    return type(caught.value), str(caught.value)


def test_sql_parameters_bind_and_refuse_the_same_embedded_and_remote(
    served: Service, tmp_path: Path
) -> None:
    """One rule for SQL parameters (docs/sql.md#parameters): remotely, bytes arrived as
    base64 text, a UUID, a time or a Decimal as text, NaN as NULL, and a set as a list;
    embedded, `sql` took a str as a list of characters and raised a bare TypeError for an
    `object()`, which `rows` refused. Now each is bound or refused the same way by `sql` and
    `rows`, embedded, remote and async, a refusal one `SqlFailed` naming the parameter."""
    with MemoryGraph.open(tmp_path / "embedded") as e, MemoryGraph.connect(served.url) as r:
        for label, (value, duckdb_type) in _BOUND.items():
            for query, params in _typed(value):
                embedded = e.rows(query, params)
                assert embedded[0][0] == duckdb_type, label
                assert e.sql(query, params).fetchall() == embedded, label
                assert r.rows(query, params) == embedded, label
                assert r.sql(query, params).fetchall() == embedded, label
        for label, (params, said) in _REFUSED.items():
            for method in ("sql", "rows"):
                embedded_error = _refused(getattr(e, method), params)
                assert embedded_error[0] is projections.SqlFailed, (label, method)
                assert embedded_error[1].startswith(said), (label, embedded_error)
                assert "\n" not in embedded_error[1] and "docs/sql.md" in embedded_error[1]
                remote_error = _refused(getattr(r, method), params)
                assert remote_error == embedded_error, (label, method)

    async def asynchronous(url: str | Path) -> list[Any]:
        opened = (
            await AsyncMemoryGraph.connect(url)
            if isinstance(url, str)
            else await AsyncMemoryGraph.open(url)
        )
        answers: list[Any] = []
        async with opened as g:
            for value, _ in _BOUND.values():
                answers += [await g.sql(query, params) for query, params in _typed(value)]
            for params, _ in _REFUSED.values():
                with pytest.raises(projections.SqlFailed) as caught:
                    await g.sql("SELECT 1", params)
                answers.append(str(caught.value))
        return answers

    embedded_answers = asyncio.run(asynchronous(tmp_path / "embedded"))
    assert asyncio.run(asynchronous(served.url)) == embedded_answers


_ANSWERED = {
    "the largest UHUGEINT": "340282366920938463463374607431768211455::UHUGEINT",
    "the largest HUGEINT": "170141183460469231731687303715884105727::HUGEINT",
    "a list of HUGEINTs": "[-170141183460469231731687303715884105727::HUGEINT]",
    "a UUID": "'8a4a3c1e-0000-4000-8000-000000000001'::UUID",
    "a TIMETZ": "TIMETZ '12:00:00+01'",
    "a BIT": "'101'::BIT",
    "a JSON": """'{"a": 1}'::JSON""",
    "a VARINT past 38 digits": "123456789012345678901234567890123456789012::VARINT",
    "a DECIMAL": "1.5::DECIMAL(10,2)",
    "an ENUM": "'e'::ENUM('e', 'f')",
    "a struct of them": "{'t': TIMETZ '01:00:00+02', 's': 'it''s, {a}: [b]', 'u': 1::UHUGEINT}",
    "a list of TIMETZs": "[TIMETZ '01:00:00+02', NULL]",
    "a MAP": "MAP {'k': 1}",
    "a UNION": "union_value(k := 1)",
    "an ARRAY": "[1, 2]::INTEGER[2]",
    "an INTERVAL": "INTERVAL 1 day",
    "a TIMESTAMPTZ": "TIMESTAMPTZ '2020-01-01 00:00:00+00'",
}
"""Columns whose Arrow form DuckDB's default export changed: the largest UHUGEINT came back
as -1, a UUID as text, a TIMETZ without its offset, a BIT as bytes."""


def test_remote_sql_answers_the_values_and_types_embedded_answers(
    served: Service, tmp_path: Path
) -> None:
    with MemoryGraph.open(tmp_path / "embedded") as e, MemoryGraph.connect(served.url) as r:
        for label, column in _ANSWERED.items():
            query = f"SELECT {column} AS x"
            embedded = e.sql(query)
            want = embedded.fetchall()
            remote = r.sql(query)
            assert (remote.types, remote.fetchall()) == (embedded.types, want), label
            assert [type(v) for v in r.rows(query)[0]] == [type(v) for v in want[0]], label
            assert r.rows(query) == want, label
        many = "SELECT 1::UHUGEINT AS a, '101'::BIT AS a, 'x' AS \"q\"\"x\""
        assert r.sql(many).columns == e.sql(many).columns == ["a", "a", 'q"x']
        assert r.rows(many) == e.rows(many)
        # An embedded relation's Arrow keeps DuckDB's plain types (a sum is a decimal128).
        assert (
            str(e.sql("SELECT sum(1) AS s").arrow().schema.field("s").type) == "decimal128(38, 0)"
        )

    async def asynchronous() -> list[Any]:
        async with await AsyncMemoryGraph.connect(served.url) as g:
            return [await g.sql(f"SELECT {column} AS x") for column in _ANSWERED.values()]

    with MemoryGraph.open(tmp_path / "embedded") as e:
        wanted = [e.rows(f"SELECT {column} AS x") for column in _ANSWERED.values()]
    assert asyncio.run(asynchronous()) == wanted


def test_a_services_column_types_are_parsed_never_pasted_into_sql() -> None:
    """`RemoteGraph` casts an answer's columns to the types its metadata says: a type that
    does not parse as one (a hostile service's SQL) leaves its column as it arrived."""
    table = pa.table({"a": ["1"], "b": ["x"]}).replace_schema_metadata(
        {DUCKDB_TYPES: b'["INTEGER", "VARCHAR) AS b, (SELECT 42) AS c --"]'}
    )
    with duckdb.connect() as con:
        relation = restored(con, table)
        assert (relation.columns, relation.fetchall()) == (["a", "b"], [(1, "x")])


def test_the_client_refuses_a_parameter_before_sending_it() -> None:
    """A refused parameter is refused by `RemoteGraph` itself: a service that does not
    answer is never asked."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with MemoryGraph.connect(f"http://127.0.0.1:{port}") as r:
        with pytest.raises(projections.SqlFailed, match="parameter 1 is of type set"):
            r.rows("SELECT ?", [{1}])
        with pytest.raises(eventlog.ServiceError, match="no answer"):
            r.rows("SELECT ?", [1])


_RAW: dict[str, tuple[dict[str, Any], str]] = {
    "a str": ({"params": "ab"}, _SHAPE + "str"),
    "an unknown type": (
        {"params": [1], "types": ["set"]},
        "SQL parameter 1 has an unknown type 'set'",
    ),
    "a type that is not its value's": (
        {"params": [1], "types": ["uuid"]},
        "SQL parameter 1 is not the JSON of type 'uuid'",
    ),
    "a finite float as text": (
        {"params": ["1.5"], "types": ["float"]},
        "SQL parameter 1 is not the JSON of type 'float'",
    ),
    "an interval as text": (
        {"params": ["1 day"], "types": ["interval"]},
        "SQL parameter 1 is not the JSON of type 'interval'",
    ),
    "bad base64": (
        {"params": {"x": ["%%"]}, "types": {"x": ["blob"]}},
        "SQL parameter $x[0] is not the JSON of type 'blob'",
    ),
    "types of another shape": (
        {"params": [1], "types": {"x": "uuid"}},
        "SQL parameters: the types do not have the shape",
    ),
    "a type of no parameter": (
        {"params": {"a": 1}, "types": {"b": "uuid"}},
        "SQL parameters: the types do not have the shape",
    ),
    "types that are not a list": (
        {"params": [1], "types": "uuid"},
        "SQL parameter types do not have the shape",
    ),
    "too deep": (
        {"params": [_nested(17)]},
        "SQL parameter 1" + "[0]" * 16 + " nests deeper than 16",
    ),
}
"""Bodies of ``POST .../sql`` whose parameters the service refuses (422 ``sql_error``)."""


def test_the_service_refuses_parameters_a_raw_http_caller_sends(served: Service) -> None:
    """An HTTP caller other than `RemoteGraph` meets the same rule, with ``at`` (a replay
    view) too: the parameters are refused with the line an embedded graph says (or, for
    ``"types"``, one naming the parameter), and a typed value is bound as it is embedded."""
    url = "/v1/stores/default/sql"
    for at in ({}, {"at": -1}):
        for label, (body, said) in _RAW.items():
            answer = served.http.post(url, json={"query": "SELECT 1", **body, **at})
            assert answer.status_code == 422, (label, at, answer.text)
            error = answer.json()["error"]
            assert error["code"] == "sql_error" and error["message"].startswith(said), label
        typed = {
            "query": "SELECT typeof($1), typeof($2), $2::VARCHAR, typeof($3), $3::VARCHAR",
            "params": [str(_U), "AP8=", "-inf"],
            "types": ["uuid", "blob", "float"],
        }
        answer = served.http.post(url, json={**typed, **at})
        assert answer.json()["rows"] == [["UUID", "BLOB", "\\x00\\xFF", "DOUBLE", "-inf"]], at


def test_the_service_refuses_more_parameter_values_than_max_sql_params(served: Service) -> None:
    """A body of many small values (a DuckDB bind cannot be interrupted: 8 MB of ``{}`` held
    the service 14 s past a 5 s limit), or of dicts DuckDB makes STRUCTs of many fields (each
    dict of a list gets the keys of all: 8,000 dicts of one key each, all different, held it
    55 s), is 413 before it is rebuilt; at the limit it binds."""
    url = "/v1/stores/default/sql"
    many: list[Any] = [
        [[{}] * 100_000],
        [0] * 100_001,
        {"a": [[0] * 50_000, [0] * 50_000]},
        [[{f"k{i}": 1} for i in range(400)]],  # 160,000 fields
        [[{"x": [{f"k{i}": 1}]} for i in range(400)]],
    ]
    for params in many:
        began = time.monotonic()
        answer = served.http.post(url, json={"query": "SELECT 1", "params": params})
        assert answer.status_code == 413, answer.text
        assert answer.json()["error"] == {
            "code": "too_large",
            "message": "the parameters hold more than 100000 values, or make STRUCTs of more"
            " fields",
        }
        assert time.monotonic() - began < 2.0
    within = {"query": "SELECT len(?)", "params": [[0] * 99_999]}
    assert served.http.post(url, json=within).json()["rows"] == [[99_999]]
    structs = [[{f"k{i}": 1} for i in range(300)]]  # 90,000 fields
    within = {"query": "SELECT len(?)", "params": structs}
    assert served.http.post(url, json=within).json()["rows"] == [[300]]


def test_an_error_repeating_a_long_value_is_answered_at_once(
    served: Service, tmp_path: Path
) -> None:
    """DuckDB's error repeats a value that failed a cast; its one line was scrubbed of paths
    by a regex quadratic in it (a run of spaces, or slashes up to a newline), holding the
    GIL: 80 KB of ``/a`` froze every route of the service 11 s, past the 5 s limit."""
    said = "Conversion Error: Could not convert string"
    values = ["/a" * 100_000 + "\nx", " " * 200_000 + "x", "'" + "/a" * 100_000]
    with MemoryGraph.open(tmp_path / "embedded") as g:
        for value in values:
            began = time.monotonic()
            answer = served.http.post(
                "/v1/stores/default/sql", json={"query": "SELECT ?::INT", "params": [value]}
            )
            assert answer.status_code == 422, answer.text[:200]
            assert answer.json()["error"]["message"].startswith(said)
            with pytest.raises(projections.SqlFailed, match=f"^{said}"):
                g.rows("SELECT ?::INT", [value])
            assert time.monotonic() - began < 2.0


def test_no_answer_is_a_service_error_that_says_to_retry(tmp_path: Path) -> None:
    with (
        pytest.raises(eventlog.ServiceError) as none,
        eventlog.connect("http://127.0.0.1:9") as log,
    ):
        log.create_session(idempotency_key="k")
    assert none.value.status == 0 and "retry it with its idempotency_key" in str(none.value)
    with pytest.raises(eventlog.LogClosed):
        log.create_session()  # closed on leaving the block, as an embedded log
    with pytest.raises(eventlog.LogClosed):
        list(log.read())


def test_the_async_client_gives_up_on_a_service_that_never_answers() -> None:
    """Its `timeout` bounds every request (aiohttp took a request's timeout=None for none)."""
    import asyncio  # noqa: PLC0415
    import socket  # noqa: PLC0415
    import time  # noqa: PLC0415

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # accepts connections (the kernel does), never answers

        async def main() -> None:
            url = f"http://127.0.0.1:{silent.getsockname()[1]}"
            async with await eventlog.connect_async(url, timeout=1.0) as log:
                with pytest.raises(eventlog.ServiceError):
                    await log.create_session()

        started = time.monotonic()
        asyncio.run(asyncio.wait_for(main(), 20))
        assert time.monotonic() - started < 10


def test_the_async_client_answers_and_refuses_as_the_sync_one(served: Service) -> None:
    """The async client has a transport of its own (aiohttp): the same errors with their
    fields, a record longer than its stream's line buffer, repeated query parameters, a
    follow that yields new appends, `LogClosed` once closed, and no answer as a
    `ServiceError` that says to retry."""

    async def main() -> tuple[list[int], list[int]]:
        async with await AsyncMemoryGraph.connect(served.url) as g:
            session = await g.create_session()
            long = await g.add_prompt(session.id, "x" * 300_000)  # a 300 kB NDJSON line
            with pytest.raises(eventlog.AppendConflict) as conflict:
                await g.add_prompt(session.id, "q2", expect_session_lsn=0)
            assert conflict.value.actual == await g.last_lsn(session.id)
            with pytest.raises(projections.NotFound):
                await g.get_session(long)
            derived = await g.add_prompt(session.id, "q3")
            await g.add_edge(derived, long, "DERIVED_FROM")
            hops = await g.ancestors(derived, edge_types=["DERIVED_FROM", "OTHER"])
            assert [h.node_id for h in hops] == [long]
            records = [r async for r in g.read()]
            assert getattr(records[1].event, "content", "") == "x" * 300_000
            followed: list[int] = []
            async for record in g.follow(start=2):
                followed.append(record.lsn)
                if len(followed) == 2:
                    await g.create_session()
                if len(followed) == 3:
                    break
        with pytest.raises(eventlog.LogClosed):
            await g.create_session()  # as an embedded log does once closed
        async with await eventlog.connect_async(served.url, "elsewhere") as elsewhere:
            with pytest.raises(eventlog.ServiceError) as unknown_store:
                await elsewhere.create_session()
        assert (unknown_store.value.status, unknown_store.value.code) == (404, "unknown_store")
        async with await eventlog.connect_async("http://127.0.0.1:9") as nowhere:
            with pytest.raises(eventlog.ServiceError) as none:
                await nowhere.create_session(idempotency_key="k")
        assert none.value.status == 0 and "retry it with its idempotency_key" in str(none.value)
        return [r.lsn for r in records], followed

    read, followed = asyncio.run(main())
    assert read == [0, 1, 2, 3] and followed == [2, 3, 4]


@pytest.mark.parametrize("opens", ["eventlog.connect", "await eventlog.connect_async"])
def test_both_clients_go_through_the_proxy_the_environment_names(
    served: Service, opens: str
) -> None:
    """``HTTP_PROXY`` is honoured, and ``NO_PROXY`` bypasses it, by the sync client (httpx2)
    and the async one alike (aiohttp, which ignores the environment unless told)."""
    code = (
        "import asyncio, sys, eventlog\n"
        "async def main():\n"
        f"    log = {opens}(sys.argv[1])\n"
        "    try:\n"
        "        created = log.create_session()\n"
        "        print(type(await created if asyncio.iscoroutine(created) else created).__name__)\n"
        "    except eventlog.ServiceError as exc:\n"
        "        print(exc.code)\n"
        "asyncio.run(main())\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    answers = []
    for proxies in ({"HTTP_PROXY": "http://127.0.0.1:9"}, {"HTTP_PROXY": "http://127.0.0.1:9",
                                                           "NO_PROXY": "127.0.0.1"}):  # fmt: skip
        out = subprocess.run(
            [sys.executable, "-c", code, served.url], env=clean | proxies,
            capture_output=True, text=True, timeout=WAIT_S, check=True,
        )  # fmt: skip
        answers.append(out.stdout.strip())
    assert answers == ["unreachable", "SessionCreated"]


def test_follow_yields_new_appends_until_stopped(served: Service) -> None:
    stop = threading.Event()
    seen: list[int] = []
    with eventlog.connect(served.url) as log:

        def follow() -> None:
            for record in log.follow(stop=stop):
                seen.append(record.lsn)

        thread = threading.Thread(target=follow)
        thread.start()
        for _ in range(3):
            log.create_session()
        while len(seen) < 3 and thread.is_alive():
            threading.Event().wait(0.01)
        stop.set()
        thread.join(WAIT_S)
        assert not thread.is_alive() and seen == [0, 1, 2]


def test_a_relative_store_path_does_not_rewrite_error_messages(tmp_path: Path) -> None:
    """The service hides its stores' paths in error messages; a store served as the one-word
    relative path ``store`` once turned "conflict on the store" into "conflict on the
    <default>"."""
    eventlog.open(tmp_path / "store").close()
    with subprocess.Popen(
        [str(LMG), "serve", "store", "--port", "0"],
        cwd=tmp_path, stderr=subprocess.PIPE, text=True,
    ) as proc:  # fmt: skip
        assert proc.stderr is not None
        line = proc.stderr.readline()
        found = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert found is not None, line
        try:
            with eventlog.connect(found.group(0)) as log:
                log.create_session()
                with pytest.raises(eventlog.AppendConflict) as conflict:
                    log.create_session(expect_store_lsn=5)
            assert str(conflict.value) == "conflict on the store: expected last LSN 5, log has 0"
        finally:
            proc.terminate()
            proc.communicate(timeout=WAIT_S)


@pytest.mark.slow
def test_readers_never_wait_while_appends_stream(served: Service) -> None:
    """8 clients query `agent_stats` and a context window in a loop while 4 others append:
    every read answers (none waits out the SQL time limit on a lock), reads see the appends,
    and once the appends stop the fold holds all of them."""
    with MemoryGraph.connect(served.url) as g:
        agent = g.add_agent("coder", "answers")
        session = g.create_session()
        stop = threading.Event()
        seconds: list[float] = []
        errors: list[BaseException] = []

        def append() -> None:
            with MemoryGraph.connect(served.url) as mine:
                while not stop.is_set():
                    prompt = mine.add_prompt(session.id, "q")
                    mine.assign_agent_to_prompt(prompt, agent)
                    mine.add_response(prompt, "a", eventlog.TokenUsage(1, 1))

        def read() -> None:
            with MemoryGraph.connect(served.url) as mine:
                while not stop.is_set():
                    began = time.monotonic()
                    mine.rows("SELECT name, prompts_handled FROM agent_stats")
                    mine.context_window(session.id, turns=10)
                    seconds.append(time.monotonic() - began)

        def guarded(fn: Callable[[], None]) -> Callable[[], None]:
            def run() -> None:
                try:
                    fn()
                except BaseException as exc:
                    errors.append(exc)

            return run

        threads = [threading.Thread(target=guarded(f)) for f in [append] * 4 + [read] * 8]
        for thread in threads:
            thread.start()
        time.sleep(4)
        stop.set()
        for thread in threads:
            thread.join(WAIT_S)
        assert not errors, errors
        assert len(seconds) >= 8 and max(seconds) < 5.0  # sql_time_s: a lock wait would fail
        last = g.last_lsn()
        assert last is not None
        handled = g.rows("SELECT prompts_handled FROM agent_stats")[0][0]
        assert handled == (last - 1) // 3  # three events a turn after the agent and session


def test_the_appending_client_loads_no_duckdb() -> None:
    """An agent that only appends (`eventlog.connect`) pays for httpx2, not for DuckDB, nor
    for the async client's aiohttp."""
    code = (
        "import sys, eventlog\n"
        "eventlog.connect('http://127.0.0.1:9').close()\n"
        "heavy = ('duckdb', 'pyarrow', 'starlette', 'uvicorn', 'aiohttp')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _outcome(fn: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    """What `fn(*args)` answered, or the class and message of what it raised."""
    try:
        return "answered", fn(*args)
    except Exception as exc:
        return type(exc).__name__, str(exc)


@pytest.fixture
def both(served: Service, tmp_path: Path) -> Iterator[tuple[MemoryGraph, Any]]:
    """An embedded graph (in memory) and a client, on the one store `served` serves: the
    same ids, so the two answers compare whole."""
    remote = MemoryGraph.connect(served.url)
    embedded = MemoryGraph.open(tmp_path / "store", database=":memory:")
    yield embedded, remote
    embedded.close()
    remote.close()


def test_typed_reads_take_and_refuse_arguments_as_embedded(
    both: tuple[MemoryGraph, Any],
) -> None:
    """Each argument a typed read takes embedded, the client takes, with the same answer;
    each it refuses, the client refuses, with the same class and message: a turns or depth
    past 9 digits, a version that no template has (or of the wrong type), an edge type that
    is not a str, an empty list of edge types (which matches no edge), page 0 of a stream."""
    embedded, remote = both
    s = remote.create_session()
    t = remote.create_template("t", "Hello {{who}}", [eventlog.VariableSpec(name="who")])
    p = remote.add_prompt(s.id, template_id=t, variables={"who": "Ada"})
    r = remote.add_response(p, "a")
    reads: dict[str, Callable[[Any], Any]] = {
        "turns -1": lambda g: g.context_window(s.id, -1),
        "turns True": lambda g: g.context_window(s.id, True),
        "turns 10**10": lambda g: g.context_window(s.id, 10**10),
        "depth 10**10": lambda g: g.ancestors(r, 10**10),
        "no edge type": lambda g: g.ancestors(r, 3, []),
        "edge type 1": lambda g: g.get_outgoing_edges(p, 1),
        "version -1": lambda g: g.get_template(t, -1),
        "version True": lambda g: g.get_template(t, True),
        "version '1'": lambda g: g.get_template(t, "1"),
        "page 0": lambda g: list(g.query().stream(0)),
        "page -1": lambda g: list(g.query().stream(-1)),
    }
    for name, read in reads.items():
        assert _outcome(read, remote) == _outcome(read, embedded), name


def test_the_query_builder_sends_every_call_as_embedded(
    both: tuple[MemoryGraph, Any],
) -> None:
    """Two filters on one metadata key both hold (none of the last alone), and
    `include_deleted` takes any truth value, as embedded."""
    embedded, remote = both
    remote.create_session(metadata={"user": "ada"})
    gone = remote.create_session(metadata={"user": "bob"})
    remote.delete_node(gone.id)
    queries: dict[str, Callable[[Any], Any]] = {
        "one key twice": lambda g: g.query().metadata("user", "bob").metadata("user", "ada"),
        "include 1": lambda g: g.query().include_deleted(1),
    }
    for name, query in queries.items():
        answers = [_outcome(query(g).execute) for g in (remote, embedded)]
        assert answers[0] == answers[1], name
        assert answers[0][0] == "answered", name


def test_a_query_past_max_rows_streams_whole_and_is_never_short(
    served: Service, both: tuple[MemoryGraph, Any]
) -> None:
    """`stream` pages through every node whatever its page is beside the service's
    `max_rows` (50 here); an `execute` the service would cut is refused (`too_many_rows`),
    as SQL is, never answered short."""
    embedded, remote = both
    s = remote.create_session()
    remote.add_prompts_batch([(s.id, f"q{i}") for i in range(60)])
    everything = embedded.query().execute()
    assert len(everything) == 61
    for page in (7, 50, 100, 1_000):
        assert list(remote.query().stream(page)) == everything, page
    assert list(remote.query().limit(55).stream(100)) == everything[:55]
    assert remote.query().limit(50).execute() == everything[:50]  # max_rows exactly: whole
    for query in (remote.query(), remote.query().limit(51)):
        with pytest.raises(eventlog.ServiceError) as cut:
            query.execute()
        assert cut.value.code == "too_many_rows"

    async def streamed() -> list[Any]:
        async with await AsyncMemoryGraph.connect(served.url) as g:
            with pytest.raises(eventlog.ServiceError, match="max_rows"):
                await g.query().execute()
            return [node async for node in g.query().stream(100)]

    assert asyncio.run(streamed()) == everything


def test_numbers_past_int64_answer_or_refuse_as_embedded(
    both: tuple[MemoryGraph, Any],
) -> None:
    """A limit, offset, page or version past an int64 is `BadArgument` on both (embedded,
    DuckDB's cast error; remote, a capped answer, `SqlFailed`, or a refusal of its digits);
    a turns or depth past it answers as the largest does."""
    embedded, remote = both
    s = remote.create_session()
    t = remote.create_template("t", "x")
    p = remote.add_prompt(s.id, "q")
    reads: dict[str, Callable[[Any], Any]] = {
        "limit": lambda g: g.query().limit(2**63).execute(),
        "offset": lambda g: g.query().offset(2**63).execute(),
        "count": lambda g: g.query().limit(2**64).count(),
        "page": lambda g: list(g.query().stream(2**63)),
        "version": lambda g: g.get_template(t, 2**63),
        "version 2**63 - 1": lambda g: g.get_template(t, 2**63 - 1),
        "turns": lambda g: g.context_window(s.id, 2**70),
        "depth": lambda g: g.ancestors(p, 2**70),
    }
    for name, read in reads.items():
        answer = _outcome(read, embedded)
        assert _outcome(read, remote) == answer, name
        assert answer[0] in ("answered", "BadArgument", "NotFound"), name


def test_a_read_after_close_raises_graph_closed_embedded_and_remote(
    served: Service, tmp_path: Path
) -> None:
    """A read of a closed graph is `GraphClosed` (a `ProjectionError`, and a `LogClosed`
    as its appends raise), embedded or remote, sync or async: not `LogClosed` alone
    remotely, which an ``except ProjectionError`` around reads would miss."""
    graphs: list[Any] = [MemoryGraph.open(tmp_path / "embedded"), MemoryGraph.connect(served.url)]
    reads: list[Callable[[Any], Any]] = [
        lambda g: g.get_node(uuid.uuid4()),
        lambda g: g.query().count(),
        lambda g: g.rows("SELECT 1"),
    ]
    for graph in graphs:
        graph.close()
        for read in reads:
            with pytest.raises(projections.GraphClosed) as closed:
                read(graph)
            assert isinstance(closed.value, eventlog.LogClosed)

    async def main() -> None:
        opened: list[Any] = [
            await AsyncMemoryGraph.open(tmp_path / "async"),
            await AsyncMemoryGraph.connect(served.url),
        ]
        for g in opened:
            await g.close()
            with pytest.raises(projections.GraphClosed):
                await g.get_session(uuid.uuid4())
            with pytest.raises(projections.GraphClosed):
                await g.sql("SELECT 1")

    asyncio.run(main())


def test_a_metadata_filter_finds_any_key_embedded_and_remote(
    both: tuple[MemoryGraph, Any],
) -> None:
    """A metadata key is any str: the empty one (a DuckDB binder error embedded, `SqlFailed`
    remote) and one holding NUL (found by neither) match as any other."""
    embedded, remote = both
    keys = ["", "\x00", "a/b", "a~1b", 'a"b', "a.b", "$", "[0]"]
    session = remote.create_session(metadata={key: k for k, key in enumerate(keys)})
    for k, key in enumerate(keys):
        for g in (remote, embedded):
            answer = _outcome(g.query().metadata(key, k).execute)
            assert answer == ("answered", [g.get_session(session.id)]), (key, g)
