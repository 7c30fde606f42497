"""Attacks on `lmg serve`'s network surface that held only once fixed: each drives a real
`lmg serve` child on 127.0.0.1 with real HTTP clients, as tests/replay/test_service.py does."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests._processes import WAIT_S

from .test_service import Service, _token

# real server processes: `make test` runs them, `make test-fast` not
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_session")]


def test_concurrent_follows_cannot_pass_max_follows(tmp_path: Path, store: Path) -> None:
    """Follow streams opened at once are counted as they are admitted: the check and the
    count were apart (the count came when the stream began to send), so 20 requests sent
    together all passed a `max_follows` of 2."""
    service = Service(tmp_path, [str(store), "--limit", "max_follows=2"])
    try:
        statuses = asyncio.run(_follow_at_once(service.url, 20))
        assert statuses.count(200) == 2 and statuses.count(429) == 18, statuses
        # the streams closed give their places back (each once its end is seen)
        _wait_for(
            lambda: 'lmg_follow_streams{store="default"} 0.0' in service.http.get("/metrics").text
        )
        again = asyncio.run(_follow_at_once(service.url, 2))
        assert again == [200, 200]
    finally:
        assert service.stop() == 0


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "waited in vain"
        time.sleep(0.02)


async def _follow_at_once(url: str, n: int) -> list[int]:
    """The statuses of `n` follow streams requested together, each held open until every
    one has its status."""
    everyone = asyncio.Barrier(n)
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(base_url=url, timeout=WAIT_S, limits=limits) as client:

        async def follow() -> int:
            path = "/v1/stores/default/events?follow=true&from=1000"
            async with client.stream("GET", path) as answer:
                await everyone.wait()
                return answer.status_code

        return sorted(await asyncio.gather(*(follow() for _ in range(n))))


def _memory_kib(pid: int, field: str) -> int:
    """A line of /proc/PID/status, in KiB (VmRSS: now; VmHWM: the most it ever held)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_a_sql_answer_of_big_rows_is_not_fetched_whole(tmp_path: Path, store: Path) -> None:
    """256 rows of 1 MB each, answered in JSON with `max_answer_bytes` of 4 MiB: the service
    fetched the rows 256 at a time and encoded them all before it counted their bytes, so it
    held three times the 256 MB DuckDB made (the rows as Python strings, then as JSON). It
    now fetches rows a few at a time until it knows their size, and stops at the limit:
    what it holds beyond DuckDB's own vector of rows is about the answer."""
    limit = 4 * 1024 * 1024
    service = Service(tmp_path, [str(store), "--limit", f"max_answer_bytes={limit}"])
    try:
        pid = service.child.proc.pid
        query = {"query": "SELECT repeat('x', 1000000) AS x FROM range(256)"}
        warm = service.http.post("/v1/stores/default/sql", json={"query": "SELECT 1"})
        assert warm.status_code == 200
        before = _memory_kib(pid, "VmRSS")
        answer = service.http.post("/v1/stores/default/sql", json=query)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["truncated"] and len(body["rows"]) == 4  # each row is 1 MB and 3 bytes
        made_kib = 256 * 1_000_000 // 1024  # what DuckDB makes: its vector of 256 rows
        grew = _memory_kib(pid, "VmHWM") - before
        assert grew < made_kib * 1.5, f"held {grew} KiB past {before} for {made_kib} KiB of rows"
    finally:
        assert service.stop() == 0


def test_error_messages_do_not_echo_a_request_whole(served: Service) -> None:
    """Errors quote what a request sent (a value that is no UUID, an unknown node type, the
    SQL DuckDB could not bind): each was answered whole, up to `max_body_bytes`. A message
    now keeps its head and its end, with how much was cut between them."""
    big = "Z" * 50_000
    refused = [
        served.http.post("/v1/stores/default/erase", json={"sessions": [big], "dry_run": True}),
        served.http.post("/v1/stores/default/query", json={"node_type": [big]}),
        served.http.post("/v1/stores/default/query", json={"order_by": big}),
        served.http.post("/v1/stores/default/sql", json={"query": f'SELECT "{big}"'}),
        served.http.post("/v1/stores/default/events", json=[{"type": big}]),
    ]
    for answer in refused:
        assert answer.status_code == 422, answer.text[:200]
        message = answer.json()["error"]["message"]
        assert len(message) < 1_100 and "characters cut]..." in message, message[:200]
    batch = served.http.post("/v1/stores/default/events:batch", json={"appends": [{"type": big}]})
    (item,) = batch.json()["appends"]
    assert item["status"] == 422 and len(item["error"]["message"]) < 1_100
    # a message of its own length is kept whole
    short = served.http.post("/v1/stores/default/query", json={"node_type": ["nope"]})
    assert short.json()["error"]["message"].startswith("unknown node type 'nope'; one of ")


def test_metrics_name_only_the_stores_the_token_may_use(tmp_path: Path, store: Path) -> None:
    """An admin token of one store read `/metrics`, whose samples are labelled with every
    served store's name: it learned the others exist. It now reads the samples of its own
    stores (and those of no store); a token of every store (``*``) reads them all."""
    secret = tmp_path / "secret-store"
    shutil.copytree(store, secret)
    auth = tmp_path / "tokens.json"
    mine = _token(auth, "mine", ["admin"], ["default"])
    every = _token(auth, "every", ["admin"], ["*"])
    service = Service(tmp_path, [str(store), "--store", f"secret={secret}", "--auth", str(auth)])
    try:
        for name in ("default", "secret"):  # samples of both stores, and of a request
            headers = {"Authorization": f"Bearer {every}"}
            answer = service.http.get(f"/v1/stores/{name}/lsn", headers=headers)
            assert answer.status_code == 200
        seen = service.http.get("/metrics", headers={"Authorization": f"Bearer {mine}"})
        assert seen.status_code == 200
        assert 'lmg_fold_lag_events{store="default"}' in seen.text
        assert "lmg_request_seconds_count{" in seen.text  # a metric of no store is kept
        assert "secret" not in seen.text
        whole = service.http.get("/metrics", headers={"Authorization": f"Bearer {every}"})
        assert 'lmg_fold_lag_events{store="secret"}' in whole.text
        assert 'lmg_fold_lag_events{store="default"}' in whole.text
    finally:
        assert service.stop() == 0


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_a_feed_reader_that_stalls_holds_a_few_frames(tmp_path: Path, store: Path) -> None:
    """The feed read the log 4096 records at a time, whatever their size, and a reader that
    reads nothing holds its chunk: ten of them on a log of 48 MB of events held 480 MB. A
    chunk now ends once the frames decoded for it pass a few MiB."""
    service = Service(tmp_path, [str(store)])
    readers: list[socket.socket] = []
    try:
        pid = service.child.proc.pid
        frame = [{"type": "session.created", "metadata": {"blob": "y" * 60_000}}] * 100
        for _ in range(8):  # 8 frames of 100 events of 60 KB
            appended = service.http.post("/v1/stores/default/events", json=frame)
            assert appended.status_code == 200
        before = _memory_kib(pid, "VmRSS")
        for _ in range(10):
            reader = socket.socket()
            reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            reader.settimeout(WAIT_S)
            reader.connect(("127.0.0.1", int(service.url.rsplit(":", 1)[1])))
            reader.sendall(b"GET /v1/stores/default/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            readers.append(reader)
        for reader in readers:  # each has sent its first record: its first chunk is read
            seen = b""
            while b'"lsn"' not in seen:
                more = reader.recv(1024)
                assert more, seen[-200:]
                seen += more
        grew = _memory_kib(pid, "VmHWM") - before
        assert grew < 10 * 24_000, f"ten stalled readers held {grew} KiB"
    finally:
        for reader in readers:
            reader.close()
        assert service.stop() == 0


def test_bodies_held_at_once_have_a_limit(tmp_path: Path, store: Path) -> None:
    """Each body had a limit, all of them together none: 1024 connections, each sending 8 MB
    of a body a little larger and then nothing, held 8 GB for `body_timeout_s`. Bodies are
    now counted until their request is answered, and one that would pass
    `max_bodies_bytes` is refused (503 ``busy``), for as long as the others hold theirs."""
    args = ["--limit", "max_bodies_bytes=1000000", "--limit", "max_body_bytes=800000"]
    service = Service(tmp_path, [str(store), *args])
    port = int(service.url.rsplit(":", 1)[1])
    slow = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
    try:
        head = "POST /v1/stores/default/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        slow.sendall(f"{head}Content-Length: 700000\r\n\r\n".encode() + b" " * 600_000)
        _wait_for(lambda: _body_bytes(service) == 600_000)  # held by the service
        event = [{"type": "session.created", "metadata": {"pad": "x" * 500_000}}]
        refused = service.http.post("/v1/stores/default/events", json=event)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "busy"
        small = service.http.post("/v1/stores/default/events", json={"type": "session.created"})
        assert small.status_code == 200  # within what is left
        slow.sendall(b" " * 99_999 + b"{")  # the slow body ends (not JSON: refused, 422)
        assert slow.recv(64).startswith(b"HTTP/1.1 422")
        _wait_for(lambda: _body_bytes(service) == 0)  # every body given back
        stored = service.http.post("/v1/stores/default/events", json=event)
        assert stored.status_code == 200
    finally:
        slow.close()
        assert service.stop() == 0


def _body_bytes(service: Service) -> float:
    (line,) = [
        line
        for line in service.http.get("/metrics").text.splitlines()
        if line.startswith("lmg_request_body_bytes ")
    ]
    return float(line.split()[1])


def test_an_answer_nobody_takes_is_dropped(tmp_path: Path, store: Path) -> None:
    """An answer is written whole to the connection (a SQL answer up to `max_answer_bytes`),
    and a client that took nothing of it kept it in the service's memory for as long as it
    kept the connection: ten such answers of 60 MB held 830 MB, without end. A connection
    whose answer has waited `body_timeout_s` without a byte of it taken is now closed."""
    service = Service(tmp_path, [str(store), "--limit", "body_timeout_s=0.5"])
    port = int(service.url.rsplit(":", 1)[1])
    reader = socket.socket()
    try:
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        reader.settimeout(WAIT_S)
        reader.connect(("127.0.0.1", port))
        body = b'{"query": "SELECT repeat(\'x\', 1000000) FROM range(30)"}'
        head = b"POST /v1/stores/default/sql HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        reader.sendall(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        assert reader.recv(12) == b"HTTP/1.1 200"  # the answer is being sent
        time.sleep(3)  # taking nothing, for six times body_timeout_s
        taken = 12
        with contextlib.suppress(ConnectionResetError):
            while more := reader.recv(1 << 20):
                taken += len(more)
        assert taken < 30_000_000, "the whole answer waited for a reader that took nothing"
        assert service.http.get("/healthz").status_code == 200
    finally:
        reader.close()
        assert service.stop() == 0


@pytest.mark.skipif(sys.platform != "linux", reason="the kernel's send queue is read on Linux")
def test_an_answer_taken_slowly_is_not_dropped(tmp_path: Path, store: Path) -> None:
    """A client that takes its answer slowly but steadily keeps its connection (a follower
    whose consumer slowed down, a slow link). The send timer looked only at the bytes the
    service's own buffer holds, and those move only once the kernel's send buffer (up to
    4 MB once a connection ran fast) drained by a third: a client taking 160 KB/s after a
    fast start was cut off within a `body_timeout_s` of 4 s (at the default 30 s: under
    45 KB/s). What the kernel holds unacknowledged now counts as waiting too."""
    service = Service(tmp_path, [str(store), "--limit", "body_timeout_s=4"])
    port = int(service.url.rsplit(":", 1)[1])
    reader = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
    try:
        body = b'{"query": "SELECT repeat(\'x\', 1000000) FROM range(40)"}'
        head = b"POST /v1/stores/default/sql HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        reader.sendall(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        answer = bytearray()
        while len(answer) < 20_000_000:  # fast: the kernel's buffers grow
            more = reader.recv(1 << 20)
            assert more, f"cut off after {len(answer)} bytes"
            answer += more
        for _ in range(120):  # then 16 KB every 0.1 s, for three times body_timeout_s
            more = reader.recv(16_384)
            assert more, f"cut off after {len(answer)} bytes"
            answer += more
            time.sleep(0.1)
        while more := reader.recv(1 << 20):
            answer += more
        assert answer.endswith(b'"truncated":false}'), bytes(answer[-100:])
    finally:
        reader.close()
        assert service.stop() == 0


def test_a_body_within_max_body_bytes_is_never_always_busy(tmp_path: Path, store: Path) -> None:
    """A `max_body_bytes` raised past `max_bodies_bytes` (256 MiB: a bulk import of larger
    bodies) made every body between the two 503 ``busy`` forever, even alone, which clients
    retry: the bodies held at once may always hold one body of `max_body_bytes`."""
    args = ["--limit", "max_bodies_bytes=1000000", "--limit", "max_body_bytes=2000000"]
    service = Service(tmp_path, [str(store), *args])
    try:
        event = [{"type": "session.created", "metadata": {"pad": "x" * 1_500_000}}]
        stored = service.http.post("/v1/stores/default/events", json=event)
        assert stored.status_code == 200, stored.text
        assert _body_bytes(service) == 0
    finally:
        assert service.stop() == 0
