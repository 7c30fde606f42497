"""Context windows, threads and lineage walks answer as the statements they replaced did.

`Reference` is a `GraphReader` with the earlier statements of the reads issue 14 made
cheaper (`_turns` as a Top-N of whole prompts, then the responses; `get_session` and a
walk's first node through `get_node`'s probe of every node table). Seeded random stores
with the shapes those statements must agree on (forks at prompts and responses, several
responses to a prompt, late responses to earlier prompts, tombstones of prompts,
responses, sessions and templates, template versions, custom edges, INVOKES among them)
are read both ways, fresh and then from the caches, and every answer must be equal.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from functools import partial
from operator import methodcaller
from pathlib import Path
from typing import Any

import pytest

import eventlog
from eventlog import TokenUsage, VariableSpec
from projections import MemoryGraph, NotFound, Prompt, Response, Session, Turn, _reads
from projections._reads import TABLE_OF_TYPE, GraphReader, _type_of

FAST: dict[str, Any] = {"durability": eventlog.Durability.NONE}


class Reference(GraphReader):
    """The reads as they were before the statements were narrowed and merged."""

    def get_session(self, session_id: uuid.UUID) -> Session:
        node = self.get_node(session_id)
        if not isinstance(node, Session):
            raise NotFound(f"no session {session_id}")
        return node

    def _table_of(self, node_id: uuid.UUID, *, live: bool = False) -> str | None:
        if not live:
            return super()._table_of(node_id)
        node = self.get_node(node_id)
        return None if node is None else TABLE_OF_TYPE[_type_of(node)][0]

    def _turns(self, session_id: uuid.UUID, last: int | None, upto: int | None) -> list[Turn]:
        bound = "" if upto is None else f" AND lsn <= {int(upto)}"
        limit = "" if last is None else f" ORDER BY lsn DESC LIMIT {int(last)}"
        session = f"'{session_id}'"
        prompts: list[Prompt] = self._structs(
            Prompt,
            f"SELECT * FROM prompts WHERE session_id = {session} AND deleted_ts IS NULL"
            f"{bound}{limit}",
        )
        prompts.sort(key=lambda p: p.lsn)
        if not prompts:
            return []
        responses: list[Response] = self._structs(
            Response,
            f"SELECT * FROM responses WHERE session_id = {session} AND deleted_ts IS NULL "
            f"AND lsn >= {int(prompts[0].lsn)}{bound} ORDER BY lsn",
        )
        by_prompt: dict[uuid.UUID, list[Response]] = {p.id: [] for p in prompts}
        for r in responses:
            if r.prompt_id in by_prompt:
                by_prompt[r.prompt_id].append(r)
        return [Turn(p, by_prompt[p.id]) for p in prompts]


def build(g: MemoryGraph, rng: random.Random) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """A random store; returns its sessions and every other node id (deleted ones too).
    A step the log refuses (a reference to a deleted node) writes nothing and is skipped."""
    agents = [g.add_agent(f"agent-{i}", "worker") for i in range(3)]
    base = g.create_template("base", "Hello {name}", [VariableSpec(name="name")])
    child = g.create_template_from_parent(base, "child", "Hi {name}!")
    g.update_template(base, "Hello again {name}")
    templates = [base, child]
    sessions = [g.create_session().id for _ in range(4)]
    nodes: list[uuid.UUID] = [*agents, *templates]
    own: dict[uuid.UUID, list[uuid.UUID]] = {s: [] for s in sessions}  # prompts, responses
    prompts: dict[uuid.UUID, list[uuid.UUID]] = {s: [] for s in sessions}
    for step in range(80):
        s = rng.choice(sessions)
        roll = rng.random()
        try:
            if roll < 0.45 or not prompts[s]:
                kw: dict[str, Any] = {}
                if rng.random() < 0.3:
                    kw = {"template_id": rng.choice(templates), "variables": {"name": f"n{step}"}}
                if prompts[s] and rng.random() < 0.3:
                    kw["parent_prompt_id"] = rng.choice(prompts[s])
                p = g.add_prompt(s, "" if "template_id" in kw else f"q{step}", **kw)
                prompts[s].append(p)
                own[s].append(p)
                nodes.append(p)
                if rng.random() < 0.5:
                    g.assign_agent_to_prompt(p, rng.choice(agents))
            elif roll < 0.8:  # to the last prompt, or a late answer to an earlier one
                p = prompts[s][-1] if rng.random() < 0.7 else rng.choice(prompts[s])
                r = g.add_response(p, f"a{step}", TokenUsage(step, 2 * step))
                own[s].append(r)
                nodes.append(r)
                if rng.random() < 0.3:
                    nodes.append(g.add_tool_invocation(r, "search", {"q": step}))
                if rng.random() < 0.2:
                    g.transfer_to_agent(r, rng.choice(agents), reason="busy")
            elif roll < 0.87:  # at a prompt, at a response, or all the parent has
                fork = g.fork_session(s, fork_point=rng.choice([None, *own[s]])).id
                sessions.append(fork)
                own[fork], prompts[fork] = [], []
            elif roll < 0.92:
                a, b = rng.sample(nodes, 2)
                g.add_edge(a, b, rng.choice(["INVOKES", "CITES", "FOLLOWS"]), {"step": step})
            else:
                g.delete_node(rng.choice([*nodes[3:], *sessions[1:]]))
        except eventlog.EventLogError:
            continue
    return sessions, nodes


def both(g: MemoryGraph, read: Callable[[GraphReader], Any]) -> tuple[Any, Any]:
    """The answers of a fresh `GraphReader` and a fresh `Reference` on the graph's database,
    each asked twice (the second from its caches). Fresh, so that both start with empty
    caches (test_read_cache compares cached answers with fresh ones)."""

    def compare(reader: GraphReader) -> tuple[Any, Any]:
        new, old = GraphReader(reader.con), Reference(reader.con)
        return [answer(read, new), answer(read, new)], [answer(read, old), answer(read, old)]

    return g._run(compare)


def answer(read: Callable[[GraphReader], Any], reader: GraphReader) -> Any:
    try:
        return read(reader)
    except NotFound as exc:
        return ("NotFound", str(exc))


@pytest.mark.parametrize("seed", range(3))
def test_windows_threads_and_walks_answer_as_the_statements_they_replaced(
    store: Path, seed: int
) -> None:
    rng = random.Random(seed)
    with MemoryGraph.open(store, **FAST) as g:
        sessions, nodes = build(g, rng)
        reads: list[Callable[[GraphReader], Any]] = []
        for s in [*sessions, nodes[-1], uuid.uuid4()]:  # a prompt and an unknown id too
            reads.append(methodcaller("conversation_thread", s))
            reads += [methodcaller("context_window", s, k) for k in (1, 2, 3, 10)]
        for node in nodes:
            for depth in (1, 3, 5):
                reads.append(methodcaller("ancestors", node, depth))
                reads.append(methodcaller("descendants", node, depth))
        for read in reads:
            new, old = both(g, read)
            assert new == old


class _Counting:
    """A connection that counts the statements run through it."""

    def __init__(self, con: Any) -> None:
        self.con, self.statements = con, 0

    def execute(self, *args: Any) -> Any:
        self.statements += 1
        return self.con.execute(*args)


def _every_kind(g: MemoryGraph, rng: random.Random) -> list[uuid.UUID]:
    """Ids of a random store: every node, generic ones and edges among them (some deleted),
    each node table's and no table's (edges), and ids the log never saw."""
    sessions, nodes = build(g, rng)
    session = g.create_session().id
    generic = [g.add_node("document", f"doc {i}", session_id=session) for i in range(3)]
    g.delete_node(generic[0])
    edges = [g.add_edge(nodes[-1], generic[1], "CITES"), g.add_edge(generic[1], session, "ABOUT")]
    g.delete_node(edges[0])
    ids = [*sessions, session, *nodes, *generic, *edges, uuid.uuid4(), uuid.uuid4()]
    assert {g.kind_of(i) for i in ids} == {*eventlog.NodeKind, None}
    return ids


@pytest.mark.parametrize("seed", range(2))
def test_get_node_with_the_logs_kind_hint_answers_as_the_probe_of_every_table(
    store: Path, seed: int
) -> None:
    with MemoryGraph.open(store, **FAST) as g:
        ids = _every_kind(g, random.Random(seed))

        def compare(reader: GraphReader) -> None:
            for deleted in (False, True):
                hinted = GraphReader(reader.con, kind_of=g.kind_of)
                probed = GraphReader(reader.con)
                for i in ids:
                    got = hinted.get_node(i, include_deleted=deleted)
                    assert got == probed.get_node(i, include_deleted=deleted)

        g._run(compare)


def test_get_node_of_an_id_the_log_knows_runs_one_statement_on_one_table(store: Path) -> None:
    with MemoryGraph.open(store, **FAST) as g:
        ids = _every_kind(g, random.Random(7))
        unknown = uuid.uuid4()
        first = {g.kind_of(i): i for i in reversed(ids)}  # one id of each kind, and None

        def count(reader: GraphReader, node_id: uuid.UUID, hint: bool) -> int:
            con = _Counting(reader.con)
            kind_of = g.kind_of if hint else None
            GraphReader(con, kind_of=kind_of).get_node(node_id)  # type: ignore[arg-type]
            return con.statements

        for kind, node_id in first.items():
            hinted = g._run(partial(count, node_id=node_id, hint=True))
            probed = g._run(partial(count, node_id=node_id, hint=False))
            if kind is None:  # unknown to the log: looked for everywhere, as without the hint
                assert hinted == probed == 1
            elif kind == eventlog.NodeKind.EDGE:  # in no node table: nothing to ask
                assert (hinted, probed) == (0, 1)
            else:
                assert (hinted, probed) == (1, 2)
        assert g._run(partial(count, node_id=unknown, hint=True)) == 1


def test_a_graph_that_has_only_read_reads_its_newest_node_from_one_table(store: Path) -> None:
    """Reopened, a graph that has not appended knows the kind of the ids in the log's last
    segment (the log builds that segment's id index on the first `kind_of`), so `get_node`
    of the newest node is one statement, not the probe of every table and then the row."""
    with MemoryGraph.open(store, **FAST) as g:
        newest = g.add_prompt(g.create_session().id, "q")
    with MemoryGraph.open(store, **FAST) as g:

        def count(reader: GraphReader) -> int:
            con = _Counting(reader.con)
            node = GraphReader(con, kind_of=g.kind_of).get_node(newest)  # type: ignore[arg-type]
            assert isinstance(node, Prompt) and node.id == newest
            return con.statements

        assert g._run(count) == 1
        assert g.kind_of(newest) == eventlog.NodeKind.PROMPT


@pytest.mark.parametrize("seed", range(2))
def test_walks_with_the_logs_kind_hint_answer_as_the_probe_of_live_rows(
    store: Path, seed: int
) -> None:
    """A cold walk takes its first node's table from the log's hint instead of a probe:
    deleted nodes (the hint does not say a node was deleted), edges, custom INVOKES edges
    and unknown ids included, both ways."""
    with MemoryGraph.open(store, **FAST) as g:
        ids = _every_kind(g, random.Random(seed))

        def compare(reader: GraphReader) -> None:
            for i in ids:
                for walk in ("ancestors", "descendants"):
                    hinted = GraphReader(reader.con, kind_of=g.kind_of)
                    probed = GraphReader(reader.con)
                    assert getattr(hinted, walk)(i, 5) == getattr(probed, walk)(i, 5)

        g._run(compare)


def test_a_cold_walk_from_a_node_the_log_knows_runs_no_probe(store: Path) -> None:
    with MemoryGraph.open(store, **FAST) as g:
        s = g.create_session().id
        r = g.add_response(g.add_prompt(s, "q"), "a")

        def count(reader: GraphReader, hint: bool) -> int:
            con = _Counting(reader.con)
            GraphReader(con, kind_of=g.kind_of if hint else None).ancestors(r, 5)  # type: ignore[arg-type]
            return con.statements

        assert g._run(partial(count, hint=True)) == g._run(partial(count, hint=False)) - 1


def test_a_cold_window_of_a_session_no_longer_than_asked_runs_two_statements(store: Path) -> None:
    """The session's row says how many live prompts it has; when the window asks for at
    least that many, the statement that finds the window's first LSN is skipped (the
    session, then its prompts and responses). A longer session still runs it."""
    with MemoryGraph.open(store, **FAST) as g:
        short, long = g.create_session().id, g.create_session().id
        for i in range(12):
            g.add_response(g.add_prompt(long, f"q{i}"), f"a{i}")
            if i < 3:
                g.add_response(g.add_prompt(short, f"q{i}"), f"a{i}")
        g.delete_node(g.add_prompt(short, "deleted"))

        def count(reader: GraphReader, session: uuid.UUID, turns: int) -> tuple[int, Any]:
            con = _Counting(reader.con)
            window = GraphReader(con).context_window(session, turns)  # type: ignore[arg-type]
            return con.statements, window

        def reference(reader: GraphReader, session: uuid.UUID, turns: int) -> Any:
            return Reference(reader.con).context_window(session, turns)

        for session, turns, statements in [(short, 10, 2), (short, 3, 2), (long, 10, 3)]:
            ran, window = g._run(partial(count, session=session, turns=turns))
            assert ran == statements
            assert window == g._run(partial(reference, session=session, turns=turns))
        assert [t.prompt.content for t in g.context_window(short, 2)] == ["q1", "q2"]


@pytest.mark.parametrize("seed", range(2))
def test_walks_answer_the_same_whether_close_ids_share_a_scan_or_not(
    store: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A walk looks up ids made close together in one scan (`BETWEEN` and `IN`), others
    alone; with every id alone (`NEAR_MS` below zero), every answer is the same."""
    with MemoryGraph.open(store, **FAST) as g:
        ids = _every_kind(g, random.Random(seed))

        def walks(reader: GraphReader) -> list[Any]:
            fresh = GraphReader(reader.con, kind_of=g.kind_of)
            return [
                getattr(fresh, walk)(i, depth)
                for i in ids
                for walk in ("ancestors", "descendants")
                for depth in (1, 5)
            ]

        shared = g._run(walks)
        monkeypatch.setattr(_reads, "NEAR_MS", -1)
        assert g._run(walks) == shared


def test_ids_made_close_together_share_one_condition() -> None:
    """UUIDv7 ids within `NEAR_MS` of the first of a run share a condition, ids further
    apart or of another version get their own, and together they match each id once."""
    ms = 1_700_000_000_000

    def v7(at: int, tail: int) -> uuid.UUID:
        return uuid.UUID(int=(at << 80) | (0x7 << 76) | (0b10 << 62) | tail)

    near = [v7(ms, 1), v7(ms + 5, 2), v7(ms + _reads.NEAR_MS, 3)]
    far, other = v7(ms + _reads.NEAR_MS + 1, 4), uuid.UUID(int=5, version=4)
    assert all(i.version == 7 for i in [*near, far])
    conditions = _reads._matching("id", [far, *near, other, near[0]])
    assert len(conditions) == 3
    assert conditions[0] == f"id = '{other}'"  # version 4 sorts first here
    assert conditions[1].startswith(f"id BETWEEN '{near[0]}' AND '{near[-1]}' AND id IN (")
    assert conditions[2] == f"id = '{far}'"
    assert _reads._matching("id", []) == []
