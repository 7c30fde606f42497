"""Analytics on a multi-agent workload: typed reads, a context window, template lineage and
impact, and the four example queries of the project's original build plan in SQL, all
through one embedded MemoryGraph.

Run: .venv/bin/python examples/analytics.py [STORE]   (default: a new temporary directory)
Then, from a shell: .venv/bin/lmg sql STORE "SELECT * FROM agent_stats"
(`.venv` is what `make demo` installs into; after `pip install`, `lmg` is on your PATH.)
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eventlog import TokenUsage, VariableSpec
from projections import Agent, Hop, MemoryGraph, Prompt, Template


def record_workload(g: MemoryGraph) -> list[uuid.UUID]:
    """Three support sessions: a router hands questions to specialists who call tools."""
    router = g.add_agent("router", "routes questions", ["classify"], model="small-1")
    sql_expert = g.add_agent("sql", "answers SQL questions", ["sql"], model="large-2")
    py_expert = g.add_agent("python", "answers Python questions", ["python"], model="large-2")
    question = [VariableSpec(name="question")]
    base = g.create_template("answer", "Answer: {{question}}", question)
    expert = g.create_template_from_parent(
        base,
        "expert-answer",
        "As a senior {{language}} engineer, answer: {{question}}",
        [VariableSpec(name="language"), *question],
    )

    questions = [
        ("ada", "sql", "How do I count rows per day?"),
        ("bob", "python", "Why is my asyncio loop blocked?"),
        ("cy", "sql", "What does QUALIFY do?"),
    ]
    sessions = []
    for n, (user, language, text) in enumerate(questions):
        s = g.create_session(metadata={"user": user}, tags=["support"])
        sessions.append(s.id)
        asked = g.add_prompt(s.id, template_id=base, variables={"question": text}, actor=user)
        g.assign_agent_to_prompt(asked, router)
        routed = g.add_response(
            asked, f"A {language} question.", TokenUsage(20, 6), latency_ms=150.0 + 10 * n
        )
        specialist = sql_expert if language == "sql" else py_expert
        g.transfer_to_agent(routed, specialist, from_agent_id=router, reason=f"{language} topic")
        deep = g.add_prompt(
            s.id,
            template_id=expert,
            variables={"language": language.upper(), "question": text},
            parent_prompt_id=asked,
            actor=f"agent:{language}",
        )
        g.assign_agent_to_prompt(deep, specialist)
        answer = g.add_response(
            deep, f"Here is how, in {language}.", TokenUsage(60, 80 + 20 * n), latency_ms=900.0
        )
        run = g.add_tool_invocation(answer, f"run_{language}", {"snippet": text[:20]})
        if n == 1:
            g.complete_tool_invocation(run, error="timeout after 30 s", duration_ms=30_000.0)
        else:
            g.complete_tool_invocation(run, result={"ok": True}, duration_ms=12.0 + n)
        docs = g.add_tool_invocation(answer, "search_docs", {"q": text})
        g.complete_tool_invocation(docs, result={"hits": 3 - n}, duration_ms=40.0)
        follow_up = g.add_prompt(s.id, "Thanks! One more detail?", actor=user)
        g.assign_agent_to_prompt(follow_up, specialist)
        g.add_response(follow_up, "Sure: ...", TokenUsage(90, 30), latency_ms=700.0 + 50 * n)

    mistake = g.add_prompt(sessions[0], "(sent by mistake)", actor="ada")
    g.delete_node(mistake)  # a tombstone: the row stays, every read leaves it out
    return sessions


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print rows under their headers, each column as wide as its widest cell."""
    cells = [[str(h) for h in headers]]
    cells += [
        ["" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v) for v in r]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))


def print_tree(root: uuid.UUID, hops: Sequence[Hop], level: int = 1) -> None:
    """Each hop under the node it leaves from (a walk lists them level by level, and may cross
    an edge backwards: a response INVOKES its tool call, so the walk up goes to_id -> from_id)."""
    for hop in hops:
        source = hop.edge.from_id if hop.edge.to_id == hop.node_id else hop.edge.to_id
        if source != root:
            continue
        what = type(hop.node).__name__
        if isinstance(hop.node, Template):
            what = f"template '{hop.node.name}' v{hop.node.version}"
        elif isinstance(hop.node, Agent):
            what = f"agent {hop.node.name}"
        print(f"  {'  ' * level}{hop.edge.edge_type} -> {what}")
        print_tree(hop.node_id, hops, level + 1)


def lmg_beside_python() -> str:
    """The `lmg` installed with this interpreter, as a path a shell runs without PATH."""
    lmg = Path(sys.executable).with_name("lmg")
    if not lmg.exists():  # installed elsewhere (pip install --user): trust PATH
        return "lmg"
    relative = os.path.relpath(lmg)
    return str(lmg) if relative.startswith("..") else relative


def main(path: str) -> None:
    with MemoryGraph.open(path) as g:  # the log plus live projections, in this process
        sessions = record_workload(g)
        first = sessions[0]

        print("== Typed reads")
        s = g.get_session(first)
        print(
            f"session of {s.metadata['user']}: {s.prompt_count} live prompts, "
            f"{s.response_count} responses, {s.tool_count} tool calls, "
            f"{s.prompt_tokens + s.completion_tokens} tokens"
        )
        kinds = [type(node).__name__ for node in g.get_session_nodes(first)]
        print("its nodes in log order:", ", ".join(kinds))

        print("\n== Context window (the last 2 turns of the first session)")
        for turn in g.context_window(first, turns=2):
            print(f"  prompt:   {turn.prompt.content}")
            for response in turn.responses:
                print(f"  response: {response.content} ({response.total_tokens} tokens)")

        print("\n== Lineage: where the second session's failed tool call comes from")
        ((failed,),) = g.rows(
            "SELECT id FROM tool_invocations WHERE status = 'error' AND session_id = ?",
            [sessions[1]],
        )
        lineage = ["INVOKES", "RESPONDS_TO", "HANDLED_BY", "INSTANTIATES", "INHERITS"]
        print("  tool call (failed)")
        print_tree(failed, g.ancestors(failed, depth=5, edge_types=lineage))

        print("\n== Impact of the template 'answer' (and of everything inheriting from it)")
        ((base,),) = g.rows("SELECT id FROM templates WHERE name = 'answer' AND is_current")
        impact = g.template_impact(base)
        names = [t.name for t in g.get_nodes_batch(impact.templates) if isinstance(t, Template)]
        print(
            f"  templates {sorted(names)}: {len(impact.prompts)} prompts, "
            f"{len(impact.responses)} responses, {len(impact.tool_invocations)} tool calls"
        )

        print("\n== Build plan query 1: recent context (query builder, newest first)")
        recent = g.query().session(first).node_type("PromptNode")
        for node in recent.order_by("timestamp", "DESC").limit(10).execute():
            assert isinstance(node, Prompt)
            print(f"  [{node.lsn:>3}] {node.content}")

        print("\n== Build plan query 2: template lineage (SQL over `lineage`)")
        table(
            ["template", "version", "generations below 'answer'", "prompts"],
            g.rows(
                "SELECT t.name, l.template_version, "
                "coalesce(list_position(l.template_ancestors, $root), 0), count(*) "
                "FROM lineage l JOIN templates t "
                "ON t.id = l.template_id AND t.version = l.template_version "
                "WHERE l.node_kind = 'prompt' AND l.deleted_ts IS NULL "
                "AND (l.template_id = $root OR list_contains(l.template_ancestors, $root)) "
                "GROUP BY ALL ORDER BY 3",
                {"root": base},
            ),
        )

        print("\n== Build plan query 3: agent performance (the agent_stats view)")
        table(
            ["agent", "prompts", "responses", "mean ms", "p95 ms", "tokens", "handoffs in"],
            g.rows(
                "SELECT name, prompts_handled, responses, mean_latency_ms, p95_latency_ms, "
                "tokens_in + tokens_out, handoffs_in FROM agent_stats ORDER BY name"
            ),
        )

        print("\n== Build plan query 4: tool success rate over the last day")
        table(
            ["tool", "calls", "succeeded", "success rate", "mean ms"],
            g.sql(
                "SELECT tool_name, count(*), count(*) FILTER (WHERE status = 'success'), "
                "count(*) FILTER (WHERE status = 'success') / count(*), avg(duration_ms) "
                "FROM tool_invocations WHERE deleted_ts IS NULL AND status <> 'pending' "
                "AND ts > epoch_ns(now() - INTERVAL 1 DAY) GROUP BY tool_name ORDER BY 1"
            ).fetchall(),
        )

        stats = g.stats()
        print(
            f"\n{stats.events} events in {path}, folded to LSN {stats.checkpoint_lsn} "
            f"into a {stats.database_bytes:,}-byte DuckDB file. Query it from a shell:\n"
            f'  {lmg_beside_python()} sql {path} "SELECT * FROM agent_stats"'
        )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="lmg-"))
