"""The web view's routes on a real `lmg serve`: the page and its headers, and the JSON routes
it reads (public, so a script gets the same), each also at a point of history."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import re
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import eventlog
from projections import AsyncRemoteGraph, BadArgument, Forked, RemoteGraph
from tests._processes import LMG, WAIT_S
from tests.replay.test_service import Service

pytestmark = (
    pytest.mark.slow
)  # real server or CLI processes: `make test` runs them, `make test-fast` not

_MODELS = ["m-small", "m-large"]


def _store(path: Path) -> list[uuid.UUID]:
    """Five sessions: session i has i+1 turns by agent a(i%2), answered by model m-(i%2),
    user u(i); the last response of session 3 called a tool that failed."""
    sessions = []
    with eventlog.open(path) as log:
        agents = [log.add_agent(f"a{i}", "worker") for i in range(2)]
        for i in range(5):
            session = log.create_session(metadata={"user": f"u{i}"})
            for turn in range(i + 1):
                prompt = log.add_prompt(session.id, f"question {turn} of session {i}")
                log.assign_agent_to_prompt(prompt, agents[i % 2])
                response = log.add_response(
                    prompt,
                    f"answer {turn} needle{i}" if turn == i else f"answer {turn}",
                    eventlog.TokenUsage(10, 10 * i),
                    latency_ms=100.0 * (5 - i),
                    model=_MODELS[i % 2],
                )
            if i == 3:
                tool = log.add_tool_invocation(response, "search", {"q": "x"})
                log.complete_tool_invocation(tool, error="offline")
            sessions.append(session.id)
    return sessions


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, list[uuid.UUID]]]:
    tmp = tmp_path_factory.mktemp("webroutes")
    sessions = _store(tmp / "store")
    service = Service(tmp, [str(tmp / "store")])
    yield service, sessions
    assert service.stop() == 0


def _get(service: Service, path: str, status: int = 200) -> Any:
    answer = service.http.get(path)
    assert answer.status_code == status, answer.text
    return answer.json()


def _ids(page: dict[str, Any]) -> list[str]:
    return [s["id"] for s in page["sessions"]]


def test_the_page_has_a_strict_content_security_policy(served: tuple[Service, Any]) -> None:
    service, _ = served
    assert service.http.get("/").headers["location"] == "/ui/"
    for path in ("/ui/", "/ui/stores/default/sessions/x", "/ui/static/app.js"):
        answer = service.http.get(path)
        assert answer.status_code == 200
        policy = answer.headers["content-security-policy"]
        assert "script-src 'self';" in policy and "default-src 'none'" in policy
        assert "unsafe" not in policy
        assert answer.headers["x-content-type-options"] == "nosniff"
    shell = service.http.get("/ui/").text
    assert re.findall(r"<script[^>]*>", shell) == ['<script src="/ui/static/app.js" defer>']
    script = service.http.get("/ui/static/app.js").text
    assert not re.search(r"\.(inner|outer)HTML\s*=|insertAdjacentHTML|document\.write", script)
    missing = service.http.get("/ui/static/secrets.json")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_the_stores_content_is_kept_by_no_cache(served: tuple[Service, list[uuid.UUID]]) -> None:
    """The JSON routes said nothing of caching: a browser could keep a store's sessions, SQL
    answers and errors in its cache on disk after the tab, and its token, were gone."""
    service, sessions = served
    for path in (
        "/v1/stores",
        "/v1/stores/default/sessions",
        f"/v1/stores/default/sessions/{sessions[0]}/view",
        "/v1/stores/default/events",
        "/v1/stores/nowhere/sessions",
    ):
        assert service.http.get(path).headers["cache-control"] == "no-store", path
    sql = service.http.post("/v1/stores/default/sql", json={"query": "SELECT 1"})
    assert sql.headers["cache-control"] == "no-store"
    assert service.http.get("/ui/static/app.js").headers["cache-control"] == "no-cache"


def test_the_sessions_list_sorts_and_pages(served: tuple[Service, list[uuid.UUID]]) -> None:
    service, sessions = served
    s = [str(i) for i in sessions]
    by_turns = _get(service, "/v1/stores/default/sessions?sort=turns&order=asc")
    assert _ids(by_turns) == s and by_turns["total"] == 5
    assert [r["turns"] for r in by_turns["sessions"]] == [1, 2, 3, 4, 5]
    page = _get(service, "/v1/stores/default/sessions?sort=tokens&order=desc&limit=2&offset=2")
    assert _ids(page) == [s[2], s[1]] and page["total"] == 5
    latency = _get(service, "/v1/stores/default/sessions?sort=latency&order=asc&limit=1")
    assert _ids(latency) == [s[4]] and latency["sessions"][0]["latency_ms"] == 100.0
    failures = _get(service, "/v1/stores/default/sessions?sort=failures&limit=1")
    assert _ids(failures) == [s[3]] and failures["sessions"][0]["tool_failures"] == 1
    newest = _get(service, "/v1/stores/default/sessions?limit=1")
    assert _ids(newest) == [s[4]]


def test_the_sessions_list_searches_content_and_metadata(
    served: tuple[Service, list[uuid.UUID]],
) -> None:
    service, sessions = served
    s = [str(i) for i in sessions]
    base = "/v1/stores/default/sessions?sort=turns&order=asc"
    assert _ids(_get(service, f"{base}&q=NEEDLE2")) == [s[2]]  # response content, any case
    assert _ids(_get(service, f"{base}&q=of%20session%203")) == [s[3]]  # prompt content
    assert _ids(_get(service, f"{base}&q=u4")) == [s[4]]  # session metadata
    assert _ids(_get(service, f"{base}&user=u1")) == [s[1]]
    assert _ids(_get(service, f"{base}&agent=a1")) == [s[1], s[3]]
    assert _ids(_get(service, f"{base}&model=m-small")) == [s[0], s[2], s[4]]
    assert _ids(_get(service, f"{base}&q=%25")) == []  # no wildcard: a literal percent sign
    assert _ids(_get(service, f"{base}&since=2000-01-01T00:00Z&until=2001-01-01")) == []
    assert len(_ids(_get(service, f"{base}&since=2000-01-01T00:00Z"))) == 5


@pytest.mark.parametrize(
    ("query", "code"),
    [("sort=name", "bad_argument"), ("limit=500", "bad_argument"), ("order=up", "bad_argument"),
     ("since=yesterday", "invalid_event"), ("offset=-1", "bad_argument"),
     (f"q={'x' * 201}", "bad_argument"), ("limit=%C2%B2", "bad_argument"),
     ("offset=%C2%B2", "bad_argument")],
)  # fmt: skip
def test_a_bad_list_request_is_one_error(
    served: tuple[Service, Any], query: str, code: str
) -> None:
    answer = _get(served[0], f"/v1/stores/default/sessions?{query}", 422)
    assert answer["error"]["code"] == code


def test_a_session_view_nests_tools_under_their_response(
    served: tuple[Service, list[uuid.UUID]],
) -> None:
    service, sessions = served
    view = _get(service, f"/v1/stores/default/sessions/{sessions[3]}/view")
    assert len(view["turns"]) == 4 and view["spans"] == []
    last = view["turns"][-1]["responses"][0]
    assert [(t["tool_name"], t["status"], t["error"]) for t in last["tools"]] == [
        ("search", "error", "offline")
    ]
    assert last["tools"][0]["parameters"] == {"q": "x"}
    assert set(view["agents"].values()) == {"a0", "a1"}
    part = _get(service, f"/v1/stores/default/sessions/{sessions[3]}/view?offset=1&limit=2")
    assert [t["prompt"]["content"] for t in part["turns"]] == [
        "question 1 of session 3", "question 2 of session 3"
    ]  # fmt: skip
    assert (part["offset"], part["truncated"], part["spans"]) == (1, True, [])
    rest = _get(service, f"/v1/stores/default/sessions/{sessions[3]}/view?offset=3&limit=2")
    assert rest["turns"][0]["responses"][0]["tools"][0]["error"] == "offline"
    assert not rest["truncated"]
    for bad in ("limit=0", "limit=5001", "offset=-1"):
        answer = _get(service, f"/v1/stores/default/sessions/{sessions[3]}/view?{bad}", 422)
        assert answer["error"]["code"] == "bad_argument"
    missing = _get(service, f"/v1/stores/default/sessions/{uuid.uuid4()}/view", 404)
    assert missing["error"]["code"] == "not_found"
    assert _get(service, "/v1/stores/default/sessions/nope/view", 422)["error"]["code"] == (
        "bad_argument"
    )


def test_every_page_route_answers_at_a_point(served: tuple[Service, list[uuid.UUID]]) -> None:
    service, sessions = served
    assert _get(service, "/v1/stores/default/sessions?at=-1")["total"] == 0
    assert _get(service, "/v1/stores/default/sessions?at=2000-01-01T00:00:00Z")["total"] == 0
    bad = _get(service, "/v1/stores/default/sessions?at=yesterday", 422)
    assert bad["error"]["code"] == "bad_point"
    digit = _get(service, "/v1/stores/default/sessions?at=%C2%B2", 422)  # '²': isdigit, not int
    assert digit["error"]["code"] == "bad_point"
    long = _get(service, f"/v1/stores/default/sessions?at={'y' * 60_000}", 422)
    assert long["error"]["code"] == "bad_point" and len(long["error"]["message"]) < 200
    then = _get(service, "/v1/stores/default/sessions?at=2")  # two agents and one session
    assert _ids(then) == [str(sessions[0])] and then["sessions"][0]["turns"] == 0
    view = _get(service, f"/v1/stores/default/sessions/{sessions[0]}/view?at=3")
    assert len(view["turns"]) == 1 and view["turns"][0]["responses"] == []
    assert _get(service, "/v1/stores/default/agents?at=0")["agents"][0]["name"] == "a0"
    assert _get(service, "/v1/stores/default/templates?at=0") == {"templates": []}
    position = _get(service, "/v1/stores/default/position")
    assert position["next_lsn"] == position["folded_lsn"] + 1


def test_lineage_agents_and_template_diff(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with eventlog.open(store) as log:
        template = log.create_template(
            "t", "Hello {{name}}\nBye", [eventlog.VariableSpec(name="name")]
        )
        log.update_template(template, "Hello {{name}}!\nBye", [eventlog.VariableSpec(name="name")])
        session = log.create_session()
        prompt = log.add_prompt(session.id, template_id=template, variables={"name": "ada"})
        response = log.add_response(prompt, "hi", latency_ms=5.0)
    service = Service(tmp_path, [str(store)])
    try:
        lineage = _get(service, f"/v1/stores/default/nodes/{response}/lineage?depth=2")
        assert lineage["node"]["id"] == str(response)
        up = {(h["edge"]["edge_type"], h["depth"]) for h in lineage["ancestors"]}
        assert {("RESPONDS_TO", 1), ("INSTANTIATES", 2), ("PART_OF", 2)} <= up
        templates = _get(service, "/v1/stores/default/templates")["templates"]
        assert [v["prompts"] for v in templates[0]["versions"]] == [0, 1]
        diff = _get(service, f"/v1/stores/default/templates/{template}/diff?from=1&to=2")
        assert diff["diff"][2:] == [
            "@@ -1,2 +1,2 @@",
            "-Hello {{name}}",
            "+Hello {{name}}!",
            " Bye",
        ]
        gone = _get(service, f"/v1/stores/default/templates/{template}/diff?from=1&to=9", 404)
        assert gone["error"]["code"] == "not_found"
    finally:
        assert service.stop() == 0


def test_a_token_sees_only_its_stores(tmp_path: Path) -> None:
    for name in ("default", "b"):
        with eventlog.open(tmp_path / name) as log:
            log.create_session()
    auth = tmp_path / "tokens.json"
    made = subprocess.run(
        [str(LMG), "token", "add", "--auth", str(auth), "--name", "t", "--scope", "read",
         "--store", "default"],
        capture_output=True, text=True, check=True, timeout=WAIT_S,
    )  # fmt: skip
    token = made.stdout.split()[0]
    args = [str(tmp_path / "default"), "--store", f"b={tmp_path / 'b'}", "--auth", str(auth)]
    service = Service(tmp_path, args)
    try:
        assert service.http.get("/ui/").status_code == 200  # the shell holds no data
        assert _get(service, "/v1/stores", 401)["error"]["code"] == "unauthorized"
        bearer = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=service.url, headers=bearer, timeout=WAIT_S) as http:
            assert http.get("/v1/stores").json() == {"stores": ["default"], "scopes": ["read"]}
            assert http.get("/v1/stores/default/sessions").json()["total"] == 1
            assert http.get("/v1/stores/b/sessions").status_code == 404
            assert http.get("/v1/stores/b/sessions?at=0").status_code == 404
    finally:
        assert service.stop() == 0


def test_a_tool_call_of_a_deleted_response_leaves_the_session_readable(tmp_path: Path) -> None:
    """A tombstone on a response leaves its tool calls live (docs/sql.md): the session view
    shows the turn without the response, instead of failing on the orphaned call. A session
    longer than the view's cap is cut, and says so."""
    store = tmp_path / "store"
    with eventlog.open(store) as log:
        session = log.create_session()
        prompt = log.add_prompt(session.id, "q")
        response = log.add_response(prompt, "a")
        log.add_tool_invocation(response, "search", {"q": "x"})
        log.delete_node(response)
        long = log.create_session()
        log.add_prompts_batch([(long.id, f"q{i}") for i in range(5001)])
    service = Service(tmp_path, [str(store)])
    try:
        view = _get(service, f"/v1/stores/default/sessions/{session.id}/view")
        assert [t["responses"] for t in view["turns"]] == [[]] and not view["truncated"]
        cut = _get(service, f"/v1/stores/default/sessions/{long.id}/view")
        assert len(cut["turns"]) == 5000 and cut["truncated"]
        assert cut["turns"][-1]["prompt"]["content"] == "q4999"
    finally:
        assert service.stop() == 0


def _token(auth: Path, name: str, scopes: list[str], store: str = "*") -> str:
    args = [str(LMG), "token", "add", "--auth", str(auth), "--name", name, "--store", store]
    for scope in scopes:
        args += ["--scope", scope]
    made = subprocess.run(args, capture_output=True, text=True, check=True, timeout=WAIT_S)
    return made.stdout.split()[0]


@pytest.fixture(scope="module")
def forking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, Path, str, str]]:
    """A store of three sessions served with auth: an admin token and a read-and-sql one."""
    tmp = tmp_path_factory.mktemp("fork")
    with eventlog.open(tmp / "store") as log:
        for i in range(3):
            log.create_session(metadata={"user": f"u{i}"})
    auth = tmp / "tokens.json"
    admin, reader = _token(auth, "admin", ["admin"]), _token(auth, "reader", ["read", "sql"])
    service = Service(tmp, [str(tmp / "store"), "--auth", str(auth)])
    yield service, tmp, admin, reader
    assert service.stop() == 0


def _post(service: Service, token: str, body: Any, status: int) -> Any:
    bearer = {"Authorization": f"Bearer {token}"}
    answer = service.http.post("/v1/stores/default/fork", json=body, headers=bearer)
    assert answer.status_code == status, answer.text
    return answer.json()


def test_an_admin_token_forks_at_a_point_and_the_fork_is_served(
    forking: tuple[Service, Path, str, str],
) -> None:
    service, tmp, admin, _ = forking
    made = _post(service, admin, {"at": 1, "name": "try-1"}, 200)
    assert made == {"store": "try-1", "forked_from": "default", "last_lsn": 1,
                    "last_ts": made["last_ts"], "events": 2}  # fmt: skip
    assert (tmp / "try-1").is_dir() and eventlog.origin(tmp / "try-1") is not None
    bearer = {"Authorization": f"Bearer {admin}"}
    listed = service.http.get("/v1/stores/try-1/sessions", headers=bearer).json()
    assert [s["user"] for s in listed["sessions"]] == ["u1", "u0"]
    assert service.http.get("/v1/stores", headers=bearer).json()["stores"] == ["default", "try-1"]
    with RemoteGraph(service.url, "default", token=admin) as graph:
        forked = graph.fork("2000-01-01T00:00:00Z", "empty")  # before every event
        assert (forked.store, forked.events, forked.last_lsn) == ("empty", 0, -1)

    async def fork_async() -> Forked:
        async with AsyncRemoteGraph(service.url, "default", token=admin) as graph:
            return await graph.fork(0, "first-only")

    assert asyncio.run(fork_async()).events == 1
    with RemoteGraph(service.url, "try-1", token=admin) as fork:
        fork.create_session(metadata={"user": "only in the fork"})
        assert fork.rows("SELECT count(*) FROM sessions") == [(3,)]
    with RemoteGraph(service.url, "default", token=admin) as original:
        assert original.rows("SELECT count(*) FROM sessions") == [(3,)]


def test_only_an_admin_token_forks(forking: tuple[Service, Path, str, str]) -> None:
    service, tmp, _, reader = forking
    refused = _post(service, reader, {"at": 1, "name": "mine"}, 403)
    assert refused["error"]["code"] == "forbidden"
    assert not (tmp / "mine").exists()


def test_an_admin_token_of_one_store_may_not_fork_nor_learn_the_others(tmp_path: Path) -> None:
    """A fork is a store only tokens of every store may use, and a 409 `name_taken` would
    tell a token of one store the names of the others: such a token gets 403, whatever the
    name, and nothing is written."""
    for name in ("store", "other"):
        with eventlog.open(tmp_path / name) as log:
            log.create_session()
    auth = tmp_path / "tokens.json"
    admin = _token(auth, "one-store-admin", ["admin"], store="default")
    args = [str(tmp_path / "store"), "--store", f"other={tmp_path / 'other'}", "--auth", str(auth)]
    service = Service(tmp_path, args)
    try:
        before = sorted(p.name for p in tmp_path.iterdir())
        for name in ("other", "fresh"):
            refused = _post(service, admin, {"at": 0, "name": name}, 403)
            assert refused["error"]["code"] == "forbidden"
            assert "other" not in refused["error"]["message"]
        assert sorted(p.name for p in tmp_path.iterdir()) == before  # no "fresh"
    finally:
        assert service.stop() == 0


@pytest.mark.parametrize(
    "name", ["../up", "a/b", "..", ".hidden", "a.b", "", "x" * 65, "tab\t", "/abs", "é"]
)
def test_a_bad_fork_name_is_refused_and_nothing_is_written(
    forking: tuple[Service, Path, str, str], name: str
) -> None:
    service, tmp, admin, _ = forking
    before = sorted(tmp.rglob("*"))
    refused = _post(service, admin, {"at": 0, "name": name}, 422)
    assert refused["error"]["code"] == "bad_argument"
    assert sorted(tmp.rglob("*")) == before


def test_a_fork_never_writes_over_what_exists(forking: tuple[Service, Path, str, str]) -> None:
    service, tmp, admin, _ = forking
    (tmp / "taken").mkdir()
    (tmp / "link").symlink_to(tmp / "gone")  # a dangling link is there too
    for name in ("store", "taken", "link", "default"):
        before = sorted(tmp.rglob("*"))
        refused = _post(service, admin, {"at": 0, "name": name}, 409)
        assert refused["error"]["code"] == "name_taken", name
        assert sorted(tmp.rglob("*")) == before
    bad = _post(service, admin, {"at": 99, "name": "later"}, 422)
    assert bad["error"]["code"] in ("bad_point", "replay_error") and not (tmp / "later").exists()
    with RemoteGraph(service.url, "default", token=admin) as graph, pytest.raises(BadArgument):
        graph.fork(0, "a.b")


def test_forks_racing_for_one_name_make_one_store_and_the_others_are_refused_409(
    forking: tuple[Service, Path, str, str],
) -> None:
    """Eight forks of one name asked at once: the name is taken at the check, before any
    copy begins, so one makes the store and every other is `name_taken` (they used to pass
    the check together and copy into one place, and the losers got a 422)."""
    service, tmp, admin, _ = forking
    start = threading.Barrier(8)

    def ask(_: int) -> httpx.Response:
        with httpx.Client(base_url=service.url, timeout=WAIT_S) as http:
            start.wait(WAIT_S)
            body = {"at": 1, "name": "raced"}
            headers = {"Authorization": f"Bearer {admin}"}
            return http.post("/v1/stores/default/fork", json=body, headers=headers)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(8)))
    assert sorted(a.status_code for a in answers) == [200] + [409] * 7, [a.text for a in answers]
    assert {a.json()["error"]["code"] for a in answers if a.status_code == 409} == {"name_taken"}
    assert [p.name for p in tmp.glob("*raced*")] == ["raced"]  # no copy left beside it
    assert eventlog.origin(tmp / "raced") is not None


def test_a_search_stops_once_it_has_a_page_and_says_its_count_is_a_lower_bound(
    tmp_path: Path,
) -> None:
    """A search reads content a step of sessions at a time, in the list's order: a word most
    sessions hold costs a page's worth, and its count is then `"exact": false`."""
    store = tmp_path / "store"
    with eventlog.open(store) as log:
        sessions = [log.create_session(metadata={"user": f"u{i}"}).id for i in range(300)]
        log.add_prompts_batch([(s, f"common words, turn of {i}") for i, s in enumerate(sessions)])
        log.add_prompts_batch([(sessions[0], "a Rare word")])
    service = Service(tmp_path, [str(store)])
    try:
        base = "/v1/stores/default/sessions?sort=started&order=asc"
        first = _get(service, f"{base}&q=COMMON&limit=10")
        assert _ids(first) == [str(s) for s in sessions[:10]]
        assert (first["total"], first["exact"]) == (256, False)  # the first step's sessions
        last = _get(service, f"{base}&q=common&limit=10&offset=295")
        assert _ids(last) == [str(s) for s in sessions[295:]]
        assert (last["total"], last["exact"]) == (300, True)
        rare = _get(service, f"{base}&q=rare%20word")
        assert (_ids(rare), rare["total"], rare["exact"]) == ([str(sessions[0])], 1, True)
        plain = _get(service, f"{base}&limit=1")
        assert (plain["total"], plain["exact"]) == (300, True)
    finally:
        assert service.stop() == 0


def test_a_search_takes_its_text_literally_in_any_case(tmp_path: Path) -> None:
    """The search matches its text as written, in any case (Unicode case folding): the
    characters a regular expression or LIKE treats specially stand for themselves, and
    letters beyond ASCII match their other case, in content, agent names and models."""
    store = tmp_path / "store"
    with eventlog.open(store) as log:
        sessions = [log.create_session().id for _ in range(4)]
        log.add_prompts_batch([(sessions[0], "cost (a+b)*2 [est.] ^$|\\d"), (sessions[1], "ÉCOLE")])
        prompt = log.add_prompt(sessions[2], "plain")
        log.add_response(prompt, "ok", eventlog.TokenUsage(1, 1), model="Ünïcode-9")
        log.assign_agent_to_prompt(log.add_prompt(sessions[3], "x"), log.add_agent("Ωmega", "w"))
    service = Service(tmp_path, [str(store)])
    try:
        for q, want in [
            ("(A+B)*2 [EST.] ^$|\\D", [0]), ("(a.b)", []), ("\\d", [0]), ("_", []),
            ("école", [1]), ("ünïcode-9", [2]), ("ωMEGA", [3]),
        ]:  # fmt: skip
            params = {"q": q, "sort": "started", "order": "asc"}
            answer = service.http.get("/v1/stores/default/sessions", params=params)
            assert answer.status_code == 200, answer.text
            assert _ids(answer.json()) == [str(sessions[i]) for i in want], q
    finally:
        assert service.stop() == 0


def _indexed(service: Service) -> dict[str, Any]:
    """Wait until the store's text index holds what the fold holds; the position then."""
    deadline = time.monotonic() + WAIT_S
    position = _get(service, "/v1/stores/default/position")
    while position["indexed_lsn"] < position["folded_lsn"] and time.monotonic() < deadline:
        time.sleep(0.05)
        position = _get(service, "/v1/stores/default/position")
    assert position["indexed_lsn"] == position["folded_lsn"], position
    return dict(position)


def test_a_search_for_rare_text_is_looked_up_in_the_text_index(tmp_path: Path) -> None:
    """The first search asks for the index, the service builds it beside the database, and
    later searches look rare text up there: found, none found, the short texts it cannot
    index still searched; an append is found at once (before the index holds it) and after;
    at a point before the append it is not."""
    store = tmp_path / "store"
    with eventlog.open(store) as log:
        sessions = [log.create_session().id for _ in range(30)]
        log.add_prompts_batch([(s, f"plain words, turn {i}") for i, s in enumerate(sessions)])
        log.add_prompts_batch([(sessions[7], "a Zebra-Quartz here")])
    service = Service(tmp_path, [str(store)])
    try:
        base = "/v1/stores/default/sessions?sort=started&order=asc"
        assert _get(service, "/v1/stores/default/position")["indexed_lsn"] == -1
        assert _ids(_get(service, f"{base}&q=zebra-quartz")) == [str(sessions[7])]  # a scan
        before = _indexed(service)
        assert (store / "projections.duckdb.text").stat().st_mode & 0o777 == 0o600
        assert _ids(_get(service, f"{base}&q=ZEBRA-quartz")) == [str(sessions[7])]
        assert _get(service, f"{base}&q=no%20such%20words")["total"] == 0
        assert _get(service, f"{base}&q=Ze")["total"] == 1  # too short to look up: read
        assert _get(service, f"{base}&q=z")["total"] == 1
        appended = service.http.post(
            "/v1/stores/default/events",
            json={"type": "prompt.added", "session_id": str(sessions[2]), "content": "QUARTZ!"},
        )
        assert appended.status_code < 300, appended.text
        assert _ids(_get(service, f"{base}&q=quartz")) == [str(sessions[2]), str(sessions[7])]
        assert _indexed(service)["indexed_lsn"] > before["indexed_lsn"]
        assert _ids(_get(service, f"{base}&q=quartz")) == [str(sessions[2]), str(sessions[7])]
        past = f"{base}&q=quartz&at={before['folded_lsn']}"
        assert _ids(_get(service, past)) == [str(sessions[7])]
    finally:
        assert service.stop() == 0


def test_an_erasure_leaves_no_erased_text_in_the_text_index(tmp_path: Path) -> None:
    """The index held which rows had the erased text's trigrams: `lmg erase`, while the
    service holds the store, deletes it with the database; the one built again from the
    erased projections names no row for it, and its bytes hold none of the text."""
    store = tmp_path / "store"
    secret = "Xylophone-Quartz-Secret"
    with eventlog.open(store) as log:
        gone = log.create_session().id
        log.add_prompt(gone, f"my {secret} words")
        log.add_prompt(log.create_session().id, "kept words")
    service = Service(tmp_path, [str(store)])
    index = store / "projections.duckdb.text"
    try:
        base = "/v1/stores/default/sessions"
        assert _ids(_get(service, f"{base}?q={secret}")) == [str(gone)]
        _indexed(service)
        erased = subprocess.run(
            [str(LMG), "erase", str(store), "--session", str(gone), "--wait", "30"],
            capture_output=True, text=True, timeout=WAIT_S * 4, check=False,
        )  # fmt: skip
        assert erased.returncode == 0, erased.stderr
        deadline = time.monotonic() + WAIT_S
        while not index.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert index.exists(), "the index was not built again after the erasure"
        answer = service.http.get(f"{base}?q=kept")
        while answer.status_code == 503 and time.monotonic() < deadline:  # refolding
            time.sleep(0.1)
            answer = service.http.get(f"{base}?q=kept")
        assert answer.status_code == 200 and answer.json()["total"] == 1, answer.text
        assert _get(service, f"{base}?q={secret}")["total"] == 0
        _indexed(service)
        with contextlib.closing(sqlite3.connect(index)) as con:
            match = ['"xyl" AND "uar" AND "ret"']  # trigrams of the secret
            assert con.execute("SELECT rowid FROM text WHERE text MATCH ?", match).fetchall() == []
        for path in store.iterdir():
            if path.is_file():
                assert secret.casefold().encode() not in path.read_bytes().lower(), path
    finally:
        assert service.stop() == 0


def test_the_service_says_when_the_text_index_fails_and_when_it_is_kept_again(
    tmp_path: Path,
) -> None:
    """A link planted at the index's ``-wal`` stops the index (it is never opened through a
    link): the service's log says why, says so when the link is gone and the index is kept
    again, and says it again when a link is planted again. It used to say the first failure
    of the process only, and never the recovery."""
    store = tmp_path / "store"
    with eventlog.open(store) as log:
        session = log.create_session().id
        log.add_prompts_batch([(session, f"words {i}") for i in range(3)])
    service = Service(tmp_path, [str(store)])
    link = store / "projections.duckdb.text-wal"
    search = "/v1/stores/default/sessions?q=words"

    def said(text: str, times: int) -> None:
        found = lambda: service.child.stderr().count(text) >= times  # noqa: E731
        service.child.wait_for(found, f"{text!r} {times} times")

    try:
        link.symlink_to(tmp_path / "elsewhere")
        assert _get(service, search)["total"] == 1  # the search reads the text
        said("lmg serve: the text index: ", 1)
        link.unlink()
        assert _get(service, search)["total"] == 1
        said("lmg serve: the text index is kept again", 1)
        link.symlink_to(tmp_path / "elsewhere")
        assert _get(service, search)["total"] == 1
        said("lmg serve: the text index: ", 2)
    finally:
        link.unlink(missing_ok=True)
        assert service.stop() == 0


def test_a_damaged_or_deleted_text_index_is_built_again_while_the_service_answers(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    with eventlog.open(store) as log:
        sessions = [log.create_session().id for _ in range(3)]
        log.add_prompts_batch([(s, f"words of session {i}") for i, s in enumerate(sessions)])
    service = Service(tmp_path, [str(store)])
    index = store / "projections.duckdb.text"
    try:
        search = "/v1/stores/default/sessions?q=OF%20SESSION%201"
        assert _ids(_get(service, search)) == [str(sessions[1])]
        _indexed(service)
        for damage in ("flipped", "deleted"):
            if damage == "deleted":
                index.unlink()
            else:
                data = bytearray(index.read_bytes())
                data[:100] = bytes(b ^ 0xFF for b in data[:100])
                index.write_bytes(bytes(data))
            assert _ids(_get(service, search)) == [str(sessions[1])], damage
            _indexed(service)  # the search asked for it: built again
            assert _ids(_get(service, search)) == [str(sessions[1])], damage
    finally:
        assert service.stop() == 0
    assert "Traceback" not in service.child.stderr()


def test_a_search_at_a_point_finds_text_deleted_after_it(tmp_path: Path) -> None:
    """The index is the live store's, but a search at a point reads the rows it names there:
    a prompt deleted later was live at the point, so its text is found at the point, with
    the index and without it (it was left out of the index as deleted)."""
    store = tmp_path / "store"
    with eventlog.open(store) as log:
        sessions = [log.create_session().id for _ in range(3)]
        log.add_prompts_batch([(s, f"plain words, turn {i}") for i, s in enumerate(sessions)])
        doomed = log.add_prompt(sessions[1], "a Marmot-Quasar here")
        point = log.next_lsn() - 1
        log.delete_node(doomed)
    service = Service(tmp_path, [str(store)])
    try:
        past = f"/v1/stores/default/sessions?q=marmot-quasar&at={point}"
        assert _ids(_get(service, past)) == [str(sessions[1])]  # read whole: no index yet
        _indexed(service)
        assert _ids(_get(service, past)) == [str(sessions[1])]  # through the index
        assert _get(service, "/v1/stores/default/sessions?q=marmot-quasar")["total"] == 0
    finally:
        assert service.stop() == 0


def test_a_link_planted_at_the_text_index_is_not_followed_and_searches_still_answer(
    tmp_path: Path,
) -> None:
    """The index is derived: a symbolic link at its file or its ``-wal`` is never opened
    (nothing is written through it), and the search reads the text instead of failing."""
    store = tmp_path / "store"
    with eventlog.open(store) as log:
        session = log.create_session().id
        log.add_prompt(session, "Zebra-Quartz words")
    service = Service(tmp_path, [str(store)])
    index = store / "projections.duckdb.text"
    target = tmp_path / "elsewhere"
    target.write_bytes(b"")
    try:
        search = "/v1/stores/default/sessions?q=zebra-quartz"
        assert _ids(_get(service, search)) == [str(session)]
        _indexed(service)
        for suffix in ("-wal", ""):
            planted = Path(f"{index}{suffix}")
            link = tmp_path / "link"  # renamed over the file: the indexer, which may make it
            link.symlink_to(target)  # anew at any moment, finds no gap between two steps
            link.rename(planted)
            assert _ids(_get(service, search)) == [str(session)], suffix
            assert _get(service, "/v1/stores/default/position")["indexed_lsn"] == -1, suffix
            assert planted.is_symlink() and target.read_bytes() == b"", suffix
            planted.unlink()
    finally:
        assert service.stop() == 0
    assert "Traceback" not in service.child.stderr()


def test_a_page_at_a_point_that_takes_too_long_to_replay_is_abandoned(tmp_path: Path) -> None:
    """The web view's routes built the view at ``?at=`` with no time limit (SQL's ``at``
    and a diff stop at `replay_time_s`): requests at a point of a big store held every
    query turn for as long as their folds took. Here the limit is shorter than any fold."""
    _store(tmp_path / "store")
    service = Service(tmp_path, [str(tmp_path / "store"), "--limit", "replay_time_s=0.000001"])
    try:
        for route in ("sessions", "agents", "templates"):
            error = _get(service, f"/v1/stores/default/{route}?at=5", 422)["error"]
            assert error["code"] == "time_limit", route
        assert _get(service, "/v1/stores/default/sessions")["total"] == 5
    finally:
        assert service.stop() == 0
