"""Appends coalesced over HTTP: the batch route (``POST /v1/stores/{name}/events:batch``) on a
real `lmg serve`, and the async client that sends its callers' concurrent appends through it.
Each append keeps its own outcome; requests are counted at the service (its metrics)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import http.server
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import eventlog
from eventlog import events
from tests._processes import WAIT_S

from .test_service import Service, _events, _token

# a real server process, serving a store of one session (conftest.py)
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_session")]

_BATCH = "/v1/stores/default/events:batch"
_SINGLE = "/v1/stores/{name}/events"
_BATCHES = "/v1/stores/{name}/events:batch"
_SESSION = {"type": "session.created"}
_ROOT = Path(__file__).parents[2]


def _metric(service: Service, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels` (0 if none)."""
    total = 0.0
    for found in re.finditer(rf"^{name}{{(.*)}} (\S+)$", service.http.get("/metrics").text,
                             re.MULTILINE):  # fmt: skip
        have = dict(re.findall(r'(\w+)="([^"]*)"', found.group(1)))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(found.group(2))
    return total


def _requests(service: Service, route: str) -> int:
    return int(_metric(service, "lmg_request_seconds_count", route=route, method="POST"))


def _groups(service: Service) -> tuple[int, int]:
    """Group commits so far, and the append requests they held."""
    count = _metric(service, "lmg_commit_group_requests_count")
    return int(count), int(_metric(service, "lmg_commit_group_requests_sum"))


def _post(service: Service, appends: list[Any], **kw: Any) -> httpx.Response:
    return service.http.post(_BATCH, json={"appends": appends}, **kw)


# -- the route ---------------------------------------------------------------------------------


def test_a_batch_commits_each_append_alone_in_one_group(served: Service, store: Path) -> None:
    """A conflict, bad input and a reused key each refuse their own append only, with the
    status and error body the append route gives; the others are stored, in one group."""
    first = _post(served, [{"events": [_SESSION], "idempotency_key": "k1"}]).json()["appends"]
    assert first[0]["status"] == 200 and first[0]["lsn"] == 1
    groups, held = _groups(served)
    answer = _post(
        served,
        [
            [_SESSION, _SESSION],  # all-or-nothing alone: two events, LSNs 2 and 3
            {"events": [_SESSION], "expect_store_lsn": 0},  # stale: the log is at 3 by then
            {"type": "session.exploded"},
            {"events": [_SESSION, _SESSION], "idempotency_key": "k1"},  # other events
            {"events": [_SESSION], "idempotency_key": "k1"},  # the first's retry
            {"events": [_SESSION], "expect_store_lsn": 3},
        ],
        headers={"Prefer": "return=representation"},
    )
    assert answer.status_code == 200, answer.text
    out = answer.json()["appends"]
    assert [o["status"] for o in out] == [200, 409, 422, 409, 200, 200]
    assert (out[0]["lsn"], out[0]["count"], out[5]["lsn"]) == (2, 2, 4)
    assert [e["lsn"] for e in out[0]["events"]] == [2, 3]
    assert out[1]["error"]["code"] == "append_conflict"
    assert out[1]["error"]["details"] == {"scope": "the store", "expected": 0, "actual": 3}
    assert out[2]["error"]["code"] == "invalid_event" and "\n" not in out[2]["error"]["message"]
    assert out[3]["error"]["code"] == "idempotency_key_reused"
    assert out[4]["duplicate"] and out[4]["ids"] == first[0]["ids"]
    assert _events(store) == 5
    assert _groups(served) == (groups + 1, held + 5)  # the five the log saw: one fsync
    assert _metric(served, "lmg_appends_total") == 4  # three acknowledged here, one before


_REFUSED = {
    "too many": (["--limit", "max_batch_appends=2"], {"appends": [_SESSION] * 3}, 413),
    "too large": ([], {"appends": [{**_SESSION, "metadata": {"a": "x" * 70_000}}]}, 413),
    "no appends": ([], {"appends": []}, 422),
    "not a batch": ([], [_SESSION], 422),
    "an unknown field": ([], {"appends": [_SESSION], "idempotency_key": "k"}, 422),
}


@pytest.mark.parametrize(("args", "body", "status"), _REFUSED.values(), ids=list(_REFUSED))
def test_a_batch_past_a_limit_or_malformed_is_refused_whole(
    tmp_path: Path, store: Path, args: list[str], body: Any, status: int
) -> None:
    service = Service(tmp_path, [str(store), "--limit", "max_body_bytes=65536", *args])
    try:
        answer = service.http.post(_BATCH, json=body)
        assert answer.status_code == status, answer.text
        message = answer.json()["error"]["message"]
        assert message and "\n" not in message and str(tmp_path) not in message
        assert _events(store) == 1
    finally:
        assert service.stop() == 0


@pytest.mark.parametrize(
    "shared",
    [{"headers": {"Idempotency-Key": "k"}}, {"params": {"expect_store_lsn": "0"}}],
    ids=["Idempotency-Key", "expect_store_lsn"],
)
def test_a_batch_refuses_one_key_or_expected_lsn_for_all(
    served: Service, store: Path, shared: dict[str, Any]
) -> None:
    answer = _post(served, [_SESSION, _SESSION], **shared)
    assert answer.status_code == 422 and "its own" in answer.json()["error"]["message"]
    assert _events(store) == 1


def test_the_batch_route_checks_its_token(tmp_path: Path, store: Path) -> None:
    secret = tmp_path / "secret-store"
    shutil.copytree(store, secret)
    auth = tmp_path / "tokens.json"
    reader = _token(auth, "reader", ["read"], ["default"])
    writer = _token(auth, "writer", ["append"], ["default"])
    service = Service(tmp_path, [str(store), "--store", f"secret={secret}", "--auth", str(auth)])
    body = {"appends": [_SESSION]}

    def post(token: str | None, name: str = "default") -> httpx.Response:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return service.http.post(f"/v1/stores/{name}/events:batch", json=body, headers=headers)

    try:
        assert post(None).status_code == post("lmg_wrong").status_code == 401
        assert post(reader).status_code == 403
        hidden, unknown = post(writer, "secret"), post(writer, "nowhere")
        assert hidden.status_code == unknown.status_code == 404
        assert hidden.content == unknown.content and b"secret" not in hidden.content
        assert _events(store) == _events(secret) == 1
        assert post(writer).json()["appends"][0]["status"] == 200
        assert _events(store) == 2 and _events(secret) == 1
    finally:
        assert service.stop() == 0


_DEEP = b'{"a":' * 100 + b"1" + b"}" * 100
_HOSTILE_ITEMS = [
    1,
    "x",
    None,
    True,
    [[_SESSION]],  # not an event, nor a list or an object of events
    {**_SESSION, "metadata": {"n": 10**40}},  # past 64 bits
    {"events": [_SESSION], "expect_store_lsn": True},
    {"events": [_SESSION], "idempotency_key": 5},
    {"events": []},
]
_HOSTILE_BODIES = [
    b'{"appends":[' + b"[" * 5000 + b"]" * 5000 + b"]}",  # nested too deeply
    b'{"appends":[{"type":"session.created","metadata":{"a":"\xff"}}]}',  # not UTF-8
    b'{"appends":[{"type":"session.created","metadata":{"a":"\\ud800"}}]}',  # a lone surrogate
    b'{"appends":[{"type":"session.created"}]} trailing',
    b'{"appends":null}',
]


def test_hostile_batches_are_refused_and_the_service_keeps_serving(
    served: Service, store: Path
) -> None:
    """Items of the wrong type, nested too deeply, with numbers out of range: each refused
    alone (422, one line); bodies not UTF-8, not JSON or not a batch: refused whole. Nothing
    is stored, and the service answers on."""
    raw = b'{"appends":[{"type":"session.created","metadata":' + _DEEP + b"},"
    raw += b'{"type":"session.created","metadata":{"n":1e999}}]}'  # past a float's range
    answer = _post(served, _HOSTILE_ITEMS)
    outcomes = answer.json()["appends"] + served.http.post(_BATCH, content=raw).json()["appends"]
    assert len(outcomes) == len(_HOSTILE_ITEMS) + 2
    assert all(o["status"] == 422 and "\n" not in o["error"]["message"] for o in outcomes)
    for body in _HOSTILE_BODIES:
        refused = served.http.post(_BATCH, content=body)
        assert refused.status_code == 422, (body[:60], refused.text)
        assert "\n" not in refused.json()["error"]["message"]
    assert _events(store) == 1
    assert served.http.get("/healthz").status_code == 200


# -- the async client --------------------------------------------------------------------------


def test_concurrent_appends_travel_in_fewer_requests(served: Service, store: Path) -> None:
    """64 concurrent appends on one client: a few requests, each append its own LSN; with
    ``coalesce=False``, one request each."""

    async def main(coalesce: bool) -> list[uuid.UUID]:
        async with await eventlog.connect_async(served.url, coalesce=coalesce) as log:
            session = await log.create_session()
            return await asyncio.gather(*(log.add_prompt(session.id, f"q{i}") for i in range(64)))

    prompts = asyncio.run(main(True))
    singles, batches = _requests(served, _SINGLE), _requests(served, _BATCHES)
    assert singles + batches <= 1 + 4, (singles, batches)  # the session, then a few
    with eventlog.open(store, readonly=True) as log:
        stored = [getattr(r.event, "id", None) for r in log.read()]
    assert len(stored) == 66 and set(stored[2:]) == set(prompts)  # each once, its own LSN
    asyncio.run(main(False))
    assert _requests(served, _SINGLE) >= singles + 65  # eventually counted: at least
    assert _requests(served, _BATCHES) == batches


def test_a_conflicting_append_fails_alone_in_a_coalesced_request(served: Service) -> None:
    async def main() -> tuple[list[Any], int | None]:
        async with await eventlog.connect_async(served.url) as log:
            session = await log.create_session()
            calls = [log.add_prompt(session.id, f"q{i}") for i in range(10)]
            calls.insert(5, log.add_prompt(session.id, "stale", expect_session_lsn=0))
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
            return outcomes, await log.last_lsn(session.id)

    before = _requests(served, _BATCHES)
    outcomes, last = asyncio.run(main())
    conflict = outcomes.pop(5)
    assert isinstance(conflict, eventlog.AppendConflict) and conflict.expected == 0
    assert all(isinstance(o, uuid.UUID) for o in outcomes)
    assert last == 11  # the session at 1, ten prompts after it
    assert _requests(served, _BATCHES) > before


def test_an_idempotent_retry_of_coalesced_appends_adds_nothing(
    served: Service, store: Path
) -> None:
    async def main() -> tuple[list[uuid.UUID], list[uuid.UUID]]:
        async with await eventlog.connect_async(served.url) as log:
            session = await log.create_session(idempotency_key="s")

            def turn() -> Any:
                return asyncio.gather(
                    *(log.add_prompt(session.id, f"q{i}", idempotency_key=f"p{i}")
                      for i in range(20))
                )  # fmt: skip

            return await turn(), await turn()

    first, again = asyncio.run(main())
    assert first == again and len(set(first)) == 20
    assert _events(store) == 22


def test_cancelling_one_caller_loses_and_duplicates_no_other_append(
    served: Service, store: Path
) -> None:
    """A caller cancelled before its append is sent leaves it unsent; the appends it would
    have travelled with are stored, each once."""

    async def main() -> list[Any]:
        async with await eventlog.connect_async(served.url) as log:
            session = await log.create_session()
            tasks = [asyncio.create_task(log.add_prompt(session.id, f"q{i}")) for i in range(30)]
            await asyncio.sleep(0)  # every task has queued its append; no flight has left
            tasks[7].cancel()
            return await asyncio.gather(*tasks, return_exceptions=True)

    outcomes = asyncio.run(main())
    assert isinstance(outcomes.pop(7), asyncio.CancelledError)
    with eventlog.open(store, readonly=True) as log:
        contents = [getattr(r.event, "content", None) for r in log.read()]
    assert sorted(c for c in contents if c) == sorted(f"q{i}" for i in range(30) if i != 7)
    assert all(isinstance(o, uuid.UUID) for o in outcomes)


def test_a_transport_failure_fails_exactly_the_appends_it_carried() -> None:
    """No service: each of the coalesced appends raises its own `ServiceError` (status 0,
    outcome unknown), as it would alone."""

    async def main() -> list[Any]:
        async with await eventlog.connect_async("http://127.0.0.1:9") as log:
            calls = [log.create_session(idempotency_key=f"k{i}") for i in range(10)]
            return list(await asyncio.gather(*calls, return_exceptions=True))

    outcomes = asyncio.run(asyncio.wait_for(main(), WAIT_S))
    assert all(isinstance(o, eventlog.ServiceError) and o.status == 0 for o in outcomes)
    assert all("retry it with its idempotency_key" in str(o) for o in outcomes)
    assert len({id(o) for o in outcomes}) == 10


def test_a_batch_too_large_for_the_service_goes_append_by_append(
    served: Service, store: Path
) -> None:
    """The service takes 64 KiB bodies here, less than the client's batches: each append
    still gets its own outcome (the one too large alone is refused alone, 413)."""

    async def main() -> list[Any]:
        async with await eventlog.connect_async(served.url) as log:
            session = await log.create_session()
            calls = [log.add_prompt(session.id, f"{i}" * 20_000) for i in range(8)]
            calls.append(log.add_prompt(session.id, "x" * 70_000))
            return list(await asyncio.gather(*calls, return_exceptions=True))

    outcomes = asyncio.run(main())
    refused = outcomes.pop()
    assert isinstance(refused, eventlog.ServiceError) and refused.status == 413
    assert all(isinstance(o, uuid.UUID) for o in outcomes), outcomes
    assert _events(store) == 10


def test_closing_the_client_answers_the_appends_it_queued(served: Service, store: Path) -> None:
    async def main() -> list[Any]:
        log = await eventlog.connect_async(served.url)
        tasks = [asyncio.create_task(log.create_session()) for _ in range(10)]
        await asyncio.sleep(0)
        await log.close()
        with pytest.raises(eventlog.LogClosed):
            await log.create_session()
        return await asyncio.gather(*tasks, return_exceptions=True)

    outcomes = asyncio.run(main())
    assert all(isinstance(o, events.SessionCreated) for o in outcomes), outcomes
    assert _events(store) == 11


# -- the sync client ---------------------------------------------------------------------------


def test_threads_appending_on_one_sync_client_share_requests(served: Service, store: Path) -> None:
    """16 threads, 20 appends each, on one `eventlog.connect` client: every append stored
    once with its own LSN, a conflict refused to its own thread alone, and fewer requests
    than appends; with ``coalesce=False``, one request each."""

    def run(coalesce: bool) -> tuple[list[uuid.UUID], list[Exception]]:
        with eventlog.connect(served.url, coalesce=coalesce) as log:
            session = log.create_session().id
            made: list[uuid.UUID] = []
            refused: list[Exception] = []

            def agent(k: int) -> None:
                for i in range(20):
                    made.append(log.add_prompt(session, f"t{k}-{i}"))
                try:
                    log.add_prompt(session, "stale", expect_session_lsn=0)
                except eventlog.AppendConflict as exc:
                    refused.append(exc)

            threads = [threading.Thread(target=agent, args=(k,)) for k in range(16)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(WAIT_S)
            return made, refused

    made, refused = run(True)
    singles, batches = _requests(served, _SINGLE), _requests(served, _BATCHES)
    assert len(set(made)) == 320 and len(refused) == 16
    assert batches > 0 and singles + batches < 1 + 336, (singles, batches)
    with eventlog.open(store, readonly=True) as log:
        stored = [getattr(r.event, "id", None) for r in log.read()]
    assert len(stored) == 322 and set(stored[2:]) == set(made)
    made, refused = run(False)
    assert len(set(made)) == 320 and len(refused) == 16
    assert _requests(served, _SINGLE) >= singles + 1 + 336
    assert _requests(served, _BATCHES) == batches


def test_a_sync_batch_too_large_for_the_service_goes_append_by_append(
    served: Service, store: Path
) -> None:
    with eventlog.connect(served.url) as log:
        session = log.create_session().id
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(log.add_prompt, session, f"{i}" * 30_000) for i in range(16)]
            made = [f.result(WAIT_S) for f in futures]
    assert len(set(made)) == 16 and _events(store) == 18
    refused = _metric(served, "lmg_request_seconds_count", route=_BATCHES, status="413")
    assert refused >= 1  # the threads' appends met in a batch, which went again one by one


# -- both clients, and the service's limit or age ---------------------------------------------


def _refused_batches(service: Service) -> int:
    return int(_metric(service, "lmg_request_seconds_count", route=_BATCHES, status="413"))


def test_an_async_client_adopts_the_batch_limit_the_service_states(
    tmp_path: Path, store: Path
) -> None:
    """A service taking 3 appends a batch states its limit in the 413: the client's next
    batches hold 3 at most, and the refused one goes again in batches of 3. Before, each
    refusal only halved the bound, and batches of 64, 32, 16, 8 and 4 were refused in turn."""
    service = Service(tmp_path, [str(store), "--limit", "max_batch_appends=3"])
    try:
        refused = _post(service, [_SESSION] * 4)
        assert refused.status_code == 413
        assert refused.json()["error"]["details"] == {"limit": 3}

        async def main() -> list[uuid.UUID]:
            async with await eventlog.connect_async(service.url) as log:
                session = (await log.create_session()).id
                made: list[uuid.UUID] = []
                for turn in range(5):
                    calls = (log.add_prompt(session, f"{turn}-{i}") for i in range(64))
                    made += await asyncio.gather(*calls)
                return made

        before = _refused_batches(service)
        made = asyncio.run(main())
        assert len(set(made)) == 320 and _events(store) == 322
        assert _refused_batches(service) - before <= eventlog.RemoteLog.FLIGHTS
        taken = _metric(service, "lmg_request_seconds_count", route=_BATCHES, status="200")
        assert taken >= 5 * 21  # each turn's 64 in batches of 3 (and one alone)
    finally:
        assert service.stop() == 0


def test_a_sync_client_adopts_the_batch_limit_the_service_states(
    tmp_path: Path, store: Path
) -> None:
    """As for the async client: 64 threads appending, at most one refused batch a flight."""
    service = Service(tmp_path, [str(store), "--limit", "max_batch_appends=2"])
    try:
        with eventlog.connect(service.url) as log:
            session = log.create_session().id
            with concurrent.futures.ThreadPoolExecutor(64) as pool:
                futures = [pool.submit(log.add_prompt, session, f"{i}") for i in range(640)]
                made = [f.result(WAIT_S) for f in futures]
        assert len(set(made)) == 640 and _events(store) == 642
        assert _refused_batches(service) <= eventlog.RemoteLog.FLIGHTS
    finally:
        assert service.stop() == 0


class _Older:
    """A stand-in for a service older than the batch route: it passes every request on to a
    real service but answers the batch route as Starlette answers a route it does not have
    (`status`, a plain-text body), and counts the batches it refused."""

    def __init__(self, service: Service, status: int) -> None:
        upstream = httpx.Client(base_url=service.url, timeout=WAIT_S)
        self.refused = 0
        older = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path.endswith(":batch"):
                    older.refused += 1
                    self._answer(status, "text/plain", b"Not Found")
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                answer = upstream.post(self.path, content=body, headers=headers)
                self._answer(answer.status_code, answer.headers["content-type"], answer.content)

            def _answer(self, code: int, kind: str, content: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, *args: object) -> None:
                pass  # quiet

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._upstream = upstream
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._upstream.close()


@pytest.mark.parametrize("status", [404, 405])
def test_both_clients_append_one_by_one_to_a_service_without_the_batch_route(
    served: Service, store: Path, status: int
) -> None:
    """A service older than the batch route answers it 404 (or 405): the refused batch
    goes again append by append, and so does every later append of that client, each with
    its own outcome. Before, every append of a coalesced batch failed with that 404."""
    older = _Older(served, status)

    async def main() -> list[uuid.UUID]:
        async with await eventlog.connect_async(older.url) as log:
            session = (await log.create_session()).id
            made: list[uuid.UUID] = []
            for turn in range(3):
                made += await asyncio.gather(
                    *(log.add_prompt(session, f"{turn}-{i}") for i in range(20))
                )
            return made

    try:
        made = asyncio.run(main())
        assert len(set(made)) == 60 and older.refused <= eventlog.AsyncRemoteLog.FLIGHTS
        with eventlog.connect(older.url) as log:
            session = log.create_session().id
            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                futures = [pool.submit(log.add_prompt, session, f"{i}") for i in range(160)]
                made = [f.result(WAIT_S) for f in futures]
        assert len(set(made)) == 160 and older.refused <= 2 * eventlog.AsyncRemoteLog.FLIGHTS
    finally:
        older.close()
    assert _events(store) == 1 + 61 + 161
    assert _requests(served, _BATCHES) == 0


# -- the sync client when a request gets no answer ---------------------------------------------


class _Silent:
    """A stand-in for a service that takes each request and answers none: every connection
    is held until `drop` cuts it. Only a stand-in can hold a request for as long as a test
    needs one in flight."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.held: list[socket.socket] = []
        self.received = threading.Semaphore(0)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self._listener.accept()
                threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn: socket.socket) -> None:
        if conn.recv(65536):
            self.held.append(conn)
            self.received.release()

    def wait(self, requests: int) -> None:
        """Until `requests` more requests have arrived."""
        for _ in range(requests):
            assert self.received.acquire(timeout=WAIT_S)

    def drop(self, n: int) -> None:
        """Cut the `n`-th request's connection, unanswered."""
        self.held[n].shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._listener.close()
        for conn in self.held:
            conn.close()


def _wait_queued(log: eventlog.RemoteLog, n: int) -> None:
    """Until `n` appends wait in `log`'s queue (a loaded machine may take its time)."""
    coalescer = log._coalescer
    assert coalescer is not None
    deadline = time.monotonic() + WAIT_S
    while len(coalescer._queue) < n:
        assert time.monotonic() < deadline, "the appends never queued"
        time.sleep(0.01)


def _queued_behind_two_flights(
    log: eventlog.RemoteLog,
    service: _Silent,
    first: Callable[[], Any],
    *,
    ahead: int = 1,
    before_drop: threading.Event | None = None,
) -> tuple[list[Any], list[threading.Thread]]:
    """Two threads' appends in flight (held by `service`), `first` called in this thread
    (queueing `ahead` appends behind them), then two more threads' appends; then the first
    flight is cut (after `before_drop`, if given): their outcomes, and their threads."""
    outcomes: list[Any] = [None] * 4

    def agent(n: int) -> None:
        try:
            outcomes[n] = log.create_session(idempotency_key=f"k{n}")
        except BaseException as exc:
            outcomes[n] = exc

    threads = [threading.Thread(target=agent, args=(n,), daemon=True) for n in range(4)]
    for thread in threads[:2]:
        thread.start()
    service.wait(2)

    def later() -> None:
        _wait_queued(log, ahead)  # `first` has queued behind the two flights
        for thread in threads[2:]:
            thread.start()
        _wait_queued(log, ahead + 2)  # and so have theirs: the flight freed takes them all
        if before_drop is not None:
            assert before_drop.wait(WAIT_S)
        service.drop(0)

    threading.Thread(target=later, daemon=True).start()
    first()
    return outcomes, threads


def _interrupt_a_leader() -> None:
    """The main thread carries a request with two other threads' appends and is interrupted
    (SIGINT) while it waits for the answer; prints what each of them got."""
    # A job started in the background by a shell has SIGINT ignored, and Python then installs
    # no handler for it: install Python's, or the signal is lost and the request times out.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    service = _Silent()
    log = eventlog.connect(service.url)

    def interrupt() -> None:
        service.wait(1)  # the main thread's request, carrying the others' appends
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    def append_and_be_interrupted() -> None:
        threading.Thread(target=interrupt, daemon=True).start()
        try:
            log.create_session(idempotency_key="main")
        except KeyboardInterrupt:
            print("main: KeyboardInterrupt")

    outcomes, threads = _queued_behind_two_flights(log, service, append_and_be_interrupted)
    for thread in threads[2:]:
        thread.join(WAIT_S)
    for outcome in outcomes[2:]:
        print(f"{type(outcome).__name__}: {getattr(outcome, 'code', '')}")
    service.close()


def test_an_interrupted_thread_keeps_its_interrupt_from_the_appends_it_carried() -> None:
    """Ctrl-C in a thread carrying other threads' appends is raised in that thread only;
    the others get the error of a request with no answer (outcome unknown, retry with the
    key), not a KeyboardInterrupt raised in a thread nobody interrupted."""
    script = "import tests.replay.test_service_batch as t; t._interrupt_a_leader()"
    args = [sys.executable, "-c", script]
    run = subprocess.run(
        args, check=False, capture_output=True, text=True, timeout=WAIT_S, cwd=_ROOT
    )
    assert run.stdout.splitlines() == [
        "main: KeyboardInterrupt",
        "ServiceError: unreachable",
        "ServiceError: unreachable",
    ], run.stdout + run.stderr


def test_appends_queued_when_the_sync_client_closes_fail_as_closed() -> None:
    """Appends still queued when `close` is called are refused with `LogClosed`, as an
    append alone on a closed client is, not with the transport's own error."""
    service = _Silent()
    log = eventlog.connect(service.url)

    closed = threading.Event()

    def close() -> None:
        _wait_queued(log, 2)  # two appends queued; the flight `drop` frees comes after this
        log.close()
        closed.set()

    outcomes, threads = _queued_behind_two_flights(log, service, close, ahead=0, before_drop=closed)
    for thread in threads[2:]:
        thread.join(WAIT_S)
    service.close()
    assert all(isinstance(o, eventlog.LogClosed) for o in outcomes[2:]), outcomes


# -- a service killed under coalesced appends --------------------------------------------------


async def _append_until_killed(url: str, workers: int) -> dict[str, Any]:
    """`workers` tasks on one async client, each appending keyed sessions until one fails."""
    outcomes: dict[str, Any] = {}
    async with await eventlog.connect_async(url) as log:

        async def agent(w: int) -> None:
            for i in range(100_000):
                key = f"w{w}-{i}"
                try:
                    outcomes[key] = await log.create_session(
                        metadata={"key": key}, idempotency_key=key
                    )
                except eventlog.EventLogError as exc:
                    outcomes[key] = exc
                    return

        await asyncio.gather(*(agent(w) for w in range(workers)))
    return outcomes


def _append_from_threads_until_killed(url: str, workers: int) -> dict[str, Any]:
    """The same from `workers` threads on one sync client."""
    outcomes: dict[str, Any] = {}
    with eventlog.connect(url) as log:

        def agent(w: int) -> None:
            for i in range(100_000):
                key = f"w{w}-{i}"
                try:
                    outcomes[key] = log.create_session(metadata={"key": key}, idempotency_key=key)
                except eventlog.EventLogError as exc:
                    outcomes[key] = exc
                    return

        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            list(pool.map(agent, range(workers)))
    return outcomes


@pytest.mark.parametrize("client", ["async", "threads"])
def test_kill_9_under_coalesced_appends_acknowledges_only_stored_events(
    tmp_path: Path, store: Path, client: str
) -> None:
    """The service is killed while 32 callers' appends travel in batches: each caller whose
    append succeeded finds it in the log as it was sent, every other caller got an error
    (none a success for an event not written), and retrying the failed ones with their
    idempotency keys on the restarted service adds each exactly once."""
    service = Service(tmp_path, [str(store)], name="serve0")
    threading.Timer(1.5, service.child.kill).start()  # SIGKILL, mid-batch
    if client == "async":
        outcomes = asyncio.run(asyncio.wait_for(_append_until_killed(service.url, 32), WAIT_S))
    else:
        outcomes = _append_from_threads_until_killed(service.url, 32)
    service.stop()
    done = {k: o for k, o in outcomes.items() if isinstance(o, events.SessionCreated)}
    failed = {k for k, o in outcomes.items() if not isinstance(o, events.SessionCreated)}
    assert done and failed and len(failed) <= 32
    assert all(isinstance(outcomes[k], eventlog.ServiceError) for k in failed), failed
    with eventlog.open(store, readonly=True) as log:
        stored = {r.event.metadata["key"]: r.event for r in log.read() if r.lsn > 0}  # type: ignore[attr-defined]
    assert all(stored.get(k) == o for k, o in done.items())
    service = Service(tmp_path, [str(store)], name="serve1")
    try:
        with eventlog.connect(service.url) as log:
            for key in failed:
                log.create_session(metadata={"key": key}, idempotency_key=key)
    finally:
        assert service.stop() == 0
    assert _events(store) == 1 + len(done) + len(failed)


def test_each_tasks_sequential_appends_land_in_the_order_awaited(
    served: Service, store: Path
) -> None:
    """Eight tasks interleaved on one client, each awaiting its appends one after another:
    in the log, each task's appends are in the order it made them (coalescing reorders
    none a caller waited for)."""

    async def main() -> None:
        async with await eventlog.connect_async(served.url) as log:
            session = await log.create_session()

            async def agent(k: int) -> None:
                for i in range(30):
                    await log.add_prompt(session.id, f"{k}-{i}")

            await asyncio.gather(*(agent(k) for k in range(8)))

    asyncio.run(main())
    with eventlog.open(store, readonly=True) as log:
        contents = [getattr(r.event, "content", "") for r in log.read()]
    for k in range(8):
        mine = [c for c in contents if c.startswith(f"{k}-")]
        assert mine == [f"{k}-{i}" for i in range(30)]
    assert _requests(served, _BATCHES) > 0  # they did travel together
