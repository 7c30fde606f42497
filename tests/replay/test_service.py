"""`lmg serve` as a real process on 127.0.0.1, driven by real clients (curl, httpx, lmg)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import duckdb
import httpx
import pyarrow as pa
import pytest

import eventlog
import projections
from tests._processes import LMG, WAIT_S, Child
from tests.projections.test_sql_sandbox import FAILING, NO_STATEMENT, PRIVATE, SERVER_STATE

# real server or CLI processes: `make test` runs them, `make test-fast` not; each test's
# store holds one session (conftest.py)
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_session")]

_SESSION = {"type": "session.created"}
_URL = re.compile(r"lmg serve: (http://127\.0\.0\.1:\d+)")


class Service:
    """A running `lmg serve` child and its URL."""

    def __init__(
        self, tmp: Path, args: list[str], name: str = "serve", file_size_limit: int | None = None
    ) -> None:
        command = [str(LMG), "serve", *args, "--port", "0"]
        self.child = Child(command, tmp, name, file_size_limit=file_size_limit)
        self.child.wait_for(lambda: _URL.search(self.child.stderr()) is not None, "its URL")
        found = _URL.search(self.child.stderr())
        assert found is not None
        self.url = found.group(1)
        self.http = httpx.Client(base_url=self.url, timeout=WAIT_S)

    def stop(self) -> int:
        self.http.close()
        return self.child.stop()


def _events(store: Path) -> int:
    with eventlog.open(store, readonly=True) as log:
        return log.next_lsn()


def test_curl_appends_json_and_follows_the_feed(served: Service, tmp_path: Path) -> None:
    feed = tmp_path / "feed.out"
    url = f"{served.url}/v1/stores/default/events"
    with feed.open("wb") as sink:
        follow = subprocess.Popen(
            ["curl", "-sN", "--max-time", "4", f"{url}?follow=true"], stdout=sink
        )
    posted = subprocess.run(
        [
            "curl", "-sf", "-X", "POST", "-H", "Idempotency-Key: k1",
            url, "-d", '[{"type": "session.created", "tags": ["curl"]}]',
        ],
        capture_output=True, check=True, timeout=WAIT_S,
    )  # fmt: skip
    answer = json.loads(posted.stdout)
    assert answer["lsn"] == 1 and answer["count"] == 1 and not answer["duplicate"]
    follow.wait(WAIT_S)
    lines = [json.loads(line) for line in feed.read_text().splitlines()]
    assert [r["lsn"] for r in lines] == [0, 1]
    assert lines[1]["tags"] == ["curl"] and lines[1]["id"] == answer["ids"][0]


def test_sse_resumes_after_last_event_id(served: Service) -> None:
    headers = {"Accept": "text/event-stream", "Last-Event-ID": "0"}
    served.http.post("/v1/stores/default/events", json={"type": "session.created"})
    text = served.http.get("/v1/stores/default/events", headers=headers).text
    assert text.startswith("id: 1\nevent: session.created\ndata: {")


def test_an_idempotent_retry_adds_nothing(served: Service, store: Path) -> None:
    body = {"type": "session.created"}
    first = served.http.post(
        "/v1/stores/default/events", json=body, headers={"Idempotency-Key": "a"}
    )
    again = served.http.post(
        "/v1/stores/default/events", json=body, headers={"Idempotency-Key": "a"}
    )
    assert again.json()["duplicate"] and again.json()["ids"] == first.json()["ids"]
    stale = served.http.post("/v1/stores/default/events?expect_store_lsn=0", json=body)
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "append_conflict"
    assert _events(store) == 2


def test_sql_typed_reads_and_replay_answer(served: Service) -> None:
    appended = served.http.post("/v1/stores/default/events", json={"type": "session.created"})
    session = appended.json()["ids"][0]
    prompt = served.http.post(
        "/v1/stores/default/events",
        json={"type": "prompt.added", "session_id": session, "content": "hi"},
    ).json()["ids"][0]
    rows = served.http.post(
        "/v1/stores/default/sql", json={"query": "SELECT count(*) FROM sessions"}
    ).json()
    assert rows == {"columns": ["count_star()"], "rows": [[2]], "truncated": False}
    past = served.http.post(
        "/v1/stores/default/sql", json={"query": "SELECT count(*) FROM sessions", "at": 0}
    )
    assert past.json()["rows"] == [[1]]
    node = served.http.get(f"/v1/stores/default/nodes/{prompt}").json()
    assert node["node_type"] == "prompt" and node["content"] == "hi"
    window = served.http.get(f"/v1/stores/default/sessions/{session}/context?turns=5").json()
    assert [t["prompt"]["id"] for t in window] == [prompt]
    found = served.http.post(
        "/v1/stores/default/query", json={"session": session, "node_type": ["prompt"]}
    ).json()
    assert [n["id"] for n in found] == [prompt]
    diff = served.http.get("/v1/stores/default/diff?from=0&to=2").json()
    assert diff["start"] == 0 and "prompts" in diff["tables"]


_BAD = {
    "not JSON": b"{",
    "invalid UTF-8": b'{"type": "session.created", "tags": ["\xff"]}',
    "unknown type": b'{"type": "session.exploded"}',
    "wrong type": b'{"type": "session.created", "tags": 3}',
    "unknown id": b'{"type": "prompt.added", "session_id": "01a23be2-53ab-72ae-aaee-94e6ee0f0365",'
    b' "content": "x"}',
    "huge number": b'{"type": "session.created", "metadata": {"n": 99999999999999999999999}}',
    "deep nesting": b'{"type": "session.created", "metadata": '
    + b'{"a": ' * 200
    + b"1"
    + b"}" * 201,
    "no events": b"[]",
    "too large": b'{"type": "session.created", "metadata": {"a": "' + b"x" * 70_000 + b'"}}',
}


@pytest.mark.parametrize("body", _BAD.values(), ids=list(_BAD))
def test_bad_appends_are_refused_and_write_nothing(
    served: Service, store: Path, body: bytes, tmp_path: Path
) -> None:
    answer = served.http.post("/v1/stores/default/events", content=body)
    assert answer.status_code in (413, 422), answer.text
    error = answer.json()["error"]
    assert error["code"] and error["message"] and "\n" not in error["message"]
    assert str(tmp_path) not in answer.text
    assert _events(store) == 1
    assert served.http.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/stores/default/sql", b'{"query": 3}'),
        ("POST", "/v1/stores/default/sql", b'{"query": "DELETE FROM sessions"}'),
        ("POST", "/v1/stores/default/sql", b'{"query": "SELECT * FROM read_csv(\'/etc/passwd\')"}'),
        ("POST", "/v1/stores/default/sql", b'{"query": "SELECT nope FROM sessions"}'),
        ("POST", "/v1/stores/default/sql", b'{"query": "SELECT 1", "at": "yesterday"}'),
        ("POST", "/v1/stores/default/query", b'{"limit": -1}'),
        ("POST", "/v1/stores/default/query", b'{"node_type": ["planet"]}'),
        ("GET", "/v1/stores/default/nodes/not-a-uuid", b""),
        ("GET", "/v1/stores/default/nodes/01a23be2-53ab-72ae-aaee-94e6ee0f0365", b""),
        ("GET", "/v1/stores/default/events?from=never", b""),
        ("GET", "/v1/stores/default/diff?from=0", b""),
    ],
)
def test_bad_reads_are_refused_with_a_reason(
    served: Service, method: str, path: str, body: bytes, tmp_path: Path
) -> None:
    answer = served.http.request(method, path, content=body)
    assert answer.status_code in (404, 422), answer.text
    assert answer.json()["error"]["message"]
    assert str(tmp_path) not in answer.text


def test_a_bad_last_event_id_is_refused_before_the_stream_starts(
    served: Service, tmp_path: Path
) -> None:
    """`Last-Event-ID: -5` was answered 200, then the stream broke (the log refused LSN
    -4 once the answer had begun: a cut-off chunked body, a traceback in the service's log)."""
    for resume in ("-5", "x", "1" * 20):
        answer = served.http.get("/v1/stores/default/events", headers={"Last-Event-ID": resume})
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["code"] == "invalid_event"
    resumed = served.http.get("/v1/stores/default/events", headers={"Last-Event-ID": "0"})
    assert resumed.status_code == 200 and resumed.text == ""
    assert "Traceback" not in served.child.stderr()


def test_a_slow_body_is_cut_off(tmp_path: Path, store: Path) -> None:
    service = Service(tmp_path, [str(store), "--limit", "body_timeout_s=0.5"])
    try:
        host, port = service.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=WAIT_S) as sock:
            sock.sendall(
                b"POST /v1/stores/default/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Length: 100\r\n\r\n[{"
            )
            reply = sock.recv(4096)
        assert reply.startswith(b"HTTP/1.1 408"), reply
        assert _events(store) == 1
    finally:
        assert service.stop() == 0


def test_a_slow_or_huge_request_head_is_cut_off(tmp_path: Path, store: Path) -> None:
    """uvicorn waited without end for a request's line and headers, and kept them whole:
    1024 connections sending nothing, or a header byte now and then, held every connection
    slot (everyone else was answered 503), and one 300 MB header was kept in memory. A head
    now has `body_timeout_s` to arrive (408) and at most 64 KiB (431)."""
    service = Service(tmp_path, [str(store), "--limit", "body_timeout_s=0.5"])
    try:
        host, port = service.url.removeprefix("http://").split(":")
        began = time.monotonic()
        with (
            socket.create_connection((host, int(port)), timeout=WAIT_S) as idle,
            socket.create_connection((host, int(port)), timeout=WAIT_S) as slow,
            socket.create_connection((host, int(port)), timeout=WAIT_S) as huge,
        ):
            slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-a: b")
            for _ in range(3):
                time.sleep(0.1)
                slow.sendall(b"b")
            huge.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-a: ")
            with contextlib.suppress(OSError):  # the service may close it while we send
                for _ in range(64):
                    huge.sendall(b"b" * 16384)
            assert slow.recv(4096).startswith(b"HTTP/1.1 408")
            assert idle.recv(4096).startswith(b"HTTP/1.1 408")
            assert huge.recv(4096).startswith(b"HTTP/1.1 431")
        assert time.monotonic() - began < 10
        long = {"X-Long": "a" * 60_000}  # a head below the limit, over a keep-alive connection
        for _ in range(2):
            assert service.http.get("/healthz", headers=long).status_code == 200
        assert service.http.post("/v1/stores/default/events", json=_SESSION).is_success
    finally:
        assert service.stop() == 0


def test_a_long_query_is_interrupted(tmp_path: Path, store: Path) -> None:
    service = Service(tmp_path, [str(store), "--limit", "sql_time_s=0.5"])
    try:
        began = time.monotonic()
        answer = service.http.post(
            "/v1/stores/default/sql",
            json={"query": "SELECT count(*) FROM range(100000000000) a, range(1000) b"},
        )
        assert answer.status_code == 422 and answer.json()["error"]["code"] == "time_limit"
        assert time.monotonic() - began < 10
        ok = service.http.post("/v1/stores/default/sql", json={"query": "SELECT 1"})
        assert ok.json()["rows"] == [[1]]
    finally:
        assert service.stop() == 0


_ARROW = {"Accept": "application/vnd.apache.arrow.stream"}
_SQL = "/v1/stores/default/sql"


def test_a_json_answer_spells_the_floats_json_has_no_number_for(served: Service) -> None:
    """NaN and the infinities were null in a JSON answer, as if SQL's NULL; they are
    PostgreSQL's words now, in a column, a list, a struct or a map; a NULL stays null."""
    query = (
        "SELECT 'nan'::DOUBLE AS a, '-inf'::FLOAT AS b, ['inf'::DOUBLE, 1.5, NULL] AS c,"
        " {'n': 'nan'::DOUBLE, 's': 'NaN'} AS d, MAP {'k': 'inf'::DOUBLE} AS e,"
        " NULL::DOUBLE AS f, -0.0::DOUBLE AS g, 'inf' AS h"
    )
    answered = subprocess.run(
        ["curl", "-sf", "-X", "POST", f"{served.url}/v1/stores/default/sql",
         "-d", json.dumps({"query": query})],
        capture_output=True, check=True, timeout=WAIT_S,
    )  # fmt: skip
    assert json.loads(answered.stdout)["rows"] == [
        [
            "NaN",
            "-Infinity",
            ["Infinity", 1.5, None],
            {"n": "NaN", "s": "NaN"},
            {"k": "Infinity"},
            None,
            -0.0,
            "inf",
        ]
    ]


def test_sql_naming_the_servers_state_is_refused(served: Service, tmp_path: Path) -> None:
    """A token holder learned where the server keeps its files from rows (the store's path
    from ``duckdb_databases()``, its spill, secret and extension directories from
    ``duckdb_settings()``) and, over Arrow, from an error: DuckDB's own, naming the home of
    the user running the service. Each is refused, in JSON and Arrow, live and at a point."""
    home = str(Path.home())
    for query, name in SERVER_STATE:
        for body, headers in [
            ({"query": query}, {}),
            ({"query": query}, _ARROW),
            ({"query": query, "at": 0}, {}),
        ]:
            answer = served.http.post("/v1/stores/default/sql", json=body, headers=headers)
            assert answer.status_code == 422, (query, answer.text)
            error = answer.json()["error"]
            assert error["code"] == "sql_refused", (query, error)
            assert error["message"].startswith(f"refused: {name} "), error
            assert str(tmp_path) not in answer.text and home not in answer.text
    ok = served.http.post("/v1/stores/default/sql", json={"query": "SELECT count(*) FROM sessions"})
    assert ok.json()["rows"] == [[1]]


def test_sql_errors_are_one_line_without_a_path(served: Service) -> None:
    """DuckDB's errors of a query are one line, in JSON and Arrow (where the query runs as its
    answer is read), without a path DuckDB names (the service removed only its stores'). A
    query of no statement is one too (it was 500, or a reset connection for Arrow)."""
    for query in [*FAILING, *NO_STATEMENT]:
        for headers in ({}, _ARROW):
            answer = served.http.post(
                "/v1/stores/default/sql", json={"query": query}, headers=headers
            )
            assert answer.status_code == 422, (query, answer.text)
            error = answer.json()["error"]
            assert error["code"] == "sql_error", (query, error)
            assert "\n" not in error["message"] and PRIVATE not in answer.text, error


def test_a_query_gives_its_turn_back_with_its_answer(tmp_path: Path, store: Path) -> None:
    """With one query turn: a query interrupted at `sql_time_s` (JSON or Arrow), refused or
    failed gives the turn back when it answers, never later; a query waiting for the turn
    runs as soon as the first has stopped. A text too long to parse within the time limit
    is refused before it is parsed: 7 MB of statements ending in a DELETE held the only
    turn for 14 s (DuckDB's parse cannot be interrupted) and was answered `time_limit`."""
    limits = ["--limit", "sql_time_s=0.5", "--limit", "max_queries=1"]
    service = Service(tmp_path, [str(store), *limits])
    long = "SELECT count(*) FROM range(100000000000) a, range(1000) b"

    async def behind(body: dict[str, str], headers: dict[str, str]) -> tuple[httpx.Response, float]:
        """`body`'s answer, and how long after it a `SELECT 1` sent meanwhile was answered."""
        async with httpx.AsyncClient(base_url=service.url, timeout=WAIT_S) as client:
            first = asyncio.ensure_future(client.post(_SQL, json=body, headers=headers))
            await asyncio.sleep(0.2)  # the first holds the turn, or has answered
            waiting = asyncio.ensure_future(client.post(_SQL, json={"query": "SELECT 1"}))
            answer = await first
            answered = time.monotonic()
            assert (await waiting).json()["rows"] == [[1]]
            return answer, time.monotonic() - answered

    try:
        for query, headers, code in [
            (long, {}, "time_limit"),
            (long, _ARROW, "time_limit"),
            ("SELECT * FROM duckdb_settings()", {}, "sql_refused"),
            ("DELETE FROM sessions", {}, "sql_refused"),
            ("SELEC 1", {}, "sql_error"),
            ("SELECT 1; " * 700_000 + "DELETE FROM sessions", {}, "too_large"),
        ]:
            began = time.monotonic()
            answer, after = asyncio.run(behind({"query": query}, headers))
            assert answer.json()["error"]["code"] == code, (query[:40], answer.text)
            assert time.monotonic() - began < 5 and after < 1, (query[:40], after)
        under = "SELECT 1; " * 2_000 + "DELETE FROM sessions"  # within max_sql_bytes
        answer = service.http.post(_SQL, json={"query": under})
        assert answer.json()["error"]["code"] == "sql_refused", answer.text
    finally:
        assert service.stop() == 0


def test_a_query_at_a_point_is_refused_before_the_replay(tmp_path: Path, store: Path) -> None:
    """SQL ``at`` a point was checked once the replay view was built, in a query turn for up
    to `replay_time_s`: a query to refuse held the turn that long, and was answered by the
    replay's outcome (`time_limit`, `bad_point`) instead of its refusal."""
    service = Service(tmp_path, [str(store), "--limit", "replay_time_s=0.000001"])
    try:
        for at in (0, 1000):
            body = {"query": "SELECT * FROM duckdb_settings()", "at": at}
            answer = service.http.post(_SQL, json=body)
            assert answer.json()["error"]["code"] == "sql_refused", answer.text
        failed = service.http.post(_SQL, json={"query": "SELEC 1", "at": 0})
        assert failed.json()["error"]["code"] == "sql_error", failed.text
        slow = service.http.post(_SQL, json={"query": "SELECT 1", "at": 0})
        assert slow.json()["error"]["code"] == "time_limit", slow.text  # the replay's limit
    finally:
        assert service.stop() == 0


def test_an_answer_is_cut_at_max_rows_and_max_answer_bytes(tmp_path: Path, store: Path) -> None:
    """Rows and bytes both bound a SQL answer, in JSON and in Arrow: an answer of huge rows
    is cut before it passes `max_answer_bytes` (it held gigabytes in memory before), and
    says so as an answer cut at `max_rows` does."""
    limits = ["--limit", "max_rows=1000", "--limit", "max_answer_bytes=100000"]
    service = Service(tmp_path, [str(store), *limits])
    arrow = {"Accept": "application/vnd.apache.arrow.stream"}

    def sql(query: str, **headers: str) -> httpx.Response:
        answer = service.http.post("/v1/stores/default/sql", json={"query": query}, headers=headers)
        assert answer.status_code == 200, answer.text
        return answer

    def table(query: str) -> tuple[pa.Table, str]:
        answer = sql(query, **arrow)
        return pa.ipc.open_stream(answer.content).read_all(), answer.headers["LMG-Truncated"]

    try:
        wide = "SELECT repeat('x', 1000) AS s FROM range(500)"
        cut = sql(wide)
        assert len(cut.content) <= 100_100 and cut.json()["truncated"] is True
        assert 90 <= len(cut.json()["rows"]) < 100  # each row is about 1,000 bytes of JSON
        rows, truncated = table(wide)
        assert truncated == "true" and 90 <= rows.num_rows < 100 and rows.nbytes <= 100_000
        for query, count, more in [
            ("SELECT range FROM range(1000)", 1000, False),  # max_rows exactly: not cut
            ("SELECT range FROM range(1001)", 1000, True),
            ("SELECT repeat('x', 200000)", 0, True),  # one value past the limit
        ]:
            answer = sql(query).json()
            assert (len(answer["rows"]), answer["truncated"]) == (count, more), query
            rows, truncated = table(query)
            assert (rows.num_rows, truncated) == (count, "true" if more else "false"), query
        assert sql("SELECT 1 AS one").json() == {
            "columns": ["one"],
            "rows": [[1]],
            "truncated": False,
        }
    finally:
        assert service.stop() == 0


def test_a_replay_that_takes_too_long_is_abandoned(tmp_path: Path, store: Path) -> None:
    """SQL ``at`` a point and a diff fold the log into a view first: that fold stops at
    `replay_time_s` (here shorter than any fold), and the service answers the next request."""
    service = Service(tmp_path, [str(store), "--limit", "replay_time_s=0.000001"])
    try:
        past = service.http.post("/v1/stores/default/sql", json={"query": "SELECT 1", "at": 0})
        diff = service.http.get("/v1/stores/default/diff?from=-1&to=0")
        for answer in (past, diff):
            assert answer.status_code == 422 and answer.json()["error"]["code"] == "time_limit"
        ok = service.http.post("/v1/stores/default/sql", json={"query": "SELECT 1"})
        assert ok.json()["rows"] == [[1]]
    finally:
        assert service.stop() == 0


def _token(auth: Path, name: str, scopes: list[str], stores: list[str]) -> str:
    args = [str(LMG), "token", "add", "--auth", str(auth), "--name", name]
    args += [f"--scope={s}" for s in scopes] + [f"--store={s}" for s in stores]
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip()


_ROUTES = [
    ("POST", "/v1/stores/{}/events", b'{"type": "session.created"}', "append"),
    ("GET", "/v1/stores/{}/events", b"", "read"),
    ("POST", "/v1/stores/{}/sql", b'{"query": "SELECT 1"}', "sql"),
    ("POST", "/v1/stores/{}/query", b"{}", "read"),
    ("GET", "/v1/stores/{}/nodes/01a23be2-53ab-72ae-aaee-94e6ee0f0365", b"", "read"),
    ("GET", "/v1/stores/{}/diff?from=0&to=0", b"", "read"),
]


def _call(
    service: Service, how: tuple[str, str, bytes], token: str | None, name: str = "default"
) -> httpx.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    method, path, body = how
    return service.http.request(method, path.format(name), content=body, headers=headers)


def test_every_route_checks_its_token(tmp_path: Path, store: Path) -> None:
    secret = tmp_path / "secret-store"
    shutil.copytree(store, secret)
    auth = tmp_path / "tokens.json"
    reader = _token(auth, "reader", ["read"], ["default"])
    admin = _token(auth, "admin", ["admin"], ["default"])
    assert auth.stat().st_mode & 0o777 == 0o600
    assert reader not in auth.read_text()
    service = Service(tmp_path, [str(store), "--store", f"secret={secret}", "--auth", str(auth)])
    try:
        for method, path, body, scope in _ROUTES:
            how = (method, path, body)
            assert _call(service, how, None).status_code == 401, path
            assert _call(service, how, "lmg_wrong").status_code == 401, path
            if scope != "read":
                assert _call(service, how, reader).status_code == 403, path
            hidden = _call(service, how, admin, "secret")
            unknown = _call(service, how, admin, "nowhere")
            assert hidden.status_code == unknown.status_code == 404, path
            assert hidden.content == unknown.content
            assert b"secret" not in hidden.content and str(tmp_path).encode() not in hidden.content
        assert _events(secret) == 1
        assert service.http.get("/metrics").status_code == 401
        metrics = service.http.get("/metrics", headers={"Authorization": f"Bearer {admin}"})
        assert "lmg_fold_lag_events" in metrics.text
    finally:
        assert service.stop() == 0


def test_no_auth_refuses_a_public_address(store: Path) -> None:
    result = subprocess.run(
        [str(LMG), "serve", str(store), "--host", "0.0.0.0", "--port", "0"],
        capture_output=True, text=True, timeout=WAIT_S, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "--auth" in result.stderr and "Traceback" not in result.stderr


def test_a_store_that_cannot_be_served_is_said_in_one_line(store: Path, tmp_path: Path) -> None:
    """A database of an older schema (or any store that fails to open) stops `lmg serve`
    with the one line every other command prints, naming the store when it serves several;
    it was a traceback and exit status 3."""
    with projections.MemoryGraph.open(store) as graph:
        graph.rows("SELECT 1")
    database = store / projections.DATABASE_FILE
    with duckdb.connect(str(database)) as con:
        con.execute("UPDATE lmg_meta SET value = '3' WHERE key = 'schema_version'")
    result = subprocess.run(
        [str(LMG), "serve", str(store), "--port", "0"],
        capture_output=True, text=True, timeout=WAIT_S, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    refused = (
        "the projections database has schema version 3, this code writes "
        f"{projections.SCHEMA_VERSION}: rebuild it (lmg project --rebuild)"
    )
    assert result.stderr.strip().splitlines() == [f"Error: {refused}"]
    assert not (store / "service.json").exists()
    other = tmp_path / "other"
    eventlog.open(other).close()
    result = subprocess.run(
        [str(LMG), "serve", str(other), "--store", f"team={store}", "--port", "0"],
        capture_output=True, text=True, timeout=WAIT_S, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [f"Error: store 'team': {refused}"]
    assert not (other / "service.json").exists()


def test_lmg_sql_and_direct_appends_go_through_the_service(served: Service, store: Path) -> None:
    advert = json.loads((store / "service.json").read_text())
    assert advert["url"] == served.url and (store / "service.json").stat().st_mode & 0o077 == 0
    subprocess.run(
        [str(LMG), "append", str(store)], input=b'{"type": "session.created"}', check=True
    )
    deadline = time.monotonic() + WAIT_S
    while True:  # folded by the service, which polls the log's length
        began = time.monotonic()
        out = subprocess.run(
            [str(LMG), "sql", str(store), "SELECT count(*) AS n FROM sessions", "--format", "json"],
            capture_output=True, text=True, check=True, timeout=WAIT_S,
        )  # fmt: skip
        assert time.monotonic() - began < 5  # no wait for the database file
        if json.loads(out.stdout) == {"n": 2}:
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_lmg_replay_sql_goes_through_the_service(served: Service, store: Path) -> None:
    out = subprocess.run(
        [str(LMG), "replay", str(store), "--at", "0", "--format", "json",
         "--sql", "SELECT count(*) AS n FROM sessions"],
        capture_output=True, text=True, check=True, timeout=WAIT_S,
    )  # fmt: skip
    assert json.loads(out.stdout) == {"n": 1}
    assert f"through the service at {served.url}" in out.stderr
    lines = [json.loads(line) for line in served.child.stderr().splitlines() if line[:1] == "{"]
    assert any(line["route"] == "/v1/stores/{name}/sql" for line in lines)


def test_projections_connect_on_a_served_store_names_the_service(
    served: Service, store: Path
) -> None:
    """A DuckDB connection cannot come over HTTP: instead of waiting for the database the
    service holds, `connect` says at once where to read through."""
    began = time.monotonic()
    with (
        pytest.raises(projections.DatabaseBusy, match=re.escape(served.url)),
        projections.connect(store, wait_s=30),
    ):
        pass
    assert time.monotonic() - began < 5


def test_sigterm_drains_folds_to_the_end_and_exits_0(tmp_path: Path, store: Path) -> None:
    service = Service(tmp_path, [str(store)])
    results: list[int] = []

    def append() -> None:
        with httpx.Client(base_url=service.url) as http:
            for _ in range(200):
                try:
                    answer = http.post(
                        "/v1/stores/default/events", json={"type": "session.created"}
                    )
                except httpx.TransportError:
                    return
                if answer.status_code != 200:
                    assert answer.status_code == 503, answer.text
                    return
                results.append(answer.json()["lsn"])

    threads = [threading.Thread(target=append) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    assert service.stop() == 0
    for t in threads:
        t.join()
    assert not (store / "service.json").exists()
    with eventlog.open(store, readonly=True) as log:
        stored = log.next_lsn()
    assert set(results) <= set(range(stored))
    with projections.connect(store) as con:
        assert projections.checkpoint(con) == stored - 1


@pytest.mark.slow
def test_kill_9_under_concurrent_appenders_loses_no_acknowledged_event(
    tmp_path: Path, store: Path
) -> None:
    acknowledged: dict[str, str] = {}  # id -> the text it was sent with
    for round_ in range(3):
        service = Service(tmp_path, [str(store)], name=f"serve{round_}")
        halt = threading.Event()

        def append(
            worker: int, url: str = service.url, n: int = round_, halt: threading.Event = halt
        ) -> None:
            with httpx.Client(base_url=url, timeout=WAIT_S) as http:
                for i in range(10_000):
                    if halt.is_set():
                        return
                    text = f"round {n} worker {worker} event {i} é"
                    body = {"type": "session.created", "metadata": {"text": text}}
                    try:
                        answer = http.post("/v1/stores/default/events", json=body)
                    except httpx.TransportError:
                        return
                    if answer.status_code == 200:
                        acknowledged[answer.json()["ids"][0]] = text

        threads = [threading.Thread(target=append, args=(w,)) for w in range(16)]
        before = len(acknowledged)
        for t in threads:
            t.start()
        # Until this round's appends flow (a fixed second was sometimes spent starting them
        # on a loaded machine, so the kill landed before any append), then at once.
        deadline = time.monotonic() + WAIT_S
        while len(acknowledged) < before + 64 and time.monotonic() < deadline:
            time.sleep(0.01)
        service.child.kill()  # SIGKILL, mid-append
        halt.set()
        for t in threads:
            t.join()
    with eventlog.open(store, readonly=True) as log:
        stored = {
            str(r.event.id): r.event.metadata["text"]  # type: ignore[attr-defined]
            for r in log.read()
            if r.lsn > 0
        }
    assert acknowledged and all(stored.get(k) == v for k, v in acknowledged.items())
    service = Service(tmp_path, [str(store)], name="serve-last")  # resumes folding
    try:
        answer = service.http.post(
            "/v1/stores/default/sql", json={"query": "SELECT count(*) FROM sessions"}
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["rows"][0][0] == len(stored) + 1
    finally:
        assert service.stop() == 0


def test_metrics_measure_group_commits_and_their_fsyncs(served: Service) -> None:
    """16 appends in flight at once share group commits; each group's fsync is timed."""
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(
            lambda _: served.http.post("/v1/stores/default/events", json=_SESSION), range(32)
        ))  # fmt: skip
    assert all(a.status_code == 200 for a in answers)
    text = served.http.get("/metrics").text

    def value(name: str) -> float:
        found = re.search(rf'^{name}{{store="default"}} (\S+)$', text, flags=re.M)
        assert found is not None, name
        return float(found.group(1))

    groups, requests = (
        value("lmg_commit_group_requests_count"),
        value("lmg_commit_group_requests_sum"),
    )
    assert requests == 32 and 1 <= groups <= 32
    assert value("lmg_fsync_seconds_count") == groups and value("lmg_fsync_seconds_sum") > 0


def test_concurrent_appends_each_get_their_access_log_line_and_counts(served: Service) -> None:
    """Lines are written once per turn of the event loop, many together: none is lost or
    merged, and the counters (children looked up once) count every request."""
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(
            lambda _: served.http.post("/v1/stores/default/events", json=[_SESSION] * 2),
            range(32),
        ))  # fmt: skip
    assert all(a.status_code == 200 for a in answers)

    def appends() -> list[dict[str, object]]:
        lines = [json.loads(x) for x in served.child.stderr().splitlines() if x[:1] == "{"]
        return [x for x in lines if x["route"] == "/v1/stores/{name}/events"]

    served.child.wait_for(lambda: len(appends()) >= 32, "32 access-log lines")
    assert [(x["method"], x["status"]) for x in appends()] == [("POST", 200)] * 32
    text = served.http.get("/metrics").text
    assert 'lmg_appends_total{store="default"} 32.0' in text
    assert 'lmg_events_appended_total{store="default",type="session.created"} 64.0' in text


def test_an_erasure_reaches_the_database_the_service_holds(served: Service, store: Path) -> None:
    """The service holds its database for life: at an erasure it must drop it, fold anew and
    answer from the new file, or its reads (and the old file) would keep the erased text."""
    secret = "the-secret-words-7f3a"
    created = served.http.post("/v1/stores/default/events", json={"type": "session.created"})
    session = created.json()["ids"][0]
    body = {"type": "prompt.added", "session_id": session, "content": secret}
    assert served.http.post("/v1/stores/default/events", json=body).status_code < 300
    query = {"query": "SELECT content FROM prompts"}
    assert served.http.post("/v1/stores/default/sql", json=query).json()["rows"] == [[secret]]
    erased = subprocess.run(
        [str(LMG), "erase", str(store), "--session", session, "--wait", "30"],
        capture_output=True, text=True, timeout=WAIT_S * 4, check=False,
    )  # fmt: skip
    assert erased.returncode == 0, erased.stderr
    deadline = time.monotonic() + WAIT_S
    answer = served.http.post("/v1/stores/default/sql", json=query)
    while answer.status_code == 503 and time.monotonic() < deadline:  # `busy`: refolding
        time.sleep(0.1)
        answer = served.http.post("/v1/stores/default/sql", json=query)
    assert answer.status_code == 200, answer.text
    (content,) = answer.json()["rows"][0]
    assert content.startswith("[erased ")
    assert secret.encode() not in (store / projections.DATABASE_FILE).read_bytes()


# -- attacks from a web browser on this host (no auth: loopback is the only protection) ------


def test_a_web_page_of_another_origin_may_not_write_nor_read(served: Service, store: Path) -> None:
    """Without --auth, any page the person's browser showed could append, erase and fork:
    a cross-site form, or `fetch` with `mode: "no-cors"`, sends a text/plain POST without a
    preflight, the routes take a body of any content type, and no token is asked for. A
    domain pointed at 127.0.0.1 (DNS rebinding) was the service's own origin to the browser,
    and read every store. Both are refused now; curl and the clients send no Origin."""
    port = served.url.rsplit(":", 1)[1]
    plain = {"Content-Type": "text/plain"}
    for origin in ("http://evil.example", "null", f"http://127.0.0.1:{int(port) + 1}"):
        cross = plain | {"Origin": origin}
        appended = served.http.post("/v1/stores/default/events", json=_SESSION, headers=cross)
        erased = served.http.post(
            "/v1/stores/default/erase", content=b'{"before": "2100-01-01"}', headers=cross
        )
        forked = served.http.post(
            "/v1/stores/default/fork", content=b'{"at": 0, "name": "pwned"}', headers=cross
        )
        for answer in (appended, erased, forked):
            assert answer.status_code == 403, answer.text
            assert answer.json()["error"]["code"] == "cross_origin"
    rebound = served.http.get("/v1/stores/default/sessions", headers={"Host": f"evil:{port}"})
    assert rebound.status_code == 403 and rebound.json()["error"]["code"] == "bad_host"
    assert not (store.parent / "pwned").exists()
    assert _events(store) == 1
    # the web view's own requests (same origin) and a loopback Host by name still pass
    own = {"Origin": served.url}
    assert served.http.post("/v1/stores/default/events", json=_SESSION, headers=own).is_success
    assert served.http.get("/v1/stores", headers={"Host": f"localhost:{port}"}).is_success
    assert _events(store) == 2


def test_a_request_with_two_host_headers_is_refused(served: Service) -> None:
    """The browser guard read the last ``Host``, Starlette the first: ``evil`` then
    ``127.0.0.1`` passed the guard. No client sends two (RFC 9110: answer 400)."""
    port = int(served.url.rsplit(":", 1)[1])
    for headers in (
        f"Host: evil:{port}\r\nHost: 127.0.0.1:{port}",
        f"Host: 127.0.0.1:{port}\r\nOrigin: http://evil\r\nOrigin: {served.url}",
    ):
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as raw:
            raw.sendall(
                f"GET /v1/stores HTTP/1.1\r\n{headers}\r\nConnection: close\r\n\r\n".encode()
            )
            answer = b"".join(iter(lambda: raw.recv(65536), b"")).decode()
        assert answer.startswith("HTTP/1.1 400 "), answer[:200]
        assert '"code":"bad_request"' in answer
    assert served.http.get("/v1/stores").is_success


def test_restore_force_refuses_a_store_lmg_serve_holds(
    served: Service, store: Path, tmp_path: Path
) -> None:
    """`lmg restore --force` swapped a backup in under a running service, which went on
    appending into the store it replaced: the appends it acknowledged were lost. Now it is
    refused in one line naming the service, and the store and the service go on."""
    served.http.post("/v1/stores/default/events", json={"type": "session.created"})
    eventlog.backup(store, tmp_path / "bk")
    refused = subprocess.run(
        [LMG, "restore", str(tmp_path / "bk"), str(store), "--force"],
        check=False, capture_output=True, text=True, timeout=WAIT_S,
    )  # fmt: skip
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr.startswith(f"Error: {store} is served by lmg serve (pid ")
    assert refused.stderr.endswith("stop it first, or the appends it acknowledges go into the"
                                   " store this replaces; nothing was restored\n")  # fmt: skip
    answer = served.http.post("/v1/stores/default/events", json={"type": "session.created"})
    assert answer.status_code == 200 and _events(store) == answer.json()["lsn"] + 1
    assert not list(tmp_path.glob(f".{store.name}.*"))
