"""The original crate's integration tests that this API once failed, translated scenario by
scenario (issue 10, items 11-15), and the async twins of the log's reads.

Each test drives the public API only: `eventlog` appends, `MemoryGraph` reads and SQL.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import eventlog
from eventlog import InvalidEvent, InvalidVariable, MissingVariable, TokenUsage, VariableSpec
from projections import (
    AsyncMemoryGraph,
    MemoryGraph,
    Prompt,
    Response,
    Session,
    ToolInvocation,
    implicit_edge_id,
)


@pytest.fixture
def graph(store: Path) -> Iterator[MemoryGraph]:
    with MemoryGraph.open(store, durability=eventlog.Durability.NONE) as g:
        yield g


def nodes_in_log(graph: MemoryGraph) -> int:
    return graph.stats().events


# -- 11. a session's nodes include the session ---------------------------------------------------


def test_session_nodes_start_with_the_session_node(graph: MemoryGraph) -> None:
    s = graph.create_session(metadata={"user": "42"})
    p = graph.add_prompt(s.id, "What is Rust?")
    r = graph.add_response(p, "A systems language.", TokenUsage(5, 30))
    found = graph.get_session_nodes(s.id)
    assert [type(node) for node in found] == [Session, Prompt, Response]
    assert [node.id for node in found] == [s.id, p, r]
    assert isinstance(found[0], Session) and found[0].metadata == {"user": "42"}


# -- 12. PART_OF: a prompt belongs to its session ------------------------------------------------


def test_prompt_is_part_of_its_session_in_edges_and_walks(graph: MemoryGraph) -> None:
    s = graph.create_session()
    p1 = graph.add_prompt(s.id, "first")
    p2 = graph.add_prompt(s.id, "second")
    r = graph.add_response(p2, "answer")
    part_of = graph.get_outgoing_edges(p1, "PART_OF")
    assert [(e.from_id, e.to_id, e.session_id) for e in part_of] == [(p1, s.id, s.id)]
    assert {e.from_id for e in graph.get_incoming_edges(s.id, "PART_OF")} == {p1, p2}
    assert graph.get_edge(implicit_edge_id("PART_OF", p2, s.id)) is not None
    (count,) = graph.rows("SELECT count(*) FROM edges WHERE edge_type = 'PART_OF'")[0]
    assert count == 2
    up = graph.ancestors(r, edge_types=["RESPONDS_TO", "PART_OF"])
    assert [(h.depth, h.node_id, h.edge.edge_type) for h in up] == [
        (1, p2, "RESPONDS_TO"),
        (2, s.id, "PART_OF"),
    ]
    assert isinstance(up[-1].node, Session)
    down = graph.descendants(s.id, depth=1)
    assert {h.node_id for h in down} == {p1, p2}
    graph.delete_node(p1)  # a tombstone takes the prompt's edges with it
    assert [e.from_id for e in graph.get_incoming_edges(s.id, "PART_OF")] == [p2]


# -- 13. template tags, variable validation, render ----------------------------------------------


CODE = [
    VariableSpec(name="language", pattern="[a-z]+"),
    VariableSpec(name="lines", type_hint="integer"),
    VariableSpec(name="strict", type_hint="boolean", required=False),
]


def test_template_tags_are_set_updated_and_queryable(graph: MemoryGraph) -> None:
    t = graph.create_template("review", "Review {{language}}", CODE, tags=["code", "review"])
    other = graph.create_template("chat", "Hi", tags=["chat"])
    assert graph.get_template(t).tags == ["code", "review"]
    tagged = "SELECT id FROM templates WHERE is_current AND list_contains(tags, $1) ORDER BY id"
    assert graph.rows(tagged, ["code"]) == [(t,)]
    graph.update_template(t, "Review {{language}}, carefully", CODE, tags=["code", "careful"])
    assert graph.get_template(t).tags == ["code", "careful"]
    assert graph.get_template(t, 1).tags == ["code", "review"]  # each version keeps its own
    graph.update_template(t, "Review {{language}}!", CODE)  # no tags given: they stay
    assert graph.get_template(t).tags == ["code", "careful"]
    assert graph.rows(tagged, ["chat"]) == [(other,)]


def test_template_variables_are_checked_by_type_and_pattern(graph: MemoryGraph) -> None:
    s = graph.create_session()
    t = graph.create_template("review", "Review {{lines}} lines of {{language}}", CODE)
    before = nodes_in_log(graph)
    with pytest.raises(InvalidVariable, match="variable lines: 'ten' is not of type integer"):
        graph.add_prompt(s.id, template_id=t, variables={"language": "rust", "lines": "ten"})
    with pytest.raises(InvalidVariable, match="variable language: 'Rust!' does not match") as e:
        graph.add_prompt(s.id, template_id=t, variables={"language": "Rust!", "lines": 3})
    assert (e.value.variable, e.value.template_id) == ("language", t)
    with pytest.raises(InvalidVariable, match="strict"):
        graph.add_prompt(
            s.id, template_id=t, variables={"language": "go", "lines": 3, "strict": "yes"}
        )
    with pytest.raises(MissingVariable, match="lines"):
        graph.add_prompt(s.id, template_id=t, variables={"language": "go"})
    assert nodes_in_log(graph) == before  # nothing written
    p = graph.add_prompt(s.id, template_id=t, variables={"language": "go", "lines": 3})
    node = graph.get_node(p)
    assert isinstance(node, Prompt) and node.content == "Review 3 lines of go"


def test_bad_variable_specs_are_refused_at_creation(graph: MemoryGraph) -> None:
    with pytest.raises(InvalidEvent, match="type_hint 'email' is not one of"):
        graph.create_template("t", "{{a}}", [VariableSpec(name="a", type_hint="email")])
    with pytest.raises(InvalidEvent, match="variable a: pattern is not a regular expression"):
        graph.create_template("t", "{{a}}", [VariableSpec(name="a", pattern="[")])


def test_render_previews_a_prompt_without_appending(graph: MemoryGraph) -> None:
    t = graph.create_template("review", "Review {{lines}} lines of {{language}}", CODE)
    before = nodes_in_log(graph)
    assert graph.render(t, {"language": "rust", "lines": 10}) == "Review 10 lines of rust"
    with pytest.raises(InvalidVariable, match="lines"):
        graph.render(t, {"language": "rust", "lines": 1.5})
    with pytest.raises(MissingVariable):
        graph.render(t, {})
    with pytest.raises(eventlog.UnknownNode):
        graph.render(uuid.uuid4(), {})
    assert nodes_in_log(graph) == before
    with eventlog.open(graph.path) as log:  # the plain log renders too, no projections needed
        assert log.render(t, {"language": "c", "lines": 1}) == "Review 1 lines of c"


# -- 14. semantic versions, and prompts from an older version ------------------------------------


def test_template_versions_bump_semver_and_older_versions_instantiate(graph: MemoryGraph) -> None:
    who = [VariableSpec(name="who")]
    t = graph.create_template("greet", "Hello {{who}}", who)
    assert graph.update_template(t, "Hi {{who}}", who, bump="minor") == 2
    assert graph.update_template(t, "Hey {{who}}", who) == 3  # a patch by default
    assert graph.update_template(t, "Yo {{who}}", who, bump="major") == 4
    versions = graph.rows("SELECT version, semver FROM templates WHERE id = $1 ORDER BY 1", [t])
    assert versions == [(1, "1.0.0"), (2, "1.1.0"), (3, "1.1.1"), (4, "2.0.0")]
    assert graph.get_template(t).semver == "2.0.0"
    with pytest.raises(InvalidEvent, match="bump must be one of"):
        graph.update_template(t, "x", bump="huge")
    custom = graph.create_template("custom", "x", semver="0.3.0")
    graph.update_template(custom, "y", bump="minor")
    assert graph.get_template(custom).semver == "0.4.0"

    s = graph.create_session()
    old = graph.add_prompt(s.id, template_id=t, template_version=2, variables={"who": "Ada"})
    node = graph.get_node(old)
    assert isinstance(node, Prompt)
    assert (node.content, node.template_version) == ("Hi Ada", 2)
    assert graph.render(t, {"who": "Bo"}, version=1) == "Hello Bo"
    with pytest.raises(InvalidEvent, match="has no version 5"):
        graph.add_prompt(s.id, template_id=t, template_version=5, variables={"who": "Ada"})
    p = graph.add_prompt(s.id, "by hand")
    graph.link_prompt_to_template(p, t, {"who": "Cy"}, template_version=3)
    (version,) = graph.rows("SELECT template_version FROM prompts WHERE id = $1", [p])[0]
    (linked,) = graph.rows("SELECT template_version FROM lineage WHERE node_id = $1", [p])[0]
    assert version == linked == 3


# -- 15. tool metadata and retries ---------------------------------------------------------------


def test_tool_call_carries_metadata_and_counts_retries(graph: MemoryGraph) -> None:
    s = graph.create_session()
    r = graph.add_response(graph.add_prompt(s.id, "weather?"), "calling")
    tool = graph.add_tool_invocation(
        r, "weather", {"city": "Oslo"}, metadata={"timeout_s": 5, "region": "eu"}
    )
    graph.complete_tool_invocation(tool, error="timeout", duration_ms=5000)
    with pytest.raises(InvalidEvent, match="already completed"):
        graph.complete_tool_invocation(tool, result="late")  # a failure is retried first
    graph.retry_tool_invocation(tool, error="timeout", parameters={"city": "Oslo", "fast": True})
    call = graph.get_node(tool)
    assert isinstance(call, ToolInvocation)
    assert (call.status, call.retry_count, call.error) == ("pending", 1, "timeout")
    assert call.metadata == {"timeout_s": 5, "region": "eu"}
    graph.complete_tool_invocation(tool, result={"temp": 4}, duration_ms=120)
    call = graph.get_node(tool)
    assert isinstance(call, ToolInvocation)
    assert (call.status, call.retry_count, call.result, call.error) == (
        "success",
        1,
        {"temp": 4},
        None,
    )
    assert call.parameters == {"city": "Oslo", "fast": True}
    with pytest.raises(InvalidEvent, match="succeeded: it cannot be retried"):
        graph.retry_tool_invocation(tool)
    assert graph.get_session(s.id).tool_count == 1  # attempts are not calls


def test_tool_retries_fold_the_same_in_one_batch(store: Path) -> None:
    with eventlog.open(store) as log:
        s = log.create_session()
        r = log.add_response(log.add_prompt(s.id, "q"), "a")
        tool = log.add_tool_invocation(r, "t")
        log.complete_tool_invocation(tool, error="e1")
        log.retry_tool_invocation(tool)
        log.complete_tool_invocation(tool, error="e2")
        log.retry_tool_invocation(tool, error="gave up waiting")
    with MemoryGraph.open(store, database=":memory:") as g:  # all of it in one fold
        call = g.get_node(tool)
        assert isinstance(call, ToolInvocation)
        assert (call.status, call.retry_count, call.error) == ("pending", 2, "gave up waiting")


# -- the async twins of the log's reads ----------------------------------------------------------


def test_async_reads_are_awaited_and_leave_the_loop_free(store: Path) -> None:
    async def scenario() -> None:
        async with await eventlog.open_async(store) as alog:
            s = await alog.create_session()
            await alog.add_prompt(s.id, "q")
            t = await alog.create_template("t", "{{x}}!", [VariableSpec(name="x")])
            assert await alog.next_lsn() == 3
            assert (await alog.stats()).events == 3
            assert [r.lsn async for r in alog.read(1)] == [1, 2]
            cursor = alog.cursor(2)
            try:
                assert [r.lsn async for r in cursor.records()] == [2]
                await alog.create_session()
                assert [r.lsn async for r in cursor.records()] == [3]
                assert cursor.next_lsn == 4
            finally:
                cursor.close()
            assert await alog.render(t, {"x": 1}) == "1!"

    asyncio.run(scenario())


def test_async_memory_graph_reads_and_stats(store: Path) -> None:
    async def scenario() -> None:
        g = await AsyncMemoryGraph.open(store)
        try:
            s = await g.create_session()
            await g.add_prompt(s.id, "q")
            first, prompt = await g.get_session_nodes(s.id)
            assert (first.id, type(prompt)) == (s.id, Prompt)
            assert (await g.graph_stats()).edges_by_type == {"PART_OF": 1}
        finally:
            await g.close()

    asyncio.run(scenario())
