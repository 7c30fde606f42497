"""The fold: incremental equals rebuild, and the semantics of single events.

The property test drives the real append API with a hypothesis-drawn list of abstract
operations, each interpreted against the ids made so far (an operation lacking what it refers
to runs the one that makes it instead: a tool call without a response adds a response; nothing
deleted is ever referred to, so every append is valid). It reads the log back and folds it
twice into fresh in-memory databases: once as one batch, once cut into hypothesis-chosen
contiguous batches (down to batches of one event). Every table, the `agent_stats` view and
the checkpoints must be equal, and every session's running totals must equal a count of its
live rows. The deterministic tests pin down single semantics: tombstones subtract, an edge
dies with its first tombstone, tool completion, template and agent versions, and the two
ways a batch is refused.
"""

from __future__ import annotations

import random
import tempfile
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import duckdb
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

import eventlog
from eventlog import EdgeType, PromptMetadata, Record, TokenUsage, VariableSpec
from eventlog.events import tag_of
from projections._fold import fold
from projections._folder import commit_batch
from projections._schema import PROJECTIONS, TABLE_NAMES, checkpoint, ensure_schema
from projections.errors import PoisonEvent, ProjectionError

FAST: dict[str, Any] = {"durability": eventlog.Durability.NONE}

# -- databases -----------------------------------------------------------------------------------


def fresh_db() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    ensure_schema(con)
    return con


def fold_in_batches(records: Sequence[Record], cuts: Iterable[int]) -> duckdb.DuckDBPyConnection:
    """A fresh database with `records` folded in batches that end before each cut."""
    con = fresh_db()
    start = 0
    for end in [*sorted({c for c in cuts if 0 < c < len(records)}), len(records)]:
        commit_batch(con, records[start:end])
        start = end
    return con


def table_rows(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[Any, ...]]:
    return con.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()


def assert_same_tables(a: duckdb.DuckDBPyConnection, b: duckdb.DuckDBPyConnection) -> None:
    for table in (*TABLE_NAMES, "lmg_checkpoints"):
        left, right = table_rows(a, table), table_rows(b, table)
        assert left == right, f"table {table} differs"


LIVE_TOTALS = """
SELECT s.id,
       s.prompt_count, s.response_count, s.tool_count, s.prompt_tokens, s.completion_tokens,
       (SELECT count(*) FROM prompts p WHERE p.session_id = s.id AND p.deleted_ts IS NULL),
       (SELECT count(*) FROM responses r WHERE r.session_id = s.id AND r.deleted_ts IS NULL),
       (SELECT count(*) FROM tool_invocations t
         WHERE t.session_id = s.id AND t.deleted_ts IS NULL),
       (SELECT coalesce(sum(r.prompt_tokens), 0) FROM responses r
         WHERE r.session_id = s.id AND r.deleted_ts IS NULL),
       (SELECT coalesce(sum(r.completion_tokens), 0) FROM responses r
         WHERE r.session_id = s.id AND r.deleted_ts IS NULL)
FROM sessions s ORDER BY s.id
"""


def assert_session_totals_are_live_counts(con: duckdb.DuckDBPyConnection) -> None:
    """Each session's running totals equal a count of its live rows in the base tables."""
    for session_id, *values in con.execute(LIVE_TOTALS).fetchall():
        kept, counted = values[:5], values[5:]
        assert kept == counted, f"session {session_id}: totals {kept}, live rows {counted}"


# -- abstract operations -------------------------------------------------------------------------


class Op(NamedTuple):
    """One abstract operation: a kind, and numbers and values the interpreter picks with."""

    kind: str
    a: int
    b: int
    c: int
    flag: bool
    text: str
    meta: dict[str, Any]


WEIGHTS = {
    "session": 2,
    "update_session": 2,
    "fork": 1,
    "prompt": 4,
    "response": 4,
    "agent": 2,
    "update_agent": 2,
    "assign": 2,
    "transfer": 2,
    "template": 2,
    "child_template": 1,
    "update_template": 2,
    "link": 2,
    "tool": 3,
    "complete": 3,
    "edge": 2,
    "node": 1,
    "delete": 3,
}
KINDS = [kind for kind, weight in WEIGHTS.items() for _ in range(weight)]
CUSTOM_EDGE_TYPES = ["CITES", "SUPPORTS", "X_1"]
NODE_KINDS = ["document", "context", "feedback", "note"]
VARIABLE_NAMES = ["x", "y", "z"]

small_texts = st.text(st.characters(codec="utf-8"), max_size=12)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | small_texts
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(small_texts, inner, max_size=2),
    max_leaves=4,
)
metas = st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), json_values, max_size=3)
ops = st.builds(
    Op,
    st.sampled_from(KINDS),
    st.integers(0, 1_000),
    st.integers(0, 1_000),
    st.integers(0, 1_000),
    st.booleans(),
    small_texts,
    metas,
)
histories = st.lists(ops, min_size=10, max_size=35)
OPENING = Op("session", 0, 0, 0, False, "", {})
"""Every history starts with a session, so the log is never empty and most operations apply."""


@dataclass
class World:
    """The ids the operations made so far, and what an interpreter needs to stay valid."""

    sessions: list[uuid.UUID] = field(default_factory=list)
    prompts: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)  # prompt -> session
    responses: list[uuid.UUID] = field(default_factory=list)
    agents: list[uuid.UUID] = field(default_factory=list)
    templates: dict[uuid.UUID, list[VariableSpec]] = field(default_factory=dict)  # current
    pending: list[uuid.UUID] = field(default_factory=list)  # tool calls not yet completed
    completed: list[uuid.UUID] = field(default_factory=list)
    edges: list[uuid.UUID] = field(default_factory=list)
    nodes: list[uuid.UUID] = field(default_factory=list)
    deleted: set[uuid.UUID] = field(default_factory=set)

    def live(self, ids: Iterable[uuid.UUID]) -> list[uuid.UUID]:
        return [i for i in ids if i not in self.deleted]

    def categories(self) -> list[list[uuid.UUID]]:
        return [
            self.live(self.prompts),
            self.live(self.responses),
            self.live([*self.pending, *self.completed]),
            self.live(self.edges),
            self.live(self.agents),
            self.live(self.templates),
            self.live(self.sessions),
            self.live(self.nodes),
        ]

    def everything(self) -> list[uuid.UUID]:
        return [i for ids in self.categories() for i in ids]


def pick(ids: Sequence[uuid.UUID], i: int) -> uuid.UUID | None:
    return ids[i % len(ids)] if ids else None


def variables_of(op: Op) -> list[VariableSpec]:
    """Up to three variables, chosen by the bits of `a`; required by the bits of `b`."""
    return [
        VariableSpec(name=name, required=bool(op.b >> bit & 1), default=op.meta.get("a"))
        for bit, name in enumerate(VARIABLE_NAMES)
        if op.a >> bit & 1
    ]


def template_text(variables: list[VariableSpec], op: Op) -> str:
    return " ".join(f"{{{{{v.name}}}}}" for v in variables) + op.text


def bind(variables: list[VariableSpec], op: Op) -> dict[str, Any]:
    bound: dict[str, Any] = {v.name: op.text for v in variables if v.required}
    if op.flag:
        bound.update(op.meta)
    return bound


class Interpreter:
    """Runs abstract operations through the append API, each valid for the log so far."""

    def __init__(self, log: eventlog.EventLog) -> None:
        self.log = log
        self.w = World()

    def run(self, op: Op) -> bool:
        """Apply `op`, or the operation making what it lacks; False when nothing applied."""
        done: bool = getattr(self, f"op_{op.kind}")(op)
        return done

    def instead(self, op: Op, kind: str) -> bool:
        """Run the operation that makes what `op` lacks (a tool call lacks a response, ...)."""
        return self.run(op._replace(kind=kind))

    def op_session(self, op: Op) -> bool:
        s = self.log.create_session(op.meta, [op.text] if op.flag else [])
        self.w.sessions.append(s.id)
        return True

    def op_update_session(self, op: Op) -> bool:
        s = pick(self.w.live(self.w.sessions), op.a)
        if s is None:
            return self.instead(op, "session")
        removals = {k: None for bit, k in enumerate(("a", "b")) if op.c >> bit & 1}
        tags = [op.text, "t"] if op.flag else None
        self.log.update_session(s, {**removals, **op.meta}, tags)
        return True

    def op_fork(self, op: Op) -> bool:
        s = pick(self.w.live(self.w.sessions), op.a)
        if s is None:
            return self.instead(op, "session")
        points = [s, *self.w.live(p for p, ps in self.w.prompts.items() if ps == s)]
        point = pick(points, op.b) if op.flag else None
        forked = self.log.fork_session(s, point, op.meta)
        self.w.sessions.append(forked.id)
        return True

    def op_prompt(self, op: Op) -> bool:
        s = pick(self.w.live(self.w.sessions), op.a)
        if s is None:
            return self.instead(op, "session")
        kw: dict[str, Any] = {}
        same_session = self.w.live(p for p, ps in self.w.prompts.items() if ps == s)
        if op.b % 3 == 0:
            kw["parent_prompt_id"] = pick(same_session, op.c)
        if op.flag:
            kw["metadata"] = PromptMetadata(
                model=op.text or None,
                temperature=(op.c % 20) / 10,
                max_tokens=op.c or None,
                tools_available=["search"] if op.c % 2 else [],
                custom=op.meta,
            )
        content = f"prompt {op.text}"
        t = pick(self.w.live(self.w.templates), op.c) if op.b % 2 == 0 else None
        if t is not None:
            kw["template_id"] = t
            kw["variables"] = bind(self.w.templates[t], op)
            if op.c % 2:
                content = ""  # rendered from the template by the log
        p = self.log.add_prompt(s, content, **kw)
        self.w.prompts[p] = s
        return True

    def op_response(self, op: Op) -> bool:
        p = pick(self.w.live(self.w.prompts), op.a)
        if p is None:
            return self.instead(op, "prompt")
        r = self.log.add_response(
            p,
            f"answer {op.text}",
            TokenUsage(op.a % 300, op.b % 300) if op.c % 4 else None,
            finish_reason="stop" if op.flag else None,
            latency_ms=None if op.c % 5 == 0 else (op.c % 97) * 1.25,
            model=op.text or None,
            metadata=op.meta,
        )
        self.w.responses.append(r)
        return True

    def op_agent(self, op: Op) -> bool:
        a = self.log.add_agent(
            f"agent {op.text}",
            ["planner", "coder", "critic"][op.a % 3],
            [op.text] if op.flag else [],
            model=op.text or None,
            metadata=op.meta,
        )
        self.w.agents.append(a)
        return True

    def op_update_agent(self, op: Op) -> bool:
        a = pick(self.w.live(self.w.agents), op.a)
        if a is None:
            return self.instead(op, "agent")
        self.log.update_agent(
            a,
            name=op.text if op.b & 1 else None,
            role="reviewer" if op.b & 2 else None,
            capabilities=[op.text, "x"] if op.b & 4 else None,
            model="m2" if op.flag else None,
            metadata=op.meta if op.b & 8 else None,
        )
        return True

    def op_assign(self, op: Op) -> bool:
        p, a = pick(self.w.live(self.w.prompts), op.a), pick(self.w.live(self.w.agents), op.b)
        if p is None or a is None:
            return self.instead(op, "prompt" if p is None else "agent")
        self.w.edges.append(self.log.assign_agent_to_prompt(p, a))
        return True

    def op_transfer(self, op: Op) -> bool:
        agents = self.w.live(self.w.agents)
        r, to = pick(self.w.live(self.w.responses), op.a), pick(agents, op.b)
        if r is None or to is None:
            return self.instead(op, "response" if r is None else "agent")
        edge = self.log.transfer_to_agent(
            r,
            to,
            from_agent_id=pick(agents, op.c) if op.flag else None,
            reason=op.text or None,
            context_summary="summary" if op.c % 2 else None,
        )
        self.w.edges.append(edge)
        return True

    def op_template(self, op: Op) -> bool:
        variables = variables_of(op)
        t = self.log.create_template(
            f"t {op.text}",
            template_text(variables, op),
            variables,
            description=op.text if op.flag else None,
            metadata=op.meta,
        )
        self.w.templates[t] = variables
        return True

    def op_child_template(self, op: Op) -> bool:
        parent = pick(self.w.live(self.w.templates), op.c)
        if parent is None:
            return self.instead(op, "template")
        variables = variables_of(op)
        t = self.log.create_template_from_parent(
            parent, f"child {op.text}", template_text(variables, op), variables
        )
        self.w.templates[t] = variables
        return True

    def op_update_template(self, op: Op) -> bool:
        t = pick(self.w.live(self.w.templates), op.c)
        if t is None:
            return self.instead(op, "template")
        variables = variables_of(op)
        self.log.update_template(
            t,
            template_text(variables, op),
            variables,
            name=op.text if op.flag else None,
            description="v" if op.a % 2 else None,
        )
        self.w.templates[t] = variables
        return True

    def op_link(self, op: Op) -> bool:
        p, t = pick(self.w.live(self.w.prompts), op.a), pick(self.w.live(self.w.templates), op.b)
        if p is None or t is None:
            return self.instead(op, "prompt" if p is None else "template")
        self.w.edges.append(self.log.link_prompt_to_template(p, t, bind(self.w.templates[t], op)))
        return True

    def op_tool(self, op: Op) -> bool:
        r = pick(self.w.live(self.w.responses), op.a)
        if r is None:
            return self.instead(op, "response")
        name = ["search", "calc", "web"][op.b % 3]
        self.w.pending.append(self.log.add_tool_invocation(r, name, op.meta or None))
        return True

    def op_complete(self, op: Op) -> bool:
        tool = pick(self.w.live(self.w.pending), op.a)
        if tool is None:
            return self.instead(op, "tool")
        duration = None if op.c % 4 == 0 else op.c / 8
        if op.flag:
            self.log.complete_tool_invocation(tool, error=f"failed {op.text}", duration_ms=duration)
        else:
            self.log.complete_tool_invocation(tool, result=op.meta or None, duration_ms=duration)
        self.w.pending.remove(tool)
        self.w.completed.append(tool)
        return True

    def op_edge(self, op: Op) -> bool:
        everything = self.w.everything()
        source, target = pick(everything, op.a), pick(everything, op.b)
        if source is None or target is None:
            return self.instead(op, "node")
        if op.flag:
            edge_type: str = list(EdgeType)[op.c % len(EdgeType)]
        else:
            edge_type = CUSTOM_EDGE_TYPES[op.c % len(CUSTOM_EDGE_TYPES)]
        self.w.edges.append(self.log.add_edge(source, target, edge_type, op.meta))
        return True

    def op_node(self, op: Op) -> bool:
        session = pick(self.w.live(self.w.sessions), op.b) if op.flag else None
        n = self.log.add_node(
            NODE_KINDS[op.a % len(NODE_KINDS)],
            op.text or None,
            data=op.meta,
            session_id=session,
        )
        self.w.nodes.append(n)
        return True

    def op_delete(self, op: Op) -> bool:
        categories = self.w.categories()
        victim = pick(categories[op.b % len(categories)], op.a)
        if victim is None:
            victim = pick(self.w.everything(), op.a)
        if victim is None:
            return False
        self.log.delete_node(victim, reason=op.text or None)
        self.w.deleted.add(victim)
        return True


def build_log(path: Path, history: Sequence[Op]) -> list[Record]:
    """Append `history` (skipping what cannot apply) and read the whole log back."""
    with eventlog.open(path, **FAST) as log:
        interpreter = Interpreter(log)
        for op in (OPENING, *history):
            interpreter.run(op)
        records = list(log.read())
    if currently_in_test_context():
        event(f"events: {len(records) // 10 * 10}+")
        for tag in sorted({tag_of(r.event) for r in records}):
            event(tag)
    return records


# -- the property --------------------------------------------------------------------------------


@pytest.mark.slow
@settings(
    max_examples=30,  # each example costs two databases and ~10 transactions
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(history=histories, data=st.data())
def test_incremental_fold_equals_rebuild(history: list[Op], data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        records = build_log(Path(tmp) / "store", history)

    whole = fresh_db()
    commit_batch(whole, records)
    assert checkpoint(whole) == records[-1].lsn

    # A few random cuts, and a window of events folded one at a time (each batch costs a
    # transaction, so the count is bounded; test_every_event_alone_equals_rebuild does all).
    inner = range(1, len(records))
    cuts: set[int] = set()
    if inner:
        cuts = data.draw(st.sets(st.sampled_from(inner), max_size=3), label="cuts")
        start = data.draw(st.sampled_from(inner), label="singles from")
        cuts.update(range(start, start + data.draw(st.integers(0, 3), label="singles")))
    event(f"batches: {len(cuts) + 1 if len(cuts) < 9 else '10+'}")
    split = fold_in_batches(records, cuts)
    assert checkpoint(split) == records[-1].lsn
    assert_session_totals_are_live_counts(split)
    assert_same_tables(whole, split)
    whole.close()
    split.close()


def random_history(rng: random.Random, length: int) -> list[Op]:
    meta: list[dict[str, Any]] = [
        {},
        {"a": 1},
        {"b": "x", "c": [1.5, None]},
        {"a": None},
        {"d": {"k": True}},
    ]
    return [
        Op(
            rng.choice(KINDS),
            rng.randrange(1_000),
            rng.randrange(1_000),
            rng.randrange(1_000),
            rng.random() < 0.5,
            rng.choice(["", "x", "ünï"]),
            rng.choice(meta),
        )
        for _ in range(length)
    ]


@pytest.mark.slow
def test_every_event_alone_equals_rebuild(store: Path, rng: random.Random) -> None:
    records = build_log(store, random_history(rng, 60))
    whole = fold_in_batches(records, [])
    alone = fold_in_batches(records, range(1, len(records)))
    assert_session_totals_are_live_counts(alone)
    assert_same_tables(whole, alone)


# -- deterministic semantics ---------------------------------------------------------------------


def session_row(con: duckdb.DuckDBPyConnection, session_id: uuid.UUID) -> dict[str, Any]:
    cursor = con.execute("SELECT * FROM sessions WHERE id = ?", [session_id])
    names = [d[0] for d in cursor.description or ()]
    rows = cursor.fetchall()
    assert len(rows) == 1
    return dict(zip(names, rows[0], strict=True))


def test_deletion_subtracts_from_session_counts(store: Path) -> None:
    with eventlog.open(store, **FAST) as log:
        s = log.create_session().id
        other = log.create_session().id
        p1, p2, p3 = (log.add_prompt(s, f"q{i}") for i in range(3))
        r1 = log.add_response(p1, "a1", TokenUsage(10, 100))
        r2 = log.add_response(p2, "a2", TokenUsage(20, 200))
        r3 = log.add_response(p3, "a3", TokenUsage(40, 400))
        t1 = log.add_tool_invocation(r1, "search")
        t2 = log.add_tool_invocation(r2, "calc")
        log.complete_tool_invocation(t2, result=4)
        log.add_prompt(other, "elsewhere")
        middle = log.next_lsn()
        log.delete_node(p2)  # its response stays live: it still counts
        log.delete_node(r3)
        last_touch = log.delete_node(t1)
        log.delete_node(log.add_edge(p1, p3, "CITES"))  # an edge: no count changes
        records = list(log.read())

    for cuts in ([], [middle], range(1, len(records))):
        con = fold_in_batches(records, cuts)
        row = session_row(con, s)
        assert (row["prompt_count"], row["response_count"], row["tool_count"]) == (2, 2, 1)
        assert (row["prompt_tokens"], row["completion_tokens"]) == (30, 300)
        assert row["last_activity_ts"] == records[last_touch].event.ts
        other_row = session_row(con, other)
        assert (other_row["prompt_count"], other_row["response_count"]) == (1, 0)
        assert_session_totals_are_live_counts(con)
        deleted = con.execute(
            "SELECT id FROM prompts WHERE deleted_ts IS NOT NULL "
            "UNION ALL SELECT id FROM responses WHERE deleted_ts IS NOT NULL "
            "UNION ALL SELECT id FROM tool_invocations WHERE deleted_ts IS NOT NULL"
        ).fetchall()
        assert {d for (d,) in deleted} == {p2, r3, t1}


def test_deleting_a_session_keeps_its_totals(store: Path) -> None:
    with eventlog.open(store, **FAST) as log:
        s = log.create_session().id
        p = log.add_prompt(s, "q")
        log.add_response(p, "a", TokenUsage(1, 2))
        gone_at = log.delete_node(s)
        records = list(log.read())
    con = fold_in_batches(records, [gone_at])
    row = session_row(con, s)
    assert row["deleted_ts"] == records[gone_at].event.ts
    assert (row["prompt_count"], row["response_count"], row["completion_tokens"]) == (1, 1, 2)


def test_an_edge_dies_with_its_first_tombstone_however_the_log_is_cut(store: Path) -> None:
    """An edge is deleted by its own tombstone or by one of an end it had; the first counts.

    (Found by the property test: with both tombstones in one batch, the later one won.)
    """
    with eventlog.open(store, **FAST) as log:
        s = log.create_session().id
        p1, p2 = log.add_prompt(s, "one"), log.add_prompt(s, "two")
        cites = log.add_edge(p2, p1, "CITES")
        both_ends = log.add_edge(p1, p2, "SUPPORTS")
        first = log.delete_node(p1)  # takes both edges out of the live graph
        log.delete_node(cites)  # still allowed: the log knows the edge itself as live
        log.delete_node(p2)
        records = list(log.read())

    for cuts in ([], [first], [first + 1], range(1, len(records))):
        con = fold_in_batches(records, cuts)
        deleted = dict(
            con.execute(
                "SELECT id, deleted_ts FROM edges WHERE id IN (?, ?)", [cites, both_ends]
            ).fetchall()
        )
        assert deleted == {cites: records[first].event.ts, both_ends: records[first].event.ts}


def test_tool_completion_updates_the_status(store: Path) -> None:
    with eventlog.open(store, **FAST) as log:
        s = log.create_session().id
        r = log.add_response(log.add_prompt(s, "q"), "a")
        ok = log.add_tool_invocation(r, "search", {"q": "rust"})
        bad = log.add_tool_invocation(r, "calc", [1, 2])
        waiting = log.add_tool_invocation(r, "web")
        folded_before = log.next_lsn()
        ok_at = log.complete_tool_invocation(ok, result={"hits": 3}, duration_ms=12.5)
        bad_at = log.complete_tool_invocation(bad, error="division by zero", duration_ms=1.0)
        records = list(log.read())

    for cuts in ([], [folded_before], [folded_before, folded_before + 1]):
        con = fold_in_batches(records, cuts)
        rows = {
            tool_id: rest
            for tool_id, *rest in con.execute(
                "SELECT id, tool_name, status, result, error, duration_ms, completed_ts, "
                "parameters FROM tool_invocations"
            ).fetchall()
        }
        assert rows[ok] == [
            "search",
            "success",
            '{"hits":3}',
            None,
            12.5,
            records[ok_at].event.ts,
            '{"q":"rust"}',
        ]
        assert rows[bad] == [
            "calc",
            "error",
            None,
            "division by zero",
            1.0,
            records[bad_at].event.ts,
            "[1,2]",
        ]
        assert rows[waiting] == ["web", "pending", None, None, None, None, None]
        assert session_row(con, s)["tool_count"] == 3


def test_template_update_creates_version_2(store: Path) -> None:
    with eventlog.open(store, **FAST) as log:
        t = log.create_template(
            "greet", "Hello {{who}}", [VariableSpec(name="who")], description="first"
        )
        child = log.create_template_from_parent(t, "greet-child", "Hi {{who}}!")
        cut = log.next_lsn()
        version = log.update_template(t, "Good day {{who}}", [VariableSpec(name="who")])
        s = log.create_session().id
        p = log.add_prompt(s, template_id=t, variables={"who": "Ada"})
        records = list(log.read())
    assert version == 2

    for cuts in ([], [cut]):
        con = fold_in_batches(records, cuts)
        rows = con.execute(
            "SELECT version, name, text, description, is_current, parent_id, ancestors, lsn "
            "FROM templates WHERE id = ? ORDER BY version",
            [t],
        ).fetchall()
        assert rows == [
            (1, "greet", "Hello {{who}}", "first", False, None, [], 0),
            (2, "greet", "Good day {{who}}", "first", True, None, [], cut),
        ]
        assert con.execute(
            "SELECT version, is_current, ancestors FROM templates WHERE id = ?", [child]
        ).fetchall() == [(1, True, [t])]
        prompt = con.execute(
            "SELECT content, template_id, template_version, variables FROM prompts WHERE id = ?",
            [p],
        ).fetchall()
        assert prompt == [("Good day Ada", t, 2, '{"who":"Ada"}')]
        lineage = con.execute(
            "SELECT template_id, template_version, template_ancestors FROM lineage "
            "WHERE node_id = ?",
            [p],
        ).fetchall()
        assert lineage == [(t, 2, [])]


def test_agent_update_bumps_the_version_and_keeps_unspecified_fields(store: Path) -> None:
    with eventlog.open(store, **FAST) as log:
        a = log.add_agent("ada", "planner", ["plan"], model="m1", metadata={"team": "x"})
        cut = log.next_lsn()
        first = log.update_agent(a, role="coder")
        second = log.update_agent(a, capabilities=["code", "test"], metadata={})
        records = list(log.read())

    def agent(con: duckdb.DuckDBPyConnection) -> tuple[Any, ...]:
        rows = con.execute(
            "SELECT name, role, capabilities, model, metadata, version, updated_ts "
            "FROM agents WHERE id = ?",
            [a],
        ).fetchall()
        assert len(rows) == 1
        return rows[0]

    once = fold_in_batches(records[:second], [cut])
    assert agent(once) == (
        "ada",
        "coder",
        ["plan"],
        "m1",
        '{"team":"x"}',
        2,
        records[first].event.ts,
    )
    for cuts in ([], [cut], [cut, second]):
        twice = fold_in_batches(records, cuts)
        # an empty metadata dict clears it; None (not given) keeps it
        expected = ("ada", "coder", ["code", "test"], "m1", None, 3, records[second].event.ts)
        assert agent(twice) == expected


def test_a_batch_must_start_just_after_the_checkpoint(store: Path) -> None:
    with eventlog.open(store, **FAST) as log:
        s = log.create_session().id
        log.add_prompt(s, "q")
        log.add_prompt(s, "r")
        records = list(log.read())

    con = fresh_db()
    with pytest.raises(ProjectionError, match="starts at LSN 1 but the projections expect 0") as e:
        commit_batch(con, records[1:])
    assert not isinstance(e.value, PoisonEvent)
    assert checkpoint(con) == -1
    for table in TABLE_NAMES:
        assert table_rows(con, table) == [], table

    commit_batch(con, records[:2])
    with pytest.raises(ProjectionError, match="starts at LSN 1 but the projections expect 2"):
        commit_batch(con, records[1:])  # folding an event twice is refused too
    assert checkpoint(con) == 1
    assert session_row(con, s)["prompt_count"] == 1


def test_fold_without_the_rows_an_event_refers_to_is_poison(store: Path) -> None:
    """`fold` itself has no checkpoint check: a prompt whose session it never saw is poison."""
    with eventlog.open(store, **FAST) as log:
        s = log.create_session().id
        log.add_prompt(s, "q")
        records = list(log.read())
    con = fresh_db()
    con.execute("BEGIN")
    with pytest.raises(PoisonEvent) as e:
        fold(con, PROJECTIONS, records[1:])
    con.execute("ROLLBACK")
    assert (e.value.lsn, e.value.event_type) == (1, "prompt.added")
    assert str(s) in e.value.reason
    assert checkpoint(con) == -1


def test_a_missing_template_beside_one_with_two_versions_is_poison(store: Path) -> None:
    """The reference check counts distinct ids: a template has a row per version, so two
    rows of one template must not stand in for another template that is missing."""
    with eventlog.open(store, **FAST) as log:
        s = log.create_session().id
        kept = log.create_template("kept", "Hi")
        log.update_template(kept, "Hello")  # a second row of `kept`
        gone = log.create_template("gone", "Bye")
        first_batch = log.next_lsn()
        log.add_prompt(s, template_id=kept)
        poison_at = log.next_lsn()
        log.add_prompt(s, template_id=gone)
        records = list(log.read())

    con = fresh_db()
    commit_batch(con, records[:first_batch])
    con.execute("DELETE FROM templates WHERE id = ?", [gone])
    with pytest.raises(PoisonEvent) as e:
        commit_batch(con, records[first_batch:])
    assert (e.value.lsn, e.value.event_type) == (poison_at, "prompt.added")
    assert str(gone) in e.value.reason
    assert checkpoint(con) == poison_at - 1


def test_poison_event_commits_the_events_before_it(store: Path) -> None:
    with eventlog.open(store, **FAST) as log:
        doomed = log.create_session().id
        log.add_prompt(doomed, "before")
        first_batch = log.next_lsn()
        survivor = log.create_session().id
        kept = log.add_prompt(survivor, "kept")
        poison_at = log.next_lsn()
        log.add_prompt(doomed, "poison")
        after = log.add_prompt(survivor, "after the poison")
        records = list(log.read())

    con = fresh_db()
    commit_batch(con, records[:first_batch])
    con.execute("DELETE FROM sessions WHERE id = ?", [doomed])
    with pytest.raises(PoisonEvent) as e:
        commit_batch(con, records[first_batch:])
    assert e.value.lsn == poison_at
    assert e.value.event_type == "prompt.added"
    assert f"event {poison_at} (prompt.added)" in str(e.value)
    assert checkpoint(con) == poison_at - 1
    assert [
        lsn for (lsn,) in con.execute("SELECT DISTINCT lsn FROM lmg_checkpoints").fetchall()
    ] == [poison_at - 1]
    assert session_row(con, survivor)["prompt_count"] == 1
    prompts = {p for (p,) in con.execute("SELECT id FROM prompts").fetchall()}
    assert kept in prompts
    assert after not in prompts
    assert len(prompts) == 2  # "before" and "kept"


def test_the_first_poison_by_lsn_is_reported_whichever_projection_checks_it(store: Path) -> None:
    """The set tier checks every reference of a batch in one query, after all projections:
    an assignment to a lost agent (checked by conversations) after a completion of a lost
    tool call (checked by tools) still reports the completion, and commits what precedes it."""
    with eventlog.open(store, **FAST) as log:
        s = log.create_session().id
        agent = log.add_agent("ada", "planner")
        p = log.add_prompt(s, "q")
        r = log.add_response(p, "a")
        tool = log.add_tool_invocation(r, "search")
        first_batch = log.next_lsn()
        kept = log.add_prompt(s, "kept")
        poison_at = log.next_lsn()
        log.complete_tool_invocation(tool, result=1)
        log.assign_agent_to_prompt(p, agent)
        records = list(log.read())

    con = fresh_db()
    commit_batch(con, records[:first_batch])
    con.execute("DELETE FROM tool_invocations WHERE id = ?", [tool])
    con.execute("DELETE FROM agents WHERE id = ?", [agent])
    with pytest.raises(PoisonEvent) as e:
        commit_batch(con, records[first_batch:])
    assert (e.value.lsn, e.value.event_type) == (poison_at, "tool.completed")
    assert str(tool) in e.value.reason and "tool_invocations" in e.value.reason
    assert checkpoint(con) == poison_at - 1
    assert con.execute("SELECT count(*) FROM prompts WHERE id = ?", [kept]).fetchall() == [(1,)]


def test_spans_with_the_same_ids_and_different_starts_are_two_rows(store: Path) -> None:
    """A span's identity in the table is its ids and its start (a re-export repeats all
    three; docs/sql.md): what differs in its start is kept, not guessed away, in one batch
    or two, and a copy of either is still left out."""
    from eventlog.events import SpanRecorded  # noqa: PLC0415

    trace, span = "cd" * 16, "03" * 8
    with eventlog.open(store, **FAST) as log:
        for name, start in [("early", 1), ("late", 9), ("copy", 1), ("copy", 9)]:
            log.append(SpanRecorded(trace_id=trace, span_id=span, name=name, start_ns=start))
        records = list(log.read())
    for cuts in ([], [1], [2], [1, 2, 3]):
        con = fold_in_batches(records, cuts)
        assert con.execute("SELECT name, start_ns FROM spans ORDER BY lsn").fetchall() == [
            ("early", 1),
            ("late", 9),
        ], cuts


def test_a_span_recorded_twice_keeps_its_first_row_however_the_log_is_cut(store: Path) -> None:
    """A span stored again (two stores merged, a hand-written copy) leaves the row of its
    first `span.recorded` as it was, whether the copy is in the same batch or a later one:
    the insert leaves out a span whose key is in the table or earlier in the batch."""
    from eventlog.events import SpanRecorded  # noqa: PLC0415

    trace = "ab" * 16
    with eventlog.open(store, **FAST) as log:
        for name, span in [("first", "01"), ("other", "02"), ("copy", "01"), ("again", "02")]:
            log.append(SpanRecorded(trace_id=trace, span_id=span * 8, name=name, end_ns=5))
        records = list(log.read())
    for cuts in ([], [2], [3], [1, 2, 3]):
        con = fold_in_batches(records, cuts)
        assert con.execute("SELECT span_id, name, lsn FROM spans ORDER BY lsn").fetchall() == [
            ("01" * 8, "first", 0),
            ("02" * 8, "other", 1),
        ], cuts
        assert checkpoint(con) == 3
