"""``POST /v1/stores/{name}/erase`` on a real `lmg serve`: admin tokens only, `lmg erase`'s
criteria, run by the service through its own handle on the log and its own owner of the
projections, which keeps serving; every file under the store is scanned afterwards."""

from __future__ import annotations

import asyncio
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import eventlog
from tests.projections.test_erase import scan

from .test_service import Service, _events, _token

pytestmark = pytest.mark.slow  # a real server process

_ERASE = "/v1/stores/{}/erase"


class Served:
    """A store served with auth: an admin token, a reader, and one that may do all but admin."""

    def __init__(self, tmp: Path) -> None:
        self.store = tmp / "store"
        with eventlog.open(self.store) as log:
            log.create_session(metadata={"user": "bob"})
        self.other = tmp / "other-store"
        shutil.copytree(self.store, self.other)
        auth = tmp / "tokens.json"
        self.admin = _token(auth, "dpo", ["admin"], ["default"])
        self.reader = _token(auth, "reader", ["read"], ["default"])
        self.writer = _token(auth, "writer", ["append", "read", "sql"], ["default", "other"])
        self.service = Service(
            tmp, [str(self.store), "--store", f"other={self.other}", "--auth", str(auth)]
        )
        self.url = self.service.url

    def post(self, body: bytes, token: str | None, name: str = "default") -> httpx.Response:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return self.service.http.post(_ERASE.format(name), content=body, headers=headers)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path)
    yield s
    assert s.service.stop() == 0


def test_the_erase_route_erases_through_the_service_which_keeps_serving(
    served: Served,
) -> None:
    secret = f"zq{secrets.token_hex(10)}"
    with eventlog.connect(served.url, token=served.writer) as log:
        alice = log.create_session(metadata={"user": "alice"})
        template = log.create_template("letter", f"Dear {{{{name}}}}, {secret}")
        prompt = log.add_prompt(alice.id, template_id=template, variables={"name": "Al"})
        log.add_response(prompt, f"noted {secret}", eventlog.TokenUsage(3, 4))
    sql = {"query": "SELECT content FROM prompts"}
    auth = {"Authorization": f"Bearer {served.writer}"}
    assert served.service.http.post("/v1/stores/default/sql", json=sql, headers=auth).json()[
        "rows"
    ] == [[f"Dear Al, {secret}"]]
    assert scan(served.store, [secret])
    chosen = eventlog.Selector.of(metadata={"user": "alice"}, nodes=[template])

    with eventlog.connect(served.url, token=served.admin) as admin:
        listed = admin.select(chosen)
        assert [s.lsn for s in listed] == [1, 2, 3, 4]
        assert scan(served.store, [secret])  # a dry run changes nothing
        done = admin.erase(chosen)
    assert done.phase == "done" and done.record.events == 4
    assert done.record.actor == "dpo"  # the token's name, unless `by` says otherwise

    # The service keeps serving, from a new database, and its cache of the template (a
    # prompt from it is rendered by the service) holds the erased text no more.
    assert served.service.http.get("/readyz").status_code == 200
    with eventlog.connect(served.url, token=served.writer) as log:
        bob = log.create_session(metadata={"user": "bob"})
        again = log.add_prompt(bob.id, template_id=template, variables={"name": "Bo"})
    rows = served.service.http.post("/v1/stores/default/sql", json=sql, headers=auth).json()
    erased, new = (r[0] for r in rows["rows"])
    assert erased.startswith("[erased ") and secret not in new
    node = served.service.http.get(f"/v1/stores/default/nodes/{again}", headers=auth).json()
    assert node["id"] == str(again)
    assert scan(served.store, [secret]) == []
    assert eventlog.verify(served.store) == []


def test_the_async_client_lists_and_erases(served: Served) -> None:
    with eventlog.connect(served.url, token=served.writer) as log:
        session = log.create_session(metadata={"user": "eve"}).id
        log.add_prompt(session, "eve's words")

    async def run() -> eventlog.Erasure:
        async with await eventlog.connect_async(served.url, token=served.admin) as admin:
            chosen = eventlog.Selector.of(sessions=[session])
            assert [s.session_id for s in await admin.select(chosen)] == [session, session]
            return await admin.erase(chosen, by="the dpo")

    done = asyncio.run(run())
    assert done.record.events == 2 and done.record.actor == "the dpo"


def test_the_erase_route_is_for_admin_tokens_only(served: Served, tmp_path: Path) -> None:
    body = b'{"actors": ["nobody"]}'
    assert served.post(body, None).status_code == 401
    assert served.post(body, "lmg_wrong").status_code == 401
    for token in (served.reader, served.writer):
        refused = served.post(body, token)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    hidden = served.post(body, served.admin, "other")  # a store the admin token may not use
    unknown = served.post(body, served.admin, "nowhere")
    assert hidden.status_code == unknown.status_code == 404
    assert hidden.content == unknown.content
    assert served.post(body, served.admin).status_code == 200
    for answer in (hidden, unknown):
        assert str(tmp_path).encode() not in answer.content
    assert _events(served.store) == _events(served.other) == 1  # nothing matched: no record


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{}", "invalid_event"),  # no criterion
        (b"{", "bad_request"),
        (b'{"sessions": ["not-a-uuid"]}', "invalid_event"),
        (b'{"sessions": ["01a23be2-53ab-72ae-aaee-94e6ee0f0365"]}', "unknown_node"),
        (b'{"nodes": ["01a23be2-53ab-72ae-aaee-94e6ee0f0365"], "dry_run": true}', "unknown_node"),
        (b'{"before": "yesterday-ish"}', "invalid_event"),
        (b'{"metadata": {"user": 42}}', "bad_request"),
        (b'{"actors": ["x"], "everything": true}', "bad_request"),
    ],
)
def test_bad_selectors_are_422_and_write_nothing(
    served: Served, tmp_path: Path, body: bytes, code: str
) -> None:
    answer = served.post(body, served.admin)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == code
    assert str(tmp_path).encode() not in answer.content
    assert _events(served.store) == 1 and not (served.store / eventlog.JOURNAL_FILE).exists()


def test_an_erasure_while_a_read_runs_waits_for_it_and_the_fold_goes_on(tmp_path: Path) -> None:
    """The erasure closes the database the service reads: a read still running on it made
    the close fail half done, the fold stopped, and every later read answered an error."""
    store = tmp_path / "store"
    with eventlog.open(store) as log:
        gone = log.create_session(metadata={"user": "gone"})
        log.add_prompt(gone.id, "erase me")
        kept = log.create_session().id
    service = Service(tmp_path, [str(store), "--limit", "sql_time_s=20"])
    try:
        slow = {"query": "SELECT count(*) FROM range(4000000000) WHERE range % 7 = 3"}

        async def both() -> tuple[httpx.Response, httpx.Response]:
            async with httpx.AsyncClient(base_url=service.url, timeout=60) as client:
                read = asyncio.ensure_future(client.post("/v1/stores/default/sql", json=slow))
                await asyncio.sleep(0.5)  # the read runs
                body = {"sessions": [str(gone.id)]}
                erased = await client.post(_ERASE.format("default"), json=body)
                return await read, erased

        read, erased = asyncio.run(both())
        assert erased.status_code == 200, erased.text
        assert read.status_code in (200, 422), read.text  # done, or stopped at its limit
        assert service.http.get("/readyz").status_code == 200
        appended = service.http.post(
            "/v1/stores/default/events",
            json={"type": "prompt.added", "session_id": str(kept), "content": "after"},
        )
        assert appended.status_code < 300, appended.text
        sql = {"query": "SELECT content FROM prompts ORDER BY lsn"}
        rows = service.http.post("/v1/stores/default/sql", json=sql).json()["rows"]
        assert rows[0][0].startswith("[erased ") and rows[1:] == [["after"]]
    finally:
        assert service.stop() == 0
    assert "the fold stopped" not in service.child.stderr()


def test_a_read_waiting_its_turn_through_an_erasure_is_told_to_retry(tmp_path: Path) -> None:
    """A read given its cursor while waiting for a query turn finds it closed by the
    erasure: 503 busy (retry shortly), not an SQL error."""
    store = tmp_path / "store"
    with eventlog.open(store) as log:
        gone = log.create_session(metadata={"user": "gone"})
        log.add_prompt(gone.id, "erase me")
    args = [str(store), "--limit", "sql_time_s=5", "--limit", "max_queries=1"]
    service = Service(tmp_path, args)
    try:
        slow = {"query": "SELECT count(*) FROM range(4000000000) WHERE range % 7 = 3"}

        async def three() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=service.url, timeout=60) as client:
                first = asyncio.ensure_future(client.post("/v1/stores/default/sql", json=slow))
                await asyncio.sleep(0.5)  # it holds the only turn
                query = {"query": "SELECT count(*) FROM prompts"}
                second = asyncio.ensure_future(client.post("/v1/stores/default/sql", json=query))
                await asyncio.sleep(0.3)  # it waits for the turn, its cursor given
                body = {"sessions": [str(gone.id)]}
                erased = await client.post(_ERASE.format("default"), json=body)
                return [await first, await second, erased]

        first, second, erased = asyncio.run(three())
        assert erased.status_code == 200, erased.text
        assert first.status_code in (200, 422), first.text  # done, or stopped at its limit
        assert second.status_code == 503 and second.json()["error"]["code"] == "busy", second.text
    finally:
        assert service.stop() == 0


def test_a_fold_stopped_by_a_damaged_journal_goes_on_once_it_is_repaired(
    served: Served,
) -> None:
    """A damaged ``ERASURE.json`` stops the fold (/readyz 503 ``fold_stopped``); once it is
    repaired the fold goes on and says so: /readyz was 503 until a restart, and reads no
    longer waited for the appends acknowledged before them (they answered stale rows)."""
    journal = served.store / eventlog.JOURNAL_FILE
    journal.write_text('{"record": 5')
    auth = {"Authorization": f"Bearer {served.writer}"}
    with eventlog.connect(served.url, token=served.writer) as log:
        log.create_session()
        served.service.child.wait_for(
            lambda: served.service.http.get("/readyz").status_code == 503, "the fold to stop"
        )
        journal.unlink()
        served.service.child.wait_for(
            lambda: served.service.http.get("/readyz").status_code == 200, "the fold to go on"
        )
        assert "the fold goes on again" in served.service.child.stderr()
        sql = {"query": "SELECT count(*) FROM sessions"}
        for sessions in (3, 4, 5):
            log.create_session()
            answer = served.service.http.post("/v1/stores/default/sql", json=sql, headers=auth)
            assert answer.json()["rows"] == [[sessions]]
