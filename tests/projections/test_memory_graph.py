"""`MemoryGraph`'s public read API, through ``from projections import ...`` only.

Every read method with its happy path, its misses (unknown id: None or `NotFound`; a str id:
TypeError; deleted: hidden unless asked for) and its bad arguments; read-your-writes after
every append helper, and after appends by another process; updates reflected in place; the
one-folder-per-database rule (`ProjectorBusy`) and resuming from the checkpoint; other
databases (``":memory:"``, a second file); the asyncio twin; and what a closed graph raises.

Most tests build `World`, a small graph holding one node of every kind, two sessions, a
template with a child template, an agent and a custom edge. No pytest-asyncio: async tests
call `asyncio.run` themselves, like tests/eventlog/test_api.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

import eventlog
import projections.memory_graph
from eventlog import LogClosed, PromptMetadata, TokenUsage, VariableSpec
from eventlog import events as ev
from projections import (
    DATABASE_FILE,
    Agent,
    AsyncMemoryGraph,
    AsyncQuery,
    BadArgument,
    Edge,
    FoldFailed,
    GenericNode,
    GraphStats,
    Hop,
    Impact,
    MemoryGraph,
    Node,
    NotFound,
    ProjectionError,
    ProjectorBusy,
    Prompt,
    Query,
    Response,
    Session,
    SqlFailed,
    SqlRefused,
    Template,
    ToolInvocation,
    Turn,
    implicit_edge_id,
)

ROOT = Path(__file__).resolve().parents[2]
FAST: dict[str, Any] = {"durability": eventlog.Durability.NONE}
"""No fsync per append: these tests are about reads, not durability."""
UNKNOWN = uuid.UUID("01900000-0000-7000-8000-00000000dead")
"""A well-formed UUIDv7 no store in these tests holds."""

N = TypeVar("N", Session, Prompt, Response, ToolInvocation, Agent, Template, GenericNode)
NAME = [VariableSpec(name="name")]


# -- helpers ----------------------------------------------------------------------------------


@pytest.fixture
def graph(store: Path) -> Iterator[MemoryGraph]:
    with MemoryGraph.open(store, **FAST) as g:
        yield g


def node_of(
    g: MemoryGraph, node_id: uuid.UUID, cls: type[N], *, include_deleted: bool = False
) -> N:
    """`get_node`, which must return exactly a `cls`."""
    node = g.get_node(node_id, include_deleted=include_deleted)
    assert type(node) is cls, node
    assert isinstance(node, cls)
    return node


def ids(nodes: Sequence[Node | None]) -> list[uuid.UUID | None]:
    return [None if node is None else node.id for node in nodes]


def hop_ids(hops: list[Hop]) -> list[tuple[int, uuid.UUID]]:
    return [(hop.depth, hop.node_id) for hop in hops]


def sorted_ties(hops: list[Hop]) -> list[tuple[int, uuid.UUID, str]]:
    """(depth, node, edge type) of each hop, edges of one LSN put in edge-type order."""
    ordered = sorted(hops, key=lambda h: (h.depth, h.edge.lsn, h.edge.edge_type))
    assert hops == sorted(hops, key=lambda h: (h.depth, h.edge.lsn))  # breadth first, log order
    return [(h.depth, h.node_id, h.edge.edge_type) for h in ordered]


def in_other_process(store: Path, body: str) -> list[str]:
    """Run `body` in a new interpreter with ``log`` an `eventlog.open(store)`; its stdout words."""
    code = f"import eventlog\nwith eventlog.open({str(store)!r}) as log:\n" + textwrap.indent(
        textwrap.dedent(body), "    "
    )
    return python(code).split()


def python(code: str) -> str:
    """Run `code` in a new interpreter; its stdout (it must exit 0)."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@dataclass
class World:
    """A small graph with one node of every kind (see `build`)."""

    s: uuid.UUID  # session: p1, r1, tool1, p2, r2, tool2, doc
    s2: uuid.UUID  # another session: p3
    agent: uuid.UUID  # handles p1
    t: uuid.UUID  # root template
    tc: uuid.UUID  # child template (INHERITS t); p2 is made from it
    p1: uuid.UUID
    r1: uuid.UUID
    tool1: uuid.UUID
    p2: uuid.UUID
    r2: uuid.UUID
    tool2: uuid.UUID
    doc: uuid.UUID
    ref: uuid.UUID  # REFERENCES edge p1 -> doc
    handled: uuid.UUID  # HANDLED_BY edge p1 -> agent
    p3: uuid.UUID


def build(g: MemoryGraph) -> World:
    s = g.create_session(metadata={"user": "u1", "team": "red"}, tags=["t1"]).id
    s2 = g.create_session(metadata={"user": "u2"}).id
    agent = g.add_agent("Reviewer", "review", ["rust"], model="m1", metadata={"tier": 1})
    t = g.create_template("greet", "Hello {{name}}", NAME, description="root")
    tc = g.create_template_from_parent(t, "greet-child", "Hi {{name}}!", NAME)
    p1 = g.add_prompt(
        s,
        "What is Rust?",
        metadata=PromptMetadata(model="m1", temperature=0.5, custom={"topic": "rust"}),
    )
    r1 = g.add_response(
        p1, "A language.", TokenUsage(3, 5), latency_ms=12.5, model="m1", metadata={"grade": "A"}
    )
    tool1 = g.add_tool_invocation(r1, "search", {"q": "rust"})
    p2 = g.add_prompt(s, template_id=tc, variables={"name": "Ada"})
    r2 = g.add_response(p2, "Hello Ada.", TokenUsage(1, 2))
    tool2 = g.add_tool_invocation(r2, "calc", {"a": 1})
    handled = g.assign_agent_to_prompt(p1, agent)
    doc = g.add_node("document", "the doc", data={"source": "wiki"}, session_id=s)
    ref = g.add_edge(p1, doc, "REFERENCES", {"weight": 0.5})
    p3 = g.add_prompt(s2, "Other session")
    return World(s, s2, agent, t, tc, p1, r1, tool1, p2, r2, tool2, doc, ref, handled, p3)


@pytest.fixture
def world(graph: MemoryGraph) -> World:
    return build(graph)


# -- get_node and friends ---------------------------------------------------------------------


def test_get_node_returns_each_kind_typed(graph: MemoryGraph, world: World) -> None:
    w, g = world, graph
    session = node_of(g, w.s, Session)
    assert session.metadata == {"user": "u1", "team": "red"}
    assert session.tags == ["t1"]
    assert not session.deleted

    p1 = node_of(g, w.p1, Prompt)
    assert (p1.session_id, p1.content, p1.model, p1.temperature) == (
        w.s,
        "What is Rust?",
        "m1",
        0.5,
    )
    assert p1.metadata == {"topic": "rust"}
    assert p1.agent_id == w.agent
    p2 = node_of(g, w.p2, Prompt)
    assert (p2.content, p2.template_id, p2.template_version) == ("Hi Ada!", w.tc, 1)
    assert p2.variables == {"name": "Ada"}
    assert p2.previous_prompt_id == w.p1

    r1 = node_of(g, w.r1, Response)
    assert (r1.prompt_id, r1.session_id, r1.content) == (w.p1, w.s, "A language.")
    assert (r1.prompt_tokens, r1.completion_tokens, r1.total_tokens) == (3, 5, 8)
    assert (r1.latency_ms, r1.model, r1.metadata) == (12.5, "m1", {"grade": "A"})

    tool = node_of(g, w.tool1, ToolInvocation)
    assert (tool.response_id, tool.session_id, tool.tool_name) == (w.r1, w.s, "search")
    assert (tool.parameters, tool.status, tool.result) == ({"q": "rust"}, "pending", None)

    agent = node_of(g, w.agent, Agent)
    assert (agent.name, agent.role, agent.capabilities, agent.model) == (
        "Reviewer",
        "review",
        ["rust"],
        "m1",
    )
    assert (agent.metadata, agent.version) == ({"tier": 1}, 1)

    template = node_of(g, w.t, Template)
    assert (template.name, template.text, template.version, template.is_current) == (
        "greet",
        "Hello {{name}}",
        1,
        True,
    )
    assert template.description == "root"
    assert template.variables is not None and template.variables[0]["name"] == "name"
    child = node_of(g, w.tc, Template)
    assert (child.parent_id, child.ancestors) == (w.t, [w.t])

    doc = node_of(g, w.doc, GenericNode)
    assert (doc.kind, doc.content, doc.data, doc.session_id) == (
        "document",
        "the doc",
        {"source": "wiki"},
        w.s,
    )
    # every node knows its log position and time
    lsns = [node_of(g, i, Prompt).lsn for i in (w.p1, w.p2, w.p3)]
    assert lsns == sorted(lsns)
    assert all(isinstance(n_, Prompt) and n_.ts > 0 for n_ in g.get_nodes_batch([w.p1, w.p2]))


def test_get_node_misses(graph: MemoryGraph, world: World) -> None:
    assert graph.get_node(UNKNOWN) is None
    assert graph.get_node(UNKNOWN, include_deleted=True) is None
    assert graph.get_node(world.ref) is None  # an edge's id is not a node's
    with pytest.raises(TypeError, match=r"uuid\.UUID"):
        graph.get_node(str(world.p1))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        graph.get_node(world.p1.int)  # type: ignore[arg-type]
    for read in (
        graph.get_edge,
        graph.get_outgoing_edges,
        graph.get_incoming_edges,
        graph.get_session,
        graph.get_template,
        graph.ancestors,
        graph.descendants,
    ):
        with pytest.raises(TypeError):
            read(str(world.p1))  # type: ignore[arg-type]


def test_deleted_nodes_are_none_unless_asked(graph: MemoryGraph, world: World) -> None:
    w, g = world, graph
    kinds: list[tuple[uuid.UUID, type[Any]]] = [
        (w.tool1, ToolInvocation),
        (w.r1, Response),
        (w.p3, Prompt),
        (w.doc, GenericNode),
        (w.agent, Agent),
        (w.tc, Template),
        (w.s2, Session),
    ]
    for node_id, cls in kinds:
        assert isinstance(g.get_node(node_id), cls)  # cached before the delete
        g.delete_node(node_id, reason="test")
        assert g.get_node(node_id) is None, cls
        gone = g.get_node(node_id, include_deleted=True)
        assert type(gone) is cls
        assert gone is not None and gone.deleted and gone.deleted_ts is not None
    assert ids(g.get_nodes_batch([w.p1, w.r1, UNKNOWN, w.tc, w.s])) == [w.p1, None, None, None, w.s]


def test_get_nodes_batch(graph: MemoryGraph, world: World) -> None:
    w = world
    order = [w.doc, w.s, UNKNOWN, w.p1, w.t, w.p1, w.tool2]
    found = graph.get_nodes_batch(order)
    assert ids(found) == [w.doc, w.s, None, w.p1, w.t, w.p1, w.tool2]
    assert [type(n_).__name__ for n_ in found] == [
        "GenericNode",
        "Session",
        "NoneType",
        "Prompt",
        "Template",
        "Prompt",
        "ToolInvocation",
    ]
    assert graph.get_nodes_batch([]) == []
    with pytest.raises(TypeError):
        graph.get_nodes_batch([w.p1, "nope"])  # type: ignore[list-item]


# -- edges ------------------------------------------------------------------------------------


def test_get_edge(graph: MemoryGraph, world: World) -> None:
    w, g = world, graph
    responds = g.get_edge(implicit_edge_id("RESPONDS_TO", w.r1, w.p1))
    assert isinstance(responds, Edge)
    assert (responds.edge_type, responds.from_id, responds.to_id) == ("RESPONDS_TO", w.r1, w.p1)
    assert responds.session_id == w.s
    assert responds.properties == {"latency_ms": 12.5, "model": "m1"}

    ref = g.get_edge(w.ref)
    assert ref is not None
    assert (ref.edge_type, ref.from_id, ref.to_id, ref.properties) == (
        "REFERENCES",
        w.p1,
        w.doc,
        {"weight": 0.5},
    )
    handled = g.get_edge(w.handled)
    assert handled is not None and (handled.edge_type, handled.to_id) == ("HANDLED_BY", w.agent)
    inherits = g.get_edge(implicit_edge_id("INHERITS", w.tc, w.t))
    assert inherits is not None and inherits.session_id is None
    assert g.get_edge(UNKNOWN) is None
    assert g.get_edge(w.p1) is None  # a node's id is not an edge's

    g.delete_node(w.ref)
    assert g.get_edge(w.ref) is None
    assert [e.edge_type for e in g.get_outgoing_edges(w.p1)] == ["PART_OF", "HANDLED_BY"]


def test_outgoing_and_incoming_edges(graph: MemoryGraph, world: World) -> None:
    w, g = world, graph
    out = g.get_outgoing_edges(w.p1)
    assert [(e.edge_type, e.to_id) for e in out] == [
        ("PART_OF", w.s),  # implied by the prompt itself
        ("HANDLED_BY", w.agent),
        ("REFERENCES", w.doc),
    ]
    assert [e.lsn for e in out] == sorted(e.lsn for e in out)
    assert sorted(e.edge_type for e in g.get_outgoing_edges(w.p2)) == [
        "FOLLOWS",
        "INSTANTIATES",
        "PART_OF",
    ]
    assert [e.to_id for e in g.get_outgoing_edges(w.p2, "INSTANTIATES")] == [w.tc]
    assert g.get_outgoing_edges(w.p2, edge_type="HANDLED_BY") == []
    assert [e.to_id for e in g.get_outgoing_edges(w.r1)] == [w.p1, w.tool1]  # + INVOKES

    incoming = g.get_incoming_edges(w.p1)
    assert [(e.edge_type, e.from_id) for e in incoming] == [
        ("RESPONDS_TO", w.r1),
        ("FOLLOWS", w.p2),
    ]
    assert [e.from_id for e in g.get_incoming_edges(w.p1, "FOLLOWS")] == [w.p2]
    assert [e.from_id for e in g.get_incoming_edges(w.t, "INHERITS")] == [w.tc]
    assert [e.from_id for e in g.get_incoming_edges(w.agent)] == [w.p1]
    assert g.get_incoming_edges(UNKNOWN) == []
    assert g.get_outgoing_edges(UNKNOWN, "FOLLOWS") == []

    custom = g.add_edge(w.p3, w.doc, "CITES", {"page": 3})
    assert [e.id for e in g.get_incoming_edges(w.doc)] == [w.ref, custom]
    assert [e.id for e in g.get_incoming_edges(w.doc, "CITES")] == [custom]


# -- sessions, templates, conversations -------------------------------------------------------


def test_get_session(graph: MemoryGraph, world: World) -> None:
    w, g = world, graph
    session = g.get_session(w.s)
    assert isinstance(session, Session)
    assert (session.prompt_count, session.response_count, session.tool_count) == (2, 2, 2)
    assert (session.prompt_tokens, session.completion_tokens) == (4, 7)
    assert session.last_prompt_id == w.p2
    assert session.first_activity_ts <= session.last_activity_ts
    with pytest.raises(NotFound, match=str(UNKNOWN)):
        g.get_session(UNKNOWN)
    with pytest.raises(NotFound):
        g.get_session(w.p1)  # a prompt is not a session
    with pytest.raises(LookupError):  # NotFound is a LookupError and a ProjectionError
        g.get_session(UNKNOWN)
    assert issubclass(NotFound, ProjectionError)
    g.delete_node(w.s2)
    with pytest.raises(NotFound):
        g.get_session(w.s2)


def test_get_session_nodes(graph: MemoryGraph, world: World) -> None:
    w, g = world, graph
    found = g.get_session_nodes(w.s)
    assert ids(found) == [w.s, w.p1, w.r1, w.tool1, w.p2, w.r2, w.tool2, w.doc]  # log order
    assert [n_.lsn for n_ in found] == sorted(n_.lsn for n_ in found)
    assert ids(g.get_session_nodes(w.s2)) == [w.s2, w.p3]
    g.delete_nodes_batch([w.r1, w.doc])
    assert ids(g.get_session_nodes(w.s)) == [w.s, w.p1, w.tool1, w.p2, w.r2, w.tool2]
    with pytest.raises(NotFound):
        g.get_session_nodes(UNKNOWN)
    empty = g.create_session()
    assert ids(g.get_session_nodes(empty.id)) == [empty.id]  # the session node itself


def test_get_template(graph: MemoryGraph, world: World) -> None:
    w, g = world, graph
    assert g.get_template(w.t).version == 1
    assert g.update_template(w.t, "Hello again {{name}}", NAME, name="greet2") == 2
    current = g.get_template(w.t)
    assert (current.version, current.text, current.name, current.is_current) == (
        2,
        "Hello again {{name}}",
        "greet2",
        True,
    )
    assert current.description == "root"  # kept when not given
    first = g.get_template(w.t, 1)
    assert (first.version, first.text, first.name, first.is_current) == (
        1,
        "Hello {{name}}",
        "greet",
        False,
    )
    assert g.get_template(w.t, version=2) == current
    assert node_of(g, w.t, Template) == current  # get_node gives the current version
    with pytest.raises(NotFound, match="version 3"):
        g.get_template(w.t, 3)
    with pytest.raises(NotFound):
        g.get_template(UNKNOWN)
    with pytest.raises(NotFound):
        g.get_template(w.p1)  # a prompt is not a template
    g.delete_node(w.tc)
    with pytest.raises(NotFound):
        g.get_template(w.tc)
    with pytest.raises(NotFound):
        g.get_template(w.tc, 1)


def test_conversation_thread(graph: MemoryGraph, world: World) -> None:
    w, g = world, graph
    extra = g.add_response(w.p1, "A second answer.", TokenUsage(1, 1))
    thread = g.conversation_thread(w.s)
    assert all(isinstance(t, Turn) for t in thread)
    assert [t.prompt.id for t in thread] == [w.p1, w.p2]
    assert [[r.id for r in t.responses] for t in thread] == [[w.r1, extra], [w.r2]]
    assert [r.content for r in thread[0].responses] == ["A language.", "A second answer."]
    g.delete_node(w.r1)
    assert [[r.id for r in t.responses] for t in g.conversation_thread(w.s)] == [[extra], [w.r2]]
    empty = g.create_session()
    assert g.conversation_thread(empty.id) == []
    with pytest.raises(NotFound):
        g.conversation_thread(UNKNOWN)


def test_context_window(graph: MemoryGraph) -> None:
    g = graph
    s = g.create_session().id
    prompts = []
    for i in range(5):
        p = g.add_prompt(s, f"q{i}")
        g.add_response(p, f"a{i}", TokenUsage(1, 1))
        prompts.append(p)

    def contents(turns: int) -> list[tuple[str, list[str]]]:
        return [
            (t.prompt.content, [r.content for r in t.responses]) for t in g.context_window(s, turns)
        ]

    assert contents(3) == [("q2", ["a2"]), ("q3", ["a3"]), ("q4", ["a4"])]  # oldest first
    assert contents(1) == [("q4", ["a4"])]
    assert contents(50) == [(f"q{i}", [f"a{i}"]) for i in range(5)]
    assert [t.prompt.id for t in g.context_window(s)] == prompts  # default: 10 turns

    # the cached window follows appends, new responses, deletions and agent assignments
    last = g.add_prompt(s, "q5")
    assert contents(3) == [("q3", ["a3"]), ("q4", ["a4"]), ("q5", [])]
    g.add_response(last, "a5", TokenUsage(1, 1))
    assert contents(3)[-1] == ("q5", ["a5"])
    g.delete_node(prompts[4])
    assert contents(3) == [("q2", ["a2"]), ("q3", ["a3"]), ("q5", ["a5"])]
    agent = g.add_agent("A", "helper")
    g.assign_agent_to_prompt(last, agent)
    assert g.context_window(s, 3)[-1].prompt.agent_id == agent

    # a window handed out is the caller's: changing it changes nothing cached
    window = g.context_window(s, 3)
    window.reverse()
    window.pop()
    assert contents(3) == [("q2", ["a2"]), ("q3", ["a3"]), ("q5", ["a5"])]

    for bad in (0, -1, True, 1.5, "3", None):
        with pytest.raises(ValueError, match="turns"):
            g.context_window(s, bad)  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        g.context_window(UNKNOWN, 3)
    assert g.context_window(g.create_session().id, 3) == []


# -- lineage ----------------------------------------------------------------------------------


def test_ancestors(graph: MemoryGraph, world: World) -> None:
    w, g = world, graph
    hops = g.ancestors(w.tool2)
    # breadth first; within a level in the log order of the edges (FOLLOWS and INSTANTIATES
    # come from one event, so they share an LSN and their order is not defined)
    assert sorted_ties(hops) == [
        (1, w.r2, "INVOKES"),  # walked backwards
        (2, w.p2, "RESPONDS_TO"),
        (3, w.p1, "FOLLOWS"),
        (3, w.tc, "INSTANTIATES"),
        (3, w.s, "PART_OF"),
        (4, w.t, "INHERITS"),  # tc's edge is older than p1's
        (4, w.agent, "HANDLED_BY"),
        (4, w.doc, "REFERENCES"),
    ]
    assert isinstance(hops[0].node, Response) and hops[0].node.id == w.r2
    by_id = {h.node_id: h for h in hops}
    assert isinstance(by_id[w.t].node, Template) and isinstance(by_id[w.agent].node, Agent)
    assert isinstance(by_id[w.doc].node, GenericNode)
    assert all(h.node is not None and h.node.id == h.node_id for h in hops)
    assert hop_ids(g.ancestors(w.tool2, depth=2)) == [(1, w.r2), (2, w.p2)]
    assert hop_ids(g.ancestors(w.tool2, 1)) == [(1, w.r2)]
    only = g.ancestors(w.p2, edge_types=["INSTANTIATES", "INHERITS"])
    assert hop_ids(only) == [(1, w.tc), (2, w.t)]
    assert g.ancestors(w.tool2, edge_types=["RESPONDS_TO"]) == []  # INVOKES is the only way up
    assert g.ancestors(w.t) == []
    assert g.ancestors(UNKNOWN) == []
    for bad in (0, -2, True, 1.0, "3"):
        with pytest.raises(ValueError, match="depth"):
            g.ancestors(w.p1, bad)  # type: ignore[arg-type]


def test_descendants(graph: MemoryGraph, world: World) -> None:
    w, g = world, graph
    assert hop_ids(g.descendants(w.t)) == [(1, w.tc), (2, w.p2), (3, w.r2), (4, w.tool2)]
    assert hop_ids(g.descendants(w.t, depth=2)) == [(1, w.tc), (2, w.p2)]
    assert hop_ids(g.descendants(w.t, edge_types=("INHERITS",))) == [(1, w.tc)]
    hops = g.descendants(w.p1)
    assert hop_ids(hops) == [(1, w.r1), (1, w.p2), (2, w.tool1), (2, w.r2), (3, w.tool2)]
    assert all(h.node is not None and h.node.id == h.node_id for h in hops)
    from_agent = [(1, w.p1), (2, w.r1), (2, w.p2), (3, w.tool1), (3, w.r2), (4, w.tool2)]
    assert hop_ids(g.descendants(w.agent)) == from_agent
    assert g.descendants(w.tool1) == []
    g.delete_node(w.r1)
    # a tombstone ends a walk: nothing is reached through the deleted response
    assert hop_ids(g.descendants(w.p1, depth=1)) == [(1, w.p2)]
    assert w.tool1 not in {h.node_id for h in g.descendants(w.p1)}
    for bad in (0, -1, False):
        with pytest.raises(ValueError):
            g.descendants(w.p1, depth=bad)


def test_template_impact(graph: MemoryGraph, world: World) -> None:
    w, g = world, graph
    impact = g.template_impact(w.t)
    assert isinstance(impact, Impact)
    assert impact.template_id == w.t
    assert impact.templates == sorted([w.t, w.tc])
    assert (impact.prompts, impact.responses, impact.tool_invocations) == (
        [w.p2],
        [w.r2],
        [w.tool2],
    )
    child = g.template_impact(w.tc)
    assert (child.templates, child.prompts) == ([w.tc], [w.p2])

    # a prompt linked afterwards, with its response and tool call, joins the impact
    g.link_prompt_to_template(w.p1, w.t, {"name": "x"})
    linked = g.template_impact(w.t)
    assert linked.prompts == [w.p1, w.p2]
    assert linked.responses == [w.r1, w.r2]
    assert linked.tool_invocations == [w.tool1, w.tool2]
    assert g.template_impact(w.tc).prompts == [w.p2]

    # a new version keeps the impact; a grandchild adds to it; deleted nodes leave it
    g.update_template(w.t, "v2 {{name}}", NAME)
    grandchild = g.create_template_from_parent(w.tc, "gc", "Yo {{name}}", NAME)
    p4 = g.add_prompt(w.s2, template_id=grandchild, variables={"name": "Bo"})
    assert g.template_impact(w.t).templates == sorted([w.t, w.tc, grandchild])
    assert g.template_impact(w.t).prompts == [w.p1, w.p2, p4]
    g.delete_nodes_batch([w.p2, w.tool1])
    after = g.template_impact(w.t)
    assert after.prompts == [w.p1, p4]
    assert after.responses == [w.r1, w.r2]
    assert after.tool_invocations == [w.tool2]
    g.delete_node(grandchild)
    assert g.template_impact(w.t).templates == sorted([w.t, w.tc])
    with pytest.raises(NotFound):
        g.template_impact(grandchild)
    with pytest.raises(NotFound):
        g.template_impact(UNKNOWN)


# -- the query builder ------------------------------------------------------------------------


def test_query_session_and_node_type(graph: MemoryGraph, world: World) -> None:
    w, g = world, graph
    q = g.query()
    assert isinstance(q, Query)
    assert ids(g.query().session(w.s).execute()) == ids(g.get_session_nodes(w.s))[1:]
    assert ids(g.query().node_type("prompt").execute()) == [w.p1, w.p2, w.p3]
    assert ids(g.query().node_type("PromptNode").execute()) == [w.p1, w.p2, w.p3]
    assert ids(g.query().node_type("PROMPT").session(w.s).execute()) == [w.p1, w.p2]
    seed_names = {
        "ConversationSession": [w.s, w.s2],
        "ResponseNode": [w.r1, w.r2],
        "ToolInvocation": [w.tool1, w.tool2],
        "AgentNode": [w.agent],
        "PromptTemplate": [w.t, w.tc],
        "node": [w.doc],
    }
    for name, expected in seed_names.items():
        assert ids(g.query().node_type(name).execute()) == expected, name
    both = g.query().node_type("response", "tool_invocation").execute()
    assert ids(both) == [w.r1, w.tool1, w.r2, w.tool2]
    assert {type(n_) for n_ in both} == {Response, ToolInvocation}
    everything = g.query().execute()
    assert len(everything) == 2 + 1 + 2 + 3 + 2 + 2 + 1  # sessions agent templates prompts ...
    assert [n_.lsn for n_ in everything] == sorted(n_.lsn for n_ in everything)
    assert g.query().session(w.s).node_type("agent", "template", "session").execute() == []
    assert g.query().node_type().execute() == []
    g.update_template(w.t, "v2 {{name}}", NAME)
    templates = g.query().node_type("template").execute()
    assert [(t.id, t.version) for t in templates if isinstance(t, Template)] == [
        (w.tc, 1),
        (w.t, 2),
    ]


def test_query_between_ts_and_occurred_at(graph: MemoryGraph, world: World) -> None:
    w, g = world, graph
    p2, r2 = node_of(g, w.p2, Prompt), node_of(g, w.r2, Response)
    window = g.query().between(p2.ts, r2.ts).execute()
    assert w.p2 in ids(window) and w.r2 not in ids(window)
    assert all(p2.ts <= n_.ts < r2.ts for n_ in window)
    assert w.r2 in ids(g.query().between(r2.ts).execute())
    assert ids(g.query().between(end=p2.ts).node_type("prompt").execute()) == [w.p1]
    as_datetime = dt.datetime.fromtimestamp(p2.ts / 1e9, dt.UTC) - dt.timedelta(seconds=1)
    assert w.p2 in ids(g.query().between(as_datetime).execute())

    y2020 = dt.datetime(2020, 3, 1, 12, tzinfo=dt.UTC)
    imported = g.add_prompt(w.s, "from the archive", occurred_at=y2020)
    assert node_of(g, imported, Prompt).occurred_at == int(y2020.timestamp()) * 10**9
    march = ("2020-03-01T00:00:00Z", "2020-03-02T00:00:00Z")
    assert ids(g.query().between(*march, on="occurred_at").execute()) == [imported]
    assert g.query().between(*march).execute() == []  # it was recorded now
    # nodes without occurred_at fall back to ts
    recent = g.query().between(p2.ts, on="occurred_at").node_type("prompt").execute()
    assert ids(recent) == [w.p2, w.p3]
    assert imported in ids(g.query().between(p2.ts).node_type("prompt").execute())
    with pytest.raises(ValueError, match="on must be"):
        g.query().between(p2.ts, on="deleted_ts")
    with pytest.raises(BadArgument):
        g.query().between("not a time")


def test_query_metadata_and_agent(graph: MemoryGraph, world: World) -> None:
    w, g = world, graph
    assert ids(g.query().metadata("topic", "rust").execute()) == [w.p1]
    assert ids(g.query().metadata("user", "u1").execute()) == [w.s]
    assert ids(g.query().metadata("user", "u1").metadata("team", "red").execute()) == [w.s]
    assert g.query().metadata("user", "u1").metadata("team", "blue").execute() == []
    assert ids(g.query().metadata("grade", "A").execute()) == [w.r1]
    assert ids(g.query().metadata("tier", 1).execute()) == [w.agent]
    assert g.query().metadata("tier", "1").execute() == []  # JSON equality: 1 is not "1"
    assert ids(g.query().metadata("source", "wiki").execute()) == [w.doc]  # a node's data
    assert g.query().metadata("topic", "go").execute() == []
    assert g.query().node_type("tool_invocation").metadata("q", "rust").execute() == []
    assert g.query().metadata("name", "Ada").execute() == []  # variables are not metadata

    assert ids(g.query().agent(w.agent).execute()) == [w.p1, w.r1, w.tool1]
    assert ids(g.query().agent(w.agent).node_type("response").execute()) == [w.r1]
    assert g.query().agent(UNKNOWN).execute() == []
    assert g.query().agent(w.agent).session(w.s2).execute() == []
    assert g.query().agent(w.agent).node_type("agent", "session").execute() == []


def test_query_order_paging_count_stream(graph: MemoryGraph, world: World) -> None:
    w, g = world, graph
    ascending = g.query().session(w.s).execute()
    assert ids(g.query().session(w.s).order_by("lsn", "DESC").execute()) == ids(ascending)[::-1]
    assert ids(g.query().session(w.s).order_by("ts", "desc").execute()) == ids(ascending)[::-1]
    assert ids(g.query().session(w.s).order_by("timestamp").execute()) == ids(ascending)
    assert ids(g.query().session(w.s).limit(3).execute()) == ids(ascending)[:3]
    assert ids(g.query().session(w.s).offset(2).limit(3).execute()) == ids(ascending)[2:5]
    assert ids(g.query().session(w.s).offset(5).execute()) == ids(ascending)[5:]
    newest = g.query().session(w.s).order_by(direction="DESC").limit(2).execute()
    assert ids(newest) == [w.doc, w.tool2]
    assert g.query().session(w.s).limit(0).execute() == []
    assert g.query().session(w.s).offset(100).execute() == []

    assert g.query().session(w.s).count() == len(ascending) == 7
    assert g.query().count() == len(g.query().execute())
    assert g.query().node_type("prompt").count() == 3
    assert g.query().node_type().count() == 0
    assert g.query().session(w.s).limit(3).count() == 3  # what execute() would return
    assert g.query().session(w.s).offset(5).count() == 2

    for page in (1, 2, 3, 7, 100):
        assert ids(list(g.query().session(w.s).stream(page=page))) == ids(ascending)
    paged = g.query().session(w.s).order_by("lsn", "DESC").offset(1).limit(4)
    assert ids(list(paged.stream(page=3))) == ids(paged.execute()) == ids(ascending)[::-1][1:5]
    assert ids(list(g.query().stream())) == ids(g.query().execute())
    assert list(g.query().node_type().stream(page=2)) == []


def test_query_include_deleted(graph: MemoryGraph, world: World) -> None:
    w, g = world, graph
    g.delete_nodes_batch([w.p3, w.r1])
    assert ids(g.query().node_type("prompt").execute()) == [w.p1, w.p2]
    assert ids(g.query().node_type("prompt").include_deleted().execute()) == [w.p1, w.p2, w.p3]
    assert g.query().include_deleted().count() == g.query().count() + 2
    assert g.query().include_deleted(False).count() == g.query().count()
    deleted = [n_ for n_ in g.query().include_deleted().execute() if n_.deleted]
    assert sorted(ids(deleted), key=str) == sorted([w.r1, w.p3], key=str)


def test_query_bad_arguments(graph: MemoryGraph) -> None:
    q = graph.query()
    with pytest.raises(ValueError, match="unknown node type"):
        q.node_type("PromptNodes")
    with pytest.raises(TypeError):
        q.node_type(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        q.session(str(UNKNOWN))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        q.agent(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        q.metadata(1, "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        q.order_by("content")
    with pytest.raises(ValueError):
        q.order_by("lsn", "sideways")
    for bad in (-1, True, 2.5, "3"):
        with pytest.raises(ValueError):
            q.limit(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            q.offset(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        list(q.stream(page=-1))  # checked when the stream starts
    assert q.execute() == []  # nothing above changed the query


# -- SQL and stats ----------------------------------------------------------------------------


def test_sql_and_rows(graph: MemoryGraph, world: World) -> None:
    w, g = world, graph
    relation = g.sql("SELECT content FROM prompts WHERE session_id = $1 ORDER BY lsn", [w.s])
    assert relation.fetchall() == [("What is Rust?",), ("Hi Ada!",)]
    named = g.sql("SELECT count(*) FROM prompts WHERE content = $c", {"c": "Other session"})
    assert named.fetchall() == [(1,)]
    assert g.rows("SELECT id FROM prompts ORDER BY lsn") == [(w.p1,), (w.p2,), (w.p3,)]
    assert g.rows("SELECT prompts_handled, responses FROM agent_stats") == [(1, 1)]
    assert g.rows("SELECT count(*) FROM responses WHERE prompt_id = ?", [w.p1]) == [(1,)]
    g.add_response(w.p1, "again", TokenUsage(1, 1))  # rows() folds first
    assert g.rows("SELECT count(*) FROM responses WHERE prompt_id = ?", [w.p1]) == [(2,)]
    with pytest.raises(SqlFailed, match=r"^Catalog Error: Table with name no_such_table"):
        g.rows("SELECT * FROM no_such_table")
    with pytest.raises(SqlFailed, match=r"^Parser Error: "):
        g.sql("SELEC 1")


def test_stats(graph: MemoryGraph, world: World) -> None:
    w, g = world, graph
    stats = g.stats()
    assert isinstance(stats, GraphStats)
    assert stats.checkpoint_lsn == stats.events - 1
    assert stats.lag_events == 0
    assert stats.nodes_by_type == {
        "session": 2,
        "prompt": 3,
        "response": 2,
        "tool_invocation": 2,
        "agent": 1,
        "template": 2,
        "node": 1,
    }
    assert stats.edges_by_type == {
        "FOLLOWS": 1,
        "HANDLED_BY": 1,
        "INHERITS": 1,
        "INSTANTIATES": 1,
        "INVOKES": 2,
        "PART_OF": 3,  # one per prompt
        "REFERENCES": 1,
        "RESPONDS_TO": 2,
    }
    assert stats.database_bytes > 0
    assert stats.events_by_type["prompt.added"] == 3  # the log's own stats are there too

    g.update_template(w.t, "v2 {{name}}", NAME)  # a new version is not a new template
    g.delete_nodes_batch([w.p3, w.ref])
    after = g.stats()
    assert after.nodes_by_type["template"] == 2
    assert after.nodes_by_type["prompt"] == 2
    assert "REFERENCES" not in after.edges_by_type
    assert after.checkpoint_lsn == stats.checkpoint_lsn + 3  # one update, two tombstones
    assert after.lag_events == 0


# -- read your writes -------------------------------------------------------------------------


def test_every_append_helper_is_read_back_at_once(graph: MemoryGraph) -> None:
    g = graph
    s = g.create_session(metadata={"k": "v"}, tags=["x"])
    assert g.get_session(s.id).metadata == {"k": "v"}
    batch = g.create_sessions_batch(3, metadata={"b": True})
    assert [type(n_) for n_ in g.get_nodes_batch([b.id for b in batch])] == [Session] * 3
    assert g.get_session(batch[0].id).metadata == {"b": True}
    g.update_session(s.id, metadata={"k2": 2})
    assert g.get_session(s.id).metadata == {"k": "v", "k2": 2}

    p = g.add_prompt(s.id, "first")
    assert g.get_session(s.id).prompt_count == 1
    assert ids(g.get_session_nodes(s.id)) == [s.id, p]
    many = g.add_prompts_batch([(s.id, "second"), (s.id, "third")])
    assert [t.prompt.content for t in g.conversation_thread(s.id)] == ["first", "second", "third"]
    r = g.add_response(p, "answer", TokenUsage(2, 3), finish_reason="stop")
    assert node_of(g, r, Response).finish_reason == "stop"
    assert g.get_session(s.id).completion_tokens == 3
    rs = g.add_responses_batch(
        [(many[0], "a2", TokenUsage(1, 1)), (many[1], "a3", TokenUsage(1, 1))]
    )
    assert [t.responses[0].id for t in g.context_window(s.id, 2)] == rs
    pairs = g.add_conversations_batch(
        [((s.id, "q4"), ("a4", TokenUsage(1, 1))), ((s.id, "q5"), None)]
    )
    assert [[x.id for x in t.responses] for t in g.context_window(s.id, 2)] == [[pairs[0][1]], []]
    fork = g.fork_session(s.id, fork_point=p, tags=["fork"])
    forked = g.get_session(fork.id)
    assert (forked.parent_session_id, forked.fork_point, forked.tags) == (s.id, p, ["fork"])

    a = g.add_agent("A", "planner")
    assert node_of(g, a, Agent).version == 1
    g.update_agent(a, role="executor")
    assert (node_of(g, a, Agent).role, node_of(g, a, Agent).version) == ("executor", 2)
    handled = g.assign_agent_to_prompt(p, a)
    assert node_of(g, p, Prompt).agent_id == a
    assert [e.id for e in g.get_outgoing_edges(p, "HANDLED_BY")] == [handled]
    b = g.add_agent("B", "critic")
    handoff = g.transfer_to_agent(r, b, from_agent_id=a, reason="review")
    edge = g.get_edge(handoff)
    assert edge is not None and (edge.edge_type, edge.from_id, edge.to_id) == ("TRANSFERS_TO", r, b)
    assert edge.properties is not None and edge.properties["reason"] == "review"
    assert g.rows("SELECT handoffs_in FROM agent_stats WHERE agent_id = ?", [b]) == [(1,)]

    t = g.create_template("t", "Say {{name}}", NAME)
    assert g.get_template(t).text == "Say {{name}}"
    child = g.create_template_from_parent(t, "c", "Shout {{name}}", NAME)
    assert g.get_template(child).ancestors == [t]
    assert g.update_template(t, "Say {{name}} twice", NAME) == 2
    assert g.get_template(t).version == 2
    link = g.link_prompt_to_template(many[0], t, {"name": "x"})
    assert node_of(g, many[0], Prompt).template_id == t
    assert ids(g.query().node_type("prompt").session(s.id).execute())[1] == many[0]
    assert g.template_impact(t).prompts == [many[0]]
    link_edge = g.get_edge(link)
    assert link_edge is not None and link_edge.edge_type == "INSTANTIATES"

    tool = g.add_tool_invocation(r, "grep", ["-r", "x"])
    assert node_of(g, tool, ToolInvocation).parameters == ["-r", "x"]
    g.complete_tool_invocation(tool, result="found", duration_ms=3.0)
    assert node_of(g, tool, ToolInvocation).status == "success"
    e = g.add_edge(p, many[0], "RELATES", {"why": "test"})
    assert [x.id for x in g.get_outgoing_edges(p, "RELATES")] == [e]
    n_ = g.add_node("context", "ctx", data={"k": 1})
    assert node_of(g, n_, GenericNode).session_id is None
    raw = g.append(ev.NodeAdded(id=uuid.uuid4(), kind="feedback", content="+1", session_id=s.id))
    raw_id = raw.events[0].id  # type: ignore[attr-defined]
    assert node_of(g, raw_id, GenericNode).kind == "feedback"
    assert ids(g.get_session_nodes(s.id))[-1] == raw_id

    g.delete_node(n_)
    assert g.get_node(n_) is None
    g.delete_nodes_batch([many[1], tool])
    assert g.get_nodes_batch([many[1], tool]) == [None, None]
    assert g.get_session(s.id).prompt_count == 4
    assert g.stats().lag_events == 0


def test_updates_are_reflected(graph: MemoryGraph, world: World) -> None:
    w, g = world, graph
    # update_agent: a version bump; fields left None keep their value
    before = node_of(g, w.agent, Agent)
    g.update_agent(w.agent, name="Reviewer 2", capabilities=["rust", "go"])
    agent = node_of(g, w.agent, Agent)
    assert (agent.name, agent.role, agent.capabilities, agent.model) == (
        "Reviewer 2",
        "review",
        ["rust", "go"],
        "m1",
    )
    assert agent.version == before.version + 1 == 2
    assert agent.updated_ts is not None and agent.updated_ts > before.ts
    g.update_agent(w.agent, model="m2", metadata={"tier": 2})
    again = node_of(g, w.agent, Agent)
    assert (again.version, again.model, again.metadata, again.name) == (
        3,
        "m2",
        {"tier": 2},
        "Reviewer 2",
    )

    # complete_tool_invocation: success and error
    g.complete_tool_invocation(w.tool1, result={"hits": 3}, duration_ms=7.5)
    ok = node_of(g, w.tool1, ToolInvocation)
    assert (ok.status, ok.result, ok.error, ok.duration_ms) == ("success", {"hits": 3}, None, 7.5)
    assert ok.completed_ts is not None and ok.completed_ts >= ok.ts
    g.complete_tool_invocation(w.tool2, error="division by zero", duration_ms=0.5)
    failed = node_of(g, w.tool2, ToolInvocation)
    assert (failed.status, failed.result, failed.error, failed.duration_ms) == (
        "error",
        None,
        "division by zero",
        0.5,
    )
    assert g.rows("SELECT tool_calls, tool_failures FROM agent_stats") == [(1, 0)]

    # update_template: the new version is current, the old one is kept
    assert g.update_template(w.tc, "Hey {{name}}", NAME, description="v2") == 2
    template = node_of(g, w.tc, Template)
    assert (template.version, template.text, template.description) == (2, "Hey {{name}}", "v2")
    assert g.get_template(w.tc, 1).text == "Hi {{name}}!"
    assert g.get_template(w.tc).ancestors == [w.t]
    p = g.add_prompt(w.s, template_id=w.tc, variables={"name": "Cy"})
    assert (node_of(g, p, Prompt).content, node_of(g, p, Prompt).template_version) == ("Hey Cy", 2)

    # update_session: metadata merged, None removes a key, tags replaced
    g.update_session(w.s, metadata={"team": None, "plan": "pro"}, tags=["t2", "t3"])
    session = g.get_session(w.s)
    assert session.metadata == {"user": "u1", "plan": "pro"}
    assert session.tags == ["t2", "t3"]
    assert session.updated_ts is not None
    g.update_session(w.s, metadata={"plan": "free"})  # tags not given: kept
    assert (g.get_session(w.s).metadata, g.get_session(w.s).tags) == (
        {"user": "u1", "plan": "free"},
        ["t2", "t3"],
    )
    g.update_session(w.s, tags=[])
    assert g.get_session(w.s).tags == []
    assert ids(g.query().metadata("plan", "free").execute()) == [w.s]


def test_a_cached_response_follows_its_prompts_new_agent(graph: MemoryGraph) -> None:
    """A response's agent is its prompt's: `agent.assigned` names the prompt, not the
    response, and a response read before the assignment was served stale from the cache
    (found by `test_step_walks_one_event_at_a_time` with seed 3778919744)."""
    g = graph
    session = g.create_session().id
    first, second = g.add_agent("triage", "routes"), g.add_agent("coder", "answers")
    prompt = g.add_prompt(session, "Hello")
    g.assign_agent_to_prompt(prompt, first)
    response = g.add_response(prompt, "Hi")
    assert node_of(g, response, Response).agent_id == first  # cached now
    g.assign_agent_to_prompt(prompt, second)
    assert node_of(g, response, Response).agent_id == second
    assert node_of(g, prompt, Prompt).agent_id == second


def test_appends_by_another_process_are_seen(graph: MemoryGraph, world: World) -> None:
    w, g = world, graph
    window = g.context_window(w.s, 2)  # cached now
    assert g.get_session(w.s).prompt_count == 2
    words = in_other_process(
        graph.path,
        f"""
        import uuid
        s = log.create_session(metadata={{"from": "child"}})
        p = log.add_prompt(s.id, "from another process")
        q = log.add_prompt(uuid.UUID({str(w.s)!r}), "late question")
        log.add_response(q, "late answer")
        log.complete_tool_invocation(uuid.UUID({str(w.tool1)!r}), result=1)
        log.delete_node(uuid.UUID({str(w.p3)!r}))
        print(s.id, p, q)
        """,
    )
    child_session, child_prompt, late = (uuid.UUID(x) for x in words)
    assert g.get_session(child_session).metadata == {"from": "child"}
    assert node_of(g, child_prompt, Prompt).content == "from another process"
    assert [t.prompt.id for t in g.context_window(w.s, 2)] == [window[1].prompt.id, late]
    assert [r.content for r in g.context_window(w.s, 2)[-1].responses] == ["late answer"]
    assert g.get_session(w.s).prompt_count == 3
    assert node_of(g, w.tool1, ToolInvocation).status == "success"
    assert g.get_node(w.p3) is None
    assert g.query().metadata("from", "child").count() == 1
    stats = g.stats()
    assert (stats.lag_events, stats.checkpoint_lsn) == (0, stats.events - 1)


# -- one folder per database, reopening, other databases --------------------------------------


@pytest.mark.slow
def test_second_open_is_refused_then_reopen_resumes(store: Path) -> None:
    with MemoryGraph.open(store, **FAST) as g:
        w = build(g)
        g.add_response(w.p3, "r3", TokenUsage(2, 2))
        counts = g.get_session(w.s2)
        checkpoint = g.stats().checkpoint_lsn
        with pytest.raises(ProjectorBusy) as busy:
            MemoryGraph.open(store, **FAST)
        message = str(busy.value)
        assert DATABASE_FILE in message and "already folded" in message
        assert "embedded MemoryGraph" in message and "one folder per database" in message
        assert isinstance(busy.value, ProjectionError)
        assert g.get_session(w.s2) == counts  # the first graph is unharmed
        g.add_prompt(w.s2, "still writable")
        counts = g.get_session(w.s2)
        checkpoint += 1
    # another process is refused too
    code = (
        "import projections\n"
        "try:\n"
        f"    projections.MemoryGraph.open({str(store)!r}).close()\n"
        "except projections.ProjectorBusy as e:\n"
        "    print('busy', e)\n"
    )
    with MemoryGraph.open(store, **FAST) as g:
        out = python(code)
        assert out.startswith("busy ") and f"pid {os.getpid()}" in out
        # reopened: resumes from the checkpoint, nothing folded twice
        assert g.stats().checkpoint_lsn == checkpoint
        assert g.get_session(w.s2) == counts
        assert (counts.prompt_count, counts.response_count, counts.prompt_tokens) == (2, 1, 2)
        assert g.rows("SELECT count(*) FROM prompts") == [(4,)]
        assert g.rows("SELECT count(*) FROM edges WHERE edge_type = 'RESPONDS_TO'") == [(3,)]
        g.add_prompt(w.s2, "after reopen")
        assert g.get_session(w.s2).prompt_count == 3
    # appends made while no graph was open are folded on open
    with eventlog.open(store) as log:
        log.add_prompt(w.s2, "while closed")
    with MemoryGraph.open(store, **FAST) as g:
        assert g.get_session(w.s2).prompt_count == 4
        assert g.stats().lag_events == 0


def test_in_memory_database(store: Path) -> None:
    with eventlog.open(store) as log:
        s = log.create_session()
        log.add_prompt(s.id, "before")
    with MemoryGraph.open(store, **FAST, database=":memory:") as g:
        assert g.get_session(s.id).prompt_count == 1  # the backlog is folded on open
        p = g.add_prompt(s.id, "after")
        assert ids(g.get_session_nodes(s.id))[-1] == p
        assert g.stats().database_bytes == 0
        # no lock: a default graph may open beside it, and another in-memory one too
        with (
            MemoryGraph.open(store, **FAST) as default,
            MemoryGraph.open(store, **FAST, database=":memory:") as m2,
        ):
            assert default.get_session(s.id).prompt_count == 2
            assert m2.get_session(s.id).prompt_count == 2
    assert (store / DATABASE_FILE).exists()
    with MemoryGraph.open(store, **FAST, database=":memory:") as g:
        assert g.get_session(s.id).prompt_count == 2  # rebuilt from the log


def test_an_in_memory_graph_out_of_memory_is_a_fold_error_and_loses_nothing(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An in-memory graph runs under the largest limit already: out of memory it raises
    `FoldFailed` naming DuckDB's error (it used to try to reopen a file it does not have and
    fail on an assertion), and every append stays in the log."""
    monkeypatch.setattr(projections.memory_graph, "FOLD_MEMORY_LIMIT", "8MB")
    with MemoryGraph.open(store, **FAST, database=":memory:") as g:
        s = g.create_session().id
        for _ in range(200):
            g.add_prompts_batch([(s, f"word{j} " * 400) for j in range(100)])
        with pytest.raises(FoldFailed, match="Out of Memory"):
            g.rows("SELECT count(*) FROM prompts")
        assert g.next_lsn() == 1 + 200 * 100


def setting(graph: MemoryGraph, name: str) -> Any:
    """A setting of the graph's DuckDB instance, read as a read of the graph is (it folds, and
    holds the file), on its own connection: the caller's SQL may not read settings."""
    query = f"SELECT current_setting('{name}')"
    return graph._run(lambda reader: reader.con.execute(query).fetchall()[0][0])


def test_an_in_memory_graph_spills_to_a_private_directory_of_its_own(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DuckDB's in-memory default spills to ``./.tmp`` with the umask's modes, where the
    prompts it spills are readable by others; the graph's spill directory is its own, 0700,
    and goes at close. A sort past the memory limit makes a real spill."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    os.umask(0o022)
    with MemoryGraph.open(store, **FAST, database=":memory:", memory_limit="64MB") as g:
        spill = setting(g, "temp_directory")
        assert os.stat(spill).st_mode & 0o777 == 0o700
        rows = g.rows(
            "SELECT count(*) FROM (SELECT hash(range)::VARCHAR || repeat('y', 40) AS s"
            " FROM range(3000000) ORDER BY s)"
        )
        assert rows == [(3000000,)]
        assert list(work.iterdir()) == []  # nothing in the working directory
        with pytest.raises(SqlRefused):
            g.rows("SET temp_directory = '/tmp'")
    assert not os.path.exists(spill)


def test_other_database_file_beside_the_default(store: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.duckdb"
    with MemoryGraph.open(store, **FAST) as g:
        s = g.create_session().id
        with MemoryGraph.open(store, **FAST, database=other) as h:
            assert other.exists() and (store / DATABASE_FILE).exists()
            assert h.get_session(s).prompt_count == 0
            g.add_prompt(s, "from g")
            assert h.get_session(s).prompt_count == 1  # h folds what g appended
            h.add_prompt(s, "from h")
            assert g.get_session(s).prompt_count == 2
            assert h.stats().checkpoint_lsn == g.stats().checkpoint_lsn == 2
            with pytest.raises(ProjectorBusy, match=r"other\.duckdb"):
                MemoryGraph.open(store, **FAST, database=other)
            with pytest.raises(ProjectorBusy):
                MemoryGraph.open(store, **FAST, database=str(store / DATABASE_FILE))
    with MemoryGraph.open(store, **FAST, database=str(other)) as h:
        assert h.get_session(s).prompt_count == 2


# -- asyncio ----------------------------------------------------------------------------------


def test_async_memory_graph(store: Path) -> None:
    async def scenario() -> None:
        async with await AsyncMemoryGraph.open(store, **FAST) as g:
            s = await g.create_session(metadata={"user": "a"})
            session = await g.get_session(s.id)
            assert isinstance(session, Session) and session.metadata == {"user": "a"}
            p = await g.add_prompt(s.id, "async question")
            r = await g.add_response(p, "async answer", TokenUsage(1, 2))
            tool = await g.add_tool_invocation(r, "calc", {"x": 1})
            await g.complete_tool_invocation(tool, result=2)
            t = await g.create_template("t", "T {{name}}", NAME)
            child = await g.create_template_from_parent(t, "c", "C {{name}}", NAME)
            p2 = await g.add_prompt(s.id, template_id=child, variables={"name": "z"})
            agent = await g.add_agent("A", "r")
            await g.assign_agent_to_prompt(p, agent)

            assert isinstance(await g.get_node(p), Prompt)
            assert await g.get_node(UNKNOWN) is None
            assert ids(await g.get_nodes_batch([p, UNKNOWN, r])) == [p, None, r]
            edge = await g.get_edge(implicit_edge_id("RESPONDS_TO", r, p))
            assert edge is not None and edge.edge_type == "RESPONDS_TO"
            assert [e.to_id for e in await g.get_outgoing_edges(r)] == [p, tool]
            assert [e.from_id for e in await g.get_incoming_edges(p, "FOLLOWS")] == [p2]
            assert ids(await g.get_session_nodes(s.id)) == [s.id, p, r, tool, p2]
            assert (await g.get_template(t)).version == 1
            with pytest.raises(NotFound):
                await g.get_template(UNKNOWN)
            with pytest.raises(NotFound):
                await g.get_session(UNKNOWN)
            with pytest.raises(TypeError):
                await g.get_node("x")  # type: ignore[arg-type]
            thread = await g.conversation_thread(s.id)
            assert [(t_.prompt.id, ids(t_.responses)) for t_ in thread] == [(p, [r]), (p2, [])]
            assert [t_.prompt.id for t_ in await g.context_window(s.id, 1)] == [p2]
            with pytest.raises(ValueError):
                await g.context_window(s.id, 0)
            assert hop_ids(await g.ancestors(tool, depth=2)) == [(1, r), (2, p)]
            assert hop_ids(await g.descendants(t, edge_types=["INHERITS"])) == [(1, child)]
            impact = await g.template_impact(t)
            assert (impact.templates, impact.prompts) == (sorted([t, child]), [p2])
            assert (await g.get_node(tool)) == (await g.get_nodes_batch([tool]))[0]
            done = await g.get_node(tool)
            assert isinstance(done, ToolInvocation) and done.status == "success"

            q = g.query().session(s.id).node_type("PromptNode")
            assert isinstance(q, AsyncQuery)
            assert ids(await q.execute()) == [p, p2]
            assert await q.count() == 2
            assert ids([n_ async for n_ in g.query().session(s.id).stream(page=1)]) == [
                p,
                r,
                tool,
                p2,
            ]
            desc = g.query().session(s.id).order_by("lsn", "DESC").limit(3)
            assert ids([n_ async for n_ in desc.stream(page=2)]) == ids(await desc.execute())
            assert await g.sql("SELECT count(*) FROM prompts WHERE session_id = ?", [s.id]) == [
                (2,)
            ]
            stats = await g.graph_stats()
            assert isinstance(stats, GraphStats)
            assert stats.lag_events == 0 and stats.nodes_by_type["template"] == 2

            # read-your-writes across a sync handle and another process
            with pytest.raises(ProjectorBusy):
                MemoryGraph.open(store, **FAST)
            words = await asyncio.to_thread(
                in_other_process, store, "print(log.create_session().id)"
            )
            assert isinstance(await g.get_session(uuid.UUID(words[0])), Session)

            # concurrent reads and appends on one loop
            results = await asyncio.gather(
                *(g.add_prompt(s.id, f"c{i}") for i in range(5)),
                *(g.get_session(s.id) for _ in range(5)),
            )
            assert len(results) == 10
            assert (await g.get_session(s.id)).prompt_count == 7

        with pytest.raises(ProjectionError, match="closed"):
            await g.get_node(p)
        with pytest.raises(ProjectionError):
            await g.query().execute()
        with pytest.raises(ProjectionError):
            await g.sql("SELECT 1")
        with pytest.raises(LogClosed):
            await g.create_session()
        await g.close()  # idempotent

    asyncio.run(scenario())


def test_async_open_refused_while_sync_graph_open(store: Path) -> None:
    async def scenario() -> None:
        with pytest.raises(ProjectorBusy):
            await AsyncMemoryGraph.open(store, **FAST)
        async with await AsyncMemoryGraph.open(store, **FAST, database=":memory:") as g:
            assert (await g.query().node_type("session").count()) == 1

    with MemoryGraph.open(store, **FAST) as g:
        g.create_session()
        asyncio.run(scenario())
        assert g.query().count() == 1


# -- closing ----------------------------------------------------------------------------------


def test_methods_after_close(store: Path) -> None:
    g = MemoryGraph.open(store)  # the default durability here
    w = build(g)
    query = g.query().session(w.s)
    g.close()
    g.close()  # idempotent
    reads: list[Callable[[], object]] = [
        lambda: g.get_node(w.p1),
        lambda: g.get_nodes_batch([w.p1]),
        lambda: g.get_edge(w.ref),
        lambda: g.get_outgoing_edges(w.p1),
        lambda: g.get_incoming_edges(w.p1),
        lambda: g.get_session(w.s),
        lambda: g.get_session_nodes(w.s),
        lambda: g.get_template(w.t),
        lambda: g.conversation_thread(w.s),
        lambda: g.context_window(w.s, 2),
        lambda: g.ancestors(w.r1),
        lambda: g.descendants(w.p1),
        lambda: g.template_impact(w.t),
        lambda: g.sql("SELECT 1"),
        lambda: g.rows("SELECT 1"),
        query.execute,
        query.count,
        lambda: list(query.stream()),
        lambda: g.query().execute(),
    ]
    for read in reads:
        with pytest.raises(ProjectionError, match="closed"):
            read()
    with pytest.raises((ProjectionError, LogClosed)):
        g.stats()
    appends: list[Callable[[], object]] = [
        g.create_session,
        lambda: g.add_prompt(w.s, "late"),
        lambda: g.update_agent(w.agent, name="x"),
        lambda: g.delete_node(w.p1),
    ]
    for append in appends:
        with pytest.raises(LogClosed):
            append()
    # the with statement closes too, and the store reopens with everything in it
    with MemoryGraph.open(store, **FAST) as again:
        assert again.get_session(w.s).prompt_count == 2
    with pytest.raises(ProjectionError):
        again.get_node(w.s)


def test_a_fork_reads_its_parents_history_up_to_the_fork_point(graph: MemoryGraph) -> None:
    g = graph
    s = g.create_session()
    prompts, responses = [], []
    for i in range(3):
        prompts.append(g.add_prompt(s.id, f"q{i}"))
        responses.append(g.add_response(prompts[-1], f"a{i}", TokenUsage(1, 1)))

    def thread(session: uuid.UUID) -> list[tuple[str, list[str]]]:
        return [
            (t.prompt.content, [r.content for r in t.responses])
            for t in g.conversation_thread(session)
        ]

    # at a response: that turn whole; at a prompt: the prompt, to be answered anew
    after = g.fork_session(s.id, fork_point=responses[0])
    at_prompt = g.fork_session(s.id, fork_point=prompts[1])
    whole = g.fork_session(s.id)  # no fork point: everything the parent had then
    g.add_prompt(s.id, "q3, after the forks")  # not in any fork's history
    mine = g.add_prompt(after.id, "fork q")
    g.add_response(mine, "fork a", TokenUsage(1, 1))
    assert thread(after.id) == [("q0", ["a0"]), ("fork q", ["fork a"])]
    assert thread(at_prompt.id) == [("q0", ["a0"]), ("q1", [])]
    assert [c for c, _ in thread(whole.id)] == ["q0", "q1", "q2"]
    window = g.context_window(after.id, turns=1)
    assert [t.prompt.content for t in window] == ["fork q"]
    assert [t.prompt.content for t in g.context_window(after.id, turns=5)] == ["q0", "fork q"]
    # a fork of a fork reads through both
    deeper = g.fork_session(after.id)
    assert [c for c, _ in thread(deeper.id)] == ["q0", "fork q"]
    # the parent's history changes under the fork: its window is never stale
    g.delete_node(prompts[0])
    assert [t.prompt.content for t in g.context_window(after.id, turns=5)] == ["fork q"]


@pytest.mark.slow
def test_embedded_graph_folds_prompts_at_the_largest_request(tmp_path: Path) -> None:
    """One prompt of the largest size the log accepts did not fit in the embedded graph's
    64 MB of DuckDB memory: every read failed. The graph reads under 48 MB now, and folds
    what does not fit there again under 256 MB, until it lets go of the file."""
    size = eventlog.Options().max_request_bytes - 1024
    # idle_s leaves a loaded machine time between two reads: past it, the graph lets go
    with MemoryGraph.open(tmp_path / "store", idle_s=2.0) as graph:
        session = graph.create_session()
        assert setting(graph, "memory_limit") == "45.7 MiB"  # 48 MB
        for letter in "ab":
            graph.add_prompt(session.id, letter * size)
        query = "SELECT left(content, 1), length(content) FROM prompts ORDER BY lsn"
        assert graph.sql(query).fetchall() == [("a", size), ("b", size)]
        assert setting(graph, "memory_limit") == "244.1 MiB"  # 256 MB
        time.sleep(3.0)  # idle: the graph lets go of the file, and reopens it under 48 MB
        assert setting(graph, "memory_limit") == "45.7 MiB"
        assert graph.rows(query) == [("a", size), ("b", size)]  # a read runs again too
        assert setting(graph, "memory_limit") == "244.1 MiB"


_READS_ONLY = """
import sys, uuid
from projections import MemoryGraph
with MemoryGraph.open({store!r}) as g:
    session, prompt = uuid.UUID({session!r}), uuid.UUID({prompt!r})
    assert g.get_node(prompt) is not None
    assert len(g.context_window(session, 10)) == 1
    assert g.ancestors(prompt, depth=5)
    g.get_session_nodes(session)
    g.query().session(session).node_type("prompt").limit(10).execute()
    g.rows("SELECT * FROM agent_stats")
    g.stats()
print(sorted(m for m in ("pyarrow", "numpy", "pandas") if m in sys.modules))
"""


@pytest.mark.slow
def test_reads_of_a_folded_database_import_no_pyarrow(tmp_path: Path) -> None:
    """A graph that opens a database with nothing left to fold, and only reads, never imports
    pyarrow (about 46 MB of its memory): only the fold stages batches in Arrow."""
    with MemoryGraph.open(tmp_path) as g:
        s = g.create_session()
        p = g.add_prompt(s.id, "What is Rust?")
        g.add_response(p, "A systems language.", usage=TokenUsage(5, 30))
        assert g.get_node(p) is not None  # folded, and written back on close
    code = _READS_ONLY.format(store=str(tmp_path), session=str(s.id), prompt=str(p))
    assert python(code).splitlines()[-1] == "[]"
