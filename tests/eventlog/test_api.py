"""The public append API, through ``import eventlog`` only: every helper's happy path, and bad
input at every helper (issue test 9: "clear error, nothing written").

The bad-input tests are one table, `BAD_INPUT`: (helper, why, arguments, expected error,
what the message must name). Every case runs against a copy of one prepared store, `World`,
which holds a live and a deleted node of every kind, so unknown ids, ids of the wrong kind and
deleted nodes can be named for every argument that refers to a node. Each case asserts the
exact error class, that the message names the problem, and that the store's event count and
every file byte are the same afterwards. `test_every_helper_has_bad_input_cases` walks
`eventlog.EventLog`'s public methods, so a new helper without cases fails the suite.

The async twin runs a representative part of the table, and its helper names are checked
against `EventLog`'s. No pytest-asyncio: async tests call `asyncio.run` themselves.
"""

# The case tables keep one case a line, however long: they are read as tables.
# ruff: noqa: E501

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import inspect
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

import eventlog
from eventlog import (
    DeletedNodeReference,
    EdgeType,
    InvalidEvent,
    MissingVariable,
    NodeKind,
    TokenUsage,
    UnknownNode,
    VariableSpec,
    WrongNodeKind,
)
from eventlog import events as ev
from eventlog._store import key_digest

E = TypeVar("E", bound=ev.EventBase)
AnyLog = eventlog.EventLog | eventlog.AsyncEventLog

NOT_APPENDS = frozenset(
    {
        "blocking",
        "close",
        "cursor",
        "flush",
        "follow",
        "kind_of",
        "last_lsn",
        "next_lsn",
        "open",
        "read",
        "render",
        "stats",
    }
)
"""Public methods of a log that do not append (reads, facts, lifecycle)."""

UNKNOWN = uuid.UUID("01900000-0000-7000-8000-00000000dead")
"""A well-formed UUIDv7 that no store in these tests holds."""


def public_methods(cls: type) -> set[str]:
    return {n for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n))}


def takes_append_options(method: Callable[..., Any]) -> bool:
    """Append helpers take the `AppendOptions` keywords as ``**opts``."""
    params = inspect.signature(method).parameters.values()
    return any(p.kind is p.VAR_KEYWORD and p.name == "opts" for p in params)


def append_helpers(cls: type) -> set[str]:
    """Names of the public append helpers of a log class."""
    return {n for n in public_methods(cls) if takes_append_options(getattr(cls, n))}


def blocking(log: AnyLog) -> eventlog.EventLog | Any:
    """The blocking reads of either log (an async log's, as its worker threads use them)."""
    return log.blocking() if isinstance(log, eventlog.AsyncEventLog) else log


def events_of(log: AnyLog) -> list[ev.EventBase]:
    return [record.event for record in blocking(log).read()]


def last(log: AnyLog, cls: type[E]) -> E:
    """The last stored event, which must be a `cls`."""
    event = events_of(log)[-1]
    assert isinstance(event, cls), event
    return event


def stored(log: AnyLog, cls: type[E], node_id: uuid.UUID) -> E:
    """The stored event of type `cls` whose `id` is `node_id`."""
    found = [e for e in events_of(log) if isinstance(e, cls) and getattr(e, "id", None) == node_id]
    assert len(found) == 1, (cls, node_id, found)
    return found[0]


def is_uuid7(value: object) -> bool:
    return isinstance(value, uuid.UUID) and value.version == 7


def snapshot(log: AnyLog, path: Path) -> tuple[int, int, dict[str, bytes]]:
    """What must not change when an append is rejected: event counts and every file's bytes."""
    files = {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}
    reads = blocking(log)
    return reads.stats().events, len(list(reads.read())), files


# -- happy paths, one helper at a time ------------------------------------------------------------


def test_create_session(log: eventlog.EventLog) -> None:
    session = log.create_session(metadata={"user": "42"}, tags=["support", "en"])
    assert isinstance(session, ev.SessionCreated)
    assert is_uuid7(session.id)
    assert session.metadata == {"user": "42"}
    assert session.tags == ["support", "en"]
    assert session.ts > 0
    assert session.occurred_at is None
    assert session.actor is None
    records = list(log.read())
    assert [r.lsn for r in records] == [0]
    assert records[0].event == session


def test_create_session_defaults(log: eventlog.EventLog) -> None:
    session = log.create_session()
    assert (session.metadata, session.tags) == ({}, [])
    assert last(log, ev.SessionCreated) == session


def test_create_sessions_batch(log: eventlog.EventLog) -> None:
    sessions = log.create_sessions_batch(3, metadata={"batch": True})
    assert len(sessions) == 3
    assert all(isinstance(s, ev.SessionCreated) and is_uuid7(s.id) for s in sessions)
    assert [s.id for s in sessions] == sorted({s.id for s in sessions})  # distinct, increasing
    assert all(s.metadata == {"batch": True} for s in sessions)
    assert len({s.ts for s in sessions}) == 1  # one request, one frame, one ts
    assert [(r.lsn, r.event) for r in log.read()] == list(enumerate(sessions))


def test_update_session(log: eventlog.EventLog) -> None:
    session = log.create_session(metadata={"a": 1, "b": 2})
    lsn = log.update_session(session.id, metadata={"a": None, "c": 3}, tags=["x"])
    assert lsn == 1
    update = last(log, ev.SessionUpdated)
    assert update.session_id == session.id
    assert update.metadata == {"a": None, "c": 3}
    assert update.tags == ["x"]
    assert log.update_session(session.id, metadata={"d": 4}) == 2
    assert last(log, ev.SessionUpdated).tags is None  # tags not given: left as they are


def test_fork_session(log: eventlog.EventLog) -> None:
    session = log.create_session()
    prompt = log.add_prompt(session.id, "first")
    fork = log.fork_session(session.id, prompt, metadata={"why": "retry"}, tags=["fork"])
    assert isinstance(fork, ev.SessionForked)
    assert is_uuid7(fork.id) and fork.id != session.id
    assert (fork.parent_session_id, fork.fork_point) == (session.id, prompt)
    assert (fork.metadata, fork.tags) == ({"why": "retry"}, ["fork"])
    assert last(log, ev.SessionForked) == fork
    whole = log.fork_session(session.id)
    assert whole.fork_point is None
    # a fork is a session: prompts can be added to it
    log.add_prompt(fork.id, "in the fork")
    assert last(log, ev.PromptAdded).session_id == fork.id


def test_add_prompt(log: eventlog.EventLog) -> None:
    session = log.create_session()
    first = log.add_prompt(session.id, "What is Rust?")
    meta = eventlog.PromptMetadata(model="m-1", temperature=0.2, max_tokens=64)
    second = log.add_prompt(session.id, "And Zig?", parent_prompt_id=first, metadata=meta)
    assert is_uuid7(first) and is_uuid7(second) and first < second
    p1, p2 = stored(log, ev.PromptAdded, first), stored(log, ev.PromptAdded, second)
    assert (p1.session_id, p1.content, p1.parent_prompt_id) == (session.id, "What is Rust?", None)
    assert (p1.template_id, p1.template_version, p1.variables, p1.metadata) == (
        None,
        None,
        {},
        None,
    )
    assert (p2.parent_prompt_id, p2.metadata) == (first, meta)


def test_add_prompt_from_template_renders_variables_and_defaults(log: eventlog.EventLog) -> None:
    session = log.create_session()
    template = log.create_template(
        "answer",
        "Answer as {{persona}}: {{ question }}",
        [
            VariableSpec(name="persona", required=False, default="a helpful assistant"),
            VariableSpec(name="question"),
        ],
    )
    rendered = log.add_prompt(session.id, template_id=template, variables={"question": "Why?"})
    prompt = stored(log, ev.PromptAdded, rendered)
    assert prompt.content == "Answer as a helpful assistant: Why?"
    assert prompt.template_id == template
    assert prompt.template_version == 1
    assert prompt.variables == {"persona": "a helpful assistant", "question": "Why?"}

    overridden = log.add_prompt(
        session.id, template_id=template, variables={"question": "How?", "persona": "a pirate"}
    )
    assert stored(log, ev.PromptAdded, overridden).content == "Answer as a pirate: How?"

    given = log.add_prompt(
        session.id, "my own words", template_id=template, variables={"question": "?"}
    )
    kept = stored(log, ev.PromptAdded, given)
    assert (kept.content, kept.template_version) == ("my own words", 1)

    assert log.update_template(template, "v2 {{question}}", [VariableSpec(name="question")]) == 2
    newer = log.add_prompt(session.id, template_id=template, variables={"question": "Now?"})
    prompt2 = stored(log, ev.PromptAdded, newer)
    assert (prompt2.content, prompt2.template_version) == ("v2 Now?", 2)
    assert prompt2.variables == {"question": "Now?"}  # version 2 has no defaults to add


def test_add_prompts_batch(log: eventlog.EventLog) -> None:
    a, b = log.create_sessions_batch(2)
    ids = log.add_prompts_batch([(a.id, "one"), (b.id, "two"), (a.id, "three")])
    assert len(ids) == 3 and ids == sorted(ids) and all(map(is_uuid7, ids))
    prompts = [e for e in events_of(log) if isinstance(e, ev.PromptAdded)]
    assert [(p.id, p.session_id, p.content) for p in prompts] == [
        (ids[0], a.id, "one"),
        (ids[1], b.id, "two"),
        (ids[2], a.id, "three"),
    ]


def test_add_response_fills_session_from_prompt(log: eventlog.EventLog) -> None:
    session = log.create_session()
    prompt = log.add_prompt(session.id, "Hi")
    response_id = log.add_response(
        prompt,
        "Hello!",
        TokenUsage(3, 5),
        finish_reason="stop",
        latency_ms=12.5,
        model="m-1",
        metadata={"cached": False},
    )
    assert is_uuid7(response_id) and response_id > prompt
    response = stored(log, ev.ResponseAdded, response_id)
    assert response.prompt_id == prompt
    assert response.session_id == session.id  # derived by the log
    assert response.content == "Hello!"
    assert response.usage == TokenUsage(3, 5) and response.usage.total_tokens == 8
    assert (response.finish_reason, response.latency_ms, response.model) == ("stop", 12.5, "m-1")
    assert response.metadata == {"cached": False}
    bare = stored(log, ev.ResponseAdded, log.add_response(prompt, "again"))
    assert bare.usage == TokenUsage(0, 0)
    assert (bare.finish_reason, bare.latency_ms, bare.model, bare.metadata) == (
        None,
        None,
        None,
        {},
    )


def test_add_responses_batch(log: eventlog.EventLog) -> None:
    a, b = log.create_sessions_batch(2)
    pa, pb = log.add_prompts_batch([(a.id, "qa"), (b.id, "qb")])
    ids = log.add_responses_batch([(pa, "ra", TokenUsage(1, 2)), (pb, "rb", TokenUsage(3, 4))])
    assert len(ids) == 2 and ids[0] < ids[1]
    ra, rb = stored(log, ev.ResponseAdded, ids[0]), stored(log, ev.ResponseAdded, ids[1])
    assert (ra.prompt_id, ra.session_id, ra.content, ra.usage) == (pa, a.id, "ra", TokenUsage(1, 2))
    assert (rb.prompt_id, rb.session_id, rb.content, rb.usage) == (pb, b.id, "rb", TokenUsage(3, 4))


def test_add_conversations_batch(log: eventlog.EventLog) -> None:
    a, b = log.create_sessions_batch(2)
    pairs = log.add_conversations_batch(
        [((a.id, "q1"), ("a1", TokenUsage(1, 1))), ((b.id, "q2"), None)]
    )
    assert len(pairs) == 2
    (p1, r1), (p2, r2) = pairs
    assert r1 is not None and r2 is None
    assert [type(e) for e in events_of(log)[2:]] == [
        ev.PromptAdded,
        ev.ResponseAdded,
        ev.PromptAdded,
    ]
    assert stored(log, ev.PromptAdded, p1).content == "q1"
    response = stored(log, ev.ResponseAdded, r1)
    assert (response.prompt_id, response.session_id, response.content) == (p1, a.id, "a1")
    assert stored(log, ev.PromptAdded, p2).session_id == b.id


def test_add_agent_and_update_agent(log: eventlog.EventLog) -> None:
    agent = log.add_agent("coder", "writes code", ["python"], model="m-2", metadata={"tier": 1})
    assert is_uuid7(agent)
    registered = stored(log, ev.AgentRegistered, agent)
    assert (registered.name, registered.role, registered.capabilities) == (
        "coder",
        "writes code",
        ["python"],
    )
    assert (registered.model, registered.metadata) == ("m-2", {"tier": 1})
    assert log.update_agent(agent, role="reviews code", capabilities=["python", "sql"]) == 1
    update = last(log, ev.AgentUpdated)
    assert update.agent_id == agent
    assert (update.role, update.capabilities) == ("reviews code", ["python", "sql"])
    assert (update.name, update.model, update.metadata) == (None, None, None)  # kept as they were


def test_assign_agent_to_prompt(log: eventlog.EventLog) -> None:
    session = log.create_session()
    prompt = log.add_prompt(session.id, "route me")
    agent = log.add_agent("triage", "routes")
    edge = log.assign_agent_to_prompt(prompt, agent)
    assert is_uuid7(edge)
    assigned = stored(log, ev.AgentAssigned, edge)
    assert (assigned.prompt_id, assigned.agent_id, assigned.session_id) == (
        prompt,
        agent,
        session.id,
    )


def test_transfer_to_agent(log: eventlog.EventLog) -> None:
    session = log.create_session()
    prompt = log.add_prompt(session.id, "help")
    triage, coder = log.add_agent("triage", "routes"), log.add_agent("coder", "codes")
    response = log.add_response(prompt, "handing over")
    edge = log.transfer_to_agent(
        response, coder, from_agent_id=triage, reason="needs code", context_summary="wants SQL"
    )
    handoff = stored(log, ev.AgentHandoff, edge)
    assert (handoff.response_id, handoff.to_agent_id, handoff.from_agent_id) == (
        response,
        coder,
        triage,
    )
    assert (handoff.reason, handoff.context_summary) == ("needs code", "wants SQL")
    assert handoff.session_id == session.id
    minimal = stored(log, ev.AgentHandoff, log.transfer_to_agent(response, triage))
    assert (minimal.from_agent_id, minimal.reason, minimal.context_summary) == (None, None, None)


def test_create_template_and_from_parent(log: eventlog.EventLog) -> None:
    spec = [VariableSpec(name="q"), VariableSpec(name="tone", required=False, default="calm")]
    base = log.create_template("base", "{{q}} ({{tone}})", spec, description="d", metadata={"o": 1})
    created = stored(log, ev.TemplateCreated, base)
    assert (created.name, created.text, created.variables) == ("base", "{{q}} ({{tone}})", spec)
    assert (created.description, created.metadata, created.parent_id) == ("d", {"o": 1}, None)
    child = log.create_template_from_parent(base, "child", "Child: {{q}}", [VariableSpec(name="q")])
    inherited = stored(log, ev.TemplateCreated, child)
    assert (inherited.parent_id, inherited.name) == (base, "child")
    assert is_uuid7(base) and base < child


def test_update_template_returns_new_version(log: eventlog.EventLog) -> None:
    template = log.create_template("t", "v1")
    assert log.update_template(template, "v2 {{x}}", [VariableSpec(name="x")], name="t2") == 2
    update = last(log, ev.TemplateUpdated)
    assert (update.template_id, update.version, update.text, update.name) == (
        template,
        2,
        "v2 {{x}}",
        "t2",
    )
    assert log.update_template(template, "v3", description="third") == 3
    assert last(log, ev.TemplateUpdated).description == "third"


def test_link_prompt_to_template(log: eventlog.EventLog) -> None:
    session = log.create_session()
    template = log.create_template(
        "t",
        "{{a}} {{b}}",
        [VariableSpec(name="a"), VariableSpec(name="b", required=False, default=7)],
    )
    log.update_template(
        template,
        "{{a}}! {{b}}",
        [VariableSpec(name="a"), VariableSpec(name="b", required=False, default=8)],
    )
    prompt = log.add_prompt(session.id, "written by hand")
    edge = log.link_prompt_to_template(prompt, template, {"a": "x"})
    linked = stored(log, ev.TemplateLinked, edge)
    assert (linked.prompt_id, linked.template_id, linked.session_id) == (
        prompt,
        template,
        session.id,
    )
    assert linked.template_version == 2
    assert linked.variables == {"a": "x", "b": 8}  # defaults of the current version applied


def test_tool_invocation_and_completion(log: eventlog.EventLog) -> None:
    session = log.create_session()
    response = log.add_response(log.add_prompt(session.id, "q"), "calling tools")
    ok = log.add_tool_invocation(response, "run_sql", {"query": "SELECT 1"})
    invoked = stored(log, ev.ToolInvoked, ok)
    assert (invoked.response_id, invoked.tool_name, invoked.parameters) == (
        response,
        "run_sql",
        {"query": "SELECT 1"},
    )
    assert invoked.session_id == session.id
    lsn = log.complete_tool_invocation(ok, result={"rows": 1}, duration_ms=3.5)
    assert lsn == len(events_of(log)) - 1
    done = last(log, ev.ToolCompleted)
    assert (done.tool_id, done.result, done.error, done.duration_ms) == (ok, {"rows": 1}, None, 3.5)
    assert done.session_id == session.id

    failing = log.add_tool_invocation(response, "search")
    assert stored(log, ev.ToolInvoked, failing).parameters is None
    log.complete_tool_invocation(failing, error="index offline")
    failed = last(log, ev.ToolCompleted)
    assert (failed.tool_id, failed.result, failed.error) == (failing, None, "index offline")


def test_add_edge(log: eventlog.EventLog) -> None:
    session = log.create_session()
    prompt = log.add_prompt(session.id, "q")
    doc = log.add_node("document", "a manual")
    typed = log.add_edge(prompt, doc, EdgeType.REFERENCES, {"relevance": 0.9})
    edge = stored(log, ev.EdgeAdded, typed)
    assert (edge.from_id, edge.to_id, edge.edge_type) == (prompt, doc, "REFERENCES")
    assert type(edge.edge_type) is str  # stored as plain text, not the enum
    assert (edge.properties, edge.session_id) == ({"relevance": 0.9}, session.id)
    custom = stored(log, ev.EdgeAdded, log.add_edge(doc, prompt, "CITED_BY_2"))
    assert (custom.edge_type, custom.properties) == ("CITED_BY_2", {})
    assert custom.session_id == session.id  # the source has none, so the target's
    agent = log.add_agent("a", "r")
    loose = stored(log, ev.EdgeAdded, log.add_edge(agent, doc, "KNOWS"))
    assert loose.session_id is None
    # an edge is a node too: edges can point at edges
    meta = stored(log, ev.EdgeAdded, log.add_edge(typed, custom.id, "CONTRADICTS"))
    assert (meta.from_id, meta.to_id) == (typed, custom.id)


def test_add_node(log: eventlog.EventLog) -> None:
    session = log.create_session()
    in_session = log.add_node("feedback", "great", data={"rating": 5}, session_id=session.id)
    node = stored(log, ev.NodeAdded, in_session)
    assert (node.kind, node.content, node.data, node.session_id) == (
        "feedback",
        "great",
        {"rating": 5},
        session.id,
    )
    free = stored(log, ev.NodeAdded, log.add_node("my-kind"))
    assert (free.content, free.data, free.session_id) == (None, {}, None)


def test_delete_node(log: eventlog.EventLog) -> None:
    session = log.create_session()
    node = log.add_node("context", "old", session_id=session.id)
    lsn = log.delete_node(node, reason="outdated")
    assert lsn == 2
    deleted = last(log, ev.NodeDeleted)
    assert (deleted.node_id, deleted.reason, deleted.session_id) == (node, "outdated", session.id)
    # history keeps the node
    assert stored(log, ev.NodeAdded, node).content == "old"


@pytest.mark.parametrize("bad", ["01a23d76-2f50-7345-862d-b0a1ba48539d", 5, None])
def test_kind_of_refuses_what_is_not_a_uuid(log: eventlog.EventLog, bad: object) -> None:
    with pytest.raises(eventlog.InvalidEvent, match="node_id must be a UUID"):
        log.kind_of(bad)  # type: ignore[arg-type]


def test_kind_of_names_the_kind_each_id_was_created_as(store: Path) -> None:
    """Every kind, deleted or not; None for an id the log never saw and for an idempotency
    key. Reopened, a handle that has only read knows the active segment's ids too (its
    first call builds that index, as a first append would)."""
    with eventlog.open(store, segment_bytes=4096, durability=eventlog.Durability.NONE) as log:
        s = log.create_session(idempotency_key="k").id
        p = log.add_prompt(s, "q")
        r = log.add_response(p, "a")
        made = {
            s: NodeKind.SESSION,
            p: NodeKind.PROMPT,
            r: NodeKind.RESPONSE,
            log.add_agent("a", "worker"): NodeKind.AGENT,
            log.create_template("t", "x"): NodeKind.TEMPLATE,
            log.add_tool_invocation(r, "search", {}): NodeKind.TOOL_INVOCATION,
            log.add_edge(p, s, "ABOUT"): NodeKind.EDGE,
            log.add_node("document", "d"): NodeKind.NODE,
        }
        log.delete_node(p)
        for _ in range(40):  # past the first segments
            log.add_node("document", uuid.uuid4().hex * 4, session_id=s)
        newest = log.add_node("document", "new")
        assert len(list(store.glob("*.seg"))) > 2
        assert {i: log.kind_of(i) for i in made} == made
        assert log.kind_of(newest) == NodeKind.NODE
        assert log.kind_of(uuid.uuid4()) is None
        assert log.kind_of(uuid.UUID(int=key_digest("k"))) is None
    with eventlog.open(store, segment_bytes=4096) as log:
        assert {i: log.kind_of(i) for i in made} == made
        assert log.kind_of(newest) == NodeKind.NODE  # in the active segment


def test_delete_nodes_batch(log: eventlog.EventLog) -> None:
    a, b, c = (log.add_node("document", str(i)) for i in range(3))
    last_lsn = log.delete_nodes_batch([a, c])
    assert last_lsn == 4
    deleted = [e for e in events_of(log) if isinstance(e, ev.NodeDeleted)]
    assert [d.node_id for d in deleted] == [a, c]
    log.add_edge(b, b, "SELF")  # b is untouched


def test_append(log: eventlog.EventLog) -> None:
    session_id = uuid.uuid4()  # callers may bring their own ids
    single = log.append(ev.SessionCreated(id=session_id, tags=["raw"]))
    assert isinstance(single, eventlog.Appended)
    assert (single.first_lsn, single.last_lsn, single.duplicate) == (0, 0, False)
    assert single.events[0] == last(log, ev.SessionCreated)
    assert single.events[0].ts > 0

    prompt_id = uuid.uuid4()
    many = log.append(
        [
            ev.PromptAdded(id=prompt_id, session_id=session_id, content="q"),
            ev.ResponseAdded(id=uuid.uuid4(), prompt_id=prompt_id, content="a"),
        ]
    )
    assert (many.first_lsn, many.last_lsn) == (1, 2)
    response = many.events[1]
    assert isinstance(response, ev.ResponseAdded)
    assert response.session_id == session_id  # derived for raw events too
    assert [r.event for r in log.read(1)] == many.events


def test_append_idempotent_retry(log: eventlog.EventLog) -> None:
    event = ev.SessionCreated(id=uuid.uuid4())
    first = log.append(event, idempotency_key="import-1")
    again = log.append(ev.SessionCreated(id=uuid.uuid4()), idempotency_key="import-1")
    assert again.duplicate and not first.duplicate
    assert again.first_lsn == first.first_lsn
    assert again.events == first.events
    assert log.stats().events == 1
    # helpers take the same key: a retry returns what the first call returned
    session = log.create_session(idempotency_key="s")
    prompt = log.add_prompt(session.id, "q", idempotency_key="p")
    assert log.create_session(idempotency_key="s") == session
    assert log.add_prompt(session.id, "q", idempotency_key="p") == prompt
    assert log.stats().events == 3


def test_expect_lsn_options(log: eventlog.EventLog) -> None:
    session = log.create_session(expect_store_lsn=-1)  # -1: the store is empty
    prompt = log.add_prompt(session.id, "q", expect_store_lsn=0, expect_session_lsn=0)
    log.add_response(prompt, "a", expect_session_lsn=1)
    assert log.stats().events == 3
    with pytest.raises(eventlog.AppendConflict, match="expected last LSN 0"):
        log.add_prompt(session.id, "stale", expect_session_lsn=0)
    with pytest.raises(eventlog.AppendConflict, match="the store"):
        log.create_session(expect_store_lsn=1)
    assert log.stats().events == 3


def test_occurred_at_and_actor_are_kept(log: eventlog.EventLog) -> None:
    when = dt.datetime(2020, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)
    ns = 1_577_934_245_678_901_000
    session = log.create_session(occurred_at=when, actor="user:ada")
    assert (session.occurred_at, session.actor) == (ns, "user:ada")
    assert session.ts > ns  # ts is when the log recorded it, not when it happened
    log.add_prompt(session.id, "q", occurred_at="2020-01-02T03:04:05.678901Z", actor="agent:x")
    prompt = last(log, ev.PromptAdded)
    assert (prompt.occurred_at, prompt.actor) == (ns, "agent:x")
    log.add_prompts_batch([(session.id, "a"), (session.id, "b")], occurred_at=ns + 1)
    assert [e.occurred_at for e in events_of(log)[-2:]] == [ns + 1, ns + 1]
    naive = log.create_session(occurred_at=dt.datetime(2020, 1, 2, 3, 4, 5, 678901))
    assert naive.occurred_at == ns  # naive datetimes are read as UTC
    assert [e.actor for e in events_of(log)] == ["user:ada", "agent:x", None, None, None]


def run_every_helper(log: eventlog.EventLog) -> None:
    """One call of every append helper, in an order where each has what it needs."""
    session = log.create_session()
    other, _ = log.create_sessions_batch(2)
    log.update_session(session.id, metadata={"k": "v"})
    log.fork_session(session.id)
    template = log.create_template("t", "{{x}}", [VariableSpec(name="x")])
    log.create_template_from_parent(template, "c", "c {{x}}", [VariableSpec(name="x")])
    log.update_template(template, "v2 {{x}}", [VariableSpec(name="x")])
    prompt = log.add_prompt(session.id, template_id=template, variables={"x": 1})
    log.add_prompts_batch([(other.id, "p")])
    response = log.add_response(prompt, "r")
    log.add_responses_batch([(prompt, "r2", TokenUsage(1, 1))])
    log.add_conversations_batch([((session.id, "cq"), ("ca", TokenUsage(2, 2)))])
    agent = log.add_agent("a", "r")
    log.update_agent(agent, name="b")
    log.assign_agent_to_prompt(prompt, agent)
    log.transfer_to_agent(response, agent)
    log.link_prompt_to_template(prompt, template, {"x": 2})
    tool = log.add_tool_invocation(response, "t")
    log.complete_tool_invocation(tool, error="timeout")
    log.retry_tool_invocation(tool)
    log.complete_tool_invocation(tool, result=[1])
    node = log.add_node("document", "d", session_id=session.id)
    log.add_edge(node, prompt, EdgeType.REFERENCES)
    spare = log.add_node("document", "spare")
    log.delete_node(node)
    log.delete_nodes_batch([spare])
    log.append(ev.SpanRecorded(trace_id="ab" * 16, span_id="cd" * 8, name="GET /"))  # no helper
    log.append(ev.SessionCreated(id=uuid.uuid4()))


def test_every_helper_in_one_log_ids_and_ts(log: eventlog.EventLog) -> None:
    run_every_helper(log)
    records = list(log.read())
    assert [r.lsn for r in records] == list(range(len(records)))
    stamps = [r.event.ts for r in records]
    assert stamps == sorted(stamps) and stamps[0] > 0
    made = [getattr(r.event, "id", None) for r in records[:-1]]  # the last id came from append
    made_ids = [i for i in made if i is not None]
    assert len(made_ids) > 15
    assert all(is_uuid7(i) for i in made_ids)
    assert made_ids == sorted(made_ids) and len(set(made_ids)) == len(made_ids)
    only_erasure_writes = {"erasure.applied"}  # (eventlog.erase, not a helper)
    assert set(log.stats().events_by_type) == set(ev.event_types()) - only_erasure_writes


# -- bad input at every helper: clear error, nothing written --------------------------------------


@dataclass(frozen=True)
class World:
    """Ids in the prepared store: a live and a deleted node of every kind."""

    session: uuid.UUID
    other_session: uuid.UUID
    prompt: uuid.UUID
    other_prompt: uuid.UUID  # in other_session
    response: uuid.UUID
    agent: uuid.UUID
    template: uuid.UUID  # "About {{topic}} in a {{tone}} tone": topic required
    tool: uuid.UUID  # not yet completed
    done_tool: uuid.UUID  # completed
    node: uuid.UUID  # a document in `session`
    gone_session: uuid.UUID
    gone_prompt: uuid.UUID
    gone_response: uuid.UUID
    gone_agent: uuid.UUID
    gone_template: uuid.UUID
    gone_tool: uuid.UUID
    gone_node: uuid.UUID


def build_world(log: eventlog.EventLog) -> World:
    session, other, gone_session = (s.id for s in log.create_sessions_batch(3))
    prompt, other_prompt, gone_prompt = log.add_prompts_batch(
        [(session, "p"), (other, "other"), (session, "gone")]
    )
    response, gone_response = log.add_responses_batch(
        [(prompt, "r", TokenUsage(1, 1)), (prompt, "gone", TokenUsage(1, 1))]
    )
    agent, gone_agent = log.add_agent("agent", "r"), log.add_agent("gone", "r")
    template = log.create_template(
        "t",
        "About {{topic}} in a {{tone}} tone",
        [VariableSpec(name="topic"), VariableSpec(name="tone", required=False, default="plain")],
    )
    gone_template = log.create_template("gone", "x")
    tool, done_tool, gone_tool = (log.add_tool_invocation(response, n) for n in "abc")
    log.complete_tool_invocation(done_tool, result="ok")
    node = log.add_node("document", "doc", session_id=session)
    gone_node = log.add_node("document", "gone")
    gone = [
        gone_session,
        gone_prompt,
        gone_response,
        gone_agent,
        gone_template,
        gone_tool,
        gone_node,
    ]
    log.delete_nodes_batch(gone)
    return World(
        session=session,
        other_session=other,
        prompt=prompt,
        other_prompt=other_prompt,
        response=response,
        agent=agent,
        template=template,
        tool=tool,
        done_tool=done_tool,
        node=node,
        gone_session=gone_session,
        gone_prompt=gone_prompt,
        gone_response=gone_response,
        gone_agent=gone_agent,
        gone_template=gone_template,
        gone_tool=gone_tool,
        gone_node=gone_node,
    )


@dataclass(frozen=True)
class Call:
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)


def call(*args: Any, **kwargs: Any) -> Call:
    return Call(args, kwargs)


@dataclass(frozen=True)
class Case:
    helper: str
    why: str
    build: Callable[[World], Call]
    error: type[eventlog.EventLogError]
    names: str
    """A regex the message must match (case-insensitive); ``{w.x}``/``{unknown}`` are ids."""

    @property
    def id(self) -> str:
        return f"{self.helper}: {self.why}"

    def message_pattern(self, w: World) -> str:
        return self.names.format(w=w, unknown=UNKNOWN)


U, W, D, M = UnknownNode, WrongNodeKind, DeletedNodeReference, MissingVariable
I = InvalidEvent  # noqa: E741  (short, so the table stays one line a case)
V1 = [VariableSpec(name="a"), VariableSpec(name="a")]  # duplicate variable names
OK = TokenUsage(1, 1)


def new_session() -> ev.SessionCreated:
    return ev.SessionCreated(id=uuid.uuid4())


def prompt_event(session_id: uuid.UUID) -> ev.PromptAdded:
    return ev.PromptAdded(id=uuid.uuid4(), session_id=session_id, content="q")


# fmt: off
HELPER_CASES: list[Case] = [
    # append: raw events; checked exactly like the helpers' events
    Case("append", "not an event", lambda w: call("not an event"), I, "not a string"),
    Case("append", "not iterable", lambda w: call(5), I, "events"),
    Case("append", "empty batch", lambda w: call([]), I, "at least one event"),
    Case("append", "unencodable metadata", lambda w: call(ev.SessionCreated(id=uuid.uuid4(), metadata={"o": object()})), I, "object"),
    Case("append", "id already used", lambda w: call(ev.SessionCreated(id=w.prompt)), I, "{w.prompt}.*already used"),
    Case("append", "unknown session", lambda w: call(prompt_event(UNKNOWN)), U, "unknown session {unknown}"),
    Case("append", "prompt as session", lambda w: call(prompt_event(w.prompt)), W, "{w.prompt} is an? prompt, not an? session"),
    Case("append", "deleted session", lambda w: call(prompt_event(w.gone_session)), D, "{w.gone_session} was deleted"),
    Case("append", "all or nothing", lambda w: call([new_session(), prompt_event(UNKNOWN)]), U, "{unknown}"),
    Case("append", "duplicate id in request", lambda w: call([ev.SessionCreated(id=UNKNOWN), ev.SessionCreated(id=UNKNOWN)]), I, "{unknown}.*already used"),
    # create_session
    Case("create_session", "metadata not a dict", lambda w: call(metadata=5), I, "metadata"),
    Case("create_session", "unencodable metadata", lambda w: call(metadata={"o": object()}), I, "object"),
    Case("create_session", "metadata key not str", lambda w: call(metadata={1: "x"}), I, "metadata"),
    Case("create_session", "tag not a str", lambda w: call(tags=[1]), I, "tags"),
    Case("create_session", "tags not iterable", lambda w: call(tags=5), I, "tags"),
    # create_sessions_batch
    Case("create_sessions_batch", "empty batch (count 0)", lambda w: call(0), I, "count"),
    Case("create_sessions_batch", "count negative", lambda w: call(-2), I, "count"),
    Case("create_sessions_batch", "count not an int", lambda w: call("3"), I, "count"),
    Case("create_sessions_batch", "metadata not a dict", lambda w: call(2, metadata=[1]), I, "metadata"),
    # update_session
    Case("update_session", "id not a UUID", lambda w: call("not-a-uuid"), I, "UUID"),
    Case("update_session", "metadata not a dict", lambda w: call(w.session, metadata="x"), I, "metadata"),
    Case("update_session", "unencodable metadata", lambda w: call(w.session, metadata={"o": object()}), I, "object"),
    Case("update_session", "unknown session", lambda w: call(UNKNOWN), U, "unknown session {unknown}"),
    Case("update_session", "prompt as session", lambda w: call(w.prompt), W, "{w.prompt} is an? prompt, not an? session"),
    Case("update_session", "deleted session", lambda w: call(w.gone_session), D, "{w.gone_session} was deleted"),
    # fork_session
    Case("fork_session", "id not a UUID", lambda w: call(42), I, "UUID"),
    Case("fork_session", "tags not strs", lambda w: call(w.session, tags=[None]), I, "tags"),
    Case("fork_session", "unknown session", lambda w: call(UNKNOWN), U, "unknown session {unknown}"),
    Case("fork_session", "agent as session", lambda w: call(w.agent), W, "{w.agent} is an? agent, not an? session"),
    Case("fork_session", "deleted session", lambda w: call(w.gone_session), D, "{w.gone_session} was deleted"),
    Case("fork_session", "unknown fork point", lambda w: call(w.session, UNKNOWN), U, "unknown node {unknown}"),
    Case("fork_session", "fork point deleted", lambda w: call(w.session, w.gone_prompt), D, "{w.gone_prompt} was deleted"),
    Case("fork_session", "fork point in another session", lambda w: call(w.session, w.other_prompt), I, "fork point {w.other_prompt}"),
    # add_prompt
    Case("add_prompt", "content not a str", lambda w: call(w.session, 5), I, "content"),
    Case("add_prompt", "session id not a UUID", lambda w: call("abc", "q"), I, "UUID.*session_id"),
    Case("add_prompt", "no content, no template", lambda w: call(w.session), I, "content or a template"),
    Case("add_prompt", "metadata of the wrong type", lambda w: call(w.session, "q", metadata=5), I, "metadata"),
    Case("add_prompt", "variables not a dict", lambda w: call(w.session, "q", variables=[1]), I, "variables"),
    Case("add_prompt", "unknown session", lambda w: call(UNKNOWN, "q"), U, "unknown session {unknown}"),
    Case("add_prompt", "prompt as session", lambda w: call(w.prompt, "q"), W, "{w.prompt} is an? prompt, not an? session"),
    Case("add_prompt", "deleted session", lambda w: call(w.gone_session, "q"), D, "{w.gone_session} was deleted"),
    Case("add_prompt", "unknown template", lambda w: call(w.session, template_id=UNKNOWN), U, "unknown template {unknown}"),
    Case("add_prompt", "session as template", lambda w: call(w.session, template_id=w.session, variables={"topic": 1}), W, "{w.session} is an? session, not an? template"),
    Case("add_prompt", "deleted template", lambda w: call(w.session, template_id=w.gone_template), D, "{w.gone_template} was deleted"),
    Case("add_prompt", "missing required variable", lambda w: call(w.session, template_id=w.template, variables={"tone": "dry"}), M, "{w.template}.*topic"),
    Case("add_prompt", "response as parent prompt", lambda w: call(w.session, "q", parent_prompt_id=w.response), W, "{w.response} is an? response, not an? prompt"),
    Case("add_prompt", "parent prompt deleted", lambda w: call(w.session, "q", parent_prompt_id=w.gone_prompt), D, "{w.gone_prompt} was deleted"),
    Case("add_prompt", "parent prompt of another session", lambda w: call(w.session, "q", parent_prompt_id=w.other_prompt), I, "another session"),
    # add_prompts_batch
    Case("add_prompts_batch", "empty batch", lambda w: call([]), I, "at least one event"),
    Case("add_prompts_batch", "not iterable", lambda w: call(5), I, "batch"),
    Case("add_prompts_batch", "item not a pair", lambda w: call([(w.session,)]), I, "tuple of 2"),
    Case("add_prompts_batch", "content not a str", lambda w: call([(w.session, 5)]), I, "content"),
    Case("add_prompts_batch", "unknown session, all or nothing", lambda w: call([(w.session, "ok"), (UNKNOWN, "q")]), U, "unknown session {unknown}"),
    Case("add_prompts_batch", "response as session", lambda w: call([(w.response, "q")]), W, "{w.response} is an? response, not an? session"),
    Case("add_prompts_batch", "deleted session", lambda w: call([(w.gone_session, "q")]), D, "{w.gone_session} was deleted"),
    # add_response
    Case("add_response", "content not a str", lambda w: call(w.prompt, None), I, "content"),
    Case("add_response", "prompt id not a UUID", lambda w: call("p-1", "a"), I, "UUID.*prompt_id"),
    Case("add_response", "usage not TokenUsage", lambda w: call(w.prompt, "a", (1, 2)), I, "usage"),
    Case("add_response", "latency not a number", lambda w: call(w.prompt, "a", latency_ms="fast"), I, "latency_ms"),
    Case("add_response", "unencodable metadata", lambda w: call(w.prompt, "a", metadata={"o": object()}), I, "object"),
    Case("add_response", "unknown prompt", lambda w: call(UNKNOWN, "a"), U, "unknown prompt {unknown}"),
    Case("add_response", "session as prompt", lambda w: call(w.session, "a"), W, "{w.session} is an? session, not an? prompt"),
    Case("add_response", "deleted prompt", lambda w: call(w.gone_prompt, "a"), D, "{w.gone_prompt} was deleted"),
    # add_responses_batch
    Case("add_responses_batch", "empty batch", lambda w: call([]), I, "at least one event"),
    Case("add_responses_batch", "item not a triple", lambda w: call([(w.prompt, "a")]), I, "tuple of 3"),
    Case("add_responses_batch", "usage not TokenUsage", lambda w: call([(w.prompt, "a", 5)]), I, "usage"),
    Case("add_responses_batch", "unknown prompt, all or nothing", lambda w: call([(w.prompt, "a", OK), (UNKNOWN, "b", OK)]), U, "unknown prompt {unknown}"),
    Case("add_responses_batch", "response as prompt", lambda w: call([(w.response, "a", OK)]), W, "{w.response} is an? response, not an? prompt"),
    Case("add_responses_batch", "deleted prompt", lambda w: call([(w.gone_prompt, "a", OK)]), D, "{w.gone_prompt} was deleted"),
    # add_conversations_batch
    Case("add_conversations_batch", "empty batch", lambda w: call([]), I, "at least one event"),
    Case("add_conversations_batch", "not iterable", lambda w: call(7), I, "batch"),
    Case("add_conversations_batch", "item not a pair", lambda w: call([(w.session, "q")]), I, "tuple of 2"),
    Case("add_conversations_batch", "answer not a pair", lambda w: call([((w.session, "q"), ("a",))]), I, "tuple of 2"),
    Case("add_conversations_batch", "prompt not a str", lambda w: call([((w.session, 5), None)]), I, "content"),
    Case("add_conversations_batch", "usage not TokenUsage", lambda w: call([((w.session, "q"), ("a", "many"))]), I, "usage"),
    Case("add_conversations_batch", "unknown session, all or nothing", lambda w: call([((w.session, "q"), None), ((UNKNOWN, "q"), None)]), U, "unknown session {unknown}"),
    Case("add_conversations_batch", "prompt as session", lambda w: call([((w.prompt, "q"), ("a", OK))]), W, "{w.prompt} is an? prompt, not an? session"),
    Case("add_conversations_batch", "deleted session", lambda w: call([((w.gone_session, "q"), None)]), D, "{w.gone_session} was deleted"),
    # add_agent
    Case("add_agent", "name not a str", lambda w: call(5, "role"), I, "name"),
    Case("add_agent", "capability not a str", lambda w: call("a", "r", [1]), I, "capabilities"),
    Case("add_agent", "capabilities not iterable", lambda w: call("a", "r", 1), I, "capabilities"),
    Case("add_agent", "unencodable metadata", lambda w: call("a", "r", metadata={"o": object()}), I, "object"),
    # update_agent
    Case("update_agent", "id not a UUID", lambda w: call(b"agent"), I, "agent_id"),
    Case("update_agent", "role not a str", lambda w: call(w.agent, role=3), I, "role"),
    Case("update_agent", "unknown agent", lambda w: call(UNKNOWN, name="n"), U, "unknown agent {unknown}"),
    Case("update_agent", "prompt as agent", lambda w: call(w.prompt, name="n"), W, "{w.prompt} is an? prompt, not an? agent"),
    Case("update_agent", "deleted agent", lambda w: call(w.gone_agent, name="n"), D, "{w.gone_agent} was deleted"),
    # assign_agent_to_prompt
    Case("assign_agent_to_prompt", "prompt id not a UUID", lambda w: call("p", w.agent), I, "UUID.*prompt_id"),
    Case("assign_agent_to_prompt", "unknown prompt", lambda w: call(UNKNOWN, w.agent), U, "unknown prompt {unknown}"),
    Case("assign_agent_to_prompt", "unknown agent", lambda w: call(w.prompt, UNKNOWN), U, "unknown agent {unknown}"),
    Case("assign_agent_to_prompt", "response as prompt", lambda w: call(w.response, w.agent), W, "{w.response} is an? response, not an? prompt"),
    Case("assign_agent_to_prompt", "session as agent", lambda w: call(w.prompt, w.session), W, "{w.session} is an? session, not an? agent"),
    Case("assign_agent_to_prompt", "deleted prompt", lambda w: call(w.gone_prompt, w.agent), D, "{w.gone_prompt} was deleted"),
    Case("assign_agent_to_prompt", "deleted agent", lambda w: call(w.prompt, w.gone_agent), D, "{w.gone_agent} was deleted"),
    # transfer_to_agent
    Case("transfer_to_agent", "reason not a str", lambda w: call(w.response, w.agent, reason=1), I, "reason"),
    Case("transfer_to_agent", "agent id not a UUID", lambda w: call(w.response, "coder"), I, "UUID.*to_agent_id"),
    Case("transfer_to_agent", "unknown response", lambda w: call(UNKNOWN, w.agent), U, "unknown response {unknown}"),
    Case("transfer_to_agent", "unknown to agent", lambda w: call(w.response, UNKNOWN), U, "unknown agent {unknown}"),
    Case("transfer_to_agent", "unknown from agent", lambda w: call(w.response, w.agent, from_agent_id=UNKNOWN), U, "unknown agent {unknown}"),
    Case("transfer_to_agent", "prompt as response", lambda w: call(w.prompt, w.agent), W, "{w.prompt} is an? prompt, not an? response"),
    Case("transfer_to_agent", "template as agent", lambda w: call(w.response, w.template), W, "{w.template} is an? template, not an? agent"),
    Case("transfer_to_agent", "deleted response", lambda w: call(w.gone_response, w.agent), D, "{w.gone_response} was deleted"),
    Case("transfer_to_agent", "deleted to agent", lambda w: call(w.response, w.gone_agent), D, "{w.gone_agent} was deleted"),
    Case("transfer_to_agent", "deleted from agent", lambda w: call(w.response, w.agent, from_agent_id=w.gone_agent), D, "{w.gone_agent} was deleted"),
    # create_template
    Case("create_template", "text not a str", lambda w: call("t", 5), I, "text"),
    Case("create_template", "variable not a VariableSpec", lambda w: call("t", "{{a}}", ["a"]), I, "variables"),
    Case("create_template", "variables not iterable", lambda w: call("t", "{{a}}", 3), I, "variables"),
    Case("create_template", "duplicate variable names", lambda w: call("t", "{{a}}", V1), I, "distinct names"),
    Case("create_template", "variable name not an identifier", lambda w: call("t", "x", [VariableSpec(name="no way")]), I, "identifier"),
    Case("create_template", "unencodable default", lambda w: call("t", "x", [VariableSpec(name="a", required=False, default=object())]), I, "object"),
    # create_template_from_parent
    Case("create_template_from_parent", "parent id not a UUID", lambda w: call("parent", "t", "x"), I, "UUID.*parent_id"),
    Case("create_template_from_parent", "duplicate variable names", lambda w: call(w.template, "t", "{{a}}", V1), I, "distinct names"),
    Case("create_template_from_parent", "unknown parent", lambda w: call(UNKNOWN, "t", "x"), U, "unknown template {unknown}"),
    Case("create_template_from_parent", "agent as parent", lambda w: call(w.agent, "t", "x"), W, "{w.agent} is an? agent, not an? template"),
    Case("create_template_from_parent", "deleted parent", lambda w: call(w.gone_template, "t", "x"), D, "{w.gone_template} was deleted"),
    # update_template
    Case("update_template", "text not a str", lambda w: call(w.template, ["x"]), I, "text"),
    Case("update_template", "duplicate variable names", lambda w: call(w.template, "{{a}}", V1), I, "distinct names"),
    Case("update_template", "unknown template", lambda w: call(UNKNOWN, "x"), U, "unknown template {unknown}"),
    Case("update_template", "prompt as template", lambda w: call(w.prompt, "x"), W, "{w.prompt} is an? prompt, not an? template"),
    Case("update_template", "deleted template", lambda w: call(w.gone_template, "x"), D, "{w.gone_template} was deleted"),
    # link_prompt_to_template
    Case("link_prompt_to_template", "variables not a dict", lambda w: call(w.prompt, w.template, ["topic"]), I, "variables"),
    Case("link_prompt_to_template", "template id not a UUID", lambda w: call(w.prompt, 1.5), I, "template_id"),
    Case("link_prompt_to_template", "unknown prompt", lambda w: call(UNKNOWN, w.template, {"topic": 1}), U, "unknown prompt {unknown}"),
    Case("link_prompt_to_template", "unknown template", lambda w: call(w.prompt, UNKNOWN), U, "unknown template {unknown}"),
    Case("link_prompt_to_template", "template as prompt", lambda w: call(w.template, w.template, {"topic": 1}), W, "{w.template} is an? template, not an? prompt"),
    Case("link_prompt_to_template", "prompt as template", lambda w: call(w.prompt, w.prompt), W, "{w.prompt} is an? prompt, not an? template"),
    Case("link_prompt_to_template", "deleted prompt", lambda w: call(w.gone_prompt, w.template, {"topic": 1}), D, "{w.gone_prompt} was deleted"),
    Case("link_prompt_to_template", "deleted template", lambda w: call(w.prompt, w.gone_template), D, "{w.gone_template} was deleted"),
    Case("link_prompt_to_template", "missing required variable", lambda w: call(w.prompt, w.template, {}), M, "{w.template}.*topic"),
    # add_tool_invocation
    Case("add_tool_invocation", "tool name not a str", lambda w: call(w.response, 5), I, "tool_name"),
    Case("add_tool_invocation", "empty tool name", lambda w: call(w.response, ""), I, "tool_name"),
    Case("add_tool_invocation", "unencodable parameters", lambda w: call(w.response, "t", object()), I, "object"),
    Case("add_tool_invocation", "unknown response", lambda w: call(UNKNOWN, "t"), U, "unknown response {unknown}"),
    Case("add_tool_invocation", "prompt as response", lambda w: call(w.prompt, "t"), W, "{w.prompt} is an? prompt, not an? response"),
    Case("add_tool_invocation", "deleted response", lambda w: call(w.gone_response, "t"), D, "{w.gone_response} was deleted"),
    # complete_tool_invocation
    Case("complete_tool_invocation", "duration not a number", lambda w: call(w.tool, duration_ms="slow"), I, "duration_ms"),
    Case("complete_tool_invocation", "error not a str", lambda w: call(w.tool, error=RuntimeError("x")), I, "RuntimeError|error"),
    Case("complete_tool_invocation", "unencodable result", lambda w: call(w.tool, result=object()), I, "object"),
    Case("complete_tool_invocation", "unknown tool", lambda w: call(UNKNOWN), U, "unknown tool invocation {unknown}"),
    # retry_tool_invocation
    Case("retry_tool_invocation", "unknown tool", lambda w: call(UNKNOWN), U, "unknown tool invocation {unknown}"),
    Case("retry_tool_invocation", "error not a str", lambda w: call(w.tool, error=3), I, "error"),
    Case("retry_tool_invocation", "response as tool", lambda w: call(w.response), W, "{w.response} is an? response, not an? tool invocation"),
    Case("retry_tool_invocation", "deleted tool", lambda w: call(w.gone_tool), D, "{w.gone_tool} was deleted"),
    Case("retry_tool_invocation", "retried after success", lambda w: call(w.done_tool), I, "{w.done_tool} succeeded: it cannot be retried"),
    Case("complete_tool_invocation", "response as tool", lambda w: call(w.response), W, "{w.response} is an? response, not an? tool invocation"),
    Case("complete_tool_invocation", "deleted tool", lambda w: call(w.gone_tool), D, "{w.gone_tool} was deleted"),
    Case("complete_tool_invocation", "completed twice", lambda w: call(w.done_tool, result=2), I, "{w.done_tool} is already completed"),
    # add_edge
    Case("add_edge", "edge type lower case", lambda w: call(w.prompt, w.node, "lower case"), I, "edge type 'lower case'"),
    Case("add_edge", "edge type empty", lambda w: call(w.prompt, w.node, ""), I, "edge type ''"),
    Case("add_edge", "edge type too long", lambda w: call(w.prompt, w.node, "X" * 65), I, "edge type 'XXX"),
    Case("add_edge", "properties not a dict", lambda w: call(w.prompt, w.node, "REL", [1]), I, "properties"),
    Case("add_edge", "unencodable property", lambda w: call(w.prompt, w.node, "REL", {"o": object()}), I, "object"),
    Case("add_edge", "from id not a UUID", lambda w: call("from", w.node, "REL"), I, "UUID.*from_id"),
    Case("add_edge", "unknown source", lambda w: call(UNKNOWN, w.node, "REL"), U, "unknown node {unknown}"),
    Case("add_edge", "unknown target", lambda w: call(w.node, UNKNOWN, "REL"), U, "unknown node {unknown}"),
    Case("add_edge", "deleted source", lambda w: call(w.gone_node, w.node, "REL"), D, "{w.gone_node} was deleted"),
    Case("add_edge", "deleted target", lambda w: call(w.node, w.gone_agent, EdgeType.REFERENCES), D, "{w.gone_agent} was deleted"),
    # add_node
    Case("add_node", "kind not a str", lambda w: call(5), I, "kind"),
    Case("add_node", "kind empty", lambda w: call(""), I, "kind"),
    Case("add_node", "content not a str", lambda w: call("document", 5), I, "content"),
    Case("add_node", "data not a dict", lambda w: call("document", data="x"), I, "data"),
    Case("add_node", "unknown session", lambda w: call("document", session_id=UNKNOWN), U, "unknown session {unknown}"),
    Case("add_node", "prompt as session", lambda w: call("document", session_id=w.prompt), W, "{w.prompt} is an? prompt, not an? session"),
    Case("add_node", "deleted session", lambda w: call("document", session_id=w.gone_session), D, "{w.gone_session} was deleted"),
    # delete_node
    Case("delete_node", "id not a UUID", lambda w: call(str(w.node)[:8]), I, "UUID.*node_id"),
    Case("delete_node", "reason not a str", lambda w: call(w.node, reason=5), I, "reason"),
    Case("delete_node", "unknown node", lambda w: call(UNKNOWN), U, "unknown node {unknown}"),
    Case("delete_node", "deleted twice", lambda w: call(w.gone_node), D, "{w.gone_node} was deleted"),
    # delete_nodes_batch
    Case("delete_nodes_batch", "empty batch", lambda w: call([]), I, "at least one event"),
    Case("delete_nodes_batch", "not iterable", lambda w: call(5), I, "node_ids"),
    Case("delete_nodes_batch", "id not a UUID", lambda w: call(["x"]), I, "UUID.*node_id"),
    Case("delete_nodes_batch", "unknown node, all or nothing", lambda w: call([w.node, UNKNOWN]), U, "unknown node {unknown}"),
    Case("delete_nodes_batch", "same node twice", lambda w: call([w.node, w.node]), D, "{w.node} was deleted"),
    Case("delete_nodes_batch", "deleted node", lambda w: call([w.gone_prompt]), D, "{w.gone_prompt} was deleted"),
]

VALID: dict[str, Callable[[World], Call]] = {
    "append": lambda w: call(new_session()),
    "create_session": lambda w: call(),
    "create_sessions_batch": lambda w: call(2),
    "update_session": lambda w: call(w.session, metadata={"k": 1}),
    "fork_session": lambda w: call(w.session, w.prompt),
    "add_prompt": lambda w: call(w.session, template_id=w.template, variables={"topic": "x"}),
    "add_prompts_batch": lambda w: call([(w.session, "a"), (w.other_session, "b")]),
    "add_response": lambda w: call(w.prompt, "a", OK),
    "add_responses_batch": lambda w: call([(w.prompt, "a", OK)]),
    "add_conversations_batch": lambda w: call([((w.session, "q"), ("a", OK))]),
    "add_agent": lambda w: call("a", "r", ["c"]),
    "update_agent": lambda w: call(w.agent, name="n"),
    "assign_agent_to_prompt": lambda w: call(w.prompt, w.agent),
    "transfer_to_agent": lambda w: call(w.response, w.agent),
    "create_template": lambda w: call("t", "{{a}}", [VariableSpec(name="a")]),
    "create_template_from_parent": lambda w: call(w.template, "c", "{{topic}}"),
    "update_template": lambda w: call(w.template, "v2"),
    "link_prompt_to_template": lambda w: call(w.prompt, w.template, {"topic": 1}),
    "add_tool_invocation": lambda w: call(w.response, "t", {"p": 1}),
    "complete_tool_invocation": lambda w: call(w.tool, result=1),
    "retry_tool_invocation": lambda w: call(w.tool, error="timeout"),
    "add_edge": lambda w: call(w.prompt, w.node, "REL", {"w": 1}),
    "add_node": lambda w: call("document", "d", session_id=w.session),
    "delete_node": lambda w: call(w.node),
    "delete_nodes_batch": lambda w: call([w.node, w.tool]),
}
"""A valid call of every helper against the `World`, for the option cases below."""

BAD_OPTIONS: list[tuple[str, dict[str, Any], str]] = [
    ("unknown option keyword", {"bogus": 1}, "unknown append options.*bogus"),
    ("expect_store_lsn not an int", {"expect_store_lsn": "0"}, "expect_store_lsn"),
    ("expect_session_lsn not an int", {"expect_session_lsn": 1.5}, "expect_session_lsn"),
    ("expect_session_lsn a bool", {"expect_session_lsn": True}, "expect_session_lsn"),
    ("actor not a str", {"actor": 5}, "actor"),
    ("occurred_at not a time", {"occurred_at": "yesterday"}, "occurred_at"),
    ("occurred_at a float", {"occurred_at": 1.5}, "occurred_at"),
    ("idempotency_key empty", {"idempotency_key": ""}, "idempotency_key"),
]
# fmt: on


def _with_options(
    valid: Callable[[World], Call], options: dict[str, Any]
) -> Callable[[World], Call]:
    def build(w: World) -> Call:
        good = valid(w)
        return Call(good.args, {**good.kwargs, **options})

    return build


OPTION_CASES = [
    Case(helper, why, _with_options(valid, options), I, names)
    for helper, valid in VALID.items()
    for why, options, names in BAD_OPTIONS
]

BAD_INPUT = HELPER_CASES + OPTION_CASES

REFERENCE_ERRORS: dict[str, set[type[eventlog.EventLogError]]] = {
    "append": {U, W, D},
    "create_session": set(),
    "create_sessions_batch": set(),
    "update_session": {U, W, D},
    "fork_session": {U, W, D},
    "add_prompt": {U, W, D, M},
    "add_prompts_batch": {U, W, D},
    "add_response": {U, W, D},
    "add_responses_batch": {U, W, D},
    "add_conversations_batch": {U, W, D},
    "add_agent": set(),
    "update_agent": {U, W, D},
    "assign_agent_to_prompt": {U, W, D},
    "transfer_to_agent": {U, W, D},
    "create_template": set(),
    "create_template_from_parent": {U, W, D},
    "update_template": {U, W, D},
    "link_prompt_to_template": {U, W, D, M},
    "add_tool_invocation": {U, W, D},
    "complete_tool_invocation": {U, W, D},
    "retry_tool_invocation": {U, W, D},
    "add_edge": {U, D},  # any node may be an end of an edge: no wrong kind
    "add_node": {U, W, D},
    "delete_node": {U, D},  # any node may be deleted: no wrong kind
    "delete_nodes_batch": {U, D},
}
"""The referential errors that apply to each helper; the table must have a case of each."""

BATCH_HELPERS = {
    "append",
    "create_sessions_batch",
    "add_prompts_batch",
    "add_responses_batch",
    "add_conversations_batch",
    "delete_nodes_batch",
}


@dataclass
class Prepared:
    log: eventlog.EventLog
    path: Path
    world: World


@pytest.fixture(scope="module")
def world_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, World]:
    """The prepared store, built once; tests get a copy."""
    path = tmp_path_factory.mktemp("world") / "store"
    with eventlog.open(path, durability=eventlog.Durability.NONE) as log:
        world = build_world(log)
    return path, world


def copy_world(world_store: tuple[Path, World], into: Path) -> tuple[Path, World]:
    source, world = world_store
    target = into / "store"
    shutil.copytree(source, target)
    return target, world


@pytest.fixture
def prepared(world_store: tuple[Path, World], tmp_path: Path) -> Iterator[Prepared]:
    path, world = copy_world(world_store, tmp_path)
    with eventlog.open(path) as log:
        yield Prepared(log, path, world)


def check_rejected(case: Case, world: World, exc: BaseException) -> None:
    assert type(exc) is case.error, f"{case.id}: {type(exc).__name__}: {exc}"
    message = str(exc)
    assert "\n" not in message, message
    assert re.search(case.message_pattern(world), message, re.IGNORECASE), (case.id, message)


@pytest.mark.parametrize("case", BAD_INPUT, ids=lambda c: c.id)
def test_bad_input_is_rejected_and_nothing_written(prepared: Prepared, case: Case) -> None:
    log, world = prepared.log, prepared.world
    args = case.build(world)
    before = snapshot(log, prepared.path)
    with pytest.raises(eventlog.EventLogError) as info:
        getattr(log, case.helper)(*args.args, **args.kwargs)
    check_rejected(case, world, info.value)
    assert snapshot(log, prepared.path) == before
    # the handle is still usable, and the rejected request left no trace in the id index
    log.add_prompt(world.session, "still works")
    assert log.stats().events == before[0] + 1


@pytest.mark.parametrize("helper", sorted(VALID))
def test_valid_calls_of_the_table_succeed(prepared: Prepared, helper: str) -> None:
    """The option cases reuse these calls: they must fail because of the options alone."""
    args = VALID[helper](prepared.world)
    before = prepared.log.stats().events
    getattr(prepared.log, helper)(*args.args, **args.kwargs)
    assert prepared.log.stats().events > before


def test_every_helper_has_bad_input_cases() -> None:
    helpers = append_helpers(eventlog.EventLog)
    assert len(helpers) >= 24
    others = public_methods(eventlog.EventLog) - helpers
    assert others <= NOT_APPENDS, (
        f"public methods {sorted(others - NOT_APPENDS)} take no **opts: if they append, give "
        "them bad-input cases here; if they do not, add them to NOT_APPENDS"
    )
    assert set(REFERENCE_ERRORS) == helpers, "a helper is missing from REFERENCE_ERRORS"
    assert set(VALID) == helpers, "a helper is missing from VALID (and so from the option cases)"
    for helper in sorted(helpers):
        own = [c for c in HELPER_CASES if c.helper == helper]
        classes = {c.error for c in own}
        assert InvalidEvent in classes, f"{helper}: no wrong-type case"
        missing = REFERENCE_ERRORS[helper] - classes
        assert not missing, f"{helper}: no case for {sorted(m.__name__ for m in missing)}"
        if helper in BATCH_HELPERS:
            assert any("empty" in c.why for c in own), f"{helper}: no empty batch case"
    assert {c.helper for c in BAD_INPUT} <= helpers  # no stale names in the table
    assert len({c.id for c in BAD_INPUT}) == len(BAD_INPUT)  # ids are unique


def test_helpers_document_themselves() -> None:
    for helper in append_helpers(eventlog.EventLog):
        method = getattr(eventlog.EventLog, helper)
        assert method.__doc__ and method.__doc__.strip(), helper


def test_conflicts_and_reused_keys_write_nothing(prepared: Prepared) -> None:
    log, w = prepared.log, prepared.world
    log.create_session(idempotency_key="key-1")
    before = snapshot(log, prepared.path)
    with pytest.raises(eventlog.IdempotencyKeyReused, match="key-1"):
        log.add_agent("a", "r", idempotency_key="key-1")
    with pytest.raises(eventlog.AppendConflict, match="the store"):
        log.create_session(expect_store_lsn=0)
    with pytest.raises(eventlog.AppendConflict, match=str(w.session)):
        log.add_prompt(w.session, "q", expect_session_lsn=0)
    with pytest.raises(InvalidEvent, match="exactly one session"):
        log.add_agent("a", "r", expect_session_lsn=0)
    with pytest.raises(InvalidEvent, match="exactly one session"):
        log.add_prompts_batch([(w.session, "a"), (w.other_session, "b")], expect_session_lsn=0)
    assert snapshot(log, prepared.path) == before


def test_errors_carry_the_ids(prepared: Prepared) -> None:
    log, w = prepared.log, prepared.world
    with pytest.raises(UnknownNode) as unknown:
        log.add_response(UNKNOWN, "a")
    assert (unknown.value.node_id, unknown.value.expected) == (UNKNOWN, "prompt")
    with pytest.raises(WrongNodeKind) as wrong:
        log.add_response(w.session, "a")
    assert (wrong.value.node_id, wrong.value.expected, wrong.value.actual) == (
        w.session,
        "prompt",
        "session",
    )
    with pytest.raises(DeletedNodeReference) as deleted:
        log.add_response(w.gone_prompt, "a")
    assert deleted.value.node_id == w.gone_prompt
    with pytest.raises(MissingVariable) as missing:
        log.add_prompt(w.session, template_id=w.template)
    assert (missing.value.template_id, missing.value.missing) == (w.template, ["topic"])
    # every error is also a ValueError-compatible InvalidEvent, so `except ValueError` works
    assert isinstance(missing.value, ValueError)


# -- the async twin -------------------------------------------------------------------------------


def test_async_log_has_the_same_helpers() -> None:
    sync, asynchronous = eventlog.EventLog, eventlog.AsyncEventLog
    assert append_helpers(asynchronous) == append_helpers(sync)
    for helper in append_helpers(sync):
        assert inspect.iscoroutinefunction(getattr(asynchronous, helper)), helper
        assert not inspect.iscoroutinefunction(getattr(sync, helper)), helper
        sync_params = list(inspect.signature(getattr(sync, helper)).parameters)
        async_params = list(inspect.signature(getattr(asynchronous, helper)).parameters)
        assert sync_params == async_params, helper


def _first_of_each_kind(cases: list[Case]) -> list[Case]:
    seen: set[tuple[str, type[eventlog.EventLogError]]] = set()
    chosen = []
    for case in cases:
        if (case.helper, case.error) not in seen:
            seen.add((case.helper, case.error))
            chosen.append(case)
    return chosen


ASYNC_CASES = _first_of_each_kind(HELPER_CASES) + [
    c for c in OPTION_CASES if c.helper in {"add_prompt", "delete_nodes_batch"}
]


@pytest.mark.parametrize("case", ASYNC_CASES, ids=lambda c: c.id)
def test_async_bad_input_is_rejected_and_nothing_written(
    world_store: tuple[Path, World], tmp_path: Path, case: Case
) -> None:
    path, world = copy_world(world_store, tmp_path)

    async def scenario() -> None:
        async with await eventlog.open_async(path) as alog:
            args = case.build(world)
            before = snapshot(alog, path)
            with pytest.raises(eventlog.EventLogError) as info:
                await getattr(alog, case.helper)(*args.args, **args.kwargs)
            check_rejected(case, world, info.value)
            assert snapshot(alog, path) == before
            await alog.add_prompt(world.session, "still works")

    asyncio.run(scenario())


def test_async_happy_path(store: Path) -> None:
    async def scenario() -> list[ev.EventBase]:
        async with await eventlog.open_async(store) as alog:
            session = await alog.create_session(metadata={"async": True}, actor="user:1")
            prompt = await alog.add_prompt(session.id, "q")
            response = await alog.add_response(prompt, "a", TokenUsage(1, 2))
            agent = await alog.add_agent("a", "r")
            await alog.assign_agent_to_prompt(prompt, agent)
            await alog.transfer_to_agent(response, agent, reason="why not")
            template = await alog.create_template("t", "{{x}}!", [VariableSpec(name="x")])
            assert await alog.update_template(template, "{{x}}?", [VariableSpec(name="x")]) == 2
            rendered = await alog.add_prompt(session.id, template_id=template, variables={"x": 1})
            tool = await alog.add_tool_invocation(response, "t")
            assert isinstance(await alog.complete_tool_invocation(tool, result=3), int)
            node = await alog.add_node("document", "d", session_id=session.id)
            await alog.add_edge(node, prompt, EdgeType.REFERENCES)
            await alog.delete_node(node)
            appended = await alog.append(new_session())
            assert isinstance(appended, eventlog.Appended)
            # concurrent appends from many tasks: all stored, distinct, in one dense log
            many = await asyncio.gather(*(alog.create_session() for _ in range(20)))
            assert len({s.id for s in many}) == 20
            stats = await alog.stats()
            assert stats.events == 15 + 20
            events = events_of(alog)
            rendered_event = [e for e in events if getattr(e, "id", None) == rendered]
            assert isinstance(rendered_event[0], ev.PromptAdded)
            assert (rendered_event[0].content, rendered_event[0].template_version) == ("1?", 2)
            responses = [e for e in events if isinstance(e, ev.ResponseAdded)]
            assert responses[0].session_id == session.id
            return events

    events = asyncio.run(scenario())
    assert [e.ts for e in events] == sorted(e.ts for e in events)
    with eventlog.open(store) as log:  # what the async log wrote, a sync handle reads
        assert events_of(log) == events


async def _outcome(step: Coroutine[Any, Any, object]) -> str:
    """What awaiting `step` did, as text: no exception (and no frame) outlives the check."""
    try:
        await asyncio.wait_for(step, timeout=5)
    except TimeoutError:
        return "hung"
    except Exception as exc:
        return type(exc).__name__
    return "ok"


def test_async_closed_log(store: Path) -> None:
    async def scenario() -> list[str]:
        alog = await eventlog.open_async(store)
        await alog.create_session()
        await alog.close()
        return [
            await _outcome(alog.create_session()),
            await _outcome(alog.add_prompt(UNKNOWN, "q")),
            await _outcome(alog.close()),  # idempotent, like EventLog.close
            await _outcome(alog.flush()),  # nothing to sync: a no-op, like EventLog.flush
        ]

    # Outcomes come back as text so that, if this breaks, no failed task stays referenced
    # from a traceback: logging its exception from a later garbage collection (inside
    # pytest's own ast.parse) crashes pytest on Python 3.11.7 (cpython#106905).
    outcomes = asyncio.run(scenario())
    gc.collect()
    assert outcomes == ["LogClosed", "LogClosed", "ok", "ok"]
    with eventlog.open(store) as log:
        assert log.stats().events == 1


def test_async_open_errors(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("not a store")

    async def scenario() -> None:
        with pytest.raises(eventlog.EventLogError, match="not a directory"):
            await eventlog.open_async(a_file)
        with pytest.raises(eventlog.EventLogError, match="no store at"):
            await eventlog.open_async(tmp_path / "missing", readonly=True)
        with pytest.raises(InvalidEvent, match="segment_bytes"):
            await eventlog.open_async(tmp_path / "x", segment_bytes=100)

    asyncio.run(scenario())
    assert not (tmp_path / "missing").exists()
    assert not (tmp_path / "x").exists()


# -- opening, closing, options, several handles ---------------------------------------------------


def test_open_a_file_is_a_clear_error(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("hello")
    with pytest.raises(eventlog.EventLogError, match="exists and is not a directory"):
        eventlog.open(a_file)
    with pytest.raises(eventlog.EventLogError, match="not a directory"):
        eventlog.open(a_file, readonly=True)
    assert a_file.read_text() == "hello"


def test_open_path_of_wrong_type() -> None:
    with pytest.raises(InvalidEvent, match="path must be a str or path"):
        eventlog.open(5)  # type: ignore[arg-type]


def test_readonly_open_of_a_non_store(tmp_path: Path) -> None:
    with pytest.raises(eventlog.EventLogError, match="no store at"):
        eventlog.open(tmp_path / "missing", readonly=True)
    assert not (tmp_path / "missing").exists()  # nothing created
    (tmp_path / "empty").mkdir()
    with pytest.raises(eventlog.EventLogError, match="not an event log store"):
        eventlog.open(tmp_path / "empty", readonly=True)
    assert list((tmp_path / "empty").iterdir()) == []


def test_readonly_handle_reads_but_refuses_appends(store: Path) -> None:
    with eventlog.open(store) as log:
        session = log.create_session()
    with eventlog.open(store, readonly=True) as ro:
        assert events_of(ro) == [session]
        assert ro.stats().events == 1
        with pytest.raises(eventlog.EventLogError, match="read-only"):
            ro.add_prompt(session.id, "q")
        assert ro.stats().events == 1


@pytest.mark.parametrize("helper", sorted(VALID))
def test_closed_log_refuses_every_helper(prepared: Prepared, helper: str) -> None:
    log = prepared.log
    before = snapshot(log, prepared.path)
    log.close()
    args = VALID[helper](prepared.world)
    with pytest.raises(eventlog.LogClosed, match="closed"):
        getattr(log, helper)(*args.args, **args.kwargs)
    with eventlog.open(prepared.path) as reopened:
        assert snapshot(reopened, prepared.path) == before


def test_close_is_idempotent(store: Path) -> None:
    log = eventlog.open(store)
    log.create_session()
    log.close()
    log.close()
    log.flush()  # nothing unsynced: a no-op
    with eventlog.open(store) as reopened:
        assert reopened.stats().events == 1


STATS_AFTER_CLOSE = """
import os, sys, eventlog
store, scratch = sys.argv[1], sys.argv[2]
log = eventlog.open(store)
log.create_session()
log.close()
fds = []  # other files now take the descriptor numbers the log released
for i in range(8):
    path = os.path.join(scratch, f"victim{i}")
    with open(path, "wb") as f:
        f.write(b"precious " * 200)
    fds.append(os.open(path, os.O_RDWR))
try:
    log.stats()
    print("no error")
except Exception as exc:
    print(type(exc).__name__)
"""


def test_stats_after_close_leaves_other_files_alone(store: Path, tmp_path: Path) -> None:
    """A closed handle must not touch its old descriptor numbers, which other files now hold.

    Run in a child process: when this breaks, it truncates whatever file reused the number.
    """
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    child = subprocess.run(
        [sys.executable, "-c", STATS_AFTER_CLOSE, str(store), str(scratch)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "LogClosed", child.stdout + child.stderr
    victims = sorted(scratch.iterdir())
    assert len(victims) == 8
    assert all(v.read_bytes() == b"precious " * 200 for v in victims)
    assert not (store / "recovery.jsonl").exists()


# fmt: off
BAD_OPTIONS_AT_OPEN: list[tuple[dict[str, Any], str]] = [
    ({"segment_bytes": 1024}, "segment_bytes must be at least 4096"),
    ({"compression_level": 0}, "compression_level"),
    ({"compression_level": 23}, "compression_level"),
    ({"fsync_interval_ms": 0}, "fsync_interval_ms"),
    ({"index_interval_bytes": 0}, "index_interval_bytes"),
    ({"id_cache_entries": -1}, "id_cache_entries"),
    ({"no_such_option": 1}, "no_such_option"),
    ({"durability": "sometimes"}, "sometimes|durability"),
    ({"segment_bytes": "big"}, "segment_bytes|str"),
    ({"segment_bytes": 8192.5}, "segment_bytes"),
    ({"readonly": "no"}, "readonly"),
    ({"compression_level": True}, "compression_level"),
]
# fmt: on


@pytest.mark.parametrize(
    ("overrides", "names"), BAD_OPTIONS_AT_OPEN, ids=[str(o) for o, _ in BAD_OPTIONS_AT_OPEN]
)
def test_bad_options_are_rejected_at_open(
    store: Path, overrides: dict[str, Any], names: str
) -> None:
    with pytest.raises(InvalidEvent, match=f"bad option: .*({names})"):
        eventlog.open(store, **overrides)
    assert not store.exists()  # rejected before anything was created


def test_options_object_and_overrides(store: Path) -> None:
    options = eventlog.Options(segment_bytes=8192, durability=eventlog.Durability.INTERVAL)
    with eventlog.open(store, options, compression_level=5) as log:
        log.create_session()
        assert log.stats().durability == "interval"
    with pytest.raises(ValueError, match="segment_bytes"):
        eventlog.Options(segment_bytes=10)
    with pytest.raises(InvalidEvent, match="bad option"):
        eventlog.open(store, options, fsync_interval_ms=-5)


@pytest.mark.parametrize("mode", ["fsync", "interval", "none"])
def test_durability_given_as_text_means_that_mode(store: Path, mode: str) -> None:
    """`durability="fsync"` must not silently become a mode that never fsyncs."""
    with eventlog.open(store, durability=mode) as log:
        log.create_session()
        assert log.stats().durability == mode


def test_two_handles_in_one_process_interleave(store: Path) -> None:
    a, b = eventlog.open(store), eventlog.open(store)
    try:
        session = a.create_session()
        prompt = b.add_prompt(session.id, "asked through b")  # b sees a's session
        response = a.add_response(prompt, "answered through a")  # a sees b's prompt
        agent = b.add_agent("agent", "r")
        a.assign_agent_to_prompt(prompt, agent)
        b.transfer_to_agent(response, agent)
        a.delete_node(agent)
        with pytest.raises(DeletedNodeReference):
            b.assign_agent_to_prompt(prompt, agent)  # b sees a's tombstone
        with pytest.raises(eventlog.AppendConflict):
            b.create_session(expect_store_lsn=5)  # a's last append counts for b too
        b.create_session(expect_store_lsn=6)

        def hammer(log: eventlog.EventLog, who: str) -> None:
            for i in range(15):
                log.add_prompt(session.id, f"{who}-{i}")

        threads = [threading.Thread(target=hammer, args=(h, n)) for h, n in ((a, "a"), (b, "b"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        records_a, records_b = list(a.read()), list(b.read())
        assert records_a == records_b
        assert [r.lsn for r in records_a] == list(range(8 + 30))
        stamps = [r.event.ts for r in records_a]
        assert stamps == sorted(stamps)
        contents = [
            e.content for e in (r.event for r in records_a) if isinstance(e, ev.PromptAdded)
        ]
        for who in "ab":  # each thread's prompts in its own order
            mine = [c for c in contents if c.startswith(f"{who}-")]
            assert mine == [f"{who}-{i}" for i in range(15)]
        assert a.stats().events == b.stats().events == 38
    finally:
        a.close()
        b.close()
    assert eventlog.verify(store) == []


def _mapped_id_files(store: Path) -> set[str]:
    """The `.ids` files of `store` this process has mapped now (Linux: /proc/self/maps)."""
    maps = Path("/proc/self/maps").read_text().splitlines()
    return {line.split()[-1] for line in maps if line.endswith(".ids") and str(store) in line}


def _open_id_files(store: Path) -> set[str]:
    """The `.ids` files of `store` this process has open now (Linux: /proc/self/fd)."""
    found = set()
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.endswith(".ids") and str(store) in target:
                found.add(target)
    return found


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc/self/maps")
@pytest.mark.slow
def test_id_files_stay_bounded_and_unmapped(store: Path) -> None:
    """Every sealed segment's `.ids` file an append had looked into stayed mapped until close,
    and its pages, once read, counted as the process's memory: 4.4 MB per 100k events, without
    bound. Then at most 8 were mapped at once, and each of those became resident as a whole
    after a few hundred lookups. Now none is mapped (a lookup reads one block), and at most 8
    are open at once, however many segments a handle looks into."""
    with eventlog.open(store, segment_bytes=4096) as log:
        sessions: list[uuid.UUID] = []
        while len(sessions) < 40:  # a session in each of 40 sealed segments
            first = log.stats().segments
            sessions.append(log.create_session().id)
            while log.stats().segments == first:
                log.add_prompts_batch([(sessions[-1], "x" * 200)] * 5)
    with eventlog.open(store, segment_bytes=4096) as log:
        seen: set[str] = set()
        for session in sessions:  # each looks its session up in that session's segment
            log.add_prompt(session, "again")
            assert _mapped_id_files(store) == set()
            opened = _open_id_files(store)
            assert len(opened) <= 8, sorted(opened)
            seen |= opened
        assert len(seen) >= 30, "the lookups did look into the sealed segments' files"
    assert _open_id_files(store) == set()


@pytest.mark.parametrize("count", [0, 1, 101, 102, 103, 204, 5_000, 52_437])
def test_an_id_file_read_a_block_at_a_time_finds_what_it_holds(tmp_path: Path, count: int) -> None:
    """A sealed segment's id table reads one block of records per lookup (not a mapping):
    every id is found with its entry across block and read-chunk boundaries, no other id
    is, a damaged file is refused, and a lookup after close raises instead of answering
    "not found" from whatever file reuses the descriptor."""
    from eventlog._index import Entry, IdTable  # noqa: PLC0415 (internal)

    rng = random.Random(count)
    keys = sorted({rng.getrandbits(127) | 1 for _ in range(count)})
    entries = [(k, Entry(1, 0, i, k ^ 1)) for i, k in enumerate(keys)]
    path = tmp_path / "0.ids"
    IdTable.write(path, entries, 99)
    checked, unchecked = IdTable.load(path), IdTable.load(path, verify=False)
    assert checked is not None and unchecked is not None and checked.next_lsn == 99
    held = dict(entries)
    for key, entry in entries:
        assert checked.get(key) == entry and unchecked.get(key) == entry
    for key in (rng.getrandbits(127) for _ in range(300)):
        if key not in held:
            assert checked.get(key) is None
    assert list(checked.items()) == entries
    checked.close()
    unchecked.close()
    with pytest.raises(ValueError):
        checked.get(keys[0] if keys else 1)
    if count:
        damaged = bytearray(path.read_bytes())
        damaged[40] ^= 1
        path.write_bytes(bytes(damaged))
        assert IdTable.load(path) is None


def test_async_follow_reads_a_backlog_of_large_events_without_waiting_for_a_write(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A follower's chunk ends once its frames pass a few MiB (`_reader.CHUNK_BYTES`); a
    chunk cut so was taken for the log's end, and the follower waited for the next write
    (or a second) before each of the next: here, a watcher that never wakes, for ever."""
    import watchfiles  # noqa: PLC0415 (the follower's own import)

    async def never_wakes(*_args: Any, **_kwargs: Any) -> Any:
        await asyncio.Event().wait()
        yield set()  # pragma: no cover

    monkeypatch.setattr(watchfiles, "awatch", never_wakes)
    with eventlog.open(store) as log:
        session = log.create_session().id
        for _ in range(12):  # 12 frames of ~1 MB: three chunks of 4 MiB
            log.add_prompts_batch([(session, "y" * 100_000)] * 10)
        total = log.next_lsn()

    async def backlog() -> int:
        seen = 0
        async with await eventlog.open_async(store) as alog:
            async for _record in alog.follow(0):
                seen += 1
                if seen == total:
                    break
        return seen

    assert asyncio.run(asyncio.wait_for(backlog(), 120)) == total
