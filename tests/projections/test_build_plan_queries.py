"""The example queries of the original build plan ("LLM-Memory-Graph Technical Research and
Build Plan", appendix A), each run on known data and checked exactly.

1. recent context: the last 10 prompts of a session, newest first;
2. template lineage: every prompt derived from a template, through INSTANTIATES and INHERITS;
3. agent performance: mean (and p95) response latency per agent, with handoffs and tokens;
4. tool success rate per tool_name since a cutoff time.

Each query is asked the ways the graph offers (the query builder or a typed read, and SQL on
the projections), and the answers must agree with each other and with the data.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import eventlog
from eventlog import TokenUsage, VariableSpec
from projections import MemoryGraph, Prompt, Response, Template, ToolInvocation


@pytest.fixture
def graph(store: Path) -> Iterator[MemoryGraph]:
    with MemoryGraph.open(store, durability=eventlog.Durability.NONE) as g:
        yield g


# -- 1. recent conversation context --------------------------------------------------------------


def test_recent_context_is_the_last_ten_prompts_newest_first(graph: MemoryGraph) -> None:
    g = graph
    s = g.create_session().id
    other = g.create_session().id
    prompts: list[uuid.UUID] = []
    for i in range(14):
        p = g.add_prompt(s, f"question {i}")
        g.add_response(p, f"answer {i}", TokenUsage(3, 5))
        g.add_prompt(other, f"elsewhere {i}")
        prompts.append(p)
    g.delete_node(prompts[12])  # a deleted prompt is not context
    live = [p for p in prompts if p != prompts[12]]
    expected = live[::-1][:10]

    context = (
        g.query().session(s).node_type("PromptNode").order_by("timestamp", "DESC").limit(10)
    ).execute()
    assert [node.id for node in context] == expected
    typed = [node for node in context if isinstance(node, Prompt) and node.session_id == s]
    assert typed == context
    assert (typed[0].content, typed[-1].content) == ("question 13", "question 3")
    times = [node.ts for node in context]
    assert times == sorted(times, reverse=True)

    by_sql = g.rows(
        "SELECT id FROM prompts WHERE session_id = ? AND deleted_ts IS NULL "
        "ORDER BY ts DESC, lsn DESC LIMIT 10",
        [s],
    )
    assert [row[0] for row in by_sql] == expected

    # the same ten prompts as turns, oldest first, each with its response
    window = g.context_window(s, 10)
    assert [turn.prompt.id for turn in window] == expected[::-1]
    assert [[r.content for r in turn.responses] for turn in window][-1] == ["answer 13"]


# -- 2. template lineage -------------------------------------------------------------------------


def test_template_lineage_covers_instantiations_and_inheritance(graph: MemoryGraph) -> None:
    g = graph
    who = [VariableSpec(name="who")]
    root = g.create_template("greet", "Hello {{who}}", who)
    child = g.create_template_from_parent(root, "greet-formal", "Good day {{who}}", who)
    grandchild = g.create_template_from_parent(child, "greet-royal", "Your Majesty {{who}}")
    unrelated = g.create_template("bye", "Bye {{who}}", who)

    s = g.create_session().id
    from_root = g.add_prompt(s, template_id=root, variables={"who": "Ada"})
    response = g.add_response(from_root, "Hi!", TokenUsage(1, 1))
    tool = g.add_tool_invocation(response, "search", {"q": "Ada"})
    assert g.update_template(root, "Hello there {{who}}", who) == 2
    from_root_v2 = g.add_prompt(s, template_id=root, variables={"who": "Bob"})
    from_child = g.add_prompt(s, template_id=child, variables={"who": "Cy"})
    linked = g.add_prompt(s, "written by hand, then linked")
    g.link_prompt_to_template(linked, grandchild)
    deleted = g.add_prompt(s, template_id=root, variables={"who": "Dee"})
    g.delete_node(deleted)
    g.add_prompt(s, template_id=unrelated, variables={"who": "Eve"})
    g.add_prompt(s, "no template at all")

    derived = [from_root, from_root_v2, from_child, linked]  # live, in log order

    impact = g.template_impact(root)
    assert impact.templates == sorted([root, child, grandchild])
    assert impact.prompts == derived
    assert impact.responses == [response]
    assert impact.tool_invocations == [tool]
    assert g.template_impact(child).prompts == [from_child, linked]
    assert g.template_impact(grandchild).prompts == [linked]

    root_node = g.get_node(root)
    assert isinstance(root_node, Template)
    assert (root_node.version, root_node.text) == (2, "Hello there {{who}}")
    versions = g.rows("SELECT id, template_version FROM prompts WHERE template_id = ?", [root])
    assert dict(versions) == {from_root: 1, from_root_v2: 2, deleted: 2}

    # the build plan's walk: INSTANTIATES and INHERITS, followed from the template down
    hops = g.descendants(root, edge_types=["INSTANTIATES", "INHERITS"])
    found = {hop.node_id: hop for hop in hops if hop.node is not None}
    assert {i for i, hop in found.items() if isinstance(hop.node, Prompt)} == set(derived)
    assert {i for i, hop in found.items() if isinstance(hop.node, Template)} == {
        child,
        grandchild,
    }
    depth = {i: hop.depth for i, hop in found.items()}
    assert depth == {
        from_root: 1,
        from_root_v2: 1,
        child: 1,
        from_child: 2,
        grandchild: 2,
        linked: 3,
    }
    assert found[linked].edge.edge_type == "INSTANTIATES"
    assert found[grandchild].edge.edge_type == "INHERITS"
    assert all(hop.edge.edge_type in ("INSTANTIATES", "INHERITS") for hop in hops)

    by_sql = g.rows(
        "SELECT node_id FROM lineage WHERE node_kind = 'prompt' AND deleted_ts IS NULL "
        "AND (template_id = ? OR list_contains(template_ancestors, ?)) ORDER BY lsn",
        [root, root],
    )
    assert [row[0] for row in by_sql] == derived
    ancestors = g.rows(
        "SELECT template_id, template_ancestors FROM lineage WHERE node_id = ?", [linked]
    )
    assert ancestors == [(grandchild, [child, root])]


# -- 3. agent performance ------------------------------------------------------------------------


def test_agent_performance_from_agent_stats(graph: MemoryGraph) -> None:
    g = graph
    planner = g.add_agent("planner", "plans", ["plan"])
    coder = g.add_agent("coder", "codes", ["code"])
    idle = g.add_agent("idle", "waits")
    s = g.create_session().id

    def handled(agent: uuid.UUID, latency: float | None, usage: TokenUsage) -> uuid.UUID:
        p = g.add_prompt(s, f"for {agent}")
        g.assign_agent_to_prompt(p, agent)
        return g.add_response(p, "done", usage, latency_ms=latency)

    planner_responses = [handled(planner, ms, TokenUsage(10, 20)) for ms in (100, 200, 300, 400)]
    coder_fast = handled(coder, 50.0, TokenUsage(5, 7))
    handled(coder, None, TokenUsage(5, 7))  # no latency: counted, but not in the mean
    g.delete_node(handled(planner, 10_000.0, TokenUsage(99, 99)))  # a deleted response
    gone = g.add_prompt(s, "deleted before it was answered")
    g.assign_agent_to_prompt(gone, planner)
    g.delete_node(gone)

    g.transfer_to_agent(planner_responses[0], coder, from_agent_id=planner, reason="code it")
    g.transfer_to_agent(coder_fast, planner, from_agent_id=coder, reason="review")
    g.transfer_to_agent(planner_responses[1], coder)  # no from_agent: only an arrival
    ok = g.add_tool_invocation(planner_responses[0], "search")
    g.complete_tool_invocation(ok, result=[1])
    bad = g.add_tool_invocation(planner_responses[0], "calc")
    g.complete_tool_invocation(bad, error="overflow")

    stats = {
        row[0]: row[1:]
        for row in g.rows(
            "SELECT agent_id, name, prompts_handled, responses, mean_latency_ms, p95_latency_ms, "
            "handoffs_in, handoffs_out, tokens_in, tokens_out, tool_calls, tool_failures "
            "FROM agent_stats"
        )
    }
    # The planner handles 5 live prompts (the one whose response was deleted still counts) and
    # has 4 live responses; p95 of 100, 200, 300, 400 interpolated: 300 + 0.85 * 100.
    assert stats[planner] == ("planner", 5, 4, 250.0, 385.0, 1, 1, 40, 80, 2, 1)
    assert stats[coder] == ("coder", 2, 2, 50.0, 50.0, 2, 1, 10, 14, 0, 0)
    assert stats[idle] == ("idle", 0, 0, None, None, 0, 0, 0, 0, 0, 0)

    # the build plan's form: responses to the prompts each agent HANDLED, averaged per agent
    by_edges = g.rows(
        "SELECT e.to_id, avg(r.latency_ms) FROM edges e "
        "JOIN prompts p ON p.id = e.from_id AND p.deleted_ts IS NULL "
        "JOIN responses r ON r.prompt_id = p.id AND r.deleted_ts IS NULL "
        "WHERE e.edge_type = 'HANDLED_BY' AND e.deleted_ts IS NULL GROUP BY e.to_id"
    )
    assert dict(by_edges) == {planner: 250.0, coder: 50.0}

    # and through the query builder: the responses that followed the planner's prompts
    answered = g.query().agent(planner).node_type("ResponseNode").execute()
    latencies = [r.latency_ms for r in answered if isinstance(r, Response)]
    assert latencies == [100.0, 200.0, 300.0, 400.0]


# -- 4. tool success rate ------------------------------------------------------------------------


def test_tool_success_rate_since_a_cutoff(graph: MemoryGraph) -> None:
    g = graph
    s = g.create_session().id
    r = g.add_response(g.add_prompt(s, "use your tools"), "on it")

    def call(tool_name: str, outcome: str) -> uuid.UUID:
        tool = g.add_tool_invocation(r, tool_name, {"n": 1})
        if outcome == "success":
            g.complete_tool_invocation(tool, result={"ok": True}, duration_ms=3.0)
        elif outcome == "error":
            g.complete_tool_invocation(tool, error="boom", duration_ms=1.0)
        return tool

    for _ in range(2):  # before the cutoff: failures that must not count
        call("search", "error")
    call("calc", "success")
    ((cutoff,),) = g.rows("SELECT max(coalesce(completed_ts, ts)) FROM tool_invocations")

    for outcome in ("success", "success", "error", "success"):
        call("search", outcome)
    call("calc", "success")
    call("calc", "error")
    call("web", "pending")  # not completed: no outcome to rate yet
    g.delete_node(call("search", "error"))  # deleted: not counted
    (first_new,) = g.rows("SELECT min(ts) FROM tool_invocations WHERE ts > ?", [cutoff])[0]
    assert first_new is not None

    rate_sql = (
        "SELECT tool_name, count(*) FILTER (WHERE status = 'success') / count(*) AS rate, "
        "count(*) AS calls FROM tool_invocations "
        "WHERE ts > ? AND deleted_ts IS NULL AND status <> 'pending' "
        "GROUP BY tool_name ORDER BY tool_name"
    )
    assert g.rows(rate_sql, [cutoff]) == [("calc", 0.5, 2), ("search", 0.75, 4)]
    assert g.rows(rate_sql, [0]) == [("calc", 2 / 3, 3), ("search", 0.5, 6)]
    pending = g.rows(
        "SELECT tool_name, count(*) FROM tool_invocations "
        "WHERE ts > ? AND status = 'pending' GROUP BY ALL",
        [cutoff],
    )
    assert pending == [("web", 1)]

    # the query builder's form: tool invocations recorded after the cutoff, rated in Python
    recent = g.query().node_type("ToolInvocation").between(cutoff + 1).execute()
    outcomes: dict[str, list[bool]] = {}
    for node in recent:
        assert isinstance(node, ToolInvocation)
        if node.status != "pending":
            outcomes.setdefault(node.tool_name, []).append(node.status == "success")
    rates: dict[str, Any] = {name: sum(v) / len(v) for name, v in sorted(outcomes.items())}
    assert rates == {"calc": 0.5, "search": 0.75}
